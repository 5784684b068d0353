-- Wallet ownership as a lease in a table (docs/operations.md). SQLite is one machine
-- and keeps its exclusive flock on <database>.lock; the table exists here too so the
-- two backends keep one schema.
CREATE TABLE IF NOT EXISTS wallet_leases (
    wallet_id  TEXT    NOT NULL PRIMARY KEY,
    owner      TEXT    NOT NULL,
    epoch      INTEGER NOT NULL CHECK (epoch >= 0),
    expires_at INTEGER NOT NULL
);
