//! OpenTelemetry traces reach a real OpenTelemetry Collector (docs/observability.md).
//!
//! The collector (`scripts/install-otelcol.sh`: OTLP receiver + file exporter, built from the Go
//! module proxy) listens on loopback; a controller (OTLP over gRPC) and a broker (OTLP over
//! HTTP/protobuf) run as separate processes with the `OTEL_*` variables set. Kafka's own Java
//! producer and console consumer drive a produce and a fetch. Both processes batch spans for an
//! hour, so what the collector writes was exported by the graceful shutdown's flush. The test
//! then finds one trace holding the whole produce path, across the broker → controller RPC:
//!
//! ```text
//! kafka.produce (broker) → produce.append → wal.flush → object.put
//!                                                     → wal.commit → controller.submit
//!   → controller.handle (controller, parent from the RPC's traceparent) → raft.commit
//! ```
//!
//! Also here: the Grafana dashboard (deploy/grafana/skiff.json) queries only metrics, and
//! groups only by labels, that a running node exports.

#![allow(clippy::disallowed_methods)] // black-box tests wait and measure in real time

mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use kafka_protocol::records::Compression;
use serde_json::Value;
use support::SkiffProcess;
use support::client::{Client, TestRecord, encode_batch};
use support::cluster::{Cluster, ClusterSpec, NodeRef, http_get};
use support::kafka_cli;
use support::minio::free_port;

const VERIFIABLE_PRODUCER: &str = "org.apache.kafka.tools.VerifiableProducer";
/// How long the collector may take to write what it received.
const COLLECT_TIMEOUT: Duration = Duration::from_secs(30);

/// The collector binary: `SKIFF_OTELCOL_BIN`, else what the (idempotent, cached) install script
/// prints.
fn collector_binary() -> anyhow::Result<PathBuf> {
    if let Ok(bin) = std::env::var("SKIFF_OTELCOL_BIN") {
        return Ok(PathBuf::from(bin));
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/install-otelcol.sh");
    let out = Command::new("bash").arg(&script).stdin(Stdio::null()).output().context("running install-otelcol.sh")?;
    ensure!(out.status.success(), "{} failed: {}", script.display(), String::from_utf8_lossy(&out.stderr));
    let last = String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().to_string();
    let bin = PathBuf::from(last.strip_prefix("otelcol: ").context("install-otelcol.sh printed no path")?);
    ensure!(bin.is_file(), "{} is not a file", bin.display());
    Ok(bin)
}

/// A running collector writing every trace it receives to `traces.json`; killed on drop.
struct Collector {
    child: Child,
    grpc: String,
    http: String,
    output: PathBuf,
    log: PathBuf,
}

impl Collector {
    fn start(dir: &Path) -> anyhow::Result<Collector> {
        let bin = collector_binary()?;
        let (grpc, http) = (format!("127.0.0.1:{}", free_port()), format!("127.0.0.1:{}", free_port()));
        let output = dir.join("traces.json");
        let config = dir.join("otelcol.yaml");
        // No internal metrics server: it would bind a fixed port (8888).
        std::fs::write(
            &config,
            format!(
                "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: {grpc}\n      http:\n        endpoint: {http}\n\
                 exporters:\n  file:\n    path: {}\n    flush_interval: 100ms\n\
                 service:\n  telemetry:\n    metrics:\n      level: none\n    logs:\n      level: warn\n  \
                 pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [file]\n",
                output.display()
            ),
        )?;
        let log = dir.join("otelcol.log");
        let child = Command::new(&bin)
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log)?)
            .stderr(std::fs::File::create(dir.join("otelcol.stderr"))?)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut collector = Collector { child, grpc, http, output, log };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(&collector.http).is_err()
            || std::net::TcpStream::connect(&collector.grpc).is_err()
        {
            if let Some(status) = collector.child.try_wait()? {
                anyhow::bail!("the collector exited ({status}):\n{}", collector.logs());
            }
            ensure!(Instant::now() < deadline, "the collector did not listen within 30 s:\n{}", collector.logs());
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(collector)
    }

    fn logs(&self) -> String {
        let stderr = self.log.with_file_name("otelcol.stderr");
        format!(
            "{}{}",
            std::fs::read_to_string(&self.log).unwrap_or_default(),
            std::fs::read_to_string(stderr).unwrap_or_default()
        )
    }

    /// Every span written so far.
    fn spans(&self) -> Vec<Span> {
        let text = std::fs::read_to_string(&self.output).unwrap_or_default();
        text.lines().filter_map(|line| serde_json::from_str::<Value>(line).ok()).flat_map(|v| spans_of(&v)).collect()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One span as the collector's file exporter writes it (OTLP/JSON).
#[derive(Debug, Clone)]
struct Span {
    service: String,
    trace_id: String,
    span_id: String,
    parent_id: String,
    name: String,
    /// 1 internal, 2 server, 3 client.
    kind: i64,
    attributes: HashMap<String, String>,
}

fn attribute_map(list: Option<&Value>) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for kv in list.and_then(Value::as_array).into_iter().flatten() {
        let (Some(key), Some(value)) = (kv["key"].as_str(), kv["value"].as_object()) else { continue };
        let text = value.values().next().map(|v| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()));
        out.insert(key.to_string(), text.unwrap_or_default());
    }
    out
}

fn spans_of(request: &Value) -> Vec<Span> {
    let mut out = Vec::new();
    for resource in request["resourceSpans"].as_array().into_iter().flatten() {
        let service = attribute_map(resource["resource"].get("attributes")).remove("service.name").unwrap_or_default();
        for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
            for s in scope["spans"].as_array().into_iter().flatten() {
                out.push(Span {
                    service: service.clone(),
                    trace_id: s["traceId"].as_str().unwrap_or_default().to_string(),
                    span_id: s["spanId"].as_str().unwrap_or_default().to_string(),
                    parent_id: s["parentSpanId"].as_str().unwrap_or_default().to_string(),
                    name: s["name"].as_str().unwrap_or_default().to_string(),
                    kind: s["kind"].as_i64().unwrap_or_default(),
                    attributes: attribute_map(s.get("attributes")),
                });
            }
        }
    }
    out
}

/// The one child of `parent` named `name`.
fn child<'a>(spans: &'a [Span], parent: &Span, name: &str) -> anyhow::Result<&'a Span> {
    let found: Vec<&Span> = spans.iter().filter(|s| s.parent_id == parent.span_id && s.name == name).collect();
    ensure!(found.len() == 1, "{} child(ren) {name} of {} {}: {found:#?}", found.len(), parent.name, parent.span_id);
    ensure!(found[0].trace_id == parent.trace_id, "{name} is in another trace than its parent {}", parent.name);
    Ok(found[0])
}

/// The produce trace whose first request the flush carried, checked span by span.
fn check_produce_trace(spans: &[Span], topic: &str) -> anyhow::Result<()> {
    let produces: Vec<&Span> = spans
        .iter()
        .filter(|s| s.name == "kafka.produce" && s.attributes.get("topics").is_some_and(|t| t.contains(topic)))
        .collect();
    ensure!(!produces.is_empty(), "no kafka.produce span for {topic}");
    let mut last_error = None;
    // Several produce requests may share a flush: the flush is the child of the first only.
    for produce in produces {
        let check = || -> anyhow::Result<()> {
            ensure!(produce.service == "skiff-broker" && produce.kind == 2, "kafka.produce: {produce:?}");
            let append = child(spans, produce, "produce.append")?;
            ensure!(append.attributes.get("topic").map(String::as_str) == Some(topic), "append: {append:?}");
            ensure!(append.attributes.get("partition").map(String::as_str) == Some("0"), "append: {append:?}");
            let flush = child(spans, append, "wal.flush")?;
            let put = child(spans, flush, "object.put")?;
            ensure!(put.attributes.get("key").is_some_and(|k| k.contains("wal")), "object.put key: {put:?}");
            ensure!(put.attributes.get("key") == flush.attributes.get("key"), "the PUT is the flush's object");
            let commit = child(spans, flush, "wal.commit")?;
            let submit = child(spans, commit, "controller.submit")?;
            ensure!(submit.kind == 3, "controller.submit is a client span: {submit:?}");
            ensure!(submit.attributes.get("command").map(String::as_str) == Some("CommitObject"), "{submit:?}");
            // Across the RPC: the controller's span continues the broker's trace.
            let handle = child(spans, submit, "controller.handle")?;
            ensure!(handle.service == "skiff-controller" && handle.kind == 2, "controller.handle: {handle:?}");
            child(spans, handle, "raft.commit")?;
            Ok(())
        };
        match check() {
            Ok(()) => return Ok(()),
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error.expect("at least one produce was checked"))
}

#[test]
fn produce_and_fetch_traces_reach_the_collector_across_the_controller_rpc() -> anyhow::Result<()> {
    let dir = tempfile::Builder::new().prefix("skiff-otel-").tempdir()?;
    let collector = Collector::start(dir.path())?;
    let otel = |service: &str, protocol: &str, endpoint: &str| {
        [
            ("OTEL_SERVICE_NAME", service),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
            ("OTEL_TRACES_SAMPLER", "parentbased_always_on"),
            // Nothing leaves before the graceful shutdown's flush.
            ("OTEL_BSP_SCHEDULE_DELAY", "3600000"),
            // The batch processor also exports as soon as a full batch (512 spans by default)
            // is queued, and drops spans past its queue: both high so the delay alone rules.
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "100000"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "100000"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect::<Vec<_>>()
    };
    let mut spec = ClusterSpec::new("otel", 1, 1);
    spec.controller_env = otel("skiff-controller", "grpc", &format!("http://{}", collector.grpc));
    spec.broker_env = otel("skiff-broker", "http/protobuf", &format!("http://{}", collector.http));
    let mut cluster = Cluster::start(spec);
    let broker = NodeRef::Broker(2);
    let addr = cluster.kafka_addr(broker).context("broker address")?;
    cluster.create_topic("traced", 1)?;
    cluster.wait_topic_ready("traced", 1, Duration::from_secs(30))?;

    kafka_cli::run(
        VERIFIABLE_PRODUCER,
        &["--bootstrap-server", &addr, "--topic", "traced", "--max-messages", "3", "--acks", "-1"],
    )?
    .ok("VerifiableProducer")?;
    let consumed = kafka_cli::run(
        kafka_cli::CONSOLE_CONSUMER,
        &[
            "--bootstrap-server",
            &addr,
            "--topic",
            "traced",
            "--from-beginning",
            "--max-messages",
            "3",
            "--timeout-ms",
            "20000",
        ],
    )?
    .ok("ConsoleConsumer")?;
    ensure!(consumed.lines().count() >= 3, "the consumer read: {consumed}");
    ensure!(collector.spans().is_empty(), "spans were exported before the shutdown flush");

    // The graceful shutdown exports what is buffered.
    ensure!(cluster.terminate(broker).success(), "the broker's shutdown failed");
    ensure!(cluster.terminate(NodeRef::Controller(1)).success(), "the controller's shutdown failed");

    let deadline = Instant::now() + COLLECT_TIMEOUT;
    loop {
        let spans = collector.spans();
        let fetched = spans.iter().any(|s| {
            s.name == "kafka.fetch"
                && s.service == "skiff-broker"
                && s.attributes.get("bytes").and_then(|b| b.parse::<u64>().ok()).is_some_and(|b| b > 0)
        });
        let produced = check_produce_trace(&spans, "traced");
        match produced {
            Ok(()) if fetched => return Ok(()),
            outcome if Instant::now() >= deadline => {
                let names: Vec<String> =
                    spans.iter().map(|s| format!("{} {} {}", s.service, s.name, s.trace_id)).collect();
                anyhow::bail!(
                    "the collector has no complete produce trace ({outcome:?}) or no fetch with data ({fetched}); \
                     spans:\n{}\ncollector log:\n{}\nbroker log:\n{}",
                    names.join("\n"),
                    collector.logs(),
                    cluster.log_tail(broker, 40)
                );
            }
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// Labels Prometheus adds or histograms carry: never on Skiff's own lines.
const SCRAPE_LABELS: [&str; 3] = ["le", "instance", "job"];

#[test]
fn grafana_dashboard_queries_exported_metrics_and_labels() -> anyhow::Result<()> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/grafana/skiff.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .context("panels")?
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(str::to_string))
        .collect();
    ensure!(exprs.len() >= 20, "the dashboard has {} queries", exprs.len());

    // A dev node (broker and controller in one process) with a topic that has seen a PUT, so
    // the per-topic series exist too.
    let skiff = SkiffProcess::start();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let mut c = Client::connect(skiff.bootstrap()).await?;
        c.create_topic_ok("dashboard", 1).await?;
        let batch = encode_batch(&[TestRecord::new("k", "v", 1)], Compression::None, None);
        c.produce_ok("dashboard", 0, batch).await?;
        anyhow::Ok(())
    })?;
    let metrics = http_get(skiff.http(), "/metrics").context("GET /metrics")?;
    // Metric name → the label names it is exported with.
    let mut exported: HashMap<String, Vec<String>> = HashMap::new();
    for line in metrics.lines().filter(|l| l.starts_with("skiff_")) {
        let (name, rest) = line.split_once(['{', ' ']).unwrap_or((line, ""));
        let labels = exported.entry(name.to_string()).or_default();
        if line.as_bytes().get(name.len()) == Some(&b'{') {
            let inside = rest.split_once('}').map_or("", |(l, _)| l);
            labels.extend(inside.split(',').filter_map(|kv| kv.split_once('=')).map(|(k, _)| k.to_string()));
        }
    }

    let mut problems = Vec::new();
    for expr in &exprs {
        let names: Vec<&str> = metric_names(expr);
        ensure!(!names.is_empty(), "a query without a Skiff metric: {expr}");
        for name in &names {
            if !exported.contains_key(*name) {
                problems.push(format!("{name} is not exported (in `{expr}`)"));
            }
        }
        for label in grouping_labels(expr) {
            let known = SCRAPE_LABELS.contains(&label)
                || names.iter().any(|n| exported.get(*n).is_some_and(|ls| ls.iter().any(|l| l == label)));
            if !known {
                problems.push(format!("no metric of `{expr}` has the label {label}"));
            }
        }
    }
    ensure!(problems.is_empty(), "the dashboard does not match /metrics:\n{}\n\n{metrics}", problems.join("\n"));
    Ok(())
}

/// The `skiff_*` metric names in a PromQL expression.
fn metric_names(expr: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("skiff_") {
        let tail = &rest[at..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        out.push(&tail[..end]);
        rest = &tail[end..];
    }
    out
}

/// The labels of every `by (...)` clause.
fn grouping_labels(expr: &str) -> Vec<&str> {
    expr.split("by (")
        .skip(1)
        .filter_map(|s| s.split_once(')'))
        .flat_map(|(l, _)| l.split(','))
        .map(str::trim)
        .collect()
}

/// Invalid `OTEL_*` values stop start-up, reported together with the other configuration
/// problems (today's main ignores them).
#[test]
fn invalid_opentelemetry_settings_stop_start_up_with_the_other_problems() -> anyhow::Result<()> {
    let dir = tempfile::Builder::new().prefix("skiff-otel-config-").tempdir()?;
    let out = Command::new(env!("CARGO_BIN_EXE_skiff"))
        .arg("dev")
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--kafka-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--flush-bytes", "lots"])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
        .env("OTEL_TRACES_SAMPLER", "traceidratio")
        .env("OTEL_TRACES_SAMPLER_ARG", "2")
        .stdin(Stdio::null())
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success(), "started with invalid settings:\n{stderr}");
    for expected in ["flush", "OTEL_EXPORTER_OTLP_PROTOCOL=http/json", "OTEL_TRACES_SAMPLER_ARG=2"] {
        ensure!(stderr.contains(expected), "{expected:?} not reported:\n{stderr}");
    }
    Ok(())
}
