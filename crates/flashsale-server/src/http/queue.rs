//! Shoppers in the queue: `POST` and `GET /sales/{id}/queue`, behind a buyer JWT.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::extract::State;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use flashsale_core::SaleId;
use flashsale_queue::StreamClaims;
use futures::stream::{self, Stream};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{Buyer, ClientIp};
use super::problem::{ApiError, Json, Path, Query};
use crate::problem::Problem;
use crate::service;
use crate::service::codes::{self, PriorityAdmission};
use crate::service::queue::{self, QueueState, QueueStatus};
use crate::state::AppState;
use flashsale_queue::pow::{IssuedChallenge, PowError};

/// The buyer's and the address's rate limits on the queue; a refusal is also counted for the
/// sale's report.
async fn within_limits(state: &AppState, buyer: &Buyer, ip: &ClientIp, id: SaleId) -> Result<(), ApiError> {
    if let Err(limited) = state.limits.check(&buyer.user, ip.0) {
        queue::rate_limited(state, id).await;
        return Err(limited.into());
    }
    Ok(())
}

/// The header a client sends its last ticket back in.
pub const TICKET_HEADER: &str = "x-queue-ticket";

/// The `X-Queue-Ticket` header, if present and text. Taken alone rather than cloning the whole
/// header map on every poll.
#[derive(Debug)]
struct PresentedTicket(Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for PresentedTicket {
    type Rejection = Infallible;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<PresentedTicket, Infallible> {
        Ok(PresentedTicket(parts.headers.get(TICKET_HEADER).and_then(|v| v.to_str().ok()).map(str::to_owned)))
    }
}

/// The queue routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(join_queue, queue_status))
        .routes(routes!(queue_events))
        .routes(routes!(stream_token))
        .routes(routes!(queue_challenge))
        .routes(routes!(redeem_code))
}

/// `POST /sales/{id}/queue/priority`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CodeBody {
    /// The priority code, as given (`XXXXX-XXXXX-XXXXX-XXXXX`; case, dashes and spaces do not
    /// matter).
    #[schema(example = "7K3QD-9VX2M-H8RTC-4NWPB", max_length = 64)]
    code: String,
}

/// Redeems a priority code: the buyer is admitted at once, without queueing, and orders with the
/// `admission_token` as any admitted buyer does (same per-user limit, same reservation). A code
/// is single use: another buyer's attempt is 409 `code_used`; the same buyer asking again in the
/// same batch gets an admission back (their retry). Attempts are limited per buyer and per
/// address, so codes cannot be guessed.
#[utoipa::path(
    post, path = "/sales/{id}/queue/priority", tag = "shoppers", params(("id" = i64, Path, description = "Sale id")),
    security(("buyer_jwt" = [])),
    request_body = CodeBody,
    responses(
        (status = 200, body = PriorityAdmission),
        (status = 400, description = "malformed_json", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "unauthorized", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "not_found (no such sale) or code_invalid", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "code_used, not_open (with opens_at) or closed", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "payload_too_large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "unsupported_media_type", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "validation_failed: the body is not {\"code\": string}", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "rate_limited, with Retry-After", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn redeem_code(
    State(state): State<AppState>,
    buyer: Buyer,
    ip: ClientIp,
    Path(id): Path<SaleId>,
    Json(body): Json<CodeBody>,
) -> Result<Json<PriorityAdmission>, ApiError> {
    state.limits.check_code(&buyer.user, ip.0)?;
    Ok(Json(codes::redeem(&state, &buyer.user, id, &body.code).await?))
}

/// How long a stream token opens the buyer's event stream.
const STREAM_TOKEN_LIFETIME_MS: i64 = 60_000;

/// `POST /sales/{id}/queue/stream-token`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct StreamToken {
    /// Put it in the event stream's URL: `GET /sales/{id}/queue/events?stream_token=…`.
    stream_token: String,
    /// After this the token opens nothing; ask for another.
    expires_at: chrono::DateTime<chrono::Utc>,
}

/// A short-lived token that opens this buyer's event stream of this sale, for browsers:
/// `EventSource` cannot send the JWT in a header, and the JWT must not go into a URL. Good for
/// one minute (the browser's own reconnects within it reuse it), for this sale only.
#[utoipa::path(
    post, path = "/sales/{id}/queue/stream-token", tag = "shoppers", params(("id" = i64, Path, description = "Sale id")),
    security(("buyer_jwt" = [])),
    responses(
        (status = 200, body = StreamToken),
        (status = 401, description = "unauthorized", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "not_found: not a sale id", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "rate_limited, with Retry-After", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn stream_token(
    State(state): State<AppState>,
    buyer: Buyer,
    ip: ClientIp,
    Path(id): Path<SaleId>,
) -> Result<Json<StreamToken>, ApiError> {
    within_limits(&state, &buyer, &ip, id).await?;
    let expires_at_ms = state.clock.now().timestamp_millis() + STREAM_TOKEN_LIFETIME_MS;
    let stream_token = state.tokens.sign_stream(&StreamClaims { user: buyer.user, sale: id, expires_at_ms });
    let expires_at = chrono::DateTime::from_timestamp_millis(expires_at_ms).unwrap_or_default();
    Ok(Json(StreamToken { stream_token, expires_at }))
}

/// `GET /sales/{id}/queue/events`'s query. Other parameters are ignored (as before the stream
/// token existed), so a client adding its own (a cache buster) is not refused.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct EventsQuery {
    /// A token from `POST /sales/{id}/queue/stream-token`, for clients that cannot send the
    /// `Authorization` header (a browser's `EventSource`).
    stream_token: Option<String>,
}

/// Who opens an event stream: the buyer of the `Authorization` header's JWT, or of the URL's
/// stream token (a browser's `EventSource` can send no header).
fn stream_buyer(state: &AppState, headers: &HeaderMap, query: &EventsQuery, sale: SaleId) -> Result<Buyer, ApiError> {
    match &query.stream_token {
        Some(token) if headers.get(header::AUTHORIZATION).is_none() => {
            let now_ms = state.clock.now().timestamp_millis();
            let user = state.tokens.verify_stream(token, sale, now_ms).ok_or(ApiError::Unauthorized)?;
            Ok(Buyer { user })
        }
        _ => Buyer::from_headers(headers, state),
    }
}

/// Join the sale's current batch. Idempotent per buyer and batch: joining again (another tab, a
/// retry after a network error) returns the same place, with 200 instead of 201.
///
/// A sale with a proof of work on join (`join_pow_bits`, `join_pow_adaptive_rate`) wants
/// `X-Pow-Challenge` (from `POST /sales/{id}/queue/challenge`, or the `pow` of a refusal) and
/// `X-Pow-Solution`; without them 428 `pow_required`, with a wrong, expired, reused or foreign
/// one 403 `pow_invalid`, each carrying a fresh challenge in `pow`. An address failing too often
/// is answered 429 instead.
#[utoipa::path(
    post, path = "/sales/{id}/queue", tag = "shoppers",
    params(
        ("id" = i64, Path, description = "Sale id"),
        ("X-Pow-Challenge" = Option<String>, Header, description = "A challenge the server issued for this buyer and sale"),
        ("X-Pow-Solution" = Option<String>, Header, description = "A number n such that SHA-256(challenge \":\" n) starts with the challenge's bits of zeros"),
    ),
    security(("buyer_jwt" = [])),
    responses(
        (status = 201, description = "Joined", body = QueueState),
        (status = 200, description = "Already in the queue: the same place", body = QueueState),
        (status = 401, description = "unauthorized", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "pow_invalid (also: a solution that is not a number), with a fresh challenge", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "not_found", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "not_open (with opens_at), sold_out or closed", body = Problem, content_type = "application/problem+json"),
        (status = 428, description = "pow_required, with a challenge", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "rate_limited, with Retry-After", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn join_queue(
    State(state): State<AppState>,
    buyer: Buyer,
    ip: ClientIp,
    Path(id): Path<SaleId>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    within_limits(&state, &buyer, &ip, id).await?;
    // A header that is not text, or a solution that is not a number, solves nothing: the sale's
    // proof-of-work check refuses it (403 with a fresh challenge), a sale without one ignores it.
    let text = |name: &str| headers.get(name).map(|v| v.to_str().unwrap_or_default());
    let proof = match (text("x-pow-challenge"), text("x-pow-solution")) {
        (Some(challenge), Some(solution)) => {
            Some(queue::Proof { challenge, solution: solution.trim().parse::<u64>().ok() })
        }
        _ => None,
    };
    let (new, joined) = match queue::join(&state, &buyer.user, id, proof).await {
        Ok(joined) => joined,
        Err(e @ service::Error::Pow { reason, .. }) => {
            // A first join without a proof is the usual way to get a challenge; failing ones
            // count against the address.
            if reason != PowError::Missing {
                state.limits.pow_failed(ip.0)?;
            }
            return Err(e.into());
        }
        Err(e) => return Err(e.into()),
    };
    let status = if new { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(joined)).into_response())
}

/// A proof-of-work challenge for joining the sale's current batch: find a number n such that
/// SHA-256(challenge ":" n) starts with `bits` zero bits, then join with `X-Pow-Challenge` and
/// `X-Pow-Solution`. Each challenge is good for one join, for this buyer, for two minutes. For a
/// sale that asks no proof of work, `bits` is 0 (any n solves it; the join needs none).
#[utoipa::path(
    post, path = "/sales/{id}/queue/challenge", tag = "shoppers", params(("id" = i64, Path, description = "Sale id")),
    security(("buyer_jwt" = [])),
    responses(
        (status = 200, body = IssuedChallenge),
        (status = 401, description = "unauthorized", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "not_found", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "rate_limited, with Retry-After", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn queue_challenge(
    State(state): State<AppState>,
    buyer: Buyer,
    ip: ClientIp,
    Path(id): Path<SaleId>,
) -> Result<Json<IssuedChallenge>, ApiError> {
    within_limits(&state, &buyer, &ip, id).await?;
    Ok(Json(queue::challenge(&state, &buyer.user, id).await?))
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
    ticket: PresentedTicket,
) -> Result<Json<QueueState>, ApiError> {
    within_limits(&state, &buyer, &ip, id).await?;
    Ok(Json(queue::status(&state, &buyer.user, id, ticket.0.as_deref()).await?))
}

/// How long one event stream stays open; `EventSource` clients reconnect on their own, which
/// re-checks their token and rate limit and spreads long-lived connections over instances.
const STREAM_LIFETIME: Duration = Duration::from_secs(600);

/// The same state as `GET /sales/{id}/queue`, pushed as Server-Sent Events (`event: queue`,
/// JSON data) whenever it changes. Authenticated by the buyer JWT, or (browsers) by a
/// `stream_token` in the query: status, position, ahead, estimate, or in standby the units
/// held, the next release and the standby place. The stream ends when nothing is left to wait
/// for (`sold_out`, `closed`, `expired`) and after ten minutes.
#[utoipa::path(
    get, path = "/sales/{id}/queue/events", tag = "shoppers",
    params(
        ("id" = i64, Path, description = "Sale id"),
        ("X-Queue-Ticket" = Option<String>, Header, description = "The `ticket` of the previous answer"),
        EventsQuery,
    ),
    security(("buyer_jwt" = []), ()),
    responses(
        (status = 200, description = "A stream of `queue` events, each a QueueState", content_type = "text/event-stream", body = QueueState),
        (status = 401, description = "unauthorized", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "not_found: no such sale, or not in its queue", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "rate_limited, with Retry-After; too_many_streams: the buyer holds as many streams open as allowed (FLASHSALE_EVENT_STREAMS_PER_BUYER)", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn queue_events(
    State(state): State<AppState>,
    ip: ClientIp,
    Path(id): Path<SaleId>,
    Query(query): Query<EventsQuery>,
    ticket: PresentedTicket,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let buyer = stream_buyer(&state, &headers, &query, id)?;
    within_limits(&state, &buyer, &ip, id).await?;
    let slot = state.limits.open_stream(&buyer.user)?;
    let ticket = ticket.0.as_deref();
    // Errors before the stream starts (no such sale, not joined) are ordinary problems.
    let first = queue::status(&state, &buyer.user, id, ticket).await?;
    let deadline = Instant::now() + STREAM_LIFETIME;
    let ticket = first.ticket.clone().or_else(|| ticket.map(str::to_owned)).unwrap_or_default();
    let pulse = queue::follow(&state, id, first.batch_no);
    let signal = *pulse.borrow();
    let start =
        Some(Watch { state, user: buyer.user, sale: id, ticket, last: first, sent: false, pulse, signal, _slot: slot });
    let events = stream::unfold(start, move |watch| async move {
        let mut watch = watch?;
        if !watch.sent {
            watch.sent = true;
            let event = queue_event(&watch.last);
            return Some((Ok(event), Some(watch)));
        }
        loop {
            if is_final(watch.last.status) || Instant::now() >= deadline {
                return None;
            }
            // Look again when the batch's pulse says something that concerns this buyer
            // changed, or on the stream's own clock (see `next_look`).
            let look_at = (Instant::now() + next_look(&watch.last)).min(deadline);
            tokio::select! {
                changed = watch.pulse.changed() => {
                    if changed.is_err() {
                        // The pulse stopped (it cannot while followed; a panic would): follow anew.
                        watch.pulse = queue::follow(&watch.state, watch.sale, watch.last.batch_no);
                    }
                    let signal = *watch.pulse.borrow_and_update();
                    let concerns = watch.signal.concerns(&signal, watch.last.position);
                    watch.signal = signal;
                    if !concerns {
                        continue;
                    }
                }
                () = tokio::time::sleep_until(look_at.into()) => {}
            }
            match queue::status(&watch.state, &watch.user, watch.sale, Some(&watch.ticket)).await {
                Ok(next) => {
                    if let Some(renewed) = &next.ticket {
                        watch.ticket.clone_from(renewed);
                    }
                    let changed = changed(&watch.last, &next);
                    watch.last = next;
                    if changed {
                        let event = queue_event(&watch.last);
                        return Some((Ok(event), Some(watch)));
                    }
                }
                // Redis or PostgreSQL hiccup: tell the client and end; it reconnects.
                Err(e) => {
                    let event = Event::default().event("error").data(e.to_string());
                    return Some((Ok(event), None));
                }
            }
        }
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

/// What an event stream remembers between checks.
struct Watch {
    state: AppState,
    user: flashsale_core::UserId,
    sale: SaleId,
    /// The latest ticket (answers only carry one when it changes).
    ticket: String,
    last: QueueState,
    sent: bool,
    /// The batch's pulse, and the signal this stream last acted on.
    pulse: tokio::sync::watch::Receiver<crate::pulse::Signal>,
    signal: crate::pulse::Signal,
    /// The buyer's place among their open streams, given back when the stream ends.
    _slot: crate::limits::StreamSlot,
}

/// How long a stream waits before looking at its buyer's state on its own, for what moves one
/// buyer at a time (their place and estimate, their turn coming up, the draw at the opening):
/// as long as the buyer would wait to poll, at least 200 ms near the front, at most 30 s far back,
/// and not past the opening while the place is not drawn yet. What concerns the whole batch
/// comes with the pulse at once.
fn next_look(last: &QueueState) -> Duration {
    let own = Duration::from_millis(last.poll_after_ms.unwrap_or(1_000).clamp(200, 30_000));
    let until_open = (last.opens_at - last.server_time).to_std().unwrap_or_default() + Duration::from_millis(100);
    if last.position.is_none() { own.min(until_open) } else { own }
}

fn queue_event(state: &QueueState) -> Event {
    Event::default().event("queue").json_data(state).unwrap_or_else(|_| Event::default().event("error"))
}

fn is_final(status: QueueStatus) -> bool {
    matches!(status, QueueStatus::SoldOut | QueueStatus::Closed | QueueStatus::Expired)
}

fn changed(a: &QueueState, b: &QueueState) -> bool {
    (a.status, a.position, a.ahead, a.eta_secs, &a.admission_token)
        != (b.status, b.position, b.ahead, b.eta_secs, &b.admission_token)
        || (a.units_held, a.standby_place, a.next_release_at) != (b.units_held, b.standby_place, b.next_release_at)
}
