-- The processor's orders: one row per order, its status and latest snapshot, and its history.

CREATE TABLE orders (
    marketplace                 text NOT NULL,
    marketplace_order_id        text NOT NULL,
    lengow_status               text NOT NULL,
    manomano_status             text,
    is_delivered_by_marketplace boolean NOT NULL,
    snapshot                    jsonb NOT NULL,
    -- When the marketplace last changed the order: an older snapshot is stale.
    source_updated_at           timestamptz NOT NULL,
    version                     integer NOT NULL,
    shipment_announced          boolean NOT NULL,
    created_at                  timestamptz NOT NULL DEFAULT now(),
    updated_at                  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (marketplace, marketplace_order_id)
);

CREATE INDEX orders_by_status ON orders (lengow_status);

-- Every status move, applied (initial, normal, skipped) or flagged and not applied (rejected).
CREATE TABLE order_transitions (
    id                   bigserial PRIMARY KEY,
    marketplace          text NOT NULL,
    marketplace_order_id text NOT NULL,
    from_status          text,
    to_status            text NOT NULL,
    kind                 text NOT NULL CHECK (kind IN ('initial', 'normal', 'skipped', 'rejected')),
    cause                text NOT NULL CHECK (cause IN ('observed', 'command')),
    observed_at          timestamptz NOT NULL,
    recorded_at          timestamptz NOT NULL DEFAULT now(),
    message_id           uuid NOT NULL,
    command_id           text,
    reason               text,
    FOREIGN KEY (marketplace, marketplace_order_id) REFERENCES orders
);

CREATE INDEX order_transitions_by_order ON order_transitions (marketplace, marketplace_order_id, id);
