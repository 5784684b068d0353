"""The in-memory pending table: which addresses the daemon watches right now.

Owned by the payment engine task alone (no locks: nobody else touches it). It is a
cache of the database, refreshed from every unit of work's result; the database stays
the source of truth, so a restart rebuilds the table from it and a rescan.

Memory per entry matters (1M pending receivers must fit in ~300 B each): an entry is a
slots object with five fields, its status one of six shared strings, and a payments
dict only once the receiver has payments. The table is loaded from slim rows streamed
in chunks (``Repository.iter_pending``), never from full ``Receiver`` rows.

The engine's one-second tick must not walk a million entries, so the table keeps two
indexes on the side: receivers that can expire filed by ``expires_at`` and final
receivers filed by ``closed_at`` (``Deadlines``), and the ids of receivers holding a
payment that is not yet settled. A tick then costs what is due, not the table size.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from dashpay.domain.model import Payment, PaymentObservation, PendingRow, Receiver
from dashpay.domain.status import FINAL_STATUSES, PAID, PARTIAL, PENDING, STATUSES

EXPIRABLE = frozenset((PENDING, PARTIAL))
# Statuses whose unsettled payments the settlement checker follows.
SETTLING = frozenset((PARTIAL, PAID)) | FINAL_STATUSES
# One string object per status for the whole table: a million entries would otherwise
# each keep their own copy of 'pending' as the database driver handed it out (~56 B).
_INTERNED = {status: status for status in STATUSES}
# Width of a Deadlines bucket. A tick looks at the buckets that have begun, so an id
# whose time is later in the current bucket is looked at again on every tick until it
# is due (10 ticks at most), while a bucket costs ~150 B however few ids it holds:
# with receivers expiring at 1,000/s a bucket holds 10,000 ids (<1 B of overhead each),
# and it takes one expiry every 10 s before the overhead reaches the table's own size.
DEADLINE_BUCKET_MS = 10_000


@dataclass(slots=True)
class KnownPayment:
    instant_locked: bool
    confirmations: int
    block_height: int | None
    dropped: bool
    missing: bool = False  # the chain source stopped showing it (``missing_since``)

    @property
    def to_recheck(self) -> bool:
        """Re-checked against the source on the engine's timer: counted but not final
        (unlocked, in the mempool), or flagged missing."""
        if self.dropped:
            return False
        unmined = self.block_height is None and self.confirmations == 0
        return self.missing or (unmined and not self.instant_locked)


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

    def holds(self, txid: str) -> bool:
        """Is this transaction recorded (and counted) for the receiver already?"""
        known = None if self.payments is None else self.payments.get(txid)
        return known is not None and not known.dropped

    def unsettled_txids(self, confirmations: int) -> list[str]:
        if not self.payments:
            return []
        return [
            txid
            for txid, p in self.payments.items()
            if not p.dropped and not p.instant_locked and p.confirmations < confirmations
        ]

    @property
    def expiry(self) -> int | None:
        """When it expires if it still can, else None."""
        return self.expires_at if self.status in EXPIRABLE else None

    @property
    def closing(self) -> int | None:
        """When it became final (its monitoring window started), else None."""
        return self.closed_at if self.status in FINAL_STATUSES else None


class Deadlines:
    """Receiver ids filed under a time (epoch ms): a calendar of buckets
    ``DEADLINE_BUCKET_MS`` wide, with a heap of the bucket numbers in use.

    Filing is a hint, checked against the entry when taken out (lazy deletion): an id
    whose entry left the table or whose time changed is simply dropped then, so nothing
    is ever searched for and removed. Per id it costs one list slot (8 B) where a heap
    of ``(time, id)`` tuples would cost ~72 B.
    """

    __slots__ = ("_buckets", "_heap")

    def __init__(self) -> None:
        self._buckets: dict[int, list[int]] = {}
        self._heap: list[int] = []  # the keys of _buckets

    def __len__(self) -> int:
        return sum(len(ids) for ids in self._buckets.values())

    def file(self, when: int, receiver_id: int) -> None:
        key = when // DEADLINE_BUCKET_MS
        ids = self._buckets.get(key)
        if ids is None:
            self._buckets[key] = [receiver_id]
            heapq.heappush(self._heap, key)
        else:
            ids.append(receiver_id)

    def take(self, until: int) -> list[int]:
        """Remove and return the ids of every bucket that may hold a time <= ``until``
        (each id once). The caller files again those that must stay."""
        last = until // DEADLINE_BUCKET_MS
        heap, buckets = self._heap, self._buckets
        taken: dict[int, None] = {}
        while heap and heap[0] <= last:
            taken.update(dict.fromkeys(buckets.pop(heapq.heappop(heap))))
        return list(taken)


class PendingTable:
    def __init__(self) -> None:
        self._by_address: dict[str, PendingReceiver] = {}
        self._by_id: dict[int, PendingReceiver] = {}
        # Invariant: an entry that can expire is filed in _expiries under its
        # expires_at, a final one in _closings under its closed_at.
        self._expiries = Deadlines()
        self._closings = Deadlines()
        # Ids whose payments include one neither dropped nor InstantSend-locked: what
        # the settlement checker may have to follow (it also checks confirmations).
        self._unsettled: set[int] = set()
        # Ids holding a payment the engine's timer re-checks (``KnownPayment.to_recheck``).
        self._recheck: set[int] = set()

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, address: str) -> PendingReceiver | None:
        return self._by_address.get(address)

    @property
    def addresses(self) -> Mapping[str, PendingReceiver]:
        """The address index itself, live (updated in place, never replaced): for a
        membership test per output on the socket's hot path."""
        return self._by_address

    def by_id(self, receiver_id: int) -> PendingReceiver | None:
        return self._by_id.get(receiver_id)

    def load(self, rows: Iterable[PendingRow]) -> int:
        """Bootstrap: add every row (as ``Repository.iter_pending`` yields them);
        returns how many were read."""
        count = 0
        put = self._put
        for receiver_id, address, status, expires_at, closed_at in rows:
            put(receiver_id, address, status, expires_at, closed_at)
            count += 1
        return count

    def add(self, receiver: Receiver) -> PendingReceiver:
        return self._put(
            receiver.receiver_id,
            receiver.address,
            receiver.status,
            receiver.expires_at,
            receiver.closed_at,
        )

    def refresh(self, receiver: Receiver, payments: list[Payment]) -> PendingReceiver | None:
        """Take a recorded receiver's new state (a unit of work's result), if it is
        still in the table."""
        entry = self._by_id.get(receiver.receiver_id)
        if entry is None:
            return None
        self._update(entry, receiver.status, receiver.expires_at, receiver.closed_at)
        if payments:
            entry.payments = known = {
                p.txid: KnownPayment(
                    p.instant_locked,
                    p.confirmations,
                    p.block_height,
                    p.dropped,
                    p.missing_since is not None and not p.dropped,
                )
                for p in payments
            }
            if any(not p.dropped and not p.instant_locked for p in payments):
                self._unsettled.add(entry.receiver_id)
            else:
                self._unsettled.discard(entry.receiver_id)
            if any(k.to_recheck for k in known.values()):
                self._recheck.add(entry.receiver_id)
            else:
                self._recheck.discard(entry.receiver_id)
        return entry

    def remove(self, receiver_id: int) -> None:
        entry = self._by_id.pop(receiver_id, None)
        if entry is not None:
            self._by_address.pop(entry.address, None)
            self._unsettled.discard(receiver_id)
            self._recheck.discard(receiver_id)

    def entries(self) -> list[PendingReceiver]:
        return list(self._by_id.values())

    def _put(
        self,
        receiver_id: int,
        address: str,
        status: str,
        expires_at: int | None,
        closed_at: int | None,
    ) -> PendingReceiver:
        entry = self._by_id.get(receiver_id)
        if entry is not None:
            self._update(entry, status, expires_at, closed_at)
            return entry
        entry = PendingReceiver(
            receiver_id, address, _INTERNED.get(status, status), expires_at, closed_at
        )
        self._by_id[receiver_id] = entry
        self._by_address[address] = entry
        if (when := entry.expiry) is not None:
            self._expiries.file(when, receiver_id)
        if (when := entry.closing) is not None:
            self._closings.file(when, receiver_id)
        return entry

    def _update(
        self, entry: PendingReceiver, status: str, expires_at: int | None, closed_at: int | None
    ) -> None:
        expiry, closing = entry.expiry, entry.closing
        entry.status = _INTERNED.get(status, status)
        entry.expires_at = expires_at
        entry.closed_at = closed_at
        # Filed again only when the time it is filed under changes (an old filing is
        # dropped when taken); an unchanged one is already where it belongs.
        if (when := entry.expiry) is not None and when != expiry:
            self._expiries.file(when, entry.receiver_id)
        if (when := entry.closing) is not None and when != closing:
            self._closings.file(when, entry.receiver_id)

    def due_to_expire(self, now: int) -> list[int]:
        """Receivers not paid by their ``expires_at <= now``. Each stays due (and is
        returned again at the next tick) until its status moves on, as the engine
        expects if recording the expiry failed."""
        due = []
        expiries = self._expiries
        last = now // DEADLINE_BUCKET_MS
        for receiver_id in expiries.take(now):
            entry = self._by_id.get(receiver_id)
            when = None if entry is None else entry.expiry
            if when is None or when // DEADLINE_BUCKET_MS > last:
                continue  # gone, cannot expire any more, or filed again elsewhere
            if when <= now:
                due.append(receiver_id)
            expiries.file(when, receiver_id)
        return due

    def past_window(self, now: int, window: int) -> list[int]:
        """Final receivers whose monitoring window is over (``closed_at + window <
        now``): they leave the table. Until the caller removes one it stays filed."""
        due = []
        closings = self._closings
        until = now - window
        last = until // DEADLINE_BUCKET_MS
        for receiver_id in closings.take(until):
            entry = self._by_id.get(receiver_id)
            when = None if entry is None else entry.closing
            if when is None or when // DEADLINE_BUCKET_MS > last:
                continue
            if when + window < now:
                due.append(receiver_id)
            closings.file(when, receiver_id)
        return due

    def awaiting_settlement(self, confirmations: int) -> list[tuple[int, str, list[str]]]:
        """Receivers with payments short of ``confirmations`` and not locked, by id:
        proportional to the receivers with such payments, not to the table."""
        out = []
        for receiver_id in sorted(self._unsettled):
            e = self._by_id[receiver_id]
            if e.status in SETTLING:
                txids = e.unsettled_txids(confirmations)
                if txids:
                    out.append((e.receiver_id, e.address, txids))
        return out

    def to_recheck(self) -> list[tuple[int, str]]:
        """(id, address) of the receivers holding a payment to re-check against the
        source (unlocked mempool, or flagged missing), by id."""
        return [(rid, self._by_id[rid].address) for rid in sorted(self._recheck)]

    def missing_payments(self) -> int:
        """Payments the source stopped showing, still counted (``status`` shows it)."""
        return sum(
            1
            for rid in self._recheck
            for k in (self._by_id[rid].payments or {}).values()
            if k.missing
        )
