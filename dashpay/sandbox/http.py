"""A small HTTP/1.1 + websocket server core on trio, h11 and dashpay's websocket codec.

Why not a framework: the sandbox must serve REST *and* the Socket.IO websocket on one
port, exactly like dashcore-node's express + socket.io server, with limits a hostile
client cannot get around, and with only small dependencies. h11 (python-hyper, a small
pure-Python package) and ``wire/websocket.py`` are sans-IO: h11 parses each request,
and when it is a websocket upgrade (RFC 6455 §4.2) we answer ``101`` through h11 and
hand the bytes that follow to the codec's ``FrameReader`` in its server role, the same
code the daemon reads Insight with. This module only moves bytes and enforces limits;
``server.py`` decides what to answer.

Guarantees: one connection's garbage, slowness or size never affects another; every
wait has a deadline; a handler's exception is logged and closes only its connection.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from typing import Protocol

import h11
import trio

from dashpay.domain.limits import MAX_HTTP_HEAD_BYTES
from dashpay.wire import websocket as wsframe

log = logging.getLogger(__name__)

# --- limits, each with its reason -------------------------------------------------------

# Request line + headers. node.js (which serves the real Insight) allows 16 KiB since
# v13 (8 KiB before); tomcat 8 KiB; h11's default is 16 KiB too.
MAX_HEADER_BYTES = MAX_HTTP_HEAD_BYTES
# Request body. express's body parser in front of insight-api allows 100 kB; we allow
# 1 MiB so a test may post a large address batch (~27,000 addresses), and no more.
MAX_BODY_BYTES = 1024 * 1024
# One websocket message from a client. Clients only send tiny frames ("2", subscribe);
# 1 MiB matches the Engine.IO codec's own frame limit (insight.eio.MAX_FRAME_CHARS).
MAX_WS_MESSAGE_BYTES = 1024 * 1024
# Time for a whole request (headers and body) to arrive once we wait for one. node's
# headersTimeout is 60 s; the sandbox is local, so a slower client is a broken one.
REQUEST_TIMEOUT = 30.0
# Idle time allowed between keep-alive requests: node's default keepAliveTimeout.
KEEPALIVE_TIMEOUT = 5.0
# Time to write one response, or one batch of websocket frames, to a client that does not
# read; after that the connection is abandoned.
SEND_TIMEOUT = 30.0
# Time to say goodbye (close frame / last response) before the socket is just closed.
CLOSE_TIMEOUT = 2.0
# Concurrent connections. A typical `ulimit -n` is 1024; beyond this, new connections
# are closed at once rather than starving the ones being served.
MAX_CONNECTIONS = 1000
RECEIVE_BYTES = 64 * 1024

WS_NORMAL_CLOSURE = wsframe.CLOSE_NORMAL
WS_NO_STATUS = wsframe.CLOSE_NO_STATUS
WS_POLICY_VIOLATION = 1008
WS_TRY_AGAIN_LATER = 1013

_PLAIN = "text/plain; charset=utf-8"


@dataclass(frozen=True, slots=True)
class HttpRequest:
    method: str
    target: str  # as sent: path and query, still percent-encoded
    headers: tuple[tuple[str, str], ...]  # names lower-cased, values as latin-1 text
    body: bytes = b""
    peer: str = ""

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (lower-case), or None."""
        for key, value in self.headers:
            if key == name:
                return value
        return None


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    close: bool = False  # close the connection after this response


class WebSocketClosed(Exception):
    """The websocket is closed (by the peer, by us, or by a protocol error)."""

    def __init__(self, code: int | None, reason: str = "") -> None:
        super().__init__(f"websocket closed code={code} reason={reason!r}")
        self.code = code
        self.reason = reason


WebSocketSession = Callable[["WebSocket"], Awaitable[None]]


class HttpApp(Protocol):
    def handle(self, request: HttpRequest) -> HttpResponse:
        """Answer one ordinary request (synchronous: the sandbox state is in memory)."""
        ...

    def upgrade(self, request: HttpRequest) -> HttpResponse | WebSocketSession | None:
        """For a websocket upgrade request: a session to run after the handshake, a
        response refusing it (the connection is closed after it), or None to drop the
        connection without an answer."""
        ...


# --- websocket ---------------------------------------------------------------------------


class WebSocket:
    """A server-side websocket after the handshake: whole text messages in, batches of
    text messages out. Sends are serialized, so a reader and a writer task may share it.
    Frames are decoded and encoded by the one RFC 6455 codec, ``wire/websocket.py``, in
    its server role."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        trailing: bytes = b"",
        *,
        max_message_bytes: int = MAX_WS_MESSAGE_BYTES,
    ) -> None:
        self._stream = stream
        self._reader = wsframe.FrameReader(max_message_bytes=max_message_bytes, role=wsframe.SERVER)
        self._pending = trailing  # bytes that came with the handshake
        self._send_lock = trio.StrictFIFOLock()
        self._messages: deque[str | bytes] = deque()
        self._closed: WebSocketClosed | None = None

    @property
    def closed(self) -> bool:
        return self._closed is not None

    async def receive(self) -> str | bytes:
        """The next complete message (text as str, binary as bytes). Answers pings and a
        peer's close on the way. Raises WebSocketClosed once the socket is closed."""
        if not self._messages and self._pending:
            data, self._pending = self._pending, b""
            await self._process(data)
        while not self._messages:
            if self._closed is not None:
                raise self._closed
            try:
                data = await self._stream.receive_some(RECEIVE_BYTES)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            if not data:
                self._closed = WebSocketClosed(1006, "connection lost")
                raise self._closed
            await self._process(data)
        return self._messages.popleft()

    async def _process(self, data: bytes) -> None:
        reader = self._reader
        for event in reader.receive_data(data):
            if isinstance(event, str):
                self._messages.append(event)
            elif isinstance(event, wsframe.BinaryMessage):
                self._messages.append(event.data)
            elif isinstance(event, wsframe.PingReceived):
                await self._send_bytes(reader.data_to_send())  # the pong
            elif isinstance(event, wsframe.CloseReceived | wsframe.Failure):
                # The peer's close (echoed) or a frame we refused (our close with its
                # code): the reader has queued the close frame; then the link is over.
                code = event.code if event.code is not None else wsframe.CLOSE_NO_STATUS
                self._closed = WebSocketClosed(code, event.reason)
                await self._send_bytes(reader.data_to_send(), quiet=True)
                if isinstance(event, wsframe.Failure):
                    await self._drain()
                await trio.aclose_forcefully(self._stream)
                return

    async def _drain(self) -> None:
        """After failing the link, read and drop what the client still sends until it
        closes (within CLOSE_TIMEOUT, at most twice the message limit). The reader
        refuses an oversized message on its header, so the rest of it is usually still
        in flight; closing on unread bytes would reset the connection (RST), and the
        client could lose our close frame with its code (RFC 6455 §7.1.1)."""
        budget = 2 * self._reader.max_message_bytes
        with trio.move_on_after(CLOSE_TIMEOUT):
            while budget > 0:
                try:
                    data = await self._stream.receive_some(RECEIVE_BYTES)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return
                if not data:
                    return
                budget -= len(data)

    async def send_texts(self, texts: list[str] | tuple[str, ...]) -> None:
        """Send each text as one message, in one write. Raises WebSocketClosed when the
        socket is closed; a write that does not finish within SEND_TIMEOUT closes it."""
        async with self._send_lock:
            if self._closed is not None:
                raise self._closed
            if self._reader.closed:
                raise WebSocketClosed(None, "closing")
            if len(texts) == 1:
                data = wsframe.encode_server_text(texts[0])
            else:
                data = b"".join([wsframe.encode_server_text(text) for text in texts])
            await self._write(data)

    async def _send_bytes(self, data: bytes, *, quiet: bool = False) -> None:
        async with self._send_lock:
            if self._closed is None or quiet:
                await self._write(data, quiet=quiet)

    async def _write(self, data: bytes, *, quiet: bool = False) -> None:
        with trio.move_on_after(SEND_TIMEOUT) as scope:
            try:
                await self._stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                if quiet:
                    return
                self._closed = WebSocketClosed(1006, "connection lost")
                raise self._closed from None
        if scope.cancelled_caught:
            self._closed = WebSocketClosed(1006, "client does not read")
            await trio.aclose_forcefully(self._stream)
            if not quiet:
                raise self._closed

    async def close(self, code: int = WS_NORMAL_CLOSURE, reason: str = "") -> None:
        """Send a close frame (best effort, bounded by CLOSE_TIMEOUT) and close the socket.
        ``code`` 1005 (CLOSE_NO_STATUS) sends a close frame without a status code.
        Idempotent; never raises for an already broken connection."""
        if self._closed is not None:
            return
        self._closed = WebSocketClosed(code, reason)
        if not self._reader.closed:
            status = None if code == wsframe.CLOSE_NO_STATUS else code
            data = wsframe.encode_server_close(status, reason)
            with trio.move_on_after(CLOSE_TIMEOUT):
                async with self._send_lock:
                    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                        await self._stream.send_all(data)
        await trio.aclose_forcefully(self._stream)


# --- HTTP --------------------------------------------------------------------------------


class _DateHeader:
    """The ``Date`` header, formatted at most once per second."""

    def __init__(self) -> None:
        self._second = -1
        self._value = ""

    def __call__(self) -> str:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._value = formatdate(now, usegmt=True)
        return self._value


_date = _DateHeader()


def _is_websocket_upgrade(request: HttpRequest) -> bool:
    return wsframe.is_upgrade_request(request.header("upgrade"), request.header("connection"))


def _websocket_key(request: HttpRequest) -> str | None:
    """The client's Sec-WebSocket-Key if the handshake is valid (RFC 6455 §4.2.1)."""
    return wsframe.server_handshake_key(
        request.method, request.header("sec-websocket-version"), request.header("sec-websocket-key")
    )


class _HttpConnection:
    """One TCP connection: keep-alive HTTP/1.1 requests, or one websocket after an
    upgrade."""

    def __init__(self, stream: trio.abc.Stream, app: HttpApp, peer: str) -> None:
        self.stream = stream
        self.app = app
        self.peer = peer
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)

    async def serve(self) -> None:
        first = True
        while True:
            try:
                request, is_upgrade = await self._receive_request(first)
            except h11.RemoteProtocolError as exc:
                await self._refuse(exc.error_status_hint)
                return
            if request is None:
                return
            first = False
            if is_upgrade:
                await self._upgrade(request)
                return
            try:
                response = self.app.handle(request)
            except Exception:
                log.exception("sandbox http handler failed target=%.200s", request.target)
                response = HttpResponse(500, b"Internal Server Error", _PLAIN, close=True)
            if request.method == "HEAD":
                response = HttpResponse(
                    response.status, b"", response.content_type, response.headers, response.close
                )
                keep = await self._send_response(response, head_length=len(response.body))
            else:
                keep = await self._send_response(response)
            if not keep:
                return

    async def _receive_request(self, first: bool) -> tuple[HttpRequest | None, bool]:
        """The next request with its body, or (None, False) when the connection ends
        (closed, idle too long, too slow, body too large: answered or dropped)."""
        conn = self.conn
        deadline = trio.current_time() + (REQUEST_TIMEOUT if first else KEEPALIVE_TIMEOUT)
        head: h11.Request | None = None
        body: list[bytes] = []
        size = 0
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                with trio.move_on_at(deadline):
                    try:
                        data = await self.stream.receive_some(RECEIVE_BYTES)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        return None, False
                    conn.receive_data(data)
                    continue
                if head is not None or self._partial_request_pending():
                    log.info("sandbox http request timed out peer=%s", self.peer)
                return None, False
            if isinstance(event, h11.Request):
                head = event
                # The rest of a request must follow its first bytes promptly.
                deadline = max(deadline, trio.current_time() + REQUEST_TIMEOUT)
                length = _content_length(event)
                if length is not None and length > MAX_BODY_BYTES:
                    await self._send_response(_too_large(), closing=True)
                    return None, False
                if conn.they_are_waiting_for_100_continue:
                    continue_ = h11.InformationalResponse(status_code=100, headers=[])
                    if not await self._write(conn.send(continue_)):
                        return None, False
            elif isinstance(event, h11.Data):
                size += len(event.data)
                if size > MAX_BODY_BYTES:
                    await self._send_response(_too_large(), closing=True)
                    return None, False
                body.append(event.data)
            elif isinstance(event, h11.EndOfMessage):
                assert head is not None
                request = HttpRequest(
                    method=head.method.decode("ascii", "replace").upper(),
                    target=head.target.decode("latin-1"),
                    headers=tuple(
                        (name.decode("latin-1"), value.decode("latin-1"))
                        for name, value in head.headers
                    ),
                    body=b"".join(body),
                    peer=self.peer,
                )
                upgrading = conn.their_state is h11.MIGHT_SWITCH_PROTOCOL
                return request, upgrading and _is_websocket_upgrade(request)
            elif isinstance(event, h11.ConnectionClosed):
                return None, False

    def _partial_request_pending(self) -> bool:
        return bool(self.conn.trailing_data[0])

    async def _refuse(self, status: int) -> None:
        """Answer a malformed request like node does (400, or 431 for huge headers)."""
        if self.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            reason = b"Request Header Fields Too Large" if status == 431 else b"Bad Request"
            await self._send_response(
                HttpResponse(status if status in (400, 431) else 400, reason, _PLAIN),
                closing=True,
            )

    async def _upgrade(self, request: HttpRequest) -> None:
        try:
            decision = self.app.upgrade(request)
        except Exception:
            log.exception("sandbox websocket upgrade failed target=%.200s", request.target)
            decision = HttpResponse(500, b"Internal Server Error", _PLAIN)
        if decision is None:
            return
        if isinstance(decision, HttpResponse):
            await self._send_response(decision, closing=True)
            return
        key = _websocket_key(request)
        if key is None:
            await self._send_response(HttpResponse(400, b"Bad Request", _PLAIN), closing=True)
            return
        switch = h11.InformationalResponse(
            status_code=101,
            reason=b"Switching Protocols",
            headers=[
                (b"Upgrade", b"websocket"),
                (b"Connection", b"Upgrade"),
                (b"Sec-WebSocket-Accept", wsframe.accept_token(key).encode("ascii")),
            ],
        )
        if not await self._write(self.conn.send(switch)):
            return
        trailing, _closed = self.conn.trailing_data
        websocket = WebSocket(self.stream, trailing)
        try:
            await decision(websocket)
        finally:
            await websocket.close(WS_NORMAL_CLOSURE)

    async def _send_response(
        self, response: HttpResponse, *, closing: bool = False, head_length: int | None = None
    ) -> bool:
        """Send ``response``; True if the connection may serve another request."""
        conn = self.conn
        close = closing or response.close
        headers = [
            ("Date", _date()),
            ("Content-Length", str(len(response.body) if head_length is None else head_length)),
        ]
        if response.content_type is not None:
            headers.append(("Content-Type", response.content_type))
        headers.extend(response.headers)
        if close:
            headers.append(("Connection", "close"))
        elif conn.their_http_version == b"1.1":
            headers.append(("Connection", "keep-alive"))
            headers.append(("Keep-Alive", f"timeout={KEEPALIVE_TIMEOUT:g}"))
        try:
            data = conn.send(
                h11.Response(
                    status_code=response.status, headers=headers, reason=_reason(response.status)
                )
            )
            if response.body:
                data += conn.send(h11.Data(data=response.body))
            data += conn.send(h11.EndOfMessage())
        except h11.LocalProtocolError:
            log.info("sandbox http response not sendable peer=%s", self.peer)
            return False
        if not await self._write(data):
            return False
        if close or conn.our_state is h11.MUST_CLOSE or conn.their_state is not h11.DONE:
            return False
        try:
            conn.start_next_cycle()
        except h11.LocalProtocolError:
            return False
        return True

    async def _write(self, data: bytes) -> bool:
        with trio.move_on_after(SEND_TIMEOUT):
            try:
                await self.stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return False
            return True
        log.info("sandbox http client does not read peer=%s", self.peer)
        return False


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b""


def _content_length(request: h11.Request) -> int | None:
    for name, value in request.headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _too_large() -> HttpResponse:
    return HttpResponse(
        413, f"request body over {MAX_BODY_BYTES} bytes".encode(), _PLAIN, close=True
    )


async def serve_connection(stream: trio.abc.Stream, app: HttpApp, peer: str = "") -> None:
    """Serve one accepted connection until it ends. Never raises (except Cancelled):
    errors are logged and end only this connection."""
    try:
        await _HttpConnection(stream, app, peer).serve()
    except (trio.BrokenResourceError, trio.ClosedResourceError, WebSocketClosed):
        pass
    except Exception:
        log.exception("sandbox connection failed peer=%s", peer)
    finally:
        await trio.aclose_forcefully(stream)


async def serve_tcp(
    app: HttpApp,
    *,
    host: str,
    port: int,
    max_connections: int = MAX_CONNECTIONS,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on ``host:port`` (0: any free port) and serve ``app`` until cancelled.
    ``task_status.started`` receives the bound port."""
    listeners = await trio.open_tcp_listeners(port, host=host)
    active = 0

    async def handler(stream: trio.SocketStream) -> None:
        nonlocal active
        if active >= max_connections:
            log.warning("sandbox http connection refused reason=too_many active=%d", active)
            await trio.aclose_forcefully(stream)
            return
        active += 1
        try:
            try:
                host_, port_ = stream.socket.getpeername()[:2]
                peer = f"{host_}:{port_}"
            except OSError:
                peer = "?"
            await serve_connection(stream, app, peer)
        finally:
            active -= 1

    bound = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        task_status.started(bound)
        await trio.serve_listeners(handler, listeners, handler_nursery=nursery)
