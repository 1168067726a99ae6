"""Outbound webhooks: hub events POSTed to receivers, signed, persisted in data_dir, retried.

The registry holds the webhooks of the configuration (read-only) and those made through the API
(kept in ``webhooks.db``), each with its own queue and delivery task (nekzus/notify/delivery.py).
It follows the hub's numbered events synchronously: matching an event and queueing it never
awaits, so the hub, the API and other webhooks never wait on a receiver.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp
from aiohttp import web

from ..config import Config, ConfigError, WebhookConfig
from ..errors import ApiError
from ..keys import CONFIG
from ..realtime.events import Event, now
from ..realtime.hub import HUB, wanted
from ..tasks import TaskGroup
from .addresses import GuardedResolver, Network, target_refusal
from .delivery import DeliveryQueue
from .webhook_store import Loaded, StoredDelivery, StoredWebhook, WebhookStore

log = logging.getLogger(__name__)

WEBHOOKS: web.AppKey[Webhooks] = web.AppKey("webhooks")
# Alert events reach the webhooks their rule's ``notify`` names, whatever their ``events``.
ALERT_EVENTS = frozenset({"alert.firing", "alert.resolved"})
TEST_EVENT = "webhook.test"

Source = Literal["config", "api"]


def webhook_not_found(name: str) -> ApiError:
    return ApiError(404, "WEBHOOK_NOT_FOUND", f"Webhook {name!r} does not exist")


@dataclass(eq=False, slots=True)
class Webhook:
    spec: WebhookConfig
    source: Source
    created_at: int | None  # None: from the configuration
    queue: DeliveryQueue
    patterns: frozenset[str] = field(init=False)
    task: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        self.patterns = frozenset(self.spec.events)

    def to_json(self) -> dict[str, Any]:
        """What the API shows. Security: the secret and the headers' values are write-only."""
        spec, queue = self.spec, self.queue
        return {
            "name": spec.name,
            "url": spec.url,
            "events": list(spec.events),
            "headers": sorted(spec.headers),
            "timeout": spec.timeout,
            "enabled": spec.enabled,
            "source": self.source,
            "createdAt": self.created_at,
            "pending": len(queue.pending),
            "delivered": queue.delivered,
            "failed": queue.failed,
            "dropped": queue.dropped,
            "lastDeliveryAt": queue.last_delivery_at,
            "lastError": queue.last_error,
        }


def _body(delivery_id: str, type_json: str, seq: int | None, timestamp: int, data_json: str) -> bytes:
    """The JSON a receiver gets, spliced from the event's parts serialised once for every webhook."""
    seq_json = "null" if seq is None else str(seq)
    return (
        f'{{"id":"{delivery_id}","type":{type_json},"seq":{seq_json},'
        f'"timestamp":{timestamp},"data":{data_json}}}'
    ).encode()


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


class Webhooks:
    """Every webhook by name, its queue and its delivery task."""

    def __init__(self, config: Config, store: WebhookStore, session: aiohttp.ClientSession) -> None:
        self.settings = config.webhook_delivery
        self._allow: tuple[Network, ...] = tuple(self.settings.allow_networks)
        self._configured = config.webhooks
        notified: dict[str, set[str]] = {}
        for rule in config.alerts:
            for name in rule.notify:
                notified.setdefault(name, set()).add(rule.name)
        self._alert_rules = {name: frozenset(rules) for name, rules in notified.items()}
        self._store = store
        self._session = session
        self._hooks: dict[str, Webhook] = {}
        self._tasks = TaskGroup()

    def start(self, loaded: Loaded) -> None:
        """Take in the configured webhooks, those the API made, and every pending delivery, and
        start delivering. A configured target in a refused range stops the start (ConfigError)."""
        history: dict[str, list[Any]] = {}
        for attempt in loaded.attempts:
            history.setdefault(attempt.webhook, []).append(attempt)
        for index, spec in enumerate(self._configured):
            problem = target_refusal(spec.url, self._allow)
            if problem:
                raise ConfigError(f"webhooks[{index}].url: {problem}")
            self._add(spec, "config", None, history.get(spec.name, []))
        for stored in loaded.webhooks:
            if stored.name in self._hooks:
                log.warning(
                    "webhook %s made through the API is removed: the configuration now has one of that name",
                    stored.name,
                )
                self._store.forget_webhook(stored.name)
                continue
            try:
                spec = WebhookConfig.model_validate_json(stored.spec)
            except ValueError as exc:
                log.error("webhook %s cannot be read back and is removed: %s", stored.name, exc)
                self._store.forget_webhook(stored.name)
                continue
            self._add(spec, "api", stored.created_at, history.get(stored.name, []))
        orphans: set[str] = set()
        for delivery in loaded.pending:
            hook = self._hooks.get(delivery.webhook)
            if hook is None:
                orphans.add(delivery.webhook)
            else:
                hook.queue.restore(delivery)
        for name in sorted(orphans):
            log.warning("pending deliveries of webhook %s are discarded: it no longer exists", name)
            self._store.forget_webhook(name)
        for hook in self._hooks.values():
            self._run(hook)

    def _add(
        self, spec: WebhookConfig, source: Source, created_at: int | None, history: list[Any]
    ) -> Webhook:
        queue = DeliveryQueue(spec, self.settings, self._allow, self._store, history)
        hook = Webhook(spec, source, created_at, queue)
        self._hooks[spec.name] = hook
        return hook

    def _run(self, hook: Webhook) -> None:
        """Start the hook's delivery task; a disabled hook keeps what is pending until enabled."""
        if hook.spec.enabled and hook.task is None:
            hook.task = self._tasks.spawn(hook.queue.run(self._session), name=f"webhook-{hook.spec.name}")

    async def _stop(self, hook: Webhook) -> None:
        task, hook.task = hook.task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    # -- events -----------------------------------------------------------------------------------

    def on_event(self, event: Event, seq: int | None) -> None:
        """Queue ``event`` for every enabled webhook that wants it; never awaits (a hub follower)."""
        chosen = [hook for hook in self._hooks.values() if hook.spec.enabled and self._wants(hook, event)]
        if chosen:
            self._queue(chosen, event.type, seq, event.data)

    def _wants(self, hook: Webhook, event: Event) -> bool:
        if wanted(hook.patterns, event.type):
            return True
        rules = self._alert_rules.get(hook.spec.name)
        return rules is not None and event.type in ALERT_EVENTS and event.data.get("rule") in rules

    def _queue(
        self, hooks: Iterable[Webhook], type_: str, seq: int | None, data: Mapping[str, Any]
    ) -> list[str]:
        stamp = data.get("timestamp")
        timestamp = stamp if isinstance(stamp, int) and not isinstance(stamp, bool) else now()
        type_json, data_json = _dumps(type_), _dumps(dict(data))
        created = time.time()
        ids = []
        for hook in hooks:
            delivery_id = f"msg_{uuid.uuid4().hex}"
            body = _body(delivery_id, type_json, seq, timestamp, data_json)
            hook.queue.offer(StoredDelivery(delivery_id, hook.spec.name, type_, body, created))
            ids.append(delivery_id)
        return ids

    def send_test(self, name: str) -> str:
        """Queue a ``webhook.test`` event for one webhook (never on the hub); its delivery id."""
        hook = self.get(name)
        data = {"webhook": name, "message": "A test event, sent through the API", "timestamp": now()}
        return self._queue([hook], TEST_EVENT, None, data)[0]

    # -- the registry -----------------------------------------------------------------------------

    def all(self) -> list[Webhook]:
        return sorted(self._hooks.values(), key=lambda hook: hook.spec.name)

    def get(self, name: str) -> Webhook:
        hook = self._hooks.get(name)
        if hook is None:
            raise webhook_not_found(name)
        return hook

    def writable(self, name: str) -> Webhook:
        """The API-made webhook ``name``; one of the configuration is ``409 WEBHOOK_READ_ONLY``."""
        hook = self.get(name)
        if hook.source == "config":
            raise ApiError(
                409,
                "WEBHOOK_READ_ONLY",
                f"Webhook {name!r} is set in the configuration file; change it there",
            )
        return hook

    def _check_target(self, spec: WebhookConfig) -> None:
        problem = target_refusal(spec.url, self._allow)
        if problem:
            raise ApiError(422, "WEBHOOK_URL_REFUSED", f"The webhook URL is refused: {problem}")

    async def create(self, spec: WebhookConfig) -> Webhook:
        if spec.name in self._hooks:
            raise ApiError(409, "WEBHOOK_EXISTS", f"Webhook {spec.name!r} already exists")
        made = sum(1 for hook in self._hooks.values() if hook.source == "api")
        if made >= self.settings.max_webhooks:
            raise ApiError(
                409,
                "WEBHOOK_LIMIT",
                f"The API may create at most {self.settings.max_webhooks} webhooks "
                "(webhook_delivery.max_webhooks); delete one first",
            )
        self._check_target(spec)
        created_at = now()
        hook = self._add(spec, "api", created_at, [])
        # Ordering: the task starts before the await, so a delete meanwhile stops it.
        self._run(hook)
        await self._store.save_webhook(StoredWebhook(spec.name, spec.model_dump_json(), created_at))
        return hook

    async def replace(self, spec: WebhookConfig) -> Webhook:
        """Replace an API-made webhook; what is pending for it is delivered with the new settings."""
        hook = self.writable(spec.name)
        self._check_target(spec)
        # Ordering: the task stops before the target changes, so no attempt mixes the two.
        await self._stop(hook)
        if self._hooks.get(spec.name) is not hook:
            raise webhook_not_found(spec.name)  # deleted while its task stopped
        hook.spec = spec
        hook.patterns = frozenset(spec.events)
        hook.queue.retarget(spec)
        assert hook.created_at is not None
        self._run(hook)
        await self._store.save_webhook(StoredWebhook(spec.name, spec.model_dump_json(), hook.created_at))
        return hook

    async def delete(self, name: str) -> None:
        """Remove an API-made webhook with its pending deliveries and its history."""
        hook = self.writable(name)
        del self._hooks[name]
        # Ordering: forgotten before any await, so a webhook of the same name created meanwhile is
        # written after this removal, never removed by it.
        forgotten = self._store.forget_webhook(name)
        await self._stop(hook)
        hook.queue.log_drops()
        await forgotten

    async def close(self) -> None:
        await self._tasks.close()
        for hook in self._hooks.values():
            hook.task = None
            hook.queue.log_drops()


def client_session(allow: tuple[Network, ...]) -> aiohttp.ClientSession:
    """The HTTP client of every delivery. Security: every connection resolves through the
    guarded resolver (no cache, so each connect checks again); no proxy from the environment; no
    cookies carried from one receiver to another; redirects are refused per request."""
    connector = aiohttp.TCPConnector(resolver=GuardedResolver(allow), use_dns_cache=False, limit=0)
    return aiohttp.ClientSession(
        connector=connector,
        trust_env=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=None),
    )


async def webhooks_ctx(app: web.Application) -> AsyncIterator[None]:
    """The registry and its store in ``server.data_dir``, following the hub's numbered events."""
    config = app[CONFIG]
    store = await WebhookStore.open(config.server.data_dir, history=config.webhook_delivery.history)
    session = client_session(tuple(config.webhook_delivery.allow_networks))
    webhooks = Webhooks(config, store, session)
    try:
        webhooks.start(await store.load())
    except BaseException:
        await webhooks.close()
        await session.close()
        await store.close()
        raise
    app[WEBHOOKS] = webhooks
    hub = app[HUB]
    hub.numbered.append(webhooks.on_event)
    yield
    hub.numbered.remove(webhooks.on_event)
    # Ordering: the workers stop before the store writes its last batch, so nothing they
    # recorded is lost.
    await webhooks.close()
    await session.close()
    await store.close()
