"""Webhook deliveries to real HTTP receivers: signatures, what each webhook gets, retries in order,
slow, silent and blackholed receivers, the bounded queue, a restart with deliveries pending, and
targets refused at connect time."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from nekzus import __version__
from nekzus.keys import EVENT_BUS
from nekzus.realtime.hub import HUB
from tests.support.gateway import ClientFactory, Heard
from tests.support.receiver import HANG, Receiver, hook, receiver, shown, until, webhook_config
from tests.unit.test_webhooks import created, publish, start

__all__ = ["receiver"]  # the fixture, shared with the registry's tests


async def deliveries(
    client: TestClient[Any, Any], name: str = "ops", query: str = ""
) -> list[dict[str, Any]]:
    resp = await client.get(f"/api/v1/webhooks/{name}/deliveries{query}")
    assert resp.status == 200, await resp.text()
    found: list[dict[str, Any]] = (await resp.json())["deliveries"]
    return found


@pytest.fixture
def blackhole() -> Iterator[str]:
    """A socket that takes connections (the kernel's backlog) and never reads or answers them."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/hook"
    finally:
        sock.close()


@pytest.fixture
async def client(
    gateway: ClientFactory, docker_host: str, tmp_path: Path, receiver: Receiver
) -> TestClient[Any, Any]:
    configured = hook(receiver.url, headers={"X-Team": "ops", "User-Agent": "custom/1"}, events=["demo.*"])
    return await start(gateway, webhook_config(docker_host, tmp_path, webhooks=[configured]))


async def test_a_delivery_is_signed_and_carries_the_event(
    client: TestClient[Any, Any], receiver: Receiver
) -> None:
    publish(client, "other.event", n=0)
    publish(client, "demo.one", n=1, nested={"a": [1, "ü"]})
    [got] = await receiver.wait_for(1)
    body = got.verified()
    replay = client.app[HUB].replay
    assert body == {
        "id": got.headers["webhook-id"],
        "type": "demo.one",
        "seq": replay.seq,
        "timestamp": 1767200000,
        "data": {"timestamp": 1767200000, "n": 1, "nested": {"a": [1, "ü"]}},
    }
    assert body["id"].startswith("msg_")
    assert abs(int(got.headers["webhook-timestamp"]) - time.time()) < 60
    assert got.headers["webhook-signature"].startswith("v1,")
    assert got.headers["Content-Type"] == "application/json"
    assert got.headers["X-Team"] == "ops"
    assert got.headers["User-Agent"] == "custom/1"
    # A body changed on the way, or an old delivery replayed with a new timestamp, fails the check.
    with pytest.raises(Exception, match="No matching signature"):
        type(got)(got.headers, got.body.replace(b'"n":1', b'"n":2')).verified()
    with pytest.raises(Exception, match="No matching signature"):
        type(got)({**got.headers, "webhook-timestamp": str(int(time.time()) + 1)}, got.body).verified()

    publish(client, "demo.two")
    second = (await receiver.wait_for(2))[1]
    assert second.verified()["type"] == "demo.two"  # and other.event never came
    assert second.verified()["seq"] == body["seq"] + 1
    assert second.headers["webhook-id"] != body["id"]


async def test_the_user_agent_names_the_gateway(
    gateway: ClientFactory, docker_host: str, tmp_path: Path, receiver: Receiver
) -> None:
    secret = "not a whsec, just a long passphrase"
    config = webhook_config(docker_host, tmp_path, webhooks=[hook(receiver.url, secret=secret, events=["*"])])
    client = await start(gateway, config)
    publish(client, "container.state", containerId="c1", state="running")
    [got] = await receiver.wait_for(1)
    assert got.headers["User-Agent"] == f"nekzus/{__version__}"
    assert got.verified(secret)["type"] == "container.state"


async def test_alerts_reach_the_webhooks_their_rule_notifies_once(
    gateway: ClientFactory, docker_host: str, tmp_path: Path, receiver: Receiver
) -> None:
    config = webhook_config(
        docker_host,
        tmp_path,
        webhooks=[hook(receiver.url, events=["alert.*"]), hook(receiver.url, name="quiet", events=[])],
        alerts=[{"name": "web-down", "when": {"condition": "exited"}, "notify": ["ops", "quiet"]}],
    )
    client = await start(gateway, config)
    publish(client, "alert.firing", rule="other-rule")  # "ops" only, by its events
    publish(client, "alert.firing", rule="web-down")  # both, "ops" once though both rules apply
    publish(client, "alert.resolved", rule="web-down")
    publish(client, "demo.one")  # neither
    publish(client, "alert.resolved", rule="last")
    got = await receiver.wait_for(6)
    seen = sorted((r.verified()["type"], r.verified()["data"]["rule"]) for r in got)
    assert seen == [
        ("alert.firing", "other-rule"),
        ("alert.firing", "web-down"),
        ("alert.firing", "web-down"),
        ("alert.resolved", "last"),
        ("alert.resolved", "web-down"),
        ("alert.resolved", "web-down"),
    ]
    await until(lambda: _delivered(client, 4))
    assert (await shown(client, "quiet"))["delivered"] == 2
    assert len(receiver.received) == 6


async def test_failures_are_retried_in_order_with_the_same_id(
    client: TestClient[Any, Any], receiver: Receiver
) -> None:
    receiver.answers.extend([500, 502])
    for n in range(3):
        publish(client, "demo.step", n=n)
    got = await receiver.wait_for(5)
    assert [r.verified()["data"]["n"] for r in got] == [0, 0, 0, 1, 2]
    assert len({r.headers["webhook-id"] for r in got[:3]}) == 1
    assert len({r.headers["webhook-id"] for r in got}) == 3
    await until(lambda: _delivered(client, 3))
    history = await deliveries(client)
    assert [(d["status"], d["attempt"], d["statusCode"]) for d in history] == [
        ("delivered", 1, 204),
        ("delivered", 1, 204),
        ("delivered", 3, 204),
        ("failed", 2, 502),
        ("failed", 1, 500),
    ]
    assert history[-1]["error"] == "the receiver answered HTTP 500"
    assert history[-1]["deliveryId"] == got[0].headers["webhook-id"]
    assert [d["type"] for d in history] == ["demo.step"] * 5
    assert all(isinstance(d["duration"], float) and isinstance(d["timestamp"], int) for d in history)
    assert [d["status"] for d in await deliveries(client, query="?limit=2")] == ["delivered", "delivered"]
    body = await shown(client)
    assert (body["delivered"], body["failed"], body["pending"]) == (3, 0, 0)
    assert body["lastError"] == "the receiver answered HTTP 502"
    assert abs(body["lastDeliveryAt"] - time.time()) < 60


async def _delivered(client: TestClient[Any, Any], count: int) -> bool:
    return bool((await shown(client))["delivered"] >= count)


async def test_a_redirect_is_a_failure_not_followed(client: TestClient[Any, Any], receiver: Receiver) -> None:
    receiver.redirect = True
    publish(client, "demo.one")
    await receiver.wait_for(2)  # tried again at the same URL, never at /elsewhere
    await until(lambda: _errors(client, "the receiver answered HTTP 302"))
    receiver.redirect = False
    await until(lambda: _delivered(client, 1))


async def _errors(client: TestClient[Any, Any], error: str) -> bool:
    return any(d["error"] == error for d in await deliveries(client))


async def test_a_slow_receiver_is_waited_for(client: TestClient[Any, Any], receiver: Receiver) -> None:
    receiver.slow = 0.3
    publish(client, "demo.one")
    await receiver.wait_for(1)
    await until(lambda: _delivered(client, 1))
    [attempt] = await deliveries(client)
    assert attempt["status"] == "delivered" and attempt["duration"] >= 0.3


async def test_a_receiver_that_does_not_answer_in_time_is_tried_again(
    gateway: ClientFactory, docker_host: str, tmp_path: Path, receiver: Receiver
) -> None:
    config = webhook_config(docker_host, tmp_path, webhooks=[hook(receiver.url, timeout=0.3)])
    client = await start(gateway, config)
    receiver.answers.append(HANG)
    publish(client, "demo.one")
    got = await receiver.wait_for(2)
    assert got[0].headers["webhook-id"] == got[1].headers["webhook-id"]
    assert got[0].headers["webhook-signature"] != got[1].headers["webhook-signature"] or (
        got[0].headers["webhook-timestamp"] == got[1].headers["webhook-timestamp"]
    )
    await until(lambda: _delivered(client, 1))
    failed = (await deliveries(client))[-1]
    assert failed["status"] == "failed" and failed["statusCode"] is None
    assert failed["error"] == "no answer within 0.3 s (the webhook's timeout)"


async def test_a_blackholed_receiver_delays_neither_other_webhooks_nor_the_api(
    gateway: ClientFactory, docker_host: str, tmp_path: Path, receiver: Receiver, blackhole: str
) -> None:
    timeout = 5.0
    config = webhook_config(
        docker_host,
        tmp_path,
        webhooks=[hook(blackhole, name="silent", timeout=timeout), hook(receiver.url, name="ops")],
    )
    client = await start(gateway, config)
    started = time.monotonic()
    for n in range(20):
        publish(client, "demo.step", n=n)
    got = await receiver.wait_for(20, timeout=timeout)
    delivered_in = time.monotonic() - started
    assert [r.verified()["data"]["n"] for r in got] == list(range(20))
    api_started = time.monotonic()
    silent = await shown(client, "silent")
    await created(client, hook(receiver.url, name="later"))
    api_in = time.monotonic() - api_started
    # Generous bounds, far below the silent receiver's timeout, which has not even run out once.
    assert delivered_in < timeout / 2, delivered_in
    assert api_in < timeout / 5, api_in
    assert silent["pending"] == 20 and silent["delivered"] == 0 and silent["lastError"] is None


async def test_a_full_queue_drops_the_oldest_and_says_so(
    gateway: ClientFactory,
    docker_host: str,
    tmp_path: Path,
    receiver: Receiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = await start(
        gateway, webhook_config(docker_host, tmp_path, webhooks=[hook(receiver.url)], max_pending=3)
    )
    receiver.answers.append(HANG)
    publish(client, "demo.step", n=0)
    await receiver.wait_for(1)  # in flight, held by the receiver
    for n in range(1, 10):
        publish(client, "demo.step", n=n)
    body = await shown(client)
    assert (body["pending"], body["dropped"]) == (3, 7)
    receiver.released.set()
    got = await receiver.wait_for(4)
    # The delivery in flight when it was dropped still arrived; then the newest three, in order.
    assert [r.verified()["data"]["n"] for r in got] == [0, 7, 8, 9]
    await until(lambda: _delivered(client, 3))
    body = await shown(client)
    assert (body["pending"], body["delivered"], body["dropped"], body["failed"]) == (0, 3, 7, 0)
    statuses = [d["status"] for d in await deliveries(client)]
    assert statuses.count("dropped") == 7 and statuses.count("delivered") == 4

    async def logged() -> bool:
        return any("dropped" in r.getMessage() for r in caplog.records)

    await until(logged)
    [line] = [r for r in caplog.records if "dropped" in r.getMessage()]
    assert line.levelno == logging.WARNING
    assert "webhook ops: 7 deliveries dropped" in line.getMessage()


async def test_a_delivery_given_up_after_retry_for_expires(
    gateway: ClientFactory,
    docker_host: str,
    tmp_path: Path,
    receiver: Receiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = webhook_config(docker_host, tmp_path, webhooks=[hook(receiver.url)], retry_for=1)
    client = await start(gateway, config)
    receiver.down = True
    publish(client, "demo.one")

    async def expired() -> bool:
        return bool((await shown(client))["failed"] == 1)

    await until(expired)
    body = await shown(client)
    assert (body["pending"], body["delivered"], body["failed"]) == (0, 0, 1)
    assert (await deliveries(client))[0]["status"] == "expired"
    assert any("given up" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


async def test_a_test_event_goes_to_that_webhook_only(
    gateway: ClientFactory, docker_host: str, tmp_path: Path, receiver: Receiver
) -> None:
    config = webhook_config(
        docker_host,
        tmp_path,
        webhooks=[hook(receiver.url, events=["*"]), hook(receiver.url, name="b", events=["*"])],
    )
    client = await start(gateway, config)
    heard = Heard(client.app[EVENT_BUS])
    resp = await client.post("/api/v1/webhooks/ops/test")
    assert resp.status == 202
    delivery_id = (await resp.json())["deliveryId"]
    [got] = await receiver.wait_for(1)
    body = got.verified()
    assert body["id"] == delivery_id and body["type"] == "webhook.test" and body["seq"] is None
    assert body["data"]["webhook"] == "ops"
    publish(client, "demo.after")
    later = await receiver.wait_for(3)
    assert sorted(r.verified()["type"] for r in later[1:]) == ["demo.after", "demo.after"]
    assert [e.type for e in _drain(heard)] == ["demo.after"]  # the test event was never on the bus
    heard.close()


def _drain(heard: Heard) -> list[Any]:
    events = []
    while not heard.queue.empty():
        events.append(heard.queue.get_nowait())
    return events


async def test_a_disabled_webhook_gets_nothing(
    gateway: ClientFactory, docker_host: str, tmp_path: Path, receiver: Receiver
) -> None:
    config = webhook_config(
        docker_host, tmp_path, webhooks=[hook(receiver.url, name="off", enabled=False), hook(receiver.url)]
    )
    client = await start(gateway, config)
    publish(client, "demo.one")
    await receiver.wait_for(1)
    await until(lambda: _delivered(client, 1))
    assert (await shown(client, "off"))["pending"] == 0
    assert len(receiver.received) == 1


async def test_deleting_a_webhook_discards_what_it_had_pending(
    gateway: ClientFactory, docker_host: str, tmp_path: Path, receiver: Receiver
) -> None:
    client = await start(gateway, webhook_config(docker_host, tmp_path))
    await created(client, hook(receiver.url))
    receiver.down = True
    for n in range(3):
        publish(client, "demo.step", n=n)
    await receiver.wait_for(1)
    assert (await shown(client))["pending"] == 3
    assert (await client.delete("/api/v1/webhooks/ops")).status == 204
    receiver.down = False
    await created(client, hook(receiver.url))
    body = await shown(client)
    assert (body["pending"], body["delivered"]) == (0, 0)
    assert await deliveries(client) == []
    publish(client, "demo.step", n=99)
    await until(lambda: _delivered(client, 1))
    assert receiver.received[-1].verified()["data"]["n"] == 99
    assert all(r.verified()["data"]["n"] == 0 for r in receiver.received[:-1])


async def test_pending_deliveries_survive_a_restart(
    gateway: ClientFactory, docker_host: str, tmp_path: Path, receiver: Receiver
) -> None:
    config = webhook_config(
        docker_host, tmp_path, webhooks=[hook(receiver.url)], initial_backoff=5, max_backoff=5
    )
    first = await start(gateway, config)
    receiver.down = True
    for n in range(3):
        publish(first, "demo.step", n=n)
    [tried] = await receiver.wait_for(1)
    await first.close()  # orderly: the workers stop and the store writes what is queued

    receiver.down = False
    again = await start(gateway, config)
    assert (await shown(again))["pending"] in (0, 1, 2, 3)
    got = (await receiver.wait_for(4))[1:]
    assert [r.verified()["data"]["n"] for r in got] == [0, 1, 2]
    assert got[0].headers["webhook-id"] == tried.headers["webhook-id"]  # the same delivery, again
    await until(lambda: _delivered(again, 3))
    history = await deliveries(again)
    assert [d["status"] for d in history] == ["delivered", "delivered", "delivered", "failed"]


@pytest.fixture
def rebinding(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A host name that resolves to 127.0.0.1, as a DNS name an attacker controls can at any time."""
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        return real("127.0.0.1" if host == "rebind.example" else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield "rebind.example"


async def test_a_name_resolving_to_a_refused_address_is_refused_at_connect_time(
    gateway: ClientFactory, docker_host: str, tmp_path: Path, receiver: Receiver, rebinding: str
) -> None:
    url = receiver.url.replace("127.0.0.1", rebinding)
    client = await start(gateway, webhook_config(docker_host, tmp_path, allow_networks=[]))
    await created(client, hook(url))  # a name: nothing to refuse when saved
    publish(client, "demo.one")
    refused = (
        f"{rebinding}: address 127.0.0.1 is in a refused range; allow it with webhook_delivery.allow_networks"
    )
    await until(lambda: _errors(client, refused))
    assert receiver.received == []
    assert (await shown(client))["lastError"] == refused


async def test_a_name_resolving_to_an_allowed_address_is_delivered(
    gateway: ClientFactory, docker_host: str, tmp_path: Path, receiver: Receiver, rebinding: str
) -> None:
    url = receiver.url.replace("127.0.0.1", rebinding)
    client = await start(gateway, webhook_config(docker_host, tmp_path, webhooks=[hook(url)]))
    publish(client, "demo.one")
    [got] = await receiver.wait_for(1)
    assert got.verified()["type"] == "demo.one"
