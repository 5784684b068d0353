"""The checkout page on the HTTP server: ``GET /pay/<token>`` and its live events
``GET /pay/<token>/events`` (docs/checkout.md).

A thin ASGI layer in front of the API's app (``HttpApp``): paths under ``/pay/`` are
answered here, everything else goes to the API unchanged. Its own layer because the
page is public (no API key), HTML rather than JSON, has its own caching headers, and
the events are a stream, not one body.

- Both routes are rate-limited per client (``PageRateLimiter``; 429 + Retry-After).
- An unknown token (or one without a token's shape) is the 404 page.
- The events: the current state first (with ``retry``), then one frame per change the
  engine committed (``CheckoutHub``, no database polling), a keep-alive comment when
  nothing else was sent for ``KEEPALIVE_SECONDS``; the stream ends after a view the
  page stops listening in (``CLOSED_VIEWS``: settled, cancelled; not expired, which a
  late payment still changes), when the client goes away, or when the hub drops a
  watcher that fell behind.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import trio

from dashpay.api.checkout import (
    KEEPALIVE,
    KEEPALIVE_SECONDS,
    PageRateLimiter,
    Theme,
    catalogue,
    checkout_state,
    event_stream_headers,
    render_missing,
    render_page,
    sse_frame,
)
from dashpay.api.checkout.page import CLOSED_VIEWS
from dashpay.api.http.app import _headers as request_headers
from dashpay.api.http.auth import client_address
from dashpay.config.http import HttpConfig
from dashpay.domain.clock import now_ms
from dashpay.domain.errors import Unavailable
from dashpay.domain.model import Payment, Receiver
from dashpay.repository.base import Repository
from dashpay.services.checkout_hub import FULL_RETRY_AFTER, CheckoutHub, Update

log = logging.getLogger("dashpay.http.checkout")

PREFIX = "/pay/"
EVENTS = "events"
Headers = list[tuple[str, str]]


class CheckoutApp:
    """ASGI: ``/pay/...`` here, every other path to ``api``."""

    def __init__(
        self,
        api: Callable,
        *,
        repo: Repository,
        hub: CheckoutHub,
        theme: Theme,
        config: HttpConfig,
        limiter: PageRateLimiter | None = None,
        keepalive_seconds: float = KEEPALIVE_SECONDS,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.api = api
        self.repo = repo
        self.hub = hub
        self.theme = theme
        self.config = config
        self.limiter = limiter or PageRateLimiter()
        self.keepalive_seconds = keepalive_seconds
        self.clock = clock

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PREFIX):
            await self.api(scope, receive, send)
            return
        headers = request_headers(scope)
        try:
            await self._serve(scope, receive, send, headers)
        except Exception:
            log.exception("checkout request failed path=%s", _shown(scope["path"]))
            await _answer(send, 500, b"internal error; the daemon logged it\n", [])

    async def _serve(self, scope: dict, receive: Callable, send: Callable, headers: dict) -> None:
        parts = scope["path"][len(PREFIX) :].split("/")
        if len(parts) > 2 or (len(parts) == 2 and parts[1] != EVENTS) or not parts[0]:
            await self._missing(send, headers)
            return
        if scope["method"] not in ("GET", "HEAD"):
            await _answer(send, 405, b"only GET\n", [("Allow", "GET, HEAD")])
            return
        peer = (scope.get("client") or ("unknown", 0))[0]
        client = client_address(peer, headers, self.config)
        now = trio.current_time()
        if not self.limiter.allow(client, now):
            wait = self.limiter.retry_after_header(client, now)
            await _answer(send, 429, b"too many requests\n", [("Retry-After", wait)])
            return
        receiver = await trio.to_thread.run_sync(self.repo.get_receiver_by_token, parts[0])
        if receiver is None or receiver.public_token is None:
            await self._missing(send, headers)
            return
        if len(parts) == 2:
            language = catalogue.negotiate(headers.get("accept-language"))
            await self._events(receiver, language, receive, send)
            return
        payments = await trio.to_thread.run_sync(self.repo.list_payments, receiver.receiver_id)
        page = render_page(
            receiver,
            payments,
            now=self.clock(),
            accept_language=headers.get("accept-language"),
            theme=self.theme,
        )
        body = page.body if scope["method"] == "GET" else b""
        await _answer(send, 200, body, list(page.headers), length=len(page.body))

    async def _missing(self, send: Callable, headers: dict) -> None:
        page = render_missing(accept_language=headers.get("accept-language"), theme=self.theme)
        await _answer(send, 404, page.body, list(page.headers))

    # -- the event stream ------------------------------------------------------------------
    async def _events(
        self, receiver: Receiver, language: str, receive: Callable, send: Callable
    ) -> None:
        if self.hub.refuses():
            retry = str(FULL_RETRY_AFTER)
            body = b"too many checkout event streams are open; retry shortly\n"
            await _answer(send, 503, body, [("Retry-After", retry)])
            return
        with self.hub.watch(receiver.receiver_id) as updates:
            # Read after joining the hub: a change committed in between is in the channel.
            payments = await trio.to_thread.run_sync(self.repo.list_payments, receiver.receiver_id)
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": _encoded(event_stream_headers()),
                }
            )
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_until_disconnect, receive, nursery.cancel_scope)
                await self._stream(receiver, payments, language, updates, send)
                nursery.cancel_scope.cancel()
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _stream(
        self,
        receiver: Receiver,
        payments: list[Payment],
        language: str,
        updates: trio.MemoryReceiveChannel[Update],
        send: Callable,
    ) -> None:
        state = checkout_state(receiver, payments, self.clock())
        await _chunk(send, sse_frame(state, catalogue.messages(language), retry=True))
        final = state.view in CLOSED_VIEWS
        while not final:
            with trio.move_on_after(self.keepalive_seconds) as idle:
                try:
                    update = await updates.receive()
                except trio.EndOfChannel:
                    return  # dropped as too slow: the browser reconnects
            if idle.cancelled_caught:
                await _chunk(send, KEEPALIVE)
                continue
            try:
                frame, final = await self._frame(update, language)
            except Exception:  # the stream ends; the browser reconnects and reads afresh
                log.exception("checkout update failed receiver=%d", receiver.receiver_id)
                return
            await _chunk(send, frame)

    async def _frame(self, update: Update, language: str) -> tuple[bytes, bool]:
        """The frame of ``update`` in ``language``, made once for all its watchers in
        that language (a cancel carries no payments: the first watcher reads them, the
        others wait for that read)."""
        made: Any = update.shared(f"frame.{language}", _Once)
        return await made.get(lambda: self._make_frame(update, language))

    async def _make_frame(self, update: Update, language: str) -> tuple[bytes, bool]:
        payments = update.payments
        if payments is None:  # one read for the watchers of every language
            read: Any = update.shared("payments", _Once)
            payments = await read.get(
                lambda: trio.to_thread.run_sync(
                    self.repo.list_payments, update.receiver.receiver_id
                )
            )
        state = checkout_state(update.receiver, payments, self.clock())
        return sse_frame(state, catalogue.messages(language)), state.view in CLOSED_VIEWS


class _Once:
    """An async value made by the first caller; later callers wait for it."""

    def __init__(self) -> None:
        self._done = trio.Event()
        self._value: Any = None
        self._started = False

    async def get(self, make: Callable) -> Any:
        if not self._started:
            self._started = True
            try:
                self._value = await make()
            finally:
                self._done.set()
        elif not self._done.is_set():  # waiting on a set Event would still reschedule
            await self._done.wait()
        if self._value is None:
            raise Unavailable("the receiver's update could not be read")
        return self._value


async def _until_disconnect(receive: Callable, scope: trio.CancelScope) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            scope.cancel()
            return


async def _chunk(send: Callable, data: bytes) -> None:
    await send({"type": "http.response.body", "body": data, "more_body": True})


def _encoded(headers: Headers) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]


async def _answer(
    send: Callable, status: int, body: bytes, headers: Headers, *, length: int | None = None
) -> None:
    names = {k.lower() for k, _ in headers}
    extra: Headers = []
    if "content-type" not in names:
        extra.append(("Content-Type", "text/plain; charset=utf-8"))
    if "cache-control" not in names:
        extra.append(("Cache-Control", "no-store"))
    extra.append(("Content-Length", str(len(body) if length is None else length)))
    await send(
        {"type": "http.response.start", "status": status, "headers": _encoded(headers + extra)}
    )
    await send({"type": "http.response.body", "body": body})


def _shown(path: str) -> str:
    """A path for the log without its token (a token is a bearer of the page)."""
    return PREFIX + "<token>" + ("/" + EVENTS if path.endswith("/" + EVENTS) else "")
