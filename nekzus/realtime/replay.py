"""The replay buffer: the last events the hub sent, numbered, for clients that come back.

Each broadcast event gets the next ``seq`` of this gateway process and the process's ``epoch`` (a
random id made at start, so that a client can tell a ``seq`` from an earlier life). The buffer keeps
the serialised message (the very string the hub sends, not a copy) of at most ``max_events`` events,
none older than ``max_age`` seconds, in a ring indexed by ``seq``: a lookup costs the same at any
depth, and the memory is one slot per event plus the event's own text.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Entry:
    seq: int
    type: str
    at: float  # on the buffer's (monotonic) clock
    text: str  # the message as sent: {"type": …, "data": {…, "seq": …, "epoch": …}}


class Expired(Exception):
    """Events after the asked ``seq`` have left the buffer (or it is from another epoch)."""


class ReplayBuffer:
    def __init__(
        self, *, max_events: int, max_age: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.epoch = secrets.token_hex(8)
        self.seq = 0  # the last number given out; events start at 1
        self.max_events = max_events
        self.max_age = max_age
        self._clock = clock
        self._ring: list[Entry | None] = [None] * max_events
        self._first = 1  # the oldest seq still kept (seq + 1 when none is)

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def keep(self, seq: int, type_: str, text: str) -> None:
        """Keep the event numbered ``seq`` (the last one given out), dropping what it pushes out."""
        if not self.max_events:
            self._first = seq + 1
            return
        at = self._clock()
        self._ring[seq % self.max_events] = Entry(seq, type_, at, text)
        self._first = max(self._first, seq - self.max_events + 1)
        self._drop_older_than(at - self.max_age)

    def _drop_older_than(self, cutoff: float) -> None:
        while self._first <= self.seq:
            entry = self._ring[self._first % self.max_events]
            if entry is None or entry.seq != self._first or entry.at >= cutoff:
                return
            self._ring[self._first % self.max_events] = None
            self._first += 1

    @property
    def first(self) -> int:
        """The oldest ``seq`` that can still be replayed (``seq + 1`` when the buffer is empty)."""
        if self.max_events:
            self._drop_older_than(self._clock() - self.max_age)
        return self._first

    def __len__(self) -> int:
        return self.seq - self._first + 1

    def check(self, epoch: str | None, after: int) -> None:
        """Raise Expired unless every event after ``after`` of ``epoch`` can be replayed.

        ``after`` beyond the current ``seq`` cannot come from this epoch either.
        """
        if epoch is not None and epoch != self.epoch:
            raise Expired
        if after > self.seq or after < self.first - 1:
            raise Expired

    def next_after(self, after: int) -> Entry | None:
        """The event numbered ``after + 1``; None when ``after`` is the last one. Expired when it
        has left the buffer meanwhile (a reader far behind a fast stream)."""
        if after >= self.seq:
            return None
        if after + 1 < self._first:
            raise Expired
        entry = self._ring[(after + 1) % self.max_events]
        assert entry is not None and entry.seq == after + 1
        return entry

    def since(self, after: int) -> Iterator[Entry]:
        """The events after ``after`` still kept, oldest first (call :meth:`check` first)."""
        for seq in range(max(after + 1, self.first), self.seq + 1):
            entry = self._ring[seq % self.max_events]
            assert entry is not None
            yield entry
