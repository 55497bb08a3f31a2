//! Black-box protocol tests against the `skiff` binary with the minimal client: error codes
//! for bad input, connection-level limits, idempotent producers, long polls and timestamp
//! lookups. Each test starts its own broker and is bounded by [`TEST_TIMEOUT`].
#![allow(clippy::disallowed_methods)] // black-box tests wait and measure in real time; ids are test data

mod support;

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable};
use kafka_protocol::records::Compression;
use support::SkiffProcess;
use support::client::{Client, EARLIEST, Idempotence, LATEST, TestRecord, encode_batch, raw_request};

const TEST_TIMEOUT: Duration = Duration::from_secs(90);

const CORRUPT_MESSAGE: i16 = 2;
const MESSAGE_TOO_LARGE: i16 = 10;
const INVALID_TOPIC_EXCEPTION: i16 = 17;
const UNSUPPORTED_VERSION: i16 = 35;
const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;

/// Runs one test body with a deadline; failures carry the test's name and broker address.
async fn bounded<F: Future<Output = anyhow::Result<()>>>(name: &str, broker: &SkiffProcess, body: F) {
    match tokio::time::timeout(TEST_TIMEOUT, body).await {
        Err(_) => panic!("{name}: did not finish within {TEST_TIMEOUT:?} (broker {})", broker.bootstrap()),
        Ok(Err(e)) => panic!("{name}: {e:#} (broker {})", broker.bootstrap()),
        Ok(Ok(())) => {}
    }
}

/// `n` records with keys `k<first+i>`, values `v<first+i>` and the given timestamps.
fn records(first: usize, timestamps: &[i64]) -> Vec<TestRecord> {
    timestamps
        .iter()
        .enumerate()
        .map(|(i, ts)| TestRecord::new(format!("k{}", first + i), format!("v{}", first + i), *ts))
        .collect()
}

fn plain(first: usize, n: usize) -> Bytes {
    let ts: Vec<i64> = (0..n).map(|i| 1_700_000_000_000 + (first + i) as i64).collect();
    encode_batch(&records(first, &ts), Compression::None, None)
}

#[tokio::test]
async fn corrupt_batch_fails_only_its_partition() {
    let broker = SkiffProcess::start();
    bounded("corrupt_batch_fails_only_its_partition", &broker, async {
        let mut c = Client::connect(broker.bootstrap()).await?;
        c.create_topic_ok("corrupt", 2).await?;
        let good = plain(0, 3);
        let mut bad = BytesMut::from(&plain(100, 3)[..]);
        let last = bad.len() - 1;
        bad[last] ^= 0x01; // inside the CRC-covered records: the CRC no longer matches
        let r = c.produce_many("corrupt", &[(0, good), (1, bad.freeze())]).await?;
        ensure!(r[0].error_code == 0 && r[0].base_offset == 0, "good partition 0: {:?}", r[0]);
        ensure!(
            r[1].error_code == CORRUPT_MESSAGE,
            "corrupt partition 1: expected error {CORRUPT_MESSAGE}, got {:?}",
            r[1]
        );
        let (p0, hwm0) = c.fetch_all("corrupt", 0, 0).await?;
        let (p1, hwm1) = c.fetch_all("corrupt", 1, 0).await?;
        ensure!(
            hwm0 == 3 && p0.len() == 3,
            "partition 0 should hold the 3 good records: hwm {hwm0}, {} records",
            p0.len()
        );
        ensure!(hwm1 == 0 && p1.is_empty(), "partition 1 should hold nothing: hwm {hwm1}, {} records", p1.len());
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn batch_over_max_message_bytes_is_refused() {
    let broker = SkiffProcess::start();
    bounded("batch_over_max_message_bytes_is_refused", &broker, async {
        let mut c = Client::connect(broker.bootstrap()).await?;
        let code = c.create_topic("small", 1, &[("max.message.bytes", "1000")]).await?;
        ensure!(code == 0, "CreateTopics with max.message.bytes=1000: error {code}");
        let big = encode_batch(&[TestRecord::new("k", vec![7u8; 2000], 1)], Compression::None, None);
        let r = c.produce("small", 0, big).await?;
        ensure!(
            r.error_code == MESSAGE_TOO_LARGE,
            "2 KB batch with max.message.bytes=1000: expected {MESSAGE_TOO_LARGE}, got {r:?}"
        );
        let ok = c.produce_ok("small", 0, plain(0, 2)).await?;
        ensure!(ok == 0, "small batch after the refused one should start at 0, got {ok}");
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn invalid_topic_name_is_refused() {
    let broker = SkiffProcess::start();
    bounded("invalid_topic_name_is_refused", &broker, async {
        let mut c = Client::connect(broker.bootstrap()).await?;
        let too_long = "x".repeat(250);
        for name in ["bad name!", "a/b", "..", too_long.as_str()] {
            let code = c.create_topic(name, 1, &[]).await?;
            ensure!(
                code == INVALID_TOPIC_EXCEPTION,
                "CreateTopics {name:?}: expected {INVALID_TOPIC_EXCEPTION}, got {code}"
            );
        }
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn unknown_api_key_is_answered_then_closed() {
    let broker = SkiffProcess::start();
    bounded("unknown_api_key_is_answered_then_closed", &broker, async {
        let mut c = Client::connect(broker.bootstrap()).await?;
        c.write_frame(&raw_request(9999, 0, 77, 1, &[])).await?;
        let frame = c.read_frame().await?.context("no answer to an unknown API key")?;
        ensure!(frame.len() >= 6, "answer too short: {frame:?}");
        let correlation = i32::from_be_bytes(frame[0..4].try_into()?);
        let code = i16::from_be_bytes(frame[4..6].try_into()?);
        ensure!(
            correlation == 77 && code == UNSUPPORTED_VERSION,
            "expected (77, {UNSUPPORTED_VERSION}), got ({correlation}, {code})"
        );
        ensure!(c.closed_within(Duration::from_secs(5)).await?, "connection still open after the unknown API key");
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn frame_over_socket_request_max_bytes_closes_connection() {
    let broker = SkiffProcess::start_with_config("[broker]\nsocket_request_max_bytes = 2048\n");
    bounded("frame_over_socket_request_max_bytes_closes_connection", &broker, async {
        // Under the limit: served.
        let mut c = Client::connect(broker.bootstrap()).await?;
        let small = c.send(&ApiVersionsRequest::default(), 3).await?;
        ensure!(small.error_code == 0, "ApiVersions under the limit: error {}", small.error_code);
        // Over the limit: a size prefix of 4096 with a plausible header; the broker must not
        // wait for the body.
        let mut frame = BytesMut::new();
        frame.put_i32(4096);
        frame.put_slice(&raw_request(ApiKey::Metadata as i16, 12, 5, 2, &[]));
        c.write_raw(&frame).await?;
        ensure!(
            c.closed_within(Duration::from_secs(5)).await?,
            "connection still open after a 4096-byte frame (limit 2048)"
        );
        // The broker is still fine for others.
        let mut other = Client::connect(broker.bootstrap()).await?;
        ensure!(
            other.send(&ApiVersionsRequest::default(), 3).await?.error_code == 0,
            "broker unhealthy after the big frame"
        );
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn api_versions_too_new_gets_v0_answer() {
    let broker = SkiffProcess::start();
    bounded("api_versions_too_new_gets_v0_answer", &broker, async {
        let mut c = Client::connect(broker.bootstrap()).await?;
        let mut body = BytesMut::new();
        ApiVersionsRequest::default().encode(&mut body, 3)?; // a v99 client would send something like it
        c.write_frame(&raw_request(ApiKey::ApiVersions as i16, 99, 4242, 2, &body)).await?;
        let mut frame = c.read_frame().await?.context("no answer to ApiVersions v99")?;
        let header = ResponseHeader::decode(&mut frame, 0)?;
        ensure!(header.correlation_id == 4242, "correlation id {}", header.correlation_id);
        let r = ApiVersionsResponse::decode(&mut frame, 0).context("the answer must be an ApiVersions v0 response")?;
        ensure!(r.error_code == UNSUPPORTED_VERSION, "expected error {UNSUPPORTED_VERSION}, got {}", r.error_code);
        let produce =
            r.api_keys.iter().find(|k| k.api_key == ApiKey::Produce as i16).context("Produce missing from key list")?;
        ensure!(produce.max_version >= 3, "Produce range {produce:?}");
        let versions = r
            .api_keys
            .iter()
            .find(|k| k.api_key == ApiKey::ApiVersions as i16)
            .context("ApiVersions missing from key list")?;
        // The client retries with a version from the list on the same connection.
        let retry = c.send(&ApiVersionsRequest::default(), versions.max_version.min(3)).await?;
        ensure!(retry.error_code == 0, "retry after the v0 answer: error {}", retry.error_code);
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn idempotent_duplicate_gets_same_offset() {
    let broker = SkiffProcess::start();
    bounded("idempotent_duplicate_gets_same_offset", &broker, async {
        let mut c = Client::connect(broker.bootstrap()).await?;
        c.create_topic_ok("idem", 1).await?;
        c.produce_ok("idem", 0, plain(0, 2)).await?; // a non-idempotent prefix: offsets 0-1
        let (producer_id, producer_epoch) = c.init_producer_id().await?;
        let ctx = format!("producer {producer_id} epoch {producer_epoch}");
        let at = |base_sequence| Some(Idempotence { producer_id, producer_epoch, base_sequence });
        let first = encode_batch(&records(10, &[1, 2, 3]), Compression::None, at(0));
        let a = c.produce_ok("idem", 0, first.clone()).await?;
        let b = c.produce_ok("idem", 0, first).await.with_context(|| format!("{ctx}: duplicate"))?;
        ensure!(a == 2 && b == a, "{ctx}: first append at {a}, duplicate answered with {b} (expected 2 both)");
        let next = encode_batch(&records(20, &[4, 5]), Compression::None, at(3));
        let n = c.produce_ok("idem", 0, next).await?;
        ensure!(n == 5, "{ctx}: next batch at {n}, expected 5");
        let (log, hwm) = c.fetch_all("idem", 0, 0).await?;
        let keys: Vec<String> =
            log.iter().map(|r| String::from_utf8_lossy(r.record.key.as_deref().unwrap_or_default()).into()).collect();
        ensure!(hwm == 7 && keys == ["k0", "k1", "k10", "k11", "k12", "k20", "k21"], "{ctx}: log {keys:?} (hwm {hwm})");
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn out_of_order_sequence_is_refused() {
    let broker = SkiffProcess::start();
    bounded("out_of_order_sequence_is_refused", &broker, async {
        let mut c = Client::connect(broker.bootstrap()).await?;
        c.create_topic_ok("ooo", 1).await?;
        let (producer_id, producer_epoch) = c.init_producer_id().await?;
        let at = |base_sequence| Some(Idempotence { producer_id, producer_epoch, base_sequence });
        c.produce_ok("ooo", 0, encode_batch(&records(0, &[1, 2]), Compression::None, at(0))).await?;
        // Sequence 5 where 2 is expected.
        let r = c.produce("ooo", 0, encode_batch(&records(5, &[3]), Compression::None, at(5))).await?;
        ensure!(
            r.error_code == OUT_OF_ORDER_SEQUENCE_NUMBER,
            "sequence gap: expected {OUT_OF_ORDER_SEQUENCE_NUMBER}, got {r:?}"
        );
        let (log, hwm) = c.fetch_all("ooo", 0, 0).await?;
        ensure!(hwm == 2 && log.len() == 2, "the refused batch must not be stored: hwm {hwm}");
        // The expected sequence still works.
        let ok = c.produce_ok("ooo", 0, encode_batch(&records(2, &[3]), Compression::None, at(2))).await?;
        ensure!(ok == 2, "in-order batch after the refusal at {ok}, expected 2");
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_state_survives_restart() {
    let mut broker = SkiffProcess::start();
    let addr = broker.bootstrap().to_string();
    let mut c = Client::connect(&addr).await.expect("connect");
    let (producer_id, producer_epoch) = c.init_producer_id().await.expect("InitProducerId");
    let at = |base_sequence| Some(Idempotence { producer_id, producer_epoch, base_sequence });
    let first = encode_batch(&records(0, &[1, 2, 3]), Compression::None, at(0));
    let second = encode_batch(&records(3, &[4, 5, 6]), Compression::Gzip, at(3));
    c.create_topic_ok("idem-restart", 1).await.expect("create");
    assert_eq!(c.produce_ok("idem-restart", 0, first).await.expect("first"), 0);
    assert_eq!(c.produce_ok("idem-restart", 0, second.clone()).await.expect("second"), 3);
    drop(c);
    // SIGKILL: nothing but the acknowledged state may be relied on.
    tokio::task::block_in_place(|| {
        broker.kill();
        broker.restart();
    });
    bounded("producer_state_survives_restart", &broker, async {
        let mut c = Client::connect(broker.bootstrap()).await?;
        let ctx = format!("producer {producer_id} epoch {producer_epoch} after SIGKILL + restart");
        let again = c.produce("idem-restart", 0, second).await?;
        ensure!(
            again.error_code == 0 && again.base_offset == 3,
            "{ctx}: re-sent batch (seq 3-5) answered {again:?}, expected base offset 3"
        );
        let (_, hwm) = c.fetch_all("idem-restart", 0, 0).await?;
        ensure!(hwm == 6, "{ctx}: duplicate was appended again: hwm {hwm}, expected 6");
        let gap = c.produce("idem-restart", 0, encode_batch(&records(9, &[9]), Compression::None, at(9))).await?;
        ensure!(gap.error_code == OUT_OF_ORDER_SEQUENCE_NUMBER, "{ctx}: sequence 9 where 6 is expected: {gap:?}");
        let next = c.produce_ok("idem-restart", 0, encode_batch(&records(6, &[7]), Compression::None, at(6))).await?;
        ensure!(next == 6, "{ctx}: next in-order batch at {next}, expected 6");
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_fetch_returns_early_on_produce() {
    let broker = SkiffProcess::start();
    bounded("long_poll_fetch_returns_early_on_produce", &broker, async {
        let addr = broker.bootstrap().to_string();
        let mut c = Client::connect(&addr).await?;
        c.create_topic_ok("poll", 1).await?;
        // Control: nothing arrives, the poll lasts max_wait.
        let started = Instant::now();
        let idle = c.fetch("poll", 0, 0, 2000, 1).await?;
        let idle_time = started.elapsed();
        ensure!(
            idle.error_code == 0 && idle.records.as_ref().is_none_or(|r| r.is_empty()),
            "idle poll returned {idle:?}"
        );
        ensure!(idle_time >= Duration::from_millis(1800), "idle poll with max_wait 2000 returned after {idle_time:?}");
        // Data produced 300 ms into the poll ends it early.
        let poll = tokio::spawn(async move {
            let started = Instant::now();
            let p = c.fetch("poll", 0, 0, 2000, 1).await;
            (p, started.elapsed())
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        Client::connect(&addr).await?.produce_ok("poll", 0, plain(0, 3)).await?;
        let (p, took) = poll.await?;
        let p = p?;
        let n = support::client::decode_records(p.records.unwrap_or_default())?.len();
        ensure!(n == 3, "long poll returned {n} records, expected 3");
        ensure!(
            took < Duration::from_millis(1500),
            "long poll returned after {took:?}; it should end soon after the produce at 300 ms"
        );
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn list_offsets_by_timestamp_is_exact() {
    let broker = SkiffProcess::start();
    bounded("list_offsets_by_timestamp_is_exact", &broker, async {
        let mut c = Client::connect(broker.bootstrap()).await?;
        c.create_topic_ok("times", 1).await?;
        // Two batches in one produce (one stored chunk), the second compressed: offsets 0-9.
        let mut two = BytesMut::new();
        two.put_slice(&encode_batch(&records(0, &[1000, 1010, 1020, 1030, 1040]), Compression::None, None));
        two.put_slice(&encode_batch(&records(5, &[2000, 2010, 2020, 2030, 2040]), Compression::Gzip, None));
        ensure!(c.produce_ok("times", 0, two.freeze()).await? == 0, "first produce not at 0");
        // A separate chunk with timestamps out of order: offsets 10-12.
        ensure!(
            c.produce_ok("times", 0, encode_batch(&records(10, &[3000, 2500, 3100]), Compression::Lz4, None)).await?
                == 10
        );
        let cases: &[(i64, i64, i64)] = &[
            // (query, expected offset, expected timestamp)
            (0, 0, 1000),
            (1000, 0, 1000),
            (1005, 1, 1010),
            (1040, 4, 1040),
            (1041, 5, 2000),
            (2020, 7, 2020),
            (2041, 10, 3000),
            (2500, 10, 3000), // first record with timestamp >= 2500 in offset order
            (3001, 12, 3100),
            (3100, 12, 3100),
            (3101, -1, -1),
            (-3, 12, 3100), // max timestamp
        ];
        for &(query, offset, timestamp) in cases {
            let got = c.list_offset("times", 0, query).await?;
            ensure!(
                got == (0, offset, timestamp),
                "ListOffsets timestamp {query}: expected (0, {offset}, {timestamp}), got {got:?}"
            );
        }
        let latest = c.list_offset("times", 0, LATEST).await?;
        ensure!(latest.0 == 0 && latest.1 == 13, "latest: {latest:?}");
        let earliest = c.list_offset("times", 0, EARLIEST).await?;
        ensure!(earliest.0 == 0 && earliest.1 == 0, "earliest: {earliest:?}");
        Ok(())
    })
    .await;
}

/// Crash-only supervision on the real binary: a critical task that panics (injected with the
/// debug-only `SKIFF_TEST_PANIC_TASK`) stops `skiff dev` within seconds, with a non-zero exit
/// status and an ERROR line naming the task, instead of leaving a broker whose producers or
/// groups wait forever on a dead task.
#[test]
fn critical_task_panic_stops_the_process() {
    for task in ["wal-committer", "group-coordinator"] {
        let dir = tempfile::tempdir().expect("temp dir");
        let stderr_path = dir.path().join("stderr.log");
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_skiff"));
        cmd.arg("dev").arg("--data-dir").arg(dir.path().join("data"));
        cmd.args(["--kafka-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"]);
        for (key, _) in std::env::vars_os() {
            if key.to_str().is_some_and(|k| k.starts_with("SKIFF_")) {
                cmd.env_remove(key);
            }
        }
        cmd.env("SKIFF_TEST_PANIC_TASK", task).env("SKIFF_LOG", "info");
        cmd.stdin(std::process::Stdio::null()).stdout(std::process::Stdio::null());
        cmd.stderr(std::fs::File::create(&stderr_path).expect("stderr log"));
        let mut child = Some(cmd.spawn().expect("spawn skiff"));
        let status = support::wait_child(&mut child, Duration::from_secs(20));
        if let Some(mut c) = child {
            let _ = c.kill();
            let _ = c.wait();
        }
        let log = std::fs::read_to_string(&stderr_path).unwrap_or_default();
        let status = status.unwrap_or_else(|| panic!("skiff kept running with `{task}` dead\n{log}"));
        assert!(!status.success(), "a failed critical task must exit non-zero ({status})\n{log}");
        let line = log
            .lines()
            .find(|l| l.contains("ERROR") && l.contains("critical task failed") && l.contains(task))
            .unwrap_or_else(|| panic!("no ERROR line naming `{task}`\n{log}"));
        assert!(line.contains("injected panic"), "{line}");
    }
}
