"""``Repository.try_transaction``: the engine's small units of work on the calling
thread when that cannot block (SQLite in WAL mode, connection free, no other writer),
never on a network server; and SQLite's checkpoints moved off the committing thread
once that path is in use (repository/sqlite.py)."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest

from dashpay.domain.model import NewReceiver
from dashpay.repository import sqlite as sqlite_module
from tests.contract.conftest import fake_address

WALLET = "t" * 16


def _set(name: str, value: str):
    def unit(tx) -> str:
        tx._repo._execute(
            tx._cur, "INSERT INTO settings (name, value) VALUES (?, ?)", (name, value)
        )
        return threading.current_thread().name

    return unit


def test_a_unit_runs_here_on_sqlite_and_never_on_mysql(store, repo):
    ran, where = repo.try_transaction(_set("a", "1"))
    if store.backend == "mysql":
        assert (ran, where) == (False, None)  # every statement would block on the network
        assert repo.get_setting("a") is None
        return
    assert ran and where == threading.current_thread().name
    assert repo.get_setting("a") == "1"  # committed


def test_a_failing_unit_rolls_back_and_raises(store, repo):
    if store.backend != "sqlite":
        pytest.skip("MySQL never runs a unit here")

    def unit(tx):
        _set("b", "1")(tx)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        repo.try_transaction(unit)
    assert repo.get_setting("b") is None
    assert repo.try_transaction(_set("b", "2"))[0]  # the connection is usable again
    assert repo.get_setting("b") == "2"


def test_another_writer_makes_it_decline_at_once_without_running_the_unit(store, repo):
    if store.backend != "sqlite":
        pytest.skip("SQLite's write lock")
    other = sqlite3.connect(store.sqlite_path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        started = time.monotonic()
        assert repo.try_transaction(_set("c", "1")) == (False, None)
        assert time.monotonic() - started < 1.0  # no busy wait (the timeout is 5 s)
        other.execute("ROLLBACK")
    finally:
        other.close()
    assert repo.get_setting("c") is None
    assert repo.try_transaction(_set("c", "2"))[0]  # the busy timeout is back for others
    assert repo.get_setting("c") == "2"


def test_a_connection_busy_in_a_worker_thread_makes_it_decline(store, repo):
    if store.backend != "sqlite":
        pytest.skip("SQLite's shared connection")
    inside, go_on = threading.Event(), threading.Event()

    def slow(tx) -> None:
        inside.set()
        go_on.wait(10)

    worker = threading.Thread(target=repo.transaction, args=(slow,))
    worker.start()
    try:
        assert inside.wait(10)
        assert repo.try_transaction(_set("d", "1")) == (False, None)
    finally:
        go_on.set()
        worker.join(10)
    assert repo.get_setting("d") is None


def test_the_checkpointer_copies_a_grown_wal_back(store, repo, monkeypatch):
    """Once units run here SQLite's own checkpoint is off; the checkpointer thread
    copies the WAL into the database file after commits."""
    if store.backend != "sqlite":
        pytest.skip("SQLite's WAL")
    monkeypatch.setattr(sqlite_module, "CHECKPOINT_INTERVAL_SECONDS", 0.05)
    assert repo.try_transaction(_set("e", "0"))[0]
    [(autocheckpoint,)] = repo._read(
        lambda cur: cur.execute("PRAGMA wal_autocheckpoint").fetchall()
    )
    assert autocheckpoint == 0
    size_before = store.sqlite_path.stat().st_size
    repo.ensure_counter(WALLET, 0)
    for batch in range(8):  # ~32 receivers per transaction, each row a few hundred bytes
        new = [
            NewReceiver(WALLET, 0, 1, 1, idempotency_key=f"k{batch}-{i}", callback_url="x" * 900)
            for i in range(32)
        ]
        repo.create_receivers(new, fake_address(WALLET, 0))
    deadline = time.monotonic() + 10
    while store.sqlite_path.stat().st_size <= size_before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert store.sqlite_path.stat().st_size > size_before  # pages copied back
