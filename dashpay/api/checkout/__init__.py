"""The hosted checkout page (issue 17, docs/checkout.md), pure: no I/O, so the HTTP
server only looks the receiver up and writes what these return.

- ``render_page(receiver, payments, now=, accept_language=, theme=)`` -> ``Page``
  (``.body``, ``.headers``: Content-Type, CSP, Cache-Control, Vary, security headers)
- ``sse_frame(checkout_state(receiver, payments, now), retry=...)`` -> bytes of one
  ``state`` event; ``KEEPALIVE``; ``event_stream_headers()``
- ``render_missing(accept_language=, theme=)`` -> the 404 page of an unknown token
- ``theme_of(config.checkout)``; ``PageRateLimiter`` per client
"""

from dashpay.api.checkout.events import KEEPALIVE, KEEPALIVE_SECONDS, sse_frame
from dashpay.api.checkout.page import Page, Theme, render_missing, render_page, theme_of
from dashpay.api.checkout.policy import (
    PageRateLimiter,
    cache_headers,
    csp_header,
    event_stream_headers,
)
from dashpay.api.checkout.state import CheckoutState, checkout_state

__all__ = [
    "KEEPALIVE",
    "KEEPALIVE_SECONDS",
    "CheckoutState",
    "Page",
    "PageRateLimiter",
    "Theme",
    "cache_headers",
    "checkout_state",
    "csp_header",
    "event_stream_headers",
    "render_missing",
    "render_page",
    "sse_frame",
    "theme_of",
]
