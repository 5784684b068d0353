"""The command line's input rules and exit codes, through real subprocesses: amounts
in plain decimal notation only, with the typed text echoed. One daemon for the module
(SQLite: nothing here depends on the backend)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from dashpay.net.control_client import ControlClient
from dashpay.wire.jsonrpc import RemoteError
from tests.conftest import DaemonProcess, run_cli, start_daemon, write_config

# What Python's Decimal takes but no one types as an amount: each is refused, and the
# message quotes it as typed.
NOT_PLAIN = ["1_000", "1e2", "1E+9", "inf", "-Infinity", "nan", "0x10", "1,5", "1 000", "١"]


@pytest.fixture(scope="module")
def daemon() -> Iterator[DaemonProcess]:
    directory = Path(tempfile.mkdtemp(prefix="dp-", dir="/tmp"))
    config = write_config(directory, f"sqlite:///{directory / 'dashpay.sqlite3'}")
    proc = start_daemon(config, ready=False)
    yield proc
    proc.stop()
    shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.parametrize("typed", NOT_PLAIN)
def test_amounts_not_in_plain_decimal_notation_are_refused_as_typed(daemon, typed):
    for currency in ("DASH", "USD"):
        result = daemon.cli("receiver", "new", "--amount", typed, "--currency", currency)
        assert result.code == 2, (typed, result.stdout, result.stderr)
        assert repr(typed) in result.stderr and "plain decimal" in result.stderr
        with ControlClient(daemon.socket) as client, pytest.raises(RemoteError) as info:
            client.call("receiver.create", {"amount": typed, "currency": currency})
        assert info.value.kind == "invalid_params"
        assert repr(typed) in info.value.message


def test_amount_messages_quote_the_text_as_typed(daemon):
    too_much = daemon.cli("receiver", "new", "--amount", "21000000.5")
    assert too_much.code == 2 and "'21000000.5' is more than 21,000,000" in too_much.stderr
    decimals = daemon.cli("receiver", "new", "--amount", "0.000000015")
    assert decimals.code == 2 and "'0.000000015' has more than 8" in decimals.stderr
    with ControlClient(daemon.socket) as client, pytest.raises(RemoteError) as info:
        client.call("receiver.create", {"amount": "-2.50", "currency": "USD"})
    assert "'-2.50'" in info.value.message


def test_plain_decimals_with_a_sign_or_spaces_are_accepted(daemon):
    for typed, duffs in (("+1.5", 150_000_000), (" 2 ", 200_000_000), (".5", 50_000_000)):
        result = daemon.cli("receiver", "new", "--amount", typed, "--json")
        assert result.code == 0, (typed, result.stderr)
        assert result.json()["amount_duffs"] == duffs


def test_a_huge_json_number_fiat_amount_is_refused_not_an_internal_error(daemon):
    with ControlClient(daemon.socket) as client, pytest.raises(RemoteError) as info:
        client.call("receiver.create", {"amount": 10**40, "currency": "USD"})
    assert info.value.kind == "invalid_params" and "implausibly large" in info.value.message


def test_sandbox_pay_amounts_follow_the_same_rule():
    # The CLI checks before it looks for a daemon: exit 2 even with none running.
    result = run_cli("--socket", "/nonexistent/x.sock", "sandbox", "pay", "Xaddr", "1e2")
    assert result.code == 2 and "'1e2' is not a plain decimal" in result.stderr
