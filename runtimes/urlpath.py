"""Values from clients in a daemon's URL: each one becomes exactly one percent-encoded path segment.

The gateway validates ids and namespaces before they reach a runtime; this is the second line:
even a value that skipped validation cannot leave its place in the path or start a query.
"""

from __future__ import annotations

from urllib.parse import quote

from .errors import NotFound


def segment(value: str) -> str:
    """``value`` as one path segment, every character but ``A-Z a-z 0-9 _ . - ~`` percent-encoded.

    "", "." and ".." name nothing, and a URL library folds the dot segments away (leaving the
    path one level up): they are NotFound rather than sent.
    """
    if value in ("", ".", ".."):
        raise NotFound(f"{value!r} cannot name anything in a URL path")
    return quote(value, safe="")
