"""[database] for a Galera cluster: the node list in the URL and the wallet lease."""

from __future__ import annotations

import pytest

from dashpay.config.database import parse_database_url
from dashpay.config.errors import ConfigError
from tests.unit.test_config import PASSWORD, load_text


def test_a_cluster_url_names_every_node_in_order_and_hides_the_password():
    db = parse_database_url(f"mysql://u:{PASSWORD}@db1,db2:3307,[::1]:3308/shop?pool_size=8")
    assert db.nodes == (("db1", 3306), ("db2", 3307), ("::1", 3308))
    assert (db.host, db.port, db.database, db.pool_size) == ("db1", 3306, "shop", 8)
    assert PASSWORD not in db.display_url()
    assert db.display_url().endswith("@db1,db2:3307,[::1]:3308/shop?pool_size=8")


def test_one_host_is_no_cluster():
    assert parse_database_url("mysql://u@db1:3306/shop").nodes == ()


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("mysql://u@db1,,db2/shop", 'host "" of the host list is not valid'),
        ("mysql://u@db1,db1:3306/shop", 'host "db1:3306" is listed twice'),
        ("mysql://u@db1,db2:0/shop", 'host "db2:0"'),
        ("mysql://u@db1,db2:x/shop", 'host "db2:x"'),
        ("mysql://u@db1,db2/shop?unix_socket=/run/m.sock", "several hosts and a unix_socket"),
        ("mysql://u@" + ",".join(f"h{i}" for i in range(17)) + "/shop", "at most 16"),
    ],
)
def test_a_bad_node_list_is_refused_saying_which(url, says):
    with pytest.raises(ConfigError, match=r"\[database\] url") as caught:
        parse_database_url(url)
    assert says in str(caught.value)


def test_the_lease_is_a_duration_within_bounds(tmp_path):
    assert load_text(tmp_path, '[database]\nurl = "mysql://u@h/db"\n').database.lease == 5.0
    config = load_text(tmp_path, '[database]\nurl = "mysql://u@h/db"\nlease = "2s"\n')
    assert config.database.lease == 2.0
    for bad in ('"0.5s"', '"10m"', '"soon"', "true"):
        with pytest.raises(ConfigError, match=r"\[database\] lease"):
            load_text(tmp_path, f'[database]\nurl = "mysql://u@h/db"\nlease = {bad}\n')
