//! Process metrics, rendered as Prometheus text on the HTTP listener's `/metrics`.
//!
//! Lock-free counters and fixed-bucket histograms; recording is a few atomic adds.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

const LATENCY_BUCKETS_MS: [f64; 14] =
    [0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0];

/// A latency histogram in milliseconds.
#[derive(Default)]
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS_MS.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let ms = d.as_secs_f64() * 1000.0;
        for (i, le) in LATENCY_BUCKETS_MS.iter().enumerate() {
            if ms <= *le {
                self.buckets[i].fetch_add(1, Relaxed);
            }
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_us.fetch_add(d.as_micros() as u64, Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (i, le) in LATENCY_BUCKETS_MS.iter().enumerate() {
            let _ = writeln!(out, "{name}_bucket{{le=\"{}\"}} {}", le / 1000.0, self.buckets[i].load(Relaxed));
        }
        let count = self.count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {}", self.sum_us.load(Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// Everything Skiff counts.
#[derive(Default)]
pub struct Metrics {
    pub requests: AtomicU64,
    pub request_errors: AtomicU64,
    pub connections_open: AtomicU64,
    pub connections_total: AtomicU64,
    pub produced_bytes: AtomicU64,
    pub produced_batches: AtomicU64,
    pub fetched_bytes: AtomicU64,
    flushes_size: AtomicU64,
    flushes_interval: AtomicU64,
    flushes_shutdown: AtomicU64,
    flushed_bytes: AtomicU64,
    tail_hits: AtomicU64,
    tail_misses: AtomicU64,
    put_latency: Histogram,
    commit_latency: Histogram,
}

impl Metrics {
    pub fn flush(&self, reason: &str, bytes: usize) {
        match reason {
            "size" => &self.flushes_size,
            "shutdown" => &self.flushes_shutdown,
            _ => &self.flushes_interval,
        }
        .fetch_add(1, Relaxed);
        self.flushed_bytes.fetch_add(bytes as u64, Relaxed);
    }
    pub fn put_latency(&self, d: Duration) {
        self.put_latency.observe(d);
    }
    /// Time from the first byte entering a flush to its commit being applied.
    pub fn commit_latency(&self, d: Duration) {
        self.commit_latency.observe(d);
    }
    pub fn tail_read(&self, hit: bool) {
        if hit { &self.tail_hits } else { &self.tail_misses }.fetch_add(1, Relaxed);
    }

    /// Prometheus text exposition. `extra` adds gauges computed by the caller.
    pub fn render(&self, extra: &[(&str, &str, f64)]) -> String {
        let mut out = String::with_capacity(4096);
        let counter = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        };
        counter(&mut out, "skiff_requests_total", "Kafka requests handled.", self.requests.load(Relaxed));
        counter(&mut out, "skiff_request_errors_total", "Frames refused (undecodable, unsupported).", self.request_errors.load(Relaxed));
        counter(&mut out, "skiff_connections_total", "Connections accepted.", self.connections_total.load(Relaxed));
        counter(&mut out, "skiff_produced_bytes_total", "Record-batch bytes accepted.", self.produced_bytes.load(Relaxed));
        counter(&mut out, "skiff_produced_batches_total", "Record batches accepted.", self.produced_batches.load(Relaxed));
        counter(&mut out, "skiff_fetched_bytes_total", "Record-batch bytes returned to consumers.", self.fetched_bytes.load(Relaxed));
        counter(&mut out, "skiff_flushed_bytes_total", "Bytes flushed from the write-ahead buffer.", self.flushed_bytes.load(Relaxed));
        let _ = writeln!(out, "# HELP skiff_flushes_total Write-ahead buffer flushes by reason.\n# TYPE skiff_flushes_total counter");
        let _ = writeln!(out, "skiff_flushes_total{{reason=\"size\"}} {}", self.flushes_size.load(Relaxed));
        let _ = writeln!(out, "skiff_flushes_total{{reason=\"interval\"}} {}", self.flushes_interval.load(Relaxed));
        let _ = writeln!(out, "skiff_flushes_total{{reason=\"shutdown\"}} {}", self.flushes_shutdown.load(Relaxed));
        let _ = writeln!(out, "# HELP skiff_tail_cache_reads_total Chunk reads by tail-cache outcome.\n# TYPE skiff_tail_cache_reads_total counter");
        let _ = writeln!(out, "skiff_tail_cache_reads_total{{result=\"hit\"}} {}", self.tail_hits.load(Relaxed));
        let _ = writeln!(out, "skiff_tail_cache_reads_total{{result=\"miss\"}} {}", self.tail_misses.load(Relaxed));
        let _ = writeln!(out, "# HELP skiff_connections_open Open client connections.\n# TYPE skiff_connections_open gauge\nskiff_connections_open {}", self.connections_open.load(Relaxed));
        for (name, help, v) in extra {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        self.put_latency.render(&mut out, "skiff_object_put_seconds", "Object PUT latency (with retries).");
        self.commit_latency.render(&mut out, "skiff_flush_commit_seconds", "First byte buffered to commit applied.");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.flush("size", 10);
        m.put_latency(Duration::from_millis(3));
        let text = m.render(&[("skiff_buffer_bytes", "Buffered bytes.", 5.0)]);
        assert!(text.contains("skiff_flushes_total{reason=\"size\"} 1"));
        assert!(text.contains("skiff_object_put_seconds_bucket{le=\"0.005\"} 1"));
        assert!(text.contains("skiff_buffer_bytes 5"));
    }
}
