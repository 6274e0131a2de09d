//! The sale report of a batch ([`crate::service::report`]): for operations as JSON or, asked for
//! `text/html`, as one self-contained page (inline styles and SVG charts, no script, nothing
//! fetched: it can be saved, mailed and opened offline); for the public as JSON without the
//! operator's figures.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use flashsale_core::{BatchNo, SaleId};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Admin;
use super::problem::{ApiError, Json, Path};
use super::web::escape;
use crate::problem::Problem;
use crate::service::report::{self, SaleReport};
use crate::state::AppState;

/// The report routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(public_report)).routes(routes!(admin_report))
}

/// The public part of a batch's sale report: entrants, the draw, admission second by second, the
/// sell-out and how soon the waiting crowd knew, orders by outcome, the fairness figures. Nothing
/// in it names a buyer. Computed from PostgreSQL on each request, so it may be cached for five
/// seconds (a CDN in front answers the crowd that reloads it).
#[utoipa::path(
    get, path = "/sales/{id}/batches/{batch_no}/report", tag = "shoppers",
    params(("id" = i64, Path, description = "Sale id"), ("batch_no" = i64, Path, description = "Batch number")),
    responses(
        (status = 200, body = SaleReport, description = "Cache-Control: public, max-age=5"),
        (status = 404, description = "not_found", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn public_report(
    State(state): State<AppState>,
    Path((id, batch_no)): Path<(SaleId, BatchNo)>,
) -> Result<Response, ApiError> {
    let report = report::report(&state, id, batch_no, false).await?;
    let cache = [(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=5"))];
    Ok((cache, Json(report)).into_response())
}

/// A batch's whole sale report, with money and refusals: JSON, or with `Accept: text/html` a
/// self-contained page with charts.
#[utoipa::path(
    get, path = "/admin/sales/{id}/batches/{batch_no}/report", tag = "admin",
    params(("id" = i64, Path, description = "Sale id"), ("batch_no" = i64, Path, description = "Batch number")),
    security(("admin_token" = [])),
    responses(
        (status = 200, body = SaleReport, description = "JSON; with Accept: text/html, the report as one page"),
        (status = 401, description = "unauthorized", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "not_found", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn admin_report(
    State(state): State<AppState>,
    _admin: Admin,
    Path((id, batch_no)): Path<(SaleId, BatchNo)>,
    request: HeaderMap,
) -> Result<Response, ApiError> {
    let report = report::report(&state, id, batch_no, true).await?;
    if !super::accepts(&request, "text/html") {
        return Ok(Json(report).into_response());
    }
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8")),
        // Inline styles and SVG only: no script may run in it, nothing may be fetched.
        (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'")),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
    ];
    Ok((headers, render(&report)).into_response())
}

fn opt<T: std::fmt::Display>(value: Option<T>) -> String {
    value.map_or_else(|| "—".to_owned(), |v| escape(&v.to_string()))
}

/// One line chart of `series` (label, colour, values per timeline second) as inline SVG.
fn chart(title: &str, seconds: usize, series: &[(&str, &str, Vec<u64>)]) -> String {
    const W: f64 = 720.0;
    const H: f64 = 160.0;
    let max = series.iter().flat_map(|(_, _, v)| v.iter().copied()).max().unwrap_or(0).max(1) as f64;
    let x = |i: usize| if seconds <= 1 { 0.0 } else { i as f64 * W / (seconds - 1) as f64 };
    let mut svg = format!(
        "<figure><figcaption>{} (max {max})</figcaption><svg viewBox=\"0 0 {W} {H}\" width=\"100%\" role=\"img\" \
         aria-label=\"{}\"><rect width=\"{W}\" height=\"{H}\" fill=\"#fafafa\"/>",
        escape(title),
        escape(title)
    );
    for (label, colour, values) in series {
        let points: Vec<String> = values
            .iter()
            .enumerate()
            .map(|(i, v)| format!("{:.1},{:.1}", x(i), H - *v as f64 * (H - 4.0) / max))
            .collect();
        svg.push_str(&format!(
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\" points=\"{}\"><title>{}</title></polyline>",
            points.join(" "),
            escape(label)
        ));
    }
    svg.push_str("</svg><p class=\"legend\">");
    for (label, colour, _) in series {
        svg.push_str(&format!("<span style=\"color:{colour}\">■</span> {} ", escape(label)));
    }
    svg.push_str("</p></figure>");
    svg
}

fn row(name: &str, value: String) -> String {
    format!("<tr><th scope=\"row\">{}</th><td>{value}</td></tr>", escape(name))
}

/// The report as one self-contained HTML page.
fn render(r: &SaleReport) -> String {
    let n = r.timeline.len();
    let series =
        |f: fn(&flashsale_sales::activity::SecondCounts) -> u64| r.timeline.iter().map(|s| f(&s.counts)).collect();
    let mut facts = String::new();
    facts.push_str(&row("Stock", r.stock.to_string()));
    facts.push_str(&row("Opens at", escape(&r.opens_at.to_rfc3339())));
    facts.push_str(&row("Finished", r.finished.to_string()));
    facts.push_str(&row("Pre-queue cohort", opt(r.entrants.prequeue_cohort)));
    facts.push_str(&row("Later joiners", opt(r.entrants.later_joiners)));
    facts.push_str(&row("Queued", opt(r.entrants.queued)));
    facts.push_str(&row(
        "Admitted / lapsed / re-offered",
        format!("{} / {} / {}", r.admission.admitted, r.admission.lapsed, r.admission.reoffered),
    ));
    facts.push_str(&row("Sold out at", opt(r.sell_out.sold_out_at.map(|t| t.to_rfc3339()))));
    facts.push_str(&row("Seconds after opening", opt(r.sell_out.secs_after_opening)));
    facts.push_str(&row("Buyers told their final answer", r.sell_out.told_final.to_string()));
    facts.push_str(&row("All told, seconds after sell-out", opt(r.sell_out.all_told_secs_after_sell_out)));
    facts.push_str(&row("Admissions out of queue order", r.fairness.admissions_out_of_order.to_string()));
    facts.push_str(&row(
        "Spearman ρ, arrival vs drawn place",
        opt(r.fairness.arrival_rho.map(|rho| format!("{rho:.4}"))),
    ));
    if let Some(op) = &r.operator {
        facts.push_str(&row(
            "Revenue",
            format!("{} {}", escape(&op.revenue_cents.to_string()), escape(op.currency.as_str())),
        ));
        facts.push_str(&row("Owed back", escape(&op.refund_due_cents.to_string())));
        facts.push_str(&row("Joins refused", op.joins_refused.to_string()));
        facts.push_str(&row("Rate-limited requests", op.rate_limited.to_string()));
        facts.push_str(&row("Proofs of work failed", op.pow_failed.to_string()));
        facts.push_str(&row(
            "Priority codes redeemed / units they sold",
            format!("{} / {}", op.priority_codes.redeemed, op.priority_codes.units_paid),
        ));
    }
    let orders: String = r
        .orders
        .iter()
        .map(|o| {
            format!("<tr><th scope=\"row\">{}</th><td>{}</td><td>{}</td></tr>", escape(o.status), o.orders, o.units)
        })
        .collect();
    let draw = [
        ("Seed commitment", Some(r.draw.draw_commitment.clone())),
        ("Cohort commitment", r.draw.cohort_commitment.clone()),
        ("Cohort size", r.draw.cohort_size.map(|s| s.to_string())),
        ("Seed", r.draw.prequeue_seed.clone()),
    ]
    .iter()
    .map(|(name, value)| row(name, format!("<code>{}</code>", opt(value.as_ref()))))
    .collect::<String>();
    let charts = [
        chart(
            "Admission per second",
            n,
            &[
                ("admitted", "#1a7f37", series(|c| c.admitted)),
                ("lapsed", "#cf222e", series(|c| c.lapsed)),
                ("re-offered", "#9a6700", series(|c| c.reoffered)),
            ],
        ),
        chart(
            "Queue per second",
            n,
            &[
                ("joins", "#0969da", series(|c| c.joins)),
                ("refused", "#8250df", series(|c| c.joins_refused)),
                ("told final", "#57606a", series(|c| c.told_final)),
            ],
        ),
    ]
    .concat();
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" \
         content=\"width=device-width, initial-scale=1\"><title>Report: {name}, batch {batch}</title><style>\
         body{{font:15px/1.45 system-ui,sans-serif;max-width:760px;margin:2rem auto;padding:0 1rem;color:#1f2328}}\
         table{{border-collapse:collapse;width:100%;margin:0 0 1.5rem}}th,td{{text-align:left;padding:.25rem .5rem;\
         border-bottom:1px solid #d0d7de;font-variant-numeric:tabular-nums}}code{{overflow-wrap:anywhere}}\
         figure{{margin:0 0 1.5rem}}.legend{{margin:.25rem 0 0;font-size:.9rem}}</style></head><body>\
         <h1>{name}: batch {batch}</h1><p>Sale {sale}. Generated from the server's records; \
         <code>flashsale-verify</code> checks the draw below.</p>\
         <h2>Figures</h2><table>{facts}</table><h2>Over time</h2>{charts}\
         <h2>Orders</h2><table><tr><th>status</th><th>orders</th><th>units</th></tr>{orders}</table>\
         <h2>The draw</h2><table>{draw}</table></body></html>",
        name = escape(&r.sale_name),
        batch = r.batch_no,
        sale = r.sale_id,
    )
}
