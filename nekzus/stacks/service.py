"""What the gateway holds for stacks: the managed files, the compose driver, and which action runs
on which stack now (Komodo's action state), so a second action is refused rather than queued."""

from __future__ import annotations

import os
from pathlib import Path

from aiohttp import web

from ..errors import ApiError
from .driver import ComposeDriver, Project
from .files import StackFiles
from .model import Stack


class Stacks:
    def __init__(self, files: StackFiles, driver: ComposeDriver | None, *, unavailable: str = "") -> None:
        self.files = files
        self._driver = driver
        # Why there is no driver: stacks are off, no Docker runtime, no compose binary.
        self._unavailable = unavailable
        self._busy: dict[str, str] = {}

    @property
    def driver(self) -> ComposeDriver:
        """The compose driver; without one, ``503 COMPOSE_UNAVAILABLE`` saying why."""
        if self._driver is None:
            raise ApiError(503, "COMPOSE_UNAVAILABLE", self._unavailable or "Docker Compose is not available")
        return self._driver

    def busy(self, name: str) -> str | None:
        """The action running on stack ``name`` now, None when it is idle."""
        return self._busy.get(name)

    def claim(self, name: str, action: str) -> None:
        """Mark ``name`` busy with ``action``; ``409 STACK_BUSY`` when another action runs on it.
        The caller releases it when the action ends, however it ends."""
        running = self._busy.get(name)
        if running is not None:
            raise ApiError(
                409,
                "STACK_BUSY",
                f"Stack {name!r} is busy with {running}; try again when it ends",
                busy=running,
            )
        self._busy[name] = action

    def release(self, name: str) -> None:
        self._busy.pop(name, None)

    def project(self, stack: Stack) -> Project | None:
        """How compose addresses ``stack``: a managed stack's own files, else the files compose
        recorded when it started the project, if the gateway can read every one of them; None
        when it cannot (such a stack is driven through the Engine only)."""
        if stack.managed is not None:
            return stack.managed.project()
        if not stack.config_files or not stack.working_dir:
            return None
        files = tuple(Path(f) for f in stack.config_files)
        if not all(f.is_absolute() and os.access(f, os.R_OK) and f.is_file() for f in files):
            return None
        directory = Path(stack.working_dir)
        env = directory / ".env"
        return Project(
            stack.name, files, directory, env if os.access(env, os.R_OK) and env.is_file() else None
        )

    async def close(self) -> None:
        if self._driver is not None:
            await self._driver.close()


STACKS: web.AppKey[Stacks] = web.AppKey("stacks", Stacks)
