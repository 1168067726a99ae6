"""The tests of websocket that need no daemon (unit tier); the story and the other tests are in
tests/docker/test_websocket.py.
"""

from __future__ import annotations

from tests.docker.test_websocket import connect, logs_of
from tests.support.gateway import ClientFactory, make_config


async def test_oversized_frames_are_skipped_with_an_error(gateway: ClientFactory, docker_host: str) -> None:
    from runtimes import LogChunk
    from tests.support.fakes import FakeRuntime, registry_of, summary

    fake = FakeRuntime([summary(1)])
    stamp = b"2026-01-01T00:00:00.000000001Z "
    fake.log_chunks = [
        LogChunk("stdout", stamp + b"before\n"),
        LogChunk("stdout", b"", skipped=2_000_000),
        LogChunk("stderr", stamp + b"after\n"),
    ]
    registry = registry_of(fake)
    client = await gateway(make_config(docker_host), runtimes=registry)
    ws = await connect(client)
    await ws.until("hello")
    await ws.send("container.logs.subscribe", containerId=summary(1).id, follow=False)
    lines, _ = await logs_of(ws, summary(1).id)
    assert [(d["stream"], d["message"], d["timestamp"]) for d in lines] == [
        ("stdout", "before", 1767225600),
        ("stderr", "after", 1767225600),
    ]
    error = next(m for m in ws.seen if m["type"] == "container.logs.error")
    assert error["data"]["error"] == "FRAME_TOO_LARGE" and "2000000" in error["data"]["message"]
