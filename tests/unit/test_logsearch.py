"""The log reader and search engine (nekzus/logsearch.py) and the line splitter beneath it, fed
chunks as a runtime cuts them: lines across chunk ends, several lines per chunk, CRLF, bytes that
are not UTF-8, lines longer than a chunk, and patterns RE2 refuses."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable

import pytest

from nekzus.logsearch import (
    ANSWER_BYTES,
    LINE_BYTES,
    MAX_TERMS,
    InvalidSearch,
    LogExcerpt,
    LogLine,
    LogSearch,
    read_lines,
    search_lines,
)
from runtimes import LogChunk
from runtimes.loglines import LineSplitter, split_lines

BOTH = frozenset({"stdout", "stderr"})


async def feed(chunks: Iterable[LogChunk | bytes]) -> AsyncIterator[LogChunk]:
    for chunk in chunks:
        yield chunk if isinstance(chunk, LogChunk) else LogChunk("stdout", chunk)


def cut(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


async def find(
    chunks: Iterable[LogChunk | bytes],
    *terms: str,
    limit: int = 1000,
    timestamps: bool = False,
    streams: frozenset[str] = BOTH,
    **options: bool,
) -> LogExcerpt:
    return await search_lines(
        feed(chunks), LogSearch(terms, **options), limit=limit, streams=streams, timestamps=timestamps
    )


def numbered(excerpt: LogExcerpt) -> list[tuple[int, str]]:
    return [(line.number, line.text) for line in excerpt.lines]


LOG = b"".join(b"%d %s\n" % (i, b"ERROR disk full" if i % 10 == 0 else b"ok request") for i in range(1, 101))


@pytest.mark.parametrize("size", [1, 3, 7, 64, 4096])
async def test_line_numbers_survive_any_chunking(size: int) -> None:
    result = await find(cut(LOG, size), "error")
    assert numbered(result) == [(i, f"{i} ERROR disk full") for i in range(10, 101, 10)]
    assert result.scanned == 100 and not result.truncated


async def test_and_or_invert_and_case() -> None:
    assert [n for n, _ in numbered(await find([LOG], "ERROR", "5"))] == [50]
    assert [n for n, _ in numbered(await find([LOG], "error", "5", any_term=True))] == [
        5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 65, 70, 75, 80,
        85, 90, 95, 100,
    ]  # fmt: skip
    inverted = await find([LOG], "ok", invert=True)
    assert [n for n, _ in numbered(inverted)] == list(range(10, 101, 10))
    both_inverted = await find([LOG], "ERROR", "10", invert=True)
    assert len(both_inverted.lines) == 98
    assert {10, 100}.isdisjoint(n for n, _ in numbered(both_inverted))
    assert (await find([LOG], "error", case_sensitive=True)).lines == []
    assert len((await find([LOG], "ERROR", case_sensitive=True)).lines) == 10
    # Case folds beyond ASCII too (RE2 does it for a term with other letters).
    accents = await find([b"caf\xc3\xa9 OUVERT\nCAF\xc3\x89 ferm\xc3\xa9\nthe\n"], "café")
    assert [line.text for line in accents.lines] == ["café OUVERT", "CAFÉ fermé"]
    # Terms are text, not patterns, unless regex is asked: "." is a dot.
    assert (await find([b"a.b\naxb\n"], "a.b")).lines[0].number == 1
    assert len((await find([b"a.b\naxb\n"], "a.b", regex=True)).lines) == 2


async def test_patterns() -> None:
    hits = await find([LOG], r"^[0-9]+0 ERROR", regex=True)
    assert len(hits.lines) == 10
    assert len((await find([LOG], r"full$", regex=True)).lines) == 10
    assert [n for n, _ in numbered(await find([LOG], r"^1\d ", "^2 ", regex=True, any_term=True))] == [
        2, *range(10, 20),
    ]  # fmt: skip
    # A match never runs over a line's end, whatever the pattern says.
    assert (await find([b"ab\ncd\n"], r"b\sc", regex=True)).lines == []
    assert (await find([b"ab\ncd\n"], "b[^x]c", regex=True)).lines == []
    # Catastrophic for a backtracking engine; linear under RE2.
    began = time.monotonic()
    result = await find([b"a" * 200_000 + b"!\n"] * 5, "(a+)+$", regex=True)
    assert result.lines == [] and time.monotonic() - began < 5


@pytest.mark.parametrize(
    "pattern", [r"(a)\1", "(?=a)", "(?<=a)b", "(?!a)", "[", "a{1001}", r"(\pL{100}){10}", "(?P<x"]
)
def test_patterns_re2_refuses_are_refused_by_name(pattern: str) -> None:
    with pytest.raises(InvalidSearch, match="pattern") as refused:
        LogSearch([pattern], regex=True)
    assert pattern[:20] in str(refused.value)


def test_bounds_of_a_search() -> None:
    with pytest.raises(InvalidSearch, match="at most 16"):
        LogSearch([f"t{i}" for i in range(MAX_TERMS + 1)])
    LogSearch([f"t{i}" for i in range(MAX_TERMS)])
    with pytest.raises(InvalidSearch, match="512"):
        LogSearch(["x" * 513])
    with pytest.raises(InvalidSearch, match="empty"):
        LogSearch(["ok", ""])
    with pytest.raises(InvalidSearch, match="at least one"):
        LogSearch([])


async def test_limit_stops_reading() -> None:
    read = 0

    async def counted() -> AsyncIterator[LogChunk]:
        nonlocal read
        for piece in cut(LOG * 100, 512):
            read += 1
            yield LogChunk("stdout", piece)

    result = await search_lines(counted(), LogSearch(["ERROR"]), limit=3, streams=BOTH, timestamps=False)
    assert [n for n, _ in numbered(result)] == [10, 20, 30] and result.truncated
    assert result.scanned == 39  # lines before the fourth match, the one that found the cap
    assert read < 5
    exact = await find([LOG], "ERROR", limit=10)
    assert len(exact.lines) == 10 and not exact.truncated


async def test_crlf_invalid_utf8_and_an_unfinished_last_line() -> None:
    data = [b"one\r\ntw", b"o \xff\xfe bad\r\n", b"thr", b"ee"]
    result = await find(data, "o", "e", any_term=True)
    assert [(n, text) for n, text in numbered(result)] == [
        (1, "one"),
        (2, "two \ufffd\ufffd bad"),
        (3, "three"),
    ]
    assert (await find(data, "one$", regex=True)).lines[0].text == "one"


async def test_streams_and_time_stamps() -> None:
    chunks = [
        LogChunk("stdout", b"2026-01-02T03:04:05.000000001Z out 1\n2026-01-02T03:04:06.5Z out T\n"),
        LogChunk("stderr", b"2026-01-02T03:04:07.000000001Z err T\n"),
        LogChunk("stdout", b"", skipped=5_000_000),
    ]
    result = await find(chunks, "T", case_sensitive=True, timestamps=True)
    assert [(line.number, line.stream, line.text, line.stamp) for line in result.lines] == [
        (2, "stdout", "out T", "2026-01-02T03:04:06.5Z"),
        (3, "stderr", "err T", "2026-01-02T03:04:07.000000001Z"),
    ]
    err = await find(chunks, "T", case_sensitive=True, timestamps=True, streams=frozenset({"stderr"}))
    assert [(line.number, line.text) for line in err.lines] == [(1, "err T")] and err.scanned == 1
    inverted = await find(chunks, "T", case_sensitive=True, timestamps=True, invert=True)
    assert [line.text for line in inverted.lines] == ["out 1"]


async def test_read_keeps_the_last_lines() -> None:
    result = await read_lines(feed(cut(LOG, 13)), keep=3, streams=BOTH, timestamps=False)
    assert result.lines == [
        LogLine(98, "stdout", "98 ok request"),
        LogLine(99, "stdout", "99 ok request"),
        LogLine(100, "stdout", "100 ERROR disk full"),
    ]
    assert result.truncated and result.scanned == 100
    whole = await read_lines(feed([LOG]), keep=100, streams=BOTH, timestamps=False)
    assert len(whole.lines) == 100 and not whole.truncated
    none = await read_lines(feed([LOG]), keep=5, streams=frozenset({"stderr"}), timestamps=False)
    assert none == LogExcerpt([], False, 0)


async def test_long_lines_are_cut_and_answers_bounded() -> None:
    # A line longer than any chunk, and longer than an answer keeps of a line.
    long_line = b"x" * (LINE_BYTES + 10_000) + b" TERM\n"
    result = await find([*cut(long_line, 1000), b"after TERM\n"], "TERM")
    # The term sits past the part kept of the line, but the line matched whole.
    assert [(n, len(text)) for n, text in numbered(result)] == [(1, LINE_BYTES), (2, 10)]
    # A flood of long matching lines stops at the answer's size bound, not at the memory's.
    flood = (b"y" * (LINE_BYTES - 10) + b" TERM\n") * (ANSWER_BYTES // LINE_BYTES + 50)
    big = await find(cut(flood, 1 << 16), "TERM", limit=10_000)
    assert big.truncated and len(big.lines) < ANSWER_BYTES // (LINE_BYTES - 10) + 1
    # And so does a read of the last lines: the most recent that fit.
    last = await read_lines(feed(cut(flood, 1 << 16)), keep=10_000, streams=BOTH, timestamps=False)
    assert last.truncated and 0 < len(last.lines) < ANSWER_BYTES // (LINE_BYTES - 10) + 1
    assert (
        last.lines[-1].number == last.scanned and sum(len(line.text) for line in last.lines) <= ANSWER_BYTES
    )


def test_splitter_drops_what_is_past_its_line_bound() -> None:
    splitter = LineSplitter(max_line=8)
    assert splitter.feed("stdout", b"12345") == b""
    assert splitter.feed("stdout", b"67890abc") == b""  # past 8 bytes: the rest is dropped
    assert splitter.feed("stdout", b"def\nnext\npart") == b"12345678\nnext\n"
    assert splitter.feed("stderr", b"own\n") == b"own\n"
    assert list(splitter.flush()) == [("stdout", b"part")]
    assert split_lines(b"a\r\nb\n") == [b"a", b"b"]


async def test_a_long_search_lets_others_run() -> None:
    ticks = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    try:
        big = cut(LOG * 20_000, 1 << 16)  # 2,000,000 lines, already in memory: no await suspends
        result = await find(big, "nothing like this")
        assert result.scanned == 2_000_000
    finally:
        stop.set()
        await task
    assert ticks > 3
