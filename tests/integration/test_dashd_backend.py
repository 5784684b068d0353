"""What only the dashd backend has, against ``tests/dashd_peer.py`` (a real pyzmq PUB
socket, real serialized transactions, a JSON-RPC HTTP server) and a real daemon:
a ZMQ sequence gap or restart makes a rescan, a dashd restart (new cookie, counters at
0) is followed, the address index off falls back to ``scantxoutset``, wrong
credentials and a node on another network are refused with a clear reason, and the
real fixture transactions (a special tx, a P2SH output) are read without a rejection.

One peer and one daemon for the scenarios that share them; the refusals start their
own short-lived daemon each.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import TEST_XPUB, start_daemon, write_config
from tests.dashd_peer import DashdPeer

COIN = 100_000_000
FAST = {"reconnect_initial": "0.1s", "reconnect_max": "0.5s"}


class Node:
    def __init__(self, peer: DashdPeer, directory: Path, **dashd: object) -> None:
        self.peer = peer
        sections = peer.sections(**FAST)
        sections["dashd"].update(dashd)
        for key in [k for k, v in sections["dashd"].items() if v is None]:
            del sections["dashd"][key]
        self.config = write_config(
            directory,
            f"sqlite:///{directory / 'dashpay.sqlite3'}",
            wallet={"xpub": TEST_XPUB, "network": "testnet"},
            receivers={"drop_after": "2s"},
            **sections,
        )

    def start(self, *, ready: bool = True) -> None:
        self.daemon = start_daemon(self.config, ready=ready)

    def cli(self, *args: str) -> dict:
        result = self.daemon.cli(*args, "--json")
        assert result.code == 0, result.stderr
        return result.json()

    def status(self) -> dict:
        return self.daemon.cli("status", "--json").json()  # exits 1 while not ready

    def new(self, amount: str = "1") -> dict:
        return self.cli("receiver", "new", "--amount", amount)

    def wait(self, receiver: dict, status: str, timeout: float = 15.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            data = self.cli("receiver", "show", str(receiver["receiver_id"]))
            if data["status"] == status:
                return data
            assert time.monotonic() < deadline, (data, self.log_tail())
            time.sleep(0.1)

    def log_tail(self) -> str:
        lines = [x for x in self.daemon.log().splitlines() if "dashd" in x or "rescan" in x]
        return "\n".join(lines[-30:])

    def wait_log(self, text: str, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.daemon.log():
            assert time.monotonic() < deadline, f"{text!r} not logged:\n{self.log_tail()}"
            time.sleep(0.1)


@contextlib.contextmanager
def node_with(peer_options: dict | None = None, **dashd: object) -> Iterator[Node]:
    tmp = Path(tempfile.mkdtemp(prefix="dp-", dir="/tmp"))
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, tmp, ignore_errors=True)
        peer = DashdPeer(**(peer_options or {}))
        stack.callback(peer.close)
        node = Node(peer, tmp, **dashd)
        yield node
        if hasattr(node, "daemon"):
            node.daemon.stop()


@pytest.fixture(scope="module")
def node() -> Iterator[Node]:
    with node_with() as node:
        node.start()
        yield node


def test_a_dropped_rawtx_is_found_by_the_rescan_its_sequence_gap_starts(node):
    first, missed, later = node.new(), node.new(), node.new()
    node.peer.pay(first["address"], COIN, lock=False)  # the first rawtx sets the baseline
    node.wait(first, "paid")
    node.peer.pay(missed["address"], COIN, lock=False, silent=True)  # seq used, not sent
    node.peer.pay(later["address"], COIN, lock=False)  # its sequence shows the gap
    assert node.wait(later, "paid")["received_duffs"] == COIN
    assert node.wait(missed, "paid")["received_duffs"] == COIN
    node.wait_log("1 rawtx message(s) missed: rescanning")


def test_counters_that_start_again_mean_a_restart_and_a_rescan(node):
    # Messages seen first, so the counter is past where a restarted one goes on: after
    # rawtx 0..2 the next is 3, and 1 (0 unsent) can only be a counter that started
    # again. (A daemon that saw none takes whatever comes first as its start, as it
    # must after a connect.)
    for seen in (node.new(), node.new(), node.new()):
        node.peer.pay(seen["address"], COIN, lock=False)
        node.wait(seen, "paid")
    missed, later = node.new(), node.new()
    node.peer.reset_sequence()  # dashd restarted faster than the link noticed
    node.peer.pay(missed["address"], COIN, lock=False, silent=True)
    node.peer.pay(later["address"], COIN, lock=False)
    assert node.wait(missed, "paid")["received_duffs"] == COIN
    node.wait_log("sequence restarted")


def test_a_dashd_restart_is_followed_new_cookie_and_payments_made_meanwhile(node):
    r = node.new()
    refused_before = node.peer.unauthorized
    node.peer.server_down()
    node.peer.pay(r["address"], 40_000_000, lock=False)  # published to nobody
    node.peer.sequence.clear()
    node.peer._write_cookie()
    node.peer.server_up()
    assert node.wait(r, "partial")["received_duffs"] == 40_000_000
    assert node.peer.unauthorized > refused_before  # the old cookie, then the new one
    status = node.cli("status")
    assert status["state"] == "ready" and status["chain"]["reconnects"] >= 1
    txid = node.peer.pay(r["address"], 60_000_000, lock=True)  # ZMQ flows again
    paid = node.wait(r, "paid")
    assert txid in [p["txid"] for p in paid["payments"]]


def test_the_real_fixture_transactions_are_read_special_tx_and_p2sh_alike(node):
    before = node.cli("status")["chain"]
    node.peer.publish_fixtures()
    deadline = time.monotonic() + 10
    while node.cli("status")["chain"]["events_received"] < before["events_received"] + 3:
        assert time.monotonic() < deadline, node.daemon.log()[-3000:]
        time.sleep(0.1)
    assert node.cli("status")["chain"]["events_rejected"] == before["events_rejected"]


@pytest.mark.parametrize("legacy", [False, True], ids=["core22-32600", "older-5"])
def test_without_the_address_index_rescans_use_scantxoutset_and_say_what_they_miss(legacy):
    with node_with() as node:
        node.peer.address_index = False
        node.peer.legacy_errors = legacy
        node.start()
        r = node.new()
        node.daemon.stop()
        node.peer.pay(r["address"], COIN, lock=False, silent=True)
        node.peer.mine(1)  # scantxoutset reads the UTXO set: mined outputs only
        node.start()
        paid = node.wait(r, "settled")
        assert paid["received_duffs"] == COIN
        assert "scantxoutset" in node.peer.methods
        log = node.daemon.log()
        assert log.count("dashd has no address index") == 1
        assert "sees only UNSPENT outputs" in log and "mempool" in log
        status = node.status()
        assert status["chain"]["address_index"] is False
        assert any("dashd has no address index" in w for w in status["warnings"])
        node.peer.address_index = True  # reindexed: asked again at the reconnect
        node.peer.restart()
        node.wait_log("dashd has its address index now")
        status = node.status()
        assert status["chain"]["address_index"] is True
        assert not any("address index" in w for w in status["warnings"])


def test_wrong_rpc_credentials_keep_the_daemon_unready_and_say_so(tmp_path):
    (tmp_path / "pw").write_text("not-the-password\n")
    with node_with(
        rpc_cookie_file=None, rpc_user="shop", rpc_password_file=str(tmp_path / "pw")
    ) as node:
        node.start(ready=False)
        node.wait_log("the RPC credentials were refused (HTTP 401)")
        status = node.status()
        assert status["state"] != "ready" and status["chain"]["state"] != "connected"
        assert any("credentials were refused" in reason for reason in status["reasons"])


def test_an_rpc_user_with_the_right_password_is_served(tmp_path):
    (tmp_path / "pw").write_text("right-password\n")
    with node_with(
        rpc_cookie_file=None, rpc_user="shop", rpc_password_file=str(tmp_path / "pw")
    ) as node:
        node.peer.users = {"shop": "right-password"}
        node.start()
        r = node.new()
        node.peer.pay(r["address"], COIN, lock=False)
        assert node.wait(r, "paid")["received_duffs"] == COIN


def test_a_node_on_another_network_is_refused_with_the_fix():
    with node_with() as node:
        node.peer.network_name = "mainnet"
        node.start(ready=False)
        node.wait_log("is on mainnet, the wallet on testnet")
        status = node.status()
        assert status["state"] != "ready" and status["chain"]["state"] != "connected"
        assert any("point [dashd] rpc_url" in reason for reason in status["reasons"])
        r = node.new()
        node.peer.pay(r["address"], COIN, lock=False)  # a wrong-network node is not read
        time.sleep(0.5)
        assert node.cli("receiver", "show", str(r["receiver_id"]))["received_duffs"] == 0
