"""What ``GET /metrics`` answers: the daemon's figures in the Prometheus text format.

``render_metrics(services)`` is the whole route: it takes the ``status`` command's
answer (the same figures ``dashpay status --json`` prints, so the two cannot disagree)
plus what only the services hold (the cached price quotes, the rescan durations) and
writes them with ``wire/prometheus.py``. A scrape never waits on the network: prices
come from the in-memory cache, never from a provider.

Counters (``..._total``) count since the daemon started, as Prometheus expects (its
``rate()`` handles the restart). A figure the daemon does not know right now (no
database answer, Insight never connected) leaves its family without samples instead of
reporting a made-up value. The metric names and their meaning are listed in
docs/metrics.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from dashpay import __version__
from dashpay.api.commands import Services
from dashpay.domain.clock import now_ms
from dashpay.domain.status import OUTBOX_FAILED, OUTBOX_PENDING, STATUSES
from dashpay.net.insight_socket import STATE_CONNECTED, STATE_CONNECTING, STATE_DISCONNECTED
from dashpay.services.prices.convert import Quote
from dashpay.wire.prometheus import COUNTER, GAUGE, HISTOGRAM, Family, Histogram, render

INSIGHT_STATES = (STATE_CONNECTING, STATE_CONNECTED, STATE_DISCONNECTED)
# The sender's outcome counters in `status` (callbacks section), by the label they get.
CALLBACK_OUTCOMES = ("delivered", "retried", "failed")


async def render_metrics(services: Services) -> bytes:
    """The body of ``GET /metrics`` (send it as ``wire.prometheus.CONTENT_TYPE``).
    Raises only what the ``status`` command raises."""
    status = await services.status()
    prices = services.prices
    reconciler = services.reconciler
    families = metric_families(
        status,
        quotes=[] if prices is None else prices.cached_quotes(),
        price_max_age=None if prices is None else prices.config.max_age,
        rescan_durations=None if reconciler is None else reconciler.durations,
        now=now_ms(),
    )
    return render(families)


def metric_families(
    status: Mapping[str, Any],
    *,
    quotes: Iterable[Quote] = (),
    price_max_age: float | None = None,
    rescan_durations: Mapping[str, Histogram] | None = None,
    now: int,
) -> list[Family]:
    """Every family, from a ``status`` answer and the services' figures; ``now`` in
    unix milliseconds (ages are measured against it)."""
    return [
        *_daemon(status),
        *_receivers(status),
        *_engine(status),
        *_insight(status, now),
        *_chain(status, now),
        *_callbacks(status),
        *_rescans(status, rescan_durations),
        *_prices(quotes, price_max_age, now),
    ]


def _one(family: Family, value: Any, **labels: str) -> Family:
    """``family`` with one sample, or none when ``value`` is unknown (None)."""
    if value is not None:
        family.add(value, **labels)
    return family


def _flag(value: Any) -> int | None:
    return None if value is None else int(bool(value))


def _epoch_ms(iso: str | None) -> int | None:
    """A time as ``status`` prints it (ISO 8601 UTC, e.g. 2026-11-26T07:14:11.123Z)."""
    if not iso:
        return None
    return int(datetime.fromisoformat(iso).timestamp() * 1000)


def _age(iso: str | None, now: int) -> float | None:
    at = _epoch_ms(iso)
    return None if at is None else max(0, now - at) / 1000


def _daemon(status: Mapping[str, Any]) -> list[Family]:
    database = status.get("database") or {}
    info = Family("dashpay_info", "The running dashpay: its version and database backend.", GAUGE)
    info.add(
        1,
        version=str(status.get("version", __version__)),
        backend=str(database.get("backend", "")),
        sandbox=str(bool(status.get("sandbox"))).lower(),
    )
    state = Family(
        "dashpay_state",
        "1 for the state the daemon is in (starting, ready, degraded, standby, stopping).",
        GAUGE,
    )
    if status.get("state"):
        state.add(1, state=str(status["state"]))
    wallet = status.get("wallet") or {}
    return [
        info,
        _one(
            Family("dashpay_ready", "1 when the daemon is ready, else 0.", GAUGE),
            _flag(status.get("ready")),
        ),
        state,
        _one(
            Family("dashpay_uptime_seconds", "Seconds since the daemon started.", GAUGE),
            status.get("uptime_seconds"),
        ),
        Family(
            "dashpay_database_up",
            "1 when the database answered this scrape's queries, else 0.",
            GAUGE,
        ).add(0 if "error" in database or "receivers" not in status else 1),
        _one(
            Family(
                "dashpay_wallet_unpaid_in_a_row",
                "Receivers in a row at the end of the chain that received nothing "
                "(compare with your wallet's gap limit).",
                GAUGE,
            ),
            wallet.get("unpaid_in_a_row"),
        ),
        _one(
            Family("dashpay_wallet_next_index", "The next HD index a receiver gets.", GAUGE),
            wallet.get("next_index"),
        ),
    ]


def _receivers(status: Mapping[str, Any]) -> list[Family]:
    family = Family("dashpay_receivers", "Receivers of this wallet by status.", GAUGE)
    by_status = status.get("receivers")
    if isinstance(by_status, Mapping):
        for name in (*STATUSES, *sorted(set(by_status) - set(STATUSES))):
            family.add(int(by_status.get(name, 0)), status=name)
    return [family]


def _engine(status: Mapping[str, Any]) -> list[Family]:
    engine = status.get("engine") or {}
    return [
        _one(
            Family(
                "dashpay_watched_receivers",
                "Receivers the payment engine watches (not final, or inside the "
                "monitoring window).",
                GAUGE,
            ),
            engine.get("watched"),
        ),
        _one(
            Family(
                "dashpay_payments_recorded_total",
                "Payments recorded (new or changed) since the daemon started.",
                COUNTER,
            ),
            engine.get("payments_recorded"),
        ),
        _one(
            Family(
                "dashpay_callback_events_enqueued_total",
                "Callback events written to the outbox since the daemon started.",
                COUNTER,
            ),
            engine.get("outbox_events"),
        ),
        _one(
            Family(
                "dashpay_engine_db_errors_total",
                "Database errors the payment engine met (and retried) since it started.",
                COUNTER,
            ),
            engine.get("db_errors"),
        ),
        _one(
            Family(
                "dashpay_payments_missing_from_source",
                "Payments Insight stopped showing that are still counted.",
                GAUGE,
            ),
            engine.get("payments_missing_from_source"),
        ),
    ]


def _insight(status: Mapping[str, Any], now: int) -> list[Family]:
    insight = status.get("insight")
    state = Family(
        "dashpay_insight_state",
        "1 for the state the Insight socket is in (connecting, connected, disconnected).",
        GAUGE,
    )
    connected = Family(
        "dashpay_insight_connected", "1 while the Insight socket is connected, else 0.", GAUGE
    )
    families = [connected, state]
    if insight is None:
        return families
    current = str(insight.get("state"))
    connected.add(int(current == STATE_CONNECTED))
    for name in (*INSIGHT_STATES, *([current] if current not in INSIGHT_STATES else [])):
        state.add(int(name == current), state=name)
    families += [
        _one(
            Family(
                "dashpay_insight_last_event_age_seconds",
                "Seconds since the last event arrived from Insight (none yet: no sample).",
                GAUGE,
            ),
            _age(insight.get("last_event_at"), now),
        ),
        _one(
            Family(
                "dashpay_insight_events_total",
                "Events received from the Insight socket since the daemon started.",
                COUNTER,
            ),
            insight.get("events_received"),
        ),
        _one(
            Family(
                "dashpay_insight_events_rejected_total",
                "Insight events refused as malformed since the daemon started.",
                COUNTER,
            ),
            insight.get("events_rejected"),
        ),
        _one(
            Family(
                "dashpay_insight_reconnects_total",
                "Times the Insight socket connected again after losing the link.",
                COUNTER,
            ),
            insight.get("reconnects"),
        ),
    ]
    return families


def _chain(status: Mapping[str, Any], now: int) -> list[Family]:
    """The chain source whichever backend (``status`` "chain"), labelled by backend; the
    ``dashpay_insight_*`` series above stay for the Insight backend's dashboards."""
    chain = status.get("chain")
    names = (
        ("connected", GAUGE, "1 while the chain source's link is connected, else 0."),
        ("tip_height", GAUGE, "The height of the chain source's best block, as last known."),
        ("last_event_age_seconds", GAUGE, "Seconds since the chain source's last event."),
        ("events", COUNTER, "Events received from the chain source since the daemon started."),
        ("events_rejected", COUNTER, "Chain source events refused as malformed."),
        ("reconnects", COUNTER, "Times the chain source's link connected again after a loss."),
    )
    families = {
        name: Family(f"dashpay_chain_{name}" + ("_total" if kind == COUNTER else ""), text, kind)
        for name, kind, text in names
    }
    if chain is not None:
        backend = str(chain.get("backend"))
        values = {
            "connected": int(chain.get("state") == STATE_CONNECTED),
            "tip_height": chain.get("tip_height"),
            "last_event_age_seconds": _age(chain.get("last_event_at"), now),
            "events": chain.get("events_received"),
            "events_rejected": chain.get("events_rejected"),
            "reconnects": chain.get("reconnects"),
        }
        for name, value in values.items():
            _one(families[name], value, backend=backend)
    return list(families.values())


def _callbacks(status: Mapping[str, Any]) -> list[Family]:
    view = status.get("callbacks") or {}
    deliveries = Family(
        "dashpay_callback_deliveries_total",
        "Callback delivery attempts since the daemon started, by outcome: delivered (2xx), "
        "retried (will be tried again), failed (given up).",
        COUNTER,
    )
    for outcome in CALLBACK_OUTCOMES:
        if view.get(outcome) is not None:
            deliveries.add(view[outcome], outcome=outcome)
    outbox = Family(
        "dashpay_callback_outbox_events",
        "Callback events in the outbox waiting for delivery (pending) or given up (failed).",
        GAUGE,
    )
    if "pending" in view:
        outbox.add(view["pending"], status=OUTBOX_PENDING)
        outbox.add(view.get("failed_total", 0), status=OUTBOX_FAILED)
    oldest = view.get("oldest_pending_age_seconds")
    return [
        deliveries,
        outbox,
        _one(
            Family(
                "dashpay_callback_outbox_oldest_pending_age_seconds",
                "Age of the oldest pending callback event (0 when none is pending).",
                GAUGE,
            ),
            (0 if oldest is None else float(oldest)) if "pending" in view else None,
        ),
        _one(
            Family("dashpay_callbacks_in_flight", "Callback POSTs in flight now.", GAUGE),
            view.get("in_flight"),
        ),
    ]


def _rescans(status: Mapping[str, Any], durations: Mapping[str, Histogram] | None) -> list[Family]:
    histogram = Family(
        "dashpay_rescan_duration_seconds",
        "How long rescans against Insight took since the daemon started, by kind: full "
        "(every watched receiver), selected (a rescan command's receivers), recheck (the "
        "re-check timer's).",
        HISTOGRAM,
    )
    for kind, hist in (durations or {}).items():
        histogram.add_histogram(hist, kind=kind)
    last = status.get("last_rescan") or {}
    at = _epoch_ms(last.get("at"))
    return [
        histogram,
        _one(
            Family(
                "dashpay_last_full_rescan_timestamp_seconds",
                "When the last full rescan finished (unix time).",
                GAUGE,
            ),
            None if at is None else at / 1000,
        ),
        _one(
            Family(
                "dashpay_last_full_rescan_duration_seconds",
                "How long the last full rescan took.",
                GAUGE,
            ),
            last.get("duration_seconds"),
        ),
        _one(
            Family(
                "dashpay_last_full_rescan_complete",
                "1 when the last full rescan read every history it asked for, else 0.",
                GAUGE,
            ),
            _flag(last.get("complete")),
        ),
    ]


def _prices(quotes: Iterable[Quote], max_age: float | None, now: int) -> list[Family]:
    ages = Family(
        "dashpay_price_age_seconds",
        "Age of the cached DASH price per fiat currency.",
        GAUGE,
    )
    for quote in sorted(quotes, key=lambda q: q.currency):
        ages.add(quote.age_ms(now) / 1000, currency=quote.currency)
    return [
        ages,
        _one(
            Family(
                "dashpay_price_max_age_seconds",
                "[prices] max_age: an older price is not used to create receivers.",
                GAUGE,
            ),
            max_age,
        ),
    ]
