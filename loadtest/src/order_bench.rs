//! Orders per second end to end (HTTP, JWT, admission token, Redis reservation, durable
//! PostgreSQL write) at saturation, next to a naive PostgreSQL-only purchase run in the same
//! process right after: `UPDATE stock SET qty = qty - 1 WHERE id = $1 AND qty > 0` plus an
//! insert, in one transaction per purchase.
//!
//! The queue is not part of this measurement: each buyer's admission token is minted here with
//! the deployment's JWT secret (as the queue would sign it), so the server spends its time on
//! orders only. The naive purchase talks to PostgreSQL directly, without HTTP in front of it,
//! which flatters it: the ratio reported is a lower bound.

use std::time::{Duration, Instant};

use anyhow::Context;
use flashsale_core::{BatchNo, SaleId, UserId};
use flashsale_queue::{AdmissionClaims, Tokens};
use futures::stream::{self, StreamExt};
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::checks::Report;
use crate::client::Client;
use crate::latency::Latencies;
use crate::naive::naive;

/// `orders` purchases through the API, then the same through the naive transaction, both with
/// `concurrency` requests in flight.
pub async fn run(
    client: &Client,
    jwt_secret: &str,
    naive_database_url: Option<&str>,
    orders: usize,
    concurrency: usize,
) -> anyhow::Result<Report> {
    let mut report = Report::new("order-bench");
    client.send(Method::GET, "/readyz", None, false, None).await.context("the server is not reachable")?;
    let opens_at = chrono::Utc::now() + chrono::TimeDelta::seconds(2);
    let sale = json!({
        "name": "order-bench", "sku": "LOADTEST-ORDERS", "price_cents": 100, "currency": "CNY",
        "stock": orders, "per_user_limit": 1, "opens_at": opens_at.to_rfc3339(),
        "prequeue_secs": 0, "admission_rate": 10_000, "admission_ttl_secs": 600, "payment_window_secs": 900,
    });
    let created = client.admin_ok(Method::POST, "/admin/sales", Some(&sale), StatusCode::CREATED).await?;
    let id = created.body["id"].as_i64().context("created sale has an id")?;
    let sale_id = SaleId::try_from(id)?;

    // Tokens and JWTs are minted before the clock starts: the identity provider's and the
    // queue's work is not the order path's.
    let tokens = Tokens::new(jwt_secret.as_bytes());
    let expires_at_ms = (chrono::Utc::now() + chrono::TimeDelta::minutes(10)).timestamp_millis();
    // Each buyer's request, ready to send: authorization header, idempotency key, JSON body.
    // The bodies live for the whole run; leaking them lets requests borrow them without copies.
    let buyers: Vec<(String, String, &'static [u8])> = (0..orders)
        .map(|i| {
            let user = format!("ob-{id}-{i}");
            let claims = AdmissionClaims {
                user: UserId::try_from(user.clone()).expect("a valid user id"),
                sale: sale_id,
                batch: BatchNo::FIRST,
                ticket: flashsale_core::Ticket(i as u64 + 1),
                step: flashsale_core::AdmissionStep(0),
                expires_at_ms,
            };
            let authorization = format!("Bearer {}", client.buyer_jwt(&user)?);
            let body = json!({ "admission_token": tokens.sign_admission(&claims), "quantity": 1 }).to_string();
            Ok((authorization, format!("{user}-1"), &*Box::leak(body.into_bytes().into_boxed_slice())))
        })
        .collect::<anyhow::Result<_>>()?;
    tokio::time::sleep((opens_at - chrono::Utc::now()).to_std().unwrap_or_default() + Duration::from_millis(200)).await;

    let url = format!("{}/sales/{id}/orders", client.base());
    let started = Instant::now();
    let results: Vec<(StatusCode, Duration, Duration)> = stream::iter(&buyers)
        .map(|(authorization, key, body)| {
            let url = &url;
            async move {
                let sent = Instant::now();
                let status =
                    client.post_prepared(url, authorization, key, body).await.unwrap_or(StatusCode::BAD_GATEWAY);
                (status, sent.duration_since(started), sent.elapsed())
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let api_secs = started.elapsed().as_secs_f64();
    let created = results.iter().filter(|(s, _, _)| *s == StatusCode::CREATED).count();
    let mut latencies = Latencies::default();
    for (_, at, took) in results {
        latencies.record("api order", at, took);
    }
    let api_rate = created as f64 / api_secs;
    report.note("api orders/s (HTTP + reserve + durable write)", format!("{api_rate:.0}"));
    for (step, line) in latencies.lines() {
        report.note(step, line);
    }
    report.check("every api purchase created its order", created == orders, format!("{created} of {orders}"));
    let stats = client.admin_ok(Method::GET, &format!("/admin/sales/{id}"), None, StatusCode::OK).await?;
    let live = &stats.body["current_batch"]["stats"];
    report.check(
        "the ledger holds exactly the orders",
        live["reserved"] == json!(orders) && live["available"] == json!(0),
        format!("{live}"),
    );

    let Some(database_url) = naive_database_url else { return Ok(report) };
    let (naive_rate, naive_sold, naive_latencies) = naive(database_url, orders, concurrency).await?;
    report.note("naive PostgreSQL purchases/s", format!("{naive_rate:.0}"));
    for (step, line) in naive_latencies.lines() {
        report.note(step, line);
    }
    report.check("the naive purchase sold exactly its stock", naive_sold == orders, format!("{naive_sold}"));
    report.note("ratio api / naive", format!("{:.1}x", api_rate / naive_rate));
    Ok(report)
}
