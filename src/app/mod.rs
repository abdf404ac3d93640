//! What every command shares, below the adapters so they may import it without a loop: the
//! command line's error type and exit codes, the global settings (store, Graph API), one clap struct per
//! shared setting (rate card, pacing, drain), the engine builder every sending command uses
//! and the terminal progress bar. `cli` sits on top and wires commands to adapters; `amqp`, `http`
//! and `demo` import from here, never from `cli`.

mod engine;
mod error;
mod global;
mod progress;
mod settings;

pub use engine::{EngineOpts, EngineSetup};
pub use error::CliError;
pub use global::{GlobalOpts, redact_url};
pub use progress::progress_bar;
pub use settings::{DrainOpts, InflightOpts, MAX_DRAIN_SECONDS, PacingOpts, RateCardOpts};
