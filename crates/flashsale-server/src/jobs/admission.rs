//! The admission ticker: every [`ADMISSION_TICK`], one admission step for every open batch
//! ([`crate::service::queue::admit_all`]). Every instance runs it; the token bucket in Redis
//! keeps the global rate.

use tokio_util::sync::CancellationToken;

use crate::service::queue::{ADMISSION_TICK, admit_all};
use crate::state::AppState;

/// Runs the admission ticker step for every open batch every [`ADMISSION_TICK`], until
/// `shutdown`. Every instance runs it; the token bucket in Redis keeps the global rate.
pub async fn run(state: AppState, shutdown: CancellationToken) {
    state.ticker.started(state.clock.now_ms());
    super::every("admission", ADMISSION_TICK, shutdown, || async {
        if let Err(e) = admit_all(&state, state.clock.now()).await {
            tracing::warn!(error = %e, "admission tick failed; retrying");
        }
    })
    .await;
}
