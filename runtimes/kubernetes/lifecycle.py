"""Start, stop, restart and removal of pods and workload entries, where Nekzus went wrong:

- stop scales the owning workload to 0 and start restores its count (:mod:`.scaling`); the
  stopped workload stays listed as ``deployment/web`` so a client can start it again;
- restart deletes the pod and lets the controller replace it, finishing when the workload is
  ready again; a running workload entry is restarted as ``kubectl rollout restart`` does;
- a standalone pod is only deleted (stop) or recreated (restart) when the client said force:
  that check is the runtime's ``refusal``, which the gateway asks before the 202;
- a removal deletes the pod, controller or not, and says which controller recreates it; a
  workload is never deleted.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from typing import Any

from .. import kubeobjects as ko
from ..base import ContainerRef, ContainerState, RemoveOutcome
from ..errors import AlreadyRunning, Conflict, NotFound, Unsupported
from .client import ApiSession, until
from .paths import ManagedNamespaces, pod_path, workload_path
from .queries import Queries
from .scaling import WorkloadScaler, ready_replicas

_RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"  # what ``kubectl rollout restart`` sets


class Lifecycle:
    """The actions on one pod or workload entry; each completes when the cluster has caught up."""

    def __init__(
        self, session: ApiSession, namespaces: ManagedNamespaces, queries: Queries, scaler: WorkloadScaler
    ) -> None:
        self._session = session
        self._namespaces = namespaces
        self._queries = queries
        self._scaler = scaler

    async def start(self, ref: ContainerRef) -> None:
        summary = await self._session.retry(lambda: self._queries.get(ref), f"{ref.id} to be read")
        if summary.state is ContainerState.RUNNING and not ko.WORKLOAD_ID.fullmatch(ref.id):
            raise AlreadyRunning(f"pod {ref.id} is already running")
        workload = summary.controller or ""
        kind, _, name = workload.partition("/")
        if kind not in ko.SCALABLE:
            raise Unsupported(
                f"pod {ref.id} has no scalable controller",
                detail="A pod without a Deployment, StatefulSet or ReplicaSet cannot be started again",
            )
        await self._scaler.scale_up(kind, summary.namespace, name)

    async def stop(self, ref: ContainerRef, *, timeout: int) -> None:
        try:
            summary = await self._session.retry(lambda: self._queries.get(ref), f"pod {ref.id} to be read")
        except NotFound as exc:
            await self._scaler.stopped_with_workload(self._namespaces.of(ref), ref.id, exc)
            return
        namespace = summary.namespace
        kind, _, name = (summary.controller or "").partition("/")
        if not summary.controller:
            # A standalone pod: the gateway only gets here when the client forced it.
            await self._session.retry(
                lambda: self._delete_pod(namespace, ref.id, timeout), f"pod {ref.id} to be deleted"
            )
            await self._wait_gone(namespace, ref.id, timeout + 30)
            return
        if (refused := ko.controller_refusal(summary, "stop", force=True)) is not None:
            raise refused
        await self._scaler.stop(kind, namespace, name, timeout)

    async def restart(self, ref: ContainerRef, *, timeout: int) -> None:
        session = self._session
        summary, obj = await session.retry(lambda: self._queries.resolve(ref), f"{ref.id} to be read")
        namespace = summary.namespace
        kind, _, name = (summary.controller or "").partition("/")
        if ko.WORKLOAD_ID.fullmatch(ref.id):
            if summary.state is ContainerState.STOPPED:
                await self._scaler.scale_up(kind, namespace, name)
            else:
                await self._rollout_restart(kind, namespace, name)
            return
        if not summary.controller:
            await self._recreate(namespace, obj, timeout)
            return
        uid = str((obj.get("metadata") or {}).get("uid", ""))
        if kind not in ko.SCALABLE:  # a DaemonSet or Job replaces it in its own way
            await session.retry(
                lambda: self._delete_pod(namespace, ref.id, timeout, uid), f"pod {ref.id} to be deleted"
            )
            return
        # The pod's own controller (its ReplicaSet, or the StatefulSet) writes its status when it
        # sees the pod go, with one ready replica fewer: a status newer than this version that
        # counts every replica ready again has seen the replacement.
        owner_kind, owner_name = ko.controller_of(obj.get("metadata") or {}) or ("", "")
        owner_path = workload_path(owner_kind.lower(), namespace, owner_name)
        owner = await session.retry(
            lambda: session.json("GET", owner_path), f"{owner_kind} {owner_name} to be read"
        )
        seen = str((owner.get("metadata") or {}).get("resourceVersion", ""))
        await session.retry(
            lambda: self._delete_pod(namespace, ref.id, timeout, uid), f"pod {ref.id} to be deleted"
        )
        await self._wait_replaced(kind, namespace, name, owner_path, seen)

    async def remove(self, ref: ContainerRef) -> RemoveOutcome:
        """Delete the pod with its own grace period, as ``kubectl delete pod`` does, and finish
        when it is gone (a StatefulSet's replacement may already hold its name: the uid tells)."""
        if ko.WORKLOAD_ID.fullmatch(ref.id):
            raise ko.workload_removal(ref.id)
        summary, pod = await self._session.retry(
            lambda: self._queries.resolve(ref), f"pod {ref.id} to be read"
        )
        namespace = summary.namespace
        uid = str((pod.get("metadata") or {}).get("uid", ""))
        await self._session.retry(
            lambda: self._delete_pod(namespace, ref.id, None, uid), f"pod {ref.id} to be deleted"
        )
        grace = int((pod.get("spec") or {}).get("terminationGracePeriodSeconds") or 30)
        await self._wait_gone(namespace, ref.id, grace + 30, uid)
        return RemoveOutcome(recreated_by=ko.recreated_by(summary))

    async def _rollout_restart(self, kind: str, namespace: str, name: str) -> None:
        """Restart of a running workload entry: a rolling restart, as ``kubectl rollout restart``.

        It completes when the rollout has finished (see :func:`rolled_out`) and every pod the
        workload has is one of the new template, ready and not terminating.
        """
        if kind == "replicaset":
            raise Unsupported(
                f"replicaset/{name} cannot roll its pods",
                detail="A ReplicaSet does not roll its pods: restart them one by one",
            )
        session = self._session
        path = workload_path(kind, namespace, name)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        patch = {"spec": {"template": {"metadata": {"annotations": {_RESTARTED_AT: stamp}}}}}
        obj = await session.retry(
            lambda: session.json("PATCH", path, body=patch, content_type="application/merge-patch+json"),
            f"{kind}/{name} to be restarted",
        )
        generation = int((obj.get("metadata") or {}).get("generation") or 0)

        async def finished() -> bool:
            workload = await session.json("GET", path)
            if not rolled_out(workload, generation):
                return False
            template = ((workload.get("spec") or {}).get("template") or {}).get("metadata") or {}
            restarted = (template.get("annotations") or {}).get(_RESTARTED_AT)
            pods = await self._queries.pods_of(workload)
            return len(pods) == int((workload.get("spec") or {}).get("replicas") or 0) and all(
                ((p.get("metadata") or {}).get("annotations") or {}).get(_RESTARTED_AT) == restarted
                and not (p.get("metadata") or {}).get("deletionTimestamp")
                and ko.pod_health(p) == "healthy"
                for p in pods
            )

        await until(finished, f"{kind}/{name} to roll out", session.ready_timeout)

    async def _delete_pod(self, namespace: str, name: str, grace: int | None, uid: str = "") -> None:
        """Delete the pod (``uid``: only that one, not a pod that has replaced it under its name)
        after ``grace`` seconds, None for the pod's own grace period."""
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": {"uid": uid}} if uid else None
        query = {"gracePeriodSeconds": grace} if grace is not None else None
        try:
            await self._session.json("DELETE", pod_path(namespace, name), query=query, body=body)
        except NotFound:
            pass  # gone already
        except Conflict:
            if not uid:
                raise  # else the precondition failed: the pod was replaced already

    async def _wait_gone(self, namespace: str, name: str, timeout: float, uid: str = "") -> None:
        """Until no pod has that name (``uid``: until that pod is gone, whatever has its name now)."""

        async def gone() -> bool:
            try:
                pod = await self._session.json("GET", pod_path(namespace, name))
            except NotFound:
                return True
            return bool(uid) and (pod.get("metadata") or {}).get("uid") != uid

        await until(gone, f"pod {name} to be deleted", timeout)

    async def _recreate(self, namespace: str, pod: Mapping[str, Any], timeout: int) -> None:
        """Restart of a standalone pod (forced): delete it and create it again from its spec."""
        meta = pod.get("metadata") or {}
        name = str(meta.get("name", ""))
        spec = dict(pod.get("spec") or {})
        spec.pop("nodeName", None)  # let the scheduler place the new pod
        fresh = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {k: meta[k] for k in ("name", "namespace", "labels", "annotations") if k in meta},
            "spec": spec,
        }
        uid = str(meta.get("uid", ""))
        await self._session.retry(
            lambda: self._delete_pod(namespace, name, timeout, uid), f"pod {name} to be deleted"
        )
        await self._wait_gone(namespace, name, timeout + 30)

        async def create() -> None:
            # A pod of that name exists again after the old one was gone: an earlier try whose answer
            # was lost created it.
            with contextlib.suppress(Conflict):
                await self._session.json("POST", pod_path(namespace), body=fresh)

        await self._session.retry(create, f"pod {name} to be created")
        path = pod_path(namespace, name)
        await self._session.wait(
            path, lambda p: ko.pod_health(p) == "healthy", f"pod {name} to be ready again"
        )

    async def _wait_replaced(self, kind: str, namespace: str, name: str, owner_path: str, seen: str) -> None:
        """Until the pod's controller has reported its ready replicas again since version ``seen``,
        and the workload reports as many (it sums its ReplicaSets' statuses)."""
        session = self._session
        path = workload_path(kind, namespace, name)

        async def ready() -> bool:
            owner = await session.json("GET", owner_path)
            version = str((owner.get("metadata") or {}).get("resourceVersion", ""))
            if version == seen or ready_replicas(owner) < int((owner.get("spec") or {}).get("replicas") or 0):
                return False
            workload = owner if path == owner_path else await session.json("GET", path)
            return ready_replicas(workload) >= int((workload.get("spec") or {}).get("replicas") or 0)

        await until(ready, f"{kind}/{name} to replace its pod", session.ready_timeout)


def rolled_out(workload: Mapping[str, Any], generation: int) -> bool:
    """Whether a rollout has finished, as ``kubectl rollout status`` decides: the controller has
    seen the spec of ``generation``, every replica is of the new template and ready, none of the
    old ones is left (during a surge ``status.replicas`` counts more than asked for), none is
    unavailable, and a StatefulSet's current revision is its update revision."""
    status = workload.get("status") or {}
    want = int((workload.get("spec") or {}).get("replicas") or 0)

    def count(key: str) -> int:
        return int(status.get(key) or 0)

    return (
        count("observedGeneration") >= generation
        and count("replicas") == count("updatedReplicas") == count("readyReplicas") == want
        and count("unavailableReplicas") == 0
        and status.get("currentRevision") == status.get("updateRevision")
    )
