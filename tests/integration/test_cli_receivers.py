"""The CLI end to end: real `dashpay serve` subprocess, real CLI subprocesses, both
database backends."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import threading
import time

import pytest

from dashpay.domain.tokens import is_public_token
from dashpay.net.control_client import ControlClient
from dashpay.wire.jsonrpc import RemoteError
from tests.conftest import (
    REPO,
    TEST_XPUB_ADDRESSES,
    cli_env,
    run_cli,
    start_daemon,
    wait_receivers,
    write_config,
)


def test_receiver_new_json_has_the_documented_fields(daemon):
    result = daemon.cli("receiver", "new", "--amount", "1.5", "--description", "order 42", "--json")
    assert result.code == 0, result.stderr
    data = result.json()
    assert data["address"] == TEST_XPUB_ADDRESSES[0]
    assert data["hd_index"] == 0
    assert data["amount_duffs"] == 150_000_000
    assert data["received_duffs"] == 0
    assert data["status"] == "pending"
    assert data["payment_uri"] == f"dash:{TEST_XPUB_ADDRESSES[0]}?amount=1.5"
    assert data["description"] == "order 42"
    assert data["created_at"].endswith("Z") and data["expires_at"].endswith("Z")
    assert isinstance(data["receiver_id"], int)


def test_receiver_new_answers_its_checkout_page_when_public_url_is_set(short_tmp, database_url):
    config = write_config(
        short_tmp,
        database_url,
        http={"public_url": "https://pay.example/shop/", "listen": ["127.0.0.1:0"]},
    )
    daemon = start_daemon(config, ready=False)
    try:
        wait_receivers(daemon)
        result = daemon.cli(
            "receiver",
            "new",
            "--amount",
            "1",
            "--redirect-url",
            "https://shop.example/done?o=7",
            "--json",
        )
        assert result.code == 0, result.stderr
        data = result.json()
        token = data["public_token"]
        assert is_public_token(token)
        assert data["checkout_url"] == f"https://pay.example/shop/pay/{token}"
        assert data["redirect_url"] == "https://shop.example/done?o=7"
        shown = daemon.cli("receiver", "show", str(data["receiver_id"]), "--json").json()
        assert (shown["checkout_url"], shown["redirect_url"]) == (
            data["checkout_url"],
            data["redirect_url"],
        )
        other = daemon.cli("receiver", "new", "--amount", "1", "--json").json()
        assert other["public_token"] != token and other["redirect_url"] is None
    finally:
        daemon.stop()


def test_receiver_new_has_no_checkout_url_without_public_url(shared_daemon):
    data = shared_daemon.cli("receiver", "new", "--amount", "1", "--json").json()
    assert is_public_token(data["public_token"]) and data["checkout_url"] is None


@pytest.mark.parametrize(
    "bad", ["javascript:alert(1)", "ftp://shop.example/", "https://", "https://shop example/"]
)
def test_a_bad_redirect_url_is_refused_before_the_daemon_is_asked(bad):
    result = run_cli(
        "--config", "/nonexistent.toml", "receiver", "new", "--amount", "1", "--redirect-url", bad
    )
    assert result.code == 2, result.stderr
    assert "redirect_url" in result.stderr


def test_cli_reaches_a_daemon_whose_config_uses_systemd_credentials(daemon, short_tmp):
    """The production config keeps secrets in files only the service may read
    ($CREDENTIALS_DIRECTORY); a shell script's `dashpay receiver new` with that same
    config must still find the daemon's socket."""
    config = short_tmp / "client.toml"
    config.write_text(
        f'[control]\nsocket = "{daemon.socket}"\n'
        '[database]\nurl = "mysql://dashpay@localhost/dashpay"\n'
        'password_file = "${CREDENTIALS_DIRECTORY}/db-password"\n'
        '[callbacks]\nsecret_file = "${CREDENTIALS_DIRECTORY}/callback-secret"\n'
    )
    result = run_cli("--config", str(config), "receiver", "new", "--amount", "1", "--quiet")
    assert result.code == 0, result.stderr
    assert result.stdout.strip() == TEST_XPUB_ADDRESSES[0]


def test_receiver_new_quiet_prints_only_the_next_address(daemon):
    first = daemon.cli("receiver", "new", "--amount", "0.1", "-q")
    second = daemon.cli("receiver", "new", "--amount", "0.1", "-q")
    assert (first.code, second.code) == (0, 0), first.stderr + second.stderr
    assert first.stdout == TEST_XPUB_ADDRESSES[0] + "\n"
    assert second.stdout == TEST_XPUB_ADDRESSES[1] + "\n"


def test_receiver_show_list_cancel_round_trip(daemon):
    created = daemon.cli("receiver", "new", "--amount", "2", "--username", "alice", "--json").json()
    rid = str(created["receiver_id"])

    shown = daemon.cli("receiver", "show", rid, "--json")
    assert shown.code == 0, shown.stderr
    assert shown.json()["payments"] == []
    assert shown.json()["username"] == "alice"

    human = daemon.cli("receiver", "show", rid)
    assert human.code == 0 and created["address"] in human.stdout and "2 DASH" in human.stdout

    listed = daemon.cli("receiver", "list", "--json")
    assert [r["receiver_id"] for r in listed.json()["receivers"]] == [created["receiver_id"]]

    cancelled = daemon.cli("receiver", "cancel", rid, "--json")
    assert cancelled.code == 0, cancelled.stderr
    assert cancelled.json()["status"] == "cancelled"
    assert (
        daemon.cli("receiver", "list", "--status", "cancelled", "--json").json()["receivers"][0][
            "receiver_id"
        ]
        == created["receiver_id"]
    )
    assert daemon.cli("receiver", "list", "--status", "pending", "--json").json()["receivers"] == []


def test_receiver_list_pages_newest_first(daemon):
    ids = [
        daemon.cli("receiver", "new", "--amount", "1", "--json").json()["receiver_id"]
        for _ in range(3)
    ]
    page = daemon.cli("receiver", "list", "--limit", "2", "--json").json()
    assert [r["receiver_id"] for r in page["receivers"]] == ids[:0:-1]
    rest = daemon.cli(
        "receiver", "list", "--limit", "2", "--before", str(page["next_before_id"]), "--json"
    ).json()
    assert [r["receiver_id"] for r in rest["receivers"]] == [ids[0]]


def test_idempotency_key_returns_the_same_receiver(daemon):
    a = daemon.cli(
        "receiver", "new", "--amount", "1", "--idempotency-key", "order-7", "--json"
    ).json()
    b = daemon.cli(
        "receiver", "new", "--amount", "1", "--idempotency-key", "order-7", "--json"
    ).json()
    assert a["receiver_id"] == b["receiver_id"] and a["address"] == b["address"]
    assert (a["created"], b["created"]) == (True, False)
    # The same key for a different request is refused, not silently answered.
    other = daemon.cli("receiver", "new", "--amount", "2", "--idempotency-key", "order-7")
    assert other.code == 4 and "idempotency_key" in other.stderr
    nxt = daemon.cli("receiver", "new", "--amount", "1", "--json").json()
    assert nxt["hd_index"] == a["hd_index"] + 1  # no index was burnt by the repeats


@pytest.mark.parametrize(
    "amount",
    ["1e-9", "-1", "abc", "NaN", "21000001", "0", "0.000000001", "Infinity"],
)
def test_bad_amounts_exit_2_with_a_reason(shared_daemon, amount):
    result = shared_daemon.cli("receiver", "new", "--amount", amount)
    assert result.code == 2, (result.code, result.stdout, result.stderr)
    assert "amount" in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--callback-url", "ftp://shop.example/cb"], "http"),
        (["--callback-url", "https:///nohost"], "host"),
        (["--callback-url", "https://x.example/" + "a" * 2100], "2048"),
        (["--description", "d" * 256], "255"),
        (["--username", "u" * 256], "255"),
        (["--description", "order \udcff"], "lone surrogate"),  # the byte 0xff in argv
        (["--expires-after", "5x"], "duration"),
        (["--currency", "US"], "currency"),
    ],
)
def test_bad_receiver_options_exit_2(shared_daemon, args, needle):
    result = shared_daemon.cli("receiver", "new", "--amount", "1", *args)
    assert result.code == 2, (result.code, result.stderr)
    assert needle in result.stderr


def test_exit_codes_for_rejected_and_unavailable(daemon):
    missing = daemon.cli("receiver", "show", "999999")
    assert missing.code == 4 and "not_found" in missing.stderr
    fiat = daemon.cli("receiver", "new", "--amount", "25", "--currency", "USD")
    assert fiat.code == 5 and "price_unavailable" in fiat.stderr
    usage = daemon.cli("receiver", "show", "not-a-number")
    assert usage.code == 2
    unknown_cmd = daemon.cli("receiver", "frobnicate")
    assert unknown_cmd.code == 2


def test_cancel_of_an_already_cancelled_receiver_is_idempotent(daemon):
    rid = str(daemon.cli("receiver", "new", "--amount", "1", "--json").json()["receiver_id"])
    assert daemon.cli("receiver", "cancel", rid).code == 0
    again = daemon.cli("receiver", "cancel", rid, "--json")
    assert again.code == 0 and again.json()["status"] == "cancelled"


def test_unreachable_daemon_exits_3_and_says_which_socket(short_tmp):
    sock = short_tmp / "nobody.sock"
    result = run_cli("--socket", str(sock), "status")
    assert result.code == 3
    assert str(sock) in result.stderr and "dashpay serve" in result.stderr


def test_status_reports_wallet_database_and_next_index(daemon):
    daemon.cli("receiver", "new", "--amount", "1")
    status = daemon.cli("status", "--json")
    assert status.code == 1  # answering, but not ready: no Insight to watch
    data = status.json()
    assert data["ready"] is False and data["state"] == "starting"
    assert any("insight" in reason for reason in data["reasons"])
    assert data["wallet"]["network"] == "mainnet"
    assert len(data["wallet"]["fingerprint"]) == 8
    assert data["wallet"]["next_index"] == 1
    assert data["pending"] == 1
    assert data["database"]["backend"] in ("sqlite", "mysql")
    assert "***" in data["database"]["url"] or data["database"]["backend"] == "sqlite"
    human = daemon.cli("status")
    assert human.code == 1 and "starting" in human.stdout


def test_fifty_concurrent_creates_get_fifty_consecutive_indices(daemon):
    results: list[dict] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    barrier = threading.Barrier(50)

    def create(i: int) -> None:
        try:
            with ControlClient(daemon.socket) as client:
                barrier.wait()
                result = client.call("receiver.create", {"amount": "0.5", "description": f"c{i}"})
            with lock:
                results.append(result)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=create, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    indices = sorted(r["hd_index"] for r in results)
    assert indices == list(range(50))
    assert len({r["address"] for r in results}) == 50
    assert daemon.cli("status", "--json").json()["wallet"]["next_index"] == 50


def test_hostile_control_clients_do_not_disturb_a_good_client(daemon):
    garbage = socket.socket(socket.AF_UNIX)
    garbage.connect(str(daemon.socket))
    garbage.sendall(b"\x00\xffnot json at all\n")
    assert b"parse_error" in garbage.recv(4096)

    oversized = socket.socket(socket.AF_UNIX)
    oversized.connect(str(daemon.socket))
    with contextlib.suppress(OSError):  # the daemon may close on us mid-send: the point
        oversized.sendall(b"{" + b"a" * (70 * 1024))

    half = socket.socket(socket.AF_UNIX)
    half.connect(str(daemon.socket))
    half.sendall(b'{"jsonrpc":"2.0","id":1,"method":"sta')

    started = time.monotonic()
    result = daemon.cli("receiver", "new", "--amount", "1", "--json")
    assert result.code == 0, result.stderr
    assert time.monotonic() - started < 10
    # The malformed client's connection still serves a well-formed request afterwards.
    garbage.sendall(b'{"jsonrpc":"2.0","id":2,"method":"status"}\n')
    reply = json.loads(garbage.recv(65536).split(b"\n")[0])
    assert reply["id"] == 2 and reply["result"]["state"] == "starting"
    for s in (garbage, oversized, half):
        s.close()


def test_json_number_amounts_are_read_as_exact_decimals(daemon):
    # A JSON number is decimal text; the daemon reads it as Decimal, never as a float.
    with ControlClient(daemon.socket) as client:
        result = client.call("receiver.create", {"amount": 0.1})
        assert result["amount_duffs"] == 10_000_000
        with pytest.raises(RemoteError) as info:
            client.call("receiver.create", {"amount": 0.123456789})
    assert info.value.kind == "invalid_params"


def test_receiver_commands_do_not_import_heavy_modules(short_tmp):
    proc = subprocess.run(
        [
            sys.executable,
            "-X",
            "importtime",
            "-m",
            "dashpay",
            "--socket",
            str(short_tmp / "x.sock"),
            "receiver",
            "new",
            "--amount",
            "1",
        ],
        capture_output=True,
        text=True,
        env=cli_env(),
        cwd=REPO,
        timeout=30,
    )
    assert proc.returncode == 3
    imported = {
        line.split("|")[-1].strip().split(".")[0]
        for line in proc.stderr.splitlines()
        if "|" in line
    }
    heavy = {"trio", "httpx", "bip_utils", "pymysql", "coincurve", "pydantic"}
    assert not imported & heavy, imported


def test_help_names_config_sections_literally():
    """Rich markup must not swallow "[control]" or "[logging]" in option help."""
    top = run_cli("--help", env={"COLUMNS": "200"})
    serve = run_cli("serve", "--help", env={"COLUMNS": "200"})
    assert top.code == 0 and serve.code == 0
    assert "then [control] socket" in top.stdout
    assert "(default: [logging] level)" in serve.stdout


def test_sandbox_commands_outside_sandbox_mode_say_so(shared_daemon):
    result = shared_daemon.cli("sandbox", "mine")
    assert result.code == 4 and "sandbox mode" in result.stderr


def test_gap_limit_warns_in_status_and_can_refuse_new_receivers(short_tmp, database_url):
    from tests.conftest import start_daemon, write_config

    config = write_config(
        short_tmp, database_url, wallet={"gap_limit_warning": 2, "gap_limit_max": 3}
    )
    daemon = start_daemon(config, ready=False)
    try:
        wait_receivers(daemon)
        for _ in range(3):
            assert daemon.cli("receiver", "new", "--amount", "1").code == 0
        status = daemon.cli("status", "--json").json()
        assert status["wallet"]["unpaid_in_a_row"] == 3
        assert any("gap" in w for w in status["warnings"])
        refused = daemon.cli("receiver", "new", "--amount", "1")
        assert refused.code == 4 and "gap_limit_max" in refused.stderr
        assert "gap limit warning" in daemon.log()
    finally:
        daemon.stop()


def test_a_lone_surrogate_over_the_socket_is_refused_and_nothing_is_created(daemon):
    """A JSON "\\ud800" escape without its pair decodes to text no database stores."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(daemon.socket))
        request = (
            '{"jsonrpc": "2.0", "id": 1, "method": "receiver.create",'
            ' "params": {"amount": "1", "description": "order \\ud800"}}\n'
        )
        sock.sendall(request.encode("ascii"))
        answer = json.loads(sock.makefile("rb").readline())
    assert answer["error"]["data"]["kind"] == "invalid_params", answer
    assert "description is not valid text" in answer["error"]["message"]
    assert daemon.cli("status", "--json").json()["wallet"]["next_index"] == 0
