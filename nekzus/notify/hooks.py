"""Inbound deploy hooks: secret tokens, stored hashed in data_dir, each naming one target and action.

A hook is made (and listed, and revoked) by ``nekzus hook ...`` on the same data directory as a
running gateway, which reads the store on every call: a revocation takes effect at the next call,
with no restart. The store keeps the token's SHA-256, never the token; the optional signature
secret is kept as it is, since verifying an HMAC needs it, in a file only its owner may read.
SQLite as the other stores use it: one connection on a thread of its own, write-ahead logging,
nothing on the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import secrets
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web
from multidict import CIMultiDictProxy

from ..config import ConfigError
from ..keys import CONFIG

log = logging.getLogger(__name__)
T = TypeVar("T")

DB_FILE = "hooks.db"
SCHEMA_VERSION = 1
_SCHEMA = """
    CREATE TABLE IF NOT EXISTS hooks (
        id TEXT PRIMARY KEY,
        name TEXT,
        kind TEXT NOT NULL,
        target TEXT NOT NULL,
        action TEXT NOT NULL,
        token_sha256 TEXT NOT NULL UNIQUE,
        secret TEXT,
        created_at REAL NOT NULL,
        last_used_at REAL,
        uses INTEGER NOT NULL DEFAULT 0
    )
"""
_COLUMNS = "id, name, kind, target, action, secret, created_at, last_used_at, uses"
TOKEN_PREFIX = "nkh_"
PATH_PREFIX = "/api/v1/hooks/"
# What a hook may do, by the kind of its target.
ACTIONS: Mapping[str, tuple[str, ...]] = {
    "stack": ("deploy", "pull-and-deploy", "restart"),
    "container": ("update", "restart"),
}
MAX_NAME = 100
MIN_SECRET = 16
MAX_SECRET = 256
GITHUB_HEADER = "X-Hub-Signature-256"
GITLAB_HEADER = "X-Gitlab-Token"
_GITHUB_SCHEME = b"sha256="


@dataclass(frozen=True, slots=True)
class Hook:
    """One hook as stored: ``kind`` is ``stack`` or ``container``; ``secret`` None: unsigned."""

    id: str
    name: str | None
    kind: str
    target: str
    action: str
    secret: str | None
    created_at: float
    last_used_at: float | None
    uses: int

    def describe(self) -> str:
        """The hook's work in words: ``deploy of stack web``."""
        return f"{self.action} of {self.kind} {self.target}"


def token_digest(token: str) -> str:
    """The SHA-256 a token is stored and looked up by (surrogates kept: any path is hashable)."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def secret_problem(secret: str) -> str | None:
    """What is wrong with a signature secret, or None. Printable ASCII, since a GitLab token travels
    in a header as it is; long enough that guessing it is no shortcut past the HMAC."""
    if not MIN_SECRET <= len(secret) <= MAX_SECRET:
        return f"a signature secret is {MIN_SECRET} to {MAX_SECRET} characters long"
    if not (secret.isascii() and secret.isprintable()) or secret != secret.strip():
        return "a signature secret is printable ASCII, without spaces at either end"
    return None


def _header_bytes(value: str) -> bytes:
    # A forged header may hold anything; as bytes it compares in constant time all the same.
    return value.encode("utf-8", "surrogateescape")


def signature_problem(headers: CIMultiDictProxy[str], body: bytes, secret: str) -> str | None:
    """Why a call to a signed hook is refused, or None when it is signed with ``secret``.

    GitHub, Gitea and Forgejo send ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>``;
    GitLab sends the secret itself as ``X-Gitlab-Token``. Every such header sent must be right
    (so a right one never excuses a wrong one beside it) and at least one must be sent. Security:
    both are compared in constant time.
    """
    key = secret.encode()
    github = headers.getall(GITHUB_HEADER, [])
    gitlab = headers.getall(GITLAB_HEADER, [])
    if not github and not gitlab:
        return f"This hook is signed: send {GITHUB_HEADER} (an HMAC-SHA256 of the body) or {GITLAB_HEADER}"
    if len(github) > 1 or len(gitlab) > 1:
        return "The request repeats a signature header"
    if github:
        expected = _GITHUB_SCHEME + hmac.new(key, body, hashlib.sha256).hexdigest().encode()
        if not hmac.compare_digest(_header_bytes(github[0].strip()).lower(), expected):
            return f"{GITHUB_HEADER} does not match the body signed with the hook's secret"
    if gitlab and not hmac.compare_digest(_header_bytes(gitlab[0]), key):
        return f"{GITLAB_HEADER} is not the hook's secret"
    return None


class HookDatabase:
    """The hooks table. Synchronous: the CLI calls it directly, the gateway on its store's thread."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._db = connection

    @classmethod
    def open(cls, data_dir: Path) -> HookDatabase:
        """Open (or create) ``data_dir/hooks.db``, readable by its owner only: it holds secrets."""
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = data_dir / DB_FILE
        # Created 0600 before SQLite opens it; SQLite gives its -wal and -shm files the same mode.
        os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
        os.chmod(path, 0o600)
        connection = sqlite3.connect(path, timeout=5, isolation_level=None, check_same_thread=False)
        try:
            if connection.execute("PRAGMA journal_mode=WAL").fetchone()[0] != "wal":
                raise sqlite3.OperationalError("the database cannot use write-ahead logging")
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.execute(_SCHEMA)
            connection.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except BaseException:
            connection.close()
            raise
        return cls(connection)

    def create(
        self, *, kind: str, target: str, action: str, name: str | None = None, secret: str | None = None
    ) -> tuple[Hook, str]:
        """A new hook and its token, which is returned this once and stored only as its hash."""
        assert action in ACTIONS[kind]
        token = new_token()
        while True:
            hook = Hook(secrets.token_hex(4), name, kind, target, action, secret, time.time(), None, 0)
            try:
                self._db.execute(
                    "INSERT INTO hooks (id, name, kind, target, action, token_sha256, secret, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (hook.id, name, kind, target, action, token_digest(token), secret, hook.created_at),
                )
            except sqlite3.IntegrityError:
                continue  # the short id was taken: draw another
            return hook, token

    def all(self) -> list[Hook]:
        rows = self._db.execute(f"SELECT {_COLUMNS} FROM hooks ORDER BY created_at, id").fetchall()
        return [Hook(*row) for row in rows]

    def find(self, token: str) -> Hook | None:
        """The hook of ``token``. Security: looked up by the hash alone, so nothing about the token
        itself (its prefix, its length) decides how the lookup goes."""
        row = self._db.execute(
            f"SELECT {_COLUMNS} FROM hooks WHERE token_sha256 = ?", (token_digest(token),)
        ).fetchone()
        return None if row is None else Hook(*row)

    def used(self, hook_id: str, now: float) -> None:
        self._db.execute("UPDATE hooks SET last_used_at = ?, uses = uses + 1 WHERE id = ?", (now, hook_id))

    def revoke(self, hook_id: str) -> bool:
        """Delete the hook; False when there is none with this id."""
        return self._db.execute("DELETE FROM hooks WHERE id = ?", (hook_id,)).rowcount > 0

    def close(self) -> None:
        self._db.close()


def open_database(data_dir: Path) -> HookDatabase:
    """:meth:`HookDatabase.open`, a failure told as a ConfigError naming ``server.data_dir``."""
    try:
        return HookDatabase.open(data_dir)
    except (OSError, sqlite3.Error) as exc:
        raise ConfigError(
            f"server.data_dir: cannot keep deploy hooks in {data_dir / DB_FILE}: {exc}"
        ) from exc


class HookStore:
    """The gateway's side of the store: every call on one thread of its own; create with :meth:`open`."""

    def __init__(self, db: HookDatabase, executor: ThreadPoolExecutor) -> None:
        self._db = db
        self._executor = executor

    @classmethod
    async def open(cls, data_dir: Path) -> HookStore:
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nekzus-hooks")
        try:
            db = await asyncio.get_running_loop().run_in_executor(executor, open_database, data_dir)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(db, executor)

    async def find(self, token: str) -> Hook | None:
        return await self._call(self._db.find, token)

    async def used(self, hook: Hook) -> None:
        """Record a call; a store that cannot be written (the CLI holding it too long) costs the
        record, never the deploy the caller asked for."""
        try:
            await self._call(self._db.used, hook.id, time.time())
        except sqlite3.Error as exc:
            log.warning("the use of hook %s could not be recorded: %s", hook.id, exc)

    async def close(self) -> None:
        await self._call(self._db.close)
        self._executor.shutdown(wait=False)

    async def _call(self, func: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, func, *args)


HOOKS: web.AppKey[HookStore | None] = web.AppKey("hooks")


async def hooks_ctx(app: web.Application) -> AsyncIterator[None]:
    """The store, when hooks are enabled (None otherwise: every hook path then answers 404)."""
    config = app[CONFIG]
    store = await HookStore.open(config.server.data_dir) if config.hooks.enabled else None
    app[HOOKS] = store
    yield
    if store is not None:
        await store.close()
