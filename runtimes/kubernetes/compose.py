"""A Kubernetes pod as compose services: image, command, environment and ports per container.

Everything else a pod has (probes, resources, volumes, service account, init containers) has no
faithful compose form, so the export says it was converted rather than pretending otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..compose import ServiceDraft


def pod_services(pod: Mapping[str, Any]) -> list[ServiceDraft]:
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    pod_name = str(meta.get("name", "pod"))
    containers = list(spec.get("containers") or ())
    drafts = []
    for container in containers:
        name = pod_name if len(containers) == 1 else f"{pod_name}-{container.get('name', '')}"
        draft = ServiceDraft(name=name)
        body = draft.body
        body["image"] = container.get("image", "")
        body["container_name"] = name
        # Kubernetes' command replaces the image's ENTRYPOINT, its args the CMD.
        if container.get("command"):
            body["entrypoint"] = list(container["command"])
        if container.get("args"):
            body["command"] = list(container["args"])
        for var in container.get("env") or ():
            key = str(var.get("name", ""))
            if "value" in var:
                draft.environment.append((key, str(var["value"])))
            elif "secretKeyRef" in (var.get("valueFrom") or {}):
                draft.from_secret.append(key)
            else:
                draft.warnings.append(f"Variable '{key}' of '{name}' comes from the cluster and was left out")
        ports = []
        for port in container.get("ports") or ():
            proto = str(port.get("protocol", "TCP")).lower()
            suffix = "" if proto == "tcp" else f"/{proto}"
            host = port.get("hostPort")
            ports.append(
                f"{host}:{port['containerPort']}{suffix}" if host else f"{port['containerPort']}{suffix}"
            )
        if ports:
            body["ports"] = ports
        if container.get("workingDir"):
            body["working_dir"] = container["workingDir"]
        restart = {"Always": "always", "OnFailure": "on-failure"}.get(
            str(spec.get("restartPolicy", "Always"))
        )
        if restart:
            body["restart"] = restart
        draft.warnings.append(
            f"'{name}' was converted from pod '{pod_name}': probes, resources, volumes and other "
            "Kubernetes settings were left out"
        )
        drafts.append(draft)
    return drafts
