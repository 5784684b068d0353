"""What a chain source tells us, as values: the only way a payment enters dashpay.

``TxObserved`` is produced identically by the socket path (``tx``/``txlock`` events),
by the REST path (address history, ``tx/<txid>``) and by the sandbox.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

SOURCE_SOCKET = "socket"
SOURCE_REST = "rest"


@dataclass(frozen=True, slots=True)
class TxObserved:
    txid: str  # 64 lowercase hex characters
    outputs: Mapping[str, int]  # address -> duffs, summed over all outputs to it
    instant_locked: bool
    block_height: int | None = None  # None: unknown or in the mempool
    confirmations: int | None = None  # None: unknown (socket events do not say)
    source: str = SOURCE_SOCKET


@dataclass(frozen=True, slots=True)
class BlockObserved:
    block_hash: str  # 64 lowercase hex characters


def frozen_outputs(outputs: dict[str, int]) -> Mapping[str, int]:
    """A read-only view, so a TxObserved can be shared between tasks safely."""
    return MappingProxyType(outputs)


@dataclass(frozen=True, slots=True)
class SocketConnected:
    """The socket is subscribed again: events from now on arrive, earlier ones may have
    been missed (Insight never replays), so the consumer rescans over REST."""

    at: float  # wall time (time.time())


@dataclass(frozen=True, slots=True)
class SocketDisconnected:
    """A live socket link was lost; events stop until the next ``SocketConnected``."""

    at: float  # wall time (time.time())
    reason: str
