//! Customer-service windows (reference §8) and what they make free (§7): a customer who writes
//! opens a 24 h window for their conversation with that business number, in which free-form
//! ("session") messages may be sent and service messages and utility templates are free; a
//! message from a click-to-WhatsApp ad opens a 72 h free entry point in which templates are free
//! too. Pure arithmetic on the simulated clock, and the map that `inbound` fills and `send` asks.

use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

/// How long a customer's message keeps the window open, in simulated seconds.
pub const SERVICE_WINDOW_SECS: u64 = 24 * 60 * 60;
/// How long a message from a click-to-WhatsApp ad keeps it open, and free: the free entry point.
pub const FREE_ENTRY_WINDOW_SECS: u64 = 72 * 60 * 60;

/// One conversation's window: until when it is open, and until when it is a free entry point
/// (simulated Unix seconds; 0 = never).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Window {
    open_until: u64,
    free_entry_until: u64,
}

/// Where a conversation stands at a given moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InWindow {
    /// Only templates may be sent; they are billed.
    Closed,
    /// The customer wrote within 24 h: anything may be sent.
    Service,
    /// The customer came from an ad within 72 h: anything may be sent, templates free too.
    FreeEntry,
}

impl InWindow {
    pub fn is_open(self) -> bool {
        self != Self::Closed
    }
}

impl Window {
    /// The window once the customer writes at `now`: open for 24 h from now (72 h and a free
    /// entry point when the message came from an ad), never shorter than it already was.
    pub fn after_inbound(self, now: u64, referral: bool) -> Self {
        let open_for = if referral {
            FREE_ENTRY_WINDOW_SECS
        } else {
            SERVICE_WINDOW_SECS
        };
        let until = now.saturating_add(open_for);
        Self {
            open_until: self.open_until.max(until),
            free_entry_until: if referral {
                self.free_entry_until.max(until)
            } else {
                self.free_entry_until
            },
        }
    }

    /// The window at `now`; each bound is exclusive (at exactly 24 h it has closed).
    pub fn at(self, now: u64) -> InWindow {
        if now < self.free_entry_until {
            InWindow::FreeEntry
        } else if now < self.open_until {
            InWindow::Service
        } else {
            InWindow::Closed
        }
    }
}

/// What a message costs, as its `sent` and `delivered` statuses report it in `pricing`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Price {
    pub billable: bool,
    /// `regular`, `free_customer_service` or `free_entry_point`.
    pub kind: &'static str,
    /// The template's category, `service` for a free-form message, `referral_conversion` in a
    /// free entry point.
    pub category: &'static str,
}

/// What was sent, as far as its price goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// A template of this pricing category (`marketing`, `utility`, …, `marketing_lite`).
    Template(&'static str),
    /// A free-form message; only ever sent inside a window.
    Session,
}

/// Meta's per-message pricing in and out of the windows: free-form messages are free service
/// messages, templates are free in a free entry point and utility templates in any window;
/// everything else is billed at its category.
pub fn price(sent: Sent, window: InWindow) -> Price {
    const fn free(kind: &'static str, category: &'static str) -> Price {
        Price {
            billable: false,
            kind,
            category,
        }
    }
    match (sent, window) {
        (Sent::Session, _) => free("free_customer_service", "service"),
        (Sent::Template(_), InWindow::FreeEntry) => free("free_entry_point", "referral_conversion"),
        (Sent::Template("utility"), InWindow::Service) => free("free_customer_service", "utility"),
        (Sent::Template(category), _) => Price {
            billable: true,
            kind: "regular",
            category,
        },
    }
}

/// The windows customers opened, by business number and then customer (`wa_id` digits), so a
/// lookup borrows its keys. Most runs never post an inbound message: `any` lets the send path
/// skip the lock entirely then.
#[derive(Debug, Default)]
pub struct Windows {
    any: AtomicBool,
    open: RwLock<HashMap<String, HashMap<String, Window>>>,
}

impl Windows {
    /// Where the conversation of `phone_number_id` with `customer` stands at `now`.
    pub fn at(&self, phone_number_id: &str, customer: &str, now: u64) -> InWindow {
        if !self.any.load(Relaxed) {
            return InWindow::Closed;
        }
        self.open
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(phone_number_id)
            .and_then(|customers| customers.get(customer))
            .map_or(InWindow::Closed, |window| window.at(now))
    }

    /// The customer wrote at `now`: opens or extends their window.
    pub fn open(&self, phone_number_id: &str, customer: &str, now: u64, referral: bool) {
        let mut open = self.open.write().unwrap_or_else(|e| e.into_inner());
        let window = open
            .entry(phone_number_id.to_owned())
            .or_default()
            .entry(customer.to_owned())
            .or_default();
        *window = window.after_inbound(now, referral);
        // Under the lock, so a concurrent `close` cannot clear the flag after this insert.
        self.any.store(true, Relaxed);
    }

    /// Closes the windows of one customer, of one business number, of both or (with neither)
    /// all, and says how many were open at `now`.
    pub fn close(&self, phone_number_id: Option<&str>, customer: Option<&str>, now: u64) -> usize {
        let mut open = self.open.write().unwrap_or_else(|e| e.into_inner());
        let mut closed = 0;
        open.retain(|number, customers| {
            if phone_number_id.is_some_and(|id| id != number) {
                return true;
            }
            customers.retain(|who, window| {
                let matches = customer.is_none_or(|c| c == who);
                if matches && window.at(now).is_open() {
                    closed += 1;
                }
                !matches
            });
            !customers.is_empty()
        });
        if open.is_empty() {
            self.any.store(false, Relaxed);
        }
        closed
    }

    /// Forgets every window (`/__sim/reset`).
    pub fn clear(&self) {
        let mut open = self.open.write().unwrap_or_else(|e| e.into_inner());
        open.clear();
        self.any.store(false, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: u64 = 1_763_726_500;
    const HOUR: u64 = 60 * 60;

    #[test]
    fn a_customer_message_opens_the_window_for_exactly_24_hours() {
        let window = Window::default().after_inbound(T, false);
        assert_eq!(Window::default().at(T), InWindow::Closed);
        assert_eq!(window.at(T), InWindow::Service);
        assert_eq!(window.at(T + 24 * HOUR - 1), InWindow::Service);
        assert_eq!(window.at(T + 24 * HOUR), InWindow::Closed);
    }

    #[test]
    fn a_message_from_an_ad_opens_a_free_entry_point_for_72_hours() {
        let window = Window::default().after_inbound(T, true);
        assert_eq!(window.at(T + 24 * HOUR), InWindow::FreeEntry);
        assert_eq!(window.at(T + 72 * HOUR - 1), InWindow::FreeEntry);
        assert_eq!(window.at(T + 72 * HOUR), InWindow::Closed);
    }

    #[test]
    fn each_message_extends_the_window_and_never_shortens_it() {
        let window = Window::default().after_inbound(T, false);
        let later = window.after_inbound(T + 20 * HOUR, false);
        assert_eq!(later.at(T + 43 * HOUR), InWindow::Service);
        assert_eq!(later.at(T + 44 * HOUR), InWindow::Closed);
        // A plain message inside a free entry point keeps the free entry point.
        let ad = Window::default().after_inbound(T, true);
        let plain = ad.after_inbound(T + HOUR, false);
        assert_eq!(plain, ad);
        // An ad message after a plain one makes it a free entry point from then on.
        let both = window.after_inbound(T + 10 * HOUR, true);
        assert_eq!(both.at(T + 10 * HOUR), InWindow::FreeEntry);
        assert_eq!(both.at(T + 82 * HOUR - 1), InWindow::FreeEntry);
        assert_eq!(both.at(T + 82 * HOUR), InWindow::Closed);
    }

    #[test]
    fn pricing_follows_the_window_and_the_category() {
        let billed = |category| Price {
            billable: true,
            kind: "regular",
            category,
        };
        let free = |kind, category| Price {
            billable: false,
            kind,
            category,
        };
        let cases = [
            (
                Sent::Template("marketing"),
                InWindow::Closed,
                billed("marketing"),
            ),
            (
                Sent::Template("utility"),
                InWindow::Closed,
                billed("utility"),
            ),
            (
                Sent::Template("marketing"),
                InWindow::Service,
                billed("marketing"),
            ),
            (
                Sent::Template("authentication"),
                InWindow::Service,
                billed("authentication"),
            ),
            (
                Sent::Template("utility"),
                InWindow::Service,
                free("free_customer_service", "utility"),
            ),
            (
                Sent::Template("marketing"),
                InWindow::FreeEntry,
                free("free_entry_point", "referral_conversion"),
            ),
            (
                Sent::Template("marketing_lite"),
                InWindow::FreeEntry,
                free("free_entry_point", "referral_conversion"),
            ),
            (
                Sent::Session,
                InWindow::Service,
                free("free_customer_service", "service"),
            ),
            (
                Sent::Session,
                InWindow::FreeEntry,
                free("free_customer_service", "service"),
            ),
        ];
        for (sent, window, want) in cases {
            assert_eq!(price(sent, window), want, "{sent:?} in {window:?}");
        }
    }

    #[test]
    fn windows_are_kept_per_business_number_and_customer() {
        let windows = Windows::default();
        assert_eq!(windows.at("1", "491", T), InWindow::Closed);
        windows.open("1", "491", T, false);
        windows.open("2", "492", T, true);
        assert_eq!(windows.at("1", "491", T + HOUR), InWindow::Service);
        assert_eq!(windows.at("2", "491", T + HOUR), InWindow::Closed);
        assert_eq!(windows.at("1", "492", T + HOUR), InWindow::Closed);
        assert_eq!(windows.at("2", "492", T + 30 * HOUR), InWindow::FreeEntry);
        assert_eq!(windows.at("1", "491", T + 30 * HOUR), InWindow::Closed);
    }

    #[test]
    fn closing_takes_one_customer_one_number_or_all() {
        let windows = Windows::default();
        for (number, customer) in [("1", "491"), ("1", "492"), ("2", "491"), ("2", "493")] {
            windows.open(number, customer, T, false);
        }
        assert_eq!(windows.close(Some("1"), Some("491"), T), 1);
        assert_eq!(windows.at("1", "491", T), InWindow::Closed);
        assert_eq!(windows.at("2", "491", T), InWindow::Service);
        assert_eq!(windows.close(None, Some("491"), T), 1);
        assert_eq!(windows.at("2", "491", T), InWindow::Closed);
        assert_eq!(windows.close(Some("2"), None, T), 1);
        assert_eq!(windows.at("1", "492", T), InWindow::Service);
        // Only windows still open count as closed.
        assert_eq!(windows.close(None, None, T + 25 * HOUR), 0);
        assert_eq!(windows.at("1", "492", T), InWindow::Closed);
        assert!(!windows.any.load(Relaxed), "nothing left to look up");
        windows.open("1", "491", T, false);
        windows.clear();
        assert_eq!(windows.at("1", "491", T), InWindow::Closed);
    }
}
