-- Sales, their batches and the admin audit trail.
--
-- PostgreSQL holds the truth about what is on sale and when; Redis holds only the hot state a batch
-- needs on sale day (see ARCHITECTURE.md). CHECK constraints repeat the most important validation
-- rules so that no code path, present or future, can store an impossible sale.

CREATE TABLE sales (
    id                  BIGSERIAL PRIMARY KEY,
    name                TEXT        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    sku                 TEXT        NOT NULL CHECK (length(sku) BETWEEN 1 AND 64),
    price_cents         BIGINT      NOT NULL CHECK (price_cents > 0),
    currency            TEXT        NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    -- units released by each batch
    stock               BIGINT      NOT NULL CHECK (stock > 0),
    per_user_limit      BIGINT      NOT NULL CHECK (per_user_limit >= 1 AND per_user_limit <= stock),
    -- 'once': opens_at is set; 'weekly': weekly_* are set
    schedule_kind       TEXT        NOT NULL CHECK (schedule_kind IN ('once', 'weekly')),
    opens_at            TIMESTAMPTZ,
    weekly_weekday      TEXT        CHECK (weekly_weekday IN ('mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun')),
    weekly_time         TIME,
    weekly_timezone     TEXT,
    prequeue_secs       INTEGER     NOT NULL CHECK (prequeue_secs >= 0),
    admission_rate      INTEGER     NOT NULL CHECK (admission_rate >= 1),
    admission_ttl_secs  INTEGER     NOT NULL CHECK (admission_ttl_secs >= 1),
    payment_window_secs INTEGER     NOT NULL CHECK (payment_window_secs >= admission_ttl_secs),
    duration_secs       INTEGER     CHECK (duration_secs >= 1),
    -- set when operations close the sale: the current batch closes and no further batch is made
    ended_at            TIMESTAMPTZ,
    -- optimistic concurrency: every admin change bumps it; the HTTP API exposes it as the ETag
    version             BIGINT      NOT NULL DEFAULT 1,
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT sales_schedule_shape CHECK (
        (schedule_kind = 'once' AND opens_at IS NOT NULL
            AND weekly_weekday IS NULL AND weekly_time IS NULL AND weekly_timezone IS NULL)
        OR (schedule_kind = 'weekly' AND opens_at IS NULL
            AND weekly_weekday IS NOT NULL AND weekly_time IS NOT NULL AND weekly_timezone IS NOT NULL)
    )
);

-- One row per opening of a sale. A one-off sale has batch 1 only; a weekly sale gets the next
-- week's batch when the current one's window ends.
CREATE TABLE sale_batches (
    sale_id    BIGINT      NOT NULL REFERENCES sales (id),
    batch_no   BIGINT      NOT NULL CHECK (batch_no >= 1),
    opens_at   TIMESTAMPTZ NOT NULL,
    -- end of the batch's window (duration, or the next batch's pre-queue); NULL: open until sold
    -- out or closed by operations
    closes_at  TIMESTAMPTZ CHECK (closes_at > opens_at),
    stock      BIGINT      NOT NULL CHECK (stock > 0),
    paused     BOOLEAN     NOT NULL DEFAULT false,
    -- set when operations close the batch before its window ends
    closed_at  TIMESTAMPTZ,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (sale_id, batch_no),
    -- two instances rolling a weekly sale over at once insert the same row; one wins
    UNIQUE (sale_id, opens_at)
);

-- Every admin action: who, what, when, and the request's details.
CREATE TABLE admin_audit (
    id        BIGSERIAL PRIMARY KEY,
    at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    actor     TEXT        NOT NULL,
    action    TEXT        NOT NULL,
    sale_id   BIGINT      REFERENCES sales (id),
    details   JSONB       NOT NULL DEFAULT '{}'::jsonb
);

CREATE INDEX admin_audit_sale_at ON admin_audit (sale_id, at);
