//! The write side of the broker/controller boundary: one method per intent on
//! [`ControllerHandle`], each returning a typed result or a [`ControllerError`] whose
//! [`ControllerError::kind`] says what the caller can do about it (see
//! `docs/rfcs/0001-broker-controller-boundary.md`).
//!
//! ```text
//!  broker                         │ controller crate
//!  controller.commit_object(c) ───┼──▶ Command::CommitObject ──Raft──▶ MetadataState::apply
//!  Ok(()) / Err(ControllerError) ◀┼─── CommandResult (Ok, TopicCreated, ProducerId, Rejected)
//! ```
//!
//! Brokers never build a [`Command`] nor match a [`CommandResult`]: a refusal comes back as
//! [`ControllerError::Rejected`], and an answer that does not fit the intent (a bug on one side)
//! as [`ControllerError::Unexpected`]. Every method returns only once the command is applied in
//! this process's image ([`ControllerHandle::metadata`]), so a caller reads its own writes.
//!
//! The payload types a method takes are re-exported here; they are values, not state.

use std::collections::BTreeMap;

use uuid::Uuid;

use crate::ControllerHandle;
use crate::error::ControllerError;
use crate::groups::GroupCommand;
use crate::metadata::{Command, CommandResult};

pub use crate::configs::{ConfigChange, ConfigResource};
pub use crate::groups::consumer::{
    ConsumerGroupUpdate, MemberState, StoredConsumerGroup, StoredConsumerMember, SubscribedTopic, TopicPartitionEpochs,
    TopicPartitions,
};
pub use crate::groups::{GroupMembership, GroupOp, OffsetCommit, StoredMember, shard_for};
pub use crate::metadata::{
    BrokerId, BrokerRegistration, ChunkReplacement, CleanChunks, CleanRun, CreateTopic, ListenerEndpoint, MarkerRow,
    ObjectCommit, PartitionAppend, ProducerBatch, Rejection, ReplacedChunk, SegmentChunk,
};
pub use crate::quotas::{EntityName, QuotaAlteration, QuotaChange, QuotaEntity, QuotasState};
pub use crate::scram::{ScramChange, ScramCredential, ScramDeletion, ScramMechanism, ScramUpsertion};
pub use crate::transactions::{
    Answer, ProducerIdAndEpoch, TxnCommand, TxnError, TxnLimits, TxnOp, TxnPartition, TxnVersion,
};

/// `Ok` for a command whose success carries nothing.
fn done(result: CommandResult) -> Result<(), ControllerError> {
    match result {
        CommandResult::Ok => Ok(()),
        other => Err(refused_or_unexpected(other)),
    }
}

fn refused_or_unexpected(result: CommandResult) -> ControllerError {
    match result {
        CommandResult::Rejected(r) => ControllerError::Rejected(r),
        other => ControllerError::Unexpected(format!("{other:?}")),
    }
}

impl ControllerHandle {
    /// A broker process announces itself (start-up, or after it learned it was fenced).
    pub async fn register_broker(&self, registration: BrokerRegistration) -> Result<(), ControllerError> {
        done(self.submit(Command::RegisterBroker(registration)).await?)
    }

    /// Controlled shutdown: fences this incarnation so its partitions and shards move now.
    pub async fn controlled_shutdown(&self, broker_id: BrokerId, incarnation: Uuid) -> Result<(), ControllerError> {
        done(self.submit(Command::FenceBroker { broker_id, incarnation, controlled: true }).await?)
    }

    /// Creates a topic; returns its id.
    pub async fn create_topic(&self, topic: CreateTopic) -> Result<Uuid, ControllerError> {
        match self.submit(Command::CreateTopic(topic)).await? {
            CommandResult::TopicCreated { topic_id } => Ok(topic_id),
            other => Err(refused_or_unexpected(other)),
        }
    }

    /// Deletes a topic; its chunks are released for garbage collection.
    pub async fn delete_topic(&self, name: &str) -> Result<(), ControllerError> {
        done(self.submit(Command::DeleteTopic { name: name.to_string() }).await?)
    }

    /// Grows a topic to `total_count` partitions (`assignments`: replica lists of the new ones,
    /// or empty for the controller's placement).
    pub async fn create_partitions(
        &self,
        name: &str,
        total_count: i32,
        assignments: Vec<Vec<BrokerId>>,
    ) -> Result<(), ControllerError> {
        done(self.submit(Command::CreatePartitions { name: name.to_string(), total_count, assignments }).await?)
    }

    /// Forgets a fenced broker's registration (UnregisterBroker).
    pub async fn unregister_broker(&self, broker_id: BrokerId) -> Result<(), ControllerError> {
        done(self.submit(Command::UnregisterBroker { broker_id }).await?)
    }

    /// Replaces a partition's replica list (AlterPartitionReassignments): done once applied.
    pub async fn reassign_partition(
        &self,
        topic: &str,
        partition: i32,
        replicas: Vec<BrokerId>,
    ) -> Result<(), ControllerError> {
        done(self.submit(Command::ReassignPartition { topic: topic.to_string(), partition, replicas }).await?)
    }

    /// Replaces a topic's explicitly set configs.
    pub async fn set_topic_configs(
        &self,
        name: &str,
        configs: BTreeMap<String, String>,
    ) -> Result<(), ControllerError> {
        done(self.submit(Command::SetTopicConfigs { name: name.to_string(), configs }).await?)
    }

    /// Replaces the dynamic configs of a broker, the cluster default or a group.
    pub async fn set_configs(&self, change: ConfigChange) -> Result<(), ControllerError> {
        done(self.submit(Command::SetConfigs(change)).await?)
    }

    /// Indexes one stored WAL object: every partition's run applies, or none does
    /// (`Rejected(Fenced)`: a newer leader epoch; `Rejected(OffsetGap)`: the log moved on).
    pub async fn commit_object(&self, commit: ObjectCommit) -> Result<(), ControllerError> {
        done(self.submit(Command::CommitObject(commit)).await?)
    }

    /// Compaction's index swap (`Rejected(StaleReplacement)` when the chunks changed meanwhile).
    pub async fn replace_chunks(&self, replacement: ChunkReplacement) -> Result<(), ControllerError> {
        done(self.submit(Command::ReplaceChunks(replacement)).await?)
    }

    /// Rolls a compacted partition's head at `offset` (a chunk boundary <= the high watermark)
    /// under `leader_epoch` (`Rejected(Fenced)` for a deposed leader, `Rejected(StaleClean)`
    /// when the offset is no longer a valid roll point).
    pub async fn roll_head(
        &self,
        topic_id: Uuid,
        partition: i32,
        leader_epoch: i32,
        offset: i64,
    ) -> Result<(), ControllerError> {
        done(self.submit(Command::RollHead { topic_id, partition, leader_epoch, offset }).await?)
    }

    /// A cleaner pass's swap, all or nothing (`Rejected(StaleClean)` when a replaced chunk
    /// changed meanwhile, `Rejected(Fenced)` after a leader change).
    pub async fn clean_chunks(&self, clean: CleanChunks) -> Result<(), ControllerError> {
        done(self.submit(Command::CleanChunks(clean)).await?)
    }

    /// Moves a partition's log start forward (DeleteRecords, retention).
    pub async fn advance_log_start(&self, topic_id: Uuid, partition: i32, offset: i64) -> Result<(), ControllerError> {
        done(self.submit(Command::AdvanceLogStart { topic_id, partition, offset }).await?)
    }

    /// Drops deleted objects from the index (keys still referenced are kept).
    pub async fn forget_objects(&self, keys: Vec<String>) -> Result<(), ControllerError> {
        done(self.submit(Command::ForgetObjects { keys }).await?)
    }

    /// Allocates a fresh producer id (InitProducerId).
    pub async fn allocate_producer_id(&self) -> Result<i64, ControllerError> {
        match self.submit(Command::AllocateProducerId).await? {
            CommandResult::ProducerId(id) => Ok(id),
            other => Err(refused_or_unexpected(other)),
        }
    }

    /// One transaction coordinator op (RFC 0004 §2), written by the coordinator holding the id's
    /// transaction shard at `command.coordinator_epoch`: the client's answer, or
    /// `Rejected(Txn { error })` (the state machine refused it: nothing changed),
    /// `Rejected(StaleTxnCoordinator)` (the shard moved). Idempotent: an op whose answer was
    /// lost is resubmitted as is and gets its first answer.
    pub async fn txn(&self, command: TxnCommand) -> Result<Answer, ControllerError> {
        match self.submit(Command::Txn(command)).await? {
            CommandResult::Txn(answer) => Ok(answer),
            other => Err(refused_or_unexpected(other)),
        }
    }

    /// Sets and removes SCRAM credentials (AlterUserScramCredentials, the bootstrap user).
    pub async fn alter_scram_credentials(&self, change: crate::scram::ScramChange) -> Result<(), ControllerError> {
        done(self.submit(Command::AlterScramCredentials(change)).await?)
    }

    /// Adds and removes ACL bindings (CreateAcls, DeleteAcls).
    pub async fn alter_acls(&self, change: crate::acls::AclChange) -> Result<(), ControllerError> {
        done(self.submit(Command::AlterAcls(change)).await?)
    }

    /// Sets and removes client quotas (AlterClientQuotas).
    pub async fn alter_client_quotas(&self, change: crate::quotas::QuotaChange) -> Result<(), ControllerError> {
        done(self.submit(Command::AlterClientQuotas(change)).await?)
    }

    /// Stores a change to a consumer group, written by the coordinator holding its shard at
    /// `coordinator_epoch` (`Rejected(StaleCoordinator)` once that epoch is no longer current).
    pub async fn store_group(
        &self,
        group_id: String,
        coordinator_epoch: i32,
        op: GroupOp,
    ) -> Result<(), ControllerError> {
        done(self.submit(Command::Group(GroupCommand { group_id, coordinator_epoch, op })).await?)
    }
}
