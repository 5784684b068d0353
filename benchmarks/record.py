"""record: a burst of matched payments, end to end.

The peer makes ``payments`` real sandbox payments, each paying one pending receiver its
full amount, and writes their ``tx`` events to the daemon as one burst. Each payment
goes event -> payment row + receiver update + outbox row (one transaction per engine
batch) -> callback POSTed to a loopback HTTP server. The rate is payments divided by
the time from the first frame written to the last payment reaching the furthest stage
measured: the callback when the daemon sends callbacks, otherwise the outbox row (seen
as the engine's "event" log line, written right after the commit, and checked in the
database at the end).
"""

from __future__ import annotations

from typing import Any

from benchmarks.harness import BenchError, query_one, settle
from benchmarks.runner import Case, Options, Target
from benchmarks.seed import AMOUNT_DUFFS, receivers_to_pay
from benchmarks.stack import Stack, daemon_stack

DESCRIPTION = "a burst of matched payments: event -> database -> outbox -> callback received"
SHOWN = (
    "payments_per_second",
    "payments_per_cpu_second",
    "outbox_per_second",
    "callbacks_per_second",
    "measured_to",
)
# Shown in the report table besides the targets.
# payments_per_cpu_second: payments per second of the daemon's own CPU (user + system),
# end to end. The daemon is bound by one core (the GIL), so this is the rate it would
# reach with that core to itself. The machine's other tenants move it less than the
# wall-clock rate (they still slow each instruction down: caches, stolen time).
REPORT_EXTRA = ("payments_per_cpu_second", "outbox_per_second", "callbacks_redelivered")
UNITS = {
    "payments_per_second": "/s",
    "payments_per_cpu_second": "/s",
    "outbox_per_second": "/s",
    "callbacks_per_second": "/s",
}
# How long to wait, once every outbox row is written, for the first callback before
# concluding that the daemon sends none (a sender that is wired delivers in milliseconds).
CALLBACK_GRACE_SECONDS = 3.0
QUICK_CALLBACK_GRACE_SECONDS = 0.5
# A payment slower than this on average means the run is broken, not slow.
SECONDS_PER_PAYMENT_LIMIT = 0.05
ORIGINAL = {"payments_per_second": 78}
# Log lines of one engine transaction are written in one go (~10 µs apart).
GROUP_GAP_SECONDS = 0.001
STAGE_CALLBACK = "callback received"
STAGE_OUTBOX = "outbox row written"

NOTES = [
    "callback_sender_wired false means dashpay/daemon.py did not start the callback "
    "sender when this ran: the figures stop at the outbox row (committed, as the "
    "engine's event log line shows) and are a ceiling for the end-to-end rate.",
]


def cases(options: Options) -> list[Case]:
    if options.quick:
        sizes = {"pending": 50, "payments": 20}
        return [
            Case("sqlite", {"backend": "sqlite", **sizes}),
            Case("mariadb", {"backend": "mysql", **sizes}, needs_mysql=True),
        ]
    sizes = {"pending": 10_000, "payments": 1_000}
    return [
        Case(
            "sqlite, 10k pending",
            {"backend": "sqlite", **sizes},
            [Target("payments_per_second", ">=", 3_000)],
            ORIGINAL | {"note": "original measured on MariaDB"},
        ),
        Case(
            "mariadb, 10k pending",
            {"backend": "mysql", **sizes},
            [Target("payments_per_second", ">=", 700)],
            ORIGINAL,
            needs_mysql=True,
        ),
    ]


def commit_groups(times: list[float]) -> list[int]:
    """Sizes of the bursts of "event" log lines (a gap of more than GROUP_GAP_SECONDS
    starts a new one): roughly, how many payments each engine transaction carried."""
    groups: list[int] = []
    last = None
    for at in times:
        if last is None or at - last > GROUP_GAP_SECONDS:
            groups.append(0)
        groups[-1] += 1
        last = at
    return groups


def callback_grace(options: Options) -> float:
    return QUICK_CALLBACK_GRACE_SECONDS if options.quick else CALLBACK_GRACE_SECONDS


def run(case: Case, options: Options) -> dict[str, Any]:
    pending, count = case.parameters["pending"], case.parameters["payments"]
    with daemon_stack(
        case.parameters["backend"],
        pending,
        mysql_url=options.mysql_url,
        insight_url=options.insight_url,
        callbacks=True,
    ) as stack:
        targets = receivers_to_pay(stack.database_url, count)
        result = pay_burst(stack, targets, options)
        (outbox_rows,) = query_one(stack.database_url, "SELECT COUNT(*) FROM callback_outbox")
        (payment_rows,) = query_one(stack.database_url, "SELECT COUNT(*) FROM payments")
        (paid,) = query_one(
            stack.database_url, "SELECT COUNT(*) FROM receivers WHERE status = 'paid'"
        )
        result["payments_recorded"] = stack.daemon.status()["engine"].get("payments_recorded")
    if (outbox_rows, payment_rows, paid) != (count, count, count):
        raise BenchError(
            f"expected {count} outbox rows, payments and paid receivers; found "
            f"{outbox_rows}, {payment_rows}, {paid}"
        )
    return result


def pay_burst(stack: Stack, targets: list[tuple[int, str]], options: Options) -> dict[str, Any]:
    """Pay each of ``targets`` (receiver id, address) its amount in one burst of events
    and measure it to the furthest stage (the figures of one record run). The stack's
    daemon must have sent no event for these receivers yet."""
    daemon, peer, sink = stack.daemon, stack.peer, stack.sink
    assert peer is not None and sink is not None
    count = len(targets)
    limit = 30 + count * SECONDS_PER_PAYMENT_LIMIT
    ids = {receiver_id for receiver_id, _ in targets}
    settle(options.quick)
    cpu_before = daemon.cpu_seconds()
    job = peer.pay([(address, AMOUNT_DUFFS) for _, address in targets])
    written = peer.wait_job_written(job["job"], timeout=limit)
    first_write = min(d["first_write"] for d in written["deliveries"])
    daemon.wait_for(
        lambda: all(i in daemon.first_event for i in ids), limit, f"{count} outbox events"
    )
    outbox_done = max(daemon.first_event[i].at for i in ids)
    first_outbox = min(daemon.first_event[i].at for i in ids)
    groups = commit_groups(sorted(daemon.first_event[i].at for i in ids))
    cpu_outbox = daemon.cpu_seconds()
    wired = sink.wait_count(1, callback_grace(options), ids)
    callbacks_done = cpu_callbacks = None
    if wired:
        if not sink.wait_for(lambda: all(i in sink.first for i in ids), limit):
            got = sum(1 for i in ids if i in sink.first)
            raise BenchError(f"callbacks arrived for only {got} of {count} receivers")
        callbacks_done = max(sink.first[i].at for i in ids)
        cpu_callbacks = daemon.cpu_seconds()
    outbox_seconds = outbox_done - first_write
    result: dict[str, Any] = {
        "payments": count,
        "measured_to": STAGE_CALLBACK if wired else STAGE_OUTBOX,
        "callback_sender_wired": wired,
        "outbox_seconds": round(outbox_seconds, 4),
        "outbox_per_second": round(count / outbox_seconds, 1),
        "first_outbox_ms": round((first_outbox - first_write) * 1000, 2),
        "commit_groups": len(groups),
        "largest_commit_group": max(groups),
        "cpu_ms_per_payment_to_outbox": round((cpu_outbox - cpu_before) / count * 1000, 3),
        "frame_chars": written["frame_chars"],
    }
    if callbacks_done is not None:
        seconds = callbacks_done - first_write
        result["callbacks_received"] = sink.count(ids)
        result["callbacks_redelivered"] = sink.redeliveries()
        result["cpu_ms_per_payment_to_callback"] = round(
            (cpu_callbacks - cpu_before) / count * 1000, 3
        )
        result["callback_seconds"] = round(seconds, 4)
        result["callbacks_per_second"] = round(count / seconds, 1)
        result["payments_per_second"] = result["callbacks_per_second"]
        cpu = cpu_callbacks - cpu_before
    else:
        result["payments_per_second"] = result["outbox_per_second"]
        cpu = cpu_outbox - cpu_before
    if cpu > 0:
        result["payments_per_cpu_second"] = round(count / cpu, 1)
    return result
