"""wire/zmq_dashd.py: dashd's ZMQ notifications built from the real transactions and
block of tests/fixtures/dashd/ (frame layout and bodies per Dash Core's
zmqpublishnotifier.cpp, see the module docstring), hostile frames, and the sequence
tracker's gap and restart reports."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dashpay.domain.observations import BlockObserved, TxObserved
from dashpay.wire.zmq_dashd import (
    GAP,
    RESTART,
    BlockContents,
    ChainLockObserved,
    RescanNeeded,
    SequenceTracker,
    TxAnnounced,
    ZmqMessage,
    ZmqMessageError,
    decode_notification,
    split_message,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "dashd"
CLASSIC = bytes.fromhex((FIXTURES / "tx-testnet-p2pkh-88a3fe6b.hex").read_text().strip())
P2SH = bytes.fromhex((FIXTURES / "tx-testnet-p2sh-48e6f8f0.hex").read_text().strip())
BLOCK = bytes.fromhex((FIXTURES / "block-testnet-917286.hex").read_text().strip())
TXID = "88a3fe6bf2ab4425dbf57d75ce761efa2e45556ec36b4fd5b6af6c00f01ebd63"
BLOCK_HASH = "00000379fb0a60210eb58e736775784b4e0491ae23b65f7916988f9d780a9f93"
PAID = {
    "yYoztKLNFLvbNYAPMUGoa5iHz5SBtNLEK8": 68285816,
    "ygU1vv8a2fhiM2gYUF1GjQAcjxgZUKY5MD": 237570000,
}
# The classical tx's one input: prevout txid (internal order) and index, as serialized.
OUTPOINT = CLASSIC[5:41]


def frames(topic: str, body: bytes, sequence: int = 7) -> list[bytes]:
    return [topic.encode(), body, sequence.to_bytes(4, "little")]


def decode(topic: str, body: bytes, sequence: int = 7):
    return decode_notification(split_message(frames(topic, body, sequence)), "testnet")


def isdlock(txid: str, outpoints: list[bytes]) -> bytes:
    """An isdlock laid out as docs/core/reference/p2p-network-instantsend-messages.md
    shows (version 1, inputs, txid, cycle hash, 96-byte signature)."""
    lock = b"\x01" + bytes([len(outpoints)]) + b"".join(outpoints)
    return lock + bytes.fromhex(txid)[::-1] + b"\x22" * 32 + b"\x33" * 96


def clsig(height: int, block_hash: str) -> bytes:
    return height.to_bytes(4, "little") + bytes.fromhex(block_hash)[::-1] + b"\x44" * 96


# --- frames -----------------------------------------------------------------------------


def test_split_reads_topic_body_and_little_endian_sequence():
    message = split_message([b"hashblock", b"\x00" * 32, b"\x01\x02\x00\x00"])
    assert message == ZmqMessage("hashblock", b"\x00" * 32, 0x0201)


@pytest.mark.parametrize(
    "bad",
    [
        [b"rawtx", b"x"],
        [b"rawtx", b"x", b"\x00" * 4, b"more"],
        b"rawtx",
        [b"rawtx", "text", b"\x00" * 4],
        [b"", b"x", b"\x00" * 4],
        [b"raw tx", b"x", b"\x00" * 4],
        [b"r" * 33, b"x", b"\x00" * 4],
        [b"rawtx", b"x", b"\x00" * 3],
        [b"rawtx", b"x", b"\x00" * 8],
    ],
)
def test_malformed_frames_are_refused(bad):
    with pytest.raises(ZmqMessageError):
        split_message(bad)


# --- bodies -----------------------------------------------------------------------------


def test_rawtx_is_an_unlocked_tx_with_its_outputs():
    assert decode("rawtx", CLASSIC) == TxObserved(TXID, PAID, instant_locked=False)


def test_rawtxlock_is_a_locked_tx():
    seen = decode("rawtxlock", P2SH)
    assert seen.instant_locked is True
    assert seen.outputs["8gQdvLw7pF7jd8mjGU3nRNESdWi9gkHRZy"] == 25000000


def test_rawtxlocksig_is_the_tx_followed_by_its_lock():
    seen = decode("rawtxlocksig", CLASSIC + isdlock(TXID, [OUTPOINT]))
    assert seen == TxObserved(TXID, PAID, instant_locked=True)


@pytest.mark.parametrize(
    ("lock", "reason"),
    [
        (isdlock("ab" * 32, [OUTPOINT]), "not for"),
        (isdlock(TXID, [OUTPOINT, OUTPOINT]), "covers 2 inputs"),
        (isdlock(TXID, [OUTPOINT])[:-1], "truncated"),
        (isdlock(TXID, [OUTPOINT]) + b"\x00", "trailing"),
        (b"", "truncated"),
    ],
)
def test_a_lock_that_does_not_fit_its_tx_is_refused(lock, reason):
    with pytest.raises(ZmqMessageError, match=reason):
        decode("rawtxlocksig", CLASSIC + lock)


def test_hash_topics_carry_the_hash_in_display_order():
    assert decode("hashtx", bytes.fromhex(TXID)) == TxAnnounced(TXID, instant_locked=False)
    assert decode("hashtxlock", bytes.fromhex(TXID)) == TxAnnounced(TXID, instant_locked=True)
    assert decode("hashblock", bytes.fromhex(BLOCK_HASH)) == BlockObserved(BLOCK_HASH)
    assert decode("hashchainlock", bytes.fromhex(BLOCK_HASH)) == ChainLockObserved(
        BLOCK_HASH, height=None
    )


@pytest.mark.parametrize("topic", ["hashtx", "hashtxlock", "hashblock", "hashchainlock"])
@pytest.mark.parametrize("size", [0, 31, 33, 64])
def test_a_hash_of_the_wrong_size_is_refused(topic, size):
    with pytest.raises(ZmqMessageError, match="32-byte hash"):
        decode(topic, b"\x00" * size)


def test_rawblock_gives_its_txs_confirmed_at_the_cbtx_height():
    contents = decode("rawblock", BLOCK)
    assert isinstance(contents, BlockContents)
    assert contents.height == 917286
    (coinbase,) = contents.txs
    assert coinbase.txid == "65d7fdfe47cde5907b706905fa3494a154e3614da2682bc78e82f8d5668cc9ca"
    assert coinbase.block_height == 917286 and coinbase.instant_locked is False


def test_rawchainlock_and_rawchainlocksig_give_the_locked_block():
    assert decode("rawchainlock", BLOCK) == ChainLockObserved(None, 917286)
    locked = decode("rawchainlocksig", BLOCK + clsig(917286, BLOCK_HASH))
    assert locked == ChainLockObserved(BLOCK_HASH, 917286)


@pytest.mark.parametrize(
    ("topic", "body", "reason"),
    [
        ("rawchainlocksig", BLOCK + clsig(917285, BLOCK_HASH), "height 917285"),
        ("rawchainlocksig", BLOCK + clsig(917286, BLOCK_HASH)[:-1], "truncated"),
        ("rawchainlocksig", BLOCK, "truncated"),
        ("rawblock", BLOCK + b"\x00", "trailing"),
        ("rawtx", CLASSIC + b"\x00", "trailing"),
        ("rawtx", CLASSIC[:-4], "truncated"),
        ("rawtx", b"", "truncated"),
        ("hashgovernancevote", b"\x00" * 32, "not one dashpay reads"),
    ],
)
def test_hostile_bodies_are_refused(topic, body, reason):
    with pytest.raises(ZmqMessageError, match=reason):
        decode(topic, body)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["rawtx", "rawtxlocksig", "rawblock", "rawchainlocksig", "hashtx"]),
    st.binary(max_size=400),
)
def test_random_bodies_decode_or_are_refused(topic, body):
    try:
        value = decode(topic, body)
    except ZmqMessageError as exc:
        assert topic in str(exc) or "32-byte" in str(exc)
        return
    assert isinstance(value, TxObserved | TxAnnounced | BlockContents | ChainLockObserved)


# --- sequence ---------------------------------------------------------------------------


def test_consecutive_sequences_need_no_rescan_and_topics_count_apart():
    tracker = SequenceTracker()
    assert [tracker.observe("rawtx", n) for n in (5, 6, 7)] == [None, None, None]
    assert tracker.observe("hashblock", 0) is None
    assert tracker.observe("hashblock", 1) is None
    assert tracker.observe("rawtx", 8) is None


def test_a_jump_forward_is_a_gap_with_the_missed_count():
    tracker = SequenceTracker()
    tracker.observe("rawtx", 10)
    assert tracker.observe("rawtx", 14) == RescanNeeded("rawtx", GAP, 11, 14, missed=3)
    assert tracker.observe("rawtx", 15) is None


def test_a_step_back_is_a_restart():
    tracker = SequenceTracker()
    tracker.observe("rawtx", 500)
    assert tracker.observe("rawtx", 0) == RescanNeeded("rawtx", RESTART, 501, 0, missed=None)
    assert tracker.observe("rawtx", 1) is None
    tracker.observe("hashblock", 3)
    assert tracker.observe("hashblock", 3).kind == RESTART  # the same number again


def test_the_counter_wraps_at_two_to_the_32():
    tracker = SequenceTracker()
    tracker.observe("rawtx", 2**32 - 1)
    assert tracker.observe("rawtx", 0) is None
    tracker.observe("hashtx", 2**32 - 2)
    assert tracker.observe("hashtx", 1) == RescanNeeded("hashtx", GAP, 2**32 - 1, 1, missed=2)


def test_reset_forgets_the_baselines():
    tracker = SequenceTracker()
    tracker.observe("rawtx", 10)
    tracker.reset()
    assert tracker.observe("rawtx", 99) is None
