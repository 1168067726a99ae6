"""The recent stats of each linked running container, for a sparkline when an app opens.

Each linked running container of a runtime that streams stats has a ring of samples, one kept
every ``resolution`` seconds for ``minutes``: a listener of the container's shared sampler (see
:mod:`.statsfeed`), so a container both watched live and kept here is streamed once. A ring is
dropped when its container stops: a stopped container has no history. A kept sample is a
:class:`~runtimes.StatsSample` of about 0.5 KB (measured in tests/unit/test_statsfeed.py), so 15
minutes at 10 s (90 samples) cost about 45 KB per container.
"""

from __future__ import annotations

import time
from collections import deque

from aiohttp import web

from runtimes import StatsSample

from ..errors import ApiError
from .statsfeed import SAMPLE_TOLERANCE, SampleKey, Sampler, StatsFeed, Target

STATS_HISTORY: web.AppKey[StatsHistory] = web.AppKey("stats_history")


class Ring:
    """One container's kept samples, oldest first."""

    def __init__(self, history: StatsHistory, size: int) -> None:
        self.history = history
        self.samples: deque[StatsSample] = deque(maxlen=size)
        self.sampler: Sampler | None = None
        self._kept_at = 0.0

    def on_sample(self, sampler: Sampler, sample: StatsSample) -> None:
        now = time.monotonic()
        if self.samples and now - self._kept_at < self.history.resolution - SAMPLE_TOLERANCE:
            return
        self._kept_at = now
        self.samples.append(sample)

    def on_end(self, sampler: Sampler, error: ApiError | None) -> None:
        self.history.forget(sampler.target.key, self)


class StatsHistory:
    """The rings of the linked running containers; none at all with ``minutes`` 0."""

    def __init__(self, feed: StatsFeed, *, minutes: int, resolution: float) -> None:
        self.feed = feed
        self.minutes = minutes
        self.resolution = resolution
        self.size = int(minutes * 60 // resolution)
        self._rings: dict[SampleKey, Ring] = {}

    @property
    def enabled(self) -> bool:
        return self.size > 0

    def follow(self, target: Target) -> None:
        if target.key in self._rings:
            return
        ring = Ring(self, self.size)
        self._rings[target.key] = ring
        ring.sampler = self.feed.join(target, ring)

    def forget(self, key: SampleKey, ring: Ring) -> None:
        if self._rings.get(key) is ring:
            del self._rings[key]

    def samples(self, target: Target, minutes: float) -> list[StatsSample]:
        """The kept samples of ``target`` from the last ``minutes``, oldest first (none if it has
        no ring: not linked, not running, or not sampled yet)."""
        ring = self._rings.get(target.key)
        if ring is None:
            return []
        since = time.time() - minutes * 60
        return [s for s in ring.samples if s.timestamp >= since]

    def close(self) -> None:
        self.feed.followers.discard(self)
        for key, ring in list(self._rings.items()):
            del self._rings[key]
            if ring.sampler is not None:
                self.feed.leave(ring.sampler, ring)
