-- The pre-queue draw, provable (issue 18; see flashsale_queue::draw).
--
-- Each batch gets a second secret, `entrant_key`, from which every pre-queue buyer's draw receipt
-- is derived. It is never published (unlike the seed): with it anyone could recompute the receipt
-- of a guessable buyer id and find out from the published cohort whether that buyer joined.
-- The server draws it (32 bytes); rows that existed before this migration, and any row written
-- without one, get 244 random bits here (gen_random_uuid draws from a CSPRNG).
ALTER TABLE sale_batches ADD COLUMN entrant_key BYTEA NOT NULL
    DEFAULT (uuid_send(gen_random_uuid()) || uuid_send(gen_random_uuid()));
ALTER TABLE sale_batches ADD CONSTRAINT sale_batches_entrant_key_length CHECK (length(entrant_key) >= 16);

-- A batch's seed is committed to in public from its creation on, and the receipts handed out are
-- derived from its entrant key: neither may ever change, whoever writes the row.
CREATE FUNCTION sale_batches_keep_draw_secrets() RETURNS TRIGGER LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.prequeue_seed IS DISTINCT FROM OLD.prequeue_seed OR NEW.entrant_key IS DISTINCT FROM OLD.entrant_key THEN
        RAISE EXCEPTION 'the draw seed and entrant key of sale % batch % are fixed at its creation',
            OLD.sale_id, OLD.batch_no USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER sale_batches_keep_draw_secrets BEFORE UPDATE OF prequeue_seed, entrant_key ON sale_batches
    FOR EACH ROW EXECUTE FUNCTION sale_batches_keep_draw_secrets();

-- The sealed pre-queue cohort of a batch, recorded once at its opening (upkeep's draw recorder):
-- the entrants' leaves in drawn order (place 1 first, 32 bytes each) and the Merkle root
-- published as the cohort commitment. The seed is revealed once this row exists. Written once,
-- never changed.
CREATE TABLE batch_draws (
    sale_id      BIGINT      NOT NULL,
    batch_no     BIGINT      NOT NULL,
    cohort_size  BIGINT      NOT NULL CHECK (cohort_size >= 0),
    cohort_root  BYTEA       NOT NULL CHECK (length(cohort_root) = 32),
    entrants     BYTEA       NOT NULL,
    sealed_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (sale_id, batch_no),
    FOREIGN KEY (sale_id, batch_no) REFERENCES sale_batches (sale_id, batch_no),
    CHECK (length(entrants) = 32 * cohort_size)
);
-- Stored as is: the leaves are hashes, compression gains nothing.
ALTER TABLE batch_draws ALTER COLUMN entrants SET STORAGE EXTERNAL;

CREATE FUNCTION batch_draws_written_once() RETURNS TRIGGER LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the recorded draw of sale % batch % is never changed', OLD.sale_id, OLD.batch_no
        USING ERRCODE = 'check_violation';
END $$;
CREATE TRIGGER batch_draws_written_once BEFORE UPDATE OR DELETE ON batch_draws
    FOR EACH ROW EXECUTE FUNCTION batch_draws_written_once();
