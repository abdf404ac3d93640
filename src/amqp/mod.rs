//! RabbitMQ: how herald scales out. Campaign systems publish jobs to `{prefix}.jobs`
//! (DESIGN §1.2); any number of `herald worker` processes consume them, and `herald enqueue`
//! publishes jobs from a job file or a CSV.
//!
//! Layout: `topology` names and declarations (jobs, dead letters, delay tiers, events) ·
//! `connection` connecting with back-off and confirmed publishing · `worker` the consume loop,
//! reconnects and the drain · `delivery` one job to its ack, delay or dead letter ·
//! `copies` what republished copies carry · `disposition` what becomes of a delivery (pure) ·
//! `events` the job events · `state` worker health for probes · `enqueue` `herald enqueue` ·
//! `csv_jobs` a CSV of recipients into jobs (pure) · `conversions` the shops' conversion events,
//! consumed beside the jobs. `herald worker`'s command line lives in
//! `cli::worker`, which also adds its probes.

mod connection;
mod conversions;
mod copies;
mod csv_jobs;
mod delivery;
mod disposition;
mod enqueue;
mod events;
mod state;
mod topology;
mod worker;

pub use connection::{
    AmqpError, AmqpOpts, Publisher, check_confirm, connect, connect_with_backoff, redact_url,
};
pub use csv_jobs::{BuiltJob, CsvJobs, CsvSpec, check_csv};
pub use disposition::{Disposition, decide};
pub use enqueue::{EnqueueArgs, job_properties};
pub use events::{JOB_COMPLETED, JOB_DEAD_LETTERED, JobCompleted, JobDeadLettered};
pub use state::WorkerState;
pub(crate) use topology::short as short_string;
pub use topology::{DEFERRAL_HEADER, DELAY_HEADER, DELAY_TIERS, DelayTier, Topology};
pub use worker::{TICK, WorkerConfig, WorkerError, run_worker};

use crate::app::CliError;

/// `herald enqueue`.
pub async fn enqueue_command(args: EnqueueArgs) -> Result<(), CliError> {
    enqueue::enqueue(args).await
}
