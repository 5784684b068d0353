"""The HTTP API's server: hypercorn's trio worker, in the daemon's own nursery.

The surface faces the network, so the HTTP/1.1 and HTTP/2 parsing is a well-kept
server's (hypercorn over h11/h2), not ours. This shell only turns ``[http]`` into
hypercorn's settings; it runs any ASGI app (the daemon gives it ``api/http/app.py``'s).

What bounds a slow or hostile client (hypercorn's settings, then the app's):

- ``idle_timeout`` -> ``keep_alive_timeout``: a connection with no request under way is
  closed after it, including one that is still sending its request head (slowloris);
  idle connections cost a task and a socket each, no CPU;
- ``request_timeout`` is the app's, not hypercorn's: the app gives a request's whole
  body that long (408) and its handling that long (503). hypercorn's ``read_timeout``
  is off: its trio worker applies it to every read of the connection, also while a
  response is being sent, so it cut every event stream (whose client sends nothing)
  after ``request_timeout``. A stream lives as long as its client keeps it open; its
  heartbeat comments find a peer that vanished (the write fails) and keep proxies from
  closing it;
- request heads over 16 KiB are refused by h11 (``h11_max_incomplete_size``); bodies
  over ``max_body`` by the app (413, before reading them when Content-Length says so);
- HTTP/2 (with TLS) allows 32 concurrent streams per connection, heads of 16 KiB;
- ``max_connections``: at most that many connections are open at once (hypercorn has no
  cap of its own); one more is closed as soon as it is accepted, with a throttled
  warning, so a flood of connections can never take the file descriptors the payment
  engine needs (the database, Insight, callbacks). The accept loop is hypercorn's
  ``worker_serve`` minus what the daemon does not use (lifespan, QUIC, statsd), so the
  connections can be counted; each connection is still hypercorn's ``TCPServer``.

One write per answer: hypercorn writes an HTTP/1.1 answer's head and its body with two
``send`` calls, so the client is woken twice and reads the head alone. On plain TCP the
stream under hypercorn (``OneWriteStream``) holds the head of an answer with a
``Content-Length`` until hypercorn's next write, the body (or the empty end of an
empty one), which always follows at once, and sends both in one call. Other heads
(interim 1xx answers, streamed answers without a length such as event streams) are
written as they come.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from functools import partial

import trio

from dashpay.config.http import HttpConfig
from dashpay.domain.throttle import ThrottledLog

log = logging.getLogger("dashpay.http")

MAX_HEAD_BYTES = 16 * 1024
H2_MAX_STREAMS = 32
# hypercorn's own shutdown trigger is unused: the daemon's nursery cancels the server.
GRACEFUL_SECONDS = 2.0
LISTEN_BACKLOG = 1024


def hypercorn_config(config: HttpConfig):  # -> hypercorn.config.Config
    from hypercorn.config import Config

    hc = Config()
    hc.bind = list(config.listen)
    if config.tls_cert is not None:
        hc.certfile = str(config.tls_cert)
        hc.keyfile = str(config.tls_key)
    hc.keep_alive_timeout = config.idle_timeout
    hc.read_timeout = None  # see the module docstring: request_timeout is the app's
    hc.h11_max_incomplete_size = MAX_HEAD_BYTES
    hc.h2_max_concurrent_streams = H2_MAX_STREAMS
    hc.h2_max_header_list_size = MAX_HEAD_BYTES
    hc.graceful_timeout = GRACEFUL_SECONDS
    hc.backlog = LISTEN_BACKLOG
    hc.include_server_header = False
    hc.accesslog = None  # the app logs each request with the client behind proxies
    # hypercorn's errors and warnings; its one info line ("Running on ... CTRL + C to
    # quit") is the daemon's own "http API listening" line instead.
    errors = logging.getLogger("dashpay.http.server")
    errors.setLevel(logging.WARNING)
    hc.errorlog = errors
    return hc


async def serve_http(app, config: HttpConfig, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Serve ``app`` on ``config.listen`` until cancelled; ``task_status.started`` gets
    the URLs bound (a port 0 is resolved to the port taken)."""
    from hypercorn.trio.tcp_server import TCPServer
    from hypercorn.trio.worker_context import WorkerContext
    from hypercorn.typing import ConnectionState
    from hypercorn.utils import repr_socket_addr, wrap_app

    hc = hypercorn_config(config)
    sockets = hc.create_sockets()
    ssl_context = hc.create_ssl_context()
    listeners: list[trio.abc.Listener] = []
    urls = []
    for scheme, group in (("https", sockets.secure_sockets), ("http", sockets.insecure_sockets)):
        for sock in group:
            sock.listen(hc.backlog)
            listener: trio.abc.Listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
            if scheme == "https":
                listener = trio.SSLListener(listener, ssl_context, https_compatible=True)
            listeners.append(listener)
            urls.append(f"{scheme}://{repr_socket_addr(sock.family, sock.getsockname())}")
    connection = partial(
        TCPServer, wrap_app(app, hc.wsgi_max_body_size, "asgi"), hc, WorkerContext(None)
    )
    cap = ConnectionCap(config.max_connections)

    async def handle(stream) -> None:
        with cap.held() as admitted:
            if admitted:
                if isinstance(stream, trio.SocketStream):
                    stream = OneWriteStream(stream)
                await connection(ConnectionState({}), stream)
                return
        await trio.aclose_forcefully(stream)

    async with trio.open_nursery() as nursery:
        for url in urls:
            log.info("http API listening url=%s max_connections=%d", url, config.max_connections)
        task_status.started(urls)
        await trio.serve_listeners(handle, listeners, handler_nursery=nursery)


class ConnectionCap:
    """At most ``limit`` connections held at once; the one over it is refused (closed
    unanswered) with a warning at most once a second."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0
        self.refused = 0
        self.warn = ThrottledLog(log)

    @contextlib.contextmanager
    def held(self) -> Iterator[bool]:
        if self.open >= self.limit:
            self.refused += 1
            self.warn.warning(
                "refused",
                "http connection refused: %d open, the [http] max_connections",
                self.open,
            )
            yield False
            return
        self.open += 1
        try:
            yield True
        finally:
            self.open -= 1


def _sized_head(data: bytes) -> bool:
    """Whether ``data`` is a whole final HTTP/1.1 answer head with a Content-Length."""
    return (
        data[:9] == b"HTTP/1.1 "
        and data[9:10] != b"1"
        and data[-4:] == b"\r\n\r\n"
        and b"\r\ncontent-length:" in data.lower()
    )


class OneWriteStream(trio.abc.HalfCloseableStream):
    """A plain TCP stream that sends a sized answer's head together with hypercorn's
    next write (the module docstring). ``socket`` is there for hypercorn, which reads
    the peer's address from it."""

    def __init__(self, transport: trio.SocketStream) -> None:
        self.transport = transport
        self.socket = transport.socket
        self._head = b""

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._head:
            data, self._head = self._head + bytes(data), b""
        elif len(data) <= MAX_HEAD_BYTES and _sized_head(bytes(data)):
            self._head = bytes(data)
            await trio.lowlevel.checkpoint()
            return
        await self.transport.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.transport.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        return await self.transport.receive_some(max_bytes)

    async def send_eof(self) -> None:
        if self._head:
            await self.send_all(b"")
        await self.transport.send_eof()

    async def aclose(self) -> None:
        await self.transport.aclose()
