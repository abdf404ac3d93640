//! The job's follow-up rule (DESIGN §1.5 `follow_up`): a second message `after` the first
//! to those whose first message reached `if` (`sent` < `delivered` < `read`) and who did not
//! convert. Checked here; scheduled by the record stage and fired by the engine's timers.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::sms::{SmsVersion, iso_duration, placeholders};
use super::{TemplateRef, WireTemplate, check_component, template_ref};

/// Shortest `after`: a follow-up sooner than this is the same message twice.
pub const MIN_AFTER: Duration = Duration::from_secs(60);
/// Longest `after`: past this the campaign is over and consent may be stale.
pub const MAX_AFTER: Duration = Duration::from_secs(30 * 86_400);

/// How far the first message must have come (`if`). Ordered: `Sent < Delivered < Read`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reached {
    Sent,
    Delivered,
    Read,
}

impl Reached {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sent => "sent",
            Self::Delivered => "delivered",
            Self::Read => "read",
        }
    }

    fn parse(raw: &str) -> Option<Self> {
        [Self::Sent, Self::Delivered, Self::Read]
            .into_iter()
            .find(|r| r.as_str() == raw)
    }
}

/// A checked follow-up rule.
#[derive(Debug, Clone, PartialEq)]
pub struct FollowUpRule {
    /// From the first message's send to the follow-up.
    pub after: Duration,
    /// How far the first message must have come.
    pub reached: Reached,
    /// `unless: converted` (the default): no follow-up after a conversion was reported.
    pub unless_converted: bool,
    /// The follow-up's template (WhatsApp).
    pub template: TemplateRef,
    /// Its components, the Cloud API's shape.
    pub components: Arc<Vec<Value>>,
    /// The free-form session text for a customer whose customer-service window is open when
    /// the follow-up is due: sent instead of the template (it costs less, usually nothing).
    pub text: Option<String>,
    /// The follow-up's SMS version for those whose first message went by SMS (they prefer
    /// it): `sms_text` with the job's `sms.from`. Without it they get no follow-up.
    pub sms: Option<SmsVersion>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WireFollowUp {
    after: String,
    #[serde(default, rename = "if")]
    reached: Option<String>,
    #[serde(default)]
    unless: Option<String>,
    template: WireTemplate,
    #[serde(default)]
    components: Vec<Value>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    sms_text: Option<String>,
}

/// Checks `follow_up`; `sms_from` is the job's `sms.from`, when it has an SMS version.
/// Errors name the field under `follow_up.`.
pub(super) fn follow_up_rule(
    w: WireFollowUp,
    sms_from: Option<&str>,
) -> Result<FollowUpRule, (String, String)> {
    let field = |f: &str, r: &str| (format!("follow_up.{f}"), r.to_owned());
    let after = iso_duration(&w.after).map_err(|r| field("after", &r))?;
    if after < MIN_AFTER || after > MAX_AFTER {
        return Err(field(
            "after",
            "must be between 1 minute (PT1M) and 30 days (P30D)",
        ));
    }
    let reached = match w.reached.as_deref() {
        None => Reached::Sent,
        Some(raw) => Reached::parse(raw)
            .ok_or_else(|| field("if", "must be one of sent, delivered, read"))?,
    };
    let unless_converted = match w.unless.as_deref() {
        None | Some("converted") => true,
        Some("none") => false,
        Some(_) => return Err(field("unless", "must be \"converted\" or \"none\"")),
    };
    let template = template_ref(w.template).map_err(|(f, r)| (format!("follow_up.{f}"), r))?;
    for (i, c) in w.components.iter().enumerate() {
        check_component(c).map_err(|r| field(&format!("components[{i}]"), &r))?;
    }
    if w.text.as_deref().is_some_and(|t| t.trim().is_empty()) {
        return Err(field("text", "must not be empty"));
    }
    let sms = match w.sms_text {
        None => None,
        Some(text) => {
            let Some(from) = sms_from else {
                return Err(field(
                    "sms_text",
                    "needs the job's `sms` (its `from` sends the follow-up too)",
                ));
            };
            if text.trim().is_empty() {
                return Err(field("sms_text", "must not be empty"));
            }
            let names = placeholders(&text).map_err(|r| field("sms_text", &r))?;
            Some(SmsVersion {
                from: from.to_owned(),
                text,
                placeholders: names,
            })
        }
    };
    Ok(FollowUpRule {
        after,
        reached,
        unless_converted,
        template,
        components: Arc::new(w.components),
        text: w.text,
        sms,
    })
}
