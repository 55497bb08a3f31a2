//! Pieces shared by the failover-as-clients-see-it tests (issue #17): a long-running compat
//! program (`tests/compat/<client>/run.sh` in a failover mode) whose stdout lines are collected
//! while the test kills brokers ([`ClientProcess`]), the profile knobs (`SKIFF_FAILOVER_*`),
//! distributions of per-trial figures, wall-clock µs (the programs print wall-clock times and
//! everything runs on one machine), and the group coordinator's broker as FindCoordinator names
//! it.

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure};
use kafka_protocol::messages::FindCoordinatorRequest;
use kafka_protocol::protocol::StrBytes;

use super::cluster::percentile;
use super::compat::run_sh;
use super::load::Routing;

/// Prints a summary line of a failover test (stderr, shown with `--nocapture`) and, when
/// `SKIFF_FAILOVER_REPORT` names a file, appends it there: `scripts/test.sh` prints that file
/// after the tests, so every CI log carries the per-client distributions even though cargo
/// hides a passing test's output.
pub fn report(line: &str) {
    eprintln!("{line}");
    if let Some(path) = std::env::var_os("SKIFF_FAILOVER_REPORT") {
        use std::io::Write;
        let appended =
            std::fs::OpenOptions::new().create(true).append(true).open(&path).and_then(|mut f| writeln!(f, "{line}"));
        if let Err(e) = appended {
            eprintln!("SKIFF_FAILOVER_REPORT {}: {e}", path.to_string_lossy());
        }
    }
}

/// Wall-clock µs since the Unix epoch (the unit of the programs' timestamps).
pub fn unix_us() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_micros() as i64
}

/// `SKIFF_FAILOVER_PROFILE` (`short`, the default and CI's, or `long`) and the trial count it
/// means for a test; `SKIFF_FAILOVER_TRIALS` overrides the count (a quick look).
pub struct Profile {
    pub name: &'static str,
    pub trials: usize,
}

impl Profile {
    pub fn from_env(short_trials: usize, long_trials: usize) -> Profile {
        let mut p = match std::env::var("SKIFF_FAILOVER_PROFILE").as_deref() {
            Ok("long") => Profile { name: "long", trials: long_trials },
            _ => Profile { name: "short", trials: short_trials },
        };
        if let Some(n) = std::env::var("SKIFF_FAILOVER_TRIALS").ok().and_then(|v| v.parse().ok()) {
            p.trials = n;
        }
        p
    }
}

/// Whether `SKIFF_FAILOVER_CLIENTS` (comma-separated; unset: every client) picks `client`.
pub fn client_selected(client: &str) -> bool {
    match std::env::var("SKIFF_FAILOVER_CLIENTS") {
        Ok(only) => only.split(',').any(|c| c.trim() == client),
        Err(_) => true,
    }
}

/// p50, p99 and max of per-trial figures (nearest rank).
#[derive(Debug, Clone, Copy)]
pub struct Distribution {
    pub n: usize,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl Distribution {
    pub fn of(samples: &[Duration]) -> Distribution {
        let mut sorted = samples.to_vec();
        sorted.sort();
        Distribution {
            n: sorted.len(),
            p50: percentile(&sorted, 0.50),
            p99: percentile(&sorted, 0.99),
            max: sorted.last().copied().unwrap_or_default(),
        }
    }
}

impl std::fmt::Display for Distribution {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "n={} p50={}ms p99={}ms max={}ms",
            self.n,
            self.p50.as_millis(),
            self.p99.as_millis(),
            self.max.as_millis()
        )
    }
}

/// The broker FindCoordinator (v3, through any live broker) names for `group` (id, `host:port`),
/// retrying error answers and unreachable brokers for up to `timeout`.
pub async fn coordinator_of(routing: &Routing, group: &str, timeout: Duration) -> anyhow::Result<(i32, String)> {
    let deadline = Instant::now() + timeout;
    loop {
        let attempt = async {
            let mut c = routing.connect_any().await?;
            let req = FindCoordinatorRequest::default().with_key(StrBytes::from_string(group.to_string()));
            c.send(&req, 3).await
        };
        let last = match attempt.await {
            Ok(r) if r.error_code == 0 => return Ok((r.node_id.0, format!("{}:{}", r.host, r.port))),
            Ok(r) => format!("error {} ({:?})", r.error_code, r.error_message),
            Err(e) => format!("{e:#}"),
        };
        ensure!(Instant::now() < deadline, "FindCoordinator({group}) kept failing for {timeout:?}: {last}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A running compat program (`run.sh` with the given environment) whose stdout lines are
/// collected as they come; it runs until its standard input closes ([`Self::finish`]).
pub struct ClientProcess {
    pub client: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
    stderr_path: std::path::PathBuf,
    _logs: tempfile::TempDir,
}

impl ClientProcess {
    /// Starts `tests/compat/<client>/run.sh` with `env`. `SKIFF_FAILOVER_CLIENT_LOG` keeps the
    /// program's stderr there (appended; e.g. with `COMPAT_DEBUG` or `COMPAT_LOG_LEVEL=info`)
    /// for study.
    pub fn start(client: &str, env: &[(&str, String)]) -> ClientProcess {
        let script = run_sh(client);
        assert!(script.exists(), "{} is missing", script.display());
        let logs = tempfile::Builder::new().prefix("skiff-failover-").tempdir().expect("temp dir");
        let stderr_path = std::env::var_os("SKIFF_FAILOVER_CLIENT_LOG")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| logs.path().join("stderr"));
        let mut child = Command::new("bash")
            .arg(&script)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            // Appended: one log across a test's program runs.
            .stderr(std::fs::OpenOptions::new().create(true).append(true).open(&stderr_path).expect("stderr file"))
            .spawn()
            .expect("spawn run.sh");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
        ClientProcess {
            client: client.to_string(),
            child,
            stdin,
            lines,
            reader: Some(reader),
            stderr_path,
            _logs: logs,
        }
    }

    /// Number of stdout lines so far (an index for [`Self::lines_since`]).
    pub fn line_count(&self) -> usize {
        self.lines.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Stdout lines from index `from` on.
    pub fn lines_since(&self, from: usize) -> Vec<String> {
        let lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        lines.get(from..).map(<[String]>::to_vec).unwrap_or_default()
    }

    /// Fails if the program already exited (it should run until stdin closes).
    pub fn ensure_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("the program exited ({status})\n{}", self.context());
        }
        Ok(())
    }

    /// The tail of stdout lines matching `keep` and of stderr, for failure messages.
    pub fn context(&self) -> String {
        let lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        let kept: Vec<&str> =
            lines.iter().map(String::as_str).filter(|l| !l.starts_with("rec ") && !l.starts_with("ack ")).collect();
        let stderr = std::fs::read_to_string(&self.stderr_path).unwrap_or_default();
        let err: Vec<&str> = stderr.lines().collect();
        format!(
            "client {}: stdout (no rec/ack lines, tail):\n{}\nstderr (tail):\n{}",
            self.client,
            kept[kept.len().saturating_sub(20)..].join("\n"),
            err[err.len().saturating_sub(30)..].join("\n")
        )
    }

    /// Closes stdin and waits (90 s at most) for the program to exit 0 with its last line
    /// `compat <client> ok ...`; returns every stdout line.
    pub fn finish(mut self) -> anyhow::Result<Vec<String>> {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(90);
        let status = loop {
            if let Some(status) = self.child.try_wait()? {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                bail!("the program did not finish within 90 s of its stdin closing\n{}", self.context());
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let lines = self.lines.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let last = lines.iter().rev().find(|l| !l.trim().is_empty()).cloned().unwrap_or_default();
        ensure!(
            status.success() && last.starts_with(&format!("compat {} ok", self.client)),
            "the program failed ({status}); last line {last:?}\n{}",
            self.context()
        );
        Ok(lines)
    }
}

impl Drop for ClientProcess {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
