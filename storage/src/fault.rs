//! [`FaultInjectingStore`]: an `ObjectStore` wrapper that injects latency, 5xx-like errors,
//! outages and lost PUT responses, with knobs adjustable while running and a seeded RNG so a
//! failing test replays. Compiled in normal builds (it is small) so integration tests and
//! simulations outside this crate can use it.
//!
//! Injected errors are `object_store::Error::Generic`, which [`crate::StorageError`] treats
//! as retriable, like a real 503 SlowDown.

use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions, PutOptions,
    PutPayload, PutResult,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const STORE: &str = "FaultInjectingStore";

/// Requests seen by a [`FaultInjectingStore`] (including failed ones) and faults injected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultCounts {
    pub puts: u64,
    pub gets: u64,
    pub deletes: u64,
    pub lists: u64,
    pub other: u64,
    pub injected_errors: u64,
    pub lost_responses: u64,
}

#[derive(Debug)]
struct Knobs {
    latency_us: AtomicU64,
    get_latency_us: AtomicU64,
    /// f64 bits.
    error_probability: AtomicU64,
    /// f64 bits.
    lose_put_response_probability: AtomicU64,
    down: AtomicBool,
    rng: Mutex<StdRng>,
    puts: AtomicU64,
    gets: AtomicU64,
    deletes: AtomicU64,
    lists: AtomicU64,
    other: AtomicU64,
    injected_errors: AtomicU64,
    lost_responses: AtomicU64,
}

#[derive(Clone, Copy)]
enum Op {
    Put,
    Get,
    Delete,
    List,
    Other,
}

/// Wraps another store and misbehaves on demand. Clones share knobs and counters.
#[derive(Clone)]
pub struct FaultInjectingStore {
    inner: Arc<dyn ObjectStore>,
    knobs: Arc<Knobs>,
    /// Sleeps of injected latency.
    clock: Arc<dyn skiff_time::Clock>,
}

impl fmt::Debug for FaultInjectingStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultInjectingStore").field("inner", &self.inner).field("knobs", &self.knobs).finish()
    }
}

impl fmt::Display for FaultInjectingStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultInjectingStore({})", self.inner)
    }
}

fn duration_us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl FaultInjectingStore {
    /// A well-behaved wrapper around `inner` until knobs are turned. `seed` drives every
    /// random decision, so the same seed and the same sequence of calls replay exactly.
    pub fn new(inner: Arc<dyn ObjectStore>, seed: u64) -> Self {
        let knobs = Knobs {
            latency_us: AtomicU64::new(0),
            get_latency_us: AtomicU64::new(0),
            error_probability: AtomicU64::new(0f64.to_bits()),
            lose_put_response_probability: AtomicU64::new(0f64.to_bits()),
            down: AtomicBool::new(false),
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            puts: AtomicU64::new(0),
            gets: AtomicU64::new(0),
            deletes: AtomicU64::new(0),
            lists: AtomicU64::new(0),
            other: AtomicU64::new(0),
            injected_errors: AtomicU64::new(0),
            lost_responses: AtomicU64::new(0),
        };
        FaultInjectingStore { inner, knobs: Arc::new(knobs), clock: skiff_time::system_clock() }
    }

    /// Takes the sleeps of injected latency from `clock`.
    pub fn with_clock(mut self, clock: Arc<dyn skiff_time::Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Latency added to every request before it reaches the inner store.
    pub fn set_latency(&self, latency: Duration) {
        self.knobs.latency_us.store(duration_us(latency), Ordering::Relaxed);
    }

    /// Extra latency for GETs (on top of `set_latency`).
    pub fn set_get_latency(&self, latency: Duration) {
        self.knobs.get_latency_us.store(duration_us(latency), Ordering::Relaxed);
    }

    /// Probability (0.0..=1.0) that a request fails with a retriable error without reaching
    /// the inner store.
    pub fn set_error_probability(&self, p: f64) {
        self.knobs.error_probability.store(p.clamp(0.0, 1.0).to_bits(), Ordering::Relaxed);
    }

    /// Probability that a PUT which succeeded in the inner store reports a retriable error
    /// anyway, as when the response is lost on the way back.
    pub fn set_lose_put_response_probability(&self, p: f64) {
        self.knobs.lose_put_response_probability.store(p.clamp(0.0, 1.0).to_bits(), Ordering::Relaxed);
    }

    /// While down, every request fails with a retriable error.
    pub fn set_down(&self, down: bool) {
        self.knobs.down.store(down, Ordering::Relaxed);
    }

    /// Turns every knob back to well-behaved (counters are kept).
    pub fn heal(&self) {
        self.set_latency(Duration::ZERO);
        self.set_get_latency(Duration::ZERO);
        self.set_error_probability(0.0);
        self.set_lose_put_response_probability(0.0);
        self.set_down(false);
    }

    pub fn counts(&self) -> FaultCounts {
        let k = &self.knobs;
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        FaultCounts {
            puts: l(&k.puts),
            gets: l(&k.gets),
            deletes: l(&k.deletes),
            lists: l(&k.lists),
            other: l(&k.other),
            injected_errors: l(&k.injected_errors),
            lost_responses: l(&k.lost_responses),
        }
    }

    pub fn inner(&self) -> &Arc<dyn ObjectStore> {
        &self.inner
    }

    fn roll(&self, probability_bits: &AtomicU64) -> bool {
        let p = f64::from_bits(probability_bits.load(Ordering::Relaxed));
        if p <= 0.0 {
            return false;
        }
        let mut rng = self.knobs.rng.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        rng.random::<f64>() < p
    }

    fn injected(&self, what: &str) -> object_store::Error {
        self.knobs.injected_errors.fetch_add(1, Ordering::Relaxed);
        object_store::Error::Generic { store: STORE, source: format!("injected fault: {what}").into() }
    }

    /// Counts the request, applies latency, and decides whether it fails before reaching the
    /// inner store.
    async fn before(&self, op: Op) -> object_store::Result<()> {
        let k = &self.knobs;
        let counter = match op {
            Op::Put => &k.puts,
            Op::Get => &k.gets,
            Op::Delete => &k.deletes,
            Op::List => &k.lists,
            Op::Other => &k.other,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let mut delay = k.latency_us.load(Ordering::Relaxed);
        if matches!(op, Op::Get) {
            delay = delay.saturating_add(k.get_latency_us.load(Ordering::Relaxed));
        }
        if delay > 0 {
            self.clock.sleep(Duration::from_micros(delay)).await;
        }
        if k.down.load(Ordering::Relaxed) {
            return Err(self.injected("store is down (503 Service Unavailable)"));
        }
        if self.roll(&k.error_probability) {
            return Err(self.injected("503 SlowDown"));
        }
        Ok(())
    }
}

#[async_trait]
impl ObjectStore for FaultInjectingStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.before(Op::Put).await?;
        let result = self.inner.put_opts(location, payload, opts).await?;
        if self.roll(&self.knobs.lose_put_response_probability) {
            self.knobs.lost_responses.fetch_add(1, Ordering::Relaxed);
            return Err(self.injected("response lost after PUT succeeded"));
        }
        Ok(result)
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.before(Op::Put).await?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> object_store::Result<GetResult> {
        self.before(Op::Get).await?;
        self.inner.get_opts(location, options).await
    }

    async fn get_range(&self, location: &Path, range: Range<u64>) -> object_store::Result<Bytes> {
        self.before(Op::Get).await?;
        self.inner.get_range(location, range).await
    }

    async fn head(&self, location: &Path) -> object_store::Result<ObjectMeta> {
        self.before(Op::Other).await?;
        self.inner.head(location).await
    }

    async fn delete(&self, location: &Path) -> object_store::Result<()> {
        self.before(Op::Delete).await?;
        self.inner.delete(location).await
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let this = self.clone();
        let prefix = prefix.cloned();
        futures::stream::once(async move {
            match this.before(Op::List).await {
                Ok(()) => this.inner.list(prefix.as_ref()),
                Err(e) => futures::stream::once(futures::future::ready(Err(e))).boxed(),
            }
        })
        .flatten()
        .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.before(Op::List).await?;
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy(&self, from: &Path, to: &Path) -> object_store::Result<()> {
        self.before(Op::Other).await?;
        self.inner.copy(from, to).await
    }

    async fn copy_if_not_exists(&self, from: &Path, to: &Path) -> object_store::Result<()> {
        self.before(Op::Other).await?;
        self.inner.copy_if_not_exists(from, to).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;

    #[tokio::test]
    async fn knobs_and_replay() {
        let run = |seed| async move {
            let s = FaultInjectingStore::new(Arc::new(InMemory::new()), seed);
            s.set_error_probability(0.5);
            let mut outcomes = Vec::new();
            for i in 0..32 {
                let p = Path::from(format!("k{i}"));
                outcomes.push(s.put(&p, PutPayload::from_static(b"x")).await.is_ok());
            }
            (outcomes, s.counts())
        };
        let (a, ca) = run(42).await;
        let (b, _) = run(42).await;
        assert_eq!(a, b, "same seed, same faults");
        assert!(a.iter().any(|ok| *ok) && a.iter().any(|ok| !*ok));
        assert_eq!(ca.puts, 32);

        let s = FaultInjectingStore::new(Arc::new(InMemory::new()), 1);
        s.set_down(true);
        assert!(s.get(&Path::from("x")).await.is_err());
        let listed: Vec<_> = s.list(None).collect().await;
        assert!(listed.len() == 1 && listed[0].is_err());
        s.heal();
        s.set_lose_put_response_probability(1.0);
        assert!(s.put(&Path::from("y"), PutPayload::from_static(b"y")).await.is_err());
        s.heal();
        assert!(s.head(&Path::from("y")).await.is_ok(), "the PUT landed");
        assert_eq!(s.counts().lost_responses, 1);
    }
}
