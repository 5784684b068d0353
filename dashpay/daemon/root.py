"""`dashpay serve`: the bootstrap nursery and the long-lived tasks.

Bootstrap order (DESIGN.md §3): config and logging -> store + migrations -> HD counter
-> wallet key -> pending table + control server (status answers "starting" from here
on) -> Insight -> ready. Every task lives in one nursery tree owned by ``Daemon.run``;
SIGTERM/SIGINT cancel it, which closes the control socket and the store cleanly.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import trio

from dashpay import __version__
from dashpay.api import methods
from dashpay.config.model import Config
from dashpay.domain.accounting import Rules
from dashpay.domain.errors import CONFLICT, METHOD_NOT_FOUND, DashpayError, Unavailable
from dashpay.domain.status import PAID, PARTIAL, PENDING
from dashpay.domain.views import iso_time
from dashpay.domain.wallet import Wallet
from dashpay.engine.loop import PaymentEngine, ReceiverAdded, ReceiverChanged
from dashpay.net.control_server import serve_control
from dashpay.net.insight_rest import InsightRest
from dashpay.net.insight_socket import InsightSocket
from dashpay.repository import open_repository
from dashpay.repository.base import Repository
from dashpay.services.callbacks.sender import CallbackSender, CallbackService, resolve_secret
from dashpay.services.prices.service import PriceService
from dashpay.services.receivers import ReceiverDefaults, ReceiverService
from dashpay.services.rescan import Reconciler

log = logging.getLogger("dashpay.daemon")

Handler = Callable[[dict[str, Any]], Awaitable[Any]]

STARTING = "starting"
READY = "ready"
STOPPING = "stopping"
DEGRADED = "degraded"
STANDBY = "standby"
# A callback still undelivered after this long means the merchant's endpoint is down
# or refusing: worth a warning in `status` (retries go on for [callbacks] give_up_after).
CALLBACK_BACKLOG_WARNING_SECONDS = 600
# How long one GET_LOCK wait of a standby lasts, and how often the owner checks that
# its lock connection is alive (a takeover happens within about these times).
STANDBY_POLL_SECONDS = 1
OWNERSHIP_CHECK_SECONDS = 2.0
# A control request may run this long: a rescan of 100k receivers takes tens of seconds.
CONTROL_REQUEST_TIMEOUT = 600.0
# A failed rescan after (re)connecting is retried: Insight may be busy or rate-limiting.
RESCAN_RETRY_INITIAL = 2.0
RESCAN_RETRY_MAX = 120.0


def _iso(ts: float | None) -> str | None:
    return None if ts is None else iso_time(int(ts * 1000))


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
        self.engine: PaymentEngine | None = None
        self.callbacks: CallbackService | None = None
        self.prices: PriceService | None = None
        self.insight: InsightSocket | None = None
        self.rest: InsightRest | None = None
        self.reconciler: Reconciler | None = None
        self.last_rescan_error: str | None = None
        self.owner_lock: Any = None
        self.ownership_lost_since: float | None = None
        self.exit_code = 0
        usec = os.environ.get("WATCHDOG_USEC", "")
        # Ping at half the watchdog period, as sd_watchdog_enabled(3) recommends.
        self._watchdog_interval = int(usec) / 2e6 if usec.isdigit() and int(usec) > 0 else None
        self._watchdog_last = 0.0
        self._rescan_wanted, self._rescan_wanted_rx = trio.open_memory_channel[Any](1)
        self._block_seen, self._block_seen_rx = trio.open_memory_channel[Any](1)
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
        state, reasons = self.health()
        result: dict[str, Any] = {
            "version": __version__,
            "state": state,
            "ready": state == READY,
            "reasons": reasons,
            "warnings": [],
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

            def counts() -> tuple[dict[str, int], int, int]:
                return (
                    repo.count_by_status(wallet.wallet_id),
                    repo.next_index(wallet.wallet_id, wallet.chain),
                    repo.unpaid_gap(wallet.wallet_id, wallet.chain),
                )

            try:
                by_status, next_index, gap = await trio.to_thread.run_sync(counts)
            except DashpayError as exc:
                result["database"]["error"] = exc.message
                result["reasons"].append(f"database error: {exc.message}")
                if result["state"] == READY:
                    result["state"], result["ready"] = DEGRADED, False
            else:
                result["receivers"] = by_status
                result["pending"] = sum(by_status.get(s, 0) for s in (PENDING, PARTIAL, PAID))
                result["wallet"]["next_index"] = next_index
                result["wallet"]["unpaid_in_a_row"] = gap
                assert self.config.wallet is not None
                if gap > self.config.wallet.gap_limit_warning:
                    result["warnings"].append(
                        f"{gap} receivers in a row are unpaid (gap_limit_warning "
                        f"{self.config.wallet.gap_limit_warning}): your wallet may not show "
                        "payments past its gap limit; see README 'Gap limit'"
                    )
        if self.insight is not None:
            sock = self.insight
            result["insight"] = {
                "url": self.config.insight.url,
                "socket_url": sock.endpoint.display,
                "state": sock.state,
                "connected_since": _iso(sock.connected_since),
                "disconnected_since": _iso(sock.disconnected_since),
                "last_event_at": _iso(sock.last_event_at),
                "events_received": sock.events_received,
                "events_rejected": sock.events_rejected,
                "reconnects": sock.reconnects,
            }
        if self.engine is not None:
            stats = self.engine.stats
            result["engine"] = {
                "watched": len(self.engine.table),
                "events": stats.events,
                "matched": stats.matched,
                "payments_recorded": stats.payments_recorded,
                "outbox_events": stats.outbox_events,
                "db_errors": stats.db_errors,
            }
        if self.callbacks is not None:
            try:
                result["callbacks"] = view = await self.callbacks.status_view()
            except DashpayError as exc:
                result["callbacks"] = view = {"error": exc.message}
            age = view.get("oldest_pending_age_seconds")
            if age is not None and age > CALLBACK_BACKLOG_WARNING_SECONDS:
                result["warnings"].append(
                    f"{view.get('pending')} callback(s) pending, the oldest for {age:.0f}s: "
                    "check the merchant endpoint (dashpay callbacks list --status pending)"
                )
        if self.reconciler is not None and self.reconciler.last_full is not None:
            result["last_rescan"] = {
                "at": _iso(self.reconciler.last_full_at),
                **self.reconciler.last_full.as_dict(),
            }
        return result

    def health(self) -> tuple[str, list[str]]:
        """The state `status` reports and why it is not simply "ready"."""
        reasons: list[str] = []
        sock = self.insight
        if sock is not None and sock.state != "connected":
            since = sock.disconnected_since
            reasons.append(
                f"insight socket {sock.state}"
                + (f" since {_iso(since)}" if since else "")
                + f" ({sock.endpoint.display})"
            )
        if self.ownership_lost_since is not None:
            reasons.append(f"wallet lock lost since {_iso(self.ownership_lost_since)}")
        if self.last_rescan_error:
            reasons.append(f"last rescan failed: {self.last_rescan_error}")
        engine = self.engine
        if engine is not None and engine.stats.last_db_error_at is not None:
            if time.time() - engine.stats.last_db_error_at < 60:
                reasons.append(f"database error: {engine.stats.last_db_error}")
        if self.state == STARTING and sock is not None and sock.state == "connected":
            reasons.append("rescanning pending receivers")
        if self.state == READY and reasons:
            return DEGRADED, reasons
        return self.state, reasons

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
                if self.owner_lock is not None:
                    await trio.to_thread.run_sync(self.owner_lock.release)
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
        await self._own_wallet(nursery, repo, wallet)
        sd_notify("STATUS=loading pending receivers")
        monitor_window_ms = int(config.receivers.monitor_window * 1000)
        engine = PaymentEngine(
            repo,
            Rules(
                tolerance_percent=config.receivers.underpayment_tolerance,
                confirmations=config.receivers.confirmations,
            ),
            monitor_window_ms=monitor_window_ms,
            on_block=self._on_block,
            on_connected=self._on_connected,
            on_tick=self._on_tick,
        )
        # Streamed into the table chunk by chunk in one worker thread: a million
        # pending receivers never exist as a million full rows at once.
        now = time.time_ns() // 1_000_000
        pending = await trio.to_thread.run_sync(
            engine.load, repo.iter_pending(wallet.wallet_id, now, monitor_window_ms)
        )
        self.engine = engine
        await nursery.start(engine.run)
        secret = await trio.to_thread.run_sync(resolve_secret, config.callbacks, repo)
        sender = CallbackSender(repo, config.callbacks, wallet.wallet_id, secret)
        engine.on_events = sender.offer
        await nursery.start(sender.run)
        self.callbacks = CallbackService(repo, sender, wallet.wallet_id)
        self.handlers.update(self.callbacks.handlers())
        self.prices = PriceService(repo, config.prices)
        await nursery.start(self.prices.refresh_loop)
        self.handlers[methods.PRICE_GET] = self.prices.price_get
        self.receivers = ReceiverService(
            repo,
            wallet,
            ReceiverDefaults(
                expires_after=config.receivers.expires_after,
                callback_url=config.callbacks.default_url,
                gap_limit_warning=config.wallet.gap_limit_warning,
                gap_limit_max=config.wallet.gap_limit_max,
            ),
            prices=self.prices,
            on_created=lambda r: engine.submit(ReceiverAdded(r)),
            on_cancelled=lambda r: engine.submit(ReceiverChanged(r)),
        )
        engine.on_recorded = self.receivers.recorded
        await nursery.start(self.receivers.run)
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

        # Insight: subscribe first, then rescan (the engine asks for a rescan on every
        # SocketConnected), so nothing paid between the two is missed.
        self.rest = InsightRest(config.insight.url, timeout=config.insight.timeout)
        self.reconciler = Reconciler(repo, self.rest, engine, wallet.wallet_id)
        self.handlers[methods.RESCAN] = self.reconciler.rescan_method
        self.insight = InsightSocket(
            config.insight.effective_socket_url,
            reconnect_initial=config.insight.reconnect_initial,
            reconnect_max=config.insight.reconnect_max,
        )
        nursery.start_soon(self._rescan_loop)
        nursery.start_soon(self._settlement_loop)
        nursery.start_soon(self.insight.run, engine.send_channel.clone())
        sd_notify(f"STATUS=connecting to Insight, {pending} receivers to check")
        log.info("bootstrap waiting for insight pending=%d", pending)

    async def _own_wallet(self, nursery: trio.Nursery, repo: Repository, wallet: Wallet) -> None:
        """Become the wallet's single owner (DESIGN.md §10). On SQLite a second daemon
        refuses to start; on MySQL it answers `status` as a standby and takes over when
        the owner's database connection dies."""
        lock = repo.owner_lock(f"dashpay:{wallet.wallet_id}")
        self.owner_lock = lock
        if not await trio.to_thread.run_sync(lock.try_acquire, 0):
            if lock.exclusive_machine:
                raise DashpayError(
                    CONFLICT,
                    f"another dashpay daemon ({lock.holder()}) is already using "
                    f"{self.config.database.display_url()}; stop it first",
                )
            await self._start_control(nursery)
            self.state = STANDBY
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
            self.state = STARTING
        else:
            await self._start_control(nursery)
        if not lock.exclusive_machine:
            nursery.start_soon(self._watch_ownership, lock)

    async def _start_control(self, nursery: trio.Nursery) -> None:
        path = Path(self.config.control.socket)
        await nursery.start(
            partial(serve_control, request_timeout=CONTROL_REQUEST_TIMEOUT), path, self.handle
        )
        log.info("control socket listening path=%s", path)

    async def _watch_ownership(self, lock: Any) -> None:
        """The lock lives on a database connection. If that connection dies (database
        outage, network), try to take the lock back: if nobody else took it meanwhile
        we carry on; if a standby owns the wallet now, we stop. Recording stays safe in
        between: payments are upserts and decisions run under row locks."""
        while True:
            await trio.sleep(OWNERSHIP_CHECK_SECONDS)
            if await trio.to_thread.run_sync(lock.alive):
                self.ownership_lost_since = None
                continue
            if self.ownership_lost_since is None:
                self.ownership_lost_since = time.time()
                log.warning("wallet lock connection lost; taking the lock back")
            try:
                regained = await trio.to_thread.run_sync(lock.try_acquire, 0)
            except Exception as exc:  # the database is still unreachable: keep trying
                log.debug("wallet lock not regained yet: %s", exc)
                continue
            if regained:
                log.info("wallet lock regained")
                self.ownership_lost_since = None
                continue
            log.error("another daemon owns the wallet now; stopping (standby took over)")
            self.exit_code = 1
            if self._cancel_scope is not None:
                self._cancel_scope.cancel()
            return

    def _on_tick(self) -> None:
        """Called by the engine loop once a second: proof of life for systemd."""
        if self._watchdog_interval is None:
            return
        now = time.monotonic()
        if now - self._watchdog_last >= self._watchdog_interval:
            self._watchdog_last = now
            sd_notify("WATCHDOG=1")

    # -- Insight follow-up tasks --------------------------------------------------------
    def _on_connected(self, message: Any) -> None:
        # When a rescan is already queued, it covers this reconnect too.
        with contextlib.suppress(trio.WouldBlock):
            self._rescan_wanted.send_nowait(message)

    def _on_block(self, message: Any) -> None:
        # When a confirmation refresh is already queued, it covers this block too.
        with contextlib.suppress(trio.WouldBlock):
            self._block_seen.send_nowait(message)

    async def _rescan_loop(self) -> None:
        delay = RESCAN_RETRY_INITIAL
        async for _ in self._rescan_wanted_rx:
            while True:
                try:
                    summary = await self.reconciler.rescan_all_pending()
                except DashpayError as exc:
                    self.last_rescan_error = exc.message
                    log.warning("rescan after connect failed; retrying in %.0fs: %s", delay, exc)
                    await trio.sleep(delay)
                    delay = min(delay * 2, RESCAN_RETRY_MAX)
                    continue
                delay = RESCAN_RETRY_INITIAL
                self.last_rescan_error = None
                if self.state == STARTING:
                    self.state = READY
                    sd_notify(f"READY=1\nSTATUS=ready, watching {len(self.engine.table)} receivers")
                    log.info(
                        "ready receivers=%d rescan_seconds=%.2f",
                        summary.receivers,
                        summary.duration_seconds,
                    )
                break

    async def _settlement_loop(self) -> None:
        async for block in self._block_seen_rx:
            try:
                await self.reconciler.refresh_confirmations(block)
            except Exception:
                log.exception("confirmation refresh failed block=%s", block.block_hash)

    async def _watch_signals(self, scope: trio.CancelScope) -> None:
        signals_wanted = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        with trio.open_signal_receiver(*signals_wanted) as signals:
            async for signum in signals:
                if signum == signal.SIGHUP:
                    self._reload()
                    continue
                log.info("signal received signal=%s; shutting down", signal.Signals(signum).name)
                self.state = STOPPING
                sd_notify("STOPPING=1")
                scope.cancel()
                return

    def _reload(self) -> None:
        """SIGHUP: re-read the config file and apply what can change live (the log
        level); everything else needs a restart, and a broken file changes nothing."""
        from dashpay.config.errors import ConfigError
        from dashpay.config.load import load_config
        from dashpay.daemon.logs import setup_logging

        if self.config.path is None:
            log.info("SIGHUP: no config file to reload")
            return
        try:
            fresh = load_config(self.config.path)
        except ConfigError as exc:
            log.error("SIGHUP: config not reloaded, it has an error: %s", exc)
            return
        setup_logging(fresh.logging.level)
        log.info("SIGHUP: reloaded %s log_level=%s", self.config.path, fresh.logging.level)


def _leaf(exc: BaseException) -> BaseException:
    """The one exception inside (nested) exception groups of a single member: trio's
    nurseries wrap a start-up refusal raised inside them."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def run_main(main: Callable[[], Awaitable[int]]) -> int:
    """Run a daemon's trio main; turn start-up refusals into an exit code and a log line."""
    from dashpay.net.control_server import ControlSocketInUse

    try:
        return trio.run(main)
    except BaseException as exc:  # noqa: BLE001 - re-raised unless it is a known refusal
        leaf = _leaf(exc)
        if isinstance(leaf, ControlSocketInUse):
            log.error("%s", leaf)
            return 2
        if isinstance(leaf, DashpayError):
            log.error("cannot start: %s", leaf.message)
            return 5 if leaf.kind == "unavailable" else 2
        if isinstance(leaf, KeyboardInterrupt):
            return 130
        raise


def run_daemon(config: Config) -> int:
    """Run until SIGTERM/SIGINT; the process exit code."""
    daemon = Daemon(config)

    async def main() -> int:
        await daemon.run()
        return daemon.exit_code

    return run_main(main)
