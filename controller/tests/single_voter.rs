//! Black-box tests of a single-voter controller over a real data directory: restart recovery,
//! snapshots with log purging, torn-write repair, and a printed throughput sanity check.
#![allow(clippy::disallowed_methods)] // black-box tests wait and measure in real time; ids are test data

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use skiff_controller::image::MetadataImage;
use skiff_controller::metadata::{
    BrokerRegistration, Command, CommandResult, CreateTopic, ObjectCommit, PartitionAppend,
};
use skiff_controller::{Controller, ControllerConfig, ControllerError};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const TOPIC_ID: Uuid = Uuid::from_u128(42);

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

fn config(dir: &Path) -> ControllerConfig {
    ControllerConfig::new(1, dir.to_path_buf(), "test-cluster".into())
}

async fn start(config: ControllerConfig) -> Controller {
    Controller::start_single(config, CancellationToken::new()).await.expect("controller starts")
}

/// Registers a broker and creates a 2-partition topic.
async fn setup_topic(c: &Controller) {
    let r = c
        .submit(Command::RegisterBroker(BrokerRegistration {
            broker_id: 1,
            incarnation: Uuid::from_u128(1),
            host: "localhost".into(),
            port: 9092,
            rack: None,
            fenced: false,
            listeners: Vec::new(),
        }))
        .await
        .expect("register");
    assert_eq!(r, CommandResult::Ok);
    let r = c
        .submit(Command::CreateTopic(CreateTopic {
            name: "t".into(),
            topic_id: TOPIC_ID,
            partitions: 2,
            configs: BTreeMap::new(),
            assignments: Vec::new(),
        }))
        .await
        .expect("create topic");
    assert_eq!(r, CommandResult::TopicCreated { topic_id: TOPIC_ID });
}

/// Commits the next 10 offsets of partition 0 in a new object.
async fn commit_next(c: &Controller) -> CommandResult {
    let base = c.metadata().read(|s| s.partition(&TOPIC_ID, 0).map(|p| p.high_watermark()).unwrap_or(0));
    c.submit(Command::CommitObject(ObjectCommit {
        key: format!("wal/1/{base}"),
        broker_id: 1,
        size_bytes: 100,
        partitions: vec![PartitionAppend {
            topic_id: TOPIC_ID,
            partition: 0,
            leader_epoch: 0,
            base_offset: base,
            last_offset: base + 9,
            position: 0,
            len: 100,
            max_timestamp: base,
            producer_batches: vec![],
            markers: vec![],
        }],
    }))
    .await
    .expect("commit")
}

fn snapshot_of(c: &Controller) -> MetadataImage {
    c.metadata().read(|s| s.clone())
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("log"))
        .expect("log dir")
        .map(|e| e.expect("dirent").path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    files.sort();
    files
}

#[tokio::test]
async fn restart_recovers_committed_state() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let c = start(config(dir.path())).await;
    assert_eq!(c.metadata().read(|s| s.cluster_id().to_string()), "test-cluster");
    setup_topic(&c).await;
    for _ in 0..5 {
        assert_eq!(commit_next(&c).await, CommandResult::Ok);
    }
    let mut applied = c.metadata().subscribe();
    let before_index = *applied.borrow_and_update();
    assert_eq!(c.submit(Command::AllocateProducerId).await.expect("pid"), CommandResult::ProducerId(0));
    assert!(applied.has_changed().expect("watch open"), "apply wakes subscribers");
    assert!(*applied.borrow() > before_index);

    let before = snapshot_of(&c);
    assert_eq!(before.partition(&TOPIC_ID, 0).map(|p| p.high_watermark()), Some(50));
    c.shutdown().await.expect("shutdown");
    c.shutdown().await.expect("shutdown is idempotent");
    assert!(matches!(c.submit(Command::AllocateProducerId).await, Err(ControllerError::Closed)));

    let c = start(config(dir.path())).await;
    assert_eq!(snapshot_of(&c), before, "state after restart");
    assert_eq!(c.submit(Command::AllocateProducerId).await.expect("pid"), CommandResult::ProducerId(1));
    c.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn cancelling_the_token_stops_the_controller() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let token = CancellationToken::new();
    let c = Controller::start_single(config(dir.path()), token.clone()).await.expect("start");
    token.cancel();
    c.shutdown().await.expect("shutdown after cancel");
    assert!(matches!(c.submit(Command::AllocateProducerId).await, Err(ControllerError::Closed)));
}

#[tokio::test]
async fn snapshots_purge_the_log_and_restore() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path());
    cfg.snapshot_every_entries = 50;
    cfg.log_kept_after_snapshot = 10;
    let c = start(cfg.clone()).await;
    setup_topic(&c).await;
    for i in 0..400 {
        if i % 2 == 0 {
            assert_eq!(commit_next(&c).await, CommandResult::Ok);
        } else {
            c.submit(Command::AllocateProducerId).await.expect("pid");
        }
    }
    // Snapshots and purges run in the background after applies.
    for _ in 0..100 {
        if dir.path().join("log/purged.json").exists() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let before = snapshot_of(&c);
    c.shutdown().await.expect("shutdown");

    assert!(dir.path().join("snapshots/current.json").exists(), "a snapshot was written");
    assert!(dir.path().join("log/purged.json").exists(), "the log was purged");
    let segments = segment_files(dir.path());
    assert!(segments.len() <= 2, "old segments deleted: {segments:?}");

    let c = start(cfg).await;
    assert_eq!(snapshot_of(&c), before, "state after restart from snapshot + log");
    assert_eq!(commit_next(&c).await, CommandResult::Ok);
    c.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn torn_writes_are_repaired_on_restart() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let c = start(config(dir.path())).await;
    setup_topic(&c).await;
    for _ in 0..3 {
        commit_next(&c).await;
    }
    let before_last = snapshot_of(&c);
    commit_next(&c).await;
    let full = snapshot_of(&c);
    c.shutdown().await.expect("shutdown");
    let segment = segment_files(dir.path()).pop().expect("a segment");

    // Garbage after the last complete record (a torn header): nothing acknowledged is lost.
    let mut bytes = std::fs::read(&segment).expect("read");
    let good_len = bytes.len();
    bytes.extend_from_slice(&[0x5a; 23]);
    std::fs::write(&segment, &bytes).expect("write");
    let c = start(config(dir.path())).await;
    assert_eq!(snapshot_of(&c), full, "garbage tail dropped, every record kept");
    c.shutdown().await.expect("shutdown");
    assert_eq!(std::fs::metadata(&segment).expect("stat").len(), good_len as u64, "tail truncated");

    // The last record cut short: recovery stops at the record before it.
    let bytes = std::fs::read(&segment).expect("read");
    std::fs::write(&segment, &bytes[..bytes.len() - 7]).expect("write");
    let c = start(config(dir.path())).await;
    assert_eq!(snapshot_of(&c), before_last, "recovered up to the last good record");
    assert_eq!(commit_next(&c).await, CommandResult::Ok, "the log accepts appends after repair");
    c.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn corrupt_vote_file_is_reported() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let c = start(config(dir.path())).await;
    c.shutdown().await.expect("shutdown");
    std::fs::write(dir.path().join("log/vote.json"), b"{not json").expect("write");
    match Controller::start_single(config(dir.path()), CancellationToken::new()).await {
        Err(ControllerError::Corrupt { path, .. }) => assert!(path.ends_with("vote.json"), "{path}"),
        Err(e) => panic!("expected Corrupt, got {e}"),
        Ok(_) => panic!("expected Corrupt, got a running controller"),
    }
}

/// Not an assertion: prints what one fsync-per-commit costs on this machine.
#[tokio::test]
async fn throughput_sanity() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let c = start(config(dir.path())).await;
    setup_topic(&c).await;

    let n = 300;
    let t = Instant::now();
    for _ in 0..n {
        commit_next(&c).await;
    }
    let elapsed = t.elapsed();
    println!(
        "sequential: {n} submits in {elapsed:?}: {:.0}/s, {:.2} ms each",
        n as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1000.0 / n as f64
    );

    // Concurrent submitters share fsyncs through group commit.
    let tasks = 16;
    let per_task = 50;
    let t = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let c = c.clone();
        handles.push(tokio::spawn(async move {
            for _ in 0..per_task {
                c.submit(Command::AllocateProducerId).await.expect("submit");
            }
        }));
    }
    for h in handles {
        h.await.expect("task");
    }
    let elapsed = t.elapsed();
    let total = tasks * per_task;
    println!(
        "concurrent ({tasks} submitters): {total} submits in {elapsed:?}: {:.0}/s",
        total as f64 / elapsed.as_secs_f64()
    );
    c.shutdown().await.expect("shutdown");
}

/// `Controller::failed` (watched by the process supervisor) stays pending while the controller
/// works and after a requested stop: only an unexpected end counts as a failure.
#[tokio::test]
async fn a_controller_stopped_as_asked_has_not_failed() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    // With fencing on, its loop ends at the stop too: several restarts, since the order in
    // which the stop and the ended task are noticed varies.
    let mut cfg = config(dir.path());
    cfg.session_timeout = Some(std::time::Duration::from_secs(1));
    let quiet = std::time::Duration::from_millis(200);
    for round in 0..5 {
        let c = start(cfg.clone()).await;
        if round == 0 {
            setup_topic(&c).await;
        }
        assert!(tokio::time::timeout(quiet, c.failed()).await.is_err(), "a working controller has not failed");
        c.shutdown().await.expect("clean shutdown");
        assert!(
            tokio::time::timeout(quiet, c.failed()).await.is_err(),
            "round {round}: a requested stop is no failure"
        );
    }
}
