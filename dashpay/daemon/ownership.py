"""Wallet ownership: one daemon owns a wallet (DESIGN.md §10). A second one on SQLite
refuses to start; on MySQL/MariaDB it waits as a standby and takes over when the
owner's lock connection dies; an owner that lost its lock to a standby stops."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import trio

from dashpay.daemon.status import STANDBY, STARTING
from dashpay.daemon.systemd import sd_notify
from dashpay.domain.errors import CONFLICT, DashpayError

if TYPE_CHECKING:
    from dashpay.daemon.root import Daemon
    from dashpay.domain.wallet import Wallet
    from dashpay.repository.base import Repository

log = logging.getLogger("dashpay.daemon")

# How long one GET_LOCK wait of a standby lasts, and how often the owner checks that
# its lock connection is alive (a takeover happens within about these times).
STANDBY_POLL_SECONDS = 1
OWNERSHIP_CHECK_SECONDS = 2.0


async def own_wallet(
    daemon: Daemon, nursery: trio.Nursery, repo: Repository, wallet: Wallet
) -> None:
    """Become the wallet's single owner (DESIGN.md §10). On SQLite a second daemon
    refuses to start; on MySQL it answers `status` as a standby and takes over when
    the owner's database connection dies."""
    lock = repo.owner_lock(f"dashpay:{wallet.wallet_id}")
    daemon.owner_lock = lock
    if not await trio.to_thread.run_sync(lock.try_acquire, 0):
        if lock.exclusive_machine:
            raise DashpayError(
                CONFLICT,
                f"another dashpay daemon ({lock.holder()}) is already using "
                f"{daemon.config.database.display_url()}; stop it first",
            )
        await daemon.start_control(nursery)
        daemon.state = STANDBY
        sd_notify("STATUS=standby: another daemon owns this wallet")
        log.warning(
            "standby: another daemon owns wallet fingerprint=%s; waiting to take over",
            wallet.fingerprint,
        )
        while True:
            try:
                if await trio.to_thread.run_sync(lock.try_acquire, STANDBY_POLL_SECONDS):
                    break
            except Exception as exc:  # database unreachable: a standby just waits
                log.warning("standby cannot reach the database, retrying: %s", exc)
                await trio.sleep(STANDBY_POLL_SECONDS)
        log.warning("took over wallet fingerprint=%s", wallet.fingerprint)
        daemon.state = STARTING
    else:
        await daemon.start_control(nursery)
    if not lock.exclusive_machine:
        nursery.start_soon(watch_ownership, daemon, lock)


async def watch_ownership(daemon: Daemon, lock: Any) -> None:
    """The lock lives on a database connection. If that connection dies (database
    outage, network), try to take the lock back: if nobody else took it meanwhile
    we carry on; if a standby owns the wallet now, we stop. Recording stays safe in
    between: payments are upserts and decisions run under row locks."""
    while True:
        await trio.sleep(OWNERSHIP_CHECK_SECONDS)
        if await trio.to_thread.run_sync(lock.alive):
            daemon.ownership_lost_since = None
            continue
        if daemon.ownership_lost_since is None:
            daemon.ownership_lost_since = time.time()
            log.warning("wallet lock connection lost; taking the lock back")
        try:
            regained = await trio.to_thread.run_sync(lock.try_acquire, 0)
        except Exception as exc:  # the database is still unreachable: keep trying
            log.debug("wallet lock not regained yet: %s", exc)
            continue
        if regained:
            log.info("wallet lock regained")
            daemon.ownership_lost_since = None
            continue
        log.error("another daemon owns the wallet now; stopping (standby took over)")
        daemon.stop(exit_code=1)
        return
