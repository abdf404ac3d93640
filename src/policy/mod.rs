//! Pure decisions, no I/O: what an answer from Meta means ([`classify`]) and what to do next
//! ([`next_step`]), whether a recipient may be sent ([`gate`]), when SMS stands in for
//! WhatsApp ([`fallback`]), how long to wait before a retry ([`backoff`]), how a number's rate
//! adapts ([`adaptive`]), what a message costs ([`cost`]) and how many SMS a text takes
//! ([`segments`]) and which replies are opt-outs ([`opt_out`]), whether the customer-service window is open
//! ([`window`]), and which inbound message is an opt-in ([`optin`]). Each is a plain function over
//! plain types, tested without a network. Which message a conversion is credited to:
//! [`attribution`]. How long personal data is kept: [`retention`]. Which role may do what:
//! [`access`].

pub mod access;
pub mod adaptive;
pub mod attribution;
pub mod backoff;
pub mod billing;
pub mod classify;
pub mod cost;
pub mod fallback;
pub mod follow_up;
pub mod gate;
pub mod next_step;
pub mod opt_out;
pub mod optin;
pub mod recipient_events;
pub mod retention;
pub mod segments;
pub mod window;
