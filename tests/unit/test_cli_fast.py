"""cli/fast.py's reading of a command line, and the facts it keeps of the command
table and the config key table: generated or copied, they must match the originals."""

from __future__ import annotations

from pathlib import Path

import pytest

from dashpay.cli import fast, fast_table
from dashpay.cli.commands import fast_view
from dashpay.config import quick
from dashpay.config.control import load_control_config
from dashpay.config.errors import ConfigError
from dashpay.config.keys import CONFIG_KEYS


def test_fast_table_is_generated_from_the_command_table() -> None:
    assert fast_view() == fast_table.COMMANDS, "run `python -m dashpay.cli.commands`"
    assert ("receiver", "new") in fast_table.COMMANDS


def test_quick_config_facts_match_the_key_table() -> None:
    assert set(CONFIG_KEYS) == quick.SECTIONS
    assert CONFIG_KEYS["control"]["socket"].default == quick.DEFAULT_SOCKET
    assert set(CONFIG_KEYS["control"]) == {"socket"}


@pytest.mark.parametrize(
    "text",
    [
        "",
        '[control]\nsocket = "/run/x/control.sock"\n',
        '[control]\nsocket = "  relative/c.sock  "\n[wallet]\nxpub = "x"\n',
        '[database]\nurl = "sqlite:////tmp/x"\n[prices.kraken]\nurl = "x"\n',
        '[control]\nsocket = ""\n',
        "[control]\nsocket = 5\n",
        '[control]\nsockett = "/x"\n',
        '[controll]\nsocket = "/x"\n',
        'socket = "/x"\n',
        "[control\n",
        '[control]\nsocket = "/' + "x" * 120 + '"\n',
        '[control]\nsocket = "/a\\u0000b"\n',
    ],
)
def test_quick_socket_agrees_with_the_full_reader(tmp_path: Path, text: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(text)
    try:
        expected = load_control_config(path).socket
    except ConfigError:
        expected = None
    assert quick.control_socket(path) == expected


def test_quick_config_file_defers_a_missing_file(tmp_path: Path) -> None:
    assert quick.config_file(str(tmp_path / "absent.toml")) == (None, False)
    (tmp_path / "c.toml").write_text("")
    assert quick.config_file(str(tmp_path / "c.toml")) == (tmp_path / "c.toml", True)


NEW = fast_table.COMMANDS[("receiver", "new")][2]
PAY = fast_table.COMMANDS[("sandbox", "pay")][2]
SHOW = fast_table.COMMANDS[("receiver", "show")][2]


def test_values_as_typer_gives_them() -> None:
    values = fast._values(NEW, ["--amount", "1.5", "--description=a b", "-q"])
    assert values == {
        "amount": "1.5", "currency": "DASH", "callback_url": None, "description": "a b",
        "username": None, "redirect_url": None, "expires_after": None,
        "idempotency_key": None, "quiet": True,
    }  # fmt: skip
    assert fast._values(PAY, ["yAddr", "1", "--no-lock"]) == {
        "address": "yAddr", "amount": "1", "lock": False, "silent": False,
    }  # fmt: skip
    assert fast._values(SHOW, ["12", "--json"]) == {"receiver_id": 12, "as_json": True}


@pytest.mark.parametrize(
    "declared, words",
    [
        (NEW, []),  # --amount is required
        (NEW, ["--amount"]),
        (NEW, ["--amount", "--json"]),
        (NEW, ["--amount", "1", "--amount", "2"]),
        (NEW, ["--amount", "1", "--help"]),
        (NEW, ["--amount", "1", "-qx"]),
        (NEW, ["--amount", "1", "--json=yes"]),
        (NEW, ["--amount", "1", "extra"]),
        (NEW, ["--amount", "1", "--"]),
        (SHOW, []),
        (SHOW, ["x"]),
        (SHOW, ["-1"]),
        (SHOW, ["\u0661"]),  # an Arabic-Indic digit: int() takes it, leave it to click
        (SHOW, ["1", "2"]),
        (PAY, ["a", "1", "--lock", "--no-lock"]),
    ],
)
def test_anything_but_plain_goes_to_the_app(declared, words) -> None:
    assert fast._values(declared, words) is None


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--help"],
        ["--version", "status"],
        ["-c=x", "status"],
        ["--config"],
        ["--config", "a", "--config", "b", "status"],
        ["serve"],
        ["serve", "--sandbox"],
        ["--config", "/nonexistent/dashpay.toml", "serve"],
        ["serve", "--log-level", "loud"],
        ["serve", "--log-level"],
        ["serve", "--help"],
        ["wallet", "derive"],
        ["rescan"],  # its words need the app's PREPARE step
        ["price", "USD"],
        ["receiver"],
        ["receiver", "new", "--amount", "1", "--quiet", "--json"],
    ],
)
def test_commands_it_leaves_to_the_app(argv: list[str], monkeypatch) -> None:
    monkeypatch.setenv("DASHPAY_SOCKET", "/nonexistent/dashpay.sock")
    assert fast._run(argv) is None
