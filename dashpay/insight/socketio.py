"""The Insight websocket watcher: a thin trio shell around ``eio.EngineIOClientState``.

Why it exists: Insight pushes ``tx``, ``txlock`` and ``block`` events over socket.io 2
(Engine.IO 3), and the ``txlock`` event is the only reliable InstantSend signal (REST
caches ``txlock:false`` until the next block). ``InsightSocket.run`` keeps one
connection subscribed to the ``inv`` stream forever and turns what arrives into values
for the payment engine: ``TxObserved``, ``BlockObserved``, and ``SocketConnected`` /
``SocketDisconnected`` so the engine knows when to rescan (Insight never replays events
missed while we were away).

The protocol decisions (what to send, when to ping, when the link is dead) live in
``eio.py`` and the payload checks in ``events.py``; this module only moves bytes, keeps
time and retries. Wire facts: ``docs/insight-protocol.md`` sections 1 and 2.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    ConnectionTimeout,
    HandshakeError,
    WebSocketConnection,
)
from trio_websocket import open_websocket as _open_websocket

from dashpay.insight.eio import (
    CONNECTED,
    DEFAULT_NAMESPACE,
    MAX_FRAME_CHARS,
    EngineIOClientState,
    EventFrame,
    OpenFrame,
    ProtocolError,
)
from dashpay.insight.events import (
    BlockObserved,
    EventError,
    SocketConnected,
    SocketDisconnected,
    TxObserved,
    parse_block_payload,
    parse_tx_payload,
)

log = logging.getLogger(__name__)

# --- limits and policy, each with its reason --------------------------------------------

# socket.io's default path; it does not carry Insight's REST prefix (protocol section 1).
SOCKET_IO_PATH = "/socket.io/"
# Frames larger than the soft limit (``max_message_bytes``) are skipped with a warning,
# so one odd event does not cost a reconnect and a rescan. trio-websocket counts a
# message as it arrives and drops the connection beyond its own limit, which we set this
# many times higher: that is what bounds the memory a hostile peer can make us hold.
HARD_LIMIT_FACTOR = 4
# Messages trio-websocket may buffer ahead of our reader. A few dozen lets its reader
# task batch small events (throughput) while bounding the buffered data: in practice
# ~600 B each, at worst this times the hard limit from a hostile peer.
MESSAGE_QUEUE_SIZE = 32
# Bytes per socket read. The library's 4 KiB default holds ~7 events; 64 KiB cuts the
# syscalls and wakeups per event when Insight is busy.
RECEIVE_BUFFER_BYTES = 64 * 1024
# How long we wait for the websocket close handshake when *we* end a healthy link. A dead
# peer never answers it; we abort instead (see ``_session``).
CLOSE_TIMEOUT = 2.0
# A link that stayed subscribed this long proves the server is usable again, so the next
# reconnect starts from ``reconnect_initial``. Shorter links (a proxy or an overloaded
# server that accepts and drops us) keep backing off instead of being hammered. 30 s is
# more than engine.io's default ping interval (25 s): at least one heartbeat succeeded.
HEALTHY_CONNECTION_SECONDS = 30.0
# While the link stays down, one "still down" line per this many seconds at most.
DOWN_LOG_INTERVAL = 60.0
# Warnings about skipped frames/events: at most this many per window, then a count of
# what was suppressed, so a misbehaving server cannot flood the journal.
REJECT_LOG_BURST = 10
REJECT_LOG_WINDOW = 60.0
# Longest piece of a bad frame quoted in a log line.
LOG_EXCERPT_CHARS = 120

STATE_CONNECTING = "connecting"  # never connected yet
STATE_CONNECTED = "connected"  # subscribed; events flow
STATE_DISCONNECTED = "disconnected"  # was connected, lost the link, retrying

_NETWORK_ERRORS = (
    HandshakeError,
    ConnectionClosed,
    OSError,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
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


class Backoff:
    """Jittered exponential backoff: attempt n waits between half and all of
    ``min(cap, initial * 2**n)``. The jitter spreads many daemons restarting together;
    the lower half-bound keeps retries from ever becoming a tight loop."""

    __slots__ = ("initial", "cap", "attempt", "_random")

    def __init__(
        self, initial: float, cap: float, *, rng: Callable[[], float] = random.random
    ) -> None:
        if not (initial > 0 and cap >= initial and math.isfinite(cap)):
            raise ValueError(f"backoff needs 0 < initial <= cap, got {initial} and {cap}")
        self.initial = initial
        self.cap = cap
        self.attempt = 0
        self._random = rng

    def next_delay(self) -> float:
        base = min(self.cap, self.initial * 2.0 ** min(self.attempt, 60))
        self.attempt += 1
        return base * (0.5 + 0.5 * self._random())

    def reset(self) -> None:
        self.attempt = 0


def _close_reason(exc: ConnectionClosed) -> str:
    reason = exc.reason
    if reason is None:
        return "websocket closed"
    text = f"websocket closed (code {reason.code} {reason.name}"
    return text + (f": {reason.reason})" if reason.reason else ")")


def _describe(exc: BaseException, connect_timeout: float) -> str:
    if isinstance(exc, ConnectionRejected):
        return f"server refused the websocket upgrade (HTTP {exc.status_code})"
    if isinstance(exc, ConnectionTimeout):
        return f"no websocket handshake within {connect_timeout:g}s"
    if isinstance(exc, ConnectionClosed):
        return _close_reason(exc)
    cause = exc.__cause__ or exc.__context__
    if isinstance(exc, HandshakeError) and cause is not None:
        exc = cause
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:300]


def _excerpt(message: object) -> str:
    text = repr(message)
    return text if len(text) <= LOG_EXCERPT_CHARS else text[:LOG_EXCERPT_CHARS] + "..."


def _wall(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


class _Link:
    """One connection's shared facts between the reader and the heartbeat task."""

    __slots__ = ("scope", "reason", "connected_at", "reader_blocked", "wake")

    def __init__(self, scope: trio.CancelScope) -> None:
        self.scope = scope
        self.reason: str | None = None
        self.connected_at: float | None = None  # trio clock, once subscribed
        self.reader_blocked = False  # waiting for the consumer, not reading
        self.wake = trio.Event()  # the heartbeat schedule may have moved earlier

    def end(self, reason: str) -> None:
        """First caller names the reason. Cancelling the scope also aborts the close
        handshake: a dead peer would never answer it."""
        if self.reason is None:
            self.reason = reason
        self.scope.cancel()


# --- the shell --------------------------------------------------------------------------


class InsightSocket:
    """Keeps one subscribed link to Insight's socket.io endpoint and forwards events.

    Read-only status (for ``dashpay status``): ``state`` ("connecting" before the first
    connection, "connected", "disconnected" after a loss while retrying),
    ``connected_since`` / ``disconnected_since`` / ``last_event_at`` (wall time),
    ``reconnects`` (successful connections after the first), ``events_received`` (tx,
    txlock and block events delivered), ``events_rejected`` (frames or payloads skipped
    as malformed or oversized) and ``events_ignored`` (``dashd/*`` and unknown events).
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
    ) -> None:
        self.endpoint = parse_socket_url(socket_url)
        self._backoff = Backoff(reconnect_initial, reconnect_max)
        if not connect_timeout > 0:
            raise ValueError(f"connect_timeout must be positive, got {connect_timeout}")
        self._connect_timeout = connect_timeout
        if not 0 < max_message_bytes <= MAX_FRAME_CHARS:
            raise ValueError(f"max_message_bytes must be 1..{MAX_FRAME_CHARS}")
        self._max_message_bytes = max_message_bytes
        self._subscriptions = tuple(subscriptions)

        self.state = STATE_CONNECTING
        self.connected_since: float | None = None
        self.disconnected_since: float | None = None
        self.last_event_at: float | None = None
        self.reconnects = 0
        self.events_received = 0
        self.events_rejected = 0
        self.events_ignored = 0

        self._failures = 0  # consecutive attempts that did not get subscribed
        self._down_since: float | None = None  # wall time; None while connected
        self._last_down_log = -math.inf  # trio clock
        self._ever_connected = False
        self._reject_window_start = -math.inf
        self._reject_logged = 0
        self._reject_suppressed = 0

    async def run(self, send: trio.MemorySendChannel) -> None:
        """Connect, subscribe and forward events into ``send`` until cancelled.

        Network failures never end it; it reconnects with jittered exponential backoff.
        On cancellation the websocket is closed abruptly and nothing more is sent.
        If the receiving side of ``send`` is closed, ``trio.BrokenResourceError``
        propagates (possibly inside an ExceptionGroup): nobody is listening any more.
        """
        while True:
            link = await self._session(send)
            now = trio.current_time()
            reason = link.reason or "connection ended"
            if link.connected_at is not None:
                wall = time.time()
                self.state = STATE_DISCONNECTED
                self.connected_since = None
                self.disconnected_since = wall
                self._down_since = wall
                self._last_down_log = now
                self._failures = 0
                lasted = now - link.connected_at
                if lasted >= HEALTHY_CONNECTION_SECONDS:
                    self._backoff.reset()
                log.warning(
                    "insight socket disconnected url=%s reason=%r connected_for=%.1fs",
                    self.endpoint.display,
                    reason,
                    lasted,
                )
                await send.send(SocketDisconnected(at=wall, reason=reason))
            else:
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
            await trio.sleep(self._backoff.next_delay())

    # -- one connection

    async def _session(self, send: trio.MemorySendChannel) -> _Link:
        """One connection from TCP connect to loss; returns why it ended."""
        endpoint = self.endpoint
        with trio.CancelScope() as scope:
            link = _Link(scope)
            try:
                async with _open_websocket(
                    endpoint.host,
                    endpoint.port,
                    endpoint.resource,
                    use_ssl=endpoint.tls,
                    message_queue_size=MESSAGE_QUEUE_SIZE,
                    max_message_size=self._max_message_bytes * HARD_LIMIT_FACTOR,
                    receive_buffer_size=RECEIVE_BUFFER_BYTES,
                    connect_timeout=self._connect_timeout,
                    disconnect_timeout=CLOSE_TIMEOUT,
                ) as ws:
                    machine = EngineIOClientState(
                        trio.current_time(),
                        subscriptions=self._subscriptions,
                        handshake_timeout=self._connect_timeout,
                    )
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self._heartbeat, ws, machine, link)
                        await self._read(ws, machine, link, send)
                        nursery.cancel_scope.cancel()
            except _NETWORK_ERRORS as exc:
                link.reason = link.reason or _describe(exc, self._connect_timeout)
        return link

    async def _heartbeat(
        self, ws: WebSocketConnection, machine: EngineIOClientState, link: _Link
    ) -> None:
        """Pings on schedule and declares the link dead when the peer falls silent."""
        try:
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
                for data in machine.data_to_send():
                    await ws.send_message(data)
        except ConnectionClosed as exc:
            link.end(_close_reason(exc))

    async def _read(
        self,
        ws: WebSocketConnection,
        machine: EngineIOClientState,
        link: _Link,
        send: trio.MemorySendChannel,
    ) -> None:
        """The per-message path: kept lean, it may see tens of thousands of events/s."""
        limit = self._max_message_bytes
        receive = machine.receive
        get_message = ws.get_message
        current_time = trio.current_time
        while True:
            try:
                message = await get_message()
            except ConnectionClosed as exc:
                link.end(_close_reason(exc))
                return
            now = current_time()
            if type(message) is not str:
                machine.note_alive(now)
                self._reject("binary frame", "Insight sends text frames only", message)
                continue
            if len(message) > limit:
                machine.note_alive(now)
                self._reject("oversized frame", f"{len(message)} characters > {limit}", message)
                continue
            try:
                frame = receive(message, now)
            except ProtocolError as exc:
                self._reject("malformed frame", str(exc), message)
                continue
            if type(frame) is EventFrame:
                await self._on_event(frame, link, send)
                continue
            try:
                for data in machine.data_to_send():
                    await ws.send_message(data)
            except ConnectionClosed as exc:
                link.end(_close_reason(exc))
                return
            if machine.dead_reason is not None:
                link.end(machine.dead_reason)
                return
            if type(frame) is OpenFrame:  # the ping schedule starts now
                link.wake.set()
            if link.connected_at is None and machine.phase == CONNECTED:
                await self._on_subscribed(machine, link, send)

    async def _on_subscribed(
        self, machine: EngineIOClientState, link: _Link, send: trio.MemorySendChannel
    ) -> None:
        link.connected_at = trio.current_time()
        wall = time.time()
        if self._ever_connected:
            self.reconnects += 1
        self._ever_connected = True
        self.state = STATE_CONNECTED
        self.connected_since = wall
        self.disconnected_since = None
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

    async def _on_event(self, frame: EventFrame, link: _Link, send: trio.MemorySendChannel) -> None:
        name = frame.name
        value: TxObserved | BlockObserved
        try:
            if frame.namespace != DEFAULT_NAMESPACE:
                self.events_ignored += 1
                return
            if name == "tx" or name == "txlock":
                args = frame.args
                if len(args) != 1:
                    raise EventError(f"{name} event has {len(args)} arguments, expected 1")
                value = parse_tx_payload(args[0], instant_locked=name == "txlock")
            elif name == "block":
                args = frame.args
                if len(args) != 1:
                    raise EventError(f"block event has {len(args)} arguments, expected 1")
                value = parse_block_payload(args[0])
            else:
                # dashd/* streams (we subscribe to none) and names we do not know.
                self.events_ignored += 1
                log.debug("insight socket ignored event name=%r", name)
                return
        except EventError as exc:
            self._reject("invalid event", str(exc), frame.args, name=name)
            return
        await self._deliver(value, link, send)
        self.events_received += 1
        self.last_event_at = time.time()

    async def _deliver(self, value: object, link: _Link, send: trio.MemorySendChannel) -> None:
        try:
            send.send_nowait(value)
        except trio.WouldBlock:
            # The consumer is behind. Silence from the peer while we are not reading is
            # ours, not the link's: the heartbeat keeps pinging and does not count it.
            link.reader_blocked = True
            try:
                await send.send(value)
            finally:
                link.reader_blocked = False

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
            _excerpt(data),
        )
