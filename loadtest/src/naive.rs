//! The naive purchase every flash-sale backend is measured against: one PostgreSQL transaction
//! per buyer, `UPDATE naive_stock SET qty = qty - 1 WHERE id = 1 AND qty > 0` plus an insert,
//! in a scratch database of its own (`flashsale_naive_baseline`, created next to the one named).
//! Every buyer queues on the one stock row's lock, held across a commit.
//!
//! Used by `order-bench` (side by side with the API) and by the `baseline-naive` scenario.

use std::time::{Duration, Instant};

use anyhow::Context;
use futures::stream::{self, StreamExt};
use sqlx::Connection;

use crate::checks::Report;
use crate::latency::Latencies;

/// `orders` buyers after as many units (see [`run_with_stock`]).
pub async fn naive(database_url: &str, orders: usize, concurrency: usize) -> anyhow::Result<(f64, usize, Latencies)> {
    run_with_stock(database_url, orders, orders, concurrency).await
}

/// `buyers` buyers, one purchase attempt each, `concurrency` transactions in flight, against
/// `stock` units: returns purchases per second, units sold and the latencies (step `naive purchase`).
pub(crate) async fn run_with_stock(
    database_url: &str,
    buyers: usize,
    stock: usize,
    concurrency: usize,
) -> anyhow::Result<(f64, usize, Latencies)> {
    let mut admin = sqlx::PgConnection::connect(database_url).await.context("PostgreSQL for the naive baseline")?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'flashsale_naive_baseline')")
            .fetch_one(&mut admin)
            .await?;
    if !exists {
        sqlx::query("CREATE DATABASE flashsale_naive_baseline").execute(&mut admin).await?;
    }
    let mut url = url_with_database(database_url, "flashsale_naive_baseline");
    if url.is_empty() {
        url = database_url.to_owned();
    }
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(u32::try_from(concurrency.clamp(1, 90)).unwrap_or(90))
        .connect(&url)
        .await?;
    sqlx::query("DROP TABLE IF EXISTS naive_orders, naive_stock").execute(&pool).await?;
    sqlx::query("CREATE TABLE naive_stock (id INT PRIMARY KEY, qty BIGINT NOT NULL)").execute(&pool).await?;
    sqlx::query(
        "CREATE TABLE naive_orders (id BIGSERIAL PRIMARY KEY, stock_id INT NOT NULL, user_id TEXT NOT NULL, \
         quantity INT NOT NULL, created_at TIMESTAMPTZ NOT NULL DEFAULT now())",
    )
    .execute(&pool)
    .await?;
    sqlx::query("INSERT INTO naive_stock VALUES (1, $1)").bind(i64::try_from(stock)?).execute(&pool).await?;

    let started = Instant::now();
    let results: Vec<(bool, Duration, Duration)> = stream::iter(0..buyers)
        .map(|i| {
            let pool = &pool;
            async move {
                let sent = Instant::now();
                let bought = async {
                    let mut tx = pool.begin().await?;
                    let took = sqlx::query("UPDATE naive_stock SET qty = qty - 1 WHERE id = $1 AND qty > 0")
                        .bind(1)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                    if took == 1 {
                        sqlx::query("INSERT INTO naive_orders (stock_id, user_id, quantity) VALUES (1, $1, 1)")
                            .bind(format!("naive-{i}"))
                            .execute(&mut *tx)
                            .await?;
                    }
                    tx.commit().await?;
                    anyhow::Ok(took == 1)
                }
                .await
                .unwrap_or(false);
                (bought, sent.elapsed(), started.elapsed())
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    // The rate is purchases per second until the last unit went: once stock is gone, the
    // refusals that follow are cheap and would flatter it.
    let last_sale = results.iter().filter(|(b, _, _)| *b).map(|(_, _, at)| *at).max().unwrap_or_default();
    let secs = last_sale.as_secs_f64().max(1e-9);
    let sold = results.iter().filter(|(b, _, _)| *b).count();
    let mut latencies = Latencies::default();
    for (_, took, done) in results {
        latencies.record("naive purchase", done.saturating_sub(took), took);
    }
    pool.close().await;
    Ok((sold as f64 / secs, sold, latencies))
}

/// `url` with its database name replaced (`postgres://host/db?opts` → `.../name?opts`).
fn url_with_database(url: &str, name: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let Some(slash) = base.rfind('/').filter(|i| *i > "postgres://".len()) else { return String::new() };
    let mut out = format!("{}/{name}", &base[..slash]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

/// `baseline-naive`: `buyers` buyers after `stock` units through the naive purchase, with
/// `concurrency` transactions in flight. Checks that it sells exactly what it has (no more, no
/// less) and reports its rate and latencies, to set beside the API's (`order-bench`, `smoke`).
pub async fn run(database_url: &str, buyers: usize, stock: usize, concurrency: usize) -> anyhow::Result<Report> {
    let mut report = Report::new("baseline-naive");
    let started = Instant::now();
    let (rate, sold, latencies) = run_with_stock(database_url, buyers, stock, concurrency).await?;
    report.note("naive purchases/s", format!("{rate:.0} (until the last unit went)"));
    for (step, line) in latencies.lines() {
        report.note(step, line);
    }
    report.note("wall_time", format!("{:.1}s", started.elapsed().as_secs_f64()));
    report.check("no_oversell", sold <= stock, format!("{sold} sold of {stock}"));
    report.check("no_undersell", sold == stock.min(buyers), format!("{sold} sold, {buyers} buyers, {stock} units"));
    Ok(report)
}
