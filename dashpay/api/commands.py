"""THE command table: every command the daemon answers, declared once.

Like Electrum's ``commands.py``, a decorator records each command with its parameters
into one registry, ``COMMANDS``. From it are built:

- the control socket's dispatcher (``api/dispatch.py``): the allow-list check, the
  parsing of every parameter and the call of the handler;
- the Typer CLI (``cli/commands.py``): each command's options and arguments, their help
  and the same parsing run client-side, so a typo fails with exit 2 even while the
  daemon is down;
- the HTTP API (``api/http/``) and its OpenAPI document: each command's ``http``
  routes ("POST /v1/receivers"; a ``{name}`` path segment is the parameter ``name``),
  its parameters and its scope. A command without routes is not on the HTTP API.

A parameter says how it is parsed (a function from ``api/params.py``, given the raw
JSON value or None when absent) and how it is spelled on the command line. A command
whose parameters depend on each other has one ``parse`` for the whole request instead.
A handler gets the running services (``Services``) and the parsed parameters as
keyword arguments.

This module is imported by every CLI invocation: stdlib only at import time; the
services are named for type checking only.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dashpay.api import params as p
from dashpay.domain.apikeys import (  # the scopes are declared once, there
    ADMIN,
    CALLBACKS_READ,
    CALLBACKS_WRITE,
    RECEIVERS_READ,
    RECEIVERS_WRITE,
    SANDBOX,
    SCOPES,
    api_key_view,
)

if TYPE_CHECKING:
    from dashpay.services.apikeys import ApiKeyService
    from dashpay.services.callbacks.service import CallbackService
    from dashpay.services.prices.service import PriceService
    from dashpay.services.receivers import ReceiverService
    from dashpay.services.rescan import Reconciler

# How long a CLI call waits for the answer, unless the command says otherwise.
DEFAULT_TIMEOUT = 65.0


@dataclass(frozen=True, slots=True)
class Param:
    """One parameter of a command.

    ``cli`` is its command-line spelling: ``"--limit"`` (an option; ``"--lock/--no-lock"``
    for a flag with both forms), ``"ID"`` (an argument: upper case), or None (not on
    the command line). Argument names are upper case and name what is given: ``ID`` (a
    receiver), ``EVENT_ID``, ``ADDRESS``, ``TXID``, ``URL``, ``AMOUNT``. ``cli_type`` is
    what Typer converts the text to: str, int, bool, or list[str] / list[int] (several
    arguments)."""

    name: str
    help: str
    parse: Callable[[Any], Any] | None = None  # None: the command's `parse` reads it
    cli: str | None = None
    cli_type: type = str
    cli_default: Any = None
    required: bool = False
    # How HTTP query and path values are read, and the OpenAPI type: string, integer,
    # boolean, array (of ``json_items``).
    json_type: str = "string"
    json_items: str = "string"


@dataclass
class Services:
    """What handlers reach: the running daemon's services. One that is still None (the
    daemon is starting) makes the commands that need it "not available yet"."""

    status: Callable[[], Awaitable[dict[str, Any]]]
    receivers: ReceiverService | None = None
    callbacks: CallbackService | None = None
    prices: PriceService | None = None
    reconciler: Reconciler | None = None
    apikeys: ApiKeyService | None = None
    sandbox: Any = None  # dashpay.sandbox.runtime.SandboxRuntime in sandbox mode


Handler = Callable[..., Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Command:
    name: str  # the JSON-RPC method
    help: str
    scope: str
    params: tuple[Param, ...]
    handler: Handler
    needs: str | None  # the Services attribute the handler uses
    parse: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    cli: tuple[str, ...] = ()  # e.g. ("receiver", "new"); () = not on the CLI
    timeout: float = DEFAULT_TIMEOUT
    http: tuple[str, ...] = ()  # e.g. ("GET /v1/receivers/{receiver_id}",); () = not on HTTP

    @property
    def sandbox_only(self) -> bool:
        return self.scope == SANDBOX

    def parse_params(self, raw: Any) -> dict[str, Any]:
        """The handler's keyword arguments from a request's params; InvalidParams names
        what is wrong. The one allow-list check of every command is here."""
        given = p.check_known({} if raw is None else raw, (q.name for q in self.params))
        if self.parse is not None:
            return self.parse(given)
        out = {}
        for param in self.params:
            value = given.get(param.name)
            if value is None and param.required:
                raise p.InvalidParams(f"{param.name} is required")
            out[param.name] = value if param.parse is None else param.parse(value)
        return out


COMMANDS: dict[str, Command] = {}


def command(
    name: str,
    *,
    help: str,
    scope: str,
    needs: str | None,
    params: tuple[Param, ...] = (),
    parse: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    cli: tuple[str, ...] = (),
    timeout: float = DEFAULT_TIMEOUT,
    http: tuple[str, ...] = (),
) -> Callable[[Handler], Handler]:
    """Record a command in ``COMMANDS``; the decorated function is its handler."""

    def register(handler: Handler) -> Handler:
        if name in COMMANDS:
            raise ValueError(f"command {name} is declared twice")
        if scope not in SCOPES:  # every command says who may call it (the HTTP API asks)
            raise ValueError(f"command {name}: scope {scope!r} is not one of {SCOPES}")
        COMMANDS[name] = Command(
            name, help, scope, params, handler, needs, parse, cli, timeout, http
        )
        return handler

    return register


# -- status ------------------------------------------------------------------------------


@command(
    "status",
    help="Show the daemon's state; exits 1 when it answers but is not ready.",
    scope=ADMIN,
    needs=None,
    cli=("status",),
    http=("GET /v1/status",),
)
async def status(s: Services) -> dict[str, Any]:
    return await s.status()


# -- receivers ---------------------------------------------------------------------------

LIST_LIMIT = Param(
    "limit",
    "At most this many (1-1000), newest first.",
    cli="--limit",
    cli_type=int,
    cli_default=p.DEFAULT_LIST_LIMIT,
    json_type="integer",
)
RECEIVER_ID = Param(
    "receiver_id",
    "Receiver id.",
    parse=p.receiver_id_value,
    cli="ID",
    cli_type=int,
    required=True,
    json_type="integer",
)


@command(
    "receiver.create",
    help="Create a receiver: a fresh address and an amount due.",
    scope=RECEIVERS_WRITE,
    needs="receivers",
    params=(
        Param("amount", "Amount due, e.g. 1.5 (in --currency).", cli="--amount", required=True),
        Param("currency", "DASH or a fiat code such as USD.", cli="--currency", cli_default="DASH"),
        Param("callback_url", "Where callbacks go.", cli="--callback-url"),
        Param("description", "Up to 255 characters.", cli="--description"),
        Param("username", "Up to 255 characters.", cli="--username"),
        Param(
            "redirect_url",
            "Where the checkout page sends the customer when done (http or https).",
            cli="--redirect-url",
        ),
        Param(
            "expires_after",
            "e.g. 30m, 2h, 3d; 0 = never (default: config).",
            cli="--expires-after",
        ),
        Param(
            "idempotency_key",
            "Repeating a call with the same key returns the same receiver.",
            cli="--idempotency-key",
        ),
    ),
    parse=lambda given: {"request": p.parse_create_receiver(given)},
    cli=("receiver", "new"),
    http=("POST /v1/receivers",),
)
async def receiver_create(s: Services, request: p.CreateReceiverParams) -> dict[str, Any]:
    return await s.receivers.create(request)


@command(
    "receiver.get",
    help="Show one receiver with its payments.",
    scope=RECEIVERS_READ,
    needs="receivers",
    params=(RECEIVER_ID,),
    cli=("receiver", "show"),
    http=("GET /v1/receivers/{receiver_id}",),
)
async def receiver_get(s: Services, receiver_id: int) -> dict[str, Any]:
    return await s.receivers.get(receiver_id)


@command(
    "receiver.list",
    help="List receivers, newest first.",
    scope=RECEIVERS_READ,
    needs="receivers",
    params=(
        Param("status", "Only this status.", cli="--status"),
        LIST_LIMIT,
        Param(
            "before_id",
            "Only receivers with a lower id.",
            cli="--before",
            cli_type=int,
            json_type="integer",
        ),
    ),
    parse=lambda given: {"request": p.parse_list_receivers(given, p.RECEIVER_STATUSES)},
    cli=("receiver", "list"),
    http=("GET /v1/receivers",),
)
async def receiver_list(s: Services, request: p.ListReceiversParams) -> dict[str, Any]:
    return await s.receivers.list(request)


@command(
    "receiver.cancel",
    help="Cancel a receiver that is not paid yet (late payments are still recorded).",
    scope=RECEIVERS_WRITE,
    needs="receivers",
    params=(RECEIVER_ID,),
    cli=("receiver", "cancel"),
    http=("POST /v1/receivers/{receiver_id}/cancel",),
)
async def receiver_cancel(s: Services, receiver_id: int) -> dict[str, Any]:
    return await s.receivers.cancel(receiver_id)


@command(
    "rescan",
    help=(
        "Reconcile receivers against Insight (safe from cron at any time): the receivers "
        "given by ID, those created within --since, or (no argument) every watched one."
    ),
    scope=ADMIN,
    needs="reconciler",
    params=(
        Param(
            "receiver_ids",
            "Receiver ids; none: every watched receiver, as --all-pending.",
            cli="[ID]...",
            cli_type=list[int],
            json_type="array",
            json_items="integer",
        ),
        Param(
            "all_pending",
            "Every receiver the daemon watches (the default): those not final yet and the "
            "settled, expired or cancelled ones still inside [receivers] monitor_window, "
            "where a late payment or a drop can still show.",
            cli="--all-pending",
            cli_type=bool,
            cli_default=False,
            json_type="boolean",
        ),
        Param("since", "Receivers created in this window, e.g. 48h.", cli="--since"),
    ),
    parse=p.parse_rescan,
    cli=("rescan",),
    http=("POST /v1/rescan", "POST /v1/receivers/{receiver_ids}/rescan"),
    # A rescan of many receivers takes a while (the daemon's own request limit is higher).
    timeout=600.0,
)
async def rescan(
    s: Services, receiver_ids: list[int] | None, since_seconds: float | None
) -> dict[str, Any]:
    return await s.reconciler.rescan_request(receiver_ids, since_seconds)


@command(
    "price.get",
    help="Show the DASH price of fiat currencies: quote, provider and age.",
    scope=RECEIVERS_READ,
    needs="prices",
    params=(
        Param(
            "currencies",
            "Currency codes, e.g. USD EUR.",
            parse=p.currency_list,
            cli="[CURRENCIES]...",
            cli_type=list[str],
            json_type="array",
        ),
    ),
    cli=("price",),
    http=("GET /v1/prices",),
    # A price.get may fetch from every provider in turn for a currency with no cached
    # quote: three providers at the default 5 s timeout, plus room.
    timeout=65.0,
)
async def price_get(s: Services, currencies: list[str] | None) -> dict[str, Any]:
    return await s.prices.price_get(currencies)


# -- callbacks ---------------------------------------------------------------------------

EVENT_ID = Param("event_id", "Event id (Dashpay-Delivery).", parse=p.event_id_value, cli="EVENT_ID")


@command(
    "callbacks.list",
    help="List callback events, newest first.",
    scope=CALLBACKS_READ,
    needs="callbacks",
    params=(
        Param("status", "Only pending, delivered or failed events.", cli="--status"),
        Param(
            "receiver_id",
            "Only this receiver's.",
            cli="--receiver",
            cli_type=int,
            json_type="integer",
        ),
        LIST_LIMIT,
        Param(
            "before",
            "Page on: the value printed last.",
            cli="--before",
            cli_type=int,
            json_type="integer",
        ),
    ),
    parse=p.parse_callbacks_list,
    cli=("callbacks", "list"),
    http=("GET /v1/callbacks",),
)
async def callbacks_list(s: Services, **request: Any) -> dict[str, Any]:
    return await s.callbacks.list(**request)


@command(
    "callbacks.get",
    help="Show one event: where it goes, its state, its attempt log and its body.",
    scope=CALLBACKS_READ,
    needs="callbacks",
    params=(EVENT_ID,),
    cli=("callbacks", "show"),
    http=("GET /v1/callbacks/{event_id}",),
)
async def callbacks_get(s: Services, event_id: str) -> dict[str, Any]:
    return await s.callbacks.get(event_id)


@command(
    "callbacks.retry",
    help=(
        "Deliver an event again now (failed, delivered or waiting to retry), or every "
        "failed one; the event id stays the same, so your handler can de-duplicate."
    ),
    scope=CALLBACKS_WRITE,
    needs="callbacks",
    params=(
        Param("event_id", "The event to send again (same Dashpay-Delivery).", cli="[EVENT_ID]"),
        Param(
            "all_failed",
            "Every failed event.",
            cli="--all-failed",
            cli_type=bool,
            cli_default=False,
            json_type="boolean",
        ),
        Param(
            "receiver_id",
            "With --all-failed: only this receiver's.",
            cli="--receiver",
            cli_type=int,
            json_type="integer",
        ),
    ),
    parse=p.parse_callbacks_retry,
    cli=("callbacks", "retry"),
    http=("POST /v1/callbacks/{event_id}/retry", "POST /v1/callbacks/retry"),
)
async def callbacks_retry(s: Services, event_id: str | None, receiver_id: int | None) -> dict:
    return await s.callbacks.retry(event_id, receiver_id)


@command(
    "callbacks.test",
    help=(
        "Send a signed `ping` event to URL and report the answer (exit 0 on a 2xx, 4 when "
        "the [callbacks] rules refuse the URL, 5 on any other answer or none)."
    ),
    scope=CALLBACKS_WRITE,
    needs="callbacks",
    params=(
        Param(
            "url",
            "Your callback endpoint, e.g. https://shop.example/cb",
            parse=p.test_url,
            cli="URL",
            required=True,
        ),
    ),
    cli=("callbacks", "test"),
    http=("POST /v1/callbacks/test",),
)
async def callbacks_test(s: Services, url: str) -> dict[str, Any]:
    return await s.callbacks.test(url)


@command(
    "callbacks.secret",
    help="Print the secret that signs callbacks (copy it into your handler).",
    scope=ADMIN,
    needs="callbacks",
    cli=("callbacks", "secret"),
    # No HTTP route: the key that signs callbacks never leaves the host over the network
    # (a leaked API key must not let anyone forge callbacks).
)
async def callbacks_secret(s: Services) -> dict[str, Any]:
    return await s.callbacks.secret()


# -- API keys (of the HTTP API; the control socket's own callers need none) ---------------


@command(
    "apikey.create",
    help=(
        "Make an API key for the HTTP API and print it: this is the only time it is shown "
        "(only its SHA-256 is stored)."
    ),
    scope=ADMIN,
    needs="apikeys",
    params=(
        Param(
            "label",
            "A name for the key, e.g. shop1 (1-100 characters).",
            cli="--label",
            required=True,
        ),
        Param(
            "scopes",
            f"What the key may do; repeat for more: {', '.join(SCOPES)}.",
            cli="--scope",
            cli_type=list,
            required=True,
            json_type="array",
        ),
    ),
    parse=p.parse_api_key_create,
    cli=("apikey", "create"),
)
async def apikey_create(s: Services, label: str, scopes: frozenset[str]) -> dict[str, Any]:
    key, token = await s.apikeys.create(label, scopes)
    return {"id": key.id, "label": key.label, "scopes": sorted(key.scopes), "key": token}


@command(
    "apikey.list",
    help="List the API keys (never the keys themselves): prefix, label, scopes, times.",
    scope=ADMIN,
    needs="apikeys",
    cli=("apikey", "list"),
)
async def apikey_list(s: Services) -> dict[str, Any]:
    return {"api_keys": [api_key_view(key) for key in await s.apikeys.list()]}


@command(
    "apikey.revoke",
    help="Revoke an API key: requests with it fail from now on (the row stays, revoked).",
    scope=ADMIN,
    needs="apikeys",
    params=(
        Param(
            "key_id", "Key id (apikey list shows it).", parse=p.api_key_id, cli="ID", required=True
        ),
    ),
    cli=("apikey", "revoke"),
)
async def apikey_revoke(s: Services, key_id: int) -> dict[str, Any]:
    return api_key_view(await s.apikeys.revoke(key_id))


# -- sandbox -----------------------------------------------------------------------------

TXID = Param("txid", "Transaction id.", parse=p.sandbox_txid, cli="TXID", required=True)


@command(
    "sandbox.pay",
    help="Pay an address on the sandbox network.",
    scope=SANDBOX,
    needs="sandbox",
    params=(
        Param("address", "Address to pay.", cli="ADDRESS", required=True),
        Param(
            "amount",
            "Amount in DASH, e.g. 1.5",
            parse=p.sandbox_amount,
            cli="AMOUNT",
            required=True,
        ),
        Param(
            "lock",
            "InstantSend-lock the payment (--no-lock: leave it unlocked).",
            parse=lambda v: p.flag(v, "lock", True),
            cli="--lock/--no-lock",
            cli_type=bool,
            cli_default=True,
            json_type="boolean",
        ),
        Param(
            "silent",
            "Visible over REST only, no socket event (exercises rescans).",
            parse=lambda v: p.flag(v, "silent", False),
            cli="--silent",
            cli_type=bool,
            cli_default=False,
            json_type="boolean",
        ),
    ),
    cli=("sandbox", "pay"),
)
async def sandbox_pay(s: Services, address: Any, amount: int, lock: bool, silent: bool) -> dict:
    return await s.sandbox.pay(address, amount, lock=lock, silent=silent)


@command(
    "sandbox.mine",
    help="Mine blocks on the sandbox network (confirms the mempool).",
    scope=SANDBOX,
    needs="sandbox",
    params=(
        Param(
            "blocks",
            "How many blocks (1-1000).",
            parse=p.block_count,
            cli="--blocks",
            cli_type=int,
            cli_default=1,
            json_type="integer",
        ),
    ),
    cli=("sandbox", "mine"),
)
async def sandbox_mine(s: Services, blocks: int) -> dict[str, Any]:
    return await s.sandbox.mine(blocks)


@command(
    "sandbox.drop",
    help="Drop a mempool transaction from the sandbox network (as a double spend would).",
    scope=SANDBOX,
    needs="sandbox",
    params=(TXID,),
    cli=("sandbox", "drop"),
)
async def sandbox_drop(s: Services, txid: str) -> dict[str, Any]:
    return await s.sandbox.drop(txid)


@command(
    "sandbox.lock",
    help="InstantSend-lock a sandbox transaction now.",
    scope=SANDBOX,
    needs="sandbox",
    params=(TXID,),
    cli=("sandbox", "lock"),
)
async def sandbox_lock(s: Services, txid: str) -> dict[str, Any]:
    return await s.sandbox.lock(txid)
