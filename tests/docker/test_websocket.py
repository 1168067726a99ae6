"""The WebSocket hub against a real Docker Engine, with real WebSocket clients."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from multidict import CIMultiDict

from nekzus.keys import EVENT_BUS
from nekzus.realtime.hub import HUB
from tests.support.docker_engine import Containers
from tests.support.gateway import LINKED, ClientFactory, data_dir, make_config, watching
from tests.support.wsclient import WS
from tests.unit.test_security import REMOTE_ONLY, SECRET, bearer, token


async def connect(client: TestClient[Any, Any], **kwargs: Any) -> WS:
    return WS(await client.ws_connect("/api/v1/ws", **kwargs))


def lan_and_proxy_config(docker_host: str, **overrides: Any) -> Any:
    return make_config(
        docker_host,
        server={"tls": {"mode": "off"}, "trusted_proxies": ["127.0.0.1/32"], "data_dir": str(data_dir())},
        auth={"jwt_secret": SECRET, "local_networks": ["127.0.0.0/8"]},
        **overrides,
    )


async def test_hello_and_events_reach_lan_and_jwt_clients_alike(
    gateway: ClientFactory, docker_host: str, containers: Containers
) -> None:
    client = await gateway(lan_and_proxy_config(docker_host))
    lan = await connect(client)
    # Through the trusted proxy from a remote address: this one needs (and has) a token.
    remote = await connect(client, headers={"X-Forwarded-For": "203.0.113.7", **bearer(token())})
    for ws in (lan, remote):
        hello = await ws.until("hello")
        assert set(hello["data"]) == {"version", "timestamp"}
    made = await containers.create(labels=LINKED, start=False)
    resp = await client.post(f"/api/v1/containers/{made['Id'][:12]}/start")
    operation_id = (await resp.json())["operationId"]
    for ws in (lan, remote):
        done = await ws.until("container.start.completed", operationId=operation_id)
        assert done["data"]["containerId"] == made["Id"][:12]
        assert done["data"]["status"] == "started"


async def test_first_message_auth(gateway: ClientFactory, docker_host: str) -> None:
    config = make_config(
        docker_host, auth={"jwt_secret": SECRET, **REMOTE_ONLY}, websocket={"auth_timeout": 0.5}
    )
    client = await gateway(config)
    ws = await connect(client)
    await ws.send("auth", token=token(sub="tablet"))
    assert (await ws.next())["type"] == "auth_success"
    assert (await ws.next())["type"] == "hello"

    ws = await connect(client)
    await ws.send("auth", token="not-a-token")
    failed = await ws.next()
    assert failed["type"] == "auth_failed" and failed["data"]["error"] == "UNAUTHORIZED"
    assert await ws.closed() == 4401

    ws = await connect(client)
    await ws.send("auth", token=token(scopes=["write:containers"]))
    assert (await ws.next())["data"]["error"] == "FORBIDDEN"
    assert await ws.closed() == 1008

    ws = await connect(client)  # says nothing
    failed = await ws.next(timeout=5)
    assert failed["type"] == "auth_failed" and "0.5 s" in failed["data"]["message"]
    assert await ws.closed() == 4401

    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await client.ws_connect("/api/v1/ws", headers=bearer("bad.token.here"))
    assert info.value.status == 401
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await client.ws_connect("/api/v1/ws", headers=bearer(token(scopes=["write:*"])))
    assert info.value.status == 403


async def test_cross_origin_upgrade_is_refused(client: TestClient[Any, Any]) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await client.ws_connect("/api/v1/ws", headers={"Origin": "https://evil.example.com"})
    assert info.value.status == 403
    upgrade = {
        "Origin": "https://evil.example.com",
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    }
    refused = await client.get("/api/v1/ws", headers=upgrade)
    assert (await refused.json())["error"] == "ORIGIN_NOT_ALLOWED"
    # The same rule as for state changes: a cross-site fetch without Origin, or two Origins.
    del upgrade["Origin"]
    refused = await client.get("/api/v1/ws", headers={**upgrade, "Sec-Fetch-Site": "cross-site"})
    assert (await refused.json())["error"] == "ORIGIN_NOT_ALLOWED"
    same = f"http://{client.host}:{client.port}"
    twice = CIMultiDict(upgrade)
    twice.add("Origin", same)
    twice.add("Origin", same)
    refused = await client.get("/api/v1/ws", headers=twice)
    assert (await refused.json())["error"] == "ORIGIN_NOT_ALLOWED"
    ws = await connect(client, headers={"Origin": same})
    assert (await ws.next())["type"] == "hello"


async def test_bad_messages_get_errors_and_the_connection_stays(client: TestClient[Any, Any]) -> None:
    ws = await connect(client)
    await ws.until("hello")
    for raw in ("not json", "[1, 2]", '{"data": {}}', '{"type": "fly"}', '{"type": "subscribe", "data": 5}'):
        await ws.ws.send_str(raw)
        error = await ws.until("error")
        assert error["data"]["error"] == "INVALID_MESSAGE" and error["data"]["message"]
    await ws.ws.send_bytes(b"\x00\x01")
    assert (await ws.until("error"))["data"]["error"] == "INVALID_MESSAGE"
    await ws.send("subscribe", types=[])
    assert (await ws.until("error"))["data"]["error"] == "INVALID_MESSAGE"
    await ws.send("container.logs.subscribe", containerId="../etc", tail=5)
    assert (await ws.until("error"))["data"]["error"] == "INVALID_MESSAGE"
    await ws.send("container.logs.unsubscribe", containerId="never-subscribed")
    assert (await ws.until("error"))["data"]["error"] == "INVALID_MESSAGE"
    await ws.send("subscribe", types=["container.*"])
    assert (await ws.until("subscribed"))["data"]["types"] == ["container.*"]


async def test_oversized_client_message_closes_with_1009(client: TestClient[Any, Any]) -> None:
    ws = await connect(client)
    await ws.until("hello")
    await ws.ws.send_str('{"type": "subscribe", "data": {"types": ["' + "x" * 70_000 + '"]}}')
    assert await ws.closed() == 1009


async def test_subscription_filters_types(client: TestClient[Any, Any], containers: Containers) -> None:
    made = await containers.create(labels={"nekzus.http.app.id": "grafana"}, start=False)
    ws = await connect(client)
    await ws.until("hello")
    await ws.send("subscribe", types=["container.state", "health_change"])
    await ws.until("subscribed")
    await client.post(f"/api/v1/containers/{made['Id'][:12]}/start")
    await ws.until("container.state", containerId=made["Id"][:12], state="running")
    await client.post(f"/api/v1/containers/{made['Id'][:12]}/stop?timeout=1")
    await ws.until("health_change", appId="grafana", status="unhealthy")
    assert {m["type"] for m in ws.seen} <= {"hello", "subscribed", "container.state", "health_change"}


async def test_state_and_health_from_changes_made_outside_the_gateway(
    client: TestClient[Any, Any], containers: Containers
) -> None:
    await watching(client)
    made = await containers.create(labels={"nekzus.http.app.id": "grafana"})
    cid = made["Id"][:12]
    ws = await connect(client)
    await ws.until("hello")
    await containers.docker.containers.container(made["Id"]).stop(t=1)
    state = await ws.until("container.state", containerId=cid, state="exited")
    assert state["data"] == {
        "containerId": cid,
        "name": made["Name"].lstrip("/"),
        "runtime": "docker",
        "namespace": "",
        "state": "exited",
        "previousState": "running",
        "exitCode": 0,  # the runtime told it
        "timestamp": state["data"]["timestamp"],
        "seq": state["data"]["seq"],
        "epoch": client.app[HUB].replay.epoch,
    }
    health = await ws.until("health_change", appId="grafana")
    assert health["data"]["status"] == "unhealthy" and health["data"]["appName"] == "Grafana"
    assert health["data"]["message"]
    await containers.docker.containers.container(made["Id"]).start()
    await ws.until("container.state", containerId=cid, state="running", previousState="exited")
    assert (await ws.until("health_change", appId="grafana"))["data"]["status"] == "healthy"


async def test_healthcheck_status_counts(client: TestClient[Any, Any], containers: Containers) -> None:
    await watching(client)
    ws = await connect(client)
    await ws.until("hello")
    made = await containers.docker.containers.create(
        {
            "Image": "nekzus-test:busybox",
            "Cmd": ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 0.1; done"],
            "Labels": {"nekzus.http.app.id": "prometheus", "nekzus.test.run": containers.run_id},
            "Healthcheck": {
                "Test": ["CMD", "test", "-f", "/tmp/ok"],
                "Interval": 200_000_000,
                "Retries": 1,
                # Failures while starting do not count: "starting" until the first success.
                "StartPeriod": 30_000_000_000,
            },
            "HostConfig": {"NetworkMode": "none"},
        }
    )
    containers.created.append(made.id)
    await made.start()
    # Running, but not healthy until the check passes; then healthy; then unhealthy when it fails.
    await ws.until("container.state", containerId=made.id[:12], state="running")
    exec_ = await made.exec(["touch", "/tmp/ok"])
    await exec_.start(detach=True)
    assert (await ws.until("health_change", appId="prometheus"))["data"]["status"] == "healthy"
    exec_ = await made.exec(["rm", "/tmp/ok"])
    await exec_.start(detach=True)
    unhealthy = await ws.until("health_change", appId="prometheus")
    assert unhealthy["data"]["status"] == "unhealthy"
    assert "healthcheck" in unhealthy["data"]["message"]
    changes = [(m["data"]["appId"], m["data"]["status"]) for m in ws.seen if m["type"] == "health_change"]
    assert [s for a, s in changes if a == "prometheus"] == ["healthy", "unhealthy"], changes


async def logs_of(ws: WS, cid: str, *, timeout: float = 30) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Every container.logs message of ``cid`` until its container.logs.ended."""
    lines = []
    async with asyncio.timeout(timeout):
        while True:
            message = await ws.next(timeout)
            data = message["data"]
            if data.get("containerId") != cid:
                continue
            if message["type"] == "container.logs":
                lines.append(data)
            elif message["type"] == "container.logs.ended":
                return lines, data


async def test_several_log_streams_on_one_connection(
    client: TestClient[Any, Any], containers: Containers
) -> None:
    plain = await containers.create(cmd=["sh", "-c", "echo one; echo two >&2; echo three"])
    tty = await containers.create(cmd=["sh", "-c", "echo tty-a; echo tty-b >&2"], tty=True)
    for made in (plain, tty):
        await containers.docker.containers.container(made["Id"]).wait()
    ws = await connect(client)
    await ws.until("hello")
    await ws.send("container.logs.subscribe", containerId=plain["Id"][:12], follow=False)
    await ws.send("container.logs.subscribe", containerId=tty["Name"].lstrip("/"), follow=False)
    # The two streams interleave on the connection; each ends on its own.
    streams: dict[str, list[dict[str, Any]]] = {plain["Id"][:12]: [], tty["Name"].lstrip("/"): []}
    ends: dict[str, dict[str, Any]] = {}
    async with asyncio.timeout(30):
        while len(ends) < 2:
            message = await ws.next()
            cid = message["data"].get("containerId")
            if message["type"] == "container.logs":
                streams[cid].append(message["data"])
            elif message["type"] == "container.logs.ended":
                ends[cid] = message["data"]
    plain_lines, tty_lines = streams[plain["Id"][:12]], streams[tty["Name"].lstrip("/")]
    plain_end, tty_end = ends[plain["Id"][:12]], ends[tty["Name"].lstrip("/")]
    assert [d["message"] for d in plain_lines if d["stream"] == "stdout"] == ["one", "three"]
    assert [d["message"] for d in plain_lines if d["stream"] == "stderr"] == ["two"]
    assert [(d["stream"], d["message"]) for d in tty_lines] == [("stdout", "tty-a"), ("stdout", "tty-b")]
    assert plain_end["reason"] == tty_end["reason"] == "stopped"
    assert all(isinstance(d["timestamp"], int) for d in plain_lines + tty_lines)
    started = [m for m in ws.seen if m["type"] == "container.logs.started"]
    assert len(started) == 2


async def test_lines_split_across_frames_and_a_final_partial_line(
    client: TestClient[Any, Any], containers: Containers
) -> None:
    made = await containers.create(
        cmd=[
            "sh",
            "-c",
            "printf 'abc'; sleep 0.3; printf 'def\\nsecond'; sleep 0.3; printf ' line\\nno newline'",
        ]
    )
    ws = await connect(client)
    await ws.until("hello")
    await ws.send("container.logs.subscribe", containerId=made["Id"][:12], tail=0)
    lines, end = await logs_of(ws, made["Id"][:12])
    assert [d["message"] for d in lines] == ["abcdef", "second line", "no newline"]
    assert end["reason"] == "container_stopped"


async def test_follow_timestamps_unsubscribe_and_unknown_container(
    client: TestClient[Any, Any], containers: Containers
) -> None:
    made = await containers.create(
        cmd=["sh", "-c", "echo first; trap 'exit 0' TERM; while :; do sleep 0.1; done"]
    )
    ws = await connect(client)
    await ws.until("hello")
    await ws.send("container.logs.subscribe", containerId=made["Id"][:12], timestamps=True)
    await ws.until("container.logs.started", containerId=made["Id"][:12])
    line = await ws.until("container.logs", containerId=made["Id"][:12])
    stamp, _, text = line["data"]["message"].partition(" ")
    assert text == "first"
    assert stamp[:4].isdigit() and stamp[10] == "T" and stamp.endswith("Z")
    await ws.send("container.logs.unsubscribe", containerId=made["Id"][:12])
    ended = await ws.until("container.logs.ended", containerId=made["Id"][:12])
    assert ended["data"]["reason"] == "stopped"

    await ws.send("container.logs.subscribe", containerId="nekzus-no-such-container")
    error = await ws.until("container.logs.error", containerId="nekzus-no-such-container")
    assert error["data"]["error"] == "CONTAINER_NOT_FOUND" and error["data"]["message"]
    await ws.send("container.logs.subscribe", containerId=made["Id"][:12], runtime="podman")
    assert (await ws.until("container.logs.error"))["data"]["error"] == "INVALID_RUNTIME"
    # A namespace names a pod: with another runtime it is a contradiction, as over REST.
    await ws.send(
        "container.logs.subscribe", containerId=made["Id"][:12], namespace="default", runtime="docker"
    )
    contradiction = await ws.until("container.logs.error")
    assert contradiction["data"]["error"] == "INVALID_RUNTIME"
    assert "namespace" in contradiction["data"]["message"]


async def test_resume_with_since_has_no_duplicates(
    client: TestClient[Any, Any], containers: Containers
) -> None:
    made = await containers.create(cmd=["sh", "-c", "for i in 1 2 3 4 5; do echo n$i; sleep 0.05; done"])
    await containers.docker.containers.container(made["Id"]).wait()
    ws = await connect(client)
    await ws.until("hello")
    cid = made["Id"][:12]
    await ws.send("container.logs.subscribe", containerId=cid, timestamps=True, follow=False)
    lines, _ = await logs_of(ws, cid)
    assert [d["message"].split(" ", 1)[1] for d in lines] == ["n1", "n2", "n3", "n4", "n5"]
    last_seen = lines[2]["message"].split(" ", 1)[0]
    await ws.send("container.logs.subscribe", containerId=cid, since=last_seen, follow=False)
    resumed, _ = await logs_of(ws, cid)
    assert [d["message"] for d in resumed] == ["n4", "n5"]
    await ws.send("container.logs.subscribe", containerId=cid, since=0, follow=False, tail=1)
    everything, _ = await logs_of(ws, cid)
    assert len(everything) == 5


async def exited_container(containers: Containers, cmd: list[str]) -> str:
    """The short id of a container that has run ``cmd`` to its end."""
    made = await containers.create(cmd=cmd)
    await containers.docker.containers.container(made["Id"]).wait()
    return str(made["Id"][:12])


async def read_sequence(ws: WS, *, timeout: float) -> tuple[int, dict[str, Any]]:
    """Read container.logs lines that must be "1", "2", … in order, until container.logs.ended."""
    expected = 1
    async with asyncio.timeout(timeout):
        while True:
            message = (await ws.ws.receive()).json()
            if message["type"] == "container.logs":
                assert message["data"]["message"] == str(expected)
                expected += 1
            elif message["type"] == "container.logs.ended":
                return expected - 1, message["data"]


async def test_a_million_lines_arrive_complete_and_in_order(
    client: TestClient[Any, Any], containers: Containers
) -> None:
    cid = await exited_container(containers, ["seq", "1", "1000000"])
    ws = await connect(client, max_msg_size=0)
    await ws.until("hello")
    await ws.send("container.logs.subscribe", containerId=cid, since=0, follow=True)
    count, end = await read_sequence(ws, timeout=150)
    assert count == 1_000_000
    assert end["reason"] == "container_stopped"


async def test_slow_reader_loses_nothing_and_does_not_delay_others(
    gateway: ClientFactory, docker_host: str, containers: Containers
) -> None:
    client = await gateway(make_config(docker_host, websocket={"log_buffer": 64}))
    cid = await exited_container(containers, ["seq", "1", "200000"])
    slow = await connect(client, max_msg_size=0)
    fast = await connect(client)
    await slow.until("hello")
    await fast.until("hello")
    await slow.send("container.logs.subscribe", containerId=cid, since=0, follow=False)
    await slow.until("container.logs.started")
    bus = client.app[EVENT_BUS]
    delays = []
    # The slow reader reads nothing meanwhile: its stream must wait, not drop, and not hold others up.
    for n in range(20):
        sent = time.perf_counter()
        bus.publish("test.ping", {"n": n})
        await fast.until("test.ping", n=n)
        delays.append(time.perf_counter() - sent)
    assert max(delays) < 0.1, delays
    count, _ = await read_sequence(slow, timeout=120)
    assert count == 200_000


async def test_a_client_that_never_reads_is_closed(gateway: ClientFactory, docker_host: str) -> None:
    client = await gateway(make_config(docker_host, websocket={"event_queue": 8}))
    stuck = await connect(client)
    reader = await connect(client)
    await reader.until("hello")
    hub = client.app[HUB]
    bus = client.app[EVENT_BUS]
    payload = "x" * 60_000
    async with asyncio.timeout(30):
        n = 0
        while len(hub.connections) == 2:
            bus.publish("test.bulk", {"n": n, "payload": payload})
            n += 1
            await reader.until("test.bulk", n=n - 1)
    assert len(hub.connections) == 1
    assert await stuck.closed() in (1013, 1006, None)


async def test_heartbeat_closes_a_silent_client(gateway: ClientFactory, docker_host: str) -> None:
    client = await gateway(make_config(docker_host, websocket={"heartbeat": 0.3}))
    ws = await connect(client, autoping=False)
    assert await ws.closed(timeout=10) is not None
    assert ws.ws.closed


async def test_upgrades_are_rate_limited(gateway: ClientFactory, docker_host: str) -> None:
    client = await gateway(make_config(docker_host, ratelimit={"websocket": {"per_minute": 30, "burst": 3}}))
    for _ in range(3):
        ws = await client.ws_connect("/api/v1/ws")
        await ws.close()
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await client.ws_connect("/api/v1/ws")
    assert info.value.status == 429


async def test_shutdown_closes_connections_with_1001(gateway: ClientFactory, docker_host: str) -> None:
    client = await gateway(make_config(docker_host))
    ws = await connect(client)
    await ws.until("hello")
    await ws.send("container.logs.subscribe", containerId="nekzus-no-such-container")
    await ws.until("container.logs.error")
    closing = asyncio.ensure_future(ws.closed())
    await client.server.close()
    assert await closing == 1001


async def test_opt_in_batches_carry_every_line_in_order(
    client: TestClient[Any, Any], containers: Containers
) -> None:
    cid = await exited_container(containers, ["sh", "-c", "seq 1 5000; echo err >&2"])
    ws = await connect(client, max_msg_size=0)
    await ws.until("hello")
    await ws.send("container.logs.subscribe", containerId=cid, since=0, follow=False, batch=True)
    lines: dict[str, list[str]] = {"stdout": [], "stderr": []}
    batches = 0
    async with asyncio.timeout(30):
        while (message := await ws.next())["type"] != "container.logs.ended":
            if message["type"] == "container.logs.batch":
                batches += 1
                assert message["data"]["containerId"] == cid and isinstance(message["data"]["timestamp"], int)
                lines[message["data"]["stream"]].extend(message["data"]["lines"])
            assert message["type"] != "container.logs"
    assert lines == {"stdout": [str(n) for n in range(1, 5001)], "stderr": ["err"]}
    assert batches < 5001 / 10  # many lines per message


async def test_reauthentication_on_an_open_connection(gateway: ClientFactory, docker_host: str) -> None:
    config = make_config(docker_host, auth={"jwt_secret": SECRET, "local_networks": ["127.0.0.0/8"]})
    client = await gateway(config)
    ws = await connect(client)
    await ws.until("hello")
    await ws.send("auth", token=token(sub="phone", scopes=["write:containers"]))
    assert (await ws.until("auth_failed"))["data"]["error"] == "FORBIDDEN"
    await ws.send("auth", token="garbage")
    assert (await ws.until("auth_failed"))["data"]["error"] == "UNAUTHORIZED"
    await ws.send("auth", token=token(sub="phone"))
    assert (await ws.until("auth_success"))["data"]["subject"] == "phone"
    # Still open and still receiving events.
    client.app[EVENT_BUS].publish("test.ping", {"n": 1})
    assert (await ws.until("test.ping"))["data"]["n"] == 1


async def test_events_stay_in_order_whether_written_at_once_or_queued(
    gateway: ClientFactory, docker_host: str
) -> None:
    client = await gateway(make_config(docker_host, websocket={"event_queue": 10_000}))
    ws = await connect(client)
    await ws.until("hello")
    bus = client.app[EVENT_BUS]
    padding = "p" * 5000  # 15 MB in all: far more than the socket buffers hold
    # Published without a pause: the first frames go straight to the socket, the rest queue up
    # once the socket's buffer is full. The client must see them all, in order.
    for n in range(3000):
        bus.publish("test.seq", {"n": n, "padding": padding})
    received = [(await ws.until("test.seq"))["data"]["n"] for _ in range(3000)]
    assert received == list(range(3000))
