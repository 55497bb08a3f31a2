//! Seed inputs for the fuzz targets in fuzz/ (fuzz/corpus/<target>/seed-*).
//!
//! Every run checks that the seeds are what they claim (the request frames decode, the record
//! data validates); `SKIFF_WRITE_FUZZ_SEEDS=1 cargo test --test fuzz_seeds` (re)writes the
//! files. They are small and committed.
#![allow(clippy::disallowed_methods)] // black-box tests wait and measure in real time; ids are test data

use std::path::PathBuf;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ConsumerGroupDescribeRequest, ConsumerGroupHeartbeatRequest,
    DescribeTopicPartitionsRequest, FetchRequest, GroupId, MetadataRequest, OffsetCommitRequest, ProduceRequest,
    RequestHeader, TopicName,
    consumer_group_heartbeat_request::TopicPartitions,
    describe_topic_partitions_request::{Cursor, TopicRequest},
    fetch_request::{FetchPartition, FetchTopic},
    metadata_request::MetadataRequestTopic,
    offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic},
    produce_request::{PartitionProduceData, TopicProduceData},
};
use kafka_protocol::protocol::{Encodable, StrBytes};
use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};
use skiff::broker::batch::validate_produce;
use skiff::protocol::decode_request;

fn frame<T: Encodable>(key: ApiKey, version: i16, body: &T) -> Bytes {
    let mut buf = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(1)
        .with_client_id(Some(StrBytes::from_static_str("seed")))
        .encode(&mut buf, key.request_header_version(version))
        .expect("header");
    body.encode(&mut buf, version).expect("body");
    buf.freeze()
}

fn batch(n: usize, compression: Compression, base: i64) -> Bytes {
    let records: Vec<Record> = (0..n)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: base + i as i64,
            sequence: -1,
            timestamp: 1_700_000_000_000 + i as i64,
            key: Some(Bytes::from(format!("k{i}"))),
            value: Some(Bytes::from(format!("value-{i}"))),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(&mut buf, &records, &RecordEncodeOptions { version: 2, compression })
        .expect("encode batch");
    buf.freeze()
}

fn topic(name: &'static str) -> TopicName {
    TopicName(StrBytes::from_static_str(name))
}

fn request_seeds() -> Vec<(&'static str, Bytes)> {
    let produce = ProduceRequest::default().with_acks(-1).with_timeout_ms(30_000).with_topic_data(vec![
        TopicProduceData::default().with_name(topic("orders")).with_partition_data(vec![
            PartitionProduceData::default().with_index(0).with_records(Some(batch(3, Compression::None, 0))),
        ]),
    ]);
    let fetch = FetchRequest::default()
        .with_replica_id(kafka_protocol::messages::BrokerId(-1))
        .with_max_wait_ms(500)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default().with_topic(topic("orders")).with_partitions(vec![
            FetchPartition::default().with_partition(0).with_fetch_offset(0).with_partition_max_bytes(1 << 20),
        ])]);
    let metadata = MetadataRequest::default()
        .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(topic("orders")))]));
    let api_versions = ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_static_str("skiff-seed"))
        .with_client_software_version(StrBytes::from_static_str("1.0"));
    let heartbeat = ConsumerGroupHeartbeatRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str("orders-group")))
        .with_member_id(StrBytes::from_static_str("m-1"))
        .with_member_epoch(3)
        .with_rebalance_timeout_ms(300_000)
        .with_subscribed_topic_names(Some(vec![topic("orders")]))
        .with_subscribed_topic_regex(Some(StrBytes::from_static_str("ord.*")))
        .with_server_assignor(Some(StrBytes::from_static_str("uniform")))
        .with_topic_partitions(Some(vec![
            TopicPartitions::default().with_topic_id(uuid::Uuid::from_u128(7)).with_partitions(vec![0, 1]),
        ]));
    let describe = ConsumerGroupDescribeRequest::default()
        .with_group_ids(vec![GroupId(StrBytes::from_static_str("orders-group"))])
        .with_include_authorized_operations(true);
    let commit = OffsetCommitRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str("orders-group")))
        .with_generation_id_or_member_epoch(3)
        .with_member_id(StrBytes::from_static_str("m-1"))
        .with_topics(vec![OffsetCommitRequestTopic::default().with_name(topic("orders")).with_partitions(vec![
            OffsetCommitRequestPartition::default().with_partition_index(0).with_committed_offset(42),
        ])]);
    let describe_topic_partitions = DescribeTopicPartitionsRequest::default()
        .with_topics(vec![TopicRequest::default().with_name(topic("orders"))])
        .with_response_partition_limit(100)
        .with_cursor(Some(Cursor::default().with_topic_name(topic("orders")).with_partition_index(1)));
    // Operators' admin APIs (tests/admin_tools.rs).
    let log_dirs = kafka_protocol::messages::DescribeLogDirsRequest::default().with_topics(Some(vec![
        kafka_protocol::messages::describe_log_dirs_request::DescribableLogDirTopic::default()
            .with_topic(topic("orders"))
            .with_partitions(vec![0, 1]),
    ]));
    let features = kafka_protocol::messages::UpdateFeaturesRequest::default().with_feature_updates(vec![
        kafka_protocol::messages::update_features_request::FeatureUpdateKey::default()
            .with_feature(StrBytes::from_static_str("metadata.version"))
            .with_max_version_level(25)
            .with_upgrade_type(1),
    ]);
    let reassign = kafka_protocol::messages::AlterPartitionReassignmentsRequest::default().with_topics(vec![
        kafka_protocol::messages::alter_partition_reassignments_request::ReassignableTopic::default()
            .with_name(topic("orders"))
            .with_partitions(vec![
                kafka_protocol::messages::alter_partition_reassignments_request::ReassignablePartition::default()
                    .with_replicas(Some(vec![kafka_protocol::messages::BrokerId(2)])),
            ]),
    ]);
    vec![
        ("seed-describe-log-dirs-v4", frame(ApiKey::DescribeLogDirs, 4, &log_dirs)),
        ("seed-update-features-v1", frame(ApiKey::UpdateFeatures, 1, &features)),
        ("seed-alter-partition-reassignments-v1", frame(ApiKey::AlterPartitionReassignments, 1, &reassign)),
        ("seed-describe-topic-partitions-v0", frame(ApiKey::DescribeTopicPartitions, 0, &describe_topic_partitions)),
        ("seed-api-versions-v3", frame(ApiKey::ApiVersions, 3, &api_versions)),
        ("seed-consumer-group-heartbeat-v1", frame(ApiKey::ConsumerGroupHeartbeat, 1, &heartbeat)),
        ("seed-consumer-group-describe-v1", frame(ApiKey::ConsumerGroupDescribe, 1, &describe)),
        ("seed-offset-commit-v9", frame(ApiKey::OffsetCommit, 9, &commit)),
        ("seed-metadata-v12", frame(ApiKey::Metadata, 12, &metadata)),
        ("seed-metadata-v4", frame(ApiKey::Metadata, 4, &metadata)),
        ("seed-produce-v9", frame(ApiKey::Produce, 9, &produce)),
        ("seed-produce-v3", frame(ApiKey::Produce, 3, &produce)),
        ("seed-fetch-v12", frame(ApiKey::Fetch, 12, &fetch)),
    ]
}

/// record_batch inputs: 16 steering bytes (max batch bytes, offset, max bytes), then data.
fn batch_seeds() -> Vec<(&'static str, Bytes)> {
    let steer = |max_batch: u32, offset: i64, max_bytes: u32, data: &[Bytes]| {
        let mut b = BytesMut::new();
        b.put_u32(max_batch);
        b.put_i64(offset);
        b.put_u32(max_bytes);
        for d in data {
            b.extend_from_slice(d);
        }
        b.freeze()
    };
    let one = batch(3, Compression::None, 0);
    let two = [batch(2, Compression::None, 0), batch(4, Compression::Gzip, 2)];
    vec![("seed-one-batch", steer(1 << 20, 1, 1 << 20, &[one])), ("seed-two-batches", steer(1 << 20, 3, 100, &two))]
}

/// batch_reencode inputs: 16 steering bytes (keep mask, horizon flag and value, map entries,
/// map end, clock), then one batch, each codec, with a tombstone.
fn reencode_seeds() -> Vec<(&'static str, Bytes)> {
    [
        ("seed-none", Compression::None),
        ("seed-gzip", Compression::Gzip),
        ("seed-snappy", Compression::Snappy),
        ("seed-lz4", Compression::Lz4),
        ("seed-zstd", Compression::Zstd),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, (name, compression))| {
        let mut b = BytesMut::new();
        b.put_u32(0b101);
        b.put_u8(i as u8 & 1);
        b.put_i32(5_000);
        b.put_u8(2);
        b.put_i16(10);
        b.put_i32(1_000 * i as i32);
        b.extend_from_slice(&tombstone_batch(compression));
        (name, b.freeze())
    })
    .collect()
}

/// One batch of two records for one key, the second a tombstone (sequences follow offsets, so
/// the encoder keeps them in one batch).
fn tombstone_batch(compression: Compression) -> Bytes {
    let records: Vec<Record> = [Some(Bytes::from_static(b"v")), None]
        .into_iter()
        .enumerate()
        .map(|(i, value)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: 1,
            producer_epoch: 0,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: i as i32,
            timestamp: 1_700_000_000_000 + i as i64,
            key: Some(Bytes::from_static(b"k")),
            value,
            headers: [(StrBytes::from_static_str("h"), Some(Bytes::from_static(b"x")))].into_iter().collect(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(&mut buf, &records, &RecordEncodeOptions { version: 2, compression })
        .expect("encode batch");
    buf.freeze()
}

/// SASL messages: `sasl_scram` takes `client-first NUL client-final`, `sasl_plain` a PLAIN
/// response.
fn sasl_seeds() -> Vec<(&'static str, &'static str, Bytes)> {
    vec![
        ("sasl_scram", "seed-sha256-rfc7677", Bytes::from_static(
            b"\x00n,,n=user,r=rOprNGfwEbeRWgbNEkqO\0c=biws,r=rOprNGfwEbeRWgbNEkqOsrvnonce,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
        )),
        ("sasl_scram", "seed-sha512-authzid", Bytes::from_static(
            b"n,a=alice,n=alice,r=abc\0c=bixhPWFsaWNlLA==,r=abcsrvnonce,p=AAAA",
        )),
        ("sasl_plain", "seed-plain", Bytes::from_static(b"\0alice\0alice-secret")),
        ("sasl_plain", "seed-plain-authzid", Bytes::from_static(b"alice\0alice\0pw")),
        // HTTP `Authorization` header values (`http_authorization`): Basic alice:alice-secret, Bearer.
        ("http_authorization", "seed-basic", Bytes::from_static(b"Basic YWxpY2U6YWxpY2Utc2VjcmV0")),
        ("http_authorization", "seed-bearer", Bytes::from_static(b"Bearer eyJhbGciOiJFUzI1NiJ9.e30.AAAA")),
        // A client first message whose token is an ES256 JWT (signed by no key the target knows).
        ("sasl_oauthbearer", "seed-oauthbearer", Bytes::from_static(
            b"n,a=alice,\x01auth=Bearer eyJhbGciOiJFUzI1NiIsImtpZCI6ImsifQ.eyJzdWIiOiJhbGljZSIsImV4cCI6MX0.AAAA\x01traceId=1\x01\x01",
        )),
    ]
}

#[test]
fn fuzz_seeds_are_valid() {
    use skiff::security::sasl::{oauthbearer, plain, scram};
    for (target, name, input) in sasl_seeds() {
        match target {
            "sasl_scram" => {
                let first = input.split(|b| *b == 0).find(|p| !p.is_empty()).expect("a first message");
                scram::parse_client_first(first).unwrap_or_else(|e| panic!("{name}: {e}"));
                let last = input.rsplit(|b| *b == 0).next().expect("a final message");
                scram::parse_client_final(last).unwrap_or_else(|e| panic!("{name}: {e}"));
            }
            "sasl_oauthbearer" => {
                drop(oauthbearer::parse_client_first(&input).unwrap_or_else(|e| panic!("{name}: {e}")))
            }
            "http_authorization" => {
                drop(skiff::http::auth::parse_authorization(&input).unwrap_or_else(|e| panic!("{name}: {e:?}")))
            }
            _ => drop(plain::parse(&input).unwrap_or_else(|e| panic!("{name}: {e}"))),
        }
    }
    for (name, f) in request_seeds() {
        decode_request(f).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    for (name, input) in batch_seeds() {
        validate_produce(&input[16..], 1 << 20).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    for (name, input) in reencode_seeds() {
        let d = skiff::broker::records::decode(&input[16..]).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(d.header.size, input.len() - 16, "{name}: one batch");
    }
    if std::env::var_os("SKIFF_WRITE_FUZZ_SEEDS").is_some() {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
        for (target, seeds) in
            [("request_decode", request_seeds()), ("record_batch", batch_seeds()), ("batch_reencode", reencode_seeds())]
        {
            let dir = root.join(target);
            std::fs::create_dir_all(&dir).expect("corpus dir");
            for (name, bytes) in seeds {
                std::fs::write(dir.join(name), &bytes).expect("write seed");
            }
        }
        for (target, name, bytes) in sasl_seeds() {
            let dir = root.join(target);
            std::fs::create_dir_all(&dir).expect("corpus dir");
            std::fs::write(dir.join(name), &bytes).expect("write seed");
        }
    }
}
