-- The notifier's invoices: numbered without gaps, archived, and their email's fate.

-- The last number given per seller and year; incremented in the transaction that stores the
-- invoice, so a rolled-back invoice gives its number back and no number is skipped.
CREATE TABLE invoice_sequences (
    seller     text NOT NULL,
    year       integer NOT NULL,
    last_value integer NOT NULL,
    PRIMARY KEY (seller, year)
);

CREATE TABLE invoices (
    marketplace          text NOT NULL,
    marketplace_order_id text NOT NULL,
    seller               text NOT NULL,
    year                 integer NOT NULL,
    sequence             integer NOT NULL,
    invoice_number       text NOT NULL UNIQUE,
    issued_on            date NOT NULL,
    language             text NOT NULL,
    currency             text NOT NULL,
    total_incl           numeric(14, 2) NOT NULL,
    recipient            text,
    message_id           text NOT NULL UNIQUE,
    pdf                  bytea NOT NULL,
    -- pending: not sent yet; sending: an attempt was started (in doubt if its worker died);
    -- sent: the SMTP server accepted it; failed: it cannot be sent (see last_error).
    email_status         text NOT NULL CHECK (email_status IN ('pending', 'sending', 'sent', 'failed')),
    attempts             integer NOT NULL DEFAULT 0,
    last_error           text,
    created_at           timestamptz NOT NULL DEFAULT now(),
    sent_at              timestamptz,
    PRIMARY KEY (marketplace, marketplace_order_id),
    UNIQUE (seller, year, sequence)
);

CREATE INDEX invoices_by_status ON invoices (email_status);
