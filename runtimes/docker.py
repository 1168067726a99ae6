"""The Docker backend: the Engine API over its socket, through aiodocker.

Every aiodocker error is translated into :mod:`runtimes.errors` here and nowhere else. aiodocker
reports a socket it cannot reach as status 900; that is :class:`Unavailable`, as is a timeout.
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct
import time
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from typing import Any, NoReturn
from urllib.parse import urlsplit, urlunsplit

import aiodocker
import aiohttp

from .base import (
    ContainerRef,
    ContainerState,
    ContainerSummary,
    ExportSource,
    LogChunk,
    PortMapping,
    RuntimeEvent,
    RuntimeInfo,
    StatsSample,
)
from .errors import AlreadyInState, Conflict, NotFound, OperationFailed, RuntimeFailure, Unavailable
from .redact import mask_env_list
from .stats import sample_from_docker

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
_EVENT_NON_LABELS = frozenset({"image", "name", "exitCode", "signal", "execDuration"})

_LOG_HEADER = struct.Struct(">BxxxL")
_LOG_STREAMS = {0: "stdout", 1: "stdout", 2: "stderr"}
MAX_LOG_FRAME = 1 << 20  # frames above 1 MiB are skipped rather than buffered
_READ_TIMEOUT = 30.0
_IMAGE_CACHE = 256  # image documents kept by id (an id names immutable content)
_INFO_SECONDS = 60.0  # how long the daemon's default logging driver is taken as known


def map_state(docker_state: str) -> ContainerState:
    return _STATES.get(docker_state.lower(), ContainerState.STOPPED)


def short_id(full_id: str) -> str:
    return full_id[:12]


def parse_timestamp(value: str) -> int:
    """Unix seconds of an Engine RFC 3339 time (nanosecond fractions and a zone suffix allowed)."""
    if not value or value.startswith("0001-"):
        return 0
    try:
        moment = datetime.strptime(value[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    except ValueError:
        return 0
    return int(moment.timestamp())


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


def _status_from_inspect(state: Mapping[str, Any]) -> str:
    status = str(state.get("Status", ""))
    if status == "exited":
        return f"Exited ({state.get('ExitCode', 0)})"
    return status.capitalize()


def without_userinfo(address: str) -> str:
    """``ssh://user@host`` as ``ssh://host``: a login name is nobody's business but the operator's."""
    parts = urlsplit(address)
    if parts.netloc and "@" in parts.netloc:
        return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    return address


class DockerRuntime:
    """A Docker Engine reached at ``host`` (``unix://…`` or ``tcp://…``)."""

    def __init__(self, host: str, *, name: str = "docker") -> None:
        self._name = name
        self.host = host
        self._docker = aiodocker.Docker(
            url=host,
            timeout=aiohttp.ClientTimeout(total=None, connect=5, sock_connect=5),
        )
        self._images: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._log_driver: tuple[float, str] | None = None
        self._info_lock = asyncio.Lock()
        # What a client is told when the Engine does not answer: the address tried (without any
        # user name in it) and the settings that change it.
        self._unreachable = (
            f"the Docker Engine at {without_userinfo(host)} does not answer "
            "(set DOCKER_HOST or runtimes.docker.host to use another)"
        )

    @property
    def name(self) -> str:
        return self._name

    async def close(self) -> None:
        for pending in self._images.values():
            pending.cancel()
        await asyncio.gather(*self._images.values(), return_exceptions=True)
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
            return await self._docker._query_json(
                path,
                method,
                params=dict(params or {}),
                timeout=aiohttp.ClientTimeout(total=timeout),
                versioned_api=versioned,
            )
        except (TimeoutError, aiodocker.DockerError, aiohttp.ClientError, OSError) as exc:
            self._raise(exc, f"{method} {path}")

    async def _post(self, path: str, *, params: Mapping[str, Any], timeout: float) -> int:
        """POST without a body; answer the HTTP status (204, or 304 when nothing changed)."""
        try:
            async with self._docker._query(
                path,
                "POST",
                params=dict(params),
                timeout=aiohttp.ClientTimeout(total=timeout),
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
        doc: dict[str, Any] = await self._json(f"containers/{ref.id}/json")
        return doc

    async def get(self, ref: ContainerRef) -> ContainerSummary:
        doc = await self._inspect_raw(ref)
        config = doc.get("Config") or {}
        state = doc.get("State") or {}
        return ContainerSummary(
            id=short_id(doc["Id"]),
            full_id=doc["Id"],
            name=str(doc.get("Name", "")).lstrip("/"),
            image=config.get("Image", ""),
            state=map_state(state.get("Status", "")),
            status=_status_from_inspect(state),
            created=parse_timestamp(doc.get("Created", "")),
            ports=_ports_from_inspect((doc.get("NetworkSettings") or {}).get("Ports")),
            labels=config.get("Labels") or {},
            runtime=self.name,
            health=(state.get("Health") or {}).get("Status") or None,
        )

    async def inspect(self, ref: ContainerRef, *, reveal_secrets: bool = False) -> dict[str, Any]:
        doc = await self._inspect_raw(ref)
        config = doc.get("Config")
        if not reveal_secrets and isinstance(config, dict) and config.get("Env"):
            config["Env"] = mask_env_list(config["Env"])
        return doc

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self, ref: ContainerRef) -> None:
        current = await self.get(ref)
        if current.state is ContainerState.PAUSED:
            # "Start" on a paused container means "make it run": resume its frozen processes.
            await self._post(f"containers/{ref.id}/unpause", params={}, timeout=_READ_TIMEOUT)
            return
        if await self._post(f"containers/{ref.id}/start", params={}, timeout=60) == 304:
            raise AlreadyInState(f"container {ref.id} is already running")

    async def stop(self, ref: ContainerRef, *, timeout: int) -> None:
        status = await self._post(f"containers/{ref.id}/stop", params={"t": timeout}, timeout=timeout + 30)
        if status == 304:
            raise AlreadyInState(f"container {ref.id} is already stopped")

    async def restart(self, ref: ContainerRef, *, timeout: int) -> None:
        await self._post(f"containers/{ref.id}/restart", params={"t": timeout}, timeout=timeout + 60)

    # -- stats ----------------------------------------------------------------------------------

    async def stats(self, ref: ContainerRef) -> StatsSample:
        # stream=false makes the Engine take two samples a second apart, so precpu_stats is
        # filled and CPU % is a real rate rather than a lifetime average.
        doc = await self._json(f"containers/{ref.id}/stats", params={"stream": "false"})
        return sample_from_docker(short_id(doc.get("id") or ref.id), doc, int(time.time()))

    # -- export ---------------------------------------------------------------------------------

    async def export_source(self, ref: ContainerRef) -> ExportSource:
        doc = await self._inspect_raw(ref)
        image = await self._image(str(doc.get("Image", "")))
        return ExportSource(self.name, "docker", doc, image, await self._default_log_driver())

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
            doc: dict[str, Any] = await self._json(f"images/{image_id}/json")
        except NotFound:
            doc = {}  # the image was removed since the container was made: compare with nothing
        return doc

    async def _default_log_driver(self) -> str:
        """The daemon's default logging driver, asked at most once a minute (and once at a time)."""
        known = self._log_driver
        if known is not None and time.monotonic() - known[0] < _INFO_SECONDS:
            return known[1]
        async with self._info_lock:
            now = time.monotonic()
            if self._log_driver is None or now - self._log_driver[0] >= _INFO_SECONDS:
                info = await self._json("info")
                self._log_driver = (now, str(info.get("LoggingDriver", "")))
            return self._log_driver[1]

    # -- streams --------------------------------------------------------------------------------

    async def events(self, *, since: int | None = None) -> AsyncIterator[RuntimeEvent]:
        # Only state changes and healthcheck verdicts: not the exec_* events every healthcheck makes.
        wanted = {"type": ["container"], "event": [*_EVENT_STATES, "health_status"]}
        params = {"filters": json.dumps(wanted)}
        if since is not None:
            params["since"] = str(since)
        try:
            async with self._docker._query(
                "events", params=params, timeout=aiohttp.ClientTimeout(total=None, sock_read=None)
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
            async with self._docker._query(
                f"containers/{ref.id}/logs",
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
