"""Alert rules on the private Engine: each condition fires exactly once and resolves once.

Each test's rule selects only its own containers (the run label every test container carries).
An alert's ``alert.firing`` is published from within the bus listener that hears the event it is
about, so it is heard before that event: reading up to a container's ``container.state`` proves
whether an exit fired, without waiting for something that should not come.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import aiodocker
from aiohttp.test_utils import TestClient

from nekzus.keys import EVENT_BUS
from nekzus.notify.alerts import ALERTS
from nekzus.realtime.events import Event
from tests.support.docker_engine import RUN_LABEL, TEST_IMAGE, Containers
from tests.support.gateway import ClientFactory, Heard, make_config, watching

ALERT_EVENTS = ("alert.firing", "alert.resolved")
SECOND = 1_000_000_000  # nanoseconds, as the Engine counts a healthcheck's times


async def alerting(
    gateway: ClientFactory, docker_host: str, containers: Containers, condition: str, **rule: Any
) -> tuple[TestClient[Any, Any], Heard]:
    when = {"condition": condition, "labels": {RUN_LABEL: containers.run_id}, **rule.pop("when", {})}
    config = make_config(docker_host, alerts=[{"name": f"t-{condition}", "when": when, **rule}])
    client = await gateway(config)
    await watching(client)
    return client, Heard(client.app[EVENT_BUS])


async def heard_until(sub: Heard, done: Done, timeout: float = 30) -> list[Event]:
    """Every event heard up to and with the first for which ``done`` is true."""
    events = []
    async with asyncio.timeout(timeout):
        while True:
            event = await sub.get()
            events.append(event)
            if done(event):
                return events


def alerts_in(events: list[Event]) -> list[tuple[str, dict[str, Any]]]:
    return [(e.type, dict(e.data)) for e in events if e.type in ALERT_EVENTS]


Done = Callable[[Event], bool]


def state_of(cid: str, state: str) -> Done:
    return lambda e: e.type == "container.state" and (e.data["containerId"], e.data["state"]) == (cid, state)


def health_of(cid: str, verdict: str) -> Done:
    told = ("container.health", cid, verdict)
    return lambda e: (e.type, e.data.get("containerId"), e.data.get("health")) == told


def alert_of(kind: str) -> Done:
    return lambda e: e.type == kind


async def create(containers: Containers, cmd: list[str], **host: Any) -> dict[str, Any]:
    """A started test container with more settings than Containers.create takes (removed after
    the test with the others)."""
    extra = host.pop("config", {})
    config = {
        "Image": TEST_IMAGE,
        "Cmd": cmd,
        "Labels": {RUN_LABEL: containers.run_id},
        "StopTimeout": 1,
        "HostConfig": {"NetworkMode": "none", **host},
        **extra,
    }
    made = await containers.docker.containers.create(config, name=f"nekzus-test-{uuid.uuid4().hex[:10]}")
    containers.created.append(made.id)
    await made.start()
    return dict(await made.show())


async def remove(client: TestClient[Any, Any], sub: Heard, cid: str) -> list[Event]:
    """Remove the container through the gateway (a stop asked for) and answer every event heard
    up to its removal."""
    resp = await client.delete(f"/api/v1/containers/{cid}?force=true&all=true")
    assert resp.status == 202, await resp.text()
    return await heard_until(sub, state_of(cid, "removed"))


async def test_a_kill_fires_once_and_a_start_resolves_it(
    gateway: ClientFactory, docker_host: str, containers: Containers, docker: aiodocker.Docker
) -> None:
    client, sub = await alerting(gateway, docker_host, containers, "exited", cooldown=1)
    made = await containers.create()
    cid = made["Id"][:12]
    await heard_until(sub, state_of(cid, "running"))
    await docker.containers.container(cid).kill()
    events = await heard_until(sub, state_of(cid, "exited"))
    ((kind, fired),) = alerts_in(events)
    assert kind == "alert.firing"
    assert (fired["rule"], fired["condition"], fired["containerId"], fired["value"]) == (
        "t-exited",
        "exited",
        cid,
        137,
    )
    assert fired["name"] == made["Name"].lstrip("/") and fired["count"] == 1
    assert events[-1].data["exitCode"] == 137  # container.state tells the exit code
    listed = await (await client.get("/api/v1/alerts")).json()
    assert [(a["alertId"], a["state"]) for a in listed["alerts"]] == [(fired["alertId"], "firing")]

    await docker.containers.container(cid).start()
    events = await heard_until(sub, alert_of("alert.resolved"))
    assert [(k, d["alertId"]) for k, d in alerts_in(events)] == [("alert.resolved", fired["alertId"])]
    assert alerts_in(await remove(client, sub, cid)) == []
    assert (await (await client.get("/api/v1/alerts")).json())["alerts"] == []


async def test_a_stop_through_the_gateway_does_not_fire(
    gateway: ClientFactory, docker_host: str, containers: Containers, docker: aiodocker.Docker
) -> None:
    client, sub = await alerting(gateway, docker_host, containers, "exited")
    made = await containers.create()
    cid = made["Id"][:12]
    await heard_until(sub, state_of(cid, "running"))
    resp = await client.post(f"/api/v1/containers/{cid}/stop", json={"timeout": 1})
    assert resp.status == 202, await resp.text()
    events = await heard_until(sub, state_of(cid, "exited"))
    assert alerts_in(events) == []
    # A restart through the gateway neither (its exit, nor counted as a restart).
    resp = await client.post(f"/api/v1/containers/{cid}/start")
    assert resp.status == 202
    await heard_until(sub, state_of(cid, "running"))
    resp = await client.post(f"/api/v1/containers/{cid}/restart", json={"timeout": 1})
    assert resp.status == 202
    events = await heard_until(sub, lambda e: e.type == "container.restart.completed")
    assert alerts_in(events) == []
    assert alerts_in(await remove(client, sub, cid)) == []


async def test_an_oom_kill_fires_once_and_resolves_when_it_runs_again(
    gateway: ClientFactory, docker_host: str, containers: Containers, docker: aiodocker.Docker
) -> None:
    client, sub = await alerting(gateway, docker_host, containers, "oom", cooldown=1)
    # The first run eats memory past its 16 MiB limit; a later one (the file stays) just waits.
    script = "if [ -f /tmp/ran ]; then exec sleep 300; fi; touch /tmp/ran; exec tail /dev/zero"
    made = await create(containers, ["sh", "-c", script], Memory=16 << 20, MemorySwap=16 << 20)
    cid = made["Id"][:12]
    events = await heard_until(sub, state_of(cid, "exited"))
    assert [e.type for e in events if e.type == "container.oom"] == ["container.oom"]
    ((kind, fired),) = alerts_in(events)
    assert kind == "alert.firing" and fired["condition"] == "oom" and fired["containerId"] == cid
    assert events[-1].data["exitCode"] == 137
    await docker.containers.container(cid).start()
    events = await heard_until(sub, alert_of("alert.resolved"))
    assert [(k, d["alertId"]) for k, d in alerts_in(events)] == [("alert.resolved", fired["alertId"])]
    assert alerts_in(await remove(client, sub, cid)) == []


async def exec_in(docker: aiodocker.Docker, cid: str, *cmd: str) -> None:
    execution = await docker.containers.container(cid).exec(list(cmd))
    await execution.start(detach=True)


async def test_a_failing_healthcheck_fires_once_and_resolves_once_fixed(
    gateway: ClientFactory, docker_host: str, containers: Containers, docker: aiodocker.Docker
) -> None:
    client, sub = await alerting(gateway, docker_host, containers, "unhealthy", cooldown=1)
    check = {
        "Test": ["CMD-SHELL", "test -f /tmp/ok"],
        "Interval": SECOND // 2,
        "Timeout": SECOND,
        "Retries": 1,
    }
    loop = "touch /tmp/ok; trap 'exit 0' TERM; while :; do sleep 0.1; done"
    made = await create(containers, ["sh", "-c", loop], config={"Healthcheck": check})
    cid = made["Id"][:12]
    await heard_until(sub, health_of(cid, "healthy"))
    await exec_in(docker, cid, "rm", "/tmp/ok")
    events = await heard_until(sub, health_of(cid, "unhealthy"))
    ((kind, fired),) = alerts_in(events)
    assert kind == "alert.firing" and fired["containerId"] == cid
    told = events[-1].data
    assert (told["containerId"], told["previousHealth"], told["runtime"]) == (cid, "healthy", "docker")
    await exec_in(docker, cid, "touch", "/tmp/ok")
    events = await heard_until(sub, alert_of("alert.resolved"))
    assert [(k, d["alertId"]) for k, d in alerts_in(events)] == [("alert.resolved", fired["alertId"])]
    assert alerts_in(await remove(client, sub, cid)) == []


async def test_a_restart_loop_fires_once_and_resolves_once_the_restarts_age_out(
    gateway: ClientFactory, docker_host: str, containers: Containers, docker: aiodocker.Docker
) -> None:
    client, sub = await alerting(
        gateway, docker_host, containers, "restart_loop", when={"restarts": 3, "within": 8}, cooldown=1
    )
    policy = {"Name": "on-failure", "MaximumRetryCount": 3}
    made = await create(containers, ["sh", "-c", "sleep 0.2; exit 1"], RestartPolicy=policy)
    cid = made["Id"][:12]
    events = await heard_until(sub, alert_of("alert.resolved"), timeout=60)
    fired, resolved = alerts_in(events)
    assert (fired[0], resolved[0]) == ("alert.firing", "alert.resolved")
    assert fired[1]["alertId"] == resolved[1]["alertId"] and fired[1]["value"] == 3
    starts = [e for e in events if state_of(cid, "running")(e)]
    assert len(starts) == 4  # the first run and three restarts
    assert alerts_in(await remove(client, sub, cid)) == []


async def test_a_log_line_fires_once_and_resolves_after_quiet(
    gateway: ClientFactory, docker_host: str, containers: Containers, docker: aiodocker.Docker
) -> None:
    client, sub = await alerting(
        gateway, docker_host, containers, "log", when={"terms": ["boom"], "quiet": 1}, cooldown=0
    )
    script = "echo starting; sleep 1; echo 'it went BOOM'; trap 'exit 0' TERM; while :; do sleep 0.1; done"
    made = await containers.create(cmd=["sh", "-c", script])
    cid = made["Id"][:12]
    events = await heard_until(sub, alert_of("alert.resolved"))
    fired, resolved = alerts_in(events)
    assert fired[0] == "alert.firing" and fired[1]["message"].endswith("logged: it went BOOM")
    assert fired[1]["value"] == 1 and resolved[1]["alertId"] == fired[1]["alertId"]
    service = client.app[ALERTS]
    assert list(service.logs.followers) == [("docker", "", cid)]
    assert alerts_in(await remove(client, sub, cid)) == []
    assert service.logs.followers == {}


async def test_a_busy_container_fires_cpu_and_its_sampler_goes_with_it(
    gateway: ClientFactory, docker_host: str, containers: Containers, docker: aiodocker.Docker
) -> None:
    client, sub = await alerting(
        gateway, docker_host, containers, "cpu", when={"above": 5}, cooldown=0, **{"for": 1}
    )
    made = await containers.create(cmd=["sh", "-c", "trap 'exit 0' TERM; while :; do :; done"])
    cid = made["Id"][:12]
    events = await heard_until(sub, alert_of("alert.firing"))
    ((_, fired),) = alerts_in(events)
    assert fired["condition"] == "cpu" and fired["value"] > 5
    service = client.app[ALERTS]
    assert list(service.stats.followed) == [("docker", "", cid)]
    await docker.containers.container(cid).kill()
    events = await heard_until(sub, alert_of("alert.resolved"))
    assert [(k, d["alertId"]) for k, d in alerts_in(events)] == [("alert.resolved", fired["alertId"])]
    assert alerts_in(await remove(client, sub, cid)) == []
    assert service.stats.followed == {}
