"""Routes of alerts (see nekzus/notify/alerts.py)."""

from __future__ import annotations

from aiohttp import web

from ...errors import ApiError
from ...notify.alerts import ALERTS
from ...params import single_query
from ...security.auth import READ_ALERTS, requires


@requires(READ_ALERTS)
async def list_alerts(request: web.Request) -> web.Response:
    """The active alerts (firing, and pending: held for less than their rule's ``for``), oldest
    first, and the configured rules; ``?rule=`` keeps one rule's."""
    service = request.app[ALERTS]
    rule = single_query(request, "rule")
    if rule is not None and not any(r.name == rule for r in service.rules):
        # The name is not echoed: it is the client's text, of any length.
        raise ApiError(404, "ALERT_RULE_NOT_FOUND", "No alert rule has that name")
    return web.json_response(
        {
            "alerts": [alert.to_json() for alert in service.book.active(rule)],
            "rules": [
                {"name": r.name, "condition": r.condition, "notify": list(r.config.notify)}
                for r in service.rules
                if rule is None or r.name == rule
            ],
        }
    )


def add_routes(r: web.UrlDispatcher) -> None:
    """Register the routes of alerts."""
    r.add_get("/api/v1/alerts", list_alerts)
