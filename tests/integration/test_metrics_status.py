"""GET /metrics's figures from a real daemon's `status` answer: the shape
api/metrics.py reads is the one daemon/status.py writes (both backends)."""

from __future__ import annotations

import time

from prometheus_client.parser import text_string_to_metric_families

from dashpay.api.metrics import metric_families
from dashpay.domain.clock import now_ms
from dashpay.wire.prometheus import render


def scrape(daemon) -> dict[str, dict]:
    result = daemon.cli("status", "--json")
    assert result.stdout, result.stderr
    body = render(metric_families(result.json(), now=now_ms()))
    return {
        f.name: {(s.name, tuple(sorted(s.labels.items()))): s.value for s in f.samples}
        for f in text_string_to_metric_families(body.decode("utf-8"))
    }


def test_metrics_from_a_watching_daemon_after_a_payment(watching_daemon, sandbox_peer):
    created = watching_daemon.cli("receiver", "new", "--amount", "1", "--json")
    assert created.code == 0, created.stderr
    receiver = created.json()
    sandbox_peer.pay(receiver["address"], 100_000_000)
    deadline = time.monotonic() + 15
    while True:
        m = scrape(watching_daemon)
        paid = m["dashpay_receivers"].get(("dashpay_receivers", (("status", "paid"),)), 0)
        settled = m["dashpay_receivers"][("dashpay_receivers", (("status", "settled"),))]
        if paid + settled == 1:
            break
        assert time.monotonic() < deadline, f"{m['dashpay_receivers']}\n{watching_daemon.log()}"
        time.sleep(0.1)
    assert m["dashpay_ready"] == {("dashpay_ready", ()): 1}
    assert m["dashpay_database_up"] == {("dashpay_database_up", ()): 1}
    assert m["dashpay_payments_recorded"][("dashpay_payments_recorded_total", ())] >= 1
    assert m["dashpay_insight_connected"] == {("dashpay_insight_connected", ()): 1}
    [age] = m["dashpay_insight_last_event_age_seconds"].values()
    assert 0 <= age < 15
    assert ("dashpay_callback_outbox_events", (("status", "pending"),)) in m[
        "dashpay_callback_outbox_events"
    ]
    assert m["dashpay_last_full_rescan_complete"] == {("dashpay_last_full_rescan_complete", ()): 1}
    assert m["dashpay_watched_receivers"] == {("dashpay_watched_receivers", ()): 1}
