"""`dashpay receiver new --callback-url` refuses at creation a URL the [callbacks] rules
would refuse at every send (exit 2, naming the rule and the key that changes it),
through a real CLI subprocess against a real daemon (one per module: SQLite, with
`allow_private_targets = false` so both rules can be seen)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import DaemonProcess, start_daemon, wait_receivers, write_config


@pytest.fixture(scope="module")
def strict_daemon() -> Iterator[DaemonProcess]:
    directory = Path(tempfile.mkdtemp(prefix="dp-", dir="/tmp"))
    config = write_config(
        directory,
        f"sqlite:///{directory / 'dashpay.sqlite3'}",
        callbacks={"allow_private_targets": False},
    )
    daemon = start_daemon(config, ready=False)
    try:
        wait_receivers(daemon)
        yield daemon
    finally:
        daemon.stop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.parametrize(
    ("url", "key"),
    [
        ("http://169.254.169.254/latest", "block_link_local = false"),
        ("http://[fe80::1]/cb", "block_link_local = false"),
        ("http://[::ffff:169.254.169.254]/latest", "block_link_local = false"),
        ("http://[64:ff9b::a9fe:a9fe]/latest", "block_link_local = false"),
        ("http://[2002:a9fe:a9fe::]/latest", "block_link_local = false"),
        ("http://[64:ff9b:1::a9fe:a9fe]/latest", "block_link_local = false"),
        ("http://127.0.0.1:8080/cb", "allow_private_targets = true"),
        ("http://[64:ff9b::7f00:1]/cb", "allow_private_targets = true"),
        ("http://[2002:a00:1::]/cb", "allow_private_targets = true"),
        ("http://[::a00:1]/cb", "allow_private_targets = true"),
        ("http://localhost:8080/cb", "allow_private_targets = true"),  # by what DNS says
    ],
)
def test_a_callback_url_that_can_never_be_delivered_is_refused_at_creation(strict_daemon, url, key):
    result = strict_daemon.cli("receiver", "new", "--amount", "1", "--callback-url", url)
    assert result.code == 2, (result.code, result.stdout, result.stderr)
    assert result.stdout == ""
    assert "can never be delivered" in result.stderr
    assert f"set [callbacks] {key}" in result.stderr


def test_the_refusal_names_the_address_inside_the_ipv6_literal(strict_daemon):
    url = "http://[64:ff9b::a9fe:a9fe]/latest"
    result = strict_daemon.cli("receiver", "new", "--amount", "1", "--callback-url", url)
    assert result.code == 2
    assert "64:ff9b::a9fe:a9fe embeds 169.254.169.254" in result.stderr
    assert "link-local" in result.stderr


def test_a_target_no_setting_allows_is_refused_without_a_setting_to_change(strict_daemon):
    url = "http://224.0.0.1/cb"
    result = strict_daemon.cli("receiver", "new", "--amount", "1", "--callback-url", url)
    assert result.code == 2 and "multicast" in result.stderr
    assert "set [callbacks]" not in result.stderr


@pytest.mark.parametrize(
    "url",
    [
        "https://93.184.216.34/cb",
        "https://[2606:4700::1111]/cb",
        "https://[64:ff9b::5db8:d822]/cb",  # NAT64 of a public address
        "https://shop.invalid/cb",  # never resolves: the send-time guard decides
    ],
)
def test_a_deliverable_or_undecidable_callback_url_is_accepted(strict_daemon, url):
    result = strict_daemon.cli("receiver", "new", "--amount", "1", "--callback-url", url, "--json")
    assert result.code == 0, result.stderr
    assert result.json()["callback_url"] == url
