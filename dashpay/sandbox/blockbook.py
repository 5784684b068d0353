"""A Blockbook websocket server over a sandbox chain, for tests and benchmarks.

It speaks Blockbook's documented websocket messages (trezor/blockbook ``docs/api.md``,
``server/websocket.go``; shapes in ``tests/fixtures/blockbook/``): JSON
``{id, method, params}`` in, ``{id, data}`` out; ``subscribeAddresses`` (one list per
connection, replaced by the next, at most 1,000 addresses, "addresses max 1000"
otherwise), ``subscribeNewBlock``, ``getAccountInfo`` (``details: "txs"``, newest
first with the mempool first, a page past the end answered with the last page),
``getTransactionSpecific`` (dashd's ``getrawtransaction`` object with ``instantlock``,
``instantlock_internal``, ``chainlock``; dashd's -5 text for an unknown txid),
``getInfo``, ``ping``. It pushes no locks, as Blockbook does not. The websocket is our
own ``wire/websocket.py`` in its server role. Not a Blockbook: no xpub descriptors, no
REST, no input details (``vin`` is empty).
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable
from typing import Any

import trio

from dashpay.sandbox.chain import SandboxChain, SandboxTx
from dashpay.sandbox.network import SandboxNetwork
from dashpay.wire import websocket as wsframe

MAX_ADDRESSES = 1000
NOT_FOUND = "No such mempool or blockchain transaction. Use gettransaction for wallet transactions."


def normalized_tx(chain: SandboxChain, tx: SandboxTx) -> dict[str, Any]:
    """Blockbook's ``Tx`` (api/types.go): amounts as strings of duffs, zero values and
    empty fields left out."""
    confirmations = chain.confirmations(tx.txid)
    vout = []
    for n, out in enumerate(tx.outputs):
        item: dict[str, Any] = {"n": n, "hex": out.script_hex}
        if out.duffs:
            item["value"] = str(out.duffs)
        if out.address is not None:
            item["addresses"] = [out.address]
            item["isAddress"] = True
        vout.append(item)
    body: dict[str, Any] = {
        "txid": tx.txid,
        "vin": [],
        "vout": vout,
        "blockHeight": chain.height - confirmations + 1 if confirmations else -1,
        "blockTime": tx.first_seen,
        "value": str(tx.value_out),
    }
    if confirmations:
        body["confirmations"] = confirmations
    return body


def specific_tx(chain: SandboxChain, tx: SandboxTx) -> dict[str, Any]:
    """dashd's ``getrawtransaction txid true`` as getTransactionSpecific relays it."""
    confirmations = chain.confirmations(tx.txid)
    lock = chain.best_chainlock
    height = chain.height - confirmations + 1 if confirmations else -1
    chainlocked = bool(confirmations) and lock is not None and height <= lock[1]
    instant = chain.is_locked(tx.txid)
    vout = []
    for n, out in enumerate(tx.outputs):
        script: dict[str, Any] = {"hex": out.script_hex, "type": out.script_type or "nulldata"}
        if out.address is not None:
            script["addresses"] = [out.address]
        vout.append(
            {"value": out.duffs / 1e8, "valueSat": out.duffs, "n": n, "scriptPubKey": script}
        )
    body: dict[str, Any] = {
        "txid": tx.txid,
        "version": 2,
        "type": 0,
        "vin": [],
        "vout": vout,
        "instantlock": instant or chainlocked,
        "instantlock_internal": instant,
        "chainlock": chainlocked,
    }
    if confirmations:
        body.update(height=height, confirmations=confirmations)
    return body


def forged_tx(payload: dict[str, Any]) -> dict[str, Any]:
    """A notification's tx built from a forged Insight-shaped event payload."""
    vout = []
    for n, output in enumerate(payload["vout"]):
        ((address, duffs),) = output.items()
        vout.append({"n": n, "value": str(duffs), "addresses": [address], "isAddress": True})
    return {"txid": payload["txid"], "vin": [], "vout": vout, "blockHeight": 0}


class _Client:
    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.addresses: set[str] = set()
        self.subscription_id: str | None = None
        self.block_id: str | None = None
        self.lock = trio.Lock()

    async def send(self, message: dict[str, Any] | str) -> None:
        text = message if isinstance(message, str) else json.dumps(message)
        # A client gone away: its reader ends the connection.
        gone = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)
        async with self.lock:
            with contextlib.suppress(*gone):
                await self.stream.send_all(wsframe.encode_server_text(text))


class BlockbookServer:
    """Serves the chain of ``network()`` (asked at each connection, so the network can
    be replaced); ``clients`` are the live connections."""

    def __init__(self, network: Callable[[], SandboxNetwork]) -> None:
        self._network = network
        self.clients: list[_Client] = []
        self.methods: list[str] = []  # every method asked, in order
        self.subscription_sizes: list[int] = []
        self.hold: trio.Event | None = None  # set: subscriptions wait for it

    async def serve(self, port: int, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")
        task_status.started(listeners[0].socket.getsockname()[1])
        try:
            await trio.serve_listeners(self._handle, listeners)
        finally:
            self.clients.clear()

    async def _handle(self, stream: trio.SocketStream) -> None:
        request = b""
        while b"\r\n\r\n" not in request:
            chunk = await stream.receive_some(4096)
            if not chunk:
                return
            request += chunk
        head, _, rest = request.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {
            k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])
        }
        method, target, _ = lines[0].split(" ", 2)
        key = wsframe.server_handshake_key(
            method, headers.get("sec-websocket-version"), headers.get("sec-websocket-key")
        )
        if key is None or target.split("?")[0] != "/websocket":
            await stream.send_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            return
        await stream.send_all(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + f"Sec-WebSocket-Accept: {wsframe.accept_token(key)}\r\n\r\n".encode()
        )
        client = _Client(stream)
        self.clients.append(client)
        reader = wsframe.FrameReader(max_message_bytes=1 << 20, role=wsframe.SERVER)
        network = self._network()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._pump, client, network)
                data = rest
                while True:
                    for message in reader.receive_data(data):
                        if isinstance(message, str):
                            await self._answer(client, network.chain, message)
                        elif isinstance(message, wsframe.PingReceived):
                            async with client.lock:
                                await stream.send_all(reader.data_to_send())
                        elif isinstance(message, wsframe.CloseReceived | wsframe.Failure):
                            return
                    data = await stream.receive_some(65536)
                    if not data:
                        return
        except* (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass  # the client went away
        finally:
            if client in self.clients:
                self.clients.remove(client)

    async def _pump(self, client: _Client, network: SandboxNetwork) -> None:
        """What the network publishes, as Blockbook notifications (no locks)."""
        with network.subscribe(max_buffer=100_000) as subscription:
            while True:
                try:
                    event = await subscription.receive()
                except trio.EndOfChannel:
                    return
                chain = network.chain
                if event.name == "block" and client.block_id is not None:
                    await client.send(
                        {
                            "id": client.block_id,
                            "data": {"height": chain.height, "hash": event.payload},
                        }
                    )
                elif event.name == "tx" and client.subscription_id is not None:
                    payload = event.payload
                    tx = chain.get_tx(payload["txid"])
                    body = normalized_tx(chain, tx) if tx is not None else forged_tx(payload)
                    if tx is not None:
                        body["blockHeight"] = 0  # notifications say 0 while unconfirmed
                    paid = {a for o in payload["vout"] for a in o}
                    for address in sorted(paid & client.addresses):
                        await client.send(
                            {"id": client.subscription_id, "data": {"address": address, "tx": body}}
                        )

    async def _answer(self, client: _Client, chain: SandboxChain, text: str) -> None:
        request = json.loads(text)
        request_id, method = request["id"], request["method"]
        params = request.get("params") or {}
        self.methods.append(method)
        data: Any
        if method == "subscribeAddresses":
            if self.hold is not None:
                await self.hold.wait()
            addresses = params.get("addresses") or []
            if len(addresses) > MAX_ADDRESSES:
                data = {"error": {"message": "addresses max 1000"}}
            else:
                client.addresses = set(addresses)
                client.subscription_id = request_id
                self.subscription_sizes.append(len(addresses))
                data = {"subscribed": True}
        elif method == "subscribeNewBlock":
            client.block_id = request_id
            data = {"subscribed": True}
        elif method == "getInfo":
            data = {"name": "Dash Testnet", "bestHeight": chain.height, "bestHash": chain.tip_hash}
        elif method == "ping":
            data = {}
        elif method == "getTransactionSpecific":
            tx = chain.get_tx(str(params.get("txid", "")).lower())
            data = (
                specific_tx(chain, tx)
                if tx is not None
                else {"error": {"message": f"txid {params.get('txid')}: -5: {NOT_FOUND}"}}
            )
        elif method == "getAccountInfo":
            data = self._account(chain, params)
        else:
            data = {"error": {"message": f"unknown method {method}"}}
        await client.send({"id": request_id, "data": data})

    def _account(self, chain: SandboxChain, params: dict[str, Any]) -> dict[str, Any]:
        address = params["descriptor"]
        size = int(params.get("pageSize") or 1000)
        txids = chain._history_txids([address])
        total_pages = max(1, math.ceil(len(txids) / size))
        page = min(max(1, int(params.get("page") or 1)), total_pages)  # past the end: the last
        items = txids[(page - 1) * size : page * size]
        body: dict[str, Any] = {
            "page": page,
            "totalPages": total_pages,
            "itemsOnPage": size,
            "address": address,
            "txs": len(txids),
        }
        if items:
            body["transactions"] = [normalized_tx(chain, chain.get_tx(t)) for t in items]
        return body

    async def broadcast(self, text: str) -> None:
        for client in list(self.clients):
            await client.send(text)
