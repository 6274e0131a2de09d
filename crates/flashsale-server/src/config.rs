//! Configuration, read from the environment (or the equivalent command-line flags).
//!
//! Every setting has a default that works on a developer's machine with local Redis and
//! PostgreSQL. The three secrets are the exception that matters: with none of them set the server
//! runs in **dev mode** with well-known secrets (so curl examples and the load harness work out of
//! the box) and says so loudly; setting some but not all is refused, as a half-configured
//! production deployment is more likely a mistake than a plan.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use clap::Args;
use flashsale_core::KeySpace;

/// A secret value: never printed, in `Debug` or anywhere else.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The secret's value, for the one place that uses it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Secret, Self::Err> {
        Ok(Secret(s.to_owned()))
    }
}

/// Well-known secrets used in dev mode. Public by design: anyone can read them here.
pub mod dev {
    /// `Authorization: Bearer dev-admin-token` on admin endpoints in dev mode.
    pub const ADMIN_TOKEN: &str = "dev-admin-token";
    /// HS256 key for shopper JWTs in dev mode.
    pub const JWT_SECRET: &str = "dev-jwt-secret-do-not-use-in-production";
    /// HMAC key for payment callbacks in dev mode.
    pub const PAYMENT_SECRET: &str = "dev-payment-secret-do-not-use-in-production";
}

/// How long public sale views are cached unless configured otherwise, in milliseconds: short
/// enough that `units_left` is nearly live, long enough to turn a countdown page's polling from
/// two PostgreSQL queries per request into two per instance per half second.
pub const DEFAULT_PUBLIC_CACHE_MS: u64 = 500;

/// Queue requests per second per buyer, unless configured (burst: twice that).
pub const DEFAULT_RATE_LIMIT_PER_USER: u32 = 10;
/// Order attempts per second per buyer, unless configured otherwise.
pub const DEFAULT_RATE_LIMIT_ORDERS_PER_USER: u32 = 5;

/// Event streams one buyer may hold open on an instance unless configured otherwise: a page and
/// a second tab.
pub const DEFAULT_EVENT_STREAMS_PER_BUYER: u32 = 2;
/// Queue requests per second per client IP, unless configured (burst: twice that). Generous,
/// since carrier NAT puts many real buyers behind one address.
pub const DEFAULT_RATE_LIMIT_PER_IP: u32 = 200;

/// How long a reservation may wait for its order before upkeep releases it as an orphan, unless
/// configured otherwise (tests shorten it). A group commit takes milliseconds; an order not
/// written after this long never will be (its instance died, or stalled past the point where the
/// buyer has retried).
pub const ORPHAN_AFTER: Duration = Duration::from_secs(10);

/// How long a retired batch's Redis keys stay readable, unless configured otherwise.
pub const RETIRE_GRACE: Duration = Duration::from_secs(3600);

/// The settings as given (flags or environment), before validation.
#[derive(Debug, Clone, Args)]
pub struct RawSettings {
    /// PostgreSQL URL; the database is created if missing.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/flashsale",
        hide_env_values = true
    )]
    pub database_url: Secret,
    /// Redis URL.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379", hide_env_values = true)]
    pub redis_url: Secret,
    /// A Redis Cluster instead of one Redis: comma-separated `redis://host:port` of some of its
    /// nodes (the rest are learnt from them). Set, it replaces REDIS_URL and FLASHSALE_REDIS_MODE.
    #[arg(long, env = "FLASHSALE_REDIS_CLUSTER", default_value = "", hide_env_values = true)]
    pub redis_cluster: String,
    /// Address to listen on.
    #[arg(long, env = "FLASHSALE_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// Bearer token for /admin endpoints (at least 16 characters).
    #[arg(long, env = "FLASHSALE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<Secret>,
    /// HS256 key for shopper JWTs (at least 32 bytes).
    #[arg(long, env = "FLASHSALE_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<Secret>,
    /// HMAC-SHA256 key for payment callbacks (at least 16 bytes).
    #[arg(long, env = "FLASHSALE_PAYMENT_SECRET", hide_env_values = true)]
    pub payment_secret: Option<Secret>,
    /// Prefix of every Redis key this deployment writes (no braces or spaces).
    #[arg(long, env = "FLASHSALE_REDIS_PREFIX", default_value = "fs")]
    pub redis_prefix: String,
    /// Redis connections per instance.
    #[arg(long, env = "FLASHSALE_REDIS_POOL_SIZE", default_value_t = 64)]
    pub redis_pool_size: usize,
    /// PostgreSQL connections per instance.
    #[arg(long, env = "FLASHSALE_DB_MAX_CONNECTIONS", default_value_t = 20)]
    pub db_max_connections: u32,
    /// Longest wait for a PostgreSQL connection, in ms: during an outage requests answer 503
    /// after this.
    #[arg(long, env = "FLASHSALE_DB_ACQUIRE_TIMEOUT_MS", default_value_t = 1_000)]
    pub db_acquire_timeout_ms: u64,
    /// Longest wait for a row lock, in ms (PostgreSQL's `lock_timeout`).
    #[arg(long, env = "FLASHSALE_DB_LOCK_TIMEOUT_MS", default_value_t = 2_000)]
    pub db_lock_timeout_ms: u64,
    /// Longest statement, in ms (PostgreSQL's `statement_timeout`; migrations are not bound).
    #[arg(long, env = "FLASHSALE_DB_STATEMENT_TIMEOUT_MS", default_value_t = 10_000)]
    pub db_statement_timeout_ms: u64,
    /// Longest a transaction may sit idle before PostgreSQL ends its session, in ms
    /// (`idle_in_transaction_session_timeout`): bounds how long a frozen instance holds a batch.
    #[arg(long, env = "FLASHSALE_DB_IDLE_IN_TRANSACTION_TIMEOUT_MS", default_value_t = 5_000)]
    pub db_idle_in_transaction_timeout_ms: u64,
    /// How long start-up keeps retrying Redis and PostgreSQL before giving up, in seconds.
    #[arg(long, env = "FLASHSALE_STARTUP_TIMEOUT_SECS", default_value_t = 30)]
    pub startup_timeout_secs: u64,
    /// Largest request body accepted, in bytes.
    #[arg(long, env = "FLASHSALE_MAX_BODY_BYTES", default_value_t = 16 * 1024)]
    pub max_body_bytes: usize,
    /// Skip the `maxmemory-policy noeviction` check (only for managed Redis that hides CONFIG and
    /// is known to be set to noeviction).
    #[arg(long, env = "FLASHSALE_REDIS_SKIP_POLICY_CHECK", default_value_t = false)]
    pub redis_skip_policy_check: bool,
    /// How long public sale views (`GET /sales`, `GET /sales/{id}`) are cached per instance, in
    /// milliseconds; 0 disables the cache.
    #[arg(long, env = "FLASHSALE_PUBLIC_CACHE_MS", default_value_t = DEFAULT_PUBLIC_CACHE_MS)]
    pub public_cache_ms: u64,
    /// Buyers admitted and not yet finished per unit of stock left (1.0–1.5): a little above 1
    /// makes up for admitted buyers who never reserve.
    #[arg(long, env = "FLASHSALE_ADMISSION_OVERSUBSCRIPTION", default_value_t = 1.2)]
    pub admission_oversubscription: f64,
    /// How long an instance reuses a batch's serving counter and stock for status polls, in
    /// milliseconds: polls then cost no Redis round trip.
    #[arg(long, env = "FLASHSALE_QUEUE_COUNTER_CACHE_MS", default_value_t = 50)]
    pub queue_counter_cache_ms: u64,
    /// Status polls per second the whole waiting crowd of one batch should make, all instances
    /// together: buyers far back are told to come back less often as the crowd grows (from every
    /// 10 s up to every 120 s), so a million waiting buyers cost what the servers can answer.
    #[arg(long, env = "FLASHSALE_QUEUE_POLL_BUDGET", default_value_t = 20_000)]
    pub queue_poll_budget: u32,
    /// Queue requests per second per buyer (burst twice that); 0 turns the limit off.
    #[arg(long, env = "FLASHSALE_RATE_LIMIT_PER_USER", default_value_t = DEFAULT_RATE_LIMIT_PER_USER)]
    pub rate_limit_per_user: u32,
    /// Order attempts per second per buyer (burst twice that), a budget separate from the queue's
    /// so that polling never costs a buyer an order; 0 turns the limit off.
    #[arg(long, env = "FLASHSALE_RATE_LIMIT_ORDERS_PER_USER", default_value_t = DEFAULT_RATE_LIMIT_ORDERS_PER_USER)]
    pub rate_limit_orders_per_user: u32,
    /// Event streams (`GET /sales/{id}/queue/events`) one buyer may hold open on an instance at
    /// once; 0 turns the cap off.
    #[arg(long, env = "FLASHSALE_EVENT_STREAMS_PER_BUYER", default_value_t = DEFAULT_EVENT_STREAMS_PER_BUYER)]
    pub event_streams_per_buyer: u32,
    /// Longest wait for a request's head, in ms, from the connection's start or the previous
    /// response (so it also closes kept-alive connections idle that long).
    #[arg(long, env = "FLASHSALE_HTTP_HEADER_TIMEOUT_MS", default_value_t = 10_000)]
    pub http_header_timeout_ms: u64,
    /// Longest time a connection may go without a byte moving either way, in ms (a stalled body,
    /// a client that stopped reading).
    #[arg(long, env = "FLASHSALE_HTTP_IDLE_TIMEOUT_MS", default_value_t = 30_000)]
    pub http_idle_timeout_ms: u64,
    /// Most connections open at once on an instance; the next get 503 and are closed (keep the
    /// process's file descriptor limit above it).
    #[arg(long, env = "FLASHSALE_HTTP_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub http_max_connections: usize,
    /// Queue requests per second per client IP (burst twice that); 0 turns the limit off.
    #[arg(long, env = "FLASHSALE_RATE_LIMIT_PER_IP", default_value_t = DEFAULT_RATE_LIMIT_PER_IP)]
    pub rate_limit_per_ip: u32,
    /// Comma-separated proxies (addresses or CIDR networks) whose X-Forwarded-For is believed.
    #[arg(long, env = "FLASHSALE_TRUSTED_PROXIES", default_value = "")]
    pub trusted_proxies: String,
    /// How the hot path reaches Redis: `shared` (one multiplexed connection per instance,
    /// commands of concurrent requests pipelined) or `pool` (a pooled connection per operation).
    #[arg(long, env = "FLASHSALE_REDIS_MODE", default_value = "shared")]
    pub redis_mode: RedisMode,
    /// Log format: `text` or `json`.
    #[arg(long, env = "FLASHSALE_LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,
    /// Order writer tasks per kind (idempotency claims, orders): transactions committing at once.
    /// Fewer writers make bigger group commits.
    #[arg(long, env = "FLASHSALE_ORDER_WRITERS", default_value_t = 2)]
    pub order_writers: usize,
    /// Most order requests sharing one transaction.
    #[arg(long, env = "FLASHSALE_ORDER_BATCH_MAX", default_value_t = 256)]
    pub order_batch_max: usize,
    /// The payment provider's checkout the waiting room sends a buyer to, `{order_id}` and
    /// `{amount_cents}` filled in (an http or https URL). Unset: no payment link on the page.
    #[arg(long, env = "FLASHSALE_PAYMENT_PAGE_URL")]
    pub payment_page_url: Option<String>,
    /// Comma-separated origins (`https://shop.example`) whose scripts may call the API from a
    /// browser; empty: none (the pages served here need none).
    #[arg(long, env = "FLASHSALE_CORS_ORIGINS", default_value = "")]
    pub cors_origins: String,
}

/// How the hot path reaches Redis (see the `flashsale-redis` crate).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RedisMode {
    /// One multiplexed connection per instance.
    Shared,
    /// A pooled connection per operation.
    Pool,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub database_url: Secret,
    pub redis_url: Secret,
    /// Seed nodes of a Redis Cluster; empty: one Redis at `redis_url`.
    pub redis_cluster: Vec<String>,
    pub addr: SocketAddr,
    pub secrets: Secrets,
    pub keys: KeySpace,
    pub redis_pool_size: usize,
    pub db_max_connections: u32,
    pub database_bounds: DatabaseBounds,
    pub startup_timeout: Duration,
    pub max_body_bytes: usize,
    pub redis_skip_policy_check: bool,
    pub public_cache_ttl: Duration,
    pub queue: QueueSettings,
    pub limits: crate::limits::LimitSettings,
    pub redis_mode: RedisMode,
    pub log_format: LogFormat,
    pub orders: flashsale_order::WriterTuning,
    pub connections: crate::listener::ConnectionLimits,
    pub web: WebSettings,
}

/// How the queue runs on this instance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QueueSettings {
    /// Buyers in flight per unit available.
    pub oversubscription: f64,
    /// Reuse of a batch's counters by status polls.
    pub counter_cache_ttl: Duration,
    /// Polls per second a batch's waiting crowd should make (see [`crate::service::queue::Pacing`]).
    pub poll_budget: u32,
    /// Once every unit is in a cart, the buyers kept in standby beyond those the held units
    /// could serve: at least this many, and at least a twentieth of the stock (see
    /// [`crate::service::queue::reach_margin`]).
    pub reach_margin_min: u32,
}

impl Default for QueueSettings {
    fn default() -> Self {
        QueueSettings {
            oversubscription: 1.2,
            counter_cache_ttl: Duration::from_millis(50),
            poll_budget: 20_000,
            reach_margin_min: 10,
        }
    }
}

/// The three secrets, and whether they are the dev ones.
#[derive(Debug, Clone)]
pub struct Secrets {
    pub admin_token: Secret,
    pub jwt_secret: Secret,
    pub payment_secret: Secret,
    /// None was configured: the well-known [`dev`] secrets are in use.
    pub dev_mode: bool,
}

impl Secrets {
    /// The well-known dev secrets (also what tests use).
    pub fn dev() -> Secrets {
        Secrets {
            admin_token: Secret(dev::ADMIN_TOKEN.to_owned()),
            jwt_secret: Secret(dev::JWT_SECRET.to_owned()),
            payment_secret: Secret(dev::PAYMENT_SECRET.to_owned()),
            dev_mode: true,
        }
    }
}

/// What the pages are told about this deployment, and who else may call the API from a browser.
#[derive(Debug, Clone, Default)]
pub struct WebSettings {
    /// Where the waiting room sends a buyer to pay an order (`{order_id}` and `{amount_cents}`
    /// are filled in): the payment provider's checkout, which later calls
    /// `/payments/callback`. Unset: the page offers no payment link (dev mode has its own test
    /// button).
    pub payment_page_url: Option<String>,
    /// Other sites whose scripts may call the API (see [`crate::http::cors`]).
    pub cors_origins: CorsOrigins,
}

/// The origins allowed to call the API from a browser, exactly as browsers send them
/// (`https://shop.example`).
#[derive(Debug, Clone, Default)]
pub struct CorsOrigins(pub Vec<axum::http::HeaderValue>);

/// Settings that cannot be used, with a message that says how to fix them.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

impl RawSettings {
    /// Checks every setting; the first problem found is reported.
    pub fn validate(self) -> Result<Settings, ConfigError> {
        // An empty variable (`FLASHSALE_ADMIN_TOKEN=` in a compose file) counts as unset.
        let given = |secret: Option<Secret>| secret.filter(|s| !s.expose().is_empty());
        let secrets = match (given(self.admin_token), given(self.jwt_secret), given(self.payment_secret)) {
            (None, None, None) => Secrets::dev(),
            (Some(admin_token), Some(jwt_secret), Some(payment_secret)) => {
                let checks = [
                    ("FLASHSALE_ADMIN_TOKEN", &admin_token, 16),
                    ("FLASHSALE_JWT_SECRET", &jwt_secret, 32),
                    ("FLASHSALE_PAYMENT_SECRET", &payment_secret, 16),
                ];
                for (name, secret, min) in checks {
                    if secret.expose().len() < min {
                        return Err(ConfigError(format!("{name} must be at least {min} bytes long")));
                    }
                }
                Secrets { admin_token, jwt_secret, payment_secret, dev_mode: false }
            }
            _ => {
                return Err(ConfigError(
                    "set all of FLASHSALE_ADMIN_TOKEN, FLASHSALE_JWT_SECRET and FLASHSALE_PAYMENT_SECRET, \
                     or none of them for dev mode"
                        .to_owned(),
                ));
            }
        };
        if !KeySpace::is_valid_prefix(&self.redis_prefix) {
            return Err(ConfigError(format!(
                "FLASHSALE_REDIS_PREFIX {:?} must be 1–64 characters without braces or whitespace",
                self.redis_prefix
            )));
        }
        if self.database_url.expose().parse::<sqlx::postgres::PgConnectOptions>().is_err() {
            return Err(ConfigError("DATABASE_URL is not a valid PostgreSQL URL".to_owned()));
        }
        if redis::parse_redis_url(self.redis_url.expose()).is_none() {
            return Err(ConfigError("REDIS_URL is not a valid Redis URL".to_owned()));
        }
        let positive = [
            ("FLASHSALE_REDIS_POOL_SIZE", self.redis_pool_size as u64),
            ("FLASHSALE_DB_MAX_CONNECTIONS", u64::from(self.db_max_connections)),
            ("FLASHSALE_STARTUP_TIMEOUT_SECS", self.startup_timeout_secs),
            ("FLASHSALE_MAX_BODY_BYTES", self.max_body_bytes as u64),
            ("FLASHSALE_ORDER_WRITERS", self.order_writers as u64),
            ("FLASHSALE_ORDER_BATCH_MAX", self.order_batch_max as u64),
            ("FLASHSALE_DB_ACQUIRE_TIMEOUT_MS", self.db_acquire_timeout_ms),
            ("FLASHSALE_HTTP_HEADER_TIMEOUT_MS", self.http_header_timeout_ms),
            ("FLASHSALE_HTTP_IDLE_TIMEOUT_MS", self.http_idle_timeout_ms),
            ("FLASHSALE_HTTP_MAX_CONNECTIONS", self.http_max_connections as u64),
            ("FLASHSALE_DB_LOCK_TIMEOUT_MS", self.db_lock_timeout_ms),
            ("FLASHSALE_DB_STATEMENT_TIMEOUT_MS", self.db_statement_timeout_ms),
            ("FLASHSALE_DB_IDLE_IN_TRANSACTION_TIMEOUT_MS", self.db_idle_in_transaction_timeout_ms),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(ConfigError(format!("{name} must be at least 1")));
        }
        if !(1.0..=1.5).contains(&self.admission_oversubscription) {
            return Err(ConfigError("FLASHSALE_ADMISSION_OVERSUBSCRIPTION must be between 1.0 and 1.5".to_owned()));
        }
        if self.http_idle_timeout_ms < 20_000 {
            return Err(ConfigError(
                "FLASHSALE_HTTP_IDLE_TIMEOUT_MS must be at least 20000: event streams send a keep-alive every 15 s"
                    .to_owned(),
            ));
        }
        if self.queue_poll_budget == 0 {
            return Err(ConfigError("FLASHSALE_QUEUE_POLL_BUDGET must be at least 1".to_owned()));
        }
        let trusted_proxies = comma_list(&self.trusted_proxies)
            .map(str::parse)
            .collect::<Result<Vec<crate::limits::IpNet>, String>>()
            .map_err(|e| ConfigError(format!("FLASHSALE_TRUSTED_PROXIES: {e}")))?;
        let web = WebSettings {
            payment_page_url: match self.payment_page_url {
                Some(url) if !(url.starts_with("https://") || url.starts_with("http://")) => {
                    return Err(ConfigError("FLASHSALE_PAYMENT_PAGE_URL must be an http or https URL".to_owned()));
                }
                url => url,
            },
            cors_origins: CorsOrigins(comma_list(&self.cors_origins).map(cors_origin).collect::<Result<_, _>>()?),
        };
        let redis_cluster: Vec<String> = comma_list(&self.redis_cluster).map(str::to_owned).collect();
        if redis_cluster.iter().any(|url| redis::parse_redis_url(url).is_none()) {
            return Err(ConfigError("FLASHSALE_REDIS_CLUSTER must list redis:// URLs, comma-separated".to_owned()));
        }
        Ok(Settings {
            web,
            redis_cluster,
            database_url: self.database_url,
            redis_url: self.redis_url,
            addr: self.addr,
            secrets,
            keys: KeySpace::new(self.redis_prefix),
            redis_pool_size: self.redis_pool_size,
            db_max_connections: self.db_max_connections,
            database_bounds: DatabaseBounds {
                acquire_timeout: Duration::from_millis(self.db_acquire_timeout_ms),
                lock_timeout: Duration::from_millis(self.db_lock_timeout_ms),
                statement_timeout: Duration::from_millis(self.db_statement_timeout_ms),
                idle_in_transaction_timeout: Duration::from_millis(self.db_idle_in_transaction_timeout_ms),
            },
            startup_timeout: Duration::from_secs(self.startup_timeout_secs),
            max_body_bytes: self.max_body_bytes,
            redis_skip_policy_check: self.redis_skip_policy_check,
            public_cache_ttl: Duration::from_millis(self.public_cache_ms),
            limits: crate::limits::LimitSettings {
                per_user: std::num::NonZeroU32::new(self.rate_limit_per_user),
                orders_per_user: std::num::NonZeroU32::new(self.rate_limit_orders_per_user),
                per_ip: std::num::NonZeroU32::new(self.rate_limit_per_ip),
                streams_per_user: std::num::NonZeroU32::new(self.event_streams_per_buyer),
                trusted_proxies,
            },
            queue: QueueSettings {
                oversubscription: self.admission_oversubscription,
                counter_cache_ttl: Duration::from_millis(self.queue_counter_cache_ms),
                poll_budget: self.queue_poll_budget,
                ..QueueSettings::default()
            },
            redis_mode: self.redis_mode,
            log_format: self.log_format,
            orders: flashsale_order::WriterTuning {
                workers: self.order_writers,
                max_batch: self.order_batch_max,
                ..flashsale_order::WriterTuning::default()
            },
            connections: crate::listener::ConnectionLimits {
                header_timeout: Duration::from_millis(self.http_header_timeout_ms),
                idle_timeout: Duration::from_millis(self.http_idle_timeout_ms),
                max_connections: self.http_max_connections,
            },
        })
    }
}

/// The items of a comma-separated setting, trimmed, empty ones skipped (`""` is no item).
fn comma_list(setting: &str) -> impl Iterator<Item = &str> {
    setting.split(',').map(str::trim).filter(|s| !s.is_empty())
}

/// One origin of `FLASHSALE_CORS_ORIGINS`, as a browser sends it: scheme and host (and port),
/// nothing after.
fn cors_origin(origin: &str) -> Result<axum::http::HeaderValue, ConfigError> {
    let bad = || ConfigError(format!("FLASHSALE_CORS_ORIGINS: {origin:?} is not an origin like https://shop.example"));
    let host = origin.strip_prefix("https://").or_else(|| origin.strip_prefix("http://")).ok_or_else(bad)?;
    if host.is_empty() || host.contains(['/', '?', '#', ' ', '*']) {
        return Err(bad());
    }
    axum::http::HeaderValue::from_str(origin).map_err(|_| bad())
}

impl Settings {
    /// Whether the address is reachable from other machines (dev secrets on such an address
    /// deserve an even louder warning).
    pub fn listens_publicly(&self) -> bool {
        match self.addr.ip() {
            IpAddr::V4(ip) => !ip.is_loopback(),
            IpAddr::V6(ip) => !ip.is_loopback(),
        }
    }
}

/// How long PostgreSQL may make this instance wait, so that neither an outage nor a frozen or
/// dying instance can stall a sale for longer than a few seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DatabaseBounds {
    /// Longest wait for a pooled connection: during an outage a request answers 503 after this.
    pub acquire_timeout: Duration,
    /// Longest wait for a row lock (`lock_timeout`): an order waits at most this long behind a
    /// rebuild or an admin change holding its batch row.
    pub lock_timeout: Duration,
    /// Longest statement (`statement_timeout`).
    pub statement_timeout: Duration,
    /// Longest a transaction may sit idle (`idle_in_transaction_session_timeout`): PostgreSQL
    /// ends the session of an instance frozen (or dead) mid-transaction after this, releasing
    /// the batch rows it locked.
    pub idle_in_transaction_timeout: Duration,
}

impl Default for DatabaseBounds {
    fn default() -> Self {
        DatabaseBounds {
            acquire_timeout: Duration::from_millis(1_000),
            lock_timeout: Duration::from_millis(2_000),
            statement_timeout: Duration::from_millis(10_000),
            idle_in_transaction_timeout: Duration::from_millis(5_000),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        settings: RawSettings,
    }

    fn parse(args: &[&str]) -> Result<Settings, ConfigError> {
        // Flags, not the environment, so the test does not depend on the caller's variables.
        let mut argv = vec!["flashsale", "--database-url", "postgres://u:hunter2@db/x", "--redis-url", "redis://r"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).unwrap().settings.validate()
    }

    #[test]
    fn no_secrets_means_dev_mode() {
        let settings = parse(&[]).unwrap();
        assert!(settings.secrets.dev_mode);
        assert_eq!(settings.secrets.admin_token.expose(), dev::ADMIN_TOKEN);
    }

    #[test]
    fn cors_origins_must_be_bare_origins_and_the_payment_page_a_web_url() {
        let settings = parse(&["--cors-origins", "https://shop.example, http://127.0.0.1:3000"]).unwrap();
        assert_eq!(settings.web.cors_origins.0, ["https://shop.example", "http://127.0.0.1:3000"]);
        assert!(parse(&[]).unwrap().web.cors_origins.0.is_empty());
        for bad in ["shop.example", "https://shop.example/", "https://*.example", "https://"] {
            let error = parse(&["--cors-origins", bad]).unwrap_err();
            assert!(error.0.contains("FLASHSALE_CORS_ORIGINS"), "{bad}: {}", error.0);
        }
        assert!(parse(&["--payment-page-url", "javascript:alert(1)"]).is_err());
        let url = "https://pay.example/checkout?order={order_id}";
        assert_eq!(parse(&["--payment-page-url", url]).unwrap().web.payment_page_url.as_deref(), Some(url));
    }

    #[test]
    fn empty_secrets_count_as_unset() {
        let settings = parse(&["--admin-token", "", "--jwt-secret", "", "--payment-secret", ""]).unwrap();
        assert!(settings.secrets.dev_mode);
    }

    #[test]
    fn some_secrets_but_not_all_are_refused() {
        assert!(parse(&["--admin-token", "0123456789abcdef"]).is_err());
    }

    #[test]
    fn short_secrets_are_refused() {
        let err =
            parse(&["--admin-token", "short", "--jwt-secret", &"j".repeat(32), "--payment-secret", &"p".repeat(16)])
                .unwrap_err();
        assert!(err.0.contains("FLASHSALE_ADMIN_TOKEN"), "{err}");
    }

    #[test]
    fn secrets_never_appear_in_debug_output() {
        let settings = parse(&[
            "--admin-token",
            "admin-token-0123456789",
            "--jwt-secret",
            &"j".repeat(40),
            "--payment-secret",
            "payment-secret-0123456789",
        ])
        .unwrap();
        let debug = format!("{settings:?}");
        for secret in ["admin-token-0123456789", &"j".repeat(40), "payment-secret-0123456789", "hunter2"] {
            assert!(!debug.contains(secret), "{secret} leaked: {debug}");
        }
    }

    #[test]
    fn braces_in_the_redis_prefix_are_refused() {
        assert!(parse(&["--redis-prefix", "fs{x}"]).is_err());
    }
}
