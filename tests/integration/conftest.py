"""Fixtures for the callback tests: a real HTTP server on 127.0.0.1 that records every
request and answers from a script (statuses, delays, Retry-After, hanging, huge or
dripping bodies), and migrated repositories on both database backends."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections import defaultdict, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from dashpay.config.database import parse_database_url
from dashpay.repository import open_repository
from dashpay.repository.base import Repository

# A handler that must wait (hang, drip) gives up after this long, so a test that fails
# half-way never leaves a thread behind for long.
MAX_HANDLER_SECONDS = 30.0
# serve_forever notices a shutdown request this often (the stdlib's 0.5 s would add half
# a second to every test).
SHUTDOWN_POLL_SECONDS = 0.02


@dataclass(frozen=True)
class Reply:
    """How the server answers one request."""

    status: int = 200
    body: bytes = b"ok"
    headers: tuple[tuple[str, str], ...] = ()
    delay: float = 0.0  # seconds before anything is sent
    hang: bool = False  # never answer
    huge: int = 0  # announce and stream this many body bytes (the client stops early)
    drip: float = 0.0  # send the body one byte every `drip` seconds


@dataclass
class Request:
    path: str
    headers: dict[str, str]  # names in lower case
    body: bytes
    at: float  # time.monotonic() when it arrived
    client_port: int

    @property
    def event(self) -> str:
        return self.headers.get("dashpay-event", "")

    @property
    def delivery(self) -> str:
        return self.headers.get("dashpay-delivery", "")


@dataclass
class CallbackServer:
    """A threaded HTTP/1.1 server (keep-alive) on a loopback port."""

    port: int = 0
    tls: ssl.SSLContext | None = None  # serve HTTPS with this context
    requests: list[Request] = field(default_factory=list)
    scripts: dict[str, deque[Reply]] = field(default_factory=lambda: defaultdict(deque))
    defaults: dict[str, Reply] = field(default_factory=dict)
    active: int = 0
    max_active: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    stopping: threading.Event = field(default_factory=threading.Event)

    def start(self) -> CallbackServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                path = self.path
                with server.lock:
                    server.requests.append(
                        Request(
                            path,
                            {k.lower(): v for k, v in self.headers.items()},
                            body,
                            time.monotonic(),
                            self.client_address[1],
                        )
                    )
                    script = server.scripts[path]
                    reply = script.popleft() if script else server.defaults.get(path, Reply())
                    server.active += 1
                    server.max_active = max(server.max_active, server.active)
                try:
                    server.answer(self, reply)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True
                finally:
                    with server.lock:
                        server.active -= 1

        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._httpd.daemon_threads = True
        if self.tls is not None:
            self._httpd.socket = self.tls.wrap_socket(self._httpd.socket, server_side=True)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(SHUTDOWN_POLL_SECONDS,), daemon=True
        )
        self._thread.start()
        return self

    def answer(self, handler: BaseHTTPRequestHandler, reply: Reply) -> None:
        if reply.delay:
            self.stopping.wait(reply.delay)
        if reply.hang:
            self.stopping.wait(MAX_HANDLER_SECONDS)
            handler.close_connection = True
            return
        handler.send_response(reply.status)
        for name, value in reply.headers:
            handler.send_header(name, value)
        size = reply.huge or (1_000_000 if reply.drip else len(reply.body))
        handler.send_header("Content-Length", str(size))
        handler.end_headers()
        if reply.huge:
            chunk = b"x" * 65536
            for _ in range(0, reply.huge, len(chunk)):
                handler.wfile.write(chunk)
        elif reply.drip:
            deadline = time.monotonic() + MAX_HANDLER_SECONDS
            while time.monotonic() < deadline and not self.stopping.is_set():
                handler.wfile.write(b"x")
                handler.wfile.flush()
                self.stopping.wait(reply.drip)
            handler.close_connection = True
        else:
            handler.wfile.write(reply.body)

    def stop(self) -> None:
        self.stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    def url(self, path: str = "/cb") -> str:
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def script(self, path: str, *replies: Reply) -> None:
        with self.lock:
            self.scripts[path].extend(replies)

    def always(self, path: str, reply: Reply) -> None:
        with self.lock:
            self.defaults[path] = reply

    def to(self, path: str) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if r.path == path]


@pytest.fixture
def http_server() -> Iterator[CallbackServer]:
    server = CallbackServer().start()
    yield server
    server.stop()


def free_port() -> int:
    """A loopback port with nothing listening on it (yet)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class TlsFiles:
    ca: Path  # the test CA's certificate (what a client trusts)
    cert: Path  # a server certificate for the name "localhost" only, signed by the CA
    key: Path


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A throw-away CA and a server certificate for "localhost", made with openssl."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    folder = tmp_path_factory.mktemp("tls")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=dashpay test CA")  # fmt: skip
    openssl("req", *ec, "-keyout", "leaf.key", "-out", "leaf.csr", "-subj", "/CN=localhost")
    (folder / "ext.cnf").write_text("subjectAltName=DNS:localhost\n")
    openssl("x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "leaf.pem", "-days", "2", "-extfile", "ext.cnf")  # fmt: skip
    return TlsFiles(folder / "ca.pem", folder / "leaf.pem", folder / "leaf.key")


@pytest.fixture
def https_server(tls_files: TlsFiles) -> Iterator[CallbackServer]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls_files.cert, tls_files.key)
    server = CallbackServer(tls=context).start()
    yield server
    server.stop()


@pytest.fixture
def outbox_repo(database_url: str) -> Iterator[Repository]:
    """A migrated repository on a fresh database, SQLite and MariaDB."""
    repo = open_repository(parse_database_url(database_url))
    repo.migrate()
    yield repo
    with contextlib.suppress(Exception):
        repo.close()


@pytest.fixture
def callback_daemon(short_tmp, database_url, sandbox_peer, http_server):
    """`dashpay serve` watching the sandbox peer, with fast callback retries; callbacks
    go wherever each test's receivers say (usually ``http_server``)."""
    from tests.conftest import TEST_XPUB, start_daemon, wait_ready, write_config

    config = write_config(
        short_tmp,
        database_url,
        wallet={"xpub": TEST_XPUB, "network": "testnet"},
        insight={"url": sandbox_peer.url, "reconnect_initial": "0.1s", "reconnect_max": "0.5s"},
        callbacks={"backoff_initial": "200ms", "backoff_max": "1s", "timeout": "2s"},
    )
    daemon = start_daemon(config, wait=False)
    try:
        wait_ready(daemon)
        yield daemon
    finally:  # also when it never became ready: no daemon outlives its test
        daemon.stop()


@pytest.fixture
def sock_path(short_tmp):
    """Where a test's control server listens (short: Unix socket paths are limited)."""
    return short_tmp / "control.sock"


class FakeDaemon:
    """A stand-in daemon: answers each JSON-RPC request on a Unix socket with what
    ``answer(request)`` returns (a dict with "result" or "error")."""

    def __init__(self, path: Path, answer) -> None:
        self.path = path
        self.answer = answer
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            with conn, conn.makefile("rb") as lines:
                line = lines.readline()
                if line:
                    request = json.loads(line)
                    reply = {"jsonrpc": "2.0", "id": request["id"], **self.answer(request)}
                    conn.sendall(json.dumps(reply).encode() + b"\n")

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def fake_daemon(short_tmp):
    daemons: list[FakeDaemon] = []

    def start(answer) -> Path:
        path = short_tmp / f"fake{len(daemons)}.sock"
        daemons.append(FakeDaemon(path, answer))
        return path

    yield start
    for daemon in daemons:
        daemon.close()
