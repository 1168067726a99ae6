"""The tests of kube rbac that need no daemon (unit tier); the story and the other tests are in
tests/kube_real/test_kube_rbac.py.
"""

from __future__ import annotations

from runtimes import kubeobjects as ko
from tests.kube_real.test_kube_rbac import PROBES, refusal, role_grants
from tests.support.kube_fixtures import (
    gateway_rbac,
)


def test_each_permission_of_the_manifest_has_a_probe() -> None:
    granted = role_grants(gateway_rbac())
    assert set(PROBES) == granted, (
        f"granted but never shown to be needed: {sorted(granted - set(PROBES))}; "
        f"probed but not granted: {sorted(set(PROBES) - granted)}"
    )
    # all_but() derives the limited account's permissions from these two kinds only.
    assert {d["kind"] for d in gateway_rbac()} <= {
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
    }


def test_the_refusal_names_the_api_group_and_the_cluster_scope() -> None:
    metrics = (
        'pods.metrics.k8s.io "web-1" is forbidden: User "system:serviceaccount:nekzus-system:nekzus-gateway" '
        'cannot get resource "pods" in API group "metrics.k8s.io" in the namespace "shop"'
    )
    assert ko.forbidden_reason(metrics) == refusal(("metrics.k8s.io", "pods", "get"), "shop")
    node = (
        'nodes "n1" is forbidden: User "u" cannot get resource "nodes" in API group "" at the cluster scope'
    )
    assert ko.forbidden_reason(node) == refusal(("", "nodes", "get"), "")
    assert "system:" not in ko.forbidden_reason(metrics) + ko.forbidden_reason(node)
