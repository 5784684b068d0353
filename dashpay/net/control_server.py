"""The control socket server: the trio shell around ``protocol.py``.

Every connection gets its own task in a nursery the server owns, so a client that is
slow, silent, flooding or malformed only ever stalls itself: partial lines have
``idle_timeout`` to finish, idle connections ``keepalive_timeout``, handlers
``request_timeout`` and responses ``send_timeout``. At most ``max_connections`` are open,
so the daemon's memory stays bounded, and ``control_admission.py`` shares them out: a
share per peer uid (SO_PEERCRED), the longest-idle connection evicted to make room for a
new one, and short idle timeouts under pressure, so a local user holding hundreds of
idle connections cannot lock the others out. Only when every connection is answering a
request is a new client refused, with one ``unavailable`` line. Warnings a peer can
trigger per connection go through ``ThrottledLog``: one line per second per kind.

The socket file is claimed and removed by ``control_socket.py``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import socket as stdlib_socket
import struct
import termios
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from typing import Any

import trio

from dashpay.domain.errors import INTERNAL, UNAVAILABLE, DashpayError
from dashpay.domain.limits import (
    CONTROL_PRESSURE_IDLE_TIMEOUT,
    MAX_CONTROL_CONNECTIONS,
)
from dashpay.domain.throttle import ThrottledLog
from dashpay.net.control_admission import UNKNOWN_UID, Admission, Seat
from dashpay.net.control_socket import (
    ControlSocketInUse,
    ControlSocketPathError,
    bind_socket,
    remove_if_ours,
)
from dashpay.wire.jsonrpc import (
    DEFAULT_REQUEST_TIMEOUT,
    IDLE_TIMEOUT,
    KEEPALIVE_TIMEOUT,
    MAX_MESSAGE_BYTES,
    ErrorResponse,
    LineBuffer,
    LineTooLong,
    Request,
    encode_error,
    encode_result,
    parse_request,
)

# The socket file's errors are raised by serve_control: importable from here too.
__all__ = ["ControlSocketInUse", "ControlSocketPathError", "serve_control"]

log = logging.getLogger("dashpay.control")

Handler = Callable[[str, dict[str, Any]], Awaitable[Any]]

# A response that cannot be written within this time means the client is not reading
# (its receive buffer and ours are full). It is disconnected rather than allowed to
# hold a connection task and the memory of its unread answers.
SEND_TIMEOUT = 10.0

# Bytes read per receive: a whole typical request, small enough that one receive never
# overshoots the line limit by much.
RECEIVE_CHUNK = 16 * 1024

# accept() errors that mean "out of resources right now", not "the listener is broken";
# like trio.serve_listeners, we pause and try again instead of dying.
_ACCEPT_RETRY_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
ACCEPT_RETRY_DELAY = 0.1

# struct ucred (pid, uid, gid) as SO_PEERCRED returns it; Linux only.
_SO_PEERCRED = getattr(stdlib_socket, "SO_PEERCRED", None)
_UCRED = struct.Struct("3i")
# The int FIONREAD (SIOCINQ) writes: bytes waiting in a socket's receive queue.
_UNREAD = struct.Struct("i")


@dataclass(frozen=True, slots=True)
class _Limits:
    max_connections: int
    request_timeout: float
    idle_timeout: float
    keepalive_timeout: float
    send_timeout: float
    pressure_timeout: float


async def serve_control(
    socket_path: Path,
    handler: Handler,
    *,
    mode: int = 0o660,
    group: int | None = None,
    max_connections: int = MAX_CONTROL_CONNECTIONS,
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
    idle_timeout: float = IDLE_TIMEOUT,
    keepalive_timeout: float = KEEPALIVE_TIMEOUT,
    send_timeout: float = SEND_TIMEOUT,
    pressure_timeout: float = CONTROL_PRESSURE_IDLE_TIMEOUT,
    task_status=trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve JSON-RPC on a Unix socket at ``socket_path`` until cancelled.

    Raises ``ControlSocketInUse`` if a live server answers at the path and
    ``ControlSocketPathError`` if the path is unusable (a non-socket file there is never
    removed). A stale socket file is replaced. ``task_status.started()`` is called once
    the socket listens with its final mode (and ``group``, a gid, when given). On exit,
    cancellation included, open connections are closed and the socket file is removed
    if it is still ours.
    """
    socket_path = Path(socket_path)
    limits = _Limits(
        max_connections,
        request_timeout,
        idle_timeout,
        keepalive_timeout,
        send_timeout,
        pressure_timeout,
    )
    sock, identity = await bind_socket(socket_path, mode, group)
    try:
        listener = trio.SocketListener(sock)
        log.info("control socket bound path=%s mode=%o group=%s", socket_path, mode, group)
        async with trio.open_nursery() as nursery:
            task_status.started()
            await _Server(handler, limits).accept_loop(listener, nursery)
    finally:
        sock.close()
        remove_if_ours(socket_path, identity)


# -- connections ----------------------------------------------------------------------


@dataclass(eq=False, slots=True)
class _Connection(Seat):
    """A seat in the admission table plus what its task needs to be shortened or
    evicted from outside: its stream, its whole-life cancel scope and the cancel scope
    of the receive it is waiting in (with the moment that wait's timeout counts from)."""

    stream: trio.SocketStream | None = None
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    wait: trio.CancelScope | None = None
    wait_started: float = 0.0


class _Server:
    """The accept loop and the connection tasks of one control socket."""

    def __init__(self, handler: Handler, limits: _Limits) -> None:
        self.handler = handler
        self.limits = limits
        self.table = Admission(limits.max_connections)
        self.warn = ThrottledLog(log)

    async def accept_loop(self, listener: trio.SocketListener, nursery: trio.Nursery) -> None:
        numbers = count(1)
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno not in _ACCEPT_RETRY_ERRNOS:
                    raise
                self.warn.warning("accept", "control accept failed, retrying error=%s", exc)
                await trio.sleep(ACCEPT_RETRY_DELAY)
                continue
            connection = _Connection(next(numbers), _peer_uid(stream), trio.current_time())
            connection.stream = stream
            refusal = self._admit(connection)
            if refusal is None:
                nursery.start_soon(self._run, connection)
            else:
                await _refuse(stream, refusal)

    def _admit(self, connection: _Connection) -> str | None:
        """Seat ``connection``, evicting another if needed; else why it is refused."""
        table = self.table
        was_under_pressure = table.under_pressure
        verdict = table.admit(connection, _evictable)
        if not verdict.admitted:
            self.warn.warning(
                "refused",
                "control connection refused conn=%d uid=%d held_by_uid=%d active=%d limit=%d",
                connection.number,
                connection.uid,
                table.held_by(connection.uid),
                table.active,
                table.limit,
            )
            return verdict.reason
        if verdict.evicted is not None:
            self._evict(verdict.evicted, connection)
        if table.under_pressure and not was_under_pressure:
            self._pressure_started()
        return None

    def _evict(self, victim: Seat, newcomer: _Connection) -> None:
        assert isinstance(victim, _Connection)
        idle_for = trio.current_time() - (victim.idle_since or 0.0)
        self.warn.warning(
            "evicted",
            "control connection evicted to make room conn=%d uid=%d idle=%.1fs for_conn=%d "
            "for_uid=%d active=%d limit=%d uid_share=%d",
            victim.number,
            victim.uid,
            idle_for,
            newcomer.number,
            newcomer.uid,
            self.table.active,
            self.table.limit,
            self.table.share,
        )
        victim.scope.cancel()
        if victim.stream is not None:
            # Closed now, not when its task next runs: no request can slip in between.
            victim.stream.socket.close()

    def _pressure_started(self) -> None:
        """Every idle connection's wait ends ``pressure_timeout`` after it began."""
        timeout = self.limits.pressure_timeout
        for seat in self.table.idle_seats():
            assert isinstance(seat, _Connection)
            if seat.wait is not None:
                seat.wait.deadline = min(seat.wait.deadline, seat.wait_started + timeout)
        self.warn.warning(
            "pressure",
            "control socket under pressure: idle connections now close after %gs "
            "active=%d limit=%d",
            timeout,
            self.table.active,
            self.table.limit,
        )

    def _timeout(self, usual: float) -> float:
        if self.table.under_pressure:
            return min(usual, self.limits.pressure_timeout)
        return usual

    async def _run(self, connection: _Connection) -> None:
        assert connection.stream is not None
        try:
            with connection.scope:
                await self._serve(connection)
        except Exception:
            log.exception("control connection failed conn=%d", connection.number)
        finally:
            self._release(connection)
            await trio.aclose_forcefully(connection.stream)

    def _release(self, connection: _Connection) -> None:
        was_under_pressure = self.table.under_pressure
        self.table.release(connection)
        if was_under_pressure and not self.table.under_pressure:
            self.warn.info(
                "pressure_over",
                "control socket pressure over: usual idle timeouts again active=%d limit=%d",
                self.table.active,
                self.table.limit,
            )

    async def _serve(self, connection: _Connection) -> None:
        """Answer requests on one connection, in order, until it closes or misbehaves."""
        stream, limits, number = connection.stream, self.limits, connection.number
        assert stream is not None
        buffer = LineBuffer(MAX_MESSAGE_BYTES)
        line_started = 0.0  # when the first byte of the unfinished line arrived
        answered = False  # since the last receive: a pipelined request waits for a checkpoint
        log.debug("control connection opened conn=%d uid=%d", number, connection.uid)
        try:
            while True:
                try:
                    line = buffer.next_line()
                except LineTooLong as exc:
                    self.warn.warning(
                        "too_large",
                        "control connection closed: message over limit conn=%d limit=%d",
                        number,
                        exc.limit,
                    )
                    await _send(stream, ErrorResponse.from_exception(None, exc).encode(), limits)
                    return
                if line is not None:
                    if not line.strip():
                        continue  # a blank line (say, from a human on socat) is not a request
                    if answered:
                        await trio.lowlevel.checkpoint()
                    self.table.busy(connection)
                    reply = await self._answer(line, number)
                    answered = True
                    if reply is not None and not await _send(stream, reply, limits):
                        self.warn.warning(
                            "not_reading",
                            "control connection closed: client is not reading its responses "
                            "conn=%d send_timeout=%g",
                            number,
                            limits.send_timeout,
                        )
                        return
                    # A pipelined partial line gets its full idle_timeout from now on: the
                    # time we spent answering is not the client's fault.
                    line_started = trio.current_time()
                    self.table.idle(connection, line_started)
                    continue

                if buffer.pending:
                    started, timeout = line_started, self._timeout(limits.idle_timeout)
                else:
                    started = connection.idle_since
                    if started is None:  # never: a connection waiting here is idle
                        started = trio.current_time()
                    timeout = self._timeout(limits.keepalive_timeout)
                data = None
                connection.wait_started = started
                with trio.move_on_at(started + timeout) as connection.wait:
                    data = await stream.receive_some(RECEIVE_CHUNK)
                connection.wait = None
                if data is None:
                    if buffer.pending:
                        self.warn.warning(
                            "incomplete",
                            "control connection closed: incomplete message conn=%d bytes=%d "
                            "idle_timeout=%g",
                            number,
                            buffer.pending,
                            timeout,
                        )
                    else:
                        log.debug("control connection closed: idle conn=%d", number)
                    return
                if not data:
                    if buffer.pending:
                        self.warn.info(
                            "closed_mid_message",
                            "control connection closed by client mid-message conn=%d bytes=%d",
                            number,
                            buffer.pending,
                        )
                    else:
                        log.debug("control connection closed by client conn=%d", number)
                    return
                if not buffer.pending:
                    line_started = trio.current_time()
                buffer.feed(data)
                answered = False
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            log.debug("control connection broken conn=%d error=%s", number, exc)

    async def _answer(self, line: bytes, number: int) -> bytes | None:
        """The response line for one request line (None for a notification)."""
        request = parse_request(line)
        if isinstance(request, ErrorResponse):
            self.warn.info(
                "rejected",
                "control request rejected conn=%d kind=%s message=%s",
                number,
                request.kind,
                request.message,
            )
            return request.encode()

        response = await self._call(request, number)
        if request.notification:
            if isinstance(response, ErrorResponse):
                self.warn.info(
                    "notification_failed",
                    "control notification failed conn=%d method=%s kind=%s",
                    number,
                    request.method,
                    response.kind,
                )
            return None
        if isinstance(response, ErrorResponse):
            return response.encode()
        try:
            return encode_result(request.id, response)
        except (TypeError, ValueError):
            log.exception(
                "control handler returned a result that is not JSON data conn=%d method=%s",
                number,
                request.method,
            )
            return ErrorResponse(
                request.id, INTERNAL, f"internal error in {request.method}; see the daemon log"
            ).encode()

    async def _call(self, request: Request, number: int) -> Any | ErrorResponse:
        """Run the handler; its result, or the ErrorResponse for what it raised."""
        timeout = self.limits.request_timeout
        try:
            with trio.move_on_after(timeout):
                return await self.handler(request.method, request.params)
        except DashpayError as exc:
            return ErrorResponse.from_exception(request.id, exc)
        except Exception:
            log.exception("control handler failed conn=%d method=%s", number, request.method)
            return ErrorResponse(
                request.id, INTERNAL, f"internal error in {request.method}; see the daemon log"
            )
        self.warn.warning(
            "request_timeout",
            "control request timed out conn=%d method=%s timeout=%g",
            number,
            request.method,
            timeout,
        )
        return ErrorResponse(
            request.id,
            UNAVAILABLE,
            f"{request.method} did not finish within {timeout:g} s; check the daemon log and retry",
        )


def _peer_uid(stream: trio.SocketStream) -> int:
    """The connecting process's uid, from the kernel (SO_PEERCRED: pid, uid, gid)."""
    if _SO_PEERCRED is None:
        return UNKNOWN_UID
    try:
        raw = stream.socket.getsockopt(stdlib_socket.SOL_SOCKET, _SO_PEERCRED, _UCRED.size)
    except OSError:
        return UNKNOWN_UID
    _pid, uid, _gid = _UCRED.unpack(raw)
    return uid


def _evictable(seat: Seat) -> bool:
    """No unread bytes in the kernel queue: closing it cannot lose a request on its way
    (its task has not read it yet). Unknown (the ioctl failed) counts as evictable."""
    assert isinstance(seat, _Connection) and seat.stream is not None
    try:
        raw = fcntl.ioctl(seat.stream.socket.fileno(), termios.FIONREAD, _UNREAD.pack(0))
    except OSError:
        return True
    return _UNREAD.unpack(raw)[0] == 0


async def _refuse(stream: trio.SocketStream, reason: str) -> None:
    line = encode_error(None, UNAVAILABLE, reason)
    # A fresh connection's send buffer is empty, so this cannot block for long; the
    # timeout only guards the accept loop against surprises.
    with trio.move_on_after(1.0):
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await stream.send_all(line)
    await trio.aclose_forcefully(stream)


async def _send(stream: trio.SocketStream, data: bytes, limits: _Limits) -> bool:
    """Write ``data``; False if the client did not take it within the send timeout. What
    the socket's buffer takes goes in one non-blocking write, with no cancel scope and
    no scheduler round trip (see ``_serve``); only a remainder waits, under the timeout."""
    try:
        sent = os.write(stream.socket.fileno(), data)
    except BlockingIOError:
        sent = 0
    except OSError as exc:  # EPIPE, ECONNRESET, EBADF: what send_all reports as broken
        raise trio.BrokenResourceError(f"control connection: {exc}") from exc
    if sent == len(data):
        return True
    with trio.move_on_after(limits.send_timeout):
        await stream.send_all(memoryview(data)[sent:])
        return True
    return False
