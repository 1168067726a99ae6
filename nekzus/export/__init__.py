"""Export containers to a docker-compose file that deploys and recreates them as they are."""

from .stack import ComposeExport, ExportError, build, drafts_for, unique_names

__all__ = ["ComposeExport", "ExportError", "build", "drafts_for", "unique_names"]
