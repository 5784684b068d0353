"""takeover: how long a wallet is without an owner after a fault, beside the lease.

Two daemons of one wallet share a database: the owner (ready, watching ``pending``
receivers) and a standby. Then a fault: the owner is killed (SIGKILL), paused
(SIGSTOP), or, on the 3-node Galera cluster of tests/galera-cluster, the owner's node
is killed (SIGKILL of its mariadbd; the owner is configured with that node alone, as
a daemon whose host lost its way to the cluster; one that names every node simply
reconnects to another and keeps its lease). Right after the fault the peer makes one
payment to a pending receiver. Measured from the fault:

- ``owning_s``: the standby's epoch is in the lease row (polled every 10 ms through a
  node that survives);
- ``ready_s``: the standby's "ready" line (it rescanned its pending receivers);
- ``first_payment_s``: the payment made during the fault recorded by the standby;

and ``owning_to_lease``, the ratio to the configured ``[database] lease``. A paused
owner is woken afterwards and must exit (it finds its lease taken, exit code 1), and
the payment must be recorded exactly once. The same faults run on the single server
(tests/mariadb-server) for comparison; killing its only server is an outage, not a
takeover.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import time
from typing import Any

from benchmarks import galera
from benchmarks.harness import (
    BenchError,
    DaemonProcess,
    mysql_connect,
    mysql_database,
    open_peer,
    workdir,
    write_config,
)
from benchmarks.runner import Case, Options
from benchmarks.seed import AMOUNT_DUFFS, prepare, receivers_to_pay
from benchmarks.stack import wallet_id

DESCRIPTION = "owner killed, paused or cut off: seconds until the standby owns, is ready, records"
SHOWN = ("owning_s", "ready_s", "first_payment_s", "owning_to_lease", "lease_s")
UNITS = {"owning_s": "s", "ready_s": "s", "first_payment_s": "s", "lease_s": "s"}
REPORT_EXTRA = ("ready_s", "first_payment_s", "owning_to_lease")
LEASE_SECONDS = 5.0  # the default [database] lease
QUICK_LEASE_SECONDS = 2.0
POLL_SECONDS = 0.01
# A takeover slower than this (after the lease) means the run is broken, not slow.
TAKEOVER_LIMIT_SECONDS = 60.0
KILL, STOP, NODE = "kill the owner", "pause the owner", "kill the owner's node"
NOTES = [
    "The owner renews its lease every third of it; a standby looks every tenth (at most "
    "every 0.5 s). A fault lands at a random point of the renewal cycle, so owning_s "
    "lies between about 2/3 and 1.1 leases; on Galera a killed node is first waited out "
    "by the cluster's failure detection (evs.suspect_timeout 2 s in tests/galera-cluster).",
    "The owner in 'kill the owner's node' names node 1 alone; the standby nodes 2 and 3.",
]

resources = galera.resources


def cases(options: Options) -> list[Case]:
    lease = QUICK_LEASE_SECONDS if options.quick else LEASE_SECONDS
    pending = 50 if options.quick else 1_000
    out = []
    for database, faults in (("galera", (KILL, STOP, NODE)), ("single", (KILL, STOP))):
        for fault in faults:
            where = "3-node Galera" if database == "galera" else "single server"
            out.append(
                Case(
                    f"{where}: {fault}",
                    {"database": database, "fault": fault, "lease_s": lease, "pending": pending},
                    needs_mysql=database == "single",
                )
            )
    return out


def run(case: Case, options: Options) -> dict[str, Any]:
    database, fault = case.parameters["database"], case.parameters["fault"]
    lease = case.parameters["lease_s"]
    if database == "galera":
        server = galera.cluster_url()
    else:
        assert options.mysql_url is not None
        server = options.mysql_url
    with contextlib.ExitStack() as stack:
        directory = stack.enter_context(workdir())
        url = stack.enter_context(mysql_database(server))
        if database == "galera":
            owner_nodes, standby_nodes = ((1,), (2, 3)) if fault == NODE else ((1, 2, 3), (2, 3, 1))
            owner_url = galera.nodes_url(url, *owner_nodes)
            standby_url = galera.nodes_url(url, *standby_nodes)
            watch_url = galera.nodes_url(url, 2)
            if fault == NODE:  # before the database is dropped through node 1
                stack.callback(galera.restore_node, 1)
        else:
            owner_url = standby_url = watch_url = url
        peer = stack.enter_context(open_peer(options.insight_url))
        configs = []
        for name, daemon_url in (("owner", owner_url), ("standby", standby_url)):
            (directory / name).mkdir()
            configs.append(
                write_config(
                    directory / name,
                    daemon_url,
                    peer.insight_url,
                    extra={"database": {"lease": f"{lease:g}s", "connect_timeout": "1s"}},
                )
            )
        # Migrated and seeded through one node (a write on another node while the
        # migration's DDL is applied there is aborted: 1213).
        prepare(configs[0], url, wallet_id(), case.parameters["pending"])
        [(receiver_id, address)] = receivers_to_pay(url, 1)
        owner = DaemonProcess.start(configs[0])
        stack.callback(_stop, owner)
        owner.wait_ready(120)
        standby = DaemonProcess.start(configs[1])
        stack.callback(_stop, standby)
        standby.wait_control(60)
        if standby.status()["state"] != "standby":
            raise BenchError(f"the second daemon is {standby.status()['state']!r}, not standby")
        watch = _LeaseWatch(watch_url)
        stack.callback(watch.close)
        epoch = watch.epoch()
        # A fault at a random point of the owner's renewal cycle (a third of the lease).
        time.sleep(0.5 + random.uniform(0, lease / 3))
        faulted = time.monotonic()
        if fault == KILL:
            os.kill(owner.pid, signal.SIGKILL)
        elif fault == STOP:
            os.kill(owner.pid, signal.SIGSTOP)
        else:
            galera.cluster("kill-node", "1")
        peer.pay([(address, AMOUNT_DUFFS)])
        owning = watch.wait_past(epoch, faulted + TAKEOVER_LIMIT_SECONDS + lease) - faulted
        ready = standby.wait_ready(TAKEOVER_LIMIT_SECONDS) - (faulted - standby.started_at)
        standby.wait_for(
            lambda: receiver_id in standby.first_event, TAKEOVER_LIMIT_SECONDS, "the payment"
        )
        paid = standby.first_event[receiver_id].at - faulted
        result: dict[str, Any] = {
            "lease_s": lease,
            "owning_s": round(owning, 3),
            "ready_s": round(ready, 3),
            "first_payment_s": round(paid, 3),
            "owning_to_lease": round(owning / lease, 3),
            "ready_to_lease": round(ready / lease, 3),
            "epoch_before": epoch,
        }
        if fault == STOP:
            assert owner.proc is not None
            os.kill(owner.pid, signal.SIGCONT)
            try:
                result["woken_owner_exit"] = owner.proc.wait(30)
            except Exception:
                raise BenchError("the paused owner, woken, did not stop") from None
            if result["woken_owner_exit"] != 1:
                raise BenchError(f"the woken owner exited with {result['woken_owner_exit']}")
        (count,) = watch.one(f"SELECT COUNT(*) FROM payments WHERE receiver_id = {receiver_id}")
        if count != 1:
            raise BenchError(f"the payment made during the fault is recorded {count} times")
    return result


def _stop(daemon: DaemonProcess) -> None:
    if daemon.proc is not None and daemon.proc.poll() is None:
        with contextlib.suppress(OSError):
            os.kill(daemon.pid, signal.SIGCONT)
    daemon.stop()


class _LeaseWatch:
    """One connection reading the wallet's lease row (autocommit: each read is fresh)."""

    def __init__(self, database_url: str) -> None:
        from urllib.parse import urlsplit

        parts = urlsplit(database_url)
        self._conn = mysql_connect(parts._replace(path="").geturl(), parts.path.strip("/"))
        self._wallet = wallet_id()

    def one(self, sql: str, args: tuple = ()) -> tuple:
        with self._conn.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchone()

    def epoch(self) -> int:
        row = self.one("SELECT epoch FROM wallet_leases WHERE wallet_id = %s", (self._wallet,))
        if row is None:
            raise BenchError("the owner holds no lease row")
        return int(row[0])

    def wait_past(self, epoch: int, deadline: float) -> float:
        """time.monotonic() when the epoch first read above ``epoch``."""
        while True:
            if self.epoch() > epoch:
                return time.monotonic()
            if time.monotonic() > deadline:
                raise BenchError("the standby did not take the lease over")
            time.sleep(POLL_SECONDS)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._conn.close()
