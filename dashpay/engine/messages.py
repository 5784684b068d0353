"""What the payment engine's channel carries: one typed union, ``EngineMessage``.

The observations come from the chain sources (``dashpay.domain.observations``); the
rest from the daemon's own tasks. The engine dispatches on the exact type (a table of
handlers, ``TxObserved`` checked first: it is most of the traffic).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeAlias

from dashpay.domain.model import Receiver, ReceiverResult, ReceiverWork
from dashpay.domain.observations import (
    BlockObserved,
    SocketConnected,
    SocketDisconnected,
    TxObserved,
)

__all__ = [
    "Apply",
    "BlockObserved",
    "EngineMessage",
    "ReceiverAdded",
    "ReceiverChanged",
    "SocketConnected",
    "SocketDisconnected",
    "Tick",
    "TxObserved",
]


@dataclass(frozen=True, slots=True)
class ReceiverAdded:
    """A receiver was created: watch its address."""

    receiver: Receiver


@dataclass(frozen=True, slots=True)
class ReceiverChanged:
    """A receiver changed outside the engine (cancelled over the control socket)."""

    receiver: Receiver


@dataclass(frozen=True, slots=True)
class Tick:
    """Once a second: expire what is due, drop what left the monitoring window."""


@dataclass(frozen=True, slots=True)
class Apply:
    """Work from a rescan or the settlement checker; ``done`` receives the results (the
    ones of these receivers, after the batch that carried the work committed)."""

    work: list[ReceiverWork]
    done: Callable[[list[ReceiverResult]], None] | None = None


EngineMessage: TypeAlias = (
    TxObserved
    | BlockObserved
    | SocketConnected
    | SocketDisconnected
    | ReceiverAdded
    | ReceiverChanged
    | Tick
    | Apply
)
