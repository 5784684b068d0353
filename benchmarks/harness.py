"""What every scenario needs: the daemon as a real process, the benchmark peer, a
loopback callback receiver, databases, statistics and machine facts.

Measuring without disturbing: the daemon logs one line per outbox event right after
the transaction that wrote it commits (``dashpay.engine``: ``event id=... receiver=N
event=...``) and one line when it is ready. The harness reads the daemon's stderr
through a pipe in a thread and timestamps those lines as they arrive (a blocking read
wakes within microseconds), so "outbox row written" and "ready" are observed without
polling the daemon or its database. Counters the daemon keeps (``engine.events``) are
read with ``status`` over the control socket, only as often as needed.

Times are ``time.monotonic()`` (CLOCK_MONOTONIC): one clock for all processes of the
machine, so the peer's "frame written" and our "line seen" can be subtracted.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import platform
import re
import secrets
import selectors
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from dashpay.config.keys import PRICE_PROVIDERS
from dashpay.net.control_client import ControlClient

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


class BenchError(Exception):
    """A benchmark could not run (not a slow result: a broken setup)."""


# The dashpay tree the daemon and the CLI run from: this checkout, or another one given
# with --source (to measure a proposed change against the same benchmarks).
SOURCE = REPO


def use_source(path: Path) -> None:
    """Run daemons and CLI commands from the dashpay tree at ``path``."""
    global SOURCE
    path = path.resolve()
    if not (path / "dashpay" / "__init__.py").is_file():
        raise BenchError(f"{path} has no dashpay package (expected {path}/dashpay/__init__.py)")
    SOURCE = path


# A testnet account key (BIP44 m/44'/1'/0' of the seed bytes 64..127): public, no funds.
BENCH_XPUB = (
    "tpubDCzdRwpdZ4aN3nHBMvdPtB4sLhGbeDvjLy6BtyrEUJZGMr4Xb4KAKtM9AbhXNK6MxHiCpFbrQkx9kARYfrprdNMD"
    "DBjGDtkFqxh2uaNZWLE"
)
NETWORK = "testnet"
# The callback secret of benchmark daemons (config needs >= 16 characters).
CALLBACK_SECRET = "benchmark-secret-0123456789abcdef"
# Nothing listens on the discard port: a daemon pointed here never reaches Insight.
UNREACHABLE_INSIGHT = "http://127.0.0.1:9/insight-api"
# Database names the MariaDB test user may create and drop (tests/mariadb-server).
MYSQL_DATABASE_PREFIX = "dashpay_t_bench_"
# Packages whose versions go into every result file.
PACKAGES = (
    "dashpay",
    "trio",
    "wsproto",
    "h11",
    "httpx",
    "httpcore",
    "PyMySQL",
    "bip-utils",
    "coincurve",
    "typer",
    "rich",
)
# Pause after start-up before measuring, so the start-up work (the first ticks, garbage
# collection of the loaded rows) does not count; quick runs only prove the scripts work.
SETTLE_SECONDS = 0.5
QUICK_SETTLE_SECONDS = 0.05
# How long a daemon gets to stop on SIGTERM before it is killed.
STOP_TIMEOUT = 20.0

_STAMP = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) ")
_EVENT_LINE = re.compile(r" event id=(\S+) receiver=(\d+) event=(\S+)")
_READY_LINE = re.compile(r" ready receivers=(\d+) rescan_seconds=([0-9.]+)")


# -- statistics ---------------------------------------------------------------------------


def median(values: list[float]) -> float | None:
    ordered = sorted(v for v in values if v is not None)
    if not ordered:
        return None
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2


def percentile(values: list[float], p: float) -> float | None:
    """The p-th percentile (0..100), linear between closest ranks."""
    ordered = sorted(values)
    if not ordered:
        return None
    rank = (len(ordered) - 1) * p / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median_of_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per numeric field, the median over the runs that have it."""
    keys: list[str] = []
    for run in runs:
        keys += [k for k, v in run.items() if k not in keys and _is_number(v)]
    return {k: _round(median([r[k] for r in runs if _is_number(r.get(k))])) for k in keys}


def ratio(numerator: float | None, denominator: float | None, digits: int = 3) -> float | None:
    """``numerator / denominator`` rounded, or None when either is missing or the
    denominator is 0 (a CPU figure from /proc moves in 10 ms ticks: a quick run's can
    be 0)."""
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, digits)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _round(value: float | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, int) or abs(value) >= 100:
        return round(value, 1)
    return round(value, 4)


# -- machine facts --------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    info: dict[str, Any] = {
        "cpu_model": cpu,
        "cores": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "sqlite": sqlite3.sqlite_version,
        "packages": versions,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "env": {
            "PYTHONDONTWRITEBYTECODE": os.environ.get("PYTHONDONTWRITEBYTECODE"),
        },
    }
    info.update(_git_facts())
    if SOURCE != REPO:
        info["dashpay_source"] = str(SOURCE)
    return info


def _memory_gib() -> float | None:
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    return None


def _git_facts() -> dict[str, Any]:
    """The commit measured, and whether the tree had changes (read-only git calls)."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"git_commit": commit or None, "git_dirty": bool(dirty)}


def settle(quick: bool) -> None:
    time.sleep(QUICK_SETTLE_SECONDS if quick else SETTLE_SECONDS)


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# -- processes ------------------------------------------------------------------------------


def proc_rss_bytes(pid: int) -> int | None:
    """Resident set size from /proc (VmRSS)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return None


def proc_cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process, from /proc/<pid>/stat."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Our environment without anything that would change how dashpay runs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASHPAY_")}
    for name in ("NOTIFY_SOCKET", "JOURNAL_STREAM", "WATCHDOG_USEC", "PYTHONPYCACHEPREFIX"):
        env.pop(name, None)
    env["PYTHONUNBUFFERED"] = "1"
    if SOURCE != REPO:
        env["PYTHONPATH"] = os.pathsep.join([str(SOURCE), str(REPO)])
    if extra:
        env.update(extra)
    return env


@contextlib.contextmanager
def bytecode_prefix() -> Iterator[tuple[dict[str, str], dict[str, str]]]:
    """A private PYTHONPYCACHEPREFIX, as a packaged install has its bytecode: yields the
    environment that writes bytecode there (start the daemon once with it) and the one
    that only reads it. This environment sets PYTHONDONTWRITEBYTECODE=1 and the source
    tree has no bytecode, so a daemon started as is compiles dashpay's modules (time
    and memory a packaged install does not spend); the source tree is left untouched."""
    with tempfile.TemporaryDirectory(prefix="dpb-pyc-") as prefix:
        # An empty PYTHONDONTWRITEBYTECODE is unset, for Python.
        writing = {"PYTHONPYCACHEPREFIX": prefix, "PYTHONDONTWRITEBYTECODE": ""}
        subprocess.run(
            [PYTHON, "-m", "compileall", "-q", str(SOURCE / "dashpay")],
            env=child_env(writing),
            check=True,
            capture_output=True,
            timeout=300,
        )
        yield writing, {"PYTHONPYCACHEPREFIX": prefix, "PYTHONDONTWRITEBYTECODE": "1"}


@contextlib.contextmanager
def workdir() -> Iterator[Path]:
    """A short directory (Unix socket paths must stay under 108 bytes), removed after."""
    path = Path(tempfile.mkdtemp(prefix="dpb-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def write_config(
    directory: Path,
    database_url: str,
    insight_url: str,
    *,
    socket_url: str | None = None,
    callback_url: str | None = None,
    log_level: str = "info",
    http: bool = False,
    public_url: str | None = None,
    extra: dict[str, dict[str, Any]] | None = None,
) -> Path:
    """A daemon config for one benchmark run (``http``: the HTTP API on a free
    loopback port; `status` names it under ``http.urls``; ``public_url`` turns the
    checkout page on)."""
    sections: dict[str, dict[str, Any]] = {
        "wallet": {"xpub": BENCH_XPUB, "network": NETWORK},
        "database": {"url": database_url},
        "control": {"socket": str(directory / "control.sock")},
        "insight": {"url": insight_url, "reconnect_initial": "0.2s", "reconnect_max": "2s"},
        "callbacks": {"secret": CALLBACK_SECRET},
        "logging": {"level": log_level},
        # Benchmarks stay on loopback: the price providers' default hosts would be looked
        # up in DNS at each refresh. Nothing listens on port 9 (discard).
        **{f"prices.{name}": {"url": "http://127.0.0.1:9"} for name in PRICE_PROVIDERS},
    }
    if socket_url is not None:
        sections["insight"]["socket_url"] = socket_url
    if callback_url is not None:
        sections["callbacks"]["default_url"] = callback_url
    if http:
        sections["http"] = {"listen": ["127.0.0.1:0"]}
        if public_url is not None:
            sections["http"]["public_url"] = public_url
    for name, values in (extra or {}).items():  # e.g. [chain] and [blockbook]
        sections.setdefault(name, {}).update(values)
    lines = []
    for name, values in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in values.items()]
        lines.append("")
    path = directory / "config.toml"
    path.write_text("\n".join(lines))
    return path


def run_cli(config: Path, *args: str, timeout: float = 120.0) -> str:
    """`dashpay --config CONFIG ARGS` as a process; its stdout, or BenchError."""
    proc = subprocess.run(
        [PYTHON, "-m", "dashpay", "--config", str(config), *args],
        capture_output=True,
        text=True,
        env=child_env(),
        cwd=SOURCE,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise BenchError(f"dashpay {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
    return proc.stdout


@dataclass
class SeenEvent:
    at: float  # time.monotonic() when the log line arrived
    event_id: str
    receiver_id: int
    event: str
    # When the daemon wrote the line (its own stamp, epoch seconds to the ms): unlike
    # ``at``, not delayed by this process's reader thread waiting for a CPU or the GIL.
    logged_at: float | None = None


def _logged_at(line: str) -> float | None:
    """The epoch time of a daemon log line's ``<local time>,<ms>`` stamp."""
    match = _STAMP.match(line)
    if match is None:
        return None
    second = time.mktime(time.strptime(match[1], "%Y-%m-%d %H:%M:%S"))
    return second + int(match[2]) / 1000


@dataclass
class DaemonProcess:
    """`dashpay serve` as a child process, its stderr read line by line."""

    config: Path
    socket: Path
    log_path: Path
    proc: subprocess.Popen | None = None
    started_at: float = 0.0  # time.monotonic() just before the process was spawned
    ready_at: float | None = None
    ready_line: str | None = None
    events: list[SeenEvent] = field(default_factory=list)
    first_event: dict[int, SeenEvent] = field(default_factory=dict)  # by receiver id
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _reader: threading.Thread | None = None
    _client: ControlClient | None = None

    @classmethod
    def start(cls, config: Path, *, env: dict[str, str] | None = None) -> DaemonProcess:
        directory = config.parent
        daemon = cls(config, directory / "control.sock", directory / "daemon.log")
        daemon.started_at = time.monotonic()
        daemon.proc = subprocess.Popen(
            [PYTHON, "-m", "dashpay", "--config", str(config), "serve"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=child_env(env),
            cwd=SOURCE,
        )
        daemon._reader = threading.Thread(target=daemon._read_log, daemon=True)
        daemon._reader.start()
        return daemon

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def _read_log(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        with self.log_path.open("wb") as log:
            for raw in self.proc.stderr:
                now = time.monotonic()
                log.write(raw)
                line = raw.decode("utf-8", "replace")
                match = _EVENT_LINE.search(line)
                if match is not None:
                    seen = SeenEvent(now, match[1], int(match[2]), match[3], _logged_at(line))
                    with self._cond:
                        self.events.append(seen)
                        self.first_event.setdefault(seen.receiver_id, seen)
                        self._cond.notify_all()
                    continue
                if self.ready_at is None and _READY_LINE.search(line):
                    with self._cond:
                        self.ready_at = now
                        self.ready_line = line.strip()
                        self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def log_tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def _check_alive(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise BenchError(f"the daemon exited with {self.proc.returncode}:\n{self.log_tail()}")

    def wait_for(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        """Wait until ``predicate()`` (checked under the log lock) holds."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BenchError(f"timed out after {timeout:g}s waiting for {what}")
                self._cond.wait(min(left, 0.5))
                if not predicate():
                    self._check_alive()

    def wait_ready(self, timeout: float) -> float:
        """Seconds from spawning the process to its "ready" line."""
        self.wait_for(lambda: self.ready_at is not None, timeout, "the daemon to be ready")
        assert self.ready_at is not None
        return self.ready_at - self.started_at

    def wait_control(self, timeout: float = 60.0) -> None:
        """Wait until the control socket answers `status` (the daemon may be starting)."""
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive()
            if self.socket.exists():
                with contextlib.suppress(OSError, TimeoutError, Exception):
                    self.status()
                    return
            if time.monotonic() > deadline:
                raise BenchError(f"the control socket did not answer in {timeout:g}s")
            time.sleep(0.05)

    def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        if self._client is None:
            self._client = ControlClient(self.socket, timeout=120.0)
        return self._client.call(method, params or {})

    def status(self) -> dict[str, Any]:
        return self.call("status")

    def event_count(self, receiver_ids: set[int] | None = None, event: str | None = None) -> int:
        with self._cond:
            return sum(
                1
                for e in self.events
                if (receiver_ids is None or e.receiver_id in receiver_ids)
                and (event is None or e.event == event)
            )

    def rss_bytes(self) -> int | None:
        return proc_rss_bytes(self.pid)

    def cpu_seconds(self) -> float | None:
        return proc_cpu_seconds(self.pid)

    def stop(self) -> int | None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._reader is not None:
            self._reader.join(5)
        return self.proc.returncode


# -- the peer -------------------------------------------------------------------------------


class Peer:
    """A benchmark peer (benchmarks/peer.py): ours as a child process, or an external
    one given by --insight-url (its /bench API must be at the same origin)."""

    def __init__(self, insight_url: str, proc: subprocess.Popen | None = None) -> None:
        parts = urlsplit(insight_url)
        if parts.hostname is None:
            raise BenchError(f"--insight-url {insight_url!r} has no host")
        self.insight_url = insight_url.rstrip("/")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.proc = proc
        self._lock = threading.Lock()
        self._conn: http.client.HTTPConnection | None = None

    @classmethod
    def spawn(cls) -> Peer:
        proc = subprocess.Popen(
            [PYTHON, "-m", "benchmarks.peer", "--port", "0"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=None,
            env=child_env(),
            cwd=REPO,
            text=True,
        )
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if not line.startswith("PORT "):
            proc.kill()
            raise BenchError(f"the benchmark peer did not start (said {line!r})")
        return cls(f"http://127.0.0.1:{int(line.split()[1])}/insight-api", proc)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def request(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        with self._lock:
            for attempt in (1, 2):
                if self._conn is None:
                    self._conn = http.client.HTTPConnection(self.host, self.port, timeout=120)
                try:
                    self._conn.request(method, path, body=data)
                    response = self._conn.getresponse()
                    payload = response.read()
                    break
                except (OSError, http.client.HTTPException):
                    self._conn.close()
                    self._conn = None
                    if attempt == 2:
                        raise
        if response.status != 200:
            raise BenchError(f"peer {method} {path}: {response.status} {payload[:300]!r}")
        return json.loads(payload)

    def info(self) -> dict[str, Any]:
        return self.request("GET", "/bench/info")

    def flood(self, count: int, outputs: int = 2) -> dict[str, Any]:
        return self.request("POST", "/bench/flood", {"count": count, "outputs": outputs})

    def pay(self, payments: list[tuple[str, int]]) -> dict[str, Any]:
        return self.request("POST", "/bench/pay", {"payments": [list(p) for p in payments]})

    def job(self, job_id: int) -> dict[str, Any]:
        return self.request("GET", f"/bench/job/{job_id}")

    def wait_subscribed(self, count: int = 1, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while self.info()["subscribed"] < count:
            if time.monotonic() > deadline:
                raise BenchError(f"no daemon subscribed to the peer within {timeout:g}s")
            time.sleep(0.05)

    def wait_job_written(self, job_id: int, timeout: float) -> dict[str, Any]:
        """The job once every subscriber has been sent all of it."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if not job["deliveries"]:
                raise BenchError("no daemon was subscribed when the job started")
            if all(d["done"] is not None for d in job["deliveries"]):
                errors = [d["error"] for d in job["deliveries"] if d["error"]]
                if errors:
                    raise BenchError(f"the peer could not write job {job_id}: {errors[0]}")
                return job
            if time.monotonic() > deadline:
                raise BenchError(f"the peer did not write job {job_id} within {timeout:g}s")
            time.sleep(0.02)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@contextlib.contextmanager
def open_peer(insight_url: str | None) -> Iterator[Peer]:
    peer = Peer(insight_url) if insight_url else Peer.spawn()
    try:
        yield peer
    finally:
        peer.close()


# -- callbacks ------------------------------------------------------------------------------


@dataclass
class Callback:
    at: float  # time.monotonic() when the request arrived
    receiver_id: int | None
    event: str
    delivery: str  # Dashpay-Delivery: the event id, the same on every redelivery
    client_port: int  # which connection it came on


class CallbackSink:
    """A loopback HTTP/1.1 server that answers 200 to every POST (keep-alive) and notes
    when each callback arrived.

    One thread with a selector serves every connection, and each answer leaves in one
    write with TCP_NODELAY. The stdlib's threaded ``http.server`` was the bottleneck of
    the record scenario: it writes the status line and the body separately, so Nagle's
    algorithm holds the body until the client's delayed ACK (~40 ms) and 16 connections
    top out near 350 requests/s; its header parsing and a thread per connection also
    cost more CPU than the daemon's side of the exchange."""

    ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    MAX_HEAD = 64 * 1024

    def __init__(self) -> None:
        self.received: list[Callback] = []
        self.first: dict[int, Callback] = {}  # by receiver id
        self._cond = threading.Condition()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self._listener.setblocking(False)
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/callback"
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ, None)
        self._closing = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        buffers: dict[socket.socket, bytearray] = {}
        while not self._closing:
            for key, _ in self._selector.select(0.05):
                if key.data is None:
                    self._accept(buffers)
                    continue
                conn: socket.socket = key.fileobj  # type: ignore[assignment]
                try:
                    data = conn.recv(262144)
                except OSError:
                    data = b""
                if not data:
                    self._drop(conn, buffers)
                    continue
                buffer = buffers[conn]
                buffer += data
                if not self._answer(conn, buffer):
                    self._drop(conn, buffers)
        for conn in list(buffers):
            self._drop(conn, buffers)

    def _accept(self, buffers: dict[socket.socket, bytearray]) -> None:
        with contextlib.suppress(BlockingIOError):
            while True:
                conn, _ = self._listener.accept()
                conn.setblocking(True)  # answers are tiny: a send never blocks for long
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                buffers[conn] = bytearray()
                self._selector.register(conn, selectors.EVENT_READ, True)

    def _drop(self, conn: socket.socket, buffers: dict[socket.socket, bytearray]) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(conn)
        buffers.pop(conn, None)
        conn.close()

    def _answer(self, conn: socket.socket, buffer: bytearray) -> bool:
        """Answer every complete request in ``buffer``; False to close the connection."""
        answers = 0
        now = time.monotonic()
        arrived: list[Callback] = []
        while True:
            head_end = buffer.find(b"\r\n\r\n")
            if head_end < 0:
                if len(buffer) > self.MAX_HEAD:
                    return False
                break
            headers = {}
            for line in bytes(buffer[:head_end]).split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                headers[name.strip().lower()] = value.strip()
            try:
                length = int(headers.get(b"content-length", b"0"))
            except ValueError:
                return False
            if len(buffer) < head_end + 4 + length:
                break
            body = bytes(buffer[head_end + 4 : head_end + 4 + length])
            del buffer[: head_end + 4 + length]
            receiver_id = None
            with contextlib.suppress(ValueError, TypeError, KeyError):
                receiver_id = int(json.loads(body)["receiver_id"])
            arrived.append(
                Callback(
                    now,
                    receiver_id,
                    headers.get(b"dashpay-event", b"").decode("latin-1"),
                    headers.get(b"dashpay-delivery", b"").decode("latin-1"),
                    conn.getpeername()[1],
                )
            )
            answers += 1
        if answers:
            try:
                conn.sendall(self.ANSWER * answers)
            except OSError:
                return False
            with self._cond:
                for callback in arrived:
                    self.received.append(callback)
                    if callback.receiver_id is not None:
                        self.first.setdefault(callback.receiver_id, callback)
                self._cond.notify_all()
        return True

    def count(self, receiver_ids: set[int] | None = None) -> int:
        with self._cond:
            return sum(
                1 for c in self.received if receiver_ids is None or c.receiver_id in receiver_ids
            )

    def redeliveries(self) -> int:
        """Callbacks received more than once (same Dashpay-Delivery id)."""
        with self._cond:
            return len(self.received) - len({c.delivery for c in self.received})

    def wait_count(self, count: int, timeout: float, receiver_ids: set[int] | None = None) -> bool:
        return self.wait_for(lambda: self.count(receiver_ids) >= count, timeout)

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``predicate()`` (checked under the lock) holds; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.5))
        return True

    def close(self) -> None:
        self._closing = True
        self._thread.join(5)
        self._selector.close()
        self._listener.close()


@contextlib.contextmanager
def floor_server(
    module: str, *args: str, env: dict[str, str] | None = None
) -> Iterator[tuple[str, int]]:
    """``python -m <module> args...``, a floor server (``benchmarks/*_floor.py``, serving
    until its stdin closes): its first line of stdout and its pid; stopped on exit
    (stdin closed, killed after 10 s)."""
    proc = subprocess.Popen(
        [PYTHON, "-m", module, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=child_env() if env is None else env,
        cwd=REPO,
    )
    try:
        assert proc.stdout is not None
        yield proc.stdout.readline().decode().strip(), proc.pid
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- databases ------------------------------------------------------------------------------


def sqlite_url(directory: Path) -> str:
    return f"sqlite:///{directory / 'dashpay.sqlite3'}"


def mysql_server_url(explicit: str | None) -> str | None:
    """The MariaDB server to use: --mysql-url, $DASHPAY_TEST_MYSQL_URL, or the test
    server of tests/mariadb-server if it is running."""
    if explicit:
        return explicit
    env = os.environ.get("DASHPAY_TEST_MYSQL_URL")
    if env:
        return env
    script = REPO / "tests" / "mariadb-server"
    try:
        if subprocess.run([str(script), "status"], capture_output=True, timeout=20).returncode:
            return None
        url = subprocess.run([str(script), "url"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return url.stdout.strip() or None


def mysql_connect(url: str, database: str | None = None):
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
def mysql_database(server_url: str) -> Iterator[str]:
    """A fresh, empty database on the server for one run; dropped afterwards."""
    name = MYSQL_DATABASE_PREFIX + secrets.token_hex(5)
    conn = mysql_connect(server_url)
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
            cur.execute("SELECT VERSION(), @@innodb_flush_log_at_trx_commit")
            version, flush = cur.fetchone()
            # 1 = every commit synced to disk (durable, what production runs); 2 = to
            # the OS only, which flatters commit rates.
            version = f"{version} (innodb_flush_log_at_trx_commit={flush})"
    finally:
        conn.close()
    MYSQL_VERSIONS.add(version)
    try:
        yield urlsplit(server_url)._replace(path=f"/{name}").geturl()
    finally:
        conn = mysql_connect(server_url)
        try:
            with conn.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        finally:
            conn.close()


MYSQL_VERSIONS: set[str] = set()


@contextlib.contextmanager
def database(backend: str, directory: Path, mysql_url: str | None) -> Iterator[str]:
    if backend == "sqlite":
        yield sqlite_url(directory)
    elif backend == "mysql":
        if mysql_url is None:
            raise BenchError("no MariaDB server (start tests/mariadb-server or pass --mysql-url)")
        with mysql_database(mysql_url) as url:
            yield url
    else:
        raise BenchError(f"unknown backend {backend!r}")


def query_one(database_url: str, sql: str) -> tuple:
    """One row of a read-only query against the benchmark's database."""
    if database_url.startswith("sqlite:"):
        path = database_url.removeprefix("sqlite:///")
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return conn.execute(sql).fetchone()
        finally:
            conn.close()
    parts = urlsplit(database_url)
    conn = mysql_connect(parts._replace(path="").geturl(), parts.path.strip("/"))
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchone()
    finally:
        conn.close()


class FloorConnection:
    """A connection of a bare floor loop to the benchmark's database, with the daemon's
    settings (SQLite: synchronous=NORMAL, foreign keys on; WAL is the file's own). SQL
    is written with ``?`` marks on both backends; ``begin`` is the statement that opens
    a write transaction (SQLite takes its write lock at once, as the daemon does)."""

    def __init__(self, database_url: str) -> None:
        self.sqlite = database_url.startswith("sqlite:")
        if self.sqlite:
            self._conn: Any = sqlite3.connect(
                database_url.removeprefix("sqlite:///"), isolation_level=None
            )
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute("PRAGMA foreign_keys=ON")
            self._cursor: Any = None
            self.begin = "BEGIN IMMEDIATE"
        else:
            parts = urlsplit(database_url)
            self._conn = mysql_connect(parts._replace(path="").geturl(), parts.path.strip("/"))
            self._cursor = self._conn.cursor()
            self.begin = "BEGIN"

    def execute(self, sql: str, params: Any = ()) -> Any:
        """Run one statement; a cursor to fetch from."""
        if self._cursor is None:
            return self._conn.execute(sql, params)
        self._cursor.execute(sql.replace("?", "%s"), params)
        return self._cursor

    def executemany(self, sql: str, rows: list[tuple]) -> None:
        if self._cursor is None:
            self._conn.executemany(sql, rows)
        else:
            self._cursor.executemany(sql.replace("?", "%s"), rows)

    def close(self) -> None:
        self._conn.close()
