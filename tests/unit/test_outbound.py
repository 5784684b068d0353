"""The one trust store (net/outbound.client_tls_context) and the config's warning about
loopback URLs a proxy would carry."""

from __future__ import annotations

import ssl
from pathlib import Path

import certifi

from dashpay.config.load import config_from_dict, config_warnings
from dashpay.net.outbound import Outbound, client_tls_context
from tests.conftest import TEST_XPUB
from tests.pki import make_ca

CERTIFI_PEM = Path(certifi.where()).read_text()
BEGIN = "-----BEGIN CERTIFICATE-----"


def one_certificate() -> str:
    """The first CA certificate of certifi's bundle, as PEM."""
    start = CERTIFI_PEM.index(BEGIN)
    end = CERTIFI_PEM.index("-----END CERTIFICATE-----", start) + len("-----END CERTIFICATE-----")
    return CERTIFI_PEM[start:end] + "\n"


def certifi_count() -> int:
    store = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    store.load_verify_locations(cadata=CERTIFI_PEM)
    return store.cert_store_stats()["x509_ca"]


def test_the_client_context_verifies_certificates_and_host_names():
    context = client_tls_context()
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


def test_ssl_cert_file_no_longer_replaces_the_bundled_cas(tmp_path, monkeypatch):
    lonely = tmp_path / "one.pem"
    lonely.write_text(one_certificate())
    monkeypatch.setenv("SSL_CERT_FILE", str(lonely))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    assert client_tls_context().cert_store_stats()["x509_ca"] >= certifi_count()


def test_ca_file_is_added_to_the_store_not_put_in_its_place(tmp_path, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "none.pem"))  # no system store here
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path))
    base = client_tls_context().cert_store_stats()["x509_ca"]
    assert base == certifi_count()
    outbound = Outbound.from_environment({}, ca_pem=make_ca(tmp_path).read_text())
    assert outbound.tls_context.cert_store_stats()["x509_ca"] == base + 1
    assert not outbound.proxies.any


def test_the_trust_store_is_built_on_first_use_and_once(tmp_path, monkeypatch):
    """A daemon whose peers are all http never loads the stores (~2.6 MB); the first TLS
    connection builds them, with [tls] ca_file added, and every later one shares them."""
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "none.pem"))
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path))
    outbound = Outbound.from_environment({}, ca_pem=make_ca(tmp_path).read_text())
    assert outbound._tls_context is None
    first = outbound.tls_context
    assert first.cert_store_stats()["x509_ca"] == certifi_count() + 1
    assert outbound.tls_context is first


def test_a_given_context_is_used_as_it_is():
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    assert Outbound(Outbound.from_environment({}).proxies, context).tls_context is context


def warnings_for(**sections: dict) -> list[str]:
    data = {"wallet": {"xpub": TEST_XPUB}, **sections}
    return [w for w in config_warnings(config_from_dict(data, env={})) if "proxy" in w]


def test_a_loopback_url_the_proxy_would_carry_is_a_warning():
    found = warnings_for(
        insight={"url": "http://127.0.0.1:3001/insight-api"},
        callbacks={"default_url": "http://localhost:8000/cb"},
        network={"proxy": "http://user:secret@proxy.example:3128"},
    )
    assert len(found) == 2, found
    assert found[0].startswith("[insight] url http://127.0.0.1:3001/insight-api is on this host")
    assert "add 127.0.0.1 to [network] no_proxy" in found[0]
    assert found[1].startswith("[callbacks] default_url http://localhost:8000/cb")
    assert all("secret" not in warning for warning in found)


def test_no_warning_when_no_proxy_covers_the_loopback_url():
    assert not warnings_for(
        insight={"url": "http://127.0.0.1:3001/insight-api"},
        network={"proxy": "http://proxy.example:3128", "no_proxy": ["127.0.0.0/8"]},
    )
    assert not warnings_for(insight={"url": "http://127.0.0.1:3001/insight-api"})
