//! AlterPartitionReassignments and ListPartitionReassignments (`kafka-reassign-partitions.sh
//! --execute / --verify / --list`), with the checks and codes of Kafka's
//! `ReplicationControlManager.alterPartitionReassignments`.
//!
//! A reassignment in Skiff copies no data (every replica reads the same objects), so it is a
//! replica-list change committed at once: the new list replaces the old one and leadership
//! follows placement's rule for manual lists (the preferred replica if live). Nothing is ever
//! in progress, so ListPartitionReassignments lists nothing and cancelling one (null replicas)
//! is Kafka's NO_REASSIGNMENT_IN_PROGRESS. The internal `__consumer_offsets` is not a
//! reassignable topic (its partitions follow the coordinator shards).

use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, ListPartitionReassignmentsRequest,
    ListPartitionReassignmentsResponse,
};
use kafka_protocol::protocol::StrBytes;
use skiff_controller::image::{MetadataImage, Rejection};

use super::errors;
use crate::broker::Broker;

/// Why one partition's reassignment was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReassignmentError {
    /// Unknown topic or partition, or an invalid replica list (Kafka's message).
    #[error("{0}")]
    Rejected(Rejection),
    #[error("The replication factor is changed from {from} to {to} but allowReplicationFactorChange is false.")]
    ReplicationFactorChange { from: usize, to: usize },
    #[error("No partition reassignment is in progress.")]
    NoReassignmentInProgress,
    /// The controller could not apply it (its message, and the code `errors::controller` chose).
    #[error("{0}")]
    Controller(String, i16),
}

/// What to do with one partition, decided from the image before anything is submitted.
#[derive(Debug, PartialEq)]
enum Plan {
    /// Already the target list.
    Nothing,
    Submit(Vec<i32>),
}

fn plan(
    m: &MetadataImage,
    topic: &str,
    partition: i32,
    target: Option<&[i32]>,
    allow_rf_change: bool,
) -> Result<Plan, ReassignmentError> {
    let p = m
        .partition_by_name(topic, partition)
        .ok_or_else(|| ReassignmentError::Rejected(unknown(m, topic, partition)))?;
    let Some(target) = target else {
        return Err(ReassignmentError::NoReassignmentInProgress);
    };
    m.validate_reassignment(topic, partition, target).map_err(ReassignmentError::Rejected)?;
    let (current, _) = m.reported_replicas(p);
    if !allow_rf_change && current.len() != target.len() {
        return Err(ReassignmentError::ReplicationFactorChange { from: current.len(), to: target.len() });
    }
    Ok(if current == target { Plan::Nothing } else { Plan::Submit(target.to_vec()) })
}

fn unknown(m: &MetadataImage, topic: &str, partition: i32) -> Rejection {
    if m.topic_exists(topic) {
        Rejection::UnknownPartition { topic: topic.to_string(), partition }
    } else {
        Rejection::UnknownTopic(topic.to_string())
    }
}

pub async fn alter(
    broker: &Broker,
    req: AlterPartitionReassignmentsRequest,
    version: i16,
) -> AlterPartitionReassignmentsResponse {
    // v0 has no flag: replication factor changes are allowed, as the flag's default says.
    let allow_rf_change = version == 0 || req.allow_replication_factor_change;
    let mut responses = Vec::with_capacity(req.topics.len());
    for t in &req.topics {
        let topic = t.name.0.as_str();
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in &t.partitions {
            let target: Option<Vec<i32>> = p.replicas.as_ref().map(|r| r.iter().map(|b| b.0).collect());
            let planned =
                broker.metadata.read(|m| plan(m, topic, p.partition_index, target.as_deref(), allow_rf_change));
            let outcome = match planned {
                Ok(Plan::Nothing) => Ok(()),
                Ok(Plan::Submit(replicas)) => {
                    broker.controller.reassign_partition(topic, p.partition_index, replicas).await.map_err(|e| match e
                        .rejection()
                    {
                        Some(r) => ReassignmentError::Rejected(r.clone()),
                        None => ReassignmentError::Controller(e.to_string(), errors::controller(&e)),
                    })
                }
                Err(e) => Err(e),
            };
            let r = ReassignablePartitionResponse::default().with_partition_index(p.partition_index);
            partitions.push(match outcome {
                Ok(()) => {
                    tracing::info!(topic, partition = p.partition_index, replicas = ?target, "partition reassigned");
                    r.with_error_code(errors::NONE).with_error_message(None)
                }
                Err(e) => r
                    .with_error_code(errors::reassignment(&e))
                    .with_error_message(Some(StrBytes::from_string(e.to_string()))),
            });
        }
        responses.push(ReassignableTopicResponse::default().with_name(t.name.clone()).with_partitions(partitions));
    }
    AlterPartitionReassignmentsResponse::default()
        .with_allow_replication_factor_change(allow_rf_change)
        .with_error_code(errors::NONE)
        .with_responses(responses)
}

/// Nothing is ever in progress: the empty list, for named partitions or all.
pub fn list(_req: &ListPartitionReassignmentsRequest) -> ListPartitionReassignmentsResponse {
    ListPartitionReassignmentsResponse::default().with_error_code(errors::NONE).with_topics(vec![])
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::ResponseError;
    use skiff_controller::image::ImageFixture;
    use skiff_controller::intent::CreateTopic;
    use uuid::Uuid;

    fn image() -> MetadataImage {
        ImageFixture::new("c")
            .register_test_broker(1)
            .register_test_broker(2)
            .create_topic(CreateTopic {
                name: "t".into(),
                topic_id: Uuid::from_u128(7),
                partitions: 1,
                configs: Default::default(),
                assignments: vec![vec![1]],
            })
            .build()
    }

    #[test]
    fn kafka_checks_before_submitting() {
        let m = image();
        assert_eq!(plan(&m, "t", 0, Some(&[2, 1]), true), Ok(Plan::Submit(vec![2, 1])));
        assert_eq!(plan(&m, "t", 0, Some(&[1]), true), Ok(Plan::Nothing));
        assert_eq!(
            plan(&m, "t", 0, Some(&[2, 1]), false),
            Err(ReassignmentError::ReplicationFactorChange { from: 1, to: 2 })
        );
        assert_eq!(plan(&m, "t", 0, None, true), Err(ReassignmentError::NoReassignmentInProgress));
        let code = |r: Result<Plan, ReassignmentError>| errors::reassignment(&r.expect_err("refused"));
        assert_eq!(code(plan(&m, "t", 3, Some(&[1]), true)), errors::code(ResponseError::UnknownTopicOrPartition));
        assert_eq!(code(plan(&m, "u", 0, Some(&[1]), true)), errors::code(ResponseError::UnknownTopicOrPartition));
        assert_eq!(code(plan(&m, "t", 0, Some(&[9]), true)), errors::code(ResponseError::InvalidReplicaAssignment));
        assert_eq!(code(plan(&m, "t", 0, Some(&[]), true)), errors::code(ResponseError::InvalidReplicaAssignment));
        assert_eq!(code(plan(&m, "t", 0, Some(&[1, 1]), true)), errors::code(ResponseError::InvalidReplicaAssignment));
        assert_eq!(code(plan(&m, "t", 0, None, true)), errors::code(ResponseError::NoReassignmentInProgress));
        assert!(list(&ListPartitionReassignmentsRequest::default()).topics.is_empty());
    }
}
