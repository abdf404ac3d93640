//! The customer-service window (reference §8): each message a customer writes to a business
//! number opens — or extends — a 24 h window in which the business may answer with free-form
//! session messages; outside it only templates go out (a session message gets 131047). A
//! message from a click-to-WhatsApp ad opens a 72 h free entry point in which every message is
//! free. Pure arithmetic over instants; the store keeps one [`ServiceWindow`] per (number,
//! customer) and the gate asks [`state`] at send time, since a window can close while a job
//! waits.

use chrono::{DateTime, Duration, Utc};

use crate::domain::inbound::ServiceWindow;

/// How long a customer's message keeps the window open.
pub const SERVICE_WINDOW: Duration = Duration::hours(24);
/// How long a click-to-WhatsApp ad's message keeps every message free.
pub const FREE_ENTRY_POINT: Duration = Duration::hours(72);
/// A window closer to its end than this counts as closed: the send reaches Meta a moment after
/// the gate decides (pacing, retries), and a session message arriving after the end is refused
/// (131047). A template then goes instead, or the recipient is skipped `window_closed`.
pub const CLOSING_MARGIN: Duration = Duration::seconds(60);

/// When a message counts as written: as Meta reports it, but never later than herald received
/// it — a sender's clock running ahead must not stretch the window past 24 h of herald's time.
/// A message without a timestamp counts from its arrival.
pub fn written_at(reported: Option<DateTime<Utc>>, received: DateTime<Utc>) -> DateTime<Utc> {
    reported.map_or(received, |at| at.min(received))
}

/// The window after a message written at `at` (a referral: from a click-to-WhatsApp ad),
/// given the window before it. Windows only grow: a late redelivery of an old message
/// shortens nothing.
pub fn extend(current: Option<ServiceWindow>, at: DateTime<Utc>, referral: bool) -> ServiceWindow {
    let opened = ServiceWindow {
        open_until: at + SERVICE_WINDOW,
        free_until: referral.then(|| at + FREE_ENTRY_POINT),
    };
    match current {
        None => opened,
        Some(c) => merge(c, opened),
    }
}

/// The later end of each of two windows of one (number, customer).
pub fn merge(a: ServiceWindow, b: ServiceWindow) -> ServiceWindow {
    ServiceWindow {
        open_until: a.open_until.max(b.open_until),
        free_until: a.free_until.max(b.free_until),
    }
}

/// What a window allows at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowState {
    /// Free-form session messages may be sent.
    pub open: bool,
    /// Inside a free entry point: every message is free.
    pub free_entry_point: bool,
}

impl WindowState {
    pub const CLOSED: Self = Self {
        open: false,
        free_entry_point: false,
    };
}

/// The window's state at `now`, with [`CLOSING_MARGIN`] taken off both ends.
pub fn state(window: Option<&ServiceWindow>, now: DateTime<Utc>) -> WindowState {
    let Some(w) = window else {
        return WindowState::CLOSED;
    };
    let until = |end: DateTime<Utc>| now + CLOSING_MARGIN < end;
    WindowState {
        open: until(w.open_until),
        free_entry_point: w.free_until.is_some_and(until),
    }
}

/// Which message a recipient gets, given what the job carries and the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// The free-form session message.
    Session,
    /// The template.
    Template,
    /// Neither: the job has only a session message and the window is closed.
    WindowClosed,
}

/// Open window → the session message (it costs less, or nothing); otherwise the template; a
/// job with only a session message skips those whose window is closed.
pub fn choose(has_session: bool, has_template: bool, state: WindowState) -> Choice {
    match (has_session, has_template, state.open) {
        (true, _, true) => Choice::Session,
        (_, true, _) => Choice::Template,
        _ => Choice::WindowClosed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(h: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 27, 8, 0, 0).unwrap() + Duration::hours(h)
    }

    #[test]
    fn a_message_opens_24_hours_and_closes_at_exactly_24() {
        let w = extend(None, t(0), false);
        assert_eq!(w.open_until, t(24));
        assert_eq!(w.free_until, None);
        assert!(state(Some(&w), t(23)).open);
        assert!(!state(Some(&w), t(24)).open, "exactly 24 h: closed");
        assert!(!state(Some(&w), t(25)).open);
        assert!(!state(None, t(0)).open);
    }

    #[test]
    fn the_margin_closes_the_window_a_minute_early() {
        let w = extend(None, t(0), false);
        let just_before = t(24) - CLOSING_MARGIN - Duration::seconds(1);
        assert!(state(Some(&w), just_before).open);
        assert!(!state(Some(&w), t(24) - CLOSING_MARGIN).open);
    }

    #[test]
    fn a_referral_is_free_for_72_hours_and_open_for_24() {
        let w = extend(None, t(0), true);
        assert_eq!(w.free_until, Some(t(72)));
        let at_30 = state(Some(&w), t(30));
        assert!(!at_30.open, "free-form still needs the 24 h window");
        assert!(at_30.free_entry_point);
        assert!(!state(Some(&w), t(72)).free_entry_point);
    }

    #[test]
    fn later_messages_extend_and_old_redeliveries_shorten_nothing() {
        let w = extend(None, t(0), true);
        let w = extend(Some(w), t(10), false);
        assert_eq!(w.open_until, t(34));
        assert_eq!(w.free_until, Some(t(72)), "the free entry point is kept");
        let redelivered = extend(Some(w), t(-5), false);
        assert_eq!(redelivered, w);
    }

    #[test]
    fn a_clock_ahead_of_herald_counts_from_arrival() {
        let received = t(0);
        assert_eq!(written_at(Some(t(1)), received), received);
        assert_eq!(written_at(Some(t(-2)), received), t(-2));
        assert_eq!(written_at(None, received), received);
        // A message from a phone 2 h ahead keeps the window to 24 h of herald's time.
        let w = extend(None, written_at(Some(t(2)), received), false);
        assert!(!state(Some(&w), t(24)).open);
    }

    #[test]
    fn the_choice_follows_the_window() {
        let open = WindowState {
            open: true,
            free_entry_point: false,
        };
        let closed = WindowState::CLOSED;
        assert_eq!(choose(true, true, open), Choice::Session);
        assert_eq!(choose(true, true, closed), Choice::Template);
        assert_eq!(choose(true, false, open), Choice::Session);
        assert_eq!(choose(true, false, closed), Choice::WindowClosed);
        assert_eq!(choose(false, true, open), Choice::Template);
        assert_eq!(choose(false, true, closed), Choice::Template);
    }

    proptest::proptest! {
        #[test]
        fn windows_never_shrink(a in -500i64..500, b in -500i64..500, ra: bool, rb: bool) {
            let first = extend(None, t(a), ra);
            let both = extend(Some(first), t(b), rb);
            proptest::prop_assert!(both.open_until >= first.open_until);
            proptest::prop_assert!(both.free_until >= first.free_until);
            proptest::prop_assert_eq!(both, extend(Some(extend(None, t(b), rb)), t(a), ra));
        }
    }
}
