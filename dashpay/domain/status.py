"""The vocabulary of states: receiver statuses, callback outbox statuses and
what an observation did to a payment. Stdlib only; every layer imports these."""

from __future__ import annotations

# Receiver status (one field, moves forward). One source of truth: import these.
PENDING = "pending"
PARTIAL = "partial"
PAID = "paid"
SETTLED = "settled"
EXPIRED = "expired"
CANCELLED = "cancelled"
STATUSES = (PENDING, PARTIAL, PAID, SETTLED, EXPIRED, CANCELLED)
# Statuses after which no further state change is expected (payments are still
# recorded and flagged during the monitoring window).
FINAL_STATUSES = frozenset({SETTLED, EXPIRED, CANCELLED})
# Statuses that can still be cancelled by the merchant.
CANCELLABLE_STATUSES = frozenset({PENDING, PARTIAL})

# Callback outbox status.
OUTBOX_PENDING = "pending"
OUTBOX_DELIVERED = "delivered"
OUTBOX_FAILED = "failed"
OUTBOX_STATUSES = (OUTBOX_PENDING, OUTBOX_DELIVERED, OUTBOX_FAILED)


# What an observation did to a payment row (``PaymentChange.kind``).
CHANGE_NEW = "new"  # first time this (txid, address) is recorded
CHANGE_UPDATED = "updated"  # lock, height or confirmations moved
CHANGE_DROPPED = "dropped"  # it vanished from the address history (double spend, eviction)
CHANGE_RESTORED = "restored"  # a dropped payment was observed again
CHANGE_UNCHANGED = "unchanged"  # observed again, nothing new
CHANGE_KINDS = (CHANGE_NEW, CHANGE_UPDATED, CHANGE_DROPPED, CHANGE_RESTORED, CHANGE_UNCHANGED)
