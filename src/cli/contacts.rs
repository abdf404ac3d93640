//! `herald contacts`: one person's data, exported (GDPR Art. 15) or erased (Art. 17).

use clap::Subcommand;

use super::parse::phone;
use crate::app::{CliError, GlobalOpts};

#[derive(Subcommand, Debug)]
pub enum ContactsCmd {
    /// Print everything stored about a number as JSON (GDPR access request).
    Export { phone: String },
    /// Erase a number: consents and conversions deleted, ledger rows anonymised, kept
    /// suppressed by hash.
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
            let data = store.export_contact(&p).await?;
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
            let n = store.erase_contact(&p).await?;
            println!("{p} erased ({n} row(s) touched); the number stays suppressed by hash");
            Ok(())
        }
    }
}
