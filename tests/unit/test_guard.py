"""Checks before identity: the Host a request names, the page a browser sent it from, JSON bodies,
and what the health endpoints tell a caller nobody vouched for.

Each attack is run against a LAN client (127.0.0.1 is local by default), whose trust is what a
foreign page or a rebound name would borrow.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from cryptography import x509
from multidict import CIMultiDict

from nekzus.config import ConfigError, load_config
from nekzus.hosts import HostPort, Origin, allowed_host_entry, parse_host, parse_origin
from nekzus.security import guard, tls
from nekzus.security.guard import AllowedHosts, allowed_hosts, interface_addresses, machine_names
from nekzus.security.tls import CERT_FILE, generate_self_signed
from runtimes import ContainerState, RuntimeRegistry, Unavailable
from tests.support.fakes import FakeRuntime, registry_of, summary
from tests.support.gateway import ClientFactory, make_config
from tests.unit.test_security import bearer, expect_error, security_config, token

CID = summary(1).id
EVIL = "https://evil.example"


def fake() -> tuple[FakeRuntime, RuntimeRegistry]:
    runtime = FakeRuntime([summary(1, state=ContainerState.EXITED)])
    return runtime, registry_of(runtime)


def own_origin(client: TestClient[Any, Any], host: str = "127.0.0.1") -> str:
    return f"http://{host}:{client.server.port}"


@pytest.fixture
async def lan(gateway: ClientFactory, docker_host: str) -> tuple[TestClient[Any, Any], FakeRuntime]:
    runtime, registry = fake()
    config = make_config(
        docker_host, server={"tls": {"mode": "off"}, "cors_origins": ["https://app.example.com:8443"]}
    )
    return await gateway(config, runtimes=registry), runtime


async def raw_request(client: TestClient[Any, Any], request: bytes) -> tuple[int, bytes]:
    """Sends bytes as they are (headers aiohttp's client would fix) and reads one response."""
    reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(10):
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(
                next(
                    line.split(b":")[1]
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                )
            )
            body = await reader.readexactly(length)
    finally:
        writer.close()
        await writer.wait_closed()
    return int(head.split(b" ")[1]), body


# -- Origin and Sec-Fetch-Site ------------------------------------------------------------------


async def test_cross_site_state_changes_are_refused(lan: tuple[TestClient[Any, Any], FakeRuntime]) -> None:
    client, runtime = lan
    # The reported attack: a page anywhere drives a LAN user's browser to restart a container.
    attack = await client.post(
        "/api/v1/containers/batch",
        data=json.dumps({"action": "start", "containerIds": [CID]}),
        headers={"Origin": EVIL, "Content-Type": "text/plain"},
    )
    await expect_error(attack, 403, "ORIGIN_NOT_ALLOWED")
    port = client.server.port
    assert port is not None
    foreign: list[Any] = [
        {"Origin": "null"},
        {"Origin": f"http://127.0.0.1:{port + 1}"},  # the gateway's host, another port
        {"Origin": f"http://127.0.0.1.evil.example:{port}"},
        {"Origin": f"http://evil.example:{port}"},
        {"Origin": "file://"},
        {"Origin": "chrome-extension://abcdef"},
        {"Origin": "garbage"},
        {"Origin": "https://app.example.com"},  # listed with port 8443, not 443
        {"Sec-Fetch-Site": "cross-site"},  # a browser that did not say where from
        {"Sec-Fetch-Site": "Cross-Site", "Origin": EVIL},
        {"Sec-Fetch-Site": "same-origin", "Origin": EVIL},  # Origin decides when present
        CIMultiDict([("Origin", own_origin(client)), ("Origin", EVIL)]),
    ]
    for headers in foreign:
        for method, path, kwargs in cast(
            list[tuple[str, str, dict[str, Any]]],
            [
                ("POST", "/api/v1/containers/batch", {"json": {"action": "start", "containerIds": [CID]}}),
                ("POST", f"/api/v1/containers/{CID}/start", {}),
                ("POST", "/api/v1/auth/login", {"json": {"api_key": "x"}}),  # public routes too
                ("DELETE", f"/api/v1/containers/{CID}", {}),
                ("PUT", "/api/v1/no-such-route", {}),
            ],
        ):
            resp = await client.request(method, path, headers=headers, **kwargs)
            await expect_error(resp, 403, "ORIGIN_NOT_ALLOWED")
    assert runtime.containers[summary(1).full_id].state is ContainerState.EXITED


async def test_a_token_does_not_make_a_foreign_page_welcome(gateway: ClientFactory, docker_host: str) -> None:
    runtime, registry = fake()
    remote = await gateway(security_config(docker_host), runtimes=registry)
    resp = await remote.post(f"/api/v1/containers/{CID}/start", headers={**bearer(token()), "Origin": EVIL})
    await expect_error(resp, 403, "ORIGIN_NOT_ALLOWED")
    assert runtime.containers[summary(1).full_id].state is ContainerState.EXITED
    resp = await remote.post(f"/api/v1/containers/{CID}/start", headers=bearer(token()))
    assert resp.status == 202


async def test_own_and_listed_origins_may_change_things(
    lan: tuple[TestClient[Any, Any], FakeRuntime],
) -> None:
    client, _ = lan
    port = client.server.port
    allowed: list[dict[str, str]] = [
        {"Origin": own_origin(client)},
        {"Origin": f"HTTP://127.0.0.1:{port}"},
        # The scheme is not compared: a TLS-terminating proxy makes https into http.
        {"Origin": f"https://127.0.0.1:{port}"},
        {"Origin": f"http://localhost:{port}", "Host": f"LOCALHOST:{port}"},
        {"Origin": "http://localhost", "Host": "localhost"},  # default ports on both sides
        {"Origin": "https://localhost", "Host": "localhost"},
        # A listed origin is cross-site by nature.
        {"Origin": "https://app.example.com:8443", "Sec-Fetch-Site": "cross-site"},
        {"Origin": "https://APP.example.com:8443"},
        {"Sec-Fetch-Site": "same-origin"},
        {"Sec-Fetch-Site": "none"},
        {},  # scripts and apps send no Origin at all
    ]
    for headers in allowed:
        resp = await client.post(
            "/api/v1/containers/batch", json={"action": "start", "containerIds": [CID]}, headers=headers
        )
        assert resp.status == 200, (headers, await resp.text())
    for headers in (
        {"Origin": "http://localhost:8080", "Host": "localhost"},
        {"Origin": "http://localhost", "Host": "localhost:8443"},
    ):
        resp = await client.post(f"/api/v1/containers/{CID}/stop", headers=headers)
        await expect_error(resp, 403, "ORIGIN_NOT_ALLOWED")
    # Reading is not refused (a foreign page cannot read the answer without CORS).
    assert (
        await client.get("/api/v1/containers", headers={"Origin": EVIL, "Sec-Fetch-Site": "cross-site"})
    ).status == 200


async def test_only_json_bodies_are_accepted(lan: tuple[TestClient[Any, Any], FakeRuntime]) -> None:
    client, runtime = lan
    batch = json.dumps({"action": "start", "containerIds": [CID]})
    form = aiohttp.FormData()
    form.add_field("action", "start")
    form.add_field("file", b"{}", filename="x.json", content_type="application/json")
    for kwargs in cast(
        list[dict[str, Any]],
        [
            {"data": batch, "headers": {"Content-Type": "text/plain"}},
            {"data": batch, "headers": {"Content-Type": "text/plain; charset=utf-8"}},
            {"data": {"action": "start", "containerIds": CID}},  # urlencoded form
            {"data": form},  # multipart
            {"data": batch.encode(), "skip_auto_headers": ["Content-Type"]},  # no Content-Type at all
            {"data": batch, "headers": {"Content-Type": "application/json-patch+json"}},
            {"data": batch, "headers": {"Content-Type": "text/json"}},
            {"data": batch, "headers": {"Content-Type": "application/json, text/plain"}},
        ],
    ):
        resp = await client.post("/api/v1/containers/batch", **kwargs)
        await expect_error(resp, 415, "UNSUPPORTED_MEDIA_TYPE")
    assert runtime.containers[summary(1).full_id].state is ContainerState.EXITED
    for content_type in (
        "application/json",
        "Application/JSON; charset=UTF-8",
        "application/json ; charset=utf-8",
    ):
        resp = await client.post(
            "/api/v1/containers/batch", data=batch, headers={"Content-Type": content_type}
        )
        assert resp.status == 200, (content_type, await resp.text())
    # Actions without a body need no Content-Type, whatever one says.
    assert (
        await client.post(f"/api/v1/containers/{CID}/stop", skip_auto_headers=["Content-Type"])
    ).status == 202
    # A restart: its pre-check does not depend on whether the stop above has finished yet.
    resp = await client.post(
        f"/api/v1/containers/{CID}/restart", headers={"Content-Type": "text/plain", "Content-Length": "0"}
    )
    assert resp.status == 202


# -- Host ----------------------------------------------------------------------------------------


async def test_foreign_hosts_are_refused_before_auth(lan: tuple[TestClient[Any, Any], FakeRuntime]) -> None:
    client, _ = lan
    port = client.server.port
    for host in (
        f"evil.example:{port}",
        "evil.example",
        f"EVIL.example:{port}",
        f"127.0.0.1.nip.io:{port}",
        f"[2001:db8::1]:{port}",
        f"localhost.evil.example:{port}",
        "10.0.0.1",  # an address of someone else
    ):
        for path in ("/api/v1/containers", "/healthz", "/api/v1/health", "/api/v1/no-such-route"):
            await expect_error(await client.get(path, headers={"Host": host}), 421, "HOST_NOT_ALLOWED")
        # Before auth and before the browser checks: a token or an Origin changes nothing.
        resp = await client.post(f"/api/v1/containers/{CID}/start", headers={"Host": host, "Origin": EVIL})
        await expect_error(resp, 421, "HOST_NOT_ALLOWED")
    for host in (
        f"LOCALHOST:{port}",
        "localhost.",
        f"[::1]:{port}",
        f"[::ffff:127.0.0.1]:{port}",
        "127.0.0.1",
        f"[0:0:0:0:0:0:0:1]:{port}",
    ):
        assert (await client.get("/api/v1/containers", headers={"Host": host})).status == 200, host


async def test_forwarded_host_headers_never_count(gateway: ClientFactory, docker_host: str) -> None:
    _, registry = fake()
    config = make_config(docker_host, server={"tls": {"mode": "off"}, "trusted_proxies": ["127.0.0.0/8"]})
    client = await gateway(config, runtimes=registry)
    port = client.server.port
    spoofed = {
        "Host": f"evil.example:{port}",
        "X-Forwarded-Host": f"127.0.0.1:{port}",
        "Forwarded": f"host=127.0.0.1:{port}",
    }
    await expect_error(await client.get("/api/v1/containers", headers=spoofed), 421, "HOST_NOT_ALLOWED")
    harmless = {
        "X-Forwarded-Host": f"evil.example:{port}",
        "Forwarded": "host=evil.example",
        "X-Host": "evil.example",
    }
    assert (await client.get("/api/v1/containers", headers=harmless)).status == 200


async def test_malformed_or_missing_hosts_are_400(lan: tuple[TestClient[Any, Any], FakeRuntime]) -> None:
    client, _ = lan
    port = client.server.port
    for host in (
        "",
        " ",
        "::1",
        f"127.0.0.1:{port}:1",
        "127.0.0.1:99999",
        "127.0.0.1:0",
        "127.0.0.1:",
        f"evil.example:{port}@127.0.0.1",
        "127.0.0.1/x",
        "local host",
        "[127.0.0.1]",
        "[::1",
        "..",
        "a" * 64 + ".example",
    ):
        await expect_error(
            await client.get("/api/v1/containers", headers={"Host": host}), 400, "INVALID_HOST"
        )
    # HTTP/1.0 may leave the Host out: then it has none to check, and that is refused too.
    status, body = await raw_request(client, b"GET /api/v1/containers HTTP/1.0\r\n\r\n")
    assert status == 400 and json.loads(body)["error"] == "INVALID_HOST"
    # Two Host headers: the HTTP parser itself refuses them.
    status, _ = await raw_request(
        client,
        f"GET /api/v1/containers HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nHost: evil.example\r\n\r\n".encode(),
    )
    assert status == 400


async def test_allowed_hosts_config_adds_names_and_star_opts_out(
    gateway: ClientFactory, docker_host: str
) -> None:
    _, registry = fake()
    config = make_config(
        docker_host,
        server={"tls": {"mode": "off"}, "allowed_hosts": ["GW.example.com.", "*.lan.example", "[fd00::7]"]},
    )
    client = await gateway(config, runtimes=registry)
    for host in (
        "gw.example.com",
        "gw.example.com:443",
        "nas.lan.example:8443",
        "[fd00::7]:8443",
        f"localhost:{client.server.port}",
    ):
        assert (await client.get("/api/v1/containers", headers={"Host": host})).status == 200, host
    for host in ("lan.example", "a.b.lan.example", "evil-lan.example", "example.com", "[fd00::8]"):
        await expect_error(
            await client.get("/api/v1/containers", headers={"Host": host}), 421, "HOST_NOT_ALLOWED"
        )

    _, registry = fake()
    config = make_config(docker_host, server={"tls": {"mode": "off"}, "allowed_hosts": ["*"]})
    client = await gateway(config, runtimes=registry)
    assert (await client.get("/api/v1/containers", headers={"Host": "backend.internal:9000"})).status == 200
    await expect_error(await client.get("/api/v1/containers", headers={"Host": "a b"}), 400, "INVALID_HOST")


def test_allowed_hosts_entries_are_validated(tmp_path: Path) -> None:
    assert allowed_host_entry(" Example.COM. ") == "example.com"
    assert allowed_host_entry("[::1]") == allowed_host_entry("::1") == "::1"
    assert allowed_host_entry("::ffff:10.0.0.1") == "10.0.0.1"
    assert allowed_host_entry("fe80::1%eth0") == allowed_host_entry("[FE80::1%eth0]") == "fe80::1"
    assert allowed_host_entry("*.Example.com") == "*.example.com"
    for bad in (
        "example.com:8443",
        "[::1]:8443",
        "https://example.com",
        "*.10.0.0.1",
        "*example.com",
        "a b",
        "",
        "*.*.example.com",
    ):
        assert allowed_host_entry(bad) is None, bad
        path = tmp_path / "c.yaml"
        path.write_text(json.dumps({"server": {"allowed_hosts": ["localhost", bad]}}))
        with pytest.raises(ConfigError, match=r"server\.allowed_hosts"):
            load_config(path)
    path.write_text(json.dumps({"server": {"allowed_hosts": ["GW.lan", "[fd00::1]", "*"]}}))
    assert load_config(path).server.allowed_hosts == ["gw.lan", "fd00::1", "*"]


def test_host_and_origin_parsing() -> None:
    assert parse_host("Example.COM.:8443") == HostPort("example.com", 8443)
    assert parse_host("[FD00::0001]") == HostPort("fd00::1", None)
    assert parse_host("[fe80::1%25eth0]:80") == HostPort("fe80::1", 80)
    assert parse_host("[::ffff:7f00:1]:1") == HostPort("127.0.0.1", 1)
    assert parse_origin("https://Example.com") == Origin("https", "example.com", 443)
    assert parse_origin("http://[::1]:8080") == Origin("http", "::1", 8080)
    for bad in ("null", "", "https://", "https://a/b", "https://u@a", "ftp://a", "https://a:99999"):
        assert parse_origin(bad) is None, bad


# -- the default list ----------------------------------------------------------------------------


def test_default_hosts_are_localhost_the_machine_and_the_bind_address(
    docker_host: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert {"127.0.0.1", "::1"} <= interface_addresses()  # read from the real interfaces
    monkeypatch.setattr(guard, "interface_addresses", lambda: frozenset({"127.0.0.1", "::1", "192.0.2.10"}))
    hosts = allowed_hosts(make_config(docker_host, server={"host": "127.0.0.1", "tls": {"mode": "off"}}))
    for name in ("localhost", "127.0.0.1", "::1", socket.gethostname().lower(), socket.getfqdn().lower()):
        assert hosts.allows(name), name
    assert all(hosts.allows(name.lower()) for name in machine_names())
    if "." not in socket.gethostname():
        assert hosts.allows(f"{socket.gethostname().lower()}.local")
    assert not hosts.allows("sub.localhost") and not hosts.allows("evil.example")
    # Bound to loopback, the other interfaces cannot be reached: their addresses are not listed.
    assert not hosts.allows("192.0.2.10")
    bound = allowed_hosts(make_config(docker_host, server={"host": "0.0.0.0", "tls": {"mode": "off"}}))
    assert bound.allows("192.0.2.10") and not bound.allows("192.0.2.11")
    assert allowed_hosts(make_config(docker_host, server={"host": "::", "tls": {"mode": "off"}})).allows(
        "192.0.2.10"
    )
    bound_to_one = allowed_hosts(
        make_config(docker_host, server={"host": "198.51.100.4", "tls": {"mode": "off"}})
    )
    assert bound_to_one.allows("198.51.100.4") and bound_to_one.allows("localhost")
    assert not bound_to_one.allows("192.0.2.10")
    named = allowed_hosts(make_config(docker_host, server={"host": "Gateway.lan", "tls": {"mode": "off"}}))
    assert named.allows("gateway.lan")


def test_new_interface_addresses_are_found_while_running(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(guard, "interface_addresses", lambda: frozenset({"192.0.2.10"}))
    hosts = AllowedHosts(["localhost"], all_interfaces=True, refresh_seconds=0)
    assert hosts.allows("192.0.2.10") and not hosts.allows("192.0.2.11")
    monkeypatch.setattr(guard, "interface_addresses", lambda: frozenset({"192.0.2.11"}))
    assert hosts.allows("192.0.2.11") and not hosts.allows("192.0.2.10")
    # Names never trigger a read, and the reads are spaced out.
    calls: list[int] = []

    def counted() -> frozenset[str]:
        calls.append(1)
        return frozenset()

    monkeypatch.setattr(guard, "interface_addresses", counted)
    spaced = AllowedHosts([], all_interfaces=True, refresh_seconds=3600)
    assert not spaced.allows("evil.example") and not spaced.allows("192.0.2.99") and len(calls) == 1


def certificate(*names: x509.GeneralName) -> bytes:
    return tls.self_signed(names, common_name="test", days=1)[0]


def test_certificate_names_are_allowed_hosts(tmp_path: Path, docker_host: str) -> None:
    cert = tmp_path / "cert.pem"
    cert.write_bytes(
        certificate(
            x509.DNSName("GW.example.com"),
            x509.DNSName("*.svc.example"),
            x509.IPAddress(ipaddress.ip_address("198.51.100.7")),
            x509.RFC822Name("ops@example.com"),
        )
    )
    files = {"mode": "files", "cert": str(cert), "key": str(cert)}
    hosts = allowed_hosts(make_config(docker_host, server={"tls": files}))
    for name in ("gw.example.com", "api.svc.example", "198.51.100.7"):
        assert hosts.allows(name), name
    assert not hosts.allows("svc.example") and not hosts.allows("ops@example.com")
    # A certificate without alternative names adds nothing, and breaks nothing.
    cert.write_bytes(certificate())
    assert allowed_hosts(make_config(docker_host, server={"tls": files})).allows("localhost")
    cert.write_text("not a certificate")
    with pytest.raises(ConfigError, match=r"server\.tls"):
        allowed_hosts(make_config(docker_host, server={"tls": files}))
    # auto: the names the certificate will be made for, then the ones of the stored certificate.
    auto = {"host": "gw.lan", "data_dir": str(tmp_path), "tls": {"mode": "auto"}}
    assert allowed_hosts(make_config(docker_host, server=auto)).allows("gw.lan")
    stored = tmp_path / CERT_FILE
    stored.parent.mkdir()
    stored.write_bytes(generate_self_signed("old-name.lan")[0])
    assert allowed_hosts(make_config(docker_host, server=auto)).allows("old-name.lan")


# -- the WebSocket upgrade ----------------------------------------------------------------------


async def test_dns_rebinding_cannot_reach_the_websocket(
    lan: tuple[TestClient[Any, Any], FakeRuntime],
) -> None:
    client, _ = lan
    port = client.server.port
    assert port is not None
    # The attacker's name now resolves to the gateway: the browser sends its own name and origin.
    rebound = {"Host": f"rebind.evil.example:{port}", "Origin": f"http://rebind.evil.example:{port}"}
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await client.ws_connect("/api/v1/ws", headers=rebound)
    assert refused.value.status == 421
    # A foreign page on an allowed name is the Origin rule's, the same as for HTTP.
    for origin in (EVIL, "null", f"http://127.0.0.1:{port + 1}"):
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await client.ws_connect("/api/v1/ws", headers={"Origin": origin})
        assert refused.value.status == 403
    for origin in (own_origin(client), "https://app.example.com:8443"):
        ws = await client.ws_connect("/api/v1/ws", headers={"Origin": origin})
        hello = json.loads((await ws.receive(timeout=10)).data)
        assert hello["type"] == "hello"
        await ws.close()


# -- what a caller nobody vouched for learns ---------------------------------------------------


async def test_health_details_only_for_lan_or_authenticated_callers(
    gateway: ClientFactory, docker_host: str
) -> None:
    _, registry = fake()
    remote = await gateway(security_config(docker_host), runtimes=registry)
    for headers in ({}, bearer("not-a-token"), bearer(token(exp=1))):
        body = await (await remote.get("/api/v1/health", headers=headers)).json()
        assert body == {"status": "healthy"}, headers
    detailed = await (await remote.get("/api/v1/health", headers=bearer(token(scopes=[])))).json()
    assert detailed["version"] and detailed["runtimes"]["docker"]["version"] == "1.0" and "uptime" in detailed
    lan = await gateway(make_config(docker_host, server={"tls": {"mode": "off"}}), runtimes=fake()[1])
    detailed = await (await lan.get("/api/v1/health")).json()
    assert detailed["runtimes"]["docker"]["apiVersion"] == "1.0"


async def test_readyz_shows_statuses_but_no_versions(gateway: ClientFactory, docker_host: str) -> None:
    runtime, registry = fake()
    remote = await gateway(security_config(docker_host), runtimes=registry)
    resp = await remote.get("/readyz")
    assert resp.status == 200
    assert await resp.json() == {"status": "ready", "runtimes": {"docker": {"status": "healthy"}}}
    runtime.fail["ping"] = Unavailable("down")
    body = await expect_error(await remote.get("/readyz"), 503, "RUNTIME_UNAVAILABLE")
    assert body["runtimes"] == {"docker": {"status": "unavailable"}}
    assert (await remote.get("/healthz")).status == 200
