//! The database probe: every [`PROBE_EVERY`], whether PostgreSQL answers a connection of the
//! probe's own, recorded in [`crate::health::DatabaseHealth`].

use tokio_util::sync::CancellationToken;

use super::{Ticks, span};
use crate::health::{PROBE_EVERY, Probe};
use crate::state::AppState;

/// Probes PostgreSQL every [`PROBE_EVERY`] until `shutdown`, recording what it finds in
/// `state.database`.
pub async fn run(state: AppState, shutdown: CancellationToken) {
    use tracing::Instrument;
    let mut probe = Probe::new((*state.db.connect_options()).clone());
    let mut ticks = Ticks::new(PROBE_EVERY, shutdown);
    while ticks.next().await {
        let Some(answered) = probe.check().instrument(span("database_probe")).await else {
            continue;
        };
        if state.database.record(answered, state.clock.now_ms()) {
            if answered {
                tracing::info!("PostgreSQL answers again: orders and admission resume");
            } else {
                tracing::error!("PostgreSQL does not answer: orders fail fast and admission is held");
            }
        }
        metrics::gauge!("database_up").set(if answered { 1.0 } else { 0.0 });
    }
}
