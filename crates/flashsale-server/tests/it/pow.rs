//! Proof of work on join through the HTTP API: every refusal answers a fresh challenge, a solved
//! one buys one join, and an adaptive difficulty follows the join rate.

use crate::common::{Reply, TestApp, buyer_jwt, open_now, uncached};
use axum::http::Method;
use flashsale_core::{BatchNo, SaleId, UserId};
use flashsale_queue::pow::{self, ChallengeClaims, Challenges};
use flashsale_testkit::SaleBuilder;
use serde_json::json;

async fn join(app: &TestApp, id: i64, user: &str, proof: Option<(&str, String)>) -> Reply {
    let auth = format!("Bearer {}", buyer_jwt(user, 600));
    let mut headers = vec![("authorization", auth.as_str())];
    let solution;
    if let Some((challenge, s)) = proof {
        solution = s;
        headers.push(("x-pow-challenge", challenge));
        headers.push(("x-pow-solution", solution.as_str()));
    }
    app.send(Method::POST, &format!("/sales/{id}/queue"), &headers, axum::body::Body::empty()).await
}

/// The challenge a refusal carries, solved.
fn solved(reply: &Reply) -> (String, String) {
    let challenge = reply.body["pow"]["challenge"].as_str().expect("a fresh challenge").to_owned();
    let bits = u8::try_from(reply.body["pow"]["bits"].as_u64().unwrap()).unwrap();
    let solution = pow::solve(&challenge, bits).to_string();
    (challenge, solution)
}

async fn ask_challenge(app: &TestApp, id: i64, user: &str) -> serde_json::Value {
    let reply = app.buyer(Method::POST, &format!("/sales/{id}/queue/challenge"), user, None).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.body
}

#[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
async fn a_join_pays_its_proof_of_work_once_and_every_refusal_carries_a_fresh_challenge(db: sqlx::PgPool) {
    let app = uncached(db).await;
    let body = SaleBuilder::one_off().opening_in(60).prequeue_secs(600).set("join_pow_bits", json!(8)).body();
    let id = app.create_sale(body).await["id"].as_i64().unwrap();
    assert_eq!(app.admin(Method::GET, &format!("/admin/sales/{id}"), None).await.body["join_pow_bits"], 8);

    // Without a proof: 428 with a challenge of the sale's difficulty.
    let refused = join(&app, id, "ann", None).await;
    refused.assert_problem(428, "pow_required");
    assert_eq!(refused.body["pow"]["bits"], 8);
    let (challenge, solution) = solved(&refused);

    // A wrong solution, another buyer's challenge, a malformed solution: refused, nothing joined.
    let wrong = (0..).find(|n| !pow::solves(&challenge, *n, 8)).unwrap().to_string();
    let answer = join(&app, id, "ann", Some((&challenge, wrong))).await;
    answer.assert_problem(403, "pow_invalid");
    assert!(answer.body["pow"]["challenge"].as_str().is_some_and(|c| c != challenge), "a fresh one");
    join(&app, id, "bob", Some((&challenge, solution.clone()))).await.assert_problem(403, "pow_invalid");
    join(&app, id, "ann", Some((&challenge, "12x".to_owned()))).await.assert_problem(403, "pow_invalid");
    assert_eq!(app.buyer(Method::GET, &format!("/sales/{id}/queue"), "ann", None).await.status, 404);

    // Solved: joined. The same challenge again: refused as spent, with a fresh one.
    assert_eq!(join(&app, id, "ann", Some((&challenge, solution.clone()))).await.status, 201);
    let again = join(&app, id, "ann", Some((&challenge, solution))).await;
    again.assert_problem(403, "pow_invalid");
    assert!(again.body["detail"].as_str().unwrap().contains("already used"), "{again:?}");

    // Expired, and forged (signed with another key), each named.
    let secret = flashsale_server::config::Secrets::dev();
    let claims = |expires_at_ms| ChallengeClaims {
        user: UserId::try_from("cat".to_owned()).unwrap(),
        sale: SaleId::try_from(id).unwrap(),
        batch: BatchNo::FIRST,
        bits: 1,
        expires_at_ms,
        nonce: "ab".repeat(16),
    };
    let expired = Challenges::new(secret.jwt_secret.expose().as_bytes()).issue(&claims(1));
    let answer = join(&app, id, "cat", Some((&expired, pow::solve(&expired, 1).to_string()))).await;
    answer.assert_problem(403, "pow_invalid");
    assert!(answer.body["detail"].as_str().unwrap().contains("expired"));
    let forged = Challenges::new(b"a guess").issue(&claims(i64::MAX));
    let answer = join(&app, id, "cat", Some((&forged, pow::solve(&forged, 1).to_string()))).await;
    answer.assert_problem(403, "pow_invalid");
    assert!(answer.body["detail"].as_str().unwrap().contains("not one this server issued"));

    // A challenge asked for beforehand works the same; a sale without proof of work needs none.
    let asked = ask_challenge(&app, id, "dan").await;
    let bits = u8::try_from(asked["bits"].as_u64().unwrap()).unwrap();
    let c = asked["challenge"].as_str().unwrap();
    assert_eq!(join(&app, id, "dan", Some((c, pow::solve(c, bits).to_string()))).await.status, 201);
    let free =
        app.create_sale(SaleBuilder::one_off().opening_in(60).prequeue_secs(600).body()).await["id"].as_i64().unwrap();
    assert_eq!(join(&app, free, "ann", None).await.status, 201);
    assert_eq!(ask_challenge(&app, free, "ann").await["bits"], 0);

    // The batch's report counts the six failed proofs (wrong, foreign, malformed, reused,
    // expired, forged); the joins sent without one were asked for it, not failed.
    flashsale_server::jobs::activity::flush(&app.state).await;
    let report = app.admin(Method::GET, &format!("/admin/sales/{id}/batches/1/report"), None).await;
    assert_eq!(report.body["operator"]["pow_failed"], 6, "{:?}", report.body["operator"]);
    let public = app.send(Method::GET, &format!("/sales/{id}/batches/1/report"), &[], axum::body::Body::empty()).await;
    assert!(public.body.get("operator").is_none_or(serde_json::Value::is_null), "{:?}", public.body);
}

#[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
async fn an_adaptive_difficulty_rises_under_a_join_burst_and_falls_after_it(db: sqlx::PgPool) {
    let app = uncached(db).await;
    let body = SaleBuilder::one_off()
        .opening_in(60)
        .prequeue_secs(600)
        .set("join_pow_bits", json!(2))
        .set("join_pow_adaptive_rate", json!(10))
        .set("join_pow_max_bits", json!(12))
        .body();
    let id = app.create_sale(body).await["id"].as_i64().unwrap();
    open_now(&app, id).await;
    let window = std::time::Duration::from_millis(u64::try_from(flashsale_server::join_rate::WINDOW_MS).unwrap() + 100);
    assert_eq!(ask_challenge(&app, id, "probe").await["bits"], 2, "nobody joining: the least");

    // A burst of joins, far above 10 a second: once a window closes on it, challenges ask more.
    // (Whether it closes during the burst or at the probe after it depends on this machine's
    // speed: the highest difficulty asked is what rose.)
    let mut highest = 0;
    for i in 0..100 {
        let user = format!("b{i}");
        let asked = ask_challenge(&app, id, &user).await;
        let c = asked["challenge"].as_str().unwrap();
        let bits = u8::try_from(asked["bits"].as_u64().unwrap()).unwrap();
        highest = highest.max(bits);
        let joined = join(&app, id, &user, Some((c, pow::solve(c, bits).to_string()))).await;
        assert_eq!(joined.status, 201, "{joined:?}");
    }
    tokio::time::sleep(window).await;
    let probe = ask_challenge(&app, id, "probe").await["bits"].as_u64().unwrap();
    let risen = u64::from(highest).max(probe);
    assert!((3..=12).contains(&risen), "one bit per doubling above 10 joins/s: {risen}");

    // Quiet again: back to the least after a whole window without joins.
    tokio::time::sleep(window).await;
    ask_challenge(&app, id, "probe").await;
    tokio::time::sleep(window).await;
    assert_eq!(ask_challenge(&app, id, "probe").await["bits"], 2);
}

#[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
async fn proof_of_work_settings_are_validated_and_patched(db: sqlx::PgPool) {
    let app = TestApp::new(db).await;
    let bad = SaleBuilder::one_off().set("join_pow_bits", json!(29)).set("join_pow_adaptive_rate", json!(0)).body();
    let reply = app.admin(Method::POST, "/admin/sales", Some(bad)).await;
    reply.assert_problem(422, "validation_failed");
    let fields: Vec<&str> =
        reply.body["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
    assert!(fields.contains(&"join_pow_bits") && fields.contains(&"join_pow_adaptive_rate"), "{fields:?}");

    let sale = app.create_sale(SaleBuilder::one_off().body()).await;
    let id = sale["id"].as_i64().unwrap();
    let version = format!("\"{}\"", sale["version"]);
    let patch = json!({"join_pow_bits": 6, "join_pow_adaptive_rate": 500});
    let patched =
        app.admin_with(Method::PATCH, &format!("/admin/sales/{id}"), Some(patch), &[("if-match", &version)]).await;
    assert_eq!(patched.status, 200, "{patched:?}");
    assert_eq!(
        (&patched.body["join_pow_bits"], &patched.body["join_pow_adaptive_rate"], &patched.body["join_pow_max_bits"]),
        (&json!(6), &json!(500), &json!(20))
    );
}
