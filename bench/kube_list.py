"""Listing 200 pods through the gateway vs one direct ``list_pod_for_all_namespaces`` call.

A real control plane (etcd, kube-apiserver, kube-controller-manager from ``tests.support.kube_plane``, in
``/tmp/nekzus-bench-kube``) with the test node agent (``tests.support.kube_node``) as its kubelet; one
Deployment of 200 busybox replicas, all Running. The gateway runs with Docker off and Kubernetes
on (the plane's admin kubeconfig), TLS as shipped.

Compared: ``GET /api/v1/containers?runtime=kubernetes&all=true`` (the gateway lists pods,
Deployments and StatefulSets, maps and re-serialises them) and, in the bench process,
kubernetes_asyncio's ``CoreV1Api(ApiClient(configuration)).list_pod_for_all_namespaces()`` with
the configuration loaded from the same kubeconfig (``load_kube_config``): the same client library
and credentials the gateway uses, in its ordinary deserialising form. Both are interleaved,
alternating which goes first: 10 warm-up rounds, then 100. Target: gateway median ≤ 1.5× direct
median. The raw call (the same request read as plain JSON, ``_preload_content=False``), which is
what the gateway itself does, is measured alongside for reference, in the same rounds.

The helpers here (arguments, the plane and its Deployment, the gateway's settings) are shared
with ``kube_scale_events``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, cast

import aiohttp
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config

from bench._harness import Gateway, Row, all_passed, cpu_seconds, ms, percentile, print_table, timed_get
from bench._harness import parse_args as _harness_parse_args
from tests.support.kube_plane import ControlPlane, wait_until

DEFAULT_SANDBOX_DIR = Path("/tmp/nekzus-bench-kube")
NAMESPACE = "nekzus-bench"
IMAGE = "busybox"
PODS = 200
WARMUP = 10
CALLS = 100
TARGET_RATIO = 1.5
SETUP_TIMEOUT = 180.0
# Docker is off: the gateway never dials this socket, but the harness wants a host to pass on.
UNUSED_DOCKER_HOST = "unix:///nonexistent/nekzus-bench-docker.sock"


# -- shared with kube_scale_events ---------------------------------------------------------------


def parse_args(description: str) -> argparse.Namespace:
    return _harness_parse_args(
        description, docker=False, sandbox=DEFAULT_SANDBOX_DIR, what="control plane, wiped at start"
    )


@contextlib.contextmanager
def control_plane(directory: Path) -> Iterator[ControlPlane]:
    """etcd, apiserver, controller-manager and the node agent; all stopped on exit (even a failed
    start). Runs in the main thread, so the children die with the bench if it is killed."""
    plane = ControlPlane(directory)
    try:
        began = time.monotonic()
        plane.start()
        plane.start_node_agent()
        print(
            f"control plane {plane.server} in {directory} up in {time.monotonic() - began:.1f} s", flush=True
        )
        yield plane
    finally:
        plane.stop()


def create_namespace(plane: ControlPlane, name: str) -> None:
    plane.request(
        "POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    )


def create_deployment(
    plane: ControlPlane, namespace: str, name: str, replicas: int, annotations: dict[str, str] | None = None
) -> None:
    labels = {"app": name}
    body = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels, "annotations": annotations or {}},
                "spec": {
                    "terminationGracePeriodSeconds": 0,
                    "containers": [{"name": "main", "image": IMAGE, "command": ["sleep", "3600"]}],
                },
            },
        },
    }
    plane.request("POST", f"/apis/apps/v1/namespaces/{namespace}/deployments", body)


def is_running(pod: dict[str, Any]) -> bool:
    """Phase Running with the Ready condition true (what the node agent reports in one patch)."""
    status = pod.get("status") or {}
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or ()
    )
    return status.get("phase") == "Running" and ready and not pod["metadata"].get("deletionTimestamp")


def wait_pods_running(
    plane: ControlPlane, namespace: str, count: int, timeout: float = SETUP_TIMEOUT
) -> None:
    """Blocking: until exactly ``count`` pods of the namespace are Running and Ready."""

    def done() -> bool:
        _, listing = plane.request("GET", f"/api/v1/namespaces/{namespace}/pods")
        items = listing.get("items") or []
        return len(items) == count and all(is_running(p) for p in items)

    wait_until(done, timeout=timeout, interval=0.5, what=f"{count} running pods in {namespace}")


def gateway_env(plane: ControlPlane, extra: dict[str, str]) -> dict[str, str]:
    """Docker off, Kubernetes on and primary; ``extra`` (--gateway-env) wins."""
    return {
        "NEKZUS_RUNTIMES__DOCKER__ENABLED": "false",
        "NEKZUS_RUNTIMES__KUBERNETES__ENABLED": "true",
        "NEKZUS_RUNTIMES__KUBERNETES__KUBECONFIG": str(plane.kubeconfig),
        "NEKZUS_RUNTIMES__PRIMARY": "kubernetes",
        **extra,
    }


@contextlib.asynccontextmanager
async def running_gateway(plane: ControlPlane, extra: dict[str, str], title: str) -> AsyncIterator[Gateway]:
    """``nekzus serve`` on the plane, stopped on exit; its data directory is temporary."""
    with tempfile.TemporaryDirectory(prefix="nekzus-bench-") as workdir:
        gateway = Gateway(UNUSED_DOCKER_HOST, Path(workdir), gateway_env(plane, extra))
        try:
            await gateway.start()
            print(f"{title}: gateway {gateway.url} (TLS {gateway.tls_mode}) {extra}", flush=True)
            yield gateway
        finally:
            await gateway.stop()


async def raw_pod_list(core: k8s.CoreV1Api) -> aiohttp.ClientResponse:
    """``list_pod_for_all_namespaces()`` unparsed: with ``_preload_content=False`` kubernetes_asyncio
    hands back its aiohttp response, whatever its annotations say."""
    return cast(aiohttp.ClientResponse, await core.list_pod_for_all_namespaces(_preload_content=False))


async def kube_client(plane: ControlPlane) -> k8s.ApiClient:
    """kubernetes_asyncio's client configured from the plane's admin kubeconfig, as the gateway is."""
    configuration = k8s.Configuration()
    await k8s_config.load_kube_config(config_file=str(plane.kubeconfig), client_configuration=configuration)
    return k8s.ApiClient(configuration)


# -- the measurement ------------------------------------------------------------------------------


async def measure(plane: ControlPlane, extra_env: dict[str, str], title: str) -> list[Row]:
    gateway_path = "/api/v1/containers?runtime=kubernetes&all=true"
    async with running_gateway(plane, extra_env, title) as gateway, gateway.session() as http:
        api = await kube_client(plane)
        try:
            core = k8s.CoreV1Api(api)

            async def direct() -> float:
                start = time.perf_counter()
                await core.list_pod_for_all_namespaces()
                return time.perf_counter() - start

            async def raw() -> float:
                start = time.perf_counter()
                response = await raw_pod_list(core)
                try:
                    json.loads(await response.read())
                finally:
                    response.release()
                return time.perf_counter() - start

            async def via_gateway() -> float:
                return (await timed_get(http, gateway_path))[0]

            _, listed, gateway_bytes = await timed_get(http, gateway_path)
            ours = [c for c in listed if c["namespace"] == NAMESPACE and c["state"] == "running"]
            if len(ours) != PODS:
                raise AssertionError(f"the gateway lists {len(ours)} running pods of {NAMESPACE}, not {PODS}")
            pod_list = await core.list_pod_for_all_namespaces()
            response = await raw_pod_list(core)
            direct_bytes = len(await response.read())
            response.release()

            samples: dict[str, list[float]] = {"gateway": [], "direct": [], "raw": []}
            calls = {"gateway": via_gateway, "direct": direct, "raw": raw}
            cpu_start = cpu_seconds(gateway.pid)
            for i in range(WARMUP + CALLS):
                if i == WARMUP:
                    cpu_start = cpu_seconds(gateway.pid)
                # gateway and direct swap every round; the raw reference call takes every place in turn.
                pair = ["gateway", "direct"] if i % 2 else ["direct", "gateway"]
                pair.insert(i % 3, "raw")
                for name in pair:
                    seconds = await calls[name]()
                    if i >= WARMUP:
                        samples[name].append(seconds)
            gateway_cpu = cpu_seconds(gateway.pid) - cpu_start
        finally:
            await api.close()

    g50, d50, r50 = (percentile(samples[k], 50) for k in ("gateway", "direct", "raw"))
    return [
        Row("pods listed by the gateway (running, ours)", len(ours)),
        Row("pods listed by the direct call", len(pod_list.items)),
        Row("response size gateway", gateway_bytes / 1024, "KiB"),
        Row("response size apiserver (pod list)", direct_bytes / 1024, "KiB"),
        Row(f"direct list_pod_for_all_namespaces() median ({CALLS} calls)", ms(d50), "ms"),
        Row("direct p90", ms(percentile(samples["direct"], 90)), "ms"),
        Row("raw pod list (_preload_content=False + json.loads) median", ms(r50), "ms"),
        Row("raw p90", ms(percentile(samples["raw"], 90)), "ms"),
        Row(f"gateway GET /api/v1/containers median ({CALLS} calls)", ms(g50), "ms"),
        Row("gateway p90", ms(percentile(samples["gateway"], 90)), "ms"),
        Row("gateway CPU per request", ms(gateway_cpu / CALLS), "ms"),
        Row("gateway median / raw median (reference)", g50 / r50, "×"),
        Row("gateway median / direct median", g50 / d50, "×", TARGET_RATIO),
    ]


def main() -> None:
    title = f"list {PODS} pods: gateway vs direct list_pod_for_all_namespaces"
    args = parse_args(title)
    with control_plane(args.sandbox_dir) as plane:
        create_namespace(plane, NAMESPACE)
        create_deployment(plane, NAMESPACE, "bench-list", PODS)
        began = time.monotonic()
        wait_pods_running(plane, NAMESPACE, PODS)
        print(f"{PODS} pods running in {time.monotonic() - began:.1f} s", flush=True)
        rows = asyncio.run(measure(plane, args.gateway_env, title))
    print_table(title, rows)
    sys.exit(0 if all_passed(rows) else 1)


if __name__ == "__main__":
    main()
