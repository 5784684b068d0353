-- When the chain source was first found not to show a payment (NULL: shown at the last
-- check). A payment flagged this way still counts; see domain/accounting.absence.
ALTER TABLE payments ADD COLUMN missing_since INTEGER CHECK (missing_since >= 0);
