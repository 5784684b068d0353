"""cluster: record and create on the 3-node Galera cluster beside the single server.

Each run measures both, back to back on the same machine: the ``record`` scenario's
burst of matched payments (benchmarks/record.py) and the ``create`` scenario's
concurrent ``receiver.create`` calls (benchmarks/create.py), first on the single
server (tests/mariadb-server), then on the cluster (tests/galera-cluster, the daemon
connected to node 1; every commit is certified by all three nodes). The ratio
cluster/single of each run is the figure the noise of a shared machine moves least;
the report gives its median. Both servers flush commits to the OS only
(``innodb_flush_log_at_trx_commit=2``).
"""

from __future__ import annotations

from typing import Any

from benchmarks import galera
from benchmarks.create import control_creates, reuse
from benchmarks.harness import BenchError, query_one, settle
from benchmarks.record import pay_burst
from benchmarks.runner import Case, Options
from benchmarks.seed import receivers_to_pay
from benchmarks.stack import daemon_stack

DESCRIPTION = "record and create: 3-node Galera cluster / single MariaDB server, same run"
SHOWN = (
    "single_per_second",
    "cluster_per_second",
    "cluster_to_single",
    "single_per_cpu_second",
    "cluster_per_cpu_second",
)
UNITS = {
    "single_per_second": "/s",
    "cluster_per_second": "/s",
    "single_per_cpu_second": "/s",
    "cluster_per_cpu_second": "/s",
}
REPORT_EXTRA = ("single_per_second", "cluster_per_second")
NOTES = [
    "record: payments per second to the callback received (as benchmarks/record.py); "
    "create: receivers per second from 16 control-socket clients (as benchmarks/create.py).",
    "cluster_to_single is the median of each run's own ratio, not the ratio of medians.",
]

resources = galera.resources


def cases(options: Options) -> list[Case]:
    if options.quick:
        return [
            Case("record", {"what": "record", "pending": 50, "payments": 20}, needs_mysql=True),
            Case("create", {"what": "create", "clients": 4, "receivers": 32}, needs_mysql=True),
        ]
    return [
        Case(
            "record, 10k pending",
            {"what": "record", "pending": 10_000, "payments": 1_000},
            needs_mysql=True,
        ),
        Case(
            "create, 16 clients",
            {"what": "create", "clients": 16, "receivers": 2_000},
            needs_mysql=True,
        ),
    ]


def run(case: Case, options: Options) -> dict[str, Any]:
    measure = _record if case.parameters["what"] == "record" else _create
    result: dict[str, Any] = {}
    for name, server in (("single", options.mysql_url), ("cluster", galera.cluster_url())):
        for key, value in measure(case, options, server).items():
            result[f"{name}_{key}"] = value
    result["cluster_to_single"] = round(
        result["cluster_per_second"] / result["single_per_second"], 3
    )
    return result


def _record(case: Case, options: Options, server: str | None) -> dict[str, Any]:
    count = case.parameters["payments"]
    with daemon_stack(
        "mysql",
        case.parameters["pending"],
        mysql_url=server,
        insight_url=options.insight_url,
        callbacks=True,
    ) as stack:
        measured = pay_burst(stack, receivers_to_pay(stack.database_url, count), options)
        (payments,) = query_one(stack.database_url, "SELECT COUNT(*) FROM payments")
    if payments != count:
        raise BenchError(f"expected {count} payments recorded, found {payments}")
    out = {"per_second": measured["payments_per_second"], "commits": measured["commit_groups"]}
    if "payments_per_cpu_second" in measured:
        out["per_cpu_second"] = measured["payments_per_cpu_second"]
    return out


def _create(case: Case, options: Options, server: str | None) -> dict[str, Any]:
    clients, total = case.parameters["clients"], case.parameters["receivers"]
    with daemon_stack("mysql", 0, mysql_url=server, insight_url=options.insight_url) as stack:
        settle(options.quick)
        cpu = stack.daemon.cpu_seconds()
        measured = control_creates(stack, clients, total)
        cpu = (stack.daemon.cpu_seconds() or 0) - (cpu or 0)
        reused = reuse(stack, measured["answers"])
    if reused["reused"]:
        raise BenchError(f"addresses or indexes given twice: {reused}")
    out = {"per_second": round(measured["rate"], 1)}
    if cpu > 0:
        out["per_cpu_second"] = round(len(measured["answers"]) / cpu, 1)
    return out
