//! Kafka wire protocol: request headers, decoding, response encoding and the advertised versions.
//!
//! Everything here is pure: bytes in, values out. Decoding never trusts the input: the fixed
//! prefix is bounds-checked by hand, every length prefix of the frame is checked against the
//! bytes that follow it before the generated decoders see it ([`bounds`]: they would otherwise
//! pre-allocate whatever an array length claims, and a refused allocation aborts), and the
//! generated decoders run under `catch_unwind`, so a garbage frame becomes a [`DecodeError`],
//! never a crashed broker.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable};

mod bounds;

/// One advertised API and the versions Skiff really implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiRange {
    pub key: ApiKey,
    pub min: i16,
    pub max: i16,
}

/// The advertised API versions (see docs/architecture.md). Produce 0-2 are advertised but
/// answered with UNSUPPORTED_VERSION, as Kafka 4 does (librdkafka checks for them, KAFKA-18659).
pub const SUPPORTED_APIS: &[ApiRange] = &[
    ApiRange { key: ApiKey::Produce, min: 0, max: 12 },
    ApiRange { key: ApiKey::Fetch, min: 4, max: 12 },
    ApiRange { key: ApiKey::ListOffsets, min: 1, max: 7 },
    ApiRange { key: ApiKey::Metadata, min: 0, max: 12 },
    ApiRange { key: ApiKey::ApiVersions, min: 0, max: 4 },
    ApiRange { key: ApiKey::CreateTopics, min: 2, max: 7 },
    ApiRange { key: ApiKey::DeleteTopics, min: 1, max: 6 },
    ApiRange { key: ApiKey::DeleteRecords, min: 0, max: 2 },
    ApiRange { key: ApiKey::InitProducerId, min: 0, max: 5 },
    ApiRange { key: ApiKey::OffsetForLeaderEpoch, min: 2, max: 4 },
    ApiRange { key: ApiKey::DescribeConfigs, min: 1, max: 4 },
    ApiRange { key: ApiKey::AlterConfigs, min: 0, max: 2 },
    ApiRange { key: ApiKey::CreatePartitions, min: 0, max: 3 },
    ApiRange { key: ApiKey::IncrementalAlterConfigs, min: 0, max: 1 },
    ApiRange { key: ApiKey::DescribeCluster, min: 0, max: 1 },
    // KIP-966: Java's Admin describeTopics uses it when advertised.
    ApiRange { key: ApiKey::DescribeTopicPartitions, min: 0, max: 0 },
    // Consumer groups (handler/groups.rs, handler/offsets.rs).
    ApiRange { key: ApiKey::FindCoordinator, min: 0, max: 4 },
    ApiRange { key: ApiKey::JoinGroup, min: 0, max: 9 },
    ApiRange { key: ApiKey::SyncGroup, min: 0, max: 5 },
    ApiRange { key: ApiKey::Heartbeat, min: 0, max: 4 },
    ApiRange { key: ApiKey::LeaveGroup, min: 0, max: 5 },
    // OffsetCommit / OffsetFetch v10 (topic ids) are beyond kafka-protocol 0.18's request
    // decoders; clients use v9 with names.
    ApiRange { key: ApiKey::OffsetCommit, min: 2, max: 9 },
    ApiRange { key: ApiKey::OffsetFetch, min: 1, max: 9 },
    ApiRange { key: ApiKey::DescribeGroups, min: 0, max: 5 },
    ApiRange { key: ApiKey::ListGroups, min: 0, max: 5 },
    ApiRange { key: ApiKey::DeleteGroups, min: 0, max: 2 },
    ApiRange { key: ApiKey::OffsetDelete, min: 0, max: 0 },
    // KIP-848 consumer groups (handler/consumer_group.rs).
    ApiRange { key: ApiKey::ConsumerGroupHeartbeat, min: 0, max: 1 },
    ApiRange { key: ApiKey::ConsumerGroupDescribe, min: 0, max: 1 },
    // Operators' admin APIs (handler/log_dirs.rs, handler/features.rs).
    ApiRange { key: ApiKey::DescribeLogDirs, min: 1, max: 4 },
    ApiRange { key: ApiKey::UpdateFeatures, min: 0, max: 2 },
    ApiRange { key: ApiKey::DescribeQuorum, min: 0, max: 2 },
    ApiRange { key: ApiKey::ElectLeaders, min: 0, max: 2 },
    ApiRange { key: ApiKey::DescribeProducers, min: 0, max: 0 },
    ApiRange { key: ApiKey::AlterPartitionReassignments, min: 0, max: 1 },
    ApiRange { key: ApiKey::ListPartitionReassignments, min: 0, max: 0 },
    ApiRange { key: ApiKey::UnregisterBroker, min: 0, max: 0 },
    // Transactions, RFC 0004 phases 1 and 2 (handler/txn.rs): EndTxn v5, TxnOffsetCommit v5 and
    // Produce v12 mean TV2 (KIP-890 part 2: epoch bump per transaction, implicit adds); older
    // versions keep TV1.
    ApiRange { key: ApiKey::AddPartitionsToTxn, min: 0, max: 5 },
    ApiRange { key: ApiKey::AddOffsetsToTxn, min: 0, max: 4 },
    ApiRange { key: ApiKey::EndTxn, min: 0, max: 5 },
    ApiRange { key: ApiKey::TxnOffsetCommit, min: 0, max: 5 },
    ApiRange { key: ApiKey::DescribeTransactions, min: 0, max: 0 },
    ApiRange { key: ApiKey::ListTransactions, min: 0, max: 1 },
    // Authentication (security/sasl, handler/scram_credentials.rs): advertised on every
    // listener, as Kafka does; a non-SASL listener answers ILLEGAL_SASL_STATE.
    ApiRange { key: ApiKey::SaslHandshake, min: 0, max: 1 },
    ApiRange { key: ApiKey::SaslAuthenticate, min: 0, max: 2 },
    ApiRange { key: ApiKey::DescribeUserScramCredentials, min: 0, max: 0 },
    ApiRange { key: ApiKey::AlterUserScramCredentials, min: 0, max: 0 },
    // ACLs (handler/acls.rs; v0 was removed in Kafka 4.0).
    ApiRange { key: ApiKey::CreateAcls, min: 1, max: 3 },
    ApiRange { key: ApiKey::DescribeAcls, min: 1, max: 3 },
    ApiRange { key: ApiKey::DeleteAcls, min: 1, max: 3 },
    // Client quotas (handler/client_quotas.rs, quota/).
    ApiRange { key: ApiKey::DescribeClientQuotas, min: 0, max: 1 },
    ApiRange { key: ApiKey::AlterClientQuotas, min: 0, max: 1 },
];

/// The advertised range of `key`, if Skiff serves it.
pub fn supported_range(key: ApiKey) -> Option<ApiRange> {
    SUPPORTED_APIS.iter().copied().find(|r| r.key == key)
}

/// Versions that are advertised but refused (see [`SUPPORTED_APIS`]).
pub fn is_refused_version(key: ApiKey, version: i16) -> bool {
    key == ApiKey::Produce && version < 3
}

/// A decoded request.
#[derive(Debug)]
pub struct Request {
    pub header: RequestHeader,
    pub api_key: ApiKey,
    pub version: i16,
    pub body: RequestKind,
}

/// Why a frame could not become a [`Request`]. Every variant that knows the correlation id can
/// still be answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("frame of {0} bytes is shorter than a request header")]
    TooShort(usize),
    #[error("unknown API key {api_key}")]
    UnknownApiKey { api_key: i16, version: i16, correlation_id: i32 },
    #[error("unsupported version {version} of {api_key:?}")]
    UnsupportedVersion { api_key: ApiKey, version: i16, correlation_id: i32 },
    #[error("malformed {api_key:?} v{version} request: {reason}")]
    Malformed { api_key: ApiKey, version: i16, correlation_id: i32, reason: String },
}

/// Decodes one request frame (without its 4-byte size prefix).
pub fn decode_request(frame: Bytes) -> Result<Request, DecodeError> {
    if frame.len() < 8 {
        return Err(DecodeError::TooShort(frame.len()));
    }
    let raw_key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let Ok(api_key) = ApiKey::try_from(raw_key) else {
        return Err(DecodeError::UnknownApiKey { api_key: raw_key, version, correlation_id });
    };
    let malformed = |reason: String| DecodeError::Malformed { api_key, version, correlation_id, reason };
    let advertised = supported_range(api_key).is_some_and(|r| (r.min..=r.max).contains(&version));
    let crate_range = api_key.valid_versions();
    let decodable = (crate_range.min..=crate_range.max).contains(&version);
    if !advertised || !decodable || is_refused_version(api_key, version) {
        return Err(DecodeError::UnsupportedVersion { api_key, version, correlation_id });
    }
    let header_version = api_key.request_header_version(version);
    bounds::check_lengths(&frame, api_key, version, header_version).map_err(malformed)?;
    let result = std::panic::catch_unwind(move || {
        let mut buf = frame;
        let header = RequestHeader::decode(&mut buf, header_version).map_err(|e| e.to_string())?;
        let body = RequestKind::decode(api_key, &mut buf, version).map_err(|e| e.to_string())?;
        Ok::<_, String>((header, body))
    });
    match result {
        Ok(Ok((header, body))) => Ok(Request { header, api_key, version, body }),
        Ok(Err(reason)) => Err(malformed(reason)),
        Err(_) => Err(malformed("decoder panicked on malformed input".into())),
    }
}

/// The client id of a request frame (header v1+: a nullable int16 string after the correlation
/// id), best effort and bounds-checked, for saying who sent a frame that cannot be decoded.
pub fn peek_client_id(frame: &[u8]) -> Option<String> {
    let len = i16::from_be_bytes([*frame.get(8)?, *frame.get(9)?]);
    let len = usize::try_from(len).ok()?;
    let bytes = frame.get(10..10usize.checked_add(len)?)?;
    Some(String::from_utf8_lossy(bytes).into_owned())
}

/// Encodes a response frame including its 4-byte size prefix. ApiVersions always uses response
/// header v0 (KIP-511).
pub fn encode_response(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &ResponseKind,
) -> Result<Bytes, String> {
    let header_version = if api_key == ApiKey::ApiVersions { 0 } else { api_key.response_header_version(version) };
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    // A fetch response is mostly record bytes (megabytes): sized up front, its encoding copies
    // them once, not again at every doubling of a growing buffer (a fifth of a catch-up
    // fetch's CPU went there).
    let capacity = match body {
        ResponseKind::Fetch(f) => f.compute_size(version).map_or(256, |n| n + 64),
        _ => 256,
    };
    let mut buf = BytesMut::with_capacity(capacity);
    buf.put_i32(0);
    header.encode(&mut buf, header_version).map_err(|e| e.to_string())?;
    body.encode(&mut buf, version).map_err(|e| e.to_string())?;
    let len = i32::try_from(buf.len() - 4).map_err(|_| "response over 2 GiB".to_string())?;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    Ok(buf.freeze())
}

/// The last-resort answer for a request that cannot be decoded or whose version has no
/// response layout here: the correlation id and an error code. Clients treat it as a failed
/// request; the connection is closed after it.
pub fn encode_bare_error(correlation_id: i32, error_code: i16) -> Bytes {
    let mut buf = BytesMut::with_capacity(10);
    buf.put_i32(6);
    buf.put_i32(correlation_id);
    buf.put_i16(error_code);
    buf.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{ApiVersionsRequest, MetadataRequest};
    use kafka_protocol::protocol::StrBytes;

    fn frame<T: Encodable>(key: ApiKey, version: i16, body: &T) -> Bytes {
        let mut buf = BytesMut::new();
        let header = RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(42)
            .with_client_id(Some(StrBytes::from_static_str("t")));
        header.encode(&mut buf, key.request_header_version(version)).expect("header");
        body.encode(&mut buf, version).expect("body");
        buf.freeze()
    }

    #[test]
    fn decodes_known_requests() {
        let f = frame(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
        let r = decode_request(f).expect("decode");
        assert_eq!(r.api_key, ApiKey::ApiVersions);
        assert_eq!(r.header.correlation_id, 42);
        let f = frame(ApiKey::Metadata, 12, &MetadataRequest::default());
        assert!(matches!(decode_request(f).expect("decode").body, RequestKind::Metadata(_)));
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        assert!(matches!(decode_request(Bytes::from_static(b"abc")), Err(DecodeError::TooShort(3))));
        let unknown = Bytes::from_static(&[0x7f, 0x00, 0, 1, 0, 0, 0, 9]);
        assert!(matches!(decode_request(unknown), Err(DecodeError::UnknownApiKey { correlation_id: 9, .. })));
        let too_new = Bytes::from_static(&[0, 3, 0, 99, 0, 0, 0, 9]);
        assert!(matches!(decode_request(too_new), Err(DecodeError::UnsupportedVersion { .. })));
        let produce_v2 = Bytes::from_static(&[0, 0, 0, 2, 0, 0, 0, 9]);
        assert!(matches!(decode_request(produce_v2), Err(DecodeError::UnsupportedVersion { .. })));
        // A metadata v12 header with truncated body.
        let truncated = Bytes::from_static(&[0, 3, 0, 12, 0, 0, 0, 9, 0, 1, b'x', 0, 5]);
        assert!(matches!(decode_request(truncated), Err(DecodeError::Malformed { .. })));
    }

    #[test]
    fn every_advertised_version_is_decodable_by_the_codec() {
        for r in SUPPORTED_APIS {
            let codec = r.key.valid_versions();
            for v in r.min..=r.max {
                assert!(
                    is_refused_version(r.key, v) || (codec.min..=codec.max).contains(&v),
                    "{:?} v{v} advertised but the codec cannot decode it",
                    r.key
                );
            }
        }
    }
}
