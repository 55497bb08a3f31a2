//! Apache Kafka's own command-line tools (from Maven Central, resolved by `bench/kafka/setup.sh`
//! into `${SKIFF_CACHE:-~/.cache/skiff}/kafka/<version>/libs`) run against a Skiff bootstrap
//! address: `kafka-topics`, `kafka-configs`, `kafka-console-consumer` and friends are plain
//! `main` classes, so a test runs `java -cp libs/* <class> <args>`.
//!
//! The libs are installed by the test command (`scripts/test.sh`), outside `cargo test`; a test
//! whose libs are missing FAILS with the command to run, it is never skipped.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Kafka's tools as `main` classes (Kafka 4.x).
pub const TOPIC_COMMAND: &str = "org.apache.kafka.tools.TopicCommand";
pub const ACL_COMMAND: &str = "org.apache.kafka.tools.AclCommand";
pub const CONFIG_COMMAND: &str = "org.apache.kafka.tools.ConfigCommand";
pub const CONSOLE_CONSUMER: &str = "org.apache.kafka.tools.consumer.ConsoleConsumer";
pub const CONSOLE_PRODUCER: &str = "org.apache.kafka.tools.ConsoleProducer";
pub const CONSUMER_GROUP_COMMAND: &str = "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand";
pub const LOG_DIRS_COMMAND: &str = "org.apache.kafka.tools.LogDirsCommand";
pub const FEATURE_COMMAND: &str = "org.apache.kafka.tools.FeatureCommand";
pub const METADATA_QUORUM_COMMAND: &str = "org.apache.kafka.tools.MetadataQuorumCommand";
pub const LEADER_ELECTION_COMMAND: &str = "org.apache.kafka.tools.LeaderElectionCommand";
pub const TRANSACTIONS_COMMAND: &str = "org.apache.kafka.tools.TransactionsCommand";
pub const CLUSTER_TOOL: &str = "org.apache.kafka.tools.ClusterTool";
pub const REASSIGN_PARTITIONS_COMMAND: &str = "org.apache.kafka.tools.reassign.ReassignPartitionsCommand";

/// A tool that has not finished by then is killed and the test fails.
pub const TOOL_TIMEOUT: Duration = Duration::from_secs(120);

/// The directory holding Kafka's jars: runs `bench/kafka/setup.sh` (idempotent, instant when the
/// cache is complete; it resolves from Maven Central otherwise).
pub fn libs() -> anyhow::Result<PathBuf> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bench/kafka/setup.sh");
    let out = Command::new("bash")
        .arg(&script)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| anyhow::anyhow!("running {}: {e}", script.display()))?;
    anyhow::ensure!(
        out.status.success(),
        "Kafka's tools are not installed and {} failed ({}): {}\nrun scripts/test.sh (it installs them)",
        script.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().trim().to_string();
    let dir = PathBuf::from(dir);
    anyhow::ensure!(dir.is_dir(), "bench/kafka/setup.sh printed {}, which is not a directory", dir.display());
    Ok(dir)
}

/// What a tool printed and how it ended.
#[derive(Debug)]
pub struct ToolOutput {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl ToolOutput {
    /// Fails with both outputs unless the tool exited 0.
    pub fn ok(self, what: &str) -> anyhow::Result<String> {
        anyhow::ensure!(self.success, "{what} failed:\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        Ok(self.stdout)
    }
}

/// Runs Kafka tool `class` with `args` to completion (killed after [`TOOL_TIMEOUT`]).
pub fn run(class: &str, args: &[&str]) -> anyhow::Result<ToolOutput> {
    run_with_timeout(class, args, TOOL_TIMEOUT)
}

/// [`run`] with an explicit deadline.
pub fn run_with_timeout(class: &str, args: &[&str], timeout: Duration) -> anyhow::Result<ToolOutput> {
    let libs = libs()?;
    let log4j = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bench/kafka/log4j2-tools.properties");
    let logs = tempfile::Builder::new().prefix("skiff-kafka-cli-").tempdir()?;
    let (out_path, err_path) = (logs.path().join("stdout"), logs.path().join("stderr"));
    let java = std::env::var("JAVA_HOME").map(|h| format!("{h}/bin/java")).unwrap_or_else(|_| "java".into());
    let mut child = Command::new(java)
        .arg("-Xmx256m")
        .arg(format!("-Dlog4j2.configurationFile={}", log4j.display()))
        .arg("-cp")
        .arg(format!("{}/*", libs.display()))
        .arg(class)
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path)?)
        .stderr(std::fs::File::create(&err_path)?)
        .spawn()
        .map_err(|e| anyhow::anyhow!("starting java {class}: {e}"))?;
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    let Some(status) = status else {
        anyhow::bail!("{class} {args:?} did not finish within {timeout:?}\nstdout:\n{stdout}\nstderr:\n{stderr}");
    };
    Ok(ToolOutput { success: status.success(), stdout, stderr })
}

/// Starts Kafka tool `class` with `args` and leaves it running (a consumer that a test stops by
/// killing it). Its output goes to null: a long-running tool's pipes must never fill up.
pub fn spawn(class: &str, args: &[&str]) -> anyhow::Result<std::process::Child> {
    let libs = libs()?;
    let log4j = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bench/kafka/log4j2-tools.properties");
    let java = std::env::var("JAVA_HOME").map(|h| format!("{h}/bin/java")).unwrap_or_else(|_| "java".into());
    Command::new(java)
        .arg("-Xmx256m")
        .arg(format!("-Dlog4j2.configurationFile={}", log4j.display()))
        .arg("-cp")
        .arg(format!("{}/*", libs.display()))
        .arg(class)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| anyhow::anyhow!("starting java {class}: {e}"))
}
