"""InsightSocket against a hand-driven websocket server on loopback (plain TCP and TLS).

The real socket.io server (tests/interop) only ever behaves; this one misbehaves on
purpose, at the websocket layer: a refused or forged upgrade, masked or reserved frames,
a close handshake, websocket-level pings, fragmented messages, and TLS with a
certificate we do or do not trust. Each proves the client ends the link with a clear
reason (or answers as RFC 6455 requires) and comes back, never crashing.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import shutil
import ssl
import subprocess
from collections.abc import Awaitable, Callable
from functools import partial

import pytest
import trio

from dashpay.domain.observations import BlockObserved, SocketConnected, SocketDisconnected
from dashpay.net.insight_socket import STATE_CONNECTING, InsightSocket

STEP = 5.0
BLOCK = "0000000000000005dffc9095302167894319765fbd4df76ce2f322aa4e3c2f63"
OPEN = "0" + json.dumps({"sid": "wire", "upgrades": [], "pingInterval": 25000, "pingTimeout": 5000})


def frame(opcode: int, payload: bytes, *, fin: bool = True, mask: bytes | None = None) -> bytes:
    """A server frame laid out by hand (RFC 6455 section 5.2)."""
    first = (0x80 if fin else 0) | opcode
    size = len(payload)
    mask_bit = 0x80 if mask else 0
    if size < 126:
        head = bytes((first, mask_bit | size))
    else:
        head = bytes((first, mask_bit | 126)) + size.to_bytes(2, "big")
    if mask:
        return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + payload


def text(message: str) -> bytes:
    return frame(0x1, message.encode())


class Peer:
    """One accepted connection, after the upgrade: read the client's frames, write ours."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.buffer = b""

    async def _fill(self, size: int) -> None:
        while len(self.buffer) < size:
            chunk = await self.stream.receive_some(65536)
            if not chunk:
                raise EOFError("client closed the connection")
            self.buffer += chunk

    async def read_frame(self) -> tuple[int, bytes]:
        """The client's next frame (opcode, unmasked payload); it must be masked."""
        await self._fill(2)
        first, second = self.buffer[0], self.buffer[1]
        assert second & 0x80, "client frames must be masked"
        size, header = second & 0x7F, 2
        if size == 126:
            await self._fill(4)
            size, header = int.from_bytes(self.buffer[2:4], "big"), 4
        await self._fill(header + 4 + size)
        key = self.buffer[header : header + 4]
        body = self.buffer[header + 4 : header + 4 + size]
        self.buffer = self.buffer[header + 4 + size :]
        return first & 0x0F, bytes(b ^ key[i % 4] for i, b in enumerate(body))

    async def read_text_until(self, wanted: str) -> None:
        while True:
            opcode, payload = await self.read_frame()
            if opcode == 0x1 and payload.decode() == wanted:
                return

    async def subscribed(self) -> None:
        """Send the open packet and `40`, then wait for the client's subscription."""
        await self.stream.send_all(text(OPEN) + text("40"))
        await self.read_text_until('42["subscribe","inv"]')


Behaviour = Callable[[Peer], Awaitable[None]]


class WireServer:
    """Accepts connections; each runs the next behaviour (the last one repeats)."""

    def __init__(self, behaviours: list[Behaviour], *, refuse: bytes | None = None) -> None:
        self.behaviours = behaviours
        self.refuse = refuse  # answer every upgrade with this response head instead
        self.connections = 0
        self.port = 0
        self.failures: list[BaseException] = []

    async def handle(self, stream: trio.abc.Stream) -> None:
        async with stream:
            await self._handle(stream)

    async def _handle(self, stream: trio.abc.Stream) -> None:
        index = min(self.connections, len(self.behaviours) - 1)
        self.connections += 1
        request = b""
        try:
            while b"\r\n\r\n" not in request:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    return
                request += chunk
            head, _, rest = request.partition(b"\r\n\r\n")
            if self.refuse is not None:
                await stream.send_all(self.refuse + b"\r\n\r\n")
                return
            key = next(
                line.split(b":", 1)[1].strip()
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"sec-websocket-key:")
            )
            digest = hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest()
            await stream.send_all(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Accept: "
                + base64.b64encode(digest)
                + b"\r\n\r\n"
            )
            peer = Peer(stream)
            peer.buffer = rest
            await self.behaviours[index](peer)
        except (trio.BrokenResourceError, trio.ClosedResourceError, EOFError):
            pass
        except BaseException as exc:  # an assertion in a behaviour: report it
            self.failures.append(exc)
            raise

    async def serve(self, nursery: trio.Nursery, ssl_context: ssl.SSLContext | None = None):
        if ssl_context is None:
            serve = partial(trio.serve_tcp, self.handle, 0, host="127.0.0.1")
        else:
            serve = partial(trio.serve_ssl_over_tcp, self.handle, 0, ssl_context, host="127.0.0.1")
        (listener,) = await nursery.start(serve)
        tcp = listener if ssl_context is None else listener.transport_listener
        self.port = tcp.socket.getsockname()[1]


async def hold(peer: Peer) -> None:
    await peer.subscribed()
    await trio.sleep_forever()


def start_client(nursery, url: str, **kwargs) -> tuple[InsightSocket, trio.MemoryReceiveChannel]:
    options = {"reconnect_initial": 0.05, "reconnect_max": 0.1, "connect_timeout": 2.0}
    options.update(kwargs)
    socket = InsightSocket(url, **options)
    send, receive = trio.open_memory_channel(100)
    nursery.start_soon(socket.run, send)
    return socket, receive


async def next_of(receive: trio.MemoryReceiveChannel) -> object:
    with trio.fail_after(STEP):
        return await receive.receive()


async def test_a_refused_upgrade_is_retried_and_logged_with_its_status(nursery, caplog):
    caplog.set_level(logging.DEBUG, logger="dashpay.insight.socketio")
    server = WireServer([hold], refuse=b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0")
    await server.serve(nursery)
    socket, _ = start_client(nursery, f"http://127.0.0.1:{server.port}")
    with trio.fail_after(STEP):
        while server.connections < 3:
            await trio.sleep(0.02)
    assert socket.state == STATE_CONNECTING
    messages = [r.getMessage() for r in caplog.records]
    assert any("server refused the websocket upgrade (HTTP 403 Forbidden)" in m for m in messages)


async def loss_after(nursery, sent: bytes) -> tuple[InsightSocket, SocketDisconnected, list]:
    """The server subscribes the client, writes ``sent`` and records the client's next
    frame; the next connection just holds. Returns the client once it is back, the loss
    it reported, and the recorded frames."""
    answers: list[tuple[int, bytes]] = []

    async def misbehave(peer: Peer) -> None:
        await peer.subscribed()
        await peer.stream.send_all(sent)
        answers.append(await peer.read_frame())

    server = WireServer([misbehave, hold])
    await server.serve(nursery)
    socket, receive = start_client(nursery, f"ws://127.0.0.1:{server.port}")
    assert isinstance(await next_of(receive), SocketConnected)
    lost = await next_of(receive)
    assert isinstance(lost, SocketDisconnected)
    assert isinstance(await next_of(receive), SocketConnected)
    assert socket.reconnects == 1
    assert not server.failures
    return socket, lost, answers


async def test_a_masked_server_frame_ends_the_link_with_1002_and_the_client_returns(nursery):
    masked = frame(0x1, b'42["block","x"]', mask=b"\x01\x02\x03\x04")
    _, lost, answers = await loss_after(nursery, masked)
    assert "masked" in lost.reason and "1002" in lost.reason
    assert answers == [(0x8, (1002).to_bytes(2, "big"))]


async def test_the_server_close_is_answered_and_reported(nursery):
    close = frame(0x8, (1001).to_bytes(2, "big") + b"restarting")
    _, lost, answers = await loss_after(nursery, close)
    assert lost.reason == "websocket closed by the server (code 1001: restarting)"
    assert answers == [(0x8, (1001).to_bytes(2, "big"))]


async def test_pings_get_pongs_and_fragmented_events_arrive_whole(nursery):
    pongs: list[tuple[int, bytes]] = []
    answered = trio.Event()

    async def chatty(peer: Peer) -> None:
        await peer.subscribed()
        message = f'42["block","{BLOCK}"]'.encode()
        await peer.stream.send_all(
            frame(0x1, message[:5], fin=False)
            + frame(0x9, b"ws-ping")  # a ping between the fragments
            + frame(0x0, message[5:20], fin=False)
        )
        await trio.sleep(0.05)  # the rest in a later read
        await peer.stream.send_all(frame(0x0, message[20:]))
        pongs.append(await peer.read_frame())
        answered.set()
        await trio.sleep_forever()

    server = WireServer([chatty])
    await server.serve(nursery)
    socket, receive = start_client(nursery, f"ws://127.0.0.1:{server.port}")
    assert isinstance(await next_of(receive), SocketConnected)
    assert await next_of(receive) == BlockObserved(BLOCK)
    with trio.fail_after(STEP):
        await answered.wait()
    assert pongs == [(0xA, b"ws-ping")]
    assert socket.reconnects == 0 and socket.events_received == 1


async def test_a_connection_dropped_without_close_frame_is_a_clear_loss(nursery):
    async def vanish(peer: Peer) -> None:
        await peer.subscribed()
        await peer.stream.aclose()

    server = WireServer([vanish, hold])
    await server.serve(nursery)
    _, receive = start_client(nursery, f"ws://127.0.0.1:{server.port}")
    assert isinstance(await next_of(receive), SocketConnected)
    lost = await next_of(receive)
    assert "without a websocket close frame" in lost.reason
    assert isinstance(await next_of(receive), SocketConnected)


# -- TLS ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 (openssl CLI): (cert file, key file)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return str(cert), str(key)


def server_context(certificate: tuple[str, str]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    return context


async def test_wss_works_with_a_trusted_certificate(nursery, certificate):
    server = WireServer([hold])
    await server.serve(nursery, server_context(certificate))
    trusting = ssl.create_default_context(cafile=certificate[0])
    socket, receive = start_client(
        nursery, f"https://127.0.0.1:{server.port}", ssl_context=trusting
    )
    assert isinstance(await next_of(receive), SocketConnected)
    assert socket.endpoint.tls


async def test_wss_refuses_an_untrusted_certificate(nursery, certificate, caplog):
    caplog.set_level(logging.DEBUG, logger="dashpay.insight.socketio")
    server = WireServer([hold])
    await server.serve(nursery, server_context(certificate))
    socket, _ = start_client(nursery, f"wss://127.0.0.1:{server.port}")  # system CAs only
    with trio.fail_after(STEP):
        while server.connections < 2:
            await trio.sleep(0.02)
    await trio.sleep(0.1)
    assert socket.state == STATE_CONNECTING
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "CERTIFICATE_VERIFY_FAILED" in messages


async def test_an_event_that_pays_nobody_stops_at_the_socket_and_bad_ones_are_still_refused(
    nursery,
):
    watched_address = "yQtw3ZQ8v8KDHfKaVudJGUTgkdVGKhV8Gy"
    other_address = "yMeNHpXFSbH6Mz3c5QWYZNTHDhHYAJtcBn"

    def tx(address: str, duffs: object, txid: str) -> str:
        return "42" + json.dumps(["tx", {"txid": txid, "vout": [{address: duffs}]}])

    async def events(peer: Peer) -> None:
        await peer.subscribed()
        await peer.stream.send_all(
            text(tx(other_address, 5, "a" * 64))  # pays nobody watched: counted, dropped
            + text(tx(other_address, -5, "b" * 64))  # pays nobody, but malformed: refused
            + text(tx(watched_address, 7, "c" * 64))  # pays a watched address: handed over
        )
        await trio.sleep_forever()

    server = WireServer([events])
    await server.serve(nursery)
    socket, receive = start_client(nursery, f"ws://127.0.0.1:{server.port}")
    unmatched: list[int] = []
    socket.watched = ({watched_address}, ())
    socket.unmatched = unmatched.append
    assert isinstance(await next_of(receive), SocketConnected)
    paid = await next_of(receive)
    assert paid.txid == "c" * 64 and dict(paid.outputs) == {watched_address: 7}
    assert unmatched == [1]
    assert socket.events_received == 2 and socket.events_rejected == 1


async def test_a_read_of_many_events_is_one_pass_that_drops_counts_and_hands_over_in_order(
    nursery,
):
    pending_address = "yQtw3ZQ8v8KDHfKaVudJGUTgkdVGKhV8Gy"
    announced_address = "yTJd2uBq5UDKLmqcbFo3Hge8RMmwQnXiNR"
    other_address = "yMeNHpXFSbH6Mz3c5QWYZNTHDhHYAJtcBn"

    def event(name: str, address: str, duffs: object, txid: str, ack: str = "") -> bytes:
        body = json.dumps([name, {"txid": txid, "vout": [{other_address: 1}, {address: duffs}]}])
        return text("42" + ack + body)

    async def events(peer: Peer) -> None:
        await peer.subscribed()
        await peer.stream.send_all(
            event("tx", other_address, 5, "a" * 64)  # pay nobody: dropped at the socket
            + event("tx", other_address, 6, "b" * 64)
            + event("txlock", other_address, 7, "c" * 64)
            + event("tx", other_address, 8, "d" * 64, ack="12")  # pays nobody, the long way
            + event("txlock", pending_address, 9, "e" * 64)  # a pending receiver's
            + event("tx", other_address, 1.5, "f" * 64)  # pays nobody, malformed: refused
            + event("tx", announced_address, 10, "0" * 64)  # one being created
            + event("tx", other_address, 11, "1" * 64)
        )
        await trio.sleep_forever()

    server = WireServer([events])
    await server.serve(nursery)
    socket, receive = start_client(nursery, f"ws://127.0.0.1:{server.port}")
    unmatched: list[int] = []
    socket.watched = ({pending_address: object()}, {announced_address: 1})
    socket.unmatched = unmatched.append
    assert isinstance(await next_of(receive), SocketConnected)
    locked = await next_of(receive)
    assert (locked.txid, locked.instant_locked) == ("e" * 64, True)
    assert dict(locked.outputs) == {other_address: 1, pending_address: 9}
    created = await next_of(receive)
    assert created.txid == "0" * 64 and dict(created.outputs)[announced_address] == 10
    with trio.fail_after(STEP):
        while sum(unmatched) < 5:
            await trio.sleep(0.01)
    assert sum(unmatched) == 5 and all(count >= 1 for count in unmatched)
    assert socket.events_received == 7 and socket.events_rejected == 1
    assert socket.last_event_at is not None
