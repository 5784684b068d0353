"""The HTTP API of a real daemon, driven with httpx and with curl: one sandbox daemon
for the module (`dashpay serve --sandbox`, whose HTTP port is a free loopback port),
plus a TLS daemon for the HTTPS test."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from openapi_spec_validator import validate

from tests.conftest import run_cli, serve_sandbox, start_daemon, write_config


@dataclass
class Sandbox:
    url: str
    env: dict[str, str]
    proc: subprocess.Popen
    log: Path

    def cli(self, *args: str) -> dict:
        result = run_cli(*args, "--json", env=self.env)
        assert result.code == 0, result.stderr
        return result.json()


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    tmp = Path(tempfile.mkdtemp(prefix="dph-", dir="/tmp"))
    try:
        with serve_sandbox(tmp) as (proc, env):
            urls = run_cli("status", "--json", env=env).json()["http"]["urls"]
            assert len(urls) == 1 and urls[0].startswith("http://127.0.0.1:"), urls
            log = tmp / "serve.log"
            assert f"http API listening url={urls[0]}" in log.read_text()
            yield Sandbox(urls[0], env, proc, log)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def curl(*args: str) -> tuple[int, str]:
    """(HTTP status, body) of a curl subprocess."""
    proc = subprocess.run(
        ["curl", "-sS", "--max-time", "10", "-o", "-", "-w", "\n%{http_code}", *args],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert proc.returncode == 0, proc.stderr
    body, _, code = proc.stdout.rpartition("\n")
    return int(code), body


pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")


def test_health_ready_and_openapi_over_the_wire(sandbox: Sandbox):
    assert httpx.get(f"{sandbox.url}/health").json() == {"status": "ok"}
    ready = httpx.get(f"{sandbox.url}/ready")
    assert ready.status_code == 200 and ready.json()["state"] == "ready"
    code, body = curl(f"{sandbox.url}/openapi.json")
    assert code == 200
    document = json.loads(body)
    validate(document)
    assert "/v1/receivers" in document["paths"]
    assert not any("sandbox" in path for path in document["paths"])  # not on HTTP
    docs = httpx.get(f"{sandbox.url}/docs")
    assert docs.headers["content-type"].startswith("text/html")
    assert "/v1/receivers/{receiver_id}/cancel" in docs.text


def test_unknown_paths_methods_and_missing_keys(sandbox: Sandbox):
    code, body = curl(f"{sandbox.url}/v1/nowhere")
    assert code == 404 and json.loads(body)["error"]["kind"] == "not_found"
    code, body = curl("-X", "DELETE", f"{sandbox.url}/v1/receivers")
    assert code == 405 and json.loads(body)["error"]["kind"] == "method_not_allowed"
    code, body = curl("-X", "POST", "-d", '{"amount": "1"}', f"{sandbox.url}/v1/receivers")
    assert code == 401 and json.loads(body)["error"]["kind"] == "unauthorized"
    code, body = curl("-H", "Authorization: Bearer nope", f"{sandbox.url}/v1/receivers")
    assert code == 401
    assert sandbox.cli("receiver", "list")["receivers"] == []  # nothing was created


def _idle_connections(url: str, count: int) -> list[socket.socket]:
    parts = urlsplit(url)
    out = []
    for _ in range(count):
        out.append(socket.create_connection((parts.hostname, parts.port), timeout=5))
    return out


def test_idle_and_slow_clients_do_not_delay_others(sandbox: Sandbox):
    parts = urlsplit(sandbox.url)
    idle = _idle_connections(sandbox.url, 300)
    # A slowloris head (never finished) and a slow body (a few bytes of a large one).
    slow_head = socket.create_connection((parts.hostname, parts.port))
    slow_head.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-A: ")
    slow_body = socket.create_connection((parts.hostname, parts.port))
    slow_body.sendall(
        b'POST /v1/receivers HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{"amo'
    )
    try:
        with httpx.Client(base_url=sandbox.url) as http:
            started = time.monotonic()
            for _ in range(20):
                assert http.get("/health").status_code == 200
            elapsed = time.monotonic() - started
        assert elapsed < 2.0, f"20 requests took {elapsed:.2f}s beside 300 idle connections"
        # The engine is not delayed: a receiver is created over the control socket.
        started = time.monotonic()
        created = sandbox.cli("receiver", "new", "--amount", "0.1")
        assert created["status"] == "pending"
        assert time.monotonic() - started < 5
        # The slowloris head is closed once idle_timeout (5 s) passes, not kept forever.
        slow_head.settimeout(10)
        assert slow_head.recv(1024) == b""
    finally:
        for sock in [*idle, slow_head, slow_body]:
            sock.close()


@pytest.fixture(scope="module")
def tls_daemon() -> Iterator[tuple[str, Path]]:
    if shutil.which("openssl") is None:
        pytest.skip("needs openssl")
    tmp = Path(tempfile.mkdtemp(prefix="dpt-", dir="/tmp"))
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-keyout", str(tmp / "key.pem"), "-out", str(tmp / "cert.pem"),
            "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    config = write_config(
        tmp,
        f"sqlite:///{tmp / 'dashpay.sqlite3'}",
        http={"listen": ["127.0.0.1:0"], "tls_cert": "cert.pem", "tls_key": "key.pem"},
    )
    daemon = start_daemon(config, ready=False)
    try:
        urls = daemon.cli("status", "--json").json()["http"]["urls"]
        yield urls[0], tmp / "cert.pem"
    finally:
        daemon.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def test_tls_with_a_self_signed_certificate(tls_daemon):
    url, cert = tls_daemon
    assert url.startswith("https://127.0.0.1:")
    r = httpx.get(f"{url}/health", verify=ssl.create_default_context(cafile=str(cert)))
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    # No Insight here: the daemon is starting, and /ready says so with a 503.
    code, body = curl("--cacert", str(cert), f"{url}/ready")
    assert code == 503 and json.loads(body)["state"] == "starting"
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/health")  # not trusted without the certificate
    with contextlib.suppress(httpx.HTTPError):
        plain = httpx.get(url.replace("https:", "http:") + "/health", timeout=3)
        assert plain.status_code != 200
