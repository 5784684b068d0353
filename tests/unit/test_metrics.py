"""GET /metrics's figures (api/metrics.py), read back with prometheus_client's parser."""

from __future__ import annotations

import math
from decimal import Decimal
from types import SimpleNamespace

from prometheus_client.parser import text_string_to_metric_families

from dashpay.api.commands import Services
from dashpay.api.metrics import metric_families, render_metrics
from dashpay.domain.status import STATUSES
from dashpay.services.prices.convert import Quote
from dashpay.services.rescan import RESCAN_DURATION_BUCKETS, RESCAN_KINDS
from dashpay.wire.prometheus import Histogram, render

NOW = 1_800_000_000_000  # ms
NOW_ISO = "2027-01-15T08:00:00.000Z"  # == NOW


def status(**changes) -> dict:
    """A `status` answer shaped as daemon/status.py writes it."""
    base = {
        "version": "1.2.3",
        "state": "ready",
        "ready": True,
        "reasons": [],
        "warnings": [],
        "uptime_seconds": 12.5,
        "sandbox": False,
        "database": {"backend": "sqlite", "url": "sqlite:///x"},
        "wallet": {"next_index": 9, "unpaid_in_a_row": 3},
        "receivers": {"pending": 2, "paid": 4, "settled": 1},
        "pending": 6,
        "insight": {
            "state": "connected",
            "connected_since": "2027-01-15T07:00:00.000Z",
            "disconnected_since": None,
            "last_event_at": "2027-01-15T07:59:57.500Z",
            "events_received": 40,
            "events_rejected": 1,
            "reconnects": 2,
        },
        "engine": {
            "watched": 6,
            "events": 40,
            "matched": 5,
            "payments_recorded": 5,
            "outbox_events": 7,
            "db_errors": 0,
            "payments_missing_from_source": 0,
        },
        "callbacks": {
            "running": True,
            "in_flight": 1,
            "attempts": 9,
            "delivered": 6,
            "retried": 2,
            "failed": 1,
            "last_error": None,
            "pending": 3,
            "failed_total": 1,
            "oldest_pending_age_seconds": 42.25,
        },
        "last_rescan": {
            "at": "2027-01-15T07:00:01.000Z",
            "duration_seconds": 0.75,
            "complete": True,
        },
    }
    base.update(changes)
    return base


def parse(body: bytes) -> dict[str, dict]:
    """{family: {(sample name, sorted labels): value}}"""
    out = {}
    for family in text_string_to_metric_families(body.decode("utf-8")):
        out[family.name] = {
            (s.name, tuple(sorted(s.labels.items()))): s.value for s in family.samples
        }
    return out


def metrics(st: dict, **kwargs) -> dict[str, dict]:
    return parse(render(metric_families(st, now=NOW, **kwargs)))


def test_the_clock_constants_agree():
    from dashpay.api.metrics import _epoch_ms

    assert _epoch_ms(NOW_ISO) == NOW


def test_receivers_by_status_lists_every_status_with_zeros():
    m = metrics(status())
    assert m["dashpay_receivers"] == {
        ("dashpay_receivers", (("status", s),)): {"pending": 2, "paid": 4, "settled": 1}.get(s, 0)
        for s in STATUSES
    }


def test_payments_callbacks_and_outbox():
    m = metrics(status())
    assert m["dashpay_payments_recorded"] == {("dashpay_payments_recorded_total", ()): 5}
    assert m["dashpay_callback_deliveries"] == {
        ("dashpay_callback_deliveries_total", (("outcome", "delivered"),)): 6,
        ("dashpay_callback_deliveries_total", (("outcome", "retried"),)): 2,
        ("dashpay_callback_deliveries_total", (("outcome", "failed"),)): 1,
    }
    assert m["dashpay_callback_outbox_events"] == {
        ("dashpay_callback_outbox_events", (("status", "pending"),)): 3,
        ("dashpay_callback_outbox_events", (("status", "failed"),)): 1,
    }
    oldest = m["dashpay_callback_outbox_oldest_pending_age_seconds"]
    assert oldest == {("dashpay_callback_outbox_oldest_pending_age_seconds", ()): 42.25}


def test_nothing_pending_is_an_oldest_age_of_zero():
    st = status()
    st["callbacks"] = {**st["callbacks"], "pending": 0, "oldest_pending_age_seconds": None}
    m = metrics(st)
    oldest = m["dashpay_callback_outbox_oldest_pending_age_seconds"]
    assert list(oldest.values()) == [0]


def test_insight_state_and_last_event_age():
    m = metrics(status())
    assert m["dashpay_insight_connected"] == {("dashpay_insight_connected", ()): 1}
    assert m["dashpay_insight_state"] == {
        ("dashpay_insight_state", (("state", "connecting"),)): 0,
        ("dashpay_insight_state", (("state", "connected"),)): 1,
        ("dashpay_insight_state", (("state", "disconnected"),)): 0,
    }
    age = m["dashpay_insight_last_event_age_seconds"]
    assert age == {("dashpay_insight_last_event_age_seconds", ()): 2.5}
    assert m["dashpay_insight_reconnects"] == {("dashpay_insight_reconnects_total", ()): 2}


def test_a_disconnected_insight_that_never_sent_an_event():
    st = status()
    st["insight"] = {**st["insight"], "state": "disconnected", "last_event_at": None}
    m = metrics(st)
    assert m["dashpay_insight_connected"] == {("dashpay_insight_connected", ()): 0}
    assert m["dashpay_insight_last_event_age_seconds"] == {}  # unknown: no sample


def test_the_chain_source_series_carry_the_backend_whichever_it_is():
    for backend in ("insight", "blockbook", "dashd"):
        chain = {
            "backend": backend,
            "state": "connected",
            "tip_height": 917286,
            "last_event_at": "2027-01-15T07:59:59.000Z",
            "events_received": 7,
            "events_rejected": 2,
            "reconnects": 1,
        }
        m = metrics(status(chain=chain))
        label = (("backend", backend),)
        assert m["dashpay_chain_connected"] == {("dashpay_chain_connected", label): 1}
        assert m["dashpay_chain_tip_height"] == {("dashpay_chain_tip_height", label): 917286}
        age = m["dashpay_chain_last_event_age_seconds"]
        assert age == {("dashpay_chain_last_event_age_seconds", label): 1.0}
        rejected = m["dashpay_chain_events_rejected"]
        assert rejected == {("dashpay_chain_events_rejected_total", label): 2}
    m = metrics(status(chain={"backend": "dashd", "state": "connecting", "tip_height": None}))
    assert m["dashpay_chain_connected"] == {("dashpay_chain_connected", (("backend", "dashd"),)): 0}
    assert m["dashpay_chain_tip_height"] == {}  # unknown: no sample


def test_rescan_durations_by_kind_and_the_last_full_rescan():
    durations = {kind: Histogram(RESCAN_DURATION_BUCKETS) for kind in RESCAN_KINDS}
    durations["full"].observe(0.75)
    durations["recheck"].observe(0.01)
    durations["recheck"].observe(0.02)
    m = metrics(status(), rescan_durations=durations)
    hist = m["dashpay_rescan_duration_seconds"]
    assert hist[("dashpay_rescan_duration_seconds_count", (("kind", "full"),))] == 1
    assert hist[("dashpay_rescan_duration_seconds_count", (("kind", "recheck"),))] == 2
    assert hist[("dashpay_rescan_duration_seconds_count", (("kind", "selected"),))] == 0
    assert hist[("dashpay_rescan_duration_seconds_bucket", (("kind", "full"), ("le", "0.5")))] == 0
    assert hist[("dashpay_rescan_duration_seconds_bucket", (("kind", "full"), ("le", "1.0")))] == 1
    assert m["dashpay_last_full_rescan_duration_seconds"] == {
        ("dashpay_last_full_rescan_duration_seconds", ()): 0.75
    }
    last = m["dashpay_last_full_rescan_timestamp_seconds"]
    assert last == {("dashpay_last_full_rescan_timestamp_seconds", ()): (NOW - 3_599_000) / 1000}


def test_price_age_per_currency():
    quotes = [
        Quote("USD", Decimal("22.5"), "kraken", NOW - 30_000),
        Quote("EUR", Decimal("20"), "coingecko", NOW - 90_500),
    ]
    m = metrics(status(), quotes=quotes, price_max_age=600.0)
    assert m["dashpay_price_age_seconds"] == {
        ("dashpay_price_age_seconds", (("currency", "EUR"),)): 90.5,
        ("dashpay_price_age_seconds", (("currency", "USD"),)): 30.0,
    }
    assert m["dashpay_price_max_age_seconds"] == {("dashpay_price_max_age_seconds", ()): 600.0}


def test_a_starting_daemon_without_database_insight_or_engine_still_renders():
    st = {"version": "1", "state": "starting", "ready": False, "database": {"backend": "mysql"}}
    m = metrics(st)
    assert m["dashpay_state"] == {("dashpay_state", (("state", "starting"),)): 1}
    assert m["dashpay_ready"] == {("dashpay_ready", ()): 0}
    assert m["dashpay_database_up"] == {("dashpay_database_up", ()): 0}
    assert m["dashpay_receivers"] == {}
    assert m["dashpay_payments_recorded"] == {}


def test_a_database_error_is_database_up_zero_and_no_counts():
    st = status(database={"backend": "mysql", "url": "x", "error": "gone"}, state="degraded")
    del st["receivers"]
    st["callbacks"] = {"error": "gone"}
    m = metrics(st)
    assert m["dashpay_database_up"] == {("dashpay_database_up", ()): 0}
    assert m["dashpay_receivers"] == {}
    assert m["dashpay_callback_outbox_events"] == {}
    assert m["dashpay_state"] == {("dashpay_state", (("state", "degraded"),)): 1}


def test_hostile_text_in_the_status_cannot_forge_samples():
    st = status(version='1"} 0\ndashpay_ready 0\n#', state="ready\nx")
    m = metrics(st)
    assert m["dashpay_ready"] == {("dashpay_ready", ()): 1}
    [(key, value)] = m["dashpay_info"].items()
    assert dict(key[1])["version"] == '1"} 0\ndashpay_ready 0\n#'
    assert m["dashpay_state"] == {("dashpay_state", (("state", "ready\nx"),)): 1}


def test_every_family_has_help_and_a_unique_name():
    durations = {kind: Histogram(RESCAN_DURATION_BUCKETS) for kind in RESCAN_KINDS}
    families = metric_families(status(), rescan_durations=durations, now=NOW)
    names = [f.name for f in families]
    assert len(names) == len(set(names))
    assert all(n.startswith("dashpay_") and f.help for n, f in zip(names, families, strict=True))
    assert not math.isnan(sum(s.value for f in families for s in f.samples))


async def test_render_metrics_reads_status_prices_and_rescans():
    async def current_status():
        return status()

    durations = {kind: Histogram(RESCAN_DURATION_BUCKETS) for kind in RESCAN_KINDS}
    durations["selected"].observe(3.0)
    prices = SimpleNamespace(
        cached_quotes=lambda: [Quote("USD", Decimal("1"), "kraken", 0)],
        config=SimpleNamespace(max_age=300.0),
    )
    services = Services(
        status=current_status, prices=prices, reconciler=SimpleNamespace(durations=durations)
    )
    m = parse(await render_metrics(services))
    assert m["dashpay_receivers"][("dashpay_receivers", (("status", "paid"),))] == 4
    [usd_age] = m["dashpay_price_age_seconds"].values()
    assert usd_age > 1_000_000  # fetched at the epoch
    key = ("dashpay_rescan_duration_seconds_sum", (("kind", "selected"),))
    assert m["dashpay_rescan_duration_seconds"][key] == 3.0


async def test_each_rescan_pass_files_its_duration_by_kind():
    from dashpay.services.rescan import Reconciler

    reconciler = Reconciler(None, None, None, "wallet")  # an empty pass touches none of them
    await reconciler.rescan([], kind="full")
    await reconciler.rescan([], quiet=True, kind="recheck")
    await reconciler.rescan([], quiet=True, kind="recheck")
    assert {k: h.count for k, h in reconciler.durations.items()} == {
        "full": 1,
        "selected": 0,
        "recheck": 2,
    }
