"""Export containers to a docker-compose file that deploys and recreates them as they are.

Each runtime turns its own containers into service drafts; this package merges them into one
stack: unique names, secrets as variables, YAML and a zip.
"""

from .stack import ComposeExport, build, unique_names

__all__ = ["ComposeExport", "build", "unique_names"]
