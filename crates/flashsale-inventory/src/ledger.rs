//! [`Inventory`]: typed calls to the ledger scripts.

use flashsale_core::{BatchNo, Epoch, KeySpace, SaleId, Units};
use redis::Value;
use serde::Serialize;

use crate::{InventoryError, scripts};

/// Everything a batch's ledger is created or reconfigured with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LedgerSpec {
    /// Units the batch releases.
    pub total: Units,
    /// Units one buyer may hold or buy.
    pub per_user_limit: Units,
    /// Opening, Unix milliseconds.
    pub opens_at_ms: i64,
    /// End of the window, Unix milliseconds, if the batch has one (stored as 0 when not: no
    /// real window ends at the Unix epoch).
    pub closes_at_ms: Option<i64>,
    /// Admission paused by operations.
    pub paused: bool,
    /// Closed by operations.
    pub closed: bool,
    /// The batch's epoch in PostgreSQL (see [`Inventory::rebuild`]).
    pub epoch: Epoch,
    /// Units held back for priority codes.
    pub allotment: Allotment,
}

/// Units of a batch held back for buyers with a priority code, until a moment (see the Lua
/// prelude: code holders reserve from them while they last; at `until_ms` what is left goes to
/// everyone, with no job to run: the first script to see the time pass moves them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Allotment {
    /// Units set aside (zero: none).
    pub units: Units,
    /// When what is left goes to everyone, Unix milliseconds (Redis's clock).
    pub until_ms: i64,
}

impl Allotment {
    /// No units held back.
    pub const NONE: Allotment = Allotment { units: Units::ZERO, until_ms: 0 };
}

impl LedgerSpec {
    /// The spec as script arguments, in the order `open_batch.lua` and `rebuild_batch.lua` take
    /// them: total, limit, opening, end (0 = none), paused, closed, epoch, allotment, its end.
    pub(crate) fn push_args(&self, invocation: &mut redis::ScriptInvocation<'_>) {
        invocation
            .arg(self.total.get())
            .arg(self.per_user_limit.get())
            .arg(self.opens_at_ms)
            .arg(self.closes_at_ms.unwrap_or(0))
            .arg(u8::from(self.paused))
            .arg(u8::from(self.closed))
            .arg(self.epoch.get())
            .arg(self.allotment.units.get())
            .arg(self.allotment.until_ms);
    }
}

/// Outcome of [`Inventory::open_batch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opened {
    /// The ledger was created with all units available.
    Created,
    /// A ledger was already there and was left untouched.
    AlreadyOpen,
}

/// Outcome of [`Inventory::configure`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Configured {
    /// Applied; this many units are now available.
    Applied { available: Units },
    /// Refused: buyers hold (reserved + sold) more than the requested total.
    BelowCommitted { held: Units },
    /// Refused: the batch is closed.
    Closed,
    /// Refused: the batch has no ledger.
    Missing,
}

/// A change of a batch's status by operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusChange {
    Pause,
    Resume,
    Close,
}

/// Outcome of [`Inventory::set_status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusChanged {
    /// Applied (or already in that state).
    Applied,
    /// Refused: closing is final, a closed batch is neither paused nor resumed.
    Closed,
    /// Refused: the batch has no ledger.
    Missing,
}

/// A batch's ledger as read in one `HMGET` (one consistent moment).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct LedgerSnapshot {
    /// Units the batch releases.
    pub total: Units,
    /// Units no buyer holds, for anyone.
    pub available: Units,
    /// Units no buyer holds, held back for priority codes (see [`Allotment`]).
    pub allotted: Units,
    /// Units held by buyers who have not paid yet.
    pub reserved: Units,
    /// Units paid for.
    pub sold: Units,
    pub per_user_limit: Units,
    pub paused: bool,
    pub closed: bool,
    /// The generation of this Redis state: the batch's epoch in PostgreSQL when the ledger was
    /// created or last rebuilt. A ledger whose epoch is not PostgreSQL's was written by a
    /// rebuild that never committed (its instance froze or lost the database between its Redis
    /// write and its commit), or is an old copy: it is rebuilt (see the server's upkeep).
    #[schema(value_type = i64)]
    pub epoch: Epoch,
}

impl LedgerSnapshot {
    /// Conservation: `available + allotted + reserved + sold = total`.
    pub fn balances(&self) -> bool {
        self.available
            .checked_add(self.allotted)
            .and_then(|sum| sum.checked_add(self.reserved))
            .and_then(|sum| sum.checked_add(self.sold))
            .is_some_and(|sum| sum == self.total)
    }

    /// Nothing is available and nothing is held that could come back: every unit is sold.
    /// (Units merely reserved may still return when a reservation expires or is cancelled, and
    /// units held back for codes go to everyone when their time is up.)
    pub fn is_sold_out(&self) -> bool {
        self.available == Units::ZERO && self.reserved == Units::ZERO && self.allotted == Units::ZERO
    }

    /// Nothing is available, but units are held: unpaid in carts (they come back if a hold
    /// lapses or is cancelled) or back for codes (they go to everyone at the allotment's end)
    /// (the public view's `all_held`, the queue's `standby`).
    pub fn is_all_held(&self) -> bool {
        self.available == Units::ZERO && (self.reserved > Units::ZERO || self.allotted > Units::ZERO)
    }
}

/// The inventory ledgers of every batch under one key space.
#[derive(Clone)]
pub struct Inventory {
    redis: flashsale_redis::Redis,
    keys: KeySpace,
}

impl std::fmt::Debug for Inventory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inventory").field("keys", &self.keys).finish_non_exhaustive()
    }
}

const LEDGER_FIELDS: [&str; 9] =
    ["total", "available", "reserved", "sold", "per_user_limit", "paused", "closed", "epoch", "allotted"];

impl Inventory {
    /// Ledgers under `keys`, reached through `redis`.
    pub fn new(redis: impl Into<flashsale_redis::Redis>, keys: KeySpace) -> Inventory {
        Inventory { redis: redis.into(), keys }
    }

    /// The key space of these ledgers.
    pub(crate) fn keys(&self) -> &KeySpace {
        &self.keys
    }

    /// The Redis handle.
    pub(crate) fn redis(&self) -> &flashsale_redis::Redis {
        &self.redis
    }

    /// Creates the batch's ledger unless it exists.
    pub async fn open_batch(&self, sale: SaleId, batch: BatchNo, spec: LedgerSpec) -> Result<Opened, InventoryError> {
        let mut invocation = scripts::OPEN_BATCH.prepare_invoke();
        invocation.key(self.keys.batch(sale, batch).ledger());
        spec.push_args(&mut invocation);
        let mut conn = self.redis.conn().await?;
        let reply: Value = invocation.invoke_async(&mut conn).await?;
        match flashsale_redis::tagged(&reply) {
            Some(("opened", [])) => Ok(Opened::Created),
            Some(("exists", [])) => Ok(Opened::AlreadyOpen),
            _ => Err(malformed("open_batch", &reply)),
        }
    }

    /// Changes a live batch's stock, limit and window; refuses (changing nothing) when the new
    /// total is below the units buyers hold.
    pub async fn configure(
        &self,
        sale: SaleId,
        batch: BatchNo,
        spec: LedgerSpec,
    ) -> Result<Configured, InventoryError> {
        let mut conn = self.redis.conn().await?;
        let keys = self.keys.batch(sale, batch);
        let reply: Value = scripts::CONFIGURE_BATCH
            .key(keys.ledger())
            .key(keys.queue_ticker())
            .arg(spec.total.get())
            .arg(spec.per_user_limit.get())
            .arg(spec.opens_at_ms)
            .arg(spec.closes_at_ms.unwrap_or(0))
            .arg(spec.allotment.units.get())
            .arg(spec.allotment.until_ms)
            .invoke_async(&mut conn)
            .await?;
        let malformed_reply = || malformed("configure_batch", &reply);
        match flashsale_redis::tagged(&reply) {
            Some(("ok", [Value::Int(n)])) => {
                Ok(Configured::Applied { available: units(*n).ok_or_else(malformed_reply)? })
            }
            Some(("below_committed", [Value::Int(n)])) => {
                Ok(Configured::BelowCommitted { held: units(*n).ok_or_else(malformed_reply)? })
            }
            Some(("closed", [])) => Ok(Configured::Closed),
            Some(("missing", [])) => Ok(Configured::Missing),
            _ => Err(malformed_reply()),
        }
    }

    /// Pauses, resumes or closes a batch.
    pub async fn set_status(
        &self,
        sale: SaleId,
        batch: BatchNo,
        change: StatusChange,
    ) -> Result<StatusChanged, InventoryError> {
        let mut conn = self.redis.conn().await?;
        let change = match change {
            StatusChange::Pause => "pause",
            StatusChange::Resume => "resume",
            StatusChange::Close => "close",
        };
        let reply: Value = scripts::SET_BATCH_STATUS
            .key(self.keys.batch(sale, batch).ledger())
            .arg(change)
            .invoke_async(&mut conn)
            .await?;
        match flashsale_redis::tagged(&reply) {
            Some(("ok", [])) => Ok(StatusChanged::Applied),
            Some(("closed", [])) => Ok(StatusChanged::Closed),
            Some(("missing", [])) => Ok(StatusChanged::Missing),
            _ => Err(malformed("set_batch_status", &reply)),
        }
    }

    /// The last reservation id the batch's ledger handed out (`seq`; 0 before the first), or
    /// `None` when it has no ledger.
    pub async fn last_reservation_id(&self, sale: SaleId, batch: BatchNo) -> Result<Option<u64>, InventoryError> {
        let mut conn = self.redis.conn().await?;
        // Every ledger has a `total`; `seq` appears with the first reservation.
        let (total, seq): (Option<i64>, Option<i64>) = redis::cmd("HMGET")
            .arg(self.keys.batch(sale, batch).ledger())
            .arg("total")
            .arg("seq")
            .query_async(&mut conn)
            .await?;
        Ok(total.map(|_| seq.and_then(|s| u64::try_from(s).ok()).unwrap_or(0)))
    }

    /// The batch's ledger, or `None` if it has none.
    pub async fn snapshot(&self, sale: SaleId, batch: BatchNo) -> Result<Option<LedgerSnapshot>, InventoryError> {
        Ok(self.snapshots(&[(sale, batch)]).await?.pop().flatten())
    }

    /// The ledgers of several batches in one round trip (a pipeline of `HMGET`s; each is atomic
    /// on its own, which is all a snapshot promises). Order follows `batches`.
    pub async fn snapshots(
        &self,
        batches: &[(SaleId, BatchNo)],
    ) -> Result<Vec<Option<LedgerSnapshot>>, InventoryError> {
        if batches.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        let keys: Vec<String> = batches.iter().map(|(sale, batch)| self.keys.batch(*sale, *batch).ledger()).collect();
        for key in &keys {
            pipe.cmd("HMGET").arg(key).arg(&LEDGER_FIELDS[..]);
        }
        let mut conn = self.redis.conn().await?;
        let replies: Vec<Vec<Option<i64>>> = pipe.query_async(&mut conn).await?;
        Ok(replies.into_iter().zip(&keys).map(|(fields, key)| decode_snapshot(key, &fields)).collect())
    }
}

impl Inventory {
    /// When each batch's first open reservation reaches its deadline (Unix ms, Redis's clock),
    /// `None` for a batch holding none: the earliest a held unit can come back to the queue (its
    /// order expires then, unless paid). One round trip. Order follows `batches`.
    pub async fn next_releases(&self, batches: &[(SaleId, BatchNo)]) -> Result<Vec<Option<i64>>, InventoryError> {
        if batches.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for (sale, batch) in batches {
            pipe.cmd("ZRANGE")
                .arg(self.keys.batch(*sale, *batch).reservation_deadlines())
                .arg(0)
                .arg(0)
                .arg("WITHSCORES");
        }
        let mut conn = self.redis.conn().await?;
        let replies: Vec<Vec<(String, f64)>> = pipe.query_async(&mut conn).await?;
        // Scores are whole milliseconds, far inside f64's exact integers.
        #[allow(clippy::cast_possible_truncation)]
        Ok(replies.into_iter().map(|first| first.first().map(|(_, at)| *at as i64)).collect())
    }
}

/// A ledger as read. Never an error: a counter out of range is read clamped (and logged once,
/// [`flashsale_redis::clamp_count`]), so one batch's bad ledger cannot fail the reads of every
/// batch read with it; the snapshot then does not balance, and the audit fences the batch and
/// rebuilds it from PostgreSQL.
fn decode_snapshot(key: &str, fields: &[Option<i64>]) -> Option<LedgerSnapshot> {
    if fields.iter().all(Option::is_none) {
        return None;
    }
    let max = i64::from(u32::MAX);
    let unit = |i: usize| {
        let raw = fields.get(i).copied().flatten().unwrap_or(0);
        let n = flashsale_redis::clamp_count(raw, max, || format!("{key} {}", LEDGER_FIELDS[i]));
        units(n).unwrap_or_default()
    };
    // A flag that is not 1 reads as unset (how the scripts read them too).
    let flag = |i: usize| fields.get(i).copied().flatten() == Some(1);
    Some(LedgerSnapshot {
        total: unit(0),
        available: unit(1),
        reserved: unit(2),
        sold: unit(3),
        per_user_limit: unit(4),
        paused: flag(5),
        closed: flag(6),
        epoch: Epoch::try_from(fields.get(7).copied().flatten().unwrap_or(0)).unwrap_or(Epoch(0)),
        allotted: unit(8),
    })
}

fn units(n: i64) -> Option<Units> {
    Units::try_from(n).ok()
}

pub(crate) fn malformed(operation: &'static str, reply: &dyn std::fmt::Debug) -> InventoryError {
    InventoryError::MalformedReply { operation, reply: format!("{reply:?}") }
}
