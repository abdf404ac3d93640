//! What herald tells its operators: Prometheus metrics (names and labels defined in one place)
//! and structured logs.

pub mod log_limit;
pub mod logging;
pub mod metrics;
pub mod redact;
