//! The token queue: who may try to buy, in which order, at what pace.
//!
//! # Layout
//! - [`Queue`]: the entry point over one key space.
//! - [`QueueStats`]: the counters operations watch live.
//! - [`QueueError`]: what can go wrong.
//!
//! # The counters
//! A batch's queue works like a bakery's ticket machine. Each buyer who joins takes the next
//! ticket (`BatchKeys::queue_tail` counts the tickets handed out); a "now serving" number
//! (`BatchKeys::queue_serving`) moves forward at the admission rate, and every ticket at or below
//! it is admitted. Both are plain integers in the sale's hash slot, so reading them is one `MGET`.
//!
//! Joining, the pre-queue draw, admission tokens and the serving ticker arrive with the queue
//! issue; this crate already owns the key layout's queue half and the live counters.

use flashsale_core::{BatchNo, KeySpace, SaleId};
use serde::Serialize;

/// What can go wrong reading or changing a queue.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// No connection could be taken from the pool.
    #[error("no Redis connection for the queue: {0}")]
    NoConnection(#[from] deadpool_redis::PoolError),
    /// Redis answered with an error or the connection broke.
    #[error("Redis failed during a queue operation: {0}")]
    Redis(#[from] redis::RedisError),
    /// A counter holds something that is not a non-negative integer.
    #[error("queue counter {key} holds {value}, not a count")]
    CorruptCounter { key: String, value: i64 },
}

/// A batch's queue counters at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, utoipa::ToSchema)]
pub struct QueueStats {
    /// Buyers who have joined the batch's queue.
    pub queued: u64,
    /// Buyers admitted so far (the serving counter, capped by `queued`).
    pub admitted: u64,
}

/// The queues of every batch under one key space.
#[derive(Clone)]
pub struct Queue {
    pool: deadpool_redis::Pool,
    keys: KeySpace,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

impl Queue {
    /// Queues under `keys`, reached through `pool`.
    pub fn new(pool: deadpool_redis::Pool, keys: KeySpace) -> Queue {
        Queue { pool, keys }
    }

    /// The live counters of several batches in one round trip (one `MGET` per batch, pipelined:
    /// the keys of different sales may live in different cluster slots). Order follows `batches`.
    pub async fn stats(
        &self,
        batches: &[(SaleId, BatchNo)],
    ) -> Result<Vec<QueueStats>, QueueError> {
        if batches.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for (sale, batch) in batches {
            let keys = self.keys.batch(*sale, *batch);
            pipe.cmd("MGET")
                .arg(keys.queue_tail())
                .arg(keys.queue_serving());
        }
        let mut conn = self.pool.get().await?;
        let replies: Vec<(Option<i64>, Option<i64>)> = pipe.query_async(&mut conn).await?;
        replies
            .into_iter()
            .zip(batches)
            .map(|((tail, serving), (sale, batch))| {
                let keys = self.keys.batch(*sale, *batch);
                let count = |key: String, value: Option<i64>| {
                    u64::try_from(value.unwrap_or(0)).map_err(|_| QueueError::CorruptCounter {
                        key,
                        value: value.unwrap_or(0),
                    })
                };
                let queued = count(keys.queue_tail(), tail)?;
                let serving = count(keys.queue_serving(), serving)?;
                Ok(QueueStats {
                    queued,
                    admitted: serving.min(queued),
                })
            })
            .collect()
    }
}
