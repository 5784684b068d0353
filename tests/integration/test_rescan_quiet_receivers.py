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
