"""The alert rules' state machine on an injected clock: for, cooldown, flapping, restart windows,
log quiet, removals; and the rules' selection and log matching."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from pydantic import ValidationError

from nekzus.config import AlertRuleConfig, Config
from nekzus.notify.alert_rules import AlertBook, Rule, Subject

WEB = Subject("docker", "", "aaaaaaaaaaaa", "web")
DB = Subject("docker", "", "bbbbbbbbbbbb", "db")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Book:
    """An AlertBook on a fake clock, with the events it published."""

    def __init__(self, *rules: dict[str, Any]) -> None:
        self.clock = Clock()
        self.events: list[tuple[str, Mapping[str, Any]]] = []
        self.rules = [Rule(AlertRuleConfig(**r)) for r in rules]
        self.book = AlertBook(
            self.rules, lambda t, d: self.events.append((t, d)), clock=self.clock, wall=lambda: 1_700_000_000
        )

    def at(self, seconds: float) -> float | None:
        self.clock.now = 1000.0 + seconds
        return self.book.advance()

    def types(self) -> list[str]:
        return [t for t, _ in self.events]


def rule(condition: str = "exited", **extra: Any) -> dict[str, Any]:
    when = {"condition": condition, **extra.pop("when", {})}
    return {"name": f"r-{condition}", "when": when, **extra}


def test_fires_at_once_and_resolves_after_the_cooldown() -> None:
    b = Book(rule(cooldown=30))
    r = b.rules[0]
    b.book.hold(r, WEB, "web exited with code 137", 137)
    assert b.types() == ["alert.firing"]
    fired = b.events[0][1]
    assert fired["rule"] == "r-exited" and fired["value"] == 137 and fired["count"] == 1
    assert fired["containerId"] == WEB.container_id and fired["since"] == 1_700_000_000
    b.at(5)
    b.book.clear(r, WEB)
    assert b.at(34) == 1035.0  # the cooldown runs from the clear
    assert b.types() == ["alert.firing"]
    assert b.at(35) is None
    assert b.types() == ["alert.firing", "alert.resolved"]
    resolved = b.events[1][1]
    assert resolved["alertId"] == fired["alertId"] and resolved["resolvedAt"] == 1_700_000_000
    assert b.book.active() == []


def test_for_holds_back_a_condition_that_clears_sooner() -> None:
    b = Book(rule("exited", **{"for": 10, "cooldown": 0}))
    r = b.rules[0]
    b.book.hold(r, WEB, "down")
    assert b.at(0) == 1010.0
    assert [a.state for a in b.book.active()] == ["pending"]
    b.at(9)
    b.book.clear(r, WEB)
    assert b.at(20) is None
    assert b.events == [] and b.book.active() == []
    b.book.hold(r, WEB, "down")
    b.at(29)
    assert b.events == []
    b.at(30)
    assert b.types() == ["alert.firing"]
    b.book.clear(r, WEB)  # cooldown 0: resolves at once
    assert b.types() == ["alert.firing", "alert.resolved"]


def test_a_flapping_container_notifies_once_and_its_count_grows() -> None:
    b = Book(rule(cooldown=60))
    r = b.rules[0]
    for second in range(0, 100, 10):
        b.at(second)
        b.book.hold(r, WEB, "down")
        b.at(second + 5)
        b.book.clear(r, WEB)
    assert b.types() == ["alert.firing"]
    (alert,) = b.book.active()
    assert alert.count == 10 and alert.state == "firing"
    b.at(95 + 59)
    assert b.types() == ["alert.firing"]
    b.at(95 + 60)
    assert b.types() == ["alert.firing", "alert.resolved"]
    assert b.events[1][1]["count"] == 10


def test_one_alert_per_rule_and_container() -> None:
    b = Book(rule(), rule("oom"))
    exited, oom = b.rules
    b.book.hold(exited, WEB, "x")
    b.book.hold(exited, WEB, "x again")
    b.book.hold(exited, DB, "y")
    b.book.hold(oom, WEB, "z")
    assert len({d["alertId"] for _, d in b.events}) == 3
    assert {(a.rule.name, a.subject.name) for a in b.book.active()} == {
        ("r-exited", "web"),
        ("r-exited", "db"),
        ("r-oom", "web"),
    }
    assert [a.subject.name for a in b.book.active("r-oom")] == ["web"]


def test_restart_loop_fires_on_the_nth_restart_within_the_window_and_clears_as_they_age() -> None:
    b = Book(rule("restart_loop", when={"restarts": 3, "within": 60}, cooldown=10))
    r = b.rules[0]
    for second in (0, 40, 70):  # 0 and 70 are 70 s apart: never three within 60 s
        b.at(second)
        b.book.restart(r, WEB)
    assert b.events == []
    b.at(80)
    b.book.restart(r, WEB)  # 40, 70, 80
    assert b.types() == ["alert.firing"]
    assert b.events[0][1]["value"] == 3
    assert b.at(81) == 1100.0  # 40 leaves the window at 100
    b.at(99)
    b.book.restart(r, WEB)  # 70, 80, 99: still a loop, now until 130
    b.at(129)
    assert b.types() == ["alert.firing"]
    assert b.at(130) == 1140.0  # clear since 130, resolves after the cooldown
    b.at(140)
    assert b.types() == ["alert.firing", "alert.resolved"]


def test_a_late_timer_applies_what_fell_due_in_order() -> None:
    b = Book(rule("restart_loop", when={"restarts": 2, "within": 10}, cooldown=5, **{"for": 3}))
    r = b.rules[0]
    b.book.restart(r, WEB)
    b.at(1)
    b.book.restart(r, WEB)
    # Held from 1, fires at 4, clears at 10 (the first restart ages out), resolves at 15.
    b.at(100)
    assert b.types() == ["alert.firing", "alert.resolved"]


def test_log_hits_hold_until_quiet() -> None:
    b = Book(rule("log", when={"containers": ["web"], "terms": ["error"], "quiet": 30}, cooldown=0))
    r = b.rules[0]
    b.book.hit(r, WEB, b"ERROR: disk full", 2)
    b.at(20)
    b.book.hit(r, WEB, b"ERROR: disk still full", 1)
    assert b.types() == ["alert.firing"]
    (alert,) = b.book.active()
    assert alert.value == 3 and alert.message == "web logged: ERROR: disk still full"
    assert b.at(49) == 1050.0
    b.at(50)
    assert b.types() == ["alert.firing", "alert.resolved"]


def test_a_removed_container_resolves_its_firing_alerts_and_drops_pending_ones() -> None:
    b = Book(rule(cooldown=600), rule("oom", **{"for": 60}))
    exited, oom = b.rules
    b.book.hold(exited, WEB, "x")
    b.book.clear(exited, WEB)
    b.book.hold(oom, WEB, "y")
    b.book.hold(exited, DB, "z")
    b.book.forget(WEB.key)
    assert b.types() == ["alert.firing", "alert.firing", "alert.resolved"]
    assert [a.subject.name for a in b.book.active()] == ["db"]


def test_pending_alerts_are_listed_as_pending() -> None:
    b = Book(rule("cpu", when={"above": 50}, **{"for": 30}))
    r = b.rules[0]
    b.book.hold(r, WEB, "hot", 93.5)
    (listed,) = [a.to_json() for a in b.book.active()]
    assert listed["state"] == "pending" and listed["value"] == 93.5 and "timestamp" not in listed


def test_rules_select_by_name_id_prefix_and_labels() -> None:
    named = Rule(AlertRuleConfig(**rule(when={"containers": ["web", "bbbbbbbbbbbbffff"]})))
    labelled = Rule(AlertRuleConfig(**rule(when={"labels": {"tier": "front"}})))
    both = Rule(AlertRuleConfig(**rule(when={"containers": ["web"], "labels": {"tier": "front"}})))
    anything = Rule(AlertRuleConfig(**rule()))
    assert named.selects("aaaaaaaaaaaa", "web", {})
    assert named.selects("bbbbbbbbbbbb", "db", {})
    assert not named.selects("cccccccccccc", "webby", {})
    assert labelled.selects("x", "y", {"tier": "front", "other": "1"})
    assert not labelled.selects("x", "y", {"tier": "back"})
    assert not both.selects("x", "web", {}) and both.selects("x", "web", {"tier": "front"})
    assert anything.selects("x", "y", {})


def test_log_rules_match_every_term_in_any_case_or_the_pattern() -> None:
    when = {"containers": ["web"], "terms": ["disk", "FULL"], "pattern": "^panic: [a-z]+$"}
    r = Rule(AlertRuleConfig(**rule("log", when=when)))
    block = b"disk is Full\ndisk ok\npanic: boom\nnot panic: boom\nPANIC: boom\n"
    assert r.matches(block) == [b"disk is Full", b"panic: boom"]


@pytest.mark.parametrize(
    ("when", "says"),
    [
        ({"condition": "log", "containers": ["web"], "pattern": "(a"}, "missing )"),
        ({"condition": "log", "containers": ["web"], "pattern": "(a)\\1"}, "cannot be used"),
        ({"condition": "log", "terms": ["x"]}, "needs containers or labels"),
        ({"condition": "cpu"}, "needs above"),
        ({"condition": "cpu", "above": float("nan")}, "above"),
        ({"condition": "exited", "surprise": 1}, "surprise"),
    ],
)
def test_bad_rules_stop_the_start_naming_the_key(when: dict[str, Any], says: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Config(alerts=[{"name": "bad", "when": when}])
    text = str(caught.value)
    assert "alerts.0.when" in text and says in text
