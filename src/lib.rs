//! herald: a high-throughput WhatsApp template dispatcher.
//!
//! The folders follow the pipeline: [`domain`] (checked types and the job format), [`policy`]
//! (pure decisions: gate, error classification, cost, back-off), [`pacing`] (rate limiters),
//! [`graph`] (the Cloud API client), [`channel`] (the seam every channel implements),
//! [`engine`] (claim → gate → mark → pace → send → record, one file per stage),
//! [`store`] (SQLite / Postgres ledger), [`simulator`] (a local Cloud API), [`telemetry`]
//! (metrics and logs), [`amqp`] (RabbitMQ workers and publishing), [`http`] (webhooks, admin
//! API, probes), [`app`] (what every command shares: errors, settings) and [`cli`] (the
//! `herald` command, on top of everything).

pub mod amqp;
pub mod app;
pub mod channel;
pub mod cli;
pub mod crm;
pub mod demo;
pub mod domain;
pub mod engine;
pub mod graph;
pub mod http;
pub mod optin;
pub mod pacing;
pub mod policy;
pub mod signal;
pub mod simulator;
pub mod store;
pub mod telemetry;
