"""Fixtures for the real control plane test tier (tests/kube_real/conftest.py imports them).

``kube_plane`` runs etcd, kube-apiserver, kube-controller-manager and the node agent
(tests.support.kube_node) once per session in pytest's temporary directory; ``kube_namespace``
gives each test its own namespace, where the gateway's ServiceAccount
(``kube_plane.gateway_kubeconfig``) has the namespaced rules of deploy/kubernetes/rbac.yaml through
a RoleBinding, as that file says to grant them; ``kclient`` is a gateway limited to that namespace.
The metrics API is off by default; tests that need it call ``install_metrics_api``.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from nekzus.config import Config
from tests.support.gateway import GENEROUS_LIMITS, ClientFactory, data_dir
from tests.support.kube_plane import (
    GATEWAY_ACCOUNT,
    GATEWAY_NAMESPACE,
    GATEWAY_RBAC,
    NODE_NAME,
    ApiError,
    ControlPlane,
    load_manifest,
    wait_until,
)

# One permission an RBAC rule grants: (API group, resource, verb); "deployments/scale" names a
# subresource.
Grant = tuple[str, str, str]

CRD_NAME = "pods.metrics.k8s.io"
CRD_PATH = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{CRD_NAME}"

METRICS_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {
        "name": CRD_NAME,
        # The metrics.k8s.io group is protected (*.k8s.io): the annotation lets a CRD serve it.
        "annotations": {"api-approved.kubernetes.io": "unapproved, test only"},
    },
    "spec": {
        "group": "metrics.k8s.io",
        "scope": "Namespaced",
        "names": {
            "plural": "pods",
            "singular": "podmetrics",
            "kind": "PodMetrics",
            "listKind": "PodMetricsList",
        },
        "versions": [
            {
                "name": "v1beta1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                },
            }
        ],
    },
}


def install_metrics_api(plane: ControlPlane, timeout: float = 30) -> None:
    """Serves metrics.k8s.io/v1beta1 PodMetrics from a CRD and waits until it is usable.

    Blocking; from an async test that must keep its loop running use ``asyncio.to_thread``.
    The node agent notices within half a second and writes one PodMetrics per running pod.
    """
    status, _ = plane.request(
        "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", METRICS_CRD, check=False
    )
    if status not in (201, 409):
        raise ApiError(status, "creating the metrics CRD failed")

    def established() -> bool:
        code, crd = plane.request("GET", CRD_PATH, check=False)
        if code != 200 or crd["metadata"].get("deletionTimestamp"):
            return False
        conditions = (crd.get("status") or {}).get("conditions") or []
        return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)

    wait_until(established, timeout=timeout, what="the metrics CRD to be Established")
    # Established can come a moment before the group is routed; wait until a list works.
    wait_until(
        lambda: plane.request("GET", "/apis/metrics.k8s.io/v1beta1/pods", check=False)[0] == 200,
        timeout=timeout,
        what="metrics.k8s.io/v1beta1 to be served",
    )


def remove_metrics_api(plane: ControlPlane, timeout: float = 30) -> None:
    """Deletes the metrics CRD (and with it every PodMetrics) and waits until it is gone."""
    status, _ = plane.request("DELETE", CRD_PATH, check=False)
    if status not in (200, 202, 404):
        raise ApiError(status, "deleting the metrics CRD failed")
    wait_until(
        lambda: plane.request("GET", CRD_PATH, check=False)[0] == 404,
        timeout=timeout,
        what="the metrics CRD to be deleted",
    )


def grants(rules: Iterable[dict[str, Any]]) -> set[Grant]:
    """Every permission a list of RBAC rules grants, one by one."""
    return {
        (group, resource, verb)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def namespaced_roles(manifest: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The manifest's ClusterRoles that no ClusterRoleBinding of its own binds: those it leaves to
    a RoleBinding per namespace (or to the cluster-wide binding of rbac-all-namespaces.yaml)."""
    bound = {d["roleRef"]["name"] for d in manifest if d["kind"] == "ClusterRoleBinding"}
    return [d for d in manifest if d["kind"] == "ClusterRole" and d["metadata"]["name"] not in bound]


def bind_in_namespace(
    plane: ControlPlane,
    namespace: str,
    role: dict[str, Any],
    account: tuple[str, str] = (GATEWAY_NAMESPACE, GATEWAY_ACCOUNT),
) -> None:
    """Binds the ClusterRole ``role`` to a ServiceAccount in ``namespace`` (the RoleBinding
    ``kubectl create rolebinding NAME --clusterrole=NAME --serviceaccount=NS:NAME`` makes), and
    waits until RBAC applies it: the authorizer reads bindings from a cache that lags a moment."""
    name = role["metadata"]["name"]
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": name, "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
        "subjects": [{"kind": "ServiceAccount", "namespace": account[0], "name": account[1]}],
    }
    plane.apply([binding])
    wait_until(
        lambda: all(
            plane.allowed(account, verb, resource, group=group, namespace=namespace)
            for group, resource, verb in grants(role["rules"])
        ),
        timeout=30,
        interval=0.05,
        what=f"the RoleBinding of {name} in {namespace} to take effect",
    )


def create_namespace(plane: ControlPlane, prefix: str = "nekzus-test") -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    plane.request(
        "POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    )
    return name


def delete_namespace(plane: ControlPlane, name: str) -> None:
    """Issues the delete only: the namespace controller empties it in the background."""
    status, _ = plane.request("DELETE", f"/api/v1/namespaces/{name}", check=False)
    if status not in (200, 202, 404, 409):
        raise ApiError(status, f"deleting namespace {name} failed")


@pytest.fixture(scope="session")
def kube_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """A fresh control plane plus node agent for the session; everything is stopped at the end."""
    plane = ControlPlane(tmp_path_factory.mktemp("kube"))
    try:
        plane.start()
        plane.start_node_agent(NODE_NAME)
        yield plane
    finally:
        plane.stop()


@functools.cache
def gateway_rbac() -> list[dict[str, Any]]:
    """The objects of deploy/kubernetes/rbac.yaml (the control plane applied them at its start)."""
    return load_manifest(GATEWAY_RBAC)


def real_config(kubeconfig: Any, namespace: str, **kubernetes: Any) -> Config:
    """A gateway on the plane's Kubernetes alone, limited to ``namespace`` as each test's own."""
    return Config(
        server={"data_dir": str(data_dir()), "tls": {"mode": "off"}},
        runtimes={
            "primary": "kubernetes",
            "docker": {"enabled": False},
            "kubernetes": {
                "enabled": True,
                "kubeconfig": str(kubeconfig),
                "namespaces": [namespace],
                "ready_timeout": 60,
                **kubernetes,
            },
        },
        ratelimit=GENEROUS_LIMITS,
    )


@pytest.fixture
def kube_namespace(kube_plane: ControlPlane) -> Iterator[str]:
    """A namespace of the test's own where the gateway's ServiceAccount has its namespaced rules,
    deleted (without waiting) afterwards."""
    name = create_namespace(kube_plane)
    try:
        for role in namespaced_roles(gateway_rbac()):
            bind_in_namespace(kube_plane, name, role)
        yield name
    finally:
        delete_namespace(kube_plane, name)


@pytest.fixture
async def kclient(
    gateway: ClientFactory, kube_plane: ControlPlane, kube_namespace: str
) -> TestClient[Any, Any]:
    """A gateway on the plane that watches the test's namespace only."""
    return await gateway(real_config(kube_plane.gateway_kubeconfig, kube_namespace))
