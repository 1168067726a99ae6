"""One service on its way into a compose file, before secrets and names are settled.

Each runtime translates its own containers into drafts (it alone knows their documents); the
gateway merges the drafts of a stack into one file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class ServiceDraft:
    """``body`` holds the service's keys in the order they are written; the environment, named
    volumes and networks are kept apart because the stack settles them across services."""

    name: str
    body: dict[str, Any] = field(default_factory=dict)
    # (name, value) pairs, values as the runtime has them; ``from_secret`` names values only a
    # Kubernetes Secret holds, which always become ${NAME} references.
    environment: list[tuple[str, str]] = field(default_factory=list)
    from_secret: list[str] = field(default_factory=list)
    volumes_used: list[str] = field(default_factory=list)
    named_volumes: dict[str, dict[str, Any]] = field(default_factory=dict)
    named_networks: dict[str, dict[str, Any]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
