-- When the customer's personal data was removed from the stored snapshot (a set time after
-- the order was settled); the order, its amounts and its history stay.
ALTER TABLE orders ADD COLUMN personal_data_removed_at timestamptz;
CREATE INDEX orders_keeping_personal_data ON orders (updated_at)
    WHERE personal_data_removed_at IS NULL;
