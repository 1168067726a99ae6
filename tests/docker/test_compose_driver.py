"""The compose driver with the real Docker Compose binary: what compose may see of the gateway's
environment, what a client may see of its messages, and that a run past its time or cancelled
leaves no process behind."""

from __future__ import annotations

import asyncio
from pathlib import Path

import psutil
import pytest

from nekzus.stacks.driver import ComposeDriver, ComposeError, ComposeTimeout, Project
from tests.support.stacks import COMPOSE, HandProjects, compose_file, project_name, service


def _driver(docker_host: str, *, timeout: float = 60, slots: int = 2) -> ComposeDriver:
    return ComposeDriver(COMPOSE, docker_host=docker_host, timeout=timeout, max_concurrent=slots)


def _project(directory: Path, compose: str) -> Project:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "compose.yaml").write_text(compose, encoding="utf-8")
    return Project(directory.name, (directory / "compose.yaml",), directory)


def _compose_processes(name: str) -> list[psutil.Process]:
    """The compose processes still working on project ``name``."""
    return [
        proc
        for proc in psutil.process_iter(["exe", "cmdline"])
        if proc.info["exe"] == str(COMPOSE) and name in (proc.info["cmdline"] or ())
    ]


async def test_compose_never_sees_the_gateways_environment(
    docker_host: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A compose file may interpolate any variable it is given: the gateway's own (secrets among
    # them) must be unset for it.
    monkeypatch.setenv("NEKZUS_AUTH__JWT_SECRET", "s3cret-value-of-the-gateway")
    compose = compose_file({"web": service(labels={"leak": "${NEKZUS_AUTH__JWT_SECRET:-unset}"})})
    project = _project(tmp_path / project_name("nkzd"), compose)
    out = await _driver(docker_host).run(project, ["config"])
    assert "leak: unset" in out
    assert "s3cret" not in out


async def test_a_refusal_carries_composes_message_without_server_paths(
    docker_host: str, tmp_path: Path
) -> None:
    project = _project(tmp_path / project_name("nkzd"), "services:\n  web:\n    imag: x\n")
    with pytest.raises(ComposeError) as caught:
        await _driver(docker_host).run(project, ["config", "--quiet"])
    assert "additional properties 'imag' not allowed" in caught.value.message
    assert str(tmp_path) not in caught.value.message


async def test_a_run_past_its_time_is_killed_with_its_process_group(
    docker_host: str, tmp_path: Path, hand_projects: HandProjects
) -> None:
    name = project_name("nkzd")
    hand_projects.track(name)
    project = _project(tmp_path / name, compose_file({"web": service()}))
    # `up` without --detach follows the logs and never ends by itself.
    with pytest.raises(ComposeTimeout, match="did not finish within 3 seconds"):
        await _driver(docker_host, timeout=3).run(project, ["up"])
    assert not _compose_processes(name)


async def test_a_cancelled_run_leaves_no_process(
    docker_host: str, tmp_path: Path, hand_projects: HandProjects
) -> None:
    name = project_name("nkzd")
    hand_projects.track(name)
    project = _project(tmp_path / name, compose_file({"web": service()}))
    started = asyncio.Event()
    driver = _driver(docker_host)
    run = asyncio.create_task(driver.run(project, ["up"], on_progress=lambda _: started.set()))
    async with asyncio.timeout(30):
        await started.wait()
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert not _compose_processes(name)


async def test_runs_beyond_the_cap_wait_their_turn(
    docker_host: str, tmp_path: Path, hand_projects: HandProjects
) -> None:
    names = [project_name("nkzd") for _ in range(2)]
    for name in names:
        hand_projects.track(name)
    projects = [_project(tmp_path / n, compose_file({"web": service()})) for n in names]
    driver = _driver(docker_host, slots=1)
    first_started = asyncio.Event()
    first = asyncio.create_task(driver.run(projects[0], ["up"], on_progress=lambda _: first_started.set()))
    async with asyncio.timeout(30):
        await first_started.wait()
    second = asyncio.create_task(driver.run(projects[1], ["config", "--quiet"]))
    done, _ = await asyncio.wait({second}, timeout=2)
    assert not done, "a second run started while the only slot was taken"
    await driver.close()
    with pytest.raises(ComposeError):
        await first
    async with asyncio.timeout(30):
        await second
