"""`[chain] backend` and `[blockbook]`: the choice, what each backend requires, and the
reserved "dashd" refused as not yet implemented."""

from __future__ import annotations

import pytest

from dashpay.config.errors import ConfigError
from dashpay.config.load import config_from_dict


def error(data: dict) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        config_from_dict(data, env={})
    return caught.value


def test_insight_is_the_default_and_needs_no_blockbook_section():
    config = config_from_dict({}, env={})
    assert config.chain.backend == "insight" and config.blockbook.url is None


def test_blockbook_with_a_url_has_its_websocket_at_url_slash_websocket():
    config = config_from_dict(
        {
            "chain": {"backend": "Blockbook"},
            "blockbook": {"url": "https://bb.example.com/", "reconnect_initial": "2s"},
        },
        env={},
    )
    assert config.chain.backend == "blockbook"
    assert config.blockbook.websocket_url == "https://bb.example.com/websocket"
    assert config.blockbook.reconnect_initial == 2 and config.blockbook.timeout == 10


def test_blockbook_without_a_url_is_refused_saying_what_to_set():
    exc = error({"chain": {"backend": "blockbook"}})
    assert exc.key == "blockbook.url" and "required" in str(exc)
    assert "https://" in (exc.hint or "")


def test_dashd_is_accepted_by_name_and_refused_as_not_yet_implemented():
    exc = error({"chain": {"backend": "dashd"}})
    assert exc.key == "chain.backend" and "not yet implemented" in str(exc)


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"chain": {"backend": "electrum"}}, "chain.backend"),
        ({"blockbook": {"url": "ftp://bb.example.com"}}, "blockbook.url"),
        (
            {
                "chain": {"backend": "blockbook"},
                "blockbook": {
                    "url": "https://bb",
                    "reconnect_initial": "2m",
                    "reconnect_max": "1m",
                },
            },
            "blockbook.reconnect_initial",
        ),
    ],
)
def test_bad_chain_settings_name_their_key(data, key):
    assert error(data).key == key
