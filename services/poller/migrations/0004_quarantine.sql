-- Orders Lengow returned that could not be read: kept with the reason and the JSON as Lengow
-- sent it, read again at every poll (the watermark does not pass them), released once they
-- read, shown to operators (ordersctl quarantine).
CREATE TABLE quarantined_orders (
    marketplace          text NOT NULL,
    marketplace_order_id text NOT NULL,
    source               text NOT NULL,
    reason               text NOT NULL,
    raw                  jsonb NOT NULL,
    -- The watermark stays at or before this: the order's updated_at when it could be read,
    -- else the start of the window it was found in.
    held_from            timestamptz NOT NULL,
    first_seen           timestamptz NOT NULL DEFAULT now(),
    last_seen            timestamptz NOT NULL DEFAULT now(),
    polls                integer NOT NULL DEFAULT 1,
    PRIMARY KEY (marketplace, marketplace_order_id)
);
CREATE INDEX quarantined_orders_by_source ON quarantined_orders (source, held_from);
