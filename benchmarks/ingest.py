"""ingest: non-matching ``tx`` events through the websocket, socket -> parse -> lookup.

The peer writes ``events`` frames of ``tx`` events with two outputs to addresses
nobody watches, as fast as the daemon's socket takes them (TCP back-pressure, nothing
dropped). The rate is events counted by the engine (``status`` -> ``engine.events``)
divided by the time from the peer's first write to the ``status`` answer that shows
them all; ``status`` is only polled once the peer has written everything, so it does
not compete with the daemon during the flood. CPU per event is the daemon's own CPU
time (/proc) over the same span, divided by the events.
"""

from __future__ import annotations

import time
from typing import Any

from benchmarks.harness import BenchError, proc_cpu_seconds, settle
from benchmarks.runner import Case, Options, Target
from benchmarks.stack import daemon_stack

DESCRIPTION = "non-matching tx events (2 outputs) absorbed by a running daemon"
SHOWN = ("events_per_second", "events_per_cpu_second", "cpu_us_per_event", "ready_seconds")
# Shown in the report table besides the targets.
REPORT_EXTRA = ("events_per_cpu_second", "cpu_us_per_event")
UNITS = {"events_per_second": "/s", "events_per_cpu_second": "/s", "cpu_us_per_event": "µs"}
NOTES = [
    "Events are counted once their outputs were looked up in the pending table "
    "(engine.events), i.e. after socket, Engine.IO decode, JSON parse and payload "
    "checks; an event that pays no watched address is counted at the socket "
    "(PaymentEngine.watches), without the channel to the engine.",
]
STATUS_POLL_SECONDS = 0.02
# How long the flood may take before the run is declared broken (~2,000 events/s).
SECONDS_PER_EVENT_LIMIT = 1 / 2_000
ORIGINAL = {"events_per_second": 31_900, "cpu_us_per_event": 28}


def cases(options: Options) -> list[Case]:
    if options.quick:
        return [Case("200 pending", {"pending": 200, "events": 2_000, "outputs": 2})]
    targets = [Target("events_per_second", ">=", 32_000, floor=20_000)]
    return [
        Case(
            "10k pending",
            {"pending": 10_000, "events": 200_000, "outputs": 2},
            targets,
            ORIGINAL,
        ),
        Case(
            "1M pending",
            {"pending": 1_000_000, "events": 200_000, "outputs": 2},
            [Target("events_per_second", ">=", 32_000, floor=20_000)],
        ),
    ]


def run(case: Case, options: Options) -> dict[str, Any]:
    pending, events = case.parameters["pending"], case.parameters["events"]
    limit = 30 + events * SECONDS_PER_EVENT_LIMIT
    with daemon_stack("sqlite", pending, mysql_url=None, insight_url=options.insight_url) as stack:
        daemon, peer = stack.daemon, stack.peer
        assert peer is not None
        settle(options.quick)
        before = daemon.status()["engine"]["events"]
        cpu_before = daemon.cpu_seconds()
        peer_cpu_before = proc_cpu_seconds(peer.pid) if peer.pid else None
        job = peer.flood(events, case.parameters["outputs"])
        written = peer.wait_job_written(job["job"], timeout=limit)
        first_write = min(d["first_write"] for d in written["deliveries"])
        all_written = max(d["done"] for d in written["deliveries"])
        status_calls = []
        deadline = time.monotonic() + limit
        while True:
            asked = time.monotonic()
            status = daemon.status()
            answered = time.monotonic()
            status_calls.append(answered - asked)
            counted = status["engine"]["events"] - before
            if counted >= events:
                break
            if answered > deadline:
                raise BenchError(f"only {counted} of {events} events counted in time")
            time.sleep(STATUS_POLL_SECONDS)
        cpu_after = daemon.cpu_seconds()
        rss = daemon.rss_bytes()
        peer_cpu = proc_cpu_seconds(peer.pid) if peer.pid else None
    elapsed = answered - first_write
    result: dict[str, Any] = {
        "events": events,
        "events_counted": counted,
        "seconds": round(elapsed, 4),
        "events_per_second": round(events / elapsed, 1),
        "peer_write_seconds": round(all_written - first_write, 4),
        "cpu_us_per_event": round((cpu_after - cpu_before) / events * 1e6, 2),
        # What one core would absorb if the daemon had it to itself (robust to sharing).
        "events_per_cpu_second": round(events / (cpu_after - cpu_before), 1),
        "daemon_cpu_share": round((cpu_after - cpu_before) / elapsed, 3),
        "ready_seconds": round(stack.ready_seconds or 0, 3),
        "rss_mb_after": round(rss / 1e6, 1) if rss else None,
        "frame_chars": written["frame_chars"],
        "status_polls": len(status_calls),
        "status_ms_max": round(max(status_calls) * 1000, 2),
        "rejected": status["insight"]["events_rejected"],
    }
    if peer_cpu is not None and peer_cpu_before is not None:
        result["peer_cpu_us_per_event"] = round((peer_cpu - peer_cpu_before) / events * 1e6, 2)
    return result
