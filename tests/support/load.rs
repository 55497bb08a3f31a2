//! Load for fault tests: idempotent producers that retry each batch until it is acknowledged
//! (as a Kafka producer with `enable.idempotence=true` and infinite retries does), and a check
//! that every acknowledged record is present exactly once at its acknowledged offset with
//! gapless offsets.
//!
//! Against one broker a producer talks to its `bootstrap` address. Against a cluster it is
//! given a [`Routing`]: it asks Metadata for its partition's leader, produces there, and on
//! NOT_LEADER_OR_FOLLOWER, LEADER_NOT_AVAILABLE or a transport error refreshes the metadata and
//! reconnects to whichever broker leads now, as a Kafka client does. [`run_consumer`] follows
//! leadership the same way and checks offsets as it reads.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use kafka_protocol::records::Compression;

use super::client::{Client, Idempotence, TestRecord, TopicMetadata, decode_records, encode_batch};

/// Kafka error codes a producer retries (the broker must only use retriable ones for storage
/// trouble). Anything else fails the test.
pub const RETRIABLE: &[i16] = &[
    3,  // UNKNOWN_TOPIC_OR_PARTITION (retriable in Kafka: metadata not yet propagated)
    5,  // LEADER_NOT_AVAILABLE
    6,  // NOT_LEADER_OR_FOLLOWER
    7,  // REQUEST_TIMED_OUT
    13, // NETWORK_EXCEPTION
    15, // COORDINATOR_NOT_AVAILABLE
    19, // NOT_ENOUGH_REPLICAS
    20, // NOT_ENOUGH_REPLICAS_AFTER_APPEND
    56, // KAFKA_STORAGE_ERROR
    74, // FENCED_LEADER_EPOCH
    75, // UNKNOWN_LEADER_EPOCH
];

/// One acknowledged record.
#[derive(Debug, Clone)]
pub struct Acked {
    pub partition: i32,
    pub offset: i64,
    pub value: Bytes,
}

/// What one producer saw.
#[derive(Debug, Default, Clone)]
pub struct ProducerReport {
    pub acked: Vec<Acked>,
    pub batches: u64,
    /// Error code → count of produce responses with it.
    pub errors: BTreeMap<i16, u64>,
    /// Requests that got no answer (timeout, closed connection, refused connect).
    pub transport_errors: u64,
    pub slowest_ack: Duration,
    /// When the slowest acknowledgement arrived.
    pub slowest_ack_at: Option<Instant>,
    /// When the producer last got an acknowledgement.
    pub last_ack: Option<Instant>,
    /// Cluster mode: leader look-ups (after start, errors 5/6 and transport errors).
    pub metadata_refreshes: u64,
}

/// Settings for [`run_producer`].
#[derive(Debug, Clone)]
pub struct ProducerSpec {
    pub bootstrap: String,
    pub topic: String,
    pub partition: i32,
    /// Distinguishes producers in record values.
    pub id: usize,
    pub records_per_batch: usize,
    pub value_bytes: usize,
    /// Between acknowledged batches (0: as fast as possible).
    pub pause: Duration,
    /// A batch that is still not acknowledged after this long fails the producer.
    pub give_up_after: Duration,
    /// When `stop` is set, drop the batch in flight instead of retrying it to the end (for a
    /// broker that was killed and will not answer).
    pub abandon_on_stop: bool,
    /// Cluster mode: find the partition leader through Metadata and follow it (`bootstrap` is
    /// then unused). Every acknowledgement is also recorded there, with the broker that gave it.
    pub routing: Option<Routing>,
    /// Wait after a retriable error or a failed connect before trying again.
    pub retry_backoff: Duration,
    /// Bound on one produce round trip; a request that times out is resent (same sequence).
    pub request_timeout: Duration,
}

/// Produces idempotent batches until `stop` is set, retrying each batch until acknowledged;
/// the batch in flight when `stop` is set is still finished (unless `abandon_on_stop`).
/// On failure the error comes with what was acknowledged before it.
pub async fn run_producer(spec: ProducerSpec, stop: Arc<AtomicBool>) -> (ProducerReport, Option<anyhow::Error>) {
    let mut report = ProducerReport::default();
    let result = produce_loop(&spec, &stop, &mut report).await;
    (report, result.err())
}

async fn produce_loop(spec: &ProducerSpec, stop: &AtomicBool, report: &mut ProducerReport) -> anyhow::Result<()> {
    let (producer_id, producer_epoch) = {
        let started = Instant::now();
        loop {
            let attempt = async {
                let mut c = match &spec.routing {
                    Some(routing) => routing.connect_any().await?,
                    None => Client::connect(&spec.bootstrap).await?,
                };
                c.set_request_timeout(spec.request_timeout);
                c.init_producer_id().await
            };
            match attempt.await {
                Ok(id) => break id,
                Err(e) if started.elapsed() < spec.give_up_after => {
                    report.transport_errors += 1;
                    let _ = e;
                    tokio::time::sleep(spec.retry_backoff.max(Duration::from_millis(100))).await;
                }
                Err(e) => return Err(e).context(format!("producer {}: InitProducerId never succeeded", spec.id)),
            }
        }
    };
    // The connection and, in cluster mode, the broker id it goes to.
    let mut conn: Option<(Client, i32)> = None;
    let mut sequence: i32 = 0;
    let mut batch_no: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        let values: Vec<Bytes> = (0..spec.records_per_batch)
            .map(|i| {
                let head = format!("p{}-b{batch_no}-r{i}-", spec.id);
                let mut v = head.into_bytes();
                v.resize(spec.value_bytes.max(v.len()), b'x');
                Bytes::from(v)
            })
            .collect();
        // Wall-clock create times: time-based retention (7 days by default, measured from the
        // records' timestamps as in Kafka) must not delete the test's records mid-run.
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(1_700_000_000_000);
        let records: Vec<TestRecord> = values
            .iter()
            .enumerate()
            .map(|(i, v)| TestRecord::new(format!("k{}-{i}", spec.id), v.clone(), now_ms))
            .collect();
        let batch = encode_batch(
            &records,
            Compression::None,
            Some(Idempotence { producer_id, producer_epoch, base_sequence: sequence }),
        );
        let started = Instant::now();
        let base_offset = loop {
            if spec.abandon_on_stop && stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            ensure!(
                started.elapsed() < spec.give_up_after,
                "producer {} ({}/{}): batch {batch_no} (sequence {sequence}) not acknowledged within {:?}; errors so far {:?}, transport errors {}",
                spec.id,
                spec.topic,
                spec.partition,
                spec.give_up_after,
                report.errors,
                report.transport_errors
            );
            if conn.is_none() {
                match connect_for_produce(spec, report).await {
                    Ok(c) => conn = Some(c),
                    Err(_) => {
                        report.transport_errors += 1;
                        tokio::time::sleep(spec.retry_backoff.max(Duration::from_millis(50))).await;
                        continue;
                    }
                }
            }
            let (c, broker) = conn.as_mut().expect("connected above");
            let broker = *broker;
            match c.produce(&spec.topic, spec.partition, batch.clone()).await {
                Ok(r) if r.error_code == 0 => {
                    if let Some(routing) = &spec.routing {
                        routing.record_ack(AckEvent {
                            at: Instant::now(),
                            partition: spec.partition,
                            broker,
                            base_offset: r.base_offset,
                        });
                    }
                    break r.base_offset;
                }
                Ok(r) if RETRIABLE.contains(&r.error_code) => {
                    *report.errors.entry(r.error_code).or_default() += 1;
                    if spec.routing.is_some() && matches!(r.error_code, 5 | 6) {
                        // Leadership moved: ask Metadata again before the retry.
                        conn = None;
                    }
                    tokio::time::sleep(spec.retry_backoff).await;
                }
                Ok(r) => bail!(
                    "producer {} ({}/{}): batch {batch_no} (sequence {sequence}) got non-retriable error {} ({:?}) from broker {broker}",
                    spec.id,
                    spec.topic,
                    spec.partition,
                    r.error_code,
                    r.error_message
                ),
                Err(_) => {
                    // The answer is lost; the batch may or may not be stored. Resending it with
                    // the same sequence must not duplicate it.
                    report.transport_errors += 1;
                    conn = None;
                    tokio::time::sleep(spec.retry_backoff).await;
                }
            }
        };
        if started.elapsed() > report.slowest_ack {
            report.slowest_ack = started.elapsed();
            report.slowest_ack_at = Some(Instant::now());
        }
        report.last_ack = Some(Instant::now());
        for (i, v) in values.into_iter().enumerate() {
            report.acked.push(Acked { partition: spec.partition, offset: base_offset + i as i64, value: v });
        }
        report.batches += 1;
        batch_no += 1;
        sequence = sequence.wrapping_add(spec.records_per_batch as i32);
        if !spec.pause.is_zero() {
            tokio::time::sleep(spec.pause).await;
        }
    }
    Ok(())
}

/// A connection for producing to `spec.partition`: the bootstrap broker, or in cluster mode the
/// partition's current leader (broker id -1 for the former).
async fn connect_for_produce(spec: &ProducerSpec, report: &mut ProducerReport) -> anyhow::Result<(Client, i32)> {
    let (mut c, broker) = match &spec.routing {
        None => (Client::connect(&spec.bootstrap).await?, -1),
        Some(routing) => {
            report.metadata_refreshes += 1;
            let (c, leader) = routing.connect_leader(&spec.topic, spec.partition).await?;
            (c, leader)
        }
    };
    c.set_request_timeout(spec.request_timeout);
    Ok((c, broker))
}

/// What [`verify`] found.
#[derive(Debug, Default)]
pub struct Verified {
    pub records: usize,
    pub acked: usize,
    /// Records present that were never acknowledged (a batch whose answer was lost and that the
    /// producer did not retry); allowed, but each at most once.
    pub unacked_present: usize,
}

/// Reads every partition from offset 0 and checks: offsets are gapless from the log start,
/// no value appears twice, and every acknowledged record is at its acknowledged offset.
pub async fn verify(client: &mut Client, topic: &str, partitions: i32, acked: &[Acked]) -> anyhow::Result<Verified> {
    let mut out = Verified { acked: acked.len(), ..Verified::default() };
    let mut by_partition: HashMap<i32, HashMap<i64, &Bytes>> = HashMap::new();
    for a in acked {
        let prev = by_partition.entry(a.partition).or_default().insert(a.offset, &a.value);
        ensure!(prev.is_none(), "two acknowledgements for {topic}/{} offset {}", a.partition, a.offset);
    }
    for p in 0..partitions {
        let (records, hwm) = client.fetch_all(topic, p, 0).await.with_context(|| format!("reading {topic}/{p}"))?;
        out.records += records.len();
        let mut seen: HashMap<&Bytes, i64> = HashMap::new();
        for (i, r) in records.iter().enumerate() {
            ensure!(r.offset == i as i64, "{topic}/{p}: offset gap: record #{i} has offset {}", r.offset);
            let v = r.record.value.as_ref().context("record without value")?;
            if let Some(first) = seen.insert(v, r.offset) {
                bail!(
                    "{topic}/{p}: value {:?} appears twice, at offsets {first} and {} (duplicate from a retried idempotent batch)",
                    String::from_utf8_lossy(&v[..v.len().min(40)]),
                    r.offset
                );
            }
        }
        ensure!(records.len() as i64 == hwm, "{topic}/{p}: {} records below high watermark {hwm}", records.len());
        let expected = by_partition.remove(&p).unwrap_or_default();
        let mut acked_here = 0;
        for (offset, value) in &expected {
            let r = records.get(usize::try_from(*offset)?).with_context(|| {
                format!("{topic}/{p}: acknowledged offset {offset} is missing (high watermark {hwm}): ACKNOWLEDGED RECORD LOST")
            })?;
            ensure!(
                r.record.value.as_ref() == Some(*value),
                "{topic}/{p}: offset {offset} holds {:?}, but {:?} was acknowledged there",
                r.record.value.as_ref().map(|v| String::from_utf8_lossy(&v[..v.len().min(40)]).to_string()),
                String::from_utf8_lossy(&value[..value.len().min(40)])
            );
            acked_here += 1;
        }
        out.unacked_present += records.len() - acked_here;
    }
    ensure!(by_partition.is_empty(), "acknowledgements for partitions outside 0..{partitions}");
    Ok(out)
}

/// Runs `producers` producers (spread over `partitions`) for `run_for` while `during` runs
/// (e.g. injecting faults), then stops them and returns their reports.
pub async fn produce_while<F, Fut>(
    specs: Vec<ProducerSpec>,
    run_for: Duration,
    during: F,
) -> anyhow::Result<Vec<ProducerReport>>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let stop = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = specs.into_iter().map(|s| tokio::spawn(run_producer(s, stop.clone()))).collect();
    let until = tokio::time::Instant::now() + run_for;
    during().await;
    tokio::time::sleep_until(until).await;
    stop.store(true, Ordering::Relaxed);
    let mut reports = Vec::new();
    for (i, h) in handles.into_iter().enumerate() {
        let (report, error) = h.await.context("producer task panicked")?;
        if let Some(e) = error {
            return Err(e.context(format!("producer {i} failed")));
        }
        reports.push(report);
    }
    Ok(reports)
}

/// `n` producer specs spread round-robin over `partitions`.
pub fn specs(bootstrap: &str, topic: &str, partitions: i32, n: usize, give_up_after: Duration) -> Vec<ProducerSpec> {
    (0..n)
        .map(|id| ProducerSpec {
            bootstrap: bootstrap.to_string(),
            topic: topic.to_string(),
            partition: (id as i32) % partitions,
            id,
            records_per_batch: 5,
            value_bytes: 200,
            pause: Duration::from_millis(5),
            give_up_after,
            abandon_on_stop: false,
            routing: None,
            retry_backoff: Duration::from_millis(100),
            request_timeout: super::client::REQUEST_TIMEOUT,
        })
        .collect()
}

/// Cluster mode: `n` producer specs spread round-robin over `partitions`, each following its
/// partition's leader through `routing`. A round trip is bounded by 4 s (a frozen broker holds
/// a request that long at most) and retries back off 50 ms (Kafka's `retry.backoff.ms` is 100).
pub fn cluster_specs(
    routing: &Routing,
    topic: &str,
    partitions: i32,
    n: usize,
    give_up_after: Duration,
) -> Vec<ProducerSpec> {
    let mut specs = specs("", topic, partitions, n, give_up_after);
    for s in &mut specs {
        s.routing = Some(routing.clone());
        s.retry_backoff = CLUSTER_RETRY_BACKOFF;
        s.request_timeout = CLUSTER_REQUEST_TIMEOUT;
    }
    specs
}

/// Cluster clients: bound on one round trip (a frozen broker holds a request this long).
pub const CLUSTER_REQUEST_TIMEOUT: Duration = Duration::from_secs(4);
/// Cluster clients: wait before retrying after an error.
pub const CLUSTER_RETRY_BACKOFF: Duration = Duration::from_millis(50);
/// Bound on one Metadata round trip or connect while looking for a leader.
pub const METADATA_TIMEOUT: Duration = Duration::from_secs(1);

/// One acknowledged produce in cluster mode.
#[derive(Debug, Clone, Copy)]
pub struct AckEvent {
    /// When the answer arrived.
    pub at: Instant,
    pub partition: i32,
    /// The broker that answered.
    pub broker: i32,
    pub base_offset: i64,
}

/// How the clients of a cluster test find partition leaders, and what they saw on the way.
/// Clones share one state. The harness keeps the bootstrap list current as brokers come and go
/// (a restarted broker listens on a new port); Metadata answers name the rest.
#[derive(Clone, Default)]
pub struct Routing {
    inner: Arc<RoutingState>,
}

#[derive(Default)]
struct RoutingState {
    bootstrap: Mutex<Vec<String>>,
    /// Where the next Metadata look-up starts in `bootstrap`, so an unresponsive broker is
    /// skipped after one timeout.
    next: AtomicUsize,
    acks: Mutex<Vec<AckEvent>>,
    /// (topic, partition, leader epoch) → every leader a Metadata answer named for it.
    leaders: Mutex<BTreeMap<(String, i32, i32), BTreeSet<i32>>>,
}

/// Leaders named per (topic, partition, leader epoch) by all Metadata answers clients saw.
pub type LeaderObservations = BTreeMap<(String, i32, i32), BTreeSet<i32>>;

impl Routing {
    pub fn new(bootstrap: Vec<String>) -> Self {
        let r = Self::default();
        r.set_bootstrap(bootstrap);
        r
    }

    pub fn set_bootstrap(&self, addrs: Vec<String>) {
        *lock(&self.inner.bootstrap) = addrs;
    }

    pub fn bootstrap(&self) -> Vec<String> {
        lock(&self.inner.bootstrap).clone()
    }

    /// A connection to the first bootstrap broker that accepts one.
    pub async fn connect_any(&self) -> anyhow::Result<Client> {
        let addrs = self.rotation();
        ensure!(!addrs.is_empty(), "no bootstrap brokers");
        let mut last = None;
        for addr in addrs {
            match tokio::time::timeout(METADATA_TIMEOUT, Client::connect(&addr)).await {
                Ok(Ok(mut c)) => {
                    c.set_request_timeout(CLUSTER_REQUEST_TIMEOUT);
                    return Ok(c);
                }
                Ok(Err(e)) => last = Some(e),
                Err(_) => last = Some(anyhow::anyhow!("connect to {addr} timed out")),
            }
            self.inner.next.fetch_add(1, Ordering::Relaxed);
        }
        Err(last.expect("at least one address tried"))
    }

    /// Metadata for `topic` from the first bootstrap broker that answers within
    /// [`METADATA_TIMEOUT`]. Every answer is recorded for the one-writer-per-epoch check.
    pub async fn topic_metadata(&self, topic: &str) -> anyhow::Result<TopicMetadata> {
        let addrs = self.rotation();
        ensure!(!addrs.is_empty(), "no bootstrap brokers");
        let mut last = None;
        for addr in addrs {
            let attempt = async {
                let mut c = Client::connect(&addr).await?;
                c.set_request_timeout(METADATA_TIMEOUT);
                c.topic_metadata(topic).await
            };
            match tokio::time::timeout(METADATA_TIMEOUT * 2, attempt).await {
                Ok(Ok(md)) => {
                    self.observe(topic, &md);
                    return Ok(md);
                }
                Ok(Err(e)) => last = Some(e.context(format!("Metadata from {addr}"))),
                Err(_) => last = Some(anyhow::anyhow!("Metadata from {addr} timed out")),
            }
            self.inner.next.fetch_add(1, Ordering::Relaxed);
        }
        Err(last.expect("at least one address tried"))
    }

    /// A connection to the current leader of `topic`/`partition` (and its broker id), as the
    /// Metadata answer of some bootstrap broker names it.
    pub async fn connect_leader(&self, topic: &str, partition: i32) -> anyhow::Result<(Client, i32)> {
        let md = self.topic_metadata(topic).await?;
        let (leader, addr) = md
            .leader(partition)
            .with_context(|| format!("no leader for {topic}/{partition}: {:?}", md.partition(partition)))?;
        let mut c = tokio::time::timeout(METADATA_TIMEOUT, Client::connect(addr))
            .await
            .with_context(|| format!("connect to leader {leader} at {addr} timed out"))??;
        c.set_request_timeout(CLUSTER_REQUEST_TIMEOUT);
        Ok((c, leader))
    }

    /// Records one acknowledged produce.
    pub fn record_ack(&self, event: AckEvent) {
        lock(&self.inner.acks).push(event);
    }

    /// Number of acknowledgements recorded so far (an index for [`Self::acks_since`]).
    pub fn ack_count(&self) -> usize {
        lock(&self.inner.acks).len()
    }

    /// Acknowledgements recorded at or after `index`.
    pub fn acks_since(&self, index: usize) -> Vec<AckEvent> {
        let acks = lock(&self.inner.acks);
        acks.get(index..).map(<[AckEvent]>::to_vec).unwrap_or_default()
    }

    /// Every (topic, partition, epoch) → leaders named, as seen so far.
    pub fn leader_observations(&self) -> LeaderObservations {
        lock(&self.inner.leaders).clone()
    }

    fn observe(&self, topic: &str, md: &TopicMetadata) {
        let mut leaders = lock(&self.inner.leaders);
        for p in md.partitions.iter().filter(|p| p.error_code == 0 && p.leader_id >= 0) {
            leaders.entry((topic.to_string(), p.partition, p.leader_epoch)).or_default().insert(p.leader_id);
        }
    }

    /// The bootstrap list starting at the rotation point.
    fn rotation(&self) -> Vec<String> {
        let addrs = self.bootstrap();
        if addrs.is_empty() {
            return addrs;
        }
        let start = self.inner.next.load(Ordering::Relaxed) % addrs.len();
        addrs[start..].iter().chain(&addrs[..start]).cloned().collect()
    }
}

impl std::fmt::Debug for Routing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Routing").field("bootstrap", &self.bootstrap()).finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One record a consumer read.
#[derive(Debug, Clone)]
pub struct Consumed {
    pub partition: i32,
    pub offset: i64,
    pub value: Bytes,
}

/// What one consumer saw.
#[derive(Debug, Default)]
pub struct ConsumerReport {
    pub consumed: Vec<Consumed>,
    pub fetches: u64,
    /// Partition error code → count of fetch answers with it.
    pub errors: BTreeMap<i16, u64>,
    pub transport_errors: u64,
}

/// Settings for [`run_consumer`].
#[derive(Clone)]
pub struct ConsumerSpec {
    pub routing: Routing,
    pub topic: String,
    pub partition: i32,
    /// Fail when no fetch succeeds for this long.
    pub give_up_after: Duration,
    /// The next offset to read, published as the consumer advances.
    pub position: Arc<AtomicI64>,
}

/// Reads `spec.partition` from offset 0 through its leader until `stop` is set, checking that
/// offsets arrive without gaps. On failure the error comes with what was read before it.
pub async fn run_consumer(spec: ConsumerSpec, stop: Arc<AtomicBool>) -> (ConsumerReport, Option<anyhow::Error>) {
    let mut report = ConsumerReport::default();
    let result = consume_loop(&spec, &stop, &mut report).await;
    (report, result.err())
}

async fn consume_loop(spec: &ConsumerSpec, stop: &AtomicBool, report: &mut ConsumerReport) -> anyhow::Result<()> {
    let (topic, partition) = (spec.topic.as_str(), spec.partition);
    // The connection and the broker it goes to.
    let mut conn: Option<(Client, i32)> = None;
    let mut next: i64 = 0;
    let mut last_success = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        ensure!(
            last_success.elapsed() < spec.give_up_after,
            "consumer {topic}/{partition}: no successful fetch for {:?} at offset {next}; errors {:?}, transport errors {}",
            spec.give_up_after,
            report.errors,
            report.transport_errors
        );
        if conn.is_none() {
            match spec.routing.connect_leader(topic, partition).await {
                Ok(c) => conn = Some(c),
                Err(_) => {
                    report.transport_errors += 1;
                    tokio::time::sleep(CLUSTER_RETRY_BACKOFF).await;
                    continue;
                }
            }
        }
        let (c, broker) = conn.as_mut().expect("connected above");
        let broker = *broker;
        let p = match c.fetch(topic, partition, next, 200, 1).await {
            Ok(p) => p,
            Err(_) => {
                report.transport_errors += 1;
                conn = None;
                tokio::time::sleep(CLUSTER_RETRY_BACKOFF).await;
                continue;
            }
        };
        report.fetches += 1;
        if p.error_code != 0 {
            *report.errors.entry(p.error_code).or_default() += 1;
            ensure!(
                RETRIABLE.contains(&p.error_code),
                "consumer {topic}/{partition}: fetch at {next} got non-retriable error {} from broker {broker} (high watermark {}, log start {})",
                p.error_code,
                p.high_watermark,
                p.log_start_offset
            );
            conn = None;
            tokio::time::sleep(CLUSTER_RETRY_BACKOFF).await;
            continue;
        }
        last_success = Instant::now();
        for r in decode_records(p.records.unwrap_or_default())? {
            // A fetch may start at the batch holding `next`; skip what precedes it.
            if r.offset < next {
                continue;
            }
            ensure!(
                r.offset == next,
                "consumer {topic}/{partition}: offset gap: expected {next}, got {} from broker {broker} (high watermark {})",
                r.offset,
                p.high_watermark
            );
            let value = r.record.value.context("record without value")?;
            report.consumed.push(Consumed { partition, offset: r.offset, value });
            next += 1;
        }
        spec.position.store(next, Ordering::Relaxed);
    }
    Ok(())
}

/// Sums error counts over reports.
pub fn error_totals(reports: &[ProducerReport]) -> (BTreeMap<i16, u64>, u64) {
    let mut errors = BTreeMap::new();
    let mut transport = 0;
    for r in reports {
        for (code, n) in &r.errors {
            *errors.entry(*code).or_default() += n;
        }
        transport += r.transport_errors;
    }
    (errors, transport)
}
