//! The state every handler shares.

use std::sync::{Arc, OnceLock};

use flashsale_inventory::Inventory;
use flashsale_queue::Queue;
use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;

use crate::config::Secrets;
use crate::sales::PublicCache;

/// How long public sale views are cached unless configured otherwise.
pub const DEFAULT_PUBLIC_CACHE_TTL: std::time::Duration =
    std::time::Duration::from_millis(crate::config::DEFAULT_PUBLIC_CACHE_MS);

/// Cheap to clone: pools and `Arc`s. Nothing in it is per-instance truth (the server is
/// stateless; several instances share one Redis and one PostgreSQL).
#[derive(Clone)]
pub struct AppState {
    /// PostgreSQL: sales, batches, audit trail.
    pub db: PgPool,
    /// Redis connections (also held by `inventory` and `queue`), for health checks.
    pub redis: deadpool_redis::Pool,
    /// Batch ledgers in Redis.
    pub inventory: Inventory,
    /// Queue counters in Redis.
    pub queue: Queue,
    /// Admin token, JWT and payment secrets.
    pub secrets: Arc<Secrets>,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// The OpenAPI document, rendered once when the router is built.
    pub openapi: Arc<OnceLock<String>>,
    /// Public sale views, cached briefly (see [`PublicCache`]).
    pub public_cache: Arc<PublicCache>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("inventory", &self.inventory)
            .field("secrets", &self.secrets)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// State over the given pools, with ledgers and queues under `keys`, and public views cached
    /// for `public_cache_ttl`.
    pub fn new(
        db: PgPool,
        redis: deadpool_redis::Pool,
        keys: flashsale_core::KeySpace,
        secrets: Secrets,
        public_cache_ttl: std::time::Duration,
    ) -> AppState {
        AppState {
            inventory: Inventory::new(redis.clone(), keys.clone()),
            queue: Queue::new(redis.clone(), keys),
            db,
            redis,
            secrets: Arc::new(secrets),
            metrics: crate::metrics::handle(),
            openapi: Arc::new(OnceLock::new()),
            public_cache: Arc::new(PublicCache::new(public_cache_ttl)),
        }
    }
}
