"""The files of managed stacks: ``<stacks dir>/<name>/compose.yaml`` and an optional ``.env``.

A write never leaves a stack half-written: each file goes to a temporary file in the stack's
folder, is flushed to disk, then renamed over the old one. Names are checked before any path is
built from them (:mod:`.names`), so no path leaves the stacks directory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .driver import Project
from .names import is_stack_name

COMPOSE_FILE = "compose.yaml"
ENV_FILE = ".env"


@dataclass(frozen=True, slots=True)
class ManagedStack:
    """A managed stack as its files say: the services its compose file names (empty when the file
    cannot be read as YAML) and when the files last changed."""

    name: str
    directory: Path
    services: tuple[str, ...]
    updated_at: int
    has_env: bool

    def project(self) -> Project:
        env = self.directory / ENV_FILE
        return Project(
            self.name, (self.directory / COMPOSE_FILE,), self.directory, env if self.has_env else None
        )


def services_of(compose: str) -> tuple[str, ...]:
    """The service names of a compose file, in its order; none when it is not a mapping."""
    try:
        document: Any = yaml.safe_load(compose)
    except (yaml.YAMLError, RecursionError):
        # PyYAML recurses once per nesting level, and compose accepts nesting deeper than Python's
        # recursion limit (in an ``x-`` extension field, say): such a file names its services to
        # compose, but not here.
        return ()
    services = document.get("services") if isinstance(document, dict) else None
    return tuple(str(name) for name in services) if isinstance(services, dict) else ()


class StackFiles:
    def __init__(self, root: Path) -> None:
        self.root = root

    def directory(self, name: str) -> Path:
        if not is_stack_name(name):
            raise ValueError(f"not a stack name: {name!r}")
        return self.root / name

    def get(self, name: str) -> ManagedStack | None:
        """The managed stack ``name``, None when there is none (no folder with a compose file)."""
        directory = self.directory(name)
        compose = directory / COMPOSE_FILE
        try:
            # A file edited by hand may not be UTF-8: its services are still read where they can be.
            text = compose.read_text(encoding="utf-8", errors="replace")
            mtime = compose.stat().st_mtime
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        env = directory / ENV_FILE
        has_env = env.is_file()
        if has_env:
            mtime = max(mtime, env.stat().st_mtime)
        return ManagedStack(name, directory, services_of(text), int(mtime), has_env)

    def all(self) -> list[ManagedStack]:
        """Every managed stack, by name; folders that are not stacks are passed over."""
        try:
            entries = sorted(os.listdir(self.root))
        except FileNotFoundError:
            return []
        found = (self.get(entry) for entry in entries if is_stack_name(entry))
        return [stack for stack in found if stack is not None]

    def read(self, name: str) -> tuple[str, str | None] | None:
        """The compose file and the ``.env`` (None without one) of ``name``; None: no such stack."""
        directory = self.directory(name)
        # The gateway writes UTF-8 only; bytes a hand edit left that are not show as U+FFFD.
        try:
            compose = (directory / COMPOSE_FILE).read_text(encoding="utf-8", errors="replace")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        try:
            env: str | None = (directory / ENV_FILE).read_text(encoding="utf-8", errors="replace")
        except (FileNotFoundError, IsADirectoryError):
            env = None
        return compose, env

    def staging(self, name: str) -> tempfile.TemporaryDirectory[str]:
        """A private folder beside the stacks, for checking files before they replace a stack's."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        return tempfile.TemporaryDirectory(prefix=f".{name}-", dir=self.root)

    def write(self, name: str, compose: str, env: str | None) -> None:
        """Replace the files of ``name`` (creating its folder); ``env`` None removes its ``.env``.

        Each file is renamed into place whole; the compose file goes last, so a stack is never
        seen (``get``) before its ``.env`` is there.
        """
        directory = self.directory(name)
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        if env is None:
            with contextlib.suppress(FileNotFoundError):
                (directory / ENV_FILE).unlink()
        else:
            # The .env may hold secrets: readable by the gateway's user only.
            _replace(directory / ENV_FILE, env, mode=0o600)
        _replace(directory / COMPOSE_FILE, compose, mode=0o644)

    def delete(self, name: str) -> bool:
        """Remove the folder of ``name``; False when there was none."""
        directory = self.directory(name)
        if not directory.is_dir():
            return False
        shutil.rmtree(directory)
        return True


def _replace(path: Path, text: str, *, mode: int) -> None:
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fchmod(out.fileno(), mode)
            os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
