"""daemon/openfiles.py: the soft open-file limit raised to the hard one, and the
descriptors the configured limits need."""

from __future__ import annotations

import dataclasses
import logging
import resource

from dashpay.config.http import HttpConfig
from dashpay.daemon.openfiles import ensure_open_files, open_files_needed, raise_open_files
from dashpay.domain.limits import MAX_CONTROL_CONNECTIONS, OPEN_FILES_RESERVE


def config_with(**http) -> HttpConfig:
    return dataclasses.replace(HttpConfig(), **http)


def test_needed_counts_http_connections_only_when_http_listens():
    off = config_with(max_connections=5000)
    on = config_with(listen=("127.0.0.1:8080",), max_connections=5000)
    assert open_files_needed(off) == MAX_CONTROL_CONNECTIONS + OPEN_FILES_RESERVE
    assert open_files_needed(on) == MAX_CONTROL_CONNECTIONS + OPEN_FILES_RESERVE + 5000


def test_the_soft_limit_is_raised_to_the_hard_one():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(64, hard), hard))
        files = raise_open_files(32)
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == files.soft
        assert files.soft == (hard if hard != resource.RLIM_INFINITY else 64)
        assert files.enough and files.error is None
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_hard_limit_below_the_need_is_logged_with_what_to_change(caplog):
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    too_many = (hard - MAX_CONTROL_CONNECTIONS - OPEN_FILES_RESERVE) + 1
    config = config_with(listen=("127.0.0.1:8080",), max_connections=too_many)
    with caplog.at_level(logging.INFO, logger="dashpay.daemon"):
        files = ensure_open_files(config)
    assert not files.enough
    assert "LimitNOFILE=" in caplog.text and "max_connections" in caplog.text
