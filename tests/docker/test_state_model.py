"""The container list served from the event-fed state model: rendering, warmth, and staleness.

The unit tests need no daemon; the rest run the gateway against the real Docker Engine and check
that a list asked after a client heard of a change already shows it, and that the model's rows
are the Engine's own.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from nekzus.keys import EVENT_BUS, REGISTRY, STATE, WATCHERS
from nekzus.realtime.state import ContainerModel
from runtimes import ContainerState, ContainerSummary, OperationFailed
from runtimes.docker import DockerRuntime
from runtimes.docker.states import DockerRow, Lifetime
from tests.docker.test_websocket import connect
from tests.support.docker_engine import Containers
from tests.support.gateway import LINKED, ClientFactory, Heard, make_config, next_event, state_heard, watching

# -- rendering the status line ------------------------------------------------------------------


def lifetime(
    status: str, *, started: float = 1000, finished: float = 0, code: int = 0, health: str | None = None
) -> Lifetime:
    return Lifetime(status, started, finished, code, health)


# -- the model ------------------------------------------------------------------------------------


def row(cid: str, state: ContainerState = ContainerState.RUNNING) -> DockerRow:
    summary = ContainerSummary(
        id=cid, full_id=cid * 4, name=f"n-{cid}", image="img", state=state, status="", created=1,
        ports=(), labels={}, runtime="docker",
    )  # fmt: skip
    return DockerRow(summary, lifetime(state.value))


# -- against the Engine ---------------------------------------------------------------------------


async def until(check: Callable[[], Awaitable[bool]], *, timeout: float = 15, what: str) -> None:
    """Polls ``check`` until it holds: for changes no event announces (renames, removals)."""
    try:
        async with asyncio.timeout(timeout):
            while not await check():  # noqa: ASYNC110 - nothing announces these changes to wait on
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


async def listed(client: TestClient[Any, Any], query: str = "?all=true") -> dict[str, dict[str, Any]]:
    resp = await client.get(f"/api/v1/containers{query}")
    assert resp.status == 200, await resp.text()
    return {c["id"]: c for c in await resp.json()}


async def warm(client: TestClient[Any, Any]) -> ContainerModel:
    await watching(client)
    model: ContainerModel = client.app[STATE].models["docker"]
    assert model.warm
    return model


async def made_and_heard(
    client: TestClient[Any, Any], containers: Containers, *, stop: bool = False, **kwargs: Any
) -> dict[str, Any]:
    """A new container, once the gateway has published its state (and so has its row)."""
    await warm(client)
    sub = Heard(client.app[EVENT_BUS])
    try:
        made = await containers.create(**kwargs)
        wanted = "running" if kwargs.get("start", True) else "created"
        if stop:
            await containers.docker.containers.container(made["Id"]).stop(t=1)
            wanted = "exited"
        await state_heard(sub, made["Id"], wanted)
        return made
    finally:
        sub.close()


def record_calls(monkeypatch: pytest.MonkeyPatch, runtime: Any, method: str) -> list[Any]:
    """The first argument of every call of ``runtime.method`` from now on (None without one); the
    calls still go through to the runtime."""
    calls: list[Any] = []
    real = getattr(runtime, method)

    async def recorded(*args: Any, **kwargs: Any) -> Any:
        calls.append(args[0] if args else None)
        return await real(*args, **kwargs)

    monkeypatch.setattr(runtime, method, recorded)
    return calls


async def test_the_list_is_served_from_the_model_without_asking_the_engine(
    client: TestClient[Any, Any], containers: Containers, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = await made_and_heard(client, containers, labels=LINKED)
    docker = client.app[REGISTRY].get("docker")
    assert isinstance(docker, DockerRuntime)

    async def refuse(**_: Any) -> list[ContainerSummary]:
        raise OperationFailed("the list must come from the model")

    monkeypatch.setattr(docker, "list_containers", refuse)
    rows = await listed(client, "")
    assert rows[made["Id"][:12]]["state"] == "running"
    assert rows[made["Id"][:12]]["status"].startswith("Up ")


async def test_action_pre_checks_that_accept_come_from_the_model_refusals_from_the_engine(
    client: TestClient[Any, Any], containers: Containers, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = await made_and_heard(client, containers, labels=LINKED)
    second = await made_and_heard(client, containers, labels=LINKED)
    third = await made_and_heard(client, containers, labels=LINKED)
    docker = client.app[REGISTRY].get("docker")
    asked = record_calls(monkeypatch, docker, "get")
    # Accepted from the model alone: no Engine call before the 202 (a stop's own work asks none).
    assert (await client.post(f"/api/v1/containers/{first['Id'][:12]}/stop?timeout=1")).status == 202
    batch = {"action": "stop", "containerIds": [second["Name"].lstrip("/")], "timeout": 1}
    results = (await (await client.post("/api/v1/containers/batch", json=batch)).json())["results"]
    assert results == [{"id": second["Id"][:12], "name": second["Name"].lstrip("/"), "success": True}]
    assert asked == []
    # A refusal is never the model's alone: a model that lags the Engine (here: made to say the
    # running container has exited) is checked against the Engine, which lets the stop go ahead.
    model = client.app[STATE].models["docker"]
    find = model.find

    def lagging(ref: str, now: float) -> ContainerSummary | None:
        found = find(ref, now)
        return dataclasses.replace(found, state=ContainerState.EXITED) if found else None

    monkeypatch.setattr(model, "find", lagging)
    assert (await client.post(f"/api/v1/containers/{third['Id'][:12]}/stop?timeout=1")).status == 202
    assert [ref.id for ref in asked] == [third["Id"][:12]]


async def test_the_model_rows_are_the_engines_own(
    client: TestClient[Any, Any], containers: Containers
) -> None:
    running = await made_and_heard(client, containers, labels={**LINKED, "extra": "x"})
    created = await made_and_heard(client, containers, labels=LINKED, start=False)
    stopped = await made_and_heard(client, containers, labels=LINKED, stop=True)
    docker = client.app[REGISTRY].get("docker")
    from_model = await listed(client)
    from_engine = {c.id: c for c in await docker.list_containers()}
    for made in (running, created, stopped):
        cid = made["Id"][:12]
        ours, theirs = from_model[cid], from_engine[cid]
        assert ours["name"] == theirs.name and ours["image"] == theirs.image
        assert ours["state"] == theirs.state.value and ours["created"] == theirs.created
        assert ours["labels"] == dict(theirs.labels)
        assert len(ours["ports"]) == len(theirs.ports)
        if cid == created["Id"][:12]:
            assert ours["status"] == theirs.status == "Created"
        else:
            # Rendered now from stored times: the words agree, the seconds may have ticked.
            assert ours["status"].split(" ")[0] == theirs.status.split(" ")[0]
    assert from_model[stopped["Id"][:12]]["status"].startswith("Exited (")


async def test_status_lines_are_rendered_when_served_not_when_read(
    client: TestClient[Any, Any], containers: Containers
) -> None:
    made = await made_and_heard(client, containers, stop=True)
    exited = client.app[STATE].models["docker"].rows[made["Id"][:12]]
    finished = exited.at(time.time()).status
    assert finished.startswith("Exited (") and finished.endswith(" ago")
    assert exited.at(time.time() + 7200).status.endswith("2 hours ago")


async def test_a_list_after_a_state_event_already_shows_the_new_state(
    client: TestClient[Any, Any], containers: Containers
) -> None:
    made = await containers.create(labels=LINKED, start=False)
    cid = made["Id"][:12]
    await warm(client)
    ws = await connect(client)
    await ws.until("hello")
    await ws.send("subscribe", types=["container.state"])
    await ws.until("subscribed")
    container = containers.docker.containers.container(made["Id"])
    for _ in range(3):
        await container.start()
        await ws.until("container.state", containerId=cid, state="running")
        row = (await listed(client, ""))[cid]
        assert row["state"] == "running" and row["status"].startswith("Up "), row
        await container.stop(t=1)
        await ws.until("container.state", containerId=cid, state="exited")
        row = (await listed(client, ""))[cid]
        assert row["state"] == "exited" and row["status"].startswith("Exited ("), row


async def test_a_list_after_an_action_completed_already_shows_its_result(
    client: TestClient[Any, Any], containers: Containers
) -> None:
    made = await made_and_heard(client, containers, labels=LINKED)
    cid = made["Id"][:12]
    sub = Heard(client.app[EVENT_BUS])
    try:
        for action, state in (("stop", "exited"), ("start", "running"), ("restart", "running")):
            resp = await client.post(f"/api/v1/containers/{cid}/{action}?timeout=1")
            assert resp.status == 202
            await next_event(sub, f"container.{action}.completed")
            assert (await listed(client, ""))[cid]["state"] == state
    finally:
        sub.close()


async def test_renames_and_removals_reach_the_list(
    client: TestClient[Any, Any], containers: Containers
) -> None:
    made = await made_and_heard(client, containers, labels=LINKED)
    cid = made["Id"][:12]
    new_name = f"renamed-{cid}"
    await containers.docker.containers.container(made["Id"]).rename(new_name)

    async def renamed() -> bool:
        return (await listed(client)).get(cid, {}).get("name") == new_name

    await until(renamed, what="the new name in the list")
    assert client.app[STATE].models["docker"].warm  # served from the model, not the Engine
    await containers.docker.containers.container(made["Id"]).delete(force=True)

    async def removed() -> bool:
        return cid not in await listed(client)

    await until(removed, what="the container to leave the list")


async def test_health_verdicts_reach_the_list(client: TestClient[Any, Any], containers: Containers) -> None:
    await warm(client)
    sub = Heard(client.app[EVENT_BUS])
    # An app of this test's own: other containers on the daemon may be linked to configured apps.
    app_id = f"probe-{containers.run_id}"
    made = await containers.docker.containers.create(
        {
            "Image": "nekzus-test:busybox",
            "Cmd": ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 0.1; done"],
            "Labels": {
                "nekzus.enable": "true",
                "nekzus.http.app.id": app_id,
                "nekzus.test.run": containers.run_id,
            },
            "Healthcheck": {"Test": ["CMD", "true"], "Interval": 200_000_000, "Retries": 1},
            "HostConfig": {"NetworkMode": "none"},
        }
    )
    containers.created.append(made.id)
    try:
        await made.start()
        async with asyncio.timeout(15):
            while (event := await next_event(sub, "health_change")).data["appId"] != app_id:
                pass
        assert event.data["status"] == "healthy"
        assert (await listed(client, ""))[made.id[:12]]["status"].endswith("(healthy)")
    finally:
        sub.close()


async def test_an_unwarm_model_lists_from_the_engine(
    client: TestClient[Any, Any], containers: Containers, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = await made_and_heard(client, containers, labels=LINKED)
    model = client.app[STATE].models["docker"]
    docker = client.app[REGISTRY].get("docker")
    calls = record_calls(monkeypatch, docker, "list_containers")
    await listed(client, "")
    assert len(calls) == 0
    model.cool()  # as when the stream breaks or a re-read fails
    assert made["Id"][:12] in await listed(client, "")
    assert len(calls) == 1


async def test_the_periodic_resync_repairs_what_the_stream_missed(
    gateway: ClientFactory, docker_host: str, containers: Containers
) -> None:
    config = make_config(
        docker_host, runtimes={"docker": {"host": docker_host, "self_id": "0" * 64, "resync_interval": 1}}
    )
    client = await gateway(config)
    made = await made_and_heard(client, containers, labels=LINKED)
    cid = made["Id"][:12]
    model = client.app[STATE].models["docker"]
    model.refresh([cid], [], time.monotonic())  # as if an event had been lost
    assert cid not in model.rows  # before any await: the 1 s resync may restore it at any moment

    async def back() -> bool:
        return cid in await listed(client)

    await until(back, timeout=10, what="the resync to restore the row")


async def test_watchers_of_runtimes_without_rows_have_no_model(client: TestClient[Any, Any]) -> None:
    for watcher in client.app[WATCHERS]:
        assert (watcher.model is not None) == isinstance(watcher.runtime, DockerRuntime)
