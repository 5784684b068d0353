"""Whether the daemon serves the checkout page, and at which public address.

On when the HTTP server listens (``[http] listen``) and customers can reach it: with
``[http] public_url`` set, or in ``serve --sandbox``, whose public address is the
sandbox's own HTTP URL (known once the server is bound). Off otherwise: receivers'
answers then carry ``checkout_url: null``.
"""

from __future__ import annotations

import logging
import resource
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from dashpay.api.checkout import theme_of
from dashpay.api.http.checkout_routes import CheckoutApp
from dashpay.services.checkout_hub import MAX_WATCHERS

if TYPE_CHECKING:
    from dashpay.daemon.root import Daemon

log = logging.getLogger("dashpay.checkout")

# Open files the page's streams need beside the daemon's own (each stream is a socket).
FILES_PER_STREAM = 1
OWN_FILES = 1_024
# When the hard limit is "unlimited", the kernel's default ceiling (fs.nr_open).
NR_OPEN_DEFAULT = 1_048_576


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
    assert daemon.repo is not None
    allow_open_files()
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


def allow_open_files() -> int:
    """Raise the soft limit of open files to the hard one (the soft limit it had when
    that is enough, or when raising it is refused); returns the soft limit in force.

    Every open checkout page holds a socket: systemd's default soft limit (1,024, hard
    524,288) would refuse connections long before ``MAX_WATCHERS`` streams, and
    systemd leaves raising the soft limit to the programs that need it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = OWN_FILES + MAX_WATCHERS * FILES_PER_STREAM
    target = NR_OPEN_DEFAULT if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open files limit soft=%d hard=%d: %s", soft, hard, exc)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        log.warning(
            "open files limit soft=%d is below the %d that %d checkout streams need; "
            "raise LimitNOFILE",
            soft,
            wanted,
            MAX_WATCHERS,
        )
    return soft
