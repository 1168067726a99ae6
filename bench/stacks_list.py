"""The stack list through the gateway vs ``docker compose ls`` on the same Engine.

20 projects of 3 services each (network none, linked with ``nekzus.enable``) are started with the
real compose binary, as a user would. The gateway answers ``GET /api/v1/stacks`` from its state
model and the managed stacks' folder, without running compose; ``docker compose ls --all --format
json`` is a process that asks the Engine for its containers and groups them. Target: the
gateway's median ≤ 1.0× the median wall time of compose ls. Every project is taken down
afterwards (and its containers, labelled with the run id, removed in any case).
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
from pathlib import Path

from bench._harness import RUN_LABEL, Bench, Row, ms, percentile, run_script, timed_get
from tests.support.stacks import COMPOSE, compose_file, service

STACKS = 20
SERVICES = ("web", "worker", "cache")
WARMUP = 10
CALLS = 50
COMPOSE_RUNS = 20
UP_CONCURRENCY = 4
READY_TIMEOUT = 120.0
TARGET_RATIO = 1.0
LS = ("ls", "--all", "--format", "json")


async def compose(docker_host: str, *args: str) -> tuple[float, bytes]:
    """Wall time and stdout of one compose run (the whole process, as a user waits for it)."""
    begin = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        str(COMPOSE),
        *args,
        env={"DOCKER_HOST": docker_host, "PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"compose {' '.join(args)} exited {proc.returncode}: {err.decode().strip()}")
    return time.perf_counter() - begin, out


async def stacks_up(bench: Bench, folder: Path, names: list[str]) -> None:
    labels = {"nekzus.enable": "true", RUN_LABEL: bench.engine.run_id}
    document = compose_file({s: service(command=["sleep", "3600"], labels=labels) for s in SERVICES})
    limit = asyncio.Semaphore(UP_CONCURRENCY)

    async def up(name: str) -> None:
        file = folder / name / "compose.yaml"
        file.parent.mkdir()
        file.write_text(document)
        async with limit:
            await compose(bench.gateway.docker_host, "-p", name, "-f", str(file), "up", "-d")

    await asyncio.gather(*(up(name) for name in names))


async def stacks_down(bench: Bench, names: list[str]) -> None:
    limit = asyncio.Semaphore(UP_CONCURRENCY)

    async def down(name: str) -> None:
        async with limit:
            await compose(bench.gateway.docker_host, "-p", name, "down", "--timeout", "0")

    await asyncio.gather(*(down(name) for name in names), return_exceptions=True)


async def listed_running(bench: Bench, names: list[str]) -> float:
    """Seconds until the gateway's list shows every one of ``names`` running (it follows the
    Engine's events)."""
    wanted = set(names)
    begin = time.perf_counter()
    async with asyncio.timeout(READY_TIMEOUT):
        while True:
            _, rows, _ = await timed_get(bench.http, "/api/v1/stacks")
            running = {r["name"] for r in rows if r["status"] == "running" and r["running"] == len(SERVICES)}
            if wanted <= running:
                return time.perf_counter() - begin
            await asyncio.sleep(0.1)


async def measure(bench: Bench) -> list[Row]:
    names = [f"bench-stacks-{bench.engine.run_id}-{i:02d}" for i in range(STACKS)]
    with tempfile.TemporaryDirectory(prefix="nekzus-bench-stacks-") as workdir:
        try:
            begin = time.perf_counter()
            await stacks_up(bench, Path(workdir), names)
            started = time.perf_counter() - begin
            caught_up = await listed_running(bench, names)
            _, listed, size = await timed_get(bench.http, "/api/v1/stacks")
            gateway: list[float] = []
            for i in range(WARMUP + CALLS):
                seconds, _, _ = await timed_get(bench.http, "/api/v1/stacks")
                if i >= WARMUP:
                    gateway.append(seconds)
            direct: list[float] = []
            projects = b"[]"
            for _ in range(COMPOSE_RUNS):
                seconds, projects = await compose(bench.gateway.docker_host, *LS)
                direct.append(seconds)
        finally:
            await stacks_down(bench, names)
    g50, c50 = percentile(gateway, 50), percentile(direct, 50)
    return [
        Row(f"{STACKS} stacks × {len(SERVICES)} services started with compose", started, "s"),
        Row("gateway's list caught up with the Engine", caught_up, "s"),
        Row("stacks listed by the gateway", len(listed)),
        Row("projects listed by compose ls (every one on the Engine)", len(json.loads(projects))),
        Row("response size gateway", size / 1024, "KiB"),
        Row(f"docker compose ls --all median ({COMPOSE_RUNS} runs)", ms(c50), "ms"),
        Row(f"gateway GET /api/v1/stacks median ({CALLS} calls)", ms(g50), "ms"),
        Row("gateway p95", ms(percentile(gateway, 95)), "ms"),
        Row("gateway median / compose ls median", g50 / c50, "×", TARGET_RATIO),
    ]


if __name__ == "__main__":
    run_script(f"list {STACKS} stacks × {len(SERVICES)} services: gateway vs docker compose ls", measure)
