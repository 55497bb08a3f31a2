//! The one place where Skiff's errors become Kafka error codes.

use kafka_protocol::ResponseError;
use skiff_controller::image::EpochMismatch;
use skiff_controller::intent::{Rejection, TxnError};
use skiff_controller::{ControllerError, ErrorKind};

use crate::broker::CreateTopicError;
use crate::broker::batch::BatchError;
use crate::group::GroupError;
use crate::handler::broker_loggers::BrokerLoggerError;
use crate::handler::describe_producers::DescribeProducersError;
use crate::handler::elect_leaders::ElectionError;
use crate::handler::features::InvalidUpdateVersion;
use crate::handler::reassignments::ReassignmentError;
use crate::log::txn::TxnRefusal;
use crate::log::wal::AppendError;
use crate::txn::TxnCoordinatorError;

pub const NONE: i16 = 0;

pub fn code(e: ResponseError) -> i16 {
    e.code()
}

pub fn batch(e: &BatchError) -> i16 {
    match e {
        BatchError::Corrupt(_) => code(ResponseError::CorruptMessage),
        BatchError::UnsupportedMagic(_) => code(ResponseError::UnsupportedForMessageFormat),
        BatchError::ZstdBeforeV7 { .. } => code(ResponseError::UnsupportedCompressionType),
        BatchError::TooLarge { .. } | BatchError::DecompressedTooLarge { .. } => code(ResponseError::MessageTooLarge),
        BatchError::Invalid(_) | BatchError::KeylessRecords { .. } => code(ResponseError::InvalidRecord),
    }
}

pub fn append(e: &AppendError) -> i16 {
    match e {
        AppendError::UnknownPartition => code(ResponseError::UnknownTopicOrPartition),
        AppendError::NotLeader => code(ResponseError::NotLeaderOrFollower),
        AppendError::OutOfOrderSequence => code(ResponseError::OutOfOrderSequenceNumber),
        AppendError::ProducerFenced => code(ResponseError::InvalidProducerEpoch),
        // Retriable: the producer retries and the rewind guarantees no gap.
        AppendError::DuplicateNotYetDurable
        | AppendError::EarlierFlushFailed
        | AppendError::Storage(_)
        | AppendError::UploadTask(_)
        | AppendError::Controller(_)
        | AppendError::Rejected(_) => code(ResponseError::KafkaStorageError),
        AppendError::ShuttingDown => code(ResponseError::NotLeaderOrFollower),
        AppendError::Txn(r) => txn_refusal(r, i16::MAX),
    }
}

/// An append's error as Produce `version` answers it: TRANSACTION_ABORTABLE exists from v11
/// (KIP-890); older versions get INVALID_TXN_STATE for it, as Kafka's
/// `AddPartitionsToTxnManager` maps it "for backward compatibility with clients".
pub fn produce_append(e: &AppendError, version: i16) -> i16 {
    match e {
        AppendError::Txn(r) => txn_refusal(r, version),
        e => append(e),
    }
}

/// Transactional produce refusals (RFC 0004 §7, Kafka 4's `ReplicaManager` and
/// `AddPartitionsToTxnManager` mappings of the coordinator's verification answers).
fn txn_refusal(r: &TxnRefusal, produce_version: i16) -> i16 {
    code(match r {
        TxnRefusal::NotInTransaction if produce_version >= 11 => ResponseError::TransactionAbortable,
        TxnRefusal::NotInTransaction | TxnRefusal::ExpectedTransactional { .. } => ResponseError::InvalidTxnState,
        TxnRefusal::InvalidProducerIdMapping => ResponseError::InvalidProducerIdMapping,
        // Producers expect INVALID_PRODUCER_EPOCH from a produce (Kafka maps PRODUCER_FENCED).
        TxnRefusal::ProducerFenced => ResponseError::InvalidProducerEpoch,
        TxnRefusal::Unverifiable(_) => ResponseError::NotEnoughReplicas,
        TxnRefusal::Coordinator(e) => return txn(*e),
    })
}

/// TxnOffsetCommit v5's implicit add of the group refused (Kafka: the verification errors as
/// `AddPartitionsToTxnManager` maps them, then the group coordinator's
/// `handleOperationException`, which turns the retriable NOT_ENOUGH_REPLICAS into
/// COORDINATOR_NOT_AVAILABLE).
pub fn txn_offset_commit_implicit_add(r: &TxnRefusal) -> i16 {
    code(match r {
        TxnRefusal::ProducerFenced => ResponseError::InvalidProducerEpoch,
        TxnRefusal::InvalidProducerIdMapping => ResponseError::InvalidProducerIdMapping,
        TxnRefusal::Unverifiable(_) => ResponseError::CoordinatorNotAvailable,
        TxnRefusal::Coordinator(e) => return txn(*e),
        TxnRefusal::NotInTransaction | TxnRefusal::ExpectedTransactional { .. } => ResponseError::InvalidTxnState,
    })
}

/// A failed read of stored data: retriable (the client retries, possibly on another broker).
pub fn storage(_e: &skiff_storage::StorageError) -> i16 {
    code(ResponseError::KafkaStorageError)
}

/// A request's `current_leader_epoch` that does not match the partition's.
pub fn leader_epoch(e: EpochMismatch) -> i16 {
    code(match e {
        EpochMismatch::Fenced => ResponseError::FencedLeaderEpoch,
        EpochMismatch::Unknown => ResponseError::UnknownLeaderEpoch,
    })
}

/// Errors of topic and cluster requests that reach the controller: a refusal keeps its own
/// code; a controller that cannot answer now is NOT_CONTROLLER (clients retry).
pub fn controller(e: &ControllerError) -> i16 {
    if let Some(r) = e.rejection() {
        return rejection(r);
    }
    match e.kind() {
        ErrorKind::Retriable | ErrorKind::Closed => code(ResponseError::NotController),
        _ => code(ResponseError::UnknownServerError),
    }
}

pub fn create_topic(e: &CreateTopicError) -> i16 {
    match e {
        CreateTopicError::InvalidName(_) => code(ResponseError::InvalidTopicException),
        CreateTopicError::InvalidPartitions(_) => code(ResponseError::InvalidPartitions),
        CreateTopicError::InvalidConfig(_) => code(ResponseError::InvalidConfig),
        CreateTopicError::Exists(_) => code(ResponseError::TopicAlreadyExists),
        CreateTopicError::Controller(c) => controller(c),
        CreateTopicError::Rejected(r) => rejection(r),
    }
}

pub fn rejection(r: &Rejection) -> i16 {
    match r {
        Rejection::TopicExists(_) => code(ResponseError::TopicAlreadyExists),
        Rejection::UnknownTopic(_) | Rejection::UnknownTopicId(_) | Rejection::UnknownPartition { .. } => {
            code(ResponseError::UnknownTopicOrPartition)
        }
        Rejection::InvalidPartitions(_) => code(ResponseError::InvalidPartitions),
        Rejection::NoBrokers => code(ResponseError::BrokerNotAvailable),
        Rejection::InvalidReplicaAssignment(_) => code(ResponseError::InvalidReplicaAssignment),
        Rejection::Fenced { .. } => code(ResponseError::NotLeaderOrFollower),
        Rejection::OffsetGap { .. } | Rejection::StaleReplacement { .. } | Rejection::StaleClean { .. } => {
            code(ResponseError::KafkaStorageError)
        }
        Rejection::OffsetOutOfRange { .. } => code(ResponseError::OffsetOutOfRange),
        Rejection::StaleCoordinator { .. } => code(ResponseError::NotCoordinator),
        Rejection::BrokerNotRegistered(_) => code(ResponseError::BrokerIdNotRegistered),
        // Kafka has no refusal here (see controller/src/placement.rs): the request is invalid
        // for Skiff.
        Rejection::BrokerStillLive(_) => code(ResponseError::InvalidRequest),
        Rejection::StaleTxnCoordinator { .. } => code(ResponseError::NotCoordinator),
        Rejection::Txn { error, .. } => txn(*error),
        Rejection::WrongTxnShard { .. } | Rejection::MarkerNotOwed { .. } => code(ResponseError::UnknownServerError),
    }
}

/// A transaction coordinator op that did not reach the state machine's answer: NOT_COORDINATOR
/// (the shard is elsewhere or moved), the state machine's own error, or, when the controller
/// could not commit it, COORDINATOR_NOT_AVAILABLE (Kafka's answer when the transaction log
/// append times out; clients retry).
pub fn txn_coordinator(e: &TxnCoordinatorError) -> i16 {
    match e {
        TxnCoordinatorError::NotCoordinator => code(ResponseError::NotCoordinator),
        TxnCoordinatorError::Txn(e) => txn(*e),
        TxnCoordinatorError::Controller(c) => match c.kind() {
            ErrorKind::Retriable | ErrorKind::Unavailable | ErrorKind::Closed => {
                code(ResponseError::CoordinatorNotAvailable)
            }
            ErrorKind::Fenced => code(ResponseError::NotCoordinator),
            _ => code(ResponseError::UnknownServerError),
        },
    }
}

/// Kafka's conversions of transaction codes for request versions that predate them: KIP-588's
/// PRODUCER_FENCED becomes INVALID_PRODUCER_EPOCH (always for TxnOffsetCommit, whose checks are
/// Kafka's verification: `AddPartitionsToTxnManager` converts it), and KIP-890's
/// TRANSACTION_ABORTABLE becomes INVALID_TXN_STATE.
pub fn txn_for_version(api: kafka_protocol::messages::ApiKey, version: i16, c: i16) -> i16 {
    use kafka_protocol::messages::ApiKey;
    let (fenced_since, abortable_since) = match api {
        ApiKey::InitProducerId => (4, 5),
        ApiKey::AddPartitionsToTxn => (2, 5),
        ApiKey::AddOffsetsToTxn | ApiKey::EndTxn => (2, 4),
        ApiKey::TxnOffsetCommit => (i16::MAX, 4),
        _ => (0, 0),
    };
    if c == code(ResponseError::ProducerFenced) && version < fenced_since {
        code(ResponseError::InvalidProducerEpoch)
    } else if c == code(ResponseError::TransactionAbortable) && version < abortable_since {
        code(ResponseError::InvalidTxnState)
    } else {
        c
    }
}

/// The transaction state machine's refusals (RFC 0004 §2, Kafka's `Errors`).
pub fn txn(e: TxnError) -> i16 {
    code(match e {
        TxnError::ProducerFenced => ResponseError::ProducerFenced,
        TxnError::InvalidProducerEpoch => ResponseError::InvalidProducerEpoch,
        TxnError::InvalidProducerIdMapping => ResponseError::InvalidProducerIdMapping,
        TxnError::ConcurrentTransactions => ResponseError::ConcurrentTransactions,
        TxnError::InvalidTxnState => ResponseError::InvalidTxnState,
        TxnError::InvalidTransactionTimeout => ResponseError::InvalidTransactionTimeout,
        TxnError::TransactionalIdNotFound => ResponseError::TransactionalIdNotFound,
        TxnError::TransactionAbortable => ResponseError::TransactionAbortable,
    })
}

pub fn group(e: GroupError) -> i16 {
    code(match e {
        GroupError::UnknownMemberId => ResponseError::UnknownMemberId,
        GroupError::IllegalGeneration => ResponseError::IllegalGeneration,
        GroupError::InconsistentGroupProtocol => ResponseError::InconsistentGroupProtocol,
        GroupError::RebalanceInProgress => ResponseError::RebalanceInProgress,
        GroupError::MemberIdRequired => ResponseError::MemberIdRequired,
        GroupError::FencedInstanceId => ResponseError::FencedInstanceId,
        GroupError::InvalidSessionTimeout => ResponseError::InvalidSessionTimeout,
        GroupError::InvalidGroupId => ResponseError::InvalidGroupId,
        GroupError::CoordinatorNotAvailable => ResponseError::CoordinatorNotAvailable,
        GroupError::NotCoordinator => ResponseError::NotCoordinator,
        GroupError::NonEmptyGroup => ResponseError::NonEmptyGroup,
        GroupError::GroupIdNotFound => ResponseError::GroupIdNotFound,
        GroupError::FencedMemberEpoch => ResponseError::FencedMemberEpoch,
        GroupError::StaleMemberEpoch => ResponseError::StaleMemberEpoch,
        GroupError::UnreleasedInstanceId => ResponseError::UnreleasedInstanceId,
        GroupError::UnsupportedAssignor => ResponseError::UnsupportedAssignor,
        GroupError::InvalidRequest => ResponseError::InvalidRequest,
        GroupError::InvalidRegularExpression => ResponseError::InvalidRegularExpression,
        GroupError::UnsupportedVersion => ResponseError::UnsupportedVersion,
    })
}

/// Errors of group requests that reach the controller (offset commits, deletions): a refusal
/// keeps its own code (a stale coordinator epoch: NOT_COORDINATOR).
pub fn group_controller(e: &ControllerError) -> i16 {
    if let Some(r) = e.rejection() {
        return rejection(r);
    }
    match e.kind() {
        // The coordinator cannot write right now: clients rediscover it and retry.
        ErrorKind::Retriable | ErrorKind::Closed => code(ResponseError::NotCoordinator),
        // No controller answered (a leader election, or the outcome of the write is unknown):
        // Kafka's group coordinator answers COORDINATOR_NOT_AVAILABLE when its log append
        // fails this way (NOT_ENOUGH_REPLICAS, REQUEST_TIMED_OUT), and clients retry it. A
        // retried (Txn)OffsetCommit writes the same offsets again: idempotent.
        ErrorKind::Unavailable => code(ResponseError::CoordinatorNotAvailable),
        _ => code(ResponseError::UnknownServerError),
    }
}

/// A refused feature update (UpdateFeatures): Kafka's INVALID_UPDATE_VERSION.
pub fn feature_update(_e: &InvalidUpdateVersion) -> i16 {
    code(ResponseError::InvalidUpdateVersion)
}

/// DescribeQuorum when the controller leader cannot answer: Kafka's answer from a controller
/// that is not the leader, NOT_LEADER_OR_FOLLOWER (the tool may retry).
pub fn describe_quorum(e: &ControllerError) -> i16 {
    match e.kind() {
        ErrorKind::Retriable | ErrorKind::Closed => code(ResponseError::NotLeaderOrFollower),
        _ => code(ResponseError::UnknownServerError),
    }
}

/// ElectLeaders per-partition outcomes (Kafka's `ReplicationControlManager.electLeader`).
pub fn election(e: &ElectionError) -> i16 {
    code(match e {
        ElectionError::UnknownTopic(_) | ElectionError::UnknownPartition(..) => ResponseError::UnknownTopicOrPartition,
        ElectionError::NotNeeded => ResponseError::ElectionNotNeeded,
        ElectionError::PreferredLeaderNotAvailable => ResponseError::PreferredLeaderNotAvailable,
        ElectionError::EligibleLeadersNotAvailable => ResponseError::EligibleLeadersNotAvailable,
    })
}

/// DescribeProducers per-partition errors (Kafka's `ReplicaManager.activeProducerState`).
pub fn describe_producers(e: DescribeProducersError) -> i16 {
    code(match e {
        DescribeProducersError::UnknownTopicOrPartition => ResponseError::UnknownTopicOrPartition,
        DescribeProducersError::NotLeader => ResponseError::NotLeaderOrFollower,
    })
}

/// AlterPartitionReassignments per-partition errors (Kafka's `ReplicationControlManager`).
pub fn reassignment(e: &ReassignmentError) -> i16 {
    match e {
        ReassignmentError::Rejected(r) => rejection(r),
        ReassignmentError::ReplicationFactorChange { .. } => code(ResponseError::InvalidReplicationFactor),
        ReassignmentError::NoReassignmentInProgress => code(ResponseError::NoReassignmentInProgress),
        ReassignmentError::Controller(_, c) => *c,
    }
}

/// Broker-logger config errors (Kafka's `ConfigAdminManager.validateLogLevelConfigs`).
pub fn broker_logger(e: &BrokerLoggerError) -> i16 {
    use crate::log_levels::LoggerError;
    code(match e {
        BrokerLoggerError::Logger(LoggerError::UnknownLogger(_) | LoggerError::InvalidLevel { .. }) => {
            ResponseError::InvalidConfig
        }
        BrokerLoggerError::Logger(LoggerError::Reload(_)) => ResponseError::UnknownServerError,
        BrokerLoggerError::Logger(LoggerError::RemoveRoot | LoggerError::OperationNotAllowed(_))
        | BrokerLoggerError::EmptyBrokerId
        | BrokerLoggerError::OtherBroker { .. }
        | BrokerLoggerError::Unavailable => ResponseError::InvalidRequest,
    })
}

/// SaslHandshake naming a mechanism the listener does not enable.
pub fn unsupported_sasl_mechanism() -> i16 {
    code(ResponseError::UnsupportedSaslMechanism)
}

/// SaslAuthenticate that failed (wrong password, unknown user, malformed token).
pub fn sasl_authentication_failed() -> i16 {
    code(ResponseError::SaslAuthenticationFailed)
}

/// SASL requests out of order (a second SaslAuthenticate after success, re-authentication with
/// another mechanism).
pub fn illegal_sasl_state() -> i16 {
    code(ResponseError::IllegalSaslState)
}

/// DescribeUserScramCredentials / AlterUserScramCredentials refusals (Kafka's codes).
pub fn scram_request(e: &crate::handler::scram_credentials::ScramRequestError) -> i16 {
    use crate::handler::scram_credentials::ScramRequestError as E;
    code(match e {
        E::EmptyUser | E::TooFewIterations | E::TooManyIterations | E::EmptySalt => {
            ResponseError::UnacceptableCredential
        }
        E::UnknownMechanism => ResponseError::UnsupportedSaslMechanism,
        E::AlteredTwice | E::DescribedTwice => ResponseError::DuplicateResource,
        E::DeleteMissing | E::DescribeMissing => ResponseError::ResourceNotFound,
    })
}

/// The *_AUTHORIZATION_FAILED code of a resource the authorizer refused (Kafka's codes: topic
/// 29, group 30, cluster 31, transactional id 53, delegation token 65).
pub fn denied(resource_type: skiff_controller::acls::ResourceType) -> i16 {
    use skiff_controller::acls::ResourceType as Rt;
    code(match resource_type {
        Rt::Topic => ResponseError::TopicAuthorizationFailed,
        Rt::Group => ResponseError::GroupAuthorizationFailed,
        Rt::TransactionalId => ResponseError::TransactionalIdAuthorizationFailed,
        Rt::DelegationToken => ResponseError::DelegationTokenAuthorizationFailed,
        Rt::Cluster | Rt::User | Rt::Any => ResponseError::ClusterAuthorizationFailed,
    })
}

/// An ACL or ACL filter Kafka would not accept: INVALID_REQUEST.
pub fn invalid_acl(_e: &crate::handler::acls::InvalidAcl) -> i16 {
    code(ResponseError::InvalidRequest)
}

/// A produce forwarded to the partition's leader in another zone that failed on the way (RFC
/// 0005): every outcome is retriable, so an idempotent producer retries and the leader's
/// sequence check answers a batch that did land with its original offset.
pub fn zone_forward(e: &crate::handler::zone_produce::ForwardError) -> i16 {
    use crate::handler::zone_produce::ForwardError;
    match e {
        // The leader is gone or moving: the client refreshes its metadata and tries again.
        ForwardError::NotSent(_) => code(ResponseError::NotLeaderOrFollower),
        ForwardError::Unknown(_) => code(ResponseError::RequestTimedOut),
        ForwardError::Staging(_) => code(ResponseError::KafkaStorageError),
    }
}

/// The leader could not read a forwarded produce's staged records (retriable).
pub fn zone_staged_read(e: &skiff_storage::StorageError) -> i16 {
    storage(e)
}

/// A forward naming an object that is not a staging object (RFC 0005): INVALID_REQUEST.
pub fn zone_not_staged() -> i16 {
    code(ResponseError::InvalidRequest)
}

/// A forwarded produce's staged records do not match their CRC-32C (Kafka's
/// CorruptRecordException, retriable: the producer sends the batch again and it is staged anew).
pub fn zone_staged_corrupt() -> i16 {
    code(ResponseError::CorruptMessage)
}

/// DescribeClientQuotas / AlterClientQuotas refusals (Kafka's codes: INVALID_REQUEST, and
/// UNSUPPORTED_VERSION for an unknown entity or match type in a describe filter).
pub fn quota_request(e: &crate::handler::client_quotas::QuotaRequestError) -> i16 {
    use crate::handler::client_quotas::QuotaRequestError as E;
    code(match e {
        E::UnsupportedEntityType(_) | E::UnknownMatchType(_) => ResponseError::UnsupportedVersion,
        _ => ResponseError::InvalidRequest,
    })
}

/// An incremental fetch without a usable session (KIP-227): the client starts a full one.
pub fn fetch_session(e: &crate::handler::fetch_session::SessionError) -> i16 {
    use crate::handler::fetch_session::SessionError;
    code(match e {
        SessionError::IdNotFound(_) => ResponseError::FetchSessionIdNotFound,
        SessionError::InvalidEpoch { .. } => ResponseError::InvalidFetchSessionEpoch,
    })
}

#[cfg(test)]
mod group_controller_tests {
    use super::*;

    #[test]
    fn an_unavailable_controller_is_a_retriable_coordinator_error() {
        let unavailable = ControllerError::Unavailable { reason: "outcome unknown".into() };
        assert_eq!(group_controller(&unavailable), code(ResponseError::CoordinatorNotAvailable));
        assert_eq!(group_controller(&ControllerError::Closed), code(ResponseError::NotCoordinator));
    }
}
