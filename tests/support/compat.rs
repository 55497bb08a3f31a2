//! Runs the client compat programs (`tests/compat/<client>/run.sh`, scenario in
//! `tests/compat/README.md`) against a broker and checks their verdict. Shared by the
//! local-directory (`tests/compat.rs`) and MinIO (`tests/minio.rs`) suites.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::SkiffProcess;

/// The programs' own watchdog fires at 240 s; this backstop is only for a wedged process.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(270);

fn compat_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("compat")
}

/// `tests/compat/<client>/run.sh`.
pub fn run_sh(client: &str) -> PathBuf {
    compat_dir().join(client).join("run.sh")
}

/// Runs the Java program in `mode` against `bootstrap` (any cluster) to completion; returns
/// its stdout, or an error with both outputs when it fails.
pub fn run_java(bootstrap: &str, topic: &str, mode: &str, records: u32) -> anyhow::Result<String> {
    let out = Command::new("bash")
        .arg(run_sh("java"))
        .env("BOOTSTRAP", bootstrap)
        .env("TOPIC", topic)
        .env("MODE", mode)
        .env("RECORDS", records.to_string())
        .stdin(Stdio::null())
        .output()
        .map_err(|e| anyhow::anyhow!("running tests/compat/java/run.sh: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    anyhow::ensure!(
        out.status.success(),
        "java {mode} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(stdout)
}

/// Runs `tests/compat/<client>/run.sh` and asserts success and the `compat <client> ok` line.
pub fn run_client(client: &str, broker: &SkiffProcess, topic: &str, mode: &str) {
    let records = std::env::var("RECORDS").unwrap_or_else(|_| "20000".into());
    run_client_with(client, broker, topic, mode, &records);
}

/// [`run_client`] with an explicit record count.
pub fn run_client_with(client: &str, broker: &SkiffProcess, topic: &str, mode: &str, records: &str) {
    run_client_env(client, broker, topic, mode, records, &[]);
}

/// [`run_client_with`] with extra environment for the program (e.g. `GROUP_PROTOCOL`).
pub fn run_client_env(
    client: &str,
    broker: &SkiffProcess,
    topic: &str,
    mode: &str,
    records: &str,
    env: &[(&str, &str)],
) {
    let script = run_sh(client);
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
        .envs(env.iter().copied())
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
    let stderr = super::tail(&err_path, 40);
    let context = format!(
        "client {client}, MODE={mode}, TOPIC={topic}, RECORDS={records}, env {env:?}, BOOTSTRAP={}, after {:.1?}\n\
         ---- client stdout (tail) ----\n{}\n---- client stderr (tail) ----\n{stderr}\n---- skiff (tail) ----\n{}",
        broker.bootstrap(),
        started.elapsed(),
        last_lines(&stdout, 20),
        broker.stderr_tail(30),
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
