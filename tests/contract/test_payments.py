"""The payment unit of work (``engine.record.record_batch`` in a repository
transaction) and the outbox listing, proven on SQLite and MariaDB with the same tests.

``record_batch`` is where money is counted, so these tests pin every merge rule of
DESIGN.md section 4 and the transactional outbox of section 6: payment rows, the
receiver update and the callback rows commit together or not at all. The ``decide``
used here is deliberately trivial (sum the non-dropped payments, one event per new
payment); the real rules are tested with the services."""

from __future__ import annotations

import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import partial

import pytest

from dashpay.domain.errors import Conflict, InvalidParams, NotFound
from dashpay.domain.model import (
    NewEvent,
    NewReceiver,
    OutboxEvent,
    Payment,
    PaymentChange,
    PaymentObservation,
    Receiver,
    ReceiverUpdate,
    ReceiverWork,
)
from dashpay.domain.status import OUTBOX_DELIVERED, OUTBOX_PENDING, PAID, PARTIAL, PENDING
from dashpay.engine.record import record_batch
from dashpay.repository.base import Repository
from tests.contract.conftest import Store, fake_address

WALLET = "a1b2c3d4e5f60718"
CHAIN = 0
T0 = 1_700_000_000_000  # a fixed "now" in epoch ms
T1 = T0 + 1_000
T2 = T0 + 2_000
AMOUNT = 100_000
derive = fake_address(WALLET, CHAIN)
TX_A = "a" * 64
TX_B = "b" * 64
TX_C = "c" * 64


def create(repo: Repository, amount: int = AMOUNT) -> Receiver:
    new = NewReceiver(wallet_id=WALLET, chain=CHAIN, amount_duffs=amount, created_at=T0)
    receiver, created = repo.create_receiver(new, derive)
    assert created
    return receiver


def seen(
    receiver: Receiver,
    txid: str = TX_A,
    amount: int = AMOUNT,
    *,
    locked: bool = False,
    height: int | None = None,
    confirmations: int | None = None,
) -> PaymentObservation:
    return PaymentObservation(txid, receiver.address, amount, locked, height, confirmations)


@dataclass
class SummingDecide:
    """received = sum of non-dropped payments; partial/paid by amount; one event per
    new payment. Records every call (thread-safe) so tests can see what it was shown."""

    now: int
    calls: list[tuple[Receiver, list[Payment], list[PaymentChange]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(
        self, receiver: Receiver, payments: list[Payment], changes: list[PaymentChange]
    ) -> tuple[ReceiverUpdate | None, list[NewEvent]]:
        with self.lock:
            self.calls.append((receiver, payments, changes))
            call = len(self.calls)
        received = sum(p.amount_duffs for p in payments if not p.dropped)
        if received >= receiver.amount_duffs:
            status = PAID
        else:
            status = PARTIAL if received else PENDING
        update = ReceiverUpdate(
            received_duffs=received,
            status=status,
            overpaid=received > receiver.amount_duffs,
            late=False,
            paid_at=self.now if status == PAID else None,
            settled_at=None,
            closed_at=None,
            updated_at=self.now,
        )
        events = [
            NewEvent(
                f"evt-{receiver.receiver_id}-{c.payment.txid[:6]}-{self.now}-{call}",
                "receiver.partial" if status == PARTIAL else "receiver.paid",
                json.dumps({"txid": c.payment.txid, "received_duffs": received}),
            )
            for c in changes
            if c.kind == "new"
        ]
        return update, events


def update_receivers(repo: Repository, work: list[ReceiverWork], now: int, decide):
    """The engine's unit of work: ``record_batch`` in one transaction of ``repo``."""
    return repo.transaction(partial(record_batch, items=work, now=now, decide=decide))


def run(repo: Repository, now: int, *work: ReceiverWork):
    decide = SummingDecide(now)
    return update_receivers(repo, list(work), now, decide), decide


def observe(repo: Repository, receiver: Receiver, now: int, *observations: PaymentObservation):
    """One item, one result."""
    results, _ = run(repo, now, ReceiverWork(receiver.receiver_id, observations))
    assert len(results) == 1
    return results[0]


def drop(repo: Repository, receiver: Receiver, now: int, *txids: str):
    results, _ = run(repo, now, ReceiverWork(receiver.receiver_id, dropped_txids=txids))
    return results[0]


def kinds(result) -> list[str]:
    return [change.kind for change in result.changes]


def payment_counts(store: Store) -> tuple[int, int]:
    """(payment rows, outbox rows) in the whole database."""
    payments = store.execute("SELECT COUNT(*) FROM payments")[0][0]
    events = store.execute("SELECT COUNT(*) FROM callback_outbox")[0][0]
    return int(payments), int(events)


# -- recording payments ----------------------------------------------------------------


def test_a_first_observation_inserts_a_new_payment(repo: Repository) -> None:
    receiver = create(repo)
    result = observe(repo, receiver, T1, seen(receiver, amount=40_000, height=None))
    payment = result.payments[0]
    assert replace(payment, payment_id=0) == Payment(
        payment_id=0,
        receiver_id=receiver.receiver_id,
        txid=TX_A,
        address=receiver.address,
        amount_duffs=40_000,
        instant_locked=False,
        block_height=None,
        confirmations=0,
        dropped=False,
        first_seen_at=T1,
        updated_at=T1,
    )
    assert result.changes == [PaymentChange(payment, "new")]
    assert repo.list_payments(receiver.receiver_id) == [payment]
    assert (result.receiver.received_duffs, result.receiver.status) == (40_000, PARTIAL)


def test_the_same_observation_twice_is_one_row_reported_unchanged(repo: Repository) -> None:
    receiver = create(repo)
    first = observe(repo, receiver, T1, seen(receiver, locked=True))
    again = observe(repo, receiver, T2, seen(receiver, locked=True))
    assert kinds(again) == ["unchanged"]
    assert again.changes[0].payment == first.payments[0]  # updated_at not bumped
    assert repo.list_payments(receiver.receiver_id) == first.payments
    assert again.events == []  # the trivial decide only announces new payments
    assert again.receiver.received_duffs == AMOUNT


def test_one_observation_repeated_in_one_item_is_counted_once(repo: Repository) -> None:
    receiver = create(repo)
    result = observe(repo, receiver, T1, seen(receiver), seen(receiver))
    assert kinds(result) == ["new", "unchanged"]
    assert len(result.payments) == 1
    assert result.receiver.received_duffs == AMOUNT


def test_a_later_instant_lock_upgrades_the_payment_and_is_never_lost(repo: Repository) -> None:
    receiver = create(repo)
    observe(repo, receiver, T1, seen(receiver, locked=False))
    locked = observe(repo, receiver, T2, seen(receiver, locked=True))
    assert kinds(locked) == ["updated"]
    assert locked.payments[0].instant_locked is True
    assert locked.payments[0].updated_at == T2
    # The REST API caches txlock:false until the next block: that must not unlock it.
    stale = observe(repo, receiver, T2 + 1, seen(receiver, locked=False))
    assert kinds(stale) == ["unchanged"]
    assert repo.list_payments(receiver.receiver_id)[0].instant_locked is True


def test_confirmations_only_go_up(repo: Repository) -> None:
    receiver = create(repo)
    observe(repo, receiver, T1, seen(receiver, height=2_000_000, confirmations=3))
    lower = observe(repo, receiver, T2, seen(receiver, height=2_000_000, confirmations=1))
    unknown = observe(repo, receiver, T2, seen(receiver, height=2_000_000, confirmations=None))
    assert kinds(lower) == kinds(unknown) == ["unchanged"]
    assert repo.list_payments(receiver.receiver_id)[0].confirmations == 3
    higher = observe(repo, receiver, T2, seen(receiver, height=2_000_000, confirmations=6))
    assert kinds(higher) == ["updated"]
    assert higher.payments[0].confirmations == 6


def test_a_mempool_observation_keeps_the_stored_block_height(repo: Repository) -> None:
    receiver = create(repo)
    observe(repo, receiver, T1, seen(receiver, height=2_000_000, confirmations=2))
    result = observe(repo, receiver, T2, seen(receiver, height=None, confirmations=None))
    assert kinds(result) == ["unchanged"]
    stored = repo.list_payments(receiver.receiver_id)[0]
    assert (stored.block_height, stored.confirmations) == (2_000_000, 2)


def test_being_mined_sets_the_height_and_keeps_confirmations_when_unknown(
    repo: Repository,
) -> None:
    receiver = create(repo)
    observe(repo, receiver, T1, seen(receiver))
    mined = observe(repo, receiver, T2, seen(receiver, height=2_000_000, confirmations=None))
    assert kinds(mined) == ["updated"]
    assert (mined.payments[0].block_height, mined.payments[0].confirmations) == (2_000_000, 0)


def test_a_new_block_height_after_a_reorg_is_taken_with_its_confirmations(
    repo: Repository,
) -> None:
    receiver = create(repo)
    observe(repo, receiver, T1, seen(receiver, height=2_000_000, confirmations=5))
    moved = observe(repo, receiver, T2, seen(receiver, height=2_000_003, confirmations=1))
    assert kinds(moved) == ["updated"]
    stored = repo.list_payments(receiver.receiver_id)[0]
    assert (stored.block_height, stored.confirmations) == (2_000_003, 1)


def test_a_reorg_without_a_confirmation_count_resets_confirmations(repo: Repository) -> None:
    receiver = create(repo)
    observe(repo, receiver, T1, seen(receiver, height=2_000_000, confirmations=5))
    observe(repo, receiver, T2, seen(receiver, height=2_000_001, confirmations=None))
    stored = repo.list_payments(receiver.receiver_id)[0]
    assert (stored.block_height, stored.confirmations) == (2_000_001, 0)


def test_a_different_amount_for_a_known_payment_keeps_the_stored_one_and_warns(
    repo: Repository, caplog: pytest.LogCaptureFixture
) -> None:
    receiver = create(repo)
    observe(repo, receiver, T1, seen(receiver, amount=40_000))
    with caplog.at_level(logging.WARNING, logger="dashpay.repository"):
        result = observe(repo, receiver, T2, seen(receiver, amount=99_999))
    assert kinds(result) == ["unchanged"]
    assert repo.list_payments(receiver.receiver_id)[0].amount_duffs == 40_000
    assert result.receiver.received_duffs == 40_000
    assert any(
        "amount differs" in r.getMessage() and TX_A in r.getMessage() for r in caplog.records
    )


def test_payments_reach_decide_oldest_first_with_changes_in_the_order_applied(
    repo: Repository,
) -> None:
    receiver = create(repo)
    observe(repo, receiver, T1, seen(receiver, TX_B, 10))
    result = observe(
        repo, receiver, T2, seen(receiver, TX_C, 20), seen(receiver, TX_B, 10, locked=True)
    )
    assert [p.txid for p in result.payments] == [TX_B, TX_C]
    assert [(c.payment.txid, c.kind) for c in result.changes] == [(TX_C, "new"), (TX_B, "updated")]
    assert result.payments == repo.list_payments(receiver.receiver_id)
    assert result.receiver.received_duffs == 30


# -- drops -----------------------------------------------------------------------------


def test_a_dropped_payment_stops_counting_and_is_restored_when_seen_again(
    repo: Repository,
) -> None:
    receiver = create(repo)
    observe(repo, receiver, T1, seen(receiver, TX_A, 60_000), seen(receiver, TX_B, 40_000))
    dropped = drop(repo, receiver, T2, TX_B)
    assert [(c.payment.txid, c.kind, c.payment.dropped) for c in dropped.changes] == [
        (TX_B, "dropped", True)
    ]
    assert dropped.changes[0].payment.updated_at == T2
    assert (dropped.receiver.received_duffs, dropped.receiver.status) == (60_000, PARTIAL)
    restored = observe(repo, receiver, T2 + 1, seen(receiver, TX_B, 40_000, locked=True))
    assert kinds(restored) == ["restored"]
    payment = restored.changes[0].payment
    assert (payment.dropped, payment.instant_locked, payment.updated_at) == (False, True, T2 + 1)
    assert (restored.receiver.received_duffs, restored.receiver.status) == (AMOUNT, PAID)


def test_dropping_an_unknown_or_already_dropped_txid_changes_nothing(repo: Repository) -> None:
    receiver = create(repo)
    observe(repo, receiver, T1, seen(receiver))
    drop(repo, receiver, T2, TX_A)
    before = repo.list_payments(receiver.receiver_id)
    result = drop(repo, receiver, T2 + 1, TX_A, TX_C)
    assert result.changes == []
    assert repo.list_payments(receiver.receiver_id) == before  # updated_at not bumped


def test_an_observation_and_a_drop_in_one_item_apply_in_that_order(repo: Repository) -> None:
    receiver = create(repo)
    results, _ = run(
        repo, T1, ReceiverWork(receiver.receiver_id, (seen(receiver),), dropped_txids=(TX_A,))
    )
    assert kinds(results[0]) == ["new", "dropped"]
    assert results[0].payments[0].dropped is True
    assert results[0].receiver.received_duffs == 0


# -- the transactional outbox ----------------------------------------------------------


def test_the_update_and_the_events_of_decide_are_persisted(repo: Repository) -> None:
    receiver = create(repo)
    result = observe(repo, receiver, T1, seen(receiver, TX_A, 30_000), seen(receiver, TX_B, 70_000))
    stored = repo.get_receiver(receiver.receiver_id)
    assert stored == result.receiver
    assert stored == replace(
        receiver, received_duffs=AMOUNT, status=PAID, paid_at=T1, updated_at=T1
    )
    assert len(result.events) == 2
    assert repo.list_outbox(receiver_id=receiver.receiver_id) == result.events
    first = result.events[0]
    assert first == OutboxEvent(
        event_id=first.event_id,
        receiver_id=receiver.receiver_id,
        event="receiver.paid",
        payload=json.dumps({"txid": TX_A, "received_duffs": AMOUNT}),
        status=OUTBOX_PENDING,
        attempts=0,
        next_attempt_at=T1,
        created_at=T1,
        delivered_at=None,
        last_error=None,
    )


def test_no_update_from_decide_leaves_the_receiver_row_alone(repo: Repository) -> None:
    receiver = create(repo)

    def only_an_event(r: Receiver, payments: list[Payment], changes: list[PaymentChange]):
        return None, [NewEvent("evt-only", "receiver.partial", "{}")]

    results = update_receivers(
        repo, [ReceiverWork(receiver.receiver_id, (seen(receiver),))], T1, only_an_event
    )
    assert results[0].receiver == receiver == repo.get_receiver(receiver.receiver_id)
    assert len(repo.list_payments(receiver.receiver_id)) == 1
    assert [e.event_id for e in repo.list_outbox()] == ["evt-only"]


def test_when_decide_raises_nothing_of_the_batch_is_persisted(
    store: Store, repo: Repository
) -> None:
    first, second = create(repo), create(repo)
    observe(repo, first, T1, seen(first, TX_A, 10))
    before = (repo.get_receiver(first.receiver_id), repo.list_payments(first.receiver_id))
    counts = payment_counts(store)
    calls: list[int] = []

    def fails_on_the_second(r: Receiver, payments: list[Payment], changes: list[PaymentChange]):
        calls.append(r.receiver_id)
        if r.receiver_id == second.receiver_id:
            raise RuntimeError("rules exploded")
        return SummingDecide(T2)(r, payments, changes)

    work = [
        ReceiverWork(first.receiver_id, (seen(first, TX_A, 10, locked=True), seen(first, TX_B))),
        ReceiverWork(second.receiver_id, (seen(second, TX_C),)),
    ]
    with pytest.raises(RuntimeError, match="rules exploded"):
        update_receivers(repo, work, T2, fails_on_the_second)
    assert calls[-2:] == [first.receiver_id, second.receiver_id]  # the first item did run
    assert payment_counts(store) == counts
    assert (repo.get_receiver(first.receiver_id), repo.list_payments(first.receiver_id)) == before
    assert repo.get_receiver(second.receiver_id) == second


def test_a_decide_answer_that_would_corrupt_the_row_is_refused_and_rolled_back(
    store: Store, repo: Repository
) -> None:
    receiver = create(repo)

    def bad_status(r: Receiver, payments: list[Payment], changes: list[PaymentChange]):
        update, events = SummingDecide(T1)(r, payments, changes)
        return replace(update, status="refunded"), events

    with pytest.raises(ValueError, match="unknown status 'refunded' for receiver"):
        update_receivers(
            repo, [ReceiverWork(receiver.receiver_id, (seen(receiver),))], T1, bad_status
        )
    assert payment_counts(store) == (0, 0)
    assert repo.get_receiver(receiver.receiver_id) == receiver


def test_a_duplicate_event_id_is_a_conflict_and_rolls_back(store: Store, repo: Repository) -> None:
    receiver = create(repo)

    def same_id_twice(r: Receiver, payments: list[Payment], changes: list[PaymentChange]):
        return None, [NewEvent("evt-1", "receiver.partial", "{}")] * 2

    with pytest.raises(Conflict, match="evt-1 already exists"):
        update_receivers(
            repo, [ReceiverWork(receiver.receiver_id, (seen(receiver),))], T1, same_id_twice
        )
    assert payment_counts(store) == (0, 0)


def test_an_event_id_stored_earlier_is_a_conflict_and_rolls_back_the_batch(
    store: Store, repo: Repository
) -> None:
    first, second, third = create(repo), create(repo), create(repo)

    def event_named(name: str):
        def decide(r: Receiver, payments: list[Payment], changes: list[PaymentChange]):
            return None, [NewEvent(f"{name}-{r.receiver_id}", "receiver.partial", "{}")]

        return decide

    update_receivers(repo, [ReceiverWork(first.receiver_id, (seen(first),))], T1, event_named("e"))
    assert payment_counts(store) == (1, 1)

    def clashing(r: Receiver, payments: list[Payment], changes: list[PaymentChange]):
        taken = r.receiver_id == third.receiver_id
        name = f"e-{first.receiver_id}" if taken else f"fresh-{r.receiver_id}"
        return None, [NewEvent(name, "receiver.partial", "{}")]

    work = [ReceiverWork(r.receiver_id, (seen(r, TX_B),)) for r in (second, third)]
    with pytest.raises(Conflict, match=f"e-{first.receiver_id} already exists"):
        update_receivers(repo, work, T1, clashing)
    assert payment_counts(store) == (1, 1)  # the whole batch rolled back


# -- batches ---------------------------------------------------------------------------


def test_a_large_batch_stores_every_receivers_own_new_state(repo: Repository) -> None:
    # More receivers than one multi-row statement takes, amounts that differ, NULLs
    # next to values, and one receiver listed twice (its later state must win).
    receivers = [create(repo, amount=1_000 + n) for n in range(300)]
    work = [
        ReceiverWork(r.receiver_id, (seen(r, TX_A, 1_000 if n % 3 else 2_000),))
        for n, r in enumerate(receivers)
    ]
    twice = receivers[7]  # due 1,007: partial after 1,000, paid after 10 more
    work.append(ReceiverWork(twice.receiver_id, (seen(twice, TX_B, 10),)))
    results, _ = run(repo, T1, *work)
    final = {result.receiver.receiver_id: result.receiver for result in results}
    for receiver in receivers:
        stored = repo.get_receiver(receiver.receiver_id)
        assert stored == final[receiver.receiver_id]
    assert results[7].receiver.status == PARTIAL  # the first item's state, in its result
    assert repo.get_receiver(twice.receiver_id).received_duffs == 1_010
    paid = [r for r in receivers if repo.get_receiver(r.receiver_id).status == PAID]
    assert {r.receiver_id for r in paid} == {
        r.receiver_id for n, r in enumerate(receivers) if n % 3 == 0 or r == twice
    }
    assert all(repo.get_receiver(r.receiver_id).paid_at == T1 for r in paid)
    assert all(repo.get_receiver(r.receiver_id).paid_at is None for r in receivers if r not in paid)


def test_a_batch_of_three_receivers_is_applied_in_one_call_in_work_order(
    repo: Repository,
) -> None:
    one, two, three = create(repo), create(repo), create(repo, amount=5)
    observe(repo, two, T0, seen(two, TX_A, 10))
    results, decide = run(
        repo,
        T1,
        ReceiverWork(three.receiver_id, (seen(three, TX_C, 5, locked=True),)),
        ReceiverWork(one.receiver_id, (seen(one, TX_A, 1), seen(one, TX_B, 2))),
        ReceiverWork(two.receiver_id, (seen(two, TX_B, 20),), dropped_txids=(TX_A,)),
    )
    assert [r.receiver.receiver_id for r in results] == [
        three.receiver_id,
        one.receiver_id,
        two.receiver_id,
    ]
    assert [kinds(r) for r in results] == [["new"], ["new", "new"], ["new", "dropped"]]
    assert [r.receiver.received_duffs for r in results] == [5, 3, 20]
    assert [r.receiver.status for r in results] == [PAID, PARTIAL, PARTIAL]
    for result in results:
        rid = result.receiver.receiver_id
        assert repo.get_receiver(rid) == result.receiver
        assert repo.list_payments(rid) == result.payments
        assert repo.list_outbox(receiver_id=rid)[-len(result.events) :] == result.events
    assert [len(r.events) for r in results] == [1, 2, 1]
    assert len(repo.list_outbox()) == 5  # plus the one from the earlier payment to two
    assert len(decide.calls) == 3


def test_a_receiver_listed_twice_in_a_batch_sees_its_earlier_item(repo: Repository) -> None:
    receiver = create(repo)
    results, decide = run(
        repo,
        T1,
        ReceiverWork(receiver.receiver_id, (seen(receiver, TX_A, 30_000),)),
        ReceiverWork(receiver.receiver_id, (seen(receiver, TX_B, 70_000),)),
    )
    second_call_receiver, second_call_payments, _ = decide.calls[1]
    assert second_call_receiver.received_duffs == 30_000
    assert [p.txid for p in second_call_payments] == [TX_A, TX_B]
    assert [r.receiver.received_duffs for r in results] == [30_000, AMOUNT]
    assert results[1].receiver == repo.get_receiver(receiver.receiver_id)


def test_an_observation_for_another_address_is_a_conflict_that_rolls_back_the_batch(
    store: Store, repo: Repository
) -> None:
    good, other = create(repo), create(repo)
    wrong = replace(seen(good, TX_B), address=other.address)
    with pytest.raises(Conflict, match=f"whose address is {good.address}"):
        run(
            repo,
            T1,
            ReceiverWork(other.receiver_id, (seen(other, TX_A),)),
            ReceiverWork(good.receiver_id, (wrong,)),
        )
    assert payment_counts(store) == (0, 0)
    assert repo.get_receiver(other.receiver_id) == other


def test_a_missing_receiver_is_not_found_and_nothing_is_written(
    store: Store, repo: Repository
) -> None:
    receiver = create(repo)
    with pytest.raises(NotFound, match="no receiver with id 424242"):
        run(
            repo,
            T1,
            ReceiverWork(receiver.receiver_id, (seen(receiver),)),
            ReceiverWork(424242, ()),
        )
    assert payment_counts(store) == (0, 0)


def test_a_payment_row_owned_by_another_receiver_is_a_conflict(
    store: Store, repo: Repository
) -> None:
    receiver, other = create(repo), create(repo)
    store.execute(
        "INSERT INTO payments (receiver_id, txid, address, amount_duffs, first_seen_at,"
        " updated_at) VALUES (?, ?, ?, ?, ?, ?)",
        (other.receiver_id, TX_A, receiver.address, 1, T0, T0),
    )
    with pytest.raises(Conflict, match=f"already recorded for receiver {other.receiver_id}"):
        observe(repo, receiver, T1, seen(receiver))
    assert payment_counts(store) == (1, 0)


def test_an_empty_batch_does_nothing(repo: Repository) -> None:
    def never(*args: object):
        raise AssertionError("decide must not be called")

    assert update_receivers(repo, [], T1, never) == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"txid": "A" * 64}, "txid must be 64 lowercase hex"),
        ({"txid": "a" * 63}, "txid must be 64 lowercase hex"),
        ({"amount_duffs": -1}, "amount_duffs must be an integer"),
        ({"amount_duffs": True}, "amount_duffs must be an integer"),
        ({"amount_duffs": 1.5}, "amount_duffs must be an integer"),
        ({"confirmations": -1}, "confirmations must be None or an integer"),
        ({"block_height": 2**32}, "block_height must be None or an integer"),
        ({"instant_locked": 1}, "instant_locked must be a bool"),
        ({"address": ""}, "address must be a non-empty string"),
    ],
)
def test_a_malformed_observation_is_refused_before_anything_is_written(
    store: Store, repo: Repository, change: dict, message: str
) -> None:
    receiver = create(repo)
    good = seen(receiver, TX_B)
    bad = replace(seen(receiver), **change)
    with pytest.raises(InvalidParams, match=message):
        run(repo, T1, ReceiverWork(receiver.receiver_id, (good, bad)))
    assert payment_counts(store) == (0, 0)


def test_a_malformed_dropped_txid_is_refused(repo: Repository) -> None:
    receiver = create(repo)
    with pytest.raises(InvalidParams, match="dropped txid .* 64 lowercase hex"):
        drop(repo, receiver, T1, "not-a-txid")


# -- the outbox listing ----------------------------------------------------------------


def test_list_outbox_is_oldest_first_and_filters_by_receiver_and_status(
    store: Store, repo: Repository
) -> None:
    one, two = create(repo), create(repo)
    observe(repo, one, T1, seen(one, TX_A, 1))
    observe(repo, two, T1, seen(two, TX_A, 1), seen(two, TX_B, 1))
    observe(repo, one, T2, seen(one, TX_B, 1))
    events = repo.list_outbox()
    assert [(e.receiver_id, json.loads(e.payload)["txid"]) for e in events] == [
        (one.receiver_id, TX_A),
        (two.receiver_id, TX_A),
        (two.receiver_id, TX_B),
        (one.receiver_id, TX_B),
    ]
    assert repo.list_outbox(receiver_id=one.receiver_id) == [events[0], events[3]]
    assert repo.list_outbox(limit=2) == events[:2]
    store.execute(
        "UPDATE callback_outbox SET status = ?, delivered_at = ? WHERE event_id = ?",
        (OUTBOX_DELIVERED, T2, events[1].event_id),
    )
    assert repo.list_outbox(status=OUTBOX_DELIVERED) == [
        replace(events[1], status=OUTBOX_DELIVERED, delivered_at=T2)
    ]
    assert repo.list_outbox(status=OUTBOX_PENDING) == [events[0], events[2], events[3]]
    assert repo.list_outbox(receiver_id=two.receiver_id, status=OUTBOX_PENDING) == [events[2]]
    assert repo.list_outbox(receiver_id=424242) == []


@pytest.mark.parametrize("limit", [0, 1001, -1, True, "10"])
def test_list_outbox_refuses_a_limit_outside_1_to_1000(repo: Repository, limit: object) -> None:
    with pytest.raises(InvalidParams, match="limit must be an integer from 1 to 1000"):
        repo.list_outbox(limit=limit)  # type: ignore[arg-type]


def test_list_outbox_refuses_an_unknown_status(repo: Repository) -> None:
    with pytest.raises(InvalidParams, match="unknown callback status 'sent'"):
        repo.list_outbox(status="sent")


# -- concurrency -----------------------------------------------------------------------


def in_threads(count: int, work) -> list:
    """Run ``work(i)`` in ``count`` threads released at the same instant."""
    start = threading.Barrier(count)

    def go(i: int):
        start.wait(timeout=10)
        return work(i)

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(go, range(count)))


def test_eight_concurrent_updates_with_one_observation_record_it_once(store: Store) -> None:
    repos = [store.open(), store.open()]  # two "processes", each used by several threads
    repos[0].migrate()
    receiver = create(repos[0])
    decide = SummingDecide(T1)
    work = [ReceiverWork(receiver.receiver_id, (seen(receiver, locked=True),))]
    results = in_threads(8, lambda i: update_receivers(repos[i % 2], work, T1, decide)[0])
    assert sorted(kinds(r)[0] for r in results) == ["new"] + ["unchanged"] * 7
    assert len(repos[0].list_payments(receiver.receiver_id)) == 1
    assert len(repos[1].list_outbox()) == 1
    # Every call saw the state every earlier call committed: the one that inserted saw
    # an untouched receiver, the others a paid one with that single payment.
    for seen_receiver, payments, changes in decide.calls:
        assert len(payments) == 1
        if changes[0].kind == "new":
            assert seen_receiver.received_duffs == 0
        else:
            assert (seen_receiver.received_duffs, seen_receiver.status) == (AMOUNT, PAID)
    stored = repos[1].get_receiver(receiver.receiver_id)
    assert (stored.received_duffs, stored.status) == (AMOUNT, PAID)


def test_eight_concurrent_updates_with_different_payments_lose_none(store: Store) -> None:
    repos = [store.open(), store.open()]
    repos[0].migrate()
    receiver = create(repos[0], amount=8_000)
    decide = SummingDecide(T1)
    txids = [f"{i:064x}" for i in range(8)]

    def pay(i: int):
        work = [ReceiverWork(receiver.receiver_id, (seen(receiver, txids[i], 1_000),))]
        return update_receivers(repos[i % 2], work, T1, decide)[0]

    results = in_threads(8, pay)
    # Serialised by the receiver lock: each call saw all payments committed before it.
    assert sorted(len(r.payments) for r in results) == list(range(1, 9))
    assert sorted(r.receiver.received_duffs for r in results) == [1_000 * n for n in range(1, 9)]
    stored = repos[1].get_receiver(receiver.receiver_id)
    assert (stored.received_duffs, stored.status) == (8_000, PAID)
    assert len(repos[1].list_outbox(receiver_id=receiver.receiver_id)) == 8


def test_overlapping_batches_from_many_threads_do_not_deadlock(store: Store) -> None:
    repos = [store.open(), store.open()]
    repos[0].migrate()
    receivers = [create(repos[0], amount=1_000_000) for _ in range(4)]
    decide = SummingDecide(T1)

    def pay(i: int):
        # Each batch names the receivers in a different order; locks are taken by id.
        chosen = receivers[i % 4 :] + receivers[: i % 4]
        if i % 2:
            chosen.reverse()
        txid = f"{i:064x}"
        work = [ReceiverWork(r.receiver_id, (seen(r, txid, 10),)) for r in chosen]
        return update_receivers(repos[i % 2], work, T1, decide)

    in_threads(8, pay)
    for receiver in receivers:
        stored = repos[1].get_receiver(receiver.receiver_id)
        assert stored.received_duffs == 80
        assert len(repos[1].list_payments(receiver.receiver_id)) == 8


# -- absence: what the chain source no longer shows ------------------------------------


def absent(repo: Repository, receiver: Receiver, now: int, drop_after_ms: int, *txids: str):
    unit = partial(
        record_batch,
        items=[ReceiverWork(receiver.receiver_id, absent_txids=txids)],
        now=now,
        decide=SummingDecide(now),
        drop_after_ms=drop_after_ms,
    )
    return repo.transaction(unit)[0]


def test_an_absent_payment_is_flagged_stored_and_dropped_only_after_drop_after(
    repo: Repository,
) -> None:
    receiver = create(repo)
    observe(repo, receiver, T0, seen(receiver))
    result = absent(repo, receiver, T1, 5_000, TX_A)
    assert kinds(result) == ["missing"]
    [stored] = repo.list_payments(receiver.receiver_id)
    assert stored.missing_since == T1 and stored.dropped is False
    assert result.receiver.received_duffs == AMOUNT
    assert absent(repo, receiver, T1 + 4_999, 5_000, TX_A).changes == []
    result = absent(repo, receiver, T1 + 5_000, 5_000, TX_A)
    assert kinds(result) == ["dropped"] and result.receiver.received_duffs == 0
    [stored] = repo.list_payments(receiver.receiver_id)
    assert stored.dropped is True and stored.missing_since == T1


def test_a_locked_payment_is_flagged_but_never_dropped_even_on_evidence(repo: Repository) -> None:
    receiver = create(repo)
    observe(repo, receiver, T0, seen(receiver, locked=True))
    assert kinds(drop(repo, receiver, T1, TX_A)) == ["missing"]
    result = absent(repo, receiver, T1 + 10**9, 5_000, TX_A)
    assert result.changes == [] and result.receiver.received_duffs == AMOUNT
    [stored] = repo.list_payments(receiver.receiver_id)
    assert stored.dropped is False and stored.missing_since == T1


def test_a_flagged_payment_seen_again_is_no_longer_missing(repo: Repository) -> None:
    receiver = create(repo)
    observe(repo, receiver, T0, seen(receiver))
    absent(repo, receiver, T1, 5_000, TX_A)
    result = observe(repo, receiver, T2, seen(receiver))
    assert kinds(result) == ["updated"]
    [stored] = repo.list_payments(receiver.receiver_id)
    assert stored.missing_since is None and stored.updated_at == T2


def test_holding_payments_names_the_receivers_with_a_payment_not_dropped(repo: Repository):
    """What a rescan asks before it skips a receiver with no history (issue 19)."""
    paying, dropping, quiet = create(repo), create(repo), create(repo)
    observe(repo, paying, T1, seen(paying, TX_A))
    observe(repo, dropping, T1, seen(dropping, TX_B))
    drop(repo, dropping, T2, TX_B)
    ids = [paying.receiver_id, dropping.receiver_id, quiet.receiver_id, 10**9]
    assert repo.holding_payments(ids) == {paying.receiver_id}
    assert repo.holding_payments([]) == set()
    many = [create(repo) for _ in range(3)]
    observe(repo, many[2], T1, seen(many[2], TX_C))
    # More ids than one IN list takes: every chunk is read.
    padding = list(range(10**8, 10**8 + 2_500))
    assert repo.holding_payments([*padding, many[2].receiver_id, paying.receiver_id]) == {
        many[2].receiver_id, paying.receiver_id,
    }  # fmt: skip
