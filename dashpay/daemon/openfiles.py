"""The daemon's open-file limit: enough for every connection its limits allow.

Each control or HTTP connection is a file descriptor, and so is every database
connection, Insight socket and callback post. When connections (idle ones included)
could use up the descriptors, the payment engine could no longer open what it needs,
so at start the daemon raises its soft limit to the hard one and says so in the log
when even that is below what its configured limits need (``open_files_needed``): then
the operator raises the hard limit (``LimitNOFILE=`` in the systemd unit, ``ulimit
-Hn``) or lowers ``[http] max_connections``.
"""

from __future__ import annotations

import logging
import resource
from dataclasses import dataclass

from dashpay.config.http import HttpConfig
from dashpay.domain.limits import MAX_CONTROL_CONNECTIONS, OPEN_FILES_RESERVE

log = logging.getLogger("dashpay.daemon")


def open_files_needed(http: HttpConfig) -> int:
    """Descriptors the configured limits may hold at once, plus the reserve."""
    connections = http.max_connections if http.listen else 0
    return MAX_CONTROL_CONNECTIONS + connections + OPEN_FILES_RESERVE


@dataclass(frozen=True, slots=True)
class OpenFiles:
    soft: int  # the limit in force after raising it
    hard: int
    needed: int
    error: str | None = None  # why the soft limit could not be raised

    @property
    def enough(self) -> bool:
        return self.soft == resource.RLIM_INFINITY or self.soft >= self.needed


def raise_open_files(needed: int) -> OpenFiles:
    """Raise RLIMIT_NOFILE's soft limit to its hard limit (or to ``needed`` when the
    hard limit is unlimited) and report the result; never raises."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = max(needed, soft) if hard == resource.RLIM_INFINITY else hard
    error = None
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (OSError, ValueError) as exc:
            error = str(exc)
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return OpenFiles(soft, hard, needed, error)


def ensure_open_files(http: HttpConfig) -> OpenFiles:
    """``raise_open_files`` for the configured limits, logged: info when there are
    enough, a warning saying what to change when there are not."""
    files = raise_open_files(open_files_needed(http))
    if files.enough:
        log.info("open files limit=%s needed=%d", _shown(files.soft), files.needed)
    else:
        why = f" (raising it failed: {files.error})" if files.error else ""
        log.warning(
            "open files limit=%s hard=%s is below the %d the configured limits need "
            "(%d control connections, [http] max_connections, %d for the database, "
            "Insight and callbacks)%s: connections could take the descriptors the "
            "payment engine needs; raise the hard limit (LimitNOFILE= in the systemd "
            "unit, ulimit -Hn) or lower [http] max_connections",
            _shown(files.soft), _shown(files.hard), files.needed, MAX_CONTROL_CONNECTIONS,
            OPEN_FILES_RESERVE, why,
        )  # fmt: skip
    return files


def _shown(limit: int) -> str:
    return "unlimited" if limit == resource.RLIM_INFINITY else str(limit)
