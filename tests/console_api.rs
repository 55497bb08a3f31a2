//! The console's JSON API (`/api/v1/`, issue #15) against a real `skiff dev`, checked against
//! Kafka's own tools: a topic created through the API is what `kafka-topics --describe` shows,
//! a message produced through it is what `kafka-console-consumer` reads, offsets reset through
//! it are what `kafka-consumer-groups --describe` shows, and the reset follows the tool's rules.
//!
//! Needs Kafka's tools (tests/support/kafka_cli.rs).
#![allow(clippy::disallowed_methods)] // black-box tests wait in real time; ids are test data

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{Context, ensure};
use bytes::Bytes;
use kafka_protocol::messages::{
    ConsumerGroupHeartbeatRequest, GroupId, JoinGroupRequest, SyncGroupRequest, join_group_request, sync_group_request,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::Compression;
use serde_json::{Value, json};
use support::SkiffProcess;
use support::client::{Client, TestRecord, encode_batch, topic_name};
use support::kafka_cli::{self, CONFIG_COMMAND, CONSOLE_CONSUMER, CONSUMER_GROUP_COMMAND, TOPIC_COMMAND};

/// An HTTP/1.0 request to the API, as a tool sends it (JSON, no browser headers); (status, JSON body).
fn call(skiff: &SkiffProcess, method: &str, path: &str, body: Option<&Value>) -> anyhow::Result<(u16, Value)> {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    call_with(skiff, method, path, &[("Content-Type", "application/json")], &body)
}

/// An HTTP/1.0 request with exactly `headers` (besides Host and Content-Length) and `body`.
fn call_with(
    skiff: &SkiffProcess,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> anyhow::Result<(u16, Value)> {
    let addr = skiff.http().strip_prefix("http://").context("http base")?.to_string();
    let mut s = TcpStream::connect_timeout(&addr.parse()?, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let headers: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    write!(
        s,
        "{method} /api/v1{path} HTTP/1.0\r\nHost: {addr}\r\n{headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let (head, body) = text.split_once("\r\n\r\n").with_context(|| format!("no HTTP answer: {text}"))?;
    let status: u16 = head.get(9..12).context("status")?.parse()?;
    ensure!(head.to_ascii_lowercase().contains("content-type: application/json"), "not JSON: {head}");
    let v: Value = serde_json::from_str(body).with_context(|| format!("{method} {path}: body {body}"))?;
    Ok((status, v))
}

/// `call` that must answer `want`.
fn expect(skiff: &SkiffProcess, method: &str, path: &str, body: Option<&Value>, want: u16) -> anyhow::Result<Value> {
    let (status, v) = call(skiff, method, path, body)?;
    ensure!(status == want, "{method} {path}: {status} (want {want}): {v}");
    Ok(v)
}

/// The error code of an error answer.
fn error_code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or_default()
}

fn tool(class: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = kafka_cli::run(class, args)?;
    ensure!(out.success, "{class} {args:?} failed:\n{}\n{}", out.stdout, out.stderr);
    Ok(format!("{}\n{}", out.stdout, out.stderr))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

/// Runs `body`, printing the broker's log tail on failure.
fn run(skiff: &SkiffProcess, body: impl FnOnce() -> anyhow::Result<()>) {
    if let Err(e) = body() {
        panic!("{e:#}\n---- broker log ----\n{}", skiff.stderr_tail(60));
    }
}

fn produce(skiff: &SkiffProcess, topic: &str, partition: i32, records: &[TestRecord]) -> anyhow::Result<i64> {
    let b = skiff.bootstrap().to_string();
    runtime().block_on(async {
        let mut c = Client::connect(&b).await?;
        c.produce_ok(topic, partition, encode_batch(records, Compression::None, None)).await
    })
}

#[test]
fn cluster_and_brokers_describe_the_node() {
    let skiff = SkiffProcess::start();
    run(&skiff, || {
        expect(&skiff, "POST", "/topics", Some(&json!({"name": "costed", "partitions": 2})), 201)?;
        produce(&skiff, "costed", 0, &[TestRecord::new("k", vec![b'x'; 5000], 1)])?;
        let c = expect(&skiff, "GET", "/cluster", None, 200)?;
        ensure!(c["cluster_id"].as_str().is_some_and(|s| !s.is_empty()), "cluster id: {c}");
        ensure!(c["node_id"] == 1 && c["controller_id"] == 1, "ids: {c}");
        let q = &c["controllers"];
        ensure!(q["available"] == true && q["leader_id"] == 1 && q["term"].as_i64() >= Some(1), "quorum: {q}");
        ensure!(q["commit_index"].as_i64() > Some(0) && q["applied_index"].as_i64() > Some(0), "indexes: {q}");
        let voters = q["voters"].as_array().context("voters")?;
        ensure!(voters.len() == 1 && voters[0]["leader"] == true && voters[0]["lag"] == 0, "voters: {q}");
        ensure!(c["brokers"] == json!({"total": 1, "live": 1, "fenced": 0}), "brokers: {c}");
        ensure!(c["topics"] == json!({"count": 1, "partitions": 2}), "topics: {c}");
        ensure!(c["security"] == json!({"enabled": false}), "security: {c}");
        let features = c["features"].as_array().context("features")?;
        ensure!(
            features.iter().any(|f| f["name"] == "metadata.version" && f["finalized_level"] == 25),
            "features: {c}"
        );
        let os = &c["object_store"];
        ensure!(os["objects"].as_u64() >= Some(1) && os["bytes"].as_u64() >= Some(5000), "objects: {os}");
        ensure!(os["puts"].as_u64() >= Some(1), "PUTs counted: {os}");
        ensure!(
            os["prices"] == json!({"put_per_1000": 0.005, "get_per_1000": 0.0004, "storage_per_gb_month": 0.023}),
            "default prices: {os}"
        );
        let topic = os["per_topic"]
            .as_array()
            .and_then(|ts| ts.iter().find(|t| t["topic"] == "costed"))
            .with_context(|| format!("per-topic cost: {os}"))?;
        ensure!(topic["bytes"].as_u64() >= Some(5000) && topic["puts"].as_f64() > Some(0.0), "topic: {topic}");
        ensure!(topic["cost"].as_f64() > Some(0.0), "a PUT costs: {topic}");
        // A later call has a window to compute rates over.
        std::thread::sleep(Duration::from_millis(1100));
        let c = expect(&skiff, "GET", "/cluster", None, 200)?;
        ensure!(c["object_store"]["rate_window_ms"].as_i64() >= Some(1000), "rate window: {c}");
        ensure!(c["object_store"]["cost_per_day"]["storage"].as_f64() > Some(0.0), "storage cost: {c}");

        let b = expect(&skiff, "GET", "/brokers", None, 200)?;
        let brokers = b["brokers"].as_array().context("brokers")?;
        ensure!(brokers.len() == 1, "{b}");
        ensure!(brokers[0]["id"] == 1 && brokers[0]["address"] == skiff.bootstrap(), "{b}");
        ensure!(brokers[0]["live"] == true && brokers[0]["fenced"] == false, "{b}");
        ensure!(brokers[0]["partitions_led"] == 2 && brokers[0]["rack"].is_null(), "{b}");

        let v = expect(&skiff, "GET", "/nope", None, 404)?;
        ensure!(error_code(&v) == "NOT_FOUND", "{v}");
        let v = expect(&skiff, "DELETE", "/cluster", None, 405)?;
        ensure!(error_code(&v) == "METHOD_NOT_ALLOWED", "{v}");
        let v = expect(&skiff, "POST", "/topics", Some(&json!({"nme": "x"})), 400)?;
        ensure!(error_code(&v) == "INVALID_REQUEST", "{v}");
        Ok(())
    });
}

#[test]
fn topics_through_the_api_are_what_kafka_tools_see() {
    let skiff = SkiffProcess::start();
    let b = skiff.bootstrap().to_string();
    run(&skiff, || {
        let body = json!({"name": "orders", "partitions": 3, "configs": {"retention.ms": "60000"}});
        let t = expect(&skiff, "POST", "/topics", Some(&body), 201)?;
        ensure!(t["partitions"].as_array().map(Vec::len) == Some(3) && t["retention_ms"] == 60000, "{t}");
        let retention = t["configs"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["name"] == "retention.ms"))
            .context("retention.ms")?;
        ensure!(retention["value"] == "60000" && retention["source"] == "DYNAMIC_TOPIC_CONFIG", "{retention}");
        let out = tool(TOPIC_COMMAND, &["--bootstrap-server", &b, "--describe", "--topic", "orders"])?;
        ensure!(out.contains("PartitionCount: 3") && out.contains("retention.ms=60000"), "kafka-topics:\n{out}");

        // CreateTopics' own errors.
        let v = expect(&skiff, "POST", "/topics", Some(&body), 409)?;
        ensure!(error_code(&v) == "TOPIC_ALREADY_EXISTS", "{v}");
        let v = expect(&skiff, "POST", "/topics", Some(&json!({"name": "bad name"})), 400)?;
        ensure!(error_code(&v) == "INVALID_TOPIC_EXCEPTION", "{v}");
        let bad_config = json!({"name": "x", "configs": {"retention.ms": "soon"}});
        let v = expect(&skiff, "POST", "/topics", Some(&bad_config), 400)?;
        ensure!(error_code(&v) == "INVALID_CONFIG", "{v}");
        let v = expect(&skiff, "POST", "/topics", Some(&json!({"name": "x", "partitions": 0})), 400)?;
        ensure!(error_code(&v) == "INVALID_PARTITIONS", "{v}");
        let v = expect(&skiff, "POST", "/topics", Some(&json!({"name": "x", "validate_only": true})), 200)?;
        ensure!(v["validate_only"] == true, "{v}");
        expect(&skiff, "GET", "/topics/x", None, 404)?;

        // Configs: incremental (set, delete) and whole-set.
        let patch = json!({"set": {"cleanup.policy": "compact"}, "delete": ["retention.ms"]});
        let v = expect(&skiff, "PATCH", "/topics/orders/configs", Some(&patch), 200)?;
        ensure!(v["configs"].as_array().is_some_and(|cs| cs.iter().any(|c| c["name"] == "cleanup.policy"
            && c["value"] == "compact"
            && c["source"] == "DYNAMIC_TOPIC_CONFIG")));
        let out = tool(
            CONFIG_COMMAND,
            &["--bootstrap-server", &b, "--describe", "--entity-type", "topics", "--entity-name", "orders"],
        )?;
        ensure!(out.contains("cleanup.policy=compact") && !out.contains("retention.ms=60000"), "kafka-configs:\n{out}");
        let v = expect(&skiff, "PATCH", "/topics/orders/configs", Some(&json!({"set": {"retention.ms": "-7"}})), 400)?;
        ensure!(error_code(&v) == "INVALID_CONFIG", "{v}");
        expect(&skiff, "PUT", "/topics/orders/configs", Some(&json!({"configs": {"segment.bytes": "1048576"}})), 200)?;
        let out = tool(
            CONFIG_COMMAND,
            &["--bootstrap-server", &b, "--describe", "--entity-type", "topics", "--entity-name", "orders"],
        )?;
        ensure!(
            out.contains("segment.bytes=1048576") && !out.contains("cleanup.policy=compact"),
            "AlterConfigs replaces the set:\n{out}"
        );

        // Partitions.
        let v = expect(&skiff, "POST", "/topics/orders/partitions", Some(&json!({"count": 5})), 200)?;
        ensure!(v["partitions"].as_array().map(Vec::len) == Some(5), "{v}");
        let v = expect(&skiff, "POST", "/topics/orders/partitions", Some(&json!({"count": 2})), 400)?;
        ensure!(error_code(&v) == "INVALID_PARTITIONS", "{v}");
        let out = tool(TOPIC_COMMAND, &["--bootstrap-server", &b, "--describe", "--topic", "orders"])?;
        ensure!(out.contains("PartitionCount: 5"), "kafka-topics after adding partitions:\n{out}");

        // A topic created by Kafka's tool is listed by the API.
        tool(TOPIC_COMMAND, &["--bootstrap-server", &b, "--create", "--topic", "from-cli", "--partitions", "2"])?;
        let list = expect(&skiff, "GET", "/topics", None, 200)?;
        let names: Vec<&str> =
            list["topics"].as_array().context("topics")?.iter().filter_map(|t| t["name"].as_str()).collect();
        ensure!(names == ["from-cli", "orders"], "{list}");
        let orders = &list["topics"][1];
        ensure!(
            orders["partitions"] == 5
                && orders["cleanup_policy"] == "delete"
                && orders["retention_ms"] == 604800000_i64,
            "{orders}"
        );

        // Delete.
        let v = expect(&skiff, "DELETE", "/topics/orders", None, 200)?;
        ensure!(v["deleted"] == true, "{v}");
        let v = expect(&skiff, "GET", "/topics/orders", None, 404)?;
        ensure!(error_code(&v) == "UNKNOWN_TOPIC_OR_PARTITION", "{v}");
        let v = expect(&skiff, "DELETE", "/topics/orders", None, 404)?;
        ensure!(error_code(&v) == "UNKNOWN_TOPIC_OR_PARTITION", "{v}");
        let out = tool(TOPIC_COMMAND, &["--bootstrap-server", &b, "--list"])?;
        ensure!(out.contains("from-cli") && !out.contains("orders"), "kafka-topics --list:\n{out}");
        Ok(())
    });
}

#[test]
fn messages_produced_and_browsed_through_the_api() {
    let skiff = SkiffProcess::start();
    let b = skiff.bootstrap().to_string();
    run(&skiff, || {
        expect(&skiff, "POST", "/topics", Some(&json!({"name": "events", "partitions": 1})), 201)?;
        let m = json!({"partition": 0, "key": "order-1", "value": "{\"id\":1,\"ok\":true}",
            "headers": [{"key": "trace", "value": "abc"}, {"key": "none", "value": null}]});
        let v = expect(&skiff, "POST", "/topics/events/messages", Some(&m), 201)?;
        ensure!(v["partition"] == 0 && v["offset"] == 0, "{v}");
        let m = json!({"value": "00ff10", "encoding": "hex"});
        let v = expect(&skiff, "POST", "/topics/events/messages", Some(&m), 201)?;
        ensure!(v["offset"] == 1, "{v}");
        let v = expect(&skiff, "POST", "/topics/events/messages", Some(&json!({"value": "plain text"})), 201)?;
        ensure!(v["offset"] == 2, "{v}");
        // 20 more with known timestamps: 1000, 2000, ...
        let records: Vec<TestRecord> =
            (0..20).map(|i| TestRecord::new(format!("k{i}"), format!("v{i}"), 1000 * (i + 1))).collect();
        ensure!(produce(&skiff, "events", 0, &records)? == 3, "offsets 3..22");

        let page =
            expect(&skiff, "GET", "/topics/events/partitions/0/messages?order=oldest&offset=0&limit=3", None, 200)?;
        let recs = page["records"].as_array().context("records")?;
        ensure!(recs.iter().map(|r| r["offset"].as_i64()).collect::<Vec<_>>() == [Some(0), Some(1), Some(2)], "{page}");
        ensure!(page["next_offset"] == 3 && page["high_watermark"] == 23 && page["log_start_offset"] == 0, "{page}");
        let first = &recs[0];
        ensure!(first["key"]["encoding"] == "text" && first["key"]["text"] == "order-1", "{first}");
        ensure!(first["value"]["encoding"] == "json", "{first}");
        ensure!(first["value"]["json"] == "{\n  \"id\": 1,\n  \"ok\": true\n}", "pretty JSON: {first}");
        ensure!(first["headers"][0]["key"] == "trace" && first["headers"][0]["value"]["text"] == "abc", "{first}");
        ensure!(first["headers"][1]["key"] == "none" && first["headers"][1]["value"].is_null(), "{first}");
        ensure!(
            first["timestamp_type"] == "CREATE_TIME" && first["timestamp_ms"].as_i64() > Some(1_000_000),
            "{first}"
        );
        ensure!(recs[1]["key"].is_null() && recs[1]["value"]["encoding"] == "binary", "{}", recs[1]);
        ensure!(recs[1]["value"]["hex"] == "00ff10" && recs[1]["value"]["text"].is_null(), "{}", recs[1]);
        ensure!(
            recs[2]["value"] == json!({"encoding": "text", "text": "plain text", "size_bytes": 10, "truncated": false}),
            "{}",
            recs[2]
        );

        // Newest first (the default), paging down.
        let page = expect(&skiff, "GET", "/topics/events/partitions/0/messages?limit=4", None, 200)?;
        let offsets: Vec<i64> =
            page["records"].as_array().context("records")?.iter().filter_map(|r| r["offset"].as_i64()).collect();
        ensure!(offsets == [22, 21, 20, 19] && page["next_offset"] == 18 && page["order"] == "newest", "{page}");
        let page = expect(&skiff, "GET", "/topics/events/partitions/0/messages?limit=500&offset=1", None, 200)?;
        let offsets: Vec<i64> =
            page["records"].as_array().context("records")?.iter().filter_map(|r| r["offset"].as_i64()).collect();
        ensure!(offsets == [1, 0] && page["next_offset"].is_null(), "{page}");
        // From a timestamp: ListOffsets' first offset with a timestamp >= 5500 (the API's own
        // messages carry the time they were produced, so on a topic of the client's alone).
        expect(&skiff, "POST", "/topics", Some(&json!({"name": "timed", "partitions": 1})), 201)?;
        produce(&skiff, "timed", 0, &records)?;
        let page = expect(
            &skiff,
            "GET",
            "/topics/timed/partitions/0/messages?timestamp=5500&order=oldest&limit=2",
            None,
            200,
        )?;
        let offsets: Vec<i64> =
            page["records"].as_array().context("records")?.iter().filter_map(|r| r["offset"].as_i64()).collect();
        ensure!(offsets == [5, 6], "{page}");
        ensure!(page["records"][0]["timestamp_ms"] == 6000 && page["records"][0]["value"]["text"] == "v5", "{page}");
        let page = expect(&skiff, "GET", "/topics/timed/partitions/0/messages?timestamp=5500&limit=2", None, 200)?;
        let offsets: Vec<i64> =
            page["records"].as_array().context("records")?.iter().filter_map(|r| r["offset"].as_i64()).collect();
        ensure!(offsets == [5, 4] && page["next_offset"] == 3, "{page}");
        let page =
            expect(&skiff, "GET", "/topics/timed/partitions/0/messages?timestamp=99999999&order=oldest", None, 200)?;
        ensure!(
            page["records"].as_array().is_some_and(Vec::is_empty) && page["next_offset"] == 20,
            "past the end: {page}"
        );
        // Bounds and errors.
        let page = expect(&skiff, "GET", "/topics/events/partitions/0/messages?order=oldest&limit=100000", None, 200)?;
        ensure!(page["records"].as_array().map(Vec::len) == Some(23), "{page}");
        let page = expect(&skiff, "GET", "/topics/events/partitions/0/messages?order=oldest&max_bytes=1", None, 200)?;
        ensure!(
            page["records"].as_array().map(Vec::len) == Some(1) && page["next_offset"] == 1,
            "one record at least: {page}"
        );
        let v = expect(&skiff, "GET", "/topics/events/partitions/0/messages?offset=99", None, 400)?;
        ensure!(error_code(&v) == "OFFSET_OUT_OF_RANGE", "{v}");
        let v = expect(&skiff, "GET", "/topics/events/partitions/7/messages", None, 404)?;
        ensure!(error_code(&v) == "UNKNOWN_TOPIC_OR_PARTITION", "{v}");
        let v = expect(&skiff, "GET", "/topics/events/partitions/x/messages", None, 400)?;
        ensure!(error_code(&v) == "INVALID_REQUEST", "{v}");
        let v = expect(&skiff, "GET", "/topics/events/partitions/0/messages?order=sideways", None, 400)?;
        ensure!(error_code(&v) == "INVALID_REQUEST", "{v}");
        let v = expect(&skiff, "POST", "/topics/nope/messages", Some(&json!({"value": "x"})), 404)?;
        ensure!(error_code(&v) == "UNKNOWN_TOPIC_OR_PARTITION", "{v}");
        let v = expect(&skiff, "POST", "/topics/events/messages", Some(&json!({"partition": 3, "value": "x"})), 404)?;
        ensure!(error_code(&v) == "UNKNOWN_TOPIC_OR_PARTITION", "{v}");

        // Kafka's consumer reads what the API produced.
        let out = tool(
            CONSOLE_CONSUMER,
            &[
                "--bootstrap-server",
                &b,
                "--topic",
                "events",
                "--from-beginning",
                "--max-messages",
                "1",
                "--property",
                "print.key=true",
                "--property",
                "print.headers=true",
            ],
        )?;
        ensure!(
            out.contains("trace:abc") && out.contains("order-1") && out.contains("{\"id\":1,\"ok\":true}"),
            "ConsoleConsumer:\n{out}"
        );

        // A keyed message without a partition goes where the key hashes (murmur2, as Kafka's
        // producer; the hash itself is unit-tested against Kafka's vectors): always the same one.
        expect(&skiff, "POST", "/topics", Some(&json!({"name": "keyed", "partitions": 7})), 201)?;
        let first =
            expect(&skiff, "POST", "/topics/keyed/messages", Some(&json!({"key": "customer-42", "value": "a"})), 201)?;
        let second =
            expect(&skiff, "POST", "/topics/keyed/messages", Some(&json!({"key": "customer-42", "value": "b"})), 201)?;
        let p = first["partition"].as_i64().context("partition")?;
        ensure!(second["partition"] == p && second["offset"] == 1, "{first} {second}");
        let page = expect(&skiff, "GET", &format!("/topics/keyed/partitions/{p}/messages?order=oldest"), None, 200)?;
        let values: Vec<&str> =
            page["records"].as_array().context("records")?.iter().filter_map(|r| r["value"]["text"].as_str()).collect();
        ensure!(values == ["a", "b"], "both in partition {p}: {page}");
        Ok(())
    });
}

/// Cross-site writes (CSRF): a browser page elsewhere can send a `text/plain` form POST or a
/// `no-cors` fetch to the loopback listener without asking; every write must declare JSON
/// (which cross-site needs a CORS preflight the server never grants), and a browser's
/// `Origin`/`Sec-Fetch-Site` naming another site is refused.
#[test]
fn cross_site_writes_are_refused() {
    let skiff = SkiffProcess::start();
    let host = skiff.http().strip_prefix("http://").unwrap_or_default().to_string();
    let me = format!("http://{host}");
    run(&skiff, || {
        let create = json!({"name": "csrf", "partitions": 1}).to_string();
        // What `<form enctype="text/plain">` sends (its Origin is the attacker's page).
        let form = [("Content-Type", "text/plain"), ("Origin", "http://evil.example")];
        let (status, v) = call_with(&skiff, "POST", "/topics", &form, &create)?;
        ensure!(status == 415 && error_code(&v) == "UNSUPPORTED_MEDIA_TYPE", "{status} {v}");
        let (status, v) = call_with(&skiff, "POST", "/topics", &[], &create)?;
        ensure!(status == 415, "no Content-Type: {status} {v}");
        expect(&skiff, "GET", "/topics/csrf", None, 404)?;

        fn json_from(origin: &str) -> [(&str, &str); 2] {
            [("Content-Type", "application/json"), ("Origin", origin)]
        }
        let (status, v) = call_with(&skiff, "POST", "/topics", &json_from("http://evil.example"), &create)?;
        ensure!(status == 403 && error_code(&v) == "FORBIDDEN", "cross-site Origin: {status} {v}");
        let other_port = format!("http://{}:1", host.rsplit_once(':').map_or("", |(h, _)| h));
        let (status, v) = call_with(&skiff, "POST", "/topics", &json_from(&other_port), &create)?;
        ensure!(status == 403, "another port is another origin: {status} {v}");
        let fetch = [("Content-Type", "application/json"), ("Sec-Fetch-Site", "cross-site")];
        let (status, v) = call_with(&skiff, "POST", "/topics", &fetch, &create)?;
        ensure!(status == 403 && error_code(&v) == "FORBIDDEN", "Sec-Fetch-Site: {status} {v}");
        expect(&skiff, "GET", "/topics/csrf", None, 404)?;
        ensure!(skiff.stderr_tail(40).contains("write refused"), "no log line says why");

        // The console's own pages: same origin, JSON.
        let page = [("Content-Type", "application/json"), ("Origin", me.as_str()), ("Sec-Fetch-Site", "same-origin")];
        let (status, v) = call_with(&skiff, "POST", "/topics", &page, &create)?;
        ensure!(status == 201, "same-origin create: {status} {v}");
        // A DELETE has no body, and needs the JSON content type all the same.
        let (status, v) = call_with(&skiff, "DELETE", "/topics/csrf", &[("Origin", me.as_str())], "")?;
        ensure!(status == 415, "DELETE without Content-Type: {status} {v}");
        expect(&skiff, "GET", "/topics/csrf", None, 200)?;
        let (status, v) = call_with(&skiff, "DELETE", "/topics/csrf", &page, "")?;
        ensure!(status == 200, "same-origin delete: {status} {v}");
        // Reads need nothing.
        let (status, v) = call_with(&skiff, "GET", "/topics", &[("Origin", "http://evil.example")], "")?;
        ensure!(status == 200, "reads are not writes: {status} {v}");
        Ok(())
    });
}

/// Produce and reset inputs the API cannot honour are refused, not silently changed.
#[test]
fn duplicate_headers_and_negative_reset_timestamps_are_refused() {
    let skiff = SkiffProcess::start();
    run(&skiff, || {
        expect(&skiff, "POST", "/topics", Some(&json!({"name": "dups", "partitions": 1})), 201)?;
        let m = json!({"partition": 0, "value": "v",
            "headers": [{"key": "h", "value": "1"}, {"key": "h", "value": "2"}]});
        let v = expect(&skiff, "POST", "/topics/dups/messages", Some(&m), 400)?;
        ensure!(error_code(&v) == "INVALID_REQUEST", "{v}");
        ensure!(v["error"]["message"].as_str().unwrap_or_default().contains("'h' is repeated"), "{v}");
        let page = expect(&skiff, "GET", "/topics/dups/partitions/0/messages", None, 200)?;
        ensure!(page["high_watermark"] == 0, "nothing was produced: {page}");

        // ListOffsets reads -1/-2 as latest/earliest: a negative timestamp is not a time.
        for ts in [-1, -2, -5] {
            let body = json!({"topic": "dups", "to": "timestamp", "value": ts});
            let v = expect(&skiff, "POST", "/groups/g/reset-offsets", Some(&body), 400)?;
            ensure!(error_code(&v) == "INVALID_REQUEST", "{ts}: {v}");
        }
        let body = json!({"topic": "dups", "to": "timestamp", "value": 0, "dry_run": true});
        expect(&skiff, "POST", "/groups/g/reset-offsets", Some(&body), 200)?;
        Ok(())
    });
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// The rows of `kafka-consumer-groups --describe` for `topic`: (partition, current, end, lag).
fn describe_rows(out: &str, topic: &str) -> Vec<(i64, String, String, String)> {
    let mut rows: Vec<(i64, String, String, String)> = out
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 6 && f[1] == topic).then(|| (f[2].parse().unwrap_or(-1), f[3].into(), f[4].into(), f[5].into()))
        })
        .collect();
    rows.sort();
    rows
}

#[test]
fn groups_lag_and_offset_resets_follow_kafkas_tool() {
    let skiff = SkiffProcess::start();
    let b = skiff.bootstrap().to_string();
    run(&skiff, || {
        expect(&skiff, "POST", "/topics", Some(&json!({"name": "jobs", "partitions": 2})), 201)?;
        for p in 0..2 {
            let records: Vec<TestRecord> =
                (0..10).map(|i| TestRecord::new(format!("k{i}"), format!("v{i}"), 1000 * (i + 1))).collect();
            produce(&skiff, "jobs", p, &records)?;
        }
        // A classic consumer reads everything and commits, then leaves: the group is Empty.
        tool(
            CONSOLE_CONSUMER,
            &[
                "--bootstrap-server",
                &b,
                "--topic",
                "jobs",
                "--group",
                "workers",
                "--from-beginning",
                "--max-messages",
                "20",
            ],
        )?;
        produce(&skiff, "jobs", 0, &[TestRecord::new("late", "v", 50_000), TestRecord::new("late", "v", 60_000)])?;

        let list = expect(&skiff, "GET", "/groups", None, 200)?;
        let g = list["groups"]
            .as_array()
            .and_then(|gs| gs.iter().find(|g| g["group_id"] == "workers"))
            .with_context(|| format!("{list}"))?;
        ensure!(g["type"] == "classic" && g["state"] == "Empty" && g["members"] == 0, "{g}");
        ensure!(g["total_lag"] == 2 && g["topics"] == json!(["jobs"]), "{g}");
        let d = expect(&skiff, "GET", "/groups/workers", None, 200)?;
        ensure!(d["total_lag"] == 2 && d["protocol_type"] == "consumer", "{d}");
        let rows = |d: &Value| -> Vec<(i64, String, String, String)> {
            let mut r: Vec<_> = d["offsets"]
                .as_array()
                .map(|os| {
                    os.iter()
                        .map(|o| {
                            let n = |v: &Value| v.as_i64().map_or("-".to_string(), |x| x.to_string());
                            (
                                o["partition"].as_i64().unwrap_or(-1),
                                n(&o["committed_offset"]),
                                n(&o["end_offset"]),
                                n(&o["lag"]),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            r.sort();
            r
        };
        let describe = || tool(CONSUMER_GROUP_COMMAND, &["--bootstrap-server", &b, "--describe", "--group", "workers"]);
        let tool_rows = describe_rows(&describe()?, "jobs");
        ensure!(
            rows(&d) == tool_rows && tool_rows.len() == 2,
            "API {:?} vs kafka-consumer-groups {tool_rows:?}",
            rows(&d)
        );

        // Resets: each answer is the tool's --dry-run answer, and --execute lands as the tool shows.
        let reset = |body: Value| expect(&skiff, "POST", "/groups/workers/reset-offsets", Some(&body), 200);
        let new_offsets = |v: &Value| -> Vec<(i64, i64)> {
            v["partitions"]
                .as_array()
                .map(|ps| {
                    ps.iter()
                        .map(|p| (p["partition"].as_i64().unwrap_or(-1), p["new_offset"].as_i64().unwrap_or(-1)))
                        .collect()
                })
                .unwrap_or_default()
        };
        let tool_plan = |args: &[&str]| -> anyhow::Result<Vec<(i64, i64)>> {
            let mut all = vec![
                "--bootstrap-server",
                b.as_str(),
                "--group",
                "workers",
                "--topic",
                "jobs",
                "--reset-offsets",
                "--dry-run",
            ];
            all.extend_from_slice(args);
            let out = tool(CONSUMER_GROUP_COMMAND, &all)?;
            let mut plan: Vec<(i64, i64)> = out
                .lines()
                .filter_map(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    (f.len() == 4 && f[1] == "jobs").then(|| (f[2].parse().unwrap_or(-1), f[3].parse().unwrap_or(-1)))
                })
                .collect();
            plan.sort();
            Ok(plan)
        };
        let v = reset(json!({"topic": "jobs", "to": "offset", "value": 1000, "dry_run": true}))?;
        ensure!(v["dry_run"] == true && new_offsets(&v) == [(0, 12), (1, 10)], "clamped to the end: {v}");
        ensure!(new_offsets(&v) == tool_plan(&["--to-offset", "1000"])?, "--to-offset 1000");
        let v = reset(json!({"topic": "jobs", "to": "timestamp", "value": 5500, "dry_run": true}))?;
        ensure!(new_offsets(&v) == [(0, 5), (1, 5)], "{v}");
        let v = reset(json!({"topic": "jobs", "to": "timestamp", "value": 100_000, "dry_run": true}))?;
        ensure!(new_offsets(&v) == [(0, 12), (1, 10)], "no record that late: the end: {v}");
        ensure!(describe_rows(&describe()?, "jobs") == tool_rows, "a dry run changes nothing");
        let v = reset(json!({"topic": "jobs", "partitions": [1], "to": "earliest"}))?;
        ensure!(new_offsets(&v) == [(1, 0)] && v["partitions"][0]["previous_offset"] == 10, "{v}");
        let after = describe_rows(&describe()?, "jobs");
        ensure!(after[1] == (1, "0".into(), "10".into(), "10".into()) && after[0] == tool_rows[0], "{after:?}");
        let v = reset(json!({"topic": "jobs", "to": "latest"}))?;
        ensure!(new_offsets(&v) == tool_plan(&["--to-latest"])? && new_offsets(&v) == [(0, 12), (1, 10)], "{v}");
        let d = expect(&skiff, "GET", "/groups/workers", None, 200)?;
        ensure!(d["total_lag"] == 0 && rows(&d) == describe_rows(&describe()?, "jobs"), "{d}");
        let v = expect(
            &skiff,
            "POST",
            "/groups/workers/reset-offsets",
            Some(&json!({"topic": "jobs", "to": "offset"})),
            400,
        )?;
        ensure!(error_code(&v) == "INVALID_REQUEST", "{v}");
        let v = expect(
            &skiff,
            "POST",
            "/groups/workers/reset-offsets",
            Some(&json!({"topic": "nope", "to": "latest"})),
            404,
        )?;
        ensure!(error_code(&v) == "UNKNOWN_TOPIC_OR_PARTITION", "{v}");

        // An active classic group: the tool and the API refuse alike.
        let b2 = b.clone();
        let member = runtime().block_on(async move {
            let mut c = Client::connect(&b2).await?;
            c.set_client_id("console-test");
            let join = |member: &str| {
                JoinGroupRequest::default()
                    .with_group_id(GroupId(s("busy")))
                    .with_session_timeout_ms(45_000)
                    .with_rebalance_timeout_ms(10_000)
                    .with_member_id(s(member))
                    .with_protocol_type(s("consumer"))
                    .with_protocols(vec![
                        join_group_request::JoinGroupRequestProtocol::default().with_name(s("range")).with_metadata(
                            Bytes::from_static(&[
                                0, 0, 0, 0, 0, 1, 0, 4, b'j', b'o', b'b', b's', 0xff, 0xff, 0xff, 0xff,
                            ]),
                        ),
                    ])
            };
            let r = c.send(&join(""), 9).await?;
            let r = c.send(&join(&r.member_id.to_string()), 9).await?;
            ensure!(r.error_code == 0, "JoinGroup: {r:?}");
            // The consumer protocol's assignment: jobs [0, 1].
            let assignment = Bytes::from_static(&[
                0, 0, 0, 0, 0, 1, 0, 4, b'j', b'o', b'b', b's', 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0xff, 0xff,
                0xff,
            ]);
            let sync = SyncGroupRequest::default()
                .with_group_id(GroupId(s("busy")))
                .with_generation_id(r.generation_id)
                .with_member_id(r.member_id.clone())
                .with_protocol_type(Some(s("consumer")))
                .with_protocol_name(Some(s("range")))
                .with_assignments(vec![
                    sync_group_request::SyncGroupRequestAssignment::default()
                        .with_member_id(r.member_id.clone())
                        .with_assignment(assignment),
                ]);
            let sr = c.send(&sync, 5).await?;
            ensure!(sr.error_code == 0, "SyncGroup: {sr:?}");
            anyhow::Ok(r.member_id.to_string())
        })?;
        let d = expect(&skiff, "GET", "/groups/busy", None, 200)?;
        ensure!(d["state"] == "Stable" && d["protocol"] == "range", "{d}");
        let m = &d["members"][0];
        ensure!(m["member_id"] == member.as_str() && m["client_id"] == "console-test", "{d}");
        ensure!(m["assignments"] == json!([{"topic": "jobs", "partitions": [0, 1]}]), "{d}");
        ensure!(
            d["offsets"].as_array().map(Vec::len) == Some(2) && d["offsets"][0]["member_id"] == member.as_str(),
            "{d}"
        );
        let v = expect(
            &skiff,
            "POST",
            "/groups/busy/reset-offsets",
            Some(&json!({"topic": "jobs", "to": "earliest"})),
            409,
        )?;
        let message = "Assignments can only be reset if the group 'busy' is inactive, but the current state is Stable.";
        ensure!(error_code(&v) == "NON_EMPTY_GROUP" && v["error"]["message"] == message, "{v}");
        let out = kafka_cli::run(
            CONSUMER_GROUP_COMMAND,
            &[
                "--bootstrap-server",
                &b,
                "--group",
                "busy",
                "--topic",
                "jobs",
                "--reset-offsets",
                "--to-earliest",
                "--execute",
            ],
        )?;
        ensure!(format!("{}{}", out.stdout, out.stderr).contains(message), "the tool says the same: {out:?}");

        // A KIP-848 consumer group.
        let b3 = b.clone();
        runtime().block_on(async move {
            let mut c = Client::connect(&b3).await?;
            let req = ConsumerGroupHeartbeatRequest::default()
                .with_group_id(GroupId(s("modern")))
                .with_member_id(s("m-1"))
                .with_member_epoch(0)
                .with_rebalance_timeout_ms(30_000)
                .with_subscribed_topic_names(Some(vec![topic_name("jobs")]))
                .with_topic_partitions(Some(vec![]));
            let r = c.send(&req, 1).await?;
            ensure!(r.error_code == 0, "ConsumerGroupHeartbeat: {r:?}");
            anyhow::Ok(())
        })?;
        let list = expect(&skiff, "GET", "/groups", None, 200)?;
        let g = list["groups"]
            .as_array()
            .and_then(|gs| gs.iter().find(|g| g["group_id"] == "modern"))
            .with_context(|| format!("{list}"))?;
        ensure!(g["type"] == "consumer" && g["members"] == 1, "{g}");
        let d = expect(&skiff, "GET", "/groups/modern", None, 200)?;
        ensure!(d["members"][0]["member_id"] == "m-1" && d["epoch"].as_i64() >= Some(1), "{d}");
        ensure!(d["members"][0]["assignments"] == json!([{"topic": "jobs", "partitions": [0, 1]}]), "{d}");
        let v = expect(
            &skiff,
            "POST",
            "/groups/modern/reset-offsets",
            Some(&json!({"topic": "jobs", "to": "earliest"})),
            409,
        )?;
        ensure!(error_code(&v) == "NON_EMPTY_GROUP", "{v}");
        // Once its member leaves, the consumer group is Empty and may be reset.
        let b4 = b.clone();
        runtime().block_on(async move {
            let mut c = Client::connect(&b4).await?;
            let leave = ConsumerGroupHeartbeatRequest::default()
                .with_group_id(GroupId(s("modern")))
                .with_member_id(s("m-1"))
                .with_member_epoch(-1);
            let r = c.send(&leave, 1).await?;
            ensure!(r.error_code == 0, "leaving: {r:?}");
            anyhow::Ok(())
        })?;
        let v = expect(
            &skiff,
            "POST",
            "/groups/modern/reset-offsets",
            Some(&json!({"topic": "jobs", "to": "latest"})),
            200,
        )?;
        ensure!(new_offsets(&v) == [(0, 12), (1, 10)], "{v}");
        let d = expect(&skiff, "GET", "/groups/modern", None, 200)?;
        ensure!(d["state"] == "Empty" && d["type"] == "consumer" && d["total_lag"] == 0, "{d}");
        let v = expect(&skiff, "GET", "/groups/ghost", None, 404)?;
        ensure!(error_code(&v) == "GROUP_ID_NOT_FOUND", "{v}");
        // An unknown group is Dead for the tool: a reset creates its offsets.
        let v = expect(
            &skiff,
            "POST",
            "/groups/fresh/reset-offsets",
            Some(&json!({"topic": "jobs", "to": "earliest"})),
            200,
        )?;
        ensure!(new_offsets(&v) == [(0, 0), (1, 0)], "{v}");
        let d = expect(&skiff, "GET", "/groups/fresh", None, 200)?;
        ensure!(d["total_lag"] == 22, "{d}");
        Ok(())
    });
}
