"""Routes of alerts (see nekzus/notify/alerts.py)."""

from __future__ import annotations

from aiohttp import web


def add_routes(r: web.UrlDispatcher) -> None:
    """Register the routes of alerts."""
