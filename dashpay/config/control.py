"""[control]: where the daemon's control socket is, and reading only that section.

``load_control_config`` is what a CLI client needs to find the daemon: it reads the
file and the key table, but not the other sections' dataclasses, database URLs or
secret files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from dashpay.config.errors import ConfigError
from dashpay.config.files import read_toml
from dashpay.config.keys import Reader, check_sections, default

# sockaddr_un.sun_path is 108 bytes on Linux, including the terminating NUL.
MAX_UNIX_SOCKET_PATH_BYTES = 107


@dataclass(frozen=True, slots=True)
class ControlConfig:
    socket: Path = default("control", "socket")


def load_control_config(path: Path | str) -> ControlConfig:
    """Only the [control] section of a config file: what a CLI client needs to find the
    daemon. The other sections are the daemon's business: a client neither validates
    them nor reads their secret files (which systemd hands to the service alone, e.g.
    ``password_file = "${CREDENTIALS_DIRECTORY}/db-password"``)."""
    path = Path(path)
    data = read_toml(path)
    check_sections(data, path)
    try:
        return build_control(Reader(path, data), path.absolute().parent)
    except ConfigError as exc:
        if exc.path is None:
            exc.path = path
        raise


def build_control(reader: Reader, base_dir: Path | None) -> ControlConfig:
    values = reader.section("control")
    control = ControlConfig(**values)
    socket = control.socket
    if not socket.is_absolute():
        socket = (base_dir if base_dir is not None else Path.cwd()) / socket
    if len(os.fsencode(socket)) > MAX_UNIX_SOCKET_PATH_BYTES:
        raise reader.error(
            "control",
            "socket",
            f"{socket} is over the {MAX_UNIX_SOCKET_PATH_BYTES}-byte limit of Unix socket paths",
            "use a shorter path such as /run/dashpay/control.sock",
        )
    return ControlConfig(socket=socket)
