//! ElectLeaders (`kafka-leader-election.sh`), as Kafka's `ReplicationControlManager.electLeaders`
//! answers it.
//!
//! Skiff's placement (controller/src/placement.rs) already keeps every partition led by its
//! preferred replica (the first of its replica list) whenever that broker is live, and gives a
//! leader to every partition as long as one broker is live: there is never an election left
//! for an operator to trigger. So each named partition gets Kafka's answer for that state:
//! * PREFERRED: `ELECTION_NOT_NEEDED` when the preferred replica leads; when it is not live,
//!   `PREFERRED_LEADER_NOT_AVAILABLE` (it leads again as soon as it registers);
//! * UNCLEAN: `ELECTION_NOT_NEEDED` when the partition has a leader, else
//!   `ELIGIBLE_LEADERS_NOT_AVAILABLE` (no live broker at all);
//! * unknown topics and partitions: `UNKNOWN_TOPIC_OR_PARTITION` with Kafka's messages.
//!
//! With no partitions named (null), every partition is considered and, as in Kafka, those that
//! need no election are left out of the answer.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{ElectLeadersRequest, ElectLeadersResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use skiff_controller::image::MetadataImage;

use super::errors::{self, code};
use super::metadata::{all_topic_names, topic_view};
use crate::broker::Broker;

/// Kafka's `ElectionType`.
const PREFERRED: i8 = 0;
const UNCLEAN: i8 = 1;

/// Why a partition needs no, or can have no, election.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ElectionError {
    #[error("No such topic as {0}")]
    UnknownTopic(String),
    #[error("No such partition as {0}-{1}")]
    UnknownPartition(String, i32),
    #[error("Leader election not needed for topic partition.")]
    NotNeeded,
    #[error("The preferred leader was not available.")]
    PreferredLeaderNotAvailable,
    #[error("Eligible topic partition leaders are not available.")]
    EligibleLeadersNotAvailable,
}

pub fn handle(broker: &Broker, req: ElectLeadersRequest, version: i16) -> ElectLeadersResponse {
    let local = broker.settings.node_id;
    broker.metadata.read(|m| elect(m, local, &req, version))
}

/// The election outcome of one partition (pure).
fn outcome(m: &MetadataImage, local: i32, topic: &str, partition: i32, unclean: bool) -> Result<(), ElectionError> {
    let t = topic_view(m, topic, local).ok_or_else(|| ElectionError::UnknownTopic(topic.to_string()))?;
    let p = usize::try_from(partition)
        .ok()
        .and_then(|i| t.partitions.get(i))
        .ok_or_else(|| ElectionError::UnknownPartition(topic.to_string(), partition))?;
    let has_leader = p.leader >= 0;
    if unclean {
        return if has_leader {
            Err(ElectionError::NotNeeded)
        } else {
            Err(ElectionError::EligibleLeadersNotAvailable)
        };
    }
    match p.replicas.first() {
        Some(&preferred) if has_leader && preferred == p.leader => Err(ElectionError::NotNeeded),
        // Placement moves leadership to a live preferred replica at once, so a preferred
        // replica that does not lead is not live.
        _ => Err(ElectionError::PreferredLeaderNotAvailable),
    }
}

pub fn elect(m: &MetadataImage, local: i32, req: &ElectLeadersRequest, version: i16) -> ElectLeadersResponse {
    // v0 has no election type: preferred.
    let election_type = if version == 0 { PREFERRED } else { req.election_type };
    if election_type != PREFERRED && election_type != UNCLEAN {
        // Kafka: InvalidRequestException("Unknown election type N") for the whole request.
        let r = ElectLeadersResponse::default();
        return if version >= 1 { r.with_error_code(code(ResponseError::InvalidRequest)) } else { r };
    }
    let unclean = election_type == UNCLEAN;
    let result = |partition: i32, e: Result<(), ElectionError>| {
        let (error_code, message) = match &e {
            Ok(()) => (errors::NONE, None),
            Err(e) => (errors::election(e), Some(StrBytes::from_string(e.to_string()))),
        };
        PartitionResult::default().with_partition_id(partition).with_error_code(error_code).with_error_message(message)
    };
    let topic_result = |name: &str, partitions: Vec<PartitionResult>| {
        ReplicaElectionResult::default()
            .with_topic(TopicName(StrBytes::from_string(name.to_string())))
            .with_partition_result(partitions)
    };
    let results = match &req.topic_partitions {
        None => all_topic_names(m)
            .into_iter()
            .map(|name| {
                let count = topic_view(m, &name, local).map_or(0, |t| t.partitions.len() as i32);
                let partitions = (0..count)
                    .map(|p| (p, outcome(m, local, &name, p, unclean)))
                    .filter(|(_, e)| *e != Err(ElectionError::NotNeeded))
                    .map(|(p, e)| result(p, e))
                    .collect();
                topic_result(&name, partitions)
            })
            .collect(),
        Some(topics) => topics
            .iter()
            .map(|t| {
                let name = t.topic.0.as_str();
                let partitions = t.partitions.iter().map(|&p| result(p, outcome(m, local, name, p, unclean))).collect();
                topic_result(name, partitions)
            })
            .collect(),
    };
    ElectLeadersResponse::default().with_error_code(errors::NONE).with_replica_election_results(results)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
    use skiff_controller::image::ImageFixture;
    use skiff_controller::intent::CreateTopic;
    use uuid::Uuid;

    /// Topic "a": partition 0 assigned [1, 2], partition 1 assigned [3, 1]; broker 3 is not
    /// registered, so broker 1 leads partition 1 in its place.
    fn image() -> MetadataImage {
        ImageFixture::new("c")
            .register_test_broker(1)
            .register_test_broker(2)
            .create_topic(CreateTopic {
                name: "a".into(),
                topic_id: Uuid::from_u128(7),
                partitions: 2,
                configs: Default::default(),
                assignments: vec![vec![1, 2], vec![2, 1]],
            })
            .build()
    }

    fn req(election_type: i8, parts: Option<&[(&str, i32)]>) -> ElectLeadersRequest {
        ElectLeadersRequest::default().with_election_type(election_type).with_topic_partitions(parts.map(|ps| {
            ps.iter()
                .map(|(t, p)| {
                    TopicPartitions::default()
                        .with_topic(TopicName(StrBytes::from_string(t.to_string())))
                        .with_partitions(vec![*p])
                })
                .collect()
        }))
    }

    fn codes(r: &ElectLeadersResponse) -> Vec<(String, i32, i16)> {
        r.replica_election_results
            .iter()
            .flat_map(|t| t.partition_result.iter().map(|p| (t.topic.0.to_string(), p.partition_id, p.error_code)))
            .collect()
    }

    #[test]
    fn preferred_leaders_already_lead() {
        let not_needed = code(ResponseError::ElectionNotNeeded);
        let unknown = code(ResponseError::UnknownTopicOrPartition);
        let r = elect(&image(), 1, &req(PREFERRED, Some(&[("a", 0), ("a", 1), ("a", 5), ("b", 0)])), 2);
        assert_eq!(
            codes(&r),
            vec![
                ("a".into(), 0, not_needed),
                ("a".into(), 1, not_needed),
                ("a".into(), 5, unknown),
                ("b".into(), 0, unknown)
            ]
        );
        let msg = r.replica_election_results[3].partition_result[0].error_message.as_deref();
        assert_eq!(msg, Some("No such topic as b"));
        // All partitions: nothing to report.
        let all = elect(&image(), 1, &req(PREFERRED, None), 2);
        assert!(codes(&all).is_empty(), "{:?}", codes(&all));
        let r = elect(&image(), 1, &req(UNCLEAN, Some(&[("a", 0)])), 2);
        assert_eq!(codes(&r), vec![("a".into(), 0, not_needed)]);
    }

    #[test]
    fn preferred_replica_not_live() {
        // Broker 1, preferred for partition 0, is fenced: broker 2 leads it meanwhile.
        let m = ImageFixture::new("c")
            .register_test_broker(1)
            .register_test_broker(2)
            .create_topic(CreateTopic {
                name: "a".into(),
                topic_id: Uuid::from_u128(7),
                partitions: 1,
                configs: Default::default(),
                assignments: vec![vec![1, 2]],
            })
            .fence_broker(1, Uuid::from_u128(1))
            .build();
        assert_eq!(outcome(&m, 2, "a", 0, false), Err(ElectionError::PreferredLeaderNotAvailable));
        // Listed among all partitions, since it needs an election that cannot happen.
        let all = elect(&m, 2, &req(PREFERRED, None), 2);
        assert_eq!(codes(&all), vec![("a".into(), 0, code(ResponseError::PreferredLeaderNotAvailable))]);
        assert_eq!(outcome(&m, 2, "a", 0, true), Err(ElectionError::NotNeeded));
        let bad = elect(&m, 2, &req(9, Some(&[("a", 0)])), 2);
        assert_eq!(bad.error_code, code(ResponseError::InvalidRequest));
    }
}
