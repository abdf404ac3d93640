//! The send stage: one request on the run's channel, the pure next-step decision
//! ([`crate::policy::next_step`]) on its answer, and carrying that decision out — the outcome to
//! the recorder, the item back to the marker after its wait, the number's rate lowered or
//! paused, a marketing opt-out recorded, the campaign paused or the sender stopped.

use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use tracing::{debug, warn};

use super::report::StopCause;
use super::run::{Event, Item, Run};
use crate::channel::{Answer, Channel, Prepared};
use crate::domain::{Category, ChannelKind, Outcome, SkipReason};
use crate::policy::next_step::{Effects, RetryTiming, Step, next_step};
use crate::store::{CampaignState, Store};
use crate::telemetry::metrics;

/// The send stage's dependencies.
pub(super) struct SendStage {
    pub(super) channel: Arc<dyn Channel>,
    pub(super) store: Arc<dyn Store>,
    pub(super) timing: RetryTiming,
}

/// What a refusal said, kept for the operator and the stop cause.
struct Refusal {
    code: Option<i64>,
    message: String,
}

impl SendStage {
    /// Sends one item and carries out what its answer means.
    pub(super) async fn send(&self, run: &Arc<Run>, mut item: Item) {
        let r = &run.job.recipients[item.idx];
        let (name, language) = run.job.message_name();
        let (text, from) = match (self.channel.kind(), &run.job.sms) {
            (ChannelKind::Sms, Some(sms)) => (sms.render(r.vars.as_deref()), sms.from.as_str()),
            _ => (String::new(), ""),
        };
        let session = match (&run.job.session, item.session) {
            (Some(s), true) => Some(&*s.fields),
            _ => None,
        };
        let message = Prepared {
            to: &r.to,
            key: &r.key,
            template: name,
            language,
            components: &r.components,
            session,
            text: &text,
            from,
        };
        item.tries.attempts += 1;
        run.handles.inflight.increment(1.0);
        let started = Instant::now();
        let answer = self.channel.send(&run.endpoint, &message).await;
        run.handles.latency.record(started.elapsed().as_secs_f64());
        run.handles.inflight.decrement(1.0);

        let refusal = match &answer {
            Answer::Accepted { .. } => None,
            Answer::Refused { code, message, .. } => Some(Refusal {
                code: Some(*code),
                message: message.clone(),
            }),
            Answer::Transport { detail, .. } => Some(Refusal {
                code: None,
                message: detail.clone(),
            }),
        };
        if refusal.is_some() {
            run.note_error(answer.describe());
        }
        let decision = next_step(
            answer,
            &mut item.tries,
            self.channel.kind(),
            run.category == Category::Marketing,
            &self.timing,
            rand::random::<f64>(),
        );
        if let Some(refusal) = &refusal {
            self.carry_out(run, &item, refusal, &decision.effects).await;
        }
        if decision.step == Step::WindowClosed {
            self.window_closed(run, &item).await;
        }
        self.take_step(run, item, decision.step, refusal.as_ref());
    }

    /// The answer's meaning beyond its recipient.
    async fn carry_out(&self, run: &Run, item: &Item, refusal: &Refusal, effects: &Effects) {
        let sender = run.job.sender.as_str();
        let code = refusal.code.unwrap_or_default();
        // Rate metrics name what was throttled: the number, or the SMS route (`sms:<name>`).
        let paced = self.channel.pacing_key(&run.job.sender);
        if effects.lower_rate {
            metrics::throttled(paced.as_str(), refusal.code.unwrap_or(130429));
            run.pacer.on_throttled(item.rate_generation);
        }
        if let Some(pause) = effects.pause_sender {
            run.pacer.pause_for(pause);
        }
        if effects.retried {
            let label = refusal
                .code
                .map_or_else(|| "transport".to_owned(), |c| c.to_string());
            metrics::retry(paced.as_str(), &label);
            run.note(Event::Retry);
        }
        if effects.revoke_marketing {
            // 131050: the user stopped marketing messages on WhatsApp. Honour it at once, for
            // WhatsApp only: it says nothing about SMS.
            let to = &run.job.recipients[item.idx].to;
            if let Err(e) = self
                .store
                .revoke_consent(
                    to,
                    Some(Category::Marketing),
                    Some(ChannelKind::WhatsApp),
                    Utc::now(),
                    "meta:131050",
                )
                .await
            {
                warn!(error = %e, "could not record a 131050 marketing opt-out");
            }
        }
        let message = &refusal.message;
        if effects.pause_campaign
            && run.stop_with(StopCause::CampaignFatal {
                code,
                message: message.clone(),
            })
        {
            warn!(campaign = %run.job.campaign, code, %message, "pausing campaign after a template/payload error");
            let reason = format!("error {code}: {message}");
            if let Err(e) = self
                .store
                .set_campaign_state(&run.job.campaign, CampaignState::Paused, Some(&reason))
                .await
            {
                warn!(error = %e, "could not record the campaign pause");
            }
        }
        if effects.stop_sender
            && run.stop_with(StopCause::SenderStopped {
                code,
                message: message.clone(),
            })
        {
            warn!(sender, code, %message, "stopping sender after an account-level error");
            let reason = format!("error {code}: {message}");
            if let Err(e) = self
                .store
                .set_sender_status(&run.job.sender, "STOPPED", Some(&reason))
                .await
            {
                warn!(error = %e, "could not record the sender stop");
            }
            metrics::sender_stopped(sender, true);
        }
    }

    /// Meta refused a session message for a closed window: herald's window for the customer
    /// ends now, so the next gate chooses the template (or skips).
    async fn window_closed(&self, run: &Run, item: &Item) {
        let to = &run.job.recipients[item.idx].to;
        if let Err(e) = self
            .store
            .close_service_window(&run.job.sender, to, Utc::now())
            .await
        {
            warn!(error = %e, "could not record a closed customer-service window");
        }
    }

    /// The recipient's next step.
    fn take_step(&self, run: &Arc<Run>, item: Item, step: Step, refusal: Option<&Refusal>) {
        let key = run.key(item.idx);
        let attempts = item.tries.attempts;
        let final_event = |outcome, held| Event::Final {
            idx: item.idx,
            outcome,
            attempts,
            held,
        };
        match step {
            Step::Sent { provider_id, held } => {
                run.finish(final_event(Outcome::Sent { wamid: provider_id }, held));
            }
            Step::Failed { code } => {
                debug!(%key, code, "giving up after {attempts} attempts");
                run.finish(final_event(Outcome::Failed { code }, false));
            }
            Step::Unknown => {
                let detail = refusal.map(|r| r.message.as_str()).unwrap_or_default();
                debug!(%key, detail, "outcome unknown; will reconcile from webhooks");
                run.finish(final_event(Outcome::Unknown, false));
            }
            Step::Retry {
                after,
                inline_up_to,
            } => run.retry_after(item, after, inline_up_to),
            Step::WaitForRecipient {
                after,
                inline_up_to,
            } => {
                metrics::throttled(run.job.sender.as_str(), 131056);
                run.retry_after(item, after, inline_up_to);
            }
            Step::HandBack => run.release(item.idx, std::time::Duration::ZERO),
            // Meta's word on the window wins (recorded in `window_closed`): a job with a
            // template goes back to the gate, which chooses the template now; a session
            // message alone can't go.
            Step::WindowClosed if item.session && run.job.template.is_some() => {
                run.release(item.idx, std::time::Duration::ZERO);
            }
            Step::WindowClosed => run.finish(final_event(
                Outcome::Skipped {
                    reason: SkipReason::WindowClosed,
                },
                false,
            )),
        }
    }
}
