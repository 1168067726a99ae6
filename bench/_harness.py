"""Shared plumbing for the benchmarks: a private dockerd, the gateway as a subprocess, an Engine API
client over the unix socket, statistics and the result table.

Every script is ``measure(bench) -> rows`` plus ``run_script(measure, ...)``; this module owns
everything that must be cleaned up (containers, the gateway process, the daemon) so that each
script's ``finally`` is written once, here.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import resource
import signal
import socket
import ssl
import struct
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

REPO = Path(__file__).resolve().parents[1]
SANDBOX_SCRIPT = REPO / "scripts" / "docker-sandbox.sh"
DEFAULT_SANDBOX_DIR = Path("/tmp/nekzus-bench-sandbox")
IMAGE = os.environ.get("NEKZUS_TEST_IMAGE", "nekzus-test:busybox")
RUN_LABEL = "nekzus.bench.run"  # every container a run creates carries its run id, for cleanup
CREATE_CONCURRENCY = 32
GATEWAY_READY_TIMEOUT = 30.0
# The gateway as it ships (TLS auto, auth, rate limiting) except for the container rate limit,
# which by default allows 20 requests back to back: raised so far that it never trips, while its
# bookkeeping still runs on every request. Change any of it with --gateway-env KEY=VALUE.
GATEWAY_DEFAULTS = {
    "NEKZUS_RATELIMIT__CONTAINERS__PER_MINUTE": "6000000",
    "NEKZUS_RATELIMIT__CONTAINERS__BURST": "100000",
}

Measure = Callable[["Bench"], Awaitable[list["Row"]]]
LocalMeasure = Callable[[], Awaitable[list["Row"]]]  # in-process: no daemon, no gateway


# -- results ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One line of a result table; a row with a ``target`` is a check (PASS when value ≤ target,
    or value ≥ target for an ``at_least`` row such as a throughput)."""

    name: str
    value: float
    unit: str = ""
    target: float | None = None
    at_least: bool = False

    @property
    def passed(self) -> bool | None:
        if self.target is None:
            return None
        return self.value >= self.target if self.at_least else self.value <= self.target


def percentile(values: Sequence[float], p: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), so p50 is the median."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no samples")
    rank = (len(ordered) - 1) * p / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def ms(seconds: float) -> float:
    return seconds * 1000


def _fmt(value: float, unit: str) -> str:
    if not unit and float(value).is_integer():
        return str(int(value))
    return f"{value:.3f} {unit}".rstrip() if abs(value) < 100 else f"{value:.1f} {unit}".rstrip()


def _cells(row: Row) -> tuple[str, str, str, str]:
    target = "" if row.target is None else f"{'≥' if row.at_least else '≤'} {_fmt(row.target, row.unit)}"
    verdict = {True: "PASS", False: "FAIL", None: ""}[row.passed]
    return row.name, _fmt(row.value, row.unit), target, verdict


def print_table(title: str, rows: Sequence[Row]) -> None:
    """A plain-text table: metric, measured value, target, PASS/FAIL (blank for informative rows)."""
    lines = [_cells(r) for r in rows]
    header = ("metric", "measured", "target", "result")
    widths = [max([len(h), *(len(line[i]) for line in lines)]) for i, h in enumerate(header)]
    print(f"\n== {title} ==")
    for line in (header, tuple("-" * w for w in widths), *lines):
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
    print(flush=True)


def all_passed(rows: Sequence[Row]) -> bool:
    return all(r.passed is not False for r in rows)


# -- processes ----------------------------------------------------------------------------------


async def _run(*argv: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {err.decode().strip()}")
    return out.decode().strip()


@contextlib.asynccontextmanager
async def private_daemon(directory: Path) -> AsyncIterator[str]:
    """A dockerd of our own (scripts/docker-sandbox.sh), stopped afterwards even if start failed."""
    try:
        host = (await _run(str(SANDBOX_SCRIPT), "start", str(directory))).splitlines()[-1]
        yield host
    finally:
        await _run(str(SANDBOX_SCRIPT), "stop", str(directory))


def free_port() -> int:
    """A loopback port nobody listens on right now (the gateway binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def cpu_times(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds a process has used so far (/proc/PID/stat, clock-tick resolution)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (/proc/PID/stat, clock-tick resolution)."""
    return sum(cpu_times(pid))


def proc_status_mib(pid: int) -> dict[str, float]:
    """The memory lines (kB) of /proc/PID/status, in MiB."""
    fields: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if value.strip().endswith(" kB"):
            fields[key] = int(value.split()[0]) / 1024
    return fields


def raise_open_files(wanted: int) -> int:
    """Raise this process's open-file limit (soft, up to the hard one) to ``wanted``; processes
    started afterwards (the gateway, client workers) inherit it. Answers the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        soft = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return soft


def open_files_limit(pid: int) -> int:
    """The soft open-file limit of a running process (/proc/PID/limits)."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft = line.split()[3]
            return sys.maxsize if soft == "unlimited" else int(soft)
    raise RuntimeError(f"no open-file limit in /proc/{pid}/limits")


def socket_path(docker_host: str) -> str:
    if not docker_host.startswith("unix://"):
        raise ValueError(f"only unix:// Docker hosts are supported, not {docker_host!r}")
    return docker_host.removeprefix("unix://")


def _nekzus_command() -> list[str]:
    script = Path(sys.executable).parent / "nekzus"
    return [str(script), "serve"] if script.exists() else [sys.executable, "-m", "nekzus", "serve"]


class Gateway:
    """``nekzus serve`` on a free loopback port, its output in a log file shown if it fails.

    Its data directory (JWT secret, self-signed certificate) is ``workdir``, never the user's home;
    NEKZUS_* variables of the caller's environment are dropped so that runs compare. ``command``
    replaces ``nekzus serve`` (a bench-only entry point that reads the same settings).
    """

    def __init__(
        self,
        docker_host: str,
        workdir: Path,
        extra_env: dict[str, str] | None = None,
        command: Sequence[str] | None = None,
    ) -> None:
        port = free_port()
        self.docker_host = docker_host
        self.extra_env = dict(extra_env or {})
        self.command = list(command) if command is not None else _nekzus_command()
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("NEKZUS_")},
            **GATEWAY_DEFAULTS,
            "NEKZUS_SERVER__DATA_DIR": str(workdir),
            **(extra_env or {}),
            "NEKZUS_RUNTIMES__DOCKER__HOST": docker_host,
            "NEKZUS_SERVER__PORT": str(port),
            "NEKZUS_SERVER__HOST": "127.0.0.1",
        }
        self.tls_mode = self.env.get("NEKZUS_SERVER__TLS__MODE", "auto")
        self.url = f"{'http' if self.tls_mode == 'off' else 'https'}://127.0.0.1:{port}"
        self._certificate = Path(
            self.env.get("NEKZUS_SERVER__TLS__CERT")
            or Path(self.env["NEKZUS_SERVER__DATA_DIR"]) / "tls/cert.pem"
        )
        self._proc: asyncio.subprocess.Process | None = None
        self.log_path = workdir / "nekzus.log"

    @property
    def certificate(self) -> Path | None:
        """The certificate a client must trust (None for plain HTTP)."""
        return None if self.tls_mode == "off" else self._certificate

    def session(self, headers: dict[str, str] | None = None) -> aiohttp.ClientSession:
        """A client that trusts exactly the gateway's certificate (it names 127.0.0.1); ``headers``
        go with every request (e.g. a bearer token)."""
        if self.tls_mode == "off":
            return aiohttp.ClientSession(base_url=self.url, headers=headers)
        context = ssl.create_default_context(cafile=self._certificate)
        return aiohttp.ClientSession(
            base_url=self.url, headers=headers, connector=aiohttp.TCPConnector(ssl=context)
        )

    @property
    def pid(self) -> int:
        assert self._proc is not None, "the gateway is not running"
        return self._proc.pid

    async def start(self) -> None:
        with self.log_path.open("wb") as log:
            self._proc = await asyncio.create_subprocess_exec(
                *self.command, env=self.env, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log
            )
        await self._wait_healthy()

    async def _wait_healthy(self) -> None:
        deadline = time.monotonic() + GATEWAY_READY_TIMEOUT
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.returncode is not None:
                raise RuntimeError(f"nekzus exited {self._proc.returncode}:\n{self.log_tail()}")
            # A new session each try: the certificate appears only once the gateway has made it.
            with contextlib.suppress(aiohttp.ClientError, OSError, ssl.SSLError):
                async with self.session() as session, session.get("/healthz") as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.05)
        raise RuntimeError(f"nekzus did not answer /healthz in {GATEWAY_READY_TIMEOUT}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    async def stop(self) -> None:
        """SIGTERM (aiohttp shuts down gracefully), SIGKILL if it has not exited in 10 s."""
        proc, self._proc = self._proc, None
        if proc is None or proc.returncode is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()


# -- the Engine API -----------------------------------------------------------------------------


class Engine:
    """The Engine API over its unix socket with plain aiohttp, independent of the gateway's code.

    Containers are labelled with this run's id, so cleanup finds every one of them even when a
    create answer was lost.
    """

    def __init__(self, docker_host: str) -> None:
        self.run_id = uuid.uuid4().hex[:12]
        self.socket = socket_path(docker_host)
        self.session = aiohttp.ClientSession(
            base_url="http://docker", connector=aiohttp.UnixConnector(path=self.socket)
        )
        self.prefix = ""  # /v1.xx once the daemon told its API version

    async def __aenter__(self) -> Engine:
        async with self.session.get("/version") as resp:
            resp.raise_for_status()
            self.prefix = f"/v{(await resp.json())['ApiVersion']}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self.remove_all()
        finally:
            await self.session.close()

    async def _call(self, method: str, path: str, *, ok: Sequence[int], **kwargs: Any) -> Any:
        async with self.session.request(method, self.prefix + path, **kwargs) as resp:
            body = await resp.read()
            if resp.status not in ok:
                raise RuntimeError(f"{method} {path}: {resp.status} {body.decode(errors='replace')}")
            return json.loads(body) if body else None

    async def create(
        self, name: str, cmd: Sequence[str] = ("sleep", "3600"), labels: dict[str, str] | None = None
    ) -> str:
        """A container with no network at all (NetworkMode "none"); answers its full id."""
        spec = {
            "Image": IMAGE,
            "Cmd": list(cmd),
            "Labels": {**(labels or {}), RUN_LABEL: self.run_id},
            "HostConfig": {"NetworkMode": "none"},
        }
        doc = await self._call(
            "POST", "/containers/create", ok=(201,), params={"name": f"{name}-{self.run_id}"}, json=spec
        )
        return str(doc["Id"])

    async def create_many(
        self, count: int, name: str, *, start: bool = False, labels: dict[str, str] | None = None
    ) -> list[str]:
        """``count`` containers created concurrently (and started, if asked), in order."""
        limit = asyncio.Semaphore(CREATE_CONCURRENCY)

        async def one(i: int) -> str:
            async with limit:
                cid = await self.create(f"{name}-{i:03d}", labels=labels)
                if start:
                    await self.start(cid)
                return cid

        return list(await asyncio.gather(*(one(i) for i in range(count))))

    async def start(self, cid: str) -> None:
        await self._call("POST", f"/containers/{cid}/start", ok=(204, 304))

    async def stop(self, cid: str, timeout: int = 0) -> None:
        """Stop, killing after ``timeout`` seconds (0: at once; busybox ignores SIGTERM as PID 1)."""
        await self._call("POST", f"/containers/{cid}/stop", ok=(204, 304), params={"t": str(timeout)})

    async def wait(self, cid: str) -> int:
        """Wait until the container has exited; answers its exit code."""
        doc = await self._call(
            "POST", f"/containers/{cid}/wait", ok=(200,), timeout=aiohttp.ClientTimeout(total=None)
        )
        return int(doc["StatusCode"])

    def daemon_pid(self) -> int | None:
        """The daemon's process id, from the credentials of its unix socket (None if unknown)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            try:
                sock.connect(self.socket)
                creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            except OSError:
                return None
        pid: int = struct.unpack("3i", creds)[0]
        return pid or None

    async def list_ours(self) -> list[str]:
        filters = json.dumps({"label": [f"{RUN_LABEL}={self.run_id}"]})
        rows = await self._call("GET", "/containers/json", ok=(200,), params={"all": "1", "filters": filters})
        return [str(row["Id"]) for row in rows]

    async def remove_all(self) -> int:
        """Force-remove every container of this run; answers how many were removed."""
        ids = await self.list_ours()
        limit = asyncio.Semaphore(CREATE_CONCURRENCY)

        async def one(cid: str) -> None:
            async with limit:
                await self._call(
                    "DELETE", f"/containers/{cid}", ok=(204, 404), params={"force": "1", "v": "1"}
                )

        await asyncio.gather(*(one(cid) for cid in ids))
        return len(ids)


class EngineEvents:
    """The Engine's own event stream (``GET /events``) about one container, held open while the
    block runs: each event comes with the ``perf_counter()`` at which this process read it.
    Entering returns once the daemon has answered, so events caused afterwards are all seen."""

    def __init__(self, engine: Engine, cid: str, actions: Sequence[str], timeout: float = 30.0) -> None:
        self._engine = engine
        self._filters = json.dumps({"type": ["container"], "event": list(actions), "container": [cid]})
        self._timeout = timeout
        self._queue: asyncio.Queue[tuple[float, dict[str, Any]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> EngineEvents:
        opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._pump(opened))
        await asyncio.wait([opened, self._task], return_when=asyncio.FIRST_COMPLETED)
        if self._task.done():
            self._task.result()  # the request failed: raise its error
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _pump(self, opened: asyncio.Future[None]) -> None:
        path = f"{self._engine.prefix}/events"
        timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
        async with self._engine.session.get(path, params={"filters": self._filters}, timeout=timeout) as resp:
            resp.raise_for_status()
            opened.set_result(None)
            async for line in resp.content:
                arrived = time.perf_counter()
                if line.strip():
                    self._queue.put_nowait((arrived, json.loads(line)))

    async def next(self, action: str) -> tuple[float, dict[str, Any]]:
        """The next event (it must be ``action``) and when it was read."""
        async with asyncio.timeout(self._timeout):
            arrived, doc = await self._queue.get()
        if doc.get("Action") != action:
            raise AssertionError(f"expected a {action} event from the Engine, got {doc.get('Action')}")
        return arrived, doc


async def timed_get(session: aiohttp.ClientSession, path: str) -> tuple[float, Any, int]:
    """Seconds until the body is read and parsed (a client needs both), the body and its size."""
    start = time.perf_counter()
    async with session.get(path) as resp:
        body = await resp.read()
        resp.raise_for_status()
        doc = await resp.json()
    return time.perf_counter() - start, doc, len(body)


async def direct_stats(bench: Bench, cid: str) -> float:
    """Seconds for the Engine's own one-shot stats sample of ``cid``, read raw over its socket:
    the floor under any stats call through the gateway (the Engine's collector passes once a second)."""
    seconds, _, _ = await timed_get(
        bench.engine.session, f"{bench.engine.prefix}/containers/{cid}/stats?stream=false&one-shot=true"
    )
    return seconds


async def gateway_caught_up(bench: Bench, ids: Sequence[str], *, timeout: float = 120.0) -> float:
    """Seconds until the gateway's list shows each of ``ids`` in the state the Engine reports.

    The list follows the Engine's event stream (each event's container is re-read before it is
    published), so containers made straight on the Engine appear once their events are through.
    """
    async with bench.engine.session.get(f"{bench.engine.prefix}/containers/json?all=1") as resp:
        engine_rows = {row["Id"][:12]: row["State"] for row in await resp.json()}
    ours = {cid[:12] for cid in ids}
    started = time.perf_counter()
    async with asyncio.timeout(timeout):
        while True:
            async with bench.http.get("/api/v1/containers?all=true") as resp:
                listed = {row["id"]: row["state"] for row in await resp.json()}
            if ours <= set(listed) and all(listed[c] == engine_rows[c] for c in ours):
                return time.perf_counter() - started
            await asyncio.sleep(0.05)


# -- putting it together ------------------------------------------------------------------------


@dataclass
class Bench:
    """What a measurement gets: the Engine client, the running gateway and a session to it."""

    engine: Engine
    gateway: Gateway
    http: aiohttp.ClientSession


@contextlib.asynccontextmanager
async def bench_environment(docker_host: str, gateway_env: dict[str, str]) -> AsyncIterator[Bench]:
    """Engine client and gateway; on exit the gateway stops, then this run's containers go."""
    with tempfile.TemporaryDirectory(prefix="nekzus-bench-") as workdir:
        async with Engine(docker_host) as engine:
            gateway = Gateway(docker_host, Path(workdir), gateway_env)
            try:
                await gateway.start()
                async with gateway.session() as http:
                    yield Bench(engine, gateway, http)
            finally:
                await gateway.stop()


@contextlib.asynccontextmanager
async def another_gateway(
    bench: Bench, env: dict[str, str], command: Sequence[str] | None = None
) -> AsyncIterator[Gateway]:
    """One more gateway on the bench's daemon, with its own data directory and port: the caller's
    --gateway-env plus ``env`` (which wins), ``command`` instead of ``nekzus serve`` if given."""
    with tempfile.TemporaryDirectory(prefix="nekzus-bench-") as workdir:
        gateway = Gateway(
            bench.gateway.docker_host, Path(workdir), {**bench.gateway.extra_env, **env}, command
        )
        try:
            await gateway.start()
            yield gateway
        finally:
            await gateway.stop()


def parse_args(
    description: str, *, docker: bool = True, sandbox: Path = DEFAULT_SANDBOX_DIR, what: str = "daemon"
) -> argparse.Namespace:
    """--sandbox-dir and --gateway-env, and --docker-host for the benches on a Docker daemon."""
    parser = argparse.ArgumentParser(description=description)
    if docker:
        parser.add_argument(
            "--docker-host",
            help="use this running daemon (unix:///…/docker.sock) instead of starting a private one",
        )
    parser.add_argument(
        "--sandbox-dir",
        type=Path,
        default=sandbox,
        help=f"directory of the private {what} (default {sandbox})",
    )
    parser.add_argument(
        "--gateway-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra setting for the gateway, e.g. NEKZUS_SERVER__TLS__MODE=off (repeatable)",
    )
    args = parser.parse_args()
    pairs = [item.partition("=") for item in args.gateway_env]
    if any(not key or not sep for key, sep, _ in pairs):
        parser.error("--gateway-env takes KEY=VALUE")
    args.gateway_env = {key: value for key, _, value in pairs}
    return args


@contextlib.asynccontextmanager
async def docker_host(args: argparse.Namespace) -> AsyncIterator[str]:
    """The daemon given with --docker-host, or a private one for as long as the block runs."""
    if args.docker_host:
        yield args.docker_host
        return
    async with private_daemon(args.sandbox_dir) as host:
        yield host


async def run_one(
    title: str,
    measure: Measure,
    host: str,
    gateway_env: dict[str, str],
    env: dict[str, str] | None = None,
) -> list[Row]:
    """``env``: settings this benchmark needs on its gateway; the caller's ``gateway_env`` wins."""
    gateway_env = {**(env or {}), **gateway_env}
    async with bench_environment(host, gateway_env) as bench:
        settings = {k: v for k, v in bench.gateway.env.items() if k in {*GATEWAY_DEFAULTS, *gateway_env}}
        print(f"{title}: gateway {bench.gateway.url} (TLS {bench.gateway.tls_mode}) {settings}", flush=True)
        rows = await measure(bench)
    print_table(title, rows)
    return rows


def run_script(title: str, measure: Measure, env: dict[str, str] | None = None) -> None:
    """The ``__main__`` of a benchmark: exit 0 when every target is met, 1 when one is not."""
    args = parse_args(title)

    async def main() -> list[Row]:
        async with docker_host(args) as host:
            return await run_one(title, measure, host, args.gateway_env, env)

    sys.exit(0 if all_passed(asyncio.run(main())) else 1)


async def run_local(title: str, measure: LocalMeasure) -> list[Row]:
    """An in-process measurement (no daemon, no gateway): run it and print its table."""
    print(f"{title}: in-process", flush=True)
    rows = await measure()
    print_table(title, rows)
    return rows


def run_local_script(title: str, measure: LocalMeasure) -> None:
    """The ``__main__`` of an in-process benchmark: exit 0 when every target is met, 1 otherwise."""
    argparse.ArgumentParser(description=title).parse_args()
    sys.exit(0 if all_passed(asyncio.run(run_local(title, measure))) else 1)
