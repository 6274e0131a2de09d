-- Orders, their idempotency keys and payment notices; the batch epoch that fences Redis rebuilds.
--
-- PostgreSQL is the source of truth for orders: Redis's reservation ledger is rebuilt from these
-- rows when Redis loses its state (ARCHITECTURE.md, "Redis loses its state").

-- Bumped every time a batch's hot state is rebuilt in Redis from this database. A reservation
-- carries the epoch it was made in; an order is written only if its batch's epoch is still that
-- one (checked under a share lock on the batch row, which the rebuild's bump waits for), so a
-- reservation made in a Redis state that has since been lost can never become an order.
-- Epochs come from a sequence, not epoch + 1: a sequence never hands out a value twice, even when
-- the transaction that took it rolled back after Redis had already been written with it.
ALTER TABLE sale_batches ADD COLUMN epoch BIGINT NOT NULL DEFAULT 1 CHECK (epoch >= 1);
CREATE SEQUENCE batch_epochs START 2;

CREATE TABLE orders (
    id              BIGSERIAL   PRIMARY KEY,
    sale_id         BIGINT      NOT NULL,
    batch_no        BIGINT      NOT NULL,
    user_id         TEXT        NOT NULL CHECK (length(user_id) BETWEEN 1 AND 64),
    quantity        INTEGER     NOT NULL CHECK (quantity >= 1),
    amount_cents    BIGINT      NOT NULL CHECK (amount_cents > 0),
    currency        TEXT        NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    status          TEXT        NOT NULL DEFAULT 'pending_payment' CHECK (status IN
                        ('pending_payment', 'paid', 'payment_failed', 'cancelled', 'expired', 'refund_due')),
    -- the Redis reservation holding the units, unique within its batch (a rebuild keeps ids)
    reservation_id  BIGINT      NOT NULL CHECK (reservation_id >= 1),
    -- the queue ticket whose admission token was consumed (restored as used on a rebuild)
    ticket          BIGINT      NOT NULL,
    -- the batch epoch the reservation was made in
    epoch           BIGINT      NOT NULL,
    -- the buyer's Idempotency-Key and the SHA-256 of the request it came with: a retry with the
    -- same key is answered with this order as it was created; another request with it is refused
    idempotency_key TEXT        NOT NULL,
    fingerprint     BYTEA       NOT NULL,
    -- the payment deadline: the reservation's deadline, from Redis's clock
    expires_at      TIMESTAMPTZ NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    paid_at         TIMESTAMPTZ,
    payment_ref     TEXT,
    -- the settlement Redis has yet to apply for a status change made here ('commit' when paid,
    -- 'release' when the units went back): set in the same transaction as the status, cleared
    -- once Redis did it, so a crash in between is finished by the settlement worker (an outbox)
    redis_settle    TEXT        CHECK (redis_settle IN ('commit', 'release')),
    -- No foreign key to sale_batches: the order writer share-locks the batch row and checks its
    -- epoch in the same transaction (which proves the batch exists), and a foreign key would
    -- check it again for every row of every group commit.
    UNIQUE (sale_id, batch_no, reservation_id),
    UNIQUE (user_id, idempotency_key)
);

-- A buyer's orders are found through UNIQUE (user_id, idempotency_key), a batch's through
-- UNIQUE (sale_id, batch_no, reservation_id): no further index to keep up on the hot insert.
-- the expiry worker's queue: only pending orders, ordered by deadline
CREATE INDEX orders_pending_deadline ON orders (expires_at) WHERE status = 'pending_payment';
-- the settlement worker's queue
CREATE INDEX orders_unsettled ON orders (updated_at) WHERE redis_settle IS NOT NULL;

-- The answers of POST /sales/{id}/orders requests that made no order (sold out, limit reached,
-- token used, ...), per (buyer, Idempotency-Key), replayed to retries. A request that made an
-- order is answered from the order row. (The claim of a key while its request runs lives in
-- Redis: see ARCHITECTURE.md.)
CREATE TABLE idempotency_keys (
    user_id      TEXT        NOT NULL,
    key          TEXT        NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    -- SHA-256 of what the request asked (sale, token, quantity)
    fingerprint  BYTEA       NOT NULL,
    status_code  SMALLINT    NOT NULL,
    -- the problem document exactly as first sent (text, so a replay is byte for byte the same)
    response     TEXT        NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, key)
);


-- Every payment notice received, once per payment_ref, with what it did.
CREATE TABLE payments (
    payment_ref  TEXT        PRIMARY KEY CHECK (length(payment_ref) BETWEEN 1 AND 255),
    order_id     BIGINT      NOT NULL,
    amount_cents BIGINT      NOT NULL,
    status       TEXT        NOT NULL CHECK (status IN ('succeeded', 'failed')),
    -- SHA-256 of the raw notice: a replay must be the same notice
    fingerprint  BYTEA       NOT NULL,
    -- what the notice did: paid, payment_failed, refund_due, amount_mismatch, unknown_order,
    -- ignored (a failure notice for an order no longer pending)
    outcome      TEXT        NOT NULL,
    status_code  SMALLINT    NOT NULL,
    -- the receipt exactly as first sent
    response     TEXT        NOT NULL,
    received_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX payments_by_order ON payments (order_id);
