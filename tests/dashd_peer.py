"""A dashd for tests: a real pyzmq PUB socket and a JSON-RPC HTTP server on loopback.

``DashdPeer`` has ``SandboxPeer``'s interface (``pay``, ``pay_many``, ``mine``,
``server_down``/``server_up``, ``forge``, ``url``, ``network.chain.height``), so the
parametrised suite of ``tests/integration/test_chain_backends.py`` runs against it, plus
what only dashd has: ``restart`` (the ZMQ sequence counters start again at 0 and a new
cookie is written), ``pay(..., silent=True)`` (a ``rawtx`` dropped by the PUB socket: its
sequence number is used, so the next one shows the gap), ``address_index`` (off: the
address calls answer -32600 with HTTP 400, or -5 with ``legacy_errors``) and
``network_name`` (what ``getblockchaininfo`` says).

Everything it publishes is real bytes: each payment is a Bitcoin-serialization Dash
transaction written by ``serialize_tx`` (txid = double SHA-256 of the bytes), published
as ``[topic, body, 4-byte LE sequence]`` on ``rawtx``, its lock as ``rawtxlocksig`` (the tx
and an ``isdlock``) and ``hashtxlock``, each block as ``hashblock`` and ``hashchainlock``.
``publish_fixtures`` sends the real transactions of ``tests/fixtures/dashd/`` (a CbTx
special transaction, a P2SH output) through the same socket. The RPC answers have the
documented field shapes of those fixtures (``getrawtransaction`` verbose objects,
``getblockchaininfo``, ``getaddresstxids``, ``getaddressmempool``, ``scantxoutset``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import trio

FIXTURES = Path(__file__).parent / "fixtures" / "dashd"
P2PKH = {0x4C: "mainnet", 0x8C: "testnet"}
P2SH = {0x10: "mainnet", 0x13: "testnet"}
_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
CHAINS = {"testnet": "test", "mainnet": "main"}


# -- a small raw-transaction writer -------------------------------------------------------


def _sha256d(data: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


def address_script(address: str) -> bytes:
    """The output script paying a P2PKH or P2SH address (base58check decoded here)."""
    number = 0
    for char in address:
        number = number * 58 + _B58.index(char)
    raw = number.to_bytes(25, "big")
    payload, checksum = raw[:-4], raw[-4:]
    if _sha256d(payload)[:4] != checksum:
        raise ValueError(f"{address}: bad checksum")
    version, digest = payload[0], payload[1:]
    if version in P2PKH:
        return b"\x76\xa9\x14" + digest + b"\x88\xac"
    if version in P2SH:
        return b"\xa9\x14" + digest + b"\x87"
    raise ValueError(f"{address}: version byte {version:#x} is not Dash's")


def compact_size(n: int) -> bytes:
    if n < 0xFD:
        return bytes([n])
    if n <= 0xFFFF:
        return b"\xfd" + n.to_bytes(2, "little")
    if n <= 0xFFFFFFFF:
        return b"\xfe" + n.to_bytes(4, "little")
    return b"\xff" + n.to_bytes(8, "little")


def serialize_tx(
    outputs: list[tuple[str | bytes, int]],
    *,
    prevout: bytes | None = None,
    version: int = 2,
    tx_type: int = 0,
    extra_payload: bytes = b"",
    locktime: int = 0,
) -> bytes:
    """A Dash transaction in Bitcoin serialization: int16 version + uint16 type, one
    input spending ``prevout`` (32 bytes, index 0, a dummy scriptSig), the outputs (an
    address, or a raw script as bytes), locktime, and for a special tx (version 3,
    type != 0) the compact-size-prefixed ``extra_payload``."""
    prevout = prevout if prevout is not None else secrets.token_bytes(32)
    out = bytearray(version.to_bytes(2, "little") + tx_type.to_bytes(2, "little"))
    script_sig = b"\x01\x51"  # a push of one byte: enough for a parser
    out += compact_size(1) + prevout + (0).to_bytes(4, "little")
    out += compact_size(len(script_sig)) + script_sig + b"\xff\xff\xff\xff"
    out += compact_size(len(outputs))
    for target, duffs in outputs:
        script = target if isinstance(target, bytes) else address_script(target)
        out += duffs.to_bytes(8, "little") + compact_size(len(script)) + script
    out += locktime.to_bytes(4, "little")
    if version >= 3 and tx_type != 0:
        out += compact_size(len(extra_payload)) + extra_payload
    return bytes(out)


def txid_of(raw: bytes) -> str:
    return _sha256d(raw)[::-1].hex()


def instant_lock(raw: bytes, txid: str) -> bytes:
    """An ``isdlock`` for a one-input tx made by ``serialize_tx`` (signature not real)."""
    outpoint = raw[5:41]  # after version/type (4) and the input count (1)
    return (
        b"\x01"
        + compact_size(1)
        + outpoint
        + bytes.fromhex(txid)[::-1]
        + secrets.token_bytes(32)
        + secrets.token_bytes(96)
    )


# -- the chain ---------------------------------------------------------------------------


@dataclass
class PeerTx:
    txid: str
    raw: bytes
    outputs: list[tuple[str | None, int, bytes]]  # (address, duffs, script)
    height: int | None = None
    locked: bool = False


@dataclass
class PeerChain:
    network: str = "testnet"
    txs: dict[str, PeerTx] = field(default_factory=dict)
    blocks: list[str] = field(default_factory=list)  # block hashes, index = height - base
    base: int = 100_000
    chainlocked: int = 0

    @property
    def height(self) -> int:
        return self.base + len(self.blocks)

    @property
    def tip_hash(self) -> str:
        return self.blocks[-1] if self.blocks else "00" * 32

    def add(self, raw: bytes, outputs: list[tuple[str | None, int, bytes]]) -> PeerTx:
        tx = PeerTx(txid_of(raw), raw, outputs)
        self.txs[tx.txid] = tx
        return tx

    def mine(self) -> str:
        block_hash = secrets.token_hex(32)
        self.blocks.append(block_hash)
        for tx in self.txs.values():
            if tx.height is None:
                tx.height = self.height
        self.chainlocked = self.height
        return block_hash

    def verbose(self, tx: PeerTx) -> dict[str, Any]:
        """``getrawtransaction txid true`` as Dash Core 23 prints it."""
        vout = []
        for n, (address, duffs, script) in enumerate(tx.outputs):
            spk: dict[str, Any] = {"hex": script.hex(), "type": "nulldata"}
            if address is not None:
                spk.update(address=address, type="pubkeyhash")
            vout.append({"value": duffs / 1e8, "valueSat": duffs, "n": n, "scriptPubKey": spk})
        chainlock = tx.height is not None and tx.height <= self.chainlocked
        body: dict[str, Any] = {
            "txid": tx.txid,
            "version": 2,
            "type": 0,
            "size": len(tx.raw),
            "locktime": 0,
            "vin": [],
            "vout": vout,
            "hex": tx.raw.hex(),
            "instantlock": tx.locked or chainlock,
            "instantlock_internal": tx.locked,
            "chainlock": chainlock,
        }
        if tx.height is not None:
            body.update(
                blockhash=self.blocks[tx.height - self.base - 1],
                height=tx.height,
                confirmations=self.height - tx.height + 1,
            )
        return body

    def touching(self, addresses: list[str]) -> list[PeerTx]:
        wanted = set(addresses)
        return [t for t in self.txs.values() if any(o[0] in wanted for o in t.outputs)]


# -- the peer -----------------------------------------------------------------------------


class RpcFailure(Exception):
    def __init__(self, code: int, message: str, status: int = 500) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


INDEX_OFF = (
    "Address index is disabled. You should run Dash Core with -addressindex (requires reindex)"
)
NOT_FOUND = "No such mempool or blockchain transaction. Use gettransaction for wallet transactions."


class DashdPeer:
    """dashd on loopback, served from a thread of the test process (module docstring)."""

    backend = "dashd"

    def __init__(
        self, *, network: str = "testnet", lock_delay: float = 0.2, send_hwm: int = 1000
    ) -> None:
        import zmq

        self._zmq = zmq
        self.chain = PeerChain(network=network)
        self.network = SimpleNamespace(chain=self.chain)
        self.network_name = network  # what getblockchaininfo answers
        self.lock_delay = lock_delay
        self.send_hwm = send_hwm  # dashd's default -zmqpub*hwm is 1,000
        self.address_index = True
        self.legacy_errors = False
        self.methods: list[str] = []
        self.unauthorized = 0
        self._dir = Path(tempfile.mkdtemp(prefix="dashd-peer-"))
        self.cookie_file = self._dir / ".cookie"
        self._write_cookie()
        self._context = zmq.Context()
        self._pub: Any = None
        self.zmq_port: int | None = None
        self.port: int | None = None
        self.sequence: dict[str, int] = {}
        self._ready = threading.Event()
        self._thread = threading.Thread(target=trio.run, args=(self._main,), daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("dashd peer did not start")

    # -- running

    def _write_cookie(self) -> None:
        self.cookie = f"__cookie__:{secrets.token_hex(32)}"
        self.cookie_file.write_text(self.cookie)

    async def _main(self) -> None:
        self.token = trio.lowlevel.current_trio_token()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await self._up()
            self._ready.set()
            self._stop = trio.Event()
            await self._stop.wait()
            nursery.cancel_scope.cancel()
        self._close_pub()

    async def _up(self) -> None:
        zmq = self._zmq
        self._pub = self._context.socket(zmq.PUB)
        self._pub.setsockopt(zmq.LINGER, 0)
        self._pub.setsockopt(zmq.SNDHWM, self.send_hwm)
        if self.zmq_port is None:
            self.zmq_port = self._pub.bind_to_random_port("tcp://127.0.0.1")
        else:
            self._pub.bind(f"tcp://127.0.0.1:{self.zmq_port}")
        scope_box: list = []

        async def server(task_status):
            with trio.CancelScope() as scope:
                scope_box.append(scope)
                listeners = await trio.open_tcp_listeners(self.port or 0, host="127.0.0.1")
                task_status.started(listeners[0].socket.getsockname()[1])
                await trio.serve_listeners(self._http, listeners)

        self.port = await self._nursery.start(server)
        self._server_scope = scope_box[0]

    def _close_pub(self) -> None:
        if self._pub is not None:
            self._pub.close(linger=0)
            self._pub = None

    def _call(self, fn, *args):
        return trio.from_thread.run(fn, *args, trio_token=self.token)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def zmq_url(self) -> str:
        return f"tcp://127.0.0.1:{self.zmq_port}"

    def sections(self, **link: str) -> dict[str, dict[str, Any]]:
        """The config of a daemon watching this peer (cookie login)."""
        dashd = {
            "rpc_url": self.url,
            "zmq_url": self.zmq_url,
            "rpc_cookie_file": str(self.cookie_file),
        }
        return {"chain": {"backend": "dashd"}, "dashd": {**dashd, **link}}

    def close(self) -> None:
        async def go():
            self._stop.set()

        self._call(go)
        self._thread.join(10)
        self._context.term()
        for name in os.listdir(self._dir):
            (self._dir / name).unlink()
        self._dir.rmdir()

    # -- ZMQ

    def _publish(self, topic: str, body: bytes, *, deliver: bool = True) -> None:
        """One notification; its sequence number is used even when not delivered (a
        message the PUB socket dropped, or published while the link is down)."""
        sequence = self.sequence.get(topic, 0)
        self.sequence[topic] = (sequence + 1) % (1 << 32)
        if deliver and self._pub is not None:
            frames = [topic.encode(), body, sequence.to_bytes(4, "little")]
            self._pub.send_multipart(frames)

    def send_raw(self, *messages: list[bytes]) -> None:
        """Publish these multipart messages as they are (a hostile publisher)."""

        async def go():
            for frames in messages:
                self._pub.send_multipart(frames)

        self._call(go)

    # -- the chain's actions (SandboxPeer's interface)

    async def _pay(self, outputs: list[tuple[str, int]], lock: bool, silent: bool) -> str:
        raw = serialize_tx(list(outputs))
        tx = self.chain.add(raw, [(a, d, address_script(a)) for a, d in outputs])
        self._publish("rawtx", raw, deliver=not silent)
        if lock:
            self._nursery.start_soon(self._lock_later, tx, silent)
        return tx.txid

    async def _lock_later(self, tx: PeerTx, silent: bool) -> None:
        await trio.sleep(self.lock_delay)
        if tx.height is None and tx.txid in self.chain.txs:
            tx.locked = True
            self._publish(
                "rawtxlocksig", tx.raw + instant_lock(tx.raw, tx.txid), deliver=not silent
            )
            self._publish("hashtxlock", bytes.fromhex(tx.txid), deliver=not silent)

    def pay(self, address: str, duffs: int, *, lock: bool = True, silent: bool = False) -> str:
        return self._call(self._pay, [(address, duffs)], lock, silent)

    def pay_many(self, outputs: list[tuple[str, int]], *, lock: bool = True) -> str:
        return self._call(self._pay, outputs, lock, False)

    def mine(self, blocks: int = 1) -> list[str]:
        async def go():
            hashes = []
            for _ in range(blocks):
                block_hash = self.chain.mine()
                hashes.append(block_hash)
                self._publish("hashblock", bytes.fromhex(block_hash))
                self._publish("hashchainlock", bytes.fromhex(block_hash))
            return hashes

        return self._call(go)

    def forge(self, name: str, txid: str, outputs: dict[str, int], *, txlock: bool = False) -> None:
        """A real-looking ``rawtx`` paying ``outputs`` that the node does not have (its
        RPC answers -5 for it): the read-back must refuse it. ``txid`` is not used: a
        raw tx's txid is the hash of its bytes."""
        raw = serialize_tx(list(outputs.items()))

        async def go():
            self._publish("rawtxlocksig" if txlock else "rawtx", raw)

        self._call(go)

    def publish_fixtures(self) -> list[str]:
        """The real fixture txs, as ``rawtx``, known to the RPC too (mempool): a
        classical P2PKH tx, a CbTx special tx, a tx with a P2SH output. Their txids."""
        from dashpay.wire.dash_tx import parse_tx

        async def go():
            txids = []
            for name in (
                "tx-testnet-p2pkh-88a3fe6b",
                "tx-testnet-cbtx-25632685",
                "tx-testnet-p2sh-48e6f8f0",
            ):
                raw = bytes.fromhex((FIXTURES / f"{name}.hex").read_text().strip())
                parsed = parse_tx(raw, "testnet")
                outs = [(o.address, o.value, o.script) for o in parsed.outputs]
                tx = self.chain.add(raw, outs)
                self._publish("rawtx", raw)
                txids.append(tx.txid)
            return txids

        return self._call(go)

    def server_down(self) -> None:
        """dashd unreachable (still running: its counters keep counting)."""

        async def go():
            self._server_scope.cancel()
            self._close_pub()
            await trio.sleep(0.05)

        self._call(go)

    def server_up(self) -> None:
        self._call(self._up)

    def restart(self) -> None:
        """dashd restarted: the link drops, the sequence counters start again at 0 and a
        new cookie is written (the old one is refused)."""
        self.server_down()
        self.sequence.clear()
        self._write_cookie()
        self.server_up()

    def reset_sequence(self) -> None:
        """The counters start again at 0 without the link dropping (what a subscriber
        sees when dashd restarted within ZMQ's reconnect interval)."""

        async def go():
            self.sequence.clear()

        self._call(go)

    # -- JSON-RPC over HTTP

    async def _http(self, stream: trio.SocketStream) -> None:
        buffer = b""
        try:
            while True:
                while b"\r\n\r\n" not in buffer:
                    chunk = await stream.receive_some(65536)
                    if not chunk:
                        return
                    buffer += chunk
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                headers = {
                    k.strip().lower(): v.strip()
                    for k, _, v in (x.partition(":") for x in lines[1:])
                }
                length = int(headers.get("content-length", "0"))
                while len(buffer) < length:
                    chunk = await stream.receive_some(65536)
                    if not chunk:
                        return
                    buffer += chunk
                body, buffer = buffer[:length], buffer[length:]
                status, answer = self._answer(headers.get("authorization", ""), body)
                await stream.send_all(
                    f"HTTP/1.1 {status} {'OK' if status == 200 else 'Error'}\r\n"
                    f"Content-Type: application/json\r\nContent-Length: {len(answer)}\r\n\r\n".encode()
                    + answer
                )
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            return

    def _answer(self, authorization: str, body: bytes) -> tuple[int, bytes]:
        expected = "Basic " + base64.b64encode(self.cookie.encode()).decode()
        users = getattr(self, "users", {})
        allowed = {expected} | {
            "Basic " + base64.b64encode(f"{u}:{p}".encode()).decode() for u, p in users.items()
        }
        if authorization not in allowed:
            self.unauthorized += 1
            return 401, b""
        request = json.loads(body)
        if isinstance(request, list):  # a JSON-RPC batch: one answer each, HTTP 200
            answers = [self._one(call)[1] for call in request]
            return 200, json.dumps(answers).encode()
        status, answer = self._one(request)
        return status, json.dumps(answer).encode()

    def _one(self, request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        method, params = request["method"], request.get("params") or []
        self.methods.append(method)
        try:
            result = self._method(method, params)
        except RpcFailure as failure:
            error = {"code": failure.code, "message": failure.message}
            return failure.status, {"result": None, "error": error, "id": request["id"]}
        return 200, {"result": result, "error": None, "id": request["id"]}

    def _index(self) -> None:
        if not self.address_index:
            if self.legacy_errors:
                raise RpcFailure(-5, "No information available for address")
            raise RpcFailure(-32600, INDEX_OFF, status=400)

    def _method(self, method: str, params: list[Any]) -> Any:
        chain = self.chain
        if method == "getblockchaininfo":
            info = json.loads((FIXTURES / "rpc-getblockchaininfo-testnet.json").read_text())
            info.update(
                chain=CHAINS.get(self.network_name, self.network_name),
                blocks=chain.height,
                headers=chain.height,
                bestblockhash=chain.tip_hash,
            )
            return info
        if method == "getrawtransaction":
            tx = chain.txs.get(str(params[0]).lower())
            if tx is None:
                raise RpcFailure(-5, NOT_FOUND)
            return chain.verbose(tx)
        if method in ("getaddresstxids", "getaddressmempool", "getaddressdeltas"):
            self._index()
            addresses = params[0]["addresses"]
            txs = chain.touching(addresses)
            if method == "getaddresstxids":
                return [
                    t.txid for t in sorted(txs, key=lambda t: t.height or 0) if t.height is not None
                ]
            mempool = method == "getaddressmempool"
            return [
                {"address": a, "txid": t.txid, "index": n, "satoshis": d, "timestamp": 1700000000}
                | ({} if mempool else {"height": t.height})
                for t in txs
                if (t.height is None) == mempool
                for n, (a, d, _) in enumerate(t.outputs)
                if a in addresses
            ]
        if method == "scantxoutset":
            wanted = [d.removeprefix("addr(").removesuffix(")") for d in params[1]]
            unspents = [
                {
                    "txid": t.txid,
                    "vout": n,
                    "scriptPubKey": script.hex(),
                    "desc": f"addr({a})",
                    "amount": d / 1e8,
                    "height": t.height,
                }
                for t in chain.touching(wanted)
                if t.height is not None  # scantxoutset reads the UTXO set: mined only
                for n, (a, d, script) in enumerate(t.outputs)
                if a in wanted
            ]
            return {
                "success": True,
                "txouts": len(unspents),
                "height": chain.height,
                "bestblock": chain.tip_hash,
                "unspents": unspents,
                "total_amount": sum(u["amount"] for u in unspents),
            }
        raise RpcFailure(-32601, "Method not found", status=404)
