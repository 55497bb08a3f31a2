//! The read side of the broker/controller boundary: a typed, read-only image of the applied
//! metadata (see `docs/rfcs/0001-broker-controller-boundary.md`).
//!
//! ```text
//!  handlers, group coordinator, partition log
//!        │ MetadataHandle::read(|image| ..)       (std read lock, never across .await)
//!        ▼
//!  MetadataImage ── TopicView ── PartitionView ── chunks, offsets, epochs
//!        │ (private)
//!        ▼
//!  MetadataState: the Raft state machine's data (fields private to this crate)
//! ```
//!
//! Brokers ask questions ("which chunks hold offsets from 42 on, up to 1 MiB?", "which broker
//! coordinates group g?") and get values back; they never see how the controller stores its
//! state, so the controller can change its layout without touching a handler.
//!
//! Invariants: everything here is a pure function of the applied state; nothing here mutates
//! it. A view borrows the state under the read lock the closure runs in, so one closure sees one
//! consistent state (a fetch plan holds either the chunks before a compaction swap or the
//! segment after it, never a mix).

use std::collections::BTreeMap;
use std::sync::Arc;

use uuid::Uuid;

use crate::groups::shard_for;
use crate::metadata::{MetadataState, PartitionState, TopicState};

// The values the image hands out: copies or read-only borrows, never the state itself.
pub use crate::configs::ConfigsState;
pub use crate::groups::SHARD_COUNT;
pub use crate::groups::offsets_topic::{RecordKey, RecordValue, ViewRecord};
pub use crate::groups::{CommittedOffset, GroupMembership, StoredConsumerGroup, StoredMember};
pub use crate::metadata::{
    BrokerId, Chunk, CleanerState, ProducerStates, Rejection, Roll, SequenceCheck, next_sequence,
};
pub use crate::placement::NO_LEADER;
pub use crate::topic_config::{CleanupPolicy, TimestampType, TopicConfig};
pub use crate::transactions::{OpenTxn, OwedMarker, TXN_SHARD_COUNT, TxnState, TxnStatus};

/// The applied metadata as brokers see it. Held behind the lock [`crate::MetadataHandle`]
/// reads; equality and clones compare and copy the whole state (tests compare replicas).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetadataImage {
    pub(crate) state: MetadataState,
}

/// A live broker's listener, as Metadata and FindCoordinator report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerEndpoint {
    pub broker_id: BrokerId,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
}

/// Which broker coordinates a group's shard, at which epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Coordinator {
    pub broker_id: BrokerId,
    pub epoch: i32,
}

/// Why a request's `current_leader_epoch` does not match the partition's (Kafka's
/// `FENCED_LEADER_EPOCH` / `UNKNOWN_LEADER_EPOCH`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpochMismatch {
    /// The client's epoch is older than the partition's: it talks to a deposed leader.
    Fenced,
    /// The client's epoch is newer: this broker has not applied that leadership yet.
    Unknown,
}

/// An object in the index and how many chunks still point into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexedObject {
    pub key: Arc<str>,
    pub size_bytes: u64,
    /// 0: no chunk references it any more (garbage once its grace period ends).
    pub live_chunks: u64,
}

/// Kafka's check of a request's `current_leader_epoch` (-1: the client does not know one)
/// against the partition's `leader_epoch` (`Partition.checkCurrentLeaderEpoch`).
pub fn check_leader_epoch(current_leader_epoch: i32, leader_epoch: i32) -> Result<(), EpochMismatch> {
    if current_leader_epoch < 0 || current_leader_epoch == leader_epoch {
        Ok(())
    } else if current_leader_epoch < leader_epoch {
        Err(EpochMismatch::Fenced)
    } else {
        Err(EpochMismatch::Unknown)
    }
}

impl MetadataImage {
    pub(crate) fn new(state: MetadataState) -> Self {
        Self { state }
    }

    /// The cluster id fixed by the first command of the log ("" before that).
    pub fn cluster_id(&self) -> &str {
        &self.state.cluster_id
    }

    /// The next producer id InitProducerId would allocate.
    pub fn next_producer_id(&self) -> i64 {
        self.state.next_producer_id
    }

    // ---- topics and partitions ----

    pub fn topic(&self, name: &str) -> Option<TopicView<'_>> {
        self.state.topics.get(name).map(TopicView)
    }

    pub fn topic_by_id(&self, id: &Uuid) -> Option<TopicView<'_>> {
        self.state.topic_by_id(id).map(TopicView)
    }

    pub fn topic_exists(&self, name: &str) -> bool {
        self.state.topics.contains_key(name)
    }

    /// Every topic, by name.
    pub fn topics(&self) -> impl Iterator<Item = TopicView<'_>> {
        self.state.topics.values().map(TopicView)
    }

    /// (topic id, name) of every topic.
    pub fn topic_names(&self) -> impl Iterator<Item = (Uuid, &str)> {
        self.state.topic_names.iter().map(|(id, n)| (*id, n.as_str()))
    }

    pub fn partition(&self, topic_id: &Uuid, partition: i32) -> Option<PartitionView<'_>> {
        self.topic_by_id(topic_id)?.partition(partition)
    }

    /// A partition by topic name; `None` if the topic or the index does not exist.
    pub fn partition_by_name(&self, topic: &str, partition: i32) -> Option<PartitionView<'_>> {
        self.topic(topic)?.partition(partition)
    }

    /// The replicas and in-sync replicas Metadata reports for a partition (see `placement.rs`).
    pub fn reported_replicas(&self, p: PartitionView<'_>) -> (Vec<BrokerId>, Vec<BrokerId>) {
        self.state.reported_replicas(p.state)
    }

    /// Kafka's checks of CreateTopics `assignments`, as the controller will apply them.
    pub fn validate_topic_assignments(&self, assignments: &[Vec<BrokerId>]) -> Result<(), Rejection> {
        self.state.validate_topic_assignments(assignments)
    }

    /// The checks of UnregisterBroker, as the controller will apply them.
    pub fn validate_unregister(&self, broker_id: BrokerId) -> Result<(), Rejection> {
        self.state.validate_unregister(broker_id)
    }

    /// Kafka's checks of an AlterPartitionReassignments target, as the controller will apply them.
    pub fn validate_reassignment(&self, topic: &str, partition: i32, replicas: &[BrokerId]) -> Result<(), Rejection> {
        self.state.validate_reassignment(topic, partition, replicas)
    }

    /// Kafka's checks of CreatePartitions `assignments`, as the controller will apply them.
    pub fn validate_new_partition_assignments(
        &self,
        name: &str,
        total_count: i32,
        assignments: &[Vec<BrokerId>],
    ) -> Result<(), Rejection> {
        self.state.validate_new_partition_assignments(name, total_count, assignments)
    }

    // ---- brokers ----

    /// Live (registered, unfenced) broker ids in order.
    pub fn live_brokers(&self) -> Vec<BrokerId> {
        self.state.live_brokers()
    }

    pub fn is_live(&self, broker_id: BrokerId) -> bool {
        self.state.is_live(broker_id)
    }

    /// The listener of a live broker.
    pub fn live_broker(&self, broker_id: BrokerId) -> Option<BrokerEndpoint> {
        self.state.brokers.get(&broker_id).filter(|b| !b.fenced).map(|b| BrokerEndpoint {
            broker_id: b.broker_id,
            host: b.host.clone(),
            port: b.port,
            rack: b.rack.clone(),
        })
    }

    /// Where live broker `broker_id` advertises its listener `name`; `None` when it is not live
    /// or registered no listener of that name (then its `host`/`port` is all there is).
    pub fn live_broker_listener(&self, broker_id: BrokerId, name: &str) -> Option<(String, i32)> {
        let b = self.state.brokers.get(&broker_id).filter(|b| !b.fenced)?;
        b.listeners.iter().find(|l| l.name == name).map(|l| (l.host.clone(), l.port))
    }

    /// Every live broker's id, process incarnation and PLAINTEXT listener address (`host:port`;
    /// its one address if it registered no listeners, before they existed): what a broker
    /// watches its peers through (`src/broker/peer_watch.rs`). Empty for a broker with only
    /// TLS or SASL listeners: a bare connection there would count as a failed handshake.
    pub fn live_broker_processes(&self) -> Vec<(BrokerId, uuid::Uuid, Vec<String>)> {
        self.state
            .brokers
            .values()
            .filter(|b| !b.fenced)
            .map(|b| {
                let mut addrs: Vec<String> = b
                    .listeners
                    .iter()
                    .filter(|l| l.name == "PLAINTEXT")
                    .map(|l| format!("{}:{}", l.host, l.port))
                    .collect();
                if b.listeners.is_empty() {
                    addrs.push(format!("{}:{}", b.host, b.port));
                }
                (b.broker_id, b.incarnation, addrs)
            })
            .collect()
    }

    /// The listeners of every live broker, by id.
    pub fn live_broker_endpoints(&self) -> Vec<BrokerEndpoint> {
        self.state.live_brokers().into_iter().filter_map(|id| self.live_broker(id)).collect()
    }

    /// Registered brokers that are fenced.
    pub fn fenced_broker_count(&self) -> usize {
        self.state.brokers.values().filter(|b| b.fenced).count()
    }

    /// Every registered broker by id, live or fenced, as (listener, fenced).
    pub fn registered_brokers(&self) -> Vec<(BrokerEndpoint, bool)> {
        self.state
            .brokers
            .values()
            .map(|b| {
                let endpoint =
                    BrokerEndpoint { broker_id: b.broker_id, host: b.host.clone(), port: b.port, rack: b.rack.clone() };
                (endpoint, b.fenced)
            })
            .collect()
    }

    /// SCRAM credentials (`scram.rs`).
    pub fn scram(&self) -> &crate::scram::ScramState {
        &self.state.scram
    }

    /// ACL bindings (`acls.rs`).
    pub fn acls(&self) -> &crate::acls::AclState {
        &self.state.acls
    }

    /// Client quotas (`quotas.rs`).
    pub fn quotas(&self) -> &crate::quotas::QuotasState {
        &self.state.quotas
    }

    // ---- consumer groups ----

    /// The broker coordinating `group_id`, once its shard is assigned.
    pub fn coordinator(&self, group_id: &str) -> Option<Coordinator> {
        self.state.groups.coordinator(group_id).map(|a| Coordinator { broker_id: a.broker_id, epoch: a.epoch })
    }

    /// The epoch of `group_id`'s shard (0 while unassigned): what its group writes must carry.
    pub fn coordinator_epoch(&self, group_id: &str) -> i32 {
        self.state.groups.shard_epoch(shard_for(group_id))
    }

    /// Who coordinates `shard`, once it is assigned.
    pub fn shard_coordinator(&self, shard: u32) -> Option<Coordinator> {
        self.state.groups.shards.get(&shard).map(|a| Coordinator { broker_id: a.broker_id, epoch: a.epoch })
    }

    /// How many coordinator shards `broker_id` holds.
    pub fn shards_of(&self, broker_id: BrokerId) -> usize {
        self.state.groups.shards.values().filter(|s| s.broker_id == broker_id).count()
    }

    /// Ids of every stored group.
    pub fn group_ids(&self) -> impl Iterator<Item = &str> {
        self.state.groups.groups.keys().map(String::as_str)
    }

    pub fn group_exists(&self, group_id: &str) -> bool {
        self.state.groups.groups.contains_key(group_id)
    }

    /// A classic group's membership as of its last completed rebalance.
    pub fn group_membership(&self, group_id: &str) -> Option<&GroupMembership> {
        self.state.groups.groups.get(group_id)?.membership.as_ref()
    }

    /// A consumer-protocol (KIP-848) group as stored.
    pub fn consumer_group(&self, group_id: &str) -> Option<&StoredConsumerGroup> {
        self.state.groups.groups.get(group_id)?.consumer.as_ref()
    }

    /// The committed offset of one partition.
    pub fn committed_offset(&self, group_id: &str, topic: &str, partition: i32) -> Option<&CommittedOffset> {
        self.state.groups.offset(group_id, topic, partition)
    }

    /// Every committed offset of a group: (topic, partition, offset), by topic then partition.
    pub fn committed_offsets(&self, group_id: &str) -> impl Iterator<Item = (&str, i32, &CommittedOffset)> {
        self.state
            .groups
            .groups
            .get(group_id)
            .into_iter()
            .flat_map(|g| g.offsets.iter())
            .flat_map(|(t, parts)| parts.iter().map(move |(p, o)| (t.as_str(), *p, o)))
    }

    /// Whether `group_id` holds transactional offsets of an undecided transaction for this
    /// partition (OffsetFetch `require_stable`: UNSTABLE_OFFSET_COMMIT).
    pub fn has_pending_offset(&self, group_id: &str, topic: &str, partition: i32) -> bool {
        self.state.groups.has_pending_offset(group_id, topic, partition)
    }

    // ---- transactions (RFC 0004) ----

    /// The state of a transactional id.
    pub fn transaction(&self, transactional_id: &str) -> Option<&TxnState> {
        self.state.transactions.get(transactional_id)
    }

    /// The transactional id a producer id belongs to, and its state.
    pub fn transaction_of_producer(&self, producer_id: i64) -> Option<(&str, &TxnState)> {
        self.state.transactions.of_producer(producer_id)
    }

    /// Every transactional id with its state, by id.
    pub fn transactions(&self) -> impl Iterator<Item = (&str, &TxnState)> {
        self.state.transactions.ids.iter().map(|(id, s)| (id.as_str(), s))
    }

    /// The transactional ids of transaction shard `shard`, with their states.
    pub fn transactions_in_shard(&self, shard: u32) -> impl Iterator<Item = (&str, &TxnState)> {
        self.transactions().filter(move |(id, _)| crate::transactions::shard_for(id) == shard)
    }

    /// The broker coordinating `transactional_id`, once its shard is assigned.
    pub fn txn_coordinator(&self, transactional_id: &str) -> Option<Coordinator> {
        self.txn_shard_coordinator(crate::transactions::shard_for(transactional_id))
    }

    /// Who coordinates transaction shard `shard`, once it is assigned.
    pub fn txn_shard_coordinator(&self, shard: u32) -> Option<Coordinator> {
        self.state.transactions.shards.get(&shard).map(|a| Coordinator { broker_id: a.broker_id, epoch: a.epoch })
    }

    /// The current epoch of transaction shard `shard` (0 while unassigned): what its writes carry.
    pub fn txn_shard_epoch(&self, shard: u32) -> i32 {
        self.state.transactions.shard_epoch(shard)
    }

    // ---- dynamic configs ----

    /// Dynamic broker and group configs (read through their methods).
    pub fn dynamic_configs(&self) -> &ConfigsState {
        &self.state.configs
    }

    // ---- the object index (background work, metrics) ----

    /// Every object in the index, by key.
    pub fn objects(&self) -> impl Iterator<Item = IndexedObject> + '_ {
        self.state.objects.iter().map(|(k, o)| IndexedObject {
            key: k.clone(),
            size_bytes: o.size_bytes,
            live_chunks: o.live_chunks,
        })
    }

    /// The object `key`, if indexed.
    pub fn object(&self, key: &str) -> Option<IndexedObject> {
        self.state.objects.get_key_value(key).map(|(k, o)| IndexedObject {
            key: k.clone(),
            size_bytes: o.size_bytes,
            live_chunks: o.live_chunks,
        })
    }
}

/// An image of a state built from plain values (tests replay commands into a
/// `MetadataState` and read it as brokers do).
impl From<MetadataState> for MetadataImage {
    fn from(state: MetadataState) -> Self {
        Self { state }
    }
}

/// One topic in the image.
#[derive(Clone, Copy)]
pub struct TopicView<'a>(&'a TopicState);

impl<'a> TopicView<'a> {
    pub fn name(&self) -> &'a str {
        &self.0.name
    }

    pub fn id(&self) -> Uuid {
        self.0.topic_id
    }

    /// The configs set on the topic, as set (DescribeConfigs reports these; defaults are the
    /// broker's business).
    pub fn configs(&self) -> &'a BTreeMap<String, String> {
        &self.0.configs
    }

    /// The configs set on the topic, typed: parsed once when they were applied (or loaded),
    /// for the paths that act on them (produce, retention).
    pub fn config(&self) -> &'a TopicConfig {
        &self.0.config
    }

    pub fn partition_count(&self) -> usize {
        self.0.partitions.len()
    }

    pub fn partition(&self, index: i32) -> Option<PartitionView<'a>> {
        let state = usize::try_from(index).ok().and_then(|i| self.0.partitions.get(i))?;
        Some(PartitionView { index, state })
    }

    /// Every partition in index order.
    pub fn partitions(self) -> impl Iterator<Item = PartitionView<'a>> + 'a {
        self.0.partitions.iter().enumerate().map(|(i, state)| PartitionView { index: i as i32, state })
    }
}

/// One partition in the image: its leadership, its offsets and its chunk index.
#[derive(Clone, Copy)]
pub struct PartitionView<'a> {
    index: i32,
    state: &'a PartitionState,
}

impl<'a> PartitionView<'a> {
    pub fn index(&self) -> i32 {
        self.index
    }

    /// The leading broker, or -1 when none is live.
    pub fn leader(&self) -> BrokerId {
        self.state.leader
    }

    pub fn leader_epoch(&self) -> i32 {
        self.state.leader_epoch
    }

    pub fn log_start_offset(&self) -> i64 {
        self.state.log_start_offset
    }

    /// One past the last committed offset (the end offset of the log).
    pub fn high_watermark(&self) -> i64 {
        self.state.end_offset
    }

    /// Idempotent-producer state as committed.
    pub fn producers(&self) -> &'a ProducerStates {
        &self.state.producers
    }

    /// Bytes of committed data still referenced (an upper bound of the retained log size).
    pub fn size_bytes(&self) -> u64 {
        self.state.size_bytes()
    }

    /// Kafka's check of a request's `current_leader_epoch` (-1: the client does not know one).
    pub fn check_leader_epoch(&self, current_leader_epoch: i32) -> Result<(), EpochMismatch> {
        check_leader_epoch(current_leader_epoch, self.state.leader_epoch)
    }

    /// The chunk that holds `offset`, if it is committed and not deleted.
    pub fn chunk_for(&self, offset: i64) -> Option<&'a Chunk> {
        self.state.chunk_for(offset)
    }

    /// The chunks holding `from` onwards, consecutive, until they hold at least `max_bytes`
    /// (always at least one when `from` is committed) or the committed data ends.
    pub fn chunks_from(&self, from: i64, max_bytes: usize) -> Vec<Chunk> {
        let mut chunks = Vec::new();
        let mut bytes = 0usize;
        let mut next = from;
        while next < self.state.end_offset && (chunks.is_empty() || bytes < max_bytes) {
            let Some(c) = self.state.chunk_for(next) else { break };
            bytes = bytes.saturating_add(c.len as usize);
            next = c.last_offset + 1;
            chunks.push(c.clone());
        }
        chunks
    }

    /// Every committed chunk, in offset order.
    pub fn chunks(self) -> impl Iterator<Item = &'a Chunk> + 'a {
        self.state.chunks.values()
    }

    /// The first chunk whose max timestamp reaches `timestamp` (ListOffsets by time).
    pub fn chunk_for_timestamp(&self, timestamp: i64) -> Option<&'a Chunk> {
        self.state.chunks.values().find(|c| c.max_timestamp >= timestamp)
    }

    /// The first chunk holding the partition's largest timestamp (ListOffsets MAX_TIMESTAMP).
    pub fn chunk_with_max_timestamp(&self) -> Option<&'a Chunk> {
        let mut best: Option<&Chunk> = None;
        for c in self.state.chunks.values() {
            if best.is_none_or(|b| c.max_timestamp > b.max_timestamp) {
                best = Some(c);
            }
        }
        best
    }

    /// OffsetForLeaderEpoch: (epoch, end offset) of the largest epoch <= `epoch`.
    pub fn end_offset_for_epoch(&self, epoch: i32) -> Option<(i32, i64)> {
        self.state.end_offset_for_epoch(epoch)
    }

    /// The log cleaner's state (compacted topics; the initial state for any other partition).
    pub fn cleaner(&self) -> &'a CleanerState {
        &self.state.cleaner
    }

    /// Kafka's last stable offset: the first offset of the oldest open transaction, or the
    /// high watermark (RFC 0004 §3).
    pub fn last_stable_offset(&self) -> i64 {
        self.state.last_stable_offset()
    }

    /// The aborted transactions a read of `range` must know about (their data in the range is
    /// to be skipped), oldest first: Kafka's `collectAbortedTxns` over the partition's aborted
    /// index (RFC 0004 §5).
    pub fn aborted_transactions(&self, range: std::ops::Range<i64>) -> Vec<AbortedTransaction> {
        self.state
            .aborted
            .collect(range.start, range.end)
            .into_iter()
            .map(|a| AbortedTransaction {
                producer_id: a.producer_id,
                first_offset: a.first_offset,
                last_offset: a.last_offset,
            })
            .collect()
    }

    /// Transaction markers this partition's leader must append (RFC 0004 §4), oldest first.
    pub fn owed_markers(&self) -> &'a [OwedMarker] {
        &self.state.owed_markers
    }

    /// The transaction `producer_id` has open on this partition (data, no marker yet).
    pub fn open_transaction(&self, producer_id: i64) -> Option<&'a OpenTxn> {
        self.state.open_txns.get(&producer_id)
    }
}

/// An aborted transaction of one producer on one partition: its data in
/// `[first_offset, last_offset]` (the abort marker's offset) is dropped by the cleaner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTransaction {
    pub producer_id: i64,
    pub first_offset: i64,
    pub last_offset: i64,
}

/// A shard's `__consumer_offsets` view (`groups/offsets_topic.rs`): what the image answers, and
/// what the controller's group state answers in tests built from plain values.
pub trait OffsetsTopicView {
    /// The high watermark of `shard`'s view.
    fn offsets_topic_end(&self, shard: u32) -> i64;
    /// The records of `shard`'s view at offsets `>= from`, in offset order.
    fn offsets_topic_records(&self, shard: u32, from: i64) -> impl Iterator<Item = ViewRecord<'_>>;
}

impl OffsetsTopicView for MetadataImage {
    fn offsets_topic_end(&self, shard: u32) -> i64 {
        self.state.groups.offsets_topic_end(shard)
    }
    fn offsets_topic_records(&self, shard: u32, from: i64) -> impl Iterator<Item = ViewRecord<'_>> {
        self.state.groups.offsets_topic_records(shard, from)
    }
}

impl OffsetsTopicView for ImageFixture {
    fn offsets_topic_end(&self, shard: u32) -> i64 {
        self.state.groups.offsets_topic_end(shard)
    }
    fn offsets_topic_records(&self, shard: u32, from: i64) -> impl Iterator<Item = ViewRecord<'_>> {
        self.state.groups.offsets_topic_records(shard, from)
    }
}

/// Images from plain values, for tests of code that reads the image: sets exactly the facts a
/// test needs, including ones only a long history of commands would produce (a shard at epoch
/// 9). Never used by a running broker: its image only changes by applying the log.
#[derive(Debug, Default)]
pub struct ImageFixture {
    state: MetadataState,
}

impl ImageFixture {
    pub fn new(cluster_id: &str) -> Self {
        Self { state: MetadataState::new(cluster_id.to_string()) }
    }

    /// A registered broker (fenced if `registration.fenced`).
    pub fn broker(mut self, registration: crate::metadata::BrokerRegistration) -> Self {
        self.state.brokers.insert(registration.broker_id, registration);
        self
    }

    /// A broker registering as the controller applies it (placement gives it partitions and
    /// coordinator shards).
    pub fn register_broker(mut self, registration: crate::metadata::BrokerRegistration) -> Self {
        self.state.apply(&crate::metadata::Command::RegisterBroker(registration));
        self
    }

    /// [`ImageFixture::register_broker`] of a live broker `broker_id` at 127.0.0.1:9092, no rack,
    /// incarnation derived from the id: the usual broker of a handler's unit test.
    pub fn register_test_broker(self, broker_id: BrokerId) -> Self {
        self.register_broker(crate::metadata::BrokerRegistration {
            broker_id,
            incarnation: Uuid::from_u128(broker_id as u128),
            host: "127.0.0.1".into(),
            port: 9092,
            rack: None,
            fenced: false,
            listeners: Vec::new(),
        })
    }

    /// A broker fenced as the controller applies it (its partitions move to live brokers).
    pub fn fence_broker(mut self, broker_id: BrokerId, incarnation: Uuid) -> Self {
        self.state.apply(&crate::metadata::Command::FenceBroker { broker_id, incarnation, controlled: true });
        self
    }

    /// A topic created as the controller applies it (a refusal leaves the image unchanged).
    pub fn create_topic(mut self, topic: crate::metadata::CreateTopic) -> Self {
        self.state.apply(&crate::metadata::Command::CreateTopic(topic));
        self
    }

    /// A dynamic config change (broker or group resource) as the controller applies it.
    pub fn set_configs(mut self, change: crate::configs::ConfigChange) -> Self {
        self.state.apply(&crate::metadata::Command::SetConfigs(change));
        self
    }

    /// Coordinator shard `shard` assigned to `broker_id` at `epoch`.
    pub fn shard(mut self, shard: u32, broker_id: BrokerId, epoch: i32) -> Self {
        self.state.groups.shards.insert(shard, crate::groups::ShardAssignment { broker_id, epoch });
        self
    }

    /// Transaction shard `shard` assigned to `broker_id` at `epoch`.
    pub fn txn_shard(mut self, shard: u32, broker_id: BrokerId, epoch: i32) -> Self {
        self.state.transactions.shards.insert(shard, crate::groups::ShardAssignment { broker_id, epoch });
        self
    }

    /// Any command as the controller applies it (transactions, commits), for tests that need a
    /// history: its result.
    pub fn apply(&mut self, cmd: &crate::metadata::Command) -> crate::metadata::CommandResult {
        self.state.apply(cmd)
    }

    /// A group write as the coordinator holding its shard at `coordinator_epoch` stores it.
    pub fn store_group(
        &mut self,
        group_id: &str,
        coordinator_epoch: i32,
        op: crate::groups::GroupOp,
    ) -> Result<(), Rejection> {
        let cmd = crate::groups::GroupCommand { group_id: group_id.to_string(), coordinator_epoch, op };
        match self.state.apply(&crate::metadata::Command::Group(cmd)) {
            crate::metadata::CommandResult::Rejected(r) => Err(r),
            _ => Ok(()),
        }
    }

    pub fn build(self) -> MetadataImage {
        MetadataImage { state: self.state }
    }
}

#[cfg(test)]
mod listener_tests {
    use super::*;
    use crate::metadata::{BrokerRegistration, ListenerEndpoint};

    #[test]
    fn a_live_broker_is_found_at_its_listener_of_a_name() {
        let endpoint = |name: &str, port| ListenerEndpoint { name: name.into(), host: "b2.example".into(), port };
        let image = ImageFixture::new("c")
            .register_broker(BrokerRegistration {
                broker_id: 2,
                incarnation: Uuid::from_u128(2),
                host: "b2.example".into(),
                port: 9092,
                rack: None,
                fenced: false,
                listeners: vec![endpoint("PLAINTEXT", 9092), endpoint("SASL_SSL", 9094)],
            })
            .register_test_broker(3)
            .build();
        assert_eq!(image.live_broker_listener(2, "SASL_SSL"), Some(("b2.example".into(), 9094)));
        assert_eq!(image.live_broker_listener(2, "SSL"), None);
        assert_eq!(image.live_broker_listener(3, "PLAINTEXT"), None, "registered before listeners existed");
        let fenced = ImageFixture::new("c")
            .register_broker(BrokerRegistration {
                broker_id: 2,
                incarnation: Uuid::from_u128(2),
                host: "h".into(),
                port: 1,
                rack: None,
                fenced: false,
                listeners: vec![endpoint("SSL", 9093)],
            })
            .fence_broker(2, Uuid::from_u128(2))
            .build();
        assert_eq!(fenced.live_broker_listener(2, "SSL"), None);
    }
}
