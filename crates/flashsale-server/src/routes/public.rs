//! Shoppers: what is on sale and when.

use axum::extract::State;
use chrono::Utc;
use flashsale_core::SaleId;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::problem::{ApiError, Json, Path, Problem};
use crate::sales::{self, PublicSale, PublicSaleList};
use crate::state::AppState;

/// The public routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_sales)).routes(routes!(get_sale))
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
    Ok(Json(PublicSaleList { sales, server_time: Utc::now() }))
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
    sales::public_sales(&state, Some(id)).await?.pop().map(Json).ok_or_else(ApiError::sale_not_found)
}
