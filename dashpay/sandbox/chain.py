"""The sandbox's simulated Dash chain: a mempool, blocks, InstantSend locks and ChainLocks,
rendered exactly as an Insight server renders them.

Why a model of its own instead of canned replies: the daemon must be tested against the
*behaviour* of Insight, not a snapshot of it. A payment enters the mempool, may be
InstantSend-locked, is mined, gains confirmations and is ChainLocked, or is dropped as a
double spend; address histories page mempool-first; amounts come as floats in one field
and 8-decimal strings in the next. This module keeps that state and produces the JSON of
``docs/insight-protocol.md`` §2-§3 (shapes verified against insight-api 3.1.2 on
dashcore-node 6.2), so ``server.py`` only routes and frames.

Pure and synchronous on purpose (no I/O, no trio): the unit tests drive it with a fake
clock and a seed, and ``network.py`` adds the timing and the event fan-out.

Traps reproduced deliberately, because a real server has them:
- an OP_RETURN output (``pay(..., extra_null_data=True)``) has no address: it is skipped in
  the ``vout`` map of ``tx``/``txlock`` events (array index != output index) and appears
  in REST ``vout`` without ``addresses``/``type``;
- a mempool tx's REST ``time`` is the server's current time, changing on each call;
- REST ``txlock`` is ``instantlock || chainlock``: every tx at or below the best ChainLock
  reads true, coinbase included;
- address history windows wider than 50 are refused with dashcore-node's 503 message,
  ``from >= to`` with its "Invalid state" message; the order within one block differs
  between one address and several (dashd's index order vs. a (height, txid) set).

Not modelled: REST caching until the next block (protocol §3: a real ``/tx`` keeps
``txlock:false`` after the lock until a block, and serves a dropped tx until a block),
reorgs, spending (the sandbox's money comes from a fake funding input and outputs are
never spent), rate limiting.
"""

from __future__ import annotations

import functools
import hashlib
import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from dashpay.domain.money import DUFFS_PER_DASH, MAX_DUFFS
from dashpay.domain.wallet import b58decode_check, b58encode_check

NETWORK = "testnet"

# --- limits and constants, each with its reason -----------------------------------------

# dashcore-node's maxTransactionHistory: POST /addrs/txs windows wider than this are a 503.
MAX_HISTORY_WINDOW = 50
# dashcore-node's maxTxids: the `transactions` list of GET /addr/:addr.
MAX_TXIDS_WINDOW = 1000
# dashcore-node's maxAddressesQuery: more addresses in one history query are refused.
MAX_ADDRESSES_QUERY = 10_000
# Outputs per sandbox payment. A standard Dash tx is at most 100 kB (~2,900 P2PKH outputs);
# 1000 keeps every REST answer about one sandbox tx small while covering any batch payout
# a merchant would test.
MAX_OUTPUTS = 1000
# Blocks per mine() call, like `dashpay sandbox mine --blocks` (each block is one event).
MAX_MINE = 1000
# Dash Core's default minimum relay fee is 1000 duffs/kB: 1 duff per byte.
FEE_DUFFS_PER_BYTE = 1
# Sizes of a P2PKH transaction's parts, in bytes (version+type, locktime, counts; one
# signed P2PKH input; one P2PKH/P2SH output), to give sandbox txs a realistic size and fee.
TX_OVERHEAD_BYTES = 10
P2PKH_INPUT_BYTES = 148
OUTPUT_BYTES = 34
_NULL_DATA = b"dashpay sandbox"  # the OP_RETURN payload of extra_null_data
NULL_DATA_OUTPUT_BYTES = 8 + 1 + 2 + len(_NULL_DATA)  # value, script length, OP_RETURN push
# A coinbase: overhead, the coinbase input (outpoint, sequence, short script), two outputs
# and the 70-byte CbTx payload with its length byte.
COINBASE_BYTES = 10 + 41 + 24 + 2 * 34 + 71
BLOCK_HEADER_BYTES = 80
# Block subsidy paid by each sandbox coinbase (testnet's is in this range), split between
# the miner and a masternode as Dash coinbases are.
BLOCK_SUBSIDY_DUFFS = 288_000_000
MASTERNODE_SHARE_DUFFS = 172_800_000
# Ordinary txs: version 2, final sequence (so `isRBF` is false), as Dash Core's wallet
# sends them. Coinbases: version 3 type 5 (CbTx) with a 70-byte version-2 payload, like
# the real coinbase in the fixtures.
TX_VERSION = 2
SEQUENCE_FINAL = 0xFFFFFFFF
COINBASE_VERSION = 3
COINBASE_TYPE = 5
CBTX_VERSION = 2
# Testnet's minimum difficulty (bits 1e0ffff0 = 2**-12) and the work each such block adds.
BLOCK_VERSION = 0x20000000
BLOCK_BITS = "1e0ffff0"
BLOCK_DIFFICULTY = 0.000244140625
BLOCK_WORK = 0x100010
# What getInfo reports: a recent Dash Core, its protocol, insight-api 3.1.2.
CORE_VERSION = 200101
PROTOCOL_VERSION = 70231
INSIGHT_VERSION = "3.1.2"
RELAY_FEE_DASH = 0.00001
# dashd's RPC error codes, as insight-api passes them on in `400 "<msg>. Code:<n>"`.
RPC_INVALID_PARAMETER = -8
RPC_INVALID_ADDRESS_OR_KEY = -5
RPC_INTERNAL_ERROR = -32603
INSIGHT_VALIDATION_CODE = 1  # insight-api's own checks ("Invalid address: ...")

# Testnet address version bytes (docs/dash-keys.md): P2PKH starts with y, P2SH with 8/9.
_P2PKH_VERSION = 0x8C
_P2SH_VERSION = 0x13
_COINBASE_TAG = b"/dashpay-sandbox/"

_HEX64 = re.compile(r"[0-9a-f]{64}")


class SandboxError(ValueError):
    """A request the sandbox refuses; the message says what is wrong and what to do.

    ``insight_code`` is set when a real Insight server answers the same request with
    ``400 "<message>. Code:<n>"``; None means it answers ``503 <message>``.
    """

    def __init__(self, message: str, *, insight_code: int | None = None) -> None:
        super().__init__(message)
        self.insight_code = insight_code


# --- values ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SandboxOutput:
    address: str | None  # None: no address (OP_RETURN)
    duffs: int
    script_hex: str
    script_asm: str
    script_type: str | None  # "pubkeyhash" | "scripthash" | None


@dataclass(frozen=True, slots=True)
class SandboxTx:
    """One transaction's immutable content; its state (mempool, locked, mined, dropped)
    lives in the chain."""

    txid: str
    seq: int  # arrival order on this chain
    outputs: tuple[SandboxOutput, ...]
    input_duffs: int  # 0 for a coinbase
    fee: int
    size: int
    first_seen: int  # unix seconds it entered the mempool (or was mined, for a coinbase)
    prev_txid: str | None  # the fake funding input's outpoint; None for a coinbase
    coinbase_height: int | None = None

    @property
    def is_coinbase(self) -> bool:
        return self.coinbase_height is not None

    @property
    def value_out(self) -> int:
        return sum(o.duffs for o in self.outputs)


@dataclass(frozen=True, slots=True)
class _Block:
    hash: str
    height: int
    prev_hash: str | None
    time: int
    txids: tuple[str, ...]
    merkleroot: str
    nonce: int
    size: int
    reward: int


# --- amounts as insight-api renders them ------------------------------------------------


def js_dash_number(duffs: int) -> int | float:
    """``duffs / 1e8`` as JavaScript's JSON.stringify prints it: a float in DASH, or an
    integer when whole (JS has one number type, so ``0`` and ``1`` have no ``.0``).

    Python's int/int true division is correctly rounded like JS's, so the value is the
    same double a real server sends. Only for display fields (``valueOut``, ``value``,
    ``fees``, ``balance``...): money stays integer duffs everywhere else.
    """
    if duffs % DUFFS_PER_DASH == 0:
        return duffs // DUFFS_PER_DASH
    return duffs / DUFFS_PER_DASH


def dash_string(duffs: int) -> str:
    """``(duffs / 1e8).toFixed(8)`` computed exactly from the integer: ``"0.21247964"``."""
    sign = "-" if duffs < 0 else ""
    whole, frac = divmod(abs(duffs), DUFFS_PER_DASH)
    return f"{sign}{whole}.{frac:08d}"


# --- addresses and scripts --------------------------------------------------------------


def _sha256d(data: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


def _b58_payload(address: str) -> bytes:
    """Version byte + hash160 of an address already checked by validate_address."""
    return b58decode_check(address)


@dataclass(frozen=True, slots=True)
class _Script:
    address: str
    hex: str
    asm: str
    type: str


@functools.lru_cache(maxsize=65536)
def _script_for(address: str) -> _Script:
    """The output script paying ``address`` (validated for testnet; AddressError if not).

    Cached: benchmarks and merchants pay the same addresses over and over, and base58
    decoding is the costliest step of a sandbox payment.
    """
    from dashpay.domain.wallet import validate_address

    text = validate_address(address, NETWORK)
    payload = _b58_payload(text)
    h160 = payload[1:].hex()
    if payload[0] == _P2SH_VERSION:
        return _Script(text, f"a914{h160}87", f"OP_HASH160 20 0x{h160} OP_EQUAL", "scripthash")
    return _Script(
        text,
        f"76a914{h160}88ac",
        f"OP_DUP OP_HASH160 20 0x{h160} OP_EQUALVERIFY OP_CHECKSIG",
        "pubkeyhash",
    )


def _pay_to(address: str, duffs: int) -> SandboxOutput:
    script = _script_for(address)
    return SandboxOutput(script.address, duffs, script.hex, script.asm, script.type)


def _null_data_output() -> SandboxOutput:
    data = _NULL_DATA.hex()
    size = len(_NULL_DATA)
    return SandboxOutput(None, 0, f"6a{size:02x}{data}", f"OP_RETURN {size} 0x{data}", None)


def _script_num_push(value: int) -> bytes:
    """A minimal CScriptNum push (BIP34 puts the height first in a coinbase script)."""
    if value == 0:
        return b"\x00"
    raw = value.to_bytes((value.bit_length() + 8) // 8, "little")
    return bytes([len(raw)]) + raw


def _merkle_root(txids: Sequence[str]) -> str:
    level = [bytes.fromhex(t)[::-1] for t in txids]
    while len(level) > 1:
        if len(level) % 2:
            level.append(level[-1])
        level = [_sha256d(level[i] + level[i + 1]) for i in range(0, len(level), 2)]
    return level[0][::-1].hex()


def _derived_hex(seed: str, label: str, size: int) -> str:
    """Deterministic filler bytes (signatures, payload roots) derived from a txid."""
    out = b""
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{label}:{counter}:{seed}".encode()).digest()
        counter += 1
    return out[:size].hex()


def _normalize_txid(txid: object) -> str:
    if not isinstance(txid, str):
        raise SandboxError(f"txid must be a string of 64 hex digits, got {type(txid).__name__}")
    text = txid.strip().lower()
    if not _HEX64.fullmatch(text):
        shown = repr(txid) if len(txid) <= 80 else repr(txid[:77] + "...")
        raise SandboxError(f"txid {shown} is not 64 hex digits; copy it from `dashpay sandbox pay`")
    return text


# --- the chain ---------------------------------------------------------------------------


class SandboxChain:
    """An in-memory testnet: a genesis block at height 0, then whatever ``pay``, ``lock``,
    ``mine`` and ``drop`` make of it. Not thread-safe; one trio task drives it at a time."""

    network = NETWORK

    def __init__(self, *, clock: Callable[[], float] = time.time, seed: int | None = None) -> None:
        self._start_empty(clock, random.Random(seed))
        # Stand-ins for the outside world: the wallet funding payments, the miner and the
        # masternode paid by coinbases, and the key that "signs" the funding inputs.
        self.faucet_address = self._random_address()
        self.miner_address = self._random_address()
        self.masternode_address = self._random_address()
        self._faucet_pubkey = "02" + self._random_hex(32)
        self._append_block([])

    def _start_empty(self, clock: Callable[[], float], rng: random.Random) -> None:
        self._clock = clock
        self._rng = rng
        self._txs: dict[str, SandboxTx] = {}
        self._mempool: dict[str, None] = {}  # insertion-ordered set of mempool txids
        self._tx_block: dict[str, tuple[int, int]] = {}  # txid -> (height, position)
        self._locked: set[str] = set()
        self._dropped: set[str] = set()
        self._by_address: dict[str, list[str]] = {}
        self._blocks: list[_Block] = []
        self._block_by_hash: dict[str, _Block] = {}
        self._chainlock: _Block | None = None
        self._seq = 0

    # -- state

    @property
    def height(self) -> int:
        return len(self._blocks) - 1

    @property
    def tip_hash(self) -> str:
        return self._blocks[-1].hash

    @property
    def best_chainlock(self) -> tuple[str, int] | None:
        """(block hash, height) of the best ChainLock, or None before the first mine()."""
        lock = self._chainlock
        return None if lock is None else (lock.hash, lock.height)

    @property
    def payment_count(self) -> int:
        """Payments on the chain, in the mempool or mined (every tx but the coinbases)."""
        return len(self._txs) - len(self._blocks)

    def get_tx(self, txid: str) -> SandboxTx | None:
        """A known, not dropped tx (mempool or mined), or None."""
        return self._txs.get(txid)

    def in_mempool(self, txid: str) -> bool:
        return txid in self._mempool

    def is_locked(self, txid: str) -> bool:
        """InstantSend-locked (a mined tx is final through its ChainLock instead)."""
        return txid in self._locked

    def mempool_txids(self) -> list[str]:
        return list(self._mempool)

    def confirmations(self, txid: str) -> int:
        placed = self._tx_block.get(txid)
        return 0 if placed is None else self.height - placed[0] + 1

    # -- actions

    def pay(
        self, outputs: Sequence[tuple[str, int]], *, extra_null_data: bool = False
    ) -> SandboxTx:
        """Put a tx paying ``outputs`` ((address, duffs) pairs; an address may repeat) into
        the mempool, funded by a fake input. Raises SandboxError for unusable outputs."""
        built = self._check_outputs(outputs)
        if extra_null_data:
            built.append(_null_data_output())
        size = TX_OVERHEAD_BYTES + P2PKH_INPUT_BYTES + OUTPUT_BYTES * len(built)
        if extra_null_data:
            size += NULL_DATA_OUTPUT_BYTES - OUTPUT_BYTES
        fee = size * FEE_DUFFS_PER_BYTE
        total = sum(o.duffs for o in built)
        tx = SandboxTx(
            txid=self._new_txid(),
            seq=self._next_seq(),
            outputs=tuple(built),
            input_duffs=total + fee,
            fee=fee,
            size=size,
            first_seen=int(self._clock()),
            prev_txid=self._random_hex(32),
        )
        self._txs[tx.txid] = tx
        self._mempool[tx.txid] = None
        self._index(tx)
        return tx

    def lock(self, txid: str) -> SandboxTx:
        """InstantSend-lock a mempool tx (idempotent for a tx already locked)."""
        txid = _normalize_txid(txid)
        tx = self._require(txid)
        if txid not in self._mempool:
            height = self._tx_block[txid][0]
            raise SandboxError(
                f"tx {txid} is already in block {height} and final by its ChainLock; "
                "InstantSend locks only apply to mempool transactions"
            )
        self._locked.add(txid)
        return tx

    def mine(self, blocks: int = 1) -> list[str]:
        """Mine ``blocks`` blocks: the first takes the whole mempool. The new tip is
        ChainLocked (so every block is). Returns the new block hashes, oldest first."""
        if isinstance(blocks, bool) or not isinstance(blocks, int) or not 1 <= blocks <= MAX_MINE:
            raise SandboxError(
                f"blocks must be a whole number from 1 to {MAX_MINE}, got {blocks!r}"
            )
        hashes = []
        for _ in range(blocks):
            txids = list(self._mempool)
            self._mempool.clear()
            hashes.append(self._append_block(txids).hash)
        self._chainlock = self._blocks[-1]
        return hashes

    def drop(self, txid: str) -> SandboxTx:
        """Remove a mempool tx, as a double spend or an eviction would. Refused for a mined
        tx and for an InstantSend-locked one (the network rejects conflicts of a lock)."""
        txid = _normalize_txid(txid)
        tx = self._require(txid)
        if txid not in self._mempool:
            height = self._tx_block[txid][0]
            raise SandboxError(
                f"tx {txid} is already in block {height} ({self.confirmations(txid)} "
                "confirmations); only mempool transactions can be dropped"
            )
        if txid in self._locked:
            raise SandboxError(
                f"tx {txid} is InstantSend-locked, and the network rejects any double spend "
                "of a locked tx; to test a dropped payment, pay without a lock "
                "(`dashpay sandbox pay --no-lock`) and drop it before it is mined"
            )
        del self._mempool[txid]
        del self._txs[txid]
        self._dropped.add(txid)
        for address in {o.address for o in tx.outputs if o.address is not None}:
            txids = self._by_address[address]
            txids.remove(txid)
            if not txids:  # _index relies on every list it finds being non-empty
                del self._by_address[address]
        return tx

    # -- saving and restoring (sandbox/state.py keeps the snapshot in a file)

    def snapshot(self) -> dict[str, Any]:
        """Everything the chain holds, as JSON values. ``restore(snapshot())`` continues
        exactly where this chain is, its random generator included; what follows from
        the rest (address histories, block positions, sizes, merkle roots) is rebuilt.

        Compact on purpose, one list per tx and block (a sandbox that ran for a while
        holds thousands and the file is written after every change): a tx is ``[txid,
        seq, [[address or null, duffs], ...], input_duffs, fee, size, first_seen,
        prev_txid, coinbase_height]``, a block ``[hash, time, nonce, [txid, ...]]``."""
        version, internal, gauss = self._rng.getstate()
        lock = self._chainlock
        return {
            "network": NETWORK,
            "seq": self._seq,
            "rng": [version, list(internal), gauss],
            "faucet_address": self.faucet_address,
            "faucet_pubkey": self._faucet_pubkey,
            "miner_address": self.miner_address,
            "masternode_address": self.masternode_address,
            "txs": [
                [
                    tx.txid,
                    tx.seq,
                    [[o.address, o.duffs] for o in tx.outputs],
                    tx.input_duffs,
                    tx.fee,
                    tx.size,
                    tx.first_seen,
                    tx.prev_txid,
                    tx.coinbase_height,
                ]
                for tx in self._txs.values()  # creation (seq) order
            ],
            "blocks": [[b.hash, b.time, b.nonce, list(b.txids)] for b in self._blocks],
            "mempool": list(self._mempool),
            "locked": sorted(self._locked),
            "dropped": sorted(self._dropped),
            "chainlock": None if lock is None else lock.height,
        }

    @classmethod
    def restore(cls, state: Any, *, clock: Callable[[], float] = time.time) -> SandboxChain:
        """The chain a ``snapshot`` describes. A snapshot that does not describe one
        consistent chain raises ValueError (TypeError, KeyError...) instead of loading
        half of it: every tx is in a block or the mempool, blocks hold known txs once
        each and start with their coinbase, locks name known txs."""
        if not isinstance(state, dict) or state.get("network") != NETWORK:
            raise ValueError(f"not a snapshot of a {NETWORK} sandbox chain")
        version, internal, gauss = state["rng"]
        rng = random.Random()
        rng.setstate((version, tuple(_whole(n, "rng") for n in internal), gauss))
        chain = cls.__new__(cls)
        chain._start_empty(clock, rng)
        chain._seq = _whole(state["seq"], "seq")
        chain.faucet_address = _script_for(state["faucet_address"]).address
        chain.miner_address = _script_for(state["miner_address"]).address
        chain.masternode_address = _script_for(state["masternode_address"]).address
        chain._faucet_pubkey = _hex_text(state["faucet_pubkey"], 33, "faucet_pubkey")
        last_seq = 0
        for item in state["txs"]:
            tx = _restored_tx(*item)
            if tx.txid in chain._txs or not last_seq < tx.seq <= chain._seq:
                raise ValueError(f"tx {tx.txid}: repeated or out of order")
            last_seq = tx.seq
            chain._txs[tx.txid] = tx
            chain._index(tx)
        for block_hash, when, nonce, txids in state["blocks"]:
            height = len(chain._blocks)
            txids = [_normalize_txid(t) for t in txids]
            coinbase = chain._txs.get(txids[0]) if txids else None
            if coinbase is None or coinbase.coinbase_height != height:
                raise ValueError(f"block {height} does not start with its coinbase")
            if any(t not in chain._txs or t in chain._tx_block for t in txids) or any(
                chain._txs[t].is_coinbase for t in txids[1:]
            ):
                raise ValueError(f"block {height} holds an unknown, mined or coinbase tx")
            chain._add_block(
                _hex_text(block_hash, 32, "block hash"),
                _whole(when, "block time"),
                _whole(nonce, "nonce"),
                txids,
            )
        if not chain._blocks:
            raise ValueError("no genesis block")
        for txid in state["mempool"]:
            tx = chain._txs.get(txid)
            if tx is None or tx.is_coinbase or txid in chain._tx_block or txid in chain._mempool:
                raise ValueError(f"mempool tx {txid} is unknown, mined or listed twice")
            chain._mempool[txid] = None
        if len(chain._tx_block) + len(chain._mempool) != len(chain._txs):
            raise ValueError("a tx is neither in a block nor in the mempool")
        chain._locked = {_normalize_txid(t) for t in state["locked"]}
        chain._dropped = {_normalize_txid(t) for t in state["dropped"]}
        if not chain._locked <= chain._txs.keys() or chain._dropped & chain._txs.keys():
            raise ValueError("a locked tx is unknown, or a dropped one still exists")
        lock = state["chainlock"]
        if lock is not None:
            if not 0 <= _whole(lock, "chainlock") <= chain.height:
                raise ValueError(f"chainlock {lock} is above the tip {chain.height}")
            chain._chainlock = chain._blocks[lock]
        return chain

    # -- Insight JSON

    def tx_event_payload(self, tx: SandboxTx, *, txlock: bool) -> dict[str, Any]:
        """The payload of a ``tx`` (txlock False) or ``txlock`` socket event (protocol §2):
        outputs without an address are skipped, so the ``vout`` index is not ``n``."""
        return {
            "txid": tx.txid,
            "valueOut": js_dash_number(tx.value_out),
            "vout": [{o.address: o.duffs} for o in tx.outputs if o.address is not None],
            "isRBF": False,
            "txlock": txlock,
        }

    def tx_json(
        self,
        txid: object,
        *,
        no_asm: bool = False,
        no_script_sig: bool = False,
        no_spent: bool = False,
    ) -> dict[str, Any] | None:
        """``GET /tx/:txid``, or None when unknown or dropped (a 404). A malformed txid
        raises SandboxError with dashd's -8 message, as the real server does (400)."""
        if not isinstance(txid, str):
            return None
        wanted = txid.lower()
        if len(wanted) != 64:
            raise SandboxError(
                f"parameter 1 must be of length 64 (not {len(txid)}, for '{txid[:100]}')",
                insight_code=RPC_INVALID_PARAMETER,
            )
        if not _HEX64.fullmatch(wanted):
            raise SandboxError(
                f"parameter 1 must be hexadecimal string (not '{txid}')",
                insight_code=RPC_INVALID_PARAMETER,
            )
        tx = self._txs.get(wanted)
        if tx is None:
            return None
        return self._render_tx(tx, no_asm=no_asm, no_script_sig=no_script_sig, no_spent=no_spent)

    def block_json(self, block_hash: object) -> dict[str, Any] | None:
        """``GET /block/:hash``, or None (404) when unknown or not a block hash."""
        if not isinstance(block_hash, str):
            return None
        block = self._block_by_hash.get(block_hash.lower())
        if block is None:
            return None
        out: dict[str, Any] = {
            "hash": block.hash,
            "size": block.size,
            "height": block.height,
            "version": BLOCK_VERSION,
            "merkleroot": block.merkleroot,
            "tx": list(block.txids),
            "time": block.time,
            "nonce": block.nonce,
            "bits": BLOCK_BITS,
            "difficulty": BLOCK_DIFFICULTY,
            "chainwork": f"{(block.height + 1) * BLOCK_WORK:064x}",
            "confirmations": self.height - block.height + 1,
        }
        if block.prev_hash is not None:
            out["previousblockhash"] = block.prev_hash
        if block.height < self.height:
            out["nextblockhash"] = self._blocks[block.height + 1].hash
        out["reward"] = js_dash_number(block.reward)
        out["isMainChain"] = True
        out["poolInfo"] = {}
        return out

    def block_hash_at(self, height: int) -> str | None:
        if (
            isinstance(height, bool)
            or not isinstance(height, int)
            or not 0 <= height <= self.height
        ):
            return None
        return self._blocks[height].hash

    def address_history_json(
        self,
        addrs: list[str],
        from_: int,
        to: int,
        *,
        no_asm: bool = False,
        no_script_sig: bool = False,
        no_spent: bool = False,
    ) -> dict[str, Any]:
        """``POST /addrs/txs``: ``{totalItems, from, to, items}``, mempool first (newest
        first), then confirmed (highest first). ``from_``/``to`` are the integers insight
        parsed (defaults 0 and from+10 are the caller's job, see server.py)."""
        addresses = self._check_rest_addresses(addrs)
        if len(addresses) > MAX_ADDRESSES_QUERY:
            raise SandboxError(f"Maximum number of addresses ({MAX_ADDRESSES_QUERY}) exceeded")
        if to - from_ > MAX_HISTORY_WINDOW:
            raise SandboxError(
                f'"from" ({from_}) and "to" ({to}) range should be less than or equal to '
                f"{MAX_HISTORY_WINDOW}"
            )
        self._check_network(addresses)
        txids = self._history_txids(addresses)
        page = _paginate(txids, from_, to)
        opts = {"no_asm": no_asm, "no_script_sig": no_script_sig, "no_spent": no_spent}
        return {
            "totalItems": len(txids),
            "from": from_,
            "to": min(to, len(txids)),
            "items": [self._render_tx(self._txs[t], **opts) for t in page],
        }

    def addr_json(
        self,
        addr: str,
        *,
        no_tx_list: bool = False,
        from_: int | None = None,
        to: int | None = None,
    ) -> dict[str, Any]:
        """``GET /addr/:addr``: confirmed balance/received (outputs are never spent here),
        the signed mempool delta, and txids mempool-first (``from_``/``to`` page them)."""
        (address,) = self._check_rest_addresses([addr])
        self._check_network([address])
        mempool, confirmed = self._split_history([address])
        received = sum(self._paid_to(t, address) for t in confirmed)
        pending = sum(self._paid_to(t, address) for t in mempool)
        out: dict[str, Any] = {
            "addrStr": address,
            "balance": js_dash_number(received),
            "balanceSat": received,
            "totalReceived": js_dash_number(received),
            "totalReceivedSat": received,
            "totalSent": 0,
            "totalSentSat": 0,
            "unconfirmedBalance": js_dash_number(pending),
            "unconfirmedBalanceSat": pending,
            "unconfirmedTxApperances": len(mempool),
            "unconfirmedAppearances": len(mempool),
            "txApperances": len(confirmed),
            "txAppearances": len(confirmed),
        }
        if not no_tx_list:
            start = 0 if from_ is None else from_
            end = MAX_TXIDS_WINDOW if to is None else to
            if end - start > MAX_TXIDS_WINDOW:
                raise SandboxError(
                    f'"from" ({start}) and "to" ({end}) range should be less than or equal '
                    f"to {MAX_TXIDS_WINDOW}"
                )
            out["transactions"] = _paginate(mempool + confirmed, start, end)
        return out

    def utxo_json(self, addrs: list[str], *, with_height: bool = True) -> list[dict[str, Any]]:
        """``/addrs/:addrs/utxo`` (``with_height``) or ``/addr/:addr/utxo``: mempool outputs
        first (newest first, with ``ts``), then confirmed ones (highest first)."""
        addresses = self._check_rest_addresses(addrs)
        self._check_network(addresses)
        wanted = set(addresses)
        mempool, confirmed = self._split_history(addresses)
        utxos = []
        for txid in mempool + confirmed:
            tx = self._txs[txid]
            placed = self._tx_block.get(txid)
            for n in range(len(tx.outputs) - 1, -1, -1):
                output = tx.outputs[n]
                if output.address not in wanted:
                    continue
                utxo: dict[str, Any] = {
                    "address": output.address,
                    "txid": txid,
                    "vout": n,
                    "scriptPubKey": output.script_hex,
                    "amount": js_dash_number(output.duffs),
                    "satoshis": output.duffs,
                }
                if placed is None:
                    utxo["confirmations"] = 0
                    utxo["ts"] = tx.first_seen
                else:
                    if with_height:
                        utxo["height"] = placed[0]
                    utxo["confirmations"] = self.height - placed[0] + 1
                utxos.append(utxo)
        return utxos

    def status_json(self, q: str | None) -> dict[str, Any]:
        """``GET /status?q=...``; anything unknown answers getInfo, as insight-api does."""
        tip = self._blocks[-1]
        if q == "getBestBlockHash":
            return {"bestblockhash": tip.hash}
        if q == "getLastBlockHash":
            return {"syncTipHash": tip.hash, "lastblockhash": tip.hash}
        if q == "getDifficulty":
            return {"difficulty": BLOCK_DIFFICULTY}
        if q == "getBestChainLock":
            lock = self._chainlock
            if lock is None:
                raise SandboxError("Unable to find any chainlock", insight_code=RPC_INTERNAL_ERROR)
            return {
                "bestchainlock": {
                    "blockhash": lock.hash,
                    "height": lock.height,
                    "signature": _derived_hex(lock.hash, "clsig", 96),
                    "known_block": True,
                }
            }
        return {
            "info": {
                "version": CORE_VERSION,
                "insightversion": INSIGHT_VERSION,
                "protocolversion": PROTOCOL_VERSION,
                "blocks": self.height,
                "timeoffset": 0,
                "connections": 8,
                "difficulty": BLOCK_DIFFICULTY,
                "relayfee": RELAY_FEE_DASH,
                "errors": "",
                "network": NETWORK,
            }
        }

    def sync_json(self) -> dict[str, Any]:
        """``GET /sync``: the sandbox is always fully synced."""
        return {
            "status": "finished",
            "blockChainHeight": self.height,
            "syncPercentage": 100,
            "height": self.height,
            "error": None,
            "type": "bitcore node",
        }

    # -- internals: building

    def _random_hex(self, size: int) -> str:
        return f"{self._rng.getrandbits(size * 8):0{size * 2}x}"

    def _random_address(self) -> str:
        return b58encode_check(bytes([_P2PKH_VERSION]) + self._rng.randbytes(20))

    def _new_txid(self) -> str:
        while True:
            txid = self._random_hex(32)
            if txid not in self._txs and txid not in self._dropped:
                return txid

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _check_outputs(self, outputs: object) -> list[SandboxOutput]:
        from dashpay.domain.wallet import AddressError

        if isinstance(outputs, str | bytes) or not isinstance(outputs, Sequence):
            raise SandboxError("outputs must be a list of (address, duffs) pairs")
        if not outputs:
            raise SandboxError("a payment needs at least one (address, duffs) output")
        if len(outputs) > MAX_OUTPUTS:
            raise SandboxError(
                f"{len(outputs)} outputs is more than the {MAX_OUTPUTS} a sandbox payment may "
                "have; split it into several payments"
            )
        built = []
        total = 0
        for index, pair in enumerate(outputs):
            if isinstance(pair, str | bytes) or not isinstance(pair, Sequence) or len(pair) != 2:
                raise SandboxError(f"output {index}: expected an (address, duffs) pair")
            address, duffs = pair
            if isinstance(duffs, bool) or not isinstance(duffs, int):
                raise SandboxError(
                    f"output {index}: the amount must be a whole number of duffs "
                    f"(1 DASH = {DUFFS_PER_DASH} duffs), got {type(duffs).__name__}"
                )
            if duffs <= 0:
                raise SandboxError(
                    f"output {index}: the amount {duffs} duffs is not positive; "
                    "pay at least 1 duff (0.00000001 DASH)"
                )
            if duffs > MAX_DUFFS:
                raise SandboxError(
                    f"output {index}: the amount {duffs} duffs is more than 21,000,000 DASH"
                )
            total += duffs
            if not isinstance(address, str):
                raise SandboxError(
                    f"output {index}: the address must be text, got {type(address).__name__}"
                )
            try:
                built.append(_pay_to(address, duffs))
            except AddressError as exc:
                raise SandboxError(
                    f"output {index}: {exc} (the sandbox network is testnet: pay an address "
                    "from `dashpay receiver new` on the sandbox daemon)"
                ) from None
        if total > MAX_DUFFS:
            raise SandboxError(f"the outputs add up to {total} duffs, more than 21,000,000 DASH")
        return built

    def _append_block(self, txids: list[str]) -> _Block:
        now = int(self._clock())
        fees = sum(self._txs[t].fee for t in txids)
        coinbase = self._coinbase(len(self._blocks), fees, now)
        block_hash = "00000" + f"{self._rng.getrandbits(236):059x}"
        return self._add_block(block_hash, now, self._rng.getrandbits(32), [coinbase.txid, *txids])

    def _add_block(self, block_hash: str, when: int, nonce: int, all_txids: list[str]) -> _Block:
        """Put a block of known txs on the tip; what follows from its txs is computed."""
        height = len(self._blocks)
        prev = self._blocks[-1] if self._blocks else None
        block = _Block(
            hash=block_hash,
            height=height,
            prev_hash=None if prev is None else prev.hash,
            time=when,
            txids=tuple(all_txids),
            merkleroot=_merkle_root(all_txids),
            nonce=nonce,
            size=BLOCK_HEADER_BYTES + 1 + sum(self._txs[t].size for t in all_txids),
            reward=BLOCK_SUBSIDY_DUFFS,
        )
        self._blocks.append(block)
        self._block_by_hash[block.hash] = block
        for position, txid in enumerate(all_txids):
            self._tx_block[txid] = (height, position)
        return block

    def _coinbase(self, height: int, fees: int, now: int) -> SandboxTx:
        miner = BLOCK_SUBSIDY_DUFFS - MASTERNODE_SHARE_DUFFS + fees
        outputs = (
            _pay_to(self.miner_address, miner),
            _pay_to(self.masternode_address, MASTERNODE_SHARE_DUFFS),
        )
        tx = SandboxTx(
            txid=self._new_txid(),
            seq=self._next_seq(),
            outputs=outputs,
            input_duffs=0,
            fee=0,
            size=COINBASE_BYTES,
            first_seen=now,
            prev_txid=None,
            coinbase_height=height,
        )
        self._txs[tx.txid] = tx
        self._index(tx)
        return tx

    def _index(self, tx: SandboxTx) -> None:
        by_address = self._by_address  # address -> its txids, never an empty list
        for output in tx.outputs:
            address = output.address
            if address is None:
                continue
            txids = by_address.get(address)
            if txids is None:
                by_address[address] = [tx.txid]
            elif txids[-1] != tx.txid:  # an address paid twice by one tx is indexed once
                txids.append(tx.txid)

    def _require(self, txid: str) -> SandboxTx:
        tx = self._txs.get(txid)
        if tx is not None:
            return tx
        if txid in self._dropped:
            raise SandboxError(f"tx {txid} was dropped from the mempool; it no longer exists")
        raise SandboxError(
            f"no transaction {txid} on the sandbox network; use a txid printed by "
            "`dashpay sandbox pay`"
        )

    # -- internals: reading

    def _paid_to(self, txid: str, address: str) -> int:
        return sum(o.duffs for o in self._txs[txid].outputs if o.address == address)

    def _split_history(self, addresses: list[str]) -> tuple[list[str], list[str]]:
        """Mempool txids (newest first) and confirmed txids (highest first) touching
        ``addresses``, each once. Within one block, one address keeps dashd's address
        index order (position in block) and several use its (height, txid) set order."""
        seen: set[str] = set()
        mempool: list[str] = []
        confirmed: list[str] = []
        placed = self._tx_block
        for address in addresses:
            for txid in self._by_address.get(address, ()):
                if txid in seen:
                    continue
                seen.add(txid)
                (confirmed if txid in placed else mempool).append(txid)
        txs = self._txs
        mempool.sort(key=lambda t: txs[t].seq, reverse=True)
        if len(addresses) > 1:
            confirmed.sort(key=lambda t: (placed[t][0], t), reverse=True)
        else:
            confirmed.sort(key=lambda t: placed[t], reverse=True)
        return mempool, confirmed

    def _history_txids(self, addresses: list[str]) -> list[str]:
        mempool, confirmed = self._split_history(addresses)
        return mempool + confirmed

    def _check_rest_addresses(self, addrs: list[str]) -> list[str]:
        """insight-api's address check: 400 "Must include address" / "Invalid address: ..."
        (code 1). An address valid on mainnet passes here, as with dashcore-lib."""
        from dashpay.domain.wallet import AddressError, validate_address

        if not addrs or not addrs[0]:
            raise SandboxError("Must include address", insight_code=INSIGHT_VALIDATION_CODE)
        for addr in addrs:
            if not isinstance(addr, str) or addr != addr.strip():
                raise SandboxError(
                    "Invalid address: Non-base58 character", insight_code=INSIGHT_VALIDATION_CODE
                )
            try:
                validate_address(addr, NETWORK)
            except AddressError as exc:
                try:
                    validate_address(addr, "mainnet")
                except AddressError:
                    raise SandboxError(
                        f"Invalid address: {exc}", insight_code=INSIGHT_VALIDATION_CODE
                    ) from None
        return list(addrs)

    def _check_network(self, addresses: list[str]) -> None:
        """dashd refuses an address of another network (-5), after insight's checks."""
        from dashpay.domain.wallet import AddressError, validate_address

        for addr in addresses:
            try:
                validate_address(addr, NETWORK)
            except AddressError:
                raise SandboxError(
                    "Invalid address", insight_code=RPC_INVALID_ADDRESS_OR_KEY
                ) from None

    def _render_tx(
        self, tx: SandboxTx, *, no_asm: bool, no_script_sig: bool, no_spent: bool
    ) -> dict[str, Any]:
        placed = self._tx_block.get(tx.txid)
        out: dict[str, Any] = {"txid": tx.txid}
        if tx.coinbase_height is not None:
            payload = (
                CBTX_VERSION.to_bytes(2, "little").hex()
                + tx.coinbase_height.to_bytes(4, "little").hex()
                + _derived_hex(tx.txid, "mnlist", 32)
                + _derived_hex(tx.txid, "quorums", 32)
            )
            out["version"] = COINBASE_VERSION
            out["type"] = COINBASE_TYPE
            out["locktime"] = 0
            out["extraPayloadSize"] = len(payload) // 2
            out["extraPayload"] = payload
            script = _script_num_push(tx.coinbase_height) + _COINBASE_TAG
            out["vin"] = [{"coinbase": script.hex(), "sequence": SEQUENCE_FINAL, "n": 0}]
        else:
            out["version"] = TX_VERSION
            out["locktime"] = 0
            out["vin"] = [self._render_input(tx, no_asm=no_asm, no_script_sig=no_script_sig)]
        out["vout"] = [
            _render_output(o, n, no_asm=no_asm, no_spent=no_spent) for n, o in enumerate(tx.outputs)
        ]
        if placed is None:
            out["blockheight"] = -1
            out["confirmations"] = 0
            out["time"] = round(self._clock())
        else:
            block = self._blocks[placed[0]]
            confirmations = self.height - block.height + 1
            out["blockhash"] = block.hash
            out["blockheight"] = block.height
            out["confirmations"] = confirmations
            out["time"] = block.time
            out["blocktime"] = block.time
        if tx.coinbase_height is not None:
            out["isCoinBase"] = True
        out["valueOut"] = js_dash_number(tx.value_out)
        out["size"] = tx.size
        if tx.coinbase_height is None:
            out["valueIn"] = js_dash_number(tx.input_duffs)
            out["fees"] = js_dash_number(tx.fee)
        lock = self._chainlock
        chainlocked = placed is not None and lock is not None and placed[0] <= lock.height
        out["txlock"] = tx.txid in self._locked or chainlocked
        if tx.coinbase_height is not None:
            out["cbTx"] = {
                "version": CBTX_VERSION,
                "height": tx.coinbase_height,
                "merkleRootMNList": _derived_hex(tx.txid, "mnlist", 32),
                "merkleRootQuorums": _derived_hex(tx.txid, "quorums", 32),
            }
        return out

    def _render_input(self, tx: SandboxTx, *, no_asm: bool, no_script_sig: bool) -> dict[str, Any]:
        vin: dict[str, Any] = {
            "txid": tx.prev_txid,
            "vout": 0,
            "sequence": SEQUENCE_FINAL,
            "n": 0,
        }
        if not no_script_sig:
            # A DER-shaped 71-byte signature (SIGHASH_ALL) and a 33-byte compressed key.
            signature = (
                "30440220"
                + _derived_hex(tx.txid, "r", 32)
                + "0220"
                + _derived_hex(tx.txid, "s", 32)
                + "01"
            )
            script_sig: dict[str, str] = {"hex": f"47{signature}21{self._faucet_pubkey}"}
            if not no_asm:
                script_sig["asm"] = f"71 0x{signature} 33 0x{self._faucet_pubkey}"
            vin["scriptSig"] = script_sig
        vin["addr"] = self.faucet_address
        vin["valueSat"] = tx.input_duffs
        vin["value"] = js_dash_number(tx.input_duffs)
        vin["doubleSpentTxID"] = None
        return vin


def _whole(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{what}: expected a whole number, got {value!r}")
    return value


def _hex_text(value: object, size: int, what: str) -> str:
    if not isinstance(value, str) or len(value) != size * 2:
        raise ValueError(f"{what}: expected {size * 2} hex digits")
    bytes.fromhex(value)
    return value


def _restored_tx(
    txid: object,
    seq: object,
    outputs: list,
    input_duffs: object,
    fee: object,
    size: object,
    first_seen: object,
    prev_txid: object,
    coinbase_height: object,
) -> SandboxTx:
    built = []
    for address, duffs in outputs:
        if address is None:
            built.append(_null_data_output())
        elif not 0 < _whole(duffs, "duffs") <= MAX_DUFFS:
            raise ValueError(f"tx {txid}: an output of {duffs} duffs")
        else:
            built.append(_pay_to(address, duffs))
    return SandboxTx(
        txid=_normalize_txid(txid),
        seq=_whole(seq, "seq"),
        outputs=tuple(built),
        input_duffs=_whole(input_duffs, "input_duffs"),
        fee=_whole(fee, "fee"),
        size=_whole(size, "size"),
        first_seen=_whole(first_seen, "first_seen"),
        prev_txid=None if prev_txid is None else _normalize_txid(prev_txid),
        coinbase_height=None if coinbase_height is None else _whole(coinbase_height, "height"),
    )


def _render_output(output: SandboxOutput, n: int, *, no_asm: bool, no_spent: bool) -> dict:
    script: dict[str, Any] = {"hex": output.script_hex}
    if not no_asm:
        script["asm"] = output.script_asm
    out: dict[str, Any] = {"value": dash_string(output.duffs), "n": n, "scriptPubKey": script}
    if not no_spent:
        # Sandbox outputs are never spent.
        out["spentTxId"] = None
        out["spentIndex"] = None
        out["spentHeight"] = None
    if output.address is not None:
        script["addresses"] = [output.address]
        script["type"] = output.script_type
    return out


def _paginate(txids: list[str], from_: int, to: int) -> list[str]:
    """dashcore-node's ``_paginate``: ``from < to`` or a 503, then JavaScript's
    ``slice(from, to)`` (which Python's slicing matches, negative indexes included)."""
    if not from_ < to:
        raise SandboxError(
            f'Invalid state: "from" ({from_}) is expected to be less than "to" ({to})'
        )
    return txids[from_:to]
