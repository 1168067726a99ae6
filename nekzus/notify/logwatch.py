"""The logs log rules watch: one follower per container, shared by every log rule that selects it.

Only containers that a log rule names or selects by label are followed. A follower reads the
runtime's follow stream with time stamps, strips them, and searches each block of whole lines at
C speed (:meth:`~nekzus.notify.alert_rules.Rule.matches`), so lines that match nothing cost no
Python step each. The time stamp of the last line read is where a broken stream picks up again
(``since``), and lines at or before it are skipped, so no line is matched twice. A follower ends
when its container stops; the next start resumes it from where it was, and the container's
removal forgets it.

WebSocket log subscribers are not shared with: each of them asks for its own tail, ``since`` and
stream selection and applies its own backpressure, which would let one slow reader hold up the
rules' matching.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from runtimes import ContainerRef, ContainerRuntime, NotFound, RuntimeFailure, RuntimeRegistry
from runtimes.loglines import LineSplitter

from ..realtime.logstream import RESUME_FIRST, RESUME_MAX, stamp_nanos
from ..tasks import TaskGroup
from .alert_rules import Rule, Subject, SubjectKey

log = logging.getLogger(__name__)

Hit = Callable[[Rule, Subject, bytes, int], None]
# A line's time stamp and the space after it (a line holding nothing has no space).
_STAMP = re.compile(rb"^[^ \n]* ?", re.MULTILINE)


def _stamp_at(block: bytes, pos: int) -> tuple[int, int]:
    """The time of the line that starts at ``pos`` of a block of whole lines."""
    end = block.find(b"\n", pos)
    space = block.find(b" ", pos, end)
    return stamp_nanos(block[pos : space if space >= 0 else end].decode("ascii", "replace"))


@dataclass(eq=False)
class LogFollower:
    """One container's log, read for the log rules that select it."""

    runtime: ContainerRuntime
    subject: Subject
    rules: Sequence[Rule]
    hit: Hit
    # (seconds, nanoseconds) of the last line read: lines at or before it are not matched.
    last: tuple[int, int]
    again: bool = False  # the container started again while the follower was ending
    lines: int = 0  # read and searched, for the benchmark
    task: asyncio.Task[None] | None = None
    _skipping: bool = True

    def scan(self, block: bytes) -> None:
        """Match a block of whole lines (each ``<time stamp> <text>\\n``) against the rules."""
        if self._skipping:
            block = self._skip_read(block)
            if not block:
                return
        # Resume point: the time of the block's last line (stdout and stderr come in blocks of
        # their own, so the newest time seen is kept).
        self.last = max(self.last, _stamp_at(block, block.rfind(b"\n", 0, len(block) - 1) + 1))
        text = _STAMP.sub(b"", block)
        self.lines += text.count(b"\n")
        for rule in self.rules:
            matched = rule.matches(text)
            if matched:
                self.hit(rule, self.subject, matched[-1], len(matched))

    def _skip_read(self, block: bytes) -> bytes:
        """``block`` without its leading lines at or before the resume point."""
        pos = 0
        while pos < len(block):
            end = block.find(b"\n", pos)
            if _stamp_at(block, pos) > self.last:
                self._skipping = False
                return block[pos:]
            pos = end + 1
        return b""

    async def run(self) -> None:
        """Follow until the container stops (or is gone); reconnect from the last line read when
        the stream breaks while it runs."""
        ref = ContainerRef(self.subject.container_id, self.subject.namespace)
        delay = RESUME_FIRST
        while True:
            self.again = False
            before = self.last
            try:
                await self._read(ref)
                current = await self.runtime.get(ref)
            except NotFound:
                return
            except RuntimeFailure as exc:
                if delay == RESUME_FIRST:  # once per outage, not at every try
                    log.info("following the log of %s for alerts: %s", self.subject.name, exc)
            else:
                if not current.state.is_running and not self.again:
                    return
            if self.last == before:
                # Nothing read: a stream that keeps ending at once (or a runtime away) backs off.
                await asyncio.sleep(delay)
                delay = min(delay * 2, RESUME_MAX)
            else:
                delay = RESUME_FIRST

    async def _read(self, ref: ContainerRef) -> None:
        self._skipping = True
        splitter = LineSplitter()
        async for chunk in self.runtime.logs(
            ref, follow=True, tail=None, timestamps=True, since=self.last[0]
        ):
            if chunk.data and (block := splitter.feed(chunk.stream, chunk.data)):
                self.scan(block)
        for _, rest in splitter.flush():
            self.scan(rest + b"\n")


class LogWatch:
    """The followers of every container log rules select, each an owned task."""

    def __init__(self, registry: RuntimeRegistry, hit: Hit) -> None:
        self._registry = registry
        self._hit = hit
        self._followers: dict[SubjectKey, LogFollower] = {}
        # Where each stopped container's follower was, for its next start.
        self._resume: dict[SubjectKey, tuple[int, int]] = {}
        self._tasks = TaskGroup()

    @property
    def followers(self) -> dict[SubjectKey, LogFollower]:
        return self._followers

    def follow(self, subject: Subject, rules: Sequence[Rule], since: tuple[int, int]) -> None:
        """Follow ``subject``'s log for ``rules`` from where its last follower was, else from
        ``since`` (seconds, nanoseconds); a follower that is ending goes on instead."""
        key = subject.key
        follower = self._followers.get(key)
        if follower is not None:
            follower.again = True
            return
        try:
            runtime = self._registry.get(subject.runtime)
        except LookupError:
            return
        follower = LogFollower(runtime, subject, rules, self._hit, self._resume.pop(key, since))
        self._followers[key] = follower
        follower.task = self._tasks.spawn(
            follower.run(), name=f"alert-log-{subject.runtime}-{subject.container_id}"
        )
        follower.task.add_done_callback(lambda _: self._ended(key, follower))

    def _ended(self, key: SubjectKey, follower: LogFollower) -> None:
        if self._followers.get(key) is follower:
            del self._followers[key]
            self._resume[key] = follower.last

    def drop(self, key: SubjectKey) -> None:
        """The container is gone: stop following it and forget where it was."""
        follower = self._followers.pop(key, None)
        self._resume.pop(key, None)
        if follower is not None and follower.task is not None:
            follower.task.cancel()

    async def close(self) -> None:
        await self._tasks.close()
