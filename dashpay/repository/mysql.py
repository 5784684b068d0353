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

A Galera cluster is several nodes (``[database] url`` may name them all,
``mysql://u:p@h1:3306,h2:3306/db``): the repository's connections all go to one node
at a time, the first of the list that answers and is in the primary component
(``wsrep_ready``); a node that leaves it (error 1047, "WSREP has not yet prepared node
for application use") or stops answering makes the next unit of work reconnect to the
next node, its idle connections are dropped, and "unavailable" is said only when no
node answers. A certification conflict surfaces as a deadlock (1213) at COMMIT and is
retried like one, after one causal read (``wsrep_sync_wait``) so the rerun sees the
transaction that won. Each new connection on a wsrep node makes one causal read before
use, so after a switch of node the daemon reads everything that committed before, its
own writes through the old node included.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import pymysql

from dashpay.domain.clock import now_ms
from dashpay.domain.errors import Unavailable
from dashpay.domain.model import AttemptOutcome
from dashpay.repository.mysql_sql import (
    MAX_ATTEMPT_ROWS,
    MAX_UPDATE_ROWS,
    NO_EVENT_ROW,
    SERVER_NOW_MS,
    UPDATE_ONE_RECEIVER_FENCED,
    attempt_updates_sql,
    receiver_updates_sql,
)
from dashpay.repository.pool import Pool, close_quietly
from dashpay.repository.schema import (
    RECEIVER_UPDATE_FIELDS,
    SCHEMA_MIGRATIONS_DDL,
    UPDATE_RECEIVER,
    load_migrations,
    padded_chunks,
    plain,
    too_new_message,
    update_after_attempt,
)
from dashpay.repository.sql import SqlRepository

log = logging.getLogger("dashpay.repository.mysql")

T = TypeVar("T")

# Socket read/write timeout on a connection: longer than InnoDB's default lock wait
# (50 s) and the migration lock wait, so only a dead server or network trips it.
IO_TIMEOUT = 90
# Named advisory lock that serialises migrators across processes (MySQL DDL commits
# implicitly, so a transaction cannot do it), and how long to wait for it, in seconds.
MIGRATE_LOCK = "dashpay_migrate"
MIGRATE_LOCK_TIMEOUT = 30
# Attempts for a unit of work the server aborted (deadlock victim, a Galera
# certification conflict, lost connection before commit, a node that left the cluster).
# InnoDB and Galera document these as normal events to be retried.
MAX_ATTEMPTS = 5
# A retried conflict waits a random part of this (times the attempt) first, so two
# writers that collided do not collide again in step.
RETRY_JITTER_SECONDS = 0.005
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
ER_UNKNOWN_COM_ERROR = 1047  # Galera: "WSREP has not yet prepared node for application use"
ER_NOT_SUPPORTED_YET = 1235  # e.g. GET_LOCK refused with wsrep on (MDEV-30473)
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


def _causal_read(cur: Any) -> None:
    """One causal read (``wsrep_sync_wait``): the node applies every transaction the
    cluster committed before it returns; the session's later reads do not wait."""
    cur.execute("SET SESSION wsrep_sync_wait = 1")
    cur.execute("SELECT 1 FROM DUAL")
    cur.fetchall()
    cur.execute("SET SESSION wsrep_sync_wait = 0")


class _NodeNotReady(Exception):
    """Internal: a wsrep node answered but is not in the primary component."""


class MysqlRepository(SqlRepository):
    backend = "mysql"
    _for_update = " FOR UPDATE"
    # Same reason as SQLite's NOT INDEXED: a range on the clustered key, never an
    # index merge sorted again for every chunk of iter_pending.
    _primary_key_scan = " FORCE INDEX (PRIMARY)"
    _server_now_ms = SERVER_NOW_MS

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
        nodes: Sequence[tuple[str, int]] = (),
    ) -> None:
        if pool_size < 1:
            raise ValueError(f"pool_size must be at least 1, got {pool_size}")
        self.database = database
        # The cluster's nodes in the configured order (one for a single server); the
        # connections all go to self._nodes[self._node].
        self._nodes = list(nodes) or [(host or "localhost", port)]
        self._node = 0
        self._node_lock = threading.Lock()
        self._unix_socket = unix_socket
        self.where = self._describe_node(0)
        self.wsrep = False  # the current node runs Galera (wsrep_on)
        self._params: dict[str, Any] = {
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
        self._pool = Pool(self._connect, pool_size)
        # Connect once now: a wrong host, password or database is reported at startup,
        # not at the first request.
        self._pool.release(self._pool.acquire(), reusable=True)

    # -- connections -------------------------------------------------------------------
    def _describe_node(self, index: int) -> str:
        if self._unix_socket:
            return f"unix socket {self._unix_socket}"
        host, port = self._nodes[index]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def _connect(self) -> _Connection:
        """A connection to the current node, else to the next one of the list that
        answers and is ready (which becomes current; idle connections to the old one
        are dropped). Unavailable naming every node when none is."""
        with self._node_lock:
            start = self._node
        failures: list[tuple[int, str, Unavailable]] = []
        for step in range(len(self._nodes)):
            index = (start + step) % len(self._nodes)
            try:
                conn = self._connect_node(index)
            except Unavailable as exc:
                failures.append((index, self._describe_node(index), exc))
                continue
            if index != start:
                self._switch_node(start, index, failures[-1][2] if failures else None)
            return conn
        if len(failures) == 1:
            raise failures[0][2]
        reasons = "; ".join(
            f"{where}: {exc.details.get('reason', exc)}" for _, where, exc in failures
        )
        first = failures[0][2]
        refused = all(exc.details.get("code") == CR_CONN_HOST_ERROR for _, _, exc in failures)
        hint = "; is each server running and listening there?" if refused else ""
        raise Unavailable(
            f"cannot connect to any of the {len(failures)} MySQL nodes (database "
            f"{self.database!r}): {reasons}{hint}",
            server=", ".join(where for _, where, _ in failures),
            database=self.database,
            code=first.details.get("code"),
        )

    def _connect_node(self, index: int) -> _Connection:
        host, port = self._nodes[index]
        where = self._describe_node(index)
        params = dict(self._params, host=host, port=port)
        try:
            conn = pymysql.connect(**params)
        except pymysql.MySQLError as exc:
            raise self._unavailable("cannot connect to", exc, where=where) from None
        try:
            with conn.cursor() as cur:
                cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
                cur.execute("SET SESSION sql_mode = %s", (SQL_MODE,))
                cur.execute("SHOW VARIABLES LIKE 'wsrep_on'")
                row = cur.fetchone()
                wsrep = row is not None and str(plain(row[1])).upper() == "ON"
                if wsrep:
                    cur.execute("SHOW STATUS LIKE 'wsrep_ready'")
                    ready = cur.fetchone()
                    if ready is None or str(plain(ready[1])).upper() != "ON":
                        raise _NodeNotReady
                    # This node has applied every transaction the cluster committed
                    # before this connection, before we read anything.
                    _causal_read(cur)
            conn.commit()
        except _NodeNotReady:
            close_quietly(conn)
            raise Unavailable(
                f"cannot use MySQL at {where} (database {self.database!r}): the Galera node "
                "is not in the cluster's primary component (wsrep_ready is OFF)",
                server=where,
                database=self.database,
                code=ER_UNKNOWN_COM_ERROR,
                reason="not in the primary component (wsrep_ready OFF)",
            ) from None
        except pymysql.MySQLError as exc:
            close_quietly(conn)
            raise self._unavailable("cannot set up a session on", exc, where=where) from None
        self.wsrep = wsrep
        conn.dashpay_node = index  # type: ignore[attr-defined]
        return conn

    def _switch_node(self, old: int, new: int, why: Unavailable | None) -> None:
        with self._node_lock:
            if self._node != old:
                return  # another thread switched already
            self._node = new
            self.where = self._describe_node(new)
        log.warning(
            "database node switched from=%s to=%s reason=%s",
            self._describe_node(old),
            self.where,
            why.details.get("reason", why) if why is not None else "unknown",
        )
        self._pool.drop_idle()

    def _leave_node(self, failed: str) -> None:
        """The current node refused or lost a unit of work: the next connection tries
        the next node first (a single server is simply tried again)."""
        if len(self._nodes) == 1:
            return
        with self._node_lock:
            if self.where != failed:
                return
            old = self._node
            self._node = (old + 1) % len(self._nodes)
            self.where = self._describe_node(self._node)
        log.warning("database node left node=%s next=%s", failed, self.where)
        self._pool.drop_idle()

    def _unavailable(
        self, doing: str, exc: BaseException, *, where: str | None = None
    ) -> Unavailable:
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
        where = where or self.where
        message = f"{doing} MySQL at {where} (database {self.database!r}): {reason}"
        return Unavailable(
            f"{message}; {hint}" if hint else message,
            server=where,
            database=self.database,
            code=code,
            reason=reason,
        )

    # -- transport hooks ---------------------------------------------------------------
    def _run(self, work: Callable[[Any], T], *, write: bool, fenced: bool = False) -> T:
        attempt = 1
        causal = False
        while True:
            conn = self._pool.acquire()
            where = self.where
            reusable = False
            committing = False
            try:
                with conn.cursor() as cur:
                    if causal:
                        # A certification conflict: the transaction that won it has
                        # committed on the cluster but may not be applied on this node
                        # yet; without this wait the rerun could read what it lost to
                        # (a counter behind, an address taken twice).
                        _causal_read(cur)
                    # No BEGIN: the session runs with autocommit off, so its first
                    # statement after the previous COMMIT (or ROLLBACK) opens the
                    # transaction; an explicit BEGIN was one more round trip per unit.
                    result = work(cur)
                    if fenced:
                        self._fence(cur)
                    committing = True
                    conn.commit()
                reusable = True
                return result
            except (pymysql.OperationalError, pymysql.InterfaceError) as exc:
                code = _error_code(exc)
                left = code == ER_UNKNOWN_COM_ERROR or _lost_connection(exc)
                if left:
                    self._leave_node(where)
                aborted = code in _ROLLED_BACK or (left and not committing)
                if aborted and attempt < MAX_ATTEMPTS:
                    log.warning("mysql retry attempt=%d code=%s server=%s", attempt, code, where)
                    if code in _ROLLED_BACK:
                        time.sleep(random.uniform(0, RETRY_JITTER_SECONDS * attempt))
                        causal = self.wsrep
                    attempt += 1
                    continue
                doing = "lost the connection while committing to" if committing else "cannot use"
                raise self._unavailable(doing, exc, where=where) from None
            except pymysql.ProgrammingError as exc:
                reusable = self._rollback(conn)
                if _error_code(exc) == ER_NO_SUCH_TABLE:
                    raise self._unavailable("cannot use", exc) from None
                raise
            except BaseException:
                reusable = self._rollback(conn)
                raise
            finally:
                # A connection to a node we have since left goes: after a switch every
                # connection is a fresh one (its causal read covers the old node's writes).
                reusable = reusable and getattr(conn, "dashpay_node", 0) == self._node
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

    def _write(self, work: Callable[[Any], T], *, fenced: bool = True) -> T:
        return self._run(work, write=True, fenced=fenced)

    def _execute(self, cursor: Any, sql: str, params: Sequence[Any] = ()) -> Any:
        if not params:
            cursor.execute(sql)  # PyMySQL formats (and needs "%" doubled) only with args
            return cursor
        cursor.execute(self._pyformat(sql), tuple(params))
        return cursor

    def _write_receiver_updates(
        self, cur: Any, updates: Sequence[tuple[int, Any]], *, fence: bool = False
    ) -> bool:
        # One statement per chunk instead of one per receiver: a round trip each saved.
        # With ``fence`` the first statement is the fence too: a lone payment is then
        # four statements (SELECT, payment INSERT, this UPDATE, outbox INSERT) + COMMIT.
        lease = self.fence if fence else None
        if len(updates) == 1:
            [(rid, update)] = updates
            values = [getattr(update, name) for name in RECEIVER_UPDATE_FIELDS]
            if lease is None:
                self._execute(cur, UPDATE_RECEIVER, [*values, rid])
                return False
            params = [lease.wallet_id, lease.owner, lease.epoch, *values, lease.lease_ms, rid]
            if self._execute(cur, UPDATE_ONE_RECEIVER_FENCED, params).rowcount < 1:
                raise self._lease_lost(lease)
            self.fence_renewed_at = time.monotonic()
            return True
        folded = False
        for chunk in padded_chunks(updates, MAX_UPDATE_ROWS):
            params: list[Any] = []
            for rid, update in chunk:  # a repeated last row sets the same values again
                params.append(rid)
                params.extend(getattr(update, name) for name in RECEIVER_UPDATE_FIELDS)
            if lease is None:
                self._execute(cur, receiver_updates_sql(len(chunk)), params)
                continue
            params += (lease.wallet_id, lease.owner, lease.epoch, lease.lease_ms)
            if self._execute(cur, receiver_updates_sql(len(chunk), True), params).rowcount < 1:
                raise self._lease_lost(lease)
            self.fence_renewed_at = time.monotonic()
            folded, lease = True, None
        return folded

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
        for chunk in padded_chunks(list(folded.values()), MAX_ATTEMPT_ROWS, NO_EVENT_ROW):
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
            try:
                cur.execute("SELECT GET_LOCK(%s, %s)", (MIGRATE_LOCK, MIGRATE_LOCK_TIMEOUT))
            except pymysql.MySQLError as exc:
                if _error_code(exc) != ER_NOT_SUPPORTED_YET:
                    raise
                # A Galera build that refuses GET_LOCK: DDL runs in total order on
                # the cluster anyway; migrate from one place at a time (operations.md).
                log.warning("migration lock unavailable here (wsrep); migrating without it")
                return self._apply(cur, migrations, known)
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
