"""http: `POST /v1/receivers` over the HTTP API from 16 keep-alive clients, beside the
control socket's `receiver.create` measured in the same run, and `GET
/v1/receivers/{id}` latency.

One daemon per run, its HTTP API on a free loopback port and an API key made over the
control socket. First the control socket's rate (as the create scenario measures it),
then the same number of creates over HTTP: each client thread holds one keep-alive
connection (`http.client`, the lightest client the standard library has, so the
figure is the server's more than the client's), all released together. Then every
client reads receivers back with `GET`, each request timed on its own: p50/p99 with 16
requests in flight. The ratio is the HTTP rate over the control socket's (issue 16:
at least 1/1.5). Every answer and the receivers table must show zero address reuse.
"""

from __future__ import annotations

import contextlib
import http.client
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from benchmarks.create import AMOUNT, Call, control_creates, in_parallel, reuse
from benchmarks.harness import BenchError, percentile
from benchmarks.runner import Case, Options, Target
from benchmarks.stack import daemon_stack

DESCRIPTION = (
    "POST /v1/receivers from 16 keep-alive clients vs receiver.create over the control "
    "socket in the same run; GET /v1/receivers/{id} p50/p99"
)
SHOWN = (
    "http_creates_per_second",
    "control_creates_per_second",
    "http_to_control_ratio",
    "get_p50_ms",
    "get_p99_ms",
    "reused",
)
UNITS = {
    "http_creates_per_second": "/s",
    "control_creates_per_second": "/s",
    "get_p50_ms": "ms",
    "get_p99_ms": "ms",
    "gets_per_second": "/s",
}
REPORT_EXTRA = (
    "http_creates_per_second",
    "control_creates_per_second",
    "get_p50_ms",
    "get_p99_ms",
    "gets_per_second",
)
# Issue 16: HTTP create within 1.5x of the control socket's rate.
RATIO_TARGET = round(1 / 1.5, 3)
SCOPES = ["receivers:read", "receivers:write"]


def cases(options: Options) -> list[Case]:
    if options.quick:
        small = {"clients": 4, "receivers": 32, "gets": 64}
        return [
            Case("sqlite", {"backend": "sqlite", **small}),
            Case("mariadb", {"backend": "mysql", **small}, needs_mysql=True),
        ]
    targets = [Target("http_to_control_ratio", ">=", RATIO_TARGET), Target("reused", "<=", 0)]
    return [
        Case(
            "sqlite, 16 clients",
            {"backend": "sqlite", "clients": 16, "receivers": 4_000, "gets": 8_000},
            targets,
        ),
        Case(
            "mariadb, 16 clients",
            {"backend": "mysql", "clients": 16, "receivers": 2_000, "gets": 8_000},
            targets,
            needs_mysql=True,
        ),
    ]


@contextlib.contextmanager
def http_session(url: str, key: str, request: Any) -> Iterator[Call]:
    """One keep-alive connection; ``request(connection)`` makes one call on it."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    connection.connect()
    try:
        yield lambda: request(connection, {"Authorization": f"Bearer {key}"})
    finally:
        connection.close()


def _answer(connection: http.client.HTTPConnection) -> Any:
    response = connection.getresponse()
    body = response.read()
    if response.status != 200:
        raise BenchError(f"HTTP {response.status}: {body[:300]!r}")
    if response.getheader("connection", "").lower() == "close":
        raise BenchError("the server closed a keep-alive connection")
    return json.loads(body)


def _create(connection: http.client.HTTPConnection, headers: dict[str, str]) -> Any:
    body = json.dumps({"amount": AMOUNT})
    connection.request(
        "POST", "/v1/receivers", body, {**headers, "Content-Type": "application/json"}
    )
    return _answer(connection)


def _reader(ids: list[int], offset: int):
    state = {"next": offset}

    def get(connection: http.client.HTTPConnection, headers: dict[str, str]) -> Any:
        receiver_id = ids[state["next"] % len(ids)]
        state["next"] += 1
        connection.request("GET", f"/v1/receivers/{receiver_id}", headers=headers)
        answer = _answer(connection)
        if answer["receiver_id"] != receiver_id:
            raise BenchError(f"asked for receiver {receiver_id}, got {answer['receiver_id']}")
        return answer

    return get


def run(case: Case, options: Options) -> dict[str, Any]:
    clients, total = case.parameters["clients"], case.parameters["receivers"]
    per_client = total // clients
    with daemon_stack(
        case.parameters["backend"],
        0,
        mysql_url=options.mysql_url,
        insight_url=options.insight_url,
        http=True,
    ) as stack:
        assert stack.http_url is not None
        control = control_creates(stack, clients, total)
        key = stack.daemon.call("apikey.create", {"label": "bench", "scopes": SCOPES})["key"]
        with http_session(stack.http_url, key, _create) as warm:
            for _ in range(clients):
                warm()
        created, create_times, create_seconds = in_parallel(
            clients, per_client, lambda _: http_session(stack.http_url, key, _create)
        )
        ids = [answer["receiver_id"] for answer in created]
        gets_per_client = case.parameters["gets"] // clients
        _, get_times, get_seconds = in_parallel(
            clients,
            gets_per_client,
            lambda i: http_session(stack.http_url, key, _reader(ids, i * gets_per_client)),
        )
        reused = reuse(stack, [*control["answers"], *created])
    http_rate = len(created) / create_seconds
    return {
        "receivers": len(created),
        "clients": clients,
        "http_creates_per_second": round(http_rate, 1),
        "control_creates_per_second": round(control["rate"], 1),
        "http_to_control_ratio": round(http_rate / control["rate"], 3),
        "http_create_p50_ms": round(percentile(create_times, 50) * 1000, 2),
        "http_create_p99_ms": round(percentile(create_times, 99) * 1000, 2),
        "gets": len(get_times),
        "gets_per_second": round(len(get_times) / get_seconds, 1),
        "get_p50_ms": round(percentile(get_times, 50) * 1000, 2),
        "get_p99_ms": round(percentile(get_times, 99) * 1000, 2),
        **reused,
    }
