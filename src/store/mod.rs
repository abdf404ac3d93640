//! The store: senders, templates, consents, suppressions, campaigns, timers and the
//! **ledger** of idempotency keys — herald's source of truth. One trait, one implementation
//! over SQL ([`SqlStore`], `sql.rs`) on two backends: SQLite (the embedded default, one
//! process) and Postgres (many workers). Both pass the same conformance suite
//! (`tests/it/store_conformance.rs`).
//!
//! Layout: statements that are the same on both dialects are written once, by concern
//! (`senders`, `consent`, `campaigns`, `ledger`, `timers`, `contacts`, `retention`, `access`), through the small query
//! layer in `db.rs`; `postgres/` and `sqlite/` hold only what really differs (connecting,
//! claiming and recording keys, webhooks, consent batches, tier reservations, claiming
//! timers), split the same way. `shared.rs` holds the pure rules both apply.
//!
//! Every method that touches recipients works on a batch: the hot path never runs a statement
//! per recipient.
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::domain::{
    ApiToken, AuditEntry, AuditRecord, CampaignId, Category, ChannelKind, EventOptions,
    IdempotencyKey, InboundMessage, JobId, NewRecipientEvent, OptInKeyword, Outcome, PhoneNumber,
    RecipientState, SenderId, ServiceWindow, SmsReceiptUpdate,
};
use crate::policy::retention::{DataClass, RetentionPolicy};

pub use billing::{BilledLine, BilledMessage};
pub use contacts::ErasureReport;
pub use shared::{HashKey, configure_hash_key, contact_ref};
pub use sql::SqlStore;

pub use crate::domain::{Conversion, ConversionSummary, ConversionTally};

// The domain types the store keeps, re-exported so callers may keep naming them from here.
pub use crate::domain::{
    Budget, BudgetCharge, Campaign, CampaignState, Consent, ConsentState, DeliveryUpdate, DueTimer,
    Sender, Template,
};

pub mod access;
mod billing;
mod campaigns;
mod consent;
mod contacts;
mod conversions;
mod db;
mod inbound;
mod ledger;
mod outbox;
pub mod postgres;
mod retention;
mod senders;
mod shared;
mod sql;
pub mod sqlite;
mod timers;

/// A store error: the database could not be reached or refused a statement. Callers retry the
/// whole batch (every write is idempotent) or hand the job back.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened at all (bad path, no permission, server down): a
    /// configuration problem to report, not a batch to retry. The URL has its password masked.
    #[error("cannot open database {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("unsupported database URL '{0}' (use sqlite://… or postgres://…)")]
    UnsupportedUrl(String),
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
    /// Erasure needs `HERALD_HASH_KEY`: a plain hash of a number can be reversed by trying
    /// every number.
    #[error(
        "HERALD_HASH_KEY is not set: erasure replaces the number by a keyed hash (HMAC-SHA-256) and refuses to fall back to a plain one, which anyone can reverse by trying every number; set it (e.g. `openssl rand -hex 32`), keep it secret and never change it"
    )]
    NoHashKey,
}

impl StoreError {
    /// The database refused a statement for the data it carried (a value it can't store, a
    /// constraint, a size limit), not for being unreachable: the same data fails the same way
    /// on every retry, so the work that carried it must be rejected with a reason rather than
    /// handed back as if the database were down. Returns the database's error code.
    pub fn refused_data(&self) -> Option<String> {
        use sqlx::error::ErrorKind;
        let Self::Database(sqlx::Error::Database(db)) = self else {
            return None;
        };
        let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
        let constraint = matches!(
            db.kind(),
            ErrorKind::UniqueViolation
                | ErrorKind::ForeignKeyViolation
                | ErrorKind::NotNullViolation
                | ErrorKind::CheckViolation
        );
        // Postgres SQLSTATE classes 22 (data exception: a NUL byte, a bad encoding, a value
        // out of range) and 54 (program limit exceeded); SQLite 18 (TOOBIG) and 20 (MISMATCH).
        let postgres = code.len() == 5 && (code.starts_with("22") || code.starts_with("54"));
        let sqlite = matches!(code.as_str(), "18" | "20");
        (constraint || postgres || sqlite).then_some(code)
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A key to claim in the ledger before sending.
#[derive(Debug, Clone)]
pub struct Claim {
    pub key: IdempotencyKey,
    pub campaign: CampaignId,
    pub job: JobId,
    pub sender: SenderId,
    /// E.164 number, or the raw text for a recipient skipped as `invalid_number`.
    pub recipient: String,
    pub template: String,
    pub language: String,
    pub category: Category,
    /// The channel that will carry it.
    pub channel: ChannelKind,
}

/// What claiming a key found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimStatus {
    /// This owner holds the key now: gate it and send it.
    Mine,
    /// The key already has its final outcome (an earlier job or run): never send again.
    Done,
    /// Another live owner holds it (an overlapping job in another worker): leave it to them.
    HeldElsewhere,
    /// A previous owner died after it may have sent this key: the store recorded `unknown`.
    WasInFlight,
}

/// The final outcome of one key, with how many attempts it took.
#[derive(Debug, Clone)]
pub struct OutcomeRecord {
    pub key: IdempotencyKey,
    pub outcome: Outcome,
    pub attempts: u32,
}

/// One ledger row, for reports and status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerRow {
    pub key: IdempotencyKey,
    pub campaign: CampaignId,
    pub job: JobId,
    pub sender: SenderId,
    pub recipient: String,
    pub template: String,
    pub category: Category,
    /// The channel that carried (or will carry) it.
    pub channel: ChannelKind,
    /// pending, sending, sent, failed, skipped or unknown.
    pub state: String,
    /// Skip reason or Graph error code, as text.
    pub reason: Option<String>,
    pub wamid: Option<String>,
    pub attempts: u32,
    /// Latest delivery status from webhooks: delivered, read or failed.
    pub delivery: Option<String>,
    /// The error code of a failed delivery (status webhook or SMS receipt), as text.
    pub delivery_error: Option<String>,
    /// The key was `unknown`, the webhooks then showed Meta never accepted it, and it was
    /// sent once more (at most once, ever).
    pub resent_unknown: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Keys of a campaign counted by state (and skip reason), for `campaign status`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CampaignCounts {
    /// (state, reason-or-empty, count), sorted.
    pub by_state: Vec<(String, String, u64)>,
}

impl CampaignCounts {
    pub fn total(&self) -> u64 {
        self.by_state.iter().map(|(_, _, n)| n).sum()
    }

    pub fn state(&self, state: &str) -> u64 {
        self.by_state
            .iter()
            .filter(|(s, _, _)| s == state)
            .map(|(_, _, n)| n)
            .sum()
    }
}

/// One cell of a campaign's funnel ([`Store::campaign_funnel`]): how many keys of one role,
/// on one channel, are in one state (with its reason) and delivery status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunnelCell {
    /// `first` (the campaign's message), `fallback` (its SMS version, `key#sms`) or
    /// `follow_up` (`key#follow-up`).
    pub role: String,
    pub channel: ChannelKind,
    pub state: String,
    /// Skip reason or error code; empty when none.
    pub reason: String,
    /// delivered, read, failed or empty.
    pub delivery: String,
    pub n: u64,
}

/// What reviewing a job's `unknown` keys found ([`Store::review_unknowns`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnknownReview {
    /// Keys put back to `pending`, to be sent once more.
    pub reopened: u64,
    /// Unknown keys that may still qualify later: never resent, unknown for less than the
    /// give-up time.
    pub waiting: u64,
    /// When the oldest of those has been unknown long enough to qualify (if the webhooks then
    /// show it was not accepted).
    pub oldest_due: Option<DateTime<Utc>>,
}

/// Send slots leased for a number from the shared pacing row, on the store's clock
/// (microseconds since the Unix epoch): the first is at `first_us`, the others follow at the
/// requested interval. `store_now_us` is the store's clock when it granted the lease, so a
/// worker can map the slots onto its own clock (see `pacing::global`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotLease {
    pub first_us: i64,
    pub store_now_us: i64,
}

/// A timer to schedule ([`Store::schedule_timers`]).
#[derive(Debug, Clone, Copy)]
pub struct NewTimer<'a> {
    pub kind: &'a str,
    pub key: &'a str,
    pub due: DateTime<Utc>,
    pub payload: &'a serde_json::Value,
    /// What it belongs to (a campaign id), for counting ([`Store::timer_counts`]).
    pub scope: Option<&'a str>,
}

/// A kind's timers of one scope that have not fired ([`Store::timer_counts`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimerCounts {
    /// Due later.
    pub scheduled: u64,
    /// Due now or overdue (claimed or not).
    pub due: u64,
}

/// Rows a retention purge deleted (or, dry, would delete) per data class
/// ([`Store::purge`]); a class kept forever counts 0.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PurgeCounts {
    pub rows: BTreeMap<DataClass, u64>,
}

impl PurgeCounts {
    pub fn add(&mut self, class: DataClass, n: u64) {
        *self.rows.entry(class).or_default() += n;
    }

    pub fn get(&self, class: DataClass) -> u64 {
        self.rows.get(&class).copied().unwrap_or(0)
    }

    pub fn total(&self) -> u64 {
        self.rows.values().sum()
    }
}

/// Sent messages whose ledger rows a purge deleted, as `campaign_totals` keeps them: enough
/// to price them again ([`Store::purged_sent`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurgedSent {
    pub channel: ChannelKind,
    pub category: Category,
    /// The recipient's first digits (country calling code and a little more), without `+`;
    /// empty for an erased number.
    pub prefix: String,
    pub n: u64,
}

/// An outbox row claimed by the relay ([`Store::claim_recipient_events`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEvent {
    /// Orders events; a key's events go out in this order.
    pub id: i64,
    /// The ledger key the event is about.
    pub message_key: String,
    pub state: RecipientState,
    /// The JSON body to publish.
    pub payload: String,
    /// Earlier attempts that failed.
    pub attempts: u32,
    /// When the fact was recorded: a day later an event no sink took goes dead.
    pub created_at: DateTime<Utc>,
}

/// What the recipient-events outbox holds ([`Store::recipient_event_counts`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxCounts {
    /// Not published yet (the depth gauge).
    pub pending: u64,
    /// When the oldest of those was recorded.
    pub oldest_pending: Option<DateTime<Utc>>,
    /// Published, kept until the retention purge (class `events`).
    pub published: u64,
    /// In the dead-letter table.
    pub dead: u64,
}

/// herald's persistence. Implementations must make every method safe to call again with the
/// same arguments (retries after a lost connection) and safe under concurrent callers in
/// several processes (Postgres).
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Applies pending migrations.
    async fn migrate(&self) -> StoreResult<()>;

    /// Closes the connections, waiting for statements in progress. SQLite checkpoints its
    /// write-ahead log into the file and removes the `-wal` file when its last connection
    /// closes: a `herald send` leaves one file behind, not three.
    async fn close(&self) {}

    // --- senders -------------------------------------------------------------------------
    async fn upsert_sender(&self, sender: &Sender) -> StoreResult<()>;
    async fn sender(&self, id: &SenderId) -> StoreResult<Option<Sender>>;
    async fn senders(&self) -> StoreResult<Vec<Sender>>;
    async fn set_sender_status(
        &self,
        id: &SenderId,
        status: &str,
        reason: Option<&str>,
    ) -> StoreResult<()>;

    // --- templates -----------------------------------------------------------------------
    async fn upsert_template(&self, template: &Template) -> StoreResult<()>;
    async fn template(
        &self,
        account_id: &str,
        name: &str,
        language: &str,
    ) -> StoreResult<Option<Template>>;
    /// Sets the status of a template in every account that has it (webhook
    /// `message_template_status_update` names it by name and language). Returns rows changed.
    async fn set_template_status(
        &self,
        name: &str,
        language: &str,
        status: &str,
    ) -> StoreResult<u64>;

    // --- consent -------------------------------------------------------------------------
    /// Records consents, each for its category and channel; a newer grant after a revocation
    /// re-enables the number for that category on that channel only. Returns how many were
    /// written.
    async fn grant_consents(&self, consents: &[Consent]) -> StoreResult<u64>;
    /// Revokes consent for one category, or all when `category` is `None`, on one channel, or
    /// every channel when `channel` is `None`; kept as history.
    async fn revoke_consent(
        &self,
        phone: &PhoneNumber,
        category: Option<Category>,
        channel: Option<ChannelKind>,
        at: DateTime<Utc>,
        source: &str,
    ) -> StoreResult<()>;
    /// Suppresses a number for every category and every channel (complaint, legal request;
    /// 131050 for marketing is a revocation instead).
    async fn suppress(&self, phone: &PhoneNumber, reason: &str) -> StoreResult<()>;
    /// Consent of each number for `category` on `channel`, in the order given: granted only by
    /// a grant for both, later than every revocation of that category (or all) on that channel
    /// (or all), and not suppressed. One query per batch.
    async fn consent_states(
        &self,
        category: Category,
        channel: ChannelKind,
        phones: &[PhoneNumber],
    ) -> StoreResult<Vec<ConsentState>>;

    // --- campaigns -----------------------------------------------------------------------
    /// Returns the campaign, creating it `active` if new.
    async fn ensure_campaign(&self, id: &CampaignId) -> StoreResult<Campaign>;
    async fn campaign(&self, id: &CampaignId) -> StoreResult<Option<Campaign>>;
    /// Sets a campaign's state, creating it if new. Cancelling is final, atomically: a
    /// cancelled campaign keeps its state and reason whatever is set later (an operator's
    /// resume racing a cancel, a worker pausing it after a template error).
    async fn set_campaign_state(
        &self,
        id: &CampaignId,
        state: CampaignState,
        reason: Option<&str>,
    ) -> StoreResult<()>;
    /// How many campaigns are in each state (the `herald_campaigns` gauge; also a cheap
    /// readiness question).
    async fn campaign_state_counts(&self) -> StoreResult<Vec<(CampaignState, u64)>>;
    /// Sets a campaign's budget (`None` removes it), creating the campaign `active` if new.
    /// What was already committed stays committed.
    async fn set_campaign_budget(
        &self,
        id: &CampaignId,
        budget: Option<&Budget>,
    ) -> StoreResult<Campaign>;
    /// Commits the estimated cost of each send, in order, against the campaign's budget:
    /// each is admitted while it still fits (`policy::cost::admit_within_budget`). Atomic
    /// across workers. Without a budget every send is admitted and the spend still counted.
    async fn charge_budget(&self, id: &CampaignId, costs: &[u64]) -> StoreResult<BudgetCharge>;
    /// Gives back the committed cost of sends that did not go out or were not billable.
    async fn refund_budget(&self, id: &CampaignId, micros: u64) -> StoreResult<()>;
    /// Campaigns that have a budget and are not cancelled (the budget gauge).
    async fn budgeted_campaigns(&self) -> StoreResult<Vec<Campaign>>;

    // --- ledger --------------------------------------------------------------------------
    /// Claims keys for `owner` (one processing run of a job) for `lease`. New keys are
    /// inserted `pending`; a `pending` key whose lease expired is taken over; a `sending` key
    /// whose lease expired is recorded `unknown` (its sender died mid-request). Returns one
    /// status per claim, in order.
    async fn claim(
        &self,
        owner: &str,
        lease: Duration,
        claims: &[Claim],
    ) -> StoreResult<Vec<ClaimStatus>>;
    /// Marks keys as being sent, right before their requests go out: a crash from here on
    /// makes them `unknown`, never resent. Increments `attempts`. Returns, in order, whether
    /// each key was marked: a key `owner` no longer holds (its lease lapsed and another run
    /// took it over) is not, and must not be sent.
    async fn mark_sending(&self, owner: &str, keys: &[IdempotencyKey]) -> StoreResult<Vec<bool>>;
    /// Records final outcomes. A key that already has a final outcome keeps it.
    async fn record_outcomes(&self, outcomes: &[OutcomeRecord]) -> StoreResult<()>;
    /// Hands keys back as `pending` with no owner (deferred work, shutdown, paused campaign)
    /// so a later run may claim them at once.
    async fn release(&self, owner: &str, keys: &[IdempotencyKey]) -> StoreResult<()>;
    /// Extends the lease of every non-final key `owner` holds whose lease runs out within
    /// three quarters of `lease` (`shared::RENEW_WITHIN`): renewed every quarter, a key's lease
    /// never falls below half, and a key claimed since the last renewal is not written again.
    async fn renew_lease(&self, owner: &str, lease: Duration) -> StoreResult<()>;
    /// Ends every lease at once, so the next claim takes the keys over (`pending`) or records
    /// them `unknown` (`sending`), and claimed timers are due to the next claimer. Only for a caller that knows no other process sends from
    /// this store (SQLite, under `herald send`'s lock): there every held key was left by a
    /// run that died. Multi-process stores ignore it (returns 0): there a lease is the only
    /// sign of life. Returns how many keys were freed.
    async fn end_abandoned_leases(&self) -> StoreResult<u64> {
        Ok(0)
    }
    /// A page of a campaign's ledger ordered by key, after `after` (exclusive).
    async fn ledger_page(
        &self,
        campaign: &CampaignId,
        after: Option<&IdempotencyKey>,
        limit: u32,
    ) -> StoreResult<Vec<LedgerRow>>;
    /// The campaign's rows ordered by key, `offset` rows in: for callers that must not see
    /// a key to page by (`GET /api/campaigns/{id}/report`: a key may hold a number). Costs
    /// the offset in rows skipped; bulk readers page by key with [`Store::ledger_page`].
    async fn ledger_slice(
        &self,
        campaign: &CampaignId,
        offset: u64,
        limit: u32,
    ) -> StoreResult<Vec<LedgerRow>>;
    async fn ledger_entry(&self, key: &IdempotencyKey) -> StoreResult<Option<LedgerRow>>;
    /// The rows of `keys` that are in the ledger, in no particular order (a key without a row
    /// has none; a key given twice, one). A few statements for any number of keys.
    async fn ledger_entries(&self, keys: &[IdempotencyKey]) -> StoreResult<Vec<LedgerRow>>;
    /// The campaign's keys counted by state and reason, purged ones included (from the
    /// totals their purge left).
    async fn campaign_counts(&self, campaign: &CampaignId) -> StoreResult<CampaignCounts>;
    /// The campaign's keys counted by role, channel, state, reason and delivery status,
    /// purged ones included.
    async fn campaign_funnel(&self, campaign: &CampaignId) -> StoreResult<Vec<FunnelCell>>;
    /// The campaign's `sent` keys whose rows were purged, by channel, category and number
    /// prefix (what pricing needs; the rows themselves are gone).
    async fn purged_sent(&self, campaign: &CampaignId) -> StoreResult<Vec<PurgedSent>>;
    /// Applies status webhooks: monotonic (read > delivered > sent; failed is final), an
    /// `unknown` key with a wamid becomes `sent`. Returns how many rows changed. Also keeps,
    /// per sender, the newest status time seen (the evidence [`Store::review_unknowns`] needs).
    async fn apply_deliveries(&self, updates: &[DeliveryUpdate]) -> StoreResult<u64>;
    /// Applies SMS delivery receipts: the row of the SMS message the receipt names (by the
    /// first of its id forms that names one) takes the receipt's state if it ranks higher
    /// (delivered < failed = expired, final), so duplicates and late or reordered receipts
    /// change nothing. Returns, per receipt, whether it changed a row — `None` when no row has
    /// the message id (yet: the send's record may still be on its way).
    async fn apply_sms_receipts(
        &self,
        receipts: &[SmsReceiptUpdate],
    ) -> StoreResult<Vec<Option<bool>>>;
    /// Reviews the `unknown` keys of one job (campaign and job id). A key qualifies for one
    /// more send when it has been unknown for at least `after`, was never resent, and its
    /// sender has seen a status webhook timed more than `after` past the moment it became
    /// unknown: Meta reports every message it accepts, statuses of later messages came, none
    /// for this one — it was never accepted. With `reopen`, qualifying keys go back to
    /// `pending` (marked resent: never a third time). Keys unknown for longer than `give_up`
    /// stay `unknown` for good (no webhook feed, or the webhooks never settled it).
    async fn review_unknowns(
        &self,
        campaign: &CampaignId,
        job: &JobId,
        after: Duration,
        give_up: Duration,
        reopen: bool,
    ) -> StoreResult<UnknownReview>;
    /// Keys recorded `unknown` per campaign (the `herald_unknown_recipients` gauge).
    async fn unknown_by_campaign(&self) -> StoreResult<Vec<(CampaignId, u64)>>;

    // --- messaging tier ------------------------------------------------------------------
    /// Reserves tier budget for numbers about to be messaged by `portfolio`: a number already
    /// reached in the rolling `window` is free; a new one takes one unit if `limit` allows.
    /// Atomic across workers. Returns, in order, whether each number may be sent now.
    async fn reserve_tier(
        &self,
        portfolio: &str,
        limit: Option<u32>,
        window: Duration,
        phones: &[PhoneNumber],
    ) -> StoreResult<Vec<bool>>;
    /// Unique numbers reached by the portfolio in the rolling `window`.
    async fn tier_usage(&self, portfolio: &str, window: Duration) -> StoreResult<u64>;

    // --- global pacing -------------------------------------------------------------------
    /// Leases `n` consecutive send slots `interval` apart for `sender` from a row shared by
    /// every worker. `None` when the store is single-process (SQLite): the local bucket is
    /// authoritative there.
    async fn lease_slots(
        &self,
        _sender: &SenderId,
        _interval: Duration,
        _n: u32,
    ) -> StoreResult<Option<SlotLease>> {
        Ok(None)
    }

    // --- deferred jobs (RabbitMQ) --------------------------------------------------------
    /// Records `token` as the live deferred copy of `job` (campaign and job id), replacing any
    /// earlier one: a copy that comes back with another token is a duplicate.
    async fn set_job_deferral(&self, job: &str, token: &str) -> StoreResult<()>;
    /// The token of `job`'s live deferred copy, if it is deferred.
    async fn job_deferral(&self, job: &str) -> StoreResult<Option<String>>;
    /// Forgets `job`'s deferral: it completed or was rejected.
    async fn clear_job_deferral(&self, job: &str) -> StoreResult<()>;

    // --- timers --------------------------------------------------------------------------
    /// Schedules `kind` for `key` at `due`. Idempotent per (kind, key): a timer that exists
    /// (pending, claimed or fired) is kept as it is. Returns whether this call created it.
    /// After [`Store::cancel_timer`] the same kind and key may be scheduled anew.
    async fn schedule_timer(
        &self,
        kind: &str,
        key: &str,
        due: DateTime<Utc>,
        payload: &serde_json::Value,
    ) -> StoreResult<bool>;
    /// [`Store::schedule_timer`] for many at once (one write transaction); returns how many
    /// were created.
    async fn schedule_timers(&self, timers: &[NewTimer<'_>]) -> StoreResult<u64>;
    /// Claims up to `limit` timers due at `now` (earliest first) for `owner` until
    /// `now + lease`: not fired, and not leased to another owner whose lease still runs at
    /// `now` (a lapsed lease is taken over). Safe under concurrent claimers: each claim of a
    /// timer goes to one owner.
    async fn claim_due_timers(
        &self,
        owner: &str,
        lease: Duration,
        now: DateTime<Utc>,
        limit: usize,
    ) -> StoreResult<Vec<DueTimer>>;
    /// [`Store::claim_due_timers`] for timers of one `kind` only: each kind's work is fired
    /// by its own round, and no round holds another's timers.
    async fn claim_due_timers_of(
        &self,
        kind: &str,
        owner: &str,
        lease: Duration,
        now: DateTime<Utc>,
        limit: usize,
    ) -> StoreResult<Vec<DueTimer>>;
    /// Unfired timers of `kind` for `scope` (a campaign), split at `now`.
    async fn timer_counts(
        &self,
        kind: &str,
        scope: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<TimerCounts>;
    /// Marks a claimed timer fired, never to be claimed again. Only its current holder may:
    /// returns false when `owner` no longer holds it (another owner took it over, it was
    /// cancelled or already fired).
    async fn complete_timer(&self, kind: &str, key: &str, owner: &str) -> StoreResult<bool>;
    /// [`Store::complete_timer`] for many keys of one kind in a few statements: returns how
    /// many `owner` still held and are now fired.
    async fn complete_timers(&self, kind: &str, keys: &[String], owner: &str) -> StoreResult<u64>;
    /// Hands a claimed timer back unfired, due again at `due` (or when it was due): for work
    /// that could not be done now. Returns false when `owner` no longer holds it.
    async fn release_timer(
        &self,
        kind: &str,
        key: &str,
        owner: &str,
        due: Option<DateTime<Utc>>,
    ) -> StoreResult<bool>;
    /// Brings a timer that is neither fired nor claimed forward to `due` (a `failed` status
    /// makes a fallback due now); a later `due` changes nothing. Returns whether it moved.
    async fn advance_timer(&self, kind: &str, key: &str, due: DateTime<Utc>) -> StoreResult<bool>;
    /// Removes a timer that has not fired, claimed or not (its holder's completion then
    /// fails). Returns whether there was one.
    async fn cancel_timer(&self, kind: &str, key: &str) -> StoreResult<bool>;
    /// Timers not fired yet, per kind, sorted by kind (the pending-timers gauge).
    async fn pending_timers(&self) -> StoreResult<Vec<(String, u64)>>;

    // --- personal data (GDPR) ------------------------------------------------------------
    /// Everything stored about a number: consents and revocations (each with its channel;
    /// `null` = every channel), suppressions, ledger rows, conversions, inbound messages and
    /// customer-service windows.
    async fn export_contact(&self, phone: &PhoneNumber) -> StoreResult<serde_json::Value>;
    /// Erases a number (GDPR Art. 17): consents, revocations, tier rows, conversions, inbound
    /// messages, windows and timers naming it deleted; ledger rows keep their outcome (a key is
    /// never sent twice) with the number replaced by its keyed hash (`HERALD_HASH_KEY`) and the
    /// message id removed; suppressions kept under the keyed hash only, so the number is never
    /// messaged again on a consent from before the erasure — a new one, dated after, makes it
    /// sendable. Refuses without a hash key ([`StoreError::NoHashKey`]). Idempotent; returns
    /// what it removed or anonymised, per kind of row.
    async fn erase_contact(&self, phone: &PhoneNumber) -> StoreResult<ErasureReport>;

    // --- billing -------------------------------------------------------------------------
    /// Records billable messages (from status webhooks' `pricing`), each once per key;
    /// returns, in order, whether each was new.
    async fn record_billing(&self, messages: &[BilledMessage]) -> StoreResult<Vec<bool>>;
    /// A campaign's billed cost per channel, category, market and currency.
    async fn billed_summary(&self, campaign: &CampaignId) -> StoreResult<Vec<BilledLine>>;
    /// What Meta billed for each of `keys` of `campaign` it billed: key → (category, micros,
    /// currency).
    async fn billed_keys(
        &self,
        campaign: &CampaignId,
        keys: &[String],
    ) -> StoreResult<std::collections::HashMap<String, (String, u64, String)>>;

    /// The retention purge: deletes, in bounded batches, the rows of each class older than
    /// its period in `policy` at `now` (`policy::retention`), never a row still in use
    /// (`pending`/`sending` keys, unfired timers, open windows, consents not revoked); the
    /// counts of deleted ledger rows are added to the campaign totals in the same transaction.
    /// `dry_run` counts what would go and deletes nothing. Safe to run in several processes at
    /// once: each row is deleted (and counted) once.
    async fn purge(
        &self,
        policy: &RetentionPolicy,
        now: DateTime<Utc>,
        dry_run: bool,
    ) -> StoreResult<PurgeCounts>;

    // --- the conversation side -------------------------------------------------------------
    /// Records inbound messages in one transaction, each once per Meta message id, and opens
    /// or extends the customer-service window of each new one (`policy::window`). Returns, in
    /// order, whether each was new: a redelivered webhook changes nothing.
    async fn record_inbound(
        &self,
        messages: &[InboundMessage],
        received_at: DateTime<Utc>,
    ) -> StoreResult<Vec<bool>>;
    /// The customer-service window of each number with `sender`, in the order given (`None`:
    /// the customer never wrote to it).
    async fn service_windows(
        &self,
        sender: &SenderId,
        phones: &[PhoneNumber],
    ) -> StoreResult<Vec<Option<ServiceWindow>>>;
    /// Ends the window of `phone` with `sender` at `at`: Meta refused a session message
    /// (131047). Returns whether one was open.
    async fn close_service_window(
        &self,
        sender: &SenderId,
        phone: &PhoneNumber,
        at: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// Adds an opt-in keyword, or replaces the one with the same sender and keyword; returns
    /// whether it was new.
    async fn upsert_keyword(&self, keyword: &OptInKeyword) -> StoreResult<bool>;
    /// Every opt-in keyword, by sender and keyword.
    async fn keywords(&self) -> StoreResult<Vec<OptInKeyword>>;
    /// Removes an opt-in keyword (normalised); returns whether there was one.
    async fn remove_keyword(&self, sender: &SenderId, keyword: &str) -> StoreResult<bool>;

    // --- recipient events for CRMs (the outbox) -------------------------------------------
    /// [`Store::record_outcomes`] plus, in the same transaction, the outbox rows among
    /// `events` whose `message_key` this call wrote an outcome for (a key already final
    /// writes none); each (message key, state) at most once, ever.
    async fn record_outcomes_with_events(
        &self,
        outcomes: &[OutcomeRecord],
        events: &[NewRecipientEvent],
    ) -> StoreResult<()>;
    /// [`Store::apply_deliveries`] plus, in the same transaction, the outbox rows of the
    /// changes it made (`policy::recipient_events::on_delivery`), dated `at`.
    async fn apply_deliveries_with_events(
        &self,
        updates: &[DeliveryUpdate],
        options: EventOptions,
        at: DateTime<Utc>,
    ) -> StoreResult<u64>;
    /// [`Store::record_conversions`] plus, in the same transaction, a `converted` event for
    /// each attributed key a new conversion names (once per key, ever), dated `at`.
    async fn record_conversions_with_events(
        &self,
        events: &[Conversion],
        options: EventOptions,
        at: DateTime<Utc>,
    ) -> StoreResult<ConversionTally>;
    /// An `opted_out` event on `channel` for each number, about its latest campaign message
    /// (the newest main ledger row of the number: the campaign it answered); numbers herald
    /// never messaged have none. Returns how many were new.
    async fn record_opt_out_events(
        &self,
        phones: &[PhoneNumber],
        channel: ChannelKind,
        options: EventOptions,
        at: DateTime<Utc>,
    ) -> StoreResult<u64>;
    /// [`Store::apply_sms_receipts`] plus, in the same transaction, the events (`delivered`,
    /// `failed`) of the receipts that changed a row, dated `at`.
    async fn apply_sms_receipts_with_events(
        &self,
        receipts: &[SmsReceiptUpdate],
        options: EventOptions,
        at: DateTime<Utc>,
    ) -> StoreResult<Vec<Option<bool>>>;
    /// Writes events alone, each (message key, state) at most once; returns how many were new.
    async fn record_recipient_events(&self, events: &[NewRecipientEvent]) -> StoreResult<u64>;
    /// Claims up to `limit` unpublished events due at `now` for `owner` until `now + lease`,
    /// in id order, skipping any whose message key has an earlier event waiting (backing off
    /// or leased elsewhere): a key's events go out in order. Safe under concurrent claimers.
    async fn claim_recipient_events(
        &self,
        owner: &str,
        lease: Duration,
        now: DateTime<Utc>,
        limit: usize,
    ) -> StoreResult<Vec<OutboxEvent>>;
    /// Marks events `owner` still holds as published at `now`; returns how many.
    async fn complete_recipient_events(
        &self,
        owner: &str,
        ids: &[i64],
        now: DateTime<Utc>,
    ) -> StoreResult<u64>;
    /// Hands back events no sink took: those recorded before `dead_before` go to the
    /// dead-letter table (and stay in the outbox marked done, so a late duplicate of the
    /// fact adds nothing), the others are due again at `retry_at`. Returns how many went dead.
    async fn fail_recipient_events(
        &self,
        owner: &str,
        ids: &[i64],
        error: &str,
        retry_at: DateTime<Utc>,
        dead_before: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<u64>;
    /// What the outbox holds, published rows counted too (a count over the retention period:
    /// for tools and tests, not for a gauge).
    async fn recipient_event_counts(&self) -> StoreResult<OutboxCounts>;
    /// The unpublished events: how many, and when the oldest was recorded (the depth gauge;
    /// reads only the unpublished rows' index).
    async fn recipient_event_backlog(&self) -> StoreResult<(u64, Option<DateTime<Utc>>)>;
    /// The (message key, state) pairs in the outbox for `message_keys`, published or not.
    async fn recipient_event_states(
        &self,
        message_keys: &[String],
    ) -> StoreResult<HashSet<(String, String)>>;

    // --- conversions ---------------------------------------------------------------------
    /// Records conversion events in one transaction, each once per `event_id` (a repeat, in
    /// the store or the batch, is a duplicate and changes nothing). Each is attributed to its
    /// campaign's main ledger key — by `key`, else the latest main row whose recipient is `to`
    /// — with the channel that reached the customer and whether their follow-up had gone out
    /// (`policy::attribution`); one no row matches is stored unattributed.
    async fn record_conversions(&self, events: &[Conversion]) -> StoreResult<ConversionTally>;
    /// Which of `keys` (main keys of `campaign`) have a conversion.
    async fn converted_keys(
        &self,
        campaign: &CampaignId,
        keys: &[String],
    ) -> StoreResult<HashSet<String>>;
    /// A campaign's conversions per channel (unattributed ones under `None`), sorted.
    async fn conversion_summary(
        &self,
        campaign: &CampaignId,
    ) -> StoreResult<Vec<ConversionSummary>>;

    // --- access: scoped API tokens and the audit log ----------------------------------------
    /// Stores a new token (its secret's hash, never the secret). Returns false, storing
    /// nothing, when the name is taken.
    async fn create_token(&self, token: &ApiToken) -> StoreResult<bool>;
    /// Every token, revoked and expired ones included, oldest first.
    async fn api_tokens(&self) -> StoreResult<Vec<ApiToken>>;
    /// The token whose secret hashes to `secret_hash`, whatever its status: one indexed read,
    /// made on every API request (no cache: a revocation holds at once in every process).
    async fn token_by_hash(&self, secret_hash: &str) -> StoreResult<Option<ApiToken>>;
    /// Whether any token was ever created (revoked ones count): without one, and without
    /// `HERALD_ADMIN_TOKEN`, the admin API is disabled.
    async fn any_tokens(&self) -> StoreResult<bool>;
    /// Revokes the token named `name` at `at`; one revoked before keeps its time. Returns the
    /// token as it is now, `None` when no token has that name.
    async fn revoke_token(&self, name: &str, at: DateTime<Utc>) -> StoreResult<Option<ApiToken>>;
    /// Notes that the token authenticated a request at `at`, unless it was noted less than
    /// [`access::LAST_USED_GRANULARITY`] before.
    async fn touch_token(&self, name: &str, at: DateTime<Utc>) -> StoreResult<()>;
    /// Appends one row to the audit log. There is no way to change or delete one but the
    /// retention purge (class `audit`).
    async fn record_audit(&self, entry: &AuditEntry) -> StoreResult<()>;
    /// The newest audit rows first, at `since` or later, at most `limit` (capped at
    /// [`access::MAX_AUDIT_PAGE`]).
    async fn audit_entries(
        &self,
        since: Option<DateTime<Utc>>,
        limit: u32,
    ) -> StoreResult<Vec<AuditRecord>>;
}

/// How long a write that must not be lost is retried through a database outage.
pub const OUTAGE_RETRY: Duration = Duration::from_secs(60);

/// Calls `op` until it succeeds or [`OUTAGE_RETRY`] has passed, backing off from 100 ms to
/// 5 s: for writes a short database outage must not lose (outcomes, receipts, opt-outs).
/// Returns the last error when the outage outlasts it.
pub async fn retrying<T, F, Fut>(what: &str, mut op: F) -> StoreResult<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = StoreResult<T>>,
{
    let mut delay = Duration::from_millis(100);
    let deadline = tokio::time::Instant::now() + OUTAGE_RETRY;
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::warn!(error = %e, "{what} failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Opens the store named by a `HERALD_DATABASE_URL` and applies migrations.
pub async fn open(url: &str) -> StoreResult<Arc<dyn Store>> {
    let store: Arc<dyn Store> = if url.starts_with("sqlite:") {
        Arc::new(SqlStore::Sqlite(sqlite::SqliteStore::connect(url).await?))
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        Arc::new(SqlStore::Postgres(
            postgres::PostgresStore::connect(url).await?,
        ))
    } else {
        return Err(StoreError::UnsupportedUrl(url.to_owned()));
    };
    store.migrate().await?;
    Ok(store)
}
