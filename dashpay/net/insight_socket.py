"""The Insight websocket watcher: a thin trio shell around ``eio.EngineIOClientState``.

Why it exists: Insight pushes ``tx``, ``txlock`` and ``block`` events over socket.io 2
(Engine.IO 3), and the ``txlock`` event is the only reliable InstantSend signal (REST
caches ``txlock:false`` until the next block). ``InsightSocket.run`` keeps one
connection subscribed to the ``inv`` stream forever and turns what arrives into values
for the payment engine: ``TxObserved``, ``BlockObserved``, and ``SocketConnected`` /
``SocketDisconnected`` so the engine knows when to rescan (Insight never replays events
missed while we were away).

The protocol decisions (what to send, when to ping, when the link is dead) live in
``wire/engineio.py``, the websocket framing and handshake in ``wire/websocket.py`` and
the payload checks in ``wire/insight.py``; this module only moves bytes, keeps time and
retries. Wire facts:
``docs/insight-protocol.md`` sections 1 and 2.

The receive path is built for floods: one task reads the raw trio stream (256 KiB at a
time), decodes every frame that read completes and hands the resulting events to the
engine with ``send_nowait``, so a busy link costs one wake-up per read rather than a
task switch per message (a general websocket library costs ~3x the CPU per event:
benchmarks/README.md, ingest).
"""

from __future__ import annotations

import logging
import math
import ssl
import time
from collections.abc import Callable, Container, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

import trio

from dashpay.domain.backoff import ReconnectPolicy
from dashpay.domain.observations import (
    BlockObserved,
    SocketConnected,
    SocketDisconnected,
    TxObserved,
)
from dashpay.net.link_status import (  # the states, also imported from here
    STATE_CONNECTED,
    STATE_CONNECTING,
    STATE_DISCONNECTED,
    LinkStatus,
)
from dashpay.net.outbound import Outbound, default_outbound, with_trust_hint

__all__ = ["STATE_CONNECTED", "STATE_CONNECTING", "STATE_DISCONNECTED", "InsightSocket"]
from dashpay.wire import websocket as wsframe
from dashpay.wire.engineio import (
    CONNECTED,
    DEFAULT_NAMESPACE,
    MAX_FRAME_CHARS,
    EngineIOClientState,
    EventFrame,
    MalformedFrame,
    OpenFrame,
)
from dashpay.wire.insight import (
    EventError,
    observed_tx,
    parse_block_payload,
    tx_frame_pays_none,
    tx_payload_outputs,
)

log = logging.getLogger("dashpay.insight.socketio")

# --- limits and policy, each with its reason --------------------------------------------

# socket.io's default path; it does not carry Insight's REST prefix (protocol section 1).
SOCKET_IO_PATH = "/socket.io/"
# Frames larger than the soft limit (``max_message_bytes``) are skipped with a warning,
# so one odd event does not cost a reconnect and a rescan. The frame reader fails the
# link (close code 1009) on a message announcing more than this many times the soft
# limit, before buffering it: that is what bounds the memory a hostile peer can make us
# hold.
HARD_LIMIT_FACTOR = 4
# Bytes per socket read. Every message a read completes is handled before the next read
# (no task switch per message), so a large read is what makes a busy link cheap: 256 KiB
# holds ~900 of Insight's ~280-byte events. A quiet link returns far less per read.
RECEIVE_BUFFER_BYTES = 256 * 1024
# How long we wait to send our close frame when the server closed the link or broke the
# protocol. A dead peer never reads it; we drop the connection instead.
CLOSE_TIMEOUT = 2.0
# While the link stays down, one "still down" line per this many seconds at most.
DOWN_LOG_INTERVAL = 60.0
# Warnings about skipped frames/events: at most this many per window, then a count of
# what was suppressed, so a misbehaving server cannot flood the journal.
REJECT_LOG_BURST = 10
REJECT_LOG_WINDOW = 60.0
# Longest piece of a bad frame quoted in a log line.
LOG_EXCERPT_CHARS = 120


_NETWORK_ERRORS = (
    wsframe.HandshakeError,
    OSError,  # includes ssl.SSLError and socket.gaierror
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    trio.TooSlowError,
)


# --- pure helpers -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SocketEndpoint:
    host: str
    port: int
    resource: str  # path and query sent in the upgrade request
    tls: bool

    @property
    def display(self) -> str:
        """Where we connect, for logs: no credentials, no query."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'wss' if self.tls else 'ws'}://{host}:{self.port}{self.resource.split('?')[0]}"


def parse_socket_url(socket_url: str) -> SocketEndpoint:
    """Where the socket.io endpoint of ``socket_url`` is.

    Accepts http/https/ws/wss with or without a path. A path that ends in ``socket.io``
    is kept (a reverse proxy may mount it elsewhere); any other path (typically the
    REST prefix, ``/insight-api``) is replaced by ``/socket.io/``, where socket.io serves
    regardless of Insight's route prefix. Raises ValueError saying what to fix.
    """
    if not isinstance(socket_url, str) or not socket_url.strip():
        raise ValueError("Insight socket URL is empty; give e.g. https://insight.example.com")
    parts = urlsplit(socket_url.strip())
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https", "ws", "wss"):
        raise ValueError(
            f"Insight socket URL scheme {parts.scheme!r} is not supported; "
            "use http://, https://, ws:// or wss://"
        )
    tls = scheme in ("https", "wss")
    if not parts.hostname:
        raise ValueError("Insight socket URL has no host; give e.g. https://insight.example.com")
    try:
        port = parts.port
    except ValueError:
        raise ValueError("Insight socket URL has an invalid port; use a number 1-65535") from None
    if port is None:
        port = 443 if tls else 80
    path = parts.path.rstrip("/")
    path = path + "/" if path.endswith("/socket.io") else SOCKET_IO_PATH
    return SocketEndpoint(parts.hostname, port, f"{path}?EIO=3&transport=websocket", tls)


async def open_websocket(
    endpoint: SocketEndpoint, ssl_context: ssl.SSLContext | None, outbound: Outbound
) -> tuple[trio.abc.Stream, bytes]:
    """TCP (direct or tunnelled through the proxy ``outbound`` picks, + TLS with
    certificate and host name verified) and the websocket upgrade (RFC 6455 section
    4.1). Returns the stream and the bytes that followed the 101 answer (the first
    frames). Shared by every websocket backend."""
    scheme = "wss" if endpoint.tls else "ws"
    stream: trio.abc.Stream = await outbound.open_stream(scheme, endpoint.host, endpoint.port)
    try:
        if endpoint.tls:
            stream = trio.SSLStream(
                stream,
                ssl_context or outbound.tls_context,
                server_hostname=endpoint.host,
                https_compatible=True,
            )
            await stream.do_handshake()
        key = wsframe.new_key()
        await stream.send_all(
            wsframe.handshake_request(
                endpoint.host, endpoint.port, endpoint.resource, key, tls=endpoint.tls
            )
        )
        buffer = b""
        while (split := wsframe.split_handshake_response(buffer)) is None:
            chunk = await stream.receive_some(wsframe.MAX_HANDSHAKE_BYTES)
            if not chunk:
                raise wsframe.HandshakeError(
                    "server closed the connection during the websocket upgrade"
                )
            buffer += chunk
        head, rest = split
        wsframe.check_handshake_response(head, key)
        return stream, rest
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise


def describe_error(exc: BaseException, connect_timeout: float) -> str:
    if isinstance(exc, wsframe.HandshakeError):
        return str(exc)
    if isinstance(exc, trio.TooSlowError):
        return f"no websocket handshake within {connect_timeout:g}s"
    # trio.SSLStream wraps the SSL error (e.g. "certificate verify failed") as the cause.
    cause = exc.__cause__ or exc.__context__
    if isinstance(exc, trio.BrokenResourceError) and cause is not None:
        exc = cause
    text = str(exc) or type(exc).__name__
    return with_trust_hint(f"{type(exc).__name__}: {text}"[:300])


def is_refusal(exc: BaseException) -> bool:
    """Whether the TCP connect was refused (nothing listens there). trio reports a failed
    connect as an OSError caused by a group of each address's error: a refusal is one
    where every address refused."""
    if isinstance(exc, ConnectionRefusedError):
        return True
    cause = exc.__cause__
    if type(exc) is OSError and isinstance(cause, BaseExceptionGroup):
        leaves = cause.exceptions
        return bool(leaves) and all(is_refusal(leaf) for leaf in leaves)
    return False


def closed_by_server(event: wsframe.CloseReceived) -> str:
    if event.code is None:
        return "websocket closed by the server (no status code)"
    text = f"websocket closed by the server (code {event.code}"
    return text + (f": {event.reason[:100]})" if event.reason else ")")


def _frames(texts: Sequence[str]) -> bytes:
    """The websocket frames carrying ``texts``, ready for one write."""
    if not texts:
        return b""
    return b"".join(wsframe.encode_text(text) for text in texts)


def excerpt(message: object) -> str:
    text = repr(message)
    return text if len(text) <= LOG_EXCERPT_CHARS else text[:LOG_EXCERPT_CHARS] + "..."


def _wall(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


class _Link:
    """One connection's shared facts between the reader and the heartbeat task."""

    __slots__ = (
        "scope", "reason", "refused", "connected_at", "reader_blocked", "wake", "stream", "_lock"
    )  # fmt: skip

    def __init__(self, scope: trio.CancelScope) -> None:
        self.scope = scope
        self.reason: str | None = None
        self.refused = False  # the TCP connect was refused
        self.connected_at: float | None = None  # trio clock, once subscribed
        self.reader_blocked = False  # waiting for the consumer, not reading
        self.wake = trio.Event()  # the heartbeat schedule may have moved earlier
        self.stream: trio.abc.Stream | None = None
        self._lock = trio.Lock()  # reader and heartbeat both send; a stream allows one

    def end(self, reason: str) -> None:
        """First caller names the reason. Cancelling the scope drops the connection."""
        if self.reason is None:
            self.reason = reason
        self.scope.cancel()

    async def send(self, data: bytes) -> bool:
        """Write ``data``; on a network error end the link and return False."""
        if not data or self.stream is None:
            return True
        try:
            async with self._lock:
                await self.stream.send_all(data)
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self.end(f"send failed: {describe_error(exc, 0)}")
            return False
        return True

    async def send_close(self, data: bytes, reason: str) -> None:
        """Our close frame, best effort (a dead peer never reads it), then the end."""
        with trio.move_on_after(CLOSE_TIMEOUT):
            await self.send(data)
        self.end(reason)


# --- the shell --------------------------------------------------------------------------


class InsightSocket(LinkStatus):
    """Keeps one subscribed link to Insight's socket.io endpoint and forwards events.

    Read-only status (for ``dashpay status``): ``state`` ("connecting" before the first
    connection, "connected", "disconnected" after a loss while retrying),
    ``connected_since`` / ``disconnected_since`` / ``last_event_at`` (wall time),
    ``reconnects`` (successful connections after the first), ``events_received`` (tx,
    txlock and block events delivered), ``events_rejected`` (frames or payloads skipped
    as malformed or oversized) and ``events_ignored`` (``dashd/*`` and unknown events).

    Connections go directly or through the proxy ``outbound`` names for the URL (an
    HTTP CONNECT tunnel, the proxy resolving the host). For wss/https the server
    certificate is verified with ``outbound``'s trust store (``ssl_context``, when
    given, replaces it).
    """

    def __init__(
        self,
        socket_url: str,
        *,
        reconnect_initial: float = 1.0,
        reconnect_max: float = 60.0,
        connect_timeout: float = 10.0,
        max_message_bytes: int = MAX_FRAME_CHARS,
        subscriptions: Sequence[str] = ("inv",),
        ssl_context: ssl.SSLContext | None = None,
        outbound: Outbound | None = None,
    ) -> None:
        self.endpoint = parse_socket_url(socket_url)
        self._outbound = outbound or default_outbound()
        self._policy = ReconnectPolicy(reconnect_initial, reconnect_max)
        if not connect_timeout > 0:
            raise ValueError(f"connect_timeout must be positive, got {connect_timeout}")
        self._connect_timeout = connect_timeout
        if not 0 < max_message_bytes <= MAX_FRAME_CHARS:
            raise ValueError(f"max_message_bytes must be 1..{MAX_FRAME_CHARS}")
        self._max_message_bytes = max_message_bytes
        self._subscriptions = tuple(subscriptions)
        self._ssl_context = ssl_context  # else the outbound's, built on first use
        super().__init__()
        self.events_ignored = 0
        # Set by the daemon, both or neither: ``watched`` holds two live containers of
        # addresses (the engine's ``watched_addresses``: an address is watched when it
        # is in either), ``unmatched`` counts events for the engine. A tx event whose
        # outputs pay no watched address is checked as always, then counted and
        # dropped here, without an observation or a trip through the engine's channel.
        self.watched: tuple[Container[str], Container[str]] | None = None
        self.unmatched: Callable[[int], None] | None = None

        self._failures = 0  # consecutive attempts that did not get subscribed
        self._down_since: float | None = None  # wall time; None while connected
        self._last_down_log = -math.inf  # trio clock
        self._reject_window_start = -math.inf
        self._reject_logged = 0
        self._reject_suppressed = 0

    # -- the rest of the chain watcher interface (net/chain.py)

    @property
    def display(self) -> str:
        return self.endpoint.display

    def track(self, addresses: Callable[[], Iterable[str]]) -> None:
        """Insight's ``inv`` stream carries every tx: no address list to keep."""

    def watch(self, addresses: Iterable[str]) -> None:
        """As ``track``: nothing to subscribe."""

    async def run(self, send: trio.MemorySendChannel) -> None:
        """Connect, subscribe and forward events into ``send`` until cancelled.

        Network failures never end it; it reconnects as ``ReconnectPolicy`` says:
        within about a second while the server refuses fast or after a link that was
        up, with jittered exponential backoff after slow failures.
        On cancellation the connection is dropped abruptly and nothing more is sent.
        If the receiving side of ``send`` is closed, ``trio.BrokenResourceError``
        propagates (possibly inside an ExceptionGroup): nobody is listening any more.
        """
        while True:
            started = trio.current_time()
            link = await self._session(send)
            now = trio.current_time()
            reason = link.reason or "connection ended"
            if link.connected_at is not None:
                wall = time.time()
                self.link_down(wall)
                self._down_since = wall
                self._last_down_log = now
                self._failures = 0
                lasted = now - link.connected_at
                delay = self._policy.after_drop(lasted)
                log.warning(
                    "insight socket disconnected url=%s reason=%r connected_for=%.1fs",
                    self.endpoint.display,
                    reason,
                    lasted,
                )
                await send.send(SocketDisconnected(at=wall, reason=reason))
            else:
                delay = self._policy.after_attempt_failed(refused=link.refused, took=now - started)
                self._failures += 1
                if self._down_since is None:
                    self._down_since = time.time()
                if now - self._last_down_log >= DOWN_LOG_INTERVAL:
                    self._last_down_log = now
                    log.warning(
                        "insight socket down since %s, retrying (attempt %d) url=%s error=%r",
                        _wall(self._down_since),
                        self._failures,
                        self.endpoint.display,
                        reason,
                    )
                else:
                    log.debug("insight socket attempt %d failed: %s", self._failures, reason)
            await trio.sleep(delay)

    # -- one connection

    async def _session(self, send: trio.MemorySendChannel) -> _Link:
        """One connection from TCP connect to loss; returns why it ended."""
        with trio.CancelScope() as scope:
            link = _Link(scope)
            try:
                with trio.fail_after(self._connect_timeout):
                    stream, first = await self._open()
                link.stream = stream
                try:
                    reader = wsframe.FrameReader(
                        max_message_bytes=self._max_message_bytes * HARD_LIMIT_FACTOR
                    )
                    machine = EngineIOClientState(
                        trio.current_time(),
                        subscriptions=self._subscriptions,
                        handshake_timeout=self._connect_timeout,
                    )
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self._heartbeat, machine, link)
                        await self._read(stream, reader, first, machine, link, send)
                        nursery.cancel_scope.cancel()
                finally:
                    await trio.aclose_forcefully(stream)
            except _NETWORK_ERRORS as exc:
                link.reason = link.reason or describe_error(exc, self._connect_timeout)
                link.refused = link.stream is None and is_refusal(exc)
        return link

    async def _open(self) -> tuple[trio.abc.Stream, bytes]:
        """TCP (+ TLS) and the websocket upgrade, through the proxy when one carries
        the connection (``open_websocket``)."""
        return await open_websocket(self.endpoint, self._ssl_context, self._outbound)

    async def _heartbeat(self, machine: EngineIOClientState, link: _Link) -> None:
        """Pings on schedule and declares the link dead when the peer falls silent."""
        while True:
            with trio.move_on_at(machine.next_wakeup()):
                await link.wake.wait()
            if link.wake.is_set():
                link.wake = trio.Event()
            now = trio.current_time()
            if link.reader_blocked:
                machine.note_alive(now)
            machine.poll(now)
            if machine.dead_reason is not None:
                link.end(machine.dead_reason)
                return
            if not await link.send(_frames(machine.data_to_send())):
                return

    async def _read(
        self,
        stream: trio.abc.Stream,
        reader: wsframe.FrameReader,
        data: bytes,
        machine: EngineIOClientState,
        link: _Link,
        send: trio.MemorySendChannel,
    ) -> None:
        """The per-message path: kept lean, it may see tens of thousands of events/s.

        Every message one read completes is handled before the next read, and events
        go to the engine with ``send_nowait``: no task switch per message. Only when the
        engine's channel is full does the reader wait (back-pressure: it stops reading,
        so TCP flow control slows the server). A tx event that pays nobody (nearly all
        of them) costs an orjson decode, the payload checks and an ``in`` test per
        output (``tx_frame_pays_none``); those of one read are counted
        together, before anything else of the read that may wait.
        """
        limit = self._max_message_bytes
        receive = machine.receive
        receive_data = reader.receive_data
        receive_some = stream.receive_some
        current_time = trio.current_time
        while True:
            if data:
                now = current_time()
                delivered = self.events_received
                messages = receive_data(data)
                if messages:  # each one counts as a sign of life at ``now``
                    machine.note_alive(now)
                watched = self.watched if self.unmatched is not None else None
                if watched is not None:
                    pending, announced = watched
                dropped = 0  # events that paid nobody, not counted yet
                for message in messages:
                    if (
                        watched is not None
                        and type(message) is str
                        and len(message) <= limit
                        and tx_frame_pays_none(message, pending, announced)
                    ):  # the flood: a decode, the checks and a lookup, nothing built
                        dropped += 1
                        continue
                    if dropped:  # counted in order, before anything that may wait
                        self._dropped(dropped)
                        dropped = 0
                    if type(message) is not str:
                        if not await self._on_control(message, reader, machine, link, now):
                            return
                        continue
                    if len(message) > limit:
                        machine.note_alive(now)
                        self._reject(
                            "oversized frame", f"{len(message)} characters > {limit}", message
                        )
                        continue
                    try:
                        frame = receive(message, now)
                    except MalformedFrame as exc:
                        self._reject("malformed frame", str(exc), message)
                        continue
                    if type(frame) is EventFrame:
                        if await self._on_event(frame, link, send):
                            now = current_time()  # we waited for the engine
                        continue
                    if not await link.send(_frames(machine.data_to_send())):
                        return
                    if machine.dead_reason is not None:
                        link.end(machine.dead_reason)
                        return
                    if type(frame) is OpenFrame:  # the ping schedule starts now
                        link.wake.set()
                    if link.connected_at is None and machine.phase == CONNECTED:
                        await self._on_subscribed(machine, link, send)
                if dropped:
                    self._dropped(dropped)
                if self.events_received != delivered:
                    self.last_event_at = time.time()
            try:
                data = await receive_some(RECEIVE_BUFFER_BYTES)
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                link.end(describe_error(exc, self._connect_timeout))
                return
            if not data:
                link.end("server closed the connection without a websocket close frame")
                return

    def _dropped(self, count: int) -> None:
        """``count`` checked tx events that paid no watched address: seen, not handed on."""
        self.events_received += count
        if self.unmatched is not None:
            self.unmatched(count)

    async def _on_control(
        self,
        message: object,
        reader: wsframe.FrameReader,
        machine: EngineIOClientState,
        link: _Link,
        now: float,
    ) -> bool:
        """A websocket-level event; False once the link is over."""
        kind = type(message)
        if kind is wsframe.PingReceived:
            machine.note_alive(now)
            return await link.send(reader.data_to_send())  # the pong the reader queued
        if kind is wsframe.PongReceived:
            machine.note_alive(now)
            return True
        if kind is wsframe.BinaryMessage:
            machine.note_alive(now)
            self._reject("binary frame", "Insight sends text frames only", message.data)
            return True
        if kind is wsframe.CloseReceived:
            await link.send_close(reader.data_to_send(), closed_by_server(message))
            return False
        assert kind is wsframe.Failure
        await link.send_close(
            reader.data_to_send(),
            f"websocket protocol error: {message.reason} (close {message.code})",
        )
        return False

    async def _on_subscribed(
        self, machine: EngineIOClientState, link: _Link, send: trio.MemorySendChannel
    ) -> None:
        link.connected_at = trio.current_time()
        wall = time.time()
        self.link_up(wall)
        opened = machine.open
        details = ""
        if self._down_since is not None:
            details = f" down_for={wall - self._down_since:.1f}s attempts={self._failures + 1}"
        log.info(
            "insight socket connected url=%s sid=%s ping_interval=%gs ping_timeout=%gs "
            "subscriptions=%s%s",
            self.endpoint.display,
            opened.sid if opened else "?",
            opened.ping_interval if opened else 0,
            opened.ping_timeout if opened else 0,
            ",".join(self._subscriptions),
            details,
        )
        self._down_since = None
        self._failures = 0
        await self._deliver(SocketConnected(at=wall), link, send)

    async def _on_event(self, frame: EventFrame, link: _Link, send: trio.MemorySendChannel) -> bool:
        """Validate and forward one event; True if the reader had to wait for the engine."""
        name = frame.name
        value: TxObserved | BlockObserved
        try:
            if frame.namespace != DEFAULT_NAMESPACE:
                self.events_ignored += 1
                return False
            if name == "tx" or name == "txlock":
                args = frame.args
                if len(args) != 1:
                    raise EventError(f"{name} event has {len(args)} arguments, expected 1")
                txid, outputs = tx_payload_outputs(args[0])  # every check, as always
                watched = self.watched
                if watched is not None and self.unmatched is not None:
                    pending, announced = watched
                    for address in outputs:
                        if address in pending or address in announced:
                            break
                    else:  # pays nobody we watch (the hot path in ``_read`` missed it)
                        self._dropped(1)
                        return False
                value = observed_tx(txid, outputs, name == "txlock")
            elif name == "block":
                args = frame.args
                if len(args) != 1:
                    raise EventError(f"block event has {len(args)} arguments, expected 1")
                value = parse_block_payload(args[0])
            else:
                # dashd/* streams (we subscribe to none) and names we do not know.
                self.events_ignored += 1
                log.debug("insight socket ignored event name=%r", name)
                return False
        except EventError as exc:
            self._reject("invalid event", str(exc), frame.args, name=name)
            return False
        waited = await self._deliver(value, link, send)
        self.events_received += 1
        return waited

    async def _deliver(self, value: object, link: _Link, send: trio.MemorySendChannel) -> bool:
        """Hand ``value`` to the engine; True if its channel was full and we waited."""
        try:
            send.send_nowait(value)
            return False
        except trio.WouldBlock:
            # The consumer is behind. Silence from the peer while we are not reading is
            # ours, not the link's: the heartbeat keeps pinging and does not count it.
            link.reader_blocked = True
            try:
                await send.send(value)
            finally:
                link.reader_blocked = False
            return True

    def _reject(self, what: str, reason: str, data: object, *, name: str | None = None) -> None:
        self.events_rejected += 1
        now = trio.current_time()
        if now - self._reject_window_start >= REJECT_LOG_WINDOW:
            if self._reject_suppressed:
                log.warning(
                    "insight socket suppressed=%d more skipped frames in the last %gs",
                    self._reject_suppressed,
                    REJECT_LOG_WINDOW,
                )
            self._reject_window_start = now
            self._reject_logged = 0
            self._reject_suppressed = 0
        if self._reject_logged >= REJECT_LOG_BURST:
            self._reject_suppressed += 1
            return
        self._reject_logged += 1
        log.warning(
            "insight socket skipped %s%s reason=%r data=%s",
            what,
            f" event={name}" if name else "",
            reason,
            excerpt(data),
        )
