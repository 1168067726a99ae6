"""The apiserver paths the backend calls, and which namespaces it manages.

Security: the apiserver splits the decoded path (``%2F`` is a slash to it), so only a name
Kubernetes could hold is put in a path, percent-encoded as well; anything else is NotFound.
"""

from __future__ import annotations

from collections.abc import Sequence

from .. import kubeobjects as ko
from ..base import ContainerRef
from ..errors import NotFound
from ..urlpath import segment

APPS = "/apis/apps/v1"


def namespace_segment(value: str) -> str:
    """A namespace as one path segment."""
    if not ko.is_label(value):
        raise NotFound(f"{value!r} is not a Kubernetes namespace name")
    return segment(value)


def name_segment(value: str) -> str:
    """A pod, workload or node name as one path segment, on the same terms as a namespace."""
    if not ko.is_object_name(value):
        raise NotFound(f"{value!r} is not a Kubernetes object name")
    return segment(value)


def pod_path(namespace: str, name: str = "") -> str:
    base = f"/api/v1/namespaces/{namespace_segment(namespace)}/pods"
    return f"{base}/{name_segment(name)}" if name else base


def workload_path(kind: str, namespace: str, name: str) -> str:
    return f"{APPS}/namespaces/{namespace_segment(namespace)}/{ko.SCALABLE[kind]}/{name_segment(name)}"


def collection_path(kind_path: str, scope: str) -> str:
    """Pods, or a kind of the apps group, in one namespace ("": in all of them)."""
    prefix = "/api/v1" if kind_path == "pods" else APPS
    return f"{prefix}/namespaces/{namespace_segment(scope)}/{kind_path}" if scope else f"{prefix}/{kind_path}"


class ManagedNamespaces:
    """The namespaces the gateway manages (none configured: all of them)."""

    def __init__(self, names: Sequence[str]) -> None:
        self._names = tuple(names)

    def of(self, ref: ContainerRef) -> str:
        """The namespace a request means: its own, else the only configured one, else "default".

        A namespace outside the configured ones is not managed: its pods do not exist here. Nor
        does anything whose name Kubernetes would refuse: a caller that skipped the gateway's
        validation gets NotFound, and the apiserver never sees the value.
        """
        namespace = ref.namespace or (self._names[0] if len(self._names) == 1 else "default")
        if not ko.is_label(namespace) or not ko.is_object_id(ref.id):
            raise NotFound(f"{namespace!r}/{ref.id!r} is not a Kubernetes namespace and object name")
        if ref.container and not ko.is_label(ref.container):
            raise NotFound(f"{ref.container!r} is not a container name")
        if self._names and namespace not in self._names:
            raise NotFound(f"namespace {namespace!r} is not one the gateway manages")
        return namespace

    def scopes(self, namespace: str | None) -> list[str]:
        """Namespaces to read ("" = all of them at once)."""
        if namespace:
            return [namespace] if not self._names or namespace in self._names else []
        return list(self._names) or [""]
