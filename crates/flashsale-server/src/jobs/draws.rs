//! Once a second, records the pre-queue draw of every batch that has opened
//! ([`crate::service::draws::record_due`]): its sealed cohort goes to PostgreSQL and its seed is
//! published. A job of its own, not part of upkeep: hashing a cohort of a million takes about a
//! second, and upkeep's rebuilds must not wait behind it at the very moment a sale opens.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::service::draws;
use crate::state::AppState;

/// Runs the recorder every second until `shutdown` is cancelled.
pub async fn run(state: AppState, shutdown: CancellationToken) {
    super::every("draws", Duration::from_secs(1), shutdown, || async {
        if let Err(e) = draws::record_due(&state, state.clock.now()).await {
            tracing::warn!(error = %e, "recording pre-queue draws failed; retrying next second");
        }
    })
    .await;
}
