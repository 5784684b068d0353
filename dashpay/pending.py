"""The in-memory pending table: which addresses the daemon watches right now.

Owned by the payment engine task alone (no locks: nobody else touches it). It is a
cache of the database, refreshed from every unit of work's result; the database stays
the source of truth, so a restart rebuilds the table from it and a rescan.

Memory per entry matters (1M pending receivers must fit): a slots object with a
payments dict only once the receiver has payments.
"""

from __future__ import annotations

from dataclasses import dataclass

from dashpay.repository.base import (
    FINAL_STATUSES,
    PAID,
    PARTIAL,
    PENDING,
    Payment,
    PaymentObservation,
    Receiver,
)

EXPIRABLE = (PENDING, PARTIAL)


@dataclass(slots=True)
class KnownPayment:
    instant_locked: bool
    confirmations: int
    block_height: int | None
    dropped: bool


@dataclass(slots=True)
class PendingReceiver:
    receiver_id: int
    address: str
    status: str
    expires_at: int | None
    closed_at: int | None
    payments: dict[str, KnownPayment] | None = None

    def is_news(self, obs: PaymentObservation) -> bool:
        """Would recording this observation change anything? Duplicate `tx`/`txlock`
        events and rescans of known payments skip the database entirely."""
        if self.payments is None:
            return True
        known = self.payments.get(obs.txid)
        if known is None or known.dropped:
            return True
        if obs.instant_locked and not known.instant_locked:
            return True
        if obs.block_height is not None and obs.block_height != known.block_height:
            return True
        return obs.confirmations is not None and obs.confirmations > known.confirmations

    def unsettled_txids(self, confirmations: int) -> list[str]:
        if not self.payments:
            return []
        return [
            txid
            for txid, p in self.payments.items()
            if not p.dropped and not p.instant_locked and p.confirmations < confirmations
        ]

    def refresh(self, receiver: Receiver, payments: list[Payment]) -> None:
        self.status = receiver.status
        self.expires_at = receiver.expires_at
        self.closed_at = receiver.closed_at
        if payments:
            self.payments = {
                p.txid: KnownPayment(p.instant_locked, p.confirmations, p.block_height, p.dropped)
                for p in payments
            }


class PendingTable:
    def __init__(self) -> None:
        self._by_address: dict[str, PendingReceiver] = {}
        self._by_id: dict[int, PendingReceiver] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, address: str) -> PendingReceiver | None:
        return self._by_address.get(address)

    def by_id(self, receiver_id: int) -> PendingReceiver | None:
        return self._by_id.get(receiver_id)

    def add(self, receiver: Receiver) -> PendingReceiver:
        entry = self._by_id.get(receiver.receiver_id)
        if entry is None:
            entry = PendingReceiver(
                receiver.receiver_id,
                receiver.address,
                receiver.status,
                receiver.expires_at,
                receiver.closed_at,
            )
            self._by_id[receiver.receiver_id] = entry
            self._by_address[receiver.address] = entry
        else:
            entry.status = receiver.status
            entry.expires_at = receiver.expires_at
            entry.closed_at = receiver.closed_at
        return entry

    def remove(self, receiver_id: int) -> None:
        entry = self._by_id.pop(receiver_id, None)
        if entry is not None:
            self._by_address.pop(entry.address, None)

    def entries(self) -> list[PendingReceiver]:
        return list(self._by_id.values())

    def due_to_expire(self, now: int) -> list[int]:
        return [
            e.receiver_id
            for e in self._by_id.values()
            if e.status in EXPIRABLE and e.expires_at is not None and e.expires_at <= now
        ]

    def past_window(self, now: int, window: int) -> list[int]:
        """Final receivers whose monitoring window is over: they leave the table."""
        return [
            e.receiver_id
            for e in self._by_id.values()
            if e.status in FINAL_STATUSES and e.closed_at is not None and e.closed_at + window < now
        ]

    def awaiting_settlement(self, confirmations: int) -> list[tuple[int, str, list[str]]]:
        out = []
        for e in self._by_id.values():
            if e.status in (PARTIAL, PAID) or e.status in FINAL_STATUSES:
                txids = e.unsettled_txids(confirmations)
                if txids:
                    out.append((e.receiver_id, e.address, txids))
        return out
