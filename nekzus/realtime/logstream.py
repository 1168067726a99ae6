"""Live log tails over the WebSocket: one task per followed container, lines that lose nothing.

The runtime is always asked for timestamps, so each line's time is known: it becomes the message's
``timestamp``, it lets a resumed stream (``since``) skip the line it had already delivered, and it
is kept in the message only when the client asked for ``timestamps``. Lines are split across chunk
boundaries per output stream, and a final partial line is flushed when the stream ends.
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import json
import logging
import time
from json.encoder import encode_basestring as encode_string  # the C encoder
from typing import Any

from runtimes import (
    ContainerRef,
    ContainerRuntime,
    ContainerState,
    ContainerSummary,
    NotFound,
    RuntimeFailure,
    Unavailable,
)
from runtimes.loglines import LineSplitter

from ..errors import container_not_running, from_runtime
from .events import now
from .hub import Connection, OutboxClosed, dumps
from .logrequest import InvalidSubscription, LogSubscription, parse_since

log = logging.getLogger(__name__)
RESUME_FIRST, RESUME_MAX = 0.5, 5.0  # seconds before re-opening a follow stream that gave nothing
OUTAGE_LIMIT = 300.0  # seconds a follow waits for a runtime that went away before it ends


class _LineCache:
    """Unix seconds of the log line time prefixes, computed once per distinct second."""

    def __init__(self) -> None:
        self._prefix = ""
        self._seconds = 0

    def seconds(self, stamp: str) -> int:
        prefix = stamp[:19]
        if prefix != self._prefix:
            try:
                self._seconds = calendar.timegm(time.strptime(prefix, "%Y-%m-%dT%H:%M:%S"))
            except ValueError:
                return now()
            self._prefix = prefix
        return self._seconds


def now_nanos() -> tuple[int, int]:
    now_ns = time.time_ns()
    return now_ns // 1_000_000_000, now_ns % 1_000_000_000


def stamp_nanos(stamp: str) -> tuple[int, int]:
    """(seconds, nanoseconds) of a log line's time stamp; (0, 0) for one that cannot be read."""
    try:
        return parse_since(stamp)
    except InvalidSubscription:
        return (0, 0)


class LogSession:
    """Follows one container for one connection until it ends, is unsubscribed, or the client goes."""

    def __init__(self, conn: Connection, runtime: ContainerRuntime, sub: LogSubscription) -> None:
        self.conn = conn
        self.runtime = runtime
        self.sub = sub
        self.started = False  # container.logs.started was sent
        self.task: asyncio.Task[None] | None = None
        cid = json.dumps(sub.container_id)
        ns = f',"namespace":{json.dumps(sub.namespace)}' if sub.namespace else ""
        # Every line message shares this prefix: build it once, not once per line.
        head = f'{{"type":"container.logs","data":{{"containerId":{cid}{ns},"stream":'
        self._prefix = {stream: f'{head}"{stream}","message":' for stream in ("stdout", "stderr")}
        batch_head = f'{{"type":"container.logs.batch","data":{{"containerId":{cid}{ns},"stream":'
        self._batch_prefix = {stream: f'{batch_head}"{stream}","lines":' for stream in ("stdout", "stderr")}
        self._cache = _LineCache()
        self.last_stamp: str | None = None

    async def stop(self) -> bool:
        """End the stream and wait until it has, so that a reply sent next follows its last line.

        False when it had ended on its own first (and sent its own ``container.logs.ended``).
        """
        if self.task is None:
            return False
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        return self.task.cancelled()

    def _data(self, **fields: Any) -> dict[str, Any]:
        data: dict[str, Any] = {"containerId": self.sub.container_id}
        if self.sub.namespace:
            data["namespace"] = self.sub.namespace
        data.update(fields)
        data.setdefault("timestamp", now())
        return data

    def ended(self) -> dict[str, Any]:
        """The ``container.logs.ended`` data of a stream the client unsubscribed."""
        return self._data(reason="stopped")

    async def _notice(self, message_type: str, **fields: Any) -> None:
        # In line with the stream's lines: waits for room, and while the session is suspended.
        await self.conn.outbox.put_log(dumps(message_type, self._data(**fields)))

    async def run(self) -> None:
        """Stream until the end; the connection going away ends it quietly."""
        try:
            await self._run()
        except OutboxClosed:
            return
        except Exception:
            # A defect must not leave the client waiting for lines that never come. The notices go
            # in line with the stream (held while the session is suspended, never counted against
            # the event queue); "ended" follows only a stream that had started, as documented.
            log.exception("log stream of %s failed", self.sub.container_id)
            with contextlib.suppress(OutboxClosed):
                await self._notice(
                    "container.logs.error", error="LOG_STREAM_FAILED", message="The log stream failed"
                )
                if self.started:
                    await self._notice("container.logs.ended", reason="error")

    async def _run(self) -> None:
        sub = self.sub
        ref = ContainerRef(sub.container_id, sub.namespace, sub.container)
        try:
            current = await self.runtime.get(ref)
        except RuntimeFailure as exc:
            await self._error(exc, "Failed to open the log stream")
            return
        if current.controller == current.id and current.state is ContainerState.STOPPED:
            # A workload entry (its own controller) scaled to 0 has no pod whose log could be read.
            await self._not_running(f"{current.id} is not running: it is stopped")
            return
        await self._notice("container.logs.started")
        self.started = True
        reason = "stopped"
        try:
            reason = await self._stream(ref)
        except RuntimeFailure as exc:
            log.info("log stream of %s ended with an error: %s", sub.container_id, exc)
            await self._error(exc, "The log stream failed", broken=True)
            reason = "error"
        await self._notice("container.logs.ended", reason=reason)

    async def _error(self, exc: RuntimeFailure, message: str, *, broken: bool = False) -> None:
        """The runtime's failure as a ``container.logs.error``, mapped as over HTTP."""
        error = from_runtime(
            exc,
            fallback="LOG_STREAM_FAILED",
            fallback_message=message,
            container_id=self.sub.container_id,
            reading=True,
            broken=broken,
        )
        await self._notice("container.logs.error", error=error.code, message=error.message)

    async def _not_running(self, detail: str) -> None:
        error = container_not_running(self.sub.container_id, detail)
        await self._notice("container.logs.error", error=error.code, message=error.message)

    async def _running(self, ref: ContainerRef) -> bool | None:
        """Whether the container still runs, or is about to (a pending workload entry replacing its
        pods); None when that cannot be told (runtime error).

        A runtime that does not answer is waited for (see ``_outage``).
        """
        try:
            current: ContainerSummary | None = await self.runtime.get(ref)
        except NotFound:
            return False
        except Unavailable:
            current = await self._outage(ref)
        except RuntimeFailure:
            return None
        return current is not None and (current.state.is_running or current.state is ContainerState.PENDING)

    async def _outage(self, ref: ContainerRef) -> ContainerSummary | None:
        """Wait for a runtime that went away during a follow, backing off, for at most
        ``OUTAGE_LIMIT`` seconds (then its Unavailable ends the stream). Once it answers, the client
        is told with ``container.logs.resumed`` and the stream goes on from the last line sent.
        None when the container went meanwhile: there is nothing to resume."""
        log.info("log stream of %s waits for its runtime to come back", self.sub.container_id)
        deadline = time.monotonic() + OUTAGE_LIMIT
        delay = RESUME_FIRST
        while True:
            try:
                current = await self.runtime.get(ref)
            except NotFound:
                return None
            except Unavailable as exc:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Unavailable(
                        f"no answer within {OUTAGE_LIMIT:g} s: {exc}",
                        detail=f"it did not answer for {OUTAGE_LIMIT:g} s, so the log stream ends",
                    ) from exc
                await asyncio.sleep(min(delay, left))
                delay = min(delay * 2, RESUME_MAX)
                continue
            await self._notice("container.logs.resumed", since=self.last_stamp)
            return current

    async def _follow(
        self,
        ref: ContainerRef,
        *,
        tail: int | None,
        since: tuple[int, int] | None,
        skip_until: tuple[int, int] | None,
    ) -> bool:
        """One read of a follow stream; when its runtime goes away meanwhile, wait until it is back
        (answering True: the next read comes at once, from the last line delivered)."""
        try:
            return await self._pump(ref, follow=True, tail=tail, since=since, skip_until=skip_until)
        except Unavailable:
            await self._outage(ref)
            return True

    async def _stream(self, ref: ContainerRef) -> str:
        """Deliver the lines, then answer why the stream ended (the ``ended`` reason)."""
        sub = self.sub
        opened = now_nanos()
        since = sub.since
        tail = sub.tail if since is None else None
        skip_until = since if sub.since_exclusive else None
        if not sub.follow:
            await self._pump(ref, follow=False, tail=tail, since=since, skip_until=skip_until)
            return "stopped"
        delivered = await self._follow(ref, tail=tail, since=since, skip_until=skip_until)
        # A follow stream ends when the container stops, or when the server cuts it while the
        # container still runs (Kubernetes closes follow streams after about 4 h), or when the
        # runtime goes away (then it is waited for). Then it goes on from the last line
        # delivered, skipping what was already sent: nothing is lost or repeated. A stream that
        # keeps ending at once (a crash-looping container) backs off.
        delay = RESUME_FIRST
        while (running := await self._running(ref)) is True:
            if not delivered:
                await asyncio.sleep(delay)
                delay = min(delay * 2, RESUME_MAX)
            else:
                delay = RESUME_FIRST
            last = stamp_nanos(self.last_stamp) if self.last_stamp else opened
            delivered = await self._follow(ref, tail=None, since=last, skip_until=last)
        # Docker ends a follow stream when the container stops and may not have sent the last
        # line yet (a final line without a newline, notably): read once more from the last line.
        last = stamp_nanos(self.last_stamp) if self.last_stamp else opened
        with contextlib.suppress(NotFound):  # a deleted pod (or removed container) has no more
            await self._pump(ref, follow=False, tail=None, since=last, skip_until=last)
        return "error" if running is None else "container_stopped"

    async def _pump(
        self,
        ref: ContainerRef,
        *,
        follow: bool,
        tail: int | None,
        since: tuple[int, int] | None,
        skip_until: tuple[int, int] | None,
    ) -> bool:
        """Hand on one read of the runtime's log stream; answer whether any line was delivered."""
        before = self.last_stamp
        splitter = LineSplitter()
        batch = self.sub.batch
        async for chunk in self.runtime.logs(
            ref, follow=follow, tail=tail, timestamps=True, since=since[0] if since else None
        ):
            if chunk.skipped:
                await self._notice(
                    "container.logs.error",
                    error="FRAME_TOO_LARGE",
                    message=f"A log frame of {chunk.skipped} bytes was skipped (limit 1 MiB)",
                )
                continue
            if block := splitter.feed(chunk.stream, chunk.data):
                skip_until = await self._emit(chunk.stream, block, skip_until, batch=batch)
        for stream, rest in splitter.flush():
            await self._emit(stream, rest + b"\n", skip_until, batch=False)
        return self.last_stamp != before

    async def _emit(
        self, stream: str, block: bytes, skip_until: tuple[int, int] | None, *, batch: bool
    ) -> tuple[int, int] | None:
        """Send a block of whole lines: one message per line, or one ``container.logs.batch``.

        The block is decoded and split by single C calls (a line ends with an ASCII newline, so a
        character split across reads is whole in it); lines a resume must skip lead the block, and
        only they are looked at one by one. Answers the ``skip_until`` of the next block.
        """
        text = block.decode("utf-8", "replace")
        if "\r" in text:  # TTY output ends lines with CRLF
            text = text.replace("\r\n", "\n")
            lines = [line.removesuffix("\r") for line in text.split("\n")]
        else:
            lines = text.split("\n")
        lines.pop()  # the block ends with a newline: what follows it is empty
        skipped = 0
        if skip_until is not None:
            while skipped < len(lines) and stamp_nanos(lines[skipped].partition(" ")[0]) <= skip_until:
                skipped += 1
            if skipped == len(lines):
                return skip_until
            del lines[:skipped]
        keep = self.sub.timestamps
        seconds = self._cache.seconds
        put = self.conn.outbox.put_log
        if batch:
            stamp = lines[-1].partition(" ")[0]
            self.last_stamp = stamp
            bodies = lines if keep else [line.partition(" ")[2] for line in lines]
            await put(
                f"{self._batch_prefix[stream]}[{','.join(map(encode_string, bodies))}],"
                f'"timestamp":{seconds(stamp)}}}}}'
            )
            return None
        prefix = self._prefix[stream]
        for line in lines:
            stamp, _, message = line.partition(" ")
            self.last_stamp = stamp
            await put(f'{prefix}{encode_string(line if keep else message)},"timestamp":{seconds(stamp)}}}}}')
        return None
