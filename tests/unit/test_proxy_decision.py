"""wire/proxy.py: the proxy URL, NO_PROXY matching, the config-over-environment
precedence and the CONNECT exchange, as pure functions."""

from __future__ import annotations

import pytest

from dashpay.wire.proxy import (
    ConnectReader,
    ProxyAnswerError,
    ProxyURL,
    connect_request,
    parse_no_proxy,
    parse_proxy_url,
    settings_from,
)

# -- the proxy URL ---------------------------------------------------------------------------


def test_a_proxy_url_gives_scheme_host_port_and_decoded_credentials():
    proxy = parse_proxy_url("http://merchant:p%40ss%20word@Proxy.Example:3128")
    assert (proxy.scheme, proxy.host, proxy.port) == ("http", "proxy.example", 3128)
    assert (proxy.username, proxy.password) == ("merchant", "p@ss word")
    assert proxy.authorization == "Basic bWVyY2hhbnQ6cEBzcyB3b3Jk"  # base64 of user:pass
    assert proxy.display == "http://***@proxy.example:3128"
    assert "p@ss" not in repr(proxy)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("proxy.example:3128", ("http", "proxy.example", 3128)),  # no scheme: http, as curl
        ("http://proxy.example", ("http", "proxy.example", 80)),
        ("https://proxy.example", ("https", "proxy.example", 443)),
        ("http://[fd00::1]:8080/", ("http", "fd00::1", 8080)),
    ],
)
def test_proxy_url_defaults(text, expected):
    proxy = parse_proxy_url(text)
    assert (proxy.scheme, proxy.host, proxy.port) == expected
    assert proxy.authorization is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("socks5://user:secret@proxy:1080", "socks proxies are not supported"),
        ("ftp://proxy:21", "use http:// or https://"),
        ("http://user:secret@proxy:99999", "invalid port"),
        ("http://user:secret@proxy:0", "port 0"),
        ("http://:3128", "no host"),
        ("http://user:secret@proxy:3128/path", "no path"),
    ],
)
def test_a_bad_proxy_url_says_what_is_wrong_without_the_credentials(text, message):
    with pytest.raises(ValueError, match=message) as caught:
        parse_proxy_url(text)
    assert "secret" not in str(caught.value)


# -- NO_PROXY --------------------------------------------------------------------------------


def bypasses(no_proxy: str, host: str, port: int = 443) -> bool:
    settings = settings_from("http://proxy:3128", no_proxy.split(","), {})
    return settings.proxy_for("https", host, port) is None


@pytest.mark.parametrize(
    ("no_proxy", "host", "port", "direct"),
    [
        ("example.com", "example.com", 443, True),
        ("example.com", "www.example.com", 443, True),
        (".example.com", "example.com", 443, True),
        ("*.example.com", "a.b.example.com", 443, True),
        ("example.com", "badexample.com", 443, False),
        ("example.com", "example.com.evil", 443, False),
        ("EXAMPLE.com", "Example.COM.", 443, True),
        ("example.com:8443", "example.com", 8443, True),
        ("example.com:8443", "example.com", 443, False),
        ("10.0.0.0/8", "10.1.2.3", 443, True),
        ("10.0.0.0/8", "11.1.2.3", 443, False),
        ("10.0.0.0/8", "ten.example", 443, False),  # names are never resolved for this
        ("127.0.0.1", "127.0.0.1", 443, True),
        ("127.0.0.1", "localhost", 443, False),
        ("0.1", "127.0.0.1", 443, False),  # a name entry never matches part of an address
        ("::1", "[::1]", 443, True),
        ("[::1]:8443", "::1", 8443, True),
        ("fd00::/8", "[fd12::5]", 443, True),
        ("*", "anything.example", 443, True),
        (" localhost , 10.0.0.0/8 ", "localhost", 443, True),
        ("", "example.com", 443, False),
    ],
)
def test_no_proxy_matching(no_proxy, host, port, direct):
    assert bypasses(no_proxy, host, port) is direct


@pytest.mark.parametrize("entry", ["exa mple.com", "[::1", "host:http", "host:70000", "a..b"])
def test_a_bad_no_proxy_entry_is_named(entry):
    with pytest.raises(ValueError, match="NO_PROXY entry"):
        parse_no_proxy(entry)


# -- where the settings come from --------------------------------------------------------------

ENV = {
    "HTTPS_PROXY": "http://env-secure:3128",
    "HTTP_PROXY": "http://env-plain:3128",
    "NO_PROXY": "internal.example",
}


def test_the_environment_gives_a_proxy_per_scheme_and_no_proxy():
    settings = settings_from(None, None, ENV)
    assert settings.proxy_for("https", "insight.dash.org", 443).host == "env-secure"
    assert settings.proxy_for("wss", "insight.dash.org", 443).host == "env-secure"
    assert settings.proxy_for("http", "insight.dash.org", 80).host == "env-plain"
    assert settings.proxy_for("ws", "insight.dash.org", 80).host == "env-plain"
    assert settings.proxy_for("https", "a.internal.example", 443) is None
    assert settings.sources == (
        "HTTPS_PROXY = http://env-secure:3128",
        "HTTP_PROXY = http://env-plain:3128",
        "NO_PROXY",
    )


def test_lower_case_variables_win_over_upper_case():
    environ = {**ENV, "https_proxy": "http://lower:1", "no_proxy": "other.example"}
    settings = settings_from(None, None, environ)
    assert settings.proxy_for("https", "x.example", 443).host == "lower"
    assert settings.proxy_for("https", "internal.example", 443) is not None
    assert settings.proxy_for("https", "other.example", 443) is None


def test_the_config_wins_over_the_environment_setting_by_setting():
    settings = settings_from("http://configured:8080", None, ENV)
    assert settings.proxy_for("https", "x.example", 443).host == "configured"
    assert settings.proxy_for("http", "x.example", 80).host == "configured"  # every scheme
    assert settings.proxy_for("https", "internal.example", 443) is None  # NO_PROXY still
    settings = settings_from("http://configured:8080", ["only.example"], ENV)
    assert settings.proxy_for("https", "internal.example", 443) is not None
    assert settings.proxy_for("https", "only.example", 443) is None
    settings = settings_from(None, [], ENV)  # an empty list in the file: no exceptions
    assert settings.proxy_for("https", "internal.example", 443).host == "env-secure"


def test_an_empty_proxy_in_the_config_means_none_whatever_the_environment_says():
    settings = settings_from("", None, ENV)
    assert not settings.any
    assert settings.proxy_for("https", "insight.dash.org", 443) is None


def test_a_bad_environment_value_names_the_variable():
    with pytest.raises(ValueError, match="environment variable https_proxy: .*socks"):
        settings_from(None, None, {"https_proxy": "socks5://proxy:1080"})
    with pytest.raises(ValueError, match="NO_PROXY"):
        settings_from(None, None, {"NO_PROXY": "bad host"})


# -- CONNECT ----------------------------------------------------------------------------------

PROXY = ProxyURL("http", "proxy", 3128, "user", "secret")


def test_connect_request_is_authority_form_with_credentials():
    assert connect_request("insight.dash.org", 443, PROXY) == (
        b"CONNECT insight.dash.org:443 HTTP/1.1\r\nHost: insight.dash.org:443\r\n"
        b"Proxy-Authorization: Basic dXNlcjpzZWNyZXQ=\r\n\r\n"
    )
    assert connect_request("::1", 8443, ProxyURL("http", "p", 1)).startswith(
        b"CONNECT [::1]:8443 HTTP/1.1\r\nHost: [::1]:8443\r\n\r\n"
    )
    with pytest.raises(ValueError):
        connect_request("evil\r\nX-Injected: 1", 443, PROXY)


def test_connect_answer_read_across_several_chunks():
    reader = ConnectReader("insight.dash.org:443", PROXY)
    assert reader.receive_data(b"HTTP/1.1 200 Conn") is None
    answer = reader.receive_data(b"ection established\r\nVia: squid\r\n\r\n")
    assert (answer.status, answer.reason) == (200, "Connection established")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n", "refused: 407 .*USER:PASSWORD"),
        (b"HTTP/1.1 403 Forbidden\r\n\r\n", "refused: 403 Forbidden"),
        (b"SSH-2.0-OpenSSH\r\n\r\n", "no HTTP status line"),
        (b"HTTP/1.1 200 OK\r\n\r\nsurprise", "sent data before the tunnel was used"),
        (b"", "closed the connection without answering"),
    ],
)
def test_a_refused_or_broken_connect_answer_is_a_clear_error(data, message):
    reader = ConnectReader("insight.dash.org:443", PROXY)
    with pytest.raises(ProxyAnswerError, match=message) as caught:
        reader.receive_data(data)
    text = str(caught.value)
    assert "http://***@proxy:3128" in text and "secret" not in text
    assert "CONNECT insight.dash.org:443" in text


def test_an_endless_connect_answer_head_is_refused():
    reader = ConnectReader("x:443", PROXY)
    with pytest.raises(ProxyAnswerError, match="head over"):
        for _ in range(100):
            reader.receive_data(b"X-Filler: " + b"a" * 1000 + b"\r\n")
