-- The checkout page (docs/checkout.md): each receiver's public token, the unguessable
-- id in its page's address (domain/tokens.py; NULL for receivers made before this
-- version, which have no page), and where the page sends the customer when done.
ALTER TABLE receivers ADD COLUMN public_token TEXT CHECK (length(public_token) BETWEEN 16 AND 64);
ALTER TABLE receivers ADD COLUMN redirect_url TEXT;
CREATE UNIQUE INDEX receivers_public_token_uq ON receivers (public_token);
