//! Real Kafka clients against `skiff dev`: every client family runs the shared scenario of
//! `tests/compat/README.md` against its own broker.
//!
//! The clients are installed by `tests/compat/setup.sh` (outside `cargo test`, it downloads);
//! a client that is not set up FAILS its test with the command to run, it is never skipped.
//! At most [`MAX_CONCURRENT_CLIENTS`] client programs (each with its broker) run at once so two
//! cores are not oversubscribed when the test harness runs these tests in parallel.
#![allow(clippy::disallowed_methods)] // black-box tests wait and measure in real time; ids are test data

mod support;

use support::SkiffProcess;
use support::compat::{run_client, run_client_env, run_client_with};
use support::slot::Slot;

/// Full scenario (create, produce, verify) with one client on a fresh broker.
fn full(client: &str) {
    let _slot = Slot::acquire();
    let broker = SkiffProcess::start();
    run_client(client, &broker, &format!("compat-{client}"), "full");
}

/// Produce, stop the broker gracefully, restart on the same data, verify with the new address.
fn restart_midway(client: &str) {
    let _slot = Slot::acquire();
    let mut broker = SkiffProcess::start();
    let topic = format!("compat-restart-{client}");
    run_client(client, &broker, &topic, "produce");
    let status = broker.terminate();
    assert!(status.success(), "skiff exited with {status} after SIGTERM\n{}", broker.stderr_tail(40));
    broker.restart();
    run_client(client, &broker, &topic, "verify");
}

#[test]
fn java() {
    full("java");
}

#[test]
fn python_confluent() {
    full("python-confluent");
}

#[test]
fn python_kafka() {
    full("python-kafka");
}

#[test]
fn go_sarama() {
    full("go-sarama");
}

#[test]
fn go_franz() {
    full("go-franz");
}

#[test]
fn node_kafkajs() {
    full("node-kafkajs");
}

/// The group scenario (`MODE=group`, tests/compat/README.md): 3 members, one joins and one
/// leaves midway, 60,000 records consumed exactly once with commits.
fn group(client: &str) {
    let _slot = Slot::acquire();
    let broker = SkiffProcess::start();
    let records = std::env::var("GROUP_RECORDS").unwrap_or_else(|_| "60000".into());
    run_client_with(client, &broker, &format!("compat-group-{client}"), "group", &records);
}

#[test]
fn group_java() {
    group("java");
}

/// The group scenario with the KIP-848 consumer protocol (`group.protocol=consumer`):
/// server-side assignment, default (`uniform`) and `range` assignors.
fn group_consumer_protocol(client: &str, assignor: &str) {
    let _slot = Slot::acquire();
    let broker = SkiffProcess::start();
    let records = std::env::var("GROUP_RECORDS").unwrap_or_else(|_| "60000".into());
    let topic = format!("compat-group-848-{client}-{}", if assignor.is_empty() { "default" } else { assignor });
    let env = [("GROUP_PROTOCOL", "consumer"), ("GROUP_REMOTE_ASSIGNOR", assignor)];
    run_client_env(client, &broker, &topic, "group", &records, &env);
}

#[test]
fn group_java_consumer_protocol() {
    group_consumer_protocol("java", "");
}

#[test]
fn group_java_consumer_protocol_range() {
    group_consumer_protocol("java", "range");
}

#[test]
fn group_python_confluent() {
    group("python-confluent");
}

#[test]
fn group_python_kafka() {
    group("python-kafka");
}

#[test]
fn group_go_sarama() {
    group("go-sarama");
}

#[test]
fn group_go_franz() {
    group("go-franz");
}

#[test]
fn group_node_kafkajs() {
    group("node-kafkajs");
}

#[test]
fn restart_midway_keeps_everything() {
    restart_midway("go-franz");
}

#[test]
fn restart_midway_keeps_everything_python_confluent() {
    restart_midway("python-confluent");
}

/// The regex scenario (`MODE=regex`, tests/compat/README.md): internal topics listed and
/// described by the client's admin API, and a pattern subscription (`__.*|TOPIC-.*`) that
/// consumes the regular topics it matches while `__consumer_offsets` is handled as the client
/// does against Kafka.
fn regex(client: &str, env: &[(&str, &str)]) {
    let _slot = Slot::acquire();
    let broker = SkiffProcess::start();
    let protocol = env.iter().find(|(k, _)| *k == "GROUP_PROTOCOL").map_or("classic", |(_, v)| v);
    run_client_env(client, &broker, &format!("compat-regex-{client}-{protocol}"), "regex", "200", env);
}

#[test]
fn regex_java() {
    regex("java", &[]);
}

/// KIP-848: the broker resolves the pattern (`SubscriptionPattern`) and must not match
/// internal topics.
#[test]
fn regex_java_consumer_protocol() {
    regex("java", &[("GROUP_PROTOCOL", "consumer")]);
}

#[test]
fn regex_python_confluent() {
    regex("python-confluent", &[]);
}

/// The resubscribe scenario (`MODE=resubscribe`, tests/compat/README.md): one member changes
/// its subscription, its topic grows, a subscribed topic is deleted and re-created; every
/// rebalance within 10 s (issue #10: the coordinator waited for the rebalance timeout).
fn resubscribe(client: &str, assignor: &str) {
    let _slot = Slot::acquire();
    let broker = SkiffProcess::start();
    let topic = format!("compat-resub-{client}{}", if assignor.is_empty() { "" } else { "-coop" });
    run_client_env(client, &broker, &topic, "resubscribe", "30", &[("ASSIGNOR", assignor)]);
}

#[test]
fn resubscribe_java() {
    resubscribe("java", "");
}

#[test]
fn resubscribe_java_cooperative() {
    resubscribe("java", "cooperative-sticky");
}

#[test]
fn resubscribe_python_confluent() {
    resubscribe("python-confluent", "");
}

#[test]
fn resubscribe_python_confluent_cooperative() {
    resubscribe("python-confluent", "cooperative-sticky");
}

#[test]
fn resubscribe_python_kafka() {
    resubscribe("python-kafka", "");
}

#[test]
fn resubscribe_go_sarama() {
    resubscribe("go-sarama", "");
}

#[test]
fn resubscribe_go_franz() {
    resubscribe("go-franz", "");
}

#[test]
fn resubscribe_node_kafkajs() {
    resubscribe("node-kafkajs", "");
}
