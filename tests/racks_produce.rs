//! Zero cross-zone produce (issue #17 point 3, RFC 0005 "Produce"): 1 `skiff controller` + 4
//! `skiff broker` processes on loopback with MinIO, brokers in racks az-a, az-a, az-b, az-c
//! (`ClusterSpec::with_racks`).
//!
//! - `metadata_routes_a_racked_client_to_its_rack`: Metadata names, for a client whose
//!   `client.id` carries `skiff_rack=<rack>`, a broker of that rack as every partition's leader;
//!   a client without it sees the real leaders.
//! - `a_retry_through_another_broker_of_the_rack_gets_the_original_offset`: an idempotent
//!   batch produced through one rack-a broker for a partition led in rack b, then sent again
//!   through the other rack-a broker (a client retry after losing its connection), is answered
//!   with the original offset and stored once; a broker without the client's token refuses it
//!   (NOT_LEADER_OR_FOLLOWER, as before).
//! - `producers_in_three_racks_send_no_bytes_across_racks`: one Java producer (Kafka's
//!   `VerifiableProducer`, kafka-clients 4.4, idempotent, acks=all) per rack, one rack-a broker
//!   SIGKILLed while they run: every broker's `skiff_client_bytes_total{direction="in",
//!   same_rack="false"}` stays 0 (scraped from the killed one just before the kill), every
//!   acknowledged record is stored exactly once, at the offset it was acknowledged with, in each
//!   producer's order.
//!
//! - `without_zone_produce_racks_route_nothing`: the same racks without `zone_produce` (the
//!   default) route nothing and forward nothing.
//!
//! Needs Kafka's tools (tests/support/kafka_cli.rs). One cluster at a time; every wait is
//! bounded.
#![allow(clippy::disallowed_methods)] // black-box tests wait and measure in real time

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use kafka_protocol::records::Compression;
use support::client::{Client, Idempotence, TestRecord, encode_batch};
use support::cluster::{Cluster, ClusterSpec, NodeRef, http_get};
use support::kafka_cli;

static SERIAL: Mutex<()> = Mutex::new(());

const RACKS: [&str; 4] = ["az-a", "az-a", "az-b", "az-c"];
const TOPIC: &str = "zoned";
const PARTITIONS: i32 = 6;
const VERIFIABLE_PRODUCER: &str = "org.apache.kafka.tools.VerifiableProducer";

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn start(name: &str) -> Cluster {
    start_with(name, true)
}

/// `zone_produce`: the brokers' `SKIFF_ZONE_PRODUCE` (off by default).
fn start_with(name: &str, zone_produce: bool) -> Cluster {
    let mut spec = ClusterSpec::new(name, 1, RACKS.len()).with_racks(&RACKS);
    spec.broker_env.push(("SKIFF_ZONE_PRODUCE".into(), zone_produce.to_string()));
    let mut cluster = Cluster::start(spec);
    cluster.create_topic(TOPIC, PARTITIONS).expect("create topic");
    cluster.wait_topic_ready(TOPIC, PARTITIONS, Duration::from_secs(30)).expect("topic ready");
    cluster
}

fn brokers_in(cluster: &Cluster, rack: &str) -> Vec<NodeRef> {
    cluster.broker_refs().into_iter().filter(|b| cluster.rack_of(*b) == Some(rack)).collect()
}

fn client_id(rack: &str) -> String {
    format!("zone-test,skiff_rack={rack}")
}

/// (client rack, same_rack) → bytes of `skiff_client_bytes_total{direction="in"}`.
fn rack_bytes_in(cluster: &Cluster, broker: NodeRef) -> anyhow::Result<BTreeMap<(String, String), f64>> {
    let base = cluster.http_base(broker).context("broker has an HTTP listener")?;
    let body = http_get(&base, "/metrics").context("scraping /metrics")?;
    let mut out = BTreeMap::new();
    for line in body.lines().filter(|l| l.starts_with("skiff_client_bytes_total{")) {
        let (labels, value) = line.rsplit_once(' ').context("a sample")?;
        let label = |name: &str| -> String {
            labels
                .split(&format!("{name}=\""))
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .unwrap_or_default()
                .to_string()
        };
        if label("direction") == "in" {
            *out.entry((label("client_rack"), label("same_rack"))).or_default() += value.parse::<f64>()?;
        }
    }
    Ok(out)
}

/// Fails if `broker` received produced bytes from a client of another rack.
fn assert_no_cross_rack(cluster: &Cluster, broker: NodeRef) -> anyhow::Result<f64> {
    let bytes = rack_bytes_in(cluster, broker)?;
    let cross: f64 = bytes.iter().filter(|((_, same), _)| same != "true").map(|(_, v)| v).sum();
    ensure!(cross == 0.0, "{broker} ({:?}) received bytes across racks: {bytes:?}", cluster.rack_of(broker));
    Ok(bytes.values().sum())
}

#[test]
fn metadata_routes_a_racked_client_to_its_rack() {
    let _one = serial();
    let cluster = start("racks-produce-metadata");
    let all = cluster.metadata(TOPIC).expect("metadata");
    let leaders: BTreeSet<i32> = all.partitions.iter().map(|p| p.leader_id).collect();
    assert!(leaders.len() > 1, "partitions spread over several brokers: {leaders:?}");
    for rack in ["az-a", "az-b", "az-c"] {
        let local: BTreeSet<i32> = brokers_in(&cluster, rack).iter().map(|b| b.id()).collect();
        for b in cluster.broker_refs() {
            let addr = cluster.kafka_addr(b).expect("running");
            let routed = cluster
                .block_on(async {
                    let mut c = Client::connect(&addr).await?;
                    c.set_client_id(&client_id(rack));
                    c.topic_metadata(TOPIC).await
                })
                .expect("metadata");
            for p in &routed.partitions {
                assert!(
                    local.contains(&p.leader_id),
                    "{b} names {} for {TOPIC}-{} to a client in {rack} (brokers there: {local:?})",
                    p.leader_id,
                    p.partition
                );
                let real = all.partition(p.partition).expect("partition");
                assert_eq!(p.leader_epoch, real.leader_epoch, "the real leader epoch is kept");
            }
            // Without the token: the real leaders, as before.
            let plain = cluster
                .block_on(async {
                    let mut c = Client::connect(&addr).await?;
                    c.topic_metadata(TOPIC).await
                })
                .expect("metadata");
            let plain: Vec<i32> = plain.partitions.iter().map(|p| p.leader_id).collect();
            assert_eq!(plain, all.partitions.iter().map(|p| p.leader_id).collect::<Vec<_>>());
        }
    }
}

/// Racks alone (KIP-392 follower fetching) open no zone endpoint: without `zone_produce` a
/// client with the token sees the real leaders and a broker of its rack refuses a produce for
/// a partition led in another rack, as without racks.
#[test]
fn without_zone_produce_racks_route_nothing() {
    let _one = serial();
    let cluster = start_with("racks-produce-off", false);
    let all = cluster.metadata(TOPIC).expect("metadata");
    let rack_a = brokers_in(&cluster, "az-a");
    let addr = cluster.kafka_addr(rack_a[0]).expect("up");
    let partition = all
        .partitions
        .iter()
        .find(|p| !rack_a.iter().any(|b| b.id() == p.leader_id))
        .expect("a partition led outside rack a")
        .partition;
    let result: anyhow::Result<()> = cluster.block_on(async {
        let mut c = Client::connect(&addr).await?;
        c.set_client_id(&client_id("az-a"));
        let routed = c.topic_metadata(TOPIC).await?;
        let routed: Vec<i32> = routed.partitions.iter().map(|p| p.leader_id).collect();
        ensure!(routed == all.partitions.iter().map(|p| p.leader_id).collect::<Vec<_>>(), "routed: {routed:?}");
        let batch = encode_batch(&[TestRecord::new("k", "v", 1)], Compression::None, None);
        let refused = c.produce(TOPIC, partition, batch).await?;
        ensure!(refused.error_code == 6, "NOT_LEADER_OR_FOLLOWER: {refused:?}");
        Ok(())
    });
    result.expect("racks without zone_produce");
}

#[test]
fn a_retry_through_another_broker_of_the_rack_gets_the_original_offset() {
    let _one = serial();
    let cluster = start("racks-produce-retry");
    let meta = cluster.metadata(TOPIC).expect("metadata");
    let rack_a = brokers_in(&cluster, "az-a");
    let partition = meta
        .partitions
        .iter()
        .find(|p| !rack_a.iter().any(|b| b.id() == p.leader_id))
        .expect("a partition led outside rack a")
        .partition;
    let (first, second) = (cluster.kafka_addr(rack_a[0]).expect("up"), cluster.kafka_addr(rack_a[1]).expect("up"));
    let result: anyhow::Result<()> = cluster.block_on(async {
        let mut c1 = Client::connect(&first).await?;
        c1.set_client_id(&client_id("az-a"));
        let (producer_id, producer_epoch) = c1.init_producer_id().await?;
        let idem = Idempotence { producer_id, producer_epoch, base_sequence: 0 };
        let batch = encode_batch(
            &[TestRecord::new("k", "once", 1), TestRecord::new("k", "only", 2)],
            Compression::None,
            Some(idem),
        );
        // Without the token the broker is not the leader, as before.
        let mut plain = Client::connect(&first).await?;
        let refused = plain.produce(TOPIC, partition, batch.clone()).await?;
        ensure!(refused.error_code == 6, "NOT_LEADER_OR_FOLLOWER without the token: {refused:?}");
        let original = c1.produce_ok(TOPIC, partition, batch.clone()).await?;
        let mut c2 = Client::connect(&second).await?;
        c2.set_client_id(&client_id("az-a"));
        let retried = c2.produce(TOPIC, partition, batch.clone()).await?;
        ensure!(retried.error_code == 0 && retried.base_offset == original, "duplicate answered: {retried:?}");
        let leader = meta.leader(partition).context("leader")?.1.to_string();
        let (records, end) = Client::connect(&leader).await?.fetch_all(TOPIC, partition, 0).await?;
        ensure!(end == original + 2 && records.len() == 2, "stored once: end {end}, {records:?}");
        Ok(())
    });
    result.expect("retry through another rack-a broker");
}

/// One running `VerifiableProducer` writing its JSON lines to a file.
struct Producer {
    rack: &'static str,
    prefix: u32,
    child: std::process::Child,
    out: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

fn spawn_producer(bootstrap: &str, rack: &'static str, prefix: u32, records: u32) -> anyhow::Result<Producer> {
    let libs = kafka_cli::libs()?;
    let dir = tempfile::Builder::new().prefix("skiff-zone-producer-").tempdir()?;
    let config = dir.path().join("producer.properties");
    std::fs::write(
        &config,
        format!("client.id={}\nenable.idempotence=true\nacks=all\nretries=2147483647\nlinger.ms=5\n", client_id(rack)),
    )?;
    let out = dir.path().join("stdout");
    let log4j = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/kafka/log4j2-tools.properties");
    let java = std::env::var("JAVA_HOME").map(|h| format!("{h}/bin/java")).unwrap_or_else(|_| "java".into());
    let child = Command::new(java)
        .arg("-Xmx192m")
        .arg(format!("-Dlog4j2.configurationFile={}", log4j.display()))
        .arg("-cp")
        .arg(format!("{}/*", libs.display()))
        .arg(VERIFIABLE_PRODUCER)
        .args(["--bootstrap-server", bootstrap, "--topic", TOPIC, "--acks", "-1"])
        .args(["--max-messages", &records.to_string(), "--throughput", "1000"])
        .args(["--value-prefix", &prefix.to_string()])
        .arg("--command-config")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out)?)
        .stderr(std::fs::File::create(dir.path().join("stderr"))?)
        .spawn()?;
    Ok(Producer { rack, prefix, child, out, _dir: dir })
}

/// (partition, offset) → value.
type Records = BTreeMap<(i32, i64), String>;

/// Every acknowledged send of `p`; its send errors as text.
fn acknowledged(p: &Producer) -> anyhow::Result<(Records, Vec<String>)> {
    let text = std::fs::read_to_string(&p.out)?;
    let mut acked = BTreeMap::new();
    let mut errors = Vec::new();
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        match v["name"].as_str() {
            Some("producer_send_success") => {
                let partition = v["partition"].as_i64().context("partition")? as i32;
                let offset = v["offset"].as_i64().context("offset")?;
                let value = v["value"].as_str().context("value")?.to_string();
                ensure!(acked.insert((partition, offset), value).is_none(), "offset acknowledged twice: {line}");
            }
            Some("producer_send_error") => errors.push(line.to_string()),
            _ => {}
        }
    }
    Ok((acked, errors))
}

#[test]
fn producers_in_three_racks_send_no_bytes_across_racks() {
    let _one = serial();
    let mut cluster = start("racks-produce");
    const RECORDS: u32 = 3000;
    let mut producers = Vec::new();
    for (i, rack) in ["az-a", "az-b", "az-c"].into_iter().enumerate() {
        let bootstrap: Vec<String> =
            brokers_in(&cluster, rack).into_iter().filter_map(|b| cluster.kafka_addr(b)).collect();
        producers.push(spawn_producer(&bootstrap.join(","), rack, i as u32 + 1, RECORDS).expect("producer"));
    }
    // A rack-a broker dies while every producer is running; the other rack-a broker takes over
    // rack a's produces, and the victim's partitions move (their produces from other racks are
    // forwarded to the new leaders).
    std::thread::sleep(Duration::from_millis(1500));
    let victim = brokers_in(&cluster, "az-a")[1];
    let led = cluster.metadata(TOPIC).expect("metadata").led_by(victim.id());
    eprintln!("killing {victim} (az-a), leader of {TOPIC} partitions {led:?}");
    let before = assert_no_cross_rack(&cluster, victim).expect("victim's metrics");
    cluster.kill(victim);
    let deadline = Instant::now() + Duration::from_secs(120);
    for p in &mut producers {
        loop {
            if let Some(status) = p.child.try_wait().expect("wait") {
                let stderr = std::fs::read_to_string(p._dir.path().join("stderr")).unwrap_or_default();
                let tail: Vec<&str> = stderr.lines().rev().take(20).collect();
                assert!(status.success(), "producer in {} failed ({status}): {}", p.rack, tail.join("\n"));
                break;
            }
            assert!(Instant::now() < deadline, "producer in {} did not finish", p.rack);
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    // Not one byte of a record crossed racks between a client and a broker.
    let mut received = before;
    for b in cluster.broker_refs().into_iter().filter(|b| *b != victim) {
        received += assert_no_cross_rack(&cluster, b).expect("no cross-rack bytes");
    }
    assert!(received > 0.0, "producers' bytes were counted");

    // Every acknowledged record is stored once, where it was acknowledged, in producer order.
    let meta = cluster.metadata(TOPIC).expect("metadata");
    let mut stored: BTreeMap<(i32, i64), String> = BTreeMap::new();
    for partition in 0..PARTITIONS {
        let (_, addr) = meta.leader(partition).expect("a leader");
        let addr = addr.to_string();
        let records = cluster
            .block_on(async {
                let mut c = Client::connect(&addr).await?;
                c.fetch_all(TOPIC, partition, 0).await
            })
            .expect("read back")
            .0;
        for r in records {
            let value = r.record.value.map(|v| String::from_utf8_lossy(&v).to_string()).unwrap_or_default();
            stored.insert((partition, r.offset), value);
        }
    }
    let mut seen = BTreeSet::new();
    for value in stored.values() {
        assert!(seen.insert(value.clone()), "value {value} stored twice");
    }
    for p in &producers {
        let (acked, errors) = acknowledged(p).expect("producer output");
        assert!(errors.is_empty(), "producer in {} failed sends: {:?}", p.rack, &errors[..errors.len().min(3)]);
        assert_eq!(acked.len(), RECORDS as usize, "producer in {} acknowledged every record", p.rack);
        for (at, value) in &acked {
            assert_eq!(stored.get(at), Some(value), "record acknowledged at {at:?} by the {} producer", p.rack);
        }
        // Per partition, this producer's values are in send order.
        let mut last: BTreeMap<i32, u64> = BTreeMap::new();
        for ((partition, offset), value) in &stored {
            let Some(n) = value.strip_prefix(&format!("{}.", p.prefix)) else { continue };
            let n: u64 = n.parse().expect("a counter");
            if let Some(prev) = last.insert(*partition, n) {
                assert!(n > prev, "{TOPIC}-{partition}@{offset}: {value} after {}.{prev}", p.prefix);
            }
        }
        eprintln!("producer in {}: {} records acknowledged, none across racks", p.rack, acked.len());
    }
    eprintln!("record bytes received from clients: {received} (cross-rack: 0)");
}
