//! The flashsale HTTP server.
//!
//! # Layout
//! - [`config`]: settings from the environment, secrets that never print, dev mode.
//! - [`startup`]: reaching PostgreSQL and Redis, creating the database, migrations, refusing a
//!   Redis that evicts keys.
//! - [`listener`]: accepting connections, with header and idle timeouts and a connection cap.
//! - [`app`](mod@app): the router and the OpenAPI document generated from it; [`routes`] holds the handlers
//!   by audience (shoppers, admin, ops).
//! - [`sales`]: sale operations spanning PostgreSQL and Redis, and the views the API returns.
//! - [`queue`]: the buyer's side of the queue and the admission ticker.
//! - [`orders`]: order creation around the Redis reservation, payments, the expiry and
//!   settlement sweep.
//! - [`problem`]: RFC 9457 errors and the extractors that produce them.
//! - [`database`]: PostgreSQL's reachability, probed; while it is down orders fail fast and
//!   admission is held.
//! - [`auth`], [`metrics`], [`state`]: the admin token, Prometheus metrics, shared state.
//! - [`upkeep`]: the once-a-second background pass (weekly rollover, rebuilding lost Redis
//!   state, the inventory audit).
//!
//! The binary (`src/bin/flashsale.rs`) only parses the command line and calls [`serve`] or
//! [`migrate`].

pub mod app;
pub mod auth;
pub mod buyer;
pub mod cache;
pub mod config;
pub mod database;
pub mod limits;
pub mod listener;
pub mod metrics;
pub mod orders;
pub mod problem;
pub mod queue;
pub mod routes;
pub mod sales;
pub mod startup;
pub mod state;
pub mod upkeep;

use tokio_util::sync::CancellationToken;

pub use app::app;
use config::Settings;
pub use state::AppState;

/// Connects, migrates and serves until SIGINT or SIGTERM, then drains in-flight requests.
pub async fn serve(settings: Settings) -> anyhow::Result<()> {
    if settings.secrets.dev_mode {
        let exposure = if settings.listens_publicly() { " ON A PUBLIC ADDRESS" } else { "" };
        tracing::warn!(
            "DEV MODE{exposure}: no secrets configured, using the well-known dev admin token, JWT and payment secrets. \
             Set FLASHSALE_ADMIN_TOKEN, FLASHSALE_JWT_SECRET and FLASHSALE_PAYMENT_SECRET in production."
        );
    }
    let db = startup::connect_postgres(&settings).await?;
    startup::migrate(&db).await?;
    let redis = startup::connect_redis(&settings).await?;
    flashsale_inventory::scripts::load_all(&redis).await.map_err(startup::StartupError::from)?;
    flashsale_queue::scripts::load_all(&redis).await.map_err(startup::StartupError::from)?;
    flashsale_order::load_scripts(&redis).await.map_err(|e| anyhow::anyhow!("loading the order scripts: {e}"))?;

    let hot = match settings.redis_mode {
        config::RedisMode::Pool => flashsale_redis::Redis::pooled(redis),
        config::RedisMode::Shared => {
            flashsale_redis::Redis::shared(redis, settings.redis_url.expose(), flashsale_redis::COMMAND_TIMEOUT)
                .await
                .map_err(|e| startup::StartupError::RedisUnreachable {
                waited: std::time::Duration::ZERO,
                cause: e.to_string(),
            })?
        }
    };
    let state = AppState::new(
        db.clone(),
        hot,
        settings.keys.clone(),
        settings.secrets.clone(),
        state::Tuning {
            public_cache_ttl: settings.public_cache_ttl,
            queue: settings.queue,
            limits: settings.limits.clone(),
            orders: settings.orders,
            orphan_after: upkeep::ORPHAN_AFTER,
            retire_grace: upkeep::RETIRE_GRACE,
            local_clock_skew_ms: 0,
        },
    );
    upkeep::sync_clock(&state).await;
    let shutdown = CancellationToken::new();
    let upkeep = tokio::spawn(upkeep::run(state.clone(), shutdown.clone()));
    let admission = tokio::spawn(queue::run_admission(state.clone(), shutdown.clone()));
    let sweep = tokio::spawn(upkeep::run_order_sweep(state.clone(), shutdown.clone()));
    let probe = tokio::spawn(database::run_probe(state.clone(), shutdown.clone()));
    let router = app(state, settings.max_body_bytes);

    let listener = tokio::net::TcpListener::bind(settings.addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "flashsale listening");
    listener::serve(listener, router, settings.connections, shutdown_signal()).await?;
    shutdown.cancel();
    upkeep.await?;
    admission.await?;
    sweep.await?;
    probe.await?;
    db.close().await;
    tracing::info!("flashsale stopped");
    Ok(())
}

/// Runs the migrations and exits.
pub async fn migrate(settings: Settings) -> anyhow::Result<()> {
    let db = startup::connect_postgres(&settings).await?;
    startup::migrate(&db).await?;
    tracing::info!("migrations applied");
    Ok(())
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM (what orchestrators send before killing).
async fn shutdown_signal() {
    let interrupt = async { tokio::signal::ctrl_c().await.expect("install the SIGINT handler") };
    #[cfg(unix)]
    let terminate = async {
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install the SIGTERM handler")
            .recv()
            .await;
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
    tracing::info!("shutdown requested; draining in-flight requests");
}
