"""The figures of issue 19's table, read from ``results/*.json``: `benchmarks/run report`.

One row per figure: the median now, the floor measured in the same run where the issue
names one, the ratio to it, the goal and whether it is met. A row names its result
file, the case (by its parameters, which outlive a case's wording) and the fields it
reads; a file, case or field that is missing makes the row say "not measured" (with
what is missing) instead of dropping it, so a figure nobody measured stays visible.

Where the case carries the ratio as a field of its own (the median of per-run ratios,
each to the floor of its run) the row reads it; otherwise the ratio is the median now
over the median floor.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# A case parameter that must be present, whatever its value.
PRESENT = object()

# How a goal compares: "now" against a number; "ratio" (now / floor) against a number;
# "plus" (now - floor) against a number.
NOW, RATIO, PLUS = "now", "ratio", "plus"


@dataclass(frozen=True, slots=True)
class Goal:
    kind: str  # NOW, RATIO or PLUS
    op: str  # "<=" or ">="
    value: float

    def text(self, unit: str, floor_name: str) -> str:
        if self.kind == RATIO:
            return f"{self.op} {self.value:g}x {floor_name}"
        if self.kind == PLUS:
            return f"{self.op} {floor_name} + {_number(self.value, unit)}"
        return f"{self.op} {_number(self.value, unit)}"

    def met(self, now: float | None, floor: float | None, ratio: float | None) -> bool | None:
        if self.kind == RATIO:
            measured = ratio
        elif self.kind == PLUS:
            measured = None if now is None or floor is None else now - floor
        else:
            measured = now
        if measured is None:
            return None
        return measured <= self.value if self.op == "<=" else measured >= self.value


@dataclass(frozen=True, slots=True)
class Figure:
    """One row: ``now`` (and ``floor``) are fields of the matching case's medians,
    each a tuple of names tried in order (the first present wins)."""

    figure: str
    scenario: str
    case: dict[str, Any]  # parameters the case must have (PRESENT: any value)
    now: tuple[str, ...]
    unit: str
    goal: Goal
    floor: tuple[str, ...] = ()
    ratio: tuple[str, ...] = ()  # a ratio field of the case, preferred to now / floor
    floor_name: str = "floor"  # how the goal names the floor


def _goal_now(op: str, value: float) -> Goal:
    return Goal(NOW, op, value)


def _isolated(backend: str, spacing: int) -> dict[str, Any]:
    return {"backend": backend, "spacing_ms": spacing}


def _figures() -> tuple[Figure, ...]:
    rows: list[Figure] = []
    for spacing in (20, 100):
        apart = f"{spacing} ms apart"
        rows.append(
            Figure(
                f"CPU per isolated payment, SQLite, {apart}",
                "isolated",
                _isolated("sqlite", spacing),
                ("cpu_ms_per_payment",),
                "ms",
                _goal_now("<=", 0.5),
                floor=("record_unit_cpu_ms",),
                ratio=("cpu_to_floor",),
            )
        )
        mariadb = _isolated("mysql", spacing)
        rows += [
            Figure(
                f"CPU per isolated payment, MariaDB, {apart}: daemon",
                "isolated",
                mariadb,
                ("cpu_ms_per_payment",),
                "ms",
                _goal_now("<=", 1.0),
                floor=("record_unit_cpu_ms",),
                ratio=("cpu_to_floor",),
            ),
            Figure(
                f"CPU per isolated payment, MariaDB, {apart}: mysqld",
                "isolated",
                mariadb,
                ("mysqld_cpu_ms_per_payment",),
                "ms",
                _goal_now("<=", 0.5),
                floor=("record_unit_mysqld_cpu_ms",),
            ),
            Figure(
                f"transactions per isolated payment, MariaDB, {apart}",
                "isolated",
                mariadb,
                ("transactions_per_payment",),
                "",
                _goal_now("<=", 1),
            ),
            Figure(
                f"statements per isolated payment, MariaDB, {apart}",
                "isolated",
                mariadb,
                ("data_statements_per_payment",),
                "",
                _goal_now("<=", 5),
            ),
            Figure(
                f"fsyncs per isolated payment, MariaDB, {apart}",
                "isolated",
                mariadb,
                ("fsyncs_per_payment",),
                "",
                _goal_now("<=", 1),
            ),
        ]
    for backend, name in (("sqlite", "SQLite"), ("mysql", "MariaDB")):
        rows += [
            Figure(
                f"event -> callback p50, 200 sequential, {name}",
                "latency",
                {"backend": backend},
                ("p50_ms",),
                "ms",
                Goal(PLUS, "<=", 1.0),
                floor=("latency_floor_ms",),
            ),
            Figure(
                f"event -> callback p99, 200 sequential, {name}",
                "latency",
                {"backend": backend},
                ("p99_ms",),
                "ms",
                Goal(RATIO, "<=", 2.0),
                floor=("p50_ms",),
                ratio=("p99_to_p50",),
                floor_name="p50",
            ),
        ]
    for backend, name in (("sqlite", "SQLite"), ("mysql", "MariaDB")):
        rows.append(
            Figure(
                f"burst of 1,000, {name}",
                "record",
                {"backend": backend},
                ("payments_per_second",),
                "/s",
                Goal(RATIO, ">=", 0.8),
                floor=("floor_payments_per_second",),
                ratio=("floor_ratio",),
            )
        )
        # The issue counts the read-back in the floor: the same goal against the bare
        # loop plus each payment's read-back and callback POST done by the least code.
        rows.append(
            Figure(
                f"burst of 1,000, {name}, with its read-backs and POSTs",
                "record",
                {"backend": backend},
                ("payments_per_second",),
                "/s",
                Goal(RATIO, ">=", 0.8),
                floor=("pipeline_floor_payments_per_second",),
                ratio=("pipeline_floor_ratio",),
                floor_name="pipeline floor",
            )
        )
    rows += [
        Figure(
            "CPU per non-matching tx event",
            "ingest",
            {"pending": PRESENT},
            ("cpu_us_per_event",),
            "us",
            _goal_now("<=", 5),
            floor=("floor_cpu_us_per_event",),
            ratio=("cpu_to_floor",),
        ),
    ]
    for variant, kind, floor in (
        ("", "as_is", "cli_floor"),
        (", bytecode compiled", "compiled", "cli_floor_compiled"),
    ):
        rows.append(
            Figure(
                f"`dashpay receiver new` process, wall{variant}",
                "create",
                {"invocations": PRESENT},
                (f"cli_{kind}_ms",),
                "ms",
                # The 50 ms is 3.1x its 15.9 ms `python -c pass`: judged as that
                # ratio, since on a shared machine both walls grow with the load.
                Goal(RATIO, "<=", 3.1),
                floor=(f"{floor}_ms",),
                ratio=(f"cli_{kind}_ratio",),
                floor_name="`python -c pass`",
            )
        )
    for pending, label in ((10_000, "10k"), (100_000, "100k")):
        rows.append(
            Figure(
                f"startup CPU per pending receiver, {label} pending, SQLite",
                "bootstrap",
                {"pending": pending},
                ("cpu_us_per_receiver",),
                "us",
                _goal_now("<=", 10),
            )
        )
    rows += [
        Figure(
            "100k pending: ready",
            "bootstrap",
            {"pending": 100_000},
            ("ready_seconds",),
            "s",
            _goal_now("<=", 2),
            # The rescan cannot be quicker than the peer answering it: its CPU while
            # the daemon started (it checks every address it is asked for).
            floor=("peer_cpu_seconds",),
            floor_name="the peer's CPU",
        ),
        Figure(
            "RSS idle",
            "memory",
            {"pending": 0},
            ("rss_mb",),
            "MB",
            _goal_now("<=", 35),
            floor=("floor_rss_mb",),
            ratio=("rss_ratio",),
        ),
    ]
    for backend, name, share in (("sqlite", "SQLite", 0.5), ("mysql", "MariaDB", 0.8)):
        case = {"backend": backend, "clients": 16}
        rows += [
            Figure(
                f"concurrent creates, 16 clients, {name}",
                "create",
                case,
                ("creates_per_second",),
                "/s",
                Goal(RATIO, ">=", share),
                floor=("floor_creates_per_second",),
                ratio=("floor_ratio",),
            ),
            Figure(
                f"concurrent creates, 16 clients, {name}: addresses reused",
                "create",
                case,
                ("reused",),
                "",
                _goal_now("<=", 0),
            ),
        ]
    return tuple(rows)


FIGURES = _figures()


@dataclass(frozen=True, slots=True)
class Row:
    figure: str
    now: str
    floor: str
    ratio: str
    goal: str
    met: str


def _number(value: Any, unit: str) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"{value} {unit}".strip()
    if unit == "/s":
        return f"{value:,.0f}/s"
    if unit == "s":
        return f"{value:.2f} s"
    if unit in ("ms", "us", "MB"):
        size = abs(value)
        digits = 3 if size < 1 else 2 if size < 10 else 1 if size < 100 else 0
        return f"{value:,.{digits}f} {unit}"
    return f"{value:g}"


def _pick(values: dict[str, Any], names: tuple[str, ...]) -> tuple[float | None, str | None]:
    """The first of ``names`` that ``values`` holds as a number, and its name."""
    for name in names:
        value = values.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return value, name
    return None, None


def _matches(case: dict[str, Any], wanted: dict[str, Any]) -> bool:
    parameters = case.get("parameters")
    if not isinstance(parameters, dict):
        return False
    for key, value in wanted.items():
        if key not in parameters:
            return False
        if value is not PRESENT and parameters[key] != value:
            return False
    return True


def _load(results_dir: Path, scenario: str) -> dict[str, Any] | str:
    """The result file's data, or why there is none."""
    path = results_dir / f"{scenario}.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return f"no results/{scenario}.json"
    except (OSError, ValueError) as exc:
        return f"results/{scenario}.json unreadable: {exc}"
    if not isinstance(data, dict) or not isinstance(data.get("cases"), list):
        return f"results/{scenario}.json has no cases"
    return data


def _not_measured(figure: Figure, why: str) -> Row:
    goal = figure.goal.text(figure.unit, figure.floor_name)
    return Row(figure.figure, f"not measured ({why})", "", "", goal, "?")


def figure_row(figure: Figure, data: dict[str, Any] | str) -> Row:
    """``figure``'s row from its scenario's result data (or the reason it has none)."""
    if isinstance(data, str):
        return _not_measured(figure, data)
    case = next((c for c in data["cases"] if _matches(c, figure.case)), None)
    if case is None:
        wanted = ", ".join(
            f"{key}={'any' if value is PRESENT else value}" for key, value in figure.case.items()
        )
        return _not_measured(figure, f"no case with {wanted} in results/{figure.scenario}.json")
    if "skipped" in case:
        return _not_measured(figure, f"skipped: {case['skipped']}")
    median = case.get("median") if isinstance(case.get("median"), dict) else {}
    now, now_name = _pick(median, figure.now)
    if now is None:
        return _not_measured(figure, f"no {' / '.join(figure.now)} in {case.get('name')!r}")
    floor, floor_name = _pick(median, figure.floor)
    ratio, _ = _pick(median, figure.ratio)
    if ratio is None and floor:
        ratio = round(now / floor, 3)
    met = figure.goal.met(now, floor, ratio)
    quick = " (quick run)" if data.get("quick") else ""
    if figure.floor and floor is None:
        floor_text = f"not measured ({' / '.join(figure.floor)})"
    else:
        floor_text = "" if floor is None else _number(floor, figure.unit)
    return Row(
        figure.figure,
        _number(now, figure.unit) + quick,
        floor_text,
        "" if ratio is None else f"{ratio:.3g}x",
        figure.goal.text(figure.unit, figure.floor_name),
        {True: "yes", False: "**no**", None: "?"}[met],
    )


def figures_report(results_dir: Path, figures: tuple[Figure, ...] = FIGURES) -> str:
    """The Markdown table of issue 19's figures from the result files in ``results_dir``."""
    loaded: dict[str, dict[str, Any] | str] = {}
    lines = [
        "| figure | now | floor | ratio | goal | met? |",
        "|---|---|---|---|---|---|",
    ]
    for figure in figures:
        if figure.scenario not in loaded:
            loaded[figure.scenario] = _load(results_dir, figure.scenario)
        row = figure_row(figure, loaded[figure.scenario])
        lines.append(
            f"| {row.figure} | {row.now} | {row.floor} | {row.ratio} | {row.goal} | {row.met} |"
        )
    return "\n".join(lines)
