"""What the two SQL backends share, below the units of work: the versioned schema
(migrations), the SQL text of the shared statements, row mapping and the storage limits.

SQLite and MySQL differ in how they connect, lock and run DDL, not in what a receiver
row means. The queries are written once with ``?`` placeholders (the MySQL backend
rewrites them to ``%s``), so the contract tests prove the same SQL on both databases.
The units of work built on them: ``sql.SqlRepository`` (receivers, reads, settings,
``transaction``), ``transaction.SqlTransaction`` (the payment write path the engine
drives) and ``outbox.OutboxMixin`` (callback delivery state).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields, replace
from operator import attrgetter
from pathlib import Path
from typing import Any, TypeVar

from dashpay.domain.errors import InvalidParams, Unavailable
from dashpay.domain.limits import MAX_LIST_LIMIT
from dashpay.domain.model import (
    AttemptOutcome,
    CallbackAttempt,
    CallbackRecord,
    OutboxEvent,
    Payment,
    Receiver,
    ReceiverUpdate,
)
from dashpay.domain.status import (
    FINAL_STATUSES,
    OUTBOX_DELIVERED,
    OUTBOX_PENDING,
    OUTBOX_STATUSES,
    STATUSES,
)
from dashpay.repository.base import MAX_CREATE_BATCH

T = TypeVar("T")

NOT_FINAL_STATUSES = tuple(s for s in STATUSES if s not in FINAL_STATUSES)
# Pending receivers read per query by iter_pending: large enough that the per-query
# cost vanishes (100 queries for 1M receivers), small enough that a chunk of rows is
# ~2 MB on its way through the driver instead of ~1 GB for the whole table at once.
PENDING_CHUNK = 10_000

# Ids per "IN (...)" list. SQLite before 3.32 allowed only 999 bound parameters per
# statement; 512 stays under that with room to spare, and a batch of the engine's target
# size (~100 receivers) needs one statement.
MAX_IN_LIST = 512
# block_height and confirmations are INT UNSIGNED in MySQL; refuse what would not fit
# rather than let the two backends disagree.
MAX_UNSIGNED_INT = 2**32 - 1
# callback_outbox.event_id (MAX_EVENT_ID_CHARS, domain/limits.py) and .event are
# VARCHAR(64).
MAX_EVENT_NAME_CHARS = 64
# A callback body is a few KiB. 1 MiB keeps a runaway payload out of the outbox and far
# below MySQL's max_allowed_packet (16 MiB on MariaDB, 64 MiB on MySQL 8).
MAX_PAYLOAD_BYTES = 1024 * 1024
# An attempt's error text (an exception message, or a status line with an excerpt of the
# response body) is for people reading `callbacks show`; 500 characters say what
# happened without letting a hostile endpoint fill the attempts table.
MAX_ATTEMPT_ERROR_CHARS = 500
# `callbacks show` lists this many of an event's newest attempts. The retry policy makes
# about 80 attempts in 3 days; more means many manual retries, and the newest matter.
MAX_ATTEMPTS_SHOWN = 1000
_TXID = re.compile(r"[0-9a-f]{64}")
_SHOW_CHARS = 80  # how much of a bad value an error message quotes

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


# A directory of the package, read as files: importlib.resources would import zipfile
# (0.4 MB held by every daemon) for a package that is never zipped.
MIGRATIONS_DIR = Path(__file__).with_name("migrations")


def load_migrations(dialect: str) -> tuple[Migration, ...]:
    """Every migration for ``dialect``, in version order, read from the package data
    files ``migrations/NNNN_name.<dialect>.sql``. Versions must be 1, 2, 3, ... and
    each must exist for both dialects, so the two backends never drift apart."""
    if dialect not in DIALECTS:
        raise ValueError(f"unknown SQL dialect {dialect!r}")
    folder = MIGRATIONS_DIR
    found: dict[str, dict[int, tuple[str, Any]]] = {d: {} for d in DIALECTS}
    for entry in folder.iterdir():
        match = _MIGRATION_FILE.match(entry.name)
        if match is not None:
            version, name, file_dialect = int(match[1]), match[2], match[3]
            taken = found[file_dialect].get(version)
            if taken is not None:  # two branches that each added "the next" migration
                raise RuntimeError(
                    f"dashpay migration {version} for {file_dialect} exists twice: "
                    f"{taken[0]!r} and {name!r}; renumber one of them"
                )
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

# The receivers and payments columns read back, in the order of the row types' fields:
# a row is turned into its dataclass positionally (see receiver_from_row).
RECEIVER_COLUMNS = tuple(f.name for f in fields(Receiver))
PAYMENT_COLUMNS = tuple(f.name for f in fields(Payment))
OUTBOX_COLUMNS = (
    "event_id",
    "receiver_id",
    "event",
    "payload",
    "status",
    "attempts",
    "next_attempt_at",
    "created_at",
    "delivered_at",
    "last_error",
)
# Columns of NewReceiver, in insert order (everything else starts at a fixed value).
NEW_RECEIVER_FIELDS = (
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
    "redirect_url",
    "public_token",
)

SELECT_RECEIVER = f"SELECT {', '.join(RECEIVER_COLUMNS)} FROM receivers"
SELECT_PAYMENT = f"SELECT {', '.join(PAYMENT_COLUMNS)} FROM payments"
# Receivers with their payments, one row per payment (one with NULLs for a receiver
# that has none): the payment unit of work reads both with one statement.
SELECT_RECEIVER_PAYMENTS = (
    "SELECT "
    + ", ".join(f"r.{name}" for name in RECEIVER_COLUMNS)
    + ", "
    + ", ".join(f"p.{name}" for name in PAYMENT_COLUMNS)
    + " FROM receivers r LEFT JOIN payments p ON p.receiver_id = r.receiver_id"
)
SELECT_OUTBOX = f"SELECT {', '.join(OUTBOX_COLUMNS)} FROM callback_outbox"
# An outbox row with its receiver's wallet and callback URL (CallbackRecord).
SELECT_CALLBACK = (
    "SELECT o.seq, "
    + ", ".join(f"o.{name}" for name in OUTBOX_COLUMNS)
    + ", r.wallet_id, r.callback_url, o.first_attempt_at"
    " FROM callback_outbox o JOIN receivers r ON r.receiver_id = o.receiver_id"
)
# The receiver's head: its oldest pending event. Only a head is ever delivered.
IS_HEAD = (
    "o.seq = (SELECT MIN(h.seq) FROM callback_outbox h"
    " WHERE h.receiver_id = o.receiver_id AND h.status = ?)"
)
ATTEMPT_COLUMNS = ("attempt_id", "event_id", "attempted_at", "http_status", "error", "duration_ms")
INSERT_PAYMENT = (
    "INSERT INTO payments (receiver_id, txid, address, amount_duffs, instant_locked,"
    " block_height, confirmations, dropped, first_seen_at, updated_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?, ?)"
)
UPDATE_PAYMENT = (
    "UPDATE payments SET instant_locked = ?, block_height = ?, confirmations = ?, dropped = ?,"
    " missing_since = ?, updated_at = ? WHERE payment_id = ?"
)

RECEIVER_UPDATE_FIELDS = tuple(f.name for f in fields(ReceiverUpdate))  # in write order
UPDATE_RECEIVER = (
    f"UPDATE receivers SET {', '.join(f'{name} = ?' for name in RECEIVER_UPDATE_FIELDS)}"
    " WHERE receiver_id = ?"
)
INSERT_EVENT = (
    "INSERT INTO callback_outbox (event_id, receiver_id, event, payload, status, attempts,"
    " next_attempt_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)  # only placeholders in VALUES: PyMySQL turns an executemany into one multi-row INSERT
INSERT_ATTEMPT = (
    "INSERT INTO callback_attempts (event_id, attempted_at, http_status, error,"
    " duration_ms) VALUES (?, ?, ?, ?, ?)"
)
UPDATE_AFTER_ATTEMPT = (
    "UPDATE callback_outbox SET attempts = attempts + 1, status = ?,"
    " next_attempt_at = COALESCE(?, next_attempt_at), delivered_at = ?,"
    " last_error = ?, first_attempt_at = COALESCE(first_attempt_at, ?)"
    " WHERE event_id = ?"
)
INSERT_RECEIVER = (
    "INSERT INTO receivers ("
    + ", ".join(("hd_index", "address", "status", "updated_at", *NEW_RECEIVER_FIELDS))
    + ") VALUES ("
    + ", ".join("?" * (4 + len(NEW_RECEIVER_FIELDS)))
    + ")"
)


@functools.lru_cache(maxsize=MAX_CREATE_BATCH)
def insert_receivers_sql(count: int) -> str:
    """One INSERT of ``count`` receiver rows (one statement: one round trip on MySQL)."""
    row = "(" + ", ".join("?" * (4 + len(NEW_RECEIVER_FIELDS))) + ")"
    return INSERT_RECEIVER.split(" VALUES ")[0] + " VALUES " + ", ".join([row] * count)


def plain(value: Any) -> Any:
    """Text as ``str`` even if a driver hands back ``bytes`` (binary column types)."""
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8")
    return value


# Positions of the 0/1 columns that become bools.
_OVERPAID_AT, _LATE_AT = (RECEIVER_COLUMNS.index(name) for name in ("overpaid", "late"))
_LOCKED_AT, _DROPPED_AT = (PAYMENT_COLUMNS.index(name) for name in ("instant_locked", "dropped"))


def receiver_from_row(row: Sequence[Any]) -> Receiver:
    """A receiver from a row of ``RECEIVER_COLUMNS``, whatever the driver returns text as."""
    values = [plain(value) for value in row]
    values[_OVERPAID_AT] = bool(values[_OVERPAID_AT])
    values[_LATE_AT] = bool(values[_LATE_AT])
    return Receiver(*values)


def receiver_from_text_row(row: Sequence[Any]) -> Receiver:
    """``receiver_from_row`` for a driver that returns text as ``str`` (sqlite3): the
    engine reads a batch of receivers per unit of work, so the per-row cost counts."""
    values = list(row)
    values[_OVERPAID_AT] = bool(values[_OVERPAID_AT])
    values[_LATE_AT] = bool(values[_LATE_AT])
    return Receiver(*values)


def payment_from_row(row: Sequence[Any]) -> Payment:
    values = [plain(value) for value in row]
    values[_LOCKED_AT] = bool(values[_LOCKED_AT])
    values[_DROPPED_AT] = bool(values[_DROPPED_AT])
    return Payment(*values)


def payment_from_text_row(row: Sequence[Any]) -> Payment:
    values = list(row)
    values[_LOCKED_AT] = bool(values[_LOCKED_AT])
    values[_DROPPED_AT] = bool(values[_DROPPED_AT])
    return Payment(*values)


def outbox_from_row(row: Sequence[Any]) -> OutboxEvent:
    return OutboxEvent(**{n: plain(v) for n, v in zip(OUTBOX_COLUMNS, row, strict=True)})


def callback_from_row(row: Sequence[Any]) -> CallbackRecord:
    width = len(OUTBOX_COLUMNS)
    seq, outbox, rest = row[0], row[1 : width + 1], row[width + 1 :]
    wallet_id, callback_url, first_attempt_at = (plain(value) for value in rest)
    return CallbackRecord(
        seq=int(seq),
        event=outbox_from_row(outbox),
        wallet_id=wallet_id,
        callback_url=callback_url,
        first_attempt_at=first_attempt_at,
    )


def attempt_from_row(row: Sequence[Any]) -> CallbackAttempt:
    return CallbackAttempt(**{n: plain(v) for n, v in zip(ATTEMPT_COLUMNS, row, strict=True)})


def check_outcome(outcome: object) -> AttemptOutcome:
    """An attempt outcome fit to store (a wrong one is a bug in the sender: ValueError);
    the error text is cut to ``MAX_ATTEMPT_ERROR_CHARS``."""
    if not isinstance(outcome, AttemptOutcome):
        raise ValueError(f"expected an AttemptOutcome, got {show(outcome)}")
    if outcome.status not in OUTBOX_STATUSES:
        raise ValueError(f"unknown callback status {show(outcome.status)}")
    if not is_int(outcome.attempted_at, 0, 2**63 - 1):
        raise ValueError(f"attempted_at {show(outcome.attempted_at)} is not epoch milliseconds")
    if outcome.status == OUTBOX_PENDING and not is_int(outcome.next_attempt_at, 0, 2**63 - 1):
        raise ValueError("a retried attempt needs next_attempt_at (epoch milliseconds)")
    if outcome.http_status is not None and not is_int(outcome.http_status, 100, 999):
        raise ValueError(f"http_status {show(outcome.http_status)} is not an HTTP status")
    if not is_int(outcome.duration_ms, 0, 2**63 - 1):
        raise ValueError(f"duration_ms {show(outcome.duration_ms)} is not a duration")
    error = outcome.error
    if error is not None and len(error) > MAX_ATTEMPT_ERROR_CHARS:
        error = error[: MAX_ATTEMPT_ERROR_CHARS - 3] + "..."
    elif outcome.duration_ms <= MAX_UNSIGNED_INT:
        return outcome  # the usual case: fit to store as it is, no copy
    return replace(outcome, error=error, duration_ms=min(outcome.duration_ms, MAX_UNSIGNED_INT))


def attempt_row(event_id: str, outcome: AttemptOutcome) -> tuple[Any, ...]:
    """Parameters of ``INSERT_ATTEMPT``."""
    return (event_id, outcome.attempted_at, outcome.http_status, outcome.error, outcome.duration_ms)


def update_after_attempt(event_id: str, outcome: AttemptOutcome) -> tuple[Any, ...]:
    """Parameters of ``UPDATE_AFTER_ATTEMPT``: the event's state after the attempt."""
    delivered = outcome.status == OUTBOX_DELIVERED
    return (
        outcome.status,
        outcome.next_attempt_at if outcome.status == OUTBOX_PENDING else None,
        outcome.attempted_at + outcome.duration_ms if delivered else None,
        outcome.error,
        outcome.attempted_at,
        event_id,
    )


def padded_chunks(items: Sequence[T], limit: int, pad: T | None = None) -> Iterator[list[T]]:
    """``items`` in chunks of at most ``limit``, in order, each padded to a power of two
    so that statements built from a chunk's length come in few distinct texts. The
    padding repeats the chunk's last item (only for statements where a repeated item
    changes nothing), or is ``pad`` when given (an item that matches nothing)."""
    for start in range(0, len(items), limit):
        chunk = list(items[start : start + limit])
        size = 1
        while size < len(chunk):
            size *= 2
        chunk += [chunk[-1] if pad is None else pad] * (size - len(chunk))
        yield chunk


def in_lists(ids: Sequence[Any]) -> Iterator[tuple[str, list[Any]]]:
    """``ids`` (sorted) as ``("?, ?, ...", params)`` chunks for ``IN (...)``, in order,
    padded (``padded_chunks``; a repeated id is harmless in an IN list)."""
    for chunk in padded_chunks(ids, MAX_IN_LIST):
        yield ", ".join("?" * len(chunk)), chunk


def show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _SHOW_CHARS else text[: _SHOW_CHARS - 3] + "..."


def is_int(value: object, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def check_limit(limit: object) -> None:
    if not is_int(limit, 1, MAX_LIST_LIMIT):
        raise InvalidParams(f"limit must be an integer from 1 to {MAX_LIST_LIMIT}, got {limit!r}")


def where_clause(filters: Sequence[tuple[str, Any]]) -> tuple[str, list[Any]]:
    """A WHERE clause of the filters whose value is not None, and its parameters."""
    used = [(condition, value) for condition, value in filters if value is not None]
    if not used:
        return "", []
    return " WHERE " + " AND ".join(c for c, _ in used), [v for _, v in used]


def closed_error(backend: str) -> Unavailable:
    return Unavailable(f"the {backend} repository is closed")


# A ReceiverUpdate's values in RECEIVER_UPDATE_FIELDS order (positional: it runs once per
# updated receiver of every batch).
update_values = attrgetter(*RECEIVER_UPDATE_FIELDS)
