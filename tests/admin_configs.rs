//! Topic assignments and dynamic configs through Apache Kafka's own CLI tools (issue #10, bugs 4
//! and 5): `kafka-topics --replica-assignment` on a 3-broker cluster, and `kafka-configs` for
//! dynamic broker configs and consumer-group configs, each change observed taking effect
//! without a restart.
//!
//! Needs Kafka's tools (tests/support/kafka_cli.rs) and, for the cluster, MinIO.
#![allow(clippy::disallowed_methods)] // black-box tests wait and measure in real time; ids are test data

mod support;

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use support::SkiffProcess;
use support::client::{Client, TestRecord, encode_batch, topic_name};
use support::cluster::{Cluster, ClusterSpec, NodeRef};
use support::kafka_cli::{self, CONFIG_COMMAND, TOPIC_COMMAND};

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

/// `base` followed by `extra`, as the tools' argument list.
fn args(base: &[&str], extra: &[&str]) -> Vec<String> {
    base.iter().chain(extra).map(|a| a.to_string()).collect()
}

/// Runs a Kafka tool and returns stdout + stderr, requiring it to succeed.
fn tool_ok(class: &str, args: &[String]) -> anyhow::Result<String> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = kafka_cli::run(class, &args)?;
    let both = format!("{}\n{}", out.stdout, out.stderr);
    ensure!(out.success, "{class} {args:?} failed:\n{both}");
    Ok(both)
}

/// Runs a Kafka tool that must fail and returns what it printed.
fn tool_refused(class: &str, args: &[String]) -> anyhow::Result<String> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = kafka_cli::run(class, &args)?;
    let both = format!("{}\n{}", out.stdout, out.stderr);
    // TopicCommand reports an error but exits 1; ConfigCommand likewise.
    ensure!(!out.success, "{class} {args:?} should have failed:\n{both}");
    Ok(both)
}

/// (leader, replicas) of every partition of `topic`, by partition index.
async fn leaders_and_replicas(addr: &str, topic: &str) -> anyhow::Result<Vec<(i32, Vec<i32>)>> {
    let mut c = Client::connect(addr).await?;
    let r = c.metadata(Some(&[topic])).await?;
    let t = r.topics.into_iter().next().context("no topic in Metadata")?;
    ensure!(t.error_code == 0, "Metadata for {topic}: error {}", t.error_code);
    let mut parts: Vec<_> = t.partitions.into_iter().collect();
    parts.sort_by_key(|p| p.partition_index);
    Ok(parts.into_iter().map(|p| (p.leader_id.0, p.replica_nodes.iter().map(|b| b.0).collect())).collect())
}

/// Waits until Metadata on `addr` shows `expected` leaders for `topic` (the broker's image
/// follows the controller's log).
async fn wait_leaders(addr: &str, topic: &str, expected: &[i32]) -> anyhow::Result<Vec<(i32, Vec<i32>)>> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = leaders_and_replicas(addr, topic).await;
        if let Ok(g) = &got
            && g.iter().map(|(l, _)| *l).collect::<Vec<_>>() == expected
        {
            return got;
        }
        ensure!(Instant::now() < deadline, "{topic}: expected leaders {expected:?}, got {got:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn kafka_topics_replica_assignment_picks_the_leaders() -> anyhow::Result<()> {
    // 1 controller, brokers 2, 3 and 4. On an empty cluster placement alone would lead the
    // partitions of a new topic from brokers 2, 3, ... in turn.
    let mut cluster = Cluster::start(ClusterSpec::new("admin-assign", 1, 3));
    let bootstrap = cluster.bootstrap();
    let first = cluster.kafka_addr(NodeRef::Broker(3)).context("broker 3 address")?;
    let topics = |extra: &[&str]| args(&["--bootstrap-server", &bootstrap], extra);

    // Create: the first listed broker of each partition leads, replicas are as listed.
    let args = topics(&["--create", "--topic", "assigned", "--replica-assignment", "4:2,4:3"]);
    tool_ok(TOPIC_COMMAND, &args)?;
    let got = cluster.block_on(wait_leaders(&first, "assigned", &[4, 4]))?;
    assert_eq!(got, vec![(4, vec![4, 2]), (4, vec![4, 3])]);
    let args = topics(&["--describe", "--topic", "assigned"]);
    let described = tool_ok(TOPIC_COMMAND, &args)?;
    assert!(described.contains("ReplicationFactor: 2"), "{described}");
    assert!(described.contains("Leader: 4\tReplicas: 4,2"), "{described}");

    // An unknown broker id: refused with the controller's message, nothing created.
    let args = topics(&["--create", "--topic", "unknown-broker", "--replica-assignment", "4:9"]);
    let refused = tool_refused(TOPIC_COMMAND, &args)?;
    assert!(
        refused.contains("The manual partition assignment includes broker 9, but no such broker is registered."),
        "{refused}"
    );

    // Alter: TopicCommand sends the lists of the new partitions (the third here).
    let args = topics(&["--alter", "--topic", "assigned", "--partitions", "3", "--replica-assignment", "4:2,4:3,3:4"]);
    tool_ok(TOPIC_COMMAND, &args)?;
    let got = cluster.block_on(wait_leaders(&first, "assigned", &[4, 4, 3]))?;
    assert_eq!(got[2], (3, vec![3, 4]));
    let args =
        topics(&["--alter", "--topic", "assigned", "--partitions", "4", "--replica-assignment", "4:2,4:3,3:4,9:2"]);
    let refused = tool_refused(TOPIC_COMMAND, &args)?;
    assert!(
        refused.contains("The manual partition assignment includes broker 9, but no such broker is registered."),
        "{refused}"
    );
    assert_eq!(cluster.block_on(leaders_and_replicas(&first, "assigned"))?.len(), 3);

    // The preferred replica goes: the next listed broker leads. It comes back: it leads again
    // (Kafka's auto leader rebalance), with no data copied.
    let broker2 = cluster.kafka_addr(NodeRef::Broker(2)).context("broker 2 address")?;
    cluster.terminate(NodeRef::Broker(4));
    cluster.block_on(wait_leaders(&broker2, "assigned", &[2, 3, 3]))?;
    cluster.start_node(NodeRef::Broker(4));
    cluster.block_on(wait_leaders(&broker2, "assigned", &[4, 4, 3]))?;
    Ok(())
}

/// DescribeConfigs of one resource: name → (value, source).
async fn describe(addr: &str, resource_type: i8, name: &str) -> anyhow::Result<Vec<(String, Option<String>, i8)>> {
    let mut c = Client::connect(addr).await?;
    let req = DescribeConfigsRequest::default().with_resources(vec![
        DescribeConfigsResource::default()
            .with_resource_type(resource_type)
            .with_resource_name(s(name))
            .with_configuration_keys(None),
    ]);
    let r = c.send(&req, 4).await?;
    let res = r.results.into_iter().next().context("no result")?;
    ensure!(res.error_code == 0, "DescribeConfigs {name}: {} {:?}", res.error_code, res.error_message);
    Ok(res.configs.into_iter().map(|e| (e.name.to_string(), e.value.map(|v| v.to_string()), e.config_source)).collect())
}

fn entry<'a>(entries: &'a [(String, Option<String>, i8)], name: &str) -> Option<&'a (String, Option<String>, i8)> {
    entries.iter().find(|e| e.0 == name)
}

#[test]
fn kafka_configs_changes_dynamic_broker_configs_without_restart() -> anyhow::Result<()> {
    let skiff = SkiffProcess::start();
    let b = skiff.bootstrap().to_string();
    let rt = runtime();
    let configs = |extra: &[&str]| args(&["--bootstrap-server", &b, "--entity-type", "brokers"], extra);

    // Cluster-wide default.
    let args = configs(&["--entity-default", "--alter", "--add-config", "log.retention.ms=3600000"]);
    tool_ok(CONFIG_COMMAND, &args)?;
    let args = configs(&["--entity-default", "--describe"]);
    let out = tool_ok(CONFIG_COMMAND, &args)?;
    assert!(
        out.contains(
            "log.retention.ms=3600000 sensitive=false synonyms={DYNAMIC_DEFAULT_BROKER_CONFIG:log.retention.ms=3600000"
        ),
        "{out}"
    );

    // Per broker (this one is broker 1).
    let args = configs(&["--entity-name", "1", "--alter", "--add-config", "message.max.bytes=2000"]);
    tool_ok(CONFIG_COMMAND, &args)?;
    let args = configs(&["--entity-name", "1", "--describe"]);
    let out = tool_ok(CONFIG_COMMAND, &args)?;
    assert!(
        out.contains("message.max.bytes=2000 sensitive=false synonyms={DYNAMIC_BROKER_CONFIG:message.max.bytes=2000"),
        "{out}"
    );

    // A config Kafka does not let change at runtime: refused, naming it; nothing stored.
    let args = configs(&["--entity-name", "1", "--alter", "--add-config", "auto.create.topics.enable=false"]);
    let out = tool_refused(CONFIG_COMMAND, &args)?;
    assert!(out.contains("Cannot update these configs dynamically: Set(auto.create.topics.enable)"), "{out}");

    // In effect now: a new topic's retention and size limit come from them.
    rt.block_on(async {
        let mut c = Client::connect(&b).await?;
        c.create_topic_ok("after-change", 1).await?;
        let described = describe(&b, 2, "after-change").await?;
        assert_eq!(entry(&described, "retention.ms"), Some(&("retention.ms".into(), Some("3600000".into()), 3)));
        assert_eq!(entry(&described, "max.message.bytes"), Some(&("max.message.bytes".into(), Some("2000".into()), 2)));
        let big = encode_batch(
            &[TestRecord::new("k", vec![b'x'; 3000], 0)],
            kafka_protocol::records::Compression::None,
            None,
        );
        let r = c.produce("after-change", 0, big).await?;
        assert_eq!(r.error_code, 10, "MESSAGE_TOO_LARGE expected: {r:?}");
        let small =
            encode_batch(&[TestRecord::new("k", vec![b'x'; 100], 0)], kafka_protocol::records::Compression::None, None);
        c.produce_ok("after-change", 0, small).await?;
        anyhow::Ok(())
    })?;

    // Deleting the per-broker value falls back to the static default.
    let args = configs(&["--entity-name", "1", "--alter", "--delete-config", "message.max.bytes"]);
    tool_ok(CONFIG_COMMAND, &args)?;
    rt.block_on(async {
        let described = describe(&b, 2, "after-change").await?;
        assert_eq!(entry(&described, "max.message.bytes").map(|e| e.2), Some(5));
        anyhow::Ok(())
    })?;
    Ok(())
}

#[test]
fn kafka_configs_sets_group_configs_used_by_the_consumer_protocol() -> anyhow::Result<()> {
    let skiff = SkiffProcess::start();
    let b = skiff.bootstrap().to_string();
    let rt = runtime();
    let groups = |extra: &[&str]| {
        args(&["--bootstrap-server", &b, "--entity-type", "groups", "--entity-name", "configured"], extra)
    };

    let args =
        groups(&["--alter", "--add-config", "consumer.heartbeat.interval.ms=6000,consumer.session.timeout.ms=50000"]);
    tool_ok(CONFIG_COMMAND, &args)?;
    let out = tool_ok(CONFIG_COMMAND, &(groups(&["--describe"])))?;
    assert!(out.contains("consumer.heartbeat.interval.ms=6000"), "{out}");
    assert!(out.contains("consumer.session.timeout.ms=50000"), "{out}");
    // Outside the broker's group.consumer.max.session.timeout.ms (Kafka's 60000).
    let out =
        tool_refused(CONFIG_COMMAND, &(groups(&["--alter", "--add-config", "consumer.session.timeout.ms=70000"])))?;
    assert!(
        out.contains("consumer.session.timeout.ms must be less than or equal to group.consumer.max.session.timeout.ms"),
        "{out}"
    );

    // A KIP-848 member of the group is told the group's interval; another group's the broker's.
    rt.block_on(async {
        let mut c = Client::connect(&b).await?;
        c.create_topic_ok("grouped", 2).await?;
        let join = |group: &str| {
            ConsumerGroupHeartbeatRequest::default()
                .with_group_id(GroupId(s(group)))
                .with_member_id(s(&uuid::Uuid::new_v4().to_string()))
                .with_member_epoch(0)
                .with_rebalance_timeout_ms(30_000)
                .with_subscribed_topic_names(Some(vec![topic_name("grouped")]))
                .with_topic_partitions(Some(vec![]))
        };
        let r = c.send(&join("configured"), 1).await?;
        ensure!(r.error_code == 0, "{r:?}");
        assert_eq!(r.heartbeat_interval_ms, 6000);
        let r = c.send(&join("unconfigured"), 1).await?;
        ensure!(r.error_code == 0, "{r:?}");
        assert_eq!(r.heartbeat_interval_ms, 5000);
        // Changed again while the member is in the group: its next heartbeat says so.
        anyhow::Ok(())
    })?;
    tool_ok(CONFIG_COMMAND, &(groups(&["--alter", "--add-config", "consumer.heartbeat.interval.ms=7000"])))?;
    rt.block_on(async {
        let described = describe(&b, 32, "configured").await?;
        assert_eq!(
            entry(&described, "consumer.heartbeat.interval.ms"),
            Some(&("consumer.heartbeat.interval.ms".into(), Some("7000".into()), 8))
        );
        let mut c = Client::connect(&b).await?;
        let join = ConsumerGroupHeartbeatRequest::default()
            .with_group_id(GroupId(s("configured")))
            .with_member_id(s(&uuid::Uuid::new_v4().to_string()))
            .with_member_epoch(0)
            .with_rebalance_timeout_ms(30_000)
            .with_subscribed_topic_names(Some(vec![topic_name("grouped")]))
            .with_topic_partitions(Some(vec![]));
        let r = c.send(&join, 1).await?;
        ensure!(r.error_code == 0, "{r:?}");
        assert_eq!(r.heartbeat_interval_ms, 7000);
        anyhow::Ok(())
    })?;
    Ok(())
}

// Compacted topics' configs (issue #12, RFC 0003 scope 1): `cleanup.policy=compact` and the
// cleaner's keys, as Kafka validates and reports them.

/// ConfigCommand's arguments for topic `topic`.
fn topic_configs(bootstrap: &str, topic: &str, extra: &[&str]) -> Vec<String> {
    args(&["--bootstrap-server", bootstrap, "--entity-type", "topics", "--entity-name", topic], extra)
}

#[test]
fn kafka_tools_create_describe_and_switch_compacted_topics() -> anyhow::Result<()> {
    let skiff = SkiffProcess::start();
    let b = skiff.bootstrap().to_string();
    let rt = runtime();
    let topics = |extra: &[&str]| args(&["--bootstrap-server", &b], extra);

    // Each policy form Kafka accepts, created by kafka-topics and described by kafka-configs.
    for (topic, policy) in [("compacted", "compact"), ("both", "compact,delete"), ("both-reversed", "delete,compact")] {
        let config = format!("cleanup.policy={policy}");
        tool_ok(TOPIC_COMMAND, &topics(&["--create", "--topic", topic, "--partitions", "2", "--config", &config]))?;
        let out = tool_ok(CONFIG_COMMAND, &topic_configs(&b, topic, &["--describe"]))?;
        assert!(out.contains(&format!("cleanup.policy={policy} sensitive=false")), "{out}");
    }
    let out = tool_ok(TOPIC_COMMAND, &topics(&["--describe", "--topic", "compacted"]))?;
    assert!(out.contains("cleanup.policy=compact"), "{out}");

    // Switching both ways, and to both (a list value is bracketed on ConfigCommand's line).
    for (set, shown) in [
        ("cleanup.policy=delete", "delete"),
        ("cleanup.policy=[compact,delete]", "compact,delete"),
        ("cleanup.policy=compact", "compact"),
    ] {
        tool_ok(CONFIG_COMMAND, &topic_configs(&b, "compacted", &["--alter", "--add-config", set]))?;
        let out = tool_ok(CONFIG_COMMAND, &topic_configs(&b, "compacted", &["--describe"]))?;
        assert!(out.contains(&format!("cleanup.policy={shown} sensitive=false")), "{set}: {out}");
    }

    // The cleaner's keys: accepted within Kafka's bounds, refused outside with Kafka's messages.
    let set = "min.cleanable.dirty.ratio=0.1,min.compaction.lag.ms=1000,max.compaction.lag.ms=60000,delete.retention.ms=0,segment.ms=60000,segment.bytes=1048576";
    tool_ok(CONFIG_COMMAND, &topic_configs(&b, "compacted", &["--alter", "--add-config", set]))?;
    let out = tool_ok(CONFIG_COMMAND, &topic_configs(&b, "compacted", &["--describe"]))?;
    assert!(out.contains("min.cleanable.dirty.ratio=0.1 sensitive=false"), "{out}");
    assert!(out.contains("max.compaction.lag.ms=60000 sensitive=false"), "{out}");
    for (bad, message) in [
        (
            "min.cleanable.dirty.ratio=1.5",
            "Invalid value 1.5 for configuration min.cleanable.dirty.ratio: Value must be no more than 1",
        ),
        (
            "min.compaction.lag.ms=-1",
            "Invalid value -1 for configuration min.compaction.lag.ms: Value must be at least 0",
        ),
        (
            "max.compaction.lag.ms=0",
            "Invalid value 0 for configuration max.compaction.lag.ms: Value must be at least 1",
        ),
        ("delete.retention.ms=-1", "Invalid value -1 for configuration delete.retention.ms: Value must be at least 0"),
        ("segment.ms=0", "Invalid value 0 for configuration segment.ms: Value must be at least 1"),
        ("segment.bytes=1000", "Invalid value 1000 for configuration segment.bytes: Value must be at least 1048576"),
        (
            "cleanup.policy=compacted",
            "Invalid value compacted for configuration cleanup.policy: String must be one of: compact, delete",
        ),
        // Against the topic's max.compaction.lag.ms=60000 set above.
        (
            "min.compaction.lag.ms=120000",
            "conflict topic config setting min.compaction.lag.ms (120000) > max.compaction.lag.ms (60000)",
        ),
    ] {
        let out = tool_refused(CONFIG_COMMAND, &topic_configs(&b, "compacted", &["--alter", "--add-config", bad]))?;
        assert!(out.contains(message), "{bad}: {out}");
        assert!(out.contains("InvalidConfigurationException"), "{bad}: INVALID_CONFIG expected: {out}");
    }
    // An existing topic: TOPIC_ALREADY_EXISTS, Kafka's words (kafka-topics checks configs
    // itself before sending, so the bogus-config cases are in the raw-client test below).
    let refused = tool_refused(
        TOPIC_COMMAND,
        &topics(&["--create", "--topic", "compacted", "--partitions", "5", "--config", "cleanup.policy=compact"]),
    )?;
    assert!(refused.contains("Topic 'compacted' already exists."), "{refused}");

    // The broker default, and Skiff's segment.bytes default.
    let brokers = args(&["--bootstrap-server", &b, "--entity-type", "brokers", "--entity-default"], &[]);
    tool_ok(
        CONFIG_COMMAND,
        &args(
            &brokers.iter().map(String::as_str).collect::<Vec<_>>(),
            &["--alter", "--add-config", "log.cleanup.policy=compact"],
        ),
    )?;
    rt.block_on(async {
        let mut c = Client::connect(&b).await?;
        c.create_topic_ok("defaulted", 1).await?;
        let described = describe(&b, 2, "defaulted").await?;
        assert_eq!(entry(&described, "cleanup.policy"), Some(&("cleanup.policy".into(), Some("compact".into()), 3)));
        assert_eq!(entry(&described, "segment.bytes"), Some(&("segment.bytes".into(), Some("67108864".into()), 5)));
        anyhow::Ok(())
    })?;
    Ok(())
}

/// CreateTopics v7 for one topic: (error code, message).
async fn create_raw(
    c: &mut Client,
    name: &str,
    partitions: i32,
    replication_factor: i16,
    configs: &[(&str, &str)],
    validate_only: bool,
) -> anyhow::Result<(i16, Option<String>)> {
    let topic = create_topics_request::CreatableTopic::default()
        .with_name(topic_name(name))
        .with_num_partitions(partitions)
        .with_replication_factor(replication_factor)
        .with_configs(
            configs
                .iter()
                .map(|(k, v)| {
                    create_topics_request::CreatableTopicConfig::default().with_name(s(k)).with_value(Some(s(v)))
                })
                .collect(),
        );
    let req = CreateTopicsRequest::default()
        .with_topics(vec![topic])
        .with_timeout_ms(30_000)
        .with_validate_only(validate_only);
    let r = c.send(&req, 7).await?;
    let t = r.topics.into_iter().next().context("no topic in CreateTopics response")?;
    Ok((t.error_code, t.error_message.map(|m| m.to_string())))
}

#[test]
fn create_topics_on_an_existing_name_answers_topic_already_exists() -> anyhow::Result<()> {
    let skiff = SkiffProcess::start();
    let b = skiff.bootstrap().to_string();
    runtime().block_on(async {
        let mut c = Client::connect(&b).await?;
        c.set_client_id("cfg-checker");
        c.create_topic_ok("pre-created", 1).await?;
        // What Kafka Connect and Streams send for topics they pre-create, plus configs and a
        // replication factor no new topic could have: the name is looked up first.
        let compacted: &[(&str, &str)] = &[("cleanup.policy", "compact")];
        let bogus: &[(&str, &str)] =
            &[("cleanup.policy", "compact"), ("min.cleanable.dirty.ratio", "7"), ("no.such.config", "x")];
        for name in ["pre-created", "__consumer_offsets"] {
            for configs in [compacted, bogus] {
                for validate_only in [false, true] {
                    for replication_factor in [1, 0] {
                        let got = create_raw(&mut c, name, 3, replication_factor, configs, validate_only).await?;
                        assert_eq!(
                            got,
                            (36, Some(format!("Topic '{name}' already exists."))),
                            "{name} {configs:?} validate_only={validate_only} rf={replication_factor}"
                        );
                    }
                }
            }
        }
        // A new name is validated fully; validate_only creates nothing.
        let got = create_raw(&mut c, "fresh", 1, 1, bogus, true).await?;
        assert_eq!(got.0, 40, "INVALID_CONFIG expected: {got:?}");
        let got = create_raw(&mut c, "fresh", 1, 1, &[("min.cleanable.dirty.ratio", "7")], false).await?;
        assert_eq!(
            got,
            (
                40,
                Some(
                    "Invalid value 7 for configuration min.cleanable.dirty.ratio: Value must be no more than 1".into()
                )
            )
        );
        let lags = [("min.compaction.lag.ms", "10"), ("max.compaction.lag.ms", "5")];
        let got = create_raw(&mut c, "fresh", 1, 1, &lags, true).await?;
        assert_eq!(
            got,
            (40, Some("conflict topic config setting min.compaction.lag.ms (10) > max.compaction.lag.ms (5)".into()))
        );
        assert_eq!(create_raw(&mut c, "fresh", 1, 1, compacted, true).await?.0, 0);
        let meta = c.metadata(Some(&["fresh"])).await?;
        assert_eq!(meta.topics[0].error_code, 3, "validate_only created the topic: {meta:?}");
        assert_eq!(create_raw(&mut c, "fresh", 1, 1, compacted, false).await?.0, 0);
        assert_eq!(create_raw(&mut c, "fresh", 1, 1, compacted, true).await?.0, 36);
        anyhow::Ok(())
    })?;

    // Each rejected config is logged at INFO, once per client, resource, config and value (the
    // ratio 7 was refused twice above, with and without validate_only).
    let log = std::fs::read_to_string(skiff.stderr_path())?;
    let rejected: Vec<&str> = log.lines().filter(|l| l.contains("rejected a config")).collect();
    let ratio: Vec<&&str> = rejected.iter().filter(|l| l.contains("min.cleanable.dirty.ratio")).collect();
    assert_eq!(ratio.len(), 1, "{rejected:#?}");
    for field in
        ["INFO", "client_id=cfg-checker", "CreateTopics", "topic fresh", "value=7", "Value must be no more than 1"]
    {
        assert!(ratio[0].contains(field), "{field} missing: {}", ratio[0]);
    }
    let lag =
        rejected.iter().find(|l| l.contains("conflict topic config setting")).context("lag conflict not logged")?;
    assert!(lag.contains("min.compaction.lag.ms") && lag.contains("value=10"), "{lag}");
    Ok(())
}

/// IncrementalAlterConfigs v1 of topic `topic`: one op (SET 0, DELETE 1, APPEND 2, SUBTRACT 3).
async fn alter_incremental(
    c: &mut Client,
    topic: &str,
    ops: &[(&str, i8, &str)],
    validate_only: bool,
) -> anyhow::Result<(i16, Option<String>)> {
    use incremental_alter_configs_request::{AlterConfigsResource, AlterableConfig};
    let configs = ops
        .iter()
        .map(|(name, op, value)| {
            AlterableConfig::default().with_name(s(name)).with_config_operation(*op).with_value(Some(s(value)))
        })
        .collect();
    let req = IncrementalAlterConfigsRequest::default().with_validate_only(validate_only).with_resources(vec![
        AlterConfigsResource::default().with_resource_type(2).with_resource_name(s(topic)).with_configs(configs),
    ]);
    let r = c.send(&req, 1).await?;
    let res = r.responses.into_iter().next().context("no resource in response")?;
    Ok((res.error_code, res.error_message.map(|m| m.to_string())))
}

#[test]
fn incremental_alter_appends_and_subtracts_cleanup_policy() -> anyhow::Result<()> {
    let skiff = SkiffProcess::start();
    let b = skiff.bootstrap().to_string();
    runtime().block_on(async {
        let mut c = Client::connect(&b).await?;
        c.create_topic_ok("listed", 1).await?;
        let policy = |d: &[(String, Option<String>, i8)]| entry(d, "cleanup.policy").and_then(|e| e.1.clone());
        // APPEND to an unset list starts from its default, as Kafka's controller does.
        for (op, value, expected) in [
            (2, "compact", "delete,compact"),
            (3, "delete", "compact"),
            (2, "delete", "compact,delete"),
            (3, "compact", "delete"),
        ] {
            assert_eq!(alter_incremental(&mut c, "listed", &[("cleanup.policy", op, value)], false).await?, (0, None));
            assert_eq!(policy(&describe(&b, 2, "listed").await?).as_deref(), Some(expected), "op {op} {value}");
        }
        // validate_only checks and stores nothing.
        assert_eq!(alter_incremental(&mut c, "listed", &[("cleanup.policy", 0, "compact")], true).await?, (0, None));
        assert_eq!(policy(&describe(&b, 2, "listed").await?).as_deref(), Some("delete"));
        // min lag > max lag on the resulting config, whichever request sets which.
        assert_eq!(alter_incremental(&mut c, "listed", &[("max.compaction.lag.ms", 0, "50")], false).await?, (0, None));
        let got = alter_incremental(&mut c, "listed", &[("min.compaction.lag.ms", 0, "100")], false).await?;
        assert_eq!(
            got,
            (40, Some("conflict topic config setting min.compaction.lag.ms (100) > max.compaction.lag.ms (50)".into()))
        );
        let got = alter_incremental(
            &mut c,
            "listed",
            &[("min.compaction.lag.ms", 0, "100"), ("max.compaction.lag.ms", 1, "")],
            false,
        )
        .await?;
        assert_eq!(got, (0, None), "deleting the max in the same request makes it valid");
        let got = alter_incremental(&mut c, "listed", &[("min.cleanable.dirty.ratio", 0, "-0.5")], true).await?;
        assert_eq!(got.0, 40, "{got:?}");
        anyhow::Ok(())
    })?;
    let log = std::fs::read_to_string(skiff.stderr_path())?;
    let rejected: Vec<&str> =
        log.lines().filter(|l| l.contains("rejected a config") && l.contains("IncrementalAlterConfigs")).collect();
    assert_eq!(rejected.len(), 2, "{rejected:#?}");
    assert!(rejected.iter().all(|l| l.contains("topic listed")), "{rejected:#?}");
    assert!(rejected[1].contains("value=-0.5") && rejected[1].contains("Value must be at least 0"), "{rejected:#?}");
    Ok(())
}
