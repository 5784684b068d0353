"""Wallet ownership: one daemon owns a wallet (DESIGN.md §10, docs/operations.md). A
second one on SQLite refuses to start; on MySQL/MariaDB (one server or a Galera
cluster) it waits as a standby and takes the wallet's lease over once the owner stopped
renewing it; an owner that finds its lease taken over (a paused or cut-off daemon
coming back) stops writing at once — every write transaction is fenced by the lease's
epoch — and exits with code 1 (under systemd's Restart= it comes back as a standby)."""

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


async def own_wallet(
    daemon: Daemon, nursery: trio.Nursery, repo: Repository, wallet: Wallet
) -> None:
    """Become the wallet's single owner. On SQLite a second daemon refuses to start;
    on MySQL it answers `status` as a standby and takes over when the owner's lease
    expires."""
    lock = repo.owner_lock(wallet.wallet_id, lease_seconds=daemon.config.database.lease)
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
            "standby: another daemon owns wallet fingerprint=%s (%s); waiting to take over",
            wallet.fingerprint,
            lock.holder(),
        )
        while True:
            await trio.sleep(lock.poll_interval)
            try:
                if await trio.to_thread.run_sync(lock.try_acquire, 0):
                    break
            except Exception as exc:  # database unreachable: a standby just waits
                log.warning("standby cannot reach the database, retrying: %s", exc)
        log.warning("took over wallet fingerprint=%s", wallet.fingerprint)
        daemon.state = STARTING
    else:
        await daemon.start_control(nursery)
    if not lock.exclusive_machine:
        nursery.start_soon(watch_ownership, daemon, lock)


async def watch_ownership(daemon: Daemon, lock: Any) -> None:
    """Renew the lease a third of it after it was last renewed: the owner's write
    transactions renew it (their fence), so a busy owner adds no transaction for it.
    When a renewal fails, try to take the lease back: if nobody else took it
    meanwhile (the database was unreachable) we carry on; if a standby owns the
    wallet now, we stop. Nothing a deposed owner writes lands in between: the fence
    fails its transactions."""
    while True:
        if daemon.ownership_lost_since is None:
            await trio.sleep(max(lock.renewal_due_in(), 0.0))
        else:  # renewing failed: try again an interval later, as before the failure
            await trio.sleep(lock.renew_interval)
        if await trio.to_thread.run_sync(lock.alive):
            daemon.ownership_lost_since = None
            continue
        if daemon.ownership_lost_since is None:
            daemon.ownership_lost_since = time.time()
            log.warning("wallet lease not renewed; taking it back")
        if not lock.lost:
            try:
                regained = await trio.to_thread.run_sync(lock.try_acquire, 0)
            except Exception as exc:  # the database is still unreachable: keep trying
                log.debug("wallet lease not regained yet: %s", exc)
                continue
            if regained:
                log.info("wallet lease regained")
                daemon.ownership_lost_since = None
                continue
        log.error(
            "another daemon owns the wallet now (%s); stopping (standby took over)",
            lock.holder(),
        )
        daemon.stop(exit_code=1)
        return
