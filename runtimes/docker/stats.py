"""Stats samples with a real CPU rate from the Engine's one-shot stats, and the recent ones kept;
or a container's samples as the Engine streams them, one a second.

A container's samples are shared: one sampling at a time per container, and a sample the
Engine's collector has not replaced yet answers again (see :meth:`ContainerStats.sample`).
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from ..base import ContainerRef, StatsSample
from ..errors import Conflict
from ..stats import CpuHistory, sample_from_docker
from .paths import container_path, short_id
from .session import ENGINE_ERRORS, EngineSession

# A first stats call takes two one-shot samples at least this far apart: long enough for the
# host's CPU counter (clock ticks of 10 ms, on every CPU) to move by dozens of ticks. The Engine's
# stats collector reads its containers once a second (STATS_INTERVAL) and a one-shot sample waits
# for its next pass, so in practice the second sample comes with that pass: ~1 s on Docker 20.10.
FIRST_SAMPLE_GAP = 0.25
STATS_INTERVAL = 1.0
# A container's newest sample, up to STATS_STALE old, answers a call whose fresh sample is not
# there within STATS_WAIT (its collector pass is further away); that pass still refreshes it.
STATS_WAIT = 0.1
STATS_STALE = 3.0
_FRESH_KEEP = 512  # recent samples kept by container before the stale ones are swept
# The ``read`` time of a streamed sample of a container that is not running: the Engine keeps the
# stream open and sends such empty samples, once a second, for as long as the client reads.
_NOT_READ = "0001-01-01T"
_EMPTY_AT_START = 3


class ContainerStats:
    """The samples of one Engine's containers: the CPU history, the newest samples, those under way."""

    def __init__(self, session: EngineSession) -> None:
        self._session = session
        self._cpu = CpuHistory(min_gap=FIRST_SAMPLE_GAP)
        self._fresh: dict[str, tuple[float, StatsSample]] = {}
        self._sampling: dict[str, asyncio.Future[StatsSample]] = {}

    def pending(self) -> list[asyncio.Future[StatsSample]]:
        """The samplings under way, for the runtime to cancel when it closes."""
        return list(self._sampling.values())

    async def sample(self, ref: ContainerRef) -> StatsSample:
        """One sample with a real CPU rate, in a fraction of a second after a container's first.

        ``one-shot`` (API 1.41) has no previous CPU reading, so the rate is taken against the
        gateway's own earlier sample of the container (see :class:`~runtimes.stats.CpuHistory`);
        the first call takes a second sample ``FIRST_SAMPLE_GAP`` or more after the first. The
        Engine's collector reads containers once a second and a one-shot sample waits for its next
        pass, so a sample younger than ``STATS_INTERVAL`` is answered again (the Engine has nothing
        newer), and one younger than ``STATS_STALE`` answers when the next pass is more than
        ``STATS_WAIT`` away. Concurrent calls for a container share one sampling. An older Engine
        ignores ``one-shot`` and takes two samples itself, a second apart, used as they are.
        """
        now = time.monotonic()
        recent = self._fresh.get(ref.id)
        if recent is not None and now - recent[0] < STATS_INTERVAL:
            return recent[1]
        sampling = self._sampling.get(ref.id)
        if sampling is None:
            sampling = asyncio.ensure_future(self._new_sample(ref))
            self._sampling[ref.id] = sampling
            sampling.add_done_callback(functools.partial(self._sampled, ref.id))
        if recent is not None and now - recent[0] < STATS_STALE:
            done, _ = await asyncio.wait({sampling}, timeout=STATS_WAIT)
            if not done:
                return recent[1]
        # Shielded: a caller that goes away does not cancel a sampling others may share.
        return await asyncio.shield(sampling)

    def _sampled(self, key: str, sampling: asyncio.Future[StatsSample]) -> None:
        if self._sampling.get(key) is sampling:
            del self._sampling[key]
        if not sampling.cancelled():
            sampling.exception()  # its callers have it; nobody else must be told it went unread

    async def _new_sample(self, ref: ContainerRef) -> StatsSample:
        doc = await self._sample(ref)
        taken = time.monotonic()
        if not (doc.get("precpu_stats") or {}).get("system_cpu_usage"):
            cid = str(doc.get("id") or ref.id)
            earlier = self._cpu.earlier(cid, taken)
            if earlier is None and doc.get("cpu_stats", {}).get("system_cpu_usage"):
                self._cpu.record(cid, taken, doc["cpu_stats"])
                await asyncio.sleep(FIRST_SAMPLE_GAP)
                doc = await self._sample(ref)
                taken = time.monotonic()
                earlier = self._cpu.earlier(cid, taken)
            self._cpu.record(cid, taken, doc.get("cpu_stats") or {})
            doc = {**doc, "precpu_stats": earlier or {}}
        # The daemon's CPU count only for a container that reports none of its own (never ran).
        cpu = doc.get("cpu_stats") or {}
        own = cpu.get("online_cpus") or (cpu.get("cpu_usage") or {}).get("percpu_usage")
        cpus = 1 if own else await self._cpus()
        sample = sample_from_docker(short_id(doc.get("id") or ref.id), doc, int(time.time()), cpus=cpus)
        if len(self._fresh) >= _FRESH_KEEP:
            self._fresh = {k: v for k, v in self._fresh.items() if taken - v[0] < STATS_STALE}
        self._fresh[ref.id] = (taken, sample)
        return sample

    async def stream(self, ref: ContainerRef) -> AsyncIterator[StatsSample]:
        """The container's samples from one ``stream=true`` request, one per collector pass.

        Each streamed document carries the one before as ``precpu_stats``, so the CPU rate needs
        no history of the gateway's; the first has none and is skipped rather than reported as
        an idle container. The stream ends at the first empty sample after a real one (the
        container stopped), or at the third without any (it is not running).
        """
        path = container_path(ref.id, "stats")
        seen, empty = False, 0
        try:
            async with self._session.stream(path, {"stream": "true"}) as response:
                async for line in response.content:
                    doc = json.loads(line)
                    if not isinstance(doc, dict) or str(doc.get("read", _NOT_READ)).startswith(_NOT_READ):
                        # Also the first pass after a start may find no cgroup yet: a few empty
                        # samples before any real one are waited out, not taken for a stop.
                        empty += 1
                        if seen or empty >= _EMPTY_AT_START:
                            return
                        continue
                    seen = True
                    if not (doc.get("precpu_stats") or {}).get("system_cpu_usage"):
                        continue
                    cpu = doc.get("cpu_stats") or {}
                    own = cpu.get("online_cpus") or (cpu.get("cpu_usage") or {}).get("percpu_usage")
                    cpus = 1 if own else await self._cpus()
                    yield sample_from_docker(
                        short_id(doc.get("id") or ref.id), doc, int(time.time()), cpus=cpus
                    )
        except (*ENGINE_ERRORS, ValueError) as exc:
            # ValueError: a line that is not JSON, or longer than the reader's line limit.
            self._session.fail(exc, f"GET {path}")

    async def _sample(self, ref: ContainerRef) -> dict[str, Any]:
        doc = await self._session.json(
            container_path(ref.id, "stats"), params={"stream": "false", "one-shot": "true"}
        )
        if not isinstance(doc, dict):
            # An empty answer: the Engine ended the container's stats meanwhile (it stopped).
            raise Conflict(f"{ref.id} stopped while it was sampled")
        return doc

    async def _cpus(self) -> int:
        """The daemon's CPU count: what a container without a CPU reading of its own may use."""
        return int((await self._session.daemon_info()).get("NCPU") or 1)
