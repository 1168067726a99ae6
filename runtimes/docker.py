"""The Docker backend: the Engine API over its socket, through aiodocker.

Every aiodocker error is translated into :mod:`runtimes.errors` here and nowhere else. aiodocker
reports a socket it cannot reach as status 900; that is :class:`Unavailable`, as is a timeout.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
import struct
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, NoReturn, TypeGuard
from urllib.parse import urlsplit, urlunsplit

import aiodocker
import aiohttp

from . import aiodocker_compat
from .base import (
    Action,
    ContainerRef,
    ContainerRow,
    ContainerState,
    ContainerSummary,
    ExportSource,
    LogChunk,
    PortMapping,
    RuntimeEvent,
    RuntimeInfo,
    StatsSample,
    state_refusal,
)
from .compose import ServiceDraft
from .docker_compose import container_name, docker_service
from .errors import (
    AlreadyRunning,
    AlreadyStopped,
    Conflict,
    NotFound,
    OperationFailed,
    RuntimeFailure,
    Unavailable,
)
from .redact import mask_env_list
from .stats import CpuHistory, sample_from_docker
from .urlpath import segment

log = logging.getLogger(__name__)

# Docker's states that are not the contract's own: a dead container (it failed to stop cleanly)
# and one being removed are "stopped"; a container whose process ended is "exited".
_STATES: Mapping[str, ContainerState] = {
    "running": ContainerState.RUNNING,
    "paused": ContainerState.PAUSED,
    "restarting": ContainerState.RESTARTING,
    "created": ContainerState.CREATED,
    "exited": ContainerState.EXITED,
    "dead": ContainerState.STOPPED,
    "removing": ContainerState.STOPPED,
}

# Engine events that change a container's state, and the state they leave it in.
_EVENT_STATES: Mapping[str, ContainerState | None] = {
    "create": ContainerState.CREATED,
    "start": ContainerState.RUNNING,
    "restart": ContainerState.RUNNING,
    "unpause": ContainerState.RUNNING,
    "pause": ContainerState.PAUSED,
    "die": ContainerState.EXITED,
    "destroy": None,
}
_EVENT_NON_LABELS = frozenset({"image", "name", "exitCode", "signal", "execDuration", "oldName"})
# Events that change what a container's list row shows but not its state.
_EVENT_REFRESH = frozenset({"rename"})

_LOG_HEADER = struct.Struct(">BxxxL")
_LOG_STREAMS = {0: "stdout", 1: "stdout", 2: "stderr"}
MAX_LOG_FRAME = 1 << 20  # frames above 1 MiB are skipped rather than buffered
_READ_TIMEOUT = 30.0
_IMAGE_CACHE = 256  # image documents kept by id (an id names immutable content)
_INFO_SECONDS = 60.0  # how long the daemon's info (logging driver, CPUs) is taken as known
_INSPECT_CONCURRENCY = 8  # inspects at once while a state model (re)learns its containers
# A first stats call takes two one-shot samples at least this far apart: long enough for the
# host's CPU counter (clock ticks of 10 ms, on every CPU) to move by dozens of ticks. The Engine's
# stats collector reads its containers once a second (STATS_INTERVAL) and a one-shot sample waits
# for its next pass, so in practice the second sample comes with that pass: ~1 s on Docker 20.10.
FIRST_SAMPLE_GAP = 0.25
STATS_INTERVAL = 1.0
# A container's newest sample, up to STATS_STALE old, answers a call whose fresh sample is not
# there within STATS_WAIT (its collector pass is further away); that pass still refreshes it.
STATS_WAIT = 0.1
STATS_STALE = 3.0
_FRESH_KEEP = 512  # recent samples kept by container before the stale ones are swept


# What Docker accepts as a container name (ids are hex, so they fit too).
_CONTAINER_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*")
MAX_NAME = 253


def map_state(docker_state: str) -> ContainerState:
    return _STATES.get(docker_state.lower(), ContainerState.STOPPED)


def short_id(full_id: str) -> str:
    return full_id[:12]


def parse_timestamp(value: str) -> int:
    """Whole Unix seconds of an Engine RFC 3339 time (see :func:`parse_time`)."""
    return int(parse_time(value))


def parse_time(value: str) -> float:
    """Unix seconds, with the fraction, of an Engine RFC 3339 time; 0 for Go's zero time or junk."""
    if not value or value.startswith("0001-"):
        return 0.0
    head, dot, rest = value.partition(".")
    if dot:
        digits = len(rest) - len(rest.lstrip("0123456789"))
        # Python reads at most microseconds: the Engine writes nanoseconds.
        value = f"{head}.{rest[:digits][:6].ljust(6, '0')}{rest[digits:]}"
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return 0.0
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def human_duration(seconds: float) -> str:
    """A duration as the Docker CLI writes it in a status line (go-units' ``HumanDuration``)."""
    whole = int(seconds)
    if whole < 1:
        return "Less than a second"
    if whole == 1:
        return "1 second"
    if whole < 60:
        return f"{whole} seconds"
    minutes = int(seconds / 60)
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = int(seconds / 3600 + 0.5)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(seconds / 3600) // 24 // 365} years"


@dataclass(frozen=True, slots=True)
class Lifetime:
    """What the Engine renders a container's status line from (its ``State``), kept so that the
    line can be rendered again later instead of aging: "Up 5 minutes" is true for one minute."""

    status: str  # the Engine's own word: running, paused, restarting, exited, created, dead, removing
    started_at: float
    finished_at: float
    exit_code: int
    health: str | None

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Lifetime:
        return cls(
            status=str(state.get("Status", "")),
            started_at=parse_time(str(state.get("StartedAt", ""))),
            finished_at=parse_time(str(state.get("FinishedAt", ""))),
            exit_code=int(state.get("ExitCode") or 0),
            health=(state.get("Health") or {}).get("Status") or None,
        )

    def status_line(self, now: float) -> str:
        """The status the Engine would show at ``now`` (its ``State.String()``)."""
        if self.status in ("running", "paused", "restarting"):
            if self.status == "paused":
                return f"Up {human_duration(now - self.started_at)} (Paused)"
            if self.status == "restarting":
                return f"Restarting ({self.exit_code}) {human_duration(now - self.finished_at)} ago"
            up = f"Up {human_duration(now - self.started_at)}"
            if self.health:
                return f"{up} (health: starting)" if self.health == "starting" else f"{up} ({self.health})"
            return up
        if self.status == "removing":
            return "Removal In Progress"
        if self.status == "dead":
            return "Dead"
        if not self.started_at:
            return "Created"
        if not self.finished_at:
            return ""
        return f"Exited ({self.exit_code}) {human_duration(now - self.finished_at)} ago"


@dataclass(frozen=True, slots=True)
class DockerRow:
    """A container's list row as a state model keeps it: the row, and its lifetime for the status."""

    summary: ContainerSummary
    lifetime: Lifetime

    def at(self, now: float) -> ContainerSummary:
        return replace(self.summary, status=self.lifetime.status_line(now))


def _ports_from_list(ports: list[dict[str, Any]] | None) -> tuple[PortMapping, ...]:
    return tuple(
        PortMapping(
            ip=p.get("IP", ""),
            private_port=int(p.get("PrivatePort", 0)),
            public_port=int(p["PublicPort"]) if p.get("PublicPort") else None,
            type=p.get("Type", "tcp"),
        )
        for p in ports or ()
    )


def _ports_from_inspect(ports: Mapping[str, Any] | None) -> tuple[PortMapping, ...]:
    result = []
    for key, bindings in (ports or {}).items():
        private, _, proto = key.partition("/")
        if not bindings:
            result.append(PortMapping("", int(private), None, proto or "tcp"))
            continue
        for binding in bindings:
            public = binding.get("HostPort")
            result.append(
                PortMapping(
                    binding.get("HostIp", ""),
                    int(private),
                    int(public) if public else None,
                    proto or "tcp",
                )
            )
    return tuple(result)


def _health_from_status(status: str) -> str | None:
    """The healthcheck verdict in a list row's status: "Up 2 hours (healthy)"."""
    for verdict, marker in (
        ("healthy", "(healthy)"),
        ("unhealthy", "(unhealthy)"),
        ("starting", "(health: starting)"),
    ):
        if status.endswith(marker):
            return verdict
    return None


def is_container_id(value: object) -> TypeGuard[str]:
    """An id or name Docker could have given a container (names are at most 253 characters here)."""
    return isinstance(value, str) and len(value) <= MAX_NAME and bool(_CONTAINER_NAME.fullmatch(value))


def _container_path(container: str, endpoint: str) -> str:
    """``containers/{id}/{endpoint}``, for an id or name that Docker could have given a container.

    Security: the Engine decodes the path before routing it (``%2F`` is a slash to it), so
    percent-encoding alone would not keep a value in its segment: anything that is not a Docker
    id or name is NotFound here, never sent.
    """
    if not _CONTAINER_NAME.fullmatch(container):
        raise NotFound(f"{container!r} is not a Docker container id or name")
    return f"containers/{segment(container)}/{endpoint}"


def without_userinfo(address: str) -> str:
    """``ssh://user@host`` as ``ssh://host``: a login name is nobody's business but the operator's."""
    parts = urlsplit(address)
    if parts.netloc and "@" in parts.netloc:
        return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    return address


class DockerRuntime:
    """A Docker Engine reached at ``host`` (``unix://…`` or ``tcp://…``)."""

    namespaced = False

    def __init__(self, host: str, *, name: str = "docker") -> None:
        self._name = name
        self.host = host
        self._docker = aiodocker.Docker(
            url=host,
            timeout=aiohttp.ClientTimeout(total=None, connect=5, sock_connect=5),
        )
        self._images: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._info: tuple[float, dict[str, Any]] | None = None
        self._info_lock = asyncio.Lock()
        # What a client is told when the Engine does not answer: the address tried (without any
        # user name in it) and the settings that change it.
        self._unreachable = (
            f"the Docker Engine at {without_userinfo(host)} does not answer "
            "(set DOCKER_HOST or runtimes.docker.host to use another)"
        )
        self._cpu = CpuHistory(min_gap=FIRST_SAMPLE_GAP)
        self._fresh: dict[str, tuple[float, StatsSample]] = {}
        self._sampling: dict[str, asyncio.Future[StatsSample]] = {}

    @property
    def name(self) -> str:
        return self._name

    def accepts_id(self, value: object) -> bool:
        return is_container_id(value)

    def refusal(self, container: ContainerSummary, action: Action, *, force: bool) -> RuntimeFailure | None:
        return state_refusal(container, action)

    async def close(self) -> None:
        owned: list[asyncio.Future[Any]] = [*self._images.values(), *self._sampling.values()]
        for pending in owned:
            pending.cancel()
        await asyncio.gather(*owned, return_exceptions=True)
        await self._docker.close()

    # -- plumbing -------------------------------------------------------------------------------

    def _raise(self, exc: BaseException, what: str) -> NoReturn:
        if isinstance(exc, aiodocker.DockerError):
            if exc.status == 404:
                raise NotFound(f"{what}: {exc.message}") from exc
            if exc.status == 409:
                raise Conflict(f"{what}: {exc.message}") from exc
            if exc.status == 900:
                unreachable = f"Docker Engine at {self.host} is unreachable"
                raise Unavailable(unreachable, detail=self._unreachable) from exc
            raise OperationFailed(f"{what}: [{exc.status}] {exc.message}") from exc
        if isinstance(exc, asyncio.TimeoutError | aiohttp.ClientError | OSError):
            raise Unavailable(
                f"Docker Engine at {self.host} did not answer: {exc!r}", detail=self._unreachable
            ) from exc
        raise OperationFailed(f"{what}: {exc!r}") from exc

    async def _json(
        self,
        path: str,
        *,
        method: str = "GET",
        params: Mapping[str, Any] | None = None,
        timeout: float = _READ_TIMEOUT,
        versioned: bool = True,
    ) -> Any:
        try:
            return await aiodocker_compat.query_json(
                self._docker,
                path,
                method,
                params=params or {},
                timeout=aiohttp.ClientTimeout(total=timeout),
                versioned=versioned,
            )
        except (TimeoutError, aiodocker.DockerError, aiohttp.ClientError, OSError) as exc:
            self._raise(exc, f"{method} {path}")

    async def _post(self, path: str, *, params: Mapping[str, Any], timeout: float) -> int:
        """POST without a body; answer the HTTP status (204, or 304 when nothing changed)."""
        try:
            async with aiodocker_compat.query(
                self._docker, path, "POST", params=params, timeout=aiohttp.ClientTimeout(total=timeout)
            ) as response:
                await response.read()
                return response.status
        except (TimeoutError, aiodocker.DockerError, aiohttp.ClientError, OSError) as exc:
            self._raise(exc, f"POST {path}")

    # -- queries --------------------------------------------------------------------------------

    async def ping(self) -> RuntimeInfo:
        version = await self._json("version", versioned=False, timeout=5)
        return RuntimeInfo(self.name, str(version.get("Version", "")), str(version.get("ApiVersion", "")))

    async def list_containers(self, *, namespace: str | None = None) -> list[ContainerSummary]:
        rows = await self._json("containers/json", params={"all": "1"})
        return [self._summary_from_list(row) for row in rows]

    async def rows(
        self, ids: Sequence[str] | None = None, *, known: Mapping[str, ContainerRow] | None = None
    ) -> list[ContainerRow]:
        """List rows with the lifetimes their status lines are rendered from: every container, or
        those ``ids`` name (ids or their prefixes).

        A lifetime comes from an inspect. On a full listing, a container whose ``known`` row still
        renders the very status line the Engine shows keeps its lifetime instead: a periodic
        resync of a quiet daemon is one list call.
        """
        if ids is None:
            listed = await self._list_raw({"all": "1"})
            now = time.time()
            lifetimes: dict[str, Lifetime] = {}
            for row in listed:
                old = (known or {}).get(short_id(row["Id"]))
                if (
                    isinstance(old, DockerRow)
                    and old.lifetime.status == row.get("State")
                    and old.lifetime.status_line(now) == row.get("Status")
                ):
                    lifetimes[row["Id"]] = old.lifetime
            missing = [row["Id"] for row in listed if row["Id"] not in lifetimes]
            lifetimes.update(await self._lifetimes(missing))
        else:
            # The row and the lifetimes at once: this is on the path of every state event.
            filters = json.dumps({"id": list(ids)})
            listing, inspected = await asyncio.gather(
                self._list_raw({"all": "1", "filters": filters}),
                self._lifetimes(ids),
                return_exceptions=True,
            )
            # Raised once both calls have ended, so neither outlives this call.
            if isinstance(listing, BaseException):
                raise listing
            if isinstance(inspected, BaseException):
                raise inspected
            listed, fresh = listing, inspected
            lifetimes = {
                row["Id"]: lt for row in listed for i, lt in fresh.items() if row["Id"].startswith(i)
            }
        result: list[ContainerRow] = []
        for row in listed:
            lifetime = lifetimes.get(row["Id"])
            if lifetime is None:
                continue  # removed between the list and its inspect
            summary = self._summary_from_list(row)
            result.append(
                DockerRow(
                    replace(summary, state=map_state(lifetime.status), health=lifetime.health), lifetime
                )
            )
        return result

    async def _list_raw(self, params: Mapping[str, str]) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = await self._json("containers/json", params=params)
        return rows

    async def _lifetimes(self, ids: Sequence[str]) -> dict[str, Lifetime]:
        """Each container's lifetime by the id asked with; one that is gone is left out."""
        limit = asyncio.Semaphore(_INSPECT_CONCURRENCY)

        async def one(cid: str) -> Lifetime | None:
            async with limit:
                try:
                    doc = await self._inspect_raw(ContainerRef(cid))
                except NotFound:
                    return None
            return Lifetime.from_state(doc.get("State") or {})

        found = await asyncio.gather(*(one(cid) for cid in ids))
        return {cid: lt for cid, lt in zip(ids, found, strict=True) if lt is not None}

    def _summary_from_list(self, row: Mapping[str, Any]) -> ContainerSummary:
        names = row.get("Names") or [""]
        return ContainerSummary(
            id=short_id(row["Id"]),
            full_id=row["Id"],
            name=names[0].lstrip("/"),
            image=row.get("Image", ""),
            state=map_state(row.get("State", "")),
            status=row.get("Status", ""),
            created=int(row.get("Created", 0)),
            ports=_ports_from_list(row.get("Ports")),
            labels=row.get("Labels") or {},
            runtime=self.name,
            health=_health_from_status(row.get("Status", "")),
        )

    async def _inspect_raw(self, ref: ContainerRef) -> dict[str, Any]:
        doc: dict[str, Any] = await self._json(_container_path(ref.id, "json"))
        return doc

    async def get(self, ref: ContainerRef) -> ContainerSummary:
        doc = await self._inspect_raw(ref)
        config = doc.get("Config") or {}
        state = doc.get("State") or {}
        lifetime = Lifetime.from_state(state)
        return ContainerSummary(
            id=short_id(doc["Id"]),
            full_id=doc["Id"],
            name=str(doc.get("Name", "")).lstrip("/"),
            image=config.get("Image", ""),
            state=map_state(state.get("Status", "")),
            status=lifetime.status_line(time.time()),
            created=parse_timestamp(doc.get("Created", "")),
            ports=_ports_from_inspect((doc.get("NetworkSettings") or {}).get("Ports")),
            labels=config.get("Labels") or {},
            runtime=self.name,
            health=lifetime.health,
        )

    async def inspect(self, ref: ContainerRef) -> dict[str, Any]:
        doc = await self._inspect_raw(ref)
        config = doc.get("Config")
        if isinstance(config, dict) and config.get("Env"):
            config["Env"] = mask_env_list(config["Env"])
        return doc

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self, ref: ContainerRef) -> None:
        current = await self.get(ref)
        if current.state is ContainerState.PAUSED:
            # "Start" on a paused container means "make it run": resume its frozen processes.
            await self._post(_container_path(ref.id, "unpause"), params={}, timeout=_READ_TIMEOUT)
            return
        if await self._post(_container_path(ref.id, "start"), params={}, timeout=60) == 304:
            raise AlreadyRunning(f"container {ref.id} is already running")

    async def stop(self, ref: ContainerRef, *, timeout: int) -> None:
        status = await self._post(
            _container_path(ref.id, "stop"), params={"t": timeout}, timeout=timeout + 30
        )
        if status == 304:
            raise AlreadyStopped(f"container {ref.id} is already stopped")

    async def restart(self, ref: ContainerRef, *, timeout: int) -> None:
        await self._post(_container_path(ref.id, "restart"), params={"t": timeout}, timeout=timeout + 60)

    # -- stats ----------------------------------------------------------------------------------

    async def stats(self, ref: ContainerRef) -> StatsSample:
        """One sample with a real CPU rate, in a fraction of a second after a container's first.

        ``one-shot`` (API 1.41) has no previous CPU reading, so the rate is taken against the
        gateway's own earlier sample of the container (see :class:`~runtimes.stats.CpuHistory`);
        the first call takes a second sample ``FIRST_SAMPLE_GAP`` or more after the first. The
        Engine's collector reads containers once a second and a one-shot sample waits for its next
        pass, so a sample younger than ``STATS_INTERVAL`` is answered again (the Engine has nothing
        newer), and one younger than ``STATS_STALE`` answers when the next pass is more than
        ``STATS_WAIT`` away. Concurrent calls for a container share one sampling. An older Engine
        ignores ``one-shot`` and takes two samples itself, a second apart, used as they are.
        """
        now = time.monotonic()
        recent = self._fresh.get(ref.id)
        if recent is not None and now - recent[0] < STATS_INTERVAL:
            return recent[1]
        sampling = self._sampling.get(ref.id)
        if sampling is None:
            sampling = asyncio.ensure_future(self._new_sample(ref))
            self._sampling[ref.id] = sampling
            sampling.add_done_callback(functools.partial(self._sampled, ref.id))
        if recent is not None and now - recent[0] < STATS_STALE:
            done, _ = await asyncio.wait({sampling}, timeout=STATS_WAIT)
            if not done:
                return recent[1]
        # Shielded: a caller that goes away does not cancel a sampling others may share.
        return await asyncio.shield(sampling)

    def _sampled(self, key: str, sampling: asyncio.Future[StatsSample]) -> None:
        if self._sampling.get(key) is sampling:
            del self._sampling[key]
        if not sampling.cancelled():
            sampling.exception()  # its callers have it; nobody else must be told it went unread

    async def _new_sample(self, ref: ContainerRef) -> StatsSample:
        doc = await self._sample(ref)
        taken = time.monotonic()
        if not (doc.get("precpu_stats") or {}).get("system_cpu_usage"):
            cid = str(doc.get("id") or ref.id)
            earlier = self._cpu.earlier(cid, taken)
            if earlier is None and doc.get("cpu_stats", {}).get("system_cpu_usage"):
                self._cpu.record(cid, taken, doc["cpu_stats"])
                await asyncio.sleep(FIRST_SAMPLE_GAP)
                doc = await self._sample(ref)
                taken = time.monotonic()
                earlier = self._cpu.earlier(cid, taken)
            self._cpu.record(cid, taken, doc.get("cpu_stats") or {})
            doc = {**doc, "precpu_stats": earlier or {}}
        # The daemon's CPU count only for a container that reports none of its own (never ran).
        cpu = doc.get("cpu_stats") or {}
        own = cpu.get("online_cpus") or (cpu.get("cpu_usage") or {}).get("percpu_usage")
        cpus = 1 if own else await self._cpus()
        sample = sample_from_docker(short_id(doc.get("id") or ref.id), doc, int(time.time()), cpus=cpus)
        if len(self._fresh) >= _FRESH_KEEP:
            self._fresh = {k: v for k, v in self._fresh.items() if taken - v[0] < STATS_STALE}
        self._fresh[ref.id] = (taken, sample)
        return sample

    async def _sample(self, ref: ContainerRef) -> dict[str, Any]:
        doc: dict[str, Any] = await self._json(
            _container_path(ref.id, "stats"), params={"stream": "false", "one-shot": "true"}
        )
        return doc

    async def _cpus(self) -> int:
        """The daemon's CPU count: what a container without a CPU reading of its own may use."""
        return int((await self._daemon_info()).get("NCPU") or 1)

    # -- export ---------------------------------------------------------------------------------

    async def export_source(self, ref: ContainerRef) -> ExportSource:
        doc = await self._inspect_raw(ref)
        image = await self._image(str(doc.get("Image", "")))
        return ExportSource(
            self.name, str(doc["Id"]), container_name(doc), doc, image, await self._default_log_driver()
        )

    def compose_services(
        self, source: ExportSource, *, include_volumes: bool, include_networks: bool
    ) -> list[ServiceDraft]:
        return [
            docker_service(
                source.container,
                source.image,
                source.log_driver,
                include_volumes=include_volumes,
                include_networks=include_networks,
            )
        ]

    async def _image(self, image_id: str) -> dict[str, Any]:
        """The image's inspect document. An id names immutable content, so a cached document never
        goes stale; concurrent exports of containers of one image share one request."""
        pending = self._images.get(image_id)
        if pending is None:
            pending = asyncio.ensure_future(self._fetch_image(image_id))
            if len(self._images) >= _IMAGE_CACHE:
                self._images.pop(next(iter(self._images)))
            self._images[image_id] = pending
        if pending.done() and not pending.cancelled() and pending.exception() is None:
            return pending.result()
        try:
            return await asyncio.shield(pending)
        except RuntimeFailure:
            if self._images.get(image_id) is pending:
                del self._images[image_id]  # a failure is not kept: the next export asks again
            raise

    async def _fetch_image(self, image_id: str) -> dict[str, Any]:
        try:
            doc: dict[str, Any] = await self._json(f"images/{segment(image_id)}/json")
        except NotFound:
            doc = {}  # the image was removed since the container was made: compare with nothing
        return doc

    async def _default_log_driver(self) -> str:
        return str((await self._daemon_info()).get("LoggingDriver", ""))

    async def _daemon_info(self) -> dict[str, Any]:
        """The daemon's ``info``, asked at most once a minute (and once at a time)."""
        known = self._info
        if known is not None and time.monotonic() - known[0] < _INFO_SECONDS:
            return known[1]
        async with self._info_lock:
            now = time.monotonic()
            if self._info is None or now - self._info[0] >= _INFO_SECONDS:
                self._info = (now, await self._json("info"))
            return self._info[1]

    # -- streams --------------------------------------------------------------------------------

    async def events(self, *, since: int | None = None) -> AsyncIterator[RuntimeEvent]:
        # Only state changes and healthcheck verdicts: not the exec_* events every healthcheck makes.
        wanted = {"type": ["container"], "event": [*_EVENT_STATES, *_EVENT_REFRESH, "health_status"]}
        params = {"filters": json.dumps(wanted)}
        if since is not None:
            params["since"] = str(since)
        try:
            async with aiodocker_compat.query(
                self._docker,
                "events",
                params=params,
                timeout=aiohttp.ClientTimeout(total=None, sock_read=None),
            ) as response:
                async for line in response.content:
                    event = self._event_from_line(line)
                    if event is not None:
                        yield event
        except (TimeoutError, aiodocker.DockerError, aiohttp.ClientError, OSError) as exc:
            self._raise(exc, "GET events")

    def _event_from_line(self, line: bytes) -> RuntimeEvent | None:
        try:
            raw = json.loads(line)
        except ValueError:
            return None
        action = str(raw.get("Action") or raw.get("status") or "")
        health = None
        state: ContainerState | None
        if action.startswith("health_status:"):
            # "health_status: healthy" — a healthcheck result of a running container.
            health = action.partition(":")[2].strip()
            action, state = "health_status", ContainerState.RUNNING
        elif action in _EVENT_STATES:
            state = _EVENT_STATES[action]
        elif action in _EVENT_REFRESH:
            state = None
        else:
            return None
        actor = raw.get("Actor") or {}
        attributes = actor.get("Attributes") or {}
        full_id = str(actor.get("ID") or raw.get("id") or "")
        return RuntimeEvent(
            container_id=short_id(full_id),
            name=str(attributes.get("name", "")),
            action=action,
            state=state,
            labels={k: v for k, v in attributes.items() if k not in _EVENT_NON_LABELS},
            runtime=self.name,
            namespace="",
            timestamp=int(raw.get("time", 0)),
            health=health,
            time_nano=int(raw.get("timeNano", 0)),
        )

    async def logs(
        self,
        ref: ContainerRef,
        *,
        follow: bool,
        tail: int | None,
        timestamps: bool,
        since: int | None = None,
    ) -> AsyncIterator[LogChunk]:
        doc = await self._inspect_raw(ref)
        tty = bool((doc.get("Config") or {}).get("Tty"))
        params: dict[str, Any] = {
            "stdout": "1",
            "stderr": "1",
            "follow": "1" if follow else "0",
            "tail": "all" if tail is None else str(tail),
            "timestamps": "1" if timestamps else "0",
        }
        if since is not None:
            params["since"] = str(since)
        try:
            async with aiodocker_compat.query(
                self._docker,
                _container_path(ref.id, "logs"),
                params=params,
                timeout=aiohttp.ClientTimeout(total=None, sock_read=None),
            ) as response:
                if tty:
                    # A TTY container's output is one raw stream with no frame headers.
                    async for data in response.content.iter_any():
                        yield LogChunk("stdout", data)
                    return
                async for chunk in _demultiplex(response.content):
                    yield chunk
        except (TimeoutError, aiodocker.DockerError, aiohttp.ClientError, OSError) as exc:
            self._raise(exc, f"GET containers/{ref.id}/logs")


async def _demultiplex(content: aiohttp.StreamReader) -> AsyncIterator[LogChunk]:
    """Split the Engine's multiplexed log format: 8-byte headers (stream, length), then data.

    Frames are parsed out of whatever the socket delivered, and consecutive frames of one stream
    are handed on as one chunk: a coroutine step per frame would cost more than the parsing.
    """
    buf = bytearray()
    skipping = 0  # bytes still to drop of a frame that is over the size limit
    skipping_stream = "stdout"
    skipped_total = 0
    async for data in content.iter_any():
        buf += data
        offset = 0
        size = len(buf)
        if skipping:
            dropped = min(skipping, size)
            skipping -= dropped
            offset = dropped
            if not skipping:
                yield LogChunk(skipping_stream, b"", skipped=skipped_total)
        run_stream: str | None = None
        parts: list[bytes] = []
        while not skipping and size - offset >= _LOG_HEADER.size:
            stream_type, length = _LOG_HEADER.unpack_from(buf, offset)
            stream = _LOG_STREAMS.get(stream_type, "stdout")
            if length > MAX_LOG_FRAME:
                log.warning("skipping a %d-byte log frame (limit %d)", length, MAX_LOG_FRAME)
                if parts:
                    yield LogChunk(run_stream or stream, b"".join(parts))
                    parts = []
                skipping, skipping_stream, skipped_total = length, stream, length
                offset += _LOG_HEADER.size
                dropped = min(skipping, size - offset)
                skipping -= dropped
                offset += dropped
                if not skipping:
                    yield LogChunk(stream, b"", skipped=length)
                continue
            end = offset + _LOG_HEADER.size + length
            if end > size:
                break
            if stream != run_stream and parts:
                yield LogChunk(run_stream or stream, b"".join(parts))
                parts = []
            run_stream = stream
            parts.append(bytes(buf[offset + _LOG_HEADER.size : end]))
            offset = end
        if parts:
            yield LogChunk(run_stream or "stdout", b"".join(parts))
        del buf[:offset]
    if len(buf) > _LOG_HEADER.size:
        # The stream ended inside a frame: hand on what arrived of it.
        stream_type, _ = _LOG_HEADER.unpack_from(buf, 0)
        yield LogChunk(_LOG_STREAMS.get(stream_type, "stdout"), bytes(buf[_LOG_HEADER.size :]))
