"""`benchmarks/run`: run scenarios, take medians, compare with targets, write results.

Each scenario module (``ingest``, ``record``, ``latency``, ``isolated``, ``create``, ``http``,
``checkout``, ``bootstrap``, ``memory``; ``cluster`` and ``takeover``, on a Galera cluster,
only when named) declares its cases (sizes, backends, the
targets of issue 8 and the original processor's figures) and measures one run of a
case; this module repeats runs, takes the median of every figure and writes
``results/<scenario>.json`` atomically (``.tmp`` then rename) with the machine's
facts. ``report`` prints the Markdown table of issue 19's figures (``figures.py``:
now, the floor of the same run, the ratio, the goal); ``report --cases`` the table of
every case against its targets, as in ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib
import json
import os
import signal
import sys
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import harness
from benchmarks.figures import figures_report

SCENARIOS = (
    "ingest",
    "record",
    "latency",
    "isolated",
    "create",
    "http",
    "checkout",
    "bootstrap",
    "backends",
    "memory",
    "cluster",
    "takeover",
)
# Run only when named: they start the Galera cluster of tests/galera-cluster (root,
# fixed ports), which the quick run of every scenario (the suite's smoke test) must not.
NAMED_ONLY = ("cluster", "takeover")
RESULTS_DIR = Path(__file__).resolve().parent / "results"
DEFAULT_RUNS = 3


@dataclass(frozen=True, slots=True)
class Options:
    runs: int
    quick: bool
    insight_url: str | None
    mysql_url: str | None  # None: MariaDB cases are skipped
    results_dir: Path


@dataclass(frozen=True, slots=True)
class Target:
    """``metric`` must be ``op`` (">=" or "<=") ``value``; ``floor`` is the minimum
    still acceptable where the issue gives one."""

    metric: str
    op: str
    value: float
    floor: float | None = None

    def met(self, measured: float | None) -> bool | None:
        if measured is None:
            return None
        return measured >= self.value if self.op == ">=" else measured <= self.value

    def as_dict(self, measured: float | None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "metric": self.metric,
            "op": self.op,
            "value": self.value,
            "measured": measured,
            "met": self.met(measured),
        }
        if self.floor is not None:
            out["floor"] = self.floor
            out["floor_met"] = None if measured is None else measured >= self.floor
        return out


@dataclass(slots=True)
class Case:
    name: str
    parameters: dict[str, Any]
    targets: list[Target] = field(default_factory=list)
    original: dict[str, Any] = field(default_factory=dict)
    needs_mysql: bool = False
    runs: int | None = None  # overrides --runs (e.g. one run for the slowest cases)


def _scenario(name: str):
    return importlib.import_module(f"benchmarks.{name}")


def run_scenario(name: str, options: Options) -> dict[str, Any]:
    module = _scenario(name)
    # A scenario may hold something for all its cases (``resources(options)``, a
    # context manager), e.g. the Galera cluster of ``cluster`` and ``takeover``.
    with getattr(module, "resources", _no_resources)(options):
        return _run_cases(name, module, options)


@contextlib.contextmanager
def _no_resources(options: Options) -> Iterator[None]:
    yield


def _run_cases(name: str, module: Any, options: Options) -> dict[str, Any]:
    started = time.time()
    result: dict[str, Any] = {
        "scenario": name,
        "description": module.DESCRIPTION,
        "generated_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": "benchmarks/run " + " ".join(sys.argv[1:]),
        "quick": options.quick,
        "insight": options.insight_url or "benchmark peer (benchmarks/peer.py), spawned",
        "machine": harness.machine_info(),
        "cases": [],
        "notes": list(getattr(module, "NOTES", [])),
    }
    for case in module.cases(options):
        print(f"== {name}: {case.name}", file=sys.stderr, flush=True)
        entry: dict[str, Any] = {
            "name": case.name,
            "parameters": case.parameters,
            "original": case.original,
            "runs": [],
        }
        if case.needs_mysql and options.mysql_url is None:
            entry["skipped"] = "no MariaDB server (start tests/mariadb-server or --mysql-url)"
            result["cases"].append(entry)
            print(f"   skipped: {entry['skipped']}", file=sys.stderr)
            continue
        count = case.runs if case.runs is not None else options.runs
        for index in range(count):
            load = harness.load_average()
            try:
                run = module.run(case, options)
            except harness.BenchError as exc:
                run = {"error": str(exc)}
            except Exception as exc:  # a broken run is reported, the others still run
                run = {"error": f"{type(exc).__name__}: {exc}", "traceback": _tb()}
            run["load_average_before"] = load
            entry["runs"].append(run)
            shown = {k: v for k, v in run.items() if k in module.SHOWN or k == "error"}
            print(f"   run {index + 1}/{count}: {shown}", file=sys.stderr, flush=True)
        good = [r for r in entry["runs"] if "error" not in r]
        entry["median"] = harness.median_of_runs(good)
        entry["targets"] = [t.as_dict(entry["median"].get(t.metric)) for t in case.targets]
        if len(good) < len(entry["runs"]):
            entry["failed_runs"] = len(entry["runs"]) - len(good)
        result["cases"].append(entry)
        print(f"   median: {_shown(entry['median'], module.SHOWN)}", file=sys.stderr, flush=True)
    if harness.MYSQL_VERSIONS:
        result["machine"]["mariadb"] = sorted(harness.MYSQL_VERSIONS)
    result["seconds"] = round(time.time() - started, 1)
    _write(options.results_dir / f"{name}.json", result)
    return result


def _tb() -> str:
    return traceback.format_exc(limit=6)


def _shown(values: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if k in keys}


def _write(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


# -- the report -----------------------------------------------------------------------------


def _fmt(value: Any, unit: str) -> str:
    if value is None:
        return "—"
    if isinstance(value, str):
        return f"{value} {unit}".strip()
    if unit == "/s":
        return f"{value:,.0f}/s"
    if unit == "ms":
        return f"{value:.1f} ms" if value < 100 else f"{value:,.0f} ms"
    if unit == "s":
        return f"{value:.2f} s"
    if unit == "MB":
        return f"{value:.1f} MB"
    if unit == "B":
        return f"{value:,.0f} B"
    return f"{value} {unit}".strip()


def report(results_dir: Path) -> str:
    """The Markdown table of the latest medians against targets and the original."""
    lines = [
        "| scenario | case | median | target | met | original |",
        "|---|---|---|---|---|---|",
    ]
    for name in SCENARIOS:
        path = results_dir / f"{name}.json"
        if not path.exists():
            lines.append(f"| {name} | (not run) | | | | |")
            continue
        data = json.loads(path.read_text())
        units = getattr(_scenario(name), "UNITS", {})
        for case in data["cases"]:
            if "skipped" in case:
                lines.append(f"| {name} | {case['name']} | skipped | | | |")
                continue
            module = _scenario(name)
            targets = case.get("targets") or [{"metric": m} for m in module.SHOWN[:1]]
            targeted = {target["metric"] for target in targets}
            extra = [
                {"metric": m} for m in getattr(module, "REPORT_EXTRA", ()) if m not in targeted
            ]
            for target in targets + [e for e in extra if e["metric"] in case["median"]]:
                metric = target["metric"]
                unit = units.get(metric, "")
                value = case["median"].get(metric)
                goal = f"{target['op']} {_fmt(target['value'], unit)}" if "op" in target else ""
                met = {True: "yes", False: "**no**", None: ""}[target.get("met")]
                original = case["original"].get(metric)
                lines.append(
                    f"| {name} | {case['name']} · {metric} | {_fmt(value, unit)} | {goal} | "
                    f"{met} | {_fmt(original, unit) if original is not None else '—'} |"
                )
    return "\n".join(lines)


def _stop_on_sigterm() -> None:
    """SIGTERM ends the run like Ctrl-C: every daemon and peer started is stopped."""

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["peer"]:
        from benchmarks.peer import main as peer_main

        return peer_main(argv[1:])
    parser = argparse.ArgumentParser(
        prog="benchmarks/run",
        description="Run dashpay's benchmarks and write benchmarks/results/<scenario>.json. "
        "`benchmarks/run peer [--port N]` serves a benchmark Insight peer instead; "
        "`benchmarks/run report` prints the figures of issue 19 (now, floor, ratio, goal) "
        "from the latest results; `report --cases` every case against its targets.",
    )
    parser.add_argument(
        "scenarios",
        nargs="*",
        metavar="scenario",
        help=f"any of {', '.join(SCENARIOS)}, or report (default: all but "
        f"{' and '.join(NAMED_ONLY)})",
    )
    parser.add_argument("--runs", type=int, default=None, help="runs per case (default 3)")
    parser.add_argument(
        "--insight-url",
        default=None,
        help="use a running peer (`benchmarks/run peer`) at this Insight URL, e.g. "
        "http://127.0.0.1:3001/insight-api, instead of spawning one",
    )
    parser.add_argument(
        "--quick", action="store_true", help="one run, tiny sizes: proves the scripts work"
    )
    parser.add_argument(
        "--mysql-url",
        default=None,
        help="MariaDB/MySQL server URL (default: $DASHPAY_TEST_MYSQL_URL, or "
        "tests/mariadb-server if it is running)",
    )
    parser.add_argument("--no-mysql", action="store_true", help="skip the MariaDB cases")
    parser.add_argument(
        "--source",
        type=Path,
        default=None,
        help="run the daemon and CLI from another dashpay checkout (to measure a change)",
    )
    parser.add_argument(
        "--results-dir", type=Path, default=RESULTS_DIR, help="where to write the JSON results"
    )
    parser.add_argument(
        "--cases",
        action="store_true",
        help="with report: every case's medians against its targets, instead of the "
        "figures of issue 19 against their floors",
    )
    args = parser.parse_args(argv)
    wanted = args.scenarios or [s for s in SCENARIOS if s not in NAMED_ONLY]
    if wanted == ["report"]:
        print(report(args.results_dir) if args.cases else figures_report(args.results_dir))
        return 0
    if args.cases:
        parser.error("--cases goes with report: benchmarks/run report --cases")
    unknown = [s for s in wanted if s not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; choose from {SCENARIOS}")
    if args.source is not None:
        try:
            harness.use_source(args.source)
        except harness.BenchError as exc:
            parser.error(str(exc))
    runs = args.runs if args.runs is not None else (1 if args.quick else DEFAULT_RUNS)
    if runs < 1:
        parser.error("--runs must be at least 1")
    options = Options(
        runs=runs,
        quick=args.quick,
        insight_url=args.insight_url,
        mysql_url=None if args.no_mysql else harness.mysql_server_url(args.mysql_url),
        results_dir=args.results_dir,
    )
    _stop_on_sigterm()
    failed = 0
    for name in wanted:
        result = run_scenario(name, options)
        failed += sum(1 for case in result["cases"] if case.get("failed_runs"))
    print(f"results in {options.results_dir}", file=sys.stderr)
    return 1 if failed else 0
