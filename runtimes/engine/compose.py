"""A runtime whose Engine Docker Compose can drive: compose is pointed at the same ``host``."""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class ComposeEngine(Protocol):
    name: str
    # The Engine's address as DOCKER_HOST takes it (unix://… or tcp://…).
    host: str
