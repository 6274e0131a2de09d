//! The state every handler shares.

use std::sync::{Arc, OnceLock};

use flashsale_inventory::Inventory;
use flashsale_order::{OrderBook, WriterTuning};
use flashsale_queue::Queue;
use sqlx::PgPool;

use std::time::Duration;

use flashsale_core::{BatchNo, SaleId};
use flashsale_queue::Tokens;

use crate::cache::TtlCache;
use crate::config::{QueueSettings, Secrets};
use crate::jwt::JwtVerifier;
use crate::limits::{LimitSettings, RateLimits};
use crate::snapshot::{BatchCounters, PublicCache};

/// How long public sale views are cached unless configured otherwise.
pub const DEFAULT_PUBLIC_CACHE_TTL: Duration = Duration::from_millis(crate::config::DEFAULT_PUBLIC_CACHE_MS);

/// What every handler shares, behind one `Arc`: axum clones the state for every request, so a
/// clone must be a single reference-count increment, not a copy of pools and key prefixes.
/// Nothing in it is per-instance truth (the server is stateless; several instances share one
/// Redis and one PostgreSQL).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The fields of [`AppState`].
pub struct Shared {
    /// PostgreSQL: sales, batches, audit trail.
    pub db: PgPool,
    /// Redis as configured (one server, pooled or shared, or a cluster), for health checks, the
    /// clock and the restart check (`inventory` and `queue` hold the same handle).
    pub redis: flashsale_redis::Redis,
    /// Batch ledgers in Redis.
    pub inventory: Inventory,
    /// Queue counters in Redis.
    pub queue: Queue,
    /// Admin token, JWT and payment secrets.
    pub secrets: Arc<Secrets>,
    /// Work a request started and left running (the rebuild after a fence): shutdown waits for
    /// it, and tests wait for it before they delete their keys.
    pub background: tokio_util::task::TaskTracker,
    /// This instance's metrics: what its requests and jobs record, and `/metrics`.
    pub metrics: crate::metrics::Metrics,
    /// The OpenAPI document, built once with the router (`app::served_document` finishes it
    /// per request).
    pub openapi: Arc<OnceLock<serde_json::Value>>,
    /// Public sale views, cached briefly (see [`PublicCache`]).
    pub public_cache: Arc<PublicCache>,
    /// Verifies shopper JWTs.
    pub jwt: JwtVerifier,
    /// Signs and checks queue tickets and admission tokens.
    pub tokens: Tokens,
    /// Queue behaviour of this instance.
    pub queue_settings: QueueSettings,
    /// The pages' settings and the origins allowed to call the API from a browser.
    pub web: crate::config::WebSettings,
    /// Each batch's serving counter and stock, reused by status polls for a few milliseconds.
    pub counters: Arc<TtlCache<(SaleId, BatchNo), BatchCounters>>,
    /// Per-buyer and per-IP rate limits on the queue endpoints.
    pub limits: Arc<RateLimits>,
    /// The batches this instance's event streams follow, one pulse each.
    pub pulses: crate::pulse::Pulses,
    /// Each batch's counts of this second, for its sale report (flushed by the `activity` job).
    pub activity: crate::activity::Activity,
    /// Each batch's join rate, for an adaptive proof of work.
    pub join_rates: crate::join_rate::JoinRates,
    /// Signs and checks the join's proof-of-work challenges.
    pub challenges: flashsale_queue::pow::Challenges,
    /// Batches whose ledger drift has been logged, so it is logged once, not every second.
    pub drifting: std::sync::Mutex<std::collections::HashSet<(SaleId, BatchNo)>>,
    /// Each batch's Redis-vs-PostgreSQL difference at the previous audit (a difference is
    /// reported when it persists, not when the audit catches a write in flight).
    pub pg_drift: std::sync::Mutex<std::collections::HashMap<(SaleId, BatchNo), (i64, i64)>>,
    /// Orders in PostgreSQL, with their group-commit writers.
    pub orders: Arc<OrderBook>,
    /// How long a retired batch's Redis keys stay readable.
    pub retire_grace: Duration,
    /// Whether this instance's admission ticker completes its passes (`/readyz`).
    pub ticker: crate::health::TickerHealth,
    /// Whether PostgreSQL answers this instance's probe (orders fail fast and admission is held
    /// while it does not).
    pub database: crate::health::DatabaseHealth,
    /// Redis's clock, which every decision about time is made by (never this machine's own).
    pub clock: flashsale_redis::Clock,
    /// How long a reservation may wait for its order before upkeep releases it as an orphan.
    pub orphan_after: Duration,
    /// Test-only crash points (feature `failpoints`).
    #[cfg(feature = "failpoints")]
    pub failpoints: Failpoints,
}

/// Places where a test can make a request stop as if the process had died.
#[cfg(feature = "failpoints")]
#[derive(Debug, Default)]
pub struct Failpoints {
    /// Stop right after the Redis reservation, before the order is written.
    pub crash_after_reserve: std::sync::atomic::AtomicBool,
}

/// Tunables of an instance's state, with the defaults of the configuration.
#[derive(Debug, Clone)]
pub struct Tuning {
    /// How long public sale views are cached.
    pub public_cache_ttl: Duration,
    /// Queue behaviour.
    pub queue: QueueSettings,
    /// Rate limits.
    pub limits: LimitSettings,
    /// The order writers.
    pub orders: WriterTuning,
    /// How long a reservation may wait for its order before upkeep releases it as an orphan.
    pub orphan_after: Duration,
    /// How long a retired batch's Redis keys stay readable.
    pub retire_grace: Duration,
    /// How far this machine's clock is off, ms: 0 in production (whatever the real error, the
    /// instance decides by Redis's clock); fault tests set it to play a machine with a wrong clock.
    pub local_clock_skew_ms: i64,
    /// Where the instance's metrics go: the process's recorder (a server), or one of its own
    /// (several instances in one process, as tests run them).
    pub metrics: crate::metrics::Metrics,
    /// What the pages are told, and who else may call the API from a browser.
    pub web: crate::config::WebSettings,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            public_cache_ttl: DEFAULT_PUBLIC_CACHE_TTL,
            queue: QueueSettings::default(),
            limits: LimitSettings {
                per_user: std::num::NonZeroU32::new(crate::config::DEFAULT_RATE_LIMIT_PER_USER),
                orders_per_user: std::num::NonZeroU32::new(crate::config::DEFAULT_RATE_LIMIT_ORDERS_PER_USER),
                per_ip: std::num::NonZeroU32::new(crate::config::DEFAULT_RATE_LIMIT_PER_IP),
                streams_per_user: std::num::NonZeroU32::new(crate::config::DEFAULT_EVENT_STREAMS_PER_BUYER),
                trusted_proxies: Vec::new(),
            },
            orders: WriterTuning::default(),
            orphan_after: crate::config::ORPHAN_AFTER,
            retire_grace: crate::config::RETIRE_GRACE,
            local_clock_skew_ms: 0,
            metrics: crate::metrics::Metrics::process(),
            web: crate::config::WebSettings::default(),
        }
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::fmt::Debug for Shared {
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
        redis: impl Into<flashsale_redis::Redis>,
        keys: flashsale_core::KeySpace,
        secrets: Secrets,
        tuning: Tuning,
    ) -> AppState {
        let hot: flashsale_redis::Redis = redis.into();
        let clock = flashsale_redis::Clock::with_local_skew(tuning.local_clock_skew_ms);
        let orders = Arc::new(OrderBook::new(db.clone(), hot.clone(), clock.clone(), keys.clone(), tuning.orders));
        AppState(Arc::new(Shared {
            orders,
            inventory: Inventory::new(hot.clone(), keys.clone()),
            queue: Queue::new(hot.clone(), keys),
            db,
            redis: hot.clone(),
            secrets: Arc::new(secrets.clone()),
            background: tokio_util::task::TaskTracker::new(),
            metrics: tuning.metrics.clone(),
            openapi: Arc::new(OnceLock::new()),
            public_cache: Arc::new(PublicCache::new(tuning.public_cache_ttl)),
            jwt: JwtVerifier::new(secrets.jwt_secret.expose().as_bytes()),
            tokens: Tokens::new(secrets.jwt_secret.expose().as_bytes()),
            queue_settings: tuning.queue,
            web: tuning.web,
            counters: Arc::new(TtlCache::new(tuning.queue.counter_cache_ttl)),
            limits: Arc::new(RateLimits::new(&tuning.limits)),
            pulses: crate::pulse::Pulses::default(),
            activity: Default::default(),
            join_rates: Default::default(),
            challenges: flashsale_queue::pow::Challenges::new(secrets.jwt_secret.expose().as_bytes()),
            drifting: Default::default(),
            pg_drift: Default::default(),
            orphan_after: tuning.orphan_after,
            retire_grace: tuning.retire_grace,
            ticker: Default::default(),
            database: Default::default(),
            clock,
            #[cfg(feature = "failpoints")]
            failpoints: Failpoints::default(),
        }))
    }
}
