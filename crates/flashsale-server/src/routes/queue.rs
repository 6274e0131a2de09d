//! Shoppers in the queue: `POST` and `GET /sales/{id}/queue`, behind a buyer JWT.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use flashsale_core::SaleId;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::buyer::Buyer;
use crate::limits::ClientIp;
use crate::problem::{ApiError, Json, Path, Problem};
use crate::queue::{self, QueueState};
use crate::state::AppState;

/// The header a client sends its last ticket back in.
pub const TICKET_HEADER: &str = "x-queue-ticket";

/// The queue routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(join_queue, queue_status))
}

/// Join the sale's current batch. Idempotent per buyer and batch: joining again (another tab, a
/// retry after a network error) returns the same place, with 200 instead of 201.
#[utoipa::path(
    post, path = "/sales/{id}/queue", tag = "shoppers", params(("id" = i64, Path, description = "Sale id")),
    security(("buyer_jwt" = [])),
    responses(
        (status = 201, description = "Joined", body = QueueState),
        (status = 200, description = "Already in the queue: the same place", body = QueueState),
        (status = 401, description = "unauthorized", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "not_found", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "not_open (with opens_at), sold_out or closed", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "rate_limited, with Retry-After", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn join_queue(
    State(state): State<AppState>,
    buyer: Buyer,
    ip: ClientIp,
    Path(id): Path<SaleId>,
) -> Result<Response, ApiError> {
    state.limits.check(&buyer.user, ip.0)?;
    let (new, joined) = queue::join(&state, &buyer.user, id).await?;
    let status = if new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(joined)).into_response())
}

/// The buyer's state: `waiting` (with position, ahead, eta and when to poll again), `admitted`
/// (with the admission token), `expired`, `paused`, `sold_out` or `closed`. Send the `ticket`
/// of the previous answer in `X-Queue-Ticket` so the poll costs no Redis round trip.
#[utoipa::path(
    get, path = "/sales/{id}/queue", tag = "shoppers",
    params(
        ("id" = i64, Path, description = "Sale id"),
        ("X-Queue-Ticket" = Option<String>, Header, description = "The `ticket` of the previous answer"),
    ),
    security(("buyer_jwt" = [])),
    responses(
        (status = 200, body = QueueState),
        (status = 401, description = "unauthorized", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "not_found: no such sale, or not in its queue", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "rate_limited, with Retry-After", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn queue_status(
    State(state): State<AppState>,
    buyer: Buyer,
    ip: ClientIp,
    Path(id): Path<SaleId>,
    headers: HeaderMap,
) -> Result<Json<QueueState>, ApiError> {
    state.limits.check(&buyer.user, ip.0)?;
    let ticket = headers.get(TICKET_HEADER).and_then(|v| v.to_str().ok());
    Ok(Json(queue::status(&state, &buyer.user, id, ticket).await?))
}
