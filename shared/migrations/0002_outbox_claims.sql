-- The relay claims rows with a lease, commits, and only then publishes: no transaction stays
-- open (holding row locks and a connection) while it waits for the broker's confirms. A relay
-- that dies mid-publish leaves its claim to expire; the rows are then published again (the
-- consumers' inboxes absorb the copy).
ALTER TABLE outbox ADD COLUMN claimed_until timestamptz;
