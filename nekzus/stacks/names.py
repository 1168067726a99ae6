"""Stack names: Compose project names, which are also the folder names of managed stacks."""

from __future__ import annotations

import re
from typing import Any, TypeGuard

from ..errors import ApiError

# Compose's own rule for a project name, capped so a folder and every container name built from
# it stay well inside the file system's and the Engine's limits. It has no dot and no slash, so a
# name can never lead out of the stacks directory.
_STACK_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
MAX_NAME = 63


def is_stack_name(value: Any) -> TypeGuard[str]:
    return isinstance(value, str) and _STACK_NAME.fullmatch(value) is not None


def stack_name(value: Any) -> str:
    """``value`` if it is a valid stack name, else ``400 INVALID_STACK_NAME``."""
    if not is_stack_name(value):
        raise ApiError(
            400,
            "INVALID_STACK_NAME",
            f"A stack name is 1 to {MAX_NAME} characters of lowercase letters, digits, '_' and '-', "
            "starting with a letter or a digit",
        )
    return value
