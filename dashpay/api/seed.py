"""The original processor's two routes, in dashpay's terms (docs/migrating.md).

The processor dashpay replaces (the bitcore-node-dash service "dash-payment-service",
an express app) took form posts: ``POST /createReceiver`` with ``currency``,
``amount``, ``username``, ``description`` and ``callbackUrl``, and ``POST
/valuationService`` with ``fiatCode``. A shop written for it moves by changing the URL
and adding an API key, so these functions translate its fields into the parameters of
the ``receiver.create`` and ``price.get`` commands (parsed by the same
``api/params.py`` rules as every other caller: same limits, same error kinds) and the
commands' answers back into its JSON fields. Pure: the HTTP layer calls the command.

Where the original was loose, these are strict, and say so: ``currency`` is required
(the original priced every receiver through its valuation service; a missing currency
must not make 25 USD into 25 DASH), a field given twice or a field the original never
had is refused, and money is never a binary float (``base_fiat`` and ``value`` are JSON
numbers written from the exact Decimal text).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from dashpay.api.commands import COMMANDS
from dashpay.api.params import currency_list
from dashpay.domain.errors import DashpayError, InvalidParams
from dashpay.domain.money import DASH

# The original was mounted by bitcore-node-dash under its service's route prefix; the
# same routes answer there too.
SEED_PREFIX = "/dash-payment-processor"
CREATE_ROUTE = "/createReceiver"
VALUATION_ROUTE = "/valuationService"
CREATE_COMMAND = "receiver.create"
VALUATION_COMMAND = "price.get"

# The original's createReceiver form field -> receiver.create's parameter.
CREATE_FIELDS = {
    "currency": "currency",
    "amount": "amount",
    "username": "username",
    "description": "description",
    "callbackUrl": "callback_url",
}
# The original's hosted mode also read ``api_key`` from the form. dashpay takes the key
# from the Authorization header only (a key in a body ends up in logs); a form that
# still carries one is accepted and the field ignored, so the shop can move first and
# remove it later.
IGNORED_FIELDS = frozenset({"api_key"})
VALUATION_FIELDS = ("fiatCode",)
# The original's valuationService priced USD when no fiatCode was given.
DEFAULT_VALUATION_CODE = "USD"
# The fields of the original's createReceiver answer, in its order.
RECEIVER_FIELDS = (
    "receiver_id",
    "username",
    "dash_payment_address",
    "amount_fiat",
    "type_fiat",
    "base_fiat",
    "amount_duffs",
    "created_date",
    "description",
)

Form = Mapping[str, Any] | Iterable[tuple[str, Any]]


def _fields(form: Form, allowed: Iterable[str]) -> dict[str, Any]:
    """The form as a dict: each field at most once, only ``allowed`` or ignored ones,
    empty text as absent (an HTML form sends every input, filled or not)."""
    pairs = form.items() if isinstance(form, Mapping) else form
    allowed = set(allowed)
    out: dict[str, Any] = {}
    unknown: list[str] = []
    for name, value in pairs:
        if name in IGNORED_FIELDS:
            continue
        if name not in allowed:
            unknown.append(str(name)[:40])
            continue
        if name in out:
            raise InvalidParams(f"{name} is given more than once; send it once")
        out[name] = value
    if unknown:
        raise InvalidParams(
            f"unknown field(s): {', '.join(sorted(set(unknown)))}; "
            f"allowed: {', '.join(sorted(allowed))}"
        )
    return {k: v for k, v in out.items() if not (isinstance(v, str) and v.strip() == "")}


def create_params(form: Form, *, idempotency_key: str | None = None) -> dict[str, Any]:
    """``receiver.create``'s params from the original's createReceiver form (a mapping
    or the form's (name, value) pairs, repeats included), with the ``Idempotency-Key``
    header's value when one was sent. Checked here with the command's own parser, so
    bad input raises the InvalidParams the control socket would; the caller runs the
    command with the returned params."""
    fields = _fields(form, CREATE_FIELDS)
    if "currency" not in fields:
        raise InvalidParams(
            "currency is required: a fiat code such as USD (the amount is in that "
            "currency), or DASH for an amount in DASH"
        )
    params = {CREATE_FIELDS[name]: value for name, value in fields.items()}
    if idempotency_key is not None:
        params["idempotency_key"] = idempotency_key
    COMMANDS[CREATE_COMMAND].parse_params(params)
    return params


def receiver_fields(view: Mapping[str, Any]) -> dict[str, Any]:
    """The original's createReceiver answer from the receiver ``receiver.create``
    returned (``domain/views.receiver_view``). A receiver priced in DASH reads as
    ``type_fiat`` DASH at ``base_fiat`` 1. ``base_fiat`` is a Decimal: encode the
    answer with ``seed_json``."""
    fiat = view.get("fiat_currency")
    return {
        # The original's ids were random text; dashpay's are integers, sent as text so a
        # shop's VARCHAR column and string comparisons keep working.
        "receiver_id": str(view["receiver_id"]),
        "username": view.get("username"),
        "dash_payment_address": view["address"],
        "amount_fiat": view["fiat_amount"] if fiat else view["amount_dash"],
        "type_fiat": fiat or DASH,
        "base_fiat": Decimal(view["rate"]) if fiat else Decimal(1),
        "amount_duffs": str(view["amount_duffs"]),
        "created_date": view["created_at"],
        "description": view.get("description"),
    }


def valuation_params(form: Form) -> dict[str, Any]:
    """``price.get``'s params from the original's valuationService form."""
    fields = _fields(form, VALUATION_FIELDS)
    code = fields.get("fiatCode", DEFAULT_VALUATION_CODE)
    return {"currencies": currency_list([code])}


def valuation_fields(answer: Mapping[str, Any]) -> dict[str, Any]:
    """``{fiatCode, value}`` (value: the price of 1 DASH, a Decimal) from
    ``price.get``'s answer for one currency; the quote's error (no fresh price)
    is raised with its kind."""
    [entry] = answer["quotes"]
    error = entry.get("error")
    if error is not None:
        raise DashpayError(error["kind"], error["message"], currency=entry["currency"])
    return {"fiatCode": entry["currency"], "value": Decimal(entry["price"])}


def _json_value(value: Any) -> str:
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"{value} is not a JSON number")
        return format(value, "f")  # exact, never an exponent
    return json.dumps(value)


def seed_json(fields: Mapping[str, Any]) -> bytes:
    """A flat answer as JSON, Decimals written as exact JSON numbers (the original's
    ``base_fiat`` and ``value`` were numbers; ``json`` would need a float)."""
    inner = ",".join(f"{json.dumps(str(k))}:{_json_value(v)}" for k, v in fields.items())
    return ("{" + inner + "}").encode("utf-8")
