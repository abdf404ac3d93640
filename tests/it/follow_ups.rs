//! Follow-ups end to end against the simulator on SQLite, with herald's clock moved forward
//! instead of waiting: due `after` the first send and not before, only to those whose first
//! message came far enough, once ever, through the whole gate again.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use herald::domain::{ChannelKind, Clock, DeliveryUpdate, IdempotencyKey, Job, PhoneNumber};
use herald::engine::{EngineConfig, JobRun, RunControl, follow_up_key};
use herald::store::CampaignState;
use serde_json::{Value, json};

use super::engine::{Env, EnvOptions, SENDER, job_with, numbers};
use super::support::{fast_retries, template};

const DAY: Duration = Duration::from_secs(24 * 3600);

/// An environment whose engine runs on `clock`, with the reminder template approved.
async fn env(clock: &Clock) -> Env {
    let env = Env::start(EnvOptions {
        engine: EngineConfig {
            clock: clock.clone(),
            ..fast_retries()
        },
        ..EnvOptions::default()
    })
    .await;
    env.store
        .upsert_template(&template("flash_sale_reminder", "APPROVED"))
        .await
        .unwrap();
    env
}

fn follow_up_job(id: &str, campaign: &str, to: &[String], rule: Value) -> Arc<Job> {
    let recipients: Vec<_> = to
        .iter()
        .enumerate()
        .map(|(i, n)| json!({ "to": n, "key": format!("{campaign}-{i}") }))
        .collect();
    job_with(json!({
        "version": 1,
        "job_id": id,
        "campaign_id": campaign,
        "sender": SENDER,
        "template": { "name": "flash_sale", "language": "de", "category": "marketing" },
        "recipients": recipients,
        "follow_up": rule,
    }))
}

fn read_rule() -> Value {
    json!({
        "after": "PT24H", "if": "read", "unless": "converted",
        "template": { "name": "flash_sale_reminder", "language": "de", "category": "marketing" },
        "components": [ { "type": "body", "parameters": [ { "type": "text", "text": "10 %" } ] } ]
    })
}

/// Applies `status` to the first message of key `key`, as a status webhook would.
async fn status(env: &Env, key: &str, status: &str) {
    let row = env
        .store
        .ledger_entry(&IdempotencyKey::from_trusted(key.to_owned()))
        .await
        .unwrap()
        .expect("the first message has a row");
    let wamid = row.wamid.expect("sent with a wamid");
    env.store
        .apply_deliveries(&[DeliveryUpdate {
            wamid,
            key: None,
            status: status.into(),
            at: Utc::now(),
            error_code: None,
            billed_category: None,
        }])
        .await
        .unwrap();
}

async fn outcome(env: &Env, key: &str) -> Option<(String, Option<String>)> {
    env.store
        .ledger_entry(&IdempotencyKey::from_trusted(key.to_owned()))
        .await
        .unwrap()
        .map(|r| (r.state, r.reason))
}

async fn fire(env: &Env) -> herald::engine::FollowUpRound {
    env.engine
        .fire_follow_ups(&RunControl::default())
        .await
        .expect("firing does not fail")
}

#[tokio::test]
async fn readers_get_one_follow_up_after_a_day_and_everyone_else_an_outcome_why_not() {
    let clock = Clock::system();
    let env = env(&clock).await;
    let to = numbers(4);
    env.consent_all(&to).await;
    let job = follow_up_job("j1", "fu", &to, read_rule());
    let first = env.finished(&job).await;
    assert_eq!(first.total("sent"), 4);
    // 0 and 3 read it, 1 only received it, 2 heard nothing more.
    status(&env, "fu-0", "read").await;
    status(&env, "fu-1", "delivered").await;
    status(&env, "fu-3", "read").await;
    // 3 opts out in between: the follow-up passes the gate again.
    env.store
        .revoke_consent(
            &PhoneNumber::parse(&to[3]).unwrap(),
            None,
            Some(ChannelKind::WhatsApp),
            Utc::now(),
            "inbound:STOP",
        )
        .await
        .unwrap();
    let accepted = env.sim.stats().accepted;

    // A minute short of a day: nothing is due yet.
    clock.advance(DAY - Duration::from_secs(60));
    let early = fire(&env).await;
    assert_eq!((early.sent, early.skipped), (0, 0));
    assert_eq!(env.sim.stats().accepted, accepted);
    assert_eq!(outcome(&env, &follow_up_key("fu-0")).await, None);

    clock.advance(Duration::from_secs(120));
    let round = fire(&env).await;
    assert_eq!(round.sent, 1, "{round:?}");
    assert_eq!(round.skipped, 3, "{round:?}");
    assert_eq!(env.sim.stats().accepted, accepted + 1);
    assert_eq!(env.sim.stats().duplicates, 0);
    assert_eq!(
        outcome(&env, &follow_up_key("fu-0")).await,
        Some(("sent".into(), None))
    );
    let skipped = |reason: &str| Some(("skipped".to_owned(), Some(reason.to_owned())));
    assert_eq!(
        outcome(&env, &follow_up_key("fu-1")).await,
        skipped("not_read")
    );
    assert_eq!(
        outcome(&env, &follow_up_key("fu-2")).await,
        skipped("not_read")
    );
    assert_eq!(
        outcome(&env, &follow_up_key("fu-3")).await,
        skipped("opted_out")
    );
    let row = env
        .store
        .ledger_entry(&IdempotencyKey::from_trusted(follow_up_key("fu-0")))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.template, "flash_sale_reminder");
    assert_eq!(row.channel, ChannelKind::WhatsApp);

    // Once, ever: another round, the job again, a week later.
    assert_eq!(fire(&env).await.sent, 0);
    let again = env.finished(&job).await;
    assert_eq!(again.total("sent"), 0);
    clock.advance(7 * DAY);
    assert_eq!(fire(&env).await, Default::default());
    assert_eq!(env.sim.stats().accepted, accepted + 1);
}

#[tokio::test]
async fn a_cancelled_campaign_never_follows_up_and_a_paused_one_does_on_resume() {
    let clock = Clock::system();
    let env = env(&clock).await;
    let to = numbers(6);
    env.consent_all(&to).await;
    let rule = json!({
        "after": "PT2H", "if": "delivered",
        "template": { "name": "flash_sale_reminder", "language": "de", "category": "marketing" }
    });
    let cancelled = follow_up_job("c1", "cancelled", &to[..3], rule.clone());
    let paused = follow_up_job("p1", "paused", &to[3..], rule);
    env.finished(&cancelled).await;
    env.finished(&paused).await;
    for key in [
        "cancelled-0",
        "cancelled-1",
        "cancelled-2",
        "paused-0",
        "paused-1",
    ] {
        status(&env, key, "delivered").await;
    }
    let accepted = env.sim.stats().accepted;
    let campaign = |id: &str| herald::domain::CampaignId::parse(id).unwrap();
    env.store
        .set_campaign_state(
            &campaign("cancelled"),
            CampaignState::Cancelled,
            Some("test"),
        )
        .await
        .unwrap();
    env.store
        .set_campaign_state(&campaign("paused"), CampaignState::Paused, Some("test"))
        .await
        .unwrap();

    clock.advance(Duration::from_secs(3 * 3600));
    let round = fire(&env).await;
    assert_eq!(round.sent, 0, "{round:?}");
    assert_eq!(round.outcomes.get("skipped:campaign_cancelled"), Some(&3));
    assert_eq!(round.later, 3, "the paused campaign's wait: {round:?}");
    assert_eq!(env.sim.stats().accepted, accepted);

    env.store
        .set_campaign_state(&campaign("paused"), CampaignState::Active, None)
        .await
        .unwrap();
    // Handed back for a minute on the clock.
    clock.advance(Duration::from_secs(61));
    let round = fire(&env).await;
    assert_eq!(round.sent, 2, "{round:?}");
    assert_eq!(round.outcomes.get("skipped:not_delivered"), Some(&1));
    assert_eq!(env.sim.stats().accepted, accepted + 2);
}

#[tokio::test]
async fn a_follow_up_with_an_unapproved_template_rejects_the_job_before_anything_is_sent() {
    let clock = Clock::system();
    let env = env(&clock).await;
    env.store
        .upsert_template(&template("flash_sale_reminder", "REJECTED"))
        .await
        .unwrap();
    let to = numbers(2);
    env.consent_all(&to).await;
    let job = follow_up_job("r1", "rejected", &to, read_rule());
    match env.run(&job).await {
        JobRun::Rejected(reason) => {
            assert_eq!(reason.label(), "follow_up_template_not_approved");
            assert!(
                reason.to_string().starts_with("follow_up.template:"),
                "{reason}"
            );
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert_eq!(env.sim.stats().accepted, 0);
}

#[tokio::test]
async fn three_processes_racing_on_the_same_due_follow_ups_fire_each_once_on_postgres() {
    let Some(url) = super::support::postgres_url().await else {
        return;
    };
    let sim = herald::simulator::spawn(
        herald::simulator::SimConfig {
            rate_per_sec: 1_000_000,
            accept_unknown_templates: true,
            ..Default::default()
        },
        std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .await
    .unwrap();
    let graph = herald::graph::GraphConfig {
        base_url: sim.url(),
        ..Default::default()
    };
    let clock = Clock::system();
    let config = || EngineConfig {
        clock: clock.clone(),
        ..fast_retries()
    };
    // Three stores (three pools) and engines: two workers and `herald serve`.
    let mut engines = Vec::new();
    for _ in 0..3 {
        let store = herald::store::open(&url).await.unwrap();
        engines.push(super::support::engine(&store, &graph, config()));
    }
    let store = engines[0].store().clone();
    super::support::seed(&store, &super::support::sender(SENDER, 1_000_000)).await;
    store
        .upsert_template(&template("flash_sale_reminder", "APPROVED"))
        .await
        .unwrap();
    let to = numbers(300);
    super::support::consent_marketing(&store, &to).await;
    let rule = json!({
        "after": "PT1H",
        "template": { "name": "flash_sale_reminder", "language": "de", "category": "marketing" }
    });
    let job = follow_up_job("race-1", "race", &to, rule);
    match engines[0]
        .run_job(Arc::clone(&job), &RunControl::default())
        .await
        .unwrap()
    {
        JobRun::Finished(r) => assert_eq!(r.total("sent"), 300),
        other => panic!("{other:?}"),
    }
    clock.advance(Duration::from_secs(3601));
    let ctl = RunControl::default();
    let (a, b, c) = tokio::join!(
        engines[0].fire_follow_ups(&ctl),
        engines[1].fire_follow_ups(&ctl),
        engines[2].fire_follow_ups(&ctl),
    );
    let sent: u64 = [a, b, c].into_iter().map(|r| r.unwrap().sent).sum();
    assert_eq!(sent, 300);
    let stats = sim.stats();
    assert_eq!(stats.accepted, 600);
    assert_eq!(stats.duplicates, 0);
    for e in &engines {
        assert_eq!(e.fire_follow_ups(&ctl).await.unwrap().sent, 0);
    }
    drop(engines);
    super::support::drop_postgres_database(&url).await;
}

fn order(id: &str, campaign: &str, key: &str) -> herald::domain::Conversion {
    herald::domain::Conversion {
        event_id: id.into(),
        campaign: herald::domain::CampaignId::parse(campaign).unwrap(),
        to: None,
        key: Some(IdempotencyKey::from_trusted(key.to_owned())),
        event: "order".into(),
        at: Utc::now(),
        value: None,
    }
}

#[tokio::test]
async fn an_order_before_the_day_is_out_stops_the_follow_up_and_one_after_it_is_credited_to_it() {
    let clock = Clock::system();
    let env = env(&clock).await;
    let to = numbers(3);
    env.consent_all(&to).await;
    let job = follow_up_job("o1", "orders", &to, read_rule());
    env.finished(&job).await;
    for key in ["orders-0", "orders-1", "orders-2"] {
        status(&env, key, "read").await;
    }
    // 1 orders within the day (reported by number would do as well; here by key).
    let tally = env
        .store
        .record_conversions(&[order("order-1", "orders", "orders-1")])
        .await
        .unwrap();
    assert_eq!((tally.stored, tally.unattributed), (1, 0));
    let accepted = env.sim.stats().accepted;

    clock.advance(DAY + Duration::from_secs(1));
    let round = fire(&env).await;
    assert_eq!(round.sent, 2, "{round:?}");
    assert_eq!(round.outcomes.get("skipped:converted"), Some(&1));
    assert_eq!(env.sim.stats().accepted, accepted + 2);

    // 0 orders after the reminder: recorded and credited to it.
    env.store
        .record_conversions(&[order("order-0", "orders", "orders-0")])
        .await
        .unwrap();
    let summary = env
        .store
        .conversion_summary(&herald::domain::CampaignId::parse("orders").unwrap())
        .await
        .unwrap();
    let wa = summary
        .iter()
        .find(|s| s.channel == Some(ChannelKind::WhatsApp))
        .expect("whatsapp conversions");
    assert_eq!((wa.conversions, wa.after_follow_up), (2, 1));
}
