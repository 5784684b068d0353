"""The read-back of a burst goes in batches of ``ChainSource.readback_batch`` addresses,
read side by side, each batch recorded as soon as it is checked; a batch whose read
fails is asked again alone (issue 19: a burst's first payments are recorded while the
rest are read, and Insight looks up 50 addresses per page instead of 1,000). Real
verifier, real engine, real SQLite, a real sandbox Insight on loopback, real REST
client."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from dashpay.domain import accounting
from dashpay.domain.model import NewReceiver, PaymentObservation
from dashpay.domain.wallet import Wallet
from dashpay.engine.loop import PaymentEngine
from dashpay.net.chain import INSIGHT_LOOKUPS, ChainSource
from dashpay.net.insight_rest import MAX_PAGE_SIZE, InsightRest, InsightUnavailable
from dashpay.repository.sql import MAX_CREATE_BATCH
from dashpay.services.verify import Verifier
from tests.conftest import TEST_XPUB, SandboxPeer

WALLET = "feedfacecafe0002"
NOW = 1_700_000_000_000
AMOUNT = 100_000
PAYMENTS = 2 * MAX_PAGE_SIZE + 20


@pytest.fixture(scope="module")
def peer():
    sandbox = SandboxPeer()
    yield sandbox
    sandbox.close()


async def _burst(
    tmp_path: Path, peer: SandboxPeer, chain: int, fail_first_of: int | None, *, hold_last=False
):
    """Pay PAYMENTS receivers of ``chain``, claim them all at once, and wait until every
    one is recorded. With ``fail_first_of``, the first read holding that receiver's
    address fails; with ``hold_last``, the read holding the last receiver's address
    answers only once every other payment is recorded. Returns (the addresses of each
    read, in order; the receivers in order; the receiver ids of each recording, in
    order)."""
    from dashpay.repository.sqlite import SqliteRepository

    repo = SqliteRepository(tmp_path / "readback.sqlite")
    repo.migrate()
    wallet = Wallet(TEST_XPUB, "testnet", chain=chain)
    receivers = []
    while len(receivers) < PAYMENTS:
        news = [
            NewReceiver(wallet_id=WALLET, chain=chain, amount_duffs=AMOUNT, created_at=NOW)
            for _ in range(min(MAX_CREATE_BATCH, PAYMENTS - len(receivers)))
        ]
        receivers += [r for r, _ in repo.create_receivers(news, wallet.address)]
    txids = [await trio.to_thread.run_sync(peer.pay, r.address, AMOUNT) for r in receivers]
    recorded: list[list[int]] = []
    engine = PaymentEngine(
        repo,
        accounting.Rules(),
        monitor_window_ms=3_600_000,
        on_recorded=lambda results: recorded.append([r.receiver.receiver_id for r in results]),
        tick_seconds=None,
    )
    engine.load(repo.iter_pending(WALLET, NOW, 3_600_000))
    reads: list[list[str]] = []
    failing = receivers[fail_first_of].address if fail_first_of is not None else None
    held = receivers[-1].address if hold_last else None
    try:
        async with trio.open_nursery() as nursery, InsightRest(peer.url) as rest:
            history = rest.address_history

            async def watched_history(addresses, **kwargs):
                nonlocal failing
                reads.append(list(addresses))
                if failing in addresses:
                    failing = None
                    raise InsightUnavailable("Insight REST: the test's failed read")
                if held in addresses:
                    while sum(len(batch) for batch in recorded) < PAYMENTS - len(addresses):
                        await trio.sleep(0.01)
                return await history(addresses, **kwargs)

            rest.address_history = watched_history  # type: ignore[method-assign]
            await nursery.start(engine.run)
            source = ChainSource(
                "insight", peer.url, rest, None, "Insight REST", INSIGHT_LOOKUPS,  # type: ignore[arg-type]
                readback_batch=MAX_PAGE_SIZE,
            )  # fmt: skip
            verifier = Verifier(source, engine)
            await nursery.start(verifier.run)
            for receiver, txid in zip(receivers, txids, strict=True):
                seen = PaymentObservation(txid, receiver.address, AMOUNT, False, None, 0)
                verifier.claim(receiver.receiver_id, receiver.address, seen)
            with trio.fail_after(30):
                while sum(len(batch) for batch in recorded) < PAYMENTS:
                    await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
        for receiver, txid in zip(receivers, txids, strict=True):
            assert [p.txid for p in repo.list_payments(receiver.receiver_id)] == [txid]
        assert verifier.stats.verified == PAYMENTS
    finally:
        repo.close()
    return reads, receivers, recorded


async def test_a_bursts_read_back_goes_in_batches_each_recorded_when_read(tmp_path, peer) -> None:
    # The last batch's read answers only once the other two batches are recorded: a
    # verifier that handed the engine the burst only when all of it was read would
    # wait for ever here (and fail after 30 s).
    reads, receivers, recorded = await _burst(
        tmp_path, peer, chain=0, fail_first_of=None, hold_last=True
    )
    assert sorted(len(r) for r in reads) == [20, MAX_PAGE_SIZE, MAX_PAGE_SIZE]
    assert sorted(a for r in reads for a in r) == sorted(r.address for r in receivers)
    last = {r.receiver_id for r in receivers[2 * MAX_PAGE_SIZE :]}
    assert set(recorded[-1]) == last and all(not last & set(ids) for ids in recorded[:-1])


async def test_a_failed_batch_is_read_again_alone(tmp_path, peer, caplog) -> None:
    # Chain 1: addresses this module's other test (chain 0, same peer) never paid.
    reads, receivers, _ = await _burst(tmp_path, peer, chain=1, fail_first_of=PAYMENTS - 1)
    assert sorted(len(r) for r in reads) == [20, 20, MAX_PAGE_SIZE, MAX_PAGE_SIZE]
    again = [r for r in reads if receivers[-1].address in r]
    assert len(again) == 2 and again[0] == again[1]
    others = [a for r in reads if receivers[-1].address not in r for a in r]
    assert len(others) == len(set(others)) == 2 * MAX_PAGE_SIZE
    assert any(
        "tx events wait for Insight REST claims=20" in m for m in caplog.messages
    ), caplog.messages
