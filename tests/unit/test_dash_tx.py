"""wire/dash_tx.py: real Dash transactions (classical, P2SH, CbTx and ProRegTx special
transactions) and a real block, from tests/fixtures/dashd/ (sources in its README), and
refusal of hostile bytes with TxParseError only."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dashpay.domain.money import MAX_DUFFS
from dashpay.domain.observations import SOURCE_SOCKET, TxObserved
from dashpay.wire.dash_tx import (
    MAX_EXTRA_PAYLOAD_BYTES,
    Reader,
    TxParseError,
    parse_block,
    parse_tx,
    parse_tx_hex,
    read_tx,
    script_address,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "dashd"


def raw(name: str) -> bytes:
    return bytes.fromhex((FIXTURES / name).read_text().strip())


CLASSIC = raw("tx-testnet-p2pkh-88a3fe6b.hex")
CBTX = raw("tx-testnet-cbtx-25632685.hex")
P2SH = raw("tx-testnet-p2sh-48e6f8f0.hex")
MAINNET = raw("tx-mainnet-p2pkh-f92e66ed.hex")
MAINNET_CBTX = raw("tx-mainnet-cbtx-88dfd40f.hex")
PROREGTX = raw("tx-proregtx-electrumx.hex")
BLOCK = raw("block-testnet-917286.hex")
ALL_TXS = [CLASSIC, CBTX, P2SH, MAINNET, MAINNET_CBTX, PROREGTX]


# --- real transactions ------------------------------------------------------------------


def test_classical_testnet_tx_has_the_documented_txid_and_outputs():
    tx = parse_tx(CLASSIC, "testnet")
    assert tx.txid == "88a3fe6bf2ab4425dbf57d75ce761efa2e45556ec36b4fd5b6af6c00f01ebd63"
    assert (tx.version, tx.tx_type, tx.input_count, tx.locktime) == (2, 0, 1, 886991)
    assert tx.size == 225 and tx.extra_payload == b"" and not tx.is_coinbase
    assert tx.paid() == {
        "yYoztKLNFLvbNYAPMUGoa5iHz5SBtNLEK8": 68285816,
        "ygU1vv8a2fhiM2gYUF1GjQAcjxgZUKY5MD": 237570000,
    }


def test_p2sh_output_becomes_a_testnet_8_address():
    tx = parse_tx(P2SH, "testnet")
    assert tx.txid == "48e6f8f0108549bf932e4d6833fe707d7edafe490788c2ebde688635a995538e"
    assert tx.input_count == 6
    assert [(o.value, o.address) for o in tx.outputs] == [
        (1020321, "yXWMLEPLuwUcpYxd6Ra5mbi2H3JRE1BQbN"),
        (25000000, "8gQdvLw7pF7jd8mjGU3nRNESdWi9gkHRZy"),
    ]


def test_cbtx_special_tx_skips_its_payload_and_hashes_it_into_the_txid():
    tx = parse_tx(CBTX, "testnet")
    assert tx.txid == "25632685ed0d7286901a80961c924c1ddd952e764754dbd8b40d0956413c8b56"
    assert (tx.version, tx.tx_type, tx.is_coinbase) == (3, 5, True)
    assert len(tx.extra_payload) == 70 and tx.coinbase_height() == 86190
    assert tx.paid() == {
        "yeuGUfPMrbEqAS2Pw1wonYgEPbM4LAA9LK": 810000000,
        "yYmrsYP3XYMZr1cGtha3QzmuNB1C7CfyhV": 810000000,
    }


def test_mainnet_txs_use_the_X_version_byte():
    tx = parse_tx(MAINNET, "mainnet")
    assert tx.txid == "f92e66edc9c8da41de71073ef08d62c56f8752a3f4e29ced6c515e0b1c074a38"
    assert tx.paid() == {"XmCyQ6qARLWXap74QubFMunngoiiA1QgCL": 99809}
    coinbase = parse_tx(MAINNET_CBTX, "mainnet")
    assert coinbase.txid == "88dfd40f461526b9e201f767ab0a2b27c9a570161be5b93654e52c8b87740aa4"
    assert coinbase.coinbase_height() == 1699028
    assert coinbase.paid() == {
        "XxrK9XH5L3mGCyirz26RpGpCQcJB3v39Lk": 138545595,
        "XdaWS6gScUjxbFdA8WSFZbeBK2mpGDr6uc": 110189765,
    }


def test_proregtx_payload_with_a_three_byte_length_is_skipped_exactly():
    tx = parse_tx(PROREGTX, "testnet")
    assert (tx.version, tx.tx_type, tx.input_count) == (3, 1, 3)
    assert len(tx.extra_payload) == 274 and tx.coinbase_height() is None
    assert [(o.value, o.address) for o in tx.outputs] == [
        (1000391, "ydzXer4PgAzA4ftMZxDmJnZrniUAs44YCW")
    ]


def test_the_network_picks_the_version_byte_not_the_bytes():
    main = parse_tx(CLASSIC, "mainnet").paid()
    assert sorted(a[0] for a in main) == ["X", "X"]
    assert parse_tx(P2SH, "mainnet").outputs[1].address[0] == "7"


def test_hex_form_and_observation():
    tx = parse_tx_hex(CLASSIC.hex().upper(), "testnet")
    seen = tx.observed(instant_locked=True, block_height=886992, confirmations=3)
    assert seen == TxObserved(
        tx.txid, tx.paid(), True, block_height=886992, confirmations=3, source=SOURCE_SOCKET
    )


def test_a_real_block_gives_its_transactions_and_height():
    block = parse_block(BLOCK, "testnet")
    assert block.previous_hash == "000000220c69399e8cc3de9182735f15ab0902c4a5d0182993fe641cfac7d8fd"
    assert block.height == 917286 and block.size == 382
    (coinbase,) = block.txs
    assert coinbase.txid == "65d7fdfe47cde5907b706905fa3494a154e3614da2682bc78e82f8d5668cc9ca"
    assert coinbase.paid() == {
        "yeRZBWYfeNE4yVUHV4ZLs83Ppn9aMRH57A": 74346627,
        "yPQpcZ1EdtQXWHzNjZuvVCKXuESW5wZ5x1": 223039881,
    }


def test_reader_continues_after_a_tx_for_concatenated_bodies():
    reader = Reader(CLASSIC + b"\x01\x02")
    assert read_tx(reader, "testnet").size == len(CLASSIC)
    assert reader.remaining == 2


# --- scripts ----------------------------------------------------------------------------

HASH = bytes(range(20))


@pytest.mark.parametrize(
    "script",
    [
        b"\x6a\x04abcd",  # OP_RETURN
        b"\x21" + b"\x02" * 33 + b"\xac",  # P2PK
        b"\x51\x21" + b"\x02" * 33 + b"\x21" + b"\x03" * 33 + b"\x52\xae",  # bare 1-of-2
        b"",
        b"\x76\xa9\x14" + HASH + b"\x88",  # P2PKH missing OP_CHECKSIG
        b"\x76\xa9\x14" + HASH + b"\x88\xac\x00",  # P2PKH with a trailing byte
        b"\xa9\x14" + HASH + b"\x88",  # P2SH with the wrong last opcode
    ],
)
def test_other_scripts_pay_no_address(script):
    assert script_address(script, "mainnet") is None


def test_p2pkh_and_p2sh_scripts_pay_their_hash():
    assert script_address(b"\x76\xa9\x14" + HASH + b"\x88\xac", "testnet")[0] == "y"
    assert script_address(b"\xa9\x14" + HASH + b"\x87", "mainnet")[0] == "7"


# --- hostile bytes ----------------------------------------------------------------------


def output_tx(value: int, outputs: int = 1) -> bytes:
    """A minimal v2 tx with ``outputs`` P2PKH outputs of ``value`` duffs each."""
    body = b"\x02\x00\x00\x00" + b"\x01" + b"\x11" * 36 + b"\x00" + b"\xff" * 4
    body += bytes([outputs])
    body += (value.to_bytes(8, "little") + b"\x19\x76\xa9\x14" + HASH + b"\x88\xac") * outputs
    return body + b"\x00" * 4


def test_minimal_built_tx_parses():
    assert parse_tx(output_tx(5), "mainnet").outputs[0].value == 5


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "truncated"),
        (CLASSIC[:-1], "truncated"),
        (CLASSIC[:60], "truncated"),
        (CLASSIC + b"\x00", "trailing"),
        (CBTX[:-1], "truncated"),
        (CBTX[:-71] + b"\x47" + CBTX[-70:], "truncated"),  # payload length says 71
        (CLASSIC[:4] + b"\x00" + CLASSIC[5:], "no inputs"),
        (CLASSIC[:4] + b"\xfe\xff\xff\xff\xff" + CLASSIC[5:], "cannot fit"),
        (CLASSIC[:4] + b"\xfd\x01\x00" + CLASSIC[5:], "canonical"),
        (output_tx(MAX_DUFFS + 1), "over 21,000,000"),
        (output_tx(2**64 - 1), "negative"),
        (output_tx(MAX_DUFFS // 2 + 1, outputs=2), "add up"),
        (output_tx(1)[:46] + b"\x00" + b"\x00" * 4, "no outputs"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_hostile_bytes_are_refused_with_the_field_named(data, reason):
    with pytest.raises(TxParseError, match=reason):
        parse_tx(data, "testnet")


def test_oversized_payload_is_refused_before_reading_it():
    head = CBTX[:-71]  # everything up to the payload length
    length = MAX_EXTRA_PAYLOAD_BYTES + 1
    data = head + b"\xfd" + length.to_bytes(2, "little") + b"\x00" * length
    with pytest.raises(TxParseError, match="over the 10000 limit"):
        parse_tx(data, "testnet")


@pytest.mark.parametrize("text", ["zz", "abc", 123, None, b"00", "00" * 2_000_001])
def test_bad_hex_is_a_parse_error(text):
    with pytest.raises(TxParseError):
        parse_tx_hex(text, "testnet")


def test_a_block_must_start_with_a_coinbase_and_end_exactly():
    with pytest.raises(TxParseError, match="coinbase"):
        parse_block(BLOCK[:80] + b"\x01" + CLASSIC, "testnet")
    with pytest.raises(TxParseError, match="trailing"):
        parse_block(BLOCK + b"\x00", "testnet")
    with pytest.raises(TxParseError, match="no transactions"):
        parse_block(BLOCK[:80] + b"\x00", "testnet")
    with pytest.raises(TxParseError, match="cannot fit"):
        parse_block(BLOCK[:80] + b"\xfe\x00\x00\x00\x10", "testnet")


def parsed_or_refused(data: bytes, network: str) -> None:
    """Either a transaction that used every byte, or TxParseError with a message."""
    try:
        tx = parse_tx(data, network)
    except TxParseError as exc:
        assert str(exc)
        return
    assert tx.size == len(data) and len(tx.txid) == 64


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(ALL_TXS),
    st.integers(min_value=0, max_value=2000),
    st.binary(min_size=1, max_size=9),
)
def test_any_corruption_of_a_real_tx_is_a_parse_error_or_a_tx(tx, position, patch):
    position %= len(tx)
    parsed_or_refused(tx[:position] + patch + tx[position + len(patch) :], "testnet")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_crash(data):
    parsed_or_refused(data, "mainnet")
    with pytest.raises(TxParseError):  # no 300 random bytes hold a block with a coinbase
        parse_block(data, "mainnet")
