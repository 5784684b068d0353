"""The sandbox keeps its chain: saved before anyone hears of a change, restored at start,
refused (never replaced) when damaged, deleted together with its database by reset."""

from __future__ import annotations

import json
import os
import stat
import threading
import time

import pytest
import trio

from dashpay.domain.errors import Unavailable
from dashpay.sandbox.chain import SandboxChain
from dashpay.sandbox.network import SandboxNetwork
from dashpay.sandbox.state import (
    SandboxState,
    SandboxStateError,
    lock_state,
    open_network,
    read_chain,
    reset_state,
    save_chain,
)

ADDR_A = "yTCZ7iv1U6p6MXp278FhMFZmKDbmgx89oX"
ADDR_B = "yWSJE2AeQspnykJ3d7cDsoj1sABQmZEHet"


@pytest.fixture
def state(tmp_path) -> SandboxState:
    return SandboxState(tmp_path)


def paid_network(state: SandboxState) -> SandboxNetwork:
    """A saved sandbox with one payment, and its database beside it."""
    network = open_network(state, lock_delay=0)
    tx = network.chain.pay([(ADDR_A, 5)])
    save_chain(state.chain_file, network.snapshot())
    state.database.write_bytes(b"a database")
    assert tx.txid in network.chain.mempool_txids()
    return network


# -- the file -------------------------------------------------------------------------------


def test_a_new_sandbox_saves_its_chain_at_once_and_reads_it_back(state):
    network = open_network(state)
    assert stat.S_IMODE(state.chain_file.stat().st_mode) == 0o600
    assert not list(state.directory.glob("*.tmp"))
    again = open_network(state)
    assert again.chain.tip_hash == network.chain.tip_hash
    assert again.snapshot() == json.loads(json.dumps(network.snapshot()))


def test_a_payment_survives_a_reopen(state):
    network = paid_network(state)
    again = open_network(state)
    assert again.chain.mempool_txids() == network.chain.mempool_txids()


@pytest.mark.parametrize(
    "damage, reason",
    [
        (lambda raw: raw[:-10], "checksum does not match"),
        (lambda raw: raw.replace(b'"seq":', b'"seq": ', 1), "checksum does not match"),
        (lambda raw: b"", "no header line"),
        (lambda raw: b"{}\n{}", "not a dashpay sandbox chain file"),
        (lambda raw: b"not json at all\n", "Expecting value"),
        (lambda raw: raw.replace(b'"version": 1', b'"version": 99', 1), "format version is 99"),
    ],
)
def test_a_damaged_chain_file_is_refused_with_its_name_and_the_fix(state, damage, reason):
    paid_network(state)
    before = damage(state.chain_file.read_bytes())
    state.chain_file.write_bytes(before)
    with pytest.raises(SandboxStateError) as refused:
        open_network(state)
    message = refused.value.message
    assert str(state.chain_file) in message and reason in message
    assert "`dashpay sandbox reset`" in message
    assert state.chain_file.read_bytes() == before  # never replaced


def test_a_checksummed_file_that_is_no_chain_is_refused_too(state):
    snapshot = paid_network(state).snapshot()
    snapshot["chain"]["mempool"].append("ab" * 32)
    save_chain(state.chain_file, snapshot)
    with pytest.raises(SandboxStateError, match="does not describe one sandbox chain"):
        open_network(state)


def test_a_database_without_its_chain_is_refused(state):
    paid_network(state)
    state.chain_file.unlink()
    with pytest.raises(SandboxStateError, match="payments would be reverted") as refused:
        open_network(state)
    assert "`dashpay sandbox reset`" in refused.value.message
    assert not state.chain_file.exists()


def test_a_chain_with_payments_without_its_database_is_refused(state):
    paid_network(state)
    state.database.unlink()
    with pytest.raises(SandboxStateError, match="1 payment"):
        open_network(state)


def test_a_chain_without_payments_may_start_a_new_database(state):
    open_network(state)  # saved, then (say) killed before the database was made
    assert open_network(state).chain.payment_count == 0


def test_a_save_the_disk_refuses_names_the_file(tmp_path):
    gone = tmp_path / "no-such-directory" / "sandbox-chain.json"
    with pytest.raises(Unavailable, match="could not save the sandbox chain") as refused:
        save_chain(gone, {"chain": {}})
    assert str(gone) in refused.value.message


def test_the_file_is_a_checksummed_header_line_then_the_snapshot(state):
    network = open_network(state)
    header, _, body = state.chain_file.read_bytes().partition(b"\n")
    assert json.loads(header)["format"] == "dashpay-sandbox-chain"
    assert json.loads(body) == read_chain(state.chain_file) == network.snapshot()


# -- the lock and reset -----------------------------------------------------------------


def test_one_sandbox_per_directory_and_no_reset_while_it_runs(state):
    lock = lock_state(state)
    try:
        with pytest.raises(SandboxStateError, match=rf"\(pid {os.getpid()}\) is running"):
            lock_state(state)
        with pytest.raises(SandboxStateError, match="stop it first"):
            reset_state(state)
    finally:
        lock.release()
    lock_state(state).release()  # free again


def test_reset_deletes_the_chain_and_the_database_and_keeps_the_key(state):
    paid_network(state)
    for path in state.database_files()[1:3]:  # -wal, -shm
        path.write_bytes(b"")
    key = state.directory / "sandbox-wallet.txt"
    key.write_text("tpub...\n")
    removed = reset_state(state)
    assert {p.name for p in removed} == {
        "sandbox-chain.json",
        "sandbox.sqlite3",
        "sandbox.sqlite3-wal",
        "sandbox.sqlite3-shm",
    }
    assert not any(p.exists() for p in removed) and key.exists()
    assert open_network(state).chain.payment_count == 0  # a new chain
    assert reset_state(SandboxState(state.directory / "never-used")) == []


# -- the network saves before it tells ------------------------------------------------


class Recorder:
    """A persist function that keeps what it was given (called from worker threads)."""

    def __init__(self, delay: float = 0.0) -> None:
        self.saved: list[dict] = []
        self.delay = delay
        self.lock = threading.Lock()

    def __call__(self, snapshot: dict) -> None:
        time.sleep(self.delay)
        with self.lock:
            self.saved.append(json.loads(json.dumps(snapshot)))

    @property
    def last(self) -> dict:
        return self.saved[-1]["chain"]


async def test_every_action_is_saved_before_it_returns_or_is_announced(nursery):
    saves = Recorder()
    network = SandboxNetwork(SandboxChain(seed=3), lock_delay=0.05, persist=saves)
    await nursery.start(network.run)
    with network.subscribe() as events:
        paid = await network.pay([(ADDR_A, 1)])
        assert paid["txid"] in saves.last["mempool"]
        assert saves.saved[-1]["pending_locks"] == [[paid["txid"], False]]
        assert (await events.receive()).name == "tx"
        locked = await events.receive()  # the delayed lock, saved before it was sent
        assert locked.name == "txlock" and saves.last["locked"] == [paid["txid"]]
        assert saves.saved[-1]["pending_locks"] == []
        doomed = (await network.pay([(ADDR_B, 2)], lock=False))["txid"]
        await network.drop(doomed)
        assert doomed in saves.last["dropped"]
        (block,) = await network.mine()
        assert saves.last["blocks"][-1][0] == block
        assert (await events.receive()).name == "tx"
        assert (await events.receive()).payload == block


async def test_changes_made_while_a_save_is_written_share_the_next_save(nursery):
    saves = Recorder(delay=0.05)
    network = SandboxNetwork(SandboxChain(seed=3), lock_delay=0, persist=saves)
    await nursery.start(network.run)
    txids: list[str] = []

    async def pay(n: int) -> None:
        txids.append((await network.pay([(ADDR_A, n + 1)]))["txid"])

    async with trio.open_nursery() as payers:
        for n in range(20):
            payers.start_soon(pay, n)
    assert len(txids) == 20
    assert len(saves.saved) <= 3
    assert set(saves.last["mempool"]) == set(txids) == set(saves.last["locked"])


async def test_a_delayed_lock_not_delivered_before_a_restart_is_delivered_after_it(nursery):
    saves = Recorder()
    before = SandboxNetwork(SandboxChain(seed=3), lock_delay=3600, persist=saves)
    async with trio.open_nursery() as first:
        await first.start(before.run)
        txid = (await before.pay([(ADDR_A, 1)]))["txid"]
        first.cancel_scope.cancel()
    after = SandboxNetwork.restore(saves.saved[-1], lock_delay=0.05, persist=saves)
    assert not after.chain.is_locked(txid)
    with after.subscribe() as events:
        await nursery.start(after.run)
        with trio.fail_after(2):
            announced = await events.receive()
    assert (announced.name, announced.payload["txid"]) == ("txlock", txid)
    assert after.chain.is_locked(txid) and saves.last["locked"] == [txid]
