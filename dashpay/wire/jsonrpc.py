"""The control protocol: JSON-RPC 2.0, one JSON object per line, without any I/O.

The daemon (a trio shell in ``server.py``) and the CLI (a blocking socket in
``client.py``) share this module, so it is stdlib-only: importing it must stay cheap for
every CLI invocation. In the spirit of h11 it never touches a socket: bytes go into a
``LineBuffer``, lines come out; ``parse_request`` turns a line into a ``Request`` or the
``ErrorResponse`` to send back; the ``encode_*`` functions produce the bytes to write.

Wire format (JSON-RPC 2.0, https://www.jsonrpc.org/specification):

- Each message is one UTF-8 JSON object terminated by ``\\n`` (JSON text never contains
  a raw newline, RFC 8259 §7, so the framing is unambiguous).
- ``params`` is an object of named members or absent; positional arrays and batches are
  refused with a clear message rather than half-supported.
- JSON numbers in requests are decoded as ``Decimal``: a client that writes
  ``"amount": 0.1`` means the decimal 0.1, and money never passes through a float.
- Every error carries ``error.data.kind`` from ``dashpay.errors``: the machine-readable
  fact a script or the CLI acts on. ``error.code`` is the JSON-RPC code for that kind.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from decimal import Decimal
from types import MappingProxyType
from typing import Any, NamedTuple

from dashpay.domain.errors import (
    INTERNAL,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    TOO_LARGE,
    DashpayError,
    ParseError,
)

JSONRPC_VERSION = "2.0"

# -- limits ---------------------------------------------------------------------------

# The largest request line we accept, newline included. The biggest real request (a
# receiver.create with a description, a callback URL and metadata) is well under 4 KiB;
# 64 KiB leaves room for growth while bounding what a hostile local client can make the
# daemon buffer per connection (256 connections x 64 KiB = 16 MiB worst case). For
# comparison: tomcat limits HTTP headers to 8 KiB, node.js to 16 KiB (formerly 80 KiB).
MAX_MESSAGE_BYTES = 64 * 1024

# The largest response line the client accepts. A `receiver list` of 1000 rows is about
# 1.5 MB of JSON; 16 MiB leaves an order of magnitude of slack while still refusing a
# runaway stream (a peer that is not a dashpay daemon, or a bug) before it eats memory.
MAX_RESPONSE_BYTES = 16 * 1024 * 1024

# How long the daemon lets one handler run before answering `unavailable`. Generous:
# the slowest methods (rescan, a create that has to fetch a fiat price) wait on the
# network, but a request that cannot finish in a minute will not finish usefully.
DEFAULT_REQUEST_TIMEOUT = 60.0

# A client that has sent part of a line has this long to finish it; otherwise it is
# dropped. A real client writes a whole request at once, so anything slower is broken or
# hostile (the slowloris pattern: hold a connection slot open by trickling bytes).
IDLE_TIMEOUT = 10.0

# A connection with no request in flight and no partial line is closed after this long.
# Like an HTTP keep-alive timeout (nginx: 75 s): a client may reuse its connection for
# several calls, but idle connections cannot hold connection slots forever.
KEEPALIVE_TIMEOUT = 60.0

# JSON-RPC 2.0 §5.1 error codes, and the application range we use for everything else.
CODE_PARSE_ERROR = -32700
CODE_INVALID_REQUEST = -32600
CODE_METHOD_NOT_FOUND = -32601
CODE_INVALID_PARAMS = -32602
CODE_INTERNAL = -32603
CODE_APPLICATION = -32000  # "server error" range; the kind says which one

_CODE_BY_KIND = {
    PARSE_ERROR: CODE_PARSE_ERROR,
    INVALID_REQUEST: CODE_INVALID_REQUEST,
    TOO_LARGE: CODE_INVALID_REQUEST,  # a message the server refuses to read is invalid
    METHOD_NOT_FOUND: CODE_METHOD_NOT_FOUND,
    INVALID_PARAMS: CODE_INVALID_PARAMS,
    INTERNAL: CODE_INTERNAL,
}
_KIND_BY_CODE = {
    CODE_PARSE_ERROR: PARSE_ERROR,
    CODE_INVALID_REQUEST: INVALID_REQUEST,
    CODE_METHOD_NOT_FOUND: METHOD_NOT_FOUND,
    CODE_INVALID_PARAMS: INVALID_PARAMS,
    CODE_INTERNAL: INTERNAL,
}

RequestId = str | int | None


def code_for_kind(kind: str) -> int:
    """The JSON-RPC ``error.code`` for an error kind (application kinds share -32000)."""
    return _CODE_BY_KIND.get(kind, CODE_APPLICATION)


# -- errors ---------------------------------------------------------------------------


class LineTooLong(DashpayError):
    """A line grew past its limit before its newline arrived."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            TOO_LARGE,
            f"control message is longer than {limit} bytes; send smaller requests "
            "(one JSON object per line, terminated by a newline)",
            limit=limit,
        )
        self.limit = limit


class RemoteError(DashpayError):
    """The daemon answered with a JSON-RPC error: ``kind`` says what to do about it."""

    def __init__(
        self,
        kind: str,
        message: str,
        data: Mapping[str, Any] | None = None,
        code: int | None = None,
    ) -> None:
        super().__init__(kind, message)
        self.data: dict[str, Any] = {"kind": kind, **(data or {})}
        self.data["kind"] = kind
        self.details = {k: v for k, v in self.data.items() if k != "kind"}
        self.code = code if code is not None else code_for_kind(kind)

    def __repr__(self) -> str:
        return f"RemoteError(kind={self.kind!r}, message={self.message!r}, code={self.code})"


class MalformedReply(RemoteError):
    """The peer's response was not valid JSON-RPC for our request (not a dashpay daemon,
    or a bug). A ``RemoteError`` so callers handle it with the daemon's own errors."""

    def __init__(self, message: str) -> None:
        super().__init__(INTERNAL, f"malformed response from the daemon: {message}")


# -- framing --------------------------------------------------------------------------


class LineBuffer:
    """Accumulates received bytes and hands out complete ``\\n``-terminated lines.

    ``feed`` never raises; ``next_line`` raises ``LineTooLong`` once the line at the
    front of the buffer is (or must become) longer than ``max_line_bytes`` including its
    newline, so the caller learns about an oversize line as soon as the limit is crossed
    rather than after buffering all of it.
    """

    def __init__(self, max_line_bytes: int = MAX_MESSAGE_BYTES) -> None:
        if max_line_bytes < 1:
            raise ValueError("max_line_bytes must be at least 1")
        self.max_line_bytes = max_line_bytes
        self._buffer = bytearray()
        self._scanned = 0  # bytes at the front already known to hold no newline

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def next_line(self) -> bytes | None:
        """The next complete line without its ``\\n``, or None until one has arrived."""
        newline = self._buffer.find(b"\n", self._scanned)
        if newline < 0:
            self._scanned = len(self._buffer)
            if len(self._buffer) >= self.max_line_bytes:
                # Even if the newline came next, the line would be over the limit.
                raise LineTooLong(self.max_line_bytes)
            return None
        if newline + 1 > self.max_line_bytes:
            raise LineTooLong(self.max_line_bytes)
        line = bytes(self._buffer[:newline])
        del self._buffer[: newline + 1]
        self._scanned = 0
        return line

    def lines(self) -> list[bytes]:
        """Every complete line buffered so far (raises ``LineTooLong`` like next_line)."""
        out = []
        while (line := self.next_line()) is not None:
            out.append(line)
        return out

    @property
    def pending(self) -> int:
        """Bytes of an unfinished line waiting for their newline."""
        return len(self._buffer)


# -- requests -------------------------------------------------------------------------


# Named tuples, not dataclasses: every CLI call imports this module, and dataclasses
# costs it ``inspect`` (~5 ms of a 50 ms command).
_NOTHING: Mapping[str, Any] = MappingProxyType({})


class Request(NamedTuple):
    """A valid JSON-RPC request. ``notification`` requests (no ``id`` member) are
    executed but never answered (JSON-RPC 2.0 §4.1)."""

    id: RequestId
    method: str
    params: Mapping[str, Any] = _NOTHING
    notification: bool = False


class ErrorResponse(NamedTuple):
    """An error to send back: to a request we could not accept, or from a handler."""

    id: RequestId
    kind: str
    message: str
    data: Mapping[str, Any] = _NOTHING
    code: int | None = None

    def encode(self) -> bytes:
        return _encode_error(self.id, self.kind, self.message, self.code, self.data)

    @classmethod
    def from_exception(cls, request_id: RequestId, error: DashpayError) -> ErrorResponse:
        return cls(request_id, error.kind, error.message, dict(error.details))


class _NonStandardConstant(ValueError):
    pass


def _reject_constant(name: str) -> Any:
    # json.loads accepts NaN/Infinity by default; RFC 8259 §6 does not.
    raise _NonStandardConstant(f"{name} is not valid JSON (RFC 8259 allows finite numbers only)")


def _loads(text: str, *, decimals: bool) -> Any:
    return json.loads(
        text,
        parse_float=Decimal if decimals else float,
        parse_constant=_reject_constant,
    )


def _valid_id(value: Any) -> bool:
    # JSON-RPC 2.0 §4: a String, Number (without fractional part) or Null. A bool is a
    # Python int but not a JSON number, so it is refused explicitly.
    return (
        value is None
        or isinstance(value, str)
        or (isinstance(value, int) and not isinstance(value, bool))
    )


def decode_json(data: bytes, what: str) -> Any:
    """One JSON document read the way the control protocol reads it (numbers with a
    fraction as exact ``Decimal``, NaN and infinities refused); a ``ParseError`` naming
    ``what`` on anything else. The HTTP API reads its bodies with it too."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ParseError(f"{what} is not UTF-8 (bad byte at offset {exc.start})") from None
    try:
        return _loads(text, decimals=True)
    except json.JSONDecodeError as exc:
        raise ParseError(f"{what} is not valid JSON: {exc.msg} at column {exc.colno}") from None
    except RecursionError:
        raise ParseError(f"{what} is nested too deeply") from None
    except ValueError as exc:  # NaN/Infinity, or an integer with too many digits
        raise ParseError(f"{what} is not valid JSON: {exc}") from None


def parse_request(line: bytes) -> Request | ErrorResponse:
    """Validate one line (without its newline) as a JSON-RPC 2.0 request.

    Returns the ``Request`` or the ``ErrorResponse`` to send back (with the request's id
    when it could be read, else null). Never raises on hostile input.
    """
    try:
        message = decode_json(line, "control message")
    except DashpayError as exc:
        return ErrorResponse(None, exc.kind, exc.message)

    if isinstance(message, list):
        return ErrorResponse(
            None, INVALID_REQUEST, "batches are not supported; send one request per line"
        )
    if not isinstance(message, dict):
        return ErrorResponse(
            None,
            INVALID_REQUEST,
            f"a request must be a JSON object, not {_json_type(message)}",
        )

    notification = "id" not in message
    request_id = message.get("id")
    if not _valid_id(request_id):
        return ErrorResponse(
            None,
            INVALID_REQUEST,
            f'"id" must be a string, an integer or null, not {_json_type(request_id)}',
        )
    if message.get("jsonrpc") != JSONRPC_VERSION:
        return ErrorResponse(request_id, INVALID_REQUEST, '"jsonrpc" must be exactly "2.0"')
    method = message.get("method")
    if not isinstance(method, str) or not method:
        return ErrorResponse(request_id, INVALID_REQUEST, '"method" must be a non-empty string')
    params = message.get("params", {})
    if isinstance(params, list):
        return ErrorResponse(
            request_id,
            INVALID_PARAMS,
            '"params" must be an object of named parameters; positional arrays are not supported',
        )
    if not isinstance(params, dict):
        return ErrorResponse(
            request_id,
            INVALID_REQUEST,
            f'"params" must be an object or absent, not {_json_type(params)}',
        )
    return Request(request_id, method, params, notification)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float | Decimal):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


# -- encoding -------------------------------------------------------------------------


def _default(value: Any) -> Any:
    # Money travels as decimal text; a Decimal that slipped into a result is sent as its
    # exact string rather than failing the request or being rounded through a float.
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"cannot send non-finite decimal {value} as JSON")
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def encode_json(value: Any) -> bytes:
    """Compact UTF-8 JSON, Decimals as their exact text. Raises TypeError/ValueError for
    values JSON cannot carry (NaN, infinities, arbitrary objects): better a clear error
    than a document the peer rejects."""
    text = json.dumps(
        value, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_default
    )
    return text.encode("utf-8")


def _dumps(message: Mapping[str, Any]) -> bytes:
    """One wire line (see ``encode_json``)."""
    return encode_json(message) + b"\n"


def encode_request(request_id: RequestId, method: str, params: Mapping[str, Any] | None) -> bytes:
    """A request line; ``params=None`` omits the member."""
    message: dict[str, Any] = {"jsonrpc": JSONRPC_VERSION, "id": request_id, "method": method}
    if params is not None:
        message["params"] = params
    return _dumps(message)


def encode_notification(method: str, params: Mapping[str, Any] | None = None) -> bytes:
    """A request line without ``id``: executed by the daemon, never answered."""
    message: dict[str, Any] = {"jsonrpc": JSONRPC_VERSION, "method": method}
    if params is not None:
        message["params"] = params
    return _dumps(message)


def encode_result(request_id: RequestId, result: Any) -> bytes:
    """A success line. Raises TypeError/ValueError if ``result`` is not JSON data."""
    return _dumps({"jsonrpc": JSONRPC_VERSION, "id": request_id, "result": result})


def encode_error(
    request_id: RequestId, kind: str, message: str, code: int | None = None, **data: Any
) -> bytes:
    """An error line; ``data`` members (e.g. ``DashpayError.details``) go next to
    ``data.kind``."""
    return _encode_error(request_id, kind, message, code, data)


def _encode_error(
    request_id: RequestId, kind: str, message: str, code: int | None, data: Mapping[str, Any]
) -> bytes:
    error = {
        "code": code if code is not None else code_for_kind(kind),
        "message": message,
        "data": {**data, "kind": kind},
    }
    try:
        return _dumps({"jsonrpc": JSONRPC_VERSION, "id": request_id, "error": error})
    except (TypeError, ValueError):
        # The details are not JSON data: the kind and message still get through.
        error["data"] = {"kind": kind}
        return _dumps({"jsonrpc": JSONRPC_VERSION, "id": request_id, "error": error})


# -- responses ------------------------------------------------------------------------


def decode_response(line: bytes, expected_id: RequestId) -> Any:
    """The result of the response to request ``expected_id``, or raise ``RemoteError``.

    An error with a null id is accepted: the daemon uses it for errors not tied to a
    request (connection refused for capacity, a line too large). Anything that is not a
    JSON-RPC 2.0 response to our request raises ``MalformedReply``.
    """
    try:
        message = _loads(line.decode("utf-8"), decimals=False)
    except UnicodeDecodeError:
        raise MalformedReply("not UTF-8") from None
    except (ValueError, RecursionError) as exc:
        raise MalformedReply(f"not JSON ({exc})") from None
    if not isinstance(message, dict):
        raise MalformedReply(f"expected a JSON object, got {_json_type(message)}")
    if message.get("jsonrpc") != JSONRPC_VERSION:
        raise MalformedReply('"jsonrpc" is not "2.0"')
    if ("result" in message) == ("error" in message):
        raise MalformedReply('expected exactly one of "result" and "error"')
    response_id = message.get("id")
    same_id = type(response_id) is type(expected_id) and response_id == expected_id

    if "error" in message:
        if not (same_id or response_id is None):
            raise MalformedReply(f"error for request id {response_id!r}, expected {expected_id!r}")
        raise _remote_error(message["error"])
    if not same_id:
        raise MalformedReply(f"result for request id {response_id!r}, expected {expected_id!r}")
    return message["result"]


def _remote_error(error: Any) -> RemoteError:
    if not isinstance(error, dict):
        return MalformedReply('"error" is not an object')
    code = error.get("code")
    message = error.get("message")
    data = error.get("data")
    if not isinstance(code, int) or isinstance(code, bool) or not isinstance(message, str):
        return MalformedReply('"error" needs an integer "code" and a string "message"')
    data = data if isinstance(data, dict) else {}
    kind = data.get("kind")
    if not isinstance(kind, str) or not kind:
        kind = _KIND_BY_CODE.get(code, INTERNAL)
    return RemoteError(kind, message, data, code)
