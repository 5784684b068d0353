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

from dashpay.domain.errors import INVALID_PARAMS, TOO_LARGE, PermissionDenied
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


def permission_denied(socket_path: Path) -> PermissionDenied:
    """Why connecting to ``socket_path`` was refused: the socket itself, or the first
    directory on its path this user may not enter; its owner, group and mode, and what
    to do about it (join the group, or log in again after joining)."""
    blocked = _blocked_at(socket_path.absolute())
    is_directory = blocked != socket_path.absolute()
    what, needs = ("the directory ", "rx") if is_directory else ("", "rw")
    try:
        info = os.stat(blocked)
    except OSError as exc:  # it changed meanwhile
        return PermissionDenied(
            f"permission denied on {socket_path} ({exc.strerror})", socket=str(socket_path)
        )
    owner, group = _user_name(info.st_uid), _group_name(info.st_gid)
    mode = f"{info.st_mode & 0o7777:04o}"
    shown = f"permission denied on {what}{blocked} (owned by {owner}:{group}, mode {mode})"
    if info.st_uid == os.geteuid():
        advice = f"it is yours, but its mode keeps you out too: `chmod u+{needs} {blocked}`"
    elif info.st_gid in os.getgroups() or info.st_gid == os.getegid():
        advice = f"you are in group {group}, but the mode gives it no access: `chmod g+{needs}`"
    elif _listed_member(info.st_gid):
        advice = (
            f"you are in group {group}, but this login session is not yet: log in again "
            f"(or run `newgrp {group}`)"
        )
    else:
        advice = (
            f"add yourself to group {group} (`sudo usermod -aG {group} $USER`, then log in again)"
        )
    return PermissionDenied(
        f"{shown}: {advice}",
        socket=str(socket_path), path=str(blocked), owner=owner, group=group, mode=mode,
    )  # fmt: skip


def _blocked_at(path: Path) -> Path:
    """The socket, or the first directory on its path that this user may not enter
    (the first whose entry cannot be looked at)."""
    current = Path(path.parts[0])
    for name in path.parts[1:]:
        entry = current / name
        try:
            os.stat(entry)
        except PermissionError:
            return current
        except OSError:
            break
        current = entry
    return path


def _user_name(uid: int) -> str:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group_name(gid: int) -> str:
    import grp

    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _listed_member(gid: int) -> bool:
    """Whether /etc/group (or NSS) lists this user in ``gid``: joined, but the process
    still has the groups of the login before."""
    import grp
    import pwd

    try:
        name = pwd.getpwuid(os.getuid()).pw_name
        group = grp.getgrgid(gid)
    except KeyError:
        return False
    return name in group.gr_mem or pwd.getpwnam(name).pw_gid == gid


class ControlClient:
    """Calls methods on a dashpay daemon over its Unix control socket.

    ``call`` raises ``RemoteError`` for errors the daemon reports (its ``kind`` says
    which), ``DaemonUnreachable`` when nothing answers on the socket,
    ``PermissionDenied`` when the socket's permissions keep this user out, and
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

    def connect(self) -> None:
        """Connect now (``call`` connects when it needs to): raises what ``call`` would
        for a daemon it cannot reach, before anything is sent."""
        self._connection(time.monotonic() + self.timeout)

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
            if exc.errno in (errno.EACCES, errno.EPERM):
                raise permission_denied(self.socket_path) from None
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
