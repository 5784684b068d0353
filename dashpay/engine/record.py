"""The engine's units of work: what one database transaction does with a batch of
observations, and the merchant's cancel. They run inside ``Repository.transaction``
(one thread hop, one transaction) and drive its narrow operations; the rules are the
domain's (``accounting.merge_observation``, ``decide``, ``cancel``):

    engine (loop.py) --to_thread--> repo.transaction(record_batch) ->
    tx.lock_receivers_with_payments (one SELECT) -> per item: merge (domain),
    tx.insert_payment / write_payment, decide (domain) -> tx.write_receivers (once per
    receiver), tx.enqueue (one INSERT)

Both functions are pure apart from ``tx``: MySQL may run them again on a fresh
connection after a deadlock, so they keep nothing between runs.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence

from dashpay.domain import accounting
from dashpay.domain.errors import Conflict, InvalidParams, NotFound
from dashpay.domain.limits import MAX_EVENT_ID_CHARS
from dashpay.domain.model import (
    NewEvent,
    OutboxEvent,
    Payment,
    PaymentChange,
    PaymentObservation,
    Receiver,
    ReceiverResult,
    ReceiverUpdate,
    ReceiverWork,
    apply_update,
)
from dashpay.domain.money import MAX_DUFFS
from dashpay.domain.status import (
    CHANGE_NEW,
    CHANGE_UNCHANGED,
    OUTBOX_PENDING,
    STATUSES,
)
from dashpay.repository.base import Transaction
from dashpay.repository.schema import (
    MAX_EVENT_NAME_CHARS,
    MAX_PAYLOAD_BYTES,
    MAX_UNSIGNED_INT,
    is_int,
    show,
)

log = logging.getLogger("dashpay.engine.record")

_TXID = re.compile(r"[0-9a-f]{64}")

# The business decision for one item, made after its receiver is locked and its payment
# changes applied: (receiver as stored before this item, all its payments oldest first,
# this item's changes in the order applied) -> (update or None, events to enqueue).
# Must be pure: a retried transaction calls it again.
Decide = Callable[
    [Receiver, list[Payment], list[PaymentChange]], tuple[ReceiverUpdate | None, list[NewEvent]]
]


def decider(now: int, rules: accounting.Rules, payload: accounting.PayloadBuilder) -> Decide:
    """``accounting.decide`` with this batch's time, the wallet's rules and the callback
    payload builder: the ``decide`` the engine records with."""

    def decide(
        receiver: Receiver, payments: list[Payment], changes: list[PaymentChange]
    ) -> tuple[ReceiverUpdate | None, list[NewEvent]]:
        return accounting.decide(receiver, payments, changes, now=now, rules=rules, payload=payload)

    return decide


def record_batch(
    tx: Transaction,
    items: Sequence[ReceiverWork],
    now: int,
    decide: Decide,
    drop_after_ms: int = accounting.DEFAULT_DROP_AFTER_MS,
) -> list[ReceiverResult]:
    """Record observations, drops and absences, let ``decide`` rule, write its updates
    and events: every item in the one transaction of ``tx``, receivers locked in id
    order. Payments are upserted on (txid, address) and only move forward (lock,
    confirmations), except a new block height (reorg) and a drop, which
    ``accounting.absence`` allows only for an unlocked mempool payment. Raises
    InvalidParams for a malformed item (before any row is locked), NotFound for a
    missing receiver, Conflict for an observation of another address; any error
    (including from ``decide``) rolls the whole batch back. Results are in the order
    of ``items``; a receiver listed twice sees its earlier item's outcome."""
    items = list(items)
    check_work(items, now)
    if not items:
        return []
    ids = sorted({item.receiver_id for item in items})
    receivers, payments_of = tx.lock_receivers_with_payments(ids)
    if len(receivers) != len(ids):
        missing = [rid for rid in ids if rid not in receivers]
        raise NotFound(
            f"no receiver with id {', '.join(map(str, missing))}", receiver_id=missing[0]
        )
    stored = {
        rid: {(p.txid, p.address): p for p in payments} for rid, payments in payments_of.items()
    }
    updates: dict[int, ReceiverUpdate] = {}
    results = [
        _record_item(
            tx, item, receivers, stored[item.receiver_id], now, decide, drop_after_ms, updates
        )
        for item in items
    ]
    # Each receiver's latest state, written once (nothing in between reads receivers
    # from the database), then every event of the batch in one multi-row INSERT in the
    # order decided (the enqueue order, seq, follows it).
    tx.write_receivers(sorted(updates.items()))
    tx.enqueue([event for result in results for event in result.events])
    # Each result already holds its receiver as written (the locked row with the update
    # applied), so nothing is read back.
    return results


def _record_item(
    tx: Transaction,
    item: ReceiverWork,
    receivers: dict[int, Receiver],
    rows: dict[tuple[str, str], Payment],
    now: int,
    decide: Decide,
    drop_after_ms: int,
    updates: dict[int, ReceiverUpdate],
) -> ReceiverResult:
    """Apply one item; ``receivers`` and ``rows`` are kept equal to the database as
    the transaction changes it."""
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
            payment, kind = tx.insert_payment(rid, seen, now), CHANGE_NEW
        else:
            if seen.amount_duffs != old.amount_duffs:
                log.warning(
                    "payment amount differs, kept the stored one txid=%s address=%s "
                    "stored=%d seen=%d",
                    old.txid,
                    old.address,
                    old.amount_duffs,
                    seen.amount_duffs,
                )
            payment, kind = accounting.merge_observation(old, seen, now)
            if kind != CHANGE_UNCHANGED:
                tx.write_payment(payment)
        rows[key] = payment
        changes.append(PaymentChange(payment, kind))
    # What the source no longer shows, or shows is gone: the domain decides per payment
    # (a final one is flagged, never dropped).
    for txids, evidence in ((item.dropped_txids, True), (item.absent_txids, False)):
        for txid in txids:
            for key in [k for k, p in rows.items() if p.txid == txid and not p.dropped]:
                payment, kind = accounting.absence(rows[key], now, drop_after_ms, evidence=evidence)
                if kind != CHANGE_UNCHANGED:
                    tx.write_payment(payment)
                    rows[key] = payment
                    changes.append(PaymentChange(payment, kind))
    payments = sorted(rows.values(), key=lambda p: (p.first_seen_at, p.payment_id))
    update, new_events = check_decision(rid, decide(receiver, list(payments), list(changes)))
    if update is not None:
        updates[rid] = update  # the latest state wins
        receiver = receivers[rid] = apply_update(receiver, update)
    events = [_outbox_event(rid, event, now) for event in new_events]
    return ReceiverResult(receiver, payments, changes, events)


def cancel_receiver(tx: Transaction, receiver_id: int, now: int) -> Receiver:
    """The merchant's cancel as a unit of work: lock the receiver, apply the domain's
    rule (``accounting.cancel``), write it. Returns the receiver as stored; raises
    NotFound, or Conflict for a receiver that is paid, settled or expired. Cancelling
    twice returns the receiver unchanged."""
    receiver = tx.get_receiver(receiver_id)
    if receiver is None:
        raise NotFound(f"no receiver with id {receiver_id}", receiver_id=receiver_id)
    update = accounting.cancel(receiver, now)
    if update is None:
        return receiver
    tx.write_receivers([(receiver_id, update)])
    return apply_update(receiver, update)


def _outbox_event(receiver_id: int, event: NewEvent, now: int) -> OutboxEvent:
    """The outbox row of a newly enqueued event, as ``Transaction.enqueue`` stores it."""
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


def check_work(items: Sequence[ReceiverWork], now: int) -> None:
    """Refuse a malformed batch before any row is locked (InvalidParams says which value
    is wrong). The address is checked against the receiver inside the transaction."""
    if not is_int(now, 0, 2**63 - 1):
        raise InvalidParams(f"now must be epoch milliseconds (an integer), got {show(now)}")
    for item in items:
        if not isinstance(item, ReceiverWork):
            raise InvalidParams(f"a batch holds ReceiverWork items, got {show(item)}")
        rid = item.receiver_id
        if not is_int(rid, 1, 2**63 - 1):
            raise InvalidParams(f"receiver_id must be a positive integer, got {show(rid)}")
        for seen in item.observations:
            _check_observation(rid, seen)
        for what, txids in (("dropped", item.dropped_txids), ("absent", item.absent_txids)):
            for txid in txids:
                if not isinstance(txid, str) or not _TXID.fullmatch(txid):
                    raise InvalidParams(
                        f"{what} txid for receiver {rid} must be 64 lowercase hex "
                        f"characters, got {show(txid)}",
                        receiver_id=rid,
                    )


def _check_observation(receiver_id: int, seen: object) -> None:
    if not isinstance(seen, PaymentObservation):
        raise InvalidParams(f"expected a PaymentObservation, got {show(seen)}")
    problem = None
    if not isinstance(seen.txid, str) or not _TXID.fullmatch(seen.txid):
        problem = f"txid must be 64 lowercase hex characters, got {show(seen.txid)}"
    elif not isinstance(seen.address, str) or not seen.address:
        problem = f"address must be a non-empty string, got {show(seen.address)}"
    elif not is_int(seen.amount_duffs, 0, MAX_DUFFS):
        problem = f"amount_duffs must be an integer from 0 to {MAX_DUFFS}, got " + show(
            seen.amount_duffs
        )
    elif not isinstance(seen.instant_locked, bool):
        problem = f"instant_locked must be a bool, got {show(seen.instant_locked)}"
    else:
        for name in ("block_height", "confirmations"):
            value = getattr(seen, name)
            if value is not None and not is_int(value, 0, MAX_UNSIGNED_INT):
                problem = f"{name} must be None or an integer from 0 to {MAX_UNSIGNED_INT}, got "
                problem += show(value)
                break
    if problem is not None:
        raise InvalidParams(
            f"observation for receiver {receiver_id}: {problem}", receiver_id=receiver_id
        )


def check_decision(receiver_id: int, decision: object) -> tuple[ReceiverUpdate | None, list]:
    """``decide``'s answer, or ValueError: a wrong one is a bug in the rules, and writing
    it would corrupt money state (or hit a CHECK with a database-specific error)."""

    def bad(problem: str) -> ValueError:
        return ValueError(f"decide returned {problem} for receiver {receiver_id}")

    if not isinstance(decision, tuple) or len(decision) != 2:
        raise bad(f"{show(decision)} instead of (ReceiverUpdate | None, list[NewEvent])")
    update, events = decision
    if update is not None:
        if not isinstance(update, ReceiverUpdate):
            raise bad(f"an update that is not a ReceiverUpdate: {show(update)}")
        if not is_int(update.received_duffs, 0, 2**63 - 1):
            raise bad(f"received_duffs {show(update.received_duffs)}")
        if update.status not in STATUSES:
            raise bad(f"unknown status {show(update.status)}")
        for name in ("overpaid", "late"):
            if not isinstance(getattr(update, name), bool):
                raise bad(f"{name} {show(getattr(update, name))} (not a bool)")
        for name in ("paid_at", "settled_at", "closed_at", "updated_at"):
            value = getattr(update, name)
            if not (value is None and name != "updated_at") and not is_int(value, 0, 2**63 - 1):
                raise bad(f"{name} {show(value)} (not epoch milliseconds)")
    if not isinstance(events, list | tuple):
        raise bad(f"events {show(events)} (not a list)")
    for event in events:
        if not isinstance(event, NewEvent):
            raise bad(f"an event that is not a NewEvent: {show(event)}")
        if not isinstance(event.event_id, str) or not 0 < len(event.event_id) <= MAX_EVENT_ID_CHARS:
            raise bad(f"event_id {show(event.event_id)} (1 to {MAX_EVENT_ID_CHARS} characters)")
        if not isinstance(event.event, str) or not 0 < len(event.event) <= MAX_EVENT_NAME_CHARS:
            raise bad(f"event name {show(event.event)} (1 to {MAX_EVENT_NAME_CHARS} characters)")
        if not isinstance(event.payload, str):
            raise bad(f"payload {show(event.payload)} (not JSON text)")
        if len(event.payload.encode("utf-8")) > MAX_PAYLOAD_BYTES:
            raise bad(f"a {event.event} payload over {MAX_PAYLOAD_BYTES} bytes")
    return update, list(events)
