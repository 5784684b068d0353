-- Wallet ownership as a lease in a table (docs/operations.md): the daemon that owns a
-- wallet renews expires_at (the database server's clock, epoch milliseconds) inside
-- its write transactions; a standby takes the row over once it has expired, raising
-- epoch. Every write transaction of the owner updates this row where the epoch is its
-- own, so a deposed owner's writes fail (on Galera: a certification conflict) instead
-- of landing. A row per wallet: several wallets share a database without interfering.
CREATE TABLE IF NOT EXISTS wallet_leases (
    wallet_id  VARCHAR(64)  NOT NULL,
    owner      VARCHAR(128) NOT NULL,
    epoch      BIGINT       NOT NULL CHECK (epoch >= 0),
    expires_at BIGINT       NOT NULL,
    PRIMARY KEY (wallet_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin ROW_FORMAT=DYNAMIC;
