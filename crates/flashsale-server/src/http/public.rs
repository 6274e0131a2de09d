//! Shoppers: what is on sale and when.

use axum::extract::State;

use flashsale_core::{BatchNo, SaleId};
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::problem::{ApiError, Json, Path};
use crate::problem::Problem;
use crate::service;
use crate::service::sales::{self, PublicSale, PublicSaleList};
use crate::state::AppState;

/// The public routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_sales)).routes(routes!(get_sale)).routes(routes!(batch_draw))
}

/// Upcoming and open sales (scheduled, pre-queue, open, paused, sold out), with the server's
/// clock.
#[utoipa::path(
    get, path = "/sales", tag = "shoppers",
    responses(
        (status = 200, body = PublicSaleList),
        (status = 503, description = "unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn list_sales(State(state): State<AppState>) -> Result<Json<PublicSaleList>, ApiError> {
    let sales = sales::public_sales(&state, None).await?;
    Ok(Json(PublicSaleList { sales, server_time: state.clock.now() }))
}

/// One sale: price, batch status, opening, units left and the server's clock.
#[utoipa::path(
    get, path = "/sales/{id}", tag = "shoppers", params(("id" = i64, Path, description = "Sale id")),
    responses(
        (status = 200, body = PublicSale),
        (status = 404, description = "not_found", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn get_sale(State(state): State<AppState>, Path(id): Path<SaleId>) -> Result<Json<PublicSale>, ApiError> {
    sales::public_sales(&state, Some(id))
        .await?
        .pop()
        .map(Json)
        .ok_or_else(|| ApiError::from(service::Error::sale_not_found()))
}

/// `GET /sales/{id}/batches/{batch_no}/draw`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Draw {
    sale_id: SaleId,
    batch_no: BatchNo,
    /// The batch's secret seed, hex, published once the batch is over.
    prequeue_seed: String,
    /// How the pre-queue's order follows from the seed.
    #[schema(example = "ascending first 52 bits (big-endian) of HMAC-SHA256(key = seed, message = user id)")]
    rank: &'static str,
}

/// The seed of a finished batch's pre-queue draw, so anyone can recompute its order: buyers who
/// joined during the pre-queue were placed by ascending `rank`. Refused (409 `not_closed`) while
/// the batch runs, when knowing the seed would let buyers predict the draw.
#[utoipa::path(
    get, path = "/sales/{id}/batches/{batch_no}/draw", tag = "shoppers",
    params(("id" = i64, Path, description = "Sale id"), ("batch_no" = i64, Path, description = "Batch number")),
    responses(
        (status = 200, body = Draw),
        (status = 404, description = "not_found", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "not_closed: the batch is still running", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn batch_draw(
    State(state): State<AppState>,
    Path((id, batch_no)): Path<(SaleId, BatchNo)>,
) -> Result<Json<Draw>, ApiError> {
    let seed = sales::published_seed(&state, id, batch_no).await?;
    let prequeue_seed = seed.as_bytes().iter().map(|b| format!("{b:02x}")).collect();
    Ok(Json(Draw {
        sale_id: id,
        batch_no,
        prequeue_seed,
        rank: "ascending first 52 bits (big-endian) of HMAC-SHA256(key = seed, message = user id)",
    }))
}
