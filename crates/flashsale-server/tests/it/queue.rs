//! The token queue through the HTTP API: buyer auth, joining, the pre-queue draw, admission
//! tokens, sold out and pause, against real Redis and PostgreSQL.

use crate::common::{TestApp, buyer_jwt, open_now, sale_in_prequeue, sell_out, uncached};
use axum::http::Method;
use chrono::Utc;
use flashsale_core::{BatchNo, EntrantKey, PrequeueSeed, SaleId, Ticket, UserId};
use flashsale_queue::TokenError;
use flashsale_queue::draw;
use serde_json::Value;

async fn tick_until_admitted(app: &TestApp, times: usize) {
    for _ in 0..times {
        flashsale_server::service::queue::admit_all(&app.state, Utc::now()).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

fn uid(s: &str) -> UserId {
    UserId::try_from(s.to_owned()).unwrap()
}

#[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
async fn the_queue_needs_a_genuine_buyer_jwt(db: sqlx::PgPool) {
    let app = uncached(db).await;
    let id = app.create_sale(sale_in_prequeue(10)).await["id"].as_i64().unwrap();
    let uri = format!("/sales/{id}/queue");
    let expired = format!("Bearer {}", buyer_jwt("alice", -120));
    for auth in [None, Some("Bearer dev-admin-token"), Some(expired.as_str()), Some("Bearer x.y.z")] {
        let headers: Vec<(&str, &str)> = auth.map(|a| vec![("authorization", a)]).unwrap_or_default();
        app.send(Method::POST, &uri, &headers, axum::body::Body::empty()).await.assert_problem(401, "unauthorized");
    }
}

#[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
async fn joining_before_the_prequeue_is_refused_with_its_opening(db: sqlx::PgPool) {
    let app = uncached(db).await;
    let mut body = sale_in_prequeue(10);
    body["opens_at"] = serde_json::json!((Utc::now() + chrono::TimeDelta::hours(2)).to_rfc3339());
    let sale = app.create_sale(body).await;
    let reply = app.buyer(Method::POST, &format!("/sales/{}/queue", sale["id"]), "alice", None).await;
    reply.assert_problem(409, "not_open");
    assert_eq!(reply.body["opens_at"], sale["current_batch"]["prequeue_opens_at"]);
}

#[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
async fn a_prequeue_place_is_idempotent_and_drawn_at_the_opening(db: sqlx::PgPool) {
    let app = uncached(db).await;
    let id = app.create_sale(sale_in_prequeue(10)).await["id"].as_i64().unwrap();
    let uri = format!("/sales/{id}/queue");
    let buyers = ["ann", "bob", "cat", "dan", "eve"];
    for user in buyers {
        let first = app.buyer(Method::POST, &uri, user, None).await;
        assert_eq!((first.status.as_u16(), first.body["status"].as_str()), (201, Some("waiting")), "{first:?}");
        assert_eq!(first.body["position"], Value::Null);
        let again = app.buyer(Method::POST, &uri, user, None).await;
        assert_eq!(again.status, 200);
    }
    open_now(&app, id).await;
    let late = app.buyer(Method::POST, &uri, "zed", None).await;
    assert_eq!(late.body["position"], 6);

    // The draw: positions are the buyers' order by rank (tests/it/draw.rs checks it the way
    // anyone can, from what is published).
    let (seed, key): (Vec<u8>, Vec<u8>) =
        sqlx::query_as("SELECT prequeue_seed, entrant_key FROM sale_batches WHERE sale_id = $1")
            .bind(id)
            .fetch_one(&app.db)
            .await
            .unwrap();
    let (seed, key) = (PrequeueSeed::new(seed), EntrantKey::new(key));
    let sale_id = SaleId::try_from(id).unwrap();
    let rank = |u: &str| draw::rank(&seed, &draw::entrant(&key, sale_id, BatchNo::FIRST, &uid(u)));
    let mut expected: Vec<&str> = buyers.to_vec();
    expected.sort_by_key(|u| rank(u));
    for (place, user) in expected.iter().enumerate() {
        let reply = app.buyer(Method::GET, &uri, user, None).await;
        assert_eq!(reply.body["position"], place + 1, "{user}: {reply:?}");
    }
}

#[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
async fn buyers_are_admitted_in_order_with_a_token_bound_to_them(db: sqlx::PgPool) {
    let app = uncached(db).await;
    let id = app.create_sale(sale_in_prequeue(2)).await["id"].as_i64().unwrap();
    open_now(&app, id).await;
    let uri = format!("/sales/{id}/queue");
    let mut tickets = Vec::new();
    for user in ["u1", "u2", "u3", "u4"] {
        let joined = app.buyer(Method::POST, &uri, user, None).await;
        tickets.push(joined.body["ticket"].as_str().unwrap().to_owned());
    }
    let waiting = app.buyer(Method::GET, &uri, "u4", Some(&tickets[3])).await;
    assert_eq!((waiting.body["status"].as_str(), waiting.body["ahead"].as_u64()), (Some("waiting"), Some(3)));

    // Two units, oversubscription 1.0: exactly the first two are admitted, however long it ticks.
    tick_until_admitted(&app, 10).await;
    let mut statuses = Vec::new();
    for (i, user) in ["u1", "u2", "u3", "u4"].iter().enumerate() {
        statuses.push(app.buyer(Method::GET, &uri, user, Some(&tickets[i])).await.body);
    }
    let names: Vec<&str> = statuses.iter().map(|s| s["status"].as_str().unwrap()).collect();
    assert_eq!(names, ["admitted", "admitted", "waiting", "waiting"]);
    assert_eq!(statuses[0]["position"], 1);
    assert_eq!(statuses[2]["eta_secs"], Value::Null, "no stock free right now: no estimate");

    let token = statuses[0]["admission_token"].as_str().unwrap();
    let now_ms = Utc::now().timestamp_millis();
    let (sale, batch) = (SaleId::try_from(id).unwrap(), BatchNo::FIRST);
    let claims = app.state.tokens.verify_admission(token, &uid("u1"), sale, batch, now_ms).unwrap();
    assert_eq!(claims.ticket, Ticket(1));
    assert_eq!(app.state.tokens.verify_admission(token, &uid("u2"), sale, batch, now_ms), Err(TokenError::WrongUser));
    let other = SaleId::try_from(id + 1).unwrap();
    assert_eq!(app.state.tokens.verify_admission(token, &uid("u1"), other, batch, now_ms), Err(TokenError::WrongSale));
    // The admitted buyer's next poll carries its window in the ticket: same token, no Redis.
    let again = app.buyer(Method::GET, &uri, "u1", statuses[0]["ticket"].as_str()).await;
    assert_eq!(again.body["admission_token"].as_str(), Some(token));
}

#[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
async fn waiting_buyers_learn_sold_out_on_their_next_poll(db: sqlx::PgPool) {
    let app = uncached(db).await;
    let id = app.create_sale(sale_in_prequeue(1)).await["id"].as_i64().unwrap();
    open_now(&app, id).await;
    let uri = format!("/sales/{id}/queue");
    let joined = app.buyer(Method::POST, &uri, "late", None).await;
    // The last unit is paid for (as the order step will record it).
    sell_out(&app, id).await;
    let reply = app.buyer(Method::GET, &uri, "late", joined.body["ticket"].as_str()).await;
    assert_eq!(reply.body["status"], "sold_out");
    assert_eq!(reply.body["poll_after_ms"], Value::Null);
    app.buyer(Method::POST, &uri, "newcomer", None).await.assert_problem(409, "sold_out");
}

#[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
async fn paused_batches_keep_places_and_say_so(db: sqlx::PgPool) {
    let app = uncached(db).await;
    let id = app.create_sale(sale_in_prequeue(5)).await["id"].as_i64().unwrap();
    open_now(&app, id).await;
    let uri = format!("/sales/{id}/queue");
    app.buyer(Method::POST, &uri, "a", None).await;
    app.admin(Method::POST, &format!("/admin/sales/{id}/pause"), None).await;
    tick_until_admitted(&app, 3).await;
    let paused = app.buyer(Method::GET, &uri, "a", None).await;
    assert_eq!((paused.body["status"].as_str(), paused.body["position"].as_u64()), (Some("paused"), Some(1)));
    app.admin(Method::POST, &format!("/admin/sales/{id}/resume"), None).await;
    tick_until_admitted(&app, 3).await;
    assert_eq!(app.buyer(Method::GET, &uri, "a", None).await.body["status"], "admitted");
}

#[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
async fn polls_without_joining_or_with_someone_elses_ticket_are_handled(db: sqlx::PgPool) {
    let app = uncached(db).await;
    let id = app.create_sale(sale_in_prequeue(5)).await["id"].as_i64().unwrap();
    open_now(&app, id).await;
    let uri = format!("/sales/{id}/queue");
    app.buyer(Method::GET, &uri, "stranger", None).await.assert_problem(404, "not_found");
    let a = app.buyer(Method::POST, &uri, "a", None).await;
    app.buyer(Method::POST, &uri, "b", None).await;
    // b presents a's ticket: it is ignored and b's own place is looked up.
    let b = app.buyer(Method::GET, &uri, "b", a.body["ticket"].as_str()).await;
    assert_eq!(b.body["position"], 2);
    let forged = app.buyer(Method::GET, &uri, "b", Some("forged.ticket")).await;
    assert_eq!(forged.body["position"], 2);
    app.buyer(Method::POST, "/sales/999/queue", "a", None).await.assert_problem(404, "not_found");
}

#[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
async fn a_buyer_polling_too_fast_gets_429_with_retry_after(db: sqlx::PgPool) {
    let mut tuning = flashsale_server::state::Tuning::default();
    tuning.limits.per_user = std::num::NonZeroU32::new(2);
    let app = TestApp::with_tuning(db, tuning).await;
    let id = app.create_sale(sale_in_prequeue(5)).await["id"].as_i64().unwrap();
    let uri = format!("/sales/{id}/queue");
    let mut replies = Vec::new();
    for _ in 0..8 {
        replies.push(app.buyer(Method::POST, &uri, "eager", None).await);
    }
    let limited: Vec<_> = replies.iter().filter(|r| r.status == 429).collect();
    assert!(!limited.is_empty(), "burst of 4 at 2/s should refuse some of 8");
    limited[0].assert_problem(429, "rate_limited");
    let retry: u64 = limited[0].headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    // Another buyer is not affected.
    assert_eq!(app.buyer(Method::POST, &uri, "calm", None).await.status, 201);
}

/// A buyer's open event stream, read event by event.
struct EventStream(axum::body::Body);

impl EventStream {
    async fn open(app: &TestApp, sale: i64, user: &str, ticket: &str) -> EventStream {
        use tower::ServiceExt;
        let request = axum::http::Request::get(format!("/sales/{sale}/queue/events"))
            .header("authorization", format!("Bearer {}", buyer_jwt(user, 600)))
            .header("x-queue-ticket", ticket)
            .body(axum::body::Body::empty())
            .unwrap();
        let response = app.router.clone().oneshot(request).await.unwrap();
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        EventStream(response.into_body())
    }

    /// The next event's data; `None` when the stream ends (or nothing comes for 5 s).
    async fn next(&mut self) -> Option<Value> {
        use http_body_util::BodyExt;
        loop {
            let frame = tokio::time::timeout(std::time::Duration::from_secs(5), self.0.frame()).await.ok()??.ok()?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            let text = String::from_utf8(data.to_vec()).unwrap();
            if let Some(json) = text.lines().find_map(|l| l.strip_prefix("data: ")) {
                return Some(serde_json::from_str(json).unwrap());
            }
        }
    }
}

#[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
async fn the_event_stream_pushes_sold_out_within_a_second_and_ends(db: sqlx::PgPool) {
    let app = uncached(db).await;
    let id = app.create_sale(sale_in_prequeue(1)).await["id"].as_i64().unwrap();
    open_now(&app, id).await;
    app.buyer(Method::POST, &format!("/sales/{id}/queue"), "first", None).await;
    let joined = app.buyer(Method::POST, &format!("/sales/{id}/queue"), "waiter", None).await;
    let mut stream = EventStream::open(&app, id, "waiter", joined.body["ticket"].as_str().unwrap()).await;
    let first = stream.next().await.unwrap();
    assert_eq!((first["status"].as_str(), first["position"].as_u64()), (Some("waiting"), Some(2)));

    // The last unit goes.
    sell_out(&app, id).await;
    let sold_at = std::time::Instant::now();
    let pushed = stream.next().await.unwrap();
    assert_eq!(pushed["status"], "sold_out");
    assert!(sold_at.elapsed() < std::time::Duration::from_secs(2), "pushed after {:?}", sold_at.elapsed());
    assert!(stream.next().await.is_none(), "the stream ends after a final state");
}

/// Far back in a slow line a stream looks at its buyer's place only every few seconds (as their
/// polls would); what concerns the whole batch still reaches it at once, through the batch's one
/// pulse, and the pulse stops when the last stream closes.
#[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
async fn a_stream_far_back_learns_a_sell_out_from_the_batch_pulse_at_once(db: sqlx::PgPool) {
    let app = uncached(db).await;
    let body = flashsale_testkit::SaleBuilder::one_off().stock(1).admission_rate(1).body();
    let id = app.create_sale(body).await["id"].as_i64().unwrap();
    open_now(&app, id).await;
    for i in 0..30 {
        app.buyer(Method::POST, &format!("/sales/{id}/queue"), &format!("ahead-{i}"), None).await;
    }
    let joined = app.buyer(Method::POST, &format!("/sales/{id}/queue"), "waiter", None).await;
    assert!(joined.body["poll_after_ms"].as_u64().unwrap() >= 5_000, "{:?}", joined.body);
    let mut stream = EventStream::open(&app, id, "waiter", joined.body["ticket"].as_str().unwrap()).await;
    assert_eq!(stream.next().await.unwrap()["status"], "waiting");
    assert_eq!(app.state.pulses.followed(), 1);

    sell_out(&app, id).await;
    let sold_at = std::time::Instant::now();
    assert_eq!(stream.next().await.unwrap()["status"], "sold_out");
    assert!(sold_at.elapsed() < std::time::Duration::from_secs(2), "pushed after {:?}", sold_at.elapsed());
    assert!(stream.next().await.is_none());
    drop(stream);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while app.state.pulses.followed() > 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(app.state.pulses.followed(), 0, "the pulse stops with the last stream");
}
