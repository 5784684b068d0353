"""dashpay.config: loading, validation, error messages, secrets, and the example file."""

from __future__ import annotations

import ipaddress
import os
import re
import subprocess
import sys
import tomllib
from decimal import Decimal
from pathlib import Path

import pytest

from dashpay.config import files as config_module
from dashpay.config.control import load_control_config
from dashpay.config.database import parse_database_url
from dashpay.config.durations import parse_duration
from dashpay.config.errors import ConfigError
from dashpay.config.files import resolve_config_path
from dashpay.config.keys import CONFIG_KEYS, DEFAULT_DATABASE_URL, MAX_URL_CHARS
from dashpay.config.load import config_from_dict, default_config, load_config
from dashpay.config.model import CallbacksConfig, InsightConfig, LoggingConfig

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "config.example.toml"
# Public BIP44 test vectors (dash-keys.md).
XPUB = (
    "xpub6DSwpQgH8k21nE2z2tyoA7sXf1LBFCimaxuEGMUf7PAFWgqBbSjjGurUw8St"
    "qo3H8y8eFVCzQctpADgP1TFdhGeqU9kwHG4Q1WhmFU7nzgM"
)
DRKV = (
    "DRKVrRjogj3bNiLD8UsktBH9SS9ihVNm1n7zxchfaFAP7ANmDM94J9e9Y99h6cMSi"
    "pCvAXDcAdDvyxEgJqmnb3iva5CZq9Giwzd1eJ4Bwbd5MFed"
)
PASSWORD = "Hunter2-Sekrit"
SECRET = "callback-secret-0123456789"


def write(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def load_text(tmp_path: Path, text: str, env: dict[str, str] | None = None):
    return load_config(write(tmp_path, text), env=env or {})


def load_error(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_text(tmp_path, text, env)
    return caught.value


def dict_error(data: dict, **kwargs) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        config_from_dict(data, env=kwargs.pop("env", {}), **kwargs)
    return caught.value


# -- shape and defaults -----------------------------------------------------------------


def test_minimal_file_loads_with_every_default(tmp_path):
    config = load_text(tmp_path, f'[wallet]\nxpub = "{XPUB}"\n')
    assert config.path == tmp_path / "config.toml"
    assert config.wallet.xpub == XPUB
    assert config.wallet.network == "mainnet"
    assert config.wallet.chain == 0
    assert config.wallet.gap_limit_warning == 20
    assert config.wallet.gap_limit_max is None
    assert config.database.backend == "sqlite"
    assert config.database.path == Path("/var/lib/dashpay/dashpay.sqlite3")
    assert config.database.connect_timeout == 5.0
    assert config.control.socket == Path("/run/dashpay/control.sock")
    assert config.insight.url == "https://insight.dash.org/insight-api"
    assert config.insight.socket_url is None
    assert (config.insight.timeout, config.insight.reconnect_initial) == (10.0, 1.0)
    assert config.insight.reconnect_max == 60.0
    assert config.receivers.expires_after == 3600.0
    assert config.receivers.monitor_window == 86400.0
    assert config.receivers.underpayment_tolerance == Decimal(0)
    assert config.receivers.confirmations == 1
    assert config.callbacks.default_url is None
    assert config.callbacks.secret is None
    assert config.callbacks.timeout == 10.0
    assert config.callbacks.backoff_initial == 10.0
    assert config.callbacks.backoff_max == 3600.0
    assert config.callbacks.give_up_after == 259_200.0
    assert config.callbacks.allow_hosts == ()
    assert config.callbacks.allow_private_targets is True
    assert config.callbacks.block_link_local is True
    assert config.callbacks.max_in_flight == 16
    assert config.logging.level == "info"


def test_config_without_wallet_section_loads_with_wallet_none(tmp_path):
    config = load_text(tmp_path, '[logging]\nlevel = "debug"\n')
    assert config.wallet is None
    assert config.logging.level == "debug"


def test_empty_dict_is_the_default_config():
    assert config_from_dict({}) == default_config()


def test_writing_every_default_explicitly_changes_nothing():
    explicit = {
        section: {key: spec.default for key, spec in keys.items() if spec.default is not None}
        for section, keys in CONFIG_KEYS.items()
        if section != "wallet"
    }
    assert config_from_dict(explicit, env={}) == default_config()


def test_default_config_takes_overrides():
    config = default_config(logging=LoggingConfig(level="debug"))
    assert config.logging.level == "debug"
    assert config.database.display_url() == DEFAULT_DATABASE_URL


def test_importing_config_loads_no_heavy_module():
    code = (
        "import sys, dashpay.config.load; "
        "heavy = ('trio', 'httpx', 'bip_utils', 'dashpay.domain.wallet'); "
        "heavy = [m for m in heavy if m in sys.modules]; "
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- error messages -----------------------------------------------------------------------


def test_error_names_file_section_key_problem_and_fix(tmp_path):
    error = load_error(tmp_path, '[insight]\ntimeout = "5x"\n')
    text = str(error)
    assert text.startswith(
        f"{tmp_path / 'config.toml'}: [insight] timeout: "
        'expected a duration such as 30s, 15m, 2h or 3d, got "5x"; '
    )
    assert "1h30m" in text  # the fix
    assert error.key == "insight.timeout"
    assert error.path == tmp_path / "config.toml"


def test_config_error_leaves_out_missing_parts():
    assert str(ConfigError("broken")) == "broken"
    assert str(ConfigError("broken", key="wallet")) == "[wallet]: broken"
    assert str(ConfigError("broken", key="wallet.xpub", hint="fix it")) == (
        "[wallet] xpub: broken; fix it"
    )
    assert str(ConfigError("broken", path="/x.toml")) == "/x.toml: broken"


def test_unknown_key_suggests_the_closest_valid_key(tmp_path):
    error = load_error(tmp_path, '[insight]\nreconect_max = "2m"\n')
    assert 'unknown key "reconect_max"' in str(error)
    assert "did you mean reconnect_max?" in str(error)
    assert error.key == "insight"


def test_key_in_the_wrong_section_says_where_it_belongs(tmp_path):
    error = load_error(tmp_path, '[receivers]\nsecret_file = "/x"\n')
    assert "secret_file belongs in [callbacks]" in str(error)


def test_unknown_key_without_a_close_match_lists_the_valid_keys(tmp_path):
    error = load_error(tmp_path, "[logging]\ncolour = true\n")
    assert "valid keys: level" in str(error)


def test_unknown_section_suggests_the_closest_section(tmp_path):
    error = load_error(tmp_path, "[callback]\n")
    assert "unknown section [callback]" in str(error)
    assert "did you mean [callbacks]?" in str(error)


def test_key_outside_any_section_says_which_section(tmp_path):
    error = load_error(tmp_path, f'xpub = "{XPUB}"\n')
    assert "move it under [wallet]" in str(error)


def test_section_that_is_not_a_table_is_refused():
    error = dict_error({"wallet": "xpub"})
    assert "must be a table" in str(error)


@pytest.mark.parametrize(
    ("toml", "key", "found"),
    [
        ("[wallet]\nchain = true", "wallet.chain", "found boolean true"),
        ("[receivers]\nconfirmations = true", "receivers.confirmations", "found boolean true"),
        ('[wallet]\nchain = "1"', "wallet.chain", 'found string "1"'),
        ("[wallet]\ngap_limit_warning = 20.0", "wallet.gap_limit_warning", "found float 20.0"),
        ("[callbacks]\nallow_private_targets = 1", "callbacks.allow_private_targets", "integer 1"),
        ('[callbacks]\nblock_link_local = "yes"', "callbacks.block_link_local", 'string "yes"'),
        ("[callbacks]\nmax_in_flight = 0", "callbacks.max_in_flight", "out of range"),
        ("[insight]\ntimeout = true", "insight.timeout", "found boolean true"),
        ("[insight]\nurl = 5", "insight.url", "found integer 5"),
        ('[callbacks]\nallow_hosts = "a.example"', "callbacks.allow_hosts", "found string"),
        ("[control]\nsocket = []", "control.socket", "found array"),
        ("[logging]\nlevel = 1979-05-27", "logging.level", "found date/time"),
    ],
)
def test_wrong_types_are_refused_with_expected_and_found(tmp_path, toml, key, found):
    error = load_error(tmp_path, toml + "\n")
    assert error.key == key
    assert "expected " in error.message
    assert found in error.message


def test_wrong_type_hint_shows_a_valid_example(tmp_path):
    error = load_error(tmp_path, "[wallet]\nchain = true\n")
    assert error.hint == "for example: chain = 0"


@pytest.mark.parametrize(
    ("toml", "key", "needle"),
    [
        ('[insight]\ntimeout = "5x"', "insight.timeout", 'got "5x"'),
        ('[insight]\ntimeout = "-5s"', "insight.timeout", "cannot be negative"),
        ('[insight]\ntimeout = "0"', "insight.timeout", "longer than 0"),
        ("[callbacks]\ngive_up_after = 0", "callbacks.give_up_after", "longer than 0"),
        ('[receivers]\nmonitor_window = "200y"', "receivers.monitor_window", "expected a duration"),
        ('[receivers]\nexpires_after = "40000d"', "receivers.expires_after", "100 years"),
    ],
)
def test_bad_durations_are_refused(tmp_path, toml, key, needle):
    error = load_error(tmp_path, toml + "\n")
    assert error.key == key
    assert needle in error.message


def test_durations_accept_toml_numbers_as_seconds(tmp_path):
    config = load_text(tmp_path, "[insight]\ntimeout = 2.5\nreconnect_max = 90\n")
    assert config.insight.timeout == 2.5
    assert config.insight.reconnect_max == 90.0


def test_zero_expiry_means_never_and_is_accepted(tmp_path):
    assert load_text(tmp_path, '[receivers]\nexpires_after = "0"\n').receivers.expires_after == 0


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ('[insight]\nreconnect_initial = "2m"\nreconnect_max = "1m"', "insight.reconnect_initial"),
        ('[callbacks]\nbackoff_initial = "2h"', "callbacks.backoff_initial"),
    ],
)
def test_initial_delay_longer_than_the_maximum_is_refused(tmp_path, toml, key):
    error = load_error(tmp_path, toml + "\n")
    assert error.key == key
    assert "is longer than" in error.message


# -- load_config and the file itself ------------------------------------------------------


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")


def test_directory_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)


def test_invalid_toml_says_where(tmp_path):
    error = load_error(tmp_path, "[wallet]\nnetwork = mainnet\n")
    assert "not valid TOML" in error.message
    assert "line 2" in error.message


def test_non_utf8_file_is_refused(tmp_path):
    path = tmp_path / "config.toml"
    path.write_bytes(b'[logging]\nlevel = "\xff"\n')
    with pytest.raises(ConfigError, match="UTF-8"):
        load_config(path)


def test_utf8_byte_order_mark_is_accepted(tmp_path):
    path = tmp_path / "config.toml"
    path.write_bytes(b'\xef\xbb\xbf[logging]\nlevel = "warning"\n')
    assert load_config(path).logging.level == "warning"


def test_oversized_file_is_refused(tmp_path):
    path = tmp_path / "config.toml"
    path.write_bytes(b"#" * (config_module.MAX_CONFIG_BYTES + 10))
    with pytest.raises(ConfigError, match="larger than"):
        load_config(path)


# -- [wallet] -----------------------------------------------------------------------------


def test_wallet_section_without_xpub_is_refused(tmp_path):
    error = load_error(tmp_path, '[wallet]\nnetwork = "mainnet"\n')
    assert error.key == "wallet.xpub"
    assert "required" in error.message


def test_network_must_be_mainnet_or_testnet(tmp_path):
    error = load_error(tmp_path, f'[wallet]\nxpub = "{XPUB}"\nnetwork = "regtest"\n')
    assert error.key == "wallet.network"
    assert "mainnet, testnet" in error.message


def test_legacy_testnet_key_loads_on_testnet(tmp_path):
    config = load_text(tmp_path, f'[wallet]\nxpub = "{DRKV}"\nnetwork = "testnet"\n')
    assert config.wallet.network == "testnet"


def test_testnet_key_on_mainnet_is_a_network_mismatch(tmp_path):
    error = load_error(tmp_path, f'[wallet]\nxpub = "{DRKV}"\nnetwork = "mainnet"\n')
    assert error.key == "wallet.xpub"
    assert "testnet" in error.message and "mainnet" in error.message


def test_xpub_with_a_typo_fails_its_checksum(tmp_path):
    typo = XPUB[:-1] + ("x" if XPUB[-1] != "x" else "y")
    error = load_error(tmp_path, f'[wallet]\nxpub = "{typo}"\n')
    assert error.key == "wallet.xpub"
    assert "checksum" in error.message


def test_xpub_surrounding_whitespace_is_ignored(tmp_path):
    assert load_text(tmp_path, f'[wallet]\nxpub = "  {XPUB} "\n').wallet.xpub == XPUB


@pytest.mark.parametrize("chain", [-1, 2**31])
def test_chain_out_of_range_is_refused(tmp_path, chain):
    error = load_error(tmp_path, f'[wallet]\nxpub = "{XPUB}"\nchain = {chain}\n')
    assert error.key == "wallet.chain"
    assert "out of range" in error.message


def test_gap_limit_max_below_warning_is_refused(tmp_path):
    error = load_error(tmp_path, f'[wallet]\nxpub = "{XPUB}"\ngap_limit_max = 5\n')
    assert error.key == "wallet.gap_limit_max"


# -- [database] ---------------------------------------------------------------------------


def test_sqlite_four_slashes_is_an_absolute_path():
    db = parse_database_url("sqlite:////srv/dashpay/db.sqlite3")
    assert (db.backend, db.path) == ("sqlite", Path("/srv/dashpay/db.sqlite3"))
    assert db.display_url() == "sqlite:////srv/dashpay/db.sqlite3"


def test_sqlite_three_slashes_is_relative_to_the_config_file(tmp_path):
    (tmp_path / "etc").mkdir()
    path = write(tmp_path / "etc", '[database]\nurl = "sqlite:///data/dashpay.sqlite3"\n')
    config = load_config(path)
    assert config.database.path == tmp_path / "etc" / "data" / "dashpay.sqlite3"
    assert config.database.display_url() == f"sqlite:///{tmp_path}/etc/data/dashpay.sqlite3"


def test_sqlite_relative_path_without_a_file_is_relative_to_the_working_directory(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    config = config_from_dict({"database": {"url": "sqlite:///x.sqlite3"}})
    assert config.database.path == tmp_path / "x.sqlite3"


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("sqlite://", "in-memory"),
        ("sqlite:///", "in-memory"),
        ("sqlite:///:memory:", "in-memory"),
        ("sqlite://host/x.db", "names a host"),
        ("sqlite:////x.db?mode=ro", "no query parameters"),
        ("postgresql://u@h/db", "unknown database type"),
        ("sqlit:////x", "did you mean sqlite://?"),
        ("/var/lib/dashpay.sqlite3", "not a database URL"),
        ("mysql://u@h", "no database name"),
        ("mysql://u@h/", "no database name"),
        ("mysql://u@h/a/b", "not valid"),
        ("mysql://h/db", "no user name"),
        ("mysql://u@/db", "no host and no unix_socket"),
        ("mysql://u@h/db?unix_sock=/x", "did you mean unix_socket?"),
        ("mysql://u@h/db?charset=utf8", "unknown URL parameter"),
        ("mysql://u@h/db?pool_size=2&pool_size=3", "given twice"),
        ("mysql://u@h/db?pool_size=0", "pool_size"),
        ("mysql://u@h/db?pool_size=lots", "pool_size"),
        ("mysql://u@h/db?unix_socket=run/x.sock", "absolute path"),
        ("mysql://u@h:0/db", "port 0"),
        ("mysql://u@h:70000/db", "port"),
        ("", "is empty"),
    ],
)
def test_bad_database_urls_are_refused(url, needle):
    with pytest.raises(ConfigError) as caught:
        parse_database_url(url)
    assert needle in str(caught.value)
    assert caught.value.key == "database.url"


def test_database_url_that_is_not_a_string_is_refused(tmp_path):
    error = load_error(tmp_path, "[database]\nurl = 5\n")
    assert error.key == "database.url"


def test_mysql_url_with_everything_is_parsed_and_percent_decoded():
    db = parse_database_url(
        "mysql://dash%40pay:p%40ss%2Fw0rd@DB.example.com:3307/dash%2Dpay"
        "?unix_socket=/run/mysqld/mysqld.sock&pool_size=8"
    )
    assert db.backend == "mysql"
    assert db.user == "dash@pay"
    assert db.password == "p@ss/w0rd"
    assert db.host == "db.example.com"
    assert db.port == 3307
    assert db.database == "dash-pay"
    assert db.unix_socket == "/run/mysqld/mysqld.sock"
    assert db.pool_size == 8
    assert db.path is None


@pytest.mark.parametrize("scheme", ["mysql", "mysql+pymysql", "mariadb", "MySQL"])
def test_mysql_synonyms_are_accepted(scheme):
    db = parse_database_url(f"{scheme}://dashpay@localhost/dashpay")
    assert (db.backend, db.host, db.port, db.user, db.password) == (
        "mysql",
        "localhost",
        3306,
        "dashpay",
        None,
    )
    assert db.pool_size == 4


def test_mysql_over_a_unix_socket_needs_no_host():
    db = parse_database_url("mysql://dashpay@/dashpay?unix_socket=/run/mysqld/mysqld.sock")
    assert db.host is None
    assert db.unix_socket == "/run/mysqld/mysqld.sock"


def test_database_connect_timeout_is_a_duration(tmp_path):
    config = load_text(tmp_path, '[database]\nurl = "mysql://u@h/db"\nconnect_timeout = "2s"\n')
    assert config.database.connect_timeout == 2.0


@pytest.mark.parametrize(
    "url",
    [
        f"mysql://u:{PASSWORD}@h:99999/db",
        f"mysql://u:{PASSWORD}@h:port/db",
        f"mysql://u:{PASSWORD}@h",
        f"mysql://u:{PASSWORD}@h/db?bogus=1",
        f"mysql://u:{PASSWORD}/x@h/db",
        f"mysql://u:{PASSWORD}?x@h/db",
        f"mysql://u:{PASSWORD}#x@h/db",
        f"mysql://u:{PASSWORD}@[::1/db",
        f"mysql://u:{PASSWORD} x@h/db",
        f"mysql:/u:{PASSWORD}@h/db",
        f"mysq://u:{PASSWORD}@h/db",
        f"sqlite://u:{PASSWORD}@h/x.db",
        f"mysql://:{PASSWORD}@h/db",
    ],
)
def test_password_never_appears_in_database_url_errors(tmp_path, url):
    error = load_error(tmp_path, f'[database]\nurl = "{url}"\n')
    assert error.key == "database.url"
    assert PASSWORD not in str(error)
    assert PASSWORD not in repr(error)


def test_password_never_appears_in_repr_or_display_url(tmp_path):
    config = load_text(tmp_path, f'[database]\nurl = "mysql://u:{PASSWORD}@h/db"\n')
    assert config.database.password == PASSWORD
    assert PASSWORD not in repr(config)
    assert PASSWORD not in str(config)
    assert PASSWORD not in repr(config.database)
    assert config.database.display_url() == "mysql://u:***@h/db"


def test_password_file_is_read_and_wins_over_the_url(tmp_path):
    (tmp_path / "db-password").write_text(PASSWORD + "\n")
    config = load_text(
        tmp_path,
        '[database]\nurl = "mysql://u:old@h/db"\npassword_file = "db-password"\n',
    )
    assert config.database.password == PASSWORD
    assert PASSWORD not in repr(config)


def test_password_file_loses_only_one_trailing_newline(tmp_path):
    (tmp_path / "pw").write_text(" spaced \n\n")
    config = load_text(tmp_path, '[database]\nurl = "mysql://u@h/db"\npassword_file = "pw"\n')
    assert config.database.password == " spaced \n"


def test_password_file_with_crlf_loses_the_crlf(tmp_path):
    (tmp_path / "pw").write_bytes(b"secret\r\n")
    config = load_text(tmp_path, '[database]\nurl = "mysql://u@h/db"\npassword_file = "pw"\n')
    assert config.database.password == "secret"


def test_missing_password_file_names_the_file(tmp_path):
    error = load_error(
        tmp_path, '[database]\nurl = "mysql://u@h/db"\npassword_file = "/nonexistent/pw"\n'
    )
    assert error.key == "database.password_file"
    assert "/nonexistent/pw does not exist" in error.message


def test_empty_password_file_is_refused(tmp_path):
    (tmp_path / "pw").write_text("\n")
    error = load_error(tmp_path, '[database]\nurl = "mysql://u@h/db"\npassword_file = "pw"\n')
    assert "is empty" in error.message


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_password_file_is_refused(tmp_path):
    secret = tmp_path / "pw"
    secret.write_text(PASSWORD)
    secret.chmod(0)
    error = load_error(tmp_path, '[database]\nurl = "mysql://u@h/db"\npassword_file = "pw"\n')
    assert "permission denied" in error.message


def test_password_file_is_refused_for_sqlite(tmp_path):
    (tmp_path / "pw").write_text(PASSWORD)
    error = load_error(tmp_path, '[database]\nurl = "sqlite:///x.db"\npassword_file = "pw"\n')
    assert error.key == "database.password_file"
    assert "only to MySQL" in error.message


@pytest.mark.parametrize("form", ["$CREDENTIALS_DIRECTORY/pw", "${CREDENTIALS_DIRECTORY}/pw"])
def test_password_file_expands_credentials_directory(tmp_path, form):
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "pw").write_text(PASSWORD)
    config = load_text(
        tmp_path,
        f'[database]\nurl = "mysql://u@h/db"\npassword_file = "{form}"\n',
        env={"CREDENTIALS_DIRECTORY": str(credentials)},
    )
    assert config.database.password == PASSWORD


def test_credentials_directory_unset_is_a_config_error(tmp_path):
    error = load_error(
        tmp_path,
        '[database]\nurl = "mysql://u@h/db"\npassword_file = "$CREDENTIALS_DIRECTORY/pw"\n',
        env={},
    )
    assert error.key == "database.password_file"
    assert "CREDENTIALS_DIRECTORY" in error.message and "not set" in error.message


def test_control_config_ignores_the_daemons_secrets(tmp_path):
    """A CLI client needs [control] only: secret files that systemd hands to the service
    alone, and a wallet it does not have, must not stop it."""
    path = tmp_path / "config.toml"
    path.write_text(
        '[wallet]\nxpub = "not checked by a client"\n'
        '[database]\nurl = "mysql://u@h/db"\npassword_file = "$CREDENTIALS_DIRECTORY/pw"\n'
        '[callbacks]\nsecret_file = "/nonexistent/secret"\n'
        '[control]\nsocket = "run/control.sock"\n'
    )
    control = load_control_config(path)
    assert control.socket == tmp_path / "run" / "control.sock"
    with pytest.raises(ConfigError):
        load_config(path, env={})


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[control]\nsocket = 5\n", "[control] socket"),
        ('[control]\nsockt = "/x"\n', "sockt"),
        ('[contrl]\nsocket = "/x"\n', "did you mean [control]"),
        ("control = 1\n", "must be a table"),
        ("[control\n", "not valid TOML"),
    ],
)
def test_control_config_still_checks_control_and_the_sections(tmp_path, text, needle):
    path = tmp_path / "config.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_control_config(path)
    assert needle in str(caught.value)


def test_control_config_defaults_when_the_section_is_absent(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text('[logging]\nlevel = "debug"\n')
    assert load_control_config(path).socket == default_config().control.socket


def test_only_credentials_directory_is_expanded(tmp_path):
    error = load_error(
        tmp_path,
        '[database]\nurl = "mysql://u@h/db"\npassword_file = "$HOME/pw"\n',
        env={"HOME": str(tmp_path), "CREDENTIALS_DIRECTORY": str(tmp_path)},
    )
    assert "$HOME/pw does not exist" in error.message


# -- [control] ----------------------------------------------------------------------------


def test_relative_control_socket_is_relative_to_the_config_file(tmp_path):
    config = load_text(tmp_path, '[control]\nsocket = "run/control.sock"\n')
    assert config.control.socket == tmp_path / "run" / "control.sock"


def test_control_socket_path_over_the_unix_limit_is_refused(tmp_path):
    error = load_error(tmp_path, f'[control]\nsocket = "/{"x" * 120}.sock"\n')
    assert error.key == "control.socket"
    assert "limit" in error.message


# -- [insight] ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "url", "needle"),
    [
        ("url", "ftp://insight.example/api", "must start with http:// or https://"),
        ("url", "insight.dash.org/insight-api", "must start with http:// or https://"),
        ("url", "https:///insight-api", "no host"),
        ("url", "https://insight.example:99999/api", "invalid host or port"),
        ("url", "https://insight example/api", "spaces"),
        ("url", "https://[::1/api", "not a valid URL"),
        ("url", "", "is empty"),
        ("socket_url", "ftp://insight.example", "ws://"),
    ],
)
def test_bad_insight_urls_are_refused(tmp_path, key, url, needle):
    error = load_error(tmp_path, f'[insight]\n{key} = "{url}"\n')
    assert error.key == f"insight.{key}"
    assert needle in error.message


@pytest.mark.parametrize(
    ("url", "socket_url", "effective"),
    [
        ("https://insight.dash.org/insight-api", None, "https://insight.dash.org"),
        ("http://127.0.0.1:3001/insight-api/", None, "http://127.0.0.1:3001"),
        ("http://[::1]:3001/api", None, "http://[::1]:3001"),
        ("https://a.example/api", "wss://b.example:8443", "wss://b.example:8443"),
    ],
)
def test_effective_socket_url(tmp_path, url, socket_url, effective):
    text = f'[insight]\nurl = "{url}"\n'
    if socket_url:
        text += f'socket_url = "{socket_url}"\n'
    config = load_text(tmp_path, text)
    assert config.insight.effective_socket_url == effective
    assert not config.insight.url.endswith("/")


def test_insight_config_constructed_directly_derives_its_socket_url():
    insight = InsightConfig(url="http://127.0.0.1:4000/insight-api", socket_url=None)
    assert insight.effective_socket_url == "http://127.0.0.1:4000"


# -- [receivers] --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [("0.5", Decimal("0.5")), ('"0.1"', Decimal("0.1")), ('"1.5%"', Decimal("1.5")), ("2", 2)],
)
def test_underpayment_tolerance_is_an_exact_percentage(tmp_path, value, expected):
    config = load_text(tmp_path, f"[receivers]\nunderpayment_tolerance = {value}\n")
    assert config.receivers.underpayment_tolerance == expected
    assert isinstance(config.receivers.underpayment_tolerance, Decimal)


def test_underpayment_tolerance_from_a_python_float_keeps_its_written_digits():
    config = config_from_dict({"receivers": {"underpayment_tolerance": 0.1}})
    assert config.receivers.underpayment_tolerance == Decimal("0.1")


@pytest.mark.parametrize("value", ["101", "-1", '"abc"', "true", '"nan"'])
def test_underpayment_tolerance_outside_0_to_100_is_refused(tmp_path, value):
    error = load_error(tmp_path, f"[receivers]\nunderpayment_tolerance = {value}\n")
    assert error.key == "receivers.underpayment_tolerance"


def test_zero_confirmations_is_refused(tmp_path):
    error = load_error(tmp_path, "[receivers]\nconfirmations = 0\n")
    assert error.key == "receivers.confirmations"


# -- [callbacks] --------------------------------------------------------------------------


def test_callback_secret_is_kept_out_of_repr(tmp_path):
    config = load_text(tmp_path, f'[callbacks]\nsecret = "{SECRET}"\n')
    assert config.callbacks.secret == SECRET
    assert SECRET not in repr(config)


def test_short_callback_secret_is_refused_without_showing_it(tmp_path):
    error = load_error(tmp_path, '[callbacks]\nsecret = "tiny-secret"\n')
    assert error.key == "callbacks.secret"
    assert "at least 16" in error.message
    assert "tiny-secret" not in str(error)


def test_callback_secret_of_the_wrong_type_is_not_echoed(tmp_path):
    error = load_error(tmp_path, "[callbacks]\nsecret = 12345678901234567890\n")
    assert "12345678901234567890" not in str(error)
    assert "value hidden" in error.message


def test_secret_file_is_read_with_credentials_directory(tmp_path):
    (tmp_path / "callback-secret").write_text(SECRET + "\n")
    config = load_text(
        tmp_path,
        '[callbacks]\nsecret_file = "${CREDENTIALS_DIRECTORY}/callback-secret"\n',
        env={"CREDENTIALS_DIRECTORY": str(tmp_path)},
    )
    assert config.callbacks.secret == SECRET
    assert config.callbacks.secret_file == tmp_path / "callback-secret"
    assert SECRET not in repr(config)


def test_short_secret_file_is_refused_without_showing_its_content(tmp_path):
    (tmp_path / "s").write_text("short-one\n")
    error = load_error(tmp_path, '[callbacks]\nsecret_file = "s"\n')
    assert error.key == "callbacks.secret_file"
    assert "short-one" not in str(error)


def test_secret_and_secret_file_together_are_refused(tmp_path):
    (tmp_path / "s").write_text(SECRET)
    error = load_error(tmp_path, f'[callbacks]\nsecret = "{SECRET}"\nsecret_file = "s"\n')
    assert "both set" in error.message
    assert SECRET not in str(error)


def test_missing_secret_file_is_refused(tmp_path):
    error = load_error(tmp_path, '[callbacks]\nsecret_file = "missing"\n')
    assert error.key == "callbacks.secret_file"
    assert f"{tmp_path / 'missing'} does not exist" in error.message


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("ftp://shop.example/cb", "must start with http://"),
        ("https://", "no host"),
        ("https://shop.example/" + "x" * MAX_URL_CHARS, "the limit is 2048"),
        ("javascript:alert(1)", "must start with http://"),
    ],
)
def test_bad_default_callback_urls_are_refused(tmp_path, url, needle):
    error = load_error(tmp_path, f'[callbacks]\ndefault_url = "{url}"\n')
    assert error.key == "callbacks.default_url"
    assert needle in error.message


def test_default_callback_url_credentials_are_not_echoed(tmp_path):
    error = load_error(tmp_path, '[callbacks]\ndefault_url = "ftp://user:pa55word@shop.example/"\n')
    assert "pa55word" not in str(error)


@pytest.mark.parametrize(
    ("settings", "url", "needle"),
    [
        ("", "http://169.254.169.254/latest", "link-local"),
        ("", "http://[fe80::1]/cb", "link-local"),
        ("", "http://[::ffff:169.254.169.254]/cb", "link-local"),
        ("", "http://[fd00:ec2::254]/cb", "cloud metadata"),
        ("", "http://[64:ff9b::a9fe:a9fe]/cb", "embeds 169.254.169.254"),
        ("", "http://[2002:a9fe:a9fe::]/cb", "link-local"),
        ("allow_private_targets = false", "http://[64:ff9b::7f00:1]/cb", "private or loopback"),
        ("allow_private_targets = false", "http://[2002:a00:1::]/cb", "embeds 10.0.0.1"),
        ("allow_private_targets = false", "http://10.0.0.5/cb", "private or loopback"),
        ("allow_private_targets = false", "http://127.0.0.1:8080/cb", "private or loopback"),
        ("", "http://0.0.0.0/cb", "unspecified"),
        ('allow_hosts = ["shop.example"]', "https://evil.example/cb", "not in allow_hosts"),
    ],
)
def test_default_callback_url_must_pass_the_target_rules(tmp_path, settings, url, needle):
    error = load_error(tmp_path, f'[callbacks]\n{settings}\ndefault_url = "{url}"\n')
    assert error.key == "callbacks.default_url"
    assert needle in error.message


@pytest.mark.parametrize(
    ("settings", "url"),
    [
        ("", "http://127.0.0.1:8080/cb"),
        ("", "http://10.0.0.5/cb"),
        ("block_link_local = false", "http://169.254.1.1/cb"),
        ('allow_hosts = ["*.example.com"]', "https://shop.example.com/cb"),
        ("allow_private_targets = false", "https://203.0.114.7/cb"),
    ],
)
def test_default_callback_url_allowed_by_the_target_rules(tmp_path, settings, url):
    config = load_text(tmp_path, f'[callbacks]\n{settings}\ndefault_url = "{url}"\n')
    assert config.callbacks.default_url == url


def test_allow_hosts_matching():
    callbacks = CallbacksConfig(allow_hosts=("shop.example", "*.pay.example", "10.0.0.5"))
    assert callbacks.allows_host("shop.example")
    assert callbacks.allows_host("SHOP.example.")
    assert callbacks.allows_host("a.pay.example")
    assert callbacks.allows_host("a.b.pay.example")
    assert not callbacks.allows_host("pay.example")
    assert not callbacks.allows_host("evilpay.example")
    assert not callbacks.allows_host("shop.example.evil")
    assert callbacks.allows_host("10.0.0.5")
    assert not callbacks.allows_host("10.0.0.6")
    assert CallbacksConfig().allows_host("anything.example")


def test_allow_hosts_are_normalised(tmp_path):
    config = load_text(tmp_path, '[callbacks]\nallow_hosts = ["Shop.Example", "[::1]"]\n')
    assert config.callbacks.allow_hosts == ("shop.example", "::1")


@pytest.mark.parametrize("entry", ['"http://shop.example"', '"bad_host!"', "5", '""'])
def test_invalid_allow_hosts_entries_are_refused(tmp_path, entry):
    error = load_error(tmp_path, f"[callbacks]\nallow_hosts = [{entry}]\n")
    assert error.key == "callbacks.allow_hosts"


@pytest.mark.parametrize(
    ("kwargs", "address", "allowed"),
    [
        ({}, "93.184.216.34", True),
        ({}, "127.0.0.1", True),
        ({}, "192.168.1.10", True),
        ({}, "169.254.169.254", False),
        ({}, "fe80::1", False),
        ({}, "::ffff:169.254.169.254", False),
        ({"block_link_local": False}, "169.254.169.254", True),
        ({"allow_private_targets": False}, "127.0.0.1", False),
        ({"allow_private_targets": False}, "::1", False),
        ({"allow_private_targets": False}, "100.64.0.1", False),
        ({"allow_private_targets": False}, "2606:4700::1111", True),
        ({}, "224.0.0.1", False),
        ({}, "0.0.0.0", False),
        ({}, "fd00:ec2::254", False),
        ({}, "100.100.100.200", False),
        ({}, "fe80::1%eth0", False),
        ({"block_link_local": False}, "fd00:ec2::254", True),
        ({}, "fd00:ec2::253", True),
        ({}, "64:ff9b::a9fe:a9fe", False),
        ({}, "2002:a9fe:a9fe::", False),
        ({"allow_private_targets": False}, "64:ff9b:1::a00:1", False),
        ({"allow_private_targets": False}, "64:ff9b::808:808", True),
    ],
)
def test_allows_address(kwargs, address, allowed):
    assert CallbacksConfig(**kwargs).allows_address(ipaddress.ip_address(address)) is allowed


# -- [logging] ----------------------------------------------------------------------------


def test_log_level_is_case_insensitive(tmp_path):
    assert load_text(tmp_path, '[logging]\nlevel = "WARNING"\n').logging.level == "warning"


def test_unknown_log_level_is_refused(tmp_path):
    error = load_error(tmp_path, '[logging]\nlevel = "verbose"\n')
    assert error.key == "logging.level"
    assert "debug, info, warning, error" in error.message


# -- resolve_config_path ------------------------------------------------------------------


def test_config_flag_wins(tmp_path):
    flag = write(tmp_path, "", "flag.toml")
    env_file = write(tmp_path, "", "env.toml")
    assert resolve_config_path(str(flag), {"DASHPAY_CONFIG": str(env_file)}) == (flag, "--config")


def test_environment_variable_is_next(tmp_path):
    env_file = write(tmp_path, "", "env.toml")
    assert resolve_config_path(None, {"DASHPAY_CONFIG": str(env_file)}) == (
        env_file,
        "DASHPAY_CONFIG",
    )


def test_default_path_is_used_when_it_exists(tmp_path, monkeypatch):
    default = write(tmp_path, "", "default.toml")
    monkeypatch.setattr(config_module, "DEFAULT_CONFIG_PATH", default)
    assert resolve_config_path(None, {}) == (default, "default")


def test_no_config_anywhere_is_none(tmp_path, monkeypatch):
    monkeypatch.setattr(config_module, "DEFAULT_CONFIG_PATH", tmp_path / "absent.toml")
    assert resolve_config_path(None, {"DASHPAY_CONFIG": ""}) == (None, "none")


@pytest.mark.parametrize(
    ("flag", "env", "source"),
    [
        ("missing.toml", {}, "--config"),
        (None, {"DASHPAY_CONFIG": "missing.toml"}, "$DASHPAY_CONFIG"),
    ],
)
def test_explicit_path_that_does_not_exist_names_it_and_its_source(tmp_path, flag, env, source):
    missing = str(tmp_path / "missing.toml")
    env = {k: missing for k in env}
    with pytest.raises(ConfigError) as caught:
        resolve_config_path(missing if flag else None, env)
    assert str(caught.value).startswith(f"{missing}: ")
    assert f"given by {source} does not exist" in str(caught.value)


# -- config.example.toml ------------------------------------------------------------------

_COMMENTED_SETTING = re.compile(r"^#([a-z_]+ = .*)$")


def example_with_everything_uncommented() -> dict:
    lines = [
        match[1] if (match := _COMMENTED_SETTING.match(line)) else line
        for line in EXAMPLE.read_text().splitlines()
    ]
    return tomllib.loads("\n".join(lines))


def test_example_documents_exactly_the_known_keys():
    documented = {
        section: set(values) for section, values in example_with_everything_uncommented().items()
    }
    known = {section: set(keys) for section, keys in CONFIG_KEYS.items()}
    assert documented == known
    assert list(example_with_everything_uncommented()) == list(CONFIG_KEYS)  # same order


def test_example_shows_every_default_as_the_code_has_it():
    documented = example_with_everything_uncommented()
    for section, keys in CONFIG_KEYS.items():
        for key, spec in keys.items():
            if spec.default is not None:
                assert documented[section][key] == spec.default, f"[{section}] {key}"


def test_every_documented_value_is_valid_for_its_key():
    for section, values in example_with_everything_uncommented().items():
        for key, value in values.items():
            CONFIG_KEYS[section][key].parse(value)  # raises on an invalid example


def test_every_example_setting_has_an_explanation_above_it():
    lines = EXAMPLE.read_text().splitlines()
    for number, line in enumerate(lines):
        if _COMMENTED_SETTING.match(line) or re.match(r"^[a-z_]+ = ", line):
            assert lines[number - 1].startswith("# "), f"no explanation above: {line}"


def test_example_as_shipped_loads_with_only_the_wallet_set():
    config = load_config(EXAMPLE)
    assert config.wallet.xpub == XPUB
    assert config == default_config(path=EXAMPLE, wallet=config.wallet)


def test_config_check_accepts_the_example_file():
    result = subprocess.run(
        [sys.executable, "-m", "dashpay", "config", "check", str(EXAMPLE)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout


def test_duration_keys_are_parsed_with_parse_duration():
    for keys in CONFIG_KEYS.values():
        for key, spec in keys.items():
            if spec.type.startswith("duration"):
                assert spec.parse(spec.default) == parse_duration(spec.default), key


# -- [prices] -----------------------------------------------------------------------------


def test_prices_defaults():
    prices = default_config().prices
    assert prices.providers == ("coingecko", "kraken", "coinbase")
    assert prices.strategy == "first"
    assert prices.currencies == ("USD",)
    assert (prices.refresh, prices.max_age, prices.timeout) == (60.0, 600.0, 5.0)
    assert prices.max_deviation == Decimal(20)
    assert prices.url("coingecko") == "https://api.coingecko.com"
    assert prices.url("kraken") == "https://api.kraken.com"
    assert prices.url("coinbase") == "https://api.coinbase.com"


def test_prices_settings_are_read(tmp_path):
    config = load_text(
        tmp_path,
        "[prices]\n"
        'providers = ["Kraken", "coinbase"]\n'
        'strategy = "median"\n'
        'currencies = ["eur", "USD", "EUR"]\n'
        'refresh = "30s"\nmax_age = "5m"\nmax_deviation = "7.5"\ntimeout = "2s"\n'
        "[prices.kraken]\n"
        'url = "http://127.0.0.1:8080/kraken/"\n',
    )
    prices = config.prices
    assert prices.providers == ("kraken", "coinbase")
    assert prices.strategy == "median"
    assert prices.currencies == ("EUR", "USD")
    assert (prices.refresh, prices.max_age, prices.timeout) == (30.0, 300.0, 2.0)
    assert prices.max_deviation == Decimal("7.5")
    assert prices.url("kraken") == "http://127.0.0.1:8080/kraken"
    assert prices.url("coingecko") == "https://api.coingecko.com"


@pytest.mark.parametrize(
    "toml, key, needle",
    [
        ('providers = ["binance"]', "prices.providers", "not a known price provider"),
        ('providers = ["kraken", "KRAKEN"]', "prices.providers", "listed twice"),
        ("providers = []", "prices.providers", "is empty"),
        ('providers = "kraken"', "prices.providers", "found string"),
        ("providers = [5]", "prices.providers", "must be a string"),
        ('strategy = "average"', "prices.strategy", "not one of first, median"),
        ('currencies = ["DASH"]', "prices.currencies", "not a 3-letter fiat currency code"),
        ('currencies = ["USDT"]', "prices.currencies", "not a 3-letter fiat currency code"),
        (
            "currencies = "
            + str([f"A{a}{b}" for a in "ABCDEF" for b in "ABCDEF"]).replace("'", '"'),
            "prices.currencies",
            "at most 32",
        ),
        ("max_deviation = 120", "prices.max_deviation", "percentage from 0 to 100"),
        ('max_age = "0s"', "prices.max_age", "longer than 0"),
        ('refresh = "10m"', "prices.refresh", "not shorter than max_age"),
        ('refresh = "1h"\nmax_age = "30m"', "prices.refresh", "not shorter than max_age"),
        ('coingecko = "https://api.coingecko.com"', "prices.coingecko", "must be a table"),
    ],
)
def test_bad_prices_settings_are_refused(tmp_path, toml, key, needle):
    error = load_error(tmp_path, f"[prices]\n{toml}\n")
    assert error.key == key
    assert needle in str(error)


@pytest.mark.parametrize(
    "table, needle",
    [
        ('url = "ftp://api.kraken.com"', "must start with http:// or https://"),
        ("url = 5", "expected http(s) URL, found integer 5"),
        ('url = "https://api.kraken.com/?key=1"', "query or fragment"),
        ('url = "https://api.kraken.com/#x"', "query or fragment"),
        ('url = "https://api.kraken.com"\ntimeout = "1s"', 'unknown key "timeout"'),
    ],
)
def test_bad_provider_tables_are_refused(tmp_path, table, needle):
    error = load_error(tmp_path, f"[prices.kraken]\n{table}\n")
    assert error.key == "prices.kraken"
    assert needle in str(error)
    assert "[prices] kraken:" in str(error)


def test_unknown_provider_table_is_refused_with_the_known_ones(tmp_path):
    error = load_error(tmp_path, '[prices.binance]\nurl = "https://api.binance.com"\n')
    assert error.key == "prices"
    assert 'unknown key "binance"' in str(error)


def test_provider_url_password_is_not_echoed(tmp_path):
    error = load_error(tmp_path, '[prices.coinbase]\nurl = "https://u:Sekrit99@cb.example/?q"\n')
    assert "Sekrit99" not in str(error)
