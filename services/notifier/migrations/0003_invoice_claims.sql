-- A worker claims an invoice with a lease in its row, not with a session lock: a PostgreSQL
-- restart during the SMTP call frees a session lock, and the next delivery would send again;
-- a claim in the row survives it and expires only after the lease.
ALTER TABLE invoices
    ADD COLUMN claimed_by text,
    ADD COLUMN claimed_until timestamptz,
    -- Attempts whose outcome is unknown (the content left, the answer never came, or the
    -- worker died mid-call): one resend is allowed, after resend_after, never a third email.
    ADD COLUMN doubtful integer NOT NULL DEFAULT 0,
    ADD COLUMN resend_after timestamptz;

-- in_doubt: the last attempt may have been delivered; sent once more after resend_after.
ALTER TABLE invoices DROP CONSTRAINT invoices_email_status_check;
ALTER TABLE invoices ADD CONSTRAINT invoices_email_status_check
    CHECK (email_status IN ('pending', 'sending', 'in_doubt', 'sent', 'failed'));
