//! Helpers for integration tests: an isolated Redis key space per test.
//!
//! Tests run concurrently against one real Redis. Each takes a [`TestRedis`], whose [`KeySpace`]
//! has a random prefix, so no two tests ever see each other's keys, and which deletes its keys
//! when asked ([`TestRedis::cleanup`]) so a long-lived developer Redis does not fill up.
//! PostgreSQL isolation comes from `#[sqlx::test]`, which gives each test its own database.

use flashsale_core::KeySpace;

pub mod proxy;
pub mod server;

pub use proxy::TcpProxy;
pub use server::RedisServer;

/// The Redis the tests use: `REDIS_URL`, or the local default.
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A pool on the test Redis and a key space nobody else uses.
#[derive(Debug, Clone)]
pub struct TestRedis {
    /// Connections to the test Redis.
    pub pool: deadpool_redis::Pool,
    /// `test-<uuid>`: this test's keys.
    pub keys: KeySpace,
}

impl TestRedis {
    /// A fresh key space on the test Redis.
    ///
    /// # Panics
    /// When the pool cannot be built from `REDIS_URL`.
    pub fn new() -> TestRedis {
        TestRedis::at(&redis_url())
    }

    /// A fresh key space on the Redis at `url` (a [`RedisServer`] of the test's own).
    ///
    /// # Panics
    /// When the pool cannot be built from `url`.
    pub fn at(url: &str) -> TestRedis {
        let pool = deadpool_redis::Config::from_url(url)
            .create_pool(Some(deadpool_redis::Runtime::Tokio1))
            .expect("a valid Redis URL");
        TestRedis { pool, keys: KeySpace::new(format!("test-{}", uuid::Uuid::new_v4().simple())) }
    }

    /// Every key under this test's prefix.
    ///
    /// # Panics
    /// When Redis cannot be reached.
    pub async fn keys_in_use(&self) -> Vec<String> {
        let mut conn = self.pool.get().await.expect("test Redis reachable");
        let pattern = format!("{}:*", self.keys.prefix());
        let mut found = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await
                .expect("SCAN succeeds");
            found.extend(batch);
            if next == 0 {
                return found;
            }
            cursor = next;
        }
    }

    /// Deletes every key under this test's prefix.
    ///
    /// # Panics
    /// When Redis cannot be reached.
    pub async fn cleanup(&self) {
        let keys = self.keys_in_use().await;
        if !keys.is_empty() {
            let mut conn = self.pool.get().await.expect("test Redis reachable");
            let _: i64 = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await.expect("DEL succeeds");
        }
    }
}

impl Default for TestRedis {
    fn default() -> Self {
        Self::new()
    }
}
