//! The demo's 10,000 customers of Acme Mode and the flash-sale job a campaign system would
//! publish for them (DESIGN §1.5's shape: channel preferences, the SMS version, fallback and
//! the 10 % follow-up). Deterministic: the same customers, consents and orders on every run.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::{CAMPAIGN, SENDER};
use crate::domain::{Category, ChannelKind, Consent, PhoneNumber};

const FIRST_NAMES: &[&str] = &[
    "Anna", "Ben", "Clara", "David", "Emma", "Finn", "Greta", "Hannah", "Jonas", "Lea", "Lukas",
    "Mia", "Noah", "Paul", "Sophie", "Tim",
];

/// The SMS version: one GSM-7 part, the customer's name filled in.
pub const SMS_TEXT: &str =
    "ACME: Sneaker -30 % nur heute, {{name}}: https://acme.example/s STOP: Antwort STOP";

/// How a demo customer is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Persona {
    /// On WhatsApp, opted in to both channels at checkout.
    WhatsApp,
    /// Prefers SMS (`channel: "sms"`), opted in to SMS.
    PrefersSms,
    /// Opted in, but the number is not on WhatsApp: 131026, then the SMS fallback.
    NotOnWhatsApp,
    /// Never opted in: skipped `no_consent`.
    NoConsent,
    /// Opted in, then wrote STOP: skipped `opted_out`.
    OptedOut,
}

/// Customer `i`: number and persona. About 8 % prefer SMS, 0.5 % are not on WhatsApp,
/// 0.6 % never consented, 0.4 % opted out; Germany, the Netherlands and the UK.
pub fn customer(i: usize) -> (String, Persona) {
    let number = match i % 20 {
        0 | 1 => format!("+316{:08}", 10_000_000 + i), // Netherlands
        2 => format!("+447911{:06}", 100_000 + i),     // United Kingdom
        _ => format!("+49151{:08}", 10_000_000 + i),   // Germany
    };
    let persona = match i % 1000 {
        7 | 107 | 207 | 307 | 407 | 507 => Persona::NoConsent,
        13 | 313 | 613 | 913 => Persona::OptedOut,
        21 | 221 | 421 | 621 | 821 => Persona::NotOnWhatsApp,
        _ if i % 25 == 3 || i % 25 == 17 => Persona::PrefersSms,
        _ => Persona::WhatsApp,
    };
    (number, persona)
}

/// Consents with proof from the checkout (a month ago): WhatsApp and SMS marketing for
/// everyone but those who never agreed.
pub fn consents(customers: &[(String, Persona)], at: DateTime<Utc>) -> Vec<Consent> {
    let mut out = Vec::with_capacity(customers.len() * 2);
    for (n, p) in customers {
        if *p == Persona::NoConsent {
            continue;
        }
        for channel in [ChannelKind::WhatsApp, ChannelKind::Sms] {
            out.push(Consent {
                phone: PhoneNumber::from_trusted(n.clone()),
                category: Category::Marketing,
                channel,
                granted_at: at,
                source: "checkout".into(),
                proof: "newsletter-checkbox-whatsapp-sms-v3".into(),
            });
        }
    }
    out
}

/// The flash sale, exactly as a campaign system would publish it.
pub fn flash_sale_job(customers: &[(String, Persona)]) -> Value {
    let recipients: Vec<Value> = customers
        .iter()
        .enumerate()
        .map(|(i, (n, p))| {
            let name = FIRST_NAMES[i % FIRST_NAMES.len()];
            let mut r = json!({
                "to": n,
                "vars": { "name": name },
                "components": [{"type": "body", "parameters": [
                    {"type": "text", "text": name}, {"type": "text", "text": "30 %"}]}],
            });
            if *p == Persona::PrefersSms {
                r["channel"] = json!("sms");
            }
            r
        })
        .collect();
    json!({
        "version": 1,
        "job_id": "sneaker-flash-sale-0001",
        "campaign_id": CAMPAIGN,
        "sender": SENDER,
        "template": {"name": "flash_sale", "language": "de", "category": "marketing"},
        "components": [{"type": "header", "parameters": [{"type": "image", "image": {"id": "4711"}}]}],
        "recipients": recipients,
        "sms": {"from": "ACME", "text": SMS_TEXT},
        "fallback": {"when": ["not_on_whatsapp", "failed"]},
        "follow_up": {
            "after": "PT24H", "if": "read", "unless": "converted",
            "template": {"name": "flash_sale_reminder", "language": "de", "category": "marketing"},
            "components": [{"type": "body", "parameters": [{"type": "text", "text": "10 %"}]}]
        }
    })
}

/// Whether the customer behind `key` orders, `percent` in 100 of them: a stable hash of the
/// key, so the same customers order on every run.
pub fn orders(key: &str, salt: &str, percent: u64) -> bool {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in salt.bytes().chain(key.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h % 100 < percent
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn customers_have_valid_numbers_and_a_mix_of_personas() {
        let mut personas = std::collections::HashMap::new();
        for i in 0..10_000 {
            let (n, p) = customer(i);
            assert!(PhoneNumber::parse(&n).is_ok(), "{n}");
            *personas.entry(p).or_insert(0) += 1;
        }
        assert_eq!(personas[&Persona::NoConsent], 60);
        assert_eq!(personas[&Persona::OptedOut], 40);
        assert_eq!(personas[&Persona::NotOnWhatsApp], 50);
        assert!((700..900).contains(&personas[&Persona::PrefersSms]));
    }

    #[test]
    fn the_job_parses_and_about_the_asked_share_orders() {
        let customers: Vec<_> = (0..2000).map(customer).collect();
        let job = crate::domain::Job::parse(flash_sale_job(&customers).to_string().as_bytes())
            .expect("the demo job is valid");
        assert!(job.follow_up.is_some() && job.fallback.is_some());
        let n = (0..10_000)
            .filter(|i| orders(&format!("k{i}"), "first", 15))
            .count();
        assert!((1300..1700).contains(&n), "{n}");
    }
}
