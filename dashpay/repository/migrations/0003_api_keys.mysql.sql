-- API keys of the HTTP API (domain/apikeys.py). Only the SHA-256 of a key is stored
-- (64 hex digits), with its first characters to tell keys apart; scopes are sorted
-- names separated by single spaces. A revoked key keeps its row (revoked_at set), so
-- `apikey list` shows what existed. last_used_at is approximate (written at most once
-- a minute per key). Idempotent, like every MySQL migration (DDL commits implicitly).
CREATE TABLE IF NOT EXISTS api_keys (
    id           BIGINT       NOT NULL AUTO_INCREMENT,
    label        VARCHAR(100) NOT NULL CHECK (CHAR_LENGTH(label) >= 1),
    scopes       VARCHAR(255) NOT NULL CHECK (CHAR_LENGTH(scopes) >= 1),
    token_hash   CHAR(64)     NOT NULL CHECK (CHAR_LENGTH(token_hash) = 64),
    prefix       VARCHAR(16)  NOT NULL CHECK (CHAR_LENGTH(prefix) >= 1),
    created_at   BIGINT       NOT NULL CHECK (created_at >= 0),
    revoked_at   BIGINT       NULL CHECK (revoked_at >= 0),
    last_used_at BIGINT       NULL CHECK (last_used_at >= 0),
    PRIMARY KEY (id),
    UNIQUE KEY api_keys_token_hash_uq (token_hash)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin ROW_FORMAT=DYNAMIC;
