"""Credential files: a password or secret read from a file, with systemd's
``$CREDENTIALS_DIRECTORY`` (LoadCredential=) expanded. The content never appears in
a message."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from dashpay.config.errors import ConfigError

# A password or an HMAC secret; a bigger credential file is the wrong file.
MAX_SECRET_FILE_BYTES = 4096
CREDENTIALS_ENV = "CREDENTIALS_DIRECTORY"

_CREDENTIALS_VARIABLE = re.compile(
    r"\$\{CREDENTIALS_DIRECTORY\}|\$CREDENTIALS_DIRECTORY(?![A-Za-z0-9_])"
)


def _expand_credentials_directory(text: str, *, key: str, env: Mapping[str, str]) -> str:
    """Expand $CREDENTIALS_DIRECTORY (set by systemd's LoadCredential=) and nothing else."""
    if not _CREDENTIALS_VARIABLE.search(text):
        return text
    directory = env.get(CREDENTIALS_ENV)
    if not directory:
        raise ConfigError(
            f"uses ${CREDENTIALS_ENV}, but that variable is not set",
            key=key,
            hint="systemd sets it for units with LoadCredential=; elsewhere give a plain path",
        )
    return _CREDENTIALS_VARIABLE.sub(lambda _: directory, text)


def read_secret_file(
    path: Path | str,
    *,
    key: str,
    base_dir: Path | None,
    env: Mapping[str, str] | None,
) -> tuple[Path, str]:
    """(resolved path, content without one trailing newline). Never shows the content."""
    expanded = Path(
        _expand_credentials_directory(str(path), key=key, env=os.environ if env is None else env)
    )
    if not expanded.is_absolute():
        expanded = (base_dir if base_dir is not None else Path.cwd()) / expanded
    fix = "check the path; under systemd, LoadCredential= and $CREDENTIALS_DIRECTORY help"
    try:
        with open(expanded, "rb") as handle:
            data = handle.read(MAX_SECRET_FILE_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"{expanded} does not exist", key=key, hint=fix) from None
    except IsADirectoryError:
        raise ConfigError(f"{expanded} is a directory, not a file", key=key, hint=fix) from None
    except PermissionError:
        raise ConfigError(
            f"{expanded} cannot be read (permission denied)",
            key=key,
            hint="make it readable by the user dashpay runs as (and by nobody else)",
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"{expanded} cannot be read ({exc.strerror})", key=key, hint=fix
        ) from None
    if len(data) > MAX_SECRET_FILE_BYTES:
        raise ConfigError(
            f"{expanded} is larger than {MAX_SECRET_FILE_BYTES} bytes",
            key=key,
            hint="the file must hold only the secret",
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{expanded} is not UTF-8 text", key=key) from None
    text = text.removesuffix("\n").removesuffix("\r")
    if not text:
        raise ConfigError(f"{expanded} is empty", key=key, hint="write the secret into it")
    return expanded, text
