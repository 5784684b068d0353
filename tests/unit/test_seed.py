"""The original processor's createReceiver / valuationService fields (api/seed.py)."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from dashpay.api.commands import COMMANDS
from dashpay.api.seed import (
    RECEIVER_FIELDS,
    create_params,
    receiver_fields,
    seed_json,
    valuation_fields,
    valuation_params,
)
from dashpay.domain.errors import INVALID_PARAMS, PRICE_UNAVAILABLE, DashpayError, InvalidParams
from dashpay.domain.model import Receiver
from dashpay.domain.views import receiver_view
from tests.unit.test_accounting import DUE, NOW
from tests.unit.test_accounting import receiver as make_receiver

FORM = {
    "currency": "USD",
    "amount": "25.50",
    "username": "alice",
    "description": "Order #1001",
    "callbackUrl": "https://shop.example/dash/callback",
}


def parsed(params: dict):
    return COMMANDS["receiver.create"].parse_params(params)["request"]


def test_the_form_becomes_receiver_create_params():
    params = create_params(FORM)
    assert params == {
        "currency": "USD",
        "amount": "25.50",
        "username": "alice",
        "description": "Order #1001",
        "callback_url": "https://shop.example/dash/callback",
    }
    request = parsed(params)
    assert request.currency == "USD"
    assert request.amount == Decimal("25.50")
    assert request.username == "alice"
    assert request.callback_url == "https://shop.example/dash/callback"


def test_the_same_request_as_the_control_socket_would_make():
    control = {
        "currency": "usd",
        "amount": "25.50",
        "username": "alice",
        "description": "Order #1001",
        "callback_url": "https://shop.example/dash/callback",
        "idempotency_key": "order-1001",
    }
    form = [("currency", "usd"), *((k, v) for k, v in FORM.items() if k != "currency")]
    assert parsed(create_params(form, idempotency_key="order-1001")) == parsed(control)


def test_empty_fields_are_absent_and_api_key_is_ignored():
    form = {**FORM, "username": "", "description": "  ", "callbackUrl": "", "api_key": "old"}
    params = create_params(form)
    assert params == {"currency": "USD", "amount": "25.50"}
    request = parsed(params)
    assert request.username is None and request.description is None
    assert request.callback_url is None


def test_dash_amounts_are_in_duffs():
    request = parsed(create_params({"currency": "dash", "amount": "0.015"}))
    assert (request.currency, request.amount_duffs) == ("DASH", 1_500_000)


def invalid(form, **kwargs) -> str:
    with pytest.raises(InvalidParams) as caught:
        create_params(form, **kwargs)
    assert caught.value.kind == INVALID_PARAMS
    return caught.value.message


def test_a_missing_currency_is_refused_not_taken_for_dash():
    assert "currency is required" in invalid({"amount": "25"})
    assert "currency is required" in invalid({"amount": "25", "currency": ""})


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"amount": None}, "amount is required"),
        ({"amount": "abc"}, "not a plain decimal"),
        ({"amount": "-5"}, "greater than 0"),
        ({"amount": "NaN"}, "not a plain decimal"),
        ({"amount": "1e400"}, "not a plain decimal"),
        ({"amount": "1" + "0" * 30}, "implausibly large"),
        ({"currency": "US"}, "ISO 4217"),
        ({"currency": "€€€"}, "ISO 4217"),
        ({"callbackUrl": "ftp://shop.example/cb"}, "callback_url"),
        ({"callbackUrl": "not a url"}, "callback_url"),
        ({"description": "x" * 256}, "at most 255"),
        ({"username": "a\nb"}, "control characters"),
        ({"username": "a\ud800"}, "lone surrogate"),
        ({"amount": 1.5}, "binary float"),
    ],
)
def test_bad_values_get_the_control_sockets_error(changes, says):
    form = {k: v for k, v in {**FORM, **changes}.items() if v is not None}
    assert says in invalid(form)


def test_a_dash_amount_with_more_than_eight_decimals():
    assert "decimal" in invalid({"currency": "DASH", "amount": "0.123456789"})


def test_a_bad_idempotency_key_is_refused():
    assert "idempotency_key" in invalid(FORM, idempotency_key="has space")


def test_a_field_given_twice_is_refused():
    pairs = [*FORM.items(), ("amount", "1")]
    assert "amount is given more than once" in invalid(pairs)


def test_fields_the_original_never_had_are_refused_with_the_allowed_list():
    message = invalid({**FORM, "callback_url": "https://x.example/", "expires_after": "1h"})
    assert "unknown field(s): callback_url, expires_after" in message
    assert "callbackUrl" in message


def receiver(**changes) -> Receiver:
    """The accounting tests' receiver, priced in USD."""
    fiat = {
        "fiat_amount": "25.50",
        "fiat_currency": "USD",
        "rate": "22.5",
        "rate_provider": "kraken",
        "rate_fetched_at": NOW - 1_000,
        "description": 'say "hi"\\',
        "username": "alice",
    }
    return make_receiver(**{**fiat, **changes})


def test_the_receiver_in_the_originals_fields():
    fields = receiver_fields(receiver_view(receiver()))
    assert tuple(fields) == RECEIVER_FIELDS
    assert fields == {
        "receiver_id": "7",
        "username": "alice",
        "dash_payment_address": "XxFKyXX1ibFAn4s4VLVZodgBeciLWhu8o9",
        "amount_fiat": "25.50",
        "type_fiat": "USD",
        "base_fiat": Decimal("22.5"),
        "amount_duffs": str(DUE),
        "created_date": "2027-01-15T07:59:00.000Z",  # NOW - 60 s
        "description": 'say "hi"\\',
    }


def test_a_dash_receiver_reads_as_dash_at_one():
    view = receiver_view(receiver(fiat_amount=None, fiat_currency=None, rate=None))
    fields = receiver_fields(view)
    assert (fields["amount_fiat"], fields["type_fiat"], fields["base_fiat"]) == (
        "1",
        "DASH",
        Decimal(1),
    )


def test_seed_json_writes_decimals_as_exact_numbers():
    fields = receiver_fields(receiver_view(receiver(rate="12345678.123456789012345678")))
    body = seed_json(fields)
    assert b'"base_fiat":12345678.123456789012345678' in body
    decoded = json.loads(body, parse_float=Decimal)
    assert decoded["base_fiat"] == Decimal("12345678.123456789012345678")
    assert decoded["description"] == 'say "hi"\\'
    assert decoded == {**fields, "base_fiat": decoded["base_fiat"]}
    assert seed_json({"value": Decimal("1E+3")}) == b'{"value":1000}'
    with pytest.raises(ValueError):
        seed_json({"value": Decimal("NaN")})


def test_seed_json_escapes_hostile_text():
    body = seed_json({"description": '"}\n,"x":1\u2028\ud800'})
    assert json.loads(body) == {"description": '"}\n,"x":1\u2028\ud800'}
    assert body.isascii()


def test_valuation_defaults_to_usd_like_the_original():
    assert valuation_params({}) == {"currencies": ["USD"]}
    assert valuation_params({"fiatCode": ""}) == {"currencies": ["USD"]}
    assert valuation_params({"fiatCode": "eur"}) == {"currencies": ["EUR"]}
    assert COMMANDS["price.get"].parse_params(valuation_params({"fiatCode": "eur"})) == {
        "currencies": ["EUR"]
    }


@pytest.mark.parametrize(
    ("form", "says"),
    [
        ({"fiatCode": "DASH"}, "needs no price"),
        ({"fiatCode": "dollars"}, "ISO 4217"),
        ({"fiatCode": "USD", "currency": "USD"}, "unknown field(s): currency"),
        ([("fiatCode", "USD"), ("fiatCode", "EUR")], "more than once"),
    ],
)
def test_bad_valuation_forms(form, says):
    with pytest.raises(InvalidParams) as caught:
        valuation_params(form)
    assert says in caught.value.message


def test_valuation_answers_the_price_of_one_dash():
    answer = {
        "quotes": [
            {
                "currency": "USD",
                "price": "22.135",
                "provider": "kraken",
                "fetched_at": "2027-01-15T08:00:00.000Z",
                "age_seconds": 3,
                "fresh": True,
            }
        ]
    }
    fields = valuation_fields(answer)
    assert fields == {"fiatCode": "USD", "value": Decimal("22.135")}
    assert seed_json(fields) == b'{"fiatCode":"USD","value":22.135}'


def test_no_fresh_price_raises_the_commands_error_kind():
    answer = {
        "quotes": [
            {
                "currency": "USD",
                "error": {"kind": "price_unavailable", "message": "no fresh DASH price in USD"},
                "cached": None,
            }
        ]
    }
    with pytest.raises(DashpayError) as caught:
        valuation_fields(answer)
    assert caught.value.kind == PRICE_UNAVAILABLE
    assert caught.value.message == "no fresh DASH price in USD"
