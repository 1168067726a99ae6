"""``GET /api/v1/events``: the WebSocket's replay buffer over REST, for clients that poll; and the
snapshot a WebSocket ``resync`` carries, for clients too far behind for a replay."""

from __future__ import annotations

import json
from typing import Any, TypeGuard

from aiohttp import web

from ...errors import ApiError, invalid_request
from ...keys import OPERATIONS, REGISTRY, STATE
from ...params import int_query, single_query
from ...realtime.hub import HUB, wanted
from ...realtime.replay import Expired, ReplayBuffer
from ...realtime.updates import UPDATES
from ...security.auth import READ_CONTAINERS, requires
from ..pages import MAX_LIMIT
from .common import list_from, managed, summary_json

DEFAULT_LIMIT = 100
# The largest seq a client may name: a gateway publishing 1,000 events a second reaches it in 31 years.
MAX_SEQ = 10**12 - 1
MAX_EPOCH_LENGTH = 64
MAX_FILTERS = 64  # patterns in one filter: each event matches every one of them
MAX_FILTER_LENGTH = 128


def seq_query(request: web.Request, name: str) -> int | None:
    """A ``seq`` given once in the query (0 to MAX_SEQ), None when absent; else INVALID_REQUEST."""
    single_query(request, name)
    return int_query(request, name, default=None, minimum=0, maximum=MAX_SEQ)


def valid_types(types: object) -> TypeGuard[list[str]]:
    """A list of 1 to MAX_FILTERS message types or patterns, each of 1 to MAX_FILTER_LENGTH characters."""
    return (
        isinstance(types, list)
        and 0 < len(types) <= MAX_FILTERS
        and all(isinstance(t, str) and 0 < len(t) <= MAX_FILTER_LENGTH for t in types)
    )


def expired(replay: ReplayBuffer) -> ApiError:
    return ApiError(
        410,
        "EVENTS_EXPIRED",
        "The events after this seq are no longer kept, or the seq is from another epoch: "
        "read the state afresh, then go on from this seq",
        epoch=replay.epoch,
        seq=replay.seq,
    )


@requires(READ_CONTAINERS)
async def replay_events(request: web.Request) -> web.Response:
    """The kept events after ``?after=`` (default: every one kept), oldest first, at most ``limit``.

    The events are the WebSocket's messages as they were sent, each with its ``seq`` in front: no
    event is parsed or serialised again here.
    """
    replay = request.app[HUB].replay
    after = seq_query(request, "after")
    single_query(request, "limit")
    limit = int_query(request, "limit", default=DEFAULT_LIMIT, minimum=1, maximum=MAX_LIMIT)
    epoch = single_query(request, "epoch")
    if epoch is not None and not 0 < len(epoch) <= MAX_EPOCH_LENGTH:
        raise invalid_request(f"Query parameter 'epoch' must be 1 to {MAX_EPOCH_LENGTH} characters")
    types: frozenset[str] | None = None
    raw_types = single_query(request, "types")
    if raw_types is not None:
        chosen = [t.strip() for t in raw_types.split(",")]
        if not valid_types(chosen):
            raise invalid_request(
                f"Query parameter 'types' must be 1 to {MAX_FILTERS} comma-separated message types or "
                f"patterns like container.* (each at most {MAX_FILTER_LENGTH} characters)"
            )
        types = frozenset(chosen)
    if after is None:
        after = replay.first - 1
    try:
        replay.check(epoch, after)
    except Expired:
        raise expired(replay) from None
    events: list[str] = []
    more = False
    for entry in replay.since(after):
        if not wanted(types, entry.type):
            continue
        if len(events) == limit:
            more = True
            break
        # The message is {"type":…,"data":…}: the item is the same object with its seq first.
        events.append(f'{{"seq":{entry.seq},{entry.text[1:]}')
    body = (
        f'{{"epoch":{json.dumps(replay.epoch)},"seq":{replay.seq},'
        f'"events":[{",".join(events)}],"more":{"true" if more else "false"}}}'
    )
    return web.Response(text=body, content_type="application/json")


async def snapshot(request: web.Request) -> dict[str, Any]:
    """The containers as the list route renders them (from the state models where warm), and
    the records of the operations still running.

    Raises ApiError when no runtime can be listed.
    """
    app = request.app
    runtimes = [*app[REGISTRY]]
    containers = managed(request, await list_from(runtimes, "", app[STATE].models))
    updates = app[UPDATES]
    return {
        "containers": [summary_json(c, updates.of(c.runtime, c.full_id)) for c in containers],
        "operations": [op.to_json() for op in app[OPERATIONS].pending()],
    }
