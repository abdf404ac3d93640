//! `herald enqueue`: publishes jobs to `{prefix}.jobs` with publisher confirms — one job file
//! as is, or a CSV of recipients split into jobs of up to 10,000.
//!
//! Nothing invalid is ever published: a job file is checked with [`Job::parse`] first, and a
//! CSV is read twice — a cheap first pass checks every row and counts the jobs, the second
//! builds, checks and publishes them — so a bad row on line 9,000,000 is reported before the
//! first job goes out, in constant memory. A broker failure mid-way says exactly how many jobs
//! were confirmed; re-running is safe, since a recipient's key is sent at most once, ever.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use clap::{ArgGroup, Args};
use lapin::types::ShortString;
use lapin::{BasicProperties, PublisherConfirm};
use serde_json::Value;

use super::connection::{AmqpError, AmqpOpts, Publisher, check_confirm, connect};
use super::csv_jobs::{BuiltJob, CsvJobs, CsvSpec, check_csv};
use super::topology::{Topology, short};
use crate::app::CliError;
use crate::domain::job::MAX_RECIPIENTS;
use crate::domain::{CampaignId, Category, Job, JobId, SenderId};

/// Jobs published but not yet confirmed at any time: keeps the broker busy without holding
/// more than a few job bodies (up to ~2 MB each) in memory.
const CONFIRM_WINDOW: usize = 16;

#[derive(Args, Debug)]
#[command(group(ArgGroup::new("source").required(true).args(["file", "csv"])))]
pub struct EnqueueArgs {
    #[command(flatten)]
    pub amqp: AmqpOpts,
    /// A job file (JSON, format v1: see schema/job-v1.schema.json), published as is.
    pub file: Option<PathBuf>,
    /// A CSV of recipients instead: a `to` (or `phone`) column, optional `key` (idempotency
    /// key) and `param1`…`paramN` (the template's body text parameters, in order).
    #[arg(long, requires_all = ["campaign", "sender", "template", "language", "category"])]
    pub csv: Option<PathBuf>,
    /// Campaign id of the CSV's jobs.
    #[arg(long, requires = "csv")]
    pub campaign: Option<String>,
    /// The sending business number's phone_number_id (also the routing key).
    #[arg(long, requires = "csv")]
    pub sender: Option<String>,
    /// Template name.
    #[arg(long, requires = "csv")]
    pub template: Option<String>,
    /// Template language code, e.g. `de` or `en_US`.
    #[arg(long, requires = "csv")]
    pub language: Option<String>,
    /// Template category: marketing, utility or authentication.
    #[arg(long, requires = "csv")]
    pub category: Option<String>,
    /// JSON file with job-level components (Cloud API shape), e.g. a header image.
    #[arg(long, requires = "csv")]
    pub components: Option<PathBuf>,
    /// Recipients per job (at most 10,000).
    #[arg(long, requires = "csv", default_value_t = MAX_RECIPIENTS)]
    pub job_size: usize,
    /// Job ids are `{prefix}-00001`, `{prefix}-00002`, …; default `{campaign}-{UTC time}`.
    #[arg(long, requires = "csv")]
    pub job_prefix: Option<String>,
    /// Do not send before this time (RFC 3339, e.g. 2026-11-27T08:00:00Z).
    #[arg(long, requires = "csv")]
    pub not_before: Option<DateTime<Utc>>,
    /// Skip recipients not sent by this time (RFC 3339).
    #[arg(long, requires = "csv")]
    pub expires_at: Option<DateTime<Utc>>,
    /// Publish only; do not declare the topology (for a RabbitMQ user without configure
    /// permission — the exchange must exist then).
    #[arg(long)]
    pub no_declare: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

impl EnqueueArgs {
    /// Checks the CSV options into a spec (everything job-level, once).
    fn csv_spec(&self) -> Result<CsvSpec, CliError> {
        let usage = |m: String| CliError::Usage(m);
        let req = |v: &Option<String>, name: &str| {
            v.clone()
                .filter(|s| !s.trim().is_empty())
                .ok_or_else(|| usage(format!("--{name} is required with --csv")))
        };
        let campaign = CampaignId::parse(&req(&self.campaign, "campaign")?)
            .map_err(|e| usage(format!("--campaign {e}")))?;
        let sender = SenderId::parse(&req(&self.sender, "sender")?)
            .map_err(|e| usage(format!("--sender {e}")))?;
        let category: Category = req(&self.category, "category")?
            .parse()
            .map_err(|e: String| usage(format!("--category: {e}")))?;
        if self.job_size == 0 || self.job_size > MAX_RECIPIENTS {
            return Err(usage(format!(
                "--job-size must be between 1 and {MAX_RECIPIENTS}, got {}",
                self.job_size
            )));
        }
        let components = match &self.components {
            None => Vec::new(),
            Some(path) => read_components(path)?,
        };
        let job_prefix = match &self.job_prefix {
            Some(p) => p.clone(),
            None => format!("{campaign}-{}", Utc::now().format("%Y%m%dT%H%M%SZ")),
        };
        // The longest id this run can produce must be a valid job id and fit a message id.
        let longest = format!("{job_prefix}-{:05}", u32::MAX);
        JobId::parse(&longest).map_err(|e| usage(format!("--job-prefix: job ids {e}")))?;
        if short(&longest).is_none() {
            return Err(usage(
                "--job-prefix is too long for an AMQP message id".into(),
            ));
        }
        Ok(CsvSpec {
            campaign,
            sender,
            template: req(&self.template, "template")?,
            language: req(&self.language, "language")?,
            category,
            components,
            job_size: self.job_size,
            job_prefix,
            not_before: self.not_before,
            expires_at: self.expires_at,
        })
    }
}

fn read_components(path: &Path) -> Result<Vec<Value>, CliError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        CliError::Usage(format!(
            "cannot read components file {}: {e}",
            path.display()
        ))
    })?;
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Array(items)) => Ok(items),
        Ok(_) => Err(CliError::Usage(format!(
            "components file {} must hold a JSON array of components",
            path.display()
        ))),
        Err(e) => Err(CliError::Usage(format!(
            "components file {} is not valid JSON: {e}",
            path.display()
        ))),
    }
}

fn open_file(path: &Path) -> Result<std::io::BufReader<std::fs::File>, CliError> {
    std::fs::File::open(path)
        .map(std::io::BufReader::new)
        .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", path.display())))
}

/// Runs `herald enqueue`.
pub async fn enqueue(args: EnqueueArgs) -> Result<(), CliError> {
    args.amqp.check()?;
    let topology = Topology::new(args.amqp.amqp_prefix.clone());
    if let Some(path) = &args.file {
        let body = std::fs::read(path).map_err(|e| {
            CliError::Usage(format!("cannot read job file {}: {e}", path.display()))
        })?;
        let job = Job::parse(&body)
            .map_err(|e| CliError::Usage(format!("invalid job {}: {e}", path.display())))?;
        if short(job.id.as_str()).is_none() {
            return Err(CliError::Usage(format!(
                "job id of {} is longer than the 255 bytes an AMQP message id allows",
                path.display()
            )));
        }
        let built = BuiltJob {
            id: job.id.to_string(),
            sender: job.sender.to_string(),
            recipients: job.key_count(),
            body,
        };
        let (conn, publisher) = open_publisher(&args, &topology).await?;
        let summary = publish_all(&publisher, &topology, std::iter::once(Ok(built)), None).await;
        close(&conn).await;
        return summary.finish(1);
    }

    let csv_path = args.csv.clone().expect("clap requires a file or --csv");
    let spec = args.csv_spec()?;
    let rows = check_csv(open_file(&csv_path)?)
        .map_err(|e| CliError::Usage(format!("{}: {e}", csv_path.display())))?;
    let total_jobs = rows.div_ceil(spec.job_size as u64);
    let jobs = CsvJobs::new(open_file(&csv_path)?, spec)
        .map_err(|e| CliError::Usage(format!("{}: {e}", csv_path.display())))?;
    let (conn, publisher) = open_publisher(&args, &topology).await?;
    let bar = progress(total_jobs, args.quiet);
    let summary = publish_all(&publisher, &topology, jobs, bar.as_ref()).await;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    close(&conn).await;
    summary.finish(total_jobs)
}

/// Closes cleanly so the broker logs no "client unexpectedly closed" for a finished run.
async fn close(conn: &lapin::Connection) {
    if conn.status().connected() {
        let _ = conn
            .close(200, ShortString::from("herald enqueue done"))
            .await;
    }
}

async fn open_publisher(
    args: &EnqueueArgs,
    topology: &Topology,
) -> Result<(lapin::Connection, Publisher), CliError> {
    let unreachable = |e: AmqpError| {
        CliError::runtime(format!(
            "cannot reach RabbitMQ at {}: {e}. Nothing was published",
            args.amqp.url_redacted()
        ))
    };
    let conn = connect(&args.amqp.amqp_url, "enqueue")
        .await
        .map_err(unreachable)?;
    let publisher = Publisher::open(&conn).await.map_err(unreachable)?;
    if !args.no_declare {
        topology.declare(publisher.channel()).await.map_err(|e| {
            CliError::runtime(format!(
                "RabbitMQ refused herald's topology for prefix '{}': {e}. Nothing was \
published (use --no-declare if this user may only publish)",
                topology.prefix()
            ))
        })?;
    }
    Ok((conn, publisher))
}

fn progress(jobs: u64, quiet: bool) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    if quiet || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(jobs);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} jobs confirmed  {msg}",
        )
        .expect("valid template"),
    );
    Some(bar)
}

/// What a publishing run achieved.
#[derive(Debug, Default)]
pub struct Summary {
    pub confirmed: u64,
    pub recipients: u64,
    pub exchange: String,
    /// The first failure; publishing stops there.
    pub error: Option<CliError>,
}

impl Summary {
    fn finish(self, planned: u64) -> Result<(), CliError> {
        match self.error {
            None => {
                eprintln!(
                    "{} job(s) with {} recipient(s) published to {} and confirmed",
                    self.confirmed, self.recipients, self.exchange
                );
                Ok(())
            }
            Some(CliError::Usage(m)) => Err(CliError::Usage(format!(
                "{m}. {} of {planned} job(s) were published and confirmed before it (ids above)",
                self.confirmed
            ))),
            Some(CliError::Runtime(e)) => Err(CliError::runtime(format!(
                "{e:#}. Only {} of {planned} job(s) were confirmed (ids above); the rest may \
not be queued. Re-running is safe: recipients already sent are never sent twice",
                self.confirmed
            ))),
        }
    }
}

/// Publishes jobs with at most [`CONFIRM_WINDOW`] unconfirmed at a time, printing each job id
/// to stdout once the broker confirmed it. Stops at the first failure and still collects the
/// confirms of what was already sent, so the count is exact.
pub async fn publish_all<I>(
    publisher: &Publisher,
    topology: &Topology,
    jobs: I,
    bar: Option<&indicatif::ProgressBar>,
) -> Summary
where
    I: IntoIterator<Item = Result<BuiltJob, String>>,
{
    let exchange = topology.jobs_exchange();
    let mut summary = Summary {
        exchange: exchange.clone(),
        ..Summary::default()
    };
    let mut window: VecDeque<(BuiltJob, PublisherConfirm)> = VecDeque::new();
    for job in jobs {
        let job = match job {
            Ok(j) => j,
            Err(e) => {
                summary.error = Some(CliError::Usage(e));
                break;
            }
        };
        let props = job_properties(&job.id);
        let confirm = match publisher
            .start_publish(&exchange, &job.sender, true, &job.body, props)
            .await
        {
            Ok(c) => c,
            Err(e) => {
                summary.error = Some(CliError::runtime(format!("publishing job {}: {e}", job.id)));
                break;
            }
        };
        // The body is not needed any more: keep memory at the window's ids, not its bodies.
        let job = BuiltJob {
            body: Vec::new(),
            ..job
        };
        window.push_back((job, confirm));
        if window.len() >= CONFIRM_WINDOW {
            let (job, confirm) = window.pop_front().expect("window is not empty");
            if let Err(e) = settle(&mut summary, &exchange, job, confirm, bar).await {
                summary.error = Some(e);
                break;
            }
        }
    }
    while let Some((job, confirm)) = window.pop_front() {
        if let Err(e) = settle(&mut summary, &exchange, job, confirm, bar).await
            && summary.error.is_none()
        {
            summary.error = Some(e);
        }
    }
    summary
}

async fn settle(
    summary: &mut Summary,
    exchange: &str,
    job: BuiltJob,
    confirm: PublisherConfirm,
    bar: Option<&indicatif::ProgressBar>,
) -> Result<(), CliError> {
    let outcome = match confirm.await {
        Ok(c) => check_confirm(c, exchange, &job.sender),
        Err(e) => Err(AmqpError::from(e)),
    };
    match outcome {
        Ok(()) => {
            summary.confirmed += 1;
            summary.recipients += job.recipients as u64;
            // Ids go to stdout (for scripts) whether or not a bar is drawn on stderr;
            // `suspend` keeps them from tearing the bar when both are the terminal.
            match bar {
                Some(bar) => {
                    bar.suspend(|| println!("{}", job.id));
                    bar.inc(1);
                }
                None => println!("{}", job.id),
            }
            Ok(())
        }
        Err(e) => Err(CliError::runtime(format!(
            "job {} was not confirmed: {e}",
            job.id
        ))),
    }
}

/// AMQP properties of a job message (DESIGN §1.2).
pub fn job_properties(job_id: &str) -> BasicProperties {
    let mut props = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type(ShortString::from("application/json"))
        .with_timestamp(Utc::now().timestamp().max(0) as u64)
        .with_app_id(ShortString::from("herald-enqueue"));
    if let Some(id) = short(job_id) {
        props = props.with_message_id(id);
    }
    props
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_messages_carry_the_contract_properties() {
        let p = job_properties("j1");
        assert_eq!(*p.delivery_mode(), Some(2));
        assert_eq!(
            p.content_type().as_ref().map(|c| c.as_str()),
            Some("application/json")
        );
        assert_eq!(p.message_id().as_ref().map(|m| m.as_str()), Some("j1"));
        assert!(p.timestamp().is_some());
    }
}
