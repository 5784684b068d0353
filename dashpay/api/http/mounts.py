"""The endpoints that are not a command route: ``GET /metrics`` and the original
processor's two form routes (``api/seed.py``), each also under ``SEED_PREFIX``.

They are ``Endpoint``s like the generated ones, so they pass the same gate (API key,
scope, failed-attempt limit), read their body within the same size limit and timeout,
and answer errors in the same JSON shape. The seed routes run their command through
the dispatcher, the path every other caller takes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

from dashpay.api import seed
from dashpay.api.commands import COMMANDS, Services
from dashpay.api.http.openapi import FORM_TYPE
from dashpay.api.http.routes import IDEMPOTENCY_HEADER, Endpoint, Request, Response
from dashpay.api.metrics import render_metrics
from dashpay.domain.errors import InvalidRequest
from dashpay.wire.prometheus import CONTENT_TYPE as METRICS_CONTENT_TYPE

Dispatch = Callable[[str, dict[str, Any]], Awaitable[Any]]

# The scope a scrape needs: the figures say how much money moves through the shop.
METRICS_SCOPE = "admin"
# More fields than any of the two forms has, by far; a body of thousands is refused
# before its fields are looked at.
MAX_FORM_FIELDS = 32


def form_pairs(request: Request) -> list[tuple[str, str]]:
    """The (name, value) pairs of a form body, repeats kept (``seed`` refuses them)."""
    content_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if request.body.strip() and content_type != FORM_TYPE:
        raise InvalidRequest(
            f"send the fields as a form ({FORM_TYPE}), as the original processor took "
            f"them; got {content_type or 'no content type'}"
        )
    try:
        text = request.body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequest(f"the form is not UTF-8 (bad byte at offset {exc.start})") from None
    try:
        return parse_qsl(
            text, keep_blank_values=True, strict_parsing=False, max_num_fields=MAX_FORM_FIELDS
        )
    except ValueError as exc:
        raise InvalidRequest(f"the form: {exc}") from None


def _json(body: bytes) -> Response:
    return Response(200, body)


def seed_endpoints(dispatch: Dispatch) -> list[Endpoint]:
    """``POST /createReceiver`` and ``POST /valuationService``, at the root and under
    ``SEED_PREFIX``, with the scopes of the commands they run."""

    async def create(request: Request) -> Response:
        params = seed.create_params(
            form_pairs(request), idempotency_key=request.headers.get(IDEMPOTENCY_HEADER)
        )
        view = await dispatch(seed.CREATE_COMMAND, params)
        return _json(seed.seed_json(seed.receiver_fields(view)))

    async def valuation(request: Request) -> Response:
        params = seed.valuation_params(form_pairs(request))
        answer = await dispatch(seed.VALUATION_COMMAND, params)
        return _json(seed.seed_json(seed.valuation_fields(answer)))

    routes = (
        (seed.CREATE_ROUTE, create, seed.CREATE_COMMAND, tuple(seed.CREATE_FIELDS)),
        (seed.VALUATION_ROUTE, valuation, seed.VALUATION_COMMAND, seed.VALUATION_FIELDS),
    )
    out = []
    for prefix in ("", seed.SEED_PREFIX):
        for route, handler, name, fields in routes:
            command = COMMANDS[name]
            summary = f"The original processor's {route[1:]}: a form post (docs/migrating.md)."
            out.append(
                Endpoint(
                    "POST",
                    prefix + route,
                    handler,
                    command.scope,
                    summary,
                    timeout=command.timeout,
                    form=fields,
                )
            )
    return out


def metrics_endpoint(services: Services) -> Endpoint:
    async def metrics(request: Request) -> Response:
        return Response(200, await render_metrics(services), METRICS_CONTENT_TYPE)

    summary = "The daemon's figures in the Prometheus text format (docs/metrics.md)."
    return Endpoint(
        "GET", "/metrics", metrics, METRICS_SCOPE, summary, answers=METRICS_CONTENT_TYPE
    )
