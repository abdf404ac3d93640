//! The timers every long-running process fires (workers, `herald serve`, the demo): SMS
//! fallbacks when there is an SMS route, follow-ups always. Each kind is claimed by its own
//! round, so one kind's backlog never holds the other's timers.

use std::sync::Arc;
use std::time::Duration;

use tracing::warn;

use super::config::{EngineError, RunControl};
use super::fallback::FallbackRound;
use super::follow_up::FollowUpRound;
use super::job::Engine;
use crate::domain::ChannelKind;

/// How often a long-running process looks for due timers.
pub const TIMER_POLL: Duration = Duration::from_secs(1);

/// What one round over every kind of timer did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TimerRound {
    pub fallbacks: FallbackRound,
    pub follow_ups: FollowUpRound,
}

impl Engine {
    /// Fires what is due of every kind, on the engine's clock.
    pub async fn fire_timers(&self, ctl: &RunControl) -> Result<TimerRound, EngineError> {
        let fallbacks = if self.channel_of(ChannelKind::Sms).is_some() {
            self.fire_fallbacks(ctl).await?
        } else {
            FallbackRound::default()
        };
        let follow_ups = self.fire_follow_ups(ctl).await?;
        Ok(TimerRound {
            fallbacks,
            follow_ups,
        })
    }

    /// Fires due timers every [`TIMER_POLL`] until `stop`. A store error is logged and
    /// tried again on the next tick.
    pub async fn run_timers(self: Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        let ctl = RunControl {
            shutdown: stop.clone(),
            progress: None,
        };
        let mut every = tokio::time::interval(TIMER_POLL);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                _ = stop.cancelled() => return,
            }
            if let Err(e) = self.fire_timers(&ctl).await {
                warn!(error = %e, "firing due timers failed; trying again");
            }
        }
    }
}
