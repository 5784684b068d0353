"""Proxies and the one trust store, with real parts on loopback.

- a real HTTP proxy process (tests/connect_proxy.py: CONNECT tunnels and forwarded
  absolute-form requests) that records every target it was asked for, so each test
  proves which traffic went through it and where to. Names under ``proxied.test``
  resolve nowhere except inside that proxy (``--resolve``): a URL on such a name can
  only be reached through it, as on a host whose only way out is a proxy;
- a private CA made with openssl, a server certificate it issued (localhost,
  *.proxied.test, 127.0.0.1), and TLS fronts (the same tool, ``--reverse``) that serve
  the sandbox Insight and a CoinGecko-shaped price server over https with it;
- the clients themselves: InsightSocket, InsightRest, PriceService, HttpPoster with the
  real SSRF guard, and at the end a daemon subprocess.

Each client succeeds with ``[tls] ca_file``'s CA and fails naming the certificate (and
``[tls] ca_file``) without it, directly and through the proxy; NO_PROXY sends a host
directly; the config wins over the environment; a callback to a refused address is
refused before the proxy hears of it, and one allowed goes to the checked address, not
the name; proxy credentials are sent and never shown; an https:// proxy works.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from dashpay.config.load import config_from_dict
from dashpay.config.model import CallbacksConfig
from dashpay.domain.errors import DashpayError
from dashpay.domain.observations import SocketConnected
from dashpay.net.guard import TargetRefused, checked_addresses
from dashpay.net.http_post import HttpPoster, HttpPostError
from dashpay.net.insight_rest import InsightError, InsightRest
from dashpay.net.insight_socket import InsightSocket
from dashpay.net.outbound import Outbound, client_tls_context
from dashpay.repository.sqlite import SqliteRepository
from dashpay.services.prices.service import PriceService
from dashpay.wire.proxy import settings_from
from tests.conftest import REPO, TEST_XPUB, SandboxPeer, start_daemon, write_config
from tests.insight_stub import InsightStub, Reply
from tests.integration.conftest import CallbackServer
from tests.pki import issue, make_ca

STEP = 5.0
UNTRUSTED = "certificate verify failed"
HINT = "[tls] ca_file"
USER, PASSWORD = "merchant", "p@ss w0rd"
QUOTED_CREDENTIALS = "merchant:p%40ss%20w0rd@"


# -- the parts ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    ca: Path
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        return context


def make_pki(folder: Path) -> Pki:
    ca = make_ca(folder, "dashpay proxy test CA")
    cert, key = issue(folder, "server", "DNS:localhost,DNS:*.proxied.test,IP:127.0.0.1")
    return Pki(ca, cert, key)


@dataclass
class Tool:
    """One tests/connect_proxy.py process and the log of what it was asked for."""

    proc: subprocess.Popen
    port: int
    log: Path

    def url(self, scheme: str = "http", credentials: str = "") -> str:
        return f"{scheme}://{credentials}127.0.0.1:{self.port}"

    def records(self) -> list[dict]:
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def targets(self) -> list[str]:
        return [f"{r['method']} {r['target']}" for r in self.records()]

    def clear(self) -> None:
        self.log.write_text("")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def spawn(folder: Path, *args: str) -> Tool:
    log = folder / f"tool-{secrets.token_hex(3)}.log"
    log.write_text("")
    with (folder / "tools.stderr").open("a") as errors:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.connect_proxy", "--log", str(log), *args],
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
            cwd=REPO,
        )
    line = proc.stdout.readline()
    if not line.startswith("listening "):
        proc.kill()
        raise AssertionError(
            f"the proxy tool did not start: {(folder / 'tools.stderr').read_text()}"
        )
    return Tool(proc, int(line.split()[1]), log)


@dataclass
class Lab:
    folder: Path
    pki: Pki
    peer: SandboxPeer
    proxy: Tool  # plain http proxy, proxied.test resolved inside it
    auth_proxy: Tool  # the same, wanting USER / PASSWORD
    tls_proxy: Tool  # an https:// proxy (its certificate from the test CA)
    insight_front: Tool  # https in front of the sandbox Insight
    price_front: Tool  # https in front of the price server
    callbacks: CallbackServer  # https, certificate from the test CA
    plain_callbacks: CallbackServer  # http

    @property
    def tools(self) -> tuple[Tool, ...]:
        return (self.proxy, self.auth_proxy, self.tls_proxy, self.insight_front, self.price_front)

    def outbound(
        self,
        proxy: str | None = None,
        *,
        trust: bool = True,
        no_proxy: list[str] | None = None,
        environ: dict[str, str] | None = None,
    ) -> Outbound:
        """What the daemon builds from [network] / [tls] and its environment."""
        ca_pem = self.pki.ca.read_text() if trust else None
        return Outbound(settings_from(proxy, no_proxy, environ or {}), client_tls_context(ca_pem))


def coingecko(_request) -> Reply:
    """CoinGecko's ``/api/v3/simple/price`` answer shape (docs/prices.md), priced now."""
    return Reply(200, {"dash": {"usd": 22.5, "last_updated_at": int(time.time())}})


@pytest.fixture(scope="module")
def lab_parts(tmp_path_factory) -> Iterator[Lab]:
    folder = tmp_path_factory.mktemp("proxy")
    pki = make_pki(folder)
    with contextlib.ExitStack() as stack:
        peer = SandboxPeer()
        stack.callback(peer.close)
        prices = stack.enter_context(InsightStub(prefix=""))
        prices.route("GET", "api/v3/simple/price", coingecko)
        tls = ("--tls", str(pki.cert), str(pki.key))
        resolve = ("--resolve", "proxied.test=127.0.0.1")
        tools = [
            spawn(folder, *resolve),
            spawn(folder, *resolve, "--auth", f"{USER}:{PASSWORD}"),
            spawn(folder, *resolve, *tls),
            spawn(folder, "--reverse", str(peer.port), *tls),
            spawn(folder, "--reverse", prices.origin.rsplit(":", 1)[1], *tls),
        ]
        for tool in tools:
            stack.callback(tool.stop)
        callbacks = CallbackServer(tls=pki.server_context()).start()
        stack.callback(callbacks.stop)
        plain = CallbackServer().start()
        stack.callback(plain.stop)
        yield Lab(folder, pki, peer, *tools, callbacks, plain)


@pytest.fixture
def lab(lab_parts: Lab) -> Lab:
    for tool in lab_parts.tools:
        tool.clear()
    with lab_parts.callbacks.lock, lab_parts.plain_callbacks.lock:
        lab_parts.callbacks.requests.clear()
        lab_parts.plain_callbacks.requests.clear()
    return lab_parts


# -- one try of each client: None when it worked, else its error --------------------------


async def try_socket(url: str, outbound: Outbound) -> str | None:
    """One connection attempt: None once subscribed, else why the attempt ended."""
    socket = InsightSocket(url, connect_timeout=2.0, outbound=outbound)
    send, receive = trio.open_memory_channel(10)
    ended: list[str] = []
    async with trio.open_nursery() as nursery:

        async def attempt() -> None:
            link = await socket._session(send)  # one connection, to its end
            ended.append(link.reason or "ended")
            nursery.cancel_scope.cancel()

        nursery.start_soon(attempt)
        with trio.fail_after(STEP):
            first = await receive.receive()
        assert isinstance(first, SocketConnected)
        nursery.cancel_scope.cancel()
    return ended[0] if ended else None


async def try_rest(url: str, outbound: Outbound) -> str | None:
    async with InsightRest(url, timeout=2.0, max_attempts=1, outbound=outbound) as rest:
        try:
            await rest.status()
        except InsightError as exc:
            return str(exc)
    return None


async def try_prices(url: str, outbound: Outbound, folder: Path) -> str | None:
    repo = SqliteRepository(folder / f"prices-{secrets.token_hex(3)}.sqlite3")
    repo.migrate()
    config = config_from_dict(
        {"prices": {"providers": ["coingecko"], "timeout": "2s", "coingecko": {"url": url}}},
        env={},
    ).prices
    service = PriceService(repo, config, outbound=outbound)
    try:
        quote = await service.quote("USD")
        assert str(quote.price) == "22.5"
        return None
    except DashpayError as exc:
        return exc.message
    finally:
        await service.aclose()
        repo.close()


async def try_callback(
    url: str, outbound: Outbound, rules: CallbacksConfig | None = None
) -> str | None:
    rules = rules or CallbacksConfig()

    async def guard(host: str, port: int) -> list[str]:
        return await checked_addresses(host, port, rules)

    poster = HttpPoster(guard, max_body=4096, body_seconds=1.0, outbound=outbound)
    try:
        with trio.fail_after(STEP):
            answer = await poster.post(url, [("Content-Type", "application/json")], b"{}")
        assert answer.status == 200
        return None
    except HttpPostError as exc:
        return str(exc)
    finally:
        await poster.aclose()


# -- TLS with a private CA, directly and through the proxy ---------------------------------

CLIENTS = ("websocket", "rest", "prices", "callbacks")


def target(lab: Lab, client: str, via_proxy: bool) -> tuple[str, str]:
    """The URL a client is pointed at and the tunnel the proxy must have opened for it."""
    host = {True: "{}.proxied.test", False: "127.0.0.1"}[via_proxy]
    if client in ("websocket", "rest"):
        port = lab.insight_front.port
        url = f"https://{host.format('insight')}:{port}" + (
            "/insight-api" if client == "rest" else ""
        )
        return url, f"CONNECT {host.format('insight')}:{port}"
    if client == "prices":
        port = lab.price_front.port
        return f"https://{host.format('prices')}:{port}", f"CONNECT {host.format('prices')}:{port}"
    # A callback host must resolve here (the guard judges it); the proxy is told the
    # checked address.
    port = lab.callbacks.port
    return f"https://localhost:{port}/cb", f"CONNECT 127.0.0.1:{port}"


async def attempt(lab: Lab, client: str, url: str, outbound: Outbound) -> str | None:
    if client == "websocket":
        return await try_socket(url, outbound)
    if client == "rest":
        return await try_rest(url, outbound)
    if client == "prices":
        return await try_prices(url, outbound, lab.folder)
    return await try_callback(url, outbound)


@pytest.mark.parametrize("via_proxy", [False, True], ids=["direct", "via-proxy"])
@pytest.mark.parametrize("client", CLIENTS)
async def test_each_client_trusts_the_private_ca_only_through_ca_file(lab, client, via_proxy):
    url, tunnel = target(lab, client, via_proxy)
    proxy = lab.proxy.url() if via_proxy else None

    assert await attempt(lab, client, url, lab.outbound(proxy)) is None
    refused = await attempt(lab, client, url, lab.outbound(proxy, trust=False))
    assert refused is not None and UNTRUSTED in refused and HINT in refused, refused

    if via_proxy:
        assert lab.proxy.targets() == [tunnel, tunnel]
    else:
        assert lab.proxy.targets() == []
    fronted = lab.callbacks.requests if client == "callbacks" else None
    if fronted is not None:
        assert len(fronted) == 1  # the untrusted attempt never sent its request


# -- which connections take the proxy ---------------------------------------------------------


async def test_plain_http_goes_through_the_proxy_tunnelled(lab):
    outbound = lab.outbound(lab.proxy.url())
    insight = f"http://insight.proxied.test:{lab.peer.port}"
    assert await try_rest(insight + "/insight-api", outbound) is None
    assert await try_socket(insight, outbound) is None
    where = f"insight.proxied.test:{lab.peer.port}"
    # Insight REST (our HTTP/1.1 client, as callbacks and the price providers) and the
    # websocket both tunnel, http targets too.
    assert lab.proxy.targets() == [f"CONNECT {where}", f"CONNECT {where}"]


@pytest.mark.parametrize("source", ["config", "environment"])
async def test_no_proxy_hosts_are_reached_directly(lab, source):
    direct = f"http://127.0.0.1:{lab.peer.port}"
    if source == "config":
        outbound = lab.outbound(lab.proxy.url(), no_proxy=["localhost", "127.0.0.0/8"])
    else:
        environ = {"HTTP_PROXY": lab.proxy.url(), "no_proxy": "localhost,127.0.0.1"}
        outbound = lab.outbound(environ=environ)
    assert await try_rest(direct + "/insight-api", outbound) is None
    assert await try_socket(direct, outbound) is None
    assert await try_callback(lab.plain_callbacks.url(), outbound) is None
    assert lab.proxy.targets() == []
    # The same clients without the exception all go through the proxy.
    outbound = lab.outbound(lab.proxy.url())
    assert await try_rest(direct + "/insight-api", outbound) is None
    assert await try_socket(direct, outbound) is None
    assert await try_callback(lab.plain_callbacks.url(), outbound) is None
    where = f"127.0.0.1:{lab.peer.port}"
    assert lab.proxy.targets() == [
        f"CONNECT {where}",
        f"CONNECT {where}",
        f"CONNECT 127.0.0.1:{lab.plain_callbacks.port}",
    ]


async def test_the_config_wins_over_the_environment(lab):
    dead = "http://127.0.0.1:9"  # nothing listens on the discard port
    insight = f"http://insight.proxied.test:{lab.peer.port}"
    outbound = lab.outbound(lab.proxy.url(), environ={"HTTP_PROXY": dead, "HTTPS_PROXY": dead})
    assert await try_socket(insight, outbound) is None
    assert lab.proxy.targets() == [f"CONNECT insight.proxied.test:{lab.peer.port}"]
    # proxy = "" means no proxy, whatever the environment says.
    outbound = lab.outbound("", environ={"HTTP_PROXY": dead})
    assert await try_socket(f"http://127.0.0.1:{lab.peer.port}", outbound) is None
    # And with nothing in the config, the environment's proxy is used (and is dead).
    failed = await try_socket(insight, lab.outbound(environ={"HTTP_PROXY": dead}))
    assert failed is not None and "proxy http://127.0.0.1:9" in failed


# -- callbacks: the guard judges the final target -------------------------------------------


async def test_a_refused_callback_target_never_reaches_the_proxy(lab):
    rules = CallbacksConfig(allow_private_targets=False)
    outbound = lab.outbound(lab.proxy.url())
    for url in (lab.plain_callbacks.url(), f"http://localhost:{lab.plain_callbacks.port}/cb"):
        with pytest.raises(TargetRefused, match="allow_private_targets"):
            await try_callback(url, outbound, rules)
    # A name only the proxy could resolve cannot be judged here: not sent either.
    failed = await try_callback(f"http://cb.proxied.test:{lab.plain_callbacks.port}/cb", outbound)
    assert failed is not None and "cannot resolve cb.proxied.test" in failed
    assert lab.proxy.targets() == []
    assert lab.plain_callbacks.requests == []


async def test_an_allowed_callback_is_tunnelled_to_the_checked_address_not_the_name(lab):
    outbound = lab.outbound(lab.proxy.url())
    port = lab.plain_callbacks.port
    assert await try_callback(f"http://localhost:{port}/cb", outbound) is None
    assert lab.proxy.targets() == [f"CONNECT 127.0.0.1:{port}"]
    [request] = lab.plain_callbacks.requests
    assert request.headers["host"] == f"localhost:{port}"  # the name still names the site


# -- proxy credentials and an https:// proxy ------------------------------------------------


async def test_proxy_credentials_are_sent_by_every_client_and_never_shown(lab):
    good = lab.outbound(lab.auth_proxy.url(credentials=QUOTED_CREDENTIALS))
    insight = f"https://insight.proxied.test:{lab.insight_front.port}"
    assert await try_socket(insight, good) is None
    assert await try_rest(insight + "/insight-api", good) is None
    assert await try_callback(lab.plain_callbacks.url(), good) is None
    assert [r["authorized"] for r in lab.auth_proxy.records()] == [True, True, True]

    bad = lab.outbound(lab.auth_proxy.url(credentials="merchant:wrong-secret@"))
    for failed in (
        await try_socket(insight, bad),
        await try_callback(lab.plain_callbacks.url(), bad),
    ):
        assert failed is not None and "407" in failed, failed
        assert "wrong-secret" not in failed and "***@" in failed
    failed = await try_rest(insight + "/insight-api", bad)
    assert failed is not None and "wrong-secret" not in failed


async def test_an_https_proxy_carries_every_client(lab):
    outbound = lab.outbound(lab.tls_proxy.url("https").replace("127.0.0.1", "localhost"))
    insight = f"https://insight.proxied.test:{lab.insight_front.port}"
    assert await try_socket(insight, outbound) is None
    assert await try_rest(insight + "/insight-api", outbound) is None
    assert await try_callback(f"https://localhost:{lab.callbacks.port}/cb", outbound) is None
    assert len(lab.tls_proxy.targets()) == 3
    # The proxy's own certificate is checked like any server's.
    untrusting = Outbound(outbound.proxies, client_tls_context(None))
    failed = await try_socket(insight, untrusting)
    assert failed is not None and UNTRUSTED in failed


# -- the daemon: its only way out is the proxy ------------------------------------------------


def test_a_daemon_whose_only_way_out_is_the_proxy_becomes_ready_and_records_payments(
    lab, short_tmp
):
    """Insight's host name resolves nowhere but inside the proxy, and speaks https with a
    certificate of the private CA: the daemon needs both [network] proxy and [tls]
    ca_file to get ready."""
    config = write_config(
        short_tmp,
        f"sqlite:///{short_tmp / 'dashpay.sqlite3'}",
        wallet={"xpub": TEST_XPUB, "network": "testnet"},
        insight={
            "url": f"https://insight.proxied.test:{lab.insight_front.port}/insight-api",
            "reconnect_initial": "0.1s",
            "reconnect_max": "0.5s",
        },
        network={"proxy": lab.proxy.url()},
        tls={"ca_file": str(lab.pki.ca)},
    )
    daemon = start_daemon(config)
    try:
        receiver = daemon.cli("receiver", "new", "--amount", "1", "--json").json()
        lab.peer.pay(receiver["address"], 100_000_000)
        deadline = time.monotonic() + 15
        while daemon.cli("receiver", "show", str(receiver["receiver_id"]), "--json").json()[
            "status"
        ] not in ("paid", "settled"):
            assert time.monotonic() < deadline, daemon.log()
            time.sleep(0.1)
        outbound = daemon.cli("status", "--json").json()["outbound"]
        human = " ".join(daemon.cli("status").stdout.split())
    finally:
        daemon.stop()
    assert outbound["https_proxy"] == outbound["http_proxy"] == lab.proxy.url()
    assert outbound["sources"] == [f"[network] proxy = {lab.proxy.url()}"]
    assert (outbound["ca_file"], outbound["ca_certificates"]) == (str(lab.pki.ca), 1)
    assert f"outbound [network] proxy = {lab.proxy.url()}; extra CAs {lab.pki.ca} (1)" in human
    where = f"CONNECT insight.proxied.test:{lab.insight_front.port}"
    assert where in lab.proxy.targets()
    # The price refresher went the same way (write_config points the providers at the
    # discard port, http: tunnelled); nothing else left the host.
    assert set(lab.proxy.targets()) <= {where, "CONNECT 127.0.0.1:9"}


# -- the real socket.io 2.4.1 server (what Insight runs) through the proxy -------------------


@pytest.mark.node
async def test_the_websocket_reaches_the_real_socket_io_server_only_through_the_proxy(lab):
    from dashpay.domain.observations import BlockObserved
    from tests.interop.test_daemon_node_peer import expect, node_peer, send

    peer = node_peer()
    try:
        port = int(expect(peer, "listening").split()[1])
        socket = InsightSocket(
            f"http://insight.proxied.test:{port}",
            connect_timeout=2.0,
            outbound=lab.outbound(lab.proxy.url()),
        )
        events, receive = trio.open_memory_channel(10)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(socket.run, events)
            with trio.fail_after(STEP):
                assert isinstance(await receive.receive(), SocketConnected)
                await trio.to_thread.run_sync(expect, peer, "subscribed")
                block = "00000000000000" + "ab" * 25
                send(peer, {"emit": "block", "payload": block})
                assert await receive.receive() == BlockObserved(block)
            nursery.cancel_scope.cancel()
    finally:
        peer.kill()
        peer.wait()
    assert lab.proxy.targets() == [f"CONNECT insight.proxied.test:{port}"]
