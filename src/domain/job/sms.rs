//! The job's channel fields (DESIGN §1.5): the SMS version of the message (`sms.from`,
//! `sms.text` with `{{name}}` placeholders filled from `recipients[].vars`) and the fallback
//! rule (`fallback.when`, `fallback.undelivered_after` as an ISO 8601 duration).

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::domain::{FallbackRule, FallbackTrigger};

/// The simple version of the message, for SMS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmsVersion {
    /// Sender ID: up to 11 letters/digits, or a number (reply-able traffic needs one).
    pub from: String,
    /// The text, `{{name}}` placeholders unfilled.
    pub text: String,
    /// The placeholders `text` uses, in order of first use.
    pub placeholders: Vec<String>,
}

impl SmsVersion {
    /// The text for one recipient. Every placeholder is defined for every recipient who may
    /// get the SMS (checked at parse); a missing one would render empty.
    pub fn render(&self, vars: Option<&Map<String, Value>>) -> String {
        let mut out = String::with_capacity(self.text.len());
        let mut rest = self.text.as_str();
        while let Some(open) = rest.find("{{") {
            out.push_str(&rest[..open]);
            let after = &rest[open + 2..];
            let close = after
                .find("}}")
                .expect("placeholders are closed (checked at parse)");
            let name = after[..close].trim();
            match vars.and_then(|v| v.get(name)) {
                Some(Value::String(s)) => out.push_str(s),
                Some(other) => out.push_str(&other.to_string()),
                None => {}
            }
            rest = &after[close + 2..];
        }
        out.push_str(rest);
        out
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WireSms {
    from: String,
    text: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WireFallback {
    when: Vec<FallbackTrigger>,
    #[serde(default)]
    undelivered_after: Option<String>,
}

/// Checks `sms`; errors name the field under `sms.`.
pub(super) fn sms_version(w: WireSms) -> Result<SmsVersion, (&'static str, String)> {
    let from = w.from.trim();
    let alnum = from.len() <= 11
        && from.chars().any(|c| c.is_ascii_alphabetic())
        && from.chars().all(|c| c.is_ascii_alphanumeric() || c == ' ');
    let number = from.strip_prefix('+').unwrap_or(from);
    let numeric = (3..=15).contains(&number.len()) && number.bytes().all(|b| b.is_ascii_digit());
    if !alnum && !numeric {
        return Err((
            "sms.from",
            "must be a sender ID of up to 11 letters and digits, or a phone number".into(),
        ));
    }
    if w.text.trim().is_empty() {
        return Err(("sms.text", "must not be empty".into()));
    }
    let placeholders = placeholders(&w.text).map_err(|r| ("sms.text", r))?;
    Ok(SmsVersion {
        from: from.to_owned(),
        text: w.text,
        placeholders,
    })
}

/// The `{{name}}` placeholders of `text`, in order of first use.
pub(super) fn placeholders(text: &str) -> Result<Vec<String>, String> {
    let mut names: Vec<String> = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else {
            return Err("has a `{{` without a closing `}}`".into());
        };
        let name = after[..close].trim();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err("placeholders are `{{name}}` with letters, digits and `_`".into());
        }
        if !names.iter().any(|n| n == name) {
            names.push(name.to_owned());
        }
        rest = &after[close + 2..];
    }
    Ok(names)
}

/// Checks `fallback`; errors name the field under `fallback.`.
pub(super) fn fallback_rule(w: WireFallback) -> Result<FallbackRule, (&'static str, String)> {
    if w.when.is_empty() {
        return Err(("fallback.when", "must name at least one trigger".into()));
    }
    let undelivered_after = match w.undelivered_after.as_deref() {
        None => None,
        Some(raw) => Some(iso_duration(raw).map_err(|r| ("fallback.undelivered_after", r))?),
    };
    let rule = FallbackRule {
        when: w.when,
        undelivered_after,
    };
    if rule.on(FallbackTrigger::Undelivered) && rule.undelivered_after.is_none() {
        return Err((
            "fallback.undelivered_after",
            "is required when `when` has \"undelivered\"".into(),
        ));
    }
    Ok(rule)
}

/// An ISO 8601 duration of days, hours, minutes and seconds: `PT30M`, `PT24H`, `P1DT12H`.
/// Years, months and weeks have no fixed length and are refused.
pub fn iso_duration(raw: &str) -> Result<Duration, String> {
    const HINT: &str = "must be an ISO 8601 duration such as PT30M or PT24H";
    let rest = raw.strip_prefix('P').ok_or(HINT)?;
    let (date, time) = match rest.split_once('T') {
        Some((d, t)) if !t.is_empty() => (d, Some(t)),
        Some(_) => return Err(HINT.into()),
        None => (rest, None),
    };
    let mut secs: u64 = 0;
    let mut any = false;
    let mut add = |part: &str, units: &[(char, u64)]| -> Result<(), String> {
        let mut number = String::new();
        let mut allowed = units.iter();
        for c in part.chars() {
            if c.is_ascii_digit() {
                number.push(c);
                continue;
            }
            let factor = allowed
                .by_ref()
                .find(|(u, _)| *u == c)
                .map(|(_, f)| *f)
                .ok_or(HINT)?;
            let n: u64 = number.parse().map_err(|_| HINT)?;
            secs = n
                .checked_mul(factor)
                .and_then(|s| secs.checked_add(s))
                .ok_or(HINT)?;
            number.clear();
            any = true;
        }
        if number.is_empty() {
            Ok(())
        } else {
            Err(HINT.into())
        }
    };
    add(date, &[('D', 86_400)])?;
    if let Some(t) = time {
        add(t, &[('H', 3_600), ('M', 60), ('S', 1)])?;
    }
    if !any || secs == 0 {
        return Err(HINT.into());
    }
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_days_hours_minutes_seconds() {
        assert_eq!(iso_duration("PT30M"), Ok(Duration::from_secs(1800)));
        assert_eq!(iso_duration("PT24H"), Ok(Duration::from_secs(86_400)));
        assert_eq!(iso_duration("P1DT12H"), Ok(Duration::from_secs(129_600)));
        assert_eq!(iso_duration("PT1H30M15S"), Ok(Duration::from_secs(5415)));
        assert_eq!(iso_duration("P2D"), Ok(Duration::from_secs(172_800)));
        for bad in [
            "30M", "PT", "P", "PT0M", "P1M", "PT30", "PTM", "PT5M1H", "P1Y", "PT-5M", "",
        ] {
            assert!(iso_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn placeholders_are_found_once_and_filled_per_recipient() {
        let sms = sms_version(WireSms {
            from: "ACME".into(),
            text: "Hi {{name}}, -30 % for {{ name }} in {{city}}".into(),
        })
        .unwrap();
        assert_eq!(sms.placeholders, ["name", "city"]);
        let vars = serde_json::json!({ "name": "Anna", "city": "Köln" });
        assert_eq!(
            sms.render(vars.as_object()),
            "Hi Anna, -30 % for Anna in Köln"
        );
    }

    #[test]
    fn bad_sms_fields_are_named() {
        let check = |from: &str, text: &str| {
            sms_version(WireSms {
                from: from.into(),
                text: text.into(),
            })
            .err()
            .map(|(f, _)| f)
        };
        assert_eq!(check("ACME", "ok"), None);
        assert_eq!(check("+4915112345678", "ok"), None);
        assert_eq!(check("ACME-SHOP-GERMANY", "ok"), Some("sms.from"));
        assert_eq!(check("", "ok"), Some("sms.from"));
        assert_eq!(check("ACME", "  "), Some("sms.text"));
        assert_eq!(check("ACME", "Hi {{name"), Some("sms.text"));
        assert_eq!(check("ACME", "Hi {{first name}}"), Some("sms.text"));
    }

    #[test]
    fn undelivered_needs_its_deadline() {
        let rule = |when: Vec<FallbackTrigger>, after: Option<&str>| {
            fallback_rule(WireFallback {
                when,
                undelivered_after: after.map(str::to_owned),
            })
        };
        assert!(rule(vec![FallbackTrigger::Undelivered], Some("PT30M")).is_ok());
        assert_eq!(
            rule(vec![FallbackTrigger::Undelivered], None)
                .unwrap_err()
                .0,
            "fallback.undelivered_after"
        );
        assert!(rule(vec![FallbackTrigger::NotOnWhatsapp], None).is_ok());
        assert_eq!(rule(vec![], None).unwrap_err().0, "fallback.when");
    }
}
