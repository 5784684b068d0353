"""[network] and [tls]: how the daemon reaches the outside, for every outbound client.

``[network] proxy`` / ``no_proxy`` and the standard variables (``HTTPS_PROXY``,
``HTTP_PROXY``, ``NO_PROXY``, in either case) become one ``ProxySettings`` when the
configuration is loaded (``wire/proxy.settings_from``: the config file wins over the
environment, each setting on its own), so a wrong value in either stops the daemon at
start with the setting named, and ``config check`` sees it too.

``[tls] ca_file`` holds extra CA certificates (PEM), trusted IN ADDITION to the default
store (``net/outbound.client_tls_context``). It is read here, once: it must be readable,
parse as PEM and hold at least one certificate; ``$CREDENTIALS_DIRECTORY`` is expanded
(systemd ``LoadCredential=``), and ``config check`` checks that the service's user can
read a plain path.
"""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from dashpay.config.errors import ConfigError
from dashpay.config.keys import Reader
from dashpay.config.secrets import UNCHECKED_SECRET, OfflineCheck, read_secret_file
from dashpay.config.text import redact_url
from dashpay.wire.proxy import ProxySettings, settings_from

# A CA bundle: certifi's, the largest one commonly passed, is ~300 KB.
MAX_CA_FILE_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class NetworkConfig:
    """``proxy`` and ``no_proxy`` as written (None: not in the file) and ``proxies``,
    the decision they and the environment make together."""

    proxy: str | None = field(default=None, repr=False)  # may hold credentials
    no_proxy: tuple[str, ...] | None = None
    proxies: ProxySettings = field(default_factory=ProxySettings)


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """``ca_file`` and its PEM text (None when unset, or when only the service can read
    it: a credential ``config check`` cannot see), and how many certificates it holds."""

    ca_file: Path | None = None
    ca_pem: str | None = field(default=None, repr=False)
    ca_certificates: int = 0


def build_network(
    reader: Reader, env: Mapping[str, str], offline: OfflineCheck | None = None
) -> NetworkConfig:
    values = reader.section("network")
    proxy = values.get("proxy")
    no_proxy = values.get("no_proxy")
    try:
        proxies = settings_from(proxy, no_proxy, env)
    except ValueError as exc:
        # The keys' own values passed their checkers (network_values.py): this is a
        # variable of the environment, which the message names.
        raise ConfigError(
            str(exc),
            hint="fix or unset the variable, or set [network] proxy / no_proxy, which win "
            "over the environment",
        ) from None
    if offline is not None and (proxies.any or proxy is not None):
        offline.notes.append(_proxy_note(proxies, from_environment=proxy is None))
    return NetworkConfig(proxy=proxy, no_proxy=no_proxy, proxies=proxies)


def _proxy_note(proxies: ProxySettings, *, from_environment: bool) -> str:
    """What config check says of the proxies (never their credentials)."""
    if not proxies.any:
        return 'outbound connections go directly ([network] proxy = "")'
    note = f"outbound connections go through {', '.join(proxies.sources)}"
    if from_environment:
        note += " (from this shell's environment: the service's may differ)"
    return note


def loopback_through_proxy(proxies: ProxySettings, urls: Iterable[tuple[str, str]]) -> list[str]:
    """Warnings for configured URLs (``(label, url)``) on this host's loopback that the
    proxy would carry: the proxy would reach ITS loopback, not ours."""
    warnings = []
    for label, url in urls:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        if not _is_loopback(host):
            continue
        try:
            port = parts.port
        except ValueError:
            continue
        scheme = parts.scheme.lower()
        proxy = proxies.proxy_for(scheme, host, port or (443 if scheme in ("https", "wss") else 80))
        if proxy is not None:
            warnings.append(
                f"{label} {redact_url(url)} is on this host but would go through the proxy "
                f"{proxy.display}, which reaches its own loopback; add {host} to "
                "[network] no_proxy (or NO_PROXY)"
            )
    return warnings


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build_tls(
    reader: Reader,
    base_dir: Path | None,
    env: Mapping[str, str],
    offline: OfflineCheck | None,
) -> TlsConfig:
    values = reader.section("tls")
    if "ca_file" not in values:
        return TlsConfig()
    path, text = read_secret_file(
        values["ca_file"],
        key="tls.ca_file",
        base_dir=base_dir,
        env=env,
        offline=offline,
        limit=MAX_CA_FILE_BYTES,
        what="PEM certificates",
    )
    if text == UNCHECKED_SECRET:
        return TlsConfig(ca_file=path)
    count = _count_certificates(reader, path, text)
    if offline is not None:
        offline.notes.append(
            f"[tls] ca_file: {path} holds {count} certificate{'s' if count != 1 else ''}, "
            "trusted in addition to the system's and the bundled CAs"
        )
    return TlsConfig(ca_file=path, ca_pem=text, ca_certificates=count)


def _count_certificates(reader: Reader, path: Path, text: str) -> int:
    """How many certificates the PEM text holds; a ConfigError unless at least one."""
    hint = (
        "give a file of PEM certificates (-----BEGIN CERTIFICATE-----); convert DER with "
        "`openssl x509 -inform der -in ca.der -out ca.pem`"
    )
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise reader.error("tls", "ca_file", f"{path} holds no PEM certificate", hint)
    store = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        store.load_verify_locations(cadata=text)
    except ssl.SSLError as exc:
        reason = exc.reason or exc.strerror or "unreadable"
        raise reader.error(
            "tls", "ca_file", f"{path} is not valid PEM certificates ({reason})", hint
        ) from None
    count = store.cert_store_stats()["x509"]
    if count < 1:
        raise reader.error("tls", "ca_file", f"{path} holds no certificate", hint)
    return count
