"""Names of the control methods: one definition for the daemon and the CLI."""

STATUS = "status"
RECEIVER_CREATE = "receiver.create"
RECEIVER_GET = "receiver.get"
RECEIVER_LIST = "receiver.list"
RECEIVER_CANCEL = "receiver.cancel"
RESCAN = "rescan"
PRICE_GET = "price.get"
SANDBOX_PAY = "sandbox.pay"
SANDBOX_MINE = "sandbox.mine"
SANDBOX_DROP = "sandbox.drop"
SANDBOX_LOCK = "sandbox.lock"
CALLBACKS_LIST = "callbacks.list"
CALLBACKS_GET = "callbacks.get"
CALLBACKS_RETRY = "callbacks.retry"
CALLBACKS_TEST = "callbacks.test"
CALLBACKS_SECRET = "callbacks.secret"

ALL = frozenset(
    {
        STATUS,
        RECEIVER_CREATE,
        RECEIVER_GET,
        RECEIVER_LIST,
        RECEIVER_CANCEL,
        RESCAN,
        PRICE_GET,
        SANDBOX_PAY,
        SANDBOX_MINE,
        SANDBOX_DROP,
        SANDBOX_LOCK,
        CALLBACKS_LIST,
        CALLBACKS_GET,
        CALLBACKS_RETRY,
        CALLBACKS_TEST,
        CALLBACKS_SECRET,
    }
)
