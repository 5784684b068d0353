"""The client side of HTTP/1.1 (RFC 9112) for one request at a time, without I/O.

Why it exists: the callback sender POSTs thousands of small requests a second over
kept-alive connections, and h11's general state machine (events for both peers,
validation of every header as objects) was a tenth of the daemon's CPU per payment.
A client that only ever sends ``POST`` with a known body and reads one answer needs
far less, as long as it stays strict about what a hostile server may send. Like h11
and our websocket codec (``insight/wsframe.py``), this module never touches a socket:

- ``encode_request`` writes the whole request (line, headers, body) as one ``bytes``;
- ``ResponseReader`` takes the answer's bytes as they arrive (``receive_data``) and
  hands out, from ``next_event``: one ``Response`` (status and headers; informational
  1xx answers before it are checked and skipped), the body as ``bytes`` pieces, then
  ``END_OF_MESSAGE``; ``NEED_DATA`` whenever it needs more. Once the message has
  ended, ``reusable`` says whether the connection may carry another request.

Everything a server could get wrong raises ``InvalidResponse`` with a text saying
what; nothing else is raised for any input. What is refused (RFC 9112 unless noted):
a status line other than ``HTTP/1.0`` / ``HTTP/1.1``, a status outside 100-599
(RFC 9110 §15), 101 (we never ask to switch), a head over ``MAX_HEADER_BYTES``, a
bare CR or LF or other control character, a folded line (obs-fold, §5.2), whitespace
before a colon (§5.1), conflicting or malformed Content-Length (RFC 9110 §8.6), any
Transfer-Encoding but a single ``chunked`` (§6.1), Transfer-Encoding beside
Content-Length or in an HTTP/1.0 answer (§6.1: the framing is faulty), a malformed
chunk (§7.1), and the connection ending inside a message.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC

from dashpay.domain.limits import MAX_HTTP_HEAD_BYTES

# --- limits, each with its reason -------------------------------------------------------

# The largest response head (status line and headers) we buffer: h11's default and
# node.js's since v13 (16 KiB; 80 KiB before), tomcat 8 KiB. A callback's answer head
# is ~100 bytes; a hostile server cannot make us hold more than this.
MAX_HEADER_BYTES = MAX_HTTP_HEAD_BYTES
# A chunk-size line (§7.1): 16 hex digits are 2**64 bytes, and extensions (which we
# ignore) have no business being long; node.js allows 16 KiB for the whole line, we
# need far less.
MAX_CHUNK_LINE_BYTES = 1024
MAX_CHUNK_SIZE_DIGITS = 16
# The trailer section after the last chunk (§7.1.2) is read and ignored: bounded like
# a head.
MAX_TRAILER_BYTES = MAX_HEADER_BYTES
# Content-Length digits: 18 decimal digits are under 2**63; a longer number is either
# an attack or an answer no callback sender wants (and int() of thousands of digits
# is itself slow).
MAX_LENGTH_DIGITS = 18
# Informational answers (100 Continue, 103 Early Hints) before the final one. A server
# is free to send several; an endless stream of them is an attack on our time.
MAX_INFORMATIONAL = 16

# --- grammar (RFC 9110 §5.1, §5.5; RFC 9112 §4, §5) ---------------------------------------

# A token: field names and the method.
_TOKEN_CHARS = r"[-!#$%&'*+.^_`|~0-9A-Za-z]+"
_TOKEN_STR = re.compile(_TOKEN_CHARS)
_TOKEN = re.compile(_TOKEN_CHARS.encode())
# What we send as a field value: visible ASCII with spaces or tabs inside, never at
# either end, no control character (so no header can smuggle in another).
_FIELD_VALUE_STR = re.compile(r"(?:[\x21-\x7e](?:[\x20-\x7e\t]*[\x21-\x7e])?)?")
# A request target as we send it: visible ASCII, no space (§3.2).
_TARGET_STR = re.compile(r"[\x21-\x7e]+")
# status-line = HTTP-version SP status-code SP [ reason-phrase ]; the second space is
# often missing when the reason is empty, which h11 and browsers accept too.
_STATUS_LINE = re.compile(rb"HTTP/1\.([01]) ([1-5][0-9][0-9])(?: [\t\x20-\x7e\x80-\xff]*)?")
# In a head, CR and LF appear only as CRLF line ends; no other control character but
# HTAB appears anywhere (§2.2: a bare CR is an error; field values exclude CTLs).
_BAD_HEAD_BYTES = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]|\r(?!\n)|(?<!\r)\n")
# chunk = chunk-size [ chunk-ext ] CRLF; the extension is checked for control
# characters only, then ignored (§7.1.1).
_CHUNK_LINE = re.compile(
    rb"([0-9A-Fa-f]{1,%d})[ \t]*(?:;[\t\x20-\x7e\x80-\xff]*)?" % MAX_CHUNK_SIZE_DIGITS
)

# The request headers this codec writes or whose meaning it owns (framing and
# connection management, §6, §9; RFC 9110 §7.2, §10.1.1): a caller cannot set them.
OWN_REQUEST_HEADERS = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "expect", "upgrade", "te"}
)


class InvalidResponse(Exception):
    """The server broke HTTP/1.1; ``str()`` says how."""


class BodyTooLarge(Exception):
    """A response body is, or says in its Content-Length it is, over the reader's byte
    limit. Raised by the bounded body reads of the HTTP clients (Insight REST, the price
    providers) and translated by each into its own error naming the limit."""


def declares_more_than(content_length: str | None, limit: int) -> bool:
    """True when a Content-Length value is a plain number over ``limit``, so the body
    can be refused before any of it is read (an unparsable value is left to the read)."""
    if not content_length or not (content_length.isascii() and content_length.isdigit()):
        return False
    return int(content_length) > limit


@dataclass(frozen=True, slots=True)
class Response:
    """The final answer's status and headers (names lower-cased, values trimmed)."""

    status: int
    headers: tuple[tuple[bytes, bytes], ...]


class _Marker:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


NEED_DATA = _Marker("NEED_DATA")
END_OF_MESSAGE = _Marker("END_OF_MESSAGE")


# --- the request --------------------------------------------------------------------------


def encode_request(
    method: str, target: str, authority: str, headers: Sequence[tuple[str, str]], body: bytes
) -> bytes:
    """The whole request in one ``bytes``: request line, Host, Content-Length, the
    caller's headers (each checked; raises ValueError naming a bad one), the body."""
    if not _TOKEN_STR.fullmatch(method):
        raise ValueError(f"invalid request method {method!r}")
    if not _TARGET_STR.fullmatch(target):
        raise ValueError(f"invalid request target {target!r}")
    if not authority or not _FIELD_VALUE_STR.fullmatch(authority):
        raise ValueError(f"invalid Host {authority!r}")
    lines = [f"{method} {target} HTTP/1.1\r\nHost: {authority}\r\nContent-Length: {len(body)}\r\n"]
    for name, value in headers:
        if not _TOKEN_STR.fullmatch(name) or not _FIELD_VALUE_STR.fullmatch(value):
            raise ValueError(f"invalid request header {name!r}: {value!r}")
        if name.lower() in OWN_REQUEST_HEADERS:
            raise ValueError(f"invalid request header {name!r}: the HTTP client sets it")
        lines.append(f"{name}: {value}\r\n")
    lines.append("\r\n")
    return "".join(lines).encode("ascii") + body


# --- the response -------------------------------------------------------------------------

# Reader states.
_HEAD = 0
_LENGTH = 1  # a body of known length: _remaining bytes to go
_CHUNK_LINE_STATE = 2  # expecting a chunk-size line
_CHUNK_DATA = 3  # inside a chunk: _remaining bytes to go
_CHUNK_END = 4  # expecting the CRLF after a chunk's data
_TRAILER = 5  # after the last chunk: trailer lines up to an empty line
_UNTIL_CLOSE = 6  # no length: the body is everything until the server closes
_DONE = 7
_BROKEN = 8


class ResponseReader:
    """Parses the answer to one request (see the module docstring).

    ``receive_data(b"")`` says the server closed the connection. After
    ``END_OF_MESSAGE``, ``reusable`` is True only when the answer allows another
    request on the connection and nothing followed it; bytes received later make it
    False. After ``InvalidResponse`` the reader raises it again on every call."""

    __slots__ = (
        "_buffer",
        "_state",
        "_remaining",
        "_eof",
        "_informational",
        "_trailer_bytes",
        "_scanned",
        "_error",
        "reusable",
    )

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._state = _HEAD
        self._remaining = 0
        self._eof = False
        self._informational = 0
        self._trailer_bytes = 0
        self._scanned = 0  # where the search for the end of the head resumes
        self._error: InvalidResponse | None = None
        self.reusable = False

    def receive_data(self, data: bytes) -> None:
        if not data:
            self._eof = True
            return
        if self._state == _DONE:
            self.reusable = False  # the server wrote past the end of its answer
            return
        self._buffer += data

    def next_event(self) -> Response | bytes | _Marker:
        if self._error is not None:
            raise self._error
        try:
            return self._next()
        except InvalidResponse as exc:
            self._state = _BROKEN
            self._error = exc
            raise

    # -- the state machine --------------------------------------------------------------
    def _next(self) -> Response | bytes | _Marker:
        state = self._state
        if state == _LENGTH:
            return self._length_body()
        if state == _HEAD:
            return self._head()
        if state == _DONE:
            return END_OF_MESSAGE
        if state == _UNTIL_CLOSE:
            buffer = self._buffer
            if buffer:
                data = bytes(buffer)
                buffer.clear()
                return data
            if self._eof:
                self._state = _DONE
                return END_OF_MESSAGE
            return NEED_DATA
        return self._chunked()

    def _head(self) -> Response | _Marker:
        while True:
            buffer = self._buffer
            # Search only what arrived since the last look (and the 3 bytes before it,
            # where the end may have started): a head dripping in byte by byte costs
            # linear time, not quadratic.
            end = buffer.find(b"\r\n\r\n", self._scanned, MAX_HEADER_BYTES + 4)
            if end < 0:
                if len(buffer) >= MAX_HEADER_BYTES + 4:
                    raise InvalidResponse(f"the response head is over {MAX_HEADER_BYTES} bytes")
                if self._eof:
                    raise InvalidResponse("the connection closed inside the response head")
                self._scanned = max(0, len(buffer) - 3)
                return NEED_DATA
            head = bytes(buffer[:end])
            del buffer[: end + 4]
            self._scanned = 0
            http10, status, headers = _parse_head(head)
            if status >= 200:
                return self._begin_body(http10, status, headers)
            if status == 101:
                raise InvalidResponse("101 Switching Protocols, but no upgrade was asked for")
            self._informational += 1  # 100 Continue, 103 Early Hints: the answer follows
            if self._informational > MAX_INFORMATIONAL:
                raise InvalidResponse(f"over {MAX_INFORMATIONAL} informational answers")

    def _begin_body(
        self, http10: bool, status: int, headers: tuple[tuple[bytes, bytes], ...]
    ) -> Response:
        """Decide the framing (§6.3) and whether the connection may be reused (§9.3)."""
        lengths: list[bytes] = []
        encodings: list[bytes] = []
        connection: list[bytes] = []
        for name, value in headers:
            if name == b"content-length":
                lengths.append(value)
            elif name == b"transfer-encoding":
                encodings.append(value)
            elif name == b"connection":
                connection.append(value)
        if connection:
            tokens = {t.strip().lower() for v in connection for t in v.split(b",")}
            keep_alive = b"close" not in tokens and (not http10 or b"keep-alive" in tokens)
        else:
            keep_alive = not http10
        self.reusable = keep_alive
        if status == 204 or status == 304:  # never a body (RFC 9110 §15.3.5, §15.4.5)
            self._state = _DONE
        elif encodings:
            if http10:
                raise InvalidResponse("Transfer-Encoding in an HTTP/1.0 response")
            if lengths:
                raise InvalidResponse("both Transfer-Encoding and Content-Length")
            if len(encodings) != 1 or encodings[0].lower() != b"chunked":
                shown = b", ".join(encodings).decode("latin-1")[:80]
                raise InvalidResponse(f"unsupported Transfer-Encoding {shown!r}")
            self._state = _CHUNK_LINE_STATE
        elif lengths:
            self._remaining = _content_length(lengths)
            self._state = _LENGTH if self._remaining else _DONE
        else:
            self.reusable = False  # the end of the body is the end of the connection
            self._state = _UNTIL_CLOSE
        if self._state == _DONE:
            self._finish()
        return Response(status, headers)

    def _length_body(self) -> bytes | _Marker:
        buffer = self._buffer
        if not buffer:
            if self._eof:
                raise InvalidResponse(
                    f"the connection closed {self._remaining} bytes before the end of the body"
                )
            return NEED_DATA
        remaining = self._remaining
        if len(buffer) <= remaining:
            data = bytes(buffer)
            buffer.clear()
        else:
            data = bytes(buffer[:remaining])
            del buffer[:remaining]
        remaining -= len(data)
        self._remaining = remaining
        if not remaining:
            self._finish()
        return data

    def _finish(self) -> None:
        self._state = _DONE
        if self._buffer:
            self.reusable = False  # bytes after the answer: pipelined garbage
            self._buffer.clear()

    def _chunked(self) -> bytes | _Marker:
        """One step of a chunked body (§7.1): a piece of data, or NEED_DATA, or the end."""
        buffer = self._buffer
        while True:
            state = self._state
            if state == _CHUNK_DATA:
                if not buffer:
                    break
                take = min(len(buffer), self._remaining)
                data = bytes(buffer[:take])
                del buffer[:take]
                self._remaining -= take
                if not self._remaining:
                    self._state = _CHUNK_END
                return data
            if state == _CHUNK_END:
                if len(buffer) < 2:
                    break
                if buffer[:2] != b"\r\n":
                    raise InvalidResponse("a chunk's data is not followed by CRLF")
                del buffer[:2]
                self._state = _CHUNK_LINE_STATE
                continue
            line = self._line(MAX_CHUNK_LINE_BYTES if state == _CHUNK_LINE_STATE else None)
            if line is None:
                break
            if state == _CHUNK_LINE_STATE:
                match = _CHUNK_LINE.fullmatch(line)
                if match is None:
                    raise InvalidResponse(f"invalid chunk-size line {line[:80]!r}")
                size = int(match.group(1), 16)
                if size:
                    self._remaining = size
                    self._state = _CHUNK_DATA
                else:
                    self._state = _TRAILER
                continue
            # A trailer line (§7.1.2): checked as a field line, then ignored.
            if not line:
                self._finish()
                return END_OF_MESSAGE
            _field(line)
        if self._eof:
            raise InvalidResponse("the connection closed inside a chunked body")
        return NEED_DATA

    def _line(self, limit: int | None) -> bytes | None:
        """The next CRLF-terminated line (without it), or None while incomplete.
        ``limit`` bounds a chunk-size line; trailer lines share MAX_TRAILER_BYTES."""
        buffer = self._buffer
        bound = limit if limit is not None else max(0, MAX_TRAILER_BYTES - self._trailer_bytes)
        end = buffer.find(b"\r\n", 0, bound + 2)
        if end < 0:
            if len(buffer) >= bound + 2:
                what = "chunk-size line" if limit is not None else "trailer section"
                raise InvalidResponse(f"the {what} is over {bound} bytes")
            return None
        line = bytes(buffer[:end])
        del buffer[: end + 2]
        if _BAD_HEAD_BYTES.search(line):
            raise InvalidResponse(f"a control character in {line[:80]!r}")
        if limit is None:
            self._trailer_bytes += end + 2
        return line


def _parse_head(head: bytes) -> tuple[bool, int, tuple[tuple[bytes, bytes], ...]]:
    """(HTTP/1.0?, status, headers) of one response head (without its final CRLFCRLF)."""
    bad = _BAD_HEAD_BYTES.search(head)
    if bad is not None:
        raise InvalidResponse(f"a bare CR or LF or a control character at byte {bad.start()}")
    lines = head.split(b"\r\n")
    match = _STATUS_LINE.fullmatch(lines[0])
    if match is None:
        raise InvalidResponse(f"invalid status line {lines[0][:80]!r}")
    headers = tuple(_field(line) for line in lines[1:])
    return match.group(1) == b"0", int(match.group(2)), headers


def _field(line: bytes) -> tuple[bytes, bytes]:
    """``(lower-cased name, trimmed value)`` of one field line (§5), control characters
    already refused."""
    name, colon, value = line.partition(b":")
    if not _TOKEN.fullmatch(name):
        if line[:1] in (b" ", b"\t"):
            raise InvalidResponse(f"a folded header line (obs-fold) {line[:80]!r}")
        if not colon:
            raise InvalidResponse(f"a header line without a colon {line[:80]!r}")
        if name and name.rstrip(b" \t") != name:
            raise InvalidResponse(f"whitespace before the colon in {line[:80]!r}")
        raise InvalidResponse(f"invalid header name in {line[:80]!r}")
    if not colon:
        raise InvalidResponse(f"a header line without a colon {line[:80]!r}")
    return name.lower(), value.strip(b" \t")


def _content_length(values: list[bytes]) -> int:
    """RFC 9110 §8.6: one length, or a list of identical ones; anything else is a
    framing error (request smuggling lives in such disagreements)."""
    found: set[bytes] = set()
    for value in values:
        for item in value.split(b","):
            item = item.strip(b" \t")
            if not item.isdigit():  # bytes.isdigit: ASCII digits only
                raise InvalidResponse(f"invalid Content-Length {value[:40]!r}")
            if len(item) > MAX_LENGTH_DIGITS:
                raise InvalidResponse(f"Content-Length {item[:40]!r}... is too large")
            found.add(item.lstrip(b"0") or b"0")
    if len(found) != 1:
        raise InvalidResponse("conflicting Content-Length values")
    return int(found.pop())


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """A ``Retry-After`` header (RFC 9110 §10.2.3: delay-seconds or an HTTP-date) as
    seconds from ``now`` (unix seconds); None when absent or unreadable. The one rule
    for every client that honours it (Insight REST, callbacks)."""
    if value is None:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():  # not str.isdigit alone: "²" is a digit to it
        return float(int(text[:12]))  # 12 digits are 30,000 years: the rest is noise
    from email.utils import parsedate_to_datetime  # here: 0.4 MB held for a rare header form

    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:  # "-0000": an HTTP-date is always UTC
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, moment.timestamp() - now)
