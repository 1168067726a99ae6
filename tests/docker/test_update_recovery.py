"""An update cut short by the gateway dying: the next gateway finishes or undoes it at start, from
the Engine's state, for the operations whose gateway is gone (never another replica's)."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import aiodocker
import pytest

from nekzus.operations.store import OperationStore, StoredOperation
from nekzus.operations.tracker import INTERRUPTED_MESSAGE
from runtimes.docker.update import aside_name
from tests.support.docker_engine import Containers
from tests.support.gateway import LINKED, ClientFactory, make_config

pytestmark = pytest.mark.timeout(120)


async def crashed_during_update(data_dir: Path, container_id: str) -> str:
    """A gateway's store with a pending update of ``container_id`` whose gateway is gone."""
    store = await OperationStore.open(data_dir)
    op_id = uuid.uuid4().hex
    now = int(time.time())
    await store.save_now(
        [StoredOperation(op_id, container_id[:12], "docker", "", "update", "pending", None, "", now, None)]
    )
    await store.close()  # the process is gone: its lock goes with it, its record stays pending
    return op_id


async def state_of(docker: aiodocker.Docker, ref: str) -> tuple[str, str, bool]:
    doc = await docker.containers.container(ref).show()
    return doc["Id"], doc["Name"].lstrip("/"), bool(doc["State"]["Running"])


async def half_done(
    docker: aiodocker.Docker, containers: Containers, *, new_runs: bool
) -> tuple[str, str, str]:
    """What a recreate leaves when its gateway dies after creating the new container: the old one
    stopped and renamed aside, a new one under its name (started or not). Answers (name, old, new)."""
    old = await containers.create(labels=LINKED)
    name = str(old["Name"]).lstrip("/")
    await docker.containers.container(old["Id"]).stop(t=1)
    await docker.containers.container(old["Id"]).rename(aside_name(name, old["Id"], running=True))
    new = await containers.create(labels=LINKED, name=name, start=new_runs)
    return name, old["Id"], new["Id"]


async def restarted(gateway: ClientFactory, docker_host: str, data_dir: Path, op_id: str) -> dict[str, Any]:
    """A gateway started on ``data_dir`` (its start does the recovery); the operation's record."""
    client = await gateway(
        make_config(docker_host, server={"data_dir": str(data_dir), "tls": {"mode": "off"}})
    )
    body: dict[str, Any] = await (await client.get(f"/api/v1/operations/{op_id}")).json()
    assert body["state"] == "failed" and body["error"] == "OPERATION_INTERRUPTED"
    return body


@pytest.mark.parametrize("new_runs", [False, True], ids=["undone before the new one ran", "finished"])
async def test_an_update_cut_short_is_undone_or_finished(
    gateway: ClientFactory,
    docker_host: str,
    docker: aiodocker.Docker,
    containers: Containers,
    tmp_path: Path,
    new_runs: bool,
) -> None:
    """Before the new container ran, the old one gets its name back and runs as it did; once the
    new one runs, only the old one's removal was left."""
    name, old, new = await half_done(docker, containers, new_runs=new_runs)
    body = await restarted(gateway, docker_host, tmp_path, await crashed_during_update(tmp_path, old))
    kept, gone = (new, old) if new_runs else (old, new)
    assert await state_of(docker, kept) == (kept, name, True)
    with pytest.raises(aiodocker.DockerError):
        await docker.containers.container(gone).show()
    assert f"the update of {name!r} was {'finished' if new_runs else 'undone'}" in body["message"]


async def test_a_container_that_shows_no_half_done_update_is_left_alone(
    gateway: ClientFactory, docker_host: str, docker: aiodocker.Docker, containers: Containers, tmp_path: Path
) -> None:
    made = await containers.create(labels=LINKED)
    before = await state_of(docker, made["Id"])
    body = await restarted(gateway, docker_host, tmp_path, await crashed_during_update(tmp_path, made["Id"]))
    assert await state_of(docker, made["Id"]) == before
    assert body["message"] == INTERRUPTED_MESSAGE
