"""Shared stats samplers, their subscribers and the stats history, on a fake streaming runtime.

The story against the real Engine is tests/docker/test_ws_stats.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import tracemalloc
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any, cast

import pytest

from nekzus.errors import ApiError
from nekzus.realtime.statsfeed import (
    STATS_FEED,
    InvalidStatsRequest,
    Sampler,
    StatsFeed,
    StatsRequest,
    Target,
)
from nekzus.realtime.statshistory import StatsHistory
from runtimes import Conflict, ContainerRef, ContainerSummary, StatsSample, Unavailable
from runtimes.docker.session import EngineSession
from runtimes.docker.stats import ContainerStats
from tests.docker.test_ws_stats import connect, until
from tests.support.fakes import FakeRuntime, registry_of, summary
from tests.support.gateway import ClientFactory, make_config
from tests.unit.test_security import REMOTE_ONLY, SECRET, bearer, token
from tests.unit.test_websocket_sessions import short_token

NO_HISTORY = {"history_minutes": 0}
# Fake containers whose short ids differ (the fakes' short id is the first 12 of 64 hex digits).
ONE, TWO = 1 << 208, 2 << 208


def sample(cid: str, n: int) -> StatsSample:
    """A sample as a Docker stream gives it: every figure its own object."""
    return StatsSample(
        cid, n / 7, n / 700, 2.0, n / 3, 1000 + n, 1 << 30, (1 << 30) - n, 5 * n, 3 * n, 1_767_225_600 + n
    )


class StreamingRuntime(FakeRuntime):
    """A fake runtime whose stats stream yields what a test puts on the container's queue
    (None ends the stream, an exception is raised from it)."""

    def __init__(self, containers: list[ContainerSummary]) -> None:
        super().__init__(containers)
        self.queues: dict[str, asyncio.Queue[StatsSample | Exception | None]] = {}
        self.opened = 0

    def queue(self, full_id: str) -> asyncio.Queue[StatsSample | Exception | None]:
        return self.queues.setdefault(full_id, asyncio.Queue())

    async def stream_stats(self, ref: ContainerRef) -> AsyncIterator[StatsSample]:
        self.opened += 1
        queue = self.queue(ref.id)
        while (item := await queue.get()) is not None:
            if isinstance(item, Exception):
                raise item
            yield item


class Heard:
    """A listener that keeps what it is told."""

    def __init__(self) -> None:
        self.samples: list[StatsSample] = []
        self.ended: list[ApiError | None] = []

    def on_sample(self, sampler: Sampler, s: StatsSample) -> None:
        self.samples.append(s)

    def on_end(self, sampler: Sampler, error: ApiError | None) -> None:
        self.ended.append(error)


async def no_linked() -> list[ContainerSummary]:
    return []


def feed_on(runtime: StreamingRuntime) -> StatsFeed:
    return StatsFeed(registry_of(runtime), lambda s: {"containerId": s.container_id}, no_linked)


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"linked": True, "containerIds": ["a"]},
        {"linked": False},
        {"linked": 1},
        {"containerIds": []},
        {"containerIds": "a"},
        {"containerIds": ["a"] * 101},
        {"containerIds": [None]},
        {"containerIds": ["a/b"]},
        {"containerIds": ["a"], "interval": 0.5},
        {"containerIds": ["a"], "interval": 60.5},
        {"containerIds": ["a"], "interval": math.nan},
        {"containerIds": ["a"], "interval": math.inf},
        {"containerIds": ["a"], "interval": 10**400},
        {"containerIds": ["a"], "interval": False},
        {"containerIds": ["a"], "interval": [1]},
        {"containerIds": ["a"], "runtime": 1},
        {"containerIds": ["a"], "namespace": "Not A Namespace"},
        {"containerIds": ["a"], "other": 1},
    ],
)
def test_bad_requests_are_refused(data: dict[str, Any]) -> None:
    with pytest.raises(InvalidStatsRequest):
        StatsRequest.from_message(data)


def test_good_requests() -> None:
    req = StatsRequest.from_message({"containerIds": ["web", "db", "web"], "interval": 5})
    assert (req.container_ids, req.linked, req.interval) == (("web", "db"), False, 5.0)
    linked = StatsRequest.from_message({"linked": True})
    assert (linked.container_ids, linked.linked, linked.interval) == ((), True, 1.0)


async def test_listeners_share_one_sampler_that_the_last_one_ends() -> None:
    c = summary(ONE)
    runtime = StreamingRuntime([c])
    feed = feed_on(runtime)
    first, second = Heard(), Heard()
    sampler = feed.join(Target.of(c), first)
    assert feed.join(Target.of(c), second) is sampler
    runtime.queue(c.full_id).put_nowait(sample(c.id, 1))
    await until(lambda: len(second.samples) == 1)
    assert first.samples == second.samples and runtime.opened == 1
    assert sampler.message()[0] == f'{{"type":"container.stats","data":{{"containerId":"{c.id}"}}}}'
    feed.leave(sampler, first)
    assert sampler.task is not None and not sampler.task.done()
    feed.leave(sampler, second)
    await until(lambda: sampler.task is not None and sampler.task.done() and feed.tasks == 0)
    assert not feed.samplers and first.ended == second.ended == []  # a cancelled stream tells nobody
    await feed.close()


async def test_an_ended_stream_tells_its_listeners_once() -> None:
    stopped, broken = summary(ONE), summary(TWO)
    runtime = StreamingRuntime([stopped, broken])
    feed = feed_on(runtime)
    heard_stop, heard_fail = Heard(), Heard()
    feed.join(Target.of(stopped), heard_stop)
    feed.join(Target.of(broken), heard_fail)
    runtime.queue(stopped.full_id).put_nowait(None)
    runtime.queue(broken.full_id).put_nowait(Unavailable("gone", detail="the Engine went away"))
    await until(lambda: not feed.samplers and feed.tasks == 0)
    assert heard_stop.ended == [None]
    (error,) = heard_fail.ended
    assert error is not None and error.code == "RUNTIME_UNAVAILABLE"
    await feed.close()


async def test_history_keeps_one_sample_per_resolution_and_is_bounded() -> None:
    c = summary(ONE)
    runtime = StreamingRuntime([c])
    feed = feed_on(runtime)
    history = StatsHistory(feed, minutes=1, resolution=0.5)  # at most 120 kept; every sample is kept
    assert history.size == 120
    history.follow(Target.of(c))
    history.follow(Target.of(c))  # a container already kept is not followed twice
    (sampler,) = feed.samplers.values()
    assert len(sampler.listeners) == 1
    for n in range(500):
        sampler.publish(sample(c.id, n))
    kept = history.samples(Target.of(c), 1e9)
    assert len(kept) == 120 and kept[-1].timestamp == sample(c.id, 499).timestamp
    assert history.samples(Target.of(summary(TWO)), 15) == []
    coarse = StatsHistory(feed, minutes=1, resolution=10)
    coarse.follow(Target.of(c))
    for n in range(20):
        sampler.publish(sample(c.id, n))
    assert len(coarse.samples(Target.of(c), 1e9)) == 1  # within one resolution: one kept
    history.close()
    coarse.close()
    await until(lambda: not feed.samplers and feed.tasks == 0)
    await feed.close()


def test_memory_per_kept_sample() -> None:
    """The budget docs/api.md gives: about 0.5 KB a sample (45 KB for 15 minutes at 10 s)."""
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    kept = [sample(f"{n:012x}", n) for n in range(1000)]
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert len(kept) == 1000
    assert used / 1000 < 600, used / 1000


async def test_subscriptions_over_the_websocket(gateway: ClientFactory, docker_host: str) -> None:
    running, other = summary(ONE), summary(TWO)
    runtime = StreamingRuntime([running, other])
    client = await gateway(make_config(docker_host, stats=NO_HISTORY), runtimes=registry_of(runtime))
    feed = client.app[STATS_FEED]
    ws = await connect(client)
    await ws.send("container.stats.subscribe", containerIds=[running.id, other.name], interval=1)
    reply = await ws.until("container.stats.subscribed")
    assert reply["data"]["containerIds"] == sorted([running.id, other.id])
    runtime.queue(running.full_id).put_nowait(sample(running.id, 1))
    message = await ws.until("container.stats", containerId=running.id)
    assert set(message["data"]) == {"containerId", "cpu", "memory", "network", "timestamp"}
    # A new subscribe replaces the last one whole: the first container's sampler ends.
    await ws.send("container.stats.subscribe", containerIds=[other.id], interval=60)
    assert (await ws.until("container.stats.subscribed"))["data"]["containerIds"] == [other.id]
    await until(lambda: list(feed.samplers) == [Target.of(other).key])
    runtime.queue(other.full_id).put_nowait(None)
    ended = await ws.until("container.stats.ended", containerId=other.id)
    assert ended["data"]["reason"] == "stopped"
    await until(lambda: not feed.samplers)


async def test_a_runtime_without_a_stream_is_not_supported(gateway: ClientFactory, docker_host: str) -> None:
    client = await gateway(
        make_config(docker_host, stats=NO_HISTORY), runtimes=registry_of(FakeRuntime([summary(ONE)]))
    )
    ws = await connect(client)
    await ws.send("container.stats.subscribe", containerIds=[summary(ONE).id])
    error = await ws.until("container.stats.error")
    assert error["data"]["error"] == "OPERATION_NOT_SUPPORTED"
    assert not client.app[STATS_FEED].samplers
    resp = await client.get(f"/api/v1/containers/{summary(ONE).id}/stats/history")
    assert resp.status == 200 and (await resp.json())["samples"] == []


class EngineLines:
    """Stands in for the Engine session: a stats stream of the given lines, one-shot answers of ``one``."""

    def __init__(self, lines: list[dict[str, Any] | None], one: Any = None) -> None:
        self.lines, self.one = lines, one

    @contextlib.asynccontextmanager
    async def stream(self, path: str, params: dict[str, str]) -> AsyncIterator[Any]:
        async def content() -> AsyncIterator[bytes]:
            for line in self.lines:
                yield json.dumps(line).encode() + b"\n"

        yield SimpleNamespace(content=content())

    async def json(self, path: str, params: dict[str, str]) -> Any:
        return self.one


def engine_doc(n: int, *, read: str = "2026-12-03T19:41:19Z") -> dict[str, Any]:
    cpu = {"cpu_usage": {"total_usage": 1000 * n}, "system_cpu_usage": 10_000 * n, "online_cpus": 2}
    pre = (
        {"cpu_usage": {"total_usage": 1000 * (n - 1)}, "system_cpu_usage": 10_000 * (n - 1)} if n > 1 else {}
    )
    return {"id": "ab" * 32, "read": read, "cpu_stats": cpu, "precpu_stats": pre, "memory_stats": {}}


EMPTY = {"read": "0001-01-01T00:00:00Z", "cpu_stats": {}, "precpu_stats": {}}


async def streamed(lines: list[dict[str, Any] | None]) -> list[StatsSample]:
    stats = ContainerStats(cast(EngineSession, EngineLines(lines)))
    return [s async for s in stats.stream(ContainerRef("abab"))]


async def test_the_engine_stream_read_to_samples() -> None:
    # An empty pass right after a start is waited out; the first real one has no rate and is
    # skipped; the first empty one after real ones is the stop.
    got = await streamed([EMPTY, engine_doc(1), engine_doc(2), engine_doc(3), EMPTY, engine_doc(4)])
    assert [s.cpu_percent for s in got] == [20.0, 20.0] and got[0].container_id == "ab" * 6
    assert await streamed([EMPTY, EMPTY, EMPTY, engine_doc(1), engine_doc(2)]) == []  # never ran
    assert await streamed([None, EMPTY, EMPTY]) == []


async def test_an_empty_one_shot_answer_is_a_stopped_container() -> None:
    stats = ContainerStats(cast(EngineSession, EngineLines([], one=None)))
    with pytest.raises(Conflict):
        await stats.sample(ContainerRef("abab"))


async def test_an_expired_session_gets_no_stats(gateway: ClientFactory, docker_host: str) -> None:
    c = summary(ONE)
    runtime = StreamingRuntime([c])
    config = make_config(
        docker_host,
        auth={"jwt_secret": SECRET, **REMOTE_ONLY},
        websocket={"reauth_grace": 5},
        stats=NO_HISTORY,
    )
    client = await gateway(config, runtimes=registry_of(runtime))
    ws = await connect(client, headers=bearer(short_token(sub="phone")))
    await ws.send("container.stats.subscribe", containerIds=[c.id])
    await ws.until("container.stats.subscribed")
    await ws.until("auth.expired", timeout=10)
    # Suspended: a new subscription is refused, and a sample of the running one is not sent.
    await ws.send("container.stats.subscribe", containerIds=[c.id])
    refused = await ws.until("container.stats.error")
    assert refused["data"]["error"] == "UNAUTHORIZED"
    runtime.queue(c.full_id).put_nowait(sample(c.id, 1))
    await ws.send("auth", token=token(sub="phone"))
    await ws.until("auth_success")
    runtime.queue(c.full_id).put_nowait(sample(c.id, 2))
    got = await ws.until("container.stats", containerId=c.id)
    assert got["data"]["timestamp"] == sample(c.id, 2).timestamp  # the one sent while suspended was not
