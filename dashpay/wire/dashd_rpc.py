"""dashd's JSON-RPC, without I/O: request bodies out, checked answers in.

Shapes from dashpay/docs ``docs/core/api/remote-procedure-calls-*.md`` (Dash Core 23):

- ``getrawtransaction txid true``: ``txid``, ``hex``, ``vout[]`` with ``valueSat``
  (duffs) and ``scriptPubKey.address`` (Dash Core 23; older nodes ``addresses``, a
  list), ``height``/``confirmations`` only once mined, ``instantlock`` (InstantSend
  *or* ChainLock, like Insight's ``txlock``), ``instantlock_internal`` (InstantSend
  only), ``chainlock``;
- ``getblockchaininfo``: ``chain`` (main/test/regtest/devnet-*), ``blocks``,
  ``headers``, ``bestblockhash``, ``initialblockdownload``;
- with ``-addressindex``: ``getaddresstxids``, ``getaddressmempool`` and
  ``getaddressdeltas`` take ``{"addresses": [...]}`` (deltas also ``start``/``end``);
  without it Dash Core 22+ answers -32600 (HTTP 400), older nodes -5: that is
  ``AddressIndexDisabled``, and the backend falls back to ``scantxoutset``, which sees
  only UNSPENT outputs (a payment already spent onwards is invisible to it) and
  reports no mempool transactions.

Amounts are read from the integer duff fields; JSON numbers with a fraction are
decoded as Decimal, never float (``decode_json``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from dashpay.domain.money import MAX_DUFFS
from dashpay.domain.observations import SOURCE_REST, TxObserved, frozen_outputs
from dashpay.wire.dash_tx import TxParseError, parse_tx_hex
from dashpay.wire.insight import ADDRESS, HEX64, MAX_OUTPUTS_PER_TX
from dashpay.wire.insight_rest import show

# Bitcoin/Dash JSON-RPC error codes (src/rpc/protocol.h).
RPC_INVALID_REQUEST = -32600
RPC_METHOD_NOT_FOUND = -32601
RPC_INVALID_ADDRESS_OR_KEY = -5
# The addresses one address-index call may carry: dashd has no limit of its own, but a
# request line this long already takes it seconds; the backend batches the watched set.
MAX_ADDRESSES_PER_CALL = 1000
_CHAINS = {"main": "mainnet", "test": "testnet", "regtest": "regtest"}


class RpcError(Exception):
    """dashd answered with an error object; ``code`` is its JSON-RPC code."""

    def __init__(self, method: str, code: int, message: str) -> None:
        super().__init__(f"dashd {method} failed: {message} (code {code})")
        self.method = method
        self.code = code
        self.message = message


class AddressIndexDisabled(RpcError):
    """The address calls need ``addressindex=1`` in dash.conf (and a reindex)."""


class RpcMalformed(ValueError):
    """An answer that does not have dashd's documented shape; the text names the field."""


# --- requests ---------------------------------------------------------------------------


def request_body(request_id: int, method: str, params: Sequence[Any]) -> bytes:
    """One JSON-RPC call as dash-cli sends it (``jsonrpc`` "1.0", positional params)."""
    return json.dumps(
        {"jsonrpc": "1.0", "id": request_id, "method": method, "params": list(params)},
        separators=(",", ":"),
    ).encode()


def _addresses(addresses: Sequence[str]) -> list[str]:
    if isinstance(addresses, str) or not addresses:
        raise ValueError("give a non-empty list of addresses")
    if len(addresses) > MAX_ADDRESSES_PER_CALL:
        raise ValueError(f"at most {MAX_ADDRESSES_PER_CALL} addresses per call")
    return list(addresses)


def getrawtransaction(request_id: int, txid: str) -> bytes:
    return request_body(request_id, "getrawtransaction", [txid, True])


def getblockchaininfo(request_id: int) -> bytes:
    return request_body(request_id, "getblockchaininfo", [])


def getaddresstxids(request_id: int, addresses: Sequence[str]) -> bytes:
    return request_body(request_id, "getaddresstxids", [{"addresses": _addresses(addresses)}])


def getaddressmempool(request_id: int, addresses: Sequence[str]) -> bytes:
    return request_body(request_id, "getaddressmempool", [{"addresses": _addresses(addresses)}])


def getaddressdeltas(
    request_id: int, addresses: Sequence[str], start: int | None = None, end: int | None = None
) -> bytes:
    query: dict[str, Any] = {"addresses": _addresses(addresses)}
    if start is not None and end is not None:  # dashd reads the range only as a pair
        query.update(start=start, end=end)
    return request_body(request_id, "getaddressdeltas", [query])


def scantxoutset(request_id: int, addresses: Sequence[str]) -> bytes:
    descriptors = [f"addr({address})" for address in _addresses(addresses)]
    return request_body(request_id, "scantxoutset", ["start", descriptors])


# --- answers ----------------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def decode_json(body: bytes) -> Any:
    """Strict JSON with fractions as Decimal: dashd prints DASH amounts as numbers."""
    return json.loads(body.decode("utf-8"), parse_float=Decimal, parse_constant=_reject_constant)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _index_is_off(code: int, message: str) -> bool:
    """Dash Core 22+: -32600 "Address index is disabled. You should run Dash Core with
    -addressindex (requires reindex)". Older nodes fail the index read and answer -5
    "No information available for address" (with the index on, an unused address gives
    an empty list, not an error)."""
    text = message.lower()
    if code == RPC_INVALID_REQUEST:
        return "address index" in text
    return code == RPC_INVALID_ADDRESS_OR_KEY and (
        "no information available" in text or "address index" in text
    )


def read_response(method: str, status: int, body: bytes) -> Any:
    """The ``result`` of one call, or the typed error. dashd answers errors with HTTP
    500 (404 for an unknown method, 400 for -32600 in Core 22+) and a JSON body; a body
    that is not JSON (401 without credentials, a proxy's page) is RpcMalformed."""
    try:
        answer = decode_json(body)
    except (UnicodeDecodeError, ValueError):
        raise RpcMalformed(f"dashd {method}: HTTP {status} with a body that is not JSON") from None
    error = _answer_error(method, status, answer)
    if error is not None:
        raise error
    if status != 200:
        raise RpcMalformed(f"dashd {method}: HTTP {status} without an error object")
    return answer["result"]


def _answer_error(method: str, status: int, answer: object) -> RpcError | None:
    """The typed error one JSON-RPC answer object carries, None if it has a result."""
    if not isinstance(answer, dict) or "result" not in answer or "error" not in answer:
        raise RpcMalformed(f"dashd {method}: HTTP {status}, not a JSON-RPC answer")
    error = answer["error"]
    if error is None:
        return None
    code = error.get("code") if isinstance(error, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    if not _is_int(code) or not isinstance(message, str):
        raise RpcMalformed(f"dashd {method}: error {show(error)} has no code and message")
    if method.startswith("getaddress") and _index_is_off(code, message):
        return AddressIndexDisabled(method, code, message[:200])
    return RpcError(method, code, message[:200])


def batch_body(requests: Sequence[bytes]) -> bytes:
    """Several calls in one HTTP request (a JSON-RPC batch: dashd answers an array)."""
    return b"[" + b",".join(requests) + b"]"


def read_batch(method: str, status: int, body: bytes, ids: Sequence[int]) -> dict[int, Any]:
    """A batch of ``method`` calls: request id -> its result or its RpcError. Every id
    must be answered once; anything else is RpcMalformed."""
    try:
        answers = decode_json(body)
    except (UnicodeDecodeError, ValueError):
        raise RpcMalformed(
            f"dashd {method} batch: HTTP {status} with a body that is not JSON"
        ) from None
    if not isinstance(answers, list):
        read_response(method, status, body)  # one error object for the whole batch
        raise RpcMalformed(f"dashd {method} batch: HTTP {status}, not an array of answers")
    wanted = set(ids)
    results: dict[int, Any] = {}
    for answer in answers:
        error = _answer_error(method, status, answer)
        request_id = answer.get("id")
        if request_id not in wanted or request_id in results:
            raise RpcMalformed(f"dashd {method} batch: answer id {show(request_id)} unexpected")
        results[request_id] = error if error is not None else answer["result"]
    if len(results) != len(ids):
        raise RpcMalformed(f"dashd {method} batch: {len(ids) - len(results)} calls unanswered")
    return results


def _txid(value: object, field: str) -> str:
    if isinstance(value, str) and HEX64.fullmatch(value):
        return value.lower()
    raise RpcMalformed(f"{field} {show(value)} is not 64 hex digits")


def _count(value: object, field: str) -> int:
    if _is_int(value) and 0 <= value <= 2**31:
        return value
    raise RpcMalformed(f"{field} {show(value)} is not a count")


def _duffs(value: object, field: str) -> int:
    if _is_int(value) and 0 <= value <= MAX_DUFFS:
        return value
    raise RpcMalformed(f"{field} {show(value)} is not an amount of duffs")


def _flag(value: object, field: str) -> bool:
    if isinstance(value, bool):
        return value
    raise RpcMalformed(f"{field} {show(value)} is not true/false")


def _output_address(script: object, field: str) -> str | None:
    """The one address an output pays: ``address`` (Core 23) or ``addresses`` (older,
    a list; more than one entry is bare multisig, no payment to one address)."""
    if not isinstance(script, dict):
        raise RpcMalformed(f"{field}.scriptPubKey is not an object")
    candidates = script.get("addresses")
    if "address" in script:
        candidates = [script["address"]]
    if candidates is None:
        return None
    if not isinstance(candidates, list):
        raise RpcMalformed(f"{field}.scriptPubKey.addresses is not a list")
    if len(candidates) != 1:
        return None
    address = candidates[0]
    if not isinstance(address, str) or not ADDRESS.fullmatch(address):
        raise RpcMalformed(f"{field}.scriptPubKey address {show(address)} is not an address")
    return address


@dataclass(frozen=True, slots=True)
class VerboseTx:
    observed: TxObserved  # instant_locked = ``instantlock`` (InstantSend or ChainLock)
    instant_send: bool  # ``instantlock_internal``
    chain_locked: bool  # ``chainlock``


def parse_verbose_tx(result: object, network: str, *, source: str = SOURCE_REST) -> VerboseTx:
    """A ``getrawtransaction txid true`` result (Blockbook's ``getTransactionSpecific``
    relays the same object). When ``hex`` is present it is parsed too and must agree
    with the JSON: same txid, same payments."""
    if not isinstance(result, dict):
        raise RpcMalformed(f"transaction is a {type(result).__name__}, not an object")
    txid = _txid(result.get("txid"), "txid")
    vout = result.get("vout")
    if not isinstance(vout, list) or len(vout) > MAX_OUTPUTS_PER_TX:
        raise RpcMalformed(f"tx {txid}: vout is missing or not a list of outputs")
    outputs: dict[str, int] = {}
    total = 0
    for index, out in enumerate(vout):
        field = f"tx {txid}: vout[{index}]"
        if not isinstance(out, dict):
            raise RpcMalformed(f"{field} is not an object")
        duffs = _duffs(out.get("valueSat"), f"{field}.valueSat")
        total += duffs
        if total > MAX_DUFFS:
            raise RpcMalformed(f"tx {txid}: outputs add up to more than 21,000,000 DASH")
        address = _output_address(out.get("scriptPubKey"), field)
        if address is not None:
            outputs[address] = outputs.get(address, 0) + duffs
    if "hex" in result:
        try:
            raw = parse_tx_hex(result["hex"], network)
        except TxParseError as exc:
            raise RpcMalformed(f"tx {txid}: hex: {exc}") from None
        if raw.txid != txid or raw.paid() != outputs:
            raise RpcMalformed(f"tx {txid}: hex does not match the decoded fields")
    # Judged by confirmations: 0 in the mempool and for a tx whose block left the main
    # chain (its ``blockhash`` stays, ``height`` is then -1).
    confirmations = _count(result.get("confirmations", 0), f"tx {txid}: confirmations")
    height = result.get("height")
    if confirmations == 0 or height in (None, -1):
        height = None
    else:
        height = _count(height, f"tx {txid}: height")
    observed = TxObserved(
        txid=txid,
        outputs=frozen_outputs(outputs),
        instant_locked=_flag(result.get("instantlock"), f"tx {txid}: instantlock"),
        block_height=height,
        confirmations=confirmations,
        source=source,
    )
    return VerboseTx(
        observed=observed,
        instant_send=_flag(result.get("instantlock_internal"), f"tx {txid}: instantlock_internal"),
        chain_locked=_flag(result.get("chainlock", False), f"tx {txid}: chainlock"),
    )


@dataclass(frozen=True, slots=True)
class ChainInfo:
    network: str  # mainnet | testnet | regtest | devnet-<name>
    blocks: int
    headers: int
    best_block_hash: str
    initial_download: bool


def parse_blockchaininfo(result: object) -> ChainInfo:
    if not isinstance(result, dict):
        raise RpcMalformed("getblockchaininfo result is not an object")
    chain = result.get("chain")
    if not isinstance(chain, str) or not (chain in _CHAINS or chain.startswith("devnet")):
        raise RpcMalformed(f"getblockchaininfo chain {show(chain)} is not main/test/regtest")
    return ChainInfo(
        network=_CHAINS.get(chain, chain),
        blocks=_count(result.get("blocks"), "getblockchaininfo blocks"),
        headers=_count(result.get("headers"), "getblockchaininfo headers"),
        best_block_hash=_txid(result.get("bestblockhash"), "getblockchaininfo bestblockhash"),
        initial_download=_flag(
            result.get("initialblockdownload", False), "getblockchaininfo initialblockdownload"
        ),
    )


def _list(result: object, method: str, limit: int = 10_000_000) -> list[Any]:
    if not isinstance(result, list):
        raise RpcMalformed(f"{method} result is not a list")
    if len(result) > limit:
        raise RpcMalformed(f"{method} result has {len(result)} entries, over {limit}")
    return result


def parse_txids(result: object) -> list[str]:
    """A ``getaddresstxids`` result: txids, oldest first, without repeats."""
    txids = [_txid(t, "getaddresstxids entry") for t in _list(result, "getaddresstxids")]
    return list(dict.fromkeys(txids))


@dataclass(frozen=True, slots=True)
class AddressDelta:
    txid: str
    address: str
    duffs: int  # positive: received by an output; negative: spent by an input
    height: int | None  # None for a mempool delta


def _delta(entry: object, method: str, *, mempool: bool) -> AddressDelta:
    if not isinstance(entry, dict):
        raise RpcMalformed(f"{method} entry {show(entry)} is not an object")
    address = entry.get("address")
    if not isinstance(address, str) or not ADDRESS.fullmatch(address):
        raise RpcMalformed(f"{method} address {show(address)} is not an address")
    duffs = entry.get("satoshis")
    if not _is_int(duffs) or abs(duffs) > MAX_DUFFS:
        raise RpcMalformed(f"{method} satoshis {show(duffs)} is not an amount of duffs")
    height = None if mempool else _count(entry.get("height"), f"{method} height")
    return AddressDelta(_txid(entry.get("txid"), f"{method} txid"), address, duffs, height)


def parse_address_mempool(result: object) -> list[AddressDelta]:
    return [_delta(e, "getaddressmempool", mempool=True) for e in _list(result, "mempool")]


def parse_address_deltas(result: object) -> list[AddressDelta]:
    return [_delta(e, "getaddressdeltas", mempool=False) for e in _list(result, "deltas")]


@dataclass(frozen=True, slots=True)
class Unspent:
    txid: str
    vout: int
    script_hex: str
    height: int


@dataclass(frozen=True, slots=True)
class UtxoScan:
    height: int
    best_block_hash: str
    unspents: tuple[Unspent, ...]


def parse_scantxoutset(result: object) -> UtxoScan:
    """A ``scantxoutset start`` result. Only the txids are used (each is then read with
    ``getrawtransaction``): the amounts are DASH numbers, and a tx is what we record."""
    if not isinstance(result, dict) or result.get("success") is not True:
        raise RpcMalformed("scantxoutset did not complete (success is not true)")
    unspents = []
    for entry in _list(result.get("unspents"), "scantxoutset unspents"):
        if not isinstance(entry, dict):
            raise RpcMalformed(f"scantxoutset unspent {show(entry)} is not an object")
        script = entry.get("scriptPubKey")
        if not isinstance(script, str) or len(script) > 20_000:
            raise RpcMalformed(f"scantxoutset scriptPubKey {show(script)} is not hex")
        unspents.append(
            Unspent(
                txid=_txid(entry.get("txid"), "scantxoutset txid"),
                vout=_count(entry.get("vout"), "scantxoutset vout"),
                script_hex=script,
                height=_count(entry.get("height"), "scantxoutset height"),
            )
        )
    return UtxoScan(
        height=_count(result.get("height"), "scantxoutset height"),
        best_block_hash=_txid(result.get("bestblock"), "scantxoutset bestblock"),
        unspents=tuple(unspents),
    )
