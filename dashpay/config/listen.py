"""Value checkers of the [http] keys: listen addresses, trusted proxy networks, CORS
origins and byte sizes (TOML value -> Python value; ``WrongType``/``Invalid`` on error).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any
from urllib.parse import urlsplit

from dashpay.config.errors import Invalid, WrongType
from dashpay.config.text import describe, quote

_HOST_NAME = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*$")
_SIZE = re.compile(r"^\s*(\d+)\s*(b|kib|kb|k|mib|mb|m)?\s*$", re.IGNORECASE)
_UNITS = {
    None: 1,
    "b": 1,
    "k": 1024,
    "kb": 1024,
    "kib": 1024,
    "m": 2**20,
    "mb": 2**20,
    "mib": 2**20,
}
# A request body the API could want: a receiver's fields are a few hundred bytes.
MIN_BODY_BYTES = 1024
MAX_BODY_BYTES = 16 * 2**20
_LISTEN_HINT = 'e.g. listen = ["127.0.0.1:8080", "[::1]:8080"]'


def _strings(value: Any) -> list[str]:
    if not isinstance(value, list):
        raise WrongType
    for item in value:
        if not isinstance(item, str):
            raise Invalid(f"every entry must be a string, found {describe(item)}")
    return [item.strip() for item in value]


def listen_address(text: str) -> tuple[str, int]:
    """(host, port) of "host:port", "[v6]:port"; port 0 takes any free port."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise Invalid(f"{quote(text)} is not host:port", _LISTEN_HINT)
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise Invalid(f"{quote(text)}: {host} is not an IPv6 address", _LISTEN_HINT) from None
        return host[1:-1], int(port)
    if ":" in host:
        raise Invalid(f"{quote(text)}: write an IPv6 address in brackets", "e.g. [::1]:8080")
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        if not _HOST_NAME.fullmatch(host):
            raise Invalid(f"{quote(text)}: {host} is not an IP address or host name") from None
    return host, int(port)


def listen_list(value: Any) -> tuple[str, ...]:
    out: list[str] = []
    for text in _strings(value):
        host, port = listen_address(text)
        spelled = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        if spelled in out and port != 0:
            raise Invalid(f"{quote(text)} is listed twice")
        out.append(spelled)
    return tuple(out)


def cidr_list(value: Any) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    out = []
    for text in _strings(value):
        try:
            out.append(ipaddress.ip_network(text, strict=True))
        except ValueError as exc:
            hint = 'list addresses or networks, e.g. ["127.0.0.1", "10.0.0.0/8", "::1"]'
            if "host bits set" in str(exc):
                hint = f"write the network address, e.g. {ipaddress.ip_network(text, False)}"
            raise Invalid(f"{quote(text)} is not an IP address or network", hint) from None
    return tuple(out)


def origin_list(value: Any) -> tuple[str, ...]:
    """Browser origins allowed to call the API: "https://shop.example[:port]", or "*"."""
    out: list[str] = []
    for text in _strings(value):
        if text == "*":
            out.append(text)
            continue
        parts = urlsplit(text)
        try:
            port = parts.port
        except ValueError:
            port = -1
        if (
            parts.scheme not in ("http", "https")
            or not parts.hostname
            or parts.path
            or parts.query
            or parts.fragment
            or parts.username is not None
            or port == -1
        ):
            raise Invalid(
                f"{quote(text)} is not an origin",
                'an origin is scheme://host[:port] without a path, e.g. "https://shop.example"',
            )
        out.append(text.lower())
    if "*" in out and len(out) > 1:
        raise Invalid('"*" allows every origin: list it alone')
    return tuple(out)


def byte_size(value: Any) -> int:
    """A size in bytes from an integer or a string such as "64KiB" or "1MiB"."""
    if isinstance(value, bool):
        raise WrongType
    if isinstance(value, int):
        size = value
    elif isinstance(value, str):
        match = _SIZE.fullmatch(value)
        if match is None:
            raise Invalid(f"{quote(value)} is not a size", 'e.g. "64KiB", "1MiB" or 65536')
        size = int(match[1]) * _UNITS[match[2] and match[2].lower()]
    else:
        raise WrongType
    if not MIN_BODY_BYTES <= size <= MAX_BODY_BYTES:
        raise Invalid(f"{value} is out of range; expected 1KiB to 16MiB")
    return size
