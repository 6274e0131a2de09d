//! Priority codes: operations generate single-use codes for a sale; a buyer who redeems one is
//! admitted at once, without queueing, through the same admission token and the same atomic
//! reservation as everyone else (per-user limit included).
//!
//! A redeemed code's admission carries a ticket number of its own,
//! [`Ticket::FIRST_PRIORITY`] + the code's id: far above any queue ticket, so it is never a place
//! in the line, and spent like any ticket (the reservation script's used-ticket set), so a code
//! buys at most one reservation. Redeeming is one PostgreSQL statement (the first buyer wins; the
//! same buyer asking again, in the same batch, gets the same admission back).

use chrono::TimeDelta;
use flashsale_core::{AdmissionStep, BatchNo, SaleId, Ticket, UserId};
use flashsale_queue::AdmissionClaims;
use flashsale_sales::codes::{self, PriorityCodeStats, Redeemed};
use flashsale_sales::{ValidationErrors, store};
use serde::Serialize;

use super::queue::sale_snapshot;
use super::sales::audit_details;
use super::{Actor, Error};
use crate::problem::ProblemCode;
use crate::state::AppState;

/// Codes generated for a sale, shown once.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct GeneratedCodes {
    pub sale_id: SaleId,
    /// The codes: give each to one buyer. Only their hashes are kept; they cannot be shown again.
    pub codes: Vec<String>,
}

/// Generates `count` codes for sale `id` (recorded in the audit trail, without the codes).
pub async fn generate(state: &AppState, actor: &Actor, id: SaleId, count: i64) -> Result<GeneratedCodes, Error> {
    let max = i64::from(codes::MAX_PER_REQUEST);
    if !(1..=max).contains(&count) {
        return Err(ValidationErrors::single("count", format!("must be between 1 and {max}, got {count}")).into());
    }
    let mut tx = state.db.begin().await?;
    let sale = store::get_sale(&mut tx, id, true).await?.ok_or_else(Error::sale_not_found)?;
    if sale.ended_at.is_some() {
        return Err(Error::refused(ProblemCode::SaleEnded, "the sale is closed"));
    }
    let plain: Vec<String> = (0..count).map(|_| codes::generate()).collect();
    let hashes: Vec<[u8; 32]> = plain.iter().filter_map(|c| codes::code_hash(c)).collect();
    codes::insert_codes(&mut tx, id, &hashes).await?;
    let details = audit_details(actor, serde_json::json!({ "count": count }));
    store::record_audit(&mut tx, &actor.name, "sale.priority_codes", Some(id), &details).await?;
    tx.commit().await?;
    metrics::counter!("priority_codes_generated_total").increment(u64::try_from(count).unwrap_or(0));
    Ok(GeneratedCodes { sale_id: id, codes: plain })
}

/// The sale's codes: generated, redeemed and the units they sold (all batches, or `batch`'s).
pub async fn stats(state: &AppState, id: SaleId, batch: Option<BatchNo>) -> Result<PriorityCodeStats, Error> {
    let mut conn = state.db.acquire().await?;
    let counted = codes::code_stats(&mut conn, id, batch).await?;
    drop(conn);
    let units_paid = state.orders.units_paid_through_codes(id, batch).await?;
    Ok(PriorityCodeStats { generated: counted.generated, redeemed: counted.redeemed, units_paid })
}

/// A redeemed code's admission: order with `admission_token` before `expires_at`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PriorityAdmission {
    pub sale_id: SaleId,
    pub batch_no: BatchNo,
    /// The single-use right to reserve, as the queue hands it out.
    pub admission_token: String,
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

/// Redeems `code` for `user` in sale `id`'s current batch: an admission at once.
pub async fn redeem(state: &AppState, user: &UserId, id: SaleId, code: &str) -> Result<PriorityAdmission, Error> {
    let outcome = |o: &'static str| metrics::counter!("priority_codes_redeemed_total", "outcome" => o).increment(1);
    let invalid = || Error::refused(ProblemCode::CodeInvalid, "no such priority code for this sale");
    let Some(hash) = codes::code_hash(code) else {
        outcome("invalid");
        return Err(invalid());
    };
    let snapshot = sale_snapshot(state, id).await?;
    let (sale, batch) = (&snapshot[0].0, &snapshot[0].1.batch);
    let now = state.clock.now();
    if batch.is_finished(now) {
        return Err(Error::refused(ProblemCode::Closed, "the batch is closed"));
    }
    if now < batch.opens_at {
        return Err(Error::NotOpen { opens_at: batch.opens_at });
    }
    let mut conn = state.db.acquire().await?;
    let id_of_code = match codes::redeem(&mut conn, id, batch.batch_no, &hash, user).await? {
        Redeemed::Theirs { id } => id,
        Redeemed::Spent => {
            outcome("spent");
            return Err(Error::refused(ProblemCode::CodeUsed, "this priority code was already used"));
        }
        Redeemed::Unknown => {
            outcome("invalid");
            return Err(invalid());
        }
    };
    drop(conn);
    outcome("admitted");
    let expires_at = now + TimeDelta::seconds(i64::from(sale.config.admission_ttl_secs));
    let ticket = Ticket::FIRST_PRIORITY.get() + u64::try_from(id_of_code).unwrap_or_default();
    let claims = AdmissionClaims {
        user: user.clone(),
        sale: id,
        batch: batch.batch_no,
        ticket: Ticket(ticket),
        // No admission step: the queue's ticker never admitted it.
        step: AdmissionStep(0),
        expires_at_ms: expires_at.timestamp_millis(),
    };
    Ok(PriorityAdmission {
        sale_id: id,
        batch_no: batch.batch_no,
        admission_token: state.tokens.sign_admission(&claims),
        expires_at,
    })
}
