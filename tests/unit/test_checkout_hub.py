"""The checkout page's broadcast hub: watchers per receiver, bounded, never blocking
the engine that publishes."""

from __future__ import annotations

import dataclasses

import pytest
import trio

from dashpay.domain.errors import Unavailable
from dashpay.domain.model import ReceiverResult
from dashpay.services.checkout_hub import CheckoutHub


@dataclasses.dataclass
class FakeReceiver:
    receiver_id: int


def result(receiver_id: int) -> ReceiverResult:
    return ReceiverResult(FakeReceiver(receiver_id), [], [], [])  # type: ignore[arg-type]


async def test_a_change_reaches_every_watcher_of_that_receiver_only():
    hub = CheckoutHub()
    with hub.watch(1) as a, hub.watch(1) as b, hub.watch(2) as other:
        assert len(hub) == 3
        hub.recorded([result(1)])
        first, second = a.receive_nowait(), b.receive_nowait()
        assert first is second  # one shared update
        assert first.shared("frame", lambda: b"x") == second.shared("frame", lambda: b"y")
        with pytest.raises(trio.WouldBlock):
            other.receive_nowait()
    assert len(hub) == 0 and hub.status_view()["receivers_watched"] == 0


async def test_a_slow_watcher_is_dropped_and_publish_never_blocks():
    hub = CheckoutHub(buffer=2)
    with hub.watch(7) as slow, hub.watch(7) as quick:
        for _ in range(2):
            hub.recorded([result(7)])
            quick.receive_nowait()
        hub.recorded([result(7)])  # the slow one's channel is full: it is dropped
        assert len(hub) == 1 and hub.stats.dropped == 1
        slow.receive_nowait()
        slow.receive_nowait()
        with pytest.raises(trio.EndOfChannel):
            slow.receive_nowait()
        quick.receive_nowait()
    assert len(hub) == 0


async def test_watchers_are_capped():
    hub = CheckoutHub(max_watchers=2)
    with hub.watch(1), hub.watch(2):
        assert hub.refuses() and hub.stats.refused == 1
        with pytest.raises(Unavailable) as refused, hub.watch(3):
            pass
        assert refused.value.details["retry_after"] > 0
    assert not hub.refuses()
    with hub.watch(3):
        assert len(hub) == 1
