//! The Cloud API simulator over real HTTP: each test starts its own instance on a free port and
//! talks to it with `reqwest`, pinning the answers herald's client, tests and benchmarks rely
//! on — Meta's shapes, codes, limits, faults and signed webhooks.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::HeaderMap;
use futures::future::join_all;
use herald::domain::Category;
use herald::simulator::{self, SimConfig, SimHandle, SimNumber, SimTemplate, TemplateStatus};
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::mpsc;

const SENDER: &str = "106540352242922";
const ACCOUNT: &str = "102290129340398";

async fn start(config: SimConfig) -> SimHandle {
    simulator::spawn(config, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("simulator starts")
}

fn template_send(to: &str, name: &str, language: &str) -> Value {
    json!({
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": to,
        "type": "template",
        "template": {
            "name": name,
            "language": { "code": language },
            "components": [ { "type": "body", "parameters": [ { "type": "text", "text": "Anna" } ] } ]
        }
    })
}

fn keyed_send(to: &str, key: &str) -> Value {
    let mut body = template_send(to, "flash_sale", "de");
    body["biz_opaque_callback_data"] = key.into();
    body
}

/// Posts a send and returns the status and JSON answer.
async fn post(sim: &SimHandle, number: &str, body: &Value) -> (StatusCode, Value) {
    post_as(sim, number, body, None).await
}

async fn post_as(
    sim: &SimHandle,
    number: &str,
    body: &Value,
    token: Option<&str>,
) -> (StatusCode, Value) {
    let mut request = reqwest::Client::new()
        .post(format!("{}/v25.0/{number}/messages", sim.url()))
        .json(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("the simulator answers");
    let status = response.status();
    (status, response.json().await.expect("a JSON answer"))
}

async fn get_json(url: &str) -> Value {
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/graph/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn error_code(answer: &Value) -> i64 {
    answer["error"]["code"]
        .as_i64()
        .unwrap_or_else(|| panic!("not an error: {answer}"))
}

#[tokio::test]
async fn an_accepted_send_answers_exactly_like_meta() {
    let sim = start(SimConfig::default()).await;
    let (status, first) = post(
        &sim,
        SENDER,
        &template_send("+4915123456789", "flash_sale", "de"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    let wamid = first["messages"][0]["id"].as_str().unwrap().to_owned();
    assert!(wamid.starts_with("wamid."), "{wamid}");
    let mut want = fixture("send-success.json");
    want["messages"][0]["id"] = wamid.clone().into();
    assert_eq!(first, want);

    let (_, second) = post(
        &sim,
        SENDER,
        &template_send("+4915123456789", "flash_sale", "de"),
    )
    .await;
    assert_ne!(
        second["messages"][0]["id"],
        wamid.as_str(),
        "wamids are unique"
    );
    assert_eq!(sim.stats().accepted, 2);
    assert_eq!(sim.stats().numbers[SENDER].accepted, 2);
}

#[tokio::test]
async fn malformed_sends_get_error_100_naming_the_problem() {
    let sim = start(SimConfig::default()).await;
    let valid = template_send("+4915123456789", "flash_sale", "de");
    let mut cases = Vec::new();
    let mut no_to = valid.clone();
    no_to.as_object_mut().unwrap().remove("to");
    cases.push((no_to, "to"));
    let mut sms = valid.clone();
    sms["messaging_product"] = "sms".into();
    cases.push((sms, "messaging_product"));
    let mut text = valid.clone();
    text["type"] = "text".into();
    cases.push((text, "type"));
    let mut no_name = valid.clone();
    no_name["template"].as_object_mut().unwrap().remove("name");
    cases.push((no_name, "name"));
    let mut no_language = valid.clone();
    no_language["template"]["language"] = json!({});
    cases.push((no_language, "language"));
    let mut long_key = valid.clone();
    long_key["biz_opaque_callback_data"] = "k".repeat(513).into();
    cases.push((long_key, "biz_opaque_callback_data"));

    for (body, field) in cases {
        let (status, answer) = post(&sim, SENDER, &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{field}");
        assert_eq!(error_code(&answer), 100, "{field}");
        assert_eq!(answer["error"]["type"], "OAuthException");
        assert_eq!(
            answer["error"]["error_data"]["messaging_product"],
            "whatsapp"
        );
        let details = answer["error"]["error_data"]["details"].as_str().unwrap();
        assert!(details.contains(field), "{field}: {details}");
        assert!(answer["error"]["fbtrace_id"].is_string());
    }

    let response = reqwest::Client::new()
        .post(format!("{}/v25.0/{SENDER}/messages", sim.url()))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    let answer: Value = response.json().await.unwrap();
    assert_eq!(error_code(&answer), 100);

    let stats = sim.stats();
    assert_eq!(stats.accepted, 0);
    assert_eq!(stats.rejected(100), 7);
}

#[tokio::test]
async fn a_missing_or_wrong_token_gets_190() {
    let sim = start(SimConfig {
        access_token: Some("EAAG-right".into()),
        ..SimConfig::default()
    })
    .await;
    let body = template_send("+4915123456789", "flash_sale", "de");

    for token in [None, Some("EAAG-wrong")] {
        let (status, answer) = post_as(&sim, SENDER, &body, token).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(error_code(&answer), 190);
        assert_eq!(answer["error"]["type"], "OAuthException");
    }
    // The token is checked before the body: a bad token with a bad body is still 190.
    let (_, answer) = post_as(&sim, SENDER, &json!({}), Some("EAAG-wrong")).await;
    assert_eq!(error_code(&answer), 190);

    let (status, _) = post_as(&sim, SENDER, &body, Some("EAAG-right")).await;
    assert_eq!(status, StatusCode::OK);

    let number = get_json(&format!("{}/v25.0/{SENDER}", sim.url())).await;
    assert_eq!(error_code(&number), 190, "reads need the token too");
    assert_eq!(sim.stats().rejected(190), 3);
}

#[tokio::test]
async fn unknown_unapproved_and_paused_templates_are_refused() {
    let sim = start(SimConfig {
        templates: vec![
            SimTemplate::approved("flash_sale", "de", Category::Marketing),
            SimTemplate::approved("spring_teaser", "de", Category::Marketing)
                .with_status(TemplateStatus::Pending),
            SimTemplate::approved("old_promo", "de", Category::Marketing)
                .with_status(TemplateStatus::Paused),
        ],
        ..SimConfig::default()
    })
    .await;
    let to = "+4915123456789";

    let (status, answer) = post(&sim, SENDER, &template_send(to, "flash_sale", "en")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let mut want = fixture("error-132001.json");
    want["error"]["error_data"]["details"] =
        "template name (flash_sale) does not exist in en".into();
    want["error"]["fbtrace_id"] = answer["error"]["fbtrace_id"].clone();
    assert_eq!(answer, want);

    let (_, answer) = post(&sim, SENDER, &template_send(to, "nope", "de")).await;
    assert_eq!(error_code(&answer), 132001);
    let (_, answer) = post(&sim, SENDER, &template_send(to, "spring_teaser", "de")).await;
    assert_eq!(error_code(&answer), 132001, "pending is not sendable");
    let (_, answer) = post(&sim, SENDER, &template_send(to, "old_promo", "de")).await;
    assert_eq!(error_code(&answer), 132015);
    let (status, _) = post(&sim, SENDER, &template_send(to, "flash_sale", "de")).await;
    assert_eq!(status, StatusCode::OK);

    let stats = sim.stats();
    assert_eq!(stats.rejected(132001), 3);
    assert_eq!(stats.rejected(132015), 1);
    assert_eq!(stats.accepted, 1);
}

#[tokio::test]
async fn without_templates_a_strict_simulator_refuses_every_template() {
    let sim = start(SimConfig {
        accept_unknown_templates: false,
        ..SimConfig::default()
    })
    .await;
    let (_, answer) = post(&sim, SENDER, &template_send("+4915123456789", "any", "de")).await;
    assert_eq!(error_code(&answer), 132001);
}

#[tokio::test]
async fn undeliverable_recipients_get_131026() {
    let sim = start(SimConfig {
        undeliverable: HashSet::from(["+49 151 1111 1111".to_owned()]),
        ..SimConfig::default()
    })
    .await;
    let (status, answer) = post(&sim, SENDER, &template_send("+4915111111111", "t", "de")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let mut want = fixture("error-131026.json");
    want["error"]["fbtrace_id"] = answer["error"]["fbtrace_id"].clone();
    assert_eq!(answer, want);
    let (status, _) = post(&sim, SENDER, &template_send("+4915122222222", "t", "de")).await;
    assert_eq!(status, StatusCode::OK);

    // A ratio picks the same recipients on every instance.
    let config = SimConfig {
        undeliverable_ratio: 0.3,
        rate_per_sec: 1_000_000,
        ..SimConfig::default()
    };
    let (a, b) = (start(config.clone()).await, start(config).await);
    let mut refused = 0;
    for i in 0..100 {
        let body = template_send(&format!("+49170{i:07}"), "t", "de");
        let (code_a, code_b) = (
            post(&a, SENDER, &body).await.0,
            post(&b, SENDER, &body).await.0,
        );
        assert_eq!(code_a, code_b);
        refused += usize::from(code_a == StatusCode::BAD_REQUEST);
    }
    assert!(
        (15..=45).contains(&refused),
        "{refused} of 100 refused at ratio 0.3"
    );
}

#[tokio::test]
async fn sends_beyond_the_rate_get_130429_and_no_second_holds_more_than_the_rate() {
    let sim = start(SimConfig {
        rate_per_sec: 20,
        ..SimConfig::default()
    })
    .await;
    // 60 at once to different recipients: the first 20 pass, the rest are throttled.
    let sends = (0..60).map(|i| {
        let body = template_send(&format!("+49151{i:08}"), "t", "de");
        let sim = &sim;
        async move { post(sim, SENDER, &body).await }
    });
    let answers = join_all(sends).await;
    let accepted = answers.iter().filter(|(s, _)| *s == StatusCode::OK).count();
    assert_eq!(accepted, 20);
    for (status, answer) in answers.iter().filter(|(s, _)| *s != StatusCode::OK) {
        assert_eq!(*status, StatusCode::TOO_MANY_REQUESTS);
        let mut want = fixture("error-130429.json");
        want["error"]["fbtrace_id"] = answer["error"]["fbtrace_id"].clone();
        assert_eq!(answer, &want);
    }

    // A steady stream faster than the rate for 1.5 s never puts more than 20 in one second.
    let started = Instant::now();
    let mut i = 0;
    while started.elapsed() < Duration::from_millis(1500) {
        post(
            &sim,
            SENDER,
            &template_send(&format!("+49160{i:08}"), "t", "de"),
        )
        .await;
        i += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let stats = sim.stats();
    let number = &stats.numbers[SENDER];
    assert_eq!(number.max_in_one_second, 20);
    assert!(
        number.accepted > 20,
        "a new second lets more through: {number:?}"
    );
    assert_eq!(number.throttled_130429, stats.rejected(130429));
    assert_eq!(number.accepted + number.throttled_130429, 60 + i);

    // Other numbers have their own window.
    let (status, _) = post(&sim, "999", &template_send("+4915100000000", "t", "de")).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_recipient_beyond_the_pair_burst_gets_131056() {
    let sim = start(SimConfig {
        pair_burst: 3,
        pair_interval: Duration::from_secs(6),
        ..SimConfig::default()
    })
    .await;
    let body = template_send("+4915123456789", "t", "de");
    for _ in 0..3 {
        assert_eq!(post(&sim, SENDER, &body).await.0, StatusCode::OK);
    }
    let (status, answer) = post(&sim, SENDER, &body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let mut want = fixture("error-131056.json");
    want["error"]["fbtrace_id"] = answer["error"]["fbtrace_id"].clone();
    assert_eq!(answer, want);
    // Only this pair is limited: another recipient, or another sender, still gets through.
    assert_eq!(
        post(&sim, SENDER, &template_send("+4915100000001", "t", "de"))
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(post(&sim, "777", &body).await.0, StatusCode::OK);
    assert_eq!(sim.stats().numbers[SENDER].pair_limited_131056, 1);
}

#[tokio::test]
async fn repeated_callback_data_is_counted_as_a_duplicate() {
    let sim = start(SimConfig::default()).await;
    for key in ["k:1", "k:2", "k:1", "k:3", "k:1"] {
        assert_eq!(
            post(&sim, SENDER, &keyed_send("+4915123456789", key))
                .await
                .0,
            StatusCode::OK
        );
    }
    // Refused sends are not duplicates: only a second *acceptance* is.
    let sim_strict = start(SimConfig {
        accept_unknown_templates: false,
        ..SimConfig::default()
    })
    .await;
    for _ in 0..2 {
        post(&sim_strict, SENDER, &keyed_send("+4915123456789", "k:9")).await;
    }

    let stats = sim.stats();
    assert_eq!(stats.accepted, 5);
    assert_eq!(stats.duplicates, 2);
    assert_eq!(
        stats.duplicate_keys,
        vec!["k:1"],
        "each duplicated key listed once"
    );
    assert_eq!(sim_strict.stats().duplicates, 0);

    // The stats endpoint says the same, and reset forgets everything.
    let over_http: simulator::SimStats =
        serde_json::from_value(get_json(&format!("{}/__sim/stats", sim.url())).await).unwrap();
    assert_eq!(over_http.duplicates, 2);
    let reset = reqwest::Client::new()
        .post(format!("{}/__sim/reset", sim.url()))
        .send()
        .await
        .unwrap();
    assert!(reset.status().is_success());
    assert_eq!(sim.stats().accepted, 0);
    post(&sim, SENDER, &keyed_send("+4915123456789", "k:1")).await;
    assert_eq!(sim.stats().duplicates, 0, "reset forgets seen keys");
}

#[tokio::test]
async fn the_template_list_pages_through_next_to_the_end() {
    let mut templates: Vec<SimTemplate> = (0..5)
        .map(|i| SimTemplate::approved(&format!("t{i}"), "de", Category::Utility))
        .collect();
    templates.push(SimTemplate {
        account_id: Some("someone-else".into()),
        ..SimTemplate::approved("foreign", "de", Category::Marketing)
    });
    templates[4].status = TemplateStatus::Paused;
    let sim = start(SimConfig {
        templates,
        ..SimConfig::default()
    })
    .await;

    let mut url = format!(
        "{}/v25.0/{ACCOUNT}/message_templates?fields=name,status,category&limit=2",
        sim.url()
    );
    let mut names = Vec::new();
    let mut pages = 0;
    loop {
        let page = get_json(&url).await;
        pages += 1;
        for t in page["data"].as_array().unwrap() {
            assert!(t["id"].is_string(), "id is always there: {t}");
            assert!(t.get("components").is_none(), "not asked for: {t}");
            assert_eq!(t["category"], "UTILITY");
            names.push(t["name"].as_str().unwrap().to_owned());
        }
        assert!(page["paging"]["cursors"]["after"].is_string());
        match page["paging"]["next"].as_str() {
            Some(next) => {
                assert!(
                    next.starts_with(&sim.url()),
                    "{next} is absolute to this server"
                );
                assert!(
                    next.contains("fields=name%2Cstatus%2Ccategory")
                        || next.contains("fields=name,status,category")
                );
                url = next.to_owned();
            }
            None => break,
        }
        assert!(pages < 10, "paging must end");
    }
    assert_eq!(pages, 3);
    assert_eq!(
        names,
        ["t0", "t1", "t2", "t3", "t4"],
        "another account's template is not listed"
    );

    // Without fields, everything the fixture shows.
    let all = get_json(&format!("{}/v25.0/{ACCOUNT}/message_templates", sim.url())).await;
    assert_eq!(all["data"].as_array().unwrap().len(), 5);
    assert_eq!(all["data"][4]["status"], "PAUSED");
    assert_eq!(all["data"][0]["language"], "de");
    assert!(all["paging"].get("next").is_none());
}

#[tokio::test]
async fn phone_number_fields_read_like_the_fixture() {
    let mut number = SimNumber::new(SENDER);
    number.display_phone_number = "+49 30 901820".into();
    number.verified_name = "Acme Mode".into();
    number.messaging_limit = "TIER_10K".into();
    number.account_id = Some(ACCOUNT.into());
    let sim = start(SimConfig {
        numbers: vec![number],
        ..SimConfig::default()
    })
    .await;

    let fields = "display_phone_number,verified_name,quality_rating,status,throughput,whatsapp_business_manager_messaging_limit";
    let answer = get_json(&format!("{}/v25.0/{SENDER}?fields={fields}", sim.url())).await;
    assert_eq!(answer, fixture("phone-number.json"));

    let tier = get_json(&format!(
        "{}/v25.0/{SENDER}?fields=whatsapp_business_manager_messaging_limit",
        sim.url()
    ))
    .await;
    assert_eq!(
        tier,
        json!({"id": SENDER, "whatsapp_business_manager_messaging_limit": "TIER_10K"})
    );

    // With numbers configured, others do not exist, for reads and for sends.
    let unknown = get_json(&format!("{}/v25.0/4711", sim.url())).await;
    assert_eq!(error_code(&unknown), 100);
    let (status, answer) = post(&sim, "4711", &template_send("+4915123456789", "t", "de")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&answer), 100);
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("4711")
    );
}

#[tokio::test]
async fn a_dropped_connection_fails_after_the_request_was_sent_and_counts_as_accepted() {
    let sim = start(SimConfig {
        fault_drop_ratio: 1.0,
        ..SimConfig::default()
    })
    .await;
    let result = reqwest::Client::new()
        .post(format!("{}/v25.0/{SENDER}/messages", sim.url()))
        .json(&keyed_send("+4915123456789", "k:lost"))
        .send()
        .await;
    let err = result.expect_err("no answer comes back");
    assert!(
        !err.is_connect(),
        "the connection was made and the request sent: {err:?}"
    );
    assert!(!err.is_timeout());
    let stats = sim.stats();
    assert_eq!(
        stats.accepted, 1,
        "Meta may have accepted it: the outcome is unknown"
    );
    assert_eq!(stats.numbers[SENDER].accepted, 1);
}

#[tokio::test]
async fn injected_server_errors_are_5xx_and_accept_nothing() {
    let sim = start(SimConfig {
        fault_5xx_ratio: 1.0,
        ..SimConfig::default()
    })
    .await;
    for _ in 0..10 {
        let (status, answer) =
            post(&sim, SENDER, &template_send("+4915123456789", "t", "de")).await;
        match error_code(&answer) {
            131000 => assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR),
            131016 => assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE),
            other => panic!("unexpected code {other}"),
        }
    }
    let stats = sim.stats();
    assert_eq!(stats.accepted, 0);
    assert_eq!(stats.rejected(131000) + stats.rejected(131016), 10);
}

#[tokio::test]
async fn latency_delays_every_answer() {
    let sim = start(SimConfig {
        latency: Duration::from_millis(150),
        ..SimConfig::default()
    })
    .await;
    let started = Instant::now();
    post(&sim, SENDER, &template_send("+4915123456789", "t", "de")).await;
    assert!(started.elapsed() >= Duration::from_millis(150));
}

/// A webhook receiver: every POST's headers and raw body, in arrival order.
async fn webhook_receiver() -> (String, mpsc::UnboundedReceiver<(HeaderMap, Bytes)>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/webhooks",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let tx = tx.clone();
            async move {
                let _ = tx.send((headers, body));
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/webhooks", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, rx)
}

#[tokio::test]
async fn status_webhooks_are_signed_over_the_raw_body_and_report_sent_then_delivered() {
    let (url, mut posts) = webhook_receiver().await;
    let secret = "test-app-secret";
    let sim = start(SimConfig {
        webhook_url: Some(url),
        app_secret: Some(secret.into()),
        templates: vec![SimTemplate::approved(
            "flash_sale",
            "de",
            Category::Marketing,
        )],
        ..SimConfig::default()
    })
    .await;

    let mut wamids = HashSet::new();
    for i in 0..3 {
        let (status, answer) = post(
            &sim,
            SENDER,
            &keyed_send(&format!("+49151000000{i:02}"), &format!("k:{i}")),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        wamids.insert(answer["messages"][0]["id"].as_str().unwrap().to_owned());
    }

    // Statuses arrive batched; collect until each message has been sent and delivered.
    let mut seen = Vec::new();
    while seen.len() < 6 {
        let (headers, body) = tokio::time::timeout(Duration::from_secs(5), posts.recv())
            .await
            .expect("webhooks arrive")
            .unwrap();
        let signature = headers["x-hub-signature-256"].to_str().unwrap();
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(&body);
        let hex_sig = signature.strip_prefix("sha256=").expect("sha256= prefix");
        mac.verify_slice(&hex::decode(hex_sig).unwrap())
            .expect("the signature is the HMAC of the raw body");

        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["object"], "whatsapp_business_account");
        let value = &v["entry"][0]["changes"][0]["value"];
        assert_eq!(v["entry"][0]["changes"][0]["field"], "messages");
        assert_eq!(value["metadata"]["phone_number_id"], SENDER);
        for s in value["statuses"].as_array().unwrap() {
            assert!(wamids.contains(s["id"].as_str().unwrap()));
            assert!(
                s["biz_opaque_callback_data"]
                    .as_str()
                    .unwrap()
                    .starts_with("k:")
            );
            assert!(s["recipient_id"].as_str().unwrap().starts_with("49151"));
            assert_eq!(
                s["pricing"],
                json!({"billable": true, "pricing_model": "PMP", "type": "regular", "category": "marketing"})
            );
            seen.push((
                s["id"].as_str().unwrap().to_owned(),
                s["status"].as_str().unwrap().to_owned(),
            ));
        }
    }
    for wamid in &wamids {
        let order: Vec<&str> = seen
            .iter()
            .filter(|(id, _)| id == wamid)
            .map(|(_, s)| s.as_str())
            .collect();
        assert_eq!(order, ["sent", "delivered"], "{wamid}");
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn marketing_messages_are_priced_as_marketing_lite() {
    let (url, mut posts) = webhook_receiver().await;
    let sim = start(SimConfig {
        webhook_url: Some(url),
        ..SimConfig::default()
    })
    .await;
    let response = reqwest::Client::new()
        .post(format!("{}/v25.0/{SENDER}/marketing_messages", sim.url()))
        .json(&template_send("+4915123456789", "flash_sale", "de"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let (headers, body) = tokio::time::timeout(Duration::from_secs(5), posts.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(
        headers.get("x-hub-signature-256").is_none(),
        "no app secret, no signature"
    );
    let v: Value = serde_json::from_slice(&body).unwrap();
    let status = &v["entry"][0]["changes"][0]["value"]["statuses"][0];
    assert_eq!(status["pricing"]["category"], "marketing_lite");
}

/// One status as a receiver saw it, with the position of its POST among all POSTs.
struct Seen {
    post: usize,
    wamid: String,
    status: String,
    timestamp: u64,
    priced: bool,
}

/// Checks a webhook POST's signature over its raw bytes and returns its statuses.
fn verified_statuses(post: usize, headers: &HeaderMap, body: &[u8], secret: &str) -> Vec<Seen> {
    let signature = headers["x-hub-signature-256"].to_str().unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    let hex_sig = signature.strip_prefix("sha256=").expect("sha256= prefix");
    mac.verify_slice(&hex::decode(hex_sig).unwrap())
        .expect("the signature is the HMAC of the raw body");
    let v: Value = serde_json::from_slice(body).unwrap();
    v["entry"][0]["changes"][0]["value"]["statuses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| Seen {
            post,
            wamid: s["id"].as_str().unwrap().to_owned(),
            status: s["status"].as_str().unwrap().to_owned(),
            timestamp: s["timestamp"].as_str().unwrap().parse().unwrap(),
            priced: s.get("pricing").is_some(),
        })
        .collect()
}

/// The simulated customers: all receive, about half read, a day later in simulated time but
/// within a second or so of real time.
#[tokio::test]
async fn about_half_the_customers_read_a_day_later_on_a_sped_up_clock() {
    const DAY: u64 = 24 * 60 * 60;
    let (url, mut posts) = webhook_receiver().await;
    let secret = "test-app-secret";
    let config = SimConfig {
        webhook_url: Some(url),
        app_secret: Some(secret.into()),
        rate_per_sec: 100_000,
        undeliverable: HashSet::from(["+4917600000000".to_owned()]),
        read_share: 0.5,
        delivered_delay: Duration::from_secs(60 * 60),
        read_delay: Duration::from_secs(DAY),
        speed: DAY as f64,
        ..SimConfig::default()
    };
    let recipients: Vec<String> = (1..=200).map(|i| format!("+49176{i:08}")).collect();
    let readers: HashSet<String> = recipients
        .iter()
        .filter(|n| config.fate_of(n).read)
        .cloned()
        .collect();
    assert!(
        (70..=130).contains(&readers.len()),
        "{} of 200",
        readers.len()
    );
    let sim = start(config).await;

    let (status, _) = post(&sim, SENDER, &template_send("+4917600000000", "t", "de")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "not on WhatsApp");
    let mut wamid_of = std::collections::HashMap::new();
    let started = Instant::now();
    for to in &recipients {
        let (status, answer) = post(&sim, SENDER, &template_send(to, "t", "de")).await;
        assert_eq!(status, StatusCode::OK);
        let wamid = answer["messages"][0]["id"].as_str().unwrap().to_owned();
        wamid_of.insert(wamid, to.clone());
    }

    let expected = 2 * recipients.len() + readers.len();
    let mut seen = Vec::new();
    let mut post_no = 0;
    while seen.len() < expected {
        let (headers, body) = tokio::time::timeout(Duration::from_secs(10), posts.recv())
            .await
            .unwrap_or_else(|_| panic!("{} of {expected} statuses arrived", seen.len()))
            .unwrap();
        post_no += 1;
        seen.extend(verified_statuses(post_no, &headers, &body, secret));
    }
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(1) && waited < Duration::from_secs(8),
        "a simulated day took {waited:?}"
    );

    for (wamid, to) in &wamid_of {
        let statuses: Vec<&Seen> = seen.iter().filter(|s| &s.wamid == wamid).collect();
        let names: Vec<&str> = statuses.iter().map(|s| s.status.as_str()).collect();
        if readers.contains(to) {
            assert_eq!(names, ["sent", "delivered", "read"], "{wamid}");
            let (delivered, read) = (statuses[1], statuses[2]);
            assert!(delivered.post < read.post);
            assert!(!read.priced, "Meta's read status carries no pricing");
            assert!(
                read.timestamp - delivered.timestamp >= DAY - 60,
                "read {}s after delivered",
                read.timestamp - delivered.timestamp
            );
        } else {
            assert_eq!(names, ["sent", "delivered"], "{wamid}");
        }
        let (sent, delivered) = (statuses[0], statuses[1]);
        assert!(sent.post < delivered.post && sent.priced && delivered.priced);
        assert!(delivered.timestamp >= sent.timestamp + 60 * 60 - 60);
    }
    assert!(!seen.iter().any(|s| !wamid_of.contains_key(&s.wamid)));

    // The simulator counts a POST once its answer is back, just after the receiver saw it.
    let settled = Instant::now() + Duration::from_secs(2);
    while sim.stats().webhook_statuses_posted < expected as u64 && Instant::now() < settled {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stats = sim.stats();
    assert_eq!(stats.delivered_posted, recipients.len() as u64);
    assert_eq!(stats.read_posted, readers.len() as u64);
    assert_eq!(stats.webhook_statuses_posted, expected as u64);
    assert_eq!(stats.webhook_statuses_lost, 0);
    sim.shutdown().await;
}

/// Customers who never receive stay at `sent`, and nobody reads what was not delivered.
#[tokio::test]
async fn undelivered_messages_stop_at_sent() {
    let (url, mut posts) = webhook_receiver().await;
    let sim = start(SimConfig {
        webhook_url: Some(url),
        app_secret: Some("s".into()),
        delivered_share: 0.0,
        read_share: 1.0,
        ..SimConfig::default()
    })
    .await;
    let (status, _) = post(&sim, SENDER, &template_send("+4915123456789", "t", "de")).await;
    assert_eq!(status, StatusCode::OK);
    let (headers, body) = tokio::time::timeout(Duration::from_secs(5), posts.recv())
        .await
        .unwrap()
        .unwrap();
    let statuses = verified_statuses(1, &headers, &body, "s");
    assert_eq!(statuses.len(), 1);
    assert_eq!(statuses[0].status, "sent");
    assert!(
        tokio::time::timeout(Duration::from_millis(300), posts.recv())
            .await
            .is_err(),
        "nothing follows sent"
    );
    let stats = sim.stats();
    assert_eq!(stats.webhook_statuses_posted, 1);
    assert_eq!((stats.delivered_posted, stats.read_posted), (0, 0));
    sim.shutdown().await;
}

#[tokio::test]
async fn unknown_paths_and_versions_get_a_graph_error() {
    let sim = start(SimConfig::default()).await;
    let (status, answer) = post(&sim, "", &json!({})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(answer["error"]["code"].is_number());
    let response = reqwest::Client::new()
        .post(format!("{}/latest/{SENDER}/messages", sim.url()))
        .json(&template_send("+4915123456789", "t", "de"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(sim.stats().accepted, 0);
}
