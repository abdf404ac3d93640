//! Ledger hot-path cost per key for each store operation, on the store named by
//! `BENCH_DATABASE_URL` (default: SQLite in a temporary directory).
//!
//! Run: `cargo bench --bench store_ops`

use std::time::{Duration, Instant};

use chrono::Utc;
use herald::domain::{
    CampaignId, Category, ChannelKind, IdempotencyKey, JobId, Outcome, PhoneNumber, SenderId,
};
use herald::store::{self, Claim, Consent, OutcomeRecord};

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let n: usize = if full { 50_000 } else { 2_000 };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(n));
}

async fn run(n: usize) {
    let dir = tempfile::tempdir().unwrap();
    let url = std::env::var("BENCH_DATABASE_URL")
        .unwrap_or_else(|_| format!("sqlite://{}?mode=rwc", dir.path().join("ops.db").display()));
    let store = store::open(&url).await.unwrap();
    let phones: Vec<PhoneNumber> = (0..n)
        .map(|i| PhoneNumber::from_trusted(format!("+49151{:08}", 10_000_000 + i)))
        .collect();
    let campaign = CampaignId::parse("ops").unwrap();
    let claims: Vec<Claim> = phones
        .iter()
        .map(|p| Claim {
            key: IdempotencyKey::derive(&campaign, p, "flash_sale", "de"),
            campaign: campaign.clone(),
            job: JobId::parse("j").unwrap(),
            sender: SenderId::parse("1").unwrap(),
            recipient: p.as_str().to_owned(),
            template: "flash_sale".into(),
            language: "de".into(),
            category: Category::Marketing,
            channel: ChannelKind::WhatsApp,
        })
        .collect();
    let consents: Vec<Consent> = phones
        .iter()
        .map(|p| Consent {
            phone: p.clone(),
            category: Category::Marketing,
            channel: ChannelKind::WhatsApp,
            granted_at: Utc::now(),
            source: "b".into(),
            proof: "b".into(),
        })
        .collect();
    for c in consents.chunks(5000) {
        store.grant_consents(c).await.unwrap();
    }
    let lease = Duration::from_secs(60);
    let time = |label: &str, t: Instant| {
        println!(
            "  {label:<16} {:>7.2} µs/key",
            t.elapsed().as_secs_f64() * 1e6 / n as f64
        );
    };
    println!("store ops, {n} keys, batches of 500:");
    let t = Instant::now();
    for c in claims.chunks(500) {
        store.claim("owner", lease, c).await.unwrap();
    }
    time("claim", t);
    let t = Instant::now();
    for c in phones.chunks(500) {
        store
            .consent_states(Category::Marketing, ChannelKind::WhatsApp, c)
            .await
            .unwrap();
    }
    time("consent_states", t);
    let t = Instant::now();
    for c in phones.chunks(500) {
        store
            .reserve_tier("p", Some(10_000_000), Duration::from_secs(86_400), c)
            .await
            .unwrap();
    }
    time("reserve_tier", t);
    let keys: Vec<IdempotencyKey> = claims.iter().map(|c| c.key.clone()).collect();
    let t = Instant::now();
    for c in keys.chunks(500) {
        store.mark_sending("owner", c).await.unwrap();
    }
    time("mark_sending", t);
    let records: Vec<OutcomeRecord> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| OutcomeRecord {
            key: k.clone(),
            outcome: Outcome::Sent {
                wamid: format!("wamid.{i:020}"),
            },
            attempts: 1,
        })
        .collect();
    let t = Instant::now();
    for c in records.chunks(500) {
        store.record_outcomes(c).await.unwrap();
    }
    time("record_outcomes", t);
}
