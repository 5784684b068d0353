"""Error kinds shared by the daemon, the control protocol and the CLI.

One source of truth: a service raises ``DashpayError(kind, message)``; the control
server sends ``kind`` as JSON-RPC ``error.data.kind``; the CLI maps the kind to an exit
code. This module is stdlib-only so the CLI can import it cheaply.
"""

from __future__ import annotations

from typing import Any

# Stable, machine-readable error kinds (``error.data.kind`` on the control socket).
INVALID_PARAMS = "invalid_params"  # the request's values are wrong; fix and retry
NOT_FOUND = "not_found"  # no such receiver / event
CONFLICT = "conflict"  # the request contradicts current state (e.g. cancel a paid receiver)
PRICE_UNAVAILABLE = "price_unavailable"  # no fresh fiat quote could be had
UNAVAILABLE = "unavailable"  # the daemon cannot do it right now (starting, database down)
INTERNAL = "internal"  # a bug; the daemon logged it
PARSE_ERROR = "parse_error"  # the control message was not valid JSON
INVALID_REQUEST = "invalid_request"  # valid JSON, but not a JSON-RPC 2.0 request
METHOD_NOT_FOUND = "method_not_found"
TOO_LARGE = "too_large"  # a control message over the size limit

ERROR_KINDS = frozenset(
    {
        INVALID_PARAMS,
        NOT_FOUND,
        CONFLICT,
        PRICE_UNAVAILABLE,
        UNAVAILABLE,
        INTERNAL,
        PARSE_ERROR,
        INVALID_REQUEST,
        METHOD_NOT_FOUND,
        TOO_LARGE,
    }
)

# CLI exit codes (README "Exit codes").
EXIT_OK = 0
EXIT_NOT_READY = 1  # `dashpay status`: the daemon answers but is not ready (health check)
EXIT_USAGE = 2  # bad command line or invalid input, caught before or by the daemon
EXIT_UNREACHABLE = 3  # no daemon answering on the control socket
EXIT_REJECTED = 4  # the daemon refused the request (not_found, conflict, ...)
EXIT_UPSTREAM = 5  # an upstream (price providers, Insight, database) is unavailable

_EXIT_BY_KIND = {
    INVALID_PARAMS: EXIT_USAGE,
    PRICE_UNAVAILABLE: EXIT_UPSTREAM,
    UNAVAILABLE: EXIT_UPSTREAM,
}


def exit_code_for(kind: str) -> int:
    """The CLI exit code for an error kind reported by the daemon."""
    return _EXIT_BY_KIND.get(kind, EXIT_REJECTED)


class DashpayError(Exception):
    """An error with a stable kind and a message a user can act on."""

    def __init__(self, kind: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.details = details

    def __str__(self) -> str:
        return self.message


class InvalidParams(DashpayError):
    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(INVALID_PARAMS, message, **details)


class NotFound(DashpayError):
    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(NOT_FOUND, message, **details)


class Conflict(DashpayError):
    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(CONFLICT, message, **details)


class Unavailable(DashpayError):
    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(UNAVAILABLE, message, **details)


class PriceUnavailable(DashpayError):
    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(PRICE_UNAVAILABLE, message, **details)
