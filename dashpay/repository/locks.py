"""Ownership of a wallet: exactly one daemon processes a wallet at a time.

SQLite is one machine: an exclusive ``flock`` on ``<database>.lock`` makes a second
daemon on the same database refuse to start. On MySQL/MariaDB (one server or a Galera
cluster) several daemons may share a database: the wallet's row of ``wallet_leases``
is a lease (``WalletLease``) with an owner, an epoch that only grows, and an expiry on
the database server's clock. The owner renews it in every write transaction (the
fence, ``SqlRepository._fence``) and, when idle, every third of the lease; a standby
takes the row over once it expired, raising the epoch. Every write transaction of the
owner updates the row where the epoch is its own, so a deposed owner's writes fail
instead of landing: on one server the row lock orders them after the takeover, on
Galera the shared row makes them a certification conflict. ``GET_LOCK`` is not used:
Galera does not replicate it (each node would grant it to a different daemon).
See docs/operations.md.
"""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dashpay.domain.errors import Unavailable

if TYPE_CHECKING:
    from dashpay.repository.sql import SqlRepository

log = logging.getLogger("dashpay.repository.lease")


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


@dataclass(frozen=True, slots=True)
class Fence:
    """What the owner's write transactions check and renew: the lease row of
    ``wallet_id`` must still name ``owner`` at ``epoch``."""

    wallet_id: str
    owner: str
    epoch: int
    lease_ms: int


def ownership_lost(fence: Fence) -> Unavailable:
    return Unavailable(
        f"this daemon no longer owns wallet {fence.wallet_id}: another daemon took the lease "
        f"over (this one held epoch {fence.epoch}); nothing was written, the daemon stops",
        ownership_lost=True,
        wallet_id=fence.wallet_id,
    )


class WalletLease:
    """The wallet's row of ``wallet_leases`` as the daemon's ownership (module
    docstring). ``try_acquire`` takes it (first owner, an expired lease, or our own
    again); from then on ``repo`` fences and renews every write transaction with it;
    ``alive`` renews it with an empty fenced transaction; ``release`` lets it expire at
    once so a standby takes over without waiting out the lease."""

    exclusive_machine = False  # others wait as standbys

    def __init__(self, repo: SqlRepository, wallet_id: str, lease_seconds: float) -> None:
        if not lease_seconds > 0:
            raise ValueError(f"lease_seconds must be positive, got {lease_seconds}")
        self._repo = repo
        self.wallet_id = wallet_id
        self.lease_ms = int(lease_seconds * 1000)
        # Unique per process and start: a restarted daemon is a new owner.
        self.owner = f"{socket.gethostname()[:80]}:{os.getpid()}:{secrets.token_hex(6)}"
        # The owner renews three times per lease; a standby looks ten times per lease
        # (at most every half second), so it takes over within about 1.1 leases.
        self.renew_interval = lease_seconds / 3
        self.poll_interval = max(0.05, min(0.5, lease_seconds / 10))
        self._holder = "unknown"
        self.lost = False  # set when a fenced write found the lease taken over

    @property
    def fence(self) -> Fence | None:
        fence = self._repo.fence
        return fence if fence is not None and fence.owner == self.owner else None

    def try_acquire(self, timeout: float = 0.0) -> bool:
        """Take the lease if it is free, expired or ours; else False at once (a
        standby calls this every ``poll_interval``). ``timeout`` is accepted for the
        lock interface and waits that long in ``poll_interval`` steps."""
        deadline = time.monotonic() + timeout
        while True:
            if self._attempt():
                return True
            if time.monotonic() + self.poll_interval > deadline:
                return False
            time.sleep(self.poll_interval)

    def _attempt(self) -> bool:
        repo = self._repo
        now = repo._server_now_ms
        wallet_id, owner = self.wallet_id, self.owner

        def work(cur: Any) -> int | None:
            row = repo._execute(
                cur,
                f"SELECT owner, epoch, expires_at < {now}, expires_at - {now}"
                " FROM wallet_leases WHERE wallet_id = ?",
                (wallet_id,),
            ).fetchone()
            if row is None:  # the wallet's first daemon: make the row, already expired
                insert = repo._insert_if_absent_sql(
                    "wallet_leases", ("wallet_id", "owner", "epoch", "expires_at"), ("wallet_id",)
                )
                repo._execute(cur, insert, (wallet_id, "", 0, 0))
                row = ("", 0, 1, 0)
            holder, epoch, expired, left_ms = row
            holder = str(holder.decode() if isinstance(holder, bytes | bytearray) else holder)
            if holder == owner:  # ours (a lost connection, a commit we did not see)
                # expires_at strictly grows, as in the fence: MySQL counts a row whose
                # value did not change as not affected, so a renewal in the same
                # millisecond as the last one would read as "taken meanwhile".
                sql = (
                    f"UPDATE wallet_leases SET expires_at = {repo._greatest}(expires_at + 1,"
                    f" {now} + ?) WHERE wallet_id = ? AND owner = ?"
                )
                params: tuple[Any, ...] = (self.lease_ms, wallet_id, owner)
            elif expired:
                sql = (
                    f"UPDATE wallet_leases SET owner = ?, epoch = epoch + 1, expires_at = {now} + ?"
                    f" WHERE wallet_id = ? AND epoch = ? AND expires_at < {now}"
                )
                params = (owner, self.lease_ms, wallet_id, epoch)
            else:
                self._holder = (
                    f"{holder or 'unknown'} (lease epoch {epoch}, {int(left_ms)} ms left)"
                )
                return None
            if repo._execute(cur, sql, params).rowcount != 1:
                return None  # taken meanwhile (one server: it changed under the lock)
            got = repo._execute(
                cur, "SELECT epoch FROM wallet_leases WHERE wallet_id = ?", (wallet_id,)
            ).fetchone()
            return int(got[0])

        epoch = repo._write(work, fenced=False)
        if epoch is None:
            return False
        previous = self.fence
        repo.fence = Fence(wallet_id, owner, epoch, self.lease_ms)
        repo.fence_renewed_at = time.monotonic()  # taken (or renewed) for a whole lease
        self.lost = False
        if previous is None or previous.epoch != epoch:
            log.info("wallet lease taken wallet=%s epoch=%d owner=%s", wallet_id, epoch, owner)
        return True

    def holder(self) -> str:
        return f"the daemon holding the wallet's lease: {self._holder}"

    def renewal_due_in(self) -> float:
        """Seconds until the lease wants renewing: ``renew_interval`` after the last
        fenced statement renewed it (0 or less: now). The owner's watcher sleeps this
        long, so the lease is renewed at least every ``renew_interval`` however the
        writes fall."""
        return self.renew_interval - (time.monotonic() - self._repo.fence_renewed_at)

    def alive(self) -> bool:
        """Renew the lease (an empty fenced write transaction), unless a write renewed
        it within the last ``renew_interval`` (``renewal_due_in``). False when a standby
        took it over (``lost``) or the database cannot be reached.

        A busy owner's own transactions renew the lease (their fence), so it writes no
        transaction for the lease alone. A fenced statement whose COMMIT then failed
        counts as a renewal here: the watcher then renews an interval after it, still
        within the lease (three intervals long)."""
        if self.fence is None:
            return False
        if self.renewal_due_in() > 0:
            return True
        try:
            self._repo._write(lambda cur: None)
        except Unavailable as exc:
            if exc.details.get("ownership_lost"):
                self.lost = True
            return False
        return True

    def release(self) -> None:
        """Let the lease expire now (a clean stop): a standby takes over at its next
        look instead of after the lease."""
        fence = self.fence
        if fence is None:
            return
        self._repo.fence = None
        sql = (
            "UPDATE wallet_leases SET expires_at = 0"
            " WHERE wallet_id = ? AND owner = ? AND epoch = ?"
        )
        try:
            self._repo._write(
                lambda cur: self._repo._execute(
                    cur, sql, (fence.wallet_id, fence.owner, fence.epoch)
                ),
                fenced=False,
            )
        except Unavailable as exc:  # it expires by itself
            log.warning("wallet lease not released (it expires by itself): %s", exc)
