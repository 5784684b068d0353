"""Error kind -> HTTP status, once, and the JSON error body.

Every kind of ``domain/errors.py`` has a status here (a test checks it), so an HTTP
client sees the same ``kind`` the control socket sends, with a status that says who
is at fault: 4xx the request, 5xx the daemon or an upstream.
"""

from __future__ import annotations

from typing import Any

from dashpay.domain import errors as e

STATUS_BY_KIND: dict[str, int] = {
    e.INVALID_PARAMS: 400,
    e.PARSE_ERROR: 400,
    e.INVALID_REQUEST: 400,
    e.UNAUTHORIZED: 401,
    e.FORBIDDEN: 403,
    e.NOT_FOUND: 404,
    e.METHOD_NOT_FOUND: 404,
    e.METHOD_NOT_ALLOWED: 405,
    e.REQUEST_TIMEOUT: 408,
    e.CONFLICT: 409,
    e.TOO_LARGE: 413,
    e.RATE_LIMITED: 429,
    e.INTERNAL: 500,
    e.UNAVAILABLE: 503,
    e.PRICE_UNAVAILABLE: 503,
}


def status_for(kind: str) -> int:
    """The HTTP status of an error kind (an unknown kind is the daemon's fault)."""
    return STATUS_BY_KIND.get(kind, 500)


def error_body(kind: str, message: str, details: dict[str, Any] | None = None) -> dict:
    """``{"error": {"kind", "message", ...details}}``."""
    return {"error": {**(details or {}), "kind": kind, "message": message}}
