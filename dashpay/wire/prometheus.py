"""The Prometheus text exposition format, version 0.0.4, written without I/O.

What a scraper reads from ``GET /metrics``: families of samples, each family once, with
its ``# HELP`` and ``# TYPE`` lines before its samples (a family's samples must not be
interleaved with another family's). The rules implemented here are those of the
format's specification ("Exposition formats", text-based format):

- metric names match ``[a-zA-Z_:][a-zA-Z0-9_:]*``, label names ``[a-zA-Z_][a-zA-Z0-9_]*``;
  label names starting with ``__`` are reserved for Prometheus itself;
- a label value may be any text, with backslash, double quote and line feed escaped as
  ``\\\\``, ``\\"`` and ``\\n``; HELP text escapes backslash and line feed only;
- a value is a Go float: ``+Inf``, ``-Inf`` and ``NaN`` spelled so;
- a histogram ``x`` is the samples ``x_bucket{le="..."}`` (cumulative, the last one
  ``le="+Inf"``, equal to ``x_count``), ``x_sum`` and ``x_count``.

Names and label names are ours (constants in the code), so a bad one is a bug and
raises ValueError. Label values may come from outside (a currency code, a state): they
are escaped, never refused; text that is not UTF-8 (a lone surrogate) is replaced.
"""

from __future__ import annotations

import math
import re
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

COUNTER = "counter"
GAUGE = "gauge"
HISTOGRAM = "histogram"
TYPES = (COUNTER, GAUGE, HISTOGRAM)

_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
_LABEL_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n"})
_HELP_ESCAPES = str.maketrans({"\\": "\\\\", "\n": "\\n"})

Number = int | float


def format_value(value: Number) -> str:
    """A sample value as the format spells it: integers exactly, floats as the
    shortest text that reads back to the same float, ``+Inf``/``-Inf``/``NaN``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"a sample value is an int or a float, not {type(value).__name__}")
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def _text(value: str) -> str:
    """``value`` as text that can be written in UTF-8 (lone surrogates replaced)."""
    if value.isascii():
        return value
    return value.encode("utf-8", "replace").decode("utf-8")


def escape_label_value(value: str) -> str:
    return _text(value).translate(_LABEL_ESCAPES)


def escape_help(text: str) -> str:
    return _text(text).translate(_HELP_ESCAPES)


def _check_label_name(name: str) -> None:
    if not _LABEL_NAME.fullmatch(name) or name.startswith("__"):
        raise ValueError(f"invalid label name {name!r}")


class Histogram:
    """Observations counted into buckets with fixed upper bounds, for a histogram
    family. Pure: the owner calls ``observe``; ``Family.add_histogram`` renders it."""

    def __init__(self, bounds: Sequence[float]) -> None:
        bounds = [float(b) for b in bounds]
        if not bounds or any(not math.isfinite(b) for b in bounds):
            raise ValueError("histogram bounds must be finite numbers (+Inf is implied)")
        if any(a >= b for a, b in zip(bounds, bounds[1:], strict=False)):
            raise ValueError("histogram bounds must be strictly increasing")
        self.bounds = tuple(bounds)
        self._counts = [0] * (len(bounds) + 1)  # the last one: above every bound
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            raise ValueError(f"a histogram observes numbers, got {value!r}")
        # A bucket counts the observations <= its bound: bisect_left finds the first
        # bound >= value.
        self._counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations <= it) for every bound and +Inf."""
        out, total = [], 0
        for bound, count in zip((*self.bounds, math.inf), self._counts, strict=True):
            total += count
            out.append((bound, total))
        return out


@dataclass(frozen=True, slots=True)
class Sample:
    suffix: str  # "" or, in a histogram, "_bucket", "_sum", "_count"
    labels: tuple[tuple[str, str], ...]
    value: Number


@dataclass(slots=True)
class Family:
    """One metric family: its name, help, type and samples (one per label set)."""

    name: str
    help: str
    type: str
    samples: list[Sample] = field(default_factory=list)
    _seen: set[tuple[str, tuple[tuple[str, str], ...]]] = field(default_factory=set, repr=False)

    def __post_init__(self) -> None:
        if not _METRIC_NAME.fullmatch(self.name):
            raise ValueError(f"invalid metric name {self.name!r}")
        if self.type not in TYPES:
            raise ValueError(f"metric type must be one of {', '.join(TYPES)}, got {self.type!r}")
        if self.type == COUNTER and not self.name.endswith("_total"):
            raise ValueError(f"counter {self.name} must be named ..._total")

    def add(self, value: Number, **labels: str) -> Family:
        """A sample with these labels (counters and gauges). Returns the family."""
        if self.type == HISTOGRAM:
            raise ValueError(f"{self.name} is a histogram: use add_histogram")
        format_value(value)  # type check now, not at render time
        if self.type == COUNTER and not value >= 0:
            raise ValueError(f"counter {self.name} must be >= 0, got {value!r}")
        self._append("", _labels(labels), value)
        return self

    def add_histogram(self, histogram: Histogram, **labels: str) -> Family:
        if self.type != HISTOGRAM:
            raise ValueError(f"{self.name} is a {self.type}, not a histogram")
        if "le" in labels:
            raise ValueError("the label le is reserved for histogram buckets")
        base = _labels(labels)
        for bound, count in histogram.cumulative():
            self._append("_bucket", (*base, ("le", format_value(bound))), count)
        self._append("_sum", base, histogram.sum)
        self._append("_count", base, histogram.count)
        return self

    def _append(self, suffix: str, labels: tuple[tuple[str, str], ...], value: Number) -> None:
        key = (suffix, labels)
        if key in self._seen:
            raise ValueError(f"{self.name}{suffix} has two samples with labels {dict(labels)}")
        self._seen.add(key)
        self.samples.append(Sample(suffix, labels, value))

    def sample_names(self) -> tuple[str, ...]:
        """The names this family's samples can carry (for the one-family-once check)."""
        if self.type == HISTOGRAM:
            return (self.name, *(self.name + s for s in _HISTOGRAM_SUFFIXES))
        return (self.name,)


def _labels(labels: dict[str, str]) -> tuple[tuple[str, str], ...]:
    for name, value in labels.items():
        _check_label_name(name)
        if not isinstance(value, str):
            raise TypeError(f"label {name} must be text, got {type(value).__name__}")
    return tuple(labels.items())


def _sample_line(name: str, sample: Sample) -> str:
    if sample.labels:
        inner = ",".join(f'{k}="{escape_label_value(v)}"' for k, v in sample.labels)
        return f"{name}{sample.suffix}{{{inner}}} {format_value(sample.value)}\n"
    return f"{name}{sample.suffix} {format_value(sample.value)}\n"


def render(families: Iterable[Family]) -> bytes:
    """The exposition text of ``families``, in the order given. A name used by two
    families (a histogram ``x`` also claims ``x_bucket``, ``x_sum`` and ``x_count``)
    raises ValueError: each family appears once."""
    lines: list[str] = []
    claimed: dict[str, str] = {}
    for family in families:
        for name in family.sample_names():
            if name in claimed:
                raise ValueError(f"metric {name} is written twice ({claimed[name]}, {family.name})")
            claimed[name] = family.name
        lines.append(f"# HELP {family.name} {escape_help(family.help)}\n")
        lines.append(f"# TYPE {family.name} {family.type}\n")
        lines.extend(_sample_line(family.name, sample) for sample in family.samples)
    return "".join(lines).encode("utf-8")
