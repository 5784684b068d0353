"""Reconciliation against the chain source's lookups (``net/chain.py``; Insight REST,
Blockbook): rescans and settlement checks.

A rescan reads the complete history of the receivers' addresses, records every payment
found (through the engine, so it is the same single code path as a socket event), and
reports the stored payments Insight no longer shows (``absent_txids``): the domain flags
them missing, and drops only an unlocked mempool payment that stays absent for
``[receivers] drop_after`` (``accounting.absence``). A pass that finds too much missing
at once (``accounting.source_reset_suspected``: an Insight that lost its mempool) holds
instead and warns. It runs at every socket (re)connect, because Insight never replays
missed events, whenever `dashpay rescan` asks (a full rescan already running is joined,
not repeated) and, for the receivers holding unlocked mempool or missing payments, on
the re-check timer (``recheck_loop``).

The settlement checker refreshes confirmations of unsettled payments after each new
block (Insight sends no event when a mempool tx is mined) and, for a source that
pushes no lock events (Blockbook), every ``settle_poll`` seconds.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import trio

from dashpay.domain.accounting import payment_final, source_reset_suspected
from dashpay.domain.clock import now_ms
from dashpay.domain.errors import DashpayError, NotFound, Unavailable
from dashpay.domain.model import Payment, PaymentObservation, ReceiverResult, ReceiverWork
from dashpay.domain.observations import BlockObserved, SourceError, TxObserved
from dashpay.domain.status import ARRIVALS, CHANGE_DROPPED, CHANGE_MISSING
from dashpay.engine.loop import PaymentEngine, observation
from dashpay.net.chain import ChainLookups, ChainSource
from dashpay.repository.base import Repository
from dashpay.wire.prometheus import Histogram

log = logging.getLogger("dashpay.rescan")

# Receivers per history request batch handed to the engine at once; the REST client
# batches addresses itself, this bounds memory for a 100k-receiver rescan.
RESCAN_CHUNK = 2_000
# Chunks in flight at once: two chunks' address batches (1,000 addresses each) keep the
# REST client's four requests busy while a finished chunk is being recorded.
RESCAN_PIPELINE = 2
# The re-check timer runs every drop_after / RECHECK_PER_DROP_AFTER, within these bounds:
# an unlocked payment that vanished is dropped at most a fifth of drop_after late.
RECHECK_PER_DROP_AFTER = 5
RECHECK_MIN_SECONDS = 1.0
RECHECK_MAX_SECONDS = 60.0
# What a rescan pass was for, as GET /metrics labels its durations: every watched
# receiver (at each socket connect and `rescan --all-pending`), the receivers a
# `rescan` named (ids or --since), or the re-check timer's few.
RESCAN_FULL = "full"
RESCAN_SELECTED = "selected"
RESCAN_RECHECK = "recheck"
RESCAN_KINDS = (RESCAN_FULL, RESCAN_SELECTED, RESCAN_RECHECK)
# Bucket bounds of the rescan durations (seconds): a re-check of a few receivers takes
# tens of milliseconds, a full rescan of 100k receivers minutes.
RESCAN_DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)


def recheck_interval(drop_after_ms: int) -> float:
    """Seconds between re-checks of unlocked mempool and missing payments."""
    seconds = drop_after_ms / 1000 / RECHECK_PER_DROP_AFTER
    return min(RECHECK_MAX_SECONDS, max(RECHECK_MIN_SECONDS, seconds))


@dataclass(slots=True)
class RescanSummary:
    receivers: int = 0
    transactions: int = 0
    payments_found: int = 0
    payments_new: int = 0
    payments_dropped: int = 0
    payments_missing: int = 0  # newly flagged missing in this pass
    payments_checked: int = 0  # stored payments whose presence this pass checked
    held: bool = False  # too much missing at once: nothing flagged or dropped
    started_at: float = 0.0
    duration_seconds: float = 0.0
    complete: bool = True

    def as_dict(self) -> dict[str, Any]:
        return {
            "receivers_checked": self.receivers,
            "transactions_seen": self.transactions,
            "payments_found": self.payments_found,
            "payments_new": self.payments_new,
            "payments_dropped": self.payments_dropped,
            "payments_missing": self.payments_missing,
            "held": self.held,
            "duration_seconds": round(self.duration_seconds, 3),
            "complete": self.complete,
        }


def observations_for(
    tx: TxObserved, addresses: dict[str, int]
) -> list[tuple[int, PaymentObservation]]:
    out = []
    for address, duffs in tx.outputs.items():
        receiver_id = addresses.get(address)
        if receiver_id is not None:
            out.append((receiver_id, observation(tx, address, duffs)))
    return out


class Reconciler:
    @property
    def rest(self) -> ChainLookups:
        """The source's lookups (Insight REST, Blockbook's requests)."""
        return self.source.lookups

    def __init__(
        self, repo: Repository, source: ChainSource, engine: PaymentEngine, wallet_id: str
    ) -> None:
        self.repo = repo
        self.source = source
        self.engine = engine
        self.wallet_id = wallet_id
        # Full rescans one at a time (FIFO), numbered as they start; the newest done.
        self._full_lock = trio.Lock()
        self._full_started = 0
        self._full_done = 0  # the number of the one ``last_full`` is
        self.last_full: RescanSummary | None = None
        self.last_full_at: float | None = None
        self.running = 0
        # The last pass that held (too much missing at once), for `status`.
        self.last_hold: dict[str, Any] | None = None
        # How long each pass took, by kind, since the daemon started (GET /metrics).
        self.durations = {kind: Histogram(RESCAN_DURATION_BUCKETS) for kind in RESCAN_KINDS}

    # -- control method -----------------------------------------------------------------
    async def rescan_request(
        self, receiver_ids: list[int] | None, since_seconds: float | None
    ) -> dict[str, Any]:
        """The ``rescan`` command: the named receivers, those created in the last
        ``since_seconds``, or (neither) every watched receiver."""
        if receiver_ids is not None:
            summary = await self.rescan(await self._targets_by_id(receiver_ids))
        elif since_seconds is not None:
            cutoff = now_ms() - int(since_seconds * 1000)
            targets = await trio.to_thread.run_sync(self._targets_since, cutoff)
            summary = await self.rescan(targets)
        else:
            summary = await self.rescan_all_pending()
        return summary.as_dict()

    async def _targets_by_id(self, ids: list[int]) -> list[tuple[int, str]]:
        def load() -> list[tuple[int, str]]:
            out = []
            for receiver_id in ids:
                receiver = self.repo.get_receiver(receiver_id)
                if receiver is None or receiver.wallet_id != self.wallet_id:
                    raise NotFound(f"no receiver with id {receiver_id}", receiver_id=receiver_id)
                out.append((receiver.receiver_id, receiver.address))
            return out

        return await trio.to_thread.run_sync(load)

    def _targets_since(self, cutoff: int) -> list[tuple[int, str]]:
        out: list[tuple[int, str]] = []
        before = None
        while True:
            page = self.repo.list_receivers(wallet_id=self.wallet_id, limit=1000, before_id=before)
            for receiver in page:
                if receiver.created_at >= cutoff:
                    out.append((receiver.receiver_id, receiver.address))
            if len(page) < 1000 or page[-1].created_at < cutoff:
                return out
            before = page[-1].receiver_id

    # -- rescans ------------------------------------------------------------------------
    async def rescan_all_pending(self) -> RescanSummary:
        """Rescan every watched receiver, reading each history after this call: a
        request that comes while a full rescan runs waits for it (that one may have
        read an address before a payment this caller knows of) and then shares the
        next one with every request that came meanwhile. A failed rescan fails only
        its own caller; the next waiter runs one itself."""
        wanted = self._full_started + 1  # the first rescan to start after this call
        async with self._full_lock:
            if self._full_done >= wanted:  # one started after this call and finished
                assert self.last_full is not None
                return self.last_full
            self._full_started += 1
            number = self._full_started
            summary = await self.rescan(self.engine.watched(), kind=RESCAN_FULL)
            self._full_done = number
            self.last_full, self.last_full_at = summary, time.time()
            return summary

    @property
    def full_running(self) -> bool:
        return self._full_lock.locked()

    async def rescan(
        self, targets: list[tuple[int, str]], *, quiet: bool = False, kind: str = RESCAN_SELECTED
    ) -> RescanSummary:
        """Read the history of ``targets`` (id, address), record what it shows and report
        what it no longer shows. ``quiet``: log the summary at debug level unless it
        found, flagged or dropped something (the re-check timer's passes). ``kind``
        files its duration (one of RESCAN_KINDS), finished or failed."""
        summary = RescanSummary(started_at=time.time())
        started = time.monotonic()
        self.running += 1
        try:
            absent = await self._rescan_chunks(targets, summary)
            if absent:
                await self._report_absent(absent, summary)
        finally:
            self.running -= 1
            summary.duration_seconds = time.monotonic() - started
            self.durations[kind].observe(summary.duration_seconds)
        eventful = summary.payments_new or summary.payments_dropped or summary.payments_missing
        log.log(
            logging.DEBUG if quiet and not eventful and not summary.held else logging.INFO,
            "rescan done receivers=%d found=%d new=%d missing=%d dropped=%d held=%s "
            "seconds=%.2f complete=%s",
            summary.receivers,
            summary.payments_found,
            summary.payments_new,
            summary.payments_missing,
            summary.payments_dropped,
            summary.held,
            summary.duration_seconds,
            summary.complete,
        )
        return summary

    async def _rescan_chunks(
        self, targets: list[tuple[int, str]], summary: RescanSummary
    ) -> list[tuple[int, str]]:
        """``_rescan_chunk`` over ``targets`` in chunks, RESCAN_PIPELINE of them at once:
        while one chunk's history is read, the one before it is recorded, so the
        lookups never wait for the database (issue 19: 100k receivers at startup).
        The first failure cancels the other chunks and is raised as itself."""
        chunks = [targets[i : i + RESCAN_CHUNK] for i in range(0, len(targets), RESCAN_CHUNK)]
        if len(chunks) <= 1:
            return await self._rescan_chunk(chunks[0], summary) if chunks else []
        absent: list[tuple[int, str]] = []
        failures: list[DashpayError] = []
        limiter = trio.CapacityLimiter(RESCAN_PIPELINE)

        async def one(chunk: list[tuple[int, str]]) -> None:
            async with limiter:
                try:
                    absent.extend(await self._rescan_chunk(chunk, summary))
                except DashpayError as exc:
                    failures.append(exc)
                    nursery.cancel_scope.cancel()

        async with trio.open_nursery() as nursery:
            for chunk in chunks:
                nursery.start_soon(one, chunk)
        if failures:
            raise failures[0]
        return absent

    async def _rescan_chunk(
        self, targets: list[tuple[int, str]], summary: RescanSummary
    ) -> list[tuple[int, str]]:
        """Record what the history of ``targets`` shows; returns the (receiver id, txid)
        of the stored payments it no longer shows (and ``/tx`` answers 404 for)."""
        addresses = {address: receiver_id for receiver_id, address in targets}
        skipped: set[str] = set()
        try:
            history = await self.rest.address_history(list(addresses), skipped=skipped)
        except (SourceError, ValueError) as exc:
            raise Unavailable(
                f"{self.source.lookup_name} failed during the rescan: {exc}"
            ) from None
        summary.receivers += len(targets)
        summary.transactions += len(history)
        per_receiver: dict[int, list[PaymentObservation]] = defaultdict(list)
        seen: dict[int, set[str]] = defaultdict(set)
        for tx in history:
            for receiver_id, obs in observations_for(tx, addresses):
                per_receiver[receiver_id].append(obs)
                seen[receiver_id].add(obs.txid)
        summary.payments_found += sum(len(v) for v in per_receiver.values())
        # Through the engine go the targets the history shows and those holding a stored
        # payment (the results carry it, for the absence check); the others have
        # nothing to record nor to check, and cost one read for all of them.
        holding = await self._holding_payments([rid for rid, _ in targets if rid not in seen])
        work = [
            ReceiverWork(rid, tuple(per_receiver.get(rid, ())))
            for rid, _ in targets
            if rid in seen or rid in holding
        ]
        results = await self.engine.apply(work)
        summary.payments_new += sum(1 for r in results for c in r.changes if c.kind in ARRIVALS)
        if "" in skipped:
            summary.complete = False  # an unreadable history item: no absence decisions
            return []
        counted = [
            (r.receiver.receiver_id, p.txid) for r in results for p in r.payments if not p.dropped
        ]
        summary.payments_checked += len(counted)
        candidates = [
            (receiver_id, txid)
            for receiver_id, txid in counted
            if txid not in seen.get(receiver_id, set()) and txid not in skipped
        ]
        if not candidates:
            return []
        gone, found = await self._confirm_gone([txid for _, txid in candidates])
        if found:  # not in the address history, yet /tx knows it: present after all
            by_address = {rid: address for rid, address in targets}
            again = [
                ReceiverWork(
                    rid, (observation(found[txid], address, found[txid].outputs[address]),)
                )
                for rid, txid in candidates
                if txid in found and (address := by_address[rid]) in found[txid].outputs
            ]
            await self.engine.apply(again)
        return [(rid, txid) for rid, txid in candidates if txid in gone]

    async def _holding_payments(self, ids: list[int]) -> set[int]:
        """The receivers of ``ids`` that hold a payment not dropped (issue 19: a pending
        receiver with no history costs its share of one read, not a unit of work)."""
        if not ids:
            return set()
        return await trio.to_thread.run_sync(self.repo.holding_payments, ids)

    async def _report_absent(self, absent: list[tuple[int, str]], summary: RescanSummary) -> None:
        """Hand the pass's absences to the engine (the domain flags or drops), unless so
        many are missing at once that the source itself looks reset: then hold."""
        if source_reset_suspected(len(absent), summary.payments_checked):
            summary.held = True
            self.last_hold = {
                "at": time.time(),
                "missing": len(absent),
                "checked": summary.payments_checked,
            }
            name = self.source.name
            log.warning(
                "rescan held: %d of %d payments are missing from %s at once, which "
                "looks like %s lost its index (a restart that forgot its mempool), not "
                "like double spends; nothing was flagged or dropped. They are checked "
                "again at the next rescan; if %s really lost them, `dashpay rescan` "
                "after it has resynced decides.",
                len(absent),
                summary.payments_checked,
                name,
                name,
                name,
            )
            return
        per_receiver: dict[int, list[str]] = defaultdict(list)
        for receiver_id, txid in absent:
            per_receiver[receiver_id].append(txid)
        results = await self.engine.apply(
            [ReceiverWork(rid, absent_txids=tuple(txids)) for rid, txids in per_receiver.items()]
        )
        for result in results:
            for change in result.changes:
                if change.kind == CHANGE_DROPPED:
                    summary.payments_dropped += 1
                elif change.kind == CHANGE_MISSING:
                    summary.payments_missing += 1
                    _log_missing(result, change.payment, self.source.name)

    async def _confirm_gone(self, txids: list[str]) -> tuple[set[str], dict[str, TxObserved]]:
        """The txids Insight answers 404 for (a plain 'Not found', not a routing error),
        and the ones it still answers with the transaction for."""
        gone: set[str] = set()
        found: dict[str, TxObserved] = {}
        limiter = trio.CapacityLimiter(self.source.lookup_concurrency)

        async def check(txid: str) -> None:
            async with limiter:
                try:
                    tx = await self.rest.tx(txid)
                except SourceError as exc:
                    log.warning("absence check skipped txid=%s error=%s", txid, exc)
                    return
            if tx is None:
                gone.add(txid)
            else:
                found[txid] = tx

        async with trio.open_nursery() as nursery:
            for txid in set(txids):
                nursery.start_soon(check, txid)
        return gone, found

    async def recheck_loop(self, interval: float) -> None:
        """Every ``interval`` seconds, rescan the receivers holding an unlocked mempool
        payment or one flagged missing, so a vanished payment is noticed without waiting
        for a manual or the hourly rescan. Skipped while a full rescan runs (it covers
        them). Never returns unless cancelled."""
        while True:
            await trio.sleep(interval)
            targets = self.engine.table.to_recheck()
            if not targets or self.full_running:
                continue
            try:
                await self.rescan(targets, quiet=True, kind=RESCAN_RECHECK)
            except Unavailable as exc:
                log.warning("payment re-check failed, retried in %.0fs: %s", interval, exc)

    # -- settlement ---------------------------------------------------------------------
    async def refresh_confirmations(self, block: BlockObserved | None = None) -> None:
        """After a new block (or at a lock poll: ``block`` None), look up every unsettled
        payment and record what changed."""
        pending = self.engine.table.awaiting_settlement(self.engine.rules.confirmations)
        if not pending:
            return
        work: dict[int, list[PaymentObservation]] = defaultdict(list)
        limiter = trio.CapacityLimiter(self.source.lookup_concurrency)

        async def lookup(receiver_id: int, address: str, txid: str) -> None:
            async with limiter:
                try:
                    tx = await self.rest.tx(txid)
                except SourceError as exc:
                    log.warning("confirmation check failed txid=%s error=%s", txid, exc)
                    return
            if tx is None:
                return  # gone or not yet indexed: the next rescan decides
            duffs = tx.outputs.get(address)
            if duffs is None:
                return
            work[receiver_id].append(observation(tx, address, duffs))

        async with trio.open_nursery() as nursery:
            for receiver_id, address, txids in pending:
                for txid in txids:
                    nursery.start_soon(lookup, receiver_id, address, txid)
        if work:
            await self.engine.apply([ReceiverWork(rid, tuple(obs)) for rid, obs in work.items()])


def _log_missing(result: ReceiverResult, payment: Payment, source: str) -> None:
    log.warning(
        "payment missing from %s txid=%s receiver=%d amount_duffs=%d locked=%s "
        "confirmations=%d: still counted; %s",
        source,
        payment.txid,
        result.receiver.receiver_id,
        payment.amount_duffs,
        payment.instant_locked,
        payment.confirmations,
        "it is final (locked or mined) and is never dropped for absence"
        if payment_final(payment)
        else "dropped if it stays absent for [receivers] drop_after",
    )
