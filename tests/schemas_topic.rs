//! A schema registry's `_schemas` topic on Skiff's log cleaner (issue #12, RFC 0003). Confluent
//! Schema Registry and Karapace cannot be installed here and Apicurio refuses compacted topics
//! (tests/registry.rs), so `dev.skiff.compat.SchemaStore` (tests/compat/java, built by
//! `tests/compat/setup.sh java`) does what Confluent's `KafkaStore` does with the topic: creates
//! it (1 partition, `cleanup.policy=compact`) or verifies it through DescribeConfigs, rebuilds
//! its in-memory store by reading the topic from the start up to a NOOP record it writes, and
//! writes keyed JSON records (SCHEMA, CONFIG, DELETE_SUBJECT; tombstones for hard deletes) with
//! acks=all. Every command is a new JVM, so every run is a registry restart.
//!
//! The scenario registers subjects, overwrites keys (configs, a soft-deleted version),
//! soft- and hard-deletes subjects, and dumps the store; then it waits until Skiff's cleaner ran
//! on `_schemas` and checks, with raw fetches, one record per key (the latest, at the offset it
//! was written at) with the tombstones kept and stamped with their delete horizon
//! (`delete.retention.ms` after the pass); a new JVM rebuilds the identical store from the
//! cleaned log; more writes are cleaned together with the clean section; once the horizons
//! passed the tombstones are gone (never before), and a last rebuild reads exactly one record
//! per live key. Also: a pre-created `cleanup.policy=delete` topic or one with 2 partitions is
//! refused as `KafkaStore` refuses it, a pre-created compacted one is used (the
//! TOPIC_ALREADY_EXISTS path). The scenario runs on `file://` and on MinIO.
#![allow(clippy::disallowed_methods)] // black-box tests wait and measure in real time

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use serde_json::{Value, json};

use support::client::{Client, decode_batches};
use support::minio::Minio;
use support::slot::Slot;
use support::{SkiffProcess, kafka_cli, tail};

const TOPIC: &str = "_schemas";
/// The cleaner looks for work every 200 ms (default 15 s).
const CONFIG: &str = "[lifecycle]\ncleaner_backoff = \"200ms\"\n";
/// Flush often: on s3 the default is 250 ms, which only slows the tests down.
const MINIO_CONFIG: &str = "[broker]\nflush_interval_ms = 20\n[lifecycle]\ncleaner_backoff = \"200ms\"\n";
/// `delete.retention.ms` the test sets: tombstones live this long after the pass that kept them.
const DELETE_RETENTION_MS: i64 = 10_000;
/// How long one program run may take (it has its own 120 s watchdog).
const RUN_TIMEOUT: Duration = Duration::from_secs(150);
/// How long the cleaner may take to clean what the test waits for.
const CLEAN_TIMEOUT: Duration = Duration::from_secs(60);
const SUBJECTS: usize = 6;
const VERSIONS: usize = 3;
/// Attribute bit 6 of a record batch: its base timestamp is the delete horizon (KIP-534).
const DELETE_HORIZON_FLAG: i16 = 0x40;

// ---- tests ---------------------------------------------------------------------------------

#[test]
fn schemas_topic_compacted_by_the_cleaner() {
    let _slot = Slot::acquire();
    let mut broker = SkiffProcess::start_with_config(CONFIG);
    Scenario::new().run(&mut broker, false);
}

#[test]
fn schemas_topic_on_minio_survives_a_broker_restart() {
    let _slot = Slot::acquire();
    let minio = Minio::shared();
    let prefix = minio.unique_prefix("schemas");
    let mut broker =
        SkiffProcess::start_with_config_and_env(&minio.skiff_config(&prefix, MINIO_CONFIG), minio.skiff_env());
    Scenario::new().run(&mut broker, true);
}

/// KafkaStore's checks of an existing topic, answered from what Skiff describes.
#[test]
fn schemas_topic_pre_created() {
    let _slot = Slot::acquire();
    let broker = SkiffProcess::start_with_config(CONFIG);
    let s = Scenario::new();
    let rt = runtime();
    rt.block_on(async {
        let mut c = Client::connect(broker.bootstrap()).await?;
        // As an operator would: no config, so the broker default `delete`.
        ensure!(c.create_topic("schemas-delete", 1, &[]).await? == 0, "create schemas-delete");
        let two = c.create_topic("schemas-two", 2, &[("cleanup.policy", "compact")]).await?;
        ensure!(two == 0, "create schemas-two");
        let pre = c.create_topic("schemas-pre", 1, &[("cleanup.policy", "compact")]).await?;
        ensure!(pre == 0, "create schemas-pre");
        anyhow::Ok(())
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", broker.stderr_tail(40)));

    // Found by ListTopics and verified: DescribeConfigs must report `delete`.
    let out = s.program(&broker, "schemas-delete", false, &["dump"]);
    out.refused(
        &broker,
        "The retention policy of the schema topic schemas-delete is incorrect. Expected cleanup.policy to be \
         'compact' but it is delete",
    );
    // CreateTopics first (two registries starting together): TOPIC_ALREADY_EXISTS, then verified.
    let out = s.program(&broker, "schemas-two", true, &["dump"]);
    out.refused(&broker, "The schema topic schemas-two should have only 1 partition but has 2");
    ensure_or_panic(out.stdout.contains("schemas topic exists"), "no TOPIC_ALREADY_EXISTS", &out, &broker);

    let out = s.program(&broker, "schemas-pre", true, &["register", "2", "2", &s.seed.to_string()]);
    out.ok(&broker);
    ensure_or_panic(out.stdout.contains("schemas topic exists"), "no TOPIC_ALREADY_EXISTS", &out, &broker);
    ensure_or_panic(
        out.stdout.contains("schemas verified schemas-pre cleanup.policy=compact"),
        "not verified",
        &out,
        &broker,
    );
    let dump = s.program(&broker, "schemas-pre", false, &["dump"]);
    let store = dump.store(&broker);
    ensure_or_panic(store.len() == 4, "4 versions registered", &dump, &broker);
    assert_all_served(&broker);
}

// ---- the scenario --------------------------------------------------------------------------

struct Scenario {
    seed: u64,
    dir: tempfile::TempDir,
    lib: PathBuf,
    runs: std::cell::Cell<u32>,
}

/// A key's canonical form (serde_json sorts object fields) → its value.
type Store = BTreeMap<String, Value>;

impl Scenario {
    fn new() -> Self {
        let seed = support::seed();
        eprintln!("seed {seed} (SKIFF_TEST_SEED={seed} replays it)");
        Self {
            seed,
            dir: tempfile::Builder::new().prefix("skiff-schemas-").tempdir().expect("temp dir"),
            lib: cache_lib(),
            runs: std::cell::Cell::new(0),
        }
    }

    fn run(&self, broker: &mut SkiffProcess, restart_broker: bool) {
        let started = Instant::now();
        let rt = runtime();
        let seed = self.seed.to_string();
        let sub = |i: usize| format!("subject-{i}");

        // 1. A registry's life: registrations, config overwrites, deletes.
        let out =
            self.program(broker, TOPIC, false, &["register", &SUBJECTS.to_string(), &VERSIONS.to_string(), &seed]);
        out.ok(broker);
        ensure_or_panic(out.stdout.contains("schemas created _schemas"), "the program created _schemas", &out, broker);
        let registered: BTreeMap<(String, i64), Value> = out
            .stdout
            .lines()
            .filter_map(|l| l.strip_prefix("registered "))
            .map(|l| {
                let v: Value = serde_json::from_str(l).expect("registered line is JSON");
                ((v["subject"].as_str().unwrap_or_default().to_string(), v["version"].as_i64().unwrap_or(0)), v)
            })
            .collect();
        assert_eq!(registered.len(), SUBJECTS * VERSIONS, "registrations: {registered:?}");
        for ((subject, version), v) in &registered {
            // Global ids in registration order, as the registry's incremental id generator.
            let s: i64 = subject.trim_start_matches("subject-").parse().expect("subject number");
            assert_eq!(v["id"].as_i64(), Some(s * VERSIONS as i64 + version), "id of {subject} v{version}");
        }
        let all: Vec<String> = (0..SUBJECTS).map(sub).collect();
        let mut args = vec!["config", "BACKWARD"];
        args.extend(all.iter().map(String::as_str));
        self.program(broker, TOPIC, false, &["config", "FULL"]).ok(broker);
        self.program(broker, TOPIC, false, &args).ok(broker);
        // Overwrites: configs again, and a soft-deleted version rewrites its SCHEMA key.
        self.program(broker, TOPIC, false, &["config", "FULL", "subject-0", "subject-1", "subject-2"]).ok(broker);
        self.program(broker, TOPIC, false, &["delete", "subject-4:2"]).ok(broker);
        self.program(broker, TOPIC, false, &["delete", "subject-1", "subject-2", "subject-3"]).ok(broker);
        // Hard deletes: tombstones for every version and the subject's config.
        self.program(broker, TOPIC, false, &["delete", "--permanent", "subject-1", "subject-2"]).ok(broker);

        let mut expected = Store::new();
        expected.insert(canon(&json!({"keytype": "CONFIG", "magic": 0})), json!({"compatibilityLevel": "FULL"}));
        for s in [0, 3, 4, 5] {
            let level = if s == 0 { "FULL" } else { "BACKWARD" };
            expected.insert(
                canon(&json!({"keytype": "CONFIG", "subject": sub(s), "magic": 0})),
                json!({"compatibilityLevel": level}),
            );
            for v in 1..=VERSIONS as i64 {
                let mut value = registered[&(sub(s), v)].clone();
                value["deleted"] = json!(s == 3 || (s == 4 && v == 2));
                expected
                    .insert(canon(&json!({"keytype": "SCHEMA", "subject": sub(s), "version": v, "magic": 1})), value);
            }
        }
        for s in [1, 2, 3] {
            expected.insert(
                canon(&json!({"keytype": "DELETE_SUBJECT", "subject": sub(s), "magic": 0})),
                json!({"subject": sub(s), "version": VERSIONS}),
            );
        }
        let dump = self.program(broker, TOPIC, false, &["dump"]);
        let before = dump.store(broker);
        dump.check(before == expected, &format!("store {before:#?}\nexpected {expected:#?}"), broker);

        // The log as written: nothing cleaned yet (segment.ms is 7 days), duplicates present.
        let (log, hwm) = rt.block_on(read_log(broker.bootstrap())).unwrap_or_else(|e| self.fail(broker, e));
        assert_eq!(log.len() as i64, hwm, "records below {hwm} before cleaning");
        let latest = latest_per_key(&log);
        assert!(latest.len() < log.len(), "overwrites: {} keys in {} records", latest.len(), log.len());
        eprintln!("{} records, {} keys written after {:.1?}", log.len(), latest.len(), started.elapsed());

        // 2. Make the cleaner run in the test's time. Confluent creates `_schemas` with only
        // `cleanup.policy=compact`, so its head rolls after `segment.ms` (7 days) and a pass
        // needs half the log dirty; an operator's AlterConfigs (Kafka's own kafka-configs, an
        // IncrementalAlterConfigs) shortens both, and lets tombstones go after 10 s.
        let retention =
            format!("segment.ms=1000,min.cleanable.dirty.ratio=0.01,delete.retention.ms={DELETE_RETENTION_MS}");
        let altered_ms = now_ms();
        kafka_cli::run(
            kafka_cli::CONFIG_COMMAND,
            &[
                "--bootstrap-server",
                broker.bootstrap(),
                "--alter",
                "--entity-type",
                "topics",
                "--entity-name",
                TOPIC,
                "--add-config",
                &retention,
            ],
        )
        .and_then(|o| o.ok("kafka-configs --alter"))
        .unwrap_or_else(|e| self.fail(broker, e));

        // One record per key, each the latest written, tombstones kept with their horizon, below
        // the newest record: that one (the last dump's NOOP) stays in the head uncleaned, as
        // Kafka's newest batch stays in its active segment until an append rolls it, so the
        // cleaned range keeps its own latest NOOP too (as Kafka's would).
        let written_below = below_newest(&log);
        let latest = latest_per_key(&written_below);
        let cleaned = self.wait_log(broker, "one record per key", |log| {
            let below = below_newest(log);
            latest_per_key(&below).len() == below.len()
        });
        let observed_ms = now_ms();
        let newest = cleaned.iter().map(|r| r.offset).max().unwrap_or(-1);
        assert_eq!(newest, hwm - 1, "the newest record is never cleaned");
        let tombstone_keys: BTreeSet<&String> =
            latest.iter().filter(|(_, r)| r.value.is_none()).map(|(k, _)| k).collect();
        for r in cleaned.iter().filter(|r| r.offset != newest) {
            let want = &latest[&r.key];
            assert_eq!((r.offset, &r.value), (want.offset, &want.value), "{} after cleaning", r.key);
            if r.value.is_none() {
                let horizon =
                    r.horizon_ms.unwrap_or_else(|| panic!("tombstone {} at {} has no delete horizon", r.key, r.offset));
                assert!(
                    (altered_ms + DELETE_RETENTION_MS..=observed_ms + DELETE_RETENTION_MS + 1000).contains(&horizon),
                    "tombstone {} horizon {horizon}: not {DELETE_RETENTION_MS} ms after a pass in [{altered_ms}, {observed_ms}]",
                    r.key
                );
            }
        }
        assert_eq!(
            cleaned.len(),
            latest.len() + 1,
            "every key kept, tombstones included ({} tombstones), and the newest record",
            tombstone_keys.len()
        );
        let live: BTreeSet<String> = cleaned.iter().filter(|r| r.value.is_some()).map(|r| canon_str(&r.key)).collect();
        assert_eq!(live, expected.keys().cloned().collect(), "live keys in the log are the store's");
        let metrics = metrics(broker.http()).unwrap_or_else(|e| self.fail(broker, e));
        assert!(counter(&metrics, "skiff_cleaner_passes_total{result=\"committed\"}") >= 1.0, "{metrics}");
        let removed = counter(&metrics, "skiff_cleaner_records_removed_total{topic=\"_schemas\"}");
        assert!(removed >= (written_below.len() - latest.len()) as f64, "records removed {removed}\n{metrics}");
        eprintln!("cleaned: {} of {} records kept after {:.1?}", cleaned.len(), log.len(), started.elapsed());

        // A new registry (JVM) rebuilds the same store from the cleaned log, reading fewer records.
        let dump = self.program(broker, TOPIC, false, &["dump"]);
        let after = dump.store(broker);
        dump.check(after == before, &format!("store after cleaning {after:#?}"), broker);
        let read = dump.counter("read");
        dump.check(read < hwm, &format!("read {read} records of {hwm} written"), broker);

        // 3. More writes over the clean section: another hard delete, a config overwritten again.
        self.program(broker, TOPIC, false, &["delete", "--permanent", "subject-3"]).ok(broker);
        self.program(broker, TOPIC, false, &["config", "NONE", "subject-0"]).ok(broker);
        expected.retain(|k, _| !k.contains("\"subject\":\"subject-3\"") || k.contains("DELETE_SUBJECT"));
        expected.insert(
            canon(&json!({"keytype": "CONFIG", "subject": "subject-0", "magic": 0})),
            json!({"compatibilityLevel": "NONE"}),
        );
        let dump = self.program(broker, TOPIC, false, &["dump"]);
        let store = dump.store(broker);
        dump.check(store == expected, &format!("store {store:#?}\nexpected {expected:#?}"), broker);

        // 4. Every tombstone goes once its horizon passed, never before: only live keys remain.
        let mut horizons: BTreeMap<(String, i64), i64> = BTreeMap::new();
        let done = self.wait_log(broker, "no tombstones", |log| {
            let now = now_ms();
            for r in log {
                if let Some(h) = r.horizon_ms.filter(|_| r.value.is_none()) {
                    horizons.insert((r.key.clone(), r.offset), h);
                }
            }
            for ((key, offset), h) in &horizons {
                let present = log.iter().any(|r| r.offset == *offset);
                let superseded = log.iter().any(|r| &r.key == key && r.offset > *offset);
                // The pass that removes it starts after the horizon; allow for the clock read.
                assert!(
                    present || superseded || now + 1000 >= *h,
                    "tombstone {key} at {offset} gone before its horizon {h} (now {now})"
                );
            }
            // The newest record (a NOOP tombstone) is in the head: never cleaned.
            let newest = log.iter().map(|r| r.offset).max().unwrap_or(-1);
            log.iter().all(|r| r.value.is_some() || r.offset == newest) && latest_per_key(log).len() == log.len()
        });
        let newest = done.iter().map(|r| r.offset).max().unwrap_or(-1);
        let live: BTreeSet<String> =
            done.iter().filter(|r| r.value.is_some() || r.offset != newest).map(|r| canon_str(&r.key)).collect();
        assert_eq!(live, expected.keys().cloned().collect(), "the log is the store's keys, once each");
        eprintln!("tombstones gone after {:.1?}", started.elapsed());

        if restart_broker {
            broker.restart();
            eprintln!("broker restarted after {:.1?}", started.elapsed());
        }
        // 5. A last rebuild reads one record per live key, the previous NOOP (the head's newest
        // record, uncleaned) and its own NOOP.
        let dump = self.program(broker, TOPIC, false, &["dump"]);
        let store = dump.store(broker);
        dump.check(store == expected, &format!("final store {store:#?}\nexpected {expected:#?}"), broker);
        let (read, tombstones) = (dump.counter("read"), dump.counter("tombstones"));
        dump.check(
            read == expected.len() as i64 + 2 && tombstones == 2,
            &format!("read {read} records ({tombstones} tombstones) for {} keys", expected.len()),
            broker,
        );
        assert_all_served(broker);
        eprintln!("done in {:.1?}", started.elapsed());
    }

    /// Runs the program once (a registry start plus one command) and waits for it.
    fn program(&self, broker: &SkiffProcess, topic: &str, create_first: bool, args: &[&str]) -> RunOutput {
        let n = self.runs.get() + 1;
        self.runs.set(n);
        let name = format!("run-{n}-{}", args[0]);
        let stdout = self.dir.path().join(format!("{name}.stdout"));
        let stderr = self.dir.path().join(format!("{name}.stderr"));
        let java = std::env::var("JAVA_HOME").map(|h| format!("{h}/bin/java")).unwrap_or_else(|_| "java".into());
        let started = Instant::now();
        let child = Command::new(java)
            // Small heap, serial GC, C1 only: these JVMs live for seconds on a shared 2-core box.
            .args(["-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"])
            .arg("-Dorg.slf4j.simpleLogger.defaultLogLevel=warn")
            .arg("-cp")
            .arg(format!("{}/*", self.lib.display()))
            .arg("dev.skiff.compat.SchemaStore")
            .args(args)
            .env("BOOTSTRAP", broker.bootstrap())
            .env("TOPIC", topic)
            .env("CREATE_FIRST", if create_first { "1" } else { "" })
            .stdin(Stdio::null())
            .stdout(File::create(&stdout).expect("stdout file"))
            .stderr(File::create(&stderr).expect("stderr file"))
            .spawn()
            .unwrap_or_else(|e| panic!("starting java: {e}"));
        let mut child = Some(child);
        let status = support::wait_child(&mut child, RUN_TIMEOUT);
        if let Some(mut c) = child {
            let _ = c.kill();
            let _ = c.wait();
        }
        let out = RunOutput {
            name: format!("{name} {args:?}"),
            code: status.and_then(|s| s.code()),
            stdout: std::fs::read_to_string(&stdout).unwrap_or_default(),
            stderr_path: stderr,
        };
        eprintln!("{}: exit {:?} in {:.1?}", out.name, out.code, started.elapsed());
        out
    }

    /// Reads the whole log every 200 ms until `done`; fails after [`CLEAN_TIMEOUT`].
    fn wait_log(
        &self,
        broker: &SkiffProcess,
        what: &str,
        mut done: impl FnMut(&[LogRecord]) -> bool,
    ) -> Vec<LogRecord> {
        let rt = runtime();
        let deadline = Instant::now() + CLEAN_TIMEOUT;
        loop {
            let (log, _) = rt.block_on(read_log(broker.bootstrap())).unwrap_or_else(|e| self.fail(broker, e));
            if done(&log) {
                return log;
            }
            if Instant::now() > deadline {
                let m = metrics(broker.http()).unwrap_or_default();
                let cleaner: Vec<&str> = m.lines().filter(|l| l.starts_with("skiff_cleaner")).collect();
                panic!(
                    "not {what} within {CLEAN_TIMEOUT:?}: {log:#?}\n{}\n---- skiff ----\n{}",
                    cleaner.join("\n"),
                    broker.stderr_tail(40)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn fail(&self, broker: &SkiffProcess, e: anyhow::Error) -> ! {
        panic!("{e:#}\n---- skiff ----\n{}", broker.stderr_tail(40))
    }
}

struct RunOutput {
    name: String,
    code: Option<i32>,
    stdout: String,
    stderr_path: PathBuf,
}

impl RunOutput {
    fn logs(&self, broker: &SkiffProcess) -> String {
        format!(
            "---- {} stdout ----\n{}\n---- stderr ----\n{}\n---- skiff ----\n{}",
            self.name,
            last_lines(&self.stdout, 40),
            tail(&self.stderr_path, 40),
            broker.stderr_tail(40)
        )
    }

    fn check(&self, ok: bool, what: &str, broker: &SkiffProcess) {
        if !ok {
            panic!("{}: {what}\n{}", self.name, self.logs(broker));
        }
    }

    fn ok(&self, broker: &SkiffProcess) {
        self.check(self.code == Some(0) && self.stdout.contains("schemas ok "), "did not succeed", broker);
    }

    /// KafkaStore's StoreInitializationException: exit 3 with exactly this message.
    fn refused(&self, broker: &SkiffProcess, message: &str) {
        let line = format!("schemas refused: {message}");
        self.check(
            self.code == Some(3) && self.stdout.lines().any(|l| l == line),
            &format!("not refused with {line:?}"),
            broker,
        );
    }

    /// `store <key> <value>` lines of a dump.
    fn store(&self, broker: &SkiffProcess) -> Store {
        self.ok(broker);
        let mut store = Store::new();
        for line in self.stdout.lines().filter_map(|l| l.strip_prefix("store ")) {
            // The key has no spaces (compact JSON of names and numbers).
            let (k, v) = line.split_once(' ').unwrap_or_else(|| panic!("dump line {line:?}"));
            let v: Value = serde_json::from_str(v).unwrap_or_else(|e| panic!("dump value {v:?}: {e}"));
            store.insert(canon_str(k), v);
        }
        store
    }

    /// `read=N` and friends from the final `schemas ok` line.
    fn counter(&self, name: &str) -> i64 {
        let prefix = format!("{name}=");
        self.stdout
            .lines()
            .filter(|l| l.starts_with("schemas ok "))
            .flat_map(|l| l.split(' '))
            .find_map(|w| w.strip_prefix(prefix.as_str())?.parse().ok())
            .unwrap_or_else(|| panic!("{}: no {name}= in {}", self.name, self.stdout))
    }
}

fn ensure_or_panic(ok: bool, what: &str, out: &RunOutput, broker: &SkiffProcess) {
    out.check(ok, what, broker);
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn canon(v: &Value) -> String {
    serde_json::to_string(v).expect("JSON")
}

fn canon_str(key: &str) -> String {
    canon(&serde_json::from_str::<Value>(key).unwrap_or_else(|e| panic!("key {key:?} is not JSON: {e}")))
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime")
}

// ---- the raw log ---------------------------------------------------------------------------

/// One record of `_schemas` as fetched, with its batch's delete horizon if it has one.
#[derive(Debug, Clone)]
struct LogRecord {
    offset: i64,
    key: String,
    value: Option<String>,
    horizon_ms: Option<i64>,
}

/// The log without its newest record (which stays in the head, never cleaned).
fn below_newest(log: &[LogRecord]) -> Vec<LogRecord> {
    let newest = log.iter().map(|r| r.offset).max().unwrap_or(-1);
    log.iter().filter(|r| r.offset != newest).cloned().collect()
}

fn latest_per_key(log: &[LogRecord]) -> BTreeMap<String, LogRecord> {
    log.iter().map(|r| (r.key.clone(), r.clone())).collect()
}

/// Every record of partition 0 below the high watermark, with raw fetches.
async fn read_log(bootstrap: &str) -> anyhow::Result<(Vec<LogRecord>, i64)> {
    let mut c = Client::connect(bootstrap).await?;
    let mut out = Vec::new();
    let mut offset = 0;
    let mut end = None;
    for _ in 0..10_000 {
        let p = c.fetch(TOPIC, 0, offset, 0, 0).await?;
        ensure!(p.error_code == 0, "fetch {TOPIC} at {offset}: error {}", p.error_code);
        let hwm = *end.get_or_insert(p.high_watermark);
        if offset >= hwm {
            return Ok((out, hwm));
        }
        let data = p.records.unwrap_or_default();
        let horizons = batch_horizons(&data);
        let batches = decode_batches(data)?;
        // Kafka never cleans the batch holding the log's last offset (its active segment), so a
        // reader below the high watermark always gets a batch; a compacted log ending in a gap
        // leaves read-to-end consumers (KafkaStore, Connect's KafkaBasedLog) waiting forever.
        ensure!(!batches.is_empty(), "fetch at {offset}: no batch below the high watermark {hwm} (a trailing gap)");
        for (b, horizon) in batches.iter().zip(horizons) {
            for r in b.records.iter().filter(|r| r.offset >= offset && r.offset < hwm) {
                let key = r.record.key.as_deref().context("a _schemas record without a key")?;
                out.push(LogRecord {
                    offset: r.offset,
                    key: String::from_utf8(key.to_vec())?,
                    value: r.record.value.as_deref().map(|v| String::from_utf8_lossy(v).into_owned()),
                    horizon_ms: horizon,
                });
            }
        }
        offset = batches.last().map_or(offset, |b| b.last_offset + 1);
    }
    bail!("more than 10000 fetches reading {TOPIC}")
}

/// For each whole batch in a fetched blob: its base timestamp if attribute bit 6 says it is the
/// delete horizon. Same walk as `decode_batches`, so the two line up.
fn batch_horizons(data: &Bytes) -> Vec<Option<i64>> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while data.len() >= at + 61 {
        let len = i32::from_be_bytes(data[at + 8..at + 12].try_into().expect("4 bytes"));
        let size = 12 + len.max(0) as usize;
        if data.len() < at + size {
            break;
        }
        let attributes = i16::from_be_bytes(data[at + 21..at + 23].try_into().expect("2 bytes"));
        let base_timestamp = i64::from_be_bytes(data[at + 27..at + 35].try_into().expect("8 bytes"));
        out.push((attributes & DELETE_HORIZON_FLAG != 0).then_some(base_timestamp));
        at += size;
    }
    out
}

// ---- broker and cache helpers ----------------------------------------------------------------

/// `GET /metrics` from the broker's HTTP listener (`http://host:port`).
fn metrics(http: &str) -> anyhow::Result<String> {
    let addr = http.strip_prefix("http://").unwrap_or(http);
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    Ok(text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
}

fn counter(metrics: &str, series: &str) -> f64 {
    metrics.lines().find_map(|l| l.strip_prefix(series)?.trim().parse().ok()).unwrap_or(0.0)
}

/// Skiff logged no request of the program as not served (src/handler/not_served.rs).
fn assert_all_served(broker: &SkiffProcess) {
    let log = std::fs::read_to_string(broker.stderr_path()).unwrap_or_default();
    let refused: Vec<&str> = log.lines().filter(|l| l.contains("does not serve")).collect();
    assert!(refused.is_empty(), "Skiff refused requests as not served:\n{}", refused.join("\n"));
}

/// `${SKIFF_CACHE:-~/.cache/skiff}/compat/java/lib` with a `compat-java.jar` holding the program
/// (`tests/compat/setup.sh java`, outside `cargo test`).
fn cache_lib() -> PathBuf {
    let cache = std::env::var("SKIFF_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/skiff"));
    let lib = cache.join("compat/java/lib");
    assert!(
        has_class(&lib.join("compat-java.jar"), "dev/skiff/compat/SchemaStore.class"),
        "{} has no SchemaStore: run `tests/compat/setup.sh java` before `cargo test`",
        lib.display()
    );
    lib
}

/// Whether a jar (zip) names `entry` (its central directory holds the names uncompressed).
fn has_class(jar: &Path, entry: &str) -> bool {
    std::fs::read(jar).is_ok_and(|bytes| bytes.windows(entry.len()).any(|w| w == entry.as_bytes()))
}
