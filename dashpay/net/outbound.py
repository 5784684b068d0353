"""How every outbound client leaves the host: one trust store and one proxy decision.

The Insight websocket and REST clients, the price providers and the callback poster all
take an ``Outbound``; the daemon builds one from the configuration
(``Outbound.from_config``) and hands the same one to each, so they trust the same CAs
and agree on which connection goes through which proxy.

- **Trust** (``client_tls_context``, the one place an ``ssl.SSLContext`` is made for a
  client; built on the first TLS connection that needs it, so a daemon whose peers are
  all plain http never holds the stores, ~2.6 MB): certificates and host names
  verified; trusted are the system store (OpenSSL's default paths, which
  ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` move), certifi's bundle (what httpx trusted
  before) and ``[tls] ca_file``, all three together: a private CA is ADDED, nothing is
  replaced. ALPN offers http/1.1 only (REST, prices, callbacks and the websocket
  upgrade all speak HTTP/1.1).
- **Proxies** (``wire/proxy.ProxySettings``): ``open_stream`` connects directly or
  through an HTTP CONNECT tunnel (``tunnel``), the proxy resolving the target's name.
  The HTTP/1.1 client of the callbacks, Insight REST and the price providers
  (``net/http_post.py``) uses ``proxy_for`` and ``tunnel`` itself, so the callback
  poster tunnels to the address its SSRF guard checked; http and https alike go through
  a CONNECT tunnel.
"""

from __future__ import annotations

import functools
import logging
import os
import ssl
from collections.abc import Mapping

import trio

from dashpay.config.model import Config
from dashpay.wire.proxy import (
    ConnectReader,
    ProxyAnswerError,
    ProxySettings,
    ProxyURL,
    authority,
    connect_request,
    settings_from,
)

log = logging.getLogger("dashpay.outbound")

# Bytes per read of the proxy's CONNECT answer (a status line and a few headers).
CONNECT_READ_BYTES = 4096
# Where a URL without a port goes (RFC 9110 §4.2; ws/wss as RFC 6455 §3).
DEFAULT_PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443}


class ProxyError(ConnectionError):
    """The proxy could not be reached, or refused or broke the tunnel; ``str()`` says
    which proxy (never its credentials) and what happened. A ConnectionError, so every
    client's handling of network errors covers it."""


def client_tls_context(ca_pem: str | None = None) -> ssl.SSLContext:
    """The context every client verifies servers with: the system store, certifi's
    bundle and ``ca_pem`` (``[tls] ca_file``'s PEM text) together."""
    import certifi  # a dependency of httpx, so always installed with dashpay

    context = ssl.create_default_context()  # verification on; the system store
    context.load_verify_locations(cafile=certifi.where())
    if ca_pem:
        context.load_verify_locations(cadata=ca_pem)
    context.set_alpn_protocols(["http/1.1"])
    return context


def with_trust_hint(message: str) -> str:
    """``message`` (a TLS failure's text), plus how to trust a private CA when the
    certificate could not be verified."""
    if "[tls] ca_file" in message:  # said already
        return message
    if "CERTIFICATE_VERIFY_FAILED" in message or "certificate verify failed" in message:
        return f"{message}; if a private CA issued the server's certificate, add it: [tls] ca_file"
    return message


class Outbound:
    """The proxies and the trust store every outbound client shares. ``tls_context``
    is the given context, else ``client_tls_context(ca_pem)`` built on first use
    (``[tls] ca_file`` was already read and checked when the configuration loaded)."""

    __slots__ = ("_ca_pem", "_tls_context", "proxies")

    def __init__(
        self,
        proxies: ProxySettings,
        tls_context: ssl.SSLContext | None = None,
        *,
        ca_pem: str | None = None,
    ) -> None:
        self.proxies = proxies
        self._tls_context = tls_context
        self._ca_pem = ca_pem

    @property
    def tls_context(self) -> ssl.SSLContext:
        if self._tls_context is None:
            self._tls_context = client_tls_context(self._ca_pem)
        return self._tls_context

    @classmethod
    def from_config(cls, config: Config) -> Outbound:
        """[network] (already merged with the environment at load) and [tls]."""
        proxies = config.network.proxies
        log.info(
            "outbound proxies=%s ca_file=%s ca_file_certificates=%d",
            "; ".join(proxies.sources) or "none",
            config.tls.ca_file,
            config.tls.ca_certificates,
        )
        return cls(proxies, ca_pem=config.tls.ca_pem)

    @classmethod
    def from_environment(
        cls, environ: Mapping[str, str] | None = None, *, ca_pem: str | None = None
    ) -> Outbound:
        """The standard variables alone (no config file)."""
        environ = os.environ if environ is None else environ
        return cls(settings_from(None, None, environ), ca_pem=ca_pem)

    def proxy_for(self, scheme: str, host: str, port: int | None = None) -> ProxyURL | None:
        if port is None:
            port = DEFAULT_PORTS.get(scheme.lower(), 80)
        return self.proxies.proxy_for(scheme, host, port)

    async def open_stream(self, scheme: str, host: str, port: int) -> trio.abc.Stream:
        """A TCP stream to ``host:port`` for a ``scheme`` URL: direct, or a tunnel
        through the proxy (which resolves ``host``). TLS to the target is the caller's."""
        proxy = self.proxy_for(scheme, host, port)
        if proxy is None:
            return await trio.open_tcp_stream(host, port)
        stream = await open_proxy_stream(proxy, self.tls_context)
        try:
            await tunnel(stream, proxy, host, port)
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        return stream


@functools.cache
def default_outbound() -> Outbound:
    """For clients built without one (tests, tools): the environment's proxies and the
    default trust store. Built once: loading the stores costs tens of milliseconds and
    ~2.6 MB."""
    return Outbound.from_environment()


async def open_proxy_stream(proxy: ProxyURL, tls_context: ssl.SSLContext) -> trio.abc.Stream:
    """A connection to the proxy itself (TLS to it for an https:// proxy)."""
    try:
        stream: trio.abc.Stream = await trio.open_tcp_stream(proxy.host, proxy.port)
    except OSError as exc:
        raise ProxyError(f"cannot connect to the proxy {proxy.display}: {exc}") from exc
    return await secure_proxy_stream(stream, proxy, tls_context)


async def secure_proxy_stream(
    stream: trio.abc.Stream, proxy: ProxyURL, tls_context: ssl.SSLContext
) -> trio.abc.Stream:
    """``stream`` to the proxy, inside TLS with it for an https:// proxy (the proxy's
    certificate verified for its host name like any server's)."""
    if not proxy.tls:
        return stream
    secure = trio.SSLStream(stream, tls_context, server_hostname=proxy.host, https_compatible=True)
    try:
        await secure.do_handshake()
    except (trio.BrokenResourceError, ssl.SSLError, OSError) as exc:
        await trio.aclose_forcefully(secure)
        detail = with_trust_hint(str(exc.__cause__ or exc))
        raise ProxyError(f"TLS with the proxy {proxy.display} failed: {detail}") from exc
    except BaseException:
        await trio.aclose_forcefully(secure)
        raise
    return secure


async def tunnel(stream: trio.abc.Stream, proxy: ProxyURL, host: str, port: int) -> None:
    """Ask the proxy on ``stream`` for a tunnel to ``host:port`` (CONNECT); on return
    the stream carries the target's bytes. ProxyError when the proxy refuses."""
    reader = ConnectReader(authority(host, port), proxy)
    try:
        await stream.send_all(connect_request(host, port, proxy))
        while reader.receive_data(await stream.receive_some(CONNECT_READ_BYTES)) is None:
            pass
    except ProxyAnswerError as exc:
        raise ProxyError(str(exc)) from None
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
        cause = exc.__cause__ or exc
        raise ProxyError(
            f"proxy {proxy.display} (CONNECT {authority(host, port)}): connection lost: {cause}"
        ) from exc
