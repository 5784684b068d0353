"""Value checkers of the checkout page's keys: [http] public_url and the [checkout]
theme (the text of a TOML string, stripped and not empty -> Python value; ``Invalid``
on error), with their limits."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from dashpay.config.errors import Invalid
from dashpay.config.text import quote, redact_url
from dashpay.domain.errors import InvalidParams
from dashpay.domain.urls import validate_callback_url

# The shop name is one heading line, even on a 320 px screen.
MAX_SHOP_NAME_CHARS = 80
# Dash's blue: the page's buttons and links unless [checkout] accent_color says otherwise.
DEFAULT_ACCENT_COLOR = "#008de4"
# The logo is inlined into every page as a data: URI (the page loads nothing else);
# 64 KiB is a large logo, and the page stays quick on a phone.
MAX_LOGO_BYTES = 64 * 1024
_HEX_COLOR = re.compile(r"#[0-9a-fA-F]{6}")


def public_url(text: str) -> str:
    """The base URL of the checkout pages (``<public_url>/pay/<token>``): http(s), with
    a host and optionally a path prefix (a reverse proxy's mount point), nothing else."""
    url = text.rstrip("/")
    shown = quote(redact_url(url))
    try:
        validate_callback_url(url, what="public_url")
    except InvalidParams as exc:
        message = str(exc).replace(repr(url), shown)
        raise Invalid(message, 'e.g. "https://pay.shop.example"') from None
    parts = urlsplit(url)
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        raise Invalid(
            f"{shown} has a query or fragment", "give the base URL only; dashpay adds /pay/<token>"
        )
    if parts.username is not None or parts.password is not None:
        raise Invalid("contains a user name or password", "customers' browsers see this URL")
    return url


def shop_name(text: str) -> str:
    if len(text) > MAX_SHOP_NAME_CHARS:
        raise Invalid(f"is {len(text)} characters long; at most {MAX_SHOP_NAME_CHARS}")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in text):
        raise Invalid("contains control characters")
    return text


def hex_color(text: str) -> str:
    if not _HEX_COLOR.fullmatch(text):
        raise Invalid(f"{quote(text)} is not a colour as #rrggbb", 'for example: "#008de4"')
    return text.lower()
