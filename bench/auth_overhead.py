"""What authentication and rate limiting cost on GET /api/v1/containers (100 linked containers).

Two gateways side by side on the same daemon, same settings and same TLS (whatever the run uses,
``auto`` unless --gateway-env says otherwise), each with its own data directory:

- secured: ``nekzus serve`` as shipped, but with ``auth.local_networks`` = 10.0.0.0/8, so the
  loopback client is remote and must present a token: a valid HS256 JWT on every request, which
  the gateway verifies; rate limiting on, its container limit raised so it never answers 429
  (the limiter still keys on the token's subject and books every request);
- plain: the same app with ``client_address_middleware`` and ``auth_middleware`` removed
  (``bench/_plain_server.py``) and ``NEKZUS_RATELIMIT__ENABLED=false``.

Both clients send the same request bytes (the plain one carries the token too, unread), so the
difference is the gateway's own work. Calls alternate between the two, the order swapping every
round, so machine noise hits both alike. Target: secured median ≤ 1.10 × plain median.
"""

from __future__ import annotations

import secrets
import sys
import time
from pathlib import Path

import jwt

from bench._harness import (
    Bench,
    Gateway,
    Row,
    another_gateway,
    cpu_seconds,
    ms,
    percentile,
    run_script,
    timed_get,
)
from nekzus.config import AuthConfig
from nekzus.security.auth import READ_CONTAINERS

CONTAINERS = 100
WARMUP = 30
CALLS = 600  # per gateway: the difference is ~1 ms in ~20 ms calls that spread widely under load
TARGET_PERCENT = 10.0
PATH = "/api/v1/containers"  # the linked ones: every container here carries nekzus.enable=true
REMOTE_ONLY = '["10.0.0.0/8"]'  # local networks that leave loopback out: the client is remote
HIDDEN = {"NEKZUS_AUTH__JWT_SECRET", "NEKZUS_SERVER__DATA_DIR"}  # not printed
PLAIN_SERVER = [sys.executable, str(Path(__file__).with_name("_plain_server.py"))]


def bearer(secret: str, subject: str = "bench-client") -> dict[str, str]:
    """A valid HS256 token as a client would present it, readable for one hour."""
    defaults = AuthConfig()
    now = int(time.time())
    claims = {
        "sub": subject,
        "scopes": [READ_CONTAINERS],
        "iat": now,
        "exp": now + 3600,
        "iss": defaults.issuer,
        "aud": defaults.audience,
    }
    return {"Authorization": "Bearer " + jwt.encode(claims, secret, algorithm="HS256")}


async def _status_and_headers(gateway: Gateway, headers: dict[str, str] | None) -> tuple[int, dict[str, str]]:
    async with gateway.session(headers) as session, session.get(PATH) as resp:
        await resp.read()
        return resp.status, dict(resp.headers)


async def _check_setup(secured: Gateway, plain: Gateway, token: dict[str, str]) -> None:
    """The secured gateway demands the token and books requests; the plain one does neither."""
    status, _ = await _status_and_headers(secured, None)
    assert status == 401, f"secured gateway without a token answered {status}, not 401"
    remaining = []
    for _ in range(2):
        status, headers = await _status_and_headers(secured, token)
        assert status == 200, f"secured gateway with a valid token answered {status}"
        assert "RateLimit-Remaining" in headers, "secured gateway sent no RateLimit headers"
        remaining.append(int(headers["RateLimit-Remaining"]))
    assert remaining[1] < remaining[0], f"the limiter did not count the requests: {remaining}"
    status, headers = await _status_and_headers(plain, None)
    assert status == 200, f"plain gateway without a token answered {status}: auth is still on"
    assert "RateLimit-Limit" not in headers, "plain gateway still rate-limits"


async def measure(bench: Bench) -> list[Row]:
    ids = await bench.engine.create_many(CONTAINERS, "bench-auth", labels={"nekzus.enable": "true"})
    secret = secrets.token_urlsafe(48)
    common = {"NEKZUS_AUTH__LOCAL_NETWORKS": REMOTE_ONLY, "NEKZUS_AUTH__JWT_SECRET": secret}
    token = bearer(secret)
    async with (
        another_gateway(bench, {**common, "NEKZUS_RATELIMIT__ENABLED": "true"}) as secured,
        another_gateway(bench, {**common, "NEKZUS_RATELIMIT__ENABLED": "false"}, PLAIN_SERVER) as plain,
    ):
        for label, gateway in (("secured", secured), ("plain", plain)):
            settings = {k: v for k, v in gateway.env.items() if k.startswith("NEKZUS_") and k not in HIDDEN}
            command = " ".join(gateway.command)
            print(f"{label}: {command} at {gateway.url} (TLS {gateway.tls_mode}) {settings}", flush=True)
        await _check_setup(secured, plain, token)
        async with secured.session(token) as a, plain.session(token) as b:
            _, listed_a, bytes_a = await timed_get(a, PATH)
            _, listed_b, bytes_b = await timed_get(b, PATH)
            wanted = {cid[:12] for cid in ids}
            for label, listed in (("secured", listed_a), ("plain", listed_b)):
                missing = wanted - {c["id"] for c in listed}
                assert not missing, f"the {label} gateway did not list {len(missing)} of our containers"

            sessions = {"secured": a, "plain": b}
            samples: dict[str, list[float]] = {"secured": [], "plain": []}
            paired: list[float] = []
            pids = {"secured": secured.pid, "plain": plain.pid}
            cpu: dict[str, float] = {}
            for i in range(WARMUP + CALLS):
                if i == WARMUP:
                    cpu = {name: cpu_seconds(pid) for name, pid in pids.items()}
                took: dict[str, float] = {}
                for name in ("secured", "plain") if i % 2 else ("plain", "secured"):
                    took[name], _, _ = await timed_get(sessions[name], PATH)
                if i >= WARMUP:
                    for name, seconds in took.items():
                        samples[name].append(seconds)
                    paired.append(took["secured"] - took["plain"])
            cpu = {name: (cpu_seconds(pid) - cpu[name]) / CALLS for name, pid in pids.items()}

    secured_s, plain_s = samples["secured"], samples["plain"]
    a50, b50 = percentile(secured_s, 50), percentile(plain_s, 50)
    return [
        Row("containers listed (secured / plain)", len(listed_a)),
        Row("response size", bytes_a / 1024, "KiB"),
        Row("response size plain", bytes_b / 1024, "KiB"),
        Row(f"plain: no auth, no rate limit, median ({CALLS} calls)", ms(b50), "ms"),
        Row("plain p90", ms(percentile(plain_s, 90)), "ms"),
        Row(f"secured: remote + JWT + rate limit, median ({CALLS} calls)", ms(a50), "ms"),
        Row("secured p90", ms(percentile(secured_s, 90)), "ms"),
        Row("difference of the medians, per request", ms(a50 - b50), "ms"),
        Row("median of the paired differences (same round)", ms(percentile(paired, 50)), "ms"),
        Row("gateway CPU per request, plain", ms(cpu["plain"]), "ms"),
        Row("gateway CPU per request, secured", ms(cpu["secured"]), "ms"),
        Row("overhead: secured median / plain median − 1", (a50 / b50 - 1) * 100, "%", TARGET_PERCENT),
    ]


if __name__ == "__main__":
    run_script(f"auth + rate-limit overhead, GET {PATH} with {CONTAINERS} containers", measure)
