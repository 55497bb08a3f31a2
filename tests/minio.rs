//! Skiff on real S3-compatible storage (MinIO): `skiff dev --storage s3://bucket/prefix` with
//! the credentials in `AWS_*`. MinIO comes from `support::minio` (an endpoint from the
//! environment, else a local `minio` binary); without one these tests FAIL, they never skip.
//!
//! - start-up errors: wrong credentials and a missing bucket stop the process at once with a
//!   clear message;
//! - a real client family (franz-go, the compat scenario) end to end, and produce → restart →
//!   verify;
//! - SIGKILL of the broker under load, restart, every acknowledged record present;
//! - MinIO itself killed and restarted, and frozen (SIGSTOP/SIGCONT), under load.
#![allow(clippy::disallowed_methods)] // black-box tests wait and measure in real time; ids are test data

mod support;

use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use support::SkiffProcess;
use support::client::Client;
use support::compat::run_client;
use support::load::{self, error_totals, verify};
use support::minio::Minio;

/// Flush often: on s3 the default is 250 ms, which only slows the tests down.
const BROKER: &str = "[broker]\nflush_interval_ms = 20\n";

/// At most one client program or load test at a time in this binary (2 cores).
static HEAVY: Mutex<()> = Mutex::new(());

fn heavy() -> std::sync::MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

fn skiff_on(minio: &Minio, name: &str) -> SkiffProcess {
    let prefix = minio.unique_prefix(name);
    SkiffProcess::start_with_config_and_env(&minio.skiff_config(&prefix, BROKER), minio.skiff_env())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime")
}

/// Runs `skiff dev` expecting it to exit with an error; returns (stderr, how long it took).
fn skiff_must_fail(config: &str, env: Vec<(String, String)>) -> (String, Duration) {
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = dir.path().join("skiff.toml");
    std::fs::write(&cfg, config).expect("write config");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_skiff"));
    cmd.arg("dev").arg("--config").arg(&cfg).arg("--data-dir").arg(dir.path().join("data")).args([
        "--kafka-listen",
        "127.0.0.1:0",
        "--http-listen",
        "127.0.0.1:0",
    ]);
    for (k, _) in std::env::vars_os() {
        if k.to_str().is_some_and(|k| k.starts_with("SKIFF_") || k.starts_with("AWS_")) {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env).env("RUST_BACKTRACE", "0").stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = cmd.spawn().expect("spawn skiff");
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("skiff did not exit within 30 s on a broken storage configuration (a hang)");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().expect("output");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!status.success(), "skiff started on a broken storage configuration\n{stderr}");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("Kafka bootstrap"),
        "skiff printed its bootstrap line\n{stderr}"
    );
    (stderr, started.elapsed())
}

#[test]
fn wrong_credentials_and_missing_bucket_fail_fast() {
    let minio = Minio::shared();
    let prefix = minio.unique_prefix("startup");
    let mut env = minio.skiff_env();
    env[1].1 = "definitely-not-the-secret".into();
    let (stderr, took) = skiff_must_fail(&minio.skiff_config(&prefix, ""), env);
    eprintln!("wrong secret: exited after {took:?}");
    assert!(took < Duration::from_secs(15), "took {took:?}");
    assert!(stderr.contains("credentials were rejected"), "unclear error for a wrong secret:\n{stderr}");

    let mut env = minio.skiff_env();
    env[0].1 = "no-such-access-key".into();
    let (stderr, _) = skiff_must_fail(&minio.skiff_config(&prefix, ""), env);
    assert!(stderr.contains("credentials were rejected"), "unclear error for an unknown key id:\n{stderr}");

    let config =
        minio.skiff_config(&prefix, "").replace(&format!("s3://{}/", minio.bucket), "s3://skiff-no-such-bucket/");
    let (stderr, took) = skiff_must_fail(&config, minio.skiff_env());
    eprintln!("missing bucket: exited after {took:?}");
    assert!(took < Duration::from_secs(15), "took {took:?}");
    assert!(stderr.contains("bucket does not exist"), "unclear error for a missing bucket:\n{stderr}");
}

#[test]
fn franz_full_scenario_on_minio() {
    let minio = Minio::shared();
    let _g = heavy();
    let broker = skiff_on(minio, "franz-full");
    run_client("go-franz", &broker, "minio-franz", "full");
}

#[test]
fn franz_produce_restart_verify_on_minio() {
    let minio = Minio::shared();
    let _g = heavy();
    let mut broker = skiff_on(minio, "franz-restart");
    run_client("go-franz", &broker, "minio-franz-restart", "produce");
    let status = broker.terminate();
    assert!(status.success(), "skiff exited with {status}\n{}", broker.stderr_tail(40));
    broker.restart();
    run_client("go-franz", &broker, "minio-franz-restart", "verify");
}

/// SIGKILL the broker while idempotent producers write; after a restart every acknowledged
/// record is there exactly once, offsets gapless.
#[test]
fn sigkill_under_load_keeps_every_acknowledged_record() {
    let minio = Minio::shared();
    let _g = heavy();
    let mut broker = skiff_on(minio, "sigkill");
    let rt = runtime();
    let topic = "minio-sigkill";
    let bootstrap = broker.bootstrap().to_string();
    rt.block_on(async { Client::connect(&bootstrap).await?.create_topic_ok(topic, 3).await }).expect("create topic");
    // Producers run on their own threads' runtime; the kill lands mid-stream. Their
    // acknowledgements up to the kill are what must survive.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut specs = load::specs(&bootstrap, topic, 3, 6, Duration::from_secs(60));
    specs.iter_mut().for_each(|s| s.abandon_on_stop = true);
    let handles: Vec<_> = specs.into_iter().map(|s| rt.spawn(load::run_producer(s, stop.clone()))).collect();
    std::thread::sleep(Duration::from_secs(4));
    broker.kill();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut acked = Vec::new();
    for h in handles {
        let (report, error) = rt.block_on(h).expect("producer task");
        if let Some(e) = error {
            panic!("producer failed before the kill: {e:#}");
        }
        acked.extend(report.acked);
    }
    broker.restart();
    let bootstrap = broker.bootstrap().to_string();
    let v = rt
        .block_on(async {
            let mut c = Client::connect(&bootstrap).await?;
            verify(&mut c, topic, 3, &acked).await
        })
        .unwrap_or_else(|e| panic!("{e:#}\n{}", broker.stderr_tail(40)));
    eprintln!("sigkill on MinIO: {v:?}");
    assert!(v.records > 0, "nothing was written before the kill");
}

/// MinIO killed (SIGKILL) and restarted on the same port and data, then frozen (SIGSTOP) for a
/// few seconds and resumed, while idempotent producers write: nothing acknowledged is lost or
/// duplicated, and every producer is acknowledged again after the last disruption.
#[test]
fn minio_killed_restarted_and_frozen_under_load() {
    let _g = heavy();
    let mut minio = Minio::start_local();
    let prefix = minio.unique_prefix("minio-faults");
    let broker = SkiffProcess::start_with_config_and_env(&minio.skiff_config(&prefix, BROKER), minio.skiff_env());
    let rt = runtime();
    let topic = "minio-faults";
    let bootstrap = broker.bootstrap().to_string();
    rt.block_on(async { Client::connect(&bootstrap).await?.create_topic_ok(topic, 2).await }).expect("create topic");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let specs = load::specs(&bootstrap, topic, 2, 4, Duration::from_secs(60));
    let handles: Vec<_> = specs.into_iter().map(|s| rt.spawn(load::run_producer(s, stop.clone()))).collect();

    std::thread::sleep(Duration::from_secs(3));
    eprintln!("killing MinIO (pid {:?})", minio.pid());
    minio.kill();
    std::thread::sleep(Duration::from_secs(3));
    minio.restart();
    eprintln!("MinIO restarted (pid {:?})", minio.pid());
    std::thread::sleep(Duration::from_secs(3));
    minio.freeze();
    eprintln!("MinIO frozen");
    std::thread::sleep(Duration::from_secs(4));
    minio.thaw();
    let thawed = Instant::now();
    eprintln!("MinIO resumed");
    std::thread::sleep(Duration::from_secs(4));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);

    let mut reports = Vec::new();
    for h in handles {
        let (report, error) = rt.block_on(h).expect("producer task");
        if let Some(e) = error {
            panic!(
                "producer did not recover: {e:#}\n---- skiff ----\n{}\n---- MinIO ----\n{}",
                broker.stderr_tail(40),
                minio.log_tail(20)
            );
        }
        reports.push(report);
    }
    let (errors, transport) = error_totals(&reports);
    for (i, r) in reports.iter().enumerate() {
        assert!(r.last_ack.is_some_and(|t| t > thawed), "producer {i} was not acknowledged after MinIO resumed");
    }
    let acked: Vec<_> = reports.iter().flat_map(|r| r.acked.iter().cloned()).collect();
    let slowest = reports.iter().map(|r| r.slowest_ack).max().unwrap_or_default();
    let v = rt
        .block_on(async {
            let mut c = Client::connect(&bootstrap).await?;
            verify(&mut c, topic, 2, &acked).await
        })
        .unwrap_or_else(|e| panic!("{e:#}\n{}", broker.stderr_tail(40)));
    eprintln!(
        "MinIO kill/restart/freeze: {v:?}, client errors {errors:?}, transport {transport}, slowest ack {slowest:?}"
    );
    assert_eq!(v.unacked_present, 0, "records present that no producer saw acknowledged");
}
