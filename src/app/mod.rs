//! What every command shares, below the adapters so they may import it without a loop: the
//! command line's error type and exit codes (`error`), the global settings (`global`: store,
//! Graph API), one clap struct per shared setting (`settings`: rate card, pacing, in-flight
//! bound, drain), the engine builder every sending command uses (`engine`), the store probe of
//! the long-running processes (`probe`), the retention purge they run (`retention`) and the
//! terminal progress bar (`progress`), and the audit rows of admin commands (`audit`). `cli` sits on top and wires commands to adapters;
//! `amqp`, `http` and `demo` import from here, never from `cli`.

pub mod audit;
mod engine;
mod error;
pub mod funnel;
mod global;
mod probe;
mod progress;
mod recipient_events;
mod retention;
mod settings;
pub mod sms;

pub use engine::{EngineOpts, EngineSetup};
pub use error::CliError;
pub use global::GlobalOpts;
pub use probe::probe_store_and_campaigns;
pub use progress::progress_bar;
pub use recipient_events::{EventsMode, RecipientEventsOpts};
pub use retention::{PurgeOpts, RetentionOpts, purge_once, spawn_purges};
pub use settings::{DrainOpts, InflightOpts, MAX_DRAIN_SECONDS, PacingOpts, RateCardOpts, SmsOpts};
