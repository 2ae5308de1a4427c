-- ManoMano's deadlines of each order (services/processor/deadlines.py), refreshed with every
-- snapshot, and the alerts said about them: one row per order, deadline and phase, so that
-- each is said once whatever the number of processors.
ALTER TABLE orders ADD COLUMN acceptance_due_at timestamptz;
ALTER TABLE orders ADD COLUMN shipment_due_at timestamptz;
CREATE INDEX orders_awaiting_acceptance ON orders (acceptance_due_at)
    WHERE lengow_status IN ('new', 'waiting_acceptance');
CREATE INDEX orders_awaiting_shipment ON orders (shipment_due_at)
    WHERE lengow_status IN ('accepted', 'waiting_shipment');

CREATE TABLE deadline_alerts (
    marketplace          text NOT NULL,
    marketplace_order_id text NOT NULL,
    deadline             text NOT NULL CHECK (deadline IN ('acceptance', 'shipment')),
    phase                text NOT NULL CHECK (phase IN ('approaching', 'missed')),
    due_at               timestamptz NOT NULL,
    said_at              timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (marketplace, marketplace_order_id, deadline, phase),
    FOREIGN KEY (marketplace, marketplace_order_id) REFERENCES orders ON DELETE CASCADE
);
