//! Herald's vocabulary: checked types created once at the edge (phone numbers, ids, keys,
//! templates, channels), the campaign job as campaign systems publish it, the outcome every idempotency
//! key ends with, and the facts the store keeps (senders, templates, consents, campaigns,
//! delivery statuses, durable timers). Nothing here does I/O.

pub mod access;
pub mod campaign;
pub mod channel;
pub mod clock;
pub mod consent;
pub mod conversion;
pub mod delivery;
pub mod ids;
pub mod inbound;
pub mod job;
pub mod outcome;
pub mod phone;
pub mod recipient_event;
pub mod sender;
pub mod strict_json;
pub mod timer;

pub use access::{Actor, ApiToken, AuditEntry, AuditRecord, Role, TokenName, TokenSecret};
pub use campaign::{Budget, BudgetCharge, Campaign, CampaignState};
pub use channel::{ChannelKind, FallbackRule, FallbackTrigger};
pub use clock::Clock;
pub use consent::{Consent, ConsentState};
pub use conversion::{Conversion, ConversionError, ConversionSummary, ConversionTally};
pub use delivery::{DeliveryUpdate, SmsReceiptUpdate};
pub use ids::{CampaignId, IdempotencyKey, JobId, SenderId};
pub use inbound::{InboundMessage, OptInKeyword, ServiceWindow};
pub use job::{FollowUpRule, Job, JobError, Reached, Recipient, SmsVersion, TemplateRef};
pub use outcome::{Category, Outcome, SkipReason};
pub use phone::{PhoneNumber, mask};
pub use recipient_event::{
    EventFacts, EventOptions, MessageRole, NewRecipientEvent, RecipientEvent, RecipientState,
};
pub use sender::{Sender, Template};
pub use timer::DueTimer;
