"""record: a burst of matched payments, end to end.

The peer makes ``payments`` real sandbox payments, each paying one pending receiver its
full amount, and writes their ``tx`` events to the daemon as one burst. Each payment
goes event -> payment row + receiver update + outbox row (one transaction per engine
batch) -> callback POSTed to a loopback HTTP server. The rate is payments divided by
the time from the first frame written to the last payment reaching the furthest stage
measured: the callback when the daemon sends callbacks, otherwise the outbox row (seen
as the engine's "event" log line, written right after the commit, and checked in the
database at the end).

The burst's floor (issue 19), measured in the same run against the same database
(server, schema and tables) after the burst: a bare loop in this process writing what
a batch of recorded payments writes, with the daemon's own statements
(``dashpay.repository.schema``): per payment a payment INSERT, a receiver UPDATE (to
paid) and an outbox INSERT (a payload the size of the run's mean callback body),
``FLOOR_PER_COMMIT`` payments per COMMIT, for as many payments as the burst made, on
receivers of a wallet of its own (seeded just before, outside the timing).
``floor_payments_per_second`` is its rate, ``floor_ratio`` the burst's rate over it
(the figure the goal names), ``floor_cpu_ms_per_payment`` its CPU per payment (this
thread's; on MariaDB the client side only), to set beside the daemon's. On MariaDB,
when the server runs on this machine, ``mysqld_cpu_ms_per_payment`` is the server's CPU
per payment over the burst (the settling pause before it included: the server is
idle then) and ``floor_mysqld_cpu_ms_per_payment`` over the floor's timed loop.

Every payment of the burst is also read back over REST and has its callback POSTed,
which the bare record loop does not do. The burst's pipeline floor adds that I/O done
with the least code (``benchmarks/pipeline_floor.py``: ``burst_io_floor``, after the
bare loop, on the same peer and callback receiver, for the burst's own addresses):
``pipeline_floor_payments_per_second`` is the payments over the three parts' wall time
one after another (bare loop, read-back, POSTs), ``pipeline_floor_ratio`` the burst's
rate over it, ``pipeline_floor_cpu_ms_per_payment`` the three parts' CPU (this thread's)
per payment, ``readback_floor_cpu_ms_per_payment`` and ``post_floor_cpu_ms_per_payment``
two of them, and ``cpu_to_pipeline_floor`` the daemon's CPU per payment to the callback
over it.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Callable
from typing import Any

from benchmarks.create import FLOOR_PER_COMMIT
from benchmarks.harness import BenchError, FloorConnection, query_one, settle
from benchmarks.pipeline_floor import burst_io_floor
from benchmarks.runner import Case, Options, Target
from benchmarks.seed import _COLUMNS, AMOUNT_DUFFS, _rows, receivers_to_pay, synthetic_addresses
from benchmarks.stack import Stack, daemon_stack
from dashpay.domain.events import EVENT_PAID
from dashpay.repository.schema import INSERT_EVENT, INSERT_PAYMENT, UPDATE_RECEIVER

DESCRIPTION = "a burst of matched payments: event -> database -> outbox -> callback received"
SHOWN = (
    "payments_per_second",
    "floor_payments_per_second",
    "floor_ratio",
    "cpu_ms_per_payment_to_callback",
    "floor_cpu_ms_per_payment",
    "mysqld_cpu_ms_per_payment",
    "floor_mysqld_cpu_ms_per_payment",
    "pipeline_floor_payments_per_second",
    "pipeline_floor_ratio",
    "pipeline_floor_cpu_ms_per_payment",
    "cpu_to_pipeline_floor",
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
REPORT_EXTRA = (
    "floor_payments_per_second",
    "pipeline_floor_ratio",
    "pipeline_floor_payments_per_second",
    "cpu_to_pipeline_floor",
    "payments_per_cpu_second",
    "outbox_per_second",
    "callbacks_redelivered",
)
UNITS = {
    "payments_per_second": "/s",
    "floor_payments_per_second": "/s",
    "cpu_ms_per_payment_to_callback": "ms",
    "floor_cpu_ms_per_payment": "ms",
    "mysqld_cpu_ms_per_payment": "ms",
    "floor_mysqld_cpu_ms_per_payment": "ms",
    "pipeline_floor_payments_per_second": "/s",
    "pipeline_floor_cpu_ms_per_payment": "ms",
    "readback_floor_cpu_ms_per_payment": "ms",
    "post_floor_cpu_ms_per_payment": "ms",
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
# Issue 19: a burst >= 0.8 of the 100-per-commit record unit.
FLOOR_GOAL = 0.8
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
            [
                Target("payments_per_second", ">=", 3_000),
                Target("floor_ratio", ">=", FLOOR_GOAL),
            ],
            ORIGINAL | {"note": "original measured on MariaDB"},
        ),
        Case(
            "mariadb, 10k pending",
            {"backend": "mysql", **sizes},
            [
                Target("payments_per_second", ">=", 700),
                Target("floor_ratio", ">=", FLOOR_GOAL),
            ],
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
    # isolated.py imports this module (callback_grace): its server probe is imported here.
    from benchmarks.isolated import _Server

    pending, count = case.parameters["pending"], case.parameters["payments"]
    with contextlib.ExitStack() as exits:
        stack = exits.enter_context(
            daemon_stack(
                case.parameters["backend"],
                pending,
                mysql_url=options.mysql_url,
                insight_url=options.insight_url,
                callbacks=True,
            )
        )
        server = None
        if case.parameters["backend"] == "mysql":
            server = _Server(stack.database_url)
            exits.callback(server.close)
        server_cpu = server.cpu if server is not None and server.pid is not None else None
        targets = receivers_to_pay(stack.database_url, count)
        server_before = server_cpu() if server_cpu else None
        result = pay_burst(stack, targets, options)
        if server_cpu is not None and server_before is not None:
            result["mysqld_cpu_ms_per_payment"] = round(
                (server_cpu() - server_before) / count * 1000, 4
            )
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
        (payload_chars,) = query_one(
            stack.database_url, "SELECT ROUND(AVG(LENGTH(payload))) FROM callback_outbox"
        )
        floor, floor_cpu, floor_server = floor_rate(
            stack.database_url, count, int(payload_chars), server_cpu
        )
        assert stack.peer is not None and stack.sink is not None
        io = burst_io_floor(
            stack.peer.insight_url, stack.sink.url, [address for _, address in targets]
        )
    io_wall = io["readback_wall_s"] + io["post_wall_s"]
    io_cpu = io["readback_cpu_s"] + io["post_cpu_s"]
    pipeline_rate = count / (count / floor + io_wall)
    result["pipeline_floor_payments_per_second"] = round(pipeline_rate, 1)
    result["pipeline_floor_ratio"] = round(result["payments_per_second"] / pipeline_rate, 3)
    result["pipeline_floor_cpu_ms_per_payment"] = round((floor_cpu + io_cpu / count) * 1000, 4)
    result["readback_floor_cpu_ms_per_payment"] = round(io["readback_cpu_s"] / count * 1000, 4)
    result["post_floor_cpu_ms_per_payment"] = round(io["post_cpu_s"] / count * 1000, 4)
    daemon_cpu = result.get("cpu_ms_per_payment_to_callback")
    if daemon_cpu is not None and result["measured_to"] == STAGE_CALLBACK:
        result["cpu_to_pipeline_floor"] = round(
            daemon_cpu / result["pipeline_floor_cpu_ms_per_payment"], 2
        )
    if floor_server is not None:
        result["floor_mysqld_cpu_ms_per_payment"] = round(floor_server * 1000, 4)
    result["payload_chars"] = int(payload_chars)
    result["floor_payments_per_second"] = round(floor, 1)
    result["floor_ratio"] = round(result["payments_per_second"] / floor, 3)
    result["floor_cpu_ms_per_payment"] = round(floor_cpu * 1000, 4)
    return result


def floor_rate(
    database_url: str,
    count: int,
    payload_chars: int,
    server_cpu: Callable[[], float | None] | None = None,
) -> tuple[float, float, float | None]:
    """Payments per second of the bare record loop (see the module docstring) paying
    ``count`` new receivers of a wallet of its own in the benchmark's database, the
    loop's CPU seconds per payment (this thread's) and, with ``server_cpu`` (the
    database server's CPU seconds so far), the server's per payment."""
    wallet = "floor" + secrets.token_hex(6)
    addresses = synthetic_addresses(count, seed=secrets.randbits(32))
    payload = "x" * payload_chars
    db = FloorConnection(database_url)
    try:
        db.execute(db.begin)
        marks = ", ".join("?" * len(_COLUMNS))
        db.executemany(
            f"INSERT INTO receivers ({', '.join(_COLUMNS)}) VALUES ({marks})",
            _rows(wallet, 0, addresses),
        )
        db.execute("COMMIT")
        receivers = db.execute(
            "SELECT receiver_id, address FROM receivers WHERE wallet_id = ? ORDER BY receiver_id",
            (wallet,),
        ).fetchall()
        now = time.time_ns() // 1_000_000
        server_before = server_cpu() if server_cpu else None
        started, cpu_started = time.perf_counter(), time.thread_time()
        for start in range(0, count, FLOOR_PER_COMMIT):
            db.execute(db.begin)
            for receiver_id, address in receivers[start : start + FLOOR_PER_COMMIT]:
                txid = secrets.token_hex(32)
                db.execute(
                    INSERT_PAYMENT,
                    (receiver_id, txid, address, AMOUNT_DUFFS, 1, None, 0, now, now),
                )
                # received, status, overpaid, late, paid_at, settled_at, closed_at, updated_at
                db.execute(
                    UPDATE_RECEIVER,
                    (AMOUNT_DUFFS, "paid", 0, 0, now, None, None, now, receiver_id),
                )
                db.execute(
                    INSERT_EVENT,
                    (f"evt_{txid[:32]}", receiver_id, EVENT_PAID, payload, "pending", 0, now, now),
                )
            db.execute("COMMIT")
        elapsed, cpu = time.perf_counter() - started, time.thread_time() - cpu_started
        server_after = server_cpu() if server_cpu else None
    finally:
        db.close()
    server = None
    if server_before is not None and server_after is not None:
        server = (server_after - server_before) / count
    return count / elapsed, cpu / count, server


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
