"""Requests limited per client address, a token bucket each: failed authentication
attempts (``FailedAuthLimiter``) and, over the same table, the checkout page's loads
(``api/checkout/policy.py``).

Sans-IO: the caller passes the time (``now``, seconds on any monotonic clock, e.g.
``trio.current_time()``) and decides what a refusal looks like (the HTTP API answers
429 with ``Retry-After``). The use, per request that carries a key::

    if not limiter.allow(address, now):
        refuse(retry_after=limiter.retry_after(address, now))
    elif (key := await authenticate(token)) is None:
        limiter.record_failure(address, now)

An address may fail ``failures`` times at once, then once more every
``per_seconds / failures`` seconds (10 per minute: one every 6 s). Successes cost
nothing and are not counted; clients behind one NAT share a bucket, the price of any
per-address limit. Requests that were allowed at the same time and all fail are all
counted, down to ``-failures`` tokens: a burst of wrong keys waits up to twice the
window, never longer.

An IPv6 address counts as its /64 network (one host usually holds a whole /64, so
counting single addresses would let it rotate through 2**64 of them); an IPv4-mapped
IPv6 address counts as its IPv4 address; anything that is not an IP address (a Unix
socket peer, "unknown") counts as its text.

Memory is bounded: at most ``max_addresses`` buckets (``max_clients`` of
``TokenBuckets``). An address whose bucket has
filled up again is the same as an address never seen, so it is forgotten first; only
when more than ``max_addresses`` addresses failed within one window is the address
whose last failure is oldest forgotten early (it may then fail ``failures`` times
again: a nuisance bounded by the table size, not a way around the limit for one
address).
"""

from __future__ import annotations

import ipaddress
import math
from collections import OrderedDict
from dataclasses import dataclass

# 10 failures a minute per address (the figure): far more than a person mistyping
# or a misconfigured backend needs to see its own 401s, far too few to matter to a guess
# at a 256-bit key; it keeps a client retrying a wrong key in a loop off the database.
DEFAULT_FAILURES = 10
DEFAULT_PER_SECONDS = 60.0
# ~120 bytes a bucket: ~1.2 MB at most.
DEFAULT_MAX_ADDRESSES = 10_000
IPV6_GROUP_PREFIX = 64


def address_key(address: str) -> str:
    """What a client address counts as (see the module docstring)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, IPV6_GROUP_PREFIX), strict=False))
    return str(ip)


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float  # when ``tokens`` was last brought up to date


class TokenBuckets:
    """A token bucket per client (``address_key``): ``capacity`` tokens, refilled from
    empty to full in ``refill_seconds``; ``take`` goes down to ``floor``. At most
    ``max_clients`` buckets (the module docstring says which are forgotten first).

    Both limits of the daemon are made of it: failed key attempts (``take`` on each
    failure, down to ``-capacity``) and the checkout page's loads (``take`` on each
    allowed request, down to 0)."""

    def __init__(
        self, capacity: int, refill_seconds: float, *, max_clients: int, floor: float = 0.0
    ) -> None:
        if capacity < 1 or refill_seconds <= 0 or max_clients < 1:
            raise ValueError("capacity, refill_seconds and max_clients must be positive")
        self.capacity = float(capacity)
        self.rate = capacity / refill_seconds  # tokens back per second
        self.refill_seconds = refill_seconds
        self.max_clients = max_clients
        self.floor = floor
        # Least recently taken from first: the front is what is forgotten first.
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def _refilled(self, bucket: _Bucket, now: float) -> float:
        elapsed = max(0.0, now - bucket.at)
        return min(self.capacity, bucket.tokens + elapsed * self.rate)

    def tokens(self, client: str, now: float) -> float:
        """The tokens ``client`` has now (``capacity`` for a client never seen)."""
        bucket = self._buckets.get(address_key(client))
        return self.capacity if bucket is None else self._refilled(bucket, now)

    def retry_after(self, client: str, now: float) -> float:
        """Seconds until ``client`` has a whole token: 0.0 when it has one now."""
        missing = 1.0 - self.tokens(client, now)
        return 0.0 if missing <= 0 else missing / self.rate

    def retry_after_header(self, client: str, now: float) -> str:
        """``retry_after`` as whole seconds, at least 1, for a ``Retry-After`` header."""
        return str(max(1, math.ceil(self.retry_after(client, now))))

    def take(self, client: str, now: float) -> None:
        """Take one token of ``client`` (not below ``floor``)."""
        key = address_key(client)
        bucket = self._buckets.pop(key, None)
        if bucket is None:
            self._forget_for_room(now)
            bucket = _Bucket(self.capacity, now)
        else:
            bucket.tokens = self._refilled(bucket, now)
            bucket.at = max(bucket.at, now)
        bucket.tokens = max(self.floor, bucket.tokens - 1.0)
        self._buckets[key] = bucket  # to the back: taken from most recently

    def _forget_for_room(self, now: float) -> None:
        """Drop the buckets that are full again (the front of the table: their last
        take is the oldest), then, if the table is still full, the oldest one."""
        buckets = self._buckets
        while buckets:
            oldest = next(iter(buckets.values()))
            if self._refilled(oldest, now) < self.capacity:
                break
            buckets.popitem(last=False)
        while len(buckets) >= self.max_clients:
            buckets.popitem(last=False)


class FailedAuthLimiter(TokenBuckets):
    """Failed attempts per client address (module docstring): a request may try a key
    while its address has a token; each failure takes one, down to ``-failures``."""

    def __init__(
        self,
        failures: int = DEFAULT_FAILURES,
        per_seconds: float = DEFAULT_PER_SECONDS,
        *,
        max_addresses: int = DEFAULT_MAX_ADDRESSES,
    ) -> None:
        super().__init__(failures, per_seconds, max_clients=max_addresses, floor=-failures)

    def allow(self, address: str, now: float) -> bool:
        """Whether a request from ``address`` may try a key now."""
        return self.tokens(address, now) >= 1.0

    def record_failure(self, address: str, now: float) -> None:
        """Count one failed attempt of ``address`` (a wrong, unknown or revoked key)."""
        self.take(address, now)
