//! The one [`Store`] over SQL: each method runs on the backend the URL named. Where both
//! dialects share a statement it is written once here; where they differ (claiming, tier
//! reservation, budget charging, webhooks, batches) the backend module has its own.

use std::collections::HashSet;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::postgres::PostgresStore;
use super::sqlite::SqliteStore;
use super::{
    Budget, BudgetCharge, Campaign, CampaignCounts, CampaignState, Claim, ClaimStatus, Consent,
    ConsentState, DeliveryUpdate, DueTimer, FunnelCell, LedgerRow, NewTimer, OutboxCounts,
    OutboxEvent, OutcomeRecord, PurgeCounts, PurgedSent, Sender, SlotLease, Store, StoreResult,
    Template, TimerCounts, UnknownReview,
};
use super::{Conversion, ConversionSummary, ConversionTally};
use super::{
    access, billing, campaigns, consent, contacts, conversions, inbound, ledger, outbox, retention,
    senders, timers,
};
use crate::domain::{
    ApiToken, AuditEntry, AuditRecord, CampaignId, Category, ChannelKind, EventOptions,
    IdempotencyKey, InboundMessage, JobId, NewRecipientEvent, OptInKeyword, PhoneNumber, SenderId,
    ServiceWindow, SmsReceiptUpdate,
};
use crate::policy::retention::RetentionPolicy;

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

    async fn close(&self) {
        match self {
            Self::Postgres(s) => s.pool.close().await,
            Self::Sqlite(s) => {
                // Readers first: the writer's close is the last one, which checkpoints.
                s.reader.close().await;
                s.writer.close().await;
            }
        }
    }

    async fn upsert_sender(&self, sender: &Sender) -> StoreResult<()> {
        senders::upsert_sender(self, sender).await
    }

    async fn sender(&self, id: &SenderId) -> StoreResult<Option<Sender>> {
        senders::sender(self, id).await
    }

    async fn senders(&self) -> StoreResult<Vec<Sender>> {
        senders::senders(self).await
    }

    async fn set_sender_status(
        &self,
        id: &SenderId,
        status: &str,
        reason: Option<&str>,
    ) -> StoreResult<()> {
        senders::set_sender_status(self, id, status, reason).await
    }

    async fn upsert_template(&self, template: &Template) -> StoreResult<()> {
        senders::upsert_template(self, template).await
    }

    async fn template(
        &self,
        account_id: &str,
        name: &str,
        language: &str,
    ) -> StoreResult<Option<Template>> {
        senders::template(self, account_id, name, language).await
    }

    async fn set_template_status(
        &self,
        name: &str,
        language: &str,
        status: &str,
    ) -> StoreResult<u64> {
        senders::set_template_status(self, name, language, status).await
    }

    async fn grant_consents(&self, consents: &[Consent]) -> StoreResult<u64> {
        dispatch!(self.grant_consents(consents))
    }

    async fn revoke_consent(
        &self,
        phone: &PhoneNumber,
        category: Option<Category>,
        channel: Option<ChannelKind>,
        at: DateTime<Utc>,
        source: &str,
    ) -> StoreResult<()> {
        consent::revoke_consent(self, phone, category, channel, at, source).await
    }

    async fn suppress(&self, phone: &PhoneNumber, reason: &str) -> StoreResult<()> {
        consent::suppress(self, phone, reason).await
    }

    async fn consent_states(
        &self,
        category: Category,
        channel: ChannelKind,
        phones: &[PhoneNumber],
    ) -> StoreResult<Vec<ConsentState>> {
        dispatch!(self.consent_states(category, channel, phones))
    }

    async fn ensure_campaign(&self, id: &CampaignId) -> StoreResult<Campaign> {
        campaigns::ensure_campaign(self, id).await
    }

    async fn campaign(&self, id: &CampaignId) -> StoreResult<Option<Campaign>> {
        campaigns::campaign(self, id).await
    }

    async fn set_campaign_state(
        &self,
        id: &CampaignId,
        state: CampaignState,
        reason: Option<&str>,
    ) -> StoreResult<()> {
        campaigns::set_campaign_state(self, id, state, reason).await
    }

    async fn campaign_state_counts(&self) -> StoreResult<Vec<(CampaignState, u64)>> {
        campaigns::campaign_state_counts(self).await
    }

    async fn set_campaign_budget(
        &self,
        id: &CampaignId,
        budget: Option<&Budget>,
    ) -> StoreResult<Campaign> {
        campaigns::set_campaign_budget(self, id, budget).await
    }

    async fn charge_budget(&self, id: &CampaignId, costs: &[u64]) -> StoreResult<BudgetCharge> {
        campaigns::charge_budget(self, id, costs).await
    }

    async fn refund_budget(&self, id: &CampaignId, micros: u64) -> StoreResult<()> {
        campaigns::refund_budget(self, id, micros).await
    }

    async fn budgeted_campaigns(&self) -> StoreResult<Vec<Campaign>> {
        campaigns::budgeted_campaigns(self).await
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
        ledger::ledger_page(self, campaign, after, limit).await
    }

    async fn ledger_slice(
        &self,
        campaign: &CampaignId,
        offset: u64,
        limit: u32,
    ) -> StoreResult<Vec<LedgerRow>> {
        ledger::ledger_slice(self, campaign, offset, limit).await
    }

    async fn ledger_entry(&self, key: &IdempotencyKey) -> StoreResult<Option<LedgerRow>> {
        ledger::ledger_entry(self, key).await
    }

    async fn ledger_entries(&self, keys: &[IdempotencyKey]) -> StoreResult<Vec<LedgerRow>> {
        ledger::ledger_entries(self, keys).await
    }

    async fn campaign_counts(&self, campaign: &CampaignId) -> StoreResult<CampaignCounts> {
        ledger::campaign_counts(self, campaign).await
    }

    async fn campaign_funnel(&self, campaign: &CampaignId) -> StoreResult<Vec<FunnelCell>> {
        ledger::campaign_funnel(self, campaign).await
    }

    async fn purged_sent(&self, campaign: &CampaignId) -> StoreResult<Vec<PurgedSent>> {
        ledger::purged_sent(self, campaign).await
    }

    async fn apply_deliveries(&self, updates: &[DeliveryUpdate]) -> StoreResult<u64> {
        dispatch!(self.apply_deliveries(updates))
    }

    async fn apply_sms_receipts(
        &self,
        receipts: &[SmsReceiptUpdate],
    ) -> StoreResult<Vec<Option<bool>>> {
        ledger::apply_sms_receipts(self, receipts, None).await
    }

    async fn apply_sms_receipts_with_events(
        &self,
        receipts: &[SmsReceiptUpdate],
        options: EventOptions,
        at: DateTime<Utc>,
    ) -> StoreResult<Vec<Option<bool>>> {
        ledger::apply_sms_receipts(self, receipts, Some((options, at))).await
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
        ledger::unknown_by_campaign(self).await
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
        ledger::set_job_deferral(self, job, token).await
    }

    async fn job_deferral(&self, job: &str) -> StoreResult<Option<String>> {
        ledger::job_deferral(self, job).await
    }

    async fn clear_job_deferral(&self, job: &str) -> StoreResult<()> {
        ledger::clear_job_deferral(self, job).await
    }

    async fn schedule_timer(
        &self,
        kind: &str,
        key: &str,
        due: DateTime<Utc>,
        payload: &serde_json::Value,
    ) -> StoreResult<bool> {
        let timer = NewTimer {
            kind,
            key,
            due,
            payload,
            scope: None,
        };
        Ok(timers::schedule_timers(self, &[timer]).await? == 1)
    }

    async fn schedule_timers(&self, timers: &[NewTimer<'_>]) -> StoreResult<u64> {
        timers::schedule_timers(self, timers).await
    }

    async fn claim_due_timers(
        &self,
        owner: &str,
        lease: Duration,
        now: DateTime<Utc>,
        limit: usize,
    ) -> StoreResult<Vec<DueTimer>> {
        dispatch!(self.claim_due_timers(None, owner, lease, now, limit))
    }

    async fn claim_due_timers_of(
        &self,
        kind: &str,
        owner: &str,
        lease: Duration,
        now: DateTime<Utc>,
        limit: usize,
    ) -> StoreResult<Vec<DueTimer>> {
        dispatch!(self.claim_due_timers(Some(kind), owner, lease, now, limit))
    }

    async fn timer_counts(
        &self,
        kind: &str,
        scope: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<TimerCounts> {
        timers::timer_counts(self, kind, scope, now).await
    }

    async fn complete_timer(&self, kind: &str, key: &str, owner: &str) -> StoreResult<bool> {
        timers::complete_timer(self, kind, key, owner).await
    }

    async fn complete_timers(&self, kind: &str, keys: &[String], owner: &str) -> StoreResult<u64> {
        timers::complete_timers(self, kind, keys, owner).await
    }

    async fn release_timer(
        &self,
        kind: &str,
        key: &str,
        owner: &str,
        due: Option<DateTime<Utc>>,
    ) -> StoreResult<bool> {
        timers::release_timer(self, kind, key, owner, due).await
    }

    async fn advance_timer(&self, kind: &str, key: &str, due: DateTime<Utc>) -> StoreResult<bool> {
        timers::advance_timer(self, kind, key, due).await
    }

    async fn cancel_timer(&self, kind: &str, key: &str) -> StoreResult<bool> {
        timers::cancel_timer(self, kind, key).await
    }

    async fn pending_timers(&self) -> StoreResult<Vec<(String, u64)>> {
        timers::pending_timers(self).await
    }

    async fn export_contact(&self, phone: &PhoneNumber) -> StoreResult<serde_json::Value> {
        contacts::export_contact(self, phone).await
    }

    async fn erase_contact(&self, phone: &PhoneNumber) -> StoreResult<contacts::ErasureReport> {
        let report = contacts::erase_contact(self, phone).await?;
        if let Self::Sqlite(s) = self {
            // The deleted pages are zeroed (secure_delete); the write-ahead log still holds
            // the old ones until a checkpoint copies them back and truncates it.
            s.checkpoint().await?;
        }
        Ok(report)
    }

    async fn record_billing(&self, messages: &[super::BilledMessage]) -> StoreResult<Vec<bool>> {
        billing::record_billing(self, messages).await
    }

    async fn billed_summary(&self, campaign: &CampaignId) -> StoreResult<Vec<super::BilledLine>> {
        billing::billed_summary(self, campaign).await
    }

    async fn billed_keys(
        &self,
        campaign: &CampaignId,
        keys: &[String],
    ) -> StoreResult<std::collections::HashMap<String, (String, u64, String)>> {
        billing::billed_keys(self, campaign, keys).await
    }

    async fn purge(
        &self,
        policy: &RetentionPolicy,
        now: DateTime<Utc>,
        dry_run: bool,
    ) -> StoreResult<PurgeCounts> {
        retention::purge(self, policy, now, dry_run).await
    }

    async fn record_inbound(
        &self,
        messages: &[InboundMessage],
        received_at: DateTime<Utc>,
    ) -> StoreResult<Vec<bool>> {
        inbound::record_inbound(self, messages, received_at).await
    }

    async fn service_windows(
        &self,
        sender: &SenderId,
        phones: &[PhoneNumber],
    ) -> StoreResult<Vec<Option<ServiceWindow>>> {
        inbound::service_windows(self, sender, phones).await
    }

    async fn close_service_window(
        &self,
        sender: &SenderId,
        phone: &PhoneNumber,
        at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        inbound::close_service_window(self, sender, phone, at).await
    }

    async fn upsert_keyword(&self, keyword: &OptInKeyword) -> StoreResult<bool> {
        inbound::upsert_keyword(self, keyword).await
    }

    async fn keywords(&self) -> StoreResult<Vec<OptInKeyword>> {
        inbound::keywords(self).await
    }

    async fn remove_keyword(&self, sender: &SenderId, keyword: &str) -> StoreResult<bool> {
        inbound::remove_keyword(self, sender, keyword).await
    }

    async fn record_outcomes_with_events(
        &self,
        outcomes: &[OutcomeRecord],
        events: &[NewRecipientEvent],
    ) -> StoreResult<()> {
        dispatch!(self.record_outcomes_with_events(outcomes, events))
    }

    async fn apply_deliveries_with_events(
        &self,
        updates: &[DeliveryUpdate],
        options: EventOptions,
        at: DateTime<Utc>,
    ) -> StoreResult<u64> {
        dispatch!(self.apply_deliveries_with_events(updates, options, at))
    }

    async fn record_recipient_events(&self, events: &[NewRecipientEvent]) -> StoreResult<u64> {
        outbox::record(self, events).await
    }

    async fn claim_recipient_events(
        &self,
        owner: &str,
        lease: Duration,
        now: DateTime<Utc>,
        limit: usize,
    ) -> StoreResult<Vec<OutboxEvent>> {
        outbox::claim(self, owner, lease, now, limit).await
    }

    async fn complete_recipient_events(
        &self,
        owner: &str,
        ids: &[i64],
        now: DateTime<Utc>,
    ) -> StoreResult<u64> {
        outbox::complete(self, owner, ids, now).await
    }

    async fn fail_recipient_events(
        &self,
        owner: &str,
        ids: &[i64],
        error: &str,
        retry_at: DateTime<Utc>,
        dead_before: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<u64> {
        outbox::fail(self, owner, ids, error, retry_at, dead_before, now).await
    }

    async fn recipient_event_counts(&self) -> StoreResult<OutboxCounts> {
        outbox::counts(self).await
    }

    async fn recipient_event_backlog(&self) -> StoreResult<(u64, Option<DateTime<Utc>>)> {
        outbox::backlog(self).await
    }

    async fn recipient_event_states(
        &self,
        message_keys: &[String],
    ) -> StoreResult<HashSet<(String, String)>> {
        outbox::states_of(self, message_keys).await
    }

    async fn record_conversions(&self, events: &[Conversion]) -> StoreResult<ConversionTally> {
        dispatch!(self.record_conversions(events, None))
    }

    async fn record_conversions_with_events(
        &self,
        events: &[Conversion],
        options: EventOptions,
        at: DateTime<Utc>,
    ) -> StoreResult<ConversionTally> {
        dispatch!(self.record_conversions(events, Some((options, at))))
    }

    async fn record_opt_out_events(
        &self,
        phones: &[PhoneNumber],
        channel: ChannelKind,
        options: EventOptions,
        at: DateTime<Utc>,
    ) -> StoreResult<u64> {
        outbox::opt_outs(self, phones, channel, options, at).await
    }

    async fn converted_keys(
        &self,
        campaign: &CampaignId,
        keys: &[String],
    ) -> StoreResult<HashSet<String>> {
        dispatch!(self.converted_keys(campaign, keys))
    }

    async fn conversion_summary(
        &self,
        campaign: &CampaignId,
    ) -> StoreResult<Vec<ConversionSummary>> {
        conversions::conversion_summary(self, campaign).await
    }

    async fn create_token(&self, token: &ApiToken) -> StoreResult<bool> {
        access::create_token(self, token).await
    }

    async fn api_tokens(&self) -> StoreResult<Vec<ApiToken>> {
        access::api_tokens(self).await
    }

    async fn token_by_hash(&self, secret_hash: &str) -> StoreResult<Option<ApiToken>> {
        access::token_by_hash(self, secret_hash).await
    }

    async fn any_tokens(&self) -> StoreResult<bool> {
        access::any_tokens(self).await
    }

    async fn revoke_token(&self, name: &str, at: DateTime<Utc>) -> StoreResult<Option<ApiToken>> {
        access::revoke_token(self, name, at).await
    }

    async fn touch_token(&self, name: &str, at: DateTime<Utc>) -> StoreResult<()> {
        access::touch_token(self, name, at).await
    }

    async fn record_audit(&self, entry: &AuditEntry) -> StoreResult<()> {
        access::record_audit(self, entry).await
    }

    async fn audit_entries(
        &self,
        since: Option<DateTime<Utc>>,
        limit: u32,
    ) -> StoreResult<Vec<AuditRecord>> {
        access::audit_entries(self, since, limit).await
    }
}
