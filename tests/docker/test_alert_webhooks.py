"""Alerts to webhooks end to end, on the private Engine and a real receiver: a container killed
behind the gateway's back reaches the rule's webhook as a signed ``alert.firing``, and its start
as ``alert.resolved``, in that order, each once, carrying the hub's ``seq``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiodocker

from nekzus.keys import EVENT_BUS
from tests.docker.test_alerts import alert_of, heard_until, state_of
from tests.support.docker_engine import RUN_LABEL, Containers
from tests.support.gateway import ClientFactory, Heard, watching
from tests.support.receiver import SECRET, Receiver, receiver, shown, until, webhook_config

__all__ = ["receiver"]  # the fixture


async def test_a_killed_container_reaches_the_rules_webhook_signed_and_then_resolves(
    gateway: ClientFactory,
    docker_host: str,
    containers: Containers,
    docker: aiodocker.Docker,
    receiver: Receiver,
    tmp_path: Path,
) -> None:
    rule: dict[str, Any] = {
        "name": "crashed",
        "when": {"condition": "exited", "labels": {RUN_LABEL: containers.run_id}},
        "cooldown": 1,
        "notify": ["oncall"],
    }
    # The webhook subscribes to nothing itself: only the rule's notify sends it the alerts.
    webhook = {"name": "oncall", "url": receiver.url, "events": [], "secret": SECRET}
    client = await gateway(webhook_config(docker_host, tmp_path, webhooks=[webhook], alerts=[rule]))
    await watching(client)
    sub = Heard(client.app[EVENT_BUS])
    made = await containers.create()
    cid = made["Id"][:12]
    await heard_until(sub, state_of(cid, "running"))

    await docker.containers.container(cid).kill()
    (firing,) = await receiver.wait_for(1, timeout=30)
    body = firing.verified()
    assert body["type"] == "alert.firing" and firing.headers["webhook-id"] == body["id"]
    assert (body["data"]["rule"], body["data"]["containerId"], body["data"]["value"]) == ("crashed", cid, 137)
    assert isinstance(body["seq"], int)

    await docker.containers.container(cid).start()
    await heard_until(sub, alert_of("alert.resolved"))
    first, resolved = await receiver.wait_for(2, timeout=30)
    assert first is firing
    after = resolved.verified()
    assert after["type"] == "alert.resolved" and after["seq"] > body["seq"]
    assert after["data"]["alertId"] == body["data"]["alertId"] and after["id"] != body["id"]

    # Nothing else was sent: the container's own state events are not what this webhook asked for.
    # (The receiver keeps a request before answering it: the count follows the answer.)
    async def settled() -> bool:
        return bool((await shown(client, "oncall"))["pending"] == 0)

    await until(settled)
    counts = await shown(client, "oncall")
    assert (counts["delivered"], counts["failed"], counts["dropped"]) == (2, 0, 0)
    assert len(receiver.received) == 2
