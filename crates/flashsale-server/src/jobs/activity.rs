//! Once a second, adds this instance's per-second batch counts ([`crate::activity`]) to
//! PostgreSQL's `batch_activity`, where the sale report reads them. A failed write gives the
//! counts back for the next second; the last pass at shutdown writes what is left.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::state::AppState;

/// Flushes every second until `shutdown` is cancelled, then once more.
pub async fn run(state: AppState, shutdown: CancellationToken) {
    super::every("activity", Duration::from_secs(1), shutdown, || flush(&state)).await;
    flush(&state).await;
}

/// Writes what was counted since the last flush.
pub async fn flush(state: &AppState) {
    let rows = state.activity.take();
    if rows.is_empty() {
        return;
    }
    if let Err(e) = crate::service::report::record_activity(state, &rows).await {
        tracing::warn!(error = %e, rows = rows.len(), "batch activity could not be written; keeping it for the next second");
        state.activity.put_back(rows);
    }
}
