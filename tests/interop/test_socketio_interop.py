"""dashpay's EIO3 client (``InsightSocket``) against the real socket.io 2.4.1 server that
Insight runs, in a node subprocess on loopback (tests/node/insight-peer.js).

Proves what a hand-written codec could get wrong and only the real server can show:
the handshake and subscription work, events arrive parsed, the client never opens a
duplicate namespace socket (a client ``40``), reconnection after the server is killed
delivers new events exactly once, client-driven heartbeats keep a short-timeout link
alive, a server that stops answering is declared dead within pingInterval + pingTimeout,
and a flood of events written back to back (many frames per socket read, frames split
across reads) arrives complete, in order and once, with or without back-pressure.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess

import pytest
import trio

from dashpay.domain.observations import (
    BlockObserved,
    SocketConnected,
    SocketDisconnected,
    TxObserved,
)
from dashpay.net.insight_socket import STATE_CONNECTED, STATE_DISCONNECTED, InsightSocket
from tests.conftest import REPO, require

pytestmark = pytest.mark.node

NODE_DIR = REPO / "tests" / "node"
PEER_JS = NODE_DIR / "insight-peer.js"
START_TIMEOUT = 10.0  # node + socket.io start in ~0.2 s; slow CI machines need more
STEP_TIMEOUT = 5.0  # any single expected line or event

TXID_A = "0f90cf5e03e8b8f8c4468f60fc8328cfcd5617fc2163f485fabfd227c692bf93"
TXID_B = "b85334bf2df35c6dd5b294efe92ffc793a78edff75a2ca666fc296ffb04bbba0"
BLOCK = "0000000000000005dffc9095302167894319765fbd4df76ce2f322aa4e3c2f63"
ADDRESS = "Xpj8oTSYNf6Dspjh2Eb2x3X71WRRjzjLEF"


def tx_payload(txid: str, vout: list[dict], *, txlock: bool = False) -> dict:
    """The shape insight-api's transformInvTransaction emits (protocol section 2)."""
    return {"txid": txid, "valueOut": 0.001, "vout": vout, "isRBF": False, "txlock": txlock}


def node_or_skip() -> str:
    node = shutil.which("node")
    problem = None
    if node is None:
        problem = "`node` is not on PATH"
    elif not (NODE_DIR / "node_modules" / "socket.io").is_dir():
        problem = f"{NODE_DIR}/node_modules is missing (run `npm ci` there, or tests/run)"
    if problem:
        if require("NODE"):
            pytest.fail(f"DASHPAY_REQUIRE_NODE=1 but {problem}")
        pytest.skip(problem)
    return node


class Peer:
    """One insight-peer.js process; talk to it by stdin lines, read its stdout lines."""

    def __init__(self, process: trio.Process, port: int, buffer: bytes) -> None:
        self.process = process
        self.port = port
        self._buffer = buffer
        self.lines: list[str] = []  # everything read so far

    @classmethod
    async def start(
        cls, node: str, port: int = 0, ping_interval: int = 25000, ping_timeout: int = 5000
    ):
        process = await trio.lowlevel.open_process(
            [
                node,
                str(PEER_JS),
                "--port",
                str(port),
                "--ping-interval",
                str(ping_interval),
                "--ping-timeout",
                str(ping_timeout),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=NODE_DIR,
        )
        peer = cls(process, 0, b"")
        line = await peer.expect("listening", timeout=START_TIMEOUT)
        peer.port = int(line.split()[1])
        return peer

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/insight-api"

    async def _readline(self) -> str:
        while b"\n" not in self._buffer:
            chunk = await self.process.stdout.receive_some(65536)
            if not chunk:
                raise AssertionError(f"peer exited; its output was: {self.lines}")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        text = line.decode()
        self.lines.append(text)
        return text

    async def expect(self, prefix: str, timeout: float = STEP_TIMEOUT) -> str:
        with trio.fail_after(timeout):
            while True:
                line = await self._readline()
                if line.startswith("error"):
                    raise AssertionError(line)
                if line.startswith(prefix):
                    return line

    async def command(self, command: dict) -> None:
        await self.process.stdin.send_all((json.dumps(command) + "\n").encode())

    async def emit(self, name: str, payload: object, *, receivers: int = 1) -> None:
        await self.command({"emit": name, "payload": payload})
        assert await self.expect("emitted") == f"emitted {name} {receivers}"

    async def stats(self) -> dict:
        await self.command({"stats": True})
        return json.loads((await self.expect("stats")).split(" ", 1)[1])

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.kill()  # SIGKILL also ends a SIGSTOPped process
        await self.process.wait()


@pytest.fixture
def node() -> str:
    """Checked outside trio, so a skip keeps its reason."""
    return node_or_skip()


@pytest.fixture
async def peers(node):
    """Start peers with ``await start(...)``; every one is killed at the end."""
    started: list[Peer] = []

    async def start(**kwargs) -> Peer:
        peer = await Peer.start(node, **kwargs)
        started.append(peer)
        return peer

    yield start
    for peer in started:
        await peer.stop()


class Client:
    """An InsightSocket running in a nursery, with its output channel."""

    def __init__(self, socket: InsightSocket, receive: trio.MemoryReceiveChannel) -> None:
        self.socket = socket
        self.receive = receive

    async def next(self, timeout: float = STEP_TIMEOUT) -> object:
        with trio.fail_after(timeout):
            return await self.receive.receive()

    async def nothing_more(self, wait: float) -> None:
        with trio.move_on_after(wait):
            extra = await self.receive.receive()
            raise AssertionError(f"unexpected extra message: {extra!r}")


@pytest.fixture
async def client_for(nursery):
    def start(url: str, buffer: int = 1000, **kwargs) -> Client:
        options = {"reconnect_initial": 0.05, "reconnect_max": 0.2, "connect_timeout": 2.0}
        options.update(kwargs)
        socket = InsightSocket(url, **options)
        send, receive = trio.open_memory_channel(buffer)
        nursery.start_soon(socket.run, send)
        return Client(socket, receive)

    return start


async def connected(peer: Peer, client: Client) -> None:
    """Wait until the client reports the link and the server has the subscription."""
    assert isinstance(await client.next(), SocketConnected)
    await peer.expect("subscribed")


async def test_connects_subscribes_and_receives_tx_txlock_and_block_parsed(peers, client_for):
    peer = await peers()
    client = client_for(peer.url)
    await connected(peer, client)
    assert client.socket.state == STATE_CONNECTED

    vout = [{ADDRESS: 99608}, {"XxFKyXX1ibFAn4s4VLVZodgBeciLWhu8o9": 5}, {ADDRESS: 1}]
    await peer.emit("tx", tx_payload(TXID_A, vout))
    await peer.emit("txlock", tx_payload(TXID_A, vout, txlock=True))
    await peer.emit("block", BLOCK)

    expected_outputs = {ADDRESS: 99609, "XxFKyXX1ibFAn4s4VLVZodgBeciLWhu8o9": 5}
    tx = await client.next()
    assert isinstance(tx, TxObserved)
    assert (tx.txid, dict(tx.outputs), tx.instant_locked) == (TXID_A, expected_outputs, False)
    locked = await client.next()
    assert (locked.txid, dict(locked.outputs), locked.instant_locked) == (
        TXID_A,
        expected_outputs,
        True,
    )
    assert await client.next() == BlockObserved(BLOCK)
    assert client.socket.events_received == 3
    assert client.socket.last_event_at is not None


async def test_bad_frames_and_foreign_events_are_skipped_and_the_link_survives(peers, client_for):
    peer = await peers()
    client = client_for(peer.url)
    await connected(peer, client)

    await peer.emit("tx", tx_payload(TXID_A, [{ADDRESS: 1.5}]))  # float amount
    await peer.emit("block", {"hash": BLOCK})  # not the bare hash
    await peer.emit("dashd/hashblock", BLOCK)  # a stream we did not ask for
    await peer.emit("somethingnew", 1)
    await peer.command({"raw": '42["tx",{"txid":'})  # truncated JSON
    await peer.expect("sent")
    await peer.command({"raw": "451-[]"})  # binary packet
    await peer.expect("sent")
    await peer.emit("block", BLOCK)

    assert await client.next() == BlockObserved(BLOCK)
    assert client.socket.events_rejected == 4
    assert client.socket.events_ignored == 2
    assert client.socket.state == STATE_CONNECTED


async def test_oversized_frame_is_skipped_without_dropping_the_link(peers, client_for):
    peer = await peers()
    client = client_for(peer.url, max_message_bytes=1000)
    await connected(peer, client)
    big = tx_payload(TXID_A, [{ADDRESS: n} for n in range(40)])
    assert 1000 < len(json.dumps(["tx", big])) < 4000
    await peer.emit("tx", big)
    await peer.emit("block", BLOCK)
    assert await client.next() == BlockObserved(BLOCK)
    assert client.socket.events_rejected == 1
    assert client.socket.reconnects == 0


async def test_frame_beyond_the_hard_limit_drops_the_link_and_the_client_comes_back(
    peers, client_for
):
    peer = await peers()
    client = client_for(peer.url, max_message_bytes=1000)
    await connected(peer, client)
    huge = tx_payload(TXID_A, [{ADDRESS: n} for n in range(200)])  # > 4 x 1000 characters
    await peer.emit("tx", huge)
    lost = await client.next()
    assert isinstance(lost, SocketDisconnected)
    assert "1009" in lost.reason
    await connected(peer, client)
    assert client.socket.reconnects == 1


async def test_client_never_sends_40_so_each_event_arrives_once(peers, client_for):
    peer = await peers()
    client = client_for(peer.url)
    await connected(peer, client)
    await peer.emit("block", BLOCK)
    assert await client.next() == BlockObserved(BLOCK)
    await client.nothing_more(0.3)

    (connection,) = (await peer.stats())["connections"].values()
    assert connection["namespace_connects"] == 1  # a client `40` would make it 2
    assert connection["namespace_sockets"] == 1


async def test_reconnects_after_kill_9_and_restart_and_delivers_each_event_once(peers, client_for):
    peer = await peers()
    client = client_for(peer.url)
    await connected(peer, client)
    await peer.emit("tx", tx_payload(TXID_A, [{ADDRESS: 10}]))
    assert (await client.next()).txid == TXID_A

    port = peer.port
    await peer.stop()  # SIGKILL: no close frame, the TCP connection just ends
    lost = await client.next()
    assert isinstance(lost, SocketDisconnected)
    assert client.socket.state == STATE_DISCONNECTED
    assert client.socket.disconnected_since is not None

    await trio.sleep(0.3)  # a few failed attempts against a closed port
    restarted = await peers(port=port)
    await connected(restarted, client)
    assert client.socket.state == STATE_CONNECTED
    assert client.socket.reconnects == 1

    await restarted.emit("tx", tx_payload(TXID_B, [{ADDRESS: 20}]))
    second = await client.next()
    assert (second.txid, dict(second.outputs)) == (TXID_B, {ADDRESS: 20})
    await client.nothing_more(0.3)
    assert client.socket.events_received == 2
    (connection,) = (await restarted.stats())["connections"].values()
    assert connection["namespace_connects"] == 1


async def test_client_pings_keep_a_short_timeout_link_up(peers, client_for):
    interval = timeout = 300  # ms: the server closes the link after 600 ms of silence
    peer = await peers(ping_interval=interval, ping_timeout=timeout)
    client = client_for(peer.url)
    await connected(peer, client)
    await client.nothing_more(6 * interval / 1000)  # six intervals: no SocketDisconnected

    (connection,) = (await peer.stats())["connections"].values()
    assert connection["pings"] >= 5
    assert not [line for line in peer.lines if line.startswith("closed")]
    assert client.socket.state == STATE_CONNECTED
    assert client.socket.reconnects == 0
    await peer.emit("block", BLOCK)
    assert await client.next() == BlockObserved(BLOCK)


async def test_slow_consumer_does_not_make_a_live_link_look_dead(peers, client_for):
    interval = timeout = 300
    peer = await peers(ping_interval=interval, ping_timeout=timeout)
    client = client_for(peer.url, buffer=0)  # every event waits for the consumer
    assert isinstance(await client.next(), SocketConnected)
    await peer.expect("subscribed")
    hashes = [f"{n:064x}" for n in range(5)]
    for block_hash in hashes:
        await peer.emit("block", block_hash)
    await trio.sleep(2 * (interval + timeout) / 1000)  # consumer busy elsewhere

    received = [await client.next() for _ in hashes]
    assert received == [BlockObserved(h) for h in hashes]
    await client.nothing_more(0.3)
    assert client.socket.state == STATE_CONNECTED
    assert not [line for line in peer.lines if line.startswith("closed")]
    (connection,) = (await peer.stats())["connections"].values()
    assert connection["pings"] >= 4  # the heartbeat kept going while the reader waited


async def test_server_that_stops_answering_is_declared_dead_within_ping_interval_plus_timeout(
    peers, client_for
):
    interval = timeout = 300
    peer = await peers(ping_interval=interval, ping_timeout=timeout)
    client = client_for(peer.url)
    await connected(peer, client)

    os.kill(peer.process.pid, signal.SIGSTOP)  # TCP stays up; nothing answers any more
    try:
        stopped_at = trio.current_time()
        lost = await client.next(timeout=5.0)
        elapsed = trio.current_time() - stopped_at
    finally:
        os.kill(peer.process.pid, signal.SIGCONT)
    assert isinstance(lost, SocketDisconnected)
    assert "no pong" in lost.reason
    # Worst case: the last ping went out just before the stop, the next is due one
    # interval later and its pong deadline one timeout after that.
    assert elapsed <= (interval + timeout) / 1000 + 0.5  # scheduling slack
    assert client.socket.state == STATE_DISCONNECTED


async def test_unreachable_server_keeps_retrying_and_logs_the_outage_once(
    peers, client_for, caplog
):
    caplog.set_level(logging.DEBUG, logger="dashpay.insight.socketio")
    probe = await peers()
    port = probe.port
    await probe.stop()
    client = client_for(f"ws://127.0.0.1:{port}")
    await trio.sleep(0.8)  # several attempts at 0.05..0.2 s apart
    assert client.socket.state == "connecting"
    attempts = [r for r in caplog.records if "attempt" in r.getMessage()]
    warnings = [r for r in attempts if r.levelno == logging.WARNING]
    assert len(attempts) >= 4
    assert len(warnings) == 1
    assert "down since" in warnings[0].getMessage()

    peer = await peers(port=port)
    await connected(peer, client)
    assert client.socket.reconnects == 0  # the first connection is not a reconnect
    (line,) = [r.getMessage() for r in caplog.records if "socket connected" in r.getMessage()]
    assert "down_for=" in line


FLOOD_VOUT = [
    {"XxFKyXX1ibFAn4s4VLVZodgBeciLWhu8o9": 150000},
    {"XbtnNHEBVbXQWZ5WTtB5ZqfVhULkUFnEZh": 99850000},
]


async def flood_and_collect(peer: Peer, client: Client, count: int, *, slow: bool) -> list:
    await peer.command({"flood": count, "payload": tx_payload("00", FLOOD_VOUT)})
    received = []
    while len(received) < count:
        received.append(await client.next())
        if slow and len(received) % 500 == 0:
            await trio.sleep(0.05)  # a busy engine: the reader must wait, not drop
    assert await peer.expect("flooded") == f"flooded {count} 1"
    return received


@pytest.mark.parametrize(("buffer", "slow"), [(100_000, False), (8, True)])
async def test_a_flood_of_events_arrives_complete_in_order_and_once(
    peers, client_for, buffer, slow
):
    count = 20_000
    peer = await peers()
    client = client_for(peer.url, buffer=buffer)
    await connected(peer, client)

    received = await flood_and_collect(peer, client, count, slow=slow)
    assert [tx.txid for tx in received] == [f"{n:064x}" for n in range(count)]
    outputs = {address: duffs for entry in FLOOD_VOUT for address, duffs in entry.items()}
    assert all(type(tx) is TxObserved and dict(tx.outputs) == outputs for tx in received)
    assert client.socket.events_received == count
    assert client.socket.events_rejected == 0
    await client.nothing_more(0.3)

    # The link is still healthy afterwards: the next event arrives, no reconnect.
    await peer.emit("block", BLOCK)
    assert await client.next() == BlockObserved(BLOCK)
    assert client.socket.reconnects == 0
    assert client.socket.state == STATE_CONNECTED
