"""The API keys table: one row per key, holding the SHA-256 of the key, never the key
(``domain/apikeys.py`` says why that is enough).

``ApiKeysMixin`` is written once over the hooks of ``sql.SqlRepository`` (``_read``,
``_write``, ``_execute``, ``_executemany``), so both backends run the same statements
and the contract tests prove them on SQLite and MariaDB. The service above it
(``services/apikeys.py``) keeps the keys in memory; these are its units of work.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from dashpay.domain.apikeys import (
    ApiKey,
    check_label,
    scopes_from_text,
    scopes_text,
)
from dashpay.domain.errors import Conflict, InvalidParams, NotFound
from dashpay.repository.schema import is_int, plain

T = TypeVar("T")

_COLUMNS = ("id", "label", "scopes", "prefix", "created_at", "revoked_at", "last_used_at")
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM api_keys"
_SELECT_WITH_HASH = f"SELECT {', '.join(_COLUMNS)}, token_hash FROM api_keys"
_HASH_TEXT = re.compile(r"[0-9a-f]{64}")
# api_keys.scopes and .prefix are VARCHAR(255) and VARCHAR(16) in MySQL.
MAX_SCOPES_CHARS = 255
MAX_PREFIX_CHARS = 16
_EPOCH_MS_MAX = 2**63 - 1


def _key_from_row(row: Sequence[Any]) -> ApiKey:
    key_id, label, scopes, prefix, created_at, revoked_at, last_used_at = row[: len(_COLUMNS)]
    return ApiKey(
        id=int(key_id),
        label=plain(label),
        scopes=scopes_from_text(plain(scopes)),
        prefix=plain(prefix),
        created_at=int(created_at),
        revoked_at=None if revoked_at is None else int(revoked_at),
        last_used_at=None if last_used_at is None else int(last_used_at),
    )


def _with_hash(row: Sequence[Any]) -> tuple[ApiKey, str]:
    return _key_from_row(row), plain(row[len(_COLUMNS)])


def _check_time(value: object, name: str) -> int:
    if not is_int(value, 0, _EPOCH_MS_MAX):
        raise ValueError(f"{name} must be epoch milliseconds, got {value!r:.40}")
    return value  # type: ignore[return-value]


class ApiKeysMixin:
    """The API key units of work of ``SqlRepository`` (see the module docstring)."""

    if TYPE_CHECKING:  # provided by SqlRepository and its backends

        def _read(self, work: Callable[[Any], T]) -> T: ...

        def _write(self, work: Callable[[Any], T]) -> T: ...

        def _execute(self, cursor: Any, sql: str, params: Sequence[Any] = ()) -> Any: ...

        def _executemany(self, cursor: Any, sql: str, rows: Sequence[Sequence[Any]]) -> Any: ...

        def _is_unique_violation(self, exc: BaseException) -> bool: ...

    def create_api_key(
        self, label: str, scopes: frozenset[str], token_hash: str, prefix: str, created_at: int
    ) -> ApiKey:
        """Store a new key (its hash) and return it. InvalidParams for a bad label or
        empty scopes; Conflict if the hash is already stored (a key made twice)."""
        label = check_label(label)
        if not scopes or not all(isinstance(s, str) and s and " " not in s for s in scopes):
            raise InvalidParams("a key needs at least one scope")
        text = scopes_text(scopes)
        if len(text) > MAX_SCOPES_CHARS:
            raise InvalidParams(f"the scopes take {len(text)} characters; at most 255")
        if not isinstance(token_hash, str) or not _HASH_TEXT.fullmatch(token_hash):
            raise ValueError("token_hash must be 64 lower-case hex digits (SHA-256)")
        if not isinstance(prefix, str) or not 1 <= len(prefix) <= MAX_PREFIX_CHARS:
            raise ValueError(f"prefix must be 1 to {MAX_PREFIX_CHARS} characters")
        _check_time(created_at, "created_at")
        insert = (
            "INSERT INTO api_keys (label, scopes, token_hash, prefix, created_at)"
            " VALUES (?, ?, ?, ?, ?)"
        )

        def work(cur: Any) -> ApiKey:
            try:
                self._execute(cur, insert, (label, text, token_hash, prefix, created_at))
            except Exception as exc:
                if self._is_unique_violation(exc):
                    raise Conflict("this API key is already stored; make a new one") from None
                raise
            key_id = int(cur.lastrowid)
            return ApiKey(key_id, label, frozenset(scopes), prefix, created_at)

        return self._write(work)

    def list_api_keys(self) -> list[ApiKey]:
        """Every key, revoked ones too, oldest first."""
        sql = f"{_SELECT} ORDER BY id"
        rows = self._read(lambda cur: self._execute(cur, sql).fetchall())
        return [_key_from_row(row) for row in rows]

    def find_api_key(self, token_hash: str) -> tuple[ApiKey, str] | None:
        """The key stored with ``token_hash`` (revoked or not) and its stored hash."""
        sql = f"{_SELECT_WITH_HASH} WHERE token_hash = ?"
        row = self._read(lambda cur: self._execute(cur, sql, (token_hash,)).fetchone())
        return None if row is None else _with_hash(row)

    def active_api_keys(self) -> list[tuple[ApiKey, str]]:
        """Every key that is not revoked, with its stored hash (what a daemon keeps in
        memory)."""
        sql = f"{_SELECT_WITH_HASH} WHERE revoked_at IS NULL ORDER BY id"
        rows = self._read(lambda cur: self._execute(cur, sql).fetchall())
        return [_with_hash(row) for row in rows]

    def revoke_api_key(self, key_id: int, now: int) -> ApiKey:
        """Revoke a key (at ``now``; a key already revoked keeps its first time) and
        return it. NotFound for an unknown id."""
        _check_time(now, "now")
        if not is_int(key_id, 1, 2**62):
            raise InvalidParams(f"id must be a positive integer, got {key_id!r:.40}")

        def work(cur: Any) -> ApiKey:
            self._execute(
                cur,
                "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?",
                (now, key_id),
            )
            row = self._execute(cur, f"{_SELECT} WHERE id = ?", (key_id,)).fetchone()
            if row is None:
                raise NotFound(f"no API key {key_id}; `dashpay apikey list` shows them")
            return _key_from_row(row)

        return self._write(work)

    def touch_api_keys(self, used: Sequence[tuple[int, int]]) -> None:
        """Record when keys were last used: ``(id, at)`` pairs, in one transaction.
        A time older than the stored one changes nothing; unknown ids are ignored."""
        rows = [(_check_time(at, "at"), key_id, at) for key_id, at in used]
        if not rows:
            return
        sql = (
            "UPDATE api_keys SET last_used_at = ?"
            " WHERE id = ? AND (last_used_at IS NULL OR last_used_at < ?)"
        )
        self._write(lambda cur: self._executemany(cur, sql, rows))
