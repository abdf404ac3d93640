//! The timers every long-running process fires (workers, `herald serve`, the demo): SMS
//! fallbacks when there is an SMS route, follow-ups and opt-in confirmations always. Each kind is claimed by its own
//! round, so one kind's backlog never holds the other's timers.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use tracing::warn;

use super::config::{EngineError, RunControl};
use super::fallback::FallbackRound;
use super::follow_up::FollowUpRound;
use super::job::Engine;
use super::optin::ConfirmationRound;
use crate::domain::{ChannelKind, IdempotencyKey};

/// How often a long-running process looks for due timers.
pub const TIMER_POLL: Duration = Duration::from_secs(1);

/// What one round over every kind of timer did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TimerRound {
    pub fallbacks: FallbackRound,
    pub follow_ups: FollowUpRound,
    pub confirmations: ConfirmationRound,
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
        let confirmations = self.fire_confirmations(ctl).await?;
        Ok(TimerRound {
            fallbacks,
            follow_ups,
            confirmations,
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

    /// After a timer round sent its messages: completes the timers of `kind` whose key (each
    /// timer is named by the ledger key it sends) has an outcome, and hands the others back,
    /// due at `later`. One batched ledger read and one batched completion for the lot; returns
    /// the keys completed.
    pub(super) async fn settle_timers(
        &self,
        kind: &str,
        owner: &str,
        keys: &[String],
        later: DateTime<Utc>,
    ) -> Result<HashSet<String>, EngineError> {
        let store = self.store();
        let ids: Vec<IdempotencyKey> = keys
            .iter()
            .map(|k| IdempotencyKey::from_trusted(k.clone()))
            .collect();
        let settled: HashSet<String> = store
            .ledger_entries(&ids)
            .await?
            .into_iter()
            .filter(|r| matches!(r.state.as_str(), "sent" | "failed" | "skipped" | "unknown"))
            .map(|r| r.key.as_str().to_owned())
            .collect();
        let done: Vec<String> = keys
            .iter()
            .filter(|k| settled.contains(k.as_str()))
            .cloned()
            .collect();
        store.complete_timers(kind, &done, owner).await?;
        for key in keys.iter().filter(|k| !settled.contains(k.as_str())) {
            store.release_timer(kind, key, owner, Some(later)).await?;
        }
        Ok(settled)
    }
}
