"""The callback poster (services/http_post.py) against real servers on loopback: a
scripted trio TCP server for what a well-behaved stdlib server never does (hostile
status lines and headers, closing at awkward moments, huge and dripping bodies), and
the stdlib HTTPS server with a throw-away CA for TLS."""

from __future__ import annotations

import socket
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial

import h11
import pytest
import trio
import trio.testing

from dashpay.config.model import CallbacksConfig
from dashpay.domain.errors import InvalidParams
from dashpay.net.guard import TargetRefused, check_creation_target, checked_addresses
from dashpay.net.http_post import BadResponse, ConnectFailed, HttpPoster, PostResponse, TlsFailed
from tests.integration.conftest import free_port

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
HEADERS = [("Content-Type", "application/json")]


async def loopback(host: str, port: int) -> list[str]:
    return ["127.0.0.1"]


def poster(**overrides) -> HttpPoster:
    options = {"max_body": 16 * 1024, "body_seconds": 1.0} | overrides
    return HttpPoster(options.pop("guard", loopback), **options)


@dataclass
class Conversation:
    """What one connection to the scripted server saw."""

    requests: list[bytes] = field(default_factory=list)  # request bodies, in order


Script = Callable[[trio.SocketStream, Conversation, int], Awaitable[None]]


async def read_request(stream: trio.SocketStream, parser: h11.Connection) -> bytes | None:
    """The body of the next request on the connection, or None at EOF."""
    body = b""
    while True:
        event = parser.next_event()
        if event is h11.NEED_DATA:
            try:
                data = await stream.receive_some(65536)
            except trio.BrokenResourceError:
                return None
            if not data:
                return None
            parser.receive_data(data)
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            return body
        elif isinstance(event, h11.ConnectionClosed):
            return None


@dataclass
class Server:
    port: int = 0
    conversations: list[Conversation] = field(default_factory=list)

    def url(self, path: str = "/cb") -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@asynccontextmanager
async def scripted_server(script: Script) -> AsyncIterator[Server]:
    """A TCP server on 127.0.0.1 where ``script(stream, conversation, index)`` plays
    each connection (index counts connections from 0)."""
    server = Server()

    async def handle(stream: trio.SocketStream) -> None:
        conversation = Conversation()
        server.conversations.append(conversation)
        try:
            await script(stream, conversation, len(server.conversations) - 1)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await trio.aclose_forcefully(stream)

    async with trio.open_nursery() as nursery:
        [listener] = await nursery.start(partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
        server.port = listener.socket.getsockname()[1]
        yield server
        nursery.cancel_scope.cancel()


def answering(reply: bytes, *, close_after: bool = False) -> Script:
    """On each connection: read one request, send ``reply`` as raw bytes, then hang up
    (``close_after``) or wait."""

    async def script(stream: trio.SocketStream, seen: Conversation, index: int) -> None:
        body = await read_request(stream, h11.Connection(h11.SERVER))
        if body is None:
            return
        seen.requests.append(body)
        await stream.send_all(reply)
        if not close_after:
            await trio.sleep_forever()

    return script


async def keep_alive_ok(stream: trio.SocketStream, seen: Conversation, index: int) -> None:
    parser = h11.Connection(h11.SERVER)
    while True:
        body = await read_request(stream, parser)
        if body is None:
            return
        seen.requests.append(body)
        await stream.send_all(OK)
        parser.send(h11.Response(status_code=200, headers=[("Content-Length", "2")]))
        parser.send(h11.Data(data=b"ok"))
        parser.send(h11.EndOfMessage())
        parser.start_next_cycle()


# -- keep-alive -------------------------------------------------------------------------


async def test_one_kept_alive_connection_carries_every_request():
    client = poster()
    async with scripted_server(keep_alive_ok) as server:
        answers = [await client.post(server.url(), HEADERS, b'{"n":%d}' % n) for n in range(5)]
    assert [(a.status, a.body) for a in answers] == [(200, b"ok")] * 5
    assert len(server.conversations) == 1 and client.connections_made == 1
    assert server.conversations[0].requests == [b'{"n":%d}' % n for n in range(5)]


async def test_headers_reach_a_strict_parser_intact_with_host_and_length_first():
    seen_heads: list[h11.Request] = []

    async def record_head(stream: trio.SocketStream, seen: Conversation, index: int) -> None:
        parser = h11.Connection(h11.SERVER)  # raises on anything malformed
        while not isinstance(event := parser.next_event(), h11.Request):
            parser.receive_data(await stream.receive_some(65536))
        seen_heads.append(event)
        seen.requests.append(await read_request(stream, parser) or b"")
        await stream.send_all(OK)

    headers = [
        ("Content-Type", "application/json"),
        ("Dashpay-Event", "receiver.paid"),
        ("Dashpay-Signature", "t=1764141251,v1=00ff"),
    ]
    client = poster()
    async with scripted_server(record_head) as server:
        answer = await client.post(server.url("/cb?shop=1"), headers, b'{"a":1}')
    assert answer.status == 200
    [head] = seen_heads
    assert head.method == b"POST" and head.target == b"/cb?shop=1"
    assert [(bytes(k), bytes(v)) for k, v in head.headers] == [
        (b"host", f"127.0.0.1:{server.port}".encode()),
        (b"content-length", b"7"),
        (b"content-type", b"application/json"),
        (b"dashpay-event", b"receiver.paid"),
        (b"dashpay-signature", b"t=1764141251,v1=00ff"),
    ]
    assert server.conversations[0].requests == [b'{"a":1}']


@pytest.mark.parametrize(
    "header",
    [
        ("Dashpay-Event", "paid\r\nX-Injected: 1"),
        ("Dashpay-Event", "paid\n"),
        ("Dashpay-Event", " leading-space"),
        ("Bad Name", "x"),
        ("Dashpay-Event", "caf\u00e9"),
    ],
)
async def test_a_header_that_could_smuggle_another_is_refused_before_connecting(header):
    client = poster()
    async with scripted_server(keep_alive_ok) as server:
        with pytest.raises(ValueError, match="invalid request header"):
            await client.post(server.url(), [header], b"{}")
    assert server.conversations == [] and client.connections_made == 0


async def test_connection_close_in_the_answer_is_honoured():
    reply = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
    client = poster()
    async with scripted_server(answering(reply, close_after=True)) as server:
        for _ in range(3):
            assert (await client.post(server.url(), HEADERS, b"{}")).status == 200
    assert len(server.conversations) == 3 and client.connections_made == 3


async def test_an_idle_connection_the_server_closed_is_not_reused():
    closed = trio.Event()

    async def answer_then_hang_up(stream, seen: Conversation, index: int) -> None:
        parser = h11.Connection(h11.SERVER)
        body = await read_request(stream, parser)
        seen.requests.append(body)
        await stream.send_all(OK)  # keep-alive as far as the client can tell
        if index == 0:
            await stream.aclose()
            closed.set()
            return
        await trio.sleep_forever()

    client = poster()
    async with scripted_server(answer_then_hang_up) as server:
        assert (await client.post(server.url(), HEADERS, b"1")).status == 200
        await closed.wait()
        await trio.testing.wait_all_tasks_blocked()
        assert (await client.post(server.url(), HEADERS, b"2")).status == 200
    # The close was seen before sending: a new connection, and nothing sent twice.
    assert [c.requests for c in server.conversations] == [[b"1"], [b"2"]]
    assert client.stale_retries == 0


async def test_a_reused_connection_that_dies_before_answering_is_retried_once():
    async def answer_once_then_drop(stream, seen: Conversation, index: int) -> None:
        parser = h11.Connection(h11.SERVER)
        seen.requests.append(await read_request(stream, parser))
        if index == 0:
            await stream.send_all(OK)
            parser = h11.Connection(h11.SERVER)  # a fresh parser for the next request
            seen.requests.append(await read_request(stream, parser))
            return  # read the second request, hang up without a word
        await stream.send_all(OK)
        await trio.sleep_forever()

    client = poster()
    async with scripted_server(answer_once_then_drop) as server:
        assert (await client.post(server.url(), HEADERS, b"first")).status == 200
        assert (await client.post(server.url(), HEADERS, b"second")).status == 200
    assert [c.requests for c in server.conversations] == [[b"first", b"second"], [b"second"]]
    assert client.stale_retries == 1


async def test_a_fresh_connection_that_dies_before_answering_is_not_retried():
    async def drop(stream, seen: Conversation, index: int) -> None:
        seen.requests.append(await read_request(stream, h11.Connection(h11.SERVER)))

    client = poster()
    async with scripted_server(drop) as server:
        with pytest.raises(BadResponse, match="closed the connection without answering"):
            await client.post(server.url(), HEADERS, b"{}")
    assert len(server.conversations) == 1


async def test_a_cancelled_exchange_never_leaves_its_connection_for_reuse():
    async def first_hangs(stream, seen: Conversation, index: int) -> None:
        if index == 0:
            seen.requests.append(await read_request(stream, h11.Connection(h11.SERVER)))
            await trio.sleep_forever()
        await keep_alive_ok(stream, seen, index)

    client = poster()
    async with scripted_server(first_hangs) as server:
        with trio.move_on_after(0.2) as scope:
            await client.post(server.url(), HEADERS, b"lost")
        assert scope.cancelled_caught
        assert (await client.post(server.url(), HEADERS, b"next")).status == 200
    assert [c.requests for c in server.conversations] == [[b"lost"], [b"next"]]


async def test_a_request_larger_than_the_socket_buffers_is_sent_whole():
    body = bytes(range(256)) * (16 * 1024)  # 4 MiB: many partial sends
    client = poster()
    async with scripted_server(keep_alive_ok) as server:
        answer = await client.post(server.url(), HEADERS, body)
        again = await client.post(server.url(), HEADERS, b"small")
    assert (answer.status, again.status) == (200, 200)
    assert server.conversations[0].requests == [body, b"small"]
    assert client.connections_made == 1


async def test_an_idle_connection_holding_bytes_nobody_asked_for_is_not_reused():
    answered = trio.Event()

    async def answer_then_babble(stream, seen: Conversation, index: int) -> None:
        seen.requests.append(await read_request(stream, h11.Connection(h11.SERVER)))
        await stream.send_all(OK)
        if index == 0:
            await answered.wait()  # the client has its answer and keeps the connection
            await stream.send_all(b"HTTP/1.1 200 OK\r\n")  # an answer to nothing
        await trio.sleep_forever()

    client = poster()
    async with scripted_server(answer_then_babble) as server:
        assert (await client.post(server.url(), HEADERS, b"1")).status == 200
        answered.set()
        await trio.testing.wait_all_tasks_blocked()
        with trio.fail_after(20):  # a guard against hanging, not a measurement
            assert (await client.post(server.url(), HEADERS, b"2")).status == 200
    assert [c.requests for c in server.conversations] == [[b"1"], [b"2"]]
    assert client.stale_retries == 0


async def test_a_chunked_answer_is_read_whole_and_its_connection_kept():
    reply = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: t\r\n\r\n"
    )

    async def chunked(stream, seen: Conversation, index: int) -> None:
        while (body := await read_request(stream, h11.Connection(h11.SERVER))) is not None:
            seen.requests.append(body)
            await stream.send_all(reply)

    client = poster()
    async with scripted_server(chunked) as server:
        answers = [await client.post(server.url(), HEADERS, b"%d" % n) for n in range(3)]
    assert [(a.status, a.body) for a in answers] == [(200, b"abcde")] * 3
    assert client.connections_made == 1


async def test_a_deadline_during_the_body_closes_the_connection():
    async def head_then_hang(stream, seen: Conversation, index: int) -> None:
        if index == 0:
            seen.requests.append(await read_request(stream, h11.Connection(h11.SERVER)))
            await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab")
            await trio.sleep_forever()
        await keep_alive_ok(stream, seen, index)

    client = poster(body_seconds=60.0)
    async with scripted_server(head_then_hang) as server:
        with trio.move_on_after(0.2) as scope:
            await client.post(server.url(), HEADERS, b"lost")
        assert scope.cancelled_caught
        assert (await client.post(server.url(), HEADERS, b"next")).status == 200
    assert [c.requests for c in server.conversations] == [[b"lost"], [b"next"]]


# -- hostile answers --------------------------------------------------------------------


@pytest.mark.parametrize(
    "reply",
    [
        b"SMTP 220 hello\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nBad Header Name: x\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nX-Filler: " + b"a" * 64 * 1024 + b"\r\n\r\n",
    ],
    ids=["not-http", "four-digit-status", "bad-header", "two-lengths", "huge-headers"],
)
async def test_a_hostile_answer_is_a_clear_error_and_the_connection_is_dropped(reply):
    client = poster()
    async with scripted_server(answering(reply)) as server:
        for _ in range(2):
            with pytest.raises(BadResponse, match="invalid HTTP response"):
                await client.post(server.url(), HEADERS, b"{}")
    assert client.connections_made == 2 and len(server.conversations) == 2


async def test_a_huge_body_is_cut_at_the_limit_and_its_connection_closed():
    async def huge(stream, seen: Conversation, index: int) -> None:
        seen.requests.append(await read_request(stream, h11.Connection(h11.SERVER)))
        await stream.send_all(b"HTTP/1.1 500 Oops\r\nContent-Length: 10000000\r\n\r\n")
        with trio.move_on_after(30):
            while True:
                await stream.send_all(b"x" * 65536)

    client = poster(max_body=1000)
    async with scripted_server(huge) as server:
        answer = await client.post(server.url(), HEADERS, b"{}")
        assert (answer.status, answer.body) == (500, b"x" * 1000)
        await client.post(server.url(), HEADERS, b"{}")
    assert len(server.conversations) == 2  # the cut connection was not reused


async def test_a_dripping_body_is_abandoned_after_body_seconds():
    async def drip(stream, seen: Conversation, index: int) -> None:
        seen.requests.append(await read_request(stream, h11.Connection(h11.SERVER)))
        await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nab")
        await trio.sleep_forever()

    client = poster(body_seconds=0.2)
    async with scripted_server(drip) as server:
        with trio.fail_after(20):  # a guard against hanging, not a measurement
            answer = await client.post(server.url(), HEADERS, b"{}")
        with trio.fail_after(20):
            await client.post(server.url(), HEADERS, b"{}")
    assert (answer.status, answer.body) == (200, b"ab")
    assert len(server.conversations) == 2  # the half-read connection was not kept


@pytest.mark.parametrize("reset", [False, True], ids=["closed", "reset"])
async def test_a_body_broken_off_still_gives_the_status_and_what_arrived(reset):
    async def hang_up_mid_body(stream, seen: Conversation, index: int) -> None:
        seen.requests.append(await read_request(stream, h11.Connection(h11.SERVER)))
        await stream.send_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 100\r\n\r\nup")
        await trio.sleep(0.05)  # the client is mid-body when the connection ends
        if reset:  # an RST instead of a FIN: the client's receive fails
            stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    client = poster()
    async with scripted_server(hang_up_mid_body) as server:
        answer = await client.post(server.url(), HEADERS, b"{}")
        assert (answer.status, answer.body) == (502, b"up")
        assert (await client.post(server.url(), HEADERS, b"{}")).status == 502
    assert len(server.conversations) == 2  # the broken connection was not reused


async def test_informational_answers_are_skipped_and_headers_are_readable():
    reply = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 503 Busy\r\nRetry-After: 120\r\nContent-Length: 4\r\n\r\nbusy"
    )
    client = poster()
    async with scripted_server(answering(reply)) as server:
        answer = await client.post(server.url(), HEADERS, b"{}")
    assert isinstance(answer, PostResponse)
    assert (answer.status, answer.header(b"retry-after"), answer.body) == (503, "120", b"busy")


# -- where it connects ------------------------------------------------------------------


async def test_a_refused_port_is_a_connect_error():
    port = free_port()
    with pytest.raises(ConnectFailed, match="refused"):
        await poster().post(f"http://127.0.0.1:{port}/cb", HEADERS, b"{}")


async def test_the_guard_decides_and_a_refused_target_is_never_connected():
    rules = CallbacksConfig(allow_private_targets=False)

    async def guard(host: str, port: int) -> list[str]:
        return await checked_addresses(host, port, rules)

    client = poster(guard=guard)
    async with scripted_server(keep_alive_ok) as server:
        port = server.port
        with pytest.raises(TargetRefused, match="allow_private_targets"):
            await client.post(f"http://localhost:{port}/cb", HEADERS, b"{}")
        with pytest.raises(TargetRefused, match="allow_private_targets"):
            await client.post(server.url(), HEADERS, b"{}")
    assert server.conversations == [] and client.connections_made == 0


def embedding(ipv4: str) -> list[str]:
    """IPv6 literals that carry ``ipv4``: mapped, compatible, NAT64 (well-known and
    local-use), 6to4, Teredo (as its server, and as its client, stored inverted)."""
    a, b, c, d = (int(part) for part in ipv4.split("."))
    high, low = f"{a << 8 | b:x}", f"{c << 8 | d:x}"
    inverted = f"{(a << 8 | b) ^ 0xFFFF:x}:{(c << 8 | d) ^ 0xFFFF:x}"
    return [
        f"::ffff:{ipv4}",
        f"::{high}:{low}",
        f"64:ff9b::{high}:{low}",
        f"64:ff9b:1::{high}:{low}",
        f"2002:{high}:{low}::1",
        f"2001:0:{high}:{low}:8000:1234:a247:27dd",
        f"2001:0:5db8:d822:8000:1234:{inverted}",
    ]


def through_a_translator(rules: CallbacksConfig):
    """The real guard, then what a NAT64 gateway, 6to4 or Teredo relay on the path does:
    the packets for an address it checked go to the IPv4 address inside, here the
    loopback server standing in for that host."""

    async def guard(host: str, port: int) -> list[str]:
        return ["127.0.0.1" for _ in await checked_addresses(host, port, rules)]

    return guard


@pytest.mark.parametrize(
    ("settings", "literal"),
    [({}, form) for form in embedding("169.254.169.254")]
    + [
        ({"allow_private_targets": False}, form)
        for ipv4 in ("127.0.0.1", "10.0.0.1")
        for form in embedding(ipv4)
    ],
)
async def test_an_ipv4_inside_an_ipv6_literal_is_checked_and_never_connected(settings, literal):
    rule = "allow_private_targets" if settings else "block_link_local"
    client = poster(guard=through_a_translator(CallbacksConfig(**settings)))
    async with scripted_server(keep_alive_ok) as server:
        with pytest.raises(TargetRefused, match=rule):
            await client.post(f"http://[{literal}]:{server.port}/cb", HEADERS, b"{}")
    assert server.conversations == [] and client.connections_made == 0


async def test_a_public_ipv4_inside_an_ipv6_literal_gets_through_the_translator():
    # The other side of the test above: the same path does reach the server.
    client = poster(guard=through_a_translator(CallbacksConfig(allow_private_targets=False)))
    async with scripted_server(keep_alive_ok) as server:
        url = f"http://[64:ff9b::5db8:d822]:{server.port}/cb"  # 93.184.216.34
        assert (await client.post(url, HEADERS, b"{}")).status == 200
    assert len(server.conversations) == 1


async def test_the_connection_goes_only_to_the_checked_addresses():
    asked: list[tuple[str, int]] = []

    async def guard(host: str, port: int) -> list[str]:
        asked.append((host, port))
        return ["127.0.0.1"]

    client = poster(guard=guard)
    async with scripted_server(keep_alive_ok) as server:
        name_url = f"http://does-not-resolve.invalid:{server.port}/cb"
        assert (await client.post(name_url, HEADERS, b"{}")).status == 200
    assert asked == [("does-not-resolve.invalid", server.port)]
    assert len(server.conversations) == 1


# -- at a receiver's creation -------------------------------------------------------------


class ScriptedResolver(trio.abc.HostnameResolver):
    """trio's resolver hook: every name gets these addresses, or never an answer."""

    def __init__(self, addresses: list[str] | None) -> None:
        self.addresses = addresses

    async def getaddrinfo(self, host, port, family=0, type=0, proto=0, flags=0):
        if self.addresses is None:
            await trio.sleep_forever()
        return [
            (socket.AF_INET6 if ":" in a else socket.AF_INET, type, proto, "", (a, port))
            for a in self.addresses
        ]

    async def getnameinfo(self, sockaddr, flags):
        raise NotImplementedError


@asynccontextmanager
async def resolving_to(addresses: list[str] | None) -> AsyncIterator[None]:
    previous = trio.socket.set_custom_hostname_resolver(ScriptedResolver(addresses))
    try:
        yield
    finally:
        trio.socket.set_custom_hostname_resolver(previous)


async def test_creation_refuses_a_name_whose_every_address_is_refused():
    strict = CallbacksConfig(allow_private_targets=False)
    async with resolving_to(["10.0.0.1", "64:ff9b::a9fe:a9fe"]):
        with pytest.raises(InvalidParams) as caught:
            await check_creation_target("https://shop.example/cb", strict)
    message = str(caught.value)
    assert "shop.example resolves only to refused addresses: 10.0.0.1" in message
    assert "(and 1 more)" in message
    assert "allow_private_targets = true and set [callbacks] block_link_local = false" in message


async def test_creation_leaves_a_name_with_one_usable_address_to_the_send_time_guard():
    strict = CallbacksConfig(allow_private_targets=False)
    async with resolving_to(["10.0.0.1", "93.184.216.34"]):
        await check_creation_target("https://shop.example/cb", strict)


async def test_creation_does_not_wait_for_dns_that_does_not_answer():
    with trio.fail_after(5):
        async with resolving_to(None):
            await check_creation_target(
                "https://shop.example/cb", CallbacksConfig(), resolve_timeout=0.1
            )


async def test_creation_refuses_a_host_outside_allow_hosts_before_any_dns():
    rules = CallbacksConfig(allow_hosts=("shop.example",))
    async with resolving_to(None):  # would hang if it were asked
        with pytest.raises(InvalidParams, match=r"add the host to \[callbacks\] allow_hosts"):
            await check_creation_target("https://evil.example/cb", rules)


# -- TLS --------------------------------------------------------------------------------


async def test_https_verifies_the_certificate_and_the_host_name(https_server, tls_files):
    trusting = ssl.create_default_context(cafile=str(tls_files.ca))
    client = poster(tls_context=trusting)
    by_name = f"https://localhost:{https_server.port}/cb"
    answers = [await client.post(by_name, HEADERS, b"{}") for _ in range(3)]
    assert [a.status for a in answers] == [200] * 3 and client.connections_made == 1
    with pytest.raises(TlsFailed, match="(?i)certificate"):
        await client.post(https_server.url(), HEADERS, b"{}")  # 127.0.0.1: not the name
    with pytest.raises(TlsFailed, match="(?i)certificate"):
        await poster().post(by_name, HEADERS, b"{}")  # the public CAs do not know it
    assert len(https_server.requests) == 3
