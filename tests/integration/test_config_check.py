"""`dashpay config check` as a real subprocess: a key's network, and whether the
service's user (the unit's User=) can read the files the daemon reads."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from dashpay.config.unit import installed_unit
from dashpay.domain.wallet import parse_extended_public_key
from tests.conftest import TEST_XPUB, run_cli, start_daemon, write_config

TESTNET_VERSION = bytes.fromhex("043587CF")
CALLBACK_SECRET = "0123456789abcdef0123456789abcdef"


def write(path: Path, text: str, mode: int = 0o644) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def config_file(directory: Path, *, network: str = "mainnet", xpub: str = TEST_XPUB, **extra):
    sections = {name: {k: str(v) for k, v in values.items()} for name, values in extra.items()}
    config = write_config(
        directory,
        "mysql://dashpay@localhost/dashpay",
        wallet={"xpub": xpub, "network": network},
        **sections,
    )
    config.chmod(0o644)
    return config


def unit_file(directory: Path, *lines: str) -> Path:
    return write(directory / "dashpay.service", "[Service]\n" + "".join(f"{x}\n" for x in lines))


def unit_loading(directory: Path, credential: str, source: Path) -> Path:
    """A unit running as nobody whose drop-in loads ``credential`` from ``source``."""
    unit = unit_file(directory, "User=nobody")
    dropins = directory / "dashpay.service.d"
    dropins.mkdir()
    write(dropins / "credentials.conf", f"[Service]\nLoadCredential={credential}:{source}\n")
    return unit


def check(*args: str):
    return run_cli("config", "check", *map(str, args))


# -- the key's network ----------------------------------------------------------------


def test_an_xpub_with_testnet_passes_with_a_warning(shared_dir):
    result = check(config_file(shared_dir, network="testnet"))
    assert result.code == 0, result.stderr
    assert "ok (wallet testnet" in result.stdout
    assert "warning: [wallet] xpub: the key is an xpub key" in result.stderr
    assert "dashpay wallet derive --count 5" in result.stderr


def test_an_xpub_with_mainnet_has_no_key_warning(shared_dir):
    result = check(config_file(shared_dir), "--unit", unit_file(shared_dir, "User=root"))
    assert result.code == 0, result.stderr
    assert "xpub" not in result.stderr


def test_a_tpub_with_mainnet_is_refused(shared_dir):
    tpub = parse_extended_public_key(TEST_XPUB, "mainnet").serialize(TESTNET_VERSION)
    result = check(config_file(shared_dir, xpub=tpub))
    assert result.code == 2
    assert "[wallet] xpub: the key is a testnet key (tpub...)" in result.stderr


def test_the_daemon_logs_the_xpub_testnet_warning_at_start(short_tmp):
    config = write_config(
        short_tmp,
        f"sqlite:///{short_tmp / 'db.sqlite3'}",
        wallet={"xpub": TEST_XPUB, "network": "testnet"},
    )
    daemon = start_daemon(config, wait=False)
    try:
        deadline = time.monotonic() + 20
        while "wallet fingerprint=" not in daemon.log() and time.monotonic() < deadline:
            assert daemon.proc.poll() is None, daemon.log()
            time.sleep(0.05)
        time.sleep(0.2)
    finally:
        daemon.stop(signal.SIGTERM)
    assert "config warning: [wallet] xpub: the key is an xpub key" in daemon.log()


# -- files the service reads ----------------------------------------------------------


def test_a_password_file_the_service_user_cannot_read_is_refused(shared_dir):
    password = write(shared_dir / "db-password", "hunter2\n", 0o600)
    config = config_file(shared_dir, database={"password_file": password})
    unit = unit_file(shared_dir, "User=nobody")
    result = check(config, "--unit", unit)
    assert result.code == 2
    assert f"[database] password_file: not readable by the service of {unit}" in result.stderr
    assert "user nobody cannot read" in result.stderr and "mode 0600" in result.stderr
    assert "hunter2" not in result.stdout + result.stderr
    password.chmod(0o644)
    result = check(config, "--unit", unit)
    assert result.code == 0, result.stderr
    assert f"files checked as user nobody (User= of {unit})" in result.stdout


def test_a_config_file_in_a_directory_the_service_cannot_enter_is_refused(shared_dir):
    private = shared_dir / "private"
    private.mkdir(mode=0o700)
    config = config_file(private)
    result = check(config, "--unit", unit_file(shared_dir, "User=nobody"))
    assert result.code == 2
    assert f"user nobody cannot enter {private}" in result.stderr


def test_a_file_under_tmp_is_refused_when_the_unit_has_private_tmp(shared_dir):
    config = config_file(shared_dir)
    result = check(config, "--unit", unit_file(shared_dir, "User=nobody", "PrivateTmp=yes"))
    assert result.code == 2
    assert "which has its own /tmp (PrivateTmp=" in result.stderr


def test_a_unit_user_that_does_not_exist_is_a_warning(shared_dir):
    unit = unit_file(shared_dir, "User=dashpay-no-such-user")
    result = check(config_file(shared_dir), "--unit", unit)
    assert result.code == 0, result.stderr
    assert "the user dashpay-no-such-user of" in result.stderr
    assert "does not exist on this machine" in result.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="the caution is for root")
def test_root_without_a_unit_says_it_cannot_tell(shared_dir):
    if installed_unit() is not None:
        pytest.skip(f"{installed_unit()} is installed and would be used")
    password = write(shared_dir / "db-password", "hunter2\n", 0o600)
    config = config_file(shared_dir, database={"password_file": password})
    result = check(config)
    assert result.code == 0, result.stderr
    assert "running as root, which can read any file: cannot tell" in result.stderr
    assert str(password) in result.stderr and "--unit" in result.stderr


# -- ${CREDENTIALS_DIRECTORY} ---------------------------------------------------------


def credentials_config(directory: Path) -> Path:
    return config_file(
        directory, callbacks={"secret_file": "${CREDENTIALS_DIRECTORY}/callback-secret"}
    )


def test_a_credential_path_without_a_unit_is_noted_not_refused(shared_dir):
    result = check(credentials_config(shared_dir))
    if installed_unit() is not None:
        pytest.skip(f"{installed_unit()} is installed and would be used")
    assert result.code == 0, result.stderr
    assert (
        "note: [callbacks] secret_file: ${CREDENTIALS_DIRECTORY}/callback-secret exists only "
        "inside the service"
    ) in result.stdout


def test_a_credential_is_checked_at_its_load_credential_source(shared_dir):
    source = write(shared_dir / "secret", "short\n", 0o600)  # systemd reads it as root
    config = credentials_config(shared_dir)
    unit = unit_loading(shared_dir, "callback-secret", source)
    result = check(config, "--unit", unit)
    assert result.code == 2
    assert "[callbacks] secret_file: the secret has 5 characters" in result.stderr
    write(source, CALLBACK_SECRET, 0o600)
    result = check(config, "--unit", unit)
    assert result.code == 0, result.stderr
    assert f"secret_file: ${{CREDENTIALS_DIRECTORY}}/callback-secret is {source}" in result.stdout
    source.unlink()
    result = check(config, "--unit", unit)
    assert result.code == 2
    assert f"{source} does not exist (the source of LoadCredential=callback-secret" in (
        result.stderr
    )


def test_a_credential_the_unit_does_not_load_is_refused(shared_dir):
    unit = unit_file(shared_dir, "User=nobody", "LoadCredential=db-password:/etc/x")
    result = check(credentials_config(shared_dir), "--unit", unit)
    assert result.code == 2
    assert "names the credential 'callback-secret', but" in result.stderr
    assert "LoadCredential=callback-secret:/etc/dashpay/callback-secret" in result.stderr
