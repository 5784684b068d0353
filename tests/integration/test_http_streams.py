"""How long the real HTTP server (hypercorn's trio worker, `net/http_server.py`) keeps a
connection, with `[http] request_timeout` and `idle_timeout` short: a checkout event
stream outlives request_timeout with a heartbeat comment, while a slow body is still
answered 408 after request_timeout and a slow request head is closed after idle_timeout.

In process: the real server, the real checkout routes in front of the real API app (a
stand-in dispatcher and key service), raw loopback sockets as clients."""

from __future__ import annotations

from dataclasses import dataclass

import trio

from dashpay.api.http.app import HttpApp
from dashpay.api.http.checkout_routes import CheckoutApp
from dashpay.config.http import HttpConfig
from dashpay.net.http_server import serve_http
from dashpay.services.checkout_hub import CheckoutHub
from tests.unit.test_checkout_page import THEME, TOKEN
from tests.unit.test_checkout_routes import Repo

REQUEST_TIMEOUT = 0.5
IDLE_TIMEOUT = 0.5
HEARTBEAT = 0.2


@dataclass(frozen=True)
class Key:
    scopes: frozenset[str]


class Keys:
    def authenticate(self, token: str):
        return Key(frozenset({"receivers:write", "receivers:read"})) if token == "good" else None


async def dispatch(method: str, params: dict) -> dict:
    return {"receiver_id": 1}


async def serve(nursery: trio.Nursery) -> tuple[str, int]:
    config = HttpConfig(
        listen=("127.0.0.1:0",), request_timeout=REQUEST_TIMEOUT, idle_timeout=IDLE_TIMEOUT
    )
    api = HttpApp(dispatch=dispatch, config=config, health=lambda: ("ready", []), keys=Keys())
    app = CheckoutApp(
        api,
        repo=Repo(),  # type: ignore[arg-type]
        hub=CheckoutHub(),
        theme=THEME,
        config=config,
        keepalive_seconds=HEARTBEAT,
    )
    [url] = await nursery.start(serve_http, app, config)
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


async def read_for(stream: trio.SocketStream, seconds: float) -> tuple[bytes, bool]:
    """What arrives within ``seconds``, and whether the server closed the connection."""
    got = bytearray()
    with trio.move_on_after(seconds):
        while True:
            data = await stream.receive_some(65536)
            if not data:
                return bytes(got), True
            got += data
    return bytes(got), False


async def test_an_event_stream_outlives_request_timeout_with_heartbeats(nursery):
    host, port = await serve(nursery)
    stream = await trio.open_tcp_stream(host, port)
    request = f"GET /pay/{TOKEN}/events HTTP/1.1\r\nHost: x\r\n\r\n"
    await stream.send_all(request.encode())
    got, closed = await read_for(stream, 6 * REQUEST_TIMEOUT)
    assert not closed, f"the stream was cut: {got[-200:]!r}"
    assert got.startswith(b"HTTP/1.1 200") and b"event: state" in got
    assert got.count(b": keep-alive\n\n") >= 8, got
    await stream.aclose()


async def test_a_slow_body_is_still_answered_408_after_request_timeout(nursery):
    host, port = await serve(nursery)
    stream = await trio.open_tcp_stream(host, port)
    head = (
        "POST /v1/receivers HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer good\r\n"
        "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    )
    await stream.send_all(head.encode() + b'{"amo')
    started = trio.current_time()
    got, closed = await read_for(stream, 4 * REQUEST_TIMEOUT)
    assert got.startswith(b"HTTP/1.1 408"), got
    assert b"request_timeout" in got
    assert trio.current_time() - started < 3 * REQUEST_TIMEOUT
    await stream.aclose()


async def test_a_slow_request_head_is_closed_after_idle_timeout(nursery):
    host, port = await serve(nursery)
    stream = await trio.open_tcp_stream(host, port)
    await stream.send_all(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    got, closed = await read_for(stream, 4 * IDLE_TIMEOUT)
    assert closed and got == b""
    await stream.aclose()
