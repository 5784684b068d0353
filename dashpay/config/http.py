"""[http]: where the HTTP API listens, with which certificate, and its limits.

An empty ``listen`` (the default) means no HTTP API: the daemon opens no TCP port.
``trusted_proxies`` are the peers whose ``X-Forwarded-For``/``Forwarded`` header names
the real client (for logs and the failed-authentication limit); every other peer is
its own client address.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace
from pathlib import Path

from dashpay.config.keys import Reader, default

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class HttpConfig:
    listen: tuple[str, ...] = default("http", "listen")
    tls_cert: Path | None = None
    tls_key: Path | None = None
    trusted_proxies: tuple[Network, ...] = default("http", "trusted_proxies")
    cors_origins: tuple[str, ...] = default("http", "cors_origins")
    max_body: int = default("http", "max_body")  # bytes
    request_timeout: float = default("http", "request_timeout")
    idle_timeout: float = default("http", "idle_timeout")  # keep-alive and before a request
    max_in_flight: int = default("http", "max_in_flight")
    max_connections: int = default("http", "max_connections")  # open at once, idle ones too
    # Where customers' browsers reach the daemon; with it set, every receiver's answer
    # carries ``checkout_url`` (``<public_url>/pay/<token>``).
    public_url: str | None = None

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    def trusts(self, address: str) -> bool:
        """Whether ``address`` (a peer's IP) is a proxy whose forwarding header counts."""
        if not self.trusted_proxies:
            return False  # the usual case, asked on every request: no address to parse
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in network for network in self.trusted_proxies)


def build_http(reader: Reader, base_dir: Path | None) -> HttpConfig:
    values = reader.section("http")
    http = HttpConfig(**values)
    if (http.tls_cert is None) != (http.tls_key is None):
        have, missing = ("tls_cert", "tls_key") if http.tls_key is None else ("tls_key", "tls_cert")
        raise reader.error("http", missing, f"{have} is set but {missing} is not", "set both")
    if http.tls_cert is None:
        return http
    files = {}
    for key in ("tls_cert", "tls_key"):
        path = getattr(http, key)
        if not path.is_absolute():
            path = (base_dir if base_dir is not None else Path.cwd()) / path
        try:
            with path.open("rb") as handle:
                head = handle.read(4096)
        except OSError as exc:
            raise reader.error(
                "http", key, f"cannot read {path}: {exc.strerror}", "check the path and mode"
            ) from None
        if b"-----BEGIN" not in head:
            raise reader.error("http", key, f"{path} is not a PEM file", "convert it to PEM")
        files[key] = path
    return replace(http, **files)
