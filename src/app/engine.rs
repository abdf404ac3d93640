//! The one place an engine is put together for the commands that send (`herald send`,
//! `herald worker`, `herald demo`): pacers, rate card and bounds from the flattened settings,
//! around `Engine::new`.

use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use super::{CliError, InflightOpts, PacingOpts, RateCardOpts, RecipientEventsOpts, SmsOpts, sms};
use crate::channel::SmsChannel;
use crate::channel::sms::SmsRoute;
use crate::engine::{Engine, EngineConfig};
use crate::graph::GraphClient;
use crate::pacing::{LeasedSlots, PacerConfig, PacerRegistry, SlotSource};
use crate::policy::cost::RateCard;
use crate::policy::opt_out::OptOutWords;
use crate::store::Store;

/// The settings of every command that sends.
#[derive(Args, Debug, Clone)]
pub struct EngineOpts {
    #[command(flatten)]
    pub pacing: PacingOpts,
    #[command(flatten)]
    pub inflight: InflightOpts,
    #[command(flatten)]
    pub rate_card: RateCardOpts,
    #[command(flatten)]
    pub sms: SmsOpts,
    #[command(flatten)]
    pub recipient_events: RecipientEventsOpts,
}

impl EngineOpts {
    /// Rejects settings that cannot work, before anything is read or opened.
    pub fn check(&self) -> Result<(), CliError> {
        self.pacing.check()?;
        self.inflight.check()?;
        self.recipient_events.check()?;
        self.sms.check()
    }

    /// Checks the settings and loads the rate card.
    pub fn setup(&self) -> Result<EngineSetup, CliError> {
        self.check()?;
        let mut setup = EngineSetup::new(self.rate_card.load()?);
        setup.pacer.headroom = self.pacing.headroom;
        setup.config.max_inflight_per_sender = self.inflight.max_inflight;
        setup.config.mark_ahead = Duration::from_millis(self.inflight.mark_ahead_ms);
        setup.config.sms_max_parts = self.sms.sms_max_parts;
        setup.sms_route = self.sms.route()?;
        setup.config.recipient_events = self.recipient_events.options()?;
        Ok(setup)
    }
}

/// Everything an engine is built from besides its store and Graph client; a command adjusts
/// the fields its situation needs, then calls [`EngineSetup::build`].
#[derive(Debug, Clone)]
pub struct EngineSetup {
    /// How each number is paced.
    pub pacer: PacerConfig,
    /// Lease each number's send slots from the store, so its rate holds across processes
    /// (workers on Postgres; SQLite declines and the local bucket paces). A single process
    /// (`send`, `demo`) paces locally.
    pub shared_rates: bool,
    /// Prices committed against budgets and reported.
    pub rate_card: Arc<RateCard>,
    /// The engine's bounds and timings.
    pub config: EngineConfig,
    /// The SMS route (`HERALD_SMS_URL`), when there is one.
    pub sms_route: Option<SmsRoute>,
}

impl EngineSetup {
    /// The defaults with this rate card: local pacing, the engine's default bounds.
    pub fn new(rate_card: RateCard) -> Self {
        Self {
            pacer: PacerConfig::default(),
            shared_rates: false,
            rate_card: Arc::new(rate_card),
            config: EngineConfig::default(),
            sms_route: None,
        }
    }

    /// Builds the engine; with an SMS route, also starts keeping its session bound and its
    /// inbox (receipts, opt-outs) applying to `store`. Needs a Tokio runtime.
    pub fn build(&self, store: Arc<dyn Store>, graph: GraphClient) -> Engine {
        let slots = self
            .shared_rates
            .then(|| Arc::new(LeasedSlots::new(Arc::clone(&store))) as Arc<dyn SlotSource>);
        let engine = Engine::new(
            Arc::clone(&store),
            graph,
            Arc::new(PacerRegistry::new(self.pacer.clone(), slots)),
            Arc::clone(&self.rate_card),
            self.config.clone(),
        );
        match &self.sms_route {
            Some(route) => {
                let (channel, inbound) = SmsChannel::start(route.clone());
                tokio::spawn(sms::run_inbox_with_events(
                    store,
                    route.clone(),
                    OptOutWords::default(),
                    inbound,
                    self.config.recipient_events,
                ));
                engine.with_sms(Arc::new(channel))
            }
            None => engine,
        }
    }
}
