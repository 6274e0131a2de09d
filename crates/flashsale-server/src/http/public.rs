//! Shoppers: what is on sale and when.
//!
//! The sale views are what a million countdown pages load, so they are made for a CDN in front:
//! `Cache-Control: public, max-age=1` and an `ETag` over everything but `server_time` (a
//! revalidation with `If-None-Match` answers 304 while nothing else changed). A cached copy is
//! at most a second old, `server_time` included.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use flashsale_core::{BatchNo, SaleId};
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::problem::{ApiError, Path};
use crate::problem::Problem;
use crate::service;
use crate::service::draws;
use crate::service::sales::{self, PublicSale, PublicSaleList};
use crate::state::AppState;
use flashsale_queue::draw::PublishedDraw;

/// The public routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_sales))
        .routes(routes!(get_sale))
        .routes(routes!(batch_draw))
        .routes(routes!(draw_entrants))
}

/// Upcoming and open sales (scheduled, pre-queue, open, paused, sold out), with the server's
/// clock.
#[utoipa::path(
    get, path = "/sales", tag = "shoppers",
    responses(
        (status = 200, body = PublicSaleList, description = "Cache-Control: public, max-age=1, with an ETag"),
        (status = 304, description = "Not modified: the If-None-Match ETag is current"),
        (status = 503, description = "unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn list_sales(State(state): State<AppState>, request: HeaderMap) -> Result<Response, ApiError> {
    let sales = sales::public_sales(&state, None).await?;
    Ok(cacheable(&request, &PublicSaleList { sales, server_time: state.clock.now() }))
}

/// How long a shared cache (a CDN) may serve a public view without asking again.
const PUBLIC_CACHE_CONTROL: &str = "public, max-age=1";

/// `view` as a response a CDN may cache for a second, with a strong `ETag` over the view without
/// its `server_time` (which changes every millisecond and says nothing about the sale); 304 when
/// the request's `If-None-Match` names it.
fn cacheable<T: Serialize>(request: &HeaderMap, view: &T) -> Response {
    // The body keeps the view's field order; the identity (a map: sorted keys) only feeds the hash.
    let body = serde_json::to_vec(view).expect("a view serialises");
    let mut identity = serde_json::to_value(view).expect("a view serialises");
    without_server_time(&mut identity);
    let digest = Sha256::digest(identity.to_string().as_bytes());
    let etag = format!("\"{}\"", flashsale_core::hex(&digest[..12]));
    let mut headers = HeaderMap::new();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(PUBLIC_CACHE_CONTROL));
    headers.insert(header::ETAG, HeaderValue::from_str(&etag).expect("hex is a valid header"));
    let matches = request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || tag.trim_start_matches("W/") == etag);
    if matches {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    (headers, body).into_response()
}

/// `value` without a `server_time` at any depth (the list repeats it in every sale).
fn without_server_time(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(fields) => {
            fields.remove("server_time");
            fields.values_mut().for_each(without_server_time);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(without_server_time),
        _ => {}
    }
}

/// One sale: price, batch status, opening, units left and the server's clock.
#[utoipa::path(
    get, path = "/sales/{id}", tag = "shoppers", params(("id" = i64, Path, description = "Sale id")),
    responses(
        (status = 200, body = PublicSale, description = "Cache-Control: public, max-age=1, with an ETag"),
        (status = 304, description = "Not modified: the If-None-Match ETag is current"),
        (status = 404, description = "not_found", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn get_sale(
    State(state): State<AppState>,
    Path(id): Path<SaleId>,
    request: HeaderMap,
) -> Result<Response, ApiError> {
    let sale = sales::public_sales(&state, Some(id)).await?.pop();
    let sale = sale.ok_or_else(|| ApiError::from(service::Error::sale_not_found()))?;
    Ok(cacheable(&request, &sale))
}

/// What is public about a batch's pre-queue draw: from the batch's creation, the commitment to
/// its secret seed (record it before the pre-queue opens); from the opening, the commitment to the
/// sealed cohort and its size, and the seed itself (the cohort can no longer change, so knowing it
/// steers nothing). With the entrants (`/draw/entrants`) anyone recomputes the order, and a
/// buyer with their `draw_receipt` finds their place and its proof (`flashsale-verify`).
#[utoipa::path(
    get, path = "/sales/{id}/batches/{batch_no}/draw", tag = "shoppers",
    params(("id" = i64, Path, description = "Sale id"), ("batch_no" = i64, Path, description = "Batch number")),
    responses(
        (status = 200, body = PublishedDraw, description = "Cache-Control: public, max-age=1, with an ETag"),
        (status = 304, description = "Not modified: the If-None-Match ETag is current"),
        (status = 404, description = "not_found", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn batch_draw(
    State(state): State<AppState>,
    Path((id, batch_no)): Path<(SaleId, BatchNo)>,
    request: HeaderMap,
) -> Result<Response, ApiError> {
    Ok(cacheable(&request, &draws::published(&state, id, batch_no).await?))
}

/// The sealed pre-queue cohort of a batch, in drawn order: one leaf per line (64 hex digits),
/// line N the buyer drawn to place N. A leaf names nobody; a buyer finds theirs from their id and
/// `draw_receipt`. Recorded once at the opening and never changed, so it may be cached for good.
#[utoipa::path(
    get, path = "/sales/{id}/batches/{batch_no}/draw/entrants", tag = "shoppers",
    params(("id" = i64, Path, description = "Sale id"), ("batch_no" = i64, Path, description = "Batch number")),
    responses(
        (status = 200, body = String, content_type = "text/plain",
            description = "One 64-digit hex leaf per line, in drawn order; Cache-Control: public, immutable"),
        (status = 404, description = "not_found", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "not_drawn: the batch has not opened yet", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn draw_entrants(
    State(state): State<AppState>,
    Path((id, batch_no)): Path<(SaleId, BatchNo)>,
) -> Result<Response, ApiError> {
    let leaves = draws::entrants(&state, id, batch_no).await?;
    let mut body = String::with_capacity(leaves.len() / 32 * 65);
    for leaf in leaves.chunks_exact(32) {
        body.push_str(&flashsale_core::hex(leaf));
        body.push('\n');
    }
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8")),
        (header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=31536000, immutable")),
    ];
    Ok((headers, body).into_response())
}
