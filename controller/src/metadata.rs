//! The replicated metadata: commands that go through the Raft log and the deterministic state
//! they build.
//!
//! Owns: brokers, topics (name, id, configs), partitions (leader, leader epoch, log start, end
//! offset), the object index (which byte range of which object holds which offsets), the
//! idempotent-producer state of every partition and producer-id allocation.
//!
//! Invariants, enforced here where commands apply so every replica reaches the same state:
//! * offsets are gapless per partition: an object commit must start exactly at the partition's
//!   end offset, otherwise the whole commit is rejected;
//! * one writer per leader epoch: a commit carrying a leader epoch other than the partition's
//!   current one is rejected (`Fenced`), so a deposed leader can never append;
//! * the object index changes only atomically: `ReplaceChunks` (compaction) swaps a contiguous
//!   run of chunks for one segment chunk covering exactly the same offsets, or is rejected;
//!   readers therefore never see a gap or a duplicate;
//! * an object is forgotten (`ForgetObjects`) only while no chunk references it;
//! * `apply` does no I/O and reads no clock: time comes in inside the command.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::topic_config::TopicConfig;
use crate::transactions::{
    AbortedIndex, AbortedTxn, Answer, OpenTxn, OwedMarker, TransactionsState, TxnCommand, TxnError, TxnOp, TxnStatus,
};

pub type BrokerId = i32;

/// How many recent batches per producer and partition are remembered for duplicate detection.
/// Kafka's `max.in.flight.requests.per.connection` limit for idempotence is 5.
pub const PRODUCER_BATCH_WINDOW: usize = 5;

/// A change to the metadata, replicated through Raft and applied in log order.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum Command {
    /// The first command of every cluster's log: fixes the cluster id.
    InitCluster {
        cluster_id: String,
    },
    /// A broker process announces itself (start-up, or after it learned it was fenced); it is
    /// live until fenced. See `placement.rs`.
    RegisterBroker(BrokerRegistration),
    /// The controller leader saw no heartbeat from this incarnation for a session timeout, or
    /// the broker asked for a controlled shutdown: it is fenced and its partitions and
    /// coordinator shards move to live brokers in new epochs.
    FenceBroker {
        broker_id: BrokerId,
        incarnation: Uuid,
        controlled: bool,
    },
    CreateTopic(CreateTopic),
    DeleteTopic {
        name: String,
    },
    CreatePartitions {
        name: String,
        total_count: i32,
        /// Replica lists of the new partitions (CreatePartitions `assignments`); empty: placed by
        /// `placement.rs`. The first live broker of a list leads (see `placement.rs`).
        #[serde(default)]
        assignments: Vec<Vec<BrokerId>>,
    },
    /// Replaces the topic's explicitly set configs with `configs`.
    SetTopicConfigs {
        name: String,
        configs: BTreeMap<String, String>,
    },
    CommitObject(ObjectCommit),
    /// Advances a partition's log start offset (DeleteRecords, retention).
    AdvanceLogStart {
        topic_id: Uuid,
        partition: i32,
        offset: i64,
    },
    /// Allocates one producer id (InitProducerId for an idempotent producer).
    AllocateProducerId,
    /// Compaction: swaps a contiguous run of a partition's chunks for one chunk in a new
    /// segment object, atomically. Rejected unless every replaced chunk is still exactly in the
    /// index and the segment covers exactly their offsets and bytes.
    ReplaceChunks(ChunkReplacement),
    /// Garbage collection: drops objects (already deleted from storage) from the index. Keys
    /// still referenced by a chunk, and unknown keys, are ignored.
    ForgetObjects {
        keys: Vec<String>,
    },
    // ---- consumer groups (controller/src/groups.rs) ----
    /// Offsets, membership and deletion of one consumer group.
    Group(crate::groups::GroupCommand),
    // ---- end consumer groups ----
    /// Replaces the dynamic configs of a broker, of the cluster default, or of a consumer group
    /// (`configs.rs`).
    SetConfigs(crate::configs::ConfigChange),
    // ---- compacted topics (RFC 0003) ----
    /// The cleaner rolls a compacted partition's head (Kafka's active segment) at `offset`, a
    /// chunk boundary at or below the high watermark: `[head, offset)` becomes a rolled
    /// segment, cleanable once its lag rules allow.
    RollHead {
        topic_id: Uuid,
        partition: i32,
        leader_epoch: i32,
        offset: i64,
    },
    /// One cleaner pass's swap: every run's chunks for the new segment chunks, all or nothing.
    CleanChunks(CleanChunks),
    // ---- end compacted topics ----
    /// AlterPartitionReassignments: replaces a partition's replica list at once (no data moves:
    /// it is all in object storage); its preferred replica leads if live (`placement.rs`).
    ReassignPartition {
        topic: String,
        partition: i32,
        replicas: Vec<BrokerId>,
    },
    /// UnregisterBroker: forgets a fenced broker's registration (a decommissioned broker).
    UnregisterBroker {
        broker_id: BrokerId,
    },
    // ---- transactions (controller/src/transactions.rs, RFC 0004) ----
    /// One transaction coordinator op on one transactional id, written by the broker holding
    /// the id's transaction shard at `coordinator_epoch`.
    Txn(TxnCommand),
    // ---- end transactions ----
    /// AlterUserScramCredentials (and the bootstrap user): SCRAM credentials set and removed
    /// (`scram.rs`).
    AlterScramCredentials(crate::scram::ScramChange),
    /// CreateAcls / DeleteAcls: ACL bindings added and removed (`acls.rs`).
    AlterAcls(crate::acls::AclChange),
    /// AlterClientQuotas: quota values set and removed per entity (`quotas.rs`).
    AlterClientQuotas(crate::quotas::QuotaChange),
}

/// The index swap of one cleaner pass (`docs/rfcs/0003-compacted-topics.md`, section 4).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CleanChunks {
    pub topic_id: Uuid,
    pub partition: i32,
    /// The leader epoch the pass ran under: a deposed leader's swap is `Fenced`.
    pub leader_epoch: i32,
    /// Disjoint runs in offset order; chunks between runs (clean input kept verbatim) stay.
    pub runs: Vec<CleanRun>,
    /// The new clean offset (Kafka's cleaner checkpoint): forward, at most the head offset.
    pub clean_offset: i64,
    /// The earliest delete horizon of the cleaned log after this pass, if any.
    pub next_horizon_ms: Option<i64>,
}

/// One contiguous run of replaced chunks and the chunks that hold its offsets afterwards.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CleanRun {
    /// The chunks being replaced, in offset order, contiguous.
    pub replaced: Vec<ReplacedChunk>,
    /// Chunks of new segment objects (one chunk per object) tiling the run's offsets exactly:
    /// a chunk's range may hold offsets without records (gaps), and its data may be empty.
    pub chunks: Vec<SegmentChunk>,
}

/// The index swap of one compaction.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChunkReplacement {
    pub topic_id: Uuid,
    pub partition: i32,
    /// The chunks being replaced, in offset order.
    pub replaced: Vec<ReplacedChunk>,
    /// The new segment object and the one chunk it holds.
    pub segment: SegmentChunk,
}

/// Identifies one chunk exactly: where it starts and where its bytes are.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReplacedChunk {
    pub base_offset: i64,
    pub object: String,
    pub position: u64,
}

/// The single chunk of a new segment object.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SegmentChunk {
    pub key: String,
    pub broker_id: BrokerId,
    /// Size of the whole segment object.
    pub size_bytes: u64,
    pub position: u64,
    pub len: u64,
    pub base_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BrokerRegistration {
    pub broker_id: BrokerId,
    pub incarnation: Uuid,
    pub host: String,
    pub port: i32,
    /// `broker.rack` (`--rack`): Metadata and DescribeCluster report it, placement spreads a
    /// topic over racks and a consumer's fetch is pointed at a broker of its own rack (RFC
    /// 0005). Absent in registrations written without one (`default`).
    #[serde(default)]
    pub rack: Option<String>,
    /// Set by `FenceBroker`; a fenced broker leads nothing until it registers again.
    #[serde(default)]
    pub fenced: bool,
    /// Every Kafka listener by name (`PLAINTEXT`, `SASL_SSL`, ...) with its advertised
    /// address: a client is told the address of each broker's listener of the name it came in
    /// on, as Kafka does. `host`/`port` are the first one's. Empty in registrations written
    /// before listeners existed (`default`).
    #[serde(default)]
    pub listeners: Vec<ListenerEndpoint>,
}

/// One listener of a broker, as its clients reach it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ListenerEndpoint {
    pub name: String,
    pub host: String,
    pub port: i32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CreateTopic {
    pub name: String,
    pub topic_id: Uuid,
    pub partitions: i32,
    pub configs: BTreeMap<String, String>,
    /// Manual replica lists, one per partition (CreateTopics `assignments`, then `partitions`
    /// equals their count); empty: placed by `placement.rs`.
    #[serde(default)]
    pub assignments: Vec<Vec<BrokerId>>,
}

/// The index entries of one object written by one broker: committed atomically.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ObjectCommit {
    pub key: String,
    pub broker_id: BrokerId,
    pub size_bytes: u64,
    pub partitions: Vec<PartitionAppend>,
}

/// One partition's contiguous run of batches inside an object.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PartitionAppend {
    pub topic_id: Uuid,
    pub partition: i32,
    pub leader_epoch: i32,
    pub base_offset: i64,
    pub last_offset: i64,
    /// Byte position of the run inside the object.
    pub position: u64,
    pub len: u64,
    pub max_timestamp: i64,
    /// Idempotent batches in this run, in offset order.
    pub producer_batches: Vec<ProducerBatch>,
    /// Transaction markers (control batches) the leader appended in this run's offset range,
    /// in offset order; their bytes are in the run like any batch (RFC 0004 §4).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub markers: Vec<MarkerRow>,
}

/// One transaction marker written into a partition: discharges the [`OwedMarker`] of
/// (producer_id, producer_epoch) when its row applies.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct MarkerRow {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub commit: bool,
    /// The control batch's offset.
    pub offset: i64,
    /// The `coordinator_epoch` written in the marker's value.
    pub coordinator_epoch: i32,
    /// The control batch's max timestamp (the EndTxn time, or the append time on a
    /// LogAppendTime topic): the producer's `last_timestamp` after it. -1 in rows written
    /// before it was recorded.
    #[serde(default = "unknown_timestamp")]
    pub timestamp: i64,
}

/// Kafka's `RecordBatch.NO_TIMESTAMP`: the default of timestamps absent from older commands.
fn unknown_timestamp() -> i64 {
    -1
}

/// Kafka's `RecordBatch.NO_PARTITION_LEADER_EPOCH`-style "none": a producer with no marker
/// written on the partition yet.
fn no_coordinator_epoch() -> i32 {
    -1
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProducerBatch {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub first_sequence: i32,
    pub last_sequence: i32,
    pub base_offset: i64,
    pub last_offset: i64,
    /// A transactional batch (attributes bit 4): opens a transaction on the partition for its
    /// producer id if none is open. Absent in commands written before transactions.
    #[serde(default)]
    pub transactional: bool,
    /// The batch's max timestamp as appended (the append time on a LogAppendTime topic): the
    /// producer's `last_timestamp` (DescribeProducers). -1 in commands written before it.
    #[serde(default = "unknown_timestamp")]
    pub max_timestamp: i64,
}

/// What applying a command produced.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum CommandResult {
    Ok,
    TopicCreated {
        topic_id: Uuid,
    },
    ProducerId(i64),
    Rejected(Rejection),
    /// A transaction coordinator op applied: what its client is told.
    Txn(Answer),
}

/// Why a command was refused. Deterministic: every replica refuses the same commands.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, thiserror::Error)]
pub enum Rejection {
    #[error("topic {0} already exists")]
    TopicExists(String),
    #[error("unknown topic {0}")]
    UnknownTopic(String),
    #[error("unknown topic id {0}")]
    UnknownTopicId(Uuid),
    #[error("unknown partition {topic}-{partition}")]
    UnknownPartition { topic: String, partition: i32 },
    #[error("invalid partition count: {0}")]
    InvalidPartitions(String),
    #[error("no live broker to lead partitions")]
    NoBrokers,
    /// A manual replica assignment Kafka's controller would refuse (its message).
    #[error("{0}")]
    InvalidReplicaAssignment(String),
    #[error("leader epoch {got} of {topic}-{partition} is stale (current {current})")]
    Fenced { topic: String, partition: i32, got: i32, current: i32 },
    #[error("commit for {topic}-{partition} starts at {got}, log ends at {expected}")]
    OffsetGap { topic: String, partition: i32, got: i64, expected: i64 },
    #[error("offset {offset} out of range for {topic}-{partition}")]
    OffsetOutOfRange { topic: String, partition: i32, offset: i64 },
    /// A compaction's view of the index is out of date (or the replacement is malformed); its
    /// segment is left unreferenced for garbage collection.
    #[error("chunk replacement for {topic}-{partition} rejected: {reason}")]
    StaleReplacement { topic: String, partition: i32, reason: String },
    /// A cleaner pass's view of the index or of the cleaner state is out of date (or its swap is
    /// malformed): nothing changes and its segments are deleted.
    #[error("clean of {topic}-{partition} rejected: {reason}")]
    StaleClean { topic: String, partition: i32, reason: String },
    // ---- consumer groups (controller/src/groups.rs) ----
    /// A group command from a coordinator whose shard epoch is no longer current.
    #[error("coordinator epoch {got} for group {group} is stale (current {current})")]
    StaleCoordinator { group: String, got: i32, current: i32 },
    // ---- end consumer groups ----
    /// UnregisterBroker of an id with no registration (Kafka's message).
    #[error("Broker ID {0} is not currently registered")]
    BrokerNotRegistered(BrokerId),
    /// UnregisterBroker of a live broker: it must be stopped (and so fenced) first.
    #[error("Broker {0} is live (registered and not fenced): stop it before unregistering it")]
    BrokerStillLive(BrokerId),
    // ---- transactions ----
    /// A transaction command from a coordinator whose shard epoch is no longer current.
    #[error("transaction coordinator epoch {got} for {transactional_id} is stale (current {current})")]
    StaleTxnCoordinator { transactional_id: String, got: i32, current: i32 },
    /// A transaction command naming a shard other than its id's (a bug in the writer).
    #[error("transactional id {transactional_id} belongs to shard {expected}, not {got}")]
    WrongTxnShard { transactional_id: String, got: u32, expected: u32 },
    /// The transaction state machine refused the op (Kafka's error kind; nothing changed).
    #[error("{transactional_id}: {error}")]
    Txn { transactional_id: String, error: TxnError },
    /// A marker row for (producer id, epoch) that the partition does not owe, or outside its
    /// run: a bug in the writer, never a race (one leader writes per epoch).
    #[error("marker of producer {producer_id} epoch {producer_epoch} at {offset} is not owed by {topic}-{partition}")]
    MarkerNotOwed { topic: String, partition: i32, producer_id: i64, producer_epoch: i16, offset: i64 },
    // ---- end transactions ----
}

/// Where one committed run of batches lives.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Chunk {
    pub object: Arc<str>,
    pub position: u64,
    pub len: u64,
    pub base_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
}

/// Duplicate-detection state of one producer on one partition (Kafka's `ProducerStateEntry`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ProducerEntry {
    pub epoch: i16,
    /// The last [`PRODUCER_BATCH_WINDOW`] batches, oldest first.
    pub batches: VecDeque<ProducerBatch>,
    /// Max timestamp of the producer's last batch on the partition, data or marker (Kafka's
    /// `lastTimestamp`); -1 when unknown (none yet, or state from before it was kept).
    #[serde(default = "unknown_timestamp")]
    pub last_timestamp: i64,
    /// Coordinator epoch of the last transaction marker written for the producer on the
    /// partition (Kafka's `coordinatorEpoch`); -1 when none.
    #[serde(default = "no_coordinator_epoch")]
    pub coordinator_epoch: i32,
}

impl Default for ProducerEntry {
    fn default() -> Self {
        Self { epoch: 0, batches: VecDeque::new(), last_timestamp: -1, coordinator_epoch: -1 }
    }
}

/// The state of the idempotent producers of one partition.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ProducerStates {
    pub producers: BTreeMap<i64, ProducerEntry>,
}

/// Outcome of checking an idempotent batch against [`ProducerStates`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// Append it.
    Accept,
    /// Already appended: answer with the original offsets.
    Duplicate {
        base_offset: i64,
        last_offset: i64,
    },
    OutOfOrder,
    /// The producer epoch is older than the one seen.
    Fenced,
}

impl ProducerStates {
    /// Checks batch `(pid, epoch, first_seq..=last_seq)` the way Kafka's ProducerStateManager does.
    pub fn check(&self, pid: i64, epoch: i16, first_seq: i32, last_seq: i32) -> SequenceCheck {
        let Some(entry) = self.producers.get(&pid) else {
            // Unknown producer (new, or its state was removed): accept any sequence, as Kafka
            // does since KIP-360 when the producer state is gone.
            return SequenceCheck::Accept;
        };
        if epoch < entry.epoch {
            return SequenceCheck::Fenced;
        }
        if epoch > entry.epoch {
            // A bumped epoch must restart at sequence 0.
            return if first_seq == 0 { SequenceCheck::Accept } else { SequenceCheck::OutOfOrder };
        }
        if let Some(dup) = entry.batches.iter().find(|b| b.first_sequence == first_seq && b.last_sequence == last_seq) {
            return SequenceCheck::Duplicate { base_offset: dup.base_offset, last_offset: dup.last_offset };
        }
        match entry.batches.back() {
            Some(last) if next_sequence(last.last_sequence) != first_seq => SequenceCheck::OutOfOrder,
            _ => SequenceCheck::Accept,
        }
    }

    /// Records an appended batch.
    pub fn record(&mut self, batch: ProducerBatch) {
        let entry = self.producers.entry(batch.producer_id).or_default();
        if batch.producer_epoch != entry.epoch {
            entry.epoch = batch.producer_epoch;
            entry.batches.clear();
        }
        entry.last_timestamp = batch.max_timestamp;
        entry.batches.push_back(batch);
        while entry.batches.len() > PRODUCER_BATCH_WINDOW {
            entry.batches.pop_front();
        }
    }
}

/// Sequence numbers wrap at i32::MAX to 0 (Kafka's DefaultRecordBatch.incrementSequence).
pub fn next_sequence(seq: i32) -> i32 {
    if seq == i32::MAX { 0 } else { seq + 1 }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PartitionState {
    pub(crate) leader: BrokerId,
    pub(crate) leader_epoch: i32,
    pub(crate) log_start_offset: i64,
    /// The high watermark: one past the last committed offset.
    pub(crate) end_offset: i64,
    /// Committed chunks by base offset.
    pub(crate) chunks: BTreeMap<i64, Chunk>,
    /// (leader epoch, start offset) in increasing order, for OffsetForLeaderEpoch.
    pub(crate) epoch_starts: Vec<(i32, i64)>,
    pub(crate) producers: ProducerStates,
    /// The replica list of a manual assignment, preferred leader first; empty when placement
    /// chose the leader. Every broker can serve any partition (the data is in object storage),
    /// so the list only says who should lead: see `placement.rs`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) replicas: Vec<BrokerId>,
    /// The log cleaner's state (compacted topics); absent from older snapshots and from
    /// partitions the cleaner never touched.
    #[serde(default, skip_serializing_if = "CleanerState::is_initial")]
    pub(crate) cleaner: CleanerState,
    // ---- transactions (RFC 0004 §3, §5) ----
    /// Transactions with data on this partition and no marker yet, by producer id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) open_txns: BTreeMap<i64, OpenTxn>,
    /// Markers this partition's leader must append (pushed by a Prepare*, removed by the row).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) owed_markers: Vec<OwedMarker>,
    /// Aborted transactions whose marker is in the log (Kafka's `.txnindex`).
    #[serde(default, skip_serializing_if = "AbortedIndex::is_empty")]
    pub(crate) aborted: AbortedIndex,
}

/// Most rolled-but-unclean segments remembered per partition: beyond it the two oldest merge
/// (coarser min-lag granularity, never a record cleaned early).
pub const MAX_ROLLS: usize = 64;

/// The log cleaner's durable state of one partition (RFC 0003, section 3). Offsets below the
/// log start read as the log start.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CleanerState {
    /// Kafka's cleaner checkpoint: `[log start, clean_offset)` is clean.
    pub clean_offset: i64,
    /// Base of the head (Kafka's active segment): nothing at or after it is ever cleaned.
    pub head_offset: i64,
    /// Rolled segments not yet wholly clean, oldest first.
    pub rolls: Vec<Roll>,
    /// The earliest delete horizon a pass wrote into the log (schedules the pass that removes
    /// expired tombstones), if any.
    pub next_horizon_ms: Option<i64>,
}

/// One rolled segment: `[previous roll's end, end_offset)`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Roll {
    pub end_offset: i64,
    /// Max timestamp of its first chunk (-1 if none): its first dirty batch's age, at chunk
    /// granularity, for `max.compaction.lag.ms`.
    pub first_timestamp: i64,
    /// Its largest timestamp (-1 if none), for `min.compaction.lag.ms`.
    pub max_timestamp: i64,
}

impl CleanerState {
    fn is_initial(&self) -> bool {
        *self == CleanerState::default()
    }
}

impl PartitionState {
    pub(crate) fn new(leader: BrokerId) -> Self {
        Self {
            leader,
            leader_epoch: 0,
            log_start_offset: 0,
            end_offset: 0,
            chunks: BTreeMap::new(),
            epoch_starts: vec![(0, 0)],
            producers: ProducerStates::default(),
            replicas: Vec::new(),
            cleaner: CleanerState::default(),
            open_txns: BTreeMap::new(),
            owed_markers: Vec::new(),
            aborted: AbortedIndex::default(),
        }
    }

    /// Kafka's last stable offset: the first offset of the oldest open transaction, or the
    /// high watermark.
    pub fn last_stable_offset(&self) -> i64 {
        crate::transactions::last_stable_offset(&self.open_txns, self.end_offset)
    }

    /// The chunk that holds `offset`, if it is committed and not deleted.
    pub fn chunk_for(&self, offset: i64) -> Option<&Chunk> {
        if offset < self.log_start_offset || offset >= self.end_offset {
            return None;
        }
        self.chunks.range(..=offset).next_back().map(|(_, c)| c).filter(|c| c.last_offset >= offset)
    }

    /// Bytes of committed data still referenced (an upper bound of the retained log size).
    pub fn size_bytes(&self) -> u64 {
        self.chunks.values().map(|c| c.len).sum()
    }

    /// Records a committed batch: producer state, and the transaction it opens (RFC 0004 §3).
    fn record_batch(&mut self, b: &ProducerBatch) {
        self.producers.record(*b);
        if b.transactional {
            self.open_txns
                .entry(b.producer_id)
                .or_insert(OpenTxn { producer_epoch: b.producer_epoch, first_offset: b.base_offset });
        }
    }

    /// Applies a validated marker row: the owed marker goes, the producer's transaction closes
    /// (an abort of a transaction with data enters the aborted index), and the producer's epoch
    /// is the marker's (Kafka's `ProducerAppendInfo.appendEndTxnMarker`).
    fn apply_marker(&mut self, m: &MarkerRow) {
        self.owed_markers.retain(|o| !(o.producer_id == m.producer_id && o.producer_epoch == m.producer_epoch));
        if let Some(open) = self.open_txns.remove(&m.producer_id)
            && !m.commit
        {
            self.aborted.push(AbortedTxn {
                producer_id: m.producer_id,
                first_offset: open.first_offset,
                last_offset: m.offset,
                lso_at_marker: crate::transactions::lso_at_marker(&self.open_txns, m.offset),
            });
        }
        let entry = self
            .producers
            .producers
            .entry(m.producer_id)
            .or_insert_with(|| ProducerEntry { epoch: m.producer_epoch, ..ProducerEntry::default() });
        if m.producer_epoch > entry.epoch {
            entry.epoch = m.producer_epoch;
            entry.batches.clear();
        }
        // As `appendEndTxnMarker`: the marker's coordinator epoch and timestamp are the
        // producer's (DescribeProducers reports both).
        entry.coordinator_epoch = m.coordinator_epoch;
        entry.last_timestamp = m.timestamp;
    }

    /// Answer to OffsetForLeaderEpoch: (epoch, end offset) of the largest epoch <= `epoch`.
    pub fn end_offset_for_epoch(&self, epoch: i32) -> Option<(i32, i64)> {
        let idx = self.epoch_starts.iter().rposition(|(e, _)| *e <= epoch)?;
        let (found, _) = self.epoch_starts[idx];
        let end = self.epoch_starts.get(idx + 1).map(|(_, start)| *start).unwrap_or(self.end_offset);
        Some((found, end))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(from = "StoredTopicState")]
pub struct TopicState {
    pub(crate) name: String,
    pub(crate) topic_id: Uuid,
    /// The configs set on the topic, as set: the source of truth (snapshots store only this).
    /// Changed only through [`TopicState::set_configs`], which keeps `config` derived from it.
    pub(crate) configs: BTreeMap<String, String>,
    pub(crate) partitions: Vec<PartitionState>,
    /// `configs` parsed once (`topic_config.rs`); rebuilt when a snapshot is loaded.
    #[serde(skip)]
    pub(crate) config: TopicConfig,
}

/// [`TopicState`] as stored: the typed config is rebuilt from the strings on load.
#[derive(Deserialize)]
struct StoredTopicState {
    name: String,
    topic_id: Uuid,
    configs: BTreeMap<String, String>,
    partitions: Vec<PartitionState>,
}

impl From<StoredTopicState> for TopicState {
    fn from(stored: StoredTopicState) -> Self {
        let StoredTopicState { name, topic_id, configs, partitions } = stored;
        let mut topic = TopicState { name, topic_id, configs: BTreeMap::new(), partitions, config: TopicConfig::EMPTY };
        topic.set_configs(configs);
        topic
    }
}

impl TopicState {
    /// Replaces the topic's configs and parses them, once, into [`TopicState::config`].
    pub(crate) fn set_configs(&mut self, configs: BTreeMap<String, String>) {
        self.config = TopicConfig::from_topic(&configs);
        self.configs = configs;
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ObjectInfo {
    pub(crate) broker_id: BrokerId,
    pub(crate) size_bytes: u64,
    /// How many chunks still point into this object; 0 means garbage.
    pub(crate) live_chunks: u64,
}

/// The whole replicated metadata. Cloned only for snapshots.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct MetadataState {
    pub(crate) cluster_id: String,
    pub(crate) brokers: BTreeMap<BrokerId, BrokerRegistration>,
    pub(crate) topics: BTreeMap<String, TopicState>,
    pub(crate) topic_names: BTreeMap<Uuid, String>,
    pub(crate) objects: BTreeMap<Arc<str>, ObjectInfo>,
    pub(crate) next_producer_id: i64,
    // ---- consumer groups (controller/src/groups.rs) ----
    /// Consumer-group offsets and membership. `default` keeps older snapshots readable.
    #[serde(default)]
    pub(crate) groups: crate::groups::GroupsState,
    // ---- end consumer groups ----
    /// Dynamic broker configs and consumer-group configs (`configs.rs`). `default` keeps older
    /// snapshots readable.
    #[serde(default)]
    pub(crate) configs: crate::configs::ConfigsState,
    /// Transaction coordinator state (`transactions/state.rs`). `default` keeps older
    /// snapshots readable; the producer index is rebuilt on load.
    #[serde(default)]
    pub(crate) transactions: TransactionsState,
    /// SCRAM credentials (`scram.rs`). `default` keeps older snapshots readable.
    #[serde(default)]
    pub(crate) scram: crate::scram::ScramState,
    /// ACL bindings (`acls.rs`). `default` keeps older snapshots readable.
    #[serde(default)]
    pub(crate) acls: crate::acls::AclState,
    /// Client quotas (`quotas.rs`). `default` keeps older snapshots readable.
    #[serde(default)]
    pub(crate) quotas: crate::quotas::QuotasState,
}

impl MetadataState {
    pub fn new(cluster_id: String) -> Self {
        Self { cluster_id, ..Self::default() }
    }

    pub fn topic_by_id(&self, id: &Uuid) -> Option<&TopicState> {
        self.topic_names.get(id).and_then(|n| self.topics.get(n))
    }

    pub fn partition(&self, topic_id: &Uuid, partition: i32) -> Option<&PartitionState> {
        let t = self.topic_by_id(topic_id)?;
        usize::try_from(partition).ok().and_then(|p| t.partitions.get(p))
    }

    /// Applies one command. Deterministic; never panics on any command content.
    pub fn apply(&mut self, cmd: &Command) -> CommandResult {
        match self.try_apply(cmd) {
            Ok(r) => r,
            Err(rejection) => CommandResult::Rejected(rejection),
        }
    }

    fn try_apply(&mut self, cmd: &Command) -> Result<CommandResult, Rejection> {
        match cmd {
            Command::InitCluster { cluster_id } => {
                if self.cluster_id.is_empty() {
                    self.cluster_id = cluster_id.clone();
                }
                Ok(CommandResult::Ok)
            }
            Command::RegisterBroker(reg) => self.register_broker(reg),
            Command::FenceBroker { broker_id, incarnation, .. } => self.fence_broker(*broker_id, *incarnation),
            Command::CreateTopic(ct) => self.create_topic(ct),
            Command::DeleteTopic { name } => {
                let topic = self.topics.remove(name).ok_or_else(|| Rejection::UnknownTopic(name.clone()))?;
                self.topic_names.remove(&topic.topic_id);
                self.groups.forget_topic(name);
                for p in &topic.partitions {
                    for c in p.chunks.values() {
                        self.release_chunk(&c.object);
                    }
                }
                // Markers the deleted partitions owed are discharged with them (RFC 0004 §4):
                // their transactions complete once nothing else is owed.
                let owed: std::collections::BTreeSet<(i64, i16)> = topic
                    .partitions
                    .iter()
                    .flat_map(|p| p.owed_markers.iter().map(|m| (m.producer_id, m.producer_epoch)))
                    .collect();
                for (pid, epoch) in owed {
                    self.complete_if_discharged(pid, epoch);
                }
                Ok(CommandResult::Ok)
            }
            Command::CreatePartitions { name, total_count, assignments } => {
                let current =
                    self.topics.get(name).ok_or_else(|| Rejection::UnknownTopic(name.clone()))?.partitions.len() as i32;
                if *total_count <= current {
                    return Err(Rejection::InvalidPartitions(format!(
                        "topic {name} has {current} partitions, cannot change to {total_count}"
                    )));
                }
                if self.live_brokers().is_empty() {
                    return Err(Rejection::NoBrokers);
                }
                if !assignments.is_empty() {
                    self.validate_new_partition_assignments(name, *total_count, assignments)?;
                }
                self.add_partitions(name, (*total_count - current) as usize, assignments);
                Ok(CommandResult::Ok)
            }
            Command::SetTopicConfigs { name, configs } => {
                let topic = self.topics.get_mut(name).ok_or_else(|| Rejection::UnknownTopic(name.clone()))?;
                topic.set_configs(configs.clone());
                Ok(CommandResult::Ok)
            }
            Command::CommitObject(commit) => self.commit_object(commit),
            Command::AdvanceLogStart { topic_id, partition, offset } => {
                let (name, p) = self.partition_mut(topic_id, *partition)?;
                if *offset < 0 || *offset > p.end_offset {
                    return Err(Rejection::OffsetOutOfRange { topic: name, partition: *partition, offset: *offset });
                }
                if *offset <= p.log_start_offset {
                    return Ok(CommandResult::Ok);
                }
                p.log_start_offset = *offset;
                // Aborted transactions whose marker is gone leave the index (Kafka deletes a
                // segment's .txnindex with it).
                p.aborted.truncate_below(*offset);
                // Drop chunks entirely below the new start.
                let dead: Vec<i64> =
                    p.chunks.iter().filter(|(_, c)| c.last_offset < *offset).map(|(b, _)| *b).collect();
                let mut released = Vec::new();
                for b in dead {
                    if let Some(c) = p.chunks.remove(&b) {
                        released.push(c.object);
                    }
                }
                for o in released {
                    self.release_chunk(&o);
                }
                Ok(CommandResult::Ok)
            }
            Command::AllocateProducerId => {
                let id = self.next_producer_id;
                self.next_producer_id += 1;
                Ok(CommandResult::ProducerId(id))
            }
            Command::ReplaceChunks(r) => self.replace_chunks(r),
            Command::RollHead { topic_id, partition, leader_epoch, offset } => {
                self.roll_head(topic_id, *partition, *leader_epoch, *offset)
            }
            Command::CleanChunks(c) => self.clean_chunks(c),
            Command::Group(g) => {
                // consumer groups (groups.rs); transactional offsets first pass the transaction's
                // checks (KIP-447, RFC 0004 §8).
                if let crate::groups::GroupOp::TxnOffsetCommit {
                    transactional_id, producer_id, producer_epoch, ..
                } = &g.op
                {
                    self.groups.check_epoch(g)?;
                    self.check_txn_offset_commit(&g.group_id, transactional_id, *producer_id, *producer_epoch)?;
                }
                self.groups.apply(g)
            }
            Command::Txn(t) => self.apply_txn(t),
            Command::SetConfigs(change) => self.configs.apply(change),
            Command::ReassignPartition { topic, partition, replicas } => {
                self.reassign_partition(topic, *partition, replicas)
            }
            Command::UnregisterBroker { broker_id } => self.unregister_broker(*broker_id),
            Command::AlterScramCredentials(change) => {
                self.scram.apply(change);
                Ok(CommandResult::Ok)
            }
            Command::AlterAcls(change) => {
                self.acls.apply(change);
                Ok(CommandResult::Ok)
            }
            Command::AlterClientQuotas(change) => {
                self.quotas.apply(change);
                Ok(CommandResult::Ok)
            }
            Command::ForgetObjects { keys } => {
                for k in keys {
                    if self.objects.get(k.as_str()).is_some_and(|o| o.live_chunks == 0) {
                        self.objects.remove(k.as_str());
                    }
                }
                Ok(CommandResult::Ok)
            }
        }
    }

    fn replace_chunks(&mut self, r: &ChunkReplacement) -> Result<CommandResult, Rejection> {
        let seg = &r.segment;
        let key_taken = self.objects.contains_key(seg.key.as_str());
        let (name, p) = self.partition_mut(&r.topic_id, r.partition)?;
        let stale =
            |reason: String| Rejection::StaleReplacement { topic: name.clone(), partition: r.partition, reason };
        let Some(first) = r.replaced.first() else {
            return Err(stale("nothing to replace".into()));
        };
        if key_taken || seg.key.is_empty() {
            return Err(stale(format!("segment key {:?} is already known", seg.key)));
        }
        // Every replaced chunk must still be in the index exactly as the compactor read it,
        // and the run must be contiguous (chunks never overlap, so contiguous offsets mean
        // consecutive index entries).
        let mut expected_base = first.base_offset;
        let mut total_len = 0u64;
        let mut max_timestamp = i64::MIN;
        let mut last_offset = first.base_offset;
        for rc in &r.replaced {
            if rc.base_offset != expected_base {
                return Err(stale(format!("chunk at {} does not follow offset {}", rc.base_offset, expected_base - 1)));
            }
            let Some(c) = p.chunks.get(&rc.base_offset) else {
                return Err(stale(format!("no chunk at offset {}", rc.base_offset)));
            };
            if *c.object != *rc.object || c.position != rc.position {
                return Err(stale(format!("chunk at offset {} has moved", rc.base_offset)));
            }
            expected_base = c.last_offset + 1;
            last_offset = c.last_offset;
            total_len = total_len.saturating_add(c.len);
            max_timestamp = max_timestamp.max(c.max_timestamp);
        }
        if seg.base_offset != first.base_offset || seg.last_offset != last_offset {
            return Err(stale(format!(
                "segment covers {}..={}, replaced chunks cover {}..={}",
                seg.base_offset, seg.last_offset, first.base_offset, last_offset
            )));
        }
        if seg.len != total_len || seg.max_timestamp != max_timestamp {
            return Err(stale(format!(
                "segment holds {} bytes (max timestamp {}), replaced chunks {} bytes (max timestamp {})",
                seg.len, seg.max_timestamp, total_len, max_timestamp
            )));
        }
        if seg.position.checked_add(seg.len).is_none_or(|end| end > seg.size_bytes) {
            return Err(stale(format!("segment byte range {}+{} exceeds its object", seg.position, seg.len)));
        }
        let object: Arc<str> = Arc::from(seg.key.as_str());
        let mut released = Vec::with_capacity(r.replaced.len());
        for rc in &r.replaced {
            if let Some(c) = p.chunks.remove(&rc.base_offset) {
                released.push(c.object);
            }
        }
        p.chunks.insert(
            seg.base_offset,
            Chunk {
                object: object.clone(),
                position: seg.position,
                len: seg.len,
                base_offset: seg.base_offset,
                last_offset: seg.last_offset,
                max_timestamp: seg.max_timestamp,
            },
        );
        for o in released {
            self.release_chunk(&o);
        }
        self.objects
            .insert(object, ObjectInfo { broker_id: seg.broker_id, size_bytes: seg.size_bytes, live_chunks: 1 });
        Ok(CommandResult::Ok)
    }

    fn roll_head(
        &mut self,
        topic_id: &Uuid,
        partition: i32,
        leader_epoch: i32,
        offset: i64,
    ) -> Result<CommandResult, Rejection> {
        let (name, p) = self.partition_mut(topic_id, partition)?;
        if leader_epoch != p.leader_epoch {
            return Err(Rejection::Fenced { topic: name, partition, got: leader_epoch, current: p.leader_epoch });
        }
        let stale = |reason: String| Rejection::StaleClean { topic: name.clone(), partition, reason };
        let head = p.cleaner.head_offset.max(p.log_start_offset);
        if offset <= head || offset > p.end_offset {
            return Err(stale(format!("roll at {offset} outside ({head}, {}]", p.end_offset)));
        }
        // A chunk boundary: a chunk starts there, or it is the end of the log.
        if offset != p.end_offset && !p.chunks.contains_key(&offset) {
            return Err(stale(format!("roll at {offset} is not a chunk boundary")));
        }
        let mut rolled = p.chunks.range(head..offset).map(|(_, c)| c.max_timestamp);
        let first_timestamp = rolled.next().unwrap_or(-1);
        let max_timestamp = rolled.fold(first_timestamp, i64::max);
        let rolls = &mut p.cleaner.rolls;
        rolls.push(Roll { end_offset: offset, first_timestamp, max_timestamp });
        if rolls.len() > MAX_ROLLS {
            let first = rolls.remove(0);
            rolls[0].first_timestamp = first.first_timestamp;
            rolls[0].max_timestamp = rolls[0].max_timestamp.max(first.max_timestamp);
        }
        p.cleaner.head_offset = offset;
        Ok(CommandResult::Ok)
    }

    fn clean_chunks(&mut self, c: &CleanChunks) -> Result<CommandResult, Rejection> {
        // Fresh keys: unknown to the index and distinct within the command.
        let mut keys = std::collections::BTreeSet::new();
        let keys_fresh =
            c.runs.iter().flat_map(|r| &r.chunks).all(|s| {
                !s.key.is_empty() && !self.objects.contains_key(s.key.as_str()) && keys.insert(s.key.as_str())
            });
        let (name, p) = self.partition_mut(&c.topic_id, c.partition)?;
        if c.leader_epoch != p.leader_epoch {
            return Err(Rejection::Fenced {
                topic: name,
                partition: c.partition,
                got: c.leader_epoch,
                current: p.leader_epoch,
            });
        }
        let stale = |reason: String| Rejection::StaleClean { topic: name.clone(), partition: c.partition, reason };
        if !keys_fresh {
            return Err(stale("a segment key is already known or repeated".into()));
        }
        let head = p.cleaner.head_offset.max(p.log_start_offset);
        let old_clean = p.cleaner.clean_offset.max(p.log_start_offset);
        if c.clean_offset < old_clean || c.clean_offset > head {
            return Err(stale(format!("clean offset {} outside [{old_clean}, {head}]", c.clean_offset)));
        }
        // Validate everything before changing anything: all or nothing.
        let mut previous_end = i64::MIN;
        for run in &c.runs {
            let Some(first) = run.replaced.first() else {
                return Err(stale("a run replaces nothing".into()));
            };
            if first.base_offset < previous_end {
                return Err(stale(format!("run at {} overlaps or precedes the previous run", first.base_offset)));
            }
            let mut expected = first.base_offset;
            for rc in &run.replaced {
                if rc.base_offset != expected {
                    return Err(stale(format!("chunk at {} does not follow offset {}", rc.base_offset, expected - 1)));
                }
                match p.chunks.get(&rc.base_offset) {
                    Some(ch) if *ch.object == *rc.object && ch.position == rc.position => expected = ch.last_offset + 1,
                    Some(_) => return Err(stale(format!("chunk at offset {} has moved", rc.base_offset))),
                    None => return Err(stale(format!("no chunk at offset {}", rc.base_offset))),
                }
            }
            let run_end = expected; // one past the run's last offset
            if run_end > head {
                return Err(stale(format!("run ends at {} inside the head (from {head})", run_end - 1)));
            }
            // The new chunks tile [first, run_end) exactly.
            let mut next = first.base_offset;
            for s in &run.chunks {
                if s.base_offset != next || s.last_offset < s.base_offset {
                    return Err(stale(format!(
                        "new chunk {}..={} does not tile the run at {next}",
                        s.base_offset, s.last_offset
                    )));
                }
                if s.position.checked_add(s.len).is_none_or(|end| end > s.size_bytes) {
                    return Err(stale(format!("segment byte range {}+{} exceeds its object", s.position, s.len)));
                }
                next = s.last_offset + 1;
            }
            if next != run_end {
                return Err(stale(format!(
                    "new chunks cover {}..{next}, the run {}..{run_end}",
                    first.base_offset, first.base_offset
                )));
            }
            previous_end = run_end;
        }
        let mut released = Vec::new();
        let mut added = Vec::new();
        for run in &c.runs {
            for rc in &run.replaced {
                if let Some(ch) = p.chunks.remove(&rc.base_offset) {
                    released.push(ch.object);
                }
            }
            for s in &run.chunks {
                let object: Arc<str> = Arc::from(s.key.as_str());
                p.chunks.insert(
                    s.base_offset,
                    Chunk {
                        object: object.clone(),
                        position: s.position,
                        len: s.len,
                        base_offset: s.base_offset,
                        last_offset: s.last_offset,
                        max_timestamp: s.max_timestamp,
                    },
                );
                added.push((object, s.broker_id, s.size_bytes));
            }
        }
        p.cleaner.clean_offset = c.clean_offset;
        p.cleaner.rolls.retain(|r| r.end_offset > c.clean_offset);
        p.cleaner.next_horizon_ms = c.next_horizon_ms;
        for o in released {
            self.release_chunk(&o);
        }
        for (object, broker_id, size_bytes) in added {
            self.objects.insert(object, ObjectInfo { broker_id, size_bytes, live_chunks: 1 });
        }
        Ok(CommandResult::Ok)
    }

    fn create_topic(&mut self, ct: &CreateTopic) -> Result<CommandResult, Rejection> {
        if self.topics.contains_key(&ct.name) {
            return Err(Rejection::TopicExists(ct.name.clone()));
        }
        if ct.partitions <= 0 {
            return Err(Rejection::InvalidPartitions(format!("{} partitions", ct.partitions)));
        }
        if self.live_brokers().is_empty() {
            return Err(Rejection::NoBrokers);
        }
        if !ct.assignments.is_empty() {
            if ct.assignments.len() != ct.partitions as usize {
                return Err(Rejection::InvalidPartitions(format!(
                    "{} partitions but {} assignments",
                    ct.partitions,
                    ct.assignments.len()
                )));
            }
            self.validate_topic_assignments(&ct.assignments)?;
        }
        self.topic_names.insert(ct.topic_id, ct.name.clone());
        self.topics.insert(
            ct.name.clone(),
            TopicState {
                name: ct.name.clone(),
                topic_id: ct.topic_id,
                configs: ct.configs.clone(),
                partitions: Vec::new(),
                config: TopicConfig::from_topic(&ct.configs),
            },
        );
        self.add_partitions(&ct.name, ct.partitions as usize, &ct.assignments);
        Ok(CommandResult::TopicCreated { topic_id: ct.topic_id })
    }

    fn partition_mut(&mut self, topic_id: &Uuid, partition: i32) -> Result<(String, &mut PartitionState), Rejection> {
        let name = self.topic_names.get(topic_id).ok_or(Rejection::UnknownTopicId(*topic_id))?.clone();
        let topic = self.topics.get_mut(&name).ok_or(Rejection::UnknownTopicId(*topic_id))?;
        let p = usize::try_from(partition)
            .ok()
            .and_then(|i| topic.partitions.get_mut(i))
            .ok_or_else(|| Rejection::UnknownPartition { topic: name.clone(), partition })?;
        Ok((name, p))
    }

    fn commit_object(&mut self, commit: &ObjectCommit) -> Result<CommandResult, Rejection> {
        // Validate every run first so the commit applies atomically or not at all.
        for run in &commit.partitions {
            let (name, p) = self.partition_mut(&run.topic_id, run.partition)?;
            if run.leader_epoch != p.leader_epoch {
                return Err(Rejection::Fenced {
                    topic: name,
                    partition: run.partition,
                    got: run.leader_epoch,
                    current: p.leader_epoch,
                });
            }
            if run.base_offset != p.end_offset || run.last_offset < run.base_offset {
                return Err(Rejection::OffsetGap {
                    topic: name,
                    partition: run.partition,
                    got: run.base_offset,
                    expected: p.end_offset,
                });
            }
            // Every marker is owed at its (producer id, epoch) with its result, inside the run,
            // in offset order, at most once (RFC 0004 §4).
            let mut previous = run.base_offset - 1;
            let mut seen = Vec::new();
            for m in &run.markers {
                let owed = p.owed_markers.iter().any(|o| {
                    o.producer_id == m.producer_id && o.producer_epoch == m.producer_epoch && o.commit == m.commit
                });
                let key = (m.producer_id, m.producer_epoch);
                if !owed || m.offset <= previous || m.offset > run.last_offset || seen.contains(&key) {
                    return Err(Rejection::MarkerNotOwed {
                        topic: name,
                        partition: run.partition,
                        producer_id: m.producer_id,
                        producer_epoch: m.producer_epoch,
                        offset: m.offset,
                    });
                }
                seen.push(key);
                previous = m.offset;
            }
        }
        // A partition may appear at most once per object; a repeat would fail the gap check
        // above only if runs overlapped, so check explicitly.
        let mut seen = std::collections::BTreeSet::new();
        for run in &commit.partitions {
            if !seen.insert((run.topic_id, run.partition)) {
                let name = self.topic_names.get(&run.topic_id).cloned().unwrap_or_default();
                return Err(Rejection::OffsetGap {
                    topic: name,
                    partition: run.partition,
                    got: run.base_offset,
                    expected: run.base_offset,
                });
            }
        }
        let object: Arc<str> = Arc::from(commit.key.as_str());
        let mut discharged = Vec::new();
        for run in &commit.partitions {
            let (_, p) = self.partition_mut(&run.topic_id, run.partition)?;
            p.chunks.insert(
                run.base_offset,
                Chunk {
                    object: object.clone(),
                    position: run.position,
                    len: run.len,
                    base_offset: run.base_offset,
                    last_offset: run.last_offset,
                    max_timestamp: run.max_timestamp,
                },
            );
            p.end_offset = run.last_offset + 1;
            // Batches and markers in offset order: a marker closes its producer's transaction,
            // a later transactional batch of the same producer opens the next one.
            let mut batches = run.producer_batches.iter().peekable();
            for m in &run.markers {
                while let Some(b) = batches.next_if(|b| b.base_offset < m.offset) {
                    p.record_batch(b);
                }
                p.apply_marker(m);
                discharged.push((m.producer_id, m.producer_epoch));
            }
            for b in batches {
                p.record_batch(b);
            }
        }
        self.objects.insert(
            object,
            ObjectInfo {
                broker_id: commit.broker_id,
                size_bytes: commit.size_bytes,
                live_chunks: commit.partitions.len() as u64,
            },
        );
        for (producer_id, producer_epoch) in discharged {
            self.complete_if_discharged(producer_id, producer_epoch);
        }
        Ok(CommandResult::Ok)
    }

    // ---- transactions (RFC 0004) ----

    /// Applies one transaction coordinator op: the shard epoch check (like group commands),
    /// the state machine, then its effects in the same apply: the producer id counter, the
    /// groups' pending offsets (resolved in the Prepare, §4) and the owed markers.
    fn apply_txn(&mut self, cmd: &TxnCommand) -> Result<CommandResult, Rejection> {
        let id = &cmd.transactional_id;
        let shard = crate::transactions::shard_for(id);
        if cmd.shard != shard {
            return Err(Rejection::WrongTxnShard { transactional_id: id.clone(), got: cmd.shard, expected: shard });
        }
        let current = self.transactions.shard_epoch(shard);
        if cmd.coordinator_epoch != current {
            return Err(Rejection::StaleTxnCoordinator {
                transactional_id: id.clone(),
                got: cmd.coordinator_epoch,
                current,
            });
        }
        let applied =
            crate::transactions::apply(self.transactions.get(id), &cmd.op, &cmd.limits, self.next_producer_id)
                .map_err(|error| Rejection::Txn { transactional_id: id.clone(), error })?;
        if applied.used_fresh_producer_id {
            self.next_producer_id += 1;
        }
        self.transactions.store(id, applied.state);
        if let Some(m) = &applied.markers {
            for group in &m.groups {
                self.groups.resolve_txn_offsets(group, m.producer_id, m.commit);
            }
            if !m.partitions.is_empty() {
                let owed = m.owed(cmd.coordinator_epoch, cmd.op.now_ms());
                for (topic_id, partition) in &m.partitions {
                    // A partition deleted since it was added owes nothing.
                    if let Ok((_, p)) = self.partition_mut(topic_id, *partition)
                        && !p
                            .owed_markers
                            .iter()
                            .any(|o| (o.producer_id, o.producer_epoch) == (owed.producer_id, owed.producer_epoch))
                    {
                        p.owed_markers.push(owed);
                    }
                }
                self.complete_if_discharged(m.producer_id, m.producer_epoch);
            }
        }
        Ok(CommandResult::Txn(applied.answer))
    }

    /// Completes the Prepare* of (producer id, epoch) once none of its partitions owes its
    /// marker any more (a marker row applied, or the partition was deleted).
    fn complete_if_discharged(&mut self, producer_id: i64, producer_epoch: i16) {
        let Some((id, state)) = self.transactions.of_producer(producer_id) else { return };
        if !matches!(state.state, TxnStatus::PrepareCommit | TxnStatus::PrepareAbort)
            || state.producer_id != producer_id
            || state.producer_epoch != producer_epoch
        {
            return;
        }
        let owed = state.partitions.iter().any(|(topic_id, partition)| {
            self.partition(topic_id, *partition).is_some_and(|p| {
                p.owed_markers.iter().any(|o| o.producer_id == producer_id && o.producer_epoch == producer_epoch)
            })
        });
        if owed {
            return;
        }
        let (id, now_ms) = (id.to_string(), state.updated_ms);
        let op = TxnOp::MarkersDone { producer_id, producer_epoch, now_ms };
        // Cannot fail: the state is the Prepare* of this producer id and epoch.
        if let Ok(applied) = crate::transactions::apply(
            self.transactions.get(&id),
            &op,
            &crate::transactions::TxnLimits::default(),
            self.next_producer_id,
        ) {
            self.transactions.store(&id, applied.state);
        }
    }

    /// TxnOffsetCommit's transaction checks (RFC 0004 §8; Kafka's verification of the group's
    /// offsets partition, KIP-890): the id maps to this producer, at this epoch, with an
    /// Ongoing transaction that added the group (AddOffsetsToTxn).
    fn check_txn_offset_commit(
        &self,
        group_id: &str,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
    ) -> Result<(), Rejection> {
        let refuse = |error| Err(Rejection::Txn { transactional_id: transactional_id.to_string(), error });
        let Some(s) = self.transactions.get(transactional_id) else {
            return refuse(TxnError::InvalidProducerIdMapping);
        };
        if s.producer_id != producer_id {
            return refuse(TxnError::InvalidProducerIdMapping);
        }
        if s.producer_epoch != producer_epoch {
            return refuse(TxnError::ProducerFenced);
        }
        if s.state != TxnStatus::Ongoing || !s.groups.contains(group_id) {
            return refuse(TxnError::TransactionAbortable);
        }
        Ok(())
    }

    fn release_chunk(&mut self, object: &Arc<str>) {
        if let Some(info) = self.objects.get_mut(object) {
            info.live_chunks = info.live_chunks.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registration_without_rack_or_listeners_loads() {
        let old = r#"{"broker_id":4,"incarnation":"00000000-0000-0000-0000-000000000000","host":"h","port":9}"#;
        let reg: BrokerRegistration = serde_json::from_str(old).expect("old registration");
        assert_eq!((reg.rack, reg.fenced, reg.listeners.len()), (None, false, 0));
        let with =
            r#"{"broker_id":4,"incarnation":"00000000-0000-0000-0000-000000000000","host":"h","port":9,"rack":"az-a"}"#;
        let reg: BrokerRegistration = serde_json::from_str(with).expect("registration with rack");
        assert_eq!(reg.rack.as_deref(), Some("az-a"));
    }

    fn state_with_topic() -> (MetadataState, Uuid) {
        let mut s = MetadataState::new("c".into());
        s.apply(&Command::RegisterBroker(BrokerRegistration {
            broker_id: 1,
            incarnation: Uuid::nil(),
            host: "h".into(),
            port: 1,
            rack: None,
            fenced: false,
            listeners: Vec::new(),
        }));
        let id = Uuid::from_u128(7);
        let r = s.apply(&Command::CreateTopic(CreateTopic {
            name: "t".into(),
            topic_id: id,
            partitions: 2,
            configs: BTreeMap::new(),
            assignments: Vec::new(),
        }));
        assert_eq!(r, CommandResult::TopicCreated { topic_id: id });
        (s, id)
    }

    fn append(id: Uuid, base: i64, last: i64, epoch: i32) -> Command {
        Command::CommitObject(ObjectCommit {
            key: format!("o{base}"),
            broker_id: 1,
            size_bytes: 10,
            partitions: vec![PartitionAppend {
                topic_id: id,
                partition: 0,
                leader_epoch: epoch,
                base_offset: base,
                last_offset: last,
                position: 0,
                len: 10,
                max_timestamp: 0,
                producer_batches: vec![],
                markers: vec![],
            }],
        })
    }

    #[test]
    fn commits_must_be_gapless_and_from_current_epoch() {
        let (mut s, id) = state_with_topic();
        assert_eq!(s.apply(&append(id, 0, 9, 0)), CommandResult::Ok);
        assert!(matches!(s.apply(&append(id, 11, 12, 0)), CommandResult::Rejected(Rejection::OffsetGap { .. })));
        assert!(matches!(s.apply(&append(id, 10, 12, 1)), CommandResult::Rejected(Rejection::Fenced { .. })));
        assert_eq!(s.apply(&append(id, 10, 12, 0)), CommandResult::Ok);
        let p = s.partition(&id, 0).expect("partition");
        assert_eq!(p.end_offset, 13);
        assert_eq!(p.chunk_for(11).map(|c| c.base_offset), Some(10));
        assert_eq!(p.chunk_for(13), None);
    }

    #[test]
    fn log_start_releases_chunks() {
        let (mut s, id) = state_with_topic();
        s.apply(&append(id, 0, 9, 0));
        s.apply(&append(id, 10, 19, 0));
        s.apply(&Command::AdvanceLogStart { topic_id: id, partition: 0, offset: 12 });
        let p = s.partition(&id, 0).expect("partition");
        assert_eq!(p.log_start_offset, 12);
        assert_eq!(p.chunks.len(), 1);
        assert_eq!(s.objects[&Arc::<str>::from("o0")].live_chunks, 0);
        assert!(matches!(
            s.apply(&Command::AdvanceLogStart { topic_id: id, partition: 0, offset: 21 }),
            CommandResult::Rejected(Rejection::OffsetOutOfRange { .. })
        ));
    }

    fn rc(base: i64, object: &str) -> ReplacedChunk {
        ReplacedChunk { base_offset: base, object: object.into(), position: 0 }
    }

    fn seg(key: &str, base: i64, last: i64, len: u64) -> SegmentChunk {
        SegmentChunk {
            key: key.into(),
            broker_id: 1,
            size_bytes: len + 100,
            position: 5,
            len,
            base_offset: base,
            last_offset: last,
            max_timestamp: 0,
        }
    }

    fn replace(id: Uuid, replaced: Vec<ReplacedChunk>, segment: SegmentChunk) -> Command {
        Command::ReplaceChunks(ChunkReplacement { topic_id: id, partition: 0, replaced, segment })
    }

    fn three_chunks() -> (MetadataState, Uuid) {
        let (mut s, id) = state_with_topic();
        for (b, l) in [(0, 9), (10, 19), (20, 29)] {
            assert_eq!(s.apply(&append(id, b, l, 0)), CommandResult::Ok);
        }
        (s, id)
    }

    fn stale(r: CommandResult) -> bool {
        matches!(r, CommandResult::Rejected(Rejection::StaleReplacement { .. }))
    }

    #[test]
    fn replace_chunks_swaps_atomically() {
        let (mut s, id) = three_chunks();
        let before = s.clone();
        let cmd = replace(id, vec![rc(0, "o0"), rc(10, "o10")], seg("seg-a", 0, 19, 20));
        // Deterministic: two replicas applying the same command reach the same state.
        let mut replica = before.clone();
        assert_eq!(s.apply(&cmd), CommandResult::Ok);
        assert_eq!(replica.apply(&cmd), CommandResult::Ok);
        assert_eq!(s, replica);
        let p = s.partition(&id, 0).expect("partition");
        assert_eq!(p.chunks.len(), 2);
        // No gap, no duplicate: every offset maps to exactly one chunk.
        for o in 0..30 {
            let c = p.chunk_for(o).expect("covered");
            assert!(c.base_offset <= o && o <= c.last_offset);
        }
        assert_eq!(&*p.chunk_for(15).expect("chunk").object, "seg-a");
        assert_eq!(p.chunk_for(15).expect("chunk").position, 5);
        assert_eq!(p.end_offset, 30, "end offset unchanged");
        assert_eq!(p.size_bytes(), 30);
        assert_eq!(s.objects[&Arc::<str>::from("o0")].live_chunks, 0);
        assert_eq!(s.objects[&Arc::<str>::from("o10")].live_chunks, 0);
        assert_eq!(s.objects[&Arc::<str>::from("o20")].live_chunks, 1);
        assert_eq!(s.objects[&Arc::<str>::from("seg-a")].live_chunks, 1);
        // Replaying the same swap is rejected (its chunks are gone) and changes nothing.
        let after = s.clone();
        assert!(stale(s.apply(&cmd)));
        assert_eq!(s, after);
        // Appends continue after a swap.
        assert_eq!(s.apply(&append(id, 30, 31, 0)), CommandResult::Ok);
    }

    #[test]
    fn replace_chunks_rejections() {
        let (s0, id) = three_chunks();
        let cases: Vec<(&str, Command)> = vec![
            ("empty", replace(id, vec![], seg("x", 0, 9, 10))),
            ("not contiguous", replace(id, vec![rc(0, "o0"), rc(20, "o20")], seg("x", 0, 29, 20))),
            ("missing chunk", replace(id, vec![rc(5, "o0")], seg("x", 5, 9, 10))),
            ("other object", replace(id, vec![rc(0, "o10")], seg("x", 0, 9, 10))),
            (
                "other position",
                replace(
                    id,
                    vec![ReplacedChunk { base_offset: 0, object: "o0".into(), position: 3 }],
                    seg("x", 0, 9, 10),
                ),
            ),
            ("wrong range", replace(id, vec![rc(0, "o0")], seg("x", 0, 8, 10))),
            ("wrong base", replace(id, vec![rc(0, "o0")], seg("x", 1, 9, 10))),
            ("wrong length", replace(id, vec![rc(0, "o0")], seg("x", 0, 9, 11))),
            ("key reused", replace(id, vec![rc(0, "o0")], seg("o10", 0, 9, 10))),
            (
                "range past object",
                replace(id, vec![rc(0, "o0")], SegmentChunk { size_bytes: 12, ..seg("x", 0, 9, 10) }),
            ),
            ("timestamp", replace(id, vec![rc(0, "o0")], SegmentChunk { max_timestamp: 5, ..seg("x", 0, 9, 10) })),
        ];
        for (what, cmd) in cases {
            let mut s = s0.clone();
            assert!(stale(s.apply(&cmd)), "{what}");
            assert_eq!(s, s0, "{what}: a rejected swap changes nothing");
        }
        let mut s = s0.clone();
        let unknown = Command::ReplaceChunks(ChunkReplacement {
            topic_id: Uuid::from_u128(99),
            partition: 0,
            replaced: vec![rc(0, "o0")],
            segment: seg("x", 0, 9, 10),
        });
        assert!(matches!(s.apply(&unknown), CommandResult::Rejected(Rejection::UnknownTopicId(_))));
        // Retention raced ahead of the compactor: the first chunk is gone.
        s.apply(&Command::AdvanceLogStart { topic_id: id, partition: 0, offset: 10 });
        assert!(stale(s.apply(&replace(id, vec![rc(0, "o0"), rc(10, "o10")], seg("x", 0, 19, 20)))));
        // A compaction that raced a topic deletion is refused too.
        let mut s = s0.clone();
        s.apply(&Command::DeleteTopic { name: "t".into() });
        assert!(matches!(
            s.apply(&replace(id, vec![rc(0, "o0")], seg("x", 0, 9, 10))),
            CommandResult::Rejected(Rejection::UnknownTopicId(_))
        ));
    }

    fn roll(id: Uuid, epoch: i32, offset: i64) -> Command {
        Command::RollHead { topic_id: id, partition: 0, leader_epoch: epoch, offset }
    }

    fn clean(id: Uuid, runs: Vec<CleanRun>, clean_offset: i64) -> Command {
        Command::CleanChunks(CleanChunks {
            topic_id: id,
            partition: 0,
            leader_epoch: 0,
            runs,
            clean_offset,
            next_horizon_ms: Some(77),
        })
    }

    fn run(replaced: Vec<ReplacedChunk>, chunks: Vec<SegmentChunk>) -> CleanRun {
        CleanRun { replaced, chunks }
    }

    fn stale_clean(r: CommandResult) -> bool {
        matches!(r, CommandResult::Rejected(Rejection::StaleClean { .. }))
    }

    #[test]
    fn roll_head_records_segments_at_chunk_boundaries() {
        let (mut s, id) = three_chunks();
        let before = s.clone();
        for (what, cmd) in [
            ("not a boundary", roll(id, 0, 15)),
            ("past the log end", roll(id, 0, 31)),
            ("at the head", roll(id, 0, 0)),
        ] {
            assert!(stale_clean(s.apply(&cmd)), "{what}");
            assert_eq!(s, before, "{what}: a rejected roll changes nothing");
        }
        assert!(matches!(s.apply(&roll(id, 1, 20)), CommandResult::Rejected(Rejection::Fenced { .. })));
        assert_eq!(s, before);
        assert_eq!(s.apply(&roll(id, 0, 20)), CommandResult::Ok);
        assert_eq!(s.apply(&roll(id, 0, 30)), CommandResult::Ok);
        let c = &s.partition(&id, 0).expect("partition").cleaner;
        assert_eq!(c.head_offset, 30);
        assert_eq!(
            c.rolls,
            vec![
                Roll { end_offset: 20, first_timestamp: 0, max_timestamp: 0 },
                Roll { end_offset: 30, first_timestamp: 0, max_timestamp: 0 }
            ]
        );
        // Not before the head again.
        assert!(stale_clean(s.apply(&roll(id, 0, 20))));
    }

    #[test]
    fn clean_chunks_swaps_every_run_or_nothing() {
        let (mut s, id) = three_chunks();
        s.apply(&append(id, 30, 39, 0));
        assert_eq!(s.apply(&roll(id, 0, 30)), CommandResult::Ok);
        let s0 = s.clone();
        // Runs [0, 10) and [20, 30); the chunk [10, 20) stays (verbatim clean input).
        let good = clean(
            id,
            vec![
                run(vec![rc(0, "o0")], vec![seg("n0", 0, 4, 6), seg("n5", 5, 9, 0)]),
                run(vec![rc(20, "o20")], vec![seg("n20", 20, 29, 3)]),
            ],
            30,
        );
        let mut replica = s0.clone();
        assert_eq!(s.apply(&good), CommandResult::Ok);
        assert_eq!(replica.apply(&good), CommandResult::Ok);
        assert_eq!(s, replica, "deterministic");
        let p = s.partition(&id, 0).expect("partition");
        let chunks: Vec<(i64, i64, &str)> =
            p.chunks.values().map(|c| (c.base_offset, c.last_offset, &*c.object)).collect();
        assert_eq!(chunks, vec![(0, 4, "n0"), (5, 9, "n5"), (10, 19, "o10"), (20, 29, "n20"), (30, 39, "o30")]);
        assert_eq!(p.cleaner.clean_offset, 30);
        assert!(p.cleaner.rolls.is_empty(), "consumed rolls dropped");
        assert_eq!(p.cleaner.next_horizon_ms, Some(77));
        assert_eq!(s.objects[&Arc::<str>::from("o0")].live_chunks, 0);
        assert_eq!(s.objects[&Arc::<str>::from("o10")].live_chunks, 1);
        assert_eq!(s.objects[&Arc::<str>::from("n5")].live_chunks, 1);
        assert_eq!(p.end_offset, 40, "offsets never move");

        let n = |k: &str, b, l| seg(k, b, l, 1);
        let cases: Vec<(&str, Command)> = vec![
            ("empty run", clean(id, vec![run(vec![], vec![n("x", 0, 9)])], 30)),
            ("missing chunk", clean(id, vec![run(vec![rc(5, "o0")], vec![n("x", 5, 9)])], 30)),
            ("moved chunk", clean(id, vec![run(vec![rc(0, "o10")], vec![n("x", 0, 9)])], 30)),
            ("not contiguous", clean(id, vec![run(vec![rc(0, "o0"), rc(20, "o20")], vec![n("x", 0, 29)])], 30)),
            ("gap in tiling", clean(id, vec![run(vec![rc(0, "o0")], vec![n("x", 0, 3), n("y", 5, 9)])], 30)),
            ("short tiling", clean(id, vec![run(vec![rc(0, "o0")], vec![n("x", 0, 8)])], 30)),
            ("long tiling", clean(id, vec![run(vec![rc(0, "o0")], vec![n("x", 0, 10)])], 30)),
            ("no new chunk", clean(id, vec![run(vec![rc(0, "o0")], vec![])], 30)),
            ("key reused", clean(id, vec![run(vec![rc(0, "o0")], vec![n("o10", 0, 9)])], 30)),
            (
                "key repeated",
                clean(
                    id,
                    vec![run(vec![rc(0, "o0")], vec![n("x", 0, 9)]), run(vec![rc(10, "o10")], vec![n("x", 10, 19)])],
                    30,
                ),
            ),
            ("inside the head", clean(id, vec![run(vec![rc(30, "o30")], vec![n("x", 30, 39)])], 30)),
            ("clean offset past head", clean(id, vec![], 31)),
            (
                "overlapping runs",
                clean(
                    id,
                    vec![run(vec![rc(10, "o10")], vec![n("x", 10, 19)]), run(vec![rc(0, "o0")], vec![n("y", 0, 9)])],
                    30,
                ),
            ),
            (
                "one good run, one stale",
                clean(
                    id,
                    vec![run(vec![rc(0, "o0")], vec![n("x", 0, 9)]), run(vec![rc(20, "o10")], vec![n("y", 20, 29)])],
                    30,
                ),
            ),
            (
                "byte range past object",
                clean(id, vec![run(vec![rc(0, "o0")], vec![SegmentChunk { size_bytes: 3, ..seg("x", 0, 9, 10) }])], 30),
            ),
        ];
        for (what, cmd) in cases {
            let mut s = s0.clone();
            assert!(stale_clean(s.apply(&cmd)), "{what}");
            assert_eq!(s, s0, "{what}: a rejected clean changes nothing");
        }
        // Backwards clean offset.
        let mut s = s0.clone();
        assert_eq!(s.apply(&clean(id, vec![], 20)), CommandResult::Ok);
        let s1 = s.clone();
        assert!(stale_clean(s.apply(&clean(id, vec![], 10))));
        assert_eq!(s, s1);
        // A new leader epoch fences the old leader's swap.
        let mut s = s0.clone();
        let fenced = Command::CleanChunks(CleanChunks {
            leader_epoch: 1,
            ..match good.clone() {
                Command::CleanChunks(c) => c,
                _ => unreachable!(),
            }
        });
        assert!(matches!(s.apply(&fenced), CommandResult::Rejected(Rejection::Fenced { .. })));
        assert_eq!(s, s0);
        // DeleteRecords raced the pass: its first chunk is gone, the whole swap is refused.
        let mut s = s0.clone();
        s.apply(&Command::AdvanceLogStart { topic_id: id, partition: 0, offset: 10 });
        let s1 = s.clone();
        assert!(stale_clean(s.apply(&good)));
        assert_eq!(s, s1);
    }

    #[test]
    fn cleaner_state_survives_snapshots_and_old_snapshots_load() {
        let (mut s, id) = three_chunks();
        s.apply(&roll(id, 0, 20));
        s.apply(&clean(id, vec![run(vec![rc(0, "o0")], vec![seg("n0", 0, 9, 2)])], 10));
        let json = serde_json::to_value(&s).expect("serialize");
        let back: MetadataState = serde_json::from_value(json.clone()).expect("deserialize");
        assert_eq!(back, s);
        assert_eq!(back.partition(&id, 0).expect("p").cleaner.clean_offset, 10);
        // A snapshot from before cleaner state existed: no `cleaner` key anywhere.
        let mut old = json;
        for p in old["topics"]["t"]["partitions"].as_array_mut().expect("partitions") {
            p.as_object_mut().expect("partition").remove("cleaner");
        }
        let back: MetadataState = serde_json::from_value(old).expect("old snapshot loads");
        assert_eq!(back.partition(&id, 0).expect("p").cleaner, CleanerState::default());
        // Untouched partitions write no cleaner key (snapshots of delete topics unchanged).
        let json = serde_json::to_value(&s).expect("serialize");
        assert!(json["topics"]["t"]["partitions"][1].get("cleaner").is_none());
        for cmd in [roll(id, 0, 20), clean(id, vec![run(vec![rc(0, "o0")], vec![seg("n0", 0, 9, 2)])], 10)] {
            let back: Command = serde_json::from_str(&serde_json::to_string(&cmd).expect("ser")).expect("de");
            assert_eq!(back, cmd);
        }
    }

    #[test]
    fn forget_objects_only_unreferenced() {
        let (mut s, id) = three_chunks();
        s.apply(&Command::AdvanceLogStart { topic_id: id, partition: 0, offset: 10 });
        s.apply(&Command::ForgetObjects { keys: vec!["o0".into(), "o10".into(), "nope".into()] });
        assert!(!s.objects.contains_key("o0"), "unreferenced object forgotten");
        assert!(s.objects.contains_key("o10"), "referenced object kept");
        assert!(s.objects.contains_key("o20"));
        // A deleted topic releases all its objects.
        s.apply(&Command::DeleteTopic { name: "t".into() });
        assert!(s.objects.values().all(|o| o.live_chunks == 0));
        s.apply(&Command::ForgetObjects { keys: vec!["o10".into(), "o20".into()] });
        assert!(s.objects.is_empty());
    }

    #[test]
    fn new_commands_survive_serde() {
        let (_, id) = three_chunks();
        for cmd in
            [replace(id, vec![rc(0, "o0")], seg("x", 0, 9, 10)), Command::ForgetObjects { keys: vec!["a".into()] }]
        {
            let json = serde_json::to_string(&cmd).expect("serialize");
            let back: Command = serde_json::from_str(&json).expect("deserialize");
            assert_eq!(back, cmd);
        }
    }

    #[test]
    fn producer_sequences() {
        let mut ps = ProducerStates::default();
        assert_eq!(ps.check(1, 0, 0, 4), SequenceCheck::Accept);
        ps.record(ProducerBatch {
            producer_id: 1,
            producer_epoch: 0,
            first_sequence: 0,
            last_sequence: 4,
            base_offset: 100,
            last_offset: 104,
            transactional: false,
            max_timestamp: 7,
        });
        assert_eq!(ps.check(1, 0, 0, 4), SequenceCheck::Duplicate { base_offset: 100, last_offset: 104 });
        assert_eq!(ps.check(1, 0, 6, 7), SequenceCheck::OutOfOrder);
        assert_eq!(ps.check(1, 0, 5, 7), SequenceCheck::Accept);
        assert_eq!(ps.check(1, -1, 5, 7), SequenceCheck::Fenced);
        assert_eq!(ps.check(1, 1, 5, 7), SequenceCheck::OutOfOrder);
        assert_eq!(ps.check(1, 1, 0, 7), SequenceCheck::Accept);
    }

    #[test]
    fn offset_for_leader_epoch() {
        let (mut s, id) = state_with_topic();
        s.apply(&append(id, 0, 9, 0));
        let p = s.partition(&id, 0).expect("partition");
        assert_eq!(p.end_offset_for_epoch(0), Some((0, 10)));
        assert_eq!(p.end_offset_for_epoch(5), Some((0, 10)));
    }
}
