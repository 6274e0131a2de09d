//! Operations: sale batches (`/admin/sales…`), behind the admin bearer token.

use std::convert::Infallible;

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use flashsale_core::SaleId;
use flashsale_inventory::StatusChange;
use flashsale_sales::store::AuditEntry;
use flashsale_sales::{NewSale, SalePatch};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Admin;
use super::page::{PageBounds, PageSize};
use super::problem::{ApiError, Json, Path, Query};
use crate::problem::Problem;
use crate::service::codes::{self, GeneratedCodes};
use crate::service::sales::{self, AdminSale, IfMatch, etag};
use crate::state::AppState;

/// The admin routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_sale, admin_list_sales))
        .routes(routes!(admin_get_sale, patch_sale))
        .routes(routes!(pause_sale))
        .routes(routes!(resume_sale))
        .routes(routes!(close_sale))
        .routes(routes!(sale_audit))
        .routes(routes!(generate_codes))
}

/// `POST /admin/sales/{id}/priority-codes`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CodeRequest {
    /// How many codes (1–10,000).
    #[schema(minimum = 1, maximum = 10_000)]
    #[serde(deserialize_with = "flashsale_core::whole::i64")]
    count: i64,
}

/// Generates single-use priority codes for the sale: each lets one buyer be admitted without
/// queueing (`POST /sales/{id}/queue/priority`), within the per-user limit, through the same
/// reservation. The codes are in this answer only (the server keeps their hashes): JSON, or with
/// `Accept: text/csv` a CSV with one `code` column to export.
#[utoipa::path(
    post, path = "/admin/sales/{id}/priority-codes", tag = "admin", params(("id" = i64, Path, description = "Sale id")),
    security(("admin_token" = [])),
    request_body = CodeRequest,
    responses(
        (status = 201, body = GeneratedCodes, description = "JSON; with Accept: text/csv, a CSV of the codes"),
        (status = 400, description = "malformed_json", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "unauthorized", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "not_found", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "sale_ended", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "payload_too_large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "unsupported_media_type", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "validation_failed", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn generate_codes(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<SaleId>,
    request: HeaderMap,
    Json(body): Json<CodeRequest>,
) -> Result<Response, ApiError> {
    let generated = codes::generate(&state, &admin.actor, id, body.count).await?;
    if !super::accepts(&request, "text/csv") {
        return Ok((StatusCode::CREATED, Json(generated)).into_response());
    }
    let mut text = String::from("code\r\n");
    for code in &generated.codes {
        text.push_str(code);
        text.push_str("\r\n");
    }
    let disposition = format!("attachment; filename=\"sale-{id}-priority-codes.csv\"");
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static("text/csv; charset=utf-8")),
        (header::CONTENT_DISPOSITION, HeaderValue::from_str(&disposition).expect("an ASCII file name")),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
    ];
    Ok((StatusCode::CREATED, headers, text).into_response())
}

impl FromRequestParts<AppState> for IfMatch {
    type Rejection = Infallible;
    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<IfMatch, Infallible> {
        // A header that is not valid text cannot match any ETag; keep it so the check fails.
        Ok(IfMatch(parts.headers.get(header::IF_MATCH).map(|v| v.to_str().unwrap_or("\u{0}").to_owned())))
    }
}

/// A sale with its `ETag`.
fn with_etag(status: StatusCode, sale: AdminSale) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(header::ETAG, HeaderValue::from_str(&etag(sale.version)).expect("digits are a valid header"));
    if status == StatusCode::CREATED {
        let location = format!("/admin/sales/{}", sale.id);
        headers.insert(header::LOCATION, HeaderValue::from_str(&location).expect("a path is a valid header"));
    }
    (status, headers, Json(sale)).into_response()
}

/// Create a sale (one-off or weekly) and its first batch.
#[utoipa::path(
    post, path = "/admin/sales", tag = "admin", request_body = NewSale, security(("admin_token" = [])),
    responses(
        (status = 201, description = "Created; `Location` names it, `ETag` carries its version", body = AdminSale),
        (status = 400, description = "malformed_json", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "unauthorized", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "payload_too_large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "unsupported_media_type", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "validation_failed, with `errors` per field", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn create_sale(
    State(state): State<AppState>,
    admin: Admin,
    Json(body): Json<NewSale>,
) -> Result<Response, ApiError> {
    Ok(with_etag(StatusCode::CREATED, sales::create(&state, &admin.actor, body).await?))
}

/// Paging of `GET /admin/sales`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Also list sales closed by operations (default false).
    include_ended: Option<bool>,
    /// At most this many sales, newest first (1–200, default 50).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<i64>,
    /// Skip this many (default 0).
    #[param(minimum = 0)]
    offset: Option<i64>,
}

/// `GET /admin/sales`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct AdminSaleList {
    sales: Vec<AdminSale>,
}

/// List sales, newest first, with their current batch and live numbers.
#[utoipa::path(
    get, path = "/admin/sales", tag = "admin", params(ListQuery), security(("admin_token" = [])),
    responses(
        (status = 200, body = AdminSaleList),
        (status = 400, description = "bad_request", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "unauthorized", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn admin_list_sales(
    State(state): State<AppState>,
    _admin: Admin,
    Query(query): Query<ListQuery>,
) -> Result<Json<AdminSaleList>, ApiError> {
    let size = PageSize::read(query.limit, PageBounds { default: 50, max: 200 })?;
    let offset = query.offset.unwrap_or(0);
    if offset < 0 {
        return Err(ApiError::BadRequest("offset must not be negative".to_owned()));
    }
    let found = sales::admin_list(&state, query.include_ended.unwrap_or(false), size.get(), offset).await?;
    Ok(Json(AdminSaleList { sales: found }))
}

/// A sale: configuration, version (also as `ETag`), current batch and live numbers.
#[utoipa::path(
    get, path = "/admin/sales/{id}", tag = "admin", params(("id" = i64, Path, description = "Sale id")),
    security(("admin_token" = [])),
    responses(
        (status = 200, body = AdminSale),
        (status = 401, description = "unauthorized", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "not_found", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn admin_get_sale(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<SaleId>,
) -> Result<Response, ApiError> {
    let mut sale = sales::admin_sale(&state, id).await?;
    sale.priority_codes = Some(codes::stats(&state, id, None).await?);
    Ok(with_etag(StatusCode::OK, sale))
}

/// Change stock, limit, rate or windows. Send `If-Match: "<version>"` to refuse the change if
/// someone else changed the sale since you read it.
#[utoipa::path(
    patch, path = "/admin/sales/{id}", tag = "admin", request_body = SalePatch,
    params(
        ("id" = i64, Path, description = "Sale id"),
        ("If-Match" = Option<String>, Header, description = "The ETag last read, e.g. \"3\""),
    ),
    security(("admin_token" = [])),
    responses(
        (status = 200, body = AdminSale),
        (status = 400, description = "malformed_json", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "unauthorized", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "not_found", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "stock_below_committed, sale_ended or batch_finished", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "precondition_failed: the sale changed since that version", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "payload_too_large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "unsupported_media_type", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "validation_failed", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn patch_sale(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<SaleId>,
    if_match: IfMatch,
    Json(patch): Json<SalePatch>,
) -> Result<Response, ApiError> {
    Ok(with_etag(StatusCode::OK, sales::update(&state, &admin.actor, id, if_match, patch).await?))
}

/// What pause, resume and close answer.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code, clippy::large_enum_variant)] // describes responses for the OpenAPI document; never constructed
enum StatusChangeResponses {
    /// The sale after the change (`ETag`: its new version).
    #[response(status = 200)]
    Changed(#[to_schema] AdminSale),
    /// unauthorized
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized(#[to_schema] Problem),
    /// not_found
    #[response(status = 404, content_type = "application/problem+json")]
    NotFound(#[to_schema] Problem),
    /// sale_ended (pause, resume) or batch_finished
    #[response(status = 409, content_type = "application/problem+json")]
    Conflict(#[to_schema] Problem),
    /// precondition_failed: If-Match names another version
    #[response(status = 412, content_type = "application/problem+json")]
    PreconditionFailed(#[to_schema] Problem),
    /// unavailable
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable(#[to_schema] Problem),
}

async fn status_change(
    state: AppState,
    admin: Admin,
    id: SaleId,
    if_match: IfMatch,
    change: StatusChange,
) -> Result<Response, ApiError> {
    Ok(with_etag(StatusCode::OK, sales::change_status(&state, &admin.actor, id, if_match, change).await?))
}

/// Pause admission to the current batch; buyers keep their places.
#[utoipa::path(
    post, path = "/admin/sales/{id}/pause", tag = "admin",
    params(("id" = i64, Path, description = "Sale id"), ("If-Match" = Option<String>, Header, description = "The ETag last read")),
    security(("admin_token" = [])),
    responses(StatusChangeResponses)
)]
async fn pause_sale(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<SaleId>,
    if_match: IfMatch,
) -> Result<Response, ApiError> {
    status_change(state, admin, id, if_match, StatusChange::Pause).await
}

/// Resume admission to the current batch.
#[utoipa::path(
    post, path = "/admin/sales/{id}/resume", tag = "admin",
    params(("id" = i64, Path, description = "Sale id"), ("If-Match" = Option<String>, Header, description = "The ETag last read")),
    security(("admin_token" = [])),
    responses(StatusChangeResponses)
)]
async fn resume_sale(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<SaleId>,
    if_match: IfMatch,
) -> Result<Response, ApiError> {
    status_change(state, admin, id, if_match, StatusChange::Resume).await
}

/// Close the sale: the current batch closes now and no later batch opens. Idempotent.
#[utoipa::path(
    post, path = "/admin/sales/{id}/close", tag = "admin",
    params(("id" = i64, Path, description = "Sale id"), ("If-Match" = Option<String>, Header, description = "The ETag last read")),
    security(("admin_token" = [])),
    responses(StatusChangeResponses)
)]
async fn close_sale(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<SaleId>,
    if_match: IfMatch,
) -> Result<Response, ApiError> {
    status_change(state, admin, id, if_match, StatusChange::Close).await
}

/// `GET /admin/sales/{id}/audit`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct AuditTrail {
    entries: Vec<AuditEntry>,
}

/// Every admin action on the sale, oldest first: who, what, when.
#[utoipa::path(
    get, path = "/admin/sales/{id}/audit", tag = "admin", params(("id" = i64, Path, description = "Sale id")),
    security(("admin_token" = [])),
    responses(
        (status = 200, body = AuditTrail),
        (status = 401, description = "unauthorized", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "not_found", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn sale_audit(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<SaleId>,
) -> Result<Json<AuditTrail>, ApiError> {
    Ok(Json(AuditTrail { entries: sales::audit_trail(&state, id).await? }))
}
