"""Operation records kept on disk, so that a poll still answers after the gateway crashed.

SQLite from the standard library, in WAL mode, on one thread of its own: every call runs off the
event loop, one connection is never shared between threads, and no dependency is added for what
an async wrapper would do the same way. Writes go through a queue that one writer task drains in
batches, one transaction per batch, so the 202 path never waits for the disk.

Several gateways may share a data directory. Each holds an exclusive lock on a file named after
its own instance for as long as it runs; the kernel drops the lock when the process dies, however
it dies. Pending records whose owner's lock can be taken belong to a gateway that is gone.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import astuple, dataclass, fields
from pathlib import Path
from typing import IO, Any, TypeVar

from ..config import ConfigError
from ..tasks import TaskGroup

log = logging.getLogger(__name__)
T = TypeVar("T")

DB_FILE = "operations.db"
OWNERS_DIR = "operations.owners"
# 2: ``result``, what a job answered (a created container's id), as a JSON object.
SCHEMA_VERSION = 2
_SCHEMA = """
CREATE TABLE IF NOT EXISTS operations (
    id TEXT PRIMARY KEY,
    container_id TEXT NOT NULL,
    runtime TEXT NOT NULL,
    namespace TEXT NOT NULL,
    action TEXT NOT NULL,
    state TEXT NOT NULL,
    error TEXT,
    message TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    finished_at INTEGER,
    owner TEXT NOT NULL,
    result TEXT NOT NULL DEFAULT '{}'
)
"""
_MIGRATIONS = {1: "ALTER TABLE operations ADD COLUMN result TEXT NOT NULL DEFAULT '{}'"}


@dataclass(frozen=True, slots=True)
class StoredOperation:
    """One row, in the column order of the table (without its owner)."""

    id: str
    container_id: str
    runtime: str
    namespace: str
    action: str
    state: str
    error: str | None
    message: str
    started_at: int
    finished_at: int | None
    result: str = "{}"


_COLUMNS = ", ".join(f.name for f in fields(StoredOperation))
_PLACEHOLDERS = ", ".join("?" * (len(fields(StoredOperation)) + 1))
_UPSERT = (
    f"INSERT INTO operations ({_COLUMNS}, owner) VALUES ({_PLACEHOLDERS}) "
    "ON CONFLICT(id) DO UPDATE SET state = excluded.state, error = excluded.error, "
    "message = excluded.message, finished_at = excluded.finished_at, result = excluded.result"
)


@dataclass(frozen=True, slots=True)
class Loaded:
    """What a start finds: finished records still within retention, and the pending records of
    gateways that died, now owned by this one."""

    finished: list[StoredOperation]
    orphaned: list[StoredOperation]


@dataclass(eq=False, slots=True)
class _Write:
    saves: list[StoredOperation]
    deletes: list[str]
    stored: asyncio.Future[None]


class OperationStore:
    """The operations table of ``data_dir``; create it with :meth:`open`."""

    def __init__(
        self,
        connection: sqlite3.Connection,
        executor: ThreadPoolExecutor,
        owner: str,
        lock: IO[bytes],
        owners_dir: Path,
    ) -> None:
        self._db = connection
        self._executor = executor
        self._owner = owner
        self._lock = lock
        self._owners_dir = owners_dir
        self._queue: asyncio.Queue[_Write | None] = asyncio.Queue()
        self._tasks = TaskGroup()
        self._writer_task: asyncio.Task[None] | None = None
        self._failing = False

    @classmethod
    async def open(cls, data_dir: Path) -> OperationStore:
        """Open (or create) the store and start its writer; a store that cannot be used is a
        ConfigError naming ``server.data_dir``, so the start stops with a clear message."""
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nekzus-operation-store")
        owner = uuid.uuid4().hex
        try:
            connection, lock = await asyncio.get_running_loop().run_in_executor(
                executor, _open_sync, data_dir, owner
            )
        except (OSError, sqlite3.Error) as exc:
            executor.shutdown(wait=False)
            raise ConfigError(
                f"server.data_dir: cannot keep operation records in {data_dir / DB_FILE}: {exc}"
            ) from exc
        store = cls(connection, executor, owner, lock, data_dir / OWNERS_DIR)
        store._writer_task = store._tasks.spawn(store._writer(), name="operation-store-writer")
        return store

    async def load(self, *, retention_seconds: float, max_records: int) -> Loaded:
        """Prune what is past retention or over the cap, take over the pending records of dead
        gateways, and answer what is left; a failure here is a ConfigError like in :meth:`open`."""
        try:
            return await self._call(
                _load_sync, self._db, self._owner, self._owners_dir, retention_seconds, max_records
            )
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"server.data_dir: cannot read the operation records: {exc}") from exc

    async def save_now(self, records: Iterable[StoredOperation]) -> None:
        """Write at once and raise on failure: for the start, where storage errors stop it."""
        try:
            await self._call(_write_sync, self._db, self._owner, list(records), [])
        except sqlite3.Error as exc:
            raise ConfigError(f"server.data_dir: cannot write the operation records: {exc}") from exc

    def save(self, record: StoredOperation) -> asyncio.Future[None]:
        """Queue an insert or update; the future resolves once it is committed, or once the
        failure is logged (a disk that fails at run time must not stop operations)."""
        return self._enqueue([record], [])

    def delete(self, ids: list[str]) -> None:
        if ids:
            self._enqueue([], ids)

    def _enqueue(self, saves: list[StoredOperation], deletes: list[str]) -> asyncio.Future[None]:
        stored: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Write(saves, deletes, stored))
        return stored

    async def _writer(self) -> None:
        """Drain the queue in batches: one transaction for everything queued since the last one."""
        while True:
            batch = [await self._queue.get()]
            while not self._queue.empty():
                batch.append(self._queue.get_nowait())
            writes = [w for w in batch if w is not None]
            saves = [r for w in writes for r in w.saves]
            deletes = [i for w in writes for i in w.deletes]
            if saves or deletes:
                try:
                    await self._call(_write_sync, self._db, self._owner, saves, deletes)
                except Exception as exc:  # a failing disk is logged, never fatal, at run time
                    if not self._failing:
                        log.error(
                            "operation records cannot be stored (polls after a restart will miss them): %s",
                            exc,
                        )
                    self._failing = True
                else:
                    if self._failing:
                        log.warning("operation records are being stored again")
                    self._failing = False
            for w in writes:
                if not w.stored.done():
                    w.stored.set_result(None)
            if None in batch:
                return

    async def close(self) -> None:
        """Write what is queued, then release the connection and this gateway's lock."""
        self._queue.put_nowait(None)
        if self._writer_task is not None:
            await asyncio.wait({self._writer_task})
        await self._tasks.close()
        await self._call(_close_sync, self._db, self._lock, self._owners_dir / f"{self._owner}.lock")
        self._executor.shutdown(wait=False)

    async def _call(self, func: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, func, *args)


# -- on the store's own thread ------------------------------------------------------------------


def _open_sync(data_dir: Path, owner: str) -> tuple[sqlite3.Connection, IO[bytes]]:
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    owners = data_dir / OWNERS_DIR
    owners.mkdir(exist_ok=True, mode=0o700)
    # Ordering: the lock file gets its name only once it is locked, so another gateway can never
    # find it unlocked and take this one for dead.
    locking = owners / f".{owner}.new"
    lock = locking.open("wb")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        locking.rename(owners / f"{owner}.lock")
        db = sqlite3.connect(data_dir / DB_FILE, timeout=5, isolation_level=None, check_same_thread=False)
        try:
            if db.execute("PRAGMA journal_mode=WAL").fetchone()[0] != "wal":
                raise sqlite3.OperationalError("the database cannot use write-ahead logging")
            # WAL with synchronous=NORMAL: a commit survives the process being killed (the OS has it);
            # only a power loss can undo the last ones, which is not what this store guards against.
            db.execute("PRAGMA synchronous=NORMAL")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            db.execute(_SCHEMA)
            # A table an older gateway made gains the columns added since, in order.
            for step in range(version or SCHEMA_VERSION, SCHEMA_VERSION):
                db.execute(_MIGRATIONS[step])
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            db.execute("SELECT count(*) FROM operations").fetchone()
        except BaseException:
            db.close()
            raise
    except BaseException:
        lock.close()
        raise
    return db, lock


def _load_sync(
    db: sqlite3.Connection, owner: str, owners: Path, retention_seconds: float, max_records: int
) -> Loaded:
    db.execute("BEGIN IMMEDIATE")  # also proves the database is writable
    try:
        cutoff = int(time.time() - retention_seconds)
        db.execute("DELETE FROM operations WHERE finished_at IS NOT NULL AND finished_at < ?", (cutoff,))
        db.execute(
            "DELETE FROM operations WHERE id IN (SELECT id FROM operations WHERE finished_at IS NOT NULL "
            "ORDER BY rowid DESC LIMIT -1 OFFSET ?)",
            (max_records,),
        )
        pending_owners = [
            row[0]
            for row in db.execute("SELECT DISTINCT owner FROM operations WHERE finished_at IS NULL")
            if row[0] != owner
        ]
        dead = [other for other in pending_owners if _claim_if_dead(owners / f"{other}.lock")]
        for stale in owners.glob("*.lock"):  # the locks of gateways that are gone, with nothing pending
            if stale.stem != owner:
                _claim_if_dead(stale)
        db.executemany(
            "UPDATE operations SET owner = ? WHERE owner = ? AND finished_at IS NULL",
            [(owner, other) for other in dead],
        )
        finished = [
            StoredOperation(*row)
            for row in db.execute(
                f"SELECT {_COLUMNS} FROM operations WHERE finished_at IS NOT NULL ORDER BY rowid"
            )
        ]
        orphaned = [
            StoredOperation(*row)
            for row in db.execute(
                f"SELECT {_COLUMNS} FROM operations WHERE finished_at IS NULL AND owner = ? ORDER BY rowid",
                (owner,),
            )
        ]
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return Loaded(finished, orphaned)


def _claim_if_dead(path: Path) -> bool:
    """True when no running gateway holds the lock at ``path`` (its file is then removed). A lock
    directory that has gone is an OSError, which stops the start, not a licence to take over."""
    with path.open("ab") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        path.unlink(missing_ok=True)
        return True


def _write_sync(db: sqlite3.Connection, owner: str, saves: list[StoredOperation], deletes: list[str]) -> None:
    db.execute("BEGIN IMMEDIATE")
    try:
        db.executemany(_UPSERT, [(*astuple(r), owner) for r in saves])
        db.executemany("DELETE FROM operations WHERE id = ?", [(i,) for i in deletes])
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def _close_sync(db: sqlite3.Connection, lock: IO[bytes], lock_path: Path) -> None:
    db.close()
    lock_path.unlink(missing_ok=True)
    lock.close()
