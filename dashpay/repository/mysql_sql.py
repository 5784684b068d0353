"""The statement texts only MySQL/MariaDB take (``repository/mysql.py`` runs them):
multi-row UPDATEs joined on a derived table of values, and the payment's receiver
UPDATE that is also the transaction's ownership fence."""

from __future__ import annotations

import functools
from typing import Any

from dashpay.repository.schema import RECEIVER_UPDATE_FIELDS

# Receivers updated by one statement at most (9 values each; far below any packet limit).
MAX_UPDATE_ROWS = 256
# The server's clock in epoch milliseconds (the lease's expiry is never the daemons').
SERVER_NOW_MS = "CAST(UNIX_TIMESTAMP(NOW(3)) * 1000 AS SIGNED)"


@functools.cache
def receiver_updates_sql(count: int, fenced: bool = False) -> str:
    """One UPDATE for ``count`` rows of new values, as a derived table joined on the
    receiver id. Callers pad ``count`` to a power of two by repeating their last row
    (the same id with the same values sets the same thing), so few texts exist.
    ``fenced``: also the transaction's fence (``SqlRepository._fence``'s condition and
    renewal): the lease row is joined where it still names the owner at its epoch. A
    lease taken over matches nothing, so 0 rows change (the caller raises
    ``ownership_lost``); else the lease row always does (expires_at strictly grows).
    Parameters after the values: wallet id, owner, epoch, the lease in ms."""
    columns = ("receiver_id", *RECEIVER_UPDATE_FIELDS)
    first = "SELECT " + ", ".join(f"? AS {name}" for name in columns)
    other = " UNION ALL SELECT " + ", ".join("?" * len(columns))
    assignments = ", ".join(f"r.{name} = v.{name}" for name in RECEIVER_UPDATE_FIELDS)
    lease = ""
    if fenced:
        lease = " JOIN wallet_leases l ON l.wallet_id = ? AND l.owner = ? AND l.epoch = ?"
        assignments += f", l.expires_at = GREATEST(l.expires_at + 1, {SERVER_NOW_MS} + ?)"
    return (
        f"UPDATE receivers r JOIN ({first}{other * (count - 1)}) v"
        f" ON r.receiver_id = v.receiver_id{lease} SET {assignments}"
    )


# One receiver's new values (a lone payment's) by primary key, without the derived
# table (a temporary table on the server); fenced as above. Parameters: wallet id,
# owner, epoch, the values, the lease in ms, the receiver id.
UPDATE_ONE_RECEIVER_FENCED = (
    "UPDATE receivers r JOIN wallet_leases l"
    " ON l.wallet_id = ? AND l.owner = ? AND l.epoch = ? SET "
    + ", ".join(f"r.{name} = ?" for name in RECEIVER_UPDATE_FIELDS)
    + f", l.expires_at = GREATEST(l.expires_at + 1, {SERVER_NOW_MS} + ?)"
    " WHERE r.receiver_id = ?"
)


# Outbox rows updated by one statement at most, after a batch of attempts (7 values each).
MAX_ATTEMPT_ROWS = 256
# Pads a chunk of attempt updates to a power of two: no event has an empty id (ids are
# 1 to 64 characters), so a padding row joins nothing.
NO_EVENT_ROW: list[Any] = ["", 0, None, None, None, None, None]


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
