"""Callbacks: the sender task that drains the outbox, and the ``callbacks.*`` methods.

The payment engine writes an event row in the same transaction as the change that
caused it (DESIGN.md §6); this module delivers those rows. Design choices, in short:

- **Rows, not timers.** The only durable state is in the outbox: what the engine
  commits is handed to the sender (``offer``) and posted from memory when that keeps
  each receiver's order; everything else is read with ``due_callbacks``. The attempts
  and outcomes that finish together are recorded in one transaction. A restart
  resumes from the rows; nothing is scheduled in memory that a crash could lose.
- **At least once.** An event is marked delivered only after a 2xx; a crash between
  the answer and the commit sends it again after the restart, with the same
  ``Dashpay-Delivery`` id, which is what merchants de-duplicate on.
- **Order per receiver.** Only a receiver's oldest pending event (its head) is ever
  due, and a receiver with a delivery in flight is skipped, so its events go out one
  at a time in enqueue order. A failed event (4xx, or retries given up) leaves the
  line; the next one goes out. Different receivers are delivered concurrently, up to
  ``max_in_flight`` POSTs at a time, shared between origins (scheme, host, port) by
  ``slots.SlotPolicy``: an origin earns slots by answering fast, one that answers
  slowly or not at all keeps two, and a reserve is kept for origins that answer fast,
  so endpoints that hang never stall everyone else. A slot is free again as soon as
  its answer is in; the receiver itself stays held
  until its outcome is committed, and at most ``HELD_PER_SLOT * max_in_flight``
  receivers are held at once (so a database that stops answering stops the sending
  too, instead of piling up outcomes in memory).
- **Retries.** Network errors, timeouts, 408, 429 and 5xx are retried with delays that
  double from ``backoff_initial`` (measured as the time since the first attempt plus
  ``backoff_initial``, so a restart or a long ``Retry-After`` does not reset the
  growth) up to ``backoff_max``; a ``Retry-After`` asks for a longer wait, never a
  shorter one. The last attempt is made when ``give_up_after`` has passed since the
  first, then the event is failed. Redirects (3xx) and other 4xx fail at once. A
  manual retry (``callbacks.retry``) starts a fresh horizon.
- **Safety.** Only http/https. Every address of the target host is checked against
  ``[callbacks]`` rules (allow_hosts, private targets, link-local and cloud metadata)
  *when the connection is made*, and the connection goes to exactly the addresses
  that were checked (``checked_addresses`` is the poster's only way to a socket), so
  DNS rebinding cannot slip a metadata address in between the check and the connect.
  TLS still verifies the host name. Proxies are never used (they would bypass the
  check). The POSTs go through ``http_post.HttpPoster`` (our own HTTP/1.1 codec).
  Response bodies are read only up to ``MAX_RESPONSE_BYTES`` for ``BODY_READ_SECONDS``
  and never decompressed; an attempt as a whole is bounded by ``[callbacks] timeout``.
"""

from __future__ import annotations

import collections
import functools
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import trio

from dashpay import __version__
from dashpay.config.durations import format_duration
from dashpay.config.model import CallbacksConfig
from dashpay.domain.backoff import Outage, database_backoff
from dashpay.domain.clock import now_ms
from dashpay.domain.errors import InvalidParams, Unavailable
from dashpay.domain.limits import MAX_LIST_LIMIT
from dashpay.domain.model import (
    AttemptOutcome,
    CallbackRecord,
    OutboxEvent,
    ReceiverResult,
)
from dashpay.domain.status import OUTBOX_DELIVERED, OUTBOX_PENDING
from dashpay.domain.urls import validate_callback_url
from dashpay.net.guard import TargetRefused, checked_addresses
from dashpay.net.http_post import (
    DEFAULT_PORTS,
    ConnectFailed,
    HttpPoster,
    HttpPostError,
    describe_error,
)
from dashpay.net.outbound import Outbound
from dashpay.repository.base import Repository
from dashpay.services.callbacks.policy import (
    Delivery,
    _printable,
    _status_error,
    plan_outcome,
)
from dashpay.services.callbacks.secret import CallbackSecret
from dashpay.services.callbacks.signing import signature_header
from dashpay.services.callbacks.slots import Slot, SlotPolicy, slow_after
from dashpay.wire.http1 import retry_after_seconds

log = logging.getLogger("dashpay.callbacks")
USER_AGENT = f"dashpay/{__version__}"

# Only the status line matters; the body is read for the attempt log and so that a
# small answer can be read to its end and the connection kept alive. 16 KiB holds any
# sensible acknowledgement (the poster allows 16 KiB of headers too); past it the
# connection is closed instead of downloading a huge body.
MAX_RESPONSE_BYTES = 16 * 1024
# How long the body of an answer may take once its status is known. The status
# decides the outcome; a body dripping in slowly must not hold a delivery slot.
BODY_READ_SECONDS = 1.0
# The longest the sender sleeps without looking at the outbox. It is woken when events
# are enqueued or retried and sleeps until the next retry is due; this only bounds the
# delay for rows another process wrote.
MAX_IDLE_SECONDS = 60.0
# Heads fetched per look at the outbox, per free delivery slot: room to skip receivers
# that are in flight or origins at their limit without asking again.
DUE_FETCH_FACTOR = 4
# Events handed over by the engine that wait in memory for a free slot, at most. Past
# it (a burst far beyond what can be sent at once) receivers take the outbox path, so
# memory stays bounded by this many payloads (a few KiB each).
MAX_QUEUED_EVENTS = 10_000
# Event ids last read from the outbox and sent, remembered so that a hand-over of the
# same event arriving after the read is not sent twice (the window is a few ms wide).
REMEMBERED_FROM_OUTBOX = 4096
# URLs whose validation result is remembered (then the memory starts afresh).
MAX_REMEMBERED_URLS = 4096
# Receivers held (a POST in flight, or its outcome not yet committed), per POST slot.
# Freeing the slot when the answer is in, not when the outcome is committed, keeps the
# POSTs going while the recorder writes, and lets its batches grow with the load
# (measured: 6 outcomes per transaction at 16 slots before, with slots idle meanwhile).
HELD_PER_SLOT = 4
# A delivered callback's outcome need not be written at once: it waits to ride in the
# payment engine's next unit of work (``ride``: one transaction writes the payment and
# the previous callbacks' outcomes), so a lone payment costs one commit, not two. The
# engine takes the waiting outcomes once the oldest has waited CARRY_AFTER_SECONDS (or
# half the held receivers are waiting); past WRITE_DEFERRED_AFTER_SECONDS (no payment
# came), or with all but max_in_flight of the held receivers waiting, the recorder
# writes them itself. A crash
# meanwhile sends those callbacks again after the restart, as any crash between an
# answer and its commit always did (same Dashpay-Delivery id); a receiver's next event
# never waits for it: handing one over writes its receiver's outcome at once.
CARRY_AFTER_SECONDS = 1.0
WRITE_DEFERRED_AFTER_SECONDS = 2.0
# How long a shutdown waits to write the outcomes it already has.
FINAL_WRITE_SECONDS = 5.0
# event ids are VARCHAR(64) in the outbox; the engine makes "evt_" + 32 hex.
MAX_EVENT_ID_CHARS = 64


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {describe_error(exc)}"


@functools.lru_cache(maxsize=MAX_REMEMBERED_URLS)
def origin_of(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) of a URL, the port filled in when the URL leaves it to the
    scheme: http://shop and http://shop:80 are one origin (RFC 6454), which the
    per-origin limit counts once. Remembered per URL (the same few come back for
    every event)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:  # validated URLs never get here; a bad port names no origin
        port = None
    return scheme, (parts.hostname or "").lower(), port or DEFAULT_PORTS.get(scheme)


def display_origin(url: str) -> str:
    """scheme://host[:port] of a URL: safe to log (no credentials, path or query); the
    port is shown when it is not the scheme's own."""
    scheme, host, port = origin_of(url)
    if ":" in host:
        host = f"[{host}]"
    shown = port is not None and port != DEFAULT_PORTS.get(scheme)
    return f"{scheme}://{host}" + (f":{port}" if shown else "")


# -- the sender ---------------------------------------------------------------------------


@dataclass(slots=True)
class SenderStats:
    attempts: int = 0
    delivered: int = 0
    retried: int = 0
    failed: int = 0
    last_delivered_at: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None
    db_errors: int = 0


Origin = tuple[str, str, int | None]


@dataclass(slots=True)
class _Job:
    """One delivery to make: an outbox event and where it goes."""

    event: OutboxEvent
    url: str | None
    origin: Origin | None
    first_attempt_at: int | None
    from_engine: bool  # handed over by the engine, not read back from the outbox
    slot: Slot | None = None  # the POST slot it holds, once started


class CallbackSender:
    """The task that delivers the outbox (``await nursery.start(sender.run)``).

    Events reach it two ways. ``offer(results)`` (the payment engine's ``on_events``)
    hands over the events the engine has just committed: they go out from memory,
    without reading them back, when that keeps the receiver's order (the receiver has
    no other pending event that the sender does not hold). Everything else (events
    pending at start-up, retries in back-off, manual retries, rows written by others)
    comes from ``due_callbacks``: those receivers are "slow" until the outbox shows
    nothing pending for them. ``wake()`` asks for a look at the outbox.

    Outcomes that finish together are recorded in one transaction by a recorder task;
    a receiver stays in flight until its outcome is committed. On cancellation it
    stops starting deliveries, abandons those in flight (they are sent again after a
    restart), and writes the outcomes it already has (shielded)."""

    def __init__(
        self,
        repo: Repository,
        rules: CallbacksConfig,
        wallet_id: str,
        secret: CallbackSecret,
        *,
        clock: Callable[[], int] = now_ms,
        outbound: Outbound | None = None,
        defer_outcomes: bool = False,
    ) -> None:
        self.repo = repo
        self.rules = rules
        self.outbound = outbound  # proxies and trust store; None: the environment's
        self.wallet_id = wallet_id
        self.secret = secret
        self.clock = clock
        self.max_in_flight = rules.max_in_flight
        self.slots = SlotPolicy(self.max_in_flight, slow_after(rules.timeout))
        self.max_held = HELD_PER_SLOT * self.max_in_flight
        # Whether delivered outcomes wait to be carried (see CARRY_AFTER_SECONDS): only
        # when something calls ``ride`` (the daemon's engine); else each is written at
        # once, as outcomes that are not deliveries always are.
        self.defer_outcomes = defer_outcomes
        # The engine carries them once half the held receivers wait; the recorder
        # writes them itself before they would take a POST slot's room
        # (max_held - max_in_flight receivers held leave every slot usable).
        self._carry_count = max(1, self.max_held // 2)
        self._write_count = max(1, self.max_held - self.max_in_flight)
        self.stats = SenderStats()
        self.running = False
        self._in_flight: set[int] = set()  # receivers with a delivery or outcome in flight
        # Events handed over by the engine, per receiver, oldest first; and per origin
        # the receivers whose next event may start (lazily checked when taken).
        self._queued: dict[int, collections.deque[_Job]] = {}
        self._queued_count = 0
        self._ready: dict[Origin | None, collections.deque[int]] = {}
        # Receivers whose events come only from the outbox (see the class docstring);
        # until the first look at the outbox every receiver is treated so.
        self._slow: set[int] = set()
        self._synced = False
        self._maybe_clear: set[int] = set()  # slow receivers that may have nothing left
        self._look = True  # a look at the outbox is wanted
        self._next_look = -math.inf  # trio time of the next look even if none is wanted
        self._finished_during_query: set[int] | None = None
        self._offered_during_query: set[int] | None = None
        self._outcomes: list[tuple[_Job, AttemptOutcome]] = []  # to write now
        self._outcomes_ready = trio.Event()
        # Delivered outcomes waiting to be carried, oldest first; since when (trio
        # time); their receivers; and whether one of those has another event to send.
        self._deferred: list[tuple[_Job, AttemptOutcome]] = []
        self._deferred_since = math.inf
        self._deferred_receivers: set[int] = set()
        self._flush = False
        self._wakeup = trio.Event()
        self._poster: HttpPoster | None = None
        self._checked_urls: dict[str, str | None] = {}
        self._from_outbox: set[str] = set()
        self._from_outbox_order: collections.deque[str] = collections.deque()

    @property
    def in_flight(self) -> int:
        """Receivers held: a POST in progress, or its outcome not committed yet."""
        return len(self._in_flight)

    def _free_slots(self) -> int:
        return min(self.slots.free, self.max_held - len(self._in_flight))

    @property
    def synced(self) -> bool:
        """Whether the sender knows which receivers have events pending in the outbox
        (after its first look): until then every hand-over takes the outbox path."""
        return self._synced

    def wake(self, *_: Any) -> None:
        """Look at the outbox now (safe to call from any trio task, any number of times):
        for rows the sender was not handed, such as another process's."""
        self._look = True
        self._wakeup.set()

    def requeued(self, receiver_id: int | None) -> None:
        """Events of ``receiver_id`` (None: of any receiver) were queued again by hand:
        an older event may now precede what the sender holds, so the outbox decides."""
        if receiver_id is None:
            for rid in list(self._queued):
                self._make_slow(rid)
            self._synced = False
        else:
            self._make_slow(receiver_id)
        self.wake()

    def offer(self, results: Sequence[ReceiverResult]) -> None:
        """The engine committed these results; their events go out from memory when
        that keeps each receiver's order, else from the outbox (see the class doc)."""
        for result in results:
            if not result.events:
                continue
            receiver = result.receiver
            rid = receiver.receiver_id
            if rid in self._deferred_receivers:
                self._flush_deferred()  # its next event must not wait for the outcome
            if self._offered_during_query is not None:
                self._offered_during_query.add(rid)
            if (
                receiver.wallet_id != self.wallet_id
                or not self._synced
                or rid in self._slow
                or self._queued_count + len(result.events) > MAX_QUEUED_EVENTS
            ):
                self._make_slow(rid)
                continue
            url = receiver.callback_url or self.rules.default_url
            origin = origin_of(url) if url else None
            queue = self._queued.get(rid)
            if queue is None:
                queue = self._queued[rid] = collections.deque()
                if rid not in self._in_flight:
                    self._ready_queue(origin).append(rid)
            for event in result.events:
                if event.event_id in self._from_outbox:
                    continue  # the outbox was quicker than this hand-over: already sent
                queue.append(_Job(event, url, origin, None, True))
                self._queued_count += 1
            if not queue:
                del self._queued[rid]
        self._wakeup.set()

    def _remember_from_outbox(self, event_id: str) -> None:
        """An event read from the outbox is being sent: should the engine's hand-over of
        the same event come later still (its commit raced the read), it is not sent
        again."""
        if len(self._from_outbox_order) >= REMEMBERED_FROM_OUTBOX:
            self._from_outbox.discard(self._from_outbox_order.popleft())
        self._from_outbox_order.append(event_id)
        self._from_outbox.add(event_id)

    def _make_slow(self, receiver_id: int) -> None:
        if receiver_id in self._deferred_receivers:
            self._flush_deferred()
        self._slow.add(receiver_id)
        self._maybe_clear.discard(receiver_id)
        dropped = self._queued.pop(receiver_id, None)
        if dropped:
            self._queued_count -= len(dropped)
        self._look = True

    def _ready_queue(self, origin: Origin | None) -> collections.deque[int]:
        ready = self._ready.get(origin)
        if ready is None:
            ready = self._ready[origin] = collections.deque()
        return ready

    # -- the loop ---------------------------------------------------------------------
    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        poster = HttpPoster(
            self._checked_addresses,
            max_body=MAX_RESPONSE_BYTES,
            body_seconds=BODY_READ_SECONDS,
            max_idle_per_origin=self.max_in_flight,
            outbound=self.outbound,
        )
        try:
            async with trio.open_nursery() as nursery:
                self._poster = poster
                self.running = True
                log.info(
                    "callback sender started max_in_flight=%d default_url=%s secret=%s",
                    self.max_in_flight,
                    display_origin(self.rules.default_url) if self.rules.default_url else None,
                    self.secret.source,
                )
                nursery.start_soon(self._recorder)
                task_status.started()
                await self._loop(nursery)
        finally:
            self.running = False
            self._poster = None
            with trio.CancelScope(shield=True):
                await poster.aclose()

    async def _checked_addresses(self, host: str, port: int) -> list[str]:
        return await checked_addresses(host, port, self.rules)

    async def _loop(self, nursery: trio.Nursery) -> None:
        backoff, outage = database_backoff(), Outage()
        while True:
            self._wakeup = trio.Event()
            self._start_handed_over(nursery)
            pause = self._next_look - trio.current_time()
            if self._look or pause <= 0:
                try:
                    pause = await self._look_at_outbox(nursery)
                    backoff.reset()
                    _log_outage_end(outage, "callback outbox")
                except Unavailable as exc:
                    self.stats.db_errors += 1
                    _log_outage(outage, "callback outbox unavailable", exc)
                    self._look = True
                    pause = backoff.next_delay()
                    self._next_look = trio.current_time() + pause
            with trio.move_on_after(max(0.0, pause)):
                await self._wakeup.wait()

    def _start_handed_over(self, nursery: trio.Nursery) -> None:
        """Start the events the engine handed over whose receiver and origin are free."""
        free = self._free_slots()
        now = trio.current_time()
        for origin in list(self._ready):
            ready = self._ready[origin]
            while ready and free > 0:
                if not self.slots.may_start(origin, now):
                    break
                rid = ready.popleft()
                queue = self._queued.get(rid)
                if not queue or rid in self._in_flight:
                    continue  # gone to the slow path, or already started
                job = queue.popleft()
                self._queued_count -= 1
                if not queue:
                    del self._queued[rid]
                self._start(nursery, job, now)
                free -= 1
            if not ready:
                del self._ready[origin]

    def _start(self, nursery: trio.Nursery, job: _Job, now: float) -> None:
        """Start ``job`` in a slot ``slots.may_start(job.origin, now)`` allowed."""
        self._in_flight.add(job.event.receiver_id)
        job.slot = self.slots.start(job.origin, now)
        nursery.start_soon(self._deliver, job)

    def _posted(self, job: _Job) -> None:
        """The POST of ``job`` is over (answered, failed or abandoned): its slot is free,
        and how long it took counts for its origin's share."""
        slot, job.slot = job.slot, None
        if slot is not None and self.slots.finish(slot, trio.current_time()):
            log.info(
                "callback target slow target=%s slots=%d until an answer within %.1fs",
                display_origin(job.url) if job.url else None,
                self.slots.lane,
                self.slots.slow_after,
            )

    async def _look_at_outbox(self, nursery: trio.Nursery) -> float:
        """Start what the outbox says is due for slow receivers; return how long to
        sleep unless woken."""
        free = self._free_slots()
        if free <= 0:
            return MAX_IDLE_SECONDS  # a finishing delivery wakes us; _look stays set
        self._look = False
        held = len(self._in_flight) + len(self._queued)
        limit = min(MAX_LIST_LIMIT, free * DUE_FETCH_FACTOR + held)
        synced = self._synced
        clear = sorted(self._maybe_clear - self._in_flight) if synced else None
        self._maybe_clear.clear()
        # A delivery that finishes while the query runs makes the answer stale for its
        # receiver: the query may have read the head before that outcome was committed,
        # and sending it again would be a needless duplicate. Those receivers wait for
        # the next round (the finishing delivery wakes the loop). Events handed over
        # during the query may or may not be in the answer: their receivers stay slow.
        self._finished_during_query = finished = set()
        self._offered_during_query = offered = set()
        try:
            due, later, pending = await trio.to_thread.run_sync(
                self._read_outbox, self.clock(), limit, clear
            )
        except BaseException:
            self._maybe_clear.update(clear or ())
            raise
        finally:
            self._finished_during_query = None
            self._offered_during_query = None
        if not synced:
            for rid in pending:
                self._make_slow(rid)
            self._synced = True
        else:
            for rid in clear or ():
                if rid not in pending and rid not in offered and rid not in self._in_flight:
                    self._slow.discard(rid)
        skipped = False
        for record in due:
            rid = record.event.receiver_id
            if rid in self._in_flight:
                continue  # its head is being delivered; wait for the outcome
            if rid in finished:
                skipped = True
                continue
            if rid not in self._slow:
                queue = self._queued.get(rid)
                if queue and queue[0].event.event_id == record.event.event_id:
                    continue  # handed over by the engine: it goes out from memory
                self._make_slow(rid)  # a row nobody handed us: the outbox decides
            if free == 0:
                skipped = True
                break
            url = record.callback_url or self.rules.default_url
            origin = origin_of(url) if url else None
            now = trio.current_time()
            if not self.slots.may_start(origin, now):
                skipped = True
                continue
            self._remember_from_outbox(record.event.event_id)
            job = _Job(record.event, url, origin, record.first_attempt_at, False)
            self._start(nursery, job, now)
            free -= 1
        if skipped or len(due) == limit:
            self._look = True  # more is due; a finishing delivery wakes us
            return MAX_IDLE_SECONDS
        wait = MAX_IDLE_SECONDS
        if later is not None:
            wait = min(MAX_IDLE_SECONDS, max(0.0, (later - self.clock()) / 1000))
        self._next_look = trio.current_time() + wait
        return wait

    def _read_outbox(
        self, now: int, limit: int, clear: list[int] | None
    ) -> tuple[list[CallbackRecord], int | None, set[int]]:
        """One thread hop: the due heads, the next retry time, and which receivers (all
        of the wallet's before the first look, else those in ``clear``) still have
        pending events."""
        due, later = self.repo.due_callbacks(self.wallet_id, now, limit)
        pending = self.repo.pending_callback_receivers(self.wallet_id, clear)
        return due, later, pending

    async def _deliver(self, job: _Job) -> None:
        event = job.event
        try:
            attempted_at = self.clock()
            if job.url is None:
                delivery = Delivery(
                    http_status=None,
                    error="no callback URL: the receiver has none and [callbacks] default_url "
                    "is not set (set one, then `dashpay callbacks retry --all-failed`)",
                    duration_ms=0,
                    refused=True,
                )
            else:
                try:
                    body = event.payload.encode("utf-8")
                    delivery = await self.post(job.url, event.event, event.event_id, body)
                except Exception as exc:  # a surprise from a hostile peer must not stop us
                    log.exception("callback attempt crashed event_id=%s", event.event_id)
                    delivery = Delivery(None, f"internal error: {_describe(exc)}", 0)
            outcome = plan_outcome(
                self.rules,
                delivery,
                attempted_at=attempted_at,
                first_attempt_at=job.first_attempt_at,
                attempts_before=event.attempts,
                now=self.clock(),
            )
        except BaseException:
            self._posted(job)
            self._release(job, None)  # cancelled: abandoned, sent again after a restart
            raise
        self._posted(job)
        self._count(job, outcome)
        rid = event.receiver_id
        if (
            self.defer_outcomes
            and outcome.status == OUTBOX_DELIVERED
            and job.from_engine
            and rid not in self._queued
            and rid not in self._slow
        ):
            first = not self._deferred
            if first:
                self._deferred_since = trio.current_time()
            self._deferred.append((job, outcome))
            self._deferred_receivers.add(rid)
            if first or len(self._deferred) >= self._write_count:
                self._outcomes_ready.set()  # the recorder's timer starts, or it is due
        else:
            self._outcomes.append((job, outcome))
            self._outcomes_ready.set()
        if self._ready or self._look:
            self._wakeup.set()  # the slot is free for a delivery that waits for one

    # -- outcomes: written by the recorder, or carried by the engine ----------------------
    def ride(self) -> _Ride | None:
        """The payment engine's ``carry``: the deferred outcomes for its next unit of
        work to write in its transaction, once they have waited long enough (or many
        wait, or a receiver needs one); None otherwise."""
        if not self._deferred:
            return None
        waited = trio.current_time() - self._deferred_since
        if not self._flush and len(self._deferred) < self._carry_count:
            if waited < CARRY_AFTER_SECONDS:
                return None
        return _Ride(self, self._take_deferred())

    def _flush_deferred(self) -> None:
        """Write the deferred outcomes now (the next unit of work may carry them)."""
        self._flush = True
        self._outcomes_ready.set()

    def _take_deferred(self) -> list[tuple[_Job, AttemptOutcome]]:
        batch, self._deferred = self._deferred, []
        self._deferred_receivers.clear()
        self._deferred_since = math.inf
        self._flush = False
        return batch

    def _take_outcomes(self) -> list[tuple[_Job, AttemptOutcome]]:
        """What the recorder writes now: the outcomes to write at once, with the
        deferred ones (older, so first) riding along, or the deferred ones alone once
        they are due."""
        batch, self._outcomes = self._outcomes, []
        if self._deferred and (
            batch
            or self._flush
            or len(self._deferred) >= self._write_count
            or trio.current_time() - self._deferred_since >= WRITE_DEFERRED_AFTER_SECONDS
        ):
            batch = self._take_deferred() + batch
        return batch

    def _carried_back(self, batch: list[tuple[_Job, AttemptOutcome]]) -> None:
        """A unit of work that carried ``batch`` failed: the recorder writes it."""
        self._outcomes[:0] = batch
        self._outcomes_ready.set()

    async def _recorder(self) -> None:
        """Write the outcomes that finished together in one transaction, then let their
        receivers go on; deferred ones when they are due (unless the engine carried
        them first). On cancellation the outcomes already known are still written."""
        try:
            while True:
                due = self._deferred_since + WRITE_DEFERRED_AFTER_SECONDS
                with trio.move_on_after(max(0.0, due - trio.current_time())):
                    await self._outcomes_ready.wait()
                self._outcomes_ready = trio.Event()
                batch = self._take_outcomes()
                if batch:
                    self._recorded(batch, await self._record(batch))
        finally:
            batch = self._take_deferred() + self._outcomes
            self._outcomes = []
            if batch:
                with trio.CancelScope(shield=True), trio.move_on_after(FINAL_WRITE_SECONDS):
                    await self._record(batch)

    def _recorded(
        self, batch: list[tuple[_Job, AttemptOutcome]], problems: Sequence[Exception | None]
    ) -> None:
        """``batch``'s outcomes are committed (by the recorder or carried by the
        engine): its receivers go on."""
        for (job, _), problem in zip(batch, problems, strict=True):
            if problem is not None:
                log.warning(
                    "callback attempt not recorded event_id=%s: %s", job.event.event_id, problem
                )
        for job, outcome in batch:
            self._release(job, outcome)
        self._wakeup.set()

    def _release(self, job: _Job, outcome: AttemptOutcome | None) -> None:
        rid = job.event.receiver_id
        if self._finished_during_query is not None:
            self._finished_during_query.add(rid)
        self._in_flight.discard(rid)
        if outcome is None:
            return
        if outcome.status == OUTBOX_PENDING:
            self._make_slow(rid)  # in back-off: its later events wait in the outbox
        elif rid in self._slow:
            self._maybe_clear.add(rid)  # its next event, if any, is in the outbox
            self._look = True
        elif rid in self._queued:
            self._ready_queue(job.origin).append(rid)

    async def _record(self, batch: list[tuple[_Job, AttemptOutcome]]) -> Sequence[Exception | None]:
        """Write the outcomes; while the database is down, keep trying (the receivers
        stay in flight, so their next events wait). Each write is shielded: a shutdown
        lets it finish, so a delivered event is not sent again needlessly."""
        items = [(job.event.event_id, outcome) for job, outcome in batch]
        backoff, outage = database_backoff(), Outage()
        while True:
            try:
                with trio.CancelScope(shield=True):
                    problems = await trio.to_thread.run_sync(
                        self.repo.record_callback_attempts, items
                    )
                break
            except Unavailable as exc:
                self.stats.db_errors += 1
                _log_outage(outage, f"callback attempts not recorded count={len(items)}", exc)
                await trio.sleep(backoff.next_delay())
        _log_outage_end(outage, "callback attempts")
        return problems

    def _count(self, job: _Job, outcome: AttemptOutcome) -> None:
        event = job.event
        self.stats.attempts += 1
        if outcome.status == OUTBOX_DELIVERED:
            self.stats.delivered += 1
            self.stats.last_delivered_at = time.time()
            # DEBUG, not INFO: the engine logged this event when it was committed and
            # the attempt is in the outbox (`callbacks show`); a formatted stderr write
            # per delivery cost ~15 us of CPU per callback (and the log reader's
            # time). Retries and failures, the lines one acts on, stay WARNING/ERROR.
            if log.isEnabledFor(logging.DEBUG):
                log.debug(
                    "callback delivered event_id=%s receiver=%d event=%s target=%s "
                    "status=%s duration_ms=%d",
                    event.event_id,
                    event.receiver_id,
                    event.event,
                    display_origin(job.url) if job.url else None,
                    outcome.http_status,
                    outcome.duration_ms,
                )
            return
        target = display_origin(job.url) if job.url else None
        self.stats.last_error = outcome.error
        self.stats.last_error_at = time.time()
        if outcome.status == OUTBOX_PENDING:
            self.stats.retried += 1
            assert outcome.next_attempt_at is not None
            log.warning(
                "callback retry event_id=%s receiver=%d target=%s attempt=%d in_seconds=%.1f "
                "error=%s",
                event.event_id,
                event.receiver_id,
                target,
                event.attempts + 1,
                (outcome.next_attempt_at - self.clock()) / 1000,
                outcome.error,
            )
        else:
            self.stats.failed += 1
            log.error(
                "callback failed event_id=%s receiver=%d target=%s attempt=%d error=%s",
                event.event_id,
                event.receiver_id,
                target,
                event.attempts + 1,
                outcome.error,
            )

    # -- one POST -----------------------------------------------------------------------
    def _url_problem(self, url: str) -> str | None:
        """Why ``url`` may not be posted to, or None; remembered per URL, since the same
        few URLs (the default, the merchants' own) come back for every event."""
        known = self._checked_urls.get(url, False)
        if known is not False:
            return known
        try:
            validate_callback_url(url, what="callback URL")
            problem = None
        except InvalidParams as exc:
            problem = exc.message
        if len(self._checked_urls) >= MAX_REMEMBERED_URLS:
            self._checked_urls.clear()
        self._checked_urls[url] = problem
        return problem

    def headers(self, event: str, event_id: str, body: bytes, timestamp: int) -> dict[str, str]:
        return {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "Accept-Encoding": "identity",  # never spend CPU inflating an answer
            "Dashpay-Event": event,
            "Dashpay-Delivery": event_id,
            "Dashpay-Signature": signature_header(self.secret.value, body, timestamp),
        }

    async def post(
        self, url: str, event: str, event_id: str, body: bytes, *, excerpt: bool = False
    ) -> Delivery:
        """Sign and POST ``body`` once, within ``[callbacks] timeout``. Never raises for
        a network or HTTP problem: the Delivery says what happened. The start of the
        answer's body is kept for an error (or always, with ``excerpt``)."""
        poster = self._poster
        if poster is None:
            raise Unavailable("the callback sender is not running")
        problem = self._url_problem(url)
        if problem is not None:
            return Delivery(None, problem, 0, refused=True)
        headers = self.headers(event, event_id, body, self.clock() // 1000)
        started = trio.current_time()
        status: int | None = None
        error: str | None = None
        refused = False
        retry_after: str | None = None
        text = ""
        with trio.move_on_after(self.rules.timeout) as deadline:
            try:
                response = await poster.post(url, list(headers.items()), body)
                status = response.status
                if excerpt or not 200 <= status <= 299:
                    retry_after = response.header(b"retry-after")
                    text = _printable(response.body)
            except TargetRefused as exc:
                error, refused = f"refused: {exc}", True
            except ConnectFailed as exc:
                error = f"cannot connect: {exc}"
            except HttpPostError as exc:
                error = str(exc)
        if status is not None:
            error = _status_error(status, text)
        elif deadline.cancelled_caught:
            error = f"timed out after {format_duration(self.rules.timeout)} without an answer"
        duration_ms = max(0, round((trio.current_time() - started) * 1000))
        return Delivery(
            http_status=status,
            error=error,
            duration_ms=duration_ms,
            refused=refused,
            retry_after=retry_after_seconds(retry_after, time.time()),
            excerpt=text,
        )


class _Ride:
    """Deferred outcomes carried by the payment engine's unit of work (an
    ``engine.loop.Rider``)."""

    __slots__ = ("_sender", "_batch", "_items")

    def __init__(self, sender: CallbackSender, batch: list[tuple[_Job, AttemptOutcome]]) -> None:
        self._sender = sender
        self._batch = batch
        self._items = [(job.event.event_id, outcome) for job, outcome in batch]

    def write(self, tx: Any) -> list:
        return tx.record_callback_attempts(self._items)

    def committed(self, result: object) -> None:
        self._sender._recorded(self._batch, result)  # type: ignore[arg-type]

    def returned(self) -> None:
        self._sender._carried_back(self._batch)


def _log_outage(outage: Outage, what: str, exc: Exception) -> None:
    """The first failure of an outage and then one line a minute (retries go on every
    second)."""
    now = trio.current_time()
    if outage.failed(now):
        since = outage.since if outage.since is not None else now
        log.warning("%s for %.0fs; retrying every second: %s", what, now - since, exc)


def _log_outage_end(outage: Outage, what: str) -> None:
    lasted = outage.ended(trio.current_time())
    if lasted is not None:
        log.info("%s: database back after %.1fs", what, lasted)
