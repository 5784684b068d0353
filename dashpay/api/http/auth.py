"""Who is calling: the client's address (through trusted proxies) and its API key.

``Gate.check`` runs before any request body is read: a client over its failed-attempt
limit gets ``rate_limited`` (429) without its key being looked at; a missing, wrong or
revoked key gets ``unauthorized`` (401, the key service compares in constant time); a
key without the endpoint's scope ``forbidden`` (403). The key service and the limiter
are given (``services/apikeys.py``, ``domain/``); this module only names what it needs
of them.
"""

from __future__ import annotations

import inspect
import ipaddress
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from dashpay.config.http import HttpConfig
from dashpay.domain.errors import Forbidden, RateLimited, Unauthorized, Unavailable

# A token longer than this is not one of ours (ours are ~43 characters): refused
# without a look-up.
MAX_TOKEN_CHARS = 256


class ApiKey(Protocol):
    scopes: frozenset[str]


class KeyService(Protocol):
    def authenticate(self, token: str) -> ApiKey | None | Awaitable[ApiKey | None]: ...


class FailureLimiter(Protocol):
    """Failed authentications per client address (pure: the caller gives the time;
    ``domain/ratelimit.py``)."""

    def allow(self, address: str, now: float) -> bool: ...

    def retry_after(self, address: str, now: float) -> float:
        """Seconds until ``address`` may try again."""

    def record_failure(self, address: str, now: float) -> None: ...


def _ip(text: str) -> str | None:
    """The IP address in a forwarding hop ("1.2.3.4", "[2001:db8::1]:443", "1.2.3.4:80")."""
    text = text.strip().strip('"')
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def _hops(headers: Mapping[str, str]) -> list[str]:
    """The forwarding chain, client first: ``Forwarded`` (RFC 7239) if present, else
    ``X-Forwarded-For``."""
    forwarded = headers.get("forwarded")
    if forwarded is not None:
        hops = []
        for element in forwarded.split(","):
            for pair in element.split(";"):
                name, _, value = pair.partition("=")
                if name.strip().lower() == "for":
                    hops.append(value)
        return hops
    return [hop for hop in headers.get("x-forwarded-for", "").split(",") if hop.strip()]


def client_address(peer: str, headers: Mapping[str, str], config: HttpConfig) -> str:
    """The client's address: the peer's, unless the peer is a trusted proxy; then the
    last hop of the forwarding header that is not itself a trusted proxy (what each
    proxy appends is believed, what the client wrote at the left is not)."""
    if not config.trusts(peer):
        return peer
    address = peer
    for hop in reversed(_hops(headers)):
        ip = _ip(hop)
        if ip is None:
            break  # garbage: the last proxy we trust is the client as far as we know
        address = ip
        if not config.trusts(ip):
            break
    return address


def bearer_token(headers: Mapping[str, str]) -> str | None:
    value = headers.get("authorization")
    if value is None:
        return None
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer":
        return ""
    return token.strip()


class Gate:
    def __init__(
        self,
        keys: KeyService | None,
        limiter: FailureLimiter | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.keys = keys
        self.limiter = limiter
        self.clock = clock

    async def check(self, headers: Mapping[str, str], client: str, scope: str) -> Any:
        """The accepted key, or raise RateLimited / Unauthorized / Forbidden."""
        now = self.clock()
        if self.limiter is not None:
            if not self.limiter.allow(client, now):
                wait = max(1, math.ceil(self.limiter.retry_after(client, now)))
                raise RateLimited(
                    f"too many failed authentications from {client}; retry in {wait}s",
                    retry_after=wait,
                )
        token = bearer_token(headers)
        if token is None:
            raise Unauthorized(
                "send an API key: Authorization: Bearer <key> (see dashpay apikey create)"
            )
        if self.keys is None:
            raise Unavailable("API keys are not available in this daemon")
        key = None
        if token and len(token) <= MAX_TOKEN_CHARS and token.isascii() and token.isprintable():
            key = self.keys.authenticate(token)
            if inspect.isawaitable(key):
                key = await key
        if key is None:
            if self.limiter is not None:
                self.limiter.record_failure(client, now)
            raise Unauthorized("the API key is wrong or revoked")
        if scope not in key.scopes:
            raise Forbidden(
                f"this API key lacks the {scope} scope; create one with --scope {scope}",
                scope=scope,
            )
        return key
