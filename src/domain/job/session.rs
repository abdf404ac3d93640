//! The job's free-form session message (DESIGN §1.5 `session`): sent to recipients whose 24 h
//! customer-service window is open, in the Cloud API's own shape (`{"type":"text","text":{"body":
//! "…"}}`; a plain string as `text` is taken as its body). Checked here, before anything is sent.

use std::sync::Arc;

use serde_json::{Map, Value, json};

/// Free-form message types the Cloud API sends inside the window.
pub const SESSION_TYPES: [&str; 9] = [
    "text",
    "image",
    "video",
    "audio",
    "document",
    "sticker",
    "location",
    "contacts",
    "interactive",
];

/// Longest text body the Cloud API accepts.
pub const MAX_TEXT_CHARS: usize = 4096;

/// A checked session message: the fields of a Cloud API send after `to` (`type` and the
/// object under its name), ready to merge into the request.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionMessage {
    /// One of [`SESSION_TYPES`].
    pub kind: String,
    /// `{"type": kind, kind: {…}}`.
    pub fields: Arc<Map<String, Value>>,
}

impl SessionMessage {
    /// A plain text message.
    pub fn text(body: &str) -> Self {
        let mut fields = Map::new();
        fields.insert("type".into(), json!("text"));
        fields.insert("text".into(), json!({ "body": body, "preview_url": true }));
        Self {
            kind: "text".into(),
            fields: Arc::new(fields),
        }
    }

    /// The text body, for a text message.
    pub fn body(&self) -> Option<&str> {
        self.fields.get("text")?.get("body")?.as_str()
    }
}

/// Checks a `session` object; errors are (field under `at`, reason).
pub fn session_message(raw: Value, at: &str) -> Result<SessionMessage, (String, String)> {
    let field = |f: &str, r: &str| (format!("{at}.{f}"), r.to_owned());
    let Value::Object(mut m) = raw else {
        return Err((
            at.to_owned(),
            "must be an object like {\"type\":\"text\",\"text\":\"…\"}".into(),
        ));
    };
    let kind = match m.get("type") {
        Some(Value::String(t)) => t.clone(),
        Some(_) => return Err(field("type", "must be a string")),
        None => return Err(field("type", "missing field")),
    };
    if !SESSION_TYPES.contains(&kind.as_str()) {
        return Err(field(
            "type",
            &format!("must be one of {}", SESSION_TYPES.join(", ")),
        ));
    }
    if kind == "text" {
        let body = match m.remove("text") {
            Some(Value::String(body)) => body,
            Some(Value::Object(mut t)) => match t.remove("body") {
                Some(Value::String(body)) => return finish_text(body, t, at),
                _ => return Err(field("text.body", "must be a non-empty string")),
            },
            _ => {
                return Err(field(
                    "text",
                    "must be the message text (a string or {\"body\": …})",
                ));
            }
        };
        return finish_text(body, Map::new(), at);
    }
    match m.get(&kind) {
        Some(Value::Object(o)) if !o.is_empty() => {}
        _ => {
            return Err(field(
                &kind,
                &format!("a `{kind}` message needs its `{kind}` object"),
            ));
        }
    }
    let mut fields = Map::new();
    fields.insert("type".into(), Value::String(kind.clone()));
    fields.insert(kind.clone(), m.remove(&kind).unwrap_or(Value::Null));
    Ok(SessionMessage {
        kind,
        fields: Arc::new(fields),
    })
}

fn finish_text(
    body: String,
    mut text: Map<String, Value>,
    at: &str,
) -> Result<SessionMessage, (String, String)> {
    if body.trim().is_empty() {
        return Err((format!("{at}.text"), "must not be empty".into()));
    }
    let chars = body.chars().count();
    if chars > MAX_TEXT_CHARS {
        return Err((
            format!("{at}.text"),
            format!("is {chars} characters long; a text message holds at most {MAX_TEXT_CHARS}"),
        ));
    }
    text.insert("body".into(), Value::String(body));
    text.entry("preview_url").or_insert(Value::Bool(true));
    let mut fields = Map::new();
    fields.insert("type".into(), json!("text"));
    fields.insert("text".into(), Value::Object(text));
    Ok(SessionMessage {
        kind: "text".into(),
        fields: Arc::new(fields),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_text_as_a_string_becomes_the_cloud_apis_shape() {
        let s = session_message(json!({"type":"text","text":"Hallo Anna"}), "session").unwrap();
        assert_eq!(s.kind, "text");
        assert_eq!(s.body(), Some("Hallo Anna"));
        assert_eq!(
            Value::Object((*s.fields).clone()),
            json!({"type":"text","text":{"body":"Hallo Anna","preview_url":true}})
        );
        let own = session_message(
            json!({"type":"text","text":{"body":"x","preview_url":false}}),
            "session",
        )
        .unwrap();
        assert_eq!(own.fields["text"]["preview_url"], json!(false));
    }

    #[test]
    fn other_types_keep_their_object() {
        let s = session_message(
            json!({"type":"image","image":{"link":"https://acme.example/s.jpg"},"extra":1}),
            "session",
        )
        .unwrap();
        assert_eq!(
            Value::Object((*s.fields).clone()),
            json!({"type":"image","image":{"link":"https://acme.example/s.jpg"}})
        );
    }

    #[test]
    fn each_problem_names_its_field() {
        let err = |v: Value| session_message(v, "session").unwrap_err();
        assert_eq!(err(json!("hi")).0, "session");
        assert_eq!(err(json!({"text":"x"})).0, "session.type");
        assert_eq!(err(json!({"type":"template"})).0, "session.type");
        assert_eq!(err(json!({"type":"text","text":"  "})).0, "session.text");
        assert_eq!(
            err(json!({"type":"text","text":{"body":1}})).0,
            "session.text.body"
        );
        assert_eq!(err(json!({"type":"image"})).0, "session.image");
        let long = err(json!({"type":"text","text":"x".repeat(4097)}));
        assert!(long.1.contains("4097"), "{}", long.1);
    }
}
