//! herald's RabbitMQ topology: every exchange and queue name derived from the prefix, the delay
//! tiers for deferred work, and the declarations a worker (and `herald enqueue`) makes on start.
//!
//! Campaign systems only publish to `{prefix}.jobs` (DESIGN §1.2) and shops to
//! `{prefix}.conversions` (§1.6); everything else is herald's own and may grow, but never
//! rename.
//!
//! **Queue type: quorum.** The jobs, dead-letter and delay queues are quorum queues because
//! they hold the only copy of work nobody else keeps: a quorum queue is replicated (Raft) and
//! survives the loss of a broker node, where a classic queue lives on one node (and classic
//! mirroring is gone from RabbitMQ 4). Quorum queues also give two things herald relies on: a
//! broker-side delivery limit, so a job that kills every worker that takes it (OOM, crash) ends
//! in `{prefix}.dead` instead of looping forever; and at-least-once dead-lettering, so a
//! deferred job cannot vanish on its way from a delay queue back to `{prefix}.jobs`. The price
//! (a few milliseconds more per publish) is nothing next to a job of up to 10,000 sends.

use std::time::Duration;

use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, ExchangeKind};

/// Header a deferred job carries to pick its delay queue in the `{prefix}.delay` headers
/// exchange. A headers exchange (not the default exchange) keeps the message's routing key —
/// the sender id, per contract — so the job comes back to `{prefix}.jobs` exactly as
/// published.
///
/// The name must not start with `x-`: a headers exchange ignores such headers when matching,
/// so a binding on one matches *every* message (`x-match: all` over nothing left). herald up
/// to 0.1 bound on `x-herald-delay` and so put each deferred job into every delay queue, where
/// it multiplied on each return ([`LEGACY_DELAY_HEADER`]).
pub const DELAY_HEADER: &str = "herald-delay";

/// The delay header of older heralds, whose bindings matched every message. [`Topology::declare`]
/// removes those bindings; the copies they made are collapsed by the deferral token
/// ([`DEFERRAL_HEADER`]).
pub const LEGACY_DELAY_HEADER: &str = "x-herald-delay";

/// Header naming one deferral of a job: a fresh token per republish, recorded in the store as
/// the job's live copy. A deferred copy that comes back with another token than the recorded
/// one is a duplicate and is dropped, so a deferred job exists once however it was copied.
pub const DEFERRAL_HEADER: &str = "herald-deferral";

/// Redeliveries after which RabbitMQ itself dead-letters a job to `{prefix}.dead`. High enough
/// that nack-requeues during a long database outage or many rolling restarts never trip it
/// (each is one delivery), low enough that a job crashing every worker stops within the hour.
pub const DELIVERY_LIMIT: i64 = 50;

/// One delay queue: jobs wait there for its TTL, then RabbitMQ dead-letters them back to
/// `{prefix}.jobs` with their routing key. Fixed tiers instead of per-message TTLs because a
/// queue only expires messages at its head: one long per-message TTL would hold back every
/// shorter one behind it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DelayTier {
    /// Suffix of the queue name and value of [`DELAY_HEADER`].
    pub name: &'static str,
    pub ttl: Duration,
}

/// The delay tiers, shortest first. 5 s for brief holds, 30 s for paused campaigns and
/// templates, 5 min for unavailable senders, 30 min for far-away `not_before`s (a job due in
/// three days cycles every 30 min: 144 cheap wake-ups, each re-checked by the engine).
pub const DELAY_TIERS: [DelayTier; 4] = [
    DelayTier {
        name: "5s",
        ttl: Duration::from_secs(5),
    },
    DelayTier {
        name: "30s",
        ttl: Duration::from_secs(30),
    },
    DelayTier {
        name: "5m",
        ttl: Duration::from_secs(300),
    },
    DelayTier {
        name: "30m",
        ttl: Duration::from_secs(1800),
    },
];

impl DelayTier {
    /// The tier for a wanted delay: the longest that does not exceed it, at least the
    /// shortest. Waking up early is harmless — the engine re-checks everything and defers
    /// again — while waking up late would hold work back for nothing.
    pub fn for_delay(wanted: Duration) -> DelayTier {
        DELAY_TIERS
            .iter()
            .rev()
            .find(|t| t.ttl <= wanted)
            .copied()
            .unwrap_or(DELAY_TIERS[0])
    }
}

/// The names of everything herald declares, for one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    prefix: String,
}

impl Topology {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Topic exchange campaign systems publish jobs to, routing key = sender id.
    pub fn jobs_exchange(&self) -> String {
        format!("{}.jobs", self.prefix)
    }

    /// The queue workers consume, bound to the jobs exchange with `#`.
    pub fn jobs_queue(&self) -> String {
        format!("{}.jobs", self.prefix)
    }

    /// Fanout exchange and queue of rejected jobs (reason in headers).
    pub fn dead_exchange(&self) -> String {
        format!("{}.dead", self.prefix)
    }

    pub fn dead_queue(&self) -> String {
        format!("{}.dead", self.prefix)
    }

    /// Headers exchange that routes a deferred job to its delay queue by [`DELAY_HEADER`].
    pub fn delay_exchange(&self) -> String {
        format!("{}.delay", self.prefix)
    }

    pub fn delay_queue(&self, tier: &DelayTier) -> String {
        format!("{}.delay.{}", self.prefix, tier.name)
    }

    /// Topic exchange of job events (`job.completed`, `job.dead_lettered`). herald binds no
    /// queue to it: whoever wants the events binds their own.
    pub fn events_exchange(&self) -> String {
        format!("{}.events", self.prefix)
    }

    /// Topic exchange shops publish conversion events to (DESIGN §1.6), any routing key.
    ///
    /// Topic, not fanout: herald's own queue binds `#` and takes every event whatever key a
    /// shop uses, while other consumers (analytics, a second region) may bind a queue for just
    /// the keys they want (a shop, a campaign); a fanout exchange would give them everything,
    /// and an exchange's type cannot be changed later without deleting it.
    pub fn conversions_exchange(&self) -> String {
        format!("{}.conversions", self.prefix)
    }

    /// The queue every worker consumes conversion events from, bound with `#`.
    pub fn conversions_queue(&self) -> String {
        format!("{}.conversions", self.prefix)
    }

    /// The queue herald keeps per-recipient events in for CRMs (`HERALD_RECIPIENT_EVENTS=amqp`),
    /// bound to the events exchange with `recipient.#`; declared by the relay only.
    pub fn recipient_events_queue(&self) -> String {
        format!("{}.recipient-events", self.prefix)
    }

    /// The events exchange and the recipient-events queue: a quorum queue of at most
    /// `max_length` messages whose overflow is `reject-publish`, so a full queue (a CRM that
    /// stopped consuming) nacks the relay's publishes and the events wait in the outbox
    /// rather than being dropped. Idempotent with the same `max_length`.
    pub async fn declare_recipient_events(
        &self,
        ch: &Channel,
        max_length: u32,
    ) -> lapin::Result<()> {
        ch.exchange_declare(
            self.events_exchange().into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
        let mut args = quorum();
        args.insert(
            "x-max-length".into(),
            AMQPValue::LongLongInt(i64::from(max_length)),
        );
        args.insert("x-overflow".into(), long("reject-publish"));
        ch.queue_declare(
            self.recipient_events_queue().into(),
            QueueDeclareOptions::durable(),
            args,
        )
        .await?;
        ch.queue_bind(
            self.recipient_events_queue().into(),
            self.events_exchange().into(),
            "recipient.#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
    }

    /// Every queue herald declares.
    pub fn queues(&self) -> Vec<String> {
        let mut q = vec![
            self.jobs_queue(),
            self.dead_queue(),
            self.conversions_queue(),
        ];
        q.extend(DELAY_TIERS.iter().map(|t| self.delay_queue(t)));
        q
    }

    /// Every exchange herald declares.
    pub fn exchanges(&self) -> Vec<String> {
        vec![
            self.jobs_exchange(),
            self.dead_exchange(),
            self.delay_exchange(),
            self.events_exchange(),
            self.conversions_exchange(),
        ]
    }

    /// Declares everything (idempotent: same arguments as before are a no-op). A queue that
    /// exists with other arguments fails with PRECONDITION_FAILED, which names the queue.
    pub async fn declare(&self, ch: &Channel) -> lapin::Result<()> {
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        let queue = QueueDeclareOptions::durable();

        ch.exchange_declare(
            self.jobs_exchange().into(),
            ExchangeKind::Topic,
            durable,
            FieldTable::default(),
        )
        .await?;
        ch.exchange_declare(
            self.dead_exchange().into(),
            ExchangeKind::Fanout,
            durable,
            FieldTable::default(),
        )
        .await?;
        ch.exchange_declare(
            self.delay_exchange().into(),
            ExchangeKind::Headers,
            durable,
            FieldTable::default(),
        )
        .await?;
        ch.exchange_declare(
            self.events_exchange().into(),
            ExchangeKind::Topic,
            durable,
            FieldTable::default(),
        )
        .await?;

        let mut jobs_args = quorum();
        // What the broker itself gives up on (delivery limit) goes where the operator looks.
        jobs_args.insert("x-dead-letter-exchange".into(), long(&self.dead_exchange()));
        jobs_args.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongLongInt(DELIVERY_LIMIT),
        );
        ch.queue_declare(self.jobs_queue().into(), queue, jobs_args)
            .await?;
        ch.queue_bind(
            self.jobs_queue().into(),
            self.jobs_exchange().into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;

        ch.queue_declare(self.dead_queue().into(), queue, quorum())
            .await?;
        ch.queue_bind(
            self.dead_queue().into(),
            self.dead_exchange().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;

        self.declare_conversions(ch, durable, queue).await?;

        for tier in &DELAY_TIERS {
            let mut args = quorum();
            args.insert(
                "x-message-ttl".into(),
                AMQPValue::LongLongInt(tier.ttl.as_millis() as i64),
            );
            // No x-dead-letter-routing-key: the job keeps its own (the sender id).
            args.insert("x-dead-letter-exchange".into(), long(&self.jobs_exchange()));
            // At-least-once dead-lettering (quorum queues, RabbitMQ ≥ 3.10) needs
            // reject-publish overflow; without it a broker crash mid-move could drop the job.
            args.insert("x-dead-letter-strategy".into(), long("at-least-once"));
            args.insert("x-overflow".into(), long("reject-publish"));
            ch.queue_declare(self.delay_queue(tier).into(), queue, args)
                .await?;
            ch.queue_bind(
                self.delay_queue(tier).into(),
                self.delay_exchange().into(),
                "".into(),
                QueueBindOptions::default(),
                delay_binding(DELAY_HEADER, tier),
            )
            .await?;
            // Upgrade: the old binding matched every message. Unbinding one that does not
            // exist is a no-op for RabbitMQ.
            ch.queue_unbind(
                self.delay_queue(tier).into(),
                self.delay_exchange().into(),
                "".into(),
                delay_binding(LEGACY_DELAY_HEADER, tier),
            )
            .await?;
        }
        Ok(())
    }

    /// The conversions exchange and queue: a quorum queue like the jobs (it holds the only
    /// copy of a shop's orders), whose delivery limit and dead-lettering end an event that
    /// crashes every worker in `{prefix}.dead`.
    async fn declare_conversions(
        &self,
        ch: &Channel,
        durable: ExchangeDeclareOptions,
        queue: QueueDeclareOptions,
    ) -> lapin::Result<()> {
        ch.exchange_declare(
            self.conversions_exchange().into(),
            ExchangeKind::Topic,
            durable,
            FieldTable::default(),
        )
        .await?;
        let mut args = quorum();
        args.insert("x-dead-letter-exchange".into(), long(&self.dead_exchange()));
        args.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongLongInt(DELIVERY_LIMIT),
        );
        ch.queue_declare(self.conversions_queue().into(), queue, args)
            .await?;
        ch.queue_bind(
            self.conversions_queue().into(),
            self.conversions_exchange().into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
    }

    /// Deletes every queue and exchange of this prefix, messages included. For tests and for
    /// tearing down a staging prefix; never called by a worker.
    pub async fn delete(&self, ch: &Channel) -> lapin::Result<()> {
        for q in self.queues() {
            ch.queue_delete(q.into(), QueueDeleteOptions::default())
                .await?;
        }
        for x in self.exchanges() {
            ch.exchange_delete(x.into(), ExchangeDeleteOptions::default())
                .await?;
        }
        Ok(())
    }
}

/// The binding arguments that route a message whose `header` names `tier` to its queue.
fn delay_binding(header: &str, tier: &DelayTier) -> FieldTable {
    let mut bind = FieldTable::default();
    bind.insert("x-match".into(), long("all"));
    bind.insert(header.into(), long(tier.name));
    bind
}

fn quorum() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), long("quorum"));
    args
}

/// A string header or argument value.
pub(crate) fn long(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

/// A string for an AMQP short-string field (routing keys, message ids: at most 255 bytes), or
/// `None` when it does not fit — `ShortString::from` would panic on it.
pub(crate) fn short(s: &str) -> Option<ShortString> {
    ShortString::try_new(s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_prefix() {
        let t = Topology::new("acme");
        assert_eq!(t.jobs_exchange(), "acme.jobs");
        assert_eq!(t.jobs_queue(), "acme.jobs");
        assert_eq!(t.dead_queue(), "acme.dead");
        assert_eq!(t.events_exchange(), "acme.events");
        assert_eq!(t.delay_queue(&DELAY_TIERS[1]), "acme.delay.30s");
        assert_eq!(t.conversions_exchange(), "acme.conversions");
        assert_eq!(t.conversions_queue(), "acme.conversions");
        assert_eq!(t.queues().len(), 3 + DELAY_TIERS.len());
    }

    #[test]
    fn a_delay_picks_the_longest_tier_not_longer_than_wanted() {
        let s = Duration::from_secs;
        assert_eq!(DelayTier::for_delay(Duration::ZERO).name, "5s");
        assert_eq!(DelayTier::for_delay(s(4)).name, "5s");
        assert_eq!(DelayTier::for_delay(s(5)).name, "5s");
        assert_eq!(DelayTier::for_delay(s(29)).name, "5s");
        assert_eq!(DelayTier::for_delay(s(30)).name, "30s");
        assert_eq!(DelayTier::for_delay(s(299)).name, "30s");
        assert_eq!(DelayTier::for_delay(s(300)).name, "5m");
        assert_eq!(DelayTier::for_delay(s(3 * 86_400)).name, "30m");
    }

    #[test]
    fn the_delay_header_is_one_a_headers_exchange_matches_on() {
        // RabbitMQ's headers exchange skips every header that starts with `x-`.
        assert!(!DELAY_HEADER.starts_with("x-"));
        assert!(!DEFERRAL_HEADER.starts_with("x-"));
        let bind = delay_binding(DELAY_HEADER, &DELAY_TIERS[2]);
        let matched: Vec<_> = bind
            .inner()
            .keys()
            .filter(|k| !k.as_str().starts_with("x-"))
            .collect();
        assert_eq!(
            matched.len(),
            1,
            "the binding must match on the tier header"
        );
    }

    #[test]
    fn tiers_are_sorted_shortest_first() {
        assert!(DELAY_TIERS.windows(2).all(|w| w[0].ttl < w[1].ttl));
    }

    #[test]
    fn overlong_short_strings_are_refused_not_panicked_on() {
        assert!(short(&"x".repeat(255)).is_some());
        assert!(short(&"x".repeat(256)).is_none());
    }
}
