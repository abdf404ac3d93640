//! The dispatch engine: runs one checked job through its stages, one file each, joined by
//! bounded channels: [`claim`] (keys in the ledger, a batch at a time) → [`gate`] (consent,
//! tier, budget) → [`mark`] (`sending`, just before the turn) → [`pace`] (the number's rate,
//! the in-flight bound) → [`send`] (one request on the run's [`crate::channel::Channel`], the
//! pure next-step decision) → [`record`] (outcomes in batches, the report), with [`control`]
//! watching shutdown, the lease and the campaign's state. [`job`] holds the engine and wires a
//! run; [`run`] is what the stages share. The same engine serves `herald send`, `herald demo`
//! and the RabbitMQ workers; only where jobs come from and what happens to deferred work
//! differs.

mod claim;
mod config;
mod control;
mod fallback;
mod fallback_timer;
mod follow_up;
mod follow_up_timer;
mod gate;
mod job;
mod mark;
mod optin;
mod pace;
mod record;
mod report;
mod run;
mod send;
mod timers;

pub use config::{EngineConfig, EngineError, Progress, RunControl};
pub use fallback::FallbackRound;
pub use fallback_timer::{
    FallbackTimer, KIND as FALLBACK_TIMER, SMS_KEY_SUFFIX as SMS_SUFFIX, sms_key,
};
pub use follow_up::FollowUpRound;
pub use follow_up_timer::{
    FollowUpTimer, KEY_SUFFIX as FOLLOW_UP_SUFFIX, KIND as FOLLOW_UP_TIMER, follow_up_key,
    is_follow_up_key,
};
pub use job::Engine;
pub use optin::{
    CAMPAIGN as OPTIN_CAMPAIGN, Confirmation, ConfirmationRound, KIND as OPTIN_TIMER,
    confirmation_key, schedule_confirmations,
};
pub use report::{JobReport, JobRun, StopCause};
pub use timers::{TIMER_POLL, TimerRound};
