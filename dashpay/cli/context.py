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
from dashpay.domain.errors import EXIT_UNREACHABLE, EXIT_UPSTREAM, EXIT_USAGE, exit_code_for

JSON_HELP = "Print the result as JSON (the same data the control socket returns)."


@dataclass
class Globals:
    config: str | None = None
    socket: str | None = None


def fail(message: str, code: int, hint: str | None = None) -> NoReturn:
    # The message may quote data or come from the daemon: its control characters are
    # shown as escapes, never sent to the terminal (a message may list several problems
    # on lines of their own).
    text = f"dashpay: error: {visible_lines(message)}"
    if hint:
        text += f"\n{visible_lines(hint)}"
    print(text, file=sys.stderr)
    raise typer.Exit(code)


def print_json(data: Any) -> None:
    print(json_safe(json.dumps(data, indent=2, ensure_ascii=False, default=str)))


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
    from dashpay.net.control_client import ControlClient, DaemonUnreachable
    from dashpay.wire.jsonrpc import RemoteError

    path, source = socket_path(ctx.obj)
    try:
        with ControlClient(path, timeout=timeout) as client:
            return client.call(method, params or {})
    except DaemonUnreachable as exc:
        fail(f"{exc} [socket from {source}]", EXIT_UNREACHABLE)
    except RemoteError as exc:
        fail(f"{exc.message} [{exc.kind}]", exit_code_for(exc.kind))
    except TimeoutError as exc:
        fail(f"the daemon did not answer in time ({exc})", EXIT_UPSTREAM)
