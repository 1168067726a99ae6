"""Resuming the event stream after a disconnect, on the real Engine with real WebSocket clients:
exactly the missed events, a resync when the buffer has overflowed, a new epoch after a restart."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp.test_utils import TestClient

from nekzus.keys import EVENT_BUS
from nekzus.realtime.hub import HUB
from tests.docker.test_websocket import connect
from tests.support.docker_engine import Containers
from tests.support.gateway import LINKED, ClientFactory, Heard, make_config, state_heard, watching
from tests.support.wsclient import WS
from tests.unit.test_replay import events_until, is_event, last_seen


async def read_through(ws: WS, seq: int, timeout: float = 30) -> list[dict[str, Any]]:
    """Every event ``ws`` has received (in ``seen`` too) once it has received the one numbered ``seq``."""
    async with asyncio.timeout(timeout):
        while not any(is_event(m) and m["data"]["seq"] >= seq for m in ws.seen):
            await ws.next(timeout)
    return [m for m in ws.seen if is_event(m)]


async def miss_changes(
    client: TestClient[Any, Any], containers: Containers, witness: WS, made: list[dict[str, Any]]
) -> dict[str, str]:
    """Restart the first three containers through the gateway and stop the fourth by hand; answers
    the operation ids by container, once the witness has heard every outcome."""
    operations: dict[str, str] = {}
    for container in made[:3]:
        resp = await client.post(f"/api/v1/containers/{container['Id'][:12]}/restart")
        assert resp.status == 202
        operations[container["Id"][:12]] = (await resp.json())["operationId"]
    await containers.docker.containers.container(made[3]["Id"]).stop(t=1)
    awaited = {("container.restart.completed", op) for op in operations.values()}
    awaited.add(("container.state", made[3]["Id"][:12]))
    async with asyncio.timeout(30):
        while awaited:
            data = (message := await witness.next())["data"]
            if message["type"] == "container.state" and data.get("state") != "exited":
                continue
            awaited.discard((message["type"], data.get("operationId") or data.get("containerId")))
    return operations


async def test_a_client_back_from_a_disconnect_gets_exactly_the_missed_events_in_order(
    client: TestClient[Any, Any], containers: Containers
) -> None:
    await watching(client)
    made = [await containers.create(labels=LINKED) for _ in range(4)]
    ours = {m["Id"][:12] for m in made}
    witness = await connect(client)  # stays connected: what the phone would have received
    await witness.until("hello")
    phone = await connect(client)
    await phone.until("hello")
    epoch, seq = await last_seen(client, phone)
    await phone.ws.close()

    operations = await miss_changes(client, containers, witness, made)

    phone = await connect(client)
    await phone.until("hello")
    await phone.send("resume", epoch=epoch, seq=seq)
    replayed, resumed = await events_until(phone, "resumed")
    last = resumed["data"]["seq"]
    assert resumed["data"]["epoch"] == epoch and resumed["data"]["replayed"] == len(replayed)
    # Every event of the gateway since the phone left, other tests' included, each once, in order.
    assert [m["data"]["seq"] for m in replayed] == list(range(seq + 1, last + 1))
    heard = [m for m in await read_through(witness, last) if seq < m["data"]["seq"] <= last]
    assert replayed == heard
    mine = [(m["type"], m["data"]["containerId"]) for m in replayed if m["data"].get("containerId") in ours]
    for cid, operation_id in operations.items():
        done = [
            m
            for m in replayed
            if m["type"] == "container.restart.completed" and m["data"]["operationId"] == operation_id
        ]
        assert len(done) == 1 and done[0]["data"]["containerId"] == cid
    stopped = made[3]["Id"][:12]
    assert ("container.state", stopped) in mine
    assert [t for t, c in mine if c == stopped and t.endswith(".completed")] == []

    # Then live, numbered on from the replay.
    await containers.docker.containers.container(made[3]["Id"]).start()
    live = await phone.until("container.state", containerId=stopped, state="running")
    assert live["data"]["seq"] > last and live["data"]["epoch"] == epoch


async def test_a_client_behind_an_overflowed_buffer_gets_a_resync(
    gateway: ClientFactory, docker_host: str, containers: Containers
) -> None:
    client = await gateway(make_config(docker_host, websocket={"replay_events": 3}))
    await watching(client)
    made = [await containers.create(labels=LINKED) for _ in range(4)]
    witness = await connect(client)
    await witness.until("hello")
    phone = await connect(client)
    await phone.until("hello")
    epoch, seq = await last_seen(client, phone)
    await phone.ws.close()

    operations = await miss_changes(client, containers, witness, made)

    phone = WS(await client.ws_connect(f"/api/v1/ws?epoch={epoch}&seq={seq}"))
    await phone.until("hello")
    resync = await phone.until("resync")
    data = resync["data"]
    assert data["epoch"] == epoch and data["seq"] > seq + 3
    states = {c["id"]: c["state"] for c in data["containers"]}
    assert states[made[3]["Id"][:12]] == "exited"
    # A restarted one may show a step of its restart still arriving from the Engine's events.
    assert all(m["Id"][:12] in states for m in made[:3])
    assert not {op["operationId"] for op in data["operations"]} & set(operations.values())
    # After the snapshot, the stream goes on from its seq with nothing skipped.
    client.app[EVENT_BUS].publish("test.after", {})
    newest = client.app[HUB].replay.seq
    after = [m["data"]["seq"] for m in await read_through(phone, newest)]
    assert after == list(range(data["seq"] + 1, newest + 1))


async def test_a_restarted_gateway_has_a_new_epoch(
    gateway: ClientFactory, docker_host: str, containers: Containers
) -> None:
    config = make_config(docker_host)
    first = await gateway(config)
    ws = await connect(first)
    await ws.until("hello")
    epoch, seq = await last_seen(first, ws)
    await first.close()

    second = await gateway(config)
    await watching(second)
    heard = Heard(second.app[EVENT_BUS])
    made = await containers.create(labels=LINKED)
    await state_heard(heard, made["Id"], "running")  # the state model has it
    heard.close()
    ws = WS(await second.ws_connect(f"/api/v1/ws?epoch={epoch}&seq={seq}"))
    await ws.until("hello")
    resync = (await ws.until("resync"))["data"]
    assert resync["epoch"] != epoch
    assert made["Id"][:12] in {c["id"] for c in resync["containers"]}
    resp = await second.get(f"/api/v1/events?epoch={epoch}&after={seq}")
    assert resp.status == 410
    body = await resp.json()
    assert body["error"] == "EVENTS_EXPIRED" and body["epoch"] == resync["epoch"]


async def test_the_seam_holds_under_a_burst_of_real_events(
    client: TestClient[Any, Any], containers: Containers
) -> None:
    # The client resumes while the Engine is busy: ten containers restart at once through the
    # gateway (each a completion and state changes), so events are published while the missed
    # ones are replayed. Across the replay and the live stream every seq comes once, in order.
    await watching(client)
    made = [await containers.create(labels=LINKED) for _ in range(10)]
    phone = await connect(client)
    await phone.until("hello")
    epoch, seq = await last_seen(client, phone)
    await phone.ws.close()
    first = await asyncio.gather(*(client.post(f"/api/v1/containers/{m['Id'][:12]}/restart") for m in made))
    missed = [(await r.json())["operationId"] for r in first]

    phone = WS(await client.ws_connect(f"/api/v1/ws?epoch={epoch}&seq={seq}"))
    second = await asyncio.gather(*(client.post(f"/api/v1/containers/{m['Id'][:12]}/restart") for m in made))
    live = [(await r.json())["operationId"] for r in second]
    waiting = set(missed + live)
    async with asyncio.timeout(90):
        while waiting:
            message = await phone.next()
            if message["type"] == "container.restart.completed":
                waiting.discard(message["data"]["operationId"])
    seqs = [m["data"]["seq"] for m in phone.seen if is_event(m)]
    assert seqs == list(range(seq + 1, seq + 1 + len(seqs)))  # no gap, no duplicate
    assert any(m["type"] == "resumed" for m in phone.seen)
