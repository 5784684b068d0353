"""The table of every config key (``CONFIG_KEYS``) and the checks that apply it.

``CONFIG_KEYS`` is the single table of every section and key: its type in words, its
default as written in TOML, and the function that checks a value. The loader, the
dataclass defaults, the error messages and ``Reader`` (one parsed section; the top level
is ``check_sections``) read it; a test checks ``config.example.toml`` against it.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from dashpay.config.checkout_values import (
    DEFAULT_ACCENT_COLOR,
    MAX_LOGO_BYTES,
    MAX_SHOP_NAME_CHARS,
    hex_color,
    public_url,
    shop_name,
)
from dashpay.config.durations import DURATION_HINT, DurationError, parse_duration
from dashpay.config.errors import ConfigError, Invalid, WrongType
from dashpay.config.listen import byte_size, cidr_list, listen_list, origin_list
from dashpay.config.network_values import no_proxy_list, proxy_url
from dashpay.config.text import close_matches, describe, quote, redact_url, toml_value
from dashpay.domain.limits import MAX_LEASE_SECONDS, MIN_LEASE_SECONDS

# -- limits ---------------------------------------------------------------------------

# The callback HMAC key: 16 characters from a generator carry ~96 bits or more; fewer
# invite brute force of the signature.
MIN_SECRET_CHARS = 16
# The de-facto URL limit of browsers and proxies (the control API uses the same limit).
MAX_URL_CHARS = 2048
# BIP32 non-hardened child numbers: a public key cannot derive hardened children.
MAX_CHILD_INDEX = 2**31 - 1
# With InstantSend and ChainLocks one confirmation is final on Dash; more than a day of
# blocks (576) is a typo.
MAX_CONFIRMATIONS = 576
# Concurrent callback deliveries. Each holds one connection and one task; a thousand
# is far beyond what one merchant backend wants to receive at once.
MAX_CALLBACKS_IN_FLIGHT = 1000
DEFAULT_DATABASE_URL = "sqlite:////var/lib/dashpay/dashpay.sqlite3"
NETWORKS = ("mainnet", "testnet")
# Where the daemon watches the Dash network (`[chain] backend`): the one list of names,
# each with the name people call it by in messages ("Insight", "Blockbook").
CHAIN_BACKENDS = {"insight": "Insight", "blockbook": "Blockbook", "dashd": "dashd"}
LOG_LEVELS = ("debug", "info", "warning", "error")
# Fiat price providers of DASH, with their public API base URLs (docs/prices.md). The
# adapters live in dashpay.services.prices.providers; this is the one list of their names.
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


# -- value checkers (TOML value -> Python value) --------------------------------------


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise WrongType
    text = value.strip()
    if not text:
        raise Invalid("is empty")
    return text


def _secret_string(value: Any) -> str:
    if not isinstance(value, str):
        raise WrongType
    if not value:
        raise Invalid("is empty")
    return value  # exactly as written: whitespace may be part of a secret


def _text_then(check: Callable[[str], Any]) -> Callable[[Any], Any]:
    """A checker of a non-empty string that ``check`` goes on to check."""
    return lambda value: check(_string(value))


def _path(value: Any) -> Path:
    text = _string(value)
    if "\x00" in text:
        raise Invalid("contains a NUL character")
    return Path(text)


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise WrongType
    return value


def _integer(low: int, high: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise WrongType
        if not low <= value <= high:
            raise Invalid(f"{value} is out of range; expected {low} to {high}")
        return value

    return check


def _choice(*options: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if not isinstance(value, str):
            raise WrongType
        text = value.strip().lower()
        if text not in options:
            raise Invalid(f"{quote(value)} is not one of {', '.join(options)}")
        return text

    return check


def _duration(*, allow_zero: bool) -> Callable[[Any], float]:
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
            raise WrongType
        try:
            seconds = parse_duration(value)
        except DurationError as exc:
            raise Invalid(exc.reason, DURATION_HINT) from None
        if seconds == 0 and not allow_zero:
            raise Invalid("must be longer than 0", DURATION_HINT)
        return seconds

    return check


def _lease(value: Any) -> float:
    seconds = _duration(allow_zero=False)(value)
    if not MIN_LEASE_SECONDS <= seconds <= MAX_LEASE_SECONDS:
        raise Invalid(
            f"must be from {MIN_LEASE_SECONDS:g}s to {MAX_LEASE_SECONDS:g}s",
            'e.g. "5s": a standby takes over about that long after the owner stops renewing',
        )
    return seconds


def _percent(value: Any) -> Decimal:
    """A percentage from 0 to 100, from a TOML number or a string such as "0.5" or "1%"."""
    if isinstance(value, bool):
        raise WrongType
    if isinstance(value, int | Decimal):
        number = Decimal(value)
    elif isinstance(value, float):
        number = Decimal(repr(value))  # the decimal that was written, not its binary value
    elif isinstance(value, str):
        text = value.strip().removesuffix("%").strip()
        try:
            number = Decimal(text)
        except InvalidOperation:
            raise Invalid(f"{quote(value)} is not a number", 'e.g. "0.5" for 0.5%') from None
    else:
        raise WrongType
    if not number.is_finite() or not 0 <= number <= 100:
        raise Invalid(f"{value} is not a percentage from 0 to 100")
    return number


def _url(*schemes: str, strip_slash: bool = False) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        text = _string(value)
        if len(text) > MAX_URL_CHARS:
            raise Invalid(f"is {len(text)} characters long; the limit is {MAX_URL_CHARS}")
        if any(ord(ch) <= 32 or ord(ch) == 127 for ch in text):
            raise Invalid("contains spaces or control characters", "percent-encode them")
        shown = redact_url(text)
        try:
            parts = urlsplit(text)
        except ValueError:
            raise Invalid(f"{quote(shown)} is not a valid URL") from None
        scheme = parts.scheme.lower()
        if scheme not in schemes:
            wanted = " or ".join(f"{s}://" for s in schemes)
            raise Invalid(f"{quote(shown)} must start with {wanted}")
        try:
            host = parts.hostname
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            raise Invalid(f"{quote(shown)} has an invalid host or port") from None
        if not host:
            raise Invalid(f"{quote(shown)} has no host name")
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
        raise Invalid(
            f"{quote(text)} is not a host name or IP address",
            'list names such as "shop.example.com", "*.example.com" or "10.0.0.5"',
        )
    return host.rstrip(".")


def _host_list(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise WrongType
    hosts = []
    for item in value:
        if not isinstance(item, str):
            raise Invalid(f"every entry must be a string, found {describe(item)}")
        hosts.append(_host_pattern(item))
    return tuple(hosts)


def _provider_list(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise WrongType
    if not value:
        raise Invalid("is empty", f"list providers to try in order, e.g. {list(PRICE_PROVIDERS)}")
    names: list[str] = []
    for item in value:
        if not isinstance(item, str):
            raise Invalid(f"every entry must be a string, found {describe(item)}")
        name = item.strip().lower()
        if name not in PRICE_PROVIDERS:
            raise Invalid(
                f"{quote(item)} is not a known price provider",
                f"known: {', '.join(PRICE_PROVIDERS)}",
            )
        if name in names:
            raise Invalid(f"{quote(item)} is listed twice")
        names.append(name)
    return tuple(names)


def _currency_list(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise WrongType
    if len(value) > MAX_PRICE_CURRENCIES:
        raise Invalid(f"lists {len(value)} currencies; at most {MAX_PRICE_CURRENCIES}")
    codes: list[str] = []
    for item in value:
        if not isinstance(item, str):
            raise Invalid(f"every entry must be a string, found {describe(item)}")
        code = item.strip().upper()
        if not re.fullmatch(r"[A-Z]{3}", code) or code == "DASH":
            raise Invalid(
                f"{quote(item)} is not a 3-letter fiat currency code",
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
            raise Invalid(f"must be a table with a url key, found {describe(value)}", example)
        unknown = sorted(str(key) for key in value if key != "url")
        if unknown:
            raise Invalid(f"unknown key {quote(unknown[0])}", "the only key here is url")
        if "url" not in value:
            return default
        try:
            url = _url("http", "https", strip_slash=True)(value["url"])
        except WrongType:
            found = describe(value["url"])
            raise Invalid(f"url: expected http(s) URL, found {found}", example) from None
        except Invalid as exc:
            raise Invalid(f"url: {exc.message}", exc.hint or example) from None
        parts = urlsplit(url)
        if parts.query or parts.fragment or url.endswith(("?", "#")):
            raise Invalid(
                f"url: {quote(redact_url(url))} has a query or fragment",
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

# A chain backend's link: a request's timeout and the reconnect delays (ReconnectPolicy).
_LINK_KEYS = {
    "timeout": KeySpec(_DURATION, "10s", _duration(allow_zero=False)),
    "reconnect_initial": KeySpec(_DURATION, "1s", _duration(allow_zero=False)),
    "reconnect_max": KeySpec(_DURATION, "1m", _duration(allow_zero=False)),
}

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
        "lease": KeySpec(
            f"{_DURATION}, {MIN_LEASE_SECONDS:g}s to {MAX_LEASE_SECONDS:g}s", "5s", _lease
        ),
    },
    "control": {
        "socket": KeySpec("path of the control Unix socket", "/run/dashpay/control.sock", _path),
    },
    "http": {
        "public_url": KeySpec(
            "absolute http(s) URL the customers' browsers reach the daemon at",
            None,
            _text_then(public_url),
            example="https://pay.shop.example",
        ),
        "listen": KeySpec(
            'array of "host:port" addresses (empty: no HTTP API)',
            [],
            listen_list,
            example=["127.0.0.1:8080"],
        ),
        "tls_cert": KeySpec("path of a PEM certificate chain", None, _path, example="cert.pem"),
        "tls_key": KeySpec("path of the PEM private key", None, _path, example="key.pem"),
        "trusted_proxies": KeySpec(
            "array of IP addresses or networks", [], cidr_list, example=["127.0.0.1"]
        ),
        "cors_origins": KeySpec(
            'array of origins ("https://shop.example") or ["*"]',
            [],
            origin_list,
            example=["https://shop.example"],
        ),
        "max_body": KeySpec('size from 1KiB to 16MiB (e.g. "64KiB")', "64KiB", byte_size),
        "request_timeout": KeySpec(_DURATION, "30s", _duration(allow_zero=False)),
        "idle_timeout": KeySpec(_DURATION, "5s", _duration(allow_zero=False)),
        "max_in_flight": KeySpec("integer from 1 to 10000", 256, _integer(1, 10_000)),
        "max_connections": KeySpec("integer from 16 to 100000", 2048, _integer(16, 100_000)),
    },
    "checkout": {
        "shop_name": KeySpec(
            f"text of up to {MAX_SHOP_NAME_CHARS} characters",
            None,
            _text_then(shop_name),
            example="Example Shop",
        ),
        "accent_color": KeySpec(
            'colour as "#rrggbb"', DEFAULT_ACCENT_COLOR, _text_then(hex_color), example="#008de4"
        ),
        "logo_file": KeySpec(
            f"path of a PNG, JPEG, GIF, WebP or SVG file of at most {MAX_LOGO_BYTES // 1024} KiB",
            None,
            _path,
            example="logo.svg",
        ),
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
        **_LINK_KEYS,
    },
    "chain": {
        "backend": KeySpec(
            " or ".join(f'"{b}"' for b in CHAIN_BACKENDS), "insight", _choice(*CHAIN_BACKENDS)
        ),
    },
    "blockbook": {
        "url": KeySpec(
            "http(s) or ws(s) base URL of a Blockbook server (its websocket is <url>/websocket)",
            None,
            _url("http", "https", "ws", "wss", strip_slash=True),
            example="https://blockbook.example.com",
        ),
        **_LINK_KEYS,
    },
    "dashd": {
        "rpc_url": KeySpec(
            "http(s) URL of dashd's JSON-RPC (rpcport, 9998 on mainnet)",
            None,
            _url("http", "https", strip_slash=True),
            example="http://127.0.0.1:9998",
        ),
        "rpc_cookie_file": KeySpec(
            "path of dashd's .cookie file (read again whenever dashd refuses it)",
            None,
            _path,
            example="/var/lib/dashcore/.cookie",
        ),
        "rpc_user": KeySpec("string (dash.conf's rpcauth user)", None, _string, example="dashpay"),
        "rpc_password_file": KeySpec(
            "path of a file holding the RPC password of rpc_user",
            None,
            _path,
            example="$CREDENTIALS_DIRECTORY/dashd-rpc-password",
        ),
        "zmq_url": KeySpec(
            "tcp://HOST:PORT of dashd's zmqpub* endpoint (one endpoint for every topic)",
            None,
            _url("tcp"),
            example="tcp://127.0.0.1:28332",
        ),
        **_LINK_KEYS,
    },
    "receivers": {
        "expires_after": KeySpec(f"{_DURATION}; 0 = never", "1h", _duration(allow_zero=True)),
        "monitor_window": KeySpec(_DURATION, "1d", _duration(allow_zero=True)),
        "drop_after": KeySpec(_DURATION, "10m", _duration(allow_zero=False)),
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
    "network": {
        "proxy": KeySpec(
            'http(s) proxy URL ("http://[USER:PASSWORD@]HOST:PORT"), or "" for none',
            None,
            proxy_url,
            secret=True,
        ),
        "no_proxy": KeySpec(
            'array of hosts reached without the proxy: names (".example.com" and '
            '"example.com" match subdomains too), addresses, networks, "*"',
            None,
            no_proxy_list,
            example=["localhost", "127.0.0.1"],
        ),
    },
    "tls": {
        "ca_file": KeySpec(
            "path of a PEM file of CA certificates trusted in addition to the default ones",
            None,
            _path,
            example="$CREDENTIALS_DIRECTORY/ca.pem",
        ),
    },
    "logging": {
        "level": KeySpec(
            " or ".join(f'"{level}"' for level in LOG_LEVELS), "info", _choice(*LOG_LEVELS)
        ),
    },
}


def default(section: str, key: str) -> Any:
    """The converted default of a key, so dataclass defaults come from CONFIG_KEYS."""
    spec = CONFIG_KEYS[section][key]
    return None if spec.default is None else spec.parse(spec.default)


# -- applying the table ----------------------------------------------------------------


def check_sections(data: object, path: Path | None) -> None:
    """Every top-level name is a known section, and a table."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"expected a table of sections, found {describe(data)}", path=path)
    for name, value in data.items():
        if name not in CONFIG_KEYS:
            raise _unknown_section(str(name), value, path)
        if not isinstance(value, Mapping):
            raise ConfigError(
                f"must be a table, found {describe(value)}",
                path=path,
                key=name,
                hint=f"write a [{name}] header followed by key = value lines",
            )


class Reader:
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
            except WrongType:
                raise self.error(
                    name,
                    key,
                    f"expected {spec.type}, found {describe(raw, secret=spec.secret)}",
                    _example_hint(key, spec),
                ) from None
            except Invalid as exc:
                hint = exc.hint or _example_hint(key, spec)
                raise self.error(name, key, exc.message, hint) from None
        return values

    def error(self, section: str, key: str, message: str, hint: str | None = None) -> ConfigError:
        return ConfigError(message, path=self.path, key=f"{section}.{key}", hint=hint)


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
            f"unknown top-level key {quote(name)}",
            path=path,
            hint=f"settings go in sections: {', '.join(f'[{s}]' for s in CONFIG_KEYS)}",
        )
    close = close_matches(name, list(CONFIG_KEYS))
    hint = f"did you mean [{close[0]}]?" if close else None
    return ConfigError(
        f"unknown section [{name}]; known: {', '.join(f'[{s}]' for s in CONFIG_KEYS)}",
        path=path,
        hint=hint,
    )


def _unknown_key(section: str, key: str, path: Path | None) -> ConfigError:
    known = list(CONFIG_KEYS[section])
    close = close_matches(key, known)
    homes = [name for name, keys in CONFIG_KEYS.items() if key in keys]
    if close:
        hint = f"did you mean {close[0]}?"
    elif homes:
        hint = f"{key} belongs in {' or '.join(f'[{home}]' for home in homes)}"
    else:
        hint = f"valid keys: {', '.join(known)}"
    return ConfigError(f"unknown key {quote(key)}", path=path, key=section, hint=hint)


def _example_hint(key: str, spec: KeySpec) -> str | None:
    sample = spec.example if spec.default is None or spec.default == [] else spec.default
    if sample is None or spec.secret:
        return None
    return f"for example: {key} = {toml_value(sample)}"
