"""The CLI's fast path (cli/fast.py) against the full Typer app (cli/app.py), through
real subprocesses on one real daemon: the same stdout, stderr and exit code for every
command line, whether the fast path runs it or hands it to the app; and the commands
it runs import neither typer nor the config schema."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO, CliResult, cli_env

# The app as `python -m dashpay` runs it, under the name its usage messages show.
FULL_APP = "from dashpay.cli.app import app; app(prog_name='python -m dashpay')"

# Command lines the fast path runs itself (a successful call) ...
FAST = [
    ("receiver", "new", "--amount", "0.25", "--idempotency-key", "fast-1", "--json"),
    ("receiver", "new", "--amount=0.25", "--idempotency-key", "fast-1", "-q"),
    ("receiver", "new", "--idempotency-key", "fast-1", "--amount", "0.25"),
    ("receiver", "show", "1"),
    ("receiver", "show", "1", "--json"),
    ("receiver", "list", "--limit", "2"),
    ("callbacks", "list", "--json"),
]
# ... and ones that fail after the call or go to the app before it.
OTHERS = [
    ("receiver", "new", "--amount", "abc"),  # the table's parser, exit 2
    ("receiver", "new", "--amount", "abc", "--json"),
    ("receiver", "show", "999999"),  # the daemon's not_found
    ("receiver", "show", "999999", "--json"),
    ("receiver", "show", "x"),  # not an integer: Typer's usage error
    ("receiver", "new"),  # --amount missing
    ("receiver", "list", "--limit", "1", "--limit", "2"),  # the app takes the last
    ("receiver", "new", "--amount", "1", "-q", "--json"),
    ("receiver", "new", "--help"),
    ("receiver", "new", "--amount", "1", "--bogus"),
    ("receiver", "list", "--limit", "0"),
    ("callbacks", "show", "nope"),
    ("--socket", "/nonexistent/dashpay.sock", "receiver", "show", "1"),
    ("--socket", "/nonexistent/dashpay.sock", "receiver", "new", "--amount", "x"),
    ("--version",),
]


def _full(daemon, *args: str) -> CliResult:
    proc = subprocess.run(
        [sys.executable, "-c", FULL_APP, "--config", str(daemon.config), *args],
        capture_output=True, text=True, env=cli_env(daemon.env), cwd=REPO, timeout=30,
    )  # fmt: skip
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture(scope="module")
def first_receiver(shared_daemon) -> None:
    """Receiver 1 exists and "fast-1" names it, before any comparison."""
    result = _full(
        shared_daemon, "receiver", "new", "--amount", "0.25", "--idempotency-key", "fast-1"
    )
    assert result.code == 0, result.stderr


@pytest.mark.parametrize("args", FAST + OTHERS, ids=" ".join)
def test_fast_path_prints_what_the_app_prints(shared_daemon, first_receiver, args) -> None:
    full = _full(shared_daemon, *args)
    fast = shared_daemon.cli(*args)
    assert (fast.code, fast.stdout, fast.stderr) == (full.code, full.stdout, full.stderr)


def test_status_exits_as_with_the_app(shared_daemon) -> None:
    """Exit 1: the daemon answers but is not ready (no Insight); the uptime differs."""
    full = _full(shared_daemon, "status", "--json")
    fast = shared_daemon.cli("status", "--json")
    assert fast.code == full.code == 1
    assert fast.stdout.splitlines()[:3] == full.stdout.splitlines()[:3]


@pytest.mark.parametrize("args", [*FAST, ("status", "--json")], ids=" ".join)
def test_fast_path_imports_no_typer_nor_config_schema(shared_daemon, first_receiver, args) -> None:
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "dashpay", "--config",
         str(shared_daemon.config), *args],
        capture_output=True, text=True, env=cli_env(shared_daemon.env), cwd=REPO, timeout=30,
    )  # fmt: skip
    assert proc.returncode in (0, 1), proc.stderr
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if "|" in line}
    assert "dashpay.cli.fast" in imported
    assert not {"typer", "click", "dashpay.config.keys", "dashpay.api.commands"} & imported
