//! Array-length pre-check for request frames, run before the generated decoders.
//!
//! kafka-protocol 0.18 decodes every array with `Vec::with_capacity(n)`, `n` straight off the
//! wire, before decoding a single element (`protocol/types.rs`, `Array::decode` and
//! `CompactArray::decode`). A 15-byte frame claiming 2^32 elements asks the allocator for
//! hundreds of GB; the refusal is `handle_alloc_error`, an abort that `catch_unwind` cannot
//! stop, so one hostile frame would kill the broker (tests/decode_limits.rs).
//!
//! This module walks a frame along the request schemas of the APIs Skiff serves and refuses
//! any array (or string or bytes) whose length prefix exceeds the bytes left in the frame —
//! the rule Kafka's own Java decoder applies ("Tried to allocate a collection of size N, but
//! there are only M bytes remaining"). Every array element occupies at least one byte on the
//! wire, so no well-formed request is refused. The walk reads exactly what the generated
//! decoder reads, in the same order, so each length prefix the decoder will trust has been
//! checked here first; where the two could differ, the generated decoder fails first (unknown
//! and version-invalid tagged fields). It stops at the body's own tagged fields, the last thing
//! the decoder reads: nothing after them can hold an array.
//!
//! The schemas mirror kafka-protocol 0.18's generated `decode` functions (`src/messages/*_request.rs`)
//! for the versions in [`super::SUPPORTED_APIS`]; `tests::schemas_match_the_codec` encodes a
//! populated request of every advertised version and checks the walk ends exactly where the
//! body's tagged fields begin, so a schema drift after a crate upgrade fails the tests.

use kafka_protocol::messages::ApiKey;

/// What one field is on the wire. Strings and bytes are nullable-or-not alike here: a null
/// where the decoder wants a value is its error to report.
#[derive(Clone, Copy)]
enum Kind {
    /// Fixed width (Int8/Boolean = 1, Int16 = 2, Int32 = 4, Int64 = 8, Uuid = 16).
    Fixed(usize),
    /// `String` (i16 length) or, in flexible versions, `CompactString`.
    Str,
    /// `Bytes` (i32 length) or, in flexible versions, `CompactBytes`.
    Bytes,
    /// An array of structs with these fields (and tagged fields in flexible versions).
    Structs(&'static [Field]),
    /// A nullable struct (`OptionStruct`): an Int8 presence marker (1 = present), then the
    /// struct's fields (and tagged fields in flexible versions).
    OptStruct(&'static [Field]),
    /// An array of Int32.
    Int32s,
    /// An array of Int64.
    Int64s,
    /// An array of strings.
    Strs,
}

/// A field present in versions `min..=max`.
#[derive(Clone, Copy)]
struct Field {
    kind: Kind,
    min: i16,
    max: i16,
}

const fn all(kind: Kind) -> Field {
    Field { kind, min: 0, max: i16::MAX }
}
const fn from(min: i16, kind: Kind) -> Field {
    Field { kind, min, max: i16::MAX }
}
const fn until(max: i16, kind: Kind) -> Field {
    Field { kind, min: 0, max }
}

const I8: Kind = Kind::Fixed(1);
const BOOL: Kind = Kind::Fixed(1);
const I16: Kind = Kind::Fixed(2);
const I32: Kind = Kind::Fixed(4);
const I64: Kind = Kind::Fixed(8);
const UUID: Kind = Kind::Fixed(16);

/// A request body: its fields and the first flexible version.
struct Schema {
    key: ApiKey,
    flexible: i16,
    fields: &'static [Field],
}

const PRODUCE_PARTITION: &[Field] = &[all(I32), all(Kind::Bytes)];
const PRODUCE_TOPIC: &[Field] = &[until(12, Kind::Str), from(13, UUID), all(Kind::Structs(PRODUCE_PARTITION))];

const FETCH_PARTITION: &[Field] = &[all(I32), from(9, I32), all(I64), from(12, I32), from(5, I64), all(I32)];
const FETCH_TOPIC: &[Field] = &[until(12, Kind::Str), from(13, UUID), all(Kind::Structs(FETCH_PARTITION))];
const FORGOTTEN_TOPIC: &[Field] = &[Field { kind: Kind::Str, min: 7, max: 12 }, from(13, UUID), from(7, Kind::Int32s)];

const LIST_OFFSETS_PARTITION: &[Field] = &[all(I32), from(4, I32), all(I64)];
const LIST_OFFSETS_TOPIC: &[Field] = &[all(Kind::Str), all(Kind::Structs(LIST_OFFSETS_PARTITION))];

const METADATA_TOPIC: &[Field] = &[from(10, UUID), all(Kind::Str)];

const CREATE_ASSIGNMENT: &[Field] = &[all(I32), all(Kind::Int32s)];
const CREATE_CONFIG: &[Field] = &[all(Kind::Str), all(Kind::Str)];
const CREATE_TOPIC: &[Field] =
    &[all(Kind::Str), all(I32), all(I16), all(Kind::Structs(CREATE_ASSIGNMENT)), all(Kind::Structs(CREATE_CONFIG))];

const DELETE_TOPIC_STATE: &[Field] = &[from(6, Kind::Str), from(6, UUID)];

const DELETE_RECORDS_PARTITION: &[Field] = &[all(I32), all(I64)];
const DELETE_RECORDS_TOPIC: &[Field] = &[all(Kind::Str), all(Kind::Structs(DELETE_RECORDS_PARTITION))];

const EPOCH_PARTITION: &[Field] = &[all(I32), all(I32), all(I32)];
const EPOCH_TOPIC: &[Field] = &[all(Kind::Str), all(Kind::Structs(EPOCH_PARTITION))];

const DESCRIBE_CONFIGS_RESOURCE: &[Field] = &[all(I8), all(Kind::Str), all(Kind::Strs)];

const ALTER_CONFIG: &[Field] = &[all(Kind::Str), all(Kind::Str)];
const ALTER_RESOURCE: &[Field] = &[all(I8), all(Kind::Str), all(Kind::Structs(ALTER_CONFIG))];

const PARTITIONS_ASSIGNMENT: &[Field] = &[all(Kind::Int32s)];
const PARTITIONS_TOPIC: &[Field] = &[all(Kind::Str), all(I32), all(Kind::Structs(PARTITIONS_ASSIGNMENT))];

const INCREMENTAL_CONFIG: &[Field] = &[all(Kind::Str), all(I8), all(Kind::Str)];
const INCREMENTAL_RESOURCE: &[Field] = &[all(I8), all(Kind::Str), all(Kind::Structs(INCREMENTAL_CONFIG))];

// Consumer groups.
const JOIN_PROTOCOL: &[Field] = &[all(Kind::Str), all(Kind::Bytes)];
const SYNC_ASSIGNMENT: &[Field] = &[all(Kind::Str), all(Kind::Bytes)];
const LEAVE_MEMBER: &[Field] = &[all(Kind::Str), all(Kind::Str), from(5, Kind::Str)];
const COMMIT_PARTITION: &[Field] = &[all(I32), all(I64), from(6, I32), all(Kind::Str)];
const COMMIT_TOPIC: &[Field] = &[all(Kind::Str), all(Kind::Structs(COMMIT_PARTITION))];
const FETCH_OFFSETS_TOPIC: &[Field] = &[all(Kind::Str), all(Kind::Int32s)];
const FETCH_OFFSETS_GROUP: &[Field] =
    &[all(Kind::Str), from(9, Kind::Str), from(9, I32), all(Kind::Structs(FETCH_OFFSETS_TOPIC))];
const OFFSET_DELETE_PARTITION: &[Field] = &[all(I32)];
const CONSUMER_HEARTBEAT_OWNED: &[Field] = &[all(UUID), all(Kind::Int32s)];
const OFFSET_DELETE_TOPIC: &[Field] = &[all(Kind::Str), all(Kind::Structs(OFFSET_DELETE_PARTITION))];

const LOG_DIRS_TOPIC: &[Field] = &[all(Kind::Str), all(Kind::Int32s)];
const QUORUM_PARTITION: &[Field] = &[all(I32)];
const QUORUM_TOPIC: &[Field] = &[all(Kind::Str), all(Kind::Structs(QUORUM_PARTITION))];
const ELECT_TOPIC: &[Field] = &[all(Kind::Str), all(Kind::Int32s)];
const PRODUCERS_TOPIC: &[Field] = &[all(Kind::Str), all(Kind::Int32s)];
const REASSIGN_PARTITION: &[Field] = &[all(I32), all(Kind::Int32s)];
const REASSIGN_TOPIC: &[Field] = &[all(Kind::Str), all(Kind::Structs(REASSIGN_PARTITION))];
const LIST_REASSIGN_TOPIC: &[Field] = &[all(Kind::Str), all(Kind::Int32s)];
const FEATURE_UPDATE: &[Field] = &[all(Kind::Str), all(I16), until(0, BOOL), from(1, I8)];

// Transactions.
const ADD_PARTITIONS_TOPIC: &[Field] = &[all(Kind::Str), all(Kind::Int32s)];
const ADD_PARTITIONS_TRANSACTION: &[Field] =
    &[all(Kind::Str), all(I64), all(I16), all(BOOL), all(Kind::Structs(ADD_PARTITIONS_TOPIC))];
const TXN_COMMIT_PARTITION: &[Field] = &[all(I32), all(I64), from(2, I32), all(Kind::Str)];
const TXN_COMMIT_TOPIC: &[Field] = &[all(Kind::Str), all(Kind::Structs(TXN_COMMIT_PARTITION))];

const DESCRIBE_TOPIC_PARTITIONS_TOPIC: &[Field] = &[all(Kind::Str)];
const DESCRIBE_TOPIC_PARTITIONS_CURSOR: &[Field] = &[all(Kind::Str), all(I32)];

const SCHEMAS: &[Schema] = &[
    Schema {
        key: ApiKey::Produce,
        flexible: 9,
        fields: &[all(Kind::Str), all(I16), all(I32), all(Kind::Structs(PRODUCE_TOPIC))],
    },
    Schema {
        key: ApiKey::Fetch,
        flexible: 12,
        fields: &[
            until(14, I32),
            all(I32),
            all(I32),
            all(I32),
            all(I8),
            from(7, I32),
            from(7, I32),
            all(Kind::Structs(FETCH_TOPIC)),
            from(7, Kind::Structs(FORGOTTEN_TOPIC)),
            from(11, Kind::Str),
        ],
    },
    Schema {
        key: ApiKey::ListOffsets,
        flexible: 6,
        fields: &[all(I32), from(2, I8), all(Kind::Structs(LIST_OFFSETS_TOPIC)), from(10, I32)],
    },
    Schema {
        key: ApiKey::Metadata,
        flexible: 9,
        fields: &[
            all(Kind::Structs(METADATA_TOPIC)),
            from(4, BOOL),
            Field { kind: BOOL, min: 8, max: 10 },
            from(8, BOOL),
        ],
    },
    Schema { key: ApiKey::ApiVersions, flexible: 3, fields: &[from(3, Kind::Str), from(3, Kind::Str)] },
    Schema { key: ApiKey::CreateTopics, flexible: 5, fields: &[all(Kind::Structs(CREATE_TOPIC)), all(I32), all(BOOL)] },
    Schema {
        key: ApiKey::DeleteTopics,
        flexible: 4,
        fields: &[from(6, Kind::Structs(DELETE_TOPIC_STATE)), until(5, Kind::Strs), all(I32)],
    },
    Schema { key: ApiKey::DeleteRecords, flexible: 2, fields: &[all(Kind::Structs(DELETE_RECORDS_TOPIC)), all(I32)] },
    Schema {
        key: ApiKey::InitProducerId,
        flexible: 2,
        fields: &[all(Kind::Str), all(I32), from(3, I64), from(3, I16)],
    },
    Schema { key: ApiKey::OffsetForLeaderEpoch, flexible: 4, fields: &[from(3, I32), all(Kind::Structs(EPOCH_TOPIC))] },
    Schema {
        key: ApiKey::DescribeConfigs,
        flexible: 4,
        fields: &[all(Kind::Structs(DESCRIBE_CONFIGS_RESOURCE)), all(BOOL), from(3, BOOL)],
    },
    Schema { key: ApiKey::AlterConfigs, flexible: 2, fields: &[all(Kind::Structs(ALTER_RESOURCE)), all(BOOL)] },
    Schema {
        key: ApiKey::CreatePartitions,
        flexible: 2,
        fields: &[all(Kind::Structs(PARTITIONS_TOPIC)), all(I32), all(BOOL)],
    },
    Schema {
        key: ApiKey::IncrementalAlterConfigs,
        flexible: 1,
        fields: &[all(Kind::Structs(INCREMENTAL_RESOURCE)), all(BOOL)],
    },
    Schema { key: ApiKey::DescribeCluster, flexible: 0, fields: &[all(BOOL), from(1, I8), from(2, BOOL)] },
    Schema {
        key: ApiKey::DescribeTopicPartitions,
        flexible: 0,
        fields: &[
            all(Kind::Structs(DESCRIBE_TOPIC_PARTITIONS_TOPIC)),
            all(I32),
            all(Kind::OptStruct(DESCRIBE_TOPIC_PARTITIONS_CURSOR)),
        ],
    },
    Schema {
        key: ApiKey::FindCoordinator,
        flexible: 3,
        fields: &[until(3, Kind::Str), from(1, I8), from(4, Kind::Strs)],
    },
    Schema {
        key: ApiKey::JoinGroup,
        flexible: 6,
        fields: &[
            all(Kind::Str),
            all(I32),
            from(1, I32),
            all(Kind::Str),
            from(5, Kind::Str),
            all(Kind::Str),
            all(Kind::Structs(JOIN_PROTOCOL)),
            from(8, Kind::Str),
        ],
    },
    Schema {
        key: ApiKey::SyncGroup,
        flexible: 4,
        fields: &[
            all(Kind::Str),
            all(I32),
            all(Kind::Str),
            from(3, Kind::Str),
            from(5, Kind::Str),
            from(5, Kind::Str),
            all(Kind::Structs(SYNC_ASSIGNMENT)),
        ],
    },
    Schema {
        key: ApiKey::Heartbeat,
        flexible: 4,
        fields: &[all(Kind::Str), all(I32), all(Kind::Str), from(3, Kind::Str)],
    },
    Schema {
        key: ApiKey::LeaveGroup,
        flexible: 4,
        fields: &[all(Kind::Str), until(2, Kind::Str), from(3, Kind::Structs(LEAVE_MEMBER))],
    },
    Schema {
        key: ApiKey::OffsetCommit,
        flexible: 8,
        fields: &[
            all(Kind::Str),
            all(I32),
            all(Kind::Str),
            from(7, Kind::Str),
            until(4, I64),
            all(Kind::Structs(COMMIT_TOPIC)),
        ],
    },
    Schema {
        key: ApiKey::OffsetFetch,
        flexible: 6,
        fields: &[
            until(7, Kind::Str),
            until(7, Kind::Structs(FETCH_OFFSETS_TOPIC)),
            from(8, Kind::Structs(FETCH_OFFSETS_GROUP)),
            from(7, BOOL),
        ],
    },
    Schema { key: ApiKey::DescribeGroups, flexible: 5, fields: &[all(Kind::Strs), from(3, BOOL)] },
    Schema { key: ApiKey::ListGroups, flexible: 3, fields: &[from(4, Kind::Strs), from(5, Kind::Strs)] },
    Schema { key: ApiKey::DeleteGroups, flexible: 2, fields: &[all(Kind::Strs)] },
    Schema {
        key: ApiKey::OffsetDelete,
        flexible: i16::MAX,
        fields: &[all(Kind::Str), all(Kind::Structs(OFFSET_DELETE_TOPIC))],
    },
    Schema {
        key: ApiKey::ConsumerGroupHeartbeat,
        flexible: 0,
        fields: &[
            all(Kind::Str),
            all(Kind::Str),
            all(I32),
            all(Kind::Str),
            all(Kind::Str),
            all(I32),
            all(Kind::Strs),
            from(1, Kind::Str),
            all(Kind::Str),
            all(Kind::Structs(CONSUMER_HEARTBEAT_OWNED)),
        ],
    },
    Schema { key: ApiKey::ConsumerGroupDescribe, flexible: 0, fields: &[all(Kind::Strs), all(BOOL)] },
    Schema { key: ApiKey::DescribeLogDirs, flexible: 2, fields: &[all(Kind::Structs(LOG_DIRS_TOPIC))] },
    Schema { key: ApiKey::DescribeQuorum, flexible: 0, fields: &[all(Kind::Structs(QUORUM_TOPIC))] },
    Schema {
        key: ApiKey::AlterPartitionReassignments,
        flexible: 0,
        fields: &[all(I32), from(1, BOOL), all(Kind::Structs(REASSIGN_TOPIC))],
    },
    Schema {
        key: ApiKey::ListPartitionReassignments,
        flexible: 0,
        fields: &[all(I32), all(Kind::Structs(LIST_REASSIGN_TOPIC))],
    },
    Schema { key: ApiKey::UnregisterBroker, flexible: 0, fields: &[all(I32)] },
    Schema { key: ApiKey::DescribeProducers, flexible: 0, fields: &[all(Kind::Structs(PRODUCERS_TOPIC))] },
    Schema {
        key: ApiKey::ElectLeaders,
        flexible: 2,
        fields: &[from(1, I8), all(Kind::Structs(ELECT_TOPIC)), all(I32)],
    },
    // Transactions (handler/txn.rs).
    Schema {
        key: ApiKey::AddPartitionsToTxn,
        flexible: 3,
        fields: &[
            from(4, Kind::Structs(ADD_PARTITIONS_TRANSACTION)),
            until(3, Kind::Str),
            until(3, I64),
            until(3, I16),
            until(3, Kind::Structs(ADD_PARTITIONS_TOPIC)),
        ],
    },
    Schema { key: ApiKey::AddOffsetsToTxn, flexible: 3, fields: &[all(Kind::Str), all(I64), all(I16), all(Kind::Str)] },
    Schema { key: ApiKey::EndTxn, flexible: 3, fields: &[all(Kind::Str), all(I64), all(I16), all(BOOL)] },
    Schema {
        key: ApiKey::TxnOffsetCommit,
        flexible: 3,
        fields: &[
            all(Kind::Str),
            all(Kind::Str),
            all(I64),
            all(I16),
            from(3, I32),
            from(3, Kind::Str),
            from(3, Kind::Str),
            all(Kind::Structs(TXN_COMMIT_TOPIC)),
        ],
    },
    Schema { key: ApiKey::DescribeTransactions, flexible: 0, fields: &[all(Kind::Strs)] },
    Schema {
        key: ApiKey::ListTransactions,
        flexible: 0,
        fields: &[all(Kind::Strs), all(Kind::Int64s), from(1, I64), from(2, Kind::Str)],
    },
    Schema {
        key: ApiKey::UpdateFeatures,
        flexible: 0,
        fields: &[all(I32), all(Kind::Structs(FEATURE_UPDATE)), from(1, BOOL)],
    },
    // Authentication (security/sasl, handler/scram_credentials.rs).
    Schema { key: ApiKey::SaslHandshake, flexible: i16::MAX, fields: &[all(Kind::Str)] },
    Schema { key: ApiKey::SaslAuthenticate, flexible: 2, fields: &[all(Kind::Bytes)] },
    Schema { key: ApiKey::DescribeUserScramCredentials, flexible: 0, fields: &[all(Kind::Structs(&[all(Kind::Str)]))] },
    Schema {
        key: ApiKey::AlterUserScramCredentials,
        flexible: 0,
        fields: &[
            all(Kind::Structs(&[all(Kind::Str), all(I8)])),
            all(Kind::Structs(&[all(Kind::Str), all(I8), all(I32), all(Kind::Bytes), all(Kind::Bytes)])),
        ],
    },
    // ACLs (handler/acls.rs): a binding or filter is type, name, pattern type, principal, host,
    // operation, permission.
    Schema { key: ApiKey::CreateAcls, flexible: 2, fields: &[all(Kind::Structs(ACL_FIELDS))] },
    Schema { key: ApiKey::DescribeAcls, flexible: 2, fields: ACL_FIELDS },
    Schema { key: ApiKey::DeleteAcls, flexible: 2, fields: &[all(Kind::Structs(ACL_FIELDS))] },
    // Client quotas: components (type, match type, match), strict.
    Schema {
        key: ApiKey::DescribeClientQuotas,
        flexible: 1,
        fields: &[all(Kind::Structs(&[all(Kind::Str), all(I8), all(Kind::Str)])), all(BOOL)],
    },
    // Entries (entity (type, name), ops (key, float64 value, remove)), validate_only.
    Schema {
        key: ApiKey::AlterClientQuotas,
        flexible: 1,
        fields: &[
            all(Kind::Structs(&[
                all(Kind::Structs(&[all(Kind::Str), all(Kind::Str)])),
                all(Kind::Structs(&[all(Kind::Str), all(Kind::Fixed(8)), all(BOOL)])),
            ])),
            all(BOOL),
        ],
    },
];

const ACL_FIELDS: &[Field] = &[all(I8), all(Kind::Str), from(1, I8), all(Kind::Str), all(Kind::Str), all(I8), all(I8)];

/// Whether [`check_lengths`] knows the body layout of `key`.
#[cfg(test)]
fn has_schema(key: ApiKey) -> bool {
    SCHEMAS.iter().any(|s| s.key == key)
}

/// Walks `frame` (request header of `header_version`, then the body of `key` at `version`) and
/// refuses any length prefix larger than the bytes after it. Returns the offset where the
/// body's tagged fields begin (the end of the body for non-flexible versions). Fails closed
/// for an API without a schema.
pub(super) fn check_lengths(frame: &[u8], key: ApiKey, version: i16, header_version: i16) -> Result<usize, String> {
    let schema = SCHEMAS.iter().find(|s| s.key == key).ok_or_else(|| format!("no length schema for {key:?}"))?;
    let mut c = Cursor { buf: frame, pos: 0 };
    // Request header: key, version, correlation id, client id (a non-compact string even in
    // header v2), then tagged fields from v2.
    c.skip(8)?;
    if header_version >= 1 {
        c.string(false)?;
    }
    if header_version >= 2 {
        c.tagged_fields()?;
    }
    let flexible = version >= schema.flexible;
    c.fields(schema.fields, version, flexible)?;
    Ok(c.pos)
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn skip(&mut self, n: usize) -> Result<(), String> {
        if n > self.remaining() {
            return Err(format!("{n} bytes needed at offset {} but only {} remain", self.pos, self.remaining()));
        }
        self.pos += n;
        Ok(())
    }

    fn bytes<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let start = self.pos;
        self.skip(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(&self.buf[start..start + N]);
        Ok(a)
    }

    /// kafka-protocol's `UnsignedVarInt`: at most five bytes, excess bits dropped.
    fn uvarint(&mut self) -> Result<u32, String> {
        let mut value = 0u32;
        for i in 0..5 {
            let [b] = self.bytes::<1>()?;
            value |= (u32::from(b) & 0x7f) << (i * 7);
            if b < 0x80 {
                break;
            }
        }
        Ok(value)
    }

    /// A length prefix: `None` for null, else the length, refused if it exceeds what is left
    /// (each unit of the length is at least one byte).
    fn length(&mut self, flexible: bool, width: usize, what: &str) -> Result<Option<usize>, String> {
        let at = self.pos;
        let n: i64 = if flexible {
            i64::from(self.uvarint()?) - 1
        } else if width == 2 {
            i64::from(i16::from_be_bytes(self.bytes::<2>()?))
        } else {
            i64::from(i32::from_be_bytes(self.bytes::<4>()?))
        };
        match n {
            -1 => Ok(None),
            n if n < -1 => Err(format!("{what} length {n} at offset {at} is negative")),
            n if n as u64 > self.remaining() as u64 => Err(format!(
                "{what} at offset {at} claims {n} {} but only {} bytes remain",
                if what == "array" { "elements" } else { "bytes" },
                self.remaining()
            )),
            n => Ok(Some(n as usize)),
        }
    }

    fn string(&mut self, flexible: bool) -> Result<(), String> {
        if let Some(n) = self.length(flexible, 2, "string")? {
            self.skip(n)?;
        }
        Ok(())
    }

    fn tagged_fields(&mut self) -> Result<(), String> {
        let count = self.uvarint()?;
        for _ in 0..count {
            self.uvarint()?;
            let size = self.uvarint()? as usize;
            self.skip(size)?;
        }
        Ok(())
    }

    fn fields(&mut self, fields: &[Field], version: i16, flexible: bool) -> Result<(), String> {
        for f in fields.iter().filter(|f| (f.min..=f.max).contains(&version)) {
            match f.kind {
                Kind::Fixed(n) => self.skip(n)?,
                Kind::Str => self.string(flexible)?,
                Kind::Bytes => {
                    if let Some(n) = self.length(flexible, 4, "bytes")? {
                        self.skip(n)?;
                    }
                }
                Kind::Structs(inner) => {
                    for _ in 0..self.length(flexible, 4, "array")?.unwrap_or(0) {
                        self.fields(inner, version, flexible)?;
                        if flexible {
                            self.tagged_fields()?;
                        }
                    }
                }
                Kind::OptStruct(inner) => {
                    let [present] = self.bytes::<1>()?;
                    if present == 1 {
                        self.fields(inner, version, flexible)?;
                        if flexible {
                            self.tagged_fields()?;
                        }
                    }
                }
                Kind::Int32s => {
                    let n = self.length(flexible, 4, "array")?.unwrap_or(0);
                    self.skip(n.checked_mul(4).ok_or("array too long")?)?;
                }
                Kind::Int64s => {
                    let n = self.length(flexible, 8, "array")?.unwrap_or(0);
                    self.skip(n.checked_mul(8).ok_or("array too long")?)?;
                }
                Kind::Strs => {
                    for _ in 0..self.length(flexible, 4, "array")?.unwrap_or(0) {
                        self.string(flexible)?;
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{DecodeError, SUPPORTED_APIS, decode_request, is_refused_version};
    use bytes::{Bytes, BytesMut};
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::{Encodable, StrBytes};

    fn s(v: &str) -> StrBytes {
        StrBytes::from_string(v.to_string())
    }
    fn topic(v: &str) -> TopicName {
        TopicName(s(v))
    }

    /// A request of `key` at `version` with two elements in every array the version has
    /// (nested ones too) and non-empty strings, encoded as a frame with its header.
    fn populated(key: ApiKey, v: i16) -> Bytes {
        let mut body = BytesMut::new();
        fn two<T: Clone>(x: T) -> Vec<T> {
            vec![x; 2]
        }
        match key {
            ApiKey::Produce => {
                use produce_request::*;
                let part =
                    PartitionProduceData::default().with_index(1).with_records(Some(Bytes::from_static(b"records")));
                let mut t = TopicProduceData::default().with_partition_data(two(part));
                t = if v <= 12 { t.with_name(topic("produce")) } else { t.with_topic_id(uuid::Uuid::from_u128(7)) };
                ProduceRequest::default()
                    .with_transactional_id(Some(TransactionalId(s("txn"))))
                    .with_acks(-1)
                    .with_topic_data(two(t))
                    .encode(&mut body, v)
            }
            ApiKey::Fetch => {
                use fetch_request::*;
                let part = FetchPartition::default().with_partition(3).with_fetch_offset(9);
                let t = FetchTopic::default().with_topic(topic("fetch")).with_partitions(two(part));
                let mut r = FetchRequest::default().with_topics(two(t));
                if v >= 7 {
                    let f = ForgottenTopic::default().with_topic(topic("gone")).with_partitions(vec![1, 2, 3]);
                    r = r.with_forgotten_topics_data(two(f));
                }
                if v >= 11 {
                    r = r.with_rack_id(s("rack"));
                }
                r.encode(&mut body, v)
            }
            ApiKey::ListOffsets => {
                use list_offsets_request::*;
                let t = ListOffsetsTopic::default()
                    .with_name(topic("lo"))
                    .with_partitions(two(ListOffsetsPartition::default().with_timestamp(-1)));
                ListOffsetsRequest::default().with_topics(two(t)).encode(&mut body, v)
            }
            ApiKey::Metadata => {
                use metadata_request::*;
                let t = MetadataRequestTopic::default().with_name(Some(topic("meta")));
                MetadataRequest::default().with_topics(Some(two(t))).encode(&mut body, v)
            }
            ApiKey::ApiVersions => {
                let mut r = ApiVersionsRequest::default();
                if v >= 3 {
                    r = r.with_client_software_name(s("skiff")).with_client_software_version(s("1.0"));
                }
                r.encode(&mut body, v)
            }
            ApiKey::CreateTopics => {
                use create_topics_request::*;
                let a = CreatableReplicaAssignment::default().with_broker_ids(vec![BrokerId(1), BrokerId(2)]);
                let c = CreatableTopicConfig::default().with_name(s("retention.ms")).with_value(Some(s("1")));
                let t = CreatableTopic::default().with_name(topic("ct")).with_assignments(two(a)).with_configs(two(c));
                CreateTopicsRequest::default().with_topics(two(t)).encode(&mut body, v)
            }
            ApiKey::DeleteTopics => {
                use delete_topics_request::*;
                let mut r = DeleteTopicsRequest::default();
                if v >= 6 {
                    r = r.with_topics(two(DeleteTopicState::default().with_name(Some(topic("dt")))));
                } else {
                    r = r.with_topic_names(two(topic("dt")));
                }
                r.encode(&mut body, v)
            }
            ApiKey::DeleteRecords => {
                use delete_records_request::*;
                let t = DeleteRecordsTopic::default()
                    .with_name(topic("dr"))
                    .with_partitions(two(DeleteRecordsPartition::default().with_offset(5)));
                DeleteRecordsRequest::default().with_topics(two(t)).encode(&mut body, v)
            }
            ApiKey::InitProducerId => InitProducerIdRequest::default()
                .with_transactional_id(Some(TransactionalId(s("txn"))))
                .encode(&mut body, v),
            ApiKey::OffsetForLeaderEpoch => {
                use offset_for_leader_epoch_request::*;
                let t = OffsetForLeaderTopic::default()
                    .with_topic(topic("ofle"))
                    .with_partitions(two(OffsetForLeaderPartition::default().with_leader_epoch(4)));
                OffsetForLeaderEpochRequest::default().with_topics(two(t)).encode(&mut body, v)
            }
            ApiKey::DescribeConfigs => {
                use describe_configs_request::*;
                let r = DescribeConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(s("dc"))
                    .with_configuration_keys(Some(two(s("retention.ms"))));
                DescribeConfigsRequest::default().with_resources(two(r)).encode(&mut body, v)
            }
            ApiKey::AlterConfigs => {
                use alter_configs_request::*;
                let c = AlterableConfig::default().with_name(s("retention.ms")).with_value(Some(s("1")));
                let r = AlterConfigsResource::default().with_resource_name(s("ac")).with_configs(two(c));
                AlterConfigsRequest::default().with_resources(two(r)).encode(&mut body, v)
            }
            ApiKey::CreatePartitions => {
                use create_partitions_request::*;
                let a = CreatePartitionsAssignment::default().with_broker_ids(vec![BrokerId(1), BrokerId(2)]);
                let t = CreatePartitionsTopic::default()
                    .with_name(topic("cp"))
                    .with_count(3)
                    .with_assignments(Some(two(a)));
                CreatePartitionsRequest::default().with_topics(two(t)).encode(&mut body, v)
            }
            ApiKey::IncrementalAlterConfigs => {
                use incremental_alter_configs_request::*;
                let c = AlterableConfig::default().with_name(s("retention.ms")).with_value(Some(s("1")));
                let r = AlterConfigsResource::default().with_resource_name(s("iac")).with_configs(two(c));
                IncrementalAlterConfigsRequest::default().with_resources(two(r)).encode(&mut body, v)
            }
            ApiKey::DescribeCluster => DescribeClusterRequest::default().encode(&mut body, v),
            ApiKey::DescribeTopicPartitions => {
                use describe_topic_partitions_request::*;
                DescribeTopicPartitionsRequest::default()
                    .with_topics(two(TopicRequest::default().with_name(topic("dtp"))))
                    .with_response_partition_limit(7)
                    .with_cursor(Some(Cursor::default().with_topic_name(topic("dtp")).with_partition_index(3)))
                    .encode(&mut body, v)
            }
            ApiKey::FindCoordinator => {
                let mut r = FindCoordinatorRequest::default();
                if v <= 3 {
                    r = r.with_key(s("group"));
                } else {
                    r = r.with_coordinator_keys(two(s("group")));
                }
                r.encode(&mut body, v)
            }
            ApiKey::JoinGroup => {
                use join_group_request::*;
                let p = JoinGroupRequestProtocol::default()
                    .with_name(s("range"))
                    .with_metadata(Bytes::from_static(b"meta"));
                let mut r = JoinGroupRequest::default()
                    .with_group_id(GroupId(s("g")))
                    .with_member_id(s("m"))
                    .with_protocol_type(s("consumer"))
                    .with_protocols(two(p));
                if v >= 5 {
                    r = r.with_group_instance_id(Some(s("i")));
                }
                if v >= 8 {
                    r = r.with_reason(Some(s("why")));
                }
                r.encode(&mut body, v)
            }
            ApiKey::SyncGroup => {
                use sync_group_request::*;
                let a = SyncGroupRequestAssignment::default()
                    .with_member_id(s("m"))
                    .with_assignment(Bytes::from_static(b"a"));
                let mut r = SyncGroupRequest::default()
                    .with_group_id(GroupId(s("g")))
                    .with_member_id(s("m"))
                    .with_assignments(two(a));
                if v >= 3 {
                    r = r.with_group_instance_id(Some(s("i")));
                }
                if v >= 5 {
                    r = r.with_protocol_type(Some(s("consumer"))).with_protocol_name(Some(s("range")));
                }
                r.encode(&mut body, v)
            }
            ApiKey::Heartbeat => {
                let mut r = HeartbeatRequest::default().with_group_id(GroupId(s("g"))).with_member_id(s("m"));
                if v >= 3 {
                    r = r.with_group_instance_id(Some(s("i")));
                }
                r.encode(&mut body, v)
            }
            ApiKey::LeaveGroup => {
                use leave_group_request::*;
                let mut r = LeaveGroupRequest::default().with_group_id(GroupId(s("g")));
                if v <= 2 {
                    r = r.with_member_id(s("m"));
                } else {
                    let mut m = MemberIdentity::default().with_member_id(s("m")).with_group_instance_id(Some(s("i")));
                    if v >= 5 {
                        m = m.with_reason(Some(s("bye")));
                    }
                    r = r.with_members(two(m));
                }
                r.encode(&mut body, v)
            }
            ApiKey::OffsetCommit => {
                use offset_commit_request::*;
                let p = OffsetCommitRequestPartition::default()
                    .with_committed_offset(5)
                    .with_committed_metadata(Some(s("md")));
                let t = OffsetCommitRequestTopic::default().with_name(topic("oc")).with_partitions(two(p));
                let mut r = OffsetCommitRequest::default()
                    .with_group_id(GroupId(s("g")))
                    .with_member_id(s("m"))
                    .with_topics(two(t));
                if v >= 7 {
                    r = r.with_group_instance_id(Some(s("i")));
                }
                r.encode(&mut body, v)
            }
            ApiKey::OffsetFetch => {
                use offset_fetch_request::*;
                let mut r = OffsetFetchRequest::default();
                if v <= 7 {
                    let t =
                        OffsetFetchRequestTopic::default().with_name(topic("of")).with_partition_indexes(vec![1, 2]);
                    r = r.with_group_id(GroupId(s("g"))).with_topics(Some(two(t)));
                } else {
                    let t =
                        OffsetFetchRequestTopics::default().with_name(topic("of")).with_partition_indexes(vec![1, 2]);
                    let mut g =
                        OffsetFetchRequestGroup::default().with_group_id(GroupId(s("g"))).with_topics(Some(two(t)));
                    if v >= 9 {
                        g = g.with_member_id(Some(s("m"))).with_member_epoch(3);
                    }
                    r = r.with_groups(two(g));
                }
                r.encode(&mut body, v)
            }
            ApiKey::DescribeGroups => {
                DescribeGroupsRequest::default().with_groups(two(GroupId(s("g")))).encode(&mut body, v)
            }
            ApiKey::ListGroups => {
                let mut r = ListGroupsRequest::default();
                if v >= 4 {
                    r = r.with_states_filter(two(s("Stable")));
                }
                if v >= 5 {
                    r = r.with_types_filter(two(s("consumer")));
                }
                r.encode(&mut body, v)
            }
            ApiKey::DeleteGroups => {
                DeleteGroupsRequest::default().with_groups_names(two(GroupId(s("g")))).encode(&mut body, v)
            }
            ApiKey::OffsetDelete => {
                use offset_delete_request::*;
                let t = OffsetDeleteRequestTopic::default()
                    .with_name(topic("od"))
                    .with_partitions(two(OffsetDeleteRequestPartition::default().with_partition_index(1)));
                OffsetDeleteRequest::default().with_group_id(GroupId(s("g"))).with_topics(two(t)).encode(&mut body, v)
            }
            ApiKey::ConsumerGroupHeartbeat => {
                use consumer_group_heartbeat_request::*;
                let owned =
                    TopicPartitions::default().with_topic_id(uuid::Uuid::from_u128(9)).with_partitions(vec![1, 2]);
                let mut r = ConsumerGroupHeartbeatRequest::default()
                    .with_group_id(GroupId(s("g")))
                    .with_member_id(s("m"))
                    .with_member_epoch(4)
                    .with_instance_id(Some(s("i")))
                    .with_rack_id(Some(s("r")))
                    .with_subscribed_topic_names(Some(two(topic("t"))))
                    .with_server_assignor(Some(s("uniform")))
                    .with_topic_partitions(Some(two(owned)));
                if v >= 1 {
                    r = r.with_subscribed_topic_regex(Some(s("t.*")));
                }
                r.encode(&mut body, v)
            }
            ApiKey::ConsumerGroupDescribe => ConsumerGroupDescribeRequest::default()
                .with_group_ids(two(GroupId(s("g"))))
                .with_include_authorized_operations(true)
                .encode(&mut body, v),
            ApiKey::DescribeLogDirs => {
                use describe_log_dirs_request::*;
                let t = DescribableLogDirTopic::default().with_topic(topic("ld")).with_partitions(vec![1, 2]);
                DescribeLogDirsRequest::default().with_topics(Some(two(t))).encode(&mut body, v)
            }
            ApiKey::DescribeQuorum => {
                use describe_quorum_request::*;
                let t = TopicData::default()
                    .with_topic_name(topic("__cluster_metadata"))
                    .with_partitions(two(PartitionData::default()));
                DescribeQuorumRequest::default().with_topics(two(t)).encode(&mut body, v)
            }
            ApiKey::ElectLeaders => {
                use elect_leaders_request::*;
                let t = TopicPartitions::default().with_topic(topic("el")).with_partitions(vec![1, 2]);
                ElectLeadersRequest::default().with_topic_partitions(Some(two(t))).encode(&mut body, v)
            }
            ApiKey::AlterPartitionReassignments => {
                use alter_partition_reassignments_request::*;
                let p = ReassignablePartition::default().with_replicas(Some(vec![BrokerId(1), BrokerId(2)]));
                let t = ReassignableTopic::default().with_name(topic("ar")).with_partitions(two(p));
                AlterPartitionReassignmentsRequest::default().with_topics(two(t)).encode(&mut body, v)
            }
            ApiKey::ListPartitionReassignments => {
                use list_partition_reassignments_request::*;
                let t =
                    ListPartitionReassignmentsTopics::default().with_name(topic("lr")).with_partition_indexes(vec![1]);
                ListPartitionReassignmentsRequest::default().with_topics(Some(two(t))).encode(&mut body, v)
            }
            ApiKey::UnregisterBroker => {
                UnregisterBrokerRequest::default().with_broker_id(BrokerId(3)).encode(&mut body, v)
            }
            ApiKey::DescribeProducers => {
                use describe_producers_request::*;
                let t = TopicRequest::default().with_name(topic("dp")).with_partition_indexes(vec![1, 2]);
                DescribeProducersRequest::default().with_topics(two(t)).encode(&mut body, v)
            }
            ApiKey::UpdateFeatures => {
                use update_features_request::*;
                let u = FeatureUpdateKey::default().with_feature(s("group.version")).with_max_version_level(1);
                UpdateFeaturesRequest::default().with_feature_updates(two(u)).encode(&mut body, v)
            }
            ApiKey::AddPartitionsToTxn => {
                use add_partitions_to_txn_request::*;
                let t = AddPartitionsToTxnTopic::default().with_name(topic("apt")).with_partitions(vec![0, 1]);
                let mut r = AddPartitionsToTxnRequest::default();
                if v >= 4 {
                    let x = AddPartitionsToTxnTransaction::default()
                        .with_transactional_id(TransactionalId(s("txn")))
                        .with_producer_id(ProducerId(7))
                        .with_verify_only(true)
                        .with_topics(two(t));
                    r = r.with_transactions(two(x));
                } else {
                    r = r
                        .with_v3_and_below_transactional_id(TransactionalId(s("txn")))
                        .with_v3_and_below_producer_id(ProducerId(7))
                        .with_v3_and_below_topics(two(t));
                }
                r.encode(&mut body, v)
            }
            ApiKey::AddOffsetsToTxn => AddOffsetsToTxnRequest::default()
                .with_transactional_id(TransactionalId(s("txn")))
                .with_group_id(GroupId(s("g")))
                .encode(&mut body, v),
            ApiKey::EndTxn => EndTxnRequest::default()
                .with_transactional_id(TransactionalId(s("txn")))
                .with_committed(true)
                .encode(&mut body, v),
            ApiKey::TxnOffsetCommit => {
                use txn_offset_commit_request::*;
                let p = TxnOffsetCommitRequestPartition::default()
                    .with_committed_offset(5)
                    .with_committed_metadata(Some(s("md")));
                let t = TxnOffsetCommitRequestTopic::default().with_name(topic("toc")).with_partitions(two(p));
                let mut r = TxnOffsetCommitRequest::default()
                    .with_transactional_id(TransactionalId(s("txn")))
                    .with_group_id(GroupId(s("g")))
                    .with_topics(two(t));
                if v >= 3 {
                    r = r.with_member_id(s("m")).with_group_instance_id(Some(s("i")));
                }
                r.encode(&mut body, v)
            }
            ApiKey::DescribeTransactions => DescribeTransactionsRequest::default()
                .with_transactional_ids(two(TransactionalId(s("txn"))))
                .encode(&mut body, v),
            ApiKey::ListTransactions => {
                let mut r = ListTransactionsRequest::default()
                    .with_state_filters(two(s("Ongoing")))
                    .with_producer_id_filters(two(ProducerId(7)));
                if v >= 1 {
                    r = r.with_duration_filter(1000);
                }
                r.encode(&mut body, v)
            }
            ApiKey::SaslHandshake => SaslHandshakeRequest::default().with_mechanism(s("PLAIN")).encode(&mut body, v),
            ApiKey::SaslAuthenticate => {
                SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from_static(b"\0u\0p")).encode(&mut body, v)
            }
            ApiKey::DescribeUserScramCredentials => {
                use describe_user_scram_credentials_request::*;
                let u = UserName::default().with_name(s("alice"));
                DescribeUserScramCredentialsRequest::default().with_users(Some(two(u))).encode(&mut body, v)
            }
            ApiKey::AlterUserScramCredentials => {
                use alter_user_scram_credentials_request::*;
                let d = ScramCredentialDeletion::default().with_name(s("bob")).with_mechanism(1);
                let u = ScramCredentialUpsertion::default()
                    .with_name(s("alice"))
                    .with_mechanism(2)
                    .with_iterations(4096)
                    .with_salt(Bytes::from_static(b"salt"))
                    .with_salted_password(Bytes::from_static(b"salted"));
                AlterUserScramCredentialsRequest::default()
                    .with_deletions(two(d))
                    .with_upsertions(two(u))
                    .encode(&mut body, v)
            }
            ApiKey::CreateAcls => {
                use create_acls_request::*;
                let c = AclCreation::default()
                    .with_resource_type(2)
                    .with_resource_name(s("t"))
                    .with_resource_pattern_type(3)
                    .with_principal(s("User:alice"))
                    .with_host(s("*"))
                    .with_operation(3)
                    .with_permission_type(3);
                CreateAclsRequest::default().with_creations(two(c)).encode(&mut body, v)
            }
            ApiKey::DescribeAcls => DescribeAclsRequest::default()
                .with_resource_type_filter(2)
                .with_resource_name_filter(Some(s("t")))
                .with_pattern_type_filter(2)
                .with_principal_filter(Some(s("User:alice")))
                .with_host_filter(None)
                .with_operation(1)
                .with_permission_type(1)
                .encode(&mut body, v),
            ApiKey::DeleteAcls => {
                use delete_acls_request::*;
                let f = DeleteAclsFilter::default()
                    .with_resource_type_filter(1)
                    .with_resource_name_filter(Some(s("t")))
                    .with_pattern_type_filter(1)
                    .with_principal_filter(None)
                    .with_host_filter(Some(s("*")))
                    .with_operation(1)
                    .with_permission_type(1);
                DeleteAclsRequest::default().with_filters(two(f)).encode(&mut body, v)
            }
            ApiKey::DescribeClientQuotas => {
                use describe_client_quotas_request::*;
                let c = ComponentData::default().with_entity_type(s("user")).with_match(Some(s("alice")));
                DescribeClientQuotasRequest::default().with_components(two(c)).with_strict(true).encode(&mut body, v)
            }
            ApiKey::AlterClientQuotas => {
                use alter_client_quotas_request::*;
                let e = EntityData::default().with_entity_type(s("user")).with_entity_name(Some(s("alice")));
                let o = OpData::default().with_key(s("producer_byte_rate")).with_value(1024.0);
                let entry = EntryData::default().with_entity(two(e)).with_ops(two(o));
                AlterClientQuotasRequest::default().with_entries(two(entry)).encode(&mut body, v)
            }
            other => panic!("no populated request for {other:?}"),
        }
        .unwrap_or_else(|e| panic!("encode {key:?} v{v}: {e}"));
        let mut frame = BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(v)
            .with_correlation_id(5)
            .with_client_id(Some(s("client")))
            .encode(&mut frame, key.request_header_version(v))
            .expect("header");
        frame.extend_from_slice(&body);
        frame.freeze()
    }

    #[test]
    fn schemas_match_the_codec() {
        for r in SUPPORTED_APIS {
            assert!(has_schema(r.key), "{:?} is served but has no length schema", r.key);
            let flexible_from = SCHEMAS.iter().find(|s| s.key == r.key).map(|s| s.flexible).unwrap_or_default();
            for v in r.min..=r.max {
                if is_refused_version(r.key, v) {
                    continue;
                }
                let frame = populated(r.key, v);
                let end = check_lengths(&frame, r.key, v, r.key.request_header_version(v))
                    .unwrap_or_else(|e| panic!("{:?} v{v}: valid frame refused: {e}", r.key));
                // The walk stops where the body's tagged fields start: one empty section (a
                // single zero byte) in flexible versions, nothing otherwise.
                let rest = &frame[end..];
                let expected: &[u8] = if v >= flexible_from { &[0] } else { &[] };
                assert_eq!(rest, expected, "{:?} v{v}: walk ended at {end} of {}", r.key, frame.len());
                decode_request(frame).unwrap_or_else(|e| panic!("{:?} v{v}: {e}", r.key));
            }
        }
    }

    #[test]
    fn every_truncation_of_a_valid_frame_is_refused_cleanly() {
        for r in SUPPORTED_APIS {
            let v = r.max;
            let frame = populated(r.key, v);
            for cut in 8..frame.len() {
                let _ = decode_request(frame.slice(..cut));
            }
        }
    }

    #[test]
    fn oversized_length_prefixes_are_refused_before_decoding() {
        // Metadata v12, header v2 with a null client id, topics claiming u32::MAX - 1 elements.
        let frame = Bytes::from_static(&[0, 3, 0, 12, 0, 0, 0, 1, 0xff, 0xff, 0, 0xff, 0xff, 0xff, 0xff, 0x0f]);
        match decode_request(frame) {
            Err(DecodeError::Malformed { reason, correlation_id: 1, .. }) => {
                assert!(reason.contains("claims 4294967294 elements"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        // Metadata v4 (non-flexible), topics claiming i32::MAX elements.
        let frame = Bytes::from_static(&[0, 3, 0, 4, 0, 0, 0, 1, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff]);
        assert!(matches!(decode_request(frame), Err(DecodeError::Malformed { .. })));
        // An array exactly as long as the bytes left is not refused by the length check.
        let mut c = Cursor { buf: &[0, 0, 0, 2, 9, 9], pos: 0 };
        assert_eq!(c.length(false, 4, "array"), Ok(Some(2)));
        let mut c = Cursor { buf: &[0, 0, 0, 3, 9, 9], pos: 0 };
        assert!(c.length(false, 4, "array").is_err());
    }
}
