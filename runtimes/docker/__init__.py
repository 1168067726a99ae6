"""The Docker backend: the Engine API over its socket, through aiodocker.

One module per concern, each taking the shared :class:`~.session.EngineSession`, and importing
only downward: ``aiodocker_compat`` (the one use of aiodocker's private methods), ``session`` (the
Engine, error translation, the daemon's info), ``paths`` and ``states`` at the bottom; ``queries``
(list, rows, inspect); ``lifecycle``, ``stats``, ``compose`` and ``export``, ``events`` and
``logs``; ``runtime``, the facade behind the Protocol.
"""

from .paths import is_container_id
from .runtime import DockerRuntime

__all__ = ["DockerRuntime", "is_container_id"]
