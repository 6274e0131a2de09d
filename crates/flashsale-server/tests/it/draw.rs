//! The provable draw end to end: the seed committed before the pre-queue, the cohort recorded
//! and the seed revealed at the opening, and the published documents checked by
//! `flashsale-verify`'s own code, which must also reject every tampering.

use crate::common::{TestApp, open_now, sale_in_prequeue, uncached};
use axum::http::Method;
use chrono::Utc;
use flashsale_queue::draw::{DrawFault, PublishedDraw};
use flashsale_server::service::draws;
use flashsale_verify::{Buyer, VerifyError, verify};
use serde_json::Value;

async fn published(app: &TestApp, id: i64) -> PublishedDraw {
    let reply = app.get(&format!("/sales/{id}/batches/1/draw")).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    serde_json::from_value(reply.body).unwrap()
}

/// The entrants document as served (text, one leaf per line).
async fn entrants(app: &TestApp, id: i64) -> String {
    let uri = format!("/sales/{id}/batches/1/draw/entrants");
    let reply = app.get(&uri).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.headers["cache-control"], "public, max-age=31536000, immutable");
    reply.body.as_str().expect("text, one leaf per line").to_owned()
}

#[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
async fn a_buyer_checks_their_place_from_what_was_published(db: sqlx::PgPool) {
    let app = uncached(db).await;
    let id = app.create_sale(sale_in_prequeue(10)).await["id"].as_i64().unwrap();

    // Before anyone joins: the seed is committed to, nothing else is public.
    let before = published(&app, id).await;
    assert_eq!(before.draw_commitment.len(), 64);
    assert_eq!((before.prequeue_seed.as_ref(), before.cohort_commitment.as_ref()), (None, None));
    let uri = format!("/sales/{id}/batches/1/draw/entrants");
    app.get(&uri).await.assert_problem(409, "not_drawn");

    // The pre-queue: each buyer is handed a receipt; the commitment does not move, whatever
    // operations do, and the database refuses a new seed outright.
    let queue = format!("/sales/{id}/queue");
    let buyers = ["ann", "bob", "cat", "dan", "eve", "fay", "gus"];
    let mut receipts = Vec::new();
    for user in buyers {
        let joined = app.buyer(Method::POST, &queue, user, None).await;
        assert_eq!(joined.status, 201, "{joined:?}");
        receipts.push(joined.body["draw_receipt"].as_str().unwrap().to_owned());
    }
    let again = app.buyer(Method::GET, &queue, "ann", None).await;
    assert_eq!(again.body["draw_receipt"].as_str(), Some(receipts[0].as_str()), "the receipt is stable");
    for action in ["pause", "resume"] {
        app.admin(Method::POST, &format!("/admin/sales/{id}/{action}"), None).await;
    }
    let reseed =
        sqlx::query("UPDATE sale_batches SET prequeue_seed = '\\x00112233445566778899aabbccddeeff' WHERE sale_id = $1")
            .bind(id)
            .execute(&app.db)
            .await;
    assert!(reseed.unwrap_err().to_string().contains("fixed at its creation"));
    assert_eq!(published(&app, id).await.draw_commitment, before.draw_commitment);
    assert_eq!(app.get(&format!("/sales/{id}")).await.body["draw_commitment"].as_str(), Some(&*before.draw_commitment));

    // The opening: a latecomer gets no receipt (not in the cohort); the ticker seals the cohort,
    // the recorder records it once and the seed is revealed.
    open_now(&app, id).await;
    let late = app.buyer(Method::POST, &queue, "zed", None).await;
    assert_eq!((late.body["position"].as_u64(), late.body.get("draw_receipt")), (Some(8), None));
    flashsale_server::service::queue::admit_all(&app.state, Utc::now()).await.unwrap();
    assert_eq!(draws::record_due(&app.state, Utc::now()).await.unwrap(), 1);
    assert_eq!(draws::record_due(&app.state, Utc::now()).await.unwrap(), 0, "recorded once");
    let draw = published(&app, id).await;
    assert_eq!(draw.draw_commitment, before.draw_commitment);
    assert_eq!(draw.cohort_size, Some(buyers.len() as u64));
    assert!(draw.prequeue_seed.is_some() && draw.sealed_at.is_some());
    let text = entrants(&app, id).await;
    assert_eq!(text.lines().count(), buyers.len());

    // Every buyer finds their place, and it is the place the queue gives them.
    for (user, receipt) in buyers.iter().zip(&receipts) {
        let buyer = Buyer::new(user, receipt).unwrap();
        let verdict = verify(&draw, &text, Some(&buyer)).unwrap();
        let entry = verdict.entry.unwrap();
        let status = app.buyer(Method::GET, &queue, user, None).await;
        assert_eq!(status.body["position"].as_u64(), Some(entry.place), "{user}");
    }
    // Someone else's receipt does not open a place.
    let thief = Buyer::new("zed", &receipts[0]).unwrap();
    assert_eq!(verify(&draw, &text, Some(&thief)), Err(VerifyError::NotInCohort));

    // Tampering is caught: another seed, a buyer added or removed, two places swapped.
    let mut reseeded = draw.clone();
    reseeded.prequeue_seed = Some("00".repeat(32));
    assert_eq!(verify(&reseeded, &text, None), Err(DrawFault::SeedNotCommitted.into()));
    let lines: Vec<&str> = text.lines().collect();
    let removed = lines[1..].join("\n");
    let mut smaller = draw.clone();
    smaller.cohort_size = Some(buyers.len() as u64 - 1);
    assert_eq!(verify(&smaller, &removed, None), Err(DrawFault::CohortNotCommitted { size: buyers.len() - 1 }.into()));
    let added = format!("{text}{}\n", "ab".repeat(32));
    let mut larger = draw.clone();
    larger.cohort_size = Some(buyers.len() as u64 + 1);
    assert_eq!(verify(&larger, &added, None), Err(DrawFault::CohortNotCommitted { size: buyers.len() + 1 }.into()));
    let mut swapped = lines.clone();
    swapped.swap(0, 1);
    assert_eq!(verify(&draw, &swapped.join("\n"), None), Err(DrawFault::OutOfOrder { place: 2 }.into()));

    // The record never changes.
    let rewrite = sqlx::query("UPDATE batch_draws SET cohort_size = cohort_size WHERE sale_id = $1")
        .bind(id)
        .execute(&app.db)
        .await;
    assert!(rewrite.unwrap_err().to_string().contains("never changed"));
}

#[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
async fn a_batch_closed_before_its_opening_publishes_its_seed_and_no_cohort(db: sqlx::PgPool) {
    let app = uncached(db).await;
    let id = app.create_sale(sale_in_prequeue(10)).await["id"].as_i64().unwrap();
    app.buyer(Method::POST, &format!("/sales/{id}/queue"), "ann", None).await;
    app.admin(Method::POST, &format!("/admin/sales/{id}/close"), None).await;
    let draw = published(&app, id).await;
    assert!(draw.prequeue_seed.is_some(), "nobody can be drawn any more: {draw:?}");
    assert_eq!(draw.cohort_commitment, None);
    let uri = format!("/sales/{id}/batches/1/draw/entrants");
    app.get(&uri).await.assert_problem(409, "not_drawn");
}

#[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
async fn the_draw_of_an_unknown_batch_is_not_found(db: sqlx::PgPool) {
    let app = uncached(db).await;
    let id = app.create_sale(sale_in_prequeue(10)).await["id"].as_i64().unwrap();
    for uri in [format!("/sales/{id}/batches/2/draw"), format!("/sales/{id}/batches/2/draw/entrants")] {
        app.get(&uri).await.assert_problem(404, "not_found");
    }
    let body: Value = app.get(&format!("/sales/{id}/batches/1/draw")).await.body;
    assert_eq!(body["rank"].as_str().map(|r| r.contains("HMAC-SHA256")), Some(true));
}
