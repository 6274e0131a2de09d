-- The priority codes' own allotment (issue 19): units of each batch held back for buyers with a
-- priority code, for `priority_hold_secs` after the opening; then what code holders have not
-- bought goes to everyone. The hot path keeps the split in the batch's ledger in Redis
-- (`allotment`, `allotted`, `code_units`); a rebuild restores it from these columns and the
-- orders admitted by codes (ticket 2^52 and above). PostgreSQL's guard on the batch's stock is
-- unchanged: however units are split, orders never exceed the stock.
ALTER TABLE sales
    ADD COLUMN priority_units     BIGINT  NOT NULL DEFAULT 0 CHECK (priority_units >= 0 AND priority_units <= stock),
    ADD COLUMN priority_hold_secs INTEGER NOT NULL DEFAULT 600 CHECK (priority_hold_secs BETWEEN 60 AND 86400);
