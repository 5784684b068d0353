"""What Insight tells us, as values: the only way a payment enters dashpay.

``TxObserved`` is produced identically by the socket path (``tx``/``txlock`` events),
by the REST path (address history, ``tx/<txid>``) and by the sandbox.

The socket payloads are parsed here (``parse_tx_payload``, ``parse_block_payload``):
they come from a server we do not control, so every field is checked and a bad one is
refused with an ``EventError`` that says what is wrong, rather than let a wrong amount
reach the payment engine. ``tx_frame_pays_none`` is the same checks on the hot path:
it tells the socket, from the frame, that a tx event is sound and pays nobody watched,
so it can be dropped with nothing built. Shapes are in ``docs/insight-protocol.md`` section 2.
"""

from __future__ import annotations

import re
from collections.abc import Container

import orjson

from dashpay.domain.money import MAX_DUFFS
from dashpay.domain.observations import SOURCE_SOCKET, BlockObserved, TxObserved, frozen_outputs
from dashpay.wire.engineio import MAX_FRAME_CHARS

# --- socket event payloads --------------------------------------------------------------

# Dash blocks are at most 2 MB (DIP0001) and the smallest output is 34 bytes (8 value +
# 1 script length + 25 P2PKH script), so no transaction can have more outputs than this;
# a longer `vout` is not a Dash transaction and would only cost us time to sum.
MAX_OUTPUTS_PER_TX = 2_000_000 // 34
# Insight only puts base58 P2PKH/P2SH addresses in `vout` (34 characters on every Dash
# network; base58 of a 25-byte payload is 25..35 characters, 36 for safety).
MIN_ADDRESS_CHARS = 25
MAX_ADDRESS_CHARS = 36
# Base58 alphabet, P2PKH/P2SH lengths; anything else is not an address Insight decoded.
# Shared with the REST payload parsers (wire/insight_rest.py).
BASE58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
ADDRESS = re.compile(f"[{BASE58}]{{{MIN_ADDRESS_CHARS},{MAX_ADDRESS_CHARS}}}")
# The same test for the hot path: what deleting every base58 byte leaves of an
# address's UTF-8 is empty exactly when the regex's class matches all of it (a
# non-ASCII character leaves bytes >= 0x80), at half the regex's cost.
_BASE58_BYTES = BASE58.encode("ascii")
HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_SHOW_CHARS = 80


class EventError(ValueError):
    """A socket event payload that does not have the documented shape."""


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _SHOW_CHARS else text[:_SHOW_CHARS] + "..."


def _txid(value: object, what: str) -> str:
    if type(value) is str and len(value) == 64 and HEX64.fullmatch(value):
        return value.lower()
    raise EventError(f"{what} {_show(value)} is not 64 hex digits")


def parse_tx_payload(payload: object, *, instant_locked: bool) -> TxObserved:
    """The payload of a ``tx`` (``instant_locked=False``) or ``txlock`` event (see
    ``tx_payload_outputs`` for what is checked)."""
    txid, outputs = tx_payload_outputs(payload)
    return observed_tx(txid, outputs, instant_locked)


def observed_tx(txid: str, outputs: dict[str, int], instant_locked: bool) -> TxObserved:
    """The observation of a checked ``tx``/``txlock`` payload."""
    return TxObserved(
        txid=txid,
        outputs=frozen_outputs(outputs),
        instant_locked=instant_locked,
        source=SOURCE_SOCKET,
    )


def tx_frame_pays_none(
    frame: str, watched: Container[str], also_watched: Container[str] = ()
) -> bool:
    """True when ``frame`` is a plain ``tx`` or ``txlock`` event frame
    (``42["tx",{...}]``: no namespace, no ack id) whose payload passes every check of
    ``tx_payload_outputs`` and pays no address in ``watched`` or ``also_watched``: the
    event can be counted and dropped, with no ``Frame``, outputs dict or observation
    built. False says "take the full path" (``decode_frame``, then
    ``tx_payload_outputs``): any other frame, one orjson does not take (the stdlib
    decoder may), a payload that pays a watched address, or one that fails a check,
    which the full parser then names.

    The hot path of a flood of events that pay nobody, in one function (each call
    costs): orjson as ``decode_frame`` uses it, then the same checks as the full
    parser, written for speed (``tests/unit/test_insight_events.py`` holds both paths
    to the same answers).
    """
    if not frame.startswith('42["tx') or len(frame) > MAX_FRAME_CHARS:
        return False
    try:
        array = orjson.loads(frame[2:])
    except orjson.JSONDecodeError:
        return False
    if type(array) is not list or len(array) != 2:
        return False
    name, payload = array
    if name != "tx" and name != "txlock":
        return False
    if type(payload) is not dict:
        return False
    txid = payload.get("txid")
    if type(txid) is not str or len(txid) != 64:
        return False
    try:  # 64 characters that make 32 bytes: 64 hex digits (whitespace would make fewer)
        if len(bytes.fromhex(txid)) != 32:
            return False
    except ValueError:
        return False
    vout = payload.get("vout")
    if type(vout) is not list or len(vout) > MAX_OUTPUTS_PER_TX:
        return False
    total = 0
    for entry in vout:
        if type(entry) is not dict or len(entry) != 1:
            return False
        for address, duffs in entry.items():
            if (
                type(duffs) is not int  # bool and float too
                or duffs < 0
                or duffs > MAX_DUFFS
                or type(address) is not str
                or not MIN_ADDRESS_CHARS <= len(address) <= MAX_ADDRESS_CHARS
                or address.encode().translate(None, _BASE58_BYTES)
                or address in watched
                or address in also_watched
            ):
                return False
            total += duffs
    return total <= MAX_DUFFS


def tx_payload_outputs(payload: object) -> tuple[str, dict[str, int]]:
    """Every check of a ``tx``/``txlock`` payload: its txid and outputs (address ->
    duffs, summed per address), or EventError. The socket looks the addresses up before
    it builds an observation, so an event that pays nobody costs no more than this.

    ``vout`` is a list of single-key objects ``{address: duffs}``, one per output that has
    an address; outputs without one are left out by Insight, so a list position is not an
    output index. Amounts are integer duffs; several outputs to one address are summed.
    The payload's float ``valueOut`` (DASH) and its ``txlock``/``isRBF`` flags are not
    read: the event name says whether the tx is locked, and money never passes through
    a float.

    Zero-value outputs keep their address key (with 0): ``rest.parse_tx`` does the same,
    so one tx seen over REST and over the socket yields equal ``TxObserved`` values, and
    the payment engine, not the parser, decides what a zero payment means.
    """
    if type(payload) is not dict:
        raise EventError(f"tx payload is a {type(payload).__name__}, not an object")
    txid = _txid(payload.get("txid"), "tx event txid")
    vout = payload.get("vout")
    if type(vout) is not list:
        raise EventError(f"tx {txid}: vout is {_show(vout)}, not a list")
    if len(vout) > MAX_OUTPUTS_PER_TX:
        raise EventError(
            f"tx {txid}: vout has {len(vout)} entries; no Dash tx has more than "
            f"{MAX_OUTPUTS_PER_TX} outputs"
        )
    outputs: dict[str, int] = {}
    total = 0
    for index, entry in enumerate(vout):
        if type(entry) is not dict or len(entry) != 1:
            raise EventError(
                f"tx {txid}: vout[{index}] is {_show(entry)}, not a single {{address: duffs}}"
            )
        ((address, duffs),) = entry.items()
        if type(address) is not str or not address:
            raise EventError(f"tx {txid}: vout[{index}] has an empty address")
        if len(address) > MAX_ADDRESS_CHARS:
            raise EventError(
                f"tx {txid}: vout[{index}] address {_show(address)} is longer than "
                f"{MAX_ADDRESS_CHARS} characters"
            )
        if not ADDRESS.fullmatch(address):
            raise EventError(
                f"tx {txid}: vout[{index}] address {_show(address)} is not a base58 address"
            )
        if type(duffs) is not int:  # bool and float are refused: amounts are duffs
            raise EventError(
                f"tx {txid}: vout[{index}] amount {_show(duffs)} is not an integer of duffs"
            )
        if duffs < 0:
            raise EventError(f"tx {txid}: vout[{index}] amount {duffs} is negative")
        if duffs > MAX_DUFFS:
            raise EventError(
                f"tx {txid}: vout[{index}] amount {duffs} duffs is over 21,000,000 DASH"
            )
        total += duffs
        if total > MAX_DUFFS:
            raise EventError(
                f"tx {txid}: outputs add up to more than 21,000,000 DASH ({total} duffs)"
            )
        outputs[address] = outputs.get(address, 0) + duffs
    return txid, outputs


def parse_block_payload(payload: object) -> BlockObserved:
    """The payload of a ``block`` event: the bare block hash (not an object)."""
    return BlockObserved(block_hash=_txid(payload, "block event hash"))
