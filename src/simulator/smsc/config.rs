//! What the simulated SMSC pretends to be: where it listens, the one account it knows, its TPS
//! cap and how its receipts behave. Off unless `SimConfig::smsc` is set; the defaults behave
//! like a healthy provider that delivers everything half a second later.

use std::collections::HashSet;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::bail;

/// SMPP 3.4 §5.2.1: `system_id` is a C string of at most 16 octets, NUL included.
const MAX_SYSTEM_ID_CHARS: usize = 15;
/// SMPP 3.4 §5.2.2: `password` is a C string of at most 9 octets, NUL included.
const MAX_PASSWORD_CHARS: usize = 8;

/// Configuration of the SMSC. Every field is public: tests build it with
/// `SmscConfig { tps: 5, ..Default::default() }`.
#[derive(Clone, PartialEq)]
pub struct SmscConfig {
    /// Where the SMPP server listens; port 0 picks a free port
    /// ([`SimHandle::smpp_addr`](crate::simulator::SimHandle::smpp_addr) tells which).
    pub addr: SocketAddr,
    /// The one account binds must name; others are refused with `ESME_RINVSYSID`.
    pub system_id: String,
    /// Its password; a wrong one is refused with `ESME_RINVPASWD`.
    pub password: String,
    /// Accepted `submit_sm` per account in any sliding second (each part of a long message
    /// counts); beyond it `ESME_RTHROTTLED` (0x58), not accepted. 0 = no limit.
    pub tps: u32,
    /// Sessions one account may hold at once; a further bind is refused with
    /// `ESME_RBINDFAIL`. 0 = no limit.
    pub max_binds: u32,
    /// From acceptance to the delivery receipt (the receipt's `done date` is this much later).
    pub receipt_delay: Duration,
    /// Share of destinations, picked by a stable hash of the number, whose receipts say
    /// `UNDELIV` (err:001): the same numbers on every run.
    pub undeliverable_share: f64,
    /// A further share of destinations whose receipts say `EXPIRED`. The rest are `DELIVRD`.
    pub expired_share: f64,
    /// Destinations (E.164, spacing ignored) whose receipts always say `UNDELIV`.
    pub undeliverable: HashSet<String>,
    /// Receipts name the message id in decimal while `submit_sm_resp` gave it in hex, as some
    /// providers do: the client must normalise.
    pub decimal_receipt_ids: bool,
    /// Every receipt is sent twice, as providers do after a lost `deliver_sm_resp`.
    pub duplicate_receipts: bool,
}

impl Default for SmscConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            system_id: "herald".into(),
            password: "secret".into(),
            tps: 0,
            // Providers allow a handful of binds per account; enough for a few workers.
            max_binds: 10,
            receipt_delay: Duration::from_millis(500),
            undeliverable_share: 0.0,
            expired_share: 0.0,
            undeliverable: HashSet::new(),
            decimal_receipt_ids: false,
            duplicate_receipts: false,
        }
    }
}

impl SmscConfig {
    /// Rejects settings that cannot mean anything, naming the field as `smsc.<field>`.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.system_id.is_empty() || self.system_id.len() > MAX_SYSTEM_ID_CHARS {
            bail!("smsc.system_id must have 1 to {MAX_SYSTEM_ID_CHARS} characters (SMPP 3.4)");
        }
        if self.password.len() > MAX_PASSWORD_CHARS {
            bail!("smsc.password may have at most {MAX_PASSWORD_CHARS} characters (SMPP 3.4)");
        }
        for (name, share) in [
            ("undeliverable_share", self.undeliverable_share),
            ("expired_share", self.expired_share),
        ] {
            if !(0.0..=1.0).contains(&share) {
                bail!("smsc.{name} must be between 0 and 1, got {share}");
            }
        }
        let failing = self.undeliverable_share + self.expired_share;
        if failing > 1.0 {
            bail!(
                "smsc.undeliverable_share and smsc.expired_share add up to {failing}, more than 1"
            );
        }
        for number in &self.undeliverable {
            let digits = number.chars().filter(char::is_ascii_digit).count();
            if digits == 0 {
                bail!("smsc.undeliverable holds '{number}', which is not a phone number");
            }
        }
        Ok(())
    }
}

impl fmt::Debug for SmscConfig {
    /// By hand, so the password never reaches a log line and numbers show as a count.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmscConfig")
            .field("addr", &self.addr)
            .field("system_id", &self.system_id)
            .field("password", &"<redacted>")
            .field("tps", &self.tps)
            .field("max_binds", &self.max_binds)
            .field("receipt_delay", &self.receipt_delay)
            .field("undeliverable_share", &self.undeliverable_share)
            .field("expired_share", &self.expired_share)
            .field("undeliverable", &self.undeliverable.len())
            .field("decimal_receipt_ids", &self.decimal_receipt_ids)
            .field("duplicate_receipts", &self.duplicate_receipts)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_valid() {
        SmscConfig::default().validate().unwrap();
    }

    #[test]
    fn shares_out_of_range_or_adding_up_past_one_are_rejected_by_name() {
        let config = SmscConfig {
            expired_share: 1.5,
            ..Default::default()
        };
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("smsc.expired_share"), "{err}");
        let config = SmscConfig {
            expired_share: 0.6,
            undeliverable_share: 0.6,
            ..Default::default()
        };
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("add up"), "{err}");
    }

    #[test]
    fn credentials_longer_than_smpp_allows_are_rejected() {
        let config = SmscConfig {
            password: "much-too-long".into(),
            ..Default::default()
        };
        assert!(config.validate().is_err());
        let config = SmscConfig {
            system_id: String::new(),
            ..Default::default()
        };
        assert!(config.validate().is_err());
    }

    #[test]
    fn the_password_never_shows_in_debug_output() {
        let config = SmscConfig {
            password: "hunter2".into(),
            ..Default::default()
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2") && shown.contains("<redacted>"));
    }
}
