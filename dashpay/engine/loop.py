"""The payment engine: the single owner of the pending table.

Every other task talks to it through one memory channel (DESIGN.md §4). It takes what
is waiting in the channel (up to ``MAX_BATCH`` messages), turns the observations that
concern watched addresses into per-receiver work, and records all of it with ONE
database unit of work (one thread hop, one transaction: ``record.record_batch`` run by
``Repository.transaction``): payments upserted, the receiver recomputed by
``accounting.decide``, callback events written to the outbox.
Processing one batch at a time removes the races of the original processor (an event
arriving while a database update for the same receiver is in flight).

Slow work (REST lookups for confirmations, rescans) runs in other tasks and comes back
as ``Apply`` messages, so the engine never waits on the network.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Container, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol, TypeVar

import trio

from dashpay.domain import accounting
from dashpay.domain.backoff import Outage, database_backoff
from dashpay.domain.clock import now_ms
from dashpay.domain.errors import DashpayError, Unavailable
from dashpay.domain.model import (
    OutboxEvent,
    PaymentObservation,
    PendingRow,
    ReceiverResult,
    ReceiverWork,
)
from dashpay.domain.observations import (
    SOURCE_SOCKET,
    BlockObserved,
    SocketConnected,
    SocketDisconnected,
    TxObserved,
)
from dashpay.domain.payload import event_payload
from dashpay.domain.status import CHANGE_NEW, FINAL_STATUSES
from dashpay.engine.messages import (
    Apply,
    EngineMessage,
    ReceiverAdded,
    ReceiverChanged,
    Tick,
)
from dashpay.engine.pending import PendingTable
from dashpay.engine.record import decider, record_batch
from dashpay.repository.base import Repository, Transaction

log = logging.getLogger("dashpay.engine")
T = TypeVar("T")

# Messages waiting for the engine. Bounded so a flood of events applies back-pressure
# to the socket reader instead of growing memory without limit; 10k events is ~0.3 s
# of the busiest Insight stream we measured.
QUEUE_SIZE = 10_000
# Messages folded into one database transaction. Grouping ~100 payments per commit
# nearly doubles the rate on both backends (docs/performance.md) while a batch still
# commits in a few milliseconds.
MAX_BATCH = 256
# How often expiry and the monitoring window are checked (and, after a database error
# with no batch retrying, whether the database is back).
TICK_SECONDS = 1.0
# A unit of work of at most this many receivers is first offered to the repository to
# run on the trio thread (``Repository.try_transaction``: SQLite's WAL commit, ~0.1 ms
# for a lone payment, is cheaper than the hop to a worker thread and back). A bigger
# batch (a burst) hops, so the socket and the sender go on while it is written.
INLINE_MAX_ITEMS = 8


class Rider(Protocol):
    """Writes another task deferred, carried in the engine's next unit of work (the
    callback sender's delivery outcomes): one transaction where there would be two."""

    def write(self, tx: Transaction) -> object:
        """Run inside the unit of work's transaction (a worker thread; MySQL may call
        it again after a deadlock, so it keeps nothing between calls)."""

    def committed(self, result: object) -> None:
        """The transaction committed; ``result`` is what ``write`` returned (on the trio
        thread)."""

    def returned(self) -> None:
        """The unit of work failed or was cancelled: nothing was written, and the owner
        writes it itself (on the trio thread)."""


def observation(tx: TxObserved, address: str, duffs: int) -> PaymentObservation:
    """What a transaction says about one address it pays."""
    return PaymentObservation(
        txid=tx.txid,
        address=address,
        amount_duffs=duffs,
        instant_locked=tx.instant_locked,
        block_height=tx.block_height,
        confirmations=tx.confirmations,
    )


@dataclass(slots=True)
class EngineStats:
    events: int = 0
    matched: int = 0
    batches: int = 0
    payments_recorded: int = 0
    outbox_events: int = 0
    db_errors: int = 0
    last_event_at: float | None = None
    last_db_error: str | None = None
    last_db_error_at: float | None = None
    # The last batch committed or probe passed (wall time), and whether the engine's
    # last database operation failed: `status` is degraded from a failure until the
    # next success, which a batch retry or the per-tick probe brings within a second
    # of the database coming back.
    last_db_ok_at: float | None = None
    db_failing: bool = False
    tx_without_match: int = 0


class PaymentEngine:
    """The single owner of the pending table; see the module docstring. Other tasks
    send it ``EngineMessage`` values through ``send_channel`` (or ``submit`` /
    ``apply``)."""

    def __init__(
        self,
        repo: Repository,
        rules: accounting.Rules,
        *,
        monitor_window_ms: int,
        clock: Callable[[], int] = now_ms,
        on_events: Callable[[list[ReceiverResult]], None] | None = None,
        on_block: Callable[[BlockObserved], None] | None = None,
        on_connected: Callable[[SocketConnected], None] | None = None,
        on_tick: Callable[[], None] | None = None,
        on_recorded: Callable[[list[ReceiverResult]], None] | None = None,
        tick_seconds: float | None = TICK_SECONDS,
    ) -> None:
        self.repo = repo
        self.rules = rules
        self.monitor_window_ms = monitor_window_ms
        self.clock = clock
        self.on_events = on_events
        self.on_block = on_block
        self.on_connected = on_connected
        self.on_tick = on_tick
        # Told every committed batch's results (the receiver service keeps the unpaid
        # gap from them).
        self.on_recorded = on_recorded
        # None: no ticker task (tests send Tick themselves).
        self.tick_seconds = tick_seconds
        # Given (receiver id, address, observation) for a socket event announcing a
        # payment the receiver does not hold yet, instead of recording it: the daemon's
        # verifier reads it back over REST first (services/verify.py). None: events
        # are recorded as they come (in-process tests, tools).
        self.verify: Callable[[int, str, PaymentObservation], None] | None = None
        # Asked before each unit of work for deferred writes to carry in its
        # transaction (the daemon: ``CallbackSender.ride``); None: nothing is carried.
        self.carry: Callable[[], Rider | None] | None = None
        self.table = PendingTable()
        # Addresses of receivers submitted (ReceiverAdded) but not applied yet: they
        # count as watched for ``watches`` from the moment they are submitted.
        self._announced: dict[str, int] = {}
        self.stats = EngineStats()
        self.send_channel: trio.MemorySendChannel[EngineMessage]
        self._receive: trio.MemoryReceiveChannel[EngineMessage]
        self.send_channel, self._receive = trio.open_memory_channel[EngineMessage](QUEUE_SIZE)
        # Every message type but TxObserved (checked first, inline: it is the traffic)
        # and what its handler does with it.
        self._handlers: dict[type, Callable[[Any, _Batch], None]] = {
            Apply: self._on_apply,
            Tick: self._on_tick,
            ReceiverAdded: self._on_receiver,
            ReceiverChanged: self._on_receiver,
            BlockObserved: self._on_block,
            SocketConnected: self._on_connected,
            SocketDisconnected: _ignore,
        }

    # -- API for other tasks ------------------------------------------------------------
    def load(self, rows: Iterable[PendingRow]) -> int:
        """Bootstrap: fill the table before the engine runs (from a worker thread is
        fine: nothing else reads the table yet). Returns how many rows were read."""
        return self.table.load(rows)

    async def submit(self, message: EngineMessage) -> None:
        if type(message) is ReceiverAdded:
            address = message.receiver.address
            self._announced[address] = self._announced.get(address, 0) + 1
        try:
            await self.send_channel.send(message)
        except BaseException:
            if type(message) is ReceiverAdded:
                self._unannounce(message.receiver.address)
            raise

    def watches(self, address: str) -> bool:
        """Whether a transaction paying ``address`` concerns the engine: a receiver of
        the pending table, or one submitted and not applied yet. The socket asks this
        (same trio thread) before it builds an observation, so an event that pays none
        of them is counted (``unmatched``) without entering the channel; a receiver's
        address is announced before ``receiver.create`` answers, so no payment to it
        is ever skipped."""
        return self.table.get(address) is not None or address in self._announced

    def watched_addresses(self) -> tuple[Container[str], Container[str]]:
        """``watches`` as two live containers, an address being watched when it is in
        either (the pending table's index and the announced addresses, both updated in
        place): the socket tests every output of a flood of events with ``in``, which
        costs a fifth of a call to ``watches``."""
        return self.table.addresses, self._announced

    def unmatched(self, count: int = 1) -> None:
        """Events the socket found paying nothing ``watches`` names: counted as seen."""
        self.stats.events += count
        self.stats.tx_without_match += count
        self.stats.last_event_at = time.time()

    def _unannounce(self, address: str) -> None:
        left = self._announced.get(address, 0) - 1
        if left > 0:
            self._announced[address] = left
        else:
            self._announced.pop(address, None)

    async def apply(self, work: list[ReceiverWork]) -> list[ReceiverResult]:
        """Record work through the engine and wait for the results."""
        if not work:
            return []
        done = trio.Event()
        box: list[list[ReceiverResult]] = []

        def finished(results: list[ReceiverResult]) -> None:
            box.append(results)
            done.set()

        await self.send_channel.send(Apply(work, finished))
        await done.wait()
        return box[0]

    # -- the loop -----------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Take what is waiting in the channel (up to ``MAX_BATCH`` messages) and record
        it as one unit of work, batch after batch. Never returns unless cancelled."""
        async with trio.open_nursery() as nursery:
            if self.tick_seconds is not None:
                nursery.start_soon(self._ticker, self.tick_seconds)
            task_status.started()
            receive = self._receive
            while True:
                batch = [await receive.receive()]
                while len(batch) < MAX_BATCH:
                    try:
                        batch.append(receive.receive_nowait())
                    except trio.WouldBlock:
                        break
                await self._process(batch)

    async def _ticker(self, seconds: float) -> None:
        """Send a Tick every ``seconds``. Never returns unless cancelled."""
        while True:
            await trio.sleep(seconds)
            await self.send_channel.send(Tick())

    async def _process(self, messages: list[EngineMessage]) -> None:
        batch = _Batch(self.clock())
        for message in messages:
            try:
                self._collect(message, batch)
            except Exception:  # a bad message must never stop the engine
                log.exception("engine message skipped type=%s", type(message).__name__)
        work = batch.work
        if not work:
            for apply_msg, _ in batch.callbacks:
                if apply_msg.done is not None:
                    apply_msg.done([])
            if batch.probe:
                await self._probe()
            return
        items = [w.freeze() for w in work.values()]
        results = await self._record(items, batch.now)
        by_id = {r.receiver.receiver_id: r for r in results}
        for apply_msg, ids in batch.callbacks:
            if apply_msg.done is not None:
                apply_msg.done([by_id[i] for i in ids if i in by_id])

    def _collect(self, message: EngineMessage, batch: _Batch) -> None:
        """Fold one message into ``batch`` (or act on it at once)."""
        if type(message) is TxObserved:  # the hot path: keep it inline and cheap
            self.stats.events += 1
            self.stats.last_event_at = time.time()
            get = self.table.get
            verify = self.verify
            matched = False
            for address, duffs in message.outputs.items():
                entry = get(address)
                if entry is None:
                    continue
                matched = True
                obs = observation(message, address, duffs)
                if entry.is_news(obs):
                    if verify is not None and message.source == SOURCE_SOCKET:
                        if not entry.holds(obs.txid):  # a claim: read back first
                            verify(entry.receiver_id, address, obs)
                            continue
                    batch.item(entry.receiver_id).observations.append(obs)
            if matched:
                self.stats.matched += 1
            return
        handler = self._handlers.get(type(message))
        if handler is None:
            log.warning("engine ignored unknown message type=%s", type(message).__name__)
            return
        handler(message, batch)

    def _on_apply(self, message: Apply, batch: _Batch) -> None:
        ids = []
        for item in message.work:
            pending = batch.item(item.receiver_id)
            pending.observations.extend(item.observations)
            pending.dropped.extend(item.dropped_txids)
            pending.absent.extend(item.absent_txids)
            ids.append(item.receiver_id)
        batch.callbacks.append((message, ids))

    def _on_tick(self, message: Tick, batch: _Batch) -> None:
        if self.on_tick is not None:
            self.on_tick()
        batch.probe = self.stats.db_failing
        now = batch.now
        for receiver_id in self.table.due_to_expire(now):
            batch.item(receiver_id)
        for receiver_id in self.table.past_window(now, self.monitor_window_ms):
            log.info("receiver leaves the pending table id=%d", receiver_id)
            self.table.remove(receiver_id)

    def _on_receiver(self, message: ReceiverAdded | ReceiverChanged, batch: _Batch) -> None:
        self.table.add(message.receiver)
        if type(message) is ReceiverAdded and self._announced:
            self._unannounce(message.receiver.address)

    def _on_block(self, message: BlockObserved, batch: _Batch) -> None:
        self.stats.events += 1
        self.stats.last_event_at = time.time()
        if self.on_block is not None:
            self.on_block(message)

    def _on_connected(self, message: SocketConnected, batch: _Batch) -> None:
        if self.on_connected is not None:
            self.on_connected(message)

    async def _record(self, items: list[ReceiverWork], now: int) -> list[ReceiverResult]:
        """One unit of work for the whole batch; retried while the database is down.
        A batch that fails for another reason is split so one bad item cannot block
        the rest (it is logged and skipped; the next rescan converges)."""
        backoff = database_backoff()  # the batch is kept and retried
        outage = Outage()
        while True:
            unit = partial(
                record_batch,
                items=items,
                now=now,
                decide=decider(now, self.rules, event_payload),
                drop_after_ms=self.rules.drop_after_ms,
            )
            try:
                results = await self._transaction(unit, len(items) <= INLINE_MAX_ITEMS)
                break
            except Unavailable as exc:
                self._db_error(exc)
                delay = backoff.next_delay()
                clock = trio.current_time()
                if outage.failed(clock):
                    log.warning(
                        "database unavailable for %.0fs; retrying the batch every %.1fs at "
                        "most: %s",
                        clock - (outage.since or clock),
                        backoff.cap,
                        exc,
                    )
                await trio.sleep(delay)
                now = self.clock()
            except Exception as exc:
                if len(items) == 1:
                    self._db_error(exc)
                    log.error(
                        "receiver update failed id=%d error=%s; skipped until the next rescan",
                        items[0].receiver_id,
                        exc,
                        exc_info=not isinstance(exc, DashpayError),
                    )
                    return []
                results = []
                for item in items:
                    results.extend(await self._record([item], now))
                return results
        lasted = outage.ended(trio.current_time())
        if lasted is not None:
            log.info("database back after %.1fs; batch recorded", lasted)
        self._db_ok()
        self._after(results)
        return results

    async def _transaction(
        self, unit: Callable[[Transaction], list[ReceiverResult]], inline: bool = False
    ) -> list[ReceiverResult]:
        """One transaction: ``unit``, and what ``carry`` hands over (if anything) in
        the same transaction; on the trio thread when the repository can run it
        there without blocking (``inline``: a small batch), else in one thread hop. A
        rider whose transaction fails is returned to its owner, so a retry of the batch
        carries nothing."""
        rider = self.carry() if self.carry is not None else None
        if rider is None:
            return await self._run_unit(unit, inline)
        try:
            results, written = await self._run_unit(
                partial(_carrying, unit=unit, rider=rider), inline
            )
        except BaseException:
            rider.returned()
            raise
        rider.committed(written)
        return results

    async def _run_unit(self, unit: Callable[[Transaction], T], inline: bool) -> T:
        if inline:
            ran, result = self.repo.try_transaction(unit)
            if ran:  # no checkpoint here: the commit's results must reach _after
                return result  # type: ignore[return-value]
        return await trio.to_thread.run_sync(self.repo.transaction, unit)

    async def _probe(self) -> None:
        """An empty write transaction: after a failure with no batch left to retry,
        it is what tells `status` the database is back (or still failing)."""
        try:
            await trio.to_thread.run_sync(self.repo.transaction, _nothing)
        except Exception as exc:
            self._db_error(exc)
            log.debug("database probe failed: %s", exc)
            return
        log.info("database probe succeeded after the last error: %s", self.stats.last_db_error)
        self._db_ok()

    def _db_error(self, exc: BaseException) -> None:
        self.stats.db_errors += 1
        self.stats.last_db_error = str(exc)
        self.stats.last_db_error_at = time.time()
        self.stats.db_failing = True

    def _db_ok(self) -> None:
        self.stats.last_db_ok_at = time.time()
        self.stats.db_failing = False

    def _after(self, results: list[ReceiverResult]) -> None:
        self.stats.batches += 1
        events: list[OutboxEvent] = []
        for result in results:
            receiver = result.receiver
            self.table.refresh(receiver, result.payments)
            self.stats.payments_recorded += sum(1 for c in result.changes if c.kind == CHANGE_NEW)
            events.extend(result.events)
            for event in result.events:
                log.info(
                    "event id=%s receiver=%d event=%s status=%s received_duffs=%d",
                    event.event_id,
                    receiver.receiver_id,
                    event.event,
                    receiver.status,
                    receiver.received_duffs,
                )
        self.stats.outbox_events += len(events)
        if results and self.on_recorded is not None:
            self.on_recorded(results)
        if events and self.on_events is not None:
            self.on_events([result for result in results if result.events])

    def watched(self, receiver_ids: list[int] | None = None) -> list[tuple[int, str]]:
        entries = self.table.entries()
        if receiver_ids is not None:
            wanted = set(receiver_ids)
            entries = [e for e in entries if e.receiver_id in wanted]
        return [(e.receiver_id, e.address) for e in entries]

    def pending_not_final(self) -> int:
        return sum(1 for e in self.table.entries() if e.status not in FINAL_STATUSES)


@dataclass(slots=True)
class _Pending:
    receiver_id: int
    observations: list[PaymentObservation] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    absent: list[str] = field(default_factory=list)

    def freeze(self) -> ReceiverWork:
        return ReceiverWork(
            self.receiver_id, tuple(self.observations), tuple(self.dropped), tuple(self.absent)
        )


class _Batch:
    """What one batch of messages adds up to: per-receiver work (in first-seen order)
    and the Apply messages waiting for their results."""

    __slots__ = ("now", "work", "callbacks", "probe")

    def __init__(self, now: int) -> None:
        self.now = now
        self.work: dict[int, _Pending] = {}
        self.callbacks: list[tuple[Apply, list[int]]] = []
        self.probe = False  # a tick found the last database operation failed

    def item(self, receiver_id: int) -> _Pending:
        item = self.work.get(receiver_id)
        if item is None:
            item = self.work[receiver_id] = _Pending(receiver_id)
        return item


def _carrying(
    tx: Transaction, unit: Callable[[Transaction], list[ReceiverResult]], rider: Rider
) -> tuple[list[ReceiverResult], object]:
    """The engine's unit of work with a rider's writes in the same transaction."""
    results = unit(tx)
    return results, rider.write(tx)


def _nothing(tx: object) -> None:
    """The probe's unit of work: opening and committing the write transaction is the
    test (SQLite takes its write lock, MySQL needs a live connection)."""


def _ignore(message: EngineMessage, batch: _Batch) -> None:
    """SocketDisconnected: nothing to do (the reconnect's SocketConnected rescans)."""
