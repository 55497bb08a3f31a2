//! The Kafka ecosystem's own tools against Skiff, on `file://` storage and on MinIO: Kafka
//! Connect in distributed mode and a Kafka Streams application with a state store. Both keep
//! their state in compacted topics (`cleanup.policy=compact`), which is why they are here
//! (issue #12, docs/rfcs/0003-compacted-topics.md, "Real tools").
//!
//! - Connect (`ConnectDistributed`, Maven Central jars from `tests/compat/connect/setup.sh`):
//!   its config/offset/status topics created by Connect itself, or pre-created compacted with
//!   Kafka's `TopicCommand` (then Connect's CreateTopics gets TOPIC_ALREADY_EXISTS and goes on);
//!   a FileStreamSource (file → topic) and a FileStreamSink (topic → file) connector; the sink
//!   file must equal the source file; a graceful stop (SIGTERM), more lines, a restart, and the
//!   sink must again equal the source exactly.
//! - Streams (`dev.skiff.compat.StreamsWordCount`, built by `tests/compat/java/setup.sh`): a
//!   word count into a RocksDB store whose changelog is a compacted topic; stopped gracefully and
//!   restarted with an empty state directory (so the store is restored from the changelog),
//!   counts exact; then killed (SIGKILL) mid-stream and restarted the same way, every count at
//!   least the reference (at-least-once may count a record twice after a crash, never lose one).
//!   With `exactly_once_v2` (issue #13, `streams_word_count_exactly_once_through_broker_restart`):
//!   the broker SIGKILLed and restarted on the same address mid-count, then the app SIGKILLed
//!   mid-batch; every count read with read_committed is exact throughout.
//!
//! Tools that are not set up make the tests FAIL with the command to run, never skip. The JVMs'
//! logs are printed (tails) when a test fails.
#![allow(clippy::disallowed_methods)] // black-box tests wait and measure in real time; ids are test data

mod support;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail, ensure};
use kafka_protocol::messages::DescribeConfigsRequest;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::Compression;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use support::client::{Client, TestRecord, encode_batch};
use support::load::Routing;
use support::minio::{Minio, free_port};
use support::slot::Slot;
use support::{SkiffProcess, kafka_cli, tail, txn};

/// How long a JVM tool may take to come up (Connect's REST API answering).
const START_TIMEOUT: Duration = Duration::from_secs(90);
/// How long data may take to flow through (sink file complete, counts reached).
const FLOW_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a graceful stop (SIGTERM) may take.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

// ---- tests ---------------------------------------------------------------------------------

#[test]
fn connect_distributed() {
    let _slot = Slot::acquire();
    let broker = SkiffProcess::start();
    run_connect(&broker, "connect-a", Topics::ByTool, Restart::Yes);
}

#[test]
fn connect_distributed_precreated_topics() {
    let _slot = Slot::acquire();
    let broker = SkiffProcess::start();
    run_connect(&broker, "connect-b", Topics::PreCreated, Restart::No);
}

#[test]
fn streams_word_count() {
    let _slot = Slot::acquire();
    let broker = SkiffProcess::start();
    run_streams(&broker, "wordcount-a", Topics::ByTool);
}

#[test]
fn streams_word_count_precreated_changelog() {
    let _slot = Slot::acquire();
    let broker = SkiffProcess::start();
    run_streams(&broker, "wordcount-b", Topics::PreCreated);
}

/// Flush often: on s3 the default is 250 ms, which only slows the tests down.
const MINIO_BROKER: &str = "[broker]\nflush_interval_ms = 20\n";

fn skiff_on_minio(name: &str) -> SkiffProcess {
    let minio = Minio::shared();
    let prefix = minio.unique_prefix(name);
    SkiffProcess::start_with_config_and_env(&minio.skiff_config(&prefix, MINIO_BROKER), minio.skiff_env())
}

#[test]
fn connect_distributed_on_minio() {
    let _slot = Slot::acquire();
    let broker = skiff_on_minio("connect");
    run_connect(&broker, "connect-m", Topics::ByTool, Restart::Yes);
}

#[test]
fn streams_word_count_on_minio() {
    let _slot = Slot::acquire();
    let broker = skiff_on_minio("streams");
    run_streams(&broker, "wordcount-m", Topics::ByTool);
}

// ---- Kafka Connect -------------------------------------------------------------------------

/// Who creates the tool's compacted topics.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Topics {
    /// The tool itself (Connect its three topics, Streams its changelog).
    ByTool,
    /// Kafka's `TopicCommand`, compacted, before the tool starts; the tool's CreateTopics then
    /// answers TOPIC_ALREADY_EXISTS (Connect) or the tool finds the topic (Streams) and goes on.
    PreCreated,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Restart {
    Yes,
    No,
}

/// Lines in the source file before the first start, and appended before the restart.
const FIRST_LINES: usize = 300;
const MORE_LINES: usize = 200;

fn run_connect(broker: &SkiffProcess, group: &str, topics: Topics, restart: Restart) {
    let started = Instant::now();
    let dir = tempfile::Builder::new().prefix("skiff-connect-").tempdir().expect("temp dir");
    let source = dir.path().join("source.txt");
    let sink = dir.path().join("sink.txt");
    let data_topic = format!("{group}-lines");
    let mut lines: Vec<String> = (0..FIRST_LINES).map(|i| format!("{group} line {i}")).collect();
    write_lines(&source, &lines, false);

    if topics == Topics::PreCreated {
        precreate_connect_topics(broker.bootstrap(), group);
    }

    let mut worker = ConnectWorker::start(broker, dir.path(), group, 1);
    let rest = worker.rest.clone();
    worker.check(create_connector(&rest, "file-source", &file_source_config(&source, &data_topic)));
    worker.check(create_connector(&rest, "file-sink", &file_sink_config(&sink, &data_topic)));
    worker.check(wait_file_equals(&worker.jvm, &sink, &lines));
    eprintln!("{group}: {} lines through source → Skiff → sink after {:.1?}", lines.len(), started.elapsed());

    if restart == Restart::Yes {
        // A graceful stop: the source task commits its file position after its producer
        // flushed, and the sink task flushes the file and commits its consumer offsets when its
        // partitions are closed. Kafka Connect's guarantee is at-least-once; after a graceful
        // stop nothing is re-delivered on Apache Kafka, so the sink must be exactly the source.
        let status = worker.terminate();
        eprintln!("{group}: Connect stopped ({status}) after {:.1?}", started.elapsed());
        let more: Vec<String> = (FIRST_LINES..FIRST_LINES + MORE_LINES).map(|i| format!("{group} line {i}")).collect();
        write_lines(&source, &more, true);
        lines.extend(more);
        let mut worker = ConnectWorker::start(broker, dir.path(), group, 2);
        worker.check(wait_file_equals(&worker.jvm, &sink, &lines));
        eprintln!("{group}: restarted, {} lines in the sink after {:.1?}", lines.len(), started.elapsed());
        worker.terminate();
    } else {
        worker.terminate();
    }
    let tool_topics = ["configs", "offsets", "status"].map(|t| format!("{group}-{t}"));
    assert_compacted(broker, &tool_topics);
    assert_all_served(broker);
    eprintln!("{group}: done in {:.1?}", started.elapsed());
}

/// Connect's default partition counts (config 1, offsets 25, status 5), compacted.
fn precreate_connect_topics(bootstrap: &str, group: &str) {
    precreate_compacted(
        bootstrap,
        &[(format!("{group}-configs"), "1"), (format!("{group}-offsets"), "25"), (format!("{group}-status"), "5")],
    );
}

/// Creates compacted topics (name, partitions) with Kafka's `TopicCommand`, in parallel.
fn precreate_compacted(bootstrap: &str, specs: &[(String, &str)]) {
    std::thread::scope(|s| {
        let handles: Vec<_> = specs
            .iter()
            .map(|(topic, partitions)| {
                s.spawn(move || {
                    kafka_cli::run(
                        kafka_cli::TOPIC_COMMAND,
                        &[
                            "--bootstrap-server",
                            bootstrap,
                            "--create",
                            "--topic",
                            topic,
                            "--partitions",
                            partitions,
                            "--replication-factor",
                            "1",
                            "--config",
                            "cleanup.policy=compact",
                        ],
                    )
                    .and_then(|out| out.ok(&format!("kafka-topics --create {topic}")))
                })
            })
            .collect();
        for h in handles {
            h.join().expect("TopicCommand thread").unwrap_or_else(|e| panic!("{e:#}"));
        }
    });
}

fn file_source_config(file: &Path, topic: &str) -> String {
    format!(
        r#"{{"connector.class":"org.apache.kafka.connect.file.FileStreamSourceConnector","tasks.max":"1","file":"{}","topic":"{topic}","topic.creation.default.partitions":"1","topic.creation.default.replication.factor":"-1"}}"#,
        file.display()
    )
}

fn file_sink_config(file: &Path, topic: &str) -> String {
    format!(
        r#"{{"connector.class":"org.apache.kafka.connect.file.FileStreamSinkConnector","tasks.max":"1","file":"{}","topics":"{topic}"}}"#,
        file.display()
    )
}

/// PUT /connectors/<name>/config, retried while the worker is still joining its group (409)
/// or not ready (5xx).
fn create_connector(rest: &str, name: &str, config: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let (status, body) = http(rest, "PUT", &format!("/connectors/{name}/config"), Some(config))
            .with_context(|| format!("PUT /connectors/{name}/config"))?;
        if status == 200 || status == 201 {
            return Ok(());
        }
        ensure!(
            (status == 409 || status >= 500) && Instant::now() < deadline,
            "creating connector {name}: HTTP {status}: {body}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Waits until `file` holds exactly `lines`. Fails at once on a line that differs (a duplicate
/// or a gap shows as one) or on more lines than expected.
fn wait_file_equals(worker: &Jvm, file: &Path, lines: &[String]) -> anyhow::Result<()> {
    let deadline = Instant::now() + FLOW_TIMEOUT;
    loop {
        worker.running()?;
        let text = std::fs::read_to_string(file).unwrap_or_default();
        // Only whole lines: the sink may be in the middle of writing one.
        let got: Vec<&str> = text.split_inclusive('\n').filter_map(|l| l.strip_suffix('\n')).collect();
        if let Some(i) = got.iter().zip(lines).position(|(g, want)| g != want) {
            bail!("sink line {i} is {:?}, expected {:?} (source and sink differ)", got[i], lines[i]);
        }
        ensure!(got.len() <= lines.len(), "sink has {} lines, source {}: duplicates", got.len(), lines.len());
        if got.len() == lines.len() {
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "sink has {} of {} lines after {FLOW_TIMEOUT:?}", got.len(), lines.len());
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn write_lines(path: &Path, lines: &[String], append: bool) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(append)
        .write(true)
        .truncate(!append)
        .open(path)
        .expect("open source file");
    for l in lines {
        writeln!(f, "{l}").expect("write source file");
    }
    f.flush().expect("flush source file");
}

/// `ConnectDistributed` with its own worker properties and REST port.
struct ConnectWorker {
    jvm: Jvm,
    rest: String,
}

impl ConnectWorker {
    fn start(broker: &SkiffProcess, dir: &Path, group: &str, run: u32) -> Self {
        let lib = cache_lib("connect", "connect-runtime-");
        let port = free_port();
        let rest = format!("127.0.0.1:{port}");
        let props = dir.join(format!("worker-{run}.properties"));
        // Replication factor -1: the broker's default, as Kafka documents for the three topics.
        let worker = format!(
            "bootstrap.servers={bootstrap}\n\
             group.id={group}\n\
             config.storage.topic={group}-configs\n\
             offset.storage.topic={group}-offsets\n\
             status.storage.topic={group}-status\n\
             config.storage.replication.factor=-1\n\
             offset.storage.replication.factor=-1\n\
             status.storage.replication.factor=-1\n\
             key.converter=org.apache.kafka.connect.storage.StringConverter\n\
             value.converter=org.apache.kafka.connect.storage.StringConverter\n\
             offset.flush.interval.ms=1000\n\
             listeners=http://{rest}\n\
             rest.advertised.host.name=127.0.0.1\n\
             rest.advertised.port={port}\n\
             plugin.discovery=service_load\n\
             scheduled.rebalance.max.delay.ms=1000\n",
            bootstrap = broker.bootstrap(),
        );
        std::fs::write(&props, worker).expect("write worker properties");
        let log = dir.join(format!("connect-{run}.log"));
        let log4j = dir.join(format!("log4j2-{run}.properties"));
        std::fs::write(&log4j, log4j_to_file(&log)).expect("write log4j2 config");
        let jvm = Jvm::start(
            &format!("connect-{group}-{run}"),
            dir,
            &lib,
            &[format!("-Dlog4j2.configurationFile={}", log4j.display())],
            "org.apache.kafka.connect.cli.ConnectDistributed",
            &[props.display().to_string()],
            &[],
            Some(log),
        );
        let worker = Self { jvm, rest };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok((200, _)) = http(&worker.rest, "GET", "/connectors", None) {
                break;
            }
            if let Some(status) = worker.jvm.exited() {
                panic!("Connect exited ({status}) before its REST API answered\n{}", worker.jvm.logs(60));
            }
            if Instant::now() > deadline {
                panic!("Connect's REST API did not answer within {START_TIMEOUT:?}\n{}", worker.jvm.logs(60));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        worker
    }

    fn check(&self, result: anyhow::Result<()>) {
        if let Err(e) = result {
            let status = http(&self.rest, "GET", "/connectors?expand=status", None)
                .map(|(_, body)| body)
                .unwrap_or_else(|e| format!("<{e}>"));
            panic!("{e:#}\nconnector status: {status}\n{}", self.jvm.logs(80));
        }
    }

    fn terminate(&mut self) -> ExitStatus {
        self.jvm.terminate()
    }
}

fn log4j_to_file(file: &Path) -> String {
    format!(
        "status = warn\n\
         appender.file.type = File\n\
         appender.file.name = FILE\n\
         appender.file.fileName = {}\n\
         appender.file.layout.type = PatternLayout\n\
         appender.file.layout.pattern = [%d] %p %m (%c)%n\n\
         rootLogger.level = INFO\n\
         rootLogger.appenderRef.file.ref = FILE\n\
         logger.config.name = org.apache.kafka.common.config.AbstractConfig\n\
         logger.config.level = WARN\n",
        file.display()
    )
}

// ---- Kafka Streams -------------------------------------------------------------------------

const WORDS: usize = 40;
const BATCH: usize = 1500;
const INPUT_PARTITIONS: i32 = 3;

/// The changelog Streams keeps for the `counts` store (`<application.id>-<store>-changelog`).
fn changelog(app: &str) -> String {
    format!("{app}-counts-changelog")
}

fn run_streams(broker: &SkiffProcess, app: &str, topics: Topics) {
    let started = Instant::now();
    let seed = support::seed();
    eprintln!("{app}: seed {seed} (replay with SKIFF_TEST_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);
    let batches: Vec<Vec<String>> = (0..4).map(|_| words(&mut rng, BATCH)).collect();
    let (input, output) = (format!("{app}-input"), format!("{app}-output"));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    let bootstrap = broker.bootstrap().to_string();
    rt.block_on(async {
        let mut c = Client::connect(&bootstrap).await?;
        c.create_topic_ok(&input, INPUT_PARTITIONS).await?;
        c.create_topic_ok(&output, INPUT_PARTITIONS).await
    })
    .expect("create input and output topics");
    if topics == Topics::PreCreated {
        // As many partitions as the input: Streams checks that its changelog matches.
        precreate_compacted(&bootstrap, &[(changelog(app), "3")]);
    }
    let produce = |batch: &[String]| rt.block_on(produce_words(&bootstrap, &input, batch)).expect("produce words");
    let counts = || rt.block_on(read_counts(&bootstrap, &output));
    let dir = tempfile::Builder::new().prefix("skiff-streams-").tempdir().expect("temp dir");

    // 1. Count the first batch, then stop gracefully (Streams commits and flushes on close).
    produce(&batches[0]);
    let mut run1 = StreamsApp::start(broker, dir.path(), app, &input, &output, 1);
    run1.check(wait_counts(&run1.jvm, &counts, &reference(&batches[..1]), Exact::Yes));
    run1.terminate_cleanly();
    eprintln!("{app}: first batch counted, app closed after {:.1?}", started.elapsed());

    // 2. Restart with an EMPTY state directory: the store comes back from the changelog. After a
    //    graceful close nothing is counted twice, so the counts are exact.
    produce(&batches[1]);
    let mut run2 = StreamsApp::start(broker, dir.path(), app, &input, &output, 2);
    run2.check(wait_counts(&run2.jvm, &counts, &reference(&batches[..2]), Exact::Yes));
    run2.check(run2.restored_from_changelog(&changelog(app)));
    eprintln!("{app}: restored from the changelog, two batches exact after {:.1?}", started.elapsed());

    // 3. Crash mid-stream: SIGKILL as soon as part of the third batch is counted.
    produce(&batches[2]);
    let before = reference(&batches[..2]);
    run2.check(wait_until(&run2.jvm, &counts, "part of the third batch counted", |c| {
        c.iter().any(|(w, &n)| before.get(w).is_none_or(|&b| n as u64 > b))
    }));
    run2.kill();
    produce(&batches[3]);

    // 4. Restart (empty state directory again): the store is restored from the changelog and
    //    counting goes on. At-least-once may count records again that were processed but not
    //    committed before the crash, so each count is at least the reference.
    let mut run3 = StreamsApp::start(broker, dir.path(), app, &input, &output, 3);
    run3.check(wait_counts(&run3.jvm, &counts, &reference(&batches), Exact::AtLeast));
    run3.check(run3.restored_from_changelog(&changelog(app)));
    let total: u64 = reference(&batches).values().sum();
    let counted: u64 = counts().map(|c| c.values().map(|&n| n as u64).sum()).unwrap_or(0);
    eprintln!("{app}: after the crash {counted} counted for {total} words (≥); done in {:.1?}", started.elapsed());
    run3.terminate_cleanly();
    assert_compacted(broker, &[changelog(app)]);
    assert_all_served(broker);
}

// ---- Kafka Streams, exactly_once_v2 (issue #13) ---------------------------------------------

/// Where the exactly-once scenario runs: a Skiff broker, or (to validate the scenario itself)
/// any broker named by `SKIFF_EOS_BOOTSTRAP`, restarted by the shell command in
/// `SKIFF_EOS_RESTART` (e.g. Apache Kafka from bench/kafka/).
enum EosBroker {
    Skiff(SkiffProcess),
    External { bootstrap: String, restart: String },
}

impl EosBroker {
    fn from_env() -> EosBroker {
        match std::env::var("SKIFF_EOS_BOOTSTRAP") {
            Ok(bootstrap) if !bootstrap.is_empty() => EosBroker::External {
                bootstrap,
                restart: std::env::var("SKIFF_EOS_RESTART").expect("SKIFF_EOS_RESTART with SKIFF_EOS_BOOTSTRAP"),
            },
            _ => {
                let mut broker = SkiffProcess::start();
                // The app keeps running through the restart: the broker must come back where it was.
                broker.keep_address();
                EosBroker::Skiff(broker)
            }
        }
    }

    fn bootstrap(&self) -> String {
        match self {
            EosBroker::Skiff(b) => b.bootstrap().to_string(),
            EosBroker::External { bootstrap, .. } => bootstrap.clone(),
        }
    }

    /// SIGKILL and start again on the same data and address.
    fn crash_and_restart(&mut self) {
        match self {
            EosBroker::Skiff(b) => {
                b.kill();
                b.restart();
            }
            EosBroker::External { restart, .. } => {
                let status =
                    Command::new("bash").arg("-c").arg(restart.as_str()).status().expect("run SKIFF_EOS_RESTART");
                assert!(status.success(), "SKIFF_EOS_RESTART failed: {status}");
            }
        }
    }
}

/// Kafka Streams with `processing.guarantee=exactly_once_v2`: the word count of
/// [`run_streams`] with its output read as read_committed, the broker SIGKILLed and restarted
/// (same address) while the app is counting, then the app itself SIGKILLed mid-batch and
/// restarted with an empty state directory. Every count must be exact at every check (a count
/// above the reference fails at once): transactions make the changelog, the output and the
/// input offsets commit together.
#[test]
fn streams_word_count_exactly_once_through_broker_restart() {
    let _slot = Slot::acquire();
    let mut broker = EosBroker::from_env();
    let app = format!("wordcount-eos-{}", std::process::id());
    let started = Instant::now();
    let seed = support::seed();
    eprintln!("{app}: seed {seed} (replay with SKIFF_TEST_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);
    let batches: Vec<Vec<String>> = (0..4).map(|_| words(&mut rng, BATCH)).collect();
    let (input, output) = (format!("{app}-input"), format!("{app}-output"));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    let bootstrap = broker.bootstrap();
    rt.block_on(async {
        let mut c = Client::connect(&bootstrap).await?;
        c.create_topic_ok(&input, INPUT_PARTITIONS).await?;
        c.create_topic_ok(&output, INPUT_PARTITIONS).await
    })
    .expect("create input and output topics");
    let produce = |batch: &[String]| {
        let deadline = Instant::now() + FLOW_TIMEOUT;
        loop {
            match rt.block_on(produce_words(&bootstrap, &input, batch)) {
                Ok(()) => return,
                // Right after a restart the broker may still be loading its partitions.
                Err(e) if Instant::now() < deadline => {
                    eprintln!("{app}: produce failed ({e:#}); retrying");
                    std::thread::sleep(Duration::from_millis(500));
                }
                Err(e) => panic!("produce words: {e:#}"),
            }
        }
    };
    let counts = || rt.block_on(read_counts_committed(&bootstrap, &output));
    let dir = tempfile::Builder::new().prefix("skiff-streams-eos-").tempdir().expect("temp dir");
    const EOS: &str = "exactly_once_v2";

    // 1. Two batches; SIGKILL the broker as soon as part of them is counted, start it again.
    produce(&batches[0]);
    produce(&batches[1]);
    let mut run1 = StreamsApp::start_with(&bootstrap, EOS, dir.path(), &app, &input, &output, 1);
    run1.check(wait_until(&run1.jvm, &counts, "part of the first batches counted", |c| !c.is_empty()));
    broker.crash_and_restart();
    eprintln!("{app}: broker crashed and restarted mid-count after {:.1?}", started.elapsed());

    // 2. The app recovers on its own; a third batch; the counts are exact.
    produce(&batches[2]);
    run1.check(wait_counts(&run1.jvm, &counts, &reference(&batches[..3]), Exact::Yes));
    eprintln!("{app}: three batches exact through the broker restart after {:.1?}", started.elapsed());

    // 3. SIGKILL the app mid-batch; restart it with an EMPTY state directory: the store comes
    //    back from the changelog (read_committed) and nothing is counted twice.
    //    The second half of the batch is produced after the kill, so run 2 has work of its own.
    let half = batches[3].len() / 2;
    produce(&batches[3][..half]);
    let before = reference(&batches[..3]);
    run1.check(wait_until(&run1.jvm, &counts, "part of the fourth batch counted", |c| {
        c.iter().any(|(w, &n)| before.get(w).is_none_or(|&b| n as u64 > b))
    }));
    run1.kill();
    produce(&batches[3][half..]);
    let mut run2 = StreamsApp::start_with(&bootstrap, EOS, dir.path(), &app, &input, &output, 2);
    run2.check(run2.wait_stdout("streams state RUNNING"));
    run2.check(wait_counts(&run2.jvm, &counts, &reference(&batches), Exact::Yes));
    run2.check(run2.restored_from_changelog(&changelog(&app)));
    // Still exact a moment later (a late duplicate would show now).
    std::thread::sleep(Duration::from_secs(2));
    run2.check(wait_counts(&run2.jvm, &counts, &reference(&batches), Exact::Yes));
    let total: u64 = reference(&batches).values().sum();
    eprintln!("{app}: {total} words counted exactly once after the app crash; done in {:.1?}", started.elapsed());
    run2.terminate_cleanly();
    if let EosBroker::Skiff(b) = &broker {
        assert_all_served(b);
    }
}

/// The latest count per word in the output topic as a read_committed consumer sees it (an
/// exactly-once app's output holds aborted records and transaction markers).
async fn read_counts_committed(bootstrap: &str, topic: &str) -> anyhow::Result<BTreeMap<String, i64>> {
    let routing = Routing::new(vec![bootstrap.to_string()]);
    let mut counts = BTreeMap::new();
    for p in 0..INPUT_PARTITIONS {
        let scan = txn::scan(&routing, topic, p, txn::READ_COMMITTED, Duration::from_secs(30)).await?;
        for r in txn::client_view(&scan) {
            let key = String::from_utf8(r.key.context("output record without key")?.to_vec())?;
            let value = r.value.context("output record without value")?;
            let bytes: [u8; 8] = value.as_ref().try_into().context("output value is not 8 bytes")?;
            counts.insert(key, i64::from_be_bytes(bytes));
        }
    }
    Ok(counts)
}

/// `n` words from a skewed vocabulary of [`WORDS`] (some words much more frequent).
fn words(rng: &mut StdRng, n: usize) -> Vec<String> {
    (0..n).map(|_| format!("w{:02}", rng.random_range(0..WORDS).min(rng.random_range(0..WORDS)))).collect()
}

fn reference(batches: &[Vec<String>]) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for w in batches.iter().flatten() {
        *counts.entry(w.clone()).or_insert(0) += 1;
    }
    counts
}

/// Every occurrence of a word goes to one partition (a stable hash), as a keyed producer does:
/// `groupByKey` then needs no repartition topic.
fn partition_of(word: &str) -> i32 {
    let h = word.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    (h % INPUT_PARTITIONS as u64) as i32
}

async fn produce_words(bootstrap: &str, topic: &str, words: &[String]) -> anyhow::Result<()> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
    let mut per_partition: BTreeMap<i32, Vec<TestRecord>> = BTreeMap::new();
    for w in words {
        per_partition.entry(partition_of(w)).or_default().push(TestRecord::new(w.clone(), w.clone(), now));
    }
    let batches: Vec<_> =
        per_partition.into_iter().map(|(p, records)| (p, encode_batch(&records, Compression::None, None))).collect();
    let mut c = Client::connect(bootstrap).await?;
    for r in c.produce_many(topic, &batches).await? {
        ensure!(r.error_code == 0, "produce to {topic}/{}: error {}", r.index, r.error_code);
    }
    Ok(())
}

/// The latest count per word in the output topic (value: a big-endian i64, Serdes.Long).
async fn read_counts(bootstrap: &str, topic: &str) -> anyhow::Result<BTreeMap<String, i64>> {
    let mut c = Client::connect(bootstrap).await?;
    let mut counts = BTreeMap::new();
    let mut seen_in: BTreeMap<String, i32> = BTreeMap::new();
    for p in 0..INPUT_PARTITIONS {
        let (records, _) = c.fetch_all(topic, p, 0).await?;
        for r in records {
            let key = String::from_utf8(r.record.key.context("output record without key")?.to_vec())?;
            let value = r.record.value.context("output record without value")?;
            let bytes: [u8; 8] = value.as_ref().try_into().context("output value is not 8 bytes")?;
            // Streams' producer partitions by key, so a word's counts are all in one partition.
            if let Some(other) = seen_in.insert(key.clone(), p)
                && other != p
            {
                bail!("word {key} has counts in output partitions {other} and {p}");
            }
            counts.insert(key, i64::from_be_bytes(bytes));
        }
    }
    Ok(counts)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Exact {
    Yes,
    AtLeast,
}

/// Waits until every word of `want` has its count in the output: equal (`Exact::Yes`, failing at
/// once on a count above the reference: a record counted twice) or at least it (`AtLeast`).
fn wait_counts(
    app: &Jvm,
    counts: &dyn Fn() -> anyhow::Result<BTreeMap<String, i64>>,
    want: &BTreeMap<String, u64>,
    exact: Exact,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + FLOW_TIMEOUT;
    loop {
        app.running()?;
        let got = counts()?;
        if let Some(w) = got.keys().find(|w| !want.contains_key(*w)) {
            bail!("output has a count for {w}, which was never produced");
        }
        let mut behind = 0;
        for (w, &n) in want {
            let have = got.get(w).copied().unwrap_or(0);
            ensure!(have >= 0, "negative count {have} for {w}");
            if exact == Exact::Yes && have as u64 > n {
                bail!("{w} counted {have} times, produced {n} times: counted twice after a graceful close");
            }
            if (have as u64) < n {
                behind += 1;
            }
        }
        if behind == 0 {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "{behind} of {} words below their reference count after {FLOW_TIMEOUT:?}: {got:?} vs {want:?}",
            want.len()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn wait_until(
    app: &Jvm,
    counts: &dyn Fn() -> anyhow::Result<BTreeMap<String, i64>>,
    what: &str,
    done: impl Fn(&BTreeMap<String, i64>) -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + FLOW_TIMEOUT;
    loop {
        app.running()?;
        if done(&counts()?) {
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "not {what} within {FLOW_TIMEOUT:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `dev.skiff.compat.StreamsWordCount` with a fresh state directory per run.
struct StreamsApp {
    jvm: Jvm,
}

impl StreamsApp {
    fn start(broker: &SkiffProcess, dir: &Path, app: &str, input: &str, output: &str, run: u32) -> Self {
        Self::start_with(broker.bootstrap(), "at_least_once", dir, app, input, output, run)
    }

    /// The app against any bootstrap address with `processing.guarantee` = `guarantee`.
    fn start_with(
        bootstrap: &str,
        guarantee: &str,
        dir: &Path,
        app: &str,
        input: &str,
        output: &str,
        run: u32,
    ) -> Self {
        let lib = cache_lib("java", "compat-java.jar");
        let state = dir.join(format!("state-{run}"));
        let level = std::env::var("COMPAT_LOG_LEVEL").unwrap_or_else(|_| "info".into());
        let state_dir = state.display().to_string();
        let env = [
            ("BOOTSTRAP", bootstrap),
            ("GUARANTEE", guarantee),
            ("APP_ID", app),
            ("INPUT", input),
            ("OUTPUT", output),
            ("STATE_DIR", state_dir.as_str()),
        ];
        let jvm = Jvm::start(
            &format!("streams-{app}-{run}"),
            dir,
            &lib,
            &[
                format!("-Dorg.slf4j.simpleLogger.defaultLogLevel={level}"),
                "-Dorg.slf4j.simpleLogger.logFile=System.err".into(),
                // RocksDB unpacks its native library here rather than in a shared /tmp.
                format!("-Djava.io.tmpdir={}", dir.display()),
            ],
            "dev.skiff.compat.StreamsWordCount",
            &[],
            &env,
            None,
        );
        Self { jvm }
    }

    fn check(&self, result: anyhow::Result<()>) {
        if let Err(e) = result {
            panic!("{e:#}\n{}", self.jvm.logs(80));
        }
    }

    /// Waits (bounded by [`START_TIMEOUT`]) until the app printed `line`.
    fn wait_stdout(&self, line: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            self.jvm.running()?;
            if std::fs::read_to_string(&self.jvm.stdout).unwrap_or_default().lines().any(|l| l == line) {
                return Ok(());
            }
            ensure!(Instant::now() < deadline, "the app did not print {line:?} within {START_TIMEOUT:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The app reported restoring its store from `changelog` with at least one record.
    fn restored_from_changelog(&self, changelog: &str) -> anyhow::Result<()> {
        let stdout = std::fs::read_to_string(&self.jvm.stdout).unwrap_or_default();
        let restored: u64 = stdout
            .lines()
            .filter_map(|l| l.strip_prefix("streams restored "))
            .filter(|l| l.starts_with(changelog))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum();
        ensure!(restored > 0, "the app restored nothing from {changelog}; stdout:\n{stdout}");
        eprintln!("restored {restored} records from {changelog}");
        Ok(())
    }

    /// SIGTERM: the app closes Streams (commit, flush, leave the group) and prints
    /// `streams closed`.
    fn terminate_cleanly(&mut self) {
        self.jvm.terminate();
        let stdout = std::fs::read_to_string(&self.jvm.stdout).unwrap_or_default();
        assert!(stdout.contains("streams closed"), "Streams did not close cleanly\n{}", self.jvm.logs(60));
    }

    fn kill(&mut self) {
        self.jvm.kill();
    }
}

/// Each topic's `cleanup.policy` is `compact` as Skiff describes it (DescribeConfigs): the tool
/// asked for it (or `TopicCommand` did) and Skiff kept it.
fn assert_compacted(broker: &SkiffProcess, topics: &[String]) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    for topic in topics {
        let policy = rt
            .block_on(cleanup_policy(broker.bootstrap(), topic))
            .unwrap_or_else(|e| panic!("describing {topic}: {e:#}"));
        assert_eq!(policy.as_deref(), Some("compact"), "cleanup.policy of {topic}");
    }
}

async fn cleanup_policy(bootstrap: &str, topic: &str) -> anyhow::Result<Option<String>> {
    const TOPIC_RESOURCE: i8 = 2;
    let mut c = Client::connect(bootstrap).await?;
    let req = DescribeConfigsRequest::default().with_resources(vec![
        DescribeConfigsResource::default()
            .with_resource_type(TOPIC_RESOURCE)
            .with_resource_name(StrBytes::from_string(topic.to_string()))
            .with_configuration_keys(Some(vec![StrBytes::from_static_str("cleanup.policy")])),
    ]);
    let r = c.send(&req, 4).await?;
    let res = r.results.into_iter().next().context("DescribeConfigs without a result")?;
    ensure!(res.error_code == 0, "DescribeConfigs {topic}: error {} {:?}", res.error_code, res.error_message);
    Ok(res
        .configs
        .into_iter()
        .find(|e| e.name.as_str() == "cleanup.policy")
        .and_then(|e| e.value.map(|v| v.to_string())))
}

/// The tools asked for nothing that Skiff refuses as not served (its INFO line per client and
/// feature, src/handler/not_served.rs): what they need must work, not be worked around.
fn assert_all_served(broker: &SkiffProcess) {
    let log = std::fs::read_to_string(broker.stderr_path()).unwrap_or_default();
    let refused: Vec<&str> = log.lines().filter(|l| l.contains("does not serve")).collect();
    assert!(refused.is_empty(), "Skiff refused requests as not served:\n{}", refused.join("\n"));
}

// ---- JVM processes and HTTP ----------------------------------------------------------------

/// `${SKIFF_CACHE:-~/.cache/skiff}/compat/<name>/lib`, which must hold a file starting with
/// `marker` (installed by `tests/compat/setup.sh <name>`, outside `cargo test`).
fn cache_lib(name: &str, marker: &str) -> PathBuf {
    let cache = std::env::var("SKIFF_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/skiff"));
    let lib = cache.join("compat").join(name).join("lib");
    let present = std::fs::read_dir(&lib)
        .map(|entries| entries.flatten().any(|e| e.file_name().to_string_lossy().starts_with(marker)))
        .unwrap_or(false);
    assert!(present, "{} has no {marker}*: run `tests/compat/setup.sh {name}` before `cargo test`", lib.display());
    lib
}

/// A JVM child process with its stdout and stderr in files (and optionally a log file of its
/// own). Killed when dropped; its logs' tails are printed if the test is failing.
struct Jvm {
    name: String,
    /// In a cell so that waits holding `&Jvm` can check that it is still running.
    child: RefCell<Option<Child>>,
    stdout: PathBuf,
    stderr: PathBuf,
    log: Option<PathBuf>,
}

impl Jvm {
    #[allow(clippy::too_many_arguments)]
    fn start(
        name: &str,
        dir: &Path,
        lib: &Path,
        jvm_args: &[String],
        main: &str,
        args: &[String],
        env: &[(&str, &str)],
        log: Option<PathBuf>,
    ) -> Self {
        let stdout = dir.join(format!("{name}.stdout"));
        let stderr = dir.join(format!("{name}.stderr"));
        let java = std::env::var("JAVA_HOME").map(|h| format!("{h}/bin/java")).unwrap_or_else(|_| "java".into());
        let child = Command::new(java)
            // Small heap, serial GC, C1 only: these JVMs live for seconds on a shared 2-core box.
            .args(["-Xmx384m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"])
            .args(jvm_args)
            .arg("-cp")
            .arg(format!("{}/*", lib.display()))
            .arg(main)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(File::create(&stdout).expect("stdout file"))
            .stderr(File::create(&stderr).expect("stderr file"))
            .spawn()
            .unwrap_or_else(|e| panic!("starting java {main}: {e}"));
        Self { name: name.into(), child: RefCell::new(Some(child)), stdout, stderr, log }
    }

    fn exited(&self) -> Option<ExitStatus> {
        self.child.borrow_mut().as_mut()?.try_wait().ok().flatten()
    }

    /// Fails if the process has exited (a tool that failed on its own: no point waiting).
    fn running(&self) -> anyhow::Result<()> {
        match self.exited() {
            Some(status) => bail!("{} exited on its own ({status})", self.name),
            None => Ok(()),
        }
    }

    /// SIGTERM and a bounded wait; the JVM runs its shutdown hooks (Connect and Streams close).
    fn terminate(&mut self) -> ExitStatus {
        let pid = self.child.borrow().as_ref().expect("terminate: not running").id();
        let started = Instant::now();
        let sent = Command::new("kill").arg("-TERM").arg(pid.to_string()).status().expect("run kill(1)");
        assert!(sent.success(), "kill -TERM {pid} failed");
        match support::wait_child(self.child.get_mut(), STOP_TIMEOUT) {
            Some(status) => {
                eprintln!("{}: stopped by SIGTERM in {:.1?} ({status})", self.name, started.elapsed());
                status
            }
            None => {
                self.kill();
                panic!("{} did not exit within {STOP_TIMEOUT:?} of SIGTERM\n{}", self.name, self.logs(60));
            }
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.get_mut().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The tails of its stdout, stderr and log file.
    fn logs(&self, lines: usize) -> String {
        let mut out = format!(
            "---- {} stdout ({}) ----\n{}\n---- {} stderr ----\n{}",
            self.name,
            self.stdout.display(),
            tail(&self.stdout, lines),
            self.name,
            tail(&self.stderr, lines)
        );
        if let Some(log) = &self.log {
            out.push_str(&format!("\n---- {} log ({}) ----\n{}", self.name, log.display(), tail(log, lines)));
        }
        out
    }
}

impl Drop for Jvm {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("{}", self.logs(40));
        }
    }
}

/// One HTTP/1.0 request (no chunked answers to decode); returns the status and the body.
fn http(addr: &str, method: &str, path: &str, body: Option<&str>) -> anyhow::Result<(u16, String)> {
    let sock = addr.to_socket_addrs()?.next().context("no address")?;
    let mut stream = TcpStream::connect_timeout(&sock, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let body = body.unwrap_or("");
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nAccept: application/json\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    let answer = String::from_utf8_lossy(&answer);
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("not an HTTP answer: {answer:.200}"))?;
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((status, body))
}
