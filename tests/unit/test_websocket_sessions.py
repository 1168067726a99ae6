"""WebSocket sessions: token expiry and re-authentication, hostile messages, and bursts of requests."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from nekzus.keys import EVENT_BUS
from nekzus.realtime.hub import HUB, Connection
from nekzus.security.auth import LEEWAY_SECONDS
from runtimes import LogChunk, RuntimeRegistry, Unavailable
from tests.support.fakes import FakeRuntime, registry_of, summary
from tests.support.gateway import ClientFactory, make_config
from tests.support.wsclient import WS
from tests.unit.test_security import REMOTE_ONLY, SECRET, bearer, token

LAN = {"local_networks": ["127.0.0.0/8"]}
CID = summary(1).id


def fake_registry() -> tuple[RuntimeRegistry, FakeRuntime]:
    fake = FakeRuntime([summary(1)])
    return registry_of(fake), fake


async def gateway_with(
    gateway: ClientFactory, docker_host: str, *, lan: bool, **ws: Any
) -> TestClient[Any, Any]:
    registry, _ = fake_registry()
    config = make_config(
        docker_host,
        auth={"jwt_secret": SECRET, **(LAN if lan else REMOTE_ONLY)},
        websocket={"reauth_grace": 1, **ws},
    )
    return await gateway(config, runtimes=registry)


def short_token(seconds: float = 1.5, **claims: Any) -> str:
    """A token the gateway accepts for ``seconds`` to one second more (its ``exp`` is already in the
    leeway; rounded up, so a loaded machine gets at least the time asked for)."""
    return token(exp=math.ceil(time.time() + seconds) - LEEWAY_SECONDS, **claims)


async def connect(client: TestClient[Any, Any], **kwargs: Any) -> WS:
    return WS(await client.ws_connect("/api/v1/ws", **kwargs))


def publish(client: TestClient[Any, Any], n: int) -> None:
    client.app[EVENT_BUS].publish("test.ping", {"n": n})


def connection(client: TestClient[Any, Any]) -> Connection:
    connections: set[Connection] = client.app[HUB].connections
    (conn,) = connections
    return conn


# -- token expiry --------------------------------------------------------------------------------


async def test_an_expired_session_gets_no_events_nor_streams_and_closes_with_4401(
    gateway: ClientFactory, docker_host: str
) -> None:
    client = await gateway_with(gateway, docker_host, lan=False)
    ws = await connect(client, headers=bearer(short_token(sub="phone")))
    await ws.until("hello")
    publish(client, 1)
    await ws.until("test.ping", n=1)
    expired = await ws.until("auth.expired", timeout=10)
    assert expired["data"]["subject"] == "phone"
    assert expired["data"]["closesIn"] == 1 and expired["data"]["anonymous"] is False
    assert "fresh token" in expired["data"]["message"]
    # In the grace: events are not delivered, and no log stream opens.
    publish(client, 2)
    await ws.send("container.logs.subscribe", containerId=CID)
    refused = await ws.until("container.logs.error")
    assert refused["data"] == {**refused["data"], "containerId": CID, "error": "UNAUTHORIZED"}
    assert "expired" in refused["data"]["message"]
    assert await ws.closed(timeout=10) == 4401
    assert not [m for m in ws.seen if m["type"] == "test.ping" and m["data"]["n"] == 2]
    assert not [m for m in ws.seen if m["type"] == "container.logs.started"]


async def test_reauthentication_in_the_grace_resumes_the_session(
    gateway: ClientFactory, docker_host: str
) -> None:
    client = await gateway_with(gateway, docker_host, lan=False, auth_timeout=5)
    ws = await connect(client)  # authenticates with its first message
    await ws.send("auth", token=short_token(sub="tablet"))
    assert (await ws.next())["type"] == "auth_success"
    await ws.until("auth.expired", timeout=10)
    # The fresh token lives past the end of the grace: the connection outlives that end, and
    # its next expiry is the fresh token's (seen as a second auth.expired).
    fresh = short_token(3, sub="tablet", scopes=["read:containers"])
    await ws.send("auth", token=fresh)
    success = await ws.until("auth_success")
    assert success["data"]["subject"] == "tablet" and isinstance(success["data"]["expiresAt"], int)
    publish(client, 3)
    await ws.until("test.ping", n=3)
    await ws.send("container.logs.subscribe", containerId=CID, follow=False)
    await ws.until("container.logs.ended", containerId=CID)
    second = await ws.until("auth.expired", timeout=10)
    assert second["data"]["expiresAt"] == success["data"]["expiresAt"]
    assert await ws.closed(timeout=10) == 4401


async def test_a_failed_reauthentication_does_not_lift_the_expiry(
    gateway: ClientFactory, docker_host: str
) -> None:
    client = await gateway_with(gateway, docker_host, lan=False)
    ws = await connect(client, headers=bearer(short_token()))
    await ws.until("auth.expired", timeout=10)
    await ws.send("auth", token=token(scopes=["write:containers"]))
    assert (await ws.until("auth_failed"))["data"]["error"] == "FORBIDDEN"
    await ws.send("auth", token=token(exp=int(time.time()) - LEEWAY_SECONDS - 5))
    assert (await ws.until("auth_failed"))["data"]["error"] == "UNAUTHORIZED"
    assert await ws.closed(timeout=10) == 4401


class GatedLogs(FakeRuntime):
    """One log line at once, a second when ``more`` is set (``sent`` tells when it was handed on)."""

    def __init__(self) -> None:
        super().__init__([summary(1)])
        self.more = asyncio.Event()
        self.sent = asyncio.Event()

    async def logs(
        self,
        ref: Any,
        *,
        follow: bool,
        tail: int | None,
        timestamps: bool,
        since: int | None = None,
        until: int | None = None,
    ) -> AsyncIterator[LogChunk]:
        yield LogChunk("stdout", b"2026-01-01T00:00:00.000000001Z first\n")
        await self.more.wait()
        self.sent.set()
        yield LogChunk("stdout", b"2026-01-01T00:00:00.000000002Z second\n")


async def test_log_streams_wait_while_the_session_is_suspended(
    gateway: ClientFactory, docker_host: str
) -> None:
    fake = GatedLogs()
    registry = registry_of(fake)
    config = make_config(
        docker_host, auth={"jwt_secret": SECRET, **REMOTE_ONLY}, websocket={"reauth_grace": 10}
    )
    client = await gateway(config, runtimes=registry)
    ws = await connect(client, headers=bearer(short_token(2)))
    await ws.until("hello")
    await ws.send("container.logs.subscribe", containerId=CID, follow=False)
    assert (await ws.until("container.logs"))["data"]["message"] == "first"
    await ws.until("auth.expired", timeout=10)
    fake.more.set()
    async with asyncio.timeout(10):
        await fake.sent.wait()  # the stream now holds "second" and waits
    # Replies still pass; the held line does not overtake them, nor arrive before re-authentication.
    await ws.send("subscribe", types=["container.*"])
    await ws.until("subscribed")
    await ws.send("auth", token=token())
    await ws.until("auth_success")
    assert (await ws.until("container.logs"))["data"]["message"] == "second"
    assert (await ws.until("container.logs.ended"))["data"]["reason"] == "stopped"
    order = [m["type"] for m in ws.seen]
    assert order.index("auth_success") < order.index("container.logs", order.index("auth.expired"))


async def test_a_lan_session_falls_back_to_anonymous_lan(gateway: ClientFactory, docker_host: str) -> None:
    client = await gateway_with(gateway, docker_host, lan=True)
    upgraded = await connect(client, headers=bearer(short_token(sub="phone")))
    await upgraded.until("hello")
    anonymous = await connect(client)
    await anonymous.until("hello")
    # A LAN connection that signs in later keeps the token's expiry too.
    await anonymous.send("auth", token=short_token(sub="laptop"))
    assert (await anonymous.until("auth_success"))["data"]["subject"] == "laptop"
    for ws, subject in ((upgraded, "phone"), (anonymous, "laptop")):
        expired = await ws.until("auth.expired", timeout=10)
        assert expired["data"]["subject"] == subject
        assert expired["data"]["anonymous"] is True and expired["data"]["closesIn"] is None
    hub = client.app[HUB]
    assert all(c.principal.subject is None and not c.principal.authenticated for c in hub.connections)
    # Both carry on as before: events, log streams, and no deadline left.
    publish(client, 10)
    for ws in (upgraded, anonymous):
        await ws.until("test.ping", n=10)
        await ws.send("container.logs.subscribe", containerId=CID, follow=False)
        await ws.until("container.logs.started")
    assert all(c.deadline is None for c in hub.connections)


async def test_deadlines_are_cancelled_when_the_connection_goes(
    gateway: ClientFactory, docker_host: str
) -> None:
    client = await gateway_with(gateway, docker_host, lan=False)
    ws = await connect(client, headers=bearer(token()))
    await ws.until("hello")
    conn = connection(client)
    handle = conn.deadline
    assert handle is not None and not handle.cancelled()
    await ws.ws.close()
    assert conn.writer is not None
    await asyncio.wait({conn.writer}, timeout=10)  # the writer ends when the hub forgets the connection
    assert conn not in client.app[HUB].connections
    assert handle.cancelled() and conn.deadline is None


# -- hostile messages ----------------------------------------------------------------------------


async def test_a_deep_first_message_is_invalid_and_the_connection_waits_for_auth(
    gateway: ClientFactory, docker_host: str, caplog: pytest.LogCaptureFixture
) -> None:
    client = await gateway_with(gateway, docker_host, lan=False, auth_timeout=10)
    ws = await connect(client)
    for deep in ("[" * 30_000 + "]" * 30_000, '{"type": "auth", "data": ' + "[" * 30_000):
        await ws.ws.send_str(deep)
        error = await ws.next()
        assert error["type"] == "error" and error["data"]["error"] == "INVALID_MESSAGE"
        assert "nested more than 64 levels deep" in error["data"]["message"]
    await ws.send("auth", token=token(sub="tablet"))
    assert (await ws.next())["type"] == "auth_success"
    ws = await connect(client)
    await ws.ws.send_str("[" * 30_000 + "]" * 30_000)  # after the upgrade's own authentication too
    await ws.send("auth", token=token(sub="tablet"))
    assert (await ws.until("auth_success"))["data"]["subject"] == "tablet"
    assert not [r for r in caplog.records if r.exc_info]


async def test_a_well_formed_first_message_of_another_type_is_still_refused(
    gateway: ClientFactory, docker_host: str
) -> None:
    client = await gateway_with(gateway, docker_host, lan=False)
    ws = await connect(client)
    await ws.send("subscribe", types=["container.*"])
    assert (await ws.next())["type"] == "auth_failed"
    assert await ws.closed() == 4401


SINCE = [
    "NaN",
    "Infinity",
    "-Infinity",
    "1e309",
    '"0000-01-01T00:00:00Z"',
    '"2024-13-45T99:99:99"',
    '"2024-13-45T99:99:99Z"',
    '"2024-01-01T00:00:00+99:00"',
    "1" + "0" * 4000,
    '"١٧٠٠٠٠٠٠٠٠"',
    "-1",
    "true",
    "[]",
    "{}",
]


async def test_bad_since_values_are_invalid_messages_naming_the_field(
    gateway: ClientFactory, docker_host: str, caplog: pytest.LogCaptureFixture
) -> None:
    client = await gateway_with(gateway, docker_host, lan=True)
    ws = await connect(client)
    await ws.until("hello")
    for since in SINCE:
        await ws.ws.send_str(
            f'{{"type": "container.logs.subscribe", "data": {{"containerId": "{CID}", "since": {since}}}}}'
        )
        error = await ws.next()
        assert error["type"] == "error" and error["data"]["error"] == "INVALID_MESSAGE", since
        assert "since" in error["data"]["message"], since
    # Still the same connection, and good values still work.
    for since in ("-0.0", "0", '"1970-01-01T00:00:00Z"', '"9999-12-31T23:59:59Z"', "1700000000.25"):
        await ws.ws.send_str(
            f'{{"type": "container.logs.subscribe", "data": {{"containerId": "{CID}", "since": {since}, '
            '"follow": false}}'
        )
        assert (await ws.until("container.logs.ended"))["data"]["reason"] == "stopped", since
    assert not [r for r in caplog.records if r.exc_info]


BAD_FIELDS: list[tuple[str, dict[str, Any], str]] = [
    ("container.logs.subscribe", {"containerId": CID, "tail": 1.5}, "tail"),
    ("container.logs.subscribe", {"containerId": CID, "tail": True}, "tail"),
    ("container.logs.subscribe", {"containerId": CID, "tail": -1}, "tail"),
    ("container.logs.subscribe", {"containerId": CID, "tail": "5"}, "tail"),
    ("container.logs.subscribe", {"containerId": CID, "follow": "yes"}, "follow"),
    ("container.logs.subscribe", {"containerId": CID, "timestamps": 1}, "timestamps"),
    ("container.logs.subscribe", {"containerId": {"id": CID}}, "containerId"),
    ("container.logs.subscribe", {"containerId": CID, "namespace": ["x"]}, "namespace"),
    ("container.logs.subscribe", {"containerId": CID, "runtime": 5}, "runtime"),
    ("container.logs.subscribe", {"containerId": CID, "container": {}}, "container"),
    ("container.logs.unsubscribe", {"containerId": 5}, "containerId"),
    ("container.logs.unsubscribe", {"containerId": CID, "namespace": {}}, "namespace"),
    ("subscribe", {"types": "container.*"}, "types"),
    ("subscribe", {"types": [{"a": 1}]}, "types"),
    ("subscribe", {"types": ["x"] * 65}, "types"),
    ("subscribe", {"types": ["x" * 129]}, "types"),
]


async def test_wrong_field_types_in_every_message_type(gateway: ClientFactory, docker_host: str) -> None:
    client = await gateway_with(gateway, docker_host, lan=True)
    ws = await connect(client)
    await ws.until("hello")
    for message_type, data, field in BAD_FIELDS:
        await ws.send(message_type, **data)
        error = await ws.next()
        assert error["type"] == "error" and error["data"]["error"] == "INVALID_MESSAGE", (message_type, data)
        assert field in error["data"]["message"], (message_type, data)
    for raw in (
        '{"type": "subscribe", "data": "x"}',
        '{"type": "subscribe", "data": null}',
        '{"type": 5}',
        '{"type": ["auth"]}',
        "null",
        '"auth"',
        "-0",
    ):
        await ws.ws.send_str(raw)
        error = await ws.next()
        assert error["data"]["error"] == "INVALID_MESSAGE", raw
    await ws.send("auth", token=5)
    assert (await ws.next())["type"] == "auth_failed"
    # A huge tail is clamped, not refused; -0 is zero.
    await ws.ws.send_str(
        f'{{"type": "container.logs.subscribe", "data": {{"containerId": "{CID}", "follow": false, '
        f'"tail": 1{"0" * 4000}}}}}'
    )
    assert (await ws.until("container.logs.ended"))["data"]["reason"] == "stopped"
    await ws.ws.send_str(
        f'{{"type": "container.logs.subscribe", "data": {{"containerId": "{CID}", "follow": false, '
        '"tail": -0}}'
    )
    assert (await ws.until("container.logs.ended"))["data"]["reason"] == "stopped"


async def test_a_defect_in_a_handler_answers_an_error_and_keeps_the_connection(
    gateway: ClientFactory,
    docker_host: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from nekzus.http.routes import ws as ws_route

    async def broken(conn: Connection, data: dict[str, Any]) -> None:
        raise ZeroDivisionError("a defect")

    monkeypatch.setattr(ws_route, "_subscribe", broken)
    client = await gateway_with(gateway, docker_host, lan=True)
    ws = await connect(client)
    await ws.until("hello")
    for _ in range(3):
        await ws.send("subscribe", types=["container.*"])
        error = await ws.next()
        assert error == {"type": "error", "data": {**error["data"], "error": "INTERNAL_ERROR"}}
        assert "a defect" not in json.dumps(error)
    publish(client, 7)
    await ws.until("test.ping", n=7)
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1 and tracebacks[0].levelno == logging.ERROR


async def test_a_defect_outside_a_message_closes_with_1011_not_http(
    gateway: ClientFactory, docker_host: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nekzus.http.routes import ws as ws_route

    def broken(conn: Connection) -> None:
        raise ZeroDivisionError("a defect")

    monkeypatch.setattr(ws_route, "_watch_expiry", broken)
    client = await gateway_with(gateway, docker_host, lan=True)
    ws = await connect(client)
    assert await ws.closed() == 1011
    assert client.app[HUB].connections == set()


async def test_a_defect_in_a_log_stream_ends_it_with_an_error(
    gateway: ClientFactory, docker_host: str
) -> None:
    registry, fake = fake_registry()
    fake.fail["logs"] = KeyError("a defect")
    client = await gateway(make_config(docker_host), runtimes=registry)
    ws = await connect(client)
    await ws.until("hello")
    await ws.send("container.logs.subscribe", containerId=CID)
    error = await ws.until("container.logs.error", containerId=CID)
    assert error["data"]["error"] == "LOG_STREAM_FAILED"
    assert (await ws.until("container.logs.ended", containerId=CID))["data"]["reason"] == "error"
    # A defect before the stream started ends it with the error alone: no "ended" without "started".
    fake.fail["get"] = KeyError("a defect")
    ws.seen.clear()
    await ws.send("container.logs.subscribe", containerId=CID)
    error = await ws.until("container.logs.error", containerId=CID)
    assert error["data"]["error"] == "LOG_STREAM_FAILED"
    await ws.send("subscribe", types=["container.*"])  # its reply comes after anything the stream sent
    await ws.until("subscribed")
    assert [m["type"] for m in ws.seen if m["type"].startswith("container.logs")] == ["container.logs.error"]


async def test_log_stream_limits_and_an_unavailable_runtime(gateway: ClientFactory, docker_host: str) -> None:
    fake = GatedLogs()
    fake.containers.update({c.full_id: c for c in (summary(2), summary(3))})
    client = await gateway(
        make_config(docker_host, websocket={"max_log_streams": 2}), runtimes=registry_of(fake)
    )
    ws = await connect(client)
    await ws.until("hello")
    for n in (1, 2):
        await ws.send("container.logs.subscribe", containerId=summary(n).name)
        await ws.until("container.logs.started", containerId=summary(n).name)
    await ws.send("container.logs.subscribe", containerId=summary(3).name)
    refused = await ws.until("error")
    assert (
        refused["data"]["error"] == "INVALID_MESSAGE"
        and "At most 2 log streams" in refused["data"]["message"]
    )
    # Subscribing again to a stream it follows replaces that stream: still within the limit.
    await ws.send("container.logs.subscribe", containerId=summary(1).name)
    await ws.until("container.logs.ended", containerId=summary(1).name)
    await ws.until("container.logs.started", containerId=summary(1).name)
    # The runtime away: the same sentence as over HTTP.
    for n in (1, 2):
        await ws.send("container.logs.unsubscribe", containerId=summary(n).name)
        await ws.until("container.logs.ended", containerId=summary(n).name)
    fake.fail["get"] = fake.fail["inspect"] = Unavailable("gone")
    over_http = await (await client.get(f"/api/v1/containers/{summary(3).name}")).json()
    await ws.send("container.logs.subscribe", containerId=summary(3).name)
    error = await ws.until("container.logs.error", containerId=summary(3).name)
    assert error["data"]["error"] == over_http["error"] == "RUNTIME_UNAVAILABLE"
    assert error["data"]["message"] == over_http["message"]


# -- bursts --------------------------------------------------------------------------------------


def burst_message(n: int) -> tuple[str, tuple[str, str]]:
    """Message ``n`` of a burst (valid and invalid in turn) and the reply it must get."""
    if n % 3 == 0:
        return json.dumps({"type": f"fly-{n}"}), ("error", f"fly-{n}")
    if n % 3 == 1:
        return json.dumps({"type": "subscribe", "data": {"types": [f"t-{n}"]}}), ("subscribed", f"t-{n}")
    return "[" * 100 + "]" * 100 + f" {n}", ("error", "nested")


def reply_key(message: dict[str, Any]) -> tuple[str, str]:
    data = message["data"]
    if message["type"] == "subscribed":
        return "subscribed", data["types"][0]
    return message["type"], data["message"]


@pytest.mark.parametrize("count", [300, 3000])
async def test_a_burst_from_a_reading_client_gets_every_reply_in_order(
    gateway: ClientFactory, docker_host: str, count: int
) -> None:
    client = await gateway_with(gateway, docker_host, lan=True)
    ws = await connect(client)
    await ws.until("hello")

    async def send_all() -> None:
        for n in range(count):
            await ws.ws.send_str(burst_message(n)[0])

    sender = asyncio.ensure_future(send_all())
    try:
        for n in range(count):
            message = await ws.next(timeout=30)
            kind, text = burst_message(n)[1]
            got_kind, got_text = reply_key(message)
            assert got_kind == kind and (text in got_text), (n, message)
        await sender
    finally:
        sender.cancel()
    assert connection(client).outbox.overflowed is False
    await ws.send("subscribe", types=["*"])
    await ws.until("subscribed")
    publish(client, 1)
    await ws.until("test.ping", n=1)


async def test_a_client_that_sends_and_never_reads_is_read_no_further(
    gateway: ClientFactory, docker_host: str
) -> None:
    room = 16
    client = await gateway_with(gateway, docker_host, lan=True, log_buffer=room)
    ws = await connect(client, max_msg_size=0)
    await ws.until("hello")
    conn = connection(client)
    count = 5000

    def types(n: int) -> list[str]:
        # 64 patterns of 128 characters: each message and each reply ~8.5 KB, 42 MB of each in
        # all, far more than the socket buffers between the two ends can hold.
        return [f"t-{n:05d}-{i:03d}-".ljust(128, "x") for i in range(64)]

    async def send_all() -> None:
        for n in range(count):
            await ws.ws.send_str(json.dumps({"type": "subscribe", "data": {"types": types(n)}}))

    stuck = asyncio.Event()
    most = 0
    put = conn.outbox.put
    protocol = conn.request.protocol

    async def spy(text: str) -> None:
        nonlocal most
        most = max(most, len(conn.outbox))
        if len(conn.outbox) >= room and protocol.writing_paused:
            stuck.set()  # the socket is full and so is the outbox: this reply, and the reader, wait
        await put(text)

    conn.outbox.put = spy  # type: ignore[method-assign]
    sender = asyncio.ensure_future(send_all())
    try:
        async with asyncio.timeout(60):
            await stuck.wait()
        # Nothing moves until the client reads: the server holds ``room`` replies, reads no
        # further, and the client's own sends stall.
        assert len(conn.outbox) == room and not sender.done()
        received = 0
        async with asyncio.timeout(120):
            while received < count:
                message = await ws.next()
                assert message["data"]["types"] == types(received)
                received += 1
        await sender
    finally:
        sender.cancel()
    assert most <= room and conn.outbox.overflowed is False
