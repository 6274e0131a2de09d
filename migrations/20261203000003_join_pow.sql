-- Proof of work on join (issue 19), per sale: the leading zero bits a join's SHA-256 must have
-- (0: none), and for an adaptive proof the join rate above which each doubling adds a bit, up to
-- a most. Both adaptive columns are set, or neither.
ALTER TABLE sales
    ADD COLUMN join_pow_bits          SMALLINT NOT NULL DEFAULT 0 CHECK (join_pow_bits BETWEEN 0 AND 28),
    ADD COLUMN join_pow_adaptive_rate INTEGER CHECK (join_pow_adaptive_rate >= 1),
    ADD COLUMN join_pow_max_bits      SMALLINT CHECK (join_pow_max_bits BETWEEN join_pow_bits AND 28),
    ADD CONSTRAINT sales_join_pow_adaptive CHECK ((join_pow_adaptive_rate IS NULL) = (join_pow_max_bits IS NULL));
