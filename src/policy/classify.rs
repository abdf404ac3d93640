//! What to do with each answer from the Cloud API (reference §6). Decisions are made on the
//! Graph `error.code` only: HTTP status and `error_subcode` are unreliable. Transport failures
//! are split by whether the request may have reached Meta: before it was written it is safe to
//! retry; after, the outcome is *unknown* and the message must never be blindly resent.

use std::time::Duration;

/// The action for one failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Transient: retry this recipient with exponential back-off, at most `max_attempts` in all.
    Retry {
        max_attempts: u32,
        /// 130429: the number is over its throughput; lower its pacing rate.
        lower_rate: bool,
        /// 131057 (throughput upgrade in progress): pause the whole number this long.
        pause_sender: Option<Duration>,
    },
    /// 131056: too many messages to this one user; delay only this recipient (4^n s).
    DelayRecipient,
    /// Give up on this recipient, record the code.
    DropRecipient {
        /// 131050: the user stopped marketing messages; revoke marketing consent.
        revoke_marketing: bool,
    },
    /// 131047: the customer-service window is closed — a free-form message can't go. Not a
    /// failure: the recipient is skipped `window_closed` (or gets the template instead).
    WindowClosed,
    /// A template or payload problem that will fail every recipient: pause the campaign.
    StopCampaign,
    /// The number or account cannot send (auth, payment, policy): stop the sender, alert.
    StopSender {
        /// 4 and 80007 are call-rate limits of the app/account: temporary.
        temporary: bool,
    },
    /// The request may have been accepted: record `unknown`, reconcile from webhooks.
    Unknown,
}

/// Attempts for ordinary transient errors (first try included).
pub const DEFAULT_MAX_ATTEMPTS: u32 = 6;
/// 131000 "something went wrong": Meta advises at most three tries.
pub const GENERIC_ERROR_MAX_ATTEMPTS: u32 = 3;
/// How long a number is paused during its throughput upgrade (131057, "≤ 1 min").
pub const UPGRADE_PAUSE: Duration = Duration::from_secs(60);

/// Classifies a Graph error code.
pub fn classify_code(code: i64) -> Action {
    let retry = Action::Retry {
        max_attempts: DEFAULT_MAX_ATTEMPTS,
        lower_rate: false,
        pause_sender: None,
    };
    match code {
        130429 => Action::Retry {
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            lower_rate: true,
            pause_sender: None,
        },
        131057 => Action::Retry {
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            lower_rate: false,
            pause_sender: Some(UPGRADE_PAUSE),
        },
        131000 => Action::Retry {
            max_attempts: GENERIC_ERROR_MAX_ATTEMPTS,
            lower_rate: false,
            pause_sender: None,
        },
        131016 | 133004 | 1 | 2 => retry,
        131056 => Action::DelayRecipient,
        131050 => Action::DropRecipient {
            revoke_marketing: true,
        },
        131047 => Action::WindowClosed,
        131026 | 131049 | 130472 | 130403 | 131021 | 130497 | 137000 => Action::DropRecipient {
            revoke_marketing: false,
        },
        132000 | 132001 | 132005 | 132007 | 132012 | 132015 | 132016 | 132068 | 132069 | 131063
        | 100 | 131008 | 131009 | 135000 | 131051 | 131053 => Action::StopCampaign,
        4 | 80007 => Action::StopSender { temporary: true },
        0
        | 3
        | 10
        | 190
        | 200..=299
        | 131005
        | 131042
        | 131031
        | 368
        | 131048
        | 131064
        | 133010 => Action::StopSender { temporary: false },
        // An unlisted code: assume it concerns this recipient only. Retrying an unknown
        // error could hammer the API; stopping everything for it would be worse.
        _ => Action::DropRecipient {
            revoke_marketing: false,
        },
    }
}

/// Classifies an SMPP `command_status` of a `submit_sm_resp` or `generic_nack` (SMPP 3.4
/// §5.1.3): throttling (0x58, 0x14) and temporary SMSC trouble are retried on a slower rate
/// (nothing was accepted); a bad destination drops the recipient; a source address, a length
/// or an optional parameter the SMSC refuses would fail every message alike and pauses the
/// campaign; a bind-level refusal backs the whole route off (the session is re-bound).
pub fn classify_smpp(status: u32) -> Action {
    let retry = |lower_rate| Action::Retry {
        max_attempts: DEFAULT_MAX_ATTEMPTS,
        lower_rate,
        pause_sender: None,
    };
    match status {
        // ESME_RTHROTTLED, ESME_RMSGQFUL.
        0x58 | 0x14 => retry(true),
        // ESME_RSYSERR, ESME_RX_T_APPN (temporary application error).
        0x08 | 0x64 => retry(false),
        // Invalid bind status, already bound, bind failed, bad password or system id: the
        // session is wrong, not the message.
        0x04 | 0x05 | 0x0D | 0x0E | 0x0F => Action::StopSender { temporary: true },
        // Source address/TON/NPI, message or command length, command id, priority, expiry,
        // schedule, service/system type, data coding, optional parameters.
        0x01 | 0x02 | 0x03 | 0x06 | 0x0A | 0x15 | 0x48 | 0x49 | 0x53 | 0x61 | 0x62 | 0xC0
        | 0xC1 | 0xC2 | 0xC3 | 0xC4 => Action::StopCampaign,
        // Destination address/TON/NPI, ESME_RX_R_APPN, submit failed, and anything unlisted:
        // this recipient only.
        _ => Action::DropRecipient {
            revoke_marketing: false,
        },
    }
}

/// A transport-level failure, described by what is known about the request's fate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Connection refused, DNS failure, TLS failure: nothing was sent.
    NotSent,
    /// HTTP 5xx without a Graph error body: Meta did not process it.
    ServerError,
    /// Timeout, reset or closed connection after the request was (maybe) written.
    MaybeSent,
}

/// Classifies a transport failure.
pub fn classify_transport(t: Transport) -> Action {
    match t {
        Transport::NotSent | Transport::ServerError => Action::Retry {
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            lower_rate: false,
            pause_sender: None,
        },
        Transport::MaybeSent => Action::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_retry(a: Action) -> bool {
        matches!(a, Action::Retry { .. })
    }

    #[test]
    fn every_code_in_the_reference_has_its_action() {
        for code in [130429, 131016, 133004, 131057, 131000, 1, 2] {
            assert!(is_retry(classify_code(code)), "{code}");
        }
        assert_eq!(classify_code(131056), Action::DelayRecipient);
        for code in [131026, 131049, 130472, 130403, 131021, 130497, 137000] {
            assert_eq!(
                classify_code(code),
                Action::DropRecipient {
                    revoke_marketing: false
                },
                "{code}"
            );
        }
        assert_eq!(
            classify_code(131050),
            Action::DropRecipient {
                revoke_marketing: true
            }
        );
        for code in [
            132000, 132001, 132005, 132007, 132012, 132015, 132016, 132068, 132069, 131063, 100,
            131008, 131009, 135000, 131051, 131053,
        ] {
            assert_eq!(classify_code(code), Action::StopCampaign, "{code}");
        }
        for code in [
            190, 0, 3, 10, 200, 299, 131005, 131042, 131031, 368, 131048, 131064, 133010,
        ] {
            assert_eq!(
                classify_code(code),
                Action::StopSender { temporary: false },
                "{code}"
            );
        }
        for code in [4, 80007] {
            assert_eq!(classify_code(code), Action::StopSender { temporary: true });
        }
    }

    #[test]
    fn throttling_lowers_the_rate_and_upgrades_pause_the_number() {
        assert!(matches!(
            classify_code(130429),
            Action::Retry {
                lower_rate: true,
                ..
            }
        ));
        assert!(matches!(
            classify_code(131057),
            Action::Retry {
                pause_sender: Some(d),
                ..
            } if d == UPGRADE_PAUSE
        ));
        assert!(matches!(
            classify_code(131000),
            Action::Retry {
                max_attempts: GENERIC_ERROR_MAX_ATTEMPTS,
                ..
            }
        ));
    }

    #[test]
    fn unknown_outcomes_are_never_retried() {
        assert_eq!(classify_transport(Transport::MaybeSent), Action::Unknown);
        // SMPP: throttling slows the route down, a bad destination drops one recipient, a
        // refused source address stops the campaign, a bind error backs the route off.
        assert_eq!(
            classify_smpp(0x58),
            Action::Retry {
                max_attempts: DEFAULT_MAX_ATTEMPTS,
                lower_rate: true,
                pause_sender: None
            }
        );
        assert_eq!(classify_smpp(0x14), classify_smpp(0x58));
        assert!(is_retry(classify_smpp(0x08)));
        assert_eq!(
            classify_smpp(0x0B),
            Action::DropRecipient {
                revoke_marketing: false
            }
        );
        assert_eq!(classify_smpp(0x0A), Action::StopCampaign);
        assert_eq!(classify_smpp(0xC1), Action::StopCampaign);
        assert_eq!(classify_smpp(0x0E), Action::StopSender { temporary: true });
        assert!(is_retry(classify_transport(Transport::NotSent)));
        assert!(is_retry(classify_transport(Transport::ServerError)));
    }

    #[test]
    fn unlisted_codes_drop_only_the_recipient() {
        assert_eq!(
            classify_code(999_999),
            Action::DropRecipient {
                revoke_marketing: false
            }
        );
    }
}
