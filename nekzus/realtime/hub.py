"""The WebSocket hub: every connection, what it may receive, and the one writer that feeds it.

Each connection has one writer task and one outbox. Broadcast events are serialised once and
offered to every outbox without awaiting; an outbox already holding ``event_limit`` unsent events
marks its connection overflowed, and the connection is closed with 1013 rather than allowed to
stall the others or grow without bound. Log lines, and the replies to a client's own messages, go
through the same outbox but their producers wait for room (backpressure): a slow reader slows only
its own streams and its own requests, and loses nothing.

Every broadcast is numbered here (``seq`` and ``epoch`` in its data) and kept in the replay buffer,
the same string that goes to the outboxes. A connection that resumes is *catching up*: broadcasts
pass it by while it is sent what the buffer holds after its ``seq``, with backpressure like a log
line, and it turns live, in one step with no await, once it has been sent the last one.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import WSCloseCode, web

from ..security.auth import READ_CONTAINERS, Principal, segments_match
from ..tasks import TaskGroup
from .aiohttp_compat import drain, text_frame
from .events import Event, now
from .replay import ReplayBuffer

if TYPE_CHECKING:
    from .logstream import LogSession
    from .stacklogs import StackLogSession

log = logging.getLogger(__name__)

CLOSE_TRY_AGAIN_LATER = 1013
CLOSE_INTERNAL_ERROR = 1011
WRITE_BATCH = 256  # messages framed into one socket write at most
CLOSE_TIMEOUT = 2.0

HUB: web.AppKey[Hub] = web.AppKey("hub")


def dumps(message_type: str, data: Any) -> str:
    return json.dumps({"type": message_type, "data": data}, separators=(",", ":"), ensure_ascii=False)


def wanted(filters: frozenset[str] | None, message_type: str) -> bool:
    """Whether a subscription's type patterns (None: every type) let ``message_type`` through."""
    if filters is None:
        return True
    return any(segments_match(pattern, message_type, ".") for pattern in filters)


class OutboxClosed(Exception):
    """The connection is gone; a log producer stops."""


class Outbox:
    """The ordered messages waiting for one connection's writer.

    Two kinds share one queue, so that order holds across them: broadcast events, offered without
    waiting and bounded by ``event_limit`` (overflow closes the connection), and awaited messages
    (log lines, log stream notices, replies), whose producers wait while ``room`` of them are unsent.
    A held outbox (a session whose token expired) keeps log producers waiting; replies still pass.
    """

    def __init__(self, *, event_limit: int, room: int) -> None:
        self._items: deque[tuple[str, bool]] = deque()
        self._event_limit = event_limit
        self._events = 0
        self._room_left = room
        self._room = asyncio.Event()
        self._room.set()
        self._ready = asyncio.Event()
        self.overflowed = False
        self.closed = False
        self.held = False

    def offer(self, text: str) -> bool:
        """Queue a broadcast event without waiting; False (and overflowed) when there is no room."""
        if self.closed or self.overflowed:
            return False
        if self._events >= self._event_limit:
            self.overflowed = True
            self._ready.set()
            return False
        self._events += 1
        self._items.append((text, False))
        self._ready.set()
        return True

    async def put(self, text: str) -> None:
        """Queue a reply to the client's own message, waiting while the room is taken."""
        if self._room_left <= 0 or self.closed:
            await self._wait(holdable=False)
        self._room_left -= 1
        self._items.append((text, True))
        self._ready.set()

    async def put_log(self, text: str) -> None:
        """Queue a log line or notice, waiting while the room is taken or the outbox is held."""
        # The common case (room, not held) takes no second coroutine: this runs once per log line.
        if self._room_left <= 0 or self.held or self.closed:
            await self._wait(holdable=True)
        self._room_left -= 1
        self._items.append((text, True))
        self._ready.set()

    async def _wait(self, *, holdable: bool) -> None:
        while not self.closed and (self._room_left <= 0 or (holdable and self.held)):
            self._room.clear()
            await self._room.wait()
        if self.closed:
            raise OutboxClosed

    def hold(self) -> None:
        self.held = True

    def release(self) -> None:
        self.held = False
        self._room.set()

    def __len__(self) -> int:
        return len(self._items)

    @property
    def idle(self) -> bool:
        """Nothing is waiting: a message written now would not overtake one already queued."""
        return not self._items and not self.overflowed and not self.closed

    def pop(self) -> str | None:
        """The next message if one is waiting (and the outbox has not overflowed), else None."""
        if not self._items or self.overflowed:
            return None
        text, awaited = self._items.popleft()
        if awaited:
            self._room_left += 1
            self._room.set()
        else:
            self._events -= 1
        return text

    async def next(self) -> str | None:
        """The next message to send, or None once the outbox is closed or has overflowed."""
        while (text := self.pop()) is None:
            if self.closed or self.overflowed:
                return None
            self._ready.clear()
            await self._ready.wait()
        return text

    def close(self) -> None:
        self.closed = True
        self._ready.set()
        self._room.set()  # producers waiting for room wake, see ``closed`` and stop


@dataclass(eq=False)
class Connection:
    ws: web.WebSocketResponse
    request: web.Request
    outbox: Outbox
    principal: Principal
    filters: frozenset[str] | None = None
    writer: asyncio.Task[None] | None = None
    streams: dict[tuple[str, str, str, str], LogSession] = field(default_factory=dict)
    # The stacks followed whole (stack.logs.subscribe), by stack name.
    stack_streams: dict[str, StackLogSession] = field(default_factory=dict)
    # The one pending deadline of the session (its token's expiry, or the end of the grace).
    deadline: asyncio.TimerHandle | None = None
    # Broadcasts pass the connection by: it is being sent them from the replay buffer instead.
    catching_up: bool = False

    @property
    def peer(self) -> str:
        return str(self.request.remote)

    @property
    def suspended(self) -> bool:
        """The token expired and the grace runs: no events, log streams wait, replies still go."""
        return self.outbox.held

    def suspend(self) -> None:
        self.outbox.hold()

    def resume(self) -> None:
        self.outbox.release()

    def set_deadline(self, delay: float | None, callback: Callable[[], None] | None = None) -> None:
        """Replace the pending deadline (None: none); the hub cancels it when the connection goes."""
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None
        if delay is not None and callback is not None:
            self.deadline = asyncio.get_running_loop().call_later(max(delay, 0.0), self._reached, callback)

    def _reached(self, callback: Callable[[], None]) -> None:
        self.deadline = None
        callback()

    def write_now(self, frame: bytes) -> bool:
        """Write a ready-made frame straight to the socket when that cannot reorder or pile up.

        Only when nothing is queued for the writer and the socket has taken everything written
        so far (a client that keeps up); otherwise the caller queues the message instead.
        """
        transport = self.request.transport
        if (
            not self.outbox.idle
            or transport is None
            or transport.is_closing()
            or transport.get_write_buffer_size()
            or self.ws.closed
        ):
            return False
        transport.write(frame)
        return True

    def wants(self, message_type: str) -> bool:
        return wanted(self.filters, message_type)

    async def reply(self, message_type: str, data: dict[str, Any]) -> None:
        """Answer the client's own message, waiting for room: a client that sends faster than it
        reads stops being read (TCP then slows it down) instead of filling memory or its event queue.

        Raises OutboxClosed when the connection is gone.
        """
        data.setdefault("timestamp", now())
        await self.outbox.put(dumps(message_type, data))

    def notify(self, message_type: str, data: dict[str, Any]) -> None:
        """A notice of the server's own (no client message to slow down): counted like an event."""
        data.setdefault("timestamp", now())
        self.outbox.offer(dumps(message_type, data))


class Hub:
    def __init__(
        self, *, event_limit: int, log_limit: int, replay_events: int = 0, replay_seconds: float = 0.0
    ) -> None:
        # ``log_limit`` is the room for awaited messages: log lines and replies alike.
        self.event_limit = event_limit
        self.log_limit = log_limit
        self.replay = ReplayBuffer(max_events=replay_events, max_age=replay_seconds)
        self.connections: set[Connection] = set()
        # Called with each event and the seq it was given, after the clients were handed it
        # (outbound webhooks); like a bus listener, one must not block or await.
        self.numbered: list[Callable[[Event, int], None]] = []
        self._tasks = TaskGroup()

    def open(self, ws: web.WebSocketResponse, request: web.Request, principal: Principal) -> Connection:
        """Register an authenticated connection and start its writer.

        Only callers allowed to read containers are let in (and a re-authentication may not
        take that away), so a broadcast need not check each connection's scopes again.
        """
        assert principal.allows(READ_CONTAINERS)
        conn = Connection(ws, request, Outbox(event_limit=self.event_limit, room=self.log_limit), principal)
        conn.writer = self._tasks.spawn(self._write(conn), name=f"ws-writer-{request.remote}-{id(conn):x}")
        self.connections.add(conn)
        return conn

    def spawn(self, coro: Coroutine[Any, Any, None], *, name: str) -> asyncio.Task[None]:
        """A task owned by the hub (a log stream), cancelled and awaited at shutdown."""
        return self._tasks.spawn(coro, name=name)

    def forget(self, conn: Connection) -> None:
        self.connections.discard(conn)
        conn.set_deadline(None)
        conn.outbox.close()

    def end(self, conn: Connection, code: int, reason: bytes) -> None:
        """Close a connection whose session is over, after its writer has sent what is queued."""
        if conn not in self.connections:
            return
        self.forget(conn)
        self._tasks.spawn(self._close(conn, code, reason, flush=True), name=f"ws-close-{id(conn):x}")

    def broadcast(self, event: Event) -> None:
        """Number, serialise and frame once, keep for replay, hand to every reader; never waits.

        A client that keeps up gets the frame written at once (waking a writer task per client
        would cost more than the send itself); one that is behind gets it queued in order.
        """
        replay = self.replay
        seq = replay.next_seq()
        text = dumps(event.type, {**event.data, "seq": seq, "epoch": replay.epoch})
        replay.keep(seq, event.type, text)
        frame = b""
        for conn in list(self.connections):
            # A session in its re-authentication grace receives no events (see routes/ws.py).
            if (
                conn.catching_up
                or conn.outbox.held
                or (conn.filters is not None and not conn.wants(event.type))
            ):
                continue
            if not frame:
                frame = text_frame(text.encode())
            if conn.write_now(frame):
                continue
            if not conn.outbox.offer(text) and conn.outbox.overflowed:
                self._overflowed(conn)
        for follower in self.numbered:
            follower(event, seq)

    async def catch_up(
        self, conn: Connection, after: int, announce: Callable[[int, int], str] | None = None
    ) -> tuple[int, int]:
        """Send ``conn`` every kept event after ``after`` that it wants, in order, then make it live.

        The caller set ``conn.catching_up`` before anything it sent, so no broadcast reached it
        since ``after``. ``announce(seq, replayed)``, when given, is sent once the replay has reached
        the newest event, before any later one. Each message waits for room in the outbox (and
        while the session is suspended), so a long replay never overflows it. The answer is the
        last ``seq`` sent through and the number of events sent. Raises Expired when the buffer
        dropped an event before it was sent (the connection stays catching up), OutboxClosed
        when the connection is gone.
        """
        replayed = 0
        while True:
            entry = self.replay.next_after(after)
            if entry is None:
                if announce is None:
                    # Ordering: no await between the last replayed event and turning live.
                    conn.catching_up = False
                    return after, replayed
                await conn.outbox.put_log(announce(after, replayed))
                announce = None
                continue
            after = entry.seq
            if conn.wants(entry.type):
                await conn.outbox.put_log(entry.text)
                replayed += 1

    def _overflowed(self, conn: Connection) -> None:
        if conn not in self.connections:
            return
        log.warning(
            "closing the WebSocket of %s with 1013: %d events were waiting unsent",
            conn.peer,
            self.event_limit,
        )
        self.forget(conn)
        self._tasks.spawn(
            self._close(conn, CLOSE_TRY_AGAIN_LATER, b"too slow"), name=f"ws-close-{id(conn):x}"
        )

    async def _write(self, conn: Connection) -> None:
        """Send what the outbox holds, every waiting message framed into one socket write.

        One write per waiting batch instead of one per message: a log stream of short lines
        costs a system call per line otherwise. Backpressure is the socket's own: when the
        transport pauses writing, this waits (as aiohttp's own writer does) until it resumes.
        """
        outbox, ws = conn.outbox, conn.ws
        transport, protocol = conn.request.transport, conn.request.protocol
        try:
            while transport is not None:
                frames: list[bytes] = []
                while len(frames) < WRITE_BATCH and (text := outbox.pop()) is not None:
                    frames.append(text_frame(text.encode()))
                if not frames:
                    if (text := await outbox.next()) is None:
                        break
                    frames.append(text_frame(text.encode()))
                if ws.closed or transport.is_closing():
                    break
                transport.write(b"".join(frames))
                if protocol.writing_paused:
                    await drain(protocol)
        except (ConnectionError, RuntimeError) as exc:
            # The peer went away mid-send; the reader notices and cleans up.
            log.debug("WebSocket writer for %s stopped: %r", conn.peer, exc)
        if conn.outbox.overflowed:
            self._overflowed(conn)

    async def _close(self, conn: Connection, code: int, message: bytes, *, flush: bool = False) -> None:
        writer = conn.writer
        if writer is not None and writer is not asyncio.current_task():
            if flush:
                # The outbox is closed: the writer sends what it holds, then ends.
                await asyncio.wait({writer}, timeout=CLOSE_TIMEOUT)
            writer.cancel()
        await close_socket(conn.ws, conn.request, code, message)

    async def close(self) -> None:
        """Shutdown: close a snapshot of the connections with 1001, then end every task."""
        connections = list(self.connections)
        for conn in connections:
            self.forget(conn)
        await asyncio.gather(
            *(self._close(conn, WSCloseCode.GOING_AWAY, b"server shutdown") for conn in connections),
            return_exceptions=True,
        )
        await self._tasks.close()


async def close_socket(ws: web.WebSocketResponse, request: web.Request, code: int, message: bytes) -> None:
    """Send a close frame and wait briefly for the answer; a peer that reads nothing is dropped."""
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT):
            await ws.close(code=code, message=message)
    except (TimeoutError, ConnectionError, RuntimeError):
        # A peer that reads nothing cannot take a close frame either: drop the connection.
        transport = request.transport
        if transport is not None:
            transport.abort()
