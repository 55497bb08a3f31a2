//! Crash safety of the log cleaner across processes (issue #12): `skiff dev` on file:// with a
//! compacted topic under a seeded keyed workload (overwrites, tombstones) is SIGKILLed at a
//! seeded random point inside a cleaner pass, restarted on the same data directory, and the
//! whole partition is read back. The log must be the old one or the new one, never a mix and
//! never missing an acknowledged record:
//!
//! * offsets strictly increase and every record read equals, field by field, the record
//!   acknowledged at that offset (nothing invented, nothing moved);
//! * every key's last record read is its latest acknowledged record, at its offset (nothing
//!   acknowledged lost; tombstones stay: delete.retention.ms is the default day), and no
//!   other key appears;
//! * below the clean offset the restarted broker's first pass plans from, every key appears
//!   once (a swap applied in part would leave superseded records in the runs it missed).
//!
//! After the iterations, once `gc_grace` and a GC pass went by, the objects stored under
//! `seg/` and `wal/` are exactly those the index references: their count equals the
//! `skiff_objects` gauge (every referenced object is also read back by the full read), so a
//! segment a killed pass stored and never swapped in has been deleted.
//!
//! The same runs on a local MinIO (3 kills by default; objects counted in MinIO's bucket
//! directory). `SKIFF_TEST_SEED` replays a run (the seed is printed);
//! `SKIFF_CLEANER_CRASH_ITERATIONS` (default 5 on file://, 3 on MinIO) runs more kills.
#![allow(clippy::disallowed_methods)] // black-box tests wait and measure in real time

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, ensure};
use bytes::Bytes;
use kafka_protocol::records::Compression;
use support::SkiffProcess;
use support::client::{Client, TestRecord, encode_batch};
use support::cluster::{Rng, http_get};
use support::minio::Minio;

const TOPIC: &str = "crash-changelog";
/// Distinct keys, each written once first: the cleaned log holds about KEYS × the mean value
/// size (~1.5 MiB), so a pass writes at least two segments (segment.bytes is 1 MiB).
const KEYS: usize = 1000;
/// Records per produced batch (~36 KB)...
const BATCH: usize = 24;
/// ...one every 40 ms at most: ~0.9 MB/s, about what the paced cleaner keeps up with.
const PRODUCE_EVERY: Duration = Duration::from_millis(40);
/// Bytes produced before the first kill, so the first pass has a clean section to rewrite.
const WARMUP_BYTES: usize = 3 << 20;
/// How long one iteration may wait for a pass to start.
const PASS_WAIT: Duration = Duration::from_secs(30);
/// A seeded kill lands this far (at most) after the pass's start line...
const KILL_WINDOW_MS: u64 = 3000;
/// ...or this far (at most) after its first segment PUT (before its next PUT or its swap)...
const AFTER_PUT_MS: u64 = 50;
/// ...or this far (at most) after its second (usually last) PUT: around its swap.
const AFTER_SECOND_PUT_MS: u64 = 1000;

/// Cleaner every 200 ms at ~1.5 MB/s, at most 4 MiB of dirty bytes a pass (a pass takes
/// seconds: a wide window to kill in, and it ends well within gc_grace / 2); GC every second
/// with a 10 s grace. Compaction runs often too, so WAL objects get rewritten and freed while
/// passes are killed.
const CONFIG: &str = "[lifecycle]\n\
    cleaner_backoff = \"200ms\"\n\
    cleaner_max_bytes_per_second = 1500000\n\
    cleaner_dirty_buffer_bytes = 4194304\n\
    gc_interval = \"1s\"\n\
    gc_grace = \"10s\"\n\
    compaction_interval = \"1s\"\n\
    compaction_min_age = \"2s\"\n";
const GC_GRACE: Duration = Duration::from_secs(10);
const LOG_FILTER: &str = "info,openraft=warn,skiff::log::background::cleaner=debug";

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// The acknowledged log: offset → record, and key → offset of its latest record.
#[derive(Default)]
struct Model {
    records: BTreeMap<i64, TestRecord>,
    latest: BTreeMap<Bytes, i64>,
    bytes: usize,
}

impl Model {
    fn acknowledged(&mut self, base: i64, records: Vec<TestRecord>) {
        for (i, r) in records.into_iter().enumerate() {
            let offset = base + i as i64;
            let key = r.key.clone().unwrap_or_default();
            self.bytes += r.value.as_ref().map_or(0, Bytes::len) + key.len();
            self.latest.insert(key, offset);
            self.records.insert(offset, r);
        }
    }

    /// Checks a full read against the model (see the module docs); returns the number of
    /// records read.
    fn check(&self, read: &[(i64, TestRecord)], hwm: i64) -> anyhow::Result<usize> {
        let next = self.records.keys().next_back().map_or(0, |o| o + 1);
        ensure!(hwm == next, "high watermark {hwm}, acknowledged up to {next}");
        let mut last_read: BTreeMap<&Bytes, i64> = BTreeMap::new();
        let mut prev = -1;
        for (offset, r) in read {
            ensure!(*offset > prev, "offsets not increasing: {offset} after {prev}");
            prev = *offset;
            let want = self.records.get(offset).with_context(|| format!("offset {offset} was never acknowledged"))?;
            ensure!(
                r.key == want.key
                    && r.value == want.value
                    && r.headers == want.headers
                    && r.timestamp == want.timestamp,
                "offset {offset}: read {r:?}, acknowledged {want:?}"
            );
            last_read.insert(r.key.as_ref().context("keyed")?, *offset);
        }
        for (key, offset) in &self.latest {
            let got = last_read.get(key).copied();
            ensure!(
                got == Some(*offset),
                "key {:?}: last record read at {got:?}, latest acknowledged at {offset}",
                String::from_utf8_lossy(key)
            );
        }
        ensure!(
            last_read.len() == self.latest.len(),
            "{} keys read, {} acknowledged",
            last_read.len(),
            self.latest.len()
        );
        Ok(read.len())
    }
}

/// A seeded batch: every key once first, then overwrites of a hot set and a cold tail, about
/// one tombstone in twelve.
fn next_batch(rng: &mut Rng, seq: &mut u64) -> Vec<TestRecord> {
    let ts = now_ms();
    (0..BATCH)
        .map(|_| {
            let k = match *seq as usize {
                first if first < KEYS => first,
                _ if rng.below(2) == 0 => rng.below(KEYS),
                _ => rng.below(KEYS / 8),
            };
            *seq += 1;
            let key = Bytes::from(format!("key-{k:04}"));
            if rng.below(12) == 0 {
                TestRecord { key: Some(key), value: None, headers: Vec::new(), timestamp: ts }
            } else {
                let len = 100 + rng.below(2800);
                let mut v = format!("v{seq}-").into_bytes();
                v.resize(len, b'a' + (*seq % 26) as u8);
                TestRecord::new(key, v, ts)
            }
        })
        .collect()
}

async fn produce(c: &mut Client, rng: &mut Rng, seq: &mut u64, model: &mut Model) -> anyhow::Result<()> {
    let pace = tokio::time::sleep(PRODUCE_EVERY);
    let records = next_batch(rng, seq);
    let base = c.produce_ok(TOPIC, 0, encode_batch(&records, Compression::None, None)).await?;
    model.acknowledged(base, records);
    pace.await;
    Ok(())
}

async fn read_all(c: &mut Client) -> anyhow::Result<(Vec<(i64, TestRecord)>, i64)> {
    let (records, hwm) = c.fetch_all(TOPIC, 0, 0).await?;
    Ok((records.into_iter().map(|r| (r.offset, r.record)).collect(), hwm))
}

/// The current run's cleaner passes so far, from its log: how many started, and of the last
/// one the segments it stored and whether its swap was logged (`cleaned`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Passes {
    started: usize,
    last_puts: usize,
    last_swapped: bool,
}

/// The INFO line of a committed pass.
const CLEANED: &str = "cleaner::pass: cleaned ";

fn log_text(broker: &SkiffProcess) -> String {
    String::from_utf8_lossy(&std::fs::read(broker.stderr_path()).unwrap_or_default()).into_owned()
}

fn passes(broker: &SkiffProcess) -> Passes {
    let text = log_text(broker);
    let last = text.rfind("cleaner pass started").map_or("", |at| &text[at..]);
    Passes {
        started: text.matches("cleaner pass started").count(),
        last_puts: last.matches("cleaner segment stored").count(),
        last_swapped: last.contains(CLEANED),
    }
}

/// Where the broker's objects are on this machine.
enum Store {
    /// `file://<data dir>/objects`: one file per object.
    File(PathBuf),
    /// A local MinIO's directory for the broker's prefix: one directory holding `xl.meta` per
    /// object.
    Minio(PathBuf),
}

/// The clean offset the current run's first pass planned from.
fn first_clean_offset(broker: &SkiffProcess) -> Option<i64> {
    let text = log_text(broker);
    let line = text.lines().find(|l| l.contains("cleaner pass started"))?;
    let value = line.split("clean_offset=").nth(1)?.split(' ').next()?;
    value.parse().ok()
}

/// Below the clean offset every key appears once: a swap applied in part would leave the
/// superseded records of the runs it did not replace. (A read spanning a swap stays within
/// the old log's records, which are unique there too.)
fn check_clean_below(read: &[(i64, TestRecord)], clean_offset: i64) -> anyhow::Result<()> {
    let mut seen: BTreeMap<&Bytes, i64> = BTreeMap::new();
    for (offset, r) in read.iter().take_while(|(o, _)| *o < clean_offset) {
        let key = r.key.as_ref().context("keyed")?;
        if let Some(first) = seen.insert(key, *offset) {
            anyhow::bail!(
                "key {:?} at {first} and {offset}, both below the clean offset {clean_offset}: a partial swap",
                String::from_utf8_lossy(key)
            );
        }
    }
    Ok(())
}

/// Objects stored under `dir` (recursively). `object_store`'s local store writes a PUT to a
/// `<name>#<n>` staging file first and renames it; those are counted apart.
fn object_files(store: &Store, dir: &Path, objects: &mut Vec<String>, staging: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let path = e.path();
        if path.is_dir() {
            if matches!(store, Store::Minio(_)) && path.join("xl.meta").is_file() {
                objects.push(path.display().to_string());
            } else {
                object_files(store, &path, objects, staging);
            }
        } else if matches!(store, Store::Minio(_)) {
            // Parts and metadata inside an object's directory.
        } else {
            let name = path.display().to_string();
            if path.file_name().is_some_and(|n| n.to_string_lossy().contains('#')) {
                staging.push(name);
            } else {
                objects.push(name);
            }
        }
    }
}

/// A gauge or counter from `/metrics` (the sum over its label sets).
async fn metric(http: &str, name: &str) -> anyhow::Result<f64> {
    let http = http.to_string();
    let body = tokio::task::spawn_blocking(move || http_get(&http, "/metrics")).await?.context("GET /metrics")?;
    let values: Vec<f64> = body
        .lines()
        .filter(|l| l.split([' ', '{']).next() == Some(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    ensure!(!values.is_empty(), "no {name} in /metrics");
    Ok(values.iter().sum())
}

fn iterations(default: usize) -> usize {
    std::env::var("SKIFF_CLEANER_CRASH_ITERATIONS").ok().and_then(|s| s.parse().ok()).unwrap_or(default).clamp(1, 200)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_cleaner_passes_leaves_old_or_new_log_and_gc_removes_abandoned_segments() {
    let broker = SkiffProcess::start_with_config_and_env(CONFIG, vec![("SKIFF_LOG".into(), LOG_FILTER.into())]);
    let store = Store::File(broker.data_dir().join("objects"));
    crash_scenario("file", broker, store, iterations(5)).await;
}

/// The same on a local MinIO (`support::minio`'s binary: its bucket directory is read to count
/// objects), fewer kills by default to keep CI time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_cleaner_passes_on_minio() {
    let minio = tokio::task::spawn_blocking(Minio::shared).await.expect("start MinIO");
    let bucket = minio.bucket_dir().expect("this test reads MinIO's bucket directory: a local `minio` binary");
    let prefix = minio.unique_prefix("cleaner-crash");
    let config = minio.skiff_config(&prefix, &format!("[broker]\nflush_interval_ms = 20\n{CONFIG}"));
    let mut env = minio.skiff_env();
    env.push(("SKIFF_LOG".into(), LOG_FILTER.into()));
    let broker = SkiffProcess::start_with_config_and_env(&config, env);
    crash_scenario("minio", broker, Store::Minio(bucket.join(&prefix)), iterations(3)).await;
}

async fn crash_scenario(name: &str, mut broker: SkiffProcess, store: Store, iterations: usize) {
    let seed = support::seed();
    eprintln!("cleaner_crash[{name}]: SKIFF_TEST_SEED={seed} iterations={iterations}");
    let started = Instant::now();
    let mut rng = Rng::new(seed);
    let mut model = Model::default();
    let mut seq = 0u64;
    let mut abandoned_puts = 0usize;
    let mut killed_after_put = 0usize;
    // Reads after a restart that found a cleaned log (fewer records than offsets).
    let mut cleaned_reads = 0usize;
    let result: anyhow::Result<()> = async {
        let mut c = Client::connect(broker.bootstrap()).await?;
        // Heads roll at Kafka's minimum segment.bytes (1 MiB) or after 2 s, every roll is due.
        let code = c
            .create_topic(
                TOPIC,
                1,
                &[
                    ("cleanup.policy", "compact"),
                    ("segment.bytes", "1048576"),
                    ("segment.ms", "2000"),
                    ("min.cleanable.dirty.ratio", "0.01"),
                ],
            )
            .await?;
        ensure!(code == 0, "CreateTopics: error {code}");
        while model.bytes < WARMUP_BYTES {
            produce(&mut c, &mut rng, &mut seq, &mut model).await?;
        }
        for iteration in 0..iterations {
            // Every other iteration lets a pass of this run commit first, so that the kills
            // land on cleaned logs too (otherwise each run's first pass is killed, and the log
            // read back is always the uncleaned one).
            let deadline = Instant::now() + PASS_WAIT;
            while iteration % 2 == 1 && !log_text(&broker).contains(CLEANED) {
                ensure!(Instant::now() < deadline, "iteration {iteration}: no pass committed within {PASS_WAIT:?}");
                produce(&mut c, &mut rng, &mut seq, &mut model).await?;
            }
            // Keep producing until a pass is under way (one may have started while the log was
            // read back).
            loop {
                let p = passes(&broker);
                if p.started > 0 && !p.last_swapped {
                    break;
                }
                ensure!(Instant::now() < deadline, "iteration {iteration}: no cleaner pass within {PASS_WAIT:?}");
                produce(&mut c, &mut rng, &mut seq, &mut model).await?;
            }
            // SIGKILL at a seeded point inside the pass, producing meanwhile (never with a
            // produce in flight: only acknowledged batches are in the model). The other
            // iterations, the first one included, kill just after a segment PUT of the pass
            // (it usually paces itself for hundreds of milliseconds before its next PUT or its
            // swap), so that GC has an abandoned segment to delete.
            let after_put = iteration % 2 == 0;
            // The first such kill follows the first PUT; later ones the first or the second.
            let mut puts = if iteration == 0 { 1 } else { 1 + rng.below(2) };
            let window = match (after_put, puts) {
                (false, _) => KILL_WINDOW_MS,
                (true, 1) => AFTER_PUT_MS,
                (true, _) => AFTER_SECOND_PUT_MS,
            };
            let delay = Duration::from_millis(rng.next_u64() % window);
            if after_put {
                let deadline = Instant::now() + PASS_WAIT;
                loop {
                    let p = passes(&broker);
                    if p.last_puts >= puts && !p.last_swapped {
                        break;
                    }
                    ensure!(Instant::now() < deadline, "iteration {iteration}: no segment PUT within {PASS_WAIT:?}");
                    if p.last_swapped {
                        // Swapped before that PUT was seen: the next pass, on new data (its
                        // first PUT if this one stored fewer segments than we waited for).
                        if p.last_puts < puts {
                            puts = 1;
                        }
                        produce(&mut c, &mut rng, &mut seq, &mut model).await?;
                    } else {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            }
            let kill_at = Instant::now() + delay;
            while Instant::now() < kill_at {
                produce(&mut c, &mut rng, &mut seq, &mut model).await?;
            }
            broker.kill();
            // Segments stored by the killed pass and no swap logged after them are abandoned
            // (or swapped just before the kill, then referenced: GC must keep those).
            let p = passes(&broker);
            if p.last_puts > 0 {
                killed_after_put += 1;
            }
            if !p.last_swapped {
                abandoned_puts += p.last_puts;
            }
            let when = if after_put { format!("{delay:?} after PUT {puts}") } else { format!("{delay:?} in") };
            eprintln!(
                "[{name}] iteration {iteration}: killed {when} pass #{} ({} segments stored, swap logged: {}); {} \
                 records acknowledged",
                p.started,
                p.last_puts,
                p.last_swapped,
                model.records.len()
            );
            broker.restart();
            c = Client::connect(broker.bootstrap()).await?;
            let (read, hwm) = read_all(&mut c).await?;
            let n = model.check(&read, hwm).with_context(|| format!("iteration {iteration} after restart"))?;
            if (n as i64) < hwm {
                cleaned_reads += 1;
            }
            // A swap applied whole: below the clean offset it recorded, one record per key.
            // The first pass of this run plans from that offset (no pass of this run can have
            // committed before it starts).
            let deadline = Instant::now() + Duration::from_secs(10);
            let clean_offset = loop {
                if let Some(o) = first_clean_offset(&broker) {
                    break o;
                }
                ensure!(Instant::now() < deadline, "iteration {iteration}: no pass after the restart");
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            check_clean_below(&read, clean_offset).with_context(|| format!("iteration {iteration}"))?;
            eprintln!(
                "[{name}] iteration {iteration}: read {n} records below {hwm}, one per key below the clean offset \
                 {clean_offset}: the old or the new log"
            );
        }
        // Quiet now: the last passes finish, then GC deletes whatever nothing references once
        // it is gc_grace old. The files under wal/ and seg/ must come down to the referenced set.
        let (Store::File(objects_dir) | Store::Minio(objects_dir)) = &store;
        let deadline = Instant::now() + GC_GRACE + Duration::from_secs(20);
        let (files, staging, referenced) = loop {
            let (mut files, mut staging) = (Vec::new(), Vec::new());
            for dir in ["wal", "seg"] {
                object_files(&store, &objects_dir.join(dir), &mut files, &mut staging);
            }
            let referenced = metric(broker.http(), "skiff_objects").await? as usize;
            if files.len() == referenced || Instant::now() > deadline {
                break (files, staging, referenced);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        ensure!(
            files.len() == referenced,
            "{} object files under wal/ and seg/, the index references {referenced}: {files:#?}",
            files.len()
        );
        ensure!(abandoned_puts > 0, "no kill left an abandoned segment: the GC check proved nothing");
        ensure!(cleaned_reads > 0, "every read found the uncleaned log: no kill came after a committed pass");
        let orphans = metric(broker.http(), "skiff_objects_deleted_total").await?;
        // The referenced objects are all there and whole: the full read fetches every chunk.
        let (read, hwm) = read_all(&mut c).await?;
        let n = model.check(&read, hwm).context("after GC")?;
        eprintln!(
            "cleaner_crash[{name}]: {iterations} kills ({killed_after_put} after a segment PUT, {cleaned_reads} reads of a \
             cleaned log, {abandoned_puts} segments \
             stored by passes with no swap logged); after GC {} objects = {referenced} referenced ({} staging \
             files of killed PUTs left: {staging:?}; {orphans} objects deleted by the last run's GC); {n} records \
             read; {:?}",
            files.len(),
            staging.len(),
            started.elapsed()
        );
        anyhow::Ok(())
    }
    .await;
    if let Err(e) = result {
        panic!("[{name}] SKIFF_TEST_SEED={seed}: {e:#}\n{}", broker.stderr_tail(40));
    }
}
