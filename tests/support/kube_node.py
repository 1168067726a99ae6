"""A node agent that plays the kubelet (and the scheduler) for the real control plane test tier.

Run as ``python -m tests.support.kube_node --kubeconfig PATH --node NAME --state-dir DIR``. It registers a
Node whose only address is 127.0.0.1 (so the apiserver never resolves the node name), binds pending
pods to it, reports them Running and Ready, finishes their deletion, serves their logs to the
apiserver's log proxy like a kubelet does, and keeps PodMetrics objects when a metrics CRD exists.

Nothing is executed: a container is a description whose logs are driven by its env, so tests
control them:

- ``LOG_LINES`` (int, default 0): lines ``line 1`` .. ``line N`` exist when the container starts.
- ``LOG_INTERVAL`` (float seconds): afterwards one more line every interval while the pod runs.
- ``LOG_FOLLOW_MAX`` (float seconds): follow streams are closed by the server after that long
  (as the real apiserver/kubelet eventually do) while the pod still runs.
- ``CPU_USAGE`` / ``MEM_USAGE`` (quantities, default ``100m`` / ``32Mi``): the PodMetrics usage.

Line k has a fixed, strictly increasing nanosecond timestamp (the moment it is produced), computed
rather than stored, so any number of pods can log without the agent doing work until someone reads.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime
import hashlib
import json
import logging
import math
import re
import signal
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web

from nekzus.security.tls import generate_self_signed

log = logging.getLogger("kube_node")

NODE_IP = "127.0.0.1"
METRICS_CRD = "pods.metrics.k8s.io"
METRICS_PATH = "/apis/metrics.k8s.io/v1beta1"
CRD_PATH = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{METRICS_CRD}"
METRICS_REFRESH = 15.0
RETRYABLE = {429, 500, 502, 503, 504}
CONCURRENCY = 48
MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
RFC3339 = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)$", re.IGNORECASE)


def rfc3339(ns: int) -> str:
    """Seconds precision, as metav1.Time serialises."""
    return datetime.datetime.fromtimestamp(ns // 1_000_000_000, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def rfc3339_nano(ns: int) -> str:
    """Go's RFC3339Nano, as a kubelet writes log timestamps: trailing zeros of the fraction dropped."""
    seconds, frac = divmod(ns, 1_000_000_000)
    base = datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    digits = f"{frac:09d}".rstrip("0")
    return f"{base}.{digits}Z" if digits else f"{base}Z"


def parse_rfc3339(text: str) -> int:
    """Nanoseconds since the epoch for an RFC 3339 time with up to nine fractional digits."""
    match = RFC3339.match(text.strip())
    if match is None:
        raise ValueError(f"not an RFC 3339 time: {text!r}")
    base, frac, zone = match.groups()
    offset = "+00:00" if zone.upper() == "Z" else zone
    seconds = int(datetime.datetime.fromisoformat(base + offset).timestamp())
    return seconds * 1_000_000_000 + int((frac or "").ljust(9, "0"))


class ApiError(Exception):
    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"HTTP {status}: {body}")
        self.status = status
        self.body = body


class Gone(Exception):
    """The watch's resourceVersion is too old: list again."""


@dataclass
class ApiConfig:
    server: str
    token: str
    ssl: ssl.SSLContext


def load_kubeconfig(path: Path) -> ApiConfig:
    """Server, bearer token and CA from the kubeconfig's current context (the forms the tier writes)."""
    config = yaml.safe_load(path.read_text())
    contexts = {c["name"]: c["context"] for c in config.get("contexts") or []}
    context = (
        contexts[config["current-context"]]
        if config.get("current-context")
        else next(iter(contexts.values()))
    )
    cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == context["cluster"])
    user = next(u["user"] for u in config["users"] if u["name"] == context["user"])
    token = user.get("token") or Path(user["tokenFile"]).read_text().strip()
    ctx = ssl.create_default_context()
    if cluster.get("certificate-authority-data"):
        ctx.load_verify_locations(cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
    elif cluster.get("certificate-authority"):
        ctx.load_verify_locations(cafile=cluster["certificate-authority"])
    return ApiConfig(server=cluster["server"].rstrip("/"), token=token, ssl=ctx)


class Api:
    """A thin JSON client for the apiserver; one connection pool shared by every request."""

    def __init__(self, config: ApiConfig) -> None:
        self.config = config
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=CONCURRENCY + 16, ssl=config.ssl),
            headers={"Authorization": f"Bearer {config.token}", "Accept": "application/json"},
            timeout=aiohttp.ClientTimeout(total=30, sock_connect=5),
        )

    async def close(self) -> None:
        await self.session.close()

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        params: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> Any:
        data = None if body is None else json.dumps(body)
        headers = {"Content-Type": content_type} if data is not None else None
        async with self.session.request(
            method, self.config.server + path, data=data, params=params, headers=headers
        ) as resp:
            raw = await resp.read()
            try:
                decoded = json.loads(raw) if raw else None
            except ValueError:
                decoded = raw.decode(errors="replace")
            if resp.status >= 300:
                raise ApiError(resp.status, decoded)
            return decoded

    def stream(self, path: str, params: dict[str, str]) -> Any:
        """A GET whose body is read incrementally (watches): no total timeout."""
        return self.session.get(
            self.config.server + path,
            params=params,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=None),
        )


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: str(e["value"]) for e in container.get("env") or [] if "value" in e}


def _float(value: str | None) -> float | None:
    if value is None or value == "":
        return None
    number = float(value)
    return number if number > 0 and math.isfinite(number) else None


@dataclass
class ContainerLog:
    """The log of one container as a function of time; line k (1-based) never changes once produced."""

    start_ns: int
    initial: int
    interval_ns: int | None
    follow_max: float | None
    end_ns: int | None = None

    @classmethod
    def from_env(cls, env: dict[str, str], start_ns: int) -> ContainerLog:
        interval = _float(env.get("LOG_INTERVAL"))
        return cls(
            start_ns=start_ns,
            initial=max(0, int(env.get("LOG_LINES") or 0)),
            interval_ns=max(1, round(interval * 1e9)) if interval else None,
            follow_max=_float(env.get("LOG_FOLLOW_MAX")),
        )

    def ts(self, k: int) -> int:
        if k <= self.initial:
            return self.start_ns + k - 1
        assert self.interval_ns is not None
        return self.start_ns + self.initial - 1 + (k - self.initial) * self.interval_ns

    def count_at(self, t_ns: int) -> int:
        """How many lines exist at time ``t_ns`` (lines stop when the pod goes)."""
        if self.end_ns is not None:
            t_ns = min(t_ns, self.end_ns)
        if t_ns < self.start_ns:
            return 0
        if t_ns < self.start_ns + self.initial - 1:
            return t_ns - self.start_ns + 1
        if self.interval_ns is None:
            return self.initial
        return self.initial + (t_ns - (self.start_ns + self.initial - 1)) // self.interval_ns

    def next_line_ns(self, k: int) -> int | None:
        """When line k appears, or None if it never will."""
        if k <= self.initial:
            return self.ts(k)
        if self.interval_ns is None:
            return None
        when = self.ts(k)
        return None if self.end_ns is not None and when > self.end_ns else when


@dataclass
class PodState:
    """A pod this node runs: its logs, metrics usage and the signal that ends its log streams."""

    namespace: str
    name: str
    uid: str
    started: str
    logs: dict[str, ContainerLog]
    usage: dict[str, dict[str, str]]
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    status_done: bool = False

    def close(self) -> None:
        now = time.time_ns()
        for clog in self.logs.values():
            if clog.end_ns is None:
                clog.end_ns = now
        self.closed.set()


def self_signed(directory: Path) -> ssl.SSLContext:
    """The kubelet endpoint's own certificate; the apiserver does not verify it (no kubelet CA set)."""
    cert_pem, key_pem = generate_self_signed(NODE_IP)
    cert_path, key_path = directory / "kubelet.crt", directory / "kubelet.key"
    cert_path.write_bytes(cert_pem)
    key_path.write_bytes(key_pem)
    key_path.chmod(0o600)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert_path, key_path)
    return ctx


def _is_running(pod: dict[str, Any]) -> bool:
    status = pod.get("status") or {}
    statuses = status.get("containerStatuses") or []
    return (
        status.get("phase") == "Running"
        and len(statuses) == len(pod["spec"]["containers"])
        and all(s.get("ready") for s in statuses)
    )


def _digest(*parts: str) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()


class NodeAgent:
    def __init__(self, api: Api, node: str, state_dir: Path, heartbeat: float) -> None:
        self.api = api
        self.node = node
        self.state_dir = state_dir
        self.heartbeat = heartbeat
        self.port = 0
        self.pods: dict[tuple[str, str], PodState] = {}
        self.seen: dict[str, tuple[str, str]] = {}
        self.pending: dict[str, dict[str, Any]] = {}
        self.busy: set[str] = set()
        self.backoff: dict[str, float] = {}
        self.tasks: set[asyncio.Task[Any]] = set()
        self.limit = asyncio.Semaphore(CONCURRENCY)
        self.stopping = asyncio.Event()
        self.metrics_uid: str | None = None
        self.metrics_written: set[str] = set()
        self.metrics_wake = asyncio.Event()
        self.runner: web.AppRunner | None = None

    def spawn(self, coro: Awaitable[Any]) -> None:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def run(self) -> None:
        await self.start_server()
        await self.register()
        (self.state_dir / "agent.json").write_text(json.dumps({"node": self.node, "port": self.port}))
        log.info("node %s registered, kubelet endpoint https://%s:%d", self.node, NODE_IP, self.port)
        loops = [
            asyncio.ensure_future(self.heartbeat_loop()),
            asyncio.ensure_future(self.watch_loop()),
            asyncio.ensure_future(self.metrics_loop()),
        ]
        await self.stopping.wait()
        log.info("stopping")
        for state in self.pods.values():
            state.closed.set()
        for task in [*loops, *self.tasks]:
            task.cancel()
        await asyncio.gather(*loops, *self.tasks, return_exceptions=True)
        if self.runner is not None:
            await self.runner.cleanup()

    async def start_server(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/containerLogs/{namespace}/{pod}/{container}", self.container_logs)
        # Cancelling the handler when the client goes is what frees a follow stream nobody reads.
        self.runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=2, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, NODE_IP, 0, ssl_context=self_signed(self.state_dir))
        await site.start()
        self.port = int(self.runner.addresses[0][1])

    @staticmethod
    def conditions(now: str, *, transition: bool) -> list[dict[str, Any]]:
        """The node's conditions, all healthy; heartbeats leave lastTransitionTime alone."""
        found = [
            ("MemoryPressure", "False", "KubeletHasSufficientMemory", "enough memory"),
            ("DiskPressure", "False", "KubeletHasNoDiskPressure", "no disk pressure"),
            ("PIDPressure", "False", "KubeletHasSufficientPID", "enough PIDs"),
            ("Ready", "True", "KubeletReady", "nekzus test node agent is posting ready status"),
        ]
        return [
            {
                "type": kind,
                "status": status,
                "reason": reason,
                "message": message,
                "lastHeartbeatTime": now,
                **({"lastTransitionTime": now} if transition else {}),
            }
            for kind, status, reason, message in found
        ]

    def node_status(self) -> dict[str, Any]:
        resources = {"cpu": "2", "memory": "4Gi", "pods": "500", "ephemeral-storage": "20Gi"}
        return {
            "capacity": resources,
            "allocatable": resources,
            "conditions": self.conditions(rfc3339(time.time_ns()), transition=True),
            "addresses": [{"type": "InternalIP", "address": NODE_IP}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.port}},
            "nodeInfo": {
                "machineID": _digest("machine", self.node)[:32],
                "systemUUID": _digest("system", self.node)[:32],
                "bootID": _digest("boot", self.node, str(time.time_ns()))[:32],
                "kernelVersion": "6.0.0-nekzus",
                "osImage": "nekzus test node",
                "containerRuntimeVersion": "containerd://1.6.0",
                "kubeletVersion": "v1.20.2",
                "kubeProxyVersion": "v1.20.2",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        }

    async def register(self) -> None:
        """Creates the Node, or takes over an existing one and replaces its status (addresses included)."""
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.node,
                "labels": {
                    "kubernetes.io/hostname": self.node,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                },
            },
            "spec": {},
        }
        with contextlib.suppress(ApiError):
            await self.api.call("POST", "/api/v1/nodes", node)
        await self.api.call(
            "PATCH", f"/api/v1/nodes/{self.node}/status", {"status": self.node_status()}, content_type=MERGE
        )

    async def heartbeat_loop(self) -> None:
        """Keeps the conditions' heartbeats fresh so the node is never considered gone."""
        while True:
            await asyncio.sleep(self.heartbeat)
            patch = {"status": {"conditions": self.conditions(rfc3339(time.time_ns()), transition=False)}}
            try:
                await self.api.call(
                    "PATCH", f"/api/v1/nodes/{self.node}/status", patch, content_type=STRATEGIC
                )
            except ApiError as exc:
                if exc.status == 404:
                    log.warning("node object gone, registering again")
                    with contextlib.suppress(ApiError, aiohttp.ClientError, OSError, TimeoutError):
                        await self.register()
                else:
                    log.warning("heartbeat failed: %s", exc)
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                log.warning("heartbeat failed: %r", exc)

    async def watch_loop(self) -> None:
        """List then watch every pod; list again on 410 Gone, reconnect when the apiserver goes away."""
        version: str | None = None
        delay = 0.2
        while True:
            try:
                if version is None:
                    version = await self.relist()
                version = await self.watch(version)
                delay = 0.2
            except Gone:
                log.info("watch expired, listing again")
                version = None
            except (ApiError, aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
                log.warning("pod watch failed (%r), retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def relist(self) -> str:
        data = await self.api.call("GET", "/api/v1/pods")
        items: list[dict[str, Any]] = data.get("items") or []
        present = {pod["metadata"]["uid"] for pod in items}
        for uid in [uid for uid in self.seen if uid not in present]:
            self.forget(uid)
        for pod in items:
            self.submit(pod)
        return str(data["metadata"]["resourceVersion"])

    async def watch(self, version: str) -> str:
        params = {
            "watch": "true",
            "resourceVersion": version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": "300",
        }
        async with self.api.stream("/api/v1/pods", params) as resp:
            if resp.status == 410:
                raise Gone()
            if resp.status != 200:
                raise ApiError(resp.status, (await resp.read()).decode(errors="replace"))
            buffer = bytearray()
            async for chunk in resp.content.iter_any():
                buffer += chunk
                while (end := buffer.find(b"\n")) >= 0:
                    line = bytes(buffer[:end])
                    del buffer[: end + 1]
                    if line.strip():
                        version = self.on_event(json.loads(line), version)
        return version

    def on_event(self, event: dict[str, Any], version: str) -> str:
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise Gone()
            raise ApiError(int(obj.get("code") or 500), obj)
        version = str(obj.get("metadata", {}).get("resourceVersion") or version)
        if kind == "DELETED":
            self.forget(obj["metadata"]["uid"])
        elif kind in ("ADDED", "MODIFIED"):
            self.submit(obj)
        return version

    def submit(self, pod: dict[str, Any]) -> None:
        """Queues the pod's latest state; one worker per pod, so actions on a pod never overlap."""
        meta, spec = pod["metadata"], pod.get("spec") or {}
        node = spec.get("nodeName")
        if node and node != self.node:
            return
        if not node and meta.get("deletionTimestamp"):
            return
        uid = meta["uid"]
        self.seen[uid] = (meta["namespace"], meta["name"])
        self.pending[uid] = pod
        if uid not in self.busy:
            self.busy.add(uid)
            self.spawn(self.worker(uid))

    def forget(self, uid: str) -> None:
        """The pod is gone from the API: end its log streams and drop its metrics."""
        key = self.seen.pop(uid, None)
        self.pending.pop(uid, None)
        self.backoff.pop(uid, None)
        if key is None:
            return
        state = self.pods.get(key)
        if state is not None and state.uid == uid:
            del self.pods[key]
            state.close()
        if uid in self.metrics_written:
            self.metrics_written.discard(uid)
            self.spawn(self.delete_metrics(*key))

    async def worker(self, uid: str) -> None:
        try:
            while (pod := self.pending.pop(uid, None)) is not None:
                try:
                    async with self.limit:
                        await self.handle(pod)
                    self.backoff.pop(uid, None)
                except (ApiError, aiohttp.ClientError, OSError, TimeoutError) as exc:
                    if isinstance(exc, ApiError) and exc.status not in RETRYABLE:
                        log.warning("pod %s: giving up on %s", pod["metadata"]["name"], exc)
                    else:
                        self.retry_later(uid, pod, exc)
        finally:
            self.busy.discard(uid)

    def retry_later(self, uid: str, pod: dict[str, Any], exc: BaseException) -> None:
        delay = min(self.backoff.get(uid, 0.25) * 2, 5.0)
        self.backoff[uid] = delay
        log.info("pod %s: %r, retrying in %.1fs", pod["metadata"]["name"], exc, delay)

        def again() -> None:
            if uid in self.seen and uid not in self.pending and not self.stopping.is_set():
                self.submit(pod)

        asyncio.get_running_loop().call_later(delay, again)

    async def handle(self, pod: dict[str, Any]) -> None:
        meta, spec = pod["metadata"], pod["spec"]
        ns, name, uid = meta["namespace"], meta["name"], meta["uid"]
        if meta.get("deletionTimestamp"):
            await self.finish_deletion(ns, name, uid)
            return
        if not spec.get("nodeName"):
            if (pod.get("status") or {}).get("phase", "Pending") != "Pending":
                return
            if not await self.bind(ns, name):
                return
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            return
        state = self.pods.get((ns, name))
        if state is not None and state.uid != uid:
            state.close()
            state = None
        if state is None:
            state = self.new_state(pod)
            self.pods[(ns, name)] = state
        if not state.status_done:
            if not _is_running(pod):
                await self.api.call(
                    "PATCH",
                    f"/api/v1/namespaces/{ns}/pods/{name}/status",
                    self.running_status(pod, state),
                    content_type=MERGE,
                )
                log.debug("pod %s/%s running", ns, name)
            state.status_done = True
            self.metrics_wake.set()

    async def bind(self, ns: str, name: str) -> bool:
        binding = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": name, "namespace": ns},
            "target": {"apiVersion": "v1", "kind": "Node", "name": self.node},
        }
        try:
            await self.api.call("POST", f"/api/v1/namespaces/{ns}/pods/{name}/binding", binding)
        except ApiError as exc:
            if exc.status in (404, 409):
                return False
            raise
        return True

    def new_state(self, pod: dict[str, Any]) -> PodState:
        meta, spec = pod["metadata"], pod["spec"]
        start_ns = time.time_ns()
        if _is_running(pod):
            started = (
                pod["status"]["containerStatuses"][0].get("state", {}).get("running", {}).get("startedAt")
            )
            if started:
                start_ns = parse_rfc3339(started)
        logs: dict[str, ContainerLog] = {}
        usage: dict[str, dict[str, str]] = {}
        for container in spec["containers"]:
            env = env_of(container)
            logs[container["name"]] = ContainerLog.from_env(env, start_ns)
            usage[container["name"]] = {
                "cpu": env.get("CPU_USAGE") or "100m",
                "memory": env.get("MEM_USAGE") or "32Mi",
            }
        return PodState(meta["namespace"], meta["name"], meta["uid"], rfc3339(start_ns), logs, usage)

    def running_status(self, pod: dict[str, Any], state: PodState) -> dict[str, Any]:
        """A merge patch that makes the pod look like a kubelet started every container."""
        uid, spec, started = state.uid, pod["spec"], state.started
        conditions = [
            {"type": kind, "status": "True", "lastProbeTime": None, "lastTransitionTime": started}
            for kind in ("Initialized", "Ready", "ContainersReady", "PodScheduled")
        ]

        def base(container: dict[str, Any]) -> dict[str, Any]:
            image = container.get("image") or ""
            return {
                "name": container["name"],
                "image": image,
                "imageID": f"docker-pullable://{image}@sha256:{_digest('image', image)}",
                "containerID": f"containerd://{_digest(uid, container['name'])}",
                "ready": True,
                "restartCount": 0,
                "lastState": {},
            }

        status: dict[str, Any] = {
            "phase": "Running",
            "conditions": conditions,
            "hostIP": NODE_IP,
            "podIP": NODE_IP,
            "podIPs": [{"ip": NODE_IP}],
            "startTime": (pod.get("status") or {}).get("startTime") or started,
            "containerStatuses": [
                {**base(c), "started": True, "state": {"running": {"startedAt": started}}}
                for c in spec["containers"]
            ],
        }
        if spec.get("initContainers"):
            done = {"exitCode": 0, "reason": "Completed", "startedAt": started, "finishedAt": started}
            status["initContainerStatuses"] = [
                {**base(c), "state": {"terminated": {**done, "containerID": base(c)["containerID"]}}}
                for c in spec["initContainers"]
            ]
        # The uid makes the patch fail (immutable field) if a new pod with the same name replaced ours.
        return {"metadata": {"uid": uid}, "status": status}

    async def finish_deletion(self, ns: str, name: str, uid: str) -> None:
        """What the kubelet does once containers stopped: close streams, then remove the pod for good."""
        state = self.pods.get((ns, name))
        if state is not None and state.uid == uid:
            del self.pods[(ns, name)]
            state.close()
        if uid in self.metrics_written:
            self.metrics_written.discard(uid)
            await self.delete_metrics(ns, name)
        options = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "gracePeriodSeconds": 0,
            "preconditions": {"uid": uid},
        }
        try:
            await self.api.call("DELETE", f"/api/v1/namespaces/{ns}/pods/{name}", options)
        except ApiError as exc:
            if exc.status not in (404, 409):
                raise
        log.debug("pod %s/%s deleted", ns, name)

    async def metrics_loop(self) -> None:
        """Mirrors running pods into PodMetrics objects whenever the metrics CRD is established."""
        next_refresh = 0.0
        while True:
            try:
                crd: dict[str, Any] | None = await self.api.call("GET", CRD_PATH)
            except ApiError as exc:
                crd = None if exc.status == 404 else {}
            except (aiohttp.ClientError, OSError, TimeoutError):
                crd = {}
            if crd is None or (crd and not self._established(crd)):
                self.metrics_uid = None
                self.metrics_written.clear()
            elif crd:
                if crd["metadata"]["uid"] != self.metrics_uid:
                    self.metrics_uid = crd["metadata"]["uid"]
                    self.metrics_written.clear()
                refresh = time.monotonic() >= next_refresh
                targets = [
                    s
                    for s in list(self.pods.values())
                    if s.status_done and (refresh or s.uid not in self.metrics_written)
                ]
                await asyncio.gather(*(self.put_metrics(s) for s in targets))
                if refresh:
                    next_refresh = time.monotonic() + METRICS_REFRESH
            self.metrics_wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.metrics_wake.wait(), 0.5)

    @staticmethod
    def _established(crd: dict[str, Any]) -> bool:
        if crd["metadata"].get("deletionTimestamp"):
            return False
        conditions = (crd.get("status") or {}).get("conditions") or []
        return any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions)

    async def put_metrics(self, state: PodState) -> None:
        path = f"{METRICS_PATH}/namespaces/{state.namespace}/pods"
        body = {
            "apiVersion": "metrics.k8s.io/v1beta1",
            "kind": "PodMetrics",
            "metadata": {"name": state.name, "namespace": state.namespace},
            "timestamp": rfc3339(time.time_ns()),
            "window": "30s",
            "containers": [{"name": name, "usage": usage} for name, usage in state.usage.items()],
        }
        patch = {key: body[key] for key in ("timestamp", "window", "containers")}
        try:
            async with self.limit:
                if state.uid in self.metrics_written:
                    await self._with_fallback(
                        lambda: self.api.call("PATCH", f"{path}/{state.name}", patch, content_type=MERGE),
                        404,
                        lambda: self.api.call("POST", path, body),
                    )
                else:
                    await self._with_fallback(
                        lambda: self.api.call("POST", path, body),
                        409,
                        lambda: self.api.call("PATCH", f"{path}/{state.name}", patch, content_type=MERGE),
                    )
        except (ApiError, aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.info("metrics for %s/%s: %r", state.namespace, state.name, exc)
            return
        if self.pods.get((state.namespace, state.name)) is state:
            self.metrics_written.add(state.uid)
        else:
            await self.delete_metrics(state.namespace, state.name)

    @staticmethod
    async def _with_fallback(
        first: Callable[[], Awaitable[Any]], status: int, then: Callable[[], Awaitable[Any]]
    ) -> None:
        try:
            await first()
        except ApiError as exc:
            if exc.status != status:
                raise
            await then()

    async def delete_metrics(self, ns: str, name: str) -> None:
        with contextlib.suppress(ApiError, aiohttp.ClientError, OSError, TimeoutError):
            await self.api.call("DELETE", f"{METRICS_PATH}/namespaces/{ns}/pods/{name}")

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def container_logs(self, request: web.Request) -> web.StreamResponse:
        """GET /containerLogs/{ns}/{pod}/{container}: the kubelet endpoint the apiserver log proxy calls."""
        ns, pod, container = (request.match_info[k] for k in ("namespace", "pod", "container"))
        state = self.pods.get((ns, pod))
        if state is None or not state.status_done:
            raise web.HTTPNotFound(text=f'pod "{pod}" in namespace "{ns}" is not running on this node\n')
        clog = state.logs.get(container)
        if clog is None:
            raise web.HTTPBadRequest(text=f'container "{container}" is not valid for pod "{pod}"\n')
        try:
            options = LogOptions.parse(request.query)
        except ValueError as exc:
            raise web.HTTPBadRequest(text=f"{exc}\n") from exc

        now = time.time_ns()
        total = clog.count_at(now)
        first = 1
        if options.tail_lines is not None:
            first = max(first, total - options.tail_lines + 1)
        since = options.since_ns(now)
        if since is not None:
            first = max(first, clog.count_at(since - 1) + 1)

        resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await resp.prepare(request)
        writer = LogWriter(resp, clog, options)
        more = await writer.write_lines(first, total)
        if options.follow and more:
            await self.follow(state, clog, writer, max(first, total + 1))
        await resp.write_eof()
        return resp

    async def follow(self, state: PodState, clog: ContainerLog, writer: LogWriter, next_k: int) -> None:
        """Streams new lines as they are produced until the pod goes or LOG_FOLLOW_MAX ends the stream."""
        deadline = time.monotonic() + clog.follow_max if clog.follow_max else None
        while True:
            now = time.time_ns()
            available = clog.count_at(now)
            if available >= next_k:
                if not await writer.write_lines(next_k, available):
                    return
                next_k = available + 1
            if state.closed.is_set():
                return
            waits: list[float] = []
            upcoming = clog.next_line_ns(next_k)
            if upcoming is not None:
                waits.append(max(0.0, (upcoming - time.time_ns()) / 1e9))
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                waits.append(left)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(state.closed.wait(), min(waits) if waits else None)


@dataclass
class LogOptions:
    follow: bool = False
    timestamps: bool = False
    tail_lines: int | None = None
    since_seconds: int | None = None
    since_time_ns: int | None = None
    limit_bytes: int | None = None

    @classmethod
    def parse(cls, query: Any) -> LogOptions:
        def flag(name: str) -> bool:
            return str(query.get(name, "false")).lower() in ("true", "1")

        def number(name: str) -> int | None:
            raw = query.get(name)
            if raw is None or raw == "":
                return None
            value = int(raw)
            if value < 0:
                raise ValueError(f"{name} must not be negative")
            return value

        since_time = query.get("sinceTime")
        return cls(
            follow=flag("follow"),
            timestamps=flag("timestamps"),
            tail_lines=number("tailLines"),
            since_seconds=number("sinceSeconds"),
            since_time_ns=parse_rfc3339(since_time) if since_time else None,
            limit_bytes=number("limitBytes"),
        )

    def since_ns(self, now_ns: int) -> int | None:
        if self.since_time_ns is not None:
            return self.since_time_ns
        if self.since_seconds is not None:
            return now_ns - self.since_seconds * 1_000_000_000
        return None


class LogWriter:
    """Writes lines straight to the response (nothing buffered), honouring limitBytes."""

    def __init__(self, resp: web.StreamResponse, clog: ContainerLog, options: LogOptions) -> None:
        self.resp = resp
        self.clog = clog
        self.timestamps = options.timestamps
        self.left = options.limit_bytes

    def line(self, k: int) -> str:
        if self.timestamps:
            return f"{rfc3339_nano(self.clog.ts(k))} line {k}\n"
        return f"line {k}\n"

    async def write_lines(self, first: int, last: int) -> bool:
        """Writes lines first..last; False once limitBytes is used up."""
        k = first
        while k <= last:
            upto = min(last, k + 999)
            data = "".join(self.line(i) for i in range(k, upto + 1)).encode()
            if self.left is not None:
                if len(data) >= self.left:
                    await self.resp.write(data[: self.left])
                    self.left = 0
                    return False
                self.left -= len(data)
            await self.resp.write(data)
            k = upto + 1
        return self.left is None or self.left > 0


async def main_async(args: argparse.Namespace) -> None:
    api = Api(load_kubeconfig(args.kubeconfig))
    agent = NodeAgent(api, args.node, args.state_dir, args.heartbeat)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, agent.stopping.set)
    try:
        await agent.run()
    finally:
        await api.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--node", default="nekzus-node")
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--heartbeat", type=float, default=10.0, help="seconds between Ready heartbeats")
    parser.add_argument("--verbose", action="store_true", help="log every pod action")
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    args.state_dir.mkdir(parents=True, exist_ok=True)
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
