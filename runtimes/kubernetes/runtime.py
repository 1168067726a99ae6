"""The Kubernetes backend behind the runtime Protocol: each method hands its work to one concern."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from .. import kubeobjects as ko
from ..base import (
    Action,
    ContainerRef,
    ContainerSummary,
    ExportSource,
    LogChunk,
    RemoveOutcome,
    RuntimeEvent,
    RuntimeInfo,
    StatsSample,
)
from ..compose import ServiceDraft
from ..engine.system import SystemInfo, SystemStats
from ..errors import RuntimeFailure
from .client import ApiSession, ConfigurationSource
from .compose import pod_services
from .lifecycle import Lifecycle
from .logs import stream_logs
from .paths import ManagedNamespaces
from .queries import Queries
from .readiness import ping
from .scaling import WorkloadScaler
from .stats import PodStats
from .stops import StopLedger
from .system import ClusterSystem
from .watch import PodWatches


class KubernetesRuntime:
    """Pods of the namespaces in ``namespaces`` (empty: all), through one kube-apiserver."""

    namespaced = True

    def __init__(
        self,
        configuration: ConfigurationSource,
        *,
        namespaces: Sequence[str] = (),
        ready_timeout: float = 120.0,
        request_timeout: float = 5.0,
        watch_timeout: float = 30.0,
        name: str = "kubernetes",
    ) -> None:
        self._name = name
        self._session = ApiSession(
            configuration, request_timeout=request_timeout, ready_timeout=ready_timeout
        )
        self._namespaces = ManagedNamespaces(namespaces)
        ledger = StopLedger()
        self._queries = Queries(self._session, self._namespaces, ledger)
        scaler = WorkloadScaler(self._session, self._queries, ledger)
        self._lifecycle = Lifecycle(self._session, self._namespaces, self._queries, scaler)
        self._stats = PodStats(self._session, self._namespaces, self._queries)
        self._system = ClusterSystem(self._session, self._namespaces, self._queries, name)
        self._watches = PodWatches(self._session, self._namespaces, runtime=name, watch_timeout=watch_timeout)

    @property
    def name(self) -> str:
        return self._name

    def accepts_id(self, value: object) -> bool:
        return ko.is_object_id(value)

    def refusal(self, container: ContainerSummary, action: Action, *, force: bool) -> RuntimeFailure | None:
        return ko.refusal(container, action, force=force)

    async def close(self) -> None:
        await self._session.close()

    async def ping(self) -> RuntimeInfo:
        """The readiness probe; a failure also closes the gate other calls pass (see :mod:`.readiness`)."""
        return await ping(self._session, self._watches.trouble, self.name)

    async def list_containers(self, *, namespace: str | None = None) -> list[ContainerSummary]:
        return await self._queries.list_containers(namespace)

    async def get(self, ref: ContainerRef) -> ContainerSummary:
        return await self._queries.get(ref)

    async def inspect(self, ref: ContainerRef) -> dict[str, Any]:
        return await self._queries.inspect(ref)

    async def start(self, ref: ContainerRef) -> None:
        await self._lifecycle.start(ref)

    async def stop(self, ref: ContainerRef, *, timeout: int) -> None:
        await self._lifecycle.stop(ref, timeout=timeout)

    async def restart(self, ref: ContainerRef, *, timeout: int) -> None:
        await self._lifecycle.restart(ref, timeout=timeout)

    async def stats(self, ref: ContainerRef) -> StatsSample:
        return await self._stats.sample(ref)

    async def export_source(self, ref: ContainerRef) -> ExportSource:
        summary, obj = await self._queries.resolve(ref)
        if not ko.WORKLOAD_ID.fullmatch(ref.id):
            uid = str((obj.get("metadata") or {}).get("uid") or ref.id)
            return ExportSource(self.name, uid, summary.name, obj)
        # A workload entry (stopped, so without pods): its pod template stands for the pod.
        template = (obj.get("spec") or {}).get("template") or {}
        meta = {**(template.get("metadata") or {}), "name": summary.name, "namespace": summary.namespace}
        return ExportSource(
            self.name,
            ref.id,
            summary.name,
            {"kind": "Pod", "metadata": meta, "spec": template.get("spec") or {}},
        )

    def compose_services(
        self, source: ExportSource, *, include_volumes: bool, include_networks: bool
    ) -> list[ServiceDraft]:
        """A pod's volumes and networks have no compose form (the drafts say so), whatever the flags."""
        return pod_services(source.container)

    def events(self, *, since: int | None = None) -> AsyncIterator[RuntimeEvent]:
        """Pod changes (see :mod:`.watch`). ``since`` is not needed: each (re)list covers it."""
        return self._watches.events()

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
        return stream_logs(
            self._session,
            self._namespaces,
            self._queries,
            ref,
            follow=follow,
            tail=tail,
            timestamps=timestamps,
            since=since,
            until=until,
        )

    # Pause, unpause and removal of one pod.
    async def pause(self, ref: ContainerRef) -> None:
        raise ko.no_pause("pause")

    async def unpause(self, ref: ContainerRef) -> None:
        raise ko.no_pause("unpause")

    def removal_refusal(self, container: ContainerSummary, *, force: bool) -> RuntimeFailure | None:
        return ko.removal_refusal(container, force=force)

    async def remove(self, ref: ContainerRef, *, force: bool, volumes: bool) -> RemoveOutcome | None:
        """Deletes the pod: ``force`` was the gateway's check to make, and a pod's own volumes go
        with it anyway (claims are never deleted)."""
        return await self._lifecycle.remove(ref)

    # The host (runtimes.engine.system.SystemSource)
    async def system_info(self) -> SystemInfo:
        return await self._system.info()

    async def system_stats(self) -> SystemStats:
        return await self._system.stats()
