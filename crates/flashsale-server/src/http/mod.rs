//! The HTTP layer: the router, the OpenAPI document generated from it, the middleware, and the
//! handlers, one module per audience ([`public`], [`queue`] and [`orders`] for shoppers,
//! [`admin`] for operations, [`ops`] for health and metrics, [`report`] for both: a batch's
//! sale report); besides the API, the pages
//! ([`web`]), dev mode's stand-ins for the shop's login and the payment provider ([`dev`]), and
//! cross-origin access for listed sites ([`cors`]). Each exposes
//! `fn router() -> OpenApiRouter<AppState>`, registering handlers with `routes!` so the OpenAPI
//! document and the router cannot disagree.
//!
//! A handler reads the request (extractors in [`auth`] and [`problem`], list paging in [`page`]), owns its request and
//! response shapes, calls `crate::service` for the work, and turns the answer into a response;
//! errors go out through [`ApiError`] as problem documents.

pub mod admin;
pub mod auth;
pub mod cors;
pub mod dev;
pub mod ops;
pub mod orders;
pub mod page;
pub mod problem;
pub mod public;
pub mod queue;
pub mod report;
pub mod track;
pub mod web;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::response::IntoResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;

use crate::problem::codes_table;
use crate::state::AppState;
pub use problem::ApiError;

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
        text.push_str("\n\n");
        text.push_str(&codes_table());
        openapi.info.description = Some(text);
    }
}

/// Declares in the document the rules the server enforces that utoipa's attributes cannot say,
/// so that a client generated from it (or a schema-driven tester) sends what the server accepts
/// and nothing it refuses.
fn declare_rules(document: &mut serde_json::Value) {
    use serde_json::json;
    let schemas = &mut document["components"]["schemas"];
    // Exactly one of the two schedules.
    schemas["NewSale"]["oneOf"] = json!([{ "required": ["opens_at"] }, { "required": ["weekly"] }]);
    // Shown to buyers: not blank, no control characters (lengths are declared on the field).
    let name = json!(
        "^[^\\u0000-\\u001F\\u007F-\\u009F]*[^\\s\\u0000-\\u001F\\u007F-\\u009F][^\\u0000-\\u001F\\u007F-\\u009F]*$"
    );
    schemas["NewSale"]["properties"]["name"]["pattern"] = name.clone();
    schemas["SalePatch"]["properties"]["name"]["pattern"] = name;
    // A patch that changes nothing is refused as a likely mistake.
    if let Some(patch) = schemas["SalePatch"].as_object_mut() {
        patch.remove("maxProperties");
        patch.insert("minProperties".to_owned(), json!(1));
    }
    schemas["WeeklyInput"]["properties"]["timezone"]["enum"] =
        json!(flashsale_sales::time_zone_names().collect::<Vec<_>>());
    // (`get_mut`, not indexing: indexing a missing key inserts a null into the document.)
    let paths = document.get_mut("paths").and_then(serde_json::Value::as_object_mut);
    for (_, item) in paths.into_iter().flatten() {
        for (_, operation) in item.as_object_mut().into_iter().flatten() {
            let parameters = operation.get_mut("parameters").and_then(serde_json::Value::as_array_mut);
            for parameter in parameters.into_iter().flatten() {
                if parameter["name"] == "Idempotency-Key" {
                    parameter["schema"] = json!({ "type": "string", "pattern": "^[!-~]{1,255}$" });
                }
            }
        }
    }
}

/// The document as served at `now`: the example opening of a one-off sale an hour ahead, so a
/// client that sends the example gets a sale, not "must be in the future".
pub fn served_document(document: &serde_json::Value, now: chrono::DateTime<chrono::Utc>) -> String {
    let mut document = document.clone();
    let opens_at = (now + chrono::TimeDelta::hours(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let example = &mut document["components"]["schemas"]["NewSale"]["properties"]["opens_at"]["example"];
    if !example.is_null() {
        *example = serde_json::Value::String(opens_at);
    }
    document.to_string()
}

/// Refuses (404) a path with a number in a form other than the canonical one: a sign, leading
/// zeros or percent-encoded digits (`/sales/+1`, `/sales/01`, `/sales/%31`). Each resource has one
/// address, so caches, logs, rate limits and audits keyed by path never see one sale under two.
async fn canonical_ids(request: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    let canonical = request.uri().path().split('/').all(|raw| {
        let segment = percent_decoded(raw);
        let digits = segment.strip_prefix(['+', '-']).unwrap_or(&segment);
        let numeric = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
        !numeric || (segment == raw && digits.len() == segment.len() && (digits == "0" || !digits.starts_with('0')))
    });
    if canonical {
        next.run(request).await
    } else {
        ApiError::NotFound("no resource at this path (ids are written without signs or leading zeros)".to_owned())
            .into_response()
    }
}

/// Whether the request's `Accept` header lists `media` (a type such as `text/html`, parameters
/// ignored): how an endpoint that answers JSON by default picks another representation.
pub(crate) fn accepts(request: &axum::http::HeaderMap, media: &str) -> bool {
    request
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.split(',').any(|t| t.trim().starts_with(media)))
}

/// `raw` with its `%XX` escapes decoded (bytes that are not UTF-8 stay escaped).
fn percent_decoded(raw: &str) -> std::borrow::Cow<'_, str> {
    if !raw.contains('%') {
        return std::borrow::Cow::Borrowed(raw);
    }
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_or(std::borrow::Cow::Borrowed(raw), std::borrow::Cow::Owned)
}

/// The whole API over `state`, without a socket: tests drive it with `tower::ServiceExt::oneshot`.
pub fn app(state: AppState, max_body_bytes: usize) -> Router {
    let (router, openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(public::router())
        .merge(queue::router())
        .merge(orders::router())
        .merge(admin::router())
        .merge(ops::router())
        .merge(report::router())
        .split_for_parts();
    let mut document = serde_json::to_value(&openapi).expect("the OpenAPI document serialises");
    declare_rules(&mut document);
    let _ = state.openapi.set(document);
    let mut router = router.merge(web::router(&state, &state.web));
    if state.secrets.dev_mode {
        router = router.merge(dev::router());
    }
    let mut router = router
        .route_layer(axum::middleware::from_fn(track::track))
        .layer(axum::middleware::from_fn(canonical_ids))
        .fallback(|| async { ApiError::NotFound("no such endpoint".to_owned()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(state.clone(), track::in_instance_scope));
    if !state.web.cors_origins.0.is_empty() {
        let origins = std::sync::Arc::new(state.web.cors_origins.clone());
        router = router.layer(axum::middleware::from_fn_with_state(origins, cors::cors));
    }
    router.with_state(state)
}
