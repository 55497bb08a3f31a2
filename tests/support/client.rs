//! A minimal Kafka client for black-box tests: one TCP connection, one request at a time, the
//! `kafka-protocol` crate's encoders and decoders. It speaks exactly what the tests need and
//! reports protocol-level results (error codes) rather than retrying.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::produce_response::PartitionProduceResponse;
use kafka_protocol::messages::{
    ApiKey, CreateTopicsRequest, FetchRequest, InitProducerIdRequest, ListOffsetsRequest, MetadataRequest,
    MetadataResponse, ProduceRequest, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Versions the tests speak (all within what Skiff advertises).
pub const PRODUCE_VERSION: i16 = 9;
pub const FETCH_VERSION: i16 = 12;
pub const LIST_OFFSETS_VERSION: i16 = 7;
pub const CREATE_TOPICS_VERSION: i16 = 7;
pub const INIT_PRODUCER_ID_VERSION: i16 = 4;
pub const METADATA_VERSION: i16 = 12;

/// Bound on any single request round trip (long polls included).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// ListOffsets special timestamps.
pub const LATEST: i64 = -1;
pub const EARLIEST: i64 = -2;

/// The identity of an idempotent batch.
#[derive(Debug, Clone, Copy)]
pub struct Idempotence {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
}

/// One record to encode: key, value, headers and create time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestRecord {
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
    pub timestamp: i64,
}

impl TestRecord {
    pub fn new(key: impl Into<Bytes>, value: impl Into<Bytes>, timestamp: i64) -> Self {
        Self { key: Some(key.into()), value: Some(value.into()), headers: Vec::new(), timestamp }
    }
}

/// A record read back, with its assigned offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedRecord {
    pub offset: i64,
    pub record: TestRecord,
}

/// Encodes `records` as exactly one v2 record batch.
pub fn encode_batch(records: &[TestRecord], compression: Compression, idempotence: Option<Idempotence>) -> Bytes {
    assert!(!records.is_empty(), "a batch needs at least one record");
    let (producer_id, producer_epoch, base_sequence) = match idempotence {
        Some(i) => (i.producer_id, i.producer_epoch, i.base_sequence),
        None => (-1, -1, -1),
    };
    let encoded: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, r)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id,
            producer_epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // The encoder splits batches where `offset - sequence` changes, so the sequence
            // always advances with the offset; without idempotence the base stays -1.
            sequence: base_sequence.wrapping_add(i as i32),
            timestamp: r.timestamp,
            key: r.key.clone(),
            value: r.value.clone(),
            headers: r.headers.iter().map(|(k, v)| (StrBytes::from_string(k.clone()), v.clone())).collect(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(&mut buf, &encoded, &RecordEncodeOptions { version: 2, compression })
        .expect("encode batch");
    let bytes = buf.freeze();
    debug_assert_eq!(RecordBatchDecoder::decode_batch_info(&mut bytes.clone()).map(|b| b.len()).ok(), Some(1));
    bytes
}

/// One record batch read back, with the header fields the invariant checks need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedBatch {
    pub base_offset: i64,
    /// `base_offset + lastOffsetDelta`.
    pub last_offset: i64,
    /// Stamped by the leader that appended the batch.
    pub partition_leader_epoch: i32,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records: Vec<FetchedRecord>,
}

/// Decodes every whole batch in a fetched `records` blob, keeping the batch headers. A
/// truncated batch at the end (which a Kafka broker may send) is ignored.
pub fn decode_batches(mut data: Bytes) -> anyhow::Result<Vec<FetchedBatch>> {
    // baseOffset (8) + batchLength (4): the length counts the bytes after these 12.
    const LOG_OVERHEAD: usize = 12;
    const HEADER_BYTES: usize = 61;
    let mut out = Vec::new();
    while data.len() >= LOG_OVERHEAD {
        let batch_length = i32::from_be_bytes(data[8..12].try_into().expect("4 bytes"));
        ensure!(batch_length >= 0, "negative batch length {batch_length}");
        let size = LOG_OVERHEAD + batch_length as usize;
        if data.len() < size {
            break;
        }
        ensure!(size >= HEADER_BYTES, "record batch of {size} bytes is shorter than its header");
        let batch = data.split_to(size);
        let last_offset_delta = i32::from_be_bytes(batch[23..27].try_into().expect("4 bytes"));
        let info = RecordBatchDecoder::decode_batch_info(&mut batch.clone())
            .context("decoding a record batch header")?
            .into_iter()
            .next()
            .context("no batch header")?;
        let records = decode_records(batch)?;
        out.push(FetchedBatch {
            base_offset: info.min_offset,
            last_offset: info.min_offset + i64::from(last_offset_delta),
            partition_leader_epoch: info.partition_leader_epoch,
            producer_id: info.producer_id,
            producer_epoch: info.producer_epoch,
            base_sequence: info.base_sequence,
            records,
        });
    }
    Ok(out)
}

/// One partition's leader as a Metadata response names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionLeader {
    pub partition: i32,
    pub error_code: i16,
    /// -1 when there is none.
    pub leader_id: i32,
    pub leader_epoch: i32,
}

/// A Metadata answer about one topic: every broker (id → `host:port`) and each partition's
/// leader.
#[derive(Debug, Clone, Default)]
pub struct TopicMetadata {
    pub brokers: BTreeMap<i32, String>,
    pub error_code: i16,
    pub partitions: Vec<PartitionLeader>,
}

impl TopicMetadata {
    pub fn partition(&self, partition: i32) -> Option<&PartitionLeader> {
        self.partitions.iter().find(|p| p.partition == partition)
    }

    /// The leader of `partition` and its address, if the partition has a leader that is listed
    /// among the brokers.
    pub fn leader(&self, partition: i32) -> Option<(i32, &str)> {
        let p = self.partition(partition)?;
        if p.error_code != 0 || p.leader_id < 0 {
            return None;
        }
        self.brokers.get(&p.leader_id).map(|addr| (p.leader_id, addr.as_str()))
    }

    /// Partitions led by `broker`.
    pub fn led_by(&self, broker: i32) -> Vec<i32> {
        self.partitions.iter().filter(|p| p.error_code == 0 && p.leader_id == broker).map(|p| p.partition).collect()
    }
}

/// Decodes every batch in a fetched `records` blob.
pub fn decode_records(mut data: Bytes) -> anyhow::Result<Vec<FetchedRecord>> {
    let mut out = Vec::new();
    while data.has_remaining() {
        let set = RecordBatchDecoder::decode(&mut data).context("decoding fetched record batch")?;
        for r in set.records {
            out.push(FetchedRecord {
                offset: r.offset,
                record: TestRecord {
                    key: r.key,
                    value: r.value,
                    headers: r.headers.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
                    timestamp: r.timestamp,
                },
            });
        }
    }
    Ok(out)
}

/// A connection's byte stream: TCP, or TLS over TCP ([`Client::over`]).
pub trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stream for S {}

/// One connection to a broker.
pub struct Client {
    stream: Box<dyn Stream>,
    next_correlation_id: i32,
    request_timeout: Duration,
    client_id: StrBytes,
}

impl Client {
    pub async fn connect(addr: &str) -> anyhow::Result<Self> {
        let stream = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(addr))
            .await
            .with_context(|| format!("connect to {addr} timed out"))?
            .with_context(|| format!("connect to {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(Self::over(stream))
    }

    /// A client over an established stream (a TLS stream, for SSL and SASL_SSL listeners).
    pub fn over(stream: impl Stream + 'static) -> Self {
        Self {
            stream: Box::new(stream),
            next_correlation_id: 1,
            request_timeout: REQUEST_TIMEOUT,
            client_id: StrBytes::from_static_str("skiff-tests"),
        }
    }

    /// Bounds each later round trip on this connection ([`REQUEST_TIMEOUT`] by default). Cluster
    /// clients use a short one so that a frozen (SIGSTOP) broker does not hold them for long.
    pub fn set_request_timeout(&mut self, timeout: Duration) {
        self.request_timeout = timeout;
    }

    /// The client id in later request headers ("skiff-tests" by default).
    pub fn set_client_id(&mut self, client_id: &str) {
        self.client_id = StrBytes::from_string(client_id.to_string());
    }

    /// Sends one typed request and decodes its response.
    pub async fn send<R: Request>(&mut self, request: &R, version: i16) -> anyhow::Result<R::Response> {
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id += 1;
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(self.client_id.clone()));
        let mut body = BytesMut::new();
        header.encode(&mut body, R::header_version(version))?;
        request.encode(&mut body, version)?;
        self.write_frame(&body).await?;
        let timeout = self.request_timeout;
        let mut frame = tokio::time::timeout(timeout, self.read_frame())
            .await
            .with_context(|| format!("no response to API {} v{version} within {timeout:?}", R::KEY))??
            .with_context(|| format!("connection closed before the response to API {} v{version}", R::KEY))?;
        let response_header =
            ResponseHeader::decode(&mut frame, <R::Response as HeaderVersion>::header_version(version))?;
        ensure!(
            response_header.correlation_id == correlation_id,
            "correlation id {} does not match request {correlation_id}",
            response_header.correlation_id
        );
        let response = R::Response::decode(&mut frame, version)?;
        ensure!(
            !frame.has_remaining(),
            "{} trailing bytes after API {} v{version} response",
            frame.remaining(),
            R::KEY
        );
        Ok(response)
    }

    /// Writes `body` with its 4-byte size prefix.
    pub async fn write_frame(&mut self, body: &[u8]) -> anyhow::Result<()> {
        let mut buf = BytesMut::with_capacity(body.len() + 4);
        buf.put_i32(i32::try_from(body.len())?);
        buf.put_slice(body);
        self.stream.write_all(&buf).await?;
        Ok(())
    }

    /// Writes raw bytes (no size prefix added).
    pub async fn write_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// Reads one response frame without its size prefix; `None` on a clean close (EOF or reset
    /// before any byte of a frame).
    pub async fn read_frame(&mut self) -> anyhow::Result<Option<Bytes>> {
        let mut len = [0u8; 4];
        match self.stream.read_exact(&mut len).await {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::UnexpectedEof
                        | std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::BrokenPipe
                ) =>
            {
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        }
        let len = i32::from_be_bytes(len);
        ensure!((0..=256 << 20).contains(&len), "implausible response frame size {len}");
        let mut buf = vec![0u8; len as usize];
        self.stream.read_exact(&mut buf).await.context("reading response frame")?;
        Ok(Some(Bytes::from(buf)))
    }

    /// True if the broker closed the connection within `within` (EOF or reset; any bytes read
    /// first are returned as an error).
    pub async fn closed_within(&mut self, within: Duration) -> anyhow::Result<bool> {
        let mut buf = [0u8; 64];
        match tokio::time::timeout(within, self.stream.read(&mut buf)).await {
            Err(_) => Ok(false),
            Ok(Ok(0)) => Ok(true),
            Ok(Ok(n)) => bail!("expected the connection to close, got {n} bytes"),
            Ok(Err(e)) if matches!(e.kind(), std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe) => {
                Ok(true)
            }
            Ok(Err(e)) => Err(e.into()),
        }
    }

    /// CreateTopics for one topic; returns the topic's error code.
    pub async fn create_topic(&mut self, name: &str, partitions: i32, configs: &[(&str, &str)]) -> anyhow::Result<i16> {
        let topic = CreatableTopic::default()
            .with_name(topic_name(name))
            .with_num_partitions(partitions)
            .with_replication_factor(1)
            .with_configs(
                configs
                    .iter()
                    .map(|(k, v)| {
                        CreatableTopicConfig::default()
                            .with_name(StrBytes::from_string((*k).to_string()))
                            .with_value(Some(StrBytes::from_string((*v).to_string())))
                    })
                    .collect(),
            );
        let req = CreateTopicsRequest::default().with_topics(vec![topic]).with_timeout_ms(30_000);
        let resp = self.send(&req, CREATE_TOPICS_VERSION).await?;
        let t = resp.topics.first().context("CreateTopics response without topics")?;
        Ok(t.error_code)
    }

    /// Creates a topic and fails unless that succeeded.
    pub async fn create_topic_ok(&mut self, name: &str, partitions: i32) -> anyhow::Result<()> {
        let code = self.create_topic(name, partitions, &[]).await?;
        ensure!(code == 0, "CreateTopics {name} failed with error {code}");
        Ok(())
    }

    /// Produce to several partitions of one topic in one request (acks=-1). Responses are in
    /// request order of `batches`.
    pub async fn produce_many(
        &mut self,
        topic: &str,
        batches: &[(i32, Bytes)],
    ) -> anyhow::Result<Vec<PartitionProduceResponse>> {
        let partition_data = batches
            .iter()
            .map(|(p, b)| PartitionProduceData::default().with_index(*p).with_records(Some(b.clone())))
            .collect();
        let req = ProduceRequest::default().with_acks(-1).with_timeout_ms(30_000).with_topic_data(vec![
            TopicProduceData::default().with_name(topic_name(topic)).with_partition_data(partition_data),
        ]);
        let resp = self.send(&req, PRODUCE_VERSION).await?;
        ensure!(resp.responses.len() == 1, "expected one topic in the produce response, got {}", resp.responses.len());
        let parts = resp.responses.into_iter().next().expect("checked").partition_responses;
        ensure!(parts.len() == batches.len(), "expected {} partition responses, got {}", batches.len(), parts.len());
        for (r, (p, _)) in parts.iter().zip(batches) {
            ensure!(r.index == *p, "partition response for {} where {p} was expected", r.index);
        }
        Ok(parts)
    }

    /// Produce one batch to one partition (acks=-1).
    pub async fn produce(
        &mut self,
        topic: &str,
        partition: i32,
        batch: Bytes,
    ) -> anyhow::Result<PartitionProduceResponse> {
        let mut r = self.produce_many(topic, &[(partition, batch)]).await?;
        Ok(r.remove(0))
    }

    /// Produce and require success; returns the base offset.
    pub async fn produce_ok(&mut self, topic: &str, partition: i32, batch: Bytes) -> anyhow::Result<i64> {
        let r = self.produce(topic, partition, batch).await?;
        ensure!(
            r.error_code == 0,
            "produce to {topic}/{partition} failed: error {} ({:?})",
            r.error_code,
            r.error_message
        );
        Ok(r.base_offset)
    }

    /// One Fetch for one partition.
    pub async fn fetch(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
        max_wait_ms: i32,
        min_bytes: i32,
    ) -> anyhow::Result<PartitionData> {
        let req = FetchRequest::default()
            .with_max_wait_ms(max_wait_ms)
            .with_min_bytes(min_bytes)
            .with_max_bytes(8 << 20)
            .with_topics(vec![FetchTopic::default().with_topic(topic_name(topic)).with_partitions(vec![
                    FetchPartition::default()
                        .with_partition(partition)
                        .with_fetch_offset(offset)
                        .with_partition_max_bytes(4 << 20),
                ])]);
        let resp = self.send(&req, FETCH_VERSION).await?;
        ensure!(resp.error_code == 0, "fetch failed: top-level error {}", resp.error_code);
        let p = resp
            .responses
            .into_iter()
            .next()
            .and_then(|t| t.partitions.into_iter().next())
            .context("fetch response without the partition")?;
        Ok(p)
    }

    /// Every record of a partition from `from` up to the high watermark (at the first fetch).
    pub async fn fetch_all(
        &mut self,
        topic: &str,
        partition: i32,
        from: i64,
    ) -> anyhow::Result<(Vec<FetchedRecord>, i64)> {
        let (batches, end) = self.fetch_batches(topic, partition, from).await?;
        // Whole batches come back: drop records before `from` and at or past the high watermark.
        let records =
            batches.into_iter().flat_map(|b| b.records).filter(|r| r.offset >= from && r.offset < end).collect();
        Ok((records, end))
    }

    /// Like [`Self::fetch_all`], keeping the record batches (whole batches, from the one that
    /// holds `from`) up to the high watermark at the first fetch. Fails on any partition error.
    pub async fn fetch_batches(
        &mut self,
        topic: &str,
        partition: i32,
        from: i64,
    ) -> anyhow::Result<(Vec<FetchedBatch>, i64)> {
        let mut out = Vec::new();
        let mut next = from;
        let mut hwm = None;
        loop {
            let p = self.fetch(topic, partition, next, 0, 0).await?;
            ensure!(p.error_code == 0, "fetch {topic}/{partition} at {next}: error {}", p.error_code);
            let end = *hwm.get_or_insert(p.high_watermark);
            if next >= end {
                return Ok((out, end));
            }
            let before = next;
            for b in decode_batches(p.records.unwrap_or_default())? {
                if b.last_offset >= next && b.base_offset < end {
                    next = b.last_offset + 1;
                    out.push(b);
                }
            }
            ensure!(next > before, "fetch {topic}/{partition} at {before} made no progress (hwm {end})");
        }
    }

    /// Metadata for `topics` (`None`: all topics), never creating topics.
    pub async fn metadata(&mut self, topics: Option<&[&str]>) -> anyhow::Result<MetadataResponse> {
        let req = MetadataRequest::default()
            .with_topics(topics.map(|names| {
                names.iter().map(|n| MetadataRequestTopic::default().with_name(Some(topic_name(n)))).collect()
            }))
            .with_allow_auto_topic_creation(false);
        self.send(&req, METADATA_VERSION).await
    }

    /// Metadata for one topic, as brokers and partition leaders.
    pub async fn topic_metadata(&mut self, topic: &str) -> anyhow::Result<TopicMetadata> {
        let resp = self.metadata(Some(&[topic])).await?;
        let brokers = resp.brokers.iter().map(|b| (b.node_id.0, format!("{}:{}", b.host.as_str(), b.port))).collect();
        let t = resp.topics.into_iter().next().context("Metadata response without the topic")?;
        let partitions = t
            .partitions
            .iter()
            .map(|p| PartitionLeader {
                partition: p.partition_index,
                error_code: p.error_code,
                leader_id: p.leader_id.0,
                leader_epoch: p.leader_epoch,
            })
            .collect();
        Ok(TopicMetadata { brokers, error_code: t.error_code, partitions })
    }

    /// ListOffsets for one partition: (error code, offset, timestamp).
    pub async fn list_offset(
        &mut self,
        topic: &str,
        partition: i32,
        timestamp: i64,
    ) -> anyhow::Result<(i16, i64, i64)> {
        let req = ListOffsetsRequest::default().with_replica_id((-1).into()).with_topics(vec![
            ListOffsetsTopic::default().with_name(topic_name(topic)).with_partitions(vec![
                ListOffsetsPartition::default().with_partition_index(partition).with_timestamp(timestamp),
            ]),
        ]);
        let resp = self.send(&req, LIST_OFFSETS_VERSION).await?;
        let p = resp
            .topics
            .into_iter()
            .next()
            .and_then(|t| t.partitions.into_iter().next())
            .context("ListOffsets response without the partition")?;
        Ok((p.error_code, p.offset, p.timestamp))
    }

    /// InitProducerId without a transactional id: (producer id, epoch).
    pub async fn init_producer_id(&mut self) -> anyhow::Result<(i64, i16)> {
        let req = InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_transaction_timeout_ms(60_000)
            .with_producer_id((-1).into())
            .with_producer_epoch(-1);
        let resp = self.send(&req, INIT_PRODUCER_ID_VERSION).await?;
        ensure!(resp.error_code == 0, "InitProducerId failed: error {}", resp.error_code);
        Ok((resp.producer_id.0, resp.producer_epoch))
    }
}

pub fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

/// Encodes a request frame body (header + body, no size prefix) for an arbitrary API key and
/// version, using `header_version` for the header layout.
pub fn raw_request(api_key: i16, version: i16, correlation_id: i32, header_version: i16, body: &[u8]) -> Bytes {
    let header = RequestHeader::default()
        .with_request_api_key(api_key)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("skiff-tests")));
    let mut buf = BytesMut::new();
    header.encode(&mut buf, header_version).expect("encode header");
    buf.put_slice(body);
    buf.freeze()
}

/// The request header version of a known API key at `version`.
pub fn request_header_version(api_key: ApiKey, version: i16) -> i16 {
    api_key.request_header_version(version)
}
