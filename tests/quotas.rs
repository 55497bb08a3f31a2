//! Client quotas and connection-creation rates (docs/security.md "Quotas") with real clients:
//! Kafka's `kafka-configs` sets and describes them, Kafka's producer and consumer performance
//! tools are held to a byte rate, raw connections check the precedence of entities and the
//! per-address connection-creation rate. Every wait is bounded.
//!
//! The brokers here use `quota_window_num = 2` (Kafka's `quota.window.num`, default 11): a
//! quota's rate is measured over at least `num - 1` windows, which lets a new client burst that
//! many seconds of quota before its first throttle; two windows keep that burst to one second,
//! so the steady rate shows within a short test.
#![allow(clippy::disallowed_methods)] // black-box tests wait and measure in real time

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use kafka_protocol::messages::alter_client_quotas_request::{EntityData, EntryData, OpData};
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    AlterClientQuotasRequest, CreatePartitionsRequest, CreateTopicsRequest, DeleteTopicsRequest, ProduceRequest,
};
use kafka_protocol::protocol::StrBytes;
use support::SkiffProcess;
use support::client::{Client, TestRecord, encode_batch, topic_name};
use support::cluster::{http_get, prometheus_value};
use support::kafka_cli;

/// The byte-rate quotas of the rate tests: 256 KiB/s, low enough that a debug broker and a JVM
/// on a loaded machine still offer far more, so the measured rate is the quota's, not the
/// machine's.
const QUOTA_MIB: f64 = 0.25;
const WINDOWS: &str = "[broker]\nquota_window_num = 2\n";

fn configs(bootstrap: &str, args: &[&str]) -> String {
    let mut all = vec!["--bootstrap-server", bootstrap];
    all.extend_from_slice(args);
    kafka_cli::run(kafka_cli::CONFIG_COMMAND, &all)
        .expect("run kafka-configs")
        .ok(&format!("kafka-configs {args:?}"))
        .expect("kafka-configs")
}

fn create_topic(bootstrap: &str, topic: &str) {
    kafka_cli::run(
        kafka_cli::TOPIC_COMMAND,
        &["--bootstrap-server", bootstrap, "--create", "--topic", topic, "--partitions", "1"],
    )
    .expect("run kafka-topics")
    .ok("kafka-topics --create")
    .expect("create topic");
}

/// One report window of a performance tool: MiB moved and the window's rate in MiB/s.
#[derive(Debug, Clone, Copy)]
struct Window {
    mib: f64,
    rate: f64,
}

/// ProducerPerformance's window lines: `N records sent, R records/sec (X MB/sec), ...`.
fn producer_windows(out: &str) -> Vec<Window> {
    out.lines()
        .filter(|l| l.contains("records sent") && l.contains("max latency."))
        .filter_map(|l| {
            let records: f64 = l.split_once(" records sent")?.0.trim().parse().ok()?;
            let per_sec: f64 = l.split_once(", ")?.1.split_once(" records/sec")?.0.trim().parse().ok()?;
            let rate: f64 = l.split_once('(')?.1.split_once(" MB/sec")?.0.trim().parse().ok()?;
            Some(Window { mib: rate * records / per_sec.max(1e-9), rate })
        })
        .collect()
}

/// ConsumerPerformance's detailed-stats lines: the cumulative `data.consumed.in.MB` and the
/// window's `MB.sec`.
fn consumer_windows(out: &str) -> Vec<Window> {
    let mut columns = None;
    let mut last = 0.0;
    let mut windows = Vec::new();
    for line in out.lines() {
        let cells: Vec<&str> = line.split(',').map(str::trim).collect();
        match columns {
            None => {
                let at = |name: &str| cells.iter().position(|c| *c == name);
                columns = at("data.consumed.in.MB").zip(at("MB.sec"));
            }
            Some((total, rate)) => {
                let get = |i: usize| cells.get(i).and_then(|c| c.parse::<f64>().ok());
                if let (Some(t), Some(r)) = (get(total), get(rate)) {
                    windows.push(Window { mib: t - last, rate: r });
                    last = t;
                }
            }
        }
    }
    windows
}

/// The rate over the windows between the first `skip` (start-up, group join, and the burst a
/// new quota bucket is allowed) and the last `tail` (the run ending mid-window): total MiB over
/// total time, so a short window weighs what it lasted.
fn steady(windows: &[Window], skip: usize, tail: usize) -> f64 {
    let end = windows.len().saturating_sub(tail);
    let mid = windows.get(skip..end).unwrap_or_default();
    assert!(mid.len() >= 2, "too few report windows: {windows:?}");
    let mib: f64 = mid.iter().map(|w| w.mib).sum();
    let secs: f64 = mid.iter().map(|w| w.mib / w.rate.max(1e-9)).sum();
    mib / secs
}

/// `producer_byte_rate = 256 KiB/s` for a client id holds Kafka's ProducerPerformance, sending as
/// fast as it can for ~11 s, within 10% of the quota once the first second's burst is spent;
/// the broker reports the throttle in `/metrics`. Without quotas the tool runs far faster.
#[test]
fn producer_byte_rate_holds_a_real_producer_within_ten_percent() {
    let broker = SkiffProcess::start_with_config(WINDOWS);
    let b = broker.bootstrap();
    create_topic(b, "produce-quota");
    configs(
        b,
        &[
            "--alter",
            "--entity-type",
            "clients",
            "--entity-name",
            "quota-producer",
            "--add-config",
            "producer_byte_rate=262144",
        ],
    );
    let started = Instant::now();
    let out = kafka_cli::run(
        "org.apache.kafka.tools.ProducerPerformance",
        &[
            "--topic",
            "produce-quota",
            "--num-records",
            "2900",
            "--record-size",
            "1000",
            "--throughput",
            "-1",
            "--reporting-interval",
            "1000",
            "--producer-props",
            &format!("bootstrap.servers={b}"),
            "client.id=quota-producer",
            "acks=1",
        ],
    )
    .expect("run ProducerPerformance")
    .ok("ProducerPerformance")
    .expect("produce");
    let took = started.elapsed();
    let windows = producer_windows(&out);
    let rate = steady(&windows, 3, 0);
    eprintln!("producer windows (MiB/s): {windows:?}; steady {rate:.3} MiB/s; run {took:?}");
    // The tool counts record values only; the quota counts whole requests (~1.5% more).
    assert!(
        (rate / QUOTA_MIB - 1.0).abs() <= 0.10,
        "steady produce rate {rate:.3} MiB/s is not within 10% of {QUOTA_MIB} MiB/s: {out}"
    );
    assert!(took >= Duration::from_secs(8), "2.9 MB at 256 KiB/s took only {took:?}");
    let metrics = http_get(broker.http(), "/metrics").expect("metrics");
    let throttled = metrics
        .lines()
        .find(|l| {
            l.starts_with("skiff_quota_throttle_time_ms_total{kind=\"produce\",user=\"\",client_id=\"quota-producer\"}")
        })
        .unwrap_or_else(|| panic!("no throttle metric for the producer: {metrics}"));
    assert!(!throttled.ends_with(" 0"), "{throttled}");
}

/// `consumer_byte_rate = 256 KiB/s` holds Kafka's ConsumerPerformance within 10% of the quota
/// (throttled fetches come back empty, as Kafka answers them). The consumer fetches 32 KiB at a
/// time: as in Kafka, a fetch that breaks the quota is answered empty and not counted, so a
/// client whose every fetch is a whole window's allowance gets about half of it;
/// fetches small next to the quota see the quota itself.
#[test]
fn consumer_byte_rate_holds_a_real_consumer_within_ten_percent() {
    let broker = SkiffProcess::start_with_config(WINDOWS);
    let b = broker.bootstrap();
    create_topic(b, "fetch-quota");
    kafka_cli::run(
        "org.apache.kafka.tools.ProducerPerformance",
        &[
            "--topic",
            "fetch-quota",
            "--num-records",
            "3500",
            "--record-size",
            "1000",
            "--throughput",
            "-1",
            "--producer-props",
            &format!("bootstrap.servers={b}"),
            "client.id=loader",
        ],
    )
    .expect("run ProducerPerformance")
    .ok("load the topic")
    .expect("produce");
    configs(
        b,
        &[
            "--alter",
            "--entity-type",
            "clients",
            "--entity-name",
            "quota-consumer",
            "--add-config",
            "consumer_byte_rate=262144",
        ],
    );
    let started = Instant::now();
    let out = kafka_cli::run(
        "org.apache.kafka.tools.ConsumerPerformance",
        &[
            "--bootstrap-server",
            b,
            "--topic",
            "fetch-quota",
            "--num-records",
            "3400",
            "--show-detailed-stats",
            "--reporting-interval",
            "1000",
            "--timeout",
            "30000",
            "--command-property",
            "client.id=quota-consumer",
            "--command-property",
            "auto.offset.reset=earliest",
            "--command-property",
            "max.partition.fetch.bytes=32768",
        ],
    )
    .expect("run ConsumerPerformance")
    .ok("ConsumerPerformance")
    .expect("consume");
    let took = started.elapsed();
    let windows = consumer_windows(&out);
    // Start-up, the group join and the burst allowance take the first few seconds.
    let rate = steady(&windows, 4, 1);
    eprintln!("consumer windows (MiB/s): {windows:?}; steady {rate:.3} MiB/s; run {took:?}");
    assert!(
        (rate / QUOTA_MIB - 1.0).abs() <= 0.10,
        "steady fetch rate {rate:.3} MiB/s is not within 10% of {QUOTA_MIB} MiB/s: {out}"
    );
    let metrics = http_get(broker.http(), "/metrics").expect("metrics");
    let bound = metrics
        .lines()
        .find(|l| l.starts_with("skiff_quota_bound{kind=\"fetch\",user=\"\",client_id=\"quota-consumer\"}"))
        .unwrap_or_else(|| panic!("no fetch quota metric: {metrics}"));
    assert!(bound.ends_with(" 262144"), "{bound}");
}

/// Every entity kind and the defaults, set and described with Kafka's `kafka-configs`
/// (AlterClientQuotas / DescribeClientQuotas), removed again, and refused as Kafka refuses.
#[test]
fn kafka_configs_alters_and_describes_quotas() {
    let broker = SkiffProcess::start();
    let b = broker.bootstrap();
    configs(
        b,
        &[
            "--alter",
            "--entity-type",
            "users",
            "--entity-name",
            "u",
            "--add-config",
            "producer_byte_rate=1024,consumer_byte_rate=2048",
        ],
    );
    configs(
        b,
        &[
            "--alter",
            "--entity-type",
            "users",
            "--entity-name",
            "u",
            "--entity-type",
            "clients",
            "--entity-name",
            "c",
            "--add-config",
            "request_percentage=12.5",
        ],
    );
    configs(b, &["--alter", "--entity-type", "clients", "--entity-default", "--add-config", "producer_byte_rate=4096"]);
    configs(
        b,
        &[
            "--alter",
            "--entity-type",
            "ips",
            "--entity-name",
            "127.0.0.1",
            "--add-config",
            "connection_creation_rate=100",
        ],
    );
    let out = configs(b, &["--describe", "--entity-type", "users", "--entity-name", "u"]);
    assert!(out.contains("user-principal 'u'"), "{out}");
    assert!(out.contains("producer_byte_rate=1024.0") && out.contains("consumer_byte_rate=2048.0"), "{out}");
    let out = configs(
        b,
        &[
            "--describe",
            "--entity-type",
            "users",
            "--entity-name",
            "u",
            "--entity-type",
            "clients",
            "--entity-name",
            "c",
        ],
    );
    assert!(out.contains("request_percentage=12.5"), "{out}");
    let out = configs(b, &["--describe", "--entity-type", "clients"]);
    assert!(out.contains("the default client-id") && out.contains("producer_byte_rate=4096.0"), "{out}");
    let out = configs(b, &["--describe", "--entity-type", "ips", "--entity-name", "127.0.0.1"]);
    assert!(out.contains("connection_creation_rate=100"), "{out}");
    configs(b, &["--alter", "--entity-type", "users", "--entity-name", "u", "--delete-config", "producer_byte_rate"]);
    let out = configs(b, &["--describe", "--entity-type", "users", "--entity-name", "u"]);
    assert!(!out.contains("producer_byte_rate") && out.contains("consumer_byte_rate=2048.0"), "{out}");
    // Kafka's validation: a fractional byte rate and an ip key on a user are INVALID_REQUEST.
    let refused = kafka_cli::run(
        kafka_cli::CONFIG_COMMAND,
        &[
            "--bootstrap-server",
            b,
            "--alter",
            "--entity-type",
            "clients",
            "--entity-name",
            "x",
            "--add-config",
            "producer_byte_rate=1.5",
        ],
    )
    .expect("run kafka-configs");
    assert!(!refused.success, "a fractional byte rate was accepted: {refused:?}");
    assert!(format!("{}{}", refused.stdout, refused.stderr).contains("cannot be a fractional value"), "{refused:?}");
}

fn entity(parts: &[(&str, Option<&str>)]) -> Vec<EntityData> {
    parts
        .iter()
        .map(|(t, n)| {
            EntityData::default()
                .with_entity_type(StrBytes::from_string(t.to_string()))
                .with_entity_name(n.map(|n| StrBytes::from_string(n.to_string())))
        })
        .collect()
}

async fn set_rate(admin: &mut Client, parts: &[(&str, Option<&str>)], rate: f64) {
    set_quota(admin, parts, "producer_byte_rate", rate).await
}

async fn set_quota(admin: &mut Client, parts: &[(&str, Option<&str>)], key: &'static str, rate: f64) {
    let req = AlterClientQuotasRequest::default().with_entries(vec![
        EntryData::default()
            .with_entity(entity(parts))
            .with_ops(vec![OpData::default().with_key(StrBytes::from_static_str(key)).with_value(rate)]),
    ]);
    let resp = admin.send(&req, 1).await.expect("AlterClientQuotas");
    assert!(resp.entries.iter().all(|e| e.error_code == 0), "{resp:?}");
}

/// The throttle_time_ms of one 60 KB produce from a fresh connection as `client_id`.
async fn throttle_of(addr: &str, client_id: &str) -> i32 {
    let mut c = Client::connect(addr).await.expect("connect");
    c.set_client_id(client_id);
    let value = vec![7u8; 60_000];
    let batch =
        encode_batch(&[TestRecord::new(Vec::<u8>::new(), value, 0)], kafka_protocol::records::Compression::None, None);
    let req = ProduceRequest::default().with_acks(-1).with_timeout_ms(30_000).with_topic_data(vec![
        TopicProduceData::default()
            .with_name(topic_name("precedence"))
            .with_partition_data(vec![PartitionProduceData::default().with_index(0).with_records(Some(batch))]),
    ]);
    let resp = c.send(&req, 9).await.expect("produce");
    resp.throttle_time_ms
}

/// Kafka's precedence, on the wire: a client-id default throttles; a user quota beats it; a
/// user + client-id quota beats the user's. (PLAINTEXT clients are `User:ANONYMOUS`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_most_specific_entity_applies() {
    let broker = SkiffProcess::start();
    let addr = broker.bootstrap().to_string();
    let mut admin = Client::connect(&addr).await.expect("connect");
    admin.create_topic_ok("precedence", 1).await.expect("topic");
    assert_eq!(throttle_of(&addr, "a").await, 0, "no quota, no throttle");
    // 60 KB against 1 KB/s measured over 10 s: throttled.
    set_rate(&mut admin, &[("client-id", None)], 1024.0).await;
    assert!(throttle_of(&addr, "b").await > 0, "the client-id default applies");
    set_rate(&mut admin, &[("user", Some("ANONYMOUS"))], 1e9).await;
    assert_eq!(throttle_of(&addr, "c").await, 0, "the user's quota beats the client-id default");
    set_rate(&mut admin, &[("user", Some("ANONYMOUS")), ("client-id", Some("d"))], 1024.0).await;
    assert!(throttle_of(&addr, "d").await > 0, "user + client-id beats the user's quota");
    assert_eq!(throttle_of(&addr, "e").await, 0, "other clients of the user keep the user's quota");
}

/// An ApiVersions v0 request; true when it is answered within `within`.
fn answered(s: &mut TcpStream, within: Duration) -> bool {
    let frame = [0u8, 0, 0, 10, 0, 18, 0, 0, 0, 0, 0, 1, 0, 0];
    if s.write_all(&frame).is_err() {
        return false;
    }
    let _ = s.set_read_timeout(Some(within));
    let mut len = [0u8; 4];
    s.read_exact(&mut len).is_ok()
}

/// `connection_creation_rate = 2` for 127.0.0.1: of 30 connections opened at once, those over
/// the rate (after the first windows' allowance of 2/s × 1 s here) are never read and are
/// closed after their throttle time; the rest are served. Counted in `/metrics`.
#[test]
fn connections_over_the_ip_creation_rate_are_throttled() {
    let broker = SkiffProcess::start_with_config(WINDOWS);
    let b = broker.bootstrap();
    configs(
        b,
        &[
            "--alter",
            "--entity-type",
            "ips",
            "--entity-name",
            "127.0.0.1",
            "--add-config",
            "connection_creation_rate=2",
        ],
    );
    std::thread::sleep(Duration::from_millis(2_100)); // let the tool's own connections age out
    let mut conns: Vec<TcpStream> = (0..30).map(|_| TcpStream::connect(b).expect("connect")).collect();
    let served = conns.iter_mut().map(|s| answered(s, Duration::from_millis(1_500))).filter(|a| *a).count();
    eprintln!("served {served} of 30 connections");
    assert!((1..=6).contains(&served), "served {served} of 30 connections at 2/s");
    let metrics = http_get(broker.http(), "/metrics").expect("metrics");
    let throttled = prometheus_value(&metrics, "skiff_connections_throttled_total").expect("metric");
    assert!(throttled >= 24.0, "{throttled} throttled: {metrics}");
}

/// A fresh connection as `client_id` (a throttled connection is muted for its throttle time,
/// so each step of the mutation test uses its own).
async fn client_as(addr: &str, client_id: &str) -> Client {
    let mut c = Client::connect(addr).await.expect("connect");
    c.set_client_id(client_id);
    c
}

async fn create_topics(addr: &str, client_id: &str, topics: &[(&str, i32)], version: i16) -> (Vec<(String, i16)>, i32) {
    let req = CreateTopicsRequest::default().with_timeout_ms(30_000).with_topics(
        topics
            .iter()
            .map(|(n, p)| {
                CreatableTopic::default().with_name(topic_name(n)).with_num_partitions(*p).with_replication_factor(1)
            })
            .collect(),
    );
    let resp = client_as(addr, client_id).await.send(&req, version).await.expect("CreateTopics");
    (resp.topics.iter().map(|t| (t.name.0.to_string(), t.error_code)).collect(), resp.throttle_time_ms)
}

/// KIP-599 `controller_mutation_rate = 1` (partitions/s) for one client id, with Kafka's
/// window of 11 × 1 s, so the bucket holds 11 partitions. Strict versions (CreateTopics v6+,
/// DeleteTopics v5+, CreatePartitions v3+): the topic that takes the bucket below zero is
/// created, the next ones get THROTTLING_QUOTA_EXCEEDED (89) with the time to refill to zero as
/// throttle_time_ms; an older CreateTopics is accepted and only throttled; other clients are
/// not charged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_mutation_rate_refuses_strict_versions_and_throttles_older_ones() {
    const THROTTLED: i16 = 89;
    let broker = SkiffProcess::start();
    let addr = broker.bootstrap().to_string();
    let mut admin = Client::connect(&addr).await.expect("connect");
    set_quota(&mut admin, &[("client-id", Some("mutator"))], "controller_mutation_rate", 1.0).await;

    let (codes, throttle) = create_topics(&addr, "mutator", &[("mut-a", 10), ("mut-b", 5), ("mut-c", 1)], 6).await;
    assert_eq!(codes, vec![("mut-a".into(), 0), ("mut-b".into(), 0), ("mut-c".into(), THROTTLED)], "{throttle}");
    // 11 - 10 - 5 = -4 tokens at 1/s: 4 s, less the time since it was computed.
    assert!((3_000..=4_000).contains(&throttle), "throttle_time_ms {throttle}");

    let req = DeleteTopicsRequest::default()
        .with_timeout_ms(30_000)
        .with_topics(vec![DeleteTopicState::default().with_name(Some(topic_name("mut-a")))]);
    let resp = client_as(&addr, "mutator").await.send(&req, 6).await.expect("DeleteTopics");
    assert_eq!(resp.responses.iter().map(|r| r.error_code).collect::<Vec<_>>(), vec![THROTTLED], "{resp:?}");
    assert!(resp.throttle_time_ms > 0, "{resp:?}");

    let req = CreatePartitionsRequest::default().with_timeout_ms(30_000).with_topics(vec![
        CreatePartitionsTopic::default().with_name(topic_name("mut-b")).with_count(6).with_assignments(None),
    ]);
    let resp = client_as(&addr, "mutator").await.send(&req, 3).await.expect("CreatePartitions");
    assert_eq!(resp.results.iter().map(|r| r.error_code).collect::<Vec<_>>(), vec![THROTTLED], "{resp:?}");

    // Permissive (v5): created all the same, and throttled for the deeper deficit.
    let (codes, throttle) = create_topics(&addr, "mutator", &[("mut-d", 2)], 5).await;
    assert_eq!(codes, vec![("mut-d".into(), 0)]);
    assert!(throttle > 3_000, "throttle_time_ms {throttle}");

    let (codes, throttle) = create_topics(&addr, "someone-else", &[("mut-e", 20)], 7).await;
    assert_eq!((codes, throttle), (vec![("mut-e".into(), 0)], 0), "another client id has no quota");
}
