//! Scoped tokens and the audit log end to end: `herald serve`'s real router on a free port,
//! each role × each admin route answering 200, 401 or 403 as the access table says, one audit
//! row per call by a known caller with the right actor (none for an unknown token), an analyst
//! never shown a full number, contact export and erasure for `privacy` only and audited by
//! keyed hash, a revocation holding at once on another store instance (Postgres), and the
//! `herald tokens` / `herald audit` commands as the real binary. Store cases for tokens and
//! the audit log run on both dialects.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use herald::domain::{
    ApiToken, AuditEntry, CampaignId, Category, ChannelKind, Clock, IdempotencyKey, JobId, Outcome,
    PhoneNumber, Role, SenderId, TokenName, TokenSecret,
};
use herald::http::{self, OptOutWords, ServeConfig, WebhookConfig};
use herald::policy::retention::{DataClass, RetentionPolicy};
use herald::store::{Claim, Consent, OutcomeRecord, Store};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::support;

const BOOTSTRAP: &str = "bootstrap-secret-0123456789";
const CAMPAIGN: &str = "roles-bf";
const ANNA: &str = "+4915123456789";
const JONAS: &str = "+4917698765432";
/// Meta's wamid encodes the number: an analyst must not get it either.
const WAMID_ANNA: &str = "wamid.HBgNNDkxNTEyMzQ1Njc4ORUCABEYEjQ5RDVCRTI3OUI2QkM1NjJBMAA=";

// --- a serve on a free port --------------------------------------------------------------------

struct Serve {
    base: String,
    client: reqwest::Client,
    clock: Clock,
    shutdown: CancellationToken,
}

impl Serve {
    async fn start(store: Arc<dyn Store>, bootstrap: Option<&str>) -> Serve {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let clock = Clock::system();
        let config = ServeConfig {
            webhooks: WebhookConfig {
                app_secret: "test-app-secret".into(),
                verify_token: None,
                opt_out: OptOutWords::default(),
                clock: clock.clone(),
                rate_card: Arc::new(herald::policy::cost::RateCard::builtin()),
                recipient_events: None,
            },
            admin_token: bootstrap.map(String::from),
            shutdown_delay: Duration::ZERO,
            drain: Duration::from_secs(5),
        };
        let shutdown = CancellationToken::new();
        tokio::spawn(http::run(listener, store, config, shutdown.clone()));
        let client = reqwest::Client::new();
        for _ in 0..500 {
            if let Ok(r) = client.get(format!("{base}/readyz")).send().await
                && r.status() == 200
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Serve {
            base,
            client,
            clock,
            shutdown,
        }
    }

    /// Status and body of one call with `token` (none: no Authorization header).
    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, String) {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.expect("request");
        (r.status().as_u16(), r.text().await.unwrap())
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

// --- seeding -----------------------------------------------------------------------------------

/// A campaign with Anna sent (her wamid kept) and Jonas sent, both with consents.
async fn seed(store: &Arc<dyn Store>) {
    support::seed(store, &support::sender(support::SENDER, 80)).await;
    let consents: Vec<Consent> = [ANNA, JONAS]
        .iter()
        .map(|n| Consent {
            phone: PhoneNumber::parse(n).unwrap(),
            category: Category::Marketing,
            channel: ChannelKind::WhatsApp,
            granted_at: Utc::now() - chrono::Duration::days(3),
            source: "checkout".into(),
            proof: "checkbox v3".into(),
        })
        .collect();
    store.grant_consents(&consents).await.unwrap();
    let campaign = CampaignId::parse(CAMPAIGN).unwrap();
    store.ensure_campaign(&campaign).await.unwrap();
    // A campaign system that put the number into its own key.
    for (key, to, wamid) in [
        ("k:roles-bf:anna", ANNA, WAMID_ANNA),
        ("order-4917698765432", JONAS, "wamid.jonas"),
    ] {
        let key = IdempotencyKey::parse(key).unwrap();
        store
            .claim(
                "seed",
                Duration::from_secs(60),
                &[Claim {
                    key: key.clone(),
                    campaign: campaign.clone(),
                    job: JobId::parse("j1").unwrap(),
                    sender: SenderId::parse(support::SENDER).unwrap(),
                    recipient: to.into(),
                    template: "flash_sale".into(),
                    language: "de".into(),
                    category: Category::Marketing,
                    channel: ChannelKind::WhatsApp,
                }],
            )
            .await
            .unwrap();
        store
            .mark_sending("seed", std::slice::from_ref(&key))
            .await
            .unwrap();
        store
            .record_outcomes(&[OutcomeRecord {
                key,
                outcome: Outcome::Sent {
                    wamid: wamid.into(),
                },
                attempts: 1,
            }])
            .await
            .unwrap();
    }
}

/// A token of `role` named `name`, stored; returns its secret.
async fn token(store: &Arc<dyn Store>, name: &str, role: Role) -> String {
    token_expiring(store, name, role, None).await
}

async fn token_expiring(
    store: &Arc<dyn Store>,
    name: &str,
    role: Role,
    expires_at: Option<chrono::DateTime<Utc>>,
) -> String {
    let secret = TokenSecret::generate();
    let created = store
        .create_token(&ApiToken {
            name: TokenName::parse(name).unwrap(),
            role,
            secret_hash: secret.hash(),
            created_at: Utc::now(),
            expires_at,
            revoked_at: None,
            last_used_at: None,
        })
        .await
        .unwrap();
    assert!(created, "{name}");
    secret.expose().to_owned()
}

async fn audit_rows(store: &Arc<dyn Store>) -> Vec<herald::domain::AuditRecord> {
    store.audit_entries(None, 10_000).await.unwrap()
}

// --- the matrix --------------------------------------------------------------------------------

/// One admin route: how it is called, its audit action, and the roles that may call it.
struct Route {
    method: Method,
    path: String,
    body: Option<Value>,
    action: &'static str,
    allowed: &'static [Role],
}

fn routes() -> Vec<Route> {
    use Role::*;
    let order = |id: &str| {
        json!({"version": 1, "event_id": id, "campaign_id": CAMPAIGN, "to": ANNA,
               "event": "order", "at": Utc::now().to_rfc3339(),
               "value": {"amount": "89.90", "currency": "EUR"}})
    };
    let r = |method: Method, path: &str, body: Option<Value>, action, allowed| Route {
        method,
        path: path.to_owned(),
        body,
        action,
        allowed,
    };
    vec![
        r(
            Method::GET,
            &format!("/api/campaigns/{CAMPAIGN}"),
            None,
            "campaign.read",
            &[Operator, Analyst],
        ),
        r(
            Method::GET,
            &format!("/api/campaigns/{CAMPAIGN}/report"),
            None,
            "campaign.report",
            &[Operator, Analyst],
        ),
        r(
            Method::GET,
            &format!("/api/campaigns/{CAMPAIGN}/costs"),
            None,
            "campaign.costs",
            &[Operator, Analyst],
        ),
        r(
            Method::POST,
            &format!("/api/campaigns/{CAMPAIGN}/pause"),
            Some(json!({"reason": "matrix"})),
            "campaign.pause",
            &[Operator],
        ),
        r(
            Method::POST,
            &format!("/api/campaigns/{CAMPAIGN}/resume"),
            None,
            "campaign.resume",
            &[Operator],
        ),
        r(
            Method::POST,
            "/api/campaigns/roles-other/budget",
            Some(json!({"amount": "25.50"})),
            "campaign.budget",
            &[Operator],
        ),
        r(
            Method::POST,
            "/api/campaigns/roles-cancel/cancel",
            None,
            "campaign.cancel",
            &[Operator],
        ),
        r(
            Method::POST,
            "/api/conversions",
            Some(order("order-1")),
            "conversions.ingest",
            &[Operator, Ingest],
        ),
        r(
            Method::GET,
            &format!("/api/contacts/{ANNA}"),
            None,
            "contact.export",
            &[Privacy],
        ),
        r(Method::GET, "/api/audit", None, "audit.read", &[Privacy]),
        r(
            Method::DELETE,
            &format!("/api/contacts/{JONAS}"),
            None,
            "contact.erase",
            &[Privacy],
        ),
    ]
}

/// No part of a full number of the campaign: its digits, or Anna's wamid.
fn assert_no_number(body: &str, context: &str) {
    for n in [ANNA, JONAS] {
        let digits = n.trim_start_matches('+');
        assert!(!body.contains(digits), "{context}: a full number in {body}");
    }
    assert!(!body.contains(WAMID_ANNA), "{context}: a wamid in {body}");
}

#[tokio::test]
async fn every_role_gets_200_on_its_routes_403_on_the_others_and_each_call_one_audit_row() {
    support::configure_hash_key();
    let (store, _dir) = support::sqlite_store().await;
    seed(&store).await;
    let mut callers: Vec<(Option<Role>, String, String)> = Vec::new();
    for role in Role::ALL {
        let name = format!("{role}-1");
        let secret = token(&store, &name, role).await;
        callers.push((Some(role), secret, format!("token:{name}")));
    }
    // HERALD_ADMIN_TOKEN: an operator.
    callers.push((None, BOOTSTRAP.into(), "bootstrap".into()));
    let serve = Serve::start(Arc::clone(&store), Some(BOOTSTRAP)).await;

    for route in routes() {
        for (role, secret, actor) in &callers {
            let effective = role.unwrap_or(Role::Operator);
            let before = audit_rows(&store).await.len();
            let (status, body) = serve
                .call(
                    route.method.clone(),
                    &route.path,
                    Some(secret),
                    route.body.clone(),
                )
                .await;
            let context = format!("{} {} as {actor}", route.method, route.path);
            let allowed = route.allowed.contains(&effective);
            assert_eq!(status, if allowed { 200 } else { 403 }, "{context}: {body}");
            if effective == Role::Analyst {
                assert_no_number(&body, &context);
            }
            let rows = audit_rows(&store).await;
            assert_eq!(rows.len(), before + 1, "{context}: one audit row per call");
            let row = &rows[0];
            assert_eq!(row.actor, *actor, "{context}");
            assert_eq!(row.action, route.action, "{context}");
            assert_eq!(
                row.result,
                if allowed { "ok" } else { "denied" },
                "{context}"
            );
            assert!(
                row.route
                    .as_deref()
                    .is_some_and(|r| r.starts_with(route.method.as_str())),
                "{context}: {row:?}"
            );
            assert_no_number(&format!("{row:?}"), &context);
        }
        // No token, an unknown one, a wrong bootstrap: 401 and no row.
        let before = audit_rows(&store).await.len();
        let fake = TokenSecret::generate();
        for token in [
            None,
            Some(fake.expose()),
            Some("bootstrap-secret-0123456788"),
        ] {
            let (status, body) = serve
                .call(route.method.clone(), &route.path, token, route.body.clone())
                .await;
            assert_eq!(
                status, 401,
                "{} {} with {token:?}: {body}",
                route.method, route.path
            );
        }
        assert_eq!(
            audit_rows(&store).await.len(),
            before,
            "no audit row without a known caller"
        );
    }
}

#[tokio::test]
async fn an_analyst_sees_status_report_and_costs_with_every_number_masked() {
    let (store, _dir) = support::sqlite_store().await;
    seed(&store).await;
    let analyst = token(&store, "grafana", Role::Analyst).await;
    let serve = Serve::start(Arc::clone(&store), None).await;
    let (status, body) = serve
        .call(
            Method::GET,
            &format!("/api/campaigns/{CAMPAIGN}/report?limit=1"),
            Some(&analyst),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let page: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(page["rows"].as_array().unwrap().len(), 1);
    let next = page["next"].as_u64().expect("a second page");
    assert_eq!(next, 1);
    let (status, body2) = serve
        .call(
            Method::GET,
            &format!("/api/campaigns/{CAMPAIGN}/report?limit=1&offset={next}"),
            Some(&analyst),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body2}");
    let page2: Value = serde_json::from_str(&body2).unwrap();
    let row = &page2["rows"][0];
    assert_eq!(page2["next"], 2);
    assert_eq!(row["recipient"], "+49176****432", "{page2}");
    // The campaign system's key held the number: shown masked.
    assert!(
        row["key"].as_str().unwrap().starts_with("order-491769"),
        "{row}"
    );
    assert!(row.get("wamid").is_none(), "{row}");
    for b in [&body, &body2] {
        assert_no_number(b, "report");
    }
    let (status, costs) = serve
        .call(
            Method::GET,
            &format!("/api/campaigns/{CAMPAIGN}/costs"),
            Some(&analyst),
            None,
        )
        .await;
    assert_eq!(status, 200, "{costs}");
    let v: Value = serde_json::from_str(&costs).unwrap();
    assert_eq!(v["channels"]["whatsapp"]["sent"], 2, "{v}");
    assert!(
        v["estimated_cost"].as_str().unwrap().ends_with("USD"),
        "{v}"
    );
    assert_no_number(&costs, "costs");
    let (status, _) = serve
        .call(
            Method::GET,
            "/api/campaigns/nope/costs",
            Some(&analyst),
            None,
        )
        .await;
    assert_eq!(status, 404);
    assert_eq!(audit_rows(&store).await[0].result, "not_found");
    let (status, _) = serve
        .call(
            Method::GET,
            &format!("/api/campaigns/{CAMPAIGN}/report?limit=0"),
            Some(&analyst),
            None,
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        audit_rows(&store).await[0]
            .result
            .starts_with("error: limit")
    );
}

#[tokio::test]
async fn export_and_erasure_are_for_privacy_and_audited_by_keyed_hash() {
    support::configure_hash_key();
    let (store, _dir) = support::sqlite_store().await;
    seed(&store).await;
    let privacy = token(&store, "dpo", Role::Privacy).await;
    let serve = Serve::start(Arc::clone(&store), Some(BOOTSTRAP)).await;
    let anna = PhoneNumber::parse(ANNA).unwrap();
    let expected = herald::store::contact_ref(&anna);
    assert!(expected.starts_with("contact:") && expected.len() == 8 + 64);

    // The bootstrap token is an operator: no personal data.
    let path = format!("/api/contacts/{ANNA}");
    let (status, body) = serve.call(Method::GET, &path, Some(BOOTSTRAP), None).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("privacy"), "{body}");

    let (status, body) = serve.call(Method::GET, &path, Some(&privacy), None).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = serve
        .call(Method::DELETE, &path, Some(&privacy), None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_no_number(&body, "erasure answer");

    let rows = audit_rows(&store).await;
    let summary: Vec<(&str, &str, &str, Option<&str>)> = rows
        .iter()
        .rev()
        .map(|r| {
            (
                r.actor.as_str(),
                r.action.as_str(),
                r.result.as_str(),
                r.target.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                "bootstrap",
                "contact.export",
                "denied",
                Some(expected.as_str())
            ),
            ("token:dpo", "contact.export", "ok", Some(expected.as_str())),
            ("token:dpo", "contact.erase", "ok", Some(expected.as_str())),
        ]
    );
    assert_eq!(
        rows[0].route.as_deref(),
        Some("DELETE /api/contacts/{phone}")
    );
    // The privacy role reads the log over the API, with a filter.
    let (status, body) = serve
        .call(
            Method::GET,
            "/api/audit?since=1h&limit=2",
            Some(&privacy),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let entries = v["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{v}");
    assert_eq!(entries[0]["action"], "contact.erase");
    assert_no_number(&body, "audit");
    let (status, _) = serve
        .call(
            Method::GET,
            "/api/audit?since=yesterday",
            Some(&privacy),
            None,
        )
        .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn without_any_token_the_api_is_disabled_until_one_is_created() {
    let (store, _dir) = support::sqlite_store().await;
    seed(&store).await;
    let serve = Serve::start(Arc::clone(&store), None).await;
    let path = format!("/api/campaigns/{CAMPAIGN}");
    let (status, body) = serve
        .call(Method::GET, &path, Some("hrld_guess"), None)
        .await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains("HERALD_ADMIN_TOKEN") && body.contains("herald tokens create"),
        "{body}"
    );
    // A token created now works at once: nothing is cached.
    let analyst = token(&store, "late", Role::Analyst).await;
    assert_eq!(
        serve.call(Method::GET, &path, Some(&analyst), None).await.0,
        200
    );
    // From now on an unknown token is a 401, not "disabled".
    assert_eq!(
        serve
            .call(Method::GET, &path, Some("hrld_guess"), None)
            .await
            .0,
        401
    );
    assert!(audit_rows(&store).await.len() == 1);
}

#[tokio::test]
async fn revoked_and_expired_tokens_answer_401_at_once() {
    let (store, _dir) = support::sqlite_store().await;
    seed(&store).await;
    let path = format!("/api/campaigns/{CAMPAIGN}");
    let op = token(&store, "ops", Role::Operator).await;
    let short = token_expiring(
        &store,
        "short",
        Role::Operator,
        Some(Utc::now() + chrono::Duration::hours(1)),
    )
    .await;
    let serve = Serve::start(Arc::clone(&store), None).await;
    assert_eq!(serve.call(Method::GET, &path, Some(&op), None).await.0, 200);
    assert_eq!(
        serve.call(Method::GET, &path, Some(&short), None).await.0,
        200
    );
    let used = store.api_tokens().await.unwrap();
    assert!(used.iter().all(|t| t.last_used_at.is_some()), "{used:?}");

    store
        .revoke_token("ops", Utc::now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(serve.call(Method::GET, &path, Some(&op), None).await.0, 401);
    // herald's clock, two hours on: the short-lived token has expired.
    serve.clock.advance(Duration::from_secs(2 * 3600));
    assert_eq!(
        serve.call(Method::GET, &path, Some(&short), None).await.0,
        401
    );
    assert_eq!(
        audit_rows(&store).await.len(),
        2,
        "only the two accepted calls"
    );
}

#[tokio::test]
async fn a_revocation_holds_at_once_for_another_process_on_postgres() {
    let Some(url) = support::postgres_url().await else {
        return;
    };
    // Two store instances, two pools: as `herald tokens revoke` and a running serve.
    let served = herald::store::open(&url).await.unwrap();
    let cli = herald::store::open(&url).await.unwrap();
    seed(&served).await;
    let secret = token(&cli, "shop", Role::Ingest).await;
    let serve = Serve::start(Arc::clone(&served), None).await;
    let order = json!({"version": 1, "event_id": "pg-1", "campaign_id": CAMPAIGN, "to": ANNA,
        "event": "order", "at": Utc::now().to_rfc3339(),
        "value": {"amount": "10", "currency": "EUR"}});
    let (status, body) = serve
        .call(
            Method::POST,
            "/api/conversions",
            Some(&secret),
            Some(order.clone()),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    cli.revoke_token("shop", Utc::now()).await.unwrap().unwrap();
    let (status, _) = serve
        .call(Method::POST, "/api/conversions", Some(&secret), Some(order))
        .await;
    assert_eq!(
        status, 401,
        "revoked in another process: refused on the next request"
    );
    let rows = audit_rows(&cli).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (
            rows[0].actor.as_str(),
            rows[0].action.as_str(),
            rows[0].result.as_str()
        ),
        ("token:shop", "conversions.ingest", "ok")
    );
    drop(serve);
    support::drop_postgres_database(&url).await;
}

// --- the store, both dialects ------------------------------------------------------------------

async fn tokens_are_unique_by_name_found_by_hash_and_revoked_once(store: Arc<dyn Store>) {
    assert!(!store.any_tokens().await.unwrap());
    let now = Utc::now();
    let secret = TokenSecret::generate();
    let t = ApiToken {
        name: TokenName::parse("grafana").unwrap(),
        role: Role::Analyst,
        secret_hash: secret.hash(),
        created_at: now,
        expires_at: Some(now + chrono::Duration::days(90)),
        revoked_at: None,
        last_used_at: None,
    };
    assert!(store.create_token(&t).await.unwrap());
    let again = ApiToken {
        secret_hash: TokenSecret::generate().hash(),
        role: Role::Operator,
        ..t.clone()
    };
    assert!(
        !store.create_token(&again).await.unwrap(),
        "a name is taken once"
    );
    assert!(store.any_tokens().await.unwrap());
    let found = store.token_by_hash(&secret.hash()).await.unwrap().unwrap();
    assert_eq!(found.name, t.name);
    assert_eq!(found.role, Role::Analyst);
    assert_eq!(
        found.expires_at.unwrap().timestamp_millis(),
        t.expires_at.unwrap().timestamp_millis()
    );
    assert!(found.revoked_at.is_none() && found.last_used_at.is_none());
    assert!(
        store
            .token_by_hash(&TokenSecret::generate().hash())
            .await
            .unwrap()
            .is_none()
    );
    // Last use is written at most once a minute.
    store.touch_token("grafana", now).await.unwrap();
    store
        .touch_token("grafana", now + chrono::Duration::seconds(30))
        .await
        .unwrap();
    let used = store.token_by_hash(&secret.hash()).await.unwrap().unwrap();
    assert_eq!(
        used.last_used_at.unwrap().timestamp_millis(),
        now.timestamp_millis()
    );
    store
        .touch_token("grafana", now + chrono::Duration::seconds(90))
        .await
        .unwrap();
    let used = store.token_by_hash(&secret.hash()).await.unwrap().unwrap();
    assert_eq!(
        used.last_used_at.unwrap().timestamp_millis(),
        (now + chrono::Duration::seconds(90)).timestamp_millis()
    );

    let revoked = store.revoke_token("grafana", now).await.unwrap().unwrap();
    assert_eq!(
        revoked.revoked_at.unwrap().timestamp_millis(),
        now.timestamp_millis()
    );
    let later = now + chrono::Duration::hours(1);
    let again = store.revoke_token("grafana", later).await.unwrap().unwrap();
    assert_eq!(
        again.revoked_at, revoked.revoked_at,
        "the first revocation stays"
    );
    assert!(store.revoke_token("nobody", later).await.unwrap().is_none());
    let second = ApiToken {
        name: TokenName::parse("shop").unwrap(),
        role: Role::Ingest,
        secret_hash: TokenSecret::generate().hash(),
        created_at: now + chrono::Duration::seconds(1),
        expires_at: None,
        revoked_at: None,
        last_used_at: None,
    };
    assert!(store.create_token(&second).await.unwrap());
    let names: Vec<String> = store
        .api_tokens()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    assert_eq!(names, ["grafana", "shop"]);
}

fn entry(at: chrono::DateTime<Utc>, action: &str) -> AuditEntry {
    AuditEntry::new(
        at,
        &herald::domain::Actor::Cli("box".into()),
        action,
        Some("bf".into()),
        "ok",
    )
}

async fn the_audit_log_is_read_newest_first_and_purged_by_its_own_period(store: Arc<dyn Store>) {
    let now = Utc::now();
    let old = now - chrono::Duration::days(400);
    store.record_audit(&entry(old, "purge")).await.unwrap();
    store
        .record_audit(&entry(now, "campaign.pause").with_route("POST /api/campaigns/{id}/pause"))
        .await
        .unwrap();
    store
        .record_audit(&entry(now, "campaign.resume"))
        .await
        .unwrap();
    let all = store.audit_entries(None, 10).await.unwrap();
    let actions: Vec<&str> = all.iter().map(|r| r.action.as_str()).collect();
    assert_eq!(actions, ["campaign.resume", "campaign.pause", "purge"]);
    assert_eq!(
        all[1].route.as_deref(),
        Some("POST /api/campaigns/{id}/pause")
    );
    assert_eq!(all[0].actor, "cli@box");
    assert_eq!(all[0].target.as_deref(), Some("bf"));
    assert!(all[0].id > all[1].id);
    assert_eq!(store.audit_entries(None, 1).await.unwrap().len(), 1);
    let recent = store
        .audit_entries(Some(now - chrono::Duration::days(1)), 10)
        .await
        .unwrap();
    assert_eq!(recent.len(), 2);

    // The default keeps a year: the 400-day-old row goes, the others stay.
    let policy = RetentionPolicy::default();
    let dry = store.purge(&policy, now, true).await.unwrap();
    assert_eq!(dry.get(DataClass::Audit), 1);
    let purged = store.purge(&policy, now, false).await.unwrap();
    assert_eq!(purged.get(DataClass::Audit), 1);
    assert_eq!(store.audit_entries(None, 10).await.unwrap().len(), 2);
    let kept = RetentionPolicy::parse("audit=never").unwrap();
    let later = now + chrono::Duration::days(4000);
    assert_eq!(
        store
            .purge(&kept, later, false)
            .await
            .unwrap()
            .get(DataClass::Audit),
        0
    );
}

async fn the_ledger_is_sliced_by_offset_in_key_order(store: Arc<dyn Store>) {
    let campaign = CampaignId::parse("slices").unwrap();
    let claims: Vec<Claim> = ["c", "a", "d", "b"]
        .iter()
        .map(|k| Claim {
            key: IdempotencyKey::parse(k).unwrap(),
            campaign: campaign.clone(),
            job: JobId::parse("j").unwrap(),
            sender: SenderId::parse(support::SENDER).unwrap(),
            recipient: ANNA.into(),
            template: "flash_sale".into(),
            language: "de".into(),
            category: Category::Marketing,
            channel: ChannelKind::WhatsApp,
        })
        .collect();
    store
        .claim("w", Duration::from_secs(60), &claims)
        .await
        .unwrap();
    let slice = |offset, limit| {
        let store = Arc::clone(&store);
        let campaign = campaign.clone();
        async move {
            store
                .ledger_slice(&campaign, offset, limit)
                .await
                .unwrap()
                .into_iter()
                .map(|r| r.key.to_string())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(slice(0, 2).await, ["a", "b"]);
    assert_eq!(slice(2, 2).await, ["c", "d"]);
    assert_eq!(slice(3, 5).await, ["d"]);
    assert!(slice(4, 5).await.is_empty());
}

macro_rules! both_dialects {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $case() {
                    let (store, _dir) = crate::support::sqlite_store().await;
                    super::$case(store).await;
                }
            )*
        }

        mod postgres {
            $(
                #[tokio::test]
                async fn $case() {
                    let Some(url) = crate::support::postgres_url().await else { return };
                    let store = herald::store::open(&url).await.expect("open the Postgres store");
                    super::$case(store).await;
                    crate::support::drop_postgres_database(&url).await;
                }
            )*
        }
    };
}

both_dialects!(
    tokens_are_unique_by_name_found_by_hash_and_revoked_once,
    the_audit_log_is_read_newest_first_and_purged_by_its_own_period,
    the_ledger_is_sliced_by_offset_in_key_order,
);

/// The database itself refuses to change an audit row, on both dialects.
#[tokio::test]
async fn the_audit_log_refuses_updates_in_the_database() {
    use sqlx::Connection;
    let dir = tempfile::tempdir().unwrap();
    let url = support::sqlite_url(dir.path());
    let store = herald::store::open(&url).await.unwrap();
    store
        .record_audit(&entry(Utc::now(), "purge"))
        .await
        .unwrap();
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let err = sqlx::query("UPDATE audit_log SET result = 'forged'")
        .execute(&mut conn)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("append-only"), "{err}");

    let Some(pg) = support::postgres_url().await else {
        return;
    };
    let store = herald::store::open(&pg).await.unwrap();
    store
        .record_audit(&entry(Utc::now(), "purge"))
        .await
        .unwrap();
    let mut conn = sqlx::PgConnection::connect(&pg).await.unwrap();
    let err = sqlx::query("UPDATE audit_log SET result = 'forged'")
        .execute(&mut conn)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("append-only"), "{err}");
    let _ = conn.close().await;
    support::drop_postgres_database(&pg).await;
}

// --- the command line ----------------------------------------------------------------------------

fn herald(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(args)
        .env("HERALD_DATABASE_URL", support::sqlite_url(dir))
        .env("HERALD_HASH_KEY", support::TEST_HASH_KEY)
        .env_remove("HERALD_RETENTION")
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run herald")
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test]
async fn tokens_are_created_listed_and_revoked_with_the_cli_and_every_admin_command_is_audited() {
    support::configure_hash_key();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = herald(
        d,
        &[
            "tokens",
            "create",
            "--role",
            "analyst",
            "--name",
            "grafana",
            "--expires-in",
            "90d",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let secret = stdout(&out).trim().to_owned();
    assert!(
        secret.starts_with("hrld_") && secret.len() == 69,
        "{secret}"
    );
    assert!(stderr(&out).contains("shown once"), "{}", stderr(&out));

    for (args, want) in [
        (
            &["tokens", "create", "--role", "analyst", "--name", "grafana"][..],
            "exists",
        ),
        (
            &["tokens", "create", "--role", "admin", "--name", "x"][..],
            "operator, analyst",
        ),
        (
            &[
                "tokens",
                "create",
                "--role",
                "privacy",
                "--name",
                "x",
                "--expires-in",
                "soon",
            ][..],
            "--expires-in",
        ),
        (
            &["tokens", "create", "--role", "privacy", "--name", "a b"][..],
            "--name",
        ),
        (
            &["tokens", "revoke", "nobody"][..],
            "no token named 'nobody'",
        ),
        (&["audit", "--since", "last week"][..], "--since"),
    ] {
        let out = herald(d, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert!(stderr(&out).contains(want), "{args:?}: {}", stderr(&out));
    }

    let list = herald(d, &["tokens", "list"]);
    let shown = stdout(&list);
    assert!(
        shown.contains("grafana") && shown.contains("analyst") && shown.contains("active"),
        "{shown}"
    );
    assert!(!shown.contains(&secret[5..]), "never a secret: {shown}");

    // The secret works against serve on the same database.
    let store = herald::store::open(&support::sqlite_url(d)).await.unwrap();
    seed(&store).await;
    let serve = Serve::start(Arc::clone(&store), None).await;
    let path = format!("/api/campaigns/{CAMPAIGN}");
    assert_eq!(
        serve.call(Method::GET, &path, Some(&secret), None).await.0,
        200
    );

    // The admin commands, each leaving its row.
    for args in [
        &["campaign", "pause", CAMPAIGN, "--reason", "cli"][..],
        &["campaign", "resume", CAMPAIGN][..],
        &["campaign", "budget", CAMPAIGN, "--amount", "20"][..],
        &["contacts", "export", ANNA][..],
        &["purge"][..],
        &["tokens", "revoke", "grafana"][..],
    ] {
        let out = herald(d, args);
        assert!(out.status.success(), "{args:?}: {out:?}");
    }
    assert_eq!(
        serve.call(Method::GET, &path, Some(&secret), None).await.0,
        401
    );
    let again = herald(d, &["tokens", "revoke", "grafana"]);
    assert!(stdout(&again).contains("already revoked"), "{again:?}");
    let list = stdout(&herald(d, &["tokens", "list"]));
    assert!(list.contains("revoked"), "{list}");

    let out = herald(d, &["audit", "--json", "--limit", "50"]);
    assert!(out.status.success(), "{out:?}");
    let rows: Vec<Value> = serde_json::from_str(&stdout(&out)).unwrap();
    let seen: Vec<(String, String)> = rows
        .iter()
        .rev()
        .map(|r| {
            (
                r["action"].as_str().unwrap().to_owned(),
                r["result"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let cli_host = format!("cli@{}", herald::app::audit::hostname());
    let wanted = [
        "tokens.create",
        "tokens.create",
        "tokens.revoke",
        "campaign.read",
        "campaign.pause",
        "campaign.resume",
        "campaign.budget",
        "contact.export",
        "purge",
        "tokens.revoke",
        "tokens.revoke",
    ];
    let actions: Vec<&str> = seen.iter().map(|(a, _)| a.as_str()).collect();
    // The refused commands that reached the store left rows too (a duplicate name, an
    // unknown token); those refused before it (a bad role or duration, a bad name) did not.
    assert_eq!(actions, wanted, "{rows:#?}");
    assert_eq!(
        seen[1].1,
        "error: --name: a token named 'grafana' exists (names stay taken after revocation, so the audit log stays unambiguous); choose another"
    );
    for r in &rows {
        let actor = r["actor"].as_str().unwrap();
        if r["action"] == "campaign.read" {
            assert_eq!(actor, "token:grafana");
        } else {
            assert_eq!(actor, cli_host, "{r}");
        }
        assert_no_number(&r.to_string(), "audit row");
    }
    let export = rows
        .iter()
        .find(|r| r["action"] == "contact.export")
        .unwrap();
    assert_eq!(
        export["target"],
        herald::store::contact_ref(&PhoneNumber::parse(ANNA).unwrap())
    );
    let table = stdout(&herald(d, &["audit", "--since", "1h"]));
    assert!(
        table.contains("tokens.revoke") && table.contains(&cli_host),
        "{table}"
    );
}

#[test]
fn without_a_hash_key_an_export_is_audited_with_the_masked_number() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
            .args(args)
            .env("HERALD_DATABASE_URL", support::sqlite_url(dir.path()))
            .env_remove("HERALD_HASH_KEY")
            .env("RUST_LOG", "warn")
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run herald")
    };
    let out = run(&["contacts", "export", ANNA]);
    assert!(out.status.success(), "{out:?}");
    // Erasure refuses without the key, and the refusal is recorded too.
    let refused = run(&["contacts", "erase", ANNA, "--yes"]);
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    let out = run(&["audit", "--json"]);
    let rows: Vec<Value> = serde_json::from_str(&stdout(&out)).unwrap();
    let targets: Vec<(&str, &str)> = rows
        .iter()
        .rev()
        .map(|r| (r["action"].as_str().unwrap(), r["target"].as_str().unwrap()))
        .collect();
    assert_eq!(
        targets,
        [
            ("contact.export", "contact:+49151****789"),
            ("contact.erase", "contact:+49151****789"),
        ]
    );
    assert!(
        rows[0]["result"]
            .as_str()
            .unwrap()
            .starts_with("error: HERALD_HASH_KEY")
    );
    assert_no_number(&stdout(&out), "audit without a key");
}
