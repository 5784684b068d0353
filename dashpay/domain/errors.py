"""The one exception hierarchy of dashpay, translated once at each edge.

    DashpayError                    kind            CLI exit code
    ├── InvalidParams               invalid_params  2  the request's values are wrong
    ├── NotFound                    not_found       4  no such receiver / event
    ├── Conflict                    conflict        4  contradicts current state
    ├── Unavailable                 unavailable     5  cannot do it right now
    │   └── PriceUnavailable        price_unavailable 5  no fresh fiat quote
    ├── Internal                    internal        7  a bug; the daemon logged it
    ├── Unreachable                 unreachable     3  no daemon answers on the socket
    ├── PermissionDenied            permission_denied 6  the CLI may not open the socket
    ├── ProtocolFault               (the control protocol itself)
    │   ├── ParseError              parse_error     4  not valid JSON
    │   ├── InvalidRequest          invalid_request 4  JSON, but not JSON-RPC 2.0
    │   ├── MethodNotFound          method_not_found 4
    │   ├── MethodNotAllowed        method_not_allowed 4  (HTTP) a path without this method
    │   ├── TooLarge                too_large       4  over the size limit
    │   └── RequestTimeout          request_timeout 4  (HTTP) the request took too long
    └── AuthFault                   (HTTP API keys; the Unix socket has file permissions)
        ├── Unauthorized            unauthorized    4  no key, or a wrong or revoked one
        ├── Forbidden               forbidden       4  the key lacks the command's scope
        └── RateLimited             rate_limited    4  too many failed attempts

A service raises the subclass; the control server sends its ``kind`` as JSON-RPC
``error.data.kind`` (``dashpay.net.control_server``); the CLI turns a kind into its exit
code and message in one place (``dashpay.cli.app.call``). Kinds and exit codes are class
attributes of the subclasses: ``ERROR_KINDS`` and ``exit_code_for`` are derived from
them, so a new kind is one new class. ``DashpayError(kind, message, **details)`` still
works and builds the subclass for ``kind`` (``DashpayError("conflict", ...)`` is a
``Conflict``). Stdlib only: the CLI imports this on every command.
"""

from __future__ import annotations

from typing import Any, ClassVar

# CLI exit codes (README "Exit codes").
EXIT_OK = 0
EXIT_NOT_READY = 1  # `dashpay status`: the daemon answers but is not ready (health check)
EXIT_USAGE = 2  # bad command line or invalid input, caught before or by the daemon
EXIT_UNREACHABLE = 3  # no daemon answering on the control socket
EXIT_REJECTED = 4  # the daemon refused the request (not_found, conflict, ...)
EXIT_UPSTREAM = 5  # an upstream (price providers, Insight, database) is unavailable
EXIT_PERMISSION = 6  # the control socket is there, but this user may not open it
EXIT_INTERNAL = 7  # a bug (in the daemon, which logged it, or in the CLI itself)


class DashpayError(Exception):
    """An error with a stable kind and a message a user can act on.

    ``InvalidParams("amount is required")`` uses the class's kind;
    ``DashpayError("not_found", "no receiver 7", receiver_id=7)`` names the kind and gets
    the subclass for it (an unknown kind stays a plain DashpayError)."""

    kind: str = "internal"
    exit_code: ClassVar[int] = EXIT_REJECTED
    # Raised by the CLI's client only, never sent by the daemon (so never an HTTP answer).
    client_side: ClassVar[bool] = False

    def __new__(cls, *args: Any, **details: Any) -> DashpayError:
        if cls is DashpayError and len(args) >= 2 and isinstance(args[0], str):
            cls = _CLASS_BY_KIND.get(args[0], DashpayError)
        return super().__new__(cls)

    def __init__(self, *args: Any, **details: Any) -> None:
        # (kind, message) or, on a subclass, (message,) with the class's kind.
        if len(args) == 2:
            kind, message = args
        elif len(args) == 1:
            kind, message = type(self).kind, args[0]
        else:
            raise TypeError("DashpayError(kind, message, **details) or Subclass(message)")
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.details = details

    def __str__(self) -> str:
        return self.message


class InvalidParams(DashpayError):
    kind = "invalid_params"
    exit_code = EXIT_USAGE


class NotFound(DashpayError):
    kind = "not_found"


class Conflict(DashpayError):
    kind = "conflict"


class Unavailable(DashpayError):
    kind = "unavailable"
    exit_code = EXIT_UPSTREAM


class PriceUnavailable(Unavailable):
    kind = "price_unavailable"


class Internal(DashpayError):
    kind = "internal"
    exit_code = EXIT_INTERNAL


class Unreachable(DashpayError):
    """No daemon answers on the control socket (the CLI's kind for
    ``net/control_client.DaemonUnreachable``; never sent by the daemon)."""

    kind = "unreachable"
    exit_code = EXIT_UNREACHABLE
    client_side = True


class PermissionDenied(DashpayError):
    """The control socket (or a directory on its path) refuses this user: the daemon
    may be running, it is the file permissions that keep the CLI out. Raised by the
    client (``net/control_client.py``), never sent by the daemon."""

    kind = "permission_denied"
    exit_code = EXIT_PERMISSION
    client_side = True


class ProtocolFault(DashpayError):
    """The control protocol itself was not followed (the request never reached a
    command)."""

    kind = "invalid_request"


class ParseError(ProtocolFault):
    kind = "parse_error"


class InvalidRequest(ProtocolFault):
    kind = "invalid_request"


class MethodNotFound(ProtocolFault):
    kind = "method_not_found"


class TooLarge(ProtocolFault):
    kind = "too_large"


class MethodNotAllowed(ProtocolFault):
    kind = "method_not_allowed"


class RequestTimeout(ProtocolFault):
    kind = "request_timeout"


class AuthFault(DashpayError):
    """An HTTP request without the right API key (it never reached a command)."""

    kind = "unauthorized"


class Unauthorized(AuthFault):
    kind = "unauthorized"


class Forbidden(AuthFault):
    kind = "forbidden"


class RateLimited(AuthFault):
    kind = "rate_limited"


def _leaves(root: type[DashpayError]) -> list[type[DashpayError]]:
    out: list[type[DashpayError]] = []
    for sub in root.__subclasses__():
        if sub.__module__ == __name__:
            out.append(sub)
            out.extend(_leaves(sub))
    return out


# Kind -> class, from the classes above (ProtocolFault shares invalid_request with
# InvalidRequest, AuthFault unauthorized with Unauthorized; the concrete class wins).
_CLASS_BY_KIND: dict[str, type[DashpayError]] = {
    cls.kind: cls for cls in _leaves(DashpayError) if cls not in (ProtocolFault, AuthFault)
}
ERROR_KINDS = frozenset(_CLASS_BY_KIND)
# The kinds the daemon may answer with (over the control socket and HTTP).
DAEMON_KINDS = frozenset(kind for kind, cls in _CLASS_BY_KIND.items() if not cls.client_side)

# The kinds by name, for code that compares a kind read off the wire.
INVALID_PARAMS = InvalidParams.kind
NOT_FOUND = NotFound.kind
CONFLICT = Conflict.kind
UNAVAILABLE = Unavailable.kind
PRICE_UNAVAILABLE = PriceUnavailable.kind
INTERNAL = Internal.kind
PERMISSION_DENIED = PermissionDenied.kind
UNREACHABLE = Unreachable.kind
PARSE_ERROR = ParseError.kind
INVALID_REQUEST = InvalidRequest.kind
METHOD_NOT_FOUND = MethodNotFound.kind
TOO_LARGE = TooLarge.kind
METHOD_NOT_ALLOWED = MethodNotAllowed.kind
REQUEST_TIMEOUT = RequestTimeout.kind
UNAUTHORIZED = Unauthorized.kind
FORBIDDEN = Forbidden.kind
RATE_LIMITED = RateLimited.kind


def exit_code_for(kind: str) -> int:
    """The CLI exit code for an error kind reported by the daemon (README "Exit
    codes"); a kind this CLI does not know is a refusal."""
    cls = _CLASS_BY_KIND.get(kind)
    return EXIT_REJECTED if cls is None else cls.exit_code
