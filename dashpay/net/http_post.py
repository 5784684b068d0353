"""A lean HTTP/1.1 POST client for callbacks: our own codec over trio sockets.

The callback sender needs one thing from HTTP: POST a small signed body and learn the
status (and the start of the answer). A general client (httpx) spends ~3 ms of CPU per
callback on redirects, cookies, decoders and its pool machinery; this one does only:

- **Our own strict codec.** ``httpwire`` writes the request in one ``bytes`` and parses
  the answer (sans-IO, like ``insight/wsframe.py``); a server that breaks HTTP/1.1 gets
  a ``BadResponse`` saying how. It replaced h11, whose general state machine cost
  ~48 µs per exchange.
- **Keep-alive per origin** (scheme, host, port). An idle connection is reused only if
  the codec says the previous answer left it reusable (no ``Connection: close``, a
  known length, nothing after it), the server has not closed it (the socket is not
  readable while idle: one zero-timeout poll) and it has been idle for less than
  ``KEEPALIVE_SECONDS``.
- **Plain http on the raw socket.** A request is sent with a non-blocking ``send``
  (waiting for the socket only when the kernel's buffer is full) and the answer read
  by waiting until the socket is readable, then ``recv``: an answer is never there
  right after we send, so nothing is tried in vain, and trio's stream wrappers (a
  checkpoint per call) stay out of the way. Every exchange waits at least once, so the
  caller's deadline always gets a chance to cancel it.
- **One retry on a stale connection.** A server may close an idle connection at the
  moment we send on it (RFC 9112 §9.3.1 lets a client retry then). A request on a
  *reused* connection that fails before any byte of an answer arrived is sent once
  more on a fresh connection; a fresh connection is never retried here.
- **The connection target comes from a guard.** ``connect_addresses(host, port)`` returns
  the addresses that passed the caller's checks (the SSRF rules); the client connects
  only to those, never resolving the name itself, so DNS rebinding cannot slip an
  unchecked address in between.
- **TLS** for https through ``trio.SSLStream``: certificate and host name verified
  against the URL's host (SNI) with the one trust store (``net/outbound.py``), ALPN
  offers only http/1.1.
- **Bounded answers.** Headers at most ``httpwire.MAX_HEADER_BYTES``; the body is read
  up to ``max_body`` bytes for ``body_seconds`` and never decompressed (nothing asks
  for compression). A body cut short closes the connection instead of reusing it.
- **Headers checked, not trusted.** Every request header is checked against RFC 9110's
  grammar (no CR, LF or control character can smuggle a header in); Host and
  Content-Length are the codec's own, and so are the other framing and connection
  headers, which a caller cannot set.
- **Proxies** (``Outbound.proxy_for``: ``[network] proxy``, ``HTTPS_PROXY``,
  ``NO_PROXY``...): the connection is a CONNECT tunnel through the proxy, for http
  targets too, to the address the guard checked (an IP literal), never to the name:
  the proxy cannot resolve the name to somewhere the guard did not allow. The proxy
  itself is not judged by the guard; it is the operator's own hop.
- **Nothing else**: no redirects followed, no cookies.

Errors are ``HttpPostError`` subclasses whose text says what happened. The caller
bounds the whole attempt (``trio.move_on_after``); a cancelled or failed exchange
closes its connection, which is then never reused.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import trio

from dashpay.domain.limits import MAX_REMEMBERED_URLS
from dashpay.net.outbound import (
    Outbound,
    ProxyError,
    default_outbound,
    secure_proxy_stream,
    tunnel,
    with_trust_hint,
)
from dashpay.wire import http1 as httpwire
from dashpay.wire.http1 import END_OF_MESSAGE, NEED_DATA, InvalidResponse
from dashpay.wire.proxy import ProxyURL

# The largest response head we buffer (the codec's limit: 16 KiB, as h11 and node.js).
MAX_HEADER_BYTES = httpwire.MAX_HEADER_BYTES
# One receive of this size holds the status line, headers and a small body (the usual
# "ok"), so a typical answer is parsed from a single read.
RECEIVE_BYTES = 64 * 1024
# How long an idle connection is kept for reuse. node.js closes idle keep-alive
# connections after 5 s by default (server.keepAliveTimeout); staying under it makes
# the close-while-we-send race rare (the one retry covers the rest).
KEEPALIVE_SECONDS = 4.0
# How deep describe_error looks into wrapped exceptions.
MAX_EXCEPTION_CHAIN = 8
# How often idle connections of every origin are checked for expiry.
PRUNE_SECONDS = 1.0

Origin = tuple[str, str, int]
# The port a URL without one means (RFC 9110 §4.2).
DEFAULT_PORTS = {"http": 80, "https": 443}
ConnectAddresses = Callable[[str, int], Awaitable[Sequence[str]]]


class HttpPostError(Exception):
    """A POST got no usable answer; ``str()`` says why."""


class ConnectFailed(HttpPostError):
    """No connection could be made (refused, unreachable, DNS)."""


class TlsFailed(HttpPostError):
    """The TLS handshake failed (certificate, host name, protocol)."""


class BadResponse(HttpPostError):
    """The server broke HTTP/1.1 (status line, headers, framing) or hung up mid-answer."""


class _Stale(Exception):
    """A reused connection failed before any answer byte: worth one more try."""

    def __init__(self, error: HttpPostError) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass(frozen=True, slots=True)
class PostResponse:
    status: int
    headers: tuple[tuple[bytes, bytes], ...]  # names lower-cased
    body: bytes  # at most max_body bytes; may be cut short (slow or huge body)
    complete: bool = True  # False: the body was cut short (too big, too slow, broken)

    def header(self, name: bytes) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value.decode("latin-1")
        return None


def describe_error(exc: BaseException) -> str:
    """The innermost useful message of an exception chain (trio wraps OSError/SSLError,
    sometimes under an empty message)."""
    message = ""
    seen: BaseException | None = exc
    for _ in range(MAX_EXCEPTION_CHAIN):
        if seen is None:
            break
        message = str(seen) or message
        seen = seen.__cause__ or seen.__context__
    return message or type(exc).__name__


# -- connections ---------------------------------------------------------------------------


class _Connection:
    """One TCP connection and its place in the pool. ``send_all`` and ``receive`` raise
    BadResponse when the connection breaks; ``receive`` returns b"" at EOF."""

    __slots__ = ("sock", "_poll", "idle_since", "reused", "closed")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock  # non-blocking, TCP_NODELAY
        self._poll = select.poll()
        self._poll.register(sock, select.POLLIN)
        self.idle_since = 0.0
        self.reused = False
        self.closed = False

    async def send_all(self, data: bytes) -> None:
        """Send everything; waits for the socket only when the kernel cannot take it
        all at once (a callback's request normally leaves in one ``send``)."""
        sock = self.sock
        try:
            try:
                sent = sock.send(data)
            except BlockingIOError:
                sent = 0
            if sent < len(data):
                view = memoryview(data)
                while sent < len(view):
                    await trio.lowlevel.wait_writable(sock)
                    with contextlib.suppress(BlockingIOError):
                        sent += sock.send(view[sent:])
        except (OSError, trio.ClosedResourceError) as exc:
            raise BadResponse(f"connection lost while sending: {describe_error(exc)}") from None

    async def receive(self) -> bytes:
        """The next bytes the server sent (b"" at EOF). Always waits for readability
        first (a checkpoint): called right after a request, the answer is not there yet."""
        sock = self.sock
        try:
            while True:
                await trio.lowlevel.wait_readable(sock)
                try:
                    return sock.recv(RECEIVE_BYTES)
                except BlockingIOError:
                    continue
        except (OSError, trio.ClosedResourceError) as exc:
            raise BadResponse(f"connection lost: {describe_error(exc)}") from None

    def closed_by_peer(self) -> bool:
        """An idle connection with something to read has either been closed by the
        server (EOF) or received bytes nobody asked for: neither may be reused. Asked
        with a zero-timeout poll(2) on the connection's own poll object (errors and
        hang-ups are reported too): ~0.45 µs, where building a poll object per check
        (trio's ``is_readable``) costs ~1.1 µs and a ``MSG_PEEK`` recv, whose usual
        answer is an exception, ~1.3 µs."""
        try:
            return bool(self._poll.poll(0))
        except OSError:
            return True

    def close(self) -> None:
        """Close at once, without a TLS close_notify (the peer sees an EOF); safe in a
        cancelled scope and idempotent. Must run inside trio (it wakes any waiter)."""
        if not self.closed:
            self.closed = True
            trio.lowlevel.notify_closing(self.sock)
            self.sock.close()


class _StreamConnection(_Connection):
    """The same over a trio stream that owns more than the socket: ``trio.SSLStream``
    (the encryption state), or a tunnel inside TLS to an https:// proxy."""

    __slots__ = ("stream",)

    def __init__(self, sock: socket.socket, stream: trio.abc.Stream) -> None:
        super().__init__(sock)
        self.stream = stream

    async def send_all(self, data: bytes) -> None:
        try:
            await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise BadResponse(f"connection lost while sending: {describe_error(exc)}") from None

    async def receive(self) -> bytes:
        try:
            return await self.stream.receive_some(RECEIVE_BYTES)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise BadResponse(f"connection lost: {describe_error(exc)}") from None


class HttpPoster:
    """POST over pooled HTTP/1.1 connections (see the module docstring).

    ``max_idle_per_origin`` caps how many idle connections are kept per origin; a
    connection beyond it is closed after its exchange. Use ``aclose()`` to close every
    idle connection; connections in use are closed by the exchanges that own them."""

    def __init__(
        self,
        connect_addresses: ConnectAddresses,
        *,
        max_body: int,
        body_seconds: float,
        max_idle_per_origin: int = 8,
        tls_context: ssl.SSLContext | None = None,
        outbound: Outbound | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``outbound``: the proxies and trust store (default: the environment's);
        ``tls_context``, when given, replaces its trust store."""
        self._connect_addresses = connect_addresses
        self._outbound = outbound or default_outbound()
        self.max_body = max_body
        self.body_seconds = body_seconds
        self.max_idle_per_origin = max(1, max_idle_per_origin)
        self._tls_context = tls_context
        self._clock = clock
        self._idle: dict[Origin, list[_Connection]] = {}
        self._split_urls: dict[str, tuple[Origin, str, str]] = {}
        self._last_prune = 0.0
        self.connections_made = 0  # how often a new connection was needed
        self.stale_retries = 0  # requests sent again after a reused connection broke

    @property
    def tls_context(self) -> ssl.SSLContext:
        return self._tls_context or self._outbound.tls_context

    async def post(self, url: str, headers: Sequence[tuple[str, str]], body: bytes) -> PostResponse:
        """POST ``body`` to ``url`` (http or https, already validated by the caller).
        Raises HttpPostError, ValueError for a header that breaks RFC 9110's grammar,
        or whatever ``connect_addresses`` raises (the guard's refusal); on cancellation
        the connection in use is closed."""
        return await self.request("POST", url, headers, body)

    async def request(
        self, method: str, url: str, headers: Sequence[tuple[str, str]], body: bytes = b""
    ) -> PostResponse:
        """``post`` with another method (the Insight REST client's GETs)."""
        split = self._split_urls.get(url)
        if split is None:
            if len(self._split_urls) >= MAX_REMEMBERED_URLS:
                self._split_urls.clear()
            split = self._split_urls[url] = _origin_and_target(url)
        origin, target, authority = split
        request = httpwire.encode_request(method, target, authority, headers, body)
        connection = self._take_idle(origin)
        if connection is not None:
            try:
                return await self._exchange(connection, origin, request)
            except _Stale:
                self.stale_retries += 1  # the server dropped it as we sent: one more try
        connection = await self._connect(origin)
        try:
            return await self._exchange(connection, origin, request)
        except _Stale as stale:
            raise stale.error from None

    async def aclose(self) -> None:
        idle, self._idle = self._idle, {}
        for connections in idle.values():
            for connection in connections:
                connection.close()
        await trio.lowlevel.checkpoint()

    # -- the pool ----------------------------------------------------------------------
    def _take_idle(self, origin: Origin) -> _Connection | None:
        now = self._clock()
        if now - self._last_prune >= PRUNE_SECONDS:
            self._prune(now)
        connections = self._idle.get(origin)
        while connections:
            connection = connections.pop()  # the most recently used is the likeliest alive
            if now - connection.idle_since < KEEPALIVE_SECONDS and not connection.closed_by_peer():
                connection.reused = True
                return connection
            connection.close()
        return None

    def _prune(self, now: float) -> None:
        self._last_prune = now
        for origin in list(self._idle):
            keep = []
            for connection in self._idle[origin]:
                if now - connection.idle_since < KEEPALIVE_SECONDS:
                    keep.append(connection)
                else:
                    connection.close()
            if keep:
                self._idle[origin] = keep
            else:
                del self._idle[origin]

    def _release(self, origin: Origin, connection: _Connection) -> None:
        """Back to the pool after an answer the codec called reusable."""
        connections = self._idle.setdefault(origin, [])
        if len(connections) < self.max_idle_per_origin:
            connection.idle_since = self._clock()
            connections.append(connection)
        else:
            connection.close()

    async def _connect(self, origin: Origin) -> _Connection:
        scheme, host, port = origin
        addresses = await self._connect_addresses(host, port)
        proxy = self._outbound.proxy_for(scheme, host, port)
        if proxy is None:
            sock = await _open_first(addresses, port, f"{host} has no addresses")
            stream: trio.abc.Stream | None = None
        else:
            sock, stream = await self._tunnel(proxy, addresses, port)
        self.connections_made += 1
        if scheme != "https":
            return _Connection(sock) if stream is None else _StreamConnection(sock, stream)
        if stream is None:
            stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
        secure = trio.SSLStream(
            stream, self.tls_context, server_hostname=host, https_compatible=True
        )
        connection = _StreamConnection(sock, secure)
        try:
            await secure.do_handshake()
        except (trio.BrokenResourceError, ssl.SSLError, OSError) as exc:
            connection.close()
            detail = with_trust_hint(describe_error(exc))
            raise TlsFailed(f"TLS handshake with {host} failed: {detail}") from None
        except BaseException:
            connection.close()
            raise
        return connection

    async def _tunnel(
        self, proxy: ProxyURL, addresses: Sequence[str], port: int
    ) -> tuple[socket.socket, trio.abc.Stream | None]:
        """A tunnel through ``proxy`` to the first checked address it reaches: the
        socket to the proxy and, for an https:// proxy, the TLS stream over it (None:
        the tunnel is the bare socket)."""
        errors: list[str] = []
        for address in addresses:
            proxy_addresses = await resolve_configured(
                proxy.host, proxy.port, f"the proxy {proxy.display}"
            )
            sock = await _open_first(
                proxy_addresses, proxy.port, f"{proxy.display} has no addresses"
            )
            stream: trio.abc.Stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
            try:
                stream = await secure_proxy_stream(stream, proxy, self.tls_context)
                await tunnel(stream, proxy, address, port)
            except ProxyError as exc:
                _close_socket(sock)
                errors.append(str(exc))
                continue
            except BaseException:
                _close_socket(sock)
                raise
            return sock, stream if proxy.tls else None
        raise ConnectFailed("; ".join(dict.fromkeys(errors)) or "no address to tunnel to")

    # -- one exchange ------------------------------------------------------------------
    async def _exchange(
        self, connection: _Connection, origin: Origin, request: bytes
    ) -> PostResponse:
        reader = httpwire.ResponseReader()
        answered = False  # any byte of an answer arrived
        try:
            # An expired deadline sends nothing (the send below is not a checkpoint).
            await trio.lowlevel.checkpoint_if_cancelled()
            await connection.send_all(request)
            while True:
                data = await connection.receive()
                if not data and not answered:
                    raise BadResponse("the server closed the connection without answering")
                answered = True
                reader.receive_data(data)
                head = reader.next_event()
                if head is not NEED_DATA:
                    break
        except BadResponse as exc:
            connection.close()
            if connection.reused and not answered:
                raise _Stale(exc) from None
            raise
        except InvalidResponse as exc:
            connection.close()
            raise BadResponse(f"invalid HTTP response: {exc}") from None
        except BaseException:
            connection.close()  # cancelled (timeout) or a surprise: never reuse it
            raise
        assert isinstance(head, httpwire.Response)
        answer, complete = await self._read_body(connection, reader)
        if not connection.closed:
            self._release(origin, connection)
        return PostResponse(head.status, head.headers, answer, complete)

    async def _read_body(
        self, connection: _Connection, reader: httpwire.ResponseReader
    ) -> tuple[bytes, bool]:
        """The body, up to ``max_body`` bytes within ``body_seconds``; when it is cut
        short (too big, too slow, broken) the connection is closed and what arrived is
        returned: the status is already known, so a bad body is not an error. A small
        body that came with the headers is taken without another receive or timer.
        The connection is left open only when the answer ended and may be reused.
        Returns the body and whether it is complete."""
        data = bytearray()
        state = self._take_buffered(reader, data)
        if state is _MORE:
            try:
                with trio.move_on_after(self.body_seconds):
                    try:
                        while state is _MORE:
                            reader.receive_data(await connection.receive())
                            state = self._take_buffered(reader, data)
                    except HttpPostError:
                        state = _STOP
            except BaseException:
                connection.close()  # cancelled from outside mid-body: never reuse it
                raise
        if state is not _DONE or not reader.reusable:
            connection.close()
        return bytes(data[: self.max_body]), state is _DONE

    def _take_buffered(self, reader: httpwire.ResponseReader, data: bytearray) -> object:
        """Move the body the reader already holds into ``data``: _DONE at the end of
        the message, _MORE when it needs bytes, _STOP when the body is broken or too
        big."""
        try:
            while True:
                event = reader.next_event()
                if event is END_OF_MESSAGE:
                    return _DONE
                if event is NEED_DATA:
                    return _MORE if len(data) < self.max_body else _STOP
                data += event  # type: ignore[operator]  # body bytes
                if len(data) > self.max_body:
                    return _STOP
        except InvalidResponse:
            return _STOP


# The states of reading a body (see HttpPoster._take_buffered).
_DONE, _MORE, _STOP = object(), object(), object()


async def _open_first(addresses: Sequence[str], port: int, none: str) -> socket.socket:
    """A connection to the first of ``addresses`` (IP literals) that accepts one."""
    errors: list[str] = []
    for address in addresses:
        try:
            return await _open_tcp(address, port)
        except OSError as exc:
            errors.append(describe_error(exc))
    raise ConnectFailed("; ".join(dict.fromkeys(errors)) or none)


async def resolve_configured(host: str, port: int, what: str | None = None) -> list[str]:
    """The addresses of a host the operator configured (a proxy, Insight, dashd, a price
    provider), in the resolver's order: not judged by the guard, which is for callback
    targets. ``what`` names it in the error (default: the host)."""
    try:
        infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise ConnectFailed(f"cannot resolve {what or host}: {exc}") from None
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


async def configured_addresses(outbound: Outbound, scheme: str, host: str, port: int) -> list[str]:
    """An ``HttpPoster`` address source for a configured host: through a proxy the name
    itself (the proxy resolves it, and may be the only one that can), else its
    addresses here."""
    if outbound.proxy_for(scheme, host, port) is not None:
        return [host]
    return await resolve_configured(host, port)


def _close_socket(sock: socket.socket) -> None:
    trio.lowlevel.notify_closing(sock)
    sock.close()


async def _open_tcp(address: str, port: int) -> socket.socket:
    """A non-blocking TCP connection (TCP_NODELAY) to exactly ``address`` (an IP
    literal: nothing is resolved)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        error = sock.connect_ex((address, port))
        if error == errno.EINPROGRESS:
            await trio.lowlevel.wait_writable(sock)
            error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if error:
            raise OSError(error, f"connect to {address} port {port}: {os.strerror(error)}")
    except BaseException:
        _close_socket(sock)
        raise
    return sock


def _origin_and_target(url: str) -> tuple[Origin, str, str]:
    """(origin, request target, Host header value) of a URL."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ConnectFailed(f"unsupported URL scheme {scheme!r}: only http and https")
    host = (parts.hostname or "").lower()
    if not host:
        raise ConnectFailed("the URL has no host")
    try:
        port = parts.port or DEFAULT_PORTS[scheme]
    except ValueError as exc:
        raise ConnectFailed(f"bad port in the URL: {exc}") from None
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    authority = f"[{host}]" if ":" in host else host
    if port != DEFAULT_PORTS[scheme]:
        authority += f":{port}"
    return (scheme, host, port), target, authority
