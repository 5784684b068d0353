"""Validation of request parameters, shared by the CLI and the daemon.

The control socket is an outside input like the command line, so the daemon validates
every request with these functions; the CLI calls the same functions first, so a typo
fails fast with exit code 2 even when the daemon is down. Stdlib only (the CLI imports
this on every command).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

from dashpay.domain.errors import InvalidParams
from dashpay.domain.money import AmountError, dash_to_duffs, parse_decimal

DASH = "DASH"
# Limits from the original processor's columns and common sense; each names its reason.
MAX_TEXT_CHARS = 255  # description / username: VARCHAR(255) in both backends
MAX_URL_CHARS = 2048  # de-facto URL limit of browsers and proxies
MAX_IDEMPOTENCY_KEY_CHARS = 255
MAX_LIST_LIMIT = 1000  # a page larger than this belongs in an export, not a control call
DEFAULT_LIST_LIMIT = 50
_CURRENCY = re.compile(r"^[A-Z]{3,5}$")
_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]+$")  # printable ASCII, no spaces


@dataclass(frozen=True, slots=True)
class CreateReceiverParams:
    amount: Decimal  # as given, in `currency`
    currency: str  # "DASH" or an ISO 4217 fiat code
    amount_duffs: int | None  # set when currency is DASH
    callback_url: str | None
    description: str | None
    username: str | None
    expires_after: float | None  # seconds; None = the configured default; 0 = never
    idempotency_key: str | None


def _known(params: dict[str, Any], allowed: set[str]) -> None:
    if not isinstance(params, dict):
        raise InvalidParams("params must be a JSON object")
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise InvalidParams(
            f"unknown parameter(s): {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}"
        )


def optional_text(params: dict[str, Any], name: str, limit: int = MAX_TEXT_CHARS) -> str | None:
    value = params.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidParams(f"{name} must be a string")
    if len(value) > limit:
        raise InvalidParams(f"{name} is {len(value)} characters long; at most {limit} allowed")
    if any(ord(ch) < 32 and ch not in "\t" for ch in value):
        raise InvalidParams(f"{name} contains control characters (newlines are not allowed)")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            # A JSON "\ud800" escape without its pair, or bytes that were not UTF-8 in
            # a command line: not text, and no database would store it.
            raise InvalidParams(
                f"{name} is not valid text: it contains a lone surrogate (a \\ud800-"
                "\\udfff escape without its pair, or bytes that are not UTF-8); send the "
                "character itself"
            ) from None
    return value


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


def parse_amount(value: Any, currency: str) -> tuple[Decimal, int | None]:
    """The amount as a Decimal, and in duffs when the currency is DASH."""
    if isinstance(value, float):
        raise InvalidParams('amount must be a decimal string such as "1.5", not a binary float')
    try:
        amount = parse_decimal(value, what="amount")
        if currency == DASH:
            return amount, dash_to_duffs(amount, what="amount")
    except AmountError as exc:
        raise InvalidParams(str(exc)) from None
    if amount <= 0:
        raise InvalidParams(f"amount must be greater than 0, got {value}")
    if amount != amount.quantize(Decimal("0.00000001"), rounding="ROUND_DOWN"):
        raise InvalidParams(f"amount {value} has more than 8 decimal places")
    if amount > Decimal("1e15"):
        raise InvalidParams(f"amount {value} is implausibly large")
    return amount, None


def parse_currency(value: Any) -> str:
    if value is None:
        return DASH
    if not isinstance(value, str) or not _CURRENCY.match(value.strip().upper()):
        raise InvalidParams(
            f"currency must be DASH or a 3-letter ISO 4217 code such as USD or EUR, got {value!r}"
        )
    return value.strip().upper()


def parse_expires_after(value: Any) -> float | None:
    """Seconds, from a number or a duration such as "30m"; 0 means never."""
    if value is None:
        return None
    from dashpay.config.durations import parse_duration  # stdlib-only module

    if isinstance(value, bool):
        raise InvalidParams("expires_after must be a duration such as 30m, 2h or 0 (never)")
    if isinstance(value, Decimal):
        value = str(value)
    try:
        return parse_duration(value, key="expires_after")
    except ValueError as exc:
        raise InvalidParams(str(exc)) from None


def parse_create_receiver(params: dict[str, Any]) -> CreateReceiverParams:
    _known(
        params,
        {
            "amount",
            "currency",
            "callback_url",
            "description",
            "username",
            "expires_after",
            "idempotency_key",
        },
    )
    if params.get("amount") is None:
        raise InvalidParams("amount is required, e.g. 1.5 (DASH) or 25 with currency USD")
    currency = parse_currency(params.get("currency"))
    amount, duffs = parse_amount(params["amount"], currency)
    callback_url = optional_text(params, "callback_url", MAX_URL_CHARS)
    if callback_url is not None:
        validate_callback_url(callback_url)
    key = optional_text(params, "idempotency_key", MAX_IDEMPOTENCY_KEY_CHARS)
    if key is not None and not _IDEMPOTENCY_KEY.match(key):
        raise InvalidParams("idempotency_key must be printable ASCII without spaces")
    return CreateReceiverParams(
        amount=amount,
        currency=currency,
        amount_duffs=duffs,
        callback_url=callback_url,
        description=optional_text(params, "description"),
        username=optional_text(params, "username"),
        expires_after=parse_expires_after(params.get("expires_after")),
        idempotency_key=key,
    )


def parse_receiver_id(params: dict[str, Any], *, allowed: set[str] | None = None) -> int:
    _known(params, allowed or {"receiver_id"})
    return receiver_id_value(params.get("receiver_id"))


def receiver_id_value(value: Any) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or value < 1 or value > 2**62:
        raise InvalidParams(f"receiver_id must be a positive integer, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class ListReceiversParams:
    status: str | None
    limit: int
    before_id: int | None


def parse_list_receivers(params: dict[str, Any], statuses: tuple[str, ...]) -> ListReceiversParams:
    _known(params, {"status", "limit", "before_id"})
    status = params.get("status")
    if status is not None and status not in statuses:
        raise InvalidParams(f"status must be one of {', '.join(statuses)}, got {status!r}")
    limit = params.get("limit", DEFAULT_LIST_LIMIT)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIST_LIMIT:
        raise InvalidParams(f"limit must be an integer from 1 to {MAX_LIST_LIMIT}, got {limit!r}")
    before = params.get("before_id")
    return ListReceiversParams(
        status=status,
        limit=limit,
        before_id=None if before is None else receiver_id_value(before),
    )
