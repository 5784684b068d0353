"""The configuration as frozen dataclasses, their defaults taken from ``CONFIG_KEYS``.

Also the [callbacks] target rules (``allows_host``, ``refusal``): they are the meaning of
those keys, checked for ``default_url`` at load, for a receiver's callback URL at its
creation and enforced at connect time by ``dashpay.net.guard``.
"""

from __future__ import annotations

import contextlib
import ipaddress
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit

from dashpay.config.checkout import CheckoutConfig
from dashpay.config.control import ControlConfig
from dashpay.config.database import DatabaseConfig
from dashpay.config.http import HttpConfig
from dashpay.config.keys import PRICE_PROVIDERS, default
from dashpay.config.network import NetworkConfig, TlsConfig
from dashpay.domain.addresses import embedded_ipv4

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Cloud metadata services outside the link-local ranges, refused with them when
# block_link_local is on: AWS's IPv6 endpoint (fd00:ec2::254, a unique-local address
# that would otherwise pass as private) and Alibaba Cloud's (100.100.100.200, in the
# carrier-grade NAT range). The IPv4 endpoints of AWS, GCP, Azure and Oracle are
# 169.254.169.254, already link-local.
CLOUD_METADATA_ADDRESSES = frozenset(
    {ipaddress.ip_address("fd00:ec2::254"), ipaddress.ip_address("100.100.100.200")}
)


@dataclass(frozen=True, slots=True)
class WalletConfig:
    xpub: str
    network: str = default("wallet", "network")
    chain: int = default("wallet", "chain")
    gap_limit_warning: int = default("wallet", "gap_limit_warning")
    gap_limit_max: int | None = default("wallet", "gap_limit_max")


@dataclass(frozen=True, slots=True)
class InsightConfig:
    url: str = default("insight", "url")
    socket_url: str | None = default("insight", "socket_url")
    timeout: float = default("insight", "timeout")
    reconnect_initial: float = default("insight", "reconnect_initial")
    reconnect_max: float = default("insight", "reconnect_max")

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
class ChainConfig:
    backend: str = default("chain", "backend")  # one of keys.CHAIN_BACKENDS


@dataclass(frozen=True, slots=True)
class BlockbookConfig:
    url: str | None = default("blockbook", "url")  # required with backend "blockbook"
    timeout: float = default("blockbook", "timeout")
    reconnect_initial: float = default("blockbook", "reconnect_initial")
    reconnect_max: float = default("blockbook", "reconnect_max")

    @property
    def websocket_url(self) -> str:
        """Blockbook serves its websocket API at ``<url>/websocket``."""
        assert self.url is not None
        return self.url.rstrip("/") + "/websocket"


@dataclass(frozen=True, slots=True)
class DashdConfig:
    # rpc_url and zmq_url are required with backend "dashd", and one credential form:
    # rpc_cookie_file, or rpc_user with rpc_password (read from rpc_password_file).
    rpc_url: str | None = default("dashd", "rpc_url")
    rpc_cookie_file: Path | None = default("dashd", "rpc_cookie_file")
    rpc_user: str | None = default("dashd", "rpc_user")
    rpc_password_file: Path | None = default("dashd", "rpc_password_file")
    zmq_url: str | None = default("dashd", "zmq_url")
    timeout: float = default("dashd", "timeout")
    reconnect_initial: float = default("dashd", "reconnect_initial")
    reconnect_max: float = default("dashd", "reconnect_max")
    rpc_password: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class ReceiversConfig:
    expires_after: float = default("receivers", "expires_after")  # 0 = never
    monitor_window: float = default("receivers", "monitor_window")
    # How long an unlocked mempool payment must be absent from Insight before it is
    # dropped (domain/accounting.absence).
    drop_after: float = default("receivers", "drop_after")
    underpayment_tolerance: Decimal = default("receivers", "underpayment_tolerance")  # percent
    confirmations: int = default("receivers", "confirmations")


def is_metadata_target(address: IPAddress) -> bool:
    """Link-local or a known cloud metadata address (where credentials can be read)."""
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id is not None:
        address = ipaddress.IPv6Address(int(address))
    return address.is_link_local or address in CLOUD_METADATA_ADDRESSES


# The [callbacks] keys that can refuse an address: (its state that refuses, the value
# that allows).
_RULE_KEYS = {"block_link_local": ("on", "false"), "allow_private_targets": ("off", "true")}


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why the [callbacks] rules refuse an address.

    ``address`` is the address checked; ``embedded`` the IPv4 address inside it that is
    refused (None: the address itself); ``why`` what it is ("is private or loopback");
    ``key`` the [callbacks] key that refuses it, None when no setting allows it."""

    address: IPAddress
    embedded: ipaddress.IPv4Address | None
    why: str
    key: str | None

    def __str__(self) -> str:
        subject = str(self.address)
        if self.embedded is not None:
            subject = f"{subject} embeds {self.embedded}, which"
        if self.key is None:
            return f"{subject} {self.why} (never allowed)"
        state = _RULE_KEYS[self.key][0]
        return f"{subject} {self.why} (refused while [callbacks] {self.key} is {state})"

    @property
    def allowing(self) -> str | None:
        """The setting that would allow it ("block_link_local = false"), or None."""
        if self.key is None:
            return None
        return f"{self.key} = {_RULE_KEYS[self.key][1]}"


@dataclass(frozen=True, slots=True)
class CallbacksConfig:
    default_url: str | None = default("callbacks", "default_url")
    secret: str | None = field(default=None, repr=False)
    secret_file: Path | None = None
    timeout: float = default("callbacks", "timeout")
    backoff_initial: float = default("callbacks", "backoff_initial")
    backoff_max: float = default("callbacks", "backoff_max")
    give_up_after: float = default("callbacks", "give_up_after")
    allow_hosts: tuple[str, ...] = default("callbacks", "allow_hosts")
    allow_private_targets: bool = default("callbacks", "allow_private_targets")
    block_link_local: bool = default("callbacks", "block_link_local")
    max_in_flight: int = default("callbacks", "max_in_flight")

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

    def allows_address(self, address: IPAddress) -> bool:
        """Whether a callback may connect to this resolved IP address (see ``refusal``)."""
        return self.refusal(address) is None

    def refusal(self, address: IPAddress) -> Refusal | None:
        """Why a callback may not connect to this resolved IP address, or None.

        Link-local (169.254.0.0/16 and fe80::/10: cloud metadata services) and the other
        ``CLOUD_METADATA_ADDRESSES`` only when ``block_link_local`` is off; loopback and
        private networks only when ``allow_private_targets`` is on; multicast and
        unspecified addresses never. An IPv6 address that embeds IPv4 ones (mapped,
        compatible, NAT64, 6to4, Teredo: ``embedded_ipv4``) passes only when each of them
        passes too; an IPv4-mapped address is its IPv4 address and nothing else.
        """
        if isinstance(address, ipaddress.IPv6Address):
            if address.ipv4_mapped is None:
                own = self._rule_for(address)
                if own is not None:
                    return Refusal(address, None, *own)
            for inner in embedded_ipv4(address):
                refused = self._rule_for(inner)
                if refused is not None:
                    return Refusal(address, inner, *refused)
            return None
        own = self._rule_for(address)
        return None if own is None else Refusal(address, None, *own)

    def _rule_for(self, address: IPAddress) -> tuple[str, str | None] | None:
        """(what the address is, the key that refuses it) for one address on its own."""
        if address.is_multicast or address.is_unspecified:
            return "is a multicast or unspecified address", None
        if is_metadata_target(address):
            if self.block_link_local:
                return "is link-local or a cloud metadata address", "block_link_local"
            return None
        if not address.is_global and not self.allow_private_targets:
            return "is private or loopback", "allow_private_targets"
        return None


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    level: str = default("logging", "level")


@dataclass(frozen=True, slots=True)
class PricesConfig:
    """[prices]: where DASH's fiat price comes from and how long a quote may be used.
    ``max_deviation`` is a percentage; durations are seconds; one URL per provider."""

    providers: tuple[str, ...] = default("prices", "providers")
    strategy: str = default("prices", "strategy")  # "first" or "median"
    currencies: tuple[str, ...] = default("prices", "currencies")
    refresh: float = default("prices", "refresh")
    max_age: float = default("prices", "max_age")
    max_deviation: Decimal = default("prices", "max_deviation")  # percent
    timeout: float = default("prices", "timeout")
    coingecko: str = default("prices", "coingecko")
    kraken: str = default("prices", "kraken")
    coinbase: str = default("prices", "coinbase")

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
    http: HttpConfig = field(default_factory=HttpConfig)
    checkout: CheckoutConfig = field(default_factory=CheckoutConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    tls: TlsConfig = field(default_factory=TlsConfig)
    chain: ChainConfig = field(default_factory=ChainConfig)
    blockbook: BlockbookConfig = field(default_factory=BlockbookConfig)
    dashd: DashdConfig = field(default_factory=DashdConfig)
