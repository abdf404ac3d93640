//! Customers who write first, through the simulator over real HTTP: `POST /__sim/inbound` posts
//! a signed inbound webhook to a tiny receiver, opens the customer-service window that lets
//! free-form ("session") sends through (131047 without it), `POST /__sim/windows/close` closes
//! it again, and `herald simulate inbound` drives it from the command line.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use herald::simulator::{self, SimConfig, SimHandle, SimNumber};
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

const SENDER: &str = "106540352242922";
const ACCOUNT: &str = "102290129340398";
const SECRET: &str = "test-app-secret";
const ANNA: &str = "+4915123456789";

/// A webhook receiver answering every POST with `answer`: each POST's headers and raw body, in
/// arrival order.
async fn receiver(answer: AxumStatus) -> (String, mpsc::UnboundedReceiver<(HeaderMap, Bytes)>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/webhooks",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let tx = tx.clone();
            async move {
                let _ = tx.send((headers, body));
                answer
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/webhooks", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, rx)
}

/// A simulator posting to `webhook_url`, signed with the test secret, as the fixtures' number.
async fn start(webhook_url: Option<String>, speed: f64) -> SimHandle {
    let mut number = SimNumber::new(SENDER);
    number.display_phone_number = "+49 30 901820".into();
    number.account_id = Some(ACCOUNT.into());
    let config = SimConfig {
        webhook_url,
        app_secret: Some(SECRET.into()),
        numbers: vec![number],
        speed,
        ..SimConfig::default()
    };
    simulator::spawn(config, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("simulator starts")
}

async fn post_json(url: String, body: &Value) -> (StatusCode, Value) {
    let response = reqwest::Client::new()
        .post(url)
        .json(body)
        .send()
        .await
        .expect("the simulator answers");
    let status = response.status();
    (status, response.json().await.expect("a JSON answer"))
}

async fn inbound(sim: &SimHandle, body: Value) -> (StatusCode, Value) {
    post_json(format!("{}/__sim/inbound", sim.url()), &body).await
}

async fn send(sim: &SimHandle, body: Value) -> (StatusCode, Value) {
    post_json(format!("{}/v25.0/{SENDER}/messages", sim.url()), &body).await
}

fn text_to(to: &str, body: &str) -> Value {
    json!({
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": to,
        "type": "text",
        "text": { "body": body }
    })
}

fn template_to(to: &str) -> Value {
    json!({
        "messaging_product": "whatsapp",
        "to": to,
        "type": "template",
        "template": { "name": "flash_sale", "language": { "code": "de" } }
    })
}

/// The next POST the receiver saw, its signature checked over the raw bytes.
async fn next_signed(posts: &mut mpsc::UnboundedReceiver<(HeaderMap, Bytes)>) -> (Bytes, Value) {
    let (headers, body) = tokio::time::timeout(Duration::from_secs(5), posts.recv())
        .await
        .expect("a webhook arrives")
        .unwrap();
    let signature = headers["x-hub-signature-256"].to_str().unwrap();
    let hex_sig = signature.strip_prefix("sha256=").expect("sha256= prefix");
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(&body);
    mac.verify_slice(&hex::decode(hex_sig).unwrap())
        .expect("the signature is the HMAC of the raw body");
    let value = serde_json::from_slice(&body).unwrap();
    (body, value)
}

/// The status webhook of `wamid` with `status`, skipping others.
async fn status_of(
    posts: &mut mpsc::UnboundedReceiver<(HeaderMap, Bytes)>,
    wamid: &str,
    status: &str,
) -> Value {
    loop {
        let (_, v) = next_signed(posts).await;
        let statuses = v["entry"][0]["changes"][0]["value"]["statuses"].clone();
        for s in statuses.as_array().into_iter().flatten() {
            if s["id"] == wamid && s["status"] == status {
                return s.clone();
            }
        }
    }
}

fn error_code(answer: &Value) -> i64 {
    answer["error"]["code"]
        .as_i64()
        .unwrap_or_else(|| panic!("not an error: {answer}"))
}

#[tokio::test]
async fn an_inbound_message_is_posted_signed_in_metas_shape() {
    let (url, mut posts) = receiver(AxumStatus::OK).await;
    let sim = start(Some(url), 1.0).await;
    let (status, answer) = inbound(
        &sim,
        json!({"from": ANNA, "text": "SNEAKERS", "name": "Anna"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let wamid = answer["id"].as_str().unwrap().to_owned();
    assert!(wamid.starts_with("wamid."), "{wamid}");
    assert_eq!(answer["status"], 200);

    let (_, v) = next_signed(&mut posts).await;
    assert_eq!(v["object"], "whatsapp_business_account");
    assert_eq!(v["entry"][0]["id"], ACCOUNT);
    let change = &v["entry"][0]["changes"][0];
    assert_eq!(change["field"], "messages");
    let value = &change["value"];
    assert_eq!(
        value["metadata"],
        json!({"display_phone_number": "4930901820", "phone_number_id": SENDER})
    );
    assert_eq!(
        value["contacts"],
        json!([{"profile": {"name": "Anna"}, "wa_id": "4915123456789"}])
    );
    let message = &value["messages"][0];
    assert_eq!(message["from"], "4915123456789");
    assert_eq!(message["id"], wamid.as_str());
    assert_eq!(message["type"], "text");
    assert_eq!(message["text"]["body"], "SNEAKERS");
    let timestamp: u64 = message["timestamp"].as_str().unwrap().parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(timestamp.abs_diff(now) < 60, "{timestamp} vs {now}");

    let stats = sim.stats();
    assert_eq!((stats.inbound_posted, stats.inbound_failed), (1, 0));
    sim.shutdown().await;
}

#[tokio::test]
async fn a_repeated_message_is_posted_as_identical_bodies_and_an_id_can_be_reposted() {
    let (url, mut posts) = receiver(AxumStatus::OK).await;
    let sim = start(Some(url), 1.0).await;
    let (status, answer) = inbound(
        &sim,
        json!({"from": ANNA, "type": "button", "payload": "YES", "text": "Yes please", "repeat": 3}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["statuses"], json!([200, 200, 200]));
    let mut bodies = Vec::new();
    for _ in 0..3 {
        bodies.push(next_signed(&mut posts).await.0);
    }
    assert!(
        bodies.iter().all(|b| *b == bodies[0]),
        "three identical bodies"
    );
    let v: Value = serde_json::from_slice(&bodies[0]).unwrap();
    let message = &v["entry"][0]["changes"][0]["value"]["messages"][0];
    assert_eq!(
        message["button"],
        json!({"payload": "YES", "text": "Yes please"})
    );

    // The same id again: Meta redelivering the message.
    let wamid = answer["id"].as_str().unwrap();
    let (_, again) = inbound(&sim, json!({"from": ANNA, "text": "Hi", "id": wamid})).await;
    assert_eq!(again["id"], wamid);
    let (_, v) = next_signed(&mut posts).await;
    assert_eq!(
        v["entry"][0]["changes"][0]["value"]["messages"][0]["id"],
        wamid
    );
    assert_eq!(sim.stats().inbound_posted, 4);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_session_send_needs_an_open_window_and_is_free_inside_it() {
    let (url, mut posts) = receiver(AxumStatus::OK).await;
    let sim = start(Some(url), 1.0).await;

    let (status, refused) = send(&sim, text_to(ANNA, "Your order ships today.")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&refused), 131047);
    assert_eq!(refused["error"]["message"], "Re-engagement message");
    assert_eq!(
        refused["error"]["error_data"]["messaging_product"],
        "whatsapp"
    );
    assert_eq!(sim.stats().rejected(131047), 1);

    let (status, _) = inbound(&sim, json!({"from": ANNA, "text": "Where is my order?"})).await;
    assert_eq!(status, StatusCode::OK);
    next_signed(&mut posts).await;

    let (status, accepted) = send(&sim, text_to(ANNA, "Your order ships today.")).await;
    assert_eq!(status, StatusCode::OK, "{accepted}");
    let wamid = accepted["messages"][0]["id"].as_str().unwrap();
    let sent = status_of(&mut posts, wamid, "sent").await;
    assert_eq!(
        sent["pricing"],
        json!({"billable": false, "pricing_model": "PMP", "type": "free_customer_service", "category": "service"})
    );
    // A marketing template in the same window is still billed.
    let (_, template) = send(&sim, template_to(ANNA)).await;
    let wamid = template["messages"][0]["id"].as_str().unwrap();
    let sent = status_of(&mut posts, wamid, "sent").await;
    assert_eq!(sent["pricing"]["billable"], true);

    let stats = sim.stats();
    assert_eq!((stats.accepted, stats.session_accepted), (2, 1));
    assert_eq!(stats.numbers[SENDER].session_accepted, 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_template_to_a_customer_from_an_ad_is_a_free_entry_point() {
    let (url, mut posts) = receiver(AxumStatus::OK).await;
    let sim = start(Some(url), 1.0).await;
    let (status, _) = inbound(&sim, json!({"from": ANNA, "text": "Hi!", "referral": true})).await;
    assert_eq!(status, StatusCode::OK);
    let (_, v) = next_signed(&mut posts).await;
    let referral = &v["entry"][0]["changes"][0]["value"]["messages"][0]["referral"];
    assert_eq!(referral["source_type"], "ad");
    assert!(referral["ctwa_clid"].is_string());

    let (_, template) = send(&sim, template_to(ANNA)).await;
    let wamid = template["messages"][0]["id"].as_str().unwrap();
    let sent = status_of(&mut posts, wamid, "sent").await;
    assert_eq!(
        sent["pricing"],
        json!({"billable": false, "pricing_model": "PMP", "type": "free_entry_point", "category": "referral_conversion"})
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn closing_the_windows_makes_the_next_session_send_131047() {
    let (url, mut posts) = receiver(AxumStatus::OK).await;
    let sim = start(Some(url), 1.0).await;
    let close = |body: Option<Value>| {
        let request = reqwest::Client::new().post(format!("{}/__sim/windows/close", sim.url()));
        let request = match body {
            Some(body) => request.json(&body),
            None => request,
        };
        async move {
            let response = request.send().await.unwrap();
            (response.status(), response.json::<Value>().await.unwrap())
        }
    };

    inbound(&sim, json!({"from": ANNA, "text": "Hi"})).await;
    next_signed(&mut posts).await;
    let (status, _) = send(&sim, text_to(ANNA, "Hello Anna")).await;
    assert_eq!(status, StatusCode::OK);

    // Another customer's close leaves Anna's window open.
    let (status, answer) = close(Some(json!({"from": "+4917698765432"}))).await;
    assert_eq!((status, answer), (StatusCode::OK, json!({"closed": 0})));
    let (status, _) = send(&sim, text_to(ANNA, "Still there?")).await;
    assert_eq!(status, StatusCode::OK);

    let (status, answer) = close(Some(json!({"from": ANNA, "to": SENDER}))).await;
    assert_eq!((status, answer), (StatusCode::OK, json!({"closed": 1})));
    let (status, refused) = send(&sim, text_to(ANNA, "Hello again")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&refused), 131047);

    // No body closes every window.
    inbound(&sim, json!({"from": ANNA, "text": "Hi again"})).await;
    next_signed(&mut posts).await;
    let (status, answer) = close(None).await;
    assert_eq!((status, answer), (StatusCode::OK, json!({"closed": 1})));
    let (_, refused) = send(&sim, text_to(ANNA, "Hello again")).await;
    assert_eq!(error_code(&refused), 131047);

    let (status, answer) = close(Some(json!({"from": "+49"}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    sim.shutdown().await;
}

/// On a clock running 43,200 times real time, 24 h pass in two seconds and 72 h in six.
#[tokio::test]
async fn an_ordinary_window_closes_after_24_simulated_hours_and_an_ads_after_72() {
    let (url, mut posts) = receiver(AxumStatus::OK).await;
    let sim = start(Some(url), 43_200.0).await;
    let from_ad = "+4917698765432";
    inbound(&sim, json!({"from": ANNA, "text": "Hi"})).await;
    inbound(
        &sim,
        json!({"from": from_ad, "text": "Hi", "referral": true}),
    )
    .await;
    next_signed(&mut posts).await;
    next_signed(&mut posts).await;
    let (status, _) = send(&sim, text_to(ANNA, "Hello")).await;
    assert_eq!(status, StatusCode::OK);

    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let (status, refused) = send(&sim, text_to(ANNA, "Hello?")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&refused), 131047);
    let (status, answer) = send(&sim, text_to(from_ad, "Your code: BF30")).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    sim.shutdown().await;
}

#[tokio::test]
async fn without_a_webhook_url_it_is_409_and_bad_requests_are_400_without_the_number() {
    let sim = start(None, 1.0).await;
    let (status, answer) = inbound(&sim, json!({"from": ANNA})).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(answer["error"].as_str().unwrap().contains("webhook_url"));

    let (url, _posts) = receiver(AxumStatus::OK).await;
    let sim = start(Some(url), 1.0).await;
    for body in [
        json!({"from": 4915123456789_u64}),
        json!({"from": "+4915123456789", "repeat": 11}),
        json!({"from": "+4915123456789", "type": "+4915123456789"}),
        json!({"from": "+4915123456789", "to": "+4915123456789"}),
        json!({"from": "4915123456789 or so"}),
    ] {
        let (status, answer) = inbound(&sim, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        let error = answer["error"].as_str().unwrap();
        assert!(!error.contains("4915123456789"), "{body}: {error}");
    }
    let stats = sim.stats();
    assert_eq!((stats.inbound_posted, stats.inbound_failed), (0, 0));
}

/// `herald simulate inbound …` as the real binary; its exit code and output.
async fn cli(args: &[&str]) -> (Option<i32>, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run herald");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_cli_helper_exits_0_when_herald_answers_2xx_1_otherwise_and_2_on_usage_errors() {
    let (url, mut posts) = receiver(AxumStatus::OK).await;
    let sim = start(Some(url), 1.0).await;
    let base = sim.url();
    let (code, out, err) = cli(&[
        "simulate",
        "inbound",
        "--sim",
        &base,
        "--from",
        ANNA,
        "--type",
        "interactive",
        "--payload",
        "size_42",
        "--text",
        "Size 42",
        "--repeat",
        "2",
    ])
    .await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("wamid.") && out.contains("200, 200"), "{out}");
    let (_, v) = next_signed(&mut posts).await;
    let message = &v["entry"][0]["changes"][0]["value"]["messages"][0];
    assert_eq!(
        message["interactive"],
        json!({"type": "button_reply", "button_reply": {"id": "size_42", "title": "Size 42"}})
    );
    // The CLI's message opened the window.
    let (status, _) = send(&sim, text_to(ANNA, "Size 42 is in stock.")).await;
    assert_eq!(status, StatusCode::OK);

    // Bad flags, or a request the simulator calls bad: usage errors.
    for args in [
        &["--from", ANNA, "--repeat", "11"][..],
        &["--from", ANNA, "--type", "poll"][..],
        &["--text", "Hi"][..],
        &["--from", "+49"][..],
    ] {
        let argv = [&["simulate", "inbound", "--sim", &base][..], args].concat();
        let (code, out, err) = cli(&argv).await;
        assert_eq!(code, Some(2), "{args:?}: {out}{err}");
        assert!(!err.contains("4915123456789"), "{err}");
    }
    // Server flags do not mix with the subcommand.
    let (code, _, err) = cli(&[
        "simulate", "--rate", "5", "inbound", "--sim", &base, "--from", ANNA,
    ])
    .await;
    assert_eq!(code, Some(2), "{err}");

    // Herald answering 500, no simulator listening, no webhook_url: runtime failures.
    let (failing_url, _failing) = receiver(AxumStatus::INTERNAL_SERVER_ERROR).await;
    let failing = start(Some(failing_url), 1.0).await;
    let (code, out, err) = cli(&[
        "simulate",
        "inbound",
        "--sim",
        &failing.url(),
        "--from",
        ANNA,
    ])
    .await;
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(out.contains("500"), "{out}");
    assert_eq!(failing.stats().inbound_failed, 1);
    let silent = start(None, 1.0).await;
    let (code, _, err) = cli(&[
        "simulate",
        "inbound",
        "--sim",
        &silent.url(),
        "--from",
        ANNA,
    ])
    .await;
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("webhook_url"), "{err}");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nobody = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let (code, _, err) = cli(&["simulate", "inbound", "--sim", &nobody, "--from", ANNA]).await;
    assert_eq!(code, Some(1), "{err}");
    sim.shutdown().await;
}

/// `herald simulate` with its flags still serves, and the helper talks to it.
#[tokio::test]
async fn herald_simulate_still_serves_with_its_flags_and_takes_inbound_requests() {
    let (url, mut posts) = receiver(AxumStatus::OK).await;
    let mut server = tokio::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args([
            "simulate",
            "--addr",
            "127.0.0.1:0",
            "--rate",
            "5",
            "--webhook-url",
            &url,
            "--app-secret",
            SECRET,
        ])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("herald simulate starts");
    let mut lines = BufReader::new(server.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("the server prints its address")
        .unwrap()
        .unwrap();
    let base = first
        .strip_prefix("herald simulator listening on ")
        .unwrap_or_else(|| panic!("{first}"))
        .to_owned();
    let (code, out, err) = cli(&[
        "simulate", "inbound", "--sim", &base, "--from", ANNA, "--text", "SNEAKERS",
    ])
    .await;
    assert_eq!(code, Some(0), "{out}{err}");
    let (_, v) = next_signed(&mut posts).await;
    assert_eq!(
        v["entry"][0]["changes"][0]["value"]["messages"][0]["text"]["body"],
        "SNEAKERS"
    );
    let stats: Value = reqwest::get(format!("{base}/__sim/stats"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["inbound_posted"], 1);
    server.start_kill().unwrap();
    let _ = server.wait().await;
}
