//! Helpers for integration tests: an isolated Redis key space per test, sales described by a
//! builder ([`SaleBuilder`]), a `redis-server` of a test's own ([`RedisServer`]) and a proxy
//! that can drop connections ([`TcpProxy`]).
//!
//! Tests run concurrently against one real Redis. Each takes a [`TestRedis`], whose [`KeySpace`]
//! has a random prefix, so no two tests ever see each other's keys, and whose keys are deleted
//! when its last handle is dropped, at the end of the test whether it passed or panicked, so a
//! long-lived developer Redis does not fill up.
//! PostgreSQL isolation comes from `#[sqlx::test]`, which gives each test its own database.

use std::sync::Arc;
use std::time::Duration;

use flashsale_core::KeySpace;

pub mod cluster;
pub mod proxy;
pub mod sale;
pub mod server;

pub use cluster::RedisCluster;
pub use proxy::TcpProxy;
pub use sale::SaleBuilder;
pub use server::RedisServer;

/// The Redis the tests use: `REDIS_URL`, or the local default.
/// When set (comma-separated URLs of every master of a Redis Cluster), [`TestRedis::new`] puts its
/// key spaces on that cluster: `scripts/test.sh` runs the suite a second time so.
pub const CLUSTER_ENV: &str = "FLASHSALE_TEST_REDIS_CLUSTER";

pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A pool on the test Redis and a key space nobody else uses.
#[derive(Debug, Clone)]
pub struct TestRedis {
    /// Connections to the test Redis (on a cluster: to its first master only, which holds some
    /// of the key space's slots; reach the keys through [`TestRedis::cluster_seeds`]).
    pub pool: deadpool_redis::Pool,
    /// On a Redis Cluster of the test's own ([`TestRedis::on_cluster`]): its nodes' URLs.
    pub cluster_seeds: Option<Vec<String>>,
    /// `test-<uuid>`: this test's keys.
    pub keys: KeySpace,
    /// Deletes the keys once every clone of this handle is gone.
    _guard: Arc<KeyGuard>,
}

/// Deletes a key space's keys when dropped. Synchronously, on a connection of its own: `Drop`
/// cannot await, and it runs while the test's runtime winds down (or unwinds from a panic).
///
/// Work the app left running in the background (see [`TestRedis::clean_after`]) may still have
/// a command on its way to Redis when the test ends: its keys would come back after the delete.
/// So while such work is tracked and unfinished, a thread deletes the keys again once it has
/// finished or was dropped with the test's runtime (10 s at most), plus a moment for a command
/// already sent to land.
#[derive(Debug)]
struct KeyGuard {
    /// Every server holding keys of the space (a cluster's masters, or the one Redis).
    urls: Vec<String>,
    prefix: String,
    background: std::sync::Mutex<Vec<tokio_util::task::TaskTracker>>,
}

impl KeyGuard {
    /// Deletes every key under the prefix on every server, a `SCAN` page at a time.
    fn delete(&self) -> redis::RedisResult<()> {
        self.urls.iter().try_for_each(|url| self.delete_on(url))
    }

    fn delete_on(&self, url: &str) -> redis::RedisResult<()> {
        let client = redis::Client::open(url)?;
        let mut conn = client.get_connection_with_timeout(Duration::from_millis(500))?;
        conn.set_read_timeout(Some(Duration::from_secs(2)))?;
        let pattern = format!("{}:*", self.prefix);
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) =
                redis::cmd("SCAN").arg(cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(1000).query(&mut conn)?;
            if !keys.is_empty() {
                // One key at a time: on a cluster node, keys of several slots in one command
                // are refused (CROSSSLOT).
                for key in &keys {
                    let _: i64 = redis::cmd("UNLINK").arg(key).query(&mut conn)?;
                }
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }
}

impl Drop for KeyGuard {
    fn drop(&mut self) {
        // A Redis of the test's own may be stopped already: its keys went with it.
        let _ = self.delete();
        let background = std::mem::take(self.background.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner));
        if background.iter().all(tokio_util::task::TaskTracker::is_empty) {
            return;
        }
        let again = KeyGuard { urls: self.urls.clone(), prefix: self.prefix.clone(), background: Default::default() };
        std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while !background.iter().all(tokio_util::task::TaskTracker::is_empty)
                && std::time::Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            std::thread::sleep(Duration::from_millis(200));
            drop(again);
        });
    }
}

impl TestRedis {
    /// A fresh key space on the test Redis.
    ///
    /// # Panics
    /// When the pool cannot be built from `REDIS_URL`.
    pub fn new() -> TestRedis {
        match std::env::var(CLUSTER_ENV) {
            Ok(urls) if !urls.trim().is_empty() => {
                TestRedis::on_nodes(urls.split(',').map(|u| u.trim().to_owned()).collect())
            }
            _ => TestRedis::at(&redis_url()),
        }
    }

    /// The handle the crates use, over this key space's Redis: the pool, or a cluster connection.
    ///
    /// # Panics
    /// When the cluster cannot be reached.
    pub async fn handle(&self) -> flashsale_redis::Redis {
        match &self.cluster_seeds {
            Some(seeds) => flashsale_redis::Redis::cluster(seeds, flashsale_redis::COMMAND_TIMEOUT)
                .await
                .expect("the test's Redis Cluster answers"),
            None => flashsale_redis::Redis::pooled(self.pool.clone()),
        }
    }

    /// A fresh key space on the Redis at `url` (a [`RedisServer`] of the test's own).
    ///
    /// # Panics
    /// When the pool cannot be built from `url`.
    pub fn at(url: &str) -> TestRedis {
        let pool = deadpool_redis::Config::from_url(url)
            .create_pool(Some(deadpool_redis::Runtime::Tokio1))
            .expect("a valid Redis URL");
        let keys = KeySpace::new(format!("test-{}", uuid::Uuid::new_v4().simple()));
        let guard =
            KeyGuard { urls: vec![url.to_owned()], prefix: keys.prefix().to_owned(), background: Default::default() };
        TestRedis { pool, keys, cluster_seeds: None, _guard: Arc::new(guard) }
    }

    /// A fresh key space on a [`RedisCluster`] of the test's own.
    ///
    /// # Panics
    /// When the pool cannot be built.
    pub fn on_cluster(cluster: &RedisCluster) -> TestRedis {
        TestRedis::on_nodes(cluster.urls())
    }

    /// A fresh key space on the Redis Cluster whose masters are `urls` (every one of them, so the
    /// keys can be cleaned on each).
    fn on_nodes(urls: Vec<String>) -> TestRedis {
        let mut redis = TestRedis::at(&urls[0]);
        let guard =
            KeyGuard { urls: urls.clone(), prefix: redis.keys.prefix().to_owned(), background: Default::default() };
        redis._guard = Arc::new(guard);
        redis.cluster_seeds = Some(urls);
        redis
    }

    /// Every key under this test's prefix.
    ///
    /// # Panics
    /// When Redis cannot be reached.
    pub async fn keys_in_use(&self) -> Vec<String> {
        let mut found = Vec::new();
        for url in &self._guard.urls {
            let client = redis::Client::open(url.as_str()).expect("a valid Redis URL");
            let mut conn = client.get_multiplexed_async_connection().await.expect("test Redis reachable");
            found.extend(Self::scan(&mut conn, &format!("{}:*", self.keys.prefix())).await);
        }
        found
    }

    async fn scan(conn: &mut redis::aio::MultiplexedConnection, pattern: &str) -> Vec<String> {
        let mut found = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(conn)
                .await
                .expect("SCAN succeeds");
            found.extend(batch);
            if next == 0 {
                return found;
            }
            cursor = next;
        }
    }

    /// Deletes every key of this key space now: a test playing Redis losing its state. (At the
    /// end of a test nothing needs calling: the keys go when the last handle is dropped.)
    ///
    /// # Panics
    /// When Redis cannot be reached.
    pub fn delete_all_keys(&self) {
        self._guard.delete().expect("test Redis reachable");
    }

    /// Keys are deleted only after the work `tracker` tracks (an app's background work over
    /// this key space) has finished or been dropped, as well as at once when the last handle
    /// goes.
    pub fn clean_after(&self, tracker: tokio_util::task::TaskTracker) {
        self._guard.background.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(tracker);
    }
}

impl Default for TestRedis {
    fn default() -> Self {
        Self::new()
    }
}
