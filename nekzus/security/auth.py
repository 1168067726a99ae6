"""Who may do what: LAN trust, JWT verification, scopes, and the middleware that enforces them.

Rules (see README "Security"):
- a request from ``auth.local_networks`` (with ``auth.allow_local``) needs no token and gets
  every scope; with a valid token it acts as the token's subject; with an invalid or expired token
  it is still anonymous LAN, because mobile apps keep sending a stale token until they refresh it;
- every other request needs a valid token, else 401 UNAUTHORIZED;
- each route names the scope it needs; a missing scope is 403 FORBIDDEN.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import jwt
from aiohttp import web
from aiohttp.typedefs import Handler

from ..client_address import IPNetwork, in_networks, request_address
from ..config import ApiKeyConfig, AuthConfig, Config, ConfigError
from ..errors import ApiError
from ..keys import CLIENT_IP, CONFIG

log = logging.getLogger(__name__)

READ_CONTAINERS = "read:containers"
WRITE_CONTAINERS = "write:containers"
# The engine's own objects (images, volumes, networks, the host): reading them, and changing or
# destroying them (pull, delete, prune), which write:containers does not grant.
READ_ENGINE = "read:engine"
WRITE_ENGINE = "write:engine"
# Compose stacks: reading them (list, details, files, logs), and changing them (create, edit,
# deploy and every other action, tear down, delete).
READ_STACKS = "read:stacks"
WRITE_STACKS = "write:stacks"
# Outbound webhooks: list, create, change and delete them, their delivery history and test sends.
ADMIN_WEBHOOKS = "admin:webhooks"
# The alerts that are firing now.
READ_ALERTS = "read:alerts"
# Every scope a route asks for and what it grants, for people choosing a token's scopes (the
# CLI's help and its check of the names given). Keep it in step with README "Security".
SCOPES: tuple[tuple[str, str], ...] = (
    (
        READ_CONTAINERS,
        "list, inspect, stats and logs of containers and pods, operations, sanitised exports, the WebSocket",
    ),
    (
        WRITE_CONTAINERS,
        "start, stop, restart, pause, unpause, create, update and remove containers; bulk and "
        "batch actions; exports with secrets in clear",
    ),
    (READ_ENGINE, "lists of images, volumes and networks; the host's information and load (/system)"),
    (
        WRITE_ENGINE,
        "pull, delete and prune images; create, delete and prune volumes and networks; connect and "
        "disconnect containers; with write:containers, remove ?all=true (an unlinked container)",
    ),
    (READ_STACKS, "list and inspect compose stacks, read their files and logs"),
    (
        WRITE_STACKS,
        "create, edit and delete managed stacks; deploy, start, stop, restart, pause, unpause, "
        "pull and tear down stacks; save an export as a stack",
    ),
    (READ_ALERTS, "list the alerts firing now"),
    (
        ADMIN_WEBHOOKS,
        "list, create, change and delete webhooks; read their delivery history; send test events",
    ),
)
WILDCARD_SCOPES: tuple[tuple[str, str], ...] = (
    ("read:*", "every read: scope"),
    ("write:*", "every write: scope (reading still needs read:)"),
    ("*", "everything"),
)
LEEWAY_SECONDS = 30
SECRET_FILE = "jwt_secret"

AUTHORITY: web.AppKey[TokenAuthority] = web.AppKey("authority")
PRINCIPAL: web.RequestKey[Principal] = web.RequestKey("principal")

H = TypeVar("H", bound=Callable[..., Awaitable[web.StreamResponse]])


# -- scopes --------------------------------------------------------------------------------------


def segments_match(pattern: str, value: str, sep: str) -> bool:
    """Whether ``pattern`` covers ``value``: equal, or ending in a whole ``*`` segment.

    ``a:*`` covers ``a:b`` (and deeper), ``*`` covers everything, and ``a*`` or ``*:b`` cover
    nothing but themselves. No glob library is involved, so no other pattern syntax exists.
    """
    if pattern == value:
        return True
    parts = pattern.split(sep)
    if parts[-1] != "*":
        return False
    prefix = parts[:-1]
    wanted = value.split(sep)
    return len(wanted) > len(prefix) and wanted[: len(prefix)] == prefix


def scope_grants(granted: str, required: str) -> bool:
    """Whether one granted scope (``write:*``) covers ``required`` (``write:containers``)."""
    return segments_match(granted, required, ":")


def has_scope(granted: Iterable[str], required: str) -> bool:
    return any(scope_grants(g, required) for g in granted)


def is_known_scope(scope: str) -> bool:
    """A scope some route asks for, or a wildcard that covers at least one: anything else in a
    token grants nothing, and is most likely a typo (``write:container``)."""
    return any(scope_grants(scope, known) for known, _ in SCOPES)


def parse_scopes(claims: dict[str, Any]) -> frozenset[str]:
    """``scopes`` (a list) or ``scope`` (space-separated, as in OAuth 2)."""
    raw = claims.get("scopes")
    if isinstance(raw, list):
        return frozenset(s for s in raw if isinstance(s, str) and s)
    raw = claims.get("scope")
    if isinstance(raw, str):
        return frozenset(raw.split())
    return frozenset()


# -- who is asking -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Principal:
    subject: str | None
    scopes: frozenset[str]
    local: bool
    authenticated: bool
    expires_at: int | None = None

    def allows(self, scope: str) -> bool:
        return has_scope(self.scopes, scope)


ANONYMOUS_LAN_SCOPES = frozenset({"*"})


def anonymous_lan() -> Principal:
    """A LAN caller without a usable token: every scope (README "LAN trust"). HTTP and the
    WebSocket's fallback at token expiry both take it from here."""
    return Principal(None, ANONYMOUS_LAN_SCOPES, True, False)


@dataclass(frozen=True, slots=True)
class Claims:
    subject: str
    scopes: frozenset[str]
    expires_at: int


class InvalidToken(Exception):
    """A token that cannot be trusted; the message is for logs only."""


@dataclass
class TokenAuthority:
    """Signs and verifies tokens with one configured algorithm; the token's header never chooses."""

    algorithm: str
    verify_key: Any = field(repr=False)
    signing_key: Any = field(repr=False)
    issuer: str
    audience: str

    def verify(self, token: str) -> Claims:
        try:
            claims = jwt.decode(
                token,
                self.verify_key,
                algorithms=[self.algorithm],
                audience=self.audience,
                issuer=self.issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iat", "sub"]},
            )
        except jwt.PyJWTError as exc:
            # PyJWTError is the base of every decoding failure, a key that does not fit included.
            raise InvalidToken(str(exc)) from exc
        except (ValueError, TypeError) as exc:
            raise InvalidToken(f"unusable token: {exc}") from exc
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise InvalidToken("empty subject")
        return Claims(subject, parse_scopes(claims), int(claims["exp"]))

    def issue(self, subject: str, scopes: Sequence[str], ttl_seconds: int) -> str:
        if self.signing_key is None:
            raise ConfigError("auth.jwt_private_key is needed to issue tokens")
        now = int(time.time())
        payload = {
            "sub": subject,
            "scopes": list(scopes),
            "iat": now,
            "exp": now + ttl_seconds,
            "iss": self.issuer,
            "aud": self.audience,
        }
        return jwt.encode(payload, self.signing_key, algorithm=self.algorithm)


def load_or_create_secret(data_dir: Path) -> str:
    """The HS256 secret kept in the data directory: created once (mode 0600), then reused."""
    path = data_dir / SECRET_FILE
    try:
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        try:
            secret = path.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read the JWT secret {path}: {exc.strerror}") from exc
        if len(secret.encode()) < 32:
            raise ConfigError(f"auth.jwt_secret: the stored secret {path} is shorter than 32 bytes") from None
        return secret
    except OSError as exc:
        raise ConfigError(f"server.data_dir: cannot create {path}: {exc.strerror}") from exc
    secret = secrets.token_urlsafe(48)
    with os.fdopen(fd, "w") as handle:
        handle.write(secret + "\n")
    log.info("generated a new JWT secret in %s", path)
    return secret


def _read_key(path: Path, key: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {path}: {exc.strerror}") from exc


def authority_from_config(config: Config) -> TokenAuthority:
    auth = config.auth
    if auth.jwt_algorithm == "HS256":
        secret = auth.jwt_secret or load_or_create_secret(config.server.data_dir)
        return TokenAuthority("HS256", secret, secret, auth.issuer, auth.audience)
    assert auth.jwt_public_key is not None  # enforced by AuthConfig
    public = _read_key(auth.jwt_public_key, "auth.jwt_public_key")
    private = _read_key(auth.jwt_private_key, "auth.jwt_private_key") if auth.jwt_private_key else None
    authority = TokenAuthority(auth.jwt_algorithm, public, private, auth.issuer, auth.audience)
    _check_keys(authority, auth)
    return authority


def _check_keys(authority: TokenAuthority, auth: AuthConfig) -> None:
    """Refuse key files that cannot work now, at start-up, rather than with every token later.

    A public key that does not load would turn every remote request away; a private key that
    does not load, or does not match the public one, would fail every login.
    """
    algorithm = authority.algorithm
    try:
        jwt.get_algorithm_by_name(algorithm).prepare_key(authority.verify_key)
    except (jwt.PyJWTError, ValueError, TypeError) as exc:
        raise ConfigError(
            f"auth.jwt_public_key: {auth.jwt_public_key} is not a usable {algorithm} key ({exc})"
        ) from exc
    if authority.signing_key is None:
        return
    try:
        probe = authority.issue("nekzus-key-check", [], 60)
    except (jwt.PyJWTError, ValueError, TypeError) as exc:
        raise ConfigError(
            f"auth.jwt_private_key: {auth.jwt_private_key} is not a usable {algorithm} private key ({exc})"
        ) from exc
    try:
        authority.verify(probe)
    except InvalidToken as exc:
        raise ConfigError(
            f"auth.jwt_private_key and auth.jwt_public_key are not one {algorithm} key pair: a token "
            f"signed with {auth.jwt_private_key} does not verify with {auth.jwt_public_key}"
        ) from exc


# -- API keys ------------------------------------------------------------------------------------


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def match_api_key(presented: str, keys: Sequence[ApiKeyConfig]) -> ApiKeyConfig | None:
    """The configured key whose SHA-256 matches, compared in constant time against every key."""
    digest = hash_api_key(presented)
    found = None
    for candidate in keys:
        # No early exit: the time taken does not depend on which key (if any) matched.
        if hmac.compare_digest(digest, candidate.sha256):
            found = candidate
    return found


# -- route marks and the middleware --------------------------------------------------------------


def requires(scope: str) -> Callable[[H], H]:
    """Mark a handler with the scope it needs."""

    def mark(handler: H) -> H:
        handler.required_scope = scope  # type: ignore[attr-defined]
        return handler

    return mark


def public(handler: H) -> H:
    """Mark a handler that anyone may call (health probes, login)."""
    handler.public = True  # type: ignore[attr-defined]
    return handler


def bearer_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def unauthorized(message: str, *, invalid: bool = False) -> ApiError:
    challenge = 'Bearer realm="nekzus"' + (', error="invalid_token"' if invalid else "")
    return ApiError(401, "UNAUTHORIZED", message, headers={"WWW-Authenticate": challenge})


def principal_of(request: web.Request, authority: TokenAuthority, auth: AuthConfig) -> Principal | None:
    """The caller, or None when a remote caller brings no usable token."""
    ip = request[CLIENT_IP]
    local = auth.allow_local and ip is not None and in_networks(ip, _networks(auth))
    token = bearer_token(request)
    if token is not None:
        try:
            claims = authority.verify(token)
        except InvalidToken as exc:
            log.info("rejected a token from %s: %s", ip, exc)
        else:
            return Principal(claims.subject, claims.scopes, local, True, claims.expires_at)
    if local:
        return anonymous_lan()
    return None


def _networks(auth: AuthConfig) -> Sequence[IPNetwork]:
    return auth.local_networks


@web.middleware
async def client_address_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    server = request.app[CONFIG].server
    request[CLIENT_IP] = request_address(request, server.trusted_proxies, server.forwarded_header)
    return await handler(request)


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    target = request.match_info.handler
    if getattr(target, "public", False) or _is_cors_preflight(request):
        return await handler(request)
    principal = principal_of(request, request.app[AUTHORITY], request.app[CONFIG].auth)
    if principal is None:
        if bearer_token(request) is None:
            raise unauthorized("Authentication required: send a bearer token")
        raise unauthorized("The token is invalid or has expired", invalid=True)
    request[PRINCIPAL] = principal
    scope = getattr(target, "required_scope", None)
    if scope is not None and not principal.allows(scope):
        raise ApiError(403, "FORBIDDEN", f"This action needs the scope {scope!r}")
    return await handler(request)


def _is_cors_preflight(request: web.Request) -> bool:
    return request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers
