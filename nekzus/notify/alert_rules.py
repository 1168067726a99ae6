"""The state machine of alert rules: per (rule, container), a condition that holds or clears over
time, turned into alerts that fire once and resolve once.

It knows nothing of where conditions come from (events, stats samples, log lines: see
``nekzus/notify/alerts.py``) nor of tasks: its clock is injected, and the caller asks
:meth:`AlertBook.advance` to apply what is due and answer when to ask again, so every timing rule
is tested without sleeping.

- ``for``: a condition must hold that long before its alert fires; one that clears sooner was
  only *pending* and is forgotten without a word.
- ``cooldown``: a firing alert resolves once its condition has stayed clear that long; a
  condition back sooner is the same alert (its ``count`` grows), so a flapping container
  notifies once.
- Some conditions clear by themselves: a log rule's after ``quiet`` seconds without a match, a
  restart loop's when fewer than ``restarts`` restarts fall in the trailing ``within`` window.
"""

from __future__ import annotations

import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ..config import AlertRuleConfig
from ..logsearch import LogSearch

Clock = Callable[[], float]
Publish = Callable[[str, Mapping[str, Any]], None]
SubjectKey = tuple[str, str, str]  # (runtime, namespace, container id)
MESSAGE_CHARS = 512  # of a log line quoted in an alert's message


@dataclass(frozen=True, slots=True)
class Subject:
    """The container an alert is about."""

    runtime: str
    namespace: str
    container_id: str
    name: str

    @property
    def key(self) -> SubjectKey:
        return (self.runtime, self.namespace, self.container_id)


class Rule:
    """A configured rule, compiled: which containers it watches and, for a log rule, its searches."""

    def __init__(self, config: AlertRuleConfig) -> None:
        self.config = config
        self.name = config.name
        self.when = config.when
        self.condition = config.when.condition
        self._containers = frozenset(config.when.containers)
        self._labels = dict(config.when.labels)
        # Terms: every one, in any case. A pattern: RE2, case as written ((?i) folds it); the
        # configuration refused a pattern RE2 cannot run, naming its key.
        self.searches: list[LogSearch] = []
        if self.when.terms:
            self.searches.append(LogSearch(self.when.terms))
        if self.when.pattern:
            self.searches.append(LogSearch([self.when.pattern], regex=True, case_sensitive=True))

    def selects(self, container_id: str, name: str, labels: Mapping[str, str]) -> bool:
        """Whether the rule watches this container: named (by name, id or an id's prefix of at
        least 12 characters) when the rule names containers, carrying its labels when it has any."""
        if self._containers and not (
            name in self._containers
            or container_id in self._containers
            or any(len(c) >= 12 and c[:12] == container_id[:12] for c in self._containers)
        ):
            return False
        return all(labels.get(k) == v for k, v in self._labels.items())

    def matches(self, block: bytes) -> list[bytes]:
        """The lines of ``block`` (whole lines, newline-terminated, without time stamps) that
        match: the block is searched at C speed, only the hits are looked at."""
        spans: set[tuple[int, int]] = set()
        for search in self.searches:
            spans.update(search.hits(block))
        return [block[start:end] for start, end in sorted(spans)]


@dataclass(eq=False)
class Alert:
    rule: Rule
    subject: Subject
    message: str
    value: float | None
    since: int  # Unix seconds: when the condition first held
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    state: Literal["pending", "firing"] = "pending"
    count: int = 1  # times the condition came on within this alert
    held: bool = True
    # Monotonic times: the alert fires (pending), resolves (firing, clear), or the condition
    # clears by itself (held), at these.
    fires_at: float = 0.0
    resolves_at: float = 0.0
    expires_at: float | None = None

    def data(self, timestamp: int) -> dict[str, Any]:
        """The ``alert.*`` event data (and list entry) of this alert."""
        s = self.subject
        return {
            "rule": self.rule.name,
            "alertId": self.id,
            "condition": self.rule.condition,
            "containerId": s.container_id,
            "name": s.name,
            "runtime": s.runtime,
            "namespace": s.namespace,
            "message": self.message,
            "value": self.value,
            "count": self.count,
            "since": self.since,
            "timestamp": timestamp,
        }

    def to_json(self) -> dict[str, Any]:
        """The alert as ``GET /api/v1/alerts`` lists it: its event data, and whether it is firing
        or still pending (held for less than its rule's ``for``)."""
        data = self.data(0)
        del data["timestamp"]
        return {**data, "state": self.state}

    def next_time(self) -> float | None:
        """When something is due for this alert, None if nothing is."""
        if not self.held:
            return self.resolves_at
        if self.state == "pending":
            return self.fires_at if self.expires_at is None else min(self.fires_at, self.expires_at)
        return self.expires_at


class AlertBook:
    """Every active alert (pending or firing), keyed by (rule, container)."""

    def __init__(
        self,
        rules: Sequence[Rule],
        publish: Publish,
        *,
        clock: Clock = time.monotonic,
        wall: Clock = time.time,
    ) -> None:
        self.rules = list(rules)
        self._publish = publish
        self._clock = clock
        self._wall = wall
        self._alerts: dict[tuple[str, SubjectKey], Alert] = {}
        # The latest restarts of each (restart_loop rule, container), at most `restarts` of them.
        self._restarts: dict[tuple[str, SubjectKey], deque[float]] = {}

    # -- conditions ----------------------------------------------------------------------------

    def hold(self, rule: Rule, subject: Subject, message: str, value: float | None = None) -> Alert:
        """The rule's condition holds for ``subject`` now."""
        now = self._clock()
        key = (rule.name, subject.key)
        alert = self._alerts.get(key)
        if alert is None:
            alert = Alert(rule, subject, message, value, since=int(self._wall()))
            alert.fires_at = now + rule.config.for_
            self._alerts[key] = alert
        elif not alert.held:
            # Back within the cooldown: the same alert, once more.
            alert.held = True
            alert.count += 1
        alert.message, alert.value = message, value
        if alert.state == "pending" and alert.fires_at <= now:
            self._fire(alert)
        return alert

    def clear(self, rule: Rule, subject: Subject) -> None:
        """The rule's condition no longer holds for ``subject``."""
        alert = self._alerts.get((rule.name, subject.key))
        if alert is not None and alert.held:
            self._clear(alert, self._clock())

    def hit(self, rule: Rule, subject: Subject, line: bytes, lines: int) -> None:
        """``lines`` log lines matched a log rule, the last of them ``line``: the condition holds
        until ``quiet`` seconds pass without another."""
        text = line.decode("utf-8", "replace").strip()[:MESSAGE_CHARS]
        previous = self._alerts.get((rule.name, subject.key))
        seen = previous.value or 0 if previous is not None else 0
        alert = self.hold(rule, subject, f"{subject.name} logged: {text}", seen + lines)
        alert.expires_at = self._clock() + rule.when.quiet

    def restart(self, rule: Rule, subject: Subject) -> None:
        """``subject`` restarted: a restart loop once ``restarts`` fall within ``within`` seconds."""
        now = self._clock()
        key = (rule.name, subject.key)
        window = self._restarts.setdefault(key, deque(maxlen=rule.when.restarts))
        window.append(now)
        if len(window) < rule.when.restarts or window[0] <= now - rule.when.within:
            return
        alert = self.hold(
            rule,
            subject,
            f"{subject.name} restarted {len(window)} times within {rule.when.within:g} s",
            len(window),
        )
        # The condition clears when the oldest of these restarts leaves the window.
        alert.expires_at = window[0] + rule.when.within

    def forget(self, key: SubjectKey) -> None:
        """The container is gone: its firing alerts resolve now, its pending ones are dropped."""
        for alert_key, alert in list(self._alerts.items()):
            if alert_key[1] != key:
                continue
            if alert.state == "firing":
                self._resolve(alert)
            else:
                del self._alerts[alert_key]
        for restart_key in [k for k in self._restarts if k[1] == key]:
            del self._restarts[restart_key]

    # -- time ----------------------------------------------------------------------------------

    def advance(self) -> float | None:
        """Apply what is due by now, in the order it fell due; answer the next time (on the
        injected clock) anything is due, None when nothing is."""
        now = self._clock()
        for alert in list(self._alerts.values()):
            while (due := alert.next_time()) is not None and due <= now:
                self._due(alert, due)
                if self._alerts.get((alert.rule.name, alert.subject.key)) is not alert:
                    break
        times = [t for a in self._alerts.values() if (t := a.next_time()) is not None]
        return min(times) if times else None

    def _due(self, alert: Alert, due: float) -> None:
        if alert.held and alert.expires_at is not None and alert.expires_at == due:
            alert.expires_at = None
            self._clear(alert, due)
        elif alert.held:  # pending, and held long enough
            self._fire(alert)
        else:
            self._resolve(alert)

    # -- transitions ---------------------------------------------------------------------------

    def _clear(self, alert: Alert, at: float) -> None:
        alert.expires_at = None
        if alert.state == "pending":
            del self._alerts[(alert.rule.name, alert.subject.key)]
            return
        alert.held = False
        alert.resolves_at = at + alert.rule.config.cooldown
        if alert.resolves_at <= self._clock():
            self._resolve(alert)

    def _fire(self, alert: Alert) -> None:
        alert.state = "firing"
        self._publish("alert.firing", alert.data(int(self._wall())))

    def _resolve(self, alert: Alert) -> None:
        del self._alerts[(alert.rule.name, alert.subject.key)]
        stamp = int(self._wall())
        self._publish("alert.resolved", {**alert.data(stamp), "resolvedAt": stamp})

    # -- reading -------------------------------------------------------------------------------

    def active(self, rule: str | None = None) -> list[Alert]:
        """The pending and firing alerts (of ``rule``), oldest first."""
        return [a for a in self._alerts.values() if rule is None or a.rule.name == rule]
