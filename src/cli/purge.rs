//! `herald purge`: the retention purge once (`HERALD_RETENTION`; workers and `herald serve`
//! run it hourly): personal rows older than their class's period deleted, campaign totals
//! kept. `--dry-run` counts what would go. Erasing one person is `herald contacts erase`.

use chrono::{SecondsFormat, Utc};
use clap::Args;

use crate::app::audit::audited;
use crate::app::{CliError, GlobalOpts, RetentionOpts, purge_once};
use crate::policy::access::Action;
use crate::policy::retention::{DataClass, format_period};

#[derive(Args, Debug)]
pub struct PurgeArgs {
    #[command(flatten)]
    pub retention: RetentionOpts,
    /// Count what would be deleted, per class; delete nothing.
    #[arg(long)]
    pub dry_run: bool,
}

pub async fn purge(g: &GlobalOpts, args: PurgeArgs) -> Result<(), CliError> {
    // A bad HERALD_RETENTION is refused before the store is opened.
    let policy = args.retention.policy()?;
    let store = g.open_store().await?;
    let now = Utc::now();
    let outcome = purge_once(&*store, &policy, now, args.dry_run)
        .await
        .map_err(CliError::from);
    // A dry run deletes nothing and is not an action on the data.
    let counts = if args.dry_run {
        outcome?
    } else {
        audited(&*store, Action::Purge, None, outcome).await?
    };
    let at = now.to_rfc3339_opts(SecondsFormat::Secs, true);
    if args.dry_run {
        println!("retention purge at {at} (dry run: nothing deleted)");
    } else {
        println!("retention purge at {at}");
    }
    println!(
        "  {:<14}{:>10}  {:<22}{:>10}",
        "class", "kept", "older than", "rows"
    );
    for class in DataClass::all() {
        let kept = policy.period(class).map_or("never".into(), format_period);
        let cutoff = policy.cutoff(class, now).map_or("—".into(), |t| {
            t.to_rfc3339_opts(SecondsFormat::Secs, true)
        });
        println!(
            "  {:<14}{kept:>10}  {cutoff:<22}{:>10}",
            class.as_str(),
            counts.get(class)
        );
    }
    let verb = if args.dry_run {
        "would be deleted"
    } else {
        "deleted"
    };
    println!("{} row(s) {verb}; campaign totals are kept", counts.total());
    Ok(())
}
