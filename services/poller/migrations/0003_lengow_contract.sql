-- Lengow's contract (../shared/lengow-api.md): one Lengow action per order line, marketplace
-- rules read from Lengow, and orders marked imported (PATCH /v3.0/orders/moi/).

-- A command's action is now "open" until the verdict of every Lengow action it needed.
ALTER TABLE actions DROP CONSTRAINT actions_state_check;
UPDATE actions SET state = 'open' WHERE state IN ('sending', 'sent');
ALTER TABLE actions ADD CONSTRAINT actions_state_check
    CHECK (state IN ('open', 'succeeded', 'failed'));
DROP INDEX actions_to_check;

-- One row per Lengow action a command needs (one per line for line-level actions).
CREATE TABLE action_parts (
    command_id       text NOT NULL REFERENCES actions (command_id),
    part             integer NOT NULL,
    line             text,
    arguments        jsonb NOT NULL,
    -- new: never sent; sending: the POST left without a verdict on it (in doubt: look before
    -- sending again); sent: Lengow's id known; succeeded / failed: the marketplace's verdict.
    state            text NOT NULL DEFAULT 'new'
                     CHECK (state IN ('new', 'sending', 'sent', 'succeeded', 'failed')),
    lengow_action_id text,
    errors           jsonb NOT NULL DEFAULT '[]',
    attempts         integer NOT NULL DEFAULT 0,
    created_at       timestamptz NOT NULL DEFAULT now(),
    sent_at          timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (command_id, part)
);
CREATE INDEX action_parts_open ON action_parts (updated_at)
    WHERE state IN ('new', 'sending', 'sent');
CREATE UNIQUE INDEX action_parts_lengow_id ON action_parts (lengow_action_id)
    WHERE lengow_action_id IS NOT NULL;

-- What was in flight before this migration: Lengow's id known, or in doubt.
INSERT INTO action_parts (command_id, part, line, arguments, state, lengow_action_id, attempts,
                          created_at, sent_at, updated_at)
SELECT command_id, 0, NULL, arguments,
       CASE WHEN lengow_action_id IS NULL THEN 'sending' ELSE 'sent' END,
       lengow_action_id, attempts, created_at, sent_at, updated_at
FROM actions WHERE state = 'open';

-- Lengow's marketplaces document, per source: the actions, arguments and values it accepts.
CREATE TABLE marketplace_documents (
    source      text PRIMARY KEY,
    marketplace text NOT NULL,
    document    jsonb NOT NULL,
    digest      text NOT NULL,
    fetched_at  timestamptz NOT NULL
);

-- Orders to mark imported at Lengow, with the merchant order id written back.
CREATE TABLE imports (
    marketplace          text NOT NULL,
    marketplace_order_id text NOT NULL,
    merchant_order_id    text NOT NULL,
    state                text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done', 'failed')),
    attempts             integer NOT NULL DEFAULT 0,
    last_error           text,
    -- A replica marking it holds it until then; a failed attempt waits until then too.
    claimed_until        timestamptz,
    requested_at         timestamptz NOT NULL DEFAULT now(),
    done_at              timestamptz,
    updated_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (marketplace, marketplace_order_id)
);
CREATE INDEX imports_pending ON imports (claimed_until) WHERE state = 'pending';

