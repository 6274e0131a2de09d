//! Health, readiness, metrics and the OpenAPI document.

use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::problem::{ApiError, Json};
use crate::problem::Problem;
use crate::state::AppState;

/// The operational routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
        .routes(routes!(openapi))
}

/// `GET /healthz`, `GET /readyz`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Health {
    #[schema(example = "ok")]
    status: &'static str,
}

/// The process is alive. Does no I/O, so it answers even when Redis or PostgreSQL do not.
#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Redis and PostgreSQL both answer within a second, and this instance's admission ticker has
/// completed a pass in the last five seconds: the instance can serve traffic.
#[utoipa::path(
    get, path = "/readyz", tag = "ops",
    responses(
        (status = 200, body = Health),
        (status = 503, description = "unavailable: the detail names what did not answer", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn readyz(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    let limit = Duration::from_secs(1);
    let postgres = tokio::time::timeout(limit, sqlx::query("SELECT 1").execute(&state.db));
    let redis = tokio::time::timeout(limit, async {
        let mut conn = state.redis.conn().await.map_err(|e| e.to_string())?;
        redis::cmd("PING").query_async::<String>(&mut conn).await.map_err(|e| e.to_string())
    });
    let (postgres, redis) = tokio::join!(postgres, redis);
    let mut down = Vec::new();
    if !matches!(postgres, Ok(Ok(_))) {
        down.push("PostgreSQL");
    }
    if !matches!(redis, Ok(Ok(_))) {
        down.push("Redis");
    }
    let mut reasons: Vec<String> = Vec::new();
    if !down.is_empty() {
        reasons.push(format!("{} not answering", down.join(" and ")));
    }
    if let Some(outage) = state.database.down_for(state.clock.now_ms()) {
        reasons.push(format!("PostgreSQL has not answered the probe for {} s; admission is held", outage.as_secs()));
    }
    if let Some(stale) = state.ticker.stale_for(state.clock.now_ms()) {
        reasons.push(format!("the admission ticker has not completed a pass for {} s", stale.as_secs()));
    }
    if reasons.is_empty() {
        Ok(Json(Health { status: "ok" }))
    } else {
        Err(crate::service::Error::Unavailable(reasons.join("; ")).into())
    }
}

/// Prometheus metrics in the text exposition format.
#[utoipa::path(get, path = "/metrics", tag = "ops", responses((status = 200, content_type = "text/plain", body = String)))]
async fn metrics(State(state): State<AppState>) -> Response {
    let mut response = state.metrics.render().into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    response
}

/// This API's OpenAPI 3 description.
#[utoipa::path(get, path = "/openapi.json", tag = "ops", responses((status = 200, content_type = "application/json", body = Object)))]
async fn openapi(State(state): State<AppState>) -> Response {
    let body = state.openapi.get().map(|doc| super::served_document(doc, state.clock.now())).unwrap_or_default();
    ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response()
}
