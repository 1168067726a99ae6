"""Container runtime backends behind one Protocol; nothing here knows about HTTP."""

from .base import (
    ContainerRef,
    ContainerRow,
    ContainerRuntime,
    ContainerState,
    ContainerSummary,
    ExportSource,
    LogChunk,
    PortMapping,
    RowSource,
    RuntimeEvent,
    RuntimeInfo,
    StatsSample,
)
from .compose import ServiceDraft
from .errors import (
    AlreadyInState,
    Conflict,
    Forbidden,
    NotFound,
    OperationFailed,
    RuntimeFailure,
    Unavailable,
    Unsupported,
)
from .registry import NoRuntime, RuntimeRegistry, UnknownRuntime

__all__ = [
    "AlreadyInState",
    "Conflict",
    "ContainerRef",
    "ContainerRow",
    "ContainerRuntime",
    "ContainerState",
    "ContainerSummary",
    "ExportSource",
    "Forbidden",
    "LogChunk",
    "NoRuntime",
    "NotFound",
    "OperationFailed",
    "PortMapping",
    "RowSource",
    "RuntimeEvent",
    "RuntimeFailure",
    "RuntimeInfo",
    "RuntimeRegistry",
    "ServiceDraft",
    "StatsSample",
    "Unavailable",
    "UnknownRuntime",
    "Unsupported",
]
