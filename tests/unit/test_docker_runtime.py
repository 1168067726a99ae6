"""The tests of docker runtime that need no daemon (unit tier); the story and the other tests are in
tests/docker/test_docker_runtime.py.
"""

from __future__ import annotations

import struct

from runtimes import ContainerState, LogChunk
from runtimes.docker.states import map_state, parse_timestamp
from runtimes.logframes import FRAMES_PER_CHUNK, MAX_LOG_FRAME, FrameDecoder


def test_state_mapping_and_timestamps() -> None:
    assert map_state("running") is ContainerState.RUNNING
    assert map_state("exited") is ContainerState.EXITED
    assert map_state("dead") is ContainerState.STOPPED
    assert map_state("removing") is ContainerState.STOPPED
    assert map_state("created") is ContainerState.CREATED
    assert map_state("paused") is ContainerState.PAUSED
    assert map_state("restarting") is ContainerState.RESTARTING
    assert parse_timestamp("2023-12-01T00:00:00.123456789Z") == 1701388800
    assert parse_timestamp("0001-01-01T00:00:00Z") == 0
    assert parse_timestamp("garbage") == 0


def frame(stream: int, data: bytes) -> bytes:
    return struct.pack(">BxxxL", stream, len(data)) + data


def demux(pieces: list[bytes]) -> list[LogChunk]:
    decoder = FrameDecoder()
    chunks = [chunk for piece in pieces for chunk in decoder.feed(piece)]
    return chunks + list(decoder.end())


def test_demultiplex_frames_split_anywhere_and_oversized_ones_skipped() -> None:
    big = b"x" * (MAX_LOG_FRAME + 10)
    raw = frame(1, b"a1\n") + frame(1, b"a2\n") + frame(2, b"e1\n") + frame(1, big) + frame(1, b"after\n")
    # Delivered in awkward pieces: headers and the big frame split across reads.
    pieces = [raw[i : i + 7000] for i in range(0, len(raw), 7000)]
    chunks = demux(pieces)
    assert [(c.stream, c.data, c.skipped) for c in chunks] == [
        ("stdout", b"a1\na2\n", 0),
        ("stderr", b"e1\n", 0),
        ("stdout", b"", MAX_LOG_FRAME + 10),
        ("stdout", b"after\n", 0),
    ]
    whole = demux([raw])
    assert [(c.stream, c.data, c.skipped) for c in whole] == [(c.stream, c.data, c.skipped) for c in chunks]
    truncated = demux([frame(1, b"complete\n") + frame(2, b"cut off here")[:-4]])
    assert [(c.stream, c.data) for c in truncated] == [("stdout", b"complete\n"), ("stderr", b"cut off ")]


def test_demultiplex_hands_on_long_runs_in_parts() -> None:
    # Ten thousand frames in one read: runs of at most FRAMES_PER_CHUNK, so a reader that yields
    # to the event loop between chunks does so often; nothing is lost or reordered.
    raw = b"".join(frame(1, b"%d\n" % i) for i in range(10_000))
    chunks = demux([raw])
    assert max(c.data.count(b"\n") for c in chunks) == FRAMES_PER_CHUNK
    assert b"".join(c.data for c in chunks) == b"".join(b"%d\n" % i for i in range(10_000))


def test_demultiplex_gathers_a_big_frame_arriving_in_small_reads() -> None:
    # A 512 KiB line in 100-byte reads: gathered until whole, then handed on once, intact.
    line = bytes(range(256)) * 2048
    raw = frame(2, line) + frame(1, b"next\n")
    chunks = demux([raw[i : i + 100] for i in range(0, len(raw), 100)])
    assert [(c.stream, c.data) for c in chunks] == [("stderr", line), ("stdout", b"next\n")]
