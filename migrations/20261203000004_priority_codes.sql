-- Priority codes (issue 19): single-use codes that let their holder buy without queueing, in the
-- spirit of Xiaomi's F-code. Only a code's SHA-256 is kept: the codes themselves are shown once,
-- when generated. A code is spent by the first buyer who redeems it (in the batch current then);
-- redeeming it again is that buyer's own retry, answered the same admission.
CREATE TABLE priority_codes (
    id          BIGSERIAL   PRIMARY KEY,
    sale_id     BIGINT      NOT NULL REFERENCES sales (id),
    code_hash   BYTEA       NOT NULL UNIQUE CHECK (length(code_hash) = 32),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    used_by     TEXT,
    batch_no    BIGINT,
    used_at     TIMESTAMPTZ,
    CHECK ((used_by IS NULL) = (used_at IS NULL) AND (used_by IS NULL) = (batch_no IS NULL))
);
CREATE INDEX priority_codes_by_sale ON priority_codes (sale_id, used_at);
