//! The pre-queue draw made checkable: recording each batch's sealed cohort in PostgreSQL at its
//! opening, and what is published about it (see [`flashsale_queue::draw`] for the protocol).
//!
//! Recording is a job ([`crate::jobs::draws`]) any instance may run: the cohort is read from
//! Redis once it is sealed, its leaves computed from the batch's entrant key, and one row
//! inserted (the first writer wins; the row never changes). From then on the seed is published:
//! the cohort can no longer change, so knowing the seed can steer nothing.

use chrono::{DateTime, Utc};
use flashsale_core::{BatchNo, SaleId, UserId};
use flashsale_queue::draw::{self, Leaf, PublishedDraw};
use flashsale_sales::{Batch, draws, store};

use super::Error;
use crate::problem::ProblemCode;
use crate::state::AppState;

/// Cohorts above this many buyers are hashed on a blocking thread (a million take about a
/// second of CPU), not on the runtime's.
const BLOCKING_FROM: usize = 10_000;

/// Records the draw of every batch whose opening has passed and whose cohort is sealed in Redis.
/// Returns the batches this call recorded.
pub async fn record_due(state: &AppState, now: DateTime<Utc>) -> Result<usize, Error> {
    let mut conn = state.db.acquire().await?;
    let due = draws::batches_to_draw(&mut conn, now).await?;
    drop(conn);
    let mut recorded = 0;
    for batch in due {
        if record(state, batch, now).await? {
            recorded += 1;
        }
    }
    Ok(recorded)
}

/// Records one batch's cohort, if Redis has sealed it (or the batch ended before anyone sealed
/// it: its pre-queue as it stands). Returns whether this call wrote the record.
async fn record(state: &AppState, batch: Batch, now: DateTime<Utc>) -> Result<bool, Error> {
    let (sale, no) = (batch.sale_id, batch.batch_no);
    let Some((sealed, members)) = state.queue.cohort(sale, no, batch.is_finished(now)).await? else {
        // Not sealed yet: the admission ticker seals it within 100 ms of the opening.
        return Ok(false);
    };
    if sealed.is_some_and(|p| usize::try_from(p).ok() != Some(members.len())) {
        // Redis lost part of the pre-queue (ARCHITECTURE.md, "known limit"): what is left is
        // recorded, and said.
        tracing::error!(sale.id = %sale, batch.no = %no, ?sealed, found = members.len(),
            "the sealed pre-queue is not whole in Redis; recording what is left");
        metrics::counter!("draw_cohort_incomplete_total").increment(1);
    }
    let arrivals = state.queue.arrivals(sale, no).await?;
    let large = members.len() >= BLOCKING_FROM;
    let compute = move || seal(&batch, members, &arrivals);
    let sealed = if large {
        tokio::task::spawn_blocking(compute).await.map_err(|e| Error::Internal(e.into()))?
    } else {
        compute()
    };
    let Sealed { leaves, root, in_order, rho } = sealed?;
    if !in_order {
        // Every rank is computed by the same function at the join: only a bug gets here.
        tracing::error!(sale.id = %sale, batch.no = %no, "the pre-queue in Redis is not in rank order");
        metrics::counter!("draw_out_of_order_total").increment(1);
    }
    let bytes: Vec<u8> = leaves.iter().flat_map(|leaf| leaf.0).collect();
    let mut conn = state.db.acquire().await?;
    let written = draws::record_draw(&mut conn, sale, no, &root, &bytes, rho).await?;
    if written {
        tracing::info!(sale.id = %sale, batch.no = %no, cohort = leaves.len(), "pre-queue draw recorded; seed published");
        metrics::counter!("draws_recorded_total").increment(1);
    }
    Ok(written)
}

/// A cohort as recorded.
struct Sealed {
    /// Leaves in drawn order.
    leaves: Vec<Leaf>,
    root: [u8; 32],
    /// Whether the drawn order ascends by rank (it must).
    in_order: bool,
    /// Arrival against place.
    rho: Option<f64>,
}

/// Hashes the cohort (`members` in drawn order) into its record.
fn seal(batch: &Batch, members: Vec<String>, arrivals: &[String]) -> Result<Sealed, Error> {
    let rho = arrival_rho(&members, arrivals);
    let users = members
        .into_iter()
        .map(UserId::try_from)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Internal(anyhow::anyhow!("a pre-queue member is not a user id: {e}")))?;
    let leaves: Vec<Leaf> =
        users.iter().map(|u| draw::entrant(&batch.entrant_key, batch.sale_id, batch.batch_no, u)).collect();
    let ranks: Vec<u64> = leaves.iter().map(|leaf| draw::rank(&batch.prequeue_seed, leaf)).collect();
    let in_order = ranks.windows(2).all(|pair| pair[0] <= pair[1]);
    let root = draw::cohort_root(&leaves);
    Ok(Sealed { leaves, root, in_order, rho })
}

/// Spearman's rho between when the cohort's buyers joined (`arrivals`, earliest first) and the
/// place they were drawn to (`drawn`, place 1 first), over the buyers found in both; `None` below
/// three. Near 0 for a fair draw: arriving early bought nothing.
fn arrival_rho(drawn: &[String], arrivals: &[String]) -> Option<f64> {
    use flashsale_core::stats::{ranks, spearman};
    let arrived: std::collections::HashMap<&str, u64> =
        arrivals.iter().zip(0..).map(|(user, i)| (user.as_str(), i)).collect();
    // Both orders restricted to the buyers present in both, each ranked among them.
    let (arrival, place): (Vec<u64>, Vec<u64>) =
        drawn.iter().zip(0..).filter_map(|(user, place)| Some((*arrived.get(user.as_str())?, place))).unzip();
    (arrival.len() >= 3).then(|| spearman(&ranks(&arrival), &ranks(&place)))
}

/// What is public about a batch's draw right now: the seed commitment always, the cohort
/// commitment once recorded, the seed once recorded or once the batch was closed before its
/// opening (nobody was ever drawn).
pub async fn published(state: &AppState, id: SaleId, batch_no: BatchNo) -> Result<PublishedDraw, Error> {
    let mut conn = state.db.acquire().await?;
    let batch = store::get_batch(&mut conn, id, batch_no).await?.ok_or_else(no_batch)?;
    let record = draws::draw_record(&mut conn, id, batch_no).await?;
    drop(conn);
    let revealed = record.is_some() || batch.closed_at.is_some_and(|closed| closed < batch.opens_at);
    Ok(PublishedDraw {
        sale_id: id,
        batch_no,
        draw_commitment: draw::seed_commitment(&batch.prequeue_seed, id, batch_no),
        cohort_commitment: record.as_ref().map(|r| flashsale_core::hex(&r.cohort_root)),
        cohort_size: record.as_ref().map(|r| r.cohort_size),
        sealed_at: record.as_ref().map(|r| r.sealed_at),
        prequeue_seed: revealed.then(|| flashsale_core::hex(batch.prequeue_seed.as_bytes())),
        rank: draw::RANK_RULE.to_owned(),
    })
}

/// The recorded cohort's leaves in drawn order (32 bytes each), or `not_drawn` before the
/// opening's record.
pub async fn entrants(state: &AppState, id: SaleId, batch_no: BatchNo) -> Result<Vec<u8>, Error> {
    let mut conn = state.db.acquire().await?;
    if let Some(entrants) = draws::drawn_entrants(&mut conn, id, batch_no).await? {
        return Ok(entrants);
    }
    store::get_batch(&mut conn, id, batch_no).await?.ok_or_else(no_batch)?;
    Err(Error::refused(ProblemCode::NotDrawn, "the pre-queue is drawn and recorded at the batch's opening"))
}

fn no_batch() -> Error {
    Error::NotFound("no such batch".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn rho_is_one_when_the_draw_follows_arrival_and_minus_one_when_it_reverses_it() {
        let arrivals = users(&["a", "b", "c", "d"]);
        assert_eq!(arrival_rho(&users(&["a", "b", "c", "d"]), &arrivals), Some(1.0));
        assert_eq!(arrival_rho(&users(&["d", "c", "b", "a"]), &arrivals), Some(-1.0));
        // Buyers without an arrival (joined before it was recorded) are left out.
        assert_eq!(arrival_rho(&users(&["x", "a", "b", "c"]), &arrivals), Some(1.0));
        assert_eq!(arrival_rho(&users(&["a", "b"]), &arrivals), None);
    }
}
