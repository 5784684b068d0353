"""create: `receiver.create` over the control socket from 16 concurrent clients, and
`dashpay receiver new` as a process.

The clients are threads of this process, each with its own connection, released
together; the rate is receivers created over the time until the last answer. Every
answer's address and HD index, and the receivers table afterwards, must show zero
reuse (the original processor hands one address to two concurrent requests).

`dashpay receiver new` is timed as a user runs it: a new process each time, wall time
from spawn to exit. This environment sets PYTHONDONTWRITEBYTECODE=1, so dashpay's own
modules (installed editable) are compiled on every start; the "compiled" variant
first writes bytecode with `python -m compileall` into a private PYTHONPYCACHEPREFIX
(plus one run that writes the dependencies' bytecode there), as a packaged install
has it, without touching the source tree. Before each invocation the bare interpreter
start (`python -c pass`, the same environment) is timed too: the floor of issue 19,
measured in the same run, and the ratio to it.

The creates' floor (issue 19), measured in the same run against the same database
(server, schema and table) after the daemon's creates: a bare loop in this process
that, ``FLOOR_PER_COMMIT`` receivers per transaction, locks the wallet's HD counter,
inserts the receivers (the daemon's columns, addresses made beforehand) and moves the
counter past them, then commits; as many receivers as the daemon made, under a wallet
of its own. ``floor_creates_per_second`` inserts one row per statement, as issue 19's
floor did (20,026 / 2,294 per s: on MariaDB a round trip per row); ``floor_ratio`` is
the daemon's rate over it, the figure the goal names. ``floor_multirow_*`` is the
tighter floor of one multi-row INSERT per commit (what the daemon sends). Last, the
control socket alone (``benchmarks/control_floor.py``: the daemon's control server with
a handler answering a fixed receiver view at once), driven like the creates: its rate
and CPU per request are what the transport costs, of the daemon's CPU per create.
"""

from __future__ import annotations

import contextlib
import secrets
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from benchmarks import harness
from benchmarks.harness import (
    PYTHON,
    BenchError,
    FloorConnection,
    child_env,
    floor_server,
    median,
    proc_cpu_seconds,
    query_one,
)
from benchmarks.runner import Case, Options, Target
from benchmarks.seed import synthetic_addresses
from benchmarks.stack import Stack, daemon_stack
from dashpay.net.control_client import ControlClient
from dashpay.repository.schema import NEW_RECEIVER_FIELDS

DESCRIPTION = "receiver.create with 16 concurrent clients; `dashpay receiver new` wall time"
SHOWN = (
    "creates_per_second", "floor_creates_per_second", "floor_ratio", "daemon_cpu_us_per_create",
    "control_alone_cpu_us_per_request", "reused",
    "cli_as_is_ms", "cli_compiled_ms", "cli_floor_ms", "cli_as_is_ratio", "cli_compiled_ratio",
)  # fmt: skip
UNITS = {
    "creates_per_second": "/s", "floor_creates_per_second": "/s", "daemon_cpu_us_per_create": "us",
    "floor_cpu_us_per_create": "us", "control_alone_per_second": "/s",
    "control_alone_cpu_us_per_request": "us",
    "cli_as_is_ms": "ms",
    "cli_compiled_ms": "ms", "cli_floor_ms": "ms", "cli_floor_compiled_ms": "ms",
}  # fmt: skip
# The CLI's floor, measured in the same run: the bare interpreter's start.
REPORT_EXTRA = (
    "cli_floor_ms", "cli_floor_compiled_ms", "cli_as_is_ratio", "floor_creates_per_second",
)  # fmt: skip
# Issue 19: `receiver new` <= 50 ms where `python -c pass` takes 15.9 ms: <= 3.1x the floor.
CLI_GOAL_MS = 50
CLI_GOAL_RATIO = 3.1
# Issue 19: concurrent creates >= 0.5 (SQLite) / 0.8 (MariaDB) of the floor.
FLOOR_GOAL = {"sqlite": 0.5, "mysql": 0.8}
FLOOR_PER_COMMIT = 100
ORIGINAL = {"creates_per_second": 108, "reused": "yes, under concurrency"}
AMOUNT = "0.1"
CLI_TIMEOUT = 60.0


def cases(options: Options) -> list[Case]:
    if options.quick:
        small = {"clients": 4, "receivers": 32}
        return [
            Case("sqlite", {"backend": "sqlite", **small}),
            Case("mariadb", {"backend": "mysql", **small}, needs_mysql=True),
            Case("cli", {"backend": "sqlite", "invocations": 2}),
        ]
    zero_reuse = Target("reused", "<=", 0)
    return [
        Case(
            "sqlite, 16 clients",
            {"backend": "sqlite", "clients": 16, "receivers": 4_000},
            [
                Target("creates_per_second", ">=", 2_000),
                Target("floor_ratio", ">=", FLOOR_GOAL["sqlite"]),
                zero_reuse,
            ],
            ORIGINAL,
        ),
        Case(
            "mariadb, 16 clients",
            {"backend": "mysql", "clients": 16, "receivers": 2_000},
            [
                Target("creates_per_second", ">=", 600),
                Target("floor_ratio", ">=", FLOOR_GOAL["mysql"]),
                zero_reuse,
            ],
            ORIGINAL,
            needs_mysql=True,
        ),
        Case(
            "dashpay receiver new (process)",
            {"backend": "sqlite", "invocations": 20},
            [
                Target("cli_compiled_ms", "<=", CLI_GOAL_MS),
                Target("cli_compiled_ratio", "<=", CLI_GOAL_RATIO),
                Target("cli_as_is_ms", "<=", CLI_GOAL_MS),
            ],
        ),
    ]


def run(case: Case, options: Options) -> dict[str, Any]:
    if "invocations" in case.parameters:
        return _run_cli(case, options)
    return _run_concurrent(case, options)


Call = Callable[[], Any]


def in_parallel(
    clients: int, per_client: int, connect: Callable[[int], AbstractContextManager[Call]]
) -> tuple[list[Any], list[float], float]:
    """``clients`` threads, each connected (``connect(index)`` gives a call function on
    its own connection) before they are released together, each making ``per_client``
    calls: (every answer, every call's seconds, seconds until the last answer)."""
    barrier = threading.Barrier(clients + 1)
    answers: list[list[Any]] = [[] for _ in range(clients)]
    times: list[list[float]] = [[] for _ in range(clients)]
    errors: list[str] = []
    ended: list[float] = []

    def client(index: int) -> None:
        try:
            session = connect(index)
            call = session.__enter__()
        except Exception as exc:
            errors.append(f"connect: {type(exc).__name__}: {exc}")
            barrier.abort()
            return
        try:
            barrier.wait()
            for _ in range(per_client):
                began = time.perf_counter()
                answers[index].append(call())
                times[index].append(time.perf_counter() - began)
        except Exception as exc:  # reported below, the run is invalid
            errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            ended.append(time.monotonic())
            session.__exit__(None, None, None)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    with contextlib.suppress(threading.BrokenBarrierError):
        barrier.wait()
    started = time.monotonic()
    for thread in threads:
        thread.join()
    if errors:
        raise BenchError(f"{len(errors)} calls failed, first: {errors[0]}")
    flat = [answer for per in answers for answer in per]
    return flat, [t for per in times for t in per], max(ended) - started


@contextlib.contextmanager
def control_session(socket: Path, method: str, params: dict[str, Any]) -> Iterator[Call]:
    """One control-socket connection calling ``method`` with ``params``."""
    with ControlClient(socket, timeout=60) as control:
        control.call("status")  # connected before the start signal
        yield lambda: control.call(method, params)


def control_creates(stack: Stack, clients: int, total: int) -> dict[str, Any]:
    """``total`` receiver.create calls from ``clients`` control connections, warmed up
    first: the figures of one measurement, and the answers under ``"answers"``."""
    for _ in range(clients):  # warm-up: connections, caches, the first transactions
        stack.daemon.call("receiver.create", {"amount": AMOUNT})
    cpu_before = proc_cpu_seconds(stack.daemon.pid)
    created, _, elapsed = in_parallel(
        clients,
        total // clients,
        lambda _: control_session(stack.daemon.socket, "receiver.create", {"amount": AMOUNT}),
    )
    cpu_after = proc_cpu_seconds(stack.daemon.pid)
    cpu = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
    return {"answers": created, "seconds": elapsed, "rate": len(created) / elapsed, "cpu": cpu}


def reuse(stack: Stack, created: list[dict[str, Any]]) -> dict[str, Any]:
    """Addresses or HD indexes given twice, in the answers and in the receivers table."""
    rows, addresses, indexes = query_one(
        stack.database_url,
        "SELECT COUNT(*), COUNT(DISTINCT address), COUNT(DISTINCT hd_index) FROM receivers",
    )
    reused_addresses = len(created) - len({a["address"] for a in created})
    reused_indexes = len(created) - len({a["hd_index"] for a in created})
    return {
        "reused": reused_addresses + reused_indexes + (rows - addresses) + (rows - indexes),
        "reused_addresses_in_answers": reused_addresses,
        "reused_indexes_in_answers": reused_indexes,
        "table_rows": rows,
        "table_distinct_addresses": addresses,
    }


def _run_concurrent(case: Case, options: Options) -> dict[str, Any]:
    clients, total = case.parameters["clients"], case.parameters["receivers"]
    with daemon_stack(
        case.parameters["backend"], 0, mysql_url=options.mysql_url, insight_url=options.insight_url
    ) as stack:
        measured = control_creates(stack, clients, total)
        reused = reuse(stack, measured["answers"])
        made = len(measured["answers"])
        floor, floor_cpu = floor_rate(stack.database_url, made, multirow=False)
        floor_multirow, _ = floor_rate(stack.database_url, made, multirow=True)
        alone = control_alone(stack.directory / "floor.sock", clients, total)
    return {
        "receivers": len(measured["answers"]),
        "clients": clients,
        "seconds": round(measured["seconds"], 4),
        "creates_per_second": round(measured["rate"], 1),
        "floor_creates_per_second": round(floor, 1),
        "floor_ratio": round(measured["rate"] / floor, 3),
        "floor_multirow_creates_per_second": round(floor_multirow, 1),
        "floor_multirow_ratio": round(measured["rate"] / floor_multirow, 3),
        # The daemon's CPU (user + system, /proc) per create: steadier than the rate on
        # a shared machine, where the rate follows the CPU share the daemon gets.
        "daemon_cpu_us_per_create": None
        if measured["cpu"] is None
        else round(measured["cpu"] / made * 1e6, 1),
        # The floor loop's own CPU per receiver (on SQLite all of it; on MariaDB the
        # client side only).
        "floor_cpu_us_per_create": round(floor_cpu * 1e6, 1),
        # The control socket alone (benchmarks/control_floor.py), driven the same way:
        # what the transport costs of the daemon's CPU per create.
        "control_alone_per_second": round(alone["rate"], 1),
        "control_alone_cpu_us_per_request": alone["cpu_us"],
        **reused,
    }


def control_alone(socket: Path, clients: int, total: int) -> dict[str, Any]:
    """``benchmarks/control_floor.py`` at ``socket`` driven like the creates: its rate
    and its CPU per request."""
    # This tree's control server, also when the daemon runs from --source: one
    # reference for both sides of a comparison.
    env = child_env({"PYTHONPATH": str(harness.REPO)})
    with floor_server("benchmarks.control_floor", str(socket), env=env) as (line, pid):
        if line != "ready":
            raise BenchError(f"benchmarks.control_floor did not start (printed {line!r})")
        before = proc_cpu_seconds(pid)
        answers, _, elapsed = in_parallel(
            clients,
            total // clients,
            lambda _: control_session(socket, "receiver.create", {"amount": AMOUNT}),
        )
        after = proc_cpu_seconds(pid)
    cpu = None if before is None or after is None else (after - before) / len(answers)
    return {"rate": len(answers) / elapsed, "cpu_us": None if cpu is None else round(cpu * 1e6, 1)}


_FLOOR_COLUMNS = ("hd_index", "address", "status", "updated_at", *NEW_RECEIVER_FIELDS)


def floor_rate(database_url: str, count: int, *, multirow: bool) -> tuple[float, float]:
    """Receivers per second of the bare create loop (see the module docstring) writing
    ``count`` receivers into the benchmark's database under a wallet of its own: one
    INSERT per receiver, or with ``multirow`` one INSERT per commit. Also the loop's
    CPU seconds per receiver (this thread's)."""
    wallet = "floor" + secrets.token_hex(6)
    addresses = synthetic_addresses(count, seed=secrets.randbits(32))
    now = time.time_ns() // 1_000_000
    fixed = {"wallet_id": wallet, "chain": 0, "amount_duffs": 10_000_000, "status": "pending"}
    fixed |= {"created_at": now, "updated_at": now}
    rows = [
        tuple({**fixed, "hd_index": index, "address": address}.get(name) for name in _FLOOR_COLUMNS)
        for index, address in enumerate(addresses)
    ]
    marks = "(" + ", ".join("?" * len(_FLOOR_COLUMNS)) + ")"
    insert = f"INSERT INTO receivers ({', '.join(_FLOOR_COLUMNS)}) VALUES "
    counter = "SELECT next_index FROM hd_counters WHERE wallet_id = ? AND chain = 0"
    bump = "UPDATE hd_counters SET next_index = ? WHERE wallet_id = ? AND chain = 0"
    db = FloorConnection(database_url)
    execute, begin = db.execute, db.begin
    lock = counter if db.sqlite else counter + " FOR UPDATE"
    try:
        execute("INSERT INTO hd_counters (wallet_id, chain, next_index) VALUES (?, 0, 0)", [wallet])
        started, cpu_started = time.perf_counter(), time.thread_time()
        for start in range(0, count, FLOOR_PER_COMMIT):
            chunk = rows[start : start + FLOOR_PER_COMMIT]
            execute(begin)
            first = int(execute(lock, (wallet,)).fetchone()[0])
            if multirow:
                execute(insert + ", ".join([marks] * len(chunk)), [v for r in chunk for v in r])
            else:
                for values in chunk:
                    execute(insert + marks, values)
            execute(bump, (first + len(chunk), wallet))
            execute("COMMIT")
        elapsed, cpu = time.perf_counter() - started, time.thread_time() - cpu_started
    finally:
        db.close()
    return count / elapsed, cpu / count


def _cli_command(config: Path) -> list[str]:
    script = Path(PYTHON).parent / "dashpay"
    head = [str(script)] if script.exists() else [PYTHON, "-m", "dashpay"]
    return [*head, "--config", str(config), "receiver", "new", "--amount", AMOUNT, "--json"]


def _time_cli(
    command: list[str], env: dict[str, str], count: int, floor: list[float] | None = None
) -> list[float]:
    """``count`` wall times of ``command``; with ``floor``, a bare interpreter start
    (``python -c pass``, same environment) is timed before each, into ``floor``."""
    times = []
    for _ in range(count):
        if floor is not None:
            started = time.perf_counter()
            subprocess.run([PYTHON, "-c", "pass"], env=env, check=True, timeout=CLI_TIMEOUT)
            floor.append(time.perf_counter() - started)
        started = time.perf_counter()
        proc = subprocess.run(
            command, capture_output=True, env=env, cwd=harness.SOURCE, timeout=CLI_TIMEOUT
        )
        times.append(time.perf_counter() - started)
        if proc.returncode != 0:
            raise BenchError(f"dashpay receiver new failed: {proc.stderr.decode()[-500:]}")
    return times


def _run_cli(case: Case, options: Options) -> dict[str, Any]:
    count = case.parameters["invocations"]
    with (
        daemon_stack("sqlite", 0, mysql_url=None, insight_url=options.insight_url) as stack,
        tempfile.TemporaryDirectory(prefix="dpb-pyc-") as prefix,
    ):
        command = _cli_command(stack.config)
        floor: list[float] = []
        as_is = _time_cli(command, child_env(), count, floor)
        writing = child_env({"PYTHONPYCACHEPREFIX": prefix})
        writing.pop("PYTHONDONTWRITEBYTECODE", None)
        subprocess.run(
            [PYTHON, "-m", "compileall", "-q", str(harness.SOURCE / "dashpay")],
            env=writing,
            check=True,
            capture_output=True,
            timeout=CLI_TIMEOUT,
        )
        _time_cli(command, writing, 1)  # writes the dependencies' bytecode into the prefix
        reading = child_env({"PYTHONPYCACHEPREFIX": prefix, "PYTHONDONTWRITEBYTECODE": "1"})
        floor_compiled: list[float] = []
        compiled = _time_cli(command, reading, count, floor_compiled)
    tree_has_bytecode = any((harness.SOURCE / "dashpay").glob("**/__pycache__/*.pyc"))
    return {
        "invocations": count,
        "cli_as_is_ms": round(median(as_is) * 1000, 1),
        "cli_compiled_ms": round(median(compiled) * 1000, 1),
        "cli_floor_ms": round(median(floor) * 1000, 1),
        "cli_floor_compiled_ms": round(median(floor_compiled) * 1000, 1),
        "cli_as_is_ratio": round(median(as_is) / median(floor), 2),
        "cli_compiled_ratio": round(median(compiled) / median(floor_compiled), 2),
        "cli_as_is_min_ms": round(min(as_is) * 1000, 1),
        "cli_compiled_min_ms": round(min(compiled) * 1000, 1),
        "pythondontwritebytecode": child_env().get("PYTHONDONTWRITEBYTECODE"),
        "source_tree_had_bytecode": tree_has_bytecode,
    }
