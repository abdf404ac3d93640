//! The read endpoints herald syncs from: `GET /{version}/{waba_id}/message_templates` (paged
//! with Graph's cursors and an absolute `paging.next`) and `GET /{version}/{phone_number_id}`.
//! `fields` selects what is returned; fields the simulator does not model are left out
//! rather than refused, so clients asking for more of Meta's fields still work.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::http::header::HOST;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;

use super::config::{SimNumber, SimTemplate};
use super::errors::ApiError;
use super::hashing::stable_hash;
use super::state::Shared;
use super::{authorize, check_version};

/// Graph's page size when the client names none.
const DEFAULT_PAGE: usize = 25;
/// Graph's largest page for this edge.
const MAX_PAGE: usize = 1_000;

/// Requested field names; `None` = Graph's default (every field the simulator models).
struct Fields(Option<Vec<String>>);

impl Fields {
    fn parse(query: &HashMap<String, String>) -> Self {
        Self(query.get("fields").map(|f| {
            f.split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect()
        }))
    }

    fn wants(&self, field: &str) -> bool {
        self.0.as_ref().is_none_or(|f| f.iter().any(|x| x == field))
    }
}

pub async fn message_templates(
    State(sim): State<Arc<Shared>>,
    Path((version, waba_id)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    match template_page(&sim, &version, &waba_id, &query, &headers) {
        Ok(page) => Json(page).into_response(),
        Err(e) => e.into_response(),
    }
}

#[derive(Serialize)]
struct TemplatePage<'a> {
    data: Vec<TemplateView<'a>>,
    paging: Paging,
}

#[derive(Serialize)]
struct Paging {
    cursors: Cursors,
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<String>,
}

#[derive(Serialize)]
struct Cursors {
    before: String,
    after: String,
}

/// A template as the list shows it, in the fixture's field order.
#[derive(Serialize)]
struct TemplateView<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    language: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    category: Option<String>,
    id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    components: Option<&'a [Value]>,
}

fn template_page<'a>(
    sim: &'a Shared,
    version: &str,
    waba_id: &'a str,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Result<TemplatePage<'a>, ApiError> {
    check_version(version)?;
    authorize(sim, headers)?;
    let fields = Fields::parse(query);
    let limit = match query.get("limit") {
        None => DEFAULT_PAGE,
        Some(raw) => raw
            .parse::<usize>()
            .map_err(|_| {
                ApiError::invalid_parameter(format!("Param limit must be a number, got '{raw}'"))
            })?
            .clamp(1, MAX_PAGE),
    };
    let offset = match query.get("after") {
        None => 0,
        Some(cursor) => decode_cursor(cursor)
            .ok_or_else(|| ApiError::invalid_parameter(format!("Invalid cursor '{cursor}'")))?,
    };
    let all: Vec<&SimTemplate> = sim.templates_of(waba_id).collect();
    let start = offset.min(all.len());
    let end = (start + limit).min(all.len());
    let data = all[start..end]
        .iter()
        .map(|t| TemplateView {
            name: fields.wants("name").then_some(t.name.as_str()),
            language: fields.wants("language").then_some(t.language.as_str()),
            status: fields
                .wants("status")
                .then(|| serde_json::to_value(t.status).unwrap_or(Value::Null)),
            category: fields
                .wants("category")
                .then(|| t.category.as_str().to_ascii_uppercase()),
            id: template_id(t),
            components: fields
                .wants("components")
                .then_some(t.components.as_slice()),
        })
        .collect();
    let next = (end < all.len()).then(|| {
        let mut url = reqwest::Url::parse(&base_url(sim, headers))
            .expect("the base URL is built from a host and port");
        url.set_path(&format!("/{version}/{waba_id}/message_templates"));
        {
            let mut pairs = url.query_pairs_mut();
            if let Some(f) = query.get("fields") {
                pairs.append_pair("fields", f);
            }
            pairs.append_pair("limit", &limit.to_string());
            pairs.append_pair("after", &encode_cursor(end));
        }
        url.to_string()
    });
    Ok(TemplatePage {
        data,
        paging: Paging {
            cursors: Cursors {
                before: encode_cursor(start),
                after: encode_cursor(end),
            },
            next,
        },
    })
}

/// Where the client reached us: its `Host` header (right behind port mappings and proxies),
/// else the listening address.
fn base_url(sim: &Shared, headers: &HeaderMap) -> String {
    let host = headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| reqwest::Url::parse(&format!("http://{h}/")).is_ok())
        .map_or_else(|| sim.local_addr.to_string(), str::to_owned);
    format!("http://{host}/")
}

/// Cursors are opaque to clients; here they hide a position in the list.
fn encode_cursor(position: usize) -> String {
    hex::encode(format!("pos:{position}"))
}

fn decode_cursor(cursor: &str) -> Option<usize> {
    let raw = String::from_utf8(hex::decode(cursor).ok()?).ok()?;
    raw.strip_prefix("pos:")?.parse().ok()
}

/// The configured id, else a stable 16-digit one from name and language.
fn template_id(t: &SimTemplate) -> String {
    if let Some(id) = &t.id {
        return id.clone();
    }
    let hash = stable_hash(format!("{}\0{}", t.name, t.language).as_bytes());
    format!("{}", 1_000_000_000_000_000 + hash % 9_000_000_000_000_000)
}

pub async fn phone_number(
    State(sim): State<Arc<Shared>>,
    Path((version, phone_number_id)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let answer = (|| {
        check_version(&version)?;
        authorize(&sim, &headers)?;
        let number = sim
            .number(&phone_number_id)
            .ok_or_else(|| ApiError::unknown_object("get", &phone_number_id))?;
        Ok::<_, ApiError>(number_view(&number, &Fields::parse(&query)))
    })();
    match answer {
        Ok(view) => Json(view).into_response(),
        Err(e) => e.into_response(),
    }
}

/// The number as `phone-number.json` shows it, cut to the requested fields (`id` always).
fn number_view(n: &SimNumber, fields: &Fields) -> Value {
    let mut view = serde_json::Map::new();
    view.insert("id".into(), n.id.clone().into());
    let all = [
        (
            "display_phone_number",
            Value::from(n.display_phone_number.clone()),
        ),
        ("verified_name", n.verified_name.clone().into()),
        ("quality_rating", n.quality_rating.clone().into()),
        ("status", n.status.clone().into()),
        (
            "throughput",
            serde_json::json!({ "level": n.throughput_level }),
        ),
        (
            "whatsapp_business_manager_messaging_limit",
            n.messaging_limit.clone().into(),
        ),
    ];
    for (name, value) in all {
        if fields.wants(name) {
            view.insert(name.into(), value);
        }
    }
    Value::Object(view)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        for position in [0, 1, 25, 10_000] {
            assert_eq!(decode_cursor(&encode_cursor(position)), Some(position));
        }
        assert_eq!(decode_cursor("QVFIUmyy"), None);
        assert_eq!(decode_cursor(&hex::encode("pos:x")), None);
    }

    #[test]
    fn template_ids_are_stable_and_sixteen_digits() {
        let t = SimTemplate::approved("flash_sale", "de", crate::domain::Category::Marketing);
        let id = template_id(&t);
        assert_eq!(id.len(), 16);
        assert_eq!(id, template_id(&t.clone()));
        let other = SimTemplate::approved("flash_sale", "en", crate::domain::Category::Marketing);
        assert_ne!(id, template_id(&other));
    }

    #[test]
    fn fields_cut_the_number_but_keep_the_id() {
        let n = SimNumber::new("1");
        let mut q = HashMap::new();
        q.insert(
            "fields".to_owned(),
            "status,whatsapp_business_manager_messaging_limit,quality_score".to_owned(),
        );
        let v = number_view(&n, &Fields::parse(&q));
        assert_eq!(
            v,
            serde_json::json!({"id": "1", "status": "CONNECTED",
                "whatsapp_business_manager_messaging_limit": "TIER_UNLIMITED"})
        );
        let all = number_view(&n, &Fields::parse(&HashMap::new()));
        assert_eq!(all["throughput"]["level"], "STANDARD");
    }
}
