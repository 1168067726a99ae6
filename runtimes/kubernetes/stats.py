"""Usage of pods from the metrics API (metrics.k8s.io), against their limits or their node's size."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from .. import kubeobjects as ko
from ..base import ContainerRef, StatsSample
from ..errors import Conflict, Forbidden, NotFound, OperationFailed, Unavailable
from .client import ApiSession
from .paths import ManagedNamespaces, name_segment, namespace_segment
from .queries import Queries

log = logging.getLogger(__name__)

_NODE_CACHE_SECONDS = 60.0


class PodStats:
    """Stats samples of pods and workload entries, with nodes' allocatable resources kept a while."""

    def __init__(self, session: ApiSession, namespaces: ManagedNamespaces, queries: Queries) -> None:
        self._session = session
        self._namespaces = namespaces
        self._queries = queries
        self._nodes: dict[str, tuple[float, dict[str, Any]]] = {}

    async def sample(self, ref: ContainerRef) -> StatsSample:
        """A pod's usage; a workload entry's is the sum over its running pods (limits summed too)."""
        namespace = self._namespaces.of(ref)
        if ko.WORKLOAD_ID.fullmatch(ref.id):
            pods = await self._queries.running_pods(namespace, ref.id)
            if not pods:
                raise Conflict(
                    f"{ref.id} has no running pod", detail=f"{ref.id} has no running pod to measure"
                )
        else:
            pods = [await self._queries.pod(ref)]
        usages: list[tuple[float, float]] = []
        for result in await asyncio.gather(
            *(self._usage(namespace, p) for p in pods), return_exceptions=True
        ):
            if isinstance(result, BaseException):  # raised once every call has ended: none leaks
                raise result
            usages.append(result)
        cores = sum(cpu for cpu, _ in usages)
        memory = int(sum(used for _, used in usages))
        # A pod without limits may use its node: each such node's allocatable counts once.
        cpu_limit = memory_limit = 0.0
        unlimited: dict[str, tuple[bool, bool]] = {}
        for pod in pods:
            containers = (pod.get("spec") or {}).get("containers") or []
            cpu, mem = _limit_sum(containers, "cpu"), _limit_sum(containers, "memory")
            cpu_limit += cpu or 0.0
            memory_limit += mem or 0.0
            if cpu is None or mem is None:
                node = str((pod.get("spec") or {}).get("nodeName", ""))
                seen = unlimited.get(node, (False, False))
                unlimited[node] = (seen[0] or cpu is None, seen[1] or mem is None)
        for node, (no_cpu, no_memory) in unlimited.items():
            allocatable = await self._allocatable(node)
            cpu_limit += ko.parse_quantity(allocatable.get("cpu", 0)) if no_cpu else 0.0
            memory_limit += ko.parse_quantity(allocatable.get("memory", 0)) if no_memory else 0.0
        limit = int(memory_limit)
        return StatsSample(
            container_id=ref.id,
            cpu_percent=round(cores * 100, 2),
            cores_used=round(cores, 4),
            total_cores=round(cpu_limit, 3),
            memory_percent=round(memory / limit * 100, 2) if limit > 0 else 0.0,
            memory_used=memory,
            memory_limit=limit,
            memory_available=max(limit - memory, 0),
            # The metrics API has no network counters.
            network_rx=0,
            network_tx=0,
            timestamp=int(time.time()),
        )

    async def _usage(self, namespace: str, pod: Mapping[str, Any]) -> tuple[float, float]:
        """(cores, memory bytes) the metrics API reports for one pod."""
        name = str((pod.get("metadata") or {}).get("name", ""))
        scope = namespace_segment(namespace)
        path = f"/apis/metrics.k8s.io/v1beta1/namespaces/{scope}/pods/{name_segment(name)}"
        try:
            metrics = await self._session.json("GET", path)
        except NotFound as exc:
            # The apiserver answers a plain "404 page not found" for an API group it does not serve.
            served = "page not found" not in str(exc)
            raise OperationFailed(
                f"no pod metrics for {namespace}/{name}: {exc}",
                detail="The metrics API (metrics.k8s.io) has no metrics for this pod yet"
                if served
                else "The metrics API (metrics.k8s.io) is not served by this cluster: install metrics-server",
            ) from exc
        except Unavailable as exc:
            raise OperationFailed(
                f"metrics API unavailable: {exc}", detail="The metrics API (metrics.k8s.io) is not available"
            ) from exc
        containers = metrics.get("containers") or ()
        cores = sum(ko.parse_quantity((c.get("usage") or {}).get("cpu", 0)) for c in containers)
        memory = sum(ko.parse_quantity((c.get("usage") or {}).get("memory", 0)) for c in containers)
        return cores, memory

    async def _allocatable(self, node: str) -> dict[str, Any]:
        """The node's allocatable resources, kept a minute (they change only with the node)."""
        if not node:
            return {}
        cached = self._nodes.get(node)
        if cached is not None and time.monotonic() - cached[0] < _NODE_CACHE_SECONDS:
            return cached[1]
        try:
            doc = await self._session.json("GET", f"/api/v1/nodes/{name_segment(node)}")
        except NotFound:
            return {}
        except Forbidden as exc:
            # Nodes are cluster-scoped: a gateway bound per namespace may not read them. Said (and
            # asked again) once a minute, not on every sample.
            log.warning(
                "node %s unreadable, so its pods without limits count 0 cores and 0 memory: %s",
                node,
                exc.detail,
            )
            self._nodes[node] = (time.monotonic(), {})
            return {}
        allocatable = dict((doc.get("status") or {}).get("allocatable") or {})
        self._nodes[node] = (time.monotonic(), allocatable)
        return allocatable


def _limit_sum(containers: Sequence[Mapping[str, Any]], resource: str) -> float | None:
    """The sum of the containers' limits of ``resource``, None unless every container has one."""
    total = 0.0
    for c in containers:
        value = ((c.get("resources") or {}).get("limits") or {}).get(resource)
        if value is None:
            return None
        total += ko.parse_quantity(value)
    return total if containers else None
