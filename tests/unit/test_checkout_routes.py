"""The checkout routes as an ASGI app, in process: the event stream's keep-alives, one
read per change for many watchers, the end on a client's disconnect, the cap."""

from __future__ import annotations

import json
from dataclasses import replace

import trio

from dashpay.api.checkout.page import theme_of
from dashpay.api.http.checkout_routes import CheckoutApp
from dashpay.config.checkout import CheckoutConfig
from dashpay.config.http import HttpConfig
from dashpay.domain.status import CANCELLED, PARTIAL
from dashpay.services.checkout_hub import CheckoutHub
from tests.unit.test_checkout_page import TOKEN, payment, receiver

EVENTS = f"/pay/{TOKEN}/events"


class Repo:
    def __init__(self) -> None:
        self.receiver = receiver()
        self.payment_reads = 0

    def get_receiver_by_token(self, token: str):
        return self.receiver if token == TOKEN else None

    def list_payments(self, receiver_id: int):
        self.payment_reads += 1
        return []


async def refuse_api(scope, receive, send):
    raise AssertionError("not a checkout path")


class Client:
    """One request to the app: what it sent, and a way to hang up."""

    def __init__(self, app: CheckoutApp, path: str, method: str = "GET") -> None:
        self.app, self.path, self.method = app, path, method
        self.sent: list[dict] = []
        self.done = trio.Event()
        self._hangup, self._receive = trio.open_memory_channel[dict](1)

    async def run(self) -> None:
        scope = {"type": "http", "method": self.method, "path": self.path, "headers": []}
        scope["client"] = ("127.0.0.1", 5000)
        await self.app(scope, self._receive.receive, self._send)
        self.done.set()

    async def _send(self, message: dict) -> None:
        self.sent.append(message)

    def hang_up(self) -> None:
        self._hangup.send_nowait({"type": "http.disconnect"})

    @property
    def status(self) -> int:
        return self.sent[0]["status"]

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent[1:])

    def frames(self) -> list[dict]:
        lines = self.body.decode().splitlines()
        return [json.loads(line[6:]) for line in lines if line.startswith("data: ")]


def app_of(repo: Repo, hub: CheckoutHub, **kwargs) -> CheckoutApp:
    return CheckoutApp(
        refuse_api,
        repo=repo,  # type: ignore[arg-type]
        hub=hub,
        theme=theme_of(CheckoutConfig()),
        config=HttpConfig(),
        **kwargs,
    )


async def until(condition) -> None:
    """Wait (2 s at most) for ``condition()``: the routes read in worker threads."""
    with trio.fail_after(2):
        while not condition():
            await trio.sleep(0.005)


async def test_keepalive_when_nothing_changes_and_a_hangup_frees_the_watcher():
    hub = CheckoutHub()
    client = Client(app_of(Repo(), hub, keepalive_seconds=0.05), EVENTS)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.run)
        await trio.sleep(0.18)
        assert len(hub) == 1
        assert client.status == 200 and client.body.count(b": keep-alive\n\n") >= 2
        assert client.frames()[0]["view"] == "waiting"
        client.hang_up()
        with trio.fail_after(2):
            await client.done.wait()
    assert len(hub) == 0


async def test_one_read_per_change_for_every_watcher_and_the_end_on_a_closed_view():
    repo, hub = Repo(), CheckoutHub()
    app = app_of(repo, hub)
    clients = [Client(app, EVENTS) for _ in range(3)]
    async with trio.open_nursery() as nursery:
        for client in clients:
            nursery.start_soon(client.run)
        await until(lambda: all(len(c.frames()) == 1 for c in clients))
        assert len(hub) == 3 and repo.payment_reads == 3  # each stream's first state
        partial = replace(repo.receiver, status=PARTIAL, received_duffs=50_000_000)
        hub.publish(partial, [payment(50_000_000, locked=True)])  # the engine's commit
        await until(lambda: all(len(c.frames()) == 2 for c in clients))
        assert repo.payment_reads == 3  # the engine's results carry the payments
        hub.publish(replace(repo.receiver, status=CANCELLED), None)  # a cancel
        with trio.fail_after(2):
            for client in clients:
                await client.done.wait()
    assert repo.payment_reads == 4  # one read for the three watchers
    for client in clients:
        assert [f["view"] for f in client.frames()] == ["waiting", "partly_paid", "cancelled"]
        assert client.sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
    assert len(hub) == 0


async def test_streams_past_the_cap_are_refused_with_503():
    hub = CheckoutHub(max_watchers=1)
    app = app_of(Repo(), hub)
    first, second = Client(app, EVENTS), Client(app, EVENTS)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(first.run)
        await until(lambda: len(first.frames()) == 1)
        await second.run()
        assert second.status == 503
        assert (b"retry-after", b"5") in second.sent[0]["headers"]
        assert hub.status_view()["refused_full"] == 1
        first.hang_up()


async def test_unknown_token_and_other_methods():
    app = app_of(Repo(), CheckoutHub())
    for path in ("/pay/AAAAAAAAAAAAAAAAAAAAAA", f"/pay/{TOKEN}/other", "/pay/"):
        missing = Client(app, path)
        await missing.run()
        assert missing.status == 404, path
    posted = Client(app, f"/pay/{TOKEN}", method="POST")
    await posted.run()
    assert posted.status == 405
