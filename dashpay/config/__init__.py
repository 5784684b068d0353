"""dashpay configuration: one TOML file, validated in full at load, as frozen dataclasses.

Why validate everything up front: the daemon runs unattended under systemd, and a typo
that surfaces at 3 a.m. when the first callback fires is far worse than a refusal to
start. Every error names the file, the ``[section] key``, what was expected, what was
found and how to fix it (``ConfigError``). Secrets (the database password, the callback
secret, the contents of credential files) never appear in an error message or a repr.

``CONFIG_KEYS`` is the single table of every section and key: its type in words, its
default as written in TOML, and the function that checks a value. The loader, the
dataclass defaults and the error messages all read it, and a test checks that
``config.example.toml`` documents exactly these keys with exactly these defaults.

Stdlib only at import time: the CLI imports this module on every command (to find the
control socket) and must start fast. The xpub check imports ``dashpay.wallet`` lazily,
which parses keys with the stdlib too.
"""

from __future__ import annotations

import contextlib
import ipaddress
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from dashpay.config import paths

# -- limits ---------------------------------------------------------------------------

MINUTE = 60
HOUR = 60 * MINUTE
DAY = 24 * HOUR
# No timeout, expiry or window in dashpay is meaningfully longer than a lifetime; a
# bigger value is a typo (an extra zero) and would overflow millisecond timestamps.
MAX_DURATION_SECONDS = 100 * 365 * DAY
# Room for any float written in plain digits (5e-324 has 324 digits after the point, and
# format_duration writes it so); anything longer is not a typo but garbage.
MAX_DURATION_TEXT = 400
# A config file is a few kilobytes; a bigger one is the wrong file (a log, a database).
MAX_CONFIG_BYTES = 1024 * 1024
# A password or an HMAC secret; a bigger credential file is the wrong file.
MAX_SECRET_FILE_BYTES = 4096
# The callback HMAC key: 16 characters from a generator carry ~96 bits or more; fewer
# invite brute force of the signature.
MIN_SECRET_CHARS = 16
# The de-facto URL limit of browsers and proxies (the control API uses the same limit).
MAX_URL_CHARS = 2048
# sockaddr_un.sun_path is 108 bytes on Linux, including the terminating NUL.
MAX_UNIX_SOCKET_PATH_BYTES = 107
# BIP32 non-hardened child numbers: a public key cannot derive hardened children.
MAX_CHILD_INDEX = 2**31 - 1
# One daemon makes a handful of concurrent queries; MySQL's default max_connections is
# 151 and is shared with the merchant's other applications.
MAX_POOL_SIZE = 64
DEFAULT_POOL_SIZE = 4
# With InstantSend and ChainLocks one confirmation is final on Dash; more than a day of
# blocks (576) is a typo.
MAX_CONFIRMATIONS = 576
# Cloud metadata services outside the link-local ranges, refused with them when
# block_link_local is on: AWS's IPv6 endpoint (fd00:ec2::254, a unique-local address
# that would otherwise pass as private) and Alibaba Cloud's (100.100.100.200, in the
# carrier-grade NAT range). The IPv4 endpoints of AWS, GCP, Azure and Oracle are
# 169.254.169.254, already link-local.
CLOUD_METADATA_ADDRESSES = frozenset(
    {ipaddress.ip_address("fd00:ec2::254"), ipaddress.ip_address("100.100.100.200")}
)
# Concurrent callback deliveries. Each holds one connection and one task; a thousand
# is far beyond what one merchant backend wants to receive at once.
MAX_CALLBACKS_IN_FLIGHT = 1000
# MySQL identifiers (database names) are at most 64 characters.
MAX_DATABASE_NAME_CHARS = 64
DEFAULT_MYSQL_PORT = 3306
DEFAULT_DATABASE_URL = "sqlite:////var/lib/dashpay/dashpay.sqlite3"
NETWORKS = ("mainnet", "testnet")
LOG_LEVELS = ("debug", "info", "warning", "error")
# Fiat price providers of DASH, with their public API base URLs (docs/prices.md). The
# adapters live in dashpay.services.valuation; this is the one list of their names.
PRICE_PROVIDER_URLS = {
    "coingecko": "https://api.coingecko.com",
    "kraken": "https://api.kraken.com",
    "coinbase": "https://api.coinbase.com",
}
PRICE_PROVIDERS = tuple(PRICE_PROVIDER_URLS)
PRICE_STRATEGIES = ("first", "median")
# Currencies the refresher keeps warm. Each costs one request per provider per refresh,
# and public APIs rate-limit (CoinGecko's free tier: a few dozen calls a minute).
MAX_PRICE_CURRENCIES = 32

# These are looked up through the module at call time so tests can point them elsewhere.
DEFAULT_CONFIG_PATH = paths.DEFAULT_CONFIG_PATH
CONFIG_ENV = "DASHPAY_CONFIG"
CREDENTIALS_ENV = "CREDENTIALS_DIRECTORY"


# -- text in messages ---------------------------------------------------------------


def _quote(text: str, limit: int = 80) -> str:
    """Text in double quotes, escaped, shortened for messages."""
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    escaped = "".join(ch if ch.isprintable() else f"\\u{ord(ch):04x}" for ch in escaped)
    return f'"{escaped}"'


def _describe(value: Any, *, secret: bool = False) -> str:
    """A value's TOML type, and the value itself unless it is secret."""
    if isinstance(value, bool):
        kind, shown = "boolean", str(value).lower()
    elif isinstance(value, int):
        kind, shown = "integer", str(value)
    elif isinstance(value, float | Decimal):
        kind, shown = "float", str(value)
    elif isinstance(value, str):
        kind, shown = "string", _quote(value)
    elif isinstance(value, list | tuple):
        kind, shown = "array", f"of {len(value)} items"
    elif isinstance(value, Mapping):
        kind, shown = "table", ""
    else:
        kind, shown = "date/time" if hasattr(value, "isoformat") else type(value).__name__, ""
    if secret:
        return f"{kind} (value hidden)"
    return f"{kind} {shown}".rstrip()


def _redact_url(url: str) -> str:
    """The URL with the password (between "user:" and the last "@") replaced by ***.

    Uses the last "@" so a password with an unencoded "@", "/" or "?" is hidden too, and
    copes with a mistyped "scheme:/"; hiding a little too much is fine, too little is not.
    """
    at = url.rfind("@")
    if at < 0:
        return url
    separator = url.find("://")
    if separator >= 0:
        start = separator + 3
        user, colon, _ = url[start:at].partition(":")
        return f"{url[:start]}{user}:***{url[at:]}" if colon else url
    colon = url.find(":")
    if colon < 0:
        return url
    return f"{url[: colon + 1]}***{url[at:]}"


# -- durations ------------------------------------------------------------------------

_DURATION_EXPECTED = "expected a duration such as 30s, 15m, 2h or 3d"
DURATION_HINT = (
    "write a number with a unit (ms, s, m, h, d), combined largest first as in 1h30m; "
    "a plain number means seconds"
)
_UNITS = ("d", "h", "m", "s", "ms")  # largest first: the only order accepted in "1h30m"
_UNIT_SECONDS = {
    "d": Decimal(DAY),
    "h": Decimal(HOUR),
    "m": Decimal(MINUTE),
    "s": Decimal(1),
    "ms": Decimal("0.001"),
}
_UNIT_MILLISECONDS = (("d", DAY * 1000), ("h", HOUR * 1000), ("m", MINUTE * 1000), ("s", 1000))
# "ms" before "m" so that "5ms" is not read as five minutes followed by garbage.
_COMPONENT = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|d|h|m|s)")
_PLAIN_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]+)?")


class DurationError(ValueError):
    """A value that is not a duration; ``reason`` says why without naming the key."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


def parse_duration(text: str | int | float | Decimal, *, key: str = "duration") -> float:
    """Seconds from "30s", "15m", "2h", "3d", "500ms", "1h30m", "0.5s" or a plain number.

    A number (int, float, Decimal, or text such as "90") means seconds. Refuses
    booleans, negatives, unknown units, units out of order or repeated, and anything
    longer than ``MAX_DURATION_SECONDS``. Raises ``DurationError`` (a ``ValueError``)
    whose message starts with ``key``.
    """
    if isinstance(text, bool):
        raise DurationError(key, f"{_DURATION_EXPECTED}, got boolean {str(text).lower()}")
    if isinstance(text, int):
        total = Decimal(text)
        shown = str(text)
    elif isinstance(text, float | Decimal):
        if not (text.is_finite() if isinstance(text, Decimal) else math.isfinite(text)):
            raise DurationError(key, f"{_DURATION_EXPECTED}, got {text}")
        total = Decimal(text)  # exact: the float's own value, no rounding
        shown = str(text)
    elif isinstance(text, str):
        total = _parse_duration_text(text, key)
        shown = _quote(text.strip())
    else:
        raise DurationError(key, f"{_DURATION_EXPECTED}, got {type(text).__name__}")
    if total < 0:
        raise DurationError(key, f"a duration cannot be negative, got {shown}")
    if total > MAX_DURATION_SECONDS:
        raise DurationError(key, f"{shown} is longer than 100 years; check for an extra zero")
    return float(total)


def _parse_duration_text(text: str, key: str) -> Decimal:
    stripped = text.strip()
    if not stripped:
        raise DurationError(key, f"{_DURATION_EXPECTED}, got an empty string")
    if len(stripped) > MAX_DURATION_TEXT:
        raise DurationError(key, f"{_DURATION_EXPECTED}, got {len(stripped)} characters of text")
    if stripped.startswith("-"):
        raise DurationError(key, f"a duration cannot be negative, got {_quote(stripped)}")
    if _PLAIN_NUMBER.fullmatch(stripped):
        return Decimal(stripped)
    total = Decimal(0)
    position = 0
    last_rank = -1
    while position < len(stripped):
        match = _COMPONENT.match(stripped, position)
        if match is None:
            raise DurationError(key, f"{_DURATION_EXPECTED}, got {_quote(stripped)}")
        rank = _UNITS.index(match[2])
        if rank <= last_rank:
            raise DurationError(
                key,
                f"units in {_quote(stripped)} must go from largest to smallest, each once "
                "(as in 1h30m)",
            )
        last_rank = rank
        total += Decimal(match[1]) * _UNIT_SECONDS[match[2]]
        position = match.end()
    return total


def format_duration(seconds: float) -> str:
    """The shortest text ``parse_duration`` reads back as exactly ``seconds``.

    Whole milliseconds are written with units, largest first ("1h", "15m", "1m30s",
    "2d3h", "1s500ms", "0s"); any other value as plain seconds ("0.0001s").
    """
    if isinstance(seconds, bool) or not isinstance(seconds, int | float | Decimal):
        raise ValueError(f"format_duration needs a number of seconds, got {seconds!r}")
    finite = seconds.is_finite() if isinstance(seconds, Decimal) else math.isfinite(seconds)
    if not finite or seconds < 0:
        raise ValueError(f"format_duration needs a finite, non-negative number, got {seconds}")
    if isinstance(seconds, int):
        milliseconds = seconds * 1000
    else:
        milliseconds = round(seconds * 1000)
        if milliseconds / 1000 != seconds:
            return f"{Decimal(repr(float(seconds))):f}s"
    parts = []
    for unit, size in _UNIT_MILLISECONDS:
        count, milliseconds = divmod(milliseconds, size)
        if count:
            parts.append(f"{count}{unit}")
    if milliseconds:
        parts.append(f"{milliseconds}ms")
    return "".join(parts) or "0s"


# -- errors ---------------------------------------------------------------------------


class ConfigError(Exception):
    """A configuration problem a person can fix.

    ``str()`` reads "<file>: [section] key: <what is wrong>; <how to fix>", leaving out
    the parts that are None. ``key`` is dotted ("database.url"), or a section name.
    """

    def __init__(
        self,
        message: str,
        *,
        path: Path | str | None = None,
        key: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.path = Path(path) if path is not None else None
        self.key = key
        self.hint = hint

    def __str__(self) -> str:
        text = self.message
        if self.hint:
            text = f"{text}; {self.hint}"
        if self.key:
            section, _, name = self.key.partition(".")
            text = f"[{section}] {name}: {text}" if name else f"[{section}]: {text}"
        if self.path is not None:
            text = f"{self.path}: {text}"
        return text


class _WrongType(Exception):
    """Raised by a value checker: the value has the wrong TOML type."""


class _Invalid(Exception):
    """Raised by a value checker: the type is right, the value is not."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


# -- value checkers (TOML value -> Python value) --------------------------------------


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise _WrongType
    text = value.strip()
    if not text:
        raise _Invalid("is empty")
    return text


def _secret_string(value: Any) -> str:
    if not isinstance(value, str):
        raise _WrongType
    if not value:
        raise _Invalid("is empty")
    return value  # exactly as written: whitespace may be part of a secret


def _path(value: Any) -> Path:
    text = _string(value)
    if "\x00" in text:
        raise _Invalid("contains a NUL character")
    return Path(text)


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _WrongType
    return value


def _integer(low: int, high: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _WrongType
        if not low <= value <= high:
            raise _Invalid(f"{value} is out of range; expected {low} to {high}")
        return value

    return check


def _choice(*options: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if not isinstance(value, str):
            raise _WrongType
        text = value.strip().lower()
        if text not in options:
            raise _Invalid(f"{_quote(value)} is not one of {', '.join(options)}")
        return text

    return check


def _duration(*, allow_zero: bool) -> Callable[[Any], float]:
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
            raise _WrongType
        try:
            seconds = parse_duration(value)
        except DurationError as exc:
            raise _Invalid(exc.reason, DURATION_HINT) from None
        if seconds == 0 and not allow_zero:
            raise _Invalid("must be longer than 0", DURATION_HINT)
        return seconds

    return check


def _percent(value: Any) -> Decimal:
    """A percentage from 0 to 100, from a TOML number or a string such as "0.5" or "1%"."""
    if isinstance(value, bool):
        raise _WrongType
    if isinstance(value, int | Decimal):
        number = Decimal(value)
    elif isinstance(value, float):
        number = Decimal(repr(value))  # the decimal that was written, not its binary value
    elif isinstance(value, str):
        text = value.strip().removesuffix("%").strip()
        try:
            number = Decimal(text)
        except InvalidOperation:
            raise _Invalid(f"{_quote(value)} is not a number", 'e.g. "0.5" for 0.5%') from None
    else:
        raise _WrongType
    if not number.is_finite() or not 0 <= number <= 100:
        raise _Invalid(f"{value} is not a percentage from 0 to 100")
    return number


def _url(*schemes: str, strip_slash: bool = False) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        text = _string(value)
        if len(text) > MAX_URL_CHARS:
            raise _Invalid(f"is {len(text)} characters long; the limit is {MAX_URL_CHARS}")
        if any(ord(ch) <= 32 or ord(ch) == 127 for ch in text):
            raise _Invalid("contains spaces or control characters", "percent-encode them")
        shown = _redact_url(text)
        try:
            parts = urlsplit(text)
        except ValueError:
            raise _Invalid(f"{_quote(shown)} is not a valid URL") from None
        scheme = parts.scheme.lower()
        if scheme not in schemes:
            wanted = " or ".join(f"{s}://" for s in schemes)
            raise _Invalid(f"{_quote(shown)} must start with {wanted}")
        try:
            host = parts.hostname
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            raise _Invalid(f"{_quote(shown)} has an invalid host or port") from None
        if not host:
            raise _Invalid(f"{_quote(shown)} has no host name")
        return text.rstrip("/") if strip_slash else text

    return check


_HOST_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


def _host_pattern(text: str) -> str:
    """A host name, an IP address, or "*.example.com" (any subdomain); lower case."""
    host = text.strip().lower().removeprefix("[").removesuffix("]")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    name = host.removeprefix("*.")
    labels = name.rstrip(".").split(".")
    if len(name) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in labels):
        raise _Invalid(
            f"{_quote(text)} is not a host name or IP address",
            'list names such as "shop.example.com", "*.example.com" or "10.0.0.5"',
        )
    return host.rstrip(".")


def _host_list(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise _WrongType
    hosts = []
    for item in value:
        if not isinstance(item, str):
            raise _Invalid(f"every entry must be a string, found {_describe(item)}")
        hosts.append(_host_pattern(item))
    return tuple(hosts)


def _provider_list(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise _WrongType
    if not value:
        raise _Invalid("is empty", f"list providers to try in order, e.g. {list(PRICE_PROVIDERS)}")
    names: list[str] = []
    for item in value:
        if not isinstance(item, str):
            raise _Invalid(f"every entry must be a string, found {_describe(item)}")
        name = item.strip().lower()
        if name not in PRICE_PROVIDERS:
            raise _Invalid(
                f"{_quote(item)} is not a known price provider",
                f"known: {', '.join(PRICE_PROVIDERS)}",
            )
        if name in names:
            raise _Invalid(f"{_quote(item)} is listed twice")
        names.append(name)
    return tuple(names)


def _currency_list(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise _WrongType
    if len(value) > MAX_PRICE_CURRENCIES:
        raise _Invalid(f"lists {len(value)} currencies; at most {MAX_PRICE_CURRENCIES}")
    codes: list[str] = []
    for item in value:
        if not isinstance(item, str):
            raise _Invalid(f"every entry must be a string, found {_describe(item)}")
        code = item.strip().upper()
        if not re.fullmatch(r"[A-Z]{3}", code) or code == "DASH":
            raise _Invalid(
                f"{_quote(item)} is not a 3-letter fiat currency code",
                'use ISO 4217 codes such as "USD" or "EUR"',
            )
        if code not in codes:
            codes.append(code)
    return tuple(codes)


def _provider_table(name: str) -> Callable[[Any], str]:
    """[prices.<name>]: a table whose only key is ``url``, the provider's API base URL
    (paths such as /api/v3/simple/price are appended to it)."""
    default = PRICE_PROVIDER_URLS[name]
    example = f'write [prices.{name}] followed by url = "{default}"'

    def check(value: Any) -> str:
        if not isinstance(value, Mapping):
            raise _Invalid(f"must be a table with a url key, found {_describe(value)}", example)
        unknown = sorted(str(key) for key in value if key != "url")
        if unknown:
            raise _Invalid(f"unknown key {_quote(unknown[0])}", "the only key here is url")
        if "url" not in value:
            return default
        try:
            url = _url("http", "https", strip_slash=True)(value["url"])
        except _WrongType:
            found = _describe(value["url"])
            raise _Invalid(f"url: expected http(s) URL, found {found}", example) from None
        except _Invalid as exc:
            raise _Invalid(f"url: {exc.message}", exc.hint or example) from None
        parts = urlsplit(url)
        if parts.query or parts.fragment or url.endswith(("?", "#")):
            raise _Invalid(
                f"url: {_quote(_redact_url(url))} has a query or fragment",
                "give only the base URL; dashpay appends the API path and query",
            )
        return url

    return check


# -- the table of every key -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeySpec:
    """One config key: its type in words, its default as written in TOML (None = unset),
    the function that checks and converts a value, an example for hints, and whether
    the value is a secret that must never be echoed."""

    type: str
    default: Any
    parse: Callable[[Any], Any] = field(repr=False)
    example: Any = None
    secret: bool = False


_DURATION = "duration (e.g. 30s, 15m, 2h, 3d)"

CONFIG_KEYS: dict[str, dict[str, KeySpec]] = {
    "wallet": {
        "xpub": KeySpec(
            "extended public key (xpub, tpub, drkv or DRKV)",
            None,
            _string,
            example="xpub6D...",
        ),
        "network": KeySpec('"mainnet" or "testnet"', "mainnet", _choice(*NETWORKS)),
        "chain": KeySpec(f"integer from 0 to {MAX_CHILD_INDEX}", 0, _integer(0, MAX_CHILD_INDEX)),
        "gap_limit_warning": KeySpec(
            f"integer from 1 to {MAX_CHILD_INDEX}", 20, _integer(1, MAX_CHILD_INDEX)
        ),
        "gap_limit_max": KeySpec(
            f"integer from 1 to {MAX_CHILD_INDEX}",
            None,
            _integer(1, MAX_CHILD_INDEX),
            example=1000,
        ),
    },
    "database": {
        "url": KeySpec(
            "database URL (sqlite:///PATH or mysql://USER@HOST/DATABASE)",
            DEFAULT_DATABASE_URL,
            _string,
        ),
        "password_file": KeySpec(
            "path of a file holding the MySQL password",
            None,
            _path,
            example="$CREDENTIALS_DIRECTORY/db-password",
        ),
        "connect_timeout": KeySpec(_DURATION, "5s", _duration(allow_zero=False)),
    },
    "control": {
        "socket": KeySpec("path of the control Unix socket", "/run/dashpay/control.sock", _path),
    },
    "insight": {
        "url": KeySpec(
            "http(s) URL of the Insight API",
            "https://insight.dash.org/insight-api",
            _url("http", "https", strip_slash=True),
        ),
        "socket_url": KeySpec(
            "http(s) or ws(s) URL of the Insight socket.io server",
            None,
            _url("http", "https", "ws", "wss", strip_slash=True),
            example="wss://insight.dash.org",
        ),
        "timeout": KeySpec(_DURATION, "10s", _duration(allow_zero=False)),
        "reconnect_initial": KeySpec(_DURATION, "1s", _duration(allow_zero=False)),
        "reconnect_max": KeySpec(_DURATION, "1m", _duration(allow_zero=False)),
    },
    "receivers": {
        "expires_after": KeySpec(f"{_DURATION}; 0 = never", "1h", _duration(allow_zero=True)),
        "monitor_window": KeySpec(_DURATION, "1d", _duration(allow_zero=True)),
        "underpayment_tolerance": KeySpec(
            'percentage from 0 to 100 (number or string, e.g. "0.5")', 0, _percent
        ),
        "confirmations": KeySpec(
            f"integer from 1 to {MAX_CONFIRMATIONS}", 1, _integer(1, MAX_CONFIRMATIONS)
        ),
    },
    "callbacks": {
        "default_url": KeySpec(
            "http(s) URL",
            None,
            _url("http", "https"),
            example="https://shop.example.com/dashpay/callback",
        ),
        "secret": KeySpec(
            f"string of at least {MIN_SECRET_CHARS} characters",
            None,
            _secret_string,
            example="use-a-long-random-string-here",
            secret=True,
        ),
        "secret_file": KeySpec(
            "path of a file holding the callback secret",
            None,
            _path,
            example="$CREDENTIALS_DIRECTORY/callback-secret",
        ),
        "timeout": KeySpec(_DURATION, "10s", _duration(allow_zero=False)),
        "backoff_initial": KeySpec(_DURATION, "10s", _duration(allow_zero=False)),
        "backoff_max": KeySpec(_DURATION, "1h", _duration(allow_zero=False)),
        "give_up_after": KeySpec(_DURATION, "3d", _duration(allow_zero=False)),
        "allow_hosts": KeySpec(
            'array of host names or IP addresses ("*.example.com" for subdomains)',
            [],
            _host_list,
            example=["shop.example.com"],
        ),
        "allow_private_targets": KeySpec("boolean (true or false)", True, _boolean),
        "block_link_local": KeySpec("boolean (true or false)", True, _boolean),
        "max_in_flight": KeySpec(
            f"integer from 1 to {MAX_CALLBACKS_IN_FLIGHT}",
            16,
            _integer(1, MAX_CALLBACKS_IN_FLIGHT),
        ),
    },
    "prices": {
        "providers": KeySpec(
            f"array of price providers ({', '.join(PRICE_PROVIDERS)}), in the order tried",
            list(PRICE_PROVIDERS),
            _provider_list,
        ),
        "strategy": KeySpec(
            " or ".join(f'"{name}"' for name in PRICE_STRATEGIES),
            "first",
            _choice(*PRICE_STRATEGIES),
        ),
        "currencies": KeySpec(
            f"array of up to {MAX_PRICE_CURRENCIES} 3-letter currency codes",
            ["USD"],
            _currency_list,
        ),
        "refresh": KeySpec(_DURATION, "60s", _duration(allow_zero=False)),
        "max_age": KeySpec(_DURATION, "10m", _duration(allow_zero=False)),
        "max_deviation": KeySpec(
            'percentage from 0 to 100 (number or string, e.g. "20")', 20, _percent
        ),
        "timeout": KeySpec(_DURATION, "5s", _duration(allow_zero=False)),
        **{
            name: KeySpec(
                "table with url = the provider's http(s) API base URL",
                {"url": url},
                _provider_table(name),
            )
            for name, url in PRICE_PROVIDER_URLS.items()
        },
    },
    "logging": {
        "level": KeySpec(
            " or ".join(f'"{level}"' for level in LOG_LEVELS), "info", _choice(*LOG_LEVELS)
        ),
    },
}


def _default(section: str, key: str) -> Any:
    """The converted default of a key, so dataclass defaults come from CONFIG_KEYS."""
    spec = CONFIG_KEYS[section][key]
    return None if spec.default is None else spec.parse(spec.default)


# -- the configuration ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WalletConfig:
    xpub: str
    network: str = _default("wallet", "network")
    chain: int = _default("wallet", "chain")
    gap_limit_warning: int = _default("wallet", "gap_limit_warning")
    gap_limit_max: int | None = _default("wallet", "gap_limit_max")


@dataclass(frozen=True, slots=True)
class DatabaseConfig:
    url: str = field(repr=False)  # as written; may hold a password (see display_url)
    backend: str  # "sqlite" | "mysql"
    path: Path | None = None  # sqlite: absolute path of the database file
    host: str | None = None
    port: int = DEFAULT_MYSQL_PORT
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    database: str | None = None
    unix_socket: str | None = None
    pool_size: int = DEFAULT_POOL_SIZE
    connect_timeout: float = _default("database", "connect_timeout")

    def display_url(self) -> str:
        """The URL with any password replaced by "***" (safe to log and print)."""
        if self.backend == "sqlite" and self.path is not None:
            return f"sqlite:///{self.path}"
        return _redact_url(self.url)


@dataclass(frozen=True, slots=True)
class ControlConfig:
    socket: Path = _default("control", "socket")


@dataclass(frozen=True, slots=True)
class InsightConfig:
    url: str = _default("insight", "url")
    socket_url: str | None = _default("insight", "socket_url")
    timeout: float = _default("insight", "timeout")
    reconnect_initial: float = _default("insight", "reconnect_initial")
    reconnect_max: float = _default("insight", "reconnect_max")

    @property
    def effective_socket_url(self) -> str:
        """``socket_url``, else scheme://host[:port] of ``url`` (socket.io lives at the
        server root, not under the API prefix)."""
        if self.socket_url:
            return self.socket_url
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        port = f":{parts.port}" if parts.port is not None else ""
        return f"{parts.scheme}://{host}{port}"


@dataclass(frozen=True, slots=True)
class ReceiversConfig:
    expires_after: float = _default("receivers", "expires_after")  # 0 = never
    monitor_window: float = _default("receivers", "monitor_window")
    underpayment_tolerance: Decimal = _default("receivers", "underpayment_tolerance")  # percent
    confirmations: int = _default("receivers", "confirmations")


def is_metadata_target(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Link-local or a known cloud metadata address (where credentials can be read)."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        elif address.scope_id is not None:
            address = ipaddress.IPv6Address(str(address).partition("%")[0])
    return address.is_link_local or address in CLOUD_METADATA_ADDRESSES


@dataclass(frozen=True, slots=True)
class CallbacksConfig:
    default_url: str | None = _default("callbacks", "default_url")
    secret: str | None = field(default=None, repr=False)
    secret_file: Path | None = None
    timeout: float = _default("callbacks", "timeout")
    backoff_initial: float = _default("callbacks", "backoff_initial")
    backoff_max: float = _default("callbacks", "backoff_max")
    give_up_after: float = _default("callbacks", "give_up_after")
    allow_hosts: tuple[str, ...] = _default("callbacks", "allow_hosts")
    allow_private_targets: bool = _default("callbacks", "allow_private_targets")
    block_link_local: bool = _default("callbacks", "block_link_local")
    max_in_flight: int = _default("callbacks", "max_in_flight")

    def allows_host(self, host: str) -> bool:
        """Whether a callback may go to ``host`` under ``allow_hosts`` (empty = any).

        "*.example.com" matches every subdomain of example.com, not example.com itself.
        """
        if not self.allow_hosts:
            return True
        name = host.strip().lower().removeprefix("[").removesuffix("]").rstrip(".")
        with contextlib.suppress(ValueError):
            name = str(ipaddress.ip_address(name))
        for pattern in self.allow_hosts:
            if pattern.startswith("*."):
                if name.endswith(pattern[1:]):
                    return True
            elif name == pattern:
                return True
        return False

    def allows_address(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        """Whether a callback may connect to this resolved IP address.

        Link-local (169.254.0.0/16 and fe80::/10: cloud metadata services) and the other
        ``CLOUD_METADATA_ADDRESSES`` only when ``block_link_local`` is off; loopback and
        private networks only when ``allow_private_targets`` is on; multicast and
        unspecified addresses never.
        """
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if address.is_multicast or address.is_unspecified:
            return False
        if is_metadata_target(address):
            return not self.block_link_local
        if not address.is_global:
            return self.allow_private_targets
        return True


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    level: str = _default("logging", "level")


@dataclass(frozen=True, slots=True)
class PricesConfig:
    """[prices]: where DASH's fiat price comes from and how long a quote may be used.
    ``max_deviation`` is a percentage; durations are seconds; one URL per provider."""

    providers: tuple[str, ...] = _default("prices", "providers")
    strategy: str = _default("prices", "strategy")  # "first" or "median"
    currencies: tuple[str, ...] = _default("prices", "currencies")
    refresh: float = _default("prices", "refresh")
    max_age: float = _default("prices", "max_age")
    max_deviation: Decimal = _default("prices", "max_deviation")  # percent
    timeout: float = _default("prices", "timeout")
    coingecko: str = _default("prices", "coingecko")
    kraken: str = _default("prices", "kraken")
    coinbase: str = _default("prices", "coinbase")

    def url(self, provider: str) -> str:
        """The API base URL of a provider in ``PRICE_PROVIDERS``."""
        if provider not in PRICE_PROVIDERS:
            raise ValueError(f"unknown price provider {provider!r}")
        return getattr(self, provider)


@dataclass(frozen=True, slots=True)
class Config:
    path: Path | None
    wallet: WalletConfig | None
    database: DatabaseConfig
    control: ControlConfig
    insight: InsightConfig
    receivers: ReceiversConfig
    callbacks: CallbacksConfig
    logging: LoggingConfig
    prices: PricesConfig = field(default_factory=PricesConfig)


# -- database URLs --------------------------------------------------------------------

_MYSQL_SCHEMES = ("mysql", "mysql+pymysql", "mariadb", "mariadb+pymysql")
_SQLITE_SCHEMES = ("sqlite", "sqlite+pysqlite")
_MYSQL_QUERY_PARAMS = ("unix_socket", "pool_size")
_DATABASE_URL_HINT = (
    "use sqlite:////absolute/path.sqlite3, sqlite:///path/relative/to/config.sqlite3 "
    "or mysql://USER[:PASSWORD]@HOST[:PORT]/DATABASE"
)


def parse_database_url(
    url: str,
    *,
    key: str = "database.url",
    base_dir: Path | None = None,
    password_file: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> DatabaseConfig:
    """A SQLAlchemy-style database URL as a ``DatabaseConfig``.

    ``sqlite:////abs/path`` is absolute; ``sqlite:///rel/path`` is relative to
    ``base_dir`` (the config file's directory), else the current directory.
    ``mysql://user[:password]@host[:port]/db[?unix_socket=/path&pool_size=N]``, with
    ``mysql+pymysql://`` and ``mariadb://`` as synonyms; user and password are
    percent-decoded. ``password_file`` (mysql only; may use $CREDENTIALS_DIRECTORY) is
    read and wins over a password in the URL. Errors never show the password.
    """
    if not isinstance(url, str):
        raise ConfigError(
            f"expected a string, found {_describe(url)}", key=key, hint=_DATABASE_URL_HINT
        )
    text = url.strip()
    if not text:
        raise ConfigError("is empty", key=key, hint=_DATABASE_URL_HINT)
    if len(text) > MAX_URL_CHARS:
        raise ConfigError(f"is longer than {MAX_URL_CHARS} characters", key=key)
    scheme, separator, rest = text.partition("://")
    scheme = scheme.lower()
    password_key = _sibling_key(key, "password_file")
    if not separator:
        raise ConfigError("is not a database URL (no '://')", key=key, hint=_DATABASE_URL_HINT)
    if any(ord(ch) <= 32 or ord(ch) == 127 for ch in text):
        raise ConfigError(
            "contains spaces or control characters",
            key=key,
            hint="percent-encode them (a space in a password is %20)",
        )
    if scheme in _SQLITE_SCHEMES:
        if password_file is not None:
            raise ConfigError(
                "applies only to MySQL/MariaDB; SQLite has no password",
                key=password_key,
                hint="remove password_file",
            )
        return _parse_sqlite_url(text, rest, key, base_dir)
    if scheme in _MYSQL_SCHEMES:
        config = _parse_mysql_url(text, key)
        if password_file is not None:
            _, password = _read_secret_file(
                password_file, key=password_key, base_dir=base_dir, env=env
            )
            config = replace(config, password=password)
        return config
    suggestion = _close_matches(scheme, _SQLITE_SCHEMES + _MYSQL_SCHEMES)
    hint = f"did you mean {suggestion[0]}://?" if suggestion else _DATABASE_URL_HINT
    raise ConfigError(
        f"unknown database type {_quote(scheme)}; dashpay supports SQLite and MySQL/MariaDB",
        key=key,
        hint=hint,
    )


def _parse_sqlite_url(text: str, rest: str, key: str, base_dir: Path | None) -> DatabaseConfig:
    if "?" in rest:
        raise ConfigError(
            "SQLite URLs take no query parameters", key=key, hint="remove everything from '?'"
        )
    memory_hint = "give a file, e.g. sqlite:////var/lib/dashpay/dashpay.sqlite3"
    if rest in ("", "/", "/:memory:"):
        raise ConfigError(
            "an in-memory SQLite database would lose every receiver at restart",
            key=key,
            hint=memory_hint,
        )
    if not rest.startswith("/"):
        raise ConfigError(
            f"{_quote(_redact_url(text))} names a host; SQLite URLs have none",
            key=key,
            hint="use sqlite:////absolute/path (four slashes) or sqlite:///relative/path",
        )
    path = Path(rest[1:])
    if not path.is_absolute():
        path = (base_dir if base_dir is not None else Path.cwd()) / path
    return DatabaseConfig(url=text, backend="sqlite", path=path)


def _parse_mysql_url(text: str, key: str) -> DatabaseConfig:
    encode_hint = (
        "percent-encode special characters in the password (/ as %2F, ? as %3F, # as %23, @ as %40)"
    )
    try:
        parts = urlsplit(text)
    except ValueError:
        raise ConfigError("is not a valid URL", key=key, hint=encode_hint) from None
    # A raw "/", "?" or "#" in the password ends the host part early, and the rest of the
    # password lands in the path, query or fragment: refuse without echoing any of it.
    if "@" not in parts.netloc and "@" in text.partition("://")[2]:
        raise ConfigError("cannot find the host in the URL", key=key, hint=encode_hint)
    if parts.fragment or text.endswith("#"):
        raise ConfigError("the URL contains '#'", key=key, hint=encode_hint)
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user_text, colon, password_text = userinfo.partition(":")
    user = unquote(user_text) or None
    password = unquote(password_text) if colon and password_text else None
    try:
        host = parts.hostname
        port = parts.port
    except ValueError:
        raise ConfigError(
            "the host or port is not valid",
            key=key,
            hint=f"the port must be a number from 1 to 65535; {encode_hint}",
        ) from None
    if port == 0:
        raise ConfigError("port 0 is not valid", key=key, hint="give a port from 1 to 65535")
    database = unquote(parts.path.removeprefix("/"))
    if not database:
        raise ConfigError(
            "no database name",
            key=key,
            hint="end the URL with /DATABASE, e.g. mysql://dashpay@localhost/dashpay",
        )
    if "/" in database or len(database) > MAX_DATABASE_NAME_CHARS:
        raise ConfigError(
            f"database name {_quote(database)} is not valid",
            key=key,
            hint=f"use at most {MAX_DATABASE_NAME_CHARS} characters and no '/'",
        )
    params = _parse_mysql_query(parts.query, key)
    unix_socket = params.get("unix_socket")
    if unix_socket is not None and not unix_socket.startswith("/"):
        raise ConfigError(
            f"unix_socket {_quote(unix_socket)} must be an absolute path",
            key=key,
            hint="e.g. ?unix_socket=/run/mysqld/mysqld.sock",
        )
    pool_size = DEFAULT_POOL_SIZE
    if "pool_size" in params:
        raw = params["pool_size"]
        if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= MAX_POOL_SIZE:
            raise ConfigError(
                f"pool_size {_quote(raw)} is not an integer from 1 to {MAX_POOL_SIZE}",
                key=key,
                hint=f"e.g. ?pool_size={DEFAULT_POOL_SIZE}",
            )
        pool_size = int(raw)
    if not user:
        raise ConfigError(
            "no user name", key=key, hint="write mysql://USER@HOST/DATABASE (or USER:PASSWORD@)"
        )
    if not host and unix_socket is None:
        raise ConfigError(
            "no host and no unix_socket",
            key=key,
            hint="write mysql://USER@HOST/DATABASE or add ?unix_socket=/run/mysqld/mysqld.sock",
        )
    return DatabaseConfig(
        url=text,
        backend="mysql",
        host=host or None,
        port=port if port is not None else DEFAULT_MYSQL_PORT,
        user=user,
        password=password,
        database=database,
        unix_socket=unix_socket,
        pool_size=pool_size,
    )


def _parse_mysql_query(query: str, key: str) -> dict[str, str]:
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise ConfigError(
            "the query string (after '?') is malformed",
            key=key,
            hint="write ?name=value&name=value",
        ) from None
    params: dict[str, str] = {}
    for name, value in pairs:
        if name not in _MYSQL_QUERY_PARAMS:
            close = _close_matches(name, _MYSQL_QUERY_PARAMS)
            hint = f"did you mean {close[0]}?" if close else None
            raise ConfigError(
                f"unknown URL parameter {_quote(name)}; known: {', '.join(_MYSQL_QUERY_PARAMS)}",
                key=key,
                hint=hint,
            )
        if name in params:
            raise ConfigError(f"URL parameter {name} is given twice", key=key, hint="keep one")
        params[name] = value
    return params


# -- credential files -----------------------------------------------------------------

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


def _read_secret_file(
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


# -- loading --------------------------------------------------------------------------


def resolve_config_path(
    cli_value: str | None, env: Mapping[str, str] = os.environ
) -> tuple[Path | None, str]:
    """Which config file to use, and where that choice came from.

    --config, else $DASHPAY_CONFIG, else /etc/dashpay/config.toml if it exists, else
    (None, "none"). A path given explicitly that does not exist is a ConfigError.
    """
    if cli_value:
        return _must_exist(Path(cli_value), "--config"), "--config"
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


def load_config(path: Path | str, *, env: Mapping[str, str] | None = None) -> Config:
    """Read and validate a TOML config file; every problem is a ConfigError."""
    path = Path(path)
    return config_from_dict(_read_toml(path), path=path, env=env)


def load_control_config(path: Path | str) -> ControlConfig:
    """Only the [control] section of a config file: what a CLI client needs to find the
    daemon. The other sections are the daemon's business: a client neither validates
    them nor reads their secret files (which systemd hands to the service alone, e.g.
    ``password_file = "${CREDENTIALS_DIRECTORY}/db-password"``)."""
    path = Path(path)
    data = _read_toml(path)
    _check_sections(data, path)
    try:
        return _build_control(_Reader(path, data), path.absolute().parent)
    except ConfigError as exc:
        if exc.path is None:
            exc.path = path
        raise


def _read_toml(path: Path) -> dict[str, Any]:
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


def config_from_dict(
    data: Mapping[str, Any],
    *,
    path: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> Config:
    """Validate parsed TOML (or an equivalent dict) into a Config."""
    env = os.environ if env is None else env
    _check_sections(data, path)
    base_dir = path.absolute().parent if path is not None else None
    reader = _Reader(path, data)
    try:
        return Config(
            path=path,
            wallet=_build_wallet(reader) if "wallet" in data else None,
            database=_build_database(reader, base_dir, env),
            control=_build_control(reader, base_dir),
            insight=_build_insight(reader),
            receivers=ReceiversConfig(**reader.section("receivers")),
            callbacks=_build_callbacks(reader, base_dir, env),
            logging=LoggingConfig(**reader.section("logging")),
            prices=_build_prices(reader),
        )
    except ConfigError as exc:
        if exc.path is None:
            exc.path = path
        raise


def _check_sections(data: object, path: Path | None) -> None:
    """Every top-level name is a known section, and a table."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"expected a table of sections, found {_describe(data)}", path=path)
    for name, value in data.items():
        if name not in CONFIG_KEYS:
            raise _unknown_section(str(name), value, path)
        if not isinstance(value, Mapping):
            raise ConfigError(
                f"must be a table, found {_describe(value)}",
                path=path,
                key=name,
                hint=f"write a [{name}] header followed by key = value lines",
            )


def default_config(**overrides: Any) -> Config:
    """The configuration with every default (no wallet), for `serve --sandbox`."""
    base = Config(
        path=None,
        wallet=None,
        database=parse_database_url(DEFAULT_DATABASE_URL),
        control=ControlConfig(),
        insight=InsightConfig(),
        receivers=ReceiversConfig(),
        callbacks=CallbacksConfig(),
        logging=LoggingConfig(),
    )
    return replace(base, **overrides)


class _Reader:
    """Checks the keys of one section against CONFIG_KEYS and converts their values."""

    def __init__(self, path: Path | None, data: Mapping[str, Any]) -> None:
        self.path = path
        self.data = data

    def section(self, name: str) -> dict[str, Any]:
        """The converted values of the keys present in [name] (absent keys: omitted)."""
        table = self.data.get(name, {})
        specs = CONFIG_KEYS[name]
        for key in table:
            if key not in specs:
                raise _unknown_key(name, str(key), self.path)
        values = {}
        for key, raw in table.items():
            spec = specs[key]
            try:
                values[key] = spec.parse(raw)
            except _WrongType:
                raise self.error(
                    name,
                    key,
                    f"expected {spec.type}, found {_describe(raw, secret=spec.secret)}",
                    _example_hint(key, spec),
                ) from None
            except _Invalid as exc:
                hint = exc.hint or _example_hint(key, spec)
                raise self.error(name, key, exc.message, hint) from None
        return values

    def error(self, section: str, key: str, message: str, hint: str | None = None) -> ConfigError:
        return ConfigError(message, path=self.path, key=f"{section}.{key}", hint=hint)


def _build_wallet(reader: _Reader) -> WalletConfig:
    values = reader.section("wallet")
    if "xpub" not in values:
        raise reader.error(
            "wallet",
            "xpub",
            "is required when [wallet] is present",
            "set it to your wallet's account extended public key (xpub...)",
        )
    wallet = WalletConfig(**values)
    if wallet.gap_limit_max is not None and wallet.gap_limit_max < wallet.gap_limit_warning:
        raise reader.error(
            "wallet",
            "gap_limit_max",
            f"{wallet.gap_limit_max} is below gap_limit_warning ({wallet.gap_limit_warning})",
            "raise gap_limit_max or lower gap_limit_warning",
        )
    from dashpay.domain.wallet import WalletKeyError, parse_extended_public_key

    try:
        parse_extended_public_key(wallet.xpub, wallet.network)
    except WalletKeyError as exc:
        raise reader.error("wallet", "xpub", str(exc)) from None
    return wallet


def _build_database(
    reader: _Reader, base_dir: Path | None, env: Mapping[str, str]
) -> DatabaseConfig:
    values = reader.section("database")
    database = parse_database_url(
        values.get("url", DEFAULT_DATABASE_URL),
        key="database.url",
        base_dir=base_dir,
        password_file=values.get("password_file"),
        env=env,
    )
    if "connect_timeout" in values:
        database = replace(database, connect_timeout=values["connect_timeout"])
    return database


def _build_control(reader: _Reader, base_dir: Path | None) -> ControlConfig:
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


def _build_insight(reader: _Reader) -> InsightConfig:
    insight = InsightConfig(**reader.section("insight"))
    if insight.reconnect_initial > insight.reconnect_max:
        raise reader.error(
            "insight",
            "reconnect_initial",
            f"{format_duration(insight.reconnect_initial)} is longer than reconnect_max "
            f"({format_duration(insight.reconnect_max)})",
            "make reconnect_initial at most reconnect_max",
        )
    return insight


def _build_prices(reader: _Reader) -> PricesConfig:
    prices = PricesConfig(**reader.section("prices"))
    if prices.refresh >= prices.max_age:
        raise reader.error(
            "prices",
            "refresh",
            f"{format_duration(prices.refresh)} is not shorter than max_age "
            f"({format_duration(prices.max_age)}): quotes would expire before they are "
            "refreshed and creating a receiver would wait on the providers",
            "make refresh a fraction of max_age (the defaults are 60s and 10m)",
        )
    return prices


def _build_callbacks(
    reader: _Reader, base_dir: Path | None, env: Mapping[str, str]
) -> CallbacksConfig:
    values = reader.section("callbacks")
    if "secret" in values and "secret_file" in values:
        raise reader.error(
            "callbacks",
            "secret_file",
            "secret and secret_file are both set",
            "keep one (secret_file keeps the secret out of the config file)",
        )
    if "secret_file" in values:
        values["secret_file"], values["secret"] = _read_secret_file(
            values["secret_file"], key="callbacks.secret_file", base_dir=base_dir, env=env
        )
        secret_key = "secret_file"
    else:
        secret_key = "secret"
    secret = values.get("secret")
    if secret is not None and len(secret) < MIN_SECRET_CHARS:
        raise reader.error(
            "callbacks",
            secret_key,
            f"the secret has {len(secret)} characters; at least {MIN_SECRET_CHARS} are needed",
            "generate one with: openssl rand -hex 32",
        )
    callbacks = CallbacksConfig(**values)
    if callbacks.backoff_initial > callbacks.backoff_max:
        raise reader.error(
            "callbacks",
            "backoff_initial",
            f"{format_duration(callbacks.backoff_initial)} is longer than backoff_max "
            f"({format_duration(callbacks.backoff_max)})",
            "make backoff_initial at most backoff_max",
        )
    if callbacks.default_url is not None:
        _check_callback_target(reader, callbacks)
    return callbacks


def _check_callback_target(reader: _Reader, callbacks: CallbacksConfig) -> None:
    """The default URL must pass the same host rules as every callback."""
    assert callbacks.default_url is not None
    host = urlsplit(callbacks.default_url).hostname or ""
    if not callbacks.allows_host(host):
        raise reader.error(
            "callbacks",
            "default_url",
            f"its host {host} is not in allow_hosts",
            "add the host to allow_hosts or change default_url",
        )
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return  # a name: checked after DNS resolution, when a callback is sent
    if callbacks.allows_address(address):
        return
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if is_metadata_target(address):
        why = "is link-local or a cloud metadata address and block_link_local is on"
        fix = "point it at another host (or set block_link_local = false)"
    elif address.is_multicast or address.is_unspecified:
        why, fix = "is a multicast or unspecified address", "point it at a real host"
    else:
        why = "is private or loopback and allow_private_targets is off"
        fix = "point it at a public host (or set allow_private_targets = true)"
    raise reader.error("callbacks", "default_url", f"{address} {why}", fix)


# -- messages -------------------------------------------------------------------------


def _unknown_section(name: str, value: Any, path: Path | None) -> ConfigError:
    if not isinstance(value, Mapping):
        homes = [section for section, keys in CONFIG_KEYS.items() if name in keys]
        if homes:
            return ConfigError(
                f"{name} is outside any section",
                path=path,
                hint=f"move it under [{homes[0]}]",
            )
        return ConfigError(
            f"unknown top-level key {_quote(name)}",
            path=path,
            hint=f"settings go in sections: {', '.join(f'[{s}]' for s in CONFIG_KEYS)}",
        )
    close = _close_matches(name, list(CONFIG_KEYS))
    hint = f"did you mean [{close[0]}]?" if close else None
    return ConfigError(
        f"unknown section [{name}]; known: {', '.join(f'[{s}]' for s in CONFIG_KEYS)}",
        path=path,
        hint=hint,
    )


def _unknown_key(section: str, key: str, path: Path | None) -> ConfigError:
    known = list(CONFIG_KEYS[section])
    close = _close_matches(key, known)
    homes = [name for name, keys in CONFIG_KEYS.items() if key in keys]
    if close:
        hint = f"did you mean {close[0]}?"
    elif homes:
        hint = f"{key} belongs in {' or '.join(f'[{home}]' for home in homes)}"
    else:
        hint = f"valid keys: {', '.join(known)}"
    return ConfigError(f"unknown key {_quote(key)}", path=path, key=section, hint=hint)


def _example_hint(key: str, spec: KeySpec) -> str | None:
    sample = spec.example if spec.default is None or spec.default == [] else spec.default
    if sample is None or spec.secret:
        return None
    return f"for example: {key} = {_toml_value(sample)}"


def _toml_value(value: Any) -> str:
    """A value written as TOML (for hints and docs)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return _quote(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    return str(value)


def _close_matches(word: str, candidates: Any) -> list[str]:
    """The closest candidate to a typo (difflib is imported only when there is one)."""
    import difflib

    return difflib.get_close_matches(word, list(candidates), n=1)


def _sibling_key(key: str, name: str) -> str:
    section, dot, _ = key.rpartition(".")
    return f"{section}.{name}" if dot else name
