"""The body of ``POST /api/v1/containers`` checked field by field into a :class:`ContainerSpec`.

Every refusal is ``400 VALIDATION_ERROR`` whose message names the field's path
(``ports[1].containerPort``) and whose ``field`` key holds it, so a form can mark the field. Only
values a Docker Engine takes as they are get through: nothing here is passed on for the Engine to
judge, since its own message would not reach the client.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Any, cast

from runtimes.engine.creation import ContainerSpec, MountSpec, PortProtocol, PortSpec, RestartPolicy
from runtimes.engine.images import is_image_reference

from ..errors import ApiError, validation_error

FIELDS = (
    "name",
    "image",
    "command",
    "env",
    "ports",
    "volumes",
    "labels",
    "restartPolicy",
    "start",
    "network",
)
REQUIRED = ("name", "image")

MAX_ITEMS = 256  # command arguments, environment variables, ports, labels
MAX_VOLUMES = 128
MAX_STRING = 4096  # a command argument, a label value, a path
MAX_ENV_VALUE = 32_768
MAX_ENV_TOTAL = 262_144  # bytes of every variable together
MAX_RETRIES = 1000

_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}")
_VOLUME_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{1,127}")
_ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,255}")
_RESTART = re.compile(r"(no|always|unless-stopped|on-failure)(?::([0-9]{1,4}))?")
_PROTOCOLS = ("tcp", "udp", "sctp")
_PORT_FIELDS = ("containerPort", "hostPort", "protocol", "hostIp")
_VOLUME_FIELDS = ("source", "target", "mode")

ENABLE_LABEL = "nekzus.enable"
# Security: labels in the gateway's namespace decide what it manages; a client sets only whether
# its container is linked, never an app id or a test marker of its own choosing.
_RESERVED_PREFIXES = ("nekzus.", "nekzus/")


def invalid(field: str, message: str) -> ApiError:
    return validation_error(field, f"{field}: {message}")


def container_spec(body: Mapping[str, Any]) -> tuple[ContainerSpec, bool]:
    """The spec ``body`` describes, and whether to start the container (default: yes).

    ``body`` holds only :data:`FIELDS` (``json_fields`` refused any other).
    """
    for required in REQUIRED:
        if body.get(required) is None:
            raise invalid(required, "is required")
    name, image = body["name"], body["image"]
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise invalid(
            "name", "must be 1 to 128 letters, digits, '_', '.' or '-', starting with a letter or digit"
        )
    if not is_image_reference(image):
        raise invalid("image", "must be an image reference such as nginx:1.25 or registry:5000/team/app:v2")
    start = body.get("start", True)
    if not isinstance(start, bool):
        raise invalid("start", "must be true or false")
    spec = ContainerSpec(
        name=name,
        image=image,
        command=_command(body.get("command")),
        env=_env(body.get("env")),
        ports=_ports(body.get("ports")),
        volumes=_volumes(body.get("volumes")),
        labels=_labels(body.get("labels")),
        restart=_restart(body.get("restartPolicy")),
        network=_network(body.get("network")),
    )
    return spec, start


def _string(field: str, value: Any, *, limit: int = MAX_STRING) -> str:
    if not isinstance(value, str):
        raise invalid(field, "must be a string")
    if len(value) > limit:
        raise invalid(field, f"must be at most {limit} characters long")
    if "\x00" in value:
        raise invalid(field, "must not contain a NUL character")
    return value


def _items(field: str, value: Any, limit: int) -> list[Any]:
    if not isinstance(value, list):
        raise invalid(field, "must be an array")
    if len(value) > limit:
        raise invalid(field, f"may have at most {limit} items")
    return value


def _object(field: str, value: Any, allowed: tuple[str, ...]) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise invalid(field, "must be an object")
    unknown = [key for key in value if key not in allowed]
    if unknown:
        raise invalid(f"{field}.{unknown[0]}", f"is not a field here; the fields are {', '.join(allowed)}")
    return value


def _whole(field: str, value: Any, low: int, high: int) -> int:
    # bool is an int in Python, and 80.0 or NaN is no port: only JSON integers count.
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise invalid(field, f"must be a whole number from {low} to {high}")
    return value


def _command(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    items = _items("command", value, MAX_ITEMS)
    if not items:
        raise invalid("command", "must have at least one item (leave it out to keep the image's command)")
    return tuple(_string(f"command[{i}]", item) for i, item in enumerate(items))


def _env(value: Any) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    pairs: list[tuple[str, str, str]] = []  # (field path, key, value)
    if isinstance(value, dict):
        if len(value) > MAX_ITEMS:
            raise invalid("env", f"may have at most {MAX_ITEMS} variables")
        pairs = [
            (f"env.{key}", key, _string(f"env.{key}", v, limit=MAX_ENV_VALUE)) for key, v in value.items()
        ]
    else:
        for i, item in enumerate(_items("env", value, MAX_ITEMS)):
            text = _string(f"env[{i}]", item, limit=MAX_ENV_VALUE + 257)
            key, equals, rest = text.partition("=")
            if not equals:
                raise invalid(f"env[{i}]", "must be KEY=VALUE")
            pairs.append((f"env[{i}]", key, rest))
    seen: set[str] = set()
    total = 0
    for field, key, text in pairs:
        if not _ENV_KEY.fullmatch(key):
            raise invalid(
                field,
                "the variable's name must be letters, digits, '_', '.' or '-', not starting with a digit",
            )
        if key in seen:
            raise invalid(field, f"sets {key} a second time")
        seen.add(key)
        total += len(key) + len(text) + 1
    if total > MAX_ENV_TOTAL:
        raise invalid("env", f"may hold at most {MAX_ENV_TOTAL} characters in all")
    return tuple((key, text) for _, key, text in pairs)


def _ports(value: Any) -> tuple[PortSpec, ...]:
    if value is None:
        return ()
    ports = []
    published: set[tuple[str, int, str]] = set()
    for i, item in enumerate(_items("ports", value, MAX_ITEMS)):
        field = f"ports[{i}]"
        entry = _object(field, item, _PORT_FIELDS)
        if "containerPort" not in entry:
            raise invalid(f"{field}.containerPort", "is required")
        container_port = _whole(f"{field}.containerPort", entry["containerPort"], 1, 65535)
        raw_host = entry.get("hostPort")
        host_port = None if raw_host is None else _whole(f"{field}.hostPort", raw_host, 1, 65535)
        protocol = entry.get("protocol", "tcp")
        if protocol not in _PROTOCOLS:
            raise invalid(f"{field}.protocol", "must be tcp, udp or sctp")
        host_ip = ""
        if entry.get("hostIp") is not None:
            raw_ip = _string(f"{field}.hostIp", entry["hostIp"], limit=64)
            try:
                host_ip = str(ipaddress.ip_address(raw_ip))
            except ValueError as exc:
                raise invalid(f"{field}.hostIp", "must be an IPv4 or IPv6 address") from exc
        if host_port is not None:
            key = (host_ip, host_port, protocol)
            if key in published:
                raise invalid(
                    f"{field}.hostPort", f"publishes host port {host_port}/{protocol} a second time"
                )
            published.add(key)
        ports.append(PortSpec(container_port, host_port, cast(PortProtocol, protocol), host_ip))
    return tuple(ports)


def _path(field: str, value: Any) -> str:
    """An absolute path with nothing that could leave it or split a bind (``..``, ``:``)."""
    path = _string(field, value)
    if not path.startswith("/"):
        raise invalid(field, "must be an absolute path")
    if ".." in path.split("/"):
        raise invalid(field, "must not contain '..'")
    if ":" in path or "," in path:
        raise invalid(field, "must not contain ':' or ','")
    return path


def _volumes(value: Any) -> tuple[MountSpec, ...]:
    if value is None:
        return ()
    mounts = []
    targets: set[str] = set()
    for i, item in enumerate(_items("volumes", value, MAX_VOLUMES)):
        field = f"volumes[{i}]"
        entry = _object(field, item, _VOLUME_FIELDS)
        for required in ("source", "target"):
            if required not in entry:
                raise invalid(f"{field}.{required}", "is required")
        source = entry["source"]
        if not (isinstance(source, str) and _VOLUME_NAME.fullmatch(source)):
            if not (isinstance(source, str) and source.startswith("/")):
                raise invalid(
                    f"{field}.source",
                    "must be a volume name (letters, digits, '_', '.', '-') or an absolute path",
                )
            source = _path(f"{field}.source", source)
        target = _path(f"{field}.target", entry["target"])
        if target.rstrip("/") == "":
            raise invalid(f"{field}.target", "cannot be the root directory")
        if target.rstrip("/") in targets:
            raise invalid(f"{field}.target", f"mounts something at {target} a second time")
        targets.add(target.rstrip("/"))
        mode = entry.get("mode", "rw")
        if mode not in ("ro", "rw"):
            raise invalid(f"{field}.mode", "must be ro or rw")
        mounts.append(MountSpec(source, target, read_only=mode == "ro"))
    return tuple(mounts)


def _labels(value: Any) -> dict[str, str]:
    """The client's labels, plus ``nekzus.enable=true`` unless it says "false": a container made
    through the gateway is one it manages."""
    labels: dict[str, str] = {}
    if value is not None:
        if not isinstance(value, dict):
            raise invalid("labels", "must be an object of strings")
        if len(value) > MAX_ITEMS:
            raise invalid("labels", f"may have at most {MAX_ITEMS} labels")
        for key, text in value.items():
            field = f"labels.{key}"
            if not key or len(key) > 255 or "\x00" in key:
                raise invalid("labels", "label names must be 1 to 255 characters long")
            labels[key] = _string(field, text)
            if key.startswith(_RESERVED_PREFIXES) and key != ENABLE_LABEL:
                raise invalid(field, f"the nekzus namespace is the gateway's; only {ENABLE_LABEL} may be set")
    enable = labels.setdefault(ENABLE_LABEL, "true")
    if enable not in ("true", "false"):
        raise invalid(f"labels.{ENABLE_LABEL}", "must be true or false")
    return labels


def _restart(value: Any) -> RestartPolicy | None:
    if value is None:
        return None
    text = _string("restartPolicy", value, limit=32)
    match = _RESTART.fullmatch(text)
    if match is None or (match.group(2) is not None and match.group(1) != "on-failure"):
        raise invalid("restartPolicy", "must be no, always, unless-stopped, on-failure or on-failure:N")
    retries = 0 if match.group(2) is None else int(match.group(2))
    if retries > MAX_RETRIES:
        raise invalid("restartPolicy", f"on-failure may retry at most {MAX_RETRIES} times")
    name = cast(Any, match.group(1))
    return RestartPolicy(name, retries)


def _network(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise invalid("network", "must be a network name, or none or host")
    return value
