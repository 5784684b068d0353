"""Durations in config files and on the command line: parse_duration / format_duration."""

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dashpay.config.durations import (
    MAX_DURATION_SECONDS,
    DurationError,
    format_duration,
    parse_duration,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30.0),
        ("15m", 900.0),
        ("2h", 7200.0),
        ("3d", 259_200.0),
        ("500ms", 0.5),
        ("1h30m", 5400.0),
        ("1d2h3m4s5ms", 93_784.005),
        ("0", 0.0),
        ("0s", 0.0),
        ("90", 90.0),
        ("0.5s", 0.5),
        ("1.5h", 5400.0),
        ("0.25", 0.25),
        ("  2h  ", 7200.0),
        (90, 90.0),
        (0, 0.0),
        (1.5, 1.5),
        (Decimal("2.5"), 2.5),
        ("36500d", 36500 * 86400.0),
    ],
)
def test_accepted_durations_give_seconds(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "5x",
        "1.5.2s",
        "5M",
        "1 h",
        ".5s",
        "5.s",
        "1e3s",
        "nan",
        "h",
        "s5",
        "1h-30m",
        "9" * 500,
    ],
)
def test_malformed_durations_are_refused_with_the_expected_form(text):
    with pytest.raises(DurationError, match="expected a duration such as 30s, 15m, 2h or 3d"):
        parse_duration(text)


def test_error_message_names_the_key_and_quotes_the_value():
    with pytest.raises(ValueError) as caught:
        parse_duration("5x", key="expires_after")
    assert str(caught.value) == (
        'expires_after: expected a duration such as 30s, 15m, 2h or 3d, got "5x"'
    )
    assert caught.value.reason.startswith("expected a duration")


@pytest.mark.parametrize("text", ["-5m", "-1", -1, -0.5, Decimal("-3")])
def test_negative_durations_are_refused(text):
    with pytest.raises(DurationError, match="cannot be negative"):
        parse_duration(text)


@pytest.mark.parametrize("text", ["36501d", MAX_DURATION_SECONDS + 1, "99999999999999999999h"])
def test_durations_over_100_years_are_refused(text):
    with pytest.raises(DurationError, match="longer than 100 years"):
        parse_duration(text)


@pytest.mark.parametrize("text", [True, False])
def test_booleans_are_not_durations(text):
    with pytest.raises(DurationError, match="boolean"):
        parse_duration(text)


@pytest.mark.parametrize("text", [None, [1], {"s": 1}, b"5s"])
def test_other_types_are_not_durations(text):
    with pytest.raises(DurationError, match="expected a duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    "text", [float("inf"), float("nan"), Decimal("NaN"), Decimal("sNaN"), Decimal("Infinity")]
)
def test_non_finite_numbers_are_refused(text):
    with pytest.raises(DurationError):
        parse_duration(text)


@pytest.mark.parametrize("text", ["30m1h", "1m1m", "5ms1s", "1s1d"])
def test_units_out_of_order_or_repeated_are_refused(text):
    with pytest.raises(DurationError, match="largest to smallest"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (3600, "1h"),
        (900, "15m"),
        (90, "1m30s"),
        (2 * 86400 + 3 * 3600, "2d3h"),
        (0, "0s"),
        (0.0, "0s"),
        (0.5, "500ms"),
        (1.25, "1s250ms"),
        (259_200.0, "3d"),
        (0.0001, "0.0001s"),
        (Decimal("1.5"), "1s500ms"),
    ],
)
def test_format_duration_writes_units_largest_first(seconds, text):
    assert format_duration(seconds) == text


@pytest.mark.parametrize("seconds", [-1, -0.001, float("nan"), float("inf"), True, "5s", None])
def test_format_duration_refuses_what_is_not_a_duration(seconds):
    with pytest.raises(ValueError):
        format_duration(seconds)


@given(st.integers(min_value=0, max_value=MAX_DURATION_SECONDS * 1000))
def test_whole_milliseconds_round_trip_exactly(milliseconds):
    seconds = milliseconds / 1000
    text = format_duration(seconds)
    assert parse_duration(text) == seconds
    assert "." not in text  # whole milliseconds are always written with units


@given(st.floats(min_value=0, max_value=MAX_DURATION_SECONDS, allow_nan=False))
def test_any_float_round_trips_exactly(seconds):
    assert parse_duration(format_duration(seconds)) == seconds


@given(st.integers(min_value=0, max_value=MAX_DURATION_SECONDS))
def test_integer_seconds_round_trip_exactly(seconds):
    assert parse_duration(format_duration(seconds)) == seconds
