//! Pacing: how fast herald may send. One [`SenderPacer`] per business number, shared by every
//! job in the process, spaces sends evenly at the number's rate (a `governor` bucket with a
//! burst of one, so no one-second window can exceed the rate) and adapts it when Meta
//! throttles (multiplicative decrease on 130429, additive recovery). A [`PairLimiter`] keeps
//! herald under Meta's per-recipient pair rate. With many workers, slots come from a shared
//! lease in the store (see [`SlotSource`]) so the limit holds globally.

mod global;
mod pair;
mod sender;

pub use global::LeasedSlots;
pub use pair::PairLimiter;
pub use sender::{PacerConfig, PacerRegistry, SenderPacer, SlotSource};
