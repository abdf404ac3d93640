//! The dispatch engine: runs one checked job through claim → gate → pace → send → record.
//! The same engine serves `herald send`, `herald demo` and the RabbitMQ workers; only where
//! jobs come from and what happens to deferred work differs.

mod dispatch;
mod mark;
mod report;

pub use dispatch::{Engine, EngineConfig, EngineError, Progress, RunControl};
pub use report::{JobReport, JobRun, StopCause};
