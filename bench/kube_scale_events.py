"""A Deployment scaled back up: its pods' ``container.state`` running vs the apiserver's watch event.

The same private control plane as ``kube_list`` (etcd, kube-apiserver, kube-controller-manager,
the test node agent as kubelet), one Deployment of 5 busybox replicas whose pod template carries
the annotation ``nekzus/enable: "true"``, and the gateway with Docker off and Kubernetes on, TLS as
shipped. The bench process holds, side by side in one event loop:

- a WebSocket client on the gateway's ``/api/v1/ws`` (loopback, so no token), every message
  decoded and stamped with ``perf_counter()`` on receipt;
- its own watches straight on the apiserver (plain aiohttp, admin token, the plane's CA): the
  namespace's pods (``GET …/pods?watch=1&resourceVersion=…``) and the Deployment, each event
  stamped the same way.

A round scales the Deployment to 0 through its scale subresource, waits until the watch has seen
every pod deleted (and the Deployment report no ready replica), then scales it back to 5. For each
new pod: lag = the client's receipt of ``container.state`` ``running`` for it (``data.containerId``
is the pod name) minus the bench's receipt of the watch event in which the pod became Running and
Ready. The node agent reports both in one status patch, so that is one event. 1 warm-up round,
then 20; target: the largest lag of the 100 pods ≤ 1000 ms (the max, not a percentile: with 100
pods p99 is the second largest). Also reported: the scale-up request → the last pod's
``container.state`` running, and the rounds in which the Deployment's ``status.readyReplicas``
reached 5 (seen on the Deployment watch).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from bench._harness import Row, all_passed, ms, percentile, print_table
from bench.kube_list import (
    control_plane,
    create_deployment,
    create_namespace,
    is_running,
    parse_args,
    running_gateway,
    wait_pods_running,
)
from tests.support.kube_plane import ControlPlane

NAMESPACE = "nekzus-bench-scale"
DEPLOYMENT = "bench-scale"
REPLICAS = 5
WARMUP = 1
ROUNDS = 20
TARGET_MAX_LAG_MS = 1000.0
STEP_TIMEOUT = 60.0  # for the pods to go, or to come back and be reported
MERGE = "application/merge-patch+json"


class KubeApi:
    """The apiserver with plain aiohttp: the plane's admin token and CA, nothing of the gateway's."""

    def __init__(self, plane: ControlPlane) -> None:
        self.session = aiohttp.ClientSession(
            base_url=plane.server,
            headers={"Authorization": f"Bearer {plane.admin_token}", "Accept": "application/json"},
            connector=aiohttp.TCPConnector(ssl=plane.ssl_context()),
        )

    async def close(self) -> None:
        await self.session.close()

    async def call(self, method: str, path: str, body: Any = None, content_type: str = MERGE) -> Any:
        data = None if body is None else json.dumps(body)
        headers = {"Content-Type": content_type} if data is not None else None
        async with self.session.request(method, path, data=data, headers=headers) as resp:
            raw = await resp.read()
            if resp.status >= 300:
                raise RuntimeError(f"{method} {path}: {resp.status} {raw.decode(errors='replace')}")
            return json.loads(raw)

    async def scale(self, replicas: int) -> None:
        path = f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{DEPLOYMENT}/scale"
        await self.call("PATCH", path, {"spec": {"replicas": replicas}})


class Watch:
    """A list, then a watch from its resourceVersion, held open in a task. Every event is handed
    to ``on_event(kind, obj, arrived)`` with the ``perf_counter()`` at which its line was read;
    ``changed`` is set after each one."""

    def __init__(
        self,
        api: KubeApi,
        path: str,
        on_event: Callable[[str, dict[str, Any], float], None],
        changed: asyncio.Event,
    ) -> None:
        self._api = api
        self._path = path
        self._on_event = on_event
        self._changed = changed
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        listing = await self._api.call("GET", self._path)
        arrived = time.perf_counter()
        for obj in listing.get("items") or ():
            self._on_event("ADDED", obj, arrived)
        opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._pump(listing["metadata"]["resourceVersion"], opened))
        await asyncio.wait([opened, self._task], return_when=asyncio.FIRST_COMPLETED)
        if self._task.done():
            self._task.result()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def check(self) -> None:
        """Raises if the watch has ended (an error, or the apiserver closed it)."""
        if self._task is not None and self._task.done():
            self._task.result()
            raise RuntimeError(f"the watch on {self._path} ended")

    async def _pump(self, version: str, opened: asyncio.Future[None]) -> None:
        params = {"watch": "1", "resourceVersion": version, "timeoutSeconds": "3600"}
        timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
        async with self._api.session.get(self._path, params=params, timeout=timeout) as resp:
            resp.raise_for_status()
            opened.set_result(None)
            buffer = bytearray()
            async for chunk in resp.content.iter_any():
                arrived = time.perf_counter()
                buffer += chunk
                while (end := buffer.find(b"\n")) >= 0:
                    line = bytes(buffer[:end])
                    del buffer[: end + 1]
                    if line.strip():
                        event = json.loads(line)
                        if event["type"] == "ERROR":
                            raise RuntimeError(f"watch error on {self._path}: {event['object']}")
                        self._on_event(event["type"], event["object"], arrived)
                        self._changed.set()


class Observed:
    """What the bench has seen, from the apiserver's watches and from the gateway's WebSocket."""

    def __init__(self) -> None:
        self.changed = asyncio.Event()
        self.live_pods: set[str] = set()
        self.watch_running: dict[str, float] = {}  # pod → receipt of the event it became Running+Ready
        self.ws_running: dict[str, float] = {}  # pod → receipt of its first container.state running
        self.ready_replicas = 0
        self.ready_seen: list[tuple[float, int]] = []  # (receipt, status.readyReplicas) per event
        self.checks: list[Callable[[], None]] = []  # each raises when a source has failed

    def on_pod(self, kind: str, pod: dict[str, Any], arrived: float) -> None:
        name = pod["metadata"]["name"]
        if kind == "DELETED":
            self.live_pods.discard(name)
            return
        self.live_pods.add(name)
        if name not in self.watch_running and is_running(pod):
            self.watch_running[name] = arrived

    def on_deployment(self, kind: str, obj: dict[str, Any], arrived: float) -> None:
        if obj["metadata"]["name"] != DEPLOYMENT:
            return
        self.ready_replicas = int((obj.get("status") or {}).get("readyReplicas") or 0)
        self.ready_seen.append((arrived, self.ready_replicas))

    async def read_ws(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            if msg.type is not aiohttp.WSMsgType.TEXT:
                continue
            doc = json.loads(msg.data)
            arrived = time.perf_counter()
            data = doc.get("data") or {}
            if (
                doc.get("type") == "container.state"
                and data.get("namespace") == NAMESPACE
                and data.get("state") == "running"
            ):
                self.ws_running.setdefault(data["containerId"], arrived)
                self.changed.set()
        raise RuntimeError("the gateway closed the WebSocket")

    async def until(self, done: Callable[[], bool], what: str) -> None:
        """Wait (woken by every event, no polling) until ``done()`` holds, at most STEP_TIMEOUT."""
        deadline = time.monotonic() + STEP_TIMEOUT
        while True:
            self.changed.clear()
            for check in self.checks:
                check()
            if done():
                return
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"timed out after {STEP_TIMEOUT:.0f} s waiting for {what}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), min(left, 1.0))


@dataclass
class Results:
    lags: list[float] = field(default_factory=list)  # per pod, seconds (inf: never reported)
    to_last_watch: list[float] = field(default_factory=list)  # per round, from the scale-up request
    to_last_ws: list[float] = field(default_factory=list)
    to_ready: list[float] = field(default_factory=list)
    rounds_ready: int = 0
    missing: int = 0


async def one_round(api: KubeApi, seen: Observed, results: Results | None) -> None:
    """Scale to 0, wait until the pods are gone, scale back up, wait until all is reported;
    ``results`` None is a warm-up round (a timeout then fails the run)."""
    await api.scale(0)
    await seen.until(lambda: not seen.live_pods and seen.ready_replicas == 0, "the pods to be gone")
    before = set(seen.watch_running)
    ready_from = len(seen.ready_seen)
    scaled = time.perf_counter()
    await api.scale(REPLICAS)

    def fresh() -> list[str]:
        return [p for p in seen.watch_running if p not in before]

    def reached() -> list[float]:
        return [t for t, n in seen.ready_seen[ready_from:] if n >= REPLICAS]

    def reported() -> bool:
        new = fresh()
        return bool(reached()) and len(new) >= REPLICAS and all(p in seen.ws_running for p in new)

    try:
        await seen.until(reported, f"{REPLICAS} pods back and reported")
    except TimeoutError as exc:
        if results is None:
            raise
        print(f"round {len(results.to_last_ws) + 1}: {exc}", flush=True)
    if results is None:
        return
    new, ready = fresh(), reached()
    if ready:
        results.rounds_ready += 1
        results.to_ready.append(ready[0] - scaled)
    for pod in new:
        results.lags.append(seen.ws_running.get(pod, math.inf) - seen.watch_running[pod])
    results.missing += sum(p not in seen.ws_running for p in new) + max(0, REPLICAS - len(new))
    results.to_last_watch.append(max((seen.watch_running[p] for p in new), default=math.inf) - scaled)
    results.to_last_ws.append(max((seen.ws_running.get(p, math.inf) for p in new), default=math.inf) - scaled)


async def measure(plane: ControlPlane, extra_env: dict[str, str], title: str) -> list[Row]:
    seen = Observed()
    api = KubeApi(plane)
    pods = Watch(api, f"/api/v1/namespaces/{NAMESPACE}/pods", seen.on_pod, seen.changed)
    deployments = Watch(
        api, f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments", seen.on_deployment, seen.changed
    )
    results = Results()
    reader: asyncio.Task[None] | None = None
    try:
        async with (
            running_gateway(plane, extra_env, title) as gateway,
            gateway.session() as http,
            http.ws_connect("/api/v1/ws") as ws,
        ):
            hello = json.loads((await ws.receive()).data)
            if hello.get("type") != "hello":
                raise AssertionError(f"expected hello, got {hello}")
            reader = asyncio.create_task(seen.read_ws(ws))
            await pods.start()
            await deployments.start()
            seen.checks = [lambda: reader.result() if reader.done() else None, pods.check, deployments.check]
            for index in range(WARMUP + ROUNDS):
                await one_round(api, seen, results if index >= WARMUP else None)
    finally:
        if reader is not None:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        await pods.stop()
        await deployments.stop()
        await api.close()

    lags, to_last_ws = results.lags or [math.inf], results.to_last_ws
    expected = REPLICAS * ROUNDS
    return [
        Row(
            f"pods reported running by the gateway ({ROUNDS} rounds × {REPLICAS})",
            expected - results.missing,
            "",
            expected,
            at_least=True,
        ),
        Row("watch event → client's container.state running, min", ms(min(lags)), "ms"),
        Row("watch event → client's container.state running, p50", ms(percentile(lags, 50)), "ms"),
        Row("watch event → client's container.state running, p99", ms(percentile(lags, 99)), "ms"),
        Row(
            "scale-up request → last pod Running on the watch, p50",
            ms(percentile(results.to_last_watch, 50)),
            "ms",
        ),
        Row(
            "scale-up request → last pod's container.state running, p50", ms(percentile(to_last_ws, 50)), "ms"
        ),
        Row("scale-up request → last pod's container.state running, max", ms(max(to_last_ws)), "ms"),
        Row(
            f"scale-up request → readyReplicas {REPLICAS} on the Deployment watch, p50",
            ms(percentile(results.to_ready, 50)) if results.to_ready else math.inf,
            "ms",
        ),
        Row(
            f"rounds where the Deployment reached readyReplicas {REPLICAS}",
            results.rounds_ready,
            "",
            ROUNDS,
            at_least=True,
        ),
        Row(
            f"watch event → client's container.state running, max ({len(results.lags)} pods)",
            ms(max(lags)),
            "ms",
            TARGET_MAX_LAG_MS,
        ),
    ]


def main() -> None:
    title = f"Deployment scaled 0 → {REPLICAS}: pod watch event → WebSocket container.state"
    args = parse_args(title)
    with control_plane(args.sandbox_dir) as plane:
        create_namespace(plane, NAMESPACE)
        create_deployment(plane, NAMESPACE, DEPLOYMENT, REPLICAS, {"nekzus/enable": "true"})
        wait_pods_running(plane, NAMESPACE, REPLICAS)
        rows = asyncio.run(measure(plane, args.gateway_env, title))
    print_table(title, rows)
    sys.exit(0 if all_passed(rows) else 1)


if __name__ == "__main__":
    main()
