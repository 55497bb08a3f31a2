//! Black-box test support: a `skiff dev` child process ([`SkiffProcess`]), a multi-process
//! cluster ([`cluster`]), a minimal Kafka client built on `kafka-protocol` ([`client`]), load
//! ([`load`]) and the invariant checker ([`invariants`]).
//!
//! Every broker gets its own temporary data directory and ephemeral ports, so tests run in
//! parallel. The broker's stderr goes to a file in that directory; if a test panics while a
//! [`SkiffProcess`] is alive, its log tail is printed and the directory is kept for inspection.

#![allow(dead_code)] // Each test binary uses a different part of this module.

pub mod certs;
pub mod client;
pub mod cluster;
pub mod compat;
pub mod failover;
pub mod invariants;
pub mod kafka_cli;
pub mod load;
pub mod minio;
pub mod slot;
pub mod txn;
pub mod txn_invariants;

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a broker may take to print its bootstrap line.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a graceful shutdown may take before the test fails.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// A running (or stopped) `skiff dev` process with its own data directory.
pub struct SkiffProcess {
    /// Holds the data directory, config file and logs; `None` once kept after a failure.
    dir: Option<tempfile::TempDir>,
    root: PathBuf,
    config: Option<PathBuf>,
    child: Option<Child>,
    bootstrap: String,
    http: String,
    /// Number of times the process was started (names the log files).
    starts: u32,
    /// Extra environment for the child (e.g. S3 credentials), set after `SKIFF_*` is cleared.
    env: Vec<(String, String)>,
    /// `--kafka-listen` of the next start: an ephemeral port unless [`Self::keep_address`].
    kafka_listen: String,
    /// `Kafka listener PROTOCOL: HOST:PORT` lines of the current run, by protocol.
    listeners: std::collections::BTreeMap<String, String>,
}

impl SkiffProcess {
    /// Starts `skiff dev` with default configuration.
    pub fn start() -> Self {
        Self::launch(None)
    }

    /// Starts `skiff dev` with `config_toml` written to a file and passed as `--config`.
    pub fn start_with_config(config_toml: &str) -> Self {
        Self::launch(Some(config_toml))
    }

    /// Like [`Self::start_with_config`], with extra environment variables for every run of the
    /// child (S3 credentials for MinIO tests: they are never put in config files).
    pub fn start_with_config_and_env(config_toml: &str, env: Vec<(String, String)>) -> Self {
        Self::launch_with_env(Some(config_toml), env)
    }

    fn launch(config_toml: Option<&str>) -> Self {
        Self::launch_with_env(config_toml, Vec::new())
    }

    /// Starts `skiff dev` with `--kafka-listen listen` (several listeners, TLS, SASL), an
    /// optional config file and extra environment.
    pub fn start_with_listeners(listen: &str, config_toml: Option<&str>, env: Vec<(String, String)>) -> Self {
        Self::launch_full(config_toml, env, listen)
    }

    /// The advertised address of the listener of `protocol` (`SASL_SSL`, ...).
    pub fn listener(&self, protocol: &str) -> &str {
        self.listeners.get(protocol).unwrap_or_else(|| panic!("no {protocol} listener: {:?}", self.listeners))
    }

    fn launch_with_env(config_toml: Option<&str>, env: Vec<(String, String)>) -> Self {
        Self::launch_full(config_toml, env, "127.0.0.1:0")
    }

    fn launch_full(config_toml: Option<&str>, env: Vec<(String, String)>, kafka_listen: &str) -> Self {
        let dir = tempfile::Builder::new().prefix("skiff-test-").tempdir().expect("create temp dir");
        let root = dir.path().to_path_buf();
        let config = config_toml.map(|text| {
            let path = root.join("skiff.toml");
            std::fs::write(&path, text).expect("write config file");
            path
        });
        let mut p = Self {
            dir: Some(dir),
            root,
            config,
            child: None,
            bootstrap: String::new(),
            http: String::new(),
            starts: 0,
            env,
            kafka_listen: kafka_listen.to_string(),
            listeners: Default::default(),
        };
        p.spawn();
        p
    }

    /// `host:port` of the Kafka listener.
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// Base URL of the HTTP listener, e.g. `http://127.0.0.1:PORT`.
    pub fn http(&self) -> &str {
        &self.http
    }

    /// The data directory (Raft log, objects); the same across restarts.
    pub fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    /// The stderr log of the current (or last) run.
    pub fn stderr_path(&self) -> PathBuf {
        self.root.join(format!("stderr-{}.log", self.starts))
    }

    /// The OS process id of the running broker.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends SIGTERM and waits (bounded) for a graceful exit. Panics if it does not stop in
    /// time (after killing it) or is not running.
    pub fn terminate(&mut self) -> ExitStatus {
        let pid = self.pid().expect("terminate: broker is not running");
        signal(pid, "TERM");
        let status = self.wait_exit(STOP_TIMEOUT);
        match status {
            Some(s) => s,
            None => {
                self.kill();
                panic!("skiff did not exit within {STOP_TIMEOUT:?} of SIGTERM\n{}", self.stderr_tail(80));
            }
        }
    }

    /// Sends SIGKILL and reaps the process. No-op when not running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the broker again on the same data directory (new ports). A broker that is still
    /// running is terminated gracefully first.
    pub fn restart(&mut self) {
        if self.child.is_some() {
            self.terminate();
        }
        self.spawn();
    }

    /// Later starts listen on the current Kafka address again, so that clients that keep
    /// running through a restart (Kafka Streams) find the broker where it was.
    pub fn keep_address(&mut self) {
        self.kafka_listen = self.bootstrap.clone();
    }

    /// The last `lines` lines of the current run's stderr.
    pub fn stderr_tail(&self, lines: usize) -> String {
        tail(&self.stderr_path(), lines)
    }

    fn spawn(&mut self) {
        self.starts += 1;
        self.listeners.clear();
        let stderr = File::create(self.stderr_path()).expect("create stderr log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_skiff"));
        cmd.arg("dev").arg("--data-dir").arg(self.data_dir()).args([
            "--kafka-listen",
            &self.kafka_listen,
            "--http-listen",
            "127.0.0.1:0",
        ]);
        if let Some(config) = &self.config {
            cmd.arg("--config").arg(config);
        }
        // Only this test decides the configuration; keep the log level if the caller set one.
        for (key, _) in std::env::vars_os() {
            if key.to_str().is_some_and(|k| k.starts_with("SKIFF_") && k != "SKIFF_LOG") {
                cmd.env_remove(key);
            }
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(stderr);
        let mut child = cmd.spawn().expect("spawn skiff binary");
        let stdout = child.stdout.take().expect("piped stdout");
        self.child = Some(child);

        // A reader thread forwards stdout lines (and keeps draining the pipe afterwards).
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::Builder::new()
            .name("skiff-stdout".into())
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    let _ = tx.send(line);
                }
            })
            .expect("spawn stdout reader");

        let deadline = Instant::now() + START_TIMEOUT;
        let (mut bootstrap, mut http) = (None, None);
        while bootstrap.is_none() || http.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(addr) = line.strip_prefix("Kafka bootstrap: ") {
                        bootstrap = Some(addr.trim().to_string());
                    } else if let Some((protocol, addr)) =
                        line.strip_prefix("Kafka listener ").and_then(|l| l.split_once(": "))
                    {
                        self.listeners.insert(protocol.to_string(), addr.trim().to_string());
                    } else if let Some(url) = line.strip_prefix("HTTP: ") {
                        // Printed as http://HOST:PORT/metrics; keep the base URL.
                        let url = url.trim();
                        http = Some(url.strip_suffix("/metrics").unwrap_or(url).to_string());
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.wait_exit(Duration::from_secs(5));
                    self.kill();
                    panic!("skiff exited before it was ready (status {status:?})\n{}", self.stderr_tail(80));
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    self.kill();
                    panic!("skiff printed no bootstrap line within {START_TIMEOUT:?}\n{}", self.stderr_tail(80));
                }
            }
        }
        self.bootstrap = bootstrap.expect("loop ends when set");
        self.http = http.expect("loop ends when set");
    }

    /// Waits up to `timeout` for the child to exit; `None` if it is still running.
    fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_child(&mut self.child, timeout)
    }
}

impl Drop for SkiffProcess {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("---- skiff stderr tail ({}) ----\n{}", self.stderr_path().display(), self.stderr_tail(60));
            if let Some(dir) = self.dir.take() {
                eprintln!("---- kept skiff test directory: {} ----", dir.keep().display());
            }
        }
    }
}

/// Sends a signal by name (`TERM`, `KILL`) with kill(1): no unsafe code, no extra crates.
/// Waits up to `timeout` for `child` to exit and clears it; `None` (child kept) if it is still
/// running or there is none.
pub fn wait_child(child: &mut Option<Child>, timeout: Duration) -> Option<ExitStatus> {
    let running = child.as_mut()?;
    let deadline = Instant::now() + timeout;
    loop {
        match running.try_wait() {
            Ok(Some(status)) => {
                *child = None;
                return Some(status);
            }
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => return None,
        }
    }
}

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill").arg(format!("-{name}")).arg(pid.to_string()).status().expect("run kill(1)");
    assert!(status.success(), "kill -{name} {pid} failed: {status}");
}

/// The last `lines` lines of a file (reads at most its last 256 KiB).
pub fn tail(path: &Path, lines: usize) -> String {
    let Ok(mut f) = File::open(path) else { return format!("<cannot open {}>", path.display()) };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(256 * 1024)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A seed for randomized tests: `SKIFF_TEST_SEED` if set (to replay a failure), else fresh.
pub fn seed() -> u64 {
    match std::env::var("SKIFF_TEST_SEED") {
        Ok(s) => s.parse().expect("SKIFF_TEST_SEED must be a u64"),
        Err(_) => {
            let nanos =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
            (nanos as u64) ^ u64::from(std::process::id()).rotate_left(32)
        }
    }
}
