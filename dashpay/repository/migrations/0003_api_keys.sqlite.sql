-- API keys of the HTTP API (domain/apikeys.py). Only the SHA-256 of a key is stored
-- (64 hex digits), with its first characters to tell keys apart; scopes are sorted
-- names separated by single spaces. A revoked key keeps its row (revoked_at set), so
-- `apikey list` shows what existed. last_used_at is approximate (written at most once
-- a minute per key).
CREATE TABLE api_keys (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    label        TEXT    NOT NULL CHECK (length(label) BETWEEN 1 AND 100),
    scopes       TEXT    NOT NULL CHECK (length(scopes) BETWEEN 1 AND 255),
    token_hash   TEXT    NOT NULL CHECK (length(token_hash) = 64),
    prefix       TEXT    NOT NULL CHECK (length(prefix) BETWEEN 1 AND 16),
    created_at   INTEGER NOT NULL CHECK (created_at >= 0),
    revoked_at   INTEGER CHECK (revoked_at >= 0),
    last_used_at INTEGER CHECK (last_used_at >= 0)
);
CREATE UNIQUE INDEX api_keys_token_hash_uq ON api_keys (token_hash);
