"""Running dashpay as a service: systemd notifications, single ownership of a wallet,
HA takeover on MySQL, SIGTERM and database outages during a payment stream."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from tests.conftest import (
    REPO,
    TEST_XPUB,
    private_mysql_server,
    start_daemon,
    wait_ready,
    write_config,
)

COIN = 100_000_000


class NotifyListener:
    """A NOTIFY_SOCKET datagram listener, as systemd provides for Type=notify."""

    def __init__(self, path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, str]] = []

    def drain(self) -> list[str]:
        while True:
            try:
                data = self.sock.recv(4096)
            except (TimeoutError, BlockingIOError):
                break
            self.messages.append((time.monotonic(), data.decode()))
        return [m for _, m in self.messages]

    def wait_for(self, needle: str, timeout: float = 20) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.drain()
            for at, message in self.messages:
                if needle in message.split("\n"):
                    return at
        raise AssertionError(f"{needle!r} never sent; got {self.messages}")


def make_testnet_config(short_tmp, database_url, sandbox_peer, name="config", **sections):
    directory = short_tmp / name
    directory.mkdir(exist_ok=True)
    return write_config(
        directory,
        database_url,
        wallet={"xpub": TEST_XPUB, "network": "testnet"},
        insight={"url": sandbox_peer.url, "reconnect_initial": "0.1s", "reconnect_max": "0.5s"},
        **sections,
    )


def test_ready_is_notified_after_bootstrap_and_stopping_on_sigterm(short_tmp, sandbox_peer):
    listener = NotifyListener(short_tmp / "notify.sock")
    config = make_testnet_config(short_tmp, f"sqlite:///{short_tmp / 'db.sqlite3'}", sandbox_peer)
    daemon = start_daemon(
        config, env={"NOTIFY_SOCKET": listener.path, "WATCHDOG_USEC": "1000000"}, wait=False
    )
    try:
        listener.wait_for("READY=1")
        messages = listener.drain()
        ready_index = next(i for i, m in enumerate(messages) if "READY=1" in m.split("\n"))
        # Progress came first, and the rescan was done before READY=1.
        assert any(m.startswith("STATUS=") for m in messages[:ready_index])
        status = daemon.cli("status", "--json").json()
        assert status["state"] == "ready" and status["last_rescan"] is not None
        listener.wait_for("WATCHDOG=1", timeout=5)
    finally:
        daemon.stop(signal.SIGTERM)
    listener.wait_for("STOPPING=1", timeout=5)
    assert daemon.proc.returncode == 0


def test_ready_is_not_notified_while_insight_is_unreachable(short_tmp):
    listener = NotifyListener(short_tmp / "notify.sock")
    config = write_config(short_tmp, f"sqlite:///{short_tmp / 'db.sqlite3'}")
    daemon = start_daemon(config, env={"NOTIFY_SOCKET": listener.path}, ready=False)
    try:
        time.sleep(1.0)
        messages = listener.drain()
        assert not any("READY=1" in m.split("\n") for m in messages), messages
        assert daemon.cli("status").code == 1
    finally:
        daemon.stop()


def test_a_second_daemon_on_the_same_sqlite_database_refuses_to_start(short_tmp):
    db = f"sqlite:///{short_tmp / 'db.sqlite3'}"
    first = start_daemon(write_config(short_tmp, db), ready=False)
    try:
        other = short_tmp / "other"
        other.mkdir()
        second = subprocess.run(
            [sys.executable, "-m", "dashpay", "--config", str(write_config(other, db)), "serve"],
            capture_output=True,
            text=True,
            timeout=30,
            cwd=REPO,
        )
        assert second.returncode == 2, second.stdout + second.stderr
        assert "already using" in second.stderr
        same_socket = subprocess.run(
            [sys.executable, "-m", "dashpay", "--config", str(first.config), "serve"],
            capture_output=True,
            text=True,
            timeout=30,
            cwd=REPO,
        )
        assert same_socket.returncode == 2
        assert first.cli("status", "--json").json()["state"] == "starting"  # untouched
    finally:
        first.stop()


def stream_payments(sandbox_peer, receivers, stop, paid, lock_flag=True):
    i = 0
    while not stop.is_set():
        r = receivers[i % len(receivers)]
        txid = sandbox_peer.pay(r["address"], 1_000_000 + i, lock=lock_flag)
        paid.setdefault(r["receiver_id"], []).append((txid, 1_000_000 + i))
        i += 1
        time.sleep(0.02)


def assert_totals(daemon, paid):
    for receiver_id, payments in paid.items():
        data = daemon.cli("receiver", "show", str(receiver_id), "--json").json()
        assert data["received_duffs"] == sum(d for _, d in payments), receiver_id
        assert sorted(p["txid"] for p in data["payments"]) == sorted(t for t, _ in payments)


def test_sigterm_during_a_payment_stream_loses_nothing(short_tmp, database_url, sandbox_peer):
    config = make_testnet_config(short_tmp, database_url, sandbox_peer)
    daemon = start_daemon(config)
    receivers = [daemon.cli("receiver", "new", "--amount", "10", "--json").json() for _ in range(3)]
    stop, paid = threading.Event(), {}
    payer = threading.Thread(target=stream_payments, args=(sandbox_peer, receivers, stop, paid))
    payer.start()
    try:
        time.sleep(1.0)
        assert daemon.stop(signal.SIGTERM) == 0
        time.sleep(0.3)
    finally:
        stop.set()
        payer.join()
    daemon = start_daemon(config)
    try:
        assert_totals(daemon, paid)
    finally:
        daemon.stop()


@pytest.mark.mysql
def test_standby_takes_over_after_the_owner_is_killed(short_tmp, mysql_database_url, sandbox_peer):
    owner = start_daemon(make_testnet_config(short_tmp, mysql_database_url, sandbox_peer, "a"))
    standby = start_daemon(
        make_testnet_config(short_tmp, mysql_database_url, sandbox_peer, "b"), ready=False
    )
    try:
        assert standby.cli("status", "--json").json()["state"] == "standby"
        created = owner.cli("receiver", "new", "--amount", "1", "--json").json()
        rejected = standby.cli("receiver", "new", "--amount", "1")
        assert rejected.code == 5 and "standby" in rejected.stderr
        owner.stop(signal.SIGKILL)
        sandbox_peer.pay(created["address"], COIN, lock=True)  # while nobody owns it
        started = time.monotonic()
        wait_ready(standby, timeout=20)
        assert time.monotonic() - started < 10
        deadline = time.monotonic() + 15
        while True:
            data = standby.cli("receiver", "show", str(created["receiver_id"]), "--json").json()
            if data["status"] == "settled":
                break
            assert time.monotonic() < deadline, data
            time.sleep(0.1)
        assert data["received_duffs"] == COIN and len(data["payments"]) == 1
    finally:
        standby.stop()
        owner.stop()


@pytest.fixture
def private_mysql():
    """The outage test stops its server: one of its own, never the shared one."""
    with private_mysql_server() as server:
        yield server


@pytest.mark.mysql
def test_database_outage_mid_stream_loses_no_payment(short_tmp, private_mysql, sandbox_peer):
    config = make_testnet_config(short_tmp, private_mysql.url, sandbox_peer)
    daemon = start_daemon(config)
    receivers = [daemon.cli("receiver", "new", "--amount", "10", "--json").json() for _ in range(3)]
    stop, paid = threading.Event(), {}
    payer = threading.Thread(target=stream_payments, args=(sandbox_peer, receivers, stop, paid))
    payer.start()
    try:
        time.sleep(0.5)
        private_mysql.run("stop", timeout=60)
        try:
            time.sleep(1.5)
            status = daemon.cli("status", "--json")
            alive = daemon.proc.poll() is None
        finally:
            private_mysql.run("start")
        time.sleep(0.5)
    finally:
        stop.set()
        payer.join()
    assert alive, daemon.log()
    assert status.code == 1 and status.json()["state"] == "degraded", status.stdout
    # Whatever was queued is retried; a rescan closes any gap (events dropped by a
    # stalled socket are never replayed by Insight).
    deadline = time.monotonic() + 30
    while daemon.cli("rescan", "--all-pending").code != 0:
        assert time.monotonic() < deadline
        time.sleep(0.5)
    try:
        assert_totals(daemon, paid)
    finally:
        daemon.stop()
