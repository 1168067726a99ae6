"""The host routes without a daemon: which runtime answers, how failures are coded, and the
arithmetic of ``docker system df`` and the CPU meter (the story is in tests/docker/test_system_api.py)."""

from __future__ import annotations

import time
from typing import Any, NamedTuple

import psutil
import pytest

from runtimes import Forbidden, OperationFailed, RuntimeFailure
from runtimes.docker.system import CpuMeter, is_local, space_usage
from runtimes.engine.system import (
    ContainerCounts,
    CpuUsage,
    MemoryUsage,
    SpaceEntry,
    SystemInfo,
    SystemSource,
    SystemStats,
)
from tests.support.fakes import FakeRuntime, registry_of, summary
from tests.support.gateway import ClientFactory, make_config
from tests.unit.test_errors import expect


class HostRuntime(FakeRuntime):
    """A fake runtime that can describe its host, or fail to with ``failure``."""

    def __init__(self, name: str, failure: RuntimeFailure | None = None) -> None:
        super().__init__([summary(1)], name=name)
        self.failure = failure

    async def system_info(self) -> SystemInfo:
        if self.failure is not None:
            raise self.failure
        return SystemInfo(
            runtime=self.name,
            engine_version="1.0",
            cpus=2.0,
            memory_total=1,
            containers=ContainerCounts(1, 1, 0, 0),
        )

    async def system_stats(self) -> SystemStats:
        if self.failure is not None:
            raise self.failure
        return SystemStats(
            runtime=self.name,
            cpu=CpuUsage(None, 2.5),
            memory=MemoryUsage(None, 1, None),
            load=None,
            disk=None,
            space=None,
            timestamp=1,
        )


def test_a_fake_with_the_methods_is_a_system_source() -> None:
    assert isinstance(HostRuntime("docker"), SystemSource)
    assert not isinstance(FakeRuntime([]), SystemSource)


async def test_a_runtime_without_host_information_is_not_supported(
    gateway: ClientFactory, docker_host: str
) -> None:
    client = await gateway(make_config(docker_host), runtimes=registry_of(FakeRuntime([summary(1)])))
    for path in ("/api/v1/system", "/api/v1/system/stats"):
        body = await expect(await client.get(path), 409, "OPERATION_NOT_SUPPORTED")
        assert body["message"] == "The docker runtime has no host information"


async def test_without_runtime_the_primary_answers_else_the_first_that_can(
    gateway: ClientFactory, docker_host: str
) -> None:
    runtimes = registry_of(FakeRuntime([summary(1)]), HostRuntime("kubernetes"))
    client = await gateway(make_config(docker_host), runtimes=runtimes)
    assert (await (await client.get("/api/v1/system")).json())["runtime"] == "kubernetes"
    stats = await (await client.get("/api/v1/system/stats?runtime=kubernetes")).json()
    assert stats["cpu"] == {"percent": None, "cores": 2.5} and "metrics" not in stats
    await expect(await client.get("/api/v1/system?runtime=docker"), 409, "OPERATION_NOT_SUPPORTED")
    info = await (await client.get("/api/v1/system?runtime=kubernetes")).json()
    assert info == {
        "runtime": "kubernetes",
        "engineVersion": "1.0",
        "cpus": 2,
        "memoryTotal": 1,
        "containers": {"total": 1, "running": 1, "paused": 0, "stopped": 0},
    }


@pytest.mark.parametrize(
    ("failure", "status", "codes"),
    [
        (
            OperationFailed("boom", detail="the daemon said no"),
            500,
            ("SYSTEM_INFO_FAILED", "SYSTEM_STATS_FAILED"),
        ),
        (Forbidden("rbac", detail='cannot list "nodes"'), 403, ("FORBIDDEN", "FORBIDDEN")),
    ],
)
async def test_failures_have_their_codes_and_no_daemon_text(
    gateway: ClientFactory, docker_host: str, failure: RuntimeFailure, status: int, codes: tuple[str, str]
) -> None:
    client = await gateway(make_config(docker_host), runtimes=registry_of(HostRuntime("docker", failure)))
    for path, code in zip(("/api/v1/system", "/api/v1/system/stats"), codes, strict=True):
        body = await expect(await client.get(path), status, code)
        assert failure.detail in body["message"] and str(failure) not in body["message"]


def test_space_is_reduced_as_docker_system_df_does() -> None:
    df: dict[str, Any] = {
        "LayersSize": 1000,
        "Images": [
            {"Size": 600, "SharedSize": 100, "Containers": 1},  # used: 500 of its own bytes
            {"Size": 300, "SharedSize": 100, "Containers": 0},
            {"Size": 50, "SharedSize": -1, "Containers": 2},  # sharing unknown: not counted
        ],
        "Containers": [
            {"SizeRw": 10, "State": "running"},
            {"SizeRw": 20, "State": "exited"},
            {"SizeRw": 5, "State": "paused"},
            {"SizeRw": 7, "State": "created"},
        ],
        "Volumes": [
            {"UsageData": {"Size": 100, "RefCount": 1}},
            {"UsageData": {"Size": 40, "RefCount": 0}},
            {"UsageData": {"Size": -1, "RefCount": 0}},  # not measured
        ],
        "BuildCache": [
            {"Size": 30, "InUse": False, "Shared": False},
            {"Size": 20, "InUse": True, "Shared": False},
            {"Size": 99, "InUse": False, "Shared": True},
        ],
    }
    space = space_usage(df)
    assert space.images == SpaceEntry(3, 1000, 500)
    assert space.containers == SpaceEntry(4, 42, 27)
    assert space.volumes == SpaceEntry(3, 140, 40)
    assert space.build_cache == SpaceEntry(3, 50, 30)
    empty = space_usage({"Images": None, "Containers": None, "Volumes": None, "BuildCache": None})
    assert empty.images == SpaceEntry(0, 0, 0) and empty.build_cache == SpaceEntry(0, 0, 0)


class Times(NamedTuple):
    """The fields of psutil's cpu_times() on Linux that the meter reads."""

    user: float
    system: float
    idle: float
    iowait: float
    guest: float
    guest_nice: float


def test_the_cpu_meter_rates_its_own_samples_and_keeps_a_rate_within_its_window(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [100.0]
    samples = iter(
        [
            Times(user=100, system=0, idle=100, iowait=0, guest=5, guest_nice=0),
            # 40 busy (guest time is inside user already), 40 idle or waiting: 50 %.
            Times(user=140, system=0, idle=120, iowait=20, guest=9, guest_nice=0),
            Times(user=140, system=20, idle=200, iowait=20, guest=9, guest_nice=0),
        ]
    )
    monkeypatch.setattr(psutil, "cpu_times", lambda: next(samples))
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    meter = CpuMeter()
    clock[0] += 0.1
    assert meter.percent() == 50.0
    clock[0] += 0.1  # within the window: the same rate, no new sample
    assert meter.percent() == 50.0
    clock[0] += 1.0
    assert meter.percent() == 20.0


def test_only_a_unix_socket_is_this_machine() -> None:
    assert is_local("unix:///var/run/docker.sock")
    assert not any(is_local(h) for h in ("tcp://10.0.0.2:2375", "ssh://host", "npipe:////./pipe/docker"))
