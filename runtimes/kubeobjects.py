"""Pure functions over Kubernetes objects as the API serves them (plain JSON dicts).

The backend reads raw JSON instead of kubernetes_asyncio's model classes: a pod list is turned
into summaries several times faster, and nothing here needs a client or an event loop.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, TypeGuard

from .base import Action, ContainerState, ContainerSummary, PortMapping, state_refusal
from .errors import RuntimeFailure, StillRunning, Unsupported
from .redact import MASK, mask_value

RUNTIME = "kubernetes"
# Set on a workload that the gateway scaled to 0: the label makes such workloads listable with a
# selector, the annotation keeps the replica count that start restores.
STOPPED_LABEL = "nekzus/stopped"
STOPPED_REPLICAS = "nekzus/stopped-replicas"
# Workloads a stop can scale to 0 through their scale subresource, by lower-case kind.
SCALABLE = {"deployment": "deployments", "statefulset": "statefulsets", "replicaset": "replicasets"}
WORKLOAD_KINDS = "|".join(SCALABLE)
# Kubernetes' own name rules (DNS-1123, as its apimachinery validation has them), always applied
# with fullmatch: "^…$" with match() also accepts a trailing newline. Namespaces and container
# names are labels (at most 63 characters); pods and workloads are subdomains (dot-separated
# parts of the same characters, at most 253 characters in all, each part of any length).
_LABEL = "[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?"
_PART = "[a-z0-9](?:[-a-z0-9]*[a-z0-9])?"
_SUBDOMAIN = rf"{_PART}(?:\.{_PART})*"
MAX_NAME = 253
DNS_LABEL = re.compile(_LABEL)
DNS_SUBDOMAIN = re.compile(_SUBDOMAIN)
# A workload entry's id: "deployment/web".
WORKLOAD_ID = re.compile(rf"({WORKLOAD_KINDS})/({_SUBDOMAIN})")


def is_label(value: Any) -> TypeGuard[str]:
    """A DNS-1123 label: a namespace or a container name."""
    return isinstance(value, str) and bool(DNS_LABEL.fullmatch(value))


def is_object_name(value: Any) -> TypeGuard[str]:
    """A DNS-1123 subdomain: the name of a pod, a node or a workload."""
    return isinstance(value, str) and len(value) <= MAX_NAME and bool(DNS_SUBDOMAIN.fullmatch(value))


def is_object_id(value: Any) -> TypeGuard[str]:
    """How a client names a Kubernetes entry: a pod name, or a workload id like "deployment/web"."""
    if not isinstance(value, str):
        return False
    match = WORKLOAD_ID.fullmatch(value)
    return is_object_name(match.group(2) if match else value)


def controller_refusal(
    container: ContainerSummary, action: Action, *, force: bool = False
) -> Unsupported | None:
    """What a pod's workload rules out: a standalone pod has no controller to bring it back, so a
    stop deletes it for good and a restart recreates it from its spec, either only with ``force``;
    and only the workloads in SCALABLE have a replica count a stop can take to 0."""
    if container.controller is None or action == "start":
        return None
    kind = container.controller.partition("/")[0]
    if not container.controller and not force:
        return Unsupported(
            f"pod {container.name} has no controller",
            detail=(
                f"Pod {container.name} has no controller: a {action} would delete it for good. "
                "Add ?force=true to do it anyway"
            ),
        )
    if container.controller and action == "stop" and kind not in SCALABLE:
        return Unsupported(
            f"{container.controller} cannot be scaled",
            detail=(
                f"Pods of a {kind} cannot be stopped: only Deployments, StatefulSets and ReplicaSets "
                "scale to 0"
            ),
        )
    return None


def no_pause(action: Action) -> Unsupported:
    """A pause or unpause: Kubernetes cannot freeze a pod's containers (nor does the gateway
    pretend to by scaling or deleting), whatever the pod's state."""
    return Unsupported(
        f"kubernetes cannot {action} a pod",
        detail="Kubernetes has no pause: a pod's containers cannot be frozen and resumed",
    )


def refusal(container: ContainerSummary, action: Action, *, force: bool) -> RuntimeFailure | None:
    """The Kubernetes runtime's answer to "may this action run": no pause at all, else the shared
    state rule, then the workload's."""
    if action in ("pause", "unpause"):
        return no_pause(action)
    return state_refusal(container, action) or controller_refusal(container, action, force=force)


def workload_removal(workload: str) -> Unsupported:
    """A removal of a workload entry ("deployment/web"): the gateway deletes pods, never the
    workloads that own them."""
    return Unsupported(
        f"{workload} is a workload",
        detail=f"{workload} is a workload: the gateway removes pods, never workloads",
    )


def recreated_by(container: ContainerSummary) -> str:
    """The controller that replaces a deleted pod ("deployment/web"), "" when nothing will: a
    standalone pod, or the pod of a Job that has finished its work."""
    controller = container.controller or ""
    if controller.partition("/")[0] == "job" and container.state not in (
        ContainerState.RUNNING,
        ContainerState.PENDING,
    ):
        return ""
    return controller


def removal_refusal(container: ContainerSummary, *, force: bool) -> RuntimeFailure | None:
    """Whether a pod may be deleted: never a workload entry; a pod that runs, or is about to
    (pending), only with ``force``, controller or not, as a running Docker container."""
    if WORKLOAD_ID.fullmatch(container.id):
        return workload_removal(container.id)
    live = container.state.is_running or container.state is ContainerState.PENDING
    if not live or force:
        return None
    replacement = recreated_by(container)
    then = f" (its controller {replacement} will create a replacement)" if replacement else ""
    return StillRunning(
        f"pod {container.name} is {container.state.value}",
        detail=f"Pod {container.name} is {container.state.value}: remove it with force=true{then}",
    )


_PHASES: Mapping[str, ContainerState] = {
    "Pending": ContainerState.PENDING,
    "Running": ContainerState.RUNNING,
    "Succeeded": ContainerState.EXITED,
    "Failed": ContainerState.FAILED,
}
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1),
            "k": Decimal("1e3"), "M": Decimal("1e6"), "G": Decimal("1e9"), "T": Decimal("1e12"),
            "P": Decimal("1e15"), "E": Decimal("1e18")}  # fmt: skip
_QUANTITY = re.compile(r"([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]?)")


def parse_quantity(value: Any) -> float:
    """A resource quantity ("250m", "1.5", "128Mi", "12345n") as a plain number; 0 when unreadable."""
    if isinstance(value, int | float):
        return float(value)
    match = _QUANTITY.fullmatch(str(value).strip())
    if not match:
        return 0.0
    number, suffix = match.groups()
    try:
        amount = Decimal(number)
    except InvalidOperation:
        return 0.0
    factor = Decimal(_BINARY[suffix]) if suffix in _BINARY else _DECIMAL[suffix]
    return float(amount * factor)


def seconds(stamp: str | None) -> int:
    """Unix seconds of an RFC 3339 time as Kubernetes writes it ("2024-01-02T03:04:05Z")."""
    if not stamp:
        return 0
    try:  # fromisoformat is several times faster than strptime, which a 200-pod list feels
        return int(datetime.fromisoformat(stamp[:19]).replace(tzinfo=UTC).timestamp())
    except ValueError:
        return 0


def rfc3339(unix_seconds: int) -> str:
    return datetime.fromtimestamp(unix_seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def controller_of(meta: Mapping[str, Any]) -> tuple[str, str] | None:
    """(kind, name) of the owner reference marked as the object's controller."""
    for ref in meta.get("ownerReferences") or ():
        if ref.get("controller"):
            return str(ref.get("kind", "")), str(ref.get("name", ""))
    return None


def pod_state(pod: Mapping[str, Any]) -> ContainerState:
    """Pending→pending, Running→running, Succeeded→exited, Failed→failed; being deleted→stopped."""
    if pod.get("metadata", {}).get("deletionTimestamp"):
        return ContainerState.STOPPED
    return _PHASES.get(str(pod.get("status", {}).get("phase", "")), ContainerState.STOPPED)


def pod_status(pod: Mapping[str, Any]) -> str:
    """A human status like kubectl's STATUS column: Running, ContainerCreating, Terminating, …"""
    if pod.get("metadata", {}).get("deletionTimestamp"):
        return "Terminating"
    status = pod.get("status") or {}
    for cs in status.get("containerStatuses") or ():
        state = cs.get("state") or {}
        for key in ("waiting", "terminated"):
            reason = (state.get(key) or {}).get("reason")
            if reason and not (
                key == "terminated" and reason == "Completed" and status.get("phase") == "Running"
            ):
                return str(reason)
    phase = str(status.get("phase") or "Unknown")
    return "Completed" if phase == "Succeeded" else phase


def pod_health(pod: Mapping[str, Any]) -> str:
    """The Ready condition as a healthcheck verdict: healthy, unhealthy (a container failing), or
    starting (not ready yet, nothing failed)."""
    status = pod.get("status") or {}
    for condition in status.get("conditions") or ():
        if condition.get("type") == "Ready" and condition.get("status") == "True":
            return "healthy"
    for cs in status.get("containerStatuses") or ():
        state = cs.get("state") or {}
        if (
            cs.get("restartCount")
            or state.get("terminated")
            or (state.get("waiting") or {}).get("reason")
            in ("CrashLoopBackOff", "Error", "ImagePullBackOff", "ErrImagePull")
        ):
            return "unhealthy"
    return "starting"


def _ports(containers: Iterable[Mapping[str, Any]]) -> tuple[PortMapping, ...]:
    return tuple(
        PortMapping(
            ip=str(p.get("hostIP", "")),
            private_port=int(p.get("containerPort", 0)),
            public_port=int(p["hostPort"]) if p.get("hostPort") else None,
            type=str(p.get("protocol", "TCP")).lower(),
        )
        for c in containers
        for p in c.get("ports") or ()
    )


def pod_summary(pod: Mapping[str, Any], controller: str) -> ContainerSummary:
    """The list row of a pod; ``controller`` is its workload ("deployment/web") or "" standalone."""
    meta = pod.get("metadata") or {}
    containers = (pod.get("spec") or {}).get("containers") or []
    name = str(meta.get("name", ""))
    return ContainerSummary(
        id=name,
        full_id=name,
        name=name,
        image=str(containers[0].get("image", "")) if containers else "",
        state=pod_state(pod),
        status=pod_status(pod),
        created=seconds(meta.get("creationTimestamp")),
        ports=_ports(containers),
        labels=meta.get("labels") or {},
        runtime=RUNTIME,
        namespace=str(meta.get("namespace", "")),
        annotations=meta.get("annotations") or {},
        health=pod_health(pod),
        controller=controller,
    )


def workload_summary(kind: str, obj: Mapping[str, Any]) -> ContainerSummary:
    """A workload as one entry: how a client sees (and starts again) one that was scaled to 0."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    template = spec.get("template") or {}
    tmeta = template.get("metadata") or {}
    containers = (template.get("spec") or {}).get("containers") or []
    wid = f"{kind}/{meta.get('name', '')}"
    replicas = int(spec.get("replicas", 1) or 0)
    ready = int((obj.get("status") or {}).get("readyReplicas") or 0)
    if replicas == 0:
        state, status = (
            ContainerState.STOPPED,
            f"Scaled to 0 (was {meta.get('annotations', {}).get(STOPPED_REPLICAS, '?')})",
        )
    else:
        # Running while any replica is ready (its pods have logs and stats), pending before that.
        state = ContainerState.RUNNING if ready > 0 else ContainerState.PENDING
        status = f"{ready}/{replicas} ready"
    return ContainerSummary(
        id=wid,
        full_id=wid,
        name=str(meta.get("name", "")),
        image=str(containers[0].get("image", "")) if containers else "",
        state=state,
        status=status,
        created=seconds(meta.get("creationTimestamp")),
        ports=_ports(containers),
        labels={**(meta.get("labels") or {}), **(tmeta.get("labels") or {})},
        runtime=RUNTIME,
        namespace=str(meta.get("namespace", "")),
        annotations={**(meta.get("annotations") or {}), **(tmeta.get("annotations") or {})},
        health=None,
        controller=wid,
    )


def _env(container: Mapping[str, Any]) -> list[str]:
    """``NAME=value`` entries, secret-looking values masked; values from elsewhere are named."""
    entries = []
    for var in container.get("env") or ():
        name = str(var.get("name", ""))
        if "value" in var:
            value = mask_value(name, str(var["value"]))
        else:
            source = var.get("valueFrom") or {}
            if "secretKeyRef" in source:
                value = MASK
            elif "configMapKeyRef" in source:
                ref = source["configMapKeyRef"]
                value = f"<configMap {ref.get('name', '')}/{ref.get('key', '')}>"
            elif "fieldRef" in source:
                value = f"<field {source['fieldRef'].get('fieldPath', '')}>"
            else:
                value = "<resource>"
        entries.append(f"{name}={value}")
    return entries


def _container_state(status: Mapping[str, Any] | None) -> tuple[str, str]:
    state = (status or {}).get("state") or {}
    for key in ("running", "waiting", "terminated"):
        if key in state:
            return key, str((state[key] or {}).get("reason", ""))
    return "unknown", ""


def details(summary: ContainerSummary, obj: Mapping[str, Any]) -> dict[str, Any]:
    """The normalised ContainerDetails document of a pod (or of a stopped workload's template)."""
    is_pod = obj.get("kind") == "Pod" or "containers" in (obj.get("spec") or {})
    spec = (
        (obj.get("spec") or {})
        if is_pod
        else ((obj.get("spec") or {}).get("template") or {}).get("spec") or {}
    )
    status = (obj.get("status") or {}) if is_pod else {}
    statuses = {cs.get("name"): cs for cs in status.get("containerStatuses") or ()}
    containers = []
    env: dict[str, list[str]] = {}
    for c in spec.get("containers") or ():
        cs = statuses.get(c.get("name"))
        state, reason = _container_state(cs) if is_pod else ("stopped", "")
        containers.append(
            {
                "name": c.get("name", ""),
                "image": c.get("image", ""),
                "ready": bool((cs or {}).get("ready", False)),
                "restartCount": int((cs or {}).get("restartCount", 0)),
                "state": state,
                "stateReason": reason,
                "ports": [
                    {
                        "containerPort": p.get("containerPort"),
                        "protocol": p.get("protocol", "TCP"),
                        "name": p.get("name", ""),
                    }
                    for p in c.get("ports") or ()
                ],
            }
        )
        env[str(c.get("name", ""))] = _env(c)
    workload = None
    if summary.controller:
        kind, _, name = summary.controller.partition("/")
        workload = {"kind": kind, "name": name}
    return {
        "id": summary.id,
        "name": summary.name,
        "namespace": summary.namespace,
        "runtime": RUNTIME,
        "state": summary.state.value,
        "status": summary.status,
        "created": summary.created,
        "node": spec.get("nodeName", "") if is_pod else "",
        "podIP": status.get("podIP", ""),
        "labels": dict(summary.labels),
        "annotations": dict(summary.annotations),
        "workload": workload,
        "containers": containers,
        "env": env,
    }


_FORBIDDEN = re.compile(
    r'cannot (\w+) resource "([\w./-]+)"(?: in API group "([^"]*)")?'
    r'(?: in the namespace "([\w.-]+)"| (at the cluster scope))?'
)


def forbidden_reason(message: str) -> str:
    """RBAC's refusal without the caller's identity: the verb, resource (with its API group, unless
    it is the core group) and namespace, which are what a missing rule is written with."""
    match = _FORBIDDEN.search(message)
    if not match:
        return "Forbidden by the cluster's RBAC rules"
    verb, resource, group, namespace, cluster = match.groups()
    where = f' in API group "{group}"' if group else ""
    where += f' in namespace "{namespace}"' if namespace else " at the cluster scope" if cluster else ""
    return f'Forbidden by the cluster\'s RBAC rules: cannot {verb} "{resource}"{where}'
