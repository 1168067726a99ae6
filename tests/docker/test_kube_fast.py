"""The tests of kube fast that need the private Docker Engine (docker tier); the story and the other
tests are in tests/kube_fake/test_kube_fast.py, tests/unit/test_kube_fast.py.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from nekzus.keys import EVENT_BUS
from tests.kube_fake.test_kube_fast import LINKED, NS, WEB
from tests.support.docker_engine import Containers
from tests.support.fake_kube import FakeKube
from tests.support.gateway import ClientFactory, Heard, make_config, next_event, watching
from tests.unit.test_errors import expect


async def test_both_runtimes_merge_and_runtime_selects_one(
    gateway: ClientFactory, kube: FakeKube, kubeconfig: Path, docker_host: str, containers: Containers
) -> None:
    config = make_config(
        docker_host,
        runtimes={
            "docker": {"host": docker_host, "self_id": "0" * 64},
            "kubernetes": {"enabled": True, "kubeconfig": str(kubeconfig)},
        },
    )
    client = await gateway(config)
    await watching(client)
    heard = Heard(client.app[EVENT_BUS])
    made = await containers.create(labels={"nekzus.enable": "true"})
    kube.add_pod(NS, "web", annotations=LINKED, containers=WEB)
    # The merged list is served from what each runtime's events told: wait until both were heard.
    running = {made["Id"][:12], "web"}
    async with asyncio.timeout(15):
        while running:
            event = await next_event(heard, "container.state")
            if event.data["state"] == "running":
                running.discard(event.data["containerId"])
    merged = {(c["runtime"], c["id"]) for c in await (await client.get("/api/v1/containers")).json()}
    assert {("docker", made["Id"][:12]), ("kubernetes", "web")} <= merged
    only_docker = await (await client.get("/api/v1/containers?runtime=docker")).json()
    assert {c["runtime"] for c in only_docker} == {"docker"}
    only_kube = await (await client.get("/api/v1/containers?runtime=kubernetes")).json()
    assert [(c["runtime"], c["id"]) for c in only_kube] == [("kubernetes", "web")]
    # Docker is the primary runtime; a namespace (or the path form) means Kubernetes.
    assert (await client.get(f"/api/v1/containers/{made['Id'][:12]}")).status == 200
    assert (await client.get(f"/api/v1/containers/web?namespace={NS}")).status == 200
    assert (await client.get(f"/api/v1/containers/{NS}/web")).status == 200
    # A namespace with the query form names pods: only Kubernetes has them.
    only_ns = await (await client.get(f"/api/v1/containers?namespace={NS}")).json()
    assert [(c["runtime"], c["id"]) for c in only_ns] == [("kubernetes", "web")]
    resp = await client.get(f"/api/v1/containers?runtime=docker&namespace={NS}")
    await expect(resp, 400, "INVALID_RUNTIME")
