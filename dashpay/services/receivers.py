"""Receivers: create, show, list, cancel. All business rules for receivers live here;
the control server only decodes and encodes, the repository only stores."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from functools import partial
from typing import TYPE_CHECKING, Any

import trio

from dashpay.domain.clock import now_ms
from dashpay.domain.errors import Conflict, NotFound, PriceUnavailable, Unavailable
from dashpay.domain.model import (
    CreateReceiverParams,
    ListReceiversParams,
    NewReceiver,
    Receiver,
    ReceiverResult,
)
from dashpay.domain.status import CHANGE_DROPPED
from dashpay.domain.views import checkout_url, receiver_view
from dashpay.domain.wallet import Wallet
from dashpay.engine.record import cancel_receiver
from dashpay.net.guard import check_creation_target
from dashpay.repository.base import MAX_CREATE_BATCH, Repository

if TYPE_CHECKING:
    from dashpay.config.model import CallbacksConfig
    from dashpay.services.prices.service import PriceService

log = logging.getLogger("dashpay.receivers")


# Creates waiting for the writer. Past this, callers wait to enqueue (back-pressure);
# the control server's connection limit keeps it far from full in practice.
CREATE_QUEUE_SIZE = 1024
# With more than gap_limit_warning receivers in a row unpaid, the warning is logged at
# the first such create and then once per this many creates, not on every one.
GAP_WARNING_EVERY = 1000
# Reads of the gap before one that no drop overlapped is taken as it is.
GAP_READ_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class ReceiverDefaults:
    expires_after: float  # seconds; 0 = never
    callback_url: str | None
    gap_limit_warning: int = 20  # Electrum's default gap limit
    gap_limit_max: int | None = None  # refuse new receivers past this many unpaid
    gap_warning_every: int = GAP_WARNING_EVERY
    # [http] public_url: with it, answers carry each receiver's checkout_url.
    public_url: str | None = None


class UnpaidGap:
    """The unpaid gap of the wallet's chain, kept in memory: receivers in a row at the
    end of the chain that never received anything (``next_index - 1 - last_paid``).

    Read from the database once (``load``), then moved by what changes it: creates
    (``created``) and the payments the engine records (``recorded``). A payment can only
    shrink the gap, except a drop that takes the newest paid receiver back to zero;
    then the value is ``stale`` and is read again before it is next used. Not thread
    safe: call it from the trio thread only."""

    __slots__ = ("next_index", "last_paid", "_loading", "_paid_while_loading", "_drops")

    def __init__(self) -> None:
        self.next_index: int | None = None  # None: unknown, read it from the database
        self.last_paid = -1
        self._loading = False
        self._paid_while_loading = -1
        self._drops = 0

    @property
    def stale(self) -> bool:
        return self.next_index is None

    @property
    def value(self) -> int:
        assert self.next_index is not None, "load the gap first"
        return self.next_index - 1 - self.last_paid

    def loading(self) -> int:
        """Call before reading the database; pass what it returns to ``load``."""
        self._loading = True
        self._paid_while_loading = -1
        return self._drops

    def load(self, next_index: int, gap: int, token: int, *, force: bool = False) -> bool:
        """What the database said (``next_index`` and ``unpaid_gap``), merged with the
        payments recorded while it was being read. A drop during the read may have been
        missed by it: then (unless ``force``) the value stays stale, to be read again,
        and this returns False."""
        self._loading = False
        if token != self._drops and not force:
            return False
        self.next_index = next_index
        self.last_paid = max(next_index - 1 - gap, self._paid_while_loading)
        return True

    def created(self, hd_index: int) -> None:
        if self.next_index is not None:
            self.next_index = max(self.next_index, hd_index + 1)

    def recorded(self, hd_index: int, received_duffs: int, *, dropped: bool = False) -> None:
        """A receiver's money as just recorded; ``dropped``: a payment of it was dropped."""
        if received_duffs > 0:
            self.last_paid = max(self.last_paid, hd_index)
            if self._loading:
                self._paid_while_loading = max(self._paid_while_loading, hd_index)
        elif dropped and (self._loading or hd_index >= self.last_paid):
            self._drops += 1
            self.next_index = None


@dataclass(slots=True, eq=False)
class _CreateRequest:
    """One validated create waiting for the writer, and its outcome."""

    new: NewReceiver
    done: trio.Event = field(default_factory=trio.Event)
    taken: bool = False  # the writer has it: it will be written and handed to the engine
    abandoned: bool = False  # its caller left before the writer took it: skip it
    result: tuple[Receiver, bool] | None = None
    error: BaseException | None = None

    def answer(self, result: tuple[Receiver, bool]) -> None:
        self.result = result
        self.done.set()

    def fail(self, error: BaseException) -> None:
        self.error = error
        self.done.set()


class ReceiverService:
    """Receiver use cases. ``on_created`` / ``on_cancelled`` tell the payment engine
    to start or stop watching (it owns the pending table).

    Creates are written by one task, ``run``: callers queue their validated requests
    and the writer takes whatever is waiting (up to ``MAX_CREATE_BATCH``) into one
    ``create_receivers`` call (one thread hop, one transaction), hands the new
    receivers to the engine, then answers each caller.

    With ``callback_rules`` (the daemon's [callbacks]), a ``callback_url`` those rules
    would refuse at every send is refused at creation (``check_creation_target``)."""

    def __init__(
        self,
        repo: Repository,
        wallet: Wallet,
        defaults: ReceiverDefaults,
        *,
        clock: Callable[[], int] = now_ms,
        prices: PriceService | None = None,
        callback_rules: CallbacksConfig | None = None,
        on_created: Callable[[Receiver], Awaitable[None]] | None = None,
        on_cancelled: Callable[[Receiver], Awaitable[None]] | None = None,
    ) -> None:
        self.repo = repo
        self.wallet = wallet
        self.defaults = defaults
        self.clock = clock
        self.prices = prices
        self.callback_rules = callback_rules
        self.on_created = on_created
        self.on_cancelled = on_cancelled
        self.gap = UnpaidGap()
        # One read of the gap at a time (the writer's and `status`'s): ``UnpaidGap``
        # tracks the payments recorded during one read, not during two overlapping.
        self._gap_read = trio.Lock()
        self._creates_since_warning: int | None = None  # None: not warned in this gap
        self._queue, self._queued = trio.open_memory_channel[_CreateRequest](CREATE_QUEUE_SIZE)

    async def create(self, request: CreateReceiverParams) -> dict[str, Any]:
        """Create a receiver (or return the one its idempotency key already made).

        On cancellation: a request the writer has not taken yet is dropped, nothing is
        written; one it has taken is still written and watched by the engine, only the
        answer is lost (a retry with the same idempotency key returns it)."""
        if request.callback_url and self.callback_rules is not None:
            await check_creation_target(request.callback_url, self.callback_rules)
        fiat = None
        if request.amount_duffs is not None:  # priced in DASH
            amount_duffs = request.amount_duffs
        else:
            if self.prices is None:
                raise PriceUnavailable(
                    f"no price source is configured for {request.currency}; "
                    "give the amount in DASH",
                    currency=request.currency,
                )
            fiat = await self.prices.convert(request.amount, request.currency)
            amount_duffs = fiat.amount_duffs
        created_at = self.clock()
        expires_after = (
            self.defaults.expires_after if request.expires_after is None else request.expires_after
        )
        new = NewReceiver(
            wallet_id=self.wallet.wallet_id,
            chain=self.wallet.chain,
            amount_duffs=amount_duffs,
            created_at=created_at,
            expires_at=None if expires_after == 0 else created_at + int(expires_after * 1000),
            callback_url=request.callback_url or self.defaults.callback_url,
            description=request.description,
            username=request.username,
            idempotency_key=request.idempotency_key,
            redirect_url=request.redirect_url,
            fiat_amount=None if fiat is None else fiat.fiat_amount,
            fiat_currency=None if fiat is None else fiat.fiat_currency,
            rate=None if fiat is None else fiat.rate,
            rate_provider=None if fiat is None else fiat.rate_provider,
            rate_fetched_at=None if fiat is None else fiat.rate_fetched_at,
        )
        receiver, created = await self._written(new)
        if not created:
            if receiver.wallet_id != self.wallet.wallet_id:
                raise Conflict(
                    "idempotency_key was already used for a receiver of another wallet; "
                    "use a fresh key"
                )
            if fiat is not None:  # the rate moves: the request is what must match
                same = receiver.fiat_currency == fiat.fiat_currency and (
                    receiver.fiat_amount is not None
                    and Decimal(receiver.fiat_amount) == request.amount
                )
            else:
                same = receiver.fiat_currency is None and receiver.amount_duffs == amount_duffs
            if not same:
                raise Conflict(
                    f"idempotency_key {request.idempotency_key!r} was already used for "
                    f"receiver {receiver.receiver_id} with a different amount; "
                    "use a fresh key for a new request",
                    receiver_id=receiver.receiver_id,
                )
        view = self._view(receiver)
        view["created"] = created
        return view

    def _view(self, receiver: Receiver, payments: list | None = None) -> dict[str, Any]:
        """The receiver's view with its checkout page's address (None without
        ``[http] public_url`` or for a receiver made before public tokens)."""
        view = receiver_view(receiver, payments)
        view["checkout_url"] = checkout_url(self.defaults.public_url, receiver.public_token)
        return view

    async def _written(self, new: NewReceiver) -> tuple[Receiver, bool]:
        """Queue ``new`` for the writer and wait for its outcome."""
        request = _CreateRequest(new)
        try:
            # No checkpoint here when the queue has room: the wait below is the one.
            self._queue.send_nowait(request)
        except trio.WouldBlock:
            await self._queue.send(request)
        try:
            await request.done.wait()
        except BaseException:
            if not request.taken:
                request.abandoned = True
            raise
        if request.error is not None:
            raise request.error
        assert request.result is not None
        return request.result

    # -- the writer ---------------------------------------------------------------------
    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Write queued creates until cancelled. A batch that fails answers its callers
        with the error; the writer goes on with the next one."""
        task_status.started()
        queued = self._queued
        while True:
            batch = [await queued.receive()]
            while len(batch) < MAX_CREATE_BATCH:
                try:
                    batch.append(queued.receive_nowait())
                except trio.WouldBlock:
                    break
            batch = [request for request in batch if not request.abandoned]
            for request in batch:
                request.taken = True
            if not batch:
                continue
            try:
                await self._write(batch)
            except Exception as exc:
                if isinstance(exc, Unavailable):  # reading the gap: the database is down
                    log.warning("receiver batch failed size=%d: %s", len(batch), exc)
                else:
                    log.exception("receiver batch failed size=%d", len(batch))
                for request in batch:
                    if not request.done.is_set():
                        request.fail(exc)

    async def _write(self, batch: list[_CreateRequest]) -> None:
        if self.gap.stale:
            await self._load_gap()
        limit = self.defaults.gap_limit_max
        # Below the hard limit by more than the batch, no request of it can be refused:
        # write them together. Near the limit each one is decided in turn, as before.
        if limit is None or self.gap.value + len(batch) <= limit:
            try:
                results = await trio.to_thread.run_sync(
                    self.repo.create_receivers, [r.new for r in batch], self.wallet.address
                )
            except Unavailable as exc:  # the database, not a request: all get it
                for request in batch:
                    request.fail(exc)
                return
            except Exception as exc:
                # Refused as a whole (a taken address or key, a value the database
                # rejects): one by one, each caller gets its own outcome.
                log.info("receiver batch refused size=%d; one by one: %s", len(batch), exc)
            else:
                await self._created(results)
                for request, result in zip(batch, results, strict=True):
                    request.answer(result)
                return
        for request in batch:
            await self._write_one(request, limit)

    async def _write_one(self, request: _CreateRequest, limit: int | None) -> None:
        if self.gap.stale:
            await self._load_gap()
        gap = self.gap.value
        if limit is not None and gap >= limit:
            request.fail(
                Conflict(
                    f"{gap} receivers in a row are unpaid ([wallet] gap_limit_max = {limit}); "
                    "a wallet stops looking past its gap limit, so payments to newer "
                    "addresses would not show in it. Raise the gap limit in the wallet "
                    "(Electrum: wallet.change_gap_limit(N) in its console) and in "
                    "[wallet] gap_limit_max, or wait until some receivers are paid",
                    gap=gap,
                )
            )
            return
        try:
            result = await trio.to_thread.run_sync(
                self.repo.create_receiver, request.new, self.wallet.address
            )
        except Exception as exc:
            request.fail(exc)
            return
        await self._created([result])
        request.answer(result)

    async def unpaid_gap(self) -> tuple[int, int]:
        """The wallet chain's next index and unpaid gap, as ``status`` shows them: from
        memory, read from the database first when unknown (then kept, so a status
        poll of a big wallet does not scan its receivers each time)."""
        read = None
        if self.gap.stale:
            read = await self._load_gap()
        if self.gap.stale:  # a drop since the read: its values are the newest known
            assert read is not None
            return read
        assert self.gap.next_index is not None
        return self.gap.next_index, self.gap.value

    async def _load_gap(self) -> tuple[int, int]:
        """Read the gap from the database (at the first create or status, and after a
        drop); the last read's next index and gap."""
        wallet_id, chain = self.wallet.wallet_id, self.wallet.chain

        def read() -> tuple[int, int]:
            return self.repo.next_index(wallet_id, chain), self.repo.unpaid_gap(wallet_id, chain)

        async with self._gap_read:
            if not self.gap.stale:  # read by the caller it waited for
                assert self.gap.next_index is not None
                return self.gap.next_index, self.gap.value
            for attempt in range(1, GAP_READ_ATTEMPTS + 1):
                token = self.gap.loading()
                next_index, gap = await trio.to_thread.run_sync(read)
                # A drop recorded during the read may be missing from it: read again,
                # and after a few tries take the last read (the next drop corrects it).
                if self.gap.load(next_index, gap, token, force=attempt == GAP_READ_ATTEMPTS):
                    break
            return next_index, gap

    async def _created(self, results: Sequence[tuple[Receiver, bool]]) -> None:
        """After a commit: count the new receivers in the gap, warn, log them and hand
        them to the engine. One INFO line per batch (a line costs more CPU than the
        insert it reports); each receiver's address is logged at DEBUG."""
        made = [receiver for receiver, created in results if created]
        if not made:
            return
        log.info(
            "receivers created count=%d ids=%d-%d indices=%d-%d",
            len(made),
            made[0].receiver_id,
            made[-1].receiver_id,
            made[0].hd_index,
            made[-1].hd_index,
        )
        detail = log.isEnabledFor(logging.DEBUG)
        for receiver in made:
            if detail:
                log.debug(
                    "receiver created id=%d index=%d address=%s amount_duffs=%d",
                    receiver.receiver_id,
                    receiver.hd_index,
                    receiver.address,
                    receiver.amount_duffs,
                )
            self.gap.created(receiver.hd_index)
            self._maybe_warn()
            if self.on_created is not None:
                await self.on_created(receiver)

    def _maybe_warn(self) -> None:
        if self.gap.stale:
            return
        gap = self.gap.value
        if gap <= self.defaults.gap_limit_warning:
            self._creates_since_warning = None
            return
        since = self._creates_since_warning
        if since is not None and since + 1 < self.defaults.gap_warning_every:
            self._creates_since_warning = since + 1
            return
        self._creates_since_warning = 0
        log.warning(
            "gap limit warning unpaid_in_a_row=%d gap_limit_warning=%d: the merchant's "
            "wallet may not show payments to addresses past its gap limit",
            gap,
            self.defaults.gap_limit_warning,
        )

    def recorded(self, results: Sequence[ReceiverResult]) -> None:
        """The engine recorded these receivers' payments: keep the unpaid gap true."""
        wallet_id, chain = self.wallet.wallet_id, self.wallet.chain
        for result in results:
            receiver = result.receiver
            if receiver.wallet_id == wallet_id and receiver.chain == chain:
                dropped = any(change.kind == CHANGE_DROPPED for change in result.changes)
                self.gap.recorded(receiver.hd_index, receiver.received_duffs, dropped=dropped)

    async def get(self, receiver_id: int) -> dict[str, Any]:

        def load() -> tuple[Receiver | None, list]:
            receiver = self.repo.get_receiver(receiver_id)
            payments = self.repo.list_payments(receiver_id) if receiver else []
            return receiver, payments

        receiver, payments = await trio.to_thread.run_sync(load)
        if receiver is None:
            raise NotFound(f"no receiver with id {receiver_id}", receiver_id=receiver_id)
        return self._view(receiver, payments)

    async def list(self, request: ListReceiversParams) -> dict[str, Any]:
        receivers = await trio.to_thread.run_sync(
            lambda: self.repo.list_receivers(
                wallet_id=self.wallet.wallet_id,
                status=request.status,
                limit=request.limit,
                before_id=request.before_id,
            )
        )
        more = len(receivers) == request.limit
        return {
            "receivers": [self._view(r) for r in receivers],
            "next_before_id": receivers[-1].receiver_id if more and receivers else None,
        }

    async def cancel(self, receiver_id: int) -> dict[str, Any]:
        unit = partial(cancel_receiver, receiver_id=receiver_id, now=self.clock())
        receiver = await trio.to_thread.run_sync(self.repo.transaction, unit)
        log.info("receiver cancelled id=%d", receiver_id)
        if self.on_cancelled is not None:
            await self.on_cancelled(receiver)
        return self._view(receiver)
