//! The queue's Lua scripts, one file per atomic operation (`lua/`), each opening with its
//! KEYS/ARGV/returns contract. [`redis::Script`] calls them by SHA and reloads them
//! transparently after a `NOSCRIPT` (Redis restart, `SCRIPT FLUSH`); [`load_all`] loads them at
//! start-up to fail early if Redis refuses one.

use std::sync::LazyLock;

use crate::QueueError;

/// Joins a buyer (idempotent), sealing the pre-queue at the opening.
pub static JOIN: LazyLock<redis::Script> = LazyLock::new(|| flashsale_redis::script(include_str!("../lua/join.lua")));

/// One admission ticker step.
pub static ADMIT: LazyLock<redis::Script> = LazyLock::new(|| flashsale_redis::script(include_str!("../lua/admit.lua")));

/// Looks up a ticket's admission window.
pub static ADMISSION_WINDOW: LazyLock<redis::Script> =
    LazyLock::new(|| flashsale_redis::script(include_str!("../lua/admission_window.lua")));

/// Loads every queue script into Redis's script cache.
pub async fn load_all(redis: &flashsale_redis::Redis) -> Result<(), QueueError> {
    let mut conn = redis.conn().await?;
    for (name, script) in [("join", &*JOIN), ("admit", &*ADMIT), ("admission_window", &*ADMISSION_WINDOW)] {
        let sha = script.load_async(&mut conn).await?;
        if sha != script.get_hash() {
            return Err(QueueError::MalformedReply { operation: name, reply: format!("SCRIPT LOAD returned {sha}") });
        }
    }
    Ok(())
}
