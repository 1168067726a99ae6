"""A container's state as the Engine words it, and the lifetime its status line is rendered from."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from ..base import ContainerState, ContainerSummary

# Docker's states that are not the contract's own: a dead container (it failed to stop cleanly)
# and one being removed are "stopped"; a container whose process ended is "exited".
_STATES: Mapping[str, ContainerState] = {
    "running": ContainerState.RUNNING,
    "paused": ContainerState.PAUSED,
    "restarting": ContainerState.RESTARTING,
    "created": ContainerState.CREATED,
    "exited": ContainerState.EXITED,
    "dead": ContainerState.STOPPED,
    "removing": ContainerState.STOPPED,
}


def map_state(docker_state: str) -> ContainerState:
    return _STATES.get(docker_state.lower(), ContainerState.STOPPED)


def parse_timestamp(value: str) -> int:
    """Whole Unix seconds of an Engine RFC 3339 time (see :func:`parse_time`)."""
    return int(parse_time(value))


def parse_time(value: str) -> float:
    """Unix seconds, with the fraction, of an Engine RFC 3339 time; 0 for Go's zero time or junk."""
    if not value or value.startswith("0001-"):
        return 0.0
    head, dot, rest = value.partition(".")
    if dot:
        digits = len(rest) - len(rest.lstrip("0123456789"))
        # Python reads at most microseconds: the Engine writes nanoseconds.
        value = f"{head}.{rest[:digits][:6].ljust(6, '0')}{rest[digits:]}"
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return 0.0
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def human_duration(seconds: float) -> str:
    """A duration as the Docker CLI writes it in a status line (go-units' ``HumanDuration``)."""
    whole = int(seconds)
    if whole < 1:
        return "Less than a second"
    if whole == 1:
        return "1 second"
    if whole < 60:
        return f"{whole} seconds"
    minutes = int(seconds / 60)
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = int(seconds / 3600 + 0.5)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(seconds / 3600) // 24 // 365} years"


@dataclass(frozen=True, slots=True)
class Lifetime:
    """What the Engine renders a container's status line from (its ``State``), kept so that the
    line can be rendered again later instead of aging: "Up 5 minutes" is true for one minute."""

    status: str  # the Engine's own word: running, paused, restarting, exited, created, dead, removing
    started_at: float
    finished_at: float
    exit_code: int
    health: str | None

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Lifetime:
        return cls(
            status=str(state.get("Status", "")),
            started_at=parse_time(str(state.get("StartedAt", ""))),
            finished_at=parse_time(str(state.get("FinishedAt", ""))),
            exit_code=int(state.get("ExitCode") or 0),
            health=(state.get("Health") or {}).get("Status") or None,
        )

    def status_line(self, now: float) -> str:
        """The status the Engine would show at ``now`` (its ``State.String()``)."""
        if self.status in ("running", "paused", "restarting"):
            if self.status == "paused":
                return f"Up {human_duration(now - self.started_at)} (Paused)"
            if self.status == "restarting":
                return f"Restarting ({self.exit_code}) {human_duration(now - self.finished_at)} ago"
            up = f"Up {human_duration(now - self.started_at)}"
            if self.health:
                return f"{up} (health: starting)" if self.health == "starting" else f"{up} ({self.health})"
            return up
        if self.status == "removing":
            return "Removal In Progress"
        if self.status == "dead":
            return "Dead"
        if not self.started_at:
            return "Created"
        if not self.finished_at:
            return ""
        return f"Exited ({self.exit_code}) {human_duration(now - self.finished_at)} ago"


@dataclass(frozen=True, slots=True)
class DockerRow:
    """A container's list row as a state model keeps it: the row, and its lifetime for the status."""

    summary: ContainerSummary
    lifetime: Lifetime

    def at(self, now: float) -> ContainerSummary:
        return replace(self.summary, status=self.lifetime.status_line(now))
