//! herald's SMPP client against an SMSC it did not write: node-smpp's server
//! (`tests/contract/smsc.js`, npm `smpp` 0.5.1, installed by `npm ci --prefix tests/contract`).
//! The SMSC prints what it decoded of every PDU as JSON lines, so these tests pin herald's
//! binds, submits, refusals, keep-alives, unbinds, receipts and MO messages as a third-party
//! implementation reads and writes them — not as herald's own codec would. Without Node.js or
//! the npm packages the tests say SKIPPED, unless `HERALD_REQUIRE_SERVICES=1` makes that a
//! failure (as in CI).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use chrono::NaiveDate;
use herald::app::sms::receipt_update;
use herald::channel::sms::receipt::{MessageState, canonical_id};
use herald::channel::sms::route::ReceiptIds;
use herald::channel::sms::{Inbound, SmsChannel, SmsRoute, wire};
use herald::channel::{Answer, Channel, Prepared};
use herald::domain::{IdempotencyKey, PhoneNumber, SenderId};
use herald::policy::classify::{Action, DEFAULT_MAX_ATTEMPTS, Transport};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::watch;

use crate::support::require_services;

/// How long the SMSC may take to print its port (Node.js starting on a busy machine).
const START: Duration = Duration::from_secs(10);
/// How long anything the SMSC should see or send may take to show up.
const SOON: Duration = Duration::from_secs(3);

/// Where the SMSC script and its `node_modules` live.
fn contract_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/contract")
}

/// A running `smsc.js`: its port and every line it printed so far. Dropping it closes its
/// stdin (the script exits on that) and kills it.
struct Smsc {
    port: u16,
    lines: watch::Receiver<Vec<Value>>,
    _stdin: ChildStdin,
    _child: Child,
}

impl Smsc {
    /// Starts the SMSC on a free port with `options` (see `smsc.js`); `None` (said loudly)
    /// when Node.js or the npm packages are missing, a failure instead under
    /// `HERALD_REQUIRE_SERVICES=1`.
    async fn start(options: &[&str]) -> Option<Smsc> {
        let dir = contract_dir();
        let missing = match Command::new("node").arg("--version").output().await {
            Err(e) => Some(format!("`node` cannot be run ({e}); install Node.js")),
            Ok(out) if !out.status.success() => Some("`node --version` failed".to_owned()),
            Ok(_) if !dir.join("node_modules/smpp/package.json").is_file() => Some(format!(
                "node-smpp is not installed in {}; run `npm ci --prefix tests/contract`",
                dir.display()
            )),
            Ok(_) => None,
        };
        if let Some(why) = missing {
            if require_services() {
                panic!("HERALD_REQUIRE_SERVICES=1 but the contract SMSC cannot start: {why}");
            }
            eprintln!("SKIPPED: the contract SMSC cannot start: {why}");
            return None;
        }

        let mut child = Command::new("node")
            .arg(dir.join("smsc.js"))
            .arg("0")
            .args(options)
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start node tests/contract/smsc.js");
        let stdin = child.stdin.take().expect("the SMSC's stdin");
        let mut out = BufReader::new(child.stdout.take().expect("the SMSC's stdout")).lines();
        let first = tokio::time::timeout(START, out.next_line())
            .await
            .expect("the SMSC prints its port within 10 s")
            .expect("read the SMSC's stdout")
            .expect("the SMSC printed its port before exiting");
        let port = serde_json::from_str::<Value>(&first)
            .ok()
            .and_then(|v| v["port"].as_u64())
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or_else(|| panic!("the SMSC's first line is not {{\"port\":N}}: {first}"));

        let (tx, lines) = watch::channel(Vec::new());
        tokio::spawn(async move {
            while let Ok(Some(line)) = out.next_line().await {
                let value = serde_json::from_str(&line).unwrap_or(Value::String(line));
                tx.send_modify(|all| all.push(value));
            }
        });
        Some(Smsc {
            port,
            lines,
            _stdin: stdin,
            _child: child,
        })
    }

    /// herald's route to this SMSC as `user:password`.
    fn route(&self, credentials: &str) -> SmsRoute {
        SmsRoute::parse(&format!(
            "smpp://{credentials}@127.0.0.1:{}?tps=100&enquire_link=1s&response_timeout=2s",
            self.port
        ))
        .expect("a valid route URL")
    }

    /// Every line printed so far that `pred` accepts.
    fn seen(&self, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
        self.lines
            .borrow()
            .iter()
            .filter(|l| pred(l))
            .cloned()
            .collect()
    }

    /// The first line `pred` accepts, waiting up to `within` for it.
    async fn wait_for(&self, what: &str, within: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        self.wait_until(what, within, |all| all.iter().any(&pred))
            .await
            .into_iter()
            .find(|l| pred(l))
            .expect("just seen")
    }

    /// Every line so far, once `done` says they are enough, waiting up to `within`.
    async fn wait_until(
        &self,
        what: &str,
        within: Duration,
        done: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let mut rx = self.lines.clone();
        let found = tokio::time::timeout(within, rx.wait_for(|all| done(all))).await;
        match found {
            Ok(Ok(all)) => all.clone(),
            _ => panic!(
                "{what}: not seen within {within:?}; the SMSC printed:\n{}",
                self.transcript()
            ),
        }
    }

    fn transcript(&self) -> String {
        self.lines
            .borrow()
            .iter()
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// A line about a `name` PDU from herald (requests the SMSC sends say `"from":"smsc"`).
fn command(line: &Value, name: &str) -> bool {
    line["command"] == name && line["from"].is_null()
}

/// One message sent, and what the SMSC must have read from it.
struct Case {
    what: &'static str,
    from: &'static str,
    text: String,
    /// source_addr as sent: the sender without `+`.
    source_addr: &'static str,
    source_ton_npi: (u64, u64),
    data_coding: u8,
    /// Longer than one SMS: the whole text in `message_payload`, `short_message` empty.
    in_payload: bool,
}

fn cases() -> Vec<Case> {
    let long = "ACME Sneaker Flash Sale: heute -30 % auf alle Modelle, nur online und solange \
                der Vorrat reicht. Gutschein {FLASH30} an der Kasse eingeben. Abmelden: STOP an \
                die Nummer senden. Viel Spass!";
    assert!(
        long.chars().count() > 160,
        "the long text must not fit one SMS"
    );
    let long_ucs2 = "Привет! Распродажа кроссовок ACME: сегодня скидка 30 % на все модели, \
                     только онлайн. 👟";
    assert!(long_ucs2.encode_utf16().count() > 70);
    vec![
        Case {
            what: "GSM-7 with extension characters",
            from: "ACME",
            text: "ACME: Sneaker -30 % nur heute, 99€ [x] {Preis} ~|^\\ @£$¥ Jörg".into(),
            source_addr: "ACME",
            source_ton_npi: (5, 0),
            data_coding: wire::DC_GSM7,
            in_payload: false,
        },
        Case {
            what: "UCS-2 (Cyrillic and an emoji)",
            from: "ACME",
            text: "Привет, Jörg! Кроссовки -30 % 👟".into(),
            source_addr: "ACME",
            source_ton_npi: (5, 0),
            data_coding: wire::DC_UCS2,
            in_payload: false,
        },
        Case {
            what: "GSM-7 longer than 160 characters",
            from: "ACME",
            text: long.into(),
            source_addr: "ACME",
            source_ton_npi: (5, 0),
            data_coding: wire::DC_GSM7,
            in_payload: true,
        },
        Case {
            what: "UCS-2 longer than 70 characters",
            from: "ACME",
            text: long_ucs2.into(),
            source_addr: "ACME",
            source_ton_npi: (5, 0),
            data_coding: wire::DC_UCS2,
            in_payload: true,
        },
        Case {
            what: "from a number",
            from: "+4930123456",
            text: "Ihr Termin morgen 10:00. Antworten Sie mit STOP zum Abmelden.".into(),
            source_addr: "4930123456",
            source_ton_npi: (1, 1),
            data_coding: wire::DC_GSM7,
            in_payload: false,
        },
    ]
}

/// What the customer answers, in `smsc.js`'s `MO_REPLIES` (GSM-7, then UCS-2).
const MO_REPLIES: [&str; 2] = ["STOPP, danke Jörg! 5€", "СТОП 🙏"];

fn unhex(field: &Value) -> Vec<u8> {
    hex::decode(field.as_str().unwrap_or_default()).expect("hex from the SMSC")
}

#[tokio::test]
async fn node_smpp_reads_herald_submits_and_herald_matches_its_receipts() {
    let Some(smsc) = Smsc::start(&[]).await else {
        return;
    };
    let (channel, mut inbound) = SmsChannel::start(smsc.route("herald:secret"));
    assert!(
        channel.wait_bound(SOON).await,
        "herald did not bind to node-smpp:\n{}",
        smsc.transcript()
    );

    let bind = smsc
        .wait_for("the bind", SOON, |l| {
            l["status"] == 0 && l["system_id"] == "herald"
        })
        .await;
    assert_eq!(bind["command"], "bind_transceiver", "{bind}");
    assert_eq!(bind["password_ok"], true, "{bind}");
    assert_eq!(bind["system_type"], "", "{bind}");
    assert_eq!(bind["interface_version"], 0x34, "SMPP 3.4: {bind}");

    let to = PhoneNumber::parse("+4915112345678").unwrap();
    let endpoint = channel.endpoint(&SenderId::from_trusted("1"));
    let run = uuid::Uuid::new_v4().simple().to_string();
    // (case, the id herald recorded, the SMSC's hex id)
    let mut sent = Vec::new();
    for (i, case) in cases().into_iter().enumerate() {
        let key = IdempotencyKey::from_trusted(format!("k:contract-{run}:{i}"));
        let message = Prepared {
            session: None,
            to: &to,
            key: &key,
            template: "",
            language: "",
            components: &[],
            text: &case.text,
            from: case.from,
        };
        let answer = channel.send(&endpoint, &message).await;
        let submit = smsc
            .wait_for(case.what, SOON, |l| {
                command(l, "submit_sm") && l["key"] == key.as_str()
            })
            .await;
        let what = format!("{}: {submit}", case.what);

        // The answer names the message by the SMSC's id, in the form the ledger stores.
        let smsc_id = submit["message_id"]
            .as_str()
            .expect("a message_id")
            .to_owned();
        let Answer::Accepted { provider_id, held } = answer else {
            panic!("{what}: herald's answer is {answer:?}, not Accepted");
        };
        assert_eq!(provider_id, canonical_id(&smsc_id), "{what}");
        assert_ne!(
            provider_id, smsc_id,
            "the SMSC's id has a leading zero and upper case"
        );
        assert!(!held, "{what}");

        // Addresses.
        assert_eq!(submit["source_addr"], case.source_addr, "{what}");
        assert_eq!(
            (&submit["source_addr_ton"], &submit["source_addr_npi"]),
            (&case.source_ton_npi.0.into(), &case.source_ton_npi.1.into()),
            "source TON/NPI: {what}"
        );
        assert_eq!(submit["destination_addr"], "4915112345678", "{what}");
        assert_eq!(
            (&submit["dest_addr_ton"], &submit["dest_addr_npi"]),
            (&1.into(), &1.into()),
            "destination TON/NPI: {what}"
        );
        // What herald asks of the SMSC: a final receipt, defaults for the rest.
        assert_eq!(submit["registered_delivery"], 1, "{what}");
        assert_eq!(submit["esm_class"], 0, "no UDH, default mode: {what}");
        assert_eq!(submit["service_type"], "", "{what}");
        for field in ["protocol_id", "priority_flag", "replace_if_present_flag"] {
            assert_eq!(submit[field], 0, "{field}: {what}");
        }
        assert_eq!(submit["schedule_delivery_time"], "", "{what}");
        assert_eq!(submit["validity_period"], "", "{what}");
        assert_eq!(submit["key"], key.as_str(), "the key TLV 0x1400: {what}");

        // The text: in short_message or message_payload, never both; the bytes decode to the
        // text with herald's decoder, and node-smpp's own decoder reads the same text.
        assert_eq!(submit["data_coding"], case.data_coding, "{what}");
        let (bytes, node_text) = if case.in_payload {
            assert_eq!(submit["short_message_hex"], "", "payload only: {what}");
            (
                unhex(&submit["message_payload_hex"]),
                &submit["message_payload_text"],
            )
        } else {
            assert_eq!(submit["message_payload_hex"], Value::Null, "{what}");
            (
                unhex(&submit["short_message_hex"]),
                &submit["short_message_text"],
            )
        };
        assert_eq!(wire::decode(case.data_coding, &bytes), case.text, "{what}");
        assert_eq!(node_text, case.text.as_str(), "node-smpp's reading: {what}");
        if !case.in_payload {
            let limit = if case.data_coding == wire::DC_GSM7 {
                160
            } else {
                140
            };
            assert!(bytes.len() <= limit, "{what}");
        }
        sent.push((case, provider_id, smsc_id));
    }

    // Every message gets one receipt (decimal ids; every other one without TLVs), and the
    // message from a number two answers (MO) from the customer.
    let mut receipts = Vec::new();
    let mut replies = Vec::new();
    while receipts.len() < sent.len() || replies.len() < MO_REPLIES.len() {
        let next = tokio::time::timeout(SOON, inbound.recv()).await;
        match next {
            Ok(Some(Inbound::Receipt(r))) => receipts.push(r),
            Ok(Some(Inbound::Mo { from, to, text })) => replies.push((from, to, text)),
            Ok(other) => panic!(
                "expected a receipt or an MO, got {other:?}; the SMSC printed:\n{}",
                smsc.transcript()
            ),
            Err(_) => panic!(
                "{} of {} receipts and {} of {} MOs within {SOON:?}; the SMSC printed:\n{}",
                receipts.len(),
                sent.len(),
                replies.len(),
                MO_REPLIES.len(),
                smsc.transcript()
            ),
        }
    }

    // herald reads node-smpp's GSM-7 and UCS-2 encodings of the customer's text.
    for text in MO_REPLIES {
        let reply = (
            "4915112345678".to_owned(),
            "4930123456".to_owned(),
            text.to_owned(),
        );
        assert!(replies.contains(&reply), "{reply:?} not in {replies:?}");
    }

    // herald matches each receipt to its message by the id forms the inbox looks up.
    let done = NaiveDate::from_ymd_opt(2026, 11, 26)
        .unwrap()
        .and_hms_opt(15, 31, 0)
        .unwrap();
    for (case, provider_id, smsc_id) in &sent {
        let decimal = u64::from_str_radix(smsc_id, 16).unwrap().to_string();
        let dlr = smsc
            .wait_for("the receipt", SOON, |l| {
                command(l, "deliver_sm") && l["for_message_id"] == smsc_id.as_str()
            })
            .await;
        let matching: Vec<_> = receipts
            .iter()
            .filter(|r| {
                let update =
                    receipt_update(&r.message_id, r.state, r.error.clone(), ReceiptIds::Auto)
                        .expect("a final state updates the ledger");
                update.message_ids.contains(provider_id)
            })
            .collect();
        assert_eq!(
            matching.len(),
            1,
            "{}: receipts naming {provider_id}: {matching:?} (the SMSC sent {dlr})",
            case.what
        );
        let r = matching[0];
        assert_eq!(r.message_id, decimal, "the receipt's id as sent: {dlr}");
        assert_eq!(r.state, MessageState::Delivered, "{dlr}");
        assert_eq!(r.error, None, "{dlr}");
        assert_eq!(r.done_at, Some(done), "{dlr}");
        let update = receipt_update(&r.message_id, r.state, None, ReceiptIds::Auto).unwrap();
        assert_eq!(update.status, "delivered");
        // This SMSC is a `receipt_ids=decimal` provider: with that route option the receipt
        // names exactly the stored id.
        let decimal_route = receipt_update(&r.message_id, r.state, None, ReceiptIds::Decimal);
        assert_eq!(
            decimal_route.unwrap().message_ids,
            std::slice::from_ref(provider_id),
            "{dlr}"
        );
        // No other message is named by this receipt.
        for (other, other_id, _) in &sent {
            if other_id != provider_id {
                assert!(
                    !update.message_ids.contains(other_id),
                    "{}'s receipt also names {}",
                    case.what,
                    other.what
                );
            }
        }
        // herald acknowledged it, so the SMSC will not resend it.
        let ack = smsc
            .wait_for("deliver_sm_resp", SOON, |l| {
                command(l, "deliver_sm_resp") && l["sequence_number"] == dlr["sequence_number"]
            })
            .await;
        assert_eq!(ack["status"], 0, "{ack}");
        assert_eq!(
            ack["message_id"], "",
            "deliver_sm_resp's message_id is unused: {ack}"
        );
    }
    let delivered = sent.len() + MO_REPLIES.len();
    smsc.wait_until("every deliver_sm acked", SOON, |all| {
        all.iter().filter(|l| command(l, "deliver_sm_resp")).count() >= delivered
    })
    .await;
    let acks = smsc.seen(|l| command(l, "deliver_sm_resp"));
    assert_eq!(
        acks.len(),
        delivered,
        "each deliver_sm acked once: {acks:?}"
    );
    assert!(
        acks.iter()
            .all(|a| a["status"] == 0 && a["message_id"] == ""),
        "{acks:?}"
    );
    let with_tlvs = smsc.seen(|l| command(l, "deliver_sm") && !l["message_state"].is_null());
    assert!(
        !with_tlvs.is_empty() && with_tlvs.len() < sent.len(),
        "both receipt forms (TLVs and text only) ran"
    );

    channel.stop();
    smsc.wait_for("unbind on stop", SOON, |l| command(l, "unbind"))
        .await;
}

#[tokio::test]
async fn refused_credentials_never_bind() {
    let Some(smsc) = Smsc::start(&[]).await else {
        return;
    };
    let (wrong_password, _rx1) = SmsChannel::start(smsc.route("herald:wrong"));
    let (unknown_system, _rx2) = SmsChannel::start(smsc.route("nobody:secret"));
    let (a, b) = tokio::join!(
        wrong_password.wait_bound(Duration::from_secs(2)),
        unknown_system.wait_bound(Duration::from_secs(2)),
    );
    assert!(!a, "bound with a wrong password:\n{}", smsc.transcript());
    assert!(!b, "bound as an unknown system_id:\n{}", smsc.transcript());
    // ESME_RINVPASWD and ESME_RBINDFAIL, and herald tried again after each (its back-off).
    let refused_password = smsc.seen(|l| l["system_id"] == "herald" && l["status"] == 0x0E);
    let refused_system = smsc.seen(|l| l["system_id"] == "nobody" && l["status"] == 0x0D);
    assert!(!refused_password.is_empty(), "{}", smsc.transcript());
    assert!(!refused_system.is_empty(), "{}", smsc.transcript());
    assert!(
        smsc.seen(|l| l["status"] == 0).is_empty(),
        "no bind was accepted:\n{}",
        smsc.transcript()
    );
    assert!(
        smsc.seen(|l| command(l, "submit_sm")).is_empty(),
        "{}",
        smsc.transcript()
    );
    wrong_password.stop();
    unknown_system.stop();
}

#[tokio::test]
async fn refusals_are_classified_from_the_status_node_smpp_sends_and_silence_is_unknown() {
    let Some(smsc) = Smsc::start(&[]).await else {
        return;
    };
    let (channel, _rx) = SmsChannel::start(smsc.route("herald:secret"));
    assert!(channel.wait_bound(SOON).await, "{}", smsc.transcript());
    let endpoint = channel.endpoint(&SenderId::from_trusted("1"));
    let key = IdempotencyKey::from_trusted("k:contract-refused");
    // smsc.js refuses submits to 4915100000NNN with command_status NNN, header only.
    for (status, expected) in [
        // ESME_RTHROTTLED: not accepted; retry more slowly.
        (
            0x58,
            Action::Retry {
                max_attempts: DEFAULT_MAX_ATTEMPTS,
                lower_rate: true,
                pause_sender: None,
            },
        ),
        // ESME_RINVDSTADR: this recipient only.
        (
            0x0B,
            Action::DropRecipient {
                revoke_marketing: false,
            },
        ),
        // ESME_RINVSRCADR: every message would fail alike.
        (0x0A, Action::StopCampaign),
    ] {
        let to = PhoneNumber::from_trusted(format!("+4915100000{status:03}"));
        let message = Prepared {
            session: None,
            to: &to,
            key: &key,
            template: "",
            language: "",
            components: &[],
            text: "ACME: -30 %",
            from: "ACME",
        };
        let answer = channel.send(&endpoint, &message).await;
        match &answer {
            Answer::Refused { code, action, .. } => {
                assert_eq!(*code, i64::from(status), "{answer:?}");
                assert_eq!(*action, expected, "status 0x{status:02X}: {answer:?}");
            }
            other => panic!(
                "status 0x{status:02X}: {other:?}; the SMSC printed:\n{}",
                smsc.transcript()
            ),
        }
    }
    // A refusal is about one message: the session stays bound.
    assert!(channel.is_bound(), "{}", smsc.transcript());

    // No answer within response_timeout (2 s): the SMSC may have it, so it is unknown.
    let to = PhoneNumber::from_trusted("+4915100000000");
    let message = Prepared {
        session: None,
        to: &to,
        key: &key,
        template: "",
        language: "",
        components: &[],
        text: "ACME: -30 %",
        from: "ACME",
    };
    let answer = channel.send(&endpoint, &message).await;
    assert!(
        matches!(
            answer,
            Answer::Transport {
                kind: Transport::MaybeSent,
                ..
            }
        ),
        "{answer:?}"
    );
    assert_eq!(
        smsc.seen(|l| command(l, "submit_sm")).len(),
        4,
        "nothing is resent on its own: {}",
        smsc.transcript()
    );
    channel.stop();
}

#[tokio::test]
async fn an_idle_session_sends_enquire_link_on_its_timer_and_answers_the_smscs() {
    let Some(smsc) = Smsc::start(&[]).await else {
        return;
    };
    let (channel, _rx) = SmsChannel::start(smsc.route("herald:secret"));
    assert!(channel.wait_bound(SOON).await, "{}", smsc.transcript());
    // enquire_link=1s: the first one within a second or two of the bind, and the session stays
    // bound (node-smpp answered it).
    smsc.wait_for("herald's enquire_link", SOON, |l| {
        command(l, "enquire_link")
    })
    .await;
    // ...and herald answers the SMSC's own.
    let resp = smsc
        .wait_for("enquire_link_resp", SOON, |l| {
            command(l, "enquire_link_resp")
        })
        .await;
    assert_eq!(resp["status"], 0, "{resp}");
    assert!(channel.is_bound(), "{}", smsc.transcript());
    channel.stop();
    smsc.wait_for("unbind on stop", SOON, |l| command(l, "unbind"))
        .await;
}

#[tokio::test]
async fn a_session_the_smsc_unbinds_is_bound_again_and_sends() {
    let Some(smsc) = Smsc::start(&["--end-first-session-after", "300"]).await else {
        return;
    };
    let (channel, _rx) = SmsChannel::start(smsc.route("herald:secret"));
    assert!(channel.wait_bound(SOON).await, "{}", smsc.transcript());
    smsc.wait_until("a second bind", SOON, |all| {
        all.iter()
            .filter(|l| command(l, "bind_transceiver") && l["status"] == 0)
            .count()
            >= 2
    })
    .await;
    assert!(channel.wait_bound(SOON).await, "{}", smsc.transcript());

    let to = PhoneNumber::parse("+4915112345678").unwrap();
    let key = IdempotencyKey::from_trusted("k:contract-rebound");
    let message = Prepared {
        session: None,
        to: &to,
        key: &key,
        template: "",
        language: "",
        components: &[],
        text: "ACME: -30 %",
        from: "ACME",
    };
    let answer = channel
        .send(&channel.endpoint(&SenderId::from_trusted("1")), &message)
        .await;
    assert!(
        matches!(answer, Answer::Accepted { .. }),
        "{answer:?}; the SMSC printed:\n{}",
        smsc.transcript()
    );
    channel.stop();
}

/// SMPP 3.4 §4.2: an unbind is answered with unbind_resp before the connection closes
/// (smpp34 aborts its writer once `on_smsc_unbound` returns; herald's listener waits a moment
/// there so the answer is written — this test found that).
#[tokio::test]
async fn an_unbind_from_the_smsc_is_answered_with_unbind_resp() {
    let Some(smsc) = Smsc::start(&["--end-first-session-after", "300"]).await else {
        return;
    };
    let (channel, _rx) = SmsChannel::start(smsc.route("herald:secret"));
    assert!(channel.wait_bound(SOON).await, "{}", smsc.transcript());
    let resp = smsc
        .wait_for("herald's unbind_resp", SOON, |l| command(l, "unbind_resp"))
        .await;
    assert_eq!(resp["status"], 0, "{resp}");
    channel.stop();
}
