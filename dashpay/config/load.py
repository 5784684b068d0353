"""Loading a config file: every section validated and assembled into a ``Config``.

Why validate everything up front: the daemon runs unattended under systemd, and a typo
that surfaces at 3 a.m. when the first callback fires is far worse than a refusal to
start. Every error names the file, the ``[section] key``, what was expected, what was
found and how to fix it (``ConfigError``). Secrets (the database password, the callback
secret, the contents of credential files) never appear in an error message or a repr.
The xpub check imports ``dashpay.domain.wallet`` lazily, which parses keys with the
stdlib too.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from dashpay.config.checkout import build_checkout
from dashpay.config.control import ControlConfig, build_control
from dashpay.config.database import DatabaseConfig, parse_database_url
from dashpay.config.durations import format_duration
from dashpay.config.errors import ConfigError
from dashpay.config.files import read_toml
from dashpay.config.http import HttpConfig, build_http
from dashpay.config.keys import DEFAULT_DATABASE_URL, MIN_SECRET_CHARS, Reader, check_sections
from dashpay.config.model import (
    BlockbookConfig,
    CallbacksConfig,
    ChainConfig,
    Config,
    DashdConfig,
    InsightConfig,
    LoggingConfig,
    PricesConfig,
    ReceiversConfig,
    WalletConfig,
)
from dashpay.config.network import build_network, build_tls, loopback_through_proxy
from dashpay.config.secrets import OfflineCheck, read_secret_file


def load_config(
    path: Path | str,
    *,
    env: Mapping[str, str] | None = None,
    offline: OfflineCheck | None = None,
) -> Config:
    """Read and validate a TOML config file; every problem is a ConfigError.

    ``offline`` is for `dashpay config check`, outside the service (``OfflineCheck``)."""
    path = Path(path)
    return config_from_dict(read_toml(path), path=path, env=env, offline=offline)


def config_from_dict(
    data: Mapping[str, Any],
    *,
    path: Path | None = None,
    env: Mapping[str, str] | None = None,
    offline: OfflineCheck | None = None,
) -> Config:
    """Validate parsed TOML (or an equivalent dict) into a Config."""
    env = os.environ if env is None else env
    check_sections(data, path)
    base_dir = path.absolute().parent if path is not None else None
    reader = Reader(path, data)
    try:
        return Config(
            path=path,
            wallet=_build_wallet(reader) if "wallet" in data else None,
            database=_build_database(reader, base_dir, env, offline),
            control=build_control(reader, base_dir),
            insight=_build_insight(reader),
            receivers=ReceiversConfig(**reader.section("receivers")),
            callbacks=_build_callbacks(reader, base_dir, env, offline),
            logging=LoggingConfig(**reader.section("logging")),
            prices=_build_prices(reader),
            http=build_http(reader, base_dir),
            checkout=build_checkout(reader, base_dir),
            network=build_network(reader, env, offline),
            tls=build_tls(reader, base_dir, env, offline),
            **_build_chain(reader, base_dir, env, offline),
        )
    except ConfigError as exc:
        if exc.path is None:
            exc.path = path
        raise


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
        http=HttpConfig(),
    )
    return replace(base, **overrides)


def config_warnings(config: Config) -> list[str]:
    """What is allowed but likely wrong: `config check` prints these, `serve` logs them."""
    warnings = []
    if config.wallet is not None:
        from dashpay.domain.wallet import network_warning, parse_extended_public_key

        key = parse_extended_public_key(config.wallet.xpub, config.wallet.network)
        caution = network_warning(key, config.wallet.network)
        if caution is not None:
            warnings.append(f"[wallet] xpub: {caution}")
    warnings += loopback_through_proxy(config.network.proxies, _outbound_urls(config))
    warnings += _zmq_outside_the_proxy(config)
    if config.http.public_url is not None and not config.http.listen:
        warnings.append(
            "[http] public_url is set but [http] listen is empty: no checkout page is "
            "served and receivers carry no checkout_url; set listen (e.g. "
            '["127.0.0.1:8080"]) behind your reverse proxy'
        )
    return warnings


def _zmq_outside_the_proxy(config: Config) -> list[str]:
    """ZMQ cannot go through an HTTP proxy: with a proxy configured, a ``zmq_url`` that
    is not on this host or a private network probably cannot be reached directly."""
    url = config.dashd.zmq_url
    if config.chain.backend != "dashd" or url is None:
        return []
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if config.network.proxies.proxy_for("http", host, parts.port or 0) is None:
        return []
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        near = host == "localhost" or host.endswith(".localhost")
    else:
        near = not address.is_global
    if near:
        return []
    return [
        f"[dashd] zmq_url {url} is not on this host or a private network, and ZMQ cannot "
        "go through [network] proxy: dashpay connects to it directly, so make sure it "
        "can (keep dashd on this host or a private network: ZMQ is not encrypted)"
    ]


def _outbound_urls(config: Config) -> list[tuple[str, str]]:
    """The configured URLs the daemon connects to, each with its key."""
    urls = [("[insight] url", config.insight.url)]
    if config.insight.socket_url:
        urls.append(("[insight] socket_url", config.insight.socket_url))
    urls += [(f"[prices.{name}] url", config.prices.url(name)) for name in config.prices.providers]
    if config.callbacks.default_url:
        urls.append(("[callbacks] default_url", config.callbacks.default_url))
    if config.chain.backend == "dashd" and config.dashd.rpc_url:
        urls.append(("[dashd] rpc_url", config.dashd.rpc_url))
    return urls


def _build_wallet(reader: Reader) -> WalletConfig:
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
    reader: Reader, base_dir: Path | None, env: Mapping[str, str], offline: OfflineCheck | None
) -> DatabaseConfig:
    values = reader.section("database")
    database = parse_database_url(
        values.get("url", DEFAULT_DATABASE_URL),
        key="database.url",
        base_dir=base_dir,
        password_file=values.get("password_file"),
        env=env,
        offline=offline,
    )
    if "connect_timeout" in values:
        database = replace(database, connect_timeout=values["connect_timeout"])
    if "lease" in values:
        database = replace(database, lease=values["lease"])
    return database


def _build_insight(reader: Reader) -> InsightConfig:
    insight = InsightConfig(**reader.section("insight"))
    _check_reconnect(reader, "insight", insight.reconnect_initial, insight.reconnect_max)
    return insight


def _build_chain(
    reader: Reader, base_dir: Path | None, env: Mapping[str, str], offline: OfflineCheck | None
) -> dict[str, Any]:
    """``[chain]`` and the chosen backend's section, checked together: the backend's
    settings are required only when it is chosen."""
    chain = ChainConfig(**reader.section("chain"))
    blockbook = BlockbookConfig(**reader.section("blockbook"))
    dashd = DashdConfig(**reader.section("dashd"))
    if chain.backend == "blockbook":
        if blockbook.url is None:
            raise reader.error(
                "blockbook",
                "url",
                'is required with [chain] backend = "blockbook"',
                'set it to your Blockbook server\'s base URL, e.g. "https://blockbook.example.com"',
            )
        _check_reconnect(reader, "blockbook", blockbook.reconnect_initial, blockbook.reconnect_max)
    if chain.backend == "dashd":
        dashd = _build_dashd(reader, dashd, base_dir, env, offline)
    return {"chain": chain, "blockbook": blockbook, "dashd": dashd}


def _check_reconnect(reader: Reader, section: str, initial: float, maximum: float) -> None:
    if initial > maximum:
        raise reader.error(
            section,
            "reconnect_initial",
            f"{format_duration(initial)} is longer than reconnect_max ({format_duration(maximum)})",
            "make reconnect_initial at most reconnect_max",
        )


def _build_dashd(
    reader: Reader,
    dashd: DashdConfig,
    base_dir: Path | None,
    env: Mapping[str, str],
    offline: OfflineCheck | None,
) -> DashdConfig:
    """``[dashd]`` with backend "dashd": both URLs and exactly one credential form. The
    password file is read now; the cookie file only by `config check` (dashd rewrites
    it at each start, so the daemon reads it when it connects, and again on a 401)."""
    required = {
        "rpc_url": 'e.g. "http://127.0.0.1:9998" (dash.conf rpcport, rpcbind)',
        "zmq_url": 'e.g. "tcp://127.0.0.1:28332" (dash.conf zmqpubrawtx=... and the others)',
    }
    for key, example in required.items():
        if getattr(dashd, key) is None:
            raise reader.error(
                "dashd", key, 'is required with [chain] backend = "dashd"', f"set it, {example}"
            )
    _check_reconnect(reader, "dashd", dashd.reconnect_initial, dashd.reconnect_max)
    if urlsplit(dashd.rpc_url or "").username is not None:
        raise reader.error(
            "dashd",
            "rpc_url",
            "carries credentials",
            "remove them from the URL; use rpc_cookie_file or rpc_user + rpc_password_file",
        )
    cookie = dashd.rpc_cookie_file is not None
    user = dashd.rpc_user is not None or dashd.rpc_password_file is not None
    if cookie == user:
        raise reader.error(
            "dashd",
            "rpc_user" if cookie else "rpc_cookie_file",
            "give exactly one way to log in to dashd's RPC"
            + (": rpc_cookie_file and rpc_user/rpc_password_file are both set" if cookie else ""),
            "set rpc_cookie_file (dashd's .cookie) or rpc_user with rpc_password_file",
        )
    if user and (dashd.rpc_user is None or dashd.rpc_password_file is None):
        missing = "rpc_user" if dashd.rpc_user is None else "rpc_password_file"
        raise reader.error(
            "dashd",
            missing,
            "is required with " + ("rpc_password_file" if missing == "rpc_user" else "rpc_user"),
            "set both, or use rpc_cookie_file instead",
        )
    if cookie:
        assert dashd.rpc_cookie_file is not None
        path = dashd.rpc_cookie_file
        if not path.is_absolute():
            path = (base_dir if base_dir is not None else Path.cwd()) / path
        if offline is not None:  # config check: the file must be there and readable
            read_secret_file(
                path, key="dashd.rpc_cookie_file", base_dir=base_dir, env=env, offline=offline,
                what="dashd's cookie (__cookie__:password)",
            )  # fmt: skip
        return replace(dashd, rpc_cookie_file=path)
    assert dashd.rpc_password_file is not None
    path, password = read_secret_file(
        dashd.rpc_password_file,
        key="dashd.rpc_password_file",
        base_dir=base_dir,
        env=env,
        offline=offline,
        what="the RPC password",
    )
    return replace(dashd, rpc_password_file=path, rpc_password=password)


def _build_prices(reader: Reader) -> PricesConfig:
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
    reader: Reader, base_dir: Path | None, env: Mapping[str, str], offline: OfflineCheck | None
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
        values["secret_file"], values["secret"] = read_secret_file(
            values["secret_file"],
            key="callbacks.secret_file",
            base_dir=base_dir,
            env=env,
            offline=offline,
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


def _check_callback_target(reader: Reader, callbacks: CallbacksConfig) -> None:
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
    refusal = callbacks.refusal(address)
    if refusal is None:
        return
    if refusal.allowing is None:
        fix = "point it at a real host"
    else:
        fix = f"point it at another host (or set {refusal.allowing})"
    raise reader.error("callbacks", "default_url", str(refusal), fix)
