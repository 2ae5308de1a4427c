-- Invoices held: the order shipped, but its invoice would not be right with the data and
-- settings at hand (a VAT rate that cannot be known, parts that do not add up to what the
-- customer paid). No number is taken: the shipment is kept, and looked at again when the
-- notifier starts (settings fixed) and when an operator releases it.
CREATE TABLE invoice_holds (
    marketplace          text NOT NULL,
    marketplace_order_id text NOT NULL,
    reason               text NOT NULL,
    -- The order.shipped envelope, to issue the invoice from once released.
    shipment             jsonb NOT NULL,
    held_at              timestamptz NOT NULL DEFAULT now(),
    checked_at           timestamptz NOT NULL DEFAULT now(),
    -- Set when the invoice was issued after all.
    released_at          timestamptz,
    PRIMARY KEY (marketplace, marketplace_order_id)
);

CREATE INDEX invoice_holds_open ON invoice_holds (held_at) WHERE released_at IS NULL;
