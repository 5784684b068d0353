"""Credential files: a password or secret read from a file, with systemd's
``$CREDENTIALS_DIRECTORY`` (LoadCredential=) expanded. The content never appears in
a message.

Inside the service systemd sets ``$CREDENTIALS_DIRECTORY`` and copies each
``LoadCredential=ID:SOURCE`` there as ``ID``. ``dashpay config check`` runs outside the
service, where the variable is not set: given an ``OfflineCheck`` it reads the unit's
SOURCE for ``$CREDENTIALS_DIRECTORY/ID`` instead, or, with no unit to go by, leaves the
credential unchecked and says so.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from dashpay.config.errors import ConfigError, key_label

# A password or an HMAC secret; a bigger credential file is the wrong file.
MAX_SECRET_FILE_BYTES = 4096
CREDENTIALS_ENV = "CREDENTIALS_DIRECTORY"

_CREDENTIALS_VARIABLE = re.compile(
    r"\$\{CREDENTIALS_DIRECTORY\}|\$CREDENTIALS_DIRECTORY(?![A-Za-z0-9_])"
)
# A credential path: the variable, one slash, the credential's ID (no slash in an ID).
_CREDENTIAL_PATH = re.compile(rf"(?:{_CREDENTIALS_VARIABLE.pattern})/([^/]+)")
# Stands in for a credential config check cannot read, so the rest is still checked.
UNCHECKED_SECRET = "<credential not checked: only the service sees it>"


@dataclass
class OfflineCheck:
    """How config check reads secret files outside the service, and what it found.

    ``credentials`` maps a credential ID to its source file as the unit loads it (None
    for a form config check cannot read, such as SetCredentialEncrypted=); the whole
    mapping is None when no unit is known. ``read`` lists the files read directly, for
    the check that the service's user can read them too."""

    credentials: Mapping[str, Path | None] | None = None
    unit: Path | None = None
    read: list[tuple[str, Path]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


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
    offline: OfflineCheck | None = None,
    limit: int = MAX_SECRET_FILE_BYTES,
    what: str = "the secret",
) -> tuple[Path, str]:
    """(resolved path, content without one trailing newline). Never shows the content.
    ``limit``: the largest file accepted, in bytes; ``what`` the file holds, for hints."""
    env = os.environ if env is None else env
    text = str(path)
    if offline is not None and not env.get(CREDENTIALS_ENV) and _CREDENTIALS_VARIABLE.search(text):
        return Path(text), _read_credential_offline(
            text, key=key, offline=offline, limit=limit, what=what
        )
    expanded = Path(_expand_credentials_directory(text, key=key, env=env))
    if not expanded.is_absolute():
        expanded = (base_dir if base_dir is not None else Path.cwd()) / expanded
    if offline is not None:
        offline.read.append((key, expanded))
    return expanded, _read_file(expanded, key=key, limit=limit, what=what)


def _read_credential_offline(
    text: str, *, key: str, offline: OfflineCheck, limit: int, what: str
) -> str:
    """The content of ``$CREDENTIALS_DIRECTORY/ID`` as the unit would load it."""
    match = _CREDENTIAL_PATH.fullmatch(text)
    if match is None:
        raise ConfigError(
            f"{text} is not a credential path",
            key=key,
            hint="write ${CREDENTIALS_DIRECTORY}/ID, ID as in the unit's LoadCredential=ID:FILE",
        )
    ident = match.group(1)
    label = key_label(key)
    if offline.credentials is None:
        offline.notes.append(
            f"{label}: {text} exists only inside the service (systemd LoadCredential=); "
            "not checked here: pass --unit with the service's unit file to check its source"
        )
        return UNCHECKED_SECRET
    if ident not in offline.credentials:
        raise ConfigError(
            f"{text} names the credential {ident!r}, but {offline.unit} loads no "
            "credential of that name",
            key=key,
            hint=f"add LoadCredential={ident}:/etc/dashpay/{ident} to the unit's [Service]",
        )
    source = offline.credentials[ident]
    if source is None:
        offline.notes.append(
            f"{label}: the credential {ident!r} is set in {offline.unit} in a form config "
            "check cannot read; not checked"
        )
        return UNCHECKED_SECRET
    loaded = f"LoadCredential={ident} in {offline.unit}"
    try:
        content = _read_file(source, key=key, limit=limit, what=what)
    except ConfigError as exc:
        if os.access(source, os.F_OK) and not os.access(source, os.R_OK):
            offline.notes.append(
                f"{label}: {source} ({loaded}) cannot be read by you; systemd reads it as "
                "root: run config check as root to check it"
            )
            return UNCHECKED_SECRET
        exc.message = f"{exc.message} (the source of {loaded})"
        raise
    offline.notes.append(f"{label}: {text} is {source} ({loaded})")
    return content


def _read_file(expanded: Path, *, key: str, limit: int, what: str) -> str:
    fix = "check the path; under systemd, LoadCredential= and $CREDENTIALS_DIRECTORY help"
    try:
        with open(expanded, "rb") as handle:
            data = handle.read(limit + 1)
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
    if len(data) > limit:
        raise ConfigError(
            f"{expanded} is larger than {limit} bytes",
            key=key,
            hint=f"the file must hold only {what}",
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{expanded} is not UTF-8 text", key=key) from None
    text = text.removesuffix("\n").removesuffix("\r")
    if not text:
        raise ConfigError(f"{expanded} is empty", key=key, hint=f"write {what} into it")
    return text
