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

-- Applies per-(sale, batch, user) unit deltas to both counters, and returns the first buyer the
-- change takes above the sale's per-user limit, if any (only the rows it touched are looked at,
-- through their keys: the cost of a group commit does not grow with the batch). Batch rows are
-- locked in key order first, so two statements touching the same batches never deadlock on them;
-- they also serialise every statement on these holdings.
CREATE FUNCTION apply_unit_deltas(deltas JSONB)
    RETURNS TABLE (sale_id BIGINT, batch_no BIGINT, user_id TEXT, units BIGINT, per_user_limit BIGINT)
    LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM sale_batches b
      JOIN (SELECT DISTINCT (d->>'sale_id')::bigint AS sale_id, (d->>'batch_no')::bigint AS batch_no
              FROM jsonb_array_elements(deltas) d) t ON b.sale_id = t.sale_id AND b.batch_no = t.batch_no
     ORDER BY b.sale_id, b.batch_no FOR NO KEY UPDATE OF b;
    UPDATE sale_batches b SET committed_units = b.committed_units + t.units
      FROM (SELECT (d->>'sale_id')::bigint AS sale_id, (d->>'batch_no')::bigint AS batch_no,
                   sum((d->>'units')::bigint) AS units
              FROM jsonb_array_elements(deltas) d GROUP BY 1, 2) t
     WHERE b.sale_id = t.sale_id AND b.batch_no = t.batch_no AND t.units <> 0;
    -- Existing rows are updated and missing ones inserted (an upsert would check the CHECK on
    -- the row it proposes to insert, a negative one for a release, before finding the conflict).
    RETURN QUERY
    WITH d AS (
        SELECT (e->>'sale_id')::bigint AS sale_id, (e->>'batch_no')::bigint AS batch_no,
               e->>'user_id' AS user_id, sum((e->>'units')::bigint) AS units
          FROM jsonb_array_elements(deltas) e GROUP BY 1, 2, 3
    ), updated AS (
        UPDATE batch_holdings h SET units = h.units + d.units FROM d
         WHERE h.sale_id = d.sale_id AND h.batch_no = d.batch_no AND h.user_id = d.user_id
        RETURNING h.sale_id, h.batch_no, h.user_id, h.units, d.units AS delta
    ), added AS (
        INSERT INTO batch_holdings AS h (sale_id, batch_no, user_id, units)
        SELECT d.sale_id, d.batch_no, d.user_id, d.units FROM d
         WHERE NOT EXISTS (SELECT 1 FROM updated u
                            WHERE u.sale_id = d.sale_id AND u.batch_no = d.batch_no AND u.user_id = d.user_id)
        RETURNING h.sale_id, h.batch_no, h.user_id, h.units, h.units AS delta
    )
    SELECT t.sale_id, t.batch_no, t.user_id, t.units, s.per_user_limit
      FROM (SELECT * FROM updated UNION ALL SELECT * FROM added) t
      JOIN sales s ON s.id = t.sale_id
     WHERE t.delta > 0 AND t.units > s.per_user_limit
     LIMIT 1;
END $$;

-- Inserted orders hold their units: both counters grow, and a buyer taken above the limit fails
-- the statement (the writer answers limit_reached; the stock's CHECK fails it as sold_out). The
-- hot path (one call per group commit), so it reads the transition table directly, without the
-- JSON round trip the other triggers take through apply_unit_deltas.
CREATE FUNCTION orders_count_inserted_units() RETURNS TRIGGER LANGUAGE plpgsql AS $$
DECLARE
    over RECORD;
BEGIN
    PERFORM 1 FROM sale_batches b
     WHERE (b.sale_id, b.batch_no) IN (SELECT i.sale_id, i.batch_no FROM inserted i)
     ORDER BY b.sale_id, b.batch_no FOR NO KEY UPDATE;
    UPDATE sale_batches b SET committed_units = b.committed_units + t.units
      FROM (SELECT i.sale_id, i.batch_no, sum(i.quantity) AS units FROM inserted i
             WHERE i.status IN ('pending_payment', 'paid') GROUP BY 1, 2) t
     WHERE b.sale_id = t.sale_id AND b.batch_no = t.batch_no;
    WITH d AS (
        SELECT i.sale_id, i.batch_no, i.user_id, sum(i.quantity)::bigint AS units FROM inserted i
         WHERE i.status IN ('pending_payment', 'paid') GROUP BY 1, 2, 3
    ), updated AS (
        UPDATE batch_holdings h SET units = h.units + d.units FROM d
         WHERE h.sale_id = d.sale_id AND h.batch_no = d.batch_no AND h.user_id = d.user_id
        RETURNING h.sale_id, h.batch_no, h.user_id, h.units
    ), added AS (
        INSERT INTO batch_holdings AS h (sale_id, batch_no, user_id, units)
        SELECT d.sale_id, d.batch_no, d.user_id, d.units FROM d
         WHERE NOT EXISTS (SELECT 1 FROM updated u
                            WHERE u.sale_id = d.sale_id AND u.batch_no = d.batch_no AND u.user_id = d.user_id)
        RETURNING h.sale_id, h.batch_no, h.user_id, h.units
    )
    SELECT t.sale_id, t.batch_no, t.user_id, t.units, s.per_user_limit INTO over
      FROM (SELECT * FROM updated UNION ALL SELECT * FROM added) t
      JOIN sales s ON s.id = t.sale_id
     WHERE t.units > s.per_user_limit
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'buyer % would hold % units of sale % batch %, above the limit of %',
                over.user_id, over.units, over.sale_id, over.batch_no, over.per_user_limit
            USING ERRCODE = 'check_violation', CONSTRAINT = 'batch_holdings_per_user_limit',
                  TABLE = 'batch_holdings';
    END IF;
    RETURN NULL;
END $$;
-- Planned for each group's rows, never from a generic plan made while the tables were small.
ALTER FUNCTION orders_count_inserted_units() SET plan_cache_mode = force_custom_plan;
ALTER FUNCTION apply_unit_deltas(JSONB) SET plan_cache_mode = force_custom_plan;

CREATE FUNCTION orders_count_changed_units() RETURNS TRIGGER LANGUAGE plpgsql AS $$
DECLARE
    deltas JSONB;
BEGIN
    SELECT jsonb_agg(jsonb_build_object('sale_id', sale_id, 'batch_no', batch_no, 'user_id', user_id,
                                        'units', units))
      INTO deltas
      FROM (SELECT sale_id, batch_no, user_id, sum(units) AS units FROM (
                SELECT n.sale_id, n.batch_no, n.user_id,
                       CASE WHEN n.status IN ('pending_payment', 'paid') THEN n.quantity ELSE 0 END
                     - CASE WHEN o.status IN ('pending_payment', 'paid') THEN o.quantity ELSE 0 END AS units
                  FROM changed_new n JOIN changed_old o ON o.id = n.id
                 WHERE (n.status IN ('pending_payment', 'paid')) <> (o.status IN ('pending_payment', 'paid'))
                    OR n.quantity <> o.quantity) c
             GROUP BY 1, 2, 3 HAVING sum(units) <> 0) d;
    IF deltas IS NOT NULL THEN
        PERFORM * FROM apply_unit_deltas(deltas);
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
             WHERE status IN ('pending_payment', 'paid') GROUP BY 1, 2, 3) d;
    IF deltas IS NOT NULL THEN
        PERFORM * FROM apply_unit_deltas(deltas);
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
