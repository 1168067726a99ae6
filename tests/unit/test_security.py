"""Who may do what, each rule tested negatively on a real server on loopback.

"Remote" clients are made by configuring auth.local_networks so that 127.0.0.1 is outside it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp.test_utils import TestClient, TestServer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from multidict import CIMultiDict

from nekzus.config import ApiKeyConfig, ConfigError
from nekzus.http.app import create_app
from nekzus.security import auth
from nekzus.security.auth import hash_api_key, match_api_key, scope_grants
from runtimes import RuntimeRegistry
from tests.support.fakes import FakeRuntime, registry_of, summary
from tests.support.gateway import JSON, ClientFactory, make_config

SECRET = "s" * 40
API_KEY = "nkz_correct-horse-battery-staple"
REMOTE_ONLY = {"local_networks": ["10.0.0.0/8"]}
CID = summary(1).id


def registry() -> RuntimeRegistry:
    return registry_of(FakeRuntime([summary(1)]))


def claims(**overrides: Any) -> dict[str, Any]:
    """Valid claims; an override of None removes that claim."""
    now = int(time.time())
    payload: dict[str, Any] = {
        "sub": "alice",
        "scopes": ["read:*", "write:*"],
        "iat": now,
        "exp": now + 600,
        "iss": "nekzus",
        "aud": "nekzus-clients",
    }
    payload.update(overrides)
    return {k: v for k, v in payload.items() if v is not None}


def token(**overrides: Any) -> str:
    return jwt.encode(claims(**overrides), SECRET, algorithm="HS256")


def bearer(tok: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}"}


def security_config(docker_host: str, *, auth_cfg: dict[str, Any] | None = None, **overrides: Any) -> Any:
    auth_section = {"jwt_secret": SECRET, **REMOTE_ONLY, **(auth_cfg or {})}
    auth_section.setdefault(
        "api_keys", [{"name": "phone", "sha256": hash_api_key(API_KEY), "scopes": ["read:containers"]}]
    )
    return make_config(docker_host, auth=auth_section, **overrides)


@pytest.fixture
async def remote(gateway: ClientFactory, docker_host: str) -> TestClient[Any, Any]:
    return await gateway(security_config(docker_host), runtimes=registry())


async def expect_error(resp: aiohttp.ClientResponse, status: int, code: str) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    body: dict[str, Any] = await resp.json()
    assert body["error"] == code and body["message"]
    return body


# -- LAN trust and client address ----------------------------------------------------------------


async def test_remote_client_without_token_gets_401(remote: TestClient[Any, Any]) -> None:
    for method, path in [
        ("GET", "/api/v1/containers"),
        ("GET", f"/api/v1/containers/{CID}"),
        ("POST", f"/api/v1/containers/{CID}/stop"),
        ("GET", "/api/v1/containers/stats"),
        ("GET", "/api/v1/operations/x"),
        ("GET", "/api/v1/no-such-route"),
    ]:
        resp = await remote.request(method, path)
        await expect_error(resp, 401, "UNAUTHORIZED")
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    # Probes stay open.
    assert (await remote.get("/healthz")).status == 200


async def test_spoofed_forwarded_headers_from_untrusted_peer_are_ignored(
    remote: TestClient[Any, Any],
) -> None:
    for headers in (
        {"X-Forwarded-For": "10.1.2.3"},
        {"Forwarded": "for=10.1.2.3"},
        {"X-Real-IP": "10.1.2.3", "X-Forwarded-For": "10.9.9.9, 10.1.2.3"},
    ):
        await expect_error(await remote.get("/api/v1/containers", headers=headers), 401, "UNAUTHORIZED")


async def test_forwarded_headers_from_a_trusted_proxy_are_honoured(
    gateway: ClientFactory, docker_host: str
) -> None:
    config = security_config(
        docker_host, server={"trusted_proxies": ["127.0.0.1/32"], "tls": {"mode": "off"}}
    )
    client = await gateway(config, runtimes=registry())
    assert (await client.get("/api/v1/containers", headers={"X-Forwarded-For": "10.1.2.3"})).status == 200
    # Only X-Forwarded-For counts unless server.forwarded_header says otherwise.
    forwarded = {"Forwarded": 'for="10.1.2.3:5555"'}
    await expect_error(await client.get("/api/v1/containers", headers=forwarded), 401, "UNAUTHORIZED")
    status = await (await client.get("/api/v1/auth/status", headers={"X-Forwarded-For": "10.1.2.3"})).json()
    assert status["clientAddress"] == "10.1.2.3" and status["local"] is True
    # A LAN address written in front by the client itself does not help: the rightmost untrusted
    # hop (the address the proxy saw) is the client.
    spoofed = {"X-Forwarded-For": "10.1.2.3, 203.0.113.9"}
    await expect_error(await client.get("/api/v1/containers", headers=spoofed), 401, "UNAUTHORIZED")
    # Without any header the proxy itself (127.0.0.1, not LAN here) is the client.
    await expect_error(await client.get("/api/v1/containers"), 401, "UNAUTHORIZED")


def proxied_config(docker_host: str, **server: Any) -> Any:
    """127.0.0.1 is a trusted proxy; 10.0.0.0/8 and 192.0.2.0/24 are the LAN."""
    return security_config(
        docker_host,
        auth_cfg={"local_networks": ["10.0.0.0/8", "192.0.2.0/24"]},
        server={"trusted_proxies": ["127.0.0.1/32"], "tls": {"mode": "off"}, **server},
    )


async def client_address_of(client: TestClient[Any, Any], headers: Any) -> str:
    body = await (await client.get("/api/v1/auth/status", headers=headers)).json()
    return str(body["clientAddress"])


async def test_only_the_configured_forwarded_header_counts(gateway: ClientFactory, docker_host: str) -> None:
    client = await gateway(proxied_config(docker_host), runtimes=registry())
    # The client wrote Forwarded itself; the proxy appended X-Forwarded-For. Forwarded is ignored.
    both = {"Forwarded": "for=192.0.2.5", "X-Forwarded-For": "203.0.113.9"}
    assert await client_address_of(client, both) == "203.0.113.9"
    await expect_error(await client.get("/api/v1/containers", headers=both), 401, "UNAUTHORIZED")

    client = await gateway(proxied_config(docker_host, forwarded_header="forwarded"), runtimes=registry())
    assert await client_address_of(client, both) == "192.0.2.5"
    assert (await client.get("/api/v1/containers", headers={"Forwarded": "for=10.1.2.3"})).status == 200
    # Now X-Forwarded-For is the header a client may write freely.
    spoofed = {"X-Forwarded-For": "10.1.2.3", "Forwarded": 'for="[2001:db8::9]:4711"'}
    assert await client_address_of(client, spoofed) == "2001:db8::9"
    await expect_error(await client.get("/api/v1/containers", headers=spoofed), 401, "UNAUTHORIZED")


async def test_every_line_of_the_forwarded_header_counts(gateway: ClientFactory, docker_host: str) -> None:
    client = await gateway(proxied_config(docker_host), runtimes=registry())
    # The client sent one X-Forwarded-For line, the proxy added its own below it.
    two_lines = CIMultiDict([("X-Forwarded-For", "10.1.2.3"), ("X-Forwarded-For", "203.0.113.9")])
    assert await client_address_of(client, two_lines) == "203.0.113.9"
    await expect_error(await client.get("/api/v1/containers", headers=two_lines), 401, "UNAUTHORIZED")

    client = await gateway(proxied_config(docker_host, forwarded_header="forwarded"), runtimes=registry())
    two_lines = CIMultiDict([("Forwarded", "for=10.1.2.3"), ("Forwarded", "for=203.0.113.9;proto=https")])
    assert await client_address_of(client, two_lines) == "203.0.113.9"
    # An unbalanced quote from the client must not swallow the element its proxy appended.
    for swallowing in ('for=10.1.2.3;x=", for="[2001:db8::9]"', 'for="10.1.2.3, for=203.0.113.9'):
        assert await client_address_of(client, {"Forwarded": swallowing}) not in ("10.1.2.3", "127.0.0.1")
        await expect_error(
            await client.get("/api/v1/containers", headers={"Forwarded": swallowing}), 401, "UNAUTHORIZED"
        )


async def test_ipv4_mapped_ipv6_peer_counts_as_ipv4(gateway: ClientFactory, docker_host: str) -> None:
    config = security_config(docker_host, auth_cfg={"local_networks": ["127.0.0.0/8"]})
    server = TestServer(create_app(config, runtimes=registry()), host="::")
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as session:
            # A dual-stack listener sees this IPv4 client as ::ffff:127.0.0.1.
            url = f"http://127.0.0.1:{server.port}"
            async with session.get(f"{url}/api/v1/auth/status") as resp:
                status = await resp.json()
            assert status["clientAddress"] == "127.0.0.1"
            assert status["local"] is True
            async with session.get(f"{url}/api/v1/containers") as resp:
                assert resp.status == 200
    finally:
        await server.close()


async def test_lan_rules(gateway: ClientFactory, docker_host: str) -> None:
    client = await gateway(
        security_config(docker_host, auth_cfg={"local_networks": ["127.0.0.0/8"]}), runtimes=registry()
    )
    # No token: every scope.
    assert (await client.post(f"/api/v1/containers/{CID}/restart")).status == 202
    # An invalid or expired token: still anonymous LAN (mobile apps refresh tokens late).
    expired = token(exp=int(time.time()) - 3600)
    assert (await client.post(f"/api/v1/containers/{CID}/restart", headers=bearer(expired))).status == 202
    assert (await client.get("/api/v1/containers", headers=bearer("garbage"))).status == 200
    # A valid token: the caller is its subject, with its scopes.
    reader = token(sub="viewer", scopes=["read:containers"])
    status = await (await client.get("/api/v1/auth/status", headers=bearer(reader))).json()
    assert status == {
        "authRequired": False,
        "authenticated": True,
        "local": True,
        "subject": "viewer",
        "scopes": ["read:containers"],
        "clientAddress": "127.0.0.1",
    }
    resp = await client.post(f"/api/v1/containers/{CID}/stop", headers=bearer(reader))
    await expect_error(resp, 403, "FORBIDDEN")


async def test_allow_local_false_requires_tokens_everywhere(gateway: ClientFactory, docker_host: str) -> None:
    config = security_config(docker_host, auth_cfg={"local_networks": ["127.0.0.0/8"], "allow_local": False})
    client = await gateway(config, runtimes=registry())
    await expect_error(await client.get("/api/v1/containers"), 401, "UNAUTHORIZED")
    assert (await client.get("/api/v1/containers", headers=bearer(token()))).status == 200


# -- JWT -----------------------------------------------------------------------------------------


async def test_valid_token_is_accepted_with_leeway(remote: TestClient[Any, Any]) -> None:
    assert (await remote.get("/api/v1/containers", headers=bearer(token()))).status == 200
    just_expired = token(exp=int(time.time()) - 10)  # inside the 30 s leeway
    assert (await remote.get("/api/v1/containers", headers=bearer(just_expired))).status == 200
    space_scope = token(scopes=None, scope="read:containers write:containers")
    assert (await remote.post(f"/api/v1/containers/{CID}/restart", headers=bearer(space_scope))).status == 202


async def test_bad_tokens_are_rejected(remote: TestClient[Any, Any]) -> None:
    now = int(time.time())
    unsigned = jwt.encode(claims(), "", algorithm="none")
    bad = {
        "alg none": unsigned,
        "missing exp": token(exp=None),
        "missing iat": token(iat=None),
        "missing sub": token(sub=None),
        "expired": token(exp=now - 120),
        "wrong aud": token(aud="someone-else"),
        "wrong iss": token(iss="evil"),
        "from the future": token(iat=now + 3600),
        "not yet valid": token(nbf=now + 3600),
        "other secret": jwt.encode(claims(), "x" * 40, algorithm="HS256"),
        "garbage": "not.a.token",
    }
    for label, tok in bad.items():
        resp = await remote.get("/api/v1/containers", headers=bearer(tok))
        await expect_error(resp, 401, "UNAUTHORIZED")
        assert 'error="invalid_token"' in resp.headers["WWW-Authenticate"], label


def rsa_keys(tmp_path: Path) -> tuple[Path, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (tmp_path / "jwt.pub").write_bytes(public)
    return tmp_path / "jwt.pub", private


def forge_hs256(payload: dict[str, Any], key: bytes) -> str:
    """An HS256 token made by hand (PyJWT itself refuses a PEM key as an HMAC secret)."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = b64(b'{"alg":"HS256","typ":"JWT"}') + "." + b64(json.dumps(payload).encode())
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64(signature)


async def test_rs256_and_the_algorithm_confusion_attack(
    gateway: ClientFactory, docker_host: str, tmp_path: Path
) -> None:
    public_path, private = rsa_keys(tmp_path)
    config = security_config(
        docker_host,
        auth_cfg={
            "jwt_algorithm": "RS256",
            "jwt_public_key": str(public_path),
            "jwt_secret": "",
            "api_keys": [],  # verifying only: without the private key, API key logins cannot sign
        },
    )
    client = await gateway(config, runtimes=registry())
    rs_claims = claims(scopes=["read:*"])
    good = jwt.encode(rs_claims, private, algorithm="RS256")
    assert (await client.get("/api/v1/containers", headers=bearer(good))).status == 200
    # HS256 "signed" with the public key as the HMAC secret: the algorithm is never the token's choice.
    forged = forge_hs256(rs_claims, public_path.read_bytes())
    await expect_error(await client.get("/api/v1/containers", headers=bearer(forged)), 401, "UNAUTHORIZED")


def test_unusable_key_refuses_to_start(docker_host: str, tmp_path: Path) -> None:
    (tmp_path / "broken.pub").write_text("-----BEGIN PUBLIC KEY-----\nnot a key\n-----END PUBLIC KEY-----\n")
    config = security_config(
        docker_host,
        auth_cfg={"jwt_algorithm": "ES256", "jwt_public_key": str(tmp_path / "broken.pub"), "api_keys": []},
    )
    with pytest.raises(ConfigError, match=r"^auth\.jwt_public_key: .*broken\.pub is not a usable ES256 key"):
        create_app(config)


def test_an_unusable_key_still_verifies_nothing() -> None:
    # Behind the start-up check, a key that does not load is still a 401 (InvalidToken), never a 500.
    authority = auth.TokenAuthority("ES256", b"not a key", None, "nekzus", "nekzus-clients")
    for tok in (token(), "a.b.c"):
        with pytest.raises(auth.InvalidToken):
            authority.verify(tok)


def write_key(path: Path, key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, *, public: bool) -> Path:
    if public:
        pem = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    else:
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    path.write_bytes(pem)
    return path


def test_api_keys_without_a_signing_key_refuse_to_start(docker_host: str, tmp_path: Path) -> None:
    """RS256 with API keys but no private key used to start, then answer every valid login 500."""
    public_path, _ = rsa_keys(tmp_path)
    auth_cfg = {"jwt_algorithm": "RS256", "jwt_public_key": str(public_path), "jwt_secret": ""}
    with pytest.raises(ValueError, match=r"auth\.api_keys needs auth\.jwt_private_key with RS256"):
        security_config(docker_host, auth_cfg=auth_cfg)


async def test_a_matching_key_pair_signs_logins(
    gateway: ClientFactory, docker_host: str, tmp_path: Path
) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    auth_cfg = {
        "jwt_algorithm": "RS256",
        "jwt_public_key": str(write_key(tmp_path / "jwt.pub", key, public=True)),
        "jwt_private_key": str(write_key(tmp_path / "jwt.key", key, public=False)),
        "jwt_secret": "",
    }
    client = await gateway(security_config(docker_host, auth_cfg=auth_cfg), runtimes=registry())
    resp = await client.post("/api/v1/auth/login", json={"api_key": API_KEY})
    assert resp.status == 200, await resp.text()


@pytest.mark.parametrize("mismatch", ["other pair", "wrong algorithm", "not a key"])
def test_keys_that_cannot_sign_a_verifiable_token_refuse_to_start(
    docker_host: str, tmp_path: Path, mismatch: str
) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = write_key(tmp_path / "jwt.pub", key, public=True)
    if mismatch == "other pair":
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        private = write_key(tmp_path / "jwt.key", other, public=False)
        expected = r"^auth\.jwt_private_key and auth\.jwt_public_key are not one RS256 key pair"
    elif mismatch == "wrong algorithm":
        public = write_key(tmp_path / "jwt.pub", ec.generate_private_key(ec.SECP256R1()), public=True)
        private = write_key(tmp_path / "jwt.key", key, public=False)
        expected = r"^auth\.jwt_public_key: .* is not a usable RS256 key"
    else:
        private = tmp_path / "jwt.key"
        private.write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
        expected = r"^auth\.jwt_private_key: .* is not a usable RS256 private key"
    auth_cfg = {
        "jwt_algorithm": "RS256",
        "jwt_public_key": str(public),
        "jwt_private_key": str(private),
        "jwt_secret": "",
    }
    with pytest.raises(ConfigError, match=expected):
        create_app(security_config(docker_host, auth_cfg=auth_cfg))


# -- scopes --------------------------------------------------------------------------------------


def test_scope_matching_is_whole_segments_only() -> None:
    assert scope_grants("write:containers", "write:containers")
    assert scope_grants("write:*", "write:containers")
    assert scope_grants("*", "read:containers")
    assert scope_grants("write:*", "write:containers:logs")
    assert not scope_grants("write:*", "read:containers")
    assert not scope_grants("write*", "write:containers")
    assert not scope_grants("write:c*", "write:containers")
    assert not scope_grants("*:containers", "write:containers")
    assert not scope_grants("write:[a-z]*", "write:containers")
    assert not scope_grants("write:containers", "write:*")
    assert not scope_grants("read:containers", "write:containers")


async def test_scopes_are_enforced_on_every_route(remote: TestClient[Any, Any]) -> None:
    reader = bearer(token(scopes=["read:containers"]))
    for method, path in [
        ("POST", f"/api/v1/containers/{CID}/start"),
        ("POST", f"/api/v1/containers/{CID}/stop"),
        ("POST", f"/api/v1/containers/{CID}/restart"),
        ("POST", "/api/v1/containers/start-all"),
        ("POST", "/api/v1/containers/stop-all"),
        ("POST", "/api/v1/containers/restart-all"),
        ("POST", "/api/v1/containers/batch"),
    ]:
        body = await expect_error(await remote.request(method, path, headers=reader), 403, "FORBIDDEN")
        assert "write:containers" in body["message"]
    writer = bearer(token(scopes=["write:containers"]))
    for path in (
        "/api/v1/containers",
        f"/api/v1/containers/{CID}",
        "/api/v1/containers/stats",
        "/api/v1/operations/x",
    ):
        body = await expect_error(await remote.get(path, headers=writer), 403, "FORBIDDEN")
        assert "read:containers" in body["message"]
    assert (await remote.get("/api/v1/containers", headers=reader)).status == 200
    wild = bearer(token(scopes=["write*", "*:containers"]))
    await expect_error(await remote.get("/api/v1/containers", headers=wild), 403, "FORBIDDEN")


# -- API keys and the auth endpoints -------------------------------------------------------------


async def test_login_with_api_key(remote: TestClient[Any, Any]) -> None:
    await expect_error(
        await remote.post("/api/v1/auth/login", json={"api_key": "nkz_wrong"}), 401, "UNAUTHORIZED"
    )
    await expect_error(await remote.post("/api/v1/auth/login", json={"api_key": 5}), 400, "INVALID_REQUEST")
    await expect_error(
        await remote.post("/api/v1/auth/login", data=b"{", headers=JSON), 400, "INVALID_REQUEST"
    )
    resp = await remote.post("/api/v1/auth/login", json={"api_key": API_KEY})
    assert resp.status == 200
    body = await resp.json()
    assert body["expiresIn"] == 43200 and body["scopes"] == ["read:containers"]
    issued = bearer(body["token"])
    assert (await remote.get("/api/v1/containers", headers=issued)).status == 200
    await expect_error(await remote.post(f"/api/v1/containers/{CID}/stop", headers=issued), 403, "FORBIDDEN")
    valid = await (await remote.get("/api/v1/auth/validate", headers=issued)).json()
    assert valid["valid"] is True and valid["subject"] == "phone" and valid["scopes"] == ["read:containers"]
    await expect_error(await remote.get("/api/v1/auth/validate"), 401, "UNAUTHORIZED")
    await expect_error(
        await remote.get("/api/v1/auth/validate", headers=bearer("x.y.z")), 401, "UNAUTHORIZED"
    )
    status = await (await remote.get("/api/v1/auth/status")).json()
    assert status["authRequired"] is True and status["authenticated"] is False and status["local"] is False


def test_api_key_comparison_touches_every_key(monkeypatch: pytest.MonkeyPatch) -> None:
    keys = [ApiKeyConfig(name=f"k{n}", sha256=hash_api_key(f"key-{n}")) for n in range(5)]
    calls: list[str] = []
    real = hmac.compare_digest

    def counting(a: str, b: str) -> bool:
        calls.append(b)
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    for presented, expected in (("key-0", "k0"), ("key-4", "k4"), ("nope", None)):
        calls.clear()
        found = match_api_key(presented, keys)
        assert (found.name if found else None) == expected
        # Constant work: every configured hash is compared, wherever (or whether) the match is.
        assert calls == [k.sha256 for k in keys]


async def test_login_has_its_own_stricter_limit(remote: TestClient[Any, Any]) -> None:
    for _ in range(10):
        assert (await remote.post("/api/v1/auth/login", json={"api_key": "nkz_wrong"})).status == 401
    resp = await remote.post("/api/v1/auth/login", json={"api_key": API_KEY})
    await expect_error(resp, 429, "RATE_LIMITED")
    assert int(resp.headers["Retry-After"]) >= 1


# -- rate limits ---------------------------------------------------------------------------------


@pytest.fixture
async def limited(gateway: ClientFactory, docker_host: str) -> TestClient[Any, Any]:
    config = security_config(docker_host, ratelimit={"containers": {"per_minute": 30, "burst": 20}})
    return await gateway(config, runtimes=registry())


async def test_burst_of_20_then_429(limited: TestClient[Any, Any]) -> None:
    headers = bearer(token())
    for n in range(20):
        resp = await limited.get("/api/v1/containers", headers=headers)
        assert resp.status == 200, n
        assert resp.headers["RateLimit-Limit"] == "20"
        assert resp.headers["RateLimit-Remaining"] == str(19 - n)
        assert 0 <= int(resp.headers["RateLimit-Reset"]) <= 40
    resp = await limited.get(f"/api/v1/containers/{CID}", headers=headers)
    body = await expect_error(resp, 429, "RATE_LIMITED")
    assert 1 <= int(resp.headers["Retry-After"]) <= 40
    assert resp.headers["RateLimit-Remaining"] == "0"
    assert body["message"]
    # The pool is shared by every container route, and other routes are not in it.
    await expect_error(
        await limited.post(f"/api/v1/containers/{CID}/stop", headers=headers), 429, "RATE_LIMITED"
    )
    assert (await limited.get("/api/v1/operations/x", headers=headers)).status == 404
    assert (await limited.get("/healthz")).status == 200
    # Another subject has a bucket of its own.
    assert (await limited.get("/api/v1/containers", headers=bearer(token(sub="bob")))).status == 200


async def test_connections_from_different_ports_share_one_bucket(
    gateway: ClientFactory, docker_host: str
) -> None:
    # Anonymous LAN callers are keyed by their address alone.
    config = security_config(
        docker_host,
        auth_cfg={"local_networks": ["127.0.0.0/8"]},
        ratelimit={"containers": {"per_minute": 30, "burst": 20}},
    )
    client = await gateway(config, runtimes=registry())
    ports: set[int] = set()
    statuses = []
    for _ in range(21):
        # A new TCP connection, so a new source port, for every request.
        reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
        ports.add(writer.get_extra_info("sockname")[1])
        writer.write(b"GET /api/v1/containers HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        status_line = await asyncio.wait_for(reader.readline(), 10)
        statuses.append(int(status_line.split()[1]))
        writer.close()
        await writer.wait_closed()
    assert len(ports) > 1
    assert statuses == [200] * 20 + [429]


# -- secrets and start-up ------------------------------------------------------------------------


def test_generated_secret_is_private_and_reused(tmp_path: Path, docker_host: str) -> None:
    config = make_config(docker_host, server={"data_dir": str(tmp_path), "tls": {"mode": "off"}})
    first = auth.authority_from_config(config)
    path = tmp_path / "jwt_secret"
    assert path.stat().st_mode & 0o777 == 0o600
    second = auth.authority_from_config(config)
    assert first.verify_key == second.verify_key and len(first.verify_key) >= 32
    tok = first.issue("cli", ["read:*"], 60)
    assert second.verify(tok).subject == "cli"
    path.write_text("short\n")
    with pytest.raises(ConfigError, match=r"auth\.jwt_secret"):
        auth.authority_from_config(config)


def test_identity_parsing_and_rate_keys() -> None:
    import ipaddress

    from nekzus.client_address import client_address, forwarded_for, parse_ip, rate_key
    from nekzus.client_address import x_forwarded_for as xff

    assert str(parse_ip("::ffff:192.168.1.5")) == "192.168.1.5"
    assert str(parse_ip('"[2001:db8::1]:4711"')) == "2001:db8::1"
    assert str(parse_ip("198.51.100.7:8080")) == "198.51.100.7"
    assert str(parse_ip("fe80::1%eth0")) == "fe80::1"
    assert parse_ip("unknown") is None and parse_ip("") is None
    # An IPv6 client is one /64; the port never matters.
    assert (
        rate_key(parse_ip("2001:db8:1:2::a"))
        == rate_key(parse_ip("2001:db8:1:2:ffff::1"))
        == "2001:db8:1:2::/64"
    )
    assert rate_key(parse_ip("198.51.100.7:1")) == rate_key(parse_ip("198.51.100.7:2")) == "198.51.100.7"
    trusted = [ipaddress.ip_network("10.0.0.0/8")]
    # Trusted hops are skipped from the right; the first untrusted one is the client.
    assert str(client_address("10.0.0.2", xff(["198.51.100.7, 10.0.0.9"]), trusted)) == "198.51.100.7"
    assert str(client_address("10.0.0.2", xff(["1.1.1.1, 198.51.100.7"]), trusted)) == "198.51.100.7"
    assert (
        str(client_address("10.0.0.2", xff(["1.1.1.1", "198.51.100.7, 10.0.0.9"]), trusted)) == "198.51.100.7"
    )
    # An unparseable hop stops the walk at the last trusted address.
    assert str(client_address("10.0.0.2", xff(["198.51.100.7, unknown"]), trusted)) == "10.0.0.2"
    # Headers from an untrusted peer count for nothing.
    assert str(client_address("198.51.100.7", xff(["10.0.0.9"]), trusted)) == "198.51.100.7"
    assert str(client_address("::ffff:10.0.0.2", forwarded_for(["for=192.0.2.1"]), trusted)) == "192.0.2.1"
    # RFC 7239 elements: every line, quotes and ports stripped later, "" for an element without for=.
    assert forwarded_for(['For="[2001:db8::1]:4711";proto=https, by=x', "for=192.0.2.1"]) == [
        '"[2001:db8::1]:4711"',
        "",
        "192.0.2.1",
    ]
    assert (
        str(client_address("10.0.0.2", forwarded_for(["for=192.0.2.9, proto=http"]), trusted)) == "10.0.0.2"
    )
    assert forwarded_for([]) == [] and xff([]) == [] and xff([" , 192.0.2.1,"]) == ["192.0.2.1"]


async def test_limiter_sweeps_on_a_timer_not_after_every_hit() -> None:
    from nekzus.config import RateLimitConfig
    from nekzus.security.ratelimit import RateLimiter, SweptMemoryStorage

    limiter = RateLimiter(RateLimitConfig(containers={"per_minute": 30, "burst": 20}))
    storage = limiter._storage
    assert isinstance(storage, SweptMemoryStorage)
    for n in range(50):
        decision = await limiter.hit("containers", f"ip:10.0.0.{n}")
        assert decision.allowed and decision.remaining == 19
    # No clean-up pass (and no worker thread) was started by the hits.
    assert storage.timer is None
    assert len(storage.events) == 50
    storage.sweep(time.time())
    assert len(storage.events) == 50  # nothing has expired yet
    storage.sweep(time.time() + 41)  # the 40 s window has passed for every entry
    assert storage.events == {} and not storage.locks
    assert (await limiter.hit("containers", "ip:10.0.0.1")).remaining == 19
    await limiter.close()
