//! The control stage: watches for shutdown, renews the run's lease on its keys every quarter
//! of the lease, and re-reads the campaign's state so a pause or cancel takes effect within
//! `control_poll`.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::report::StopCause;
use super::run::Run;
use crate::store::{CampaignState, Store};

/// Runs until the run must stop (or is aborted when it ends).
pub(super) async fn control(
    store: Arc<dyn Store>,
    run: Arc<Run>,
    shutdown: CancellationToken,
    poll: Duration,
    lease: Duration,
) {
    let mut tick = tokio::time::interval(poll);
    let mut renew = tokio::time::interval(lease / 4);
    renew.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => {
                run.stop_with(StopCause::Shutdown);
                return;
            }
            _ = renew.tick() => {
                if let Err(e) = store.renew_lease(&run.owner, lease).await {
                    warn!(error = %e, "could not renew the job's lease");
                }
            }
            _ = tick.tick() => {
                match store.campaign(&run.job.campaign).await {
                    Ok(Some(c)) if c.state == CampaignState::Cancelled => {
                        run.cancel();
                        return;
                    }
                    Ok(Some(c)) if c.state == CampaignState::Paused => {
                        run.stop_with(StopCause::CampaignPaused);
                        return;
                    }
                    Ok(_) => {}
                    Err(e) => warn!(error = %e, "could not read the campaign state"),
                }
            }
        }
    }
}
