"""The tests of url fields that need the fake apiserver (kube_fake tier); the story and the other tests
are in tests/docker/test_url_fields.py, tests/unit/test_url_fields.py.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from aiohttp.typedefs import Middleware
from yarl import URL

from runtimes import ContainerRef, NotFound
from runtimes.kubernetes import KubernetesRuntime, kubeconfig_loader
from tests.kube_fake.test_kube_fast import NS, WEB, kube_config
from tests.support.fake_kube import FakeKube
from tests.support.fake_kube_fixtures import write_kubeconfig
from tests.support.gateway import JSON, ClientFactory
from tests.support.wsclient import WS

HOSTILE = [
    "../", "..", ".", "a/../b", "/", "a/b", "a?b=c", "a#b", "%2F", "a%2Fb", "%00", "a%00b",
    "a\x00b", "a\nb", "web\n", "a b", " ", "x" * 300, "é", "ウェブ", "web?container=app&x=",
    f"{NS}/pods/lonely/log?container=app&x=", f"other/../{NS}",
]  # fmt: skip
# Kubernetes names as the apiserver may receive them: DNS-1123, never "." or "..".
_SEG = r"[a-z0-9](?:[-a-z0-9.]*[a-z0-9])?"
KUBE_PATHS = [
    re.compile(p)
    for p in (
        r"/version|/readyz|/livez|/healthz",
        rf"/api/v1/(?:pods|nodes)|/api/v1/nodes/{_SEG}",
        rf"/api/v1/namespaces/{_SEG}/pods(?:/{_SEG}(?:/log)?)?",
        rf"/apis/apps/v1/(?:namespaces/{_SEG}/)?(?:deployments|statefulsets|replicasets)(?:/{_SEG}(?:/scale)?)?",
        rf"/apis/metrics\.k8s\.io/v1beta1(?:/namespaces/{_SEG})?/pods(?:/{_SEG})?",
    )
]
KUBE_QUERY = {"watch", "resourceVersion", "allowWatchBookmarks", "timeoutSeconds", "labelSelector"}
KUBE_QUERY |= {"fieldSelector", "limit", "continue", "container", "follow", "timestamps", "tailLines"}
KUBE_QUERY |= {"sinceTime", "gracePeriodSeconds", "propagationPolicy"}


def check_paths(raw: list[str], shapes: list[re.Pattern[str]], query: set[str] | None = None) -> None:
    """Every raw path (with its query) received has one of ``shapes`` and only ``query`` keys."""
    assert raw, "nothing was received: the walk proved nothing"
    for path_qs in raw:
        path, _, qs = path_qs.partition("?")
        assert any(shape.fullmatch(path) for shape in shapes), path_qs
        if query is not None:
            pairs = parse_qsl(qs, keep_blank_values=True)
            assert {k for k, _ in pairs} <= query, path_qs
            assert all(re.fullmatch(_SEG, v) for k, v in pairs if k == "container"), path_qs


def in_path(value: str) -> str:
    return quote(value, safe="")


async def walk_http(client: TestClient[Any, Any], namespace: str | None) -> None:
    """Every route that takes an id or a namespace, with each hostile value in each place."""
    ns_query = {"namespace": namespace} if namespace else {}
    for value in HOSTILE:
        v = in_path(value)
        requests: list[tuple[str, str, dict[str, str], Any]] = [
            ("GET", f"/api/v1/containers/{v}", ns_query, None),
            ("GET", f"/api/v1/containers/{v}/stats", ns_query, None),
            ("POST", f"/api/v1/containers/{v}/stop", ns_query, None),
            ("POST", f"/api/v1/containers/{v}/export", ns_query, None),
            ("POST", "/api/v1/containers/batch", ns_query, {"containerIds": [value], "action": "stop"}),
            ("POST", "/api/v1/containers/batch/export", ns_query, {"container_ids": [value]}),
            ("GET", "/api/v1/containers", {"namespace": value}, None),
            ("GET", "/api/v1/containers/stats", {"namespace": value}, None),
            ("GET", f"/api/v1/containers/{v}/lonely", {}, None),
            ("GET", f"/api/v1/containers/{v}/lonely/stats", {}, None),
            ("POST", f"/api/v1/containers/{v}/lonely/restart", {}, None),
        ]
        if namespace:
            requests += [
                ("GET", f"/api/v1/containers/{namespace}/{v}", {}, None),
                ("GET", f"/api/v1/containers/{namespace}/{v}/stats", {}, None),
                ("POST", f"/api/v1/containers/{namespace}/{v}/start", {}, None),
            ]
        if value in (".", ".."):
            # Dot segments are URL syntax: the client folds them before anything is sent, and
            # the gateway sees another path. Only the query and body places take them as values.
            requests = [r for r in requests if v not in r[1].split("/")]
        for method, path, query, body in requests:
            url = URL(path, encoded=True).with_query(query) if query else URL(path, encoded=True)
            resp = await client.request(method, url, json=body, headers=JSON)
            text = await resp.text()
            assert 400 <= resp.status < 500, (method, path, query, body, resp.status, text)
            envelope = await resp.json()
            assert set(envelope) >= {"error", "message"}, (path, envelope)


async def walk_ws(client: TestClient[Any, Any], namespace: str | None) -> None:
    ws = WS(await client.ws_connect("/api/v1/ws"))
    await ws.until("hello")
    ns = {"namespace": namespace} if namespace else {}
    for value in HOSTILE:
        for fields in (
            {"containerId": value, **ns},
            {"containerId": "lonely", "namespace": value},
            {"containerId": "lonely", **ns, "container": value},
        ):
            await ws.send("container.logs.subscribe", follow=False, **fields)
            refused = await ws.until("error")
            assert refused["data"]["error"] == "INVALID_MESSAGE", (fields, refused)
    assert not any(m["type"].startswith("container.logs") for m in ws.seen), ws.seen
    await ws.ws.close()


def recorder(paths: list[str]) -> Middleware:
    @web.middleware
    async def record(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        paths.append(request.raw_path)
        return await handler(request)

    return record


# -- Kubernetes --------------------------------------------------------------------------------


@pytest.fixture
async def fake(gateway: ClientFactory) -> AsyncIterator[tuple[FakeKube, list[str]]]:
    kube = FakeKube(ready_delay=0.02, delete_delay=0.02, seed=11)
    paths: list[str] = []
    kube.app.middlewares.insert(0, recorder(paths))  # first: it sees even what the fake refuses
    kube.add_pod(NS, "lonely", containers=WEB)
    kube.add_deployment(NS, "web", 2, containers=WEB)
    kube.add_pod("other", "secret", containers=WEB)
    await kube.start()
    try:
        yield kube, paths
    finally:
        await kube.close()


async def test_hostile_values_never_reach_the_apiserver(
    gateway: ClientFactory, fake: tuple[FakeKube, list[str]], tmp_path: Path
) -> None:
    kube, paths = fake
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", kube.url, kube.token)
    client = await gateway(kube_config(kubeconfig))  # every namespace managed
    await walk_http(client, NS)
    await walk_http(client, None)  # Kubernetes is the primary runtime: its rules without a namespace
    await walk_ws(client, NS)
    await walk_ws(client, None)
    # Docker names that no pod can have: refused by the rules of the runtime addressed, named or
    # implied by a namespace or (Kubernetes is the primary here) by neither.
    ws = WS(await client.ws_connect("/api/v1/ws"))
    await ws.until("hello")
    for name in ("Web", "web_1", "a..b", "-web", "deployment/Web"):
        for path in (f"/api/v1/containers/{NS}/{in_path(name)}", f"/api/v1/containers/{in_path(name)}"):
            resp = await client.get(URL(path, encoded=True))
            assert (resp.status, (await resp.json())["error"]) == (400, "INVALID_CONTAINER_ID"), path
        for fields in ({"containerId": name, "namespace": NS}, {"containerId": name}):
            await ws.send("container.logs.subscribe", **fields)
            assert (await ws.until("error"))["data"]["error"] == "INVALID_MESSAGE", fields
    # A workload's log is read from one of its pods, not from "pods/deployment/web".
    await ws.send("container.logs.subscribe", containerId="deployment/web", namespace=NS, follow=False)
    ended = await ws.until("container.logs.ended", containerId="deployment/web")
    assert ended["data"]["reason"] == "stopped"
    assert not any(m["type"] == "container.logs.error" for m in ws.seen), ws.seen
    assert any(re.fullmatch(rf"/api/v1/namespaces/{NS}/pods/web-[a-z0-9]+-[a-z0-9]+/log", p.partition("?")[0])
               for p in paths), paths  # fmt: skip
    check_paths(paths, KUBE_PATHS, KUBE_QUERY)
    assert not any("other" in p for p in paths), paths


async def test_the_kubernetes_runtime_keeps_unchecked_values_out_of_its_urls(
    fake: tuple[FakeKube, list[str]], tmp_path: Path
) -> None:
    kube, paths = fake
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", kube.url, kube.token)
    runtime = KubernetesRuntime(kubeconfig_loader(kubeconfig, None, in_cluster=False))
    try:
        for value in HOSTILE:
            for ref in (
                ContainerRef(value, NS),
                ContainerRef("lonely", value),
                ContainerRef("lonely", NS, value),
            ):
                with pytest.raises(NotFound):
                    await runtime.get(ref)
                with pytest.raises(NotFound):
                    await runtime.stats(ref)
                with pytest.raises(NotFound):
                    async for _ in runtime.logs(ref, follow=False, tail=1, timestamps=True):
                        pass
        assert paths == []
    finally:
        await runtime.close()
