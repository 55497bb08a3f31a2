//! Cleaner passes end to end on `memory://`: produce keyed records through the WAL, roll, clean,
//! then read the partition back through the read path (`Reader`, as Fetch does) and check
//! Kafka's guarantees: the latest value per key at its original offset, the head untouched,
//! tombstones gone after `delete.retention.ms`, `min.compaction.lag.ms` honoured, races and
//! crashes leaving exactly the old or exactly the new log.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use skiff_controller::image::Chunk;
use skiff_storage::BlockCache;
use uuid::Uuid;

use super::{Failpoint, PassResult};
use crate::broker::{Clock, batch};
use crate::log::background::tests::{Harness, TestClock, settings, verify_references};
use crate::log::background::{Lifecycle, LifecycleSettings};
use crate::log::read::Reader;
use crate::log::wal::PartitionKey;
use crate::metrics::Metrics;

/// One record as a consumer sees it: offset, key, value (None: tombstone).
type Seen = (i64, Bytes, Option<Bytes>);

fn cleaner_settings() -> LifecycleSettings {
    LifecycleSettings {
        compaction_enabled: false,
        cleaner_enabled: true,
        // Ten minutes: the abandon bound (grace / 2) is never hit by accident.
        gc_grace_ms: 600_000,
        ..settings()
    }
}

/// Encodes keyed records (None value: tombstone) as one client batch.
fn encode(records: &[(&str, Option<&str>)], ts: i64, compression: Compression) -> Bytes {
    let records: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, (k, v))| Record {
            transactional: false,
            control: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: -1,
            timestamp: ts,
            key: Some(Bytes::copy_from_slice(k.as_bytes())),
            value: v.map(|v| Bytes::copy_from_slice(v.as_bytes())),
            headers: Default::default(),
            delete_horizon: false,
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(&mut buf, &records, &RecordEncodeOptions { version: 2, compression }).expect("encode");
    buf.freeze()
}

/// Produces one batch; returns its base offset.
async fn produce(h: &Harness, key: PartitionKey, records: &[(&str, Option<&str>)], ts: i64) -> i64 {
    let bytes = encode(records, ts, Compression::None);
    let headers = batch::validate_produce(&bytes, 1 << 20).expect("valid batch");
    let (appended, rx) = h.wal.append(key, &bytes, &headers, None, None).await.expect("append");
    rx.expect("acks").await.expect("flushed").expect("committed");
    appended.base_offset
}

/// The log a producer wrote, record by record.
#[derive(Default)]
struct Log {
    records: Vec<Seen>,
}

impl Log {
    async fn produce(&mut self, h: &Harness, key: PartitionKey, records: &[(&str, Option<&str>)], ts: i64) {
        let base = produce(h, key, records, ts).await;
        for (i, (k, v)) in records.iter().enumerate() {
            self.records.push((base + i as i64, Bytes::from(k.to_string()), v.map(|v| Bytes::from(v.to_string()))));
        }
    }

    /// What a cleaned log below `clean_end` holds: the last record of each key (tombstones too,
    /// unless `drop_tombstones`), then everything from `clean_end` on verbatim.
    fn cleaned(&self, clean_end: i64, drop_tombstones: bool) -> Vec<Seen> {
        let mut last: BTreeMap<&Bytes, i64> = BTreeMap::new();
        for (o, k, _) in self.records.iter().filter(|r| r.0 < clean_end) {
            last.insert(k, *o);
        }
        self.records
            .iter()
            .filter(|(o, k, v)| *o >= clean_end || (last.get(k) == Some(o) && !(drop_tombstones && v.is_none())))
            .cloned()
            .collect()
    }
}

/// Reads the whole partition as a consumer does: Fetch's plan (`chunks_from`) and read
/// (`Reader::records`), moving on past a chunk whose batches all precede the position.
async fn read_all(h: &Harness, topic_id: Uuid, partition: i32) -> Vec<Seen> {
    let reader =
        Reader::new(h.tail.clone(), BlockCache::new(1 << 20, 4096), h.storage.clone(), Arc::new(Metrics::default()));
    let (mut offset, hwm) = h
        .controller
        .metadata()
        .read(|m| m.partition(&topic_id, partition).map(|p| (p.log_start_offset(), p.high_watermark())))
        .expect("partition");
    let mut out = Vec::new();
    for _ in 0..10_000 {
        if offset >= hwm {
            break;
        }
        let chunks: Vec<Chunk> =
            h.controller.metadata().read(|m| m.partition(&topic_id, partition).expect("p").chunks_from(offset, 256));
        let Some(data) = reader.records_or_gap(topic_id, &chunks, offset, 256, true).await.expect("read") else {
            // A trailing gap: on to the next chunk, as Fetch does.
            offset = chunks.last().expect("planned").last_offset + 1;
            continue;
        };
        assert!(!data.is_empty(), "min_one: a batch is there");
        let mut pos = 0;
        while pos < data.len() {
            let hdr = batch::parse_header(&data[pos..]).expect("batch");
            batch::verify_crc(&data[pos..], &hdr).expect("crc");
            let mut one = data.slice(pos..pos + hdr.size);
            let set = RecordBatchDecoder::decode(&mut one).expect("decode");
            for r in set.records.iter().filter(|r| r.offset >= offset) {
                out.push((r.offset, r.key.clone().expect("keyed"), r.value.clone()));
            }
            offset = hdr.last_offset() + 1;
            pos += hdr.size;
        }
    }
    out
}

fn chunks(h: &Harness, topic_id: Uuid) -> Vec<Chunk> {
    h.controller.metadata().read(|m| m.partition(&topic_id, 0).expect("p").chunks().cloned().collect())
}

/// Keys of stored segment objects.
async fn stored_segments(h: &Harness) -> HashSet<String> {
    h.storage.list("seg").await.expect("list").into_iter().map(|o| o.key).collect()
}

async fn compacted_topic(h: &Harness, extra: &[(&str, &str)]) -> (Uuid, PartitionKey) {
    let mut configs = vec![("cleanup.policy", "compact"), ("segment.bytes", "1048576")];
    configs.extend_from_slice(extra);
    let topic = h.create_topic("c", 1, &configs).await;
    (topic, PartitionKey { topic_id: topic, partition: 0 })
}

/// 4 + `rounds` batches over five keys with overwrites and a tombstone, some batches partly superseded.
async fn workload(h: &Harness, key: PartitionKey, log: &mut Log, ts: i64, rounds: usize) {
    log.produce(h, key, &[("k0", Some("a0")), ("k1", Some("a1")), ("k2", Some("a2"))], ts).await;
    log.produce(h, key, &[("k3", Some("a3")), ("k4", Some("a4"))], ts).await;
    for round in 0..rounds {
        let v = format!("r{round}");
        log.produce(h, key, &[("k1", Some(v.as_str())), ("k2", Some(v.as_str()))], ts).await;
    }
    log.produce(h, key, &[("k3", None)], ts).await;
    log.produce(h, key, &[("k0", Some("z0")), ("k4", Some("z4"))], ts).await;
    sentinel(h, key, log, ts).await;
}

/// One record under a key of its own, the newest chunk: a roll leaves the newest chunk in the
/// head (Kafka's active segment keeps the newest batch), so this is what stays uncleaned while
/// everything before it becomes cleanable; being the only record of its key, the cleaned log
/// keeps it too.
async fn sentinel(h: &Harness, key: PartitionKey, log: &mut Log, ts: i64) {
    log.produce(h, key, &[("sentinel", Some("s"))], ts).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pass_keeps_the_latest_value_per_key_at_original_offsets_and_never_touches_the_head() {
    let clock = TestClock::real();
    let h = Harness::start(cleaner_settings(), clock.clone()).await;
    let (topic, key) = compacted_topic(&h, &[("segment.bytes", "1")]).await;
    let mut log = Log::default();
    let now = clock.now_ms();
    workload(&h, key, &mut log, now, 40).await;
    // The sentinel (the newest chunk) stays in the head.
    let hwm = log.records.len() as i64 - 1;
    assert_eq!(read_all(&h, topic, 0).await, log.records, "before: the produced log");
    let chunks_before = chunks(&h, topic).len();

    // A cleaner without the tail cache: every byte it reads is a GET, counted.
    let cleaner = Lifecycle::new(
        cleaner_settings(),
        h.controller.clone(),
        h.storage.clone(),
        Arc::new(Metrics::default()),
        clock.clone(),
        skiff_time::random_ids(),
        None,
    );
    let report = cleaner.clean_once().await;
    assert_eq!(report.rolled, 1, "{report:?}");
    assert_eq!(report.passes.len(), 1, "{report:?}");
    let pass = &report.passes[0];
    assert_eq!(pass.result, PassResult::Committed, "{pass:?}");
    assert_eq!(pass.clean_offset, hwm);
    // Every byte read once (exact ranged GETs), nothing twice; with 90 % of the bytes
    // superseded, read + written stays within 1.2 x the cleanable bytes.
    let s = pass.stats;
    assert_eq!(s.read_bytes, s.cleanable_bytes, "{s:?}");
    assert!(s.written_bytes <= s.read_bytes, "{s:?}");
    assert!(s.read_bytes + s.written_bytes <= s.cleanable_bytes * 12 / 10, "{s:?}");
    assert!(s.gets as usize >= chunks_before - 1, "every chunk but the head's sentinel is read: {s:?}");
    assert_eq!(s.records_removed, log.records.len() as u64 - log.cleaned(hwm, false).len() as u64, "{s:?}");
    let after = read_all(&h, topic, 0).await;
    assert_eq!(after, log.cleaned(hwm, false), "latest value per key at original offsets, tombstone kept");
    let state = h.controller.metadata().read(|m| m.partition(&topic, 0).expect("p").cleaner().clone());
    assert_eq!((state.clean_offset, state.head_offset), (hwm, hwm));
    assert!(state.next_horizon_ms.is_some(), "the kept tombstone's horizon is scheduled");
    // Chunks whose batches all survive stay where they are (WAL chunks here); the rest are new
    // segments.
    assert!(chunks(&h, topic).iter().any(|c| h.storage.is_segment_key(&c.object)));

    // New records go to the head; a pass never touches them until they roll.
    let mut head_only = Log::default();
    head_only.produce(&h, key, &[("k1", Some("h1")), ("k1", Some("h2"))], now).await;
    log.records.extend(head_only.records.iter().cloned());
    let head_chunks = chunks(&h, topic).into_iter().filter(|c| c.base_offset >= hwm).collect::<Vec<_>>();
    // segment.bytes=1 rolls at once; set it high so the head stays: no roll, no pass.
    let configs = [("cleanup.policy", "compact"), ("segment.bytes", "1048576")];
    h.controller
        .set_topic_configs("c", configs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
        .await
        .expect("configs");
    let report = cleaner.clean_once().await;
    assert_eq!((report.rolled, report.passes.len()), (0, 0), "{report:?}");
    assert_eq!(chunks(&h, topic).into_iter().filter(|c| c.base_offset >= hwm).collect::<Vec<_>>(), head_chunks);
    assert_eq!(read_all(&h, topic, 0).await, log.cleaned(hwm, false));
    verify_references(&h).await.expect("references");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tombstones_go_after_delete_retention_and_min_lag_holds_records_back() {
    let clock = TestClock::real();
    let h = Harness::start(cleaner_settings(), clock.clone()).await;
    let (topic, key) = compacted_topic(
        &h,
        &[("segment.bytes", "1"), ("delete.retention.ms", "5000"), ("min.compaction.lag.ms", "60000")],
    )
    .await;
    let mut log = Log::default();
    workload(&h, key, &mut log, clock.now_ms(), 6).await;
    let hwm = log.records.len() as i64;

    // Rolled, but every record is younger than min.compaction.lag.ms: nothing is cleaned.
    let report = h.lifecycle.clean_once().await;
    assert_eq!((report.rolled, report.passes.len()), (1, 0), "{report:?}");
    assert_eq!(read_all(&h, topic, 0).await, log.records);

    clock.advance(60_001);
    let report = h.lifecycle.clean_once().await;
    assert_eq!(report.count(PassResult::Committed), 1, "{report:?}");
    assert_eq!(read_all(&h, topic, 0).await, log.cleaned(hwm, false), "tombstone kept within delete.retention.ms");
    // Before the horizon nothing is due (no dirty bytes, horizon ahead).
    clock.advance(1_000);
    assert!(h.lifecycle.clean_once().await.passes.is_empty());

    // Past the horizon the next pass removes the tombstone (and only it).
    clock.advance(5_000);
    let report = h.lifecycle.clean_once().await;
    assert_eq!(report.count(PassResult::Committed), 1, "{report:?}");
    assert_eq!(read_all(&h, topic, 0).await, log.cleaned(hwm, true), "expired tombstone removed");
    let horizon = h.controller.metadata().read(|m| m.partition(&topic, 0).expect("p").cleaner().next_horizon_ms);
    assert_eq!(horizon, None);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_delete_records_or_leader_change_rejects_the_swap_and_the_old_log_stays() {
    for race in ["delete-records", "leader-change"] {
        let clock = TestClock::real();
        let h = Harness::start(cleaner_settings(), clock.clone()).await;
        let (topic, key) = compacted_topic(&h, &[("segment.bytes", "1")]).await;
        let mut log = Log::default();
        workload(&h, key, &mut log, clock.now_ms(), 6).await;
        assert_eq!(h.lifecycle.roll_heads().await, 1);
        let inputs = h.lifecycle.plan_cleaning(&HashSet::new());
        assert_eq!(inputs.len(), 1);
        let before_segments = stored_segments(&h).await;
        let expected = match race {
            "delete-records" => {
                h.controller.advance_log_start(topic, 0, 3).await.expect("delete records");
                log.records.retain(|r| r.0 >= 3);
                log.records.clone()
            }
            _ => {
                // A new incarnation of broker 1: new leader epochs, the planned pass is stale.
                let reg = skiff_controller::intent::BrokerRegistration {
                    incarnation: Uuid::new_v4(),
                    ..h.registration.clone()
                };
                h.controller.register_broker(reg).await.expect("re-register");
                log.records.clone()
            }
        };
        let pass = h.lifecycle.clean_partition(inputs.into_iter().next().expect("input")).await;
        assert_eq!(pass.result, PassResult::Rejected, "{race}: {pass:?}");
        assert!(!pass.written.is_empty());
        assert_eq!(
            stored_segments(&h).await,
            before_segments,
            "{race}: a rejected swap's segments are deleted at once"
        );
        assert_eq!(read_all(&h, topic, 0).await, expected, "{race}: the old log stays readable");
        // The next round replans and cleans.
        let report = h.lifecycle.clean_once().await;
        assert_eq!(report.count(PassResult::Committed), 1, "{race}: {report:?}");
        let hwm = log.records.last().expect("records").0 + 1;
        assert_eq!(read_all(&h, topic, 0).await, log.cleaned(hwm, false), "{race}");
        h.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_pass_is_abandoned_and_its_segments_deleted() {
    // Half of a zero grace period: any pass that stored a segment is too slow to commit.
    let clock = TestClock::real();
    let h = Harness::start(LifecycleSettings { gc_grace_ms: 0, ..cleaner_settings() }, clock.clone()).await;
    let (topic, key) = compacted_topic(&h, &[("segment.bytes", "1")]).await;
    let mut log = Log::default();
    workload(&h, key, &mut log, clock.now_ms(), 6).await;
    let before = chunks(&h, topic);
    let report = h.lifecycle.clean_once().await;
    assert_eq!(report.count(PassResult::Abandoned), 1, "{report:?}");
    assert!(stored_segments(&h).await.is_empty());
    assert_eq!(chunks(&h, topic), before);
    assert_eq!(read_all(&h, topic, 0).await, log.records);
    h.stop().await;
}

/// A pass dropped at any point (as a crash would) leaves exactly the old or exactly the new
/// chunks; GC later deletes every segment it wrote that nothing references, and nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_at_any_failpoint_leaves_old_or_new_and_gc_collects_the_rest() {
    for at in [Failpoint::Mapped, Failpoint::Stored(1), Failpoint::Stored(2), Failpoint::SwapSent] {
        let clock = TestClock::real();
        let s = LifecycleSettings { gc_grace_ms: 1_000, ..cleaner_settings() };
        let h = Harness::start(s, clock.clone()).await;
        // Small segments: the pass writes several.
        let (topic, key) = compacted_topic(&h, &[("segment.bytes", "150")]).await;
        let mut log = Log::default();
        workload(&h, key, &mut log, clock.now_ms(), 6).await;
        let hwm = log.records.len() as i64;
        assert_eq!(h.lifecycle.roll_heads().await, 1);
        let before = chunks(&h, topic);
        h.lifecycle.set_cleaner_failpoint(Some(at));
        let report = h.lifecycle.clean_once().await;
        h.lifecycle.set_cleaner_failpoint(None);
        assert_eq!(report.passes.len(), 1, "{at:?}: {report:?}");
        let pass = &report.passes[0];
        assert_eq!(pass.result, PassResult::Dropped, "{at:?}: {pass:?}");
        let after = chunks(&h, topic);
        let read = read_all(&h, topic, 0).await;
        let written: HashSet<String> = pass.written.iter().cloned().collect();
        match at {
            Failpoint::SwapSent => {
                let objects: HashSet<String> = after.iter().map(|c| c.object.to_string()).collect();
                assert!(written.iter().all(|k| objects.contains(k)), "{at:?}: exactly the new chunks");
                assert_ne!(after, before);
                assert_eq!(read, log.cleaned(hwm, false), "{at:?}");
            }
            _ => {
                assert_eq!(after, before, "{at:?}: exactly the old chunks");
                assert_eq!(read, log.records, "{at:?}");
            }
        }
        if let Failpoint::Stored(n) = at {
            assert_eq!(written.len() as u64, n, "{at:?}");
        }
        // GC after the grace period: the dropped pass's unreferenced segments go, referenced
        // objects stay.
        clock.advance(2_000);
        h.lifecycle.collect_garbage_once().await;
        let referenced: HashSet<String> = chunks(&h, topic).iter().map(|c| c.object.to_string()).collect();
        let segs = stored_segments(&h).await;
        for k in &written {
            assert_eq!(segs.contains(k), referenced.contains(k), "{at:?}: {k}");
        }
        verify_references(&h).await.expect("nothing referenced deleted");
        assert_eq!(read_all(&h, topic, 0).await, read, "{at:?}: readable after GC");
        // The next pass (no failpoint) completes the job.
        let report = h.lifecycle.clean_once().await;
        if at != Failpoint::SwapSent {
            assert_eq!(report.count(PassResult::Committed), 1, "{at:?}: {report:?}");
        }
        assert_eq!(read_all(&h, topic, 0).await, log.cleaned(hwm, false), "{at:?}");
        h.stop().await;
    }
}

/// Segments are cut at segment.bytes; a run of clean input whose batches all survive verbatim
/// is not rewritten (it stays in the index and splits the swap into runs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_pass_keeps_unchanged_clean_segments_and_cuts_at_segment_bytes() {
    let clock = TestClock::real();
    let h = Harness::start(cleaner_settings(), clock.clone()).await;
    let (topic, key) = compacted_topic(&h, &[("segment.bytes", "1"), ("min.cleanable.dirty.ratio", "0.01")]).await;
    let mut log = Log::default();
    for i in 0..6 {
        let (k, v) = (format!("u{i}"), format!("v{i}"));
        log.produce(&h, key, &[(k.as_str(), Some(v.as_str()))], clock.now_ms()).await;
    }
    let report = h.lifecycle.clean_once().await;
    assert_eq!(report.count(PassResult::Committed), 1, "{report:?}");
    // Nothing superseded: every chunk verbatim, nothing written, just the clean offset moved.
    assert_eq!(report.passes[0].stats.puts, 0, "{report:?}");
    let first = chunks(&h, topic);
    // Overwrite one key: only the chunk holding its old record is rewritten.
    log.produce(&h, key, &[("u2", Some("w2"))], clock.now_ms()).await;
    sentinel(&h, key, &mut log, clock.now_ms()).await;
    let report = h.lifecycle.clean_once().await;
    assert_eq!(report.count(PassResult::Committed), 1, "{report:?}");
    let hwm = log.records.len() as i64;
    assert_eq!(read_all(&h, topic, 0).await, log.cleaned(hwm, false));
    let second = chunks(&h, topic);
    let kept = second.iter().filter(|c| first.contains(c)).count();
    assert!(kept >= 4, "untouched chunks stay: {first:?} -> {second:?}");
    assert!(report.passes[0].stats.puts >= 1);
    // Every chunk's data is at most one batch over segment.bytes (here: one batch each).
    for c in second.iter().filter(|c| c.len > 0) {
        let data = h.storage.get_range(&c.object, c.position..c.position + c.len).await.expect("chunk");
        assert_eq!(batch::parse_header(&data).expect("batch").size, data.len(), "{c:?}");
    }
    h.stop().await;
}

/// `cleaner_max_bytes_per_second` paces a pass: its reads plus writes take at least their
/// bytes over the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn io_limit_paces_a_pass() {
    let clock = TestClock::real();
    let h = Harness::start(cleaner_settings(), clock.clone()).await;
    let (topic, key) = compacted_topic(&h, &[("segment.bytes", "1")]).await;
    let mut log = Log::default();
    workload(&h, key, &mut log, clock.now_ms(), 6).await;
    let limit = 8_000;
    let cleaner = Lifecycle::new(
        LifecycleSettings { cleaner_max_bytes_per_second: limit, ..cleaner_settings() },
        h.controller.clone(),
        h.storage.clone(),
        Arc::new(Metrics::default()),
        clock.clone(),
        skiff_time::random_ids(),
        None,
    );
    let started = std::time::Instant::now();
    let report = cleaner.clean_once().await;
    let took = started.elapsed();
    assert_eq!(report.count(PassResult::Committed), 1, "{report:?}");
    let s = report.passes[0].stats;
    let floor = std::time::Duration::from_secs_f64((s.read_bytes + s.written_bytes) as f64 / limit as f64);
    assert!(floor >= std::time::Duration::from_millis(100), "test needs enough bytes: {s:?}");
    // The last I/O's wait may be skipped (nothing follows it), hence one GET of slack.
    assert!(took + std::time::Duration::from_millis(50) >= floor, "{took:?} < {floor:?} for {s:?}");
    let hwm = log.records.len() as i64;
    assert_eq!(read_all(&h, topic, 0).await, log.cleaned(hwm, false));
    h.stop().await;
}

/// WAL compaction keeps a compacted partition's head and roll ends as chunk boundaries (the
/// cleaner's ranges end there), and skips a partition the cleaner holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_compaction_respects_heads_and_the_cleaners_claim() {
    let clock = TestClock::real();
    let h = Harness::start(cleaner_settings(), clock.clone()).await;
    let (topic, key) = compacted_topic(&h, &[("segment.bytes", "1")]).await;
    let mut log = Log::default();
    for i in 0..3 {
        log.produce(&h, key, &[("k", Some(format!("a{i}").as_str()))], clock.now_ms()).await;
    }
    assert_eq!(h.lifecycle.roll_heads().await, 1);
    for i in 0..3 {
        log.produce(&h, key, &[("k", Some(format!("b{i}").as_str()))], clock.now_ms()).await;
    }
    // Held by the cleaner: compaction leaves the partition alone.
    {
        let _claim = h.lifecycle.claim(topic, 0, crate::log::background::Work::Cleaner).expect("free");
        assert_eq!(h.lifecycle.compact_once().await.segments, 0);
    }
    let report = h.lifecycle.compact_once().await;
    assert_eq!(report.segments, 2, "one segment each side of the head: {report:?}");
    let bounds: Vec<(i64, i64)> = chunks(&h, topic).iter().map(|c| (c.base_offset, c.last_offset)).collect();
    // The roll left the newest chunk (offset 2) in the head.
    assert_eq!(bounds, [(0, 1), (2, 5)]);
    assert_eq!(read_all(&h, topic, 0).await, log.records);
    h.stop().await;
}

/// Kafka's cleaner rules for transactions (RFC 0004 "Compaction"), on a log written through the
/// WAL with real markers: the records of an aborted transaction are removed, a committed
/// transaction's records are compacted like any others, and both markers stay while a pass
/// still finds their transaction's data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborted_transactions_are_removed_and_markers_kept() {
    use std::collections::BTreeSet;

    use skiff_controller::intent::{Answer, TxnOp, TxnVersion};
    use skiff_controller::transactions::TxnStatus;

    use crate::log::txn::wal_tests::{TXN_ID, encode as txn_encode, op, until};

    let clock = TestClock::real();
    let h = Harness::start(cleaner_settings(), clock.clone()).await;
    let (topic, key) = compacted_topic(&h, &[("segment.bytes", "1")]).await;
    let Answer::Producer(pe) = op(&h, TxnOp::InitProducerId { timeout_ms: 60_000, expected: None, now_ms: 1 }).await
    else {
        panic!("InitProducerId answers a producer id");
    };
    let (pid, epoch) = (pe.producer_id, pe.producer_epoch);
    let partitions = BTreeSet::from([(topic, 0)]);
    let add = |now_ms| TxnOp::AddPartitions {
        producer_id: pid,
        producer_epoch: epoch,
        partitions: partitions.clone(),
        version: TxnVersion::Tv1,
        now_ms,
    };
    let end = |commit, now_ms| TxnOp::EndTxn {
        producer_id: pid,
        producer_epoch: epoch,
        commit,
        version: TxnVersion::Tv1,
        now_ms,
    };
    let append = |records: Bytes| {
        let h = &h;
        async move {
            let headers = batch::validate_produce(&records, 1 << 20).expect("valid");
            let (a, rx) = h.wal.append(key, &records, &headers, None, Some(TXN_ID)).await.expect("append");
            rx.expect("acks").await.expect("flushed").expect("committed");
            a.base_offset
        }
    };
    // Aborted: k0 = v0 at 0, k1 = v1 at 1, abort marker at 2.
    assert_eq!(op(&h, add(2)).await, Answer::Ok);
    assert_eq!(append(txn_encode(pid, epoch, 0, 2, true)).await, 0);
    assert_eq!(op(&h, end(false, 3)).await, Answer::Ok);
    until(&h, "the abort", |m| m.transaction(TXN_ID).is_some_and(|t| t.state == TxnStatus::CompleteAbort)).await;
    // Committed: k0 = v0 at 3, commit marker at 4.
    assert_eq!(op(&h, add(4)).await, Answer::Ok);
    assert_eq!(append(txn_encode(pid, epoch, 2, 1, true)).await, 3);
    assert_eq!(op(&h, end(true, 5)).await, Answer::Ok);
    until(&h, "the commit", |m| m.transaction(TXN_ID).is_some_and(|t| t.state == TxnStatus::CompleteCommit)).await;
    let mut log = Log::default();
    sentinel(&h, key, &mut log, clock.now_ms()).await;
    let before: Vec<i64> = read_all(&h, topic, 0).await.iter().map(|r| r.0).collect();
    assert_eq!(before, vec![0, 1, 2, 3, 4, 5]);

    let report = h.lifecycle.clean_once().await;
    assert_eq!(report.count(PassResult::Committed), 1, "{report:?}");
    let after = read_all(&h, topic, 0).await;
    let offsets: Vec<i64> = after.iter().map(|r| r.0).collect();
    assert_eq!(offsets, vec![2, 3, 4, 5], "the aborted records are gone, both markers and the commit stay: {after:?}");
    assert_eq!(after[1].1, Bytes::from("k0"));
    assert_eq!(after[1].2, Some(Bytes::from("v0")));
    verify_references(&h).await.expect("references");
    h.stop().await;
}
