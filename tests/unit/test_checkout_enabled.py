"""When the daemon serves the checkout page and which public URL its links carry."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

from dashpay.config.http import HttpConfig
from dashpay.daemon.checkout import checkout_enabled, public_url


def daemon(*, listen=(), public=None, sandbox=None, urls=()):
    http = dataclasses.replace(HttpConfig(), listen=tuple(listen), public_url=public)
    return SimpleNamespace(config=SimpleNamespace(http=http), sandbox=sandbox, http_urls=list(urls))


def test_off_without_public_url_or_without_listen():
    assert not checkout_enabled(daemon())
    assert public_url(daemon(listen=["127.0.0.1:8080"])) is None
    assert public_url(daemon(public="https://pay.example")) is None  # nothing listens


def test_on_with_listen_and_public_url():
    shop = daemon(listen=["127.0.0.1:8080"], public="https://pay.example", urls=["http://x:1"])
    assert checkout_enabled(shop) and public_url(shop) == "https://pay.example"


def test_sandbox_uses_its_own_http_url():
    sandbox = daemon(listen=["127.0.0.1:0"], sandbox=object(), urls=["http://127.0.0.1:4321"])
    assert public_url(sandbox) == "http://127.0.0.1:4321"
    assert public_url(daemon(listen=["127.0.0.1:0"], sandbox=object())) is None  # not bound yet
