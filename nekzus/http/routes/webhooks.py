"""Routes of webhooks (see nekzus/notify/webhooks.py): the registry, delivery history, test sends."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import ValidationError

from ...config import WebhookConfig
from ...errors import invalid_request, validation_error
from ...notify.signing import new_secret
from ...notify.webhooks import WEBHOOKS, Webhook
from ...params import int_query, json_fields
from ...security.auth import ADMIN_WEBHOOKS, requires
from ...security.ratelimit import rate_pool

FIELDS = ("name", "url", "events", "secret", "headers", "timeout", "enabled")
DEFAULT_DELIVERIES = 50


def webhook_spec(fields: dict[str, Any]) -> WebhookConfig:
    """The webhook a body describes, by the configuration's own rules, so the file and the API
    accept the same. Security: the message names the field and its rule, never the value given
    (a secret, a header's value)."""
    try:
        return WebhookConfig.model_validate(fields)
    except ValidationError as exc:
        error = exc.errors(include_url=False, include_input=False, include_context=False)[0]
        where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in error["loc"])
        name = where.lstrip(".") or "body"
        message = error["msg"].removeprefix("Value error, ")
        raise validation_error(name, f"{name}: {message}") from None


def _created(hook: Webhook, secret: str | None) -> web.Response:
    body = hook.to_json()
    if secret is not None:
        # Answered this once, when the gateway made it up; never again.
        body["secret"] = secret
    return web.json_response(body, status=201, headers={"Location": f"/api/v1/webhooks/{hook.spec.name}"})


@requires(ADMIN_WEBHOOKS)
@rate_pool("containers")
async def list_webhooks(request: web.Request) -> web.Response:
    return web.json_response({"webhooks": [hook.to_json() for hook in request.app[WEBHOOKS].all()]})


@requires(ADMIN_WEBHOOKS)
@rate_pool("containers")
async def create_webhook(request: web.Request) -> web.Response:
    fields = await json_fields(request, FIELDS, required=True)
    generated = None
    if "secret" not in fields:
        generated = fields["secret"] = new_secret()
    hook = await request.app[WEBHOOKS].create(webhook_spec(fields))
    return _created(hook, generated)


@requires(ADMIN_WEBHOOKS)
@rate_pool("containers")
async def get_webhook(request: web.Request) -> web.Response:
    return web.json_response(request.app[WEBHOOKS].get(request.match_info["name"]).to_json())


@requires(ADMIN_WEBHOOKS)
@rate_pool("containers")
async def replace_webhook(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    webhooks = request.app[WEBHOOKS]
    current = webhooks.writable(name)
    fields = await json_fields(request, FIELDS, required=True)
    if fields.setdefault("name", name) != name:
        raise invalid_request("name cannot change: create a webhook of the new name and delete this one")
    # A PUT without a secret keeps the one it has: clients never read it back to send it again.
    fields.setdefault("secret", current.spec.secret)
    hook = await webhooks.replace(webhook_spec(fields))
    return web.json_response(hook.to_json())


@requires(ADMIN_WEBHOOKS)
@rate_pool("containers")
async def delete_webhook(request: web.Request) -> web.Response:
    await request.app[WEBHOOKS].delete(request.match_info["name"])
    return web.Response(status=204)


@requires(ADMIN_WEBHOOKS)
@rate_pool("containers")
async def list_deliveries(request: web.Request) -> web.Response:
    hook = request.app[WEBHOOKS].get(request.match_info["name"])
    history = request.app[WEBHOOKS].settings.history
    limit = int_query(request, "limit", default=min(DEFAULT_DELIVERIES, history), minimum=1, maximum=history)
    assert limit is not None
    newest = list(hook.queue.history)[-limit:][::-1]
    return web.json_response(
        {
            "deliveries": [
                {
                    "deliveryId": a.delivery_id,
                    "type": a.type,
                    "attempt": a.attempt,
                    "status": a.status,
                    "statusCode": a.status_code,
                    "duration": a.duration,
                    "error": a.error,
                    "timestamp": int(a.at),
                }
                for a in newest
            ]
        }
    )


@requires(ADMIN_WEBHOOKS)
@rate_pool("containers")
async def test_webhook(request: web.Request) -> web.Response:
    delivery_id = request.app[WEBHOOKS].send_test(request.match_info["name"])
    return web.json_response({"deliveryId": delivery_id}, status=202)


def add_routes(r: web.UrlDispatcher) -> None:
    """Register the routes of webhooks."""
    r.add_get("/api/v1/webhooks", list_webhooks)
    r.add_post("/api/v1/webhooks", create_webhook)
    r.add_get("/api/v1/webhooks/{name}", get_webhook)
    r.add_put("/api/v1/webhooks/{name}", replace_webhook)
    r.add_delete("/api/v1/webhooks/{name}", delete_webhook)
    r.add_get("/api/v1/webhooks/{name}/deliveries", list_deliveries)
    r.add_post("/api/v1/webhooks/{name}/test", test_webhook)
