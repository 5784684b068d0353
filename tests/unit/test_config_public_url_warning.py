"""[http] public_url without [http] listen: allowed, but no page is served, so warned."""

from __future__ import annotations

from dashpay.config.load import config_from_dict, config_warnings


def warnings_of(http: dict) -> list[str]:
    return [w for w in config_warnings(config_from_dict({"http": http})) if "public_url" in w]


def test_public_url_without_listen_is_warned():
    (warning,) = warnings_of({"public_url": "https://pay.example"})
    assert "[http] listen is empty" in warning and "no checkout page" in warning


def test_public_url_with_listen_or_neither_is_quiet():
    assert warnings_of({"public_url": "https://pay.example", "listen": ["127.0.0.1:0"]}) == []
    assert warnings_of({}) == []
