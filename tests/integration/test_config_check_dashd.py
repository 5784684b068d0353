"""`dashpay config check` on [dashd], as a real subprocess: both URLs, exactly one way
to log in, the cookie or password file readable (by the service's user too), the
secret never printed, and the warning for a ZMQ endpoint a proxy cannot carry."""

from __future__ import annotations

from tests.integration.test_config_check import check, config_file, unit_file, write
from tests.integration.test_config_check_network import config_file as sections_file

URLS = {"rpc_url": "http://127.0.0.1:9998", "zmq_url": "tcp://127.0.0.1:28332"}


def dashd_config(directory, **dashd):
    return config_file(directory, chain={"backend": "dashd"}, dashd={**URLS, **dashd})


def test_a_readable_cookie_passes_and_its_content_is_never_printed(shared_dir):
    cookie = write(shared_dir / ".cookie", "__cookie__:c00k1e-secret\n", 0o644)
    result = check(
        dashd_config(shared_dir, rpc_cookie_file=cookie),
        "--unit",
        unit_file(shared_dir, "User=nobody"),
    )
    assert result.code == 0, result.stderr
    assert "c00k1e-secret" not in result.stdout + result.stderr


def test_a_missing_or_unreadable_cookie_is_refused_naming_the_key(shared_dir):
    missing = check(dashd_config(shared_dir, rpc_cookie_file=shared_dir / "absent"))
    assert missing.code == 2 and "[dashd] rpc_cookie_file" in missing.stderr
    assert "does not exist" in missing.stderr
    cookie = write(shared_dir / "private.cookie", "__cookie__:c00k1e-secret\n", 0o600)
    unit = unit_file(shared_dir, "User=nobody")
    result = check(dashd_config(shared_dir, rpc_cookie_file=cookie), "--unit", unit)
    assert result.code == 2
    assert f"[dashd] rpc_cookie_file: not readable by the service of {unit}" in result.stderr
    assert "c00k1e-secret" not in result.stdout + result.stderr


def test_two_ways_to_log_in_or_none_are_refused(shared_dir):
    password = write(shared_dir / "rpc-password", "hunter2\n", 0o644)
    both = check(
        dashd_config(shared_dir, rpc_cookie_file="/c", rpc_user="shop", rpc_password_file=password)
    )
    assert both.code == 2 and "exactly one way to log in" in both.stderr
    none = check(dashd_config(shared_dir))
    assert none.code == 2 and "[dashd] rpc_cookie_file" in none.stderr
    half = check(dashd_config(shared_dir, rpc_user="shop"))
    assert half.code == 2 and "[dashd] rpc_password_file: is required" in half.stderr


def test_bad_urls_say_which_scheme_is_wanted(shared_dir):
    result = check(dashd_config(shared_dir, rpc_cookie_file="/c", zmq_url="http://127.0.0.1:28332"))
    assert result.code == 2 and "[dashd] zmq_url" in result.stderr and "tcp://" in result.stderr
    result = check(dashd_config(shared_dir, rpc_cookie_file="/c", rpc_url="tcp://127.0.0.1:9998"))
    assert result.code == 2 and "[dashd] rpc_url" in result.stderr and "http://" in result.stderr


def test_a_remote_zmq_endpoint_with_a_proxy_is_a_warning(shared_dir):
    password = write(shared_dir / "rpc-password2", "hunter2\n", 0o644)
    dashd = {
        "rpc_user": "shop",
        "rpc_password_file": password,
        "zmq_url": "tcp://dashd.example.com:28332",
    }
    config = sections_file(
        shared_dir,
        chain={"backend": "dashd"},
        dashd={**URLS, **dashd},
        network={"proxy": "http://proxy.example:3128"},
    )
    result = check(config, "--unit", unit_file(shared_dir, "User=root"))
    assert result.code == 0, result.stderr
    assert "ZMQ cannot go through [network] proxy" in result.stderr
    assert "hunter2" not in result.stdout + result.stderr
