"""The callback outbox's units of work (``OutboxMixin``, part of ``SqlRepository``):
listing events, handing out the due heads, recording attempts, manual retries and the
backlog. Events are written by the payment unit of work (``SqlTransaction.enqueue``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from dashpay.domain.errors import Conflict, DashpayError, InvalidParams, NotFound
from dashpay.domain.model import (
    AttemptOutcome,
    CallbackAttempt,
    CallbackBacklog,
    CallbackRecord,
    OutboxEvent,
)
from dashpay.domain.status import OUTBOX_FAILED, OUTBOX_PENDING, OUTBOX_STATUSES
from dashpay.repository.schema import (
    ATTEMPT_COLUMNS,
    INSERT_ATTEMPT,
    IS_HEAD,
    MAX_ATTEMPTS_SHOWN,
    SELECT_CALLBACK,
    SELECT_OUTBOX,
    UPDATE_AFTER_ATTEMPT,
    attempt_from_row,
    attempt_row,
    callback_from_row,
    check_limit,
    check_outcome,
    in_lists,
    outbox_from_row,
    plain,
    update_after_attempt,
    where_clause,
)

T = TypeVar("T")


class OutboxMixin:
    """The callback outbox's units of work of ``SqlRepository``."""

    if TYPE_CHECKING:  # provided by SqlRepository and its backends
        _for_update: str

        def _read(self, work: Callable[[Any], T]) -> T: ...

        def _write(self, work: Callable[[Any], T]) -> T: ...

        def _execute(self, cursor: Any, sql: str, params: Sequence[Any] = ()) -> Any: ...

        def _executemany(self, cursor: Any, sql: str, rows: Sequence[Sequence[Any]]) -> Any: ...

    # Callback outbox -------------------------------------------------------------
    def list_outbox(
        self, *, receiver_id: int | None = None, status: str | None = None, limit: int = 100
    ) -> list[OutboxEvent]:
        check_limit(limit)
        if status is not None and status not in OUTBOX_STATUSES:
            raise InvalidParams(
                f"unknown callback status {status!r}; one of {', '.join(OUTBOX_STATUSES)}"
            )
        where, params = where_clause((("receiver_id = ?", receiver_id), ("status = ?", status)))
        sql = f"{SELECT_OUTBOX}{where} ORDER BY seq LIMIT ?"
        params.append(limit)
        rows = self._read(lambda cur: self._execute(cur, sql, params).fetchall())
        return [outbox_from_row(row) for row in rows]

    # Callback delivery -----------------------------------------------------------
    def due_callbacks(
        self, wallet_id: str, now: int, limit: int
    ) -> tuple[list[CallbackRecord], int | None]:
        check_limit(limit)
        due_sql = (
            f"{SELECT_CALLBACK} WHERE o.status = ? AND o.next_attempt_at <= ?"
            f" AND r.wallet_id = ? AND {IS_HEAD} ORDER BY o.next_attempt_at, o.seq LIMIT ?"
        )
        later_sql = (
            "SELECT MIN(o.next_attempt_at) FROM callback_outbox o"
            " JOIN receivers r ON r.receiver_id = o.receiver_id"
            " WHERE o.status = ? AND o.next_attempt_at > ? AND r.wallet_id = ?"
        )

        def work(cur: Any) -> tuple[list[CallbackRecord], int | None]:
            params = (OUTBOX_PENDING, now, wallet_id, OUTBOX_PENDING, limit)
            due = [callback_from_row(row) for row in self._execute(cur, due_sql, params)]
            row = self._execute(cur, later_sql, (OUTBOX_PENDING, now, wallet_id)).fetchone()
            later = None if row is None or row[0] is None else int(row[0])
            return due, later

        return self._read(work)

    def record_callback_attempt(self, event_id: str, outcome: AttemptOutcome) -> OutboxEvent:
        [problem] = self.record_callback_attempts([(event_id, outcome)])
        if problem is not None:
            raise problem
        return self._read(lambda cur: self._outbox_event(cur, event_id))

    def record_callback_attempts(
        self, attempts: Sequence[tuple[str, AttemptOutcome]]
    ) -> list[DashpayError | None]:
        checked = [(event_id, check_outcome(outcome)) for event_id, outcome in attempts]
        if not checked:
            return []
        return self._write(lambda cur: self._record_attempts(cur, checked))

    def _record_attempts(
        self, cur: Any, checked: Sequence[tuple[str, AttemptOutcome]]
    ) -> list[DashpayError | None]:
        """``record_callback_attempts``'s work on an open write transaction (its own,
        or the payment unit of work's that carries it: ``SqlTransaction``)."""
        ids = sorted({event_id for event_id, _ in checked})
        status_of: dict[str, str] = {}
        for chunk, params in in_lists(ids):
            sql = (
                f"SELECT event_id, status FROM callback_outbox WHERE event_id IN ({chunk})"
                + self._for_update
            )
            for event_id, status in self._execute(cur, sql, params).fetchall():
                status_of[plain(event_id)] = plain(status)
        results: list[DashpayError | None] = []
        accepted: list[tuple[str, AttemptOutcome]] = []
        for event_id, outcome in checked:
            status = status_of.get(event_id)
            if status is None:
                results.append(NotFound(f"no callback event {event_id}", event_id=event_id))
                continue
            if status != OUTBOX_PENDING:
                results.append(
                    Conflict(
                        f"callback event {event_id} is {status}, not pending; its attempt "
                        "was not recorded",
                        event_id=event_id,
                        status=status,
                    )
                )
                continue
            status_of[event_id] = outcome.status  # a later item sees this outcome
            accepted.append((event_id, outcome))
            results.append(None)
        if accepted:
            self._write_attempts(cur, accepted)
        return results

    def _write_attempts(self, cur: Any, accepted: Sequence[tuple[str, AttemptOutcome]]) -> None:
        """Apply each accepted attempt to its outbox row, in order (an event listed
        twice is updated twice), and log them all in one executemany."""
        self._update_after_attempts(cur, accepted)
        self._executemany(cur, INSERT_ATTEMPT, [attempt_row(e, o) for e, o in accepted])

    def _update_after_attempts(
        self, cur: Any, accepted: Sequence[tuple[str, AttemptOutcome]]
    ) -> None:
        """The outbox part of ``_write_attempts``: one executemany here (sqlite3 loops
        in C); MySQL overrides it with one statement per chunk."""
        self._executemany(
            cur, UPDATE_AFTER_ATTEMPT, [update_after_attempt(e, o) for e, o in accepted]
        )

    def pending_callback_receivers(
        self, wallet_id: str, receiver_ids: Sequence[int] | None = None
    ) -> set[int]:
        base = (
            "SELECT DISTINCT o.receiver_id FROM callback_outbox o"
            " JOIN receivers r ON r.receiver_id = o.receiver_id"
            " WHERE o.status = ? AND r.wallet_id = ?"
        )

        def work(cur: Any) -> set[int]:
            if receiver_ids is None:
                rows = self._execute(cur, base, (OUTBOX_PENDING, wallet_id)).fetchall()
                return {int(row[0]) for row in rows}
            found: set[int] = set()
            for chunk, params in in_lists(sorted(set(receiver_ids))):
                sql = f"{base} AND o.receiver_id IN ({chunk})"
                rows = self._execute(cur, sql, (OUTBOX_PENDING, wallet_id, *params)).fetchall()
                found.update(int(row[0]) for row in rows)
            return found

        if receiver_ids is not None and not receiver_ids:
            return set()
        return self._read(work)

    def _outbox_event(self, cur: Any, event_id: str) -> OutboxEvent:
        row = self._execute(cur, f"{SELECT_OUTBOX} WHERE event_id = ?", (event_id,)).fetchone()
        return outbox_from_row(row)

    def retry_callback(self, event_id: str, wallet_id: str, now: int) -> OutboxEvent:
        find = (
            "SELECT r.wallet_id FROM callback_outbox o"
            " JOIN receivers r ON r.receiver_id = o.receiver_id WHERE o.event_id = ?"
        )
        requeue = (
            "UPDATE callback_outbox SET status = ?, next_attempt_at = ?, delivered_at = NULL,"
            " first_attempt_at = NULL WHERE event_id = ?"
        )

        def work(cur: Any) -> OutboxEvent:
            row = self._execute(cur, find, (event_id,)).fetchone()
            if row is None or plain(row[0]) != wallet_id:
                raise NotFound(f"no callback event {event_id}", event_id=event_id)
            self._execute(cur, requeue, (OUTBOX_PENDING, now, event_id))
            return self._outbox_event(cur, event_id)

        return self._write(work)

    def retry_failed_callbacks(
        self, wallet_id: str, now: int, *, receiver_id: int | None = None
    ) -> int:
        owners = "SELECT receiver_id FROM receivers WHERE wallet_id = ?"
        params: list[Any] = [OUTBOX_PENDING, now, OUTBOX_FAILED, wallet_id]
        if receiver_id is not None:
            owners += " AND receiver_id = ?"
            params.append(receiver_id)
        sql = (
            "UPDATE callback_outbox SET status = ?, next_attempt_at = ?, first_attempt_at = NULL"
            f" WHERE status = ? AND receiver_id IN ({owners})"
        )
        return self._write(lambda cur: int(self._execute(cur, sql, params).rowcount))

    def get_callback(self, event_id: str) -> tuple[CallbackRecord, list[CallbackAttempt]] | None:
        attempts_sql = (
            f"SELECT {', '.join(ATTEMPT_COLUMNS)} FROM callback_attempts WHERE event_id = ?"
            " ORDER BY attempted_at DESC, attempt_id DESC LIMIT ?"
        )

        def work(cur: Any) -> tuple[CallbackRecord, list[CallbackAttempt]] | None:
            sql = f"{SELECT_CALLBACK} WHERE o.event_id = ?"
            row = self._execute(cur, sql, (event_id,)).fetchone()
            if row is None:
                return None
            rows = self._execute(cur, attempts_sql, (event_id, MAX_ATTEMPTS_SHOWN)).fetchall()
            return callback_from_row(row), [attempt_from_row(r) for r in reversed(rows)]

        return self._read(work)

    def list_callbacks(
        self,
        *,
        wallet_id: str | None = None,
        receiver_id: int | None = None,
        status: str | None = None,
        limit: int = 50,
        before_seq: int | None = None,
    ) -> list[CallbackRecord]:
        check_limit(limit)
        if status is not None and status not in OUTBOX_STATUSES:
            raise InvalidParams(
                f"unknown callback status {status!r}; one of {', '.join(OUTBOX_STATUSES)}"
            )
        where, params = where_clause(
            (
                ("r.wallet_id = ?", wallet_id),
                ("o.receiver_id = ?", receiver_id),
                ("o.status = ?", status),
                ("o.seq < ?", before_seq),
            )
        )
        sql = f"{SELECT_CALLBACK}{where} ORDER BY o.seq DESC LIMIT ?"
        params.append(limit)
        rows = self._read(lambda cur: self._execute(cur, sql, params).fetchall())
        return [callback_from_row(row) for row in rows]

    def callback_backlog(self, wallet_id: str) -> CallbackBacklog:
        sql = (
            "SELECT o.status, COUNT(*), MIN(o.created_at) FROM callback_outbox o"
            " JOIN receivers r ON r.receiver_id = o.receiver_id"
            " WHERE r.wallet_id = ? AND o.status IN (?, ?) GROUP BY o.status"
        )
        params = (wallet_id, OUTBOX_PENDING, OUTBOX_FAILED)
        rows = self._read(lambda cur: self._execute(cur, sql, params).fetchall())
        found = {plain(status): (int(count), oldest) for status, count, oldest in rows}
        pending, oldest = found.get(OUTBOX_PENDING, (0, None))
        return CallbackBacklog(
            pending=pending,
            failed=found.get(OUTBOX_FAILED, (0, None))[0],
            oldest_pending_created_at=None if oldest is None else int(oldest),
        )
