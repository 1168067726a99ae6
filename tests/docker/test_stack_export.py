"""A batch export saved straight into a managed stack (``save_as``) on the real Docker Engine:
checked by the real compose and written as POST /stacks writes, with the scope it needs, and
refused, with nothing written, when the name is bad or taken or the answer could not carry it."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestClient

from nekzus.config import Config
from nekzus.stacks.files import COMPOSE_FILE, ENV_FILE
from nekzus.stacks.model import COMPOSE_ACTIONS
from tests.support.docker_engine import Containers
from tests.support.gateway import ClientFactory, make_config
from tests.support.stacks import project_name
from tests.unit.test_errors import expect
from tests.unit.test_security import bearer, security_config, token

PREFIX = "nkzf"
EXPORT = "/api/v1/containers/batch/export"


def written(folder: Path) -> list[str]:
    """What the stacks directory holds (nothing when it was never made)."""
    return sorted(os.listdir(folder)) if folder.exists() else []


@pytest.fixture
def stacks_dir(tmp_path: Path) -> Path:
    return tmp_path / "stacks"


@pytest.fixture
def config(docker_host: str, stacks_dir: Path) -> Config:
    return make_config(docker_host, stacks={"dir": str(stacks_dir)})


async def test_an_export_is_saved_as_a_stack(
    client: TestClient[Any, Any], containers: Containers, stacks_dir: Path
) -> None:
    first = await containers.create(env=["DB_PASSWORD=one"])
    second = await containers.create()
    names = [c["Name"].lstrip("/") for c in (first, second)]
    name = project_name(PREFIX)
    resp = await client.post(EXPORT, json={"container_ids": names, "save_as": name})
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert list(yaml.safe_load(body["content"])["services"]) == names
    assert body["env_content"] == "DB_PASSWORD=your_db_password_here\n"
    assert body["filename"] == f"{name}-compose.yaml"  # stack_name defaults to the stack's name
    stack = body["stack"]
    assert stack["name"] == name and stack["managed"] and stack["status"] == "stopped"
    assert [s["name"] for s in stack["services"]] == names
    assert stack["actions"] == list(COMPOSE_ACTIONS) and stack["busy"] is None
    assert await (await client.get(f"/api/v1/stacks/{name}")).json() == stack
    folder = stacks_dir / name
    assert (folder / COMPOSE_FILE).read_text() == body["content"]
    assert (folder / ENV_FILE).read_text() == body["env_content"]
    assert stat.S_IMODE((folder / ENV_FILE).stat().st_mode) == 0o600

    # Taken, by the stack just saved: nothing changes.
    resp = await client.post(EXPORT, json={"container_ids": names, "save_as": name, "stack_name": "other"})
    await expect(resp, 409, "STACK_ALREADY_EXISTS")
    assert written(stacks_dir) == [name]


async def test_an_export_without_secrets_and_a_partial_one_are_saved(
    client: TestClient[Any, Any], containers: Containers, stacks_dir: Path
) -> None:
    made = await containers.create()
    cid = made["Id"][:12]
    name = project_name(PREFIX)
    resp = await client.post(
        EXPORT, json={"container_ids": [cid, "no-such-container"], "save_as": name, "stack_name": "snap"}
    )
    assert resp.status == 206, await resp.text()
    body = await resp.json()
    assert "Container 'no-such-container' was not found and was left out" in body["warnings"]
    assert body["filename"] == "snap-compose.yaml" and body["env_content"] == ""
    assert body["stack"]["name"] == name
    assert sorted(os.listdir(stacks_dir / name)) == [COMPOSE_FILE]  # no secrets, no .env


async def test_a_bad_save_is_refused_and_nothing_is_written(
    client: TestClient[Any, Any], containers: Containers, stacks_dir: Path
) -> None:
    cid = (await containers.create())["Id"][:12]
    for bad in ("../x", "A", "a/b", "-a", "a" * 64, "", 5, None, ["a"]):
        resp = await client.post(EXPORT, json={"container_ids": [cid], "save_as": bad})
        await expect(resp, 400, "INVALID_STACK_NAME")
    name = project_name(PREFIX)
    resp = await client.post(f"{EXPORT}?format=zip", json={"container_ids": [cid], "save_as": name})
    await expect(resp, 400, "INVALID_REQUEST")
    resp = await client.post(f"{EXPORT}/preview", json={"container_ids": [cid], "save_as": name})
    assert "save_as" in (await expect(resp, 400, "INVALID_REQUEST"))["message"]
    resp = await client.post(EXPORT, json={"container_ids": [cid], "save_as": name, "stack_name": "Bad"})
    await expect(resp, 400, "INVALID_REQUEST")
    assert written(stacks_dir) == []


async def test_saving_an_export_needs_write_stacks(
    gateway: ClientFactory, docker_host: str, containers: Containers, stacks_dir: Path
) -> None:
    remote = await gateway(security_config(docker_host, stacks={"dir": str(stacks_dir)}))
    cid = (await containers.create())["Id"][:12]
    name = project_name(PREFIX)
    body = {"container_ids": [cid], "save_as": name}
    reader = bearer(token(scopes=["read:containers", "read:stacks"]))
    found = await expect(await remote.post(EXPORT, json=body, headers=reader), 403, "FORBIDDEN")
    assert "write:stacks" in found["message"]
    # The export alone still needs only read access.
    resp = await remote.post(EXPORT, json={"container_ids": [cid]}, headers=reader)
    assert resp.status == 200, await resp.text()
    assert written(stacks_dir) == []
    writer = bearer(token(scopes=["read:containers", "write:stacks"]))
    resp = await remote.post(EXPORT, json=body, headers=writer)
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["stack"]["name"] == name
    assert written(stacks_dir) == [name]
