//! Dev mode's stand-ins for what a deployment gets from elsewhere: the shop's login (a buyer JWT
//! for a name typed in) and the payment provider (a signed notice for the buyer's own order).
//! Mounted only in dev mode (no secrets configured); with secrets these paths do not exist, so
//! nothing here can mint an identity or a payment in production. Not in the OpenAPI document:
//! they are not part of the API a client builds against.

use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::post;
use chrono::{DateTime, TimeDelta, Utc};
use flashsale_core::UserId;
use flashsale_order::OrderId;
use serde::{Deserialize, Serialize};

use super::auth::Buyer;
use super::problem::{ApiError, Json, Path};
use crate::service::orders;
use crate::state::AppState;

/// How long a dev sign-in lasts.
const DEV_LOGIN_LIFETIME: TimeDelta = TimeDelta::hours(12);

/// The dev routes: `POST /dev/login` and `POST /dev/orders/{id}/pay`.
pub fn router() -> Router<AppState> {
    Router::new().route("/dev/login", post(login)).route("/dev/orders/{id}/pay", post(pay))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Login {
    /// The buyer's name: their user id (1–64 characters).
    name: String,
}

#[derive(Debug, Serialize)]
struct LoggedIn {
    /// A buyer JWT, as the shop's login would hand the page.
    token: String,
    user: UserId,
    expires_at: DateTime<Utc>,
}

#[derive(Debug, Serialize)]
struct Claims<'a> {
    sub: &'a str,
    iat: i64,
    exp: i64,
}

/// A buyer JWT for the name typed in, signed with the dev JWT secret.
async fn login(State(state): State<AppState>, Json(login): Json<Login>) -> Result<Json<LoggedIn>, ApiError> {
    let user =
        UserId::try_from(login.name.trim().to_owned()).map_err(|e| ApiError::InvalidBody(format!("name: {e}")))?;
    let now = state.clock.now();
    let expires_at = now + DEV_LOGIN_LIFETIME;
    let claims = Claims { sub: user.as_str(), iat: now.timestamp(), exp: expires_at.timestamp() };
    let key = jsonwebtoken::EncodingKey::from_secret(state.secrets.jwt_secret.expose().as_bytes());
    let token = jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key)
        .map_err(|e| ApiError::Service(crate::service::Error::Internal(e.into())))?;
    Ok(Json(LoggedIn { token, user, expires_at }))
}

/// Pays the buyer's own order in full: a notice signed with the payment secret, delivered to the
/// callback's own code, so a test payment is checked and applied exactly as the provider's.
async fn pay(State(state): State<AppState>, buyer: Buyer, Path(id): Path<OrderId>) -> Result<Response, ApiError> {
    let order = orders::get(&state, &buyer.user, id).await?;
    // As the provider would write it (see `PaymentNotice`): the reference is the order's, so
    // paying twice is a replay of the same notice, not a second payment.
    let notice = serde_json::json!({
        "order_id": order.id.get(),
        "payment_ref": format!("dev-{}", order.id.get()),
        "amount_cents": order.amount_cents,
        "status": "succeeded",
    });
    let body = serde_json::to_vec(&notice).expect("a notice serialises");
    let signature = flashsale_order::payment::sign(state.secrets.payment_secret.expose().as_bytes(), &body);
    super::orders::deliver_payment(&state, &signature, &body).await
}
