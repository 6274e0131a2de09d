//! The Redis key layout.
//!
//! Every key is `<prefix>:{sale:<id>}:b:<batch>:<name>`. The `{sale:<id>}` part is a Redis Cluster
//! hash tag: only the text inside the braces is hashed, so every key of a sale lands in the same
//! slot and one Lua script may touch all of them, on a single Redis or on a cluster. The prefix
//! separates deployments sharing a Redis and, in tests, gives each test a key space of its own.
//!
//! Scripts never build key names themselves; they receive every key through `KEYS`, which is what
//! Redis Cluster requires to route the call.

use crate::{BatchNo, SaleId};

/// The root of all of one deployment's keys (`FLASHSALE_REDIS_PREFIX`, default `fs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpace {
    prefix: String,
}

impl KeySpace {
    /// A key space under `prefix`. The prefix must not contain braces: a brace would make Redis
    /// Cluster hash the prefix instead of the sale tag and scatter a sale over several slots.
    ///
    /// # Panics
    /// When `prefix` is empty or contains `{` or `}`; prefixes come from configuration, which is
    /// validated before this is called.
    pub fn new(prefix: impl Into<String>) -> KeySpace {
        let prefix = prefix.into();
        assert!(Self::is_valid_prefix(&prefix), "invalid Redis key prefix {prefix:?}");
        KeySpace { prefix }
    }

    /// Whether `prefix` may be used: non-empty, no braces, no whitespace.
    pub fn is_valid_prefix(prefix: &str) -> bool {
        !prefix.is_empty()
            && prefix.len() <= 64
            && !prefix.contains(['{', '}'])
            && !prefix.chars().any(char::is_whitespace)
    }

    /// The prefix itself.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The keys of one batch.
    pub fn batch(&self, sale: SaleId, batch: BatchNo) -> BatchKeys {
        BatchKeys { base: format!("{}:{{sale:{sale}}}:b:{batch}", self.prefix) }
    }
}

/// The names of every Redis key belonging to one batch, all in the sale's hash slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchKeys {
    base: String,
}

impl BatchKeys {
    fn key(&self, name: &str) -> String {
        format!("{}:{name}", self.base)
    }

    /// Hash: the batch's stock ledger and status flags (`total`, `available`, `reserved`, `sold`,
    /// `per_user_limit`, `paused`, `closed`). Owned by the inventory crate.
    pub fn ledger(&self) -> String {
        self.key("ledger")
    }

    /// String counter: how many buyers have joined the batch's queue (the last ticket handed out).
    /// Owned by the queue crate.
    pub fn queue_tail(&self) -> String {
        self.key("q:tail")
    }

    /// String counter: the "now serving" number; buyers with a ticket at or below it are admitted.
    /// Owned by the queue crate.
    pub fn queue_serving(&self) -> String {
        self.key("q:serving")
    }

    /// Sorted set: buyers who joined during the pre-queue, scored by their keyed-hash rank.
    pub fn queue_prequeue(&self) -> String {
        self.key("q:pre")
    }

    /// Hash: user id → ticket, for buyers who joined after the opening.
    pub fn queue_members(&self) -> String {
        self.key("q:members")
    }

    /// Sorted set: buyers who joined during the pre-queue, scored by when they joined (Unix ms,
    /// Redis's clock): the record behind the draw's fairness figure (arrival against place).
    pub fn queue_arrivals(&self) -> String {
        self.key("q:arrivals")
    }

    /// Sorted set: proof-of-work challenges spent on a join (member: the challenge's nonce, score:
    /// its expiry, Unix ms), so one challenge buys one join; expired ones are dropped.
    pub fn queue_pow_spent(&self) -> String {
        self.key("q:pow")
    }

    /// String: the size of the pre-queue cohort, fixed ("sealed") at the opening.
    pub fn queue_sealed(&self) -> String {
        self.key("q:sealed")
    }

    /// Sorted set: admission steps still open, member = the step's last ticket, score = when its
    /// admissions expire (Unix ms).
    pub fn queue_steps(&self) -> String {
        self.key("q:steps")
    }

    /// Sorted set: the same steps scored by their last ticket, to find a ticket's step.
    pub fn queue_steps_by_ticket(&self) -> String {
        self.key("q:steps:by-ticket")
    }

    /// Hash: per step `<last>:n` (admitted), `<last>:r` (reserved since), `<last>:at`, `<last>:exp`.
    pub fn queue_step_info(&self) -> String {
        self.key("q:steps:info")
    }

    /// Hash: the admission ticker's state (`last_ms`, `allowance`, `inflight`).
    pub fn queue_ticker(&self) -> String {
        self.key("q:ticker")
    }

    /// Hash: user id → units the buyer holds or bought in this batch (checked against the
    /// per-user limit). Owned by the inventory crate.
    pub fn holdings(&self) -> String {
        self.key("inv:holdings")
    }

    /// Hash: reservation id → `units deadline_ms ticket user`, for reservations not yet settled (the user
    /// last: a user id may contain spaces).
    pub fn reservations(&self) -> String {
        self.key("inv:res")
    }

    /// Sorted set: open reservation ids scored by deadline (Unix ms), for the sweeper.
    pub fn reservation_deadlines(&self) -> String {
        self.key("inv:res:deadlines")
    }

    /// Hash: reservation id → how it was settled (`committed` or `released`), so a repeated
    /// release or commit answers the same as the first.
    pub fn settled(&self) -> String {
        self.key("inv:settled")
    }

    /// Set: admission tickets already used to reserve, as `ticket:user` (an admission token is
    /// single use, and one buyer can never spend another's turn).
    pub fn used_tickets(&self) -> String {
        self.key("inv:used-tickets")
    }

    /// Sorted set: reservation ids whose order is not yet known to be in PostgreSQL, scored by
    /// when they were made (Redis's clock, ms). Upkeep checks those older than a few seconds
    /// against PostgreSQL: found, they leave the set; not found (the instance died between the
    /// reservation and the order write), they are released and the buyer may retry.
    pub fn unconfirmed(&self) -> String {
        self.key("inv:unconfirmed")
    }

    /// Hash: reservation id → `step claim_key` for the reservations in [`Self::unconfirmed`]: the
    /// admission step it was made in and the request's idempotency claim (empty when none), what
    /// a release of an orphan gives back.
    pub fn unconfirmed_info(&self) -> String {
        self.key("inv:unconfirmed:info")
    }

    /// Every key of the batch but the idempotency claims (which expire on their own after a
    /// day): what a retired batch gives an end of life.
    pub fn all(&self) -> Vec<String> {
        vec![
            self.ledger(),
            self.queue_tail(),
            self.queue_serving(),
            self.queue_prequeue(),
            self.queue_arrivals(),
            self.queue_pow_spent(),
            self.queue_members(),
            self.queue_sealed(),
            self.queue_steps(),
            self.queue_steps_by_ticket(),
            self.queue_step_info(),
            self.queue_ticker(),
            self.holdings(),
            self.reservations(),
            self.reservation_deadlines(),
            self.settled(),
            self.used_tickets(),
            self.unconfirmed(),
            self.unconfirmed_info(),
        ]
    }

    /// String: the claim of one buyer's `Idempotency-Key` for an order in this batch
    /// (`fingerprint claimed_at_ms`), kept a day. The user id is length-prefixed so that no two
    /// (user, key) pairs share a name. Owned by the order crate.
    pub fn idempotency(&self, user: &str, key: &str) -> String {
        self.key(&format!("idem:{}:{user}:{key}", user.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash_tag(key: &str) -> &str {
        let open = key.find('{').expect("key has a hash tag");
        let close = key[open..].find('}').expect("hash tag is closed") + open;
        &key[open + 1..close]
    }

    #[test]
    fn every_key_of_a_sale_shares_its_hash_tag() {
        let space = KeySpace::new("fs");
        let sale = SaleId::try_from(42).unwrap();
        for batch in [BatchNo::FIRST, BatchNo::FIRST.next()] {
            let keys = space.batch(sale, batch);
            let all = keys.all();
            assert_eq!(all.len(), 19);
            for key in all {
                assert_eq!(hash_tag(&key), "sale:42", "{key}");
                assert!(key.starts_with("fs:{sale:42}:b:"), "{key}");
            }
        }
    }

    #[test]
    fn prefixes_with_braces_are_refused() {
        assert!(KeySpace::is_valid_prefix("fs"));
        assert!(KeySpace::is_valid_prefix("test-0a1b"));
        for bad in ["", "a{b", "a}b", "a b"] {
            assert!(!KeySpace::is_valid_prefix(bad), "{bad:?}");
        }
    }
}
