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

import functools
import logging
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields, replace
from importlib import resources
from operator import attrgetter
from typing import Any, TypeVar

from dashpay.domain.errors import Conflict, DashpayError, InvalidParams, NotFound, Unavailable
from dashpay.domain.model import (
    AttemptOutcome,
    CallbackAttempt,
    CallbackBacklog,
    CallbackRecord,
    NewEvent,
    NewReceiver,
    OutboxEvent,
    Payment,
    PaymentChange,
    PaymentObservation,
    PendingRow,
    Receiver,
    ReceiverResult,
    ReceiverUpdate,
    ReceiverWork,
    apply_update,
)
from dashpay.domain.money import MAX_DUFFS
from dashpay.domain.status import (
    CANCELLABLE_STATUSES,
    CANCELLED,
    CHANGE_DROPPED,
    CHANGE_NEW,
    CHANGE_RESTORED,
    CHANGE_UNCHANGED,
    CHANGE_UPDATED,
    FINAL_STATUSES,
    OUTBOX_DELIVERED,
    OUTBOX_FAILED,
    OUTBOX_PENDING,
    OUTBOX_STATUSES,
    PENDING,
    STATUSES,
)
from dashpay.repository.base import MAX_CREATE_BATCH, Decide
from dashpay.repository.prices import PriceCacheMixin

log = logging.getLogger("dashpay.repository")

T = TypeVar("T")

# Same bound as the control protocol's receiver.list (dashpay.params.MAX_LIST_LIMIT): a
# page larger than this belongs in an export. Repeated here because the repository
# layer must not import the request-parsing layer above it.
MAX_LIST_LIMIT = 1000

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
# callback_outbox.event_id and .event are VARCHAR(64).
MAX_EVENT_ID_CHARS = 64
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
_SELECT_OUTBOX = f"SELECT {', '.join(OUTBOX_COLUMNS)} FROM callback_outbox"
# An outbox row with its receiver's wallet and callback URL (CallbackRecord).
_SELECT_CALLBACK = (
    "SELECT o.seq, "
    + ", ".join(f"o.{name}" for name in OUTBOX_COLUMNS)
    + ", r.wallet_id, r.callback_url, o.first_attempt_at"
    " FROM callback_outbox o JOIN receivers r ON r.receiver_id = o.receiver_id"
)
# The receiver's head: its oldest pending event. Only a head is ever delivered.
_IS_HEAD = (
    "o.seq = (SELECT MIN(h.seq) FROM callback_outbox h"
    " WHERE h.receiver_id = o.receiver_id AND h.status = ?)"
)
_ATTEMPT_COLUMNS = ("attempt_id", "event_id", "attempted_at", "http_status", "error", "duration_ms")
_INSERT_PAYMENT = (
    "INSERT INTO payments (receiver_id, txid, address, amount_duffs, instant_locked,"
    " block_height, confirmations, dropped, first_seen_at, updated_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?, ?)"
)
_UPDATE_PAYMENT = (
    "UPDATE payments SET instant_locked = ?, block_height = ?, confirmations = ?, dropped = ?,"
    " updated_at = ? WHERE payment_id = ?"
)
_UPDATE_FIELDS = tuple(f.name for f in fields(ReceiverUpdate))
RECEIVER_UPDATE_FIELDS = _UPDATE_FIELDS  # the columns a ReceiverUpdate writes, in order
_UPDATE_RECEIVER = (
    f"UPDATE receivers SET {', '.join(f'{name} = ?' for name in _UPDATE_FIELDS)}"
    " WHERE receiver_id = ?"
)
_INSERT_EVENT = (
    "INSERT INTO callback_outbox (event_id, receiver_id, event, payload, status, attempts,"
    " next_attempt_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)  # only placeholders in VALUES: PyMySQL turns an executemany into one multi-row INSERT
_INSERT_ATTEMPT = (
    "INSERT INTO callback_attempts (event_id, attempted_at, http_status, error,"
    " duration_ms) VALUES (?, ?, ?, ?, ?)"
)
_UPDATE_AFTER_ATTEMPT = (
    "UPDATE callback_outbox SET attempts = attempts + 1, status = ?,"
    " next_attempt_at = COALESCE(?, next_attempt_at), delivered_at = ?,"
    " last_error = ?, first_attempt_at = COALESCE(first_attempt_at, ?)"
    " WHERE event_id = ?"
)
_INSERT_RECEIVER = (
    "INSERT INTO receivers ("
    + ", ".join(("hd_index", "address", "status", "updated_at", *_NEW_RECEIVER_FIELDS))
    + ") VALUES ("
    + ", ".join("?" * (4 + len(_NEW_RECEIVER_FIELDS)))
    + ")"
)


@functools.lru_cache(maxsize=MAX_CREATE_BATCH)
def _insert_receivers_sql(count: int) -> str:
    """One INSERT of ``count`` receiver rows (one statement: one round trip on MySQL)."""
    row = "(" + ", ".join("?" * (4 + len(_NEW_RECEIVER_FIELDS))) + ")"
    return _INSERT_RECEIVER.split(" VALUES ")[0] + " VALUES " + ", ".join([row] * count)


def _plain(value: Any) -> Any:
    """Text as ``str`` even if a driver hands back ``bytes`` (binary column types)."""
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8")
    return value


# Positions of the 0/1 columns that become bools.
_OVERPAID_AT, _LATE_AT = (RECEIVER_COLUMNS.index(name) for name in ("overpaid", "late"))
_LOCKED_AT, _DROPPED_AT = (PAYMENT_COLUMNS.index(name) for name in ("instant_locked", "dropped"))


def receiver_from_row(row: Sequence[Any]) -> Receiver:
    """A receiver from a row of ``RECEIVER_COLUMNS``, whatever the driver returns text as."""
    values = [_plain(value) for value in row]
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
    values = [_plain(value) for value in row]
    values[_LOCKED_AT] = bool(values[_LOCKED_AT])
    values[_DROPPED_AT] = bool(values[_DROPPED_AT])
    return Payment(*values)


def payment_from_text_row(row: Sequence[Any]) -> Payment:
    values = list(row)
    values[_LOCKED_AT] = bool(values[_LOCKED_AT])
    values[_DROPPED_AT] = bool(values[_DROPPED_AT])
    return Payment(*values)


def outbox_from_row(row: Sequence[Any]) -> OutboxEvent:
    return OutboxEvent(**{n: _plain(v) for n, v in zip(OUTBOX_COLUMNS, row, strict=True)})


def callback_from_row(row: Sequence[Any]) -> CallbackRecord:
    width = len(OUTBOX_COLUMNS)
    seq, outbox, rest = row[0], row[1 : width + 1], row[width + 1 :]
    wallet_id, callback_url, first_attempt_at = (_plain(value) for value in rest)
    return CallbackRecord(
        seq=int(seq),
        event=outbox_from_row(outbox),
        wallet_id=wallet_id,
        callback_url=callback_url,
        first_attempt_at=first_attempt_at,
    )


def attempt_from_row(row: Sequence[Any]) -> CallbackAttempt:
    return CallbackAttempt(**{n: _plain(v) for n, v in zip(_ATTEMPT_COLUMNS, row, strict=True)})


def check_outcome(outcome: object) -> AttemptOutcome:
    """An attempt outcome fit to store (a wrong one is a bug in the sender: ValueError);
    the error text is cut to ``MAX_ATTEMPT_ERROR_CHARS``."""
    if not isinstance(outcome, AttemptOutcome):
        raise ValueError(f"expected an AttemptOutcome, got {_show(outcome)}")
    if outcome.status not in OUTBOX_STATUSES:
        raise ValueError(f"unknown callback status {_show(outcome.status)}")
    if not _is_int(outcome.attempted_at, 0, 2**63 - 1):
        raise ValueError(f"attempted_at {_show(outcome.attempted_at)} is not epoch milliseconds")
    if outcome.status == OUTBOX_PENDING and not _is_int(outcome.next_attempt_at, 0, 2**63 - 1):
        raise ValueError("a retried attempt needs next_attempt_at (epoch milliseconds)")
    if outcome.http_status is not None and not _is_int(outcome.http_status, 100, 999):
        raise ValueError(f"http_status {_show(outcome.http_status)} is not an HTTP status")
    if not _is_int(outcome.duration_ms, 0, 2**63 - 1):
        raise ValueError(f"duration_ms {_show(outcome.duration_ms)} is not a duration")
    error = outcome.error
    if error is not None and len(error) > MAX_ATTEMPT_ERROR_CHARS:
        error = error[: MAX_ATTEMPT_ERROR_CHARS - 3] + "..."
    elif outcome.duration_ms <= MAX_UNSIGNED_INT:
        return outcome  # the usual case: fit to store as it is, no copy
    return replace(outcome, error=error, duration_ms=min(outcome.duration_ms, MAX_UNSIGNED_INT))


def _new_outbox_event(receiver_id: int, event: NewEvent, now: int) -> OutboxEvent:
    """The outbox row of a newly enqueued event, as ``_INSERT_EVENT`` stores it."""
    return OutboxEvent(
        event_id=event.event_id,
        receiver_id=receiver_id,
        event=event.event,
        payload=event.payload,
        status=OUTBOX_PENDING,
        attempts=0,
        next_attempt_at=now,
        created_at=now,
        delivered_at=None,
        last_error=None,
    )


def _attempt_row(event_id: str, outcome: AttemptOutcome) -> tuple[Any, ...]:
    """Parameters of ``_INSERT_ATTEMPT``."""
    return (event_id, outcome.attempted_at, outcome.http_status, outcome.error, outcome.duration_ms)


def update_after_attempt(event_id: str, outcome: AttemptOutcome) -> tuple[Any, ...]:
    """Parameters of ``_UPDATE_AFTER_ATTEMPT``: the event's state after the attempt."""
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


def _in_lists(ids: Sequence[Any]) -> Iterator[tuple[str, list[Any]]]:
    """``ids`` (sorted) as ``("?, ?, ...", params)`` chunks for ``IN (...)``, in order,
    padded (``padded_chunks``; a repeated id is harmless in an IN list)."""
    for chunk in padded_chunks(ids, MAX_IN_LIST):
        yield ", ".join("?" * len(chunk)), chunk


def merge_observation(stored: Payment, seen: PaymentObservation, now: int) -> tuple[Payment, str]:
    """The stored payment after observing it again, and the change kind.

    State only moves forward: the InstantSend lock is never lost and confirmations never
    go down. A block height that differs from the stored one is the chain's new truth
    (first mined, or moved by a reorg) and is taken as given, with the confirmations
    given alongside it; when a reorg comes without a confirmation count, the old count
    (which belonged to the old block) is reset to 0 rather than kept, so a payment is
    never treated as more confirmed than it is. A dropped payment seen again is
    restored. The amount of a (txid, address) is fixed on-chain: a different one is
    logged and ignored."""
    if seen.amount_duffs != stored.amount_duffs:
        log.warning(
            "payment amount differs, kept the stored one txid=%s address=%s stored=%d seen=%d",
            stored.txid,
            stored.address,
            stored.amount_duffs,
            seen.amount_duffs,
        )
    height, confirmations = stored.block_height, stored.confirmations
    if seen.block_height is not None and seen.block_height != stored.block_height:
        height = seen.block_height
        if seen.confirmations is not None:
            confirmations = seen.confirmations
        elif stored.block_height is not None:
            confirmations = 0
    elif seen.confirmations is not None:
        confirmations = max(stored.confirmations, seen.confirmations)
    merged = replace(
        stored,
        instant_locked=stored.instant_locked or seen.instant_locked,
        block_height=height,
        confirmations=confirmations,
        dropped=False,
    )
    if merged == stored:
        return stored, CHANGE_UNCHANGED
    return replace(merged, updated_at=now), CHANGE_RESTORED if stored.dropped else CHANGE_UPDATED


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _SHOW_CHARS else text[: _SHOW_CHARS - 3] + "..."


def _is_int(value: object, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def check_work(items: Sequence[ReceiverWork], now: int) -> None:
    """Refuse a malformed batch before any lock is taken (InvalidParams says which value
    is wrong). The address is checked against the receiver inside the transaction."""
    if not _is_int(now, 0, 2**63 - 1):
        raise InvalidParams(f"now must be epoch milliseconds (an integer), got {_show(now)}")
    for item in items:
        if not isinstance(item, ReceiverWork):
            raise InvalidParams(f"a batch holds ReceiverWork items, got {_show(item)}")
        rid = item.receiver_id
        if not _is_int(rid, 1, 2**63 - 1):
            raise InvalidParams(f"receiver_id must be a positive integer, got {_show(rid)}")
        for seen in item.observations:
            _check_observation(rid, seen)
        for txid in item.dropped_txids:
            if not isinstance(txid, str) or not _TXID.fullmatch(txid):
                raise InvalidParams(
                    f"dropped txid for receiver {rid} must be 64 lowercase hex characters, "
                    f"got {_show(txid)}",
                    receiver_id=rid,
                )


def _check_observation(receiver_id: int, seen: object) -> None:
    if not isinstance(seen, PaymentObservation):
        raise InvalidParams(f"expected a PaymentObservation, got {_show(seen)}")
    problem = None
    if not isinstance(seen.txid, str) or not _TXID.fullmatch(seen.txid):
        problem = f"txid must be 64 lowercase hex characters, got {_show(seen.txid)}"
    elif not isinstance(seen.address, str) or not seen.address:
        problem = f"address must be a non-empty string, got {_show(seen.address)}"
    elif not _is_int(seen.amount_duffs, 0, MAX_DUFFS):
        problem = f"amount_duffs must be an integer from 0 to {MAX_DUFFS}, got " + _show(
            seen.amount_duffs
        )
    elif not isinstance(seen.instant_locked, bool):
        problem = f"instant_locked must be a bool, got {_show(seen.instant_locked)}"
    else:
        for name in ("block_height", "confirmations"):
            value = getattr(seen, name)
            if value is not None and not _is_int(value, 0, MAX_UNSIGNED_INT):
                problem = f"{name} must be None or an integer from 0 to {MAX_UNSIGNED_INT}, got "
                problem += _show(value)
                break
    if problem is not None:
        raise InvalidParams(
            f"observation for receiver {receiver_id}: {problem}", receiver_id=receiver_id
        )


def _check_decision(receiver_id: int, decision: object) -> tuple[ReceiverUpdate | None, list]:
    """``decide``'s answer, or ValueError: a wrong one is a bug in the rules, and writing
    it would corrupt money state (or hit a CHECK with a database-specific error)."""

    def bad(problem: str) -> ValueError:
        return ValueError(f"decide returned {problem} for receiver {receiver_id}")

    if not isinstance(decision, tuple) or len(decision) != 2:
        raise bad(f"{_show(decision)} instead of (ReceiverUpdate | None, list[NewEvent])")
    update, events = decision
    if update is not None:
        if not isinstance(update, ReceiverUpdate):
            raise bad(f"an update that is not a ReceiverUpdate: {_show(update)}")
        if not _is_int(update.received_duffs, 0, 2**63 - 1):
            raise bad(f"received_duffs {_show(update.received_duffs)}")
        if update.status not in STATUSES:
            raise bad(f"unknown status {_show(update.status)}")
        for name in ("overpaid", "late"):
            if not isinstance(getattr(update, name), bool):
                raise bad(f"{name} {_show(getattr(update, name))} (not a bool)")
        for name in ("paid_at", "settled_at", "closed_at", "updated_at"):
            value = getattr(update, name)
            if not (value is None and name != "updated_at") and not _is_int(value, 0, 2**63 - 1):
                raise bad(f"{name} {_show(value)} (not epoch milliseconds)")
    if not isinstance(events, list | tuple):
        raise bad(f"events {_show(events)} (not a list)")
    for event in events:
        if not isinstance(event, NewEvent):
            raise bad(f"an event that is not a NewEvent: {_show(event)}")
        if not isinstance(event.event_id, str) or not 0 < len(event.event_id) <= MAX_EVENT_ID_CHARS:
            raise bad(f"event_id {_show(event.event_id)} (1 to {MAX_EVENT_ID_CHARS} characters)")
        if not isinstance(event.event, str) or not 0 < len(event.event) <= MAX_EVENT_NAME_CHARS:
            raise bad(f"event name {_show(event.event)} (1 to {MAX_EVENT_NAME_CHARS} characters)")
        if not isinstance(event.payload, str):
            raise bad(f"payload {_show(event.payload)} (not JSON text)")
        if len(event.payload.encode("utf-8")) > MAX_PAYLOAD_BYTES:
            raise bad(f"a {event.event} payload over {MAX_PAYLOAD_BYTES} bytes")
    return update, list(events)


_update_values = attrgetter(*_UPDATE_FIELDS)


# -- the shared units of work --------------------------------------------------------


class DuplicateAddress(Exception):
    """Internal: the derived address already belongs to another receiver."""


class BatchRefused(Exception):
    """Internal: a unique key refused one of the rows of a multi-row insert."""


def _created_receiver(receiver_id: int, index: int, address: str, new: NewReceiver) -> Receiver:
    """The row an insert of ``new`` at ``index`` just wrote, without reading it back."""
    return Receiver(
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


class SqlRepository(PriceCacheMixin):
    """The ``Repository`` interface written once over DB-API cursors. Subclasses
    provide the transport; see the module docstring for the hooks."""

    backend: str
    # Appended to a SELECT that must lock the rows it reads until commit.
    _for_update: str = ""
    # After "FROM receivers": read in primary key order (see iter_pending).
    _primary_key_scan: str = ""
    # Rows to values; a backend whose driver always returns text as str uses the
    # cheaper payment_from_text_row / receiver_from_text_row.
    _receiver_from_row = staticmethod(receiver_from_row)
    _payment_from_row = staticmethod(payment_from_row)

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

    def _executemany(self, cursor: Any, sql: str, rows: Sequence[Sequence[Any]]) -> Any:
        """One statement for many parameter rows (a multi-row INSERT where the driver
        can make one)."""
        cursor.executemany(sql, rows)
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

    def unpaid_gap(self, wallet_id: str, chain: int) -> int:
        """Consecutive derived addresses at the end of the chain that never received
        anything: what a wallet's gap limit is compared against."""

        def work(cur: Any) -> int:
            self._execute(
                cur,
                "SELECT next_index FROM hd_counters WHERE wallet_id = ? AND chain = ?",
                (wallet_id, chain),
            )
            row = cur.fetchone()
            next_index = 0 if row is None else int(row[0])
            self._execute(
                cur,
                "SELECT MAX(hd_index) FROM receivers"
                " WHERE wallet_id = ? AND chain = ? AND received_duffs > 0",
                (wallet_id, chain),
            )
            row = cur.fetchone()
            last_paid = -1 if row is None or row[0] is None else int(row[0])
            return next_index - 1 - last_paid

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
            return _created_receiver(receiver_id, index, address, new), True

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

    def create_receivers(
        self, batch: Sequence[NewReceiver], derive_address: Callable[[int], str]
    ) -> list[tuple[Receiver, bool]]:
        if not batch:
            return []
        wallet_id, chain = batch[0].wallet_id, batch[0].chain
        if any((new.wallet_id, new.chain) != (wallet_id, chain) for new in batch):
            raise ValueError("create_receivers takes receivers of one wallet and chain")
        if len(batch) > MAX_CREATE_BATCH:
            raise ValueError(f"at most {MAX_CREATE_BATCH} receivers per call, got {len(batch)}")
        keys = sorted({new.idempotency_key for new in batch if new.idempotency_key is not None})

        def work(cur: Any) -> list[tuple[Receiver, bool]]:
            # The counter lock comes first, as in create_receiver: a concurrent creator
            # with one of these keys has committed (and is found below) or waits.
            first = self._lock_counter(cur, wallet_id, chain)
            known: dict[str, Receiver] = {}
            if keys:
                marks = ", ".join("?" * len(keys))
                sql = f"{_SELECT_RECEIVER} WHERE idempotency_key IN ({marks})"
                for receiver in self._receivers(self._execute(cur, sql, keys)):
                    known[receiver.idempotency_key] = receiver  # type: ignore[index]
            # Each entry: an existing receiver, or the batch position of a new row.
            plan: list[Receiver | int] = []
            rows: list[tuple[int, str, NewReceiver]] = []
            claimed: dict[str, int] = {}  # key -> position of the new row that takes it
            for new in batch:
                key = new.idempotency_key
                if key is not None and key in known:
                    plan.append(known[key])
                elif key is not None and key in claimed:
                    plan.append(claimed[key])
                else:
                    index = first + len(rows)
                    if key is not None:
                        claimed[key] = len(rows)
                    plan.append(len(rows))
                    rows.append((index, derive_address(index), new))
            if not rows:
                return [(receiver, False) for receiver in plan]  # type: ignore[misc]
            values: list[Any] = []
            for index, address, new in rows:
                values += [index, address, PENDING, new.created_at]
                values += [getattr(new, name) for name in _NEW_RECEIVER_FIELDS]
            try:
                self._execute(cur, _insert_receivers_sql(len(rows)), values)
            except Exception as exc:
                if not self._is_unique_violation(exc):
                    raise
                raise BatchRefused from exc
            ids = dict(
                self._execute(
                    cur,
                    "SELECT hd_index, receiver_id FROM receivers"
                    " WHERE wallet_id = ? AND chain = ? AND hd_index >= ? AND hd_index < ?",
                    (wallet_id, chain, first, first + len(rows)),
                ).fetchall()
            )
            self._execute(
                cur,
                "UPDATE hd_counters SET next_index = ? WHERE wallet_id = ? AND chain = ?",
                (first + len(rows), wallet_id, chain),
            )
            made = [
                _created_receiver(int(ids[index]), index, address, new)
                for index, address, new in rows
            ]
            seen: set[int] = set()
            results: list[tuple[Receiver, bool]] = []
            for step in plan:
                if isinstance(step, Receiver):
                    results.append((step, False))
                else:  # the first request for a row created it; a repeat in the batch did not
                    results.append((made[step], step not in seen))
                    seen.add(step)
            return results

        try:
            return self._write(work)
        except BatchRefused:
            raise Conflict(
                "the database refused a receiver of this batch (an address or idempotency "
                "key is already taken); nothing was written: create them one by one to "
                "find which",
            ) from None

    def _receivers(self, cursor: Any) -> list[Receiver]:
        convert = self._receiver_from_row
        return [convert(row) for row in cursor.fetchall()]

    def get_receiver(self, receiver_id: int) -> Receiver | None:
        return self._read(lambda cur: self._receiver_where(cur, "receiver_id = ?", receiver_id))

    def _receiver_where(
        self, cur: Any, condition: str, value: Any, *, lock: bool = False
    ) -> Receiver | None:
        sql = f"{_SELECT_RECEIVER} WHERE {condition}" + (self._for_update if lock else "")
        row = self._execute(cur, sql, (value,)).fetchone()
        return None if row is None else self._receiver_from_row(row)

    def list_receivers(
        self,
        *,
        wallet_id: str | None = None,
        status: str | None = None,
        limit: int = 50,
        before_id: int | None = None,
    ) -> list[Receiver]:
        _check_limit(limit)
        if status is not None and status not in STATUSES:
            raise InvalidParams(f"unknown status {status!r}; one of {', '.join(STATUSES)}")
        where, params = _where(
            (
                ("wallet_id = ?", wallet_id),
                ("status = ?", status),
                ("receiver_id < ?", before_id),
            )
        )
        sql = f"{_SELECT_RECEIVER}{where} ORDER BY receiver_id DESC LIMIT ?"
        params.append(limit)
        return self._read(lambda cur: self._receivers(self._execute(cur, sql, params)))

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

    def iter_pending(
        self, wallet_id: str, now: int, monitor_window: int, *, chunk: int = PENDING_CHUNK
    ) -> Iterator[PendingRow]:
        marks = ", ".join("?" * len(NOT_FINAL_STATUSES))
        # Keyset on the primary key: every chunk resumes after the last id read, so
        # the whole load is one pass over the table however many chunks it takes.
        sql = (
            "SELECT receiver_id, address, status, expires_at, closed_at FROM receivers"
            f"{self._primary_key_scan} WHERE receiver_id > ? AND wallet_id = ?"
            f" AND (status IN ({marks}) OR closed_at >= ?) ORDER BY receiver_id LIMIT ?"
        )
        cutoff = now - monitor_window
        after = 0  # ids start at 1
        while True:
            params = (after, wallet_id, *NOT_FINAL_STATUSES, cutoff, chunk)
            rows = self._read(lambda cur, p=params: self._execute(cur, sql, p).fetchall())
            for receiver_id, address, status, expires_at, closed_at in rows:
                yield PendingRow(
                    receiver_id, _plain(address), _plain(status), expires_at, closed_at
                )
            if len(rows) < chunk:
                return
            after = rows[-1][0]

    def count_by_status(self, wallet_id: str) -> dict[str, int]:
        sql = "SELECT status, COUNT(*) FROM receivers WHERE wallet_id = ? GROUP BY status"
        rows = self._read(lambda cur: self._execute(cur, sql, (wallet_id,)).fetchall())
        counts = dict.fromkeys(STATUSES, 0)
        counts.update({_plain(status): int(count) for status, count in rows})
        return counts

    def list_payments(self, receiver_id: int) -> list[Payment]:
        sql = f"{_SELECT_PAYMENT} WHERE receiver_id = ? ORDER BY first_seen_at, payment_id"
        rows = self._read(lambda cur: self._execute(cur, sql, (receiver_id,)).fetchall())
        return [self._payment_from_row(row) for row in rows]

    # Payments: the engine's unit of work ----------------------------------------
    def update_receivers(
        self, work: Sequence[ReceiverWork], now: int, decide: Decide
    ) -> list[ReceiverResult]:
        items = list(work)
        check_work(items, now)
        if not items:
            return []
        ids = sorted({item.receiver_id for item in items})

        def unit(cur: Any) -> list[ReceiverResult]:
            receivers = self._receivers_by_id(cur, ids, lock=True)
            missing = [rid for rid in ids if rid not in receivers]
            if missing:
                raise NotFound(
                    f"no receiver with id {', '.join(map(str, missing))}",
                    receiver_id=missing[0],
                )
            stored: dict[int, dict[tuple[str, str], Payment]] = {rid: {} for rid in ids}
            for chunk, params in _in_lists(ids):
                sql = f"{_SELECT_PAYMENT} WHERE receiver_id IN ({chunk}) ORDER BY payment_id"
                for row in self._execute(cur, sql, params).fetchall():
                    payment = self._payment_from_row(row)
                    stored[payment.receiver_id][(payment.txid, payment.address)] = payment
            updates: dict[int, ReceiverUpdate] = {}
            results = [
                self._update_one(
                    cur, item, receivers, stored[item.receiver_id], now, decide, updates
                )
                for item in items
            ]
            self._write_receiver_updates(cur, sorted(updates.items()))
            # Every event of the batch in one multi-row INSERT, in the order decided (the
            # enqueue order, seq, follows it): one round trip instead of one per event.
            self._insert_events(cur, [e for result in results for e in result.events])
            # Each result already holds its receiver as written (the locked row with the
            # update applied; a receiver listed twice has, for each item, the state after
            # that item), so nothing is read back.
            return results

        return self._write(unit)

    def _receivers_by_id(self, cur: Any, ids: Sequence[int], *, lock: bool) -> dict[int, Receiver]:
        """Receivers by id; with ``lock``, locked in ascending id order (every writer of
        several receivers takes them in that order, so they never deadlock)."""
        found: dict[int, Receiver] = {}
        suffix = self._for_update if lock else ""
        for chunk, params in _in_lists(ids):
            sql = f"{_SELECT_RECEIVER} WHERE receiver_id IN ({chunk}) ORDER BY receiver_id"
            for receiver in self._receivers(self._execute(cur, sql + suffix, params)):
                found[receiver.receiver_id] = receiver
        return found

    def _update_one(
        self,
        cur: Any,
        item: ReceiverWork,
        receivers: dict[int, Receiver],
        rows: dict[tuple[str, str], Payment],
        now: int,
        decide: Decide,
        updates: dict[int, ReceiverUpdate],
    ) -> ReceiverResult:
        """Apply one item (steps 2-4 of ``update_receivers``); ``receivers`` and
        ``rows`` are kept equal to the database as it changes."""
        rid = item.receiver_id
        receiver = receivers[rid]
        changes: list[PaymentChange] = []
        for seen in item.observations:
            if seen.address != receiver.address:
                raise Conflict(
                    f"payment {seen.txid} to address {seen.address} cannot be recorded for "
                    f"receiver {rid}, whose address is {receiver.address}",
                    receiver_id=rid,
                    address=seen.address,
                )
            key = (seen.txid, seen.address)
            old = rows.get(key)
            if old is None:
                payment, kind = self._insert_payment(cur, rid, seen, now), CHANGE_NEW
            else:
                payment, kind = merge_observation(old, seen, now)
                if kind != CHANGE_UNCHANGED:
                    self._write_payment(cur, payment)
            rows[key] = payment
            changes.append(PaymentChange(payment, kind))
        for txid in item.dropped_txids:
            for key in [k for k, p in rows.items() if p.txid == txid and not p.dropped]:
                payment = replace(rows[key], dropped=True, updated_at=now)
                self._write_payment(cur, payment)
                rows[key] = payment
                changes.append(PaymentChange(payment, CHANGE_DROPPED))
        payments = sorted(rows.values(), key=lambda p: (p.first_seen_at, p.payment_id))
        update, new_events = _check_decision(rid, decide(receiver, list(payments), list(changes)))
        if update is not None:
            # Written once per receiver at the end of the unit (the latest state wins):
            # nothing in between reads receivers from the database.
            updates[rid] = update
            receiver = receivers[rid] = apply_update(receiver, update)
        events = [_new_outbox_event(rid, event, now) for event in new_events]
        return ReceiverResult(receiver, payments, changes, events)

    def _insert_payment(
        self, cur: Any, receiver_id: int, seen: PaymentObservation, now: int
    ) -> Payment:
        confirmations = seen.confirmations or 0
        values = (
            receiver_id,
            seen.txid,
            seen.address,
            seen.amount_duffs,
            int(seen.instant_locked),
            seen.block_height,
            confirmations,
            now,
            now,
        )
        try:
            self._execute(cur, _INSERT_PAYMENT, values)
        except Exception as exc:
            if not self._is_unique_violation(exc):
                raise
            # Only possible if a payment row names a receiver other than the one that
            # owns its address (addresses are unique): the store is inconsistent.
            sql = "SELECT receiver_id FROM payments WHERE txid = ? AND address = ?"
            row = self._execute(cur, sql, (seen.txid, seen.address)).fetchone()
            owner = None if row is None else int(row[0])
            raise Conflict(
                f"payment {seen.txid} to address {seen.address} is already recorded for "
                f"receiver {owner}, not {receiver_id}; the payments table disagrees with "
                "the receivers table and needs a manual fix",
                receiver_id=receiver_id,
                other_receiver_id=owner,
            ) from None
        return Payment(
            payment_id=int(cur.lastrowid),
            receiver_id=receiver_id,
            txid=seen.txid,
            address=seen.address,
            amount_duffs=seen.amount_duffs,
            instant_locked=seen.instant_locked,
            block_height=seen.block_height,
            confirmations=confirmations,
            dropped=False,
            first_seen_at=now,
            updated_at=now,
        )

    def _write_payment(self, cur: Any, payment: Payment) -> None:
        values = (
            int(payment.instant_locked),
            payment.block_height,
            payment.confirmations,
            int(payment.dropped),
            payment.updated_at,
            payment.payment_id,
        )
        self._execute(cur, _UPDATE_PAYMENT, values)

    def _write_receiver_updates(
        self, cur: Any, updates: Sequence[tuple[int, ReceiverUpdate]]
    ) -> None:
        """Write each receiver's new state: one executemany of the UPDATE here (the
        driver loops in C); MySQL overrides this with one statement per chunk, which
        saves a round trip per receiver."""
        self._executemany(
            cur, _UPDATE_RECEIVER, [(*_update_values(update), rid) for rid, update in updates]
        )

    def _insert_events(self, cur: Any, events: Sequence[OutboxEvent]) -> None:
        if not events:
            return
        ids = [event.event_id for event in events]
        if len(set(ids)) != len(ids):
            twice = next(i for i in ids if ids.count(i) > 1)
            raise Conflict(  # the second of the two would find the first
                f"callback event id {twice} already exists; event ids must be unique",
                event_id=twice,
            )
        rows = [
            (
                e.event_id,
                e.receiver_id,
                e.event,
                e.payload,
                e.status,
                e.attempts,
                e.next_attempt_at,
                e.created_at,
            )
            for e in events
        ]
        try:
            self._executemany(cur, _INSERT_EVENT, rows)
        except Exception as exc:
            if not self._is_unique_violation(exc):
                raise
            taken = ids[0]
            for chunk, params in _in_lists(sorted(ids)):
                sql = f"SELECT event_id FROM callback_outbox WHERE event_id IN ({chunk})"
                row = self._execute(cur, sql, params).fetchone()
                if row is not None:
                    taken = _plain(row[0])
                    break
            raise Conflict(
                f"callback event id {taken} already exists; event ids must be unique",
                event_id=taken,
            ) from None

    # Callback outbox -------------------------------------------------------------
    def list_outbox(
        self, *, receiver_id: int | None = None, status: str | None = None, limit: int = 100
    ) -> list[OutboxEvent]:
        _check_limit(limit)
        if status is not None and status not in OUTBOX_STATUSES:
            raise InvalidParams(
                f"unknown callback status {status!r}; one of {', '.join(OUTBOX_STATUSES)}"
            )
        where, params = _where((("receiver_id = ?", receiver_id), ("status = ?", status)))
        sql = f"{_SELECT_OUTBOX}{where} ORDER BY seq LIMIT ?"
        params.append(limit)
        rows = self._read(lambda cur: self._execute(cur, sql, params).fetchall())
        return [outbox_from_row(row) for row in rows]

    # Callback delivery -----------------------------------------------------------
    def due_callbacks(
        self, wallet_id: str, now: int, limit: int
    ) -> tuple[list[CallbackRecord], int | None]:
        _check_limit(limit)
        due_sql = (
            f"{_SELECT_CALLBACK} WHERE o.status = ? AND o.next_attempt_at <= ?"
            f" AND r.wallet_id = ? AND {_IS_HEAD} ORDER BY o.next_attempt_at, o.seq LIMIT ?"
        )
        later_sql = (
            "SELECT MIN(o.next_attempt_at) FROM callback_outbox o"
            " JOIN receivers r ON r.receiver_id = o.receiver_id"
            " WHERE o.status = ? AND o.next_attempt_at > ? AND r.wallet_id = ?"
        )

        def work(cur: Any) -> tuple[list[CallbackRecord], int | None]:
            params = (OUTBOX_PENDING, now, wallet_id, OUTBOX_PENDING, limit)
            due = [callback_from_row(row) for row in self._execute(cur, due_sql, params)]
            row = self._execute(cur, later_sql, (OUTBOX_PENDING, now, wallet_id)).fetchone()
            later = None if row is None or row[0] is None else int(row[0])
            return due, later

        return self._read(work)

    def record_callback_attempt(self, event_id: str, outcome: AttemptOutcome) -> OutboxEvent:
        [problem] = self.record_callback_attempts([(event_id, outcome)])
        if problem is not None:
            raise problem
        return self._read(lambda cur: self._outbox_event(cur, event_id))

    def record_callback_attempts(
        self, attempts: Sequence[tuple[str, AttemptOutcome]]
    ) -> list[DashpayError | None]:
        checked = [(event_id, check_outcome(outcome)) for event_id, outcome in attempts]
        if not checked:
            return []
        ids = sorted({event_id for event_id, _ in checked})

        def work(cur: Any) -> list[DashpayError | None]:
            status_of: dict[str, str] = {}
            for chunk, params in _in_lists(ids):
                sql = (
                    f"SELECT event_id, status FROM callback_outbox WHERE event_id IN ({chunk})"
                    + self._for_update
                )
                for event_id, status in self._execute(cur, sql, params).fetchall():
                    status_of[_plain(event_id)] = _plain(status)
            results: list[DashpayError | None] = []
            accepted: list[tuple[str, AttemptOutcome]] = []
            for event_id, outcome in checked:
                status = status_of.get(event_id)
                if status is None:
                    results.append(NotFound(f"no callback event {event_id}", event_id=event_id))
                    continue
                if status != OUTBOX_PENDING:
                    results.append(
                        Conflict(
                            f"callback event {event_id} is {status}, not pending; its attempt "
                            "was not recorded",
                            event_id=event_id,
                            status=status,
                        )
                    )
                    continue
                status_of[event_id] = outcome.status  # a later item sees this outcome
                accepted.append((event_id, outcome))
                results.append(None)
            if accepted:
                self._write_attempts(cur, accepted)
            return results

        return self._write(work)

    def _write_attempts(self, cur: Any, accepted: Sequence[tuple[str, AttemptOutcome]]) -> None:
        """Apply each accepted attempt to its outbox row, in order (an event listed
        twice is updated twice), and log them all in one executemany."""
        self._update_after_attempts(cur, accepted)
        self._executemany(cur, _INSERT_ATTEMPT, [_attempt_row(e, o) for e, o in accepted])

    def _update_after_attempts(
        self, cur: Any, accepted: Sequence[tuple[str, AttemptOutcome]]
    ) -> None:
        """The outbox part of ``_write_attempts``: one executemany here (sqlite3 loops
        in C); MySQL overrides it with one statement per chunk."""
        self._executemany(
            cur, _UPDATE_AFTER_ATTEMPT, [update_after_attempt(e, o) for e, o in accepted]
        )

    def pending_callback_receivers(
        self, wallet_id: str, receiver_ids: Sequence[int] | None = None
    ) -> set[int]:
        base = (
            "SELECT DISTINCT o.receiver_id FROM callback_outbox o"
            " JOIN receivers r ON r.receiver_id = o.receiver_id"
            " WHERE o.status = ? AND r.wallet_id = ?"
        )

        def work(cur: Any) -> set[int]:
            if receiver_ids is None:
                rows = self._execute(cur, base, (OUTBOX_PENDING, wallet_id)).fetchall()
                return {int(row[0]) for row in rows}
            found: set[int] = set()
            for chunk, params in _in_lists(sorted(set(receiver_ids))):
                sql = f"{base} AND o.receiver_id IN ({chunk})"
                rows = self._execute(cur, sql, (OUTBOX_PENDING, wallet_id, *params)).fetchall()
                found.update(int(row[0]) for row in rows)
            return found

        if receiver_ids is not None and not receiver_ids:
            return set()
        return self._read(work)

    def _outbox_event(self, cur: Any, event_id: str) -> OutboxEvent:
        row = self._execute(cur, f"{_SELECT_OUTBOX} WHERE event_id = ?", (event_id,)).fetchone()
        return outbox_from_row(row)

    def retry_callback(self, event_id: str, wallet_id: str, now: int) -> OutboxEvent:
        find = (
            "SELECT r.wallet_id FROM callback_outbox o"
            " JOIN receivers r ON r.receiver_id = o.receiver_id WHERE o.event_id = ?"
        )
        requeue = (
            "UPDATE callback_outbox SET status = ?, next_attempt_at = ?, delivered_at = NULL,"
            " first_attempt_at = NULL WHERE event_id = ?"
        )

        def work(cur: Any) -> OutboxEvent:
            row = self._execute(cur, find, (event_id,)).fetchone()
            if row is None or _plain(row[0]) != wallet_id:
                raise NotFound(f"no callback event {event_id}", event_id=event_id)
            self._execute(cur, requeue, (OUTBOX_PENDING, now, event_id))
            return self._outbox_event(cur, event_id)

        return self._write(work)

    def retry_failed_callbacks(
        self, wallet_id: str, now: int, *, receiver_id: int | None = None
    ) -> int:
        owners = "SELECT receiver_id FROM receivers WHERE wallet_id = ?"
        params: list[Any] = [OUTBOX_PENDING, now, OUTBOX_FAILED, wallet_id]
        if receiver_id is not None:
            owners += " AND receiver_id = ?"
            params.append(receiver_id)
        sql = (
            "UPDATE callback_outbox SET status = ?, next_attempt_at = ?, first_attempt_at = NULL"
            f" WHERE status = ? AND receiver_id IN ({owners})"
        )
        return self._write(lambda cur: int(self._execute(cur, sql, params).rowcount))

    def get_callback(self, event_id: str) -> tuple[CallbackRecord, list[CallbackAttempt]] | None:
        attempts_sql = (
            f"SELECT {', '.join(_ATTEMPT_COLUMNS)} FROM callback_attempts WHERE event_id = ?"
            " ORDER BY attempted_at DESC, attempt_id DESC LIMIT ?"
        )

        def work(cur: Any) -> tuple[CallbackRecord, list[CallbackAttempt]] | None:
            sql = f"{_SELECT_CALLBACK} WHERE o.event_id = ?"
            row = self._execute(cur, sql, (event_id,)).fetchone()
            if row is None:
                return None
            rows = self._execute(cur, attempts_sql, (event_id, MAX_ATTEMPTS_SHOWN)).fetchall()
            return callback_from_row(row), [attempt_from_row(r) for r in reversed(rows)]

        return self._read(work)

    def list_callbacks(
        self,
        *,
        wallet_id: str | None = None,
        receiver_id: int | None = None,
        status: str | None = None,
        limit: int = 50,
        before_seq: int | None = None,
    ) -> list[CallbackRecord]:
        _check_limit(limit)
        if status is not None and status not in OUTBOX_STATUSES:
            raise InvalidParams(
                f"unknown callback status {status!r}; one of {', '.join(OUTBOX_STATUSES)}"
            )
        where, params = _where(
            (
                ("r.wallet_id = ?", wallet_id),
                ("o.receiver_id = ?", receiver_id),
                ("o.status = ?", status),
                ("o.seq < ?", before_seq),
            )
        )
        sql = f"{_SELECT_CALLBACK}{where} ORDER BY o.seq DESC LIMIT ?"
        params.append(limit)
        rows = self._read(lambda cur: self._execute(cur, sql, params).fetchall())
        return [callback_from_row(row) for row in rows]

    def callback_backlog(self, wallet_id: str) -> CallbackBacklog:
        sql = (
            "SELECT o.status, COUNT(*), MIN(o.created_at) FROM callback_outbox o"
            " JOIN receivers r ON r.receiver_id = o.receiver_id"
            " WHERE r.wallet_id = ? AND o.status IN (?, ?) GROUP BY o.status"
        )
        params = (wallet_id, OUTBOX_PENDING, OUTBOX_FAILED)
        rows = self._read(lambda cur: self._execute(cur, sql, params).fetchall())
        found = {_plain(status): (int(count), oldest) for status, count, oldest in rows}
        pending, oldest = found.get(OUTBOX_PENDING, (0, None))
        return CallbackBacklog(
            pending=pending,
            failed=found.get(OUTBOX_FAILED, (0, None))[0],
            oldest_pending_created_at=None if oldest is None else int(oldest),
        )

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


def _check_limit(limit: object) -> None:
    if not _is_int(limit, 1, MAX_LIST_LIMIT):
        raise InvalidParams(f"limit must be an integer from 1 to {MAX_LIST_LIMIT}, got {limit!r}")


def _where(filters: Sequence[tuple[str, Any]]) -> tuple[str, list[Any]]:
    """A WHERE clause of the filters whose value is not None, and its parameters."""
    used = [(condition, value) for condition, value in filters if value is not None]
    if not used:
        return "", []
    return " WHERE " + " AND ".join(c for c, _ in used), [v for _, v in used]


def closed_error(backend: str) -> Unavailable:
    return Unavailable(f"the {backend} repository is closed")
