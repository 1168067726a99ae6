"""Reading a container's log as lines, and searching it, without holding the log in memory.

The runtime's chunks go through :class:`~runtimes.loglines.LineSplitter` into blocks of whole
lines. A search looks for its first term in a whole block at C speed (``bytes.find`` for a plain
term, one RE2 program for patterns) and only then looks at the line a hit falls in, so the
lines that do not match cost no Python step each. Patterns are RE2's: linear in the text, never
a backtracking blow-up, and a pattern RE2 cannot run in linear time and small memory is refused
before anything is read. In the event loop the reader works in slices of a millisecond and pauses
as long after each, so a long read or search takes at most about half of the event loop (and of
a CPU the gateway shares with the daemon feeding it), and the gateway's other clients are served
meanwhile; the daemon, not this pause, is what sets a search's pace. A search of a runtime that
hands on its log's connection runs in a helper process instead (nekzus/logsearch_process.py),
unpaced, and the event loop only waits for its answer.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

import re2  # type: ignore[import-untyped]  # google-re2 ships no type hints

from runtimes import LogChunk
from runtimes.loglines import LineSplitter, split_lines

MAX_TERMS = 16
MAX_TERM_LENGTH = 512
DEFAULT_LIMIT = 1000
MAX_LIMIT = 10_000
# The compiled program of one search may use at most this much memory; a larger one is refused.
RE2_MAX_MEM = 1 << 20
# What an answer holds at most: each line is cut after LINE_BYTES, and the lines stop (truncated)
# once together they pass ANSWER_BYTES.
LINE_BYTES = 64 << 10
ANSWER_BYTES = 16 << 20
# What a line costs an answer beyond its text (its number, stream and JSON), and what a line kept
# for an answer holds at most (room for a time stamp in front of the text).
_LINE_COST = 64
_KEPT_BYTES = LINE_BYTES + 64
# How long the reader may run before it pauses (for as long) to let the event loop serve others.
SLICE_SECONDS = 0.001


class InvalidSearch(ValueError):
    """A search that cannot run as asked; the message names what is wrong, for the client."""


@dataclass(frozen=True, slots=True)
class LogLine:
    """One line of the log: its number in what was read (1 for the first), its output stream, its
    text, and its time stamp as the runtime wrote it (RFC 3339) when time stamps were asked for."""

    number: int
    stream: str
    text: str
    stamp: str | None = None


@dataclass(frozen=True, slots=True)
class LogExcerpt:
    """The lines an answer holds, whether lines were left out, and how many lines were read."""

    lines: list[LogLine]
    truncated: bool
    scanned: int


class LogSearch:
    """A compiled search: lines holding every term (``and``) or any (``or``), or with ``invert``
    the lines that do not. Terms are plain text, or RE2 patterns with ``regex``."""

    def __init__(
        self,
        terms: Sequence[str],
        *,
        any_term: bool = False,
        invert: bool = False,
        regex: bool = False,
        case_sensitive: bool = False,
    ) -> None:
        if not terms:
            raise InvalidSearch("A search needs at least one term")
        if len(terms) > MAX_TERMS:
            raise InvalidSearch(f"A search takes at most {MAX_TERMS} terms")
        for term in terms:
            if not term:
                raise InvalidSearch("A search term must not be empty")
            if len(term) > MAX_TERM_LENGTH:
                raise InvalidSearch(f"A search term may be at most {MAX_TERM_LENGTH} characters long")
        self.invert = invert
        self.any_term = any_term
        # What the search was built from, for a helper process to build the same search.
        self.arguments: dict[str, Any] = {
            "terms": list(terms),
            "any_term": any_term,
            "invert": invert,
            "regex": regex,
            "case_sensitive": case_sensitive,
        }
        # Plain ASCII terms without case are found in a lower-cased copy of the block (same
        # offsets); a plain term with other letters goes to RE2, which folds Unicode case.
        self._fold = not case_sensitive and not regex and all(t.isascii() for t in terms)
        if self._fold:
            terms = [t.lower() for t in terms]
        self._plain = not regex and (case_sensitive or self._fold)
        patterns = [_compile(t, regex=regex, case_sensitive=case_sensitive) for t in terms]
        literals = [t.encode() for t in terms]
        if self._plain:
            self._tests: list[Callable[[bytes], bool]] = [_contains(literal) for literal in literals]
        else:
            self._tests = [_searcher(p) for p in patterns]
        first: Any
        if any_term and len(terms) > 1:
            alternation = "|".join(f"(?:{t if regex else re2.escape(t)})" for t in terms)
            first = _compile(alternation, regex=True, case_sensitive=case_sensitive or self._fold)
            self._rest: list[Callable[[bytes], bool]] = []
        else:
            first, self._rest = patterns[0], self._tests[1:]
        self._find: Callable[[bytes, int], int] = _finder(first)
        if self._plain and not (any_term and len(terms) > 1):
            # One plain term to look for: bytes.find is the fastest search Python has.
            self._find = _literal_finder(literals[0])

    def line_matches(self, text: bytes) -> bool:
        """Whether one line's text matches (before ``invert``)."""
        if self._fold:
            text = text.lower()
        if self.any_term:
            return any(test(text) for test in self._tests)
        return all(test(text) for test in self._tests)

    def hits(self, block: bytes) -> list[tuple[int, int]]:
        """(start, end) of each line of ``block`` (whole lines, ``\\n``-terminated) that matches,
        before ``invert``; ``end`` is the offset of the line's newline."""
        haystack = block.lower() if self._fold else block
        find, rest = self._find, self._rest
        spans = []
        pos, size = 0, len(block)
        while pos < size:
            at = find(haystack, pos)
            if at < 0:
                break
            start = haystack.rfind(b"\n", 0, at) + 1
            end = haystack.find(b"\n", at)
            if end < 0:
                break
            if not rest or all(test(haystack[start:end]) for test in rest):
                spans.append((start, end))
            pos = end + 1
        return spans


def _compile(pattern: str, *, regex: bool, case_sensitive: bool) -> Any:
    options = re2.Options()
    options.max_mem = RE2_MAX_MEM
    options.never_nl = True  # a match never runs over a line's end into the next line
    options.case_sensitive = case_sensitive
    options.literal = not regex
    options.log_errors = False
    try:
        # Multi-line: ^ and $ mean a line's start and end also inside a block of lines.
        return re2.compile(f"(?m){pattern}" if regex else pattern, options)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else b""
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        shown = pattern if len(pattern) <= 60 else pattern[:57] + "..."
        raise InvalidSearch(
            f'The pattern "{shown}" cannot be used: {reason or "RE2 refuses it"} (patterns are RE2 '
            "syntax: no backreferences or lookaround, and a bounded size)"
        ) from None


def _contains(literal: bytes) -> Callable[[bytes], bool]:
    return lambda text: literal in text


def _literal_finder(literal: bytes) -> Callable[[bytes, int], int]:
    return lambda block, pos: block.find(literal, pos)


def _searcher(pattern: Any) -> Callable[[bytes], bool]:
    search = pattern.search
    return lambda text: search(text) is not None


def _finder(pattern: Any) -> Callable[[bytes, int], int]:
    search = pattern.search

    def find(block: bytes, pos: int) -> int:
        match = search(block, pos)
        return -1 if match is None else int(match.start())

    return find


class _Reader:
    """The lines of the chosen streams of a log, block by block, counted as they pass."""

    def __init__(self, streams: Collection[str], timestamps: bool, paced: bool = True) -> None:
        self.streams = streams
        self.timestamps = timestamps
        self.paced = paced
        self.splitter = LineSplitter()
        self.scanned = 0
        self.size = 0
        self._slice = time.monotonic()

    async def blocks(self, chunks: AsyncIterator[LogChunk]) -> AsyncIterator[tuple[str, bytes]]:
        """(stream, block of whole lines) as they come, the last unterminated lines at the end."""
        async for chunk in chunks:
            if chunk.stream not in self.streams or not chunk.data:
                continue
            block = self.splitter.feed(chunk.stream, chunk.data)
            if block:
                yield chunk.stream, block
            if self.paced and time.monotonic() - self._slice > SLICE_SECONDS:
                # Ordering: a runtime stream whose bytes are already buffered never suspends, so
                # the pause is the reader's own.
                await asyncio.sleep(SLICE_SECONDS)
                self._slice = time.monotonic()
        for stream, rest in self.splitter.flush():
            yield stream, rest + b"\n"

    def line(self, number: int, stream: str, raw: bytes) -> LogLine | None:
        """The answer's form of one raw line; None once the answer is full."""
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        stamp = None
        if self.timestamps:
            stamp_raw, _, raw = raw.partition(b" ")
            stamp = stamp_raw.decode("ascii", "replace")
        raw = raw[:LINE_BYTES]
        self.size += len(raw) + _LINE_COST
        if self.size > ANSWER_BYTES:
            return None
        return LogLine(number, stream, raw.decode("utf-8", "replace"), stamp)


async def read_lines(
    chunks: AsyncIterator[LogChunk], *, keep: int, streams: Collection[str], timestamps: bool
) -> LogExcerpt:
    """The last ``keep`` lines of ``chunks`` (of ``streams``); truncated when there were more."""
    reader = _Reader(streams, timestamps)
    kept: deque[tuple[int, str, bytes]] = deque()
    size = 0  # of the kept lines, bounded like an answer's, however long the lines are
    async for stream, block in reader.blocks(chunks):
        lines = split_lines(block)
        first = reader.scanned + 1
        reader.scanned += len(lines)
        # Only the last `keep` lines of a block can still be among the last `keep` of the log.
        tail = lines[-keep:] if keep else []
        start = first + len(lines) - len(tail)
        for i, raw in enumerate(tail):
            raw = raw[:_KEPT_BYTES]
            kept.append((start + i, stream, raw))
            size += len(raw) + _LINE_COST
        while kept and (len(kept) > keep or size > ANSWER_BYTES):
            size -= len(kept.popleft()[2]) + _LINE_COST
    answer = []
    for number, stream, raw in kept:
        line = reader.line(number, stream, raw)
        if line is None:
            break
        answer.append(line)
    truncated = reader.scanned > len(answer)
    return LogExcerpt(answer, truncated, reader.scanned)


async def search_lines(
    chunks: AsyncIterator[LogChunk],
    search: LogSearch,
    *,
    limit: int,
    streams: Collection[str],
    timestamps: bool,
    paced: bool = True,
) -> LogExcerpt:
    """The lines of ``chunks`` that ``search`` matches, in order, at most ``limit``: reading stops
    at the next match after that (truncated), which is what makes a capped search cheap.
    ``paced=False`` leaves out the reader's pauses, for a process that serves nobody else."""
    reader = _Reader(streams, timestamps, paced)
    found: list[LogLine] = []
    async for stream, block in reader.blocks(chunks):
        numbered = _block_matches(search, block, timestamps)
        for index, raw in numbered:
            if len(found) >= limit:
                return LogExcerpt(found, True, reader.scanned + index)
            line = reader.line(reader.scanned + index + 1, stream, raw)
            if line is None:
                return LogExcerpt(found, True, reader.scanned + index)
            found.append(line)
        reader.scanned += block.count(b"\n")
    return LogExcerpt(found, False, reader.scanned)


def _block_matches(search: LogSearch, block: bytes, timestamps: bool) -> list[tuple[int, bytes]]:
    """(index in the block, raw line) of each line of ``block`` the search selects."""
    if timestamps:
        # Time stamps are no part of what is searched: each line's text is tested on its own.
        keep = not search.invert
        return [
            (index, raw)
            for index, raw in enumerate(split_lines(block))
            if search.line_matches(raw.partition(b" ")[2]) is keep
        ]
    if b"\r" in block:
        block = block.replace(b"\r\n", b"\n")
    spans = search.hits(block)
    if not search.invert:
        selected = []
        counted, index = 0, 0
        for start, end in spans:
            index += block.count(b"\n", counted, start)
            counted = start
            selected.append((index, block[start:end]))
        return selected
    # Inverted: the lines between the hits.
    selected = []
    index, pos = 0, 0
    for start, end in [*spans, (len(block), len(block))]:
        if start > pos:
            for raw in block[pos:start].split(b"\n")[:-1]:
                selected.append((index, raw))
                index += 1
        index += 1
        pos = end + 1
    return selected
