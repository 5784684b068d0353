"""The receiver service's create path on a real database (SQLite and MariaDB), with
the real wallet derivation and, for the unpaid gap, the real payment engine: batched
creates, per-caller errors, cancellation, and the in-memory gap."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import trio

from dashpay.config.database import parse_database_url
from dashpay.domain.accounting import Rules
from dashpay.domain.errors import Conflict, InvalidParams, Unavailable
from dashpay.domain.model import NewReceiver, Receiver, ReceiverWork
from dashpay.domain.observations import TxObserved
from dashpay.domain.wallet import Wallet
from dashpay.engine.loop import PaymentEngine, ReceiverAdded
from dashpay.repository import open_repository
from dashpay.repository.base import Repository
from dashpay.services.receivers import ReceiverDefaults, ReceiverService
from tests.commands import rpc
from tests.conftest import TEST_XPUB

WALLET = Wallet(TEST_XPUB, "mainnet")
TXID = "d" * 64


@pytest.fixture
def repo(database_url: str) -> Iterator[Repository]:
    repo = open_repository(parse_database_url(database_url))
    repo.migrate()
    repo.ensure_counter(WALLET.wallet_id, WALLET.chain)
    yield repo
    with contextlib.suppress(Exception):
        repo.close()


class CountingRepository:
    """The real repository, counting the batches it is asked to write and able to hold
    one inside its transaction until the test lets it go."""

    def __init__(self, repo: Repository) -> None:
        self._repo = repo
        self.batches: list[int] = []
        self.hold: threading.Event | None = None
        self.entered = threading.Event()

    def create_receivers(self, batch, derive):
        self.batches.append(len(batch))

        def held_derive(index: int) -> str:
            self.entered.set()
            if self.hold is not None:
                assert self.hold.wait(timeout=10)
            return derive(index)

        return self._repo.create_receivers(batch, held_derive)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._repo, name)


def service(repo: Any, *, added: list[Receiver] | None = None, **defaults: Any) -> ReceiverService:
    async def on_created(receiver: Receiver) -> None:
        if added is not None:
            added.append(receiver)

    return ReceiverService(
        repo,
        WALLET,
        ReceiverDefaults(expires_after=0, callback_url=None, **defaults),
        on_created=on_created,
    )


async def create_all(svc: ReceiverService, requests: list[dict]) -> list[Any]:
    """Run every request concurrently; each one's view or the exception it raised."""
    outcomes: list[Any] = [None] * len(requests)

    async def one(i: int) -> None:
        try:
            outcomes[i] = await rpc("receiver.create", requests[i], receivers=svc)
        except Exception as exc:
            outcomes[i] = exc

    async with trio.open_nursery() as nursery:
        for i in range(len(requests)):
            nursery.start_soon(one, i)
    return outcomes


async def test_concurrent_creates_are_batched_with_consecutive_unique_addresses(repo):
    counting = CountingRepository(repo)
    added: list[Receiver] = []
    svc = service(counting, added=added)
    async with trio.open_nursery() as nursery:
        await nursery.start(svc.run)
        views = await create_all(svc, [{"amount": f"0.{i + 1:03d}"} for i in range(40)])
        nursery.cancel_scope.cancel()
    assert all(view["created"] for view in views)
    assert sorted(view["hd_index"] for view in views) == list(range(40))
    assert {view["address"] for view in views} == set(WALLET.addresses(0, 40))
    assert all(view["address"] == WALLET.address(view["hd_index"]) for view in views)
    assert sum(counting.batches) == 40 and max(counting.batches) > 1
    assert sorted(r.receiver_id for r in added) == sorted(v["receiver_id"] for v in views)
    stored = repo.list_receivers(wallet_id=WALLET.wallet_id, limit=100)
    assert sorted((r.hd_index, r.address) for r in stored) == sorted(
        (v["hd_index"], v["address"]) for v in views
    )
    assert repo.next_index(WALLET.wallet_id, WALLET.chain) == 40


async def test_a_refused_request_fails_only_its_caller(repo):
    added: list[Receiver] = []
    svc = service(repo, added=added)
    async with trio.open_nursery() as nursery:
        await nursery.start(svc.run)
        first = await rpc(
            "receiver.create", {"amount": "1", "idempotency_key": "order-1"}, receivers=svc
        )
        outcomes = await create_all(
            svc,
            [
                {"amount": "0.5"},
                {"amount": "2", "idempotency_key": "order-1"},  # same key, other amount
                {"amount": "-1"},  # refused before it is queued
                {"amount": "1", "idempotency_key": "order-1"},  # a plain repeat
                {"amount": "0.25", "idempotency_key": "order-2"},
                {"amount": "0.25", "idempotency_key": "order-2"},  # repeated in the batch
            ],
        )
        nursery.cancel_scope.cancel()
    assert isinstance(outcomes[1], Conflict) and "different amount" in str(outcomes[1])
    assert isinstance(outcomes[2], InvalidParams)
    assert outcomes[3]["receiver_id"] == first["receiver_id"] and not outcomes[3]["created"]
    assert outcomes[4]["receiver_id"] == outcomes[5]["receiver_id"]
    assert sorted([outcomes[4]["created"], outcomes[5]["created"]]) == [False, True]
    assert outcomes[0]["created"]
    assert sorted(r.hd_index for r in added) == [0, 1, 2]
    assert repo.next_index(WALLET.wallet_id, WALLET.chain) == 3


async def test_a_row_the_database_refuses_fails_its_caller_not_the_batch(repo):
    taken = WALLET.address(2)  # another wallet's receiver already holds index 2's address
    other = NewReceiver(wallet_id="0" * 16, chain=0, amount_duffs=1, created_at=1)
    repo.create_receiver(other, lambda index: taken)
    svc = service(CountingRepository(repo))
    async with trio.open_nursery() as nursery:
        await nursery.start(svc.run)
        outcomes = await create_all(svc, [{"amount": "1"} for _ in range(4)])
        nursery.cancel_scope.cancel()
    made = [o for o in outcomes if isinstance(o, dict)]
    refused = [o for o in outcomes if isinstance(o, Exception)]
    assert sorted(view["hd_index"] for view in made) == [0, 1]
    assert len(refused) == 2
    assert all(isinstance(e, Conflict) and taken in str(e) for e in refused)
    assert repo.next_index(WALLET.wallet_id, WALLET.chain) == 2


async def test_a_caller_cancelled_before_its_request_is_taken_creates_nothing(repo):
    svc = service(repo)
    async with trio.open_nursery() as nursery:
        with trio.move_on_after(0.05) as scope:
            await rpc(
                "receiver.create", {"amount": "1"}, receivers=svc
            )  # the writer is not running yet
        assert scope.cancelled_caught
        await nursery.start(svc.run)
        view = await rpc("receiver.create", {"amount": "2"}, receivers=svc)
        nursery.cancel_scope.cancel()
    assert view["hd_index"] == 0
    assert [r.amount_duffs for r in repo.list_receivers()] == [200_000_000]


async def test_a_caller_cancelled_after_its_request_is_taken_still_gets_it_watched(repo):
    counting = CountingRepository(repo)
    counting.hold = threading.Event()
    added: list[Receiver] = []
    svc = service(counting, added=added)
    async with trio.open_nursery() as nursery:
        await nursery.start(svc.run)
        caller = trio.CancelScope()

        async def impatient() -> None:
            with caller:
                await rpc(
                    "receiver.create", {"amount": "1", "idempotency_key": "order-9"}, receivers=svc
                )

        nursery.start_soon(impatient)
        await trio.to_thread.run_sync(counting.entered.wait, 10)
        caller.cancel()
        await trio.sleep(0.01)
        counting.hold.set()
        again = await rpc(
            "receiver.create", {"amount": "1", "idempotency_key": "order-9"}, receivers=svc
        )
        nursery.cancel_scope.cancel()
    assert caller.cancelled_caught
    assert [r.receiver_id for r in added] == [again["receiver_id"]]
    assert not again["created"] and again["hd_index"] == 0
    assert len(repo.list_receivers()) == 1


def pay(receiver_view: dict, duffs: int, *, locked: bool = True) -> TxObserved:
    return TxObserved(TXID, {receiver_view["address"]: duffs}, instant_locked=locked)


def watched(repo: Repository, gap_limit_max: int) -> tuple[PaymentEngine, ReceiverService]:
    """A receiver service wired to a real payment engine, as the daemon wires them."""
    engine = PaymentEngine(repo, Rules(), monitor_window_ms=60_000)
    defaults = ReceiverDefaults(
        expires_after=0, callback_url=None, gap_limit_warning=1, gap_limit_max=gap_limit_max
    )
    svc = ReceiverService(
        repo, WALLET, defaults, on_created=lambda r: engine.submit(ReceiverAdded(r))
    )
    engine.on_recorded = svc.recorded
    return engine, svc


async def paid_and_recorded(
    repo: Repository, engine: PaymentEngine, view: dict, *, locked: bool = True
) -> None:
    """Pay ``view`` its amount through the engine and wait until the engine is done."""
    await engine.submit(pay(view, 100_000_000, locked=locked))
    with trio.fail_after(10):
        while repo.get_receiver(view["receiver_id"]).received_duffs == 0:
            await trio.sleep(0.01)
        await engine.apply([ReceiverWork(view["receiver_id"])])  # that batch has finished


async def test_the_gap_limit_refuses_and_a_recorded_payment_lifts_it(repo, caplog):
    engine, svc = watched(repo, gap_limit_max=3)
    caplog.set_level(logging.WARNING, logger="dashpay.receivers")
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        await nursery.start(svc.run)
        views = await create_all(svc, [{"amount": "1"} for _ in range(3)])
        refused = await create_all(svc, [{"amount": "1"}, {"amount": "1"}])
        assert all(isinstance(e, Conflict) and "gap_limit_max = 3" in str(e) for e in refused)

        await paid_and_recorded(repo, engine, next(v for v in views if v["hd_index"] == 1))
        more = await create_all(svc, [{"amount": "1"} for _ in range(3)])
        nursery.cancel_scope.cancel()
    # index 1 paid: index 2 is the only unpaid one, so two more fit (gap 3) and one not
    assert sorted(v["hd_index"] for v in more if isinstance(v, dict)) == [3, 4]
    assert sum(isinstance(v, Conflict) for v in more) == 1
    assert repo.unpaid_gap(WALLET.wallet_id, WALLET.chain) == 3
    warnings = [r for r in caplog.records if "gap limit warning" in r.getMessage()]
    assert warnings  # past gap_limit_warning = 1


async def test_the_gap_is_read_from_the_database_and_a_drop_is_noticed(repo):
    engine, svc = watched(repo, gap_limit_max=2)
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        await nursery.start(svc.run)
        first = await rpc("receiver.create", {"amount": "1"}, receivers=svc)
        # unlocked: only a mempool payment can be dropped (a locked one is final)
        await paid_and_recorded(repo, engine, first, locked=False)
        two = await create_all(svc, [{"amount": "1"}, {"amount": "1"}])  # gap 0 -> 2
        assert all(isinstance(v, dict) for v in two)
        # the only payment is dropped: index 0 is unpaid again, the gap is 3
        await engine.apply([ReceiverWork(first["receiver_id"], dropped_txids=(TXID,))])
        assert repo.get_receiver(first["receiver_id"]).received_duffs == 0
        [refused] = await create_all(svc, [{"amount": "1"}])
        nursery.cancel_scope.cancel()
    assert isinstance(refused, Conflict) and "3 receivers in a row" in str(refused)


async def test_the_status_gap_is_kept_in_memory_and_follows_payments_and_drops(repo):
    """``unpaid_gap`` (what `status` shows) is read from the database once, then moved
    by creates and recorded payments; a drop makes it read again, and every answer is
    what the database says at that moment."""
    engine, svc = watched(repo, gap_limit_max=10)
    stored = (WALLET.wallet_id, WALLET.chain)
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        await nursery.start(svc.run)
        assert await svc.unpaid_gap() == (0, 0)
        views = await create_all(svc, [{"amount": "1"} for _ in range(3)])
        assert await svc.unpaid_gap() == (3, 3) and repo.unpaid_gap(*stored) == 3
        middle = next(v for v in views if v["hd_index"] == 1)
        await paid_and_recorded(repo, engine, middle, locked=False)
        assert await svc.unpaid_gap() == (3, 1) and repo.unpaid_gap(*stored) == 1
        await engine.apply([ReceiverWork(middle["receiver_id"], dropped_txids=(TXID,))])
        assert svc.gap.stale  # the drop took the newest paid receiver back to zero
        assert await svc.unpaid_gap() == (3, 3) and repo.unpaid_gap(*stored) == 3
        assert not svc.gap.stale
        nursery.cancel_scope.cancel()


async def test_a_restarted_service_starts_from_the_stored_gap(repo):
    for _ in range(3):
        repo.create_receiver(
            NewReceiver(wallet_id=WALLET.wallet_id, chain=0, amount_duffs=1, created_at=1),
            WALLET.address,
        )
    svc = service(repo, gap_limit_warning=1, gap_limit_max=4)
    async with trio.open_nursery() as nursery:
        await nursery.start(svc.run)
        outcomes = await create_all(svc, [{"amount": "1"} for _ in range(2)])
        nursery.cancel_scope.cancel()
    assert sum(isinstance(o, dict) for o in outcomes) == 1
    assert sum(isinstance(o, Conflict) for o in outcomes) == 1


async def test_the_gap_warning_is_logged_once_per_n_creates(repo, caplog):
    svc = service(repo, gap_limit_warning=2, gap_warning_every=5)
    caplog.set_level(logging.WARNING, logger="dashpay.receivers")
    async with trio.open_nursery() as nursery:
        await nursery.start(svc.run)
        for _ in range(14):
            await rpc("receiver.create", {"amount": "1"}, receivers=svc)
        nursery.cancel_scope.cancel()
    warned = [
        int(r.getMessage().split("unpaid_in_a_row=")[1].split()[0])
        for r in caplog.records
        if "gap limit warning" in r.getMessage()
    ]
    # gaps 3..14 are past the warning: the first of them, then every 5th create
    assert warned == [3, 8, 13]


async def test_an_unreachable_database_fails_every_caller_and_the_writer_goes_on(repo):
    svc = service(repo)
    async with trio.open_nursery() as nursery:
        await nursery.start(svc.run)
        await rpc("receiver.create", {"amount": "1"}, receivers=svc)
        repo.close()
        outcomes = await create_all(svc, [{"amount": "1"} for _ in range(3)])
        [later] = await create_all(svc, [{"amount": "1"}])
        nursery.cancel_scope.cancel()
    assert all(isinstance(o, Unavailable) for o in outcomes)
    assert isinstance(later, Unavailable)
