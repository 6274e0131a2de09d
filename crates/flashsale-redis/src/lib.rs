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
//! And against a **Redis Cluster** (`FLASHSALE_REDIS_CLUSTER`): one multiplexed cluster
//! connection per instance, each command and script routed by its keys' slot (every key of a sale
//! shares the `{sale:ID}` slot), `MOVED`/`ASK` followed, `SCRIPT LOAD` sent to every node. A
//! pipeline whose commands live in several slots (cross-sale reads) is sent as its commands, all
//! at once: each node's share travels pipelined on that node's connection.
//!
//! [`Redis`] hides the choice: the queue and inventory crates ask it for a [`Conn`] and run their
//! scripts on that.

pub mod clock;

pub use clock::Clock;

use std::collections::HashSet;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, ErrorKind, Pipeline, RedisFuture, Value};

/// The longest wait between two reconnection attempts of the shared connection, ms.
pub const RECONNECT_MAX_DELAY_MS: u64 = 500;

/// How long a bulk operation (a script whose size grows with the batch, such as a rebuild) may
/// wait for its answer: failing one that Redis then completes would leave the caller's record
/// (PostgreSQL's epoch bump, rolled back) behind what Redis did.
pub const BULK_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a command (or pipeline, or script) may wait for Redis's answer, in both modes, before
/// it fails: a hung or paused Redis becomes a quick 503 instead of requests and background loops
/// piling up behind it.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(1);

/// A handle to Redis for the hot path; cheap to clone.
#[derive(Clone)]
pub struct Redis {
    backend: Backend,
}

#[derive(Clone)]
enum Backend {
    /// One Redis, a pooled connection per operation.
    Pooled(deadpool_redis::Pool),
    /// One Redis, one multiplexed connection (the pool for bulk work).
    Shared(deadpool_redis::Pool, ConnectionManager),
    /// A Redis Cluster: a connection for the hot path (commands bounded by the short timeout)
    /// and one for bulk work (bounded by [`BULK_TIMEOUT`]).
    Cluster { hot: ClusterConnection, bulk: ClusterConnection },
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mode = match self.backend {
            Backend::Pooled(_) => "pooled",
            Backend::Shared(..) => "shared",
            Backend::Cluster { .. } => "cluster",
        };
        f.debug_struct("Redis").field("mode", &mode).finish_non_exhaustive()
    }
}

impl From<deadpool_redis::Pool> for Redis {
    fn from(pool: deadpool_redis::Pool) -> Redis {
        Redis::pooled(pool)
    }
}

impl Redis {
    /// Every operation checks a connection out of `pool`; each command waits at most
    /// [`COMMAND_TIMEOUT`] for its answer.
    pub fn pooled(pool: deadpool_redis::Pool) -> Redis {
        Redis { backend: Backend::Pooled(pool) }
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
        Ok(Redis { backend: Backend::Shared(pool, manager) })
    }

    /// A Redis Cluster reached through any of `seeds` (`redis://host:port` of some of its nodes;
    /// the client learns the rest from them); commands that wait longer than `response_timeout`
    /// fail, as in the other modes.
    pub async fn cluster(seeds: &[String], response_timeout: Duration) -> redis::RedisResult<Redis> {
        let connect = |timeout: Duration| async move {
            redis::cluster::ClusterClientBuilder::new(seeds.to_vec())
                .connection_timeout(response_timeout)
                .response_timeout(timeout)
                // A redirect or a node that restarted is retried briefly, never for long: a sale
                // waits for no Redis more than a second or two.
                .retries(2)
                .min_retry_wait(50)
                .max_retry_wait(RECONNECT_MAX_DELAY_MS)
                .build()?
                .get_async_connection()
                .await
        };
        let hot = connect(response_timeout).await?;
        let bulk = connect(BULK_TIMEOUT).await?;
        Ok(Redis { backend: Backend::Cluster { hot, bulk } })
    }

    /// Whether this handle talks to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.backend, Backend::Cluster { .. })
    }

    /// A connection, whatever the mode, whose commands may wait [`BULK_TIMEOUT`]: for the rare
    /// operation whose size grows with the batch (the hot path's one-second limit would fail a
    /// large rebuild that Redis goes on to apply).
    pub async fn bulk_conn(&self) -> Result<Conn, deadpool_redis::PoolError> {
        match &self.backend {
            Backend::Pooled(pool) | Backend::Shared(pool, _) => pooled_conn(pool, BULK_TIMEOUT).await,
            Backend::Cluster { bulk, .. } => Ok(Conn::Cluster(bulk.clone())),
        }
    }

    /// A connection for one operation, within [`COMMAND_TIMEOUT`].
    pub async fn conn(&self) -> Result<Conn, deadpool_redis::PoolError> {
        match &self.backend {
            Backend::Pooled(pool) => pooled_conn(pool, COMMAND_TIMEOUT).await,
            Backend::Shared(_, shared) => Ok(Conn::Shared(shared.clone())),
            Backend::Cluster { hot, .. } => Ok(Conn::Cluster(hot.clone())),
        }
    }
}

/// A connection checked out of `pool` within [`COMMAND_TIMEOUT`] (checking out may itself wait on
/// Redis: the pool pings a connection before handing it out, or opens a new one), whose commands
/// wait at most `limit`.
async fn pooled_conn(pool: &deadpool_redis::Pool, limit: Duration) -> Result<Conn, deadpool_redis::PoolError> {
    match tokio::time::timeout(COMMAND_TIMEOUT, pool.get()).await {
        Ok(conn) => Ok(Conn::Pooled(conn?, limit)),
        Err(_) => Err(deadpool_redis::PoolError::Timeout(deadpool_redis::TimeoutType::Wait)),
    }
}

/// The Lua every flashsale script starts with (`lua/prelude.lua`): Redis's clock, sealing the
/// pre-queue, the reservation record, the used-ticket member. Scripts are one file per atomic
/// operation in their own crates; what several of them must do alike is written once here.
pub const PRELUDE: &str = include_str!("../lua/prelude.lua");

/// A flashsale script: `body` (one operation's `.lua` file) after [`PRELUDE`].
pub fn script(body: &str) -> redis::Script {
    redis::Script::new(&format!("{PRELUDE}{body}"))
}

/// Whether `error` says Redis cannot serve right now, so the same request may be retried as it
/// is: a connection that broke, was refused or timed out, a Redis still loading its data, and on
/// a cluster a slot being moved (`TRYAGAIN` for a script over keys not all moved yet), a redirect
/// the client gave up following, or a cluster or master down. Anything else (a script error, a
/// wrong type) is a bug, not a reason to retry.
pub fn is_transient(error: &redis::RedisError) -> bool {
    use redis::ErrorKind as K;
    error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || matches!(
            error.kind(),
            K::TryAgain | K::ClusterDown | K::MasterDown | K::Moved | K::Ask | K::BusyLoadingError
        )
}

/// A script's reply split into its tag and the values after it: every flashsale script answers
/// `{tag, …}` (see [`PRELUDE`]). `None` for any other shape.
pub fn tagged(reply: &Value) -> Option<(&str, &[Value])> {
    let Value::Array(items) = reply else { return None };
    let (tag, rest) = items.split_first()?;
    Some((reply_text(tag)?, rest))
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
    /// Checked out of the pool, with the longest wait for an answer; returned when dropped.
    /// The pool's connections are multiplexed, so a command abandoned at its timeout cannot
    /// leave its late answer for the connection's next user.
    Pooled(deadpool_redis::Connection, Duration),
    /// A clone of the shared multiplexed connection.
    Shared(ConnectionManager),
    /// A clone of the multiplexed cluster connection.
    Cluster(ClusterConnection),
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Conn::Pooled(..) => "Conn::Pooled",
            Conn::Shared(_) => "Conn::Shared",
            Conn::Cluster(_) => "Conn::Cluster",
        })
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Pooled(c, limit) => within(*limit, c.req_packed_command(cmd)),
            Conn::Shared(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Pooled(c, limit) => within(*limit, c.req_packed_commands(cmd, offset, count)),
            Conn::Shared(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => cluster_pipeline(c, cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Pooled(c, _) => c.get_db(),
            Conn::Shared(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// A pipeline on a cluster: sent whole when its keys share a slot (one sale's reads), else as its
/// commands, all at once, answers in the pipeline's order. The same when the node answers the
/// pipeline with a redirect (its slot is moving: the client follows `ASK`/`MOVED` for single
/// commands, not inside a pipeline). A transaction (`MULTI`) must stay in one slot and is never
/// split.
fn cluster_pipeline<'a>(
    conn: &'a mut ClusterConnection,
    pipeline: &'a Pipeline,
    offset: usize,
    count: usize,
) -> RedisFuture<'a, Vec<Value>> {
    Box::pin(async move {
        match conn.req_packed_commands(pipeline, offset, count).await {
            Err(e)
                if matches!(e.kind(), ErrorKind::CrossSlot | ErrorKind::Ask | ErrorKind::Moved)
                    && !pipeline.is_transaction() =>
            {
                let sends = pipeline.cmd_iter().map(|cmd| {
                    let mut conn = conn.clone();
                    async move { conn.req_packed_command(cmd).await }
                });
                futures::future::join_all(sends).await.into_iter().collect()
            }
            answer => answer,
        }
    })
}

/// `command` bounded by `limit`: past it, an I/O timeout error, which callers treat as Redis being
/// unavailable (503, safe to retry).
fn within<'a, T: Send + 'a>(limit: Duration, command: RedisFuture<'a, T>) -> RedisFuture<'a, T> {
    Box::pin(async move {
        tokio::time::timeout(limit, command).await.unwrap_or_else(|_| {
            Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "Redis did not answer within the command timeout")
                .into())
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url() -> String {
        std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
    }

    #[tokio::test]
    async fn scripts_run_after_the_prelude_and_replies_split_into_tag_and_values() {
        let client = redis::Client::open(url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        // The prelude's helpers are in scope of the body; the record reads back what was written.
        let probe = script(
            "local units, deadline, ticket, user = read_reservation(reservation_record(2, 1700, 9, 'a b'))\n\
             return {'probe', units, deadline, ticket, user, spent_ticket(ticket, user), now_ms() > 0 and 1 or 0}",
        );
        let reply: Value = probe.invoke_async(&mut conn).await.unwrap();
        let (tag, values) = tagged(&reply).unwrap();
        assert_eq!(tag, "probe");
        let texts: Vec<String> = values
            .iter()
            .map(|v| match v {
                Value::Int(n) => n.to_string(),
                other => reply_text(other).unwrap().to_owned(),
            })
            .collect();
        assert_eq!(texts, ["2", "1700", "9", "a b", "9:a b", "1"]);
        assert_eq!(tagged(&Value::Int(1)), None);
        assert_eq!(tagged(&Value::Array(vec![])), None);
    }

    /// Both modes over a `redis-server` of the test's own.
    async fn both_modes(server: &flashsale_testkit::RedisServer) -> [(&'static str, Redis); 2] {
        let pool = || {
            deadpool_redis::Config::from_url(server.url()).create_pool(Some(deadpool_redis::Runtime::Tokio1)).unwrap()
        };
        let shared = Redis::shared(pool(), &server.url(), COMMAND_TIMEOUT).await.unwrap();
        [("pool", Redis::pooled(pool())), ("shared", shared)]
    }

    async fn ping(redis: &Redis) -> redis::RedisResult<String> {
        let mut conn = redis.conn().await.map_err(|e| std::io::Error::other(e.to_string()))?;
        redis::cmd("PING").query_async::<String>(&mut conn).await
    }

    #[tokio::test]
    async fn both_modes_work_again_within_seconds_of_a_redis_restart() {
        let mut server = flashsale_testkit::RedisServer::start(&[]);
        let modes = both_modes(&server).await;
        for (_, redis) in &modes {
            assert_eq!(ping(redis).await.unwrap(), "PONG");
        }
        // Down for two seconds (requests fail fast meanwhile), then back on the same port.
        server.kill();
        let down = std::time::Instant::now();
        while down.elapsed() < Duration::from_secs(2) {
            for (mode, redis) in &modes {
                let tried = std::time::Instant::now();
                assert!(ping(redis).await.is_err(), "{mode}");
                assert!(tried.elapsed() < Duration::from_secs(3), "{mode}: failed only after {:?}", tried.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        server.restart();
        let back = std::time::Instant::now();
        for (mode, redis) in &modes {
            // Each try bounded: a request that hangs on the reconnect is as bad as one that fails.
            while !matches!(tokio::time::timeout(Duration::from_secs(1), ping(redis)).await, Ok(Ok(_))) {
                assert!(
                    back.elapsed() < Duration::from_secs(5),
                    "{mode}: still failing {:?} after Redis came back",
                    back.elapsed()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        assert!(back.elapsed() < Duration::from_secs(5), "answered {:?} after Redis came back", back.elapsed());
        eprintln!("measured: both modes answered {:?} after Redis came back", back.elapsed());
    }

    /// A Redis that accepts commands and answers none (`CLIENT PAUSE`): every command fails at
    /// its timeout instead of waiting for Redis, and the same handle works once Redis answers.
    #[tokio::test]
    async fn a_redis_that_stops_answering_fails_commands_at_their_timeout_in_both_modes() {
        let server = flashsale_testkit::RedisServer::start(&[]);
        let modes = both_modes(&server).await;
        for (mode, redis) in &modes {
            assert_eq!(ping(redis).await.unwrap(), "PONG", "{mode}");
        }
        let admin = redis::Client::open(server.url()).unwrap();
        let mut admin = admin.get_multiplexed_async_connection().await.unwrap();
        let () = redis::cmd("CLIENT").arg("PAUSE").arg(4_000).arg("ALL").query_async(&mut admin).await.unwrap();
        for (mode, redis) in &modes {
            let tried = std::time::Instant::now();
            let answer = tokio::time::timeout(Duration::from_secs(3), ping(redis)).await;
            let waited = tried.elapsed();
            assert!(matches!(answer, Ok(Err(_))), "{mode}: {answer:?} after {waited:?}");
            eprintln!("measured: {mode} mode failed a command to a paused Redis after {waited:?}");
        }
        tokio::time::sleep(Duration::from_millis(4_200)).await;
        for (mode, redis) in &modes {
            assert_eq!(ping(redis).await.unwrap(), "PONG", "{mode}: works again after the pause");
        }
    }

    /// On a cluster of the test's own: commands and scripts go to their keys' master, a pipeline
    /// of one slot goes whole, one of several slots goes as its commands (answers in order), and
    /// a transaction across slots is refused rather than split.
    #[tokio::test]
    async fn the_cluster_mode_routes_commands_scripts_and_pipelines_by_slot() {
        let cluster = flashsale_testkit::RedisCluster::start();
        let redis = Redis::cluster(&cluster.urls()[..1], COMMAND_TIMEOUT).await.unwrap();
        assert!(redis.is_cluster());
        let mut conn = redis.conn().await.unwrap();
        let sale = |n: u32| format!("t:{{sale:{n}}}:ledger");
        // Keys of ten sales: spread over the three masters.
        let mut pipe = redis::pipe();
        for n in 0..10 {
            pipe.cmd("SET").arg(sale(n)).arg(n).ignore();
        }
        let () = pipe.query_async(&mut conn).await.unwrap();
        let mut pipe = redis::pipe();
        for n in 0..10 {
            pipe.cmd("GET").arg(sale(n));
        }
        let got: Vec<u32> = pipe.query_async(&mut conn).await.unwrap();
        assert_eq!(got, (0..10).collect::<Vec<_>>());
        // One slot: the whole pipeline, as with one Redis.
        let (a, b): (u32, u32) =
            redis::pipe().cmd("GET").arg(sale(3)).cmd("INCR").arg(sale(3)).query_async(&mut conn).await.unwrap();
        assert_eq!((a, b), (3, 4));
        let sum = script("return {'sum', redis.call('GET', KEYS[1]) + redis.call('GET', KEYS[2])}");
        let same_slot = "t:{sale:3}:other".to_owned();
        let () = redis::cmd("SET").arg(&same_slot).arg(10).query_async(&mut conn).await.unwrap();
        let reply: Value = sum.key(sale(3)).key(&same_slot).invoke_async(&mut conn).await.unwrap();
        assert_eq!(tagged(&reply).map(|(tag, values)| (tag, values.to_vec())), Some(("sum", vec![Value::Int(14)])));
        // A script given keys of two slots is refused by the cluster.
        let crossed: redis::RedisResult<Value> = sum.key(sale(3)).key(sale(4)).invoke_async(&mut conn).await;
        assert!(crossed.is_err(), "{crossed:?}");
        let transaction: redis::RedisResult<()> =
            redis::pipe().atomic().cmd("GET").arg(sale(1)).cmd("GET").arg(sale(2)).query_async(&mut conn).await;
        assert!(transaction.is_err());
        let mut bulk = redis.bulk_conn().await.unwrap();
        let pong: String = redis::cmd("PING").query_async(&mut bulk).await.unwrap();
        assert_eq!(pong, "PONG");
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
            let mut bulk = redis.bulk_conn().await.unwrap();
            assert!(matches!(bulk, Conn::Pooled(_, BULK_TIMEOUT)), "bulk work always gets the long timeout");
            let pong: String = redis::cmd("PING").query_async(&mut bulk).await.unwrap();
            assert_eq!(pong, "PONG");
        }
    }
}
