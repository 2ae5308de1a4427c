-- The poller's memory: how far each source has been read, and what each order looked like.

-- Orders are read up to updated_to; only advanced once a whole window was published.
CREATE TABLE watermarks (
    source       text PRIMARY KEY,
    updated_to   timestamptz NOT NULL,
    succeeded_at timestamptz NOT NULL
);

-- A digest of each order as last published: an unchanged order is not published again.
CREATE TABLE fingerprints (
    marketplace          text NOT NULL,
    marketplace_order_id text NOT NULL,
    fingerprint          text NOT NULL,
    published_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (marketplace, marketplace_order_id)
);

-- The days whose 3-day catch-up is done, per source.
CREATE TABLE catchups (
    source       text NOT NULL,
    day          date NOT NULL,
    completed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, day)
);

-- One row per poll, for operators: what was asked, read, published and skipped.
CREATE TABLE poll_runs (
    id           bigserial PRIMARY KEY,
    source       text NOT NULL,
    kind         text NOT NULL,
    window_from  timestamptz NOT NULL,
    window_to    timestamptz NOT NULL,
    started_at   timestamptz NOT NULL,
    finished_at  timestamptz NOT NULL,
    fetched      integer NOT NULL,
    published    integer NOT NULL,
    unchanged    integer NOT NULL,
    malformed    integer NOT NULL,
    filtered     integer NOT NULL,
    error        text
);
