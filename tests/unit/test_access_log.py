"""The access log and the log format: one line per request, refused ones too, never forged by input."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, make_mocked_request

from nekzus.config import LoggingConfig
from nekzus.http.accesslog import access_log_middleware
from nekzus.logsetup import (
    ACCESS_LOGGER,
    JsonFormatter,
    RequestIdFilter,
    TextFormatter,
    configure_logging,
    one_line,
)
from runtimes import RuntimeRegistry
from tests.support.fakes import FakeRuntime, registry_of, summary
from tests.support.gateway import ClientFactory, make_config
from tests.unit.test_security import SECRET, bearer, token

CID = summary(1).id
REMOTE = {"jwt_secret": SECRET, "local_networks": ["10.0.0.0/8"]}
ACCESS_FIELDS = {"method", "route", "path", "status", "duration_ms", "request_id", "client", "principal"}


def fake_registry() -> tuple[FakeRuntime, RuntimeRegistry]:
    fake = FakeRuntime([summary(1)])
    return fake, registry_of(fake)


async def gateway_with_fake(
    gateway: ClientFactory, docker_host: str, **overrides: Any
) -> TestClient[Any, Any]:
    _, registry = fake_registry()
    return await gateway(make_config(docker_host, **overrides), runtimes=registry)


def access(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [vars(r)["access"] for r in caplog.records if r.name == ACCESS_LOGGER]


class AccessWatch(logging.Handler):
    """Wakes a test each time an access line is written, for lines that come after the response."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self.changed = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        self.changed.set()

    async def until(self, count: int, timeout: float = 10) -> None:
        async with asyncio.timeout(timeout):
            while self.count < count:
                self.changed.clear()
                await self.changed.wait()


@pytest.fixture
def access_watch() -> Iterator[AccessWatch]:
    watch = AccessWatch()
    logging.getLogger(ACCESS_LOGGER).addHandler(watch)
    yield watch
    logging.getLogger(ACCESS_LOGGER).removeHandler(watch)


@pytest.fixture
def log_stream() -> Iterator[Callable[[str], io.StringIO]]:
    """Installs the real log setup on a string stream; puts the test runner's handlers back after."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    access_level = logging.getLogger(ACCESS_LOGGER).level
    stream = io.StringIO()

    def install(fmt: str) -> io.StringIO:
        configure_logging(LoggingConfig(format=fmt), stream)
        return stream

    yield install
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)
    logging.getLogger(ACCESS_LOGGER).setLevel(access_level)


# -- fields --------------------------------------------------------------------------------------


async def test_a_request_is_logged_with_its_route_status_client_and_principal(
    gateway: ClientFactory, docker_host: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    client = await gateway_with_fake(gateway, docker_host)
    resp = await client.get(f"/api/v1/containers/{CID}", headers={"X-Request-ID": "trace-1"})
    assert resp.status == 200
    [line] = access(caplog)
    assert set(line) == ACCESS_FIELDS
    assert line["method"] == "GET"
    assert line["route"] == "/api/v1/containers/{id}"
    assert line["path"] == f"/api/v1/containers/{CID}"
    assert line["status"] == 200
    assert isinstance(line["duration_ms"], float) and 0 <= line["duration_ms"] < 10_000
    assert line["request_id"] == "trace-1" == resp.headers["X-Request-ID"]
    assert line["client"] == "127.0.0.1"
    assert line["principal"] == "lan"


async def test_requests_refused_by_middlewares_are_logged(
    gateway: ClientFactory, docker_host: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    lan = await gateway_with_fake(gateway, docker_host)
    assert (await lan.get("/api/v1/no-such-route")).status == 404
    assert (await lan.delete("/api/v1/containers")).status == 405
    remote = await gateway_with_fake(
        gateway, docker_host, auth=REMOTE, ratelimit={"containers": {"per_minute": 60, "burst": 1}}
    )
    assert (await remote.get("/api/v1/containers")).status == 401
    reader = bearer(token(sub="reader", scopes=["read:containers"]))
    assert (await remote.post(f"/api/v1/containers/{CID}/stop", headers=reader)).status == 403
    alice = bearer(token())
    assert (await remote.get("/api/v1/containers", headers=alice)).status == 200
    assert (await remote.get("/api/v1/containers", headers=alice)).status == 429

    seen = [(a["method"], a["route"], a["path"], a["status"], a["principal"]) for a in access(caplog)]
    assert seen == [
        ("GET", "-", "/api/v1/no-such-route", 404, "lan"),
        ("DELETE", "-", "/api/v1/containers", 405, "lan"),
        ("GET", "/api/v1/containers", "/api/v1/containers", 401, "-"),
        ("POST", "/api/v1/containers/{id}/{action}", f"/api/v1/containers/{CID}/stop", 403, "reader"),
        ("GET", "/api/v1/containers", "/api/v1/containers", 200, "alice"),
        ("GET", "/api/v1/containers", "/api/v1/containers", 429, "alice"),
    ]
    assert all(a["client"] == "127.0.0.1" and len(a["request_id"]) == 32 for a in access(caplog))


async def test_access_log_can_be_switched_off(
    gateway: ClientFactory, docker_host: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    client = await gateway_with_fake(gateway, docker_host, logging={"access_log": False})
    assert (await client.get("/api/v1/containers")).status == 200
    assert (await client.get("/nothing")).status == 404
    assert access(caplog) == []


async def test_websocket_upgrade_and_close_are_logged(
    gateway: ClientFactory, docker_host: str, caplog: pytest.LogCaptureFixture, access_watch: AccessWatch
) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    remote = await gateway_with_fake(gateway, docker_host, auth=REMOTE)
    ws = await remote.ws_connect("/api/v1/ws", headers=bearer(token()))
    assert (await ws.receive_json(timeout=10))["type"] == "hello"
    # Logged while the connection is open, not only when it ends.
    [upgrade] = access(caplog)
    assert upgrade["status"] == 101 and upgrade["event"] == "upgrade" and upgrade["principal"] == "alice"
    assert upgrade["route"] == "/api/v1/ws"
    await ws.close()
    await access_watch.until(2)
    closed = access(caplog)[1]
    assert closed["event"] == "close" and closed["status"] == 101
    assert closed["request_id"] == upgrade["request_id"]
    assert closed["duration_ms"] >= upgrade["duration_ms"]

    # Refused before the upgrade: one line with the refusal.
    with pytest.raises(aiohttp.WSServerHandshakeError):
        await remote.ws_connect("/api/v1/ws", headers={"Origin": "https://evil.example"})
    assert access(caplog)[2]["status"] == 403 and "event" not in access(caplog)[2]

    # Upgraded, then refused by the first-message auth: nobody was identified.
    ws = await remote.ws_connect("/api/v1/ws")
    await ws.send_json({"type": "auth", "data": {"token": "not-a-token"}})
    assert (await ws.receive_json(timeout=10))["type"] == "auth_failed"
    await ws.receive(timeout=10)
    await access_watch.until(5)
    assert [(a["event"], a["principal"]) for a in access(caplog)[3:]] == [("upgrade", "-"), ("close", "-")]


async def test_requests_that_end_without_a_response_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)

    async def cancelled(request: web.Request) -> web.StreamResponse:
        raise asyncio.CancelledError

    async def redirected(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/elsewhere")

    with pytest.raises(asyncio.CancelledError):
        await access_log_middleware(make_mocked_request("GET", "/api/v1/containers"), cancelled)
    with pytest.raises(web.HTTPFound):
        await access_log_middleware(make_mocked_request("GET", "/old"), redirected)
    assert [(a["path"], a["status"]) for a in access(caplog)] == [("/api/v1/containers", 499), ("/old", 302)]


# -- format and injection ------------------------------------------------------------------------


async def test_json_lines_parse_and_injection_cannot_forge_a_line(
    gateway: ClientFactory, docker_host: str, log_stream: Callable[[str], io.StringIO]
) -> None:
    stream = log_stream("json")
    client = await gateway_with_fake(gateway, docker_host, auth=REMOTE)
    forged = '\r\n{"level": "INFO", "logger": "nekzus.access", "message": "forged"}\n'
    evil_subject = bearer(token(sub="eve" + forged))
    assert (await client.get("/api/v1/containers", headers=evil_subject)).status == 200
    resp = await client.get("/api/v1/containers/x%0d%0aforged%0a/stats", headers=bearer(token()))
    assert resp.status in (400, 404)
    resp = await client.get("/healthz", headers={"X-Request-ID": 'a" principal=admin'})
    assert len(resp.headers["X-Request-ID"]) == 32
    # A request id with CR LF never gets past the HTTP parser; whatever is logged stays JSON lines.
    host, port = client.server.host, client.server.port
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Request-ID: a\r\n forged\r\nConnection: close\r\n\r\n"
    )
    await writer.drain()
    async with asyncio.timeout(10):
        await reader.read()
    writer.close()
    await writer.wait_closed()

    lines = stream.getvalue().splitlines()
    records = [json.loads(line) for line in lines]
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    assert not any(r.get("message") == "forged" for r in records)
    accessed = [r for r in records if r["logger"] == ACCESS_LOGGER]
    assert set(accessed[0]) >= ACCESS_FIELDS
    assert accessed[0]["principal"] == "eve" + forged and accessed[0]["status"] == 200
    assert accessed[1]["path"] == "/api/v1/containers/x\r\nforged\n/stats"
    assert accessed[2]["request_id"] == resp.headers["X-Request-ID"]


async def test_text_lines_escape_what_a_client_sends(
    gateway: ClientFactory, docker_host: str, log_stream: Callable[[str], io.StringIO]
) -> None:
    stream = log_stream("text")
    client = await gateway_with_fake(gateway, docker_host, auth=REMOTE)
    await client.get("/api/v1/containers/x%0d%0a2026-01-01%20INFO%20forged/stats", headers=bearer(token()))
    await client.get("/api/v1/containers", headers=bearer(token(sub="eve\nforged")))
    lines = stream.getvalue().splitlines()
    # Every line is a record that starts with its time: nothing the client sent began a line.
    assert all(re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ [a-z.]+: ", line) for line in lines)
    access_lines = [line for line in lines if f" INFO {ACCESS_LOGGER}: " in line]
    assert len(access_lines) == 2
    assert 'path="/api/v1/containers/x\\r\\n2026-01-01 INFO forged/stats"' in access_lines[0]
    assert 'principal="eve\\nforged"' in access_lines[1]
    assert " route=/api/v1/containers path=/api/v1/containers status=200 " in access_lines[1]


# -- the application's own lines -----------------------------------------------------------------


async def test_an_unexpected_error_is_logged_with_the_request_id(
    gateway: ClientFactory, docker_host: str, caplog: pytest.LogCaptureFixture
) -> None:
    fake, registry = fake_registry()
    client = await gateway(make_config(docker_host), runtimes=registry)
    caplog.handler.addFilter(RequestIdFilter())  # as configure_logging sets up every handler
    fake.fail["inspect"] = ValueError("boom")
    resp = await client.get(f"/api/v1/containers/{CID}", headers={"X-Request-ID": "req-500"})
    assert resp.status == 500
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    [error] = [r for r in errors if r.name == "nekzus.http.middlewares"]
    assert vars(error)["request_id"] == "req-500" and error.exc_info is not None
    text = TextFormatter().format(error)
    first, *trace = text.splitlines()
    assert first.endswith(f"unhandled error in GET /api/v1/containers/{CID} request_id=req-500")
    assert trace and all(line.startswith("    ") for line in trace)
    entry = json.loads(JsonFormatter().format(error))
    assert entry["request_id"] == "req-500" and "ValueError: boom" in entry["exception"]


async def test_every_line_logged_while_serving_a_request_carries_its_id(
    gateway: ClientFactory, docker_host: str, log_stream: Callable[[str], io.StringIO]
) -> None:
    stream = log_stream("json")
    fake, registry = fake_registry()
    client = await gateway(make_config(docker_host, logging={"access_log": False}), runtimes=registry)
    from runtimes import OperationFailed

    fake.fail["list_containers"] = OperationFailed("the daemon said no")
    resp = await client.get("/api/v1/containers", headers={"X-Request-ID": "list-1"})
    assert resp.status == 500
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    warnings = [r for r in records if r["level"] == "WARNING"]
    assert warnings and all(r["request_id"] == "list-1" for r in warnings)


def test_formatters_keep_one_record_on_one_line() -> None:
    record = logging.LogRecord("nekzus.x", logging.INFO, __file__, 1, "bad %s", ("a\nb\u2028c\x1b",), None)
    assert TextFormatter().format(record).endswith("nekzus.x: bad a\\nb\\u2028c\\x1b")
    assert "\n" not in JsonFormatter().format(record)
    assert json.loads(JsonFormatter().format(record))["message"] == "bad a\nb\u2028c\x1b"
    assert one_line("tab\there") == "tab\\there"


def test_configure_logging_picks_the_format_and_keeps_the_access_log_at_info(
    log_stream: Callable[[str], io.StringIO],
) -> None:
    configure_logging(LoggingConfig(level="WARNING", format="json"), io.StringIO())
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler.formatter, JsonFormatter)
    assert logging.getLogger().level == logging.WARNING
    assert logging.getLogger(ACCESS_LOGGER).isEnabledFor(logging.INFO)
    assert not logging.getLogger("nekzus.http.app").isEnabledFor(logging.INFO)
