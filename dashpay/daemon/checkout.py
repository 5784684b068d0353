"""Whether the daemon serves the checkout page, and at which public address.

On when the HTTP server listens (``[http] listen``) and customers can reach it: with
``[http] public_url`` set, or in ``serve --sandbox``, whose public address is the
sandbox's own HTTP URL (known once the server is bound). Off otherwise: receivers'
answers then carry ``checkout_url: null``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dashpay.daemon.root import Daemon


def checkout_enabled(daemon: Daemon) -> bool:
    http = daemon.config.http
    return bool(http.listen) and (http.public_url is not None or daemon.sandbox is not None)


def public_url(daemon: Daemon) -> str | None:
    """The base of every ``checkout_url`` (None: the page is off)."""
    if not checkout_enabled(daemon):
        return None
    if daemon.config.http.public_url is not None:
        return daemon.config.http.public_url
    return daemon.http_urls[0].rstrip("/") if daemon.http_urls else None


def with_checkout(daemon: Daemon, api: Callable) -> Callable:
    """The ASGI app to serve: ``api`` with ``/pay/...`` in front when the page is on."""
    if not checkout_enabled(daemon):
        return api
    # Imported here: a daemon without the page does not keep its modules (issue 19).
    from dashpay.api.checkout import theme_of
    from dashpay.api.http.checkout_routes import CheckoutApp

    assert daemon.repo is not None
    return CheckoutApp(
        api,
        repo=daemon.repo,
        hub=daemon.checkout_hub,
        theme=theme_of(daemon.config.checkout),
        config=daemon.config.http,
    )


def recorded_by_both(*listeners: Callable[[Any], None]) -> Callable[[Any], None]:
    """One ``on_recorded`` for the engine that tells each listener in turn."""

    def tell(results: Any) -> None:
        for listener in listeners:
            listener(results)

    return tell
