"""The checkout page's HTTP rules, pure: its Content-Security-Policy, which states may
be cached and for how long, the other response headers, and the per-client rate limit.

The page loads nothing: its one style block and its one script are inline and named
in the CSP by their SHA-256 (CSP Level 3 §8.3, hash-source), so no other script or
style can run even if something slipped into the HTML; images come only from
``data:`` (the QR code and the logo); the script may connect only to its own origin
(the ``EventSource``). Hashes rather than a per-response nonce: the same document can
be cached, and the hashes are computed once per theme.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable

from dashpay.api.checkout.state import CheckoutState
from dashpay.domain.ratelimit import TokenBuckets
from dashpay.domain.status import CANCELLED, EXPIRED, SETTLED

# How long a browser may keep a page of a final status. "private": the page holds the
# customer's address and amounts, so no shared cache (CDN, proxy) keeps it. Settled and
# cancelled do not change any more; an expired receiver can still be paid late, so its
# page is kept only briefly. Every other state changes any second: no-store.
CACHE_SECONDS = {SETTLED: 3600, CANCELLED: 3600, EXPIRED: 30}
NO_STORE = "no-store"

# Page loads per client: a burst of 20, then one every 3 s on average. A customer's
# browser reloads every 10 s with JavaScript off (page.REFRESH_SECONDS) and once with
# it on; 20 allows a few tabs and reloads. Enough to stop a client walking tokens.
PAGE_BURST = 20
PAGE_EVERY_SECONDS = 3.0
# Clients remembered at once; the least recently seen are forgotten past it (~100 B
# each), so a flood of addresses cannot grow the table.
MAX_TRACKED_CLIENTS = 65_536


def source_hash(text: str) -> str:
    """The CSP hash-source of an inline block's exact text."""
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return "'sha256-" + base64.b64encode(digest).decode("ascii") + "'"


def csp_header(styles: Iterable[str], scripts: Iterable[str]) -> str:
    """The Content-Security-Policy of a page whose inline ``<style>`` and (executable)
    ``<script>`` blocks have exactly these texts."""
    style_src = " ".join(source_hash(text) for text in styles) or "'none'"
    script_src = " ".join(source_hash(text) for text in scripts) or "'none'"
    return (
        f"default-src 'none'; style-src {style_src}; script-src {script_src}; "
        "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    )


def cacheable(state: CheckoutState) -> bool:
    return state.status in CACHE_SECONDS


def cache_control(state: CheckoutState) -> str:
    seconds = CACHE_SECONDS.get(state.status)
    return NO_STORE if seconds is None else f"private, max-age={seconds}"


def cache_headers(state: CheckoutState) -> list[tuple[str, str]]:
    """Cache-Control of the page in this state, and Vary: the language comes from
    Accept-Language."""
    return [("Cache-Control", cache_control(state)), ("Vary", "Accept-Language")]


def event_stream_headers() -> list[tuple[str, str]]:
    """Headers of ``/pay/<token>/events`` (text/event-stream, never cached or buffered
    by a proxy: nginx honours X-Accel-Buffering)."""
    return [
        ("Content-Type", "text/event-stream; charset=utf-8"),
        ("Cache-Control", NO_STORE),
        ("X-Accel-Buffering", "no"),
        ("X-Content-Type-Options", "nosniff"),
    ]


# Sent with every page: the token in the URL must not leak to other sites (the shop
# after the redirect, a wallet opened by the link), and the page must not be framed.
SECURITY_HEADERS = (
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Frame-Options", "DENY"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
)


class PageRateLimiter(TokenBuckets):
    """Page loads and event streams per client: a burst of ``burst``, then one request
    every ``every`` seconds; the buckets of ``domain/ratelimit.py`` (an IPv6 client
    counts as its /64). Pure: the caller passes the time, e.g. ``trio.current_time()``.
    Not thread safe: one trio thread."""

    def __init__(
        self,
        burst: int = PAGE_BURST,
        every: float = PAGE_EVERY_SECONDS,
        max_clients: int = MAX_TRACKED_CLIENTS,
    ) -> None:
        super().__init__(burst, burst * every, max_clients=max_clients)

    def allow(self, client: str, now: float) -> bool:
        """Take one request of ``client``'s allowance; False when it has none left."""
        if self.tokens(client, now) < 1.0:
            return False
        self.take(client, now)
        return True
