//! [`ObjectStorage`]: the one handle the rest of Skiff uses to reach object storage.
//!
//! It owns key layout (every key is built here), create-only PUTs, the retry policy (all
//! retries happen here, with exponential backoff and full jitter, bounded by a deadline) and
//! simple operation counters.
//!
//! Keys passed to [`ObjectStorage::put_new`], [`ObjectStorage::get`] and friends are full
//! object-store paths, exactly as returned by the key builders ([`ObjectStorage::wal_key`]) and
//! by [`ObjectStorage::list`]; they already include the storage prefix.
//!
//! Invariant: objects are immutable. `put_new` never overwrites; a key is written at most once
//! in its lifetime (WAL keys embed the broker id, its incarnation and a per-incarnation
//! sequence number, so two writers never share a key).

use std::future::Future;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, PutMode, PutOptions, PutPayload};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use skiff_time::Clock;

use crate::error::{ErrorKind, Operation, StorageError};
use crate::format;

/// How [`ObjectStorage`] retries retriable failures: exponential backoff with full jitter
/// (sleep a uniform random time in `0..=min(max_backoff, initial_backoff * 2^n)`), giving up
/// when the next attempt would start after `max_elapsed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Backoff ceiling before the first retry. Default 50 ms.
    pub initial_backoff: Duration,
    /// Largest backoff ceiling. Default 2 s.
    pub max_backoff: Duration,
    /// No new attempt starts after this much time since the first one. Default 30 s.
    pub max_elapsed: Duration,
    /// Bound on a single attempt; an attempt that takes longer is abandoned and counts as a
    /// retriable failure (for a PUT it may still have landed; see `put_new`). Default 20 s:
    /// comfortably above an 8 MiB S3 PUT's p99 (~0.4 s), low enough to route around a stuck
    /// connection.
    pub attempt_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
            max_elapsed: Duration::from_secs(30),
            attempt_timeout: Duration::from_secs(20),
        }
    }
}

impl RetryPolicy {
    /// No retries at all: one attempt, bounded by `attempt_timeout`.
    pub fn no_retry() -> Self {
        RetryPolicy { max_elapsed: Duration::ZERO, ..RetryPolicy::default() }
    }

    fn backoff_ceiling(&self, retry: u32) -> Duration {
        let factor = 1u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX);
        self.initial_backoff.saturating_mul(factor).min(self.max_backoff)
    }
}

/// Operation counters. Cumulative since the [`ObjectStorage`] was created; shared by clones.
#[derive(Debug, Default)]
pub struct StorageStats {
    /// Successful create-only PUTs.
    pub puts: AtomicU64,
    pub put_bytes: AtomicU64,
    /// Successful GETs (whole or ranged).
    pub gets: AtomicU64,
    pub get_bytes: AtomicU64,
    pub heads: AtomicU64,
    pub deletes: AtomicU64,
    pub lists: AtomicU64,
    /// Attempts that failed retriably and were retried.
    pub retries: AtomicU64,
    /// Operations that returned an error to the caller.
    pub failures: AtomicU64,
    /// Latency of whole operations, retries included.
    pub put_latency: crate::histogram::LatencyHistogram,
    pub get_latency: crate::histogram::LatencyHistogram,
    pub delete_latency: crate::histogram::LatencyHistogram,
}

/// A plain copy of [`StorageStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StorageStatsSnapshot {
    pub puts: u64,
    pub put_bytes: u64,
    pub gets: u64,
    pub get_bytes: u64,
    pub heads: u64,
    pub deletes: u64,
    pub lists: u64,
    pub retries: u64,
    pub failures: u64,
}

impl StorageStats {
    pub fn snapshot(&self) -> StorageStatsSnapshot {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StorageStatsSnapshot {
            puts: l(&self.puts),
            put_bytes: l(&self.put_bytes),
            gets: l(&self.gets),
            get_bytes: l(&self.get_bytes),
            heads: l(&self.heads),
            deletes: l(&self.deletes),
            lists: l(&self.lists),
            retries: l(&self.retries),
            failures: l(&self.failures),
        }
    }
}

fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

/// What a listing returns for one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Full key, usable with `get`, `delete`, ...
    pub key: String,
    pub size: u64,
    pub last_modified: SystemTime,
}

/// Bound on [`ObjectStorage::check`].
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// First ranged read of a WAL object's tail when only the footer is wanted: enough for the
/// footer of an object with ~1000 sections in one GET.
const FOOTER_TAIL_GUESS_BYTES: u64 = 64 * 1024;

/// Handle to object storage. Cheap to clone; clones share counters.
#[derive(Clone)]
pub struct ObjectStorage {
    inner: Arc<dyn ObjectStore>,
    prefix: Path,
    retry: RetryPolicy,
    stats: Arc<StorageStats>,
    jitter: Arc<Mutex<StdRng>>,
    /// Cleared the first time the backend answers a create-only PUT with NotImplemented.
    create_supported: Arc<AtomicBool>,
    /// Backoff sleeps, deadlines and latencies.
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for ObjectStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectStorage")
            .field("store", &self.inner.to_string())
            .field("prefix", &self.prefix.as_ref())
            .field("retry", &self.retry)
            .finish()
    }
}

impl ObjectStorage {
    /// Wraps any object store. `prefix` is prepended to every key this handle builds (`""` for
    /// none); it is parsed as an object-store path, so leading/trailing `/` are ignored.
    pub fn new(store: Arc<dyn ObjectStore>, prefix: &str) -> Self {
        ObjectStorage {
            inner: store,
            prefix: Path::from(prefix),
            retry: RetryPolicy::default(),
            stats: Arc::new(StorageStats::default()),
            jitter: Arc::new(Mutex::new(StdRng::from_os_rng())),
            create_supported: Arc::new(AtomicBool::new(true)),
            clock: skiff_time::system_clock(),
        }
    }

    /// Takes time (retry deadlines, backoff sleeps, latencies) from `clock`.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Makes backoff jitter reproducible (tests, simulation).
    pub fn with_jitter_seed(mut self, seed: u64) -> Self {
        self.jitter = Arc::new(Mutex::new(StdRng::seed_from_u64(seed)));
        self
    }

    pub fn retry_policy(&self) -> RetryPolicy {
        self.retry
    }

    pub fn prefix(&self) -> &str {
        self.prefix.as_ref()
    }

    pub fn stats(&self) -> &StorageStats {
        &self.stats
    }

    /// The underlying store, for code that needs an operation this type does not offer.
    pub fn object_store(&self) -> &Arc<dyn ObjectStore> {
        &self.inner
    }

    /// Key of WAL object number `seq` written by `broker_id` in incarnation `incarnation`:
    /// `<prefix>/wal/<broker_id>/<incarnation>-<seq:020>`. The zero-padded sequence makes keys
    /// of one incarnation list in write order. `incarnation` must be a path-safe token without
    /// `/` (a UUID in simple or hyphenated form); otherwise `put_new` rejects the key.
    pub fn wal_key(&self, broker_id: i32, incarnation: &str, seq: u64) -> String {
        self.child_key(&format!("wal/{broker_id}/{incarnation}-{seq:020}"))
    }

    /// `wal/<broker_id>`: where one broker's WAL objects live, relative to the storage
    /// prefix, as [`ObjectStorage::list`] takes it.
    pub fn wal_dir(&self, broker_id: i32) -> String {
        format!("wal/{broker_id}")
    }

    /// Key of a compacted segment of partition `partition` of topic `topic_id` starting at
    /// `base_offset`: `<prefix>/seg/<topic-id>/<partition>/<base_offset:020>-<unique>`. The
    /// topic id is written as a hyphenated lowercase UUID; `unique` must be a path-safe token
    /// without `/` that the writer never reuses (a fresh UUID), so that two compactions of the
    /// same range never share a key.
    pub fn seg_key(&self, topic_id: [u8; 16], partition: i32, base_offset: i64, unique: &str) -> String {
        let hex: String = topic_id.iter().map(|b| format!("{b:02x}")).collect();
        let uuid = format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32]);
        self.child_key(&format!("seg/{uuid}/{partition}/{base_offset:020}-{unique}"))
    }

    /// The top-level directories (relative to the storage prefix) holding data objects: WAL
    /// objects and segments. Garbage collection lists these to find orphans.
    pub const DATA_DIRS: [&'static str; 2] = ["wal", "seg"];

    /// True if `key` (a full key) is a segment written by compaction rather than a WAL object.
    pub fn is_segment_key(&self, key: &str) -> bool {
        let rel = if self.prefix.as_ref().is_empty() {
            Some(key)
        } else {
            key.strip_prefix(self.prefix.as_ref()).and_then(|r| r.strip_prefix('/'))
        };
        rel.is_some_and(|r| r.starts_with("seg/"))
    }

    /// The full key of `rel` (a path relative to the storage prefix, e.g.
    /// `controller/snapshots/x.json`), usable with `put_new`, `get`, `delete`.
    pub fn child_key(&self, rel: &str) -> String {
        if self.prefix.as_ref().is_empty() { rel.to_string() } else { format!("{}/{rel}", self.prefix.as_ref()) }
    }

    fn path(&self, op: Operation, key: &str) -> Result<Path, StorageError> {
        if key.is_empty() {
            return Err(StorageError::invalid(op, key, "empty object key"));
        }
        Path::parse(key).map_err(|e| StorageError::invalid(op, key, e.to_string()))
    }

    /// Runs `attempt(n)` until it succeeds, fails non-retriably, or the deadline passes.
    /// Each attempt is bounded by `attempt_timeout`.
    async fn retrying<T, F, Fut>(&self, op: Operation, key: &str, mut attempt: F) -> Result<T, StorageError>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, StorageError>>,
    {
        let start = self.clock.now();
        let mut n: u32 = 0;
        loop {
            let result = match tokio::time::timeout(self.retry.attempt_timeout, attempt(n)).await {
                Ok(r) => r,
                Err(_) => Err(StorageError::Timeout {
                    operation: op,
                    key: key.to_string(),
                    timeout: self.retry.attempt_timeout,
                }),
            };
            let err = match result {
                Ok(v) => {
                    let histogram = match op {
                        Operation::Put => Some(&self.stats.put_latency),
                        Operation::Get => Some(&self.stats.get_latency),
                        Operation::Delete => Some(&self.stats.delete_latency),
                        _ => None,
                    };
                    if let Some(h) = histogram {
                        h.observe(self.clock.now() - start);
                    }
                    return Ok(v);
                }
                Err(e) => e,
            };
            if err.kind() != ErrorKind::Retriable {
                bump(&self.stats.failures, 1);
                return Err(err);
            }
            let ceiling = self.retry.backoff_ceiling(n);
            let sleep = {
                let mut rng = self.jitter.lock().unwrap_or_else(|p| p.into_inner());
                let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
                Duration::from_nanos(rng.random_range(0..=nanos))
            };
            if self.clock.now() - start + sleep > self.retry.max_elapsed {
                tracing::warn!(%op, key, attempts = n + 1, error = %err, "storage: giving up");
                bump(&self.stats.failures, 1);
                return Err(err);
            }
            tracing::debug!(%op, key, attempt = n + 1, ?sleep, error = %err, "storage: retrying");
            bump(&self.stats.retries, 1);
            self.clock.sleep(sleep).await;
            n = n.saturating_add(1);
        }
    }

    /// Creates `key` with `bytes`; never overwrites.
    ///
    /// Uses `PutMode::Create` (S3 `If-None-Match: *`, LocalFileSystem hard link, InMemory
    /// check), retried on retriable errors. If an attempt's response is lost after the PUT
    /// landed, a later attempt sees AlreadyExists: on a retry (never on the first attempt)
    /// that counts as success iff the stored object has exactly `bytes` (checked with a GET;
    /// keys are unique per writer, so a match is our own earlier attempt). AlreadyExists on
    /// the first attempt is returned as [`ErrorKind::AlreadyExists`]: it means a key was
    /// reused, which is a bug.
    ///
    /// Backends that answer `Create` with NotImplemented (an S3-compatible store configured
    /// with `aws_conditional_put=disabled`) fall back to HEAD-then-PUT. That is not atomic
    /// against a concurrent writer of the same key; it is safe only because keys are unique
    /// per writer. A warning is logged once.
    pub async fn put_new(&self, key: &str, bytes: Bytes) -> Result<(), StorageError> {
        let path = self.path(Operation::Put, key)?;
        let len = bytes.len() as u64;
        self.retrying(Operation::Put, key, |attempt| {
            let path = path.clone();
            let bytes = bytes.clone();
            async move { self.put_attempt(key, &path, bytes, attempt).await }
        })
        .await?;
        bump(&self.stats.puts, 1);
        bump(&self.stats.put_bytes, len);
        Ok(())
    }

    async fn put_attempt(&self, key: &str, path: &Path, bytes: Bytes, attempt: u32) -> Result<(), StorageError> {
        if self.create_supported.load(Ordering::Relaxed) {
            let opts = PutOptions { mode: PutMode::Create, ..PutOptions::default() };
            match self.inner.put_opts(path, PutPayload::from(bytes.clone()), opts).await {
                Ok(_) => return Ok(()),
                Err(object_store::Error::NotImplemented) => {
                    if self.create_supported.swap(false, Ordering::Relaxed) {
                        tracing::warn!(
                            store = %self.inner,
                            "storage: backend does not support create-only PUT; falling back to \
                             HEAD-then-PUT (safe only because object keys are unique per writer)"
                        );
                    }
                }
                Err(e) => {
                    let err = StorageError::from_backend(Operation::Put, key, e);
                    if err.kind() == ErrorKind::AlreadyExists && attempt > 0 {
                        return self.confirm_own_put(key, path, &bytes).await;
                    }
                    return Err(err);
                }
            }
        }
        // Fallback for backends without create-only PUT.
        match self.inner.head(path).await {
            Ok(_) if attempt > 0 => return self.confirm_own_put(key, path, &bytes).await,
            Ok(_) => {
                return Err(StorageError::AlreadyExists { operation: Operation::Put, key: key.to_string() });
            }
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(StorageError::from_backend(Operation::Head, key, e)),
        }
        self.inner
            .put(path, PutPayload::from(bytes))
            .await
            .map(|_| ())
            .map_err(|e| StorageError::from_backend(Operation::Put, key, e))
    }

    /// After AlreadyExists on a retry: is the stored object exactly what we tried to write?
    async fn confirm_own_put(&self, key: &str, path: &Path, bytes: &Bytes) -> Result<(), StorageError> {
        let stored = self
            .inner
            .get(path)
            .await
            .map_err(|e| StorageError::from_backend(Operation::Get, key, e))?
            .bytes()
            .await
            .map_err(|e| StorageError::from_backend(Operation::Get, key, e))?;
        if stored == *bytes {
            tracing::info!(key, "storage: PUT retry found our own earlier attempt; treating as success");
            Ok(())
        } else {
            tracing::error!(
                key,
                stored_len = stored.len(),
                our_len = bytes.len(),
                "storage: key already holds a different object"
            );
            Err(StorageError::AlreadyExists { operation: Operation::Put, key: key.to_string() })
        }
    }

    /// Bytes `range` of `key`. The range must lie within the object: a range past its end is
    /// [`ErrorKind::Invalid`]. An empty range returns empty bytes without a request.
    pub async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StorageError> {
        let want = range
            .end
            .checked_sub(range.start)
            .ok_or_else(|| StorageError::invalid(Operation::Get, key, format!("inverted range {range:?}")))?;
        let bytes = self.get_range_clamped(key, range.clone()).await?;
        if bytes.len() as u64 != want {
            return Err(StorageError::invalid(
                Operation::Get,
                key,
                format!("range {range:?} extends past the end of the object (got {} bytes)", bytes.len()),
            ));
        }
        Ok(bytes)
    }

    /// Like `get_range` but a range ending past the object's end is cut short (the range must
    /// still start inside the object). Used by the block cache when the length is unknown.
    pub(crate) async fn get_range_clamped(&self, key: &str, range: Range<u64>) -> Result<Bytes, StorageError> {
        if range.start >= range.end {
            return Ok(Bytes::new());
        }
        let path = self.path(Operation::Get, key)?;
        let bytes = self
            .retrying(Operation::Get, key, |_| {
                let path = path.clone();
                let range = range.clone();
                async move {
                    self.inner
                        .get_range(&path, range)
                        .await
                        .map_err(|e| StorageError::from_backend(Operation::Get, key, e))
                }
            })
            .await?;
        bump(&self.stats.gets, 1);
        bump(&self.stats.get_bytes, bytes.len() as u64);
        Ok(bytes)
    }

    /// The whole object.
    pub async fn get(&self, key: &str) -> Result<Bytes, StorageError> {
        let path = self.path(Operation::Get, key)?;
        let bytes = self
            .retrying(Operation::Get, key, |_| {
                let path = path.clone();
                async move {
                    let result =
                        self.inner.get(&path).await.map_err(|e| StorageError::from_backend(Operation::Get, key, e))?;
                    result.bytes().await.map_err(|e| StorageError::from_backend(Operation::Get, key, e))
                }
            })
            .await?;
        bump(&self.stats.gets, 1);
        bump(&self.stats.get_bytes, bytes.len() as u64);
        Ok(bytes)
    }

    /// Size and modification time of `key`.
    pub async fn head(&self, key: &str) -> Result<ObjectInfo, StorageError> {
        let path = self.path(Operation::Head, key)?;
        let meta = self
            .retrying(Operation::Head, key, |_| {
                let path = path.clone();
                async move {
                    self.inner
                        .head(&path)
                        .await
                        .map_err(|e| StorageError::from_backend(Operation::Head, key, e))
                }
            })
            .await?;
        bump(&self.stats.heads, 1);
        Ok(info(meta))
    }

    /// Deletes `key`. Deleting a missing object succeeds (S3 semantics on every backend), so
    /// garbage collection can be re-run after a crash.
    pub async fn delete(&self, key: &str) -> Result<(), StorageError> {
        let path = self.path(Operation::Delete, key)?;
        self.retrying(Operation::Delete, key, |_| {
            let path = path.clone();
            async move {
                match self.inner.delete(&path).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                    Err(e) => Err(StorageError::from_backend(Operation::Delete, key, e)),
                }
            }
        })
        .await?;
        bump(&self.stats.deletes, 1);
        Ok(())
    }

    /// Every object under `<prefix>/<prefix_under>` (recursively; `""` lists everything under
    /// the storage prefix), sorted by key. Keys in the result are full keys. Prefixes match
    /// whole path segments: `wal/1` does not match `wal/10/...`.
    pub async fn list(&self, prefix_under: &str) -> Result<Vec<ObjectInfo>, StorageError> {
        let under = prefix_under.trim_matches('/');
        let full = if under.is_empty() { self.prefix.as_ref().to_string() } else { self.child_key(under) };
        let path = Path::parse(&full).map_err(|e| StorageError::invalid(Operation::List, &full, e.to_string()))?;
        let mut items = self
            .retrying(Operation::List, &full, |_| {
                let path = path.clone();
                let full = full.clone();
                async move {
                    let prefix = if path.as_ref().is_empty() { None } else { Some(&path) };
                    self.inner
                        .list(prefix)
                        .map_ok(info)
                        .try_collect::<Vec<_>>()
                        .await
                        .map_err(|e| StorageError::from_backend(Operation::List, &full, e))
                }
            })
            .await?;
        bump(&self.stats.lists, 1);
        items.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(items)
    }

    /// Reads and validates only the footer of the WAL object `key` of size `object_len`, with
    /// one ranged GET of the tail (two if the footer is larger than the first guess).
    pub async fn read_wal_footer(&self, key: &str, object_len: u64) -> Result<Vec<format::SectionMeta>, StorageError> {
        let mut tail_len = FOOTER_TAIL_GUESS_BYTES.min(object_len);
        loop {
            let tail = self.get_range(key, object_len - tail_len..object_len).await?;
            match format::read_footer_from_tail(&tail, object_len).map_err(|e| rekey(e, key))? {
                format::FooterRead::Complete(sections) => return Ok(sections),
                format::FooterRead::NeedTail(n) if n > tail_len && n <= object_len => tail_len = n,
                format::FooterRead::NeedTail(n) => {
                    return Err(StorageError::corrupt(key, format!("footer claims {n} tail bytes")));
                }
            }
        }
    }

    /// Fails fast when the bucket is missing, credentials are wrong or the endpoint is
    /// unreachable: one listing of the prefix (one level, no recursion), bounded by 10 s and
    /// not retried. Costs one LIST request.
    pub async fn check(&self) -> Result<(), StorageError> {
        let key = self.prefix.as_ref().to_string();
        let prefix = if self.prefix.as_ref().is_empty() { None } else { Some(&self.prefix) };
        match tokio::time::timeout(CHECK_TIMEOUT, self.inner.list_with_delimiter(prefix)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(match check_hint(&e) {
                // A configuration problem: say which, in one line, without the XML body.
                Some(hint) => StorageError::invalid(Operation::Check, &format!("{} prefix '{key}'", self.inner), hint),
                None => StorageError::from_backend(Operation::Check, &key, e),
            }),
            Err(_) => Err(StorageError::Timeout { operation: Operation::Check, key, timeout: CHECK_TIMEOUT }),
        }
    }
}

/// For [`ObjectStorage::check`]: a one-line explanation of the usual start-up mistakes (missing
/// bucket, rejected credentials, no credentials, plain HTTP not allowed), recognised from the
/// backend error's text; `None` for anything else.
fn check_hint(err: &object_store::Error) -> Option<String> {
    let mut text = err.to_string();
    let mut next = std::error::Error::source(err);
    while let Some(e) = next {
        text.push_str(" | ");
        text.push_str(&e.to_string());
        next = e.source();
    }
    let tag = |name: &str| {
        let open = format!("<{name}>");
        let start = text.find(&open)? + open.len();
        let len = text[start..].find(&format!("</{name}>"))?;
        Some(text[start..start + len].to_string())
    };
    let code = tag("Code").unwrap_or_default();
    let detail = match (tag("Code"), tag("Message")) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c,
        _ => String::new(),
    };
    let status = |s: &str| text.contains(&format!("status code: {s}"));
    if code == "NoSuchBucket" || (status("404") && text.contains("NoSuchBucket")) {
        return Some(format!("the bucket does not exist; create it first ({detail})"));
    }
    if matches!(
        code.as_str(),
        "InvalidAccessKeyId" | "SignatureDoesNotMatch" | "AccessDenied" | "InvalidToken" | "ExpiredToken"
    ) || status("401")
        || status("403")
        || matches!(err, object_store::Error::Unauthenticated { .. } | object_store::Error::PermissionDenied { .. })
    {
        let detail = if detail.is_empty() { err.to_string() } else { detail };
        return Some(format!(
            "the credentials were rejected or lack permission on the bucket; check \
             AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) ({detail})"
        ));
    }
    if text.contains("URL scheme is not allowed") {
        return Some(
            "the endpoint is plain http:// but HTTP is not allowed; set s3_allow_http = true \
             (SKIFF_S3_ALLOW_HTTP / --s3-allow-http) or AWS_ALLOW_HTTP=true"
                .into(),
        );
    }
    if text.contains("169.254.169.254") || text.contains("169.254.170.2") {
        return Some(
            "no S3 credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or \
             AWS_PROFILE with the aws-profile feature); falling back to the instance metadata \
             service failed"
                .into(),
        );
    }
    None
}

/// Puts `key` into a decode error (format functions do not know the key).
fn rekey(err: StorageError, key: &str) -> StorageError {
    match err {
        StorageError::Corrupt { reason, .. } => StorageError::Corrupt { key: key.to_string(), reason },
        other => other,
    }
}

fn info(meta: object_store::ObjectMeta) -> ObjectInfo {
    ObjectInfo { key: meta.location.to_string(), size: meta.size, last_modified: SystemTime::from(meta.last_modified) }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests measure real elapsed time
mod tests {
    use super::*;
    use crate::FaultInjectingStore;
    use crate::format::WalObjectBuilder;
    use object_store::local::LocalFileSystem;
    use object_store::memory::InMemory;
    use std::time::Instant;

    fn fast_retry() -> RetryPolicy {
        RetryPolicy {
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(5),
            max_elapsed: Duration::from_secs(10),
            attempt_timeout: Duration::from_secs(5),
        }
    }

    fn backends() -> Vec<(&'static str, Arc<dyn ObjectStore>, Option<tempfile::TempDir>)> {
        let dir = tempfile::tempdir().expect("tempdir");
        let local = LocalFileSystem::new_with_prefix(dir.path()).expect("local");
        vec![("memory", Arc::new(InMemory::new()), None), ("local", Arc::new(local), Some(dir))]
    }

    #[test]
    fn wal_keys() {
        let s = ObjectStorage::new(Arc::new(InMemory::new()), "/cluster-a/");
        assert_eq!(s.wal_key(3, "0f1e", 42), "cluster-a/wal/3/0f1e-00000000000000000042");
        let s = ObjectStorage::new(Arc::new(InMemory::new()), "");
        assert_eq!(s.wal_key(-1, "i", u64::MAX), "wal/-1/i-18446744073709551615");
        // Zero padding keeps lexicographic order equal to sequence order.
        assert!(s.wal_key(1, "i", 9) < s.wal_key(1, "i", 10));
    }

    #[test]
    fn seg_keys() {
        let s = ObjectStorage::new(Arc::new(InMemory::new()), "/cluster-a/");
        let id = [0xab; 16];
        let k = s.seg_key(id, 7, 42, "u1");
        assert_eq!(k, "cluster-a/seg/abababab-abab-abab-abab-abababababab/7/00000000000000000042-u1");
        assert!(s.is_segment_key(&k));
        assert!(!s.is_segment_key(&s.wal_key(1, "i", 1)));
        let s = ObjectStorage::new(Arc::new(InMemory::new()), "");
        assert!(s.is_segment_key(&s.seg_key(id, 0, 0, "u")));
        assert!(!s.is_segment_key(&s.wal_key(1, "i", 1)));
        assert!(s.seg_key(id, 0, 9, "u") < s.seg_key(id, 0, 10, "u"));
    }

    #[tokio::test]
    async fn put_get_list_delete_on_each_backend() {
        for (name, store, _dir) in backends() {
            let s = ObjectStorage::new(store, "pfx").with_retry(fast_retry());
            let k1 = s.wal_key(1, "inc", 1);
            let k2 = s.wal_key(1, "inc", 2);
            let k10 = s.wal_key(10, "inc", 1);
            s.put_new(&k2, Bytes::from_static(b"second")).await.expect(name);
            s.put_new(&k1, Bytes::from_static(b"first!")).await.expect(name);
            s.put_new(&k10, Bytes::from_static(b"other")).await.expect(name);

            // Create-only: a second PUT of the key fails, even with the same bytes, and the
            // object is unchanged.
            let e = s.put_new(&k1, Bytes::from_static(b"XXXXXX")).await.expect_err(name);
            assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{name}: {e}");
            let e = s.put_new(&k1, Bytes::from_static(b"first!")).await.expect_err(name);
            assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{name}: {e}");
            assert_eq!(s.get(&k1).await.expect(name), Bytes::from_static(b"first!"));

            assert_eq!(s.get_range(&k1, 1..4).await.expect(name), Bytes::from_static(b"irs"));
            assert_eq!(s.get_range(&k1, 3..3).await.expect(name), Bytes::new());
            let e = s.get_range(&k1, 3..7).await.expect_err(name);
            assert_eq!(e.kind(), ErrorKind::Invalid, "{name}: {e}");
            assert_eq!(s.head(&k1).await.expect(name).size, 6);

            let e = s.get(&s.wal_key(1, "inc", 99)).await.expect_err(name);
            assert_eq!(e.kind(), ErrorKind::NotFound, "{name}: {e}");

            let listed: Vec<String> = s.list(&s.wal_dir(1)).await.expect(name).into_iter().map(|o| o.key).collect();
            assert_eq!(listed, vec![k1.clone(), k2.clone()], "{name}: wal/1 must not match wal/10");
            assert_eq!(s.list("").await.expect(name).len(), 3);

            s.delete(&k1).await.expect(name);
            s.delete(&k1).await.expect("deleting a missing object succeeds");
            assert_eq!(s.get(&k1).await.expect_err(name).kind(), ErrorKind::NotFound);
            s.check().await.expect(name);

            let snap = s.stats().snapshot();
            assert_eq!(snap.puts, 3, "{name}");
            assert_eq!(snap.put_bytes, 17, "{name}");
            assert_eq!(snap.deletes, 2, "{name}");

            let e = s.put_new("", Bytes::new()).await.expect_err("empty key");
            assert_eq!(e.kind(), ErrorKind::Invalid);
            let e = s.put_new("a/../b", Bytes::new()).await.expect_err("bad key");
            assert_eq!(e.kind(), ErrorKind::Invalid);
        }
    }

    #[tokio::test]
    async fn retries_through_injected_errors() {
        for seed in 0..8u64 {
            let faults = FaultInjectingStore::new(Arc::new(InMemory::new()), seed);
            faults.set_error_probability(0.5);
            let s = ObjectStorage::new(Arc::new(faults.clone()), "").with_retry(fast_retry()).with_jitter_seed(seed);
            for i in 0..20 {
                let key = s.wal_key(0, "inc", i);
                let data = Bytes::from(format!("object {i}"));
                s.put_new(&key, data.clone()).await.unwrap_or_else(|e| panic!("seed {seed}: {e}"));
                assert_eq!(s.get(&key).await.unwrap_or_else(|e| panic!("seed {seed}: {e}")), data);
            }
            assert!(faults.counts().injected_errors > 0, "seed {seed}");
            assert!(s.stats().snapshot().retries > 0, "seed {seed}");
        }
    }

    #[tokio::test]
    async fn lost_put_response_is_recognised_on_retry() {
        for (name, store, _dir) in backends() {
            let faults = FaultInjectingStore::new(store, 3);
            let s = ObjectStorage::new(Arc::new(faults.clone()), "").with_retry(fast_retry());
            faults.set_lose_put_response_probability(1.0);
            let key = s.wal_key(0, "inc", 0);
            // The first PUT lands but its response is lost. The retry's PUT gets AlreadyExists
            // (an error, so there is no success response to lose) and finds our bytes.
            let data = Bytes::from_static(b"payload");
            s.put_new(&key, data.clone()).await.unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(faults.counts().lost_responses, 1, "{name}");
            faults.heal();
            assert_eq!(s.get(&key).await.expect(name), data);
        }
    }

    #[tokio::test]
    async fn foreign_object_on_retry_is_not_success() {
        // Simulate: the first attempt fails before landing, and meanwhile another writer (a
        // bug: key reuse) created the key with different bytes.
        let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let faults = FaultInjectingStore::new(inner.clone(), 0);
        let s = ObjectStorage::new(Arc::new(faults.clone()), "").with_retry(fast_retry());
        let key = s.wal_key(0, "inc", 0);
        inner.put(&Path::from(key.as_str()), PutPayload::from_static(b"someone else")).await.expect("put");
        // First attempt sees AlreadyExists directly: error.
        let e = s.put_new(&key, Bytes::from_static(b"ours")).await.expect_err("exists");
        assert_eq!(e.kind(), ErrorKind::AlreadyExists);
        // Via a retry (first attempt fails with an injected error before reaching the store).
        let err = ObjectStorage::new(Arc::new(faults.clone()), "")
            .with_retry(fast_retry())
            .put_attempt(&key, &Path::from(key.as_str()), Bytes::from_static(b"ours"), 1)
            .await
            .expect_err("foreign bytes");
        assert_eq!(err.kind(), ErrorKind::AlreadyExists);
    }

    #[tokio::test]
    async fn gives_up_at_the_deadline() {
        let faults = FaultInjectingStore::new(Arc::new(InMemory::new()), 0);
        faults.set_down(true);
        let policy = RetryPolicy { max_elapsed: Duration::from_millis(100), ..fast_retry() };
        let s = ObjectStorage::new(Arc::new(faults.clone()), "").with_retry(policy);
        let start = Instant::now();
        let e = s.put_new("k", Bytes::from_static(b"x")).await.expect_err("down");
        assert!(e.is_retriable(), "{e}");
        assert!(start.elapsed() < Duration::from_secs(2));
        assert!(faults.counts().puts > 1, "retried before giving up");
        assert_eq!(s.stats().snapshot().failures, 1);
    }

    /// The retry deadline and backoff sleeps follow the injected clock: with tokio's time
    /// paused, a minute of retries against a store that is down passes without waiting.
    #[tokio::test(start_paused = true)]
    async fn retries_follow_the_injected_clock() {
        let faults = FaultInjectingStore::new(Arc::new(InMemory::new()), 0);
        faults.set_down(true);
        let policy =
            RetryPolicy { max_elapsed: Duration::from_secs(60), max_backoff: Duration::from_secs(1), ..fast_retry() };
        let clock = skiff_time::system_clock();
        let s = ObjectStorage::new(Arc::new(faults.clone()), "").with_retry(policy).with_clock(clock.clone());
        let (virtual_start, real_start) = (clock.now(), Instant::now());
        let e = s.put_new("k", Bytes::from_static(b"x")).await.expect_err("down");
        assert!(e.is_retriable(), "{e}");
        assert!(clock.now() - virtual_start >= Duration::from_secs(50), "retried for about the whole deadline");
        assert!(real_start.elapsed() < Duration::from_secs(10), "paused time does not wait for real");
        assert!(faults.counts().puts > 10, "retried many times: {}", faults.counts().puts);
    }

    #[tokio::test]
    async fn attempt_timeout_bounds_a_stuck_request() {
        let faults = FaultInjectingStore::new(Arc::new(InMemory::new()), 0);
        faults.set_latency(Duration::from_secs(60));
        let policy = RetryPolicy {
            attempt_timeout: Duration::from_millis(20),
            max_elapsed: Duration::from_millis(50),
            ..fast_retry()
        };
        let s = ObjectStorage::new(Arc::new(faults), "").with_retry(policy);
        let e = s.get("k").await.expect_err("stuck");
        assert!(matches!(e, StorageError::Timeout { .. }), "{e}");
    }

    #[tokio::test]
    async fn wal_object_round_trip_through_storage() {
        let s = ObjectStorage::new(Arc::new(InMemory::new()), "").with_retry(fast_retry());
        let mut b = WalObjectBuilder::new();
        for p in 0..2000 {
            b.add_section([7; 16], p, 0, 0, 0, &[Bytes::from_static(b"batch")]).expect("valid");
        }
        let (obj, metas) = b.finish();
        let key = s.wal_key(0, "inc", 0);
        s.put_new(&key, obj.clone()).await.expect("put");
        // The footer (~128 KiB) is larger than the first tail guess: two GETs.
        let footer = s.read_wal_footer(&key, obj.len() as u64).await.expect("footer");
        assert_eq!(footer, metas);
        let m = &metas[1234];
        let section = s.get_range(&key, m.byte_range()).await.expect("section");
        crate::format::verify_section(&section, m).expect("crc");
    }

    /// A store without create-only PUT, to exercise the fallback.
    #[derive(Debug)]
    struct NoCreate(InMemory);

    impl std::fmt::Display for NoCreate {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "NoCreate")
        }
    }

    #[async_trait::async_trait]
    impl ObjectStore for NoCreate {
        async fn put_opts(
            &self,
            location: &Path,
            payload: PutPayload,
            opts: PutOptions,
        ) -> object_store::Result<object_store::PutResult> {
            if matches!(opts.mode, PutMode::Create) {
                return Err(object_store::Error::NotImplemented);
            }
            self.0.put_opts(location, payload, opts).await
        }
        async fn put_multipart_opts(
            &self,
            location: &Path,
            opts: object_store::PutMultipartOptions,
        ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
            self.0.put_multipart_opts(location, opts).await
        }
        async fn get_opts(
            &self,
            location: &Path,
            options: object_store::GetOptions,
        ) -> object_store::Result<object_store::GetResult> {
            self.0.get_opts(location, options).await
        }
        async fn delete(&self, location: &Path) -> object_store::Result<()> {
            self.0.delete(location).await
        }
        fn list(
            &self,
            prefix: Option<&Path>,
        ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>> {
            self.0.list(prefix)
        }
        async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<object_store::ListResult> {
            self.0.list_with_delimiter(prefix).await
        }
        async fn copy(&self, from: &Path, to: &Path) -> object_store::Result<()> {
            self.0.copy(from, to).await
        }
        async fn copy_if_not_exists(&self, from: &Path, to: &Path) -> object_store::Result<()> {
            self.0.copy_if_not_exists(from, to).await
        }
    }

    #[tokio::test]
    async fn falls_back_when_create_is_unsupported() {
        let s = ObjectStorage::new(Arc::new(NoCreate(InMemory::new())), "").with_retry(fast_retry());
        s.put_new("a", Bytes::from_static(b"1")).await.expect("put");
        let e = s.put_new("a", Bytes::from_static(b"2")).await.expect_err("exists");
        assert_eq!(e.kind(), ErrorKind::AlreadyExists);
        assert_eq!(s.get("a").await.expect("get"), Bytes::from_static(b"1"));
    }
}
