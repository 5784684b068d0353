"""The MySQL repository's connections: a small thread-safe pool
(``trio.to_thread.run_sync`` calls arrive on varying threads)."""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable

import pymysql

from dashpay.domain.errors import Unavailable
from dashpay.repository.schema import closed_error

Connection = pymysql.connections.Connection

# A caller waits this long for a free pooled connection before the database counts as
# unavailable; units of work take milliseconds, so only a stuck server runs it out.
POOL_WAIT_TIMEOUT = 30.0


class Pool:
    """At most ``size`` open connections; idle ones are reused newest first (a LIFO
    keeps the fewest connections warm and lets the rest time out server-side)."""

    def __init__(self, connect: Callable[[], Connection], size: int) -> None:
        self._connect = connect
        self._size = size
        self._idle: queue.LifoQueue[Connection] = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(size)
        self._lock = threading.Lock()
        self._closed = False

    def acquire(self) -> Connection:
        if self._closed:
            raise closed_error("mysql")
        if not self._slots.acquire(timeout=POOL_WAIT_TIMEOUT):
            raise Unavailable(
                f"all {self._size} database connections stayed busy for {POOL_WAIT_TIMEOUT:g} s; "
                "the database is slow or stuck (or raise pool_size)"
            )
        try:
            try:
                return self._idle.get_nowait()
            except queue.Empty:
                return self._connect()
        except BaseException:
            self._slots.release()
            raise

    def release(self, conn: Connection, *, reusable: bool) -> None:
        try:
            with self._lock:
                if reusable and not self._closed:
                    self._idle.put(conn)
                    return
            close_quietly(conn)
        finally:
            self._slots.release()

    def drop_idle(self) -> None:
        """Close the idle connections (they lead to a node we left)."""
        idle = []
        while True:
            try:
                idle.append(self._idle.get_nowait())
            except queue.Empty:
                break
        for conn in idle:
            close_quietly(conn)

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self.drop_idle()


def close_quietly(conn: Connection) -> None:
    # A broken connection may fail to say goodbye; the server drops the session (and
    # rolls it back) by itself.
    with contextlib.suppress(pymysql.MySQLError):
        conn.close()
