"""A lean HTTP/1.1 POST client for callbacks: h11 over trio streams.

The callback sender needs one thing from HTTP: POST a small signed body and learn the
status (and the start of the answer). A general client (httpx) spends ~3 ms of CPU per
callback on redirects, cookies, decoders and its pool machinery; this one does only:

- **Keep-alive per origin** (scheme, host, port). An idle connection is reused only if
  h11 says the previous exchange left it reusable (both sides DONE, no
  ``Connection: close``), the server has not closed it (the socket is not readable
  while idle) and it has been idle for less than ``KEEPALIVE_SECONDS``.
- **One retry on a stale connection.** A server may close an idle connection at the
  moment we send on it (RFC 9112 §9.3.1 lets a client retry then). A request on a
  *reused* connection that fails before any byte of an answer arrived is sent once
  more on a fresh connection; a fresh connection is never retried here.
- **The connection target comes from a guard.** ``connect_addresses(host, port)`` returns
  the addresses that passed the caller's checks (the SSRF rules); the client connects
  only to those, never resolving the name itself, so DNS rebinding cannot slip an
  unchecked address in between.
- **TLS** for https: certificate and host name verified against the URL's host
  (SNI), ALPN offers only http/1.1.
- **Bounded answers.** Headers at most ``MAX_HEADER_BYTES`` (h11's limit); the body is
  read up to ``max_body`` bytes for ``body_seconds`` and never decompressed (nothing
  asks for compression). A body cut short closes the connection instead of reusing it.
- **Headers checked, not trusted.** h11 writes the request line and the headers it
  acts on (Host, Content-Length); every other header is checked against RFC 9110's
  grammar (no CR, LF or control character can smuggle a header in) and appended to
  the block, which costs a third of building them all as h11 events.
- **Nothing else**: no proxies, no redirects followed, no cookies.

Errors are ``HttpPostError`` subclasses whose text says what happened. The caller
bounds the whole attempt (``trio.move_on_after``); a cancelled exchange closes its
connection, which is then never reused.
"""

from __future__ import annotations

import os
import re
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import h11
import trio

# h11's own default for the largest header block it buffers (16 KiB), as in tomcat
# (8 KiB) and node.js (16 KiB since v13): a hostile server cannot make us buffer more.
MAX_HEADER_BYTES = 16 * 1024
# One receive of this size holds the status line, headers and a small body (the usual
# "ok"), so a typical answer is parsed from a single read.
RECEIVE_BYTES = 64 * 1024
# How long an idle connection is kept for reuse. node.js closes idle keep-alive
# connections after 5 s by default (server.keepAliveTimeout); staying under it makes
# the close-while-we-send race rare (the one retry covers the rest).
KEEPALIVE_SECONDS = 4.0
# How deep describe_error looks into wrapped exceptions.
MAX_EXCEPTION_CHAIN = 8
# URLs whose parsed origin and target are remembered (then the memory starts afresh).
MAX_REMEMBERED_URLS = 4096
# How often idle connections of every origin are checked for expiry.
PRUNE_SECONDS = 1.0
# The request headers h11 itself acts on (framing, connection management, RFC 9112
# §6 and §9): they go through h11 so that its state machine knows them. Any other
# header is checked here and written straight after them (see _request).
H11_HEADERS = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "expect", "upgrade", "te"}
)
# RFC 9110 §5.1: a field name is a token. §5.5: a field value is visible ASCII with
# spaces or tabs inside, never at either end; no CR, LF or other control character
# (so no header can be smuggled in), the same rule h11 applies (obs-text aside).
_FIELD_NAME = re.compile(r"[-!#$%&'*+.^_`|~0-9A-Za-z]+")
_FIELD_VALUE = re.compile(r"(?:[\x21-\x7e](?:[\x20-\x7e\t]*[\x21-\x7e])?)?")

Origin = tuple[str, str, int]
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
    headers: tuple[tuple[bytes, bytes], ...]  # names lower-cased (h11)
    body: bytes  # at most max_body bytes; may be cut short (slow or huge body)

    def header(self, name: bytes) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value.decode("latin-1")
        return None


def default_tls_context() -> ssl.SSLContext:
    """Verification on, host names checked. Trust: ``SSL_CERT_FILE`` / ``SSL_CERT_DIR``
    when set (as OpenSSL and httpx honour them), else certifi's bundle, the same CAs
    httpx trusted before this client existed."""
    cafile = os.environ.get("SSL_CERT_FILE")
    capath = os.environ.get("SSL_CERT_DIR")
    if not cafile and not capath:
        import certifi  # a dependency of httpx, so always installed with dashpay

        cafile = certifi.where()
    context = ssl.create_default_context(cafile=cafile or None, capath=capath or None)
    context.set_alpn_protocols(["http/1.1"])
    return context


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


class _Connection:
    __slots__ = ("stream", "protocol", "idle_since", "reused", "closed")

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.protocol = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEADER_BYTES)
        self.idle_since = 0.0
        self.reused = False
        self.closed = False

    def socket(self) -> trio.socket.SocketType | None:
        stream = self.stream
        if isinstance(stream, trio.SSLStream):
            stream = stream.transport_stream
        return getattr(stream, "socket", None)

    def closed_by_peer(self) -> bool:
        """An idle connection with something to read has either been closed by the
        server (EOF) or received bytes nobody asked for: neither may be reused."""
        sock = self.socket()
        if sock is None:
            return True
        try:
            return bool(sock.is_readable())
        except OSError:
            return True

    def close(self) -> None:
        """Close at once, without a TLS close_notify (the peer sees an EOF); safe in a
        cancelled scope and idempotent."""
        if not self.closed:
            self.closed = True
            sock = self.socket()
            if sock is not None:
                sock.close()


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
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._connect_addresses = connect_addresses
        self.max_body = max_body
        self.body_seconds = body_seconds
        self.max_idle_per_origin = max(1, max_idle_per_origin)
        self._tls_context = tls_context
        self._clock = clock
        self._idle: dict[Origin, list[_Connection]] = {}
        self._split_urls: dict[str, tuple[Origin, str]] = {}
        self._last_prune = 0.0
        self.connections_made = 0  # how often a new connection was needed
        self.stale_retries = 0  # requests sent again after a reused connection broke

    @property
    def tls_context(self) -> ssl.SSLContext:
        if self._tls_context is None:
            self._tls_context = default_tls_context()
        return self._tls_context

    async def post(self, url: str, headers: Sequence[tuple[str, str]], body: bytes) -> PostResponse:
        """POST ``body`` to ``url`` (http or https, already validated by the caller).
        Raises HttpPostError, or whatever ``connect_addresses`` raises (the guard's
        refusal); on cancellation the connection in use is closed."""
        split = self._split_urls.get(url)
        if split is None:
            if len(self._split_urls) >= MAX_REMEMBERED_URLS:
                self._split_urls.clear()
            split = self._split_urls[url] = _origin_and_target(url)
        origin, target = split
        request = _request(origin, target, headers, body)
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
                await trio.aclose_forcefully(connection.stream)

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
        protocol = connection.protocol
        if protocol.our_state is h11.DONE and protocol.their_state is h11.DONE:
            connections = self._idle.setdefault(origin, [])
            if len(connections) < self.max_idle_per_origin:
                protocol.start_next_cycle()
                connection.idle_since = self._clock()
                connections.append(connection)
                return
        connection.close()

    async def _connect(self, origin: Origin) -> _Connection:
        scheme, host, port = origin
        addresses = await self._connect_addresses(host, port)
        errors: list[str] = []
        stream: trio.abc.Stream | None = None
        for address in addresses:
            try:
                stream = await _open_tcp(address, port)
                break
            except OSError as exc:
                errors.append(describe_error(exc))
        if stream is None:
            raise ConnectFailed("; ".join(dict.fromkeys(errors)) or f"{host} has no addresses")
        self.connections_made += 1
        if scheme == "https":
            stream = trio.SSLStream(
                stream, self.tls_context, server_hostname=host, https_compatible=True
            )
        connection = _Connection(stream)
        if isinstance(stream, trio.SSLStream):
            try:
                await stream.do_handshake()
            except (trio.BrokenResourceError, ssl.SSLError, OSError) as exc:
                connection.close()
                detail = describe_error(exc)
                raise TlsFailed(f"TLS handshake with {host} failed: {detail}") from None
            except BaseException:
                connection.close()
                raise
        return connection

    # -- one exchange ------------------------------------------------------------------
    async def _exchange(
        self, connection: _Connection, origin: Origin, request: tuple[h11.Request, bytes, bytes]
    ) -> PostResponse:
        protocol = connection.protocol
        head, more_headers, body = request
        # Head, body and end in one write: one segment for a small callback. h11 ends
        # its header block with an empty line; the other header lines go before it.
        start = protocol.send(head)
        assert start is not None and start.endswith(b"\r\n\r\n")
        wire = start[:-2] + more_headers + b"\r\n" + protocol.send(h11.Data(data=body))
        wire += protocol.send(h11.EndOfMessage())
        answered = False  # any byte of an answer arrived
        try:
            try:
                await connection.stream.send_all(wire)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                detail = describe_error(exc)
                raise BadResponse(f"connection lost while sending: {detail}") from None
            while True:
                event = protocol.next_event()
                if event is h11.NEED_DATA:
                    data = await _receive(connection.stream)
                    answered = answered or bool(data)
                    if not data and not answered:
                        raise BadResponse("the server closed the connection without answering")
                    protocol.receive_data(data)
                    continue
                if isinstance(event, h11.InformationalResponse):
                    continue  # 100 Continue and friends: the real answer follows
                if isinstance(event, h11.Response):
                    break
                raise BadResponse(f"unexpected {type(event).__name__} before a status line")
        except BadResponse as exc:
            connection.close()
            if connection.reused and not answered:
                raise _Stale(exc) from None
            raise
        except h11.RemoteProtocolError as exc:
            connection.close()
            raise BadResponse(f"invalid HTTP response: {exc}") from None
        except BaseException:
            connection.close()  # cancelled (timeout) or a surprise: never reuse it
            raise
        answer = await self._read_body(connection)
        headers = tuple((bytes(k), bytes(v)) for k, v in event.headers)
        if not connection.closed:
            self._release(origin, connection)
        return PostResponse(event.status_code, headers, answer)

    async def _read_body(self, connection: _Connection) -> bytes:
        """The body, up to ``max_body`` bytes within ``body_seconds``; when it is cut
        short (too big, too slow, broken) the connection is closed and what arrived is
        returned: the status is already known, so a bad body is not an error. A small
        body that came with the headers is taken without another receive or timer."""
        protocol = connection.protocol
        data = bytearray()
        state = self._take_buffered(protocol, data)
        if state is _MORE:
            with trio.move_on_after(self.body_seconds):
                try:
                    while state is _MORE:
                        protocol.receive_data(await _receive(connection.stream))
                        state = self._take_buffered(protocol, data)
                except HttpPostError:
                    state = _STOP
        if state is not _DONE:
            connection.close()
        return bytes(data[: self.max_body])

    def _take_buffered(self, protocol: h11.Connection, data: bytearray) -> object:
        """Move the body h11 already holds into ``data``: _DONE at the end of the
        message, _MORE when it needs bytes, _STOP when the body is broken or too big."""
        try:
            while len(data) < self.max_body:
                event = protocol.next_event()
                if event is h11.NEED_DATA:
                    return _MORE
                if isinstance(event, h11.Data):
                    data += event.data
                    continue
                return _DONE if isinstance(event, h11.EndOfMessage) else _STOP
        except h11.RemoteProtocolError:
            return _STOP
        return _STOP


# The states of reading a body (see HttpPoster._take_buffered).
_DONE, _MORE, _STOP = object(), object(), object()


async def _open_tcp(address: str, port: int) -> trio.SocketStream:
    """A TCP connection to exactly ``address`` (an IP literal: nothing is resolved)."""
    family = trio.socket.AF_INET6 if ":" in address else trio.socket.AF_INET
    sock = trio.socket.socket(family, trio.socket.SOCK_STREAM)
    try:
        await sock.connect((address, port))
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(sock)  # sets TCP_NODELAY


async def _receive(stream: trio.abc.Stream) -> bytes:
    try:
        return await stream.receive_some(RECEIVE_BYTES)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
        raise BadResponse(f"connection lost: {describe_error(exc)}") from None


def _origin_and_target(url: str) -> tuple[Origin, str]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ConnectFailed(f"unsupported URL scheme {scheme!r}: only http and https")
    host = (parts.hostname or "").lower()
    if not host:
        raise ConnectFailed("the URL has no host")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError as exc:
        raise ConnectFailed(f"bad port in the URL: {exc}") from None
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return (scheme, host, port), target


def _request(
    origin: Origin, target: str, headers: Sequence[tuple[str, str]], body: bytes
) -> tuple[h11.Request, bytes, bytes]:
    """The request for h11 (Host, Content-Length and any other header h11 acts on),
    the other header lines, checked and rendered here, and the body.

    Building an ``h11.Request`` validates every header with several regular
    expressions and allocations: a third of h11's cost per callback with the six
    headers a callback carries. h11 needs only the headers it acts on; the rest
    (content type, user agent, the Dashpay-* headers) are checked with one pattern
    each and appended to the header block h11 writes."""
    scheme, host, port = origin
    shown = f"[{host}]" if ":" in host else host
    if port != (443 if scheme == "https" else 80):
        shown += f":{port}"
    fields = [("Host", shown), ("Content-Length", str(len(body)))]
    lines = []
    for name, value in headers:
        if name.lower() in H11_HEADERS:
            fields.append((name, value))
            continue
        if not _FIELD_NAME.fullmatch(name) or not _FIELD_VALUE.fullmatch(value):
            raise ValueError(f"invalid request header {name!r}: {value!r}")
        lines.append(f"{name}: {value}\r\n")
    return h11.Request(method="POST", target=target, headers=fields), "".join(lines).encode(), body
