-- Credit notes (factures d'avoir) are documents as invoices are: numbered without gaps in a
-- series of their own per seller and year, archived, and emailed exactly once by the same
-- claim-and-doubt rule. They share the invoices table: kind says which document a row is,
-- refund_key which refund of the order a credit note answers ('' for the invoice).
ALTER TABLE invoice_sequences ADD COLUMN series text NOT NULL DEFAULT 'invoice';
ALTER TABLE invoice_sequences DROP CONSTRAINT invoice_sequences_pkey;
ALTER TABLE invoice_sequences ADD PRIMARY KEY (seller, series, year);

ALTER TABLE invoices
    ADD COLUMN kind text NOT NULL DEFAULT 'invoice' CHECK (kind IN ('invoice', 'credit_note')),
    ADD COLUMN refund_key text NOT NULL DEFAULT '',
    -- A credit note's invoice number.
    ADD COLUMN refers_to text,
    -- The document's lines as issued: a credit note credits the invoice's lines by key.
    ADD COLUMN lines jsonb;
ALTER TABLE invoices DROP CONSTRAINT invoices_pkey;
ALTER TABLE invoices ADD PRIMARY KEY (marketplace, marketplace_order_id, kind, refund_key);
ALTER TABLE invoices DROP CONSTRAINT invoices_seller_year_sequence_key;
ALTER TABLE invoices ADD CONSTRAINT invoices_series_sequence_key UNIQUE (seller, kind, year, sequence);

-- Each refund the processor announced, kept until it is credited: its invoice may not be
-- issued yet (held, say), and it is credited once the invoice is.
CREATE TABLE refunds (
    marketplace          text NOT NULL,
    marketplace_order_id text NOT NULL,
    refund_key           text NOT NULL,
    -- The order.refunded envelope.
    refund               jsonb NOT NULL,
    received_at          timestamptz NOT NULL DEFAULT now(),
    -- credited: its credit note is numbered; nothing: nothing was left to credit;
    -- held: Lengow's figures cannot be credited as they are (see reason), looked at again
    -- at each start; settled_at is set for the other two.
    outcome              text CHECK (outcome IN ('credited', 'nothing', 'held')),
    reason               text,
    settled_at           timestamptz,
    PRIMARY KEY (marketplace, marketplace_order_id, refund_key)
);

CREATE INDEX refunds_waiting ON refunds (marketplace, marketplace_order_id)
    WHERE settled_at IS NULL;

-- archived: numbered and archived, not emailed (INVOICE_MODE=on_request: the seller sends it
-- when the customer asks).
ALTER TABLE invoices DROP CONSTRAINT invoices_email_status_check;
ALTER TABLE invoices ADD CONSTRAINT invoices_email_status_check
    CHECK (email_status IN ('pending', 'sending', 'in_doubt', 'sent', 'failed', 'archived'));
