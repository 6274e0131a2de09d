//! Shoppers' orders (`POST /sales/{id}/orders`, `GET /orders`, `GET /orders/{id}`,
//! `POST /orders/{id}/cancel`, behind a buyer JWT) and the payment provider's callback
//! (`POST /payments/callback`, signed with the payment secret).

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use flashsale_core::{Cents, SaleId};
use flashsale_order::payment::{SIGNATURE_HEADER, signature_is_valid};
use flashsale_order::{IdempotencyKey, Order, OrderId, PaymentNotice, PaymentReceipt, StoredResponse};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{Buyer, ClientIp};
use super::page::{PageBounds, PageSize};
use super::problem::{ApiError, Json, Path, Query, RawBody};
use crate::problem::{PROBLEM_JSON, Problem, ProblemCode};
use crate::service;
use crate::service::orders::{self, OrderAnswer, PaymentAnswer};
use crate::state::AppState;

/// The order routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_order))
        .routes(routes!(list_orders))
        .routes(routes!(get_order))
        .routes(routes!(cancel_order))
        .routes(routes!(payment_callback))
}

/// `POST /sales/{id}/orders`'s body.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderRequest {
    /// The `admission_token` of the buyer's `admitted` queue answer.
    pub admission_token: String,
    /// Units to buy: 1 to the sale's per-user limit.
    #[schema(example = 1, minimum = 1, maximum = 1_000)]
    #[serde(deserialize_with = "flashsale_core::whole::i64")]
    pub quantity: i64,
}

/// The header marking a replayed answer.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";

/// A stored answer as an HTTP response: the same status and body bytes as the first time.
fn stored_response(stored: StoredResponse, replayed: bool) -> Response {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let content_type = if status.is_success() { "application/json" } else { PROBLEM_JSON };
    let mut response =
        (status, [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))], stored.body).into_response();
    if replayed {
        response.headers_mut().insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    }
    response
}

/// The `Idempotency-Key` header, parsed: missing or not 1–255 visible ASCII characters is
/// `idempotency_key_invalid`.
///
/// `create_order` takes it as `Result<Key, ApiError>` and looks at the result after the body
/// and the rate limit: a request with a bad body and no key is told about its body, and a buyer
/// over the rate limit is told that first, as before the key had an extractor of its own.
#[derive(Debug)]
struct Key(IdempotencyKey);

impl<S: Send + Sync> FromRequestParts<S> for Key {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Key, ApiError> {
        let header = parts.headers.get("idempotency-key").and_then(|v| v.to_str().ok());
        header.and_then(|k| IdempotencyKey::try_from(k).ok()).map(Key).ok_or(ApiError::InvalidIdempotencyKey)
    }
}

/// Reserve units with an admission token and create the order, which must be paid before its
/// `expires_at`. Exactly once per `Idempotency-Key` (scoped to the buyer): a retry with the same
/// key and body gets the first answer again, byte for byte, marked `Idempotent-Replayed: true`.
#[utoipa::path(
    post, path = "/sales/{id}/orders", tag = "shoppers",
    params(
        ("id" = i64, Path, description = "Sale id"),
        ("Idempotency-Key" = String, Header, description = "1-255 visible ASCII characters, new for each purchase attempt"),
    ),
    request_body = OrderRequest,
    security(("buyer_jwt" = [])),
    responses(
        (status = 201, description = "Created: units held until expires_at", body = Order),
        (status = 400, description = "idempotency_key_invalid, malformed_json", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "unauthorized", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "token_invalid", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "not_found", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "sold_out, limit_reached, token_used, in_progress, not_open, paused, closed", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "payload_too_large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "unsupported_media_type: send application/json", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "validation_failed (a quantity above the sale's per-user limit included), idempotency_key_reused", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "rate_limited, with Retry-After", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "rebuilding (with Retry-After) or unavailable: safe to retry with the same key", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn create_order(
    State(state): State<AppState>,
    buyer: Buyer,
    ip: ClientIp,
    Path(id): Path<SaleId>,
    key: Result<Key, ApiError>,
    Json(request): Json<OrderRequest>,
) -> Result<Response, ApiError> {
    state.limits.check_order(&buyer.user, ip.0)?;
    let Key(key) = key?;
    let OrderAnswer { stored, replayed } =
        orders::create(&state, &buyer.user, id, key, &request.admission_token, request.quantity).await?;
    Ok(stored_response(stored, replayed))
}

/// `GET /orders`'s query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    /// Only orders older than this id (the previous page's `next_before`).
    before: Option<i64>,
    /// Page size, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
}

/// A page of the buyer's orders.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct OrderPage {
    /// Newest first.
    orders: Vec<Order>,
    /// Pass as `before` for the next page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_before: Option<OrderId>,
}

/// The buyer's own orders, newest first.
#[utoipa::path(
    get, path = "/orders", tag = "shoppers", params(ListQuery),
    security(("buyer_jwt" = [])),
    responses(
        (status = 200, body = OrderPage),
        (status = 400, description = "bad_request", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "unauthorized", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn list_orders(
    State(state): State<AppState>,
    buyer: Buyer,
    Query(query): Query<ListQuery>,
) -> Result<Json<OrderPage>, ApiError> {
    let size = PageSize::read(query.limit, PageBounds { default: 20, max: 100 })?;
    let orders = orders::list(&state, &buyer.user, query.before.map(OrderId::new), size.get()).await?;
    let next_before = if size.is_filled_by(orders.len()) { orders.last().map(|o| o.id) } else { None };
    Ok(Json(OrderPage { orders, next_before }))
}

/// One of the buyer's orders. Another buyer's order is 404, exactly like one that does not
/// exist: ids reveal nothing.
#[utoipa::path(
    get, path = "/orders/{id}", tag = "shoppers", params(("id" = i64, Path, description = "Order id")),
    security(("buyer_jwt" = [])),
    responses(
        (status = 200, body = Order),
        (status = 401, description = "unauthorized", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "not_found", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn get_order(
    State(state): State<AppState>,
    buyer: Buyer,
    Path(id): Path<OrderId>,
) -> Result<Json<Order>, ApiError> {
    Ok(Json(orders::get(&state, &buyer.user, id).await?))
}

/// Cancel a pending order; its units go back to other buyers at once. Cancelling again answers
/// the cancelled order; a paid, expired or failed order cannot be cancelled (409).
#[utoipa::path(
    post, path = "/orders/{id}/cancel", tag = "shoppers", params(("id" = i64, Path, description = "Order id")),
    security(("buyer_jwt" = [])),
    responses(
        (status = 200, body = Order),
        (status = 401, description = "unauthorized", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "not_found", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "invalid_transition", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn cancel_order(
    State(state): State<AppState>,
    buyer: Buyer,
    Path(id): Path<OrderId>,
) -> Result<Json<Order>, ApiError> {
    Ok(Json(orders::cancel(&state, &buyer.user, id).await?))
}

/// The payment provider's notice. Authenticated by `X-Signature: sha256=<hex HMAC-SHA256 of the
/// raw body with FLASHSALE_PAYMENT_SECRET>`; idempotent per `payment_ref` (a replay gets the first
/// answer). In time: the order is paid. Failed: its units go back. Late (after the deadline),
/// or for an order cancelled or failed: the order is not revived, it becomes `refund_due`.
#[utoipa::path(
    post, path = "/payments/callback", tag = "payments",
    params(("X-Signature" = String, Header, description = "sha256=<hex HMAC-SHA256 of the raw body>")),
    request_body = PaymentNotice,
    responses(
        (status = 200, description = "Applied (outcome paid, payment_failed, refund_due or ignored)", body = PaymentReceipt),
        (status = 400, description = "malformed_json", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "unauthorized: missing or wrong signature", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "not_found: no such order (recorded)", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "payload_too_large", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "amount_mismatch (recorded), payment_ref_reused, validation_failed", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn payment_callback(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let signature = headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok()).unwrap_or_default();
    deliver_payment(&state, signature, &body).await
}

/// A payment notice as the provider delivers it: `body`, signed with `signature` (the
/// `X-Signature` header). Shared by the callback and the dev mode's "pay now (test)", which signs
/// a notice itself so that a test payment takes the same path as a real one.
pub(super) async fn deliver_payment(state: &AppState, signature: &str, body: &[u8]) -> Result<Response, ApiError> {
    if !signature_is_valid(state.secrets.payment_secret.expose().as_bytes(), body, signature) {
        metrics::counter!("payments_total", "outcome" => "bad_signature").increment(1);
        return Err(ApiError::Unauthorized);
    }
    let notice: PaymentNotice = serde_json::from_slice(body).map_err(|e| {
        if e.is_data() { ApiError::InvalidBody(e.to_string()) } else { ApiError::MalformedJson(e.to_string()) }
    })?;
    if notice.amount_cents < Cents(0) {
        return Err(ApiError::InvalidBody("amount_cents must not be negative".to_owned()));
    }
    let PaymentAnswer { receipt, status, replayed } = orders::apply_payment(state, notice).await?;
    let mut response = match status {
        404 => {
            ApiError::from(service::Error::NotFound(format!("no order {}; the notice is recorded", receipt.order_id)))
                .into_response()
        }
        422 => ApiError::from(service::Error::refused(
            ProblemCode::AmountMismatch,
            format!("the amount is not order {}'s; the notice is recorded, nothing changed", receipt.order_id),
        ))
        .into_response(),
        _ => Json(receipt).into_response(),
    };
    if replayed {
        response.headers_mut().insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    }
    Ok(response)
}
