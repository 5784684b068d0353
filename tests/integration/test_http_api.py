"""The HTTP API of a real daemon, driven with httpx and with curl: one sandbox daemon
for the module (`dashpay serve --sandbox`, whose HTTP port is a free loopback port),
plus a TLS daemon for the HTTPS test."""

from __future__ import annotations

import contextlib
import json
import resource
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from urllib.parse import urlencode, urlsplit

import httpx
import pytest
from openapi_spec_validator import validate
from prometheus_client.parser import text_string_to_metric_families

from dashpay.api.seed import CREATE_FIELDS, RECEIVER_FIELDS
from dashpay.config.paths import sandbox_socket
from dashpay.net.control_client import ControlClient
from dashpay.wire.prometheus import CONTENT_TYPE as METRICS_CONTENT_TYPE
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


IDLE_CONNECTIONS = 1000
# The bounds while they are held (the daemon's idle_timeout, 5 s, closes them after),
# loose enough for a loaded 2-core machine, tight enough that a server serving
# connections in turn (or polling them) would fail them: a normal request's median
# within REQUEST_SLACK of the median before the connections were opened, each within
# REQUEST_BOUND (HTTP, and a create over the control socket); a payment's first
# callback at the shop within CALLBACK_BOUND of `sandbox.pay` returning and at most
# CALLBACK_SLACK later than the same payment took before.
REQUEST_SLACK = 0.05
REQUEST_BOUND = 1.0
CALLBACK_BOUND = 3.0
CALLBACK_SLACK = 1.0


def _enough_open_files(count: int) -> None:
    """Raise this process's soft open-file limit to the hard one (1,000 sockets)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft != resource.RLIM_INFINITY and soft < count + 200:
        pytest.skip(f"the open-file limit ({soft}) is too low for {count} connections")


def _idle_connections(url: str, count: int) -> list[socket.socket]:
    parts = urlsplit(url)
    out = []
    for _ in range(count):
        out.append(socket.create_connection((parts.hostname, parts.port), timeout=5))
    return out


def _still_open(sock: socket.socket) -> bool:
    """The server has not closed ``sock`` (nothing to read, no end of file)."""
    sock.setblocking(False)
    try:
        return sock.recv(1, socket.MSG_DONTWAIT) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


def _paid_callback_seconds(http: httpx.Client, control: ControlClient, server, path: str) -> float:
    """Seconds from `sandbox.pay` (over the control socket: no CLI start-up in the
    figure) returning to the first callback of that receiver reaching the shop."""
    r = http.post("/v1/receivers", json={"amount": "0.2", "callback_url": server.url(path)})
    assert r.status_code == 200, r.text
    control.call("sandbox.pay", {"address": r.json()["address"], "amount": "0.2"})
    returned = time.monotonic()
    deadline = returned + 15
    while not server.to(path):
        assert time.monotonic() < deadline, "no callback within 15 s"
        time.sleep(0.01)
    return server.to(path)[0].at - returned


def _timed_gets(http: httpx.Client, count: int) -> list[float]:
    times = []
    for _ in range(count):
        started = time.monotonic()
        assert http.get("/health").status_code == 200
        times.append(time.monotonic() - started)
    return times


def test_idle_and_slow_clients_do_not_delay_others(sandbox: Sandbox, http_server):
    _enough_open_files(IDLE_CONNECTIONS)
    parts = urlsplit(sandbox.url)
    key = make_key(sandbox, "receivers:write")
    auth = {"Authorization": f"Bearer {key}"}
    with (
        httpx.Client(base_url=sandbox.url, headers=auth) as http,
        ControlClient(sandbox_socket(sandbox.env)) as control,
    ):
        gets_before = _timed_gets(http, 20)
        before = _paid_callback_seconds(http, control, http_server, "/before")
        idle = _idle_connections(sandbox.url, IDLE_CONNECTIONS)
        opened = time.monotonic()
        # A slowloris head (never finished) and a slow body (a few bytes of a large one).
        slow_head = socket.create_connection((parts.hostname, parts.port))
        slow_head.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-A: ")
        slow_body = socket.create_connection((parts.hostname, parts.port))
        slow_body.sendall(
            b'POST /v1/receivers HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{"amo'
        )
        try:
            gets = _timed_gets(http, 20)
            during = _paid_callback_seconds(http, control, http_server, "/during")
            # The engine is not delayed: a receiver is created over the control socket.
            started = time.monotonic()
            assert control.call("receiver.create", {"amount": "0.1"})["status"] == "pending"
            control_seconds = time.monotonic() - started
            held_for = time.monotonic() - opened
            still = sum(_still_open(sock) for sock in idle)
            assert still == IDLE_CONNECTIONS, (
                f"only {still} of {IDLE_CONNECTIONS} idle connections were still held after "
                f"{held_for:.1f}s: the measurement outlived idle_timeout"
            )
            assert max(gets) < REQUEST_BOUND, f"slowest GET {max(gets):.3f}s beside 1,000 idle"
            assert median(gets) < median(gets_before) + REQUEST_SLACK, (gets_before, gets)
            assert during < CALLBACK_BOUND, f"callback after {during:.2f}s beside 1,000 idle"
            assert during < before + CALLBACK_SLACK, (before, during)
            assert control_seconds < REQUEST_BOUND, f"control create took {control_seconds:.3f}s"
            # The slowloris head is closed once idle_timeout (5 s) passes, not kept forever.
            slow_head.settimeout(10)
            assert slow_head.recv(1024) == b""
        finally:
            for sock in [*idle, slow_head, slow_body]:
                sock.close()


def make_key(sandbox: Sandbox, *scopes: str) -> str:
    args = [arg for scope in scopes for arg in ("--scope", scope)]
    return sandbox.cli("apikey", "create", "--label", "t", *args)["key"]


@pytest.fixture(scope="module")
def shop_key(sandbox: Sandbox) -> str:
    return make_key(sandbox, "receivers:read", "receivers:write")


def test_create_pay_get_with_httpx_and_curl(sandbox: Sandbox, shop_key: str):
    auth = {"Authorization": f"Bearer {shop_key}"}
    with httpx.Client(base_url=sandbox.url, headers=auth) as http:
        r = http.post(
            "/v1/receivers",
            json={"amount": "1.25", "description": "order 42"},
            headers={"Idempotency-Key": "order-42"},
        )
        assert r.status_code == 200, r.text
        created = r.json()
        again = http.post(
            "/v1/receivers", json={"amount": "1.25"}, headers={"Idempotency-Key": "order-42"}
        )
        assert again.json()["receiver_id"] == created["receiver_id"]
        rid, address = created["receiver_id"], created["address"]
        # The same data the control socket returns.
        assert http.get(f"/v1/receivers/{rid}").json() == sandbox.cli("receiver", "show", str(rid))
        paid = run_cli("sandbox", "pay", address, "1.25", env=sandbox.env)
        assert paid.code == 0, paid.stderr
        deadline = time.monotonic() + 15
        while (shown := http.get(f"/v1/receivers/{rid}").json())["status"] != "settled":
            assert time.monotonic() < deadline, shown
            time.sleep(0.1)
        assert shown["received_duffs"] == 125_000_000
    code, body = curl(
        "-H", f"Authorization: Bearer {shop_key}", f"{sandbox.url}/v1/receivers/{rid}"
    )
    assert code == 200 and json.loads(body)["status"] == "settled"
    code, body = curl(
        "-H", f"Authorization: Bearer {shop_key}", "-H", "Content-Type: application/json",
        "-d", '{"amount": "2", "currency": "DASH"}', f"{sandbox.url}/v1/receivers",
    )  # fmt: skip
    assert code == 200 and json.loads(body)["amount_duffs"] == 200_000_000


def test_a_callback_reaches_the_shop_and_its_delivery_reads_back_over_http(
    sandbox: Sandbox, http_server
):
    key = make_key(sandbox, "receivers:write", "callbacks:read")
    with httpx.Client(base_url=sandbox.url, headers={"Authorization": f"Bearer {key}"}) as http:
        r = http.post(
            "/v1/receivers", json={"amount": "0.5", "callback_url": http_server.url("/shop")}
        )
        assert r.status_code == 200, r.text
        rid, address = r.json()["receiver_id"], r.json()["address"]
        paid = run_cli("sandbox", "pay", address, "0.5", env=sandbox.env)
        assert paid.code == 0, paid.stderr
        deadline = time.monotonic() + 15
        while "receiver.settled" not in (
            events := [json.loads(q.body)["event"] for q in http_server.to("/shop")]
        ):
            assert time.monotonic() < deadline, events
            time.sleep(0.1)
        while True:  # the delivery is recorded just after the shop's answer
            listed = http.get("/v1/callbacks", params={"receiver_id": rid})
            assert listed.status_code == 200, listed.text
            rows = {e["event"]: e["status"] for e in listed.json()["events"]}
            if rows.get("receiver.settled") == "delivered":
                break
            assert time.monotonic() < deadline, rows
            time.sleep(0.1)
        # receivers:write and callbacks:read do not include receivers:read.
        assert http.get(f"/v1/receivers/{rid}").status_code == 403


def test_list_pages_by_cursor_and_cancel(sandbox: Sandbox, shop_key: str):
    auth = {"Authorization": f"Bearer {shop_key}"}
    with httpx.Client(base_url=sandbox.url, headers=auth) as http:
        ids = [
            http.post("/v1/receivers", json={"amount": "0.5"}).json()["receiver_id"]
            for _ in range(3)
        ]
        first = http.get("/v1/receivers", params={"limit": 2}).json()
        assert [r["receiver_id"] for r in first["receivers"]] == ids[::-1][:2]
        rest = http.get("/v1/receivers", params={"limit": 2, "before_id": first["next_before_id"]})
        assert rest.json()["receivers"][0]["receiver_id"] == ids[0]
        cancelled = http.post(f"/v1/receivers/{ids[0]}/cancel")
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        again = http.post(f"/v1/receivers/{ids[0]}/cancel")  # idempotent, as over the socket
        assert again.status_code == 200 and again.json()["status"] == "cancelled"
        assert http.get(f"/v1/receivers/{ids[0]}").json() == sandbox.cli(
            "receiver", "show", str(ids[0])
        )
        assert http.get("/v1/receivers/999999").status_code == 404


def test_bad_bodies_and_scopes_change_nothing(sandbox: Sandbox, shop_key: str):
    auth = {"Authorization": f"Bearer {shop_key}"}
    before = sandbox.cli("status")["receivers"]
    with httpx.Client(base_url=sandbox.url, headers=auth) as http:
        for body, kind in [
            (b"{", "parse_error"),
            (b'"amount"', "invalid_request"),
            (b'{"amount": "-1"}', "invalid_params"),
            (b'{"amount": "1", "currency": "XYZW"}', "invalid_params"),
            (b'{"amount": "1", "nope": 1}', "invalid_params"),
        ]:
            r = http.post("/v1/receivers", content=body)
            assert (r.status_code, r.json()["error"]["kind"]) == (400, kind), body
        huge = b'{"amount": "1", "description": "' + b"x" * 200_000 + b'"}'
        r = http.post("/v1/receivers", content=huge)
        assert (r.status_code, r.json()["error"]["kind"]) == (413, "too_large")
        r = http.get("/v1/status")
        assert (r.status_code, r.json()["error"]["kind"]) == (403, "forbidden")
    code, _ = curl(
        "-H",
        f"Authorization: Bearer {shop_key}",
        "--data-binary",
        "@-",
        f"{sandbox.url}/v1/receivers",
    )
    assert code == 400  # an empty body: amount is required
    assert sandbox.cli("status")["receivers"] == before
    admin = make_key(sandbox, "admin")
    status = httpx.get(f"{sandbox.url}/v1/status", headers={"Authorization": f"Bearer {admin}"})
    assert status.json()["http"]["urls"] == [sandbox.url]


SEED_ROUTES = ("/createReceiver", "/dash-payment-processor/createReceiver")
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def test_seed_create_with_a_form_via_httpx_and_curl(sandbox: Sandbox, shop_key: str):
    auth = {"Authorization": f"Bearer {shop_key}"}
    form = {"currency": "USD", "amount": "25", "username": "alice", "description": "order 7"}
    r = httpx.post(f"{sandbox.url}/createReceiver", data=form, headers=auth)
    assert r.status_code == 200, r.text
    made = r.json()
    assert list(made) == list(RECEIVER_FIELDS)
    assert (made["type_fiat"], made["amount_fiat"], made["base_fiat"]) == ("USD", "25", 30)
    code, body = curl(
        "-H", f"Authorization: Bearer {shop_key}",
        "--data-urlencode", "currency=DASH", "--data-urlencode", "amount=0.5",
        "--data-urlencode", "description=tea & cake = 2",
        "--data-urlencode", "api_key=the-old-one",
        f"{sandbox.url}/dash-payment-processor/createReceiver",
    )  # fmt: skip
    assert code == 200, body
    by_curl = json.loads(body)
    assert (by_curl["amount_duffs"], by_curl["description"]) == ("50000000", "tea & cake = 2")
    with httpx.Client(base_url=sandbox.url, headers=auth) as http:
        for answer in (made, by_curl):
            shown = http.get(f"/v1/receivers/{answer['receiver_id']}").json()
            assert shown["address"] == answer["dash_payment_address"]
            assert str(shown["amount_duffs"]) == answer["amount_duffs"]
        assert shown["status"] == "pending"


def test_seed_valuation_service(sandbox: Sandbox, shop_key: str):
    auth = {"Authorization": f"Bearer {shop_key}"}
    for path in ("/valuationService", "/dash-payment-processor/valuationService"):
        r = httpx.post(f"{sandbox.url}{path}", data={"fiatCode": "usd"}, headers=auth)
        assert r.status_code == 200 and r.json() == {"fiatCode": "USD", "value": 30}, r.text
    code, body = curl(
        "-X", "POST", "-H", f"Authorization: Bearer {shop_key}", f"{sandbox.url}/valuationService"
    )
    assert code == 200 and json.loads(body)["fiatCode"] == "USD"  # the original's default


def test_seed_routes_refuse_bad_forms_and_missing_keys(sandbox: Sandbox, shop_key: str):
    auth = {"Authorization": f"Bearer {shop_key}"}
    before = sandbox.cli("status")["receivers"]
    with httpx.Client(base_url=sandbox.url, headers=auth) as http:
        for path in SEED_ROUTES:
            for form in [
                {"amount": "1"},  # no currency
                {"currency": "USD", "amount": "-1"},
                {"currency": "USD", "amount": "1", "email": "a@b"},
                [("currency", "USD"), ("amount", "1"), ("amount", "2")],
            ]:
                r = http.post(path, content=urlencode(form), headers=FORM)
                assert (r.status_code, r.json()["error"]["kind"]) == (400, "invalid_params"), form
            r = http.post(path, json={"currency": "USD", "amount": "1"})
            assert (r.status_code, r.json()["error"]["kind"]) == (400, "invalid_request")
            huge = {"currency": "USD", "amount": "1", "description": "x" * 200_000}
            assert http.post(path, data=huge).status_code == 413
        r = http.post("/valuationService", data={"fiatCode": "NOPE1"})
        assert (r.status_code, r.json()["error"]["kind"]) == (400, "invalid_params")
    for path in (*SEED_ROUTES, "/valuationService", "/metrics"):
        method = "GET" if path == "/metrics" else "POST"
        code, body = curl("-X", method, "-d", "currency=USD&amount=1", f"{sandbox.url}{path}")
        assert code == 401 and json.loads(body)["error"]["kind"] == "unauthorized", path
    assert sandbox.cli("status")["receivers"] == before  # nothing was created


def test_metrics_need_an_admin_key_and_parse_as_prometheus_text(sandbox: Sandbox, shop_key):
    created = sandbox.cli("receiver", "new", "--amount", "0.3")
    r = httpx.get(f"{sandbox.url}/metrics", headers={"Authorization": f"Bearer {shop_key}"})
    assert (r.status_code, r.json()["error"]["kind"]) == (403, "forbidden")
    admin = make_key(sandbox, "admin")
    r = httpx.get(f"{sandbox.url}/metrics", headers={"Authorization": f"Bearer {admin}"})
    assert r.status_code == 200 and r.headers["content-type"] == METRICS_CONTENT_TYPE
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }
    assert samples[("dashpay_rescan_duration_seconds_count", (("kind", "full"),))] >= 1
    by_status = sandbox.cli("status")["receivers"]
    assert created["status"] == "pending" and by_status["pending"] >= 1
    for status, count in by_status.items():
        assert samples[("dashpay_receivers", (("status", status),))] == count
    assert samples[("dashpay_insight_connected", ())] == 1
    document = httpx.get(f"{sandbox.url}/openapi.json").json()
    validate(document)
    assert {"/metrics", *SEED_ROUTES, "/dash-payment-processor/valuationService"} <= set(
        document["paths"]
    )
    form = document["paths"]["/createReceiver"]["post"]["requestBody"]["content"]
    assert set(form["application/x-www-form-urlencoded"]["schema"]["properties"]) == set(
        CREATE_FIELDS
    )


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


def test_wrong_keys_are_rate_limited_per_client(sandbox: Sandbox, shop_key: str):
    """Last in the module: it leaves 127.0.0.1 blocked for a while."""
    with httpx.Client(base_url=sandbox.url, headers={"Authorization": "Bearer dp_wrong"}) as http:
        codes = [http.get("/v1/receivers").status_code for _ in range(15)]
    assert codes[0] == 401 and codes[-1] == 429, codes
    r = httpx.get(f"{sandbox.url}/v1/receivers", headers={"Authorization": f"Bearer {shop_key}"})
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    assert httpx.get(f"{sandbox.url}/health").status_code == 200  # probes stay open
