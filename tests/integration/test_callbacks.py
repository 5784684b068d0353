"""The callback sender against a real HTTP server on 127.0.0.1, with real repositories
(SQLite and MariaDB). Events enter the outbox through the payment unit of work
(``record_batch`` with the real accounting rules and payloads), exactly as the
engine writes them; the sender runs in-process under trio."""

from __future__ import annotations

import collections
import json
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from functools import partial

import pytest
import trio
import trio.testing

from dashpay import __version__
from dashpay.config.database import parse_database_url
from dashpay.config.model import CallbacksConfig
from dashpay.domain import accounting
from dashpay.domain.errors import InvalidParams, NotFound, Unavailable
from dashpay.domain.model import (
    AttemptOutcome,
    NewReceiver,
    OutboxEvent,
    PaymentObservation,
    Receiver,
    ReceiverResult,
    ReceiverWork,
)
from dashpay.domain.payload import event_payload
from dashpay.domain.status import OUTBOX_DELIVERED, OUTBOX_FAILED, OUTBOX_PENDING
from dashpay.engine.loop import PaymentEngine
from dashpay.engine.record import decider, record_batch
from dashpay.net.outbound import Outbound
from dashpay.repository import open_repository
from dashpay.repository.base import Repository
from dashpay.services.callbacks.secret import CallbackSecret, resolve_secret
from dashpay.services.callbacks.sender import (
    CARRY_AFTER_SECONDS,
    MAX_RESPONSE_BYTES,
    WRITE_DEFERRED_AFTER_SECONDS,
    CallbackSender,
    now_ms,
)
from dashpay.services.callbacks.service import CallbackService
from dashpay.services.callbacks.signing import verify_signature
from dashpay.services.callbacks.slots import SLOW_LANE_SLOTS
from tests.commands import rpc
from tests.integration.conftest import CallbackServer, Reply, free_port

WALLET = "c0ffee00c0ffee00"
SECRET = CallbackSecret("test-secret-0123456789abcdef", "test")
COIN = 100_000_000


def rules(**overrides) -> CallbacksConfig:
    settings = {
        "timeout": 1.0,
        "backoff_initial": 0.1,
        "backoff_max": 0.4,
        "give_up_after": 60.0,
        "max_in_flight": 4,
    }
    settings.update(overrides)
    return CallbacksConfig(**settings)


def new_receiver(repo: Repository, url: str | None, amount: int = COIN) -> Receiver:
    new = NewReceiver(
        wallet_id=WALLET, chain=0, amount_duffs=amount, created_at=now_ms(), callback_url=url
    )
    receiver, _ = repo.create_receiver(new, lambda index: f"X{WALLET[:8]}{index:025d}")
    return receiver


def commit(repo: Repository, receiver: Receiver, *seen: PaymentObservation) -> ReceiverResult:
    """Record observations through the engine's unit of work."""
    now = now_ms()

    decide = decider(now, accounting.Rules(), event_payload)
    work = [ReceiverWork(receiver.receiver_id, seen)]
    [result] = repo.transaction(partial(record_batch, items=work, now=now, decide=decide))
    return result


def observe(repo: Repository, receiver: Receiver, *seen: PaymentObservation) -> list[OutboxEvent]:
    """Record observations through the engine's unit of work; the events it enqueued."""
    return commit(repo, receiver, *seen).events


def handed_over(
    repo: Repository, sender: CallbackSender, receiver: Receiver, *seen: PaymentObservation
) -> list[OutboxEvent]:
    """As the engine does it: commit, then hand the result to the sender."""
    result = commit(repo, receiver, *seen)
    sender.offer([result])
    return result.events


class CountingRepository:
    """The real repository, counting the calls the sender makes to it."""

    def __init__(self, repo: Repository) -> None:
        self._repo = repo
        self.calls: collections.Counter[str] = collections.Counter()

    def __getattr__(self, name: str):
        attribute = getattr(self._repo, name)
        if not callable(attribute):
            return attribute

        def counted(*args, **kwargs):
            self.calls[name] += 1
            return attribute(*args, **kwargs)

        return counted


def payment(receiver: Receiver, duffs: int, *, locked: bool = False, txid: str | None = None):
    return PaymentObservation(
        txid or secrets.token_hex(32), receiver.address, duffs, locked, None, None
    )


def lifecycle(repo: Repository, receiver: Receiver) -> list[OutboxEvent]:
    """partial, paid, settled: three events of one receiver, in this order."""
    first = payment(receiver, receiver.amount_duffs * 4 // 10)
    second = payment(receiver, receiver.amount_duffs - first.amount_duffs)
    events = observe(repo, receiver, first)
    events += observe(repo, receiver, second)
    events += observe(repo, receiver, replace(first, instant_locked=True))
    events += observe(repo, receiver, replace(second, instant_locked=True))
    assert [e.event for e in events] == [
        accounting.EVENT_PARTIAL,
        accounting.EVENT_PAID,
        accounting.EVENT_SETTLED,
    ]
    return events


def paid(repo: Repository, receiver: Receiver) -> OutboxEvent:
    [event] = observe(repo, receiver, payment(receiver, receiver.amount_duffs))
    return event


def sender_for(repo: Repository, **overrides) -> CallbackSender:
    return CallbackSender(repo, rules(**overrides), WALLET, SECRET)


@asynccontextmanager
async def running(sender: CallbackSender) -> AsyncIterator[CallbackSender]:
    async with trio.open_nursery() as nursery:
        await nursery.start(sender.run)
        yield sender
        nursery.cancel_scope.cancel()


async def eventually(predicate: Callable[[], object], timeout: float = 10.0) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.02)


def status_of(repo: Repository, event_id: str) -> str:
    return repo.get_callback(event_id)[0].event.status


def attempts_of(repo: Repository, event_id: str) -> list[tuple[int | None, str | None]]:
    return [(a.http_status, a.error) for a in repo.get_callback(event_id)[1]]


# -- the request ------------------------------------------------------------------------


async def test_a_delivery_is_a_signed_post_of_the_stored_body(outbox_repo, http_server):
    receiver = new_receiver(outbox_repo, http_server.url())
    event = paid(outbox_repo, receiver)
    async with running(sender_for(outbox_repo)):
        await eventually(lambda: status_of(outbox_repo, event.event_id) == OUTBOX_DELIVERED)
    [request] = http_server.to("/cb")
    assert request.body == event.payload.encode("utf-8")
    headers = request.headers
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"] == f"dashpay/{__version__}"
    assert headers["dashpay-event"] == "receiver.paid"
    assert headers["dashpay-delivery"] == event.event_id
    signature = headers["dashpay-signature"]
    assert verify_signature(SECRET.value, request.body, signature)
    assert not verify_signature("another-secret-0123456789", request.body, signature)
    assert not verify_signature(SECRET.value, request.body + b" ", signature)
    timestamp = int(signature.split(",")[0].removeprefix("t="))
    assert abs(timestamp - time.time()) < 10
    body = json.loads(request.body)
    assert body["event_id"] == event.event_id and body["receiver_id"] == receiver.receiver_id
    assert body["receiver"]["status"] == "settled" or body["receiver"]["status"] == "paid"
    record, attempts = outbox_repo.get_callback(event.event_id)
    assert record.event.attempts == 1 and record.event.delivered_at is not None
    assert [(a.http_status, a.error) for a in attempts] == [(200, None)]


async def test_one_connection_is_kept_alive_for_many_deliveries(outbox_repo, http_server):
    events = [paid(outbox_repo, new_receiver(outbox_repo, http_server.url())) for _ in range(6)]
    async with running(sender_for(outbox_repo, max_in_flight=1)):
        await eventually(
            lambda: all(status_of(outbox_repo, e.event_id) == OUTBOX_DELIVERED for e in events)
        )
    ports = {r.client_port for r in http_server.to("/cb")}
    assert len(http_server.to("/cb")) == 6 and len(ports) == 1


# -- retries ------------------------------------------------------------------------------


async def test_server_errors_are_retried_with_growing_delays_until_success(
    outbox_repo, http_server
):
    http_server.script("/cb", Reply(500, b"boom"), Reply(503, b""), Reply(200))
    event = paid(outbox_repo, new_receiver(outbox_repo, http_server.url()))
    async with running(sender_for(outbox_repo, backoff_initial=0.2, backoff_max=1.0)):
        await eventually(lambda: status_of(outbox_repo, event.event_id) == OUTBOX_DELIVERED)
    requests = http_server.to("/cb")
    assert [r.delivery for r in requests] == [event.event_id] * 3
    first_gap, second_gap = (b.at - a.at for a, b in zip(requests, requests[1:], strict=False))
    assert first_gap >= 0.19 and second_gap >= 0.39  # 0.2 s, then doubled
    assert attempts_of(outbox_repo, event.event_id) == [
        (500, "HTTP 500: boom"),
        (503, "HTTP 503"),
        (200, None),
    ]


async def test_a_timeout_is_retried(outbox_repo, http_server):
    http_server.script("/cb", Reply(hang=True), Reply(200))
    event = paid(outbox_repo, new_receiver(outbox_repo, http_server.url()))
    started = trio.current_time()
    async with running(sender_for(outbox_repo, timeout=0.5)):
        await eventually(lambda: status_of(outbox_repo, event.event_id) == OUTBOX_DELIVERED)
    assert trio.current_time() - started >= 0.5
    [(status, error), second] = attempts_of(outbox_repo, event.event_id)
    assert status is None and ("timed out" in error or "no answer" in error)
    assert second == (200, None)


async def test_connection_refused_is_retried_until_the_server_is_up(outbox_repo):
    port = free_port()
    event = paid(outbox_repo, new_receiver(outbox_repo, f"http://127.0.0.1:{port}/cb"))
    async with running(sender_for(outbox_repo)):
        await eventually(lambda: len(attempts_of(outbox_repo, event.event_id)) >= 2)
        assert status_of(outbox_repo, event.event_id) == OUTBOX_PENDING
        server = CallbackServer(port=port).start()
        try:
            await eventually(lambda: status_of(outbox_repo, event.event_id) == OUTBOX_DELIVERED)
        finally:
            server.stop()
    attempts = attempts_of(outbox_repo, event.event_id)
    assert all(s is None and "cannot connect" in e for s, e in attempts[:-1])
    assert attempts[-1] == (200, None)
    assert len(server.to("/cb")) == 1


async def test_a_client_error_fails_at_once_without_retry(outbox_repo, http_server):
    http_server.always("/cb", Reply(400, b'{"error":"unknown order"}'))
    event = paid(outbox_repo, new_receiver(outbox_repo, http_server.url()))
    async with running(sender_for(outbox_repo, backoff_initial=0.05)):
        await eventually(lambda: status_of(outbox_repo, event.event_id) == OUTBOX_FAILED)
        await trio.sleep(0.3)  # several back-off periods: nothing more is sent
    assert len(http_server.to("/cb")) == 1
    record, _ = outbox_repo.get_callback(event.event_id)
    assert record.event.last_error == 'HTTP 400: {"error":"unknown order"}'


async def test_a_redirect_is_not_followed_and_fails(outbox_repo, http_server):
    http_server.always("/cb", Reply(302, b"", headers=(("Location", "/elsewhere"),)))
    event = paid(outbox_repo, new_receiver(outbox_repo, http_server.url()))
    async with running(sender_for(outbox_repo)):
        await eventually(lambda: status_of(outbox_repo, event.event_id) == OUTBOX_FAILED)
    assert http_server.to("/elsewhere") == []
    assert (
        "redirects are not followed" in outbox_repo.get_callback(event.event_id)[0].event.last_error
    )


async def test_retry_after_is_honoured(outbox_repo, http_server):
    http_server.script("/cb", Reply(429, headers=(("Retry-After", "1"),)), Reply(200))
    event = paid(outbox_repo, new_receiver(outbox_repo, http_server.url()))
    async with running(sender_for(outbox_repo, backoff_initial=0.05, backoff_max=0.1)):
        await eventually(lambda: status_of(outbox_repo, event.event_id) == OUTBOX_DELIVERED)
    first, second = http_server.to("/cb")
    assert second.at - first.at >= 0.99  # not the 0.05 s back-off: the server asked for 1 s


async def test_give_up_after_the_horizon_fails_the_event(outbox_repo, http_server):
    http_server.always("/cb", Reply(500))
    event = paid(outbox_repo, new_receiver(outbox_repo, http_server.url()))
    async with running(sender_for(outbox_repo, backoff_initial=0.05, give_up_after=0.4)):
        await eventually(lambda: status_of(outbox_repo, event.event_id) == OUTBOX_FAILED)
    record, attempts = outbox_repo.get_callback(event.event_id)
    assert "gave up after" in record.event.last_error
    assert len(attempts) >= 3 and len(http_server.to("/cb")) == len(attempts)
    assert attempts[-1].attempted_at - attempts[0].attempted_at >= 400


# -- order and concurrency --------------------------------------------------------------


async def test_each_receivers_events_stay_in_order_under_concurrent_failures(
    outbox_repo, http_server
):
    paths = ["/a", "/b", "/c"]
    http_server.script("/a", Reply(500), Reply(200, delay=0.1), Reply(500), Reply(500))
    http_server.script("/b", Reply(200, delay=0.2), Reply(502), Reply(200))
    http_server.script("/c", Reply(hang=True), Reply(503), Reply(200))
    for path in paths:
        http_server.always(path, Reply(200, delay=0.05))
    expected = {}
    for path in paths:
        receiver = new_receiver(outbox_repo, http_server.url(path))
        expected[path] = [e.event_id for e in lifecycle(outbox_repo, receiver)]
    everything = [i for ids in expected.values() for i in ids]
    async with running(sender_for(outbox_repo, timeout=0.4, backoff_initial=0.05)):
        await eventually(
            lambda: all(status_of(outbox_repo, i) == OUTBOX_DELIVERED for i in everything)
        )
    for path in paths:
        sent = [r.delivery for r in http_server.to(path)]
        order = [i for n, i in enumerate(sent) if n == 0 or sent[n - 1] != i]
        assert order == expected[path], path  # retries repeat an event, never reorder
    assert http_server.max_active >= 2  # receivers were served concurrently


# -- events handed over by the engine ----------------------------------------------------


async def test_handed_over_events_go_out_in_order_without_reading_the_outbox(
    outbox_repo, http_server
):
    counting = CountingRepository(outbox_repo)
    sender = CallbackSender(counting, rules(max_in_flight=4), WALLET, SECRET)
    receivers = [new_receiver(outbox_repo, http_server.url(f"/r{n}")) for n in range(6)]
    expected: dict[int, list[str]] = {r.receiver_id: [] for r in receivers}
    async with running(sender):
        await eventually(lambda: sender.synced)
        for _step in range(2):  # partial, then paid, for every receiver
            for receiver in receivers:
                duffs = receiver.amount_duffs // 2
                events = handed_over(outbox_repo, sender, receiver, payment(receiver, duffs))
                expected[receiver.receiver_id] += [e.event_id for e in events]
        every = [i for ids in expected.values() for i in ids]
        await eventually(lambda: all(status_of(outbox_repo, i) == OUTBOX_DELIVERED for i in every))
    for n, receiver in enumerate(receivers):
        assert [r.delivery for r in http_server.to(f"/r{n}")] == expected[receiver.receiver_id]
    assert counting.calls["due_callbacks"] == 1  # the look at start-up, and no other
    assert counting.calls["record_callback_attempts"] <= len(every)


async def test_handed_over_events_keep_their_order_through_retries(outbox_repo, http_server):
    http_server.script("/a", Reply(500), Reply(200, delay=0.1), Reply(500), Reply(500))
    http_server.script("/b", Reply(200, delay=0.2), Reply(502), Reply(200))
    http_server.script("/c", Reply(hang=True), Reply(503), Reply(200))
    sender = sender_for(outbox_repo, timeout=0.4, backoff_initial=0.05)
    expected = {}
    async with running(sender):
        await eventually(lambda: sender.synced)
        for path in ("/a", "/b", "/c"):
            http_server.always(path, Reply(200, delay=0.05))
            receiver = new_receiver(outbox_repo, http_server.url(path))
            first = payment(receiver, receiver.amount_duffs * 4 // 10)
            second = payment(receiver, receiver.amount_duffs - first.amount_duffs)
            ids = handed_over(outbox_repo, sender, receiver, first)
            ids += handed_over(outbox_repo, sender, receiver, second)
            ids += handed_over(outbox_repo, sender, receiver, replace(first, instant_locked=True))
            ids += handed_over(outbox_repo, sender, receiver, replace(second, instant_locked=True))
            expected[path] = [e.event_id for e in ids]
        every = [i for ids in expected.values() for i in ids]
        await eventually(lambda: all(status_of(outbox_repo, i) == OUTBOX_DELIVERED for i in every))
    for path, ids in expected.items():
        sent = [r.delivery for r in http_server.to(path)]
        order = [i for n, i in enumerate(sent) if n == 0 or sent[n - 1] != i]
        assert order == ids, path  # retries repeat an event, never reorder


async def test_a_handed_over_event_waits_behind_an_older_pending_one(outbox_repo, http_server):
    late = new_receiver(outbox_repo, http_server.url("/late"))
    other = new_receiver(outbox_repo, http_server.url("/other"))
    first = payment(late, late.amount_duffs // 2)
    [older] = observe(outbox_repo, late, first)
    outbox_repo.record_callback_attempt(  # in back-off for an hour, from before the start
        older.event_id,
        AttemptOutcome(now_ms(), 5, 503, "HTTP 503", OUTBOX_PENDING, now_ms() + 3_600_000),
    )
    sender = sender_for(outbox_repo)
    async with running(sender):
        await eventually(lambda: sender.synced)
        [newer] = handed_over(outbox_repo, sender, late, payment(late, late.amount_duffs // 2))
        [marker] = handed_over(outbox_repo, sender, other, payment(other, other.amount_duffs))
        await eventually(lambda: status_of(outbox_repo, marker.event_id) == OUTBOX_DELIVERED)
        await trio.testing.wait_all_tasks_blocked()
        assert http_server.to("/late") == []  # the newer event did not overtake
        await rpc(
            "callbacks.retry",
            {"event_id": older.event_id},
            callbacks=CallbackService(outbox_repo, sender, WALLET),
        )
        await eventually(lambda: status_of(outbox_repo, newer.event_id) == OUTBOX_DELIVERED)
    assert [r.delivery for r in http_server.to("/late")] == [older.event_id, newer.event_id]


async def test_an_event_sent_from_the_outbox_is_not_sent_again_when_handed_over_late(
    outbox_repo, http_server
):
    receiver = new_receiver(outbox_repo, http_server.url("/cb"))
    sender = sender_for(outbox_repo)
    async with running(sender):
        await eventually(lambda: sender.synced)
        # The commit is read from the outbox before the engine gets to hand it over.
        early = commit(outbox_repo, receiver, payment(receiver, receiver.amount_duffs // 2))
        sender.wake()
        [event] = early.events
        await eventually(lambda: status_of(outbox_repo, event.event_id) == OUTBOX_DELIVERED)
        sender.offer([early])
        [later] = handed_over(
            outbox_repo, sender, receiver, payment(receiver, receiver.amount_duffs // 2)
        )
        await eventually(lambda: status_of(outbox_repo, later.event_id) == OUTBOX_DELIVERED)
    # One receiver's events go out in order, so a second copy would have come first.
    assert [r.delivery for r in http_server.to("/cb")] == [event.event_id, later.event_id]


class StalledRecorder(CountingRepository):
    """The real repository, except that recording attempts waits until ``release``
    (as a database that stopped answering would): the call blocks its worker thread."""

    def __init__(self, repo: Repository) -> None:
        super().__init__(repo)
        self.released = threading.Event()

    def record_callback_attempts(self, attempts):
        self.calls["record_callback_attempts"] += 1
        self.released.wait(timeout=30)
        return self._repo.record_callback_attempts(attempts)


async def test_slots_are_free_once_answered_and_held_receivers_are_bounded(
    outbox_repo, http_server
):
    stalled = StalledRecorder(outbox_repo)
    sender = CallbackSender(stalled, rules(max_in_flight=2), WALLET, SECRET)
    events = [
        paid(outbox_repo, new_receiver(outbox_repo, http_server.url("/cb"))) for _ in range(12)
    ]
    async with running(sender):
        try:
            # While no outcome can be committed, POSTs go on past the 2 slots (each is
            # free once answered) until 4 x 2 receivers are held, and then stop.
            await eventually(lambda: sender.in_flight == sender.max_held == 8)
            await eventually(lambda: len(http_server.requests) >= 8)
            await trio.testing.wait_all_tasks_blocked(0.05)
            assert len(http_server.requests) == 8
            assert all(status_of(outbox_repo, e.event_id) == OUTBOX_PENDING for e in events)
            stalled.released.set()  # the database answers again: everything goes out
            await eventually(
                lambda: all(status_of(outbox_repo, e.event_id) == OUTBOX_DELIVERED for e in events)
            )
        finally:
            stalled.released.set()  # before the sender stops: its last write waits for it
    assert sorted(r.delivery for r in http_server.requests) == sorted(e.event_id for e in events)


class DownDatabase(CountingRepository):
    """The real repository behind a database that is unreachable while ``down`` is set:
    the outbox reads and the attempt writes raise Unavailable, as a lost connection does."""

    def __init__(self, repo: Repository) -> None:
        super().__init__(repo)
        self.down = True

    def _reach(self, name: str) -> None:
        self.calls[name] += 1
        if self.down:
            raise Unavailable("the database is down (test)")

    def due_callbacks(self, *args, **kwargs):
        self._reach("due_callbacks")
        return self._repo.due_callbacks(*args, **kwargs)

    def record_callback_attempts(self, attempts):
        self._reach("record_callback_attempts")
        return self._repo.record_callback_attempts(attempts)


async def test_callbacks_resume_within_a_second_or_so_of_the_database_coming_back(
    outbox_repo, http_server
):
    """Five failed outbox reads: the old doubling to 30 s would wait 8 s more; the retry
    is every second at most, so the delivery follows within ~1 s (asserted < 2 s)."""
    event = paid(outbox_repo, new_receiver(outbox_repo, http_server.url()))
    db = DownDatabase(outbox_repo)
    async with running(sender_for(db)):
        await eventually(lambda: db.calls["due_callbacks"] >= 5)
        assert http_server.to("/cb") == []
        db.down = False
        back = trio.current_time()
        await eventually(lambda: len(http_server.to("/cb")) == 1)
        took = trio.current_time() - back
        await eventually(lambda: status_of(outbox_repo, event.event_id) == OUTBOX_DELIVERED)
    assert took < 2.0, f"delivered {took:.2f}s after the database came back"


async def test_a_hanging_endpoint_does_not_delay_other_receivers(outbox_repo, http_server):
    hanging = CallbackServer().start()  # another origin (port): a merchant's other site
    try:
        hanging.always("/cb", Reply(hang=True))
        stuck = [paid(outbox_repo, new_receiver(outbox_repo, hanging.url())) for _ in range(6)]
        healthy = paid(outbox_repo, new_receiver(outbox_repo, http_server.url("/ok")))
        started = trio.current_time()
        async with running(sender_for(outbox_repo, timeout=5.0, max_in_flight=4)):
            await eventually(lambda: status_of(outbox_repo, healthy.event_id) == OUTBOX_DELIVERED)
            assert trio.current_time() - started < 2.0  # well before any hang times out
            assert all(status_of(outbox_repo, e.event_id) == OUTBOX_PENDING for e in stuck)
            assert len(hanging.requests) == SLOW_LANE_SLOTS  # it never answered fast
    finally:
        hanging.stop()


async def test_a_healthy_endpoint_is_served_at_once_while_two_others_hold_slots(outbox_repo):
    """Issue 14.4, its shape with shorter times: 15 receivers on an endpoint that never
    answers and 15 on one that answers after 2.5 s (timeout 3 s), all retried at once,
    with the default 16 slots. Before the slots were earned, the first origin took 12
    slots and the second the other 4, and each healthy callback waited for them."""
    hanging, slow, healthy = (CallbackServer().start() for _ in range(3))
    try:
        hanging.always("/cb", Reply(hang=True))
        slow.always("/cb", Reply(delay=2.5))
        settings = rules(timeout=3.0, max_in_flight=CallbacksConfig().max_in_flight)
        sender = CallbackSender(outbox_repo, settings, WALLET, SECRET)
        async with running(sender):
            await eventually(lambda: sender.synced)
            for server in (hanging, slow):
                for _ in range(15):
                    receiver = new_receiver(outbox_repo, server.url())
                    handed_over(outbox_repo, sender, receiver, payment(receiver, COIN))
            await eventually(lambda: hanging.requests and slow.requests)
            enqueued: dict[str, float] = {}
            # 6 s: past the slow answers (2.5 s), the hanging timeouts (3 s) and their
            # retries (0.1 s later), twice.
            for _ in range(30):
                await trio.sleep(0.2)
                receiver = new_receiver(outbox_repo, healthy.url())
                started = time.monotonic()
                [event] = handed_over(outbox_repo, sender, receiver, payment(receiver, COIN))
                enqueued[event.event_id] = started
            await eventually(lambda: len(healthy.requests) >= len(enqueued), timeout=5.0)
        # The bad endpoints were holding slots all along: attempted again and again.
        assert len(hanging.requests) >= 4 and len(slow.requests) >= 4
        late = sorted(r.at - enqueued[r.delivery] for r in healthy.requests)
        assert len(late) == 30 and late[-1] < 1.0, late
    finally:
        for server in (hanging, slow, healthy):
            server.stop()


async def test_a_huge_response_body_does_not_stall_the_sender(outbox_repo, http_server):
    http_server.always("/huge", Reply(200, huge=1 << 30))
    http_server.always("/big-error", Reply(500, huge=1 << 30))
    huge = paid(outbox_repo, new_receiver(outbox_repo, http_server.url("/huge")))
    failing = paid(outbox_repo, new_receiver(outbox_repo, http_server.url("/big-error")))
    started = trio.current_time()
    async with running(
        sender_for(outbox_repo, timeout=5.0, backoff_initial=30.0, backoff_max=30.0)
    ):
        await eventually(lambda: status_of(outbox_repo, huge.event_id) == OUTBOX_DELIVERED)
        await eventually(lambda: len(attempts_of(outbox_repo, failing.event_id)) == 1)
    assert trio.current_time() - started < 3.0
    [(status, error)] = attempts_of(outbox_repo, failing.event_id)
    assert status == 500 and error.startswith("HTTP 500: xxx") and len(error) < 300
    assert MAX_RESPONSE_BYTES < 1 << 30


async def test_a_slowly_dripping_body_does_not_hold_the_delivery(outbox_repo, http_server):
    http_server.always("/drip", Reply(200, drip=0.2))
    event = paid(outbox_repo, new_receiver(outbox_repo, http_server.url("/drip")))
    started = trio.current_time()
    async with running(sender_for(outbox_repo, timeout=10.0)):
        await eventually(lambda: status_of(outbox_repo, event.event_id) == OUTBOX_DELIVERED)
    assert trio.current_time() - started < 3.0  # the body would take days


# -- restart and manual retry ---------------------------------------------------------


async def test_a_restart_during_backoff_resumes_with_no_lost_and_no_extra_delivery(
    outbox_repo, http_server, database_url
):
    http_server.script("/cb", Reply(500))
    receiver = new_receiver(outbox_repo, http_server.url())
    first, second, third = lifecycle(outbox_repo, receiver)
    async with running(sender_for(outbox_repo, backoff_initial=1.0, backoff_max=1.0)):
        await eventually(lambda: len(attempts_of(outbox_repo, first.event_id)) == 1)
    # The daemon is gone; the retry is a row, due about 1 s after the first attempt.
    assert status_of(outbox_repo, first.event_id) == OUTBOX_PENDING
    assert len(http_server.to("/cb")) == 1
    again = open_repository(parse_database_url(database_url))
    try:
        async with running(sender_for(again, backoff_initial=1.0, backoff_max=1.0)):
            await eventually(
                lambda: status_of(again, third.event_id) == OUTBOX_DELIVERED, timeout=10
            )
            await trio.sleep(0.3)
    finally:
        again.close()
    sent = http_server.to("/cb")
    assert [r.delivery for r in sent] == [
        first.event_id,
        first.event_id,
        second.event_id,
        third.event_id,
    ]
    assert sent[1].at - sent[0].at >= 0.95  # the back-off survived the restart


async def test_manual_retry_redelivers_with_the_same_delivery_id(outbox_repo, http_server):
    http_server.script("/cb", Reply(410), Reply(200))
    event = paid(outbox_repo, new_receiver(outbox_repo, http_server.url()))
    sender = sender_for(outbox_repo)
    service = CallbackService(outbox_repo, sender, WALLET)
    async with running(sender):
        await eventually(lambda: status_of(outbox_repo, event.event_id) == OUTBOX_FAILED)
        result = await rpc("callbacks.retry", {"event_id": event.event_id}, callbacks=service)
        assert result == {"retried": 1, "event_ids": [event.event_id]}
        await eventually(lambda: status_of(outbox_repo, event.event_id) == OUTBOX_DELIVERED)
    first, second = http_server.to("/cb")
    assert first.delivery == second.delivery == event.event_id
    assert first.body == second.body
    assert verify_signature(SECRET.value, second.body, second.headers["dashpay-signature"])


async def test_retry_all_failed_redelivers_every_failed_event(outbox_repo, http_server):
    http_server.script("/cb", Reply(404), Reply(404))
    events = [paid(outbox_repo, new_receiver(outbox_repo, http_server.url())) for _ in range(2)]
    sender = sender_for(outbox_repo, max_in_flight=1)
    service = CallbackService(outbox_repo, sender, WALLET)
    async with running(sender):
        await eventually(
            lambda: all(status_of(outbox_repo, e.event_id) == OUTBOX_FAILED for e in events)
        )
        assert await rpc("callbacks.retry", {"all_failed": True}, callbacks=service) == {
            "retried": 2,
            "event_ids": None,
        }
        await eventually(
            lambda: all(status_of(outbox_repo, e.event_id) == OUTBOX_DELIVERED for e in events)
        )
    assert len(http_server.to("/cb")) == 4


# -- where callbacks may go -------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/",
        "http://[fe80::1]/cb",
        "http://[64:ff9b::a9fe:a9fe]/latest/meta-data/",  # NAT64 of 169.254.169.254
        "http://[2002:a9fe:a9fe::]/latest/meta-data/",  # 6to4 of it
    ],
)
async def test_link_local_and_metadata_targets_are_refused(outbox_repo, url):
    event = paid(outbox_repo, new_receiver(outbox_repo, url))
    async with running(sender_for(outbox_repo)):
        await eventually(lambda: status_of(outbox_repo, event.event_id) == OUTBOX_FAILED)
    [(status, error)] = attempts_of(outbox_repo, event.event_id)
    assert status is None and error.startswith("refused:") and "block_link_local" in error


async def test_a_name_is_checked_at_connect_time_by_what_it_resolves_to(outbox_repo, http_server):
    # "localhost" passes any name check but resolves to loopback, which these rules
    # forbid: the guard must look at the resolved address, and nothing may arrive.
    url = f"http://localhost:{http_server.port}/cb"
    event = paid(outbox_repo, new_receiver(outbox_repo, url))
    async with running(sender_for(outbox_repo, allow_private_targets=False)):
        await eventually(lambda: status_of(outbox_repo, event.event_id) == OUTBOX_FAILED)
    [(_, error)] = attempts_of(outbox_repo, event.event_id)
    assert "localhost resolves to" in error and "allow_private_targets" in error
    assert http_server.requests == []


async def test_hosts_outside_allow_hosts_are_refused(outbox_repo, http_server):
    event = paid(outbox_repo, new_receiver(outbox_repo, http_server.url()))
    async with running(sender_for(outbox_repo, allow_hosts=("shop.example",))):
        await eventually(lambda: status_of(outbox_repo, event.event_id) == OUTBOX_FAILED)
    assert "allow_hosts" in attempts_of(outbox_repo, event.event_id)[0][1]
    assert http_server.requests == []


async def test_without_any_url_the_event_fails_at_once_and_the_default_url_is_used(
    outbox_repo, http_server
):
    lost = paid(outbox_repo, new_receiver(outbox_repo, None))
    async with running(sender_for(outbox_repo)):
        await eventually(lambda: status_of(outbox_repo, lost.event_id) == OUTBOX_FAILED)
    assert "no callback URL" in attempts_of(outbox_repo, lost.event_id)[0][1]
    sender = sender_for(outbox_repo, default_url=http_server.url("/default"))
    async with running(sender):
        await rpc(
            "callbacks.retry",
            {"all_failed": True},
            callbacks=CallbackService(outbox_repo, sender, WALLET),
        )
        await eventually(lambda: status_of(outbox_repo, lost.event_id) == OUTBOX_DELIVERED)
    assert [r.delivery for r in http_server.to("/default")] == [lost.event_id]


async def test_https_is_verified_against_the_host_name(outbox_repo, https_server, tls_files):
    # The guard connects to a checked IP address; TLS must still verify the name in the
    # URL: "localhost" matches the certificate, the bare address does not. The test CA
    # is trusted as [tls] ca_file makes it.
    outbound = Outbound.from_environment({}, ca_pem=tls_files.ca.read_text())
    by_name = paid(
        outbox_repo, new_receiver(outbox_repo, f"https://localhost:{https_server.port}/cb")
    )
    by_address = paid(outbox_repo, new_receiver(outbox_repo, https_server.url()))
    sender = sender_for(outbox_repo, backoff_initial=30.0, backoff_max=30.0)
    sender.outbound = outbound
    async with running(sender):
        await eventually(lambda: status_of(outbox_repo, by_name.event_id) == OUTBOX_DELIVERED)
        await eventually(lambda: len(attempts_of(outbox_repo, by_address.event_id)) == 1)
    [(status, error)] = attempts_of(outbox_repo, by_address.event_id)
    assert status is None and "certificate" in error.lower()
    assert [r.delivery for r in https_server.requests] == [by_name.event_id]


# -- the control methods ----------------------------------------------------------------


async def test_the_test_method_sends_a_signed_ping_and_reports_the_answer(outbox_repo, http_server):
    http_server.script("/bad", Reply(500, b"handler crashed"))
    sender = sender_for(outbox_repo)
    service = CallbackService(outbox_repo, sender, WALLET)
    async with running(sender):
        good = await rpc("callbacks.test", {"url": http_server.url("/good")}, callbacks=service)
        bad = await rpc("callbacks.test", {"url": http_server.url("/bad")}, callbacks=service)
        refused = await rpc("callbacks.test", {"url": "http://169.254.169.254/"}, callbacks=service)
        with pytest.raises(InvalidParams):
            await rpc("callbacks.test", {"url": "ftp://shop.example/"}, callbacks=service)
    assert good["ok"] is True and good["http_status"] == 200 and good["error"] is None
    [ping] = http_server.to("/good")
    assert ping.event == "ping" and ping.delivery == good["event_id"]
    assert json.loads(ping.body)["event"] == "ping" and ping.body.decode() == good["body"]
    assert verify_signature(SECRET.value, ping.body, ping.headers["dashpay-signature"])
    assert bad["ok"] is False and bad["http_status"] == 500
    assert bad["response_excerpt"] == "handler crashed"
    assert refused["ok"] is False and refused["error"].startswith("refused:")
    assert outbox_repo.list_callbacks() == []  # a ping is never stored


async def test_list_get_and_their_parameters(outbox_repo, http_server):
    http_server.script("/cb", Reply(500), Reply(200))
    receiver = new_receiver(outbox_repo, http_server.url())
    event = paid(outbox_repo, receiver)
    sender = sender_for(outbox_repo, backoff_initial=0.05)
    service = CallbackService(outbox_repo, sender, WALLET)
    async with running(sender):
        await eventually(lambda: status_of(outbox_repo, event.event_id) == OUTBOX_DELIVERED)
    listed = await rpc(
        "callbacks.list",
        {"status": "delivered", "receiver_id": receiver.receiver_id},
        callbacks=service,
    )
    assert [e["event_id"] for e in listed["events"]] == [event.event_id]
    assert listed["events"][0]["url"] == http_server.url() and listed["next_before"] is None
    shown = await rpc("callbacks.get", {"event_id": event.event_id}, callbacks=service)
    assert shown["payload"] == json.loads(event.payload)
    assert [a["http_status"] for a in shown["attempt_log"]] == [500, 200]
    assert shown["status"] == "delivered" and shown["attempts"] == 2
    for bad in ({"status": "lost"}, {"limit": 0}, {"receiver_id": -1}, {"nope": 1}):
        with pytest.raises(InvalidParams):
            await rpc("callbacks.list", bad, callbacks=service)
    with pytest.raises(NotFound):
        await rpc("callbacks.get", {"event_id": "evt_unknown"}, callbacks=service)
    for bad in ({}, {"event_id": "has space"}, {"event_id": 5}):
        with pytest.raises(InvalidParams):
            await rpc("callbacks.get", bad, callbacks=service)
    for bad in ({}, {"event_id": event.event_id, "all_failed": True}, {"all_failed": "yes"}):
        with pytest.raises(InvalidParams):
            await rpc("callbacks.retry", bad, callbacks=service)


async def test_the_generated_secret_is_made_once_and_config_wins(outbox_repo):
    first = await trio.to_thread.run_sync(resolve_secret, rules(), outbox_repo)
    second = await trio.to_thread.run_sync(resolve_secret, rules(), outbox_repo)
    assert first.value == second.value and len(first.value) >= 40
    assert "generated" in first.source
    configured = await trio.to_thread.run_sync(
        resolve_secret, rules(secret="configured-secret-123456"), outbox_repo
    )
    assert configured.value == "configured-secret-123456"
    service = CallbackService(
        outbox_repo, CallbackSender(outbox_repo, rules(), WALLET, first), WALLET
    )
    assert await rpc("callbacks.secret", {}, callbacks=service) == {
        "secret": first.value,
        "source": first.source,
    }


async def test_status_reports_the_backlog(outbox_repo, http_server):
    http_server.always("/cb", Reply(500))
    event = paid(outbox_repo, new_receiver(outbox_repo, http_server.url()))
    sender = sender_for(outbox_repo, backoff_initial=30.0, backoff_max=30.0)
    service = CallbackService(outbox_repo, sender, WALLET)
    async with running(sender):
        await eventually(lambda: len(attempts_of(outbox_repo, event.event_id)) == 1)
        status = await service.status_view()
    assert status["running"] is True and status["pending"] == 1 and status["retried"] == 1
    assert status["oldest_pending_age_seconds"] >= 0 and status["failed_total"] == 0


# -- outcomes carried by the engine's unit of work ---------------------------------------


@asynccontextmanager
async def engine_and_sender(repo: Repository, sender: CallbackSender):
    """The daemon's wiring: the engine hands its results to the sender, and carries the
    sender's deferred outcomes in its transactions."""
    engine = PaymentEngine(repo, accounting.Rules(), monitor_window_ms=60_000, tick_seconds=None)
    engine.on_events = sender.offer
    engine.carry = sender.ride
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        await nursery.start(sender.run)
        await eventually(lambda: sender.synced)
        yield engine
        nursery.cancel_scope.cancel()


async def pay_through(engine: PaymentEngine, receiver: Receiver, duffs: int) -> OutboxEvent:
    [result] = await engine.apply([ReceiverWork(receiver.receiver_id, (payment(receiver, duffs),))])
    [event] = result.events
    return event


async def test_a_delivered_outcome_rides_in_the_next_payments_transaction(outbox_repo, http_server):
    counting = CountingRepository(outbox_repo)
    sender = CallbackSender(counting, rules(), WALLET, SECRET, defer_outcomes=True)
    first, second = (new_receiver(outbox_repo, http_server.url(f"/c{n}")) for n in range(2))
    async with engine_and_sender(outbox_repo, sender) as engine:
        event = await pay_through(engine, first, first.amount_duffs)
        await eventually(lambda: len(http_server.to("/c0")) == 1)
        await trio.sleep(CARRY_AFTER_SECONDS)
        assert status_of(outbox_repo, event.event_id) == OUTBOX_PENDING  # not written alone
        later = await pay_through(engine, second, second.amount_duffs)
        # Committed with the second payment: by the engine's transaction, not the sender's.
        assert status_of(outbox_repo, event.event_id) == OUTBOX_DELIVERED
        assert attempts_of(outbox_repo, event.event_id) == [(200, None)]
        assert counting.calls["record_callback_attempts"] == 0
        # With no payment after it, the last outcome is written on its own in time.
        await eventually(lambda: len(http_server.to("/c1")) == 1)
        await eventually(
            lambda: status_of(outbox_repo, later.event_id) == OUTBOX_DELIVERED,
            timeout=WRITE_DEFERRED_AFTER_SECONDS + 2,
        )
        assert counting.calls["record_callback_attempts"] == 1


async def test_a_receivers_next_event_does_not_wait_for_the_deferred_outcome(
    outbox_repo, http_server
):
    sender = CallbackSender(outbox_repo, rules(), WALLET, SECRET, defer_outcomes=True)
    receiver = new_receiver(outbox_repo, http_server.url("/next"))
    async with engine_and_sender(outbox_repo, sender) as engine:
        partial_event = await pay_through(engine, receiver, receiver.amount_duffs // 2)
        await eventually(lambda: len(http_server.to("/next")) == 1)
        started = trio.current_time()
        paid_event = await pay_through(engine, receiver, receiver.amount_duffs // 2)
        await eventually(lambda: len(http_server.to("/next")) == 2)
        waited = trio.current_time() - started
    assert [r.delivery for r in http_server.to("/next")] == [
        partial_event.event_id,
        paid_event.event_id,
    ]
    assert status_of(outbox_repo, partial_event.event_id) == OUTBOX_DELIVERED
    assert waited < CARRY_AFTER_SECONDS  # the first outcome was written at once
