//! The recorded pre-queue draws (`batch_draws`): each batch's sealed cohort, written once at its
//! opening and never changed, so the draw can be checked long after Redis has let the batch go.
//!
//! The leaves and the root are computed by the queue crate's `draw` module; this module only
//! stores and reads bytes.

use chrono::{DateTime, Utc};
use flashsale_core::{BatchNo, SaleId};
use sqlx::PgConnection;

use crate::batch::Batch;
use crate::error::SalesError;
use crate::store::{BATCH_COLUMNS, BatchRow};

/// What is public about a recorded draw, without its entrants.
#[derive(Debug, Clone, PartialEq)]
pub struct DrawRecord {
    /// Buyers in the sealed cohort.
    pub cohort_size: u64,
    /// The Merkle root over their leaves (the cohort commitment).
    pub cohort_root: Vec<u8>,
    pub sealed_at: DateTime<Utc>,
    /// Spearman's rho of arrival against drawn place over the cohort (`None` below three).
    pub arrival_rho: Option<f64>,
}

/// Batches whose opening has passed and whose draw is not recorded yet (not retired: a retired
/// batch's Redis keys are gone), oldest first.
pub async fn batches_to_draw(conn: &mut PgConnection, now: DateTime<Utc>) -> Result<Vec<Batch>, SalesError> {
    let rows: Vec<BatchRow> = sqlx::query_as(&format!(
        "SELECT {BATCH_COLUMNS} FROM sale_batches b \
         WHERE retired_at IS NULL AND opens_at <= $1 \
           AND NOT EXISTS (SELECT 1 FROM batch_draws d WHERE d.sale_id = b.sale_id AND d.batch_no = b.batch_no) \
         ORDER BY opens_at LIMIT 20"
    ))
    .bind(now)
    .fetch_all(conn)
    .await?;
    rows.into_iter().map(Batch::try_from).collect()
}

/// Records a batch's sealed cohort: `entrants` is its leaves in drawn order, 32 bytes each.
/// Returns whether this call wrote it (another instance may have first; the row never changes).
pub async fn record_draw(
    conn: &mut PgConnection,
    sale: SaleId,
    batch: BatchNo,
    cohort_root: &[u8; 32],
    entrants: &[u8],
    arrival_rho: Option<f64>,
) -> Result<bool, SalesError> {
    debug_assert_eq!(entrants.len() % 32, 0, "leaves are 32 bytes each");
    let size = i64::try_from(entrants.len() / 32).unwrap_or(i64::MAX);
    let done = sqlx::query(
        "INSERT INTO batch_draws (sale_id, batch_no, cohort_size, cohort_root, entrants, arrival_rho) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
    )
    .bind(sale.get())
    .bind(batch.get())
    .bind(size)
    .bind(&cohort_root[..])
    .bind(entrants)
    .bind(arrival_rho)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The batch's recorded draw, if its cohort is recorded.
pub async fn draw_record(
    conn: &mut PgConnection,
    sale: SaleId,
    batch: BatchNo,
) -> Result<Option<DrawRecord>, SalesError> {
    type Row = (i64, Vec<u8>, DateTime<Utc>, Option<f64>);
    let row: Option<Row> = sqlx::query_as(
        "SELECT cohort_size, cohort_root, sealed_at, arrival_rho FROM batch_draws WHERE sale_id = $1 AND batch_no = $2",
    )
    .bind(sale.get())
    .bind(batch.get())
    .fetch_optional(conn)
    .await?;
    row.map(|(size, cohort_root, sealed_at, arrival_rho)| {
        let cohort_size = u64::try_from(size)
            .map_err(|_| SalesError::CorruptRow { sale_id: sale.get(), reason: format!("cohort size {size}") })?;
        Ok(DrawRecord { cohort_size, cohort_root, sealed_at, arrival_rho })
    })
    .transpose()
}

/// The batch's recorded entrants (leaves in drawn order, 32 bytes each), if recorded.
pub async fn drawn_entrants(
    conn: &mut PgConnection,
    sale: SaleId,
    batch: BatchNo,
) -> Result<Option<Vec<u8>>, SalesError> {
    Ok(sqlx::query_scalar("SELECT entrants FROM batch_draws WHERE sale_id = $1 AND batch_no = $2")
        .bind(sale.get())
        .bind(batch.get())
        .fetch_optional(conn)
        .await?)
}
