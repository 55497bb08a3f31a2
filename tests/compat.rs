//! Real Kafka clients against `skiff dev`: every client family runs the shared scenario of
//! `tests/compat/README.md` against its own broker.
//!
//! The clients are installed by `tests/compat/setup.sh` (outside `cargo test`, it downloads);
//! a client that is not set up FAILS its test with the command to run, it is never skipped.
//! At most [`MAX_CONCURRENT_CLIENTS`] client programs (each with its broker) run at once so two
//! cores are not oversubscribed when the test harness runs these tests in parallel.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use support::SkiffProcess;

const MAX_CONCURRENT_CLIENTS: usize = 2;
/// The programs' own watchdog fires at 240 s; this backstop is only for a wedged process.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(270);

/// A counting semaphore bounding concurrent client programs across the tests of this binary.
static RUNNING: Mutex<usize> = Mutex::new(0);
static FREED: Condvar = Condvar::new();

struct Slot;

impl Slot {
    fn acquire() -> Self {
        let mut running = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
        while *running >= MAX_CONCURRENT_CLIENTS {
            running = FREED.wait(running).unwrap_or_else(|e| e.into_inner());
        }
        *running += 1;
        Slot
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut running = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
        *running -= 1;
        FREED.notify_one();
    }
}

fn compat_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("compat")
}

/// Runs `tests/compat/<client>/run.sh` and asserts success and the `compat <client> ok` line.
fn run_client(client: &str, broker: &SkiffProcess, topic: &str, mode: &str) {
    let records = std::env::var("RECORDS").unwrap_or_else(|_| "20000".into());
    run_client_with(client, broker, topic, mode, &records);
}

/// [`run_client`] with an explicit record count.
fn run_client_with(client: &str, broker: &SkiffProcess, topic: &str, mode: &str, records: &str) {
    let script = compat_dir().join(client).join("run.sh");
    assert!(script.exists(), "{} is missing", script.display());
    let logs = tempfile::Builder::new().prefix("skiff-compat-").tempdir().expect("temp dir");
    let (out_path, err_path) = (logs.path().join("stdout"), logs.path().join("stderr"));
    let started = Instant::now();
    let mut child = Command::new("bash")
        .arg(&script)
        .env("BOOTSTRAP", broker.bootstrap())
        .env("TOPIC", topic)
        .env("MODE", mode)
        .env("RECORDS", records)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).expect("stdout file"))
        .stderr(std::fs::File::create(&err_path).expect("stderr file"))
        .spawn()
        .expect("spawn run.sh");
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for run.sh") {
            break Some(status);
        }
        if started.elapsed() > CLIENT_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    let stderr = support::tail(&err_path, 40);
    let context = format!(
        "client {client}, MODE={mode}, TOPIC={topic}, RECORDS={records}, BOOTSTRAP={}, after {:.1?}\n\
         ---- client stdout (tail) ----\n{}\n---- client stderr (tail) ----\n{stderr}",
        broker.bootstrap(),
        started.elapsed(),
        last_lines(&stdout, 20),
    );
    let Some(status) = status else { panic!("compat {client} did not finish within {CLIENT_TIMEOUT:?}\n{context}") };
    if !status.success() && (stderr.contains("setup.sh") || stdout.contains("setup.sh")) {
        panic!(
            "compat client `{client}` is not set up: run `tests/compat/setup.sh {client}` (or `tests/compat/setup.sh` for all) \
             before `cargo test`\n{context}"
        );
    }
    assert!(status.success(), "compat {client} failed: {status}\n{context}");
    let last = stdout.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
    let expected = format!("compat {client} ok");
    assert!(last.starts_with(&expected), "last stdout line is not `{expected} ...`: {last:?}\n{context}");
    eprintln!("{last} ({mode}, {:.1?})", started.elapsed());
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Full scenario (create, produce, verify) with one client on a fresh broker.
fn full(client: &str) {
    let _slot = Slot::acquire();
    let broker = SkiffProcess::start();
    run_client(client, &broker, &format!("compat-{client}"), "full");
}

/// Produce, stop the broker gracefully, restart on the same data, verify with the new address.
fn restart_midway(client: &str) {
    let _slot = Slot::acquire();
    let mut broker = SkiffProcess::start();
    let topic = format!("compat-restart-{client}");
    run_client(client, &broker, &topic, "produce");
    let status = broker.terminate();
    assert!(status.success(), "skiff exited with {status} after SIGTERM\n{}", broker.stderr_tail(40));
    broker.restart();
    run_client(client, &broker, &topic, "verify");
}

#[test]
fn java() {
    full("java");
}

#[test]
fn python_confluent() {
    full("python-confluent");
}

#[test]
fn python_kafka() {
    full("python-kafka");
}

#[test]
fn go_sarama() {
    full("go-sarama");
}

#[test]
fn go_franz() {
    full("go-franz");
}

#[test]
fn node_kafkajs() {
    full("node-kafkajs");
}

/// The group scenario (`MODE=group`, tests/compat/README.md): 3 members, one joins and one
/// leaves midway, 60,000 records consumed exactly once with commits.
fn group(client: &str) {
    let _slot = Slot::acquire();
    let broker = SkiffProcess::start();
    let records = std::env::var("GROUP_RECORDS").unwrap_or_else(|_| "60000".into());
    run_client_with(client, &broker, &format!("compat-group-{client}"), "group", &records);
}

#[test]
fn group_java() {
    group("java");
}

#[test]
fn group_python_confluent() {
    group("python-confluent");
}

#[test]
fn group_python_kafka() {
    group("python-kafka");
}

#[test]
fn group_go_sarama() {
    group("go-sarama");
}

#[test]
fn group_go_franz() {
    group("go-franz");
}

#[test]
fn group_node_kafkajs() {
    group("node-kafkajs");
}

#[test]
fn restart_midway_keeps_everything() {
    restart_midway("go-franz");
}

#[test]
fn restart_midway_keeps_everything_python_confluent() {
    restart_midway("python-confluent");
}
