"""Reading pods and workloads: listings, one object, and which workload owns a pod.

Responses are reduced to summaries by :mod:`runtimes.kubeobjects`. A stopped workload has no pods,
so listings add the Deployments and StatefulSets that carry the stopped mark.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from .. import kubeobjects as ko
from ..base import ContainerRef, ContainerState, ContainerSummary
from ..errors import Conflict, NotFound
from .client import ApiSession
from .paths import ManagedNamespaces, collection_path, pod_path, workload_path
from .stops import StopLedger, clear_stale_mark


class Queries:
    """The read calls of the backend, on the session, within the managed namespaces."""

    def __init__(self, session: ApiSession, namespaces: ManagedNamespaces, ledger: StopLedger) -> None:
        self._session = session
        self._namespaces = namespaces
        self._ledger = ledger

    async def list_scope(self, kind_path: str, scope: str, selector: str | None = None) -> dict[str, Any]:
        """One listing of pods or an apps kind in a scope ("": all namespaces)."""
        return await self._session.json(
            "GET", collection_path(kind_path, scope), query={"labelSelector": selector}
        )

    async def list_containers(self, namespace: str | None) -> list[ContainerSummary]:
        scopes = self._namespaces.scopes(namespace)
        calls = [self.list_scope("pods", s) for s in scopes]
        calls += [
            self.list_scope(plural, s, f"{ko.STOPPED_LABEL}=true")
            for s in scopes
            for plural in ("deployments", "statefulsets")
        ]
        docs: list[dict[str, Any]] = []
        for result in await asyncio.gather(*calls, return_exceptions=True):
            if isinstance(result, BaseException):  # raised once every call has ended: none leaks
                raise result
            docs.append(result)
        pods = docs[: len(scopes)]
        workloads = docs[len(scopes) :]
        owners = replicaset_owners([p for doc in pods for p in doc.get("items") or ()])
        summaries = [
            ko.pod_summary(pod, controller_name(pod, owners))
            for doc in pods
            for pod in doc.get("items") or ()
        ]
        running: list[tuple[str, dict[str, Any]]] = []
        for i, doc in enumerate(workloads):
            kind = "deployment" if i % 2 == 0 else "statefulset"
            for w in doc.get("items") or ():
                if (w.get("spec") or {}).get("replicas"):
                    running.append((kind, w))  # scaled up again by hand: its pods are listed
                else:
                    summaries.append(ko.workload_summary(kind, w))
        if running:
            await asyncio.gather(
                *(clear_stale_mark(self._session, self._ledger, kind, w) for kind, w in running)
            )
        return summaries

    async def pod(self, ref: ContainerRef) -> dict[str, Any]:
        return await self._session.json("GET", pod_path(self._namespaces.of(ref), ref.id))

    async def workload(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        return await self._session.json("GET", workload_path(kind, namespace, name))

    async def pod_controller(self, pod: Mapping[str, Any]) -> str:
        """The workload that owns ``pod``, following a ReplicaSet up to its Deployment."""
        meta = pod.get("metadata") or {}
        owner = ko.controller_of(meta)
        if owner is None:
            return ""
        kind, name = owner
        if kind != "ReplicaSet":
            return f"{kind.lower()}/{name}"
        try:
            rs = await self.workload("replicaset", str(meta.get("namespace", "")), name)
        except NotFound:
            return f"replicaset/{name}"
        parent = ko.controller_of(rs.get("metadata") or {})
        if parent is not None and parent[0] == "Deployment":
            return f"deployment/{parent[1]}"
        return f"replicaset/{name}"

    async def resolve(self, ref: ContainerRef) -> tuple[ContainerSummary, dict[str, Any]]:
        """The summary and raw object of a pod name or a ``kind/name`` workload id."""
        namespace = self._namespaces.of(ref)
        match = ko.WORKLOAD_ID.fullmatch(ref.id)
        if match:
            kind, name = match.groups()
            obj = await self.workload(kind, namespace, name)
            return ko.workload_summary(kind, obj), obj
        pod = await self.pod(ref)
        return ko.pod_summary(pod, await self.pod_controller(pod)), pod

    async def get(self, ref: ContainerRef) -> ContainerSummary:
        return (await self.resolve(ref))[0]

    async def inspect(self, ref: ContainerRef) -> dict[str, Any]:
        summary, obj = await self.resolve(ref)
        return ko.details(summary, obj)

    async def pods_of(self, workload: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The pods a workload's selector matches."""
        meta = workload.get("metadata") or {}
        labels = ((workload.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        selector = ",".join(f"{k}={v}" for k, v in labels.items())
        listing = await self.list_scope("pods", str(meta.get("namespace", "")), selector)
        return list(listing.get("items") or ())

    async def running_pods(self, namespace: str, workload_id: str) -> list[dict[str, Any]]:
        """The running pods of a workload entry, ready ones first, then the oldest first (the pod
        ``kubectl logs deploy/web`` picks comes first); none while it replaces them all. A workload
        scaled to 0 is Conflict: it is not running."""
        kind, _, name = workload_id.partition("/")
        workload = await self.workload(kind, namespace, name)
        if not int((workload.get("spec") or {}).get("replicas") or 0):
            raise Conflict(
                f"{workload_id} is scaled to 0", detail=f"{workload_id} is not running: it is stopped"
            )
        pods = [p for p in await self.pods_of(workload) if ko.pod_state(p) is ContainerState.RUNNING]
        pods.sort(
            key=lambda p: (
                ko.pod_health(p) != "healthy",
                str((p.get("metadata") or {}).get("creationTimestamp")),
            )
        )
        return pods


def replicaset_owners(pods: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str], str]:
    """The workload of each ReplicaSet that owns one of ``pods``: its Deployment, else itself.

    A Deployment names its ReplicaSets ``<deployment>-<pod-template-hash>``, which the pods'
    label also carries: that names the Deployment without reading every ReplicaSet.
    """
    owners: dict[tuple[str, str], str] = {}
    for pod in pods:
        meta = pod.get("metadata") or {}
        owner = ko.controller_of(meta)
        if owner is None or owner[0] != "ReplicaSet":
            continue
        key = (str(meta.get("namespace", "")), owner[1])
        if key in owners:
            continue
        template_hash = (meta.get("labels") or {}).get("pod-template-hash", "")
        if template_hash and owner[1].endswith(f"-{template_hash}"):
            owners[key] = f"deployment/{owner[1][: -len(template_hash) - 1]}"
        else:
            owners[key] = f"replicaset/{owner[1]}"
    return owners


def controller_name(pod: Mapping[str, Any], owners: Mapping[tuple[str, str], str]) -> str:
    """The ``kind/name`` of the workload that owns ``pod`` (see :func:`replicaset_owners`)."""
    meta = pod.get("metadata") or {}
    owner = ko.controller_of(meta)
    if owner is None:
        return ""
    if owner[0] == "ReplicaSet":
        return owners.get((str(meta.get("namespace", "")), owner[1]), f"replicaset/{owner[1]}")
    return f"{owner[0].lower()}/{owner[1]}"
