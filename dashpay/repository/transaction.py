"""``SqlTransaction``: the narrow operations of the payment write path, on one open
write transaction (``SqlRepository.transaction`` makes one per unit of work).

The repository does not decide anything here: the engine's ``record_batch`` (and the
cancel unit) reads the locked rows, applies the domain rules and hands back what to
write. The batching that makes a payment cheap lives in these operations: receivers are
locked with one SELECT per 512 ids, their payments read with one more, each receiver's
latest state is written once at the end (``write_receivers``: one executemany on
SQLite, one UPDATE joined to a derived table per 256 receivers on MySQL), and every
outbox row of the batch goes in one multi-row INSERT (``enqueue``). Nothing is read
back: the caller builds its results from the locked rows plus what it wrote.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from dashpay.domain.errors import Conflict, DashpayError
from dashpay.domain.model import (
    AttemptOutcome,
    OutboxEvent,
    Payment,
    PaymentObservation,
    Receiver,
    ReceiverUpdate,
)
from dashpay.repository.schema import (
    INSERT_EVENT,
    INSERT_PAYMENT,
    RECEIVER_COLUMNS,
    SELECT_PAYMENT,
    SELECT_RECEIVER,
    SELECT_RECEIVER_PAYMENTS,
    UPDATE_PAYMENT,
    check_outcome,
    in_lists,
    plain,
)

if TYPE_CHECKING:
    from dashpay.repository.sql import SqlRepository


class SqlTransaction:
    """One write transaction of ``repo`` on cursor ``cur``. Valid only inside the
    ``transaction`` call that made it."""

    __slots__ = ("_repo", "_cur", "_execute", "_receiver_from_row", "_payment_from_row", "fenced")

    def __init__(self, repo: SqlRepository, cur: Any) -> None:
        self._repo = repo
        self._cur = cur
        # Whether a statement of this transaction already checked and renewed the
        # wallet's lease (``SqlRepository._fence``): then it needs no fence of its own.
        self.fenced = False
        self._execute = repo._execute
        self._receiver_from_row = repo._receiver_from_row
        self._payment_from_row = repo._payment_from_row

    def get_receiver(self, receiver_id: int, *, lock: bool = True) -> Receiver | None:
        """One receiver, locked until commit by default (FOR UPDATE on MySQL; SQLite's
        write transaction already excludes other writers)."""
        sql = f"{SELECT_RECEIVER} WHERE receiver_id = ?" + (self._repo._for_update if lock else "")
        row = self._execute(self._cur, sql, (receiver_id,)).fetchone()
        return None if row is None else self._receiver_from_row(row)

    def lock_receivers(self, ids: Sequence[int]) -> dict[int, Receiver]:
        """The receivers of ``ids`` that exist, locked in ascending id order (every
        writer of several receivers takes them in that order, so none deadlock)."""
        found: dict[int, Receiver] = {}
        convert = self._receiver_from_row
        suffix = self._repo._for_update
        for chunk, params in in_lists(sorted(set(ids))):
            sql = f"{SELECT_RECEIVER} WHERE receiver_id IN ({chunk}) ORDER BY receiver_id"
            for row in self._execute(self._cur, sql + suffix, params).fetchall():
                receiver = convert(row)
                found[receiver.receiver_id] = receiver
        return found

    def lock_receivers_with_payments(
        self, ids: Sequence[int]
    ) -> tuple[dict[int, Receiver], dict[int, list[Payment]]]:
        """``lock_receivers`` and ``payments_of`` in one statement per 512 ids (a
        LEFT JOIN, receivers in ascending id order, each one's payments in payment id
        order): the receivers of ``ids`` that exist, locked, and the payments of each
        (an empty list for one without)."""
        receivers: dict[int, Receiver] = {}
        payments: dict[int, list[Payment]] = {}
        receiver_from_row = self._receiver_from_row
        payment_from_row = self._payment_from_row
        width = len(RECEIVER_COLUMNS)
        for chunk, params in in_lists(sorted(set(ids))):
            sql = (
                f"{SELECT_RECEIVER_PAYMENTS} WHERE r.receiver_id IN ({chunk})"
                f" ORDER BY r.receiver_id, p.payment_id{self._repo._for_update}"
            )
            for row in self._execute(self._cur, sql, params).fetchall():
                rid = row[0]
                found = payments.get(rid)
                if found is None:
                    receivers[rid] = receiver_from_row(row[:width])
                    found = payments[rid] = []
                if row[width] is not None:  # the payment's id: NULL when it has none
                    found.append(payment_from_row(row[width:]))
        return receivers, payments

    def payments_of(self, ids: Sequence[int]) -> dict[int, list[Payment]]:
        """Every payment of each receiver in ``ids`` (sorted), in payment id order; a
        receiver without payments maps to an empty list."""
        found: dict[int, list[Payment]] = {rid: [] for rid in ids}
        convert = self._payment_from_row
        for chunk, params in in_lists(ids):
            sql = f"{SELECT_PAYMENT} WHERE receiver_id IN ({chunk}) ORDER BY payment_id"
            for row in self._execute(self._cur, sql, params).fetchall():
                payment = convert(row)
                found[payment.receiver_id].append(payment)
        return found

    def insert_payment(self, receiver_id: int, seen: PaymentObservation, now: int) -> Payment:
        """A new payment row for ``seen`` (not dropped, first seen ``now``), as stored.
        Conflict if (txid, address) is already recorded for another receiver."""
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
        cur = self._cur
        try:
            self._execute(cur, INSERT_PAYMENT, values)
        except Exception as exc:
            if not self._repo._is_unique_violation(exc):
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

    def write_payment(self, payment: Payment) -> None:
        """Store a payment's mutable state (lock, height, confirmations, dropped,
        missing_since)."""
        values = (
            int(payment.instant_locked),
            payment.block_height,
            payment.confirmations,
            int(payment.dropped),
            payment.missing_since,
            payment.updated_at,
            payment.payment_id,
        )
        self._execute(self._cur, UPDATE_PAYMENT, values)

    def write_receivers(self, updates: Sequence[tuple[int, ReceiverUpdate]]) -> None:
        """Write each receiver's new state (ascending id, one entry per receiver), in
        as few statements as the backend allows; on MySQL the first of them is also
        the transaction's fence (a payment's transaction saves that statement)."""
        if updates:
            folded = self._repo._write_receiver_updates(self._cur, updates, fence=not self.fenced)
            self.fenced = self.fenced or folded

    def enqueue(self, events: Sequence[OutboxEvent]) -> None:
        """Insert the outbox rows in one multi-row INSERT, in order (their seq follows
        it). Conflict for an event id given twice or already stored."""
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
        cur = self._cur
        try:
            self._repo._executemany(cur, INSERT_EVENT, rows)
        except Exception as exc:
            if not self._repo._is_unique_violation(exc):
                raise
            taken = ids[0]
            for chunk, params in in_lists(sorted(ids)):
                sql = f"SELECT event_id FROM callback_outbox WHERE event_id IN ({chunk})"
                row = self._execute(cur, sql, params).fetchone()
                if row is not None:
                    taken = plain(row[0])
                    break
            raise Conflict(
                f"callback event id {taken} already exists; event ids must be unique",
                event_id=taken,
            ) from None

    def record_callback_attempts(
        self, attempts: Sequence[tuple[str, AttemptOutcome]]
    ) -> list[DashpayError | None]:
        """``Repository.record_callback_attempts`` inside this transaction: the callback
        sender's delivery outcomes carried by the engine's unit of work, so a lone
        payment costs one transaction, not one for the payment and one for its
        callback's outcome."""
        checked = [(event_id, check_outcome(outcome)) for event_id, outcome in attempts]
        if not checked:
            return []
        return self._repo._record_attempts(self._cur, checked)
