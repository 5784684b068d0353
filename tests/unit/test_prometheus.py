"""The Prometheus text writer (wire/prometheus.py), read back by prometheus_client's
own parser of the text format."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from dashpay.wire.prometheus import (
    CONTENT_TYPE,
    COUNTER,
    GAUGE,
    HISTOGRAM,
    Family,
    Histogram,
    format_value,
    render,
)


def parse(body: bytes) -> dict:
    return {f.name: f for f in text_string_to_metric_families(body.decode("utf-8"))}


def test_a_family_is_written_with_help_type_and_samples():
    family = Family("dashpay_receivers", "Receivers by status.", GAUGE)
    family.add(3, status="paid").add(0, status="pending")
    body = render([family])
    assert body == (
        b"# HELP dashpay_receivers Receivers by status.\n"
        b"# TYPE dashpay_receivers gauge\n"
        b'dashpay_receivers{status="paid"} 3\n'
        b'dashpay_receivers{status="pending"} 0\n'
    )
    parsed = parse(body)["dashpay_receivers"]
    assert parsed.type == "gauge"
    assert parsed.documentation == "Receivers by status."
    assert [(s.labels, s.value) for s in parsed.samples] == [
        ({"status": "paid"}, 3),
        ({"status": "pending"}, 0),
    ]


HOSTILE = [
    'a"b',
    "back\\slash",
    "line\nfeed",
    '\\"',
    "\\n",
    "end\\",
    "} 1\nfake_metric 666",
    "ünï©ødé ✓",
    "",
    "tab\there\rcarriage",
]


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_label_values_read_back_unchanged(value):
    family = Family("dashpay_price_age_seconds", "Age.", GAUGE).add(1.5, currency=value)
    parsed = parse(render([family]))
    assert list(parsed) == ["dashpay_price_age_seconds"]  # nothing injected
    [sample] = parsed["dashpay_price_age_seconds"].samples
    assert sample.labels == {"currency": value}
    assert sample.value == 1.5


@given(st.text())
def test_any_label_value_reads_back(value):
    family = Family("x", "h", GAUGE).add(1, v=value)
    [sample] = parse(render([family]))["x"].samples
    expected = value.encode("utf-8", "replace").decode("utf-8")
    assert sample.labels == {"v": expected}


def test_a_lone_surrogate_in_a_label_is_replaced_not_an_error():
    body = render([Family("x", "h", GAUGE).add(1, v="a\ud800b")])
    assert parse(body)["x"].samples[0].labels == {"v": "a?b"}


def test_help_escapes_backslash_and_newline():
    body = render([Family("x", 'say "hi"\\ then\nmore', GAUGE).add(1)])
    assert b'# HELP x say "hi"\\\\ then\\nmore\n' in body
    assert parse(body)["x"].documentation == 'say "hi"\\ then\nmore'


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0, "0"),
        (12345678901234567890, "12345678901234567890"),
        (-3, "-3"),
        (0.1, "0.1"),
        (1e-9, "1e-09"),
        (2.5e20, "2.5e+20"),
        (math.inf, "+Inf"),
        (-math.inf, "-Inf"),
        (math.nan, "NaN"),
    ],
)
def test_values_are_spelled_as_the_format_says(value, text):
    assert format_value(value) == text
    [sample] = parse(render([Family("x", "h", GAUGE).add(value)]))["x"].samples
    if isinstance(value, float) and math.isnan(value):
        assert math.isnan(sample.value)
    else:
        assert sample.value == value


@pytest.mark.parametrize("value", [True, "1", None])
def test_a_value_that_is_not_a_number_is_refused(value):
    with pytest.raises(TypeError):
        Family("x", "h", GAUGE).add(value)


def test_counters_end_in_total_and_never_go_negative():
    with pytest.raises(ValueError, match="_total"):
        Family("dashpay_payments", "h", COUNTER)
    family = Family("dashpay_payments_total", "h", COUNTER)
    with pytest.raises(ValueError, match=">= 0"):
        family.add(-1)
    with pytest.raises(ValueError, match=">= 0"):
        family.add(math.nan)
    family.add(7)
    parsed = parse(render([family]))
    # The parser names a counter family without its _total suffix.
    assert parsed["dashpay_payments"].type == "counter"
    assert parsed["dashpay_payments"].samples[0].value == 7


def test_histogram_buckets_are_cumulative_and_end_at_inf():
    hist = Histogram([0.1, 1, 10])
    for value in (0.05, 0.1, 0.5, 3, 50):
        hist.observe(value)
    family = Family("dashpay_rescan_duration_seconds", "h", HISTOGRAM).add_histogram(hist)
    body = render([family])
    assert b'dashpay_rescan_duration_seconds_bucket{le="0.1"} 2\n' in body  # <= is inclusive
    assert b'dashpay_rescan_duration_seconds_bucket{le="+Inf"} 5\n' in body
    parsed = parse(body)["dashpay_rescan_duration_seconds"]
    assert parsed.type == "histogram"
    values = {(s.name, s.labels.get("le")): s.value for s in parsed.samples}
    assert values == {
        ("dashpay_rescan_duration_seconds_bucket", "0.1"): 2,
        ("dashpay_rescan_duration_seconds_bucket", "1.0"): 3,
        ("dashpay_rescan_duration_seconds_bucket", "10.0"): 4,
        ("dashpay_rescan_duration_seconds_bucket", "+Inf"): 5,
        ("dashpay_rescan_duration_seconds_sum", None): pytest.approx(53.65),
        ("dashpay_rescan_duration_seconds_count", None): 5,
    }


def test_an_empty_histogram_has_zero_counts():
    family = Family("h", "h", HISTOGRAM).add_histogram(Histogram([1]), kind="full")
    samples = parse(render([family]))["h"].samples
    assert {s.value for s in samples} == {0}
    assert all(s.labels["kind"] == "full" for s in samples)


@pytest.mark.parametrize("bounds", [[], [1, 1], [2, 1], [1, math.inf], [math.nan]])
def test_histogram_bounds_must_be_finite_and_increasing(bounds):
    with pytest.raises(ValueError):
        Histogram(bounds)


def test_a_histogram_refuses_nan():
    with pytest.raises(ValueError):
        Histogram([1]).observe(math.nan)


def test_each_family_once():
    with pytest.raises(ValueError, match="twice"):
        render([Family("x", "h", GAUGE), Family("x", "h", GAUGE)])
    # A histogram claims its _bucket/_sum/_count names too.
    with pytest.raises(ValueError, match="twice"):
        render([Family("x", "h", HISTOGRAM), Family("x_count", "h", GAUGE)])


def test_each_label_set_once():
    family = Family("x", "h", GAUGE).add(1, a="1")
    with pytest.raises(ValueError, match="two samples"):
        family.add(2, a="1")


@pytest.mark.parametrize("name", ["1x", "x-y", "", "x y", "é"])
def test_invalid_metric_names_are_refused(name):
    with pytest.raises(ValueError, match="metric name"):
        Family(name, "h", GAUGE)


@pytest.mark.parametrize("label", ["__reserved", "1a", "a-b"])
def test_invalid_label_names_are_refused(label):
    with pytest.raises(ValueError, match="label name"):
        Family("x", "h", GAUGE).add(1, **{label: "v"})


def test_le_is_reserved_in_histograms_and_types_are_checked():
    with pytest.raises(ValueError, match="reserved"):
        Family("x", "h", HISTOGRAM).add_histogram(Histogram([1]), le="1")
    with pytest.raises(ValueError, match="histogram"):
        Family("x", "h", HISTOGRAM).add(1)
    with pytest.raises(ValueError, match="not a histogram"):
        Family("x", "h", GAUGE).add_histogram(Histogram([1]))
    with pytest.raises(ValueError, match="type"):
        Family("x", "h", "summary")
    with pytest.raises(TypeError):
        Family("x", "h", GAUGE).add(1, a=3)


def test_content_type_names_the_version():
    assert CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"
