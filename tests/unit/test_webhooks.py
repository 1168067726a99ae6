"""Webhooks through the API: the registry (configured and API-made), secrets that are never shown,
the limit, targets refused when saved, bad bodies and missing scopes. Also the helpers the delivery
tests share."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from standardwebhooks.webhooks import Webhook as Verifier

from nekzus.config import Config, ConfigError
from nekzus.http.app import create_app
from nekzus.keys import EVENT_BUS
from nekzus.notify.webhook_store import DB_FILE
from tests.support.fakes import FakeRuntime, registry_of, summary
from tests.support.gateway import JSON, ClientFactory
from tests.support.receiver import SECRET, Receiver, hook, receiver, webhook_config
from tests.unit.test_security import bearer, expect_error, security_config, token

__all__ = ["receiver"]  # the fixture


async def start(gateway: ClientFactory, config: Config) -> TestClient[Any, Any]:
    return await gateway(config, runtimes=registry_of(FakeRuntime([summary(1)])))


def publish(client: TestClient[Any, Any], type_: str, **data: Any) -> None:
    client.app[EVENT_BUS].publish(type_, {"timestamp": 1767200000, **data})


async def created(client: TestClient[Any, Any], body: dict[str, Any]) -> dict[str, Any]:
    resp = await client.post("/api/v1/webhooks", json=body)
    assert resp.status == 201, await resp.text()
    answer: dict[str, Any] = await resp.json()
    return answer


@pytest.fixture
async def client(gateway: ClientFactory, docker_host: str, tmp_path: Path) -> TestClient[Any, Any]:
    configured = hook("https://hooks.example.com/nekzus", name="from-file", headers={"X-Token": "file-value"})
    return await start(gateway, webhook_config(docker_host, tmp_path, webhooks=[configured]))


# -- the registry ---------------------------------------------------------------------------------


async def test_a_webhook_is_created_listed_replaced_and_deleted(client: TestClient[Any, Any]) -> None:
    body = await created(
        client,
        hook("https://hooks.example.com/a", headers={"Authorization": "Bearer header-value"}, timeout=3),
    )
    assert body == {
        "name": "ops",
        "url": "https://hooks.example.com/a",
        "events": ["demo.*"],
        "headers": ["Authorization"],
        "timeout": 3.0,
        "enabled": True,
        "source": "api",
        "createdAt": body["createdAt"],
        "pending": 0,
        "delivered": 0,
        "failed": 0,
        "dropped": 0,
        "lastDeliveryAt": None,
        "lastError": None,
    }
    assert isinstance(body["createdAt"], int)

    resp = await client.get("/api/v1/webhooks")
    listed = (await resp.json())["webhooks"]
    assert [(w["name"], w["source"], w["createdAt"]) for w in listed] == [
        ("from-file", "config", None),
        ("ops", "api", body["createdAt"]),
    ]
    assert listed[0]["headers"] == ["X-Token"]

    resp = await client.put(
        "/api/v1/webhooks/ops", json={"url": "https://hooks.example.com/b", "enabled": False}
    )
    assert resp.status == 200, await resp.text()
    replaced = await resp.json()
    # Replaced whole: what the PUT left out is back to its default (headers, events, timeout).
    assert (
        replaced["url"],
        replaced["enabled"],
        replaced["headers"],
        replaced["events"],
        replaced["timeout"],
    ) == (
        "https://hooks.example.com/b",
        False,
        [],
        [],
        10.0,
    )
    assert replaced["createdAt"] == body["createdAt"]
    assert (await (await client.get("/api/v1/webhooks/ops")).json()) == replaced

    resp = await client.delete("/api/v1/webhooks/ops")
    assert resp.status == 204
    await expect_error(await client.get("/api/v1/webhooks/ops"), 404, "WEBHOOK_NOT_FOUND")
    await expect_error(await client.delete("/api/v1/webhooks/ops"), 404, "WEBHOOK_NOT_FOUND")
    await expect_error(
        await client.put("/api/v1/webhooks/ops", json=hook("https://a.example")), 404, "WEBHOOK_NOT_FOUND"
    )
    await expect_error(await client.get("/api/v1/webhooks/ops/deliveries"), 404, "WEBHOOK_NOT_FOUND")
    await expect_error(await client.post("/api/v1/webhooks/ops/test"), 404, "WEBHOOK_NOT_FOUND")


async def test_created_answers_201_with_its_location(client: TestClient[Any, Any]) -> None:
    resp = await client.post("/api/v1/webhooks", json=hook("https://hooks.example.com/a"))
    assert resp.status == 201
    assert resp.headers["Location"] == "/api/v1/webhooks/ops"


async def test_names_are_unique_across_the_file_and_the_api(client: TestClient[Any, Any]) -> None:
    await created(client, hook("https://hooks.example.com/a"))
    await expect_error(
        await client.post("/api/v1/webhooks", json=hook("https://hooks.example.com/a")), 409, "WEBHOOK_EXISTS"
    )
    await expect_error(
        await client.post("/api/v1/webhooks", json=hook("https://hooks.example.com/a", name="from-file")),
        409,
        "WEBHOOK_EXISTS",
    )


async def test_configured_webhooks_are_read_only(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/api/v1/webhooks/from-file")
    assert (await resp.json())["source"] == "config"
    await expect_error(
        await client.put("/api/v1/webhooks/from-file", json={"url": "https://x.example"}),
        409,
        "WEBHOOK_READ_ONLY",
    )
    await expect_error(await client.delete("/api/v1/webhooks/from-file"), 409, "WEBHOOK_READ_ONLY")
    assert (await client.get("/api/v1/webhooks/from-file")).status == 200


async def test_the_api_may_create_only_max_webhooks(
    gateway: ClientFactory, docker_host: str, tmp_path: Path
) -> None:
    configured = hook("https://hooks.example.com/f", name="from-file")
    client = await start(
        gateway, webhook_config(docker_host, tmp_path, webhooks=[configured], max_webhooks=2)
    )
    for name in ("a", "b"):
        await created(client, hook("https://hooks.example.com/x", name=name))
    body = await expect_error(
        await client.post("/api/v1/webhooks", json=hook("https://hooks.example.com/x", name="c")),
        409,
        "WEBHOOK_LIMIT",
    )
    assert "webhook_delivery.max_webhooks" in body["message"]
    assert (await client.delete("/api/v1/webhooks/a")).status == 204
    await created(client, hook("https://hooks.example.com/x", name="c"))


# -- secrets --------------------------------------------------------------------------------------


async def test_secrets_and_header_values_are_never_shown(
    client: TestClient[Any, Any], caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.DEBUG)
    header_value = "Bearer very-private-header-value"
    await created(client, hook("https://hooks.example.com/a", headers={"Authorization": header_value}))
    answers = [
        await (await client.get("/api/v1/webhooks")).text(),
        await (await client.get("/api/v1/webhooks/ops")).text(),
        await (await client.get("/api/v1/webhooks/from-file")).text(),
        await (await client.put("/api/v1/webhooks/ops", json={"url": "https://hooks.example.com/b"})).text(),
        # Refused bodies that carry secrets: the error never quotes them.
        await (
            await client.post(
                "/api/v1/webhooks", json=hook("https://x.example", secret=SECRET, timeout="soon")
            )
        ).text(),
        await (
            await client.post(
                "/api/v1/webhooks", json=hook("https://x.example", name="b", secret="too-short")
            )
        ).text(),
        await (
            await client.post(
                "/api/v1/webhooks",
                json=hook("https://x.example", name="c", headers={"X-A": header_value + "\r\nX-B: 1"}),
            )
        ).text(),
    ]
    for text in answers:
        assert SECRET not in text and "very-private" not in text and "file-value" not in text
        assert "too-short" not in text and "secret" not in json.loads(text)
    assert SECRET not in caplog.text and "very-private" not in caplog.text and "too-short" not in caplog.text
    # On disk, the file that holds them is the gateway's own.
    assert (tmp_path / DB_FILE).stat().st_mode & 0o077 == 0


async def test_a_secret_left_out_is_generated_and_answered_once(client: TestClient[Any, Any]) -> None:
    body = hook("https://hooks.example.com/a")
    del body["secret"]
    answer = await created(client, body)
    secret = answer["secret"]
    assert secret.startswith("whsec_") and len(secret) == len("whsec_") + 32
    assert Verifier(secret)  # base64 of 24 bytes, as the convention reads it
    assert "secret" not in await (await client.get("/api/v1/webhooks/ops")).json()
    other = await created(client, {**body, "name": "other"})
    assert other["secret"] != secret


async def test_a_put_without_a_secret_keeps_the_old_one(
    gateway: ClientFactory, docker_host: str, tmp_path: Path, receiver: Receiver
) -> None:
    client = await start(gateway, webhook_config(docker_host, tmp_path))
    await created(client, hook(receiver.url, secret="a-plain-secret-of-some-length"))
    resp = await client.put("/api/v1/webhooks/ops", json={"url": receiver.url, "events": ["demo.*"]})
    assert resp.status == 200
    publish(client, "demo.kept")
    [got] = await receiver.wait_for(1)
    assert got.verified("a-plain-secret-of-some-length")["type"] == "demo.kept"

    resp = await client.put(
        "/api/v1/webhooks/ops", json={"url": receiver.url, "events": ["demo.*"], "secret": SECRET}
    )
    assert resp.status == 200
    publish(client, "demo.changed")
    got = (await receiver.wait_for(2))[1]
    assert got.verified(SECRET)["type"] == "demo.changed"


# -- refused targets ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/",
        "http://10.0.0.5/hook",
        "http://100.64.0.1/hook",
        "http://[::ffff:127.0.0.1]:8080/",
        "http://localhost:8080/hook",
        "http://app.localhost/hook",
        "http://0.0.0.0/",
        "http://[fe80::1]/",
        "http://224.0.0.1/",
    ],
)
async def test_a_literal_address_in_a_refused_range_is_refused_when_saved(
    gateway: ClientFactory, docker_host: str, tmp_path: Path, url: str
) -> None:
    client = await start(gateway, webhook_config(docker_host, tmp_path, allow_networks=[]))
    body = await expect_error(
        await client.post("/api/v1/webhooks", json=hook(url)), 422, "WEBHOOK_URL_REFUSED"
    )
    assert "webhook_delivery.allow_networks" in body["message"]
    assert (await (await client.get("/api/v1/webhooks")).json())["webhooks"] == []


async def test_the_metadata_address_is_named_in_the_refusal(
    gateway: ClientFactory, docker_host: str, tmp_path: Path
) -> None:
    client = await start(gateway, webhook_config(docker_host, tmp_path, allow_networks=["192.168.1.0/24"]))
    body = await expect_error(
        await client.post("/api/v1/webhooks", json=hook("http://169.254.169.254/")),
        422,
        "WEBHOOK_URL_REFUSED",
    )
    assert (
        "address 169.254.169.254 is in a refused range; allow it with webhook_delivery.allow_networks"
        in body["message"]
    )
    await created(client, hook("http://192.168.1.20:8080/hook"))  # allowed by name


async def test_a_configured_target_in_a_refused_range_stops_the_start(
    docker_host: str, tmp_path: Path
) -> None:
    config = webhook_config(
        docker_host, tmp_path, webhooks=[hook("http://169.254.169.254/")], allow_networks=[]
    )
    app = create_app(config, runtimes=registry_of(FakeRuntime([summary(1)])))
    runner = web.AppRunner(app)
    try:
        with pytest.raises(
            ConfigError, match=r"webhooks\[0\]\.url: address 169\.254\.169\.254 is in a refused range"
        ):
            await runner.setup()
    finally:
        await app.cleanup()  # what had started before the refusal


# -- bad bodies -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": "ftp://hooks.example.com/"}, "url"),
        ({"url": "https://user:pw@hooks.example.com/"}, "url"),
        ({"url": "https://hooks.example.com/" + "a" * 3000}, "url"),
        ({"url": 7}, "url"),
        ({"name": "Not A Name"}, "name"),
        ({"name": None}, "name"),
        ({"events": ["container.*.failed"]}, "events"),
        ({"events": "demo.*"}, "events"),
        ({"events": ["demo.*"] * 65}, "events"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": 1e308}, "timeout"),
        ({"timeout": "soon"}, "timeout"),
        ({"secret": "short"}, "secret"),
        ({"secret": 12345678901234567890}, "secret"),
        ({"headers": {"X-A": "one\r\nX-Injected: two"}}, "headers"),
        ({"headers": {"Bad Name": "v"}}, "headers"),
        ({"headers": {"webhook-signature": "v1,forged"}}, "headers"),
        ({"headers": {"Host": "internal.example"}}, "headers"),
        ({"headers": {"X-A": 1}}, "headers.X-A"),
        ({"headers": {f"X-{n}": "v" for n in range(33)}}, "headers"),
        ({"enabled": "maybe"}, "enabled"),
    ],
)
async def test_a_bad_field_is_a_validation_error_naming_it(
    client: TestClient[Any, Any], body: dict[str, Any], field: str
) -> None:
    resp = await client.post("/api/v1/webhooks", json={**hook("https://hooks.example.com/a"), **body})
    answer = await expect_error(resp, 400, "VALIDATION_ERROR")
    assert answer["field"] == field
    assert (await (await client.get("/api/v1/webhooks")).json())["webhooks"][1:] == []


@pytest.mark.parametrize(
    "raw",
    [
        b'{"name": "ops", "url": "https://hooks.example.com/", "secret": "'
        + SECRET.encode()
        + b'", "timeout": NaN}',
        b'{"name": "ops", "url": "https://hooks.example.com/", "secret": "'
        + SECRET.encode()
        + b'", "timeout": Infinity}',
        b'{"name": "ops", "url": "https://hooks.example.com/", "secret": "'
        + SECRET.encode()
        + b'", "timeout": 1e999}',
    ],
)
async def test_nan_and_infinite_timeouts_are_refused(client: TestClient[Any, Any], raw: bytes) -> None:
    answer = await expect_error(
        await client.post("/api/v1/webhooks", data=raw, headers=JSON), 400, "VALIDATION_ERROR"
    )
    assert answer["field"] == "timeout"


async def test_bodies_that_are_not_a_webhook_are_refused(client: TestClient[Any, Any]) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    for raw, status, code in [
        (deep, 400, "INVALID_REQUEST"),
        (b'{"name": ' + deep + b"}", 400, "INVALID_REQUEST"),
        (b"[]", 400, "INVALID_REQUEST"),
        (b"{not json", 400, "INVALID_REQUEST"),
        (b"", 400, "INVALID_REQUEST"),
        (b'{"url": "' + b"a" * (2 << 20) + b'"}', 413, "PAYLOAD_TOO_LARGE"),
    ]:
        await expect_error(await client.post("/api/v1/webhooks", data=raw, headers=JSON), status, code)
    unknown = await expect_error(
        await client.post("/api/v1/webhooks", json={**hook("https://hooks.example.com/a"), "retries": 3}),
        400,
        "INVALID_REQUEST",
    )
    assert "'retries'" in unknown["message"]
    renamed = await expect_error(
        await client.put("/api/v1/webhooks/from-file", json={"url": "https://x.example"}),
        409,
        "WEBHOOK_READ_ONLY",
    )
    assert renamed
    await created(client, hook("https://hooks.example.com/a"))
    await expect_error(
        await client.put("/api/v1/webhooks/ops", json={"name": "other", "url": "https://x.example"}),
        400,
        "INVALID_REQUEST",
    )
    await expect_error(await client.get("/api/v1/webhooks/ops/deliveries?limit=0"), 400, "INVALID_REQUEST")
    await expect_error(await client.get("/api/v1/webhooks/ops/deliveries?limit=lots"), 400, "INVALID_REQUEST")
    assert len((await (await client.get("/api/v1/webhooks")).json())["webhooks"]) == 2


# -- who may call ---------------------------------------------------------------------------------


async def test_every_route_needs_admin_webhooks(gateway: ClientFactory, docker_host: str) -> None:
    client = await gateway(security_config(docker_host), runtimes=registry_of(FakeRuntime([summary(1)])))
    routes = [
        ("GET", "/api/v1/webhooks", None),
        ("POST", "/api/v1/webhooks", hook("https://hooks.example.com/a")),
        ("GET", "/api/v1/webhooks/ops", None),
        ("PUT", "/api/v1/webhooks/ops", {"url": "https://hooks.example.com/b"}),
        ("DELETE", "/api/v1/webhooks/ops", None),
        ("GET", "/api/v1/webhooks/ops/deliveries", None),
        ("POST", "/api/v1/webhooks/ops/test", None),
    ]
    everything_else = token(scopes=["read:*", "write:*", "read:alerts"])
    for method, path, body in routes:
        await expect_error(await client.request(method, path, json=body), 401, "UNAUTHORIZED")
        # A forwarded address from a peer that is no trusted proxy is not read: still remote.
        forged = {"X-Forwarded-For": "10.0.0.1"}
        await expect_error(await client.request(method, path, json=body, headers=forged), 401, "UNAUTHORIZED")
        resp = await client.request(method, path, json=body, headers=bearer(everything_else))
        answer = await expect_error(resp, 403, "FORBIDDEN")
        assert "admin:webhooks" in answer["message"]
    admin = bearer(token(scopes=["admin:webhooks"]))
    resp = await client.post("/api/v1/webhooks", json=hook("https://hooks.example.com/a"), headers=admin)
    assert resp.status == 201
    resp = await client.get("/api/v1/webhooks/ops", headers=bearer(token(scopes=["*"])))
    assert resp.status == 200


async def test_a_page_on_another_site_cannot_change_webhooks(client: TestClient[Any, Any]) -> None:
    foreign = {"Origin": "https://evil.example"}
    for method, path in [
        ("POST", "/api/v1/webhooks"),
        ("PUT", "/api/v1/webhooks/ops"),
        ("DELETE", "/api/v1/webhooks/ops"),
    ]:
        resp = await client.request(method, path, json=hook("https://hooks.example.com/a"), headers=foreign)
        await expect_error(resp, 403, "ORIGIN_NOT_ALLOWED")
    await expect_error(
        await client.post("/api/v1/webhooks/from-file/test", headers={"Sec-Fetch-Site": "cross-site"}),
        403,
        "ORIGIN_NOT_ALLOWED",
    )
    assert len((await (await client.get("/api/v1/webhooks")).json())["webhooks"]) == 1


async def test_webhooks_made_through_the_api_survive_a_restart(
    gateway: ClientFactory, docker_host: str, tmp_path: Path
) -> None:
    config = webhook_config(docker_host, tmp_path)
    first = await start(gateway, config)
    before = await created(first, hook("https://hooks.example.com/a", headers={"X-A": "1"}))
    await first.close()
    again = await start(gateway, config)
    after = await (await again.get("/api/v1/webhooks/ops")).json()
    assert after == before


async def test_what_a_restart_reads_back_is_what_was_shown_after_racing_changes(
    gateway: ClientFactory, docker_host: str, tmp_path: Path
) -> None:
    config = webhook_config(docker_host, tmp_path)
    first = await start(gateway, config)
    await created(first, hook("https://hooks.example.com/1"))
    answers = await asyncio.gather(
        first.delete("/api/v1/webhooks/ops"),
        first.post("/api/v1/webhooks", json=hook("https://hooks.example.com/2")),
        first.put("/api/v1/webhooks/ops", json={"url": "https://hooks.example.com/3"}),
        first.post("/api/v1/webhooks", json=hook("https://hooks.example.com/4", name="other")),
        first.delete("/api/v1/webhooks/other"),
    )
    assert answers[0].status == 204
    shown = (await (await first.get("/api/v1/webhooks")).json())["webhooks"]
    await first.close()
    again = await start(gateway, config)
    assert (await (await again.get("/api/v1/webhooks")).json())["webhooks"] == shown
