//! What to do after an answer: one pure function from *answer × tries so far × channel* to the
//! next step of that recipient (record it, retry after a back-off, wait for the pair limit, hand
//! it back for a later run) and what the answer means beyond it (lower the number's rate, pause
//! the number, revoke marketing consent, pause the campaign, stop the sender). The engine's send
//! stage carries the step out; nothing here waits, writes or counts.

use std::time::Duration;

use super::backoff::{pair_limit_delay, retry_delay};
use super::classify::{Action, Transport};
use crate::domain::ChannelKind;

/// What one attempt produced, classified by the channel that made it ([`Action`] says what
/// the channel's code means).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The channel took the message (not yet delivered).
    Accepted {
        /// The channel's message id (WhatsApp: the wamid).
        provider_id: String,
        /// WhatsApp: `held_for_quality_assessment`.
        held: bool,
    },
    /// The channel refused it with an error code.
    Refused {
        code: i64,
        message: String,
        action: Action,
    },
    /// No usable answer; `kind` says whether the request may have reached the channel.
    Transport { kind: Transport, detail: String },
}

impl Answer {
    /// The code of a refusal (`None` for acceptance and transport failures).
    pub fn code(&self) -> Option<i64> {
        match self {
            Answer::Refused { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// A line for the operator: `error 131026: …` or the transport detail.
    pub fn describe(&self) -> String {
        match self {
            Answer::Accepted { .. } => "accepted".to_owned(),
            Answer::Refused { code, message, .. } => format!("error {code}: {message}"),
            Answer::Transport { detail, .. } => detail.clone(),
        }
    }
}

/// A recipient's tries so far, updated by [`next_step`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tries {
    /// Requests made, the one just answered included.
    pub attempts: u32,
    /// 131056 answers so far (drives the 4^n delay).
    pub pair_hits: u32,
    /// WhatsApp 131000 answers so far: Meta advises at most three tries for that one code.
    pub generic_failures: u32,
}

/// Back-off settings (the engine's configuration holds them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryTiming {
    pub base: Duration,
    pub cap: Duration,
    /// Waits up to this long are done in-process; longer ones hand the key back.
    pub inline_limit: Duration,
}

/// Meta's "something went wrong", tried at most [`super::classify::GENERIC_ERROR_MAX_ATTEMPTS`]
/// times however many other errors came before.
pub const GENERIC_ERROR_CODE: i64 = 131000;
/// How long the whole number backs off after an app/account call limit (4, 80007).
pub const CALL_LIMIT_PAUSE: Duration = Duration::from_secs(60);

/// The recipient's next step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Final: the channel has it.
    Sent { provider_id: String, held: bool },
    /// Final: failed with the channel's code.
    Failed { code: i64 },
    /// Final for now: it may have been accepted; reconciled from status webhooks, never
    /// blindly resent.
    Unknown,
    /// Send again after `after`, in-process when `after ≤ inline_up_to`, else in a later run.
    Retry {
        after: Duration,
        inline_up_to: Duration,
    },
    /// 131056: only this recipient waits (4^n s).
    WaitForRecipient {
        after: Duration,
        inline_up_to: Duration,
    },
    /// Not sent and not failed: the key goes back pending for a later run (transport failures
    /// that never reached the channel, or a stop that is not the recipient's fault).
    HandBack,
    /// 131047: Meta says the customer-service window is closed. The send stage records the
    /// window closed, then hands a job with a template back (the gate chooses the template
    /// next time) or skips the recipient `window_closed`.
    WindowClosed,
}

impl Step {
    /// Whether this step ends the recipient's journey in this run with an outcome.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            Step::Sent { .. } | Step::Failed { .. } | Step::Unknown
        )
    }
}

/// What an answer means beyond its recipient.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Effects {
    /// 130429: the number is over its throughput; lower its rate.
    pub lower_rate: bool,
    /// Pause the whole number this long (131057 upgrade, 4 / 80007 call limits).
    pub pause_sender: Option<Duration>,
    /// 131050 on a marketing message: the person stopped marketing; revoke that consent.
    pub revoke_marketing: bool,
    /// Every recipient would fail the same way (template/payload): pause the campaign.
    pub pause_campaign: bool,
    /// The number or account cannot send (auth, payment, policy): stop the sender.
    pub stop_sender: bool,
    /// Counts as a retry in metrics and the report.
    pub retried: bool,
}

/// The decision after one answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub step: Step,
    pub effects: Effects,
}

/// Decides the next step after `answer`. `tries.attempts` counts the request just answered;
/// `jitter` ∈ [0, 1] spreads retries (full jitter). `marketing`: the message's category is
/// marketing (only then does 131050 revoke consent).
pub fn next_step(
    answer: Answer,
    tries: &mut Tries,
    channel: ChannelKind,
    marketing: bool,
    timing: &RetryTiming,
    jitter: f64,
) -> Decision {
    let none = Effects::default();
    let (code, action) = match answer {
        Answer::Accepted { provider_id, held } => {
            return Decision {
                step: Step::Sent { provider_id, held },
                effects: none,
            };
        }
        Answer::Refused { code, action, .. } => (Some(code), action),
        Answer::Transport { kind, .. } => (None, super::classify::classify_transport(kind)),
    };
    match action {
        Action::Retry {
            max_attempts,
            lower_rate,
            pause_sender,
        } => {
            let exhausted = if channel == ChannelKind::WhatsApp && code == Some(GENERIC_ERROR_CODE)
            {
                tries.generic_failures += 1;
                tries.generic_failures >= max_attempts
            } else {
                tries.attempts >= max_attempts
            };
            let effects = Effects {
                lower_rate,
                pause_sender,
                retried: !exhausted,
                ..none
            };
            let step = match (exhausted, code) {
                // A throttle (130429, SMPP 0x58/0x14) was never accepted and says nothing
                // about the recipient: out of tries in this run, the key goes back for a
                // later one (the rate has come down by then), never failed for good.
                (true, Some(_)) if lower_rate => Step::HandBack,
                (true, Some(code)) => Step::Failed { code },
                // Transport failures and bare 5xx never reached the channel's processing: the
                // key goes back for a later run rather than being failed for good.
                (true, None) => Step::HandBack,
                (false, _) => Step::Retry {
                    after: retry_delay(tries.attempts, timing.base, timing.cap, jitter)
                        .max(pause_sender.unwrap_or_default()),
                    inline_up_to: timing.inline_limit.max(timing.cap),
                },
            };
            Decision { step, effects }
        }
        Action::DelayRecipient => {
            tries.pair_hits += 1;
            Decision {
                step: Step::WaitForRecipient {
                    after: pair_limit_delay(tries.pair_hits),
                    inline_up_to: timing.inline_limit,
                },
                effects: none,
            }
        }
        Action::DropRecipient { revoke_marketing } => Decision {
            step: Step::Failed {
                code: code.unwrap_or_default(),
            },
            effects: Effects {
                revoke_marketing: revoke_marketing && marketing,
                ..none
            },
        },
        // The recipient did nothing wrong: it goes back and is sent after the fix.
        Action::StopCampaign => Decision {
            step: Step::HandBack,
            effects: Effects {
                pause_campaign: true,
                ..none
            },
        },
        // App / account call limits: back the whole number off, then retry.
        Action::StopSender { temporary: true } => Decision {
            step: Step::Retry {
                after: CALL_LIMIT_PAUSE,
                inline_up_to: CALL_LIMIT_PAUSE,
            },
            effects: Effects {
                pause_sender: Some(CALL_LIMIT_PAUSE),
                retried: true,
                ..none
            },
        },
        Action::StopSender { temporary: false } => Decision {
            step: Step::HandBack,
            effects: Effects {
                stop_sender: true,
                ..none
            },
        },
        Action::Unknown => Decision {
            step: Step::Unknown,
            effects: none,
        },
        Action::WindowClosed => Decision {
            step: Step::WindowClosed,
            effects: none,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::classify::{
        DEFAULT_MAX_ATTEMPTS, GENERIC_ERROR_MAX_ATTEMPTS, UPGRADE_PAUSE, classify_code,
    };

    const TIMING: RetryTiming = RetryTiming {
        base: Duration::from_millis(250),
        cap: Duration::from_secs(30),
        inline_limit: Duration::from_secs(20),
    };

    fn refused(code: i64) -> Answer {
        Answer::Refused {
            code,
            message: "x".into(),
            action: classify_code(code),
        }
    }

    /// The decision for a marketing message on WhatsApp, without jitter.
    fn answer(answer: Answer, tries: &mut Tries) -> Decision {
        next_step(answer, tries, ChannelKind::WhatsApp, true, &TIMING, 1.0)
    }

    /// The decision for `code` on attempt number `attempt`, with no earlier special answers.
    fn decide(code: i64, attempt: u32) -> Decision {
        let mut tries = Tries {
            attempts: attempt,
            ..Tries::default()
        };
        answer(refused(code), &mut tries)
    }

    fn is_retry(d: &Decision) -> bool {
        matches!(d.step, Step::Retry { .. }) && d.effects.retried
    }

    // The reference tables (whatsapp-cloud-api.md §6), row by row.
    const RETRIED: [i64; 7] = [130429, 131016, 133004, 131057, 131000, 1, 2];
    const DROPPED: [i64; 7] = [131026, 131049, 130472, 130403, 131021, 130497, 137000];
    const PAUSE_CAMPAIGN: [i64; 16] = [
        132000, 132001, 132005, 132007, 132012, 132015, 132016, 132068, 132069, 131063, 100,
        131008, 131009, 135000, 131051, 131053,
    ];
    const STOP_SENDER: [i64; 13] = [
        0, 3, 10, 190, 200, 299, 131005, 131042, 131031, 368, 131048, 131064, 133010,
    ];

    #[test]
    fn re_engagement_131047_is_a_closed_window_not_a_failure() {
        let d = decide(131047, 1);
        assert_eq!(d.step, Step::WindowClosed);
        assert_eq!(d.effects, Effects::default());
    }

    #[test]
    fn transient_codes_are_retried_with_back_off_then_failed_with_their_code_or_throttles_handed_back()
     {
        for code in RETRIED {
            let first = decide(code, 1);
            assert!(is_retry(&first), "{code}: {first:?}");
            let limit = if code == GENERIC_ERROR_CODE {
                GENERIC_ERROR_MAX_ATTEMPTS
            } else {
                DEFAULT_MAX_ATTEMPTS
            };
            // The last allowed attempt fails for good with the code.
            let mut tries = Tries {
                attempts: limit,
                generic_failures: limit - 1,
                ..Tries::default()
            };
            let last = answer(refused(code), &mut tries);
            if code == 130429 {
                // A throttle never fails the recipient: it goes back for a later run.
                assert_eq!(last.step, Step::HandBack, "{code}");
            } else {
                assert_eq!(last.step, Step::Failed { code }, "{code}");
            }
            assert!(!last.effects.retried, "{code}");
        }
    }

    #[test]
    fn back_off_doubles_with_attempts_and_is_never_shorter_than_a_pause() {
        let after = |d: Decision| match d.step {
            Step::Retry { after, .. } => after,
            other => panic!("{other:?}"),
        };
        assert_eq!(after(decide(131016, 1)), Duration::from_millis(250));
        assert_eq!(after(decide(131016, 3)), Duration::from_secs(1));
        assert_eq!(after(decide(131016, 5)), Duration::from_secs(4));
        // 131057: the number pauses ≤ 1 min; this recipient waits at least as long.
        let upgrade = decide(131057, 1);
        assert_eq!(upgrade.effects.pause_sender, Some(UPGRADE_PAUSE));
        assert_eq!(after(upgrade), UPGRADE_PAUSE);
        // In-process up to the longest back-off.
        assert!(matches!(
            decide(131016, 1).step,
            Step::Retry { inline_up_to, .. } if inline_up_to == TIMING.cap
        ));
    }

    #[test]
    fn throttling_lowers_the_rate_on_every_try() {
        assert!(decide(130429, 1).effects.lower_rate);
        assert!(decide(130429, DEFAULT_MAX_ATTEMPTS).effects.lower_rate);
        assert!(!decide(131016, 1).effects.lower_rate);
    }

    #[test]
    fn generic_errors_count_on_their_own_only_on_whatsapp() {
        // Three 131000s fail, even after many other retries...
        let mut tries = Tries::default();
        for n in 1..=GENERIC_ERROR_MAX_ATTEMPTS {
            tries.attempts = n;
            let d = next_step(
                refused(131000),
                &mut tries,
                ChannelKind::WhatsApp,
                false,
                &TIMING,
                0.5,
            );
            let expect_fail = n == GENERIC_ERROR_MAX_ATTEMPTS;
            assert_eq!(d.step == Step::Failed { code: 131000 }, expect_fail, "{n}");
        }
        assert_eq!(tries.generic_failures, GENERIC_ERROR_MAX_ATTEMPTS);
        // ...and another channel's code 131000 means nothing special.
        let mut tries = Tries {
            attempts: 1,
            ..Tries::default()
        };
        let answer = Answer::Refused {
            code: 131000,
            message: String::new(),
            action: Action::Retry {
                max_attempts: GENERIC_ERROR_MAX_ATTEMPTS,
                lower_rate: false,
                pause_sender: None,
            },
        };
        let d = next_step(answer, &mut tries, ChannelKind::Sms, false, &TIMING, 0.5);
        assert!(is_retry(&d));
        assert_eq!(tries.generic_failures, 0);
    }

    #[test]
    fn pair_limit_delays_only_the_recipient_four_to_the_n() {
        let mut tries = Tries::default();
        for (n, secs) in [(1, 4), (2, 16), (3, 64)] {
            tries.attempts = n;
            let d = answer(refused(131056), &mut tries);
            assert_eq!(
                d.step,
                Step::WaitForRecipient {
                    after: Duration::from_secs(secs),
                    inline_up_to: TIMING.inline_limit
                }
            );
            assert_eq!(d.effects, Effects::default());
        }
    }

    #[test]
    fn recipient_errors_fail_that_recipient_only() {
        for code in DROPPED.into_iter().chain([131050, 999_999]) {
            let d = decide(code, 1);
            assert_eq!(d.step, Step::Failed { code }, "{code}");
            assert!(
                !d.effects.pause_campaign && !d.effects.stop_sender,
                "{code}"
            );
        }
    }

    #[test]
    fn a_marketing_opt_out_revokes_marketing_consent_only_for_marketing() {
        assert!(decide(131050, 1).effects.revoke_marketing);
        let mut tries = Tries {
            attempts: 1,
            ..Tries::default()
        };
        let utility = next_step(
            refused(131050),
            &mut tries,
            ChannelKind::WhatsApp,
            false,
            &TIMING,
            1.0,
        );
        assert_eq!(utility.step, Step::Failed { code: 131050 });
        assert!(!utility.effects.revoke_marketing);
        assert!(!decide(131026, 1).effects.revoke_marketing);
    }

    #[test]
    fn template_errors_pause_the_campaign_and_hand_the_recipient_back() {
        for code in PAUSE_CAMPAIGN {
            let d = decide(code, 1);
            assert_eq!(d.step, Step::HandBack, "{code}");
            assert!(d.effects.pause_campaign, "{code}");
        }
    }

    #[test]
    fn account_errors_stop_the_sender_and_call_limits_pause_it() {
        for code in STOP_SENDER {
            let d = decide(code, 1);
            assert_eq!(d.step, Step::HandBack, "{code}");
            assert!(d.effects.stop_sender, "{code}");
        }
        for code in [4, 80007] {
            let d = decide(code, 1);
            assert_eq!(
                d.step,
                Step::Retry {
                    after: CALL_LIMIT_PAUSE,
                    inline_up_to: CALL_LIMIT_PAUSE
                },
                "{code}"
            );
            assert_eq!(d.effects.pause_sender, Some(CALL_LIMIT_PAUSE));
            assert!(d.effects.retried && !d.effects.stop_sender);
        }
    }

    #[test]
    fn transport_failures_retry_when_nothing_was_sent_and_are_unknown_otherwise() {
        let transport = |kind| Answer::Transport {
            kind,
            detail: "x".into(),
        };
        for kind in [Transport::NotSent, Transport::ServerError] {
            let mut tries = Tries {
                attempts: 1,
                ..Tries::default()
            };
            let d = answer(transport(kind), &mut tries);
            assert!(is_retry(&d), "{kind:?}");
            // Exhausted: handed back for a later run, never failed (no code, not processed).
            tries.attempts = DEFAULT_MAX_ATTEMPTS;
            let d = answer(transport(kind), &mut tries);
            assert_eq!(d.step, Step::HandBack, "{kind:?}");
        }
        let mut tries = Tries {
            attempts: 1,
            ..Tries::default()
        };
        let d = answer(transport(Transport::MaybeSent), &mut tries);
        assert_eq!(d.step, Step::Unknown);
        assert!(d.step.is_final());
    }

    #[test]
    fn acceptance_is_sent_with_its_id() {
        let mut tries = Tries {
            attempts: 2,
            ..Tries::default()
        };
        let accepted = Answer::Accepted {
            provider_id: "wamid.X".into(),
            held: true,
        };
        let d = answer(accepted, &mut tries);
        assert_eq!(
            d.step,
            Step::Sent {
                provider_id: "wamid.X".into(),
                held: true
            }
        );
        assert_eq!(d.effects, Effects::default());
    }
}
