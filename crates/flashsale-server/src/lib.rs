//! The flashsale HTTP server.
//!
//! # Layers
//! One rule: a layer calls only the layers below it, never one above or beside it.
//!
//! - [`http`]: handlers, extractors, request and response shapes, problem documents. Calls
//!   `service`; the only layer that knows `axum`'s handlers.
//! - [`jobs`]: background loops, one file per job, started by [`jobs::spawn_all`]. Calls
//!   `service`; logs its own failures.
//! - [`service`]: what the server does (sales, the queue, orders, putting Redis right), in the
//!   domain's words: no `axum`, errors as [`service::Error`].
//! - State and infrastructure: [`state`] (what every layer shares), [`config`], [`startup`]
//!   (reaching PostgreSQL and Redis, migrations), [`listener`] (accepting connections),
//!   [`snapshot`] and [`cache`] (what polls read instead of the stores), [`pulse`] (what event
//!   streams wake on, one per followed batch), [`health`] (whether the
//!   stores and the ticker work), [`limits`] (rate limits), [`jwt`] (shopper tokens),
//!   [`metrics`] (the recorder), [`problem`] (the problem codes every layer speaks),
//!   [`activity`] (each batch's per-second counts for its sale report), [`join_rate`] (how
//!   fast buyers join, for an adaptive proof of work).
//!
//! A test (`layers_do_not_import_upwards`) reads the sources and fails on an import against
//! this order, an import circle between modules, or `axum` in `service/`.
//!
//! The binary (`src/bin/flashsale.rs`) only parses the command line and calls [`serve`] or
//! [`migrate`].

pub mod activity;
pub mod cache;
pub mod config;
pub mod health;
pub mod http;
pub mod jobs;
pub mod join_rate;
pub mod jwt;
pub mod limits;
pub mod listener;
pub mod metrics;
pub mod problem;
pub mod pulse;
pub mod service;
pub mod snapshot;
pub mod startup;
pub mod state;

use tokio_util::sync::CancellationToken;

use config::Settings;
pub use http::app;
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
    let hot = startup::connect_redis(&settings).await?;
    flashsale_inventory::scripts::load_all(&hot).await.map_err(startup::StartupError::from)?;
    flashsale_queue::scripts::load_all(&hot).await.map_err(startup::StartupError::from)?;
    flashsale_order::load_scripts(&hot).await.map_err(|e| anyhow::anyhow!("loading the order scripts: {e}"))?;
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
            orphan_after: config::ORPHAN_AFTER,
            retire_grace: config::RETIRE_GRACE,
            local_clock_skew_ms: 0,
            metrics: metrics::Metrics::process(),
            web: settings.web.clone(),
        },
    );
    jobs::upkeep::sync_clock(&state).await;
    let shutdown = CancellationToken::new();
    let mut jobs = jobs::spawn_all(&state, &shutdown);
    let background = state.background.clone();
    let router = app(state, settings.max_body_bytes);

    let listener = tokio::net::TcpListener::bind(settings.addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "flashsale listening");
    listener::serve(listener, router, settings.connections, shutdown_signal()).await?;
    shutdown.cancel();
    while let Some(finished) = jobs.join_next().await {
        finished?;
    }
    // A rebuild a request started finishes rather than stopping between its Redis write and
    // its commit (which the next instance's audit would have to repair).
    background.close();
    if tokio::time::timeout(std::time::Duration::from_secs(10), background.wait()).await.is_err() {
        tracing::warn!("background work still running after 10 s; stopping anyway");
    }
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

#[cfg(test)]
mod layering;
