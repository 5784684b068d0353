"""The command table as cli/fast.py reads it: GENERATED from api/commands.py and
cli/commands.py by `python -m dashpay.cli.commands` (do not edit; a unit test checks
that it is current). Plain data: importing it costs nothing."""

COMMANDS = {
    ("apikey", "list"): ("apikey.list", 65.0, ()),
    ("apikey", "revoke"): ("apikey.revoke", 65.0, (("key_id", "ID", "str", None, True, False),)),
    ("callbacks", "list"): (
        "callbacks.list",
        65.0,
        (
            ("status", "--status", "str", None, False, False),
            ("receiver_id", "--receiver", "int", None, False, False),
            ("limit", "--limit", "int", 50, False, False),
            ("before", "--before", "int", None, False, False),
        ),
    ),
    ("callbacks", "secret"): ("callbacks.secret", 65.0, ()),
    ("callbacks", "show"): (
        "callbacks.get",
        65.0,
        (("event_id", "EVENT_ID", "str", None, True, False),),
    ),
    ("callbacks", "test"): ("callbacks.test", 65.0, (("url", "URL", "str", None, True, False),)),
    ("receiver", "cancel"): (
        "receiver.cancel",
        65.0,
        (("receiver_id", "ID", "int", None, True, False),),
    ),
    ("receiver", "list"): (
        "receiver.list",
        65.0,
        (
            ("status", "--status", "str", None, False, False),
            ("limit", "--limit", "int", 50, False, False),
            ("before_id", "--before", "int", None, False, False),
        ),
    ),
    ("receiver", "new"): (
        "receiver.create",
        65.0,
        (
            ("amount", "--amount", "str", None, True, False),
            ("currency", "--currency", "str", "DASH", False, False),
            ("callback_url", "--callback-url", "str", None, False, False),
            ("description", "--description", "str", None, False, False),
            ("username", "--username", "str", None, False, False),
            ("redirect_url", "--redirect-url", "str", None, False, False),
            ("expires_after", "--expires-after", "str", None, False, False),
            ("idempotency_key", "--idempotency-key", "str", None, False, False),
            ("quiet", "--quiet -q", "bool", False, False, True),
        ),
    ),
    ("receiver", "show"): (
        "receiver.get",
        65.0,
        (("receiver_id", "ID", "int", None, True, False),),
    ),
    ("sandbox", "drop"): ("sandbox.drop", 65.0, (("txid", "TXID", "str", None, True, False),)),
    ("sandbox", "lock"): ("sandbox.lock", 65.0, (("txid", "TXID", "str", None, True, False),)),
    ("sandbox", "mine"): ("sandbox.mine", 65.0, (("blocks", "--blocks", "int", 1, False, False),)),
    ("sandbox", "pay"): (
        "sandbox.pay",
        65.0,
        (
            ("address", "ADDRESS", "str", None, True, False),
            ("amount", "AMOUNT", "str", None, True, False),
            ("lock", "--lock/--no-lock", "bool", True, False, False),
            ("silent", "--silent", "bool", False, False, False),
        ),
    ),
    ("status",): ("status", 65.0, ()),
}
