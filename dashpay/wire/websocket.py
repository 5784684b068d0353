"""RFC 6455 websockets without I/O: the one frame codec of dashpay, for both roles.

Why it exists: Insight pushes tens of thousands of small text messages a second, and a
general websocket library spends most of our CPU per message on machinery we do not
need (a reader task handing each message to ours through a channel, per-message event
objects, extension hooks). A client of one known server needs far less: the opening
handshake (section 4), masked frames out (section 5.3) and unmasked frames in, with the
protocol's limits enforced. Like h11 and wsproto, this module never touches a socket:
``handshake_request`` / ``check_handshake_response`` build and check the upgrade, and
``FrameReader.receive_data`` turns the bytes of one socket read into *all* the messages
they complete, so the shell in ``net/insight_socket.py`` handles a whole read in one go.

The sandbox's Insight server speaks the other side with the same code:
``FrameReader(role=SERVER)`` requires masked frames in and queues unmasked answers,
``encode_server_text`` / ``encode_server_frame`` build the unmasked frames a server
sends, and ``server_handshake_key`` / ``accept_token`` check an upgrade request and
answer it (section 4.2). The client's hot path is untouched by the server role: a
masked frame never matches it, so server-side reads take the general path, which
costs nothing that matters for the few tiny frames a client sends.

What comes out of ``receive_data``: a text message is a plain ``str`` (the hot path,
no wrapper object); anything else is one of the small values below. After a
``CloseReceived`` or a ``Failure`` the reader is finished: it ignores further input,
and ``data_to_send`` holds the close frame to send (section 5.5.1 / 7.1.7).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from dataclasses import dataclass

from dashpay.domain.limits import MAX_HTTP_HEAD_BYTES

# --- limits and constants, each with its reason -------------------------------------------

# Section 1.3: the server proves it read our key by hashing it with this GUID.
_ACCEPT_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
# The largest upgrade response head we read. The 101 answer of socket.io (node.js) is
# ~130 bytes; node.js itself accepts 16 KiB of headers (80 KiB before v13), h11 16 KiB.
MAX_HANDSHAKE_BYTES = MAX_HTTP_HEAD_BYTES

# Opcodes (section 5.2); the others (3-7, 11-15) are reserved and fail the connection.
OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

# Close codes we send or check (section 7.4.1).
CLOSE_NORMAL = 1000
CLOSE_PROTOCOL_ERROR = 1002
# Never on the wire: names a close frame that carried no status code (section 7.4.1).
CLOSE_NO_STATUS = 1005
CLOSE_INVALID_DATA = 1007  # text that is not UTF-8 (section 8.1)
CLOSE_TOO_BIG = 1009
# Codes a peer may put on the wire: 1004-1006 and 1015 are reserved for local use,
# 1012-1014 were registered after the RFC (service restart, try again later, bad
# gateway) and servers send them; 3000-4999 belong to libraries and applications.
_VALID_CLOSE_CODES = frozenset(
    {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014}
)

# Section 5.5: control frames carry at most 125 bytes and are never fragmented.
MAX_CONTROL_PAYLOAD = 125

# The two roles of a FrameReader (section 5.1: clients mask every frame, servers never).
CLIENT = "client"
SERVER = "server"


# --- what the reader hands out (besides ``str`` for text messages) ------------------------


@dataclass(frozen=True, slots=True)
class BinaryMessage:
    data: bytes


@dataclass(frozen=True, slots=True)
class PingReceived:
    """Answered already: the pong is queued in ``data_to_send``."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class PongReceived:
    payload: bytes


@dataclass(frozen=True, slots=True)
class CloseReceived:
    """The server started the close handshake; our answer is queued."""

    code: int | None  # None: the close frame carried no status code (1005)
    reason: str


@dataclass(frozen=True, slots=True)
class Failure:
    """The server broke the protocol; our close frame with ``code`` is queued."""

    code: int
    reason: str


class HandshakeError(Exception):
    """The server did not accept the websocket upgrade; the message says why."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


# --- the opening handshake (section 4.1) --------------------------------------------------


def new_key() -> str:
    """A fresh Sec-WebSocket-Key: 16 random bytes, base64 (section 4.1, item 7)."""
    return base64.b64encode(os.urandom(16)).decode("ascii")


def accept_token(key: str) -> str:
    """The Sec-WebSocket-Accept a server must answer ``key`` with (section 4.2.2)."""
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + _ACCEPT_GUID).digest()).decode()


def handshake_request(host: str, port: int, resource: str, key: str, *, tls: bool) -> bytes:
    """The GET that asks to upgrade to a websocket. No extensions, no subprotocol: the
    frames we parse are plain RFC 6455 frames."""
    default_port = 443 if tls else 80
    name = f"[{host}]" if ":" in host else host
    authority = name if port == default_port else f"{name}:{port}"
    head = (
        f"GET {resource} HTTP/1.1\r\n"
        f"Host: {authority}\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n"
        "\r\n"
    )
    return head.encode("ascii")


def split_handshake_response(buffer: bytes) -> tuple[bytes, bytes] | None:
    """``(head, rest)`` once ``buffer`` holds the whole response head, else None.
    ``rest`` is the start of the websocket stream. Raises HandshakeError when the head
    grows beyond MAX_HANDSHAKE_BYTES."""
    end = buffer.find(b"\r\n\r\n", 0, MAX_HANDSHAKE_BYTES + 4)
    if end < 0:
        if len(buffer) > MAX_HANDSHAKE_BYTES:
            raise HandshakeError(f"upgrade response head is over {MAX_HANDSHAKE_BYTES} bytes")
        return None
    return buffer[:end], buffer[end + 4 :]


def check_handshake_response(head: bytes, key: str) -> None:
    """Accept the server's answer to our upgrade, or raise HandshakeError saying why.

    Section 4.1 (the client's checks): status 101, ``Upgrade: websocket``, ``Connection``
    naming ``upgrade``, the right ``Sec-WebSocket-Accept``, and no extension or
    subprotocol we did not ask for.
    """
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise HandshakeError(f"upgrade answer is not HTTP: {lines[0][:80]!r}")
    status = int(parts[1])
    if status != 101:
        text = f" {parts[2]}" if len(parts) > 2 and parts[2] else ""
        raise HandshakeError(
            f"server refused the websocket upgrade (HTTP {status}{text[:80]})", status
        )
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon:
            raise HandshakeError(f"malformed header line in the upgrade answer: {line[:80]!r}")
        name = name.strip().lower()
        value = value.strip()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    if headers.get("upgrade", "").lower() != "websocket":
        raise HandshakeError("upgrade answer lacks 'Upgrade: websocket'")
    tokens = {token.strip().lower() for token in headers.get("connection", "").split(",")}
    if "upgrade" not in tokens:
        raise HandshakeError("upgrade answer lacks 'Connection: Upgrade'")
    if headers.get("sec-websocket-accept") != accept_token(key):
        raise HandshakeError("upgrade answer has a wrong Sec-WebSocket-Accept")
    if headers.get("sec-websocket-extensions"):
        raise HandshakeError("server chose a websocket extension we did not offer")
    if headers.get("sec-websocket-protocol"):
        raise HandshakeError("server chose a websocket subprotocol we did not offer")


# --- the server's side of the handshake (section 4.2) -----------------------------------


def is_upgrade_request(upgrade: str | None, connection: str | None) -> bool:
    """True when the ``Upgrade`` and ``Connection`` header values ask for a websocket
    (section 4.2.1, items 3 and 4; both compared case-insensitively)."""
    if upgrade is None or connection is None or upgrade.strip().lower() != "websocket":
        return False
    return "upgrade" in [token.strip().lower() for token in connection.split(",")]


def server_handshake_key(method: str, version: str | None, key: str | None) -> str | None:
    """The client's Sec-WebSocket-Key if its upgrade request is one we can accept, else
    None (section 4.2.1): a GET, version 13, and a key that is 16 bytes in base64. The
    101 answer then carries ``Sec-WebSocket-Accept: accept_token(key)``."""
    if method != "GET" or version != "13" or key is None:
        return None
    key = key.strip()
    try:
        if len(base64.b64decode(key, validate=True)) != 16:
            return None
    except (binascii.Error, ValueError):
        return None
    return key


# --- frames we send (section 5.2, masked as section 5.3 requires of clients) --------------


def _mask(key: bytes, payload: bytes) -> bytes:
    """XOR ``payload`` with the repeated 4-byte ``key``, as one big-integer operation."""
    size = len(payload)
    if not size:
        return b""
    pad = (key * (size // 4 + 1))[:size]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(pad, "big")).to_bytes(size, "big")


def encode_frame(opcode: int, payload: bytes, *, mask_key: bytes | None = None) -> bytes:
    """One final, masked frame. ``mask_key`` is for tests; by default 4 fresh random bytes
    (section 5.3: the key must be unpredictable)."""
    key = os.urandom(4) if mask_key is None else mask_key
    size = len(payload)
    if size < 126:
        head = bytes((0x80 | opcode, 0x80 | size))
    elif size < 1 << 16:
        head = bytes((0x80 | opcode, 0x80 | 126)) + size.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + size.to_bytes(8, "big")
    return head + key + _mask(key, payload)


def encode_text(text: str) -> bytes:
    return encode_frame(OP_TEXT, text.encode("utf-8"))


def _close_payload(code: int | None, reason: str) -> bytes:
    """A close frame's body: no code (and so no reason) for None, the "1005: no status"
    that section 7.4.1 forbids on the wire; else the code and the reason, cut to fit."""
    if code is None:
        return b""
    return code.to_bytes(2, "big") + reason.encode("utf-8")[: MAX_CONTROL_PAYLOAD - 2]


def encode_close(code: int | None, reason: str = "") -> bytes:
    return encode_frame(OP_CLOSE, _close_payload(code, reason))


# --- frames a server sends (section 5.1: never masked) ------------------------------------


def encode_server_frame(opcode: int, payload: bytes) -> bytes:
    """One final, unmasked frame, as a server sends it."""
    size = len(payload)
    if size < 126:
        return bytes((0x80 | opcode, size)) + payload
    if size < 1 << 16:
        return bytes((0x80 | opcode, 126)) + size.to_bytes(2, "big") + payload
    return bytes((0x80 | opcode, 127)) + size.to_bytes(8, "big") + payload


def encode_server_text(text: str) -> bytes:
    """One unmasked text frame: the hot path of the sandbox's event fan-out, so the two
    common length forms are written out rather than going through the general encoder."""
    payload = text.encode("utf-8")
    size = len(payload)
    if size < 126:
        return bytes((0x81, size)) + payload
    if size < 65536:
        return b"\x81\x7e" + size.to_bytes(2, "big") + payload
    return b"\x81\x7f" + size.to_bytes(8, "big") + payload


def encode_server_close(code: int | None, reason: str = "") -> bytes:
    """An unmasked close frame; ``code`` None sends one without a status code."""
    return encode_server_frame(OP_CLOSE, _close_payload(code, reason))


# --- frames we receive ----------------------------------------------------------------


class FrameReader:
    """Decodes the peer's frames from a byte stream (after the 101 answer).

    ``receive_data(data)`` returns every message and control event that ``data``
    completes, in order; partial frames wait for the next call. Messages larger than
    ``max_message_bytes`` fail the connection with 1009 as soon as their header
    announces it, before their payload is buffered, so a hostile peer cannot make us
    hold more than that (plus one read).

    ``role`` is the side we are: CLIENT (the default) refuses masked frames and masks
    its answers; SERVER refuses unmasked frames and answers unmasked (section 5.1).
    """

    __slots__ = (
        "max_message_bytes",
        "role",
        "closed",
        "_server",
        "_fast_first",
        "_buffer",
        "_need",
        "_fragments",
        "_fragment_opcode",
        "_fragment_size",
        "_outgoing",
    )

    def __init__(self, *, max_message_bytes: int, role: str = CLIENT) -> None:
        if max_message_bytes < 1:
            raise ValueError("max_message_bytes must be positive")
        if role not in (CLIENT, SERVER):
            raise ValueError(f"role must be {CLIENT!r} or {SERVER!r}, got {role!r}")
        self.max_message_bytes = max_message_bytes
        self.role = role
        self._server = role == SERVER
        # The first byte the hot path takes: a final text frame for a client; nothing
        # for a server (0x100 is no byte), whose frames are all masked and so need the
        # general path, which also refuses the unmasked ones.
        self._fast_first = 0x100 if self._server else 0x81
        self.closed = False  # set once a close frame arrived or we failed the link
        self._buffer = bytearray()
        self._need = 2  # parse nothing until the buffer holds this many bytes
        self._fragments: list[bytes] = []
        self._fragment_opcode = 0  # opcode of the message being reassembled, 0: none
        self._fragment_size = 0
        self._outgoing = bytearray()

    def data_to_send(self) -> bytes:
        """Frames the protocol requires us to send now (pongs, close); each returned once."""
        if not self._outgoing:
            return b""
        out = bytes(self._outgoing)
        self._outgoing.clear()
        return out

    def receive_data(self, data: bytes) -> list:
        if self.closed:
            return []
        buffer = self._buffer
        buffer += data
        end = len(buffer)
        if end < self._need:
            return []
        events: list = []
        pos = 0
        limit = self.max_message_bytes
        fast_first = self._fast_first
        while True:
            available = end - pos
            if available < 2:
                self._need = 2
                break
            first = buffer[pos]
            second = buffer[pos + 1]
            # Hot path: a final, unfragmented, unmasked text frame under 126 bytes payload,
            # or one with a 16-bit length: Insight's events. Everything unusual (and every
            # masked frame, i.e. all a server reads) goes the long way.
            if first == fast_first and not self._fragment_opcode:
                size = second
                if size < 126:
                    start = pos + 2
                elif size == 126 and available >= 4:
                    size = (buffer[pos + 2] << 8) | buffer[pos + 3]
                    start = pos + 4
                else:
                    start = -1
                if start >= 0 and size <= limit:
                    stop = start + size
                    if stop > end:
                        self._need = stop - pos
                        break
                    try:
                        events.append(buffer[start:stop].decode("utf-8"))
                    except UnicodeDecodeError:
                        self._fail(events, CLOSE_INVALID_DATA, "text message is not valid UTF-8")
                        return events
                    pos = stop
                    continue
            consumed = self._general_frame(buffer, pos, end, events)
            if consumed < 0:
                return events  # failed: the reader is finished
            if consumed == 0:
                break  # incomplete; _need says how much more
            pos += consumed
            if self.closed:
                return events
        if pos:
            del buffer[:pos]  # ``_need`` counts from the frame that starts the buffer now
        return events

    def _general_frame(self, buffer: bytearray, pos: int, end: int, events: list) -> int:
        """Decode one frame at ``pos``: bytes consumed, 0 if incomplete, -1 if failed."""
        first = buffer[pos]
        second = buffer[pos + 1]
        fin = first & 0x80
        opcode = first & 0x0F
        if first & 0x70:
            return self._fail(events, CLOSE_PROTOCOL_ERROR, "reserved bits set (no extension)")
        masked = second & 0x80
        if self._server:
            if not masked:
                return self._fail(
                    events, CLOSE_PROTOCOL_ERROR, "client frame is not masked (RFC 6455 5.1)"
                )
        elif masked:
            return self._fail(events, CLOSE_PROTOCOL_ERROR, "server frame is masked (RFC 6455 5.1)")
        size = second & 0x7F
        length_end = 2 if size < 126 else 4 if size == 126 else 10  # 7, 16 or 64-bit length
        header = length_end + 4 if masked else length_end  # the masking key follows
        if end - pos < header:
            self._need = header
            return 0
        if length_end > 2:
            size = int.from_bytes(buffer[pos + 2 : pos + length_end], "big")
            if size >> 63:
                return self._fail(events, CLOSE_PROTOCOL_ERROR, "frame length has its top bit set")
        if opcode >= OP_CLOSE:
            if opcode > OP_PONG:
                return self._fail(events, CLOSE_PROTOCOL_ERROR, f"reserved opcode {opcode:#x}")
            if not fin:
                return self._fail(events, CLOSE_PROTOCOL_ERROR, "fragmented control frame")
            if size > MAX_CONTROL_PAYLOAD:
                return self._fail(
                    events, CLOSE_PROTOCOL_ERROR, f"control frame of {size} bytes (max 125)"
                )
        elif opcode == OP_CONTINUATION:
            if not self._fragment_opcode:
                return self._fail(events, CLOSE_PROTOCOL_ERROR, "continuation without a message")
        elif opcode in (OP_TEXT, OP_BINARY):
            if self._fragment_opcode:
                return self._fail(
                    events, CLOSE_PROTOCOL_ERROR, "new message inside a fragmented one"
                )
        else:
            return self._fail(events, CLOSE_PROTOCOL_ERROR, f"reserved opcode {opcode:#x}")
        if opcode < OP_CLOSE and self._fragment_size + size > self.max_message_bytes:
            return self._fail(
                events,
                CLOSE_TOO_BIG,
                f"message of {self._fragment_size + size} bytes or more is over the "
                f"{self.max_message_bytes}-byte limit",
            )
        stop = pos + header + size
        if stop > end:
            self._need = stop - pos
            return 0
        payload = bytes(buffer[pos + header : stop])
        if masked:
            payload = _mask(bytes(buffer[pos + length_end : header + pos]), payload)
        consumed = stop - pos
        self._need = 2

        if opcode >= OP_CLOSE:
            self._control(opcode, payload, events)
            return consumed
        if opcode != OP_CONTINUATION:
            self._fragment_opcode = opcode
        self._fragments.append(payload)
        self._fragment_size += size
        if not fin:
            return consumed
        message = b"".join(self._fragments)
        kind = self._fragment_opcode
        self._fragments = []
        self._fragment_opcode = 0
        self._fragment_size = 0
        if kind == OP_BINARY:
            events.append(BinaryMessage(message))
            return consumed
        try:
            events.append(message.decode("utf-8"))
        except UnicodeDecodeError:
            return self._fail(events, CLOSE_INVALID_DATA, "text message is not valid UTF-8")
        return consumed

    def _control(self, opcode: int, payload: bytes, events: list) -> None:
        if opcode == OP_PING:
            self._outgoing += self._encode(OP_PONG, payload)  # section 5.5.2
            events.append(PingReceived(payload))
        elif opcode == OP_PONG:
            events.append(PongReceived(payload))
        else:
            self._on_close(payload, events)

    def _on_close(self, payload: bytes, events: list) -> None:
        """Section 5.5.1: echo the status code, then the connection is over."""
        if not payload:
            self._finish(self._encode(OP_CLOSE, b""))
            events.append(CloseReceived(None, ""))
            return
        if len(payload) == 1:
            self._fail(events, CLOSE_PROTOCOL_ERROR, "close frame with a 1-byte payload")
            return
        code = int.from_bytes(payload[:2], "big")
        if code not in _VALID_CLOSE_CODES and not 3000 <= code <= 4999:
            self._fail(events, CLOSE_PROTOCOL_ERROR, f"close frame with invalid code {code}")
            return
        try:
            reason = payload[2:].decode("utf-8")
        except UnicodeDecodeError:
            self._fail(events, CLOSE_INVALID_DATA, "close reason is not valid UTF-8")
            return
        self._finish(self._encode(OP_CLOSE, _close_payload(code, "")))
        events.append(CloseReceived(code, reason))

    def _fail(self, events: list, code: int, reason: str) -> int:
        """Section 7.1.7: fail the connection, sending a close frame with ``code``."""
        self._finish(self._encode(OP_CLOSE, _close_payload(code, "")))
        events.append(Failure(code, reason))
        return -1

    def _encode(self, opcode: int, payload: bytes) -> bytes:
        """A frame of ours, masked or not as our role requires (only on cold paths)."""
        if self._server:
            return encode_server_frame(opcode, payload)
        return encode_frame(opcode, payload)

    def _finish(self, close_frame: bytes) -> None:
        self.closed = True
        self._outgoing += close_frame
        self._buffer = bytearray()
        self._fragments = []
