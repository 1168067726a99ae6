"""Alert rules: conditions over container events, stats and logs that fire and resolve alerts.

The sources feed :class:`~nekzus.notify.alert_rules.AlertBook`, which owns the timing:

- the bus: ``container.state`` (exits with their code, starts, removals), ``container.health``,
  ``container.oom``, as the state watchers publish them;
- the shared live stats sampler (:class:`~nekzus.realtime.statsfeed.StatsFeed`), joined only for
  running containers a cpu or memory rule selects, and left when they stop or go;
- one log follower per container log rules select (:mod:`nekzus.notify.logwatch`).

``alert.firing`` and ``alert.resolved`` go out on the bus, so WebSocket readers and webhooks get
them as every other event. One owned task applies what falls due (``for``, ``cooldown``, a log
rule's ``quiet``, a restart window), woken whenever an input may have moved the next deadline.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any

from aiohttp import web

from runtimes import ContainerState, RuntimeRegistry, StatsSample

from ..config import AlertRuleConfig
from ..errors import ApiError
from ..keys import CONFIG, EVENT_BUS, OPERATIONS, REGISTRY, WATCHERS
from ..operations.tracker import OperationTracker
from ..realtime.events import Event, EventBus
from ..realtime.logstream import now_nanos
from ..realtime.statsfeed import STATS_FEED, Sampler, StatsFeed, Target
from ..realtime.watcher import REMOVED, StateWatcher
from ..stacks.model import PROJECT
from ..tasks import TaskGroup
from .alert_rules import AlertBook, Clock, Rule, Subject, SubjectKey
from .logwatch import LogWatch

log = logging.getLogger(__name__)

# An exit within this many seconds of the end of a gateway stop, restart, removal, update or
# stack action of the container was asked for (the runtime's event may trail the operation).
ASKED_GRACE = 5.0
_EXITS = frozenset({"exited", "failed"})
RESAMPLE_SECONDS = 5.0
_STATS_CONDITIONS = frozenset({"cpu", "memory"})


class AlertStats:
    """The live stats of the running containers that cpu and memory rules select, from the
    samplers WebSocket readers and the history share."""

    def __init__(
        self,
        feed: StatsFeed,
        on_sample: Callable[[Subject, Sequence[Rule], StatsSample], None],
        on_end: Callable[[Subject, Sequence[Rule], bool], None],
    ) -> None:
        self._feed = feed
        self._on_sample = on_sample
        self._on_end = on_end
        self._followed: dict[SubjectKey, tuple[Sampler, Subject, Sequence[Rule]]] = {}
        self._subjects: dict[tuple[str, str, str], SubjectKey] = {}

    @property
    def followed(self) -> Mapping[SubjectKey, tuple[Sampler, Subject, Sequence[Rule]]]:
        return self._followed

    def follow(self, target: Target, subject: Subject, rules: Sequence[Rule]) -> None:
        if subject.key in self._followed or self._feed.streams(target.runtime) is None:
            return
        sampler = self._feed.join(target, self)
        self._followed[subject.key] = (sampler, subject, rules)
        self._subjects[target.key] = subject.key

    def _entry(self, sampler: Sampler) -> tuple[Sampler, Subject, Sequence[Rule]] | None:
        key = self._subjects.get(sampler.target.key)
        return self._followed.get(key) if key is not None else None

    def on_sample(self, sampler: Sampler, sample: StatsSample) -> None:
        entry = self._entry(sampler)
        if entry is not None:
            self._on_sample(entry[1], entry[2], sample)

    def on_end(self, sampler: Sampler, error: ApiError | None) -> None:
        entry = self._entry(sampler)
        if entry is None:
            return
        del self._followed[entry[1].key], self._subjects[sampler.target.key]
        if error is not None:
            log.warning("stats of %s for alerts ended: %s", entry[1].name, error.message)
        self._on_end(entry[1], entry[2], error is not None)

    def drop(self, key: SubjectKey) -> None:
        """Stop sampling for the rules: the container is gone."""
        entry = self._followed.pop(key, None)
        if entry is not None:
            self._subjects.pop(entry[0].target.key, None)
            self._feed.leave(entry[0], self)

    def close(self) -> None:
        for key in list(self._followed):
            self.drop(key)


class AlertService:
    """The configured rules over the gateway's events, stats and logs, and the alerts they make."""

    def __init__(
        self,
        rules: Sequence[AlertRuleConfig],
        bus: EventBus,
        tracker: OperationTracker,
        feed: StatsFeed,
        registry: RuntimeRegistry,
        watchers: list[StateWatcher],
        *,
        clock: Clock = time.monotonic,
    ) -> None:
        self._bus = bus
        self._tracker = tracker
        self._watchers = {w.runtime.name: w for w in watchers}
        self._clock = clock
        self._wake = asyncio.Event()
        self.book = AlertBook([Rule(r) for r in rules], self._publish, clock=clock)
        self.stats = AlertStats(feed, self._on_sample, self._on_stats_end)
        self.logs = LogWatch(registry, self._on_hit)
        self._tasks = TaskGroup()
        self._started = False

    def _publish(self, event_type: str, data: Mapping[str, Any]) -> None:
        self._bus.publish(event_type, data)

    @property
    def rules(self) -> list[Rule]:
        return self.book.rules

    def start(self, ready: Callable[[], Awaitable[object]]) -> None:
        """Once ``ready`` returns (the watchers know the containers), follow the running
        containers the rules select, and keep the timers."""
        self._bus.add_listener(self.on_event)
        self._started = True
        self._tasks.spawn(self._run(ready), name="alert-timers")

    async def close(self) -> None:
        if self._started:
            self._bus.remove_listener(self.on_event)
        await self._tasks.close()
        self.stats.close()
        await self.logs.close()

    async def _run(self, ready: Callable[[], Awaitable[object]]) -> None:
        await ready()
        self._seed()
        loop = asyncio.get_running_loop()
        while True:
            self._wake.clear()
            due = self.book.advance()
            at = None if due is None else loop.time() + max(0.0, due - self._clock())
            try:
                async with asyncio.timeout_at(at):
                    await self._wake.wait()
            except TimeoutError:
                pass

    def _seed(self) -> None:
        """What already holds when the gateway starts: running containers to sample and follow
        (their logs from now on), and healthcheck verdicts already unhealthy."""
        since = now_nanos()
        for runtime, watcher in self._watchers.items():
            for cid, known in watcher.containers():
                subject = Subject(runtime, known.namespace, cid, known.name)
                rules = self._selecting(subject, known.labels)
                if known.state is ContainerState.RUNNING:
                    self._follow(subject, rules, since)
                if known.health == "unhealthy":
                    for rule in _of(rules, "unhealthy"):
                        self.book.hold(rule, subject, f"{subject.name} fails its healthcheck")
        self._wake.set()

    # -- inputs --------------------------------------------------------------------------------

    def on_event(self, event: Event) -> None:
        """Event bus listener: the container events the rules watch."""
        if event.type not in ("container.state", "container.health", "container.oom"):
            return
        data = event.data
        subject = Subject(
            str(data["runtime"]),
            str(data.get("namespace") or ""),
            str(data["containerId"]),
            str(data.get("name") or data["containerId"]),
        )
        if event.type == "container.state" and data.get("state") == REMOVED:
            self.book.forget(subject.key)
            self.logs.drop(subject.key)
            self.stats.drop(subject.key)
            self._wake.set()
            return
        watcher = self._watchers.get(subject.runtime)
        known = watcher.known(subject.namespace, subject.container_id) if watcher is not None else None
        labels = known.labels if known is not None else {}
        rules = self._selecting(subject, labels)
        if not rules:
            return
        if event.type == "container.health":
            for rule in _of(rules, "unhealthy"):
                if data.get("health") == "unhealthy":
                    self.book.hold(rule, subject, f"{subject.name} fails its healthcheck")
                elif data.get("health") == "healthy":
                    self.book.clear(rule, subject)
        elif event.type == "container.oom":
            for rule in _of(rules, "oom"):
                self.book.hold(rule, subject, f"{subject.name} was killed for lack of memory (OOM)")
        else:
            self._on_state(subject, rules, data, labels.get(PROJECT))
        self._wake.set()

    def _on_state(
        self, subject: Subject, rules: list[Rule], data: Mapping[str, Any], project: str | None
    ) -> None:
        state = data.get("state")
        if state in _EXITS:
            asked = self._asked(subject, project)
            code = data.get("exitCode")
            for rule in _of(rules, "exited"):
                if asked or (rule.when.nonzero_only and not code):
                    continue
                said = f" with code {code}" if code is not None else ""
                self.book.hold(rule, subject, f"{subject.name} exited{said}", code)
            for rule in rules:
                if rule.condition in _STATS_CONDITIONS:
                    self.book.clear(rule, subject)
        elif state == "running":
            for rule in rules:
                if rule.condition in ("exited", "oom"):
                    self.book.clear(rule, subject)
            if data.get("previousState") in _EXITS and not self._asked(subject, project):
                for rule in _of(rules, "restart_loop"):
                    self.book.restart(rule, subject)
            self._follow(subject, rules, (int(data.get("timestamp") or 0), 0))

    def _asked(self, subject: Subject, project: str | None) -> bool:
        return self._tracker.acted_on(
            subject.runtime, subject.namespace, subject.container_id, project, within=ASKED_GRACE
        )

    def _follow(self, subject: Subject, rules: Sequence[Rule], since: tuple[int, int]) -> None:
        """Sample and follow a running container for the stats and log rules that select it."""
        if any(r.condition in _STATS_CONDITIONS for r in rules):
            watcher = self._watchers.get(subject.runtime)
            full_id = watcher.full_id(subject.container_id) if watcher is not None else subject.container_id
            target = Target(subject.runtime, full_id, subject.container_id, subject.namespace)
            self.stats.follow(target, subject, [r for r in rules if r.condition in _STATS_CONDITIONS])
        log_rules = _of(rules, "log")
        if log_rules:
            self.logs.follow(subject, log_rules, since)

    def _on_sample(self, subject: Subject, rules: Sequence[Rule], sample: StatsSample) -> None:
        for rule in rules:
            above = rule.when.above or 0.0
            if rule.condition == "cpu":
                value, what = sample.cpu_percent, "CPU"
            else:
                value, what = sample.memory_percent, "memory"
            if value > above:
                message = f"{subject.name} uses {value:.1f}% {what} (above {above:g}%)"
                self.book.hold(rule, subject, message, round(value, 2))
            else:
                self.book.clear(rule, subject)
        self._wake.set()

    def _on_stats_end(self, subject: Subject, rules: Sequence[Rule], failed: bool) -> None:
        for rule in rules:
            self.book.clear(rule, subject)
        self._wake.set()
        if failed:
            self._tasks.spawn(self._resample(subject), name=f"alert-resample-{subject.container_id}")

    async def _resample(self, subject: Subject) -> None:
        """A stats stream that failed while its container may still run (the runtime went away
        and came back without restarting it, so no start event will come): sample it again."""
        await asyncio.sleep(RESAMPLE_SECONDS)
        watcher = self._watchers.get(subject.runtime)
        known = watcher.known(subject.namespace, subject.container_id) if watcher is not None else None
        if known is not None and known.state is ContainerState.RUNNING:
            rules = [r for r in self._selecting(subject, known.labels) if r.condition in _STATS_CONDITIONS]
            self._follow(subject, rules, now_nanos())

    def _on_hit(self, rule: Rule, subject: Subject, line: bytes, lines: int) -> None:
        self.book.hit(rule, subject, line, lines)
        self._wake.set()

    def _selecting(self, subject: Subject, labels: Mapping[str, str]) -> list[Rule]:
        return [r for r in self.book.rules if r.selects(subject.container_id, subject.name, labels)]


def _of(rules: Sequence[Rule], condition: str) -> list[Rule]:
    return [r for r in rules if r.condition == condition]


ALERTS: web.AppKey[AlertService] = web.AppKey("alerts")


async def alerts_ctx(app: web.Application) -> AsyncIterator[None]:
    service = AlertService(
        app[CONFIG].alerts,
        app[EVENT_BUS],
        app[OPERATIONS],
        app[STATS_FEED],
        app[REGISTRY],
        app[WATCHERS],
    )
    app[ALERTS] = service
    if service.rules:
        service.start(lambda: asyncio.gather(*(w.watching.wait() for w in app[WATCHERS])))
    yield
    await service.close()
