"""[http]: every key validated with a message naming the key and the fix."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from dashpay.config.errors import ConfigError
from dashpay.config.load import config_from_dict, load_config

PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def http_error(section: dict) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        config_from_dict({"http": section}, env={})
    return caught.value


def test_defaults_listen_nowhere():
    http = config_from_dict({}, env={}).http
    assert http.listen == ()
    assert http.max_body == 64 * 1024
    assert http.request_timeout == 30.0
    assert http.max_connections == 2048
    assert not http.tls and http.cors_origins == () and http.trusted_proxies == ()


def test_valid_values_are_converted():
    http = config_from_dict(
        {
            "http": {
                "listen": ["127.0.0.1:8080", "[::1]:8080", "localhost:0"],
                "trusted_proxies": ["10.0.0.0/8", "::1"],
                "cors_origins": ["https://Shop.example:8443"],
                "max_body": "1MiB",
                "request_timeout": "5s",
            }
        },
        env={},
    ).http
    assert http.listen == ("127.0.0.1:8080", "[::1]:8080", "localhost:0")
    assert http.trusts("10.1.2.3") and http.trusts("::1") and http.trusts("::ffff:10.0.0.1")
    assert not http.trusts("192.0.2.1") and not http.trusts("garbage")
    assert http.trusted_proxies[0] == ipaddress.ip_network("10.0.0.0/8")
    assert http.cors_origins == ("https://shop.example:8443",)
    assert http.max_body == 2**20


@pytest.mark.parametrize(
    ("section", "key", "words"),
    [
        ({"listen": "127.0.0.1:8080"}, "http.listen", "expected array"),
        ({"listen": ["127.0.0.1"]}, "http.listen", "is not host:port"),
        ({"listen": ["127.0.0.1:99999"]}, "http.listen", "is not host:port"),
        ({"listen": ["::1:8080"]}, "http.listen", "IPv6 address in brackets"),
        ({"listen": ["[zz]:8080"]}, "http.listen", "is not an IPv6 address"),
        ({"listen": ["bad host:80"]}, "http.listen", "not an IP address or host name"),
        ({"listen": ["a:1", "a:1"]}, "http.listen", "listed twice"),
        ({"trusted_proxies": ["10.0.0.1/8"]}, "http.trusted_proxies", "10.0.0.0/8"),
        ({"trusted_proxies": ["proxy"]}, "http.trusted_proxies", "not an IP address"),
        ({"cors_origins": ["https://shop.example/"]}, "http.cors_origins", "not an origin"),
        ({"cors_origins": ["ftp://shop.example"]}, "http.cors_origins", "not an origin"),
        ({"cors_origins": ["*", "https://a.example"]}, "http.cors_origins", "alone"),
        ({"max_body": "lots"}, "http.max_body", "not a size"),
        ({"max_body": 10}, "http.max_body", "out of range"),
        ({"max_body": "32MiB"}, "http.max_body", "out of range"),
        ({"request_timeout": "0"}, "http.request_timeout", "longer than 0"),
        ({"max_in_flight": 0}, "http.max_in_flight", "out of range"),
        ({"max_connections": 15}, "http.max_connections", "out of range"),
        ({"max_connections": 100_001}, "http.max_connections", "out of range"),
        ({"max_connections": "many"}, "http.max_connections", "expected integer"),
        ({"tls_cert": "c.pem"}, "http.tls_key", "tls_cert is set but tls_key is not"),
        ({"tls_key": "k.pem"}, "http.tls_cert", "tls_key is set but tls_cert is not"),
        ({"listn": []}, "http", "did you mean listen?"),
    ],
)
def test_bad_values_name_the_key_and_the_problem(section, key, words):
    error = http_error(section)
    assert error.key == key
    assert words in str(error)


def test_tls_files_are_read_relative_to_the_config(tmp_path: Path):
    (tmp_path / "cert.pem").write_text(PEM)
    (tmp_path / "key.pem").write_text(PEM.replace("CERTIFICATE", "PRIVATE KEY"))
    config = tmp_path / "config.toml"
    config.write_text('[http]\ntls_cert = "cert.pem"\ntls_key = "key.pem"\n')
    http = load_config(config, env={}).http
    assert http.tls and http.tls_cert == tmp_path / "cert.pem"
    (tmp_path / "key.pem").write_text("not pem")
    with pytest.raises(ConfigError, match=r"\[http\] tls_key: .*key.pem is not a PEM file"):
        load_config(config, env={})
    (tmp_path / "key.pem").unlink()
    with pytest.raises(ConfigError, match=r"\[http\] tls_key: cannot read .*key.pem"):
        load_config(config, env={})
