"""Services into one compose file: unique names, secrets as ${VARS}, YAML and a zip.

Compose interpolates every ``$`` in a file, so every value taken from a container is written with
``$$``; only the gateway's own ``${NAME}`` references are left to interpolate.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from runtimes import ServiceDraft
from runtimes.redact import WHOLE, Part, has_secret, secret_parts

_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # libyaml's emitter where it is installed
_NOT_VARIABLE = re.compile(r"[^A-Za-z0-9_]")


@dataclass(frozen=True, slots=True)
class ComposeExport:
    content: str
    filename: str
    warnings: list[str]
    env_content: str
    env_filename: str

    def to_json(self) -> dict[str, Any]:
        return {
            "format": "docker-compose",
            "content": self.content,
            "filename": self.filename,
            "warnings": self.warnings,
            "env_content": self.env_content,
            "env_filename": self.env_filename,
        }

    def to_zip(self) -> bytes:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(self.filename, self.content)
            archive.writestr(self.env_filename, self.env_content)
        return buffer.getvalue()


def _escape(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("$", "$$")
    if isinstance(value, list):
        return [_escape(v) for v in value]
    if isinstance(value, dict):
        return {k: _escape(v) for k, v in value.items()}
    return value


def unique_names(names: Iterable[str]) -> list[str]:
    """The names as given, a repeated one with -2, -3, … (never clashing with another given name)."""
    taken: set[str] = set()
    wanted = list(names)
    given = set(wanted)
    result = []
    for name in wanted:
        candidate, n = name, 1
        while candidate in taken or (n > 1 and candidate in given):
            n += 1
            candidate = f"{name}-{n}"
        taken.add(candidate)
        result.append(candidate)
    return result


def build(
    drafts: Sequence[ServiceDraft], *, base: str, sanitize: bool, warnings: Sequence[str] = ()
) -> ComposeExport:
    """The compose file of ``drafts``; ``base`` names the files (container or stack name)."""
    notes = list(warnings)
    services: dict[str, Any] = {}
    volumes: dict[str, Any] = {}
    networks: dict[str, Any] = {}
    variables: dict[str, str | None] = {}  # ${VAR} → the value it stands for (None: unknown)
    for draft, name in zip(drafts, unique_names(d.name for d in drafts), strict=True):
        body = _escape(draft.body)
        environment = []
        for key, value in draft.environment:
            parts = secret_parts(key, value) if sanitize else [Part(value)]
            if has_secret(parts):
                environment.append(f"{key}={_sanitized(key, parts, name, variables, notes)}")
            else:
                environment.append(f"{key}={_escape(value)}")
        for key in draft.from_secret:
            var = _variable(key, None, name, variables)
            if var not in variables:
                variables[var] = None
                notes.append(f"Secret '{key}' comes from a Kubernetes Secret: set it in the env file")
            environment.append(f"{key}=${{{var}}}")
        if environment:
            body = _with_environment(body, environment)
        services[name] = body
        for volume, options in draft.named_volumes.items():
            volumes[volume] = {"name": volume, **options}
        networks.update(draft.named_networks)
        notes.extend(draft.warnings)
    document: dict[str, Any] = {"services": services}
    if volumes:
        document["volumes"] = _escape(volumes)
    if networks:
        document["networks"] = _escape(networks)
    content = yaml.dump(
        document, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True
    )
    env = "".join(f"{var}=your_{var.lower()}_here\n" for var in variables)
    return ComposeExport(content, f"{base}-compose.yaml", notes, env, f"{base}.env")


def _sanitized(
    key: str, parts: Sequence[Part], service: str, variables: dict[str, str | None], notes: list[str]
) -> str:
    """The value with each secret part as a ${VAR}: the whole value ${KEY}, a part ${KEY_<LABEL>}
    (``DATABASE_URL=postgres://u:${DATABASE_URL_PASSWORD}@db/x``), so the URL keeps its shape."""
    text = []
    for part in parts:
        if part.secret is None:
            text.append(_escape(part.text))
            continue
        wanted = key if part.secret == WHOLE else f"{key}_{_NOT_VARIABLE.sub('_', part.secret).upper()}"
        var = _variable(wanted, part.text, service, variables)
        if var not in variables:
            variables[var] = part.text
            notes.append(f"Secret '{var}' was sanitized")
        text.append(f"${{{var}}}")
    return "".join(text)


def _variable(key: str, value: str | None, service: str, variables: dict[str, str | None]) -> str:
    """``key`` itself, unless another service already uses ${key} for a different value."""
    if key not in variables or (value is not None and variables[key] == value):
        return key
    var = f"{_NOT_VARIABLE.sub('_', service).upper()}_{key}"
    n = 2
    while var in variables and variables[var] != value:
        var = f"{_NOT_VARIABLE.sub('_', service).upper()}_{key}_{n}"
        n += 1
    return var


def _with_environment(body: dict[str, Any], environment: list[str]) -> dict[str, Any]:
    """``body`` with ``environment`` right after the image, name and command keys."""
    head = ("image", "container_name", "entrypoint", "command")
    return {
        **{k: v for k, v in body.items() if k in head},
        "environment": environment,
        **{k: v for k, v in body.items() if k not in head},
    }
