"""GET /api/v1/alerts: its scope, its filter, and what it lists."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from nekzus.notify.alert_rules import Subject
from nekzus.notify.alerts import ALERTS
from tests.support.gateway import ClientFactory
from tests.unit.test_errors import expect
from tests.unit.test_security import CID, bearer, registry, security_config, token

RULES = [
    {"name": "crashed", "when": {"condition": "exited", "nonzero_only": True}, "notify": ["ops"]},
    {"name": "hot", "when": {"condition": "cpu", "above": 90}, "for": 60},
]
READER = bearer(token(scopes=["read:alerts"]))


async def alerting(gateway: ClientFactory, docker_host: str) -> TestClient[Any, Any]:
    return await gateway(security_config(docker_host, alerts=RULES), runtimes=registry())


async def test_the_list_needs_read_alerts(gateway: ClientFactory, docker_host: str) -> None:
    client = await alerting(gateway, docker_host)
    for scopes in (["read:containers"], ["write:*"], []):
        body = await expect(
            await client.get("/api/v1/alerts", headers=bearer(token(scopes=scopes))), 403, "FORBIDDEN"
        )
        assert "read:alerts" in body["message"]
    await expect(await client.get("/api/v1/alerts"), 401, "UNAUTHORIZED")
    for scopes in (["read:alerts"], ["read:*"], ["*"]):
        resp = await client.get("/api/v1/alerts", headers=bearer(token(scopes=scopes)))
        assert resp.status == 200, await resp.text()
    assert (await client.post("/api/v1/alerts", headers=READER)).status == 405


async def test_firing_and_pending_alerts_are_listed_with_the_rules(
    gateway: ClientFactory, docker_host: str
) -> None:
    client = await alerting(gateway, docker_host)
    resp = await client.get("/api/v1/alerts", headers=READER)
    assert await resp.json() == {
        "alerts": [],
        "rules": [
            {"name": "crashed", "condition": "exited", "notify": ["ops"]},
            {"name": "hot", "condition": "cpu", "notify": []},
        ],
    }
    service = client.app[ALERTS]
    crashed, hot = service.rules
    subject = Subject("docker", "", CID, "fake-1")
    service.book.hold(crashed, subject, "fake-1 exited with code 3", 3)
    service.book.hold(hot, subject, "fake-1 uses 97.0% CPU (above 90%)", 97.0)
    body = await (await client.get("/api/v1/alerts", headers=READER)).json()
    assert [(a["rule"], a["state"], a["value"], a["containerId"]) for a in body["alerts"]] == [
        ("crashed", "firing", 3, CID),
        ("hot", "pending", 97.0, CID),
    ]
    only = await (await client.get("/api/v1/alerts?rule=hot", headers=READER)).json()
    assert [a["rule"] for a in only["alerts"]] == ["hot"]
    assert only["rules"] == [{"name": "hot", "condition": "cpu", "notify": []}]


async def test_an_unknown_rule_is_a_404_that_does_not_echo_it(
    gateway: ClientFactory, docker_host: str
) -> None:
    client = await alerting(gateway, docker_host)
    for name in ("nope", "x" * 5000, "<script>", ""):
        resp = await client.get("/api/v1/alerts", params={"rule": name}, headers=READER)
        body = await expect(resp, 404, "ALERT_RULE_NOT_FOUND")
        assert body["message"] == "No alert rule has that name"
    twice = await client.get("/api/v1/alerts?rule=hot&rule=crashed", headers=READER)
    assert "rule" in (await expect(twice, 400, "INVALID_REQUEST"))["message"]


async def test_a_gateway_without_rules_lists_nothing(gateway: ClientFactory, docker_host: str) -> None:
    client = await gateway(security_config(docker_host), runtimes=registry())
    resp = await client.get("/api/v1/alerts", headers=READER)
    assert await resp.json() == {"alerts": [], "rules": []}
