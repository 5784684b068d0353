"""The vocabulary of states and the receiver's state machine: receiver statuses, every
status change the rules may make, callback outbox statuses and what an observation did
to a payment. Stdlib only; every layer imports these.

Like h11's ``_state.py``, everything that affects the receiver state machine lives in
this file: ``TRANSITIONS`` is the complete list of allowed status changes, and the
status sets the rest of the code asks about (final, cancellable) are derived from it.
``accounting.decide`` and ``accounting.cancel`` check every change they make against
the table (``check_transition``): a change that is not listed is a bug, never written.

Statuses are plain strings (the database stores the text, and the pending table keeps
one shared string object per status for up to a million entries).
"""

from __future__ import annotations

# Receiver status. One source of truth: import these.
PENDING = "pending"
PARTIAL = "partial"
PAID = "paid"
SETTLED = "settled"
EXPIRED = "expired"
CANCELLED = "cancelled"
STATUSES = (PENDING, PARTIAL, PAID, SETTLED, EXPIRED, CANCELLED)

# Every status change there is: old -> the statuses it may become. Staying put is not a
# change and always allowed. The README's "Receiver lifecycle" is the user-facing copy.
TRANSITIONS: dict[str, frozenset[str]] = {
    # Money arrives (partial, paid, settled when locked/confirmed), time runs out, or the
    # merchant cancels.
    PENDING: frozenset({PARTIAL, PAID, SETTLED, EXPIRED, CANCELLED}),
    # As pending; a dropped payment (double spend, eviction) can take it back to pending.
    PARTIAL: frozenset({PENDING, PAID, SETTLED, EXPIRED, CANCELLED}),
    # Settles when every counted payment is locked/confirmed; a drop takes it back as far
    # as the money says.
    PAID: frozenset({PENDING, PARTIAL, SETTLED}),
    # Only a drop moves it (a locked payment dropped by a rescan).
    SETTLED: frozenset({PENDING, PARTIAL, PAID}),
    # A late payment that completes the amount makes it paid (flagged late).
    EXPIRED: frozenset({PAID, SETTLED}),
    # Stays cancelled; money sent anyway is recorded and reported, never counted.
    CANCELLED: frozenset(),
}
# The changes above that only a correction makes: a payment dropped after it counted, or
# money arriving after the receiver expired. Not expected in the normal course.
CORRECTIONS: dict[str, frozenset[str]] = {
    PARTIAL: frozenset({PENDING}),
    PAID: frozenset({PENDING, PARTIAL}),
    SETTLED: frozenset({PENDING, PARTIAL, PAID}),
    EXPIRED: frozenset({PAID, SETTLED}),
}
# Statuses after which no further state change is expected: every change out of them is
# a correction (payments are still recorded and flagged during the monitoring window).
FINAL_STATUSES = frozenset(
    s for s, nxt in TRANSITIONS.items() if nxt <= CORRECTIONS.get(s, frozenset())
)
# Statuses the merchant can still cancel.
CANCELLABLE_STATUSES = frozenset(s for s, nxt in TRANSITIONS.items() if CANCELLED in nxt)


class TransitionError(ValueError):
    """A status change that ``TRANSITIONS`` does not list: a bug in the rules."""


def check_transition(old: str, new: str) -> None:
    """Raise TransitionError unless ``old -> new`` is allowed (or no change)."""
    if new != old and new not in TRANSITIONS.get(old, ()):
        raise TransitionError(f"receiver status change {old!r} -> {new!r} is not allowed")


# Callback outbox status.
OUTBOX_PENDING = "pending"
OUTBOX_DELIVERED = "delivered"
OUTBOX_FAILED = "failed"
OUTBOX_STATUSES = (OUTBOX_PENDING, OUTBOX_DELIVERED, OUTBOX_FAILED)


# What an observation did to a payment row (``PaymentChange.kind``).
CHANGE_NEW = "new"  # first time this (txid, address) is recorded
CHANGE_UPDATED = "updated"  # lock, height or confirmations moved
CHANGE_DROPPED = "dropped"  # no longer counted: gone from the source (double spend, eviction)
CHANGE_MISSING = "missing"  # the source stopped showing it: flagged, still counted
CHANGE_RESTORED = "restored"  # a dropped payment was observed again
CHANGE_UNCHANGED = "unchanged"  # observed again, nothing new
CHANGE_KINDS = (
    CHANGE_NEW,
    CHANGE_UPDATED,
    CHANGE_DROPPED,
    CHANGE_MISSING,
    CHANGE_RESTORED,
    CHANGE_UNCHANGED,
)
# Changes that bring money in: the payment counts from now on.
ARRIVALS = frozenset({CHANGE_NEW, CHANGE_RESTORED})

# The daemon's own states (`dashpay status`, GET /ready). Serving ones take traffic:
# a degraded daemon still answers, with reasons.
DAEMON_STARTING = "starting"
DAEMON_READY = "ready"
DAEMON_DEGRADED = "degraded"
DAEMON_STANDBY = "standby"
DAEMON_STOPPING = "stopping"
SERVING_STATES = frozenset({DAEMON_READY, DAEMON_DEGRADED})
