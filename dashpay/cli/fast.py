"""The fast path of the `dashpay` command: a daemon command, called the way it usually is
(``dashpay receiver new --amount 1.5``), without building the Typer app.

A command that talks to the daemon needs its parameters, the socket path and the
answer's renderer; the Typer app (typer, click, the whole command tree) and the full
config schema cost ~100 ms more than that, for a ~1 ms request. ``run`` recognises the
commands of ``cli/fast_table.py`` (generated from the command table, checked against
it by a unit test), reads their arguments, finds the socket as ``cli/context.py``
does (only [control] of the config, ``config/quick.py``), sends the request, and shows
the answer with the same renderer.

It is an optimistic path: it handles the plain, successful case and hands everything
else to the full app (``None``: run ``cli/app.py`` instead), so what is printed and the
exit code stay the same as with the app:

- before anything is sent: any word it does not recognise (``--help``, ``--version``, a
  repeated or unknown option, a value that is not plainly an integer, a missing
  argument, -q with --json), any doubt about the config file, and a daemon it cannot
  connect to. The app then runs from the start and says what is wrong;
- after the request was sent (it is never sent twice): a failed call is reported as
  the app reports it, and first, as the app would have before sending, the table's
  parsers check the parameters, so a value they refuse fails with exit 2 as always.

`dashpay serve` on a config file takes this path too (``_serve``): the daemon keeps
what it imports for as long as it runs, and the app is ~2.4 MB of its memory (issue 19).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from dashpay.cli.fast_table import COMMANDS


def run(argv: list[str]) -> int | None:
    """The exit code of the command ``argv`` (without the program name), or None when
    the full app must run it."""
    try:
        return _run(argv)
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except BrokenPipeError:
        # As the app (click) does: the reader went away (`| head`): exit 1, quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except Exception as exc:  # noqa: BLE001 - a bug: the app's message and exit 7
        from dashpay.cli import context

        context.json_errors(_as_json)
        context.internal_error(exc)


# Whether the command was given --json, for the message of a bug (``run``).
_as_json = False


def _run(argv: list[str]) -> int | None:
    options, rest = _global_options(argv)
    if options is None:
        return None
    if rest[:1] == ["serve"]:
        return _serve(options, rest[1:])
    words = 2 if tuple(rest[:2]) in COMMANDS and len(rest) >= 2 else 1
    found = COMMANDS.get(tuple(rest[:words]))
    if found is None:
        return None
    method, timeout, declared = found
    values = _values(declared, rest[words:])
    if values is None:
        return None
    global _as_json
    as_json = _as_json = values.pop("as_json", False)
    opts = {name: values.pop(name) for name, *_, extra in declared if extra}
    if as_json and opts.get("quiet"):
        return None
    params = {}
    for name, _, _, default, _, _ in declared:
        value = values.get(name)
        if name in opts or value is None or (value is False and default is False):
            continue
        params[name] = value
    where = _socket(options)
    if where is None:
        return None
    return _call(method, timeout, params, opts, as_json, *where)


def _global_options(argv: list[str]) -> tuple[dict[str, str] | None, list[str]]:
    """The app's own options before the command (``--config``, ``-c``, ``--socket``) and
    what follows them; None for anything else (``--version``, ``--help``...)."""
    options: dict[str, str] = {}
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        name, equals, value = argv[i].partition("=")
        if name not in ("--config", "-c", "--socket") or (equals and name == "-c"):
            return None, []
        if not equals:
            i += 1
            if i == len(argv) or argv[i].startswith("-"):
                return None, []
            value = argv[i]
        key = "socket" if name == "--socket" else "config"
        if key in options:
            return None, []
        options[key] = value
        i += 1
    return options, argv[i:]


def _values(declared: tuple[Any, ...], words: list[str]) -> dict[str, Any] | None:
    """Each parameter's value as Typer would give it, or None if the words are anything
    but plain: options known and given once, values given in full, integers in digits."""
    flags: dict[str, tuple[str, bool]] = {"--json": ("as_json", True)}
    valued: dict[str, tuple[str, str]] = {}
    arguments: list[tuple[str, str, bool]] = []
    values: dict[str, Any] = {}
    for name, spelling, kind, default, required, _ in declared:
        if not spelling.startswith("-"):
            arguments.append((name, kind, required))
            continue
        values[name] = default
        if kind != "bool":
            valued.update((each, (name, kind)) for each in spelling.split(" "))
        elif "/" in spelling:
            on, off = spelling.split("/")
            flags[on], flags[off] = (name, True), (name, False)
        else:
            flags.update((each, (name, True)) for each in spelling.split(" "))
    given: set[str] = set()
    positional: list[str] = []
    words = list(words)
    while words:
        word = words.pop(0)
        if not word.startswith("-"):
            positional.append(word)
            continue
        option, equals, text = word.partition("=")
        if word in flags:
            name, value = flags[word]
        elif option in valued and (not equals or option.startswith("--")):
            if not equals:
                if not words or words[0].startswith("-"):
                    return None
                text = words.pop(0)
            name, kind = valued[option]
            value = _converted(text, kind)
            if value is None:
                return None
        else:
            return None
        if name in given:
            return None
        given.add(name)
        values[name] = value
    if len(positional) > len(arguments):
        return None
    for index, (name, kind, required) in enumerate(arguments):
        if index >= len(positional):
            if required:
                return None
            values[name] = None
            continue
        value = _converted(positional[index], kind)
        if value is None:
            return None
        values[name] = value
    for name, spelling, _, _, required, _ in declared:
        if required and spelling.startswith("-") and name not in given:
            return None
    return values


def _converted(text: str, kind: str) -> Any:
    if kind == "int":
        return int(text) if text and all("0" <= c <= "9" for c in text) else None
    return text


def _serve(options: dict[str, str], words: list[str]) -> int | None:
    """`dashpay serve` on a config file (``--log-level`` its only option): the daemon
    without the Typer app, whose modules would stay in its memory for good (~4 MB,
    issue 19). Anything else (``--sandbox``, ``--help``, a bad level, a config file
    the loader refuses or cannot find) is the app's to run and explain."""
    from dashpay.daemon.logs import LEVELS

    level = None
    if words[:1] == ["--log-level"] and len(words) == 2:
        level = words[1]
    elif len(words) == 1 and words[0].startswith("--log-level="):
        level = words[0].partition("=")[2]
    elif words:
        return None
    if level is not None and level not in LEVELS:
        return None
    from dashpay.config.errors import ConfigError
    from dashpay.config.files import resolve_config_path
    from dashpay.config.load import load_config

    try:
        path, _ = resolve_config_path(options.get("config"))
        if path is None:
            return None
        config = load_config(path)
    except ConfigError:
        return None
    from dashpay.daemon.root import serve

    return serve(config, socket=options.get("socket"), log_level=level)


def _socket(options: dict[str, str]) -> tuple[Path, str] | None:
    """(socket path, where it came from) as ``context.socket_path`` finds it, or None
    when the config file needs the full reader (to be used, or to say what is wrong)."""
    if options.get("socket"):
        return Path(options["socket"]), "--socket"
    env = os.environ.get("DASHPAY_SOCKET")
    if env:
        return Path(env), "DASHPAY_SOCKET"
    from dashpay.config.quick import config_file, control_socket

    path, ok = config_file(options.get("config"))
    if not ok:
        return None
    if path is not None:
        socket = control_socket(path)
        return None if socket is None else (socket, f"[control] socket in {path}")
    from dashpay.config.paths import sandbox_socket

    return sandbox_socket(), "sandbox default (no config file found)"


def _call(
    method: str,
    timeout: float,
    params: dict[str, Any],
    opts: dict[str, Any],
    as_json: bool,
    path: Path,
    source: str,
) -> int | None:
    from dashpay.net.control_client import ControlClient

    with ControlClient(path, timeout=timeout) as client:
        try:
            client.connect()
        except Exception:  # noqa: BLE001 - nothing was sent: the app tries and says why
            return None
        try:
            result = client.call(method, params)
        except Exception as exc:  # noqa: BLE001 - reported as the app reports it
            return _failed(exc, method, params, as_json, path, source)
    if as_json:
        from dashpay.cli.text import print_json

        print_json(result)
    else:
        from dashpay.cli.render import RENDERERS

        RENDERERS[method](result, opts)
    from dashpay.cli.exits import exit_code

    return exit_code(method, result) or 0


def _failed(
    exc: Exception, method: str, params: dict[str, Any], as_json: bool, path: Path, source: str
) -> int:
    """The exit code of a call that failed, with the app's message: the parameters'
    error if the table's parsers refuse them (the app checks them before it sends),
    else the call's."""
    import typer

    from dashpay.api.commands import COMMANDS as TABLE
    from dashpay.cli import context
    from dashpay.cli.commands import check_params

    try:
        context.json_errors(as_json)
        check_params(TABLE[method], params)
        context.call_failed(exc, path, source)
    except typer.Exit as stop:
        return stop.exit_code
