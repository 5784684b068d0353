"""The daemon against the real socket.io 2.4.1 server (what Insight runs): hostile and
malformed events are skipped with a log line, and the engine keeps recording payments."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import TEST_XPUB, require, start_daemon, write_config

NODE_DIR = Path(__file__).resolve().parent.parent / "node"
pytestmark = pytest.mark.node


def node_peer() -> subprocess.Popen:
    node = shutil.which("node")
    if node is None or not (NODE_DIR / "node_modules" / "socket.io").exists():
        if require("NODE"):
            pytest.fail("DASHPAY_REQUIRE_NODE=1 but node or tests/node/node_modules is missing")
        pytest.skip("node or tests/node/node_modules missing (run tests/run)")
    return subprocess.Popen(
        [node, str(NODE_DIR / "insight-peer.js"), "--port", "0"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        bufsize=1,
        env={**os.environ, "PEER_PING_INTERVAL": "1000", "PEER_PING_TIMEOUT": "1000"},
    )


def expect(peer: subprocess.Popen, prefix: str, timeout: float = 15) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = peer.stdout.readline().strip()
        if line.startswith(prefix):
            return line
    raise AssertionError(f"peer never printed {prefix!r}")


def send(peer: subprocess.Popen, command: dict) -> None:
    peer.stdin.write(json.dumps(command) + "\n")
    peer.stdin.flush()


def test_malformed_events_are_skipped_and_payments_still_recorded(
    short_tmp, database_url, sandbox_peer
):
    peer = node_peer()
    try:
        port = int(expect(peer, "listening").split()[1])
        # Events come from the real socket.io server; REST (which confirms what an
        # event claims before it counts) from the sandbox chain, where the good tx is.
        config = write_config(
            short_tmp,
            database_url,
            wallet={"xpub": TEST_XPUB, "network": "testnet"},
            insight={"url": sandbox_peer.url, "socket_url": f"http://127.0.0.1:{port}"},
        )
        daemon = start_daemon(config)
        try:
            expect(peer, "subscribed")
            created = daemon.cli("receiver", "new", "--amount", "1", "--json").json()
            address = created["address"]
            txid = sandbox_peer.pay(address, 100_000_000, lock=False, silent=True)
            hostile = [
                {"emit": "tx", "payload": "not an object"},
                {"emit": "tx", "payload": {"txid": "zz", "vout": [{address: 1}]}},
                {"emit": "tx", "payload": {"txid": txid, "vout": [{address: -5}]}},
                {"emit": "tx", "payload": {"txid": txid, "vout": [{address: 0.5}]}},
                {"emit": "tx", "payload": {"txid": txid, "vout": {"not": "a list"}}},
                {"emit": "txlock", "payload": {"txid": txid, "vout": [{address: 10**20}]}},
                {"emit": "block", "payload": {"hash": "not a string"}},
                {"raw": '42["tx",{"txid":'},
                {"raw": "4garbage"},
            ]
            for command in hostile:
                send(peer, command)
            good = {"txid": txid, "valueOut": 1.0, "vout": [{address: 100_000_000}], "isRBF": False}
            send(peer, {"emit": "tx", "payload": {**good, "txlock": False}})
            send(peer, {"emit": "txlock", "payload": {**good, "txlock": True}})
            deadline = time.monotonic() + 15
            while True:
                shown = daemon.cli("receiver", "show", str(created["receiver_id"]), "--json").json()
                if shown["status"] == "settled":
                    break
                assert time.monotonic() < deadline, (shown, daemon.log())
                time.sleep(0.1)
            assert shown["received_duffs"] == 100_000_000
            assert [p["txid"] for p in shown["payments"]] == [txid]
            status = daemon.cli("status", "--json").json()
            assert status["insight"]["events_rejected"] >= 6
            assert daemon.proc.poll() is None
            log = daemon.log()
            assert "Traceback" not in log
        finally:
            daemon.stop()
    finally:
        peer.kill()
        peer.wait()
