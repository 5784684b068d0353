from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dashpay.domain.money import (
    MAX_DUFFS,
    AmountError,
    dash_to_duffs,
    duffs_to_dash,
    fiat_amount,
    format_dash,
    insight_dash_to_duffs,
)


@given(st.integers(min_value=1, max_value=MAX_DUFFS))
def test_format_and_parse_round_trip_every_duff_amount(duffs):
    assert dash_to_duffs(format_dash(duffs)) == duffs
    assert dash_to_duffs(duffs_to_dash(duffs)) == duffs


@given(st.integers(min_value=0, max_value=MAX_DUFFS))
def test_insight_floats_convert_exactly(duffs):
    # Insight prints DASH with at most 8 decimals; JSON decoding makes it a float whose
    # shortest repr is that decimal again.
    as_float = float(format(duffs_to_dash(duffs), "f"))
    assert insight_dash_to_duffs(as_float) == duffs
    assert insight_dash_to_duffs(format(duffs_to_dash(duffs), "f")) == duffs


@pytest.mark.parametrize(
    "text", ["1e-9", "-1", "abc", "NaN", "sNaN", "Infinity", "", "  ", "21000000.00000001", "0"]
)
def test_bad_dash_amounts_are_refused_with_a_reason(text):
    with pytest.raises(AmountError) as info:
        dash_to_duffs(text)
    assert str(info.value)


def test_binary_floats_are_refused_on_input():
    with pytest.raises(AmountError, match="float"):
        dash_to_duffs(0.1)


def test_exact_values():
    assert dash_to_duffs("0.1") == 10_000_000
    assert dash_to_duffs(" 1.50000000 ") == 150_000_000
    assert dash_to_duffs(Decimal("21000000")) == MAX_DUFFS
    assert format_dash(1) == "0.00000001"
    assert format_dash(100_000_000) == "1"
    assert insight_dash_to_duffs(0.00099608) == 99608
    with pytest.raises(AmountError):
        insight_dash_to_duffs("0.000000001")
    with pytest.raises(AmountError):
        insight_dash_to_duffs(True)


@pytest.mark.parametrize(
    "text", ["1_000", "1e2", "1E+9", "inf", "nan", "0x10", "1,5", "1 000", "١", "²", "1" * 41]
)
def test_only_plain_decimal_notation_is_an_amount(text):
    with pytest.raises(AmountError, match="plain decimal") as info:
        dash_to_duffs(text)
    assert repr(text[:40]) in str(info.value) or repr(text[:40] + "...") in str(info.value)


@pytest.mark.parametrize(
    ("text", "duffs"), [("+1.5", 150_000_000), (".5", 50_000_000), ("2.", 200_000_000)]
)
def test_plain_decimal_forms_that_are_accepted(text, duffs):
    assert dash_to_duffs(text) == duffs


def test_fiat_amounts_follow_the_same_notation_and_echo_the_text():
    assert fiat_amount("25.00") == Decimal("25.00")
    with pytest.raises(AmountError, match="'1e3' is not a plain decimal"):
        fiat_amount("1e3")
    with pytest.raises(AmountError, match="implausibly large"):
        fiat_amount(Decimal("1E+40"))  # a JSON number: past the size check, no overflow
