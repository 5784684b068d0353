"""Payments end to end: a real daemon subprocess watching the sandbox Insight peer over
the real protocol (socket.io EIO3 + REST), both database backends."""

from __future__ import annotations

import json
import time

from dashpay.config.database import parse_database_url
from dashpay.repository import open_repository
from tests.conftest import WATCHING_DROP_AFTER, start_daemon

COIN = 100_000_000


def new_receiver(daemon, amount: str = "1", *extra: str) -> dict:
    result = daemon.cli("receiver", "new", "--amount", amount, "--json", *extra)
    assert result.code == 0, result.stderr
    return result.json()


def show(daemon, receiver_id: int) -> dict:
    result = daemon.cli("receiver", "show", str(receiver_id), "--json")
    assert result.code == 0, result.stderr
    return result.json()


def wait_for(daemon, receiver_id: int, predicate, timeout: float = 15.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        data = show(daemon, receiver_id)
        if predicate(data):
            return data
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out; last state: {json.dumps(data, indent=1)}\n{daemon.log()}"
            )
        time.sleep(0.1)


def outbox(database_url: str, receiver_id: int) -> list[tuple[str, dict]]:
    repo = open_repository(parse_database_url(database_url))
    try:
        return [(e.event, json.loads(e.payload)) for e in repo.list_outbox(receiver_id=receiver_id)]
    finally:
        repo.close()


def test_partial_then_full_payment_then_settled_with_events_in_order(
    watching_daemon, sandbox_peer, database_url
):
    r = new_receiver(watching_daemon, "1")
    sandbox_peer.pay(r["address"], 40_000_000, lock=False)
    wait_for(watching_daemon, r["receiver_id"], lambda d: d["status"] == "partial")
    txid = sandbox_peer.pay(r["address"], 60_000_000, lock=False)
    paid = wait_for(watching_daemon, r["receiver_id"], lambda d: d["status"] == "paid")
    assert paid["received_duffs"] == COIN and len(paid["payments"]) == 2
    sandbox_peer.mine(1)  # confirmations come from REST after the block event
    settled = wait_for(watching_daemon, r["receiver_id"], lambda d: d["status"] == "settled")
    assert all(p["confirmations"] >= 1 for p in settled["payments"])
    events = outbox(database_url, r["receiver_id"])
    assert [name for name, _ in events] == ["receiver.partial", "receiver.paid", "receiver.settled"]
    assert events[1][1]["txid"] == txid
    assert events[2][1]["receiver"]["status"] == "settled"


def test_instant_lock_settles_and_the_same_tx_is_counted_once(
    watching_daemon, sandbox_peer, database_url
):
    r = new_receiver(watching_daemon, "0.5")
    txid = sandbox_peer.pay(r["address"], 50_000_000, lock=True)  # tx, then txlock
    settled = wait_for(watching_daemon, r["receiver_id"], lambda d: d["status"] == "settled")
    assert settled["received_duffs"] == 50_000_000
    assert [p["txid"] for p in settled["payments"]] == [txid]
    # A rescan sees the same tx again; still one payment, no new event.
    rescan = watching_daemon.cli("rescan", str(r["receiver_id"]), "--json")
    assert rescan.code == 0, rescan.stderr
    assert rescan.json()["payments_found"] == 1 and rescan.json()["payments_new"] == 0
    assert show(watching_daemon, r["receiver_id"])["received_duffs"] == 50_000_000
    names = [n for n, _ in outbox(database_url, r["receiver_id"])]
    assert names == ["receiver.paid", "receiver.settled"]


def test_tx_paying_three_receivers_and_twice_one_address(watching_daemon, sandbox_peer):
    a, b, c = (new_receiver(watching_daemon, "1") for _ in range(3))
    sandbox_peer.pay_many(
        [
            (a["address"], 30_000_000),
            (b["address"], COIN),
            (a["address"], 70_000_000),
            (c["address"], 1),
        ],
        lock=True,
    )
    assert (
        wait_for(watching_daemon, a["receiver_id"], lambda d: d["status"] == "settled")[
            "received_duffs"
        ]
        == COIN
    )
    assert (
        wait_for(watching_daemon, b["receiver_id"], lambda d: d["status"] == "settled")[
            "received_duffs"
        ]
        == COIN
    )
    assert (
        wait_for(watching_daemon, c["receiver_id"], lambda d: d["status"] == "partial")[
            "received_duffs"
        ]
        == 1
    )


def test_silent_payment_is_found_by_a_rescan(watching_daemon, sandbox_peer):
    r = new_receiver(watching_daemon, "1")
    sandbox_peer.pay(r["address"], COIN, silent=True, lock=False)
    time.sleep(0.5)
    assert show(watching_daemon, r["receiver_id"])["status"] == "pending"
    result = watching_daemon.cli("rescan", "--all-pending", "--json")
    assert result.code == 0, result.stderr
    assert result.json()["payments_new"] == 1
    assert show(watching_daemon, r["receiver_id"])["status"] == "paid"


def test_payment_while_stopped_is_found_at_bootstrap(watching_daemon, sandbox_peer):
    r = new_receiver(watching_daemon, "1")
    watching_daemon.stop()
    sandbox_peer.pay(r["address"], COIN, lock=True)
    again = start_daemon(watching_daemon.config)
    try:
        data = wait_for(again, r["receiver_id"], lambda d: d["status"] in ("paid", "settled"))
        assert data["received_duffs"] == COIN and len(data["payments"]) == 1
    finally:
        again.stop()


def test_payment_while_the_socket_is_down_is_found_after_reconnect(watching_daemon, sandbox_peer):
    r = new_receiver(watching_daemon, "1")
    sandbox_peer.server_down()
    sandbox_peer.pay(r["address"], COIN, lock=False)
    time.sleep(0.3)
    sandbox_peer.server_up()
    data = wait_for(watching_daemon, r["receiver_id"], lambda d: d["status"] == "paid")
    assert data["received_duffs"] == COIN


def test_a_vanished_unlocked_payment_is_flagged_then_dropped_after_drop_after_by_itself(
    watching_daemon, sandbox_peer, database_url
):
    r = new_receiver(watching_daemon, "1")
    txid = sandbox_peer.pay(r["address"], COIN, lock=False)
    wait_for(watching_daemon, r["receiver_id"], lambda d: d["status"] == "paid")
    sandbox_peer.drop(txid)
    dropped_at = time.monotonic()
    # No manual rescan: the daemon's re-check timer notices. First it flags...
    flagged = wait_for(
        watching_daemon, r["receiver_id"], lambda d: d["payments"][0]["missing_from_source"]
    )
    if time.monotonic() - dropped_at < WATCHING_DROP_AFTER - 0.5:
        assert flagged["status"] == "paid" and flagged["received_duffs"] == COIN
        assert flagged["payments"][0]["dropped"] is False
    # ...and only once it stayed absent for drop_after is it dropped.
    data = wait_for(watching_daemon, r["receiver_id"], lambda d: d["status"] == "pending")
    assert time.monotonic() - dropped_at >= WATCHING_DROP_AFTER
    assert data["received_duffs"] == 0 and data["payments"][0]["dropped"] is True
    names = [n for n, _ in outbox(database_url, r["receiver_id"])]
    assert names == ["receiver.paid", "receiver.payment_dropped"]


def test_a_settled_locked_payment_is_never_uncredited_when_insight_forgets_it(
    watching_daemon, sandbox_peer, database_url
):
    r = new_receiver(watching_daemon, "1")
    sandbox_peer.pay(r["address"], COIN, lock=True)
    wait_for(watching_daemon, r["receiver_id"], lambda d: d["status"] == "settled")
    sandbox_peer.restart_empty()  # Insight restarts and has lost its mempool
    # The reconnect's rescan or this one (whichever runs first) flags it.
    result = watching_daemon.cli("rescan", str(r["receiver_id"]), "--json")
    assert result.code == 0, result.stderr
    assert result.json()["payments_dropped"] == 0
    data = wait_for(
        watching_daemon, r["receiver_id"], lambda d: d["payments"][0]["missing_from_source"]
    )
    assert data["status"] == "settled" and data["received_duffs"] == COIN
    assert data["payments"][0]["missing_from_source"] is True
    assert data["payments"][0]["dropped"] is False
    status = watching_daemon.cli("status", "--json").json()
    assert status["engine"]["payments_missing_from_source"] == 1
    assert any("missing from Insight" in w for w in status["warnings"])
    time.sleep(WATCHING_DROP_AFTER + 0.5)  # long past drop_after: still never dropped
    assert watching_daemon.cli("rescan", str(r["receiver_id"])).code == 0
    data = show(watching_daemon, r["receiver_id"])
    assert data["status"] == "settled" and data["received_duffs"] == COIN
    assert [n for n, _ in outbox(database_url, r["receiver_id"])] == [
        "receiver.paid",
        "receiver.settled",
    ]
    assert "payment missing from Insight" in watching_daemon.log()


def test_an_insight_that_lost_many_payments_at_once_holds_the_rescan(
    watching_daemon, sandbox_peer, database_url
):
    receivers = [new_receiver(watching_daemon, "1") for _ in range(12)]
    for r in receivers:
        sandbox_peer.pay(r["address"], COIN, lock=False)
    for r in receivers:
        wait_for(watching_daemon, r["receiver_id"], lambda d: d["status"] == "paid")
    sandbox_peer.restart_empty()
    ids = [str(r["receiver_id"]) for r in receivers]
    result = watching_daemon.cli("rescan", *ids, "--json")
    assert result.code == 0, result.stderr
    summary = result.json()
    assert summary["held"] is True
    assert summary["payments_dropped"] == 0 and summary["payments_missing"] == 0
    time.sleep(WATCHING_DROP_AFTER + 0.5)  # the re-check timer holds too
    for r in receivers:
        data = show(watching_daemon, r["receiver_id"])
        assert data["status"] == "paid" and data["received_duffs"] == COIN
        assert data["payments"][0]["dropped"] is False
    status = watching_daemon.cli("status", "--json").json()
    assert status["last_rescan_hold"]["missing"] == 12
    assert any("held" in w for w in status["warnings"])
    human = watching_daemon.cli("rescan", *ids)
    assert "held" in human.stdout
    assert "looks like Insight lost its index" in watching_daemon.log()


FORGED = "f" * 64


def test_a_forged_tx_or_txlock_event_credits_nothing(watching_daemon, sandbox_peer, database_url):
    r = new_receiver(watching_daemon, "1")
    sandbox_peer.forge("tx", FORGED, {r["address"]: 5 * COIN})
    sandbox_peer.forge("txlock", FORGED, {r["address"]: 5 * COIN}, txlock=True)
    # A real payment after the forged ones is read back and recorded normally.
    real = sandbox_peer.pay(r["address"], COIN // 2, lock=False)
    data = wait_for(watching_daemon, r["receiver_id"], lambda d: d["received_duffs"] > 0)
    time.sleep(1.0)  # the forged claim has been asked for (and not found) by now
    data = show(watching_daemon, r["receiver_id"])
    assert data["status"] == "partial" and data["received_duffs"] == COIN // 2
    assert [p["txid"] for p in data["payments"]] == [real]
    assert [n for n, _ in outbox(database_url, r["receiver_id"])] == ["receiver.partial"]
    verify = watching_daemon.cli("status", "--json").json()["verify"]
    assert verify["claims"] >= 3 and verify["verified"] == 1


def test_the_amount_credited_is_rests_never_the_events(watching_daemon, sandbox_peer):
    r = new_receiver(watching_daemon, "1")
    txid = sandbox_peer.pay(r["address"], COIN // 4, lock=False, silent=True)
    sandbox_peer.forge("tx", txid, {r["address"]: 5 * COIN})  # the event inflates it
    data = wait_for(watching_daemon, r["receiver_id"], lambda d: d["received_duffs"] > 0)
    assert data["received_duffs"] == COIN // 4 and data["status"] == "partial"
    assert "tx event amount differs from Insight REST" in watching_daemon.log()


def test_an_event_for_a_tx_that_does_not_pay_the_address_is_refused(
    watching_daemon, sandbox_peer
):
    r = new_receiver(watching_daemon, "1")
    other = new_receiver(watching_daemon, "1")
    txid = sandbox_peer.pay(other["address"], COIN, lock=True, silent=True)
    sandbox_peer.forge("txlock", txid, {r["address"]: COIN}, txlock=True)
    deadline = time.monotonic() + 10
    while True:
        status = watching_daemon.cli("status", "--json").json()
        if status["verify"]["refused"]:
            break
        assert time.monotonic() < deadline, status
        time.sleep(0.1)
    assert status["verify"]["last_refused"]["txid"] == txid
    assert any("refused" in w for w in status["warnings"])
    data = show(watching_daemon, r["receiver_id"])
    assert data["status"] == "pending" and data["received_duffs"] == 0


def test_a_lock_is_taken_from_the_event_once_the_tx_is_read_back(watching_daemon, sandbox_peer):
    r = new_receiver(watching_daemon, "1")
    sandbox_peer.pay(r["address"], COIN, lock=True)  # `tx`, then `txlock` 0.2 s later
    data = wait_for(watching_daemon, r["receiver_id"], lambda d: d["status"] == "settled")
    assert data["payments"][0]["instant_locked"] is True


def test_cancelled_receiver_paid_anyway_is_recorded_and_flagged(
    watching_daemon, sandbox_peer, database_url
):
    r = new_receiver(watching_daemon, "1")
    assert watching_daemon.cli("receiver", "cancel", str(r["receiver_id"])).code == 0
    sandbox_peer.pay(r["address"], COIN, lock=True)
    data = wait_for(watching_daemon, r["receiver_id"], lambda d: d["received_duffs"] == COIN)
    assert data["status"] == "cancelled" and data["late"] is True
    assert [n for n, _ in outbox(database_url, r["receiver_id"])] == ["receiver.late_payment"]


def test_expiry_then_late_payment(watching_daemon, sandbox_peer, database_url):
    r = new_receiver(watching_daemon, "1", "--expires-after", "1s")
    wait_for(watching_daemon, r["receiver_id"], lambda d: d["status"] == "expired")
    sandbox_peer.pay(r["address"], COIN, lock=True)
    data = wait_for(watching_daemon, r["receiver_id"], lambda d: d["status"] == "settled")
    assert data["late"] is True
    names = [n for n, _ in outbox(database_url, r["receiver_id"])]
    assert names == ["receiver.expired", "receiver.paid", "receiver.settled"]


def test_status_is_ready_and_reports_insight(watching_daemon):
    status = watching_daemon.cli("status", "--json")
    assert status.code == 0
    data = status.json()
    assert data["state"] == "ready" and data["insight"]["state"] == "connected"
    assert data["last_rescan"]["complete"] is True


def test_second_payment_after_settlement_is_recorded_as_overpaid(
    watching_daemon, sandbox_peer, database_url
):
    r = new_receiver(watching_daemon, "1")
    sandbox_peer.pay(r["address"], COIN, lock=True)
    wait_for(watching_daemon, r["receiver_id"], lambda d: d["status"] == "settled")
    extra = sandbox_peer.pay(r["address"], 5_000, lock=True)
    data = wait_for(watching_daemon, r["receiver_id"], lambda d: len(d["payments"]) == 2)
    assert data["status"] == "settled" and data["overpaid"] is True
    assert data["received_duffs"] == COIN + 5_000
    events = outbox(database_url, r["receiver_id"])
    assert [n for n, _ in events] == ["receiver.paid", "receiver.settled", "receiver.overpaid"]
    assert events[-1][1]["txid"] == extra


def test_underpayment_within_tolerance_counts_as_paid(short_tmp, sandbox_peer):
    from tests.conftest import TEST_XPUB, write_config

    config = write_config(
        short_tmp,
        f"sqlite:///{short_tmp / 'db.sqlite3'}",
        wallet={"xpub": TEST_XPUB, "network": "testnet"},
        insight={"url": sandbox_peer.url},
        receivers={"underpayment_tolerance": "1"},
    )
    daemon = start_daemon(config)
    try:
        r = new_receiver(daemon, "1")
        sandbox_peer.pay(r["address"], COIN - 1_000_000, lock=True)  # 1 % short
        data = wait_for(daemon, r["receiver_id"], lambda d: d["status"] == "settled")
        assert data["received_duffs"] == COIN - 1_000_000 and data["overpaid"] is False
        short = new_receiver(daemon, "1")
        sandbox_peer.pay(short["address"], COIN - 1_000_001, lock=True)
        assert (
            wait_for(daemon, short["receiver_id"], lambda d: d["received_duffs"] > 0)["status"]
            == "partial"
        )
    finally:
        daemon.stop()
