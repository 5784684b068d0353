"""dashd's ZMQ notifications, without I/O: multipart frames in, observations out.

dashd publishes each notification as three frames, ``[topic, body, sequence]``, the
sequence a 4-byte little-endian counter kept per notifier (per topic), starting at 0
when dashd starts and counting up by one per message (Dash Core
``src/zmq/zmqpublishnotifier.cpp``, ``SendZmqMessage``). Bodies per topic:

- ``hashtx``, ``hashtxlock``, ``hashblock``, ``hashchainlock``: the 32-byte hash in
  display order (the bytes reversed from their internal order, so ``body.hex()`` is
  the txid / block hash as the RPC prints it);
- ``rawtx``, ``rawtxlock``: one serialized transaction (``wire/dash_tx.py``);
- ``rawtxlocksig``: the transaction followed by its InstantSend lock (``isdlock``:
  uint8 version, compact-size input count, 36-byte outpoints, 32-byte txid, 32-byte
  cycle hash, 96-byte BLS signature; docs/core/reference/p2p-network-instantsend-messages);
- ``rawblock``, ``rawchainlock``: one serialized block; ``rawchainlocksig``: the block
  followed by its ``clsig`` (int32 height, 32-byte block hash, 96-byte signature).

ZMQ subscriptions match by prefix: subscribing to ``rawtx`` also delivers ``rawtxlock``
and ``rawtxlocksig``, ``hashtx`` also ``hashtxlock``, ``rawchainlock`` also
``rawchainlocksig``; every one of them is decoded here. Signatures are not verified
(the publisher is the merchant's own node, reached over a trusted link), but a lock
must name the transaction it came with.

PUB/SUB drops messages when a subscriber is slow (the high-water mark) or reconnecting,
and dashd's counters restart with dashd: ``SequenceTracker`` turns a jump forward or
backward into ``RescanNeeded``, on which the shell rescans the watched set.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeAlias

from dashpay.domain.observations import BlockObserved, TxObserved
from dashpay.wire.dash_tx import (
    MAX_BLOCK_BYTES,
    Reader,
    TxParseError,
    display_hex,
    read_block,
    read_tx,
)

HASHTX = "hashtx"
HASHTXLOCK = "hashtxlock"
HASHBLOCK = "hashblock"
HASHCHAINLOCK = "hashchainlock"
RAWTX = "rawtx"
RAWTXLOCK = "rawtxlock"
RAWTXLOCKSIG = "rawtxlocksig"
RAWBLOCK = "rawblock"
RAWCHAINLOCK = "rawchainlock"
RAWCHAINLOCKSIG = "rawchainlocksig"
TOPICS = frozenset(
    {
        HASHTX,
        HASHTXLOCK,
        HASHBLOCK,
        HASHCHAINLOCK,
        RAWTX,
        RAWTXLOCK,
        RAWTXLOCKSIG,
        RAWBLOCK,
        RAWCHAINLOCK,
        RAWCHAINLOCKSIG,
    }
)
# What the dashd backend subscribes to: every payment with its outputs (rawtx; the
# prefix brings rawtxlock/rawtxlocksig too), its InstantSend lock, each new tip and each
# ChainLock. Blocks come as hashes: the txs of a block were already seen as rawtx, and
# confirmations are read back over RPC.
SUBSCRIBE = (RAWTX, HASHTXLOCK, HASHBLOCK, HASHCHAINLOCK)

SEQUENCE_BYTES = 4
HASH_BYTES = 32
BLS_SIGNATURE_BYTES = 96
_SEQUENCE_MODULUS = 1 << 32
# A topic is a short ASCII name; anything longer is not from dashd.
MAX_TOPIC_BYTES = 32
# The largest body: a block with its clsig.
MAX_BODY_BYTES = MAX_BLOCK_BYTES + 4 + HASH_BYTES + BLS_SIGNATURE_BYTES


class ZmqMessageError(ValueError):
    """A ZMQ message that is not one of dashd's notifications; the text says why."""


@dataclass(frozen=True, slots=True)
class ZmqMessage:
    topic: str
    body: bytes
    sequence: int


@dataclass(frozen=True, slots=True)
class TxAnnounced:
    """``hashtx``/``hashtxlock``: only a txid. The shell reads the transaction over RPC
    (``getrawtransaction txid true``) to learn its outputs."""

    txid: str
    instant_locked: bool


@dataclass(frozen=True, slots=True)
class BlockContents:
    """``rawblock``: the block's transactions as observations (confirmed, so they carry
    the block height when the CbTx gives it). No hash: see ``wire.dash_tx.RawBlock``."""

    height: int | None
    previous_hash: str
    txs: tuple[TxObserved, ...]


@dataclass(frozen=True, slots=True)
class ChainLockObserved:
    """A ChainLock: the block and all below it can no longer be reorganised away.
    ``hashchainlock`` gives the hash, ``rawchainlock`` the height (from the CbTx),
    ``rawchainlocksig`` both. The shell reacts as to a new block: payments waiting
    for settlement are read back."""

    block_hash: str | None
    height: int | None


Notification: TypeAlias = (
    TxObserved | TxAnnounced | BlockObserved | BlockContents | ChainLockObserved
)


def split_message(frames: Sequence[bytes]) -> ZmqMessage:
    """Check the three frames of one multipart message."""
    if isinstance(frames, bytes | str) or len(frames) != 3:
        count = "not a list" if isinstance(frames, bytes | str) else f"{len(frames)} frames"
        raise ZmqMessageError(f"a dashd notification has 3 frames (topic, body, sequence): {count}")
    topic, body, sequence = frames
    if not all(isinstance(frame, bytes) for frame in frames):
        raise ZmqMessageError("a dashd notification's frames are bytes")
    if not 0 < len(topic) <= MAX_TOPIC_BYTES or not topic.isascii() or not topic.isalnum():
        raise ZmqMessageError(f"topic {topic[:MAX_TOPIC_BYTES]!r} is not a dashd topic name")
    if len(sequence) != SEQUENCE_BYTES:
        raise ZmqMessageError(
            f"{topic.decode()}: the sequence frame is {len(sequence)} bytes, not {SEQUENCE_BYTES}"
        )
    if len(body) > MAX_BODY_BYTES:
        raise ZmqMessageError(f"{topic.decode()}: a {len(body)}-byte body is over the limit")
    return ZmqMessage(topic.decode(), body, int.from_bytes(sequence, "little"))


def _hash(message: ZmqMessage) -> str:
    if len(message.body) != HASH_BYTES:
        raise ZmqMessageError(
            f"{message.topic}: the body is {len(message.body)} bytes, not a {HASH_BYTES}-byte hash"
        )
    return message.body.hex()


def _read_instant_lock(reader: Reader, txid: str, input_count: int) -> None:
    """The ``isdlock`` after a ``rawtxlocksig`` transaction; it must lock that tx."""
    reader.take(1, "isdlock version")
    inputs = reader.count("isdlock input count", 36)
    if inputs != input_count:
        raise TxParseError(f"the lock covers {inputs} inputs, the transaction has {input_count}")
    reader.take(36 * inputs, "isdlock inputs")
    locked = display_hex(reader.take(HASH_BYTES, "isdlock txid"))
    if locked != txid:
        raise TxParseError(f"the lock is for tx {locked}, not for {txid}")
    reader.take(HASH_BYTES, "isdlock cycle hash")
    reader.take(BLS_SIGNATURE_BYTES, "isdlock signature")


def _raw_tx(message: ZmqMessage, network: str, *, with_lock: bool) -> TxObserved:
    reader = Reader(message.body)
    tx = read_tx(reader, network)
    if with_lock:
        _read_instant_lock(reader, tx.txid, tx.input_count)
    if reader.remaining:
        raise TxParseError(f"{reader.remaining} trailing bytes after the transaction")
    return tx.observed(instant_locked=message.topic != RAWTX)


def _raw_block(message: ZmqMessage, network: str) -> BlockContents | ChainLockObserved:
    reader = Reader(message.body)
    block = read_block(reader, network)
    if message.topic == RAWCHAINLOCKSIG:
        height = reader.uint(4, "clsig height")
        block_hash = display_hex(reader.take(HASH_BYTES, "clsig block hash"))
        reader.take(BLS_SIGNATURE_BYTES, "clsig signature")
        if reader.remaining:
            raise TxParseError(f"{reader.remaining} trailing bytes after the clsig")
        if block.height is not None and block.height != height:
            raise TxParseError(f"the clsig is for height {height}, the block is {block.height}")
        return ChainLockObserved(block_hash=block_hash, height=height)
    if reader.remaining:
        raise TxParseError(f"{reader.remaining} trailing bytes after the block")
    if message.topic == RAWCHAINLOCK:
        return ChainLockObserved(block_hash=None, height=block.height)
    return BlockContents(
        height=block.height,
        previous_hash=block.previous_hash,
        txs=tuple(tx.observed(instant_locked=False, block_height=block.height) for tx in block.txs),
    )


def decode_notification(message: ZmqMessage, network: str) -> Notification:
    """The observation one notification carries; ZmqMessageError if it is malformed."""
    topic = message.topic
    try:
        if topic in (HASHTX, HASHTXLOCK):
            return TxAnnounced(txid=_hash(message), instant_locked=topic == HASHTXLOCK)
        if topic == HASHBLOCK:
            return BlockObserved(block_hash=_hash(message))
        if topic == HASHCHAINLOCK:
            return ChainLockObserved(block_hash=_hash(message), height=None)
        if topic in (RAWTX, RAWTXLOCK, RAWTXLOCKSIG):
            return _raw_tx(message, network, with_lock=topic == RAWTXLOCKSIG)
        if topic in (RAWBLOCK, RAWCHAINLOCK, RAWCHAINLOCKSIG):
            return _raw_block(message, network)
    except TxParseError as exc:
        raise ZmqMessageError(f"{topic} #{message.sequence}: {exc}") from None
    raise ZmqMessageError(f"topic {topic!r} is not one dashpay reads ({', '.join(sorted(TOPICS))})")


# --- sequence numbers -------------------------------------------------------------------

GAP = "gap"
RESTART = "restart"


@dataclass(frozen=True, slots=True)
class RescanNeeded:
    """Messages of ``topic`` may be missing: a ``gap`` (the counter jumped forward,
    ``missed`` messages were dropped) or a ``restart`` (it went back: dashd restarted
    and published who knows what while we were not looking)."""

    topic: str
    kind: str  # GAP | RESTART
    expected: int
    received: int
    missed: int | None  # known for a gap only


class SequenceTracker:
    """The next sequence number expected per topic.

    The first message of a topic sets the baseline (what came before it is the
    connect-time rescan's business). The counter is a uint32 that wraps, so distances
    are taken modulo 2**32: less than half the range ahead is a gap, anything else is
    a step back, i.e. a restart.
    """

    __slots__ = ("_expected",)

    def __init__(self) -> None:
        self._expected: dict[str, int] = {}

    def observe(self, topic: str, sequence: int) -> RescanNeeded | None:
        expected = self._expected.get(topic)
        self._expected[topic] = (sequence + 1) % _SEQUENCE_MODULUS
        if expected is None or sequence == expected:
            return None
        ahead = (sequence - expected) % _SEQUENCE_MODULUS
        if ahead < _SEQUENCE_MODULUS // 2:
            return RescanNeeded(topic, GAP, expected, sequence, missed=ahead)
        return RescanNeeded(topic, RESTART, expected, sequence, missed=None)

    def reset(self) -> None:
        """Forget every baseline: after a reconnect, which the shell rescans for anyway."""
        self._expected.clear()
