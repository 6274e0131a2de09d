//! The router: every route, the OpenAPI document generated from them, and the middleware.

use axum::Router;
use axum::extract::DefaultBodyLimit;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;

use crate::problem::{ApiError, CODES};
use crate::routes;
use crate::state::AppState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "flashsale",
        description = "Limited-stock flash sales: fair queueing, atomic reservation, exactly-once orders. \
                       Every error is an RFC 9457 application/problem+json document with a stable `code`.",
    ),
    modifiers(&Security, &ErrorCodes),
    tags(
        (name = "shoppers", description = "What is on sale, for buyers"),
        (name = "admin", description = "Sale batches, for operations (Authorization: Bearer $FLASHSALE_ADMIN_TOKEN)"),
        (name = "payments", description = "The payment provider's signed callback (X-Signature)"),
        (name = "ops", description = "Health, readiness, metrics"),
    )
)]
struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("FLASHSALE_ADMIN_TOKEN (dev mode: dev-admin-token)"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "buyer_jwt",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some("HS256 JWT signed with FLASHSALE_JWT_SECRET; sub = user id, exp required"))
                    .build(),
            ),
        );
    }
}

/// Appends the table of problem codes to the description, so clients find every `code` in one place.
struct ErrorCodes;

impl Modify for ErrorCodes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let mut text = openapi.info.description.clone().unwrap_or_default();
        text.push_str("\n\n| code | status | meaning |\n|---|---|---|\n");
        for (code, status, meaning) in CODES {
            text.push_str(&format!("| `{code}` | {status} | {meaning} |\n"));
        }
        openapi.info.description = Some(text);
    }
}

/// The whole API over `state`, without a socket: tests drive it with `tower::ServiceExt::oneshot`.
pub fn app(state: AppState, max_body_bytes: usize) -> Router {
    let (router, openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(routes::public::router())
        .merge(routes::queue::router())
        .merge(routes::orders::router())
        .merge(routes::admin::router())
        .merge(routes::ops::router())
        .split_for_parts();
    let document = openapi.to_json().expect("the OpenAPI document serialises");
    let _ = state.openapi.set(document);
    router
        .route_layer(axum::middleware::from_fn(crate::metrics::track))
        .fallback(|| async { ApiError::NotFound("no such endpoint".to_owned()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}
