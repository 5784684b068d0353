"""The sandbox chain renders what a real Insight renders and keeps a real chain's rules.

Shapes are compared with the captured insight-api payloads in tests/fixtures/insight/
(key order included: clients written against the real server see the same documents).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dashpay.domain.money import MAX_DUFFS
from dashpay.sandbox.chain import (
    MAX_OUTPUTS,
    SandboxChain,
    SandboxError,
    dash_string,
    js_dash_number,
)
from dashpay.wire.engineio import encode_event
from dashpay.wire.insight_rest import parse_block, parse_chainlock, parse_history_page, parse_tx

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "insight"
# Addresses of the testnet fixture (insight-api's test data).
ADDR_A = "yTCZ7iv1U6p6MXp278FhMFZmKDbmgx89oX"
ADDR_B = "yWSJE2AeQspnykJ3d7cDsoj1sABQmZEHet"
ADDR_C = "yfYhcwQkixQFgYV8trXmXTajQynSNbRBFE"
MAINNET_ADDR = "Xpj8oTSYNf6Dspjh2Eb2x3X71WRRjzjLEF"
P2SH_TESTNET = "8eRUv6F6pmr7sCiCXf3UoopN4GdSSt6SgR"  # version 0x13, hash160 bytes 0..19


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def chain(clock) -> SandboxChain:
    return SandboxChain(clock=clock, seed=42)


@pytest.fixture
def fixture_history() -> dict:
    return json.loads((FIXTURES / "addrs-txs-response-testnet.json").read_text())


def history(chain: SandboxChain, addrs: list[str], start: int = 0, end: int = 50) -> list[str]:
    return [item["txid"] for item in chain.address_history_json(addrs, start, end)["items"]]


# -- amounts -----------------------------------------------------------------------------


def test_event_payload_is_byte_for_byte_the_real_two_output_tx_event(chain):
    tx = chain.pay([(ADDR_A, 21247964), (ADDR_B, 13677426)])
    frame = encode_event("tx", chain.tx_event_payload(tx, txlock=False))
    # The verified frame of insight-protocol.md §2, with the sandbox's txid.
    assert frame == (
        '42["tx",{"txid":"' + tx.txid + '","valueOut":0.3492539,"vout":'
        '[{"yTCZ7iv1U6p6MXp278FhMFZmKDbmgx89oX":21247964},'
        '{"yWSJE2AeQspnykJ3d7cDsoj1sABQmZEHet":13677426}],"isRBF":false,"txlock":false}]'
    )
    locked = chain.tx_event_payload(tx, txlock=True)
    assert locked["txlock"] is True


def test_rest_outputs_match_the_real_rendering_of_the_same_payment(chain, fixture_history):
    real = fixture_history["items"][1]  # pays ADDR_A 21247964 and ADDR_B 13677426
    tx = chain.pay([(ADDR_A, 21247964), (ADDR_B, 13677426)])
    chain.mine()
    ours = chain.tx_json(tx.txid)
    assert ours["vout"][0]["value"] == "0.21247964"
    assert ours["vout"][0]["scriptPubKey"] == real["vout"][0]["scriptPubKey"]
    assert ours["vout"][1]["scriptPubKey"] == real["vout"][1]["scriptPubKey"]
    assert ours["valueOut"] == real["valueOut"] == 0.3492539
    assert isinstance(ours["vin"][0]["valueSat"], int)
    assert ours["vin"][0]["valueSat"] == 21247964 + 13677426 + tx.fee
    # Floats are display fields computed from the integers, exactly as JavaScript does.
    assert ours["fees"] == tx.fee / 1e8
    assert ours["valueIn"] == (21247964 + 13677426 + tx.fee) / 1e8


def test_tx_documents_have_the_real_key_order(chain, fixture_history):
    real_mempool, real_confirmed = fixture_history["items"]
    mined = chain.pay([(ADDR_A, 1000)])
    chain.mine()
    pending = chain.pay([(ADDR_B, 2000)])
    ours_mempool = chain.tx_json(pending.txid)
    ours_confirmed = chain.tx_json(mined.txid)
    assert list(ours_mempool) == list(real_mempool)
    assert list(ours_confirmed) == list(real_confirmed)
    assert list(ours_mempool["vin"][0]) == list(real_mempool["vin"][0])
    assert list(ours_mempool["vout"][0]) == list(real_mempool["vout"][0])


def test_whole_dash_amounts_are_json_integers_like_javascript_numbers():
    assert js_dash_number(0) == 0 and isinstance(js_dash_number(0), int)
    assert js_dash_number(100_000_000) == 1 and isinstance(js_dash_number(100_000_000), int)
    assert js_dash_number(1) == 1e-08
    assert js_dash_number(53_320_000) == 0.5332
    assert json.dumps(js_dash_number(2 * 100_000_000)) == "2"


def test_value_strings_have_eight_decimals_exactly_even_at_21_million_dash():
    assert dash_string(0) == "0.00000000"
    assert dash_string(1) == "0.00000001"
    assert dash_string(99_809) == "0.00099809"
    assert dash_string(MAX_DUFFS) == "21000000.00000000"
    assert dash_string(MAX_DUFFS - 1) == "20999999.99999999"


def test_same_address_paid_twice_appears_twice_in_the_event(chain):
    tx = chain.pay([(ADDR_A, 5), (ADDR_A, 7)])
    assert chain.tx_event_payload(tx, txlock=False)["vout"] == [{ADDR_A: 5}, {ADDR_A: 7}]
    assert history(chain, [ADDR_A]) == [tx.txid]  # but the tx is listed once


# -- OP_RETURN ---------------------------------------------------------------------------


def test_op_return_output_is_skipped_in_event_vout_but_listed_in_rest_vout(chain):
    tx = chain.pay([(ADDR_A, 1000), (ADDR_B, 2000)], extra_null_data=True)
    event = chain.tx_event_payload(tx, txlock=False)
    assert event["vout"] == [{ADDR_A: 1000}, {ADDR_B: 2000}]
    rest = chain.tx_json(tx.txid)
    assert [out["n"] for out in rest["vout"]] == [0, 1, 2]
    null_data = rest["vout"][2]
    assert null_data["value"] == "0.00000000"
    assert null_data["scriptPubKey"]["hex"].startswith("6a")
    assert "addresses" not in null_data["scriptPubKey"]
    assert "type" not in null_data["scriptPubKey"]
    # The daemon's own parser reads it: the OP_RETURN output adds nothing.
    assert dict(parse_tx(rest).outputs) == {ADDR_A: 1000, ADDR_B: 2000}


# -- history paging ----------------------------------------------------------------------


def test_history_lists_mempool_newest_first_then_confirmed_highest_first(chain):
    old1 = chain.pay([(ADDR_A, 1)])
    old2 = chain.pay([(ADDR_A, 2)])
    chain.mine()
    mid = chain.pay([(ADDR_A, 3)])
    chain.mine()
    new1 = chain.pay([(ADDR_A, 4)])
    new2 = chain.pay([(ADDR_A, 5)])
    assert history(chain, [ADDR_A]) == [new2.txid, new1.txid, mid.txid, old2.txid, old1.txid]


def test_history_window_pages_and_clamps_to_like_insight(chain):
    txids = [chain.pay([(ADDR_A, n + 1)]).txid for n in range(5)]
    newest_first = txids[::-1]
    page = chain.address_history_json([ADDR_A], 1, 3)
    assert page["totalItems"] == 5
    assert (page["from"], page["to"]) == (1, 3)
    assert [i["txid"] for i in page["items"]] == newest_first[1:3]
    tail = chain.address_history_json([ADDR_A], 3, 50)
    assert tail["to"] == 5  # clamped to totalItems
    assert [i["txid"] for i in tail["items"]] == newest_first[3:]
    assert parse_history_page(tail).total_items == 5


def test_history_window_wider_than_50_is_refused_with_dashcore_nodes_503_message(chain):
    with pytest.raises(SandboxError) as caught:
        chain.address_history_json([ADDR_A], 0, 51)
    assert str(caught.value) == (
        '"from" (0) and "to" (51) range should be less than or equal to 50'
    )
    assert caught.value.insight_code is None  # a 503, not a 400
    assert chain.address_history_json([ADDR_A], 10, 60)["totalItems"] == 0  # exactly 50: fine


def test_history_from_not_below_to_is_refused_with_invalid_state(chain):
    with pytest.raises(SandboxError) as caught:
        chain.address_history_json([ADDR_A], 5, 5)
    assert str(caught.value) == 'Invalid state: "from" (5) is expected to be less than "to" (5)'
    assert caught.value.insight_code is None


def test_history_of_several_addresses_dedupes_and_orders_a_block_by_txid(chain):
    both = chain.pay([(ADDR_A, 1), (ADDR_B, 2)])
    only_b = chain.pay([(ADDR_B, 3)])
    only_a = chain.pay([(ADDR_A, 4)])
    chain.mine()
    one_block = {both.txid, only_b.txid, only_a.txid}
    assert history(chain, [ADDR_A, ADDR_B]) == sorted(one_block, reverse=True)
    # One address keeps dashd's address-index order: position in the block, reversed.
    assert history(chain, [ADDR_A]) == [only_a.txid, both.txid]


def test_history_rejects_missing_and_invalid_addresses_like_insight(chain):
    with pytest.raises(SandboxError) as missing:
        chain.address_history_json([""], 0, 10)
    assert (str(missing.value), missing.value.insight_code) == ("Must include address", 1)
    with pytest.raises(SandboxError) as invalid:
        chain.address_history_json([ADDR_A, "yNotAnAddress"], 0, 10)
    assert str(invalid.value).startswith("Invalid address: ")
    assert invalid.value.insight_code == 1
    # dashcore-lib accepts a mainnet address; dashd then refuses it (-5).
    with pytest.raises(SandboxError) as other_network:
        chain.address_history_json([MAINNET_ADDR], 0, 10)
    assert (str(other_network.value), other_network.value.insight_code) == ("Invalid address", -5)


def test_history_honours_no_asm_no_script_sig_no_spent(chain):
    chain.pay([(ADDR_A, 1)])
    item = chain.address_history_json(
        [ADDR_A], 0, 10, no_asm=True, no_script_sig=True, no_spent=True
    )["items"][0]
    assert "scriptSig" not in item["vin"][0]
    assert "asm" not in item["vout"][0]["scriptPubKey"]
    assert "spentTxId" not in item["vout"][0]
    assert item["vout"][0]["scriptPubKey"]["addresses"] == [ADDR_A]


# -- mining, locks, ChainLocks -----------------------------------------------------------


def test_mine_moves_the_mempool_into_a_block_and_confirmations_grow(chain, clock):
    tx = chain.pay([(ADDR_A, 1000)])
    assert chain.tx_json(tx.txid)["blockheight"] == -1
    assert "blockhash" not in chain.tx_json(tx.txid)
    clock.now += 150
    (block_hash,) = chain.mine()
    assert chain.mempool_txids() == []
    doc = chain.tx_json(tx.txid)
    assert (doc["blockhash"], doc["blockheight"], doc["confirmations"]) == (block_hash, 1, 1)
    assert doc["time"] == doc["blocktime"] == int(clock.now)
    block = chain.block_json(block_hash)
    assert block["tx"][1:] == [tx.txid]  # after the coinbase
    assert parse_block(block).previous_hash == chain.block_hash_at(0)
    chain.mine(3)
    assert chain.tx_json(tx.txid)["confirmations"] == 4
    assert chain.block_json(block_hash)["nextblockhash"] == chain.block_hash_at(2)
    assert chain.height == 4
    assert parse_tx(chain.tx_json(tx.txid)).block_height == 1


def test_only_the_first_mined_block_takes_the_mempool(chain):
    tx = chain.pay([(ADDR_A, 1000)])
    hashes = chain.mine(2)
    assert chain.block_json(hashes[0])["tx"][1:] == [tx.txid]
    assert len(chain.block_json(hashes[1])["tx"]) == 1  # only its coinbase


def test_mempool_tx_time_is_the_servers_current_time_on_each_read(chain, clock):
    tx = chain.pay([(ADDR_A, 1000)])
    first = chain.tx_json(tx.txid)["time"]
    clock.now += 30
    assert chain.tx_json(tx.txid)["time"] == first + 30
    assert "blocktime" not in chain.tx_json(tx.txid)


def test_rest_txlock_is_instantsend_or_chainlock(chain):
    unlocked = chain.pay([(ADDR_A, 1000)])
    locked = chain.pay([(ADDR_B, 1000)])
    chain.lock(locked.txid)
    assert chain.tx_json(unlocked.txid)["txlock"] is False
    assert chain.tx_json(locked.txid)["txlock"] is True
    chain.mine()
    assert chain.tx_json(unlocked.txid)["txlock"] is True  # ChainLocked block


def test_no_chainlock_before_the_first_block_then_the_tip_is_chainlocked(chain):
    with pytest.raises(SandboxError) as caught:
        chain.status_json("getBestChainLock")
    assert "Unable to find any chainlock" in str(caught.value)
    assert caught.value.insight_code == -32603
    hashes = chain.mine(2)
    lock = parse_chainlock(chain.status_json("getBestChainLock"))
    assert (lock.block_hash, lock.height) == (hashes[-1], 2)
    assert chain.best_chainlock == (hashes[-1], 2)


def test_lock_is_idempotent_and_refused_for_mined_or_unknown_txs(chain):
    tx = chain.pay([(ADDR_A, 1000)])
    chain.lock(tx.txid)
    chain.lock(tx.txid.upper())  # same tx, any case
    assert chain.is_locked(tx.txid)
    chain.mine()
    with pytest.raises(SandboxError, match="already in block 1"):
        chain.lock(tx.txid)
    with pytest.raises(SandboxError, match="no transaction"):
        chain.lock("ab" * 32)


# -- drop --------------------------------------------------------------------------------


def test_drop_removes_a_mempool_tx_from_rest_and_history(chain):
    keep = chain.pay([(ADDR_A, 1)])
    gone = chain.pay([(ADDR_A, 2)])
    chain.drop(gone.txid)
    assert chain.tx_json(gone.txid) is None
    assert history(chain, [ADDR_A]) == [keep.txid]
    assert chain.addr_json(ADDR_A)["unconfirmedBalanceSat"] == 1
    chain.mine()
    assert chain.block_json(chain.tip_hash)["tx"][1:] == [keep.txid]


def test_dropping_a_mined_tx_is_an_error_that_says_why(chain):
    tx = chain.pay([(ADDR_A, 1)])
    chain.mine(2)
    with pytest.raises(SandboxError, match=r"already in block 1 \(2 confirmations\)"):
        chain.drop(tx.txid)
    assert chain.tx_json(tx.txid) is not None


def test_dropping_a_locked_tx_is_refused_and_says_how_to_test_a_dropped_payment(chain):
    tx = chain.pay([(ADDR_A, 1)])
    chain.lock(tx.txid)
    with pytest.raises(SandboxError, match="--no-lock"):
        chain.drop(tx.txid)


def test_an_address_whose_only_tx_was_dropped_can_be_paid_again(chain):
    gone = chain.pay([(ADDR_A, 1)])
    chain.drop(gone.txid)
    assert history(chain, [ADDR_A]) == []
    again = chain.pay([(ADDR_A, 2)])
    assert history(chain, [ADDR_A]) == [again.txid]
    assert chain.addr_json(ADDR_A)["unconfirmedBalanceSat"] == 2
    chain.mine()
    assert chain.addr_json(ADDR_A)["balanceSat"] == 2


def test_dropping_twice_or_an_unknown_or_malformed_txid_is_an_error(chain):
    tx = chain.pay([(ADDR_A, 1)])
    chain.drop(tx.txid)
    with pytest.raises(SandboxError, match="was dropped"):
        chain.drop(tx.txid)
    with pytest.raises(SandboxError, match="no transaction"):
        chain.drop("cd" * 32)
    with pytest.raises(SandboxError, match="not 64 hex digits"):
        chain.drop("not-a-txid")
    with pytest.raises(SandboxError, match="must be a string"):
        chain.drop(12345)  # type: ignore[arg-type]


# -- pay validation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("outputs", "message"),
    [
        ([], "at least one"),
        ("yTCZ", "list of"),
        ([(ADDR_A,)], "pair"),
        ([(ADDR_A, 0)], "not positive"),
        ([(ADDR_A, -5)], "not positive"),
        ([(ADDR_A, 1.5)], "whole number of duffs"),
        ([(ADDR_A, True)], "whole number of duffs"),
        ([(ADDR_A, "100")], "whole number of duffs"),
        ([(ADDR_A, MAX_DUFFS + 1)], "more than 21,000,000 DASH"),
        ([(ADDR_A, MAX_DUFFS), (ADDR_B, 1)], "add up to"),
        ([(MAINNET_ADDR, 1)], "mainnet"),
        ([("yNotAnAddress", 1)], "output 0"),
        ([(ADDR_A, 1), (None, 1)], "output 1: the address must be text"),
        ([(ADDR_A, 1)] * (MAX_OUTPUTS + 1), "split it"),
    ],
)
def test_pay_refuses_unusable_outputs_with_an_actionable_message(chain, outputs, message):
    with pytest.raises(SandboxError, match=message):
        chain.pay(outputs)
    assert chain.mempool_txids() == []


def test_pay_accepts_p2sh_and_the_largest_amount(chain):
    tx = chain.pay([(P2SH_TESTNET, MAX_DUFFS)])
    script = chain.tx_json(tx.txid)["vout"][0]["scriptPubKey"]
    assert script["type"] == "scripthash"
    assert script["hex"].startswith("a914") and script["hex"].endswith("87")
    assert chain.tx_json(tx.txid)["vout"][0]["value"] == "21000000.00000000"


# -- other documents ---------------------------------------------------------------------


def test_tx_json_answers_dashd_errors_for_malformed_txids_and_none_for_unknown(chain):
    with pytest.raises(SandboxError) as short:
        chain.tx_json("abc")
    assert str(short.value) == "parameter 1 must be of length 64 (not 3, for 'abc')"
    assert short.value.insight_code == -8
    with pytest.raises(SandboxError, match="hexadecimal"):
        chain.tx_json("z" * 64)
    assert chain.tx_json("0" * 64) is None


# Key order of insight-api's /addr/:addr and /addrs/:addrs/utxo answers (captured from the
# real code; insight-protocol.md §3).
REAL_SUMMARY_KEYS = [
    "addrStr", "balance", "balanceSat", "totalReceived", "totalReceivedSat", "totalSent",
    "totalSentSat", "unconfirmedBalance", "unconfirmedBalanceSat", "unconfirmedTxApperances",
    "unconfirmedAppearances", "txApperances", "txAppearances", "transactions",
]  # fmt: skip
REAL_MEMPOOL_UTXO_KEYS = [
    "address", "txid", "vout", "scriptPubKey", "amount", "satoshis", "confirmations", "ts",
]  # fmt: skip
REAL_CONFIRMED_UTXO_KEYS = [
    "address", "txid", "vout", "scriptPubKey", "amount", "satoshis", "height", "confirmations",
]  # fmt: skip


def test_addr_summary_and_utxos_have_the_real_shape(chain, clock):
    confirmed = chain.pay([(ADDR_C, 21247964)])
    chain.mine()
    pending = chain.pay([(ADDR_C, 53320000)])
    summary = chain.addr_json(ADDR_C)
    assert list(summary) == REAL_SUMMARY_KEYS
    assert summary["balanceSat"] == 21247964 and summary["balance"] == 0.21247964
    assert summary["unconfirmedBalanceSat"] == 53320000 and summary["unconfirmedBalance"] == 0.5332
    assert summary["txAppearances"] == summary["unconfirmedAppearances"] == 1
    assert summary["transactions"] == [pending.txid, confirmed.txid]
    assert "transactions" not in chain.addr_json(ADDR_C, no_tx_list=True)
    utxos = chain.utxo_json([ADDR_C, ADDR_A])
    assert [u["txid"] for u in utxos] == [pending.txid, confirmed.txid]
    assert list(utxos[0]) == REAL_MEMPOOL_UTXO_KEYS
    assert list(utxos[1]) == REAL_CONFIRMED_UTXO_KEYS
    assert utxos[0]["confirmations"] == 0 and utxos[0]["ts"] == int(clock.now)
    assert utxos[1]["height"] == 1 and utxos[1]["confirmations"] == 1
    assert "height" not in chain.utxo_json([ADDR_C], with_height=False)[1]


def test_status_answers_getinfo_for_unknown_queries_and_reports_testnet(chain):
    info = chain.status_json("whatever")["info"]
    assert info["network"] == "testnet"
    assert info["blocks"] == 0
    assert chain.status_json(None) == chain.status_json("getInfo")
    assert chain.status_json("getBestBlockHash") == {"bestblockhash": chain.tip_hash}
    last = chain.status_json("getLastBlockHash")
    assert last == {"syncTipHash": chain.tip_hash, "lastblockhash": chain.tip_hash}


def test_the_same_seed_gives_the_same_chain(clock):
    first = SandboxChain(clock=clock, seed=9)
    second = SandboxChain(clock=clock, seed=9)
    assert first.tip_hash == second.tip_hash
    assert first.pay([(ADDR_A, 1)]).txid == second.pay([(ADDR_A, 1)]).txid
    assert first.mine() == second.mine()
    assert SandboxChain(clock=clock, seed=10).tip_hash != first.block_hash_at(0)


# -- snapshot and restore ----------------------------------------------------------------


def busy_chain(clock) -> SandboxChain:
    """A chain with something of everything: mined, locked, mempool, dropped, OP_RETURN."""
    chain = SandboxChain(clock=clock, seed=7)
    mined = chain.pay([(ADDR_A, 150_000_000), (ADDR_B, 1)], extra_null_data=True)
    clock.now += 60
    chain.mine(2)
    clock.now += 60
    chain.lock(chain.pay([(ADDR_A, 5)]).txid)
    chain.drop(chain.pay([(ADDR_C, 6)]).txid)
    chain.pay([(P2SH_TESTNET, 7), (ADDR_B, 8)])
    assert chain.confirmations(mined.txid) == 2
    return chain


def rendered(chain: SandboxChain) -> dict:
    """What a client can read of a chain."""
    addrs = [ADDR_A, ADDR_B, ADDR_C, P2SH_TESTNET]
    history = chain.address_history_json(addrs, 0, 50)
    txids = [item["txid"] for item in history["items"]]
    return {
        "history": history,
        "blocks": [chain.block_json(chain.block_hash_at(h)) for h in range(chain.height + 1)],
        "txs": [chain.tx_json(t) for t in txids + list(chain.block_json(chain.tip_hash)["tx"])],
        "addr": [chain.addr_json(a) for a in addrs],
        "utxo": chain.utxo_json(addrs),
        "status": [chain.status_json(q) for q in ("getInfo", "getBestChainLock")],
        "mempool": chain.mempool_txids(),
        "payments": chain.payment_count,
    }


def test_a_restored_chain_reads_the_same_and_continues_as_the_saved_one_would(clock):
    saved = busy_chain(clock)
    snapshot = json.loads(json.dumps(saved.snapshot()))  # as it comes back from the file
    restored = SandboxChain.restore(snapshot, clock=clock)
    assert rendered(restored) == rendered(saved)
    assert restored.payment_count == 3
    # The random generator is kept too: the same actions make the same txs and blocks.
    for chain in (saved, restored):
        chain.drop(chain.mempool_txids()[-1])
        chain.pay([(ADDR_C, 9)])
        chain.mine()
    assert rendered(restored) == rendered(saved)
    with pytest.raises(SandboxError, match="was dropped"):
        restored.lock(sorted(snapshot["dropped"])[0])


def test_a_new_chain_round_trips_through_a_snapshot(chain, clock):
    restored = SandboxChain.restore(chain.snapshot(), clock=clock)
    assert restored.height == 0 and restored.best_chainlock is None
    assert restored.tip_hash == chain.tip_hash and restored.payment_count == 0


def _damage(snapshot: dict, how: str) -> dict:
    if how == "network":
        snapshot["network"] = "mainnet"
    elif how == "mempool_unknown":
        snapshot["mempool"].append("ab" * 32)
    elif how == "tx_nowhere":
        snapshot["mempool"].pop()
    elif how == "block_unknown_tx":
        snapshot["blocks"][1][3].append("cd" * 32)
    elif how == "block_without_coinbase":
        snapshot["blocks"][1][3].pop(0)
    elif how == "tx_twice":
        snapshot["txs"].append(snapshot["txs"][-1])
    elif how == "bad_amount":
        snapshot["txs"][-1][2][0][1] = -1
    elif how == "bad_address":
        snapshot["txs"][-1][2][0][0] = MAINNET_ADDR
    elif how == "chainlock_above_tip":
        snapshot["chainlock"] = 99
    elif how == "locked_unknown":
        snapshot["locked"].append("ef" * 32)
    elif how == "missing_key":
        del snapshot["blocks"]
    elif how == "wrong_type":
        snapshot["seq"] = "12"
    return snapshot


@pytest.mark.parametrize(
    "how",
    ["network", "mempool_unknown", "tx_nowhere", "block_unknown_tx", "block_without_coinbase",
     "tx_twice", "bad_amount", "bad_address", "chainlock_above_tip", "locked_unknown",
     "missing_key", "wrong_type"],
)  # fmt: skip
def test_restore_refuses_a_snapshot_that_is_not_one_consistent_chain(clock, how):
    snapshot = _damage(json.loads(json.dumps(busy_chain(clock).snapshot())), how)
    with pytest.raises((ValueError, TypeError, KeyError)):
        SandboxChain.restore(snapshot, clock=clock)
