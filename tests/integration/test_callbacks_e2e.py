"""Callbacks end to end: a real daemon subprocess watching the sandbox Insight peer
posts signed callbacks to a real HTTP server on 127.0.0.1, and the `dashpay callbacks`
commands drive it over the control socket (both database backends)."""

from __future__ import annotations

import json
import time

from dashpay.services.callbacks.signing import verify_signature
from tests.conftest import start_daemon, wait_ready
from tests.integration.conftest import Reply

COIN = 100_000_000


def new_receiver(daemon, url: str, amount: str = "1") -> dict:
    result = daemon.cli("receiver", "new", "--amount", amount, "--callback-url", url, "--json")
    assert result.code == 0, result.stderr
    return result.json()


def wait_until(fetch, accept, daemon, timeout: float = 15.0):
    """``fetch()`` once ``accept`` holds for its value."""
    deadline = time.monotonic() + timeout
    while not accept(value := fetch()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out; last: {value!r}\n{daemon.log()}")
        time.sleep(0.05)
    return value


def all_delivered(count: int):
    return lambda events: len(events) == count and all(e["status"] == "delivered" for e in events)


def secret_of(daemon) -> str:
    result = daemon.cli("callbacks", "secret")
    assert result.code == 0, result.stderr
    return result.stdout.strip()


def events_of(daemon, receiver_id: int) -> list[dict]:
    result = daemon.cli("callbacks", "list", "--receiver", str(receiver_id), "--json")
    assert result.code == 0, result.stderr
    return list(reversed(result.json()["events"]))  # oldest first


def test_a_payment_lifecycle_arrives_as_signed_callbacks_in_order(
    callback_daemon, sandbox_peer, http_server
):
    receiver = new_receiver(callback_daemon, http_server.url("/shop"))
    sandbox_peer.pay(receiver["address"], 40_000_000, lock=False)
    wait_until(lambda: http_server.to("/shop"), lambda r: len(r) >= 1, callback_daemon)
    sandbox_peer.pay(receiver["address"], 60_000_000, lock=False)
    wait_until(lambda: http_server.to("/shop"), lambda r: len(r) >= 2, callback_daemon)
    sandbox_peer.mine(1)
    requests = wait_until(lambda: http_server.to("/shop"), lambda r: len(r) >= 3, callback_daemon)
    assert [r.event for r in requests] == ["receiver.partial", "receiver.paid", "receiver.settled"]
    secret = secret_of(callback_daemon)
    assert len(secret) >= 40  # generated at first start
    for request in requests:
        assert verify_signature(secret, request.body, request.headers["dashpay-signature"])
        other = "not-the-secret-0123456789"
        assert not verify_signature(other, request.body, request.headers["dashpay-signature"])
        body = json.loads(request.body)
        assert body["event_id"] == request.delivery
        assert body["receiver_id"] == receiver["receiver_id"]
        assert body["dash_payment_address"] == receiver["address"]
    assert len({r.delivery for r in requests}) == 3
    assert json.loads(requests[2].body)["receiver"]["status"] == "settled"
    listed = wait_until(
        lambda: events_of(callback_daemon, receiver["receiver_id"]),
        all_delivered(3),
        callback_daemon,
    )
    assert [e["event_id"] for e in listed] == [r.delivery for r in requests]
    shown = callback_daemon.cli("callbacks", "show", requests[0].delivery, "--json")
    assert shown.code == 0, shown.stderr
    assert shown.json()["attempt_log"][0]["http_status"] == 200
    human = callback_daemon.cli("callbacks", "show", requests[0].delivery)
    assert human.code == 0 and "receiver.partial" in human.stdout


def test_a_restart_during_backoff_delivers_once_after_the_restart(
    callback_daemon, sandbox_peer, http_server
):
    http_server.always("/down", Reply(503, b"maintenance"))
    receiver = new_receiver(callback_daemon, http_server.url("/down"))
    sandbox_peer.pay(receiver["address"], COIN, lock=True)  # paid and settled
    wait_until(lambda: http_server.to("/down"), lambda r: len(r) >= 2, callback_daemon)
    callback_daemon.stop()
    tries = len(http_server.to("/down"))
    http_server.always("/down", Reply(200))
    again = start_daemon(callback_daemon.config, wait=False)
    try:
        wait_ready(again)
        events = wait_until(
            lambda: events_of(again, receiver["receiver_id"]), all_delivered(2), again
        )
        time.sleep(0.5)
    finally:
        again.stop()
    requests = http_server.to("/down")
    paid_id, settled_id = (e["event_id"] for e in events)
    assert [r.delivery for r in requests] == [paid_id] * (tries + 1) + [settled_id]


def test_test_retry_and_refusal_through_the_cli(callback_daemon, sandbox_peer, http_server):
    ok = callback_daemon.cli("callbacks", "test", http_server.url("/hook"), "--json")
    assert ok.code == 0, ok.stderr
    [ping] = http_server.to("/hook")
    assert ping.event == "ping" and ping.delivery == ok.json()["event_id"]
    assert verify_signature(
        secret_of(callback_daemon), ping.body, ping.headers["dashpay-signature"]
    )
    refused = callback_daemon.cli("callbacks", "test", "http://169.254.169.254/latest")
    assert refused.code == 4 and "block_link_local" in refused.stdout
    http_server.always("/gone", Reply(410))
    broken = callback_daemon.cli("callbacks", "test", http_server.url("/gone"))
    assert broken.code == 5 and "410" in broken.stdout

    http_server.script("/strict", Reply(400, b"bad signature?"))
    receiver = new_receiver(callback_daemon, http_server.url("/strict"))
    sandbox_peer.pay(receiver["address"], COIN, lock=False)  # paid, not settled
    [event] = wait_until(
        lambda: events_of(callback_daemon, receiver["receiver_id"]),
        lambda e: e and e[0]["status"] == "failed",
        callback_daemon,
    )
    assert event["last_error"] == "HTTP 400: bad signature?"
    failed = callback_daemon.cli("callbacks", "list", "--status", "failed", "--json")
    assert [e["event_id"] for e in failed.json()["events"]] == [event["event_id"]]
    retried = callback_daemon.cli("callbacks", "retry", event["event_id"])
    assert retried.code == 0, retried.stderr
    wait_until(lambda: http_server.to("/strict"), lambda r: len(r) == 2, callback_daemon)
    first, second = http_server.to("/strict")
    assert first.delivery == second.delivery == event["event_id"] and first.body == second.body
    usage = callback_daemon.cli("callbacks", "retry")
    assert usage.code == 2
    missing = callback_daemon.cli("callbacks", "show", "evt_nope")
    assert missing.code == 4 and "no callback event" in missing.stderr
