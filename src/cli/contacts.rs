//! `herald contacts`: one person's data, exported (GDPR Art. 15) or erased (Art. 17).

use clap::Subcommand;

use super::parse::phone;
use crate::app::audit::audited;
use crate::app::{CliError, GlobalOpts};
use crate::policy::access::Action;
use crate::store::contact_ref;

#[derive(Subcommand, Debug)]
pub enum ContactsCmd {
    /// Print everything stored about a number as JSON (GDPR access request).
    Export { phone: String },
    /// Erase a number (needs HERALD_HASH_KEY): consents, revocations, messages, windows,
    /// conversions, tier rows and timers deleted; ledger rows keep their outcome under a keyed
    /// hash without the message id; the number stays suppressed (by keyed hash) until a new
    /// consent dated after the erasure.
    Erase {
        phone: String,
        /// Confirm the erasure.
        #[arg(long)]
        yes: bool,
    },
}

pub async fn contacts(g: &GlobalOpts, cmd: ContactsCmd) -> Result<(), CliError> {
    match cmd {
        ContactsCmd::Export { phone: raw } => {
            let p = phone(&raw)?;
            let store = g.open_store().await?;
            // Recorded before anything is printed: no audit row, no output.
            let outcome = store.export_contact(&p).await.map_err(CliError::from);
            let data = audited(
                &*store,
                Action::ContactExport,
                Some(contact_ref(&p)),
                outcome,
            )
            .await?;
            println!(
                "{}",
                serde_json::to_string_pretty(&data).expect("JSON value serialises")
            );
            Ok(())
        }
        ContactsCmd::Erase { phone: raw, yes } => {
            let p = phone(&raw)?;
            if !yes {
                return Err(CliError::Usage(format!(
                    "erasing {p} cannot be undone: pass --yes to confirm"
                )));
            }
            let store = g.open_store().await?;
            let outcome = store.erase_contact(&p).await.map_err(CliError::from);
            let report = audited(
                &*store,
                Action::ContactErase,
                Some(contact_ref(&p)),
                outcome,
            )
            .await?;
            if report.is_empty() {
                println!("{p}: nothing held any more (erased before, or never known)");
            } else {
                println!("{p} erased:");
                for (what, n) in &report {
                    println!("  {what:<18} {n}");
                }
            }
            println!(
                "it stays suppressed by its keyed hash: nothing is sent to it until a new consent, dated after now, is recorded"
            );
            Ok(())
        }
    }
}
