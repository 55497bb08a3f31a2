//! A real schema registry on Skiff (issue #12): Apicurio Registry 3 with its KafkaSQL storage,
//! which keeps every write in a Kafka journal topic and rebuilds its state (an in-memory H2
//! database) by reading that topic from the start whenever it starts.
//!
//! - `apicurio_creates_its_topics_and_survives_its_restart`: the registry creates its three
//!   topics, schemas and versions (Avro and JSON Schema), a deleted subject and a global
//!   compatibility rule go in through its Confluent-compatible REST API, the registry is
//!   stopped and started again and must answer exactly as before (and enforce the rule), then
//!   one more version gets a new id;
//! - `apicurio_on_pre_created_topics`: the topics are created first with Kafka's own
//!   `kafka-topics` as an operator would (`cleanup.policy=delete`, infinite retention), the
//!   registry finds and checks them;
//! - `apicurio_refuses_a_compacted_journal`: a journal topic created with
//!   `cleanup.policy=compact` is refused at start-up with the message Apicurio gives on Kafka,
//!   naming the policy and its source (a dynamic topic config), read through DescribeConfigs;
//! - `apicurio_on_minio_survives_registry_and_broker_restarts`: the first scenario on MinIO,
//!   with Skiff SIGKILLed and started again while the registry is down.
//!
//! Apicurio 3 checks at every start (DescribeConfigs with synonyms) that its journal and
//! snapshot topics are `cleanup.policy=delete` with `retention.ms=-1` and `retention.bytes=-1`,
//! and refuses compaction. Apicurio 2's KafkaSQL module (`apicurio-registry-storage-kafkasql`)
//! is not served by the Maven Central we reach; Confluent Schema Registry is not on Maven Central
//! and Karapace is not on PyPI.
//!
//! The registry is the distribution Apicurio publishes on Maven Central, installed by
//! `tests/compat/apicurio/setup.sh` (scripts/test.sh runs it; the test runs it too, instantly
//! when installed). Without it, or without a Java >= 21, these tests FAIL, they never skip.
#![allow(clippy::disallowed_methods)] // black-box tests wait and measure in real time

mod support;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use serde_json::{Value, json};
use support::SkiffProcess;
use support::kafka_cli::{self, TOPIC_COMMAND};
use support::minio::Minio;

/// A registry start (JVM, Quarkus, three topic checks, journal replay) takes about 11 s on an
/// idle 2-core machine; this leaves room for a busy one.
const REGISTRY_START_TIMEOUT: Duration = Duration::from_secs(180);
/// Apicurio waits up to 30 s (`apicurio.kafkasql.coordinator.response-timeout`) for a write to
/// come back through the journal.
const HTTP_TIMEOUT: Duration = Duration::from_secs(60);
const REGISTRY_STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Kafka's own test brokers run with `group.initial.rebalance.delay.ms=0`; the registry joins
/// three fresh consumer groups one after the other at every start, each otherwise waiting the
/// 3 s default for members that never come.
const GROUPS: &str = "[groups]\ninitial_rebalance_delay = \"0s\"\n";

/// One registry JVM at a time in this binary (2 cores; a start is CPU-bound).
static HEAVY: Mutex<()> = Mutex::new(());

fn heavy() -> std::sync::MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

/// The unpacked registry and a Java that runs it, from `tests/compat/apicurio/setup.sh`.
struct Install {
    dir: PathBuf,
    java: PathBuf,
}

fn install() -> Install {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/compat/apicurio/setup.sh");
    let out = Command::new("bash").arg(&script).stdin(Stdio::null()).output().expect("run apicurio setup.sh");
    assert!(
        out.status.success(),
        "Apicurio Registry is not installed and {} failed ({}):\n{}\nrun scripts/test.sh (it installs it)",
        script.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| PathBuf::from(v.trim()))
            .unwrap_or_else(|| panic!("{} printed no `{name}` line:\n{stdout}", script.display()))
    };
    let install = Install { dir: field("dir:"), java: field("java:") };
    assert!(install.dir.join("quarkus-run.jar").is_file(), "no quarkus-run.jar in {}", install.dir.display());
    install
}

/// The registry JVM on `bootstrap`, its working directory and snapshot location `dir`.
fn registry_command(install: &Install, dir: &Path, bootstrap: &str) -> Command {
    let mut cmd = Command::new(&install.java);
    cmd.current_dir(dir)
        .args(["-Xmx384m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC"])
        // Port 0 everywhere: the ports are read back from the start-up line.
        .args(["-Dquarkus.http.host=127.0.0.1", "-Dquarkus.http.port=0"])
        .args(["-Dquarkus.management.host=127.0.0.1", "-Dquarkus.management.port=0"])
        .arg("-Dapicurio.storage.kind=kafkasql")
        .arg(format!("-Dapicurio.kafkasql.bootstrap.servers={bootstrap}"))
        // Its start-up readers stop at the first empty poll; 5 s by default.
        .arg("-Dapicurio.kafkasql.consumer.poll.timeout=500")
        .arg(format!("-Dapicurio.storage.snapshot.location={}", dir.display()))
        .arg("-jar")
        .arg(install.dir.join("quarkus-run.jar"));
    // Only this test configures it (Quarkus and Apicurio read these from the environment too).
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(|k| ["QUARKUS_", "APICURIO_", "REGISTRY_"].iter().any(|p| k.starts_with(p))) {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// A running (or stopped) Apicurio Registry process with KafkaSQL storage.
struct Registry {
    install: Install,
    /// Holds the logs and the snapshot location; kept (and named) after a failure.
    dir: Option<tempfile::TempDir>,
    root: PathBuf,
    child: Option<Child>,
    /// `127.0.0.1:PORT` of the REST API and of the management interface (health).
    api: String,
    management: String,
    starts: u32,
}

impl Registry {
    fn start(bootstrap: &str) -> Self {
        let dir = tempfile::Builder::new().prefix("skiff-apicurio-").tempdir().expect("temp dir");
        let root = dir.path().to_path_buf();
        let mut r = Self {
            install: install(),
            dir: Some(dir),
            root,
            child: None,
            api: String::new(),
            management: String::new(),
            starts: 0,
        };
        r.spawn(bootstrap).unwrap_or_else(|e| panic!("{e:#}\n{}", r.log_tail(60)));
        r
    }

    fn log_path(&self) -> PathBuf {
        self.root.join(format!("registry-{}.log", self.starts))
    }

    fn log_tail(&self, lines: usize) -> String {
        format!(
            "---- registry log tail ({}) ----\n{}",
            self.log_path().display(),
            support::tail(&self.log_path(), lines)
        )
    }

    /// Starts the JVM and waits until it listens and reports ready (the journal replayed).
    fn spawn(&mut self, bootstrap: &str) -> anyhow::Result<()> {
        self.starts += 1;
        let log = std::fs::File::create(self.log_path())?;
        let mut cmd = registry_command(&self.install, &self.root, bootstrap);
        cmd.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
        self.child = Some(cmd.spawn().context("spawn the registry JVM")?);

        let deadline = Instant::now() + REGISTRY_START_TIMEOUT;
        loop {
            let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
            if let Some(line) = text.lines().find(|l| l.contains("Listening on: http://")) {
                self.api = url_after(line, "Listening on: http://").context("API address")?;
                self.management = url_after(line, "Management interface listening on http://").context("management")?;
                break;
            }
            if let Some(status) = support::wait_child(&mut self.child, Duration::ZERO) {
                bail!("the registry exited before it listened ({status})");
            }
            ensure!(Instant::now() < deadline, "the registry did not listen within {REGISTRY_START_TIMEOUT:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
        // Ready means the storage is: KafkaSQL sends itself a bootstrap message and is ready once
        // it has read it back, so every earlier journal record has been applied.
        loop {
            if let Ok((200, _)) = http(&self.management, "GET", "/health/ready", None) {
                return Ok(());
            }
            if let Some(status) = support::wait_child(&mut self.child, Duration::ZERO) {
                bail!("the registry exited before it was ready ({status})");
            }
            ensure!(Instant::now() < deadline, "the registry was not ready within {REGISTRY_START_TIMEOUT:?}");
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// SIGTERM and a bounded wait for Quarkus' graceful shutdown.
    fn stop(&mut self) {
        let pid = self.child.as_ref().expect("registry is running").id();
        let status = Command::new("kill").args(["-TERM", &pid.to_string()]).status().expect("run kill(1)");
        assert!(status.success(), "kill -TERM {pid}: {status}");
        if support::wait_child(&mut self.child, REGISTRY_STOP_TIMEOUT).is_none() {
            self.kill();
            panic!("the registry did not stop within {REGISTRY_STOP_TIMEOUT:?} of SIGTERM\n{}", self.log_tail(60));
        }
    }

    fn restart(&mut self, bootstrap: &str) {
        if self.child.is_some() {
            self.stop();
        }
        self.spawn(bootstrap).unwrap_or_else(|e| panic!("restart: {e:#}\n{}", self.log_tail(60)));
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A Confluent-compatible API call (`/apis/ccompat/v7` + `path`); fails with the log tail
    /// unless the status is `want`.
    fn call(&self, method: &str, path: &str, body: Option<&Value>, want: u16) -> Value {
        let full = format!("/apis/ccompat/v7{path}");
        let (status, text) = http(&self.api, method, &full, body)
            .unwrap_or_else(|e| panic!("{method} {full}: {e:#}\n{}", self.log_tail(40)));
        assert_eq!(status, want, "{method} {full} answered {status}: {text}\n{}", self.log_tail(40));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {full}: not JSON ({e}): {text}"))
    }

    fn register(&self, subject: &str, kind: &str, schema: &Value) -> i64 {
        let mut body = json!({ "schema": schema.to_string() });
        if kind != "AVRO" {
            body["schemaType"] = json!(kind);
        }
        let v = self.call("POST", &format!("/subjects/{subject}/versions"), Some(&body), 200);
        v["id"].as_i64().unwrap_or_else(|| panic!("no id in {v}"))
    }

    /// Everything a client can read: subjects, their versions with id, type and text, every
    /// schema by id, and the global compatibility level.
    fn state(&self) -> Value {
        let subjects = self.call("GET", "/subjects", None, 200);
        let mut out = serde_json::Map::new();
        let mut ids = BTreeSet::new();
        for subject in subjects.as_array().expect("subjects list") {
            let subject = subject.as_str().expect("subject name");
            let versions = self.call("GET", &format!("/subjects/{subject}/versions"), None, 200);
            let mut list = Vec::new();
            for v in versions.as_array().expect("versions list") {
                let got = self.call("GET", &format!("/subjects/{subject}/versions/{v}"), None, 200);
                ids.insert(got["id"].as_i64().expect("id"));
                list.push(got);
            }
            out.insert(subject.to_string(), Value::Array(list));
        }
        let by_id: serde_json::Map<String, Value> =
            ids.iter().map(|id| (id.to_string(), self.call("GET", &format!("/schemas/ids/{id}"), None, 200))).collect();
        json!({ "subjects": out, "ids": by_id, "config": self.call("GET", "/config", None, 200) })
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("{}", self.log_tail(80));
            if let Some(dir) = self.dir.take() {
                eprintln!("---- kept registry directory: {} ----", dir.keep().display());
            }
        }
    }
}

/// `127.0.0.1:PORT` from `...<marker>127.0.0.1:PORT. ...` (Quarkus' start-up line).
fn url_after(line: &str, marker: &str) -> Option<String> {
    let rest = &line[line.find(marker)? + marker.len()..];
    let addr: String = rest.chars().take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':').collect();
    let addr = addr.trim_end_matches('.').to_string();
    addr.contains(':').then_some(addr)
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`), written in one piece;
/// returns the status and the body. (Not HTTP/1.0: the registry's server sometimes answers an
/// HTTP/1.0 request that arrived in several TCP segments by closing the connection without a
/// response, about 1 in 100, while logging a 200.)
fn http(addr: &str, method: &str, path: &str, body: Option<&Value>) -> anyhow::Result<(u16, String)> {
    let sock = addr.parse().context("address")?;
    let mut s = TcpStream::connect_timeout(&sock, Duration::from_secs(5))?;
    s.set_read_timeout(Some(HTTP_TIMEOUT))?;
    s.set_write_timeout(Some(HTTP_TIMEOUT))?;
    let body = body.map(Value::to_string).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAccept: application/json\r\n\
         Content-Type: application/vnd.schemaregistry.v1+json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .with_context(|| format!("no end of headers in {} bytes: {:?}", raw.len(), String::from_utf8_lossy(&raw)))?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut body = raw[split + 4..].to_vec();
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).with_context(|| format!("status line: {head}"))?;
    let header = |name: &str| {
        head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_ascii_lowercase())
        })
    };
    if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        body = dechunk(&body).with_context(|| format!("bad chunked body: {:?}", String::from_utf8_lossy(&body)))?;
    } else if let Some(len) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        ensure!(body.len() >= len, "body cut short: {} of {len} bytes", body.len());
        body.truncate(len);
    }
    Ok((status, String::from_utf8_lossy(&body).to_string()))
}

/// Decodes a chunked HTTP/1.1 body (no trailers expected).
fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

fn avro(name: &str, fields: Value) -> Value {
    json!({ "type": "record", "name": name, "namespace": "dev.skiff.registry", "fields": fields })
}

fn json_schema(properties: Value) -> Value {
    json!({ "$schema": "http://json-schema.org/draft-07/schema#", "type": "object", "properties": properties })
}

/// What the first phase wrote: (subject, version, id, schema) of every live version.
type Written = Vec<(String, i64, i64, Value)>;

/// A schema text as the registry returns it, parsed: Apicurio rewrites Avro schemas in its own
/// key order, so texts are compared as JSON values.
fn parsed(text: &Value) -> Value {
    let text = text.as_str().unwrap_or_else(|| panic!("schema is not a string: {text}"));
    serde_json::from_str(text).unwrap_or_else(|e| panic!("schema is not JSON ({e}): {text}"))
}

/// Registers Avro and JSON Schema subjects with two versions each, a subject that is then
/// deleted, and a global BACKWARD rule; checks every read against what was written.
fn write_schemas(reg: &Registry) -> Written {
    let users_v1 = avro("User", json!([{ "name": "id", "type": "long" }]));
    let users_v2 = avro(
        "User",
        json!([{ "name": "id", "type": "long" }, { "name": "email", "type": ["null", "string"], "default": null }]),
    );
    let orders_v1 = json_schema(json!({ "sku": { "type": "string" } }));
    let orders_v2 = json_schema(json!({ "sku": { "type": "string" }, "qty": { "type": "integer" } }));
    let payment = avro("Payment", json!([{ "name": "amount", "type": "double" }]));

    let mut written = Written::new();
    for (subject, kind, versions) in
        [("users-value", "AVRO", [&users_v1, &users_v2]), ("orders-value", "JSON", [&orders_v1, &orders_v2])]
    {
        for (i, schema) in versions.into_iter().enumerate() {
            let id = reg.register(subject, kind, schema);
            written.push((subject.to_string(), i as i64 + 1, id, (*schema).clone()));
        }
    }
    // Registering the same schema again is idempotent: same id, no new version.
    assert_eq!(reg.register("users-value", "AVRO", &users_v1), written[0].2);

    reg.register("payments-value", "AVRO", &payment);
    assert_eq!(reg.call("DELETE", "/subjects/payments-value", None, 200), json!([1]));
    reg.call("PUT", "/config", Some(&json!({ "compatibility": "BACKWARD" })), 200);

    let ids: BTreeSet<i64> = written.iter().map(|w| w.2).collect();
    assert_eq!(ids.len(), written.len(), "every new schema gets its own id: {written:?}");
    check_state(&reg.state(), &written);
    written
}

/// The state holds exactly `written` (and the BACKWARD rule).
fn check_state(state: &Value, written: &Written) {
    let subjects: BTreeSet<&str> = written.iter().map(|w| w.0.as_str()).collect();
    let listed: BTreeSet<&str> = state["subjects"].as_object().expect("subjects").keys().map(String::as_str).collect();
    assert_eq!(listed, subjects, "subjects (payments-value was deleted)");
    for (subject, version, id, schema) in written {
        let got = &state["subjects"][subject][(*version - 1) as usize];
        assert_eq!(got["version"], json!(version), "{subject}: {got}");
        assert_eq!(got["id"], json!(id), "{subject} v{version}: {got}");
        assert_eq!(&parsed(&got["schema"]), schema, "{subject} v{version}: {got}");
        assert_eq!(&parsed(&state["ids"][id.to_string()]["schema"]), schema, "schema {id}");
    }
    assert_eq!(state["config"]["compatibilityLevel"], json!("BACKWARD"), "{}", state["config"]);
}

/// After a restart: the same answers, the rule enforced, and a new version with a new id.
fn check_after_restart(reg: &Registry, before: &Value, written: &Written) {
    let after = reg.state();
    assert_eq!(&after, before, "the registry rebuilt from its journal must answer as before");
    check_state(&after, written);

    let incompatible = avro("User", json!([{ "name": "id", "type": "string" }]));
    let body = json!({ "schema": incompatible.to_string() });
    let refused = reg.call("POST", "/subjects/users-value/versions", Some(&body), 409);
    assert_eq!(refused["error_code"], json!(409), "{refused}");

    let users_v3 = avro(
        "User",
        json!([
            { "name": "id", "type": "long" },
            { "name": "email", "type": ["null", "string"], "default": null },
            { "name": "name", "type": ["null", "string"], "default": null }
        ]),
    );
    let id = reg.register("users-value", "AVRO", &users_v3);
    assert!(written.iter().all(|w| w.2 != id), "id {id} reused after the restart: {written:?}");
    let latest = reg.call("GET", "/subjects/users-value/versions/latest", None, 200);
    assert_eq!(latest["version"], json!(3), "{latest}");
    assert_eq!(latest["id"], json!(id), "{latest}");
    assert_eq!(parsed(&latest["schema"]), users_v3, "{latest}");
    assert_eq!(parsed(&reg.call("GET", &format!("/schemas/ids/{id}"), None, 200)["schema"]), users_v3);
}

/// Describes `topic` with `kafka-topics --describe` (partition count and the configs Kafka's
/// tool prints).
fn describe(bootstrap: &str, topic: &str) -> String {
    kafka_cli::run(TOPIC_COMMAND, &["--bootstrap-server", bootstrap, "--describe", "--topic", topic])
        .and_then(|o| o.ok("kafka-topics --describe"))
        .unwrap_or_else(|e| panic!("{e:#}"))
}

/// The registry asked for nothing that Skiff refuses as not served (its INFO line per client
/// and feature, src/handler/not_served.rs): what it needs must work, not be worked around.
fn assert_all_served(broker: &SkiffProcess) {
    let log = std::fs::read_to_string(broker.stderr_path()).unwrap_or_default();
    let refused: Vec<&str> = log.lines().filter(|l| l.contains("does not serve")).collect();
    assert!(refused.is_empty(), "Skiff refused requests as not served:\n{}", refused.join("\n"));
}

#[test]
fn apicurio_creates_its_topics_and_survives_its_restart() {
    let _heavy = heavy();
    let started = Instant::now();
    let skiff = SkiffProcess::start_with_config(GROUPS);
    let mut reg = Registry::start(skiff.bootstrap());
    let first_start = started.elapsed();
    let written = write_schemas(&reg);
    let before = reg.state();

    // Created by the registry with the configs it asks for, which it then checked itself.
    let journal = describe(skiff.bootstrap(), "kafkasql-journal");
    for want in ["cleanup.policy=delete", "retention.ms=-1", "retention.bytes=-1"] {
        assert!(journal.contains(want), "kafkasql-journal lacks {want}:\n{journal}");
    }

    let restart = Instant::now();
    reg.restart(skiff.bootstrap());
    let restart = restart.elapsed();
    check_after_restart(&reg, &before, &written);
    assert_all_served(&skiff);
    eprintln!("apicurio file://: first start {first_start:?}, restart {restart:?}, total {:?}", started.elapsed());
}

#[test]
fn apicurio_on_pre_created_topics() {
    let _heavy = heavy();
    let skiff = SkiffProcess::start_with_config(GROUPS);
    // As Apicurio's documentation has operators create them when the registry may not.
    for (topic, partitions) in [("kafkasql-journal", "1"), ("kafkasql-snapshots", "1"), ("registry-events", "1")] {
        kafka_cli::run(
            TOPIC_COMMAND,
            &[
                "--bootstrap-server",
                skiff.bootstrap(),
                "--create",
                "--topic",
                topic,
                "--partitions",
                partitions,
                "--config",
                "cleanup.policy=delete",
                "--config",
                "retention.ms=-1",
                "--config",
                "retention.bytes=-1",
            ],
        )
        .and_then(|o| o.ok("kafka-topics --create"))
        .unwrap_or_else(|e| panic!("{e:#}"));
    }
    let reg = Registry::start(skiff.bootstrap());
    let log = std::fs::read_to_string(reg.log_path()).expect("registry log");
    assert!(log.contains("Topic 'kafkasql-journal' already exists."), "{}", reg.log_tail(40));
    let written = write_schemas(&reg);
    check_state(&reg.state(), &written);
    assert_all_served(&skiff);
}

#[test]
fn apicurio_refuses_a_compacted_journal() {
    let _heavy = heavy();
    let skiff = SkiffProcess::start_with_config(GROUPS);
    kafka_cli::run(
        TOPIC_COMMAND,
        &[
            "--bootstrap-server",
            skiff.bootstrap(),
            "--create",
            "--topic",
            "kafkasql-journal",
            "--partitions",
            "1",
            "--config",
            "cleanup.policy=compact",
        ],
    )
    .and_then(|o| o.ok("kafka-topics --create --config cleanup.policy=compact"))
    .unwrap_or_else(|e| panic!("{e:#}"));

    let install = install();
    let dir = tempfile::Builder::new().prefix("skiff-apicurio-").tempdir().expect("temp dir");
    let log_path = dir.path().join("registry.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let mut child = Some(
        registry_command(&install, dir.path(), skiff.bootstrap())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("spawn the registry JVM"),
    );
    // The check runs where the storage is first used: in the start-up thread (the JVM then
    // exits) or in a worker thread (the app stays up, never ready). Either way it logs why.
    let want = "Effective configuration value is 'cleanup.policy=compact' and comes from dynamic topic config";
    let deadline = Instant::now() + REGISTRY_START_TIMEOUT;
    let refused = loop {
        if std::fs::read_to_string(&log_path).unwrap_or_default().contains(want) {
            break true;
        }
        if support::wait_child(&mut child, Duration::ZERO).is_some() || Instant::now() > deadline {
            break std::fs::read_to_string(&log_path).unwrap_or_default().contains(want);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
    // Kafka's DescribeConfigs reports a policy set at creation as a dynamic topic config.
    assert!(
        refused,
        "the registry did not refuse the compacted journal with `{want}`\n{}",
        support::tail(&log_path, 60)
    );
}

#[test]
fn apicurio_on_minio_survives_registry_and_broker_restarts() {
    let _heavy = heavy();
    let started = Instant::now();
    let minio = Minio::shared();
    let prefix = minio.unique_prefix("apicurio");
    let config = minio.skiff_config(&prefix, &format!("[broker]\nflush_interval_ms = 20\n{GROUPS}"));
    let mut skiff = SkiffProcess::start_with_config_and_env(&config, minio.skiff_env());
    let mut reg = Registry::start(skiff.bootstrap());
    let written = write_schemas(&reg);
    let before = reg.state();

    // Every write was acknowledged (acks=all) before the registry answered, so it is in MinIO:
    // a broker killed without a chance to flush anything and started again (new port) loses
    // nothing.
    reg.stop();
    assert_all_served(&skiff);
    skiff.kill();
    skiff.restart();
    reg.restart(skiff.bootstrap());
    check_after_restart(&reg, &before, &written);
    assert_all_served(&skiff);
    eprintln!("apicurio on MinIO: total {:?}", started.elapsed());
}
