"""Callback events: one source of truth (README "Callbacks" lists them for
merchants)."""

from __future__ import annotations

# Callback events: one source of truth (README "Callbacks" lists them for merchants).
EVENT_PARTIAL = "receiver.partial"  # a payment arrived; still short of the amount due
EVENT_PAID = "receiver.paid"  # the amount due is reached
EVENT_SETTLED = "receiver.settled"  # ...and every counted payment is locked/confirmed
EVENT_EXPIRED = "receiver.expired"  # not paid in time
EVENT_DROPPED = "receiver.payment_dropped"  # a mempool payment vanished (double spend)
EVENT_OVERPAID = "receiver.overpaid"  # another payment after the receiver was paid
EVENT_LATE = "receiver.late_payment"  # money after expiry/cancel that does not complete it
EVENTS = (
    EVENT_PARTIAL,
    EVENT_PAID,
    EVENT_SETTLED,
    EVENT_EXPIRED,
    EVENT_DROPPED,
    EVENT_OVERPAID,
    EVENT_LATE,
)
