-- The secret seed of each batch's pre-queue draw.
--
-- Buyers who join during the pre-queue are ordered at the opening by HMAC-SHA256(seed, user id):
-- a permutation nobody can predict while the seed is secret, and anyone can re-check once the
-- seed is published after the batch closes. New batches get 32 random bytes from the server;
-- rows that existed before this migration get a seed drawn here.
ALTER TABLE sale_batches ADD COLUMN prequeue_seed BYTEA;
UPDATE sale_batches
   SET prequeue_seed = decode(md5(random()::text || clock_timestamp()::text) || md5(random()::text), 'hex')
 WHERE prequeue_seed IS NULL;
ALTER TABLE sale_batches ALTER COLUMN prequeue_seed SET NOT NULL;
ALTER TABLE sale_batches ADD CONSTRAINT sale_batches_seed_length CHECK (length(prequeue_seed) >= 16);
