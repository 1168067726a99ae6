"""The stack list, one stack, and the files of managed stacks against the private Docker Engine:
projects started by hand with the real compose binary (discovered) beside managed ones, the
linking rule, statuses, filters and pages, health, every write checked by the real compose
first, and every kind of bad input refused with nothing written."""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from nekzus.config import Config
from nekzus.jsoninput import MAX_DEPTH
from nekzus.stacks.files import COMPOSE_FILE, ENV_FILE
from nekzus.stacks.model import COMPOSE_ACTIONS, ENGINE_ACTIONS
from nekzus.stacks.service import STACKS
from tests.support.gateway import JSON, LINKED, ClientFactory, make_config
from tests.support.stacks import HandProjects, compose_file, project_name, service
from tests.unit.test_errors import expect
from tests.unit.test_security import bearer, security_config, token

PREFIX = "nkzf"
MAX_FILE = 4096
# A compose file that compose refuses without IMG (from the .env) and accepts with it.
NEEDS_IMG = compose_file({"web": service(image="${IMG:?IMG must be set}")})
BAD = compose_file({"web": service(foo=1)})
ROOT = {"services", "running", "status", "managed", "updatedAt", "busy", "name"}


@pytest.fixture
def stacks_dir(tmp_path: Path) -> Path:
    return tmp_path / "stacks"


@pytest.fixture
def config(docker_host: str, stacks_dir: Path) -> Config:
    return make_config(docker_host, stacks={"dir": str(stacks_dir), "max_file_bytes": MAX_FILE})


async def rows(client: TestClient[Any, Any], query: str = "") -> list[dict[str, Any]]:
    resp = await client.get(f"/api/v1/stacks?{query}")
    assert resp.status == 200, await resp.text()
    found: list[dict[str, Any]] = await resp.json()
    return found


async def listed_until(
    client: TestClient[Any, Any], name: str, check: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """The stack's row once ``check`` holds (the list follows the Engine's events)."""
    async with asyncio.timeout(30):
        while True:
            row = next((r for r in await rows(client, f"all=true&name={name}") if r["name"] == name), None)
            if row is not None and check(row):
                return row
            await asyncio.sleep(0.1)


async def detail_until(
    client: TestClient[Any, Any], name: str, check: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    async with asyncio.timeout(30):
        while True:
            resp = await client.get(f"/api/v1/stacks/{name}")
            if resp.status == 200:
                body: dict[str, Any] = await resp.json()
                if check(body):
                    return body
            await asyncio.sleep(0.1)


async def create(
    client: TestClient[Any, Any], name: str, compose: str | None = None, **fields: Any
) -> dict[str, Any]:
    body = {"name": name, "compose": compose_file() if compose is None else compose, **fields}
    resp = await client.post("/api/v1/stacks", json=body)
    assert resp.status == 201, await resp.text()
    assert resp.headers["Location"] == f"/api/v1/stacks/{name}"
    created: dict[str, Any] = await resp.json()
    return created


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``folder`` with its bytes and change time (nothing at all: empty)."""
    if not folder.exists():
        return {}
    return {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


async def test_the_list_shows_managed_and_linked_stacks_and_all_shows_the_rest(
    client: TestClient[Any, Any], hand_projects: HandProjects
) -> None:
    linked, unlinked, managed = (project_name(PREFIX) for _ in range(3))
    hand_projects.up(linked, compose_file({"web": service(labels=LINKED), "worker": service()}))
    hand_projects.up(unlinked, compose_file())
    await create(client, managed)
    row = await listed_until(client, linked, lambda r: r["running"] == 2)
    assert row == {
        "name": linked,
        "status": "running",
        "services": 2,
        "running": 2,
        "managed": False,
        "updatedAt": row["updatedAt"],
        "busy": None,
    }
    assert isinstance(row["updatedAt"], int) and row["updatedAt"] > 0
    await listed_until(client, unlinked, lambda r: r["running"] == 2)
    shown = {r["name"]: r for r in await rows(client, f"name={PREFIX}")}
    assert linked in shown and managed in shown and unlinked not in shown
    assert shown[managed] | {"updatedAt": 0} == {
        "name": managed,
        "status": "stopped",
        "services": 2,
        "running": 0,
        "managed": True,
        "updatedAt": 0,
        "busy": None,
    }
    everything = {r["name"] for r in await rows(client, f"all=true&name={PREFIX}")}
    assert {linked, unlinked, managed} <= everything


async def test_status_follows_the_services(client: TestClient[Any, Any], hand_projects: HandProjects) -> None:
    name = project_name(PREFIX)
    hand_projects.up(name, compose_file({"web": service(labels=LINKED), "worker": service(labels=LINKED)}))
    await listed_until(client, name, lambda r: r["status"] == "running")
    hand_projects.compose(name, "stop", "--timeout", "0", "worker")
    row = await listed_until(client, name, lambda r: r["status"] == "partial")
    assert row["running"] == 1 and row["services"] == 2
    body = await detail_until(client, name, lambda b: b["status"] == "partial")
    assert {s["name"]: s["status"] for s in body["services"]} == {"web": "running", "worker": "stopped"}
    assert body["services"][1]["containers"][0]["state"] == "exited"
    hand_projects.compose(name, "stop", "--timeout", "0")
    row = await listed_until(client, name, lambda r: r["status"] == "stopped")
    assert row["running"] == 0


async def test_one_stack_shows_services_containers_health_and_its_actions_but_no_path(
    client: TestClient[Any, Any], hand_projects: HandProjects, tmp_path: Path
) -> None:
    name = project_name(PREFIX)
    health = {"test": ["CMD", "true"], "interval": "1s", "start_period": "0s"}
    folder = hand_projects.up(name, compose_file({"web": service(healthcheck=health), "worker": service()}))

    def healthy(body: dict[str, Any]) -> bool:
        return bool(body["services"][0]["containers"]) and body["services"][0]["containers"][0]["health"] == (
            "healthy"
        )

    body = await detail_until(client, name, healthy)
    assert set(body) == ROOT | {"actions"}
    assert body["actions"] == list(COMPOSE_ACTIONS)  # compose can read the files it was started from
    web, worker = body["services"]
    assert web["name"] == "web" and web["status"] == "running" and worker["name"] == "worker"
    container = web["containers"][0]
    assert set(container) == {"id", "name", "state", "status", "health", "image", "ports", "created"}
    assert container["name"] == f"{name}-web-1" and container["state"] == "running"
    assert container["image"] == "nekzus-test:busybox" and container["ports"] == []  # network none
    assert len(container["id"]) == 12 and isinstance(container["created"], int)
    assert worker["containers"][0]["health"] is None
    text = await (await client.get(f"/api/v1/stacks/{name}")).text()
    assert str(tmp_path) not in text and "working_dir" not in text and "config_files" not in text
    # Files the gateway cannot read: only what the Engine does alone.
    hidden = folder / "hidden.yaml"
    (folder / COMPOSE_FILE).rename(hidden)
    try:
        body = await (await client.get(f"/api/v1/stacks/{name}")).json()
        assert body["actions"] == list(ENGINE_ACTIONS)
    finally:
        hidden.rename(folder / COMPOSE_FILE)
    await expect(await client.get(f"/api/v1/stacks/{project_name(PREFIX)}"), 404, "STACK_NOT_FOUND")


async def test_filters_sort_and_pages(client: TestClient[Any, Any], hand_projects: HandProjects) -> None:
    base = project_name(PREFIX)
    for suffix in ("b", "a", "c"):
        await create(client, f"{base}-{suffix}")
    running = f"{base}-run"
    hand_projects.up(running, compose_file({"web": service(labels=LINKED)}))
    await listed_until(client, running, lambda r: r["status"] == "running")

    async def names(query: str) -> list[str]:
        return [r["name"] for r in await rows(client, f"name={base.upper()}&{query}")]

    assert await names("") == [f"{base}-a", f"{base}-b", f"{base}-c", running]
    assert await names("state=running") == [running]
    assert await names("state=stopped,partial") == [f"{base}-a", f"{base}-b", f"{base}-c"]
    assert len(await names("state=running&state=stopped")) == 4
    assert await names("state=unknown") == []
    assert await names("sort=-name") == [running, f"{base}-c", f"{base}-b", f"{base}-a"]
    assert await names("sort=status") == [running, f"{base}-a", f"{base}-b", f"{base}-c"]
    by_time = await rows(client, f"name={base}&sort=-updatedAt")
    assert [r["updatedAt"] for r in by_time] == sorted((r["updatedAt"] for r in by_time), reverse=True)
    resp = await client.get(f"/api/v1/stacks?name={base}&sort=name&limit=2&offset=1")
    assert [r["name"] for r in await resp.json()] == [f"{base}-b", f"{base}-c"]
    assert resp.headers["X-Total-Count"] == "4"
    links = resp.headers["Link"]
    for rel in ("next", "prev", "first", "last"):
        assert f'rel="{rel}"' in links
    assert "offset=3" in links and f"name={base}" in links
    for bad in (
        "state=bogus",
        "state=",
        "state=running,",
        "sort=size",
        "sort=name&sort=status",
        "name=",
        "name=a&name=b",
        f"name={'a' * 257}",
        "limit=0",
        "limit=1001",
        "limit=abc",
        "limit=NaN",
        "limit=1e3",
        "limit=99999999999999999999",
        "offset=-1",
        "all=maybe",
    ):
        await expect(await client.get(f"/api/v1/stacks?{bad}"), 400, "INVALID_REQUEST")


async def test_a_created_stack_has_its_files_and_answers_its_detail(
    client: TestClient[Any, Any], stacks_dir: Path
) -> None:
    name = project_name(PREFIX)
    compose = compose_file()
    body = await create(client, name, compose, env="SECRET=s3cret\n")
    assert body["name"] == name and body["managed"] and body["busy"] is None
    assert body["status"] == "stopped" and body["running"] == 0
    assert body["services"] == [
        {"name": "web", "status": "stopped", "containers": []},
        {"name": "worker", "status": "stopped", "containers": []},
    ]
    assert body["actions"] == list(COMPOSE_ACTIONS)
    assert await (await client.get(f"/api/v1/stacks/{name}")).json() == body
    folder = stacks_dir / name
    assert os.listdir(stacks_dir) == [name]  # nothing left of the check
    assert (folder / COMPOSE_FILE).read_text() == compose
    assert (folder / ENV_FILE).read_text() == "SECRET=s3cret\n"
    assert stat.S_IMODE((folder / ENV_FILE).stat().st_mode) == 0o600
    files = await (await client.get(f"/api/v1/stacks/{name}/compose")).json()
    assert files == {"name": name, "compose": compose, "env": "SECRET=s3cret\n", "envHidden": False}
    before = snapshot(stacks_dir)
    resp = await client.post("/api/v1/stacks", json={"name": name, "compose": compose_file()})
    await expect(resp, 409, "STACK_ALREADY_EXISTS")
    assert snapshot(stacks_dir) == before


async def test_a_discovered_project_is_no_managed_stack(
    client: TestClient[Any, Any], hand_projects: HandProjects, stacks_dir: Path
) -> None:
    name = project_name(PREFIX)
    hand_projects.up(name, compose_file())
    await listed_until(client, name, lambda r: r["running"] == 2)
    resp = await client.post("/api/v1/stacks", json={"name": name, "compose": compose_file()})
    await expect(resp, 409, "STACK_ALREADY_EXISTS")
    resp = await client.put(f"/api/v1/stacks/{name}", json={"compose": compose_file()})
    await expect(resp, 409, "STACK_NOT_MANAGED")
    await expect(await client.get(f"/api/v1/stacks/{name}/compose"), 409, "STACK_NOT_MANAGED")
    unknown = project_name(PREFIX)
    resp = await client.put(f"/api/v1/stacks/{unknown}", json={"compose": compose_file()})
    await expect(resp, 404, "STACK_NOT_FOUND")
    await expect(await client.get(f"/api/v1/stacks/{unknown}/compose"), 404, "STACK_NOT_FOUND")
    assert snapshot(stacks_dir) == {}


async def test_compose_refuses_a_file_with_its_own_message_and_nothing_changes(
    client: TestClient[Any, Any], stacks_dir: Path, tmp_path: Path
) -> None:
    name = project_name(PREFIX)
    for compose, says in (
        (BAD, "additional properties 'foo' not allowed"),
        ("services: [\n", "yaml"),
        (NEEDS_IMG, "IMG must be set"),
    ):
        resp = await client.post("/api/v1/stacks", json={"name": name, "compose": compose})
        body = await expect(resp, 400, "INVALID_COMPOSE")
        assert says in body["message"]
        assert str(tmp_path) not in body["message"] and str(stacks_dir) not in body["message"]
    assert snapshot(stacks_dir) == {}
    await expect(await client.get(f"/api/v1/stacks/{name}"), 404, "STACK_NOT_FOUND")
    await create(client, name, NEEDS_IMG, env="IMG=nekzus-test:busybox\n")
    before = snapshot(stacks_dir)
    for body in ({"compose": BAD}, {"compose": BAD, "env": None}, {"compose": NEEDS_IMG, "env": None}):
        resp = await client.put(f"/api/v1/stacks/{name}", json=body)
        await expect(resp, 400, "INVALID_COMPOSE")
    assert snapshot(stacks_dir) == before  # byte for byte, not even rewritten


async def test_put_keeps_removes_or_replaces_the_env(client: TestClient[Any, Any], stacks_dir: Path) -> None:
    name = project_name(PREFIX)
    env_file = stacks_dir / name / ENV_FILE
    await create(client, name, NEEDS_IMG, env="IMG=nekzus-test:busybox\n")
    changed = compose_file({"web": service(image="${IMG:?IMG must be set}"), "db": service()})
    # Omitted: kept, and compose checks the new file with it.
    resp = await client.put(f"/api/v1/stacks/{name}", json={"compose": changed})
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert [s["name"] for s in body["services"]] == ["web", "db"]
    assert env_file.read_text() == "IMG=nekzus-test:busybox\n"
    assert (stacks_dir / name / COMPOSE_FILE).read_text() == changed
    resp = await client.put(f"/api/v1/stacks/{name}", json={"compose": changed, "env": "IMG=other\n"})
    assert resp.status == 200, await resp.text()
    assert env_file.read_text() == "IMG=other\n"
    resp = await client.put(f"/api/v1/stacks/{name}", json={"compose": compose_file(), "env": None})
    assert resp.status == 200, await resp.text()
    assert not env_file.exists()
    files = await (await client.get(f"/api/v1/stacks/{name}/compose")).json()
    assert files == {"name": name, "compose": compose_file(), "env": None, "envHidden": False}


BAD_NAMES = ["../x", "..", "A", "a/b", "-a", "_a", "a.b", "a" * 64, "", " a", 1, None, True, ["a"], {"a": 1}]


@pytest.mark.parametrize("name", BAD_NAMES)
async def test_a_bad_name_is_refused(client: TestClient[Any, Any], stacks_dir: Path, name: Any) -> None:
    resp = await client.post("/api/v1/stacks", json={"name": name, "compose": compose_file()})
    await expect(resp, 400, "INVALID_STACK_NAME")
    assert snapshot(stacks_dir) == {}


async def test_bad_names_in_the_path_and_bad_bodies_are_refused(
    client: TestClient[Any, Any], stacks_dir: Path
) -> None:
    for path in ("A", "-a", "a" * 64, "a.b"):
        for method, suffix in (("GET", ""), ("PUT", ""), ("GET", "/compose")):
            resp = await client.request(method, f"/api/v1/stacks/{path}{suffix}", json={"compose": "x"})
            await expect(resp, 400, "INVALID_STACK_NAME")
    for path in ("..%2Fx", "%2E%2E", "%2E%2E%2F%2E%2E%2Fetc"):
        resp = await client.get(f"/api/v1/stacks/{path}")
        assert resp.status in (400, 404), await resp.text()
    name = project_name(PREFIX)
    big = "é" * (MAX_FILE // 2 + 1)  # fewer characters than the limit, more bytes
    for body, field in (
        ({"name": name}, "compose"),
        ({"name": name, "compose": None}, "compose"),
        ({"name": name, "compose": 5}, "compose"),
        ({"name": name, "compose": float("nan")}, "compose"),
        ({"name": name, "compose": ["services: {}"]}, "compose"),
        ({"name": name, "compose": ""}, "compose"),
        ({"name": name, "compose": " \n"}, "compose"),
        ({"name": name, "compose": big}, "compose"),
        ({"name": name, "compose": "services: {}\n\ud800"}, "compose"),
        ({"name": name, "compose": compose_file(), "env": 1e309}, "env"),
        ({"name": name, "compose": compose_file(), "env": {"A": "1"}}, "env"),
        ({"name": name, "compose": compose_file(), "env": big}, "env"),
    ):
        resp = await client.post("/api/v1/stacks", json=body)
        assert (await expect(resp, 400, "VALIDATION_ERROR"))["field"] == field, body
    for raw in (
        b"[]",
        b'"x"',
        b"",
        b"{",
        b'{"name": "%s", "compose": "x", "extra": 1}' % name.encode(),
        b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1),
        b'{"name": "%s", "compose": %s}' % (name.encode(), b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1)),
    ):
        await expect(await client.post("/api/v1/stacks", data=raw, headers=JSON), 400, "INVALID_REQUEST")
    huge = b'{"name": "%s", "compose": "' % name.encode() + b"a" * (2 << 20) + b'"}'
    await expect(await client.post("/api/v1/stacks", data=huge, headers=JSON), 413, "PAYLOAD_TOO_LARGE")
    assert snapshot(stacks_dir) == {}


async def test_an_edit_while_the_stack_is_busy_is_refused(
    client: TestClient[Any, Any], stacks_dir: Path
) -> None:
    name = project_name(PREFIX)
    await create(client, name)
    stacks = client.app[STACKS]
    before = snapshot(stacks_dir)
    stacks.claim(name, "deploy")
    try:
        resp = await client.put(f"/api/v1/stacks/{name}", json={"compose": compose_file({"web": service()})})
        assert (await expect(resp, 409, "STACK_BUSY"))["busy"] == "deploy"
        resp = await client.post("/api/v1/stacks", json={"name": name, "compose": compose_file()})
        await expect(resp, 409, "STACK_BUSY")
        assert (await rows(client, f"name={name}"))[0]["busy"] == "deploy"
        assert (await (await client.get(f"/api/v1/stacks/{name}")).json())["busy"] == "deploy"
    finally:
        stacks.release(name)
    assert snapshot(stacks_dir) == before
    # Two creates of one name at once: one writes, the other is refused.
    other = project_name(PREFIX)
    answers = await asyncio.gather(
        *(client.post("/api/v1/stacks", json={"name": other, "compose": compose_file()}) for _ in range(2))
    )
    assert sorted(r.status for r in answers) == [201, 409]


async def test_a_file_nested_deeper_than_python_reads_is_listed(client: TestClient[Any, Any]) -> None:
    name = project_name(PREFIX)
    deep = compose_file() + "x-deep: " + "[" * 1500 + "]" * 1500 + "\n"
    body = await create(client, name, deep)
    # Compose accepts it; the gateway cannot name its services, and says so rather than fail.
    assert body["status"] == "unknown" and body["services"] == []
    assert (await rows(client, f"name={name}"))[0]["status"] == "unknown"


async def test_the_env_is_shown_only_to_who_may_write_stacks(
    gateway: ClientFactory, docker_host: str, stacks_dir: Path
) -> None:
    remote = await gateway(security_config(docker_host, stacks={"dir": str(stacks_dir)}))
    writer = bearer(token(scopes=["read:stacks", "write:stacks"]))
    reader = bearer(token(scopes=["read:stacks"]))
    with_env, without = project_name(PREFIX), project_name(PREFIX)
    for name, extra in ((with_env, {"env": "TOKEN=s3cret\n"}), (without, {})):
        body = {"name": name, "compose": compose_file(), **extra}
        resp = await remote.post("/api/v1/stacks", json=body, headers=writer)
        assert resp.status == 201, await resp.text()
    read = await (await remote.get(f"/api/v1/stacks/{with_env}/compose", headers=reader)).json()
    assert read["env"] is None and read["envHidden"] is True and read["compose"] == compose_file()
    assert "s3cret" not in str(read)
    read = await (await remote.get(f"/api/v1/stacks/{with_env}/compose", headers=writer)).json()
    assert read["env"] == "TOKEN=s3cret\n" and read["envHidden"] is False
    read = await (await remote.get(f"/api/v1/stacks/{without}/compose", headers=reader)).json()
    assert read["env"] is None and read["envHidden"] is False
    for method, path, body in (
        ("POST", "/api/v1/stacks", {"name": project_name(PREFIX), "compose": compose_file()}),
        ("PUT", f"/api/v1/stacks/{with_env}", {"compose": compose_file()}),
    ):
        found = await expect(await remote.request(method, path, json=body, headers=reader), 403, "FORBIDDEN")
        assert "write:stacks" in found["message"]
    containers_only = bearer(token(scopes=["read:containers", "write:containers"]))
    for path in ("/api/v1/stacks", f"/api/v1/stacks/{with_env}", f"/api/v1/stacks/{with_env}/compose"):
        found = await expect(await remote.get(path, headers=containers_only), 403, "FORBIDDEN")
        assert "read:stacks" in found["message"]
        await expect(await remote.get(path), 401, "UNAUTHORIZED")
    assert sorted(os.listdir(stacks_dir)) == sorted([with_env, without])


@pytest.mark.parametrize("broken", [False, True])
async def test_without_compose_writes_are_refused_and_the_list_still_answers(
    gateway: ClientFactory, docker_host: str, stacks_dir: Path, tmp_path: Path, broken: bool
) -> None:
    # Stacks turned off, or a configured binary the system cannot run (no format it knows).
    settings: dict[str, Any] = {"enabled": False}
    if broken:
        binary = tmp_path / "docker-compose"
        binary.write_bytes(b"\x00\x01not a program")
        binary.chmod(0o755)
        settings = {"compose_binary": str(binary)}
    client = await gateway(make_config(docker_host, stacks={"dir": str(stacks_dir), **settings}))
    name = project_name(PREFIX)
    for _ in range(2):  # the first refusal leaves the name free: no STACK_BUSY
        resp = await client.post("/api/v1/stacks", json={"name": name, "compose": compose_file()})
        await expect(resp, 503, "COMPOSE_UNAVAILABLE")
    assert snapshot(stacks_dir) == {}
    assert await rows(client, f"name={name}") == []
