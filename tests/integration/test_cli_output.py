"""The CLI's human output, through real CLI subprocesses: against one real daemon per
module (SQLite, watching an in-test sandbox peer, no callback URL configured) and
against a hostile stand-in daemon on a Unix socket."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import (
    TEST_XPUB,
    DaemonProcess,
    SandboxPeer,
    run_cli,
    start_daemon,
    write_config,
)

MARKUP = "[red]PAID[/red] [bold]x :smile:"


@pytest.fixture(scope="module")
def peer() -> Iterator[SandboxPeer]:
    sandbox = SandboxPeer()
    yield sandbox
    sandbox.close()


@pytest.fixture(scope="module")
def shop(peer) -> Iterator[DaemonProcess]:
    directory = Path(tempfile.mkdtemp(prefix="dp-", dir="/tmp"))
    config = write_config(
        directory,
        f"sqlite:///{directory / 'dashpay.sqlite3'}",
        wallet={"xpub": TEST_XPUB, "network": "testnet"},
        insight={"url": peer.url, "reconnect_initial": "0.1s", "reconnect_max": "0.5s"},
        callbacks={"backoff_initial": "100ms", "backoff_max": "200ms", "give_up_after": "1s"},
    )
    daemon = start_daemon(config)
    try:
        yield daemon
    finally:
        daemon.stop()
        shutil.rmtree(directory, ignore_errors=True)


def new_receiver(shop: DaemonProcess, *args: str) -> dict:
    created = shop.cli("receiver", "new", "--amount", "1", *args, "--json")
    assert created.code == 0, created.stderr
    return created.json()


def wait_for(what, timeout: float = 15):
    deadline = time.monotonic() + timeout
    while True:
        value = what()
        if value:
            return value
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


# -- data is printed literally --------------------------------------------------------


def test_markup_in_a_description_is_printed_as_written(shop):
    rid = str(new_receiver(shop, "--description", MARKUP)["receiver_id"])
    shown = shop.cli("receiver", "show", rid)
    assert shown.code == 0, shown.stderr
    assert MARKUP in shown.stdout
    assert "\x1b" not in shown.stdout
    listed = shop.cli("receiver", "list", "--limit", "1")
    assert MARKUP in listed.stdout


def test_control_characters_in_a_description_are_shown_escaped(shop):
    # What the daemon stores (tab, DEL, the 8-bit CSI, a right-to-left override) but a
    # terminal must never get raw.
    description = "a\tb\x7f \x9b31mred \u202eevil"
    rid = str(new_receiver(shop, "--description", description)["receiver_id"])
    shown = shop.cli("receiver", "show", rid)
    assert "a\\tb\\x7f \\x9b31mred \\u202eevil" in shown.stdout
    as_json = shop.cli("receiver", "show", rid, "--json")
    assert as_json.json()["description"] == description
    assert not any(ch in as_json.stdout for ch in "\t\x7f\x9b\u202e")


def test_callbacks_test_shows_the_url_and_the_refusal_as_they_are(shop):
    ipv6 = shop.cli("callbacks", "test", "http://[fe80::1]/x")
    assert ipv6.code == 4, ipv6.stderr
    assert "http://[fe80::1]/x" in ipv6.stdout
    metadata = shop.cli("callbacks", "test", "http://169.254.169.254/x")
    assert "refused while [callbacks] block_link_local is on" in metadata.stdout


def test_callbacks_list_keeps_the_section_name_in_the_last_error(shop, peer):
    receiver = new_receiver(shop)
    peer.pay(receiver["address"], 100_000_000)

    def failed():
        listed = shop.cli(
            "callbacks", "list", "--receiver", str(receiver["receiver_id"]), "--json"
        ).json()
        return [e for e in listed["events"] if e["last_error"]]

    wait_for(failed)
    human = shop.cli("callbacks", "list", "--receiver", str(receiver["receiver_id"]))
    # The table wraps the error to the terminal's width, wherever its variable parts
    # (ids, the time) put the break: compare with the wrapping and the borders taken out.
    flat = " ".join(human.stdout.replace("│", " ").split())
    assert "[callbacks] default_url" in flat, human.stdout


# -- a hostile daemon -----------------------------------------------------------------


HOSTILE = "\x1b[2J\x1b]0;owned\x07[red]x[/red]\r\x9b31m"
HOSTILE_SHOWN = "\\x1b[2J\\x1b]0;owned\\x07[red]x[/red]\\r\\x9b31m"


def test_an_error_message_from_the_daemon_reaches_the_terminal_escaped(fake_daemon):
    def answer(request):
        error = {"code": -32000, "message": f"boom {HOSTILE}", "data": {"kind": "not_found"}}
        return {"error": error}

    path = fake_daemon(answer)
    result = run_cli("--socket", str(path), "receiver", "show", "1")
    assert result.code == 4
    assert f"boom {HOSTILE_SHOWN}" in result.stderr
    assert "\x1b" not in result.stderr and "\x9b" not in result.stderr


def test_hostile_text_in_an_answer_reaches_the_terminal_escaped(fake_daemon):
    def answer(request):
        return {
            "result": {
                "url": f"http://x/{HOSTILE}",
                "ok": False,
                "http_status": None,
                "error": HOSTILE,
                "response_excerpt": HOSTILE,
                "duration_ms": 1,
                "event_id": HOSTILE,
            }
        }

    path = fake_daemon(answer)
    result = run_cli("--socket", str(path), "callbacks", "test", "http://shop.example/cb")
    assert result.code == 5
    assert f"http://x/{HOSTILE_SHOWN}" in result.stdout
    assert "\x1b" not in result.stdout and "\x9b" not in result.stdout and "\r" not in result.stdout


def test_help_from_the_command_table_keeps_section_names():
    result = run_cli("callbacks", "test", "--help")
    assert result.code == 0
    words = " ".join(result.stdout.replace("│", " ").split())
    assert "4 when the [callbacks] rules refuse the URL" in words


# -- status shows what the JSON flags --------------------------------------------------


def stable_status(shop: DaemonProcess) -> tuple[dict, str] | None:
    """The JSON status and the human one's words, when nothing the test compares moved
    between them (a JSON read before and after the human one agree); None otherwise."""

    def figures(status: dict) -> tuple:
        return (
            status["warnings"],
            status["callbacks"],
            status["engine"],
            status["verify"],
            status["last_rescan"],
            status["insight"]["events_received"],
        )

    before = shop.cli("status", "--json").json()
    human = shop.cli("status")
    after = shop.cli("status", "--json").json()
    if figures(before) != figures(after):
        return None
    return after, " ".join(human.stdout.split())


def test_human_status_shows_every_warning_and_figure_the_json_has(shop, peer):
    receiver = new_receiver(shop)  # no callback URL anywhere: its callbacks fail
    peer.pay(receiver["address"], 100_000_000)
    rescan = shop.cli("rescan")
    assert rescan.code == 0, rescan.stderr
    data = wait_for(
        lambda: (s := shop.cli("status", "--json").json())["callbacks"].get("failed_total") and s
    )
    assert any("failed for good" in warning for warning in data["warnings"])
    # Other receivers of this module's daemon may still be failing their callbacks, so
    # the human view is compared with a JSON read that did not change around it.
    data, words = wait_for(lambda: stable_status(shop))
    for warning in data["warnings"]:
        assert " ".join(warning.split()) in words
    callbacks = data["callbacks"]
    assert f"failed total {callbacks['failed_total']}" in words
    assert " ".join(callbacks["last_error"].split()) in words
    engine = data["engine"]
    assert f"payments recorded {engine['payments_recorded']}" in words
    assert f"payments missing from source {engine['payments_missing_from_source']}" in words
    assert f"claims {data['verify']['claims']}" in words
    last = data["last_rescan"]
    assert f"last rescan at {last['at']}: receivers checked {last['receivers_checked']}" in words
    assert f"events received {data['insight']['events_received']}" in words


# -- help and cosmetics ---------------------------------------------------------------


def test_config_check_blames_its_path_argument_for_a_missing_file(short_tmp):
    missing = short_tmp / "nonexistent.toml"
    result = run_cli("config", "check", str(missing))
    assert result.code == 2
    assert f"{missing}: the config file given by the PATH argument does not exist" in result.stderr
    assert "--config" not in result.stderr
    flag = run_cli("--config", str(missing), "config", "check")
    assert flag.code == 2 and "given by --config" in flag.stderr


def test_receiver_list_cuts_a_long_description_to_the_width_with_an_ellipsis(shop):
    receiver = new_receiver(shop, "--description", "order " + "x" * 249)
    listed = shop.cli("receiver", "list", "--limit", "1")
    assert listed.code == 0, listed.stderr
    rows = [line for line in listed.stdout.splitlines() if receiver["address"] in line]
    assert len(rows) == 1
    assert "order xxx" in rows[0] and "…" in rows[0]
    assert all(len(line) <= 200 for line in listed.stdout.splitlines())
    table = [line for line in listed.stdout.splitlines() if not line.startswith("more:")]
    assert len(table) == 5  # top, header, rule, the row, bottom


COMMANDS_WITH_ARGUMENTS = [
    ("receiver", "show"),
    ("receiver", "cancel"),
    ("rescan",),
    ("callbacks", "show"),
    ("callbacks", "retry"),
    ("callbacks", "test"),
    ("price",),
    ("sandbox", "pay"),
    ("sandbox", "drop"),
    ("sandbox", "lock"),
    ("config", "check"),
]


@pytest.mark.parametrize("command", COMMANDS_WITH_ARGUMENTS, ids=" ".join)
def test_argument_names_in_help_are_upper_case(command):
    import re

    result = run_cli(*command, "--help")
    assert result.code == 0, result.stderr
    usage = next(line for line in result.stdout.splitlines() if "Usage:" in line)
    names = re.findall(r"[{\[]([A-Za-z_]+)[}\]]", usage.split("[OPTIONS]", 1)[1])
    assert names and all(name.isupper() for name in names), usage


@pytest.mark.parametrize("command", [("receiver", "show"), ("receiver", "cancel"), ("rescan",)])
def test_receiver_ids_are_integers_in_help(command):
    result = run_cli(*command, "--help")
    id_row = next(line for line in result.stdout.splitlines() if "ID" in line and "<" in line)
    assert "<int>" in id_row and "<str>" not in id_row


def test_rescan_help_says_what_no_argument_means():
    words = " ".join(run_cli("rescan", "--help").stdout.replace("│", " ").split())
    assert "(no argument) every watched one" in words
    assert "still inside [receivers] monitor_window" in words
