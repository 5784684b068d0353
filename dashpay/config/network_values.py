"""Value checkers of the [network] keys: the proxy URL and the NO_PROXY list, both
checked with the same parsers the daemon uses (``wire/proxy.py``)."""

from __future__ import annotations

from typing import Any

from dashpay.config.errors import Invalid, WrongType
from dashpay.config.text import describe
from dashpay.wire.proxy import parse_no_proxy, parse_proxy_url


def proxy_url(value: Any) -> str:
    """An http(s) proxy URL, or "" (no proxy, whatever the environment says). The
    messages never quote the value: it may hold credentials."""
    if not isinstance(value, str):
        raise WrongType
    text = value.strip()
    if text:
        try:
            parse_proxy_url(text)
        except ValueError as exc:
            raise Invalid(str(exc)) from None
    return text


def no_proxy_list(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise WrongType
    for item in value:
        if not isinstance(item, str):
            raise Invalid(f"every entry must be a string, found {describe(item)}")
    entries = tuple(item.strip() for item in value if item.strip())
    try:
        parse_no_proxy(entries)
    except ValueError as exc:
        raise Invalid(str(exc)) from None
    return entries
