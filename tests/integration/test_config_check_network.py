"""`dashpay config check` on [network] and [tls], as a real subprocess: the proxy URL
(scheme, host, port; credentials accepted, never printed), the environment's proxy
variables, and [tls] ca_file (readable, PEM with a certificate, readable by the
service's user, or checked at its LoadCredential= source)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import TEST_XPUB, run_cli, write_config
from tests.integration.test_config_check import unit_file, unit_loading, write
from tests.pki import make_ca

SECRET = "s3cr3t-pass"


@pytest.fixture(scope="module")
def ca_pem(tmp_path_factory) -> str:
    return make_ca(tmp_path_factory.mktemp("ca"), "check CA").read_text()


def config_file(directory: Path, **sections: dict[str, object]) -> Path:
    values = {name: {k: str(v) for k, v in table.items()} for name, table in sections.items()}
    wallet = {"xpub": TEST_XPUB, "network": "mainnet"}
    config = write_config(directory, "mysql://dashpay@localhost/dashpay", wallet=wallet, **values)
    config.chmod(0o644)
    return config


def check(*args: object, env: dict[str, str] | None = None):
    return run_cli("config", "check", *map(str, args), env=env)


# -- [network] proxy ---------------------------------------------------------------------------


def test_a_proxy_with_credentials_passes_and_the_credentials_are_never_printed(shared_dir):
    config = config_file(shared_dir, network={"proxy": f"http://shop:{SECRET}@proxy.example:3128"})
    result = check(config, "--unit", unit_file(shared_dir, "User=root"))
    assert result.code == 0, result.stderr
    assert (
        "note: outbound connections go through [network] proxy = http://***@proxy.example:3128"
    ) in result.stdout
    assert SECRET not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("proxy", "message"),
    [
        (f"socks5://shop:{SECRET}@proxy.example:1080", "socks proxies are not supported"),
        (f"http://shop:{SECRET}@proxy.example:99999", "invalid port"),
        (f"http://shop:{SECRET}@:3128", "no host"),
    ],
)
def test_a_bad_proxy_is_refused_naming_the_key_not_the_credentials(shared_dir, proxy, message):
    result = check(config_file(shared_dir, network={"proxy": proxy}))
    assert result.code == 2
    assert "[network] proxy: " in result.stderr and message in result.stderr
    assert SECRET not in result.stdout + result.stderr


def test_a_bad_no_proxy_entry_is_refused(shared_dir):
    config = shared_dir / "config.toml"
    config_file(shared_dir)
    config.write_text(config.read_text() + '\n[network]\nno_proxy = ["ok.example", "bad host"]\n')
    result = check(config)
    assert result.code == 2
    assert "[network] no_proxy: NO_PROXY entry 'bad host'" in result.stderr


def test_the_environments_proxy_is_checked_and_shown_as_this_shells(shared_dir):
    config = config_file(shared_dir)
    env = {"HTTPS_PROXY": f"http://u:{SECRET}@env-proxy:8080"}
    result = check(config, env=env)
    assert result.code == 0, result.stderr
    assert "go through HTTPS_PROXY = http://***@env-proxy:8080" in result.stdout
    assert "this shell's environment" in result.stdout and SECRET not in result.stdout
    result = check(config, env={"HTTPS_PROXY": "socks5://env:1080"})
    assert result.code == 2
    assert "the environment variable HTTPS_PROXY: proxy scheme 'socks5'" in result.stderr
    # The config wins: with [network] proxy set, the variable is not even read.
    config = config_file(shared_dir, network={"proxy": "http://proxy.example:3128"})
    result = check(config, env={"HTTPS_PROXY": "socks5://env:1080"})
    assert result.code == 0, result.stderr


# -- [tls] ca_file -----------------------------------------------------------------------------


def test_a_ca_file_of_pem_certificates_passes_with_a_note(shared_dir, ca_pem):
    ca = write(shared_dir / "ca.pem", ca_pem + ca_pem.replace("check CA", "check CA"))
    result = check(config_file(shared_dir, tls={"ca_file": ca}))
    assert result.code == 0, result.stderr
    assert f"note: [tls] ca_file: {ca} holds 1 certificate" in result.stdout  # the same twice
    assert "in addition to the system's and the bundled CAs" in result.stdout


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not a certificate\n", "holds no PEM certificate"),
        ("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "not valid PEM"),
        ("", "is empty"),
    ],
)
def test_a_ca_file_that_is_not_pem_certificates_is_refused(shared_dir, content, message):
    ca = write(shared_dir / "ca.pem", content)
    result = check(config_file(shared_dir, tls={"ca_file": ca}))
    assert result.code == 2
    assert "[tls] ca_file: " in result.stderr and message in result.stderr


def test_a_missing_ca_file_is_refused(shared_dir):
    result = check(config_file(shared_dir, tls={"ca_file": shared_dir / "nowhere.pem"}))
    assert result.code == 2
    assert f"[tls] ca_file: {shared_dir / 'nowhere.pem'} does not exist" in result.stderr


def test_a_ca_file_the_service_user_cannot_read_is_refused(shared_dir, ca_pem):
    ca = write(shared_dir / "ca.pem", ca_pem, 0o600)
    config = config_file(shared_dir, tls={"ca_file": ca})
    unit = unit_file(shared_dir, "User=nobody")
    result = check(config, "--unit", unit)
    assert result.code == 2
    assert f"[tls] ca_file: not readable by the service of {unit}" in result.stderr
    ca.chmod(0o644)
    result = check(config, "--unit", unit)
    assert result.code == 0, result.stderr


def test_a_ca_file_credential_is_checked_at_its_load_credential_source(shared_dir, ca_pem):
    source = write(shared_dir / "private-ca.pem", "garbage\n", 0o600)  # systemd reads as root
    config = config_file(shared_dir, tls={"ca_file": "${CREDENTIALS_DIRECTORY}/ca.pem"})
    unit = unit_loading(shared_dir, "ca.pem", source)
    result = check(config, "--unit", unit)
    assert result.code == 2
    assert "[tls] ca_file: " in result.stderr and "holds no PEM certificate" in result.stderr
    write(source, ca_pem, 0o600)
    result = check(config, "--unit", unit)
    assert result.code == 0, result.stderr
    assert f"ca_file: ${{CREDENTIALS_DIRECTORY}}/ca.pem is {source}" in result.stdout
    assert "holds 1 certificate" in result.stdout


def test_the_shipped_unit_documents_the_ca_credential(shared_dir):
    unit = Path(__file__).resolve().parents[2] / "systemd" / "dashpay.service"
    assert "#LoadCredential=ca.pem:/etc/dashpay/ca.pem" in unit.read_text()
