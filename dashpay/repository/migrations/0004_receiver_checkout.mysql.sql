-- The checkout page (docs/checkout.md): each receiver's public token, the unguessable
-- id in its page's address (domain/tokens.py; NULL for receivers made before this
-- version, which have no page), and where the page sends the customer when done.
-- One ALTER statement, so the change is applied whole or not at all. The table's
-- utf8mb4_bin collation makes the token's comparison case-sensitive, as base64url needs.
ALTER TABLE receivers
    ADD COLUMN public_token VARCHAR(64) NULL
        CHECK (CHAR_LENGTH(public_token) BETWEEN 16 AND 64),
    ADD COLUMN redirect_url TEXT NULL,
    ADD UNIQUE KEY receivers_public_token_uq (public_token);
