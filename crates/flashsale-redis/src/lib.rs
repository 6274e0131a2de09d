//! How flashsale talks to Redis.
//!
//! Two ways, chosen by measurement (BENCHMARKS.md) and configuration (`FLASHSALE_REDIS_MODE`):
//! - **pool** (`deadpool-redis`): each operation checks a connection out, runs its command and
//!   returns it. Simple; every in-flight request holds a connection, and a request waits for one
//!   when all are busy.
//! - **shared**: one multiplexed connection per instance (`redis::aio::ConnectionManager`, which
//!   reconnects on its own). Concurrent requests' commands are pipelined on one socket, so Redis
//!   reads many per system call and the server spends far less time per command.
//!
//! [`Redis`] hides the choice: the queue and inventory crates ask it for a [`Conn`] and run their
//! scripts on that. The pool is always there for the occasional command (health checks, script
//! loading).

pub mod clock;

pub use clock::Clock;

use std::collections::HashSet;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, Pipeline, RedisFuture, Value};

/// The longest wait between two reconnection attempts of the shared connection, ms.
pub const RECONNECT_MAX_DELAY_MS: u64 = 500;

/// A handle to Redis for the hot path; cheap to clone.
#[derive(Clone)]
pub struct Redis {
    pool: deadpool_redis::Pool,
    shared: Option<ConnectionManager>,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis").field("shared", &self.shared.is_some()).finish_non_exhaustive()
    }
}

impl From<deadpool_redis::Pool> for Redis {
    fn from(pool: deadpool_redis::Pool) -> Redis {
        Redis::pooled(pool)
    }
}

impl Redis {
    /// Every operation checks a connection out of `pool`.
    pub fn pooled(pool: deadpool_redis::Pool) -> Redis {
        Redis { pool, shared: None }
    }

    /// Hot-path operations share one multiplexed connection to `url`; commands that wait longer
    /// than `response_timeout` fail (so a hung Redis becomes a 503, not a pile of requests).
    pub async fn shared(
        pool: deadpool_redis::Pool,
        url: &str,
        response_timeout: Duration,
    ) -> redis::RedisResult<Redis> {
        let client = redis::Client::open(url)?;
        // The reconnect's backoff (backon's: a 1 s first delay multiplied by `factor` each try)
        // is kept short and flat. With the crate's default factor of 100 a Redis restart left
        // every request on this instance failing for about two minutes after Redis was back;
        // now a reconnect is tried at least every half second.
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(response_timeout)
            .set_connection_timeout(response_timeout)
            .set_factor(1)
            .set_max_delay(RECONNECT_MAX_DELAY_MS)
            .set_number_of_retries(2);
        let manager = ConnectionManager::new_with_config(client, config).await?;
        Ok(Redis { pool, shared: Some(manager) })
    }

    /// The pool, for occasional commands.
    pub fn pool(&self) -> &deadpool_redis::Pool {
        &self.pool
    }

    /// A connection for one operation.
    pub async fn conn(&self) -> Result<Conn, deadpool_redis::PoolError> {
        match &self.shared {
            Some(shared) => Ok(Conn::Shared(shared.clone())),
            None => Ok(Conn::Pooled(self.pool.get().await?)),
        }
    }
}

/// The text of a status or bulk-string reply (how Lua scripts return their outcome names), or
/// `None` for any other reply.
pub fn reply_text(value: &Value) -> Option<&str> {
    match value {
        Value::BulkString(bytes) => std::str::from_utf8(bytes).ok(),
        Value::SimpleString(s) => Some(s),
        _ => None,
    }
}

/// Keys already reported out of range by [`clamp_count`] (bounded, so a flood of bad keys cannot
/// grow it without end).
static OUT_OF_RANGE: LazyLock<Mutex<HashSet<String>>> = LazyLock::new(Mutex::default);

/// A counter read from Redis that must be a count in `0..=max`, clamped into that range.
///
/// A counter out of range (a bug, a partial restore, a hand edit) must not turn every read of
/// its batch into an error: one sale's bad state would then fail the views and the admission
/// ticker of every sale read with it. Readers clamp instead, the first time a key is seen out of
/// range it is logged (once per key and process), and the audit repairs the state (a ledger that
/// does not balance is fenced and rebuilt from PostgreSQL). `key` names the counter; it is only
/// called for a value out of range, so a read in range allocates nothing.
pub fn clamp_count(value: i64, max: i64, key: impl FnOnce() -> String) -> i64 {
    if (0..=max).contains(&value) {
        return value;
    }
    let key = key();
    let mut seen = OUT_OF_RANGE.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if seen.len() < 10_000 && seen.insert(key.clone()) {
        tracing::error!(redis.key = %key, value, max, "Redis counter out of range; read as clamped until repaired");
    }
    value.clamp(0, max)
}

/// A connection from [`Redis::conn`]: run commands and scripts on it as on any async connection.
pub enum Conn {
    /// Checked out of the pool; returned when dropped.
    Pooled(deadpool_redis::Connection),
    /// A clone of the shared multiplexed connection.
    Shared(ConnectionManager),
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Conn::Pooled(_) => "Conn::Pooled",
            Conn::Shared(_) => "Conn::Shared",
        })
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Pooled(c) => c.req_packed_command(cmd),
            Conn::Shared(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Pooled(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Shared(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Pooled(c) => c.get_db(),
            Conn::Shared(c) => c.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url() -> String {
        std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
    }

    #[tokio::test]
    async fn the_shared_connection_works_again_within_seconds_of_a_redis_restart() {
        let mut server = flashsale_testkit::RedisServer::start(&[]);
        let pool =
            deadpool_redis::Config::from_url(server.url()).create_pool(Some(deadpool_redis::Runtime::Tokio1)).unwrap();
        let shared = Redis::shared(pool, &server.url(), Duration::from_secs(1)).await.unwrap();
        let ping = || async {
            let mut conn = shared.conn().await.unwrap();
            redis::cmd("PING").query_async::<String>(&mut conn).await
        };
        assert_eq!(ping().await.unwrap(), "PONG");
        // Down for two seconds (requests fail fast meanwhile), then back on the same port.
        server.kill();
        let down = std::time::Instant::now();
        while down.elapsed() < Duration::from_secs(2) {
            assert!(ping().await.is_err());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        server.restart();
        let back = std::time::Instant::now();
        // Each try bounded: a request that hangs on the reconnect is as bad as one that fails.
        while !matches!(tokio::time::timeout(Duration::from_secs(1), ping()).await, Ok(Ok(_))) {
            assert!(
                back.elapsed() < Duration::from_secs(5),
                "still failing {:?} after Redis came back",
                back.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(back.elapsed() < Duration::from_secs(5), "answered {:?} after Redis came back", back.elapsed());
    }

    #[tokio::test]
    async fn both_modes_run_commands_and_pipelines() {
        let pool = deadpool_redis::Config::from_url(url()).create_pool(Some(deadpool_redis::Runtime::Tokio1)).unwrap();
        let shared = Redis::shared(pool.clone(), &url(), Duration::from_secs(2)).await.unwrap();
        for redis in [Redis::pooled(pool), shared] {
            let mut conn = redis.conn().await.unwrap();
            let pong: String = redis::cmd("PING").query_async(&mut conn).await.unwrap();
            assert_eq!(pong, "PONG");
            let (a, b): (i64, i64) =
                redis::pipe().cmd("ECHO").arg(1).cmd("ECHO").arg(2).query_async(&mut conn).await.unwrap();
            assert_eq!((a, b), (1, 2));
        }
    }
}
