"""A blocking control-socket client for the CLI (and for scripts and tests).

Stdlib only (``socket``, ``json`` via ``protocol``): every ``dashpay`` command imports
this, so it must not pull in trio. One ``ControlClient`` holds at most one connection,
opened on the first call and reused for later ones; after a timeout or a broken
response it is dropped, because its state (a late answer still in flight) is unknown.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import time
from itertools import count
from pathlib import Path
from types import TracebackType
from typing import Any

from dashpay.domain.errors import INVALID_PARAMS, TOO_LARGE
from dashpay.wire.jsonrpc import (
    MAX_MESSAGE_BYTES,
    MAX_RESPONSE_BYTES,
    LineBuffer,
    LineTooLong,
    MalformedReply,
    RemoteError,
    decode_response,
    encode_request,
)

# Bytes read per recv; responses are usually small, a long `receiver list` takes a few.
RECEIVE_CHUNK = 64 * 1024
# How long to look for the reason a daemon wrote before it dropped the connection.
LEFTOVER_READ_SECONDS = 0.5

_REASONS = {
    errno.ENOENT: "the socket file does not exist",
    errno.ECONNREFUSED: "connection refused: the socket file is stale or not a socket",
    errno.EACCES: "permission denied — add yourself to the dashpay group",
    errno.EPERM: "permission denied — add yourself to the dashpay group",
    errno.ENOTDIR: "a component of the path is not a directory",
}


class DaemonUnreachable(Exception):
    """No daemon answers on the control socket; says why and what to do."""

    def __init__(self, socket_path: Path | str, reason: str) -> None:
        self.socket_path = Path(socket_path)
        self.reason = reason
        super().__init__(str(self))

    def __str__(self) -> str:
        return (
            f"no dashpay daemon is answering on {self.socket_path} ({self.reason}); start it "
            "with `dashpay serve` (or `dashpay serve --sandbox`) or pass --socket"
        )


class ControlClient:
    """Calls methods on a dashpay daemon over its Unix control socket.

    ``call`` raises ``RemoteError`` for errors the daemon reports (its ``kind`` says
    which), ``DaemonUnreachable`` when nothing answers on the socket, and
    ``TimeoutError`` when no answer arrives within ``timeout`` seconds.
    """

    def __init__(self, socket_path: Path | str, timeout: float = 30.0) -> None:
        self.socket_path = Path(socket_path)
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._buffer = LineBuffer(MAX_RESPONSE_BYTES)
        self._ids = count(1)

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._buffer = LineBuffer(MAX_RESPONSE_BYTES)

    def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        """Send one request and wait for its result."""
        request_id = next(self._ids)
        try:
            request = encode_request(request_id, method, params if params is not None else {})
        except (TypeError, ValueError) as exc:
            raise RemoteError(
                INVALID_PARAMS, f"params for {method} are not JSON data: {exc}"
            ) from None
        if len(request) > MAX_MESSAGE_BYTES:
            # The daemon would refuse it with the same error; save the round trip.
            raise RemoteError(
                TOO_LARGE,
                f"the {method} request is {len(request)} bytes; the control socket accepts "
                f"at most {MAX_MESSAGE_BYTES}",
            )
        deadline = time.monotonic() + self.timeout
        sock = self._connection(deadline)
        try:
            try:
                self._send(sock, request, deadline, method)
            except DaemonUnreachable:
                # A daemon at its connection limit answers why and closes without
                # reading the request, so sending may fail; its answer is already here.
                line = self._leftover_line(sock)
                if line is None:
                    raise
            else:
                line = self._receive_line(sock, deadline, method)
            return decode_response(line, request_id)
        except MalformedReply:
            self.close()
            raise
        except RemoteError:
            # The connection stays usable; if the daemon closed it (an error not tied to
            # a request), the next call notices and reconnects.
            raise
        except BaseException:
            self.close()
            raise

    # -- internals --------------------------------------------------------------------

    def _connection(self, deadline: float) -> socket.socket:
        if self._sock is not None and not _dropped(self._sock):
            return self._sock
        self.close()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self._remaining(deadline, "connect"))
            sock.connect(os.fspath(self.socket_path))
        except TimeoutError:
            sock.close()
            raise TimeoutError(
                f"connecting to {self.socket_path} took longer than {self.timeout:g} s; the "
                "daemon is overloaded or stuck"
            ) from None
        except OSError as exc:
            sock.close()
            reason = _REASONS.get(exc.errno or -1) or exc.strerror or str(exc)
            raise DaemonUnreachable(self.socket_path, reason) from None
        self._sock = sock
        return sock

    def _send(self, sock: socket.socket, data: bytes, deadline: float, method: str) -> None:
        try:
            sock.settimeout(self._remaining(deadline, method))
            sock.sendall(data)
        except TimeoutError:
            raise self._timeout(method) from None
        except OSError as exc:
            raise DaemonUnreachable(
                self.socket_path, f"the connection broke while sending: {exc.strerror or exc}"
            ) from None

    def _receive_line(self, sock: socket.socket, deadline: float, method: str) -> bytes:
        while True:
            try:
                line = self._buffer.next_line()
            except LineTooLong:
                raise MalformedReply(
                    f"the response to {method} is larger than {MAX_RESPONSE_BYTES} bytes"
                ) from None
            if line is not None:
                return line
            try:
                sock.settimeout(self._remaining(deadline, method))
                data = sock.recv(RECEIVE_CHUNK)
            except TimeoutError:
                raise self._timeout(method) from None
            except OSError as exc:
                raise DaemonUnreachable(
                    self.socket_path,
                    f"the connection broke while waiting for the answer: {exc.strerror or exc}",
                ) from None
            if not data:
                raise DaemonUnreachable(
                    self.socket_path, f"the daemon closed the connection without answering {method}"
                )
            self._buffer.feed(data)

    def _leftover_line(self, sock: socket.socket) -> bytes | None:
        """A complete line the daemon sent before the connection broke, if any."""
        with contextlib.suppress(LineTooLong):
            line = self._buffer.next_line()
            if line is not None:
                return line
        try:
            sock.settimeout(LEFTOVER_READ_SECONDS)
            while True:
                data = sock.recv(RECEIVE_CHUNK)
                if not data:
                    return None
                self._buffer.feed(data)
                line = self._buffer.next_line()
                if line is not None:
                    return line
        except (OSError, LineTooLong):
            return None

    def _remaining(self, deadline: float, method: str) -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            raise self._timeout(method)
        return left

    def _timeout(self, method: str) -> TimeoutError:
        return TimeoutError(
            f"no answer to {method} from {self.socket_path} within {self.timeout:g} s"
        )


def _dropped(sock: socket.socket) -> bool:
    """True if the daemon closed this idle connection (keep-alive timeout, restart) or
    sent something unasked: either way, do not send a request on it."""
    try:
        # Non-blocking mode: with a timeout set, Python would first wait for readability.
        sock.settimeout(0)
        sock.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return False
    except OSError:
        return True
    return True  # end of stream, or bytes nobody asked for
