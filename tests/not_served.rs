//! What Skiff does not serve is refused at once with the protocol's non-retriable error, and
//! the broker says why at INFO the first time per client (issue #10, bug 6). Transactions,
//! refused this way until #13, are served now (tests/transactions.rs).
#![allow(clippy::disallowed_methods)] // black-box tests wait and measure in real time; ids are test data

mod support;

use std::time::Duration;

use anyhow::{Context, ensure};
use support::SkiffProcess;
use support::client::Client;

const UNSUPPORTED_VERSION: i16 = 35;
const LOG_LINE: &str = "refused a request for something Skiff does not serve";

fn log_lines(broker: &SkiffProcess, needle: &str) -> usize {
    broker.stderr_tail(100_000).lines().filter(|l| l.contains(LOG_LINE) && l.contains(needle)).count()
}

#[tokio::test]
async fn unserved_api_is_answered_closed_and_logged_once_per_client() {
    let broker = SkiffProcess::start();
    let body = async {
        let addr = broker.bootstrap().to_string();
        // API key 1000 does not exist; key 41 (DescribeDelegationToken) is Kafka's but not served.
        // The header's client id is "probe".
        for (key, version) in [(1000i16, 0i16), (1000, 0), (41, 0), (41, 0)] {
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
