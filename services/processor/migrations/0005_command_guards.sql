-- A command_id is the caller's idempotency key: the digest of what it asked, so that the same
-- key reused for other arguments is refused rather than answered as a duplicate.
ALTER TABLE commands ADD COLUMN request_digest text;
-- The marketplace's refusal of the command's action (order.action_failed): a command that
-- failed no longer holds its order's ship or refund.
ALTER TABLE commands ADD COLUMN failed_at timestamptz;
ALTER TABLE commands ADD COLUMN failure jsonb;
