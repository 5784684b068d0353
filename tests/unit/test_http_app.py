"""The HTTP API's ASGI app in process (httpx's ASGI transport), over the real dispatcher
and command table with stand-in services and a stand-in key service: routes, parameter
reading, error kinds and statuses, authentication, CORS, the OpenAPI document."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import httpx
import pytest
from openapi_spec_validator import validate

from dashpay.api.commands import ADMIN, COMMANDS, RECEIVERS_READ, RECEIVERS_WRITE, Services
from dashpay.api.dispatch import Dispatcher
from dashpay.api.http.app import HttpApp
from dashpay.api.http.auth import client_address
from dashpay.api.http.errors import STATUS_BY_KIND
from dashpay.api.http.routes import parse_route
from dashpay.config.http import HttpConfig
from dashpay.config.listen import cidr_list
from dashpay.domain import errors


@dataclass(frozen=True)
class Key:
    scopes: frozenset[str]


class Keys:
    def __init__(self) -> None:
        self.keys = {
            "good": Key(frozenset({RECEIVERS_READ, RECEIVERS_WRITE})),
            "admin": Key(frozenset({ADMIN})),
        }
        self.asked: list[str] = []

    def authenticate(self, token: str):
        self.asked.append(token)
        return self.keys.get(token)


@dataclass
class Limiter:
    """Blocks a client after `limit` failures."""

    limit: int = 3
    failures: dict[str, int] = field(default_factory=dict)

    def allow(self, client: str, now: float) -> bool:
        return self.failures.get(client, 0) < self.limit

    def retry_after(self, client: str, now: float) -> float:
        return 0.0 if self.allow(client, now) else 29.2

    def record_failure(self, client: str, now: float) -> None:
        self.failures[client] = self.failures.get(client, 0) + 1


class Receivers:
    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    async def create(self, request):
        self.calls.append(("create", request))
        return {"receiver_id": 7, "idempotency_key": request.idempotency_key}

    async def list(self, request):
        self.calls.append(("list", request))
        return {"receivers": [], "next_before_id": None}

    async def get(self, receiver_id):
        if receiver_id != 7:
            raise errors.NotFound(f"no receiver {receiver_id}")
        return {"receiver_id": receiver_id}


class Reconciler:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    async def rescan_request(self, receiver_ids, since_seconds):
        self.calls.append((receiver_ids, since_seconds))
        return {"checked": len(receiver_ids or [])}


@pytest.fixture
def world():
    receivers, reconciler, keys, limiter = Receivers(), Reconciler(), Keys(), Limiter()

    async def status():
        return {"state": "ready"}

    services = Services(status=status, receivers=receivers, reconciler=reconciler)
    config = HttpConfig(cors_origins=("https://shop.example",), max_body=1024)
    app = HttpApp(
        dispatch=Dispatcher(services, sandbox=False),
        config=config,
        health=lambda: ("ready", []),
        keys=keys,
        limiter=limiter,
    )
    return app, receivers, reconciler, keys, limiter


def client(app, key: str | None = "good") -> httpx.AsyncClient:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=("192.0.2.9", 5000)),
        base_url="http://test",
        headers=headers,
    )


def kind_of(response: httpx.Response) -> str:
    return response.json()["error"]["kind"]


def test_every_error_kind_has_an_http_status():
    assert set(STATUS_BY_KIND) == errors.DAEMON_KINDS
    assert {
        errors.UNREACHABLE,
        errors.PERMISSION_DENIED,
    } == errors.ERROR_KINDS - errors.DAEMON_KINDS
    assert all(400 <= status < 600 for status in STATUS_BY_KIND.values())


def test_routes_name_only_parameters_of_their_command():
    for command in COMMANDS.values():
        for spec in command.http:
            method, path = parse_route(spec)
            names = {p.name for p in command.params}
            for segment in path.split("/"):
                if segment.startswith("{"):
                    assert segment[1:-1] in names, spec
        if command.sandbox_only:
            assert not command.http, command.name


async def test_create_reads_the_body_and_the_idempotency_header(world):
    app, receivers, *_ = world
    async with client(app) as http:
        r = await http.post(
            "/v1/receivers", json={"amount": "1.5"}, headers={"Idempotency-Key": "order-42"}
        )
        assert r.status_code == 200, r.text
        assert r.json() == {"receiver_id": 7, "idempotency_key": "order-42"}
        request = receivers.calls[-1][1]
        assert str(request.amount) == "1.5" and request.amount_duffs == 150_000_000
        r = await http.post(
            "/v1/receivers",
            json={"amount": "1", "idempotency_key": "a"},
            headers={"Idempotency-Key": "b"},
        )
        assert r.status_code == 400 and "differ" in r.json()["error"]["message"]


@pytest.mark.parametrize(
    ("body", "status", "kind", "words"),
    [
        (b"{not json", 400, "parse_error", "not valid JSON"),
        (b"[1, 2]", 400, "invalid_request", "JSON object"),
        (b'{"amount": "-1"}', 400, "invalid_params", "amount"),
        (b'{"amount": 1.5e400}', 400, "invalid_params", "amount"),
        (
            b'{"amount": "1", "colour": "red"}',
            400,
            "invalid_params",
            "unknown parameter(s): colour",
        ),
        (b'{"amount": NaN}', 400, "parse_error", "NaN"),
        (b"\xff\xfe", 400, "parse_error", "not UTF-8"),
        (b"{}", 400, "invalid_params", "amount is required"),
    ],
)
async def test_bad_bodies_get_the_control_socket_kind_and_change_nothing(
    world, body, status, kind, words
):
    app, receivers, *_ = world
    async with client(app) as http:
        r = await http.post("/v1/receivers", content=body)
    assert (r.status_code, kind_of(r)) == (status, kind), r.text
    assert words in r.json()["error"]["message"]
    assert receivers.calls == []


async def test_get_reads_typed_query_values(world):
    app, receivers, *_ = world
    async with client(app) as http:
        r = await http.get("/v1/receivers", params={"limit": "5", "status": "paid"})
        assert r.status_code == 200, r.text
        request = receivers.calls[-1][1]
        assert (request.limit, request.status, request.before_id) == (5, "paid", None)
        r = await http.get("/v1/receivers?limit=lots")
        assert (r.status_code, kind_of(r)) == (400, "invalid_params")
        assert "limit must be an integer" in r.json()["error"]["message"]
        r = await http.get("/v1/receivers?limit=1&limit=2")
        assert (r.status_code, kind_of(r)) == (400, "invalid_params")
        r = await http.get("/v1/receivers/7")
        assert r.json() == {"receiver_id": 7}
        r = await http.get("/v1/receivers/8")
        assert (r.status_code, kind_of(r)) == (404, "not_found")
        r = await http.get("/v1/receivers/x")
        assert (r.status_code, kind_of(r)) == (400, "invalid_params")


async def test_rescan_of_one_receiver_puts_the_path_id_in_a_list(world):
    app, _, reconciler, keys, _ = world
    async with client(app, "admin") as http:
        r = await http.post("/v1/receivers/12/rescan")
        assert r.status_code == 200, r.text
        assert reconciler.calls == [([12], None)]
        r = await http.post("/v1/receivers/12/rescan", json={"receiver_ids": [1]})
        assert (r.status_code, kind_of(r)) == (400, "invalid_params")
        assert "part of the path" in r.json()["error"]["message"]


async def test_unknown_paths_and_methods(world):
    app, *_ = world
    async with client(app) as http:
        r = await http.get("/v1/nothing")
        assert (r.status_code, kind_of(r)) == (404, "not_found")
        r = await http.delete("/v1/receivers/7")
        assert (r.status_code, kind_of(r)) == (405, "method_not_allowed")
        assert r.headers["allow"] == "GET"
        r = await http.post("/v1/receivers?amount=1", json={})
        assert (r.status_code, kind_of(r)) == (400, "invalid_params")


async def test_authentication_scopes_and_the_failure_limit(world):
    app, receivers, _, keys, limiter = world
    async with client(app, None) as http:
        r = await http.get("/v1/receivers")
        assert (r.status_code, kind_of(r)) == (401, "unauthorized")
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert limiter.failures == {}  # no key is not a guess
        r = await http.get("/health")
        assert r.status_code == 200  # public
    async with client(app, "admin") as http:
        r = await http.get("/v1/receivers")
        assert (r.status_code, kind_of(r)) == (403, "forbidden")
        assert "receivers:read" in r.json()["error"]["message"]
        assert (await http.get("/v1/status")).json() == {"state": "ready"}
    async with client(app, "wrong") as http:
        for _ in range(3):
            r = await http.get("/v1/receivers")
            assert (r.status_code, kind_of(r)) == (401, "unauthorized")
        asked = len(keys.asked)
        r = await http.get("/v1/receivers")
        assert (r.status_code, kind_of(r)) == (429, "rate_limited")
        assert r.headers["retry-after"] == "30"
        assert len(keys.asked) == asked  # a blocked client's key is not even looked up
    async with client(app, "x" * 300) as http:
        r = await http.get("/v1/receivers")
        assert r.status_code in (401, 429)
    assert receivers.calls == []


async def test_body_over_max_body_is_refused_with_413(world):
    app, receivers, *_ = world
    async with client(app) as http:
        r = await http.post(
            "/v1/receivers", content=b'{"amount": "1", "x": "' + b"a" * 2000 + b'"}'
        )
    assert (r.status_code, kind_of(r)) == (413, "too_large")
    assert r.headers["connection"] == "close"
    assert receivers.calls == []


async def test_cors_answers_only_configured_origins(world):
    app, *_ = world
    async with client(app, None) as http:
        preflight = {"origin": "https://shop.example", "access-control-request-method": "POST"}
        r = await http.options("/v1/receivers", headers=preflight)
        assert r.status_code == 204
        assert r.headers["access-control-allow-origin"] == "https://shop.example"
        assert "authorization" in r.headers["access-control-allow-headers"]
        assert r.headers["access-control-allow-methods"] == "GET, POST"
        r = await http.options(
            "/v1/receivers", headers={**preflight, "origin": "https://evil.example"}
        )
        assert "access-control-allow-origin" not in r.headers
        r = await http.get("/health", headers={"origin": "https://shop.example"})
        assert r.headers["access-control-allow-origin"] == "https://shop.example"


async def test_ready_follows_the_daemon_state(world):
    app = world[0]
    for state, status in [("ready", 200), ("degraded", 200), ("standby", 503), ("starting", 503)]:
        app.health = lambda state=state: (state, ["why"] if state != "ready" else [])
        async with client(app, None) as http:
            r = await http.get("/ready")
        assert r.status_code == status
        assert r.json()["state"] == state


async def test_openapi_document_is_valid_and_covers_every_route(world):
    app = world[0]
    async with client(app, None) as http:
        document = (await http.get("/openapi.json")).json()
        docs = await http.get("/docs")
    validate(document)  # raises on an invalid OpenAPI 3.1 document
    assert document["openapi"] == "3.1.0"
    for command in COMMANDS.values():
        for spec in command.http:
            method, path = parse_route(spec)
            op = document["paths"][path][method.lower()]
            assert op["security"] == [{"bearer": [command.scope]}]
            assert f"<code>{path}</code>" in docs.text
    create = document["paths"]["/v1/receivers"]["post"]
    assert "amount" in create["requestBody"]["content"]["application/json"]["schema"]["required"]
    assert any(p["in"] == "header" for p in create["parameters"])
    assert "<script" not in docs.text and "http" not in docs.text.split("<body>")[0]


def test_client_address_believes_only_trusted_proxies():
    config = HttpConfig(trusted_proxies=cidr_list(["10.0.0.0/8"]))
    xff = {"x-forwarded-for": "6.6.6.6, 198.51.100.7, 10.0.0.2"}
    assert client_address("10.0.0.1", xff, config) == "198.51.100.7"
    assert client_address("192.0.2.1", xff, config) == "192.0.2.1"  # not a proxy of ours
    forwarded = {"forwarded": 'for="[2001:db8::1]:443";proto=https, for=10.0.0.3'}
    assert client_address("10.0.0.1", forwarded, config) == "2001:db8::1"
    assert client_address("10.0.0.1", {"x-forwarded-for": "junk"}, config) == "10.0.0.1"
    assert client_address("10.0.0.1", {}, replace(config, trusted_proxies=())) == "10.0.0.1"
