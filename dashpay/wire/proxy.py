"""The proxy decision and the HTTP CONNECT exchange, without I/O.

Every outbound client (the Insight websocket and REST, the price providers, the
callback poster) asks ``ProxySettings.proxy_for(scheme, host, port)`` which proxy, if
any, carries a connection, so they cannot disagree about it. The settings come from
``[network] proxy`` / ``no_proxy`` and the standard variables; each setting on its own:
the config file wins over the environment (``settings_from``).

- ``HTTPS_PROXY`` carries https and wss targets, ``HTTP_PROXY`` http and ws ones (the
  lower-case spelling wins when both are set, as in curl and Python's urllib);
  ``[network] proxy`` carries all four. An empty value means "no proxy".
- ``NO_PROXY`` (``[network] no_proxy``) lists targets reached directly: ``*`` (all), a
  name (itself and every name under it; a leading ``.`` or ``*.`` changes nothing), an
  IP address or a network (``10.0.0.0/8``, ``fd00::/8``), each optionally with
  ``:port``. It is matched against the host as written in the URL, never a resolved
  address: a name is not looked up to decide.
- Only http:// and https:// proxies (TLS to the proxy, then the tunnel inside it);
  socks is refused with a message saying so.

CONNECT (RFC 9110 §9.3.6): ``connect_request`` is the request, ``ConnectReader``
reads the proxy's answer head; a 2xx opens the tunnel and nothing may follow the head
before we speak (every protocol we tunnel has the client speak first).
"""

from __future__ import annotations

import base64
import ipaddress
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

# The largest CONNECT answer head we buffer (as wire/http1.MAX_HEADER_BYTES: node.js
# allows 16 KiB of response head). A proxy's answer is a status line and a few headers.
MAX_CONNECT_HEAD_BYTES = 16 * 1024
PROXY_SCHEMES = ("http", "https")
DEFAULT_PROXY_PORTS = {"http": 80, "https": 443}
# Which variable carries which target scheme (ws/wss are http/https underneath).
_VARIABLE_FOR = {
    "https": "https_proxy",
    "wss": "https_proxy",
    "http": "http_proxy",
    "ws": "http_proxy",
}

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
T = TypeVar("T")


class ProxyAnswerError(Exception):
    """The proxy refused the tunnel or broke the CONNECT exchange; ``str()`` says how."""


# -- the proxy URL ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProxyURL:
    """A parsed http(s) proxy. ``display`` never shows the credentials."""

    scheme: str  # "http" or "https" (TLS to the proxy itself)
    host: str  # a name or an IP address, without brackets
    port: int
    username: str = field(default="", repr=False)
    password: str = field(default="", repr=False)

    @property
    def tls(self) -> bool:
        return self.scheme == "https"

    @property
    def display(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        credentials = "***@" if self.username or self.password else ""
        return f"{self.scheme}://{credentials}{host}:{self.port}"

    @property
    def authorization(self) -> str | None:
        """The ``Proxy-Authorization`` value (Basic, RFC 7617), or None without credentials."""
        if not self.username and not self.password:
            return None
        token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode("ascii")
        return f"Basic {token}"


def parse_proxy_url(text: str) -> ProxyURL:
    """``http://[user:password@]host[:port]`` or ``https://...``; without a scheme,
    http (as curl reads ``proxy.example:3128``). The port defaults to the scheme's
    (80, 443), as in httpx and requests. ValueError says what is wrong, never showing
    the credentials."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("the proxy URL is empty")
    text = text.strip()
    if "://" not in text:
        text = "http://" + text
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise ValueError("the proxy URL has an invalid port; use a number 1-65535") from None
    scheme = parts.scheme.lower()
    if scheme not in PROXY_SCHEMES:
        extra = " (socks proxies are not supported)" if scheme.startswith("socks") else ""
        raise ValueError(
            f"proxy scheme {scheme!r} is not supported{extra}; use http:// or https://"
        )
    host = parts.hostname
    if not host:
        raise ValueError("the proxy URL has no host; give e.g. http://proxy.example:3128")
    if (parts.path not in ("", "/")) or parts.query or parts.fragment:
        raise ValueError("the proxy URL must be scheme://host:port only, with no path or query")
    if port == 0:
        raise ValueError("the proxy URL has port 0; use a number 1-65535")
    return ProxyURL(
        scheme,
        host.lower(),
        port or DEFAULT_PROXY_PORTS[scheme],
        unquote(parts.username or ""),
        unquote(parts.password or ""),
    )


# -- NO_PROXY ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Bypass:
    """One NO_PROXY entry: every host (``everything``), a network, or a name suffix."""

    everything: bool = False
    network: Network | None = None
    name: str = ""  # lower case, no leading dot: matches itself and its subdomains
    port: int | None = None  # None: any port

    def matches(self, host: str, address: IPAddress | None, port: int) -> bool:
        """``host`` in lower case without brackets; ``address`` is it parsed, when it is
        an IP literal (parsed once by the caller, not once per entry)."""
        if self.port is not None and port != self.port:
            return False
        if self.everything:
            return True
        if self.network is not None:
            return (
                address is not None
                and address.version == self.network.version
                and (address in self.network)
            )
        if address is not None:  # a name entry never matches part of an address
            return host == self.name
        return host == self.name or host.endswith("." + self.name)


def parse_no_proxy(entries: str | Iterable[str]) -> tuple[Bypass, ...]:
    """NO_PROXY's entries (a comma-separated string, or a list as in ``[network]
    no_proxy``). ValueError names an entry that is neither a name, an address nor a
    network."""
    if isinstance(entries, str):
        entries = entries.split(",")
    rules = []
    for raw in entries:
        entry = raw.strip().lower()
        if entry:
            rules.append(_bypass(entry))
    return tuple(rules)


def _bypass(entry: str) -> Bypass:
    if entry == "*":
        return Bypass(everything=True)
    host, port = entry, None
    if entry.startswith("["):  # [v6] or [v6]:port
        close = entry.find("]")
        if close < 0:
            raise ValueError(f"NO_PROXY entry {entry!r} has an unclosed '['")
        host, rest = entry[1:close], entry[close + 1 :]
        if rest:
            port = _port(rest.removeprefix(":"), entry) if rest.startswith(":") else None
            if port is None:
                raise ValueError(f"NO_PROXY entry {entry!r}: expected :port after ']'")
    elif entry.count(":") == 1:  # name:port or v4:port (a bare v6 has several colons)
        host, _, text = entry.partition(":")
        port = _port(text, entry)
    try:
        return Bypass(network=ipaddress.ip_network(host, strict=False), port=port)
    except ValueError:
        pass
    name = host.removeprefix("*.").lstrip(".").rstrip(".")
    if not name or not all(part and _LABEL.issuperset(part) for part in name.split(".")):
        raise ValueError(f"NO_PROXY entry {entry!r} is not a host name, an address or a network")
    return Bypass(name=name, port=port)


_LABEL = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_")


def _port(text: str, entry: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"NO_PROXY entry {entry!r} has an invalid port")
    return int(text)


def _ip(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


# -- the decision --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProxySettings:
    """Which proxy carries which target. ``https``: https and wss targets; ``http``:
    http and ws targets; ``bypass``: NO_PROXY. ``sources`` says where each came from,
    for logs and ``config check`` (never the credentials)."""

    https: ProxyURL | None = None
    http: ProxyURL | None = None
    bypass: tuple[Bypass, ...] = ()
    sources: tuple[str, ...] = ()

    def proxy_for(self, scheme: str, host: str, port: int) -> ProxyURL | None:
        """The proxy for a connection to ``host:port`` for a ``scheme`` URL, or None to
        connect directly. ``host`` as written in the URL (brackets allowed)."""
        proxy = self.https if _VARIABLE_FOR.get(scheme.lower()) == "https_proxy" else self.http
        if proxy is None:
            return None
        if not self.bypass:
            return proxy
        name = host.strip().removeprefix("[").removesuffix("]").lower().rstrip(".")
        address = _ip(name) if name[-1:].isdigit() or ":" in name else None
        if any(rule.matches(name, address, port) for rule in self.bypass):
            return None
        return proxy

    @property
    def any(self) -> bool:
        return self.https is not None or self.http is not None


def settings_from(
    proxy: str | None, no_proxy: Iterable[str] | None, environ: Mapping[str, str]
) -> ProxySettings:
    """The settings from ``[network] proxy`` and ``no_proxy`` (None: not in the config
    file) and the environment. Each setting separately: the config wins over the
    environment; ``proxy = ""`` means "no proxy", whatever the environment says.
    ValueError names the setting or variable whose value is wrong."""
    sources = []
    if proxy is not None:
        chosen = _parsed(proxy, "[network] proxy")
        https = http = chosen
        if chosen is not None:
            sources.append(f"[network] proxy = {chosen.display}")
    else:
        https, https_from = _from_environment(environ, "https_proxy")
        http, http_from = _from_environment(environ, "http_proxy")
        sources += [
            f"{name} = {value.display}"
            for name, value in ((https_from, https), (http_from, http))
            if value is not None
        ]
    if no_proxy is not None:
        bypass = _checked(parse_no_proxy, no_proxy, "[network] no_proxy")
        if bypass:
            sources.append("[network] no_proxy")
    else:
        name, text = _variable(environ, "no_proxy")
        bypass = _checked(parse_no_proxy, text or "", name)
        if bypass:
            sources.append(name)
    return ProxySettings(https, http, bypass, tuple(sources))


def _from_environment(environ: Mapping[str, str], lower: str) -> tuple[ProxyURL | None, str]:
    name, text = _variable(environ, lower)
    return _parsed(text, f"the environment variable {name}"), name


def _variable(environ: Mapping[str, str], lower: str) -> tuple[str, str | None]:
    """The lower-case variable if set, else the upper-case one (curl's order)."""
    if lower in environ:
        return lower, environ[lower]
    return lower.upper(), environ.get(lower.upper())


def _parsed(text: str | None, where: str) -> ProxyURL | None:
    if text is None or not text.strip():
        return None
    return _checked(parse_proxy_url, text, where)


def _checked(parse: Callable[[Any], T], value: Any, where: str) -> T:
    try:
        return parse(value)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


# -- CONNECT -------------------------------------------------------------------------------


def authority(host: str, port: int) -> str:
    """``host:port`` as a request target / Host value (IPv6 in brackets)."""
    host = host.removeprefix("[").removesuffix("]")
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def connect_request(host: str, port: int, proxy: ProxyURL) -> bytes:
    """The CONNECT request for a tunnel to ``host:port`` (authority-form, RFC 9112
    §3.2.3), with the proxy's credentials if it has any."""
    target = authority(host, port)
    if any(ord(ch) < 0x21 or ord(ch) > 0x7E for ch in target):
        raise ValueError(f"tunnel target {target!r} has characters a request line cannot carry")
    lines = [f"CONNECT {target} HTTP/1.1", f"Host: {target}"]
    credentials = proxy.authorization
    if credentials is not None:
        lines.append(f"Proxy-Authorization: {credentials}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


@dataclass(frozen=True, slots=True)
class ConnectAnswer:
    status: int
    reason: str


class ConnectReader:
    """Reads a proxy's answer to CONNECT: feed bytes to ``receive_data`` until it
    returns the answer. ProxyAnswerError for a refusal (any status but 2xx), a broken
    answer, or bytes after the head (the target cannot have spoken yet)."""

    def __init__(self, target: str, proxy: ProxyURL) -> None:
        self._buffer = b""
        self._what = f"proxy {proxy.display} (CONNECT {target})"

    def receive_data(self, data: bytes) -> ConnectAnswer | None:
        if not data:
            raise ProxyAnswerError(f"{self._what} closed the connection without answering")
        self._buffer += data
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buffer) > MAX_CONNECT_HEAD_BYTES:
                raise ProxyAnswerError(
                    f"{self._what} answered with a head over {MAX_CONNECT_HEAD_BYTES} bytes"
                )
            return None
        head, rest = self._buffer[:end], self._buffer[end + 4 :]
        status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        version, _, tail = status_line.partition(" ")
        code, _, reason = tail.partition(" ")
        if not version.startswith("HTTP/1.") or len(code) != 3 or not code.isdigit():
            raise ProxyAnswerError(
                f"{self._what} answered with no HTTP status line: {status_line[:80]!r}"
            )
        status = int(code)
        shown = "".join(ch if ch.isprintable() else "?" for ch in reason.strip())[:80]
        if not 200 <= status < 300:
            hint = ""
            if status == 407:
                hint = "; the proxy wants credentials: http://USER:PASSWORD@host:port"
            raise ProxyAnswerError(f"{self._what} refused: {status} {shown}{hint}".rstrip())
        if rest:
            raise ProxyAnswerError(f"{self._what} sent data before the tunnel was used")
        return ConnectAnswer(status, shown)
