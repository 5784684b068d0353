"""The wallet lease and its fence (repository/locks.py, docs/operations.md) on both
backends: the daemon uses it on MySQL/MariaDB only (SQLite keeps its file lock), but
the SQL is one text, so both run it. Several repositories on one database stand for
several daemons."""

from __future__ import annotations

import threading

import pytest

from dashpay.domain.errors import Unavailable
from dashpay.domain.model import NewReceiver
from dashpay.repository.locks import WalletLease
from tests.contract.conftest import fake_address

WALLET = "w" * 16


def expire(store) -> None:
    """The owner stopped renewing a lease ago (as the server's clock sees it)."""
    store.execute("UPDATE wallet_leases SET expires_at = 1 WHERE wallet_id = ?", (WALLET,))


def new_receiver(key: str) -> NewReceiver:
    return NewReceiver(wallet_id=WALLET, chain=0, amount_duffs=1, created_at=1, idempotency_key=key)


@pytest.fixture
def two(store):
    first, second = store.open(), store.open()
    first.migrate()
    return first, second


def test_one_owner_and_a_takeover_raises_the_epoch(store, two):
    first, second = two
    a, b = WalletLease(first, WALLET, 5), WalletLease(second, WALLET, 5)
    assert a.try_acquire() and not b.try_acquire()
    assert a.owner in b.holder() and "epoch 1" in b.holder()
    assert a.try_acquire()  # our own lease again: the same epoch
    assert first.fence.epoch == 1
    expire(store)
    assert b.try_acquire()
    assert second.fence.epoch == 2
    assert store.execute("SELECT owner, epoch FROM wallet_leases") == [(b.owner, 2)]


def test_the_owner_taking_its_lease_again_always_changes_the_row(store, two):
    # MySQL counts a row an UPDATE leaves as it was as not affected: a renewal in the
    # same millisecond as the last one would set the same expires_at and read as
    # "taken meanwhile". Like the fence, taking our own lease again moves expires_at
    # forward by at least 1, here from a value no clock reaches.
    first, _ = two
    lease = WalletLease(first, WALLET, 5)
    assert lease.try_acquire()
    far = 10**15
    store.execute("UPDATE wallet_leases SET expires_at = ? WHERE wallet_id = ?", (far, WALLET))
    assert lease.try_acquire()
    assert store.execute("SELECT expires_at, epoch FROM wallet_leases") == [(far + 1, 1)]


def test_a_deposed_owner_writes_nothing(store, two):
    first, second = two
    a, b = WalletLease(first, WALLET, 5), WalletLease(second, WALLET, 5)
    assert a.try_acquire()
    first.ensure_counter(WALLET, 0)
    first.create_receivers([new_receiver("k1")], fake_address(WALLET, 0))
    expire(store)
    assert b.try_acquire()
    with pytest.raises(Unavailable, match="no longer owns wallet") as caught:
        first.create_receivers([new_receiver("k2")], fake_address(WALLET, 0))
    assert caught.value.details["ownership_lost"] is True
    assert store.execute("SELECT idempotency_key FROM receivers") == [("k1",)]
    assert store.execute("SELECT next_index FROM hd_counters") == [(1,)]
    assert not a.alive() and a.lost
    assert not a.try_acquire()  # the new owner's lease is current
    second.create_receivers([new_receiver("k2")], fake_address(WALLET, 0))  # the new owner writes


def test_the_fence_covers_a_grouped_create_as_one_transaction(store, two):
    """The receiver writer's batches (several creates, one transaction with the HD
    counter): a deposed owner's batch writes no row and moves no counter; the new
    owner's batch continues the counter, so no index is given twice."""
    first, second = two
    a, b = WalletLease(first, WALLET, 5), WalletLease(second, WALLET, 5)
    assert a.try_acquire()
    first.ensure_counter(WALLET, 0)
    first.create_receivers([new_receiver("k1"), new_receiver("k2")], fake_address(WALLET, 0))
    expire(store)
    assert b.try_acquire()
    batch = [new_receiver(f"late{i}") for i in range(3)]
    with pytest.raises(Unavailable, match="no longer owns wallet"):
        first.create_receivers(batch, fake_address(WALLET, 0))
    assert store.execute("SELECT COUNT(*) FROM receivers") == [(2,)]
    assert store.execute("SELECT next_index FROM hd_counters") == [(2,)]
    made = second.create_receivers(batch, fake_address(WALLET, 0))
    assert [receiver.hd_index for receiver, created in made if created] == [2, 3, 4]
    assert store.execute("SELECT COUNT(DISTINCT hd_index), COUNT(*) FROM receivers") == [(5, 5)]


def test_every_write_renews_and_release_hands_over_at_once(store, two):
    first, second = two
    a, b = WalletLease(first, WALLET, 60), WalletLease(second, WALLET, 60)
    assert a.try_acquire()
    [(before,)] = store.execute("SELECT expires_at FROM wallet_leases")
    first.set_setting_if_absent("x", "1")  # any write transaction is fenced and renews
    [(after,)] = store.execute("SELECT expires_at FROM wallet_leases")
    assert after > before
    assert a.alive()
    assert not b.try_acquire()
    a.release()
    assert b.try_acquire() and second.fence.epoch == 2


def test_an_owner_that_writes_adds_no_transaction_for_its_lease(store, two):
    """Writes renew the lease (their fence), so ``alive`` renews it only after an
    interval without one; a write that finds the lease taken makes it ask again."""
    first, second = two
    a, b = WalletLease(first, WALLET, 60), WalletLease(second, WALLET, 60)
    assert a.try_acquire()
    first.set_setting_if_absent("x", "1")
    [(renewed,)] = store.execute("SELECT expires_at FROM wallet_leases")
    assert a.alive()  # renewed by that write a moment ago: nothing written
    assert store.execute("SELECT expires_at FROM wallet_leases") == [(renewed,)]
    first.fence_renewed_at -= a.renew_interval  # an interval without writes
    assert a.alive()
    [(later,)] = store.execute("SELECT expires_at FROM wallet_leases")
    assert later > renewed
    expire(store)
    assert b.try_acquire()
    with pytest.raises(Unavailable, match="no longer owns wallet"):
        first.set_setting_if_absent("y", "1")
    assert not a.alive() and a.lost  # asked the database, found the new owner


@pytest.mark.mysql
def test_a_write_in_flight_during_the_takeover_is_rolled_back(store, two):
    if store.backend != "mysql":
        pytest.skip("SQLite's write lock serialises the takeover behind the write")
    first, second = two
    a, b = WalletLease(first, WALLET, 5), WalletLease(second, WALLET, 5)
    assert a.try_acquire()
    started, go_on = threading.Event(), threading.Event()
    outcome: list[BaseException | None] = []

    def slow_write(cur):
        first._execute(cur, "INSERT INTO settings (name, value) VALUES (?, ?)", ("late", "1"))
        started.set()
        go_on.wait(10)

    def run() -> None:
        try:
            first._write(slow_write)
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    writer = threading.Thread(target=run)
    writer.start()
    assert started.wait(10)
    expire(store)
    assert b.try_acquire()  # the takeover commits while the old owner's write is open
    go_on.set()
    writer.join(10)
    assert isinstance(outcome[0], Unavailable) and "no longer owns" in str(outcome[0])
    assert store.execute("SELECT name FROM settings WHERE name = 'late'") == []


@pytest.mark.parametrize("receivers", [1, 3])
def test_a_payments_unit_of_work_is_fenced_by_its_receiver_update(store, two, receivers):
    """The engine's unit of work folds the fence into the receivers' UPDATE on MySQL
    (one statement fewer per payment): it still renews the lease, and a deposed
    owner's payments, receiver updates and outbox rows are all rolled back."""
    from functools import partial

    from dashpay.domain.model import PaymentObservation, ReceiverWork
    from dashpay.engine.record import record_batch
    from tests.contract.test_payments import SummingDecide

    first, second = two
    a, b = WalletLease(first, WALLET, 60), WalletLease(second, WALLET, 60)
    assert a.try_acquire()
    first.ensure_counter(WALLET, 0)
    created = first.create_receivers(
        [new_receiver(f"p{i}") for i in range(2 * receivers)], fake_address(WALLET, 0)
    )
    made = [receiver for receiver, _ in created]

    def pay(repo, targets, txid_digit: str, now: int):
        work = [
            ReceiverWork(
                r.receiver_id,
                (PaymentObservation(txid_digit * 63 + "a", r.address, 5, False, None, None),),
            )
            for r in targets
        ]
        return repo.transaction(
            partial(record_batch, items=work, now=now, decide=SummingDecide(now))
        )

    [(before,)] = store.execute("SELECT expires_at FROM wallet_leases")
    pay(first, made[:receivers], "1", 10)
    [(after,)] = store.execute("SELECT expires_at FROM wallet_leases")
    assert after > before  # renewed by the unit of work
    assert store.execute("SELECT COUNT(*) FROM payments") == [(receivers,)]
    outbox = store.execute("SELECT COUNT(*) FROM callback_outbox")
    expire(store)
    assert b.try_acquire()
    with pytest.raises(Unavailable, match="no longer owns wallet") as caught:
        pay(first, made[receivers:], "2", 20)
    assert caught.value.details["ownership_lost"] is True
    assert store.execute("SELECT COUNT(*) FROM payments") == [(receivers,)]
    assert store.execute("SELECT COUNT(*) FROM callback_outbox") == outbox
    paid = store.execute("SELECT COUNT(*) FROM receivers WHERE received_duffs > 0")
    assert paid == [(receivers,)]
    pay(second, made[receivers:], "2", 30)  # the new owner records them
    assert store.execute("SELECT COUNT(*) FROM payments") == [(2 * receivers,)]
