"""The log rate limiter: one line per second per kind, with the count it held back."""

from __future__ import annotations

import logging

import pytest

from dashpay.domain.throttle import Admitted, Throttle, ThrottledLog


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records]


def test_a_flood_of_one_kind_is_one_line_a_second_with_the_suppressed_count(clock, caplog):
    caplog.set_level(logging.INFO, logger="dashpay.test")
    log = ThrottledLog(logging.getLogger("dashpay.test"), clock=clock)
    for i in range(1235):
        clock.now = 1000.0 + i * 0.0008  # 1235 refusals within one second
        log.warning("refused", "control connection refused conn=%d", i)
    assert messages(caplog) == ["control connection refused conn=0"]

    clock.now = 1001.0
    log.warning("refused", "control connection refused conn=%d", 1235)
    assert messages(caplog)[1] == (
        "control connection refused conn=1235 (suppressed 1234 similar in the last 1.0s)"
    )
    assert caplog.records[1].levelno == logging.WARNING


def test_the_count_starts_again_after_each_line_and_a_quiet_kind_has_no_suffix(clock, caplog):
    caplog.set_level(logging.INFO, logger="dashpay.test")
    log = ThrottledLog(logging.getLogger("dashpay.test"), clock=clock)
    log.warning("evicted", "evicted %d", 1)
    clock.now += 0.5
    log.warning("evicted", "evicted %d", 2)
    clock.now += 0.6
    log.warning("evicted", "evicted %d", 3)  # 1.1 s after the first: goes out
    clock.now += 5.0
    log.warning("evicted", "evicted %d", 4)  # nothing held back since: no suffix
    assert messages(caplog) == [
        "evicted 1",
        "evicted 3 (suppressed 1 similar in the last 1.1s)",
        "evicted 4",
    ]


def test_kinds_are_limited_separately(clock, caplog):
    caplog.set_level(logging.INFO, logger="dashpay.test")
    log = ThrottledLog(logging.getLogger("dashpay.test"), clock=clock)
    for _ in range(3):
        log.warning("refused", "refused")
        log.info("rejected", "rejected")
    assert messages(caplog) == ["refused", "rejected"]
    assert [r.levelno for r in caplog.records] == [logging.WARNING, logging.INFO]


def test_a_disabled_level_is_neither_logged_nor_counted(clock, caplog):
    caplog.set_level(logging.WARNING, logger="dashpay.test")
    log = ThrottledLog(logging.getLogger("dashpay.test"), clock=clock)
    for _ in range(10):
        log.info("rejected", "rejected")
    assert messages(caplog) == []
    assert log.throttle.admit("rejected") == Admitted(0, 0.0)


def test_the_line_names_its_caller_not_the_throttle(clock, caplog):
    caplog.set_level(logging.INFO, logger="dashpay.test")
    ThrottledLog(logging.getLogger("dashpay.test"), clock=clock).warning("k", "here")
    assert caplog.records[0].filename == "test_throttle.py"


def test_throttle_admits_once_per_interval(clock):
    throttle = Throttle(interval=2.0, clock=clock)
    assert throttle.admit("k") == Admitted(0, 0.0)
    clock.now += 1.9
    assert throttle.admit("k") is None
    assert throttle.admit("k") is None
    clock.now += 0.1
    assert throttle.admit("k") == Admitted(2, pytest.approx(2.0))
