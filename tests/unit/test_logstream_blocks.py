"""A log session's lines, decoded and split a whole block at a time, against what one line at a
time gives: characters split across reads, CRLF, bytes that are not UTF-8, a line without a time,
and a resume that skips lines up to the middle of a block, per line and batched.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any, cast

import pytest

from nekzus.realtime.hub import Connection, Outbox
from nekzus.realtime.logrequest import LogSubscription, parse_since
from nekzus.realtime.logstream import LogSession
from runtimes import ContainerRef, ContainerRuntime, LogChunk

T = "2026-01-01T00:00:0{}.00000000{}Z"
SNOW = "☃".encode()
# (stream, bytes) as a runtime hands them on: lines and characters cut anywhere.
CHUNKS = [
    ("stdout", f"{T.format(1, 1)} one\n{T.format(1, 2)} tw".encode()),
    ("stdout", b"o \xff\xfe\n" + f"{T.format(2, 3)} ".encode() + SNOW[:1]),
    ("stderr", f"{T.format(2, 4)} err\r\n".encode()),
    ("stdout", SNOW[1:] + b"\n" + f"{T.format(3, 5)} four\r\n".encode()),
    ("stdout", b"no-time-at-all\n" + f"{T.format(4, 6)} last, unterminated".encode()),
]
LINES = [
    ("stdout", T.format(1, 1), "one"),
    ("stdout", T.format(1, 2), "two \ufffd\ufffd"),
    ("stderr", T.format(2, 4), "err"),
    ("stdout", T.format(2, 3), "☃"),
    ("stdout", T.format(3, 5), "four"),
    ("stdout", "no-time-at-all", ""),
    ("stdout", T.format(4, 6), "last, unterminated"),
]


class Runtime:
    async def logs(self, ref: ContainerRef, **options: Any) -> AsyncIterator[LogChunk]:
        for stream, data in CHUNKS:
            yield LogChunk(stream, data)


async def delivered(*, batch: bool, timestamps: bool, skip_until: tuple[int, int] | None) -> list[Any]:
    outbox = Outbox(event_limit=10, room=1000)
    conn = cast(Connection, SimpleNamespace(outbox=outbox))
    sub = LogSubscription("abc", "", None, 0, False, timestamps, None, False, batch)
    session = LogSession(conn, cast(ContainerRuntime, Runtime()), sub)
    await session._pump(ContainerRef("abc"), follow=False, tail=None, since=None, skip_until=skip_until)
    messages = []
    while (text := outbox.pop()) is not None:
        messages.append(json.loads(text))
    assert session.last_stamp == T.format(4, 6)
    return messages


def lines_of(messages: list[Any]) -> list[tuple[str, str]]:
    """(stream, text) of every line, whichever message carried it."""
    out: list[tuple[str, str]] = []
    for message in messages:
        data = message["data"]
        assert data["containerId"] == "abc"
        if message["type"] == "container.logs.batch":
            out += [(data["stream"], line) for line in data["lines"]]
        else:
            assert message["type"] == "container.logs"
            out.append((data["stream"], data["message"]))
    return out


@pytest.mark.parametrize("batch", [False, True])
@pytest.mark.parametrize("timestamps", [False, True])
async def test_every_line_whole_and_in_order(batch: bool, timestamps: bool) -> None:
    messages = await delivered(batch=batch, timestamps=timestamps, skip_until=None)
    expected = [(stream, f"{stamp} {text}" if timestamps else text) for stream, stamp, text in LINES]
    # A line without a space is all stamp: its text is empty, and with timestamps it is as read.
    expected[5] = ("stdout", "no-time-at-all" if timestamps else "")
    assert lines_of(messages) == expected
    # The final, unterminated line is a line message of its own, batched stream or not.
    assert messages[-1]["type"] == "container.logs"
    assert messages[-1]["data"]["timestamp"] == 1767225604
    if batch:
        assert [m["type"] for m in messages[:-1]] == ["container.logs.batch"] * (len(messages) - 1)
        assert len(messages) < len(LINES)


@pytest.mark.parametrize("batch", [False, True])
async def test_a_resume_skips_up_to_the_middle_of_a_block(batch: bool) -> None:
    # Resuming after "two" (the second line of the first read): "one" and "two" are not repeated.
    after_two = parse_since(T.format(1, 2))
    messages = await delivered(batch=batch, timestamps=False, skip_until=after_two)
    assert lines_of(messages) == [(stream, text) for stream, _, text in LINES[2:5]] + [
        ("stdout", ""),
        ("stdout", "last, unterminated"),
    ]
    # A resume past every line of a read sends nothing for that read, and goes on after it (a
    # line without a time counts as older than any: it is skipped while the skipping lasts).
    after_four = parse_since(T.format(3, 5))
    rest = await delivered(batch=batch, timestamps=False, skip_until=after_four)
    assert lines_of(rest) == [("stdout", "last, unterminated")]
