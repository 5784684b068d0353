"""`benchmarks/run report`: issue 19's figures from result files, over small samples."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import runner
from benchmarks.figures import FIGURES, PLUS, RATIO, Figure, Goal, figure_row, figures_report

CREATES = Figure(
    "creates",
    "create",
    {"backend": "sqlite", "clients": 16},
    ("creates_per_second",),
    "/s",
    Goal(RATIO, ">=", 0.5),
    floor=("floor_creates_per_second",),
    ratio=("floor_ratio",),
)


def _case(parameters: dict, median: dict, **extra) -> dict:
    return {"name": "a case", "parameters": parameters, "median": median, **extra}


def _results(cases: list[dict], *, quick: bool = False) -> dict:
    return {"scenario": "create", "quick": quick, "cases": cases}


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def test_a_row_shows_now_floor_ratio_goal_and_met():
    data = _results(
        [
            _case({"backend": "mysql", "clients": 16}, {"creates_per_second": 1}),
            _case(
                {"backend": "sqlite", "clients": 16, "receivers": 4000},
                {
                    "creates_per_second": 3000,
                    "floor_creates_per_second": 20000,
                    "floor_ratio": 0.15,
                },
            ),
        ]
    )
    row = figure_row(CREATES, data)
    assert (row.now, row.floor, row.ratio) == ("3,000/s", "20,000/s", "0.15x")
    assert (row.goal, row.met) == (">= 0.5x floor", "**no**")


def test_the_ratio_is_now_over_floor_when_the_case_has_no_ratio_field():
    data = _results(
        [
            _case(
                {"backend": "sqlite", "clients": 16},
                {"creates_per_second": 12000, "floor_creates_per_second": 20000},
            )
        ]
    )
    row = figure_row(CREATES, data)
    assert (row.ratio, row.met) == ("0.6x", "yes")


def test_a_missing_floor_is_not_measured_and_the_goal_undecided():
    data = _results([_case({"backend": "sqlite", "clients": 16}, {"creates_per_second": 2723})])
    row = figure_row(CREATES, data)
    assert row.now == "2,723/s"
    assert row.floor == "not measured (floor_creates_per_second)"
    assert (row.ratio, row.met) == ("", "?")


def test_a_missing_file_case_field_or_skipped_case_says_not_measured():
    assert figure_row(CREATES, "no results/create.json").now == (
        "not measured (no results/create.json)"
    )
    other = _results([_case({"backend": "mysql", "clients": 16}, {"creates_per_second": 1})])
    assert figure_row(CREATES, other).now == (
        "not measured (no case with backend=sqlite, clients=16 in results/create.json)"
    )
    renamed = _results([_case({"backend": "sqlite", "clients": 16}, {"rate": 1})])
    assert figure_row(CREATES, renamed).now == "not measured (no creates_per_second in 'a case')"
    skipped = _results(
        [
            {
                "name": "x",
                "parameters": {"backend": "sqlite", "clients": 16},
                "skipped": "no MariaDB server",
            }
        ]
    )
    row = figure_row(CREATES, skipped)
    assert row.now == "not measured (skipped: no MariaDB server)"
    assert row.met == "?"


def test_a_floor_plus_goal_compares_the_difference():
    latency = Figure(
        "p50",
        "latency",
        {"backend": "sqlite"},
        ("p50_ms",),
        "ms",
        Goal(PLUS, "<=", 1.0),
        floor=("latency_floor_ms",),
    )
    near = _results([_case({"backend": "sqlite"}, {"p50_ms": 2.1, "latency_floor_ms": 1.2})])
    far = _results([_case({"backend": "sqlite"}, {"p50_ms": 2.3, "latency_floor_ms": 1.2})])
    assert figure_row(latency, near).met == "yes"
    assert figure_row(latency, far).met == "**no**"
    assert figure_row(latency, far).goal == "<= floor + 1.00 ms"


def test_a_quick_run_is_marked():
    data = _results(
        [_case({"backend": "sqlite", "clients": 4}, {"creates_per_second": 9})], quick=True
    )
    quick = Figure(
        "q", "create", {"backend": "sqlite"}, ("creates_per_second",), "/s", Goal("now", ">=", 1)
    )
    assert figure_row(quick, data).now == "9/s (quick run)"


def test_the_report_has_a_row_for_every_figure_even_with_no_results(tmp_path: Path):
    lines = figures_report(tmp_path).splitlines()
    assert _cells(lines[0]) == ["figure", "now", "floor", "ratio", "goal", "met?"]
    rows = [_cells(line) for line in lines[2:]]
    assert [row[0] for row in rows] == [figure.figure for figure in FIGURES]
    assert all(row[1].startswith("not measured (no results/") for row in rows)


def test_benchmarks_run_report_prints_the_figures_from_the_result_files(tmp_path: Path, capsys):
    median = {
        "creates_per_second": 1500.0,
        "floor_creates_per_second": 15000.0,
        "floor_ratio": 0.1,
        "reused": 0,
    }
    cases = [_case({"backend": "sqlite", "clients": 16, "receivers": 4000}, median)]
    (tmp_path / "create.json").write_text(json.dumps(_results(cases)))
    (tmp_path / "memory.json").write_text("{not json")
    assert runner.main(["report", "--results-dir", str(tmp_path)]) == 0
    rows = {_cells(line)[0]: _cells(line) for line in capsys.readouterr().out.splitlines()[2:]}
    assert rows["concurrent creates, 16 clients, SQLite"][1:] == [
        "1,500/s",
        "15,000/s",
        "0.1x",
        ">= 0.5x floor",
        "**no**",
    ]
    assert rows["concurrent creates, 16 clients, SQLite: addresses reused"][-1] == "yes"
    assert rows["RSS idle"][1].startswith("not measured (results/memory.json unreadable")
    assert rows["concurrent creates, 16 clients, MariaDB"][1].startswith("not measured (no case")
