//! The one place an engine is put together for the commands that send (`herald send`,
//! `herald worker`, `herald demo`): pacers, rate card and bounds from the flattened settings,
//! around `Engine::new`.

use std::sync::Arc;

use clap::Args;

use super::{CliError, InflightOpts, PacingOpts, RateCardOpts, SmsOpts};
use crate::engine::{Engine, EngineConfig};
use crate::graph::GraphClient;
use crate::pacing::{LeasedSlots, PacerConfig, PacerRegistry, SlotSource};
use crate::policy::cost::RateCard;
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
}

impl EngineOpts {
    /// Rejects settings that cannot work, before anything is read or opened.
    pub fn check(&self) -> Result<(), CliError> {
        self.pacing.check()?;
        self.inflight.check()?;
        self.sms.check()
    }

    /// Checks the settings and loads the rate card.
    pub fn setup(&self) -> Result<EngineSetup, CliError> {
        self.check()?;
        let mut setup = EngineSetup::new(self.rate_card.load()?);
        setup.pacer.headroom = self.pacing.headroom;
        setup.config.max_inflight_per_sender = self.inflight.max_inflight;
        setup.config.sms_max_parts = self.sms.sms_max_parts;
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
}

impl EngineSetup {
    /// The defaults with this rate card: local pacing, the engine's default bounds.
    pub fn new(rate_card: RateCard) -> Self {
        Self {
            pacer: PacerConfig::default(),
            shared_rates: false,
            rate_card: Arc::new(rate_card),
            config: EngineConfig::default(),
        }
    }

    pub fn build(&self, store: Arc<dyn Store>, graph: GraphClient) -> Engine {
        let slots = self
            .shared_rates
            .then(|| Arc::new(LeasedSlots::new(Arc::clone(&store))) as Arc<dyn SlotSource>);
        Engine::new(
            store,
            graph,
            Arc::new(PacerRegistry::new(self.pacer.clone(), slots)),
            Arc::clone(&self.rate_card),
            self.config.clone(),
        )
    }
}
