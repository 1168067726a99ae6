"""Stack logs without a daemon: the subscribe message's rules, the services a request names, the
merge of containers' lines, and the WebSocket session that follows a stack's containers (on a
fake runtime, with the real outbox and event bus)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any, cast

import pytest

from nekzus.errors import ApiError
from nekzus.http.routes import stack_logs
from nekzus.logsearch import LogExcerpt, LogLine
from nekzus.realtime import stacklogs
from nekzus.realtime.events import EventBus
from nekzus.realtime.hub import Connection, Outbox
from nekzus.realtime.logrequest import MAX_TAIL, InvalidSubscription
from nekzus.realtime.stacklogs import StackLogSession, StackLogSubscription
from nekzus.stacks.model import PROJECT, SERVICE, Stack
from nekzus.tasks import TaskGroup
from runtimes import ContainerSummary, LogChunk
from tests.support.fakes import FakeRuntime, summary

STAMP = "2026-01-01T00:00:01.000000001Z"


def member(n: int, service: str) -> ContainerSummary:
    # Ids of their own (the fake's summaries of small numbers share their first 12 digits).
    return replace(
        summary(n), id=f"{n:012x}", name=f"shop-{service}-{n}", labels={PROJECT: "shop", SERVICE: service}
    )


def test_a_subscription_takes_its_fields_and_refuses_the_rest() -> None:
    sub = StackLogSubscription.from_message({"stack": "shop"})
    assert (sub.stack, sub.services, sub.tail, sub.timestamps, sub.since) == ("shop", None, 100, False, None)
    sub = StackLogSubscription.from_message(
        {"stack": "shop", "services": ["web", "web", "db"], "tail": 10**9, "since": f"{STAMP}"}
    )
    assert sub.services == ("web", "db") and sub.tail == MAX_TAIL
    assert sub.since == (1_767_225_601, 1) and sub.since_exclusive
    for data, word in (
        ({}, "stack"),
        ({"stack": ""}, "stack"),
        ({"stack": ["shop"]}, "stack"),
        ({"stack": "shop", "services": []}, "services"),
        ({"stack": "shop", "services": "web"}, "services"),
        ({"stack": "shop", "services": [1]}, "services"),
        ({"stack": "shop", "services": ["x"] * 65}, "services"),
        ({"stack": "shop", "tail": -1}, "tail"),
        ({"stack": "shop", "tail": True}, "tail"),
        ({"stack": "shop", "since": float("nan")}, "since"),
        ({"stack": "shop", "since": 1e300}, "since"),
        ({"stack": "shop", "timestamps": 1}, "timestamps"),
        ({"stack": "shop", "follow": False}, "follow"),
    ):
        with pytest.raises(InvalidSubscription, match=word):
            StackLogSubscription.from_message(data)


def test_services_a_request_names() -> None:
    stack = Stack("shop", (), ("web", "db"), None, (), "")
    assert stack_logs.chosen_services(stack, None) == ["web", "db"]
    assert stack_logs.chosen_services(stack, ["db", "db"]) == ["db"]
    with pytest.raises(ApiError) as raised:
        stack_logs.chosen_services(stack, ["web", "cache"])
    assert raised.value.code == "INVALID_REQUEST" and "'cache'" in raised.value.message


def test_the_merge_orders_by_time_and_keeps_the_sources_order_on_a_tie() -> None:
    web, db = (stack_logs._Source(s, member(n, s)) for n, s in ((1, "web"), (2, "db")))

    def excerpt(*stamps: str) -> LogExcerpt:
        return LogExcerpt([LogLine(i + 1, "stdout", s, s) for i, s in enumerate(stamps)], False, len(stamps))

    merged = stack_logs._merge(
        [web, db],
        [
            excerpt("2026-01-01T00:00:01.5Z", "2026-01-01T00:00:03Z"),
            excerpt("2026-01-01T00:00:01.5Z", "2026-01-01T00:00:02Z"),
        ],
    )
    assert [(t.source.service, t.line.text) for t in merged] == [
        ("web", "2026-01-01T00:00:01.5Z"),
        ("db", "2026-01-01T00:00:01.5Z"),
        ("db", "2026-01-01T00:00:02Z"),
        ("web", "2026-01-01T00:00:03Z"),
    ]
    assert stack_logs._merge([web, db], [None, excerpt()]) == []


class Stub:
    """What a session needs of a connection: its outbox."""

    def __init__(self) -> None:
        self.outbox = Outbox(event_limit=8, room=64)


async def messages(outbox: Outbox, count: int) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    async with asyncio.timeout(5):
        while len(got) < count:
            text = await outbox.next()
            assert text is not None
            got.append(json.loads(text))
    return got


@pytest.fixture
async def tasks() -> AsyncIterator[TaskGroup]:
    group = TaskGroup()
    try:
        yield group
    finally:
        await group.close()


def session(
    runtime: FakeRuntime, bus: EventBus, tasks: TaskGroup, **data: Any
) -> tuple[StackLogSession, Outbox]:
    conn = Stub()

    async def containers() -> list[tuple[str, ContainerSummary]]:
        return [(c.labels[SERVICE], c) for c in runtime.containers.values()]

    sub = StackLogSubscription.from_message({"stack": "shop", **data})
    made = StackLogSession(cast(Connection, conn), runtime, sub, ["web", "db"], containers, bus, tasks.spawn)
    made.task = tasks.spawn(made.run(), name="stack-logs-test")
    return made, conn.outbox


async def test_the_session_follows_the_stack_and_the_containers_that_start_later(
    tasks: TaskGroup,
) -> None:
    runtime = FakeRuntime([member(1, "web"), member(2, "db")])
    runtime.log_chunks = [LogChunk("stdout", f"{STAMP} hello\n".encode())]
    bus = EventBus()
    made, outbox = session(runtime, bus, tasks)
    got = await messages(outbox, 5)
    assert got[0] == {"type": "stack.logs.started", "data": {**got[0]["data"], "services": ["web", "db"]}}
    lines = [m["data"] for m in got if m["type"] == "stack.logs"]
    assert sorted(line["service"] for line in lines) == ["db", "web"]
    for line in lines:
        assert line == {
            "stack": "shop",
            "service": line["service"],
            "container": f"shop-{line['service']}-{1 if line['service'] == 'web' else 2}",
            "containerId": line["containerId"],
            "stream": "stdout",
            "text": "hello",
            "timestamp": 1_767_225_601,
        }
    started = [m for m in got if m["type"] == "stack.logs.container.started"]
    assert len(started) == 2 and {"stack", "service", "container"} <= set(started[0]["data"])

    # A container of the stack that starts now is followed: the watcher's event sets off a look.
    # It is read from the stream's start: its line of 2026-01-01 is older and left out.
    later = member(3, "web")
    runtime.containers[later.full_id] = later
    runtime.log_chunks.append(LogChunk("stdout", b"2099-01-01T00:00:00.5Z new\n"))
    bus.publish("container.state", {"containerId": later.id, "state": "running", "runtime": "docker"})
    got = await messages(outbox, 2)
    assert [m["type"] for m in got] == ["stack.logs.container.started", "stack.logs"]
    assert got[1]["data"]["containerId"] == later.id and got[1]["data"]["text"] == "new"

    await made.stop()
    assert len(tasks) == 0, "the session and its followers are all gone"
    assert made.ended()["reason"] == "stopped"


async def test_a_session_follows_a_bounded_number_of_containers(
    tasks: TaskGroup, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stacklogs, "MAX_CONTAINERS", 1)
    runtime = FakeRuntime([member(1, "web"), member(2, "db")])
    made, outbox = session(runtime, EventBus(), tasks, tail=0)
    got = await messages(outbox, 3)
    errors = [m["data"] for m in got if m["type"] == "stack.logs.error"]
    assert [e["error"] for e in errors] == ["TOO_MANY_CONTAINERS"] and "1" in errors[0]["message"]
    assert [m["type"] for m in got].count("stack.logs.container.started") == 1
    await made.stop()
    assert len(tasks) == 0


async def test_a_look_that_fails_is_reported_and_the_stream_goes_on(tasks: TaskGroup) -> None:
    runtime = FakeRuntime([])
    bus = EventBus()
    conn = Stub()
    calls = 0

    async def containers() -> list[tuple[str, ContainerSummary]]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ApiError(503, "RUNTIME_UNAVAILABLE", "The runtime is not answering")
        return []

    sub = StackLogSubscription.from_message({"stack": "shop"})
    made = StackLogSession(cast(Connection, conn), runtime, sub, ["web"], containers, bus, tasks.spawn)
    made.task = tasks.spawn(made.run(), name="stack-logs-test")
    got = await messages(conn.outbox, 2)
    assert got[1]["data"]["error"] == "RUNTIME_UNAVAILABLE"
    # Another runtime's containers set off no look; this runtime's do.
    bus.publish("container.state", {"containerId": "x", "state": "running", "runtime": "kubernetes"})
    bus.publish("container.state", {"containerId": "x", "state": "exited", "runtime": "docker"})
    assert not made._changed.is_set()
    bus.publish("container.state", {"containerId": "x", "state": "running", "runtime": "docker"})
    async with asyncio.timeout(5):
        while True:
            if calls == 2:
                break
            await asyncio.sleep(0.01)
    await made.stop()
    assert len(tasks) == 0
