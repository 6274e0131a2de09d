//! The pages people use, served by the server itself: the waiting room (`/` and `/s/{id}`) and
//! the operations console (`/admin/`). Their files (`crates/flashsale-server/web/`: plain ES
//! modules, no build step) are embedded in the binary, so a deployment is still one binary and a
//! fresh clone still runs with `cargo` alone.
//!
//! The files are served under `/assets/{version}/`, where the version is a hash of all of them:
//! a browser or CDN may keep them for a year (`immutable`), and a new build is a new address.
//! Modules import each other by relative paths, which stay within one version. The HTML is
//! rendered once at start-up with that address and the instance's page settings, and is never
//! cached without revalidation. Every page carries a Content-Security-Policy that allows only
//! this origin's scripts, styles and connections.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};

use super::problem::ApiError;
use crate::config::WebSettings;
use crate::state::AppState;

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every file the pages load.
const ASSETS: &[Asset] = &[
    Asset { name: "api.js", content_type: JS, body: include_bytes!("../../web/api.js") },
    Asset { name: "i18n.js", content_type: JS, body: include_bytes!("../../web/i18n.js") },
    Asset { name: "waiting-room.js", content_type: JS, body: include_bytes!("../../web/waiting-room.js") },
    Asset { name: "console.js", content_type: JS, body: include_bytes!("../../web/console.js") },
    Asset { name: "pow.js", content_type: JS, body: include_bytes!("../../web/pow.js") },
    // Started by pow.js as a module worker (`new Worker(new URL(...))`), not imported.
    Asset { name: "pow-worker.js", content_type: JS, body: include_bytes!("../../web/pow-worker.js") },
    Asset { name: "style.css", content_type: "text/css; charset=utf-8", body: include_bytes!("../../web/style.css") },
];

const WAITING_ROOM: &str = include_str!("../../web/index.html");
const CONSOLE: &str = include_str!("../../web/console.html");

/// The policy of every page: scripts, styles, images and connections from this origin only, no
/// inline script, no framing, no plugins, no form posts elsewhere.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The security headers of pages and assets.
fn security_headers() -> [(HeaderName, HeaderValue); 5] {
    [
        (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY)),
        (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
        (HeaderName::from_static("cross-origin-opener-policy"), HeaderValue::from_static("same-origin")),
    ]
}

/// The version of the embedded files: the first 12 hex digits of a SHA-256 over all of them.
fn assets_version() -> String {
    let mut hash = Sha256::new();
    for asset in ASSETS {
        hash.update(asset.name.as_bytes());
        hash.update([0]);
        hash.update((asset.body.len() as u64).to_be_bytes());
        hash.update(asset.body);
    }
    flashsale_core::hex(&hash.finalize()[..6])
}

/// `text` safe inside HTML text and quoted attribute values: `&` `<` `>` `"` `'` escaped. Every
/// page the server renders (these, the sale report) escapes through it.
pub(crate) fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

/// A page's HTML: the assets' address and the instance's settings as `<meta>` tags.
fn render(template: &str, version: &str, dev_mode: bool, settings: &WebSettings) -> String {
    let mut meta = format!("<meta name=\"flashsale-dev\" content=\"{dev_mode}\">");
    if let Some(url) = &settings.payment_page_url {
        meta.push_str(&format!("\n<meta name=\"flashsale-payment-url\" content=\"{}\">", escape(url)));
    }
    template.replace("{{assets}}", &format!("/assets/{version}")).replace("{{meta}}", &meta)
}

fn page(html: &'static str) -> Response {
    let mut response = (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8")),
            // Always revalidated: the HTML names the assets' version, which a deployment changes.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        html,
    )
        .into_response();
    response.headers_mut().extend(security_headers());
    response
}

/// The page routes: `/`, `/s/{id}`, `/admin/` (and `/admin` redirected), `/assets/{version}/{file}`.
pub fn router(state: &AppState, settings: &WebSettings) -> Router<AppState> {
    let version = assets_version();
    let dev_mode = state.secrets.dev_mode;
    // Rendered once; leaked so every response borrows it (two strings for the process's life).
    let waiting_room: &'static str = Box::leak(render(WAITING_ROOM, &version, dev_mode, settings).into_boxed_str());
    let console: &'static str = Box::leak(render(CONSOLE, &version, dev_mode, settings).into_boxed_str());
    let current: &'static str = Box::leak(version.into_boxed_str());
    Router::new()
        .route("/", get(move || async move { page(waiting_room) }))
        .route(
            "/s/{id}",
            get(move |Path(id): Path<String>| async move {
                if id.parse::<flashsale_core::SaleId>().is_ok() {
                    page(waiting_room)
                } else {
                    ApiError::NotFound("no sale page at this path".to_owned()).into_response()
                }
            }),
        )
        .route("/admin/", get(move || async move { page(console) }))
        .route("/admin", get(|| async { Redirect::permanent("/admin/") }))
        .route(
            "/assets/{version}/{file}",
            get(move |Path((version, file)): Path<(String, String)>| async move { asset(current, &version, &file) }),
        )
}

/// An embedded file, if `version` is the current one: cached for a year, as its address changes
/// with its content. An old version's address answers 404 rather than today's file, which a cache
/// would then keep under the old address.
fn asset(current: &str, version: &str, file: &str) -> Response {
    let found = ASSETS.iter().find(|a| a.name == file).filter(|_| version == current);
    let Some(asset) = found else {
        return ApiError::NotFound("no such asset (the page may be from an older version: reload it)".to_owned())
            .into_response();
    };
    let mut response = (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=31536000, immutable")),
        ],
        asset.body,
    )
        .into_response();
    response.headers_mut().extend(security_headers());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_name_the_current_assets_and_escape_the_settings() {
        let settings = WebSettings {
            payment_page_url: Some("https://pay.example/?o={order_id}&x=\"<".to_owned()),
            ..WebSettings::default()
        };
        let html = render(WAITING_ROOM, "abc123", false, &settings);
        assert!(html.contains("src=\"/assets/abc123/waiting-room.js\""), "{html}");
        assert!(html.contains("<meta name=\"flashsale-dev\" content=\"false\">"));
        assert!(html.contains("content=\"https://pay.example/?o={order_id}&amp;x=&quot;&lt;\""), "{html}");
        assert!(!html.contains("{{"));
        assert!(!render(CONSOLE, "abc123", true, &WebSettings::default()).contains("flashsale-payment-url"));
    }

    #[test]
    fn every_module_a_page_or_module_imports_is_embedded() {
        let names: Vec<&str> = ASSETS.iter().map(|a| a.name).collect();
        let sources = ASSETS.iter().map(|a| std::str::from_utf8(a.body).unwrap()).chain([WAITING_ROOM, CONSOLE]);
        for source in sources {
            for part in source.split(['\'', '"']).filter(|p| p.starts_with("./") || p.starts_with("{{assets}}/")) {
                let name = part.rsplit('/').next().unwrap();
                assert!(names.contains(&name), "{part} is loaded but not embedded");
            }
        }
    }
}
