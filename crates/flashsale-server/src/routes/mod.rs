//! HTTP handlers, one module per audience. Each exposes `fn router() -> OpenApiRouter<AppState>`,
//! registering handlers with `routes!` so the OpenAPI document and the router cannot disagree.

pub mod admin;
pub mod ops;
pub mod orders;
pub mod public;
pub mod queue;
