"""Pages of a list: ``?limit=`` and ``?offset=``, the total in ``X-Total-Count`` and the neighbouring
pages in a ``Link`` header (RFC 8288), for every list endpoint alike. The body stays a JSON array."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from aiohttp import web

from ..params import int_query

T = TypeVar("T")

MAX_LIMIT = 1000
MAX_OFFSET = 10**9


def page_of(request: web.Request, items: Sequence[T]) -> tuple[Sequence[T], dict[str, str]]:
    """The part of ``items`` (already filtered and sorted) the request asks for, and its headers.

    Without ``limit`` every item from ``offset`` on is answered; ``Link`` then names only the
    previous page, if any. Links keep every other query parameter of the request as it was sent.
    """
    limit = int_query(request, "limit", default=None, minimum=1, maximum=MAX_LIMIT)
    offset = int_query(request, "offset", default=0, minimum=0, maximum=MAX_OFFSET) or 0
    total = len(items)
    chosen = items[offset : offset + limit] if limit is not None else items[offset:]
    headers = {"X-Total-Count": str(total)}
    links = []
    if limit is not None:
        if offset + limit < total:
            links.append(_link(request, limit, offset + limit, "next"))
        last = max(0, (total - 1) // limit * limit)
        links.append(_link(request, limit, 0, "first"))
        links.append(_link(request, limit, last, "last"))
    if offset > 0:
        step = limit if limit is not None else offset
        links.append(_link(request, limit, max(0, offset - step), "prev"))
    if links:
        headers["Link"] = ", ".join(links)
    return chosen, headers


def _link(request: web.Request, limit: int | None, offset: int, rel: str) -> str:
    query = request.rel_url.query.copy()
    if limit is not None:
        query["limit"] = str(limit)
    query["offset"] = str(offset)
    return f'<{request.rel_url.with_query(query)}>; rel="{rel}"'
