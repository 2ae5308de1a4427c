-- The action gateway's memory. Lengow has no idempotency key: what was sent for each command
-- is remembered here so that no command reaches the marketplace twice.

CREATE TABLE actions (
    command_id           text PRIMARY KEY,
    source               text NOT NULL,
    marketplace          text NOT NULL,
    marketplace_order_id text NOT NULL,
    action_type          text NOT NULL,
    arguments            jsonb NOT NULL,
    -- sending: recorded, the POST may or may not have reached Lengow (in doubt if interrupted);
    -- sent: Lengow gave its action id; succeeded / failed: the marketplace's verdict.
    state                text NOT NULL CHECK (state IN ('sending', 'sent', 'succeeded', 'failed')),
    lengow_action_id     text,
    errors               jsonb NOT NULL DEFAULT '[]',
    attempts             integer NOT NULL DEFAULT 0,
    correlation_id       text,
    created_at           timestamptz NOT NULL DEFAULT now(),
    sent_at              timestamptz,
    updated_at           timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX actions_to_check ON actions (updated_at) WHERE state = 'sent';

-- Which source (Lengow account) each order came from: its actions go through the same one.
ALTER TABLE fingerprints ADD COLUMN source text;
