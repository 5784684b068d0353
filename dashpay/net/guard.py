"""Where a callback may go (the SSRF guard): the policy and its check together.

``checked_addresses`` resolves a host and returns only the addresses the
``[callbacks]`` rules allow; the poster connects to exactly those, so the check and the
connection cannot disagree (DNS rebinding)."""

from __future__ import annotations

import ipaddress

import trio

from dashpay.config.model import CallbacksConfig, is_metadata_target
from dashpay.net.http_post import (
    ConnectFailed,
)

# -- where a callback may go --------------------------------------------------------------


class TargetRefused(Exception):
    """The [callbacks] rules forbid this target; retrying will not help."""


def refusal_reason(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address, rules: CallbacksConfig
) -> str | None:
    """Why a resolved address may not be connected to, or None when it may."""
    if rules.allows_address(address):
        return None
    if address.is_multicast or address.is_unspecified:
        return f"{address} is a multicast or unspecified address"
    if is_metadata_target(address):
        return (
            f"{address} is link-local or a cloud metadata address "
            "(refused while [callbacks] block_link_local is on)"
        )
    return f"{address} is private or loopback (refused while allow_private_targets is off)"


async def checked_addresses(host: str, port: int, rules: CallbacksConfig) -> list[str]:
    """The addresses to connect to for ``host``: every one that DNS gives must pass the
    rules, or TargetRefused says which does not. A name that does not resolve is a
    connection error (retried: DNS outages pass)."""
    name = host.strip().removeprefix("[").removesuffix("]")
    if not rules.allows_host(name):
        raise TargetRefused(f"{name} is not in [callbacks] allow_hosts")
    try:
        candidates = [ipaddress.ip_address(name)]
    except ValueError:
        candidates = await _resolve(name, port)
    for address in candidates:
        reason = refusal_reason(address, rules)
        if reason is not None:
            shown = reason if str(address) == name else f"{name} resolves to {reason}"
            raise TargetRefused(shown)
    return [str(address) for address in candidates]


async def _resolve(name: str, port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    try:
        infos = await trio.socket.getaddrinfo(name, port, type=trio.socket.SOCK_STREAM)
    except OSError as exc:
        raise ConnectFailed(f"cannot resolve {name}: {exc}") from None
    candidates = list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))
    if not candidates:
        raise ConnectFailed(f"{name} has no addresses")
    return candidates
