"""bootstrap: from spawning `dashpay serve` to ready, every pending receiver rescanned.

Ready is the daemon's "ready" log line (the same moment `status` turns ready and
systemd gets READY=1): the database is open, the pending table loaded, the socket
subscribed and the complete history of every pending address read over REST from the
peer (the sandbox's insight-api routes, empty histories). The clock starts just before
the process is spawned, so interpreter start and imports count.

Startup CPU per pending receiver (issue 19): the daemon's CPU time (/proc) when it is
ready, minus that of a daemon with no receivers started in the same run, over N.

The floor of the rescan, in the same run: the peer's CPU time while the daemon started
(``peer_cpu_seconds``; the peer answers each POST /addrs/txs of 1,000 addresses after
checking every address, as insight-api and dashd do, in Python here), and the rescan's
ratio to it. Each run is measured twice: as is (this environment sets
PYTHONDONTWRITEBYTECODE=1 and the tree has no bytecode, so the daemon compiles
dashpay's modules at start) and compiled (``ready_seconds_compiled``: bytecode in a
private PYTHONPYCACHEPREFIX, as a packaged install).
"""

from __future__ import annotations

import re
from typing import Any

from benchmarks.harness import BenchError, Peer, bytecode_prefix, open_peer, proc_cpu_seconds
from benchmarks.runner import Case, Options, Target
from benchmarks.stack import daemon_stack

DESCRIPTION = "`dashpay serve` to ready with every pending receiver rescanned over REST"
SHOWN = (
    "ready_seconds", "ready_seconds_compiled", "rescan_seconds", "peer_cpu_seconds",
    "cpu_us_per_receiver", "rss_mb_ready",
)  # fmt: skip
UNITS = {
    "ready_seconds": "s", "ready_seconds_compiled": "s", "rescan_seconds": "s",
    "peer_cpu_seconds": "s", "rss_mb_ready": "MB", "cpu_us_per_receiver": "µs",
    "cpu_us_per_receiver_compiled": "µs", "cpu_seconds_ready": "s", "cpu_seconds_empty": "s",
}  # fmt: skip
REPORT_EXTRA = ("cpu_seconds_empty", "peer_cpu_seconds")
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
    with open_peer(options.insight_url) as peer:
        figures = _start(pending, peer, None)
        with bytecode_prefix() as (writing, reading):
            _start(0, peer, writing)  # writes the bytecode of every module the daemon loads
            compiled = _start(pending, peer, reading)
    figures["ready_seconds_compiled"] = compiled["ready_seconds"]
    figures["cpu_us_per_receiver_compiled"] = compiled["cpu_us_per_receiver"]
    peer_cpu = figures["peer_cpu_seconds"]
    if peer_cpu and figures["rescan_seconds"] is not None:
        figures["rescan_over_peer_cpu"] = round(figures["rescan_seconds"] / peer_cpu, 2)
    return figures


def _start(pending: int, peer: Peer, env: dict[str, str] | None) -> dict[str, Any]:
    """A daemon with no receivers, then one with ``pending``, on the same peer: what
    the second took to be ready, and its CPU beyond the first's."""
    url = peer.insight_url
    with daemon_stack("sqlite", 0, mysql_url=None, insight_url=url, env=env) as empty:
        cpu_empty = empty.daemon.cpu_seconds() or 0.0
    if pending == 0:
        return {}
    peer_before = proc_cpu_seconds(peer.pid) if peer.pid else None
    with daemon_stack("sqlite", pending, mysql_url=None, insight_url=url, env=env) as stack:
        peer_cpu = proc_cpu_seconds(peer.pid) if peer.pid else None
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
        "peer_cpu_seconds": (
            round(peer_cpu - peer_before, 3)
            if peer_cpu is not None and peer_before is not None
            else None
        ),
        "rss_mb_ready": round(rss / 1e6, 1) if rss else None,
        "cpu_seconds_ready": round(cpu, 3),
        "cpu_seconds_empty": round(cpu_empty, 3),
        "cpu_us_per_receiver": round((cpu - cpu_empty) / pending * 1e6, 2),
        "state": status["state"],
    }
