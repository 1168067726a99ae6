"""Export to docker-compose on a real Docker Engine: the files are checked by the real Docker
Compose (`docker compose config`), deployed with `docker compose up`, and the container compose
makes is compared with the original on every exported field."""

from __future__ import annotations

import asyncio
import io
import os
import uuid
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiodocker
import compose  # type: ignore[import-untyped]  # ships the docker-compose binary, no type hints
import pytest
import yaml
from aiohttp.test_utils import TestClient

from tests.support.docker_engine import QUICK_STOP, RUN_LABEL, TEST_IMAGE, Containers
from tests.support.gateway import JSON, ClientFactory
from tests.unit.test_errors import expect
from tests.unit.test_security import bearer, security_config, token

COMPOSE = Path(compose.__file__).parent / "docker-compose"


async def run_compose(docker_host: str, project: Path, name: str, *args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        str(COMPOSE), "-f", str(project / "compose.yaml"), "--env-file", str(project / "test.env"),
        "-p", name, *args,
        env={**os.environ, "DOCKER_HOST": docker_host},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, out.decode()
    return out.decode()


@pytest.fixture
async def volume(docker: aiodocker.Docker) -> AsyncIterator[str]:
    name = f"nekzus-test-{uuid.uuid4().hex[:10]}"
    await docker.volumes.create({"Name": name})  # type: ignore[no-untyped-call]  # aiodocker: unannotated
    try:
        yield name
    finally:
        await (await docker.volumes.get(name)).delete()  # type: ignore[no-untyped-call]  # aiodocker: unannotated


async def preview(client: TestClient[Any, Any], cid: str, **body: Any) -> dict[str, Any]:
    resp = await client.post(f"/api/v1/containers/{cid}/export/preview", json=body)
    assert resp.status == 200, await resp.text()
    result: dict[str, Any] = await resp.json()
    return result


async def test_minimal_container_has_no_noise(client: TestClient[Any, Any], containers: Containers) -> None:
    made = await containers.create()
    name = made["Name"].lstrip("/")
    result = await preview(client, made["Id"][:12])
    assert result["content"] == (
        "services:\n"
        f"  {name}:\n"
        f"    image: {TEST_IMAGE}\n"
        f"    container_name: {name}\n"
        "    command:\n"
        "    - sh\n"
        "    - -c\n"
        "    - trap 'exit 0' TERM; while :; do sleep 0.1; done\n"
        "    network_mode: none\n"
        "    labels:\n"
        f"      {RUN_LABEL}: {containers.run_id}\n"
        "    stop_grace_period: 1s\n"
    )
    assert result["filename"] == f"{name}-compose.yaml" and result["env_filename"] == f"{name}.env"
    assert result["format"] == "docker-compose"
    assert result["warnings"] == [] and result["env_content"] == ""


async def test_round_trip_through_docker_compose(
    client: TestClient[Any, Any],
    volume: str,  # before ``containers``: removed after the containers that use it
    containers: Containers,
    docker: aiodocker.Docker,
    docker_host: str,
    tmp_path: Path,
) -> None:
    bind_source = tmp_path / "config"
    bind_source.mkdir()
    name = f"nekzus-test-{uuid.uuid4().hex[:10]}"
    config: dict[str, Any] = {
        "Image": TEST_IMAGE,
        "Cmd": QUICK_STOP,
        "Env": [
            "DB_PASSWORD=p$ss w0rd",
            "MODE=prod",
            "GREETING=cost: $5",
            "DATABASE_URL=postgres://app:s3cr%40t@db:5432/shop?sslmode=require&sslpassword=k$y",
        ],
        "Labels": {RUN_LABEL: containers.run_id, "app": "shop", "tier": "web"},
        "User": "1000:1000",
        "WorkingDir": "/tmp",
        "Healthcheck": {"Test": ["CMD-SHELL", "true"], "Interval": 5_000_000_000, "Retries": 2},
        "ExposedPorts": {"80/tcp": {}, "53/udp": {}},
        "HostConfig": {
            "NetworkMode": "none",
            "Binds": [f"{volume}:/data", f"{bind_source}:/etc/app:ro"],
            "RestartPolicy": {"Name": "unless-stopped"},
            "CapAdd": ["NET_ADMIN"],
            "CapDrop": ["MKNOD"],
            "PortBindings": {
                "80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "18080"}],
                "53/udp": [{"HostPort": "15353"}],
            },
        },
    }
    original = await docker.containers.create(config, name=name)
    containers.created.append(original.id)
    await original.start()
    before = await original.show()

    result = await preview(client, original.id[:12])
    assert result["warnings"] == [
        "Secret 'DB_PASSWORD' was sanitized",
        "Secret 'DATABASE_URL_PASSWORD' was sanitized",
        "Secret 'DATABASE_URL_SSLPASSWORD' was sanitized",
    ]
    assert result["env_content"] == (
        "DB_PASSWORD=your_db_password_here\n"
        "DATABASE_URL_PASSWORD=your_database_url_password_here\n"
        "DATABASE_URL_SSLPASSWORD=your_database_url_sslpassword_here\n"
    )
    assert "s3cr" not in result["content"] and "k$y" not in result["content"]
    service = yaml.safe_load(result["content"])["services"][name]
    assert "DB_PASSWORD=${DB_PASSWORD}" in service["environment"]
    assert "GREETING=cost: $$5" in service["environment"]
    # The URL keeps its shape; only its secrets are variables.
    assert (
        "DATABASE_URL=postgres://app:${DATABASE_URL_PASSWORD}@db:5432/shop"
        "?sslmode=require&sslpassword=${DATABASE_URL_SSLPASSWORD}"
    ) in service["environment"]

    project = tmp_path / "project"
    project.mkdir()
    (project / "compose.yaml").write_text(result["content"])
    # The user fills in the secrets (those of a URL as the URL had them, percent-encoded).
    (project / "test.env").write_text(
        "DB_PASSWORD='p$ss w0rd'\nDATABASE_URL_PASSWORD=s3cr%40t\nDATABASE_URL_SSLPASSWORD='k$y'\n"
    )
    compose_name = f"nekzus-rt-{uuid.uuid4().hex[:8]}"
    await run_compose(docker_host, project, compose_name, "config", "--quiet")

    # The export recreates the container under its own name: the original steps aside.
    await original.rename(f"{name}-original")
    try:
        await run_compose(
            docker_host, project, compose_name, "up", "--detach", "--no-build", "--pull", "never"
        )
        made = await docker.containers.container(name).show()
        assert made["Id"] != before["Id"]
        _assert_same(before, made)
    finally:
        await run_compose(docker_host, project, compose_name, "down", "--timeout", "1")


def _assert_same(before: dict[str, Any], after: dict[str, Any]) -> None:
    """Every field the export writes is the same on the recreated container."""
    for key in ("Image", "Cmd", "Entrypoint", "User", "WorkingDir", "Healthcheck", "StopTimeout"):
        assert after["Config"].get(key) == before["Config"].get(key), key
    assert sorted(after["Config"]["Env"]) == sorted(before["Config"]["Env"])
    labels = {k: v for k, v in after["Config"]["Labels"].items() if not k.startswith("com.docker.compose.")}
    assert labels == before["Config"]["Labels"]
    host_after, host_before = after["HostConfig"], before["HostConfig"]
    for key in ("NetworkMode", "PortBindings", "RestartPolicy", "Privileged"):
        assert host_after[key] == host_before[key], key
    assert sorted(c.removeprefix("CAP_") for c in host_after["CapAdd"]) == sorted(
        c.removeprefix("CAP_") for c in host_before["CapAdd"]
    )
    assert sorted(c.removeprefix("CAP_") for c in host_after["CapDrop"]) == sorted(
        c.removeprefix("CAP_") for c in host_before["CapDrop"]
    )

    def mounts(doc: dict[str, Any]) -> set[tuple[Any, ...]]:
        return {(m["Type"], m.get("Name") or m["Source"], m["Destination"], m["RW"]) for m in doc["Mounts"]}

    assert mounts(after) == mounts(before)
    assert after["State"]["Running"] and after["Config"]["Hostname"] == after["Id"][:12]


async def test_secrets_inline_need_the_write_scope(
    gateway: ClientFactory, docker_host: str, containers: Containers
) -> None:
    client = await gateway(security_config(docker_host))
    made = await containers.create(env=["API_TOKEN=t$ken", "MODE=prod"])
    cid = made["Id"][:12]
    reader = bearer(token(scopes=["read:containers"]))
    resp = await client.post(
        f"/api/v1/containers/{cid}/export", json={"sanitize_secrets": False}, headers=reader
    )
    body = await expect(resp, 403, "FORBIDDEN")
    assert "write:containers" in body["message"]
    resp = await client.post(f"/api/v1/containers/{cid}/export", headers=reader)
    assert resp.status == 200
    assert "API_TOKEN=${API_TOKEN}" in (await resp.json())["content"]

    writer = bearer(token(scopes=["read:containers", "write:containers"]))
    resp = await client.post(
        f"/api/v1/containers/{cid}/export", json={"sanitize_secrets": False}, headers=writer
    )
    result = await resp.json()
    assert "API_TOKEN=t$$ken" in result["content"]
    assert result["env_content"] == "" and result["warnings"] == []


async def test_batch_export_json_zip_and_partial(
    client: TestClient[Any, Any], containers: Containers
) -> None:
    first = await containers.create(env=["DB_PASSWORD=one"])
    second = await containers.create(env=["DB_PASSWORD=two"])
    names = [c["Name"].lstrip("/") for c in (first, second)]
    ids = [first["Id"][:12], names[0], second["Id"][:12]]  # the first one twice, by id and name
    resp = await client.post(
        "/api/v1/containers/batch/export", json={"container_ids": ids, "stack_name": "my-stack"}
    )
    assert resp.status == 200, await resp.text()
    result = await resp.json()
    services = yaml.safe_load(result["content"])["services"]
    assert list(services) == names
    # Different values of one secret name get a variable each.
    second_var = f"{names[1].upper().replace('-', '_')}_DB_PASSWORD"
    assert services[names[0]]["environment"] == ["DB_PASSWORD=${DB_PASSWORD}"]
    assert services[names[1]]["environment"] == [f"DB_PASSWORD=${{{second_var}}}"]
    assert (
        result["env_content"]
        == f"DB_PASSWORD=your_db_password_here\n{second_var}=your_{second_var.lower()}_here\n"
    )
    assert (result["filename"], result["env_filename"]) == ("my-stack-compose.yaml", "my-stack.env")

    resp = await client.post(
        "/api/v1/containers/batch/export?format=zip", json={"container_ids": ids, "stack_name": "my-stack"}
    )
    assert resp.status == 200 and resp.content_type == "application/zip"
    assert resp.headers["Content-Disposition"] == 'attachment; filename="my-stack.zip"'
    with zipfile.ZipFile(io.BytesIO(await resp.read())) as archive:
        assert sorted(archive.namelist()) == ["my-stack-compose.yaml", "my-stack.env"]
        assert archive.read("my-stack-compose.yaml").decode() == result["content"]
        assert archive.read("my-stack.env").decode() == result["env_content"]

    resp = await client.post(
        "/api/v1/containers/batch/export/preview", json={"container_ids": [*ids, "no-such-container"]}
    )
    assert resp.status == 206
    partial = await resp.json()
    assert "Container 'no-such-container' was not found and was left out" in partial["warnings"]
    assert partial["filename"] == "exported-stack-compose.yaml"
    assert list(yaml.safe_load(partial["content"])["services"]) == names


async def test_a_container_without_any_network(
    client: TestClient[Any, Any], containers: Containers, docker: aiodocker.Docker
) -> None:
    made = await containers.create(start=False)
    await docker._query_json("networks/none/disconnect", "POST", data={"Container": made["Id"]})
    shown = await docker.containers.container(made["Id"]).show()
    assert not shown["NetworkSettings"]["Networks"]
    service = yaml.safe_load((await preview(client, made["Id"][:12]))["content"])["services"][
        made["Name"].lstrip("/")
    ]
    assert service["network_mode"] == "none" and "networks" not in service


async def test_export_errors(client: TestClient[Any, Any], containers: Containers) -> None:
    made = await containers.create()
    cid = made["Id"][:12]
    await expect(await client.post("/api/v1/containers/nope/export"), 404, "CONTAINER_NOT_FOUND")
    await expect(
        await client.post("/api/v1/containers/batch/export", json={"container_ids": ["nope", "nada"]}),
        404,
        "ALL_CONTAINERS_FAILED",
    )
    await expect(
        await client.post("/api/v1/containers/batch/export", json={"container_ids": []}),
        400,
        "EMPTY_CONTAINER_LIST",
    )
    await expect(
        await client.post("/api/v1/containers/batch/export", json={"stack_name": "x"}),
        400,
        "EMPTY_CONTAINER_LIST",
    )
    for bad in (
        {"container_ids": [cid], "stack_name": "Bad Name"},
        {"container_ids": [cid], "stack_name": "stack\n"},
        {"container_ids": [cid], "sanitize_secrets": "yes"},
        {"container_ids": "abc"},
        {"container_ids": [cid], "surprise": True},
    ):
        await expect(await client.post("/api/v1/containers/batch/export", json=bad), 400, "INVALID_REQUEST")
    await expect(
        await client.post("/api/v1/containers/batch/export", data=b"{nope", headers=JSON),
        400,
        "INVALID_REQUEST",
    )
    await expect(await client.post("/api/v1/containers/batch/export"), 400, "INVALID_REQUEST")
    await expect(
        await client.post(f"/api/v1/containers/{cid}/export", json={"include_volumes": 1}),
        400,
        "INVALID_REQUEST",
    )
    await expect(await client.post(f"/api/v1/containers/{cid}/export?format=xml"), 400, "INVALID_REQUEST")
    await expect(
        await client.post(f"/api/v1/containers/{cid}/export/preview?format=zip"), 400, "INVALID_REQUEST"
    )
    resp = await client.post(f"/api/v1/containers/{cid}/export?format=zip")
    assert resp.status == 200 and resp.headers["Content-Disposition"].endswith(
        f'filename="{made["Name"].lstrip("/")}.zip"'
    )
