"""The private Docker Engine of the docker tier: starting and stopping one with
scripts/docker-sandbox.sh, and labelled test containers that are all removed afterwards."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import aiodocker

from tests.support import ROOT

SANDBOX = ROOT / "scripts" / "docker-sandbox.sh"
TEST_IMAGE = os.environ.get("NEKZUS_TEST_IMAGE", "nekzus-test:busybox")
RUN_LABEL = "nekzus.test.run"
# Ends at once on SIGTERM (a bare `sleep` as PID 1 ignores it and waits for the kill).
QUICK_STOP = ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 0.1; done"]


def start_sandbox(directory: Path, *daemon_args: str) -> str:
    env = {**os.environ, "NEKZUS_DOCKERD_ARGS": " ".join(daemon_args)}
    out = subprocess.run(
        ["bash", str(SANDBOX), "start", str(directory)], check=True, capture_output=True, text=True, env=env
    )
    return out.stdout.strip().splitlines()[-1]


def stop_sandbox(directory: Path) -> None:
    subprocess.run(["bash", str(SANDBOX), "stop", str(directory)], check=True, capture_output=True)


class Containers:
    """Creates labelled test containers (network none) and removes every one of them afterwards."""

    def __init__(self, docker: aiodocker.Docker) -> None:
        self.docker = docker
        self.run_id = uuid.uuid4().hex[:12]
        self.created: list[str] = []

    async def create(
        self,
        *,
        labels: dict[str, str] | None = None,
        cmd: list[str] | None = None,
        env: list[str] | None = None,
        start: bool = True,
        name: str | None = None,
        tty: bool = False,
    ) -> dict[str, Any]:
        config: dict[str, Any] = {
            "Image": TEST_IMAGE,
            "Cmd": cmd or QUICK_STOP,
            "Labels": {RUN_LABEL: self.run_id, **(labels or {})},
            "Env": env or [],
            "Tty": tty,
            "StopTimeout": 1,
            "HostConfig": {"NetworkMode": "none"},
        }
        container = await self.docker.containers.create(
            config, name=name or f"nekzus-test-{uuid.uuid4().hex[:10]}"
        )
        self.created.append(container.id)
        if start:
            await container.start()
        return dict(await container.show())

    async def state(self, container_id: str) -> str:
        info = await self.docker.containers.container(container_id).show()
        return str(info["State"]["Status"])

    async def cleanup(self) -> None:
        for container_id in self.created:
            try:
                await self.docker.containers.container(container_id).delete(force=True)
            except aiodocker.DockerError as exc:
                if exc.status != 404:
                    raise
