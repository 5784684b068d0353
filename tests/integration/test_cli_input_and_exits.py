"""The command line's input rules and exit codes, through real subprocesses: amounts
in plain decimal notation only, with the typed text echoed; `wallet derive`'s network
and key. One daemon for the module (SQLite: nothing here depends on the backend)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from dashpay.config.paths import DEFAULT_CONFIG_PATH, SANDBOX_KEY_NAME
from dashpay.domain.wallet import Wallet, decode_extended_public_key
from dashpay.net.control_client import ControlClient
from dashpay.wire.jsonrpc import RemoteError
from tests.conftest import (
    REPO,
    TEST_XPUB,
    DaemonProcess,
    cli_env,
    run_cli,
    start_daemon,
    wait_receivers,
    write_config,
)

# TEST_XPUB under the testnet prefix: the same key, naming its network.
TEST_TPUB = decode_extended_public_key(TEST_XPUB).serialize(bytes.fromhex("043587CF"))
TESTNET_ADDRESSES = Wallet(TEST_XPUB, "testnet").addresses(0, 2)

# What Python's Decimal takes but no one types as an amount: each is refused, and the
# message quotes it as typed.
NOT_PLAIN = ["1_000", "1e2", "1E+9", "inf", "-Infinity", "nan", "0x10", "1,5", "1 000", "١"]


@pytest.fixture(scope="module")
def daemon() -> Iterator[DaemonProcess]:
    directory = Path(tempfile.mkdtemp(prefix="dp-", dir="/tmp"))
    directory.chmod(0o755)  # as /run/dashpay lets its group in: the socket decides
    config = write_config(directory, f"sqlite:///{directory / 'dashpay.sqlite3'}")
    proc = start_daemon(config, ready=False)
    wait_receivers(proc)
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


def test_wallet_derive_takes_the_network_a_tpub_names():
    result = run_cli("wallet", "derive", "--xpub", TEST_TPUB, "--count", "2", "--json")
    assert result.code == 0, result.stderr
    data = result.json()
    assert data["network"] == "testnet" and data["key_source"] == "--xpub"
    assert [row["address"] for row in data["addresses"]] == TESTNET_ADDRESSES
    assert all(address.startswith("y") for address in TESTNET_ADDRESSES)
    # An xpub is used on both networks: that one still needs --network.
    either = run_cli("wallet", "derive", "--xpub", TEST_XPUB)
    assert either.code == 2 and "--network is required with an xpub key" in either.stderr


def test_wallet_derive_blames_the_flag_or_the_config_for_a_network_mismatch(short_tmp):
    flag = run_cli("wallet", "derive", "--xpub", TEST_TPUB, "--network", "mainnet")
    assert flag.code == 2
    assert "--network says mainnet" in flag.stderr and "configured" not in flag.stderr
    config = write_config(
        short_tmp, "sqlite:///x.sqlite3", wallet={"xpub": TEST_TPUB, "network": "mainnet"}
    )
    configured = run_cli("--config", str(config), "wallet", "derive")
    assert configured.code == 2
    assert str(config) in configured.stderr and "configured for mainnet" in configured.stderr
    # The config's key with --network naming the other network: the flag is at fault.
    config.write_text(config.read_text().replace('"mainnet"', '"testnet"'))
    overridden = run_cli("--config", str(config), "wallet", "derive", "--network", "mainnet")
    assert overridden.code == 2 and "--network says mainnet" in overridden.stderr


@pytest.mark.skipif(DEFAULT_CONFIG_PATH.exists(), reason="this machine has a system config")
def test_wallet_derive_without_a_config_uses_the_sandbox_key(short_tmp):
    env = {"XDG_STATE_HOME": str(short_tmp)}
    none_yet = run_cli("wallet", "derive", env=env)
    assert none_yet.code == 2 and "dashpay serve --sandbox" in none_yet.stderr
    (short_tmp / "dashpay").mkdir()
    (short_tmp / "dashpay" / SANDBOX_KEY_NAME).write_text(TEST_TPUB + "\n")
    result = run_cli("wallet", "derive", "--count", "2", env=env)
    assert result.code == 0, result.stderr
    assert result.stdout.split() == ["0/0", TESTNET_ADDRESSES[0], "0/1", TESTNET_ADDRESSES[1]]
    assert "sandbox" in result.stderr


def run_cli_as_nobody(*args: str) -> subprocess.CompletedProcess:
    """The CLI as uid/gid 65534 with no supplementary groups. It keeps only
    CAP_DAC_READ_SEARCH, to read the interpreter under /root: that capability never
    grants write access, and connecting to a Unix socket needs write access."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run the CLI as another user")
    caps = ["--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search"]
    return subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *caps,
         sys.executable, "-m", "dashpay", *args],
        capture_output=True, text=True, env=cli_env(), cwd=REPO, timeout=30,
    )  # fmt: skip


def test_a_socket_this_user_may_not_open_is_permission_denied_not_daemon_down(daemon):
    info = os.stat(daemon.socket)
    assert (info.st_uid, info.st_gid, info.st_mode & 0o777) == (0, 0, 0o660)
    result = run_cli_as_nobody("--socket", str(daemon.socket), "status")
    assert result.returncode == 6, (result.returncode, result.stderr)
    assert (
        f"permission denied on {daemon.socket} (owned by root:root, mode 0660): "
        "add yourself to group root"
    ) in result.stderr
    assert "no dashpay daemon is answering" not in result.stderr

    as_json = run_cli_as_nobody("--socket", str(daemon.socket), "status", "--json")
    error = json.loads(as_json.stderr)["error"]
    assert (as_json.returncode, as_json.stdout) == (6, "")
    assert error["kind"] == "permission_denied" and error["exit_code"] == 6
    assert (error["owner"], error["group"], error["mode"]) == ("root", "root", "0660")


def json_error(result) -> dict:
    """The one JSON error object a --json command writes to stderr (stdout stays empty)."""
    assert result.stdout == "", result.stdout
    return json.loads(result.stderr)["error"]


def test_with_json_every_error_is_a_json_object_on_stderr(daemon, short_tmp):
    missing = daemon.cli("receiver", "show", "999999", "--json")
    assert missing.code == 4
    assert json_error(missing)["kind"] == "not_found"
    usage = daemon.cli("receiver", "new", "--amount", "1e2", "--json")
    error = json_error(usage)
    assert usage.code == 2 and error["kind"] == "invalid_params" and error["exit_code"] == 2
    assert "'1e2'" in error["message"]
    nowhere = run_cli("--socket", str(short_tmp / "none.sock"), "status", "--json")
    error = json_error(nowhere)
    assert nowhere.code == 3 and error["kind"] == "unreachable"
    assert error["socket"] == str(short_tmp / "none.sock")
    derive = run_cli("wallet", "derive", "--xpub", TEST_XPUB, "--json")
    assert derive.code == 2 and "--network" in json_error(derive)["message"]


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (("receiver", "new", "--amout", "1", "--json"), "No such option: --amout"),
        (("receiver", "show", "--json"), "Missing argument 'ID'"),
        (("receiver", "show", "seven", "--json"), "'seven' is not a valid int"),
        (("receiver", "frobnicate", "--json"), "No such command 'frobnicate'"),
    ],
)
def test_with_json_what_the_parser_refuses_is_a_json_error_too(argv, said):
    result = run_cli(*argv)
    error = json_error(result)
    assert result.code == 2 and error["kind"] == "invalid_params" and error["exit_code"] == 2
    assert said in error["message"]
    assert error["hint"].startswith("Usage: ") and f"dashpay {argv[0]}" in error["hint"]
    assert "--help" in error["hint"]


def test_without_json_the_parser_keeps_its_usage_text():
    result = run_cli("receiver", "new", "--amout", "1")
    assert result.code == 2 and result.stdout == ""
    assert "dashpay receiver new [OPTIONS]" in result.stderr and "No such option" in result.stderr
    # a --json after `--` is an argument, not the option: the usage text stays plain
    plain = run_cli("receiver", "show", "--", "--json")
    assert plain.code == 2 and not plain.stderr.lstrip().startswith("{")


def test_json_and_quiet_together_are_refused(daemon):
    before = daemon.cli("status", "--json").json()["wallet"]["next_index"]
    result = daemon.cli("receiver", "new", "--amount", "1", "--json", "-q")
    assert result.code == 2
    assert "--json and -q/--quiet do not go together" in json_error(result)["message"]
    assert daemon.cli("status", "--json").json()["wallet"]["next_index"] == before


def internal_error(request):
    error = {"code": -32603, "data": {"kind": "internal"},
             "message": f"internal error in {request['method']}; see the daemon log"}  # fmt: skip
    return {"error": error}


def test_an_internal_error_has_its_own_exit_code(fake_daemon):
    path = fake_daemon(internal_error)
    plain = run_cli("--socket", str(path), "status")
    as_json = run_cli("--socket", str(path), "receiver", "list", "--json")
    assert plain.code == 7 and "internal error in status" in plain.stderr
    error = json_error(as_json)
    assert as_json.code == 7 and (error["kind"], error["exit_code"]) == ("internal", 7)
