"""The parts of stack actions that need no Engine: compose's command line per action, compose's
progress objects (recorded from Docker Compose v2.40) as ``stack.progress`` events, the thinning
of pull byte progress, and how a job words its record and frees its stack."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from nekzus.operations.tracker import JobProgress, Operation
from nekzus.realtime.events import EventBus
from nekzus.stacks.actions import (
    ProgressEvents,
    StackAction,
    compose_failure,
    interrupted_reason,
    interrupted_state,
    job_text,
    service_of,
    stack_job,
    status_of,
)
from nekzus.stacks.driver import ComposeError, ComposeTimeout, ComposeUnavailable
from nekzus.stacks.files import StackFiles
from nekzus.stacks.model import PROJECT, SERVICE, Stack
from nekzus.stacks.service import Stacks
from runtimes import ContainerState, ContainerSummary

DEPLOY: list[dict[str, Any]] = [
    {"id": "Container p-worker-1", "status": "Creating"},
    {"id": "Container p-web-1", "status": "Created"},
    {"id": "Container p-web-1", "status": "Started"},
    {"id": "Container p-web-1", "status": "Waiting"},
    {"id": "Container p-web-1", "status": "Healthy"},
    {"level": "warning", "msg": "Warning: No resource found to remove", "time": "2026-12-03T19:12:32Z"},
    {"id": "Volume p_data", "status": "Created"},
]
PULL: list[dict[str, Any]] = [
    {"id": "db", "text": "Skipped - Image is already being pulled by web"},
    {"id": "web", "text": "Pulling"},
    {"id": "3f228395b4bc", "parent_id": "web", "text": "Pulling fs layer"},
    {
        "id": "3f228395b4bc",
        "parent_id": "web",
        "text": "Downloading",
        "status": "[=>          ]  36.45kB/1.069MB",
        "current": 36445,
        "total": 1068882,
        "percent": 3,
    },
    {"id": "3f228395b4bc", "parent_id": "web", "text": "Download complete", "percent": 100},
    {"id": "3f228395b4bc", "parent_id": "web", "text": "Pull complete", "percent": 100},
    {"id": "web", "text": "Pulled"},
    {"id": "worker", "text": "Error", "status": "Get https://registry.example/v2/: no such host"},
]


def summary(name: str, service: str) -> ContainerSummary:
    return ContainerSummary(
        id=name[:12],
        full_id=name,
        name=name,
        image="img",
        state=ContainerState.RUNNING,
        status="Up",
        created=0,
        ports=(),
        labels={PROJECT: "p", SERVICE: service},
        runtime="docker",
    )


STACK = Stack(
    name="p",
    containers=(summary("custom-name", "db"),),
    services=("web", "web-api", "worker", "db"),
    managed=None,
    config_files=(),
    working_dir="",
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def mapped(lines: list[dict[str, Any]], clock: Clock | None = None) -> list[Mapping[str, Any]]:
    published: list[Mapping[str, Any]] = []
    events = ProgressEvents(
        lambda kind, data: published.append({"type": kind, **data}),
        STACK,
        "deploy",
        clock=clock or Clock(),
    )
    for line in lines:
        events(line)
    assert all(e["type"] == "stack.progress" for e in published)
    return [{k: v for k, v in e.items() if k != "type"} for e in published]


@pytest.mark.parametrize(
    ("action", "args"),
    [
        (StackAction("deploy"), ["up", "--detach", "--wait"]),
        (
            StackAction("deploy", ("web",), remove_orphans=True),
            ["up", "--detach", "--wait", "--remove-orphans", "web"],
        ),
        (StackAction("start", ("web", "db")), ["start", "web", "db"]),
        (StackAction("stop"), ["stop"]),
        (StackAction("stop", ("web",), timeout=3), ["stop", "--timeout", "3", "web"]),
        (StackAction("restart", timeout=1), ["restart", "--timeout", "1"]),
        (StackAction("pause"), ["pause"]),
        (StackAction("unpause", ("db",)), ["unpause", "db"]),
        (StackAction("pull", ("web",)), ["pull", "web"]),
        (StackAction("down"), ["down"]),
        (StackAction("down", volumes=True, remove_orphans=True), ["down", "--volumes", "--remove-orphans"]),
        (StackAction("delete"), ["down", "--remove-orphans"]),
        (StackAction("delete", volumes=True), ["down", "--volumes", "--remove-orphans"]),
    ],
)
def test_compose_args(action: StackAction, args: list[str]) -> None:
    assert action.compose_args() == args


def test_a_deploy_maps_each_container_to_its_service() -> None:
    events = mapped(DEPLOY)
    assert [(e["service"], e["container"], e["status"], e["text"]) for e in events] == [
        ("worker", "p-worker-1", "creating", "Creating"),
        ("web", "p-web-1", "created", "Created"),
        ("web", "p-web-1", "started", "Started"),
        ("web", "p-web-1", "waiting", "Waiting"),
        ("web", "p-web-1", "healthy", "Healthy"),
        (None, None, "created", "Created"),
    ]
    assert events[0]["stack"] == "p" and events[0]["action"] == "deploy"
    assert (events[-1]["resource"], events[-1]["name"]) == ("volume", "p_data")


def test_a_pull_maps_services_layers_bytes_and_errors() -> None:
    events = mapped(PULL)
    assert [(e["service"], e["status"]) for e in events] == [
        ("db", "skipped"),
        ("web", "pulling"),
        ("web", "pulling"),
        ("web", "downloading"),
        ("web", "downloaded"),
        ("web", "pulled"),
        ("web", "pulled"),
        ("worker", "error"),
    ]
    layer = events[3]
    assert layer["layer"] == "3f228395b4bc" and layer["container"] is None
    assert (layer["current"], layer["total"]) == (36445, 1068882)
    assert layer["text"] == "Downloading [=>          ]  36.45kB/1.069MB"
    assert events[0]["text"] == "Skipped - Image is already being pulled by web"
    assert events[-1]["text"] == "Error Get https://registry.example/v2/: no such host"
    assert "current" not in events[4]


def test_byte_progress_is_thinned_per_layer_but_every_step_and_the_end_are_told() -> None:
    clock = Clock()

    def downloading(layer: str, current: int, text: str = "Downloading") -> dict[str, Any]:
        return {"id": layer, "parent_id": "web", "text": text, "current": current, "total": 100}

    published: list[Mapping[str, Any]] = []
    events = ProgressEvents(lambda _, data: published.append(data), STACK, "pull", clock=clock)
    events(downloading("a", 1))
    events(downloading("a", 2))  # too soon after the first
    events(downloading("b", 1))  # another layer has its own pace
    events(downloading("a", 3, "Extracting"))  # another step is told at once
    clock.now += 0.3
    events(downloading("a", 4))
    events(downloading("a", 5))
    events(downloading("a", 100))  # the end of a step is always told
    assert [(d["layer"], d["status"], d["current"]) for d in published] == [
        ("a", "downloading", 1),
        ("b", "downloading", 1),
        ("a", "extracting", 3),
        ("a", "downloading", 4),
        ("a", "downloading", 100),
    ]


def test_services_of_container_names() -> None:
    services = STACK.services
    assert service_of("p-web-1", "p", services) == "web"
    assert service_of("p-web-api-12", "p", services) == "web-api"
    assert service_of("p-web-x", "p", services) is None
    assert service_of("other-web-1", "p", services) is None
    assert mapped([{"id": "Container custom-name", "status": "Started"}])[0]["service"] == "db"
    assert mapped([{"id": "Container stranger", "status": "Started"}])[0]["service"] is None


@pytest.mark.parametrize(
    ("phrase", "status"),
    [
        ("Creating", "creating"),
        ("Recreated", "recreated"),
        ("Pull complete", "pulled"),
        ("Already exists", "exists"),
        ("Verifying Checksum", "verifying"),
        ("Skipped - Image is already being pulled by web", "skipped"),
        ("...", "unknown"),
    ],
)
def test_status_words(phrase: str, status: str) -> None:
    assert status_of(phrase) == status


def test_lines_that_tell_nothing_of_the_stack_are_dropped() -> None:
    assert (
        mapped([{"id": "", "status": "x"}, {"id": "Container p-web-1"}, {"status": "Creating"}, {"id": 3}])
        == []
    )


def test_job_wording() -> None:
    assert job_text("deploy").accepted == "Stack deploy initiated"
    assert (job_text("down").past, job_text("down").verb) == ("taken down", "take down")
    assert (job_text("delete").past, job_text("pull").verb) == ("deleted", "pull")
    assert interrupted_reason("deploy") == "The gateway restarted before the stack deploy finished"
    assert "GET /api/v1/stacks/p shows it" in interrupted_state("p")


def test_compose_failures_carry_composes_sentence() -> None:
    for exc, said in (
        (ComposeError("container p-web-1 is unhealthy"), "container p-web-1 is unhealthy"),
        (ComposeTimeout("Docker Compose did not finish within 5 seconds"), "did not finish within 5 seconds"),
        (ComposeUnavailable("Docker Compose cannot be run: No such file"), "cannot be run: No such file"),
    ):
        failure = compose_failure(exc, "p", "deploy")
        assert said in failure.detail and "compose deploy of stack p failed" in str(failure)


async def test_a_job_frees_its_stack_however_it_ends(tmp_path: Path) -> None:
    stacks = Stacks(StackFiles(tmp_path), None)
    progress = JobProgress(EventBus(), Operation("op", "p", "docker", "", "deploy", 0))

    async def fails(_: JobProgress) -> None:
        raise RuntimeError("boom")

    async def works(_: JobProgress) -> None:
        assert stacks.busy("p") == "deploy"

    stacks.claim("p", "deploy")
    assert await stack_job(stacks, "p", works, {"stack": "p"})(progress) == {"stack": "p"}
    assert stacks.busy("p") is None
    stacks.claim("p", "deploy")
    with pytest.raises(RuntimeError):
        await stack_job(stacks, "p", fails, {})(progress)
    assert stacks.busy("p") is None
