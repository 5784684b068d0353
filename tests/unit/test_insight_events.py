"""Insight socket payloads (``tx``/``txlock``/``block``) into exact values, from the
frames of a real socket.io 2.4.1 session, and refusal of every malformed shape."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dashpay.domain.money import MAX_DUFFS
from dashpay.domain.observations import (
    SOURCE_SOCKET,
    BlockObserved,
    SocketConnected,
    SocketDisconnected,
    TxObserved,
)
from dashpay.wire.engineio import MAX_FRAME_CHARS, EventFrame, MalformedFrame, decode_frame
from dashpay.wire.insight import (
    MAX_OUTPUTS_PER_TX,
    EventError,
    parse_block_payload,
    parse_tx_payload,
    tx_frame_pays_none,
    tx_payload_outputs,
)
from dashpay.wire.insight_rest import decode_json, parse_tx

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "insight"
SESSION = json.loads((FIXTURES / "ws-eio3-session-mainnet.json").read_text())
DECODED = SESSION["decoded"]
FRAMES = {
    json.loads(f["frame"][2:])[0]: f["frame"] for f in SESSION["frames"] if f["frame"][:3] == "42["
}
TXID = "0f90cf5e03e8b8f8c4468f60fc8328cfcd5617fc2163f485fabfd227c692bf93"
TESTNET_TXID = "b85334bf2df35c6dd5b294efe92ffc793a78edff75a2ca666fc296ffb04bbba0"
BLOCK = "0000000000000005dffc9095302167894319765fbd4df76ce2f322aa4e3c2f63"
ADDRESS = "Xpj8oTSYNf6Dspjh2Eb2x3X71WRRjzjLEF"
OTHER = "XxFKyXX1ibFAn4s4VLVZodgBeciLWhu8o9"


def payload(*vout: dict, txid: str = TXID) -> dict:
    return {"txid": txid, "valueOut": 0.1, "vout": list(vout), "isRBF": False, "txlock": False}


# --- real frames ------------------------------------------------------------------------


def test_captured_tx_frame_gives_exact_duffs_and_is_not_locked():
    frame = decode_frame(FRAMES["tx"])
    tx = parse_tx_payload(frame.args[0], instant_locked=frame.name == "txlock")
    assert tx == TxObserved(TXID, {ADDRESS: 99608}, instant_locked=False, source=SOURCE_SOCKET)
    assert tx.block_height is None and tx.confirmations is None


def test_captured_txlock_frame_is_instant_locked():
    frame = decode_frame(FRAMES["txlock"])
    tx = parse_tx_payload(frame.args[0], instant_locked=frame.name == "txlock")
    assert tx.instant_locked is True
    assert dict(tx.outputs) == {ADDRESS: 99608}


def test_captured_block_frame_is_the_bare_hash():
    frame = decode_frame(FRAMES["block"])
    assert parse_block_payload(frame.args[0]) == BlockObserved(BLOCK)


def test_two_output_testnet_tx_keeps_each_exact_amount():
    tx = parse_tx_payload(DECODED["tx (testnet, two outputs)"], instant_locked=False)
    assert dict(tx.outputs) == {
        "yTCZ7iv1U6p6MXp278FhMFZmKDbmgx89oX": 21247964,
        "yWSJE2AeQspnykJ3d7cDsoj1sABQmZEHet": 13677426,
    }
    assert tx.txid == TESTNET_TXID


def test_socket_and_rest_views_of_the_same_tx_agree_on_outputs():
    rest = decode_json((FIXTURES / "addrs-txs-response-testnet.json").read_bytes())
    (item,) = [i for i in rest["items"] if i["txid"] == TESTNET_TXID]
    from_rest = parse_tx(item)
    from_socket = parse_tx_payload(DECODED["tx (testnet, two outputs)"], instant_locked=False)
    assert dict(from_socket.outputs) == dict(from_rest.outputs)


def test_float_value_out_is_never_read():
    tx = parse_tx_payload(payload({ADDRESS: 5}) | {"valueOut": "garbage"}, instant_locked=False)
    assert dict(tx.outputs) == {ADDRESS: 5}


# --- normalisation and summing ----------------------------------------------------------


def test_outputs_to_the_same_address_are_summed():
    tx = parse_tx_payload(
        payload({ADDRESS: 100}, {OTHER: 7}, {ADDRESS: 250}, {ADDRESS: 1}), instant_locked=False
    )
    assert dict(tx.outputs) == {ADDRESS: 351, OTHER: 7}


def test_txid_and_block_hash_are_lowercased():
    tx = parse_tx_payload(payload({ADDRESS: 1}, txid=TXID.upper()), instant_locked=True)
    assert tx.txid == TXID
    assert parse_block_payload(BLOCK.upper()).block_hash == BLOCK


def test_zero_value_output_keeps_its_address_like_rest_does():
    tx = parse_tx_payload(payload({ADDRESS: 0}, {OTHER: 3}), instant_locked=False)
    assert dict(tx.outputs) == {ADDRESS: 0, OTHER: 3}


def test_tx_without_address_outputs_has_no_outputs():
    assert dict(parse_tx_payload(payload(), instant_locked=False).outputs) == {}


def test_outputs_are_read_only():
    tx = parse_tx_payload(payload({ADDRESS: 1}), instant_locked=False)
    with pytest.raises(TypeError):
        tx.outputs[ADDRESS] = 2  # type: ignore[index]


def test_maximum_money_in_one_output_is_accepted():
    tx = parse_tx_payload(payload({ADDRESS: MAX_DUFFS}), instant_locked=False)
    assert tx.outputs[ADDRESS] == MAX_DUFFS


def test_parse_does_not_modify_the_payload():
    original = payload({ADDRESS: 1}, {ADDRESS: 2})
    kept = copy.deepcopy(original)
    parse_tx_payload(original, instant_locked=False)
    assert original == kept


# --- refusals ---------------------------------------------------------------------------

BAD_TX = {
    "payload not an object": (["x"], "not an object"),
    "payload a string": ("tx", "not an object"),
    "txid missing": ({"vout": []}, "txid None is not 64 hex"),
    "txid short": (payload(txid="ab" * 31), "is not 64 hex"),
    "txid not hex": (payload(txid="zz" * 32), "is not 64 hex"),
    "txid not a string": (payload() | {"txid": 12}, "is not 64 hex"),
    "vout missing": ({"txid": TXID}, "vout is None, not a list"),
    "vout an object": (payload() | {"vout": {ADDRESS: 1}}, "not a list"),
    "entry not an object": (payload([ADDRESS, 1]), "vout[0]"),
    "entry empty": (payload({}), "vout[0]"),
    "entry two keys": (payload({ADDRESS: 1, OTHER: 2}), "single"),
    "address empty": (payload({"": 1}), "empty address"),
    "address not a string": (payload({5: 1}), "empty address"),
    "address overlong": (payload({"X" * 37: 1}), "longer than 36"),
    "address not base58": (payload({"X0OIl" + "a" * 29: 1}), "not a base58 address"),
    "amount float": (payload({ADDRESS: 99608.0}), "not an integer of duffs"),
    "amount bool": (payload({ADDRESS: True}), "not an integer of duffs"),
    "amount string": (payload({ADDRESS: "99608"}), "not an integer of duffs"),
    "amount null": (payload({ADDRESS: None}), "not an integer of duffs"),
    "amount negative": (payload({ADDRESS: -1}), "negative"),
    "amount absurd": (payload({ADDRESS: MAX_DUFFS + 1}), "over 21,000,000 DASH"),
    "outputs sum absurd": (
        payload({ADDRESS: MAX_DUFFS}, {OTHER: 1}),
        "add up to more than 21,000,000 DASH",
    ),
    "second entry bad": (payload({ADDRESS: 1}, {OTHER: 1.5}), "vout[1]"),
}


@pytest.mark.parametrize(("bad", "message"), BAD_TX.values(), ids=BAD_TX.keys())
def test_malformed_tx_payload_is_refused_with_a_specific_message(bad, message):
    with pytest.raises(EventError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_tx_payload(bad, instant_locked=False)


def test_error_message_names_the_tx():
    with pytest.raises(EventError, match=TXID):
        parse_tx_payload(payload({ADDRESS: -5}), instant_locked=False)


def test_more_outputs_than_any_dash_tx_can_have_is_refused():
    vout = [{ADDRESS: 1}] * (MAX_OUTPUTS_PER_TX + 1)
    with pytest.raises(EventError, match="no Dash tx has more than"):
        parse_tx_payload(payload(*vout), instant_locked=False)


def test_hostile_excerpt_in_error_message_is_short():
    with pytest.raises(EventError) as info:
        parse_tx_payload(payload() | {"txid": "x" * 100_000}, instant_locked=False)
    assert len(str(info.value)) < 200


# --- the hot path: a checked tx that pays nobody, without building anything -------------


def tx_frame(value: object, name: str = "tx") -> str:
    return "42" + json.dumps([name, value], ensure_ascii=False)


def full_path_pays_none(frame: str, watched, also_watched) -> bool:
    """What the full path makes of ``frame``: True when it is a tx/txlock event whose
    payload the parser takes and that pays no watched address."""
    try:
        decoded = decode_frame(frame)
    except MalformedFrame:
        return False
    if type(decoded) is not EventFrame or decoded.namespace != "/" or decoded.ack_id is not None:
        return False
    if decoded.name not in ("tx", "txlock") or len(decoded.args) != 1:
        return False
    try:
        _, outputs = tx_payload_outputs(decoded.args[0])
    except EventError:
        return False
    return not any(a in watched or a in also_watched for a in outputs)


JSON_BAD_TX = {k: v for k, v in BAD_TX.items() if k != "address not a string"}  # JSON keys


@pytest.mark.parametrize(("bad", "message"), JSON_BAD_TX.values(), ids=JSON_BAD_TX.keys())
def test_a_malformed_payload_never_passes_as_paying_nobody(bad, message):
    assert tx_frame_pays_none(tx_frame(bad), set(), set()) is False  # the full path refuses it
    assert tx_frame_pays_none(tx_frame(bad, "txlock"), set(), set()) is False


def test_a_good_payload_pays_nobody_unless_an_output_is_watched_in_either_container():
    good = tx_frame(payload({ADDRESS: 5}, {OTHER: 0}))
    assert tx_frame_pays_none(good, set(), {}) is True
    assert tx_frame_pays_none(good.replace('["tx"', '["txlock"'), set(), {}) is True
    assert tx_frame_pays_none(good, {ADDRESS}, {}) is False
    assert tx_frame_pays_none(good, set(), {OTHER: 1}) is False
    assert tx_frame_pays_none(tx_frame(payload()), {ADDRESS}) is True  # no address outputs
    assert tx_frame_pays_none(tx_frame(payload({ADDRESS: MAX_DUFFS})), set()) is True
    assert tx_frame_pays_none(tx_frame(payload(txid=TXID.upper())), set()) is True
    assert tx_frame_pays_none(FRAMES["tx"], set()) is True  # socket.io 2.4.1's own frames
    assert tx_frame_pays_none(FRAMES["txlock"], set()) is True
    assert tx_frame_pays_none(FRAMES["tx"], {ADDRESS}) is False


@pytest.mark.parametrize(
    "frame",
    [
        '42/nsp,["tx",{}]',  # a namespace
        "4212" + tx_frame(payload())[2:],  # an ack id
        "43" + tx_frame(payload())[2:],  # an ACK
        tx_frame(payload()).replace('["tx"', '["txs"'),  # another event name
        tx_frame(payload())[:-1] + ",1]",  # two arguments
        '42["tx"]',  # none
        tx_frame(payload())[:-2],  # truncated
        '42["tx",' + json.dumps(payload())[:-1] + ',"x":"\\ud800"}]',  # orjson refuses it
        '42["tx",' + json.dumps(payload())[:-1] + ',"x":1e400}]',  # ... the stdlib takes it
        '42["tx",' + json.dumps(payload())[:-1] + ',"x":NaN}]',
        '42["tx",' + "[" * 100_000,
        '42["tx",' + json.dumps(payload()) + " " * MAX_FRAME_CHARS + "]",  # over the limit
        "40",
        "2",
    ],
)
def test_every_other_frame_is_left_to_the_full_path(frame):
    assert tx_frame_pays_none(frame, set()) is False


@pytest.mark.parametrize(
    "txid",
    [
        TXID[:-2] + " a",  # 64 characters, but whitespace: fromhex would skip it
        " " + TXID[:-1],
        TXID[:-1] + "\n",
        TXID[:-1] + "\u0663",  # a digit, but not an ASCII one
        TXID[:-2] + "0x",
        TXID[:-1] + "_",
        "+" + TXID[1:],
    ],
)
def test_txid_lookalikes_are_not_taken_by_the_hot_path(txid):
    assert len(txid) == 64
    assert tx_frame_pays_none(tx_frame(payload(txid=txid)), set()) is False
    with pytest.raises(EventError, match="not 64 hex"):
        tx_payload_outputs(payload(txid=txid))


_BASE58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
# Each piece is mostly well-formed, so that whole payloads are taken often enough, and
# otherwise off by one thing: a length, a character, a type.
_addresses = st.one_of(
    st.sampled_from([ADDRESS, OTHER]),
    st.text(alphabet=_BASE58, min_size=25, max_size=36),
    st.text(alphabet=_BASE58, min_size=23, max_size=38),
    st.text(alphabet=_BASE58 + "0OIl+/ é\u0663\x00", min_size=25, max_size=36),
    st.text(alphabet=_BASE58 + "0OIl+/ é\u0663\x00", min_size=0, max_size=38),
)
_amounts = st.one_of(
    st.integers(min_value=0, max_value=MAX_DUFFS),
    st.integers(min_value=-2, max_value=MAX_DUFFS + 2),
    st.sampled_from([0, MAX_DUFFS, MAX_DUFFS // 2 + 1, True, False, 1.0, "5", None]),
)
_entries = st.one_of(
    st.dictionaries(_addresses, _amounts, min_size=1, max_size=1),
    st.dictionaries(_addresses, _amounts, min_size=1, max_size=1),
    st.one_of(
        st.dictionaries(_addresses, _amounts, min_size=0, max_size=2),
        st.sampled_from([[ADDRESS, 1], "x", 5, None]),
    ),
)
_txids = st.one_of(
    st.just(TXID),
    st.text(alphabet="0123456789abcdefABCDEF", min_size=64, max_size=64),
    st.one_of(
        st.text(alphabet="0123456789abcdef", min_size=63, max_size=65),
        st.text(alphabet="0123456789abcdef \u0663g_x", min_size=64, max_size=64),
        st.sampled_from([None, 5, 1.5, ["x"]]),
    ),
)
_payloads = st.one_of(
    st.fixed_dictionaries({"txid": _txids, "vout": st.lists(_entries, max_size=3)}),
    st.fixed_dictionaries({"txid": _txids, "vout": st.lists(_entries, max_size=3)}),
    st.one_of(
        st.fixed_dictionaries({"txid": _txids, "vout": st.sampled_from([None, {}, "x"])}),
        st.fixed_dictionaries({"vout": st.lists(_entries, max_size=2)}),
        st.sampled_from([None, [], "tx", 5]),
    ),
)


@settings(max_examples=2000, deadline=None)
@given(
    _payloads,
    st.sampled_from(["tx", "txlock"]),
    st.sets(_addresses, max_size=2),
    st.sets(_addresses, max_size=1),
)
def test_the_hot_path_agrees_with_the_full_path(value, name, watched, also_watched):
    """``tx_frame_pays_none`` is True exactly when the full path takes the event and no
    output address is watched: it may never drop a payment or hide a malformed event."""
    frame = tx_frame(value, name)
    expected = full_path_pays_none(frame, watched, also_watched)
    assert tx_frame_pays_none(frame, watched, also_watched) is expected


@pytest.mark.parametrize(
    "bad",
    [None, 5, BLOCK[:-1], BLOCK + "0", "g" * 64, {"hash": BLOCK}, [BLOCK], " " + BLOCK[1:]],
)
def test_malformed_block_payload_is_refused(bad):
    with pytest.raises(EventError, match="block event hash"):
        parse_block_payload(bad)


def test_link_markers_are_frozen_values():
    assert SocketConnected(at=1.0) == SocketConnected(at=1.0)
    lost = SocketDisconnected(at=2.0, reason="websocket closed")
    with pytest.raises(AttributeError):
        lost.reason = "x"  # type: ignore[misc]
