"""Parsing of real Insight REST payloads (captured fixtures) into exact values."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from dashpay.domain.observations import SOURCE_REST
from dashpay.wire.insight_rest import (
    InsightMalformed,
    decode_json,
    parse_block,
    parse_chainlock,
    parse_history_page,
    parse_status,
    parse_tx,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "insight"
MEMPOOL_TXID = "63b68becb0e514b32317f4b29a5cf0627d4087e54ac17f686fcb1d9a27680f73"
CONFIRMED_TXID = "b85334bf2df35c6dd5b294efe92ffc793a78edff75a2ca666fc296ffb04bbba0"
BLOCK_HASH = "0000000000000005dffc9095302167894319765fbd4df76ce2f322aa4e3c2f63"


def load(name: str):
    return decode_json((FIXTURES / name).read_bytes())


@pytest.fixture
def history():
    return load("addrs-txs-response-testnet.json")


def test_confirmed_history_item_gives_exact_duffs_per_address(history):
    tx = parse_tx(history["items"][1])
    assert tx.txid == CONFIRMED_TXID
    assert dict(tx.outputs) == {
        "yTCZ7iv1U6p6MXp278FhMFZmKDbmgx89oX": 21247964,
        "yWSJE2AeQspnykJ3d7cDsoj1sABQmZEHet": 13677426,
    }
    assert tx.block_height == 533974
    assert tx.confirmations == 230
    assert tx.instant_locked is True  # REST txlock: InstantSend or ChainLock
    assert tx.source == SOURCE_REST


def test_mempool_history_item_has_no_height_and_zero_confirmations(history):
    tx = parse_tx(history["items"][0])
    assert tx.txid == MEMPOOL_TXID
    assert tx.block_height is None  # blockheight -1
    assert tx.confirmations == 0
    assert dict(tx.outputs) == {
        "ydFWt96q1AJzG7rQQPYygGpnRG3djmG8nJ": 220000,
        "yfYhcwQkixQFgYV8trXmXTajQynSNbRBFE": 53320000,
        "yUN2ZHVcy18UFmSAcrYWZgyz1NyhzY9BD7": 289829,
    }


def test_mainnet_mempool_tx_with_txlock_is_instant_locked_and_unmined():
    tx = parse_tx(load("tx-mainnet-mempool-txlock.json"))
    assert dict(tx.outputs) == {"XmCyQ6qARLWXap74QubFMunngoiiA1QgCL": 99809}
    assert tx.instant_locked is True
    assert tx.block_height is None
    assert tx.confirmations == 0


def test_coinbase_without_value_in_parses_with_its_height():
    raw = load("tx-mainnet-coinbase-confirmed.json")
    assert "valueIn" not in raw and raw["isCoinBase"] is True
    tx = parse_tx(raw)
    assert dict(tx.outputs) == {
        "XxrK9XH5L3mGCyirz26RpGpCQcJB3v39Lk": 138545595,
        "XdaWS6gScUjxbFdA8WSFZbeBK2mpGDr6uc": 110189765,
    }
    assert tx.block_height == 1699028
    assert tx.confirmations == 2832


def test_outputs_without_exactly_one_address_are_left_out(history):
    item = copy.deepcopy(history["items"][1])
    op_return = {"value": "0.00000000", "n": 2, "scriptPubKey": {"hex": "6a04deadbeef"}}
    multisig = {
        "value": "5.00000000",
        "n": 3,
        "scriptPubKey": {
            "addresses": [
                "yTCZ7iv1U6p6MXp278FhMFZmKDbmgx89oX",
                "yWSJE2AeQspnykJ3d7cDsoj1sABQmZEHet",
            ]
        },
    }
    no_script = {"value": "1.00000000", "n": 4}
    item["vout"] += [op_return, multisig, no_script]
    tx = parse_tx(item)
    assert dict(tx.outputs) == {
        "yTCZ7iv1U6p6MXp278FhMFZmKDbmgx89oX": 21247964,
        "yWSJE2AeQspnykJ3d7cDsoj1sABQmZEHet": 13677426,
    }


def test_two_outputs_to_the_same_address_are_summed(history):
    item = copy.deepcopy(history["items"][1])
    extra = copy.deepcopy(item["vout"][0])
    extra["value"] = "0.00000001"
    extra["n"] = 2
    item["vout"].append(extra)
    tx = parse_tx(item)
    assert tx.outputs["yTCZ7iv1U6p6MXp278FhMFZmKDbmgx89oX"] == 21247965


@pytest.mark.parametrize(
    ("json_value", "duffs"),
    [
        ("0.29", 29_000_000),  # 0.29 * 1e8 == 28999999.999999996 in binary float
        ("0.00099809", 99_809),
        ("20999999.99999999", 2_099_999_999_999_999),
        ('"0.1"', 10_000_000),
        ("1", 100_000_000),
    ],
)
def test_json_number_values_convert_to_exact_duffs(history, json_value, duffs):
    item = copy.deepcopy(history["items"][1])
    item["vout"] = [item["vout"][0]]
    text = json.dumps(item).replace('"0.21247964"', json_value)
    tx = parse_tx(decode_json(text.encode()))
    assert tx.outputs["yTCZ7iv1U6p6MXp278FhMFZmKDbmgx89oX"] == duffs


def test_value_sat_agreeing_with_value_is_accepted_and_disagreeing_is_malformed(history):
    item = copy.deepcopy(history["items"][1])
    item["vout"][0]["valueSat"] = 21247964
    assert parse_tx(item).outputs["yTCZ7iv1U6p6MXp278FhMFZmKDbmgx89oX"] == 21247964
    item["vout"][0]["valueSat"] = 21247963
    with pytest.raises(InsightMalformed) as caught:
        parse_tx(item)
    assert caught.value.txid == CONFIRMED_TXID
    assert caught.value.field == "vout[0].valueSat"


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda i: i["vout"][0].__setitem__("value", "abc"), "vout[0].value"),
        (lambda i: i["vout"][0].__setitem__("value", "-0.1"), "vout[0].value"),
        (lambda i: i["vout"][0].__setitem__("value", "0.000000001"), "vout[0].value"),
        (lambda i: i["vout"][0].__setitem__("value", True), "vout[0].value"),
        (lambda i: i["vout"][0].__setitem__("value", "99999999"), "vout[0].value"),
        (
            lambda i: i["vout"][1]["scriptPubKey"].__setitem__("addresses", [7]),
            "vout[1].scriptPubKey.addresses",
        ),
        (
            lambda i: i["vout"][1]["scriptPubKey"].__setitem__("addresses", "yWS"),
            "vout[1].scriptPubKey.addresses",
        ),
        (lambda i: i.__setitem__("vout", {}), "vout"),
        (lambda i: i.__setitem__("blockheight", "533974"), "blockheight"),
        (lambda i: i.__setitem__("confirmations", -3), "confirmations"),
        (lambda i: i.__setitem__("txlock", "true"), "txlock"),
    ],
)
def test_malformed_fields_are_named_in_the_error(history, mutate, field):
    item = copy.deepcopy(history["items"][1])
    mutate(item)
    with pytest.raises(InsightMalformed) as caught:
        parse_tx(item)
    assert caught.value.field == field
    assert caught.value.txid == CONFIRMED_TXID
    assert CONFIRMED_TXID in str(caught.value)


@pytest.mark.parametrize("item", [None, [], "tx", {"txid": "zz"}, {"vout": []}])
def test_item_without_a_readable_txid_is_malformed_without_txid(item):
    with pytest.raises(InsightMalformed) as caught:
        parse_tx(item)
    assert caught.value.txid is None


def test_missing_txlock_and_blockheight_mean_unlocked_and_unknown_height(history):
    item = copy.deepcopy(history["items"][1])
    del item["txlock"], item["blockheight"], item["confirmations"]
    tx = parse_tx(item)
    assert (tx.instant_locked, tx.block_height, tx.confirmations) == (False, None, None)


def test_uppercase_txid_is_normalised_to_lowercase(history):
    item = copy.deepcopy(history["items"][1])
    item["txid"] = CONFIRMED_TXID.upper()
    assert parse_tx(item).txid == CONFIRMED_TXID


def test_history_envelope_gives_total_and_raw_items(history):
    page = parse_history_page(history)
    assert page.total_items == 2
    assert [item["txid"] for item in page.items] == [MEMPOOL_TXID, CONFIRMED_TXID]


@pytest.mark.parametrize(
    "payload",
    [
        [],
        {"items": []},
        {"totalItems": "2", "items": []},
        {"totalItems": 2, "items": {}},
        {"totalItems": True, "items": []},
    ],
)
def test_history_envelope_of_the_wrong_shape_is_malformed(payload):
    with pytest.raises(InsightMalformed):
        parse_history_page(payload)


def test_json_decoder_refuses_nan_and_non_utf8():
    with pytest.raises(ValueError):
        decode_json(b'{"value": NaN}')
    with pytest.raises(ValueError):
        decode_json(b'{"value": "\xff"}')


def test_status_maps_livenet_to_mainnet():
    info = {"version": 180002, "blocks": 1699028, "network": "livenet", "relayfee": 0.00001}
    status = parse_status({"info": info})
    assert (status.network, status.blocks, status.version) == ("mainnet", 1699028, 180002)
    assert status.raw["relayfee"] == 0.00001
    assert parse_status({"info": {**info, "network": "testnet"}}).network == "testnet"


@pytest.mark.parametrize("network", ["devnet", None, ["livenet"]])
def test_status_with_an_unknown_network_is_malformed(network):
    with pytest.raises(InsightMalformed) as caught:
        parse_status({"info": {"version": 1, "blocks": 1, "network": network}})
    assert caught.value.field == "network"


def test_block_parses_and_genesis_has_no_previous_hash():
    payload = {
        "hash": BLOCK_HASH,
        "height": 1699028,
        "previousblockhash": "00000000000000" + "1" * 50,
        "confirmations": 3,
        "isMainChain": True,
        "time": 1656988783,
    }
    block = parse_block(payload)
    assert block.hash == BLOCK_HASH and block.height == 1699028 and block.is_main_chain
    assert block.previous_hash == "00000000000000" + "1" * 50
    del payload["previousblockhash"]
    assert parse_block(payload).previous_hash is None
    with pytest.raises(InsightMalformed):
        parse_block({**payload, "isMainChain": "yes"})


def test_chainlock_parses_and_absent_chainlock_is_none():
    lock = parse_chainlock(
        {
            "bestchainlock": {
                "blockhash": BLOCK_HASH,
                "height": 1699028,
                "signature": "ab",
                "known_block": True,
            }
        }
    )
    assert (lock.block_hash, lock.height) == (BLOCK_HASH, 1699028)
    assert parse_chainlock({"info": {"blocks": 1}}) is None  # old server answered getInfo
    with pytest.raises(InsightMalformed):
        parse_chainlock({"bestchainlock": {"blockhash": "x", "height": 1}})
