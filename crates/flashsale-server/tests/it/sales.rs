//! Sale batches through the HTTP API: schedules, concurrent edits, pause/resume/close, stock
//! changes against units buyers hold, and what shoppers see.

use crate::common::{TestApp, hold_units, one_off_sale, weekly_sale};
use axum::http::Method;
use chrono::{DateTime, Datelike, TimeZone, Timelike, Utc};
use flashsale_testkit::SaleBuilder;
use serde_json::json;

fn instant(value: &serde_json::Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(value.as_str().unwrap()).unwrap().with_timezone(&Utc)
}

#[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
async fn a_weekly_tuesday_noon_sale_opens_next_tuesday_at_noon_shanghai_time(db: sqlx::PgPool) {
    let app = TestApp::new(db).await;
    let before = Utc::now();
    let sale = app.create_sale(weekly_sale()).await;
    let batch = &sale["current_batch"];
    let opens_at = instant(&batch["opens_at"]);
    // Independently of the schedule code: Shanghai is UTC+8 all year, so the opening is a Tuesday
    // at 04:00 UTC, in the future, within a week.
    let local = opens_at.with_timezone(&chrono_tz::Asia::Shanghai);
    assert_eq!((local.weekday(), local.hour(), local.minute(), local.second()), (chrono::Weekday::Tue, 12, 0, 0));
    assert!(opens_at > before && opens_at <= before + chrono::TimeDelta::days(7), "{opens_at}");
    assert_eq!(instant(&batch["prequeue_opens_at"]), opens_at - chrono::TimeDelta::seconds(600));
    assert_eq!(instant(&batch["closes_at"]), opens_at + chrono::TimeDelta::days(7) - chrono::TimeDelta::seconds(600));
    assert_eq!(batch["batch_no"], 1);
    assert_eq!(batch["status"], "scheduled");
    assert_eq!(
        batch["stats"],
        json!({"stock": 100, "available": 100, "allotted": 0, "reserved": 0, "sold": 0, "queued": 0, "admitted": 0, "reach": null, "reopens": 0})
    );
    assert_eq!(
        sale["schedule"],
        json!({"kind": "weekly", "weekday": "tue", "time": "12:00", "timezone": "Asia/Shanghai"})
    );

    let listed = app.get("/sales").await;
    let entry = &listed.body["sales"][0];
    assert_eq!(entry["id"], sale["id"]);
    assert_eq!(entry["opens_at"], batch["opens_at"]);
    assert_eq!(entry["units_left"], 100);
    assert!(instant(&listed.body["server_time"]) >= before);
}

#[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
async fn a_weekly_sale_in_a_daylight_saving_zone_opens_at_local_noon(db: sqlx::PgPool) {
    let app = TestApp::new(db).await;
    let weekly = json!({"weekday": "sun", "time": "02:30", "timezone": "America/New_York"});
    let sale = app.create_sale(SaleBuilder::weekly().set("weekly", weekly).body()).await;
    let opens_at = instant(&sale["current_batch"]["opens_at"]);
    let local = opens_at.with_timezone(&chrono_tz::America::New_York);
    assert_eq!(local.weekday(), chrono::Weekday::Sun);
    // 02:30 exists on every Sunday but the spring-forward one, which opens at 03:30 instead.
    let resolved = chrono_tz::America::New_York.from_local_datetime(&local.date_naive().and_hms_opt(2, 30, 0).unwrap());
    if resolved.earliest().is_some() {
        assert_eq!((local.hour(), local.minute()), (2, 30));
    } else {
        assert_eq!((local.hour(), local.minute()), (3, 30));
    }
}

#[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
async fn of_concurrent_patches_with_the_same_version_exactly_one_wins(db: sqlx::PgPool) {
    let app = TestApp::new(db).await;
    let id = app.create_sale(weekly_sale()).await["id"].as_i64().unwrap();
    let uri = format!("/admin/sales/{id}");
    let patches =
        (0..20).map(|i| {
            let (app, uri) = (&app, &uri);
            async move {
                app.admin_with(Method::PATCH, uri, Some(json!({"stock": 200 + i})), &[("if-match", "\"1\"")]).await
            }
        });
    let replies = futures::future::join_all(patches).await;
    let winners: Vec<_> = replies.iter().filter(|r| r.status == 200).collect();
    assert_eq!(winners.len(), 1, "{replies:?}");
    for loser in replies.iter().filter(|r| r.status != 200) {
        loser.assert_problem(412, "precondition_failed");
        assert_eq!(loser.body["current_version"], 2);
    }
    let after = app.admin(Method::GET, &uri, None).await;
    assert_eq!(after.headers["etag"], "\"2\"");
    assert_eq!(after.body["stock"], winners[0].body["stock"]);
    assert_eq!(after.body["current_batch"]["stats"]["stock"], winners[0].body["stock"]);
    assert_eq!(app.count("admin_audit").await, 2);
}

#[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
async fn concurrent_patches_without_a_version_are_serialised_and_each_audited(db: sqlx::PgPool) {
    let app = TestApp::new(db).await;
    let id = app.create_sale(weekly_sale()).await["id"].as_i64().unwrap();
    let uri = format!("/admin/sales/{id}");
    let patches = (0..20).map(|i| {
        let (app, uri) = (&app, &uri);
        async move { app.admin(Method::PATCH, uri, Some(json!({"admission_rate": 100 + i}))).await }
    });
    for reply in futures::future::join_all(patches).await {
        assert_eq!(reply.status, 200, "{reply:?}");
    }
    let after = app.admin(Method::GET, &uri, None).await;
    assert_eq!(after.body["version"], 21);
    assert_eq!(app.count("admin_audit").await, 21);
}

#[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
async fn stock_cannot_drop_below_what_buyers_hold(db: sqlx::PgPool) {
    let app = TestApp::new(db).await;
    let id = app.create_sale(weekly_sale()).await["id"].as_i64().unwrap();
    hold_units(&app, id, 60).await;
    let uri = format!("/admin/sales/{id}");
    let refused = app.admin(Method::PATCH, &uri, Some(json!({"stock": 59}))).await;
    refused.assert_problem(409, "stock_below_committed");
    let unchanged = app.admin(Method::GET, &uri, None).await;
    assert_eq!((unchanged.body["version"].as_i64(), unchanged.body["stock"].as_i64()), (Some(1), Some(100)));
    assert_eq!(unchanged.body["current_batch"]["stats"]["available"], 40);

    let lowered = app.admin(Method::PATCH, &uri, Some(json!({"stock": 60}))).await;
    assert_eq!(lowered.status, 200, "{lowered:?}");
    assert_eq!(
        lowered.body["current_batch"]["stats"],
        json!({"stock": 60, "available": 0, "allotted": 0, "reserved": 60, "sold": 0, "queued": 0, "admitted": 0, "reach": null, "reopens": 0})
    );
    let raised = app.admin(Method::PATCH, &uri, Some(json!({"stock": 500, "per_user_limit": 5}))).await;
    assert_eq!(raised.body["current_batch"]["stats"]["available"], 440);
    assert_eq!(raised.body["per_user_limit"], 5);
    assert_eq!(app.get(&format!("/sales/{id}")).await.body["units_left"], 440);
}

#[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
async fn pause_resume_and_close_move_the_batch_and_closing_is_final(db: sqlx::PgPool) {
    let app = TestApp::new(db).await;
    let id = app.create_sale(one_off_sale()).await["id"].as_i64().unwrap();
    let action = |name: &str| format!("/admin/sales/{id}/{name}");
    let public = format!("/sales/{id}");

    let paused = app.admin(Method::POST, &action("pause"), None).await;
    assert_eq!(paused.body["current_batch"]["status"], "paused");
    assert_eq!(paused.body["current_batch"]["paused"], true);
    assert_eq!(app.get(&public).await.body["status"], "paused");
    let ledger =
        app.state.inventory.snapshot(id.try_into().unwrap(), flashsale_core::BatchNo::FIRST).await.unwrap().unwrap();
    assert!(ledger.paused);

    let resumed = app.admin(Method::POST, &action("resume"), None).await;
    assert_eq!(resumed.body["current_batch"]["status"], "scheduled");
    assert_eq!(resumed.body["version"], 3);

    let closed = app.admin(Method::POST, &action("close"), None).await;
    assert_eq!(closed.body["current_batch"]["status"], "closed");
    assert!(closed.body["ended_at"].is_string());
    let ledger =
        app.state.inventory.snapshot(id.try_into().unwrap(), flashsale_core::BatchNo::FIRST).await.unwrap().unwrap();
    assert!(ledger.closed);
    assert_eq!(app.get(&public).await.body["status"], "closed");
    assert_eq!(app.get("/sales").await.body["sales"], json!([]));

    app.admin(Method::POST, &action("resume"), None).await.assert_problem(409, "sale_ended");
    app.admin(Method::POST, &action("pause"), None).await.assert_problem(409, "sale_ended");
    app.admin(Method::PATCH, &format!("/admin/sales/{id}"), Some(json!({"stock": 50})))
        .await
        .assert_problem(409, "sale_ended");
    let again = app.admin(Method::POST, &action("close"), None).await;
    assert_eq!((again.status.as_u16(), again.body["version"].as_i64()), (200, Some(4)));
    let listed = app.admin(Method::GET, "/admin/sales", None).await;
    assert_eq!(listed.body["sales"], json!([]));
    let all = app.admin(Method::GET, "/admin/sales?include_ended=true", None).await;
    assert_eq!(all.body["sales"][0]["id"], id);
}

#[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
async fn a_stale_if_match_is_refused_for_status_changes_too(db: sqlx::PgPool) {
    let app = TestApp::new(db).await;
    let id = app.create_sale(weekly_sale()).await["id"].as_i64().unwrap();
    app.admin(Method::POST, &format!("/admin/sales/{id}/pause"), None).await;
    let stale =
        app.admin_with(Method::POST, &format!("/admin/sales/{id}/resume"), None, &[("if-match", "\"1\"")]).await;
    stale.assert_problem(412, "precondition_failed");
    let fresh =
        app.admin_with(Method::POST, &format!("/admin/sales/{id}/resume"), None, &[("if-match", "\"2\"")]).await;
    assert_eq!(fresh.status, 200);
}

#[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
async fn the_status_follows_the_clock_from_prequeue_to_open(db: sqlx::PgPool) {
    let app = TestApp::new(db).await;
    let id =
        app.create_sale(SaleBuilder::one_off().opening_in(120).prequeue_secs(600).body()).await["id"].as_i64().unwrap();
    assert_eq!(app.get(&format!("/sales/{id}")).await.body["status"], "prequeue");
}

#[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
async fn public_views_are_cached_until_an_admin_change_on_this_instance(db: sqlx::PgPool) {
    let app = TestApp::with_cache_ttl(db, std::time::Duration::from_secs(3600)).await;
    let id = app.create_sale(weekly_sale()).await["id"].as_i64().unwrap();
    let public = format!("/sales/{id}");
    assert_eq!(app.get(&public).await.body["units_left"], 100);
    // A change the cache cannot see (straight into Redis) is served stale within the TTL...
    hold_units(&app, id, 30).await;
    let cached = app.get(&public).await.body;
    assert_eq!(cached["units_left"], 100);
    // ...while the status and clock are still computed per request.
    assert_ne!(cached["server_time"], app.get(&public).await.body["server_time"]);
    // An admin change invalidates the sale and the list at once.
    app.admin(Method::PATCH, &format!("/admin/sales/{id}"), Some(json!({"stock": 200}))).await;
    assert_eq!(app.get(&public).await.body["units_left"], 170);
    assert_eq!(app.get("/sales").await.body["sales"][0]["units_left"], 170);
}

#[sqlx::test(migrator = "flashsale_server::startup::MIGRATOR")]
async fn a_zero_ttl_serves_every_public_read_fresh(db: sqlx::PgPool) {
    let app = TestApp::with_cache_ttl(db, std::time::Duration::ZERO).await;
    let id = app.create_sale(weekly_sale()).await["id"].as_i64().unwrap();
    assert_eq!(app.get(&format!("/sales/{id}")).await.body["units_left"], 100);
    hold_units(&app, id, 30).await;
    assert_eq!(app.get(&format!("/sales/{id}")).await.body["units_left"], 70);
}
