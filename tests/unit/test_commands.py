"""The command table agrees with everything built from it or written about it: the
dispatcher, the CLI, the README and the exception classes."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from dashpay.api.commands import COMMANDS, SCOPES, Services
from dashpay.api.dispatch import Dispatcher
from dashpay.domain import errors
from dashpay.domain.errors import DashpayError

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()


def section(title: str) -> str:
    start = README.index(f"## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start:end]


class Everything:
    """A stand-in for every service: records which method a handler reached."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple, dict]] = []

    def __getattr__(self, name: str):
        async def record(*args, **kwargs):
            self.calls.append((name, args, kwargs))
            return {"called": name}

        return record


def services() -> Services:
    stub = Everything()

    async def status() -> dict:
        return {"state": "ready"}

    return Services(
        status=status,
        receivers=stub,
        callbacks=stub,
        prices=stub,
        reconciler=stub,
        apikeys=stub,
        sandbox=stub,
    )


def test_every_command_has_a_known_scope_and_help():
    for command in COMMANDS.values():
        assert command.scope in SCOPES, command.name
        assert command.help.strip(), command.name
        for param in command.params:
            assert param.help.strip(), (command.name, param.name)


@pytest.mark.parametrize("name", sorted(COMMANDS))
async def test_the_dispatcher_refuses_an_unknown_parameter_of_every_command(name):
    dispatch = Dispatcher(services(), sandbox=True)
    with pytest.raises(errors.InvalidParams, match="unknown parameter"):
        await dispatch(name, {"no_such_parameter": 1})


async def test_the_dispatcher_refuses_unknown_methods_and_sandbox_methods_outside_it():
    with pytest.raises(errors.MethodNotFound):
        await Dispatcher(services(), sandbox=True)("receiver.explode", {})
    with pytest.raises(errors.MethodNotFound, match="sandbox mode"):
        await Dispatcher(services(), sandbox=False)("sandbox.mine", {})


async def test_a_command_whose_service_has_not_started_is_unavailable():
    async def status() -> dict:
        return {}

    dispatch = Dispatcher(Services(status=status), sandbox=False, state=lambda: "starting")
    with pytest.raises(errors.Unavailable, match="the daemon is starting"):
        await dispatch("receiver.get", {"receiver_id": 1})
    assert await dispatch("status", {}) == {}


async def test_parsed_values_reach_the_service():
    s = services()
    await Dispatcher(s, sandbox=True)("receiver.get", {"receiver_id": "7"})
    assert s.receivers.calls == [("get", (7,), {})]


def test_every_method_is_in_the_readme_with_its_parameters():
    text = section("Control socket")
    for command in COMMANDS.values():
        row = next(
            (line for line in text.splitlines() if line.startswith(f"| `{command.name}` |")), None
        )
        assert row is not None, f"README's control socket table has no row for {command.name}"
        for param in command.params:
            assert f"`{param.name}`" in row, (command.name, param.name)
        assert command.scope in row


def test_every_cli_command_is_in_the_readme_cli_reference():
    text = section("CLI reference")
    for command in COMMANDS.values():
        if command.cli:
            assert f"`dashpay {' '.join(command.cli)}" in text, command.cli


def test_every_error_kind_is_in_the_readme_with_an_exit_code():
    assert {cls.kind for cls in errors._CLASS_BY_KIND.values()} == errors.ERROR_KINDS
    text = section("Control socket")
    for kind in errors.ERROR_KINDS:
        assert f"`{kind}`" in text, kind
    for kind in errors.ERROR_KINDS:
        error = DashpayError(kind, "x")
        assert error.kind == kind
        assert errors.exit_code_for(kind) == type(error).exit_code


def _help(*words: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "dashpay", *words, "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin", "TERM": "dumb"},
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_the_cli_offers_every_table_command_with_its_parameters():
    for command in COMMANDS.values():
        if not command.cli:
            continue
        text = _help(*command.cli)
        for param in command.params:
            if not param.cli:
                continue
            spelled = param.cli.split("/")[0] if param.cli.startswith("-") else param.cli
            assert re.search(re.escape(spelled), text), (command.cli, spelled)
        assert "--json" in text
