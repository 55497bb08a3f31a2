//! Process metrics, rendered as Prometheus text on the HTTP listener's `/metrics`.
//!
//! Lock-free counters and fixed-bucket histograms on the hot paths; the per-topic request
//! attribution takes a short mutex once per flush and per object read.
//!
//! Object-storage cost is an estimate: each PUT is shared among the topics in the object by
//! their bytes in it; each GET is charged to the topic whose chunk was read (one GET per block
//! that missed the caches, approximated as the chunk's size over the block size). Prices per
//! 1,000 requests are configurable (AWS S3 Standard by default).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use skiff_storage::LatencyHistogram;
use skiff_storage::cache::BlockCacheStats;
use skiff_storage::store::StorageStats;
use uuid::Uuid;

/// Flush sizes, in bytes.
const SIZE_BUCKETS: [u64; 9] = [16 << 10, 64 << 10, 256 << 10, 512 << 10, 1 << 20, 2 << 20, 4 << 20, 8 << 20, 16 << 20];

/// Partitions per flush (RFC 0002's k: index entries one flush commits).
const PARTITION_BUCKETS: [u64; 11] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024];

#[derive(Default)]
struct CountHistogram {
    buckets: [AtomicU64; PARTITION_BUCKETS.len()],
    count: AtomicU64,
    sum: AtomicU64,
}

impl CountHistogram {
    fn observe(&self, n: u64) {
        for (i, le) in PARTITION_BUCKETS.iter().enumerate() {
            if n <= *le {
                self.buckets[i].fetch_add(1, Relaxed);
            }
        }
        self.count.fetch_add(1, Relaxed);
        self.sum.fetch_add(n, Relaxed);
    }
}

/// The compactor's adaptive pace at its last pass (RFC 0002, "Adaptive pace").
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct CompactionPace {
    /// Un-compacted WAL chunks of the partitions this broker leads.
    pub hot_chunks: u64,
    /// Chunks this broker's flushes added per second since the previous pass.
    pub chunks_per_second: f64,
    pub period: Duration,
    pub min_age: Duration,
}

#[derive(Default)]
struct SizeHistogram {
    buckets: [AtomicU64; SIZE_BUCKETS.len()],
    count: AtomicU64,
    sum: AtomicU64,
}

impl SizeHistogram {
    fn observe(&self, bytes: u64) {
        for (i, le) in SIZE_BUCKETS.iter().enumerate() {
            if bytes <= *le {
                self.buckets[i].fetch_add(1, Relaxed);
            }
        }
        self.count.fetch_add(1, Relaxed);
        self.sum.fetch_add(bytes, Relaxed);
    }
}

/// Requests attributed to one topic.
#[derive(Debug, Default, Clone, Copy)]
struct TopicRequests {
    puts: f64,
    gets: f64,
}

/// Object-storage prices in dollars per 1,000 requests (and per GB-month stored).
#[derive(Debug, Clone, Copy)]
pub struct Prices {
    pub put_per_1000: f64,
    pub get_per_1000: f64,
    /// Storage, dollars per GB-month (the console's cost per day).
    pub storage_per_gb_month: f64,
}

impl Default for Prices {
    /// AWS S3 Standard (us-east-1): PUT/COPY/POST/LIST $0.005, GET $0.0004 per 1,000; storage
    /// $0.023 per GB-month (first 50 TB).
    fn default() -> Self {
        Self { put_per_1000: 0.005, get_per_1000: 0.0004, storage_per_gb_month: 0.023 }
    }
}

impl Prices {
    /// The request cost of `puts` PUTs and `gets` GETs, in dollars.
    pub fn requests(&self, puts: f64, gets: f64) -> f64 {
        puts * self.put_per_1000 / 1000.0 + gets * self.get_per_1000 / 1000.0
    }
}

/// Estimated memory of one chunk in the metadata image: a 56-byte `Chunk` plus its `i64` key
/// in a `BTreeMap` whose nodes are about half full under appends (RFC 0002's cost model uses
/// 100 bytes).
pub const CHUNK_INDEX_BYTES: u64 = 112;
/// Estimated memory of one object-table entry, besides its key: `Arc<str>` and `ObjectInfo` in
/// a half-full `BTreeMap` node, plus the key's allocation header.
pub const OBJECT_INDEX_BYTES: u64 = 100;

/// The chunk index this broker's metadata image holds (every partition's, as replayed).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IndexSize {
    /// Chunks in WAL objects (not yet compacted into segments).
    pub uncompacted_chunks: u64,
    /// All chunks.
    pub chunks: u64,
    /// Object-table entries, referenced or waiting for garbage collection.
    pub objects: u64,
    /// Bytes of the object keys.
    pub object_key_bytes: u64,
}

impl IndexSize {
    /// An estimate of the index's memory in bytes (structs, not measured).
    pub fn estimated_bytes(&self) -> u64 {
        self.chunks * CHUNK_INDEX_BYTES + self.objects * OBJECT_INDEX_BYTES + self.object_key_bytes
    }

    /// The gauges `/metrics` shows for it.
    pub fn gauges(&self) -> [(&'static str, &'static str, f64); 4] {
        [
            (
                "skiff_index_uncompacted_chunks",
                "Index entries (chunks) in WAL objects, not yet compacted into segments, in this broker's metadata image.",
                self.uncompacted_chunks as f64,
            ),
            ("skiff_index_chunks", "Index entries (chunks) in this broker's metadata image.", self.chunks as f64),
            (
                "skiff_index_objects",
                "Object-table entries in this broker's metadata image (referenced or awaiting garbage collection).",
                self.objects as f64,
            ),
            (
                "skiff_index_bytes",
                "Estimated memory of the chunk index and object table in this broker's metadata image.",
                self.estimated_bytes() as f64,
            ),
        ]
    }
}

/// Everything Skiff counts.
#[derive(Default)]
pub struct Metrics {
    pub requests: AtomicU64,
    pub request_errors: AtomicU64,
    pub connections_open: AtomicU64,
    pub connections_total: AtomicU64,
    /// Connections closed at once: `max_connections_per_ip` reached.
    pub connections_refused_per_ip: AtomicU64,
    /// Connections closed for being idle (`connections_max_idle`).
    pub connections_closed_idle: AtomicU64,
    /// Connections closed because a started frame did not arrive in `request_read_timeout`.
    pub connections_closed_slow: AtomicU64,
    /// TLS handshakes that failed or did not finish in time.
    pub tls_handshake_failures: AtomicU64,
    /// Successful SASL authentications (re-authentications included).
    pub auth_successes: AtomicU64,
    /// Failed authentications: SASL failures, requests breaking the SASL order (the connection
    /// is closed), client certificates no mapping rule accepts.
    pub auth_failures: AtomicU64,
    /// Of `auth_failures`, those on the HTTP listener (wrong Basic password, refused token).
    pub http_auth_failures: AtomicU64,
    pub produced_bytes: AtomicU64,
    pub produced_batches: AtomicU64,
    pub fetched_bytes: AtomicU64,
    flushes_size: AtomicU64,
    flushes_interval: AtomicU64,
    flushes_shutdown: AtomicU64,
    flushes_idle: AtomicU64,
    flush_failures: AtomicU64,
    flush_sizes: SizeHistogram,
    flush_partitions: CountHistogram,
    compaction_pace: Mutex<CompactionPace>,
    tail_hits: AtomicU64,
    tail_misses: AtomicU64,
    compactions: AtomicU64,
    compactions_rejected: AtomicU64,
    compacted_chunks: AtomicU64,
    compacted_bytes: AtomicU64,
    objects_deleted_unreferenced: AtomicU64,
    objects_deleted_orphan: AtomicU64,
    retention_advances: AtomicU64,
    commit_latency: LatencyHistogram,
    topic_requests: Mutex<HashMap<Uuid, TopicRequests>>,
    cleaner: Mutex<CleanerMetrics>,
    /// Record bytes to and from clients by (direction, client rack, same rack): the
    /// cross-zone traffic an operator pays for (RFC 0005).
    client_bytes: Mutex<BTreeMap<(Direction, String, SameRack), u64>>,
}

/// Which way record bytes went between this broker and a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Direction {
    /// Produced: client → broker.
    In,
    /// Fetched: broker → client.
    Out,
}

/// Whether the client's rack is the broker's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SameRack {
    True,
    False,
    /// The client or the broker gave no rack.
    Unknown,
}

impl SameRack {
    pub fn of(client_rack: &str, broker_rack: Option<&str>) -> Self {
        match broker_rack {
            Some(b) if !client_rack.is_empty() => {
                if b == client_rack {
                    SameRack::True
                } else {
                    SameRack::False
                }
            }
            _ => SameRack::Unknown,
        }
    }
}

/// Distinct client racks kept as labels; the rack comes from the client, so beyond this many
/// further racks share the label `(other)` (bounded series).
const MAX_CLIENT_RACKS: usize = 64;

/// What one cleaner pass did, for the metrics (`log/background/cleaner`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CleanerPassStats {
    pub read_bytes: u64,
    pub written_bytes: u64,
    /// Bytes of the chunks the pass planned to read: clean section plus dirty range.
    pub cleanable_bytes: u64,
    pub gets: u64,
    pub puts: u64,
    pub deletes: u64,
    pub records_removed: u64,
}

#[derive(Default)]
struct CleanerMetrics {
    /// Passes by result: committed, rejected, abandoned, failed.
    passes: BTreeMap<&'static str, u64>,
    /// Per topic: totals, and the last pass.
    topics: HashMap<Uuid, (CleanerPassStats, CleanerPassStats)>,
    max_dirty_ratio: f64,
}

/// What `/metrics` shows besides the counters kept here.
pub struct Snapshot<'a> {
    pub gauges: &'a [(&'a str, &'a str, f64)],
    pub storage: &'a StorageStats,
    pub blocks: &'a BlockCacheStats,
    /// Topic id → name, for the per-topic cost.
    pub topic_names: &'a HashMap<Uuid, String>,
    pub prices: Prices,
}

impl Metrics {
    /// Counts record bytes produced by (`In`) or fetched by (`Out`) a client in `client_rack`
    /// ("" when the client gave none) at a broker in `broker_rack`:
    /// `skiff_client_bytes_total{direction, client_rack, same_rack}`.
    pub fn client_bytes(&self, direction: Direction, client_rack: &str, broker_rack: Option<&str>, bytes: u64) {
        if bytes == 0 {
            return;
        }
        let same = SameRack::of(client_rack, broker_rack);
        let mut map = self.client_bytes.lock().unwrap_or_else(|p| p.into_inner());
        let known = map.keys().any(|(_, r, _)| r == client_rack);
        let racks = || map.keys().map(|(_, r, _)| r).collect::<std::collections::BTreeSet<_>>().len();
        let rack = if known || racks() < MAX_CLIENT_RACKS { client_rack } else { "(other)" };
        *map.entry((direction, rack.to_string(), same)).or_default() += bytes;
    }

    pub fn flush(&self, reason: &str, bytes: usize) {
        match reason {
            "size" => &self.flushes_size,
            "shutdown" => &self.flushes_shutdown,
            "idle" => &self.flushes_idle,
            _ => &self.flushes_interval,
        }
        .fetch_add(1, Relaxed);
        self.flush_sizes.observe(bytes as u64);
    }
    /// One flush built with `n` partitions (each one index entry once committed).
    pub fn flush_partitions(&self, n: usize) {
        self.flush_partitions.observe(n as u64);
    }
    /// Index entries (chunks) this broker's flushes have added so far: the compactor's rate.
    pub fn flushed_chunks(&self) -> u64 {
        self.flush_partitions.sum.load(Relaxed)
    }
    /// The compactor's pace, set after each pass.
    pub fn set_compaction_pace(&self, pace: CompactionPace) {
        *self.compaction_pace.lock().unwrap_or_else(|p| p.into_inner()) = pace;
    }
    pub fn flush_failed(&self) {
        self.flush_failures.fetch_add(1, Relaxed);
    }
    /// Time from the first byte entering a flush to its commit being applied.
    pub fn commit_latency(&self, d: Duration) {
        self.commit_latency.observe(d);
    }
    pub fn tail_read(&self, hit: bool) {
        if hit { &self.tail_hits } else { &self.tail_misses }.fetch_add(1, Relaxed);
    }
    /// A committed compaction: `chunks` index entries rewritten into one segment of `bytes`.
    pub fn compaction(&self, chunks: u64, bytes: u64) {
        self.compactions.fetch_add(1, Relaxed);
        self.compacted_chunks.fetch_add(chunks, Relaxed);
        self.compacted_bytes.fetch_add(bytes, Relaxed);
    }
    /// A compaction whose index swap the controller rejected (its segment is deleted).
    pub fn compaction_rejected(&self) {
        self.compactions_rejected.fetch_add(1, Relaxed);
    }
    /// Objects deleted by garbage collection; `kind` is "unreferenced" or "orphan".
    pub fn objects_deleted(&self, kind: &str, n: u64) {
        if kind == "orphan" { &self.objects_deleted_orphan } else { &self.objects_deleted_unreferenced }
            .fetch_add(n, Relaxed);
    }
    /// A log start offset advanced by retention.
    pub fn retention_advanced(&self) {
        self.retention_advances.fetch_add(1, Relaxed);
    }

    /// One cleaner pass over a partition of `topic` ended with `result` (committed, rejected,
    /// abandoned, failed). Its GETs and PUTs are charged to the topic's cost estimate.
    pub fn cleaner_pass(&self, topic: Uuid, result: &'static str, stats: CleanerPassStats) {
        {
            let mut c = self.cleaner.lock().unwrap_or_else(|p| p.into_inner());
            *c.passes.entry(result).or_default() += 1;
            let (total, last) = c.topics.entry(topic).or_default();
            total.read_bytes += stats.read_bytes;
            total.written_bytes += stats.written_bytes;
            total.cleanable_bytes += stats.cleanable_bytes;
            total.gets += stats.gets;
            total.puts += stats.puts;
            total.deletes += stats.deletes;
            total.records_removed += stats.records_removed;
            *last = stats;
        }
        let mut map = self.topic_requests.lock().unwrap_or_else(|p| p.into_inner());
        let r = map.entry(topic).or_default();
        r.puts += stats.puts as f64;
        r.gets += stats.gets as f64;
    }

    /// The largest dirty ratio among this broker's compacted partitions at the last check.
    pub fn cleaner_max_dirty_ratio(&self, ratio: f64) {
        self.cleaner.lock().unwrap_or_else(|p| p.into_inner()).max_dirty_ratio = ratio;
    }

    /// Object-storage requests attributed to each topic so far, as (PUTs, GETs) (the console's
    /// per-topic cost).
    pub fn topic_requests(&self) -> HashMap<Uuid, (f64, f64)> {
        let map = self.topic_requests.lock().unwrap_or_else(|p| p.into_inner());
        map.iter().map(|(id, r)| (*id, (r.puts, r.gets))).collect()
    }

    /// Shares one PUT among topics by their bytes in the object.
    pub fn attribute_put(&self, topic_bytes: &[(Uuid, u64)]) {
        let total: u64 = topic_bytes.iter().map(|(_, b)| b).sum();
        if total == 0 {
            return;
        }
        let mut map = self.topic_requests.lock().unwrap_or_else(|p| p.into_inner());
        for (topic, bytes) in topic_bytes {
            map.entry(*topic).or_default().puts += *bytes as f64 / total as f64;
        }
    }

    /// Charges `gets` GET requests to `topic`.
    pub fn attribute_gets(&self, topic: Uuid, gets: f64) {
        let mut map = self.topic_requests.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(topic).or_default().gets += gets;
    }

    /// Prometheus text exposition.
    pub fn render(&self, s: &Snapshot<'_>) -> String {
        let mut out = String::with_capacity(8192);
        let help = |out: &mut String, name: &str, kind: &str, text: &str| {
            let _ = writeln!(out, "# HELP {name} {text}\n# TYPE {name} {kind}");
        };
        let counter = |out: &mut String, name: &str, text: &str, v: u64| {
            let _ = writeln!(out, "# HELP {name} {text}\n# TYPE {name} counter\n{name} {v}");
        };
        counter(&mut out, "skiff_requests_total", "Kafka requests received.", self.requests.load(Relaxed));
        counter(
            &mut out,
            "skiff_request_errors_total",
            "Frames refused (undecodable, unsupported).",
            self.request_errors.load(Relaxed),
        );
        counter(&mut out, "skiff_connections_total", "Connections accepted.", self.connections_total.load(Relaxed));
        help(&mut out, "skiff_connections_closed_total", "counter", "Connections the broker closed, by reason.");
        for (reason, v) in [
            ("max_connections_per_ip", &self.connections_refused_per_ip),
            ("idle", &self.connections_closed_idle),
            ("request_read_timeout", &self.connections_closed_slow),
            ("tls_handshake", &self.tls_handshake_failures),
        ] {
            let _ = writeln!(out, "skiff_connections_closed_total{{reason=\"{reason}\"}} {}", v.load(Relaxed));
        }
        counter(
            &mut out,
            "skiff_authentications_total",
            "Successful SASL authentications (re-authentications included).",
            self.auth_successes.load(Relaxed),
        );
        counter(
            &mut out,
            "skiff_authentication_failures_total",
            "Failed authentications: SASL failures, requests breaking the SASL order, client certificates no mapping rule accepts.",
            self.auth_failures.load(Relaxed),
        );
        counter(
            &mut out,
            "skiff_http_authentication_failures_total",
            "Failed authentications on the HTTP listener (also counted in skiff_authentication_failures_total).",
            self.http_auth_failures.load(Relaxed),
        );
        counter(
            &mut out,
            "skiff_produced_bytes_total",
            "Record-batch bytes accepted.",
            self.produced_bytes.load(Relaxed),
        );
        counter(
            &mut out,
            "skiff_produced_batches_total",
            "Record batches accepted.",
            self.produced_batches.load(Relaxed),
        );
        counter(
            &mut out,
            "skiff_fetched_bytes_total",
            "Record-batch bytes returned to consumers.",
            self.fetched_bytes.load(Relaxed),
        );
        counter(
            &mut out,
            "skiff_flush_failures_total",
            "Flushes whose PUT or commit failed (their produces got a retriable error).",
            self.flush_failures.load(Relaxed),
        );

        help(&mut out, "skiff_flushes_total", "counter", "Write-ahead buffer flushes by reason.");
        let _ = writeln!(out, "skiff_flushes_total{{reason=\"size\"}} {}", self.flushes_size.load(Relaxed));
        let _ = writeln!(out, "skiff_flushes_total{{reason=\"interval\"}} {}", self.flushes_interval.load(Relaxed));
        let _ = writeln!(out, "skiff_flushes_total{{reason=\"shutdown\"}} {}", self.flushes_shutdown.load(Relaxed));
        let _ = writeln!(out, "skiff_flushes_total{{reason=\"idle\"}} {}", self.flushes_idle.load(Relaxed));

        help(&mut out, "skiff_flush_bytes", "histogram", "Bytes per flushed object.");
        for (i, le) in SIZE_BUCKETS.iter().enumerate() {
            let _ =
                writeln!(out, "skiff_flush_bytes_bucket{{le=\"{le}\"}} {}", self.flush_sizes.buckets[i].load(Relaxed));
        }
        let n = self.flush_sizes.count.load(Relaxed);
        let _ = writeln!(
            out,
            "skiff_flush_bytes_bucket{{le=\"+Inf\"}} {n}\nskiff_flush_bytes_sum {}\nskiff_flush_bytes_count {n}",
            self.flush_sizes.sum.load(Relaxed)
        );

        help(
            &mut out,
            "skiff_flush_partitions",
            "histogram",
            "Partitions per flushed object (index entries each flush commits).",
        );
        for (i, le) in PARTITION_BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "skiff_flush_partitions_bucket{{le=\"{le}\"}} {}",
                self.flush_partitions.buckets[i].load(Relaxed)
            );
        }
        let n = self.flush_partitions.count.load(Relaxed);
        let _ = writeln!(
            out,
            "skiff_flush_partitions_bucket{{le=\"+Inf\"}} {n}\nskiff_flush_partitions_sum {}\nskiff_flush_partitions_count {n}",
            self.flush_partitions.sum.load(Relaxed)
        );

        help(
            &mut out,
            "skiff_flush_commit_seconds",
            "histogram",
            "First byte buffered to commit applied (produce latency floor).",
        );
        self.commit_latency.render(&mut out, "skiff_flush_commit_seconds", "");

        // Object storage.
        let st = s.storage;
        help(
            &mut out,
            "skiff_object_requests_total",
            "counter",
            "Object-storage requests that succeeded, by operation.",
        );
        for (op, c) in
            [("put", &st.puts), ("get", &st.gets), ("head", &st.heads), ("delete", &st.deletes), ("list", &st.lists)]
        {
            let _ = writeln!(out, "skiff_object_requests_total{{op=\"{op}\"}} {}", c.load(Relaxed));
        }
        help(&mut out, "skiff_object_bytes_total", "counter", "Bytes moved to and from object storage.");
        let _ = writeln!(out, "skiff_object_bytes_total{{op=\"put\"}} {}", st.put_bytes.load(Relaxed));
        let _ = writeln!(out, "skiff_object_bytes_total{{op=\"get\"}} {}", st.get_bytes.load(Relaxed));
        counter(
            &mut out,
            "skiff_object_retries_total",
            "Object-storage attempts that failed retriably and were retried.",
            st.retries.load(Relaxed),
        );
        counter(
            &mut out,
            "skiff_object_failures_total",
            "Object-storage operations that failed after retries.",
            st.failures.load(Relaxed),
        );
        help(
            &mut out,
            "skiff_object_request_seconds",
            "histogram",
            "Object-storage operation latency, retries included.",
        );
        st.put_latency.render(&mut out, "skiff_object_request_seconds", "op=\"put\"");
        st.get_latency.render(&mut out, "skiff_object_request_seconds", "op=\"get\"");
        st.delete_latency.render(&mut out, "skiff_object_request_seconds", "op=\"delete\"");

        // Caches.
        help(&mut out, "skiff_cache_reads_total", "counter", "Cache lookups by cache and outcome.");
        let _ =
            writeln!(out, "skiff_cache_reads_total{{cache=\"tail\",result=\"hit\"}} {}", self.tail_hits.load(Relaxed));
        let _ = writeln!(
            out,
            "skiff_cache_reads_total{{cache=\"tail\",result=\"miss\"}} {}",
            self.tail_misses.load(Relaxed)
        );
        let _ =
            writeln!(out, "skiff_cache_reads_total{{cache=\"block\",result=\"hit\"}} {}", s.blocks.hits.load(Relaxed));
        let _ = writeln!(
            out,
            "skiff_cache_reads_total{{cache=\"block\",result=\"miss\"}} {}",
            s.blocks.misses.load(Relaxed)
        );
        let ratio = |h: u64, m: u64| if h + m == 0 { 0.0 } else { h as f64 / (h + m) as f64 };
        help(&mut out, "skiff_cache_hit_ratio", "gauge", "Hits over lookups since start.");
        let _ = writeln!(
            out,
            "skiff_cache_hit_ratio{{cache=\"tail\"}} {}",
            ratio(self.tail_hits.load(Relaxed), self.tail_misses.load(Relaxed))
        );
        let _ = writeln!(
            out,
            "skiff_cache_hit_ratio{{cache=\"block\"}} {}",
            ratio(s.blocks.hits.load(Relaxed), s.blocks.misses.load(Relaxed))
        );

        // Estimated request cost per topic.
        let map = self.topic_requests.lock().unwrap_or_else(|p| p.into_inner()).clone();
        help(
            &mut out,
            "skiff_topic_object_requests",
            "counter",
            "Object-storage requests attributed to a topic (PUTs shared by bytes).",
        );
        help(
            &mut out,
            "skiff_topic_object_cost_dollars",
            "counter",
            "Estimated object-storage request cost per topic.",
        );
        let mut rows: Vec<(&str, TopicRequests)> =
            map.iter().map(|(id, r)| (s.topic_names.get(id).map(String::as_str).unwrap_or("(deleted)"), *r)).collect();
        rows.sort_by(|a, b| a.0.cmp(b.0));
        for (name, r) in rows {
            let _ = writeln!(out, "skiff_topic_object_requests{{topic=\"{name}\",op=\"put\"}} {:.3}", r.puts);
            let _ = writeln!(out, "skiff_topic_object_requests{{topic=\"{name}\",op=\"get\"}} {:.3}", r.gets);
            let cost = s.prices.requests(r.puts, r.gets);
            let _ = writeln!(out, "skiff_topic_object_cost_dollars{{topic=\"{name}\"}} {cost:.9}");
        }

        counter(
            &mut out,
            "skiff_compactions_total",
            "Compactions committed (chunks rewritten into one segment).",
            self.compactions.load(Relaxed),
        );
        counter(
            &mut out,
            "skiff_compactions_rejected_total",
            "Compactions whose index swap was rejected (raced retention or another compactor).",
            self.compactions_rejected.load(Relaxed),
        );
        counter(
            &mut out,
            "skiff_compacted_chunks_total",
            "Index chunks replaced by compaction.",
            self.compacted_chunks.load(Relaxed),
        );
        counter(
            &mut out,
            "skiff_compacted_bytes_total",
            "Record-batch bytes rewritten by compaction.",
            self.compacted_bytes.load(Relaxed),
        );
        {
            let pace = *self.compaction_pace.lock().unwrap_or_else(|p| p.into_inner());
            for (name, text, v) in [
                (
                    "skiff_compaction_hot_chunks",
                    "Un-compacted WAL chunks of the partitions this broker leads, at the compactor's last pass.",
                    pace.hot_chunks as f64,
                ),
                (
                    "skiff_compaction_chunk_rate",
                    "Index entries per second this broker's flushes added, as the compactor last measured it.",
                    pace.chunks_per_second,
                ),
                (
                    "skiff_compaction_period_seconds",
                    "The compactor's current period (adaptive: shrinks as the un-compacted index grows).",
                    pace.period.as_secs_f64(),
                ),
                (
                    "skiff_compaction_min_age_seconds",
                    "The age a WAL chunk must reach before the compactor rewrites it (adaptive).",
                    pace.min_age.as_secs_f64(),
                ),
            ] {
                let _ = writeln!(out, "# HELP {name} {text}\n# TYPE {name} gauge\n{name} {v}");
            }
        }
        {
            let c = self.cleaner.lock().unwrap_or_else(|p| p.into_inner());
            help(&mut out, "skiff_cleaner_passes_total", "counter", "Log cleaner passes by result.");
            for result in ["committed", "rejected", "abandoned", "failed"] {
                let n = c.passes.get(result).copied().unwrap_or(0);
                let _ = writeln!(out, "skiff_cleaner_passes_total{{result=\"{result}\"}} {n}");
            }
            let mut rows: Vec<(&str, (CleanerPassStats, CleanerPassStats))> = c
                .topics
                .iter()
                .map(|(id, v)| (s.topic_names.get(id).map(String::as_str).unwrap_or("(deleted)"), *v))
                .collect();
            rows.sort_by(|a, b| a.0.cmp(b.0));
            help(&mut out, "skiff_cleaner_requests_total", "counter", "Object-storage requests of the log cleaner.");
            for (name, (t, _)) in &rows {
                for (kind, n) in [("get", t.gets), ("put", t.puts), ("delete", t.deletes)] {
                    let _ = writeln!(out, "skiff_cleaner_requests_total{{topic=\"{name}\",kind=\"{kind}\"}} {n}");
                }
            }
            help(&mut out, "skiff_cleaner_bytes_total", "counter", "Bytes the log cleaner read and wrote.");
            for (name, (t, _)) in &rows {
                for (dir, n) in [("read", t.read_bytes), ("written", t.written_bytes)] {
                    let _ = writeln!(out, "skiff_cleaner_bytes_total{{topic=\"{name}\",direction=\"{dir}\"}} {n}");
                }
            }
            help(
                &mut out,
                "skiff_cleaner_records_removed_total",
                "counter",
                "Records the log cleaner removed (superseded, expired tombstones, keyless).",
            );
            for (name, (t, _)) in &rows {
                let _ = writeln!(out, "skiff_cleaner_records_removed_total{{topic=\"{name}\"}} {}", t.records_removed);
            }
            for (metric, text, get) in [
                (
                    "read_bytes",
                    "Bytes read by the last cleaner pass.",
                    (|p: &CleanerPassStats| p.read_bytes) as fn(&CleanerPassStats) -> u64,
                ),
                ("written_bytes", "Bytes written by the last cleaner pass.", |p| p.written_bytes),
                (
                    "cleanable_bytes",
                    "Cleanable bytes (clean section plus dirty range) of the last cleaner pass.",
                    |p| p.cleanable_bytes,
                ),
                ("gets", "GET requests of the last cleaner pass.", |p| p.gets),
                ("puts", "PUT requests of the last cleaner pass.", |p| p.puts),
            ] {
                let name_full = format!("skiff_cleaner_last_pass_{metric}");
                help(&mut out, &name_full, "gauge", text);
                for (name, (_, last)) in &rows {
                    let _ = writeln!(out, "{name_full}{{topic=\"{name}\"}} {}", get(last));
                }
            }
            let _ = writeln!(
                out,
                "# HELP skiff_cleaner_max_dirty_ratio Largest dirty ratio of this broker's compacted partitions.\n# TYPE skiff_cleaner_max_dirty_ratio gauge\nskiff_cleaner_max_dirty_ratio {}",
                c.max_dirty_ratio
            );
        }
        counter(
            &mut out,
            "skiff_retention_advances_total",
            "Log start offsets advanced by retention.ms / retention.bytes.",
            self.retention_advances.load(Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP skiff_objects_deleted_total Objects deleted by garbage collection.\n# TYPE skiff_objects_deleted_total counter"
        );
        let _ = writeln!(
            out,
            "skiff_objects_deleted_total{{reason=\"unreferenced\"}} {}",
            self.objects_deleted_unreferenced.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "skiff_objects_deleted_total{{reason=\"orphan\"}} {}",
            self.objects_deleted_orphan.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP skiff_connections_open Open client connections.\n# TYPE skiff_connections_open gauge\nskiff_connections_open {}",
            self.connections_open.load(Relaxed)
        );
        for (name, text, v) in s.gauges {
            let _ = writeln!(out, "# HELP {name} {text}\n# TYPE {name} gauge\n{name} {v}");
        }
        let client_bytes = self.client_bytes.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let _ = writeln!(
            out,
            "# HELP skiff_client_bytes_total Record bytes produced (in) and fetched (out) by clients, by the client's rack and whether it is this broker's.\n# TYPE skiff_client_bytes_total counter"
        );
        for ((direction, rack, same), bytes) in client_bytes {
            let direction = match direction {
                Direction::In => "in",
                Direction::Out => "out",
            };
            let same = match same {
                SameRack::True => "true",
                SameRack::False => "false",
                SameRack::Unknown => "unknown",
            };
            let rack = label_value(&rack);
            let _ = writeln!(
                out,
                "skiff_client_bytes_total{{direction=\"{direction}\",client_rack=\"{rack}\",same_rack=\"{same}\"}} {bytes}"
            );
        }
        out
    }
}

/// `v` escaped as a Prometheus label value (backslash, double quote, newline).
/// This process's resident set size (`VmRSS` of `/proc/self/status`), for
/// `skiff_process_resident_bytes`: the figure the memory budget (docs/observability.md, "Memory")
/// is about. `None` where there is no procfs (not Linux).
pub fn process_resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_vm_rss_bytes(&status)
}

/// `VmRSS:  1234 kB` → 1234 × 1024.
fn parse_vm_rss_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.trim_start_matches("VmRSS:").trim().strip_suffix("kB")?.trim().parse().ok()?;
    kib.checked_mul(1024)
}

fn label_value(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_bytes_by_rack() {
        let m = Metrics::default();
        m.client_bytes(Direction::Out, "az-a", Some("az-a"), 10);
        m.client_bytes(Direction::Out, "az-b", Some("az-a"), 3);
        m.client_bytes(Direction::In, "", Some("az-a"), 5);
        m.client_bytes(Direction::Out, "a\"b\n", None, 1);
        for i in 0..MAX_CLIENT_RACKS {
            m.client_bytes(Direction::Out, &format!("r{i}"), Some("az-a"), 1);
        }
        let text = m.render(&Snapshot {
            gauges: &[],
            storage: &StorageStats::default(),
            blocks: &BlockCacheStats::default(),
            topic_names: &HashMap::new(),
            prices: Prices::default(),
        });
        for line in [
            r#"skiff_client_bytes_total{direction="out",client_rack="az-a",same_rack="true"} 10"#,
            r#"skiff_client_bytes_total{direction="out",client_rack="az-b",same_rack="false"} 3"#,
            r#"skiff_client_bytes_total{direction="in",client_rack="",same_rack="unknown"} 5"#,
            r#"skiff_client_bytes_total{direction="out",client_rack="a\"b\n",same_rack="unknown"} 1"#,
            r#"skiff_client_bytes_total{direction="out",client_rack="(other)",same_rack="false"} 4"#,
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
        }
    }

    /// The index gauges and the partitions-per-flush histogram (issue #18).
    #[test]
    fn renders_index_size_and_flush_partitions() {
        let m = Metrics::default();
        for n in [1, 3, 3, 40] {
            m.flush_partitions(n);
        }
        assert_eq!(m.flushed_chunks(), 47);
        m.set_compaction_pace(CompactionPace {
            hot_chunks: 9,
            chunks_per_second: 2.5,
            period: Duration::from_secs(2),
            min_age: Duration::from_millis(1500),
        });
        let index = IndexSize { uncompacted_chunks: 7, chunks: 10, objects: 4, object_key_bytes: 200 };
        assert_eq!(index.estimated_bytes(), 10 * CHUNK_INDEX_BYTES + 4 * OBJECT_INDEX_BYTES + 200);
        let text = m.render(&Snapshot {
            gauges: &index.gauges(),
            storage: &StorageStats::default(),
            blocks: &BlockCacheStats::default(),
            topic_names: &HashMap::new(),
            prices: Prices::default(),
        });
        for line in [
            "skiff_flush_partitions_bucket{le=\"1\"} 1",
            "skiff_flush_partitions_bucket{le=\"2\"} 1",
            "skiff_flush_partitions_bucket{le=\"4\"} 3",
            "skiff_flush_partitions_bucket{le=\"32\"} 3",
            "skiff_flush_partitions_bucket{le=\"64\"} 4",
            "skiff_flush_partitions_bucket{le=\"+Inf\"} 4",
            "skiff_flush_partitions_sum 47",
            "skiff_flush_partitions_count 4",
            "skiff_index_uncompacted_chunks 7",
            "skiff_index_chunks 10",
            "skiff_index_objects 4",
            "skiff_index_bytes 1720",
            "skiff_compaction_hot_chunks 9",
            "skiff_compaction_chunk_rate 2.5",
            "skiff_compaction_period_seconds 2",
            "skiff_compaction_min_age_seconds 1.5",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
        }
    }

    #[test]
    fn renders_prometheus_text_with_costs() {
        let m = Metrics::default();
        m.flush("size", 3 << 20);
        m.commit_latency(Duration::from_millis(3));
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        m.attribute_put(&[(a, 300), (b, 100)]);
        m.attribute_put(&[(a, 10)]);
        m.attribute_gets(b, 4.0);
        let names: HashMap<Uuid, String> = [(a, "alpha".to_string()), (b, "beta".to_string())].into();
        let storage = StorageStats::default();
        let blocks = BlockCacheStats::default();
        let text = m.render(&Snapshot {
            gauges: &[("skiff_buffer_bytes", "Buffered bytes.", 5.0)],
            storage: &storage,
            blocks: &blocks,
            topic_names: &names,
            prices: Prices::default(),
        });
        assert!(text.contains("skiff_flushes_total{reason=\"size\"} 1"), "{text}");
        assert!(text.contains("skiff_flush_bytes_bucket{le=\"4194304\"} 1"));
        assert!(text.contains("skiff_flush_commit_seconds_bucket{le=\"0.005\"} 1"));
        assert!(text.contains("skiff_topic_object_requests{topic=\"alpha\",op=\"put\"} 1.750"));
        assert!(text.contains("skiff_topic_object_requests{topic=\"beta\",op=\"get\"} 4.000"));
        // beta: 0.25 PUT * $0.005/1000 + 4 GET * $0.0004/1000
        assert!(text.contains("skiff_topic_object_cost_dollars{topic=\"beta\"} 0.000002850"));
        assert!(text.contains("skiff_buffer_bytes 5"));
        m.compaction(3, 100);
        m.objects_deleted("orphan", 2);
        m.objects_deleted("unreferenced", 1);
        let text = m.render(&Snapshot {
            gauges: &[],
            storage: &storage,
            blocks: &blocks,
            topic_names: &names,
            prices: Prices::default(),
        });
        assert!(text.contains("skiff_compactions_total 1"));
        assert!(text.contains("skiff_compacted_bytes_total 100"));
        assert!(text.contains("skiff_objects_deleted_total{reason=\"orphan\"} 2"));
        assert!(text.contains("skiff_objects_deleted_total{reason=\"unreferenced\"} 1"));
        let stats = CleanerPassStats {
            read_bytes: 10,
            written_bytes: 4,
            cleanable_bytes: 10,
            gets: 2,
            puts: 1,
            deletes: 0,
            records_removed: 3,
        };
        m.cleaner_pass(a, "committed", stats);
        m.cleaner_pass(a, "rejected", CleanerPassStats { puts: 1, deletes: 1, ..Default::default() });
        m.cleaner_max_dirty_ratio(0.75);
        let text = m.render(&Snapshot {
            gauges: &[],
            storage: &storage,
            blocks: &blocks,
            topic_names: &names,
            prices: Prices::default(),
        });
        assert!(text.contains("skiff_cleaner_passes_total{result=\"committed\"} 1"), "{text}");
        assert!(text.contains("skiff_cleaner_passes_total{result=\"abandoned\"} 0"));
        assert!(text.contains("skiff_cleaner_requests_total{topic=\"alpha\",kind=\"put\"} 2"));
        assert!(text.contains("skiff_cleaner_bytes_total{topic=\"alpha\",direction=\"read\"} 10"));
        assert!(text.contains("skiff_cleaner_records_removed_total{topic=\"alpha\"} 3"));
        assert!(text.contains("skiff_cleaner_last_pass_puts{topic=\"alpha\"} 1"));
        assert!(text.contains("skiff_cleaner_max_dirty_ratio 0.75"));
        // Cleaner requests count in the topic's cost: 1.75 PUTs from flushes + 2 from the cleaner.
        assert!(text.contains("skiff_topic_object_requests{topic=\"alpha\",op=\"put\"} 3.750"));
    }

    #[test]
    fn resident_bytes_come_from_vm_rss() {
        let status = "Name:\tskiff\nVmHWM:\t  900 kB\nVmRSS:\t  1234 kB\nRssAnon:\t 1000 kB\n";
        assert_eq!(parse_vm_rss_bytes(status), Some(1234 * 1024));
        assert_eq!(parse_vm_rss_bytes("VmRSS: x kB\n"), None);
        assert_eq!(parse_vm_rss_bytes("Name: skiff\n"), None);
        if cfg!(target_os = "linux") {
            assert!(process_resident_bytes().is_some_and(|b| b > 0));
        }
    }
}
