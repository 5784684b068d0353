-- dashpay schema version 1 (SQLite): receivers, payments, the callback outbox, HD
-- counters, the price cache and settings. Times are unix epoch milliseconds; money is
-- integer duffs; fiat amounts and rates are Decimal text. Applied in one transaction.

CREATE TABLE receivers (
    receiver_id     INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: ids order by age
    wallet_id       TEXT    NOT NULL,
    chain           INTEGER NOT NULL CHECK (chain >= 0),
    hd_index        INTEGER NOT NULL CHECK (hd_index >= 0),
    address         TEXT    NOT NULL,
    amount_duffs    INTEGER NOT NULL CHECK (amount_duffs >= 0),
    received_duffs  INTEGER NOT NULL DEFAULT 0 CHECK (received_duffs >= 0),
    status          TEXT    NOT NULL
        CHECK (status IN ('pending', 'partial', 'paid', 'settled', 'expired', 'cancelled')),
    overpaid        INTEGER NOT NULL DEFAULT 0 CHECK (overpaid IN (0, 1)),
    late            INTEGER NOT NULL DEFAULT 0 CHECK (late IN (0, 1)),
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    expires_at      INTEGER,
    paid_at         INTEGER,
    settled_at      INTEGER,
    closed_at       INTEGER,
    fiat_amount     TEXT,
    fiat_currency   TEXT,
    rate            TEXT,
    rate_provider   TEXT,
    rate_fetched_at INTEGER,
    callback_url    TEXT,
    description     TEXT,
    username        TEXT,
    idempotency_key TEXT,
    CONSTRAINT receivers_address_uq UNIQUE (address),
    CONSTRAINT receivers_idempotency_key_uq UNIQUE (idempotency_key),
    CONSTRAINT receivers_hd_uq UNIQUE (wallet_id, chain, hd_index)
);
CREATE INDEX receivers_wallet_status_ix ON receivers (wallet_id, status);
CREATE INDEX receivers_wallet_closed_ix ON receivers (wallet_id, closed_at);

CREATE TABLE payments (
    payment_id     INTEGER PRIMARY KEY AUTOINCREMENT,
    receiver_id    INTEGER NOT NULL REFERENCES receivers (receiver_id),
    txid           TEXT    NOT NULL CHECK (length(txid) = 64),
    address        TEXT    NOT NULL,
    amount_duffs   INTEGER NOT NULL CHECK (amount_duffs >= 0),
    instant_locked INTEGER NOT NULL DEFAULT 0 CHECK (instant_locked IN (0, 1)),
    block_height   INTEGER CHECK (block_height >= 0),
    confirmations  INTEGER NOT NULL DEFAULT 0 CHECK (confirmations >= 0),
    dropped        INTEGER NOT NULL DEFAULT 0 CHECK (dropped IN (0, 1)),
    first_seen_at  INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    CONSTRAINT payments_tx_address_uq UNIQUE (txid, address)
);
CREATE INDEX payments_receiver_ix ON payments (receiver_id);

CREATE TABLE callback_outbox (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,  -- delivery order per receiver
    event_id        TEXT    NOT NULL,
    receiver_id     INTEGER NOT NULL REFERENCES receivers (receiver_id),
    event           TEXT    NOT NULL,
    payload         TEXT    NOT NULL,
    status          TEXT    NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    delivered_at    INTEGER,
    last_error      TEXT,
    -- start of the retry horizon (give_up_after): the first attempt, reset by a manual retry
    first_attempt_at INTEGER,
    CONSTRAINT callback_outbox_event_uq UNIQUE (event_id)
);
CREATE INDEX callback_outbox_due_ix ON callback_outbox (status, next_attempt_at);
-- (receiver_id, status, seq) finds a receiver's oldest pending event (its head) at once
CREATE INDEX callback_outbox_receiver_ix ON callback_outbox (receiver_id, status, seq);

CREATE TABLE callback_attempts (
    attempt_id   INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id     TEXT    NOT NULL REFERENCES callback_outbox (event_id),
    attempted_at INTEGER NOT NULL,
    http_status  INTEGER,
    error        TEXT,
    duration_ms  INTEGER NOT NULL
);
CREATE INDEX callback_attempts_event_ix ON callback_attempts (event_id, attempted_at);

CREATE TABLE hd_counters (
    wallet_id  TEXT    NOT NULL,
    chain      INTEGER NOT NULL,
    next_index INTEGER NOT NULL CHECK (next_index >= 0),
    PRIMARY KEY (wallet_id, chain)
);

CREATE TABLE price_quotes (
    currency   TEXT    NOT NULL PRIMARY KEY,
    price      TEXT    NOT NULL,
    provider   TEXT    NOT NULL,
    fetched_at INTEGER NOT NULL
);

CREATE TABLE settings (
    name  TEXT NOT NULL PRIMARY KEY,
    value TEXT NOT NULL
);
