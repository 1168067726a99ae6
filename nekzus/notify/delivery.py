"""One webhook's queue of deliveries and the one task that works through it.

Order is strict per webhook: the oldest pending delivery is retried until it is delivered or given
up before the next is tried (head-of-line). Each webhook has its own task, and every attempt is
bounded by the webhook's ``timeout``, so a slow or silent receiver holds up only its own queue.
The queue is bounded: beyond ``max_pending`` the oldest delivery is dropped, counted and logged.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import time
from collections import deque
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

import aiohttp

from .. import __version__
from ..config import WebhookConfig, WebhookDeliveryConfig
from .addresses import Network, RefusedAddress, literal_address, refusal
from .signing import secret_key, signature
from .webhook_store import StoredAttempt, StoredDelivery, WebhookStore

log = logging.getLogger(__name__)

# Bytes of a response read before it is let go: enough to end a small body cleanly, never a big one.
RESPONSE_PEEK = 1024
# Drops within this many seconds of the first make one log line.
DROP_LOG_WINDOW = 1.0
USER_AGENT = f"nekzus/{__version__}"

Status = Literal["delivered", "failed", "expired", "dropped"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """One attempt: a 2xx is delivered; anything else failed and is retried."""

    status_code: int | None
    error: str | None
    retry_after: float | None
    duration: float

    @property
    def delivered(self) -> bool:
        return self.error is None


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """``Retry-After`` as seconds from now: whole seconds or an HTTP date; None if neither."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(min(int(value[:12]), 10**9))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now)


def backoff(tries: int, settings: WebhookDeliveryConfig, retry_after: float | None) -> float:
    """Seconds before the next attempt: exponential with full jitter (AWS's "full jitter": a
    random wait up to the doubled ceiling, so receivers coming back are not hit in lockstep),
    at least what the receiver asked for in ``Retry-After``, and never more than ``max_backoff``."""
    ceiling = min(settings.max_backoff, settings.initial_backoff * 2 ** min(tries - 1, 64))
    delay = random.uniform(0, ceiling)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return min(delay, settings.max_backoff)


class DeliveryQueue:
    """The pending deliveries of one webhook, its counters and its recent attempts."""

    def __init__(
        self,
        spec: WebhookConfig,
        settings: WebhookDeliveryConfig,
        allow: tuple[Network, ...],
        store: WebhookStore,
        history: list[StoredAttempt],
    ) -> None:
        self.spec = spec
        self._key = secret_key(spec.secret)
        self._settings = settings
        self._allow = allow
        self._store = store
        self.pending: deque[StoredDelivery] = deque()
        self.history: deque[StoredAttempt] = deque(history, maxlen=settings.history)
        # Since the gateway started; exported as metrics.
        self.delivered = 0
        self.failed = 0
        self.dropped = 0
        self.last_delivery_at: int | None = None
        self.last_error: str | None = None
        self._ready = asyncio.Event()
        self._drops_unlogged = 0
        self._drop_log: asyncio.TimerHandle | None = None

    def retarget(self, spec: WebhookConfig) -> None:
        """Deliver what is pending, and what comes, with a replaced webhook's settings."""
        self.spec = spec
        self._key = secret_key(spec.secret)

    def restore(self, delivery: StoredDelivery) -> None:
        """A delivery read back from the store at start, in queue order (a max_pending lowered
        since drops the oldest, as ever)."""
        self.pending.append(delivery)
        self._ready.set()
        while len(self.pending) > self._settings.max_pending:
            self._drop(self.pending.popleft())

    def offer(self, delivery: StoredDelivery) -> None:
        """Queue a delivery (stored at once) without waiting; the oldest goes when full."""
        self._store.add(delivery)
        self.pending.append(delivery)
        self._ready.set()
        while len(self.pending) > self._settings.max_pending:
            self._drop(self.pending.popleft())

    def _drop(self, delivery: StoredDelivery) -> None:
        self._store.remove(delivery.id)
        self.dropped += 1
        self._keep(delivery, "dropped", None, "the queue was full (webhook_delivery.max_pending)", tried=None)
        self._drops_unlogged += 1
        if self._drop_log is None:
            self._drop_log = asyncio.get_running_loop().call_later(DROP_LOG_WINDOW, self.log_drops)

    def log_drops(self) -> None:
        """One line per burst of drops, so a receiver that is down does not flood the log."""
        if self._drop_log is not None:
            self._drop_log.cancel()
            self._drop_log = None
        if self._drops_unlogged:
            log.warning(
                "webhook %s: %d deliveries dropped, the oldest first: its receiver is behind by more "
                "than webhook_delivery.max_pending (%d)",
                self.spec.name,
                self._drops_unlogged,
                self._settings.max_pending,
            )
            self._drops_unlogged = 0

    async def run(self, session: aiohttp.ClientSession) -> None:
        """Deliver the pending deliveries in order, forever (cancelled when the webhook goes)."""
        while True:
            while not self.pending:
                self._ready.clear()
                await self._ready.wait()
            delivery = self.pending[0]
            outcome = await self._attempt(session, delivery)
            still_head = bool(self.pending) and self.pending[0] is delivery
            if outcome.delivered:
                self.last_delivery_at = int(time.time())
                self._keep(delivery, "delivered", outcome, None, tried=None)
                if still_head:
                    self.pending.popleft()
                    self._store.remove(delivery.id)
                    self.delivered += 1
                continue
            self.last_error = outcome.error
            delivery.attempts += 1
            if not still_head:
                # Dropped while in flight: nothing is left to retry.
                self._keep(delivery, "failed", outcome, outcome.error, tried=None)
                continue
            delay = backoff(delivery.attempts, self._settings, outcome.retry_after)
            if time.time() + delay > delivery.created_at + self._settings.retry_for:
                self.pending.popleft()
                self._store.remove(delivery.id)
                self.failed += 1
                self._keep(delivery, "expired", outcome, outcome.error, tried=None)
                log.warning(
                    "webhook %s: delivery %s (%s) given up after %d attempts over "
                    "webhook_delivery.retry_for: %s",
                    self.spec.name,
                    delivery.id,
                    delivery.type,
                    delivery.attempts,
                    outcome.error,
                )
                continue
            self._keep(delivery, "failed", outcome, outcome.error, tried=delivery.attempts)
            await asyncio.sleep(delay)

    async def _attempt(self, session: aiohttp.ClientSession, delivery: StoredDelivery) -> Outcome:
        spec = self.spec
        loop = asyncio.get_running_loop()
        started = loop.time()
        timestamp = int(time.time())
        headers = {
            "User-Agent": USER_AGENT,
            **spec.headers,
            "Content-Type": "application/json",
            "webhook-id": delivery.id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature(self._key, delivery.id, timestamp, delivery.body),
        }
        status: int | None = None
        retry_after: str | None = None
        error: str | None = None
        host = urlsplit(spec.url).hostname or ""
        address = literal_address(host)
        refused = refusal(address, self._allow) if address is not None else None
        if refused is not None:
            # A literal address never reaches the resolver (which checks names): checked here.
            error = refused
        else:
            try:
                async with asyncio.timeout(spec.timeout):
                    async with session.post(
                        spec.url, data=delivery.body, headers=headers, allow_redirects=False
                    ) as response:
                        status = response.status
                        retry_after = response.headers.get("Retry-After")
                        await response.content.read(RESPONSE_PEEK)
            except TimeoutError:
                error = f"no answer within {spec.timeout:g} s (the webhook's timeout)"
            except aiohttp.ClientConnectorError as exc:
                cause = getattr(exc, "os_error", None)
                error = str(cause) if isinstance(cause, RefusedAddress) else f"cannot connect: {exc}"
            except aiohttp.ClientError as exc:
                error = f"{type(exc).__name__}: {exc}"
        if error is None and status is not None and not 200 <= status < 300:
            error = f"the receiver answered HTTP {status}"
        return Outcome(
            status_code=status,
            error=error,
            retry_after=retry_after_seconds(retry_after, time.time()),
            duration=loop.time() - started,
        )

    def _keep(
        self,
        delivery: StoredDelivery,
        status: Status,
        outcome: Outcome | None,
        error: str | None,
        *,
        tried: int | None,
    ) -> None:
        attempt = StoredAttempt(
            webhook=self.spec.name,
            delivery_id=delivery.id,
            type=delivery.type,
            attempt=delivery.attempts + (1 if status == "delivered" else 0),
            status=status,
            status_code=outcome.status_code if outcome else None,
            duration=round(outcome.duration, 4) if outcome else None,
            error=error,
            at=time.time(),
        )
        self.history.append(attempt)
        self._store.record(attempt, tried=tried)
