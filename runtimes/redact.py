"""Which environment variables hold secrets, so their values are never shown by default."""

from __future__ import annotations

from collections.abc import Iterable

SECRET_MARKERS = (
    "PASSWORD",
    "PASSWD",
    "SECRET",
    "TOKEN",
    "API_KEY",
    "ACCESS_KEY",
    "PRIVATE_KEY",
    "CREDENTIAL",
)
MASK = "***"


def is_secret_name(name: str) -> bool:
    upper = name.upper().replace("-", "_")
    return any(marker in upper for marker in SECRET_MARKERS)


def mask_env_list(env: Iterable[str]) -> list[str]:
    """Mask ``NAME=value`` entries whose name looks secret; other entries are kept as they are."""
    masked = []
    for entry in env:
        name, sep, _ = entry.partition("=")
        masked.append(f"{name}={MASK}" if sep and is_secret_name(name) else entry)
    return masked
