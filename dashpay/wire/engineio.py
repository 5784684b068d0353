"""Engine.IO revision 3 / Socket.IO protocol 4 framing, without I/O.

Why our own codec: Insight's websocket is served by socket.io 2.x (engine.io 3.x), which
speaks only EIO3. The maintained Python clients speak EIO4 (python-socketio 5) or run on
asyncio only (python-socketio 4), so dashpay implements the small subset it needs. As in
h11/wsproto, this module never touches a socket: ``decode_frame`` turns one websocket
text message into a ``Frame`` value, the ``encode_*`` functions build messages, and
``EngineIOClientState`` decides what a client must send and when, with the current time
passed in. The trio shell in ``socketio.py`` (and the sandbox server) do the I/O.

Wire facts (``docs/insight-protocol.md`` section 1, all verified against socket.io 2.4.1):

- one Engine.IO packet per websocket text message; its first character is the packet
  type: ``0`` open, ``1`` close, ``2`` ping, ``3`` pong, ``4`` message, ``5`` upgrade,
  ``6`` noop;
- a ``4`` message carries one Socket.IO packet: type digit (``0`` CONNECT, ``1``
  DISCONNECT, ``2`` EVENT, ``3`` ACK, ``4`` ERROR, ``5``/``6`` binary), an optional
  ``/namespace,`` (absent for ``/``), an optional decimal ack id, then JSON;
- EIO3 heartbeats are driven by the **client**: it sends ``2`` every ``pingInterval``
  and the server answers ``3``; the server closes a connection that sent nothing for
  ``pingInterval + pingTimeout``;
- the server sends ``0{open}`` and then ``40`` by itself. A client ``40`` creates a
  second server-side socket on the same connection (every event is then delivered
  twice), so ``EngineIOClientState`` never sends it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

# --- limits, each with its reason -------------------------------------------------------

# Largest frame we decode. Insight events are small (300-600 characters for a tx with one
# or two outputs); the largest legitimate one is a `tx` event for a standard transaction
# (at most 100 kB, hence at most ~2,900 outputs of ~45 JSON characters each: ~130 kB).
# 1 MiB leaves room for that with margin while bounding what one hostile frame can make
# us parse. Non-standard giant transactions only appear inside blocks and are picked up
# by the REST rescan. (socket.io 2 itself accepts up to 100 MB, `maxHttpBufferSize`.)
MAX_FRAME_CHARS = 1024 * 1024
# Ack ids are JavaScript numbers on the server; more digits than a safe integer holds
# (2**53 ~ 9.0e15, 16 digits) cannot have come from socket.io.
MAX_ACK_ID_DIGITS = 16
# Namespace names are short paths ("/", "/chat"); a long one is garbage, not a namespace.
MAX_NAMESPACE_CHARS = 256
# Heartbeat bounds for the values in the open packet (milliseconds). engine.io's defaults
# are 25000/5000 (3.5) and 25000/20000 (3.6). Under 10 ms the client would do nothing but
# ping; over an hour a dead link would go unnoticed for longer than any sane deployment.
MIN_HEARTBEAT_MS = 10
MAX_HEARTBEAT_MS = 3_600_000
# Longest excerpt of a bad frame quoted in an error message (they end up in logs).
EXCERPT_CHARS = 80

DEFAULT_NAMESPACE = "/"


class MalformedFrame(ValueError):
    """A frame that is not valid Engine.IO 3 / Socket.IO 4; the message says why."""


# --- frames (values) --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OpenFrame:
    sid: str
    upgrades: tuple[str, ...]
    ping_interval: float  # seconds
    ping_timeout: float  # seconds


@dataclass(frozen=True, slots=True)
class CloseFrame:
    pass


@dataclass(frozen=True, slots=True)
class PingFrame:
    data: str = ""  # "probe" during a polling -> websocket upgrade; otherwise empty


@dataclass(frozen=True, slots=True)
class PongFrame:
    data: str = ""


@dataclass(frozen=True, slots=True)
class UpgradeFrame:
    pass


@dataclass(frozen=True, slots=True)
class NoopFrame:
    pass


@dataclass(frozen=True, slots=True)
class ConnectFrame:
    namespace: str = DEFAULT_NAMESPACE


@dataclass(frozen=True, slots=True)
class DisconnectFrame:
    namespace: str = DEFAULT_NAMESPACE


@dataclass(frozen=True, slots=True)
class EventFrame:
    namespace: str
    ack_id: int | None
    name: str
    args: tuple[Any, ...]  # decoded JSON values


@dataclass(frozen=True, slots=True)
class AckFrame:
    namespace: str
    ack_id: int
    args: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class ErrorFrame:
    namespace: str
    data: Any


Frame = (
    OpenFrame
    | CloseFrame
    | PingFrame
    | PongFrame
    | UpgradeFrame
    | NoopFrame
    | ConnectFrame
    | DisconnectFrame
    | EventFrame
    | AckFrame
    | ErrorFrame
)

_CLOSE = CloseFrame()
_UPGRADE = UpgradeFrame()
_NOOP = NoopFrame()
_EMPTY_PING = PingFrame()
_EMPTY_PONG = PongFrame()
_CONNECT_DEFAULT = ConnectFrame()
_DISCONNECT_DEFAULT = DisconnectFrame()


# --- encoding ---------------------------------------------------------------------------


def _dumps(value: object) -> str:
    # Compact like JSON.stringify, no ASCII escaping (socket.io sends UTF-8 as is), and
    # NaN/Infinity refused: they are not JSON and socket.io would send them as null.
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _namespace_prefix(namespace: str) -> str:
    if namespace == DEFAULT_NAMESPACE:
        return ""
    if not namespace.startswith("/") or "," in namespace:
        raise ValueError(f"namespace {namespace!r} must start with '/' and contain no ','")
    return namespace + ","


def _ack_text(ack_id: int | None) -> str:
    if ack_id is None:
        return ""
    if isinstance(ack_id, bool) or not isinstance(ack_id, int) or ack_id < 0:
        raise ValueError(f"ack id {ack_id!r} must be a non-negative integer")
    text = str(ack_id)
    if len(text) > MAX_ACK_ID_DIGITS:
        raise ValueError(f"ack id {ack_id} has more than {MAX_ACK_ID_DIGITS} digits")
    return text


def encode_open(
    sid: str, ping_interval_ms: int, ping_timeout_ms: int, upgrades: Iterable[str] = ()
) -> str:
    """The server's handshake packet: ``0{"sid":..,"upgrades":[..],"pingInterval":..,
    "pingTimeout":..}`` (key order as engine.io 3 sends it)."""
    return "0" + _dumps(
        {
            "sid": sid,
            "upgrades": list(upgrades),
            "pingInterval": ping_interval_ms,
            "pingTimeout": ping_timeout_ms,
        }
    )


def encode_close() -> str:
    return "1"


def encode_connect(namespace: str = DEFAULT_NAMESPACE) -> str:
    """``40`` (or ``40/nsp,``). Only a *server* sends this to Insight's clients."""
    return "40" + _namespace_prefix(namespace)


def encode_disconnect(namespace: str = DEFAULT_NAMESPACE) -> str:
    return "41" + _namespace_prefix(namespace)


def encode_ping(data: str = "") -> str:
    return "2" + data


def encode_pong(data: str = "") -> str:
    return "3" + data


def encode_noop() -> str:
    return "6"


def encode_event(
    name: str, *args: object, ack_id: int | None = None, namespace: str = DEFAULT_NAMESPACE
) -> str:
    """``42["name",arg,...]``, or ``42<id>[...]`` when the sender wants an ack."""
    if not isinstance(name, str):
        raise ValueError(f"event name must be a string, not {type(name).__name__}")
    return "42" + _namespace_prefix(namespace) + _ack_text(ack_id) + _dumps([name, *args])


def encode_ack(ack_id: int, *args: object, namespace: str = DEFAULT_NAMESPACE) -> str:
    """``43<id>[arg,...]``: the answer to an event sent with ``ack_id``."""
    if ack_id is None:
        raise ValueError("an ack needs the ack id of the event it answers")
    return "43" + _namespace_prefix(namespace) + _ack_text(ack_id) + _dumps(list(args))


def encode_error(data: object, namespace: str = DEFAULT_NAMESPACE) -> str:
    return "44" + _namespace_prefix(namespace) + _dumps(data)


# --- decoding ---------------------------------------------------------------------------


def _excerpt(frame: str) -> str:
    if len(frame) <= EXCERPT_CHARS:
        return repr(frame)
    return repr(frame[:EXCERPT_CHARS]) + f"... ({len(frame)} characters)"


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# One decoder for every frame: json.loads with options would build a new one per call.
_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)


def _loads(text: str, frame: str) -> Any:
    # orjson first (~3x faster on a tx event; the stdlib decoder was a fifth of the CPU
    # of an event that pays nobody). What orjson refuses goes to the stdlib decoder,
    # which takes or refuses it exactly as before (lone surrogates, 1e400: taken; NaN,
    # Infinity, bad JSON, deep nesting: refused with the same message). One difference
    # is left, on purpose: orjson reads an integer past 64 bits as a float. No value we
    # accept is that large (amounts are at most 16 digits, heartbeats 7), so such a
    # number is refused either way, by the same check (a tx amount: "not an integer of
    # duffs" instead of "over 21,000,000 DASH"); looking for one in the text first
    # (a regex for 19 digits) cost as much as the stdlib decoder itself.
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        pass
    try:
        return _DECODER.decode(text)
    except RecursionError:
        raise MalformedFrame(f"frame {_excerpt(frame)} nests JSON too deeply") from None
    except ValueError as exc:  # JSONDecodeError, NaN/Infinity, over-long integers
        raise MalformedFrame(f"frame {_excerpt(frame)} carries invalid JSON: {exc}") from None


def _heartbeat_ms(info: dict, key: str, frame: str) -> float:
    value = info.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise MalformedFrame(f"open packet {_excerpt(frame)}: {key} is missing or not a number")
    if not MIN_HEARTBEAT_MS <= value <= MAX_HEARTBEAT_MS:
        raise MalformedFrame(
            f"open packet: {key}={value} ms is outside {MIN_HEARTBEAT_MS}..{MAX_HEARTBEAT_MS} ms"
        )
    return value / 1000.0


def _decode_open(frame: str) -> OpenFrame:
    info = _loads(frame[1:], frame)
    if not isinstance(info, dict):
        raise MalformedFrame(f"open packet {_excerpt(frame)} is not a JSON object")
    sid = info.get("sid")
    if not isinstance(sid, str) or not sid:
        raise MalformedFrame(f"open packet {_excerpt(frame)} has no session id (sid)")
    upgrades = info.get("upgrades", [])
    if not isinstance(upgrades, list) or not all(isinstance(u, str) for u in upgrades):
        raise MalformedFrame(f"open packet {_excerpt(frame)}: upgrades is not a list of names")
    return OpenFrame(
        sid=sid,
        upgrades=tuple(upgrades),
        ping_interval=_heartbeat_ms(info, "pingInterval", frame),
        ping_timeout=_heartbeat_ms(info, "pingTimeout", frame),
    )


def _decode_message(frame: str) -> Frame:
    """The Socket.IO packet inside an Engine.IO ``4`` message (socket.io-parser 3.x)."""
    if len(frame) < 2:
        raise MalformedFrame("message frame '4' carries no socket.io packet")
    kind = frame[1]
    if kind in "56":
        raise MalformedFrame(
            f"binary socket.io packet {_excerpt(frame)}: Insight never sends binary data"
        )
    if kind not in "01234":
        raise MalformedFrame(f"unknown socket.io packet type {kind!r} in {_excerpt(frame)}")
    end = len(frame)
    i = 2
    namespace = DEFAULT_NAMESPACE
    if i < end and frame[i] == "/":
        comma = frame.find(",", i)
        stop = end if comma < 0 else comma
        namespace = frame[i:stop]
        if len(namespace) > MAX_NAMESPACE_CHARS:
            raise MalformedFrame(f"namespace in {_excerpt(frame)} is longer than allowed")
        namespace = namespace.split("?", 1)[0]  # a CONNECT may carry "?query"
        i = stop + 1 if comma >= 0 else stop
    start = i
    while i < end and "0" <= frame[i] <= "9":
        i += 1
    ack_id: int | None = None
    if i > start:
        if i - start > MAX_ACK_ID_DIGITS:
            raise MalformedFrame(f"ack id in {_excerpt(frame)} has too many digits")
        ack_id = int(frame[start:i])
    has_data = i < end

    if kind == "0":
        if ack_id is not None or has_data:
            raise MalformedFrame(f"CONNECT packet {_excerpt(frame)} carries unexpected data")
        return _CONNECT_DEFAULT if namespace == DEFAULT_NAMESPACE else ConnectFrame(namespace)
    if kind == "1":
        if ack_id is not None or has_data:
            raise MalformedFrame(f"DISCONNECT packet {_excerpt(frame)} carries data")
        return _DISCONNECT_DEFAULT if namespace == DEFAULT_NAMESPACE else DisconnectFrame(namespace)
    if not has_data:
        raise MalformedFrame(f"socket.io packet {_excerpt(frame)} has no JSON data")
    data = _loads(frame[i:], frame)
    if kind == "2":
        if not isinstance(data, list) or not data or not isinstance(data[0], str):
            raise MalformedFrame(
                f"EVENT packet {_excerpt(frame)} is not a JSON array starting with the event name"
            )
        return EventFrame(namespace, ack_id, data[0], tuple(data[1:]))
    if kind == "3":
        if ack_id is None:
            raise MalformedFrame(f"ACK packet {_excerpt(frame)} has no ack id")
        if not isinstance(data, list):
            raise MalformedFrame(f"ACK packet {_excerpt(frame)} is not a JSON array")
        return AckFrame(namespace, ack_id, tuple(data))
    return ErrorFrame(namespace, data)


def decode_frame(frame: str) -> Frame:
    """Decode one websocket text message. Raises MalformedFrame naming what is wrong."""
    if not isinstance(frame, str):
        raise MalformedFrame(
            f"expected a text frame, got {type(frame).__name__} (binary frames are not used)"
        )
    if len(frame) > MAX_FRAME_CHARS:
        raise MalformedFrame(
            f"frame of {len(frame)} characters is over the {MAX_FRAME_CHARS} character limit"
        )
    # Hot path: almost every frame Insight sends is an event, `42[...]`.
    if frame.startswith("42["):
        data = _loads(frame[2:], frame)
        if not isinstance(data, list) or not data or not isinstance(data[0], str):
            raise MalformedFrame(
                f"EVENT packet {_excerpt(frame)} is not a JSON array starting with the event name"
            )
        return EventFrame(DEFAULT_NAMESPACE, None, data[0], tuple(data[1:]))
    if not frame:
        raise MalformedFrame("empty frame: an engine.io packet needs at least its type digit")
    kind = frame[0]
    if kind == "4":
        return _decode_message(frame)
    if kind == "3":
        return _EMPTY_PONG if len(frame) == 1 else PongFrame(frame[1:])
    if kind == "2":
        return _EMPTY_PING if len(frame) == 1 else PingFrame(frame[1:])
    if kind == "0":
        return _decode_open(frame)
    if kind in "156" and len(frame) > 1:
        raise MalformedFrame(f"engine.io packet {_excerpt(frame)} carries unexpected data")
    if kind == "1":
        return _CLOSE
    if kind == "5":
        return _UPGRADE
    if kind == "6":
        return _NOOP
    if kind == "b":
        raise MalformedFrame(f"base64 binary packet {_excerpt(frame)}: not used by Insight")
    raise MalformedFrame(f"unknown engine.io packet type {kind!r} in {_excerpt(frame)}")


# --- the client's state machine ---------------------------------------------------------

AWAITING_OPEN = "awaiting_open"  # websocket up, no `0{...}` yet
AWAITING_CONNECT = "awaiting_connect"  # open received, no `40` yet
CONNECTED = "connected"  # `40` received and the subscriptions queued
CLOSED = "closed"  # the link is over (see `dead_reason`)

_NOTHING: tuple[str, ...] = ()


class EngineIOClientState:
    """What an EIO3 client must send, and whether its link is still alive.

    Feed it every received text message with ``receive(frame, now)``, call
    ``poll(now)`` no later than ``next_wakeup()``, and after each of these send what
    ``data_to_send()`` returns, in order. ``now`` is a monotonic clock in seconds.

    Guarantees: it never produces ``40``; it queues ``42["subscribe",<name>]`` for every
    subscription after *each* ``40``; it queues a ping ``2`` every ``ping_interval`` from
    the open packet on, answered or not (the server closes a link that sent nothing for
    ``pingInterval + pingTimeout``, and an extra ping costs nothing). The link is dead
    (``dead_reason`` set, ``phase`` CLOSED) when the handshake does not finish within
    ``handshake_timeout``, when nothing at all (pong or other frame) arrives within
    ``ping_timeout`` of the oldest unanswered ping, or when the server closes the session
    (``1``), leaves the namespace (``41``) or refuses it (``44``). Any received frame
    counts as a sign of life, as in engine.io-client: under a flood of events the pong
    may queue behind them.
    """

    __slots__ = (
        "subscriptions",
        "handshake_timeout",
        "phase",
        "open",
        "dead_reason",
        "_started",
        "_last_received",
        "_next_ping",
        "_ping_sent",
        "_outgoing",
    )

    def __init__(
        self,
        now: float,
        *,
        subscriptions: Sequence[str] = ("inv",),
        handshake_timeout: float = 10.0,
    ) -> None:
        self.subscriptions = tuple(subscriptions)
        self.handshake_timeout = handshake_timeout
        self.phase = AWAITING_OPEN
        self.open: OpenFrame | None = None
        self.dead_reason: str | None = None
        self._started = now
        self._last_received = now
        self._next_ping = math.inf
        self._ping_sent: float | None = None  # the oldest unanswered ping
        self._outgoing: list[str] = []

    # -- input

    def receive(self, frame: str, now: float) -> Frame:
        """Decode ``frame`` and advance. Raises MalformedFrame for a frame that is not
        valid here; the state is then unchanged, except that the peer counts as alive."""
        self._last_received = now
        decoded = decode_frame(frame)
        kind = type(decoded)
        if kind is EventFrame or kind is AckFrame or kind is NoopFrame:
            return decoded
        if kind is PongFrame:
            self._ping_sent = None
        elif kind is ConnectFrame:
            self._on_connect(decoded, frame)
        elif kind is OpenFrame:
            if self.phase != AWAITING_OPEN:
                raise MalformedFrame("a second open packet on the same connection")
            self.open = decoded
            self.phase = AWAITING_CONNECT
            self._next_ping = now + decoded.ping_interval
        elif kind is PingFrame:
            self._queue(encode_pong(decoded.data))  # EIO3 servers do not ping; answer anyway
        elif kind is CloseFrame:
            self._die("server closed the engine.io session (packet 1)")
        elif kind is DisconnectFrame:
            if decoded.namespace == DEFAULT_NAMESPACE:
                self._die("server disconnected the namespace (packet 41)")
        elif kind is ErrorFrame and decoded.namespace == DEFAULT_NAMESPACE:
            self._die(f"server refused the namespace (packet 44): {decoded.data!r}"[:200])
        return decoded

    def _on_connect(self, decoded: ConnectFrame, frame: str) -> None:
        if decoded.namespace != DEFAULT_NAMESPACE:
            return
        if self.phase == AWAITING_OPEN:
            raise MalformedFrame("namespace connect (40) before the open packet")
        if self.phase == CLOSED:
            return
        # Every `40` is a fresh server-side socket with no subscriptions: subscribe again.
        for name in self.subscriptions:
            self._queue(encode_event("subscribe", name))
        self.phase = CONNECTED

    def note_alive(self, now: float) -> None:
        """The shell was not reading (its consumer applied backpressure), so silence
        until ``now`` says nothing about the peer."""
        if now > self._last_received:
            self._last_received = now

    # -- time

    def poll(self, now: float) -> None:
        """Queue a ping if one is due; declare the link dead if a deadline has passed."""
        if self.phase == CLOSED:
            return
        if self.phase != CONNECTED and now >= self._started + self.handshake_timeout:
            waiting = "open packet (0)" if self.phase == AWAITING_OPEN else "namespace connect (40)"
            self._die(f"no {waiting} within {self.handshake_timeout:g}s")
            return
        if self.open is None:
            return
        if self._ping_sent is not None and now >= self._silence_deadline():
            self._die(f"no pong or other frame within {self.open.ping_timeout:g}s of a ping")
            return
        if now >= self._next_ping:
            self._queue(encode_ping())
            if self._ping_sent is None:
                self._ping_sent = now
            self._next_ping = now + self.open.ping_interval

    def next_wakeup(self) -> float:
        """The latest time at which ``poll`` must be called (``inf``: never again)."""
        if self.phase == CLOSED:
            return math.inf
        wakeup = math.inf
        if self.phase != CONNECTED:
            wakeup = self._started + self.handshake_timeout
        if self.open is not None:
            wakeup = min(wakeup, self._next_ping)
            if self._ping_sent is not None:
                wakeup = min(wakeup, self._silence_deadline())
        return wakeup

    def _silence_deadline(self) -> float:
        assert self.open is not None and self._ping_sent is not None
        return max(self._ping_sent, self._last_received) + self.open.ping_timeout

    # -- output

    def data_to_send(self) -> Sequence[str]:
        """Frames to send now, in order; each is returned once."""
        if not self._outgoing:
            return _NOTHING
        out, self._outgoing = self._outgoing, []
        return out

    @property
    def ping_outstanding(self) -> bool:
        return self._ping_sent is not None

    def _queue(self, data: str) -> None:
        if self.phase != CLOSED:
            self._outgoing.append(data)

    def _die(self, reason: str) -> None:
        if self.phase != CLOSED:
            self.phase = CLOSED
            self.dead_reason = reason
            self._outgoing.clear()
