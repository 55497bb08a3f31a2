//! Time and ids, injected: the only place in Skiff that reads the system clock, sleeps on a
//! timer or draws random ids (`clippy.toml` bans the direct calls everywhere else).
//!
//! * [`Clock`]: wall time (Unix milliseconds, for timestamps and expiries), monotonic time
//!   (deadlines, intervals, latencies) and sleeps. Monotonic time and sleeps are tokio's, so a
//!   test that calls `tokio::time::pause()` controls them; wall time comes from the clock, so a
//!   [`ManualClock`] fixes or advances it.
//! * [`Ids`]: UUIDs (topic ids, incarnations, member ids, cluster ids) and random key suffixes.
//!   [`SequentialIds`] makes them predictable in tests.
//!
//! Invariant: production code gets [`SystemClock`] and [`RandomIds`] once, at start-up
//! (`src/node.rs`), and passes them down; libraries default to them only where a constructor
//! predates injection (`with_clock` overrides).
// This module is the one allowed caller of the banned clock, timer and uuid functions.
#![allow(clippy::disallowed_methods)]

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use tokio::time::{Instant, Sleep};
use uuid::Uuid;

/// A source of wall time, monotonic time and sleeps.
pub trait Clock: std::fmt::Debug + Send + Sync + 'static {
    /// Wall-clock time in milliseconds since the Unix epoch (Kafka timestamps).
    fn now_ms(&self) -> i64;

    /// Wall-clock time as a [`SystemTime`] (credential expiries and other absolute times).
    fn system_time(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(u64::try_from(self.now_ms()).unwrap_or(0))
    }

    /// Monotonic time for deadlines and latencies (tokio's: paused and advanced by tests).
    fn now(&self) -> Instant {
        Instant::now()
    }

    /// Sleeps for `duration` (tokio's timer).
    fn sleep(&self, duration: Duration) -> Sleep {
        tokio::time::sleep(duration)
    }

    /// Sleeps until `deadline` (tokio's timer).
    fn sleep_until(&self, deadline: Instant) -> Sleep {
        tokio::time::sleep_until(deadline)
    }
}

/// The system's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
    }
}

/// The system clock as the shared handle everything takes.
pub fn system_clock() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

/// A clock whose wall time moves only when told to (tests). Monotonic time and sleeps stay
/// tokio's: pause them with `tokio::time::pause()` and move them with `tokio::time::advance`.
#[derive(Debug)]
pub struct ManualClock {
    now_ms: AtomicI64,
}

impl ManualClock {
    pub fn new(now_ms: i64) -> Self {
        Self { now_ms: AtomicI64::new(now_ms) }
    }

    pub fn set_ms(&self, now_ms: i64) {
        self.now_ms.store(now_ms, Ordering::SeqCst);
    }

    pub fn advance(&self, by: Duration) {
        self.now_ms.fetch_add(by.as_millis() as i64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.now_ms.load(Ordering::SeqCst)
    }
}

/// A source of unique ids.
pub trait Ids: std::fmt::Debug + Send + Sync + 'static {
    /// A fresh UUID.
    fn uuid(&self) -> Uuid;

    /// A fresh random suffix for object keys and member ids (32 lowercase hex digits).
    fn suffix(&self) -> String {
        self.uuid().simple().to_string()
    }
}

/// Random (version 4) UUIDs.
#[derive(Debug, Default, Clone, Copy)]
pub struct RandomIds;

impl Ids for RandomIds {
    fn uuid(&self) -> Uuid {
        Uuid::new_v4()
    }
}

/// Random ids as the shared handle everything takes.
pub fn random_ids() -> Arc<dyn Ids> {
    Arc::new(RandomIds)
}

/// Predictable ids for tests: `00000000-0000-0000-0000-000000000001`, `…02`, … (never nil).
#[derive(Debug, Default)]
pub struct SequentialIds {
    next: AtomicU64,
}

impl Ids for SequentialIds {
    fn uuid(&self) -> Uuid {
        Uuid::from_u128(u128::from(self.next.fetch_add(1, Ordering::SeqCst)) + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn paused_sleep_advances_monotonic_time_without_waiting() {
        let clock = system_clock();
        let start = clock.now();
        let wall = std::time::Instant::now();
        clock.sleep(Duration::from_secs(3600)).await;
        assert_eq!(clock.now() - start, Duration::from_secs(3600));
        assert!(wall.elapsed() < Duration::from_secs(5), "a paused clock does not wait for real");
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::new(1_000);
        assert_eq!(clock.now_ms(), 1_000);
        clock.advance(Duration::from_millis(250));
        assert_eq!(clock.now_ms(), 1_250);
        assert_eq!(clock.system_time(), UNIX_EPOCH + Duration::from_millis(1_250));
        clock.set_ms(5);
        assert_eq!(clock.now_ms(), 5);
    }

    #[test]
    fn ids_are_unique_and_sequential_ids_predictable() {
        let ids = SequentialIds::default();
        assert_eq!(ids.uuid(), Uuid::from_u128(1));
        assert_eq!(ids.suffix(), format!("{:032x}", 2));
        let random = RandomIds;
        assert_ne!(random.uuid(), random.uuid());
    }
}
