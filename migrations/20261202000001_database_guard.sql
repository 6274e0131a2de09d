-- PostgreSQL as the last guard: whatever Redis says (stale after a crash, restored from an old
-- copy, failed over, edited by an operator mid-rebuild, or simply buggy), the database of record
-- can never hold more pending + paid units of a batch than its stock, nor more units of one buyer
-- than the sale's per-user limit.
--
-- Two counters, kept by triggers on `orders` so no code path (present, future or a hand-written
-- UPDATE) can move units without them:
-- - `sale_batches.committed_units`: units of the batch's orders that hold stock (pending_payment
--   or paid), with CHECK committed_units <= stock. An order that would exceed the stock fails its
--   INSERT with constraint `sale_batches_no_oversell`; an operator lowering the stock below it
--   fails the same way.
-- - `batch_holdings`: units each buyer holds in a batch. An insert that takes a buyer above the
--   sale's per_user_limit fails with constraint `batch_holdings_per_user_limit`.
-- The order writer maps both to a refused order (409 sold_out / limit_reached); Redis decides
-- first, so on a healthy day neither ever fires.
--
-- The triggers are per statement, over transition tables: a group commit of 256 orders costs one
-- UPDATE of the batch row and one upsert of holdings, not 256 of each.

ALTER TABLE sale_batches ADD COLUMN committed_units BIGINT NOT NULL DEFAULT 0;
UPDATE sale_batches b
   SET committed_units = COALESCE((SELECT sum(o.quantity) FROM orders o
                                    WHERE o.sale_id = b.sale_id AND o.batch_no = b.batch_no
                                      AND o.status IN ('pending_payment', 'paid')), 0);
ALTER TABLE sale_batches ADD CONSTRAINT sale_batches_no_oversell
    CHECK (committed_units >= 0 AND committed_units <= stock);

CREATE TABLE batch_holdings (
    sale_id  BIGINT NOT NULL,
    batch_no BIGINT NOT NULL,
    user_id  TEXT   NOT NULL,
    units    BIGINT NOT NULL CONSTRAINT batch_holdings_units_non_negative CHECK (units >= 0),
    PRIMARY KEY (sale_id, batch_no, user_id)
);
INSERT INTO batch_holdings (sale_id, batch_no, user_id, units)
SELECT sale_id, batch_no, user_id, sum(quantity) FROM orders
 WHERE status IN ('pending_payment', 'paid') GROUP BY sale_id, batch_no, user_id;

-- Whether an order in this status holds units of its batch.
CREATE FUNCTION order_holds_units(status TEXT) RETURNS BOOLEAN
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$ SELECT status IN ('pending_payment', 'paid') $$;

-- Applies per-(sale, batch, user) unit deltas to both counters. Batch rows are locked in key
-- order first, so two statements touching the same batches never deadlock on them.
CREATE FUNCTION apply_unit_deltas(deltas JSONB) RETURNS VOID LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM sale_batches b
      JOIN (SELECT DISTINCT (d->>'sale_id')::bigint AS sale_id, (d->>'batch_no')::bigint AS batch_no
              FROM jsonb_array_elements(deltas) d) t USING (sale_id, batch_no)
     ORDER BY b.sale_id, b.batch_no FOR NO KEY UPDATE OF b;
    UPDATE sale_batches b SET committed_units = b.committed_units + t.units
      FROM (SELECT (d->>'sale_id')::bigint AS sale_id, (d->>'batch_no')::bigint AS batch_no,
                   sum((d->>'units')::bigint) AS units
              FROM jsonb_array_elements(deltas) d GROUP BY 1, 2) t
     WHERE b.sale_id = t.sale_id AND b.batch_no = t.batch_no AND t.units <> 0;
    -- Existing rows are updated and missing ones inserted (an upsert would check the CHECK on
    -- the row it proposes to insert, a negative one for a release, before finding the conflict).
    -- The batch rows locked above serialise every statement on these holdings.
    WITH d AS (
        SELECT (d->>'sale_id')::bigint AS sale_id, (d->>'batch_no')::bigint AS batch_no,
               d->>'user_id' AS user_id, sum((d->>'units')::bigint) AS units
          FROM jsonb_array_elements(deltas) d GROUP BY 1, 2, 3
    ), updated AS (
        UPDATE batch_holdings h SET units = h.units + d.units FROM d
         WHERE h.sale_id = d.sale_id AND h.batch_no = d.batch_no AND h.user_id = d.user_id
        RETURNING h.sale_id, h.batch_no, h.user_id
    )
    INSERT INTO batch_holdings (sale_id, batch_no, user_id, units)
    SELECT d.sale_id, d.batch_no, d.user_id, d.units FROM d
     WHERE NOT EXISTS (SELECT 1 FROM updated u
                        WHERE u.sale_id = d.sale_id AND u.batch_no = d.batch_no AND u.user_id = d.user_id);
END $$;

CREATE FUNCTION orders_count_inserted_units() RETURNS TRIGGER LANGUAGE plpgsql AS $$
DECLARE
    deltas JSONB;
    over RECORD;
BEGIN
    SELECT jsonb_agg(jsonb_build_object('sale_id', sale_id, 'batch_no', batch_no, 'user_id', user_id,
                                        'units', units))
      INTO deltas
      FROM (SELECT sale_id, batch_no, user_id, sum(quantity) AS units FROM inserted
             WHERE order_holds_units(status) GROUP BY 1, 2, 3) n;
    IF deltas IS NULL THEN
        RETURN NULL;
    END IF;
    PERFORM apply_unit_deltas(deltas);
    SELECT h.sale_id, h.batch_no, h.user_id, h.units, s.per_user_limit INTO over
      FROM batch_holdings h
      JOIN (SELECT DISTINCT sale_id, batch_no, user_id FROM inserted) i USING (sale_id, batch_no, user_id)
      JOIN sales s ON s.id = h.sale_id
     WHERE h.units > s.per_user_limit
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'buyer % would hold % units of sale % batch %, above the limit of %',
                over.user_id, over.units, over.sale_id, over.batch_no, over.per_user_limit
            USING ERRCODE = 'check_violation', CONSTRAINT = 'batch_holdings_per_user_limit',
                  TABLE = 'batch_holdings';
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION orders_count_changed_units() RETURNS TRIGGER LANGUAGE plpgsql AS $$
DECLARE
    deltas JSONB;
BEGIN
    SELECT jsonb_agg(jsonb_build_object('sale_id', sale_id, 'batch_no', batch_no, 'user_id', user_id,
                                        'units', units))
      INTO deltas
      FROM (SELECT sale_id, batch_no, user_id, sum(units) AS units FROM (
                SELECT n.sale_id, n.batch_no, n.user_id,
                       CASE WHEN order_holds_units(n.status) THEN n.quantity ELSE 0 END
                     - CASE WHEN order_holds_units(o.status) THEN o.quantity ELSE 0 END AS units
                  FROM changed_new n JOIN changed_old o ON o.id = n.id
                 WHERE order_holds_units(n.status) <> order_holds_units(o.status)
                    OR n.quantity <> o.quantity) c
             GROUP BY 1, 2, 3 HAVING sum(units) <> 0) d;
    IF deltas IS NOT NULL THEN
        PERFORM apply_unit_deltas(deltas);
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION orders_count_deleted_units() RETURNS TRIGGER LANGUAGE plpgsql AS $$
DECLARE
    deltas JSONB;
BEGIN
    SELECT jsonb_agg(jsonb_build_object('sale_id', sale_id, 'batch_no', batch_no, 'user_id', user_id,
                                        'units', -units))
      INTO deltas
      FROM (SELECT sale_id, batch_no, user_id, sum(quantity) AS units FROM deleted
             WHERE order_holds_units(status) GROUP BY 1, 2, 3) d;
    IF deltas IS NOT NULL THEN
        PERFORM apply_unit_deltas(deltas);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER orders_count_inserted_units AFTER INSERT ON orders
    REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT EXECUTE FUNCTION orders_count_inserted_units();
CREATE TRIGGER orders_count_changed_units AFTER UPDATE ON orders
    REFERENCING OLD TABLE AS changed_old NEW TABLE AS changed_new
    FOR EACH STATEMENT EXECUTE FUNCTION orders_count_changed_units();
CREATE TRIGGER orders_count_deleted_units AFTER DELETE ON orders
    REFERENCING OLD TABLE AS deleted FOR EACH STATEMENT EXECUTE FUNCTION orders_count_deleted_units();

-- The Redis server the instances last saw. Its run_id is new after every restart and differs on a
-- replica promoted by a failover; either may have lost its last writes while keeping the ledgers.
-- The instance that sees a new run_id (and moves this row on, so only one does) fences every live
-- batch and rebuilds it from the orders above.
CREATE TABLE redis_incarnation (
    only_row BOOLEAN     PRIMARY KEY DEFAULT true CHECK (only_row),
    run_id   TEXT        NOT NULL,
    seen_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Reservations released as orphans: Redis reserved them, no order arrived within seconds (the
-- instance died between the reservation and the write), so upkeep gave the units back. The order
-- writer refuses an order for one of these (it could arrive late from a stalled instance), so a
-- released unit can never also be ordered. Written and checked under the batch row's lock, which
-- the writer holds while it inserts.
CREATE TABLE released_reservations (
    sale_id        BIGINT      NOT NULL,
    batch_no       BIGINT      NOT NULL,
    reservation_id BIGINT      NOT NULL,
    released_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (sale_id, batch_no, reservation_id)
);

-- A batch's end of life in Redis. Once a batch is finished (closed, past its window, its sale
-- ended) and no order of it is pending, upkeep copies what later views need here and gives every
-- Redis key of the batch an expiry: a weekly sale leaves Redis one batch's worth, not a year's.
ALTER TABLE sale_batches
    ADD COLUMN retired_at     TIMESTAMPTZ,
    ADD COLUMN final_sold     BIGINT,
    ADD COLUMN final_queued   BIGINT,
    ADD COLUMN final_admitted BIGINT;
CREATE INDEX sale_batches_to_retire ON sale_batches (sale_id, batch_no) WHERE retired_at IS NULL;

-- How far each batch's queue had gone, written by upkeep every second: the tickets handed out
-- (tail), the "now serving" counter, the first ticket whose admission window may still run, and
-- the fastest joining seen (tickets per second). If Redis loses the queue, the rebuild restarts
-- it from here: serving where it was, the recent admission windows open again, and new joiners
-- numbered after tail_hwm plus two seconds of the fastest joining, so they never get a number
-- a waiting buyer already holds.
CREATE TABLE batch_queue_marks (
    sale_id        BIGINT      NOT NULL,
    batch_no       BIGINT      NOT NULL,
    tail_hwm       BIGINT      NOT NULL DEFAULT 0 CHECK (tail_hwm >= 0),
    serving_hwm    BIGINT      NOT NULL DEFAULT 0 CHECK (serving_hwm >= 0),
    window_from    BIGINT      NOT NULL DEFAULT 0 CHECK (window_from >= 0),
    peak_join_rate BIGINT      NOT NULL DEFAULT 0 CHECK (peak_join_rate >= 0),
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (sale_id, batch_no)
);
