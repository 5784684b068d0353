"""The sandbox Insight server on a real loopback port: REST with httpx, the websocket
with trio-websocket as a raw Engine.IO client, hostile clients over raw TCP, and the
daemon's own REST and socket clients end to end."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial

import httpx
import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from dashpay.domain.observations import BlockObserved, SocketConnected, TxObserved
from dashpay.net.insight_rest import InsightRest
from dashpay.net.insight_socket import InsightSocket
from dashpay.sandbox.chain import SandboxChain, SandboxError
from dashpay.sandbox.http import MAX_BODY_BYTES, MAX_HEADER_BYTES, MAX_WS_MESSAGE_BYTES
from dashpay.sandbox.network import SandboxNetwork
from dashpay.sandbox.server import serve_sandbox

ADDR_A = "yTCZ7iv1U6p6MXp278FhMFZmKDbmgx89oX"
ADDR_B = "yWSJE2AeQspnykJ3d7cDsoj1sABQmZEHet"
MAINNET_ADDR = "Xpj8oTSYNf6Dspjh2Eb2x3X71WRRjzjLEF"
LOCK_DELAY = 0.05
STEP = 3.0  # generous bound for anything that should happen "now"


@dataclass
class Sandbox:
    network: SandboxNetwork
    port: int

    @property
    def rest(self) -> str:
        return f"http://127.0.0.1:{self.port}/insight-api"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/socket.io/?EIO=3&transport=websocket"

    @property
    def chain(self) -> SandboxChain:
        return self.network.chain


StartSandbox = Callable[..., Awaitable[Sandbox]]


@pytest.fixture
def start_sandbox(nursery) -> StartSandbox:
    async def start(**server_options) -> Sandbox:
        network = SandboxNetwork(SandboxChain(seed=7), lock_delay=LOCK_DELAY)
        await nursery.start(network.run)
        port = await nursery.start(partial(serve_sandbox, network, **server_options))
        return Sandbox(network, port)

    return start


@pytest.fixture
async def sandbox(start_sandbox) -> Sandbox:
    return await start_sandbox()


@pytest.fixture
async def client():
    async with httpx.AsyncClient(timeout=STEP) as http:
        yield http


async def recv(ws: WebSocketConnection) -> str:
    with trio.fail_after(STEP):
        return await ws.get_message()


async def recv_event(ws: WebSocketConnection) -> tuple[str, object]:
    frame = await recv(ws)
    assert frame.startswith("42["), frame
    name, payload = json.loads(frame[2:])
    return name, payload


@asynccontextmanager
async def subscribed(sandbox: Sandbox) -> AsyncIterator[WebSocketConnection]:
    """A raw socket.io client that has read the handshake and subscribed to inv."""
    async with open_websocket_url(sandbox.ws_url) as ws:
        await recv(ws)  # open packet
        assert await recv(ws) == "40"
        await ws.send_message('42["subscribe","inv"]')
        # A ping round trip proves the subscribe frame was processed before we go on.
        await ws.send_message("2")
        assert await recv(ws) == "3"
        yield ws


# -- REST --------------------------------------------------------------------------------


async def test_status_sync_and_version_answer_like_insight(sandbox, client):
    status = await client.get(f"{sandbox.rest}/status")
    assert status.status_code == 200
    assert status.headers["content-type"] == "application/json; charset=utf-8"
    assert status.json()["info"]["network"] == "testnet"
    best = await client.get(f"{sandbox.rest}/status", params={"q": "getBestBlockHash"})
    assert best.json() == {"bestblockhash": sandbox.chain.tip_hash}
    assert (await client.get(f"{sandbox.rest}/sync")).json()["status"] == "finished"
    assert (await client.get(f"{sandbox.rest}/version")).json() == {"version": "3.1.2"}


async def test_post_addrs_txs_takes_json_or_urlencoded_with_from_to_in_query_or_body(
    sandbox, client
):
    txids = [(await sandbox.network.pay([(ADDR_A, n + 1)], lock=False))["txid"] for n in range(4)]
    newest_first = txids[::-1]
    as_json = await client.post(
        f"{sandbox.rest}/addrs/txs", json={"addrs": ADDR_A, "from": 1, "to": 3}
    )
    assert as_json.status_code == 200
    assert [i["txid"] for i in as_json.json()["items"]] == newest_first[1:3]
    as_form = await client.post(
        f"{sandbox.rest}/addrs/txs", params={"from": "2"}, data={"addrs": f"{ADDR_A},{ADDR_B}"}
    )
    page = as_form.json()
    assert (page["totalItems"], page["from"], page["to"]) == (4, 2, 4)  # to: 2+10, clamped
    assert [i["txid"] for i in page["items"]] == newest_first[2:]
    via_path = await client.get(f"{sandbox.rest}/addrs/{ADDR_A}/txs", params={"to": 1})
    assert [i["txid"] for i in via_path.json()["items"]] == newest_first[:1]


async def test_history_range_errors_are_plain_text_503s(sandbox, client):
    wide = await client.post(f"{sandbox.rest}/addrs/txs", json={"addrs": ADDR_A, "to": 60})
    assert wide.status_code == 503
    assert wide.text == '"from" (0) and "to" (60) range should be less than or equal to 50'
    backwards = await client.post(
        f"{sandbox.rest}/addrs/txs", json={"addrs": ADDR_A, "from": 9, "to": 4}
    )
    assert backwards.status_code == 503
    assert backwards.text.startswith('Invalid state: "from" (9)')


async def test_errors_are_not_json_except_the_unknown_route(sandbox, client):
    bad_txid = await client.get(f"{sandbox.rest}/tx/abc")
    assert bad_txid.status_code == 400
    assert bad_txid.headers["content-type"].startswith("text/html")
    assert bad_txid.text == "parameter 1 must be of length 64 (not 3, for 'abc'). Code:-8"
    unknown_tx = await client.get(f"{sandbox.rest}/tx/{'0' * 64}")
    assert (unknown_tx.status_code, unknown_tx.text) == (404, "Not found")
    unknown_block = await client.get(f"{sandbox.rest}/block/{'0' * 64}")
    assert (unknown_block.status_code, unknown_block.text) == (404, "Not found")
    bad_address = await client.post(f"{sandbox.rest}/addrs/txs", data={"addrs": "yNope"})
    assert bad_address.status_code == 400
    assert bad_address.text.startswith("Invalid address: ")
    assert bad_address.text.endswith(". Code:1")
    other_net = await client.post(f"{sandbox.rest}/addrs/txs", json={"addrs": MAINNET_ADDR})
    assert (other_net.status_code, other_net.text) == (400, "Invalid address. Code:-5")
    no_chainlock = await client.get(f"{sandbox.rest}/status", params={"q": "getBestChainLock"})
    assert no_chainlock.status_code == 400
    assert no_chainlock.text == "Unable to find any chainlock. Code:-32603"
    route = await client.get(f"{sandbox.rest}/no/such/route")
    assert route.status_code == 404
    assert route.json() == {
        "status": 404,
        "url": "/insight-api/no/such/route",
        "error": "Not found",
    }
    outside = await client.get(f"http://127.0.0.1:{sandbox.port}/api/status")
    assert outside.status_code == 404
    assert "<pre>Cannot GET /api/status</pre>" in outside.text


async def test_addrs_as_a_json_array_crashes_into_a_500_page_like_insight(sandbox, client):
    crashed = await client.post(f"{sandbox.rest}/addrs/txs", json={"addrs": [ADDR_A]})
    assert crashed.status_code == 500
    assert crashed.headers["content-type"].startswith("text/html")
    assert "req.body.addrs.split is not a function" in crashed.text
    missing = await client.post(f"{sandbox.rest}/addrs/txs", json={})
    assert missing.status_code == 500
    broken_json = await client.post(
        f"{sandbox.rest}/addrs/txs",
        content=b'{"addrs": ',
        headers={"content-type": "application/json"},
    )
    assert broken_json.status_code == 400
    assert "SyntaxError" in broken_json.text


async def test_request_numbers_are_read_like_javascript_parse_int(sandbox, client):
    for n in range(3):
        await sandbox.network.pay([(ADDR_A, n + 1)], lock=False)
    url = f"{sandbox.rest}/addrs/txs"
    loose = await client.post(url, params={"from": "1abc", "to": "nope"}, data={"addrs": ADDR_A})
    assert (loose.json()["from"], loose.json()["to"]) == (1, 3)  # to: NaN -> from + 10, clamped
    zero = await client.post(url, json={"addrs": ADDR_A, "from": 0, "to": 0})
    assert zero.json()["to"] == 3  # 0 is falsy in JavaScript: to falls back to from + 10
    huge = await client.post(url, params={"from": "9" * 5000}, data={"addrs": ADDR_A})
    assert huge.status_code == 200 and huge.json()["items"] == []  # far past the end, no crash
    many = await client.get(f"{sandbox.rest}/status?" + "&".join(f"k{i}=1" for i in range(3000)))
    assert many.status_code == 200


async def test_tx_block_addr_and_utxo_routes_serve_the_chain(sandbox, client):
    paid = await sandbox.network.pay([(ADDR_A, 21247964)], lock=False)
    (block_hash,) = await sandbox.network.mine()
    tx = (await client.get(f"{sandbox.rest}/tx/{paid['txid']}")).json()
    assert (tx["blockhash"], tx["confirmations"], tx["txlock"]) == (block_hash, 1, True)
    block = (await client.get(f"{sandbox.rest}/block/{block_hash}")).json()
    assert paid["txid"] in block["tx"] and block["height"] == 1
    index = (await client.get(f"{sandbox.rest}/block-index/1")).json()
    assert index == {"blockHash": block_hash}
    summary = (await client.get(f"{sandbox.rest}/addr/{ADDR_A}")).json()
    assert summary["balanceSat"] == 21247964 and summary["transactions"] == [paid["txid"]]
    balance = await client.get(f"{sandbox.rest}/addr/{ADDR_A}/balance")
    assert balance.json() == 21247964
    utxos = (await client.get(f"{sandbox.rest}/addrs/{ADDR_A},{ADDR_B}/utxo")).json()
    assert [(u["txid"], u["satoshis"], u["height"]) for u in utxos] == [(paid["txid"], 21247964, 1)]
    posted = await client.post(f"{sandbox.rest}/addrs/utxo", data={"addrs": MAINNET_ADDR})
    assert posted.json() == []  # dashd's -5 becomes an empty list on the multi route


async def test_rest_keeps_the_connection_alive_between_requests(sandbox):
    stream = await trio.open_tcp_stream("127.0.0.1", sandbox.port)
    async with stream:
        request = b"GET /insight-api/version HTTP/1.1\r\nHost: x\r\n\r\n"
        await stream.send_all(request + request)  # pipelined on one connection
        received = b""
        with trio.fail_after(STEP):
            while received.count(b'{"version":"3.1.2"}') < 2:
                chunk = await stream.receive_some(65536)
                assert chunk, f"connection closed after {received!r}"
                received += chunk
    assert received.count(b"HTTP/1.1 200") == 2


async def test_the_daemons_rest_client_reads_the_sandbox(sandbox):
    paid = await sandbox.network.pay([(ADDR_A, 150_000_000), (ADDR_B, 1)], lock=False)
    silent = await sandbox.network.pay([(ADDR_B, 7)], lock=False, silent=True)
    await sandbox.network.mine()
    async with InsightRest(sandbox.rest) as rest:
        assert (await rest.status()).network == "testnet"
        history = {tx.txid: tx for tx in await rest.address_history([ADDR_A, ADDR_B])}
        assert dict(history[paid["txid"]].outputs) == {ADDR_A: 150_000_000, ADDR_B: 1}
        assert dict(history[silent["txid"]].outputs) == {ADDR_B: 7}
        assert (await rest.best_chainlock()).height == 1
        assert await rest.tx("e" * 64) is None


# -- websocket ---------------------------------------------------------------------------


async def test_handshake_sends_the_open_packet_then_40_and_answers_pings(sandbox):
    async with open_websocket_url(sandbox.ws_url) as ws:
        opened = await recv(ws)
        assert opened.startswith('0{"sid":"')
        info = json.loads(opened[1:])
        assert list(info) == ["sid", "upgrades", "pingInterval", "pingTimeout"]
        assert len(info["sid"]) == 20
        assert (info["upgrades"], info["pingInterval"], info["pingTimeout"]) == ([], 25000, 20000)
        assert await recv(ws) == "40"
        await ws.send_message("2")
        assert await recv(ws) == "3"
        await ws.send_message("2probe")
        assert await recv(ws) == "3probe"


async def test_subscribed_client_gets_tx_then_txlock_then_block(sandbox):
    async with subscribed(sandbox) as ws:
        paid = await sandbox.network.pay([(ADDR_A, 21247964), (ADDR_B, 13677426)])
        name, payload = await recv_event(ws)
        assert name == "tx"
        assert payload == {
            "txid": paid["txid"],
            "valueOut": 0.3492539,
            "vout": [{ADDR_A: 21247964}, {ADDR_B: 13677426}],
            "isRBF": False,
            "txlock": False,
        }
        name, payload = await recv_event(ws)
        assert (name, payload["txid"], payload["txlock"]) == ("txlock", paid["txid"], True)
        (block_hash,) = await sandbox.network.mine()
        assert await recv(ws) == f'42["block","{block_hash}"]'


async def test_silent_payment_sends_no_event_but_shows_in_history(sandbox, client):
    async with subscribed(sandbox) as ws:
        silent = await sandbox.network.pay([(ADDR_A, 5)], silent=True)
        loud = await sandbox.network.pay([(ADDR_B, 6)], lock=False)
        name, payload = await recv_event(ws)
        assert (name, payload["txid"]) == ("tx", loud["txid"])  # nothing came before it
        await trio.sleep(LOCK_DELAY * 3)  # the silent tx's lock is due by now
        await sandbox.network.mine()
        assert (await recv(ws)).startswith('42["block"')  # and no txlock either
    page = (await client.post(f"{sandbox.rest}/addrs/txs", json={"addrs": ADDR_A})).json()
    assert [item["txid"] for item in page["items"]] == [silent["txid"]]
    assert page["items"][0]["txlock"] is True  # locked, just never announced


async def test_unsubscribed_client_gets_no_events_and_unsubscribe_stops_them(sandbox):
    async with open_websocket_url(sandbox.ws_url) as ws:
        await recv(ws)
        await recv(ws)
        await sandbox.network.pay([(ADDR_A, 1)], lock=False)
        await ws.send_message('42["subscribe","inv"]')
        await ws.send_message("2")
        assert await recv(ws) == "3"  # no tx before the pong: it was not subscribed
        await ws.send_message('42["unsubscribe","inv"]')
        await ws.send_message("2")
        assert await recv(ws) == "3"
        await sandbox.network.mine()
        await ws.send_message("2")
        assert await recv(ws) == "3"  # no block event either


async def test_a_client_40_adds_a_namespace_socket_and_events_arrive_twice(sandbox):
    async with subscribed(sandbox) as ws:
        await ws.send_message("40")
        assert await recv(ws) == "40"
        await ws.send_message('42["subscribe","inv"]')
        await ws.send_message("2")
        assert await recv(ws) == "3"
        (block_hash,) = await sandbox.network.mine()
        assert await recv(ws) == f'42["block","{block_hash}"]'
        assert await recv(ws) == f'42["block","{block_hash}"]'
        # 41 closes only the newest socket; the orphaned first one keeps pushing.
        await ws.send_message("41")
        await ws.send_message("2")
        assert await recv(ws) == "3"
        (block_hash,) = await sandbox.network.mine()
        assert await recv(ws) == f'42["block","{block_hash}"]'
        await ws.send_message("2")
        assert await recv(ws) == "3"


async def test_socket_rpc_answers_get_best_block_hash_with_an_ack(sandbox):
    async with open_websocket_url(sandbox.ws_url) as ws:
        await recv(ws)
        await recv(ws)
        await ws.send_message('421["message",{"method":"getBestBlockHash","params":[]}]')
        assert await recv(ws) == f'431[{{"result":"{sandbox.chain.tip_hash}"}}]'
        await ws.send_message('427["message",{"method":"getBestBlockHash","params":[1]}]')
        assert await recv(ws) == '437[{"error":{"message":"Expected 0 parameter(s)"}}]'


async def test_server_closes_a_silent_client_after_ping_interval_plus_timeout(start_sandbox):
    sandbox = await start_sandbox(ping_interval_ms=150, ping_timeout_ms=150)
    async with open_websocket_url(sandbox.ws_url) as ws:
        opened = json.loads((await recv(ws))[1:])
        assert (opened["pingInterval"], opened["pingTimeout"]) == (150, 150)
        started = trio.current_time()
        await recv(ws)
        with pytest.raises(ConnectionClosed):
            while True:
                await recv(ws)
        assert 0.25 <= trio.current_time() - started < STEP


async def test_a_pinging_client_stays_connected_past_the_timeout(start_sandbox):
    sandbox = await start_sandbox(ping_interval_ms=100, ping_timeout_ms=100)
    async with open_websocket_url(sandbox.ws_url) as ws:
        await recv(ws)
        await recv(ws)
        for _ in range(8):  # 0.6 s, three times interval + timeout
            await trio.sleep(0.075)
            await ws.send_message("2")
            assert await recv(ws) == "3"


async def test_engine_io_garbage_closes_but_a_bad_socket_io_packet_is_ignored(sandbox):
    async with open_websocket_url(sandbox.ws_url) as ws:
        await recv(ws)
        await recv(ws)
        await ws.send_message("42[not json")
        await ws.send_message("2")
        assert await recv(ws) == "3"
        await ws.send_message("x")
        with pytest.raises(ConnectionClosed):
            await recv(ws)


async def test_an_oversized_client_message_closes_the_websocket_with_1009(sandbox):
    async with open_websocket_url(sandbox.ws_url) as ws:
        await recv(ws)
        await recv(ws)
        # The server refuses the message on its frame header, so its close may arrive
        # while the client is still sending the payload.
        with pytest.raises(ConnectionClosed) as closed:
            await ws.send_message("4" + "x" * MAX_WS_MESSAGE_BYTES)
            await recv(ws)
        assert closed.value.reason.code == 1009


async def test_polling_and_unknown_sessions_are_refused_like_engine_io(sandbox, client):
    origin = f"http://127.0.0.1:{sandbox.port}"
    polling = await client.get(f"{origin}/socket.io/", params={"EIO": "3", "transport": "polling"})
    assert polling.status_code == 400
    assert polling.json() == {"code": 0, "message": "Transport unknown"}
    sid = await client.get(
        f"{origin}/socket.io/", params={"EIO": "3", "transport": "polling", "sid": "x"}
    )
    assert sid.json()["code"] == 0  # polling is checked before the session


async def test_the_daemons_socket_client_sees_payments_locks_and_blocks(sandbox):
    watcher = InsightSocket(f"http://127.0.0.1:{sandbox.port}/insight-api")
    send, receive = trio.open_memory_channel(100)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(watcher.run, send)
        with trio.fail_after(STEP):
            assert isinstance(await receive.receive(), SocketConnected)
            paid = await sandbox.network.pay([(ADDR_A, 3), (ADDR_A, 4)], extra_null_data=True)
            seen = await receive.receive()
            assert isinstance(seen, TxObserved)
            assert (seen.txid, dict(seen.outputs), seen.instant_locked) == (
                paid["txid"],
                {ADDR_A: 7},
                False,
            )
            locked = await receive.receive()
            assert isinstance(locked, TxObserved) and locked.instant_locked
            (block_hash,) = await sandbox.network.mine()
            assert await receive.receive() == BlockObserved(block_hash)
        nursery.cancel_scope.cancel()


# -- the network's fan-out -----------------------------------------------------------------


async def test_a_full_subscriber_is_dropped_without_blocking_the_chain_or_others(nursery):
    network = SandboxNetwork(SandboxChain(seed=1), lock_delay=0)
    await nursery.start(network.run)
    slow = network.subscribe(max_buffer=2)
    fast = network.subscribe(max_buffer=100)
    txids = [(await network.pay([(ADDR_A, n + 1)]))["txid"] for n in range(3)]
    assert slow.dropped and slow.closed
    assert not fast.dropped
    received = [fast.receive_nowait() for _ in range(6)]  # tx + txlock for each payment
    assert [(e.name, e.payload["txid"]) for e in received[::2]] == [("tx", t) for t in txids]
    assert network.subscriber_count == 1


def drain(subscription) -> list:
    events = []
    while True:
        try:
            events.append(subscription.receive_nowait())
        except trio.WouldBlock:
            return events


async def test_delayed_lock_is_announced_later_and_skipped_for_a_dropped_tx(nursery):
    network = SandboxNetwork(SandboxChain(seed=1), lock_delay=0.05)
    await nursery.start(network.run)
    with network.subscribe() as events:
        kept = (await network.pay([(ADDR_B, 2)]))["txid"]
        doomed = (await network.pay([(ADDR_A, 3)]))["txid"]
        await network.drop(doomed)  # before its lock is due
        assert [(e.name, e.payload["txid"]) for e in drain(events)] == [
            ("tx", kept),
            ("tx", doomed),
        ]
        await trio.sleep(0.15)
        assert [(e.name, e.payload["txid"]) for e in drain(events)] == [("txlock", kept)]
    assert network.chain.is_locked(kept)
    with pytest.raises(SandboxError, match="--no-lock"):
        await network.drop(kept)


async def test_pay_with_a_delayed_lock_needs_the_network_running():
    network = SandboxNetwork(SandboxChain(seed=1), lock_delay=0.5)
    with pytest.raises(RuntimeError, match="run"):
        await network.pay([(ADDR_A, 1)])
    assert network.chain.mempool_txids() == []


# -- hostile clients ---------------------------------------------------------------------


async def _raw_exchange(port: int, data: bytes) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    received = b""
    async with stream:
        try:
            await stream.send_all(data)
            with trio.fail_after(STEP):
                while chunk := await stream.receive_some(65536):
                    received += chunk
        except trio.BrokenResourceError:
            pass
    return received


async def test_hostile_clients_do_not_disturb_a_concurrent_good_client(sandbox, client):
    answers: dict[str, bytes] = {}
    idle = await trio.open_tcp_stream("127.0.0.1", sandbox.port)  # says nothing at all
    await idle.send_all(b"GET /insight-api/sta")  # and a slowloris half request

    async def hostile(name: str, data: bytes) -> None:
        answers[name] = await _raw_exchange(sandbox.port, data)

    huge_header = b"GET /insight-api/status HTTP/1.1\r\nX: " + b"a" * (MAX_HEADER_BYTES * 2)
    huge_body = (
        b"POST /insight-api/addrs/txs HTTP/1.1\r\nHost: x\r\n"
        + f"Content-Length: {MAX_BODY_BYTES + 1}\r\n\r\n".encode()
    )
    key = base64.b64encode(os.urandom(16))
    bad_ws = (
        b"GET /socket.io/?EIO=3&transport=websocket HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + key + b"\r\n"
        b"\r\n\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"  # then a nonsense frame
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(hostile, "garbage", b"\x16\x03\x01 not http at all\r\n\r\n")
        nursery.start_soon(hostile, "huge_header", huge_header)
        nursery.start_soon(hostile, "huge_body", huge_body)
        nursery.start_soon(hostile, "bad_ws", bad_ws)
        for _ in range(20):
            with trio.fail_after(STEP):
                good = await client.get(f"{sandbox.rest}/status")
            assert good.status_code == 200
    assert answers["garbage"].startswith(b"HTTP/1.1 400")
    assert answers["huge_header"].startswith(b"HTTP/1.1 431")
    assert answers["huge_body"].startswith(b"HTTP/1.1 413")
    assert answers["bad_ws"].startswith(b"HTTP/1.1 101")  # then closed, not crashed
    await idle.aclose()
    assert (await client.get(f"{sandbox.rest}/version")).status_code == 200
