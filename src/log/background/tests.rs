use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};

use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use skiff_controller::intent::{BrokerRegistration, CreateTopic};
use skiff_controller::{Controller, ControllerConfig};
use skiff_storage::StorageConfig;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use bytes::Bytes;
use skiff_controller::ControllerHandle;
use skiff_controller::image::Chunk;
use skiff_storage::ObjectStorage;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::compaction::Footers;
use super::*;
use crate::broker::{Clock, batch};
use crate::log::read::TailCache;
use crate::log::wal::{PartitionKey, Wal, WalSettings, WalTasks};
use crate::supervisor::Supervisor;

/// Wall-clock time plus an adjustable skew, or a fixed time.
#[derive(Debug)]
pub(crate) struct TestClock {
    fixed: Option<AtomicI64>,
    skew: AtomicI64,
}

impl TestClock {
    pub(crate) fn real() -> Arc<Self> {
        Arc::new(Self { fixed: None, skew: AtomicI64::new(0) })
    }
    pub(crate) fn fixed(ms: i64) -> Arc<Self> {
        Arc::new(Self { fixed: Some(AtomicI64::new(ms)), skew: AtomicI64::new(0) })
    }
    pub(crate) fn set(&self, ms: i64) {
        self.fixed.as_ref().expect("fixed clock").store(ms, Ordering::SeqCst);
    }
    pub(crate) fn advance(&self, ms: i64) {
        self.skew.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for TestClock {
    fn now_ms(&self) -> i64 {
        let base = match &self.fixed {
            Some(f) => f.load(Ordering::SeqCst),
            None => crate::broker::SystemClock.now_ms(),
        };
        base + self.skew.load(Ordering::SeqCst)
    }
}

pub(crate) fn settings() -> LifecycleSettings {
    LifecycleSettings {
        broker_id: 1,
        compaction_enabled: true,
        compaction_interval: Duration::from_millis(25),
        compaction_min_chunks: 2,
        compaction_min_bytes: u64::MAX,
        compaction_max_age_ms: i64::MAX,
        compaction_min_age_ms: 0,
        compaction_max_segment_bytes: 1 << 20,
        compaction_concurrency: 2,
        compaction_hot_chunks_budget: 0,
        compaction_min_interval: Duration::from_millis(25),
        retention_interval: Duration::from_millis(30),
        gc_interval: Duration::from_millis(20),
        gc_grace_ms: 500,
        cleaner_enabled: false,
        cleaner_backoff: Duration::from_millis(25),
        cleaner_concurrency: 1,
        cleaner_dedupe_buffer_bytes: 1 << 20,
        cleaner_dirty_buffer_bytes: 1 << 20,
        cleaner_max_bytes_per_second: 0,
    }
}

pub(crate) struct Harness {
    _dir: tempfile::TempDir,
    pub(crate) controller: ControllerHandle,
    local: Controller,
    pub(crate) storage: ObjectStorage,
    pub(crate) wal: Arc<Wal>,
    wal_tasks: Option<WalTasks>,
    wal_token: CancellationToken,
    pub(crate) lifecycle: Arc<Lifecycle>,
    /// Broker 1's registration (tests re-register it to bump leader epochs).
    pub(crate) registration: BrokerRegistration,
    pub(crate) tail: TailCache,
}

impl Harness {
    pub(crate) async fn start(s: LifecycleSettings, clock: Arc<TestClock>) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let controller = Controller::start_single(
            ControllerConfig::new(1, dir.path().join("controller"), "test".into()),
            CancellationToken::new(),
        )
        .await
        .expect("controller");
        let local = controller.clone();
        let controller = ControllerHandle::Local(controller);
        let reg = BrokerRegistration {
            broker_id: 1,
            incarnation: Uuid::new_v4(),
            host: "127.0.0.1".into(),
            port: 9092,
            rack: None,
            fenced: false,
            listeners: Vec::new(),
        };
        controller.register_broker(reg.clone()).await.expect("register");
        let storage = skiff_storage::open(&StorageConfig::from_url("memory://")).expect("memory storage");
        let metrics = Arc::new(Metrics::default());
        let tail = TailCache::new(16 * 1024);
        let wal_token = CancellationToken::new();
        let (wal, wal_tasks) = Wal::start(
            WalSettings {
                broker_id: 1,
                flush_bytes: 64 * 1024,
                flush_interval: Duration::from_millis(2),
                buffer_max_bytes: 8 << 20,
                max_inflight_flushes: 4,
                flush_when_idle: false,
            },
            Uuid::new_v4(),
            controller.clone(),
            storage.clone(),
            // A small tail cache: compaction reads some sections from memory, most from storage
            // (the tests' own reads always go to storage).
            tail.clone(),
            metrics.clone(),
            clock.clone(),
            &Supervisor::new(wal_token.clone()),
            wal_token.clone(),
        );
        let lifecycle = Lifecycle::new(
            s,
            controller.clone(),
            storage.clone(),
            metrics,
            clock.clone(),
            skiff_time::random_ids(),
            Some(tail.clone()),
        );
        Self {
            _dir: dir,
            controller,
            local,
            storage,
            wal,
            wal_tasks: Some(wal_tasks),
            wal_token,
            lifecycle,
            registration: reg,
            tail,
        }
    }

    pub(crate) async fn create_topic(&self, name: &str, partitions: i32, configs: &[(&str, &str)]) -> Uuid {
        let topic_id = Uuid::new_v4();
        let configs = configs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let r = self
            .controller
            .create_topic(CreateTopic { name: name.into(), topic_id, partitions, configs, assignments: Vec::new() })
            .await
            .expect("create topic");
        assert_eq!(r, topic_id);
        topic_id
    }

    pub(crate) async fn stop(mut self) {
        self.wal_token.cancel();
        if let Some(t) = self.wal_tasks.take() {
            t.join().await;
        }
        let _ = self.local.shutdown().await;
    }
}

fn encode(values: &[Bytes], ts: i64) -> Bytes {
    let records: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(i, v)| Record {
            transactional: false,
            control: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: -1,
            timestamp: ts,
            key: None,
            value: Some(v.clone()),
            headers: Default::default(),
            delete_horizon: false,
        })
        .collect();
    let mut buf = bytes::BytesMut::new();
    RecordBatchEncoder::encode(&mut buf, &records, &RecordEncodeOptions { version: 2, compression: Compression::None })
        .expect("encode");
    buf.freeze()
}

/// Produces one batch and waits for its acknowledgement; returns its base offset.
async fn produce(wal: &Wal, key: PartitionKey, values: &[Bytes], ts: i64) -> Option<i64> {
    let records = encode(values, ts);
    let headers = batch::validate_produce(&records, 1 << 20).expect("valid batch");
    let (appended, rx) = wal.append(key, &records, &headers, None, None).await.ok()?;
    rx?.await.ok()?.ok()?;
    Some(appended.base_offset)
}

type Expected = BTreeMap<i64, Bytes>;

/// Reads every chunk of the partition straight from object storage (no cache) and checks
/// that [log_start, hwm) is covered exactly once, with the acknowledged values.
async fn verify_partition(h: &Harness, topic_id: Uuid, partition: i32, expected: &Expected) -> Result<(), String> {
    let (log_start, end, chunks) = h
        .controller
        .metadata()
        .read(|m| {
            m.partition(&topic_id, partition)
                .map(|p| (p.log_start_offset(), p.high_watermark(), p.chunks().cloned().collect::<Vec<_>>()))
        })
        .ok_or("no partition")?;
    let mut next = log_start;
    for c in chunks.iter().filter(|c| c.last_offset >= log_start) {
        let data = h
            .storage
            .get_range(&c.object, c.position..c.position + c.len)
            .await
            .map_err(|e| format!("chunk {c:?} unreadable: {e}"))?;
        let mut pos = 0;
        while pos < data.len() {
            let hdr = batch::parse_header(&data[pos..]).map_err(|e| format!("bad batch in {}: {e:?}", c.object))?;
            let mut one = data.slice(pos..pos + hdr.size);
            batch::validate_produce(&one, usize::MAX).map_err(|e| format!("batch CRC in {}: {e:?}", c.object))?;
            let set = RecordBatchDecoder::decode(&mut one).map_err(|e| format!("decode: {e}"))?;
            for r in set.records.iter().filter(|r| r.offset >= log_start) {
                if r.offset != next {
                    return Err(format!("offset {} where {next} was expected (gap or duplicate)", r.offset));
                }
                match expected.get(&r.offset) {
                    Some(v) if Some(v) == r.value.as_ref() => {}
                    Some(v) => return Err(format!("offset {}: value {:?}, expected {v:?}", r.offset, r.value)),
                    // Not yet recorded by the producer task (ack in flight): fine.
                    None => {}
                }
                next += 1;
            }
            pos += hdr.size;
        }
    }
    if next != end {
        return Err(format!("read up to {next}, high watermark is {end}"));
    }
    Ok(())
}

/// Every object a chunk references exists in storage.
pub(crate) async fn verify_references(h: &Harness) -> Result<(), String> {
    let referenced: HashSet<String> = h.controller.metadata().read(|m| {
        m.topics().flat_map(|t| t.partitions()).flat_map(|p| p.chunks()).map(|c| c.object.to_string()).collect()
    });
    let mut stored = HashSet::new();
    for dir in ObjectStorage::DATA_DIRS {
        for o in h.storage.list(dir).await.map_err(|e| e.to_string())? {
            stored.insert(o.key);
        }
    }
    let missing: Vec<&String> = referenced.difference(&stored).collect();
    if missing.is_empty() { Ok(()) } else { Err(format!("referenced objects missing from storage: {missing:?}")) }
}

fn chunk(base: i64, last: i64, len: u64, ts: i64) -> Chunk {
    Chunk {
        object: Arc::from(format!("o{base}").as_str()),
        position: 0,
        len,
        base_offset: base,
        last_offset: last,
        max_timestamp: ts,
    }
}

#[test]
fn retention_rules() {
    let chunks = [chunk(0, 9, 100, 1000), chunk(10, 19, 100, 3000), chunk(20, 29, 100, 2000), chunk(30, 39, 100, 9000)];
    let start = |ms, bytes, now| retention_start(chunks.iter(), 0, ms, bytes, now, |_| None);
    // Nothing configured.
    assert_eq!(start(-1, -1, 10_000), 0);
    // Time: a prefix of expired chunks, stopping at the first live one (even if a later
    // chunk is older, as Kafka does).
    assert_eq!(start(1500, -1, 4000), 10);
    assert_eq!(start(500, -1, 4000), 30);
    // Everything expired: the log empties up to the high watermark.
    assert_eq!(start(0, -1, 10_000), 40);
    // Size: keep at least retention.bytes.
    assert_eq!(start(-1, 250, 0), 10);
    assert_eq!(start(-1, 200, 0), 20);
    assert_eq!(start(-1, 400, 0), 0);
    assert_eq!(start(-1, 0, 0), 40);
    // Both: size applies to what time retention left.
    assert_eq!(start(1500, 150, 4000), 20);
    // Never moves backwards.
    assert_eq!(retention_start(chunks.iter(), 25, 1500, -1, 4000, |_| None), 25);
    // No timestamps: ages from when the object was first seen; unknown is not expired.
    let untimed = [chunk(0, 9, 100, -1)];
    assert_eq!(retention_start(untimed.iter(), 0, 1000, -1, 5000, |_| None), 0);
    assert_eq!(retention_start(untimed.iter(), 0, 1000, -1, 5000, |_| Some(3000)), 10);
}

/// Retention acts on the typed configs the image parsed when the topic was created, over the
/// typed dynamic broker defaults (this broker's resource before the cluster's).
#[test]
fn retention_limits_read_the_typed_topic_config() {
    use skiff_controller::image::ImageFixture;
    use skiff_controller::intent::{ConfigChange, ConfigResource};

    use super::retention::retention_limits;
    use crate::broker::dynamic_config::{BrokerDefaults, KAFKA_MESSAGE_MAX_BYTES};

    let map = |kv: &[(&str, &str)]| kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let topic = |name: &str, configs| CreateTopic {
        name: name.into(),
        topic_id: Uuid::new_v4(),
        partitions: 1,
        configs,
        assignments: Vec::new(),
    };
    let broker = |name: &str, configs| ConfigChange { resource: ConfigResource::Broker(name.into()), configs };
    let image = ImageFixture::new("c")
        .register_broker(BrokerRegistration {
            broker_id: 1,
            incarnation: Uuid::nil(),
            host: "h".into(),
            port: 1,
            rack: None,
            fenced: false,
            listeners: Vec::new(),
        })
        .create_topic(topic("set", map(&[("retention.ms", "2000"), ("retention.bytes", "1")])))
        .create_topic(topic("unset", BTreeMap::new()))
        .set_configs(broker("", map(&[("log.retention.ms", "5000"), ("log.retention.bytes", "7")])))
        .set_configs(broker("1", map(&[("log.retention.bytes", "9")])))
        .build();
    let limits = |broker_id, name| {
        let defaults = BrokerDefaults::new(image.dynamic_configs(), broker_id, KAFKA_MESSAGE_MAX_BYTES);
        retention_limits(&defaults, image.topic(name).expect("created").config())
    };
    assert_eq!(limits(1, "set"), (2000, 1));
    assert_eq!(limits(1, "unset"), (5000, 9));
    assert_eq!(limits(2, "unset"), (5000, 7));
    let no_dynamic = Default::default();
    let kafka_defaults = BrokerDefaults::new(&no_dynamic, 1, KAFKA_MESSAGE_MAX_BYTES);
    assert_eq!(retention_limits(&kafka_defaults, image.topic("unset").expect("created").config()), (604_800_000, -1));
}

fn values(prefix: &str, n: usize) -> Vec<Bytes> {
    (0..n).map(|i| Bytes::from(format!("{prefix}-{i}"))).collect()
}

async fn produce_recorded(h: &Harness, key: PartitionKey, prefix: &str, n: usize, ts: i64, exp: &mut Expected) {
    let vals = values(prefix, n);
    let base = produce(&h.wal, key, &vals, ts).await.expect("acknowledged");
    for (i, v) in vals.into_iter().enumerate() {
        exp.insert(base + i as i64, v);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_swaps_multi_partition_wal_chunks_for_segments() {
    let clock = TestClock::real();
    let h = Harness::start(settings(), clock.clone()).await;
    let topic = h.create_topic("t", 2, &[]).await;
    let keys = [PartitionKey { topic_id: topic, partition: 0 }, PartitionKey { topic_id: topic, partition: 1 }];
    let mut exp = [Expected::new(), Expected::new()];
    for round in 0..5 {
        // Both partitions in one flush: multi-partition WAL objects.
        let (a, b) = exp.split_at_mut(1);
        let (pa, pb) = (format!("p0r{round}"), format!("p1r{round}"));
        tokio::join!(
            produce_recorded(&h, keys[0], &pa, 3, 1000, &mut a[0]),
            produce_recorded(&h, keys[1], &pb, 2, 1000, &mut b[0]),
        );
    }
    let before: Vec<Chunk> =
        h.controller.metadata().read(|m| m.partition(&topic, 0).expect("p").chunks().cloned().collect());
    assert!(before.len() >= 2, "{before:?}");
    let wal_objects = h.storage.list("wal").await.expect("list").len();

    let report = h.lifecycle.compact_once().await;
    assert_eq!(report.segments, 2, "{report:?}");
    assert_eq!(report.rejected + report.failed, 0);
    for (p, e) in exp.iter().enumerate() {
        let chunks: Vec<Chunk> =
            h.controller.metadata().read(|m| m.partition(&topic, p as i32).expect("p").chunks().cloned().collect());
        assert_eq!(chunks.len(), 1, "one segment per partition: {chunks:?}");
        assert!(h.storage.is_segment_key(&chunks[0].object), "{}", chunks[0].object);
        assert!(chunks[0].object.contains(&format!("/{p}/00000000000000000000-")));
        // The segment is a valid v1 object with exactly one section.
        let whole = h.storage.get(&chunks[0].object).await.expect("segment stored");
        let sections = skiff_storage::format::validate_object(&whole).expect("valid segment");
        assert_eq!(sections.len(), 1);
        assert_eq!((sections[0].position, sections[0].len), (chunks[0].position, chunks[0].len));
        verify_partition(&h, topic, p as i32, e).await.expect("readable after compaction");
    }
    // A reader that planned the old chunk before the swap can still read it: the WAL
    // objects stay until the grace period has passed.
    let old = &before[0];
    h.storage.get_range(&old.object, old.position..old.position + old.len).await.expect("old chunk still readable");
    assert_eq!(h.lifecycle.collect_garbage_once().await, GcReport::default());
    assert_eq!(h.storage.list("wal").await.expect("list").len(), wal_objects);

    // After the grace period the WAL objects go, and leave the index too.
    clock.advance(h.lifecycle.settings.gc_grace_ms + 1);
    let gc = h.lifecycle.collect_garbage_once().await;
    assert_eq!(gc.unreferenced_deleted as usize, wal_objects, "{gc:?}");
    assert_eq!(gc.orphans_deleted, 0);
    assert!(h.storage.list("wal").await.expect("list").is_empty());
    let indexed = h.controller.metadata().read(|m| m.objects().count());
    assert_eq!(indexed, 2, "only the two segments remain indexed");
    for (p, e) in exp.iter().enumerate() {
        verify_partition(&h, topic, p as i32, e).await.expect("readable after gc");
    }
    verify_references(&h).await.expect("references");

    // Appends continue after compaction and are compacted into a second segment.
    for r in 0..3 {
        produce_recorded(&h, keys[0], &format!("late{r}"), 2, 1000, &mut exp[0]).await;
    }
    let report = h.lifecycle.compact_once().await;
    assert_eq!(report.segments, 1, "{report:?}");
    verify_partition(&h, topic, 0, &exp[0]).await.expect("readable");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_thresholds() {
    let clock = TestClock::real();
    let s = LifecycleSettings { compaction_min_chunks: 4, compaction_min_age_ms: 60_000, ..settings() };
    let h = Harness::start(s, clock.clone()).await;
    let topic = h.create_topic("t", 2, &[]).await;
    let key = |p| PartitionKey { topic_id: topic, partition: p };
    let mut exp = Expected::new();
    for r in 0..3 {
        let (pa, vb) = (format!("a{r}"), values("b", 1));
        let (_, _) = tokio::join!(produce_recorded(&h, key(0), &pa, 1, 0, &mut exp), produce(&h.wal, key(1), &vb, 0),);
    }
    // Too young.
    assert_eq!(h.lifecycle.compact_once().await.segments, 0);
    clock.advance(60_000);
    // Old enough but only three chunks (min four).
    assert_eq!(h.lifecycle.compact_once().await.segments, 0);
    produce(&h.wal, key(0), &values("c", 1), 0).await.expect("ack");
    // The fourth chunk is young: still three eligible.
    assert_eq!(h.lifecycle.compact_once().await.segments, 0);
    clock.advance(60_000);
    let report = h.lifecycle.compact_once().await;
    assert_eq!(report.segments, 1, "{report:?}");
    assert_eq!(report.chunks_replaced, 4);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_partition_gets_several_segments_per_pass() {
    let s = LifecycleSettings { compaction_max_segment_bytes: 200, ..settings() };
    let h = Harness::start(s, TestClock::real()).await;
    let topic = h.create_topic("t", 1, &[]).await;
    let key = PartitionKey { topic_id: topic, partition: 0 };
    let mut exp = Expected::new();
    for r in 0..8 {
        produce_recorded(&h, key, &format!("r{r}"), 1, 0, &mut exp).await;
    }
    let chunk_len =
        h.controller.metadata().read(|m| m.partition(&topic, 0).expect("p").chunks().next().expect("c").len);
    assert!(chunk_len <= 100, "test assumes small chunks, got {chunk_len}");
    let report = h.lifecycle.compact_once().await;
    assert!(report.segments >= 3, "{report:?}");
    assert_eq!(report.rejected + report.failed, 0, "{report:?}");
    let chunks: Vec<Chunk> =
        h.controller.metadata().read(|m| m.partition(&topic, 0).expect("p").chunks().cloned().collect());
    assert!(chunks.iter().all(|c| c.len <= 200 && h.storage.is_segment_key(&c.object)), "{chunks:?}");
    verify_partition(&h, topic, 0, &exp).await.expect("readable");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_compaction_is_rejected_and_its_segment_removed() {
    let clock = TestClock::real();
    let h = Harness::start(settings(), clock.clone()).await;
    let topic = h.create_topic("t", 1, &[]).await;
    let key = PartitionKey { topic_id: topic, partition: 0 };
    let mut exp = Expected::new();
    for r in 0..3 {
        produce_recorded(&h, key, &format!("r{r}"), 2, 0, &mut exp).await;
    }
    let candidates = {
        let seen = HashMap::new();
        h.controller.metadata().read(|m| h.lifecycle.plan_compaction(m, &seen, 0, &h.lifecycle.current_pace()))
    };
    assert_eq!(candidates.len(), 1);
    // Retention (DeleteRecords) removes the first chunk before the swap is committed.
    let second = h
        .controller
        .metadata()
        .read(|m| m.partition(&topic, 0).expect("p").chunks().nth(1).expect("chunk").base_offset);
    h.controller.advance_log_start(topic, 0, second).await.expect("advance");
    let r = h.lifecycle.compact(candidates.into_iter().next().expect("one"), &Footers::default()).await;
    assert_eq!(r, Ok(None), "rejected");
    assert!(h.storage.list("seg").await.expect("list").is_empty(), "rejected segment deleted");
    verify_partition(&h, topic, 0, &exp).await.expect("readable");
    // The next pass compacts what is left.
    assert_eq!(h.lifecycle.compact_once().await.segments, 1);
    verify_partition(&h, topic, 0, &exp).await.expect("readable");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_by_time_and_size() {
    let clock = TestClock::fixed(10_000);
    let s = LifecycleSettings { compaction_enabled: false, ..settings() };
    let h = Harness::start(s, clock.clone()).await;
    let timed = h.create_topic("timed", 1, &[("retention.ms", "2000")]).await;
    let sized = h.create_topic("sized", 1, &[("retention.bytes", "1")]).await;
    let forever = h.create_topic("forever", 1, &[("retention.ms", "-1")]).await;
    let t = PartitionKey { topic_id: timed, partition: 0 };
    let z = PartitionKey { topic_id: sized, partition: 0 };
    let f = PartitionKey { topic_id: forever, partition: 0 };
    let a = produce(&h.wal, t, &values("a", 2), 1000).await.expect("ack");
    let b = produce(&h.wal, t, &values("b", 2), 5000).await.expect("ack");
    for i in 0..3 {
        produce(&h.wal, z, &values(&format!("z{i}"), 2), 10_000).await.expect("ack");
        produce(&h.wal, f, &values(&format!("f{i}"), 2), 0).await.expect("ack");
    }
    let log_start = |id: Uuid| {
        h.controller
            .metadata()
            .read(|m| m.partition(&id, 0).map(|p| (p.log_start_offset(), p.high_watermark())).expect("p"))
    };
    clock.set(4000);
    // timed: a (ts 1000) expired, b (ts 5000) not. sized: keeps only the last chunk.
    assert_eq!(h.lifecycle.enforce_retention_once().await, 2);
    assert_eq!(log_start(timed), (b, b + 2));
    assert_eq!(log_start(sized), (4, 6));
    assert_eq!(log_start(forever), (0, 6));
    assert_eq!(a, 0);
    // Idempotent.
    assert_eq!(h.lifecycle.enforce_retention_once().await, 0);
    clock.set(8000);
    assert_eq!(h.lifecycle.enforce_retention_once().await, 1);
    assert_eq!(log_start(timed), (4, 4), "everything expired: the log starts at the high watermark");
    let chunks = h.controller.metadata().read(|m| m.partition(&timed, 0).expect("p").chunks().count());
    assert_eq!(chunks, 0);
    // Offsets continue after an emptied log.
    assert_eq!(produce(&h.wal, t, &values("c", 1), 8000).await, Some(4));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_deletes_orphans_and_deleted_topics_after_grace() {
    let clock = TestClock::real();
    let h = Harness::start(settings(), clock.clone()).await;
    let keep = h.create_topic("keep", 1, &[]).await;
    let gone = h.create_topic("gone", 1, &[]).await;
    let mut exp = Expected::new();
    produce_recorded(&h, PartitionKey { topic_id: keep, partition: 0 }, "k", 2, 0, &mut exp).await;
    produce(&h.wal, PartitionKey { topic_id: gone, partition: 0 }, &values("g", 2), 0).await.expect("ack");
    // Orphans: a WAL object and a segment whose commits never happened, and a key outside
    // the data directories that GC must never touch.
    let wal_orphan = h.storage.wal_key(7, "dead", 1);
    let seg_orphan = h.storage.seg_key(*keep.as_bytes(), 0, 0, "orphan");
    for k in [&wal_orphan, &seg_orphan, &"meta/other".to_string()] {
        h.storage.put_new(k, Bytes::from_static(b"x")).await.expect("put");
    }
    h.controller.delete_topic("gone").await.expect("delete");
    assert_eq!(h.lifecycle.collect_garbage_once().await, GcReport::default(), "within the grace period");
    clock.advance(h.lifecycle.settings.gc_grace_ms + 1);
    let r = h.lifecycle.collect_garbage_once().await;
    assert_eq!(r, GcReport { unreferenced_deleted: 1, orphans_deleted: 2 });
    let left: Vec<String> = h.storage.list("").await.expect("list").into_iter().map(|o| o.key).collect();
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(left.contains(&"meta/other".to_string()));
    verify_partition(&h, keep, 0, &exp).await.expect("kept topic readable");
    verify_references(&h).await.expect("references");
    h.stop().await;
}

/// Concurrent produce, compaction, retention and GC with a short grace period, while
/// readers keep reading what the index points at: every committed offset in
/// [log_start, hwm) stays readable with its acknowledged value, and every object the index
/// references exists. Seeded and bounded (~3 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn randomized_background_work_never_deletes_referenced_data() {
    let seed: u64 = std::env::var("SKIFF_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed_0003);
    let mut rng = StdRng::seed_from_u64(seed);
    let clock = TestClock::real();
    let s = LifecycleSettings {
        compaction_min_chunks: rng.random_range(2..6),
        compaction_max_segment_bytes: rng.random_range(2_000..20_000),
        gc_grace_ms: 1000,
        ..settings()
    };
    let h = Arc::new(Harness::start(s, clock.clone()).await);
    let bounded = h.create_topic("bounded", 3, &[("retention.bytes", "3000")]).await;
    let plain = h.create_topic("plain", 2, &[]).await;
    let parts: Vec<PartitionKey> = (0..3)
        .map(|p| PartitionKey { topic_id: bounded, partition: p })
        .chain((0..2).map(|p| PartitionKey { topic_id: plain, partition: p }))
        .collect();
    let expected: Arc<Mutex<HashMap<PartitionKey, Expected>>> = Arc::new(Mutex::new(HashMap::new()));
    let stop = CancellationToken::new();
    let tasks = h.lifecycle.start(&Supervisor::new(stop.clone()), stop.clone());

    let deadline = tokio::time::Instant::now() + Duration::from_millis(2500);
    let mut producers = Vec::new();
    for (i, key) in parts.iter().copied().enumerate() {
        let (h, expected) = (h.clone(), expected.clone());
        let mut rng = StdRng::seed_from_u64(seed ^ (i as u64 + 1));
        producers.push(tokio::spawn(async move {
            let mut n = 0;
            while tokio::time::Instant::now() < deadline {
                let count = rng.random_range(1..5);
                let vals: Vec<Bytes> = (0..count)
                    .map(|j| Bytes::from(format!("{i}-{n}-{j}-{}", "x".repeat(rng.random_range(0..100)))))
                    .collect();
                n += 1;
                // Real timestamps: the default retention.ms (7 days) must not expire them.
                let ts = crate::broker::SystemClock.now_ms();
                if let Some(base) = produce(&h.wal, key, &vals, ts).await {
                    let mut e = lock(&expected);
                    let e = e.entry(key).or_default();
                    for (j, v) in vals.into_iter().enumerate() {
                        e.insert(base + j as i64, v);
                    }
                }
                tokio::time::sleep(Duration::from_millis(rng.random_range(0..4))).await;
            }
        }));
    }
    // Readers: read the whole partition as the index stands, again and again.
    let mut readers = Vec::new();
    for key in parts.iter().copied() {
        let (h, expected) = (h.clone(), expected.clone());
        readers.push(tokio::spawn(async move {
            let mut passes = 0u32;
            while tokio::time::Instant::now() < deadline {
                let exp = lock(&expected).get(&key).cloned().unwrap_or_default();
                verify_partition(&h, key.topic_id, key.partition, &exp).await?;
                passes += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Ok::<u32, String>(passes)
        }));
    }
    for p in producers {
        p.await.expect("producer");
    }
    for r in readers {
        let passes = r.await.expect("reader").unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        assert!(passes > 0);
    }
    stop.cancel();
    tasks.join().await;
    // A swap proposed just before the cancellation may still apply; let it land.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let exp = lock(&expected).clone();
    for key in &parts {
        verify_partition(&h, key.topic_id, key.partition, &exp[key])
            .await
            .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    }
    verify_references(&h).await.unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    let (segments, log_start) = h.controller.metadata().read(|m| {
        let chunks = m.topics().flat_map(|t| t.partitions()).flat_map(|p| p.chunks());
        let segs = chunks.filter(|c| h.storage.is_segment_key(&c.object)).count();
        (segs, m.partition(&bounded, 0).expect("p").log_start_offset())
    });
    assert!(segments > 0, "seed {seed}: compaction ran");
    assert!(log_start > 0, "seed {seed}: retention ran");
    let deletes = h.storage.stats().snapshot().deletes;
    assert!(deletes > 0, "seed {seed}: gc deleted objects while producing");

    // Past the grace period a final pass leaves exactly the referenced objects (the first
    // pass starts the grace period of objects released since the last one).
    h.lifecycle.collect_garbage_once().await;
    clock.advance(60_000);
    h.lifecycle.collect_garbage_once().await;
    let referenced: HashSet<String> =
        h.controller.metadata().read(|m| m.objects().map(|o| o.key.to_string()).collect());
    let stored: HashSet<String> = h.storage.list("").await.expect("list").into_iter().map(|o| o.key).collect();
    assert_eq!(stored, referenced, "seed {seed}: no garbage left, nothing referenced missing");
    assert!(h.controller.metadata().read(|m| m.objects().all(|o| o.live_chunks > 0)));
    for key in &parts {
        verify_partition(&h, key.topic_id, key.partition, &exp[key])
            .await
            .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    }
    match Arc::try_unwrap(h) {
        Ok(h) => h.stop().await,
        Err(_) => panic!("harness still shared"),
    }
}

/// The adaptive pace as plain values (RFC 0002, "Adaptive pace"): the configured pace while
/// the flush rate fits the budget, then a period and minimum age shrinking with it, never
/// below the floor.
#[test]
fn compaction_pace_shrinks_as_the_index_grows() {
    use super::compaction::{Pace, pace};
    let s = LifecycleSettings {
        compaction_interval: Duration::from_secs(30),
        compaction_min_age_ms: 60_000,
        compaction_min_chunks: 64,
        compaction_hot_chunks_budget: 20_000,
        compaction_min_interval: Duration::from_secs(2),
        ..settings()
    };
    let fixed = Pace { period: Duration::from_secs(30), min_age_ms: 60_000, min_chunks: 64 };
    // Idle, or a rate whose 90 s of chunks fit the budget.
    assert_eq!(pace(&s, 0, 0.0), fixed);
    assert_eq!(pace(&s, 5_000, 200.0), fixed);
    // No budget: the configured pace whatever the load.
    assert_eq!(pace(&LifecycleSettings { compaction_hot_chunks_budget: 0, ..s.clone() }, 1_000_000, 1e6), fixed);
    // 1,000 chunks/s: chunks are held T_H = 20 s instead of 90 s, so everything scales by 2/9.
    let p = pace(&s, 10_000, 1_000.0);
    assert_eq!(p.min_chunks, 2);
    assert_eq!(p.min_age_ms, 13_333);
    assert!((p.period.as_secs_f64() - 20.0 / 3.0).abs() < 0.01, "{p:?}");
    // A large index with no flushes (a burst ended, or a restart) counts as hot / 90 s.
    let p = pace(&s, 200_000, 0.0);
    assert_eq!(p.min_age_ms, 6_000, "{p:?}");
    // Never more often than the floor.
    let p = pace(&s, 10_000, 100_000.0);
    assert_eq!(p.period, Duration::from_secs(2));
    assert_eq!(p.min_age_ms, 133);
}

/// With a hot-chunks budget, a partition whose chunks exceed it is compacted 31 s after they
/// were first seen, long before `compaction_min_age` (60 s), which alone decides without one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_index_is_compacted_before_min_age() {
    for (budget, segments) in [(0, 0), (10, 1)] {
        let t0 = 1_000_000;
        let clock = TestClock::fixed(t0);
        let s = LifecycleSettings {
            compaction_interval: Duration::from_secs(30),
            compaction_min_age_ms: 60_000,
            compaction_min_chunks: 64,
            compaction_max_age_ms: 600_000,
            compaction_hot_chunks_budget: budget,
            compaction_min_interval: Duration::from_secs(2),
            gc_grace_ms: 600_000,
            ..settings()
        };
        let h = Harness::start(s, clock.clone()).await;
        let topic = h.create_topic("t", 1, &[]).await;
        let key = PartitionKey { topic_id: topic, partition: 0 };
        let mut exp = Expected::new();
        for r in 0..20 {
            produce_recorded(&h, key, &format!("r{r}"), 1, t0, &mut exp).await;
        }
        let chunks = h.controller.metadata().read(|m| m.partition(&topic, 0).expect("p").chunks().count());
        assert_eq!(chunks, 20, "one chunk per acknowledged produce");
        // First pass: every chunk was just seen.
        assert_eq!(h.lifecycle.compact_once().await.segments, 0);
        if budget > 0 {
            // 20 hot chunks, budget 10: held ~45 s instead of 90 s.
            let p = h.lifecycle.current_pace();
            assert!(p.min_age_ms <= 31_000 && p.period < Duration::from_secs(30), "{p:?}");
        }
        clock.set(t0 + 31_000);
        let report = h.lifecycle.compact_once().await;
        assert_eq!(report.segments, segments, "budget {budget}: {report:?}");
        assert_eq!(report.chunks_replaced, 20 * segments, "budget {budget}: {report:?}");
        assert_eq!(report.rejected + report.failed, 0);
        verify_partition(&h, topic, 0, &exp).await.expect("readable");
        h.stop().await;
    }
}

/// A compaction that rewrites the newest chunks keeps them in the tail cache under the
/// segment's location: a tailing reader planning from the new index still reads from memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tailing_reader_hits_the_tail_cache_across_compaction() {
    use crate::log::read::Reader;
    let h = Harness::start(settings(), TestClock::real()).await;
    let topic = h.create_topic("t", 1, &[]).await;
    let key = PartitionKey { topic_id: topic, partition: 0 };
    let mut exp = Expected::new();
    for r in 0..4 {
        produce_recorded(&h, key, &format!("r{r}"), 2, 0, &mut exp).await;
    }
    let before: Vec<Chunk> =
        h.controller.metadata().read(|m| m.partition(&topic, 0).expect("p").chunks().cloned().collect());
    assert_eq!(before.len(), 4);
    assert!(before.iter().all(|c| h.tail.get(&c.object, c.position).is_some()), "just flushed: cached");
    let report = h.lifecycle.compact_once().await;
    assert_eq!((report.segments, report.chunks_replaced), (1, 4), "{report:?}");

    let newest = *exp.keys().last().expect("records");
    let planned = h.controller.metadata().read(|m| m.partition(&topic, 0).expect("p").chunks_from(newest, 1 << 20));
    assert_eq!(planned.len(), 1);
    assert!(h.storage.is_segment_key(&planned[0].object), "{planned:?}");
    let metrics = Arc::new(Metrics::default());
    let reader =
        Reader::new(h.tail.clone(), skiff_storage::BlockCache::new(1 << 20, 4096), h.storage.clone(), metrics.clone());
    let got = reader.records(topic, &planned, newest, 1 << 20, true).await.expect("read");
    assert!(!got.is_empty());
    let stats = metrics.render(&crate::metrics::Snapshot {
        gauges: &[],
        storage: h.storage.stats(),
        blocks: reader.blocks.stats(),
        topic_names: &HashMap::new(),
        prices: Default::default(),
    });
    assert!(stats.contains("skiff_cache_reads_total{cache=\"tail\",result=\"hit\"} 1\n"), "{stats}");
    assert!(stats.contains("skiff_cache_reads_total{cache=\"tail\",result=\"miss\"} 0\n"), "{stats}");
    // The cached section is the stored one, and the replaced chunks left the cache.
    let seg = &planned[0];
    let stored = h.storage.get_range(&seg.object, seg.position..seg.position + seg.len).await.expect("stored");
    assert_eq!(h.tail.get(&seg.object, seg.position), Some(stored));
    assert!(before.iter().all(|c| h.tail.get(&c.object, c.position).is_none()), "replaced entries dropped");
    verify_partition(&h, topic, 0, &exp).await.expect("readable");
    h.stop().await;
}
