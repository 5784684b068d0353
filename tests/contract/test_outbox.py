"""Callback delivery state in the repository, proven on SQLite and MariaDB.

The sender's correctness rests on these units of work: only a receiver's oldest pending
event is ever handed out (per-receiver order), an attempt and its outcome commit
together, a manual retry keeps the event id, and a daemon only sees its own wallet's
events. Events enter the outbox through the real payment unit of work (``record_batch``)."""

from __future__ import annotations

import itertools
from functools import partial

import pytest

from dashpay.domain.errors import Conflict, InvalidParams, NotFound
from dashpay.domain.model import AttemptOutcome, NewEvent, NewReceiver, Receiver, ReceiverWork
from dashpay.domain.status import OUTBOX_DELIVERED, OUTBOX_FAILED, OUTBOX_PENDING
from dashpay.engine.record import record_batch
from dashpay.repository.base import Repository
from dashpay.repository.schema import MAX_ATTEMPT_ERROR_CHARS
from tests.contract.conftest import Store, fake_address

WALLET = "a1b2c3d4e5f60718"
OTHER_WALLET = "ffeeddccbbaa9988"
T0 = 1_700_000_000_000
_ids = itertools.count(1)


def create(repo: Repository, wallet: str = WALLET, url: str | None = None) -> Receiver:
    new = NewReceiver(
        wallet_id=wallet, chain=0, amount_duffs=100_000, created_at=T0, callback_url=url
    )
    receiver, _ = repo.create_receiver(new, fake_address(wallet, 0))
    return receiver


def enqueue(repo: Repository, receiver: Receiver, now: int, *names: str) -> list[str]:
    """Events written by the payment unit of work, as the engine writes them."""
    ids = [f"evt_{next(_ids):08d}" for _ in names]

    def decide(r, payments, changes):
        return None, [NewEvent(i, n, f'{{"event":"{n}"}}') for i, n in zip(ids, names, strict=True)]

    unit = partial(record_batch, items=[ReceiverWork(receiver.receiver_id)], now=now, decide=decide)
    repo.transaction(unit)
    return ids


def outcome(status: str, at: int, *, next_at: int | None = None, http: int | None = None,
            error: str | None = None, duration: int = 12) -> AttemptOutcome:  # fmt: skip
    return AttemptOutcome(
        attempted_at=at,
        duration_ms=duration,
        http_status=http,
        error=error,
        status=status,
        next_attempt_at=next_at,
    )


def due_ids(repo: Repository, now: int, limit: int = 100, wallet: str = WALLET) -> list[str]:
    return [c.event.event_id for c in repo.due_callbacks(wallet, now, limit)[0]]


def test_only_the_oldest_pending_event_of_each_receiver_is_due(repo: Repository) -> None:
    a, b = create(repo), create(repo)
    a1, a2 = enqueue(repo, a, T0, "receiver.partial", "receiver.paid")
    (b1,) = enqueue(repo, b, T0 + 1, "receiver.paid")
    (a3,) = enqueue(repo, a, T0 + 2, "receiver.settled")
    assert due_ids(repo, T0 + 10) == [a1, b1]
    repo.record_callback_attempt(a1, outcome(OUTBOX_DELIVERED, T0 + 10, http=200))
    assert due_ids(repo, T0 + 20) == [a2, b1]
    repo.record_callback_attempt(a2, outcome(OUTBOX_FAILED, T0 + 20, http=400, error="HTTP 400"))
    assert due_ids(repo, T0 + 30) == [b1, a3]  # a failed event no longer holds the line


def test_a_head_in_backoff_holds_back_the_later_events_of_its_receiver(repo: Repository) -> None:
    a, b = create(repo), create(repo)
    a1, a2 = enqueue(repo, a, T0, "receiver.partial", "receiver.paid")
    (b1,) = enqueue(repo, b, T0, "receiver.paid")
    repo.record_callback_attempt(
        a1, outcome(OUTBOX_PENDING, T0 + 5, next_at=T0 + 10_000, http=500, error="HTTP 500")
    )
    due, later = repo.due_callbacks(WALLET, T0 + 100, 100)
    assert [c.event.event_id for c in due] == [b1]
    assert later == T0 + 10_000
    assert due_ids(repo, T0 + 10_000) == [b1, a1]  # earliest due first
    assert a2 not in due_ids(repo, T0 + 10**9)


def test_due_events_come_earliest_first_and_the_limit_is_kept(repo: Repository) -> None:
    receivers = [create(repo) for _ in range(4)]
    ids = [enqueue(repo, r, T0 + 10 - i, "receiver.paid")[0] for i, r in enumerate(receivers)]
    assert due_ids(repo, T0 + 100) == list(reversed(ids))
    assert due_ids(repo, T0 + 100, limit=2) == [ids[3], ids[2]]
    assert due_ids(repo, T0 + 8) == [ids[3], ids[2]]  # the others are not due yet
    with pytest.raises(InvalidParams):
        repo.due_callbacks(WALLET, T0, 0)


def test_nothing_pending_means_nothing_due_and_no_next_time(repo: Repository) -> None:
    create(repo)
    assert repo.due_callbacks(WALLET, T0, 10) == ([], None)


def test_a_wallet_never_sees_another_wallets_events(repo: Repository) -> None:
    mine, theirs = create(repo), create(repo, OTHER_WALLET)
    (m,) = enqueue(repo, mine, T0, "receiver.paid")
    (t,) = enqueue(repo, theirs, T0, "receiver.paid")
    assert due_ids(repo, T0) == [m]
    assert due_ids(repo, T0, wallet=OTHER_WALLET) == [t]
    with pytest.raises(NotFound):
        repo.retry_callback(t, WALLET, T0)
    assert [c.event.event_id for c in repo.list_callbacks(wallet_id=WALLET)] == [m]
    assert repo.callback_backlog(WALLET).pending == 1


def test_the_record_carries_the_receivers_url_and_wallet(repo: Repository) -> None:
    receiver = create(repo, url="https://shop.example/cb?order=1")
    (event_id,) = enqueue(repo, receiver, T0, "receiver.paid")
    (record,), _ = repo.due_callbacks(WALLET, T0, 1)
    assert record.callback_url == "https://shop.example/cb?order=1"
    assert record.wallet_id == WALLET and record.first_attempt_at is None
    assert record.event.event_id == event_id and record.event.payload == '{"event":"receiver.paid"}'
    assert record.event == repo.list_outbox(receiver_id=receiver.receiver_id)[0]


def test_an_attempt_and_its_outcome_are_written_together(repo: Repository) -> None:
    receiver = create(repo)
    (event_id,) = enqueue(repo, receiver, T0, "receiver.paid")
    after = repo.record_callback_attempt(
        event_id, outcome(OUTBOX_PENDING, T0 + 5, next_at=T0 + 10_005, error="timed out")
    )
    assert (after.status, after.attempts, after.next_attempt_at) == (OUTBOX_PENDING, 1, T0 + 10_005)
    assert after.last_error == "timed out" and after.delivered_at is None
    after = repo.record_callback_attempt(
        event_id, outcome(OUTBOX_DELIVERED, T0 + 10_010, http=204, duration=40)
    )
    assert (after.status, after.attempts, after.last_error) == (OUTBOX_DELIVERED, 2, None)
    assert after.delivered_at == T0 + 10_050
    record, attempts = repo.get_callback(event_id)
    assert record.first_attempt_at == T0 + 5  # the first attempt starts the horizon
    assert [(a.attempted_at, a.http_status, a.error, a.duration_ms) for a in attempts] == [
        (T0 + 5, None, "timed out", 12),
        (T0 + 10_010, 204, None, 40),
    ]
    assert repo.due_callbacks(WALLET, T0 + 10**9, 10) == ([], None)


def test_an_attempt_for_an_event_that_is_not_pending_changes_nothing(
    repo: Repository, store: Store
) -> None:
    receiver = create(repo)
    (event_id,) = enqueue(repo, receiver, T0, "receiver.paid")
    repo.record_callback_attempt(event_id, outcome(OUTBOX_DELIVERED, T0, http=200))
    with pytest.raises(Conflict, match="delivered, not pending"):
        repo.record_callback_attempt(event_id, outcome(OUTBOX_FAILED, T0 + 1, http=410))
    with pytest.raises(NotFound):
        repo.record_callback_attempt("evt_missing", outcome(OUTBOX_DELIVERED, T0, http=200))
    assert store.execute("SELECT COUNT(*) FROM callback_attempts")[0][0] == 1
    assert repo.get_callback(event_id)[0].event.status == OUTBOX_DELIVERED


def test_attempts_that_finished_together_are_recorded_in_one_batch(
    repo: Repository, store: Store
) -> None:
    a, b, c = create(repo), create(repo), create(repo)
    (a1,) = enqueue(repo, a, T0, "receiver.paid")
    (b1,) = enqueue(repo, b, T0, "receiver.paid")
    (c1,) = enqueue(repo, c, T0, "receiver.paid")
    problems = repo.record_callback_attempts(
        [
            (a1, outcome(OUTBOX_DELIVERED, T0 + 5, http=200, duration=7)),
            (b1, outcome(OUTBOX_PENDING, T0 + 5, next_at=T0 + 10_005, http=503, error="HTTP 503")),
            (c1, outcome(OUTBOX_FAILED, T0 + 6, http=410, error="HTTP 410")),
        ]
    )
    assert problems == [None, None, None]
    after = {e.event_id: e for e in repo.list_outbox(limit=10)}
    assert (after[a1].status, after[a1].attempts, after[a1].delivered_at) == (
        OUTBOX_DELIVERED, 1, T0 + 12
    )  # fmt: skip
    assert (after[b1].status, after[b1].next_attempt_at, after[b1].last_error) == (
        OUTBOX_PENDING, T0 + 10_005, "HTTP 503"
    )  # fmt: skip
    assert (after[c1].status, after[c1].last_error) == (OUTBOX_FAILED, "HTTP 410")
    assert repo.get_callback(b1)[0].first_attempt_at == T0 + 5
    assert [(x.http_status, x.duration_ms) for x in repo.get_callback(a1)[1]] == [(200, 7)]
    assert store.execute("SELECT COUNT(*) FROM callback_attempts")[0][0] == 3
    assert due_ids(repo, T0 + 10**9) == [b1]


def test_a_batch_skips_only_the_items_it_cannot_record(repo: Repository, store: Store) -> None:
    receiver, other = create(repo), create(repo)
    (done,) = enqueue(repo, receiver, T0, "receiver.paid")
    (fresh,) = enqueue(repo, other, T0, "receiver.paid")
    repo.record_callback_attempt(done, outcome(OUTBOX_DELIVERED, T0, http=200))
    problems = repo.record_callback_attempts(
        [
            (done, outcome(OUTBOX_FAILED, T0 + 1, http=410)),
            ("evt_missing", outcome(OUTBOX_DELIVERED, T0 + 1, http=200)),
            (fresh, outcome(OUTBOX_DELIVERED, T0 + 2, http=204)),
        ]
    )
    assert isinstance(problems[0], Conflict) and "delivered, not pending" in str(problems[0])
    assert isinstance(problems[1], NotFound) and problems[2] is None
    assert repo.get_callback(done)[0].event.status == OUTBOX_DELIVERED
    assert repo.get_callback(fresh)[0].event.status == OUTBOX_DELIVERED
    assert store.execute("SELECT COUNT(*) FROM callback_attempts")[0][0] == 2
    assert repo.record_callback_attempts([]) == []


def test_an_event_listed_twice_in_a_batch_gets_both_attempts_in_order(
    repo: Repository, store: Store
) -> None:
    receiver, other = create(repo), create(repo)
    (twice,) = enqueue(repo, receiver, T0, "receiver.paid")
    (retried,) = enqueue(repo, other, T0, "receiver.paid")
    problems = repo.record_callback_attempts(
        [
            (twice, outcome(OUTBOX_PENDING, T0 + 5, next_at=T0 + 10_005, http=503, error="503")),
            (retried, outcome(OUTBOX_PENDING, T0 + 6, next_at=T0 + 9_000, error="timed out")),
            (twice, outcome(OUTBOX_DELIVERED, T0 + 7, http=200, duration=3)),
            (retried, outcome(OUTBOX_PENDING, T0 + 8, next_at=T0 + 20_000, http=502, error="502")),
            (twice, outcome(OUTBOX_FAILED, T0 + 9, http=410)),  # sees the delivery before it
        ]
    )
    assert problems[:4] == [None, None, None, None]
    assert isinstance(problems[4], Conflict) and "delivered, not pending" in str(problems[4])
    record, attempts = repo.get_callback(twice)
    event = record.event
    assert (event.status, event.attempts, event.delivered_at, event.last_error) == (
        OUTBOX_DELIVERED, 2, T0 + 10, None
    )  # fmt: skip
    assert event.next_attempt_at == T0 + 10_005  # a delivery keeps the last retry time
    assert record.first_attempt_at == T0 + 5
    assert [(a.attempted_at, a.http_status) for a in attempts] == [(T0 + 5, 503), (T0 + 7, 200)]
    record, attempts = repo.get_callback(retried)
    event = record.event
    assert (event.status, event.attempts, event.next_attempt_at, event.last_error) == (
        OUTBOX_PENDING, 2, T0 + 20_000, "502"
    )  # fmt: skip
    assert record.first_attempt_at == T0 + 6 and event.delivered_at is None
    assert [a.error for a in attempts] == ["timed out", "502"]
    assert store.execute("SELECT COUNT(*) FROM callback_attempts")[0][0] == 4


def test_a_batch_larger_than_one_statement_records_every_attempt(
    repo: Repository, store: Store
) -> None:
    # More events than one IN list (512) and one multi-row UPDATE (256) hold.
    receiver, untouched = create(repo), create(repo)
    ids = enqueue(repo, receiver, T0, *["receiver.paid"] * 600)
    (kept,) = enqueue(repo, untouched, T0, "receiver.paid")
    statuses = (OUTBOX_DELIVERED, OUTBOX_PENDING, OUTBOX_FAILED)
    batch = [
        (event_id, outcome(statuses[n % 3], T0 + n, next_at=T0 + 50_000 + n, http=200 + n % 3))
        for n, event_id in enumerate(ids)
    ]
    assert repo.record_callback_attempts(batch) == [None] * 600
    after = {e.event_id: e for e in repo.list_outbox(receiver_id=receiver.receiver_id, limit=1000)}
    for n, event_id in enumerate(ids):
        event = after[event_id]
        assert (event.status, event.attempts) == (statuses[n % 3], 1), n
        expected_next = T0 + 50_000 + n if statuses[n % 3] == OUTBOX_PENDING else T0
        assert event.next_attempt_at == expected_next, n
        expected_delivered = T0 + n + 12 if statuses[n % 3] == OUTBOX_DELIVERED else None
        assert event.delivered_at == expected_delivered, n
    assert store.execute("SELECT COUNT(*) FROM callback_attempts")[0][0] == 600
    untouched_event = repo.get_callback(kept)[0]
    assert (untouched_event.event.attempts, untouched_event.first_attempt_at) == (0, None)


def test_a_batch_with_a_malformed_outcome_writes_nothing(repo: Repository, store: Store) -> None:
    receiver = create(repo)
    (event_id,) = enqueue(repo, receiver, T0, "receiver.paid")
    with pytest.raises(ValueError, match="next_attempt_at"):
        repo.record_callback_attempts(
            [
                (event_id, outcome(OUTBOX_DELIVERED, T0, http=200)),
                (event_id, outcome(OUTBOX_PENDING, T0, http=500)),
            ]
        )
    assert store.execute("SELECT COUNT(*) FROM callback_attempts")[0][0] == 0
    assert repo.get_callback(event_id)[0].event.status == OUTBOX_PENDING


def test_pending_receivers_are_those_with_any_pending_event_of_the_wallet(
    repo: Repository,
) -> None:
    a, b, c = create(repo), create(repo), create(repo)
    stranger = create(repo, OTHER_WALLET)
    (a1,) = enqueue(repo, a, T0, "receiver.paid")
    (b1, _) = enqueue(repo, b, T0, "receiver.partial", "receiver.paid")
    enqueue(repo, stranger, T0, "receiver.paid")
    repo.record_callback_attempt(a1, outcome(OUTBOX_DELIVERED, T0, http=200))
    repo.record_callback_attempt(b1, outcome(OUTBOX_PENDING, T0, next_at=T0 + 10**6, http=500))
    assert repo.pending_callback_receivers(WALLET) == {b.receiver_id}
    assert repo.pending_callback_receivers(OTHER_WALLET) == {stranger.receiver_id}
    ids = [a.receiver_id, b.receiver_id, c.receiver_id, stranger.receiver_id]
    assert repo.pending_callback_receivers(WALLET, ids) == {b.receiver_id}
    assert repo.pending_callback_receivers(WALLET, [a.receiver_id]) == set()
    assert repo.pending_callback_receivers(WALLET, []) == set()


def test_a_malformed_outcome_is_refused_before_anything_is_written(
    repo: Repository, store: Store
) -> None:
    receiver = create(repo)
    (event_id,) = enqueue(repo, receiver, T0, "receiver.paid")
    with pytest.raises(ValueError, match="next_attempt_at"):
        repo.record_callback_attempt(event_id, outcome(OUTBOX_PENDING, T0, http=500))
    with pytest.raises(ValueError, match="http_status"):
        repo.record_callback_attempt(event_id, outcome(OUTBOX_DELIVERED, T0, http=99))
    assert store.execute("SELECT COUNT(*) FROM callback_attempts")[0][0] == 0


def test_a_long_error_is_cut_to_the_limit(repo: Repository) -> None:
    receiver = create(repo)
    (event_id,) = enqueue(repo, receiver, T0, "receiver.paid")
    after = repo.record_callback_attempt(
        event_id, outcome(OUTBOX_FAILED, T0, http=400, error="x" * 100_000)
    )
    assert len(after.last_error) == MAX_ATTEMPT_ERROR_CHARS
    assert len(repo.get_callback(event_id)[1][0].error) == MAX_ATTEMPT_ERROR_CHARS


def test_retry_requeues_a_failed_event_with_the_same_id_and_a_fresh_horizon(
    repo: Repository,
) -> None:
    receiver = create(repo)
    first, second = enqueue(repo, receiver, T0, "receiver.paid", "receiver.settled")
    repo.record_callback_attempt(first, outcome(OUTBOX_FAILED, T0 + 1, http=404, error="HTTP 404"))
    repo.record_callback_attempt(second, outcome(OUTBOX_DELIVERED, T0 + 2, http=200))
    again = repo.retry_callback(first, WALLET, T0 + 100)
    assert (again.event_id, again.status, again.next_attempt_at) == (
        first,
        OUTBOX_PENDING,
        T0 + 100,
    )
    assert again.attempts == 1  # the count of attempts is history, kept
    record, attempts = repo.get_callback(first)
    assert record.first_attempt_at is None and len(attempts) == 1
    assert due_ids(repo, T0 + 100) == [first]


def test_retry_redelivers_a_delivered_event_and_hurries_a_pending_one(repo: Repository) -> None:
    receiver = create(repo)
    delivered, waiting = enqueue(repo, receiver, T0, "receiver.paid", "receiver.settled")
    repo.record_callback_attempt(delivered, outcome(OUTBOX_DELIVERED, T0, http=200))
    repo.record_callback_attempt(
        waiting, outcome(OUTBOX_PENDING, T0 + 1, next_at=T0 + 3_600_000, http=503)
    )
    again = repo.retry_callback(delivered, WALLET, T0 + 50)
    assert again.status == OUTBOX_PENDING and again.delivered_at is None
    hurried = repo.retry_callback(waiting, WALLET, T0 + 60)
    assert hurried.next_attempt_at == T0 + 60
    assert due_ids(repo, T0 + 60) == [delivered]  # the older one first: order is kept
    with pytest.raises(NotFound):
        repo.retry_callback("evt_missing", WALLET, T0)


def test_retry_all_failed_counts_and_stays_in_the_wallet_and_receiver(repo: Repository) -> None:
    a, b, other = create(repo), create(repo), create(repo, OTHER_WALLET)
    ids = enqueue(repo, a, T0, "receiver.partial", "receiver.paid")
    ids += enqueue(repo, b, T0, "receiver.paid")
    ids += enqueue(repo, other, T0, "receiver.paid")
    for event_id in ids:
        repo.record_callback_attempt(event_id, outcome(OUTBOX_FAILED, T0, http=400))
    assert repo.retry_failed_callbacks(WALLET, T0 + 1, receiver_id=b.receiver_id) == 1
    assert repo.retry_failed_callbacks(WALLET, T0 + 2) == 2
    assert repo.retry_failed_callbacks(WALLET, T0 + 3) == 0
    assert repo.callback_backlog(OTHER_WALLET).failed == 1
    assert repo.callback_backlog(WALLET).pending == 3


def test_list_is_newest_first_filters_and_pages(repo: Repository) -> None:
    a, b = create(repo), create(repo)
    a1, a2 = enqueue(repo, a, T0, "receiver.partial", "receiver.paid")
    (b1,) = enqueue(repo, b, T0 + 1, "receiver.paid")
    repo.record_callback_attempt(a1, outcome(OUTBOX_DELIVERED, T0 + 2, http=200))
    listed = repo.list_callbacks()
    assert [c.event.event_id for c in listed] == [b1, a2, a1]
    assert [c.event.event_id for c in repo.list_callbacks(receiver_id=a.receiver_id)] == [a2, a1]
    assert [c.event.event_id for c in repo.list_callbacks(status=OUTBOX_PENDING)] == [b1, a2]
    page = repo.list_callbacks(limit=2)
    rest = repo.list_callbacks(before_seq=page[-1].seq)
    assert [c.event.event_id for c in page + rest] == [b1, a2, a1]
    with pytest.raises(InvalidParams, match="unknown callback status"):
        repo.list_callbacks(status="lost")
    with pytest.raises(InvalidParams, match="limit"):
        repo.list_callbacks(limit=0)


def test_backlog_counts_pending_and_failed_with_the_oldest_pending_time(repo: Repository) -> None:
    receiver = create(repo)
    assert repo.callback_backlog(WALLET).pending == 0
    first, second, third = enqueue(repo, receiver, T0, "a.one", "a.two", "a.three")
    enqueue(repo, create(repo), T0 + 500, "b.one")
    repo.record_callback_attempt(first, outcome(OUTBOX_DELIVERED, T0 + 1, http=200))
    repo.record_callback_attempt(second, outcome(OUTBOX_FAILED, T0 + 2, http=400))
    backlog = repo.callback_backlog(WALLET)
    assert (backlog.pending, backlog.failed) == (2, 1)
    assert backlog.oldest_pending_created_at == T0


def test_get_returns_none_for_an_unknown_event(repo: Repository) -> None:
    assert repo.get_callback("evt_nope") is None
