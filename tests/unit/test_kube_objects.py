"""Pure reductions of Kubernetes objects: quantities, states, statuses, details, RBAC reasons."""

from __future__ import annotations

from typing import Any

import pytest

from runtimes import ContainerState
from runtimes import kubeobjects as ko


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("250m", 0.25),
        ("2", 2.0),
        ("1.5", 1.5),
        ("12345678n", 0.012345678),
        ("500u", 0.0005),
        ("128Mi", 128 * 2**20),
        ("1Gi", 2**30),
        ("64Ki", 64 * 1024),
        ("1k", 1000.0),
        ("2M", 2e6),
        ("1e3", 1000.0),
        (3, 3.0),
        ("nonsense", 0.0),
        ("", 0.0),
    ],
)
def test_parse_quantity(text: Any, value: float) -> None:
    assert ko.parse_quantity(text) == pytest.approx(value)


def _pod(phase: str, **status: Any) -> dict[str, Any]:
    return {
        "kind": "Pod",
        "metadata": {"name": "web-1", "namespace": "default", "creationTimestamp": "2024-01-02T03:04:05Z"},
        "spec": {"containers": [{"name": "app", "image": "nginx:1"}]},
        "status": {"phase": phase, **status},
    }


@pytest.mark.parametrize(
    ("phase", "state"),
    [
        ("Pending", ContainerState.PENDING),
        ("Running", ContainerState.RUNNING),
        ("Succeeded", ContainerState.EXITED),
        ("Failed", ContainerState.FAILED),
    ],
)
def test_pod_states(phase: str, state: ContainerState) -> None:
    assert ko.pod_state(_pod(phase)) is state


def test_a_pod_being_deleted_is_stopped_and_terminating() -> None:
    pod = _pod("Running")
    pod["metadata"]["deletionTimestamp"] = "2024-01-02T03:05:00Z"
    assert ko.pod_state(pod) is ContainerState.STOPPED
    assert ko.pod_status(pod) == "Terminating"


def test_status_names_a_waiting_reason_like_kubectl() -> None:
    pod = _pod(
        "Pending", containerStatuses=[{"name": "app", "state": {"waiting": {"reason": "ContainerCreating"}}}]
    )
    assert ko.pod_status(pod) == "ContainerCreating"
    assert ko.pod_status(_pod("Succeeded")) == "Completed"
    assert ko.pod_status(_pod("Running")) == "Running"


def test_health_follows_readiness() -> None:
    ready = _pod("Running", conditions=[{"type": "Ready", "status": "True"}])
    assert ko.pod_health(ready) == "healthy"
    assert ko.pod_health(_pod("Pending")) == "starting"
    crashing = _pod(
        "Running",
        conditions=[{"type": "Ready", "status": "False"}],
        containerStatuses=[
            {"name": "app", "restartCount": 3, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}
        ],
    )
    assert ko.pod_health(crashing) == "unhealthy"


def test_summary_fields() -> None:
    pod = _pod("Running")
    pod["spec"]["containers"][0]["ports"] = [{"containerPort": 8080, "protocol": "UDP", "hostPort": 18080}]
    s = ko.pod_summary(pod, "deployment/web")
    assert (s.id, s.name, s.namespace, s.image, s.runtime) == (
        "web-1",
        "web-1",
        "default",
        "nginx:1",
        "kubernetes",
    )
    assert s.created == 1704164645
    assert [(p.private_port, p.public_port, p.type) for p in s.ports] == [(8080, 18080, "udp")]
    assert s.controller == "deployment/web"


def test_details_mask_secret_env_and_name_the_workload() -> None:
    pod = _pod("Running", podIP="10.1.2.3")
    pod["spec"]["nodeName"] = "node-1"
    pod["spec"]["containers"][0]["env"] = [
        {"name": "DB_PASSWORD", "value": "hunter2"},
        {"name": "MODE", "value": "prod"},
        {"name": "API", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
        {"name": "CONF", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "c"}}},
    ]
    doc = ko.details(ko.pod_summary(pod, "statefulset/db"), pod)
    assert doc["env"] == {"app": ["DB_PASSWORD=***", "MODE=prod", "API=***", "CONF=<configMap cm/c>"]}
    assert doc["workload"] == {"kind": "statefulset", "name": "db"}
    assert (doc["node"], doc["podIP"], doc["runtime"]) == ("node-1", "10.1.2.3", "kubernetes")
    assert "hunter2" not in str(doc)


def test_forbidden_reason_drops_the_callers_identity() -> None:
    message = (
        'deployments.apps "web" is forbidden: User "system:serviceaccount:nekzus:gateway" cannot patch '
        'resource "deployments/scale" in API group "apps" in the namespace "shop"'
    )
    reason = ko.forbidden_reason(message)
    assert (
        reason
        == 'Forbidden by the cluster\'s RBAC rules: cannot patch "deployments/scale" in API group "apps" '
        'in namespace "shop"'
    )
    assert "serviceaccount" not in reason
    assert ko.forbidden_reason("something else") == "Forbidden by the cluster's RBAC rules"


def test_standalone_pods_need_force_and_daemonset_pods_cannot_stop() -> None:
    standalone = ko.pod_summary(_pod("Running"), "")
    assert ko.controller_refusal(standalone, "stop") is not None
    assert ko.controller_refusal(standalone, "restart") is not None
    assert ko.controller_refusal(standalone, "stop", force=True) is None
    assert ko.controller_refusal(standalone, "start") is None
    daemon = ko.pod_summary(_pod("Running"), "daemonset/agent")
    assert ko.controller_refusal(daemon, "stop", force=True) is not None
    assert ko.controller_refusal(daemon, "restart") is None
    assert ko.controller_refusal(ko.pod_summary(_pod("Running"), "deployment/web"), "stop") is None
