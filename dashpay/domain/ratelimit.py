"""Failed authentication attempts, limited per client address: a token bucket each.

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

Memory is bounded: at most ``max_addresses`` buckets. An address whose bucket has
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


class FailedAuthLimiter:
    """Token buckets of failed attempts per client address (module docstring)."""

    def __init__(
        self,
        failures: int = DEFAULT_FAILURES,
        per_seconds: float = DEFAULT_PER_SECONDS,
        *,
        max_addresses: int = DEFAULT_MAX_ADDRESSES,
    ) -> None:
        if failures < 1 or per_seconds <= 0 or max_addresses < 1:
            raise ValueError("failures, per_seconds and max_addresses must be positive")
        self.capacity = float(failures)
        self.rate = failures / per_seconds  # tokens back per second
        self.refill_seconds = per_seconds  # from empty to full
        self.max_addresses = max_addresses
        # Least recently failed first: the front is what is forgotten first.
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def _tokens(self, bucket: _Bucket, now: float) -> float:
        elapsed = max(0.0, now - bucket.at)
        return min(self.capacity, bucket.tokens + elapsed * self.rate)

    def allow(self, address: str, now: float) -> bool:
        """Whether a request from ``address`` may try a key now."""
        bucket = self._buckets.get(address_key(address))
        return bucket is None or self._tokens(bucket, now) >= 1.0

    def retry_after(self, address: str, now: float) -> float:
        """Seconds until ``address`` may try again: 0.0 when it may now. For an HTTP
        ``Retry-After`` header, round up (``math.ceil``)."""
        bucket = self._buckets.get(address_key(address))
        if bucket is None:
            return 0.0
        missing = 1.0 - self._tokens(bucket, now)
        return 0.0 if missing <= 0 else missing / self.rate

    def retry_after_header(self, address: str, now: float) -> str:
        """``retry_after`` as whole seconds, at least 1, for a ``Retry-After`` header."""
        return str(max(1, math.ceil(self.retry_after(address, now))))

    def record_failure(self, address: str, now: float) -> None:
        """Count one failed attempt of ``address`` (a wrong, unknown or revoked key)."""
        key = address_key(address)
        bucket = self._buckets.pop(key, None)
        if bucket is None:
            self._forget_for_room(now)
            bucket = _Bucket(self.capacity, now)
        else:
            bucket.tokens = self._tokens(bucket, now)
            bucket.at = max(bucket.at, now)
        bucket.tokens = max(-self.capacity, bucket.tokens - 1.0)
        self._buckets[key] = bucket  # to the back: failed most recently

    def _forget_for_room(self, now: float) -> None:
        """Drop the buckets that are full again (the front of the table: their last
        failure is the oldest), then, if the table is still full, the oldest one."""
        buckets = self._buckets
        while buckets:
            oldest = next(iter(buckets.values()))
            if self._tokens(oldest, now) < self.capacity:
                break
            buckets.popitem(last=False)
        while len(buckets) >= self.max_addresses:
            buckets.popitem(last=False)
