//! Consumer groups in a cluster (issue: consumer groups that survive broker failure), with the
//! Java client (kafka-clients 4.x) as the group member and the multi-process harness
//! (tests/support/cluster.rs): 3 controllers, 3 brokers, MinIO.
//!
//! 1. The group's coordinator broker is SIGKILLed mid-consumption, once for a classic-protocol
//!    group and once (after the broker came back) for a KIP-848 consumer-protocol group. The
//!    member (committing after every poll of at most 100 records) must resume without skipping
//!    anything; duplicates are allowed only for records after its last commit (at most one
//!    poll). Prints how long the group took to resume (SIGKILL → first commit completed after
//!    it).
//! 2. Then the whole cluster (brokers and controllers) is stopped and started again: both
//!    groups' committed offsets read back equal the end offsets.
//!
//! Needs the Java compat program (tests/compat/setup.sh) and MinIO (tests/support/minio.rs).
#![allow(clippy::disallowed_methods)] // black-box tests wait and measure in real time; ids are test data

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail, ensure};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use support::client::{Client, LATEST, topic_name};
use support::cluster::{Cluster, ClusterSpec};
use support::compat;

const RECORDS: u32 = 12_000;
const MAX_POLL_RECORDS: u64 = 100;
const CONSUME_TIMEOUT: Duration = Duration::from_secs(180);

fn now_ms() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0)
}

/// The broker id FindCoordinator names for `group`.
async fn coordinator_of(bootstrap: &str, group: &str) -> anyhow::Result<(i32, String)> {
    let first = bootstrap.split(',').next().context("empty bootstrap")?;
    let mut c = Client::connect(first).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let req = FindCoordinatorRequest::default().with_key(StrBytes::from_string(group.to_string()));
        let r = c.send(&req, 3).await?;
        if r.error_code == 0 {
            return Ok((r.node_id.0, format!("{}:{}", r.host, r.port)));
        }
        if Instant::now() > deadline {
            bail!("FindCoordinator({group}) kept failing: {r:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// (committed offsets by partition, end offsets by partition) of `group` on `topic`.
async fn committed_and_ends(
    bootstrap: &str,
    group: &str,
    topic: &str,
    partitions: i32,
) -> anyhow::Result<(Vec<i64>, Vec<i64>)> {
    let (_, coordinator) = coordinator_of(bootstrap, group).await?;
    let mut c = Client::connect(&coordinator).await?;
    let req = OffsetFetchRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
        .with_topics(Some(vec![
            OffsetFetchRequestTopic::default()
                .with_name(topic_name(topic))
                .with_partition_indexes((0..partitions).collect()),
        ]));
    let r = c.send(&req, 7).await?;
    ensure!(r.error_code == 0, "OffsetFetch: {r:?}");
    let mut committed = vec![-1; partitions as usize];
    for t in &r.topics {
        for p in &t.partitions {
            ensure!(p.error_code == 0, "OffsetFetch partition: {p:?}");
            committed[p.partition_index as usize] = p.committed_offset;
        }
    }
    let mut ends = Vec::new();
    for p in 0..partitions {
        // Any broker answers ListOffsets from its metadata image.
        let first = bootstrap.split(',').next().context("empty bootstrap")?;
        let mut c = Client::connect(first).await?;
        let (error, offset, _) = c.list_offset(topic, p, LATEST).await?;
        ensure!(error == 0, "ListOffsets {topic}-{p}: error {error}");
        ends.push(offset);
    }
    Ok((committed, ends))
}

/// Consumes `topic` (already produced) with one Java member of `group` using `protocol`, kills
/// the group's coordinator a third of the way in, checks nothing was skipped and duplicates are
/// bounded, and returns the resume time in ms.
fn consume_through_coordinator_kill(cluster: &mut Cluster, topic: &str, group: &str, protocol: &str) -> u128 {
    let bootstrap = cluster.bootstrap();
    let (coordinator, _) = cluster.block_on(coordinator_of(&bootstrap, group)).expect("find coordinator");
    let victim = cluster
        .broker_refs()
        .into_iter()
        .find(|b| b.id() == coordinator)
        .unwrap_or_else(|| panic!("coordinator {coordinator} is not one of the brokers"));
    cluster.event(format!("group {group} ({protocol}) is coordinated by {victim}"));

    let mut child = Command::new("bash")
        .arg(compat::run_sh("java"))
        .env("BOOTSTRAP", &bootstrap)
        .env("TOPIC", topic)
        .env("GROUP", group)
        .env("GROUP_PROTOCOL", protocol)
        .env("MODE", "failover-consume")
        .env("POLL_PAUSE_MS", "20")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the Java consumer");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + CONSUME_TIMEOUT;
    let mut killed_at_ms = None;
    let mut stalls = Vec::new();
    let mut result = None;
    while result.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                if let Some(n) = line.strip_prefix("progress consumed=") {
                    let n: u32 = n.trim().parse().unwrap_or(0);
                    if killed_at_ms.is_none() && n >= RECORDS / 3 {
                        killed_at_ms = Some(now_ms());
                        cluster.kill(victim);
                    }
                } else if let Some(rest) = line.strip_prefix("commit-stall ") {
                    stalls.push(rest.to_string());
                } else if line.starts_with("failover-consume ok") {
                    result = Some(line);
                }
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                panic!(
                    "{protocol}: the Java consumer did not finish within {CONSUME_TIMEOUT:?} (stalls {stalls:?})\n{err}"
                );
            }
        }
    }
    let status = child.wait().expect("wait for the Java consumer");
    let line = result.expect("loop ends with a result");
    assert!(status.success(), "{protocol}: java consumer failed: {line}");
    let killed_at_ms = killed_at_ms.expect("the coordinator was killed midway");
    let field = |name: &str| -> u64 {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {line:?}"))
    };
    assert_eq!(field("skipped"), 0, "{protocol}: records skipped: {line}");
    assert!(field("duplicates") <= MAX_POLL_RECORDS, "{protocol}: more duplicates than one uncommitted poll: {line}");
    // Resumed = the first commit that ended after the kill (a stall line when it took > 200 ms;
    // none means every commit after the kill took less than that).
    let resumed_ms = stalls
        .iter()
        .filter_map(|s| {
            let end: u128 = s.split_whitespace().find_map(|kv| kv.strip_prefix("end_ms="))?.parse().ok()?;
            (end > killed_at_ms).then(|| end - killed_at_ms)
        })
        .min()
        .unwrap_or(0);
    println!(
        "coordinator failover ({protocol}): group resumed {resumed_ms} ms after SIGKILL of its coordinator \
         (broker {coordinator}); {line}"
    );
    assert!(resumed_ms < 20_000, "{protocol}: group took {resumed_ms} ms to resume");
    resumed_ms
}

#[test]
fn groups_survive_coordinator_kill_and_offsets_survive_full_restart() {
    let mut cluster = Cluster::start(ClusterSpec::new("groups", 3, 3));
    let runs = [("groups-classic", "classic"), ("groups-consumer", "consumer")];
    for (topic, protocol) in runs {
        // MODE=produce creates the topic (3 partitions), produces RECORDS and verifies them.
        compat::run_java(&cluster.bootstrap(), topic, "produce", RECORDS).expect("produce with the Java client");
        consume_through_coordinator_kill(&mut cluster, topic, &format!("{topic}-failover"), protocol);
        // The killed broker comes back before the next round.
        cluster.heal();
    }

    // Whole-cluster restart: offsets must come back.
    for b in cluster.broker_refs() {
        cluster.terminate(b);
    }
    for c in cluster.controller_refs() {
        cluster.terminate(c);
    }
    cluster.heal();
    let bootstrap = cluster.bootstrap();
    for (topic, _) in runs {
        let group = format!("{topic}-failover");
        let (committed, ends) = cluster
            .block_on(async {
                // Coordinators come back with the shards; retry until one answers.
                let deadline = Instant::now() + Duration::from_secs(60);
                loop {
                    match committed_and_ends(&bootstrap, &group, topic, 3).await {
                        Ok(r) => return Ok::<_, anyhow::Error>(r),
                        Err(e) if Instant::now() < deadline => {
                            eprintln!("after restart: {e:#}; retrying");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                        Err(e) => return Err(e),
                    }
                }
            })
            .expect("committed offsets after a full restart");
        assert_eq!(ends.iter().sum::<i64>(), i64::from(RECORDS), "{topic}: end offsets {ends:?}");
        assert_eq!(committed, ends, "{topic}: committed offsets after a full cluster restart");
    }
}
