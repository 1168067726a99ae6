"""Idempotency keys: the first answer to a request that started work, kept for the retries of it.

A client that lost the answer to a POST (a phone that changed networks) sends it again with the
same ``Idempotency-Key`` and gets the original answer, the same ``operationId``, instead of a
second restart (the IETF httpapi idempotency-key-header draft). A key is scoped by the caller: the
HTTP side hands over one opaque ``scope`` (a hash of principal, method, path and key) and a
``fingerprint`` of the request, and this module decides: replay, refuse, or let the work run once.

Answers are kept in SQLite in ``server.data_dir``, so a retry after a gateway restart still finds
them, the way the operation store keeps its records: one connection on one thread of its own,
write-ahead logging, nothing on the event loop. An answer is served from memory until its write
has committed, so a retry never waits for the disk nor misses an answer being written. Which
request is being answered is known only in memory: a second gateway sharing the data directory
sees answers, not the requests another one is still working on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from ..config import ConfigError
from ..errors import ApiError

log = logging.getLogger(__name__)
T = TypeVar("T")

DB_FILE = "idempotency.db"
SCHEMA_VERSION = 1
_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS answers (
        scope TEXT PRIMARY KEY,
        fingerprint TEXT NOT NULL,
        status INTEGER NOT NULL,
        headers TEXT NOT NULL,
        body BLOB NOT NULL,
        created_at REAL NOT NULL
    )
    """,
    "CREATE INDEX IF NOT EXISTS answers_created_at ON answers (created_at)",
)
# A retry in flight is told to come back after this many seconds (409's Retry-After).
RETRY_AFTER_SECONDS = 1


@dataclass(frozen=True, slots=True)
class Answer:
    """A response as it is replayed: status, the headers that matter, and the body's bytes; with
    the fingerprint of the request it answered and when it was given (Unix seconds)."""

    fingerprint: str
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    created_at: float


def key_in_use() -> ApiError:
    return ApiError(
        409,
        "IDEMPOTENCY_KEY_IN_USE",
        "A request with this Idempotency-Key is still being answered: retry it in a moment",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def key_reused() -> ApiError:
    return ApiError(
        422,
        "IDEMPOTENCY_KEY_REUSED",
        "This Idempotency-Key was sent with another request (a different body or query): "
        "use a new key for a new request",
    )


class Idempotency:
    """The answers kept by scope, and the requests being answered; create it with :meth:`open`."""

    def __init__(self, db: _Database, executor: ThreadPoolExecutor) -> None:
        self._db = db
        self._executor = executor
        # scope -> fingerprint of the request being answered now.
        self._answering: dict[str, str] = {}
        # Answers whose write has not committed yet, served from here meanwhile.
        self._unsaved: dict[str, Answer] = {}
        self._writes: set[asyncio.Future[None]] = set()
        self._closed = False
        self._failing = False

    @classmethod
    async def open(cls, data_dir: Path, *, ttl_seconds: float, max_keys: int) -> Idempotency:
        """Open (or create) the store and drop what expired; a store that cannot be used is a
        ConfigError naming ``server.data_dir``, so the start stops with a clear message."""
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nekzus-idempotency")
        try:
            db = await asyncio.get_running_loop().run_in_executor(
                executor, _Database.open, data_dir / DB_FILE, ttl_seconds, max_keys
            )
        except (OSError, sqlite3.Error) as exc:
            executor.shutdown(wait=False)
            raise ConfigError(
                f"server.data_dir: cannot keep idempotency keys in {data_dir / DB_FILE}: {exc}"
            ) from exc
        return cls(db, executor)

    async def begin(self, scope: str, fingerprint: str) -> Answer | None:
        """The answer to replay, or None when the caller now answers the request itself and must
        call :meth:`settle` when done. Raises 409 while the key's first request is being answered
        and 422 when the key came with another request."""
        answering = self._answering.get(scope)
        if answering is not None:
            raise key_in_use() if answering == fingerprint else key_reused()
        unsaved = self._unsaved.get(scope)
        if unsaved is not None:
            return _matching(unsaved, fingerprint)
        # Ordering: claimed before the first await, so of concurrent requests exactly one runs.
        self._answering[scope] = fingerprint
        try:
            found = await self._call(self._db.find, scope, time.time())
        except sqlite3.Error as exc:
            # A failing disk costs the replay of older answers, never the request itself.
            log.error("idempotency keys cannot be read: %s", exc)
            found = None
        except BaseException:
            del self._answering[scope]
            raise
        if found is None:
            return None
        del self._answering[scope]
        return _matching(found, fingerprint)

    def settle(self, scope: str, answer: Answer | None) -> None:
        """End the request :meth:`begin` let run: keep ``answer`` for its retries, or with None
        (an error, a response not worth keeping) let the next request with the key run anew."""
        del self._answering[scope]
        if answer is None:
            return
        if self._closed:
            log.warning("an answer came after the idempotency store closed; its key is not kept")
            return
        self._unsaved[scope] = answer
        write = asyncio.get_running_loop().run_in_executor(self._executor, self._db.save, scope, answer)
        self._writes.add(write)
        write.add_done_callback(partial(self._saved, scope, answer))

    def _saved(self, scope: str, answer: Answer, write: asyncio.Future[None]) -> None:
        self._writes.discard(write)
        if self._unsaved.get(scope) is answer:
            del self._unsaved[scope]
        exc = None if write.cancelled() else write.exception()
        if exc is not None:
            if not self._failing:
                log.error("idempotency keys cannot be stored (retries will run again): %s", exc)
            self._failing = True
        elif self._failing:
            log.warning("idempotency keys are being stored again")
            self._failing = False

    async def close(self) -> None:
        """Finish the writes under way, then release the connection."""
        self._closed = True
        await asyncio.gather(*self._writes, return_exceptions=True)
        await self._call(self._db.close)
        self._executor.shutdown(wait=False)

    async def _call(self, func: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, func, *args)


def _matching(answer: Answer, fingerprint: str) -> Answer:
    if answer.fingerprint != fingerprint:
        raise key_reused()
    return answer


# -- on the store's own thread ------------------------------------------------------------------


class _Database:
    """The answers table; every method runs on the store's thread, which alone touches it."""

    def __init__(self, connection: sqlite3.Connection, ttl_seconds: float, max_keys: int) -> None:
        self._db = connection
        self._ttl = ttl_seconds
        self._max_keys = max_keys
        # The last exact count plus the rows written since: a cheap upper bound, so the cap costs
        # a count only when it may have been passed (another gateway's rows are not in it). None
        # until the first count.
        self._rows: int | None = None

    @classmethod
    def open(cls, path: Path, ttl_seconds: float, max_keys: int) -> _Database:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        connection = sqlite3.connect(path, timeout=5, isolation_level=None, check_same_thread=False)
        try:
            if connection.execute("PRAGMA journal_mode=WAL").fetchone()[0] != "wal":
                raise sqlite3.OperationalError("the database cannot use write-ahead logging")
            # As in the operation store: a commit survives the process being killed.
            connection.execute("PRAGMA synchronous=NORMAL")
            for statement in _SCHEMA:
                connection.execute(statement)
            connection.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            db = cls(connection, ttl_seconds, max_keys)
            db._transaction(db._prune, time.time())
        except BaseException:
            connection.close()
            raise
        return db

    def find(self, scope: str, now: float) -> Answer | None:
        row = self._db.execute(
            "SELECT fingerprint, status, headers, body, created_at FROM answers "
            "WHERE scope = ? AND created_at >= ?",
            (scope, now - self._ttl),
        ).fetchone()
        if row is None:
            return None
        fingerprint, status, headers, body, created_at = row
        return Answer(fingerprint, status, tuple((k, v) for k, v in json.loads(headers)), body, created_at)

    def save(self, scope: str, answer: Answer) -> None:
        def insert(now: float) -> None:
            # REPLACE: a row of the same scope can only be one that expired.
            self._db.execute(
                "INSERT OR REPLACE INTO answers (scope, fingerprint, status, headers, body, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    scope,
                    answer.fingerprint,
                    answer.status,
                    json.dumps(answer.headers),
                    answer.body,
                    answer.created_at,
                ),
            )
            if self._rows is not None:
                self._rows += 1
            self._prune(now)

        self._transaction(insert, time.time())

    def _prune(self, now: float) -> None:
        """Drop what expired, then the oldest answers over ``max_keys``."""
        self._db.execute("DELETE FROM answers WHERE created_at < ?", (now - self._ttl,))
        if self._rows is not None and self._rows <= self._max_keys:
            return
        self._rows = self._db.execute("SELECT count(*) FROM answers").fetchone()[0]
        excess = self._rows - self._max_keys
        if excess > 0:
            self._db.execute(
                "DELETE FROM answers WHERE scope IN "
                "(SELECT scope FROM answers ORDER BY created_at, rowid LIMIT ?)",
                (excess,),
            )
            self._rows = self._max_keys

    def _transaction(self, work: Callable[[float], None], now: float) -> None:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            work(now)
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self._db.close()
