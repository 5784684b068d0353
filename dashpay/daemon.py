"""`dashpay serve`: the bootstrap nursery and the long-lived tasks.

Bootstrap order (DESIGN.md §3): config and logging -> store + migrations -> HD counter
-> wallet key -> pending table + control server (status answers "starting" from here
on) -> Insight -> ready. Every task lives in one nursery tree owned by ``Daemon.run``;
SIGTERM/SIGINT cancel it, which closes the control socket and the store cleanly.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from dashpay import __version__
from dashpay.config import Config
from dashpay.control import methods
from dashpay.control.server import serve_control
from dashpay.errors import METHOD_NOT_FOUND, DashpayError, Unavailable
from dashpay.repository import open_repository
from dashpay.repository.base import PAID, PARTIAL, PENDING, Repository
from dashpay.services.receivers import ReceiverDefaults, ReceiverService
from dashpay.wallet import Wallet

log = logging.getLogger("dashpay.daemon")

Handler = Callable[[dict[str, Any]], Awaitable[Any]]

STARTING = "starting"
READY = "ready"
STOPPING = "stopping"


def sd_notify(message: str) -> bool:
    """Send a sd_notify(3) datagram when run by systemd with Type=notify."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
        return True
    except OSError as exc:
        log.warning("sd_notify failed socket=%s error=%s", os.environ.get("NOTIFY_SOCKET"), exc)
        return False


class Daemon:
    def __init__(self, config: Config, *, sandbox: Any | None = None) -> None:
        if config.wallet is None:
            raise DashpayError(
                "invalid_params",
                f"{config.path or 'config'}: [wallet] xpub is required to run the daemon",
            )
        self.config = config
        self.sandbox = sandbox  # dashpay.sandbox.runtime.SandboxRuntime when --sandbox
        self.state = STARTING
        self.started_at = time.time()
        self.repo: Repository | None = None
        self.wallet: Wallet | None = None
        self.receivers: ReceiverService | None = None
        self.pending_count = 0
        self.handlers: dict[str, Handler] = {methods.STATUS: self.status}
        self._cancel_scope: trio.CancelScope | None = None

    # -- control dispatch -------------------------------------------------------------
    async def handle(self, method: str, params: dict[str, Any]) -> Any:
        handler = self.handlers.get(method)
        if handler is None:
            if method.startswith("sandbox.") and self.sandbox is None:
                raise DashpayError(
                    METHOD_NOT_FOUND,
                    f"{method} exists only in sandbox mode (dashpay serve --sandbox)",
                )
            if method in methods.ALL:
                raise Unavailable(f"{method} is not available yet: the daemon is {self.state}")
            raise DashpayError(METHOD_NOT_FOUND, f"unknown method {method!r}")
        return await handler(params)

    async def status(self, params: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = {
            "version": __version__,
            "state": self.state,
            "ready": self.state == READY,
            "pid": os.getpid(),
            "uptime_seconds": round(time.time() - self.started_at, 3),
            "sandbox": self.sandbox is not None,
            "database": {
                "backend": self.config.database.backend,
                "url": self.config.database.display_url(),
            },
            "control_socket": str(self.config.control.socket),
        }
        if self.wallet is not None:
            result["wallet"] = {
                "fingerprint": self.wallet.fingerprint,
                "wallet_id": self.wallet.wallet_id,
                "network": self.wallet.network,
                "chain": self.wallet.chain,
            }
        if self.repo is not None and self.wallet is not None:
            repo, wallet = self.repo, self.wallet

            def counts() -> tuple[dict[str, int], int]:
                return (
                    repo.count_by_status(wallet.wallet_id),
                    repo.next_index(wallet.wallet_id, wallet.chain),
                )

            try:
                by_status, next_index = await trio.to_thread.run_sync(counts)
            except DashpayError as exc:
                result["database"]["error"] = exc.message
            else:
                result["receivers"] = by_status
                result["pending"] = sum(by_status.get(s, 0) for s in (PENDING, PARTIAL, PAID))
                result["wallet"]["next_index"] = next_index
        return result

    # -- lifecycle --------------------------------------------------------------------
    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        config = self.config
        log.info(
            "starting version=%s database=%s socket=%s sandbox=%s",
            __version__,
            config.database.display_url(),
            config.control.socket,
            self.sandbox is not None,
        )
        sd_notify("STATUS=opening database")
        repo = await trio.to_thread.run_sync(open_repository, config.database)
        self.repo = repo
        try:
            async with trio.open_nursery() as nursery:
                self._cancel_scope = nursery.cancel_scope
                nursery.start_soon(self._watch_signals, nursery.cancel_scope)
                await self._bootstrap(nursery, repo)
                task_status.started()
        finally:
            self.state = STOPPING
            sd_notify("STOPPING=1")
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(repo.close)
            log.info("stopped")

    async def _bootstrap(self, nursery: trio.Nursery, repo: Repository) -> None:
        config = self.config
        assert config.wallet is not None
        applied = await trio.to_thread.run_sync(repo.migrate)
        if applied:
            log.info("migrations applied versions=%s", ",".join(map(str, applied)))
        wallet = Wallet(config.wallet.xpub, config.wallet.network, config.wallet.chain)
        await trio.to_thread.run_sync(repo.ensure_counter, wallet.wallet_id, wallet.chain)
        self.wallet = wallet
        log.info(
            "wallet fingerprint=%s network=%s chain=%d",
            wallet.fingerprint,
            wallet.network,
            wallet.chain,
        )
        sd_notify("STATUS=loading pending receivers")
        now = time.time_ns() // 1_000_000
        pending = await trio.to_thread.run_sync(
            repo.load_pending,
            wallet.wallet_id,
            now,
            int(config.receivers.monitor_window * 1000),
        )
        self.pending_count = len(pending)
        self.receivers = ReceiverService(
            repo,
            wallet,
            ReceiverDefaults(
                expires_after=config.receivers.expires_after,
                callback_url=config.callbacks.default_url,
            ),
        )
        self.handlers.update(
            {
                methods.RECEIVER_CREATE: self.receivers.create,
                methods.RECEIVER_GET: self.receivers.get,
                methods.RECEIVER_LIST: self.receivers.list,
                methods.RECEIVER_CANCEL: self.receivers.cancel,
            }
        )
        if self.sandbox is not None:
            self.handlers.update(self.sandbox.handlers())
        await nursery.start(serve_control, Path(config.control.socket), self.handle)
        log.info("control socket listening path=%s", config.control.socket)
        self.state = READY
        sd_notify(f"READY=1\nSTATUS=ready, watching {len(pending)} receivers")
        log.info("ready pending=%d", len(pending))

    async def _watch_signals(self, scope: trio.CancelScope) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                log.info("signal received signal=%s; shutting down", signal.Signals(signum).name)
                self.state = STOPPING
                scope.cancel()
                return


def run_daemon(config: Config, *, sandbox: Any | None = None) -> int:
    """Run until SIGTERM/SIGINT; the process exit code."""
    from dashpay.control.server import ControlSocketInUse

    try:
        trio.run(Daemon(config, sandbox=sandbox).run)
    except ControlSocketInUse as exc:
        log.error("%s", exc)
        return 2
    except DashpayError as exc:
        log.error("cannot start: %s", exc.message)
        return 2 if exc.kind == "invalid_params" else 5
    except KeyboardInterrupt:
        return 130
    return 0
