"""`[chain] backend`, `[blockbook]` and `[dashd]`: the choice and what each backend
requires (for dashd: both URLs and exactly one credential form)."""

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


DASHD = {"rpc_url": "http://127.0.0.1:9998", "zmq_url": "tcp://127.0.0.1:28332"}


def test_dashd_with_a_cookie_file_resolves_it_and_reads_it_only_in_config_check(tmp_path):
    data = {"chain": {"backend": "dashd"}, "dashd": {**DASHD, "rpc_cookie_file": ".cookie"}}
    config = config_from_dict(data, path=tmp_path / "dashpay.toml", env={})
    assert config.dashd.rpc_cookie_file == tmp_path / ".cookie"  # absent: the daemon waits
    from dashpay.config.secrets import OfflineCheck

    with pytest.raises(ConfigError) as caught:
        config_from_dict(data, path=tmp_path / "dashpay.toml", env={}, offline=OfflineCheck())
    assert caught.value.key == "dashd.rpc_cookie_file" and "does not exist" in str(caught.value)
    (tmp_path / ".cookie").write_text("__cookie__:abc\n")
    config_from_dict(data, path=tmp_path / "dashpay.toml", env={}, offline=OfflineCheck())


def test_dashd_with_a_user_reads_the_password_file_and_never_shows_it(tmp_path):
    (tmp_path / "pw").write_text("s3cret-password\n")
    dashd = {**DASHD, "rpc_user": "shop", "rpc_password_file": str(tmp_path / "pw")}
    config = config_from_dict({"chain": {"backend": "dashd"}, "dashd": dashd}, env={})
    assert config.dashd.rpc_user == "shop" and config.dashd.rpc_password == "s3cret-password"
    assert "s3cret" not in repr(config.dashd)


@pytest.mark.parametrize(
    ("dashd", "key", "words"),
    [
        ({"zmq_url": DASHD["zmq_url"], "rpc_cookie_file": "/c"}, "dashd.rpc_url", "required"),
        ({"rpc_url": DASHD["rpc_url"], "rpc_cookie_file": "/c"}, "dashd.zmq_url", "required"),
        (DASHD, "dashd.rpc_cookie_file", "exactly one"),
        ({**DASHD, "rpc_cookie_file": "/c", "rpc_user": "u"}, "dashd.rpc_user", "both"),
        ({**DASHD, "rpc_user": "u"}, "dashd.rpc_password_file", "required"),
        ({**DASHD, "rpc_password_file": "/pw"}, "dashd.rpc_user", "required"),
        ({**DASHD, "rpc_url": "ftp://h", "rpc_cookie_file": "/c"}, "dashd.rpc_url", "http"),
        ({**DASHD, "zmq_url": "http://h:1", "rpc_cookie_file": "/c"}, "dashd.zmq_url", "tcp"),
        (
            {**DASHD, "rpc_url": "http://u:p@h:9998", "rpc_cookie_file": "/c"},
            "dashd.rpc_url",
            "credentials",
        ),
        ({**DASHD, "rpc_user": "u", "rpc_password_file": "/nonexistent"}, None, "does not exist"),
    ],
)
def test_bad_dashd_settings_say_what_to_fix(dashd, key, words):
    exc = error({"chain": {"backend": "dashd"}, "dashd": dashd})
    assert (key is None or exc.key == key) and words in str(exc), (exc.key, str(exc))


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
