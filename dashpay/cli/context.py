"""What every CLI command shares: global options, failing with an exit code, the
socket path and the call to the daemon. Stdlib and typer only."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import typer

from dashpay.cli.text import json_safe, visible_lines
from dashpay.domain.errors import (
    EXIT_INTERNAL,
    EXIT_UNREACHABLE,
    EXIT_UPSTREAM,
    EXIT_USAGE,
    INTERNAL,
    INVALID_PARAMS,
    UNAVAILABLE,
    UNREACHABLE,
    DashpayError,
    PermissionDenied,
    exit_code_for,
)

JSON_HELP = "Print the result as JSON (the same data the control socket returns)."


@dataclass
class Globals:
    config: str | None = None
    socket: str | None = None


def fail(
    message: str,
    code: int,
    hint: str | None = None,
    *,
    kind: str = INVALID_PARAMS,
    details: dict[str, Any] | None = None,
) -> NoReturn:
    """Stop with exit ``code``: "dashpay: error: MESSAGE" on stderr, or, when the
    command runs with --json, one JSON error object on stderr (stdout only ever holds
    a result), ``{"error": {"kind", "message", "exit_code", "hint"?, ...details}}``."""
    if _json_output():
        error: dict[str, Any] = {"kind": kind, "message": message, "exit_code": code}
        if hint:
            error["hint"] = hint
        error.update((key, value) for key, value in (details or {}).items() if key not in error)
        encoded = json.dumps({"error": error}, ensure_ascii=False, default=str)
        print(json_safe(encoded), file=sys.stderr)
        raise typer.Exit(code)
    # The message may quote data or come from the daemon: its control characters are
    # shown as escapes, never sent to the terminal (a message may list several problems
    # on lines of their own).
    text = f"dashpay: error: {visible_lines(message)}"
    if hint:
        text += f"\n{visible_lines(hint)}"
    print(text, file=sys.stderr)
    raise typer.Exit(code)


def fail_on(error: DashpayError, suffix: str = "") -> NoReturn:
    """``fail`` with an error's own message, exit code, kind and details."""
    fail(error.message + suffix, error.exit_code, kind=error.kind, details=error.details)


# Whether the running command was given --json: set once by the command (a CLI
# process runs one), read by ``fail``, which is called from everywhere.
_json_errors = False


def json_errors(enabled: bool) -> None:
    """From here on, ``fail`` writes its error as a JSON object (the command's --json)."""
    global _json_errors
    _json_errors = enabled


def _json_output() -> bool:
    return _json_errors


def _load_config(g: Globals, *, required: bool):
    """The Config from --config / $DASHPAY_CONFIG / /etc/dashpay/config.toml, or None."""
    from dashpay.config.errors import ConfigError
    from dashpay.config.files import resolve_config_path
    from dashpay.config.load import load_config

    try:
        path, source = resolve_config_path(g.config)
        if path is None:
            if required:
                fail(
                    "no configuration file found",
                    EXIT_USAGE,
                    "Pass --config PATH, set DASHPAY_CONFIG, or create /etc/dashpay/config.toml "
                    "(see config.example.toml); or try `dashpay serve --sandbox`.",
                )
            return None
        return load_config(path)
    except ConfigError as exc:
        fail(str(exc), EXIT_USAGE)


def socket_path(g: Globals) -> tuple[Path, str]:
    """--socket, else $DASHPAY_SOCKET, else the config's [control] socket, else (no
    config anywhere) the sandbox daemon's socket."""
    if g.socket:
        return Path(g.socket), "--socket"
    env = os.environ.get("DASHPAY_SOCKET")
    if env:
        return Path(env), "DASHPAY_SOCKET"
    from dashpay.config.control import load_control_config
    from dashpay.config.errors import ConfigError
    from dashpay.config.files import resolve_config_path

    try:
        path, _ = resolve_config_path(g.config)
        if path is not None:
            # Only [control]: the daemon validates the rest and alone may read its
            # secret files (systemd credentials are not there for a shell script).
            control = load_control_config(path)
            return Path(control.socket), f"[control] socket in {path}"
    except ConfigError as exc:
        fail(str(exc), EXIT_USAGE)
    from dashpay.config.paths import sandbox_socket

    return sandbox_socket(), "sandbox default (no config file found)"


def call(
    ctx: typer.Context,
    method: str,
    params: dict[str, Any] | None = None,
    *,
    timeout: float = 65.0,
) -> Any:
    from dashpay.net.control_client import ControlClient

    path, source = socket_path(ctx.obj)
    try:
        with ControlClient(path, timeout=timeout) as client:
            return client.call(method, params or {})
    except Exception as exc:  # noqa: BLE001 - call_failed re-raises what it does not know
        call_failed(exc, path, source)


def call_failed(exc: Exception, path: Path, source: str) -> NoReturn:
    """``fail`` as a call to the daemon at ``path`` (found from ``source``) that raised
    ``exc`` must; an exception that is not about the call is raised again."""
    from dashpay.net.control_client import DaemonUnreachable
    from dashpay.wire.jsonrpc import RemoteError

    if isinstance(exc, DaemonUnreachable):
        fail(
            f"{exc} [socket from {source}]",
            EXIT_UNREACHABLE,
            kind=UNREACHABLE,
            details={"socket": str(path)},
        )
    if isinstance(exc, PermissionDenied):
        fail_on(exc, f" [socket from {source}]")
    if isinstance(exc, RemoteError):
        fail(f"{exc.message} [{exc.kind}]", exit_code_for(exc.kind), kind=exc.kind)
    if isinstance(exc, TimeoutError):
        fail(f"the daemon did not answer in time ({exc})", EXIT_UPSTREAM, kind=UNAVAILABLE)
    raise exc


def internal_error(exc: Exception) -> NoReturn:
    """A bug in the CLI: its traceback, then exit 7 with a message saying so (not 1)."""
    import traceback

    traceback.print_exc()
    try:
        fail(f"internal error in the CLI (a bug; the traceback is above): {exc!r:.200}",
             EXIT_INTERNAL, kind=INTERNAL)  # fmt: skip
    except typer.Exit as stop:
        raise SystemExit(stop.exit_code) from None
