"""net/http_server.py on real loopback sockets: hypercorn serving a small ASGI app in
this process, with the ``[http] max_connections`` cap."""

from __future__ import annotations

import contextlib
import dataclasses

import trio

from dashpay.config.http import HttpConfig
from dashpay.net.http_server import OneWriteStream, serve_http


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


class Recording:
    """The transport under ``OneWriteStream``: what each send_all was given."""

    socket = None

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    async def send_all(self, data) -> None:
        self.writes.append(bytes(data))


SIZED = b"HTTP/1.1 200 \r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n"


async def test_a_sized_head_goes_out_with_its_body_in_one_write():
    transport = Recording()
    stream = OneWriteStream(transport)  # type: ignore[arg-type]
    await stream.send_all(SIZED)
    assert transport.writes == []
    await stream.send_all(b"{}")
    await stream.send_all(b"")  # h11's end of a sized body
    assert transport.writes == [SIZED + b"{}", b""]
    # An empty body: the head goes with the empty end.
    await stream.send_all(SIZED.replace(b"length: 2", b"length: 0"))
    await stream.send_all(b"")
    assert transport.writes[-1].endswith(b"length: 0\r\n\r\n")


async def test_interim_and_unsized_heads_are_written_at_once():
    transport = Recording()
    stream = OneWriteStream(transport)  # type: ignore[arg-type]
    interim = b"HTTP/1.1 100 \r\n\r\n"
    streamed = b"HTTP/1.1 200 \r\ncontent-type: text/event-stream\r\n\r\n"
    await stream.send_all(interim)
    await stream.send_all(streamed)
    await stream.send_all(b"data: {}\n\n")
    assert transport.writes == [interim, streamed, b"data: {}\n\n"]
