"""A rescan sends through the engine only the receivers it has something to record or
check for (issue 19): those the address history shows, and those holding a stored
payment (for the absence check). A pending receiver with no history and no payment
costs its share of one read. Real engine, real SQLite, a real sandbox Insight on
loopback, real REST client."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from dashpay.domain import accounting
from dashpay.domain.model import NewReceiver, PaymentObservation, ReceiverWork
from dashpay.domain.wallet import Wallet
from dashpay.engine.loop import PaymentEngine
from dashpay.net.chain import INSIGHT_LOOKUPS, ChainSource
from dashpay.net.insight_rest import InsightRest
from dashpay.repository.sqlite import SqliteRepository
from dashpay.services.rescan import Reconciler
from tests.conftest import TEST_XPUB, SandboxPeer

WALLET = "feedfacecafe0001"
NOW = 1_700_000_000_000
AMOUNT = 100_000


@pytest.fixture(scope="module")
def peer():
    sandbox = SandboxPeer()
    yield sandbox
    sandbox.close()


@pytest.fixture
def repo(tmp_path: Path):
    repo = SqliteRepository(tmp_path / "rescan.sqlite")
    repo.migrate()
    yield repo
    repo.close()


async def test_only_receivers_with_history_or_payments_reach_the_engine(repo, peer) -> None:
    wallet = Wallet(TEST_XPUB, "testnet")
    news = [
        NewReceiver(wallet_id=WALLET, chain=0, amount_duffs=AMOUNT, created_at=NOW)
        for _ in range(6)
    ]
    paid, holding, *quiet = [r for r, _ in repo.create_receivers(news, wallet.address)]
    paid_txid = await trio.to_thread.run_sync(peer.pay, paid.address, AMOUNT)
    recorded: list[list[int]] = []
    engine = PaymentEngine(
        repo,
        accounting.Rules(),
        monitor_window_ms=3_600_000,
        on_recorded=lambda results: recorded.append([r.receiver.receiver_id for r in results]),
        tick_seconds=None,
    )
    engine.load(repo.iter_pending(WALLET, NOW, 3_600_000))
    async with trio.open_nursery() as nursery, InsightRest(peer.url) as rest:
        await nursery.start(engine.run)
        # A stored payment the chain source does not know: the rescan must check it.
        unknown = "ab" * 32
        seen = PaymentObservation(unknown, holding.address, AMOUNT, False, None, 0)
        await engine.apply([ReceiverWork(holding.receiver_id, (seen,))])
        recorded.clear()
        with trio.fail_after(20):
            # The lookups only: a rescan never asks the watcher anything.
            source = ChainSource("insight", peer.url, rest, None, "Insight REST", INSIGHT_LOOKUPS)  # type: ignore[arg-type]
            summary = await Reconciler(repo, source, engine, WALLET).rescan(engine.watched())
        nursery.cancel_scope.cancel()
    went = {receiver_id for batch in recorded for receiver_id in batch}
    assert went == {paid.receiver_id, holding.receiver_id}
    assert summary.receivers == 6
    assert (summary.payments_found, summary.payments_new, summary.payments_missing) == (1, 1, 1)
    assert [p.txid for p in repo.list_payments(paid.receiver_id)] == [paid_txid]
    (missing,) = repo.list_payments(holding.receiver_id)
    assert missing.txid == unknown and missing.missing_since is not None
    assert all(repo.list_payments(r.receiver_id) == [] for r in quiet)
    assert repo.holding_payments([r.receiver_id for r in (paid, holding, *quiet)]) == {
        paid.receiver_id, holding.receiver_id,
    }  # fmt: skip


async def test_a_full_rescan_asked_for_during_another_reads_after_the_request(repo, peer) -> None:
    """`rescan` while a full rescan runs must not hand back that one's result: it read
    the address before the payment the caller knows of. It waits and gets the next
    rescan, which records the payment; two requests that come meanwhile share it."""
    # Chain 1: an address the module's other test (chain 0, same peer) never paid.
    wallet = Wallet(TEST_XPUB, "testnet", chain=1)
    news = [NewReceiver(wallet_id=WALLET, chain=1, amount_duffs=AMOUNT, created_at=NOW)]
    [(receiver, _)] = repo.create_receivers(news, wallet.address)
    engine = PaymentEngine(repo, accounting.Rules(), monitor_window_ms=3_600_000, tick_seconds=None)
    engine.load(repo.iter_pending(WALLET, NOW, 3_600_000))
    async with trio.open_nursery() as nursery, InsightRest(peer.url) as rest:
        await nursery.start(engine.run)
        source = ChainSource("insight", peer.url, rest, None, "Insight REST", INSIGHT_LOOKUPS)  # type: ignore[arg-type]
        reconciler = Reconciler(repo, source, engine, WALLET)
        history, read, release = rest.address_history, trio.Event(), trio.Event()
        reads = 0

        async def held_after_the_first_read(addresses, **kwargs):
            nonlocal reads
            reads += 1
            result = await history(addresses, **kwargs)
            if reads == 1:
                read.set()
                await release.wait()
            return result

        rest.address_history = held_after_the_first_read  # type: ignore[method-assign]
        summaries: dict[str, object] = {}

        async def ask(name: str) -> None:
            summaries[name] = await reconciler.rescan_all_pending()

        with trio.fail_after(20):
            nursery.start_soon(ask, "running")
            await read.wait()  # the running rescan has read the address: nothing there
            txid = await trio.to_thread.run_sync(peer.pay, receiver.address, AMOUNT)
            nursery.start_soon(ask, "second")
            nursery.start_soon(ask, "third")
            await trio.sleep(0.05)
            assert reconciler.full_running and not summaries
            release.set()
            while len(summaries) < 3:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert summaries["running"].payments_new == 0  # type: ignore[attr-defined]
    assert summaries["second"] is summaries["third"]  # one rescan for both
    assert summaries["second"].payments_new == 1  # type: ignore[attr-defined]
    assert reads == 2
    assert [p.txid for p in repo.list_payments(receiver.receiver_id)] == [txid]
