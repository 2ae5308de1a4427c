-- Each marketplace's rules for seller actions, as the poller read them from Lengow's
-- marketplaces document (marketplace.rules_changed): commands are validated against them.
CREATE TABLE marketplace_rules (
    marketplace text PRIMARY KEY,
    source      text NOT NULL,
    rules       jsonb NOT NULL,
    fetched_at  timestamptz NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);
