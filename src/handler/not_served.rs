//! Requests for what Skiff does not serve: an API or version it does not advertise, transactions
//! (not built yet), and the like. Each is answered at once with the protocol's non-retriable
//! error (never a retriable one that a client would repeat until its own timeout), and the
//! broker says why at INFO the first time per client, so an operator can tell a user what failed
//! without the log growing with every retry.
//!
//! Bounds: at most [`MAX_REMEMBERED`] (client, feature) pairs are remembered (the oldest is
//! forgotten first, so a client seen again long after may be logged once more), and at most
//! [`MAX_LINES_PER_MINUTE`] lines are written per minute whatever the number of clients; the
//! lines suppressed by that cap are counted in the next line written and in `/metrics`.

use std::collections::{HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use tracing::info;

/// (client id, client address, feature) pairs remembered as already logged.
pub const MAX_REMEMBERED: usize = 4096;
/// Log lines per minute across all clients.
pub const MAX_LINES_PER_MINUTE: u32 = 60;

/// Who asked: the request header's client id (may be empty) and the connection's address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Asker {
    pub client_id: String,
    pub ip: IpAddr,
}

#[derive(Default)]
struct Seen {
    keys: HashSet<(Asker, String)>,
    order: VecDeque<(Asker, String)>,
    window_start_ms: i64,
    lines_in_window: u32,
    suppressed: u64,
}

/// The per-client first-time log of refused features.
#[derive(Default)]
pub struct NotServed {
    seen: Mutex<Seen>,
    /// Requests refused as not served, logged or not.
    refused: AtomicU64,
}

impl NotServed {
    /// Records that `asker` was refused `feature` (a short stable name, e.g. "transactions" or
    /// "Produce v2") because of `why`, at wall time `now_ms`. Logs at INFO unless this pair was
    /// logged before or the per-minute cap is reached; returns whether it logged.
    pub fn report(&self, now_ms: i64, asker: &Asker, feature: &str, why: &str) -> bool {
        self.refused.fetch_add(1, Relaxed);
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let key = (asker.clone(), feature.to_string());
        if seen.keys.contains(&key) {
            return false;
        }
        if now_ms.saturating_sub(seen.window_start_ms) >= 60_000 {
            seen.window_start_ms = now_ms;
            seen.lines_in_window = 0;
        }
        if seen.lines_in_window >= MAX_LINES_PER_MINUTE {
            // Not remembered: once the cap lifts, this client is logged after all.
            seen.suppressed += 1;
            return false;
        }
        seen.lines_in_window += 1;
        if seen.order.len() >= MAX_REMEMBERED
            && let Some(oldest) = seen.order.pop_front()
        {
            seen.keys.remove(&oldest);
        }
        seen.keys.insert(key.clone());
        seen.order.push_back(key);
        let suppressed = std::mem::take(&mut seen.suppressed);
        drop(seen);
        info!(
            client_id = %asker.client_id,
            client = %asker.ip,
            feature,
            suppressed_before = suppressed,
            "refused a request for something Skiff does not serve: {why} (logged once per client)"
        );
        true
    }

    /// Requests refused as not served since start.
    pub fn refused_total(&self) -> u64 {
        self.refused.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asker(id: &str) -> Asker {
        Asker { client_id: id.into(), ip: IpAddr::from([127, 0, 0, 1]) }
    }

    #[test]
    fn logs_once_per_client_and_feature() {
        let n = NotServed::default();
        assert!(n.report(0, &asker("a"), "transactions", "why"));
        assert!(!n.report(1, &asker("a"), "transactions", "why"), "second time is quiet");
        assert!(n.report(2, &asker("a"), "api", "why"), "another feature is logged");
        assert!(n.report(3, &asker("b"), "transactions", "why"), "another client is logged");
        assert_eq!(n.refused_total(), 4);
    }

    #[test]
    fn lines_per_minute_are_capped_and_resume() {
        let n = NotServed::default();
        for i in 0..MAX_LINES_PER_MINUTE {
            assert!(n.report(1_000, &asker(&format!("c{i}")), "f", "why"));
        }
        assert!(!n.report(2_000, &asker("late"), "f", "why"), "over the cap");
        assert!(n.report(61_000, &asker("late"), "f", "why"), "logged once the minute has passed");
    }

    #[test]
    fn memory_is_bounded() {
        let n = NotServed::default();
        for i in 0..(MAX_REMEMBERED + 10) {
            // A new minute for every line so the cap never applies.
            n.report(i as i64 * 60_000, &asker(&format!("c{i}")), "f", "why");
        }
        let seen = n.seen.lock().expect("lock");
        assert_eq!(seen.keys.len(), MAX_REMEMBERED);
        assert_eq!(seen.order.len(), MAX_REMEMBERED);
        assert!(!seen.keys.contains(&(asker("c0"), "f".to_string())), "the oldest was forgotten");
    }
}
