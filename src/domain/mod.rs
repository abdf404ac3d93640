//! Herald's vocabulary: checked types created once at the edge (phone numbers, ids, keys,
//! templates), the campaign job as campaign systems publish it, and the outcome every
//! idempotency key ends with. Nothing here does I/O.

pub mod channel;
pub mod ids;
pub mod job;
pub mod outcome;
pub mod phone;
pub mod strict_json;

pub use channel::ChannelKind;
pub use ids::{CampaignId, IdempotencyKey, JobId, SenderId};
pub use job::{Job, JobError, Recipient, TemplateRef};
pub use outcome::{Category, Outcome, SkipReason};
pub use phone::{PhoneNumber, mask};
