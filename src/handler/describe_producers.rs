//! DescribeProducers (KIP-664, `kafka-transactions.sh describe-producers`): the active
//! idempotent producers of partitions this broker leads, as Kafka's
//! `ReplicaManager.activeProducerState` reports them.
//!
//! The state is the partition's committed `ProducerStates` from the metadata index (the same
//! state the produce path checks sequences against). Per producer: its epoch and the last
//! sequence of its newest remembered batch, and the first offset of its transaction open on the
//! partition (`current_txn_start_offset`, -1 when none; RFC 0004 §9, from the image's open
//! transactions, which also bound the LSO); the max timestamp of its last batch or marker
//! (`last_timestamp`) and the coordinator epoch of its last marker (`coordinator_epoch`), both
//! kept at apply as Kafka's `ProducerStateEntry` keeps them, -1 when unknown (no marker yet, or
//! state committed before they were kept).
//!
//! Errors as Kafka: an unknown topic or partition is UNKNOWN_TOPIC_OR_PARTITION; a partition led
//! by another broker is NOT_LEADER_OR_FOLLOWER (Java's Admin sends the request to the leader).

use kafka_protocol::messages::describe_producers_response::{PartitionResponse, ProducerState, TopicResponse};
use kafka_protocol::messages::{DescribeProducersRequest, DescribeProducersResponse, ProducerId};
use kafka_protocol::protocol::StrBytes;
use skiff_controller::image::MetadataImage;

use super::errors;
use crate::broker::Broker;

/// Why a partition's producers cannot be described here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DescribeProducersError {
    #[error("This server does not host this topic-partition.")]
    UnknownTopicOrPartition,
    #[error("This server is not the leader for that topic-partition.")]
    NotLeader,
}

pub fn handle(broker: &Broker, req: DescribeProducersRequest) -> DescribeProducersResponse {
    let local = broker.settings.node_id;
    broker.metadata.read(|m| describe(m, local, &req))
}

fn producers(
    m: &MetadataImage,
    local: i32,
    topic: &str,
    partition: i32,
) -> Result<Vec<ProducerState>, DescribeProducersError> {
    let p = m.partition_by_name(topic, partition).ok_or(DescribeProducersError::UnknownTopicOrPartition)?;
    if p.leader() != local {
        return Err(DescribeProducersError::NotLeader);
    }
    Ok(p.producers()
        .producers
        .iter()
        .map(|(&id, entry)| {
            ProducerState::default()
                .with_producer_id(ProducerId(id))
                .with_producer_epoch(i32::from(entry.epoch))
                .with_last_sequence(entry.batches.back().map_or(-1, |b| b.last_sequence))
                .with_last_timestamp(entry.last_timestamp)
                .with_coordinator_epoch(entry.coordinator_epoch)
                .with_current_txn_start_offset(p.open_transaction(id).map_or(-1, |t| t.first_offset))
        })
        .collect())
}

/// The answer from one metadata image (pure).
pub fn describe(m: &MetadataImage, local: i32, req: &DescribeProducersRequest) -> DescribeProducersResponse {
    let topics = req
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partition_indexes
                .iter()
                .map(|&i| {
                    let r = PartitionResponse::default().with_partition_index(i);
                    match producers(m, local, t.name.0.as_str(), i) {
                        Ok(active) => r.with_error_code(errors::NONE).with_active_producers(active),
                        Err(e) => r
                            .with_error_code(errors::describe_producers(e))
                            .with_error_message(Some(StrBytes::from_string(e.to_string()))),
                    }
                })
                .collect();
            TopicResponse::default().with_name(t.name.clone()).with_partitions(partitions)
        })
        .collect();
    DescribeProducersResponse::default().with_topics(topics)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::ResponseError;
    use kafka_protocol::messages::TopicName;
    use kafka_protocol::messages::describe_producers_request::TopicRequest;
    use skiff_controller::image::ImageFixture;
    use skiff_controller::intent::{BrokerRegistration, CreateTopic};
    use uuid::Uuid;

    #[test]
    fn unknown_and_not_led_partitions() {
        let m = ImageFixture::new("c")
            .register_broker(BrokerRegistration {
                broker_id: 1,
                incarnation: Uuid::from_u128(1),
                host: "127.0.0.1".into(),
                port: 9092,
                rack: None,
                fenced: false,
                listeners: Vec::new(),
            })
            .create_topic(CreateTopic {
                name: "p".into(),
                topic_id: Uuid::from_u128(7),
                partitions: 1,
                configs: Default::default(),
                assignments: vec![],
            })
            .build();
        let req = DescribeProducersRequest::default().with_topics(vec![
            TopicRequest::default()
                .with_name(TopicName(StrBytes::from_static_str("p")))
                .with_partition_indexes(vec![0, 3]),
        ]);
        let r = describe(&m, 1, &req);
        let codes: Vec<i16> = r.topics[0].partitions.iter().map(|p| p.error_code).collect();
        assert_eq!(codes, vec![0, errors::code(ResponseError::UnknownTopicOrPartition)]);
        assert!(r.topics[0].partitions[0].active_producers.is_empty());
        let r = describe(&m, 2, &req);
        assert_eq!(r.topics[0].partitions[0].error_code, errors::code(ResponseError::NotLeaderOrFollower));
    }

    /// A producer with a transaction open on the partition reports its first offset
    /// (`kafka-transactions.sh describe-producers`, `find-hanging`); an idempotent one -1.
    #[test]
    fn open_transactions_report_their_start_offset() {
        use skiff_controller::intent::{ObjectCommit, PartitionAppend, ProducerBatch};
        use skiff_controller::metadata::Command;

        let fixture = || {
            ImageFixture::new("c").register_test_broker(1).create_topic(CreateTopic {
                name: "p".into(),
                topic_id: Uuid::from_u128(7),
                partitions: 1,
                configs: Default::default(),
                assignments: vec![],
            })
        };
        let epoch = fixture().build().partition_by_name("p", 0).expect("partition").leader_epoch();
        let batch = |producer_id, base_offset, transactional| ProducerBatch {
            producer_id,
            producer_epoch: 0,
            first_sequence: 0,
            last_sequence: 1,
            base_offset,
            last_offset: base_offset + 1,
            transactional,
            max_timestamp: 1,
        };
        let mut f = fixture();
        let applied = f.apply(&Command::CommitObject(ObjectCommit {
            key: "wal/1".into(),
            broker_id: 1,
            size_bytes: 100,
            partitions: vec![PartitionAppend {
                topic_id: Uuid::from_u128(7),
                partition: 0,
                leader_epoch: epoch,
                base_offset: 0,
                last_offset: 3,
                position: 0,
                len: 100,
                max_timestamp: 1,
                producer_batches: vec![batch(40, 0, false), batch(41, 2, true)],
                markers: vec![],
            }],
        }));
        assert!(!matches!(applied, skiff_controller::metadata::CommandResult::Rejected(_)), "{applied:?}");
        let m = f.build();
        let req = DescribeProducersRequest::default().with_topics(vec![
            TopicRequest::default()
                .with_name(TopicName(StrBytes::from_static_str("p")))
                .with_partition_indexes(vec![0]),
        ]);
        let r = describe(&m, 1, &req);
        let active: Vec<(i64, i64)> = r.topics[0].partitions[0]
            .active_producers
            .iter()
            .map(|p| (p.producer_id.0, p.current_txn_start_offset))
            .collect();
        assert_eq!(active, vec![(40, -1), (41, 2)]);
    }
}
