"""A gateway killed (SIGKILL) in the middle of a stack deploy, as ``nekzus serve`` on the real
Engine: compose dies with it, and the next gateway on the same data directory reports the
operation failed with OPERATION_INTERRUPTED and a message that says where the stack's state shows,
and lists the stack's containers as they really are."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import psutil
import pytest

from nekzus.stacks.actions import interrupted_reason, interrupted_state
from nekzus.stacks.files import StackFiles
from tests.support import ROOT
from tests.support.kube_plane import wait_until
from tests.support.stacks import HandProjects, compose_file, project_name, service
from tests.unit.test_tls_cli import env_for, free_port

pytestmark = pytest.mark.timeout(180)
PROJECT = "com.docker.compose.project"
# Healthy only after a minute: compose's --wait is still waiting when the gateway is killed.
SLOW = service(
    command=["sh", "-c", "trap 'exit 0' TERM; sleep 60; touch /tmp/ok; while :; do sleep 1; done"],
    healthcheck={"test": ["CMD", "test", "-f", "/tmp/ok"], "interval": "1s", "retries": 120},
)


class Gateway:
    """``nekzus serve`` on ``data_dir`` and the private Engine, its log in a file (a pipe nobody
    reads would stall it)."""

    def __init__(self, data_dir: Path, docker_host: str) -> None:
        self.port = free_port()
        env = env_for(data_dir, self.port, NEKZUS_SERVER__TLS__MODE="off")
        env["NEKZUS_RUNTIMES__DOCKER__HOST"] = docker_host
        self.log = data_dir / f"gateway-{self.port}.log"
        with self.log.open("wb") as out:
            self.process = psutil.Popen(
                [sys.executable, "-m", "nekzus", "serve"], cwd=ROOT, env=env, stdout=out, stderr=out
            )
        marker = f"Running on http://127.0.0.1:{self.port}"
        wait_until(lambda: self.ready(marker), timeout=60, what="the gateway to listen")

    def ready(self, marker: str) -> bool:
        if self.process.poll() is not None:
            pytest.fail(f"the gateway exited: {self.log.read_text()[-2000:]}")
        return marker in self.log.read_text()

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}",
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read() or b"null")

    def compose(self) -> list[psutil.Process]:
        """The compose processes the gateway started, while it lives."""
        try:
            children = self.process.children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        return [c for c in children if c.name() == "docker-compose"]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=20)


def engine_states(docker_host: str, name: str) -> dict[str, str]:
    """Each container of project ``name``: its id's first 12 and its state, as the Engine says."""
    out = subprocess.run(
        ["docker", "-H", docker_host, "ps", "--all", "--no-trunc", "--filter", f"label={PROJECT}={name}",
         "--format", "{{.ID}} {{.State}}"],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout  # fmt: skip
    return {line.split()[0][:12]: line.split()[1] for line in out.splitlines()}


def test_a_deploy_cut_short_by_a_killed_gateway_fails_clearly(
    tmp_path: Path, docker_host: str, hand_projects: HandProjects
) -> None:
    name = project_name("nkza")
    StackFiles(tmp_path / "stacks").write(name, compose_file({"web": SLOW, "worker": SLOW}), None)
    hand_projects.track(name)
    first = Gateway(tmp_path, docker_host)
    second: Gateway | None = None
    orphans: list[psutil.Process] = []
    try:
        status, answer = first.call("POST", f"/api/v1/stacks/{name}/deploy", {})
        assert status == 202, answer
        op = answer["operationId"]
        orphans = wait_until(lambda: first.compose() or None, timeout=30, what="compose to run")
        running = {"running"}
        wait_until(lambda: set(engine_states(docker_host, name).values()) == running, timeout=60,
                   what="both containers to run")  # fmt: skip
        assert [p.is_running() for p in orphans] == [True]
        first.process.kill()
        first.process.wait(timeout=20)
        # The kernel ends compose with its parent (PR_SET_PDEATHSIG): nothing goes on acting.
        wait_until(lambda: not any(p.is_running() and p.status() != "zombie" for p in orphans),
                   timeout=20, what="compose to die with the gateway")  # fmt: skip

        second = Gateway(tmp_path, docker_host)
        status, record = second.call("GET", f"/api/v1/operations/{op}")
        assert status == 200
        assert (record["state"], record["error"]) == ("failed", "OPERATION_INTERRUPTED")
        assert (record["resource"], record["target"], record["action"]) == ("stack", name, "deploy")
        assert record["message"] == f"{interrupted_reason('deploy')}; {interrupted_state(name)}"
        truth = engine_states(docker_host, name)
        status, listed = second.call("GET", f"/api/v1/containers?all=true&label={PROJECT}={name}")
        assert {c["id"]: c["state"] for c in listed} == truth
        assert set(truth.values()) == {"running"}  # compose had started both before it died
        status, stack = second.call("GET", f"/api/v1/stacks/{name}")
        assert status == 200
        assert (stack["status"], stack["busy"]) == ("running", None)
        assert {c["id"]: c["state"] for s in stack["services"] for c in s["containers"]} == truth
        assert not second.compose()
        status, answer = second.call("POST", f"/api/v1/stacks/{name}/stop", {"timeout": 1})
        assert status == 202  # the dead gateway's claim on the stack died with it
    finally:
        for gateway in (first, second):
            if gateway is not None:
                gateway.stop()
        for process in orphans:
            if process.is_running():
                process.kill()
