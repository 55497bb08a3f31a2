//! The gate for INFO lines about what a client was refused (`not_served.rs`,
//! `rejected_configs.rs`): each key (who asked, and what) is logged the first time only, so a
//! client retrying the same request does not grow the log, and at most
//! [`MAX_LINES_PER_MINUTE`] lines are written per minute whatever the number of clients.
//!
//! Bounds: at most [`MAX_REMEMBERED`] keys are remembered (the oldest is forgotten first, so a
//! key seen again long after may be logged once more); the lines suppressed by the per-minute
//! cap are counted and reported with the next line written.

use std::collections::{HashSet, VecDeque};
use std::hash::Hash;
use std::sync::Mutex;

/// Keys remembered as already logged.
pub const MAX_REMEMBERED: usize = 4096;
/// Log lines per minute across all keys.
pub const MAX_LINES_PER_MINUTE: u32 = 60;

struct Seen<K> {
    keys: HashSet<K>,
    order: VecDeque<K>,
    window_start_ms: i64,
    lines_in_window: u32,
    suppressed: u64,
}

/// Once per key, at most [`MAX_LINES_PER_MINUTE`] a minute.
pub struct OncePerKey<K> {
    seen: Mutex<Seen<K>>,
}

impl<K> Default for OncePerKey<K> {
    fn default() -> Self {
        let seen = Seen {
            keys: HashSet::new(),
            order: VecDeque::new(),
            window_start_ms: 0,
            lines_in_window: 0,
            suppressed: 0,
        };
        Self { seen: Mutex::new(seen) }
    }
}

impl<K: Eq + Hash + Clone> OncePerKey<K> {
    /// Whether a line for `key` may be written at wall time `now_ms`: `Some(n)` with the number
    /// of lines the cap suppressed since the last one written, `None` if `key` was logged
    /// before or the cap is reached.
    pub fn admit(&self, now_ms: i64, key: K) -> Option<u64> {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.keys.contains(&key) {
            return None;
        }
        if now_ms.saturating_sub(seen.window_start_ms) >= 60_000 {
            seen.window_start_ms = now_ms;
            seen.lines_in_window = 0;
        }
        if seen.lines_in_window >= MAX_LINES_PER_MINUTE {
            // Not remembered: once the cap lifts, this key is logged after all.
            seen.suppressed += 1;
            return None;
        }
        seen.lines_in_window += 1;
        if seen.order.len() >= MAX_REMEMBERED
            && let Some(oldest) = seen.order.pop_front()
        {
            seen.keys.remove(&oldest);
        }
        seen.keys.insert(key.clone());
        seen.order.push_back(key);
        Some(std::mem::take(&mut seen.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn once_per_key() {
        let g = OncePerKey::default();
        assert_eq!(g.admit(0, "a"), Some(0));
        assert_eq!(g.admit(1, "a"), None, "second time is quiet");
        assert_eq!(g.admit(2, "b"), Some(0), "another key is logged");
    }

    #[test]
    fn lines_per_minute_are_capped_and_resume() {
        let g = OncePerKey::default();
        for i in 0..MAX_LINES_PER_MINUTE {
            assert_eq!(g.admit(1_000, format!("c{i}")), Some(0));
        }
        assert_eq!(g.admit(2_000, "late".to_string()), None, "over the cap");
        assert_eq!(g.admit(2_500, "later".to_string()), None, "over the cap");
        assert_eq!(g.admit(61_000, "late".to_string()), Some(2), "logged once the minute has passed, with the count");
    }

    #[test]
    fn memory_is_bounded() {
        let g = OncePerKey::default();
        for i in 0..(MAX_REMEMBERED + 10) {
            // A new minute for every line so the cap never applies.
            g.admit(i as i64 * 60_000, i);
        }
        let seen = g.seen.lock().expect("lock");
        assert_eq!(seen.keys.len(), MAX_REMEMBERED);
        assert_eq!(seen.order.len(), MAX_REMEMBERED);
        assert!(!seen.keys.contains(&0), "the oldest was forgotten");
    }
}
