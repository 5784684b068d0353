"""Socket events are hints: a payment they announce is read back over REST before it
counts (README "What an event is trusted with").

A ``tx``/``txlock`` event for a transaction the receiver does not hold yet could be
forged or wrong (a hostile or buggy Insight, a man in the middle on plain http). The
engine hands such claims here instead of recording them (``PaymentEngine.verify``);
the verifier reads the addresses' history over REST (``POST /addrs/txs``: fresh for
the mempool, unlike ``tx/<txid>``, which Insight caches until the next block), and
gives the engine what REST says:

- the transaction must exist and pay the receiver's address, or the claim is refused;
- the amount credited is REST's, never the event's (a difference is logged);
- a lock is taken from the event only for a transaction that passed the read-back:
  Insight's REST keeps ``txlock`` false until the next block, so it cannot confirm a
  fresh lock itself. Later events for a payment already recorded (its lock, a block)
  go to the engine directly: the transaction is known to exist.

Claims are batched: while one read is in flight the next ones gather, so a burst of
1,000 payments costs a few history requests, not 1,000. The addresses of a batch are
read ``ChainSource.readback_batch`` at a time (Insight: 50, one page of history for
addresses that each claim a tx), up to ``lookup_concurrency`` reads side by side, and
each read's payments go to the engine as soon as it is checked: a burst's first
payments are recorded while the rest are still being read. A transaction REST does not
show yet is asked for again (``NOT_FOUND_RETRIES``), then given up with a warning (a
real one is found by the next rescan). While REST fails, claims wait and are retried.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import trio

from dashpay.domain.backoff import Backoff
from dashpay.domain.model import PaymentObservation, ReceiverWork
from dashpay.domain.observations import SourceError, TxObserved
from dashpay.engine.loop import PaymentEngine, observation
from dashpay.engine.messages import Apply
from dashpay.net.chain import ChainLookups, ChainSource

log = logging.getLogger("dashpay.verify")

# Claims waiting for their read-back, at most. Each is a matched event for one of our
# addresses; beyond this (a flood of forged claims) new ones are refused with a warning
# and a real payment among them is found by the next rescan.
MAX_CLAIMS = 10_000
# Seconds to wait before asking REST again for a transaction it did not show yet; then
# the claim is given up (~8 s in all: Insight indexes a tx before it emits its event).
NOT_FOUND_RETRY_DELAYS = (0.25, 0.5, 1.0, 2.0, 4.0)
NOT_FOUND_RETRIES = len(NOT_FOUND_RETRY_DELAYS)
# Transactions recently read back, remembered so a `txlock` right after its `tx` (or
# one tx paying several receivers) is not read again.
VERIFIED_CACHE = 4_096
# While REST fails, waiting claims are retried after these delays (seconds).
REST_RETRY_INITIAL = 0.5
REST_RETRY_MAX = 10.0


@dataclass(slots=True)
class Claim:
    receiver_id: int
    address: str
    seen: PaymentObservation  # what the event said
    attempts: int = 0  # REST answered without this tx this many times


@dataclass(slots=True)
class VerifyStats:
    claims: int = 0
    verified: int = 0
    refused: int = 0  # REST shows the tx, but it does not pay the address
    given_up: int = 0  # REST never showed the tx
    amount_mismatches: int = 0
    overflow: int = 0
    rest_errors: int = 0
    last_refused: dict | None = field(default=None)

    def as_dict(self) -> dict:
        return {
            "claims": self.claims,
            "verified": self.verified,
            "refused": self.refused,
            "given_up": self.given_up,
            "amount_mismatches": self.amount_mismatches,
            "overflow": self.overflow,
            "rest_errors": self.rest_errors,
            "last_refused": dict(self.last_refused) if self.last_refused else None,
        }


class Verifier:
    """Reads back the payments socket events announce; see the module docstring."""

    @property
    def rest(self) -> ChainLookups:
        """The source's lookups (Insight REST, Blockbook's requests)."""
        return self.source.lookups

    def __init__(self, source: ChainSource, engine: PaymentEngine) -> None:
        self.source = source
        self.engine = engine
        self.stats = VerifyStats()
        # (receiver id, txid) -> claim, in arrival order; merged when claimed twice.
        self._waiting: dict[tuple[int, str], Claim] = {}
        self._wake = trio.Event()
        self._verified: OrderedDict[str, TxObserved] = OrderedDict()
        self._nursery: trio.Nursery | None = None

    def claim(self, receiver_id: int, address: str, seen: PaymentObservation) -> None:
        """Called by the engine (synchronously, never blocks) for a payment it does not
        hold yet. A second claim of the same payment (its `txlock`) merges the lock."""
        self.stats.claims += 1
        key = (receiver_id, seen.txid)
        waiting = self._waiting.get(key)
        if waiting is not None:
            if seen.instant_locked and not waiting.seen.instant_locked:
                waiting.seen = seen
            return
        if len(self._waiting) >= MAX_CLAIMS:
            self.stats.overflow += 1
            log.warning(
                "tx event not verified: %d claims already wait txid=%s receiver=%d; the next "
                "rescan records it if it is real",
                MAX_CLAIMS,
                seen.txid,
                receiver_id,
            )
            return
        self._waiting[key] = Claim(receiver_id, address, seen)
        self._wake.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Read back what has gathered, batch after batch. Never returns unless
        cancelled."""
        backoff = Backoff(REST_RETRY_INITIAL, REST_RETRY_MAX)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            while True:
                await self._wake.wait()
                self._wake = trio.Event()
                claims, self._waiting = list(self._waiting.values()), {}
                if not claims:
                    continue
                failed, error = await self._verify_all(claims)
                if error is None:
                    backoff.reset()
                    continue
                self.stats.rest_errors += 1
                delay = backoff.next_delay()
                log.warning(
                    "tx events wait for %s claims=%d retry_in=%.1fs error=%s",
                    self.source.lookup_name,
                    len(failed),
                    delay,
                    error,
                )
                self._requeue(failed)
                await trio.sleep(delay)
                self._wake.set()

    def _requeue(self, claims: list[Claim]) -> None:
        for claim in claims:
            key = (claim.receiver_id, claim.seen.txid)
            self._waiting.setdefault(key, claim)

    async def _verify_all(self, claims: list[Claim]) -> tuple[list[Claim], SourceError | None]:
        """Read back ``claims`` in groups (see the module docstring). Returns the claims
        of the groups whose read failed, to be asked again, and the last such error."""
        groups = self._groups(claims)
        failed: list[Claim] = []
        error: SourceError | None = None

        async def one(group: list[Claim], limiter: trio.CapacityLimiter | None) -> None:
            nonlocal error
            try:
                if limiter is None:
                    await self._verify(group)
                else:
                    async with limiter:
                        await self._verify(group)
            except SourceError as exc:
                failed.extend(group)
                error = exc

        if len(groups) == 1:  # a lone payment, or one batch: no tasks to spawn
            await one(groups[0], None)
        else:
            limiter = trio.CapacityLimiter(self.source.lookup_concurrency)
            async with trio.open_nursery() as nursery:
                for group in groups:
                    nursery.start_soon(one, group, limiter)
        return failed, error

    def _groups(self, claims: list[Claim]) -> list[list[Claim]]:
        """``claims`` split by ``readback_batch`` addresses; the claims of txs read back
        already come first, in a group of their own that needs no read."""
        known = [c for c in claims if c.seen.txid in self._verified]
        by_address: dict[str, list[Claim]] = {}
        for claim in claims:
            if claim.seen.txid not in self._verified:
                by_address.setdefault(claim.address, []).append(claim)
        size = self.source.readback_batch or len(by_address) or 1
        addresses = list(by_address)
        groups = [known] if known else []
        for start in range(0, len(addresses), size):
            groups.append([c for a in addresses[start : start + size] for c in by_address[a]])
        return groups

    async def _verify(self, claims: list[Claim]) -> None:
        unknown = [c for c in claims if c.seen.txid not in self._verified]
        if unknown:
            history = await self.rest.address_history(list({c.address: None for c in unknown}))
            for tx in history:
                self._remember(tx)
            # Not in the address's history: does the tx exist at all (then it does not
            # pay the address and is refused at once), or not yet (asked again later)?
            absent = {c.seen.txid for c in unknown if c.seen.txid not in self._verified}
            if absent:
                await self._look_up(absent)
        work: list[ReceiverWork] = []
        for claim in claims:
            tx = self._verified.get(claim.seen.txid)
            if tx is None:
                self._not_found(claim)
                continue
            credited = self._checked(claim, tx)
            if credited is not None:
                work.append(ReceiverWork(claim.receiver_id, (credited,)))
        if work:
            self.stats.verified += len(work)
            # Handed to the engine without waiting for its unit of work: the results
            # are the engine's to act on, and waiting cost this task one more wake-up
            # per payment. The engine's channel is bounded, so a stalled database
            # still stops the read-backs here (the claims then wait in _waiting).
            await self.engine.submit(Apply(work))

    async def _look_up(self, txids: set[str]) -> None:
        limiter = trio.CapacityLimiter(self.source.lookup_concurrency)

        async def one(txid: str) -> None:
            async with limiter:
                try:
                    tx = await self.rest.tx(txid)
                except SourceError as exc:  # asked again with the not-found claims
                    log.warning("tx read-back failed txid=%s error=%s", txid, exc)
                    return
            if tx is not None:
                self._remember(tx)

        async with trio.open_nursery() as nursery:
            for txid in txids:
                nursery.start_soon(one, txid)

    def _checked(self, claim: Claim, tx: TxObserved) -> PaymentObservation | None:
        """What is credited for ``claim``: REST's amount, confirmations and height, the
        lock if either says so; None if REST says the tx does not pay the address."""
        duffs = tx.outputs.get(claim.address)
        seen = claim.seen
        if duffs is None:
            self.stats.refused += 1
            self.stats.last_refused = {
                "at": time.time(),
                "txid": seen.txid,
                "receiver_id": claim.receiver_id,
                "reason": (
                    f"{self.source.lookup_name} shows this tx without an output to the address"
                ),
            }
            log.warning(
                "tx event refused: %s shows tx %s without an output to %s "
                "(receiver %d); the event claimed %d duffs",
                self.source.lookup_name,
                seen.txid,
                claim.address,
                claim.receiver_id,
                seen.amount_duffs,
            )
            return None
        if duffs != seen.amount_duffs:
            self.stats.amount_mismatches += 1
            log.warning(
                "tx event amount differs from %s txid=%s receiver=%d event=%d "
                "rest=%d: crediting REST's",
                self.source.lookup_name,
                seen.txid,
                claim.receiver_id,
                seen.amount_duffs,
                duffs,
            )
        credited = observation(tx, claim.address, duffs)
        if seen.instant_locked and not credited.instant_locked:
            # REST cannot confirm a fresh lock (it lags until the next block); the tx
            # itself has just been confirmed to exist, so the event's lock is taken.
            credited = PaymentObservation(
                credited.txid,
                credited.address,
                credited.amount_duffs,
                True,
                credited.block_height,
                credited.confirmations,
            )
        return credited

    def _not_found(self, claim: Claim) -> None:
        if claim.attempts >= NOT_FOUND_RETRIES:
            self.stats.given_up += 1
            log.warning(
                "tx event ignored: %s does not show tx %s for %s (receiver %d) "
                "after %d reads; the next rescan records it if it is real",
                self.source.lookup_name,
                claim.seen.txid,
                claim.address,
                claim.receiver_id,
                claim.attempts + 1,
            )
            return
        delay = NOT_FOUND_RETRY_DELAYS[claim.attempts]
        claim.attempts += 1
        assert self._nursery is not None
        self._nursery.start_soon(self._later, claim, delay)

    async def _later(self, claim: Claim, delay: float) -> None:
        await trio.sleep(delay)
        self._requeue([claim])
        self._wake.set()

    def _remember(self, tx: TxObserved) -> None:
        cache = self._verified
        cache[tx.txid] = tx
        cache.move_to_end(tx.txid)
        while len(cache) > VERIFIED_CACHE:
            cache.popitem(last=False)
