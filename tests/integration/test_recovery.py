"""How fast a real `dashpay serve` recovers from an Insight restart, from repeated kicks
and from a database that failed and works again.

Targets (README "Health and readiness"): the socket is subscribed again within about a
second of Insight listening again, and `status` is `ready` within about a second of the
database working again. The bounds asserted are 3 s, margin for a loaded 2-core
machine; before the fix they took 4-38 s (Insight) and 60 s (database). Every wait
polls until a deadline; nothing sleeps a fixed time and hopes.

The daemon runs with the default reconnect settings (1 s initial, 1 min cap): the
point is what operators get.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable

from tests.conftest import TEST_XPUB, SandboxPeer, start_daemon, write_config

BOUND = 3.0  # seconds; the target is 2 s (about 1 s expected)
COIN = 100_000_000


def subscribers(peer: SandboxPeer) -> int:
    count = peer._trio.from_thread.run_sync(
        lambda: peer.network.subscriber_count, trio_token=peer.token
    )
    return int(count)


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``condition`` until it holds; the seconds it took."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what}: not within {timeout}s")
        time.sleep(0.02)
    return time.monotonic() - start


def watching(short_tmp, database_url, peer: SandboxPeer):
    config = write_config(
        short_tmp,
        database_url,
        wallet={"xpub": TEST_XPUB, "network": "testnet"},
        insight={"url": peer.url},
    )
    return start_daemon(config)


def test_the_socket_is_back_soon_after_an_insight_restart_and_after_each_kick(
    short_tmp, sandbox_peer
):
    daemon = watching(short_tmp, f"sqlite:///{short_tmp / 'db.sqlite3'}", sandbox_peer)
    try:
        wait_for(lambda: subscribers(sandbox_peer) == 1, 10, "first subscription")
        # Insight down for 10 s (the port refuses), then listening again on the same port.
        sandbox_peer.server_down()
        wait_for(lambda: subscribers(sandbox_peer) == 0, 5, "link dropped")
        down_until = time.monotonic() + 10
        while time.monotonic() < down_until:
            time.sleep(0.1)
        sandbox_peer.server_up()
        took = wait_for(lambda: subscribers(sandbox_peer) == 1, 60, "resubscribed")
        assert took < BOUND, f"resubscribed {took:.2f}s after Insight came back"
        # Kicks 3 s apart (the server drops every connection and listens at once), the
        # first 3 s after that restart.
        delays = []
        kicked_at = time.monotonic() - took
        for _ in range(3):  # before the fix the delays grew: 8, 22, 37 s
            while time.monotonic() < kicked_at + 3:
                time.sleep(0.05)
            kicked_at = time.monotonic()
            sandbox_peer.server_down()
            sandbox_peer.server_up()
            delays.append(wait_for(lambda: subscribers(sandbox_peer) == 1, 60, "after a kick"))
        assert max(delays) < BOUND, f"reconnect delays after kicks 3 s apart: {delays}"
        status = daemon.cli("status", "--json")
        assert status.code == 0 and status.json()["insight"]["reconnects"] == 4, status.stdout
    finally:
        daemon.stop()


def test_status_is_ready_soon_after_the_database_works_again(short_tmp, sandbox_peer):
    path = short_tmp / "db.sqlite3"
    daemon = watching(short_tmp, f"sqlite:///{path}", sandbox_peer)
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        receiver = daemon.cli("receiver", "new", "--amount", "1", "--json").json()
        # Another process holds SQLite's write lock: the payment's batch cannot commit.
        holder.execute("BEGIN EXCLUSIVE")
        sandbox_peer.pay(receiver["address"], COIN, lock=True)
        failing = {}

        def degraded() -> bool:
            status = daemon.cli("status", "--json")
            failing["last"] = status
            return status.code == 1 and any(
                "database error" in reason for reason in status.json()["reasons"]
            )

        wait_for(degraded, 30, "degraded by the locked database")
        # Hold on past several failed attempts (each waits SQLite's 5 s busy timeout).
        held_until = time.monotonic() + 6
        while time.monotonic() < held_until:
            time.sleep(0.1)
        holder.execute("COMMIT")
        took = wait_for(lambda: daemon.cli("status").code == 0, 30, "ready again")
        assert took < BOUND, f"ready {took:.2f}s after the database works again"
        shown = daemon.cli("receiver", "show", str(receiver["receiver_id"]), "--json").json()
        assert shown["status"] == "settled" and shown["received_duffs"] == COIN, shown
        engine = daemon.cli("status", "--json").json()["engine"]
        assert engine["db_errors"] >= 1 and engine["last_db_ok_at"] >= engine["last_db_error_at"]
    finally:
        holder.close()
        daemon.stop()
