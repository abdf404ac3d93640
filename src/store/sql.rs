//! The one [`Store`] over SQL: each method runs on the backend the URL named. Where both
//! dialects share a statement it is written once here; where they differ (claiming, tier
//! reservation, budget charging, webhooks, batches) the backend module has its own.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::postgres::PostgresStore;
use super::sqlite::SqliteStore;
use super::{
    Budget, BudgetCharge, Campaign, CampaignCounts, CampaignState, Claim, ClaimStatus, Consent,
    ConsentState, DeliveryUpdate, DueTimer, LedgerRow, OutcomeRecord, Sender, SlotLease, Store,
    StoreResult, Template, UnknownReview,
};
use crate::domain::{CampaignId, Category, IdempotencyKey, JobId, PhoneNumber, SenderId};

/// A store on one of the two SQL backends.
#[derive(Debug, Clone)]
pub enum SqlStore {
    /// Many workers on one database.
    Postgres(PostgresStore),
    /// One process, one file (or memory).
    Sqlite(SqliteStore),
}

/// Runs the backend's own version of a method.
macro_rules! dispatch {
    ($self:ident.$method:ident($($arg:expr),*)) => {
        match $self {
            Self::Postgres(s) => s.$method($($arg),*).await,
            Self::Sqlite(s) => s.$method($($arg),*).await,
        }
    };
}

#[async_trait]
impl Store for SqlStore {
    async fn migrate(&self) -> StoreResult<()> {
        dispatch!(self.migrate())
    }

    async fn upsert_sender(&self, sender: &Sender) -> StoreResult<()> {
        dispatch!(self.upsert_sender(sender))
    }

    async fn sender(&self, id: &SenderId) -> StoreResult<Option<Sender>> {
        dispatch!(self.sender(id))
    }

    async fn senders(&self) -> StoreResult<Vec<Sender>> {
        dispatch!(self.senders())
    }

    async fn set_sender_status(
        &self,
        id: &SenderId,
        status: &str,
        reason: Option<&str>,
    ) -> StoreResult<()> {
        dispatch!(self.set_sender_status(id, status, reason))
    }

    async fn upsert_template(&self, template: &Template) -> StoreResult<()> {
        dispatch!(self.upsert_template(template))
    }

    async fn template(
        &self,
        account_id: &str,
        name: &str,
        language: &str,
    ) -> StoreResult<Option<Template>> {
        dispatch!(self.template(account_id, name, language))
    }

    async fn set_template_status(
        &self,
        name: &str,
        language: &str,
        status: &str,
    ) -> StoreResult<u64> {
        dispatch!(self.set_template_status(name, language, status))
    }

    async fn grant_consents(&self, consents: &[Consent]) -> StoreResult<u64> {
        dispatch!(self.grant_consents(consents))
    }

    async fn revoke_consent(
        &self,
        phone: &PhoneNumber,
        category: Option<Category>,
        at: DateTime<Utc>,
        source: &str,
    ) -> StoreResult<()> {
        dispatch!(self.revoke_consent(phone, category, at, source))
    }

    async fn suppress(&self, phone: &PhoneNumber, reason: &str) -> StoreResult<()> {
        dispatch!(self.suppress(phone, reason))
    }

    async fn consent_states(
        &self,
        category: Category,
        phones: &[PhoneNumber],
    ) -> StoreResult<Vec<ConsentState>> {
        dispatch!(self.consent_states(category, phones))
    }

    async fn ensure_campaign(&self, id: &CampaignId) -> StoreResult<Campaign> {
        dispatch!(self.ensure_campaign(id))
    }

    async fn campaign(&self, id: &CampaignId) -> StoreResult<Option<Campaign>> {
        dispatch!(self.campaign(id))
    }

    async fn set_campaign_state(
        &self,
        id: &CampaignId,
        state: CampaignState,
        reason: Option<&str>,
    ) -> StoreResult<()> {
        dispatch!(self.set_campaign_state(id, state, reason))
    }

    async fn campaign_state_counts(&self) -> StoreResult<Vec<(CampaignState, u64)>> {
        dispatch!(self.campaign_state_counts())
    }

    async fn set_campaign_budget(
        &self,
        id: &CampaignId,
        budget: Option<&Budget>,
    ) -> StoreResult<Campaign> {
        dispatch!(self.set_campaign_budget(id, budget))
    }

    async fn charge_budget(&self, id: &CampaignId, costs: &[u64]) -> StoreResult<BudgetCharge> {
        dispatch!(self.charge_budget(id, costs))
    }

    async fn refund_budget(&self, id: &CampaignId, micros: u64) -> StoreResult<()> {
        dispatch!(self.refund_budget(id, micros))
    }

    async fn budgeted_campaigns(&self) -> StoreResult<Vec<Campaign>> {
        dispatch!(self.budgeted_campaigns())
    }

    async fn claim(
        &self,
        owner: &str,
        lease: Duration,
        claims: &[Claim],
    ) -> StoreResult<Vec<ClaimStatus>> {
        dispatch!(self.claim(owner, lease, claims))
    }

    async fn mark_sending(&self, owner: &str, keys: &[IdempotencyKey]) -> StoreResult<Vec<bool>> {
        dispatch!(self.mark_sending(owner, keys))
    }

    async fn record_outcomes(&self, outcomes: &[OutcomeRecord]) -> StoreResult<()> {
        dispatch!(self.record_outcomes(outcomes))
    }

    async fn release(&self, owner: &str, keys: &[IdempotencyKey]) -> StoreResult<()> {
        dispatch!(self.release(owner, keys))
    }

    async fn renew_lease(&self, owner: &str, lease: Duration) -> StoreResult<()> {
        dispatch!(self.renew_lease(owner, lease))
    }

    async fn end_abandoned_leases(&self) -> StoreResult<u64> {
        match self {
            Self::Postgres(_) => Ok(0),
            Self::Sqlite(s) => s.end_abandoned_leases().await,
        }
    }

    async fn ledger_page(
        &self,
        campaign: &CampaignId,
        after: Option<&IdempotencyKey>,
        limit: u32,
    ) -> StoreResult<Vec<LedgerRow>> {
        dispatch!(self.ledger_page(campaign, after, limit))
    }

    async fn ledger_entry(&self, key: &IdempotencyKey) -> StoreResult<Option<LedgerRow>> {
        dispatch!(self.ledger_entry(key))
    }

    async fn campaign_counts(&self, campaign: &CampaignId) -> StoreResult<CampaignCounts> {
        dispatch!(self.campaign_counts(campaign))
    }

    async fn apply_deliveries(&self, updates: &[DeliveryUpdate]) -> StoreResult<u64> {
        dispatch!(self.apply_deliveries(updates))
    }

    async fn review_unknowns(
        &self,
        campaign: &CampaignId,
        job: &JobId,
        after: Duration,
        give_up: Duration,
        reopen: bool,
    ) -> StoreResult<UnknownReview> {
        dispatch!(self.review_unknowns(campaign, job, after, give_up, reopen))
    }

    async fn unknown_by_campaign(&self) -> StoreResult<Vec<(CampaignId, u64)>> {
        dispatch!(self.unknown_by_campaign())
    }

    async fn reserve_tier(
        &self,
        portfolio: &str,
        limit: Option<u32>,
        window: Duration,
        phones: &[PhoneNumber],
    ) -> StoreResult<Vec<bool>> {
        dispatch!(self.reserve_tier(portfolio, limit, window, phones))
    }

    async fn tier_usage(&self, portfolio: &str, window: Duration) -> StoreResult<u64> {
        dispatch!(self.tier_usage(portfolio, window))
    }

    async fn lease_slots(
        &self,
        sender: &SenderId,
        interval: Duration,
        n: u32,
    ) -> StoreResult<Option<SlotLease>> {
        match self {
            Self::Postgres(s) => s.lease_slots(sender, interval, n).await,
            Self::Sqlite(_) => Ok(None),
        }
    }

    async fn set_job_deferral(&self, job: &str, token: &str) -> StoreResult<()> {
        dispatch!(self.set_job_deferral(job, token))
    }

    async fn job_deferral(&self, job: &str) -> StoreResult<Option<String>> {
        dispatch!(self.job_deferral(job))
    }

    async fn clear_job_deferral(&self, job: &str) -> StoreResult<()> {
        dispatch!(self.clear_job_deferral(job))
    }

    async fn schedule_timer(
        &self,
        kind: &str,
        key: &str,
        due: DateTime<Utc>,
        payload: &serde_json::Value,
    ) -> StoreResult<bool> {
        dispatch!(self.schedule_timer(kind, key, due, payload))
    }

    async fn claim_due_timers(
        &self,
        owner: &str,
        lease: Duration,
        now: DateTime<Utc>,
        limit: usize,
    ) -> StoreResult<Vec<DueTimer>> {
        dispatch!(self.claim_due_timers(owner, lease, now, limit))
    }

    async fn complete_timer(&self, kind: &str, key: &str, owner: &str) -> StoreResult<bool> {
        dispatch!(self.complete_timer(kind, key, owner))
    }

    async fn release_timer(
        &self,
        kind: &str,
        key: &str,
        owner: &str,
        due: Option<DateTime<Utc>>,
    ) -> StoreResult<bool> {
        dispatch!(self.release_timer(kind, key, owner, due))
    }

    async fn cancel_timer(&self, kind: &str, key: &str) -> StoreResult<bool> {
        dispatch!(self.cancel_timer(kind, key))
    }

    async fn pending_timers(&self) -> StoreResult<Vec<(String, u64)>> {
        dispatch!(self.pending_timers())
    }

    async fn export_contact(&self, phone: &PhoneNumber) -> StoreResult<serde_json::Value> {
        dispatch!(self.export_contact(phone))
    }

    async fn erase_contact(&self, phone: &PhoneNumber) -> StoreResult<u64> {
        dispatch!(self.erase_contact(phone))
    }
}
