"""bootstrap: from spawning `dashpay serve` to ready, every pending receiver rescanned.

Ready is the daemon's "ready" log line (the same moment `status` turns ready and
systemd gets READY=1): the database is open, the pending table loaded, the socket
subscribed and the complete history of every pending address read over REST from the
peer (the sandbox's insight-api routes, empty histories). The clock starts just before
the process is spawned, so interpreter start and imports count.
"""

from __future__ import annotations

import re
from typing import Any

from benchmarks.harness import BenchError
from benchmarks.runner import Case, Options, Target
from benchmarks.stack import daemon_stack

DESCRIPTION = "`dashpay serve` to ready with every pending receiver rescanned over REST"
SHOWN = ("ready_seconds", "rescan_seconds", "rss_mb_ready")
UNITS = {"ready_seconds": "s", "rescan_seconds": "s", "rss_mb_ready": "MB"}
_RESCAN = re.compile(r"rescan_seconds=([0-9.]+)")


def cases(options: Options) -> list[Case]:
    if options.quick:
        return [Case("200 pending", {"pending": 200})]
    return [
        Case(
            "10k pending",
            {"pending": 10_000},
            [Target("ready_seconds", "<=", 3)],
            {"ready_seconds": "4.4-5.7", "rss_mb_ready": 300},
        ),
        Case("100k pending", {"pending": 100_000}, [Target("ready_seconds", "<=", 30)]),
    ]


def run(case: Case, options: Options) -> dict[str, Any]:
    pending = case.parameters["pending"]
    with daemon_stack("sqlite", pending, mysql_url=None, insight_url=options.insight_url) as stack:
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
        "state": status["state"],
    }
