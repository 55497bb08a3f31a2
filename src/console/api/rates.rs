//! Per-second rates between API calls: each call that shows a rate records a sample of the
//! counters (object-storage PUTs and GETs, per topic its appended records and attributed
//! requests); the rate is the change since the oldest sample of the last [`WINDOW_MS`].
//!
//! Pure (time is an input): the console refreshes every few seconds, so rates follow without a
//! background task; the first call has nothing to compare with and reports 0.

use std::collections::{HashMap, VecDeque};

use uuid::Uuid;

/// How far back a rate looks.
pub const WINDOW_MS: i64 = 60_000;
/// Samples closer together than this replace each other (bounds the samples kept).
const MIN_SPACING_MS: i64 = 1_000;

/// One topic's counters at a moment.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TopicCounters {
    /// The sum of its partitions' high watermarks (records appended, ever).
    pub records: i64,
    pub puts: f64,
    pub gets: f64,
}

/// The counters at a moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sample {
    pub at_ms: i64,
    pub puts: u64,
    pub gets: u64,
    pub topics: HashMap<Uuid, TopicCounters>,
}

/// Per-second rates of one topic.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TopicRates {
    pub records: f64,
    pub puts: f64,
    pub gets: f64,
}

/// Per-second rates over `window_ms` (0: no earlier sample yet, every rate 0).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RateView {
    pub window_ms: i64,
    pub puts: f64,
    pub gets: f64,
    pub topics: HashMap<Uuid, TopicRates>,
}

/// The samples of the last [`WINDOW_MS`].
#[derive(Debug, Default)]
pub struct Rates {
    samples: VecDeque<Sample>,
}

impl Rates {
    /// Records `now` and returns the rates since the oldest sample still in the window.
    pub fn observe(&mut self, now: Sample) -> RateView {
        while self.samples.front().is_some_and(|s| now.at_ms - s.at_ms > WINDOW_MS) {
            self.samples.pop_front();
        }
        let view = match self.samples.front() {
            Some(base) if now.at_ms > base.at_ms => rates(base, &now),
            _ => RateView::default(),
        };
        // The newest sample is replaced by a close one, never the base (the window's start).
        if self.samples.len() > 1 && self.samples.back().is_some_and(|s| now.at_ms - s.at_ms < MIN_SPACING_MS) {
            self.samples.pop_back();
        }
        if self.samples.is_empty() || self.samples.back().is_some_and(|s| now.at_ms > s.at_ms) {
            self.samples.push_back(now);
        }
        view
    }
}

fn rates(base: &Sample, now: &Sample) -> RateView {
    let seconds = (now.at_ms - base.at_ms) as f64 / 1000.0;
    let per_sec = |d: f64| (d / seconds).max(0.0);
    let topics = now
        .topics
        .iter()
        .map(|(id, t)| {
            // A topic created inside the window counts from zero.
            let b = base.topics.get(id).copied().unwrap_or_default();
            let r = TopicRates {
                records: per_sec((t.records - b.records) as f64),
                puts: per_sec(t.puts - b.puts),
                gets: per_sec(t.gets - b.gets),
            };
            (*id, r)
        })
        .collect();
    RateView {
        window_ms: now.at_ms - base.at_ms,
        puts: per_sec(now.puts.saturating_sub(base.puts) as f64),
        gets: per_sec(now.gets.saturating_sub(base.gets) as f64),
        topics,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at_ms: i64, puts: u64, records: i64) -> Sample {
        let topics = [(Uuid::nil(), TopicCounters { records, puts: puts as f64, gets: 0.0 })].into();
        Sample { at_ms, puts, gets: 0, topics }
    }

    #[test]
    fn first_call_has_no_rate_then_rates_follow_the_window() {
        let mut r = Rates::default();
        assert_eq!(r.observe(sample(0, 0, 0)), RateView::default());
        let v = r.observe(sample(10_000, 50, 1000));
        assert_eq!(v.window_ms, 10_000);
        assert_eq!(v.puts, 5.0);
        assert_eq!(v.topics[&Uuid::nil()].records, 100.0);
        // Past the window the base moves on: only the last 60 s count.
        let v = r.observe(sample(65_000, 60, 1000));
        assert_eq!(v.window_ms, 55_000);
        assert!((v.puts - 10.0 / 55.0).abs() < 1e-9);
        assert_eq!(v.topics[&Uuid::nil()].records, 0.0);
    }

    #[test]
    fn close_samples_replace_each_other_and_keep_the_base() {
        let mut r = Rates::default();
        r.observe(sample(0, 0, 0));
        for i in 1..=100 {
            r.observe(sample(i * 10, i as u64, 0));
        }
        assert!(r.samples.len() <= 2, "{} samples kept", r.samples.len());
        assert_eq!(r.samples.front().map(|s| s.at_ms), Some(0));
        let v = r.observe(sample(2_000, 20, 0));
        assert_eq!(v.puts, 10.0);
    }

    #[test]
    fn a_new_topic_counts_from_zero() {
        let mut r = Rates::default();
        r.observe(Sample { at_ms: 0, ..Sample::default() });
        let v = r.observe(sample(2_000, 0, 10));
        assert_eq!(v.topics[&Uuid::nil()].records, 5.0);
    }
}
