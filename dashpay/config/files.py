"""Which config file to use (--config, $DASHPAY_CONFIG, /etc/dashpay/config.toml) and
reading it as TOML. Stdlib only: the CLI does this on every command."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

from dashpay.config import paths
from dashpay.config.errors import ConfigError

# A config file is a few kilobytes; a bigger one is the wrong file (a log, a database).
MAX_CONFIG_BYTES = 1024 * 1024

# These are looked up through the module at call time so tests can point them elsewhere.
DEFAULT_CONFIG_PATH = paths.DEFAULT_CONFIG_PATH
CONFIG_ENV = "DASHPAY_CONFIG"


def resolve_config_path(
    cli_value: str | None, env: Mapping[str, str] = os.environ, *, given_by: str = "--config"
) -> tuple[Path | None, str]:
    """Which config file to use, and where that choice came from.

    ``cli_value`` (from ``given_by``: --config, or a command's PATH argument), else
    $DASHPAY_CONFIG, else /etc/dashpay/config.toml if it exists, else (None, "none"). A
    path given explicitly that does not exist is a ConfigError naming where it came from.
    """
    if cli_value:
        return _must_exist(Path(cli_value), given_by), given_by
    from_env = env.get(CONFIG_ENV)
    if from_env:
        return _must_exist(Path(from_env), CONFIG_ENV), CONFIG_ENV
    if DEFAULT_CONFIG_PATH.exists():
        return DEFAULT_CONFIG_PATH, "default"
    return None, "none"


def _must_exist(path: Path, source: str) -> Path:
    if not path.exists():
        shown = f"${source}" if source == CONFIG_ENV else source
        raise ConfigError(
            f"the config file given by {shown} does not exist",
            path=path,
            hint=f"check the path given by {shown} (see config.example.toml for a template)",
        )
    return path


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError("does not exist", path=path, hint="check the path") from None
    except IsADirectoryError:
        raise ConfigError("is a directory, not a file", path=path) from None
    except PermissionError:
        raise ConfigError(
            "cannot be read (permission denied)",
            path=path,
            hint="run as a user that may read it (e.g. in the dashpay group)",
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot be read ({exc.strerror})", path=path) from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"is larger than {MAX_CONFIG_BYTES // 1024} KiB",
            path=path,
            hint="is it the right file?",
        )
    try:
        text = raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError:
        raise ConfigError("is not UTF-8 text", path=path, hint="save it as UTF-8") from None
    try:
        return tomllib.loads(text, parse_float=Decimal)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"is not valid TOML: {exc}",
            path=path,
            hint='strings need double quotes, e.g. network = "mainnet"',
        ) from None
