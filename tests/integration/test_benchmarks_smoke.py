"""The benchmark suite works: every scenario of `benchmarks/run --quick` runs end to end
against real daemons, the benchmark peer and (when available) MariaDB, and writes a
result file with the machine's facts, each run and the medians.

No timing is asserted here: targets live in benchmarks/results/*.json, never in tests.
What is asserted is that each scenario measured what it claims (every flood event
counted, every payment recorded, no address reused, the daemon ready).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO, cli_env, require

SCENARIOS = ("ingest", "record", "latency", "create", "http", "checkout", "bootstrap", "backends", "memory")
RUN_TIMEOUT = 300  # the quick run of every scenario takes ~1 min alone, ~3 on a busy machine


@pytest.fixture(scope="module")
def quick_results(tmp_path_factory) -> tuple[Path, bool, subprocess.CompletedProcess]:
    """`benchmarks/run --quick` once for the whole module, results in a temp dir."""
    results = tmp_path_factory.mktemp("bench-results")
    mysql_url = os.environ.get("DASHPAY_TEST_MYSQL_URL")
    if require("MYSQL") and not mysql_url:
        pytest.fail("DASHPAY_REQUIRE_MYSQL=1 but DASHPAY_TEST_MYSQL_URL is not set")
    args = ["--mysql-url", mysql_url] if mysql_url else ["--no-mysql"]
    env = cli_env()
    if mysql_url:
        env["DASHPAY_TEST_MYSQL_URL"] = mysql_url
    # A session of its own: a run that times out is killed with the daemons and peers it
    # started (killing the script alone would leave them running).
    run = subprocess.Popen(
        [str(REPO / "benchmarks" / "run"), "--quick", "--results-dir", str(results), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
        start_new_session=True,
    )
    try:
        stdout, stderr = run.communicate(timeout=RUN_TIMEOUT)
    except BaseException:
        os.killpg(run.pid, signal.SIGKILL)
        run.communicate()
        raise
    proc = subprocess.CompletedProcess(run.args, run.returncode, stdout, stderr)
    return results, bool(mysql_url), proc


def _load(results: Path, scenario: str) -> dict:
    return json.loads((results / f"{scenario}.json").read_text())


def _runs(data: dict, with_mysql: bool) -> list[tuple[str, dict]]:
    out = []
    for case in data["cases"]:
        if "skipped" in case:
            assert not with_mysql, f"{data['scenario']} {case['name']} skipped: {case['skipped']}"
            continue
        assert case["runs"], f"{data['scenario']} {case['name']} has no runs"
        out += [(case["name"], run) for run in case["runs"]]
    return out


def test_quick_run_of_every_scenario_succeeds_and_writes_one_result_file_each(quick_results):
    results, with_mysql, proc = quick_results
    assert proc.returncode == 0, proc.stderr[-4000:]
    for scenario in SCENARIOS:
        data = _load(results, scenario)
        assert data["scenario"] == scenario and data["quick"] is True
        machine = data["machine"]
        assert machine["cores"] >= 1 and machine["cpu_model"] and machine["python"]
        assert machine["packages"]["dashpay"] and machine["packages"]["trio"]
        for name, run in _runs(data, with_mysql):
            assert "error" not in run, f"{scenario} {name}: {run['error']}"
        for case in data["cases"]:
            if "skipped" not in case:
                assert case["median"], f"{scenario} {case['name']} has no median"
    assert not list(results.glob("*.tmp")), "a result file was left half-written"


def test_ingest_counts_every_flooded_event_and_rejects_none(quick_results):
    results, with_mysql, _ = quick_results
    for _, run in _runs(_load(results, "ingest"), with_mysql):
        assert run["events_counted"] == run["events"] > 0
        assert run["rejected"] == 0
        assert run["events_per_second"] > 0 and run["frame_chars"] > 200


def test_record_and_latency_measure_every_payment_to_the_outbox_or_the_callback(quick_results):
    results, with_mysql, _ = quick_results
    for scenario in ("record", "latency"):
        for name, run in _runs(_load(results, scenario), with_mysql):
            assert run["measured_to"] in ("outbox row written", "callback received"), name
            assert run["payments"] > 0
    for _, run in _runs(_load(results, "record"), with_mysql):
        assert run["payments_per_second"] > 0 and run["outbox_per_second"] > 0
        # The bare 100-per-commit record loop of the same run (the floor), and the ratio.
        assert run["floor_payments_per_second"] > 0 and run["floor_ratio"] > 0
    for _, run in _runs(_load(results, "latency"), with_mysql):
        assert 0 < run["p50_ms"] <= run["p99_ms"] <= run["max_ms"]
        # The floor of the same run: one REST round trip plus one commit.
        assert run["latency_floor_ms"] == pytest.approx(
            run["rest_round_trip_ms"] + run["commit_ms"], abs=0.002
        )
        assert run["p99_to_p50"] >= 1


def test_concurrent_creates_never_reuse_an_address(quick_results):
    results, with_mysql, _ = quick_results
    concurrent = [r for n, r in _runs(_load(results, "create"), with_mysql) if "clients" in r]
    assert concurrent
    for run in concurrent:
        assert run["reused"] == 0
        assert run["table_distinct_addresses"] == run["table_rows"] >= run["receivers"]
        # The bare insert loop of the same run (the floor), and the ratio to it.
        assert run["floor_creates_per_second"] > 0 and run["floor_ratio"] > 0
        assert run["control_alone_per_second"] > 0  # the control socket alone
    cli = [r for n, r in _runs(_load(results, "create"), with_mysql) if "invocations" in r]
    assert cli and cli[0]["cli_as_is_ms"] > 0 and cli[0]["cli_compiled_ms"] > 0
    # The floor of the same run, and the ratios to it.
    assert cli[0]["cli_floor_ms"] > 0 and cli[0]["cli_floor_compiled_ms"] > 0
    assert cli[0]["cli_as_is_ratio"] > 0 and cli[0]["cli_compiled_ratio"] > 0


def test_http_creates_and_reads_back_every_receiver_beside_the_control_socket(quick_results):
    results, with_mysql, _ = quick_results
    runs = _runs(_load(results, "http"), with_mysql)
    assert runs
    for _, run in runs:
        assert run["reused"] == 0
        assert run["table_distinct_addresses"] == run["table_rows"] >= 2 * run["receivers"] > 0
        assert run["http_creates_per_second"] > 0 and run["control_creates_per_second"] > 0
        assert run["http_to_control_ratio"] > 0
        assert 0 < run["get_p50_ms"] <= run["get_p99_ms"] and run["gets"] > 0
        # CPU per create on both sides (the daemon's and the clients'), and the floor.
        assert run["http_daemon_cpu_us_per_create"] > 0
        assert run["control_daemon_cpu_us_per_create"] > 0 and run["daemon_cpu_ratio"] > 0
        assert run["http_client_cpu_us_per_create"] > 0
        assert run["control_client_cpu_us_per_create"] > 0
        assert run["http_server_alone_cpu_us_per_request"] > 0


def test_checkout_streams_all_see_their_change_beside_the_record_bursts(quick_results):
    results, with_mysql, _ = quick_results
    runs = _runs(_load(results, "checkout"), with_mysql)
    assert runs
    for _, run in runs:
        assert run["watchers"] == run["watchers_on_one_receiver"] * 2 > 0
        assert run["watchers_saw_change"] == run["watchers"] and run["watchers_missed"] == 0
        assert run["stream_errors"] == [] and run["hub_dropped_slow"] == 0
        # One update per watched receiver, one frame per stream.
        assert run["hub_updates"] == run["payments_per_burst"]
        assert run["hub_delivered"] == run["watchers"]
        assert 0 < run["seen_p50_ms"] <= run["seen_p99_ms"] <= run["seen_max_ms"]
        for burst in ("alone", "streams_open", "streams_told"):
            assert run[f"payments_per_second_{burst}"] > 0
        assert run["record_ratio_streams_open"] > 0 and run["record_ratio_streams_told"] > 0


def test_bootstrap_reaches_ready_and_memory_is_measured(quick_results):
    results, with_mysql, _ = quick_results
    for _, run in _runs(_load(results, "bootstrap"), with_mysql):
        assert run["state"] == "ready" and run["ready_seconds"] > 0
        assert run["cpu_seconds_ready"] > 0 and "cpu_us_per_receiver" in run
    memory = _runs(_load(results, "memory"), with_mysql)
    assert all(run["rss_mb"] > 0 for _, run in memory)
    idle = [run for _, run in memory if "bytes_per_receiver" not in run]
    assert idle and all(0 < run["floor_rss_mb"] < run["rss_mb"] for run in idle)
    assert all(run["rss_ratio"] > 1 for run in idle)
    # The runtime floor imports trio and friends: above the bare interpreter, and the
    # daemon holds more than its libraries.
    assert all(
        run["floor_rss_mb"] < run["runtime_floor_rss_mb"] < run["rss_mb"] for run in idle
    )
    assert any("bytes_per_receiver" in run for _, run in memory)


def test_each_chain_backend_rescans_every_receiver_and_records_every_payment(quick_results):
    results, with_mysql, _ = quick_results
    runs = _runs(_load(results, "backends"), with_mysql)
    assert {run["backend"] for _, run in runs} == {"insight", "blockbook", "dashd"}
    for name, run in runs:
        key = "rescan_seconds" if "rescan" in name else "payments_per_second"
        assert run[key] > 0, (name, run)  # backends.py checked every row in the database


def test_report_prints_a_table_row_for_every_scenario(quick_results):
    results, _, _ = quick_results
    proc = subprocess.run(
        [str(REPO / "benchmarks" / "run"), "report", "--cases", "--results-dir", str(results)],
        capture_output=True,
        text=True,
        env=cli_env(),
        cwd=REPO,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    for scenario in SCENARIOS:
        assert f"| {scenario} |" in proc.stdout


def test_pipeline_floor_reads_back_commits_and_posts_each_payment(tmp_path):
    """isolated's least-code floor does the whole I/O of each lone payment, in order:
    the read-back from the peer, one record unit commit, one callback the receiver got."""
    from benchmarks.harness import CallbackSink, open_peer
    from benchmarks.isolated import _sqlite_unit
    from benchmarks.pipeline_floor import pipeline_floor
    from benchmarks.seed import synthetic_addresses

    sink = CallbackSink()
    committed: list[int] = []
    try:
        with open_peer(None) as peer, _sqlite_unit(tmp_path / "floor.sqlite3") as commit:

            def counted(i: int) -> None:
                commit(i)
                committed.append(i)

            address = synthetic_addresses(1)[0]
            result = pipeline_floor(peer.insight_url, sink.url, address, counted, 20, 0.001)
    finally:
        sink.close()
    assert committed == list(range(20))
    assert [c.delivery for c in sink.received] == [f"floor-{i}" for i in range(20)]
    assert result["cpu_ms"] > 0 and result["wall_ms"] > 0
