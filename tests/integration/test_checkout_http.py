"""The checkout page served by a real sandbox daemon (`dashpay serve --sandbox`, where it
is on by default), read with httpx as a browser would: the page, the 404 page, the
rate limit, and the live events following `dashpay sandbox pay`."""

from __future__ import annotations

import json
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import run_cli, serve_sandbox


@pytest.fixture(scope="module")
def sandbox() -> Iterator[tuple[str, dict[str, str]]]:
    tmp = Path(tempfile.mkdtemp(prefix="dpc-", dir="/tmp"))
    try:
        with serve_sandbox(tmp) as (_proc, env):
            url = run_cli("status", "--json", env=env).json()["http"]["urls"][0]
            yield url, env
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def new_receiver(env: dict[str, str], amount: str = "1") -> dict:
    result = run_cli("receiver", "new", "--amount", amount, "--json", env=env)
    assert result.code == 0, result.stderr
    return result.json()


def pay(env: dict[str, str], address: str, amount: str) -> None:
    result = run_cli("sandbox", "pay", address, amount, env=env)
    assert result.code == 0, result.stderr


class EventReader:
    """Reads an SSE stream in a thread: each ``state`` frame's data (parsed) with the
    monotonic time it arrived, and whether the server ended the stream."""

    def __init__(self, url: str) -> None:
        self.frames: queue.Queue[tuple[float, dict]] = queue.Queue()
        self.ended = threading.Event()
        self.headers: dict[str, str] = {}
        self.opened = threading.Event()
        self.thread = threading.Thread(target=self._read, args=(url,), daemon=True)
        self.thread.start()
        assert self.opened.wait(10)

    def _read(self, url: str) -> None:
        try:
            with httpx.stream("GET", url, timeout=httpx.Timeout(10, read=60)) as response:
                self.headers = dict(response.headers)
                self.opened.set()
                for line in response.iter_lines():
                    if line.startswith("data: "):
                        self.frames.put((time.monotonic(), json.loads(line[6:])))
        except httpx.HTTPError:
            return  # the daemon stopped at the end of the module: not a clean end
        self.ended.set()

    def next(self, timeout: float = 10) -> tuple[float, dict]:
        return self.frames.get(timeout=timeout)


def test_sandbox_receiver_has_a_working_checkout_page(sandbox):
    url, env = sandbox
    receiver = new_receiver(env)
    token = receiver["public_token"]
    assert receiver["checkout_url"] == f"{url}/pay/{token}"
    page = httpx.get(receiver["checkout_url"], headers={"Accept-Language": "de"})
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    csp = page.headers["content-security-policy"]
    assert csp.startswith("default-src 'none'; style-src 'sha256-") and "script-src 'sha256-" in csp
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["content-language"] == "de"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert receiver["address"] in page.text
    assert str(receiver["receiver_id"]) not in page.text.split("<body", 1)[1].split('"')[0]
    status = run_cli("status", "--json", env=env).json()
    assert status["checkout"]["public_url"] == url


def test_unknown_token_is_the_404_page_and_the_api_is_unchanged(sandbox):
    url, _ = sandbox
    for path in ("/pay/AAAAAAAAAAAAAAAAAAAAAA", "/pay/not-a-token", "/pay/x/y/z"):
        missing = httpx.get(url + path)
        assert missing.status_code == 404, path
        assert missing.headers["content-type"] == "text/html; charset=utf-8"
        assert "content-security-policy" in missing.headers
    assert httpx.get(f"{url}/pay/AAAAAAAAAAAAAAAAAAAAAA/events").status_code == 404
    assert httpx.get(f"{url}/health").json() == {"status": "ok"}


def test_events_follow_the_payments_and_end_when_settled(sandbox):
    url, env = sandbox
    receiver = new_receiver(env, "1")
    reader = EventReader(receiver["checkout_url"] + "/events")
    assert reader.headers["content-type"].startswith("text/event-stream")
    assert reader.headers["cache-control"] == "no-store"
    _, first = reader.next()
    assert first["view"] == "waiting" and first["final"] is False
    assert run_cli("status", "--json", env=env).json()["checkout"]["watchers"] >= 1

    pay(env, receiver["address"], "0.4")
    paid_at = time.monotonic()
    arrived, partial = reader.next()
    assert partial["view"] == "partly_paid", partial
    assert arrived - paid_at < 1.0, f"the frame came {arrived - paid_at:.2f}s after the payment"
    assert partial["uri"].endswith("amount=0.6")

    pay(env, receiver["address"], "0.6")
    # Every committed change is a frame (the InstantSend lock of the first payment, the
    # second payment, "confirming" until its lock): read on until a final one.
    views = [reader.next()[1]]
    while not views[-1]["final"]:
        views.append(reader.next()[1])
    settled = views[-1]
    assert settled["final"] is True and settled["view"].startswith("settled"), settled
    assert reader.ended.wait(5), "the stream stays open after a final state"
    # A settled page may be kept by the browser for a while.
    page = httpx.get(receiver["checkout_url"])
    assert page.headers["cache-control"] == "private, max-age=3600"


def test_a_cancel_reaches_the_page_live(sandbox):
    url, env = sandbox
    receiver = new_receiver(env, "2")
    reader = EventReader(receiver["checkout_url"] + "/events")
    assert reader.next()[1]["view"] == "waiting"
    result = run_cli("receiver", "cancel", str(receiver["receiver_id"]), env=env)
    assert result.code == 0, result.stderr
    _, cancelled = reader.next()
    assert cancelled["view"] == "cancelled" and cancelled["final"] is True
    assert reader.ended.wait(5)


def test_the_http_api_answers_carry_checkout_url(sandbox):
    url, env = sandbox
    made = run_cli(
        "apikey", "create", "--label", "shop", "--scope", "receivers:write", "--json", env=env
    )
    assert made.code == 0, made.stderr
    auth = {"Authorization": f"Bearer {made.json()['key']}"}
    created = httpx.post(f"{url}/v1/receivers", json={"amount": "0.5"}, headers=auth)
    assert created.status_code == 200, created.text
    body = created.json()
    assert body["checkout_url"] == f"{url}/pay/{body['public_token']}"
    assert httpx.get(body["checkout_url"]).status_code == 200


def test_a_browser_that_goes_away_leaves_no_watcher(sandbox):
    _, env = sandbox
    receiver = new_receiver(env)
    with httpx.stream("GET", receiver["checkout_url"] + "/events", timeout=10) as response:
        assert response.status_code == 200
        lines = response.iter_lines()  # kept: a discarded iterator closes the response
        assert next(lines).startswith("retry: ")
        assert watchers(env) == 1
    deadline = time.monotonic() + 5
    while watchers(env) != 0:
        assert time.monotonic() < deadline, "the closed stream is still counted"
        time.sleep(0.05)


def watchers(env: dict[str, str]) -> int:
    return run_cli("status", "--json", env=env).json()["checkout"]["watchers"]


# Last in the module: it spends this client's allowance of page loads.
def test_the_page_is_rate_limited_per_client(sandbox):
    url, env = sandbox
    receiver = new_receiver(env)
    with httpx.Client() as client:
        codes = [client.get(receiver["checkout_url"]).status_code for _ in range(30)]
        assert codes.count(429) >= 5, codes
        limited = client.get(receiver["checkout_url"])
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) >= 1
