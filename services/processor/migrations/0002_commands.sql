-- Commands from other services: one row per command_id (the caller's idempotency key), with
-- the answer given, so the same command_id always gets the same answer and one effect.

CREATE TABLE commands (
    command_id           text PRIMARY KEY,
    command_type         text NOT NULL,
    marketplace          text,
    marketplace_order_id text,
    arguments            jsonb NOT NULL DEFAULT '{}',
    outcome              text NOT NULL CHECK (outcome IN ('accepted', 'rejected')),
    reason               text,
    answer_type          text NOT NULL,
    answer               jsonb NOT NULL,
    message_id           uuid,
    received_at          timestamptz NOT NULL DEFAULT now(),
    -- Set when a poll observes the status the action leads to.
    completed_at         timestamptz
);

CREATE INDEX commands_awaiting_outcome ON commands (marketplace, marketplace_order_id)
    WHERE outcome = 'accepted' AND completed_at IS NULL;
