//! Operations editing one sale at once.
//!
//! Plays `operators` admins who all read version 1 of a fresh sale and PATCH it at the same
//! moment with `If-Match: "1"`: optimistic concurrency must let exactly one through (the others
//! get 412). Then they all PATCH without `If-Match`: every change must apply, in turn, so the
//! version counts them all; every change must appear once in the audit trail; and the batch's
//! ledger must still balance.

use std::time::Instant;

use anyhow::Context;
use futures::future::join_all;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::checks::Report;
use crate::client::Client;

/// Runs the scenario and returns its checks.
pub async fn run(client: &Client, operators: usize) -> anyhow::Result<Report> {
    let mut report = Report::new("admin-race");
    let started = Instant::now();
    client.send(Method::GET, "/readyz", None, false, None).await.context("the server is not reachable")?;

    let opens_at = (chrono::Utc::now() + chrono::TimeDelta::hours(1)).to_rfc3339();
    let sale = json!({
        "name": "admin-race", "sku": "LOADTEST-ADMIN-RACE", "price_cents": 100, "currency": "CNY",
        "stock": 1000, "per_user_limit": 2, "opens_at": opens_at,
    });
    let created = client.admin_ok(Method::POST, "/admin/sales", Some(&sale), StatusCode::CREATED).await?;
    let id = created.body["id"].as_i64().context("created sale has an id")?;
    let etag = created.etag.clone().context("created sale has an ETag")?;
    let path = format!("/admin/sales/{id}");

    // Round 1: everyone holds the same version.
    let patches: Vec<Value> = (0..operators).map(|i| json!({ "admission_rate": 100 + i })).collect();
    let replies = join_all(patches.iter().map(|p| client.send(Method::PATCH, &path, Some(p), true, Some(&etag)))).await;
    let statuses: Vec<StatusCode> = replies.into_iter().map(|r| r.map(|r| r.status)).collect::<Result<_, _>>()?;
    let won = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    let refused = statuses.iter().filter(|s| **s == StatusCode::PRECONDITION_FAILED).count();
    report.check(
        "one_winner_per_version",
        won == 1 && refused == operators - 1,
        format!("{won} applied, {refused} refused with 412 of {operators}"),
    );

    // Round 2: no version: all apply, serialised.
    let replies = join_all(patches.iter().map(|p| client.send(Method::PATCH, &path, Some(p), true, None))).await;
    let applied = replies.into_iter().filter(|r| r.as_ref().is_ok_and(|r| r.status == StatusCode::OK)).count();
    report.check("unversioned_edits_all_apply", applied == operators, format!("{applied} of {operators} applied"));

    let after = client.admin_ok(Method::GET, &path, None, StatusCode::OK).await?;
    let version = after.body["version"].as_u64().unwrap_or(0);
    let expected_version = 2 + operators as u64;
    report.check(
        "version_counts_every_edit",
        version == expected_version,
        format!("version {version}, expected {expected_version}"),
    );

    let trail = client.admin_ok(Method::GET, &format!("{path}/audit"), None, StatusCode::OK).await?;
    let entries = trail.body["entries"].as_array().map_or(0, Vec::len);
    let expected_entries = 2 + operators;
    report.check(
        "every_edit_audited_once",
        entries == expected_entries,
        format!("{entries} entries, expected {expected_entries}"),
    );

    let stats = &after.body["current_batch"]["stats"];
    let [stock, available, allotted, reserved, sold] =
        ["stock", "available", "allotted", "reserved", "sold"].map(|field| stats[field].as_u64().unwrap_or(u64::MAX));
    report.check(
        "ledger_balances",
        [allotted, reserved, sold].iter().try_fold(available, |sum, n| sum.checked_add(*n)) == Some(stock),
        format!("available {available} + allotted {allotted} + reserved {reserved} + sold {sold} vs stock {stock}"),
    );

    client.admin_ok(Method::POST, &format!("{path}/close"), None, StatusCode::OK).await?;
    report.note("wall_time", format!("{:.2}s", started.elapsed().as_secs_f64()));
    Ok(report)
}
