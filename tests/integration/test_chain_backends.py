"""The payment scenarios against every chain backend, from one suite: a real daemon
subprocess watching the same sandbox chain through Insight (socket.io + REST, the
sandbox's server) or through Blockbook (its websocket API, ``tests/blockbook_peer.py``),
or a dashd (real ZMQ PUB socket and JSON-RPC server, ``tests/dashd_peer.py``, with its
own chain of real serialized transactions).

One peer and one daemon per backend for the module (SQLite; MariaDB is covered by
``test_payments_e2e.py`` for the engine, which is the same whichever backend feeds it);
each test uses its own receivers, so they do not see each other's payments.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.blockbook_peer import BlockbookPeer
from tests.conftest import TEST_XPUB, SandboxPeer, start_daemon, write_config
from tests.dashd_peer import DashdPeer

COIN = 100_000_000
BACKENDS = {"insight": SandboxPeer, "blockbook": BlockbookPeer, "dashd": DashdPeer}
# Blockbook pushes no locks: the daemon polls every 5 s, the target is 15 s.
LOCK_SETTLES_WITHIN = 15.0


class Harness:
    def __init__(self, backend: str, peer: SandboxPeer, directory: Path) -> None:
        self.backend = backend
        self.peer = peer
        sections: dict[str, dict[str, object]] = {
            "wallet": {"xpub": TEST_XPUB, "network": "testnet"},
            "receivers": {"drop_after": "2s"},
            "chain": {"backend": backend},
        }
        fast = {"reconnect_initial": "0.1s", "reconnect_max": "0.5s"}
        if backend == "insight":
            sections["insight"] = {"url": peer.url, **fast}
        elif backend == "dashd":
            sections.update(peer.sections(**fast))
        else:
            sections["blockbook"] = {"url": peer.url, **fast}
        url = f"sqlite:///{directory / 'dashpay.sqlite3'}"
        self.config = write_config(directory, url, **sections)
        self.daemon = start_daemon(self.config)

    def restart(self) -> None:
        self.daemon = start_daemon(self.config)

    def new(self, amount: str = "1") -> dict:
        result = self.daemon.cli("receiver", "new", "--amount", amount, "--json")
        assert result.code == 0, result.stderr
        return result.json()

    def show(self, receiver_id: int) -> dict:
        result = self.daemon.cli("receiver", "show", str(receiver_id), "--json")
        assert result.code == 0, result.stderr
        return result.json()

    def wait(self, receiver_id: int, predicate, timeout: float = 15.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            data = self.show(receiver_id)
            if predicate(data):
                return data
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"[{self.backend}] timed out; last: {json.dumps(data, indent=1)}\n"
                    + self.daemon.log()[-4000:]
                )
            time.sleep(0.1)

    def status(self) -> dict:
        return self.daemon.cli("status", "--json").json()


@pytest.fixture(scope="module", params=list(BACKENDS))
def chain(request) -> Iterator[Harness]:
    tmp = Path(tempfile.mkdtemp(prefix="dp-", dir="/tmp"))
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, tmp, ignore_errors=True)
        peer = BACKENDS[request.param]()
        stack.callback(peer.close)
        harness = Harness(request.param, peer, tmp)
        stack.callback(lambda: harness.daemon.stop())
        yield harness


def subscribed(chain: Harness, address: str) -> None:
    """Blockbook learns a new address with a (batched) resubscription: wait for it."""
    if chain.backend != "blockbook":
        return
    deadline = time.monotonic() + 5
    while not any(address in c.addresses for c in chain.peer.server.clients):
        assert time.monotonic() < deadline, "the new address was never subscribed"
        time.sleep(0.02)


def paid_to(chain: Harness, amount: str = "1") -> dict:
    receiver = chain.new(amount)
    subscribed(chain, receiver["address"])
    return receiver


def test_status_names_the_backend_its_link_and_tip(chain):
    status = chain.status()
    assert status["state"] == "ready", status["reasons"]
    view = status["chain"]
    assert view["backend"] == chain.backend and view["state"] == "connected"
    assert view["url"] == chain.peer.url
    if chain.backend == "insight":
        assert status["insight"]["state"] == "connected"  # the old fields stay
    chain.peer.mine(1)
    deadline = time.monotonic() + 10
    while chain.status()["chain"]["tip_height"] != chain.peer.network.chain.height:
        assert time.monotonic() < deadline, chain.status()["chain"]
        time.sleep(0.1)
    assert chain.status()["chain"]["last_event_age_seconds"] is not None
    shown = chain.daemon.cli("status").stdout
    assert f"{chain.backend} connected" in shown and "tip height" in shown


def test_partial_then_full_then_settled_by_a_block(chain):
    r = paid_to(chain)
    chain.peer.pay(r["address"], 40_000_000, lock=False)
    chain.wait(r["receiver_id"], lambda d: d["status"] == "partial")
    chain.peer.pay(r["address"], 60_000_000, lock=False)
    paid = chain.wait(r["receiver_id"], lambda d: d["status"] == "paid")
    assert paid["received_duffs"] == COIN and len(paid["payments"]) == 2
    chain.peer.mine(1)
    settled = chain.wait(r["receiver_id"], lambda d: d["status"] == "settled")
    assert all(p["confirmations"] >= 1 for p in settled["payments"])


def test_an_instant_lock_settles_and_a_duplicate_is_counted_once(chain):
    r = paid_to(chain, "0.5")
    started = time.monotonic()
    txid = chain.peer.pay(r["address"], 50_000_000, lock=True)
    settled = chain.wait(
        r["receiver_id"], lambda d: d["status"] == "settled", timeout=LOCK_SETTLES_WITHIN
    )
    assert time.monotonic() - started < LOCK_SETTLES_WITHIN
    assert [p["txid"] for p in settled["payments"]] == [txid]
    assert settled["payments"][0]["instant_locked"] is True
    again = chain.daemon.cli("rescan", str(r["receiver_id"]), "--json")
    assert again.code == 0, again.stderr
    assert again.json()["payments_found"] == 1 and again.json()["payments_new"] == 0
    assert chain.show(r["receiver_id"])["received_duffs"] == 50_000_000


def test_one_tx_paying_three_receivers_and_one_of_them_twice(chain):
    a, b, c = (chain.new("1") for _ in range(3))
    subscribed(chain, c["address"])
    chain.peer.pay_many(
        [(a["address"], 30_000_000), (b["address"], COIN), (a["address"], 70_000_000),
         (c["address"], 1)],
        lock=False,
    )  # fmt: skip
    assert chain.wait(a["receiver_id"], lambda d: d["status"] == "paid")["received_duffs"] == COIN
    assert chain.wait(b["receiver_id"], lambda d: d["status"] == "paid")["received_duffs"] == COIN
    assert chain.wait(c["receiver_id"], lambda d: d["status"] == "partial")["received_duffs"] == 1


def test_a_payment_while_the_link_is_down_is_found_after_the_reconnect(chain):
    r = paid_to(chain)
    chain.peer.server_down()
    chain.peer.pay(r["address"], COIN, lock=False)
    time.sleep(0.3)
    chain.peer.server_up()
    assert chain.wait(r["receiver_id"], lambda d: d["status"] == "paid")["received_duffs"] == COIN


def test_a_forged_notification_credits_nothing_and_hostile_messages_are_dropped(chain):
    r = paid_to(chain)
    fake = "ab" * 32
    chain.peer.forge("tx", fake, {r["address"]: COIN})
    if chain.backend == "blockbook":
        chain.peer.send_raw(
            "not json",
            '{"id": "1", "data": {"address": 5, "tx": {}}}',
            '{"id": "999999", "data": {}}',
            json.dumps({"data": {"subscribed": True}}),
            "[" * 10_000,
        )
    if chain.backend == "dashd":
        chain.peer.send_raw(
            [b"rawtx", b"\x00" * 10, b"\x00\x00\x00\x00"],  # not a transaction
            [b"rawtx", b"\x02\x00"],  # two frames
            [b"hashblock", b"\x11" * 31, (0).to_bytes(4, "little")],  # a short hash
            [b"rawtx", b"\x02" * 100, b"\x01\x00"],  # a 2-byte sequence
            [b"rawtx", b"\xff" * 300_000, (7).to_bytes(4, "little")],  # garbage, large
        )
    time.sleep(1.0)
    assert chain.show(r["receiver_id"])["received_duffs"] == 0
    status = chain.status()
    assert status["state"] == "ready"
    if chain.backend in ("blockbook", "dashd"):
        assert status["chain"]["events_rejected"] >= 4
    txid = chain.peer.pay(r["address"], COIN, lock=False)  # the link still works
    data = chain.wait(r["receiver_id"], lambda d: d["status"] == "paid")
    assert [p["txid"] for p in data["payments"]] == [txid]


def test_a_payment_made_the_moment_the_receiver_exists_is_not_missed(chain):
    """With Blockbook the address is subscribed ~0.1 s after its creation; a payment
    inside that gap is pushed by nobody and is found by the catch-up read."""
    if chain.backend == "blockbook":
        chain.peer.hold_subscriptions()  # the gap, made as long as the test needs
    try:
        r = chain.new("1")
        chain.peer.pay(r["address"], COIN, lock=False)  # before the subscription
    finally:
        if chain.backend == "blockbook":
            chain.peer.release_subscriptions()
    assert chain.wait(r["receiver_id"], lambda d: d["status"] == "paid")["received_duffs"] == COIN


def test_payments_made_while_the_daemon_was_stopped_are_found_at_start(chain):
    # Last in the module: the daemon it starts again is killed after it (conftest's
    # _no_leaked_daemons), so no later test could use it.
    r = paid_to(chain)
    chain.daemon.stop()
    chain.peer.pay(r["address"], 30_000_000, lock=True)
    chain.peer.pay(r["address"], 70_000_000, lock=False)
    chain.restart()
    data = chain.wait(r["receiver_id"], lambda d: d["status"] in ("paid", "settled"))
    assert data["received_duffs"] == COIN and len(data["payments"]) == 2
