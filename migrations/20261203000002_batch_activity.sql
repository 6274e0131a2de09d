-- What each batch's sale report is computed from (issue 18), kept in PostgreSQL so that the
-- report of any past batch outlives Redis's end of life for its keys and a Redis loss.

-- Per second of a batch's life, what the instances saw, summed over instances (each adds its own
-- counts once a second: the `activity` job). Seconds are Redis's clock.
CREATE TABLE batch_activity (
    sale_id        BIGINT      NOT NULL,
    batch_no       BIGINT      NOT NULL,
    second         TIMESTAMPTZ NOT NULL,
    -- buyers admitted to their turn, and of them those admitted to units that came back
    -- (beyond the first wave the stock could serve)
    admitted       BIGINT      NOT NULL DEFAULT 0 CHECK (admitted >= 0),
    reoffered      BIGINT      NOT NULL DEFAULT 0 CHECK (reoffered >= 0),
    -- admitted buyers whose turn ran out unused
    lapsed         BIGINT      NOT NULL DEFAULT 0 CHECK (lapsed >= 0),
    -- the lowest and highest ticket admitted in the second
    first_ticket   BIGINT,
    last_ticket    BIGINT,
    -- admission steps that admitted a ticket at or below one an earlier step had (expected 0)
    out_of_order   BIGINT      NOT NULL DEFAULT 0 CHECK (out_of_order >= 0),
    -- joins that took a new place (joining again keeps it: not counted), and joins refused
    -- (sold out, closed, not open)
    joins          BIGINT      NOT NULL DEFAULT 0 CHECK (joins >= 0),
    joins_refused  BIGINT      NOT NULL DEFAULT 0 CHECK (joins_refused >= 0),
    -- queue requests answered 429
    rate_limited   BIGINT      NOT NULL DEFAULT 0 CHECK (rate_limited >= 0),
    -- buyers told their final answer (sold out, closed) for the first time
    told_final     BIGINT      NOT NULL DEFAULT 0 CHECK (told_final >= 0),
    PRIMARY KEY (sale_id, batch_no, second),
    FOREIGN KEY (sale_id, batch_no) REFERENCES sale_batches (sale_id, batch_no)
);

-- The draw's fairness figure: Spearman's rho between when the cohort's buyers joined and the
-- place they were drawn to (near 0: arriving early bought nothing). NULL below three entrants.
ALTER TABLE batch_draws ADD COLUMN arrival_rho DOUBLE PRECISION;
