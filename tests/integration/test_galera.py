"""dashpay on a private 3-node MariaDB Galera cluster (tests/galera-cluster): one owner
per wallet through the lease, takeover when the owner pauses or loses its node, the
fence keeping a deposed owner's writes out, creates carried across a node that leaves
and rejoins, a node out of the primary component (1047) left for the next, a
certification conflict rerun as a whole unit of work, and two wallets sharing the
cluster. Checked against the payments the sandbox peer made."""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from urllib.parse import unquote, urlsplit

import pytest

from dashpay.domain.errors import Unavailable
from dashpay.net.control_client import ControlClient
from dashpay.wire.jsonrpc import RemoteError
from tests.conftest import (
    REPO,
    SHARED_XPUB,
    TEST_XPUB,
    require,
    start_daemon,
    wait_ready,
    write_config,
)
from tests.integration.test_operations import assert_totals, stream_payments

pytestmark = pytest.mark.galera

CLUSTER = str(REPO / "tests" / "galera-cluster")
LEASE = 2.0  # seconds: [database] lease of every daemon here
COIN = 100_000_000
INACTIVE_TIMEOUT = 4.0  # evs.inactive_timeout of tests/galera-cluster's nodes


def cluster(*args: str, timeout: float = 150) -> str:
    done = subprocess.run(
        [CLUSTER, *args], capture_output=True, text=True, timeout=timeout, env=os.environ
    )
    if done.returncode != 0:
        raise RuntimeError(f"tests/galera-cluster {' '.join(args)}: {done.stderr[-2000:]}")
    return done.stdout.strip()


def node_url(database: str, *nodes: int) -> str:
    """The URL of ``database`` naming ``nodes`` in that order (the order tried)."""
    base = urlsplit(cluster("url", "1"))
    hosts = ",".join(f"127.0.0.1:{base.port - 1 + n}" for n in nodes)
    return f"mysql://{base.netloc.rpartition('@')[0]}@{hosts}/{database}"


def admin(sql: str, node: int = 1) -> list[tuple]:
    import pymysql

    parts = urlsplit(cluster("url", str(node)))
    conn = pymysql.connect(
        host="127.0.0.1",
        port=parts.port,
        user=unquote(parts.username or ""),
        password=unquote(parts.password or ""),
        autocommit=True,
    )
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return list(cur.fetchall())
    finally:
        conn.close()


@pytest.fixture(scope="module")
def galera() -> Iterator[None]:
    if os.geteuid() != 0 and not require("GALERA"):
        pytest.skip("the Galera test cluster runs its nodes as the mysql user: needs root")
    try:
        cluster("start")
    except (RuntimeError, OSError) as exc:
        if require("GALERA"):
            raise
        pytest.skip(f"no Galera test cluster: {exc}")
    try:
        yield
    finally:
        cluster("stop", timeout=120)


@pytest.fixture
def database(galera) -> Iterator[str]:
    name = f"dashpay_g_{secrets.token_hex(5)}"
    admin(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    yield name
    with contextlib.suppress(Exception):
        admin(f"DROP DATABASE IF EXISTS `{name}`")


def daemon_config(short_tmp, name: str, url: str, peer, xpub: str = TEST_XPUB):
    directory = short_tmp / name
    directory.mkdir()
    return write_config(
        directory,
        url,
        wallet={"xpub": xpub, "network": "testnet"},
        database={"url": url, "lease": f"{LEASE:g}s", "connect_timeout": "1s"},
        insight={"url": peer.url, "reconnect_initial": "0.1s", "reconnect_max": "0.5s"},
    )


def call(daemon, method: str, params: dict | None = None, timeout: float = 20) -> dict:
    """One control-socket call. The module's polling and creating go to the socket, not
    through `dashpay` processes: on a loaded machine those starts were most of its time
    (the CLI itself is tested elsewhere)."""
    with ControlClient(daemon.socket, timeout=timeout) as client:
        return client.call(method, params or {})


def state_of(daemon) -> str:
    return call(daemon, "status")["state"]


def new_receiver(daemon) -> dict:
    return call(daemon, "receiver.create", {"amount": "1"})


def wait_for(condition, timeout: float, what: str) -> float:
    """Seconds until ``condition()`` held; AssertionError after ``timeout``."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, f"{what} not within {timeout}s"
        time.sleep(0.05)
    return time.monotonic() - started


def leases(database: str, node: int = 1) -> list[tuple]:
    sql = f"SELECT wallet_id, owner, epoch FROM `{database}`.wallet_leases ORDER BY 1"
    return admin(sql, node=node)


def held_by(daemon, owner_id: str) -> bool:
    """Whether a lease owner id (host:pid:random) is this daemon process's."""
    return f":{daemon.proc.pid}:" in owner_id


def epoch_of(database: str, wallet: str, node: int = 1) -> int:
    return next(epoch for w, _, epoch in leases(database, node) if w == wallet)


def settle(daemon, paid) -> None:
    """Every payment made is recorded exactly once on ``daemon`` (a rescan closes what
    an outage's lost events left open)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            call(daemon, "rescan", {"all_pending": True}, timeout=60)
            break
        except RemoteError:
            assert time.monotonic() < deadline
            time.sleep(0.3)
    try:
        assert_totals(daemon, paid)
    except AssertionError as exc:  # what the daemon saw, for a failure that is rare
        lines = [
            line
            for line in daemon.log().splitlines()
            if any(word in line for word in ("rescan", "insight", "lease", "WARNING", "ERROR"))
        ]
        raise AssertionError(
            f"{exc}\n--- daemon log (excerpt):\n" + "\n".join(lines[-80:])
        ) from exc


def test_one_owner_a_paused_owner_fenced_out_and_another_wallet_untouched(
    short_tmp, database, sandbox_peer
):
    owner = start_daemon(daemon_config(short_tmp, "a", node_url(database, 1, 2, 3), sandbox_peer))
    # The standby, and another shop's wallet on the same cluster through node 3 (its own
    # lease), start side by side.
    standby = start_daemon(
        daemon_config(short_tmp, "b", node_url(database, 2, 3, 1), sandbox_peer), wait=False
    )
    other = start_daemon(
        daemon_config(short_tmp, "c", node_url(database, 3, 1, 2), sandbox_peer, SHARED_XPUB),
        wait=False,
    )
    wait_ready(standby, ready=False)
    wait_ready(other)
    [(wallet, holder, epoch)] = [row for row in leases(database) if held_by(owner, row[1])]
    stop, paid = threading.Event(), {}
    payer = None
    try:
        assert state_of(standby) == "standby"
        [(other_wallet, other_holder, other_epoch)] = [
            row for row in leases(database) if row[0] != wallet
        ]
        assert held_by(other, other_holder)
        other_paid = {}
        for _ in range(2):
            receiver = new_receiver(other)
            other_paid[receiver["receiver_id"]] = [
                (sandbox_peer.pay(receiver["address"], COIN // 4), COIN // 4)
            ]
        receivers = [new_receiver(owner) for _ in range(3)]
        payer = threading.Thread(target=stream_payments, args=(sandbox_peer, receivers, stop, paid))
        payer.start()
        time.sleep(1.0)
        owner.proc.send_signal(signal.SIGSTOP)
        took = wait_for(lambda: epoch_of(database, wallet) > epoch, 4 * LEASE, "takeover")
        # The owner renewed at most a third of a lease before it stopped, so never
        # sooner than that; the bound above is loose (a loaded machine: the figure is
        # printed, benchmarks/ would hold a target).
        assert LEASE * 0.6 < took < LEASE * 3 + 2, took
        print(f"takeover after SIGSTOP of the owner: {took:.2f} s")
        wait_for(lambda: state_of(standby) != "standby", 10, "the standby starting")
        now = dict((w, (h, e)) for w, h, e in leases(database))
        assert held_by(standby, now[wallet][0]) and now[wallet][1] > epoch
        assert now[other_wallet] == (other_holder, other_epoch)  # the other shop: untouched
        time.sleep(1.0)  # payments go on reaching the new owner
        owner.proc.send_signal(signal.SIGCONT)
        assert owner.proc.wait(10) == 1  # woke up, found the lease taken: stopped
        assert "another daemon owns the wallet now" in owner.log()
        stop.set()
        payer.join()
        payer = None
        settle(standby, paid)
        assert sum(len(p) for p in paid.values()) > 20
        assert state_of(other) == "ready"
        assert_totals(other, other_paid)
    finally:
        stop.set()
        if payer is not None:
            payer.join()
        if owner.proc.poll() is None:
            owner.proc.send_signal(signal.SIGCONT)
        other.stop()
        standby.stop()
        owner.stop(signal.SIGKILL)


def test_creates_go_on_while_a_node_leaves_and_rejoins(short_tmp, database, sandbox_peer):
    owner = start_daemon(daemon_config(short_tmp, "a", node_url(database, 1, 2, 3), sandbox_peer))
    answers: dict[str, dict] = {}
    failures: list[str] = []
    stop = threading.Event()

    def creator(worker: int) -> None:
        i = 0
        with ControlClient(owner.socket, timeout=20) as client:
            while not stop.is_set():
                key = f"w{worker}-{i}"
                deadline = time.monotonic() + 20
                while True:  # the same idempotency key until it is answered
                    params = {"amount": "1", "idempotency_key": key}
                    try:
                        answers[key] = client.call("receiver.create", params)
                        break
                    except RemoteError as exc:  # 5: unavailable for now, try again
                        if exc.code != 5 or time.monotonic() > deadline:
                            failures.append(f"{key}: {exc!r}")
                            return
                    time.sleep(0.2)
                i += 1
                time.sleep(0.02)

    workers = [threading.Thread(target=creator, args=(n,)) for n in range(3)]
    for worker in workers:
        worker.start()
    try:
        wait_for(lambda: len(answers) >= 3, 20, "first creates")
        cluster("stop-node", "1")
        down = len(answers)
        wait_for(lambda: len(answers) >= down + 3, 20, "creates with node 1 down")
        cluster("start-node", "1")  # rejoins by IST (nodes 2 and 3 joined by SST)
        back = len(answers)
        wait_for(lambda: len(answers) >= back + 3, 20, "creates after node 1 rejoined")
    finally:
        stop.set()
        for worker in workers:
            worker.join()
    try:
        assert not failures, failures
        assert state_of(owner) == "ready"  # kept its lease across the switch of node
        rows = admin(
            f"SELECT idempotency_key, receiver_id, address, hd_index FROM `{database}`.receivers",
            node=1,  # the node that rejoined has every row
        )
        by_key = {key: (rid, address, index) for key, rid, address, index in rows}
        assert len({index for _, _, index in by_key.values()}) == len(rows)  # no index twice
        for key, answer in answers.items():
            assert by_key[key] == (answer["receiver_id"], answer["address"], answer["hd_index"])
        [(next_index,)] = admin(f"SELECT next_index FROM `{database}`.hd_counters", node=1)
        assert next_index == len(rows)
        assert "database node switched" in owner.log() or "database node left" in owner.log()
    finally:
        owner.stop()


def new_row(wallet: str):
    from dashpay.domain.model import NewReceiver

    return NewReceiver(wallet_id=wallet, chain=0, amount_duffs=1_000, created_at=1_700_000_000_000)


def test_a_certification_conflict_reruns_the_whole_unit_of_work(database, caplog):
    # A create through node 1 holds the HD counter row (SELECT ... FOR UPDATE) when a
    # write of that row commits through node 2: row locks do not cross nodes, so
    # Galera aborts the create (1213) as it applies node 2's write. The repository runs
    # the whole unit of work again: it reads the counter anew and takes the index
    # after node 2's, where a retried statement or COMMIT would have taken a stale one.
    from dashpay.repository.mysql import MysqlRepository
    from tests.contract.conftest import fake_address

    parts = urlsplit(cluster("url", "1"))
    repo = MysqlRepository(
        host="127.0.0.1",
        port=parts.port,
        user=unquote(parts.username or ""),
        password=unquote(parts.password or ""),
        database=database,
    )
    wallet = "c0ffee0123456789"
    fake = fake_address(wallet, 0)
    counter = f"`{database}`.hd_counters"
    derived = []

    def derive(index: int) -> str:
        derived.append(index)
        if len(derived) == 1:  # inside the first attempt, the counter row locked
            admin(f"UPDATE {counter} SET next_index = next_index + 5", node=2)
        return fake(index)

    caplog.set_level(logging.WARNING, logger="dashpay.repository.mysql")
    try:
        repo.migrate()
        first, _ = repo.create_receiver(new_row(wallet), fake)  # the counter row exists now
        # ... on node 2 too (else its UPDATE below changes nothing and nothing conflicts)
        on_node_2 = f"SELECT next_index FROM {counter}"
        wait_for(lambda: admin(on_node_2, node=2) == [(1,)], 10, "node 2 applying the counter")
        receiver, created = repo.create_receiver(new_row(wallet), derive)
    finally:
        repo.close()
    assert first.hd_index == 0 and created
    seen = (derived, [r.getMessage() for r in caplog.records], receiver)
    assert [r for r in caplog.records if "code=1213" in r.getMessage()], seen
    assert derived == [1, 6], seen  # the rerun read node 2's counter
    assert (receiver.hd_index, receiver.address) == (6, fake(6))
    assert admin(f"SELECT next_index FROM {counter}", node=3) == [(7,)]
    rows = admin(f"SELECT hd_index FROM `{database}`.receivers ORDER BY 1", node=3)
    assert rows == [(0,), (6,)]


def test_a_node_out_of_the_primary_component_sends_the_work_to_the_next(database, caplog):
    # Node 1 cut off from the group (gmcast.isolate) stays up but leaves the primary
    # component: it answers 1047 ("WSREP has not yet prepared node for application
    # use"). The repository's next unit of work moves to node 2 and succeeds; a new
    # connection to node 1 is refused while wsrep_ready is OFF. Node 1 rejoins after.
    from dashpay.repository.mysql import MysqlRepository
    from tests.contract.conftest import fake_address

    parts = urlsplit(cluster("url", "1"))
    nodes = [("127.0.0.1", parts.port - 1 + n) for n in (1, 2, 3)]
    repo = MysqlRepository(
        host=None,
        port=0,
        user=unquote(parts.username or ""),
        password=unquote(parts.password or ""),
        database=database,
        nodes=nodes,
        pool_size=1,
    )
    wallet = "c0ffee0123456789"
    fake = fake_address(wallet, 0)

    def ready(node: int) -> str:
        return admin("SHOW STATUS LIKE 'wsrep_ready'", node=node)[0][1]

    caplog.set_level(logging.WARNING, logger="dashpay.repository.mysql")
    try:
        repo.migrate()
        assert repo.create_receiver(new_row(wallet), fake)[0].hd_index == 0
        assert repo.where == f"127.0.0.1:{nodes[0][1]}"
        admin("SET GLOBAL wsrep_provider_options = 'gmcast.isolate=1'", node=1)
        wait_for(lambda: ready(1) == "OFF", 20, "node 1 leaving the primary component")
        receiver, _ = repo.create_receiver(new_row(wallet), fake)  # pooled conn: node 1
        assert receiver.hd_index == 1
        assert repo.where == f"127.0.0.1:{nodes[1][1]}"
        assert any("database node left" in r.getMessage() for r in caplog.records)
        with pytest.raises(Unavailable, match="not in the cluster's primary component"):
            repo._connect_node(0)
        rows = admin(f"SELECT hd_index FROM `{database}`.receivers ORDER BY 1", node=2)
        assert rows == [(0,), (1,)]
    finally:
        repo.close()
        admin("SET GLOBAL wsrep_provider_options = 'gmcast.isolate=0'", node=1)
    wait_for(lambda: ready(1) == "ON", 60, "node 1 back in the primary component")
    wait_for(
        lambda: admin("SHOW STATUS LIKE 'wsrep_cluster_size'", node=1)[0][1] == "3", 60, "3 nodes"
    )


def test_the_owners_node_killed_hands_the_wallet_over(short_tmp, database, sandbox_peer):
    # The owner knows only node 1: when it dies the owner cannot renew and the standby
    # (nodes 2 and 3) takes over, with every payment made counted once.
    owner = start_daemon(daemon_config(short_tmp, "a", node_url(database, 1), sandbox_peer))
    standby = start_daemon(
        daemon_config(short_tmp, "b", node_url(database, 2, 3), sandbox_peer), ready=False
    )
    stop, paid = threading.Event(), {}
    payer = None
    try:
        receivers = [new_receiver(owner) for _ in range(3)]
        payer = threading.Thread(target=stream_payments, args=(sandbox_peer, receivers, stop, paid))
        payer.start()
        time.sleep(1.0)
        [(wallet, _, epoch)] = leases(database)
        cluster("kill-node", "1")
        took = wait_for(lambda: epoch_of(database, wallet, node=2) > epoch, 20, "takeover")
        # The cluster first waits out its failure detection (evs.suspect_timeout and
        # inactive_timeout, 2 s and 4 s in tests/galera-cluster) before the survivors
        # carry on, then the lease runs out.
        assert took < INACTIVE_TIMEOUT + LEASE * 3 + 2, took
        print(f"takeover after the owner's node was killed: {took:.2f} s")
        wait_for(lambda: state_of(standby) != "standby", 10, "the standby starting")
        time.sleep(1.0)  # payments go on reaching the new owner
        # The module's last test: node 1 stays down (the cluster is stopped after it);
        # a paused owner coming back is fenced out in the first test.
        stop.set()
        payer.join()
        payer = None
        settle(standby, paid)
    finally:
        stop.set()
        if payer is not None:
            payer.join()
        standby.stop()
        owner.stop(signal.SIGKILL)
