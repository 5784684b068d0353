-- dashpay schema version 1 (MySQL / MariaDB): receivers, payments, the callback outbox,
-- HD counters, the price cache and settings. Times are unix epoch milliseconds; money is
-- integer duffs; fiat amounts and rates are Decimal text.
--
-- MySQL commits DDL implicitly, so a migration cannot be rolled back as a whole: every
-- statement here is idempotent (IF NOT EXISTS, indexes declared inline) and a migrator
-- that died half-way simply runs it again. utf8mb4_bin makes comparisons exact, like
-- SQLite: addresses (base58) and idempotency keys are case-sensitive.

CREATE TABLE IF NOT EXISTS receivers (
    receiver_id     BIGINT       NOT NULL AUTO_INCREMENT,
    wallet_id       VARCHAR(64)  NOT NULL,
    chain           INT UNSIGNED NOT NULL,
    hd_index        INT UNSIGNED NOT NULL,
    address         VARCHAR(35)  NOT NULL,
    amount_duffs    BIGINT       NOT NULL CHECK (amount_duffs >= 0),
    received_duffs  BIGINT       NOT NULL DEFAULT 0 CHECK (received_duffs >= 0),
    status          VARCHAR(16)  NOT NULL
        CHECK (status IN ('pending', 'partial', 'paid', 'settled', 'expired', 'cancelled')),
    overpaid        TINYINT      NOT NULL DEFAULT 0 CHECK (overpaid IN (0, 1)),
    late            TINYINT      NOT NULL DEFAULT 0 CHECK (late IN (0, 1)),
    created_at      BIGINT       NOT NULL,
    updated_at      BIGINT       NOT NULL,
    expires_at      BIGINT       NULL,
    paid_at         BIGINT       NULL,
    settled_at      BIGINT       NULL,
    closed_at       BIGINT       NULL,
    fiat_amount     VARCHAR(64)  NULL,
    fiat_currency   VARCHAR(16)  NULL,
    rate            VARCHAR(64)  NULL,
    rate_provider   VARCHAR(64)  NULL,
    rate_fetched_at BIGINT       NULL,
    callback_url    TEXT         NULL,
    description     VARCHAR(255) NULL,
    username        VARCHAR(255) NULL,
    idempotency_key VARCHAR(255) NULL,
    PRIMARY KEY (receiver_id),
    UNIQUE KEY receivers_address_uq (address),
    UNIQUE KEY receivers_idempotency_key_uq (idempotency_key),
    UNIQUE KEY receivers_hd_uq (wallet_id, chain, hd_index),
    KEY receivers_wallet_status_ix (wallet_id, status),
    KEY receivers_wallet_closed_ix (wallet_id, closed_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin ROW_FORMAT=DYNAMIC;

CREATE TABLE IF NOT EXISTS payments (
    payment_id     BIGINT       NOT NULL AUTO_INCREMENT,
    receiver_id    BIGINT       NOT NULL,
    txid           CHAR(64)     NOT NULL CHECK (CHAR_LENGTH(txid) = 64),
    address        VARCHAR(35)  NOT NULL,
    amount_duffs   BIGINT       NOT NULL CHECK (amount_duffs >= 0),
    instant_locked TINYINT      NOT NULL DEFAULT 0 CHECK (instant_locked IN (0, 1)),
    block_height   INT UNSIGNED NULL,
    confirmations  INT UNSIGNED NOT NULL DEFAULT 0,
    dropped        TINYINT      NOT NULL DEFAULT 0 CHECK (dropped IN (0, 1)),
    first_seen_at  BIGINT       NOT NULL,
    updated_at     BIGINT       NOT NULL,
    PRIMARY KEY (payment_id),
    UNIQUE KEY payments_tx_address_uq (txid, address),
    KEY payments_receiver_ix (receiver_id),
    CONSTRAINT payments_receiver_fk FOREIGN KEY (receiver_id) REFERENCES receivers (receiver_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin ROW_FORMAT=DYNAMIC;

CREATE TABLE IF NOT EXISTS callback_outbox (
    seq             BIGINT       NOT NULL AUTO_INCREMENT,
    event_id        VARCHAR(64)  NOT NULL,
    receiver_id     BIGINT       NOT NULL,
    event           VARCHAR(64)  NOT NULL,
    payload         MEDIUMTEXT   NOT NULL,
    status          VARCHAR(16)  NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        INT UNSIGNED NOT NULL DEFAULT 0,
    next_attempt_at BIGINT       NOT NULL,
    created_at      BIGINT       NOT NULL,
    delivered_at    BIGINT       NULL,
    last_error      TEXT         NULL,
    first_attempt_at BIGINT      NULL,
    PRIMARY KEY (seq),
    UNIQUE KEY callback_outbox_event_uq (event_id),
    KEY callback_outbox_due_ix (status, next_attempt_at),
    KEY callback_outbox_receiver_ix (receiver_id, status, seq),
    CONSTRAINT callback_outbox_receiver_fk
        FOREIGN KEY (receiver_id) REFERENCES receivers (receiver_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin ROW_FORMAT=DYNAMIC;

CREATE TABLE IF NOT EXISTS callback_attempts (
    attempt_id   BIGINT       NOT NULL AUTO_INCREMENT,
    event_id     VARCHAR(64)  NOT NULL,
    attempted_at BIGINT       NOT NULL,
    http_status  SMALLINT     NULL,
    error        TEXT         NULL,
    duration_ms  INT UNSIGNED NOT NULL,
    PRIMARY KEY (attempt_id),
    KEY callback_attempts_event_ix (event_id, attempted_at),
    CONSTRAINT callback_attempts_event_fk
        FOREIGN KEY (event_id) REFERENCES callback_outbox (event_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin ROW_FORMAT=DYNAMIC;

CREATE TABLE IF NOT EXISTS hd_counters (
    wallet_id  VARCHAR(64)  NOT NULL,
    chain      INT UNSIGNED NOT NULL,
    next_index INT UNSIGNED NOT NULL,
    PRIMARY KEY (wallet_id, chain)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin ROW_FORMAT=DYNAMIC;

CREATE TABLE IF NOT EXISTS price_quotes (
    currency   VARCHAR(16) NOT NULL,
    price      VARCHAR(64) NOT NULL,
    provider   VARCHAR(64) NOT NULL,
    fetched_at BIGINT      NOT NULL,
    PRIMARY KEY (currency)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin ROW_FORMAT=DYNAMIC;

CREATE TABLE IF NOT EXISTS settings (
    name  VARCHAR(64) NOT NULL,
    value TEXT        NOT NULL,
    PRIMARY KEY (name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin ROW_FORMAT=DYNAMIC;
