//! `__consumer_offsets` served from the group state (issue #10): committed offsets and classic
//! group metadata read back as Kafka's own records, by the minimal client (decoding them with
//! the structure of Kafka's `OffsetCommitKey/Value` and `GroupMetadataKey/Value` schemas) and by
//! Kafka's `ConsoleConsumer` with its `OffsetsMessageFormatter` and
//! `GroupMetadataMessageFormatter`, as lag monitors and operators read the topic.

#![allow(clippy::disallowed_methods)] // black-box tests wait and measure in real time; ids are test data

mod support;

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use bytes::Bytes;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use skiff_controller::groups::shard_for;
use support::SkiffProcess;
use support::client::{Client, EARLIEST, LATEST, topic_name};
use support::cluster::{Cluster, ClusterSpec, NodeRef};
use support::kafka_cli;

const TEST_TIMEOUT: Duration = Duration::from_secs(120);
const TOPIC: &str = "__consumer_offsets";
const MEMBER_ID_REQUIRED: i16 = 79;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

async fn bounded<F: std::future::Future<Output = anyhow::Result<()>>>(name: &str, broker: &SkiffProcess, body: F) {
    match tokio::time::timeout(TEST_TIMEOUT, body).await {
        Err(_) => panic!("{name}: did not finish within {TEST_TIMEOUT:?} (broker {})", broker.bootstrap()),
        Ok(Err(e)) => panic!("{name}: {e:#} (broker {})", broker.bootstrap()),
        Ok(Ok(())) => {}
    }
}

/// OffsetCommit v8 of `(partition, offset)`s of `topic`, leader epoch 7, metadata `meta-<p>`.
async fn commit(
    c: &mut Client,
    group: &str,
    member: &str,
    generation: i32,
    topic: &str,
    offsets: &[(i32, i64)],
) -> anyhow::Result<()> {
    use offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
    let partitions = offsets
        .iter()
        .map(|(p, o)| {
            OffsetCommitRequestPartition::default()
                .with_partition_index(*p)
                .with_committed_offset(*o)
                .with_committed_leader_epoch(7)
                .with_committed_metadata(Some(s(&format!("meta-{p}"))))
        })
        .collect();
    let req = OffsetCommitRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(s(member))
        .with_topics(vec![
            OffsetCommitRequestTopic::default().with_name(topic_name(topic)).with_partitions(partitions),
        ]);
    let r = c.send(&req, 8).await?;
    let errors: Vec<i16> = r.topics.iter().flat_map(|t| t.partitions.iter().map(|p| p.error_code)).collect();
    ensure!(errors.iter().all(|e| *e == 0), "OffsetCommit {group}: {r:?}");
    Ok(())
}

/// Joins `group` alone as a classic consumer (session 60 s) and syncs an assignment: (member
/// id, generation).
async fn join_and_sync(c: &mut Client, group: &str) -> anyhow::Result<(String, i32)> {
    use join_group_request::JoinGroupRequestProtocol;
    let join = |member: &str| {
        JoinGroupRequest::default()
            .with_group_id(GroupId(s(group)))
            .with_session_timeout_ms(60_000)
            .with_rebalance_timeout_ms(30_000)
            .with_member_id(s(member))
            .with_protocol_type(s("consumer"))
            .with_protocols(vec![
                JoinGroupRequestProtocol::default()
                    .with_name(s("range"))
                    .with_metadata(Bytes::from_static(b"subscription")),
            ])
    };
    let r = c.send(&join(""), 9).await?;
    ensure!(r.error_code == MEMBER_ID_REQUIRED, "JoinGroup: {r:?}");
    let r = c.send(&join(&r.member_id), 9).await?;
    ensure!(r.error_code == 0, "JoinGroup: {r:?}");
    let member = r.member_id.to_string();
    let assignment = sync_group_request::SyncGroupRequestAssignment::default()
        .with_member_id(s(&member))
        .with_assignment(Bytes::from_static(b"assignment"));
    let sync = SyncGroupRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_generation_id(r.generation_id)
        .with_member_id(s(&member))
        .with_protocol_type(Some(s("consumer")))
        .with_protocol_name(Some(s("range")))
        .with_assignments(vec![assignment]);
    let sr = c.send(&sync, 5).await?;
    ensure!(sr.error_code == 0, "SyncGroup: {sr:?}");
    Ok((member, r.generation_id))
}

/// Reads fields as Kafka's generated `read(accessor, version)` does (non-flexible versions).
struct Reader(Bytes);

impl Reader {
    fn take(&mut self, n: usize) -> anyhow::Result<Bytes> {
        ensure!(self.0.len() >= n, "short record: want {n} bytes, have {}", self.0.len());
        Ok(self.0.split_to(n))
    }
    fn i16(&mut self) -> anyhow::Result<i16> {
        Ok(i16::from_be_bytes(self.take(2)?.as_ref().try_into()?))
    }
    fn i32(&mut self) -> anyhow::Result<i32> {
        Ok(i32::from_be_bytes(self.take(4)?.as_ref().try_into()?))
    }
    fn i64(&mut self) -> anyhow::Result<i64> {
        Ok(i64::from_be_bytes(self.take(8)?.as_ref().try_into()?))
    }
    fn nullable_string(&mut self) -> anyhow::Result<Option<String>> {
        let len = self.i16()?;
        if len < 0 {
            return Ok(None);
        }
        Ok(Some(String::from_utf8(self.take(len as usize)?.to_vec())?))
    }
    fn string(&mut self) -> anyhow::Result<String> {
        self.nullable_string()?.context("null non-nullable string")
    }
    fn bytes(&mut self) -> anyhow::Result<Bytes> {
        let len = self.i32()?;
        self.take(usize::try_from(len)?)
    }
    fn end(&self) -> anyhow::Result<()> {
        ensure!(self.0.is_empty(), "{} trailing bytes", self.0.len());
        Ok(())
    }
}

/// A `__consumer_offsets` record decoded by Kafka's schemas.
#[derive(Debug, Clone, PartialEq)]
enum Record {
    /// OffsetCommitKey (type 1) → OffsetCommitValue v3: (offset, leaderEpoch, metadata,
    /// commitTimestamp), `None` for a tombstone.
    Offset { group: String, topic: String, partition: i32, value: Option<(i64, i32, String, i64)> },
    /// GroupMetadataKey (type 2) → GroupMetadataValue v3.
    Group { group: String, value: Option<GroupValue> },
}

#[derive(Debug, Clone, PartialEq)]
struct GroupValue {
    protocol_type: String,
    generation: i32,
    protocol: Option<String>,
    leader: Option<String>,
    /// (memberId, clientId, sessionTimeout, subscription, assignment).
    members: Vec<(String, String, i32, Bytes, Bytes)>,
}

fn decode(key: Bytes, value: Option<Bytes>) -> anyhow::Result<Record> {
    let mut k = Reader(key);
    let record = match k.i16()? {
        1 => {
            let (group, topic, partition) = (k.string()?, k.string()?, k.i32()?);
            let value = match value {
                None => None,
                Some(v) => {
                    let mut v = Reader(v);
                    ensure!(v.i16()? == 3, "OffsetCommitValue version");
                    let out = (v.i64()?, v.i32()?, v.string()?, v.i64()?);
                    v.end()?;
                    Some(out)
                }
            };
            Record::Offset { group, topic, partition, value }
        }
        2 => {
            let group = k.string()?;
            let value = match value {
                None => None,
                Some(v) => {
                    let mut v = Reader(v);
                    ensure!(v.i16()? == 3, "GroupMetadataValue version");
                    let (protocol_type, generation) = (v.string()?, v.i32()?);
                    let (protocol, leader) = (v.nullable_string()?, v.nullable_string()?);
                    let _current_state_timestamp = v.i64()?;
                    let mut members = Vec::new();
                    for _ in 0..v.i32()? {
                        let member_id = v.string()?;
                        let _instance_id = v.nullable_string()?;
                        let client_id = v.string()?;
                        let _client_host = v.string()?;
                        let _rebalance_timeout = v.i32()?;
                        let session_timeout = v.i32()?;
                        members.push((member_id, client_id, session_timeout, v.bytes()?, v.bytes()?));
                    }
                    v.end()?;
                    Some(GroupValue { protocol_type, generation, protocol, leader, members })
                }
            };
            Record::Group { group, value }
        }
        other => anyhow::bail!("unexpected record type {other}"),
    };
    k.end()?;
    Ok(record)
}

/// Every record of `__consumer_offsets` partition `p` up to its high watermark: (offset,
/// record), and the high watermark.
async fn read_partition(c: &mut Client, p: i32) -> anyhow::Result<(Vec<(i64, Record)>, i64)> {
    let (records, end) = c.fetch_all(TOPIC, p, 0).await?;
    let decoded = records
        .into_iter()
        .map(|r| Ok((r.offset, decode(r.record.key.context("record without a key")?, r.record.value)?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok((decoded, end))
}

fn offset_record(group: &str, topic: &str, partition: i32, offset: i64) -> (String, String, i32, i64, i32, String) {
    (group.into(), topic.into(), partition, offset, 7, format!("meta-{partition}"))
}

/// The live offset records of `group` in `records`: (group, topic, partition, offset, epoch,
/// metadata).
fn offsets_of(records: &[(i64, Record)], group: &str) -> Vec<(String, String, i32, i64, i32, String)> {
    records
        .iter()
        .filter_map(|(_, r)| match r {
            Record::Offset { group: g, topic, partition, value: Some((offset, epoch, metadata, _)) } if g == group => {
                Some((g.clone(), topic.clone(), *partition, *offset, *epoch, metadata.clone()))
            }
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_offsets_and_group_metadata_read_back_from_consumer_offsets() {
    let broker = SkiffProcess::start();
    bounded("committed_offsets_and_group_metadata_read_back", &broker, async {
        let mut c = Client::connect(broker.bootstrap()).await?;
        c.create_topic_ok("orders", 3).await?;
        let group = "lag-monitored";
        let p = shard_for(group) as i32;
        let (e, end, _) = c.list_offset(TOPIC, p, LATEST).await?;
        ensure!((e, end) == (0, 0), "an empty shard's partition ends at 0: {e} {end}");

        // A simple (standalone) commit, then a newer offset for partition 0.
        commit(&mut c, group, "", -1, "orders", &[(0, 10), (1, 11), (2, 12)]).await?;
        commit(&mut c, group, "", -1, "orders", &[(0, 20)]).await?;
        let (records, end) = read_partition(&mut c, p).await?;
        ensure!(end == 4, "four writes, high watermark 4: {end}");
        let offsets: Vec<i64> = records.iter().map(|(o, _)| *o).collect();
        ensure!(offsets == vec![1, 2, 3], "offset 0 was superseded (a compacted gap): {records:?}");
        ensure!(
            offsets_of(&records, group)
                == vec![
                    offset_record(group, "orders", 1, 11),
                    offset_record(group, "orders", 2, 12),
                    offset_record(group, "orders", 0, 20),
                ],
            "{records:?}"
        );
        let (e, earliest, _) = c.list_offset(TOPIC, p, EARLIEST).await?;
        ensure!((e, earliest) == (0, 0), "earliest: {e} {earliest}");
        let Record::Offset { value: Some((_, _, _, commit_ts)), .. } = &records[2].1 else {
            anyhow::bail!("not an offset: {records:?}");
        };
        let (e, found, ts) = c.list_offset(TOPIC, p, *commit_ts).await?;
        ensure!(e == 0 && found <= 3 && ts >= 0, "by timestamp {commit_ts}: {e} {found} {ts}");

        // Long polling: a fetch at the end is answered by the next commit, well before max wait.
        let addr = broker.bootstrap().to_string();
        let committer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let mut c = Client::connect(&addr).await?;
            commit(&mut c, "lag-monitored", "", -1, "orders", &[(1, 31)]).await
        });
        let started = Instant::now();
        let woke = c.fetch(TOPIC, p, 4, 20_000, 1).await?;
        committer.await??;
        ensure!(started.elapsed() < Duration::from_secs(15), "long poll not woken: {:?}", started.elapsed());
        ensure!(woke.error_code == 0 && woke.high_watermark == 5, "woken fetch: {woke:?}");

        // A classic group's membership: GroupMetadata with the member.
        let managed = "lag-managed";
        let (member, generation) = join_and_sync(&mut c, managed).await?;
        commit(&mut c, managed, &member, generation, "orders", &[(2, 42)]).await?;
        let (records, _) = read_partition(&mut c, shard_for(managed) as i32).await?;
        let group_value = records.iter().find_map(|(_, r)| match r {
            Record::Group { group, value } if group == managed => value.clone(),
            _ => None,
        });
        let v = group_value.with_context(|| format!("no GroupMetadata for {managed}: {records:?}"))?;
        ensure!(
            (v.protocol_type.as_str(), v.generation, v.protocol.as_deref(), v.leader.as_deref())
                == ("consumer", generation, Some("range"), Some(member.as_str())),
            "{v:?}"
        );
        let expected =
            (member.clone(), "skiff-tests".into(), 60_000, Bytes::from("subscription"), Bytes::from("assignment"));
        ensure!(v.members == vec![expected], "{v:?}");
        ensure!(offsets_of(&records, managed) == vec![offset_record(managed, "orders", 2, 42)], "{records:?}");

        // Deleting the simple group leaves a tombstone for each of its offsets.
        let r = c.send(&DeleteGroupsRequest::default().with_groups_names(vec![GroupId(s(group))]), 2).await?;
        ensure!(r.results[0].error_code == 0, "DeleteGroups: {r:?}");
        let (records, end) = read_partition(&mut c, p).await?;
        let tail: Vec<_> = records.iter().filter(|(o, _)| *o >= 5).cloned().collect();
        let mut deleted: Vec<i32> = tail
            .iter()
            .filter_map(|(_, r)| match r {
                Record::Offset { group: g, partition, value: None, .. } if g == group => Some(*partition),
                _ => None,
            })
            .collect();
        deleted.sort();
        ensure!(deleted == vec![0, 1, 2] && end >= 8, "tombstones after DeleteGroups: {records:?} (end {end})");
        ensure!(offsets_of(&records, group).is_empty(), "no live offsets remain: {records:?}");
        Ok(())
    })
    .await;
}

/// The JSON objects ConsoleConsumer printed. The coordinator-record formatters print one
/// object per record with no separator, so a line may hold many.
fn json_lines(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .flat_map(|l| serde_json::Deserializer::from_str(l).into_iter::<serde_json::Value>().map_while(Result::ok))
        .collect()
}

/// Kafka's ConsoleConsumer reading all of `__consumer_offsets` with `formatter`. The formatters'
/// advice to set `exclude.internal.topics=false` concerns pattern subscriptions; `--topic`
/// names the topic, so it is not needed.
fn console_consumer(bootstrap: &str, formatter: &str) -> anyhow::Result<String> {
    let out = kafka_cli::run_with_timeout(
        kafka_cli::CONSOLE_CONSUMER,
        &[
            "--bootstrap-server",
            bootstrap,
            "--topic",
            TOPIC,
            "--from-beginning",
            "--formatter",
            formatter,
            "--timeout-ms",
            "5000",
        ],
        Duration::from_secs(90),
    )?;
    // ConsoleConsumer exits non-zero after its timeout with no more messages ("Error processing
    // message, terminating consumer process" with a TimeoutException); anything else fails.
    ensure!(
        out.success || out.stderr.contains("TimeoutException"),
        "ConsoleConsumer failed:\nstdout:\n{}\nstderr:\n{}",
        out.stdout,
        out.stderr
    );
    Ok(out.stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_console_consumer_formats_consumer_offsets() {
    let broker = SkiffProcess::start();
    let (member, generation) = {
        let mut c = Client::connect(broker.bootstrap()).await.expect("connect");
        c.create_topic_ok("payments", 2).await.expect("create");
        commit(&mut c, "formatted", "", -1, "payments", &[(0, 100), (1, 101)]).await.expect("commit");
        commit(&mut c, "formatted", "", -1, "payments", &[(1, 150)]).await.expect("commit");
        let (member, generation) = join_and_sync(&mut c, "formatted-classic").await.expect("join");
        commit(&mut c, "formatted-classic", &member, generation, "payments", &[(0, 7)]).await.expect("commit");
        (member, generation)
    };
    let bootstrap = broker.bootstrap().to_string();

    let stdout = tokio::task::spawn_blocking({
        let bootstrap = bootstrap.clone();
        move || console_consumer(&bootstrap, "org.apache.kafka.tools.consumer.OffsetsMessageFormatter")
    })
    .await
    .expect("join")
    .unwrap_or_else(|e| panic!("{e:#}"));
    let lines = json_lines(&stdout);
    println!("OffsetsMessageFormatter:\n{stdout}");
    let offset_of = |group: &str, topic: &str, partition: i64| {
        lines
            .iter()
            .filter(|l| {
                l["key"]["type"] == 1
                    && l["key"]["data"]["group"] == group
                    && l["key"]["data"]["topic"] == topic
                    && l["key"]["data"]["partition"] == partition
            })
            .map(|l| (l["value"]["version"].clone(), l["value"]["data"].clone()))
            .collect::<Vec<_>>()
    };
    for (group, partition, offset) in [("formatted", 0, 100), ("formatted", 1, 150), ("formatted-classic", 0, 7)] {
        let found = offset_of(group, "payments", partition);
        assert_eq!(found.len(), 1, "{group}/{partition}: exactly the current commit:\n{stdout}");
        let (version, data) = &found[0];
        assert_eq!(version, 3, "{stdout}");
        assert_eq!(data["offset"], offset, "{stdout}");
        assert_eq!(data["leaderEpoch"], 7, "{stdout}");
        assert_eq!(data["metadata"], format!("meta-{partition}"), "{stdout}");
        assert!(data["commitTimestamp"].as_i64().is_some_and(|t| t > 1_600_000_000_000), "{stdout}");
    }
    assert!(lines.iter().all(|l| l["key"]["type"] == 1), "only offset commits are printed:\n{stdout}");

    let stdout = tokio::task::spawn_blocking(move || {
        console_consumer(&bootstrap, "org.apache.kafka.tools.consumer.GroupMetadataMessageFormatter")
    })
    .await
    .expect("join")
    .unwrap_or_else(|e| panic!("{e:#}"));
    println!("GroupMetadataMessageFormatter:\n{stdout}");
    let lines = json_lines(&stdout);
    let group = lines
        .iter()
        .find(|l| l["key"]["type"] == 2 && l["key"]["data"]["group"] == "formatted-classic")
        .unwrap_or_else(|| panic!("no GroupMetadata for formatted-classic:\n{stdout}"));
    let v = &group["value"]["data"];
    assert_eq!(group["value"]["version"], 3, "{stdout}");
    assert_eq!(v["protocolType"], "consumer", "{stdout}");
    assert_eq!(v["generation"], generation, "{stdout}");
    assert_eq!(v["protocol"], "range", "{stdout}");
    assert_eq!(v["leader"], member.as_str(), "{stdout}");
    let members = v["members"].as_array().unwrap_or_else(|| panic!("members:\n{stdout}"));
    assert_eq!(members.len(), 1, "{stdout}");
    assert_eq!(members[0]["memberId"], member.as_str(), "{stdout}");
    assert_eq!(members[0]["sessionTimeout"], 60_000, "{stdout}");
    assert!(lines.iter().all(|l| l["key"]["type"] == 2), "only group metadata is printed:\n{stdout}");
}

/// (leader id, address, leader epoch) of `__consumer_offsets` partition `p` as `addr` sees it.
async fn partition_leader(addr: &str, p: i32) -> anyhow::Result<Option<(i32, String, i32)>> {
    let mut c = Client::connect(addr).await?;
    let md = c.topic_metadata(TOPIC).await?;
    let epoch = md.partition(p).map_or(-1, |l| l.leader_epoch);
    Ok(md.leader(p).map(|(id, a)| (id, a.to_string(), epoch)))
}

/// Retries `commit` while the coordinator is moving or loading (bounded).
async fn commit_to_coordinator(addr: &str, group: &str, offsets: &[(i32, i64)]) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut c = Client::connect(addr).await?;
        match commit(&mut c, group, "", -1, "moving", offsets).await {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() < deadline => {
                eprintln!("commit to {addr} retried: {e:#}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// The view lives in the replicated metadata, so when a coordinator shard moves the new leader
/// of its `__consumer_offsets` partition serves exactly the same records at the same offsets
/// (in batches carrying the new epoch): a reader carries on across the move.
#[test]
fn the_view_survives_a_coordinator_move_unchanged() {
    let mut cluster = Cluster::start(ClusterSpec::new("offsets-topic", 1, 3));
    let group = "moving-group";
    let p = shard_for(group) as i32;
    let addrs: Vec<String> = cluster.broker_refs().into_iter().filter_map(|b| cluster.kafka_addr(b)).collect();
    let first = addrs[0].clone();
    let before = cluster.block_on(async {
        Client::connect(&first).await?.create_topic_ok("moving", 2).await?;
        // Shards are spread once every broker has registered; wait for a leader.
        let deadline = Instant::now() + Duration::from_secs(60);
        let (leader, addr, epoch) = loop {
            if let Some(l) = partition_leader(&first, p).await? {
                break l;
            }
            ensure!(Instant::now() < deadline, "no leader for {TOPIC}/{p}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        commit_to_coordinator(&addr, group, &[(0, 10), (1, 11)]).await?;
        commit_to_coordinator(&addr, group, &[(0, 20)]).await?;
        let mut c = Client::connect(&addr).await?;
        let (records, end) = read_partition(&mut c, p).await?;
        ensure!(offsets_of(&records, group).len() == 2 && end >= 3, "before the move: {records:?} (end {end})");
        let (batches, _) = c.fetch_batches(TOPIC, p, 0).await?;
        ensure!(batches.iter().all(|b| b.partition_leader_epoch == epoch), "batch epochs {batches:?} vs {epoch}");
        anyhow::Ok((leader, records, end, epoch))
    });
    let (leader, records, end, epoch) = before.unwrap_or_else(|e| panic!("{e:#}"));

    // Controlled shutdown of the coordinator: its shards move to the other brokers.
    let status = cluster.terminate(NodeRef::Broker(leader));
    assert!(status.success(), "broker {leader} exited with {status}");
    let survivor = cluster
        .broker_refs()
        .into_iter()
        .filter(|b| b.id() != leader)
        .find_map(|b| cluster.kafka_addr(b))
        .expect("a live broker");
    let after: anyhow::Result<()> = cluster.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some((new_leader, addr, new_epoch)) = partition_leader(&survivor, p).await?
                && new_leader != leader
            {
                ensure!(new_epoch > epoch, "epoch {new_epoch} after the move, {epoch} before");
                let mut c = Client::connect(&addr).await?;
                match read_partition(&mut c, p).await {
                    Ok((moved, moved_end)) => {
                        ensure!(moved == records && moved_end == end, "after the move {moved:?} (end {moved_end})");
                        let (batches, _) = c.fetch_batches(TOPIC, p, 0).await?;
                        ensure!(batches.iter().all(|b| b.partition_leader_epoch == new_epoch), "{batches:?}");
                        return Ok(());
                    }
                    // The new leader's image may not have applied the move yet.
                    Err(e) => eprintln!("read from {addr} retried: {e:#}"),
                }
            }
            ensure!(Instant::now() < deadline, "{TOPIC}/{p} did not move off broker {leader} within 60 s");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    if let Err(e) = after {
        let logs: Vec<String> = cluster.broker_refs().into_iter().map(|b| cluster.log_tail(b, 20)).collect();
        panic!("{e:#}\n{}", logs.join("\n"));
    }
}
