"""Blockbook's websocket API, without I/O: request texts out, checked observations in.

Shapes from trezor/blockbook (``server/ws_types.go``, ``server/websocket.go``,
``api/types.go``; ``docs/api.md`` before the move to ``openapi.yaml``):

- every message is JSON ``{"id", "method", "params"}`` with a string ``id``; every
  answer is ``{"id", "data"}``, an error ``data`` is ``{"error": {"message"}}``;
- ``subscribeAddresses {addresses}`` answers ``{"subscribed": true}``; a connection
  has ONE address subscription (a new list replaces the old) of at most 1,000
  addresses; later ``{address, tx}`` notifications come under the subscribing id.
  ``subscribeNewBlock`` likewise, notifications ``{height, hash}``;
- a normalized tx (``getTransaction``, notifications, ``getAccountInfo`` with
  ``details: "txs"`` under ``transactions``) has ``vout[]`` with ``value`` a string of
  duffs (left out when 0: empty fields are omitted), ``addresses`` and ``isAddress``;
  ``confirmations`` (0 unconfirmed) decides confirmation: ``blockHeight`` is 0 in
  notifications and -1 in lookups while unconfirmed. It has no InstantSend/ChainLock
  flag: ``getTransactionSpecific`` relays dashd's own ``getrawtransaction`` object with
  ``instantlock``/``chainlock`` (parsed by ``wire/dashd_rpc.py``);
- ``getAccountInfo`` pages newest first, mempool first on page 1; a page past the end
  answers the closest page (the last one again), so ``AccountPager`` stops on what it
  has seen, never on an empty page.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from dashpay.domain.money import MAX_DUFFS
from dashpay.domain.observations import (
    SOURCE_REST,
    SOURCE_SOCKET,
    BlockObserved,
    SourceError,
    TxObserved,
    frozen_outputs,
)
from dashpay.wire.dashd_rpc import RpcMalformed, VerboseTx, parse_verbose_tx
from dashpay.wire.insight import ADDRESS, HEX64, MAX_OUTPUTS_PER_TX
from dashpay.wire.insight_rest import decode_json, show

# server/websocket.go maxWebsocketSubscribeAddresses (100 with newBlockTxs, not used).
MAX_SUBSCRIBE_ADDRESSES = 1000
# api.md: pageSize "default and maximum 1000".
MAX_PAGE_SIZE = 1000
# A page past this many pages is a server going in circles, not an address's history.
MAX_PAGES = 100_000
# A websocket message we parse: a page of 1,000 full txs is a few MB.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
_DUFFS = re.compile(r"0|[1-9][0-9]{0,15}")
_ID = re.compile(r"[0-9A-Za-z_.:-]{1,64}")


class BlockbookError(SourceError):
    """Blockbook did not give a usable answer."""


class BlockbookRejected(BlockbookError):
    """``data`` was ``{"error": {"message"}}``: the request was refused."""

    def __init__(self, request_id: str, message: str) -> None:
        super().__init__(f"Blockbook refused request {request_id}: {message}")
        self.request_id = request_id
        self.message = message


class BlockbookMalformed(BlockbookError, ValueError):
    """A message that does not have Blockbook's shape; the text names the field."""


# --- requests ---------------------------------------------------------------------------


class Requests:
    """Request texts with fresh string ids ("1", "2", ...) per connection."""

    __slots__ = ("_next",)

    def __init__(self) -> None:
        self._next = 0

    def build(self, method: str, params: dict[str, Any]) -> tuple[str, str]:
        self._next += 1
        request_id = str(self._next)
        text = json.dumps(
            {"id": request_id, "method": method, "params": params}, separators=(",", ":")
        )
        return request_id, text

    def subscribe_addresses(self, addresses: Sequence[str]) -> tuple[str, str]:
        if isinstance(addresses, str) or len(addresses) > MAX_SUBSCRIBE_ADDRESSES:
            raise ValueError(f"one subscription holds 1..{MAX_SUBSCRIBE_ADDRESSES} addresses")
        return self.build("subscribeAddresses", {"addresses": list(addresses)})

    def subscribe_new_block(self) -> tuple[str, str]:
        return self.build("subscribeNewBlock", {})

    def get_account_info(
        self, descriptor: str, page: int, page_size: int = MAX_PAGE_SIZE
    ) -> tuple[str, str]:
        """An address (or xpub descriptor) history page with full txs."""
        if not (1 <= page <= MAX_PAGES and 1 <= page_size <= MAX_PAGE_SIZE):
            raise ValueError("page from 1, page_size 1..1000")
        params = {"descriptor": descriptor, "details": "txs", "page": page, "pageSize": page_size}
        return self.build("getAccountInfo", params)

    def get_transaction(self, txid: str) -> tuple[str, str]:
        return self.build("getTransaction", {"txid": txid})

    def get_transaction_specific(self, txid: str) -> tuple[str, str]:
        return self.build("getTransactionSpecific", {"txid": txid})

    def get_info(self) -> tuple[str, str]:
        return self.build("getInfo", {})

    def ping(self) -> tuple[str, str]:
        return self.build("ping", {})


def split_subscriptions(
    addresses: Iterable[str], limit: int = MAX_SUBSCRIBE_ADDRESSES
) -> list[tuple[str, ...]]:
    """The watched set as subscriptions of at most ``limit`` addresses, one per
    connection, in the order given (repeats dropped): a new address joins the last
    subscription, so only that connection resubscribes (see ``changed_subscriptions``)."""
    if not 1 <= limit <= MAX_SUBSCRIBE_ADDRESSES:
        raise ValueError(f"limit is 1..{MAX_SUBSCRIBE_ADDRESSES}")
    unique = list(dict.fromkeys(addresses))
    return [tuple(unique[i : i + limit]) for i in range(0, len(unique), limit)]


def changed_subscriptions(
    old: Sequence[tuple[str, ...]], new: Sequence[tuple[str, ...]]
) -> list[int]:
    """Positions (connections) whose subscription must be sent again in full."""
    return [i for i, batch in enumerate(new) if i >= len(old) or old[i] != batch]


# --- messages ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Message:
    id: str
    data: Any


def parse_message(text: str | bytes) -> Message:
    """One websocket text message as ``{id, data}``."""
    if len(text) > MAX_MESSAGE_BYTES:
        raise BlockbookMalformed(f"a {len(text)}-byte message is over the limit")
    try:
        payload = decode_json(text.encode() if isinstance(text, str) else text)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise BlockbookMalformed("the message is not JSON") from None
    if not isinstance(payload, dict) or "data" not in payload:
        raise BlockbookMalformed("the message is not an {id, data} object")
    request_id = payload.get("id")
    if not isinstance(request_id, str) or not _ID.fullmatch(request_id):
        raise BlockbookMalformed(f"message id {show(request_id)} is not a request id")
    return Message(request_id, payload["data"])


def result(message: Message) -> Any:
    """The answer's data, or BlockbookRejected for an error object."""
    data = message.data
    if isinstance(data, dict) and "error" in data:
        error = data["error"]
        text = error.get("message") if isinstance(error, dict) else None
        raise BlockbookRejected(message.id, text[:200] if isinstance(text, str) else show(error))
    return data


def parse_subscribed(data: object) -> bool:
    """The answer to a subscribe request: ``{"subscribed": true}``."""
    if not isinstance(data, dict) or not isinstance(data.get("subscribed"), bool):
        raise BlockbookMalformed(f"subscription answer {show(data)} has no subscribed flag")
    return data["subscribed"]


def parse_pong(data: object) -> None:
    if data != {}:
        raise BlockbookMalformed(f"ping answer {show(data)} is not {{}}")


def _count(value: object, what: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 2**31:
        return value
    raise BlockbookMalformed(f"{what} {show(value)} is not a count")


def _duffs(value: object, what: str) -> int:
    if isinstance(value, str) and _DUFFS.fullmatch(value) and int(value) <= MAX_DUFFS:
        return int(value)
    raise BlockbookMalformed(f"{what} {show(value)} is not a string of duffs")


def parse_tx(item: object, *, source: str = SOURCE_REST) -> TxObserved:
    """A normalized Blockbook tx. ``instant_locked`` is False: this form never says
    (read ``getTransactionSpecific`` for the locks)."""
    if not isinstance(item, dict):
        raise BlockbookMalformed(f"tx is a {type(item).__name__}, not an object")
    txid = item.get("txid")
    if not isinstance(txid, str) or not HEX64.fullmatch(txid):
        raise BlockbookMalformed(f"txid {show(txid)} is not 64 hex digits")
    txid = txid.lower()
    vout = item.get("vout")
    if not isinstance(vout, list) or len(vout) > MAX_OUTPUTS_PER_TX:
        raise BlockbookMalformed(f"tx {txid}: vout is not a list of outputs")
    outputs: dict[str, int] = {}
    total = 0
    for index, out in enumerate(vout):
        where = f"tx {txid}: vout[{index}]"
        if not isinstance(out, dict):
            raise BlockbookMalformed(f"{where} is not an object")
        duffs = _duffs(out.get("value", "0"), f"{where}.value")
        total += duffs
        if total > MAX_DUFFS:
            raise BlockbookMalformed(f"tx {txid}: outputs add up to more than 21,000,000 DASH")
        addresses = out.get("addresses")
        if out.get("isAddress") is not True or addresses is None:
            continue  # OP_RETURN and other scripts that pay no address
        if not isinstance(addresses, list):
            raise BlockbookMalformed(f"{where}.addresses is not a list")
        if len(addresses) != 1:
            continue
        address = addresses[0]
        if not isinstance(address, str) or not ADDRESS.fullmatch(address):
            raise BlockbookMalformed(f"{where}.addresses {show(address)} is not an address")
        outputs[address] = outputs.get(address, 0) + duffs
    confirmations = _count(item.get("confirmations", 0), f"tx {txid}: confirmations")
    height = item.get("blockHeight", -1)
    if not isinstance(height, int) or isinstance(height, bool) or not -1 <= height <= 2**31:
        raise BlockbookMalformed(f"tx {txid}: blockHeight {show(height)} is not a height")
    if confirmations and height <= 0:
        raise BlockbookMalformed(f"tx {txid}: {confirmations} confirmations at height {height}")
    return TxObserved(
        txid=txid,
        outputs=frozen_outputs(outputs),
        instant_locked=False,
        block_height=height if confirmations else None,
        confirmations=confirmations,
        source=source,
    )


def parse_address_notification(data: object) -> tuple[str, TxObserved]:
    """A ``subscribeAddresses`` notification ``{address, tx}``: the watched address it
    was sent for, and the tx (as a push event: ``source`` socket)."""
    if not isinstance(data, dict) or set(data) != {"address", "tx"}:
        raise BlockbookMalformed(f"notification {show(data)} is not {{address, tx}}")
    address = data["address"]
    if not isinstance(address, str) or not ADDRESS.fullmatch(address):
        raise BlockbookMalformed(f"notification address {show(address)} is not an address")
    return address, parse_tx(data["tx"], source=SOURCE_SOCKET)


@dataclass(frozen=True, slots=True)
class NewBlock:
    height: int
    block_hash: str

    def observation(self) -> BlockObserved:
        return BlockObserved(block_hash=self.block_hash)


def parse_new_block(data: object) -> NewBlock:
    """A ``subscribeNewBlock`` notification ``{height, hash}`` (after a reorg the height
    may repeat or go down: each is still a new tip)."""
    if not isinstance(data, dict):
        raise BlockbookMalformed(f"new block {show(data)} is not an object")
    block_hash = data.get("hash")
    if not isinstance(block_hash, str) or not HEX64.fullmatch(block_hash):
        raise BlockbookMalformed(f"new block hash {show(block_hash)} is not 64 hex digits")
    return NewBlock(_count(data.get("height"), "new block height"), block_hash.lower())


def parse_tx_specific(data: object, network: str) -> VerboseTx:
    """``getTransactionSpecific``: dashd's verbose tx, with its lock flags."""
    try:
        return parse_verbose_tx(data, network, source=SOURCE_REST)
    except RpcMalformed as exc:
        raise BlockbookMalformed(f"getTransactionSpecific: {exc}") from None


# --- history paging ---------------------------------------------------------------------


@dataclass(slots=True)
class AccountPager:
    """Pages one address's history with ``getAccountInfo``.

    Blockbook answers a page past the end with the closest page, and new mempool txs
    push older ones down a page while we read, so the pager never trusts an empty
    page or the page count alone: it stops when the answer is not the page asked for,
    when it has read ``totalPages`` pages, or when a page brings no tx it has not seen.
    Usage: ``while (page := pager.next_page()) is not None: pager.feed(answer)``.
    """

    descriptor: str
    page_size: int = MAX_PAGE_SIZE
    seen: dict[str, TxObserved] = field(default_factory=dict)
    _page: int = 0
    done: bool = False

    def next_page(self) -> int | None:
        if self.done:
            return None
        self._page += 1
        return self._page

    def request(self, requests: Requests) -> tuple[str, str] | None:
        page = self.next_page()
        return (
            None
            if page is None
            else requests.get_account_info(self.descriptor, page, self.page_size)
        )

    def feed(self, data: object) -> list[TxObserved]:
        """One answer; returns the txs it brought that were not seen before."""
        if not isinstance(data, dict):
            raise BlockbookMalformed(f"account info {show(data)} is not an object")
        page = _count(data.get("page", 1), "account info page")
        total_pages = _count(data.get("totalPages", 0), "account info totalPages")
        txs = data.get("transactions", [])
        if not isinstance(txs, list) or len(txs) > MAX_PAGE_SIZE:
            raise BlockbookMalformed("account info transactions is not a page of txs")
        new = []
        for item in txs:
            tx = parse_tx(item, source=SOURCE_REST)
            if tx.txid not in self.seen:
                new.append(tx)
            self.seen[tx.txid] = tx
        if page != self._page or self._page >= min(total_pages, MAX_PAGES) or not new:
            self.done = True
        return new


def parse_info(data: object) -> int:
    """``getInfo``: the height of Blockbook's best block (``bestHeight``)."""
    if not isinstance(data, dict):
        raise BlockbookMalformed(f"info {show(data)} is not an object")
    return _count(data.get("bestHeight"), "info bestHeight")


# dashd's -5 text, relayed by getTransactionSpecific, and Blockbook's own for getTransaction.
_NOT_FOUND = re.compile(r"no such mempool or blockchain transaction|not found", re.IGNORECASE)


def is_not_found(error: BlockbookRejected) -> bool:
    """Whether a refused tx lookup means "no such transaction" (not a failure)."""
    return bool(_NOT_FOUND.search(error.message))
