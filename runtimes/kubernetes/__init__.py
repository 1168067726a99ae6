"""The Kubernetes backend: pods through a kube-apiserver, with kubernetes_asyncio.

One module per concern, each taking the shared :class:`~.client.ApiSession`, and importing only
downward: ``client`` (the session, error translation, retries) and ``paths`` at the bottom;
``stops`` (the record a stop leaves); ``queries``; ``scaling`` and ``lifecycle`` (actions);
``stats``, ``watch``, ``logs`` and ``readiness``; ``runtime``, the facade behind the Protocol.
"""

from .client import kubeconfig_loader
from .runtime import KubernetesRuntime

__all__ = ["KubernetesRuntime", "kubeconfig_loader"]
