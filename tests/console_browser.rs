//! The web console in a real browser (issue #15): headless Chromium from Debian, driven by
//! playwright-core (`tests/console/browser.cjs`), clicks through a `skiff dev` node: create a
//! topic, produce a message and find it in the message browser, watch a consumer group's lag
//! fall as Kafka's console consumer reads, reset its offsets to earliest and see the lag back up,
//! edit a config, add partitions, delete a topic. Every step asserts on what the page shows.
//!
//! Needs Chromium and playwright-core (`tests/console/setup.sh`, run by `scripts/test.sh` and
//! again here: instant when installed) and Kafka's tools (tests/support/kafka_cli.rs). A missing
//! piece FAILS the test with the command to run; it is never skipped.
//!
//! Screenshots of each page go to `$CARGO_TARGET_TMPDIR/console-screenshots`; to regenerate the
//! committed ones under `docs/console/`:
//!
//! ```text
//! SKIFF_CONSOLE_SCREENSHOTS=docs/console cargo test --test console_browser
//! ```
#![allow(clippy::disallowed_methods)] // black-box tests wait and measure in real time; ids are test data

mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use kafka_protocol::records::Compression;
use support::SkiffProcess;
use support::client::{Client, TestRecord, encode_batch};
use support::kafka_cli;

const TOPIC: &str = "console-demo";
const GROUP: &str = "console-demo-readers";
/// The whole click-through, Kafka tools included; the browser is killed after it.
const DEADLINE: Duration = Duration::from_secs(300);

/// Chromium and playwright-core, from `tests/console/setup.sh`.
struct Browser {
    chromium: String,
    node_modules: String,
}

fn browser_setup() -> anyhow::Result<Browser> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/console/setup.sh");
    let out = Command::new("bash").arg(&script).stdin(Stdio::null()).output().context("run tests/console/setup.sh")?;
    ensure!(
        out.status.success(),
        "Chromium or playwright-core is missing and {} failed ({}):\n{}\nrun scripts/test.sh (it installs them)",
        script.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let value = |key: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| v.trim().to_string())
            .with_context(|| format!("no `{key}` line in:\n{stdout}"))
    };
    Ok(Browser { chromium: value("chromium:")?, node_modules: value("node_modules:")? })
}

/// Where the screenshots go: `SKIFF_CONSOLE_SCREENSHOTS` (relative to the repository) to
/// regenerate the committed ones, else the target dir, so a test run never dirties the clone.
fn screenshot_dir() -> PathBuf {
    match std::env::var("SKIFF_CONSOLE_SCREENSHOTS") {
        Ok(dir) if !dir.is_empty() => Path::new(env!("CARGO_MANIFEST_DIR")).join(dir),
        _ => Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots"),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

/// Records at offsets 1..=9 of partition 0 (the browser produced offset 0): text, JSON and,
/// last, a binary value with a header, so the message browser shows each rendering.
fn produce_more(bootstrap: &str) -> anyhow::Result<()> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as i64;
    let mut records = Vec::new();
    for i in 2..=5 {
        records.push(TestRecord::new(format!("order-{i}"), format!(r#"{{"id":{i},"item":"tea","qty":{i}}}"#), now));
    }
    for i in 6..=9 {
        records.push(TestRecord::new(format!("note-{i}"), format!("plain text note {i}"), now));
    }
    let mut binary = TestRecord::new("blob-10", vec![0x00, 0xff, 0x10, 0x80, 0x7f, 0x01, 0xfe, 0x02], now);
    binary.headers.push(("content-type".into(), Some("application/octet-stream".into())));
    records.push(binary);
    runtime().block_on(async {
        let mut c = Client::connect(bootstrap).await?;
        let base = c.produce_ok(TOPIC, 0, encode_batch(&records, Compression::None, None)).await?;
        ensure!(base == 1, "the browser's message should be offset 0; this batch landed at {base}");
        anyhow::Ok(())
    })
}

/// A second topic and a classic group beside the demo's KIP-848 one, so the lists and the
/// screenshots show more than one row: `orders` (3 partitions, 30 records) read by `billing`.
fn seed_neighbours(bootstrap: &str) -> anyhow::Result<()> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as i64;
    runtime().block_on(async {
        let mut c = Client::connect(bootstrap).await?;
        c.create_topic_ok("orders", 3).await?;
        for p in 0..3 {
            let records: Vec<TestRecord> = (0..10)
                .map(|i| TestRecord::new(format!("customer-{i}"), format!(r#"{{"order":{i},"partition":{p}}}"#), now))
                .collect();
            c.produce_ok("orders", p, encode_batch(&records, Compression::None, None)).await?;
        }
        anyhow::Ok(())
    })?;
    let out = kafka_cli::run_with_timeout(
        kafka_cli::CONSOLE_CONSUMER,
        &[
            "--bootstrap-server",
            bootstrap,
            "--topic",
            "orders",
            "--group",
            "billing",
            "--from-beginning",
            "--max-messages",
            "12",
            "--timeout-ms",
            "30000",
        ],
        Duration::from_secs(90),
    )?;
    out.ok("kafka-console-consumer (classic group billing)")?;
    Ok(())
}

/// Kafka's console consumer reads exactly `n` records in [`GROUP`] and commits on close
/// (auto-commit; `max.poll.records` = `n`, so its position is where it stopped printing).
fn consume(bootstrap: &str, n: usize) -> anyhow::Result<()> {
    let (n_text, poll) = (n.to_string(), format!("max.poll.records={n}"));
    let out = kafka_cli::run_with_timeout(
        kafka_cli::CONSOLE_CONSUMER,
        &[
            "--bootstrap-server",
            bootstrap,
            "--topic",
            TOPIC,
            "--group",
            GROUP,
            "--from-beginning",
            "--max-messages",
            &n_text,
            "--command-property",
            &poll,
            "--command-property",
            "group.protocol=consumer",
            "--timeout-ms",
            "30000",
        ],
        Duration::from_secs(90),
    )?;
    // Its own count: the binary record makes stdout invalid UTF-8 (kafka_cli then reads it as "").
    let stderr = out.stderr.clone();
    out.ok("kafka-console-consumer")?;
    let want = format!("Processed a total of {n} messages");
    ensure!(stderr.contains(&want), "the console consumer did not read exactly {n} records:\n{stderr}");
    Ok(())
}

/// Kafka's console consumer left running in the classic group `billing`, so the pages show a
/// group with a member and its assignment (killed when the test ends).
fn start_live_consumer(bootstrap: &str) -> anyhow::Result<Child> {
    kafka_cli::spawn(
        kafka_cli::CONSOLE_CONSUMER,
        &["--bootstrap-server", bootstrap, "--topic", "orders", "--group", "billing"],
    )
}

/// A child process killed when the test ends, however it ends.
struct Driver(Option<Child>);

impl Drop for Driver {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[test]
fn console_click_through_in_chromium() {
    if let Err(e) = click_through() {
        panic!("{e:#}");
    }
}

fn click_through() -> anyhow::Result<()> {
    let browser = browser_setup()?;
    kafka_cli::libs()?;
    let skiff = SkiffProcess::start();
    seed_neighbours(skiff.bootstrap())?;
    let shots = screenshot_dir();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/console/browser.cjs");
    let mut child = Command::new("node")
        .arg(&script)
        .env("SKIFF_CONSOLE_URL", skiff.http())
        .env("SKIFF_CHROMIUM", &browser.chromium)
        .env("SKIFF_NODE_MODULES", &browser.node_modules)
        .env("SKIFF_SCREENSHOTS", &shots)
        .env("SKIFF_TOPIC", TOPIC)
        .env("SKIFF_GROUP", GROUP)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("start node (scripts/test.sh checks it is installed)")?;
    let stdout = child.stdout.take().context("piped stdout")?;
    let mut stdin = child.stdin.take().context("piped stdin")?;
    let mut driver = Driver(Some(child));
    let mut live_consumer = Driver(None);
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });

    let started = Instant::now();
    let mut passed = false;
    while !passed {
        let left =
            DEADLINE.checked_sub(started.elapsed()).context("the click-through took longer than its deadline")?;
        let line = match lines.recv_timeout(left) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Timeout) => bail!("the browser script did not finish within {DEADLINE:?}"),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        let answer = match line.trim().strip_prefix("NEED ") {
            Some("produce") => produce_more(skiff.bootstrap()),
            Some("live consumer") => start_live_consumer(skiff.bootstrap()).map(|c| live_consumer.0 = Some(c)),
            Some(consume_n) if consume_n.starts_with("consume ") => {
                consume(skiff.bootstrap(), consume_n["consume ".len()..].parse().context("consume N")?)
            }
            Some(other) => bail!("the browser script asked for unknown work: {other}"),
            None if line.trim() == "PASS" => {
                passed = true;
                continue;
            }
            None => {
                eprintln!("[browser stdout] {line}");
                continue;
            }
        };
        let reply = match &answer {
            Ok(()) => "OK".to_string(),
            Err(e) => format!("FAILED {}", format!("{e:#}").replace('\n', " | ")),
        };
        writeln!(stdin, "{reply}").context("answer the browser script")?;
        answer?;
    }
    let status = support::wait_child(&mut driver.0, Duration::from_secs(30));
    ensure!(passed, "the browser script ended without PASS ({status:?}); its stderr is above");
    ensure!(status.is_some_and(|s| s.success()), "the browser script printed PASS but exited {status:?}");
    drop(live_consumer);
    for page in ["cluster", "topics", "topic", "messages", "groups", "group", "group-reset"] {
        let png = shots.join(format!("{page}.png"));
        let len = std::fs::metadata(&png).with_context(|| format!("screenshot {}", png.display()))?.len();
        ensure!(len > 10_000, "{} is only {len} bytes", png.display());
    }
    eprintln!("console screenshots: {}", shots.display());
    Ok(())
}

/// The console on a broker whose HTTP listener asks for credentials (a SASL listener, so
/// `http_auth` is on): `tests/console/auth.cjs` checks the 401 challenge, the super user's
/// console and a user without ACLs seeing the refusal with the missing permission.
#[test]
fn console_asks_for_credentials_and_shows_refusals() {
    if let Err(e) = with_credentials() {
        panic!("{e:#}");
    }
}

fn with_credentials() -> anyhow::Result<()> {
    const ADMIN: (&str, &str) = ("admin", "admin-secret-browser-41");
    const BOB: (&str, &str) = ("bob", "bob-secret-browser-77");
    let browser = browser_setup()?;
    let skiff = SkiffProcess::start_with_listeners(
        "SASL_PLAINTEXT://127.0.0.1:0",
        None,
        vec![
            ("SKIFF_SASL_MECHANISMS".into(), "PLAIN,SCRAM-SHA-512".into()),
            ("SKIFF_SCRAM_BOOTSTRAP_USER".into(), format!("{}={}", ADMIN.0, ADMIN.1)),
            ("SKIFF_SUPER_USERS".into(), format!("User:{}", ADMIN.0)),
        ],
    );
    runtime().block_on(async {
        use bytes::Bytes;
        use kafka_protocol::messages::alter_user_scram_credentials_request::ScramCredentialUpsertion;
        use kafka_protocol::messages::create_topics_request::CreatableTopic;
        use kafka_protocol::messages::*;
        use kafka_protocol::protocol::StrBytes;
        let sb = |s: &str| StrBytes::from_string(s.to_string());
        let mut c = Client::connect(skiff.bootstrap()).await?;
        let h = c.send(&SaslHandshakeRequest::default().with_mechanism(sb("PLAIN")), 1).await?;
        ensure!(h.error_code == 0, "handshake: {}", h.error_code);
        let token = Bytes::from(format!("\0{}\0{}", ADMIN.0, ADMIN.1).into_bytes());
        let r = c.send(&SaslAuthenticateRequest::default().with_auth_bytes(token), 2).await?;
        ensure!(r.error_code == 0, "login: {:?}", r.error_message);
        let salt = b"console-browser-salt";
        let salted = skiff::security::sasl::scram::salted_password(
            skiff_controller::scram::ScramMechanism::ScramSha512,
            BOB.1.as_bytes(),
            salt,
            4096,
        );
        let user = ScramCredentialUpsertion::default()
            .with_name(sb(BOB.0))
            .with_mechanism(2)
            .with_iterations(4096)
            .with_salt(Bytes::from_static(salt))
            .with_salted_password(Bytes::from(salted));
        let r = c.send(&AlterUserScramCredentialsRequest::default().with_upsertions(vec![user]), 0).await?;
        ensure!(r.results.iter().all(|r| r.error_code == 0), "creating bob: {:?}", r.results);
        let topic = CreatableTopic::default()
            .with_name(TopicName(sb(TOPIC)))
            .with_num_partitions(1)
            .with_replication_factor(-1);
        let r = c.send(&CreateTopicsRequest::default().with_topics(vec![topic]).with_timeout_ms(30_000), 7).await?;
        ensure!(r.topics.iter().all(|t| t.error_code == 0), "CreateTopics: {:?}", r.topics);
        anyhow::Ok(())
    })?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/console/auth.cjs");
    let mut child = Command::new("node")
        .arg(&script)
        .env("SKIFF_CONSOLE_URL", skiff.http())
        .env("SKIFF_CHROMIUM", &browser.chromium)
        .env("SKIFF_NODE_MODULES", &browser.node_modules)
        .env("SKIFF_SCREENSHOTS", screenshot_dir())
        .env("SKIFF_TOPIC", TOPIC)
        .env("SKIFF_ADMIN", format!("{}:{}", ADMIN.0, ADMIN.1))
        .env("SKIFF_USER", format!("{}:{}", BOB.0, BOB.1))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("start node (scripts/test.sh checks it is installed)")?;
    let mut stdout = child.stdout.take().context("piped stdout")?;
    let driver = Driver(Some(child));
    // Bounded: the script's own steps are 20 s each; a hung browser is killed by the driver.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut out = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut out);
        let _ = tx.send(out);
    });
    let out = rx.recv_timeout(Duration::from_secs(120)).context("the browser script did not finish within 120 s")?;
    drop(driver);
    ensure!(out.lines().any(|l| l == "PASS"), "the browser script failed (its stderr is above)");
    Ok(())
}
