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
from typing import Any

import typer

from dashpay.api.commands import COMMANDS, Command, Param
from dashpay.cli import prices, render
from dashpay.cli.context import JSON_HELP, call, fail, print_json
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


def _exit_code(method: str, result: Any) -> int | None:
    """Exit codes that follow from the answer, with --json or without."""
    if method == "status":
        return render.status_exit(result)
    if method == "callbacks.test":
        return render.callbacks_test_exit(result)
    if method == "price.get":
        return prices.exit_code(result)
    return None


def _typer_parameter(param: Param) -> tuple[Any, Any]:
    """(annotation, default) of the Typer parameter for a table parameter."""
    spelling = param.cli or ""
    if spelling.startswith("-"):
        names = spelling.split(" ")
        if param.cli_type is list:  # repeated: --scope a --scope b; the table checks it
            return list[str] | None, typer.Option(None, *names, help=param.help)
        if param.cli_type is bool:
            return bool, typer.Option(bool(param.cli_default), *names, help=param.help)
        annotation = param.cli_type if param.cli_default is not None else param.cli_type | None
        required = param.required and param.cli_default is None
        default = ... if required else param.cli_default
        return annotation, typer.Option(default, *names, help=param.help)
    optional = spelling.startswith("[")
    if param.cli_type is list:
        return list[str] | None, typer.Argument(None, metavar=spelling, help=param.help)
    if optional:
        return str | None, typer.Argument(None, metavar=spelling, help=param.help)
    return str, typer.Argument(..., metavar=spelling, help=param.help)


def build(command: Command) -> Callable[..., None]:
    """The Typer command function of ``command``."""
    extras = CLI_EXTRAS.get(command.name, [])
    shown = [param for param in command.params if param.cli]
    prepare = PREPARE.get(command.name)
    renderer = render.RENDERERS[command.name]

    def run(ctx: typer.Context, **values: Any) -> None:
        as_json = values.pop("as_json")
        opts = {name: values.pop(name) for name, _, _ in extras}
        params: dict[str, Any] = {}
        for param in shown:
            value = values[param.name]
            if value is None or value == [] or (value is False and param.cli_default is False):
                continue
            params[param.name] = value
        if prepare is not None:
            params = prepare(params, opts)
        try:
            command.parse_params(params)  # the daemon parses again; this fails fast
        except DashpayError as exc:
            fail(exc.message, EXIT_USAGE)
        result = call(ctx, command.name, params, timeout=command.timeout)
        if as_json:
            print_json(result)
        else:
            renderer(result, opts)
        code = _exit_code(command.name, result)
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
    run.__doc__ = command.help
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
