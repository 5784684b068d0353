"""Insight REST payloads, without I/O: the values, errors and parsers of the REST client.

The shell in ``net/insight_rest.py`` fetches; everything here is pure: ``parse_tx``,
``parse_history_page``, ``parse_block``, ``parse_status`` and ``parse_chainlock`` turn
decoded JSON into values or raise ``InsightMalformed`` naming the field; ``decode_json``
is strict JSON; ``retry_after_seconds`` reads a Retry-After header; ``merge_tx`` keeps
the most advanced of two views of one transaction. The socket's payloads are parsed in
``wire/insight.py``; both produce the same ``TxObserved``.

Wire facts used here are in ``docs/insight-protocol.md`` §3 and §4: errors are not JSON
(400 ``"<message>. Code:<n>"``, 404 ``Not found``, 503 plain text, 429 JSON);
``vout[].value`` is a DASH string; mempool txs have ``blockheight`` -1 and no
``blockhash``; REST ``txlock`` is cached until the next block and is true for
InstantSend *or* ChainLock.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from dashpay.domain.money import MAX_DUFFS, AmountError, insight_dash_to_duffs
from dashpay.domain.observations import SOURCE_REST, SourceError, TxObserved, frozen_outputs
from dashpay.wire.insight import ADDRESS, HEX64

# Characters of an error body quoted in a message (they end up in logs and the CLI).
ERROR_EXCERPT_CHARS = 200

_NETWORKS = {"livenet": "mainnet", "mainnet": "mainnet", "testnet": "testnet", "regtest": "regtest"}
NO_CHAINLOCK = "unable to find any chainlock"  # dashd's getbestchainlock error text


# --- errors -----------------------------------------------------------------------------


class InsightError(SourceError):
    """Insight did not give a usable answer. The message names the request path (never
    the host's credentials or query), the HTTP status and an excerpt of the body."""

    def __init__(self, message: str, *, path: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.status = status


class InsightUnavailable(InsightError):
    """Network errors, timeouts, 5xx or 429 that outlasted the retries: try later."""


class InsightRejected(InsightError):
    """A 4xx other than 404/429: the request itself is wrong (e.g. an address for another
    network). Retrying the same request will not help."""


class InsightMalformed(InsightError):
    """A payload that does not have the documented shape; ``field`` says where."""

    def __init__(self, what: str, field: str, reason: str, *, txid: str | None = None) -> None:
        where = f"{what} {txid}" if txid else what
        super().__init__(f"Insight sent a malformed {where}: {field} {reason}")
        self.field = field
        self.reason = reason
        self.txid = txid

    def __str__(self) -> str:
        text = super().__str__()
        return f"{text} (from {self.path})" if self.path else text


# --- values -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BlockInfo:
    hash: str
    height: int
    previous_hash: str | None  # None only for the genesis block
    confirmations: int  # Insight reports -1 for a block that left the main chain
    is_main_chain: bool
    time: int  # unix seconds, from the block header


@dataclass(frozen=True, slots=True)
class ChainLockInfo:
    block_hash: str
    height: int


@dataclass(frozen=True, slots=True)
class NodeStatus:
    network: str  # "mainnet" | "testnet" | "regtest"
    blocks: int
    version: int  # dashd's version number, e.g. 180002
    raw: Mapping[str, Any]  # the whole `info` object, for display


@dataclass(frozen=True, slots=True)
class HistoryPage:
    total_items: int
    items: list[Any]  # raw tx objects; parse each with parse_tx


# --- pure parsers -----------------------------------------------------------------------


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def hex64(value: object) -> str | None:
    if isinstance(value, str) and HEX64.fullmatch(value):
        return value.lower()
    return None


def parse_tx(item: object) -> TxObserved:
    """A REST tx object (``/tx/<txid>`` or one ``/addrs/txs`` item) as a TxObserved.

    ``outputs`` sums, per address, the outputs that pay exactly one address; outputs
    without one (OP_RETURN, bare multisig, P2PK) are not payments to an address and are
    left out. Amounts come from the ``value`` DASH string through Decimal and must agree
    with ``valueSat`` when the server sends it. Raises InsightMalformed naming the field.
    """
    if not isinstance(item, dict):
        raise InsightMalformed("tx", "item", f"is a {type(item).__name__}, not an object")
    txid = hex64(item.get("txid"))
    if txid is None:
        raise InsightMalformed("tx", "txid", f"{show(item.get('txid'))} is not 64 hex digits")

    def bad(field: str, reason: str) -> InsightMalformed:
        return InsightMalformed("tx", field, reason, txid=txid)

    vout = item.get("vout")
    if not isinstance(vout, list):
        raise bad("vout", "is missing or not a list")
    outputs: dict[str, int] = {}
    for index, out in enumerate(vout):
        field = f"vout[{index}]"
        if not isinstance(out, dict):
            raise bad(field, "is not an object")
        script = out.get("scriptPubKey")
        if script is None:
            continue
        if not isinstance(script, dict):
            raise bad(f"{field}.scriptPubKey", "is not an object")
        addresses = script.get("addresses")
        if addresses is None:
            continue
        if not isinstance(addresses, list):
            raise bad(f"{field}.scriptPubKey.addresses", "is not a list")
        if len(addresses) != 1:
            continue  # bare multisig and the like: not a payment to one address
        address = addresses[0]
        if not isinstance(address, str) or not ADDRESS.fullmatch(address):
            raise bad(f"{field}.scriptPubKey.addresses", f"{show(address)} is not an address")
        try:
            duffs = insight_dash_to_duffs(out.get("value"))
        except AmountError as exc:
            raise bad(f"{field}.value", f"{show(out.get('value'))}: {exc}") from None
        if duffs > MAX_DUFFS:
            raise bad(f"{field}.value", f"{show(out.get('value'))} is over 21,000,000 DASH")
        value_sat = out.get("valueSat")
        if value_sat is not None and (not _is_int(value_sat) or value_sat != duffs):
            raise bad(f"{field}.valueSat", f"{show(value_sat)} disagrees with value {duffs} duffs")
        outputs[address] = outputs.get(address, 0) + duffs

    height = item.get("blockheight")
    if height is None or height == -1:
        block_height = None
    elif _is_int(height) and height >= 0:
        block_height = height
    else:
        raise bad("blockheight", f"{show(height)} is not a height or -1")

    confirmations = item.get("confirmations")
    if confirmations is not None and not (_is_int(confirmations) and confirmations >= 0):
        raise bad("confirmations", f"{show(confirmations)} is not a count")

    txlock = item.get("txlock", False)
    if not isinstance(txlock, bool):
        raise bad("txlock", f"{show(txlock)} is not true/false")

    return TxObserved(
        txid=txid,
        outputs=frozen_outputs(outputs),
        instant_locked=txlock,
        block_height=block_height,
        confirmations=confirmations,
        source=SOURCE_REST,
    )


def parse_history_page(payload: object) -> HistoryPage:
    """The envelope of a ``POST /addrs/txs`` answer: ``{totalItems, from, to, items}``."""
    if not isinstance(payload, dict):
        raise InsightMalformed("history page", "body", f"is a {type(payload).__name__}")
    total = payload.get("totalItems")
    if not (_is_int(total) and total >= 0):
        raise InsightMalformed("history page", "totalItems", f"{show(total)} is not a count")
    items = payload.get("items")
    if not isinstance(items, list):
        raise InsightMalformed("history page", "items", "is missing or not a list")
    return HistoryPage(total_items=total, items=items)


def parse_block(payload: object) -> BlockInfo:
    """A ``GET /block/<hash>`` answer."""
    if not isinstance(payload, dict):
        raise InsightMalformed("block", "body", f"is a {type(payload).__name__}")
    block_hash = hex64(payload.get("hash"))
    if block_hash is None:
        raise InsightMalformed("block", "hash", f"{show(payload.get('hash'))} is not 64 hex")

    def bad(field: str, reason: str) -> InsightMalformed:
        return InsightMalformed("block", field, reason, txid=block_hash)

    height = payload.get("height")
    if not (_is_int(height) and height >= 0):
        raise bad("height", f"{show(height)} is not a height")
    previous = payload.get("previousblockhash")
    previous_hash = None if previous is None else hex64(previous)
    if previous is not None and previous_hash is None:
        raise bad("previousblockhash", f"{show(previous)} is not 64 hex digits")
    confirmations = payload.get("confirmations")
    if not _is_int(confirmations):
        raise bad("confirmations", f"{show(confirmations)} is not an integer")
    main = payload.get("isMainChain")
    if not isinstance(main, bool):
        raise bad("isMainChain", f"{show(main)} is not true/false")
    block_time = payload.get("time")
    if not (_is_int(block_time) and block_time >= 0):
        raise bad("time", f"{show(block_time)} is not a unix time")
    return BlockInfo(block_hash, height, previous_hash, confirmations, main, block_time)


def parse_status(payload: object) -> NodeStatus:
    """A ``GET /status?q=getInfo`` answer; dashcore-lib's "livenet" is our "mainnet"."""
    info = payload.get("info") if isinstance(payload, dict) else None
    if not isinstance(info, dict):
        raise InsightMalformed("status", "info", "is missing or not an object")
    name = info.get("network")
    network = _NETWORKS.get(name) if isinstance(name, str) else None
    if network is None:
        raise InsightMalformed(
            "status", "network", f"{show(info.get('network'))} is not mainnet/testnet/regtest"
        )
    blocks = info.get("blocks")
    if not (_is_int(blocks) and blocks >= 0):
        raise InsightMalformed("status", "blocks", f"{show(blocks)} is not a height")
    version = info.get("version")
    if not (_is_int(version) and version >= 0):
        raise InsightMalformed("status", "version", f"{show(version)} is not a version number")
    return NodeStatus(network=network, blocks=blocks, version=version, raw=info)


def parse_chainlock(payload: object) -> ChainLockInfo | None:
    """A ``GET /status?q=getBestChainLock`` answer. None when there is no ChainLock yet,
    or when the server predates that query (it then answers getInfo instead)."""
    if not isinstance(payload, dict):
        raise InsightMalformed("chainlock", "body", f"is a {type(payload).__name__}")
    lock = payload.get("bestchainlock")
    if lock is None:
        return None
    if not isinstance(lock, dict):
        raise InsightMalformed("chainlock", "bestchainlock", "is not an object")
    block_hash = hex64(lock.get("blockhash"))
    if block_hash is None:
        raise InsightMalformed(
            "chainlock", "blockhash", f"{show(lock.get('blockhash'))} is not 64 hex digits"
        )
    height = lock.get("height")
    if not (_is_int(height) and height >= 0):
        raise InsightMalformed("chainlock", "height", f"{show(height)} is not a height")
    return ChainLockInfo(block_hash=block_hash, height=height)


def show(value: object) -> str:
    """A short, log-safe rendering of a hostile value."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def excerpt(body: bytes) -> str:
    """Printable, one-line, bounded text of an error body."""
    text = body[: ERROR_EXCERPT_CHARS * 4].decode("utf-8", errors="replace")
    text = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    if len(text) > ERROR_EXCERPT_CHARS:
        text = text[: ERROR_EXCERPT_CHARS - 3] + "..."
    return text or "(empty body)"


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def decode_json(body: bytes) -> Any:
    """Strict JSON: UTF-8, no NaN/Infinity. Raises ValueError."""
    return json.loads(body.decode("utf-8"), parse_constant=_reject_constant)


def is_route_missing(body: bytes) -> bool:
    """True for the 404s that mean "no such route" (wrong URL prefix) rather than "no
    such tx/block": insight-api's JSON 404 for unknown routes under its prefix, and
    express's HTML "Cannot GET" page outside it. A real miss is plain ``Not found``."""
    text = body.decode("utf-8", errors="replace").strip()
    if text.startswith("{"):
        return True
    return "Cannot GET" in text or "Cannot POST" in text or text.lower().startswith("<!doctype")


def merge_tx(into: dict[str, TxObserved], tx: TxObserved) -> None:
    """Keep one TxObserved per txid: the most advanced view (more confirmations), and
    InstantSend-locked if any view said so (a lock never goes away)."""
    seen = into.get(tx.txid)
    if seen is None:
        into[tx.txid] = tx
        return
    best = tx if (tx.confirmations or 0) > (seen.confirmations or 0) else seen
    locked = seen.instant_locked or tx.instant_locked
    into[tx.txid] = best if best.instant_locked == locked else replace(best, instant_locked=locked)
