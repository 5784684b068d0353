"""The HTTP routes: one per command route of the table, plus the fixed pages.

A command's ``http`` entry "POST /v1/receivers/{receiver_id}/cancel" is a route whose
``{receiver_id}`` segment is that parameter. A GET reads the other parameters from the
query string, a POST from a JSON object body; path values and query values are text,
turned into the parameter's JSON type (``Param.json_type``) before the command's own
parser sees them, so HTTP refuses exactly what the control socket refuses. The
``Idempotency-Key`` header is the ``idempotency_key`` parameter of the commands that
have one.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from dashpay.api.commands import Command
from dashpay.domain.errors import InvalidParams, InvalidRequest, MethodNotAllowed, NotFound

IDEMPOTENCY_HEADER = "idempotency-key"
_INTEGER = re.compile(r"^-?\d{1,20}$")
_BOOLEANS = {"true": True, "false": False, "1": True, "0": False}


@dataclass(frozen=True, slots=True)
class Request:
    """What an endpoint handler gets: the request, its body read in full, the client's
    address (after trusted proxies) and the API key that was accepted (None: public)."""

    method: str
    path: str
    query: str
    headers: Mapping[str, str]  # names in lower case; a repeated header joined by ", "
    body: bytes
    client: str
    path_values: Mapping[str, str] = field(default_factory=dict)
    key: Any = None


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


Handler = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One method on one path. ``scope`` is what the API key needs (None: public, no key
    asked); ``command`` the table entry behind it, if any (for the OpenAPI document)."""

    method: str
    path: str
    handler: Handler
    scope: str | None
    summary: str = ""
    command: Command | None = None
    timeout: float | None = None  # how long the handler may run; None: the app's default
    form: tuple[str, ...] = ()  # the fields of a form body (application/x-www-form-urlencoded)
    answers: str = "application/json"  # the content type of a 200 answer

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(self.path.strip("/").split("/"))

    @property
    def path_params(self) -> tuple[str, ...]:
        return tuple(s[1:-1] for s in self.segments if s.startswith("{"))


def parse_route(spec: str) -> tuple[str, str]:
    """("POST", "/v1/receivers") from "POST /v1/receivers"."""
    method, _, path = spec.partition(" ")
    if method not in ("GET", "POST") or not path.startswith("/v1/"):
        raise ValueError(f"route {spec!r}: expected 'GET /v1/...' or 'POST /v1/...'")
    return method, path


class Router:
    """Finds the endpoint of a method and path: literal segments win over ``{name}``
    ones; a path known with other methods is ``method_not_allowed``.

    Built once: a path without ``{name}`` segments is one dict look-up; the others are
    matched against the patterns of as many segments, most literal segments first."""

    def __init__(self, endpoints: Iterable[Endpoint]) -> None:
        self.endpoints: list[Endpoint] = []
        seen: set[tuple[str, tuple[str, ...]]] = set()
        for endpoint in endpoints:
            shape = (endpoint.method, tuple("{}" if s[:1] == "{" else s for s in endpoint.segments))
            if shape in seen:
                raise ValueError(f"two endpoints for {endpoint.method} {endpoint.path}")
            seen.add(shape)
            self.endpoints.append(endpoint)
        # Most literal segments first, so /v1/callbacks/test beats /v1/callbacks/{event_id}.
        self.endpoints.sort(key=lambda e: -sum(s[:1] != "{" for s in e.segments))
        self._literal: dict[tuple[str, ...], dict[str, Endpoint]] = {}
        self._patterns: dict[int, list[Endpoint]] = {}
        for endpoint in self.endpoints:
            if endpoint.path_params:
                self._patterns.setdefault(len(endpoint.segments), []).append(endpoint)
            else:
                self._literal.setdefault(endpoint.segments, {})[endpoint.method] = endpoint

    def match(self, method: str, path: str) -> tuple[Endpoint, dict[str, str]]:
        parts = _parts(path)
        literal = self._literal.get(parts)
        if literal is not None and method in literal:
            return literal[method], {}
        allowed = list(literal or ())
        for endpoint in self._patterns.get(len(parts), ()):
            values = _match(endpoint.segments, parts)
            if values is None:
                continue
            if endpoint.method == method:
                return endpoint, values
            allowed.append(endpoint.method)
        if allowed:
            methods = ", ".join(sorted(set(allowed)))
            raise MethodNotAllowed(f"{path} answers {methods}, not {method}", allow=methods)
        raise NotFound(f"no such path: {path} (see /openapi.json or /docs)")

    def methods_at(self, path: str) -> list[str]:
        parts = _parts(path)
        return sorted({e.method for e in self.endpoints if _match(e.segments, parts) is not None})


def _parts(path: str) -> tuple[str, ...]:
    return tuple(path.strip("/").split("/")) if path != "/" else ("",)


def _match(pattern: tuple[str, ...], parts: tuple[str, ...]) -> dict[str, str] | None:
    if len(pattern) != len(parts):
        return None
    values: dict[str, str] = {}
    for want, got in zip(pattern, parts, strict=True):
        if want[:1] == "{":
            if not got:
                return None
            values[want[1:-1]] = got
        elif want != got:
            return None
    return values


# -- a command's parameters from a request ----------------------------------------------


def _text_value(text: str, json_type: str) -> Any:
    """A query or path value as the JSON value a client would have sent; text that does
    not fit the type stays text, and the command's parser says what is wrong with it."""
    if json_type == "integer" and _INTEGER.match(text):
        return int(text)
    if json_type == "boolean" and text.lower() in _BOOLEANS:
        return _BOOLEANS[text.lower()]
    return text


def command_params(command: Command, request: Request, body: Any) -> dict[str, Any]:
    """The raw params of ``command`` (as a control request would carry them), from the
    path, the query string (GET) or the JSON body (POST), and Idempotency-Key."""
    types = {p.name: p for p in command.params}
    params: dict[str, Any] = {}
    if request.method == "GET":
        try:
            pairs = parse_qsl(request.query, keep_blank_values=True, strict_parsing=False)
        except ValueError as exc:  # e.g. more fields than parse_qsl allows
            raise InvalidRequest(f"query string: {exc}") from None
        for name, text in pairs:
            param = types.get(name)
            if param is not None and param.json_type == "array":
                items = [_text_value(t, param.json_items) for t in text.split(",") if t]
                params.setdefault(name, []).extend(items)
            elif name in params:
                raise InvalidParams(f"{name} is given twice in the query string")
            else:
                params[name] = _text_value(text, param.json_type if param else "string")
    else:
        if request.query:
            raise InvalidParams(
                f"{request.method} takes its parameters in a JSON body, not the query string"
            )
        if body is not None:
            if not isinstance(body, dict):
                raise InvalidRequest("the body must be a JSON object of parameters")
            params.update(body)
    for name, text in request.path_values.items():
        if name in params:
            raise InvalidParams(f"{name} is part of the path; leave it out of the body")
        param = types[name]
        if param.json_type == "array":
            params[name] = [_text_value(text, param.json_items)]
        else:
            params[name] = _text_value(text, param.json_type)
    header = request.headers.get(IDEMPOTENCY_HEADER)
    if header is not None and "idempotency_key" in types:
        given = params.get("idempotency_key")
        if given is not None and given != header:
            raise InvalidParams("the Idempotency-Key header and idempotency_key differ")
        params["idempotency_key"] = header
    return params
