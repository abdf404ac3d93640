//! The SMSC's shared state: its sessions, the TPS window, the parts of long messages, the keys
//! seen (for duplicates), the accepted messages a test reads back, the receipts waiting to go
//! out, and the counters of `GET /__sim/stats`'s `sms` section. Decisions come from the pure
//! modules (`submit`, `receipt`); this file only applies them under one short lock.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::Utc;
use serde::{Deserialize, Serialize};
use smpp34::{SmppError, submit_sm};
use tokio::sync::{Notify, mpsc};

use super::config::SmscConfig;
use super::receipt::{self, MessageId, Outcome};
use super::sessions::Sessions;
use super::submit::{self, Reassembly, ReceiptRequest, Source, Whole};
use crate::channel::sms::wire;
use crate::policy::segments;
use crate::simulator::hashing::{HashedSet, stable_hash};
use crate::simulator::limits::SlidingWindow;
use crate::simulator::state::digits;

/// Accepted messages kept for `GET /__sim/sms/messages`; beyond this only counted, so a load
/// test of millions does not keep every text (~50 MB at this size).
const MESSAGES_LISTED: usize = 100_000;
/// How many duplicated keys the stats list by value.
const DUPLICATE_KEYS_SHOWN: usize = 100;

/// The `sms` section of `GET /__sim/stats`: what the SMSC saw since start or the last reset.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct SmsStats {
    /// Sessions bound (every bind that succeeded).
    pub binds: u64,
    /// Binds refused: unknown system_id, wrong password, or the account's bind limit.
    pub binds_refused: u64,
    /// Sessions bound right now.
    pub bound_sessions: u64,
    /// `submit_sm` accepted: each part of a long message counts.
    pub accepted: u64,
    /// Whole messages accepted (the parts of a long message joined).
    pub messages: u64,
    /// Whole messages whose key had been accepted before (still accepted, as a provider would).
    pub duplicates: u64,
    /// The first 100 distinct keys that were duplicated.
    pub duplicate_keys: Vec<String>,
    /// `submit_sm` refused with `ESME_RTHROTTLED` (0x58): beyond the TPS limit.
    pub throttled: u64,
    /// Other refused `submit_sm` by `command_status` (`"0x0B"`: bad destination, …).
    pub rejected: BTreeMap<String, u64>,
    /// The most `submit_sm` accepted in any sliding second: never above the TPS limit.
    pub max_in_one_second: u64,
    /// Long messages still missing parts.
    pub incomplete_messages: u64,
    /// Receipts acknowledged by a session, by the state they reported.
    pub receipts_sent: ReceiptCounts,
    /// Receipts not yet acknowledged: waiting out the delay, for a session to bind, or on
    /// the wire.
    pub receipts_pending: u64,
    /// Receipts dropped after every attempt was refused or timed out.
    pub receipts_given_up: u64,
    /// MO messages (`POST /__sim/sms/mo`) acknowledged by a session.
    pub mo_sent: u64,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct ReceiptCounts {
    pub delivered: u64,
    pub undeliverable: u64,
    pub expired: u64,
}

/// One accepted message, as the recipient would read it (`GET /__sim/sms/messages`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct SmsMessage {
    /// herald's idempotency key (TLV 0x1400), if the submit carried one.
    pub key: Option<String>,
    /// The sender as submitted: an alphanumeric ID or a number.
    pub from: String,
    /// The destination in E.164, with `+`.
    pub to: String,
    /// The text decoded: the parts of a long message joined.
    pub text: String,
    pub data_coding: u8,
    /// SMS the text costs ([`segments::count`]).
    pub parts: u32,
    /// The id `submit_sm_resp` gave (the first part's, for a long message sent in parts).
    pub message_id: String,
    /// Every part's id, in order: one unless the message came in several `submit_sm`.
    pub message_ids: Vec<String>,
    /// The state its receipt reports (whether or not one was asked for).
    pub outcome: Outcome,
    pub receipt_requested: bool,
    /// Its key had been accepted before.
    pub duplicate: bool,
}

/// A receipt waiting to be sent.
#[derive(Debug, Clone)]
pub struct ReceiptJob {
    pub due: tokio::time::Instant,
    /// The session that submitted: it gets the receipt while it is bound.
    pub session_id: String,
    pub message_id: String,
    pub outcome: Outcome,
    /// The original destination: the receipt's source.
    pub from: String,
    /// The original sender: the receipt's destination.
    pub to: Source,
    pub text: String,
    /// Deliveries refused or timed out so far.
    pub attempts: u32,
}

/// Everything the SMSC's handlers share.
pub struct SmscState {
    pub config: SmscConfig,
    /// Configured undeliverable numbers as digits.
    undeliverable: HashSet<String>,
    pub sessions: Sessions,
    /// Random high bits per instance, so ids of two runs never collide.
    id_base: u64,
    id_seq: AtomicU64,
    traffic: Mutex<Traffic>,
    counters: Counters,
    receipts: mpsc::UnboundedSender<ReceiptJob>,
    /// Receipts that found no session, or whose delivery failed; sent on the next bind or
    /// retry tick.
    pub parked: Mutex<VecDeque<ReceiptJob>>,
    /// Woken on every bind, so parked receipts go out at once.
    pub bound: Notify,
}

/// What changes with each submit, under one lock.
struct Traffic {
    window: SlidingWindow,
    reassembly: Reassembly,
    seen: HashedSet,
    duplicate_keys: Vec<String>,
    messages: Vec<SmsMessage>,
    rejected: BTreeMap<String, u64>,
}

#[derive(Default)]
pub struct Counters {
    pub binds: AtomicU64,
    pub binds_refused: AtomicU64,
    accepted: AtomicU64,
    messages: AtomicU64,
    duplicates: AtomicU64,
    throttled: AtomicU64,
    receipts_delivered: AtomicU64,
    receipts_undeliverable: AtomicU64,
    receipts_expired: AtomicU64,
    /// A gauge of receipts in the pipeline, not reset.
    receipts_pending: AtomicU64,
    receipts_given_up: AtomicU64,
    pub mo_sent: AtomicU64,
}

impl SmscState {
    /// The state and the receiving end of its receipt queue (for the dispatcher).
    pub fn new(config: SmscConfig) -> (Self, mpsc::UnboundedReceiver<ReceiptJob>) {
        // Unbounded: receipts in the queue are bounded by the TPS times the receipt delay, and
        // a full queue could only drop receipts, which is a fault to simulate on purpose.
        let (receipts, rx) = mpsc::unbounded_channel();
        let undeliverable = config.undeliverable.iter().map(|n| digits(n)).collect();
        let state = Self {
            undeliverable,
            sessions: Sessions::default(),
            id_base: u64::from(rand::random::<u16>() | 0x1000) << 32,
            id_seq: AtomicU64::new(1),
            traffic: Mutex::new(Traffic {
                window: SlidingWindow::new(Duration::from_secs(1)),
                reassembly: Reassembly::default(),
                seen: HashedSet::default(),
                duplicate_keys: Vec::new(),
                messages: Vec::new(),
                rejected: BTreeMap::new(),
            }),
            counters: Counters::default(),
            receipts,
            parked: Mutex::new(VecDeque::new()),
            bound: Notify::new(),
            config,
        };
        (state, rx)
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Decides a `submit_sm` from `session_id`: the message id it is accepted with, or the
    /// status it is refused with. Schedules its receipt.
    pub fn submit(&self, req: &submit_sm, session_id: &str) -> Result<String, SmppError> {
        let part = match submit::read(req) {
            Ok(part) => part,
            Err(status) => {
                *self
                    .traffic()
                    .rejected
                    .entry(format!("{:#04X}", status as u32))
                    .or_default() += 1;
                return Err(status);
            }
        };
        let outcome = receipt::outcome_for(&self.config, &self.undeliverable, &part.destination);
        let wants_receipt = match part.receipt {
            ReceiptRequest::None => false,
            ReceiptRequest::Always => true,
            ReceiptRequest::OnFailure => !outcome.delivered(),
        };
        let excerpt = wants_receipt.then(|| wire::decode(part.data_coding, &part.body));
        let (from, to) = (part.destination.clone(), part.source.clone());
        let id = {
            let mut traffic = self.traffic();
            let now = Instant::now();
            if self.config.tps > 0 && !traffic.window.has_room(now, self.config.tps) {
                self.counters.throttled.fetch_add(1, Relaxed);
                return Err(SmppError::ESME_RTHROTTLED);
            }
            traffic.window.record(now);
            self.counters.accepted.fetch_add(1, Relaxed);
            let id = MessageId(self.id_base | self.id_seq.fetch_add(1, Relaxed));
            let receipt_requested = part.receipt != ReceiptRequest::None;
            if let Some(whole) = traffic.reassembly.add(part, id.hex(), now) {
                self.record(&mut traffic, whole, outcome, receipt_requested);
            }
            id
        };
        if let Some(excerpt) = excerpt {
            self.schedule_receipt(id, outcome, session_id, from, to, &excerpt);
        }
        Ok(id.hex())
    }

    /// Counts a whole message, notes whether its key is a duplicate, and lists it.
    fn record(&self, traffic: &mut Traffic, whole: Whole, outcome: Outcome, receipt: bool) {
        self.counters.messages.fetch_add(1, Relaxed);
        let duplicate = whole
            .key
            .as_deref()
            .is_some_and(|key| !traffic.seen.insert(stable_hash(key.as_bytes())));
        if duplicate {
            self.counters.duplicates.fetch_add(1, Relaxed);
            let key = whole.key.as_deref().unwrap_or_default();
            if traffic.duplicate_keys.len() < DUPLICATE_KEYS_SHOWN
                && !traffic.duplicate_keys.iter().any(|k| k == key)
            {
                traffic.duplicate_keys.push(key.to_owned());
            }
        }
        if traffic.messages.len() >= MESSAGES_LISTED {
            return;
        }
        let text = wire::decode(whole.data_coding, &whole.body);
        traffic.messages.push(SmsMessage {
            key: whole.key,
            from: whole.source.addr,
            to: format!("+{}", whole.destination),
            parts: segments::count(&text).parts,
            text,
            data_coding: whole.data_coding,
            message_id: whole.message_ids[0].clone(),
            message_ids: whole.message_ids,
            outcome,
            receipt_requested: receipt,
            duplicate,
        });
    }

    fn schedule_receipt(
        &self,
        id: MessageId,
        outcome: Outcome,
        session_id: &str,
        from: String,
        to: Source,
        excerpt: &str,
    ) {
        let submitted = Utc::now();
        let done =
            submitted + chrono::Duration::from_std(self.config.receipt_delay).unwrap_or_default();
        let message_id = id.in_receipt(self.config.decimal_receipt_ids);
        let job = ReceiptJob {
            due: tokio::time::Instant::now() + self.config.receipt_delay,
            session_id: session_id.to_owned(),
            text: receipt::text(&message_id, outcome, submitted, done, excerpt),
            message_id,
            outcome,
            from,
            to,
            attempts: 0,
        };
        let copies = if self.config.duplicate_receipts { 2 } else { 1 };
        for _ in 0..copies {
            self.counters.receipts_pending.fetch_add(1, Relaxed);
            if self.receipts.send(job.clone()).is_err() {
                // The dispatcher has stopped: the simulator is shutting down.
                self.counters.receipts_pending.fetch_sub(1, Relaxed);
            }
        }
    }

    /// A receipt was acknowledged.
    pub fn receipt_sent(&self, outcome: Outcome) {
        let counter = match outcome {
            Outcome::Delivered => &self.counters.receipts_delivered,
            Outcome::Undeliverable => &self.counters.receipts_undeliverable,
            Outcome::Expired => &self.counters.receipts_expired,
        };
        counter.fetch_add(1, Relaxed);
        self.counters.receipts_pending.fetch_sub(1, Relaxed);
    }

    /// A receipt was dropped after its last attempt.
    pub fn receipt_given_up(&self) {
        self.counters.receipts_given_up.fetch_add(1, Relaxed);
        self.counters.receipts_pending.fetch_sub(1, Relaxed);
    }

    pub fn park(&self, job: ReceiptJob) {
        self.parked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(job);
    }

    pub fn take_parked(&self) -> VecDeque<ReceiptJob> {
        std::mem::take(&mut *self.parked.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The accepted messages, oldest first.
    pub fn messages(&self) -> Vec<SmsMessage> {
        self.traffic().messages.clone()
    }

    pub fn stats(&self) -> SmsStats {
        let c = &self.counters;
        let traffic = self.traffic();
        SmsStats {
            binds: c.binds.load(Relaxed),
            binds_refused: c.binds_refused.load(Relaxed),
            bound_sessions: self.sessions.bound_count() as u64,
            accepted: c.accepted.load(Relaxed),
            messages: c.messages.load(Relaxed),
            duplicates: c.duplicates.load(Relaxed),
            duplicate_keys: traffic.duplicate_keys.clone(),
            throttled: c.throttled.load(Relaxed),
            rejected: traffic.rejected.clone(),
            max_in_one_second: traffic.window.max_in_window(),
            incomplete_messages: traffic.reassembly.incomplete() as u64,
            receipts_sent: ReceiptCounts {
                delivered: c.receipts_delivered.load(Relaxed),
                undeliverable: c.receipts_undeliverable.load(Relaxed),
                expired: c.receipts_expired.load(Relaxed),
            },
            receipts_pending: c.receipts_pending.load(Relaxed),
            receipts_given_up: c.receipts_given_up.load(Relaxed),
            mo_sent: c.mo_sent.load(Relaxed),
        }
    }

    /// Forgets counters, the TPS window, partial messages, seen keys and the message list.
    /// Sessions stay bound and receipts on their way still go out.
    pub fn reset(&self) {
        {
            let mut traffic = self.traffic();
            traffic.window.clear();
            traffic.reassembly.clear();
            traffic.seen.clear();
            traffic.duplicate_keys.clear();
            traffic.messages.clear();
            traffic.rejected.clear();
        }
        let c = &self.counters;
        for counter in [
            &c.binds,
            &c.binds_refused,
            &c.accepted,
            &c.messages,
            &c.duplicates,
            &c.throttled,
            &c.receipts_delivered,
            &c.receipts_undeliverable,
            &c.receipts_expired,
            &c.receipts_given_up,
            &c.mo_sent,
        ] {
            counter.store(0, Relaxed);
        }
    }

    fn traffic(&self) -> MutexGuard<'_, Traffic> {
        self.traffic.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::sms::wire::KEY_TLV;
    use smpp34::Tlv;

    use super::super::submit::{NPI_E164, TON_ALPHANUMERIC, TON_INTERNATIONAL};

    fn submit_to(destination: &str, text: &str, key: Option<&str>) -> submit_sm {
        let (dc, bytes) = wire::encode(text);
        submit_sm::new(
            1,
            String::new(),
            TON_ALPHANUMERIC,
            0,
            "ACME".into(),
            TON_INTERNATIONAL,
            NPI_E164,
            destination.into(),
            0,
            0,
            0,
            String::new(),
            String::new(),
            1,
            0,
            dc,
            0,
            bytes,
        )
        .with_tlvs(key.map(|k| Tlv::new(KEY_TLV, k.as_bytes().to_vec())))
    }

    #[tokio::test]
    async fn accepted_submits_are_listed_decoded_and_get_a_receipt_each() {
        let (smsc, mut receipts) = SmscState::new(SmscConfig {
            undeliverable: HashSet::from(["+49 151 0000000".to_owned()]),
            ..Default::default()
        });
        let a = smsc
            .submit(&submit_to("4915112345678", "Grüße {x}", Some("k1")), "s1")
            .unwrap();
        let b = smsc
            .submit(&submit_to("491510000000", "Привет", Some("k2")), "s1")
            .unwrap();
        assert_ne!(a, b);
        let listed = smsc.messages();
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[0].to, "+4915112345678");
        assert_eq!(listed[0].text, "Grüße {x}");
        assert_eq!(listed[0].message_id, a);
        assert_eq!(listed[1].data_coding, wire::DC_UCS2);
        assert_eq!(listed[1].outcome, Outcome::Undeliverable);
        let first = receipts.recv().await.unwrap();
        assert_eq!(first.message_id, a);
        assert_eq!(first.from, "4915112345678");
        assert_eq!(first.to.addr, "ACME");
        assert!(
            first.text.starts_with(&format!("id:{a} ")),
            "{}",
            first.text
        );
        assert_eq!(
            receipts.recv().await.unwrap().outcome,
            Outcome::Undeliverable
        );
        assert_eq!(smsc.stats().receipts_pending, 2);
    }

    #[test]
    fn a_repeated_key_is_a_duplicate_yet_accepted() {
        let (smsc, _receipts) = SmscState::new(SmscConfig::default());
        for _ in 0..3 {
            smsc.submit(&submit_to("4915112345678", "hi", Some("k1")), "s")
                .unwrap();
        }
        smsc.submit(&submit_to("4915112345678", "hi", None), "s")
            .unwrap();
        let stats = smsc.stats();
        assert_eq!(
            (stats.accepted, stats.messages, stats.duplicates),
            (4, 4, 2)
        );
        assert_eq!(stats.duplicate_keys, ["k1"]);
        assert!(smsc.messages()[2].duplicate);
        smsc.reset();
        assert_eq!(smsc.stats().messages, 0);
        assert!(smsc.messages().is_empty());
    }

    #[test]
    fn submits_beyond_the_tps_are_throttled_and_not_accepted() {
        let (smsc, _receipts) = SmscState::new(SmscConfig {
            tps: 2,
            ..Default::default()
        });
        let results: Vec<_> = (0..4)
            .map(|_| smsc.submit(&submit_to("4915112345678", "hi", None), "s"))
            .collect();
        assert!(results[0].is_ok() && results[1].is_ok());
        assert_eq!(results[2], Err(SmppError::ESME_RTHROTTLED));
        let stats = smsc.stats();
        assert_eq!((stats.accepted, stats.throttled), (2, 2));
        assert_eq!(stats.max_in_one_second, 2);
        assert_eq!(smsc.messages().len(), 2);
    }

    #[test]
    fn refusals_are_counted_by_status() {
        let (smsc, _receipts) = SmscState::new(SmscConfig::default());
        assert_eq!(
            smsc.submit(&submit_to("+4915112345678", "hi", None), "s"),
            Err(SmppError::ESME_RINVDSTADR)
        );
        assert_eq!(smsc.stats().rejected.get("0x0B"), Some(&1));
    }

    #[tokio::test]
    async fn duplicate_receipts_are_queued_twice_and_only_failures_when_asked() {
        let (smsc, mut receipts) = SmscState::new(SmscConfig {
            duplicate_receipts: true,
            ..Default::default()
        });
        smsc.submit(&submit_to("4915112345678", "hi", None), "s")
            .unwrap();
        let (a, b) = (
            receipts.recv().await.unwrap(),
            receipts.recv().await.unwrap(),
        );
        assert_eq!(a.message_id, b.message_id);
        // registered_delivery 2: a receipt only on failure; this one is delivered.
        let mut on_failure = submit_to("4915112345678", "hi", None);
        on_failure.registered_delivery = 2;
        smsc.submit(&on_failure, "s").unwrap();
        assert!(receipts.try_recv().is_err());
    }
}
