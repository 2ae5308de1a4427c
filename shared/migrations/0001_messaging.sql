-- Inbox and outbox of a service, created in the service's own schema (search_path).

-- Ids of the messages already handled: a redelivery finds its id here and changes nothing.
CREATE TABLE inbox (
    message_id   uuid PRIMARY KEY,
    message_type text NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now()
);

-- Messages written in the same transaction as the state change that caused them; the relay
-- publishes them with publisher confirms and then stamps published_at.
CREATE TABLE outbox (
    id           bigserial PRIMARY KEY,
    message_id   uuid NOT NULL UNIQUE,
    exchange     text NOT NULL,
    routing_key  text NOT NULL,
    body         bytea NOT NULL,
    correlation_id text,
    reply_to     text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);

CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL;
