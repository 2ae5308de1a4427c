-- Why an order is in quarantine: 'malformed' (it does not read as an order) or
-- 'unknown_status' (it reads, but carries a Lengow status this version does not know; it is
-- released as soon as a version that knows the status reads it).
ALTER TABLE quarantined_orders ADD COLUMN kind text NOT NULL DEFAULT 'malformed'
    CHECK (kind IN ('malformed', 'unknown_status'));

-- What each poll found: orders with a status this version does not know, and orders a
-- catch-up published again although their fingerprint had not changed.
ALTER TABLE poll_runs ADD COLUMN unknown_status integer NOT NULL DEFAULT 0,
    ADD COLUMN republished integer NOT NULL DEFAULT 0;
