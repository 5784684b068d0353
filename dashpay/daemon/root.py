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
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from dashpay import __version__
from dashpay.api.commands import Services
from dashpay.api.dispatch import Dispatcher
from dashpay.config.load import config_warnings
from dashpay.config.model import Config
from dashpay.daemon.checkout import public_url, recorded_by_both, with_checkout
from dashpay.daemon.malloc import trim_free_memory
from dashpay.daemon.openfiles import ensure_open_files
from dashpay.daemon.ownership import own_wallet
from dashpay.daemon.status import READY, STARTING, STOPPING, health, status_view
from dashpay.daemon.systemd import Watchdog, sd_notify
from dashpay.domain.accounting import Rules
from dashpay.domain.backoff import Backoff
from dashpay.domain.clock import now_ms
from dashpay.domain.errors import DashpayError
from dashpay.domain.observations import SourceError
from dashpay.domain.ratelimit import FailedAuthLimiter
from dashpay.domain.wallet import Wallet
from dashpay.engine.loop import PaymentEngine, ReceiverAdded, ReceiverChanged
from dashpay.net.chain import ChainSource, open_chain_source
from dashpay.net.control_server import serve_control
from dashpay.net.insight_rest import InsightRest
from dashpay.net.insight_socket import InsightSocket
from dashpay.net.outbound import Outbound
from dashpay.repository import open_repository
from dashpay.repository.base import Repository
from dashpay.services.apikeys import ApiKeyService
from dashpay.services.callbacks.secret import resolve_secret
from dashpay.services.callbacks.sender import CallbackSender
from dashpay.services.callbacks.service import CallbackService
from dashpay.services.checkout_hub import CheckoutHub
from dashpay.services.prices.service import PriceService
from dashpay.services.receivers import ReceiverDefaults, ReceiverService
from dashpay.services.rescan import Reconciler, recheck_interval
from dashpay.services.verify import Verifier

if TYPE_CHECKING:
    from dashpay.api.http.app import HttpApp

log = logging.getLogger("dashpay.daemon")

# A control request may run this long: a rescan of 100k receivers takes tens of seconds.
CONTROL_REQUEST_TIMEOUT = 600.0
# A failed rescan after (re)connecting is retried: Insight may be busy or rate-limiting.
RESCAN_RETRY_INITIAL = 2.0
RESCAN_RETRY_MAX = 120.0
# Longest a tip height read (for status only) may take.
TIP_READ_TIMEOUT = 10.0


# The group whose members may use the control socket: the one the systemd unit runs
# the daemon as (Group=dashpay), whoever started it.
SOCKET_GROUP_NAME = "dashpay"


def socket_group(name: str = SOCKET_GROUP_NAME) -> int | None:
    """The gid the control socket is given: group ``name`` when it exists and this
    process may give a file to it (root, or a member), so that the operators in that
    group reach a daemon someone ran by hand, the sandbox as root included. Else None:
    the file keeps the group it was created with (the process's primary group, or that
    of a set-group-ID directory, which an administrator chose on purpose)."""
    import grp

    try:
        gid = grp.getgrnam(name).gr_gid
    except KeyError:
        return None
    if os.geteuid() == 0 or gid == os.getegid() or gid in os.getgroups():
        return gid
    return None


class Daemon:
    async def status(self) -> dict[str, Any]:
        return await status_view(self)

    def health(self) -> tuple[str, list[str]]:
        return health(self)

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
        self.chain: ChainSource | None = None  # the [chain] backend
        self.insight: InsightSocket | None = None  # the chain's watcher, with Insight
        self.rest: InsightRest | None = None  # the chain's lookups, with Insight
        self.outbound: Outbound | None = None  # the proxies and trust store of every client
        self.reconciler: Reconciler | None = None
        self.apikeys: ApiKeyService | None = None  # the HTTP API authenticates with it
        self.verifier: Verifier | None = None
        self.last_rescan_error: str | None = None
        self.owner_lock: Any = None
        self.ownership_lost_since: float | None = None
        self.exit_code = 0
        self.http_urls: list[str] = []  # where the HTTP API listens ([http] listen)
        self.checkout_hub = CheckoutHub()  # the checkout page's live-event watchers
        self.watchdog = Watchdog()
        self._rescan_wanted, self._rescan_wanted_rx = trio.open_memory_channel[Any](1)
        self._block_seen, self._block_seen_rx = trio.open_memory_channel[Any](1)
        self._tip_wanted, self._tip_wanted_rx = trio.open_memory_channel[None](1)
        self.services = Services(status=self.status)
        self.handle = Dispatcher(
            self.services, sandbox=sandbox is not None, state=lambda: self.state
        )
        self._cancel_scope: trio.CancelScope | None = None

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
        ensure_open_files(config.http)
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
        self.apikeys = ApiKeyService(repo, sandbox=self.sandbox is not None)
        await nursery.start(self.apikeys.run)
        self.services.apikeys = self.apikeys
        wallet = Wallet(config.wallet.xpub, config.wallet.network, config.wallet.chain)
        await trio.to_thread.run_sync(repo.ensure_counter, wallet.wallet_id, wallet.chain)
        self.wallet = wallet
        log.info(
            "wallet fingerprint=%s network=%s chain=%d",
            wallet.fingerprint,
            wallet.network,
            wallet.chain,
        )
        for warning in config_warnings(config):
            log.warning("config warning: %s", warning)
        await own_wallet(self, nursery, repo, wallet)
        sd_notify("STATUS=loading pending receivers")
        monitor_window_ms = int(config.receivers.monitor_window * 1000)
        engine = PaymentEngine(
            repo,
            Rules(
                tolerance_percent=config.receivers.underpayment_tolerance,
                confirmations=config.receivers.confirmations,
                drop_after_ms=int(config.receivers.drop_after * 1000),
            ),
            monitor_window_ms=monitor_window_ms,
            on_block=self._on_block,
            on_connected=self._on_connected,
            on_tick=self.watchdog.tick,
        )
        # Streamed into the table chunk by chunk in one worker thread: a million
        # pending receivers never exist as a million full rows at once.
        now = now_ms()
        pending = await trio.to_thread.run_sync(
            engine.load, repo.iter_pending(wallet.wallet_id, now, monitor_window_ms)
        )
        self.engine = engine
        await nursery.start(engine.run)
        secret = await trio.to_thread.run_sync(resolve_secret, config.callbacks, repo)
        # Every outbound client: one trust store, one proxy decision ([network], [tls]).
        self.outbound = outbound = Outbound.from_config(config)
        sender = CallbackSender(
            repo, config.callbacks, wallet.wallet_id, secret, outbound=outbound,
            defer_outcomes=True,
        )
        engine.on_events = sender.offer
        engine.carry = sender.ride  # delivery outcomes ride in the payments' transactions
        await nursery.start(sender.run)
        self.callbacks = CallbackService(repo, sender, wallet.wallet_id)
        self.services.callbacks = self.callbacks
        self.prices = PriceService(
            repo,
            config.prices,
            providers=None if self.sandbox is None else self.sandbox.price_providers(config.prices),
            outbound=outbound,
        )
        await nursery.start(self.prices.refresh_loop)
        self.services.prices = self.prices
        self.receivers = ReceiverService(
            repo,
            wallet,
            ReceiverDefaults(
                expires_after=config.receivers.expires_after,
                callback_url=config.callbacks.default_url,
                gap_limit_warning=config.wallet.gap_limit_warning,
                gap_limit_max=config.wallet.gap_limit_max,
                public_url=public_url(self),
            ),
            prices=self.prices,
            callback_rules=config.callbacks,
            on_created=self._created,
            on_cancelled=self._cancelled,
        )
        engine.on_recorded = recorded_by_both(self.receivers.recorded, self.checkout_hub.recorded)
        await nursery.start(self.receivers.run)
        self.services.receivers = self.receivers
        self.services.sandbox = self.sandbox

        # The chain source: subscribe first, then rescan (the engine asks for a rescan
        # on every SocketConnected), so nothing paid between the two is missed.
        chain = open_chain_source(config, wallet.network, outbound)
        self.chain = chain
        if chain.backend == "insight":
            self.insight, self.rest = chain.watcher, chain.lookups  # type: ignore[assignment]
        self.reconciler = Reconciler(repo, chain, engine, wallet.wallet_id)
        self.services.reconciler = self.reconciler
        # Pushed events announce payments; the lookups confirm them before they count.
        self.verifier = Verifier(chain, engine)
        await nursery.start(self.verifier.run)
        engine.verify = self.verifier.claim
        chain.watcher.track(lambda: [address for _, address in engine.watched()])
        if self.insight is not None:  # events that pay nobody stop at the socket
            self.insight.watched = engine.watched_addresses()
            self.insight.unmatched = engine.unmatched
        nursery.start_soon(self._rescan_loop)
        nursery.start_soon(self._settlement_loop)
        nursery.start_soon(self._tip_loop)
        if chain.settle_poll is not None:
            nursery.start_soon(self._lock_poll_loop, chain.settle_poll)
        nursery.start_soon(
            self.reconciler.recheck_loop, recheck_interval(engine.rules.drop_after_ms)
        )
        nursery.start_soon(chain.watcher.run, engine.send_channel.clone())
        sd_notify(f"STATUS=connecting to {chain.name}, {pending} receivers to check")
        log.info(
            "bootstrap waiting for %s backend=%s pending=%d",
            chain.name.lower(),
            chain.backend,
            pending,
        )

    def stop(self, *, exit_code: int) -> None:
        """End ``run`` with this process exit code (from any task of the daemon)."""
        self.exit_code = exit_code
        if self._cancel_scope is not None:
            self._cancel_scope.cancel()

    async def start_control(self, nursery: trio.Nursery) -> None:
        path = Path(self.config.control.socket)
        await nursery.start(
            partial(serve_control, request_timeout=CONTROL_REQUEST_TIMEOUT, group=socket_group()),
            path,
            self.handle,
        )
        log.info("control socket listening path=%s", path)
        if self.config.http.listen:
            # The HTTP API's modules (hypercorn, the app) only when it is on (issue 19).
            from dashpay.net.http_server import serve_http

            app = with_checkout(self, self.http_app())
            self.http_urls = await nursery.start(serve_http, app, self.config.http)

    async def _created(self, receiver: Any) -> None:
        if self.chain is not None:
            self.chain.watcher.watch((receiver.address,))
        await self.engine.submit(ReceiverAdded(receiver))

    async def _cancelled(self, receiver: Any) -> None:
        self.checkout_hub.publish(receiver, None)
        await self.engine.submit(ReceiverChanged(receiver))

    def http_app(self) -> HttpApp:
        """The HTTP API over the same dispatcher as the control socket."""
        from dashpay.api.http.app import HttpApp
        from dashpay.api.http.mounts import metrics_endpoint, seed_endpoints

        return HttpApp(
            dispatch=self.handle,
            config=self.config.http,
            health=self.health,
            keys=self.apikeys,
            limiter=FailedAuthLimiter(),
            sandbox=self.sandbox is not None,
            extra=[*seed_endpoints(self.handle), metrics_endpoint(self.services)],
        )

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
        backoff = Backoff(RESCAN_RETRY_INITIAL, RESCAN_RETRY_MAX, jitter=False)
        async for _ in self._rescan_wanted_rx:
            while True:
                try:
                    summary = await self.reconciler.rescan_all_pending()
                except DashpayError as exc:
                    self.last_rescan_error = exc.message
                    delay = backoff.next_delay()
                    log.warning("rescan after connect failed; retrying in %.0fs: %s", delay, exc)
                    await trio.sleep(delay)
                    continue
                backoff.reset()
                self.last_rescan_error = None
                self._want_tip()
                if self.state == STARTING:
                    self.state = READY
                    sd_notify(f"READY=1\nSTATUS=ready, watching {len(self.engine.table)} receivers")
                    log.info(
                        "ready receivers=%d rescan_seconds=%.2f",
                        summary.receivers,
                        summary.duration_seconds,
                    )
                # The rescan's buffers (and at start the configuration, the migrations
                # and the pending table's load) are freed by now: hand their pages back.
                trim_free_memory()
                break

    async def _settlement_loop(self) -> None:
        async for block in self._block_seen_rx:
            try:
                await self.reconciler.refresh_confirmations(block)
            except Exception:
                log.exception("confirmation refresh failed block=%s", block.block_hash)
            self._want_tip()

    def _want_tip(self) -> None:
        # When a read is already queued, it covers this one too.
        with contextlib.suppress(trio.WouldBlock):
            self._tip_wanted.send_nowait(None)

    async def _tip_loop(self) -> None:
        """The source's tip height for status, read after each rescan and block when its
        watcher does not carry one (Insight's block event has no height). Its own task:
        a slow source never delays readiness or the settlement of payments."""
        async for _ in self._tip_wanted_rx:
            chain = self.chain
            if chain is None or getattr(chain.watcher, "tip_height", None) is not None:
                continue
            with trio.move_on_after(TIP_READ_TIMEOUT):
                try:
                    chain.tip_height = await chain.lookups.best_height()
                except (SourceError, ValueError) as exc:
                    log.debug("tip height not read: %s", exc)

    async def _lock_poll_loop(self, interval: float) -> None:
        """For a source that pushes no locks (Blockbook): every ``interval`` seconds,
        look up the unsettled payments, so an InstantSend lock or ChainLock settles its
        receiver within a poll. Never returns unless cancelled."""
        while True:
            await trio.sleep(interval)
            if self.state == STARTING:
                continue  # the first rescan reads every payment anyway
            try:
                await self.reconciler.refresh_confirmations()
            except Exception:
                log.exception("lock poll failed")

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
    from dashpay.daemon.malloc import one_arena
    from dashpay.net.control_server import ControlSocketInUse

    one_arena()  # before any thread of trio's starts
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


def serve(config: Config, *, socket: str | None = None, log_level: str | None = None) -> int:
    """`dashpay serve` on a loaded config (the CLI app and its fast path both end here):
    ``socket`` (--socket) over ``[control] socket``, ``log_level`` (--log-level) over
    ``[logging] level``, then the daemon; the process exit code."""
    import dataclasses

    from dashpay.daemon.logs import setup_logging

    if socket:
        control = dataclasses.replace(config.control, socket=Path(socket))
        config = dataclasses.replace(config, control=control)
    setup_logging(log_level or config.logging.level)
    return run_daemon(config)


def run_daemon(config: Config) -> int:
    """Run until SIGTERM/SIGINT; the process exit code."""
    daemon = Daemon(config)

    async def main() -> int:
        await daemon.run()
        return daemon.exit_code

    return run_main(main)
