"""memory: resident memory idle, and per pending receiver.

Idle: a ready daemon with no receivers, connected to the peer. Per receiver: two
daemons on the same code, one with no receivers and one with N pending, both pointed at
a closed Insight port so no rescan runs (its buffers would be counted as receivers);
once `status` shows the N receivers watched, (RSS(N) - RSS(0)) / N. RSS is VmRSS from
/proc after a short settle; the peak (VmHWM) is reported too: loading the table must
not need much more memory than the table itself. The floor, in the same run: the RSS of
the same interpreter started bare (`python -c`), and the idle daemon's ratio to it;
and the runtime floor, the same interpreter having imported only the libraries every
daemon runs on (trio, which imports ssl at its own import, sqlite3, orjson, decimal),
``runtime_floor_rss_mb``, with what the daemon holds over it.
Idle is measured twice: as is (this environment sets PYTHONDONTWRITEBYTECODE=1 and the
tree has no bytecode, so dashpay's modules are compiled at start) and compiled
(``rss_mb_compiled``: bytecode in a private PYTHONPYCACHEPREFIX, as a packaged install).
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import PYTHON, BenchError, bytecode_prefix, child_env
from benchmarks.runner import Case, Options, Target
from benchmarks.stack import daemon_stack

DESCRIPTION = "RSS idle, and RSS per pending receiver"
SHOWN = (
    "rss_mb",
    "rss_mb_compiled",
    "bytes_per_receiver",
    "peak_mb",
    "floor_rss_mb",
    "rss_ratio",
)
UNITS = {
    "rss_mb": "MB",
    "rss_mb_compiled": "MB",
    "bytes_per_receiver": "B",
    "peak_mb": "MB",
    "floor_rss_mb": "MB",
    "runtime_floor_rss_mb": "MB",
    "rss_over_runtime_floor_mb": "MB",
}
REPORT_EXTRA = ("floor_rss_mb", "runtime_floor_rss_mb", "rss_over_runtime_floor_mb")
# The libraries every daemon runs on, whatever it is configured for: trio (which
# imports ssl, so OpenSSL, at its own import), sqlite3, orjson and decimal.
RUNTIME_IMPORTS = ("trio", "sqlite3", "orjson", "decimal")
# Issue 19: idle <= 35 MB where the bare interpreter takes 8.7 MB: <= 4.0x the floor.
IDLE_GOAL_MB = 35
IDLE_GOAL_RATIO = 4.0
SETTLE_SECONDS = 1.0
WATCH_TIMEOUT = 600.0


def cases(options: Options) -> list[Case]:
    if options.quick:
        return [Case("idle", {"pending": 0}), Case("2k pending", {"pending": 2_000})]
    return [
        Case(
            "idle",
            {"pending": 0},
            [
                Target("rss_mb", "<=", IDLE_GOAL_MB),
                Target("rss_ratio", "<=", IDLE_GOAL_RATIO),
                Target("rss_mb_compiled", "<=", IDLE_GOAL_MB),
            ],
            {"rss_mb": 114},
        ),
        Case(
            "1M pending",
            {"pending": 1_000_000},
            [Target("bytes_per_receiver", "<=", 400)],
        ),
    ]


def run(case: Case, options: Options) -> dict[str, Any]:
    pending = case.parameters["pending"]
    if pending == 0:
        rss, peak = _idle(options, None)
        with bytecode_prefix() as (writing, reading):
            _idle(options, writing)  # writes the bytecode of every module the daemon loads
            compiled, _ = _idle(options, reading)
        floor = _interpreter_rss()
        runtime = _interpreter_rss(RUNTIME_IMPORTS)
        return {
            "rss_mb": _mb(rss),
            "peak_mb": _mb(peak),
            "rss_mb_compiled": _mb(compiled),
            "floor_rss_mb": _mb(floor),
            "rss_ratio": round(rss / floor, 2),
            "rss_ratio_compiled": round(compiled / floor, 2),
            "runtime_floor_rss_mb": _mb(runtime),
            "rss_over_runtime_floor_mb": _mb(rss - runtime),
        }
    base_rss, _ = _offline(0, options)
    rss, peak = _offline(pending, options)
    return {
        "pending": pending,
        "rss_mb": _mb(rss),
        "peak_mb": _mb(peak),
        "baseline_rss_mb": _mb(base_rss),
        "bytes_per_receiver": round((rss - base_rss) / pending, 1),
    }


def _idle(options: Options, env: dict[str, str] | None) -> tuple[int, int]:
    """RSS and peak of a ready daemon with no receivers, connected to the peer."""
    with daemon_stack(
        "sqlite", 0, mysql_url=None, insight_url=options.insight_url, env=env
    ) as stack:
        time.sleep(SETTLE_SECONDS)
        return _rss(stack.daemon.pid)


def _offline(pending: int, options: Options) -> tuple[int, int]:
    """RSS and peak of a daemon watching ``pending`` receivers, Insight unreachable."""
    with daemon_stack(
        "sqlite", pending, mysql_url=None, insight_url=None, with_insight=False
    ) as stack:
        deadline = time.monotonic() + WATCH_TIMEOUT
        while (stack.daemon.status().get("engine") or {}).get("watched") != pending:
            if time.monotonic() > deadline:
                raise BenchError(f"the daemon did not load {pending} receivers in time")
            time.sleep(0.2)
        time.sleep(SETTLE_SECONDS)
        return _rss(stack.daemon.pid)


def _rss(pid: int) -> tuple[int, int]:
    values = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                values[name] = int(rest.split()[0]) * 1024
    if "VmRSS" not in values:
        raise BenchError(f"cannot read the memory of process {pid}")
    return values["VmRSS"], values.get("VmHWM", values["VmRSS"])


def _interpreter_rss(imports: tuple[str, ...] = ()) -> int:
    """The floor: RSS of the daemon's interpreter started bare (same environment), or
    having imported only ``imports``."""
    code = "".join(f"import {name}; " for name in imports)
    code += "print(open('/proc/self/status').read())"
    proc = subprocess.run(
        [PYTHON, "-c", code], capture_output=True, text=True, env=child_env(), check=True
    )
    for line in proc.stdout.splitlines():
        name, _, rest = line.partition(":")
        if name == "VmRSS":
            return int(rest.split()[0]) * 1024
    raise BenchError("cannot read the bare interpreter's memory")


def _mb(value: int) -> float:
    return round(value / 1e6, 1)
