"""Live stats over the WebSocket and the stats history, against the real Docker Engine."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from nekzus.keys import EVENT_BUS
from nekzus.realtime.hub import HUB, Connection
from nekzus.realtime.statsfeed import STATS_FEED, StatsFeed
from nekzus.realtime.statshistory import STATS_HISTORY
from tests.support.docker_engine import Containers
from tests.support.gateway import LINKED, ClientFactory, make_config
from tests.support.unix_proxy import KillableEngine
from tests.support.wsclient import WS
from tests.unit.test_security import REMOTE_ONLY, SECRET, bearer, token

NO_HISTORY = {"history_minutes": 0}
STATS_FIELDS = {"containerId", "cpu", "memory", "network", "timestamp"}


async def connect(client: TestClient[Any, Any], **kwargs: Any) -> WS:
    ws = WS(await client.ws_connect("/api/v1/ws", **kwargs))
    await ws.until("hello")
    return ws


async def until(condition: Callable[[], bool], timeout: float = 20) -> None:
    """Poll ``condition`` until it holds, failing after ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110 - nothing announces a task's end to wait on
            await asyncio.sleep(0.02)


async def running(containers: Containers, **kwargs: Any) -> str:
    made = await containers.create(**kwargs)
    return str(made["Id"][:12])


def sampler_of(feed: StatsFeed, cid: str) -> Any:
    found = [s for s in feed.samplers.values() if s.target.container_id == cid]
    return found[0] if found else None


async def samples(ws: WS, cid: str, count: int) -> list[float]:
    """Arrival times of the next ``count`` samples of ``cid``."""
    times: list[float] = []
    while len(times) < count:
        message = await ws.until("container.stats", containerId=cid, timeout=20)
        assert set(message["data"]) == STATS_FIELDS
        times.append(time.monotonic())
    return times


async def test_two_clients_share_one_sampler_each_at_its_interval(
    gateway: ClientFactory, docker_host: str, containers: Containers
) -> None:
    client = await gateway(make_config(docker_host, stats=NO_HISTORY))
    feed = client.app[STATS_FEED]
    cid = await running(containers)
    fast, slow = await connect(client), await connect(client)
    await fast.send("container.stats.subscribe", containerIds=[cid], interval=1)
    await slow.send("container.stats.subscribe", containerIds=[cid], interval=2.5)
    for ws, interval in ((fast, 1), (slow, 2.5)):
        reply = await ws.until("container.stats.subscribed")
        assert reply["data"] == {
            "containerIds": [cid],
            "linked": False,
            "interval": interval,
            "timestamp": reply["data"]["timestamp"],
        }
    assert len(feed.samplers) == 1
    assert len(sampler_of(feed, cid).listeners) == 2
    fast_times, slow_times = await asyncio.gather(samples(fast, cid, 6), samples(slow, cid, 3))
    fast_gaps = [b - a for a, b in itertools.pairwise(fast_times)]
    slow_gaps = [b - a for a, b in itertools.pairwise(slow_times)]
    # Samples come from the Engine's once-a-second collector; the busy host may delay one.
    assert 0.5 < sum(fast_gaps) / len(fast_gaps) < 1.6, fast_gaps
    assert min(slow_gaps) > 1.5 and sum(slow_gaps) / len(slow_gaps) < 4.0, slow_gaps
    assert len(feed.samplers) == 1


async def test_the_last_to_leave_ends_the_engine_stream(
    gateway: ClientFactory, docker_host: str, containers: Containers
) -> None:
    client = await gateway(make_config(docker_host, stats=NO_HISTORY))
    feed = client.app[STATS_FEED]
    idle_tasks = feed.tasks  # the follower of linked containers only
    cid = await running(containers)
    first, second = await connect(client), await connect(client)
    for ws in (first, second):
        await ws.send("container.stats.subscribe", containerIds=[cid])
        await ws.until("container.stats.subscribed")
    await first.until("container.stats", containerId=cid)
    task = sampler_of(feed, cid).task
    await first.send("container.stats.unsubscribe", containerIds=[cid])
    assert (await first.until("container.stats.unsubscribed"))["data"]["containerIds"] == [cid]
    assert not task.done() and sampler_of(feed, cid) is not None  # the second still listens
    # A connection that goes away leaves too: the sampler and its Engine request end.
    await second.ws.close()
    await until(lambda: task.done() and not feed.samplers and feed.tasks == idle_tasks)
    await first.send("container.stats.unsubscribe")
    assert (await first.until("container.stats.unsubscribed"))["data"]["containerIds"] == []
    await first.send("container.stats.unsubscribe")
    assert (await first.until("error"))["data"]["error"] == "INVALID_MESSAGE"


async def test_a_container_that_stops_ends_its_stream_with_a_notice(
    gateway: ClientFactory, docker_host: str, containers: Containers
) -> None:
    client = await gateway(make_config(docker_host, stats=NO_HISTORY))
    feed = client.app[STATS_FEED]
    cid = await running(containers)
    ws = await connect(client)
    await ws.send("container.stats.subscribe", containerIds=[cid])
    await ws.until("container.stats", containerId=cid)
    await containers.docker.containers.container(cid).stop(t=1)
    ended = await ws.until("container.stats.ended", containerId=cid)
    assert ended["data"]["reason"] == "stopped" and ended["data"]["runtime"] == "docker"
    await until(lambda: not feed.samplers)


async def test_a_daemon_that_dies_ends_the_stream_with_its_error(
    gateway: ClientFactory, docker_host: str, containers: Containers, tmp_path: Path
) -> None:
    # The Engine's stats stream breaks under the sampler: the client is told why, once, and the
    # sampler is gone (the gateway fixture also checks that no task is left).
    cid = await running(containers)
    async with KillableEngine(docker_host.removeprefix("unix://"), tmp_path / "engine.sock") as engine:
        client = await gateway(make_config(engine.host, stats=NO_HISTORY))
        feed = client.app[STATS_FEED]
        ws = await connect(client)
        await ws.send("container.stats.subscribe", containerIds=[cid])
        await ws.until("container.stats", containerId=cid)
        await engine.kill()
        ended = await ws.until("container.stats.ended", containerId=cid)
        assert (ended["data"]["reason"], ended["data"]["error"]) == ("failed", "RUNTIME_UNAVAILABLE")
        await until(lambda: not feed.samplers)


async def test_linked_follows_containers_as_they_start(
    gateway: ClientFactory, docker_host: str, containers: Containers
) -> None:
    client = await gateway(make_config(docker_host, stats=NO_HISTORY))
    unlinked = await running(containers)
    ws = await connect(client)
    await ws.send("container.stats.subscribe", linked=True, interval=1)
    reply = await ws.until("container.stats.subscribed")
    assert reply["data"]["linked"] is True and unlinked not in reply["data"]["containerIds"]
    cid = await running(containers, labels=LINKED)
    await ws.until("container.stats", containerId=cid)
    await ws.send("container.stats.unsubscribe", containerIds=[cid])
    assert (await ws.until("error"))["data"]["error"] == "INVALID_MESSAGE"  # a linked one ends whole
    assert not any(
        m["data"].get("containerId") == unlinked for m in ws.seen if m["type"] == "container.stats"
    )


def queued_stats(conn: Connection) -> int:
    return sum(text.startswith('{"type":"container.stats"') for text, _ in conn.outbox._items)


def connection_of(client: TestClient[Any, Any], known: set[Connection]) -> Connection:
    (conn,) = client.app[HUB].connections - known
    found: Connection = conn
    return found


async def test_a_client_that_never_reads_does_not_hold_up_the_others_or_grow(
    gateway: ClientFactory, docker_host: str, containers: Containers
) -> None:
    client = await gateway(make_config(docker_host, stats=NO_HISTORY, websocket={"event_queue": 100_000}))
    feed = client.app[STATS_FEED]
    ids = [await running(containers) for _ in range(3)]
    stuck = await connect(client, max_msg_size=0)
    stuck_conn = connection_of(client, set())
    reader = await connect(client)
    # The reader takes no broadcast events: only its stats, sent to it directly.
    await reader.send("subscribe", types=["nothing.*"])
    await reader.until("subscribed")
    await stuck.send("container.stats.subscribe", containerIds=ids, interval=1)
    await stuck.until("container.stats.subscribed")
    # Fill the stuck client's socket with events it never reads: its stats back up, then drop.
    payload = "x" * 256_000
    bus = client.app[EVENT_BUS]
    for n in range(80):
        bus.publish("test.bulk", {"n": n, "payload": payload})
    watch = feed.watch_of(stuck_conn)
    assert watch is not None
    await until(lambda: watch.dropped > 0)
    assert queued_stats(stuck_conn) <= feed.backlog
    dropped = watch.dropped
    await reader.send("container.stats.subscribe", containerIds=ids, interval=1)
    await reader.until("container.stats.subscribed")
    times = await samples(reader, ids[0], 4)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert max(gaps) < 2.5, gaps
    # The stuck client's samples were dropped, not queued. (Its outbox also takes the Engine's
    # container events, from other tests too: only the stats in it are bounded here.)
    assert watch.dropped >= dropped + 6
    assert queued_stats(stuck_conn) <= feed.backlog
    assert len(feed.samplers) == 3


async def test_bad_messages_are_refused_and_change_nothing(
    gateway: ClientFactory, docker_host: str, containers: Containers
) -> None:
    client = await gateway(make_config(docker_host, stats=NO_HISTORY))
    feed = client.app[STATS_FEED]
    cid = await running(containers)
    stopped = (await containers.create(start=False))["Id"][:12]
    ws = await connect(client)
    bad: list[dict[str, Any]] = [
        {},
        {"containerIds": [cid], "linked": True},
        {"linked": False},
        {"linked": "yes"},
        {"containerIds": []},
        {"containerIds": cid},
        {"containerIds": [cid] * 101},
        {"containerIds": [1]},
        {"containerIds": ["../etc"]},
        {"containerIds": [cid], "interval": 0},
        {"containerIds": [cid], "interval": 61},
        {"containerIds": [cid], "interval": 1e308},
        {"containerIds": [cid], "interval": "1"},
        {"containerIds": [cid], "interval": True},
        {"containerIds": [cid], "interval": None},
        {"containerIds": [cid], "extra": 1},
        {"containerIds": [cid], "namespace": 5},
    ]
    for data in bad:
        await ws.send("container.stats.subscribe", **data)
        error = await ws.until("error")
        assert error["data"]["error"] == "INVALID_MESSAGE", data
        assert "container.stats.subscribe" in error["data"]["message"]
    # NaN and Infinity are not JSON; deep nesting is refused before it is read.
    head = '{"type":"container.stats.subscribe","data":{"containerIds":'
    for raw in (head + '["a"],"interval":NaN}}', head + "[" * 5000 + "]" * 5000 + "}}"):
        await ws.ws.send_str(raw)
        assert (await ws.until("error"))["data"]["error"] == "INVALID_MESSAGE"
    await ws.send("container.stats.unsubscribe", containerIds="x")
    assert (await ws.until("error"))["data"]["error"] == "INVALID_MESSAGE"
    await ws.send("container.stats.subscribe", containerIds=["nekzus-missing-0", stopped, cid])
    assert (await ws.until("container.stats.subscribed"))["data"]["containerIds"] == [cid]
    # Each refused container has its own error, before the answer to the message.
    errors = {
        m["data"]["containerId"]: m["data"]["error"] for m in ws.seen if m["type"] == "container.stats.error"
    }
    assert errors == {"nekzus-missing-0": "CONTAINER_NOT_FOUND", stopped: "CONTAINER_NOT_RUNNING"}
    await ws.send("container.stats.subscribe", containerIds=[cid], runtime="nope")
    assert (await ws.until("container.stats.error"))["data"]["error"] == "INVALID_RUNTIME"
    assert len(feed.samplers) == 1  # the refused ones changed nothing
    await ws.send("container.stats.unsubscribe")
    await ws.until("container.stats.unsubscribed")
    await until(lambda: not feed.samplers)


async def test_history_fills_and_is_bounded(
    gateway: ClientFactory, docker_host: str, containers: Containers
) -> None:
    client = await gateway(make_config(docker_host, stats={"history_minutes": 1, "history_resolution": 1}))
    history = client.app[STATS_HISTORY]
    assert history.size == 60
    cid = await running(containers, labels=LINKED)
    unlinked = await running(containers)
    url = f"/api/v1/containers/{cid}/stats/history"

    async def kept() -> list[dict[str, Any]]:
        resp = await client.get(url)
        assert resp.status == 200
        body = await resp.json()
        assert body["containerId"] == cid and body["resolution"] == 1
        return list(body["samples"])

    async with asyncio.timeout(30):
        while len(found := await kept()) < 3:  # noqa: ASYNC110 - the history is read over HTTP
            await asyncio.sleep(0.2)
    assert all(set(s) == STATS_FIELDS for s in found)
    stamps = [s["timestamp"] for s in found]
    assert stamps == sorted(stamps)
    ring = next(r for k, r in history._rings.items() if k[2].startswith(cid))
    assert ring.samples.maxlen == 60
    assert (await (await client.get(f"/api/v1/containers/{unlinked}/stats/history")).json())["samples"] == []
    for query in ("minutes=0", "minutes=abc", "minutes=1441", "minutes=1.5"):
        resp = await client.get(f"{url}?{query}")
        assert resp.status == 400, query
        assert (await resp.json())["error"] == "INVALID_REQUEST"
    resp = await client.get("/api/v1/containers/nekzus-missing-0/stats/history")
    assert resp.status == 404 and (await resp.json())["error"] == "CONTAINER_NOT_FOUND"
    await containers.docker.containers.container(cid).stop(t=1)
    await until(lambda: not any(k[2].startswith(cid) for k in history._rings))
    assert await kept() == []


async def test_history_needs_read_containers(gateway: ClientFactory, docker_host: str) -> None:
    client = await gateway(make_config(docker_host, auth={"jwt_secret": SECRET, **REMOTE_ONLY}))
    url = "/api/v1/containers/abc/stats/history"
    assert (await client.get(url)).status == 401
    resp = await client.get(url, headers=bearer(token(scopes=["write:containers"])))
    assert resp.status == 403
