-- What the daily reconciliation found: an order the 15-minute polls never published or a
-- change they missed, which the 3-day catch-up found (new, changed), and an older order not
-- in a final status whose status at Lengow differs from the last one published (drifted).
-- The daily report lists them (ordersctl report).
CREATE TABLE catchup_finds (
    id                   bigserial PRIMARY KEY,
    source               text NOT NULL,
    marketplace          text NOT NULL,
    marketplace_order_id text NOT NULL,
    kind                 text NOT NULL CHECK (kind IN ('new', 'changed', 'drifted')),
    lengow_status        text NOT NULL,
    found_at             timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX catchup_finds_by_day ON catchup_finds (found_at);

-- The status last published for each order: the daily re-read compares it with Lengow's.
ALTER TABLE fingerprints ADD COLUMN lengow_status text;
CREATE INDEX fingerprints_by_age ON fingerprints (source, published_at);
