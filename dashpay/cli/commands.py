"""The CLI commands that talk to the daemon, generated from the command table.

For each command of ``api/commands.py`` with a CLI path, a Typer command is built:
its arguments and options (names, help, defaults) come from the table's parameters,
the values are checked client-side with the table's own parsers (a typo fails with
exit 2 even while the daemon is down), sent to the daemon as that command's params,
and the answer is shown by the command's renderer (``cli/render.py``) or printed as it
is with ``--json``. What only the command line has (``-q``, the default of ``rescan``,
friendlier words for a bad flag combination) is declared here, per command.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, get_origin

import typer

from dashpay.api.commands import COMMANDS, Command, Param
from dashpay.cli import prices, render
from dashpay.cli.context import JSON_HELP, call, fail, json_errors
from dashpay.cli.exits import exit_code
from dashpay.cli.text import help_text, print_json
from dashpay.domain.errors import EXIT_USAGE, DashpayError

# Options that only the command line has, per command: (python name, typer option).
CLI_EXTRAS: dict[str, list[tuple[str, Any, Any]]] = {
    "receiver.create": [
        ("quiet", bool, typer.Option(False, "--quiet", "-q", help="Print only the address.")),
    ],
}

Prepare = Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]]


def _rescan(params: dict[str, Any], opts: dict[str, Any]) -> dict[str, Any]:
    chosen = sum((bool(params.get("receiver_ids")), bool(params.get("all_pending")),
                  params.get("since") is not None))  # fmt: skip
    if chosen > 1:
        fail("give receiver IDs, --all-pending or --since, not several", EXIT_USAGE)
    if chosen == 0:
        return {"all_pending": True}
    params.pop("all_pending", None)
    return params


def _callbacks_retry(params: dict[str, Any], opts: dict[str, Any]) -> dict[str, Any]:
    all_failed = params.pop("all_failed", False)
    if ("event_id" in params) == all_failed:
        fail("give an EVENT_ID or --all-failed (not both)", EXIT_USAGE)
    if "receiver_id" in params and not all_failed:
        fail("--receiver goes with --all-failed", EXIT_USAGE)
    if all_failed:
        params["all_failed"] = True
    return params


def _price(params: dict[str, Any], opts: dict[str, Any]) -> dict[str, Any]:
    return prices.check_codes(params)


# The command line's own words before the table's parsers check the values.
PREPARE: dict[str, Prepare] = {
    "rescan": _rescan,
    "callbacks.retry": _callbacks_retry,
    "price.get": _price,
}


def _typer_parameter(param: Param) -> tuple[Any, Any]:
    """(annotation, default) of the Typer parameter for a table parameter."""
    spelling = param.cli or ""
    shown_help = help_text(param.help)
    if spelling.startswith("-"):
        names = spelling.split(" ")
        if param.cli_type is list:  # repeated: --scope a --scope b; the table checks it
            return list[str] | None, typer.Option(None, *names, help=param.help)
        if param.cli_type is bool:
            return bool, typer.Option(bool(param.cli_default), *names, help=shown_help)
        annotation = param.cli_type if param.cli_default is not None else param.cli_type | None
        required = param.required and param.cli_default is None
        default = ... if required else param.cli_default
        return annotation, typer.Option(default, *names, help=shown_help)
    optional = spelling.startswith("[")
    if get_origin(param.cli_type) is list:
        return param.cli_type | None, typer.Argument(None, metavar=spelling, help=shown_help)
    if optional:
        return str | None, typer.Argument(None, metavar=spelling, help=shown_help)
    return param.cli_type, typer.Argument(..., metavar=spelling, help=shown_help)


def check_params(command: Command, params: dict[str, Any]) -> None:
    """Exit 2 if the table's parsers refuse ``params`` (the daemon parses them again;
    this fails fast, even while the daemon is down)."""
    try:
        command.parse_params(params)
    except DashpayError as exc:
        fail(exc.message, EXIT_USAGE)


def build(command: Command) -> Callable[..., None]:
    """The Typer command function of ``command``."""
    extras = CLI_EXTRAS.get(command.name, [])
    shown = [param for param in command.params if param.cli]
    prepare = PREPARE.get(command.name)
    renderer = render.RENDERERS[command.name]

    def run(ctx: typer.Context, **values: Any) -> None:
        as_json = values.pop("as_json")
        json_errors(as_json)
        opts = {name: values.pop(name) for name, _, _ in extras}
        if as_json and opts.get("quiet"):
            fail("--json and -q/--quiet do not go together: --json prints the whole "
                 "answer, -q only the address; give one of them", EXIT_USAGE)  # fmt: skip
        params: dict[str, Any] = {}
        for param in shown:
            value = values[param.name]
            if value is None or value == [] or (value is False and param.cli_default is False):
                continue
            params[param.name] = value
        if prepare is not None:
            params = prepare(params, opts)
        check_params(command, params)
        result = call(ctx, command.name, params, timeout=command.timeout)
        if as_json:
            print_json(result)
        else:
            renderer(result, opts)
        code = exit_code(command.name, result)
        if code:
            raise typer.Exit(code)

    parameters = [
        inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)
    ]
    annotations: dict[str, Any] = {"ctx": typer.Context, "return": None}
    for param in shown:
        annotation, default = _typer_parameter(param)
        name = param.name
        parameters.append(
            inspect.Parameter(
                name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation
            )
        )
        annotations[name] = annotation
    for name, annotation, default in [
        *extras,
        ("as_json", bool, typer.Option(False, "--json", help=JSON_HELP)),
    ]:
        parameters.append(
            inspect.Parameter(
                name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation
            )
        )
        annotations[name] = annotation
    run.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    run.__annotations__ = annotations
    run.__doc__ = help_text(command.help)
    run.__name__ = command.name.replace(".", "_")
    return run


def add_to(groups: dict[str, typer.Typer]) -> None:
    """Register every table command with a CLI path: ("receiver", "new") goes to the
    ``receiver`` group as ``new``; a one-word path to the top-level app (``""``)."""
    for command in COMMANDS.values():
        if not command.cli:
            continue
        *group, name = command.cli
        target = groups["".join(group)]
        target.command(name)(build(command))


# One command line parameter as cli/fast.py reads it: (name, spelling, type: "str", "int"
# or "bool", default, required, CLI-only).
FastParam = tuple[str, str, str, Any, bool, bool]


def fast_view() -> dict[tuple[str, ...], tuple[str, float, tuple[FastParam, ...]]]:
    """What ``cli/fast.py`` needs of the table, as ``cli/fast_table.py`` holds it: per CLI
    path, (method, timeout, its parameters as the Typer command above declares them,
    the CLI-only options of ``CLI_EXTRAS`` last). Only the commands that need no
    ``PREPARE`` and take single values."""
    view = {}
    for command in COMMANDS.values():
        if not command.cli or command.name in PREPARE:
            continue
        params: list[FastParam] = []
        for param in command.params:
            if not param.cli:
                continue
            kind = param.cli_type
            argument = not param.cli.startswith("-")
            required = (not param.cli.startswith("[")) if argument else (
                param.required and param.cli_default is None)  # fmt: skip
            params.append((param.name, param.cli, getattr(kind, "__name__", ""),
                           param.cli_default, required, False))  # fmt: skip
        for name, kind, option in CLI_EXTRAS.get(command.name, []):
            params.append((name, " ".join(option.param_decls), kind.__name__, option.default,
                           False, True))  # fmt: skip
        if all(kind in ("str", "int", "bool") for _, _, kind, *_ in params):
            view[command.cli] = (command.name, command.timeout, tuple(params))
    return view


def write_fast_table(path: str) -> None:
    """Write ``cli/fast_table.py`` from the table (``python -m dashpay.cli.commands``)."""
    import pprint

    text = (
        '"""The command table as cli/fast.py reads it: GENERATED from api/commands.py and\n'
        "cli/commands.py by `python -m dashpay.cli.commands` (do not edit; a unit test checks\n"
        'that it is current). Plain data: importing it costs nothing."""\n\n'
        f"COMMANDS = {pprint.pformat(fast_view(), width=95, sort_dicts=True)}\n"
    )
    with open(path, "w") as handle:
        handle.write(text)


if __name__ == "__main__":
    import sys
    from pathlib import Path

    write_fast_table(sys.argv[1] if len(sys.argv) > 1 else str(Path(__file__).with_name(
        "fast_table.py")))  # fmt: skip
