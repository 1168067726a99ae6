"""Webhooks made through the API, pending deliveries and recent attempts, kept in
``data_dir/webhooks.db`` so that a restart, even a kill -9, loses no delivery once it is written.

SQLite from the standard library on one thread of its own, as the operation records are kept
(nekzus/operations/store.py): nothing here blocks the event loop. Writes are queued in the order
they are asked for and one writer task commits everything queued since its last commit in one
transaction, in that order, so a delivery's removal never overtakes its insertion.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import astuple, dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

from ..config import ConfigError
from ..tasks import TaskGroup

log = logging.getLogger(__name__)
T = TypeVar("T")

DB_FILE = "webhooks.db"
SCHEMA_VERSION = 1
_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS webhooks (
        name TEXT PRIMARY KEY,
        spec TEXT NOT NULL,
        created_at INTEGER NOT NULL
    )""",
    # Ordered by rowid: a new row's rowid is above every row left, so the order is the queue's.
    """CREATE TABLE IF NOT EXISTS deliveries (
        id TEXT PRIMARY KEY,
        webhook TEXT NOT NULL,
        type TEXT NOT NULL,
        body BLOB NOT NULL,
        created_at REAL NOT NULL,
        attempts INTEGER NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS deliveries_by_webhook ON deliveries (webhook)",
    """CREATE TABLE IF NOT EXISTS attempts (
        webhook TEXT NOT NULL,
        delivery_id TEXT NOT NULL,
        type TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        status TEXT NOT NULL,
        status_code INTEGER,
        duration REAL,
        error TEXT,
        at REAL NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS attempts_by_webhook ON attempts (webhook)",
)


@dataclass(frozen=True, slots=True)
class StoredWebhook:
    name: str
    spec: str  # the WebhookConfig as JSON, secret and header values included
    created_at: int


@dataclass(slots=True)
class StoredDelivery:
    """One event on its way to one webhook; ``id`` is its ``webhook-id`` for every attempt."""

    id: str
    webhook: str
    type: str
    body: bytes
    created_at: float
    attempts: int = 0


@dataclass(frozen=True, slots=True)
class StoredAttempt:
    webhook: str
    delivery_id: str
    type: str
    attempt: int
    status: str  # delivered, failed (tried again), expired, dropped
    status_code: int | None
    duration: float | None
    error: str | None
    at: float


_DELIVERY_COLUMNS = ", ".join(f.name for f in fields(StoredDelivery))
_ATTEMPT_COLUMNS = ", ".join(f.name for f in fields(StoredAttempt))


@dataclass(frozen=True, slots=True)
class Loaded:
    webhooks: list[StoredWebhook]
    pending: list[StoredDelivery]  # in queue order
    attempts: list[StoredAttempt]  # oldest first


Statement = tuple[str, tuple[Any, ...]]


@dataclass(eq=False, slots=True)
class _Write:
    statements: list[Statement]
    stored: asyncio.Future[None]


class WebhookStore:
    """The tables of ``webhooks.db``; create it with :meth:`open`."""

    def __init__(self, connection: sqlite3.Connection, executor: ThreadPoolExecutor, history: int) -> None:
        self._db = connection
        self._executor = executor
        self._history = history
        self._queue: asyncio.Queue[_Write | None] = asyncio.Queue()
        self._tasks = TaskGroup()
        self._writer_task: asyncio.Task[None] | None = None
        self._failing = False

    @classmethod
    async def open(cls, data_dir: Path, *, history: int) -> WebhookStore:
        """Open (or create) the store and start its writer; a store that cannot be used is a
        ConfigError naming ``server.data_dir``, so the start stops with a clear message."""
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nekzus-webhook-store")
        try:
            connection = await asyncio.get_running_loop().run_in_executor(executor, _open_sync, data_dir)
        except (OSError, sqlite3.Error) as exc:
            executor.shutdown(wait=False)
            raise ConfigError(
                f"server.data_dir: cannot keep webhooks in {data_dir / DB_FILE}: {exc}"
            ) from exc
        store = cls(connection, executor, history)
        store._writer_task = store._tasks.spawn(store._writer(), name="webhook-store-writer")
        return store

    async def load(self) -> Loaded:
        try:
            return await self._call(_load_sync, self._db, self._history)
        except sqlite3.Error as exc:
            raise ConfigError(f"server.data_dir: cannot read the webhooks: {exc}") from exc

    def save_webhook(self, hook: StoredWebhook) -> asyncio.Future[None]:
        return self._enqueue(
            [("INSERT OR REPLACE INTO webhooks (name, spec, created_at) VALUES (?, ?, ?)", astuple(hook))]
        )

    def forget_webhook(self, name: str) -> asyncio.Future[None]:
        """The webhook (if the API made it), its pending deliveries and its history."""
        return self._enqueue(
            [
                ("DELETE FROM webhooks WHERE name = ?", (name,)),
                ("DELETE FROM deliveries WHERE webhook = ?", (name,)),
                ("DELETE FROM attempts WHERE webhook = ?", (name,)),
            ]
        )

    def add(self, delivery: StoredDelivery) -> None:
        self._enqueue(
            [(f"INSERT INTO deliveries ({_DELIVERY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)", astuple(delivery))]
        )

    def remove(self, delivery_id: str) -> None:
        self._enqueue([("DELETE FROM deliveries WHERE id = ?", (delivery_id,))])

    def record(self, attempt: StoredAttempt, *, tried: int | None = None) -> None:
        """Keep ``attempt`` (the oldest beyond ``history`` go), and the delivery's count of tries
        when it stays pending, so a restart backs off as far as it had."""
        statements: list[Statement] = [
            (
                f"INSERT INTO attempts ({_ATTEMPT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                astuple(attempt),
            ),
            (
                "DELETE FROM attempts WHERE webhook = ? AND rowid <= (SELECT rowid FROM attempts "
                "WHERE webhook = ? ORDER BY rowid DESC LIMIT 1 OFFSET ?)",
                (attempt.webhook, attempt.webhook, self._history),
            ),
        ]
        if tried is not None:
            statements.append(
                ("UPDATE deliveries SET attempts = ? WHERE id = ?", (tried, attempt.delivery_id))
            )
        self._enqueue(statements)

    def flushed(self) -> asyncio.Future[None]:
        """Resolves once everything queued before it is committed (or its failure logged)."""
        return self._enqueue([])

    def _enqueue(self, statements: list[Statement]) -> asyncio.Future[None]:
        stored: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Write(statements, stored))
        return stored

    async def _writer(self) -> None:
        """Drain the queue in batches: one transaction for everything queued since the last one."""
        while True:
            batch = [await self._queue.get()]
            while not self._queue.empty():
                batch.append(self._queue.get_nowait())
            writes = [w for w in batch if w is not None]
            statements = [s for w in writes for s in w.statements]
            if statements:
                try:
                    await self._call(_write_sync, self._db, statements)
                except Exception as exc:  # a failing disk is logged, never fatal, at run time
                    if not self._failing:
                        log.error("webhook deliveries cannot be stored (a restart would lose them): %s", exc)
                    self._failing = True
                else:
                    if self._failing:
                        log.warning("webhook deliveries are being stored again")
                    self._failing = False
            for w in writes:
                if not w.stored.done():
                    w.stored.set_result(None)
            if None in batch:
                return

    async def close(self) -> None:
        """Write what is queued, then release the connection."""
        self._queue.put_nowait(None)
        if self._writer_task is not None:
            await asyncio.wait({self._writer_task})
        await self._tasks.close()
        await self._call(self._db.close)
        self._executor.shutdown(wait=False)

    async def _call(self, func: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, func, *args)


# -- on the store's own thread ------------------------------------------------------------------


def _open_sync(data_dir: Path) -> sqlite3.Connection:
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = data_dir / DB_FILE
    # Security: the file holds the webhooks' secrets and header values; only the gateway reads it.
    path.touch(mode=0o600, exist_ok=True)
    db = sqlite3.connect(path, timeout=5, isolation_level=None, check_same_thread=False)
    try:
        if db.execute("PRAGMA journal_mode=WAL").fetchone()[0] != "wal":
            raise sqlite3.OperationalError("the database cannot use write-ahead logging")
        # A commit survives the process being killed (the OS has it); see operations/store.py.
        db.execute("PRAGMA synchronous=NORMAL")
        for statement in _SCHEMA:
            db.execute(statement)
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    except BaseException:
        db.close()
        raise
    return db


def _load_sync(db: sqlite3.Connection, history: int) -> Loaded:
    db.execute("BEGIN IMMEDIATE")  # also proves the database is writable
    try:
        db.execute(
            "DELETE FROM attempts WHERE rowid IN (SELECT rowid FROM (SELECT rowid, row_number() "
            "OVER (PARTITION BY webhook ORDER BY rowid DESC) AS n FROM attempts) WHERE n > ?)",
            (history,),
        )
        hooks = [StoredWebhook(*row) for row in db.execute("SELECT name, spec, created_at FROM webhooks")]
        pending = [
            StoredDelivery(*row)
            for row in db.execute(f"SELECT {_DELIVERY_COLUMNS} FROM deliveries ORDER BY rowid")
        ]
        attempts = [
            StoredAttempt(*row)
            for row in db.execute(f"SELECT {_ATTEMPT_COLUMNS} FROM attempts ORDER BY rowid")
        ]
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return Loaded(hooks, pending, attempts)


def _write_sync(db: sqlite3.Connection, statements: list[Statement]) -> None:
    db.execute("BEGIN IMMEDIATE")
    try:
        for sql, params in statements:
            db.execute(sql, params)
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
