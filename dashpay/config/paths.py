"""Where dashpay keeps things when no config file says otherwise. Stdlib only."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

DEFAULT_CONFIG_PATH = Path("/etc/dashpay/config.toml")
SANDBOX_DB_NAME = "sandbox.sqlite3"
SANDBOX_KEY_NAME = "sandbox-wallet.txt"
SANDBOX_SOCKET_NAME = "control.sock"


def state_dir(env: Mapping[str, str] = os.environ) -> Path:
    """$XDG_STATE_HOME/dashpay, else ~/.local/state/dashpay (XDG base directory spec)."""
    base = env.get("XDG_STATE_HOME")
    if base and Path(base).is_absolute():
        return Path(base) / "dashpay"
    home = env.get("HOME") or str(Path.home())
    return Path(home) / ".local" / "state" / "dashpay"


def sandbox_socket(env: Mapping[str, str] = os.environ) -> Path:
    return state_dir(env) / SANDBOX_SOCKET_NAME
