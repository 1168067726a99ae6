"""The cluster as a host: its version, nodes and their capacity, pods by phase, and the nodes'
usage from the metrics API (metrics.k8s.io) where metrics-server answers.

Nodes are cluster-scoped: reading them needs ``list`` on ``nodes`` (a ClusterRole bound
cluster-wide), and RBAC's refusal is raised as Forbidden naming that permission. The metrics
API is optional: without it (or without the permission to read it) usage is None and
``metrics`` says "unavailable", while the totals still come from the nodes' capacity.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Mapping, Sequence
from typing import Any

from .. import kubeobjects as ko
from ..engine.system import ContainerCounts, CpuUsage, MemoryUsage, NodeCounts, SystemInfo, SystemStats
from ..errors import RuntimeFailure
from .client import ApiSession
from .paths import ManagedNamespaces
from .queries import Queries

log = logging.getLogger(__name__)

NODE_METRICS = "/apis/metrics.k8s.io/v1beta1/nodes"


class ClusterSystem:
    """The cluster behind one apiserver, seen from the namespaces the gateway manages."""

    def __init__(
        self, session: ApiSession, namespaces: ManagedNamespaces, queries: Queries, runtime: str
    ) -> None:
        self._session = session
        self._namespaces = namespaces
        self._queries = queries
        self._runtime = runtime

    async def info(self) -> SystemInfo:
        """The version, the nodes and the pods of the managed namespaces, read at the same time."""
        version, nodes, *pod_lists = await _all(
            self._session.json("GET", "/version"),
            self._nodes(),
            *(self._queries.list_scope("pods", scope) for scope in self._namespaces.scopes(None)),
        )
        assert isinstance(version, dict) and isinstance(nodes, list)
        pods = [pod for listing in pod_lists for pod in (listing.get("items") or ())]
        cpus, memory = _capacity(nodes)
        return SystemInfo(
            runtime=self._runtime,
            engine_version=str(version.get("gitVersion", "")),
            platform=str(version.get("platform", "")),
            nodes=NodeCounts(len(nodes), sum(1 for n in nodes if _ready(n))),
            cpus=cpus,
            memory_total=int(memory),
            containers=_pod_counts(pods),
        )

    async def stats(self) -> SystemStats:
        """The nodes' summed usage against their summed capacity."""
        nodes, usage = await _all(self._nodes(), self._usage())
        assert isinstance(nodes, list)
        cores, memory = _capacity(nodes)
        total = int(memory)
        if usage is None:
            cpu = CpuUsage(None, cores)
            mem = MemoryUsage(None, total, None)
        else:
            assert isinstance(usage, tuple)
            used_cores, used_memory = usage
            cpu = CpuUsage(round(used_cores / cores * 100, 1) if cores else None, cores)
            mem = MemoryUsage(int(used_memory), total, round(used_memory / total * 100, 1) if total else None)
        return SystemStats(
            runtime=self._runtime,
            cpu=cpu,
            memory=mem,
            load=None,
            disk=None,
            space=None,
            timestamp=int(time.time()),
            metrics="unavailable" if usage is None else "available",
        )

    async def _nodes(self) -> list[dict[str, Any]]:
        listing = await self._session.json("GET", "/api/v1/nodes")
        return [n for n in listing.get("items") or () if isinstance(n, dict)]

    async def _usage(self) -> tuple[float, float] | None:
        """(cores, memory bytes) in use on every node metrics-server measures; None without it."""
        try:
            listing = await self._session.json("GET", NODE_METRICS)
        except RuntimeFailure as exc:
            # Not served (no metrics-server), refused by RBAC, or its aggregated API is down.
            log.info("node metrics unavailable: %s", exc.detail or exc)
            return None
        items = [m for m in listing.get("items") or () if isinstance(m, dict)]
        cores = sum(ko.parse_quantity((m.get("usage") or {}).get("cpu", 0)) for m in items)
        memory = sum(ko.parse_quantity((m.get("usage") or {}).get("memory", 0)) for m in items)
        return cores, memory


async def _all(*calls: Awaitable[Any]) -> list[Any]:
    """Every call's answer; the first failure is raised once every call has ended (none leaks)."""
    results = await asyncio.gather(*calls, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results


def _capacity(nodes: Sequence[Mapping[str, Any]]) -> tuple[float, float]:
    """The nodes' summed CPU capacity (cores) and memory capacity (bytes)."""
    capacities = [(n.get("status") or {}).get("capacity") or {} for n in nodes]
    cores = sum(ko.parse_quantity(c.get("cpu", 0)) for c in capacities)
    memory = sum(ko.parse_quantity(c.get("memory", 0)) for c in capacities)
    return round(cores, 3), memory


def _ready(node: Mapping[str, Any]) -> bool:
    conditions = (node.get("status") or {}).get("conditions") or ()
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _pod_counts(pods: Sequence[Mapping[str, Any]]) -> ContainerCounts:
    """Pods by phase: Running, Pending, Failed; Succeeded and Unknown count as stopped."""
    phases = [str((p.get("status") or {}).get("phase", "")) for p in pods]
    running, pending, failed = (phases.count(name) for name in ("Running", "Pending", "Failed"))
    return ContainerCounts(
        total=len(phases),
        running=running,
        paused=0,
        stopped=len(phases) - running - pending - failed,
        pending=pending,
        failed=failed,
    )
