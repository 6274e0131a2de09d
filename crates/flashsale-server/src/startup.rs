//! Start-up: reach PostgreSQL and Redis (retrying for a bounded time), create the database if
//! missing, run migrations, and refuse to start on a Redis that may evict keys.
//!
//! Refusing early is the point: a server that starts against a Redis with `allkeys-lru` would run
//! fine until the first memory pressure on sale day, then silently lose reservations.

use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection};

pub use crate::config::DatabaseBounds;
use crate::config::Settings;

/// Why the server refuses to start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// PostgreSQL did not answer within the start-up timeout.
    #[error("PostgreSQL at {target} is unreachable after {waited:?}: {cause}")]
    PostgresUnreachable { target: String, waited: Duration, cause: String },
    /// The database was missing and could not be created.
    #[error("cannot create database {database}: {cause}")]
    CreateDatabase { database: String, cause: String },
    /// A migration failed.
    #[error("migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Redis did not answer within the start-up timeout.
    #[error("Redis is unreachable after {waited:?}: {cause}")]
    RedisUnreachable { waited: Duration, cause: String },
    /// Redis may evict keys under memory pressure.
    #[error(
        "Redis maxmemory-policy is {policy:?}; flashsale needs \"noeviction\" so that stock and reservations are \
         never evicted. Run `redis-cli CONFIG SET maxmemory-policy noeviction` (and persist it in redis.conf)"
    )]
    RedisEvicts { policy: String },
    /// `CONFIG GET` is refused (managed Redis), so the policy cannot be checked.
    #[error(
        "cannot read Redis maxmemory-policy ({cause}); if this Redis hides CONFIG and is known to use noeviction, \
         set FLASHSALE_REDIS_SKIP_POLICY_CHECK=true"
    )]
    RedisPolicyUnknown { cause: String },
    /// Redis refused the inventory's Lua scripts.
    #[error("loading Redis scripts failed: {0}")]
    Scripts(#[from] flashsale_inventory::InventoryError),
    /// Redis refused the queue's Lua scripts.
    #[error("loading Redis scripts failed: {0}")]
    QueueScripts(#[from] flashsale_queue::QueueError),
    /// The Redis pool could not be built.
    #[error("bad Redis configuration: {0}")]
    RedisConfig(String),
}

/// The migrations in `migrations/`, embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

/// `host:port/database` of a PostgreSQL URL, for logs (never the password).
pub fn describe_postgres(options: &PgConnectOptions) -> String {
    format!("{}:{}/{}", options.get_host(), options.get_port(), options.get_database().unwrap_or("postgres"))
}

impl DatabaseBounds {
    /// `options` with the bounds set on every session they open (PostgreSQL's startup
    /// `options`, so they hold from the first statement of every connection).
    pub fn apply(&self, options: PgConnectOptions) -> PgConnectOptions {
        let ms = |d: Duration| d.as_millis().to_string();
        options.options([
            ("lock_timeout", ms(self.lock_timeout)),
            ("statement_timeout", ms(self.statement_timeout)),
            ("idle_in_transaction_session_timeout", ms(self.idle_in_transaction_timeout)),
        ])
    }
}

/// Connects to PostgreSQL, creating the database if it does not exist, retrying unreachable
/// servers until `settings.startup_timeout` has passed. Every session of the pool is bounded by
/// `settings.database_bounds`.
pub async fn connect_postgres(settings: &Settings) -> Result<PgPool, StartupError> {
    let options: PgConnectOptions = settings.database_url.expose().parse().expect("validated with the configuration");
    let options = settings.database_bounds.apply(options.log_statements(tracing::log::LevelFilter::Debug));
    let target = describe_postgres(&options);
    let started = Instant::now();
    loop {
        let attempt = PgPoolOptions::new()
            .max_connections(settings.db_max_connections)
            .acquire_timeout(settings.database_bounds.acquire_timeout)
            .connect_with(options.clone())
            .await;
        match attempt {
            Ok(pool) => return Ok(pool),
            Err(e) if is_missing_database(&e) => create_database(&options).await?,
            Err(e) if started.elapsed() < settings.startup_timeout => {
                tracing::warn!(db.target = %target, error = %e, "PostgreSQL not reachable yet; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => {
                return Err(StartupError::PostgresUnreachable {
                    target,
                    waited: started.elapsed(),
                    cause: e.to_string(),
                });
            }
        }
    }
}

fn is_missing_database(error: &sqlx::Error) -> bool {
    // 3D000: invalid_catalog_name, "database does not exist".
    error.as_database_error().and_then(|e| e.code()).is_some_and(|code| code == "3D000")
}

async fn create_database(options: &PgConnectOptions) -> Result<(), StartupError> {
    let database = options.get_database().unwrap_or("postgres").to_owned();
    let failed = |cause: String| StartupError::CreateDatabase { database: database.clone(), cause };
    let mut conn = options.clone().database("postgres").connect().await.map_err(|e| failed(e.to_string()))?;
    let statement = format!("CREATE DATABASE \"{}\"", database.replace('"', "\"\""));
    match sqlx::query(&statement).execute(&mut conn).await {
        Ok(_) => tracing::info!(db.name = %database, "created database"),
        // 42P04: duplicate_database; another instance created it first.
        Err(e) if e.as_database_error().and_then(|d| d.code()).is_some_and(|c| c == "42P04") => {}
        Err(e) => return Err(failed(e.to_string())),
    }
    conn.close().await.map_err(|e| failed(e.to_string()))
}

/// Runs the migrations on a connection of their own, taken out of the pool, without the
/// statement and lock bounds: a migration may rewrite a large table.
pub async fn migrate(db: &PgPool) -> Result<(), StartupError> {
    let failed = |e: sqlx::Error| StartupError::Migrate(sqlx::migrate::MigrateError::Execute(e));
    let mut conn = db.acquire().await.map_err(failed)?.detach();
    sqlx::raw_sql("SET lock_timeout = 0; SET statement_timeout = 0; SET idle_in_transaction_session_timeout = 0")
        .execute(&mut conn)
        .await
        .map_err(failed)?;
    MIGRATOR.run(&mut conn).await?;
    conn.close().await.map_err(failed)
}

/// Connects to Redis as configured (one server, pooled or shared, or a cluster), waits for it to
/// answer, and checks that it never evicts keys (on a cluster: every master).
pub async fn connect_redis(settings: &Settings) -> Result<flashsale_redis::Redis, StartupError> {
    let started = Instant::now();
    let unreachable = |cause: String| StartupError::RedisUnreachable { waited: started.elapsed(), cause };
    let redis = loop {
        match try_connect(settings).await {
            Ok(redis) => break redis,
            Err(cause) if started.elapsed() < settings.startup_timeout => {
                tracing::warn!(error = %cause, "Redis not reachable yet; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(cause) => return Err(unreachable(cause)),
        }
    };
    if !settings.redis_skip_policy_check {
        for url in masters(settings, &redis).await.map_err(unreachable)? {
            let client = redis::Client::open(url.as_str()).map_err(|e| StartupError::RedisConfig(e.to_string()))?;
            let mut conn = client.get_multiplexed_async_connection().await.map_err(|e| unreachable(e.to_string()))?;
            check_eviction_policy(&mut conn).await?;
        }
    }
    Ok(redis)
}

/// One attempt: the handle in the configured mode, and a `PING` through it.
async fn try_connect(settings: &Settings) -> Result<flashsale_redis::Redis, String> {
    let redis = if settings.redis_cluster.is_empty() {
        let pool = redis_pool(settings.redis_url.expose(), settings.redis_pool_size).map_err(|e| e.to_string())?;
        match settings.redis_mode {
            crate::config::RedisMode::Pool => flashsale_redis::Redis::pooled(pool),
            crate::config::RedisMode::Shared => {
                flashsale_redis::Redis::shared(pool, settings.redis_url.expose(), flashsale_redis::COMMAND_TIMEOUT)
                    .await
                    .map_err(|e| e.to_string())?
            }
        }
    } else {
        flashsale_redis::Redis::cluster(&settings.redis_cluster, flashsale_redis::COMMAND_TIMEOUT)
            .await
            .map_err(|e| e.to_string())?
    };
    let mut conn = redis.conn().await.map_err(|e| e.to_string())?;
    redis::cmd("PING").query_async::<String>(&mut conn).await.map_err(|e| e.to_string())?;
    Ok(redis)
}

/// The URL of every master: `REDIS_URL` for one server; on a cluster, each master `CLUSTER
/// NODES` lists (the seeds may be replicas, or only some of the masters).
async fn masters(settings: &Settings, redis: &flashsale_redis::Redis) -> Result<Vec<String>, String> {
    if !redis.is_cluster() {
        return Ok(vec![settings.redis_url.expose().to_owned()]);
    }
    let mut conn = redis.conn().await.map_err(|e| e.to_string())?;
    let nodes: String = redis::cmd("CLUSTER").arg("NODES").query_async(&mut conn).await.map_err(|e| e.to_string())?;
    Ok(cluster_masters(&nodes))
}

/// The masters of a `CLUSTER NODES` reply, as `redis://ip:port` (`<id> <ip:port@cport[,host]>
/// <flags> …` per line; a master's flags include `master`, a failed one's `fail`).
fn cluster_masters(nodes: &str) -> Vec<String> {
    nodes
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let address = fields.nth(1)?;
            let flags = fields.next()?;
            let serving = flags.split(',').any(|f| f == "master") && !flags.split(',').any(|f| f == "fail");
            let ip_port = address.split(['@', ',']).next()?;
            serving.then(|| format!("redis://{ip_port}"))
        })
        .collect()
}

/// A pool whose callers wait at most two seconds for a connection, so a dead Redis turns into a
/// quick 503 rather than requests piling up.
pub fn redis_pool(url: &str, size: usize) -> Result<deadpool_redis::Pool, StartupError> {
    let mut config = deadpool_redis::Config::from_url(url);
    let mut pool = deadpool_redis::PoolConfig::new(size);
    pool.timeouts.wait = Some(Duration::from_secs(2));
    pool.timeouts.create = Some(Duration::from_secs(2));
    pool.timeouts.recycle = Some(Duration::from_secs(2));
    config.pool = Some(pool);
    config.create_pool(Some(deadpool_redis::Runtime::Tokio1)).map_err(|e| StartupError::RedisConfig(e.to_string()))
}

/// Refuses a Redis whose `maxmemory-policy` is anything but `noeviction`.
pub async fn check_eviction_policy(conn: &mut impl redis::aio::ConnectionLike) -> Result<(), StartupError> {
    let reply: Result<Vec<String>, _> = redis::cmd("CONFIG").arg("GET").arg("maxmemory-policy").query_async(conn).await;
    let reply = reply.map_err(|e| StartupError::RedisPolicyUnknown { cause: e.to_string() })?;
    match reply.as_slice() {
        [_, policy] if policy == "noeviction" => Ok(()),
        [_, policy] => Err(StartupError::RedisEvicts { policy: policy.clone() }),
        other => Err(StartupError::RedisPolicyUnknown { cause: format!("unexpected reply {other:?}") }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_masters_of_a_cluster_nodes_reply_are_its_serving_masters() {
        let nodes = "\
07c3 127.0.0.1:30004@40004 slave e7d1 0 1426238317239 4 connected
67ed 127.0.0.1:30002@40002,redis-2 master - 0 1426238316232 2 connected 5461-10922
292f 127.0.0.1:30003@40003 myself,master - 0 1426238318243 3 connected 10923-16383
e7d1 127.0.0.1:30001@40001 master,fail - 1426238316232 1426238316232 1 disconnected\n";
        assert_eq!(cluster_masters(nodes), ["redis://127.0.0.1:30002", "redis://127.0.0.1:30003"]);
    }
}
