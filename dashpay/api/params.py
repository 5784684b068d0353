"""Validation of request parameters, shared by the CLI and the daemon.

The control socket is an outside input like the command line, so the daemon validates
every request with these functions; the CLI calls the same functions first, so a typo
fails fast with exit code 2 even when the daemon is down. Stdlib only (the CLI imports
this on every command).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from dashpay.domain.apikeys import check_label, check_scopes
from dashpay.domain.errors import InvalidParams
from dashpay.domain.limits import (
    MAX_EVENT_ID_CHARS,
    MAX_LIST_LIMIT,
    MAX_REQUEST_CURRENCIES,
    MAX_URL_CHARS,
)
from dashpay.domain.model import CreateReceiverParams, ListReceiversParams
from dashpay.domain.money import (
    DASH,
    FIAT_CODE,
    AmountError,
    dash_to_duffs,
    fiat_code,
    parse_decimal,
)
from dashpay.domain.status import OUTBOX_STATUSES, STATUSES
from dashpay.domain.urls import validate_callback_url

RECEIVER_STATUSES = STATUSES

# Limits from the original processor's columns and common sense; each names its reason.
MAX_TEXT_CHARS = 255  # description / username: VARCHAR(255) in both backends
MAX_IDEMPOTENCY_KEY_CHARS = 255
# Receivers one `rescan` call may name: a bigger set is a `--since` or full rescan.
MAX_RESCAN_IDS = 1_000
DEFAULT_LIST_LIMIT = 50
_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]+$")  # printable ASCII, no spaces


def check_known(params: Any, allowed: Iterable[str]) -> dict[str, Any]:
    """``params`` if it is an object naming only ``allowed`` parameters: the one
    allow-list check of every command (the dispatcher calls it)."""
    if not isinstance(params, dict):
        raise InvalidParams("params must be a JSON object")
    allowed = set(allowed)
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise InvalidParams(
            f"unknown parameter(s): {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}"
        )
    return params


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
    code = value.strip().upper() if isinstance(value, str) else None
    if code != DASH and (code is None or not FIAT_CODE.fullmatch(code)):
        raise InvalidParams(
            f"currency must be DASH or a 3-letter ISO 4217 code such as USD or EUR, got {value!r}"
        )
    return code


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


def receiver_id_value(value: Any) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or value < 1 or value > 2**62:
        raise InvalidParams(f"receiver_id must be a positive integer, got {value!r}")
    return value


def parse_list_receivers(params: dict[str, Any], statuses: tuple[str, ...]) -> ListReceiversParams:
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


# -- the other commands' parameters (moved here from the services that took dicts) -------


def positive_int(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 2**62:
        raise InvalidParams(f"{name} must be a positive integer, got {value!r}")
    return value


def list_limit(value: Any) -> int:
    limit = DEFAULT_LIST_LIMIT if value is None else value
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIST_LIMIT:
        raise InvalidParams(f"limit must be an integer from 1 to {MAX_LIST_LIMIT}, got {limit!r}")
    return limit


def flag(value: Any, name: str, default: bool) -> bool:
    if value is None:
        return default
    if not isinstance(value, bool):
        raise InvalidParams(f"{name} must be true or false, got {value!r}")
    return value


def event_id_value(value: Any) -> str:
    """An event id as printed by `callbacks list` (printable ASCII, no spaces)."""
    if (
        not isinstance(value, str)
        or not 0 < len(value) <= MAX_EVENT_ID_CHARS
        or not all("\x21" <= ch <= "\x7e" for ch in value)
    ):
        raise InvalidParams(
            f"event_id must be an event id such as evt_0123abcd... (up to "
            f"{MAX_EVENT_ID_CHARS} printable characters), got {str(value)[:80]!r}"
        )
    return value


def outbox_status(value: Any) -> str | None:
    if value is not None and value not in OUTBOX_STATUSES:
        raise InvalidParams(f"status must be one of {', '.join(OUTBOX_STATUSES)}, got {value!r}")
    return value


def parse_callbacks_list(params: dict[str, Any]) -> dict[str, Any]:
    receiver_id = params.get("receiver_id")
    return {
        "status": outbox_status(params.get("status")),
        "receiver_id": None if receiver_id is None else receiver_id_value(receiver_id),
        "limit": list_limit(params.get("limit")),
        "before": positive_int(params.get("before"), "before"),
    }


def parse_callbacks_retry(params: dict[str, Any]) -> dict[str, Any]:
    all_failed = flag(params.get("all_failed"), "all_failed", False)
    has_id = params.get("event_id") is not None
    if has_id == all_failed:
        raise InvalidParams("give either event_id or all_failed: true")
    receiver_id = params.get("receiver_id")
    if all_failed:
        return {
            "event_id": None,
            "receiver_id": None if receiver_id is None else receiver_id_value(receiver_id),
        }
    if receiver_id is not None:
        raise InvalidParams("receiver_id goes with all_failed, not with event_id")
    return {"event_id": event_id_value(params["event_id"]), "receiver_id": None}


def test_url(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidParams("url is required, e.g. https://shop.example/dashpay/callback")
    return validate_callback_url(value, what="url")


def currency_list(value: Any) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not value:
        raise InvalidParams("currencies must be a non-empty array of codes like USD")
    if len(value) > MAX_REQUEST_CURRENCIES:
        raise InvalidParams(f"at most {MAX_REQUEST_CURRENCIES} currencies per call")
    return list(dict.fromkeys(fiat_code(c) for c in value))


def parse_rescan(params: dict[str, Any]) -> dict[str, Any]:
    """Which receivers a rescan checks: ``receiver_ids``, ``since`` (a duration) or
    ``all_pending`` (every watched receiver, the default)."""
    ids = params.get("receiver_ids")
    since = params.get("since")
    chosen = sum(x is not None and x is not False for x in (ids, since, params.get("all_pending")))
    if chosen > 1:
        raise InvalidParams("give receiver ids, all_pending or since, not several")
    if ids is not None:
        if not isinstance(ids, list) or not ids or len(ids) > MAX_RESCAN_IDS:
            raise InvalidParams(f"receiver_ids must be a list of 1 to {MAX_RESCAN_IDS} ids")
        return {"receiver_ids": [receiver_id_value(i) for i in ids], "since_seconds": None}
    if since is not None:
        from dashpay.config.durations import parse_duration

        try:
            seconds = parse_duration(since if not isinstance(since, bool) else "x", key="since")
        except ValueError as exc:
            raise InvalidParams(str(exc)) from None
        return {"receiver_ids": None, "since_seconds": seconds}
    return {"receiver_ids": None, "since_seconds": None}


def sandbox_amount(value: Any) -> int:
    try:
        return dash_to_duffs(value)
    except AmountError as exc:
        raise InvalidParams(str(exc)) from None


def sandbox_txid(value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidParams("txid must be a string of 64 hex digits")
    return value.strip().lower()


def block_count(value: Any) -> int:
    blocks = 1 if value is None else value
    if isinstance(blocks, bool) or not isinstance(blocks, int) or not 1 <= blocks <= 1000:
        raise InvalidParams("blocks must be an integer from 1 to 1000")
    return blocks


def parse_api_key_create(params: dict[str, Any]) -> dict[str, Any]:
    """A new API key's label and scopes (whether ``sandbox`` may be granted is the
    daemon's to say: only ``serve --sandbox`` grants it)."""
    return {"label": check_label(params.get("label")), "scopes": check_scopes(params.get("scopes"))}


def api_key_id(value: Any) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 2**62:
        raise InvalidParams(
            f"key_id must be a positive integer (apikey list shows them), got {value!r:.40}"
        )
    return value
