"""Stacks as the Engine shows them: its containers grouped by their compose labels, joined with
the managed stacks' files. Built from one read of the containers (the warm state model when there
is one), never by running compose."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from runtimes import ContainerSummary

from .files import ManagedStack

PROJECT = "com.docker.compose.project"
SERVICE = "com.docker.compose.service"
CONFIG_FILES = "com.docker.compose.project.config_files"
WORKING_DIR = "com.docker.compose.project.working_dir"
ONEOFF = "com.docker.compose.oneoff"

Status = Literal["running", "partial", "stopped", "unknown"]
STATUSES: tuple[Status, ...] = ("running", "partial", "stopped", "unknown")

# What compose can do to a stack whose files the gateway reads, and the part of it the Engine
# alone can do (a discovered stack whose files it cannot read).
COMPOSE_ACTIONS = ("deploy", "start", "stop", "restart", "pause", "unpause", "pull", "down")
ENGINE_ACTIONS = ("start", "stop", "restart", "pause", "unpause")


@dataclass(frozen=True, slots=True)
class Stack:
    """One stack: its containers (``docker compose run`` one-offs left out), the services they and
    the managed files name, and where compose found its files when it started them."""

    name: str
    containers: tuple[ContainerSummary, ...]
    services: tuple[str, ...]
    managed: ManagedStack | None
    config_files: tuple[str, ...]
    working_dir: str

    @property
    def is_managed(self) -> bool:
        return self.managed is not None

    def containers_of(self, service: str) -> list[ContainerSummary]:
        return [c for c in self.containers if c.labels.get(SERVICE) == service]

    def service_status(self, service: str) -> Status:
        """running: each of the service's containers runs; partial: some do; stopped: none does
        (or it has no container, a service of the managed file never started)."""
        started = [c.state.is_started for c in self.containers_of(service)]
        if not any(started):
            return "stopped"
        return "running" if all(started) else "partial"

    @property
    def running_services(self) -> int:
        """Services with at least one running container."""
        return len({c.labels.get(SERVICE, "") for c in self.containers if c.state.is_started})

    @property
    def status(self) -> Status:
        """running: every service runs; partial: some do; stopped: none does; unknown: nothing tells
        (a managed file that names no services, and no containers)."""
        if not self.services:
            return "unknown"
        running = self.running_services
        if running == 0:
            return "stopped"
        return "running" if running >= len(self.services) else "partial"

    @property
    def updated_at(self) -> int:
        """When the stack last changed: its files' time, or its newest container's creation."""
        times = [c.created for c in self.containers]
        if self.managed is not None:
            times.append(self.managed.updated_at)
        return max(times, default=0)


def project_of(container: ContainerSummary) -> str | None:
    """The compose project a container belongs to; None for a loose container or a one-off."""
    project = container.labels.get(PROJECT)
    if not project or container.labels.get(ONEOFF, "").lower() == "true":
        return None
    return project


def group_stacks(containers: Iterable[ContainerSummary], managed: Iterable[ManagedStack]) -> dict[str, Stack]:
    """Every stack the containers and the managed files make, by name."""
    by_project: dict[str, list[ContainerSummary]] = {}
    for c in containers:
        project = project_of(c)
        if project is not None:
            by_project.setdefault(project, []).append(c)
    files: Mapping[str, ManagedStack] = {m.name: m for m in managed}
    stacks: dict[str, Stack] = {}
    for name in sorted(by_project.keys() | files.keys()):
        members = sorted(by_project.get(name, ()), key=lambda c: (c.labels.get(SERVICE, ""), c.name))
        own = files.get(name)
        services = list(own.services if own is not None else ())
        for c in members:
            service = c.labels.get(SERVICE, "")
            if service and service not in services:
                services.append(service)
        first = members[0].labels if members else {}
        config_files = tuple(f for f in first.get(CONFIG_FILES, "").split(",") if f)
        stacks[name] = Stack(
            name=name,
            containers=tuple(members),
            services=tuple(services),
            managed=own,
            config_files=config_files,
            working_dir=first.get(WORKING_DIR, ""),
        )
    return stacks
