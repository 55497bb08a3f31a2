//! Incremental fetch sessions (KIP-227) against `skiff dev`: the raw protocol (session ids,
//! epochs, errors 70 and 71, forgotten partitions, answers holding only partitions with news,
//! the long poll of an idle session, authorization of the session's partitions, KIP-392
//! preferred read replica and follower fetching inside sessions), real clients consuming many partitions through sessions
//! (Java kafka-clients and librdkafka), and what sessions save for a consumer of 1,000
//! partitions (bytes per fetch and broker CPU per fetch, printed).
//!
//! Regression (issue #18, scope 5): Skiff answered every fetch with session id 0, so clients
//! resent and the broker re-planned and re-answered every partition on every fetch.
#![allow(clippy::disallowed_methods)] // black-box tests wait and measure in real time; ids are test data

mod support;

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ForgottenTopic};
use kafka_protocol::messages::{FetchRequest, FetchResponse};
use kafka_protocol::protocol::Encodable;
use kafka_protocol::records::Compression;
use support::SkiffProcess;
use support::client::{Client, FETCH_VERSION, TestRecord, encode_batch, topic_name};
use support::cluster::http_get;

const TEST_TIMEOUT: Duration = Duration::from_secs(180);
const FETCH_SESSION_ID_NOT_FOUND: i16 = 70;
const INVALID_FETCH_SESSION_EPOCH: i16 = 71;

fn fetch(session_id: i32, epoch: i32, topic: &str, parts: &[(i32, i64)], max_wait_ms: i32) -> FetchRequest {
    let topics = if parts.is_empty() {
        Vec::new()
    } else {
        vec![
            FetchTopic::default().with_topic(topic_name(topic)).with_partitions(
                parts
                    .iter()
                    .map(|(p, offset)| {
                        FetchPartition::default()
                            .with_partition(*p)
                            .with_fetch_offset(*offset)
                            .with_partition_max_bytes(1 << 20)
                    })
                    .collect(),
            ),
        ]
    };
    FetchRequest::default()
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(50 << 20)
        .with_session_id(session_id)
        .with_session_epoch(epoch)
        .with_topics(topics)
}

fn forget(mut req: FetchRequest, topic: &str, partitions: Vec<i32>) -> FetchRequest {
    req.forgotten_topics_data =
        vec![ForgottenTopic::default().with_topic(topic_name(topic)).with_partitions(partitions)];
    req
}

/// (partition, has records) of every partition answered.
fn answered(r: &FetchResponse) -> Vec<(i32, bool)> {
    r.responses
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| (p.partition_index, p.records.as_ref().is_some_and(|b| !b.is_empty())))
        })
        .collect()
}

fn record(i: usize) -> bytes::Bytes {
    encode_batch(
        &[TestRecord::new(format!("k{i}"), format!("v{i}"), 1_700_000_000_000 + i as i64)],
        Compression::None,
        None,
    )
}

fn metric(broker: &SkiffProcess, name: &str) -> anyhow::Result<f64> {
    let text = http_get(broker.http(), "/metrics").context("GET /metrics")?;
    let line = text.lines().find(|l| l.starts_with(&format!("{name} "))).with_context(|| format!("{name} missing"))?;
    Ok(line[name.len() + 1..].trim().parse()?)
}

async fn run<F: std::future::Future<Output = anyhow::Result<()>>>(broker: &SkiffProcess, body: F) {
    match tokio::time::timeout(TEST_TIMEOUT, body).await {
        Err(_) => panic!("did not finish within {TEST_TIMEOUT:?}\n{}", broker.stderr_tail(30)),
        Ok(r) => r.unwrap_or_else(|e| panic!("{e:#}\n{}", broker.stderr_tail(30))),
    }
}

#[tokio::test]
async fn sessions_over_the_raw_protocol() {
    let mut broker = SkiffProcess::start();
    let topic = "sessions";
    let all: Vec<(i32, i64)> = (0..100).map(|p| (p, 0)).collect();
    let mut session = 0;
    run(&broker, async {
        let mut c = Client::connect(broker.bootstrap()).await?;
        let mut producer = Client::connect(broker.bootstrap()).await?;
        c.create_topic_ok(topic, 100).await?;

        // Before sessions (Fetch v6 has no session fields): id 0.
        let r = c.send(&fetch(0, -1, topic, &all, 0), 6).await?;
        ensure!(r.session_id == 0 && answered(&r).len() == 100, "v6: {:?}", (r.session_id, answered(&r).len()));

        // A full fetch with epoch 0 gets a session and every partition.
        let r = c.send(&fetch(0, 0, topic, &all, 0), FETCH_VERSION).await?;
        ensure!(r.error_code == 0 && r.session_id != 0, "full fetch: error {} session {}", r.error_code, r.session_id);
        ensure!(answered(&r).len() == 100, "full answer: {} partitions", answered(&r).len());
        session = r.session_id;
        ensure!(metric(&broker, "skiff_fetch_sessions")? == 1.0);
        ensure!(metric(&broker, "skiff_fetch_session_partitions")? == 100.0);

        // Nothing changed: the fetch long-polls to max_wait and answers no partition.
        let started = Instant::now();
        let r = c.send(&fetch(session, 1, topic, &[], 500), FETCH_VERSION).await?;
        let waited = started.elapsed();
        ensure!(r.error_code == 0 && r.session_id == session, "idle: {} {}", r.error_code, r.session_id);
        ensure!(answered(&r).is_empty(), "idle session answered {:?}", answered(&r));
        ensure!(waited >= Duration::from_millis(450), "idle incremental fetch answered after {waited:?}, not max_wait");

        // Data produced to one of the 100 partitions while the session waits: that one alone,
        // long before max_wait.
        let started = Instant::now();
        let waiting = fetch(session, 2, topic, &[], 10_000);
        let (r, produced) = tokio::join!(c.send(&waiting, FETCH_VERSION), async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            producer.produce_ok(topic, 42, record(42)).await
        });
        let (r, _) = (r?, produced?);
        ensure!(answered(&r) == vec![(42, true)], "after producing to 42: {:?}", answered(&r));
        ensure!(started.elapsed() < Duration::from_secs(5), "woken by the commit, not max_wait");

        // The client moved partition 42 past its record: nothing new.
        let r = c.send(&fetch(session, 3, topic, &[(42, 1)], 200), FETCH_VERSION).await?;
        ensure!(answered(&r).is_empty(), "after moving 42: {:?}", answered(&r));

        // A wrong epoch: 71, no partitions, and the session is untouched.
        let r = c.send(&fetch(session, 9, topic, &[], 0), FETCH_VERSION).await?;
        ensure!(
            r.error_code == INVALID_FETCH_SESSION_EPOCH && answered(&r).is_empty(),
            "wrong epoch: {}",
            r.error_code
        );
        // An unknown id: 70.
        let r = c.send(&fetch(session.wrapping_add(1), 1, topic, &[], 0), FETCH_VERSION).await?;
        ensure!(r.error_code == FETCH_SESSION_ID_NOT_FOUND && r.session_id == 0, "unknown id: {}", r.error_code);
        let r = c.send(&fetch(session, 4, topic, &[], 0), FETCH_VERSION).await?;
        ensure!(r.error_code == 0 && answered(&r).is_empty(), "epoch 4 after the errors: {}", r.error_code);

        // Forgotten partitions are dropped: records on one of them are not answered.
        let r = c.send(&forget(fetch(session, 5, topic, &[], 0), topic, (0..50).collect()), FETCH_VERSION).await?;
        ensure!(r.error_code == 0 && answered(&r).is_empty(), "forgetting: {:?}", answered(&r));
        ensure!(metric(&broker, "skiff_fetch_session_partitions")? == 50.0);
        producer.produce_ok(topic, 10, record(10)).await?;
        producer.produce_ok(topic, 60, record(60)).await?;
        let r = c.send(&fetch(session, 6, topic, &[], 2_000), FETCH_VERSION).await?;
        ensure!(answered(&r) == vec![(60, true)], "after forgetting 0..50: {:?}", answered(&r));

        // Closing (epoch -1): a sessionless answer of what the request names; the id is gone.
        let r = c.send(&fetch(session, -1, topic, &[(10, 0)], 0), FETCH_VERSION).await?;
        ensure!(r.session_id == 0 && answered(&r) == vec![(10, true)], "close: {:?}", answered(&r));
        let r = c.send(&fetch(session, 7, topic, &[], 0), FETCH_VERSION).await?;
        ensure!(r.error_code == FETCH_SESSION_ID_NOT_FOUND, "closed session: {}", r.error_code);

        // A new session for the restart below.
        let r = c.send(&fetch(0, 0, topic, &all, 0), FETCH_VERSION).await?;
        ensure!(r.session_id != 0, "second session");
        session = r.session_id;
        ensure!(metric(&broker, "skiff_fetch_session_incremental_total")? >= 6.0);
        Ok(())
    })
    .await;

    // Sessions live in the broker's memory: after a restart the client hears 70 and starts over.
    let status = broker.terminate();
    assert!(status.success(), "skiff exited with {status}");
    broker.restart();
    run(&broker, async {
        let mut c = Client::connect(broker.bootstrap()).await?;
        let r = c.send(&fetch(session, 1, topic, &[], 0), FETCH_VERSION).await?;
        ensure!(r.error_code == FETCH_SESSION_ID_NOT_FOUND, "after restart: {}", r.error_code);
        let r = c.send(&fetch(0, 0, topic, &all, 0), FETCH_VERSION).await?;
        ensure!(r.session_id != 0 && answered(&r).len() == 100, "a new full session after restart");
        Ok(())
    })
    .await;
}

/// Java kafka-clients (Kafka's console consumer) consumes 200 partitions through a session:
/// a first round in its full fetch, then a second round, produced once its incremental fetches
/// wait, through them. librdkafka (confluent-kafka) sends no sessions (its Fetch writes session
/// id 0, epoch -1: `rdkafka_fetcher.c`) and must consume the same way as before.
#[tokio::test]
async fn real_clients_consume_many_partitions_through_sessions() {
    const PARTITIONS: i32 = 200;
    let broker = SkiffProcess::start();
    run(&broker, async {
        let mut c = Client::connect(broker.bootstrap()).await?;
        for client in ["java", "librdkafka"] {
            let topic = format!("many-{client}");
            c.create_topic_ok(&topic, PARTITIONS).await?;
            for p in 0..PARTITIONS {
                c.produce_ok(&topic, p, record(p as usize)).await?;
            }
            let before = metric(&broker, "skiff_fetch_session_incremental_total")?;
            let consumer = {
                let (bootstrap, topic) = (broker.bootstrap().to_string(), topic.clone());
                tokio::task::spawn_blocking(move || consume(client, &bootstrap, &topic, 2 * PARTITIONS as usize))
            };
            // The second round once the consumer has read the first and waits in its session.
            let waiting = Instant::now();
            if client == "java" {
                while metric(&broker, "skiff_fetch_session_incremental_total")? == before {
                    ensure!(waiting.elapsed() < Duration::from_secs(90), "java never fetched incrementally");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            } else {
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            for p in 0..PARTITIONS {
                c.produce_ok(&topic, p, record((PARTITIONS + p) as usize)).await?;
            }
            let mut values = consumer.await??;
            values.sort_unstable_by_key(|v| v[1..].parse::<usize>().unwrap_or(usize::MAX));
            let expected: Vec<String> = (0..2 * PARTITIONS as usize).map(|i| format!("v{i}")).collect();
            ensure!(
                values == expected,
                "{client} consumed {} records: {:?}...",
                values.len(),
                &values[..values.len().min(5)]
            );
            let incremental = metric(&broker, "skiff_fetch_session_incremental_total")? - before;
            ensure!(client != "java" || incremental > 0.0, "{client} made no incremental fetch");
            eprintln!(
                "{client}: {} records of {PARTITIONS} partitions, {incremental} incremental fetches",
                values.len()
            );
        }
        Ok(())
    })
    .await;
}

/// The values `client` consumes from every partition of `topic` from offset 0 until it has `n`.
fn consume(client: &str, bootstrap: &str, topic: &str, n: usize) -> anyhow::Result<Vec<String>> {
    let out = match client {
        "java" => support::kafka_cli::run_with_timeout(
            "org.apache.kafka.tools.consumer.ConsoleConsumer",
            &[
                "--bootstrap-server",
                bootstrap,
                "--topic",
                topic,
                "--from-beginning",
                "--max-messages",
                &n.to_string(),
                "--timeout-ms",
                "60000",
            ],
            Duration::from_secs(120),
        )?
        .ok("console consumer")?,
        _ => {
            let venv = std::path::PathBuf::from(
                std::env::var("SKIFF_CACHE")
                    .unwrap_or_else(|_| format!("{}/.cache/skiff", std::env::var("HOME").unwrap_or_default())),
            )
            .join("compat/python-confluent/venv/bin/python");
            ensure!(venv.exists(), "{} missing: run tests/compat/python-confluent/setup.sh", venv.display());
            let script = r#"
import sys, time
from confluent_kafka import Consumer, TopicPartition
bootstrap, topic, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
c = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False})
md = c.list_topics(topic, timeout=30).topics[topic]
c.assign([TopicPartition(topic, p, 0) for p in md.partitions])
got, deadline = [], time.time() + 90
while len(got) < n and time.time() < deadline:
    m = c.poll(1.0)
    if m is None:
        continue
    if m.error():
        sys.exit(f"error: {m.error()}")
    got.append(m.value().decode())
c.close()
print("\n".join(got))
"#;
            let output = std::process::Command::new("timeout")
                .args(["-k", "5", "120"])
                .arg(venv)
                .args(["-c", script, bootstrap, topic, &n.to_string()])
                .output()?;
            ensure!(output.status.success(), "librdkafka consumer: {}", String::from_utf8_lossy(&output.stderr));
            String::from_utf8(output.stdout)?
        }
    };
    Ok(out.lines().filter(|l| l.starts_with('v')).map(str::to_string).collect())
}

/// A consumer of 1,000 partitions, caught up and idle: bytes per fetch and broker CPU per fetch
/// without a session (what every client got before: session id 0, full fetches) and with one.
/// Prints the figures docs/architecture.md quotes.
#[tokio::test]
async fn sessions_save_bytes_and_cpu_for_a_consumer_of_1000_partitions() {
    const PARTITIONS: i32 = 1000;
    const FETCHES: usize = 200;
    let broker = SkiffProcess::start();
    let topic = "thousand";
    let pid = broker.pid().expect("running");
    run(&broker, async {
        let mut c = Client::connect(broker.bootstrap()).await?;
        c.create_topic_ok(topic, PARTITIONS).await?;
        for p in (0..PARTITIONS).step_by(10) {
            c.produce_ok(topic, p, record(p as usize)).await?;
        }
        // Caught up: each partition at its high watermark.
        let ends: Vec<(i32, i64)> = (0..PARTITIONS).map(|p| (p, i64::from(p % 10 == 0))).collect();
        let zero_wait = |r: FetchRequest| r.with_max_wait_ms(0).with_min_bytes(0);

        let full = zero_wait(fetch(0, -1, topic, &ends, 0));
        let (full_req, cpu_before) = (full.compute_size(FETCH_VERSION)?, cpu_ms(pid)?);
        let mut full_resp = 0;
        for _ in 0..FETCHES {
            let r = c.send(&full, FETCH_VERSION).await?;
            ensure!(answered(&r).len() == PARTITIONS as usize);
            full_resp = r.compute_size(FETCH_VERSION)?;
        }
        let full_cpu = (cpu_ms(pid)? - cpu_before) / FETCHES as f64;

        let r = c.send(&zero_wait(fetch(0, 0, topic, &ends, 0)), FETCH_VERSION).await?;
        ensure!(r.session_id != 0, "no session");
        let (id, cpu_before) = (r.session_id, cpu_ms(pid)?);
        let (mut inc_req, mut inc_resp) = (0, 0);
        for epoch in 1..=FETCHES as i32 {
            let req = zero_wait(fetch(id, epoch, topic, &[], 0));
            inc_req = req.compute_size(FETCH_VERSION)?;
            let r = c.send(&req, FETCH_VERSION).await?;
            ensure!(r.error_code == 0 && answered(&r).is_empty(), "incremental {epoch}: {}", r.error_code);
            inc_resp = r.compute_size(FETCH_VERSION)?;
        }
        let inc_cpu = (cpu_ms(pid)? - cpu_before) / FETCHES as f64;
        eprintln!(
            "fetch of {PARTITIONS} idle partitions, {FETCHES} each: sessionless request {full_req} B, response {full_resp} B, \
             broker CPU {full_cpu:.3} ms/fetch; incremental request {inc_req} B, response {inc_resp} B, broker CPU {inc_cpu:.3} ms/fetch"
        );
        ensure!(inc_req * 100 < full_req && inc_resp * 100 < full_resp, "sessions must save bytes");
        Ok(())
    })
    .await;
}

/// The broker process's user + system CPU time so far, in ms (`/proc/<pid>/stat`).
fn cpu_ms(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name: state is 3rd, utime 14th, stime 15th.
    let rest = stat.rsplit_once(')').context("stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    // USER_HZ is 100 on Linux.
    Ok(ticks * 10.0)
}

/// KIP-392 inside sessions, on 3 brokers in 3 racks (`support::cluster`, MinIO): the leader's
/// session answers a consumer of another rack with `preferred_read_replica` on every fetch, full
/// and incremental (Kafka always sends a computed preferred replica); that rack's broker serves
/// the partition in its own session, whose incremental fetches answer only new records.
#[test]
fn preferred_read_replica_and_follower_fetching_inside_sessions() {
    use support::cluster::{Cluster, ClusterSpec, NodeRef};
    let mut cluster =
        Cluster::start(ClusterSpec::new("fetch-sessions-racks", 3, 3).with_racks(&["az-a", "az-b", "az-c"]));
    let topic = "racked";
    cluster.create_topic(topic, 3).expect("create topic");
    let addr = |id: i32| cluster.kafka_addr(NodeRef::Broker(id)).expect("running broker");
    let rack = |id: i32| cluster.rack_of(NodeRef::Broker(id)).expect("a rack").to_string();
    let brokers: Vec<i32> = cluster.broker_refs().into_iter().map(|b| b.id()).collect();
    let any = addr(brokers[0]);
    let checked: anyhow::Result<()> = cluster.block_on(async {
        let mut c = Client::connect(&any).await?;
        let m = c.metadata(Some(&[topic])).await?;
        let t = m.topics.into_iter().next().context("no topic")?;
        let p = t.partitions.first().context("no partition")?;
        let (partition, leader) = (p.partition_index, p.leader_id.0);
        let follower = *brokers.iter().find(|b| **b != leader).context("another broker")?;
        let consumer_rack = rack(follower);
        let with_rack =
            |r: FetchRequest| r.with_rack_id(kafka_protocol::protocol::StrBytes::from_string(consumer_rack.clone()));
        let mut l = Client::connect(&addr(leader)).await?;
        l.produce_ok(topic, partition, record(1)).await?;

        // At the leader: redirected in the full fetch and again in the incremental one.
        let r = l.send(&with_rack(fetch(0, 0, topic, &[(partition, 0)], 0)), FETCH_VERSION).await?;
        ensure!(r.session_id != 0, "no session at the leader");
        let redirect = r.responses[0].partitions[0].preferred_read_replica.0;
        ensure!(redirect == follower, "full: preferred_read_replica {redirect}, expected {follower}");
        let r = l.send(&with_rack(fetch(r.session_id, 1, topic, &[], 0)), FETCH_VERSION).await?;
        ensure!(answered(&r) == vec![(partition, false)], "incremental at the leader: {:?}", answered(&r));
        ensure!(r.responses[0].partitions[0].preferred_read_replica.0 == follower, "incremental: not redirected");

        // At the rack's broker: served in a session; idle is empty; a new record alone.
        let mut f = Client::connect(&addr(follower)).await?;
        let r = f.send(&with_rack(fetch(0, 0, topic, &[(partition, 0)], 5_000)), FETCH_VERSION).await?;
        ensure!(r.session_id != 0 && answered(&r) == vec![(partition, true)], "follower full: {:?}", answered(&r));
        let id = r.session_id;
        let r = f.send(&with_rack(fetch(id, 1, topic, &[(partition, 1)], 300)), FETCH_VERSION).await?;
        ensure!(r.error_code == 0 && answered(&r).is_empty(), "follower idle: {:?}", answered(&r));
        l.produce_ok(topic, partition, record(2)).await?;
        let r = f.send(&with_rack(fetch(id, 2, topic, &[], 10_000)), FETCH_VERSION).await?;
        ensure!(answered(&r) == vec![(partition, true)], "follower after produce: {:?}", answered(&r));
        ensure!(r.responses[0].partitions[0].high_watermark == 2, "follower high watermark");
        Ok(())
    });
    checked.unwrap_or_else(|e| panic!("{e:#}"));
}

/// Authorization covers the whole session: a partition the incremental request does not name
/// is still checked on every fetch (Kafka's `fetchContext.foreachPartition`), so a topic whose
/// Read is taken away mid-session answers TOPIC_AUTHORIZATION_FAILED (29), not its records.
#[tokio::test]
async fn a_session_partition_that_becomes_unreadable_is_refused() {
    use kafka_protocol::messages::CreateAclsRequest;
    use kafka_protocol::messages::create_acls_request::AclCreation;
    let broker = SkiffProcess::start();
    run(&broker, async {
        let mut c = Client::connect(broker.bootstrap()).await?;
        for t in ["readable", "revoked"] {
            c.create_topic_ok(t, 1).await?;
            c.produce_ok(t, 0, record(0)).await?;
        }
        let mut full = fetch(0, 0, "readable", &[(0, 0)], 0);
        full.topics.extend(fetch(0, 0, "revoked", &[(0, 0)], 0).topics);
        let r = c.send(&full, FETCH_VERSION).await?;
        ensure!(r.session_id != 0 && r.responses.len() == 2, "full: {:?}", answered(&r));
        // An ACL naming the topic for someone else: User:ANONYMOUS may no longer read it.
        let acl = AclCreation::default()
            .with_resource_type(2) // TOPIC
            .with_resource_name("revoked".to_string().into())
            .with_resource_pattern_type(3) // LITERAL
            .with_principal("User:someone".to_string().into())
            .with_host("*".to_string().into())
            .with_operation(3) // READ
            .with_permission_type(3); // ALLOW
        let created = c.send(&CreateAclsRequest::default().with_creations(vec![acl]), 3).await?;
        ensure!(created.results.iter().all(|r| r.error_code == 0), "CreateAcls: {:?}", created.results);
        let r = c.send(&fetch(r.session_id, 1, "readable", &[], 0).with_min_bytes(0), FETCH_VERSION).await?;
        ensure!(r.error_code == 0, "incremental: {}", r.error_code);
        let revoked = r
            .responses
            .iter()
            .find(|t| t.topic.0.as_str() == "revoked")
            .and_then(|t| t.partitions.first())
            .context("the revoked topic's partition is not answered")?;
        ensure!(revoked.error_code == 29, "revoked: error {}", revoked.error_code);
        ensure!(revoked.records.as_ref().is_none_or(|b| b.is_empty()), "revoked: records served");
        Ok(())
    })
    .await;
}
