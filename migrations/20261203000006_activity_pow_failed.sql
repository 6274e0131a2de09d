-- Proofs of work that failed on join (issue 19), per batch and second, for the sale report:
-- wrong, expired, reused, foreign or forged (a join without a proof is the protocol's first step,
-- answered with a challenge, and is not counted).
ALTER TABLE batch_activity ADD COLUMN pow_failed BIGINT NOT NULL DEFAULT 0 CHECK (pow_failed >= 0);
