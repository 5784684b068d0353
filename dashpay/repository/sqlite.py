"""The embedded store: one SQLite file (stdlib ``sqlite3``).

One connection per process, shared by the threads ``trio.to_thread.run_sync`` hands
work to and serialised by a lock (sqlite3 connections are not safe for concurrent use).
The connection is in autocommit mode; every write unit of work is an explicit
``BEGIN IMMEDIATE`` transaction, which takes SQLite's write lock up front, so a daemon
and a ``dashpay db migrate`` in another process serialise instead of failing with
"database is locked" half-way through. WAL lets readers run beside the writer.

The payment engine's small units of work run on the trio thread itself
(``try_transaction``): a WAL commit with synchronous=NORMAL writes to the OS without a
sync, ~50-100 µs, where the hop to a worker thread and back costs more than that
(waking the worker, the GIL handed over twice, trio's wake-up socket). It is tried
only when nothing can make it wait: the connection is free (no worker thread is using
it) and no other process holds the write lock (``BEGIN IMMEDIATE`` with no busy wait);
otherwise the engine hops as before. The one slow part of a WAL commit is the
checkpoint SQLite runs in the committing thread once the WAL passes 1,000 pages (it
syncs the database file), so once the inline path is in use that automatic
checkpoint is off and a thread of this repository (``_Checkpointer``) runs a PASSIVE
checkpoint, which never blocks the writer, on a connection of its own, at most once a
second after commits.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from dashpay.domain.clock import now_ms
from dashpay.domain.errors import Unavailable
from dashpay.repository.schema import (
    SCHEMA_MIGRATIONS_DDL,
    closed_error,
    load_migrations,
    payment_from_text_row,
    receiver_from_text_row,
    too_new_message,
)
from dashpay.repository.sql import SqlRepository

log = logging.getLogger("dashpay.repository.sqlite")

T = TypeVar("T")

# How long a writer waits for another process's write lock before giving up. Our write
# transactions last milliseconds; 5 s only runs out when something is badly stuck.
BUSY_TIMEOUT_MS = 5000
DIRECTORY_MODE = 0o700  # the database holds callback URLs and settings: owner only
# The checkpointer copies the WAL back at most this often, after a commit. Not by the
# WAL file's size: a PASSIVE checkpoint does not shrink the file, so once it has grown
# its size says nothing (a size rule then checkpointed, and synced, after every
# commit). A second of writes is a few hundred pages between payments, and bounded by
# the engine's batches in a burst.
CHECKPOINT_INTERVAL_SECONDS = 1.0
# How long close() waits for a checkpoint in progress to end.
CHECKPOINT_JOIN_SECONDS = 10.0


class SqliteRepository(SqlRepository):
    backend = "sqlite"
    # Without it the planner reads the wallet's whole index and sorts it for every
    # chunk of iter_pending (quadratic at 1M); the rowid range is one pass.
    _primary_key_scan = " NOT INDEXED"
    _server_now_ms = "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)"
    _greatest = "MAX"
    # sqlite3 returns TEXT as str (we never store BLOBs): no bytes to decode.
    _receiver_from_row = staticmethod(receiver_from_text_row)
    _payment_from_row = staticmethod(payment_from_text_row)

    def owner_lock(self, name: str, *, lease_seconds: float = 0.0):
        """An exclusive lock on ``<database>.lock``: one daemon per SQLite database
        (one machine: the flock is exact, no lease needed)."""
        from dashpay.repository.locks import FileOwnerLock

        return FileOwnerLock(self.path.with_name(self.path.name + ".lock"))

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(mode=DIRECTORY_MODE, parents=True, exist_ok=True)
        except OSError as exc:
            raise Unavailable(
                f"cannot create the directory {self.path.parent} for the SQLite database: "
                f"{exc.strerror or exc}",
                path=str(self.path),
            ) from None
        try:
            conn = sqlite3.connect(
                self.path,
                timeout=BUSY_TIMEOUT_MS / 1000,
                isolation_level=None,  # autocommit; transactions are explicit
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            raise self._unavailable("cannot open", exc) from None
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA foreign_keys=ON")
        except sqlite3.Error as exc:
            conn.close()
            raise self._unavailable("cannot open", exc) from None
        self.wal = str(mode).lower() == "wal"
        if not self.wal:
            log.warning("sqlite journal_mode=%s path=%s (WAL is not available here)", mode, path)
        self._conn: sqlite3.Connection | None = conn
        # Started by the first try_transaction (the daemon's engine), stopped by close.
        self._checkpointer: _Checkpointer | None = None

    def _unavailable(self, doing: str, exc: sqlite3.Error) -> Unavailable:
        reason = str(exc)
        if "locked" in reason or "busy" in reason:
            reason += f" (another process held the write lock for more than {BUSY_TIMEOUT_MS} ms)"
        elif "no such table" in reason:
            reason += " (the schema is missing: run `dashpay db migrate`)"
        return Unavailable(
            f"{doing} the SQLite database {self.path}: {reason}", path=str(self.path)
        )

    # -- transport hooks ---------------------------------------------------------------
    def _run(self, work: Callable[[sqlite3.Cursor], T], *, write: bool, fenced: bool = False) -> T:
        with self._lock:
            conn = self._conn
            if conn is None:
                raise closed_error(self.backend)
            cur = conn.cursor()
            try:
                if not write:
                    return work(cur)
                try:
                    cur.execute("BEGIN IMMEDIATE")
                except sqlite3.OperationalError as exc:
                    raise self._unavailable("cannot write to", exc) from None
                return self._commit_work(conn, cur, work, fenced)
            except sqlite3.OperationalError as exc:
                if conn.in_transaction:
                    conn.rollback()
                raise self._unavailable("cannot use", exc) from None
            finally:
                cur.close()

    def _commit_work(
        self, conn: sqlite3.Connection, cur: sqlite3.Cursor, work: Callable[[Any], T], fenced: bool
    ) -> T:
        """The rest of a write transaction ``BEGIN IMMEDIATE`` opened: ``work``, the
        fence, COMMIT (or ROLLBACK and re-raise)."""
        try:
            result = work(cur)
            if fenced:
                self._fence(cur)
        except BaseException:
            conn.rollback()
            raise
        conn.commit()
        if self._checkpointer is not None:
            self._checkpointer.committed()
        return result

    def try_transaction(self, fn: Callable[[Any], T]) -> tuple[bool, T | None]:
        """``transaction(fn)`` on the calling thread (the trio thread) when nothing can
        make it wait (module docstring): ``(True, result)``; ``(False, None)`` without
        running ``fn`` when the connection is busy in a worker thread, another process
        holds the write lock, or the database is not in WAL mode (a commit would sync)."""
        if not self.wal or not self._lock.acquire(blocking=False):
            return False, None
        try:
            conn = self._conn
            if conn is None:
                raise closed_error(self.backend)
            if self._checkpointer is None:
                conn.execute("PRAGMA wal_autocheckpoint=0")
                self._checkpointer = _Checkpointer(self.path)
            cur = conn.cursor()
            try:
                cur.execute("PRAGMA busy_timeout=0")
                try:
                    cur.execute("BEGIN IMMEDIATE")
                except sqlite3.OperationalError as exc:
                    if exc.sqlite_errorname in ("SQLITE_BUSY", "SQLITE_LOCKED"):
                        return False, None  # another process writes: wait in a thread
                    raise self._unavailable("cannot write to", exc) from None
                finally:
                    cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
                return True, self._commit_work(conn, cur, self._transaction_work(fn), False)
            except sqlite3.OperationalError as exc:
                if conn.in_transaction:
                    conn.rollback()
                raise self._unavailable("cannot use", exc) from None
            finally:
                cur.close()
        finally:
            self._lock.release()

    def _read(self, work: Callable[[Any], T]) -> T:
        return self._run(work, write=False)

    def _write(self, work: Callable[[Any], T], *, fenced: bool = True) -> T:
        return self._run(work, write=True, fenced=fenced)

    def _insert_if_absent_sql(self, table: str, columns: Sequence[str], key: Sequence[str]) -> str:
        return (
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
            f" ON CONFLICT ({', '.join(key)}) DO NOTHING"
        )

    def _is_unique_violation(self, exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.IntegrityError) and exc.sqlite_errorname in (
            "SQLITE_CONSTRAINT_UNIQUE",
            "SQLITE_CONSTRAINT_PRIMARYKEY",
        )

    # -- schema ------------------------------------------------------------------------
    def migrate(self) -> list[int]:
        migrations = load_migrations("sqlite")
        known = migrations[-1].version if migrations else 0

        def work(cur: sqlite3.Cursor) -> list[int]:
            # BEGIN IMMEDIATE (in _write) serialises concurrent migrators; SQLite DDL is
            # transactional, so a failed migration leaves nothing behind.
            cur.execute(SCHEMA_MIGRATIONS_DDL["sqlite"])
            applied = {row[0] for row in cur.execute("SELECT version FROM schema_migrations")}
            newest = max(applied, default=0)
            if newest > known:
                raise Unavailable(too_new_message(newest, known), path=str(self.path))
            done: list[int] = []
            for migration in migrations:
                if migration.version in applied:
                    continue
                for statement in migration.statements:
                    cur.execute(statement)
                cur.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                    (migration.version, migration.name, now_ms()),
                )
                done.append(migration.version)
            return done

        applied_now = self._write(work)
        for version in applied_now:
            log.info("migration applied backend=sqlite version=%d path=%s", version, self.path)
        return applied_now

    def schema_version(self) -> int:
        def work(cur: sqlite3.Cursor) -> int:
            exists = cur.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
            ).fetchone()
            if exists is None:
                return 0
            return int(
                cur.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()[0]
            )

        return self._read(work)

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
            checkpointer, self._checkpointer = self._checkpointer, None
        if checkpointer is not None:
            checkpointer.stop()
        if conn is not None:
            conn.close()  # the last connection: SQLite checkpoints the WAL and removes it


class _Checkpointer:
    """A thread with its own connection that runs ``PRAGMA wal_checkpoint(PASSIVE)``
    after commits, at most every ``CHECKPOINT_INTERVAL_SECONDS`` (the repository tells
    it of each commit: setting an event). PASSIVE copies what no reader still needs
    and never waits for, or blocks, the writer; a failed checkpoint is logged and
    tried again after the next commit."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._wanted = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="dashpay-sqlite-checkpoint", daemon=True
        )
        self._thread.start()

    def committed(self) -> None:
        if not self._wanted.is_set():
            self._wanted.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wanted.set()
        self._thread.join(CHECKPOINT_JOIN_SECONDS)

    def _run(self) -> None:
        try:
            conn = sqlite3.connect(self._path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        except sqlite3.Error as exc:
            log.warning("sqlite checkpointer cannot open path=%s: %s", self._path, exc)
            return
        try:
            while True:
                self._wanted.wait()
                if self._stopping.is_set():
                    return
                self._wanted.clear()
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as exc:
                    log.warning("sqlite checkpoint failed path=%s: %s", self._path, exc)
                if self._stopping.wait(CHECKPOINT_INTERVAL_SECONDS):
                    return
        finally:
            conn.close()
