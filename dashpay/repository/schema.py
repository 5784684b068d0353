"""What the two SQL backends share: the versioned schema, row mapping, and the
dialect-neutral units of work.

SQLite and MySQL differ in how they connect, lock and run DDL, not in what a receiver
row means. Keeping the queries here (written with ``?`` placeholders; the MySQL
backend rewrites them to ``%s``) gives one definition of every unit of work, so the
contract tests prove the same code on both databases. A backend supplies connections
and transactions (``_read`` / ``_write``), the row-locking suffix, the "insert unless
present" statement and how to recognise a unique-key violation.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from importlib import resources
from typing import Any, TypeVar

from dashpay.errors import Conflict, InvalidParams, NotFound, Unavailable
from dashpay.repository.base import (
    CANCELLABLE_STATUSES,
    CANCELLED,
    FINAL_STATUSES,
    PENDING,
    STATUSES,
    NewReceiver,
    Payment,
    Receiver,
)

T = TypeVar("T")

# Same bound as the control protocol's receiver.list (dashpay.params.MAX_LIST_LIMIT): a
# page larger than this belongs in an export. Repeated here because the repository
# layer must not import the request-parsing layer above it.
MAX_LIST_LIMIT = 1000

NOT_FINAL_STATUSES = tuple(s for s in STATUSES if s not in FINAL_STATUSES)

# -- migrations ------------------------------------------------------------------------

DIALECTS = ("sqlite", "mysql")
_MIGRATION_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.(sqlite|mysql)\.sql$")
# A statement ends with ";" at the end of a line; our migration files keep semicolons
# out of string literals and comments so this split is exact.
_STATEMENT_END = re.compile(r";[ \t]*(?:\n|$)")

SCHEMA_MIGRATIONS_DDL = {
    "sqlite": (
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version INTEGER NOT NULL PRIMARY KEY,"
        " name TEXT NOT NULL,"
        " applied_at INTEGER NOT NULL)"
    ),
    "mysql": (
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version INT NOT NULL PRIMARY KEY,"
        " name VARCHAR(100) NOT NULL,"
        " applied_at BIGINT NOT NULL"
        ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin ROW_FORMAT=DYNAMIC"
    ),
}


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


def split_statements(script: str) -> tuple[str, ...]:
    """The statements of a migration file, without ``--`` comment lines."""
    lines = [line for line in script.splitlines() if not line.lstrip().startswith("--")]
    text = "\n".join(lines)
    return tuple(s.strip() for s in _STATEMENT_END.split(text) if s.strip())


def load_migrations(dialect: str) -> tuple[Migration, ...]:
    """Every migration for ``dialect``, in version order, read from the package data
    files ``migrations/NNNN_name.<dialect>.sql``. Versions must be 1, 2, 3, ... and
    each must exist for both dialects, so the two backends never drift apart."""
    if dialect not in DIALECTS:
        raise ValueError(f"unknown SQL dialect {dialect!r}")
    folder = resources.files("dashpay.repository") / "migrations"
    found: dict[str, dict[int, tuple[str, Any]]] = {d: {} for d in DIALECTS}
    for entry in folder.iterdir():
        match = _MIGRATION_FILE.match(entry.name)
        if match is not None:
            version, name, file_dialect = int(match[1]), match[2], match[3]
            found[file_dialect][version] = (name, entry)
    versions = sorted(found[dialect])
    if versions != list(range(1, len(versions) + 1)):
        raise RuntimeError(f"dashpay migrations for {dialect} are not numbered 1..N: {versions}")
    for version in versions:
        other = [
            d for d in DIALECTS if found[d].get(version, (None,))[0] != found[dialect][version][0]
        ]
        if other:
            raise RuntimeError(
                f"dashpay migration {version} is missing or named differently for {other}"
            )
    return tuple(
        Migration(v, found[dialect][v][0], split_statements(found[dialect][v][1].read_text()))
        for v in versions
    )


def too_new_message(database_version: int, known_version: int) -> str:
    return (
        f"database schema version {database_version} is newer than this dashpay "
        f"({known_version}); upgrade dashpay"
    )


# -- row mapping ---------------------------------------------------------------------

RECEIVER_COLUMNS = (
    "receiver_id",
    "wallet_id",
    "chain",
    "hd_index",
    "address",
    "amount_duffs",
    "received_duffs",
    "status",
    "overpaid",
    "late",
    "created_at",
    "updated_at",
    "expires_at",
    "paid_at",
    "settled_at",
    "closed_at",
    "fiat_amount",
    "fiat_currency",
    "rate",
    "rate_provider",
    "rate_fetched_at",
    "callback_url",
    "description",
    "username",
    "idempotency_key",
)
PAYMENT_COLUMNS = (
    "payment_id",
    "receiver_id",
    "txid",
    "address",
    "amount_duffs",
    "instant_locked",
    "block_height",
    "confirmations",
    "dropped",
    "first_seen_at",
    "updated_at",
)
_RECEIVER_BOOLS = frozenset({"overpaid", "late"})
_PAYMENT_BOOLS = frozenset({"instant_locked", "dropped"})
# Columns of NewReceiver, in insert order (everything else starts at a fixed value).
_NEW_RECEIVER_FIELDS = (
    "wallet_id",
    "chain",
    "amount_duffs",
    "created_at",
    "expires_at",
    "fiat_amount",
    "fiat_currency",
    "rate",
    "rate_provider",
    "rate_fetched_at",
    "callback_url",
    "description",
    "username",
    "idempotency_key",
)

_SELECT_RECEIVER = f"SELECT {', '.join(RECEIVER_COLUMNS)} FROM receivers"
_SELECT_PAYMENT = f"SELECT {', '.join(PAYMENT_COLUMNS)} FROM payments"
_INSERT_RECEIVER = (
    "INSERT INTO receivers ("
    + ", ".join(("hd_index", "address", "status", "updated_at", *_NEW_RECEIVER_FIELDS))
    + ") VALUES ("
    + ", ".join("?" * (4 + len(_NEW_RECEIVER_FIELDS)))
    + ")"
)


def _plain(value: Any) -> Any:
    """Text as ``str`` even if a driver hands back ``bytes`` (binary column types)."""
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8")
    return value


def receiver_from_row(row: Sequence[Any]) -> Receiver:
    values = {
        name: bool(value) if name in _RECEIVER_BOOLS else _plain(value)
        for name, value in zip(RECEIVER_COLUMNS, row, strict=True)
    }
    return Receiver(**values)


def payment_from_row(row: Sequence[Any]) -> Payment:
    values = {
        name: bool(value) if name in _PAYMENT_BOOLS else _plain(value)
        for name, value in zip(PAYMENT_COLUMNS, row, strict=True)
    }
    return Payment(**values)


# -- the shared units of work --------------------------------------------------------


class DuplicateAddress(Exception):
    """Internal: the derived address already belongs to another receiver."""


class SqlRepository:
    """The ``Repository`` interface written once over DB-API cursors. Subclasses
    provide the transport; see the module docstring for the hooks."""

    backend: str
    # Appended to a SELECT that must lock the rows it reads until commit.
    _for_update: str = ""

    # Hooks -----------------------------------------------------------------------
    def _read(self, work: Callable[[Any], T]) -> T:
        """Run ``work(cursor)`` as a read-only unit of work."""
        raise NotImplementedError

    def _write(self, work: Callable[[Any], T]) -> T:
        """Run ``work(cursor)`` in one write transaction: commit if it returns, roll
        back and re-raise if it raises."""
        raise NotImplementedError

    def _execute(self, cursor: Any, sql: str, params: Sequence[Any] = ()) -> Any:
        cursor.execute(sql, tuple(params))
        return cursor

    def _insert_if_absent_sql(self, table: str, columns: Sequence[str], key: Sequence[str]) -> str:
        """An INSERT of ``columns`` that does nothing when ``key`` already exists."""
        raise NotImplementedError

    def _is_unique_violation(self, exc: BaseException) -> bool:
        raise NotImplementedError

    # Counters --------------------------------------------------------------------
    def ensure_counter(self, wallet_id: str, chain: int) -> None:
        self._write(lambda cur: self._create_counter(cur, wallet_id, chain))

    def next_index(self, wallet_id: str, chain: int) -> int:
        def work(cur: Any) -> int:
            self._execute(
                cur,
                "SELECT next_index FROM hd_counters WHERE wallet_id = ? AND chain = ?",
                (wallet_id, chain),
            )
            row = cur.fetchone()
            return 0 if row is None else int(row[0])

        return self._read(work)

    def _create_counter(self, cur: Any, wallet_id: str, chain: int) -> None:
        sql = self._insert_if_absent_sql(
            "hd_counters", ("wallet_id", "chain", "next_index"), ("wallet_id", "chain")
        )
        self._execute(cur, sql, (wallet_id, chain, 0))

    def _lock_counter(self, cur: Any, wallet_id: str, chain: int) -> int:
        """The counter's value, locked until the transaction ends (created at 0 if
        missing)."""
        sql = (
            "SELECT next_index FROM hd_counters WHERE wallet_id = ? AND chain = ?"
            + self._for_update
        )
        row = self._execute(cur, sql, (wallet_id, chain)).fetchone()
        if row is None:
            self._create_counter(cur, wallet_id, chain)
            row = self._execute(cur, sql, (wallet_id, chain)).fetchone()
        return int(row[0])

    # Receivers -------------------------------------------------------------------
    def create_receiver(
        self, new: NewReceiver, derive_address: Callable[[int], str]
    ) -> tuple[Receiver, bool]:
        key = new.idempotency_key

        def work(cur: Any) -> tuple[Receiver, bool]:
            # Lock the counter first: a concurrent caller with the same key and wallet
            # waits here, then sees the winner's committed row in the check below.
            index = self._lock_counter(cur, new.wallet_id, new.chain)
            if key is not None:
                existing = self._receiver_where(cur, "idempotency_key = ?", key)
                if existing is not None:
                    return existing, False
            address = derive_address(index)
            values = [index, address, PENDING, new.created_at]
            values += [getattr(new, name) for name in _NEW_RECEIVER_FIELDS]
            try:
                self._execute(cur, _INSERT_RECEIVER, values)
            except Exception as exc:
                if not self._is_unique_violation(exc):
                    raise
                # The statement failed, the transaction did not. Either another
                # wallet's creator committed the same idempotency key first (return its
                # row like any repeated request), or the address is taken.
                if key is not None:
                    winner = self._receiver_where(cur, "idempotency_key = ?", key)
                    if winner is not None:
                        return winner, False
                raise DuplicateAddress(address, index) from exc
            receiver_id = int(cur.lastrowid)
            self._execute(
                cur,
                "UPDATE hd_counters SET next_index = ? WHERE wallet_id = ? AND chain = ?",
                (index + 1, new.wallet_id, new.chain),
            )
            receiver = Receiver(
                receiver_id=receiver_id,
                hd_index=index,
                address=address,
                received_duffs=0,
                status=PENDING,
                overpaid=False,
                late=False,
                updated_at=new.created_at,
                paid_at=None,
                settled_at=None,
                closed_at=None,
                **{name: getattr(new, name) for name in _NEW_RECEIVER_FIELDS},
            )
            return receiver, True

        try:
            return self._write(work)
        except DuplicateAddress as exc:
            address, index = exc.args
            raise Conflict(
                f"address {address} (HD index {index} of wallet {new.wallet_id} chain "
                f"{new.chain}) is already used by another receiver: the HD counter is behind "
                "the receivers table; set hd_counters.next_index past the highest used index",
                address=address,
                hd_index=index,
            ) from None

    def get_receiver(self, receiver_id: int) -> Receiver | None:
        return self._read(lambda cur: self._receiver_where(cur, "receiver_id = ?", receiver_id))

    def _receiver_where(
        self, cur: Any, condition: str, value: Any, *, lock: bool = False
    ) -> Receiver | None:
        sql = f"{_SELECT_RECEIVER} WHERE {condition}" + (self._for_update if lock else "")
        row = self._execute(cur, sql, (value,)).fetchone()
        return None if row is None else receiver_from_row(row)

    def list_receivers(
        self,
        *,
        wallet_id: str | None = None,
        status: str | None = None,
        limit: int = 50,
        before_id: int | None = None,
    ) -> list[Receiver]:
        if (
            isinstance(limit, bool)
            or not isinstance(limit, int)
            or not 1 <= limit <= MAX_LIST_LIMIT
        ):
            raise InvalidParams(
                f"limit must be an integer from 1 to {MAX_LIST_LIMIT}, got {limit!r}"
            )
        if status is not None and status not in STATUSES:
            raise InvalidParams(f"unknown status {status!r}; one of {', '.join(STATUSES)}")
        conditions: list[str] = []
        params: list[Any] = []
        for condition, value in (
            ("wallet_id = ?", wallet_id),
            ("status = ?", status),
            ("receiver_id < ?", before_id),
        ):
            if value is not None:
                conditions.append(condition)
                params.append(value)
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        sql = f"{_SELECT_RECEIVER}{where} ORDER BY receiver_id DESC LIMIT ?"
        params.append(limit)
        return self._read(lambda cur: _receivers(self._execute(cur, sql, params)))

    def cancel_receiver(self, receiver_id: int, now: int) -> Receiver:
        def work(cur: Any) -> Receiver:
            receiver = self._receiver_where(cur, "receiver_id = ?", receiver_id, lock=True)
            if receiver is None:
                raise NotFound(f"no receiver with id {receiver_id}", receiver_id=receiver_id)
            if receiver.status == CANCELLED:
                return receiver
            if receiver.status not in CANCELLABLE_STATUSES:
                raise Conflict(
                    f"receiver {receiver_id} is {receiver.status} and can no longer be "
                    "cancelled (only pending or partial receivers can)",
                    receiver_id=receiver_id,
                    status=receiver.status,
                )
            self._execute(
                cur,
                "UPDATE receivers SET status = ?, closed_at = ?, updated_at = ? "
                "WHERE receiver_id = ?",
                (CANCELLED, now, now, receiver_id),
            )
            return replace(receiver, status=CANCELLED, closed_at=now, updated_at=now)

        return self._write(work)

    def load_pending(self, wallet_id: str, now: int, monitor_window: int) -> list[Receiver]:
        marks = ", ".join("?" * len(NOT_FINAL_STATUSES))
        sql = (
            f"{_SELECT_RECEIVER} WHERE wallet_id = ? AND (status IN ({marks}) OR closed_at >= ?)"
            " ORDER BY receiver_id"
        )
        params = (wallet_id, *NOT_FINAL_STATUSES, now - monitor_window)
        return self._read(lambda cur: _receivers(self._execute(cur, sql, params)))

    def count_by_status(self, wallet_id: str) -> dict[str, int]:
        sql = "SELECT status, COUNT(*) FROM receivers WHERE wallet_id = ? GROUP BY status"
        rows = self._read(lambda cur: self._execute(cur, sql, (wallet_id,)).fetchall())
        counts = dict.fromkeys(STATUSES, 0)
        counts.update({_plain(status): int(count) for status, count in rows})
        return counts

    def list_payments(self, receiver_id: int) -> list[Payment]:
        sql = f"{_SELECT_PAYMENT} WHERE receiver_id = ? ORDER BY first_seen_at, payment_id"
        rows = self._read(lambda cur: self._execute(cur, sql, (receiver_id,)).fetchall())
        return [payment_from_row(row) for row in rows]

    # Settings --------------------------------------------------------------------
    def get_setting(self, name: str) -> str | None:
        sql = "SELECT value FROM settings WHERE name = ?"
        row = self._read(lambda cur: self._execute(cur, sql, (name,)).fetchone())
        return None if row is None else _plain(row[0])

    def set_setting_if_absent(self, name: str, value: str) -> str:
        insert = self._insert_if_absent_sql("settings", ("name", "value"), ("name",))

        def work(cur: Any) -> str:
            self._execute(cur, insert, (name, value))
            row = self._execute(cur, "SELECT value FROM settings WHERE name = ?", (name,))
            return _plain(row.fetchone()[0])

        return self._write(work)


def _receivers(cursor: Any) -> list[Receiver]:
    return [receiver_from_row(row) for row in cursor.fetchall()]


def closed_error(backend: str) -> Unavailable:
    return Unavailable(f"the {backend} repository is closed")
