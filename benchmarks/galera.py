"""The private 3-node Galera cluster of tests/galera-cluster, for the benchmarks that
compare it with the single server (``cluster``) and time a takeover (``takeover``).

The cluster runs on fixed loopback ports (``$DASHPAY_TEST_GALERA_PORT``, 34100 + N);
``running_cluster()`` starts a fresh one unless one is already up, and stops it
afterwards only if it started it. Its nodes run with the same durability as
tests/mariadb-server (``innodb_flush_log_at_trx_commit=2``), so the two compare.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from urllib.parse import urlsplit

from benchmarks.harness import REPO, BenchError
from benchmarks.runner import Options

SCRIPT = REPO / "tests" / "galera-cluster"
NODES = (1, 2, 3)
START_TIMEOUT = 300.0  # three nodes, two of them joining by SST, on a loaded machine


def cluster(*args: str, timeout: float = START_TIMEOUT) -> str:
    """`tests/galera-cluster ARGS`: its stdout, or BenchError with its stderr."""
    try:
        done = subprocess.run(
            [str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, env=os.environ
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise BenchError(f"tests/galera-cluster {' '.join(args)}: {exc}") from None
    if done.returncode != 0:
        raise BenchError(f"tests/galera-cluster {' '.join(args)}: {done.stderr[-1500:]}")
    return done.stdout.strip()


def nodes_url(server_url: str, *nodes: int) -> str:
    """``server_url`` naming ``nodes`` in that order, the order a daemon tries them."""
    base = urlsplit(cluster("url", "1")).port
    assert base is not None
    parts = urlsplit(server_url)
    credentials = parts.netloc.rpartition("@")[0]
    hosts = ",".join(f"127.0.0.1:{base - 1 + n}" for n in nodes)
    return parts._replace(netloc=f"{credentials}@{hosts}").geturl()


@contextlib.contextmanager
def running_cluster() -> Iterator[str]:
    """The URL of node 1 of a running 3-node cluster (the harness's database helpers
    take one host); stopped afterwards if this call started it."""
    started = subprocess.run([str(SCRIPT), "status"], capture_output=True).returncode != 0
    if started:
        cluster("start")
    try:
        yield cluster("url", "1")
    finally:
        if started:
            with contextlib.suppress(BenchError):
                cluster("stop", timeout=120)


def restore_node(node: int) -> None:
    """(Re)start ``node`` if it is down; it rejoins by IST."""
    if subprocess.run([str(SCRIPT), "status"], capture_output=True).returncode != 0:
        cluster("start-node", str(node))


_held: dict[str, str] = {}


@contextlib.contextmanager
def resources(options: Options) -> Iterator[None]:
    """A scenario's ``resources``: the cluster for all its cases (``cluster_url()``)."""
    with contextlib.ExitStack() as stack:
        try:
            _held["url"] = stack.enter_context(running_cluster())
        except BenchError as exc:
            _held["error"] = f"no Galera cluster (tests/galera-cluster): {exc}"
        try:
            yield
        finally:
            _held.clear()


def cluster_url() -> str:
    """Node 1's URL of the cluster held by ``resources``; BenchError without one."""
    if "url" not in _held:
        raise BenchError(_held.get("error", "no Galera cluster"))
    return _held["url"]
