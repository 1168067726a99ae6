"""A stack's logs against the real Engine and the real compose binary: REST (merged in time order,
tagged, searched, downloaded) and the WebSocket stream that follows the stack through a recreate
and a scale-up. Every project is started by hand (tests/support/stacks.py) and taken down after."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from nekzus.realtime.hub import HUB
from nekzus.realtime.logrequest import parse_since
from nekzus.stacks.service import STACKS
from tests.support.gateway import ClientFactory, make_config
from tests.support.stacks import HandProjects, compose_file, project_name, service
from tests.support.wsclient import WS
from tests.unit.test_errors import expect
from tests.unit.test_security import bearer, security_config, token

PREFIX = "nkzl"


def logs_path(name: str, query: str = "") -> str:
    return f"/api/v1/stacks/{name}/logs" + (f"?{query}" if query else "")


async def logs(client: TestClient[Any, Any], name: str, query: str = "") -> dict[str, Any]:
    resp = await client.get(logs_path(name, query))
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    assert body["stack"] == name
    return body


async def until_lines(
    client: TestClient[Any, Any], name: str, enough: Callable[[list[dict[str, Any]]], bool]
) -> list[dict[str, Any]]:
    """The stack's lines once ``enough`` says so (the services print a line a second)."""
    async with asyncio.timeout(60):
        while True:
            lines: list[dict[str, Any]] = (await logs(client, name))["lines"]
            if enough(lines):
                return lines
            await asyncio.sleep(0.3)


def per_service(lines: list[dict[str, Any]], count: int) -> bool:
    services = [line["service"] for line in lines]
    return services.count("web") >= count and services.count("worker") >= count


async def compose(projects: HandProjects, name: str, *args: str) -> None:
    await asyncio.to_thread(projects.compose, name, *args)


@pytest.fixture
async def stopped(client: TestClient[Any, Any], hand_projects: HandProjects) -> str:
    """A stack of web and worker that printed at least four lines each, then stopped: its logs
    stay as they are for the test."""
    name = project_name(PREFIX)
    await asyncio.to_thread(hand_projects.up, name, compose_file())
    await until_lines(client, name, lambda lines: per_service(lines, 4))
    await compose(hand_projects, name, "stop", "--timeout", "5")
    return name


def nanos(line: dict[str, Any]) -> tuple[int, int]:
    return parse_since(line["time"])


async def test_lines_of_both_services_merged_in_time_order_with_tags(
    client: TestClient[Any, Any], stopped: str
) -> None:
    body = await logs(client, stopped, "timestamps=true")
    lines = body["lines"]
    assert per_service(lines, 4) and body["truncated"] is False
    assert [nanos(line) for line in lines] == sorted(nanos(line) for line in lines)
    ids = {line["service"]: line["containerId"] for line in lines}
    for line in lines:
        assert set(line) == {"service", "container", "containerId", "stream", "timestamp", "text", "time"}
        assert line["stream"] == "stdout" and line["containerId"] == ids[line["service"]]
        assert line["container"] == f"{stopped}-{line['service']}-1"
        # The text is the service's own ($HOSTNAME is the short container id), without the time.
        assert line["text"].startswith(f"{line['containerId']} line ")
        assert line["timestamp"] == nanos(line)[0]
    # Each service's own lines keep their order (1, 2, 3 ...).
    for name in ("web", "worker"):
        numbers = [int(line["text"].rsplit(" ", 1)[1]) for line in lines if line["service"] == name]
        assert numbers == list(range(1, len(numbers) + 1))
    # Without timestamps=true the line has no "time", but still its timestamp in seconds.
    plain = (await logs(client, stopped))["lines"]
    assert [line["text"] for line in plain] == [line["text"] for line in lines]
    assert "time" not in plain[0] and isinstance(plain[0]["timestamp"], int)


async def test_tail_limit_and_services(client: TestClient[Any, Any], stopped: str) -> None:
    everything = (await logs(client, stopped, "timestamps=true"))["lines"]
    tail = await logs(client, stopped, "tail=3&timestamps=true")
    assert tail["lines"] == everything[-3:] and tail["truncated"] is True
    limited = await logs(client, stopped, "limit=2&timestamps=true")
    assert limited["lines"] == everything[-2:] and limited["truncated"] is True
    assert (await logs(client, stopped, "tail=0"))["lines"] == []
    web = (await logs(client, stopped, "services=web&timestamps=true"))["lines"]
    assert web == [line for line in everything if line["service"] == "web"]
    both = (await logs(client, stopped, "services=worker,web&timestamps=true"))["lines"]
    assert both == everything
    assert (await logs(client, stopped, "stream=stderr"))["lines"] == []
    message = (
        await expect(await client.get(logs_path(stopped, "services=web,nope")), 400, "INVALID_REQUEST")
    )["message"]
    assert "nope" in message
    await expect(await client.get(logs_path(stopped, "services=web,,worker")), 400, "INVALID_REQUEST")


async def test_search_literal_and_regex(client: TestClient[Any, Any], stopped: str) -> None:
    found = await logs(client, stopped, "search=LINE+2&timestamps=true")
    matches = found["matches"]
    assert sorted(m["service"] for m in matches) == ["web", "worker"]
    assert all(m["text"].endswith(" line 2") and m["lineNumber"] == 2 for m in matches)
    assert nanos(matches[0]) <= nanos(matches[1]) and found["truncated"] is False
    assert found["scanned"] >= 8
    regex = await logs(client, stopped, "search=line+%5B13%5D%24&regex=true&caseSensitive=true")
    assert sorted((m["service"], m["text"].rsplit(" ", 1)[1]) for m in regex["matches"]) == [
        ("web", "1"),
        ("web", "3"),
        ("worker", "1"),
        ("worker", "3"),
    ]
    assert all(set(m) >= {"service", "container", "containerId", "stream", "timestamp"} for m in matches)
    only = await logs(client, stopped, "search=line&services=worker&limit=2")
    assert [m["service"] for m in only["matches"]] == ["worker", "worker"] and only["truncated"] is True
    inverted = await logs(client, stopped, "search=line&invert=true")
    assert inverted["matches"] == []
    bad = await client.get(logs_path(stopped, "search=(&regex=true"))
    assert "search" in (await expect(bad, 400, "INVALID_REQUEST"))["message"]


async def test_download_prefixes_each_line_with_its_service(
    client: TestClient[Any, Any], stopped: str
) -> None:
    everything = (await logs(client, stopped))["lines"]
    resp = await client.get(logs_path(stopped, "download=true"))
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain")
    assert f'filename="{stopped}-logs.txt"' in resp.headers["Content-Disposition"]
    text = await resp.text()
    assert text.splitlines() == [f"{line['service']} | {line['text']}" for line in everything]
    stamped = await (
        await client.get(logs_path(stopped, "download=true&timestamps=true&services=web"))
    ).text()
    times = [parse_since(row.split(" ")[2]) for row in stamped.splitlines()]
    assert times == sorted(times) and all(row.startswith("web | ") for row in stamped.splitlines())
    tail = await (await client.get(logs_path(stopped, "download=true&tail=1&services=worker"))).text()
    assert tail.splitlines() == [
        f"worker | {[x for x in everything if x['service'] == 'worker'][-1]['text']}"
    ]


async def test_a_stack_without_containers_and_unknown_stacks(client: TestClient[Any, Any]) -> None:
    name = project_name(PREFIX)
    files = client.app[STACKS].files
    await asyncio.to_thread(files.write, name, compose_file(), None)
    try:
        assert (await logs(client, name)) == {"stack": name, "lines": [], "truncated": False}
        assert (await logs(client, name, "search=x"))["matches"] == []
        resp = await client.get(logs_path(name, "download=1"))
        assert resp.status == 200 and await resp.text() == ""
    finally:
        await asyncio.to_thread(files.delete, name)
    await expect(await client.get(logs_path(project_name(PREFIX))), 404, "STACK_NOT_FOUND")
    for bad in ("Upper", "a..b", "%2E%2E", "-dash", "a%2Fb", "x" * 300):
        resp = await client.get(logs_path(bad))
        assert resp.status in (400, 404), bad
        assert (await resp.json())["error"] in ("INVALID_STACK_NAME", "NOT_FOUND"), bad


async def test_bad_queries_are_400_and_name_the_parameter(client: TestClient[Any, Any], stopped: str) -> None:
    cases = {
        "tail=100000000": "tail",
        "tail=-1": "tail",
        "since=NaN": "since",
        "until=Infinity": "until",
        "limit=0": "limit",
        "limit=1e99": "limit",
        "search=x&regex=maybe": "regex",
        "search=%28&regex=true": "search",
        "container=web": "container",
        "namespace=default": "namespace",
        "services=a&services=b": "services",
        "grep=x": "grep",
        "search=x&download=1": "download",
    }
    for query, name in cases.items():
        resp = await client.get(logs_path(stopped, query))
        message = (await expect(resp, 400, "INVALID_REQUEST"))["message"]
        assert name in message, (query, message)


async def test_scope_and_foreign_pages(
    gateway: ClientFactory, docker_host: str, client: TestClient[Any, Any], stopped: str
) -> None:
    remote = await gateway(security_config(docker_host))
    resp = await remote.get(logs_path(stopped), headers=bearer(token(scopes=["read:containers"])))
    assert "read:stacks" in (await expect(resp, 403, "FORBIDDEN"))["message"]
    resp = await remote.get(logs_path(stopped, "tail=1"), headers=bearer(token(scopes=["read:stacks"])))
    assert resp.status == 200 and len((await resp.json())["lines"]) == 1
    resp = await client.get(logs_path(stopped), headers={"Origin": "https://evil.example"})
    await expect(resp, 403, "ORIGIN_NOT_ALLOWED")


# -- the WebSocket --------------------------------------------------------------------------------


async def connect(client: TestClient[Any, Any], **kwargs: Any) -> WS:
    ws = WS(await client.ws_connect("/api/v1/ws", **kwargs))
    await ws.until("hello")
    return ws


async def line_from(ws: WS, name: str, test: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    async with asyncio.timeout(60):
        while True:
            data: dict[str, Any] = (await ws.until("stack.logs", stack=name, timeout=60))["data"]
            if test(data):
                return data


async def test_follow_a_stack_through_a_recreate_and_a_scale_up(
    client: TestClient[Any, Any], hand_projects: HandProjects
) -> None:
    name = project_name(PREFIX)
    folder: Path = await asyncio.to_thread(hand_projects.up, name, compose_file())
    file = str(folder / "compose.yaml")
    ws = await connect(client)
    await ws.send("stack.logs.subscribe", stack=name, tail=2)
    started = await ws.until("stack.logs.started", stack=name)
    assert started["data"]["services"] == ["web", "worker"]
    web = await line_from(ws, name, lambda d: d["service"] == "web")
    worker = await line_from(ws, name, lambda d: d["service"] == "worker")
    for data in (web, worker):
        assert set(data) == {"stack", "service", "container", "containerId", "stream", "text", "timestamp"}
        assert data["text"].startswith(f"{data['containerId']} line ")

    await compose(hand_projects, name, "--file", file, "up", "-d", "--force-recreate", "web")
    fresh = await line_from(
        ws, name, lambda d: d["service"] == "web" and d["containerId"] != web["containerId"]
    )
    # The new container is followed from its start: its first line is there.
    assert fresh["text"] == f"{fresh['containerId']} line 1"
    # The old container's follower ended; the subscription goes on.
    if not any(
        m["type"] == "stack.logs.container.ended" and m["data"]["containerId"] == web["containerId"]
        for m in ws.seen
    ):
        await ws.until("stack.logs.container.ended", containerId=web["containerId"])

    await compose(hand_projects, name, "--file", file, "up", "-d", "--scale", "worker=2")
    second = await line_from(
        ws, name, lambda d: d["service"] == "worker" and d["containerId"] != worker["containerId"]
    )
    assert second["container"] == f"{name}-worker-2"

    await ws.send("stack.logs.unsubscribe", stack=name)
    ended = await ws.until("stack.logs.ended", stack=name)
    assert ended["data"]["reason"] == "stopped"
    hub = client.app[HUB]
    conn = next(iter(hub.connections))
    assert conn.stack_streams == {}
    await ws.send("stack.logs.unsubscribe", stack=name)
    assert (await ws.until("error"))["data"]["error"] == "INVALID_MESSAGE"


async def test_resume_with_since_skips_what_the_client_has(
    client: TestClient[Any, Any], stopped: str, hand_projects: HandProjects
) -> None:
    everything = (await logs(client, stopped, "timestamps=true&services=web"))["lines"]
    await compose(hand_projects, stopped, "start")
    ws = await connect(client)
    await ws.send("stack.logs.subscribe", stack=stopped, services=["web"], since=everything[1]["time"])
    first = await line_from(ws, stopped, lambda d: True)
    assert first["service"] == "web" and first["text"] == everything[2]["text"]


async def test_a_client_that_never_reads_holds_the_stream(
    gateway: ClientFactory, docker_host: str, hand_projects: HandProjects
) -> None:
    client = await gateway(make_config(docker_host, websocket={"log_buffer": 16}))
    name = project_name(PREFIX)
    burst = ["sh", "-c", "trap 'exit 0' TERM; seq 1 100000; while :; do sleep 1; done"]
    await asyncio.to_thread(
        hand_projects.up,
        name,
        compose_file({"web": service(command=burst), "worker": service(command=burst)}),
    )
    ws = await connect(client, max_msg_size=0)
    await ws.send("stack.logs.subscribe", stack=name, since=0)
    conn = next(iter(client.app[HUB].connections))
    outbox = conn.outbox
    # The followers fill the room and then wait for it: the outbox never holds more.
    async with asyncio.timeout(60):
        while True:
            if len(outbox) >= 16:
                break
            await asyncio.sleep(0.05)
    assert len(outbox) <= 16 + client.app[HUB].event_limit
    # Nothing was lost meanwhile: every line of both containers arrives, each in its order.
    seen: dict[str, int] = {}
    async with asyncio.timeout(120):
        while sum(seen.values()) < 200_000:
            message = json.loads((await ws.ws.receive()).data)
            if message["type"] == "stack.logs":
                service_name = message["data"]["service"]
                seen[service_name] = seen.get(service_name, 0) + 1
                assert message["data"]["text"] == str(seen[service_name])
    assert seen == {"web": 100_000, "worker": 100_000}


async def test_refused_subscriptions(
    gateway: ClientFactory, docker_host: str, client: TestClient[Any, Any], stopped: str
) -> None:
    remote = await gateway(security_config(docker_host))
    ws = WS(await remote.ws_connect("/api/v1/ws", headers=bearer(token(scopes=["read:containers"]))))
    await ws.until("hello")
    await ws.send("stack.logs.subscribe", stack=stopped)
    refused = await ws.until("stack.logs.error", stack=stopped)
    assert refused["data"]["error"] == "FORBIDDEN" and "read:stacks" in refused["data"]["message"]

    lan = await connect(client)
    missing = project_name(PREFIX)
    await lan.send("stack.logs.subscribe", stack=missing)
    assert (await lan.until("stack.logs.error", stack=missing))["data"]["error"] == "STACK_NOT_FOUND"
    await lan.send("stack.logs.subscribe", stack="../etc")
    assert (await lan.until("stack.logs.error", stack="../etc"))["data"]["error"] == "INVALID_STACK_NAME"
    await lan.send("stack.logs.subscribe", stack=stopped, services=["nope"])
    unknown = await lan.until("stack.logs.error", stack=stopped)
    assert unknown["data"]["error"] == "INVALID_REQUEST" and "nope" in unknown["data"]["message"]
    for data in (
        {},
        {"stack": 5},
        {"stack": stopped, "tail": "many"},
        {"stack": stopped, "since": "NaN"},
        {"stack": stopped, "services": "web"},
        {"stack": stopped, "services": []},
        {"stack": stopped, "timestamps": "yes"},
        {"stack": stopped, "follow": False},
    ):
        await lan.send("stack.logs.subscribe", **data)
        assert (await lan.until("error"))["data"]["error"] == "INVALID_MESSAGE", data
