"""The control socket's file: claimed at start-up, removed at exit.

The socket file is created atomically with its final mode (bound under a temporary name,
chmod-ed, then hard-linked into place, which fails if the name is taken), so there is no
moment when it is reachable with looser permissions, and two daemons cannot both claim
the same path. A socket file nobody answers on is stale and replaced; a live one or a
file that is not a socket is never touched.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket as stdlib_socket
import stat
from pathlib import Path

import trio

from dashpay.domain.errors import INVALID_PARAMS, UNAVAILABLE, DashpayError
from dashpay.domain.limits import MAX_UNIX_SOCKET_PATH_BYTES

log = logging.getLogger("dashpay.control")

# How long the start-up check waits for an existing socket to accept a connection. A
# live daemon accepts in microseconds; one that is wedged with a full backlog is still
# "in use" and must not be replaced.
LIVENESS_PROBE_TIMEOUT = 2.0

# Unix socket paths are limited by sockaddr_un.sun_path: 108 bytes on Linux, including
# the terminating NUL.
MAX_SOCKET_PATH_BYTES = MAX_UNIX_SOCKET_PATH_BYTES

LISTEN_BACKLOG = 128


class ControlSocketInUse(DashpayError):
    """Another process is serving on our socket path."""

    def __init__(self, path: Path | str) -> None:
        super().__init__(
            UNAVAILABLE,
            f"another dashpay daemon is already serving on {path}; stop it first or use a "
            "different [control] socket",
            path=str(path),
        )
        self.path = Path(path)


class ControlSocketPathError(DashpayError):
    """The socket path cannot be used (not a socket, too long, no permission)."""

    def __init__(self, path: Path | str, problem: str) -> None:
        super().__init__(
            INVALID_PARAMS,
            f"cannot use {path} as the control socket: {problem}",
            path=str(path),
        )
        self.path = Path(path)


async def bind_socket(
    path: Path, mode: int, group: int | None
) -> tuple[trio.socket.SocketType, tuple[int, int]]:
    """A listening socket at ``path`` with ``mode`` (and ``group``), and its (dev, inode)."""
    if len(os.fsencode(path)) > MAX_SOCKET_PATH_BYTES:
        raise ControlSocketPathError(
            path,
            f"the path is {len(os.fsencode(path))} bytes; Unix sockets allow at most "
            f"{MAX_SOCKET_PATH_BYTES}: choose a shorter [control] socket path",
        )
    _ensure_parent(path.parent)
    await _clear_stale(path)

    temporary = path.parent / f".{path.name[:16]}.{os.getpid()}.tmp"
    if len(os.fsencode(temporary)) > MAX_SOCKET_PATH_BYTES:
        temporary = path.parent / f".dp{os.getpid()}"
    _unlink_quietly(temporary)
    sock = trio.socket.socket(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_STREAM)
    try:
        try:
            await sock.bind(os.fspath(temporary))
            if group is not None:
                os.chown(temporary, -1, group)
            os.chmod(temporary, mode)
            sock.listen(LISTEN_BACKLOG)
            os.link(temporary, path)
        finally:
            _unlink_quietly(temporary)
        info = os.lstat(path)
    except FileExistsError:
        sock.close()
        raise ControlSocketInUse(path) from None  # someone bound it since our check
    except PermissionError as exc:
        sock.close()
        raise ControlSocketPathError(path, f"permission denied ({exc.strerror})") from None
    except BaseException:
        sock.close()
        raise
    return sock, (info.st_dev, info.st_ino)


def _ensure_parent(directory: Path) -> None:
    if directory.is_dir():
        return
    try:
        directory.mkdir(mode=0o750, parents=True, exist_ok=True)
        os.chmod(directory, 0o750)  # mkdir's mode is filtered by the umask
    except OSError as exc:
        raise ControlSocketPathError(
            directory, f"cannot create its directory ({exc.strerror})"
        ) from None


async def _clear_stale(path: Path) -> None:
    """Remove a socket file nobody answers on; refuse a live one or a non-socket."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode):
        raise ControlSocketPathError(
            path, "it exists and is not a socket; move it away or set another [control] socket"
        )
    if await _answers(path):
        raise ControlSocketInUse(path)
    log.info("removing stale control socket path=%s", path)
    _unlink_quietly(path)


async def _answers(path: Path) -> bool:
    probe = trio.socket.socket(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_STREAM)
    with probe:
        with trio.move_on_after(LIVENESS_PROBE_TIMEOUT):
            try:
                await probe.connect(os.fspath(path))
            except ConnectionRefusedError:
                return False
            except PermissionError:
                raise ControlSocketPathError(
                    path, "permission denied while checking whether a daemon is serving on it"
                ) from None
            except OSError as exc:
                log.warning("cannot probe control socket path=%s error=%s", path, exc)
                return False
            return True
        return True  # no verdict in time: something holds the socket; do not steal it


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def remove_if_ours(path: Path, identity: tuple[int, int]) -> None:
    try:
        info = os.lstat(path)
        if (info.st_dev, info.st_ino) == identity:
            os.unlink(path)
            log.info("control socket removed path=%s", path)
        else:
            log.warning("control socket was replaced by another file; leaving path=%s", path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("cannot remove control socket path=%s error=%s", path, exc)
