"""isolated: payments that arrive alone, as production sees them.

``payments`` payments one at a time, each started ``spacing_ms`` after the previous
one started (or at once if that one took longer): the peer writes the ``tx`` event,
the daemon reads the payment back over REST, records it, POSTs the callback; the
loopback receiver notes its arrival. Measured over the whole loop, idle time and the
daemon's timers included:

- CPU per payment from /proc: the daemon's, and on MariaDB the server's (``mysqld``
  from its ``pid_file``, when it runs on this machine);
- on MariaDB, per payment, from the server's ``SHOW GLOBAL STATUS`` before and after
  (the two SHOW statements taken out): ``Questions`` (every statement, BEGIN and
  COMMIT included), the data statements (``Com_select`` + ``Com_insert`` +
  ``Com_update`` + ``Com_update_multi`` + ``Com_delete``), ``Com_begin``/``Com_commit``,
  ``Handler_commit`` and the fsyncs (``Innodb_data_fsyncs``: MariaDB 10.11 counts the
  redo log's syncs there; its ``Innodb_os_log_fsyncs`` stays 0 with O_DIRECT);
- event written -> callback received, p50/p99.

Floors measured in the same run, after the loop, on the same peer and database:
one REST ``GET tx/<txid>`` round trip to the peer (keep-alive, median wall; also the
read-back the daemon really makes, ``POST addrs/txs`` for one address, slower on the
sandbox peer, which builds the history: ``readback_floor_ms``), and one
record unit (a payment INSERT, a receiver UPDATE and an outbox INSERT in one commit,
on scratch tables of the run's database: SQLite WAL with synchronous=NORMAL as the
daemon opens it, MariaDB as the server is configured), its median wall and its CPU
(this process's thread, plus the server's on MariaDB). The latency floor is the REST
round trip plus the commit; every figure is reported with its floor and the ratio.

A second CPU floor, since the daemon's figure also pays for the read-back and the
callback: the lone payment's I/O done with the least code trio allows
(``benchmarks/pipeline_floor.py``: the read-back, one record unit commit, one signed
callback POST, spaced as the loop was), ``pipeline_floor_cpu_ms``, and
``cpu_to_pipeline_floor``; its median wall per payment, ``pipeline_floor_wall_ms``, and
``p50_minus_pipeline_floor_ms`` (that wall includes the callback's answer, which the
daemon's latency does not wait for, and leaves out the event's delivery, which it
does).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from benchmarks.harness import (
    BenchError,
    median,
    mysql_connect,
    percentile,
    proc_cpu_seconds,
)
from benchmarks.pipeline_floor import HISTORY_QUERY, pipeline_floor
from benchmarks.record import callback_grace
from benchmarks.runner import Case, Options, Target
from benchmarks.seed import AMOUNT_DUFFS
from benchmarks.stack import paying_stack

DESCRIPTION = "payments one at a time, spaced: CPU, statements and latency per payment"
SHOWN = (
    "cpu_ms_per_payment",
    "mysqld_cpu_ms_per_payment",
    "questions_per_payment",
    "data_statements_per_payment",
    "fsyncs_per_payment",
    "p50_ms",
    "p99_ms",
    "latency_floor_ms",
)
# Shown in the report table besides the targets (each target is shown once already).
REPORT_EXTRA = (
    "cpu_to_floor",
    "pipeline_floor_cpu_ms",
    "cpu_to_pipeline_floor",
    "pipeline_floor_wall_ms",
    "p50_minus_pipeline_floor_ms",
    "questions_per_payment",
    "p50_ms",
    "p99_ms",
    "latency_floor_ms",
    "readback_floor_ms",
    "p50_minus_readback_floor_ms",
    "fsyncs_per_commit",
    "fsyncs_to_floor",
    "mysqld_cpu_to_floor",
)
UNITS = {
    "cpu_ms_per_payment": "ms",
    "mysqld_cpu_ms_per_payment": "ms",
    "record_unit_cpu_ms": "ms",
    "pipeline_floor_cpu_ms": "ms",
    "pipeline_floor_wall_ms": "ms",
    "p50_minus_pipeline_floor_ms": "ms",
    "p50_ms": "ms",
    "p99_ms": "ms",
    "latency_floor_ms": "ms",
    "p50_minus_floor_ms": "ms",
    "readback_floor_ms": "ms",
    "p50_minus_readback_floor_ms": "ms",
}
PAYMENT_TIMEOUT = 10.0
FLOOR_REPEATS = 200
# MariaDB status counters read before and after the loop.
COUNTERS = (
    "Questions",
    "Com_select",
    "Com_insert",
    "Com_update",
    "Com_update_multi",
    "Com_delete",
    "Com_begin",
    "Com_commit",
    "Com_rollback",
    "Handler_commit",
    "Innodb_data_fsyncs",
    "Innodb_log_writes",
    "Innodb_buffer_pool_pages_flushed",
    "Innodb_dblwr_writes",
)
DATA_STATEMENTS = ("Com_select", "Com_insert", "Com_update", "Com_update_multi", "Com_delete")
# A payload the size of a callback body (~1.2 kB) for the record unit floor.
FLOOR_PAYLOAD = "x" * 1200

NOTES = [
    "questions_per_payment counts every statement the server received per payment, "
    "BEGIN and COMMIT included; data_statements_per_payment counts SELECT, INSERT, "
    "UPDATE and DELETE only. Both include the daemon's timers over the loop.",
    "transactions_per_payment is Com_commit per payment (implicit transactions, started "
    "by the first statement after a COMMIT, are counted by their COMMIT).",
]


def cases(options: Options) -> list[Case]:
    if options.quick:
        sizes = {"pending": 50, "payments": 5}
        return [
            Case("sqlite, 20 ms apart", {"backend": "sqlite", "spacing_ms": 20, **sizes}),
            Case(
                "mariadb, 20 ms apart",
                {"backend": "mysql", "spacing_ms": 20, **sizes},
                needs_mysql=True,
            ),
        ]
    sizes = {"pending": 10_000, "payments": 200}
    sqlite_targets = [Target("cpu_ms_per_payment", "<=", 0.5)]
    mysql_targets = [
        Target("cpu_ms_per_payment", "<=", 1.0),
        Target("mysqld_cpu_ms_per_payment", "<=", 0.5),
        Target("transactions_per_payment", "<=", 1.0),
        Target("data_statements_per_payment", "<=", 5.0),
        Target("fsyncs_per_payment", "<=", 1.0),
    ]
    latency = [Target("p50_minus_floor_ms", "<=", 1.0), Target("p99_to_p50", "<=", 2.0)]
    out = []
    for spacing in (20, 100):
        out.append(
            Case(
                f"sqlite, {spacing} ms apart",
                {"backend": "sqlite", "spacing_ms": spacing, **sizes},
                sqlite_targets + latency,
            )
        )
        out.append(
            Case(
                f"mariadb, {spacing} ms apart",
                {"backend": "mysql", "spacing_ms": spacing, **sizes},
                mysql_targets + latency,
                needs_mysql=True,
            )
        )
    return out


def run(case: Case, options: Options) -> dict[str, Any]:
    count = case.parameters["payments"]
    spacing = case.parameters["spacing_ms"] / 1000
    mysql = case.parameters["backend"] == "mysql"
    with paying_stack(case, options, count + 1) as (stack, targets):
        daemon, peer, sink = stack.daemon, stack.peer, stack.sink
        assert peer is not None and sink is not None
        warm_id, warm_address = targets[0]
        warm = peer.pay([(warm_address, AMOUNT_DUFFS)])
        if not sink.wait_for(lambda: warm_id in sink.first, PAYMENT_TIMEOUT):
            raise BenchError("no callback for the first payment: is the sender wired?")
        # Let the first payment's deferred work (its delivery outcome) settle.
        time.sleep(max(callback_grace(options), 2.0) if not options.quick else 0.5)
        server = _Server(stack.database_url) if mysql else None
        try:
            before = server.counters() if server else None
            server_cpu_before = server.cpu() if server else None
            cpu_before = daemon.cpu_seconds()
            started = time.monotonic()
            latencies: list[float] = []
            next_at = time.monotonic()
            for receiver_id, address in targets[1:]:
                pause = next_at - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                next_at = time.monotonic() + spacing
                job = peer.pay([(address, AMOUNT_DUFFS)])
                if not sink.wait_for(lambda rid=receiver_id: rid in sink.first, PAYMENT_TIMEOUT):
                    raise BenchError(f"no callback for receiver {receiver_id}")
                delivery = peer.job(job["job"])["deliveries"]
                written = min(d["first_write"] for d in delivery)
                latencies.append(sink.first[receiver_id].at - written)
            # The last payment's deferred work belongs to the loop too: wait for the
            # daemon to go quiet (a spacing, at least one second) before reading.
            time.sleep(max(spacing, 1.0) + 0.5)
            elapsed = time.monotonic() - started
            cpu = daemon.cpu_seconds() - cpu_before
            server_cpu = server.cpu() if server else None
            after = server.counters() if server else None
            redelivered = sink.redeliveries()
            floors = _floors(
                stack.database_url,
                peer.insight_url,
                warm["txids"][0],
                warm_address,
                server,
                pipeline=(sink.url, spacing),
            )
        finally:
            if server is not None:
                server.close()
    result: dict[str, Any] = {
        "payments": count,
        "spacing_ms": case.parameters["spacing_ms"],
        "loop_seconds": round(elapsed, 3),
        "cpu_ms_per_payment": round(cpu / count * 1000, 4),
        "p50_ms": _ms(percentile(latencies, 50)),
        "p90_ms": _ms(percentile(latencies, 90)),
        "p99_ms": _ms(percentile(latencies, 99)),
        "max_ms": _ms(max(latencies)),
        "callbacks_redelivered": redelivered,
        **floors,
    }
    result["cpu_to_floor"] = round(result["cpu_ms_per_payment"] / floors["record_unit_cpu_ms"], 2)
    result["cpu_to_pipeline_floor"] = round(
        result["cpu_ms_per_payment"] / floors["pipeline_floor_cpu_ms"], 2
    )
    result["p50_minus_floor_ms"] = round(result["p50_ms"] - floors["latency_floor_ms"], 3)
    result["p50_minus_readback_floor_ms"] = round(result["p50_ms"] - floors["readback_floor_ms"], 3)
    result["p50_minus_pipeline_floor_ms"] = round(
        result["p50_ms"] - floors["pipeline_floor_wall_ms"], 3
    )
    result["p50_to_floor"] = round(result["p50_ms"] / floors["latency_floor_ms"], 2)
    result["p99_to_p50"] = round(result["p99_ms"] / result["p50_ms"], 2)
    if server_cpu is not None and server_cpu_before is not None:
        result["mysqld_cpu_ms_per_payment"] = round(
            (server_cpu - server_cpu_before) / count * 1000, 4
        )
    if before is not None and after is not None:
        delta = {name: after[name] - before[name] for name in COUNTERS}
        delta["Questions"] -= 1  # the SHOW that read "after"
        result["counters"] = delta
        result["questions_per_payment"] = round(delta["Questions"] / count, 3)
        result["data_statements_per_payment"] = round(
            sum(delta[name] for name in DATA_STATEMENTS) / count, 3
        )
        result["begins_per_payment"] = round(delta["Com_begin"] / count, 3)
        result["transactions_per_payment"] = round(delta["Com_commit"] / count, 3)
        result["handler_commits_per_payment"] = round(delta["Handler_commit"] / count, 3)
        result["fsyncs_per_payment"] = round(delta["Innodb_data_fsyncs"] / count, 3)
        # The redo log's sync at each COMMIT, and the page cleaner's syncs of the data
        # files (doublewrite buffer, tablespaces) after it flushes the pages the
        # payments dirtied: MariaDB counts both in Innodb_data_fsyncs. The floor's
        # record unit commits show the same mix on the same server.
        commits = max(1, delta["Com_commit"])
        result["fsyncs_per_commit"] = round(delta["Innodb_data_fsyncs"] / commits, 3)
        result["pages_flushed_per_payment"] = round(
            delta["Innodb_buffer_pool_pages_flushed"] / count, 3
        )
        floor_fsyncs = floors.get("record_unit_fsyncs")
        if floor_fsyncs:
            result["fsyncs_to_floor"] = round(result["fsyncs_per_commit"] / floor_fsyncs, 2)
    if "record_unit_mysqld_cpu_ms" in floors and "mysqld_cpu_ms_per_payment" in result:
        result["mysqld_cpu_to_floor"] = round(
            result["mysqld_cpu_ms_per_payment"] / floors["record_unit_mysqld_cpu_ms"], 2
        )
    return result


class _Server:
    """The MariaDB server of the run: its status counters and, when it runs on this
    machine, its CPU time."""

    def __init__(self, database_url: str) -> None:
        parts = urlsplit(database_url)
        self.conn = mysql_connect(parts._replace(path="").geturl(), parts.path.strip("/"))
        self.pid: int | None = None
        with self.conn.cursor() as cur:
            cur.execute("SELECT @@pid_file")
            (pid_file,) = cur.fetchone()
        with contextlib.suppress(OSError, ValueError, TypeError):
            self.pid = int(Path(pid_file).read_text().split()[0])
            if proc_cpu_seconds(self.pid) is None:
                self.pid = None

    def counters(self) -> dict[str, int]:
        names = ", ".join(f"'{name}'" for name in COUNTERS)
        with self.conn.cursor() as cur:
            cur.execute(f"SHOW GLOBAL STATUS WHERE Variable_name IN ({names})")
            found = {name: int(value) for name, value in cur.fetchall()}
        return {name: found.get(name, 0) for name in COUNTERS}

    def cpu(self) -> float | None:
        return None if self.pid is None else proc_cpu_seconds(self.pid)

    def close(self) -> None:
        self.conn.close()


def _floors(
    database_url: str,
    insight_url: str,
    txid: str,
    address: str,
    server: _Server | None,
    pipeline: tuple[str, float] | None = None,
) -> dict:
    """The run's floors: one REST round trip, one record unit commit (see the module
    docstring); with ``pipeline`` (the callback receiver's URL and the loop's spacing)
    also the lone payment's I/O done by the least code (``benchmarks/pipeline_floor.py``)."""
    rest = _rest_round_trip(insight_url, "GET", f"tx/{txid}", None)
    history = json.dumps({"addrs": address, "from": 0, "to": 50}).encode()
    readback = _rest_round_trip(insight_url, "POST", f"addrs/txs?{HISTORY_QUERY}", history)
    floor_fsyncs = 0.0
    if database_url.startswith("sqlite:"):
        path = Path(database_url.removeprefix("sqlite:///")).with_name("floor.sqlite3")
        unit = _sqlite_unit(path)
    else:
        assert server is not None
        unit = _mysql_unit(server)
    with unit as commit:
        before = server.counters() if server is not None else None
        commit_wall, client_cpu, server_cpu = _record_unit(commit, server)
        if server is not None and before is not None:
            after = server.counters()
            floor_fsyncs = (
                after["Innodb_data_fsyncs"] - before["Innodb_data_fsyncs"]
            ) / FLOOR_REPEATS
        least = None
        if pipeline is not None:
            sink_url, spacing = pipeline
            least = pipeline_floor(
                insight_url,
                sink_url,
                address,
                lambda i: commit(FLOOR_REPEATS + i),
                FLOOR_REPEATS,
                spacing,
            )
    floors: dict[str, Any] = {
        "rest_round_trip_ms": _ms(rest),
        "commit_ms": _ms(commit_wall),
        "record_unit_cpu_ms": round(client_cpu * 1000, 4),
        "latency_floor_ms": _ms(rest + commit_wall),
        "readback_round_trip_ms": _ms(readback),
        "readback_floor_ms": _ms(readback + commit_wall),
    }
    if least is not None:
        floors["pipeline_floor_cpu_ms"] = least["cpu_ms"]
        floors["pipeline_floor_wall_ms"] = least["wall_ms"]
    if server_cpu is not None:
        floors["record_unit_mysqld_cpu_ms"] = round(server_cpu * 1000, 4)
    if server is not None:
        floors["record_unit_fsyncs"] = round(floor_fsyncs, 3)
    return floors


def _rest_round_trip(insight_url: str, method: str, route: str, body: bytes | None) -> float:
    """Median wall time of one request to the peer on a kept-alive connection."""
    parts = urlsplit(insight_url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    path = f"{parts.path.rstrip('/')}/{route}"
    headers = {"Content-Type": "application/json"} if body is not None else {}
    times = []
    try:
        for _ in range(FLOOR_REPEATS):
            started = time.monotonic()
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            times.append(time.monotonic() - started)
            if response.status != 200:
                raise BenchError(f"GET {path}: {response.status}")
    finally:
        conn.close()
    return median(times) or 0.0


_FLOOR_TABLES = (
    "CREATE TABLE floor_receivers (receiver_id INTEGER PRIMARY KEY, received BIGINT NOT NULL,"
    " status VARCHAR(16) NOT NULL, updated_at BIGINT NOT NULL)",
    "CREATE TABLE floor_payments (payment_id INTEGER PRIMARY KEY {auto}, receiver_id BIGINT"
    " NOT NULL, txid CHAR(64) NOT NULL, address VARCHAR(64) NOT NULL, amount BIGINT NOT NULL,"
    " first_seen_at BIGINT NOT NULL, UNIQUE (txid, address))",
    "CREATE TABLE floor_outbox (seq INTEGER PRIMARY KEY {auto}, event_id VARCHAR(64) NOT NULL"
    " UNIQUE, receiver_id BIGINT NOT NULL, payload TEXT NOT NULL, status VARCHAR(16) NOT NULL,"
    " created_at BIGINT NOT NULL)",
)
_FLOOR_UNIT = (
    "INSERT INTO floor_payments (receiver_id, txid, address, amount, first_seen_at)"
    " VALUES (1, ?, 'yAddress', 100000000, ?)",
    "UPDATE floor_receivers SET received = received + 1, status = 'paid', updated_at = ?"
    " WHERE receiver_id = 1",
    "INSERT INTO floor_outbox (event_id, receiver_id, payload, status, created_at)"
    " VALUES (?, 1, ?, 'pending', ?)",
)


def _unit_params(i: int) -> tuple[tuple, tuple, tuple]:
    return (f"{i:064x}", i), (i,), (f"evt_{i:032x}", FLOOR_PAYLOAD, i)


@contextlib.contextmanager
def _sqlite_unit(path: Path) -> Iterator[Callable[[int], None]]:
    """Scratch tables in ``path`` (WAL, synchronous=NORMAL, as the daemon opens its
    database) and a function committing record unit ``i`` on them."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        for ddl in _FLOOR_TABLES:
            conn.execute(ddl.format(auto=""))
        conn.execute("INSERT INTO floor_receivers VALUES (1, 0, 'pending', 0)")

        def commit(i: int) -> None:
            conn.execute("BEGIN IMMEDIATE")
            for sql, params in zip(_FLOOR_UNIT, _unit_params(i), strict=True):
                conn.execute(sql, params)
            conn.execute("COMMIT")

        yield commit
    finally:
        conn.close()


@contextlib.contextmanager
def _mysql_unit(server: _Server) -> Iterator[Callable[[int], None]]:
    """Scratch tables on the run's server (dropped afterwards) and a function committing
    record unit ``i`` on them."""
    conn = server.conn
    conn.autocommit(False)
    units = [sql.replace("?", "%s") for sql in _FLOOR_UNIT]
    try:
        with conn.cursor() as cur:
            for ddl in _FLOOR_TABLES:
                cur.execute(ddl.format(auto="AUTO_INCREMENT"))
            cur.execute("INSERT INTO floor_receivers VALUES (1, 0, 'pending', 0)")
            conn.commit()

            def commit(i: int) -> None:
                for sql, params in zip(units, _unit_params(i), strict=True):
                    cur.execute(sql, params)
                conn.commit()

            try:
                yield commit
            finally:
                for table in ("floor_outbox", "floor_payments", "floor_receivers"):
                    cur.execute(f"DROP TABLE {table}")
    finally:
        conn.autocommit(True)


def _record_unit(
    commit: Callable[[int], None], server: _Server | None
) -> tuple[float, float, float | None]:
    """Median wall and mean CPU (this thread's, and the server's when it runs here) of
    FLOOR_REPEATS record unit commits."""
    walls = []
    server_before = server.cpu() if server is not None else None
    cpu_started = time.thread_time()
    for i in range(FLOOR_REPEATS):
        started = time.monotonic()
        commit(i)
        walls.append(time.monotonic() - started)
    cpu = (time.thread_time() - cpu_started) / FLOOR_REPEATS
    server_after = server.cpu() if server is not None else None
    server_cpu = None
    if server_before is not None and server_after is not None:
        server_cpu = (server_after - server_before) / FLOOR_REPEATS
    return median(walls) or 0.0, cpu, server_cpu


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)
