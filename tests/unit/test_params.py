from decimal import Decimal

import pytest

from dashpay.api.commands import COMMANDS
from dashpay.api.params import (
    parse_create_receiver,
    parse_list_receivers,
    receiver_id_value,
    validate_callback_url,
)
from dashpay.domain.errors import InvalidParams
from dashpay.domain.status import STATUSES


def test_create_params_defaults_and_exact_amount():
    p = parse_create_receiver({"amount": "1.23456789"})
    assert p.amount_duffs == 123_456_789
    assert p.currency == "DASH"
    assert p.expires_after is None


def test_json_numbers_arrive_as_decimal_and_are_exact():
    assert parse_create_receiver({"amount": Decimal("0.1")}).amount_duffs == 10_000_000
    assert parse_create_receiver({"amount": 2}).amount_duffs == 200_000_000


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({}, "amount is required"),
        ({"amount": 0.1}, "float"),
        ({"amount": "1", "bogus": 1}, "unknown parameter"),
        ({"amount": "1", "currency": "dollars"}, "currency"),
        ({"amount": "1", "description": 5}, "string"),
        ({"amount": "1", "description": "a\nb"}, "control characters"),
        ({"amount": "1", "description": "a\ud800b"}, "lone surrogate"),
        ({"amount": "1", "username": "\udcff"}, "username is not valid text"),
        ({"amount": "1", "idempotency_key": "has space"}, "idempotency_key"),
        ({"amount": "1", "expires_after": True}, "duration"),
        ({"amount": "1", "callback_url": "javascript:alert(1)"}, "http"),
        ({"amount": "1", "callback_url": "http://h:99999/"}, "URL"),
        ({"amount": "-5", "currency": "USD"}, "greater than 0"),
        # Too large for the 8-decimal check's quantize (it raised decimal.InvalidOperation).
        ({"amount": "1e400", "currency": "USD"}, "not a plain decimal"),
        ({"amount": "1" + "0" * 30, "currency": "USD"}, "implausibly large"),
        ({"amount": Decimal("1e28"), "currency": "EUR"}, "implausibly large"),  # a JSON number
    ],
)
def test_create_params_errors_name_the_problem(params, needle):
    # Through the command table, which also checks the parameter names.
    with pytest.raises(InvalidParams) as info:
        COMMANDS["receiver.create"].parse_params(params)
    assert needle in str(info.value)


def test_text_beyond_ascii_is_kept_as_sent():
    p = parse_create_receiver({"amount": "1", "description": "café 😀 \u2028", "username": "ü"})
    assert (p.description, p.username) == ("café 😀 \u2028", "ü")


def test_fiat_amount_is_kept_as_decimal_without_duffs():
    p = parse_create_receiver({"amount": "25.00", "currency": "usd"})
    assert (p.amount, p.currency, p.amount_duffs) == (Decimal("25.00"), "USD", None)


def test_callback_url_accepts_http_and_https_with_host():
    assert validate_callback_url("https://shop.example:8443/cb?x=1")
    assert validate_callback_url("http://127.0.0.1/cb")


@pytest.mark.parametrize("value", [0, -1, True, "x", 1.5, None, 2**63])
def test_receiver_id_must_be_a_positive_integer(value):
    with pytest.raises(InvalidParams):
        receiver_id_value(value)


def test_list_params_limits():
    assert parse_list_receivers({}, STATUSES).limit == 50
    for bad in ({"limit": 0}, {"limit": 1001}, {"limit": True}, {"status": "done"}):
        with pytest.raises(InvalidParams):
            parse_list_receivers(bad, STATUSES)


@pytest.mark.parametrize("given, expected", [("DASH", "DASH"), ("dash", "DASH"), (" usd ", "USD")])
def test_currency_is_dash_or_a_three_letter_code(given, expected):
    assert parse_create_receiver({"amount": "1", "currency": given}).currency == expected


@pytest.mark.parametrize("given", ["USDT", "EU", "DASHX", "", 7])
def test_currency_of_other_lengths_is_refused_as_the_message_says(given):
    # One rule for receivers, the price service and the cache (domain/money.FIAT_CODE):
    # before, 4- and 5-letter codes passed here and failed later at the price service.
    with pytest.raises(InvalidParams, match="3-letter ISO 4217"):
        parse_create_receiver({"amount": "1", "currency": given})
