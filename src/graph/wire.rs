//! Meta's JSON shapes, as sent and received (see `tests/fixtures/graph/`).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The body of `POST /{phone_number_id}/messages` for a template.
#[derive(Debug, Serialize)]
pub struct SendTemplate<'a> {
    pub messaging_product: &'static str,
    pub recipient_type: &'static str,
    pub to: &'a str,
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// herald's idempotency key, echoed back on every status webhook.
    pub biz_opaque_callback_data: &'a str,
    pub template: TemplateBody<'a>,
}

#[derive(Debug, Serialize)]
pub struct TemplateBody<'a> {
    pub name: &'a str,
    pub language: Language<'a>,
    #[serde(skip_serializing_if = "<[Value]>::is_empty")]
    pub components: &'a [Value],
}

#[derive(Debug, Serialize)]
pub struct Language<'a> {
    pub code: &'a str,
}

impl<'a> SendTemplate<'a> {
    pub fn new(
        to: &'a str,
        key: &'a str,
        name: &'a str,
        language: &'a str,
        components: &'a [Value],
    ) -> Self {
        Self {
            messaging_product: "whatsapp",
            recipient_type: "individual",
            to,
            kind: "template",
            biz_opaque_callback_data: key,
            template: TemplateBody {
                name,
                language: Language { code: language },
                components,
            },
        }
    }
}

/// The body of `POST /{phone_number_id}/messages` for a free-form session message: the
/// envelope, then the message's own `type` and object (`"text": {"body": …}`, `"image": …`).
#[derive(Debug, Serialize)]
pub struct SendSession<'a> {
    pub messaging_product: &'static str,
    pub recipient_type: &'static str,
    pub to: &'a str,
    /// herald's idempotency key, echoed back on every status webhook.
    pub biz_opaque_callback_data: &'a str,
    #[serde(flatten)]
    pub message: &'a serde_json::Map<String, Value>,
}

impl<'a> SendSession<'a> {
    pub fn new(to: &'a str, key: &'a str, message: &'a serde_json::Map<String, Value>) -> Self {
        Self {
            messaging_product: "whatsapp",
            recipient_type: "individual",
            to,
            biz_opaque_callback_data: key,
            message,
        }
    }
}

/// A 200 answer to a send.
#[derive(Debug, Deserialize)]
pub struct SendAccepted {
    pub messages: Vec<AcceptedMessage>,
}

#[derive(Debug, Deserialize)]
pub struct AcceptedMessage {
    pub id: String,
    /// accepted, held_for_quality_assessment or paused.
    #[serde(default)]
    pub message_status: Option<String>,
}

/// Graph's error envelope.
#[derive(Debug, Deserialize)]
pub struct ErrorEnvelope {
    pub error: ErrorBody,
}

#[derive(Debug, Deserialize)]
pub struct ErrorBody {
    #[serde(default)]
    pub message: String,
    pub code: i64,
    #[serde(default)]
    pub error_data: Option<ErrorData>,
    #[serde(default)]
    pub fbtrace_id: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct ErrorData {
    #[serde(default)]
    pub details: Option<String>,
}

/// One page of `GET /{waba_id}/message_templates`.
#[derive(Debug, Deserialize)]
pub struct TemplatePage {
    pub data: Vec<TemplateInfo>,
    #[serde(default)]
    pub paging: Option<Paging>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TemplateInfo {
    pub name: String,
    pub language: String,
    pub status: String,
    pub category: String,
    #[serde(default)]
    pub id: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Paging {
    #[serde(default)]
    pub next: Option<String>,
}

/// `GET /{phone_number_id}?fields=…`.
#[derive(Debug, Clone, Deserialize)]
pub struct PhoneNumberInfo {
    pub id: String,
    #[serde(default)]
    pub display_phone_number: Option<String>,
    #[serde(default)]
    pub verified_name: Option<String>,
    #[serde(default)]
    pub quality_rating: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub throughput: Option<Throughput>,
    #[serde(default)]
    pub whatsapp_business_manager_messaging_limit: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Throughput {
    #[serde(default)]
    pub level: Option<String>,
}

impl PhoneNumberInfo {
    /// Messages per second for the number's throughput level (STANDARD 80, HIGH 1,000).
    pub fn rate_per_sec(&self) -> u32 {
        match self.throughput.as_ref().and_then(|t| t.level.as_deref()) {
            Some("HIGH") => 1000,
            _ => 80,
        }
    }

    /// Unique users per 24 h for the portfolio's tier; `None` = unlimited or unknown.
    pub fn tier_limit(&self) -> Option<u32> {
        match self.whatsapp_business_manager_messaging_limit.as_deref()? {
            "TIER_250" => Some(250),
            "TIER_1K" => Some(1_000),
            "TIER_2K" => Some(2_000),
            "TIER_10K" => Some(10_000),
            "TIER_100K" => Some(100_000),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        let path = format!("{}/tests/fixtures/graph/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn success_and_held_answers_parse() {
        let ok: SendAccepted = serde_json::from_str(&fixture("send-success.json")).unwrap();
        assert!(ok.messages[0].id.starts_with("wamid."));
        assert_eq!(ok.messages[0].message_status.as_deref(), Some("accepted"));
        let held: SendAccepted = serde_json::from_str(&fixture("send-held.json")).unwrap();
        assert_eq!(
            held.messages[0].message_status.as_deref(),
            Some("held_for_quality_assessment")
        );
    }

    #[test]
    fn every_error_fixture_parses_to_its_code() {
        for code in [
            100, 130429, 131016, 131026, 131042, 131048, 131056, 132001, 132015, 190,
        ] {
            let e: ErrorEnvelope =
                serde_json::from_str(&fixture(&format!("error-{code}.json"))).unwrap();
            assert_eq!(e.error.code, code);
        }
    }

    #[test]
    fn template_pages_and_phone_fields_parse() {
        let p: TemplatePage = serde_json::from_str(&fixture("message-templates.json")).unwrap();
        assert_eq!(p.data.len(), 4);
        assert!(p.paging.unwrap().next.is_some());
        let p2: TemplatePage =
            serde_json::from_str(&fixture("message-templates-page2.json")).unwrap();
        assert!(p2.paging.and_then(|p| p.next).is_none());
        let n: PhoneNumberInfo = serde_json::from_str(&fixture("phone-number.json")).unwrap();
        assert_eq!(n.tier_limit(), Some(10_000));
        assert_eq!(n.rate_per_sec(), 80);
        assert_eq!(n.status.as_deref(), Some("CONNECTED"));
    }

    #[test]
    fn the_send_body_has_metas_shape() {
        let comps = vec![serde_json::json!({"type": "body", "parameters": []})];
        let body = SendTemplate::new("+4915112345678", "k:1", "flash_sale", "de", &comps);
        let v = serde_json::to_value(&body).unwrap();
        assert_eq!(v["messaging_product"], "whatsapp");
        assert_eq!(v["type"], "template");
        assert_eq!(v["to"], "+4915112345678");
        assert_eq!(v["biz_opaque_callback_data"], "k:1");
        assert_eq!(v["template"]["language"]["code"], "de");
        assert_eq!(v["template"]["components"][0]["type"], "body");
    }
}
