"""Fixtures shared by the integration tests: real daemons in subprocesses, the CLI as
a subprocess, and fresh MariaDB databases."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

REPO = Path(__file__).resolve().parent.parent
# BIP44 account key from dash-keys.md (seed bytes 0..63, m/44'/5'/0'), mainnet: the
# documented vector (tests/unit/test_wallet.py checks it against the seed).
VECTOR_XPUB = "xpub6DSwpQgH8k21nE2z2tyoA7sXf1LBFCimaxuEGMUf7PAFWgqBbSjjGurUw8Stqo3H8y8eFVCzQctpADgP1TFdhGeqU9kwHG4Q1WhmFU7nzgM"
VECTOR_XPUB_ADDRESSES = [
    "XxFKyXX1ibFAn4s4VLVZodgBeciLWhu8o9",
    "XedpUBKf5mhLTiBTF8tMi12PSsdiL1tG1i",
    "XiPRFF2D1SjT2NyMJ9viApx8snXkL6pfzL",
]


@dataclass(frozen=True)
class WorkerKeys:
    """The wallet keys of one pytest process: `test` for the daemons its tests start
    (with its mainnet addresses 0/0..2), `shared` for ``shared_daemon``."""

    test: str
    test_addresses: list[str]
    shared: str


# The MariaDB wallet lock is per key and server-wide: daemons of tests running at the
# same time on one server must not share a key, or one waits as the other's standby.
# A serial run uses the vector and m/44'/5'/7' of the seed 00 01 .. 1f; pytest-xdist
# worker gwN uses m/44'/5'/(10+2N)' and m/44'/5'/(11+2N)' of the vector's seed
# (addresses checked against dashcore-lib by tests/interop/test_wallet_dashcore_lib.py).
SERIAL_KEYS = WorkerKeys(
    VECTOR_XPUB,
    VECTOR_XPUB_ADDRESSES,
    "xpub6C9qY3ahftvzKALg31GrwjiQHbTcFo2NgJfNLTHkkwbrtBAd7A3uNzWJZD8xLjJKVFE42nLefanDW"
    "ehNGLPHXHaVps4NcDB9QfXYVcuSoNn",
)
XDIST_KEYS = [
    WorkerKeys(
        "xpub6DSwpQgH8k22EoR3eRqiKvMGwg3gsf8ijgJkbJyyeqKo4AfPaCK3nqE9gzXS9tzDaXQuqahhjdjY"
        "x7QbmVwbgvMHu38NAgi1kQ89BHvU3tj",
        [
            "Xmnr31QQz8otCDi2fdbeecVCUbMMBJCqF2",
            "XpkRUJw9Y95guUuXxM93tSxDgnFoPUZUA1",
            "XySMrSguqFZg3xB7vvdjUGTTjtfEsGJrut",
        ],
        "xpub6DSwpQgH8k22GzDLymLtNMx3uFqJNFvRP6CZjmG6y5guEapMjipcVBGDhJRdDYAZudyUyWGXCL9F"
        "46FHH1RBazK7Dr3yHVXVXcChKkCdc6N",
    ),
    WorkerKeys(
        "xpub6DSwpQgH8k22KDDT8bXEbVhfdN5NNYDNbzTwQiuMXXDK31wJfKcyyvRvY4kbCPFxxsEbtbkT1RTi"
        "YdiEqC3MrWC1tvxzaksEVjGmWgUCLuM",
        [
            "Xgv251A49HUkHsudZmAhLv6SUzzTKNcXgm",
            "XePzJSrbR5UKbGXp8zM8aTWmGNDPQggZei",
            "XazYVFEDLDgGPSvaDyU2Uiz9veE7wxk9Xp",
        ],
        "xpub6DSwpQgH8k22MVTaV9zoqNiZNWiHJ9ZFHRjWHMMNQC3pkEUwjU5bQQ5BKpcTbm2LCoLvRs5nXwDh"
        "341vm3NKchcVtmwfsNtu1A5z3B6Nb2w",
    ),
    WorkerKeys(
        "xpub6DSwpQgH8k22RsCk5fbynhXuEgppdnGLkw4htCxC1vCGcp6dpiMLfsD2UjNWgFpFuLfQ2mYGXis5"
        "a2hVvKHDM3cGSmKtKfJW8EC2RdgAgYK",
        [
            "XxBsGn8XxWU72e9Awy2FfAvRp9dPhidKKB",
            "Xe3Xz16sMinDxSL5y86xWqWB8gbWR255nf",
            "Xm6N71urEEozSSs3R4UwQqzDvxSU5HL7tL",
        ],
        "xpub6DSwpQgH8k22T7QA7vupUdAyrBxsLWU5PbFrAd5jxZ7hJpe9z7e9qg3PZyiXqCwh5QCr26KMBFYh"
        "iqW3nW28MnifktF5T5VvS1oGUFJfXqC",
    ),
    WorkerKeys(
        "xpub6DSwpQgH8k22V58LSpDui165AXmet7QaTJNsqdD19NsurSAtAhzf6moviJcQvpG5DhF5RyZKsQP5"
        "TF5g1vQ1L9rSsCPG5TQYgBCFws8LsCK",
        [
            "XoyDNaUs2cPdDqLkLoChz6B1sS7oSrxo3Y",
            "XrgDWuSY8DD5F2gX5TWsAMcJtzqzcNcwbA",
            "XvaDWmFsNeR4uDCQJ7Xe9gr8Fp1vrNpdxL",
        ],
        "xpub6DSwpQgH8k22YQ4YwfCHmbm33CvFZoMB3ScfiZb37nQcLxtYbCRMWdiM1LdnEJuRWtowZRV1tDgx"
        "9gaLWrCQdHw9w1ysgN3xRqpNHihhJA1",
    ),
    WorkerKeys(
        "xpub6DSwpQgH8k22a64nZ7diJLbpDH5BorXEnE2zoYswRrhrfrjjrmiqbjBsaVQmiws6GDxXvjD1dEXm"
        "2g77DgMwxGhU6mcKomi9difpjHDHruv",
        [
            "Xpcq6B79qnwxgXgSCsQ9HJRGX7XH2AfSdQ",
            "Xp2RwuxhsCiiHyniChX1aHKjoxLWreEDYW",
            "Xr39Mc6DBEHYsjtEdyjBjZKtSN6qhBhMw7",
        ],
        "xpub6DSwpQgH8k22eBy7rjh4eQjoVAj9iUjSVWf5GNudTTEXoVcaXPPeNsZ5mRRwarXeTK5Wz9shjFcm"
        "avkkUjjDc6JWDrZjdsMAka7eqmMJpLP",
    ),
    WorkerKeys(
        "xpub6DSwpQgH8k22hXM8sWHCcBP6kiR3kuddjfRCMDAxfV2TPjZm1AjdoQb8UH5N4YBrnCkgMD2ZUaST"
        "aekrrXD7HyYF4eTeXJAQEL3R2SdDc3e",
        [
            "XjGyqARsyZjsXqQLrDGcWerREw8TNGxNMY",
            "Xv6kNnXE7LBP5XqDLDpWbWfr7SBAe6FGq9",
            "XywurXJ3WkSGxt7DHTeiZKpHkg9MwWGYSw",
        ],
        "xpub6DSwpQgH8k22hzMKUrU1YGucq17tTdqqmP3iaxxeLuBPdMncZk1e2fENoXrvNek4C9he8eYdhxxs"
        "LU7ixwreG6sEi8ti9VfGop7nphnYJQv",
    ),
    WorkerKeys(
        "xpub6DSwpQgH8k22mJKcEihPDuQn13sjU32CZZw2tuaUmK6My8P6hVXbSueKetpwhEDZfspDsn2Spi7K"
        "CuFsVkSN1wtrBqnBLaVjqwgeW7aKpWW",
        [
            "XeG4sVQxWqzHooRzS7f9XLumeQYrsisE7w",
            "XwDXxCzwruSH6DLDVQVA34gD9Gtqe5psoo",
            "Xc7M71ybXZGt97xZHr3xyucMrPznTDciRk",
        ],
        "xpub6DSwpQgH8k22pubeYDANgvnACaojDyxH1RBuUtjDkv9fXFTTHh3T55LCNBAY3nEBakCPTTGdnGom"
        "vKgFaWdz3taHYnSatpKkAmrpPQBn57K",
    ),
    WorkerKeys(
        "xpub6DSwpQgH8k22qZQjCS6xuxnENeugy3WdoGUkHPHaaUpsKMAfJ96ehM1PgqdNPva3ixgYEngx95Jx"
        "zVRV94N64SdUF47KUomDgVYsg5EWX9o",
        [
            "Xuoc8J1JKVHeQiJRucZQbGGFDtzCsqrBcy",
            "XiHFAn4LtXHG7g4QpWtcdfQGafWxNwFsdx",
            "XgYvhSs94CARHUZmv1YFbHRUiCWfN24G3u",
        ],
        "xpub6DSwpQgH8k22tjD3E1YdyoydJvXU39V5LJyJFrWwKPdqPAqK4QA9dzposBjhLSHdcKZWn1GcnpYx"
        "uFryLMJpoQ5fMS5hfwFpXQm35jMWf29",
    ),
]


def worker_keys(worker: str) -> WorkerKeys:
    """The keys of pytest-xdist worker ``worker`` ("gw0", ...; "" when serial)."""
    if not worker:
        return SERIAL_KEYS
    number = int(worker.removeprefix("gw"))
    if number >= len(XDIST_KEYS):
        raise RuntimeError(
            f"tests/conftest.py has wallet keys for {len(XDIST_KEYS)} pytest-xdist workers, "
            f"not for {worker}: run with -n {len(XDIST_KEYS)} or fewer"
        )
    return XDIST_KEYS[number]


_KEYS = worker_keys(os.environ.get("PYTEST_XDIST_WORKER", ""))
# What a test daemon's wallet is (mainnet addresses 0/0..2 below), and the key of the
# daemon that runs beside them (``shared_daemon``).
TEST_XPUB = _KEYS.test
TEST_XPUB_ADDRESSES = _KEYS.test_addresses
SHARED_XPUB = _KEYS.shared


# Under pytest-xdist with --dist loadgroup (tests/run) tests are handed to the workers
# one by one, except that each of these modules runs whole on one worker: its
# module-scoped fixture is costly (a benchmark run, a browser, node batches). Listed
# here because the controller sees only test ids, and xdist's own xdist_group mark
# has no effect under pytest 9 (it rewrites an attribute pytest 9 no longer reads).
ONE_WORKER_MODULES = frozenset(
    {
        "tests/integration/test_benchmarks_smoke.py",
        "tests/integration/test_chain_backends.py",  # a daemon and a peer per backend
        "tests/integration/test_checkout_browser.py",
        "tests/integration/test_dashd_backend.py",  # one dashd peer and daemon, in order
        "tests/integration/test_galera.py",  # a 3-node cluster on fixed ports
        "tests/interop/test_wallet_dashcore_lib.py",
    }
)


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_make_scheduler(config, log):
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class OneByOne(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return module if module in ONE_WORKER_MODULES else nodeid

    return OneByOne(config, log)


def require(kind: str) -> bool:
    return os.environ.get(f"DASHPAY_REQUIRE_{kind}") == "1"


def mysql_url_or_skip() -> str:
    url = os.environ.get("DASHPAY_TEST_MYSQL_URL")
    if not url:
        if require("MYSQL"):
            pytest.fail("DASHPAY_REQUIRE_MYSQL=1 but DASHPAY_TEST_MYSQL_URL is not set")
        pytest.skip("no MariaDB test server (run tests/run, or tests/mariadb-server start)")
    return url


def _mysql_connect(url: str, database: str | None):
    import pymysql

    parts = urlsplit(url)
    query = dict(q.split("=", 1) for q in parts.query.split("&") if "=" in q)
    return pymysql.connect(
        host=parts.hostname or "localhost",
        port=parts.port or 3306,
        user=unquote(parts.username or ""),
        password=unquote(parts.password or ""),
        database=database,
        unix_socket=unquote(query["unix_socket"]) if "unix_socket" in query else None,
        autocommit=True,
    )


@contextlib.contextmanager
def fresh_mysql_database() -> Iterator[str]:
    """A fresh, empty MariaDB database, dropped afterwards."""
    base = mysql_url_or_skip()
    name = f"dashpay_t_{secrets.token_hex(6)}"
    conn = _mysql_connect(base, None)
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    finally:
        conn.close()
    parts = urlsplit(base)
    try:
        yield parts._replace(path=f"/{name}").geturl()
    finally:
        conn = _mysql_connect(base, None)
        try:
            with conn.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        finally:
            conn.close()


@dataclass(frozen=True)
class PrivateMysqlServer:
    """A MariaDB server of one test's own: tests/mariadb-server on a fresh state
    directory and a free port. ``run("stop")`` / ``run("start")`` take it down and back."""

    url: str  # its empty database `dashpay_test`
    env: dict[str, str]

    def run(self, command: str, timeout: float = 120) -> None:
        server = str(REPO / "tests" / "mariadb-server")
        subprocess.run([server, command], check=True, capture_output=True, env=self.env,
                       timeout=timeout)  # fmt: skip


@contextlib.contextmanager
def private_mysql_server() -> Iterator[PrivateMysqlServer]:
    """For a test that stops its database server: the shared one (``$DASHPAY_TEST_STATE``)
    serves every other test, under pytest-xdist the ones running at the same time too.
    Initialising and starting a server costs a few seconds."""
    mysql_url_or_skip()  # where the shared server is missing, so is this one
    import socket

    state = Path(tempfile.mkdtemp(prefix="dp-db-", dir="/tmp"))  # short: its socket path
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "DASHPAY_TEST_STATE": str(state), "DASHPAY_TEST_MYSQL_PORT": str(port)}
    server = PrivateMysqlServer("", env)
    try:
        server.run("start")
        url = subprocess.run(
            [str(REPO / "tests" / "mariadb-server"), "url"],
            check=True, capture_output=True, text=True, env=env,
        ).stdout.strip()  # fmt: skip
        yield PrivateMysqlServer(url, env)
    finally:
        with contextlib.suppress(subprocess.SubprocessError):
            server.run("stop")
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture
def mysql_database_url() -> Iterator[str]:
    """A fresh, empty MariaDB database for one test; dropped afterwards."""
    with fresh_mysql_database() as url:
        yield url


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A short directory path: Unix socket paths must stay under 108 bytes."""
    path = Path(tempfile.mkdtemp(prefix="dp-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory every user may enter (short_tmp and tmp_path are private to their
    owner), for checks made as another user such as the service's."""
    path = Path(tempfile.mkdtemp(prefix="dp-shared-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASHPAY_")}
    env.update({k: v for k, v in os.environ.items() if k.startswith("DASHPAY_TEST_")})
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("NOTIFY_SOCKET", None)
    env.pop("JOURNAL_STREAM", None)
    if extra:
        env.update(extra)
    return env


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    def json(self):
        """The answer on stdout; a failed command says its exit code and stderr (a
        JSONDecodeError on an empty stdout would hide why)."""
        assert self.stdout or self.code == 0, f"exit {self.code}: {self.stderr[-2000:]}"
        return json.loads(self.stdout)


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 30) -> CliResult:
    """Run `dashpay ARGS` as a real subprocess."""
    proc = subprocess.run(
        [sys.executable, "-m", "dashpay", *args],
        capture_output=True,
        text=True,
        env=cli_env(env),
        timeout=timeout,
        cwd=REPO,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def write_config(directory: Path, database_url: str, **sections: dict[str, object]) -> Path:
    """A config file for a test daemon; `sections` override/add TOML tables."""
    data: dict[str, dict[str, object]] = {
        "wallet": {"xpub": TEST_XPUB, "network": "mainnet"},
        "database": {"url": database_url},
        "control": {"socket": str(directory / "control.sock")},
        # Nothing listens on port 9 (discard) here: Insight is unreachable unless a test
        # starts a peer and overrides this.
        "insight": {"url": "http://127.0.0.1:9/insight-api"},
        # Tests never reach real price providers; price tests point these at their own
        # loopback servers.
        "prices.coingecko": {"url": "http://127.0.0.1:9"},
        "prices.kraken": {"url": "http://127.0.0.1:9"},
        "prices.coinbase": {"url": "http://127.0.0.1:9"},
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    lines = []
    for name, values in data.items():
        lines.append(f"[{name}]")
        for key, value in values.items():
            lines.append(f"{key} = {json.dumps(value)}")
        lines.append("")
    path = directory / "config.toml"
    path.write_text("\n".join(lines))
    return path


@dataclass
class DaemonProcess:
    config: Path
    socket: Path
    proc: subprocess.Popen
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    def cli(self, *args: str, timeout: float = 30) -> CliResult:
        return run_cli("--config", str(self.config), *args, env=self.env, timeout=timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"daemon did not stop on {sig}:\n{self.log()}") from None
        return self.proc.returncode


# Every daemon a test started: one a failing test left running is killed after it
# (a leaked daemon holds the MariaDB server's wallet lock and breaks later tests).
_STARTED: list[DaemonProcess] = []


@pytest.fixture(autouse=True)
def _no_leaked_daemons() -> Iterator[None]:
    before = len(_STARTED)  # daemons of wider-scoped fixtures are already counted
    yield
    for daemon in _STARTED[before:]:
        if daemon.proc.poll() is None:
            daemon.proc.kill()
            daemon.proc.wait()
    del _STARTED[before:]


def start_daemon(
    config: Path,
    *,
    env: dict[str, str] | None = None,
    args: tuple[str, ...] = (),
    wait: bool = True,
    ready: bool = True,
) -> DaemonProcess:
    directory = config.parent
    log_path = directory / f"daemon-{secrets.token_hex(3)}.log"
    log_file = log_path.open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "dashpay", "--config", str(config), "serve", *args],
        stdout=log_file,
        stderr=subprocess.STDOUT,
        env=cli_env(env),
        cwd=REPO,
    )
    log_file.close()
    import tomllib

    socket = Path(tomllib.loads(config.read_text())["control"]["socket"])
    daemon = DaemonProcess(config, socket, proc, log_path, env or {})
    _STARTED.append(daemon)
    if wait:
        try:
            wait_ready(daemon, ready=ready)
        except BaseException:
            daemon.stop(signal.SIGKILL)  # never leak a daemon holding locks
            raise
    return daemon


def wait_ready(daemon: DaemonProcess, timeout: float = 20, *, ready: bool = True) -> dict:
    """Wait until the daemon reports ready (or, with ready=False, answers at all)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if daemon.proc.poll() is not None:
            raise AssertionError(f"daemon exited with {daemon.proc.returncode}:\n{daemon.log()}")
        if daemon.socket.exists():
            last = daemon.cli("status", "--json")
            if last.code == 0 or (not ready and last.code == 1 and last.stdout):
                return last.json()
        time.sleep(0.05)
    raise AssertionError(f"daemon not ready after {timeout}s (last: {last}):\n{daemon.log()}")


def wait_receivers(daemon: DaemonProcess, timeout: float = 20) -> None:
    """Wait until the receiver commands are served. A daemon answers `status` before
    its receiver service exists (bootstrap step 5); until then they exit 5 ("not
    available yet"), which on a loaded machine outlasts `wait_ready(ready=False)`."""
    deadline = time.monotonic() + timeout
    while True:
        last = daemon.cli("receiver", "list", "--limit", "1", "--json")
        if last.code != 5:
            assert last.code == 0, last.stderr
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"receiver commands not served after {timeout}s: {last.stderr}")
        time.sleep(0.05)


@pytest.fixture(params=["sqlite", pytest.param("mysql", marks=pytest.mark.mysql)])
def database_url(request, short_tmp) -> str:
    """A fresh database URL for each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{short_tmp / 'dashpay.sqlite3'}"
    return request.getfixturevalue("mysql_database_url")


@pytest.fixture
def daemon(short_tmp, database_url) -> Iterator[DaemonProcess]:
    """A running `dashpay serve` on a fresh database (both backends), with no Insight
    server to watch: receivers work, the daemon stays "starting"."""
    config = write_config(short_tmp, database_url)
    proc = start_daemon(config, ready=False)
    try:
        wait_receivers(proc)
    except BaseException:
        proc.stop()
        raise
    yield proc
    proc.stop()


@pytest.fixture(scope="module", params=["sqlite", pytest.param("mysql", marks=pytest.mark.mysql)])
def shared_daemon(request) -> Iterator[DaemonProcess]:
    """Like ``daemon``, but one for the whole module per backend: for tests that read,
    or whose requests are refused, and so leave nothing a later test could trip on. Its
    wallet is SHARED_XPUB, so the module's own daemons on MariaDB are not held in
    standby by its wallet lock."""
    tmp = Path(tempfile.mkdtemp(prefix="dp-", dir="/tmp"))
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, tmp, ignore_errors=True)
        if request.param == "sqlite":
            url = f"sqlite:///{tmp / 'dashpay.sqlite3'}"
        else:
            url = stack.enter_context(fresh_mysql_database())
        wallet = {"xpub": SHARED_XPUB, "network": "mainnet"}
        proc = start_daemon(write_config(tmp, url, wallet=wallet), ready=False)
        stack.callback(proc.stop)
        wait_receivers(proc)
        yield proc


@contextlib.contextmanager
def serve_sandbox(short_tmp) -> Iterator[tuple[subprocess.Popen, dict[str, str]]]:
    """`dashpay serve --sandbox` with its state under short_tmp, until ready."""
    env = {"XDG_STATE_HOME": str(short_tmp / "state"), "HOME": str(short_tmp)}
    log = (short_tmp / "serve.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "dashpay", "serve", "--sandbox"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=cli_env(env),
        cwd=REPO,
    )
    try:
        deadline = time.monotonic() + 20
        while run_cli("status", env=env).code != 0:
            assert proc.poll() is None, (short_tmp / "serve.log").read_text()
            assert time.monotonic() < deadline, (short_tmp / "serve.log").read_text()
            time.sleep(0.1)
        yield proc, env
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(15)
        finally:
            proc.kill()


# -- a sandbox Insight peer living in the test process --------------------------------


class SandboxPeer:
    """The sandbox network served on a loopback port from a thread of the test process,
    so a daemon subprocess can be stopped and restarted against the same chain, and the
    server can be taken down and brought back (socket outage) while the chain lives on."""

    def __init__(self) -> None:
        import threading

        import trio

        self._trio = trio
        self._ready = threading.Event()
        self._thread = threading.Thread(target=trio.run, args=(self._main,), daemon=True)
        self.port: int | None = None
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("sandbox peer did not start")

    async def _main(self) -> None:
        trio = self._trio
        from dashpay.sandbox.network import SandboxNetwork

        self.token = trio.lowlevel.current_trio_token()
        self.network = SandboxNetwork(lock_delay=0.2)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(self.network.run)
            await self._start_server()
            self._ready.set()
            self._stop = trio.Event()
            await self._stop.wait()
            nursery.cancel_scope.cancel()

    async def _start_server(self) -> None:
        from functools import partial

        from dashpay.sandbox.server import serve_sandbox

        scope_box: list = []

        async def server(task_status):
            with self._trio.CancelScope() as scope:
                scope_box.append(scope)
                await serve_sandbox(self.network, port=self.port or 0, task_status=task_status)

        self.port = await self._nursery.start(partial(server))
        self._server_scope = scope_box[0]

    def _call(self, fn, *args):
        return self._trio.from_thread.run(fn, *args, trio_token=self.token)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/insight-api"

    def pay(self, address: str, duffs: int, *, lock: bool = True, silent: bool = False) -> str:
        async def go():
            return await self.network.pay([(address, duffs)], lock=lock, silent=silent)

        return self._call(go)["txid"]

    def pay_many(self, outputs: list[tuple[str, int]], *, lock: bool = True) -> str:
        async def go():
            return await self.network.pay(outputs, lock=lock)

        return self._call(go)["txid"]

    def mine(self, blocks: int = 1) -> list[str]:
        return self._call(self.network.mine, blocks)

    def lock(self, txid: str) -> None:
        self._call(self.network.lock, txid)

    def drop(self, txid: str) -> None:
        self._call(self.network.drop, txid)

    def server_down(self) -> None:
        async def go():
            self._server_scope.cancel()
            await self._trio.sleep(0.05)

        self._call(go)

    def server_up(self) -> None:
        self._call(self._start_server)

    def forge(self, name: str, txid: str, outputs: dict[str, int], *, txlock: bool = False) -> None:
        """Send subscribers a `tx`/`txlock` event that the chain does not back (a hostile
        or buggy Insight): REST knows nothing of it unless the chain has that txid."""
        payload = {
            "txid": txid,
            "valueOut": 0,
            "vout": [{address: duffs} for address, duffs in outputs.items()],
            "isRBF": False,
            "txlock": txlock,
        }

        async def go():
            self.network._publish(name, payload)

        self._call(go)

    def restart_empty(self) -> None:
        """An Insight restart that lost its index: the server goes away and comes back
        serving a fresh chain that knows none of the earlier transactions."""
        from dashpay.sandbox.network import SandboxNetwork

        self.server_down()

        async def go():
            self.network = SandboxNetwork(lock_delay=0.2)
            await self._nursery.start(self.network.run)
            await self._start_server()

        self._call(go)

    def close(self) -> None:
        async def go():
            self._stop.set()

        self._call(go)
        self._thread.join(10)


@pytest.fixture
def sandbox_peer() -> Iterator[SandboxPeer]:
    peer = SandboxPeer()
    yield peer
    peer.close()


WATCHING_DROP_AFTER = 2  # seconds


@pytest.fixture
def watching_daemon(short_tmp, database_url, sandbox_peer) -> Iterator[DaemonProcess]:
    """`dashpay serve` on a testnet wallet watching the in-test sandbox peer."""
    config = write_config(
        short_tmp,
        database_url,
        wallet={"xpub": TEST_XPUB, "network": "testnet"},
        insight={"url": sandbox_peer.url, "reconnect_initial": "0.1s", "reconnect_max": "0.5s"},
        # Short, so a drop is decided within a test (re-checked every second).
        receivers={"drop_after": f"{WATCHING_DROP_AFTER}s"},
    )
    proc = start_daemon(config)
    yield proc
    proc.stop()
