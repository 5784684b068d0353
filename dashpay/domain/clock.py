"""The one wall clock of dashpay's records: unix epoch milliseconds (UTC), the unit of
every time stored in the database."""

from __future__ import annotations

import time


def now_ms() -> int:
    return time.time_ns() // 1_000_000
