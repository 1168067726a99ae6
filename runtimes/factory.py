"""The one module that knows every backend: it builds them, and checks a client's names against
their rules before a runtime is chosen.

The gateway asks here instead of importing a backend. The Kubernetes backend is imported only when
it is built: kubernetes_asyncio loads every API model (about 35 MB).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from . import docker, kubeobjects
from .base import ContainerRuntime


def docker_runtime(host: str) -> ContainerRuntime:
    """A Docker Engine at ``host``; the client is created here, so call it inside the event loop."""
    return docker.DockerRuntime(host)


def kubernetes_runtime(
    *,
    kubeconfig: Path | None,
    context: str,
    in_cluster: bool,
    namespaces: Sequence[str],
    ready_timeout: float,
    request_timeout: float,
    watch_timeout: float,
) -> ContainerRuntime:
    """A kube-apiserver's pods; the client configuration is read when first needed."""
    from .kubernetes import KubernetesRuntime, kubeconfig_loader

    return KubernetesRuntime(
        kubeconfig_loader(kubeconfig, context, in_cluster=in_cluster),
        namespaces=namespaces,
        ready_timeout=ready_timeout,
        request_timeout=request_timeout,
        watch_timeout=watch_timeout,
    )


def is_container_id(value: object) -> bool:
    """An id some backend could accept, for a list of ids checked before the runtime is known (the
    runtime's own ``accepts_id`` follows when it is)."""
    return docker.is_container_id(value) or kubeobjects.is_object_id(value)


def is_namespace(value: object) -> bool:
    """A namespace name by the rules of the backend that has namespaces."""
    return kubeobjects.is_label(value)


def is_container_name(value: object) -> bool:
    """The name of one container of a pod."""
    return kubeobjects.is_label(value)
