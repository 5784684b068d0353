"""dashpay.services.valuation, the pure parts: each provider's recorded answer format,
hostile answers, price sanity, the exact fiat -> duffs conversion and the median."""

from __future__ import annotations

import json
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from dashpay.domain.errors import InvalidParams
from dashpay.domain.money import MAX_DUFFS
from dashpay.domain.money import fiat_code as parse_currency_code
from dashpay.services.prices.convert import (
    Quote,
    convert,
    fiat_to_duffs,
    median,
    price_text,
    sane_price,
)
from dashpay.services.prices.providers import (
    BadAnswer,
    Coinbase,
    CoinGecko,
    Kraken,
    NotQuoted,
    ProviderError,
    decode_json,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "prices"


def fixture(name: str):
    return decode_json((FIXTURES / name).read_bytes())


# -- the recorded formats -------------------------------------------------------------


def test_coingecko_sample_gives_its_exact_price_and_update_time():
    reading = CoinGecko("https://cg").parse(
        200, fixture("coingecko-simple-price-dash-usd.json"), "USD"
    )
    assert reading.value == Decimal("22.153417692849753")  # exact, not a binary float
    assert reading.as_of == 1747833614


def test_coingecko_request_asks_for_dash_in_the_lower_case_currency():
    url, params = CoinGecko("https://cg.example").request("EUR")
    assert url == "https://cg.example/api/v3/simple/price"
    assert params["ids"] == "dash" and params["vs_currencies"] == "eur"


def test_coingecko_empty_coin_object_means_currency_not_quoted():
    with pytest.raises(NotQuoted):
        CoinGecko("x").parse(200, fixture("coingecko-simple-price-unknown-vs-currency.json"), "ZAR")


def test_coingecko_rate_limit_answer_is_a_failure_quoting_its_message():
    with pytest.raises(ProviderError, match="rate limited.*exceeded the Rate Limit"):
        CoinGecko("x").parse(429, fixture("coingecko-rate-limited.json"), "USD")


@pytest.mark.parametrize(
    "payload",
    [{}, {"dash": 22}, {"bitcoin": {"usd": 1}}, [], {"dash": {"eur": Decimal(1)}}],
)
def test_coingecko_changed_shape_is_a_bad_answer(payload):
    with pytest.raises(BadAnswer):
        CoinGecko("x").parse(200, payload, "USD")


def test_coingecko_price_as_text_is_a_bad_answer():
    with pytest.raises(BadAnswer, match="expected a number"):
        CoinGecko("x").parse(200, {"dash": {"usd": "22.1"}}, "USD")


def test_kraken_sample_gives_the_last_trade_price():
    reading = Kraken("https://k").parse(200, fixture("kraken-ticker-dashusd.json"), "USD")
    assert reading.value == "22.14000"


def test_kraken_request_uses_the_dash_pair_name():
    url, params = Kraken("https://k.example").request("EUR")
    assert url == "https://k.example/0/public/Ticker"
    assert params == {"pair": "DASHEUR"}


def test_kraken_quotes_only_its_dash_markets():
    kraken = Kraken("x")
    assert kraken.quotes("USD") and kraken.quotes("EUR")
    assert not kraken.quotes("JPY")


def test_kraken_prefixed_result_key_for_the_same_pair_is_accepted():
    payload = {"error": [], "result": {"XDASHZUSD": {"c": ["22.5", "1"]}}}
    assert Kraken("x").parse(200, payload, "USD").value == "22.5"


def test_kraken_ticker_of_another_pair_is_a_bad_answer():
    payload = {"error": [], "result": {"XXBTZUSD": {"c": ["84036.0", "1"]}}}
    with pytest.raises(BadAnswer, match="no DASHUSD ticker"):
        Kraken("x").parse(200, payload, "USD")


def test_kraken_unknown_pair_means_the_market_was_dropped():
    with pytest.raises(ProviderError, match="no longer knows the pair DASHUSD") as caught:
        Kraken("x").parse(200, fixture("kraken-ticker-unknown-pair.json"), "USD")
    assert not isinstance(caught.value, NotQuoted)


def test_kraken_error_array_is_a_failure():
    with pytest.raises(ProviderError, match="EService:Unavailable"):
        Kraken("x").parse(200, {"error": ["EService:Unavailable"]}, "USD")


@pytest.mark.parametrize(
    "ticker",
    [{"c": []}, {"c": "22.1"}, {"c": [22.1, "1"]}, {}, {"c": [None]}],
)
def test_kraken_malformed_ticker_is_a_bad_answer(ticker):
    with pytest.raises(BadAnswer):
        Kraken("x").parse(200, {"error": [], "result": {"DASHUSD": ticker}}, "USD")


def test_coinbase_sample_gives_its_amount():
    reading = Coinbase("https://cb").parse(200, fixture("coinbase-spot-dash-usd.json"), "USD")
    assert reading.value == "22.135"


def test_coinbase_request_path_names_the_pair():
    url, params = Coinbase("https://cb.example").request("CHF")
    assert url == "https://cb.example/v2/prices/DASH-CHF/spot" and params == {}


def test_coinbase_invalid_currency_means_not_quoted():
    with pytest.raises(NotQuoted, match="Invalid currency"):
        Coinbase("x").parse(404, fixture("coinbase-spot-invalid-currency.json"), "XYZ")


def test_coinbase_invalid_base_currency_means_dash_was_dropped():
    payload = {"errors": [{"id": "not_found", "message": "Invalid base currency"}]}
    with pytest.raises(ProviderError, match="no longer quotes DASH") as caught:
        Coinbase("x").parse(404, payload, "USD")
    assert not isinstance(caught.value, NotQuoted)


def test_coinbase_answer_for_another_pair_is_a_bad_answer():
    payload = {"data": {"amount": "84000.1", "base": "BTC", "currency": "USD"}}
    with pytest.raises(BadAnswer, match="not DASH-USD"):
        Coinbase("x").parse(200, payload, "USD")


def test_coinbase_server_error_is_a_failure_with_the_status():
    with pytest.raises(ProviderError, match="HTTP 503"):
        Coinbase("x").parse(503, {"errors": [{"id": "internal", "message": "down"}]}, "USD")


# -- decoding hostile bodies ----------------------------------------------------------


@pytest.mark.parametrize(
    "body, needle",
    [
        (b"<!DOCTYPE html><html><body>502 Bad Gateway</body></html>", "HTML page"),
        (b"  \n<html>maintenance</html>", "HTML page"),
        (b"", "empty"),
        (b"   ", "empty"),
        (b"garbage{", "not JSON"),
        (b'{"dash": {"usd": 22.1}', "not JSON"),
        (b"\xff\xfe\x00", "not UTF-8"),
        (b"[" * 100_000 + b"]" * 100_000, "not JSON"),
        (b'{"a": 1' + b"0" * 5000 + b"}", "not JSON"),
    ],
)
def test_hostile_bodies_are_bad_answers(body, needle):
    with pytest.raises(BadAnswer, match=needle):
        decode_json(body)


def test_json_numbers_are_decoded_exactly_and_nan_is_named():
    assert decode_json(b'{"p": 0.1}') == {"p": Decimal("0.1")}
    payload = decode_json(b'{"p": NaN, "q": -Infinity}')
    with pytest.raises(BadAnswer, match="NaN"):
        sane_price(payload["p"])
    with pytest.raises(BadAnswer, match="infinite"):
        sane_price(payload["q"])


# -- sanity ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, needle",
    [
        (Decimal(0), "zero"),
        ("0.0000", "zero"),
        (0, "zero"),
        (Decimal("-22.1"), "negative"),
        ("-22.1", "negative"),
        ("NaN", "NaN"),
        ("sNaN", "NaN"),
        (Decimal("Infinity"), "infinite"),
        ("inf", "infinite"),
        ("abc", "not a number"),
        ("1_000", "plain decimal"),
        (".5", "plain decimal"),
        ("", "not a number"),
        (True, "boolean"),
        (None, "NoneType"),
        ([22], "list"),
        ({"price": 22}, "dict"),
        (22.1, "float"),
        (Decimal("1.0000000000000000000000000000001"), "more than 30 digits"),
        (Decimal("1e-9"), "implausible"),
        (Decimal("1e13"), "implausible"),
        (10**50, "implausibly large"),
        ("1" * 70, "characters long"),
    ],
)
def test_insane_prices_are_rejected_saying_why(value, needle):
    with pytest.raises(BadAnswer, match=needle):
        sane_price(value)


@pytest.mark.parametrize(
    "value, expected",
    [
        ("22.14000", Decimal("22.14")),
        (" 22.1 ", Decimal("22.1")),
        (Decimal("22.153417692849753"), Decimal("22.153417692849753")),
        (22, Decimal(22)),
        ("1e2", Decimal(100)),
        ("578123.5", Decimal("578123.5")),
    ],
)
def test_sane_prices_are_kept_exactly(value, expected):
    assert sane_price(value) == expected


def test_price_text_is_plain_decimal_without_trailing_zeros():
    assert price_text(Decimal("22.14000")) == "22.14"
    assert price_text(Decimal("1E+2")) == "100"
    assert price_text(Decimal("0.000001")) == "0.000001"


@pytest.mark.parametrize("code, expected", [("USD", "USD"), ("eur", "EUR"), (" chf ", "CHF")])
def test_currency_codes_are_normalised(code, expected):
    assert parse_currency_code(code) == expected


@pytest.mark.parametrize("code", ["DASH", "dash", "US", "USDT", "U1D", "", None, 840, "€"])
def test_bad_currency_codes_are_invalid_params(code):
    with pytest.raises(InvalidParams):
        parse_currency_code(code)


# -- the conversion -------------------------------------------------------------------


@pytest.mark.parametrize(
    "amount, rate, duffs",
    [
        ("25", "22.135", 112943303),  # 112943302.4960... rounds up
        ("22.135", "22.135", 100_000_000),  # exact: no rounding at all
        ("1", "3", 33333334),
        ("0.00000001", "1000000", 1),  # the smallest fiat amount is still one duff
        ("100", "0.000001", 10_000_000_000_000_000),
    ],
)
def test_fiat_to_duffs_rounds_up_to_the_duff(amount, rate, duffs):
    assert fiat_to_duffs(Decimal(amount), Decimal(rate)) == duffs


@pytest.mark.parametrize(
    "amount, rate",
    [
        (Decimal(0), Decimal(1)),
        (Decimal(-1), Decimal(1)),
        (Decimal(1), Decimal(0)),
        (Decimal("NaN"), Decimal(1)),
        (Decimal(1), Decimal("Infinity")),
        (Decimal("1E+999999"), Decimal(1)),
        (Decimal(1), Decimal("1E-999999")),
        (1.5, Decimal(1)),
        (Decimal(1), True),
    ],
)
def test_fiat_to_duffs_refuses_inputs_that_are_not_money(amount, rate):
    with pytest.raises(ValueError):
        fiat_to_duffs(amount, rate)


fiat_amounts = st.decimals(
    min_value=Decimal("0.00000001"), max_value=Decimal("1e12"), places=8, allow_nan=False
)
rates = st.builds(
    lambda digits, exponent: Decimal(digits).scaleb(exponent),
    st.integers(min_value=1, max_value=10**20 - 1),
    st.integers(min_value=-20, max_value=5),
).filter(lambda r: Decimal("0.000001") <= r <= Decimal("1e12"))


@settings(max_examples=2000, deadline=None)
@given(amount=fiat_amounts, rate=rates)
@example(amount=Decimal("25"), rate=Decimal("22.135"))
@example(amount=Decimal("0.1"), rate=Decimal("0.3"))
def test_fiat_to_duffs_is_the_exact_ceiling_for_any_amount_and_rate(amount, rate):
    duffs = fiat_to_duffs(amount, rate)
    exact = Fraction(amount) * 100_000_000 / Fraction(rate)
    assert isinstance(duffs, int)
    assert duffs >= exact  # the merchant never receives less than asked
    assert duffs - 1 < exact  # and never a whole duff more than needed
    # The value of the duffs at the rate covers the fiat amount, exactly in Decimal.
    assert Fraction(duffs) * Fraction(rate) >= Fraction(amount) * 100_000_000


def quote(price: str, currency: str = "USD") -> Quote:
    return Quote(currency, Decimal(price), "kraken", 1_747_833_614_000)


def test_convert_keeps_the_fiat_terms_as_exact_text():
    conversion = convert(Decimal("25.00"), quote("22.14000"))
    assert conversion.amount_duffs == 112917796
    assert conversion.fiat_amount == "25.00"
    assert conversion.fiat_currency == "USD"
    assert conversion.rate == "22.14"
    assert conversion.rate_provider == "kraken"
    assert conversion.rate_fetched_at == 1_747_833_614_000


def test_convert_refuses_more_than_all_dash_there_can_be():
    with pytest.raises(InvalidParams, match="more than 21,000,000 DASH"):
        convert(Decimal("1e15"), quote("22"))
    assert convert(Decimal(21_000_000), quote("1")).amount_duffs == MAX_DUFFS


# -- median ---------------------------------------------------------------------------


def test_median_of_an_odd_count_is_the_middle_price():
    assert median([Decimal("23"), Decimal("22.1"), Decimal("40")]) == Decimal("23")


def test_median_of_an_even_count_is_the_exact_mean_of_the_middle_two():
    a = Decimal("22.153417692849753123456789012")
    b = Decimal("22.153417692849753123456789013")
    assert median([b, a]) == Decimal("22.1534176928497531234567890125")


def test_fixtures_are_valid_json_files():
    for path in FIXTURES.glob("*.json"):
        json.loads(path.read_text())
