"""wire/blockbook.py: Blockbook's websocket messages (tests/fixtures/blockbook/, shapes
from trezor/blockbook's Go types, values of a real testnet tx), subscription batches,
the history pager, and refusal of hostile messages."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from dashpay.domain.observations import SOURCE_REST, SOURCE_SOCKET, BlockObserved, TxObserved
from dashpay.wire.blockbook import (
    MAX_SUBSCRIBE_ADDRESSES,
    AccountPager,
    BlockbookMalformed,
    BlockbookRejected,
    Message,
    Requests,
    changed_subscriptions,
    parse_address_notification,
    parse_message,
    parse_new_block,
    parse_pong,
    parse_subscribed,
    parse_tx,
    parse_tx_specific,
    result,
    split_subscriptions,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
MESSAGES = json.loads((FIXTURES / "blockbook" / "ws-messages-testnet.json").read_text())
SPECIFIC = json.loads(
    (FIXTURES / "dashd" / "rpc-getrawtransaction-testnet-88a3fe6b.json").read_text()
)
TXID = "88a3fe6bf2ab4425dbf57d75ce761efa2e45556ec36b4fd5b6af6c00f01ebd63"
PAID = {
    "yYoztKLNFLvbNYAPMUGoa5iHz5SBtNLEK8": 68285816,
    "ygU1vv8a2fhiM2gYUF1GjQAcjxgZUKY5MD": 237570000,
}


def message(name: str) -> Message:
    return parse_message(json.dumps(MESSAGES[name]))


def a_tx(txid: str, height: int = 100, confirmations: int = 1) -> dict:
    item = copy.deepcopy(MESSAGES["getTransaction-confirmed"]["data"])
    item.update(txid=txid, blockHeight=height, confirmations=confirmations)
    return item


# --- requests ---------------------------------------------------------------------------


def test_requests_have_fresh_string_ids_and_the_documented_shape():
    requests = Requests()
    request_id, text = requests.subscribe_addresses(
        MESSAGES["subscribeAddresses-request"]["params"]["addresses"]
    )
    assert request_id == "1" and json.loads(text) == MESSAGES["subscribeAddresses-request"]
    assert json.loads(requests.subscribe_new_block()[1]) == {
        "id": "2",
        "method": "subscribeNewBlock",
        "params": {},
    }
    assert json.loads(requests.get_account_info("yA", page=3)[1])["params"] == {
        "descriptor": "yA",
        "details": "txs",
        "page": 3,
        "pageSize": 1000,
    }
    assert json.loads(requests.get_transaction_specific(TXID)[1])["params"] == {"txid": TXID}
    assert json.loads(requests.get_transaction(TXID)[1])["method"] == "getTransaction"
    assert requests.ping() == ("6", '{"id":"6","method":"ping","params":{}}')


def test_a_subscription_over_the_cap_is_refused_before_sending():
    with pytest.raises(ValueError):
        Requests().subscribe_addresses([f"y{i}" for i in range(MAX_SUBSCRIBE_ADDRESSES + 1)])


def test_watched_set_splits_into_subscriptions_of_at_most_1000():
    watched = [f"y{i}" for i in range(2500)] + ["y3"]
    batches = split_subscriptions(watched)
    assert [len(b) for b in batches] == [1000, 1000, 500]
    assert [a for b in batches for a in b] == watched[:2500]
    grown = split_subscriptions(watched + ["ynew"])
    assert changed_subscriptions(batches, grown) == [2]
    assert changed_subscriptions(batches, split_subscriptions(watched[1:])) == [0, 1, 2]
    assert split_subscriptions([]) == []


# --- answers and notifications ----------------------------------------------------------


def test_subscription_answers_and_ping():
    assert parse_subscribed(result(message("subscribeAddresses-answer"))) is True
    parse_pong(result(message("ping-answer")))
    with pytest.raises(BlockbookMalformed):
        parse_pong({"x": 1})


def test_error_answer_is_a_rejection_with_the_message():
    with pytest.raises(BlockbookRejected, match="addresses max 1000") as caught:
        result(message("error-answer"))
    assert caught.value.request_id == "6"


def test_mempool_notification_is_an_unconfirmed_push_event():
    address, tx = parse_address_notification(result(message("address-notification-mempool")))
    assert address == "yYoztKLNFLvbNYAPMUGoa5iHz5SBtNLEK8"
    assert tx == TxObserved(
        TXID,
        PAID,
        instant_locked=False,
        block_height=None,
        confirmations=0,
        source=SOURCE_SOCKET,
    )


def test_lookups_judge_confirmation_by_confirmations():
    mempool = parse_tx(result(message("getTransaction-mempool")))
    assert (mempool.block_height, mempool.confirmations, mempool.source) == (None, 0, SOURCE_REST)
    mined = parse_tx(result(message("getTransaction-confirmed")))
    assert (mined.block_height, mined.confirmations) == (886992, 472266)
    assert mined.outputs == PAID


def test_zero_value_and_op_return_outputs():
    item = a_tx(TXID)
    del item["vout"][0]["value"]  # Blockbook omits a zero amount
    item["vout"].append(MESSAGES["op-return-output"])
    tx = parse_tx(item)
    assert dict(tx.outputs) == {**PAID, "yYoztKLNFLvbNYAPMUGoa5iHz5SBtNLEK8": 0}


def test_new_block_notification():
    block = parse_new_block(result(message("new-block-notification")))
    assert block.height == 886992
    assert block.observation() == BlockObserved(
        "0000009f3480f5e2b6821af57ccbfeb064d9e18b6e9e669aad238f2b0059df1a"
    )


def test_transaction_specific_carries_the_locks():
    tx = parse_tx_specific(SPECIFIC, "testnet")
    assert tx.observed.instant_locked is True and tx.chain_locked is True
    assert tx.observed.outputs == PAID
    with pytest.raises(BlockbookMalformed, match="getTransactionSpecific"):
        parse_tx_specific({**SPECIFIC, "instantlock": "1"}, "testnet")


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[]",
        '{"id": "1"}',
        '{"id": 1, "data": {}}',
        '{"id": "", "data": {}}',
        '{"id": "' + "9" * 65 + '", "data": {}}',
        '{"id": "1", "data": NaN}',
        "[" * 100_000,
    ],
)
def test_malformed_messages_are_refused(text):
    with pytest.raises(BlockbookMalformed):
        parse_message(text)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda t: t["vout"][0].update(value=68285816), "string of duffs"),
        (lambda t: t["vout"][0].update(value="-1"), "string of duffs"),
        (lambda t: t["vout"][0].update(value="0.5"), "string of duffs"),
        (lambda t: t["vout"][0].update(value="007"), "string of duffs"),
        (lambda t: t["vout"][0].update(value="2100000000000001"), "string of duffs"),
        (lambda t: t["vout"][0].update(value="9" * 400), "string of duffs"),
        (lambda t: t["vout"][1].update(value="2099999999999999"), "add up"),
        (lambda t: t["vout"][0].update(addresses="yA"), "not a list"),
        (lambda t: t["vout"][0].update(addresses=["bad address!"]), "not an address"),
        (lambda t: t.update(txid="12"), "txid"),
        (lambda t: t.update(vout=None), "vout"),
        (lambda t: t.update(confirmations=-1), "confirmations"),
        (lambda t: t.update(confirmations=True), "confirmations"),
        (lambda t: t.update(blockHeight="886992"), "blockHeight"),
        (lambda t: t.update(blockHeight=-1), "confirmations at height"),
    ],
)
def test_hostile_tx_fields_are_refused(change, reason):
    item = a_tx(TXID)
    change(item)
    with pytest.raises(BlockbookMalformed, match=reason):
        parse_tx(item)


@pytest.mark.parametrize(
    "data",
    [None, [], {"address": "yYoztKLNFLvbNYAPMUGoa5iHz5SBtNLEK8"}, {"address": 1, "tx": {}}],
)
def test_hostile_notifications_are_refused(data):
    with pytest.raises(BlockbookMalformed):
        parse_address_notification(data)
    with pytest.raises(BlockbookMalformed):
        parse_new_block(data)


# --- the pager --------------------------------------------------------------------------

TXIDS = [f"{n:064x}" for n in range(1, 6)]


def page(number: int, total: int, txids: list[str]) -> dict:
    return {
        "page": number,
        "totalPages": total,
        "itemsOnPage": 2,
        "txs": 5,
        "address": "yA",
        "transactions": [a_tx(t) for t in txids],
    }


def read_all(pager: AccountPager, answers: dict[int, dict]) -> list[str]:
    requests, got = Requests(), []
    while (request := pager.request(requests)) is not None:
        asked = json.loads(request[1])["params"]["page"]
        got += [tx.txid for tx in pager.feed(answers[min(asked, max(answers))])]
    return got


def test_pager_reads_every_page_once():
    answers = {1: page(1, 3, TXIDS[:2]), 2: page(2, 3, TXIDS[2:4]), 3: page(3, 3, TXIDS[4:])}
    pager = AccountPager("yA", page_size=2)
    assert read_all(pager, answers) == TXIDS and set(pager.seen) == set(TXIDS)


def test_a_page_past_the_end_repeating_the_last_page_stops_the_pager():
    last = page(2, 5, TXIDS[2:4])  # a totalPages that lies: the server repeats page 2
    pager = AccountPager("yA", page_size=2)
    assert read_all(pager, {1: page(1, 5, TXIDS[:2]), 2: last}) == TXIDS[:4]
    assert pager.next_page() is None


def test_txs_pushed_down_by_new_mempool_txs_are_counted_once():
    shifted = page(2, 3, [TXIDS[1], TXIDS[2]])  # a new tx arrived: TXIDS[1] moved down
    answers = {1: page(1, 3, TXIDS[:2]), 2: shifted, 3: page(3, 3, TXIDS[3:])}
    assert read_all(AccountPager("yA", page_size=2), answers) == TXIDS


def test_an_address_without_history_is_one_request():
    empty = {"page": 1, "itemsOnPage": 1000, "address": "yA", "txs": 0}
    assert read_all(AccountPager("yA"), {1: empty}) == []


@pytest.mark.parametrize(
    "data",
    [None, {"page": "1"}, {"page": 1, "totalPages": -2}, {"page": 1, "transactions": {}}],
)
def test_hostile_pages_are_refused(data):
    with pytest.raises(BlockbookMalformed):
        AccountPager("yA").feed(data)
