"""The daemon's log formatters."""

import logging

import pytest

from dashpay.daemon.logs import HumanFormatter, JournalFormatter

STANDARD = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def record(
    created: float, level: int = logging.INFO, msg: str = "event id=%s"
) -> logging.LogRecord:
    item = logging.LogRecord("dashpay.engine", level, __file__, 1, msg, ("evt_1",), None)
    item.created = created
    item.msecs = int((created - int(created)) * 1000)
    return item


@pytest.mark.parametrize(
    "times",
    [
        [1764152612.001, 1764152612.999, 1764152613.0, 1764152613.5],  # a second rolls over
        [1764152613.5, 1764152612.25],  # the clock steps back
        [0.0, 86399.999, 951782400.123],  # epoch, a day's last ms, a leap day
    ],
)
def test_human_formatter_writes_what_logging_default_writes(times: list[float]) -> None:
    ours, standard = HumanFormatter(), logging.Formatter(STANDARD)
    for created in times:
        assert ours.format(record(created)) == standard.format(record(created))


def test_human_formatter_keeps_the_traceback() -> None:
    try:
        raise ValueError("bad event")
    except ValueError:
        item = logging.LogRecord(
            "dashpay.engine",
            logging.ERROR,
            __file__,
            1,
            "skipped",
            (),
            __import__("sys").exc_info(),
        )
    text = HumanFormatter().format(item)
    assert " ERROR dashpay.engine: skipped\nTraceback" in text
    assert text.endswith("ValueError: bad event")


def test_journal_formatter_has_a_priority_and_no_time() -> None:
    assert JournalFormatter().format(record(1764152612.5, logging.WARNING)) == (
        "<4>dashpay.engine: event id=evt_1"
    )
