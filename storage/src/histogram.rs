//! A lock-free latency histogram with fixed buckets, rendered by the broker's `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds of the buckets, in seconds (Prometheus `le`).
pub const LATENCY_BUCKETS_SECONDS: [f64; 15] =
    [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0];

/// Cumulative counts per bucket, plus count and sum.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    buckets: [AtomicU64; LATENCY_BUCKETS_SECONDS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl LatencyHistogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        for (i, le) in LATENCY_BUCKETS_SECONDS.iter().enumerate() {
            if secs <= *le {
                self.buckets[i].fetch_add(1, Relaxed);
            }
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_micros.fetch_add(u64::try_from(d.as_micros()).unwrap_or(u64::MAX), Relaxed);
    }

    /// (upper bound in seconds, cumulative count) per bucket.
    pub fn buckets(&self) -> Vec<(f64, u64)> {
        LATENCY_BUCKETS_SECONDS.iter().zip(&self.buckets).map(|(le, c)| (*le, c.load(Relaxed))).collect()
    }

    pub fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }

    pub fn sum_seconds(&self) -> f64 {
        self.sum_micros.load(Relaxed) as f64 / 1e6
    }

    /// Prometheus text for this histogram; `labels` like `op="put"` or empty.
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        use std::fmt::Write;
        let sep = if labels.is_empty() { "" } else { "," };
        for (le, c) in self.buckets() {
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {c}");
        }
        let n = self.count();
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {n}");
        let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum_seconds());
        let _ = writeln!(out, "{name}_count{braces} {n}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cumulative_buckets() {
        let h = LatencyHistogram::default();
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(60));
        let b = h.buckets();
        assert_eq!(b[2], (0.002, 0));
        assert_eq!(b[3], (0.005, 1));
        assert_eq!(h.count(), 2);
        let mut s = String::new();
        h.render(&mut s, "x_seconds", "op=\"put\"");
        assert!(s.contains("x_seconds_bucket{op=\"put\",le=\"+Inf\"} 2"));
        assert!(s.contains("x_seconds_count{op=\"put\"} 2"));
    }
}
