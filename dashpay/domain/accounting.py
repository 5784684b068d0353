"""The accounting rules: from a receiver and its payments to its status, flags and the
events a merchant is told about. Pure functions; the engine's unit of work
(``dashpay.engine.record``) calls them inside the transaction that records the payments
(DESIGN.md §4, transactional outbox). Every status change is checked against the state
machine's table (``dashpay.domain.status.TRANSITIONS``).

Rules (the README's "Receiver lifecycle" is the user-facing copy of this):
- ``received_duffs`` is the sum of the receiver's non-dropped payments, always
  recomputed from the rows, never incremented.
- paid when ``received >= amount - floor(amount * tolerance%)``; settled when paid and
  every counted payment is InstantSend-locked or has the required confirmations.
- Status moves forward (pending -> partial -> paid -> settled). Only a dropped payment
  moves it back, and only as far as the money says.
- expired: not paid by ``expires_at``. A late payment that completes it makes it paid
  (flag ``late``); a smaller late payment is recorded, flagged and reported.
- cancelled stays cancelled; money sent to it anyway is recorded, flagged ``late`` and
  reported so the merchant can refund it.
- overpaid: received more than the amount due (derived, so a drop can clear it).
- cancel: only a pending or partial receiver; cancelling twice changes nothing.
- a payment observed again merges forward only (``merge_observation``).
- absence is not evidence (``absence``): a payment the chain source stops showing is
  flagged ``missing_since`` and stays counted. An InstantSend-locked or confirmed one is
  final and never dropped on absence; an unlocked mempool one is dropped only once it
  has been absent for ``drop_after`` (seen again in between: the flag is cleared).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, replace
from decimal import ROUND_FLOOR, Decimal

from dashpay.domain.errors import Conflict
from dashpay.domain.events import (
    EVENT_DROPPED,
    EVENT_EXPIRED,
    EVENT_LATE,
    EVENT_OVERPAID,
    EVENT_PAID,
    EVENT_PARTIAL,
    EVENT_SETTLED,
)
from dashpay.domain.model import (
    NewEvent,
    Payment,
    PaymentChange,
    PaymentObservation,
    Receiver,
    ReceiverUpdate,
    apply_update,
)
from dashpay.domain.status import (
    ARRIVALS,
    CANCELLABLE_STATUSES,
    CANCELLED,
    CHANGE_DROPPED,
    CHANGE_MISSING,
    CHANGE_RESTORED,
    CHANGE_UNCHANGED,
    CHANGE_UPDATED,
    EXPIRED,
    FINAL_STATUSES,
    PAID,
    PARTIAL,
    PENDING,
    SETTLED,
    check_transition,
)

_RANK = {PENDING: 0, PARTIAL: 1, PAID: 2, SETTLED: 3}


# How long an unlocked mempool payment must stay absent from the chain source before it
# is dropped (the README's `[receivers] drop_after` default).
DEFAULT_DROP_AFTER_MS = 10 * 60 * 1000


@dataclass(frozen=True, slots=True)
class Rules:
    tolerance_percent: Decimal = Decimal(0)  # underpayment accepted as paid, 0..100
    confirmations: int = 1  # or an InstantSend lock
    drop_after_ms: int = DEFAULT_DROP_AFTER_MS  # see ``absence``


def paid_threshold(amount_duffs: int, tolerance_percent: Decimal) -> int:
    """The smallest received amount that counts as paid. The allowance is rounded
    down, so the merchant never accepts more shortfall than configured."""
    allowance = (Decimal(amount_duffs) * tolerance_percent / 100).to_integral_value(ROUND_FLOOR)
    return amount_duffs - int(allowance)


def payment_settled(payment: Payment, rules: Rules) -> bool:
    return payment.instant_locked or payment.confirmations >= rules.confirmations


def payment_final(payment: Payment) -> bool:
    """InstantSend-locked or mined: final for a merchant's purposes. Such a payment is
    never dropped because one explorer stopped showing it."""
    return payment.instant_locked or payment.block_height is not None or payment.confirmations > 0


# A pass that finds more than this many payments missing, or more than half of those it
# checked (once it checked at least MASS_MISSING_MIN_CHECKED), looks like a chain source
# that lost its index (an Insight restart that forgot its mempool), not like double
# spends: the pass holds instead of flagging or dropping anything.
MASS_MISSING_COUNT = 10
MASS_MISSING_MIN_CHECKED = 4


def source_reset_suspected(missing: int, checked: int) -> bool:
    """Too much missing in one pass to believe (see MASS_MISSING_COUNT)."""
    if missing > MASS_MISSING_COUNT:
        return True
    return checked >= MASS_MISSING_MIN_CHECKED and 2 * missing > checked


def absence(
    payment: Payment, now: int, drop_after_ms: int, *, evidence: bool = False
) -> tuple[Payment, str]:
    """The stored payment after the chain source failed to show it, and the change kind.

    ``evidence``: the source showed it is gone (a conflicting spend), not merely absent.
    A final payment (``payment_final``) is only flagged, never dropped, evidence or not:
    a lock or a block outranks one explorer's view. An unlocked mempool payment is
    dropped on evidence, or once it has been absent for ``drop_after_ms`` since it was
    first found missing; until then it is flagged and still counted."""
    if payment.dropped:
        return payment, CHANGE_UNCHANGED
    since = payment.missing_since if payment.missing_since is not None else now
    if not payment_final(payment) and (evidence or now - since >= drop_after_ms):
        return replace(payment, dropped=True, missing_since=since, updated_at=now), CHANGE_DROPPED
    if payment.missing_since is None:
        return replace(payment, missing_since=now, updated_at=now), CHANGE_MISSING
    return payment, CHANGE_UNCHANGED


def money_status(receiver: Receiver, counted: list[Payment], rules: Rules) -> str:
    """What the money alone says: pending, partial, paid or settled."""
    received = sum(p.amount_duffs for p in counted)
    if received >= paid_threshold(receiver.amount_duffs, rules.tolerance_percent) and counted:
        if all(payment_settled(p, rules) for p in counted):
            return SETTLED
        return PAID
    return PARTIAL if received > 0 else PENDING


PayloadBuilder = Callable[[str, str, int, Receiver, Payment | None], str]


def new_event_id() -> str:
    """Stable delivery id (``Dashpay-Delivery``): 128 random bits."""
    return "evt_" + secrets.token_hex(16)


def decide(
    receiver: Receiver,
    payments: list[Payment],
    changes: list[PaymentChange],
    *,
    now: int,
    rules: Rules,
    payload: PayloadBuilder,
    event_id: Callable[[], str] = new_event_id,
) -> tuple[ReceiverUpdate | None, list[NewEvent]]:
    """The receiver's new state and the events to enqueue, given its payments after
    this transaction's changes. Returns ``(None, [])`` when nothing changes."""
    counted = [p for p in payments if not p.dropped]
    received = sum(p.amount_duffs for p in counted)
    arrived = [c.payment for c in changes if c.kind in ARRIVALS and not c.payment.dropped]
    dropped = [c.payment for c in changes if c.kind == CHANGE_DROPPED]
    old = receiver.status
    money = money_status(receiver, counted, rules)
    late = receiver.late
    pending_events: list[tuple[str, Payment | None]] = []

    if old == CANCELLED:
        status = CANCELLED
        if arrived:
            late = True
            pending_events += [(EVENT_LATE, p) for p in arrived]
    else:
        expired_now = (
            old in (PENDING, PARTIAL)
            and receiver.expires_at is not None
            and now >= receiver.expires_at
        )
        closed = old == EXPIRED or expired_now
        if closed and _RANK[money] < _RANK[PAID]:
            status = EXPIRED
            if arrived and old == EXPIRED:
                late = True
                pending_events += [(EVENT_LATE, p) for p in arrived]
            elif arrived:  # arrived in the same step as expiry: report the payment too
                pending_events += [(EVENT_PARTIAL, p) for p in arrived]
            if old != EXPIRED:
                pending_events.append((EVENT_EXPIRED, None))
        else:
            base = PENDING if old == EXPIRED else old
            if dropped or _RANK[money] >= _RANK[base]:
                status = money
            else:
                status = base  # forward only, unless money was taken away
            if (
                closed
                and arrived
                and any(
                    receiver.expires_at is not None and p.first_seen_at > receiver.expires_at
                    for p in arrived
                )
            ):
                late = True
            was_paid = _RANK.get(old, -1) >= _RANK[PAID]
            now_paid = _RANK[status] >= _RANK[PAID]
            # One event per arriving payment, in arrival order, as if they had come one
            # at a time (a rescan or a busy batch can bring several at once).
            threshold = paid_threshold(receiver.amount_duffs, rules.tolerance_percent)
            running = received - sum(p.amount_duffs for p in arrived)
            paid_seen = was_paid
            for p in arrived:
                running += p.amount_duffs
                if paid_seen:
                    pending_events.append((EVENT_OVERPAID, p))
                elif running >= threshold and now_paid:
                    pending_events.append((EVENT_PAID, p))
                    paid_seen = True
                else:
                    pending_events.append((EVENT_PARTIAL, p))
            if now_paid and not paid_seen:
                pending_events.append((EVENT_PAID, None))
            if status == SETTLED and old != SETTLED:
                pending_events.append((EVENT_SETTLED, None))
    pending_events += [(EVENT_DROPPED, p) for p in dropped]

    paid_at, settled_at = receiver.paid_at, receiver.settled_at
    if status in _RANK:  # money decides; a drop can take "paid" back
        if _RANK[status] < _RANK[PAID]:
            paid_at = None
        elif paid_at is None:
            paid_at = now
        if status != SETTLED:
            settled_at = None
        elif settled_at is None:
            settled_at = now
    if status != old:
        check_transition(old, status)  # a change the table does not list is a bug
        closed_at = now if status in FINAL_STATUSES else None
    else:
        closed_at = receiver.closed_at
    update = ReceiverUpdate(
        received_duffs=received,
        status=status,
        overpaid=received > receiver.amount_duffs,
        late=late,
        paid_at=paid_at,
        settled_at=settled_at,
        closed_at=closed_at,
        updated_at=now,
    )
    unchanged = (
        received == receiver.received_duffs
        and status == old
        and update.overpaid == receiver.overpaid
        and late == receiver.late
        and paid_at == receiver.paid_at
        and settled_at == receiver.settled_at
        and closed_at == receiver.closed_at
    )
    if unchanged and not pending_events:
        return None, []
    after = apply_update(receiver, update)
    events = []
    for name, payment in pending_events:
        ident = event_id()
        events.append(NewEvent(ident, name, payload(name, ident, now, after, payment)))
    return (None if unchanged else update), events


def cancel(receiver: Receiver, now: int) -> ReceiverUpdate | None:
    """The merchant cancels: the update that closes ``receiver``, None when it is
    already cancelled (nothing to write), or Conflict when its status can no longer be
    cancelled (``CANCELLABLE_STATUSES``: pending or partial)."""
    old = receiver.status
    if old == CANCELLED:
        return None
    if old not in CANCELLABLE_STATUSES:
        raise Conflict(
            f"receiver {receiver.receiver_id} is {old} and can no longer be "
            "cancelled (only pending or partial receivers can)",
            receiver_id=receiver.receiver_id,
            status=old,
        )
    check_transition(old, CANCELLED)
    return ReceiverUpdate(
        received_duffs=receiver.received_duffs,
        status=CANCELLED,
        overpaid=receiver.overpaid,
        late=receiver.late,
        paid_at=receiver.paid_at,
        settled_at=receiver.settled_at,
        closed_at=now,
        updated_at=now,
    )


def merge_observation(stored: Payment, seen: PaymentObservation, now: int) -> tuple[Payment, str]:
    """The stored payment after observing it again, and the change kind.

    State only moves forward: the InstantSend lock is never lost and confirmations never
    go down. A block height that differs from the stored one is the chain's new truth
    (first mined, or moved by a reorg) and is taken as given, with the confirmations
    given alongside it; when a reorg comes without a confirmation count, the old count
    (which belonged to the old block) is reset to 0 rather than kept, so a payment is
    never treated as more confirmed than it is. A dropped payment seen again is
    restored, and a payment flagged missing is no longer. The amount of a (txid,
    address) is fixed on-chain: a different one is ignored (the caller logs it)."""
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
        missing_since=None,
    )
    if merged == stored:
        return stored, CHANGE_UNCHANGED
    return replace(merged, updated_at=now), CHANGE_RESTORED if stored.dropped else CHANGE_UPDATED
