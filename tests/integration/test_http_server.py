"""net/http_server.py on real loopback sockets: hypercorn serving a small ASGI app in
this process, with the ``[http] max_connections`` cap."""

from __future__ import annotations

import contextlib
import dataclasses

import trio

from dashpay.config.http import HttpConfig
from dashpay.net.http_server import serve_http


async def hello(scope, receive, send) -> None:
    assert scope["type"] == "http"
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hello"})


async def get(port: int) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = b""
        with trio.fail_after(5):
            while chunk := await stream.receive_some():
                answer += chunk
    return answer


async def test_connections_over_max_connections_are_closed_and_the_cap_frees_up():
    config = dataclasses.replace(
        HttpConfig(), listen=("127.0.0.1:0",), max_connections=16, idle_timeout=2.0
    )
    async with trio.open_nursery() as nursery:
        urls = await nursery.start(serve_http, hello, config)
        port = int(urls[0].rpartition(":")[2])
        held = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(16)]
        await trio.sleep(0.2)  # every one accepted and counted
        # The 17th is accepted and closed at once, unanswered.
        over = await trio.open_tcp_stream("127.0.0.1", port)
        await over.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        # (A reset instead of a clean close is refused all the same.)
        with trio.fail_after(5), contextlib.suppress(trio.BrokenResourceError):
            assert await over.receive_some() == b""
        await over.aclose()
        # One held connection goes away: once hypercorn lets go of it (at the latest
        # idle_timeout after it went idle), a new client is served again.
        await held.pop().aclose()
        await trio.sleep(2.5)
        assert (await get(port)).startswith(b"HTTP/1.1 200")
        for stream in held:
            await stream.aclose()
        nursery.cancel_scope.cancel()
