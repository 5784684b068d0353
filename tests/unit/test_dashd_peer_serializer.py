"""The test peer's raw-transaction writer (``tests/dashd_peer.py``) against the parser
the daemon uses (``wire/dash_tx.py``, ``wire/zmq_dashd.py``): what the peer publishes is
real Dash serialization, so the integration tests test the real decoding."""

from __future__ import annotations

import pytest

from dashpay.wire import zmq_dashd as zmqwire
from dashpay.wire.dash_tx import TxParseError, parse_tx
from tests.dashd_peer import address_script, instant_lock, serialize_tx, txid_of

P2PKH = "yYoztKLNFLvbNYAPMUGoa5iHz5SBtNLEK8"  # from the fixtures (README)
P2SH = "8gQdvLw7pF7jd8mjGU3nRNESdWi9gkHRZy"


def test_a_written_tx_parses_back_with_its_txid_and_outputs():
    raw = serialize_tx([(P2PKH, 68_285_816), (P2SH, 25_000_000), (P2PKH, 1)])
    tx = parse_tx(raw, "testnet")
    assert tx.txid == txid_of(raw) and tx.size == len(raw)
    assert [(o.address, o.value) for o in tx.outputs] == [
        (P2PKH, 68_285_816), (P2SH, 25_000_000), (P2PKH, 1),
    ]  # fmt: skip
    assert tx.paid() == {P2PKH: 68_285_817, P2SH: 25_000_000}
    assert tx.tx_type == 0 and tx.extra_payload == b""


def test_a_special_tx_payload_with_a_three_byte_length_is_skipped_exactly():
    payload = bytes(range(256)) + b"\x01" * 44  # 300 bytes: compact size fd 2c 01
    raw = serialize_tx([(P2PKH, 5)], version=3, tx_type=1, extra_payload=payload)
    tx = parse_tx(raw, "testnet")
    assert (tx.version, tx.tx_type, tx.extra_payload) == (3, 1, payload)
    assert tx.txid == txid_of(raw)
    with pytest.raises(TxParseError):
        parse_tx(raw[:-1], "testnet")  # one payload byte short


def test_scripts_are_the_p2pkh_and_p2sh_templates_and_a_bad_checksum_is_refused():
    assert address_script(P2PKH)[:3] == b"\x76\xa9\x14" and address_script(P2SH)[:2] == b"\xa9\x14"
    with pytest.raises(ValueError):
        address_script(P2PKH[:-1] + ("9" if P2PKH[-1] != "9" else "8"))


def test_rawtxlocksig_with_the_peer_s_isdlock_decodes_as_a_locked_tx():
    raw = serialize_tx([(P2PKH, 1000)])
    txid = txid_of(raw)
    body = raw + instant_lock(raw, txid)
    observed = zmqwire.decode_notification(zmqwire.ZmqMessage("rawtxlocksig", body, 0), "testnet")
    assert (
        observed.txid == txid
        and observed.instant_locked
        and dict(observed.outputs) == {P2PKH: 1000}
    )
