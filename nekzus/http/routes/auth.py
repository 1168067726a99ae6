"""Login with an API key, and what the gateway thinks of the caller and its token."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ...errors import invalid_request
from ...keys import CLIENT_IP, CONFIG
from ...params import json_fields
from ...security.auth import (
    AUTHORITY,
    InvalidToken,
    bearer_token,
    match_api_key,
    principal_of,
    public,
    unauthorized,
)
from ...security.ratelimit import rate_pool


@public
@rate_pool("login")
async def login(request: web.Request) -> web.Response:
    body = await json_fields(request, ("api_key",), required=True)
    presented = body.get("api_key")
    if not isinstance(presented, str) or not presented:
        raise invalid_request("api_key must be a non-empty string")
    config = request.app[CONFIG]
    key = match_api_key(presented, config.auth.api_keys)
    if key is None:
        raise unauthorized("Invalid API key")
    ttl = config.auth.token_ttl
    token = request.app[AUTHORITY].issue(key.name, key.scopes, ttl)
    return web.json_response({"token": token, "expiresIn": ttl, "scopes": list(key.scopes)})


@public
async def status(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    principal = principal_of(request, request.app[AUTHORITY], config.auth)
    ip = request[CLIENT_IP]
    body: dict[str, Any] = {
        "authRequired": principal is None or not principal.local,
        "authenticated": principal is not None and principal.authenticated,
        "local": principal is not None and principal.local,
        "subject": principal.subject if principal else None,
        "scopes": sorted(principal.scopes) if principal else [],
        "clientAddress": str(ip) if ip is not None else None,
    }
    return web.json_response(body)


@public
async def validate(request: web.Request) -> web.Response:
    token = bearer_token(request)
    if token is None:
        raise unauthorized("No bearer token was presented")
    try:
        claims = request.app[AUTHORITY].verify(token)
    except InvalidToken as exc:
        raise unauthorized("The token is invalid or has expired", invalid=True) from exc
    return web.json_response(
        {
            "valid": True,
            "subject": claims.subject,
            "scopes": sorted(claims.scopes),
            "expiresAt": claims.expires_at,
        }
    )
