"""The parts of webhook delivery that need no receiver: signatures, backoff, Retry-After, the
refused address ranges, the guarded resolver and the store's refusal of an unusable data_dir."""

from __future__ import annotations

import base64
import email.utils
import ipaddress
import random
import socket
import time
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook as Verifier

from nekzus.config import ConfigError, WebhookDeliveryConfig
from nekzus.notify.addresses import GuardedResolver, RefusedAddress, refusal, target_refusal
from nekzus.notify.delivery import backoff, retry_after_seconds
from nekzus.notify.signing import new_secret, secret_key, signature
from nekzus.notify.webhook_store import DB_FILE, WebhookStore


@pytest.mark.parametrize(
    "secret", [new_secret(), "a plain passphrase, long enough", "whsec_not*base64*at*all"]
)
def test_signatures_verify_with_the_standard_webhooks_library(secret: str) -> None:
    body = '{"id":"msg_1","type":"demo","data":{"ü":1}}'.encode()
    now = int(time.time())
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(now),
        "webhook-signature": signature(secret_key(secret), "msg_1", now, body),
    }
    valid_base64 = secret.startswith("whsec_") and "*" not in secret
    verifier = Verifier(secret if valid_base64 else secret.encode())
    assert verifier.verify(body, headers)["id"] == "msg_1"


def test_a_generated_secret_is_24_random_bytes_in_base64() -> None:
    secret = new_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) == 24
    assert secret_key(secret) == base64.b64decode(secret.removeprefix("whsec_"))
    assert new_secret() != secret


SETTINGS = WebhookDeliveryConfig(initial_backoff=1, max_backoff=30)


def test_backoff_doubles_with_full_jitter_up_to_max_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    ceilings: list[tuple[float, float]] = []

    def highest(low: float, high: float) -> float:
        ceilings.append((low, high))
        return high

    monkeypatch.setattr(random, "uniform", highest)
    assert [backoff(n, SETTINGS, None) for n in (1, 2, 3, 4, 5, 6, 1000)] == [1, 2, 4, 8, 16, 30, 30]
    assert all(low == 0 for low, _ in ceilings)  # full jitter: anywhere from no wait to the ceiling
    monkeypatch.setattr(random, "uniform", lambda low, high: low)
    assert backoff(3, SETTINGS, None) == 0
    # Retry-After is honoured, but never beyond max_backoff.
    assert backoff(1, SETTINGS, 12.0) == 12.0
    assert backoff(1, SETTINGS, 86_400.0) == 30


def test_retry_after_is_seconds_or_an_http_date() -> None:
    now = time.time()
    assert retry_after_seconds("120", now) == 120
    assert retry_after_seconds(" 7 ", now) == 7
    assert retry_after_seconds("9" * 40, now) == 10**9
    in_a_minute = email.utils.formatdate(now + 60, usegmt=True)
    assert 58 <= (retry_after_seconds(in_a_minute, now) or 0) <= 61
    assert retry_after_seconds(email.utils.formatdate(now - 60, usegmt=True), now) == 0
    for junk in (None, "", "-1", "soon", "1.5", "٣", "Wed, 99 Foo 2026"):
        assert retry_after_seconds(junk, now) is None


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "100.64.0.1", "100.127.255.254",
        "169.254.169.254", "0.0.0.0", "224.0.0.1", "240.0.0.1", "255.255.255.255", "::1", "::",
        "fe80::1", "fd00:ec2::254", "fc00::1", "ff02::1", "::ffff:127.0.0.1", "::ffff:169.254.169.254",
    ],
)  # fmt: skip
def test_refused_ranges(address: str) -> None:
    problem = refusal(ipaddress.ip_address(address), [])
    assert problem is not None and "webhook_delivery.allow_networks" in problem


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_pass(address: str) -> None:
    assert refusal(ipaddress.ip_address(address), []) is None


def test_allow_networks_lets_a_range_through() -> None:
    allow = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1/128")]
    assert refusal(ipaddress.ip_address("10.9.9.9"), allow) is None
    assert refusal(ipaddress.ip_address("::ffff:10.9.9.9"), allow) is None
    assert refusal(ipaddress.ip_address("::1"), allow) is None
    assert refusal(ipaddress.ip_address("127.0.0.1"), allow) is not None
    assert target_refusal("http://localhost/", allow) is None  # ::1 is allowed
    assert target_refusal("http://hooks.example.com/", []) is None  # names: checked at delivery


async def test_the_guarded_resolver_keeps_only_allowed_addresses(monkeypatch: pytest.MonkeyPatch) -> None:
    answers = {
        "mixed.example": ["10.0.0.5", "93.184.216.34"],
        "inside.example": ["169.254.169.254", "fd00:ec2::254"],
    }

    def getaddrinfo(host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        found = []
        for address in answers[host]:
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            sockaddr = (address, port, 0, 0) if family == socket.AF_INET6 else (address, port)
            found.append((family, socket.SOCK_STREAM, 6, "", sockaddr))
        return found

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    resolver = GuardedResolver([])
    kept = await resolver.resolve("mixed.example", 443, socket.AF_UNSPEC)
    assert [r["host"] for r in kept] == ["93.184.216.34"]
    with pytest.raises(
        RefusedAddress, match=r"^inside\.example: address 169\.254\.169\.254 is in a refused range"
    ):
        await resolver.resolve("inside.example", 443, socket.AF_UNSPEC)
    allowing = GuardedResolver([ipaddress.ip_network("169.254.0.0/16")])
    assert [r["host"] for r in await allowing.resolve("inside.example", 80, socket.AF_UNSPEC)] == [
        "169.254.169.254"
    ]
    await resolver.close()
    await allowing.close()


async def test_a_store_that_cannot_be_used_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / DB_FILE).write_bytes(b"this is not a database, " * 100)
    with pytest.raises(ConfigError, match=r"server\.data_dir"):
        await WebhookStore.open(tmp_path, history=10)
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    with pytest.raises(ConfigError, match=r"server\.data_dir"):
        await WebhookStore.open(not_a_dir, history=10)
