"""Ownership of a wallet: exactly one daemon processes a wallet at a time.

SQLite is one machine: an exclusive ``flock`` on ``<database>.lock`` makes a second
daemon on the same database refuse to start. MySQL is the engine to scale on: several
daemons may share a database, and the one holding ``GET_LOCK('dashpay:<wallet>')`` on a
dedicated connection owns the wallet; the others wait as standbys. MySQL releases the
lock when the owner's connection dies (kill -9, crash, network loss), so a standby takes
over within its polling interval. No home-made consensus.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Any


class FileOwnerLock:
    """flock(2) on a file next to the SQLite database."""

    exclusive_machine = True  # a second daemon must refuse, not wait

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def try_acquire(self, timeout: float = 0.0) -> bool:
        if self._fd is not None:
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    def holder(self) -> str:
        try:
            return self.path.read_text().strip() or "unknown"
        except OSError:
            return "unknown"

    def alive(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class MysqlOwnerLock:
    """GET_LOCK on a connection of its own (not from the pool: the lock lives exactly
    as long as that connection)."""

    exclusive_machine = False  # others wait as standbys

    # MySQL lock names are at most 64 characters.
    MAX_NAME = 64

    def __init__(self, connect: Any, name: str) -> None:
        self._connect = connect
        self.name = name[: self.MAX_NAME]
        self._conn: Any = None

    def try_acquire(self, timeout: float = 0.0) -> bool:
        """Wait up to ``timeout`` seconds (whole seconds, as GET_LOCK takes them)."""
        if self._conn is None:
            self._conn = self._connect()
        try:
            with self._conn.cursor() as cur:
                cur.execute("SELECT GET_LOCK(%s, %s)", (self.name, int(timeout)))
                (got,) = cur.fetchone()
            self._conn.commit()
        except Exception:
            self._drop()
            raise
        return got == 1

    def holder(self) -> str:
        return f"MySQL connection holding lock {self.name!r}"

    def alive(self) -> bool:
        """Do we still hold it? False when the connection died (the lock went with it)."""
        if self._conn is None:
            return False
        try:
            with self._conn.cursor() as cur:
                cur.execute("SELECT IS_USED_LOCK(%s) = CONNECTION_ID()", (self.name,))
                (mine,) = cur.fetchone()
            self._conn.commit()
            return mine == 1
        except Exception:
            self._drop()
            return False

    def release(self) -> None:
        if self._conn is not None:
            try:
                with self._conn.cursor() as cur:
                    cur.execute("SELECT RELEASE_LOCK(%s)", (self.name,))
                self._conn.commit()
            except Exception:
                pass
            self._drop()

    def _drop(self) -> None:
        try:
            if self._conn is not None:
                self._conn.close()
        except Exception:
            pass
        self._conn = None
