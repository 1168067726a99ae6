"""A stateful fake kube-apiserver for fast tests of the Kubernetes backend.

A real cluster is slow to start and cannot be told to forbid a verb, expire a watch, cut a log stream or
vanish on cue; this fake can, and it answers with the real server's JSON shapes (objects, lists, watch
events, ``Status`` errors) so kubernetes_asyncio deserializes them as it would in production.
Deployments, ReplicaSets and StatefulSets are backed by tiny controllers and a "kubelet" moves new pods
from Pending to Running, so scaling and deleting behave like a cluster, only in milliseconds.

Tests drive the state through synchronous methods (``add_deployment``, ``append_log``, ``forbid``…) and
serve it with ``await fake.start()`` on 127.0.0.1. Returned objects are live: read them, don't mutate.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import random
import re
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, NamedTuple, Self, TypedDict, Unpack

from aiohttp import web

Obj = dict[str, Any]
# What Kubernetes uses for generated name suffixes and template hashes (no vowels, no 0/1/3).
ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
KINDS: dict[str, tuple[str, str, str]] = {  # resource -> (API group, apiVersion, kind)
    "pods": ("", "v1", "Pod"),
    "nodes": ("", "v1", "Node"),
    "deployments": ("apps", "apps/v1", "Deployment"),
    "statefulsets": ("apps", "apps/v1", "StatefulSet"),
    "replicasets": ("apps", "apps/v1", "ReplicaSet"),
}
TERMINAL = ("Succeeded", "Failed")
VERSION = {"major": "1", "minor": "20", "gitVersion": "v1.20.2", "gitTreeState": "clean"}
VERSION |= {"gitCommit": "faecb196815e248d3ecfb03c680a4507229c2a56", "buildDate": "2021-01-13T13:20:00Z"}
VERSION |= {"goVersion": "go1.15.5", "compiler": "gc", "platform": "linux/amd64"}
NODE_INFO: dict[str, str] = {
    "architecture": "amd64",
    "containerRuntimeVersion": "containerd://1.4.3",
    "osImage": "Ubuntu",
}
NODE_INFO |= {"kubeProxyVersion": "v1.20.2", "kubeletVersion": "v1.20.2", "operatingSystem": "linux"}
NODE_INFO |= {"kernelVersion": "5.4.0"}
POD_SPEC_DEFAULTS: Obj = {
    "restartPolicy": "Always",
    "terminationGracePeriodSeconds": 30,
    "securityContext": {},
}
POD_SPEC_DEFAULTS |= {"schedulerName": "default-scheduler", "dnsPolicy": "ClusterFirst"}
CONTAINER_DEFAULTS: Obj = {
    "imagePullPolicy": "IfNotPresent",
    "resources": {},
    "terminationMessagePolicy": "File",
}
CONTAINER_DEFAULTS |= {"terminationMessagePath": "/dev/termination-log"}
DEFAULT_CONTAINERS = [{"name": "app", "image": "nginx:1.19"}]
# What a patch cannot change (or, for generation and resourceVersion, what the server sets itself).
FIXED_METADATA: tuple[str, ...] = (
    "name",
    "namespace",
    "uid",
    "creationTimestamp",
    "generation",
    "ownerReferences",
)
FIXED_METADATA += ("resourceVersion",)
REVISION = "deployment.kubernetes.io/revision"
MERGE_TYPES = ("application/merge-patch+json", "application/strategic-merge-patch+json")
UNKNOWN_FORMAT = (
    "the body of the request was in an unknown format - accepted media types include: "
    "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
)


def rfc3339(t: float | None = None) -> str:
    """Second-precision UTC, as the API server renders ``metav1.Time``."""
    return datetime.fromtimestamp(time.time() if t is None else t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def rfc3339_nano(ns: int) -> str:
    """The kubelet's fixed nine-digit log timestamp (``2006-01-02T15:04:05.000000000Z``)."""
    return f"{rfc3339(ns // 1_000_000_000)[:-1]}.{ns % 1_000_000_000:09d}Z"


def parse_rfc3339(text: str) -> int:
    """RFC 3339 with optional fractional seconds and any offset, to Unix nanoseconds."""
    match = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)", text)
    if not match:
        raise ValueError(text)
    base = datetime.fromisoformat(match[1] + ("+00:00" if match[3] == "Z" else match[3]))
    return int(base.timestamp()) * 1_000_000_000 + int((match[2] or "0").ljust(9, "0"))


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, ``null`` deletes a key, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def selects(selector: str, values: dict[str, str]) -> bool:
    """Equality-based selectors (``a=b``, ``a==b``, ``a!=b``, ``a``, ``!a``), comma meaning AND."""
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            ok = values.get(key.strip()) != value.strip()
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            ok = values.get(key.strip()) == value.strip()
        else:
            ok = (term[1:].strip() not in values) if term.startswith("!") else term in values
        if not ok:
            return False
    return True


def compact(obj: Obj) -> Obj:
    """Drop zero and empty values, as the API's ``omitempty`` fields do."""
    return {k: v for k, v in obj.items() if v not in (0, None, "", [], {})}


def status_body(code: int, reason: str, message: str, details: Obj | None = None) -> Obj:
    """A ``metav1.Status`` failure: the body of every API error."""
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message}
    return body | {"reason": reason} | ({} if details is None else {"details": details}) | {"code": code}


class Fail(Exception):
    """Raised inside a handler; the middleware answers with its ``Status`` body."""

    def __init__(self, code: int, reason: str, message: str, details: Obj | None = None) -> None:
        super().__init__(message)
        self.body = status_body(code, reason, message, details)


def not_found(resource: str, name: str) -> Fail:
    group = KINDS[resource][0]
    qualified = f"{resource}.{group}" if group else resource
    details = compact({"name": name, "group": group, "kind": resource})
    return Fail(404, "NotFound", f'{qualified} "{name}" not found', details)


class Template(TypedDict, total=False):
    """The pod template of ``add_deployment``/``add_statefulset``. ``labels`` (default ``{"app": name}``)
    are also the selector; ``containers`` are as for ``add_pod``."""

    labels: dict[str, str]
    annotations: dict[str, str]
    containers: list[Obj]


class Event(NamedTuple):
    rv: int
    resource: str
    type: str
    object: Obj


def flag(value: str | None) -> bool:
    """The truthy spellings of Go's ``strconv.ParseBool``, which the server accepts for query flags."""
    return (value or "").lower() in ("1", "t", "true")


def int_param(request: web.Request, key: str) -> int | None:
    value = request.query.get(key, "")
    if not value:
        return None
    if not value.lstrip("-").isdigit():
        raise Fail(400, "BadRequest", f'invalid value "{value}" for {key}')
    return int(value)


def is_ready(pod: Obj) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", []))


def is_active(pod: Obj) -> bool:
    """What controllers count: neither terminating nor finished."""
    return "deletionTimestamp" not in pod["metadata"] and pod["status"].get("phase") not in TERMINAL


def template_hash(template: Obj) -> str:
    digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).digest()
    return "".join(ALPHABET[b % len(ALPHABET)] for b in digest[:10])


class FakeKube:
    """Cluster state, the simulated controllers and kubelet, and the aiohttp app that serves them.

    ``ready_delay``: how long a pod created by the API or a controller stays Pending; ``delete_delay``:
    how long a gracefully deleted pod stays terminating. 0 makes either transition synchronous.
    """

    def __init__(
        self,
        *,
        token: str = "test-token",
        user: str = "system:serviceaccount:nekzus:gateway",
        ready_delay: float = 0.05,
        delete_delay: float = 0.05,
        history_size: int = 1000,
        node: str | None = "node-1",
        seed: int | None = None,
    ) -> None:
        self.token, self.user = token, user
        self.ready_delay, self.delete_delay = ready_delay, delete_delay
        self.metrics_enabled = True
        # Checks /readyz reports as failing, as the real server lists "[-]etcd failed" without etcd.
        self.failing_checks: list[str] = []
        self.request_log: list[tuple[str, str]] = []
        self.objects: dict[str, dict[tuple[str, str], Obj]] = {r: {} for r in KINDS}
        self.port = 0
        self._rv = 0
        self._history: deque[Event] = deque(maxlen=history_size)
        self._floor = 0  # a watch from an older resourceVersion than this gets 410
        self._watchers: set[asyncio.Queue[Event | None]] = set()
        # Set once a client has a watch open (tests wait on it before changing what is watched).
        self.watch_opened = asyncio.Event()
        self._followers: dict[tuple[str, str], set[asyncio.Queue[tuple[str, int, str] | None]]] = {}
        self._logs: dict[tuple[str, str, str], list[tuple[int, str, str]]] = {}
        self._last_log_ns = 0
        self._metrics: dict[tuple[str, str], dict[str, dict[str, str]]] = {}
        self._node_metrics: dict[str, dict[str, str]] = {}
        self._forbidden: set[tuple[str, str, str | None]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._random = random.Random(seed)
        self._ips = self._placements = 0
        self._instant = self._syncing = False
        self._runner: web.AppRunner | None = None
        self.app = self._make_app()
        if node:
            self.add_node(node)

    # ----- serving ------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        await self.start_serving()

    async def start_serving(self) -> None:
        """Listen on 127.0.0.1: a free port the first time, the same one after ``stop_serving``."""
        if self._runner is not None:
            return
        if self.app.frozen:
            self.app = self._make_app()
        runner = web.AppRunner(self.app, handler_cancellation=True, shutdown_timeout=1.0)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port, reuse_address=True).start()
        self.port, self._runner = runner.addresses[0][1], runner

    async def stop_serving(self) -> None:
        """The API server goes away: open watches and log follows end, connections are refused."""
        if self._runner is None:
            return
        queues: list[asyncio.Queue[Any]] = [q for qs in self._followers.values() for q in qs]
        for queue in [*self._watchers, *queues]:
            queue.put_nowait(None)
        runner, self._runner = self._runner, None
        await runner.cleanup()

    async def close(self) -> None:
        await self.stop_serving()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ----- state primitives ---------------------------------------------------------------------------

    def get(self, resource: str, namespace: str, name: str) -> Obj | None:
        """The live stored object (``namespace=""`` for nodes), or None."""
        return self.objects[resource].get((namespace, name))

    def items(self, resource: str, namespace: str | None = None) -> list[Obj]:
        return [o for (ns, _), o in self.objects[resource].items() if namespace in (None, ns)]

    def _commit(self, resource: str, obj: Obj, event: str | None = None) -> Obj:
        """Store a new or changed object (or drop it, for DELETED) at a fresh resourceVersion."""
        key = (obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
        event = event or ("MODIFIED" if key in self.objects[resource] else "ADDED")
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        if event == "DELETED":
            del self.objects[resource][key]
        else:
            self.objects[resource][key] = obj
        if len(self._history) == self._history.maxlen:
            self._floor = self._history[0].rv
        self._history.append(Event(self._rv, resource, event, copy.deepcopy(obj)))
        for queue in self._watchers:
            queue.put_nowait(self._history[-1])
        return obj

    def compact(self) -> None:
        """Forget the event history: a watch from any earlier resourceVersion gets 410 Expired."""
        self._history.clear()
        self._floor = self._rv

    def cut_watches(self) -> None:
        """End every open watch cleanly, as the real server does when a watch times out."""
        for queue in self._watchers:
            queue.put_nowait(None)

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait until ``predicate()`` holds, re-checking after every object change instead of polling."""
        queue: asyncio.Queue[Event | None] = asyncio.Queue()
        self._watchers.add(queue)
        try:
            async with asyncio.timeout(timeout):
                while not predicate():
                    await queue.get()
        finally:
            self._watchers.discard(queue)

    def _later(self, delay: float, action: Callable[[], None]) -> None:
        """Run a simulated controller step after ``delay`` (at once when 0), then reconcile."""
        if delay <= 0:
            action()
            return

        async def run() -> None:
            await asyncio.sleep(delay)
            action()
            self._sync()

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _meta(self, ns: str, name: str, labels: Obj | None = None, annotations: Obj | None = None) -> Obj:
        meta = {"name": name, "namespace": ns, "uid": str(uuid.uuid4()), "creationTimestamp": rfc3339()}
        return compact(meta | {"labels": dict(labels or {}), "annotations": dict(annotations or {})})

    @staticmethod
    def owner_reference(owner: Obj) -> Obj:
        """A controller reference to ``owner`` (an object as returned by ``add_*`` or ``get``)."""
        ref = {"apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": owner["metadata"]["name"]}
        return ref | {"uid": owner["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}

    def _owned(self, resource: str, owner: Obj) -> list[Obj]:
        uid = owner["metadata"]["uid"]

        def controlled(obj: Obj) -> bool:
            refs = obj["metadata"].get("ownerReferences", [])
            return any(r.get("controller") and r["uid"] == uid for r in refs)

        return [o for o in self.objects[resource].values() if controlled(o)]

    def _suffix(self, n: int = 5) -> str:
        return "".join(self._random.choice(ALPHABET) for _ in range(n))

    # ----- nodes and pods -----------------------------------------------------------------------------

    def add_node(self, name: str, cpu: str = "4", memory: str = "8Gi", *, labels: Obj | None = None) -> Obj:
        """Add (or replace) a Ready node whose capacity and allocatable are ``cpu`` and ``memory``."""
        keys, now, old = list(self.objects["nodes"]), rfc3339(), self.get("nodes", "", name)
        index = (keys.index(("", name)) if old else len(keys)) + 1
        node_labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}
        resources = {"cpu": cpu, "memory": memory, "pods": "110", "ephemeral-storage": "100Gi"}
        ready = {"type": "Ready", "status": "True", "reason": "KubeletReady", "lastHeartbeatTime": now}
        ready |= {"message": "kubelet is posting ready status", "lastTransitionTime": now}
        info = NODE_INFO | {"bootID": str(uuid.uuid4()), "machineID": uuid.uuid4().hex, "systemUUID": name}
        addresses = [{"type": "InternalIP", "address": f"10.0.0.{index}"}]
        addresses.append({"type": "Hostname", "address": name})
        status = {"capacity": resources, "allocatable": dict(resources), "conditions": [ready]}
        status |= {"nodeInfo": info, "addresses": addresses}
        status["daemonEndpoints"] = {"kubeletEndpoint": {"Port": 10250}}
        cidr, meta = f"10.244.{index}.0/24", self._meta("", name, node_labels | (labels or {}))
        if old:
            meta |= {k: old["metadata"][k] for k in ("uid", "creationTimestamp")}
        node = {"apiVersion": "v1", "kind": "Node", "metadata": meta, "spec": {"podCIDR": cidr}}
        return self._commit("nodes", node | {"status": status})

    def _pod_status(self, pod: Obj, phase: str, ready: bool = True) -> Obj:
        """What a kubelet reports for ``phase``; start time and pod IP stay stable across calls."""
        old, now, uid = pod.get("status", {}), rfc3339(), pod["metadata"]["uid"]
        start, running = old.get("startTime", now), phase == "Running"
        ready = running and ready
        reason = "PodCompleted" if phase in TERMINAL else "ContainersNotReady"

        def condition(kind: str, ok: bool) -> Obj:
            cond = {"type": kind, "status": str(ok), "lastProbeTime": None, "lastTransitionTime": now}
            return cond if ok else cond | {"reason": reason}

        def container(c: Obj) -> Obj:
            out = {"name": c["name"], "image": c["image"], "imageID": "", "ready": ready, "restartCount": 0}
            if phase == "Pending":
                return out | {"started": False, "state": {"waiting": {"reason": "ContainerCreating"}}}
            digest = hashlib.sha256(c["image"].encode()).hexdigest()
            out["imageID"] = f"docker.io/library/{c['image'].split(':')[0]}@sha256:{digest}"
            out["containerID"] = "containerd://" + hashlib.sha256(f"{uid}/{c['name']}".encode()).hexdigest()
            if running:
                return out | {"started": True, "state": {"running": {"startedAt": start}}}
            code = int(phase == "Failed")
            ended = {"exitCode": code, "reason": "Error" if code else "Completed", "startedAt": start}
            ended |= {"finishedAt": now, "containerID": out["containerID"]}
            return out | {"started": False, "state": {"terminated": ended}}

        node = self.get("nodes", "", pod["spec"]["nodeName"])
        host_ip = node["status"]["addresses"][0]["address"] if node else "10.0.0.1"
        status: Obj = {"phase": phase, "hostIP": host_ip, "startTime": start}
        status["conditions"] = [condition("Initialized", True), condition("Ready", ready)]
        status["conditions"] += [condition("ContainersReady", ready), condition("PodScheduled", True)]
        if phase != "Pending":
            if "podIP" not in old:
                self._ips += 1
            ip = old.get("podIP") or f"10.244.{self._ips // 250}.{self._ips % 250 + 2}"
            status |= {"podIP": ip, "podIPs": [{"ip": ip}]}
        qos = "Burstable" if any(c.get("resources") for c in pod["spec"]["containers"]) else "BestEffort"
        status["containerStatuses"] = [container(c) for c in pod["spec"]["containers"]]
        return status | {"qosClass": qos}

    def _new_pod(self, ns: str, name: str, spec: Obj, meta: Obj, node: str | None) -> Obj:
        if node is None:  # the "scheduler": round robin over the nodes
            nodes = sorted(n for _, n in self.objects["nodes"]) or ["node-1"]
            node, self._placements = nodes[self._placements % len(nodes)], self._placements + 1
        spec = POD_SPEC_DEFAULTS | {"serviceAccountName": "default"} | copy.deepcopy(spec)
        spec["containers"] = [CONTAINER_DEFAULTS | c for c in spec["containers"]]
        spec |= {"nodeName": node, "serviceAccount": spec["serviceAccountName"], "priority": 0}
        pod: Obj = {"apiVersion": "v1", "kind": "Pod", "metadata": self._meta(ns, name) | meta, "spec": spec}
        pod["status"] = self._pod_status(pod, "Pending")
        return pod

    def add_pod(
        self,
        ns: str,
        name: str,
        *,
        containers: list[Obj] | None = None,
        labels: Obj | None = None,
        annotations: Obj | None = None,
        phase: str = "Running",
        ready: bool = True,
        owner: Obj | None = None,
        node: str = "node-1",
    ) -> Obj:
        """Add a pod directly in ``phase``; ``owner`` is an object (or an ownerReference) controlling it."""
        meta = compact({"labels": dict(labels or {}), "annotations": dict(annotations or {})})
        if owner is not None:
            meta["ownerReferences"] = [owner if "uid" in owner else self.owner_reference(owner)]
        pod = self._new_pod(ns, name, {"containers": containers or DEFAULT_CONTAINERS}, meta, node)
        pod["status"] = self._pod_status(pod, phase, ready)
        self._commit("pods", pod)
        self._sync()
        return pod

    def _pod(self, ns: str, name: str) -> Obj:
        if (pod := self.get("pods", ns, name)) is None:
            raise KeyError(f"no pod {ns}/{name}")
        return pod

    def set_phase(self, ns: str, name: str, phase: str) -> None:
        """Move a pod to Pending/Running/Succeeded/Failed; a finished pod's log follows end."""
        if phase not in ("Pending", "Running", *TERMINAL):
            raise ValueError(phase)
        pod = self._pod(ns, name)
        pod["status"] = self._pod_status(pod, phase)
        self._commit("pods", pod)
        if phase in TERMINAL:
            self.end_follow_streams(ns, name)
        self._sync()

    def set_ready(self, ns: str, name: str, ready: bool) -> None:
        """Flip a Running pod's readiness, as a failing or recovering readiness probe would."""
        pod = self._pod(ns, name)
        pod["status"] = self._pod_status(pod, pod["status"]["phase"], ready)
        self._commit("pods", pod)
        self._sync()

    def _start_kubelet(self, pod: Obj) -> None:
        ns, name, uid = pod["metadata"]["namespace"], pod["metadata"]["name"], pod["metadata"]["uid"]

        def run() -> None:
            current = self.get("pods", ns, name)
            if current and current["metadata"]["uid"] == uid and current["status"]["phase"] == "Pending":
                current["status"] = self._pod_status(current, "Running")
                self._commit("pods", current)

        self._later(0 if self._instant else self.ready_delay, run)

    def delete_pod(self, ns: str, name: str, grace: int | None = None, *, full_grace: bool = False) -> Obj:
        """Delete as the API does: grace 0 removes at once, else terminating for ``delete_delay``, or
        with ``full_grace`` for the whole grace period (a container that ignores SIGTERM), so a test
        sees it terminating however slowly the machine runs."""
        pod = self._terminate(self._pod(ns, name), grace, full_grace=full_grace)
        self._sync()
        return pod

    def _terminate(self, pod: Obj, grace: int | None, *, full_grace: bool = False) -> Obj:
        meta = pod["metadata"]
        grace = pod["spec"].get("terminationGracePeriodSeconds", 30) if grace is None else grace
        if grace <= 0 or pod["status"].get("phase") in TERMINAL:
            self._remove(pod)
        elif "deletionTimestamp" not in meta:
            meta |= {"deletionTimestamp": rfc3339(time.time() + grace), "deletionGracePeriodSeconds": grace}
            self._commit("pods", pod)

            def finish() -> None:
                if self.get("pods", meta["namespace"], meta["name"]) is pod:
                    self._remove(pod)

            self._later(grace if full_grace else self.delete_delay, finish)
        return pod

    def _remove(self, pod: Obj) -> None:
        ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        self._commit("pods", pod, "DELETED")
        self.end_follow_streams(ns, name)
        self._metrics.pop((ns, name), None)
        for key in [k for k in self._logs if k[:2] == (ns, name)]:
            del self._logs[key]

    # ----- workloads and their controllers ------------------------------------------------------------

    def _workload(self, resource: str, ns: str, name: str, replicas: int, spec: Obj, tmpl: Template) -> Obj:
        """Store a Deployment or StatefulSet and let the controllers bring up Running, Ready pods."""
        if self.get(resource, ns, name) is not None:
            raise ValueError(f"{resource} {ns}/{name} exists")
        labels = tmpl.get("labels") or {"app": name}
        containers = [CONTAINER_DEFAULTS | c for c in tmpl.get("containers") or DEFAULT_CONTAINERS]
        pod_template = {"metadata": compact({"labels": labels, "annotations": tmpl.get("annotations")})}
        pod_template["spec"] = POD_SPEC_DEFAULTS | {"containers": containers}
        spec |= {"replicas": replicas, "selector": {"matchLabels": dict(labels)}, "template": pod_template}
        meta = self._meta(ns, name, labels) | {"generation": 1}
        spec["revisionHistoryLimit"] = 10
        obj = {"apiVersion": "apps/v1", "kind": KINDS[resource][2], "metadata": meta, "spec": spec}
        self._commit(resource, obj | {"status": {}})
        self._instant = True
        try:
            self._sync()
        finally:
            self._instant = False
        return self.objects[resource][(ns, name)]

    def add_deployment(self, ns: str, name: str, replicas: int = 1, **template: Unpack[Template]) -> Obj:
        """A Deployment, its ReplicaSet ``{name}-{hash}`` and ``replicas`` Running, Ready pods."""
        strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}
        spec = {"strategy": strategy, "progressDeadlineSeconds": 600}
        return self._workload("deployments", ns, name, replicas, spec, template)

    def add_statefulset(self, ns: str, name: str, replicas: int = 1, **template: Unpack[Template]) -> Obj:
        """A StatefulSet with Running, Ready pods ``{name}-0`` … ``{name}-{replicas-1}``."""
        strategy = {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}
        spec = {"serviceName": name, "podManagementPolicy": "Parallel", "updateStrategy": strategy}
        return self._workload("statefulsets", ns, name, replicas, spec, template)

    def scale(self, resource: str, ns: str, name: str, replicas: int) -> None:
        """Change ``spec.replicas`` as ``kubectl scale`` would; the controllers follow."""
        if (obj := self.get(resource, ns, name)) is None:
            raise KeyError(f"no {resource} {ns}/{name}")
        self._set_spec(resource, obj, obj["spec"] | {"replicas": replicas})
        self._sync()

    def _set_spec(self, resource: str, obj: Obj, spec: Obj) -> None:
        if spec != obj["spec"]:
            obj["spec"] = spec
            obj["metadata"]["generation"] = obj["metadata"].get("generation", 1) + 1
            self._commit(resource, obj)

    def _set_status(self, resource: str, obj: Obj, status: Obj) -> None:
        status = compact(status) | {"observedGeneration": obj["metadata"].get("generation", 1)}
        if status != obj["status"]:
            obj["status"] = status
            self._commit(resource, obj)

    def _spawn(self, owner: Obj, name: str, labels: Obj, extra_spec: Obj | None = None) -> None:
        template = owner["spec"]["template"]
        meta = {"labels": labels, "ownerReferences": [self.owner_reference(owner)]}
        meta |= compact({"annotations": dict(template["metadata"].get("annotations", {}))})
        if owner["kind"] == "ReplicaSet":
            meta["generateName"] = owner["metadata"]["name"] + "-"
        spec = template["spec"] | (extra_spec or {})
        pod = self._new_pod(owner["metadata"]["namespace"], name, spec, meta, None)
        self._start_kubelet(self._commit("pods", pod))

    def _sync(self) -> None:
        """Run the controllers until nothing changes (a pass may free a slot that the next refills)."""
        if self._syncing:
            return
        self._syncing = True
        try:
            for _ in range(5):
                before = self._rv
                for deployment in list(self.objects["deployments"].values()):
                    self._sync_deployment(deployment)
                for rs in list(self.objects["replicasets"].values()):
                    self._sync_pods(rs)
                for sts in list(self.objects["statefulsets"].values()):
                    self._sync_pods(sts)
                for deployment in list(self.objects["deployments"].values()):
                    self._deployment_status(deployment)
                if self._rv == before:
                    break
        finally:
            self._syncing = False

    def _sync_deployment(self, deployment: Obj) -> None:
        """Make the ReplicaSet for the current template hold all replicas; scale older ones to 0."""
        ns, name = deployment["metadata"]["namespace"], deployment["metadata"]["name"]
        template, replicas = deployment["spec"]["template"], deployment["spec"]["replicas"]
        digest = template_hash(template)
        sets = self._owned("replicasets", deployment)
        if self.get("replicasets", ns, f"{name}-{digest}") is None:
            revision = str(1 + max((int(rs["metadata"]["annotations"][REVISION]) for rs in sets), default=0))
            labels = template["metadata"].get("labels", {}) | {"pod-template-hash": digest}
            annotations = {REVISION: revision, "deployment.kubernetes.io/desired-replicas": str(replicas)}
            meta = self._meta(ns, f"{name}-{digest}", labels, annotations) | {"generation": 1}
            meta["ownerReferences"] = [self.owner_reference(deployment)]
            match = deployment["spec"]["selector"]["matchLabels"] | {"pod-template-hash": digest}
            rs_template = {"metadata": template["metadata"] | {"labels": labels}, "spec": template["spec"]}
            spec = {"replicas": replicas, "selector": {"matchLabels": match}, "template": rs_template}
            new: Obj = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": meta, "spec": spec}
            sets.append(self._commit("replicasets", new | {"status": {}}))
            deployment["metadata"].setdefault("annotations", {})[REVISION] = revision
            self._commit("deployments", deployment)
        for rs in sets:
            want = replicas if rs["metadata"]["name"] == f"{name}-{digest}" else 0
            self._set_spec("replicasets", rs, rs["spec"] | {"replicas": want})

    def _deployment_status(self, deployment: Obj) -> None:
        sets = self._owned("replicasets", deployment)
        current = f"{deployment['metadata']['name']}-{template_hash(deployment['spec']['template'])}"
        total = sum(rs["status"].get("replicas", 0) for rs in sets)
        ready = sum(rs["status"].get("readyReplicas", 0) for rs in sets)
        updated = sum(rs["status"].get("replicas", 0) for rs in sets if rs["metadata"]["name"] == current)
        status = {"replicas": total, "updatedReplicas": updated, "readyReplicas": ready}
        status |= {"availableReplicas": ready, "unavailableReplicas": max(0, total - ready)}
        self._set_status("deployments", deployment, status)

    def _sync_pods(self, owner: Obj) -> None:
        """ReplicaSet: any free name, excess pods (unready, then newest) deleted. StatefulSet: one pod per
        ordinal, refilled only once the old pod is gone; stale-revision and finished pods replaced."""
        ns, name, want = owner["metadata"]["namespace"], owner["metadata"]["name"], owner["spec"]["replicas"]
        template = owner["spec"]["template"]
        pods = self._owned("pods", owner)
        active = [p for p in pods if is_active(p)]
        labels = dict(template["metadata"].get("labels", {}))
        status: Obj = {}
        if owner["kind"] == "ReplicaSet":
            for _ in range(want - len(active)):
                while self.get("pods", ns, pod_name := f"{name}-{self._suffix()}"):
                    pass
                self._spawn(owner, pod_name, labels)
            for pod in sorted(reversed(active), key=is_ready)[: max(0, len(active) - want)]:
                self._terminate(pod, None)
        else:
            revision = f"{name}-{template_hash(template)}"
            by_name = {p["metadata"]["name"]: p for p in pods}
            for ordinal in range(want):
                existing = by_name.get(pod_name := f"{name}-{ordinal}")
                if existing is None:
                    pod_labels = labels | {"controller-revision-hash": revision}
                    pod_labels["statefulset.kubernetes.io/pod-name"] = pod_name
                    extra = {"hostname": pod_name, "subdomain": owner["spec"]["serviceName"]}
                    self._spawn(owner, pod_name, pod_labels, extra)
                elif "deletionTimestamp" not in existing["metadata"] and (
                    existing["metadata"]["labels"].get("controller-revision-hash") != revision
                    or not is_active(existing)
                ):  # a stale revision or a finished pod is deleted, and comes back once it is gone
                    self._terminate(existing, None)
            for pod in active:
                if int(pod["metadata"]["name"].rsplit("-", 1)[1]) >= want:
                    self._terminate(pod, None)
            status = {"currentRevision": revision, "updateRevision": revision}
        active = [p for p in self._owned("pods", owner) if is_active(p)]
        ready, current = sum(map(is_ready, active)), status.get("updateRevision")
        status |= {"replicas": len(active), "readyReplicas": ready, "availableReplicas": ready}
        if current:
            updated = sum(p["metadata"]["labels"].get("controller-revision-hash") == current for p in active)
            status |= {"currentReplicas": updated, "updatedReplicas": updated}
        else:
            status["fullyLabeledReplicas"] = len(active)
        self._set_status(f"{owner['kind'].lower()}s", owner, status)

    # ----- logs, metrics, RBAC ------------------------------------------------------------------------

    def append_log(
        self, ns: str, pod: str, container: str, text: str, *, stream: str = "stdout", at: float | None = None
    ) -> str:
        """Append a line per line of ``text``; returns the last one's RFC3339Nano timestamp. ``at``
        (Unix seconds) stamps them at that time instead of now, yet never before an earlier line."""
        if container not in [c["name"] for c in self._pod(ns, pod)["spec"]["containers"]]:
            raise KeyError(f"no container {container} in pod {ns}/{pod}")
        stamp = self._last_log_ns
        for line in text.splitlines() or [""]:
            now = time.time_ns() if at is None else int(at * 1_000_000_000)
            stamp = self._last_log_ns = max(now, self._last_log_ns + 1)
            self._logs.setdefault((ns, pod, container), []).append((stamp, stream, line))
            for queue in self._followers.get((ns, pod), ()):
                queue.put_nowait((container, stamp, line))
        return rfc3339_nano(stamp)

    def end_follow_streams(self, ns: str, pod: str) -> None:
        """End the pod's open ``follow`` streams while it keeps running (the server's ~4 h cap)."""
        for queue in self._followers.pop((ns, pod), set()):
            queue.put_nowait(None)

    def set_metrics(self, ns: str, pod: str, usage: dict[str, dict[str, str]]) -> None:
        """What metrics-server reports for the pod: ``{container: {"cpu": "250m", "memory": "64Mi"}}``."""
        self._metrics[(ns, pod)] = copy.deepcopy(usage)

    def set_node_metrics(self, node: str, *, cpu: str, memory: str) -> None:
        """What metrics-server reports for a node: its usage, e.g. ``cpu="1500m", memory="3Gi"``."""
        self._node_metrics[node] = {"cpu": cpu, "memory": memory}

    def forbid(self, verb: str, resource: str, namespace: str | None = None) -> None:
        """Deny ``verb`` on ``resource`` (``pods``, ``pods/log``, ``deployments/scale``,
        ``pods.metrics.k8s.io``…) in ``namespace``, or everywhere when None. A denial in one namespace
        also denies the cluster-scope request, which needs the permission in all of them."""
        self._forbidden.add((verb, resource, namespace))

    def allow(self, verb: str, resource: str, namespace: str | None = None) -> None:
        self._forbidden.discard((verb, resource, namespace))

    def _authorize(self, verb: str, resource: str, ns: str | None, name: str | None = None) -> None:
        if (verb, resource) not in {(v, r) for v, r, n in self._forbidden if None in (n, ns) or n == ns}:
            return
        base, _, group = resource.split("/")[0].partition(".")
        group = group or KINDS.get(base, ("",))[0]
        subject = (f"{base}.{group}" if group else base) + (f' "{name}"' if name else "")
        scope = f'in the namespace "{ns}"' if ns else "at the cluster scope"
        plain = resource.replace(f".{group}", "")
        message = f'{subject} is forbidden: User "{self.user}" cannot {verb} resource "{plain}" in API group '
        details = compact({"name": name, "group": group}) | {"kind": base}
        raise Fail(403, "Forbidden", f'{message}"{group}" {scope}', details)

    # ----- HTTP ---------------------------------------------------------------------------------------

    def _make_app(self) -> web.Application:
        @web.middleware
        async def middleware(
            request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
        ) -> web.StreamResponse:
            self.request_log.append((request.method, request.path_qs))
            try:
                if request.headers.get("Authorization") != f"Bearer {self.token}":
                    raise Fail(401, "Unauthorized", "Unauthorized")
                if request.path.startswith("/apis/metrics.k8s.io") and not self.metrics_enabled:
                    return web.Response(status=404, text="404 page not found\n")
                return await handler(request)
            except Fail as failure:
                return web.json_response(failure.body, status=failure.body["code"])

        app = web.Application(middlewares=[middleware])
        core, apps = "/api/v1", "/apis/apps/v1/namespaces/{ns}"
        workloads, metrics = "{res:deployments|statefulsets|replicasets}", "/apis/metrics.k8s.io/v1beta1"
        scalable = "{res:deployments|statefulsets}"
        routes: list[tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]]]] = [
            ("GET", "/version", self._version),
            ("GET", "/readyz", self._readyz),
            ("GET", core + "/{res:pods|nodes}", self._list),
            ("GET", core + "/namespaces/{ns}/{res:pods}", self._list),
            ("POST", core + "/namespaces/{ns}/pods", self._create_pod),
            ("GET", core + "/namespaces/{ns}/{res:pods}/{name}", self._get),
            ("DELETE", core + "/namespaces/{ns}/pods/{name}", self._delete_pod),
            ("GET", core + "/namespaces/{ns}/pods/{name}/log", self._log),
            ("GET", core + "/{res:nodes}/{name}", self._get),
            ("GET", "/apis/apps/v1/" + workloads, self._list),
            ("GET", f"{apps}/{workloads}", self._list),
            ("GET", f"{apps}/{workloads}/{{name}}", self._get),
            ("PATCH", f"{apps}/{workloads}/{{name}}", self._patch),
            *((m, f"{apps}/{scalable}/{{name}}/scale", self._scale) for m in ("GET", "PATCH", "PUT")),
            ("GET", metrics, self._metrics_discovery),
            ("GET", metrics + "/pods", self._pod_metrics),
            ("GET", metrics + "/namespaces/{ns}/pods", self._pod_metrics),
            ("GET", metrics + "/namespaces/{ns}/pods/{name}", self._pod_metrics),
            ("GET", metrics + "/nodes", self._node_metrics_of),
            ("GET", metrics + "/nodes/{name}", self._node_metrics_of),
            ("*", "/{tail:.*}", self._unknown),
        ]
        for method, path, handler in routes:
            app.router.add_route(method, path, handler)
        return app

    async def _unknown(self, request: web.Request) -> web.Response:
        if request.path.startswith(("/api/", "/apis/")):
            raise Fail(404, "NotFound", "the server could not find the requested resource", {})
        return web.Response(status=404, text="404 page not found\n")

    async def _version(self, request: web.Request) -> web.Response:
        return web.json_response(VERSION)

    async def _readyz(self, request: web.Request) -> web.Response:
        if not self.failing_checks:
            return web.Response(text="ok")
        lines = [f"[-]{check} failed: reason withheld" for check in self.failing_checks]
        return web.Response(status=500, text="[+]ping ok\n" + "\n".join(lines) + "\nreadyz check failed\n")

    @staticmethod
    def _matches(obj: Obj, request: web.Request) -> bool:
        meta, spec, status = obj["metadata"], obj.get("spec", {}), obj.get("status", {})
        fields = {"metadata.name": meta["name"], "metadata.namespace": meta.get("namespace", "")}
        fields |= {"spec.nodeName": spec.get("nodeName", ""), "status.phase": status.get("phase", "")}
        labels = selects(request.query.get("labelSelector", ""), meta.get("labels", {}))
        return labels and selects(request.query.get("fieldSelector", ""), fields)

    def _select(self, resource: str, ns: str | None, request: web.Request) -> list[Obj]:
        return [o for o in self.items(resource, ns) if self._matches(o, request)]

    def _find(self, resource: str, ns: str | None, name: str) -> Obj:
        if (obj := self.get(resource, ns or "", name)) is None:
            raise not_found(resource, name)
        return obj

    async def _list(self, request: web.Request) -> web.StreamResponse:
        resource, ns = request.match_info["res"], request.match_info.get("ns")
        if flag(request.query.get("watch")):
            self._authorize("watch", resource, ns)
            return await self._watch(request, resource, ns)
        self._authorize("list", resource, ns)
        _, api_version, kind = KINDS[resource]
        found = self._select(resource, ns, request)
        items = [{k: v for k, v in o.items() if k not in ("kind", "apiVersion")} for o in found]
        body = {
            "kind": f"{kind}List",
            "apiVersion": api_version,
            "metadata": {"resourceVersion": f"{self._rv}"},
        }
        return web.json_response(body | {"items": items})

    async def _watch(self, request: web.Request, resource: str, ns: str | None) -> web.StreamResponse:
        """Replay history after ``resourceVersion`` (ADDED for everything when unset or 0), then follow."""
        _, api_version, kind = KINDS[resource]
        since = request.query.get("resourceVersion", "")
        timeout = int_param(request, "timeoutSeconds")
        bookmarks = flag(request.query.get("allowWatchBookmarks"))

        def wanted(event: Event) -> bool:
            in_namespace = ns in (None, event.object["metadata"].get("namespace"))
            return event.resource == resource and in_namespace and self._matches(event.object, request)

        if since in ("", "0"):
            current = self._select(resource, ns, request)
            backlog = [Event(self._rv, resource, "ADDED", copy.deepcopy(o)) for o in current]
        elif not since.isdigit():
            raise Fail(400, "BadRequest", f"invalid resource version: {since}")
        elif int(since) < self._floor:
            expired = status_body(410, "Expired", f"too old resource version: {since} ({self._floor})")
            backlog = [Event(self._rv, resource, "ERROR", expired)]
        else:
            backlog = [e for e in self._history if e.rv > int(since) and wanted(e)]
        queue: asyncio.Queue[Event | None] = asyncio.Queue()
        if not backlog or backlog[0].type != "ERROR":
            self._watchers.add(queue)
            self.watch_opened.set()
        response = web.StreamResponse(headers={"Content-Type": "application/json"})

        async def send(event_type: str, obj: Obj) -> None:
            if event_type != "BOOKMARK" or bookmarks:
                await response.write(json.dumps({"type": event_type, "object": obj}).encode() + b"\n")

        def mark() -> Obj:
            return {"kind": kind, "apiVersion": api_version, "metadata": {"resourceVersion": str(self._rv)}}

        try:
            await response.prepare(request)
            for event in backlog:
                await send(event.type, event.object)
            if queue in self._watchers:
                try:
                    async with asyncio.timeout(timeout):
                        while (change := await queue.get()) is not None:
                            if change.type == "BOOKMARK" or wanted(change):
                                await send(
                                    change.type, mark() if change.type == "BOOKMARK" else change.object
                                )
                except TimeoutError:  # the real server marks where a client should resume
                    await send("BOOKMARK", mark())
        except ConnectionResetError:
            pass
        finally:
            self._watchers.discard(queue)
        return response

    async def _get(self, request: web.Request) -> web.Response:
        info = request.match_info
        resource, ns, name = info["res"], info.get("ns"), info["name"]
        self._authorize("get", resource, ns, name)
        return web.json_response(self._find(resource, ns, name))

    async def _body(self, request: web.Request) -> Any:
        try:
            return await request.json() if request.can_read_body else {}
        except ValueError as error:
            raise Fail(400, "BadRequest", f"error decoding request body: {error}") from None

    async def _create_pod(self, request: web.Request) -> web.Response:
        ns = request.match_info["ns"]
        self._authorize("create", "pods", ns)
        body = await self._body(request)
        meta, spec = body.get("metadata") or {}, body.get("spec") or {}
        name = meta.get("name") or (meta["generateName"] + self._suffix() if meta.get("generateName") else "")
        if not name or not spec.get("containers"):
            field = "spec.containers: Required value" if name else "metadata.name: Required value"
            raise Fail(422, "Invalid", f'Pod "{name}" is invalid: {field}', {"name": name, "kind": "Pod"})
        if self.get("pods", ns, name) is not None:
            raise Fail(409, "AlreadyExists", f'pods "{name}" already exists', {"name": name, "kind": "pods"})
        kept = {k: meta[k] for k in ("labels", "annotations", "ownerReferences", "generateName") if k in meta}
        pod = self._commit("pods", self._new_pod(ns, name, spec, kept, spec.get("nodeName")))
        created = copy.deepcopy(pod)
        self._start_kubelet(pod)
        self._sync()
        return web.json_response(created, status=201)

    async def _delete_pod(self, request: web.Request) -> web.Response:
        ns, name = request.match_info["ns"], request.match_info["name"]
        self._authorize("delete", "pods", ns, name)
        body, grace = await self._body(request), int_param(request, "gracePeriodSeconds")
        grace = grace if grace is not None else (body or {}).get("gracePeriodSeconds")
        current = self._find("pods", ns, name)
        # DeleteOptions.preconditions: only the pod with that uid, not one that took its name.
        uid = ((body or {}).get("preconditions") or {}).get("uid")
        if uid is not None and uid != current["metadata"]["uid"]:
            message = f"Precondition failed: UID in precondition: {uid}, UID in object meta: "
            raise Fail(409, "Conflict", message + current["metadata"]["uid"])
        pod = copy.deepcopy(self._terminate(current, grace))
        self._sync()
        return web.json_response(pod)

    async def _patched(self, request: web.Request, current: Obj) -> Obj:
        """The request's merge patch (strategic treated alike) applied to ``current``."""
        body = await self._body(request)
        try:
            if request.content_type in MERGE_TYPES and isinstance(body, dict):
                return dict(merge_patch(current, body))
        except (ValueError, KeyError, IndexError, TypeError) as error:
            message = f"the server rejected our request due to an error in our request: {error}"
            raise Fail(422, "Invalid", message) from None
        if request.content_type in MERGE_TYPES:
            raise Fail(400, "BadRequest", f"error decoding patch: unexpected {type(body).__name__}")
        raise Fail(415, "UnsupportedMediaType", UNKNOWN_FORMAT)

    @staticmethod
    def _check(resource: str, obj: Obj, new: Obj, kind: str) -> int:
        """The resourceVersion precondition (409) and a non-negative ``spec.replicas`` (422)."""
        name, wanted = obj["metadata"]["name"], (new.get("metadata") or {}).get("resourceVersion")
        if wanted and wanted != obj["metadata"]["resourceVersion"]:
            message = f'Operation cannot be fulfilled on {resource}.apps "{name}": the object has been '
            message += "modified; please apply your changes to the latest version and try again"
            raise Fail(409, "Conflict", message, {"name": name, "group": "apps", "kind": resource})
        replicas = (new.get("spec") or {}).get("replicas")
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            message = f'{kind} "{name}" is invalid: spec.replicas: Invalid value: {json.dumps(replicas)}: '
            kind, _, group = kind.partition(".")
            message += "must be greater than or equal to 0"
            raise Fail(422, "Invalid", message, {"name": name, "group": group, "kind": kind})
        return replicas

    async def _patch(self, request: web.Request) -> web.Response:
        resource, ns, name = (request.match_info[k] for k in ("res", "ns", "name"))
        self._authorize("patch", resource, ns, name)
        obj = self._find(resource, ns, name)
        new = await self._patched(request, obj)
        self._check(resource, obj, new, f"{obj['kind']}.apps")
        fixed = {k: v for k, v in obj["metadata"].items() if k in FIXED_METADATA}
        meta, spec = (new.get("metadata") or {}) | fixed, new["spec"]
        if meta != obj["metadata"] or spec != obj["spec"]:  # status is a subresource: a patch leaves it alone
            meta["generation"] = meta.get("generation", 1) + (spec != obj["spec"])
            obj["metadata"], obj["spec"] = meta, spec
            self._commit(resource, obj)
        snapshot = copy.deepcopy(obj)
        self._sync()
        return web.json_response(snapshot)

    @staticmethod
    def _scale_of(obj: Obj) -> Obj:
        meta, labels = obj["metadata"], obj["spec"]["selector"].get("matchLabels", {})
        out_meta = {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")}
        selector = ",".join(f"{k}={v}" for k, v in labels.items())
        status = {"replicas": obj["status"].get("replicas", 0), "selector": selector}
        scale = {"kind": "Scale", "apiVersion": "autoscaling/v1", "metadata": out_meta}
        return scale | {"spec": {"replicas": obj["spec"]["replicas"]}, "status": status}

    async def _scale(self, request: web.Request) -> web.Response:
        resource, ns, name = (request.match_info[k] for k in ("res", "ns", "name"))
        verb = {"GET": "get", "PATCH": "patch", "PUT": "update"}[request.method]
        self._authorize(verb, f"{resource}/scale", ns, name)
        obj = self._find(resource, ns, name)
        if verb == "get":
            return web.json_response(self._scale_of(obj))
        new = await (self._patched(request, self._scale_of(obj)) if verb == "patch" else self._body(request))
        if not isinstance(new, dict):
            raise Fail(400, "BadRequest", "the body must be a Scale object")
        replicas = self._check(resource, obj, new, "Scale.autoscaling")
        self._set_spec(resource, obj, obj["spec"] | {"replicas": replicas})
        scale = self._scale_of(obj)
        self._sync()
        return web.json_response(scale)

    async def _log(self, request: web.Request) -> web.StreamResponse:
        ns, name, query = request.match_info["ns"], request.match_info["name"], request.query
        self._authorize("get", "pods/log", ns, name)
        pod = self._find("pods", ns, name)
        names = [c["name"] for c in pod["spec"]["containers"]]
        container = query.get("container") or (names[0] if len(names) == 1 else None)
        if container is None:
            message = f"a container name must be specified for pod {name}, choose one of: [{' '.join(names)}]"
            raise Fail(400, "BadRequest", message)
        if container not in names:
            raise Fail(400, "BadRequest", f"container {container} is not valid for pod {name}")
        state = next(s["state"] for s in pod["status"]["containerStatuses"] if s["name"] == container)
        if "waiting" in state:
            why = state["waiting"]["reason"]
            raise Fail(
                400, "BadRequest", f'container "{container}" in pod "{name}" is waiting to start: {why}'
            )
        lines, tail, since = self._logs.get((ns, name, container), []), int_param(request, "tailLines"), 0
        if tail is not None:  # like the kubelet: the tail first, then the time filter
            lines = lines[-tail:] if tail > 0 else []
        if query.get("sinceTime"):
            try:
                since = parse_rfc3339(query["sinceTime"])
            except ValueError:
                raise Fail(400, "BadRequest", f'invalid sinceTime "{query["sinceTime"]}"') from None
        if (seconds := int_param(request, "sinceSeconds")) is not None:
            since = max(since, time.time_ns() - seconds * 1_000_000_000)
        timestamps = flag(query.get("timestamps"))

        def render(stamp: int, text: str) -> bytes:
            return (f"{rfc3339_nano(stamp)} {text}\n" if timestamps else f"{text}\n").encode()

        backlog = b"".join(render(stamp, text) for stamp, _, text in lines if stamp >= since)
        if not flag(query.get("follow")) or pod["status"]["phase"] in TERMINAL:
            return web.Response(body=backlog, content_type="text/plain")
        queue: asyncio.Queue[tuple[str, int, str] | None] = asyncio.Queue()
        self._followers.setdefault((ns, name), set()).add(queue)
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        try:
            await response.prepare(request)
            await response.write(backlog)
            while (item := await queue.get()) is not None:
                if item[0] == container:
                    await response.write(render(item[1], item[2]))
        except ConnectionResetError:
            pass
        finally:
            self._followers.get((ns, name), set()).discard(queue)
        return response

    async def _metrics_discovery(self, request: web.Request) -> web.Response:
        resources = [
            {"name": n, "singularName": "", "namespaced": n == "pods", "kind": k, "verbs": ["get", "list"]}
            for n, k in (("nodes", "NodeMetrics"), ("pods", "PodMetrics"))
        ]
        body = {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "metrics.k8s.io/v1beta1"}
        return web.json_response(body | {"resources": resources})

    async def _pod_metrics(self, request: web.Request) -> web.Response:
        ns, name = request.match_info.get("ns"), request.match_info.get("name")
        self._authorize("list" if name is None else "get", "pods.metrics.k8s.io", ns, name)
        items = []
        for pod in self._select("pods", ns, request):
            meta = pod["metadata"]
            usage = self._metrics.get((meta["namespace"], meta["name"]))
            if usage is None or name not in (None, meta["name"]):
                continue
            out_meta = {k: meta[k] for k in ("name", "namespace", "labels") if k in meta}
            out_meta["creationTimestamp"] = rfc3339()
            containers = [{"name": c, "usage": dict(u)} for c, u in usage.items()]
            metrics = {"kind": "PodMetrics", "apiVersion": "metrics.k8s.io/v1beta1", "metadata": out_meta}
            items.append(metrics | {"timestamp": rfc3339(), "window": "30s", "containers": containers})
        if name is None:
            body = {"kind": "PodMetricsList", "apiVersion": "metrics.k8s.io/v1beta1", "metadata": {}}
            return web.json_response(body | {"items": items})
        if not items:
            details = {"name": f"{ns}/{name}", "group": "metrics.k8s.io", "kind": "pods"}
            raise Fail(404, "NotFound", f'podmetrics.metrics.k8s.io "{ns}/{name}" not found', details)
        return web.json_response(items[0])

    async def _node_metrics_of(self, request: web.Request) -> web.Response:
        """NodeMetrics of the nodes that exist and have usage set (``set_node_metrics``)."""
        name = request.match_info.get("name")
        self._authorize("list" if name is None else "get", "nodes.metrics.k8s.io", None, name)
        items = []
        for node in self.items("nodes"):
            node_name = node["metadata"]["name"]
            usage = self._node_metrics.get(node_name)
            if usage is None or name not in (None, node_name):
                continue
            meta = {"name": node_name, "labels": node["metadata"].get("labels", {})}
            metrics = {"kind": "NodeMetrics", "apiVersion": "metrics.k8s.io/v1beta1", "metadata": meta}
            items.append(metrics | {"timestamp": rfc3339(), "window": "30s", "usage": dict(usage)})
        if name is None:
            body = {"kind": "NodeMetricsList", "apiVersion": "metrics.k8s.io/v1beta1", "metadata": {}}
            return web.json_response(body | {"items": items})
        if not items:
            details = {"name": name, "group": "metrics.k8s.io", "kind": "nodes"}
            raise Fail(404, "NotFound", f'nodemetrics.metrics.k8s.io "{name}" not found', details)
        return web.json_response(items[0])
