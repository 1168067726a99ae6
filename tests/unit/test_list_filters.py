"""The container list's filters, order and pages (``state``, ``name``, ``label``, ``sort``,
``limit``/``offset``), their bad values, and the rendered-answer cache keeping each query's answer
to itself."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from nekzus.keys import STATE
from nekzus.realtime.state import ContainerModel
from runtimes import ContainerState, ContainerSummary
from tests.support.fakes import FakeRuntime, registry_of, summary
from tests.support.gateway import ClientFactory, make_config
from tests.unit.test_pages import links
from tests.unit.test_security import bearer, expect_error, security_config, token


def entry(
    n: int, name: str, state: ContainerState, created: int, labels: dict[str, str] | None = None
) -> ContainerSummary:
    full = f"{n:02x}" * 32  # distinct short ids, as a state model keys them
    return dataclasses.replace(
        summary(n, state=state),
        id=full[:12],
        full_id=full,
        name=name,
        created=created,
        labels={"nekzus.enable": "true", **(labels or {})},
    )


CONTAINERS = [
    entry(1, "web", ContainerState.RUNNING, 300, {"tier": "front", "team": "a"}),
    entry(2, "Database", ContainerState.EXITED, 100, {"tier": "back"}),
    entry(3, "cache", ContainerState.PAUSED, 200, {"tier": "back", "team": "a"}),
    entry(4, "worker", ContainerState.CREATED, 400, {"team": ""}),
    entry(5, "old-web", ContainerState.STOPPED, 50),
    entry(6, "batch", ContainerState.FAILED, 250),
    entry(7, "webhook", ContainerState.RESTARTING, 350, {"tier": "front"}),
]


@pytest.fixture
async def client(gateway: ClientFactory, docker_host: str) -> TestClient[Any, Any]:
    return await gateway(make_config(docker_host), runtimes=registry_of(FakeRuntime(list(CONTAINERS))))


async def names(client: TestClient[Any, Any], query: str) -> list[str]:
    resp = await client.get(f"/api/v1/containers?{query}")
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert isinstance(body, list)
    assert resp.headers["X-Total-Count"]
    return [c["name"] for c in body]


async def test_without_filters_the_list_is_as_before_with_its_total(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/api/v1/containers")
    assert [c["name"] for c in await resp.json()] == [c.name for c in CONTAINERS]
    assert resp.headers["X-Total-Count"] == str(len(CONTAINERS)) and "Link" not in resp.headers


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("state=running", ["web"]),
        ("state=paused", ["cache"]),
        ("state=exited", ["Database"]),
        ("state=created", ["worker"]),
        ("state=failed", ["batch"]),
        ("state=restarting", ["webhook"]),
        ("state=pending", []),
        # "stopped" is "not running": exited, created, failed and stopped alike.
        ("state=stopped", ["Database", "worker", "old-web", "batch"]),
        ("state=running,paused", ["web", "cache"]),
        ("state=running&state=paused", ["web", "cache"]),
        ("state=running,%20restarting", ["web", "webhook"]),
        ("name=WEB", ["web", "old-web", "webhook"]),
        ("name=data", ["Database"]),
        ("name=nothing", []),
        ("label=tier", ["web", "Database", "cache", "webhook"]),
        ("label=tier=back", ["Database", "cache"]),
        ("label=tier=back&label=team=a", ["cache"]),
        ("label=team=", ["worker"]),
        ("label=team&state=running", ["web"]),
        ("label=tier=Back", []),
        ("name=web&state=running,restarting&label=tier=front", ["web", "webhook"]),
    ],
)
async def test_each_filter_keeps_what_it_names(
    client: TestClient[Any, Any], query: str, expected: list[str]
) -> None:
    assert await names(client, query) == expected


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("sort=name", ["batch", "cache", "Database", "old-web", "web", "webhook", "worker"]),
        ("sort=-name", ["worker", "webhook", "web", "old-web", "Database", "cache", "batch"]),
        ("sort=created", ["old-web", "Database", "cache", "batch", "web", "webhook", "worker"]),
        ("sort=-created", ["worker", "webhook", "web", "batch", "cache", "Database", "old-web"]),
        # Alphabetical by state; equal states keep the list's order.
        ("sort=state&label=tier", ["Database", "cache", "webhook", "web"]),
        ("sort=-state&state=stopped", ["old-web", "batch", "Database", "worker"]),
    ],
)
async def test_sort_orders_by_name_created_or_state(
    client: TestClient[Any, Any], query: str, expected: list[str]
) -> None:
    assert await names(client, query) == expected


async def test_pages_come_after_the_filter_with_total_and_links(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/api/v1/containers?sort=name&state=stopped,running&limit=2&offset=2")
    assert [c["name"] for c in await resp.json()] == ["old-web", "web"]
    assert resp.headers["X-Total-Count"] == "5"
    rels = links(resp.headers["Link"])
    assert set(rels) == {"first", "last", "prev", "next"}
    assert rels["next"] == "/api/v1/containers?sort=name&state=stopped,running&limit=2&offset=4"
    assert rels["prev"].endswith("limit=2&offset=0") and rels["last"].endswith("offset=4")
    following = await client.get(rels["next"])
    assert [c["name"] for c in await following.json()] == ["worker"]
    assert "next" not in links(following.headers["Link"])
    beyond = await client.get("/api/v1/containers?offset=100")
    assert await beyond.json() == [] and beyond.headers["X-Total-Count"] == str(len(CONTAINERS))


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("state=sleeping", "state"),
        ("state=", "state"),
        ("state=running,", "state"),
        ("state=RUNNING", "state"),
        ("name=", "name"),
        ("name=" + "x" * 257, "name"),
        ("name=a&name=b", "name"),
        ("label==v", "label"),
        ("label=", "label"),
        ("label=" + "k" * 1025, "label"),
        ("&".join(["label=k"] * 33), "label"),
        ("sort=size", "sort"),
        ("sort=", "sort"),
        ("sort=--name", "sort"),
        ("sort=name&sort=created", "sort"),
        ("limit=0", "limit"),
        ("limit=abc", "limit"),
        ("limit=NaN", "limit"),
        ("limit=Infinity", "limit"),
        ("limit=1e3", "limit"),
        ("limit=99999999999999", "limit"),
        ("offset=-1", "offset"),
    ],
)
async def test_a_bad_value_is_invalid_request_naming_the_parameter(
    client: TestClient[Any, Any], query: str, parameter: str
) -> None:
    body = await expect_error(await client.get(f"/api/v1/containers?{query}"), 400, "INVALID_REQUEST")
    assert repr(parameter) in body["message"]


@dataclass(frozen=True)
class Row:
    """A state model row whose status line does not age."""

    summary: ContainerSummary

    def at(self, now: float) -> ContainerSummary:
        return self.summary


async def test_the_rendered_cache_keeps_each_querys_answer_to_itself(client: TestClient[Any, Any]) -> None:
    # A warm model, as the state watcher keeps for a real Engine: answers are rendered once and
    # kept for the second, so each query must find its own.
    model = ContainerModel("docker")
    model.fill([Row(c) for c in CONTAINERS], time.monotonic())
    client.app[STATE].models["docker"] = model
    queries = [
        "",
        "state=running",
        "",
        "state=running&limit=1",
        "limit=1",
        "limit=1&offset=1",
        "sort=-name",
        "",
        "name=web",
        "state=running",
    ]
    full = [c.name for c in CONTAINERS]
    expected = {
        "": full,
        "state=running": ["web"],
        "state=running&limit=1": ["web"],
        "limit=1": full[:1],
        "limit=1&offset=1": full[1:2],
        "sort=-name": sorted(full, key=str.casefold, reverse=True),
        "name=web": ["web", "old-web", "webhook"],
    }
    totals: dict[str, str] = {}
    for _ in range(2):
        for query in queries:
            resp = await client.get(f"/api/v1/containers?{query}")
            assert [c["name"] for c in await resp.json()] == expected[query], query
            totals.setdefault(query, resp.headers["X-Total-Count"])
            assert resp.headers["X-Total-Count"] == totals[query]
            assert ("Link" in resp.headers) == ("limit" in query)
    assert totals["state=running&limit=1"] == "1" and totals["limit=1"] == str(len(CONTAINERS))
    # A change to the model is a new version: the next answer is rendered again.
    model.remove(CONTAINERS[0].id)
    assert await names(client, "state=running") == []
    assert await names(client, "") == full[1:]


async def test_filters_apply_to_linked_containers_unless_all(
    gateway: ClientFactory, docker_host: str
) -> None:
    unlinked = dataclasses.replace(entry(9, "web-unlinked", ContainerState.RUNNING, 1), labels={})
    runtime = FakeRuntime([*CONTAINERS, unlinked])
    client = await gateway(make_config(docker_host), runtimes=registry_of(runtime))
    assert await names(client, "name=unlinked") == []
    assert await names(client, "name=unlinked&all=true") == ["web-unlinked"]


async def test_a_token_without_read_containers_may_not_list(gateway: ClientFactory, docker_host: str) -> None:
    remote = await gateway(security_config(docker_host), runtimes=registry_of(FakeRuntime(list(CONTAINERS))))
    denied = await remote.get(
        "/api/v1/containers?state=running", headers=bearer(token(scopes=["read:engine"]))
    )
    await expect_error(denied, 403, "FORBIDDEN")
    allowed = await remote.get(
        "/api/v1/containers?state=running&limit=1", headers=bearer(token(scopes=["read:containers"]))
    )
    assert allowed.status == 200 and allowed.headers["X-Total-Count"] == "1"
