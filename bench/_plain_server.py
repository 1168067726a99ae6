"""Bench only: ``nekzus serve`` with neither authentication nor the client-address middleware.

There is deliberately no setting that turns auth off, so ``bench/auth_overhead.py`` runs this as
its baseline: the very app of ``nekzus.http.app.create_app`` with ``client_address_middleware`` and
``auth_middleware`` taken out of ``app.middlewares`` (a FrozenList, still mutable before the app
starts). Everything else goes through ``nekzus serve``'s own code path (``nekzus.cli.main``):
the same configuration, logging, TLS context (``nekzus.security.tls.server_ssl_context``), host and port.
Rate limiting is switched off with ``NEKZUS_RATELIMIT__ENABLED=false``.

Never use this outside the benchmark: every client may do everything.
"""

from __future__ import annotations

import sys
from typing import Any

from aiohttp import web

from nekzus import cli
from nekzus.http.app import create_app
from nekzus.security.auth import auth_middleware, client_address_middleware


def create_app_without_auth(*args: Any, **kwargs: Any) -> web.Application:
    app: web.Application = create_app(*args, **kwargs)
    for middleware in (client_address_middleware, auth_middleware):
        app.middlewares.remove(middleware)
    return app


if __name__ == "__main__":
    vars(cli)["create_app"] = create_app_without_auth  # what `nekzus serve` builds its app with
    sys.exit(cli.main(["serve"]))
