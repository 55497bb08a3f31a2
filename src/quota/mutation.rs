//! KIP-599's `controller_mutation_rate`: partitions created or deleted per second, charged by
//! CreateTopics, CreatePartitions and DeleteTopics, as Kafka's `ControllerMutationQuotaManager`
//! does.
//!
//! The measure is Kafka's `TokenBucket`: it holds at most `samples × window × rate` tokens
//! (the burst), refills at `rate` per second, and a mutation takes one token per partition. A
//! bucket may go below zero; while it is below zero the client is throttled for the time the
//! refill needs to bring it back to zero (`-tokens / rate` seconds).
//!
//! Per request, a [`MutationQuota`] is either *strict* (CreateTopics v6+, CreatePartitions v3+,
//! DeleteTopics v5+: a topic is refused with THROTTLING_QUOTA_EXCEEDED while the bucket is
//! below zero, and accepted, even if it takes the bucket below zero, while it is not) or
//! *permissive* (older versions: every topic is accepted, and the request is throttled once the
//! bucket is below zero). Handlers charge each topic after all its other checks passed, as
//! Kafka's `ReplicationControlManager` calls `applyPartitionChangeQuota`, and answer with
//! [`MutationQuota::throttle_time_ms`]. Pure: time comes in.

use super::rate::Window;

/// One (user, client-id) bucket (Kafka's `TokenBucket` under its sensor's quota).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenBucket {
    tokens: f64,
    last_ms: i64,
}

/// The most tokens a bucket holds: `samples × window seconds × rate`.
pub fn burst(w: Window, rate: f64) -> f64 {
    w.samples.max(1) as f64 * (w.window_ms.max(1) as f64 / 1000.0) * rate
}

impl TokenBucket {
    /// A new bucket is full (Kafka's starts empty at time 0, so its first refill fills it).
    pub fn new(w: Window, rate: f64, now_ms: i64) -> Self {
        Self { tokens: burst(w, rate), last_ms: now_ms }
    }

    fn refill(&mut self, w: Window, rate: f64, now_ms: i64) {
        let elapsed_s = (now_ms - self.last_ms).max(0) as f64 / 1000.0;
        self.tokens = burst(w, rate).min(self.tokens + rate * elapsed_s);
        self.last_ms = self.last_ms.max(now_ms);
    }

    /// The tokens left at `now_ms`.
    pub fn measure(&mut self, w: Window, rate: f64, now_ms: i64) -> f64 {
        self.refill(w, rate, now_ms);
        self.tokens
    }

    /// Takes `permits` tokens at `now_ms`.
    pub fn record(&mut self, w: Window, rate: f64, permits: f64, now_ms: i64) {
        self.refill(w, rate, now_ms);
        self.tokens = burst(w, rate).min(self.tokens - permits);
    }

    /// True when the bucket is full again: it behaves as a new one and may be forgotten.
    pub fn full(&mut self, w: Window, rate: f64, now_ms: i64) -> bool {
        self.measure(w, rate, now_ms) >= burst(w, rate)
    }
}

/// Kafka's `ControllerMutationQuotaManager.throttleTimeMs`: the time for the refill to bring
/// `tokens` (below zero) back to zero, capped at the whole quota window (a zero rate never
/// refills).
pub fn throttle_ms(w: Window, tokens: f64, rate: f64) -> i64 {
    if tokens >= 0.0 {
        return 0;
    }
    let cap = super::rate::max_throttle_ms(w);
    if rate <= 0.0 {
        return cap;
    }
    ((-tokens / rate * 1000.0).round() as i64).clamp(0, cap)
}

/// A strict quota's verdict on a charge: `Err(throttle ms)` refuses the topic.
pub type Charge = Result<(), i64>;

/// Strict: refused while below zero, else taken (possibly below zero).
pub fn charge_strict(bucket: &mut TokenBucket, w: Window, rate: f64, permits: f64, now_ms: i64) -> Charge {
    let tokens = bucket.measure(w, rate, now_ms);
    if tokens < 0.0 {
        return Err(throttle_ms(w, tokens, rate));
    }
    bucket.record(w, rate, permits, now_ms);
    Ok(())
}

/// Permissive: always taken; the throttle (0 while the bucket is not below zero) comes back.
pub fn charge_permissive(bucket: &mut TokenBucket, w: Window, rate: f64, permits: f64, now_ms: i64) -> i64 {
    bucket.record(w, rate, permits, now_ms);
    let tokens = bucket.measure(w, rate, now_ms);
    throttle_ms(w, tokens, rate)
}

/// The quota of one request (see the module docs). Created by
/// [`super::Quotas::mutation_quota`]; without a `controller_mutation_rate` for the client it
/// lets everything through.
#[derive(Debug, Clone)]
pub struct MutationQuota {
    /// The bucket's (user, client-id) tags and its rate; `None`: no quota applies.
    pub(super) bucket: Option<(String, String, f64)>,
    pub(super) strict: bool,
    last_throttle_ms: i64,
    recorded_at_ms: i64,
}

impl MutationQuota {
    pub(super) fn new(bucket: Option<(String, String, f64)>, strict: bool) -> Self {
        Self { bucket, strict, last_throttle_ms: 0, recorded_at_ms: 0 }
    }

    /// No quota: every charge passes and nothing is throttled.
    pub fn unbounded() -> Self {
        Self::new(None, false)
    }

    /// Whether a `controller_mutation_rate` applies to the request's client.
    pub fn applies(&self) -> bool {
        self.bucket.is_some()
    }

    /// Notes a throttle computed at `now_ms` (Kafka's `updateThrottleTime`).
    pub(super) fn throttled(&mut self, throttle_ms: i64, now_ms: i64) {
        self.last_throttle_ms = throttle_ms;
        self.recorded_at_ms = now_ms;
    }

    /// The response's throttle at `now_ms`: the last throttle less the time since it was
    /// computed (Kafka's `AbstractControllerMutationQuota.throttleTime`).
    pub fn throttle_time_ms(&self, now_ms: i64) -> i32 {
        let left = self.last_throttle_ms - (now_ms - self.recorded_at_ms).max(0);
        i32::try_from(left.max(0)).unwrap_or(i32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Window = Window { samples: 11, window_ms: 1000 };

    #[test]
    fn a_bucket_holds_the_window_and_refills_at_the_rate() {
        let mut b = TokenBucket::new(W, 2.0, 0);
        assert_eq!(b.measure(W, 2.0, 0), 22.0);
        b.record(W, 2.0, 30.0, 0);
        assert_eq!(b.measure(W, 2.0, 0), -8.0);
        assert_eq!(throttle_ms(W, -8.0, 2.0), 4_000, "8 tokens at 2/s");
        assert_eq!(b.measure(W, 2.0, 4_000), 0.0);
        assert!(!b.full(W, 2.0, 10_000));
        assert!(b.full(W, 2.0, 15_000), "capped at the burst");
    }

    /// Kafka's strict quota accepts the mutation that crosses zero and refuses the next;
    /// the permissive one accepts both and reports the throttle.
    #[test]
    fn strict_refuses_once_below_zero_permissive_throttles() {
        let mut b = TokenBucket::new(W, 1.0, 0);
        assert_eq!(charge_strict(&mut b, W, 1.0, 10.0, 0), Ok(()));
        assert_eq!(charge_strict(&mut b, W, 1.0, 5.0, 0), Ok(()), "1 token left: taken, to -4");
        assert_eq!(charge_strict(&mut b, W, 1.0, 1.0, 0), Err(4_000));
        assert_eq!(charge_strict(&mut b, W, 1.0, 1.0, 1_000), Err(3_000), "refilled by one");
        assert_eq!(charge_strict(&mut b, W, 1.0, 1.0, 4_000), Ok(()), "back at zero");

        let mut b = TokenBucket::new(W, 1.0, 0);
        assert_eq!(charge_permissive(&mut b, W, 1.0, 10.0, 0), 0);
        assert_eq!(charge_permissive(&mut b, W, 1.0, 5.0, 0), 4_000);
        assert_eq!(charge_permissive(&mut b, W, 1.0, 5.0, 0), 9_000);
    }

    #[test]
    fn the_answered_throttle_counts_down() {
        let mut q = MutationQuota::new(Some((String::new(), "c".into(), 1.0)), true);
        q.throttled(4_000, 1_000);
        assert_eq!(q.throttle_time_ms(1_000), 4_000);
        assert_eq!(q.throttle_time_ms(2_500), 2_500);
        assert_eq!(q.throttle_time_ms(9_000), 0);
        assert_eq!(MutationQuota::unbounded().throttle_time_ms(5), 0);
    }
}
