//! DescribeQuorum: the controller quorum's status (`kafka-metadata-quorum describe --status /
//! --replication`), as Kafka's `KafkaRaftClient.handleDescribeQuorumRequest` answers it for the
//! `__cluster_metadata` log. Kafka's brokers forward it to the controller; Skiff's ask the Raft
//! leader through the controller client (controller/src/quorum.rs builds the status there).
//!
//! The voters are Skiff's controllers, with their log end offsets and the times of their last
//! answer to the leader; the leader epoch is the Raft term. Directory ids are the zero UUID and
//! there are no observers: Skiff's quorum is static (`kraft.version` 0) and brokers follow the
//! metadata log through the leader's watch, not as Raft observers.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_quorum_response::{Listener, Node, PartitionData, ReplicaState, TopicData};
use kafka_protocol::messages::{BrokerId, DescribeQuorumRequest, DescribeQuorumResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use skiff_controller::quorum::QuorumStatus;
use uuid::Uuid;

use super::errors::{self, code};
use crate::broker::Broker;

/// Kafka's metadata log: the only topic-partition DescribeQuorum knows.
pub const METADATA_TOPIC: &str = "__cluster_metadata";
/// The listener name Kafka's controllers advertise by default.
const CONTROLLER_LISTENER: &str = "CONTROLLER";

pub async fn handle(broker: &Broker, req: DescribeQuorumRequest) -> DescribeQuorumResponse {
    if !asks_for_metadata_log(&req) {
        // Kafka: "until we support multi-raft, topic partition mismatches are invalid".
        return DescribeQuorumResponse::default().with_error_code(code(ResponseError::UnknownTopicOrPartition));
    }
    match broker.controller.describe_quorum().await {
        Ok(status) => response(&status),
        Err(e) => {
            tracing::info!(error = %e, "DescribeQuorum: the controller leader did not answer");
            let partition = PartitionData::default()
                .with_partition_index(0)
                .with_error_code(errors::describe_quorum(&e))
                .with_leader_id(BrokerId(-1))
                .with_leader_epoch(-1)
                .with_high_watermark(-1);
            DescribeQuorumResponse::default().with_topics(vec![topic(partition)])
        }
    }
}

/// Kafka's `hasValidTopicPartition`: exactly `__cluster_metadata` partition 0.
fn asks_for_metadata_log(req: &DescribeQuorumRequest) -> bool {
    matches!(req.topics.as_slice(), [t] if t.topic_name.0.as_str() == METADATA_TOPIC
        && matches!(t.partitions.as_slice(), [p] if p.partition_index == 0))
}

fn topic(partition: PartitionData) -> TopicData {
    TopicData::default()
        .with_topic_name(TopicName(StrBytes::from_static_str(METADATA_TOPIC)))
        .with_partitions(vec![partition])
}

/// The answer for `status` (pure).
pub fn response(status: &QuorumStatus) -> DescribeQuorumResponse {
    let voters = status
        .voters
        .iter()
        .map(|v| {
            ReplicaState::default()
                .with_replica_id(BrokerId(v.id))
                .with_replica_directory_id(Uuid::nil())
                .with_log_end_offset(v.log_end_offset)
                .with_last_fetch_timestamp(v.last_fetch_timestamp_ms)
                .with_last_caught_up_timestamp(v.last_caught_up_timestamp_ms)
        })
        .collect();
    let nodes = status
        .voters
        .iter()
        .map(|v| {
            let listeners = v
                .addr
                .rsplit_once(':')
                .and_then(|(host, port)| Some((host, port.parse::<u16>().ok()?)))
                .map(|(host, port)| {
                    Listener::default()
                        .with_name(StrBytes::from_static_str(CONTROLLER_LISTENER))
                        .with_host(StrBytes::from_string(host.to_string()))
                        .with_port(port)
                })
                .into_iter()
                .collect();
            Node::default().with_node_id(BrokerId(v.id)).with_listeners(listeners)
        })
        .collect();
    let partition = PartitionData::default()
        .with_partition_index(0)
        .with_error_code(errors::NONE)
        .with_leader_id(BrokerId(status.leader_id))
        .with_leader_epoch(status.leader_epoch)
        .with_high_watermark(status.high_watermark)
        .with_current_voters(voters)
        .with_observers(vec![]);
    DescribeQuorumResponse::default().with_topics(vec![topic(partition)]).with_nodes(nodes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::describe_quorum_request::{PartitionData as Asked, TopicData as AskedTopic};
    use skiff_controller::quorum::VoterState;

    fn req(topic: &str, partitions: &[i32]) -> DescribeQuorumRequest {
        DescribeQuorumRequest::default().with_topics(vec![
            AskedTopic::default()
                .with_topic_name(TopicName(StrBytes::from_string(topic.into())))
                .with_partitions(partitions.iter().map(|&p| Asked::default().with_partition_index(p)).collect()),
        ])
    }

    #[test]
    fn only_the_metadata_log_partition_zero() {
        assert!(asks_for_metadata_log(&req(METADATA_TOPIC, &[0])));
        assert!(!asks_for_metadata_log(&req(METADATA_TOPIC, &[1])));
        assert!(!asks_for_metadata_log(&req(METADATA_TOPIC, &[0, 0])));
        assert!(!asks_for_metadata_log(&req("other", &[0])));
        assert!(!asks_for_metadata_log(&DescribeQuorumRequest::default()));
    }

    #[test]
    fn voters_and_their_listeners() {
        let status = QuorumStatus {
            leader_id: 2,
            leader_epoch: 3,
            high_watermark: 10,
            voters: vec![VoterState {
                id: 2,
                addr: "127.0.0.1:9093".into(),
                log_end_offset: 10,
                last_fetch_timestamp_ms: 5,
                last_caught_up_timestamp_ms: 5,
            }],
        };
        let r = response(&status);
        let p = &r.topics[0].partitions[0];
        assert_eq!((p.leader_id, p.leader_epoch, p.high_watermark), (BrokerId(2), 3, 10));
        assert_eq!(p.current_voters[0].log_end_offset, 10);
        assert_eq!(r.nodes[0].listeners[0].port, 9093);
        assert_eq!(r.nodes[0].listeners[0].host.as_str(), "127.0.0.1");
    }
}
