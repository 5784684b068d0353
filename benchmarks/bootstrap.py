"""bootstrap: from spawning `dashpay serve` to ready, every pending receiver rescanned.

Ready is the daemon's "ready" log line (the same moment `status` turns ready and
systemd gets READY=1): the database is open, the pending table loaded, the socket
subscribed and the complete history of every pending address read over REST from the
peer (the sandbox's insight-api routes, empty histories). The clock starts just before
the process is spawned, so interpreter start and imports count.

Startup CPU per pending receiver (issue 19): the daemon's CPU time (/proc) when it is
ready, minus that of a daemon with no receivers started in the same run, over N.
"""

from __future__ import annotations

import re
from typing import Any

from benchmarks.harness import BenchError
from benchmarks.runner import Case, Options, Target
from benchmarks.stack import daemon_stack

DESCRIPTION = "`dashpay serve` to ready with every pending receiver rescanned over REST"
SHOWN = ("ready_seconds", "rescan_seconds", "cpu_us_per_receiver", "rss_mb_ready")
UNITS = {
    "ready_seconds": "s", "rescan_seconds": "s", "rss_mb_ready": "MB",
    "cpu_us_per_receiver": "µs", "cpu_seconds_ready": "s", "cpu_seconds_empty": "s",
}  # fmt: skip
REPORT_EXTRA = ("cpu_seconds_empty",)
# Issue 19: <= 10 µs of CPU per pending receiver with no history; 100k ready <= 2 s.
CPU_US_GOAL = 10
_RESCAN = re.compile(r"rescan_seconds=([0-9.]+)")


def cases(options: Options) -> list[Case]:
    if options.quick:
        return [Case("200 pending", {"pending": 200})]
    return [
        Case(
            "10k pending",
            {"pending": 10_000},
            [Target("ready_seconds", "<=", 3), Target("cpu_us_per_receiver", "<=", CPU_US_GOAL)],
            {"ready_seconds": "4.4-5.7", "rss_mb_ready": 300},
        ),
        Case(
            "100k pending",
            {"pending": 100_000},
            [Target("ready_seconds", "<=", 2), Target("cpu_us_per_receiver", "<=", CPU_US_GOAL)],
        ),
    ]


def run(case: Case, options: Options) -> dict[str, Any]:
    pending = case.parameters["pending"]
    with daemon_stack("sqlite", 0, mysql_url=None, insight_url=options.insight_url) as empty:
        cpu_empty = empty.daemon.cpu_seconds() or 0.0
    with daemon_stack("sqlite", pending, mysql_url=None, insight_url=options.insight_url) as stack:
        cpu = stack.daemon.cpu_seconds() or 0.0
        status = stack.daemon.status()
        rss = stack.daemon.rss_bytes()
        line = stack.daemon.ready_line or ""
    checked = (status.get("last_rescan") or {}).get("receivers_checked")
    if checked != pending:
        raise BenchError(f"the first rescan checked {checked} receivers, not {pending}")
    match = _RESCAN.search(line)
    return {
        "pending": pending,
        "ready_seconds": round(stack.ready_seconds or 0, 3),
        "rescan_seconds": float(match[1]) if match else None,
        "rss_mb_ready": round(rss / 1e6, 1) if rss else None,
        "cpu_seconds_ready": round(cpu, 3),
        "cpu_seconds_empty": round(cpu_empty, 3),
        "cpu_us_per_receiver": round((cpu - cpu_empty) / pending * 1e6, 2),
        "state": status["state"],
    }
