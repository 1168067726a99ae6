"""What the watcher tells for alert rules: exit codes, OOM kills, any container's healthcheck
verdicts; and the log follower's matching of time-stamped blocks without re-matching on resume."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from nekzus.config import AlertRuleConfig, AppConfig
from nekzus.linking import AppLinker
from nekzus.notify import alerts
from nekzus.notify.alert_rules import Rule, Subject
from nekzus.notify.alerts import AlertService
from nekzus.notify.logwatch import LogFollower, LogWatch
from nekzus.operations.tracker import JobText, OperationTracker
from nekzus.realtime.events import Event, EventBus
from nekzus.realtime.statsfeed import StatsFeed
from nekzus.realtime.watcher import StateWatcher
from runtimes import (
    ContainerRef,
    ContainerState,
    ContainerSummary,
    LogChunk,
    RuntimeEvent,
    RuntimeRegistry,
    StatsSample,
    Unavailable,
)
from runtimes.docker.events import event_from_line
from tests.support.fakes import FakeRuntime, registry_of, summary
from tests.support.gateway import Heard, next_event

FULL = "f" * 64


def line(action: str, **attributes: Any) -> bytes:
    return json.dumps(
        {
            "Type": "container",
            "Action": action,
            "Actor": {"ID": FULL, "Attributes": {"name": "web", "image": "busybox", **attributes}},
            "time": 1_700_000_000,
            "timeNano": 1_700_000_000_000_000_000,
        }
    ).encode()


def test_a_die_carries_its_exit_code_and_an_oom_changes_no_state() -> None:
    died = event_from_line(line("die", exitCode="137", tier="front"), "docker")
    assert died is not None
    assert (died.state, died.exit_code, dict(died.labels)) == (ContainerState.EXITED, 137, {"tier": "front"})
    oom = event_from_line(line("oom"), "docker")
    assert oom is not None and (oom.action, oom.state, oom.exit_code) == ("oom", None, None)
    garbled = event_from_line(line("die", exitCode="x"), "docker")
    assert garbled is not None and garbled.exit_code is None
    started = event_from_line(line("start"), "docker")
    assert started is not None and started.exit_code is None


def drained(sub: Heard) -> list[Event]:
    events = []
    while not sub.queue.empty():
        events.append(sub.queue.get_nowait())
    return events


def event(action: str, state: ContainerState | None, **fields: Any) -> RuntimeEvent:
    return RuntimeEvent(
        container_id=summary(1).id,
        name="fake-1",
        action=action,
        state=state,
        labels={},
        runtime="docker",
        namespace="",
        timestamp=1_700_000_000,
        **fields,
    )


async def watcher_of(*, linked: bool = False) -> tuple[StateWatcher, Heard]:
    runtime = FakeRuntime([summary(1, linked=linked)])
    bus = EventBus()
    watcher = StateWatcher(runtime, bus, AppLinker([AppConfig(id="fake", name="Fake")]))
    await watcher._reconcile(publish=False)
    return watcher, Heard(bus)


async def test_exits_carry_their_code_and_an_oom_is_told_without_removing_anything() -> None:
    watcher, sub = await watcher_of()
    await watcher._apply(event("oom", None))
    await watcher._apply(event("die", ContainerState.EXITED, exit_code=137))
    oom, state = drained(sub)
    assert oom.type == "container.oom"
    assert oom.data == {
        "containerId": summary(1).id,
        "name": "fake-1",
        "runtime": "docker",
        "namespace": "",
        "timestamp": 1_700_000_000,
    }
    assert state.type == "container.state"
    assert (state.data["state"], state.data["previousState"], state.data["exitCode"]) == (
        "exited",
        "running",
        137,
    )
    assert watcher.known("", summary(1).id) is not None
    await watcher._apply(event("start", ContainerState.RUNNING))
    (started,) = drained(sub)
    assert "exitCode" not in started.data


async def test_any_container_s_verdict_changes_are_told_once_each() -> None:
    watcher, sub = await watcher_of()
    for verdict in ("healthy", "healthy", "unhealthy", "unhealthy", "healthy"):
        await watcher._apply(event("health_status", ContainerState.RUNNING, health=verdict))
    told = [(e.data["health"], e.data["previousHealth"]) for e in drained(sub)]
    assert told == [("healthy", None), ("unhealthy", "healthy"), ("healthy", "unhealthy")]


async def test_a_linked_app_still_gets_its_health_change_beside_container_health() -> None:
    watcher, sub = await watcher_of(linked=True)
    watcher._linker = AppLinker([AppConfig(id="fake-1", name="Fake")])
    await watcher._reconcile(publish=False)
    await watcher._apply(event("health_status", ContainerState.RUNNING, health="unhealthy"))
    assert sorted(e.type for e in drained(sub)) == ["container.health", "health_change"]


def log_rule(**when: Any) -> Rule:
    return Rule(AlertRuleConfig(name="log", when={"condition": "log", "containers": ["web"], **when}))


WEB = Subject("docker", "", summary(1).id, "web")


def follower(rule: Rule, last: tuple[int, int]) -> tuple[LogFollower, list[tuple[bytes, int]]]:
    hits: list[tuple[bytes, int]] = []
    runtime = FakeRuntime([summary(1)])
    made = LogFollower(runtime, WEB, [rule], lambda r, s, text, n: hits.append((text, n)), last)
    return made, hits


def test_time_stamps_are_not_matched_and_anchors_see_the_line_s_own_start() -> None:
    made, hits = follower(log_rule(pattern="^panic"), (0, 0))
    made.scan(
        b"2024-05-01T10:00:00.000000001Z panic: one\n"
        b"2024-05-01T10:00:01.5Z not a panic\n"
        b"2024-05-01T10:00:02Z\n"
        b"2024-05-01T10:00:03.25Z panic: two\n"
    )
    assert hits == [(b"panic: two", 2)]
    assert made.last == (1714557603, 250_000_000)
    assert made.lines == 4


def test_a_resumed_read_skips_what_was_read_already() -> None:
    made, hits = follower(log_rule(terms=["error"]), (1714557601, 500_000_000))
    made.scan(
        b"2024-05-01T10:00:01.000000000Z error old\n"
        b"2024-05-01T10:00:01.500000000Z error last read\n"
        b"2024-05-01T10:00:01.500000001Z error new\n"
    )
    made.scan(b"2024-05-01T10:00:01.2Z error from stderr, earlier but after the resume\n")
    assert hits == [(b"error new", 1), (b"error from stderr, earlier but after the resume", 1)]
    assert made.last == (1714557601, 500_000_001)


async def test_a_follower_of_a_stopped_container_reads_to_the_end_then_ends() -> None:
    runtime = FakeRuntime([dataclasses.replace(summary(1), state=ContainerState.EXITED)])
    runtime.log_chunks = [
        LogChunk("stdout", b"2024-05-01T10:00:00Z boot\n2024-05-01T10:00:01Z ERR"),
        LogChunk("stdout", b"OR: it broke\n2024-05-01T10:00:02Z last, no newline ERROR"),
    ]
    registry = RuntimeRegistry("docker")
    registry.add(runtime)
    hits: list[tuple[bytes, int]] = []
    watch = LogWatch(registry, lambda r, s, text, n: hits.append((text, n)))
    watch.follow(WEB, [log_rule(terms=["error"])], (1714557600, 0))
    (made,) = watch.followers.values()
    assert made.task is not None
    await made.task
    assert hits == [(b"ERROR: it broke", 1), (b"last, no newline ERROR", 1)]
    assert watch.followers == {}
    await watch.close()


class Service:
    """An AlertService over a fake runtime, fed events by hand; what it published."""

    def __init__(
        self, rule: dict[str, Any], labels: dict[str, str] | None = None, runtime: FakeRuntime | None = None
    ) -> None:
        self.container = dataclasses.replace(summary(1), labels=labels or {})
        self.runtime = runtime or FakeRuntime([self.container])
        self.bus = EventBus()
        self.heard = Heard(self.bus)
        self.tracker = OperationTracker(self.bus, retention_seconds=600, max_records=100)
        registry = registry_of(self.runtime)
        self.feed = StatsFeed(registry, lambda s: {}, self._no_linked)
        self.watcher = StateWatcher(self.runtime, self.bus, AppLinker([]))
        rules = [AlertRuleConfig(**rule)]
        self.service = AlertService(rules, self.bus, self.tracker, self.feed, registry, [self.watcher])

    @staticmethod
    async def _no_linked() -> list[ContainerSummary]:
        return []

    async def __aenter__(self) -> Service:
        await self.watcher._reconcile(publish=False)
        self.service.start(self._no_linked)  # ready at once: the watcher has listed
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.service.close()
        await self.tracker.close()
        await self.feed.close()

    def state(self, state: str, previous: str, **extra: Any) -> None:
        self.bus.publish(
            "container.state",
            {
                "containerId": self.container.id,
                "name": self.container.name,
                "runtime": "docker",
                "namespace": "",
                "state": state,
                "previousState": previous,
                "timestamp": 1_700_000_000,
                **extra,
            },
        )

    def alerts(self) -> list[tuple[str, Any]]:
        return [(e.type, e.data["message"]) for e in drained(self.heard) if e.type.startswith("alert.")]


async def test_exits_fire_unless_zero_with_nonzero_only() -> None:
    rule = {"name": "crash", "when": {"condition": "exited", "nonzero_only": True}, "cooldown": 0}
    async with Service(rule) as s:
        s.state("exited", "running", exitCode=0)
        s.state("running", "exited")
        s.state("exited", "running")  # no code known: not counted either
        assert s.alerts() == []
        s.state("running", "exited")
        s.state("exited", "running", exitCode=2)
        assert s.alerts() == [("alert.firing", "fake-1 exited with code 2")]
        s.state("running", "exited")
        assert s.alerts() == [("alert.resolved", "fake-1 exited with code 2")]


async def test_an_exit_the_gateway_was_asked_for_does_not_fire_nor_count_as_a_restart(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rules = {"name": "loop", "when": {"condition": "restart_loop", "restarts": 2, "within": 60}}
    async with Service(rules) as s:
        op = s.tracker.submit(
            s.runtime, ContainerRef(s.container.full_id), "restart", container_id=s.container.id, timeout=1
        )
        await op.done.wait()
        for _ in range(3):  # within the grace after the restart ended
            s.state("exited", "running", exitCode=137)
            s.state("running", "exited")
        assert s.alerts() == []
        monkeypatch.setattr(alerts, "ASKED_GRACE", 0.0)  # the operation is long past
        s.state("exited", "running", exitCode=1)
        s.state("running", "exited")
        s.state("exited", "running", exitCode=1)
        s.state("running", "exited")
        assert s.alerts() == [("alert.firing", "fake-1 restarted 2 times within 60 s")]


async def test_an_action_on_the_container_s_stack_explains_its_exit(monkeypatch: pytest.MonkeyPatch) -> None:
    rule = {"name": "crash", "when": {"condition": "exited"}}
    async with Service(rule, labels={"com.docker.compose.project": "shop"}) as s:
        release = asyncio.Event()

        async def work(progress: object) -> None:
            await release.wait()

        text = JobText("Stack stop initiated", "stopped", "stop")
        op = s.tracker.submit_job(
            runtime="docker", resource="stack", action="stop", target="shop", work=work, text=text
        )
        s.state("exited", "running", exitCode=137)
        assert s.alerts() == []
        release.set()
        await op.done.wait()
        monkeypatch.setattr(alerts, "ASKED_GRACE", 0.0)
        s.state("running", "exited")
        s.state("exited", "running", exitCode=137)
        assert s.alerts() == [("alert.firing", "fake-1 exited with code 137")]


async def test_oom_and_health_events_fire_and_a_removal_resolves() -> None:
    rule = {"name": "oom", "when": {"condition": "oom"}, "cooldown": 300}
    async with Service(rule) as s:
        data = {"containerId": s.container.id, "name": "fake-1", "runtime": "docker", "namespace": ""}
        s.bus.publish("container.oom", {**data, "timestamp": 1})
        assert s.alerts() == [("alert.firing", "fake-1 was killed for lack of memory (OOM)")]
        s.state("removed", "exited")
        assert s.alerts() == [("alert.resolved", "fake-1 was killed for lack of memory (OOM)")]


class BreakingLogs(FakeRuntime):
    """A log stream that breaks while the container runs: each read answers the whole log again
    (as a ``since`` of whole seconds does), a line more each time; the third read finds the
    container stopped."""

    def __init__(self) -> None:
        super().__init__([summary(1)])
        self.reads: list[int | None] = []

    async def logs(
        self,
        ref: ContainerRef,
        *,
        follow: bool,
        tail: int | None,
        timestamps: bool,
        since: int | None = None,
        until: int | None = None,
    ) -> AsyncIterator[LogChunk]:
        self.reads.append(since)
        lines = b"".join(b"2024-05-01T10:00:0%dZ error %d\n" % (n, n) for n in range(len(self.reads) + 1))
        if len(self.reads) == 3:
            (c,) = self.containers.values()
            self.containers[c.full_id] = dataclasses.replace(c, state=ContainerState.EXITED)
        yield LogChunk("stdout", lines)


async def test_a_broken_stream_is_read_again_from_the_last_line_without_matching_it_twice() -> None:
    runtime = BreakingLogs()
    hits: list[tuple[bytes, int]] = []
    watch = LogWatch(registry_of(runtime), lambda r, s, text, n: hits.append((text, n)))
    watch.follow(WEB, [log_rule(terms=["error"])], (1714557600, 0))
    (made,) = watch.followers.values()
    assert made.task is not None
    await made.task
    assert hits == [(b"error 1", 1), (b"error 2", 1), (b"error 3", 1)]
    assert runtime.reads == [1714557600, 1714557601, 1714557602]
    await watch.close()


class FailingStats(FakeRuntime):
    """Streams stats: the first stream fails (the runtime went away), the next one runs hot."""

    def __init__(self) -> None:
        super().__init__([summary(1)])
        self.streams = 0
        self.ended = asyncio.Event()

    async def stream_stats(self, ref: ContainerRef) -> AsyncIterator[StatsSample]:
        self.streams += 1
        if self.streams == 1:
            raise Unavailable("the daemon went away")
        yield StatsSample(summary(1).id, 99.0, 1.98, 2.0, 10.0, 1, 10, 9, 0, 0, 1)
        await self.ended.wait()  # a stream runs until the container stops (here: until left)


async def test_a_failed_stats_stream_of_a_running_container_is_sampled_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(alerts, "RESAMPLE_SECONDS", 0.0)
    runtime = FailingStats()
    rule = {"name": "hot", "when": {"condition": "cpu", "above": 50}}
    async with Service(rule, runtime=runtime) as s:
        s.state("running", "exited")
        fired = await next_event(s.heard, "alert.", timeout=10)
        assert (fired.type, fired.data["message"]) == ("alert.firing", "fake-1 uses 99.0% CPU (above 50%)")
        assert runtime.streams == 2
        assert list(s.service.stats.followed) == [("docker", "", summary(1).id)]
