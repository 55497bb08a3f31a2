//! Kafka's sampled rate (`SampledStat` + `Rate` in `org.apache.kafka.common.metrics.stats`),
//! the measure every Kafka quota is checked against, with the same window arithmetic, so a
//! client sees the same throttling here as against Kafka.
//!
//! `samples` windows of `window_ms` each; a sample older than `samples × window_ms` is reset.
//! The rate is the sum of the live samples over the elapsed time since the oldest one began,
//! but never over less than `samples - 1` full windows: a new sensor does not measure a huge
//! rate from its first second (which also lets a new client burst up to `(samples - 1) ×
//! window × quota` before its first throttle, as against Kafka). Pure: time comes in.

/// `quota.window.num` and `quota.window.size.seconds` (as milliseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub samples: usize,
    pub window_ms: i64,
}

impl Default for Window {
    /// Kafka's defaults: 11 samples of 1 s.
    fn default() -> Self {
        Self { samples: 11, window_ms: 1000 }
    }
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    start_ms: i64,
    value: f64,
}

/// One sensor's samples.
#[derive(Debug, Clone)]
pub struct Rate {
    samples: Vec<Sample>,
    current: usize,
    /// When it was last recorded: an idle sensor can be dropped once all of its samples expired.
    pub last_record_ms: i64,
}

impl Rate {
    pub fn new(now_ms: i64) -> Self {
        Self { samples: vec![Sample { start_ms: now_ms, value: 0.0 }], current: 0, last_record_ms: now_ms }
    }

    /// Adds `value` at `now_ms` (Kafka's `SampledStat.record`: a complete sample advances to the
    /// next, whose start is aligned to the window grid of the previous one).
    pub fn record(&mut self, w: Window, value: f64, now_ms: i64) {
        let window_ms = w.window_ms.max(1);
        let cur = self.samples[self.current];
        if now_ms >= cur.start_ms + window_ms {
            let previous_end = cur.start_ms + window_ms;
            let start = now_ms - (now_ms - previous_end) % window_ms;
            self.current = (self.current + 1) % w.samples.max(1);
            let fresh = Sample { start_ms: start, value: 0.0 };
            match self.samples.get_mut(self.current) {
                Some(s) => *s = fresh,
                None => self.samples.push(fresh),
            }
        }
        self.samples[self.current].value += value;
        self.last_record_ms = self.last_record_ms.max(now_ms);
    }

    fn purge(&mut self, w: Window, now_ms: i64) {
        let expire_age = w.samples.max(1) as i64 * w.window_ms.max(1);
        for s in &mut self.samples {
            if now_ms - s.start_ms >= expire_age {
                *s = Sample { start_ms: now_ms, value: 0.0 };
            }
        }
    }

    /// Kafka's `Rate.windowSize`, in ms (at least 1).
    pub fn window_size_ms(&mut self, w: Window, now_ms: i64) -> i64 {
        self.purge(w, now_ms);
        let oldest = self.samples.iter().map(|s| s.start_ms).min().unwrap_or(now_ms);
        let mut elapsed = now_ms - oldest;
        let window_ms = w.window_ms.max(1);
        let full = elapsed / window_ms;
        let min_full = w.samples.max(1) as i64 - 1;
        if full < min_full {
            elapsed += (min_full - full) * window_ms;
        }
        elapsed.max(1)
    }

    /// The rate per second at `now_ms`.
    pub fn measure(&mut self, w: Window, now_ms: i64) -> f64 {
        let size = self.window_size_ms(w, now_ms);
        let total: f64 = self.samples.iter().map(|s| s.value).sum();
        total / (size as f64 / 1000.0)
    }

    /// True when every sample has expired: the sensor measures 0 and may be forgotten.
    pub fn idle(&self, w: Window, now_ms: i64) -> bool {
        now_ms - self.last_record_ms >= w.samples.max(1) as i64 * w.window_ms.max(1)
    }
}

/// Records `value` and returns the throttle time in ms, Kafka's way (`Sensor.record` with
/// `checkQuotas`, then `QuotaUtils.throttleTime`): the value is recorded even when it breaks
/// the quota; over `bound`, the throttle is `(rate - bound) / bound × window size`, the time
/// after which the measured rate is back at the bound, capped at the whole quota window.
pub fn record_and_throttle(rate: &mut Rate, w: Window, value: f64, bound: f64, now_ms: i64) -> i64 {
    rate.record(w, value, now_ms);
    let measured = rate.measure(w, now_ms);
    if bound <= 0.0 {
        // A zero quota blocks everything for the longest throttle.
        return if value > 0.0 { max_throttle_ms(w) } else { 0 };
    }
    if measured <= bound {
        return 0;
    }
    let size = rate.window_size_ms(w, now_ms) as f64;
    let throttle = ((measured - bound) / bound * size).round() as i64;
    throttle.clamp(0, max_throttle_ms(w))
}

/// The longest throttle: the whole quota window.
pub fn max_throttle_ms(w: Window) -> i64 {
    w.samples.max(1) as i64 * w.window_ms.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Window = Window { samples: 11, window_ms: 1000 };

    #[test]
    fn a_new_sensor_measures_over_at_least_ten_windows() {
        let mut r = Rate::new(0);
        r.record(W, 10_000.0, 0);
        assert_eq!(r.window_size_ms(W, 0), 10_000);
        assert!((r.measure(W, 0) - 1_000.0).abs() < 1e-9);
        assert_eq!(r.window_size_ms(W, 15_500), 10_000, "a sample 11 s old is reset");
        let mut r = Rate::new(0);
        for s in 0..=12 {
            r.record(W, 1.0, s * 1000);
        }
        // Eleven live samples, the oldest begun at 2 s: the whole elapsed time counts.
        assert_eq!(r.window_size_ms(W, 12_500), 10_500);
        assert!((r.measure(W, 12_500) - 11.0 / 10.5).abs() < 1e-9);
    }

    #[test]
    fn throttle_is_the_time_to_fall_back_to_the_bound() {
        let mut r = Rate::new(0);
        // 20,000 bytes at once against 1,000/s: measured 2,000/s over 10 s → 10 s throttle.
        assert_eq!(record_and_throttle(&mut r, W, 20_000.0, 1_000.0, 0), 10_000);
        let mut r = Rate::new(0);
        assert_eq!(record_and_throttle(&mut r, W, 5_000.0, 1_000.0, 0), 0, "within the first windows' grace");
        // Far over: capped at the whole window.
        assert_eq!(record_and_throttle(&mut r, W, 1e9, 1_000.0, 10), max_throttle_ms(W));
    }

    /// A client that waits out each throttle converges on the bound (what the integration test
    /// checks with a real producer).
    #[test]
    fn a_client_honouring_throttles_converges_on_the_quota() {
        let mut r = Rate::new(0);
        let (mut now, mut sent) = (0i64, 0f64);
        while now < 60_000 {
            let t = record_and_throttle(&mut r, W, 10_000.0, 100_000.0, now);
            sent += 10_000.0;
            now += 10 + t;
        }
        let rate = sent / (now as f64 / 1000.0);
        assert!((rate - 100_000.0).abs() / 100_000.0 < 0.2, "{rate}");
        assert!(r.idle(W, now + 11_000) && !r.idle(W, now));
    }
}
