"""wire/dashd_rpc.py: request bodies, dashd's documented answers from
tests/fixtures/dashd/rpc-*.json (sources in its README), the address-index-off error of
old and new Dash Core, and refusal of malformed answers."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from dashpay.domain.observations import TxObserved
from dashpay.wire.dashd_rpc import (
    AddressDelta,
    AddressIndexDisabled,
    RpcError,
    RpcMalformed,
    decode_json,
    getaddressdeltas,
    getaddresstxids,
    getrawtransaction,
    parse_address_deltas,
    parse_address_mempool,
    parse_blockchaininfo,
    parse_scantxoutset,
    parse_txids,
    parse_verbose_tx,
    read_response,
    scantxoutset,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "dashd"
TXID = "88a3fe6bf2ab4425dbf57d75ce761efa2e45556ec36b4fd5b6af6c00f01ebd63"
PAID = {
    "yYoztKLNFLvbNYAPMUGoa5iHz5SBtNLEK8": 68285816,
    "ygU1vv8a2fhiM2gYUF1GjQAcjxgZUKY5MD": 237570000,
}


def fixture(name: str):
    return decode_json((FIXTURES / f"rpc-{name}.json").read_bytes())


def answer(result=None, error=None) -> bytes:
    return json.dumps({"result": result, "error": error, "id": 1}).encode()


# --- requests ---------------------------------------------------------------------------


def test_request_bodies_are_dash_cli_shaped():
    assert json.loads(getrawtransaction(3, TXID)) == {
        "jsonrpc": "1.0",
        "id": 3,
        "method": "getrawtransaction",
        "params": [TXID, True],
    }
    assert json.loads(getaddresstxids(1, ["yA"]))["params"] == [{"addresses": ["yA"]}]
    assert json.loads(getaddressdeltas(1, ["yA"], 5, 9))["params"] == [
        {"addresses": ["yA"], "start": 5, "end": 9}
    ]
    assert json.loads(scantxoutset(1, ["yA", "yB"]))["params"] == [
        "start",
        ["addr(yA)", "addr(yB)"],
    ]


@pytest.mark.parametrize("addresses", [[], "yA", ["y"] * 1001])
def test_address_calls_refuse_an_empty_or_huge_list(addresses):
    with pytest.raises(ValueError):
        getaddresstxids(1, addresses)


# --- getrawtransaction ------------------------------------------------------------------


def test_verbose_tx_gives_the_observation_and_lock_flags():
    tx = parse_verbose_tx(fixture("getrawtransaction-testnet-88a3fe6b"), "testnet")
    assert tx.observed == TxObserved(
        TXID,
        PAID,
        instant_locked=True,
        block_height=886992,
        confirmations=472266,
        source="rest",
    )
    assert (tx.instant_send, tx.chain_locked) == (False, True)


def test_verbose_special_tx_is_checked_against_its_hex():
    tx = parse_verbose_tx(fixture("getrawtransaction-testnet-cbtx-25632685"), "testnet")
    assert tx.observed.outputs == {
        "yeuGUfPMrbEqAS2Pw1wonYgEPbM4LAA9LK": 810000000,
        "yYmrsYP3XYMZr1cGtha3QzmuNB1C7CfyhV": 810000000,
    }


def test_mempool_tx_and_old_addresses_list():
    item = fixture("getrawtransaction-testnet-88a3fe6b")
    for key in ("blockhash", "height", "confirmations", "time", "blocktime", "hex"):
        del item[key]
    for out in item["vout"]:
        out["scriptPubKey"]["addresses"] = [out["scriptPubKey"].pop("address")]
    item["instantlock"] = item["instantlock_internal"] = True
    item["chainlock"] = False
    tx = parse_verbose_tx(item, "testnet")
    assert tx.observed.block_height is None and tx.observed.confirmations == 0
    assert tx.observed.outputs == PAID and tx.instant_send is True


def test_a_tx_in_a_block_that_left_the_main_chain_is_unconfirmed():
    item = fixture("getrawtransaction-testnet-88a3fe6b")
    item.update(confirmations=0, height=-1)
    tx = parse_verbose_tx(item, "testnet")
    assert (tx.observed.block_height, tx.observed.confirmations) == (None, 0)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda t: t.update(txid="zz"), "txid"),
        (lambda t: t.update(vout={}), "vout"),
        (lambda t: t["vout"][0].update(valueSat="68285816"), "valueSat"),
        (lambda t: t["vout"][0].update(valueSat=-1), "valueSat"),
        (lambda t: t["vout"][0].update(valueSat=2100000000000001), "valueSat"),
        (lambda t: t["vout"][0].update(valueSat=68285817), "hex does not match"),
        (lambda t: t["vout"][0]["scriptPubKey"].update(address="not base58 0OIl"), "address"),
        (lambda t: t["vout"][0].update(scriptPubKey="76a9"), "scriptPubKey"),
        (lambda t: t.update(hex="00"), "hex"),
        (lambda t: t.update(instantlock="yes"), "instantlock"),
        (lambda t: t.update(confirmations=-3), "confirmations"),
        (lambda t: t.update(height=True), "height"),
    ],
)
def test_malformed_verbose_tx_is_refused(change, reason):
    item = copy.deepcopy(fixture("getrawtransaction-testnet-88a3fe6b"))
    change(item)
    with pytest.raises(RpcMalformed, match=reason):
        parse_verbose_tx(item, "testnet")


# --- other calls ------------------------------------------------------------------------


def test_blockchaininfo():
    info = parse_blockchaininfo(fixture("getblockchaininfo-testnet"))
    assert (info.network, info.blocks, info.headers, info.initial_download) == (
        "testnet",
        1025413,
        1025413,
        False,
    )
    assert info.best_block_hash.startswith("000000a7f4db")
    with pytest.raises(RpcMalformed, match="chain"):
        parse_blockchaininfo({**fixture("getblockchaininfo-testnet"), "chain": "bitcoin"})


def test_address_index_answers():
    assert parse_txids(fixture("getaddresstxids") * 2) == fixture("getaddresstxids")
    (mempool,) = parse_address_mempool(fixture("getaddressmempool"))
    assert mempool == AddressDelta(
        "e53d871df8b26116fbc1b766172323f9c477375133eec8ea5c66f1867a61a533",
        "yVcYtcKd3nSi85JFtE8ZSDPimj3VMTJB8k",
        100000000000,
        None,
    )
    received, spent = parse_address_deltas(fixture("getaddressdeltas"))
    assert (received.duffs, received.height, spent.duffs) == (10000100, 6708, -10000100)


@pytest.mark.parametrize(
    "result",
    [None, {}, ["zz"], [{"txid": "00" * 32, "address": "yA", "satoshis": 1.5}]],
)
def test_malformed_address_answers_are_refused(result):
    with pytest.raises(RpcMalformed):
        parse_address_mempool(result)


def test_scantxoutset_gives_the_unspent_txids():
    scan = parse_scantxoutset(fixture("scantxoutset-testnet"))
    assert scan.height == 667140 and len(scan.unspents) == 2
    assert scan.unspents[0].txid.startswith("571028a9")
    with pytest.raises(RpcMalformed, match="success"):
        parse_scantxoutset({**fixture("scantxoutset-testnet"), "success": False})


# --- responses and errors ---------------------------------------------------------------


def test_result_is_returned_and_amounts_never_become_floats():
    result = read_response("getrawtransaction", 200, answer({"value": 1}))
    assert result == {"value": 1}
    assert str(decode_json(b'{"v": 0.1}')["v"]) == "0.1"


@pytest.mark.parametrize(
    ("status", "code", "message"),
    [
        (
            400,
            -32600,
            "Address index is disabled. You should run Dash Core with "
            "-addressindex (requires reindex)",
        ),
        (500, -5, "No information available for address"),
    ],
)
def test_address_index_off_is_its_own_error(status, code, message):
    body = answer(error={"code": code, "message": message})
    with pytest.raises(AddressIndexDisabled) as caught:
        read_response("getaddresstxids", status, body)
    assert caught.value.code == code


def test_other_errors_stay_plain_rpc_errors():
    body = answer(error={"code": -5, "message": "No such mempool or blockchain transaction"})
    with pytest.raises(RpcError) as caught:
        read_response("getrawtransaction", 500, body)
    assert not isinstance(caught.value, AddressIndexDisabled)
    assert caught.value.code == -5


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (401, b""),
        (200, b"<html>proxy</html>"),
        (200, b"[1]"),
        (200, b'{"result": 1}'),
        (500, answer(error={"code": "x", "message": 1})),
        (500, answer(result=1)),
        (200, b'{"result": NaN, "error": null}'),
        (200, b"\xff\xfe"),
    ],
)
def test_non_answers_are_malformed(status, body):
    with pytest.raises(RpcMalformed):
        read_response("getblockchaininfo", status, body)


def test_a_batch_answers_each_call_by_id_errors_included():
    from dashpay.wire.dashd_rpc import batch_body, getrawtransaction, read_batch

    body = batch_body([getrawtransaction(7, "aa" * 32), getrawtransaction(8, "bb" * 32)])
    assert [call["id"] for call in json.loads(body)] == [7, 8]
    tx = (FIXTURES / "rpc-getrawtransaction-testnet-88a3fe6b.json").read_text()
    missing = '{"code": -5, "message": "No such mempool or blockchain transaction."}'
    answers = f'[{{"result": null, "error": {missing}, "id": 8}}, {{"result": {tx}, "error": null, "id": 7}}]'
    results = read_batch("getrawtransaction", 200, answers.encode(), [7, 8])
    assert results[7]["txid"] == "88a3fe6bf2ab4425dbf57d75ce761efa2e45556ec36b4fd5b6af6c00f01ebd63"
    assert isinstance(results[8], RpcError) and results[8].code == -5


@pytest.mark.parametrize(
    "answers",
    [
        [{"result": 1, "error": None, "id": 7}],  # one call unanswered
        [{"result": 1, "error": None, "id": 7}, {"result": 1, "error": None, "id": 7}],
        [{"result": 1, "error": None, "id": 9}, {"result": 1, "error": None, "id": 8}],
        {"result": 1, "error": None, "id": 7},  # not an array
        [5, 6],
    ],
)
def test_a_batch_that_does_not_answer_every_call_once_is_malformed(answers):
    from dashpay.wire.dashd_rpc import read_batch

    with pytest.raises(RpcMalformed):
        read_batch("getrawtransaction", 200, json.dumps(answers).encode(), [7, 8])
