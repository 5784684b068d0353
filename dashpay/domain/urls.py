"""The shape of a callback URL: one check for the API (a receiver's --callback-url,
`callbacks test`) and the sender (the URL a stored event goes to)."""

from __future__ import annotations

from urllib.parse import urlsplit

from dashpay.domain.errors import InvalidParams
from dashpay.domain.limits import MAX_URL_CHARS


def validate_callback_url(url: str, *, what: str = "callback_url") -> str:
    """An http(s) URL with a host, at most 2,048 characters."""
    if len(url) > MAX_URL_CHARS:
        raise InvalidParams(f"{what} is {len(url)} characters long; at most {MAX_URL_CHARS}")
    if any(ord(ch) <= 32 or ord(ch) == 127 for ch in url):
        raise InvalidParams(f"{what} contains spaces or control characters")
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise InvalidParams(f"{what} {url!r} is not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise InvalidParams(f"{what} must start with http:// or https://, got {url!r}")
    if not host:
        raise InvalidParams(f"{what} {url!r} has no host")
    return url
