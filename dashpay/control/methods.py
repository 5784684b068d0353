"""Names of the control methods: one definition for the daemon and the CLI."""

STATUS = "status"
RECEIVER_CREATE = "receiver.create"
RECEIVER_GET = "receiver.get"
RECEIVER_LIST = "receiver.list"
RECEIVER_CANCEL = "receiver.cancel"
RESCAN = "rescan"
SANDBOX_PAY = "sandbox.pay"
SANDBOX_MINE = "sandbox.mine"
SANDBOX_DROP = "sandbox.drop"
SANDBOX_LOCK = "sandbox.lock"

ALL = frozenset(
    {
        STATUS,
        RECEIVER_CREATE,
        RECEIVER_GET,
        RECEIVER_LIST,
        RECEIVER_CANCEL,
        RESCAN,
        SANDBOX_PAY,
        SANDBOX_MINE,
        SANDBOX_DROP,
        SANDBOX_LOCK,
    }
)
