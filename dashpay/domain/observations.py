"""What a chain source tells us, as values: the only way a payment enters dashpay.

Every backend (``[chain] backend``: Insight, Blockbook, dashd; the protocol is
``net/chain.py``) reports the network in these values and nothing else, so the payment
engine never knows which one it listens to:

- a tx seen, with its outputs: ``TxObserved`` (``instant_locked`` False);
- its InstantSend lock or ChainLock: ``TxObserved`` again with ``instant_locked`` True
  (both make a payment final, as Insight's ``txlock`` and dashd's ``instantlock`` do);
- a new block: ``BlockObserved`` (then confirmations are read with ``tx`` lookups);
- the push link up/down: ``SocketConnected`` (missed events: rescan) /
  ``SocketDisconnected``;
- a rescan's history and a verify read-back: lists of ``TxObserved`` with ``source``
  ``SOURCE_REST`` and ``confirmations`` known.

A lookup that gets no usable answer raises ``SourceError`` (each backend's errors are
subclasses), whatever the backend.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

SOURCE_SOCKET = "socket"
SOURCE_REST = "rest"


class SourceError(Exception):
    """The chain source did not give a usable answer (down, refusing, or malformed);
    the message says which request and why, without credentials."""


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
