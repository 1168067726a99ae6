"""Sequenced events, the replay buffer, resume and resync on the WebSocket, and the REST replay,
with a fake runtime (unit tier); the stories on the real Engine are in tests/docker/test_resume.py."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from nekzus.keys import EVENT_BUS, OPERATIONS
from nekzus.realtime.hub import HUB
from nekzus.realtime.replay import Expired, ReplayBuffer
from tests.docker.test_websocket import connect
from tests.support.fakes import FakeRuntime, registry_of, summary
from tests.support.gateway import ClientFactory, make_config
from tests.support.wsclient import WS
from tests.unit.test_security import REMOTE_ONLY, SECRET, bearer, token

# -- the buffer ----------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def filled(buffer: ReplayBuffer, count: int) -> None:
    for _ in range(count):
        seq = buffer.next_seq()
        buffer.keep(seq, "t", f"m{seq}")


def test_buffer_keeps_the_newest_events_up_to_its_count() -> None:
    buffer = ReplayBuffer(max_events=3, max_age=60)
    filled(buffer, 5)
    assert (buffer.first, buffer.seq, len(buffer)) == (3, 5, 3)
    assert [e.text for e in buffer.since(0)] == ["m3", "m4", "m5"]
    assert [e.seq for e in buffer.since(3)] == [4, 5]
    buffer.check(buffer.epoch, 2)  # every event after 2 is kept
    buffer.check(None, 5)
    for epoch, after in ((buffer.epoch, 1), (buffer.epoch, 6), ("another", 5)):
        with pytest.raises(Expired):
            buffer.check(epoch, after)
    assert buffer.next_after(5) is None
    entry = buffer.next_after(3)
    assert entry is not None and entry.seq == 4
    with pytest.raises(Expired):
        buffer.next_after(1)


def test_buffer_drops_events_older_than_its_age() -> None:
    clock = Clock()
    buffer = ReplayBuffer(max_events=100, max_age=10, clock=clock)
    filled(buffer, 2)
    clock.now += 6
    filled(buffer, 2)
    clock.now += 6  # the first two are 12 s old, the next two 6 s
    assert buffer.first == 3
    assert [e.text for e in buffer.since(0)] == ["m3", "m4"]
    with pytest.raises(Expired):
        buffer.check(None, 1)
    clock.now += 60
    assert (buffer.first, len(buffer)) == (5, 0)
    buffer.check(None, 4)  # nothing was missed by a client that has seen the last one


def test_a_buffer_of_nothing_still_numbers_and_knows_who_is_current() -> None:
    buffer = ReplayBuffer(max_events=0, max_age=0)
    filled(buffer, 3)
    assert (buffer.seq, len(buffer)) == (3, 0)
    buffer.check(buffer.epoch, 3)
    with pytest.raises(Expired):
        buffer.check(buffer.epoch, 2)
    assert ReplayBuffer(max_events=1, max_age=1).epoch != buffer.epoch


# -- the WebSocket -------------------------------------------------------------------------------


def fake_runtime() -> FakeRuntime:
    return FakeRuntime([summary(1), summary(2)])


async def gateway_with(gateway: ClientFactory, docker_host: str, **websocket: Any) -> TestClient[Any, Any]:
    config = make_config(docker_host, websocket=websocket) if websocket else make_config(docker_host)
    return await gateway(config, runtimes=registry_of(fake_runtime()))


def publish(client: TestClient[Any, Any], count: int, type_: str = "test.tick") -> None:
    bus = client.app[EVENT_BUS]
    for i in range(count):
        bus.publish(type_, {"n": i})


def is_event(message: dict[str, Any]) -> bool:
    """A broadcast event (``resuming``, ``resumed`` and ``resync`` carry a seq too, but are answers)."""
    return "seq" in message["data"] and message["type"] not in ("resuming", "resumed", "resync")


async def events_until(ws: WS, message_type: str, timeout: float = 15) -> tuple[list[dict[str, Any]], Any]:
    """The events between ``resuming`` and the first ``message_type``, and that message."""
    got: list[dict[str, Any]] = []
    replaying = False
    async with asyncio.timeout(timeout):
        while True:
            message = await ws.next(timeout)
            if message["type"] == message_type:
                assert replaying, f"{message_type} before resuming"
                return got, message
            if message["type"] == "resuming":
                replaying = True
            elif replaying and is_event(message):
                got.append(message)


async def last_seen(client: TestClient[Any, Any], ws: WS) -> tuple[str, int]:
    """Publish a marker and read up to it: the (epoch, seq) the client would keep."""
    client.app[EVENT_BUS].publish("test.marker", {})
    marker = await ws.until("test.marker")
    return marker["data"]["epoch"], marker["data"]["seq"]


async def test_every_event_is_numbered_once_for_every_reader(
    gateway: ClientFactory, docker_host: str
) -> None:
    client = await gateway_with(gateway, docker_host)
    a, b = await connect(client), await connect(client)
    for ws in (a, b):
        await ws.until("hello")
    publish(client, 5)
    seen = [[(await ws.until("test.tick"))["data"] for _ in range(5)] for ws in (a, b)]
    assert seen[0] == seen[1]
    seqs = [d["seq"] for d in seen[0]]
    assert seqs == list(range(seqs[0], seqs[0] + 5))
    assert {d["epoch"] for d in seen[0]} == {client.app[HUB].replay.epoch}
    assert [d["n"] for d in seen[0]] == [0, 1, 2, 3, 4]


async def test_resume_replays_exactly_what_was_missed_then_goes_live(
    gateway: ClientFactory, docker_host: str
) -> None:
    client = await gateway_with(gateway, docker_host)
    ws = await connect(client)
    await ws.until("hello")
    epoch, seq = await last_seen(client, ws)
    await ws.ws.close()
    publish(client, 7)
    publish(client, 3, "other.kind")

    ws = await connect(client)
    await ws.until("hello")
    await ws.send("subscribe", types=["test.*"])
    await ws.until("subscribed")
    await ws.send("resume", epoch=epoch, seq=seq)
    replayed, resumed = await events_until(ws, "resumed")
    # The subscription's filter holds for the replay: the other kind's three are skipped.
    assert [m["data"]["seq"] for m in replayed] == list(range(seq + 1, seq + 8))
    assert [m["data"]["n"] for m in replayed] == list(range(7))
    assert resumed["data"] == {
        "epoch": epoch,
        "seq": seq + 10,
        "replayed": 7,
        "timestamp": resumed["data"]["timestamp"],
    }
    publish(client, 1)
    live = await ws.until("test.tick")
    assert live["data"]["seq"] == seq + 11

    # Live events that reach the connection before its resume message is read are sent again by
    # the replay, after "resuming": the client drops what comes before that mark.
    publish(client, 2, "test.early")
    await ws.send("resume", epoch=epoch, seq=seq + 11)
    replayed, resumed = await events_until(ws, "resumed")
    early = [m["data"]["seq"] for m in ws.seen if m["type"] == "test.early"]
    assert early == [seq + 12, seq + 13, seq + 12, seq + 13]
    assert [m["data"]["seq"] for m in replayed] == [seq + 12, seq + 13]
    assert resumed["data"]["seq"] == seq + 13

    # Nothing missed: nothing replayed.
    await ws.send("resume", epoch=epoch, seq=seq + 13)
    replayed, resumed = await events_until(ws, "resumed")
    assert replayed == [] and resumed["data"]["replayed"] == 0


async def test_resume_in_the_upgrade_query_and_in_the_auth_message(
    gateway: ClientFactory, docker_host: str
) -> None:
    config = make_config(docker_host, auth={"jwt_secret": SECRET, **REMOTE_ONLY})
    client = await gateway(config, runtimes=registry_of(fake_runtime()))
    ws = await connect(client, headers=bearer(token()))
    await ws.until("hello")
    epoch, seq = await last_seen(client, ws)
    await ws.ws.close()
    publish(client, 4)

    by_query = WS(await client.ws_connect(f"/api/v1/ws?epoch={epoch}&seq={seq}", headers=bearer(token())))
    assert (await by_query.next())["type"] == "hello"
    replayed, resumed = await events_until(by_query, "resumed")
    assert [m["data"]["seq"] for m in replayed] == [seq + 1, seq + 2, seq + 3, seq + 4]

    by_auth = await connect(client)
    await by_auth.send("auth", token=token(), epoch=epoch, seq=seq + 2)
    assert (await by_auth.next())["type"] == "auth_success"
    assert (await by_auth.next())["type"] == "hello"
    replayed, resumed = await events_until(by_auth, "resumed")
    assert [m["data"]["seq"] for m in replayed] == [seq + 3, seq + 4]

    # A fresh token mid-session may resume too (a session whose token expired, for one).
    await by_auth.send("auth", token=token(), epoch=epoch, seq=seq + 3)
    assert (await by_auth.next())["type"] == "auth_success"
    replayed, resumed = await events_until(by_auth, "resumed")
    assert [m["data"]["seq"] for m in replayed] == [seq + 4]
    assert resumed["data"]["replayed"] == 1


async def test_the_seam_between_replay_and_live_under_a_burst(
    gateway: ClientFactory, docker_host: str
) -> None:
    # A small outbox: the replay has to wait for room many times while the burst goes on.
    client = await gateway_with(gateway, docker_host, log_buffer=16, event_queue=64)
    ws = await connect(client)
    await ws.until("hello")
    epoch, seq = await last_seen(client, ws)
    await ws.ws.close()
    publish(client, 3000)

    async def burst() -> None:
        for i in range(2000):
            client.app[EVENT_BUS].publish("test.burst", {"n": i})
            await asyncio.sleep(0)  # let the replay and the writer run: it catches up mid-burst
        client.app[EVENT_BUS].publish("test.end", {})

    # Resuming in the upgrade: the connection is never live before its replay.
    ws = WS(await client.ws_connect(f"/api/v1/ws?epoch={epoch}&seq={seq}"))
    await ws.until("hello")
    publisher = asyncio.create_task(burst())
    got, _ = await events_until(ws, "test.end", timeout=60)
    await publisher
    seqs = [m["data"]["seq"] for m in got]
    assert seqs == list(range(seq + 1, seq + 1 + len(seqs)))  # strictly +1: no gap, no duplicate
    assert len(seqs) == 5000
    resumed = next(m for m in ws.seen if m["type"] == "resumed")
    position = ws.seen.index(resumed)
    before = [m["data"]["seq"] for m in ws.seen[:position] if is_event(m)]
    assert before[-1] == resumed["data"]["seq"] and resumed["data"]["replayed"] == len(before)
    # The replay caught up while the burst went on: part of it arrived live, after the seam.
    assert len(before) < len(seqs)
    assert not ws.ws.closed


async def test_a_client_too_far_behind_gets_a_resync_then_the_live_stream(
    gateway: ClientFactory, docker_host: str
) -> None:
    client = await gateway_with(gateway, docker_host, replay_events=5)
    replay = client.app[HUB].replay
    ws = await connect(client)
    await ws.until("hello")
    epoch, seq = await last_seen(client, ws)
    publish(client, 10)
    await ws.until("test.tick", n=9)
    await ws.send("resume", epoch=epoch, seq=seq)
    resync = await ws.until("resync")
    data = resync["data"]
    assert (data["epoch"], data["seq"]) == (epoch, replay.seq)
    assert sorted(c["id"] for c in data["containers"]) == sorted([summary(1).id, summary(2).id])
    assert set(data["containers"][0]) >= {"id", "name", "state", "status", "image", "updateAvailable"}
    assert data["operations"] == []
    publish(client, 1)
    live = await ws.until("test.tick")
    assert live["data"]["seq"] == data["seq"] + 1

    # Another epoch (a gateway that restarted) resyncs too, whatever the seq.
    await ws.send("resume", epoch="0123456789abcdef", seq=data["seq"])
    assert (await ws.until("resync"))["data"]["epoch"] == epoch
    # A seq from the future of this epoch cannot be one this gateway gave out.
    await ws.send("resume", epoch=epoch, seq=10**9)
    assert (await ws.until("resync"))["data"]["seq"] == data["seq"] + 1


async def test_a_resync_lists_the_operations_still_running(gateway: ClientFactory, docker_host: str) -> None:
    fake = fake_runtime()
    gate = asyncio.Event()
    original_stop = fake.stop

    async def slow_stop(ref: Any, *, timeout: int) -> None:
        await gate.wait()
        await original_stop(ref, timeout=timeout)

    fake.stop = slow_stop  # type: ignore[method-assign]
    client = await gateway(make_config(docker_host), runtimes=registry_of(fake))
    try:
        resp = await client.post(f"/api/v1/containers/{summary(1).id}/stop")
        operation_id = (await resp.json())["operationId"]
        ws = await connect(client)
        await ws.until("hello")
        await ws.send("resume", epoch="another", seq=0)
        resync = await ws.until("resync")
        assert [op["operationId"] for op in resync["data"]["operations"]] == [operation_id]
        assert resync["data"]["operations"][0]["state"] == "pending"
    finally:
        gate.set()


async def test_a_long_replay_waits_for_a_slow_reader_instead_of_closing_it(
    gateway: ClientFactory, docker_host: str
) -> None:
    client = await gateway_with(gateway, docker_host, log_buffer=8, event_queue=8)
    ws = await connect(client)
    await ws.until("hello")
    epoch, seq = await last_seen(client, ws)
    await ws.ws.close()
    publish(client, 2000)
    ws = await connect(client)
    await ws.until("hello")
    await ws.send("resume", epoch=epoch, seq=seq)
    replayed, resumed = await events_until(ws, "resumed", timeout=60)
    assert len(replayed) == 2000 == resumed["data"]["replayed"]


@pytest.mark.parametrize(
    "raw",
    [
        '{"type":"resume","data":{"epoch":"e","seq":NaN}}',
        '{"type":"resume","data":{"epoch":"e","seq":Infinity}}',
        '{"type":"resume","data":{"epoch":"e","seq":-1}}',
        '{"type":"resume","data":{"epoch":"e","seq":"5"}}',
        '{"type":"resume","data":{"epoch":"e","seq":5.0}}',
        '{"type":"resume","data":{"epoch":"e","seq":true}}',
        '{"type":"resume","data":{"epoch":"e","seq":1000000000000}}',
        '{"type":"resume","data":{"epoch":"e","seq":' + "9" * 5000 + "}}",
        '{"type":"resume","data":{"epoch":5,"seq":1}}',
        '{"type":"resume","data":{"epoch":"","seq":1}}',
        '{"type":"resume","data":{"epoch":"' + "e" * 65 + '","seq":1}}',
        '{"type":"resume","data":{"epoch":"e"}}',
        '{"type":"resume","data":{}}',
        '{"type":"resume","data":{"epoch":"e","seq":1,"types":["x"]}}',
        '{"type":"resume","data":{"epoch":["e"],"seq":{"a":[[[[1]]]]}}}',
    ],
)
async def test_bad_resume_values_are_invalid_messages(
    gateway: ClientFactory, docker_host: str, raw: str
) -> None:
    client = await gateway_with(gateway, docker_host)
    ws = await connect(client)
    await ws.until("hello")
    await ws.ws.send_str(raw)
    error = await ws.until("error")
    assert error["data"]["error"] == "INVALID_MESSAGE"
    # The connection stays, live: nothing was changed.
    publish(client, 1)
    assert (await ws.until("test.tick"))["data"]["n"] == 0


async def test_bad_resume_values_in_the_query_and_the_auth_message(
    gateway: ClientFactory, docker_host: str
) -> None:
    config = make_config(docker_host, auth={"jwt_secret": SECRET, **REMOTE_ONLY})
    client = await gateway(config, runtimes=registry_of(fake_runtime()))
    for query in (
        "epoch=e&seq=-1",
        "epoch=e&seq=NaN",
        "epoch=e&seq=1e3",
        "seq=1",
        "epoch=e",
        "epoch=&seq=1",
        "epoch=e&seq=99999999999999",
        "epoch=e&seq=1&seq=2",
    ):
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await client.ws_connect(f"/api/v1/ws?{query}", headers=bearer(token()))
        assert info.value.status == 400, query
    ws = await connect(client)
    await ws.send("auth", token=token(), epoch="e", seq="1")
    error = await ws.next()
    assert (error["type"], error["data"]["error"]) == ("error", "INVALID_MESSAGE")
    await ws.send("auth", token=token())  # the wait for auth goes on
    assert (await ws.next())["type"] == "auth_success"
    # Mid-session, a bad resume part refuses the whole auth message: the identity stays as it was.
    await ws.send("auth", token=token(sub="someone-else"), epoch="e", seq=-5)
    assert (await ws.until("error"))["data"]["error"] == "INVALID_MESSAGE"


# -- REST ----------------------------------------------------------------------------------------


async def test_rest_replay_pages_and_filters(gateway: ClientFactory, docker_host: str) -> None:
    client = await gateway_with(gateway, docker_host)
    replay = client.app[HUB].replay
    start = replay.seq
    publish(client, 5)
    publish(client, 2, "other.kind")
    publish(client, 5)

    resp = await client.get(f"/api/v1/events?after={start}&limit=4&types=test.*")
    assert resp.status == 200
    page = await resp.json()
    assert (page["epoch"], page["seq"], page["more"]) == (replay.epoch, start + 12, True)
    assert [e["seq"] for e in page["events"]] == [start + 1, start + 2, start + 3, start + 4]
    first = page["events"][0]
    assert first["type"] == "test.tick" and first["data"]["n"] == 0 and first["data"]["seq"] == start + 1

    after = page["events"][-1]["seq"]
    pages = [page]
    while page["more"]:
        resp = await client.get(f"/api/v1/events?after={after}&limit=4&types=test.*&epoch={replay.epoch}")
        page = await resp.json()
        pages.append(page)
        after = page["events"][-1]["seq"] if page["more"] else page["seq"]
    seqs = [e["seq"] for p in pages for e in p["events"]]
    assert seqs == [start + i for i in (1, 2, 3, 4, 5, 8, 9, 10, 11, 12)]
    assert after == start + 12

    everything = await (await client.get(f"/api/v1/events?after={start}&limit=1000")).json()
    assert [e["type"] for e in everything["events"]].count("other.kind") == 2
    assert not everything["more"]
    empty = await (await client.get(f"/api/v1/events?after={start + 12}")).json()
    assert empty["events"] == [] and empty["seq"] == start + 12


async def test_rest_replay_refusals(gateway: ClientFactory, docker_host: str) -> None:
    config = make_config(
        docker_host, auth={"jwt_secret": SECRET, **REMOTE_ONLY}, websocket={"replay_events": 3}
    )
    client = await gateway(config, runtimes=registry_of(fake_runtime()))
    reader = bearer(token())
    replay = client.app[HUB].replay
    publish(client, 10)
    for query in (f"after={replay.seq - 5}", f"after={replay.seq + 1}", f"after={replay.seq}&epoch=other"):
        resp = await client.get(f"/api/v1/events?{query}", headers=reader)
        assert resp.status == 410, query
        body = await resp.json()
        assert body["error"] == "EVENTS_EXPIRED"
        assert (body["epoch"], body["seq"]) == (replay.epoch, replay.seq)
    oldest = await (await client.get("/api/v1/events", headers=reader)).json()
    assert [e["seq"] for e in oldest["events"]] == [replay.seq - 2, replay.seq - 1, replay.seq]
    bad = [
        "after=-1",
        "after=abc",
        "after=NaN",
        "after=1e3",
        "after=9999999999999",
        "limit=0",
        "limit=1001",
        "limit=x",
        "types=",
        "types=a,,b",
        "types=" + ",".join(["x"] * 65),
        "types=" + "x" * 129,
        "epoch=",
        "epoch=" + "e" * 65,
        "after=1&after=2",
        "types=a&types=b",
    ]
    for query in bad:
        resp = await client.get(f"/api/v1/events?{query}", headers=reader)
        assert resp.status == 400, query
        assert (await resp.json())["error"] == "INVALID_REQUEST"
    assert (await client.get("/api/v1/events")).status == 401
    resp = await client.get("/api/v1/events", headers=bearer(token(scopes=["write:containers"])))
    assert resp.status == 403


async def test_operations_started_since(gateway: ClientFactory, docker_host: str, tmp_path: Path) -> None:
    # A data directory of its own: the session's holds the records other tests' gateways left.
    config = make_config(docker_host, server={"data_dir": str(tmp_path), "tls": {"mode": "off"}})
    client = await gateway(config, runtimes=registry_of(fake_runtime()))
    tracker = client.app[OPERATIONS]
    ids = []
    for _ in range(2):
        resp = await client.post(f"/api/v1/containers/{summary(1).id}/restart")
        assert resp.status == 202, await resp.text()
        ids.append((await resp.json())["operationId"])
    for op_id in ids:
        op = tracker.get(op_id)
        assert op is not None
        await asyncio.wait_for(op.done.wait(), 15)
    first = tracker.get(ids[0])
    assert first is not None
    listed = await client.get(f"/api/v1/operations?since={first.started_at}")
    assert listed.status == 200 and listed.headers["X-Total-Count"] == "2"
    records = await listed.json()
    assert [r["operationId"] for r in records] == ids[::-1]  # newest first
    assert {r["state"] for r in records} == {"completed"}
    page = await client.get(f"/api/v1/operations?since={first.started_at}&limit=1&offset=1")
    assert [r["operationId"] for r in await page.json()] == [ids[0]]
    assert 'rel="prev"' in page.headers["Link"]
    later = await client.get(f"/api/v1/operations?since={first.started_at + 3600}")
    assert await later.json() == []
    for query in ("since=-1", "since=abc", "since=1.5", "since=NaN", "since=999999999999", "limit=0"):
        resp = await client.get(f"/api/v1/operations?{query}")
        assert resp.status == 400, query


async def test_the_reference_client_follows_across_a_reconnect(
    gateway: ClientFactory, docker_host: str
) -> None:
    from examples.resume_client import EventStream

    class Watched(EventStream):
        """The example's client, telling the test each time it has handled a message."""

        def __init__(self, url: str) -> None:
            super().__init__(url, None)
            self.handled = asyncio.Event()

        def handle(self, message_type: str, data: dict[str, Any]) -> None:
            super().handle(message_type, data)
            self.handled.set()

        async def until(self, done: Callable[[], bool]) -> None:
            async with asyncio.timeout(15):
                while not done():
                    self.handled.clear()
                    await self.handled.wait()

    client = await gateway_with(gateway, docker_host)
    stream = Watched(str(client.make_url("")))
    bus = client.app[EVENT_BUS]
    state = {"containerId": "abc", "name": "x", "runtime": "docker", "namespace": ""}
    async with aiohttp.ClientSession() as session:
        first = asyncio.create_task(stream._connection(session))
        await stream.until(lambda: stream.epoch is not None)  # the first connect resyncs
        assert set(stream.containers) == {summary(1).id}
        bus.publish("container.state", {**state, "state": "running"})
        await stream.until(lambda: "abc" in stream.containers)
        first.cancel()
        await asyncio.gather(first, return_exceptions=True)
        seen = stream.seq
        bus.publish("container.state", {**state, "state": "exited"})  # while it is away
        second = asyncio.create_task(stream._connection(session))
        await stream.until(lambda: stream.seq > seen)
        second.cancel()
        await asyncio.gather(second, return_exceptions=True)
    assert stream.containers["abc"]["state"] == "exited"
    assert stream.seq == seen + 1


async def test_a_resuming_client_that_never_reads_holds_up_no_one(
    gateway: ClientFactory, docker_host: str
) -> None:
    client = await gateway_with(gateway, docker_host, log_buffer=32)
    ws = await connect(client)
    await ws.until("hello")
    epoch, seq = await last_seen(client, ws)
    await ws.ws.close()
    bus = client.app[EVENT_BUS]
    for i in range(3000):  # about 6 MB: more than the sockets between the two ends hold
        bus.publish("test.big", {"n": i, "padding": "x" * 2000})
    # Resumes in the upgrade, then reads nothing (the client library stops reading the socket too).
    stuck = await client.ws_connect(f"/api/v1/ws?epoch={epoch}&seq={seq}")
    other = await connect(client)
    await other.until("hello")
    bus.publish("test.live", {})
    await other.until("test.live")  # the stuck replay held up neither the bus nor another reader
    hub = client.app[HUB]
    catching_up = [conn for conn in hub.connections if conn.catching_up]
    assert len(catching_up) == 1
    assert len(catching_up[0].outbox) <= hub.log_limit  # bounded, waiting for room
    await stuck.close()
