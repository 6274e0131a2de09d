//! The ledger's Lua scripts, compiled into the binary and loaded into Redis at start-up.
//!
//! Each script is one atomic operation: Redis runs it to completion before any other command, so
//! its checks and writes can never interleave with another instance's. [`redis::Script`] calls
//! them by SHA (`EVALSHA`) and reloads a script transparently when Redis answers `NOSCRIPT` (after
//! a restart or `SCRIPT FLUSH`), so [`load_all`] is an optimisation and an early check that Redis
//! accepts them, not a requirement for correctness.

use std::sync::LazyLock;

use crate::InventoryError;

/// Creates a batch's ledger unless it exists.
pub static OPEN_BATCH: LazyLock<redis::Script> =
    LazyLock::new(|| flashsale_redis::script(include_str!("../lua/open_batch.lua")));

/// Changes a live batch's stock, limit and window, never below what buyers hold.
pub static CONFIGURE_BATCH: LazyLock<redis::Script> =
    LazyLock::new(|| flashsale_redis::script(include_str!("../lua/configure_batch.lua")));

/// Pauses, resumes or closes a batch.
pub static SET_BATCH_STATUS: LazyLock<redis::Script> =
    LazyLock::new(|| flashsale_redis::script(include_str!("../lua/set_batch_status.lua")));

/// Reserves units for an admitted buyer.
pub static RESERVE: LazyLock<redis::Script> =
    LazyLock::new(|| flashsale_redis::script(include_str!("../lua/reserve.lua")));

/// Commits or releases one reservation, exactly once.
pub static SETTLE: LazyLock<redis::Script> =
    LazyLock::new(|| flashsale_redis::script(include_str!("../lua/settle.lua")));

/// Releases reservations past their deadline.
pub static EXPIRE: LazyLock<redis::Script> =
    LazyLock::new(|| flashsale_redis::script(include_str!("../lua/expire.lua")));

/// Recreates a batch's hot state from PostgreSQL's orders.
pub static REBUILD_BATCH: LazyLock<redis::Script> =
    LazyLock::new(|| flashsale_redis::script(include_str!("../lua/rebuild_batch.lua")));

/// Lists reservations whose order is not yet known to be written.
pub static UNCONFIRMED: LazyLock<redis::Script> =
    LazyLock::new(|| flashsale_redis::script(include_str!("../lua/unconfirmed.lua")));

/// Takes reservations out of the unconfirmed set.
pub static CONFIRM: LazyLock<redis::Script> =
    LazyLock::new(|| flashsale_redis::script(include_str!("../lua/confirm.lua")));

/// Gives every key of a finished batch an end of life.
pub static RETIRE_BATCH: LazyLock<redis::Script> =
    LazyLock::new(|| flashsale_redis::script(include_str!("../lua/retire_batch.lua")));

/// Every script, named for error messages.
fn all() -> [(&'static str, &'static LazyLock<redis::Script>); 10] {
    [
        ("open_batch", &OPEN_BATCH),
        ("configure_batch", &CONFIGURE_BATCH),
        ("set_batch_status", &SET_BATCH_STATUS),
        ("reserve", &RESERVE),
        ("settle", &SETTLE),
        ("expire", &EXPIRE),
        ("rebuild_batch", &REBUILD_BATCH),
        ("unconfirmed", &UNCONFIRMED),
        ("confirm", &CONFIRM),
        ("retire_batch", &RETIRE_BATCH),
    ]
}

/// Loads every script into Redis's script cache (`SCRIPT LOAD`), checking that Redis compiles
/// them and that the SHA it reports is the one [`redis::Script`] will call.
pub async fn load_all(redis: &flashsale_redis::Redis) -> Result<(), InventoryError> {
    let mut conn = redis.conn().await?;
    for (name, script) in all() {
        let sha = script.load_async(&mut conn).await?;
        if sha != script.get_hash() {
            return Err(InventoryError::MalformedReply {
                operation: name,
                reply: format!("SCRIPT LOAD returned {sha}"),
            });
        }
    }
    Ok(())
}
