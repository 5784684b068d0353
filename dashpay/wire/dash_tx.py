"""Raw Dash transactions and blocks, without I/O: bytes in, checked values out.

dashd's ZMQ topics (``rawtx``, ``rawtxlocksig``, ``rawblock``...) and its RPC's
non-verbose answers carry the Bitcoin serialization with Dash's DIP2 changes:

- the 32-bit version is split into an int16 ``version`` and a uint16 ``type``;
- a transaction with ``version >= 3`` and ``type != 0`` (a special transaction:
  ProRegTx, CbTx, quorum commitment, asset lock...) ends with ``extra_payload``, a
  compact-size length and that many bytes, after ``locktime``;
- there is no SegWit: no marker, flag or witness data.

The txid is the double SHA-256 of the whole serialization (payload included), shown
byte-reversed (a block's hash is X11 of its header: not computed here, see
``RawBlock``). Output scripts become addresses only for P2PKH and P2SH, with the
configured network's version bytes (``domain/wallet.py``); OP_RETURN, P2PK, bare
multisig and anything else pay no address and are reported with ``address=None``.

The bytes come from a socket: every length is checked against what is left before
anything is read or allocated, compact sizes must be canonical (as dashd requires),
counts must fit in the bytes that remain, amounts must be money, and a transaction must
end exactly where its serialization says. Anything else raises ``TxParseError`` naming
the field and offset, never ``IndexError`` or ``struct.error``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from dashpay.domain.money import MAX_DUFFS
from dashpay.domain.observations import SOURCE_SOCKET, TxObserved, frozen_outputs
from dashpay.domain.wallet import NETWORKS, P2PKH_VERSION, P2SH_VERSION, b58encode_check

# DIP0001 raised Dash's block size to 2 MB; no transaction, and no block, is larger.
MAX_BLOCK_BYTES = 2_000_000
MAX_TX_BYTES = MAX_BLOCK_BYTES
# Dash Core's MAX_TX_EXTRA_PAYLOAD (consensus: "bad-txns-payload-oversize").
MAX_EXTRA_PAYLOAD_BYTES = 10_000
# Smallest serialized input: 32 txid + 4 index + 1 script length + 4 sequence; smallest
# output: 8 value + 1 script length. A count that cannot fit in the bytes left is refused
# before the loop, so a hostile "0xffffffff inputs" costs nothing.
MIN_INPUT_BYTES = 41
MIN_OUTPUT_BYTES = 9
MIN_TX_BYTES = 4 + 1 + MIN_INPUT_BYTES + 1 + MIN_OUTPUT_BYTES + 4
BLOCK_HEADER_BYTES = 80
# The first version that may carry a special-transaction payload (DIP2).
SPECIAL_TX_VERSION = 3
# CbTx (DIP4): the coinbase of every block since DIP3, its payload starts with
# uint16 version + uint32 height.
TX_TYPE_COINBASE = 5

_HEX = re.compile(r"(?:[0-9a-fA-F]{2})*")

# Script templates (opcodes): OP_DUP OP_HASH160 <20> OP_EQUALVERIFY OP_CHECKSIG and
# OP_HASH160 <20> OP_EQUAL.
_P2PKH_HEAD, _P2PKH_TAIL = b"\x76\xa9\x14", b"\x88\xac"
_P2SH_HEAD, _P2SH_TAIL = b"\xa9\x14", b"\x87"


class TxParseError(ValueError):
    """Bytes that are not a Dash transaction (or block); the message names the field."""


@dataclass(frozen=True, slots=True)
class TxOutput:
    value: int  # duffs
    script: bytes
    address: str | None  # None: the script pays no P2PKH/P2SH address


@dataclass(frozen=True, slots=True)
class RawTx:
    txid: str  # 64 lowercase hex, display (RPC) byte order
    version: int
    tx_type: int  # 0 for a classical transaction
    input_count: int
    is_coinbase: bool
    outputs: tuple[TxOutput, ...]
    locktime: int
    extra_payload: bytes  # b"" unless a special transaction
    size: int  # bytes of the serialization

    def paid(self) -> dict[str, int]:
        """Duffs per address, summed over every output to it (outputs without an
        address are not payments to one and are left out, as Insight does)."""
        paid: dict[str, int] = {}
        for output in self.outputs:
            if output.address is not None:
                paid[output.address] = paid.get(output.address, 0) + output.value
        return paid

    def observed(
        self,
        *,
        instant_locked: bool,
        block_height: int | None = None,
        confirmations: int | None = None,
        source: str = SOURCE_SOCKET,
    ) -> TxObserved:
        return TxObserved(
            txid=self.txid,
            outputs=frozen_outputs(self.paid()),
            instant_locked=instant_locked,
            block_height=block_height,
            confirmations=confirmations,
            source=source,
        )

    def coinbase_height(self) -> int | None:
        """The block height a CbTx commits to, or None for any other transaction."""
        if self.tx_type != TX_TYPE_COINBASE or len(self.extra_payload) < 6:
            return None
        return int.from_bytes(self.extra_payload[2:6], "little")


@dataclass(frozen=True, slots=True)
class RawBlock:
    """A block's transactions. It has no ``block_hash``: Dash hashes headers with X11
    (not double SHA-256, which only txids use), and the stdlib has no X11; the hash comes
    from ``hashblock`` or the RPC instead."""

    previous_hash: str
    txs: tuple[RawTx, ...]
    height: int | None  # from the CbTx payload; None before DIP3 or without one
    size: int


def hash256(data: bytes | memoryview) -> bytes:
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


def display_hex(digest: bytes | memoryview) -> str:
    """A hash as dashd prints it: the bytes reversed."""
    return bytes(digest)[::-1].hex()


class Reader:
    """A cursor over untrusted bytes; every read checks what is left first."""

    __slots__ = ("_data", "pos")

    def __init__(self, data: bytes | memoryview) -> None:
        self._data = memoryview(data)
        self.pos = 0

    @property
    def remaining(self) -> int:
        return len(self._data) - self.pos

    def take(self, count: int, what: str) -> memoryview:
        if count > self.remaining:
            raise TxParseError(
                f"{what} needs {count} bytes at offset {self.pos}, only {self.remaining} left "
                "(truncated)"
            )
        chunk = self._data[self.pos : self.pos + count]
        self.pos += count
        return chunk

    def since(self, start: int) -> memoryview:
        """The bytes read from ``start`` to here (a tx's serialization, for its hash)."""
        return self._data[start : self.pos]

    def uint(self, size: int, what: str) -> int:
        return int.from_bytes(self.take(size, what), "little")

    def compact_size(self, what: str) -> int:
        """Bitcoin's variable-length integer, refusing non-canonical encodings (dashd's
        ReadCompactSize does too, so such bytes never came from a real node)."""
        first = self.uint(1, what)
        if first < 0xFD:
            return first
        size, floor = {0xFD: (2, 0xFD), 0xFE: (4, 0x10000), 0xFF: (8, 0x100000000)}[first]
        value = self.uint(size, what)
        if value < floor:
            raise TxParseError(f"{what} at offset {self.pos - size - 1} is not canonically encoded")
        return value

    def count(self, what: str, min_item_bytes: int) -> int:
        """A compact-size item count that must fit in the bytes that are left."""
        start = self.pos
        value = self.compact_size(what)
        if value * min_item_bytes > self.remaining:
            raise TxParseError(
                f"{what} {value} at offset {start} cannot fit in the {self.remaining} bytes left"
            )
        return value

    def var_bytes(self, what: str, limit: int) -> memoryview:
        start = self.pos
        size = self.compact_size(f"{what} length")
        if size > limit:
            raise TxParseError(f"{what} at offset {start} is {size} bytes, over the {limit} limit")
        return self.take(size, what)


def script_address(script: bytes | memoryview, network: str) -> str | None:
    """The P2PKH/P2SH address ``script`` pays on ``network``; None for other scripts."""
    script = bytes(script)
    if len(script) == 25 and script[:3] == _P2PKH_HEAD and script[23:] == _P2PKH_TAIL:
        return b58encode_check(bytes([P2PKH_VERSION[network]]) + script[3:23])
    if len(script) == 23 and script[:2] == _P2SH_HEAD and script[22:] == _P2SH_TAIL:
        return b58encode_check(bytes([P2SH_VERSION[network]]) + script[2:22])
    return None


def _check_network(network: str) -> None:
    if network not in NETWORKS:
        raise ValueError(f"network must be one of {', '.join(NETWORKS)}, got {network!r}")


def read_tx(reader: Reader, network: str) -> RawTx:
    """One transaction from ``reader``'s position; it may be followed by other data (the
    next tx of a block, the InstantSend lock of ``rawtxlocksig``)."""
    start = reader.pos
    version_field = reader.uint(4, "version")
    version = version_field & 0xFFFF
    version = version - 0x10000 if version >= 0x8000 else version  # int16
    tx_type = version_field >> 16
    special = version >= SPECIAL_TX_VERSION and tx_type != 0
    if not special:
        tx_type = 0

    input_count = reader.count("input count", MIN_INPUT_BYTES)
    if input_count == 0:
        raise TxParseError("the transaction has no inputs (dashd refuses it: bad-txns-vin-empty)")
    is_coinbase = False
    for index in range(input_count):
        prevout = reader.take(36, f"input {index} outpoint")
        if input_count == 1 and prevout[:32] == bytes(32) and prevout[32:] == b"\xff" * 4:
            is_coinbase = True
        reader.var_bytes(f"input {index} script", MAX_TX_BYTES)
        reader.take(4, f"input {index} sequence")

    output_count = reader.count("output count", MIN_OUTPUT_BYTES)
    if output_count == 0:
        raise TxParseError("the transaction has no outputs (dashd refuses it: bad-txns-vout-empty)")
    outputs: list[TxOutput] = []
    total = 0
    for index in range(output_count):
        value = reader.uint(8, f"output {index} value")
        if value >= 1 << 63:
            raise TxParseError(f"output {index} value is negative")
        if value > MAX_DUFFS:
            raise TxParseError(f"output {index} value {value} duffs is over 21,000,000 DASH")
        total += value
        if total > MAX_DUFFS:
            raise TxParseError(f"outputs add up to {total} duffs, over 21,000,000 DASH")
        script = bytes(reader.var_bytes(f"output {index} script", MAX_TX_BYTES))
        outputs.append(TxOutput(value, script, script_address(script, network)))

    locktime = reader.uint(4, "locktime")
    payload = b""
    if special:
        payload = bytes(reader.var_bytes("extra payload", MAX_EXTRA_PAYLOAD_BYTES))
    size = reader.pos - start
    if size > MAX_TX_BYTES:
        raise TxParseError(f"the transaction is {size} bytes, over the {MAX_TX_BYTES} limit")
    return RawTx(
        txid=display_hex(hash256(reader.since(start))),
        version=version,
        tx_type=tx_type,
        input_count=input_count,
        is_coinbase=is_coinbase,
        outputs=tuple(outputs),
        locktime=locktime,
        extra_payload=payload,
        size=size,
    )


def parse_tx(data: bytes | memoryview, network: str) -> RawTx:
    """Exactly one transaction: trailing bytes are an error."""
    _check_network(network)
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TxParseError(f"a raw transaction is bytes, not {type(data).__name__}")
    if len(data) > MAX_TX_BYTES:
        raise TxParseError(f"{len(data)} bytes is over the {MAX_TX_BYTES}-byte limit of a tx")
    reader = Reader(data)
    tx = read_tx(reader, network)
    if reader.remaining:
        raise TxParseError(
            f"{reader.remaining} trailing bytes after the transaction at offset {reader.pos}"
        )
    return tx


def parse_tx_hex(text: object, network: str) -> RawTx:
    """A transaction as dashd's RPC shows it (``hex``, ``getrawtransaction txid false``)."""
    if not isinstance(text, str):
        raise TxParseError(f"raw transaction hex is a {type(text).__name__}, not text")
    if len(text) > 2 * MAX_TX_BYTES:
        raise TxParseError(f"raw transaction hex is {len(text)} characters, over the limit")
    if not _HEX.fullmatch(text):
        raise TxParseError("raw transaction hex has a non-hex character or an odd length")
    return parse_tx(bytes.fromhex(text), network)


def read_block(reader: Reader, network: str) -> RawBlock:
    """A serialized block (80-byte header, tx count, txs) from ``reader``'s position."""
    start = reader.pos
    header = reader.take(BLOCK_HEADER_BYTES, "block header")
    previous = display_hex(header[4:36])
    tx_count = reader.count("block tx count", MIN_TX_BYTES)
    if tx_count == 0:
        raise TxParseError("the block has no transactions (not even a coinbase)")
    txs = tuple(read_tx(reader, network) for _ in range(tx_count))
    size = reader.pos - start
    if size > MAX_BLOCK_BYTES:
        raise TxParseError(f"the block is {size} bytes, over the {MAX_BLOCK_BYTES} limit")
    if not txs[0].is_coinbase:
        raise TxParseError("the block's first transaction is not a coinbase")
    return RawBlock(
        previous_hash=previous,
        txs=txs,
        height=txs[0].coinbase_height(),
        size=size,
    )


def parse_block(data: bytes | memoryview, network: str) -> RawBlock:
    """Exactly one serialized block: trailing bytes are an error."""
    _check_network(network)
    if len(data) > MAX_BLOCK_BYTES:
        raise TxParseError(f"{len(data)} bytes is over the {MAX_BLOCK_BYTES}-byte block limit")
    reader = Reader(data)
    block = read_block(reader, network)
    if reader.remaining:
        raise TxParseError(f"{reader.remaining} trailing bytes after the block")
    return block
