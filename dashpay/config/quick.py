"""The control socket's path from a config file without the key table: the CLI's fast
path (``cli/fast.py``) reads only this before it calls the daemon.

``control_socket`` answers only when it is sure that ``control.load_control_config``
would give the same path without an error; otherwise (an unknown section, a wrong
type, an unreadable file...) it answers None and the caller takes the full path, which
says what is wrong. The facts it needs from ``keys.CONFIG_KEYS`` are copied here, and
``tests/unit/test_cli_fast.py`` checks them against that table.
"""

from __future__ import annotations

import os
from pathlib import Path

from dashpay.config.errors import ConfigError
from dashpay.config.files import read_toml, resolve_config_path
from dashpay.domain.limits import MAX_UNIX_SOCKET_PATH_BYTES

# The sections of keys.CONFIG_KEYS, and the default of [control] socket.
SECTIONS = frozenset(
    (
        "wallet", "database", "control", "http", "checkout", "insight", "receivers",
        "callbacks", "prices", "logging", "network", "tls", "chain", "blockbook",
        "dashd",
    )
)  # fmt: skip
DEFAULT_SOCKET = "/run/dashpay/control.sock"


def config_file(given: str | None) -> tuple[Path | None, bool]:
    """(the config file ``resolve_config_path`` picks or None, True) or, when it would
    raise, (None, False)."""
    try:
        return resolve_config_path(given)[0], True
    except ConfigError:
        return None, False


def control_socket(path: Path) -> Path | None:
    """[control] socket of the file at ``path`` as ``load_control_config`` gives it, or
    None when that would raise (or might)."""
    try:
        data = read_toml(path)
    except ConfigError:
        return None
    if any(name not in SECTIONS or not isinstance(value, dict) for name, value in data.items()):
        return None
    control = data.get("control", {})
    if any(key != "socket" for key in control):
        return None
    raw = control.get("socket", DEFAULT_SOCKET)
    if not isinstance(raw, str) or not raw.strip() or "\x00" in raw:
        return None
    socket = Path(raw.strip())
    if not socket.is_absolute():
        socket = path.absolute().parent / socket
    if len(os.fsencode(socket)) > MAX_UNIX_SOCKET_PATH_BYTES:
        return None
    return socket
