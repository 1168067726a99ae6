"""Which containers the gateway manages ("linked to approved routes"), and which one is itself.

A container is linked when its ``nekzus.http.app.id`` label names an app listed under ``apps:``, or when
it carries ``nekzus.enable=true``. Pods may use the same keys as labels or annotations, with the
``nekzus/`` spellings too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from runtimes import ContainerSummary

from .config import AppConfig

_ENABLE_KEYS = ("nekzus.enable", "nekzus/enable")
_APP_ID_KEYS = ("nekzus.http.app.id", "nekzus/app-id")
_CONTAINER_ID = re.compile(r"(?<![0-9a-f])([0-9a-f]{64})(?![0-9a-f])")


def _lookup(keys: Iterable[str], *maps: Mapping[str, str]) -> str:
    for mapping in maps:
        for key in keys:
            value = mapping.get(key)
            if value:
                return value
    return ""


class AppLinker:
    def __init__(self, apps: Iterable[AppConfig]) -> None:
        self._apps = {app.id: app for app in apps}

    def app_of(self, container: ContainerSummary) -> tuple[str, str] | None:
        """(app id, app name) of a linked container, or None when it is not linked."""
        app_id = _lookup(_APP_ID_KEYS, container.labels, container.annotations)
        app = self._apps.get(app_id)
        if app is not None:
            return app.id, app.name
        enabled = _lookup(_ENABLE_KEYS, container.labels, container.annotations)
        if enabled.strip().lower() == "true":
            derived = app_id or container.name
            return derived, derived
        return None

    def is_linked(self, container: ContainerSummary) -> bool:
        return self.app_of(container) is not None


def detect_self_container_id(proc: Path = Path("/proc/self")) -> str:
    """The full id of the container this process runs in, or "" outside a container.

    Docker bind-mounts ``/etc/hostname`` and friends from ``…/containers/<id>/``, which shows in
    mountinfo on cgroup v1 and v2 alike; the cgroup path is the fallback for older setups.
    """
    for name, marker in (("mountinfo", "/containers/"), ("cgroup", "docker")):
        try:
            text = (proc / name).read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if marker in line:
                match = _CONTAINER_ID.search(line)
                if match:
                    return match.group(1)
    return ""


def is_self(container: ContainerSummary, self_id: str) -> bool:
    return bool(self_id) and (container.full_id.startswith(self_id) or self_id.startswith(container.full_id))
