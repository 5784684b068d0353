"""Where a callback may go (the SSRF guard): the policy and its check together.

``checked_addresses`` resolves a host and returns only the addresses the
``[callbacks]`` rules allow; the poster connects to exactly those, so the check and the
connection cannot disagree (DNS rebinding). ``check_creation_target`` applies the same
rules when a receiver is created, so a URL no callback could ever reach is refused then
instead of failing every event later."""

from __future__ import annotations

import ipaddress
from typing import NoReturn
from urllib.parse import urlsplit

import trio

from dashpay.config.model import CallbacksConfig
from dashpay.domain.errors import InvalidParams
from dashpay.net.http_post import DEFAULT_PORTS, ConnectFailed

# How long creating a receiver waits for DNS to see where its callback host leads. No
# answer in time (or none at all: DNS down) does not refuse the receiver; the guard
# still checks every address when a callback is sent.
CREATE_RESOLVE_TIMEOUT = 2.0

# -- where a callback may go --------------------------------------------------------------


class TargetRefused(Exception):
    """The [callbacks] rules forbid this target; retrying will not help."""


def refusal_reason(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address, rules: CallbacksConfig
) -> str | None:
    """Why a resolved address may not be connected to, or None when it may."""
    refusal = rules.refusal(address)
    return None if refusal is None else str(refusal)


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


# -- at a receiver's creation -------------------------------------------------------------


async def check_creation_target(
    url: str, rules: CallbacksConfig, *, resolve_timeout: float = CREATE_RESOLVE_TIMEOUT
) -> None:
    """Refuse (InvalidParams) a callback URL that the rules would refuse at every send:
    a host outside ``allow_hosts``, an IP literal (or an IPv4 inside an IPv6 literal)
    that is refused, or a name whose every address is refused right now. A name that
    does not resolve within ``resolve_timeout`` passes: DNS may be back by then.
    ``url`` has passed ``validate_callback_url``."""
    parts = urlsplit(url)
    name = (parts.hostname or "").lower()
    if not rules.allows_host(name):
        _undeliverable(
            f"its host {name} is not in [callbacks] allow_hosts",
            ["add the host to [callbacks] allow_hosts"],
        )
    try:
        candidates = [ipaddress.ip_address(name)]
    except ValueError:
        candidates = []
        with trio.move_on_after(resolve_timeout):
            try:
                candidates = await _resolve(name, parts.port or DEFAULT_PORTS[parts.scheme])
            except ConnectFailed:
                return
    refusals = [rules.refusal(address) for address in candidates]
    refused = [refusal for refusal in refusals if refusal is not None]
    if not refused or len(refused) < len(refusals):
        return  # nothing to check (DNS gave no answer), or an address that may be used
    what = str(refused[0])
    if str(candidates[0]) != name:
        what = f"{name} resolves only to refused addresses: {what}"
        if len(refused) > 1:
            what += f" (and {len(refused) - 1} more)"
    settings = dict.fromkeys(refusal.allowing for refusal in refused)
    if None in settings:  # no setting allows that one
        _undeliverable(what, [])
    _undeliverable(what, [f"set [callbacks] {setting}" for setting in settings])


def _undeliverable(what: str, fixes: list[str]) -> NoReturn:
    fix = "use another URL"
    if fixes:
        fix += f", or {' and '.join(fixes)} in the daemon's configuration and restart it"
    raise InvalidParams(f"callback_url can never be delivered: {what}; {fix}")
