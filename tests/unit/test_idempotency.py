"""Idempotency-Key on a fake runtime: the header's rules, replay, reuse with another request, a key
in flight, what is kept and what is not, callers kept apart, and the store on its own (expiry, the
cap, a restart). The real Engine's side is tests/docker/test_idempotency.py."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from nekzus.config import ConfigError
from nekzus.errors import ApiError
from nekzus.keys import OPERATIONS
from nekzus.operations.idempotency import DB_FILE, Answer, Idempotency
from runtimes import ContainerState, Unavailable
from tests.support.fakes import FakeRuntime, registry_of
from tests.support.gateway import JSON, ClientFactory, make_config
from tests.unit.test_errors import expect
from tests.unit.test_pause_remove import box
from tests.unit.test_security import bearer, security_config, token

RESTART = f"/api/v1/containers/{box(1).id}/restart"
START = f"/api/v1/containers/{box(1).id}/start"


def new_key() -> dict[str, str]:
    return {"Idempotency-Key": str(uuid.uuid4())}


@pytest.fixture
def server(tmp_path: Path) -> dict[str, Any]:
    """A data directory of the test's own, so the tracker holds this test's operations alone."""
    return {"data_dir": str(tmp_path), "tls": {"mode": "off"}}


async def on_fake(
    gateway: ClientFactory, docker_host: str, server: dict[str, Any], *containers: Any
) -> tuple[TestClient[Any, Any], FakeRuntime]:
    fake = FakeRuntime(list(containers) or [box(1)])
    return await gateway(make_config(docker_host, server=server), runtimes=registry_of(fake)), fake


async def accepted(resp: Any) -> dict[str, Any]:
    assert resp.status == 202, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


def ops(client: TestClient[Any, Any]) -> int:
    return len(client.app[OPERATIONS])


# -- the header -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "",
        "   ",
        "k" * 256,
        "k" * 300,
        "clé",
        "key\twith-tab",
        "one, two",
        '"unterminated',
        '"bad \\x escape"',
        '""',
    ],
)
async def test_a_malformed_key_is_refused_and_runs_nothing(
    gateway: ClientFactory, docker_host: str, server: dict[str, Any], value: str
) -> None:
    client, fake = await on_fake(gateway, docker_host, server)
    resp = await client.post(RESTART, headers={"Idempotency-Key": value})
    body = await expect(resp, 400, "INVALID_REQUEST")
    assert "Idempotency-Key" in body["message"]
    assert ops(client) == 0 and fake.timeouts == []


async def test_two_key_headers_are_refused(
    gateway: ClientFactory, docker_host: str, server: dict[str, Any]
) -> None:
    client, fake = await on_fake(gateway, docker_host, server)
    headers = [("Idempotency-Key", "a"), ("Idempotency-Key", "a")]
    body = await expect(await client.post(RESTART, headers=headers), 400, "INVALID_REQUEST")
    assert "Idempotency-Key" in body["message"]
    assert ops(client) == 0 and fake.timeouts == []


async def test_a_key_of_255_printable_characters_is_taken(
    gateway: ClientFactory, docker_host: str, server: dict[str, Any]
) -> None:
    client, _ = await on_fake(gateway, docker_host, server)
    key = (" !#$%&'()*+-./:;<=>?@[\\]^_`{|}~" + uuid.uuid4().hex * 8)[:255]
    first = await accepted(await client.post(RESTART, headers={"Idempotency-Key": key}))
    again = await client.post(RESTART, headers={"Idempotency-Key": key})
    assert (await accepted(again))["operationId"] == first["operationId"]


async def test_the_quoted_form_of_the_draft_is_the_same_key(
    gateway: ClientFactory, docker_host: str, server: dict[str, Any]
) -> None:
    client, _ = await on_fake(gateway, docker_host, server)
    key = f'a"b\\{uuid.uuid4()}'
    quoted = '"' + key.replace("\\", "\\\\").replace('"', '\\"') + '"'
    first = await accepted(await client.post(RESTART, headers={"Idempotency-Key": quoted}))
    again = await client.post(RESTART, headers={"Idempotency-Key": key})
    assert (await accepted(again))["operationId"] == first["operationId"]
    assert ops(client) == 1


# -- replay, reuse, in flight -------------------------------------------------------------------


async def test_a_retry_gets_the_first_answer_and_runs_nothing(
    gateway: ClientFactory, docker_host: str, server: dict[str, Any]
) -> None:
    client, fake = await on_fake(gateway, docker_host, server)
    key = new_key()
    first = await client.post(RESTART, json={"timeout": 3}, headers=key)
    first_body = await first.read()
    assert first.status == 202 and "Idempotent-Replayed" not in first.headers
    op = client.app[OPERATIONS].get((await first.json())["operationId"])
    assert op is not None
    await op.done.wait()
    for _ in range(3):
        again = await client.post(RESTART, json={"timeout": 3}, headers=key)
        assert again.status == 202
        assert await again.read() == first_body
        assert again.headers["Location"] == first.headers["Location"]
        assert again.headers["Content-Type"] == first.headers["Content-Type"]
        assert again.headers["Idempotent-Replayed"] == "true"
        assert again.headers["X-Request-ID"] != first.headers["X-Request-ID"]
    assert ops(client) == 1 and fake.timeouts == [("box-1", 3)]


async def test_without_a_key_every_request_runs(
    gateway: ClientFactory, docker_host: str, server: dict[str, Any]
) -> None:
    client, _ = await on_fake(gateway, docker_host, server)
    first = await accepted(await client.post(RESTART))
    second = await accepted(await client.post(RESTART))
    assert first["operationId"] != second["operationId"]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (RESTART, b'{"timeout": 4}'),  # another value
        (RESTART, b'{"timeout":3}'),  # the same JSON, spelt otherwise: the bytes are compared
        (RESTART + "?timeout=3", b'{"timeout": 3}'),  # another query
        (RESTART, b""),
    ],
)
async def test_the_key_with_another_request_is_422(
    gateway: ClientFactory, docker_host: str, server: dict[str, Any], path: str, body: bytes
) -> None:
    client, _ = await on_fake(gateway, docker_host, server)
    key = new_key()
    await accepted(await client.post(RESTART, data=b'{"timeout": 3}', headers={**JSON, **key}))
    resp = await client.post(path, data=body, headers={**JSON, **key} if body else key)
    await expect(resp, 422, "IDEMPOTENCY_KEY_REUSED")
    assert ops(client) == 1


async def test_the_same_key_on_another_path_is_another_key(
    gateway: ClientFactory, docker_host: str, server: dict[str, Any]
) -> None:
    client, _ = await on_fake(gateway, docker_host, server, box(1), box(2))
    key = new_key()
    first = await accepted(await client.post(RESTART, headers=key))
    other = await accepted(await client.post(f"/api/v1/containers/{box(2).id}/restart", headers=key))
    assert first["operationId"] != other["operationId"] and ops(client) == 2


async def test_a_retry_while_the_first_is_answered_is_409_then_replayed(
    gateway: ClientFactory, docker_host: str, server: dict[str, Any]
) -> None:
    # A bulk action answers once its actions end: held here, the first request stays in flight.
    client, fake = await on_fake(gateway, docker_host, server, box(1), box(2))
    fake.hold_actions = True
    key = new_key()
    first = asyncio.ensure_future(client.post("/api/v1/containers/restart-all", headers=key))
    async with fake.changed:
        await asyncio.wait_for(fake.changed.wait_for(lambda: fake.active == 2), 5)
    busy = await client.post("/api/v1/containers/restart-all", headers=key)
    await expect(busy, 409, "IDEMPOTENCY_KEY_IN_USE")
    assert busy.headers["Retry-After"] == "1"
    other = await client.post("/api/v1/containers/restart-all", json={"timeout": 5}, headers=key)
    await expect(other, 422, "IDEMPOTENCY_KEY_REUSED")
    fake.release.set()
    done = await first
    assert done.status == 200
    again = await client.post("/api/v1/containers/restart-all", headers=key)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert await again.json() == await done.json()
    assert ops(client) == 2


# -- what is kept -------------------------------------------------------------------------------


async def test_an_error_is_not_kept_so_a_retry_runs(
    gateway: ClientFactory, docker_host: str, server: dict[str, Any]
) -> None:
    client, fake = await on_fake(gateway, docker_host, server, box(1, ContainerState.RUNNING))
    key = new_key()
    await expect(await client.post(START, headers=key), 409, "CONTAINER_ALREADY_STARTED")
    fake.containers[box(1).full_id] = box(1, ContainerState.EXITED)
    await accepted(await client.post(START, headers=key))
    assert ops(client) == 1


async def test_a_5xx_is_not_kept_so_a_retry_can_succeed(
    gateway: ClientFactory, docker_host: str, server: dict[str, Any]
) -> None:
    client, fake = await on_fake(gateway, docker_host, server)
    key = new_key()
    fake.fail["get"] = Unavailable("down")
    await expect(await client.post(RESTART, headers=key), 503, "RUNTIME_UNAVAILABLE")
    del fake.fail["get"]
    await accepted(await client.post(RESTART, headers=key))


async def test_a_body_fixed_after_a_400_may_keep_its_key(
    gateway: ClientFactory, docker_host: str, server: dict[str, Any]
) -> None:
    client, _ = await on_fake(gateway, docker_host, server)
    key = new_key()
    for bad in (b"[" * 100 + b"]" * 100, b'{"timeout": 1e999}', b'{"timeout": NaN}', b'{"tiemout": 3}'):
        resp = await client.post(RESTART, data=bad, headers={**JSON, **key})
        assert resp.status == 400, bad
    await accepted(await client.post(RESTART, json={"timeout": 3}, headers=key))
    assert ops(client) == 1


async def test_a_body_over_the_limit_is_413(
    gateway: ClientFactory, docker_host: str, server: dict[str, Any]
) -> None:
    client, _ = await on_fake(gateway, docker_host, server)
    huge = b'{"timeout": "' + b"9" * (2 << 20) + b'"}'
    resp = await client.post(RESTART, data=huge, headers={**JSON, **new_key()})
    await expect(resp, 413, "PAYLOAD_TOO_LARGE")
    assert ops(client) == 0


async def test_the_rate_limiter_counts_replays(
    gateway: ClientFactory, docker_host: str, server: dict[str, Any]
) -> None:
    fake = FakeRuntime([box(1)])
    config = make_config(docker_host, server=server, ratelimit={"containers": {"per_minute": 1, "burst": 2}})
    client = await gateway(config, runtimes=registry_of(fake))
    key = new_key()
    await accepted(await client.post(RESTART, headers=key))
    assert (await client.post(RESTART, headers=key)).headers["Idempotent-Replayed"] == "true"
    await expect(await client.post(RESTART, headers=key), 429, "RATE_LIMITED")
    assert ops(client) == 1


# -- callers are kept apart ---------------------------------------------------------------------


async def test_one_callers_key_is_not_anothers(
    gateway: ClientFactory, docker_host: str, server: dict[str, Any]
) -> None:
    fake = FakeRuntime([box(1)])
    client = await gateway(security_config(docker_host, server=server), runtimes=registry_of(fake))
    key = new_key()
    alice = bearer(token(sub="alice"))
    bob = bearer(token(sub="bob"))
    first = await accepted(await client.post(RESTART, json={"timeout": 3}, headers={**alice, **key}))
    # Bob's request with Alice's key and another body is neither refused nor answered with hers.
    bobs = await client.post(RESTART, json={"timeout": 9}, headers={**bob, **key})
    assert bobs.status == 202 and "Idempotent-Replayed" not in bobs.headers
    assert (await bobs.json())["operationId"] != first["operationId"]
    # Alice's token renewed (another token, the same subject) still finds her answer.
    renewed = bearer(token(sub="alice", exp=int(time.time()) + 900))
    again = await client.post(RESTART, json={"timeout": 3}, headers={**renewed, **key})
    assert (await again.json())["operationId"] == first["operationId"]
    assert ops(client) == 2


async def test_a_token_without_the_scope_learns_nothing(
    gateway: ClientFactory, docker_host: str, server: dict[str, Any]
) -> None:
    fake = FakeRuntime([box(1)])
    client = await gateway(security_config(docker_host, server=server), runtimes=registry_of(fake))
    key = new_key()
    await accepted(await client.post(RESTART, headers={**bearer(token(sub="alice")), **key}))
    reader = bearer(token(sub="alice", scopes=["read:containers"]))
    await expect(await client.post(RESTART, headers={**reader, **key}), 403, "FORBIDDEN")


async def test_a_lan_client_without_a_token_is_not_the_token_holder(
    gateway: ClientFactory, docker_host: str, server: dict[str, Any]
) -> None:
    fake = FakeRuntime([box(1)])
    config = make_config(docker_host, server=server, auth={"jwt_secret": "s" * 40})
    client = await gateway(config, runtimes=registry_of(fake))
    key = new_key()
    anonymous = await accepted(await client.post(RESTART, headers=key))
    # The same secret as token(): a LAN client with a valid token acts as the token's subject.
    held = await client.post(RESTART, headers={**bearer(token(sub="alice")), **key})
    assert (await accepted(held))["operationId"] != anonymous["operationId"]


async def test_cors_lets_pages_send_the_key_and_read_the_replay_mark(
    gateway: ClientFactory, docker_host: str, server: dict[str, Any]
) -> None:
    origin = "https://app.example"
    config = make_config(docker_host, server={**server, "cors_origins": [origin]})
    client = await gateway(config, runtimes=registry_of(FakeRuntime([box(1)])))
    resp = await client.options(
        RESTART,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "Idempotency-Key",
        },
    )
    assert resp.status == 200
    assert "IDEMPOTENCY-KEY" in resp.headers["Access-Control-Allow-Headers"].upper()
    sent = await client.post(RESTART, headers={"Origin": origin, **new_key()})
    assert sent.status == 202
    assert "IDEMPOTENT-REPLAYED" in sent.headers["Access-Control-Expose-Headers"].upper()


# -- the store ----------------------------------------------------------------------------------


def answer(n: int, *, age: float = 0) -> Answer:
    return Answer(f"fp{n}", 202, (("Location", f"/op/{n}"),), b'{"n": %d}' % n, time.time() - age)


async def settled(store: Idempotency, scope: str, value: Answer) -> None:
    assert await store.begin(scope, value.fingerprint) is None
    store.settle(scope, value)


async def test_answers_outlive_the_store_and_the_oldest_go_over_the_cap(tmp_path: Path) -> None:
    store = await Idempotency.open(tmp_path, ttl_seconds=3600, max_keys=3)
    made = [answer(n) for n in range(5)]
    for n, value in enumerate(made):
        await settled(store, f"s{n}", value)
    await store.close()
    store = await Idempotency.open(tmp_path, ttl_seconds=3600, max_keys=3)
    try:
        for n in (0, 1):
            assert await store.begin(f"s{n}", f"fp{n}") is None
            store.settle(f"s{n}", None)
        for n in (2, 3, 4):
            assert await store.begin(f"s{n}", f"fp{n}") == made[n]
    finally:
        await store.close()


async def test_an_answer_past_its_time_is_forgotten(tmp_path: Path) -> None:
    store = await Idempotency.open(tmp_path, ttl_seconds=60, max_keys=100)
    try:
        new = answer(2, age=30)
        await settled(store, "old", answer(1, age=61))
        await settled(store, "new", new)
        await store.close()
        store = await Idempotency.open(tmp_path, ttl_seconds=60, max_keys=100)
        assert await store.begin("old", "fp1") is None
        store.settle("old", None)
        assert await store.begin("new", "fp2") == new
    finally:
        await store.close()


async def test_an_answer_is_replayed_before_its_write_commits(tmp_path: Path) -> None:
    store = await Idempotency.open(tmp_path, ttl_seconds=60, max_keys=100)
    try:
        given = answer(1)
        await settled(store, "s", given)
        # The loop has not turned since: the write's end is not known yet, wherever it stands.
        assert await store.begin("s", "fp1") == given
    finally:
        await store.close()


async def test_a_request_that_ended_in_an_error_frees_its_key(tmp_path: Path) -> None:
    store = await Idempotency.open(tmp_path, ttl_seconds=60, max_keys=100)
    try:
        assert await store.begin("s", "fp") is None
        with pytest.raises(ApiError, match="still being answered"):
            await store.begin("s", "fp")
        store.settle("s", None)
        assert await store.begin("s", "other") is None
        store.settle("s", None)
    finally:
        await store.close()


async def test_a_store_that_cannot_be_used_names_the_data_dir(tmp_path: Path) -> None:
    (tmp_path / DB_FILE).mkdir()
    with pytest.raises(ConfigError, match=r"server\.data_dir"):
        await Idempotency.open(tmp_path, ttl_seconds=60, max_keys=100)
