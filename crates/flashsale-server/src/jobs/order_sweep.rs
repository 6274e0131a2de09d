//! The order sweep: every second, unpaid orders past their deadline are expired (their units
//! go back) and settlements that requests left owed to Redis are applied
//! ([`crate::service::orders::sweep`]).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::service::orders;
use crate::state::AppState;

/// Runs the order sweep (expiry of unpaid orders, settlements left behind) every second until
/// `shutdown` is cancelled.
pub async fn run(state: AppState, shutdown: CancellationToken) {
    super::every("order_sweep", Duration::from_secs(1), shutdown, || async {
        if let Err(e) = orders::sweep(&state).await {
            tracing::warn!(error = %e, "order sweep failed; retrying next second");
        }
    })
    .await;
}
