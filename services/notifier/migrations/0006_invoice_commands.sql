-- Commands to the notifier (ordersctl invoice release | send | resend, or another service):
-- each command_id is obeyed once. running: started and not finished; a command found running
-- after a crash may have emailed, so it is answered as in doubt, never run again.
CREATE TABLE commands (
    command_id           text PRIMARY KEY,
    command_type         text NOT NULL,
    marketplace          text NOT NULL,
    marketplace_order_id text NOT NULL,
    request_digest       text NOT NULL,
    outcome              text NOT NULL CHECK (outcome IN ('running', 'accepted', 'rejected')),
    reason               text,
    answer               jsonb,
    received_at          timestamptz NOT NULL DEFAULT now(),
    completed_at         timestamptz
);

-- The event a document answers (order.shipped, order.refunded), to email it later on request;
-- and the emails sent again on request.
ALTER TABLE invoices
    ADD COLUMN source jsonb,
    ADD COLUMN resends integer NOT NULL DEFAULT 0,
    ADD COLUMN last_resent_at timestamptz;
