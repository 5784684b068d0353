"""What `dashpay status` reports: the daemon's state, the reasons it is not simply
ready, and the figures of each component."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

import trio

from dashpay import __version__
from dashpay.daemon.checkout import checkout_enabled, public_url
from dashpay.domain.errors import DashpayError
from dashpay.domain.status import (
    DAEMON_DEGRADED,
    DAEMON_READY,
    DAEMON_STANDBY,
    DAEMON_STARTING,
    DAEMON_STOPPING,
    PAID,
    PARTIAL,
    PENDING,
)
from dashpay.domain.views import iso_time

if TYPE_CHECKING:
    from dashpay.config.model import Config
    from dashpay.daemon.root import Daemon

STARTING = DAEMON_STARTING
READY = DAEMON_READY
STOPPING = DAEMON_STOPPING
DEGRADED = DAEMON_DEGRADED
STANDBY = DAEMON_STANDBY
# A callback still undelivered after this long means the merchant's endpoint is down
# or refusing: worth a warning in `status` (retries go on for [callbacks] give_up_after).
CALLBACK_BACKLOG_WARNING_SECONDS = 600
# A held rescan (too much missing from Insight at once) is warned about for this long.
RESCAN_HOLD_WARNING_SECONDS = 3600


def _iso(ts: float | None) -> str | None:
    return None if ts is None else iso_time(int(ts * 1000))


async def status_view(daemon: Daemon) -> dict[str, Any]:
    """The `status` command's answer: state, why, and every component's figures."""
    state, reasons = health(daemon)
    result: dict[str, Any] = {
        "version": __version__,
        "state": state,
        "ready": state == READY,
        "reasons": reasons,
        "warnings": [],
        "pid": os.getpid(),
        "uptime_seconds": round(time.time() - daemon.started_at, 3),
        "sandbox": daemon.sandbox is not None,
        "database": {
            "backend": daemon.config.database.backend,
            "url": daemon.config.database.display_url(),
        },
        "control_socket": str(daemon.config.control.socket),
        "http": {"urls": list(daemon.http_urls)},
        "outbound": outbound_view(daemon.config),
    }
    if checkout_enabled(daemon):
        result["checkout"] = {"public_url": public_url(daemon), **daemon.checkout_hub.status_view()}
    if daemon.wallet is not None:
        result["wallet"] = {
            "fingerprint": daemon.wallet.fingerprint,
            "wallet_id": daemon.wallet.wallet_id,
            "network": daemon.wallet.network,
            "chain": daemon.wallet.chain,
        }
    if daemon.repo is not None and daemon.wallet is not None:
        repo, wallet = daemon.repo, daemon.wallet

        def counts() -> tuple[dict[str, int], int, int]:
            return (
                repo.count_by_status(wallet.wallet_id),
                repo.next_index(wallet.wallet_id, wallet.chain),
                repo.unpaid_gap(wallet.wallet_id, wallet.chain),
            )

        try:
            if daemon.receivers is not None:  # the gap kept in memory by the creates
                next_index, gap = await daemon.receivers.unpaid_gap()
                by_status = await trio.to_thread.run_sync(repo.count_by_status, wallet.wallet_id)
            else:
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
            assert daemon.config.wallet is not None
            if gap > daemon.config.wallet.gap_limit_warning:
                result["warnings"].append(
                    f"{gap} receivers in a row are unpaid (gap_limit_warning "
                    f"{daemon.config.wallet.gap_limit_warning}): your wallet may not show "
                    "payments past its gap limit; see README 'Gap limit'"
                )
    if daemon.chain is not None:
        result["chain"] = chain_view(daemon)
        if result["chain"].get("address_index") is False:
            result["warnings"].append(
                "dashd has no address index: rescans use scantxoutset, which sees only "
                "unspent outputs and no mempool payments (set addressindex=1 in dash.conf "
                "and reindex; see README 'Running against your own dashd')"
            )
    if daemon.insight is not None:
        sock = daemon.insight
        result["insight"] = {
            "url": daemon.config.insight.url,
            "socket_url": sock.endpoint.display,
            "state": sock.state,
            "connected_since": _iso(sock.connected_since),
            "disconnected_since": _iso(sock.disconnected_since),
            "last_event_at": _iso(sock.last_event_at),
            "events_received": sock.events_received,
            "events_rejected": sock.events_rejected,
            "reconnects": sock.reconnects,
        }
    if daemon.engine is not None:
        stats = daemon.engine.stats
        result["engine"] = {
            "watched": len(daemon.engine.table),
            "events": stats.events,
            "matched": stats.matched,
            "payments_recorded": stats.payments_recorded,
            "outbox_events": stats.outbox_events,
            "db_errors": stats.db_errors,
            "last_db_error_at": _iso(stats.last_db_error_at),
            "last_db_ok_at": _iso(stats.last_db_ok_at),
        }
    if daemon.callbacks is not None:
        try:
            result["callbacks"] = view = await daemon.callbacks.status_view()
        except DashpayError as exc:
            result["callbacks"] = view = {"error": exc.message}
        age = view.get("oldest_pending_age_seconds")
        if age is not None and age > CALLBACK_BACKLOG_WARNING_SECONDS:
            result["warnings"].append(
                f"{view.get('pending')} callback(s) pending, the oldest for {age:.0f}s: "
                "check the merchant endpoint (dashpay callbacks list --status pending)"
            )
        if view.get("failed_total"):
            result["warnings"].append(
                f"{view['failed_total']} callback(s) failed for good (retries gave up): see "
                "dashpay callbacks list --status failed; send them again with dashpay "
                "callbacks retry --all-failed"
            )
    if daemon.reconciler is not None and daemon.reconciler.last_full is not None:
        result["last_rescan"] = {
            "at": _iso(daemon.reconciler.last_full_at),
            **daemon.reconciler.last_full.as_dict(),
        }
    _missing_view(daemon, result)
    if daemon.verifier is not None:
        result["verify"] = verify = daemon.verifier.stats.as_dict()
        refused = verify["last_refused"]
        if refused is not None:
            refused["at"] = _iso(refused["at"])
            if verify["refused"]:
                result["warnings"].append(
                    f"{verify['refused']} tx event(s) refused: {daemon.chain.lookup_name} did not "
                    "confirm "
                    f"what the socket claimed (last: tx {refused['txid']} for receiver "
                    f"{refused['receiver_id']})"
                )
    return result


def outbound_view(config: Config) -> dict[str, Any]:
    """How the daemon's clients (chain source, prices, callbacks) go out: the proxies
    and where each setting came from (never their credentials), and the extra CAs."""
    proxies = config.network.proxies
    return {
        "https_proxy": None if proxies.https is None else proxies.https.display,
        "http_proxy": None if proxies.http is None else proxies.http.display,
        "no_proxy_rules": len(proxies.bypass),
        "sources": list(proxies.sources),
        "ca_file": None if config.tls.ca_file is None else str(config.tls.ca_file),
        "ca_certificates": config.tls.ca_certificates,
    }


def chain_view(daemon: Daemon) -> dict[str, Any]:
    """The chain source, whichever backend: where, its link, tip and last event."""
    chain = daemon.chain
    assert chain is not None
    watcher = chain.watcher
    last = watcher.last_event_at
    view: dict[str, Any] = {
        "backend": chain.backend,
        "url": chain.url,
        "endpoint": watcher.display,
        "state": watcher.state,
        "connected_since": _iso(watcher.connected_since),
        "disconnected_since": _iso(watcher.disconnected_since),
        "tip_height": chain.known_tip(),
        "last_event_at": _iso(last),
        "last_event_age_seconds": None if last is None else round(time.time() - last, 3),
        "events_received": watcher.events_received,
        "events_rejected": watcher.events_rejected,
        "reconnects": watcher.reconnects,
    }
    # dashd: whether its address index answers (None until a rescan asked).
    if hasattr(chain.lookups, "address_index"):
        view["address_index"] = chain.lookups.address_index
    return view


def _source_name(daemon: Daemon) -> str:
    return daemon.chain.name if daemon.chain is not None else "Insight"


def _missing_view(daemon: Daemon, result: dict[str, Any]) -> None:
    """Payments Insight stopped showing (still counted) and the last held rescan."""
    if daemon.engine is not None:
        missing = daemon.engine.table.missing_payments()
        result["engine"]["payments_missing_from_source"] = missing
        if missing:
            result["warnings"].append(
                f"{missing} payment(s) are missing from {_source_name(daemon)} but still "
                "counted (see README 'When a payment goes missing'; payments with "
                "missing_from_source in dashpay receiver show --json)"
            )
    hold = daemon.reconciler.last_hold if daemon.reconciler is not None else None
    if hold is not None:
        result["last_rescan_hold"] = {**hold, "at": _iso(hold["at"])}
        if time.time() - hold["at"] < RESCAN_HOLD_WARNING_SECONDS:
            result["warnings"].append(
                f"a rescan at {_iso(hold['at'])} found {hold['missing']} of "
                f"{hold['checked']} payments missing from {_source_name(daemon)} at once and "
                f"held (no payment flagged or dropped): check that {_source_name(daemon)} is "
                "synced"
            )


def health(daemon: Daemon) -> tuple[str, list[str]]:
    """The state `status` reports and why it is not simply "ready"."""
    reasons: list[str] = []
    sock = daemon.chain.watcher if daemon.chain is not None else None
    if sock is not None and sock.state != "connected":
        since = sock.disconnected_since
        what = "insight socket" if daemon.chain.backend == "insight" else daemon.chain.backend
        refusal = getattr(sock, "refusal", None)  # why the source is not used (dashd)
        reasons.append(
            f"{what} {sock.state}"
            + (f" since {_iso(since)}" if since else "")
            + f" ({sock.display})"
            + (f": {refusal}" if refusal else "")
        )
    if daemon.ownership_lost_since is not None:
        reasons.append(f"wallet lease not renewed since {_iso(daemon.ownership_lost_since)}")
    if daemon.last_rescan_error:
        reasons.append(f"last rescan failed: {daemon.last_rescan_error}")
    engine = daemon.engine
    # Degraded from a failed database operation until one succeeds after it.
    if engine is not None and engine.stats.db_failing:
        reasons.append(f"database error: {engine.stats.last_db_error}")
    if daemon.state == STARTING and sock is not None and sock.state == "connected":
        reasons.append("rescanning pending receivers")
    if daemon.state == READY and reasons:
        return DEGRADED, reasons
    return daemon.state, reasons
