"""The Kubernetes backend: pods through a kube-apiserver, with kubernetes_asyncio.

kubernetes_asyncio provides the configuration (kubeconfig, contexts, in-cluster service account,
token refresh) and the authenticated HTTP calls; responses are read as plain JSON and reduced by
:mod:`runtimes.kubeobjects`. Every apiserver error is translated into :mod:`runtimes.errors` here.

Lifecycle on pods, where Nekzus went wrong:
- stop scales the owning Deployment / StatefulSet / ReplicaSet to 0 through its scale subresource
  and records the replica count it had in an annotation; start restores exactly that count;
- the stopped workload stays listed as ``deployment/web`` so a client can start it again;
- restart deletes the pod and lets the controller replace it, finishing when the workload is
  ready again;
- a standalone pod is only deleted (stop) or recreated (restart) when the gateway was told to
  force it: that check is the gateway's, made before the 202.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import aiohttp
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config

from . import kubeobjects as ko
from .base import (
    Action,
    ContainerRef,
    ContainerState,
    ContainerSummary,
    ExportSource,
    LogChunk,
    RuntimeEvent,
    RuntimeInfo,
    StatsSample,
)
from .errors import (
    AlreadyRunning,
    AlreadyStopped,
    Conflict,
    Forbidden,
    NotFound,
    OperationFailed,
    RuntimeFailure,
    Unavailable,
    Unsupported,
)
from .urlpath import segment

log = logging.getLogger(__name__)

ConfigurationSource = k8s.Configuration | Callable[[], Awaitable[k8s.Configuration]]

_STREAM_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=None)
# The readiness probe's bound: the apiserver takes 2 s to report a dead etcd on its /readyz, and the
# gateway's monitor gives a probe 5 s in all.
_PROBE_TIMEOUT = aiohttp.ClientTimeout(total=4, sock_connect=4)
_FAILED_CHECK = re.compile(r"^\[-\]([\w./-]+) failed", re.MULTILINE)
_NODE_CACHE_SECONDS = 60.0
_APPS = "/apis/apps/v1"
_RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"  # what ``kubectl rollout restart`` sets
# How long a finished stop remembers the pods it removed, for stops of them still queued behind it.
_STOP_MEMORY_SECONDS = 600.0
_T = TypeVar("_T")


class _Gone(RuntimeFailure):
    """A watch's resourceVersion is too old (410): list again and watch from there."""


class _Overloaded(OperationFailed):
    """The apiserver is overloaded (429) or failed inside (5xx): the same call may work soon."""


class _OutOfTime(OperationFailed):
    """Time ran out while the apiserver kept failing: whether the last call took effect is unknown."""


@dataclass(eq=False)
class _WorkloadStop:
    """One scale-down of a workload to 0, which the stops of any of its pods share."""

    result: asyncio.Future[None]
    pods: set[str] = field(default_factory=set)  # the pods it had when the stop began
    finished: float | None = None  # time.monotonic() at the end


def kubeconfig_loader(
    kubeconfig: Path | None, context: str | None, *, in_cluster: bool
) -> Callable[[], Awaitable[k8s.Configuration]]:
    """Reads the client configuration when first needed, so the gateway starts without it."""

    async def load() -> k8s.Configuration:
        configuration = k8s.Configuration()
        try:
            if in_cluster:
                k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            else:
                path = kubeconfig or Path(
                    os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or Path.home() / ".kube" / "config"
                )
                await k8s_config.load_kube_config(
                    config_file=str(path), context=context or None, client_configuration=configuration
                )
        except (k8s_config.ConfigException, OSError, ValueError) as exc:
            raise Unavailable(f"cannot load the Kubernetes client configuration: {exc}") from exc
        return configuration

    return load


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
        self._source = configuration
        self._namespaces = tuple(namespaces)
        self._ready_timeout = ready_timeout
        self._request_timeout = aiohttp.ClientTimeout(
            total=request_timeout, sock_connect=min(request_timeout, 5)
        )
        # A watch silent this long is dead. The apiserver is asked to end each watch a quarter
        # earlier, so a healthy one is always renewed before the deadline, bookmarks or not.
        self._watch_timeout = watch_timeout
        self._watch_seconds = max(1, int(watch_timeout * 3 / 4))
        # aiohttp's sock_read is the deadline: it measures the peer's silence, headers included.
        self._watch_read_timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=min(watch_timeout, 5), sock_read=watch_timeout
        )
        self._api: k8s.ApiClient | None = None
        self._api_lock = asyncio.Lock()
        self._nodes: dict[str, tuple[float, dict[str, Any]]] = {}
        # Stops of workloads, under way or finished a short while ago, by (namespace, kind, name).
        self._stops: dict[tuple[str, str, str], _WorkloadStop] = {}
        # Set while the last readiness probe failed (its client-facing sentence): calls answer
        # Unavailable at once instead of each waiting out its timeout, until a probe succeeds.
        self._outage: str | None = None
        # Watches (by path) that went silent or broke and are not open again yet.
        self._watch_trouble: dict[str, str] = {}

    @property
    def name(self) -> str:
        return self._name

    def accepts_id(self, value: object) -> bool:
        return ko.is_object_id(value)

    def refusal(self, container: ContainerSummary, action: Action, *, force: bool) -> RuntimeFailure | None:
        return ko.refusal(container, action, force=force)

    async def close(self) -> None:
        if self._api is not None:
            await self._api.close()
            self._api = None

    # -- plumbing -------------------------------------------------------------------------------

    async def _client(self) -> k8s.ApiClient:
        if self._api is None:
            async with self._api_lock:
                if self._api is None:
                    source = self._source
                    configuration = source if isinstance(source, k8s.Configuration) else await source()
                    self._api = k8s.ApiClient(configuration)
        return self._api

    async def _open(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: aiohttp.ClientTimeout | None = None,
        gated: bool = True,
        checked: bool = True,
    ) -> aiohttp.ClientResponse:
        """The apiserver's response to one call; an error status is raised as a runtime error
        (unless ``checked`` is false). ``timeout`` defaults to the configured request timeout.

        While the last readiness probe failed, a ``gated`` call answers Unavailable at once.
        """
        if gated and self._outage is not None:
            raise Unavailable(f"not calling {method} {path}: {self._outage}", detail=self._outage)
        timeout = timeout or self._request_timeout
        api = await self._client()
        try:
            response: aiohttp.ClientResponse = await api.call_api(
                path,
                method,
                query_params=[(k, v) for k, v in (query or {}).items() if v is not None],
                header_params={"Content-Type": content_type, "Accept": "application/json, */*"},
                body=body,
                auth_settings=["BearerToken"],
                _preload_content=False,
                _request_timeout=timeout,
            )
        except TimeoutError as exc:
            # aiohttp closes a connection whose request failed: it never goes back to the pool.
            seconds = timeout.total or timeout.sock_read or timeout.sock_connect
            detail = f"The Kubernetes API did not answer within {seconds:g} s"
            raise Unavailable(f"{detail} ({method} {path})", detail=detail) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise Unavailable(
                f"the Kubernetes API did not answer {method} {path}: {exc!r}",
                detail="The Kubernetes API cannot be reached",
            ) from exc
        if checked and response.status >= 400:
            try:
                text = await response.text()
            except (TimeoutError, aiohttp.ClientError):
                response.close()
                text = ""
            finally:
                response.release()
            self._raise(response.status, text, f"{method} {path}")
        return response

    async def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = await self._open(method, path, **kwargs)
        try:
            data: dict[str, Any] = await response.json(content_type=None)
        except TimeoutError as exc:
            response.close()  # part of the body is still on its way: the connection is not reusable
            detail = "The Kubernetes API did not answer in time"
            raise Unavailable(f"{detail} ({method} {path})", detail=detail) from exc
        except (aiohttp.ClientError, OSError) as exc:
            response.close()
            raise Unavailable(f"the Kubernetes API broke off {method} {path}: {exc!r}") from exc
        except ValueError as exc:
            raise OperationFailed(f"{method} {path} answered no JSON") from exc
        finally:
            response.release()
        return data

    @staticmethod
    def _raise(status: int, text: str, what: str) -> NoReturn:
        try:
            message = str(json.loads(text).get("message", ""))
        except (ValueError, AttributeError):
            message = text[:200]
        if status == 403:
            raise Forbidden(f"{what}: {message}", detail=ko.forbidden_reason(message))
        if status == 404:
            raise NotFound(f"{what}: {message}")
        if status == 409:
            raise Conflict(f"{what}: {message}")
        if status == 410:
            raise _Gone(f"{what}: {message}")
        if status in (401, 502, 503, 504):
            raise Unavailable(f"{what}: [{status}] {message}")
        if status == 429 or status >= 500:
            raise _Overloaded(f"{what}: [{status}] {message}")
        raise OperationFailed(f"{what}: [{status}] {message}")

    @staticmethod
    def _pod_path(namespace: str, name: str = "") -> str:
        base = f"/api/v1/namespaces/{_label(namespace)}/pods"
        return f"{base}/{_object_name(name)}" if name else base

    @staticmethod
    def _workload_path(kind: str, namespace: str, name: str) -> str:
        return f"{_APPS}/namespaces/{_label(namespace)}/{ko.SCALABLE[kind]}/{_object_name(name)}"

    def _namespace(self, ref: ContainerRef) -> str:
        """The namespace a request means: its own, else the only configured one, else "default".

        A namespace outside the configured ones is not managed: its pods do not exist here. Nor
        does anything whose name Kubernetes would refuse: a caller that skipped the gateway's
        validation gets NotFound, and the apiserver never sees the value.
        """
        namespace = ref.namespace or (self._namespaces[0] if len(self._namespaces) == 1 else "default")
        if not ko.is_label(namespace) or not ko.is_object_id(ref.id):
            raise NotFound(f"{namespace!r}/{ref.id!r} is not a Kubernetes namespace and object name")
        if ref.container and not ko.is_label(ref.container):
            raise NotFound(f"{ref.container!r} is not a container name")
        if self._namespaces and namespace not in self._namespaces:
            raise NotFound(f"namespace {namespace!r} is not one the gateway manages")
        return namespace

    # -- queries --------------------------------------------------------------------------------

    async def ping(self) -> RuntimeInfo:
        """The readiness probe: the apiserver's version, if its own /readyz passes.

        /version is answered from memory even with etcd dead; /readyz checks etcd (and fails in
        about 2 s without it), so it is what tells whether calls can work. Its verdict opens or
        closes the gate every other call passes (``_open``). A pod watch that is silent or being
        reopened makes the probe fail too, but closes no gate: calls still reach the apiserver.
        """
        results = await asyncio.gather(
            self._json("GET", "/version", timeout=_PROBE_TIMEOUT, gated=False),
            self._readiness(),
            return_exceptions=True,
        )
        failures = [r for r in results if isinstance(r, BaseException)]
        down = next((f for f in failures if isinstance(f, Unavailable)), None)
        self._outage = (down.detail or "The Kubernetes runtime is not available") if down else None
        if failures:
            raise failures[0]
        version = results[0]
        assert isinstance(version, dict)
        trouble = next(iter(self._watch_trouble.values()), None)
        if trouble is not None:
            raise Unavailable(f"pod watch: {trouble}", detail=trouble)
        return RuntimeInfo(self.name, str(version.get("gitVersion", "")), "v1")

    async def _readiness(self) -> None:
        """Unavailable unless the apiserver's /readyz answers 200."""
        response = await self._open("GET", "/readyz", timeout=_PROBE_TIMEOUT, gated=False, checked=False)
        try:
            text = await response.text()
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            response.close()
            detail = "The Kubernetes API did not answer its readiness check in time"
            raise Unavailable(f"{detail}: {exc!r}", detail=detail) from exc
        finally:
            response.release()
        if response.status == 200:
            return
        if response.status in (403, 404):  # an account without the (default) /readyz permission
            self._raise(response.status, text, "GET /readyz")
        failing = ", ".join(_FAILED_CHECK.findall(text))
        raise Unavailable(
            f"the Kubernetes API server is not ready: [{response.status}] {text[:300]}",
            detail=f"The Kubernetes API server is not ready (failing: {failing})"
            if failing
            else f"The Kubernetes API server is not ready ({response.status})",
        )

    def _scopes(self, namespace: str | None) -> list[str]:
        """Namespaces to read ("" = all of them at once)."""
        if namespace:
            return [namespace] if not self._namespaces or namespace in self._namespaces else []
        return list(self._namespaces) or [""]

    async def _list(self, kind_path: str, scope: str, selector: str | None = None) -> dict[str, Any]:
        prefix = "/api/v1" if kind_path == "pods" else _APPS
        path = f"{prefix}/namespaces/{_label(scope)}/{kind_path}" if scope else f"{prefix}/{kind_path}"
        return await self._json("GET", path, query={"labelSelector": selector})

    async def list_containers(self, *, namespace: str | None = None) -> list[ContainerSummary]:
        scopes = self._scopes(namespace)
        calls = [self._list("pods", s) for s in scopes]
        calls += [
            self._list(plural, s, f"{ko.STOPPED_LABEL}=true")
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
        owners = self._replicaset_owners([p for doc in pods for p in doc.get("items") or ()])
        summaries = [
            ko.pod_summary(pod, self._controller_name(pod, owners))
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
            await asyncio.gather(*(self._clear_stale_mark(kind, w) for kind, w in running))
        return summaries

    @staticmethod
    def _replicaset_owners(pods: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str], str]:
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

    @staticmethod
    def _controller_name(pod: Mapping[str, Any], owners: Mapping[tuple[str, str], str]) -> str:
        meta = pod.get("metadata") or {}
        owner = ko.controller_of(meta)
        if owner is None:
            return ""
        if owner[0] == "ReplicaSet":
            return owners.get((str(meta.get("namespace", "")), owner[1]), f"replicaset/{owner[1]}")
        return f"{owner[0].lower()}/{owner[1]}"

    async def _pod(self, ref: ContainerRef) -> dict[str, Any]:
        return await self._json("GET", self._pod_path(self._namespace(ref), ref.id))

    async def _workload(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        return await self._json("GET", self._workload_path(kind, namespace, name))

    async def _pod_controller(self, pod: Mapping[str, Any]) -> str:
        """The workload that owns ``pod``, following a ReplicaSet up to its Deployment."""
        meta = pod.get("metadata") or {}
        owner = ko.controller_of(meta)
        if owner is None:
            return ""
        kind, name = owner
        if kind != "ReplicaSet":
            return f"{kind.lower()}/{name}"
        try:
            rs = await self._workload("replicaset", str(meta.get("namespace", "")), name)
        except NotFound:
            return f"replicaset/{name}"
        parent = ko.controller_of(rs.get("metadata") or {})
        if parent is not None and parent[0] == "Deployment":
            return f"deployment/{parent[1]}"
        return f"replicaset/{name}"

    async def _resolve(self, ref: ContainerRef) -> tuple[ContainerSummary, dict[str, Any]]:
        """The summary and raw object of a pod name or a ``kind/name`` workload id."""
        namespace = self._namespace(ref)
        match = ko.WORKLOAD_ID.fullmatch(ref.id)
        if match:
            kind, name = match.groups()
            obj = await self._workload(kind, namespace, name)
            return ko.workload_summary(kind, obj), obj
        pod = await self._pod(ref)
        return ko.pod_summary(pod, await self._pod_controller(pod)), pod

    async def get(self, ref: ContainerRef) -> ContainerSummary:
        return (await self._resolve(ref))[0]

    async def inspect(self, ref: ContainerRef) -> dict[str, Any]:
        summary, obj = await self._resolve(ref)
        return ko.details(summary, obj)

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self, ref: ContainerRef) -> None:
        summary = await self._retry(lambda: self.get(ref), f"{ref.id} to be read")
        if summary.state is ContainerState.RUNNING and not ko.WORKLOAD_ID.fullmatch(ref.id):
            raise AlreadyRunning(f"pod {ref.id} is already running")
        workload = summary.controller or ""
        kind, _, name = workload.partition("/")
        if kind not in ko.SCALABLE:
            raise Unsupported(
                f"pod {ref.id} has no scalable controller",
                detail="A pod without a Deployment, StatefulSet or ReplicaSet cannot be started again",
            )
        await self._scale_up(kind, summary.namespace, name)

    async def _scale_up(self, kind: str, namespace: str, name: str) -> None:
        """Give a stopped workload back the replica count its stop recorded, and clear the mark.

        A stop of the same workload still under way ends first (its own operation reports how), so
        it cannot undo the start. Every step may be made again: a workload found scaled up already
        (by an earlier try whose answer was lost, or by hand) keeps its count, loses a mark it still
        carries, and the start completes when that many replicas are ready.
        """
        key = (namespace, kind, name)
        stopping = self._stops.get(key)
        if stopping is not None:
            await asyncio.wait({stopping.result})
            if self._stops.get(key) is stopping:
                del self._stops[key]  # started again: its pods are no longer stopped with it
        path = self._workload_path(kind, namespace, name)
        obj = await self._retry(lambda: self._json("GET", path), f"{kind}/{name} to be read")
        replicas = int((obj.get("spec") or {}).get("replicas") or 0)
        target = replicas
        if replicas == 0:
            recorded = ((obj.get("metadata") or {}).get("annotations") or {}).get(ko.STOPPED_REPLICAS, "")
            target = int(recorded) if recorded.isdigit() and int(recorded) > 0 else 1
            await self._retry(
                lambda: self._json(
                    "PATCH",
                    f"{path}/scale",
                    body={"spec": {"replicas": target}},
                    content_type="application/merge-patch+json",
                ),
                f"{kind}/{name} to be scaled to {target}",
            )
        if replicas == 0 or _marked(obj):
            await self._retry(
                lambda: self._mark_stopped(path, None), f"{kind}/{name} to lose its stopped mark"
            )
        await self._wait(
            path, lambda o: _ready(o) >= target, f"{kind}/{name} to have {target} ready replicas"
        )

    async def _mark_stopped(self, path: str, replicas: int | None, *, version: str = "") -> None:
        """Record (or, with None, clear) the replica count a stop took away; with ``version``, only
        on that resourceVersion of the workload (else ``Conflict``)."""
        labels = {ko.STOPPED_LABEL: None if replicas is None else "true"}
        annotations = {ko.STOPPED_REPLICAS: None if replicas is None else str(replicas)}
        meta: dict[str, Any] = {"labels": labels, "annotations": annotations}
        if version:
            meta["resourceVersion"] = version
        await self._json("PATCH", path, body={"metadata": meta}, content_type="application/merge-patch+json")

    async def stop(self, ref: ContainerRef, *, timeout: int) -> None:
        try:
            summary = await self._retry(lambda: self.get(ref), f"pod {ref.id} to be read")
        except NotFound as exc:
            await self._stopped_with_workload(self._namespace(ref), ref.id, exc)
            return
        namespace = summary.namespace
        kind, _, name = (summary.controller or "").partition("/")
        if not summary.controller:
            # A standalone pod: the gateway only gets here when the client forced it.
            await self._retry(
                lambda: self._delete_pod(namespace, ref.id, timeout), f"pod {ref.id} to be deleted"
            )
            await self._wait_gone(namespace, ref.id, timeout + 30)
            return
        if (refused := ko.controller_refusal(summary, "stop", force=True)) is not None:
            raise refused
        await self._stop_workload(kind, namespace, name, timeout)

    async def _stop_workload(self, kind: str, namespace: str, name: str, timeout: int) -> None:
        """Scale the workload to 0, or join its scale-down already under way: stops of several of
        its pods (a batch, or a second stop of one pod) are one scale-down whose outcome each reports."""
        key = (namespace, kind, name)
        current = self._stops.get(key)
        if current is not None and not current.result.done():
            await asyncio.shield(current.result)  # a joiner cancelled leaves the others' stop alone
            return
        self._forget_stops()
        stop = _WorkloadStop(asyncio.get_running_loop().create_future())
        self._stops[key] = stop
        try:
            await self._scale_down(kind, namespace, name, timeout, stop.pods)
        except Exception as exc:
            stop.result.set_exception(exc)
        except asyncio.CancelledError:
            stop.result.cancel()
            raise
        else:
            stop.result.set_result(None)
        finally:
            stop.finished = time.monotonic()
        await stop.result

    async def _scale_down(self, kind: str, namespace: str, name: str, timeout: int, pods: set[str]) -> None:
        """Scale to 0 and wait until the pods are gone; ``pods`` gets the names of those it stops.

        Every step may be made again after an error that passes: a workload already at 0 that
        carries the mark was scaled by an earlier try (or an earlier stop), and only the wait is left.
        """
        path = self._workload_path(kind, namespace, name)
        obj = await self._retry(lambda: self._json("GET", path), f"{kind}/{name} to be read")
        try:
            listed = await self._retry(lambda: self._pods_of(obj), f"the pods of {kind}/{name} to be listed")
        except Forbidden:
            listed = []  # the wait for no pods lists them too, and reports the refusal after the scale
        pods.update(str((p.get("metadata") or {}).get("name", "")) for p in listed)
        replicas = int((obj.get("spec") or {}).get("replicas") or 0)
        if replicas == 0 and not _marked(obj):
            raise AlreadyStopped(f"{kind}/{name} is already scaled to 0")
        if replicas > 0:
            # The count goes on record before the scale-down, so a crash in between loses nothing.
            await self._retry(lambda: self._mark_stopped(path, replicas), f"{kind}/{name} to be marked")
            try:
                await self._retry(
                    lambda: self._json(
                        "PATCH",
                        f"{path}/scale",
                        body={"spec": {"replicas": 0}},
                        content_type="application/merge-patch+json",
                    ),
                    f"{kind}/{name} to be scaled to 0",
                )
            except _OutOfTime:
                raise  # the scale may have been made: the mark must stay with it
            except RuntimeFailure:
                # Refused: not stopped after all, and a workload marked as stopped would be listed as one.
                with contextlib.suppress(RuntimeFailure):
                    await self._mark_stopped(path, None)
                raise

        async def no_pods() -> bool:
            return not await self._pods_of(obj)

        # Until the pods are gone, not just terminating: they may hold on for their grace period.
        await self._until(no_pods, f"{kind}/{name} to have no pods", self._ready_timeout + timeout)

    async def _stopped_with_workload(self, namespace: str, pod: str, missing: NotFound) -> None:
        """A stop of a pod that is gone: done if a stop of its workload removed it, else ``missing``.

        That stop may still be under way (a sibling's, in the same batch): this one reports its outcome.
        """
        found = next(
            ((key, stop) for key, stop in self._stops.items() if key[0] == namespace and pod in stop.pods),
            None,
        )
        if found is None:
            raise missing
        (_, kind, name), stop = found
        if not stop.result.done():
            await asyncio.shield(stop.result)
            return
        path = self._workload_path(kind, namespace, name)
        obj = await self._retry(lambda: self._json("GET", path), f"{kind}/{name} to be read")
        if (obj.get("spec") or {}).get("replicas") or not _marked(obj):
            raise missing

    async def _clear_stale_mark(self, kind: str, workload: Mapping[str, Any]) -> None:
        """Clear the stopped mark of a workload seen running again (someone scaled it by hand).

        Only on the version that was seen, and never during a stop of it, whose mark goes on before
        its scale-down: that mark is not stale. A failure leaves the mark for the next list.
        """
        meta = workload.get("metadata") or {}
        namespace, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
        stop = self._stops.get((namespace, kind, name))
        if stop is not None and not stop.result.done():
            return
        try:
            await self._mark_stopped(
                self._workload_path(kind, namespace, name), None, version=str(meta.get("resourceVersion", ""))
            )
        except (Conflict, NotFound):
            pass  # changed or gone since it was listed: the next list sees it as it is
        except RuntimeFailure as exc:
            log.warning("could not clear the stopped mark of %s/%s in %s: %s", kind, name, namespace, exc)

    def _forget_stops(self) -> None:
        """Drop what finished stops remember after a while: by then no stop of their pods is queued."""
        cutoff = time.monotonic() - _STOP_MEMORY_SECONDS
        for key, stop in list(self._stops.items()):
            if stop.finished is not None and stop.finished < cutoff:
                del self._stops[key]

    async def restart(self, ref: ContainerRef, *, timeout: int) -> None:
        summary, obj = await self._retry(lambda: self._resolve(ref), f"{ref.id} to be read")
        namespace = summary.namespace
        kind, _, name = (summary.controller or "").partition("/")
        if ko.WORKLOAD_ID.fullmatch(ref.id):
            if summary.state is ContainerState.STOPPED:
                await self._scale_up(kind, namespace, name)
            else:
                await self._rollout_restart(kind, namespace, name)
            return
        if not summary.controller:
            await self._recreate(namespace, obj, timeout)
            return
        uid = str((obj.get("metadata") or {}).get("uid", ""))
        if kind not in ko.SCALABLE:  # a DaemonSet or Job replaces it in its own way
            await self._retry(
                lambda: self._delete_pod(namespace, ref.id, timeout, uid), f"pod {ref.id} to be deleted"
            )
            return
        # The pod's own controller (its ReplicaSet, or the StatefulSet) writes its status when it
        # sees the pod go, with one ready replica fewer: a status newer than this version that
        # counts every replica ready again has seen the replacement.
        owner_kind, owner_name = ko.controller_of(obj.get("metadata") or {}) or ("", "")
        owner_path = self._workload_path(owner_kind.lower(), namespace, owner_name)
        owner = await self._retry(
            lambda: self._json("GET", owner_path), f"{owner_kind} {owner_name} to be read"
        )
        seen = str((owner.get("metadata") or {}).get("resourceVersion", ""))
        await self._retry(
            lambda: self._delete_pod(namespace, ref.id, timeout, uid), f"pod {ref.id} to be deleted"
        )
        await self._wait_replaced(kind, namespace, name, owner_path, seen)

    async def _rollout_restart(self, kind: str, namespace: str, name: str) -> None:
        """Restart of a running workload entry: a rolling restart, as ``kubectl rollout restart``.

        It completes when the rollout has finished (see :func:`_rolled_out`) and every pod the
        workload has is one of the new template, ready and not terminating.
        """
        if kind == "replicaset":
            raise Unsupported(
                f"replicaset/{name} cannot roll its pods",
                detail="A ReplicaSet does not roll its pods: restart them one by one",
            )
        path = self._workload_path(kind, namespace, name)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        patch = {"spec": {"template": {"metadata": {"annotations": {_RESTARTED_AT: stamp}}}}}
        obj = await self._retry(
            lambda: self._json("PATCH", path, body=patch, content_type="application/merge-patch+json"),
            f"{kind}/{name} to be restarted",
        )
        generation = int((obj.get("metadata") or {}).get("generation") or 0)

        async def finished() -> bool:
            workload = await self._json("GET", path)
            if not _rolled_out(workload, generation):
                return False
            template = ((workload.get("spec") or {}).get("template") or {}).get("metadata") or {}
            restarted = (template.get("annotations") or {}).get(_RESTARTED_AT)
            pods = await self._pods_of(workload)
            return len(pods) == int((workload.get("spec") or {}).get("replicas") or 0) and all(
                ((p.get("metadata") or {}).get("annotations") or {}).get(_RESTARTED_AT) == restarted
                and not (p.get("metadata") or {}).get("deletionTimestamp")
                and ko.pod_health(p) == "healthy"
                for p in pods
            )

        await self._until(finished, f"{kind}/{name} to roll out", self._ready_timeout)

    async def _delete_pod(self, namespace: str, name: str, grace: int, uid: str = "") -> None:
        """Delete the pod (``uid``: only that one, not a pod that has replaced it under its name)."""
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": {"uid": uid}} if uid else None
        try:
            await self._json(
                "DELETE", self._pod_path(namespace, name), query={"gracePeriodSeconds": grace}, body=body
            )
        except NotFound:
            pass  # gone already
        except Conflict:
            if not uid:
                raise  # else the precondition failed: the pod was replaced already

    async def _wait_gone(self, namespace: str, name: str, timeout: float) -> None:
        async def gone() -> bool:
            try:
                await self._json("GET", self._pod_path(namespace, name))
            except NotFound:
                return True
            return False

        await self._until(gone, f"pod {name} to be deleted", timeout)

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
        await self._retry(
            lambda: self._delete_pod(namespace, name, timeout, uid), f"pod {name} to be deleted"
        )
        await self._wait_gone(namespace, name, timeout + 30)

        async def create() -> None:
            # A pod of that name exists again after the old one was gone: an earlier try whose answer
            # was lost created it.
            with contextlib.suppress(Conflict):
                await self._json("POST", self._pod_path(namespace), body=fresh)

        await self._retry(create, f"pod {name} to be created")
        path = self._pod_path(namespace, name)
        await self._wait(path, lambda p: ko.pod_health(p) == "healthy", f"pod {name} to be ready again")

    async def _pods_of(self, workload: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The pods a workload's selector matches."""
        meta = workload.get("metadata") or {}
        labels = ((workload.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        selector = ",".join(f"{k}={v}" for k, v in labels.items())
        listing = await self._list("pods", str(meta.get("namespace", "")), selector)
        return list(listing.get("items") or ())

    async def _wait_replaced(self, kind: str, namespace: str, name: str, owner_path: str, seen: str) -> None:
        """Until the pod's controller has reported its ready replicas again since version ``seen``,
        and the workload reports as many (it sums its ReplicaSets' statuses)."""
        path = self._workload_path(kind, namespace, name)

        async def ready() -> bool:
            owner = await self._json("GET", owner_path)
            version = str((owner.get("metadata") or {}).get("resourceVersion", ""))
            if version == seen or _ready(owner) < int((owner.get("spec") or {}).get("replicas") or 0):
                return False
            workload = owner if path == owner_path else await self._json("GET", path)
            return _ready(workload) >= int((workload.get("spec") or {}).get("replicas") or 0)

        await self._until(ready, f"{kind}/{name} to replace its pod", self._ready_timeout)

    async def _wait(
        self, path: str, done: Callable[[dict[str, Any]], bool], what: str, timeout: float | None = None
    ) -> None:
        async def check() -> bool:
            return done(await self._json("GET", path))

        await self._until(check, what, self._ready_timeout if timeout is None else timeout)

    async def _retry(self, call: Callable[[], Awaitable[_T]], what: str) -> _T:
        """``call``'s answer, asking again while the apiserver fails in a way that passes (see
        :func:`_until`) for up to ``ready_timeout``; a refusal is raised at once."""
        answers: list[_T] = []

        async def answered() -> bool:
            answers.append(await call())
            return True

        await self._until(answered, what, self._ready_timeout)
        return answers[0]

    @staticmethod
    async def _until(check: Callable[[], Awaitable[bool]], what: str, timeout: float) -> None:
        """Poll ``check`` (quickly at first, then every half second) until it holds or time is up.

        An apiserver that is down, overloaded (429) or failing inside (5xx) is asked again: that
        passes (a restart, an etcd election) and the goal may be reached meanwhile. Refusals
        (403, 404, 409, a bad request) are raised at once. Out of time while the apiserver still
        fails, the error is :class:`_OutOfTime`: whether the last call took effect is unknown.
        """
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            failure: RuntimeFailure | None = None
            try:
                if await check():
                    return
            except (Unavailable, _Overloaded) as exc:
                failure = exc
                log.info("the Kubernetes API failed while waiting for %s, asking again: %s", what, exc)
            if time.monotonic() >= deadline:
                if failure is not None:
                    raise _OutOfTime(
                        f"gave up after {timeout:g} s waiting for {what}: {failure}",
                        detail=f"The Kubernetes API did not answer within {timeout:g} s waiting for {what}",
                    ) from failure
                raise OperationFailed(
                    f"timed out after {timeout:g} s waiting for {what}",
                    detail=f"Timed out after {timeout:g} s waiting for {what}",
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)

    async def export_source(self, ref: ContainerRef) -> ExportSource:
        summary, obj = await self._resolve(ref)
        if not ko.WORKLOAD_ID.fullmatch(ref.id):
            return ExportSource(self.name, "pod", obj)
        # A workload entry (stopped, so without pods): its pod template stands for the pod.
        template = (obj.get("spec") or {}).get("template") or {}
        meta = {**(template.get("metadata") or {}), "name": summary.name, "namespace": summary.namespace}
        return ExportSource(
            self.name, "pod", {"kind": "Pod", "metadata": meta, "spec": template.get("spec") or {}}
        )

    # -- stats ----------------------------------------------------------------------------------

    async def stats(self, ref: ContainerRef) -> StatsSample:
        """A pod's usage; a workload entry's is the sum over its running pods (limits summed too)."""
        namespace = self._namespace(ref)
        if ko.WORKLOAD_ID.fullmatch(ref.id):
            pods = await self._running_pods(namespace, ref.id)
            if not pods:
                raise Conflict(
                    f"{ref.id} has no running pod", detail=f"{ref.id} has no running pod to measure"
                )
        else:
            pods = [await self._pod(ref)]
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

    async def _running_pods(self, namespace: str, workload_id: str) -> list[dict[str, Any]]:
        """The running pods of a workload entry, ready ones first, then the oldest first (the pod
        ``kubectl logs deploy/web`` picks comes first); none while it replaces them all. A workload
        scaled to 0 is Conflict: it is not running."""
        kind, _, name = workload_id.partition("/")
        workload = await self._workload(kind, namespace, name)
        if not int((workload.get("spec") or {}).get("replicas") or 0):
            raise Conflict(
                f"{workload_id} is scaled to 0", detail=f"{workload_id} is not running: it is stopped"
            )
        pods = [p for p in await self._pods_of(workload) if ko.pod_state(p) is ContainerState.RUNNING]
        pods.sort(
            key=lambda p: (
                ko.pod_health(p) != "healthy",
                str((p.get("metadata") or {}).get("creationTimestamp")),
            )
        )
        return pods

    async def _usage(self, namespace: str, pod: Mapping[str, Any]) -> tuple[float, float]:
        """(cores, memory bytes) the metrics API reports for one pod."""
        name = str((pod.get("metadata") or {}).get("name", ""))
        path = f"/apis/metrics.k8s.io/v1beta1/namespaces/{_label(namespace)}/pods/{_object_name(name)}"
        try:
            metrics = await self._json("GET", path)
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
            doc = await self._json("GET", f"/api/v1/nodes/{_object_name(node)}")
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

    # -- streams --------------------------------------------------------------------------------

    async def events(self, *, since: int | None = None) -> AsyncIterator[RuntimeEvent]:
        """Pod changes from a watch per namespace scope (one for the whole cluster by default).

        Each (re)list first reports every pod as it is, so nothing that changed while the watch
        was down goes unseen; 410 Gone lists again. ``since`` is not needed: the list covers it.
        """
        scopes = self._scopes(None)
        if len(scopes) == 1:
            async for event in self._scope_events(scopes[0]):
                yield event
            return
        queue: asyncio.Queue[RuntimeEvent | BaseException] = asyncio.Queue(maxsize=1024)

        async def pump(scope: str) -> None:
            try:
                async for event in self._scope_events(scope):
                    await queue.put(event)
            except Exception as exc:  # handed to the consumer, which raises it
                await queue.put(exc)

        tasks = [asyncio.create_task(pump(s), name=f"kube-watch-{s}") for s in scopes]
        try:
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _scope_events(self, scope: str) -> AsyncIterator[RuntimeEvent]:
        path = self._pod_path(scope) if scope else "/api/v1/pods"
        known: set[tuple[str, str]] = set()
        while True:
            listing = await self._json("GET", path)
            version = str((listing.get("metadata") or {}).get("resourceVersion", ""))
            owners = self._replicaset_owners(listing.get("items") or [])
            current: set[tuple[str, str]] = set()
            for pod in listing.get("items") or ():
                event = self._pod_event("sync", pod, owners)
                current.add((event.namespace, event.container_id))
                yield event
            for namespace, pod_name in known - current:
                yield self._deleted(pod_name, namespace, {})
            known = current
            try:
                async for kind, pod in self._watch(path, version):
                    meta = pod.get("metadata") or {}
                    key = (str(meta.get("namespace", "")), str(meta.get("name", "")))
                    if kind == "DELETED":
                        known.discard(key)
                        yield self._deleted(key[1], key[0], meta.get("labels") or {})
                        continue
                    known.add(key)
                    yield self._pod_event(kind.lower(), pod, self._replicaset_owners([pod]))
            except _Gone:
                log.info("pod watch expired (410 Gone); listing again")

    async def _watch(self, path: str, version: str) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """Watch events from ``version`` on, renewed from the last one seen until 410 or an error.

        The apiserver ends each watch after ``timeoutSeconds``, shorter than the silence deadline:
        a stream silent past the deadline is dead (a proxy that holds the connection but forwards
        nothing), so it is closed and opened again from the last version seen. Until a watch is
        open again, the readiness probe reports it.
        """
        while True:
            try:
                response = await self._open(
                    "GET",
                    path,
                    query={
                        "watch": "1",
                        "resourceVersion": version,
                        "allowWatchBookmarks": "true",
                        "timeoutSeconds": self._watch_seconds,
                    },
                    timeout=self._watch_read_timeout,
                )
            except _Gone:
                raise
            except RuntimeFailure as exc:
                self._watch_trouble[path] = (
                    f"The pod watch cannot be opened ({exc.detail})"
                    if exc.detail
                    else "The pod watch cannot be opened"
                )
                raise
            self._watch_trouble.pop(path, None)
            ended = False
            try:
                async for line in response.content:
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    kind = str(event.get("type", ""))
                    obj = event.get("object") or {}
                    if kind == "ERROR":
                        if obj.get("code") == 410:
                            raise _Gone(str(obj.get("message", "")))
                        raise OperationFailed(f"watch error: {obj.get('message', '')}")
                    version = str((obj.get("metadata") or {}).get("resourceVersion", version))
                    if kind != "BOOKMARK":
                        yield kind, obj
                ended = True  # the apiserver ended the watch after timeoutSeconds
            except aiohttp.ServerTimeoutError:
                log.warning("pod watch %s silent for %g s; opening it again", path, self._watch_timeout)
                self._watch_trouble[path] = (
                    f"The pod watch was silent for {self._watch_timeout:g} s and is being reopened"
                )
            except (aiohttp.ClientError, OSError) as exc:
                self._watch_trouble[path] = "The pod watch broke off and is being reopened"
                raise Unavailable(f"the pod watch broke off: {exc!r}") from exc
            finally:
                # A stream that ended cleanly leaves a reusable connection; any other is closed.
                if ended:
                    response.release()
                else:
                    response.close()

    def _pod_event(
        self, action: str, pod: Mapping[str, Any], owners: Mapping[tuple[str, str], str]
    ) -> RuntimeEvent:
        summary = ko.pod_summary(pod, self._controller_name(pod, owners))
        return RuntimeEvent(
            container_id=summary.id,
            name=summary.name,
            action=action,
            state=summary.state,
            labels=summary.labels,
            runtime=self.name,
            namespace=summary.namespace,
            timestamp=int(time.time()),
            health=summary.health,
            time_nano=time.time_ns(),
            annotations=summary.annotations,
        )

    def _deleted(self, name: str, namespace: str, labels: Mapping[str, str]) -> RuntimeEvent:
        return RuntimeEvent(
            container_id=name,
            name=name,
            action="deleted",
            state=None,
            labels=labels,
            runtime=self.name,
            namespace=namespace,
            timestamp=int(time.time()),
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
        namespace = self._namespace(ref)
        if ko.WORKLOAD_ID.fullmatch(ref.id):
            # One pod of the workload, the one kubectl would pick; when it goes, the log session
            # asks again and goes on with another from the last line's time. While the workload
            # replaces all its pods at once, this waits for one to run.
            running: list[dict[str, Any]] = []

            async def some_running() -> bool:
                running[:] = await self._running_pods(namespace, ref.id)
                return bool(running)

            await self._until(some_running, f"{ref.id} to have a running pod", self._ready_timeout)
            pod = running[0]
        else:
            pod = await self._pod(ref)
        pod_name = str((pod.get("metadata") or {}).get("name", ""))
        names = [str(c.get("name", "")) for c in (pod.get("spec") or {}).get("containers") or ()]
        container = ref.container or (names[0] if names else "")
        if container not in names:
            raise NotFound(
                f"pod {pod_name} has no container {container!r}",
                detail=f"Pod {pod_name} has no container {container!r}; it has {', '.join(names)}",
            )
        query: dict[str, Any] = {
            "container": container,
            "follow": "true" if follow else "false",
            "timestamps": "true" if timestamps else "false",
            "tailLines": tail,
            "sinceTime": ko.rfc3339(since) if since is not None else None,
        }
        response = await self._open(
            "GET", f"{self._pod_path(namespace, pod_name)}/log", query=query, timeout=_STREAM_TIMEOUT
        )
        try:
            # Kubernetes sends plain text (no stream headers) and does not tell stdout from stderr.
            async for data in response.content.iter_any():
                yield LogChunk("stdout", data)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise Unavailable(f"the log stream of {namespace}/{pod_name} broke off: {exc!r}") from exc
        finally:
            response.release()


def _label(value: str) -> str:
    """A namespace as one path segment. Security: the apiserver splits the decoded path (``%2F``
    is a slash to it), so only a name Kubernetes could hold is sent, percent-encoded as well."""
    if not ko.is_label(value):
        raise NotFound(f"{value!r} is not a Kubernetes namespace name")
    return segment(value)


def _object_name(value: str) -> str:
    """A pod, workload or node name as one path segment, on the same terms as ``_label``."""
    if not ko.is_object_name(value):
        raise NotFound(f"{value!r} is not a Kubernetes object name")
    return segment(value)


def _ready(workload: Mapping[str, Any]) -> int:
    return int((workload.get("status") or {}).get("readyReplicas") or 0)


def _marked(workload: Mapping[str, Any]) -> bool:
    """Whether the workload carries the mark of a stop through the gateway."""
    return ((workload.get("metadata") or {}).get("labels") or {}).get(ko.STOPPED_LABEL) == "true"


def _rolled_out(workload: Mapping[str, Any], generation: int) -> bool:
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


def _limit_sum(containers: Sequence[Mapping[str, Any]], resource: str) -> float | None:
    """The sum of the containers' limits of ``resource``, None unless every container has one."""
    total = 0.0
    for c in containers:
        value = ((c.get("resources") or {}).get("limits") or {}).get(resource)
        if value is None:
            return None
        total += ko.parse_quantity(value)
    return total if containers else None
