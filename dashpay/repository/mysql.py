"""The shared store: MySQL or MariaDB through PyMySQL.

Several daemons (one per wallet, or a standby) and the CLI may use one database at the
same time, so every unit of work is a short READ COMMITTED transaction and the HD
counter row is locked with ``SELECT ... FOR UPDATE`` while an index is allocated.

Connections come from a small thread-safe pool (``trio.to_thread.run_sync`` calls
arrive on varying threads). A connection that raised an OperationalError or
InterfaceError is closed, never reused. A unit of work that lost its connection before
COMMIT, or was chosen as a deadlock victim, ran in a transaction the server rolled
back, so it is retried on a fresh connection; every other failure is reported as
``Unavailable`` naming the server and database, never the password.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import pymysql

from dashpay.domain.clock import now_ms
from dashpay.domain.errors import Unavailable
from dashpay.domain.model import AttemptOutcome
from dashpay.repository.schema import (
    RECEIVER_UPDATE_FIELDS,
    SCHEMA_MIGRATIONS_DDL,
    closed_error,
    load_migrations,
    padded_chunks,
    too_new_message,
    update_after_attempt,
)
from dashpay.repository.sql import SqlRepository

log = logging.getLogger("dashpay.repository.mysql")

# Receivers updated by one statement at most (9 values each; far below any packet limit).
MAX_UPDATE_ROWS = 256


@functools.cache
def receiver_updates_sql(count: int) -> str:
    """One UPDATE for ``count`` rows of new values, as a derived table joined on the
    receiver id. Callers pad ``count`` to a power of two by repeating their last row
    (the same id with the same values sets the same thing), so few texts exist."""
    columns = ("receiver_id", *RECEIVER_UPDATE_FIELDS)
    first = "SELECT " + ", ".join(f"? AS {name}" for name in columns)
    other = " UNION ALL SELECT " + ", ".join("?" * len(columns))
    assignments = ", ".join(f"r.{name} = v.{name}" for name in RECEIVER_UPDATE_FIELDS)
    return (
        f"UPDATE receivers r JOIN ({first}{other * (count - 1)}) v"
        f" ON r.receiver_id = v.receiver_id SET {assignments}"
    )


# Outbox rows updated by one statement at most, after a batch of attempts (7 values each).
MAX_ATTEMPT_ROWS = 256
# Pads a chunk of attempt updates to a power of two: no event has an empty id (ids are
# 1 to 64 characters), so a padding row joins nothing.
_NO_EVENT_ROW: list[Any] = ["", 0, None, None, None, None, None]


@functools.cache
def attempt_updates_sql(count: int) -> str:
    """One UPDATE applying ``count`` events' attempt outcomes, joined on the event id
    (see ``MysqlRepository._update_after_attempts`` for what each value means)."""
    first = (
        "SELECT ? AS event_id, ? AS tries, ? AS status, ? AS next_attempt_at,"
        " ? AS delivered_at, ? AS last_error, ? AS attempted_at"
    )
    other = " UNION ALL SELECT ?, ?, ?, ?, ?, ?, ?"
    return (
        f"UPDATE callback_outbox o JOIN ({first}{other * (count - 1)}) v"
        " ON o.event_id = v.event_id"
        " SET o.attempts = o.attempts + v.tries, o.status = v.status,"
        " o.next_attempt_at = COALESCE(v.next_attempt_at, o.next_attempt_at),"
        " o.delivered_at = v.delivered_at, o.last_error = v.last_error,"
        " o.first_attempt_at = COALESCE(o.first_attempt_at, v.attempted_at)"
    )


T = TypeVar("T")

# A caller waits this long for a free pooled connection before the database counts as
# unavailable; units of work take milliseconds, so only a stuck server runs it out.
POOL_WAIT_TIMEOUT = 30.0
# Socket read/write timeout on a connection: longer than InnoDB's default lock wait
# (50 s) and the migration lock wait, so only a dead server or network trips it.
IO_TIMEOUT = 90
# Named advisory lock that serialises migrators across processes (MySQL DDL commits
# implicitly, so a transaction cannot do it), and how long to wait for it, in seconds.
MIGRATE_LOCK = "dashpay_migrate"
MIGRATE_LOCK_TIMEOUT = 30
# Attempts for a unit of work the server aborted (deadlock victim, lost connection
# before commit). InnoDB documents deadlocks as normal events to be retried.
MAX_ATTEMPTS = 3
# Exact comparisons like SQLite; refuse (not truncate) values that do not fit.
SQL_MODE = "STRICT_ALL_TABLES,NO_ZERO_DATE,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION"

# Server error codes (MySQL and MariaDB share them).
ER_LOCK_WAIT_TIMEOUT = 1205
ER_LOCK_DEADLOCK = 1213
ER_DUP_ENTRY = 1062
ER_DUP_ENTRY_WITH_KEY_NAME = 1586
ER_BAD_DB_ERROR = 1049
ER_ACCESS_DENIED_ERROR = 1045
ER_NO_SUCH_TABLE = 1146
CR_CONN_HOST_ERROR = 2003
CR_SERVER_GONE_ERROR = 2006
CR_SERVER_LOST = 2013
ER_CONNECTION_KILLED = 1927  # MariaDB: the server killed this connection
ER_CLIENT_INTERACTION_TIMEOUT = 4031  # MySQL 8: idle connection closed by the server
_CONNECTION_LOST = frozenset(
    {CR_SERVER_GONE_ERROR, CR_SERVER_LOST, ER_CONNECTION_KILLED, ER_CLIENT_INTERACTION_TIMEOUT}
)
_ROLLED_BACK = frozenset({ER_LOCK_DEADLOCK, ER_LOCK_WAIT_TIMEOUT})

_Connection = pymysql.connections.Connection


def _error_code(exc: BaseException) -> int | None:
    args = getattr(exc, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def _lost_connection(exc: BaseException) -> bool:
    return isinstance(exc, pymysql.InterfaceError) or _error_code(exc) in _CONNECTION_LOST


class _Pool:
    """At most ``size`` open connections; idle ones are reused newest first (a LIFO
    keeps the fewest connections warm and lets the rest time out server-side)."""

    def __init__(self, connect: Callable[[], _Connection], size: int) -> None:
        self._connect = connect
        self._size = size
        self._idle: queue.LifoQueue[_Connection] = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(size)
        self._lock = threading.Lock()
        self._closed = False

    def acquire(self) -> _Connection:
        if self._closed:
            raise closed_error("mysql")
        if not self._slots.acquire(timeout=POOL_WAIT_TIMEOUT):
            raise Unavailable(
                f"all {self._size} database connections stayed busy for {POOL_WAIT_TIMEOUT:g} s; "
                "the database is slow or stuck (or raise pool_size)"
            )
        try:
            try:
                return self._idle.get_nowait()
            except queue.Empty:
                return self._connect()
        except BaseException:
            self._slots.release()
            raise

    def release(self, conn: _Connection, *, reusable: bool) -> None:
        try:
            with self._lock:
                if reusable and not self._closed:
                    self._idle.put(conn)
                    return
            _close_quietly(conn)
        finally:
            self._slots.release()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle = []
            while True:
                try:
                    idle.append(self._idle.get_nowait())
                except queue.Empty:
                    break
        for conn in idle:
            _close_quietly(conn)


def _close_quietly(conn: _Connection) -> None:
    # A broken connection may fail to say goodbye; the server drops the session (and
    # rolls it back) by itself.
    with contextlib.suppress(pymysql.MySQLError):
        conn.close()


class MysqlRepository(SqlRepository):
    backend = "mysql"
    _for_update = " FOR UPDATE"
    # Same reason as SQLite's NOT INDEXED: a range on the clustered key, never an
    # index merge sorted again for every chunk of iter_pending.
    _primary_key_scan = " FORCE INDEX (PRIMARY)"

    def __init__(
        self,
        host: str | None,
        port: int,
        user: str,
        password: str | None,
        database: str,
        unix_socket: str | None = None,
        pool_size: int = 4,
        connect_timeout: float = 5.0,
    ) -> None:
        if pool_size < 1:
            raise ValueError(f"pool_size must be at least 1, got {pool_size}")
        self.database = database
        self.where = (
            f"unix socket {unix_socket}" if unix_socket else f"{host or 'localhost'}:{port}"
        )
        self._params: dict[str, Any] = {
            "host": host or "localhost",
            "port": port,
            "user": user,
            "password": password or "",
            "database": database,
            "unix_socket": unix_socket,
            "charset": "utf8mb4",
            "autocommit": False,
            "connect_timeout": connect_timeout,
            "read_timeout": IO_TIMEOUT,
            "write_timeout": IO_TIMEOUT,
        }
        self._password = password
        self._user = user
        self._sql_cache: dict[str, str] = {}
        self._pool = _Pool(self._connect, pool_size)
        # Connect once now: a wrong host, password or database is reported at startup,
        # not at the first request.
        self._pool.release(self._pool.acquire(), reusable=True)

    def owner_lock(self, name: str):
        """GET_LOCK(name) on a dedicated connection: the owner of a wallet (HA)."""
        from dashpay.repository.locks import MysqlOwnerLock

        return MysqlOwnerLock(self._connect, name)

    # -- connections -------------------------------------------------------------------
    def _connect(self) -> _Connection:
        try:
            conn = pymysql.connect(**self._params)
        except pymysql.MySQLError as exc:
            raise self._unavailable("cannot connect to", exc) from None
        try:
            with conn.cursor() as cur:
                cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
                cur.execute("SET SESSION sql_mode = %s", (SQL_MODE,))
            conn.commit()
        except pymysql.MySQLError as exc:
            _close_quietly(conn)
            raise self._unavailable("cannot set up a session on", exc) from None
        return conn

    def _unavailable(self, doing: str, exc: BaseException) -> Unavailable:
        code = _error_code(exc)
        args = getattr(exc, "args", ())
        reason = str(args[1]) if len(args) > 1 else (str(exc) or type(exc).__name__)
        if self._password:
            reason = reason.replace(self._password, "***")
        hint = {
            ER_BAD_DB_ERROR: (
                f"create it: CREATE DATABASE `{self.database}` CHARACTER SET utf8mb4, "
                f"and grant {self._user!r} access to it"
            ),
            ER_ACCESS_DENIED_ERROR: "check the user name and password in the database URL",
            CR_CONN_HOST_ERROR: "is the server running and listening there?",
            ER_NO_SUCH_TABLE: "the schema is missing: run `dashpay db migrate`",
        }.get(code or 0)
        message = f"{doing} MySQL at {self.where} (database {self.database!r}): {reason}"
        return Unavailable(
            f"{message}; {hint}" if hint else message,
            server=self.where,
            database=self.database,
            code=code,
        )

    # -- transport hooks ---------------------------------------------------------------
    def _run(self, work: Callable[[Any], T], *, write: bool) -> T:
        attempt = 1
        while True:
            conn = self._pool.acquire()
            reusable = False
            committing = False
            try:
                with conn.cursor() as cur:
                    # No BEGIN: the session runs with autocommit off, so its first
                    # statement after the previous COMMIT (or ROLLBACK) opens the
                    # transaction; an explicit BEGIN was one more round trip per unit.
                    result = work(cur)
                    committing = True
                    conn.commit()
                reusable = True
                return result
            except (pymysql.OperationalError, pymysql.InterfaceError) as exc:
                aborted = _error_code(exc) in _ROLLED_BACK or (
                    _lost_connection(exc) and not committing
                )
                if aborted and attempt < MAX_ATTEMPTS:
                    log.warning(
                        "mysql retry attempt=%d code=%s server=%s",
                        attempt,
                        _error_code(exc),
                        self.where,
                    )
                    attempt += 1
                    continue
                doing = "lost the connection while committing to" if committing else "cannot use"
                raise self._unavailable(doing, exc) from None
            except pymysql.ProgrammingError as exc:
                reusable = self._rollback(conn)
                if _error_code(exc) == ER_NO_SUCH_TABLE:
                    raise self._unavailable("cannot use", exc) from None
                raise
            except BaseException:
                reusable = self._rollback(conn)
                raise
            finally:
                self._pool.release(conn, reusable=reusable)

    @staticmethod
    def _rollback(conn: _Connection) -> bool:
        try:
            conn.rollback()
        except pymysql.MySQLError:
            return False
        return True

    def _read(self, work: Callable[[Any], T]) -> T:
        return self._run(work, write=False)

    def _write(self, work: Callable[[Any], T]) -> T:
        return self._run(work, write=True)

    def _execute(self, cursor: Any, sql: str, params: Sequence[Any] = ()) -> Any:
        if not params:
            cursor.execute(sql)  # PyMySQL formats (and needs "%" doubled) only with args
            return cursor
        cursor.execute(self._pyformat(sql), tuple(params))
        return cursor

    def _write_receiver_updates(self, cur: Any, updates: Sequence[tuple[int, Any]]) -> None:
        # One statement per chunk instead of one per receiver: a round trip each saved.
        for chunk in padded_chunks(updates, MAX_UPDATE_ROWS):
            params: list[Any] = []
            for rid, update in chunk:  # a repeated last row sets the same values again
                params.append(rid)
                params.extend(getattr(update, name) for name in RECEIVER_UPDATE_FIELDS)
            self._execute(cur, receiver_updates_sql(len(chunk)), params)

    def _update_after_attempts(
        self, cur: Any, accepted: Sequence[tuple[str, AttemptOutcome]]
    ) -> None:
        # PyMySQL runs an executemany of an UPDATE as one round trip per row; one
        # statement per chunk does the batch in one. A multi-table UPDATE changes a row
        # once however many joined rows match, so an event listed twice (a retry, then
        # another outcome) is folded first into what the updates in turn would leave:
        # attempts + 2, the later status, delivered_at and error, the latest retry
        # time given, and first_attempt_at from the earlier attempt.
        folded: dict[str, list[Any]] = {}
        for event_id, outcome in accepted:
            status, next_at, delivered_at, error, attempted_at, _ = update_after_attempt(
                event_id, outcome
            )
            row = folded.get(event_id)
            if row is None:
                folded[event_id] = [event_id, 1, status, next_at, delivered_at, error, attempted_at]
            else:
                row[1] += 1
                row[2] = status
                if next_at is not None:
                    row[3] = next_at
                row[4] = delivered_at
                row[5] = error
        for chunk in padded_chunks(list(folded.values()), MAX_ATTEMPT_ROWS, _NO_EVENT_ROW):
            params = [value for row in chunk for value in row]
            self._execute(cur, attempt_updates_sql(len(chunk)), params)

    def _executemany(self, cursor: Any, sql: str, rows: Sequence[Sequence[Any]]) -> Any:
        # PyMySQL turns an INSERT ... VALUES into one multi-row statement: one round trip.
        cursor.executemany(self._pyformat(sql), [tuple(row) for row in rows])
        return cursor

    def _pyformat(self, sql: str) -> str:
        query = self._sql_cache.get(sql)
        if query is None:
            # Our queries keep "?" and "%" out of string literals; see schema.py.
            query = self._sql_cache[sql] = sql.replace("%", "%%").replace("?", "%s")
        return query

    def _insert_if_absent_sql(self, table: str, columns: Sequence[str], key: Sequence[str]) -> str:
        return (
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
            f" ON DUPLICATE KEY UPDATE {key[0]} = {key[0]}"
        )

    def _is_unique_violation(self, exc: BaseException) -> bool:
        return isinstance(exc, pymysql.IntegrityError) and _error_code(exc) in (
            ER_DUP_ENTRY,
            ER_DUP_ENTRY_WITH_KEY_NAME,
        )

    # -- schema ------------------------------------------------------------------------
    def migrate(self) -> list[int]:
        migrations = load_migrations("mysql")
        known = migrations[-1].version if migrations else 0

        def work(cur: Any) -> list[int]:
            cur.execute("SELECT GET_LOCK(%s, %s)", (MIGRATE_LOCK, MIGRATE_LOCK_TIMEOUT))
            if cur.fetchone()[0] != 1:
                raise Unavailable(
                    f"another dashpay has been migrating the database {self.database!r} at "
                    f"{self.where} for over {MIGRATE_LOCK_TIMEOUT} s (lock {MIGRATE_LOCK}); "
                    "try again when it is done",
                    server=self.where,
                    database=self.database,
                )
            try:
                return self._apply(cur, migrations, known)
            finally:
                cur.execute("SELECT RELEASE_LOCK(%s)", (MIGRATE_LOCK,))

        applied_now = self._run(work, write=False)
        for version in applied_now:
            log.info(
                "migration applied backend=mysql version=%d server=%s database=%s",
                version,
                self.where,
                self.database,
            )
        return applied_now

    def _apply(self, cur: Any, migrations: Sequence[Any], known: int) -> list[int]:
        """Apply what is missing, holding the migration lock. Each migration's DDL is
        idempotent, so one interrupted before its version row was written is re-run."""
        cur.execute(SCHEMA_MIGRATIONS_DDL["mysql"])
        cur.execute("SELECT version FROM schema_migrations")
        applied = {int(row[0]) for row in cur.fetchall()}
        cur.connection.commit()
        newest = max(applied, default=0)
        if newest > known:
            raise Unavailable(
                too_new_message(newest, known), server=self.where, database=self.database
            )
        done: list[int] = []
        for migration in migrations:
            if migration.version in applied:
                continue
            for statement in migration.statements:
                cur.execute(statement)
            cur.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (%s, %s, %s)",
                (migration.version, migration.name, now_ms()),
            )
            cur.connection.commit()
            done.append(migration.version)
        return done

    def schema_version(self) -> int:
        def work(cur: Any) -> int:
            cur.execute(
                "SELECT COUNT(*) FROM information_schema.tables "
                "WHERE table_schema = DATABASE() AND table_name = 'schema_migrations'"
            )
            if cur.fetchone()[0] == 0:
                return 0
            cur.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
            return int(cur.fetchone()[0])

        return self._read(work)

    def close(self) -> None:
        self._pool.close()
