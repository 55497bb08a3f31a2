//! What Skiff does not serve is refused at once with the protocol's non-retriable error, and
//! the broker says why at INFO the first time per client (issue #10, bug 6). Transactions are
//! the feature users meet first: before, FindCoordinator(TRANSACTION) answered the retriable
//! COORDINATOR_NOT_AVAILABLE, a transactional producer retried it until its own timeout, and
//! nothing said why.
#![allow(clippy::disallowed_methods)] // black-box tests wait and measure in real time; ids are test data

mod support;

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use kafka_protocol::messages::{FindCoordinatorRequest, InitProducerIdRequest, TransactionalId};
use kafka_protocol::protocol::StrBytes;
use support::SkiffProcess;
use support::client::Client;
use support::kafka_cli;

const UNSUPPORTED_VERSION: i16 = 35;
const LOG_LINE: &str = "refused a request for something Skiff does not serve";

fn log_lines(broker: &SkiffProcess, needle: &str) -> usize {
    broker.stderr_tail(100_000).lines().filter(|l| l.contains(LOG_LINE) && l.contains(needle)).count()
}

async fn with_client_id(addr: &str, id: &str) -> anyhow::Result<Client> {
    let mut c = Client::connect(addr).await?;
    c.set_client_id(id);
    Ok(c)
}

#[tokio::test]
async fn transactions_are_refused_non_retriably_and_logged_once_per_client() {
    let broker = SkiffProcess::start();
    let body = async {
        let addr = broker.bootstrap().to_string();
        let mut a = with_client_id(&addr, "client-a").await?;
        for version in [1i16, 2, 3] {
            let req = FindCoordinatorRequest::default().with_key(StrBytes::from_static_str("tx-1")).with_key_type(1);
            let r = a.send(&req, version).await?;
            ensure!(r.error_code == UNSUPPORTED_VERSION, "FindCoordinator v{version} (TRANSACTION): {r:?}");
            let msg = r.error_message.as_ref().map(|m| m.to_string()).unwrap_or_default();
            ensure!(msg.contains("transactions are not supported"), "v{version} message: {msg:?}");
        }
        let req = FindCoordinatorRequest::default()
            .with_key_type(1)
            .with_coordinator_keys(vec![StrBytes::from_static_str("tx-1"), StrBytes::from_static_str("tx-2")]);
        let r = a.send(&req, 4).await?;
        ensure!(r.coordinators.len() == 2, "v4: {r:?}");
        for c in &r.coordinators {
            ensure!(c.error_code == UNSUPPORTED_VERSION && c.node_id.0 == -1, "v4 coordinator: {c:?}");
        }
        let req = InitProducerIdRequest::default()
            .with_transactional_id(Some(TransactionalId(StrBytes::from_static_str("tx-1"))))
            .with_transaction_timeout_ms(60_000);
        let r = a.send(&req, 4).await?;
        ensure!(r.error_code == UNSUPPORTED_VERSION, "InitProducerId(transactional): {r:?}");
        // Groups are unaffected.
        let req = FindCoordinatorRequest::default().with_key(StrBytes::from_static_str("g")).with_key_type(0);
        ensure!(a.send(&req, 3).await?.error_code == 0, "group FindCoordinator must still work");

        // Five refusals from client-a: one log line; client-b gets its own.
        ensure!(log_lines(&broker, "client-a") == 1, "client-a logged {} times", log_lines(&broker, "client-a"));
        let mut b = with_client_id(&addr, "client-b").await?;
        let req = FindCoordinatorRequest::default().with_key(StrBytes::from_static_str("tx-9")).with_key_type(1);
        ensure!(b.send(&req, 3).await?.error_code == UNSUPPORTED_VERSION);
        ensure!(log_lines(&broker, "client-b") == 1, "client-b logged {} times", log_lines(&broker, "client-b"));
        ensure!(
            broker.stderr_tail(100_000).lines().any(|l| l.contains(LOG_LINE) && l.contains("INFO")),
            "the refusal is logged at INFO"
        );
        Ok::<_, anyhow::Error>(())
    };
    tokio::time::timeout(Duration::from_secs(60), body)
        .await
        .expect("bounded")
        .unwrap_or_else(|e| panic!("{e:#}\n{}", broker.stderr_tail(40)));
}

#[tokio::test]
async fn unserved_api_is_answered_closed_and_logged_once_per_client() {
    let broker = SkiffProcess::start();
    let body = async {
        let addr = broker.bootstrap().to_string();
        // API key 1000 does not exist; key 48 (DescribeClientQuotas) is Kafka's but not served.
        // The header's client id is "probe".
        for (key, version) in [(1000i16, 0i16), (1000, 0), (48, 0), (48, 0)] {
            let mut c = Client::connect(&addr).await?;
            // Header v1 by hand: api key, version, correlation id, client id "probe".
            let mut frame = Vec::new();
            frame.extend_from_slice(&key.to_be_bytes());
            frame.extend_from_slice(&version.to_be_bytes());
            frame.extend_from_slice(&5i32.to_be_bytes());
            frame.extend_from_slice(&[0, 5, b'p', b'r', b'o', b'b', b'e']);
            c.write_frame(&frame).await?;
            let answer = c.read_frame().await?.context("no answer")?;
            let code = i16::from_be_bytes(answer[4..6].try_into()?);
            ensure!(code == UNSUPPORTED_VERSION, "API {key}: code {code}");
            ensure!(c.closed_within(Duration::from_secs(5)).await?, "API {key}: connection left open");
        }
        let probe = log_lines(&broker, "probe");
        ensure!(probe == 2, "expected one line per unserved API for client probe, got {probe}");
        Ok::<_, anyhow::Error>(())
    };
    tokio::time::timeout(Duration::from_secs(60), body)
        .await
        .expect("bounded")
        .unwrap_or_else(|e| panic!("{e:#}\n{}", broker.stderr_tail(40)));
}

/// Kafka's own ProducerPerformance with `--transactional-id` (Java kafka-clients): before, it
/// retried FindCoordinator until `max.block.ms` (60 s) and timed out in InitProducerId without a
/// reason; now it fails at once and says that transactions are not supported.
#[test]
fn java_transactional_producer_fails_fast_with_the_reason() {
    let broker = SkiffProcess::start();
    let started = Instant::now();
    let out = kafka_cli::run_with_timeout(
        "org.apache.kafka.tools.ProducerPerformance",
        &[
            "--topic",
            "tx-topic",
            "--num-records",
            "10",
            "--record-size",
            "100",
            "--throughput",
            "-1",
            "--transactional-id",
            "tx-perf",
            "--producer-props",
            &format!("bootstrap.servers={}", broker.bootstrap()),
        ],
        Duration::from_secs(90),
    )
    .expect("run ProducerPerformance");
    let took = started.elapsed();
    let all = format!("{}\n{}", out.stdout, out.stderr);
    assert!(!out.success, "ProducerPerformance succeeded without transactions?\n{all}");
    assert!(took < Duration::from_secs(30), "failed only after {took:?} (max.block.ms is 60 s)\n{all}");
    assert!(all.contains("transactions are not supported"), "the client's error does not say why:\n{all}");
    assert_eq!(log_lines(&broker, "transactions"), 1, "{}", broker.stderr_tail(40));
}
