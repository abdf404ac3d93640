//! The SMSC's bound sessions: who may bind (the bind limit per account) and which session a
//! receipt or MO message goes to. smpp34 asks about a bind before the session exists and hands
//! over the session (`ESME`) only once it is bound, so an accepted bind first holds a
//! reservation that the session then fills.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use smpp34::server::ESME;

/// How long an accepted bind counts against the limit before its session shows up; past it
/// the bind is taken to have died before its response went out (smpp34 then never reports it).
const RESERVATION: Duration = Duration::from_secs(10);

#[derive(Default)]
pub struct Sessions {
    by_id: Mutex<HashMap<String, Session>>,
}

struct Session {
    system_id: String,
    /// `None` between the accepted bind and the bound session.
    esme: Option<Arc<ESME>>,
    reserved_at: Instant,
}

impl Session {
    fn holds_a_place(&self, now: Instant) -> bool {
        self.esme.is_some() || now.duration_since(self.reserved_at) < RESERVATION
    }
}

impl Sessions {
    /// Takes a place for a bind about to be accepted; `false` when the account already holds
    /// `max` sessions (0 = no limit).
    pub fn reserve(&self, session_id: &str, system_id: &str, max: u32, now: Instant) -> bool {
        let mut sessions = self.lock();
        sessions.retain(|_, s| s.holds_a_place(now));
        let held = sessions
            .values()
            .filter(|s| s.system_id == system_id)
            .count();
        if max > 0 && held >= max as usize {
            return false;
        }
        sessions.insert(
            session_id.to_owned(),
            Session {
                system_id: system_id.to_owned(),
                esme: None,
                reserved_at: now,
            },
        );
        true
    }

    /// The session of an accepted bind is ready for traffic.
    pub fn bound(&self, esme: ESME) {
        let mut sessions = self.lock();
        let session = sessions
            .entry(esme.session_id.clone())
            .or_insert_with(|| Session {
                system_id: esme.system_id.clone(),
                esme: None,
                reserved_at: Instant::now(),
            });
        session.esme = Some(Arc::new(esme));
    }

    pub fn unbound(&self, session_id: &str) {
        self.lock().remove(session_id);
    }

    /// A session of `system_id` that can take a `deliver_sm`: `preferred` when it still can,
    /// otherwise any (a transmitter-only bind never can).
    pub fn receiver(&self, system_id: &str, preferred: Option<&str>) -> Option<Arc<ESME>> {
        let sessions = self.lock();
        let usable = |s: &Session| {
            s.esme
                .as_ref()
                .filter(|e| e.can_receive && s.system_id == system_id)
                .cloned()
        };
        preferred
            .and_then(|id| sessions.get(id))
            .and_then(usable)
            .or_else(|| sessions.values().find_map(usable))
    }

    /// Sessions bound now.
    pub fn bound_count(&self) -> usize {
        self.lock().values().filter(|s| s.esme.is_some()).count()
    }

    /// Forgets every session and hands back the bound ones (to unbind them at shutdown).
    pub fn take_all(&self) -> Vec<Arc<ESME>> {
        self.lock().drain().filter_map(|(_, s)| s.esme).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.by_id.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bind_limit_counts_reservations_until_they_lapse() {
        let sessions = Sessions::default();
        let now = Instant::now();
        assert!(sessions.reserve("a", "herald", 2, now));
        assert!(sessions.reserve("b", "herald", 2, now));
        assert!(!sessions.reserve("c", "herald", 2, now));
        // Another account has its own limit; 0 is no limit.
        assert!(sessions.reserve("d", "other", 2, now));
        assert!(sessions.reserve("e", "other", 0, now));
        sessions.unbound("a");
        assert!(sessions.reserve("c", "herald", 2, now));
        // A reservation whose session never came lapses.
        assert!(sessions.reserve("f", "herald", 2, now + RESERVATION));
        assert_eq!(sessions.bound_count(), 0);
        assert!(sessions.receiver("herald", None).is_none());
    }
}
