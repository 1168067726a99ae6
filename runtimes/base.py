"""What every container runtime provides: one Protocol and the plain values it returns.

The gateway talks to Docker and Kubernetes through :class:`ContainerRuntime` only. Values are
frozen dataclasses so they can be shared between tasks without copying.
"""

from __future__ import annotations

import enum
import socket
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from .compose import ServiceDraft
from .errors import (
    AlreadyPaused,
    AlreadyRunning,
    AlreadyStopped,
    NotPaused,
    NotRunning,
    RuntimeFailure,
    StillRunning,
)

Action = Literal["start", "stop", "restart", "pause", "unpause"]
ACTIONS: tuple[Action, ...] = ("start", "stop", "restart", "pause", "unpause")


class ContainerState(enum.StrEnum):
    """The contract's container states (Container API Reference, "Container States")."""

    RUNNING = "running"
    STOPPED = "stopped"
    PAUSED = "paused"
    RESTARTING = "restarting"
    PENDING = "pending"
    FAILED = "failed"
    CREATED = "created"
    EXITED = "exited"

    @property
    def is_running(self) -> bool:
        """A container in this state has live processes (a paused one still holds them)."""
        return self in (ContainerState.RUNNING, ContainerState.PAUSED, ContainerState.RESTARTING)

    @property
    def is_started(self) -> bool:
        """A start has nothing to do: the container runs, or is coming back by itself. A paused
        one is not started: a start resumes it."""
        return self in (ContainerState.RUNNING, ContainerState.RESTARTING)


@dataclass(frozen=True, slots=True)
class ContainerRef:
    """How a client addresses a container: an id or name, and a namespace for pods.

    ``container`` picks one container of a multi-container pod (logs); empty means the first.
    """

    id: str
    namespace: str = ""
    container: str = ""


@dataclass(frozen=True, slots=True)
class PortMapping:
    ip: str
    private_port: int
    public_port: int | None
    type: str


@dataclass(frozen=True, slots=True)
class ContainerSummary:
    """One container as the list endpoint shows it; ``id`` is the short form clients use."""

    id: str
    full_id: str
    name: str
    image: str
    state: ContainerState
    status: str
    created: int
    ports: tuple[PortMapping, ...]
    labels: Mapping[str, str]
    runtime: str
    namespace: str = ""
    annotations: Mapping[str, str] = field(default_factory=dict)
    # The healthcheck's verdict ("healthy", "unhealthy", "starting"), None without a healthcheck.
    health: str | None = None
    # Pods only: the workload that owns the pod ("deployment/web"), "" for a standalone pod that
    # nothing would recreate. None for runtimes without controllers (Docker).
    controller: str | None = None


@dataclass(frozen=True, slots=True)
class StatsSample:
    """Resource usage of one container at one moment, already reduced to the contract's figures."""

    container_id: str
    cpu_percent: float
    cores_used: float
    total_cores: float
    memory_percent: float
    memory_used: int
    memory_limit: int
    memory_available: int
    network_rx: int
    network_tx: int
    timestamp: int


@dataclass(frozen=True, slots=True)
class RuntimeEvent:
    """A state change reported by the runtime itself (also for changes made outside the gateway)."""

    container_id: str
    name: str
    action: str
    # None: the container was removed, or (actions "rename" and "oom") its state did not change.
    state: ContainerState | None
    labels: Mapping[str, str]
    runtime: str
    namespace: str
    timestamp: int
    # "healthy" / "unhealthy" when the event reports a healthcheck result.
    health: str | None = None
    # Nanoseconds since the epoch, for resuming the stream exactly where it stopped.
    time_nano: int = 0
    annotations: Mapping[str, str] = field(default_factory=dict)
    # The exit code of a container that exited (Docker's "die"), when the runtime tells it.
    exit_code: int | None = None


@dataclass(frozen=True, slots=True)
class LogChunk:
    """Raw log bytes from one output stream; lines may span chunks (the consumer splits them).

    ``skipped`` > 0 marks a frame of that many bytes that was too large and was left out.
    """

    stream: str
    data: bytes
    skipped: int = 0


@dataclass(frozen=True, slots=True)
class RawLog:
    """A finished log's bytes as the runtime sends them, undecoded: ``multiplexed`` in the frames
    that :class:`runtimes.logframes.FrameDecoder` decodes, else one stream of stdout text.
    ``head`` is what was read already; the rest arrives on ``source``, a connected socket, up to
    its end. The reader owns ``source``: closing it ends the runtime's stream."""

    multiplexed: bool
    head: bytes
    source: socket.socket


@runtime_checkable
class RawLogSource(Protocol):
    """A runtime whose log can be handed on undecoded, on a socket of its own, so that a reader
    may read and decode it in another process: the log search does the work of a whole log in a
    helper process, where neither the kernel's nor Python's share of reading a million small
    frames delays the event loop. Optional; a reader falls back to :meth:`ContainerRuntime.logs`
    for a runtime without it, or when it raises :class:`~runtimes.errors.Unsupported`."""

    async def raw_logs(
        self,
        ref: ContainerRef,
        *,
        tail: int | None,
        timestamps: bool,
        since: int | None = None,
        until: int | None = None,
    ) -> RawLog:
        """The finished log (no follow) that :meth:`ContainerRuntime.logs` would decode, once the
        runtime has answered; its errors are the runtime's own."""
        ...


@runtime_checkable
class StatsStream(Protocol):
    """A runtime that streams a container's stats itself (the Engine's ``stream=true``): one long
    request yields a sample a second, far cheaper than a one-shot call a second. Optional; a
    runtime without it answers :meth:`ContainerRuntime.stats` only."""

    def stream_stats(self, ref: ContainerRef) -> AsyncIterator[StatsSample]:
        """The container's samples as the runtime takes them, each with a CPU rate over the time
        since the one before; ends when the container stops. Its errors are the runtime's own."""
        ...


@dataclass(frozen=True, slots=True)
class ExportSource:
    """What a compose export needs to know of one container, as its runtime keeps it (unmasked).

    ``id`` is the runtime's own identity of the container (Docker's full id, a pod's uid), so two
    ids that name one container are exported once; ``name`` names the files of a single export.
    ``container`` is the runtime's document of it (the Engine's inspect document, or the pod: for
    a stopped workload, its pod template as a pod); Docker adds its ``image``'s inspect document
    and the daemon's default ``log_driver``. Only the runtime that made it reads them.
    """

    runtime: str
    id: str
    name: str
    container: Mapping[str, Any]
    image: Mapping[str, Any] = field(default_factory=dict)
    log_driver: str = ""


@dataclass(frozen=True, slots=True)
class RemoveOutcome:
    """What a removal leaves behind: ``recreated_by`` names the controller that makes a replacement
    ("deployment/web"), so a client is not surprised to see the container come back."""

    recreated_by: str = ""


def state_refusal(container: ContainerSummary, action: Action) -> RuntimeFailure | None:
    """The refusal every runtime shares: a start of a started container, a stop of one with
    nothing running, a pause of anything but a running container, an unpause of anything but a
    paused one; a restart is always possible."""
    state = container.state
    if action == "start" and state.is_started:
        return AlreadyRunning(f"{container.id} is already running")
    if action == "stop" and not state.is_running:
        return AlreadyStopped(f"{container.id} is already stopped")
    if action == "pause" and state is ContainerState.PAUSED:
        return AlreadyPaused(f"{container.id} is already paused")
    if action == "pause" and state is not ContainerState.RUNNING:
        # A restarting container is between two runs: the Engine has nothing to freeze either.
        return NotRunning(
            f"{container.id} is {state.value}",
            detail=f"Container {container.name} is {state.value}: nothing runs that could be paused",
        )
    if action == "unpause" and state is not ContainerState.PAUSED:
        return NotPaused(f"{container.id} is {state.value}, not paused")
    return None


def removal_refusal(container: ContainerSummary, *, force: bool) -> RuntimeFailure | None:
    """The removal rule every runtime shares, as the Docker CLI has it: a container with live
    processes (running, paused, restarting) goes only when the client said ``force``."""
    if container.state.is_running and not force:
        return StillRunning(
            f"{container.id} is {container.state.value}",
            detail=(
                f"Container {container.name} is {container.state.value}: stop it first, "
                "or remove it with force=true"
            ),
        )
    return None


@dataclass(frozen=True, slots=True)
class RuntimeInfo:
    name: str
    version: str
    api_version: str


class ContainerRow(Protocol):
    """A container as a state model keeps it, to be shown later: ``at(now)`` is its summary as the
    runtime would list it at ``now`` (a status line such as "Up 5 minutes" depends on the time)."""

    @property
    def summary(self) -> ContainerSummary: ...

    def at(self, now: float) -> ContainerSummary: ...


@runtime_checkable
class RowSource(Protocol):
    """A runtime whose list the gateway may serve from a model its events keep current."""

    async def rows(
        self, ids: Sequence[str] | None = None, *, known: Mapping[str, ContainerRow] | None = None
    ) -> list[ContainerRow]:
        """Every container's row, or those of ``ids`` (an id that is gone has none); ``known`` are
        the rows a model already holds, which the runtime may reuse where nothing changed."""
        ...


@runtime_checkable
class ContainerRuntime(Protocol):
    """A container runtime backend (Docker, Kubernetes)."""

    @property
    def name(self) -> str: ...

    @property
    def namespaced(self) -> bool:
        """Whether containers live in namespaces: a request that names a namespace means this runtime."""
        ...

    def accepts_id(self, value: object) -> bool:
        """Whether ``value`` is an id or name this runtime could give a container (the one
        validation of an id a client sends, before it goes anywhere near the runtime)."""
        ...

    def refusal(self, container: ContainerSummary, action: Action, *, force: bool) -> RuntimeFailure | None:
        """The error an ``action`` on ``container`` is refused with before it is accepted, else None:
        the one rule for single, bulk and batch actions. ``force`` is the client's word that it
        means an action that cannot be undone."""
        ...

    async def ping(self) -> RuntimeInfo:
        """Answer the runtime's version, or raise :class:`~runtimes.errors.Unavailable`."""
        ...

    async def list_containers(self, *, namespace: str | None = None) -> list[ContainerSummary]:
        """Every container the runtime has, stopped ones included."""
        ...

    async def get(self, ref: ContainerRef) -> ContainerSummary:
        """One container's summary (one inspect): the pre-check before an action."""
        ...

    async def inspect(self, ref: ContainerRef) -> dict[str, Any]:
        """The detailed document the inspect endpoint returns."""
        ...

    async def start(self, ref: ContainerRef) -> None: ...

    async def stop(self, ref: ContainerRef, *, timeout: int) -> None: ...

    async def restart(self, ref: ContainerRef, *, timeout: int) -> None: ...

    async def pause(self, ref: ContainerRef) -> None:
        """Freeze the container's processes (their memory stays); an Unsupported where the
        runtime has no such thing."""
        ...

    async def unpause(self, ref: ContainerRef) -> None: ...

    def removal_refusal(self, container: ContainerSummary, *, force: bool) -> RuntimeFailure | None:
        """The error a removal of ``container`` is refused with before it is accepted, else None;
        ``force`` is the client's word that a running container may go."""
        ...

    async def remove(self, ref: ContainerRef, *, force: bool, volumes: bool) -> RemoveOutcome | None:
        """Delete the container (with ``volumes``, its anonymous volumes too); what it leaves
        behind, where something will bring it back."""
        ...

    async def stats(self, ref: ContainerRef) -> StatsSample: ...

    async def export_source(self, ref: ContainerRef) -> ExportSource:
        """The container's full configuration, secrets included, for a compose export."""
        ...

    def compose_services(
        self, source: ExportSource, *, include_volumes: bool, include_networks: bool
    ) -> list[ServiceDraft]:
        """``source`` (from this runtime's :meth:`export_source`) as compose services, one per
        container it runs; a :class:`~runtimes.errors.RuntimeFailure` if it has no compose form."""
        ...

    def events(self, *, since: int | None = None) -> AsyncIterator[RuntimeEvent]:
        """Container state changes as they happen (replayed from ``since``, Unix seconds, where
        the runtime keeps them); ends when the runtime's stream closes."""
        ...

    def logs(
        self,
        ref: ContainerRef,
        *,
        follow: bool,
        tail: int | None,
        timestamps: bool,
        since: int | None = None,
        until: int | None = None,
    ) -> AsyncIterator[LogChunk]:
        """The container's output, oldest first (the last ``tail`` lines, None for all, or all
        from ``since`` up to ``until``, both Unix seconds and inclusive, as the Engine counts them);
        with ``follow`` it ends when the container stops."""
        ...

    async def close(self) -> None: ...
