//! The simulator's SMSC over real SMPP: each test starts its own simulator with the SMSC on a
//! free port and talks to it with smpp34's client (and, where the client hides the answer, a
//! raw bind), pinning what herald's SMS channel relies on — binds and their refusals, decoded
//! texts, the TPS limit, receipts (TLVs and text, hex or decimal ids, duplicates, queued
//! until a bind), duplicate keys and MO messages.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::future::join_all;
use herald::channel::sms::receipt::{self, MessageState};
use herald::channel::sms::wire::{self, DC_UCS2, ESM_RECEIPT, ESM_UDHI, KEY_TLV};
use herald::simulator::{self, MoRequest, SimConfig, SimHandle, SmsOutcome, SmsStats, SmscConfig};
use reqwest::StatusCode;
use serde_json::{Value, json};
use smpp34::client::{BIND_TYPE, SMSC, SmppClient, SmppClientListener};
use smpp34::{
    SmppConnectionInformation, SmppError, Tlv, TlvTag, deliver_sm, deliver_sm_resp, submit_sm_resp,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Mutex, mpsc, oneshot};

/// Long enough for a loaded CI machine; every wait ends as soon as its event arrives.
const PATIENCE: Duration = Duration::from_secs(5);
const RECIPIENT: &str = "4915112345678";
/// Receipts in these tests come a few milliseconds after acceptance.
const RECEIPT_DELAY: Duration = Duration::from_millis(5);

async fn start(smsc: SmscConfig) -> SimHandle {
    simulator::spawn(
        SimConfig {
            smsc: Some(smsc),
            ..Default::default()
        },
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .await
    .expect("simulator starts")
}

fn quick_receipts() -> SmscConfig {
    SmscConfig {
        receipt_delay: RECEIPT_DELAY,
        ..Default::default()
    }
}

/// A bound ESME: its session and every `deliver_sm` it received (receipts and MO).
struct Esme {
    client: SmppClient,
    session: Arc<SMSC>,
    inbox: mpsc::UnboundedReceiver<deliver_sm>,
}

struct Recorder {
    bound: Mutex<Option<oneshot::Sender<Arc<SMSC>>>>,
    inbox: mpsc::UnboundedSender<deliver_sm>,
}

#[async_trait]
impl SmppClientListener for Recorder {
    async fn on_smsc_bound(&self, smsc: SMSC, _session_id: &String) {
        if let Some(tx) = self.bound.lock().await.take() {
            let _ = tx.send(Arc::new(smsc));
        }
    }

    async fn on_deliver_sm(
        &self,
        req: deliver_sm,
        _connection: &SmppConnectionInformation,
        _session_id: &String,
    ) -> deliver_sm_resp {
        let _ = self.inbox.send(req.clone());
        req.accept()
    }
}

async fn bind_as(sim: &SimHandle, bind_type: BIND_TYPE) -> Esme {
    let (tx, rx) = oneshot::channel();
    let (inbox_tx, inbox) = mpsc::unbounded_channel();
    let recorder = Arc::new(Recorder {
        bound: Mutex::new(Some(tx)),
        inbox: inbox_tx,
    });
    let addr = sim.smpp_addr().expect("the SMSC is on");
    let mut client = SmppClient::new(
        addr.ip().to_string(),
        addr.port(),
        false,
        bind_type,
        "herald".into(),
        "secret".into(),
        String::new(),
        0,
        0,
        String::new(),
        recorder,
        10,
    );
    client.start().await;
    let session = tokio::time::timeout(PATIENCE, rx)
        .await
        .expect("bound in time")
        .expect("bound");
    Esme {
        client,
        session,
        inbox,
    }
}

async fn bind(sim: &SimHandle) -> Esme {
    bind_as(sim, BIND_TYPE::TRX).await
}

impl Esme {
    /// Submits `text` as herald does: alphanumeric sender, international destination,
    /// receipt requested, the key in its TLV.
    async fn submit(&self, to: &str, text: &str, key: &str) -> submit_sm_resp {
        let (dc, bytes) = wire::encode(text);
        self.session
            .submit_sm()
            .source_addr_ton(5)
            .source_addr("ACME")
            .dest_addr_ton(1)
            .dest_addr_npi(1)
            .destination_addr(to)
            .registered_delivery(1)
            .data_coding(dc)
            .short_message(bytes)
            .tlv_raw(KEY_TLV, key.as_bytes().to_vec())
            .send()
            .await
            .expect("a submit_sm_resp")
    }

    async fn next_deliver_sm(&mut self) -> deliver_sm {
        tokio::time::timeout(PATIENCE, self.inbox.recv())
            .await
            .expect("a deliver_sm in time")
            .expect("the session is open")
    }

    async fn close(mut self) {
        let _ = self.session.send_unbind().await;
        self.client.stop().await;
    }
}

/// The SMSC's stats once `ready` holds for them (polled; fails after [`PATIENCE`]).
async fn sms_stats_when(sim: &SimHandle, ready: impl Fn(&SmsStats) -> bool) -> SmsStats {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let sms = sim.stats().sms.expect("the sms section");
        if ready(&sms) {
            return sms;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "stats never got there: {sms:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn message_id(resp: &submit_sm_resp) -> String {
    assert!(
        resp.is_success(),
        "submit refused: {:#X}",
        resp.command_status()
    );
    resp.message_id.clone().expect("a message id")
}

fn tlv(pdu: &deliver_sm, tag: TlvTag) -> Option<Vec<u8>> {
    pdu.tlvs
        .iter()
        .find(|t| t.tag == tag as u16)
        .map(|t| t.value.clone())
}

/// A `bind_transceiver` by hand (smpp34 builds them only inside its client): header, then
/// system_id, password, system_type, interface_version 3.4, TON, NPI, address_range.
fn bind_transceiver_pdu(system_id: &str, password: &str) -> Vec<u8> {
    const BIND_TRANSCEIVER: u32 = 0x0000_0009;
    let mut body = Vec::new();
    for field in [system_id, password, ""] {
        body.extend_from_slice(field.as_bytes());
        body.push(0);
    }
    body.extend_from_slice(&[0x34, 0, 0, 0]);
    let mut pdu = Vec::new();
    pdu.extend_from_slice(&(16 + body.len() as u32).to_be_bytes());
    pdu.extend_from_slice(&BIND_TRANSCEIVER.to_be_bytes());
    pdu.extend_from_slice(&0u32.to_be_bytes());
    pdu.extend_from_slice(&1u32.to_be_bytes());
    pdu.extend_from_slice(&body);
    pdu
}

/// Binds over a raw socket and returns the `bind_transceiver_resp`'s command_status: the
/// client only logs a refusal, and the test wants the code. Keeps the socket open.
async fn raw_bind(sim: &SimHandle, system_id: &str, password: &str) -> (u32, TcpStream) {
    let mut stream = TcpStream::connect(sim.smpp_addr().unwrap()).await.unwrap();
    stream
        .write_all(&bind_transceiver_pdu(system_id, password))
        .await
        .unwrap();
    let mut header = [0u8; 16];
    tokio::time::timeout(PATIENCE, stream.read_exact(&mut header))
        .await
        .expect("a bind response in time")
        .expect("a bind response");
    let status = u32::from_be_bytes(header[8..12].try_into().unwrap());
    (status, stream)
}

#[tokio::test]
async fn binds_with_wrong_credentials_are_refused_saying_which_is_wrong() {
    let sim = start(SmscConfig::default()).await;
    let (status, _) = raw_bind(&sim, "intruder", "secret").await;
    assert_eq!(status, SmppError::ESME_RINVSYSID as u32);
    let (status, _) = raw_bind(&sim, "herald", "guess").await;
    assert_eq!(status, SmppError::ESME_RINVPASWD as u32);
    let (status, _ok) = raw_bind(&sim, "herald", "secret").await;
    assert_eq!(status, SmppError::ESME_ROK as u32);
    let esme = bind(&sim).await;
    // The SMSC counts a bind once the session is set up, a moment after the client's.
    let sms = sms_stats_when(&sim, |sms| sms.binds == 2).await;
    assert_eq!(sms.binds_refused, 2);
    esme.close().await;
}

#[tokio::test]
async fn a_bind_beyond_the_account_s_limit_is_refused() {
    let sim = start(SmscConfig {
        max_binds: 1,
        ..Default::default()
    })
    .await;
    let esme = bind(&sim).await;
    let (status, _) = raw_bind(&sim, "herald", "secret").await;
    assert_eq!(status, SmppError::ESME_RBINDFAIL as u32);
    esme.close().await;
}

#[tokio::test]
async fn gsm7_ucs2_and_payload_texts_read_back_decoded() {
    let sim = start(SmscConfig::default()).await;
    let esme = bind(&sim).await;
    let gsm = esme
        .submit(RECIPIENT, "ACME: Sneaker -30 % {heute} 99€", "job-1:a")
        .await;
    let ucs2 = esme
        .submit("4917698765432", "Скидка 30 % 👟", "job-1:b")
        .await;
    let long = "Lange Nachricht ".repeat(20);
    let (dc, bytes) = wire::encode(&long);
    let payload = esme
        .session
        .submit_sm()
        .source_addr_ton(5)
        .source_addr("ACME")
        .dest_addr_ton(1)
        .dest_addr_npi(1)
        .destination_addr("4930901820")
        .data_coding(dc)
        .tlv(TlvTag::MessagePayload, bytes)
        .send()
        .await
        .unwrap();

    let listed = sim.sms_messages();
    assert_eq!(listed.len(), 3);
    assert_eq!(listed[0].text, "ACME: Sneaker -30 % {heute} 99€");
    assert_eq!(
        (listed[0].to.as_str(), listed[0].from.as_str()),
        ("+4915112345678", "ACME")
    );
    assert_eq!((listed[0].data_coding, listed[0].parts), (0, 1));
    assert_eq!(listed[0].key.as_deref(), Some("job-1:a"));
    assert_eq!(listed[0].message_id, message_id(&gsm));
    assert_eq!(listed[1].text, "Скидка 30 % 👟");
    assert_eq!(listed[1].data_coding, DC_UCS2);
    assert_eq!(listed[1].message_id, message_id(&ucs2));
    assert_eq!(listed[2].text, long);
    assert_eq!(listed[2].parts, 3, "320 GSM-7 characters are three parts");
    assert_eq!(listed[2].key, None);
    assert_eq!(listed[2].message_id, message_id(&payload));

    // The same list over HTTP.
    let over_http: Value = reqwest::get(format!("{}/__sim/sms/messages", sim.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(over_http[1]["text"], "Скидка 30 % 👟");
    assert_eq!(over_http[0]["to"], "+4915112345678");
    esme.close().await;
}

#[tokio::test]
async fn udh_concatenated_parts_are_joined_into_one_message() {
    let sim = start(SmscConfig::default()).await;
    let esme = bind(&sim).await;
    let text = "Ж".repeat(80);
    let (dc, bytes) = wire::encode(&text);
    let (first, second) = bytes.split_at(134);
    let mut ids = Vec::new();
    for (seq, body) in [(1u8, first), (2, second)] {
        let mut sm = vec![0x05, 0x00, 0x03, 0x7F, 0x02, seq];
        sm.extend_from_slice(body);
        let resp = esme
            .session
            .submit_sm()
            .source_addr_ton(5)
            .source_addr("ACME")
            .dest_addr_ton(1)
            .dest_addr_npi(1)
            .destination_addr(RECIPIENT)
            .esm_class(ESM_UDHI)
            .data_coding(dc)
            .short_message(sm)
            .tlv_raw(KEY_TLV, b"job-2:a".to_vec())
            .send()
            .await
            .unwrap();
        ids.push(message_id(&resp));
    }
    let listed = sim.sms_messages();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].text, text);
    assert_eq!(listed[0].parts, 2);
    assert_eq!(listed[0].message_ids, ids);
    let sms = sim.stats().sms.unwrap();
    assert_eq!((sms.accepted, sms.messages, sms.duplicates), (2, 1, 0));
    esme.close().await;
}

#[tokio::test]
async fn submits_beyond_the_tps_limit_are_throttled_and_not_accepted() {
    let sim = start(SmscConfig {
        tps: 3,
        ..Default::default()
    })
    .await;
    let esme = bind(&sim).await;
    let keys: Vec<String> = (0..6).map(|i| format!("k-{i}")).collect();
    let answers = join_all(keys.iter().map(|key| esme.submit(RECIPIENT, "hi", key))).await;
    let throttled = answers
        .iter()
        .filter(|r| r.command_status() == SmppError::ESME_RTHROTTLED as u32)
        .count();
    let accepted = answers.iter().filter(|r| r.is_success()).count();
    assert_eq!((accepted, throttled), (3, 3));
    let sms = sim.stats().sms.unwrap();
    assert_eq!(
        (sms.accepted, sms.throttled, sms.max_in_one_second),
        (3, 3, 3)
    );
    assert_eq!(sim.sms_messages().len(), 3);
    esme.close().await;
}

#[tokio::test]
async fn a_receipt_carries_both_tlvs_and_the_text_form() {
    let sim = start(SmscConfig {
        undeliverable: ["+49 176 00000000".to_owned()].into(),
        ..quick_receipts()
    })
    .await;
    let mut esme = bind(&sim).await;
    let id = message_id(
        &esme
            .submit(RECIPIENT, "ACME: Sneaker -30 % nur heute", "k-1")
            .await,
    );
    let dlr = esme.next_deliver_sm().await;
    assert_eq!(dlr.esm_class & ESM_RECEIPT, ESM_RECEIPT);
    assert_eq!(
        (dlr.source_addr.as_str(), dlr.destination_addr.as_str()),
        (RECIPIENT, "ACME")
    );
    assert_eq!(
        tlv(&dlr, TlvTag::ReceiptedMessageId),
        Some(format!("{id}\0").into_bytes())
    );
    assert_eq!(tlv(&dlr, TlvTag::MessageStateTlv), Some(vec![2]));
    let text = String::from_utf8(dlr.short_message.clone()).unwrap();
    assert!(
        text.starts_with(&format!("id:{id} sub:001 dlvrd:001 submit date:")),
        "{text}"
    );
    assert!(
        text.ends_with("stat:DELIVRD err:000 text:ACME: Sneaker -30 % "),
        "{text}"
    );
    let read = receipt::parse(None, None, &dlr.short_message).unwrap();
    assert_eq!((read.message_id, read.state), (id, MessageState::Delivered));

    message_id(&esme.submit("4917600000000", "hi", "k-2").await);
    let dlr = esme.next_deliver_sm().await;
    assert_eq!(tlv(&dlr, TlvTag::MessageStateTlv), Some(vec![5]));
    let read = receipt::parse(None, None, &dlr.short_message).unwrap();
    assert_eq!(read.state, MessageState::Undeliverable);
    assert_eq!(read.error.as_deref(), Some("001"));
    assert_eq!(sim.sms_messages()[1].outcome, SmsOutcome::Undeliverable);

    // Counted once the deliver_sm_resp is back, a moment after the client saw the receipt.
    let sms = sms_stats_when(&sim, |sms| sms.receipts_pending == 0).await;
    assert_eq!(
        (sms.receipts_sent.delivered, sms.receipts_sent.undeliverable),
        (1, 1)
    );
    esme.close().await;
}

#[tokio::test]
async fn with_decimal_receipt_ids_the_receipt_names_the_hex_id_in_decimal() {
    let sim = start(SmscConfig {
        decimal_receipt_ids: true,
        ..quick_receipts()
    })
    .await;
    let mut esme = bind(&sim).await;
    let hex = message_id(&esme.submit(RECIPIENT, "hi", "k-1").await);
    let decimal = u64::from_str_radix(&hex, 16).unwrap().to_string();
    let dlr = esme.next_deliver_sm().await;
    let read = receipt::parse(None, None, &dlr.short_message).unwrap();
    assert_eq!(read.message_id, decimal);
    assert_eq!(
        tlv(&dlr, TlvTag::ReceiptedMessageId),
        Some(format!("{decimal}\0").into_bytes())
    );
    assert!(receipt::id_forms(&decimal).contains(&receipt::canonical_id(&hex)));
    esme.close().await;
}

#[tokio::test]
async fn with_duplicate_receipts_each_receipt_comes_twice() {
    let sim = start(SmscConfig {
        duplicate_receipts: true,
        ..quick_receipts()
    })
    .await;
    let mut esme = bind(&sim).await;
    let id = message_id(&esme.submit(RECIPIENT, "hi", "k-1").await);
    for _ in 0..2 {
        let dlr = esme.next_deliver_sm().await;
        assert_eq!(
            receipt::parse(None, None, &dlr.short_message)
                .unwrap()
                .message_id,
            id
        );
    }
    esme.close().await;
}

#[tokio::test]
async fn a_receipt_with_no_session_to_take_it_waits_for_the_next_bind() {
    let sim = start(quick_receipts()).await;
    // A transmitter can submit but not receive.
    let sender = bind_as(&sim, BIND_TYPE::TX).await;
    let id = message_id(&sender.submit(RECIPIENT, "hi", "k-1").await);
    tokio::time::sleep(RECEIPT_DELAY * 4).await;
    assert_eq!(sim.stats().sms.unwrap().receipts_pending, 1);
    let mut receiver = bind_as(&sim, BIND_TYPE::RX).await;
    let dlr = receiver.next_deliver_sm().await;
    assert_eq!(
        receipt::parse(None, None, &dlr.short_message)
            .unwrap()
            .message_id,
        id
    );
    sender.close().await;
    receiver.close().await;
}

#[tokio::test]
async fn a_repeated_key_is_counted_as_a_duplicate_and_still_accepted() {
    let sim = start(SmscConfig::default()).await;
    let esme = bind(&sim).await;
    let first = message_id(&esme.submit(RECIPIENT, "hi", "job-3:a").await);
    let again = message_id(&esme.submit(RECIPIENT, "hi", "job-3:a").await);
    assert_ne!(first, again, "every accepted submit gets its own id");
    let sms = sim.stats().sms.unwrap();
    assert_eq!((sms.accepted, sms.duplicates), (2, 1));
    assert_eq!(sms.duplicate_keys, ["job-3:a"]);
    assert!(sim.sms_messages()[1].duplicate);
    esme.close().await;
}

async fn post_mo(sim: &SimHandle, body: Value) -> (StatusCode, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}/__sim/sms/mo", sim.url()))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn an_mo_reaches_a_bound_session_without_the_receipt_bit() {
    let sim = start(SmscConfig::default()).await;
    let mut esme = bind(&sim).await;
    let (status, answer) = post_mo(
        &sim,
        json!({ "from": "+4917612345678", "to": "ACME", "text": "STOP" }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let mo = esme.next_deliver_sm().await;
    assert_eq!(mo.esm_class & ESM_RECEIPT, 0);
    assert_eq!(mo.source_addr, "4917612345678");
    assert_eq!((mo.source_addr_ton, mo.source_addr_npi), (1, 1));
    assert_eq!(
        (mo.destination_addr.as_str(), mo.dest_addr_ton),
        ("ACME", 5)
    );
    assert_eq!(wire::decode(mo.data_coding, &mo.short_message), "STOP");

    // Through the handle, to a number, in UCS-2.
    sim.send_mo(&MoRequest {
        from: "+4917612345678".into(),
        to: "+49 30 901820".into(),
        text: "Стоп".into(),
    })
    .await
    .unwrap();
    let mo = esme.next_deliver_sm().await;
    assert_eq!(mo.data_coding, DC_UCS2);
    assert_eq!(mo.destination_addr, "4930901820");
    assert_eq!(wire::decode(mo.data_coding, &mo.short_message), "Стоп");
    assert_eq!(sim.stats().sms.unwrap().mo_sent, 2);
    esme.close().await;
}

#[tokio::test]
async fn an_mo_without_a_bound_session_is_409_and_without_an_smsc_404() {
    let sim = start(SmscConfig::default()).await;
    let (status, answer) = post_mo(
        &sim,
        json!({ "from": "+4917612345678", "to": "ACME", "text": "STOP" }),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("no SMPP session"),
        "{answer}"
    );
    let (status, _) = post_mo(&sim, json!({ "from": "0176", "to": "ACME", "text": "x" })).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let plain = simulator::spawn(SimConfig::default(), SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    assert_eq!(plain.smpp_addr(), None);
    let (status, _) = post_mo(
        &plain,
        json!({ "from": "+4917612345678", "to": "ACME", "text": "STOP" }),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let stats: Value = reqwest::get(format!("{}/__sim/stats", plain.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(stats.get("sms").is_none(), "{stats}");
}

#[tokio::test]
async fn the_stats_endpoint_has_an_sms_section_and_reset_clears_it() {
    let sim = start(SmscConfig::default()).await;
    let esme = bind(&sim).await;
    message_id(&esme.submit(RECIPIENT, "hi", "k-1").await);
    let url = format!("{}/__sim/stats", sim.url());
    let stats: Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
    assert_eq!(stats["sms"]["accepted"], 1);
    assert_eq!(stats["sms"]["bound_sessions"], 1);
    reqwest::Client::new()
        .post(format!("{}/__sim/reset", sim.url()))
        .send()
        .await
        .unwrap();
    let sms = sim.stats().sms.unwrap();
    assert_eq!((sms.accepted, sms.bound_sessions), (0, 1));
    assert!(sim.sms_messages().is_empty());
    esme.close().await;
}

#[tokio::test]
async fn a_bad_destination_is_refused_with_its_status() {
    let sim = start(SmscConfig::default()).await;
    let esme = bind(&sim).await;
    let resp = esme.submit("+4915112345678", "hi", "k-1").await;
    assert_eq!(resp.command_status(), SmppError::ESME_RINVDSTADR as u32);
    let resp = esme
        .session
        .submit_sm()
        .source_addr_ton(5)
        .source_addr("ACME")
        .dest_addr_ton(1)
        .dest_addr_npi(1)
        .destination_addr(RECIPIENT)
        .short_message(b"x".to_vec())
        .tlvs([Tlv::new(TlvTag::MessagePayload as u16, b"y".to_vec())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.command_status(), SmppError::ESME_RINVMSGLEN as u32);
    let sms = sim.stats().sms.unwrap();
    assert_eq!(sms.rejected.get("0x0B"), Some(&1));
    assert_eq!(sms.accepted, 0);
    esme.close().await;
}

#[tokio::test]
async fn herald_s_sms_channel_sends_and_reads_receipts_and_mo_through_the_simulator() {
    use herald::channel::sms::{Inbound, SmsChannel, SmsRoute};
    use herald::channel::{Answer, Channel, Endpoint, Prepared};
    use herald::domain::{IdempotencyKey, PhoneNumber};

    let sim = start(SmscConfig {
        decimal_receipt_ids: true,
        ..quick_receipts()
    })
    .await;
    let addr = sim.smpp_addr().unwrap();
    let route = SmsRoute::parse(&format!(
        "smpp://herald:secret@{}:{}?receipt_ids=decimal",
        addr.ip(),
        addr.port()
    ))
    .unwrap();
    let (channel, mut inbound) = SmsChannel::start(route);
    assert!(channel.wait_bound(PATIENCE).await, "herald binds");
    let to = PhoneNumber::parse("+4915112345678").unwrap();
    let key = IdempotencyKey::parse("bf26:anna").unwrap();
    let text = "ACME: Sneaker -30 % nur heute! ".repeat(6);
    let answer = channel
        .send(
            &Endpoint(String::new()),
            &Prepared {
                session: None,
                to: &to,
                key: &key,
                template: "",
                language: "",
                components: &[],
                text: &text,
                from: "ACME",
            },
        )
        .await;
    let Answer::Accepted { provider_id, .. } = answer else {
        panic!("not accepted: {answer:?}");
    };
    let listed = sim.sms_messages();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].text, text);
    assert_eq!(listed[0].key.as_deref(), Some("bf26:anna"));
    assert_eq!(listed[0].parts, 2);
    assert_eq!(receipt::canonical_id(&listed[0].message_id), provider_id);

    let Inbound::Receipt(dlr) = next_inbound(&mut inbound).await else {
        panic!("not a receipt");
    };
    assert_eq!(dlr.state, MessageState::Delivered);
    assert!(receipt::id_forms(&dlr.message_id).contains(&provider_id));

    sim.send_mo(&MoRequest {
        from: "+4915112345678".into(),
        to: "ACME".into(),
        text: "STOP".into(),
    })
    .await
    .unwrap();
    let mo = next_inbound(&mut inbound).await;
    assert_eq!(
        mo,
        Inbound::Mo {
            from: "4915112345678".into(),
            to: "ACME".into(),
            text: "STOP".into(),
        }
    );
    channel.stop();
}

async fn next_inbound<T>(inbound: &mut tokio::sync::mpsc::Receiver<T>) -> T {
    tokio::time::timeout(PATIENCE, inbound.recv())
        .await
        .expect("inbound in time")
        .expect("the channel is open")
}
