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
    LazyLock::new(|| redis::Script::new(include_str!("../lua/open_batch.lua")));

/// Changes a live batch's stock, limit and window, never below what buyers hold.
pub static CONFIGURE_BATCH: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("../lua/configure_batch.lua")));

/// Pauses, resumes or closes a batch.
pub static SET_BATCH_STATUS: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("../lua/set_batch_status.lua")));

/// Every script with its file's source, for loading.
fn all() -> [(&'static str, &'static str); 3] {
    [
        ("open_batch", include_str!("../lua/open_batch.lua")),
        ("configure_batch", include_str!("../lua/configure_batch.lua")),
        ("set_batch_status", include_str!("../lua/set_batch_status.lua")),
    ]
}

/// Loads every script into Redis's script cache (`SCRIPT LOAD`), checking that Redis compiles
/// them and that the SHA it reports is the one [`redis::Script`] will call.
pub async fn load_all(pool: &deadpool_redis::Pool) -> Result<(), InventoryError> {
    let mut conn = pool.get().await?;
    let scripts: [&LazyLock<redis::Script>; 3] = [&OPEN_BATCH, &CONFIGURE_BATCH, &SET_BATCH_STATUS];
    for ((name, source), script) in all().into_iter().zip(scripts) {
        let sha: String = redis::cmd("SCRIPT").arg("LOAD").arg(source).query_async(&mut conn).await?;
        if sha != script.get_hash() {
            return Err(InventoryError::MalformedReply {
                operation: name,
                reply: format!("SCRIPT LOAD returned {sha}"),
            });
        }
    }
    Ok(())
}
