"""GET /api/v1/containers/{id}/logs against the real Engine: the last lines as JSON, the raw text as
a download that respects a slow reader, and searches over the whole log.

The units of the search itself (terms, line numbers across chunks, refused patterns) are in
tests/unit/test_logsearch.py; pods through the fake apiserver in tests/kube_fake/test_logs_kube.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import aiodocker
import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from nekzus.config import Config
from nekzus.http.app import MAX_LOG_SEARCHES
from nekzus.keys import LOG_SEARCHES
from runtimes import ContainerRef, LogChunk, factory
from tests.support.docker_engine import Containers
from tests.support.fakes import registry_of
from tests.support.gateway import ClientFactory, make_config
from tests.support.helpers import search_helpers, until_search_helpers
from tests.unit.test_errors import expect
from tests.unit.test_security import bearer, security_config, token

# 10,000 lines "N x", every hundredth "N TERM" instead, then one line of 5,000 a's and a "!".
TEN_THOUSAND = [
    "sh",
    "-c",
    'seq 1 10000 | awk \'{ if ($1 % 100 == 0) print $1 " TERM"; else print $1 " x" }\'; '
    "printf 'a%.0s' $(seq 1 5000); echo '!'",
]


async def exited(
    containers: Containers, docker: aiodocker.Docker, cmd: list[str], **kw: Any
) -> dict[str, Any]:
    """A container that ran ``cmd`` to its end (its whole log is written)."""
    made = await containers.create(cmd=cmd, **kw)
    async with asyncio.timeout(60):
        await docker.containers.container(made["Id"]).wait()
    return made


def logs_path(made: dict[str, Any], query: str = "") -> str:
    return f"/api/v1/containers/{made['Id'][:12]}/logs" + (f"?{query}" if query else "")


@pytest.fixture
async def ten_thousand(containers: Containers, docker: aiodocker.Docker) -> dict[str, Any]:
    return await exited(containers, docker, TEN_THOUSAND)


# -- reading --------------------------------------------------------------------------------------


async def test_json_lines_streams_tail_and_timestamps(
    client: TestClient[Any, Any], containers: Containers, docker: aiodocker.Docker
) -> None:
    made = await exited(
        containers, docker, ["sh", "-c", "for i in 1 2 3; do echo out$i; echo err$i >&2; done"]
    )
    resp = await client.get(logs_path(made))
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["containerId"] == made["Id"][:12] and body["truncated"] is False
    out = [line["line"] for line in body["lines"] if line["stream"] == "stdout"]
    err = [line["line"] for line in body["lines"] if line["stream"] == "stderr"]
    assert out == ["out1", "out2", "out3"] and err == ["err1", "err2", "err3"]
    assert all(set(line) == {"stream", "line"} for line in body["lines"])

    only_err = await (await client.get(logs_path(made, "stream=stderr"))).json()
    assert [line["line"] for line in only_err["lines"]] == ["err1", "err2", "err3"]
    only_out = await (await client.get(logs_path(made, "stream=stdout&tail=6"))).json()
    assert [line["line"] for line in only_out["lines"]] == ["out1", "out2", "out3"]
    last = await (await client.get(logs_path(made, "tail=2"))).json()
    assert last["lines"] == body["lines"][-2:]

    stamped = await (await client.get(logs_path(made, "timestamps=true"))).json()
    now = int(time.time())
    assert all(now - 120 <= line["timestamp"] <= now + 1 for line in stamped["lines"])
    assert {line["line"] for line in stamped["lines"]} == {"out1", "out2", "out3", "err1", "err2", "err3"}

    # The name addresses the container as well as the id.
    by_name = await client.get(f"/api/v1/containers/{made['Name'].lstrip('/')}/logs?tail=1")
    assert (await by_name.json())["containerId"] == made["Id"][:12]


async def test_json_is_bounded_to_the_most_recent_lines(
    client: TestClient[Any, Any], ten_thousand: dict[str, Any]
) -> None:
    body = await (await client.get(logs_path(ten_thousand))).json()
    assert len(body["lines"]) == 1000 and body["truncated"] is True
    assert body["lines"][0]["line"] == "9002 x" and body["lines"][-1]["line"].endswith("a!")
    body = await (await client.get(logs_path(ten_thousand, "limit=5"))).json()
    assert [line["line"] for line in body["lines"]][:4] == ["9997 x", "9998 x", "9999 x", "10000 TERM"]
    assert body["truncated"] is True
    body = await (await client.get(logs_path(ten_thousand, "tail=3&limit=10"))).json()
    assert len(body["lines"]) == 3 and body["truncated"] is False
    body = await (await client.get(logs_path(ten_thousand, "tail=0"))).json()
    assert body["lines"] == [] and body["truncated"] is False
    # stdout only: the bound counts the lines of that stream.
    body = await (await client.get(logs_path(ten_thousand, "stream=stdout&limit=2"))).json()
    assert body["lines"][0]["line"] == "10000 TERM" and body["truncated"] is True
    body = await (await client.get(logs_path(ten_thousand, "stream=stderr"))).json()
    assert body == {"containerId": ten_thousand["Id"][:12], "lines": [], "truncated": False}


async def test_since_and_until(
    client: TestClient[Any, Any], containers: Containers, docker: aiodocker.Docker
) -> None:
    made = await exited(containers, docker, ["sh", "-c", "echo early; sleep 2; echo late"])
    lines = (await (await client.get(logs_path(made, "timestamps=true"))).json())["lines"]
    assert [line["line"] for line in lines] == ["early", "late"]
    early, late = lines[0]["timestamp"], lines[1]["timestamp"]
    assert late >= early + 2
    body = await (await client.get(logs_path(made, f"since={late}"))).json()
    assert [line["line"] for line in body["lines"]] == ["late"]
    body = await (await client.get(logs_path(made, f"until={early + 1}"))).json()
    assert [line["line"] for line in body["lines"]] == ["early"]
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(late))
    body = await (await client.get(logs_path(made, f"since={stamp}&until={late + 1}"))).json()
    assert [line["line"] for line in body["lines"]] == ["late"]
    resp = await client.get(logs_path(made, f"since={late}&until={early}"))
    assert "since" in (await expect(resp, 400, "INVALID_REQUEST"))["message"]


# -- download -------------------------------------------------------------------------------------


async def test_download_streams_the_raw_text(
    client: TestClient[Any, Any], containers: Containers, docker: aiodocker.Docker
) -> None:
    made = await exited(containers, docker, ["sh", "-c", "echo one; echo two >&2; echo three"])
    name = made["Name"].lstrip("/")
    resp = await client.get(logs_path(made), headers={"Accept": "text/plain"})
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert resp.headers["Content-Disposition"] == f'attachment; filename="{name}-logs.txt"'
    assert resp.headers["Transfer-Encoding"] == "chunked"
    assert sorted((await resp.text()).splitlines()) == ["one", "three", "two"]
    resp = await client.get(logs_path(made, "download=1&stream=stdout"))
    assert await resp.text() == "one\nthree\n"
    resp = await client.get(logs_path(made, "download=1&tail=1"))
    assert (await resp.text()).count("\n") == 1
    resp = await client.get(logs_path(made, "download=true&timestamps=true&stream=stderr"))
    text = await resp.text()
    assert text.endswith(" two\n") and text.startswith(time.strftime("%Y-"))
    # A search answers JSON, and a download has no limit: asking both is a mistake, said so.
    await expect(await client.get(logs_path(made, "download=1&search=one")), 400, "INVALID_REQUEST")
    await expect(await client.get(logs_path(made, "download=1&limit=5")), 400, "INVALID_REQUEST")


async def test_a_reader_that_stops_holds_the_stream_and_leaving_closes_it(
    gateway: ClientFactory,
    docker_host: str,
    containers: Containers,
    docker: aiodocker.Docker,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # About 50 MB of log; a client that reads nothing after the headers.
    made = await exited(
        containers,
        docker,
        ["sh", "-c", f"yes {'0123456789' * 7} | head -n 700000"],
    )
    runtime = factory.docker_runtime(docker_host)
    pulled = 0
    closed = asyncio.Event()
    original = runtime.logs

    async def counted(ref: ContainerRef, **kwargs: Any) -> AsyncIterator[LogChunk]:
        nonlocal pulled
        try:
            async for chunk in original(ref, **kwargs):
                pulled += len(chunk.data)
                yield chunk
        finally:
            closed.set()

    runtime.logs = counted  # type: ignore[method-assign]
    try:
        client = await gateway(make_config(docker_host), runtimes=registry_of(runtime))
        port = client.server.port
        assert port is not None
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=4096)
        writer.write(f"GET {logs_path(made, 'download=1')} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        await writer.drain()
        async with asyncio.timeout(30):
            head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        # The gateway stops pulling from the Engine once the socket is full: the amount settles.
        async with asyncio.timeout(60):
            settled = -1
            while settled != pulled:
                settled = pulled
                await asyncio.sleep(0.5)
        assert 0 < pulled < 16 << 20, f"pulled {pulled} bytes of about 50 MB for a reader that stopped"
        assert not closed.is_set()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
        async with asyncio.timeout(15):
            await closed.wait()
        assert pulled < 16 << 20
        # A client that leaves is no error of the gateway's.
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    finally:
        await runtime.close()


# -- search ---------------------------------------------------------------------------------------


async def search(client: TestClient[Any, Any], made: dict[str, Any], query: str) -> dict[str, Any]:
    resp = await client.get(logs_path(made, query))
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    assert body["containerId"] == made["Id"][:12]
    return body


async def test_search_the_whole_log(client: TestClient[Any, Any], ten_thousand: dict[str, Any]) -> None:
    body = await search(client, ten_thousand, "search=TERM")
    assert [m["lineNumber"] for m in body["matches"]] == list(range(100, 10001, 100))
    assert body["matches"][0] == {"lineNumber": 100, "stream": "stdout", "line": "100 TERM"}
    assert body["truncated"] is False and body["scanned"] == 10001
    # Without case by default; with caseSensitive the lower-case term is not there.
    assert len((await search(client, ten_thousand, "search=term"))["matches"]) == 100
    assert (await search(client, ten_thousand, "search=term&caseSensitive=true"))["matches"] == []

    capped = await search(client, ten_thousand, "search=TERM&limit=10")
    assert len(capped["matches"]) == 10 and capped["truncated"] is True
    assert capped["scanned"] < 1200  # it stopped reading at the eleventh match

    either = await search(client, ten_thousand, "search=TERM&search=9999 x&combinator=or")
    assert len(either["matches"]) == 101 and either["matches"][-2]["line"] == "9999 x"
    both = await search(client, ten_thousand, "search=TERM&search=99")
    assert [m["line"] for m in both["matches"]] == ["9900 TERM"]
    inverted = await search(client, ten_thousand, "search=x&invert=true&limit=10000")
    assert len(inverted["matches"]) == 101 and inverted["matches"][-1]["line"].endswith("a!")
    pattern = await search(client, ten_thousand, "search=^[0-9]%2B00 TERM$&regex=true")
    assert len(pattern["matches"]) == 100

    # The tail is what is searched; line numbers count from its first line.
    tailed = await search(client, ten_thousand, "search=TERM&tail=1001")
    assert [m["lineNumber"] for m in tailed["matches"]][:2] == [100, 200]
    assert tailed["matches"][0]["line"] == "9100 TERM" and tailed["scanned"] == 1001

    # Time stamps are not searched: "T" is in every stamp, in no line but the TERM ones.
    stamped = await search(client, ten_thousand, "search=T&caseSensitive=true&timestamps=true")
    assert len(stamped["matches"]) == 100
    assert all(isinstance(m["timestamp"], int) for m in stamped["matches"])
    assert (await search(client, ten_thousand, "search=TERM&stream=stderr"))["matches"] == []


async def test_patterns_run_in_linear_time_or_are_refused(
    client: TestClient[Any, Any], ten_thousand: dict[str, Any]
) -> None:
    # Catastrophic for a backtracking engine on the line of 5,000 a's; RE2 answers at once.
    async with asyncio.timeout(10):
        body = await search(client, ten_thousand, "search=(a%2B)%2B$&regex=true")
    assert body["matches"] == []
    async with asyncio.timeout(10):
        body = await search(client, ten_thousand, "search=(a%2B)%2B!$&regex=true")
    assert len(body["matches"]) == 1 and body["matches"][0]["lineNumber"] == 10001
    for refused in (r"(a)\1", "(?=TERM)", "(?<!x)TERM", "[", "((a{100}){100}){100}", r"(\pL{100}){10}"):
        resp = await client.get(logs_path(ten_thousand, "regex=true"), params={"search": refused})
        message = (await expect(resp, 400, "INVALID_REQUEST"))["message"]
        assert "search" in message and "pattern" in message, message


async def test_a_search_cut_short_leaves_no_helper_behind(
    gateway: ClientFactory, config: Config, containers: Containers, docker: aiodocker.Docker
) -> None:
    # About 50 MB of log without the term: a search reads it all, in a helper process, unless it
    # is cut short by its client leaving or the gateway stopping; either way the helper is killed,
    # and the Engine's stream, which only the helper holds, closes with it.
    made = await exited(containers, docker, ["sh", "-c", f"yes {'0123456789' * 7} | head -n 700000"])
    for stop in ("client leaves", "gateway stops"):
        client = await gateway(config)
        asking = asyncio.create_task(client.get(logs_path(made, "search=TERM")))
        await until_search_helpers(running=True)
        if stop == "client leaves":
            asking.cancel()
        else:
            await client.server.close()
        with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
            await asking
        await until_search_helpers(running=False)


async def test_searches_beyond_the_bound_wait_their_turn(
    client: TestClient[Any, Any], ten_thousand: dict[str, Any]
) -> None:
    # Every helper slot taken: a search waits, starting no helper of its own, until one is free.
    slots = client.app[LOG_SEARCHES]
    for _ in range(MAX_LOG_SEARCHES):
        await slots.acquire()
    asking = asyncio.create_task(search(client, ten_thousand, "search=TERM"))
    done, _ = await asyncio.wait({asking}, timeout=1)
    assert not done and not search_helpers()
    slots.release()
    async with asyncio.timeout(30):
        body = await asking
    assert len(body["matches"]) == 100
    for _ in range(MAX_LOG_SEARCHES - 1):
        slots.release()


# -- errors and bad input -------------------------------------------------------------------------


async def test_unknown_container_and_runtime_down(
    gateway: ClientFactory, client: TestClient[Any, Any]
) -> None:
    await expect(await client.get("/api/v1/containers/no-such-container/logs"), 404, "CONTAINER_NOT_FOUND")
    await expect(
        await client.get("/api/v1/containers/no-such-container/logs?search=x"), 404, "CONTAINER_NOT_FOUND"
    )
    await expect(
        await client.get("/api/v1/containers/no-such-container/logs?download=1"), 404, "CONTAINER_NOT_FOUND"
    )
    dead = "unix:///nonexistent/nekzus-logs-test.sock"
    down = await gateway(make_config(dead))
    for query in ("", "?search=x", "?download=1"):
        await expect(await down.get(f"/api/v1/containers/abc/logs{query}"), 503, "RUNTIME_UNAVAILABLE")


async def test_bad_input_is_400_and_names_the_parameter(
    client: TestClient[Any, Any], containers: Containers, docker: aiodocker.Docker
) -> None:
    made = await exited(containers, docker, ["echo", "hello"])
    cases = {
        "tail=-1": "tail",
        "tail=1e9": "tail",
        "tail=100001": "tail",
        "tail=abc": "tail",
        "limit=NaN": "limit",
        "limit=0": "limit",
        "limit=10001": "limit",
        "limit=Infinity": "limit",
        "since=NaN": "since",
        "since=Infinity": "since",
        "since=-5": "since",
        "until=2026-13-45T00:00:00Z": "until",
        "until=tomorrow": "until",
        "timestamps=maybe": "timestamps",
        "stream=both": "stream",
        "download=please": "download",
        "search=x&combinator=xor": "combinator",
        "search=x&regex=perhaps": "regex",
        "search=x&invert=2": "invert",
        "invert=true": "invert",
        "search=": "search",
        "tail=1&tail=2": "tail",
        "grep=x": "grep",
        "container=../x": "container",
    }
    for query, name in cases.items():
        resp = await client.get(logs_path(made, query))
        message = (await expect(resp, 400, "INVALID_REQUEST"))["message"]
        assert name in message, (query, message)
    many = "&".join(f"search=t{i}" for i in range(17))
    assert "16" in (await expect(await client.get(logs_path(made, many)), 400, "INVALID_REQUEST"))["message"]
    resp = await client.get(logs_path(made), params={"search": "x" * 5_000})
    assert "512" in (await expect(resp, 400, "INVALID_REQUEST"))["message"]
    # 10 KB does not fit in a request line: the HTTP parser refuses it (as JSON in `nekzus serve`).
    resp = await client.get(logs_path(made), params={"search": "x" * 10_000})
    assert resp.status == 400
    for bad_id in ("..", "%2E%2E", "a%2Fb", "x" * 300, "%00"):
        resp = await client.get(f"/api/v1/containers/{bad_id}/logs")
        assert resp.status in (400, 404), (bad_id, resp.status)
        assert (await resp.json())["error"] in ("INVALID_CONTAINER_ID", "NOT_FOUND"), bad_id
    # Nothing was changed on the Engine: the container is still there, as it was.
    assert (await docker.containers.container(made["Id"]).show())["State"]["Status"] == "exited"


async def test_scope_and_foreign_pages(
    gateway: ClientFactory, docker_host: str, client: TestClient[Any, Any], ten_thousand: dict[str, Any]
) -> None:
    remote = await gateway(security_config(docker_host))
    path = logs_path(ten_thousand, "search=TERM")
    resp = await remote.get(path, headers=bearer(token(scopes=["read:engine", "write:engine"])))
    assert "read:containers" in (await expect(resp, 403, "FORBIDDEN"))["message"]
    await expect(await remote.get(path), 401, "UNAUTHORIZED")
    resp = await remote.get(path, headers=bearer(token(scopes=["read:containers"])))
    assert resp.status == 200 and len((await resp.json())["matches"]) == 100

    # A page on another site cannot make a LAN browser read a log (or spend the CPU on a search).
    for headers in ({"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
        resp = await client.get(logs_path(ten_thousand, "download=1"), headers=headers)
        await expect(resp, 403, "ORIGIN_NOT_ALLOWED")
    port = client.server.port
    resp = await client.get(logs_path(ten_thousand, "tail=1"), headers={"Origin": f"http://127.0.0.1:{port}"})
    assert resp.status == 200
