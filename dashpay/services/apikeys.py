"""API keys for the HTTP API: create, list, revoke, and authenticate a presented key.

``authenticate`` runs on every HTTP request, so the daemon keeps every key that is not
revoked in memory (a dict by hash: a few hundred bytes a key) and a request with a
known key never reaches the database. A key the memory does not know (a wrong one, or
one another daemon made) is looked up by its hash; the failed-attempt limiter
(``domain/ratelimit.py``) keeps wrong keys from turning into a flood of lookups.

Revocation: ``revoke`` goes through this service, which drops the key from memory
before it answers, so in the daemon that revoked it the key fails from the next
request on; a lookup or refresh that read the row before the revocation cannot bring
it back (revoked ids are remembered). Several daemons on one MariaDB database each keep
their own memory: every ``REFRESH_SECONDS`` each re-reads the keys that are not revoked,
so a key revoked through one daemon stops working in the others within that time (and
a key made through one works in the others at once, by the lookup). When the database
cannot be read at a refresh, the memory is kept as it was.

``last_used_at`` is written at the same pace: a request only notes the time in memory,
and the refresh writes the notes of every used key in one transaction (at most one
write per key per ``REFRESH_SECONDS``, none per request), and once more at shutdown.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import trio

from dashpay.domain.apikeys import (
    SANDBOX,
    ApiKey,
    check_label,
    check_scopes,
    is_token,
    new_token,
    same_hash,
    token_hash,
    token_prefix,
)
from dashpay.domain.clock import now_ms
from dashpay.domain.errors import DashpayError, InvalidParams
from dashpay.repository.base import Repository

log = logging.getLogger("dashpay.apikeys")

# How often the keys in memory are read again and last uses written: how long a key
# revoked through another daemon keeps working here, and how stale `apikey list`'s
# "last used" may be.
REFRESH_SECONDS = 60.0
# The last uses still to write are written at shutdown within this time, or dropped.
SHUTDOWN_FLUSH_SECONDS = 5.0


class ApiKeyService:
    """The API keys of the daemon (see the module docstring). ``sandbox``: whether
    this daemon runs ``serve --sandbox``, the only place the ``sandbox`` scope may be
    granted (its commands pay and mine on the simulated network)."""

    def __init__(
        self,
        repo: Repository,
        *,
        sandbox: bool = False,
        clock: Callable[[], int] = now_ms,
        random_token: Callable[[], str] = new_token,
    ) -> None:
        self.repo = repo
        self.sandbox = sandbox
        self.clock = clock
        self.random_token = random_token
        self._known: dict[str, tuple[ApiKey, str]] = {}  # hash -> (key, stored hash)
        self._revoked: set[int] = set()  # revoked through this daemon
        self._used: dict[int, int] = {}  # id -> last use, still to write

    # -- the HTTP layer's call ---------------------------------------------------------
    async def authenticate(self, token: str) -> ApiKey | None:
        """The key ``token`` is, if it exists and is not revoked; else None. A known
        key costs no database read. Raises Unavailable only when the key is not in
        memory and the database cannot be read."""
        if not is_token(token):
            return None
        presented = token_hash(token)
        entry = self._known.get(presented)
        if entry is None:
            found = await trio.to_thread.run_sync(self.repo.find_api_key, presented)
            if found is None or found[0].revoked or found[0].id in self._revoked:
                return None
            entry = found
            self._known[presented] = entry
        key, stored = entry
        if not same_hash(stored, presented) or key.id in self._revoked:
            return None
        self._used[key.id] = self.clock()
        return key

    # -- the commands ------------------------------------------------------------------
    async def create(self, label: str, scopes: Iterable[str]) -> tuple[ApiKey, str]:
        """A new key with ``label`` and ``scopes``: the key as stored and its secret
        text, which exists only in this answer (only its hash is stored)."""
        label = check_label(label)
        granted = check_scopes(list(scopes))
        if SANDBOX in granted and not self.sandbox:
            raise InvalidParams(
                "the sandbox scope can only be granted by a sandbox daemon "
                "(dashpay serve --sandbox): its commands pay on the simulated network"
            )
        token = self.random_token()
        digest = token_hash(token)
        key = await trio.to_thread.run_sync(
            self.repo.create_api_key, label, granted, digest, token_prefix(token), self.clock()
        )
        self._known[digest] = (key, digest)
        scopes_shown = ",".join(sorted(key.scopes))
        log.info("api key created id=%d label=%r scopes=%s", key.id, key.label, scopes_shown)
        return key, token

    async def list(self) -> list[ApiKey]:
        """Every key, revoked ones too, oldest first (never a secret or a hash)."""
        await self._write_uses()
        return await trio.to_thread.run_sync(self.repo.list_api_keys)

    async def revoke(self, key_id: int) -> ApiKey:
        """Revoke a key: it fails from the next request on (module docstring)."""
        self._revoked.add(key_id)  # before the write: no request may pass meanwhile
        try:
            key = await trio.to_thread.run_sync(self.repo.revoke_api_key, key_id, self.clock())
        except DashpayError:
            if not any(k.id == key_id for k, _ in self._known.values()):
                self._revoked.discard(key_id)  # unknown here: nothing to keep out
            raise
        self._forget(key_id)
        log.info("api key revoked id=%d label=%r", key.id, key.label)
        return key

    def _forget(self, key_id: int) -> None:
        for digest in [d for d, (k, _) in self._known.items() if k.id == key_id]:
            del self._known[digest]

    # -- the task in the daemon's nursery ----------------------------------------------
    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Load the keys, then refresh them and write last uses every
        ``REFRESH_SECONDS``. Never returns unless cancelled; at cancellation the last
        uses are written (shielded, within ``SHUTDOWN_FLUSH_SECONDS``)."""
        await self.refresh()
        task_status.started()
        try:
            while True:
                await trio.sleep(REFRESH_SECONDS)
                await self.refresh()
        finally:
            with trio.move_on_after(SHUTDOWN_FLUSH_SECONDS, shield=True):
                await self._write_uses()

    async def refresh(self) -> None:
        """Write the last uses noted, then read the keys that are not revoked again."""
        await self._write_uses()
        try:
            active = await trio.to_thread.run_sync(self.repo.active_api_keys)
        except DashpayError as exc:
            kept = len(self._known)
            log.warning("api keys not refreshed, keeping the %d in memory: %s", kept, exc.message)
            return
        self._known = {
            stored: (key, stored) for key, stored in active if key.id not in self._revoked
        }

    async def _write_uses(self) -> None:
        if not self._used:
            return
        used, self._used = self._used, {}
        try:
            await trio.to_thread.run_sync(self.repo.touch_api_keys, sorted(used.items()))
        except DashpayError as exc:
            for key_id, at in used.items():  # next time, unless a newer use came in
                self._used[key_id] = max(at, self._used.get(key_id, at))
            log.warning("api keys' last use not written: %s", exc.message)
