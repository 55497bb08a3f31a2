//! DescribeLogDirs: the log directories of this broker and the partitions in them, as Kafka's
//! `KafkaApis.handleDescribeLogDirsRequest` / `ReplicaManager.describeLogDirs` answer it
//! (`kafka-log-dirs.sh --describe`, and third-party consoles that show topic sizes with it).
//!
//! Skiff keeps no log on local disk: every partition lives in object storage. Each broker
//! therefore reports ONE log directory, [`LOG_DIR`], holding the partitions it is a replica of
//! (the assignment Metadata reports), each with its size from the metadata index
//! (`PartitionView::size_bytes`: the committed bytes still referenced). A broker is always
//! caught up with the log it serves, so the offset lag is 0, and there are no future replicas
//! (no intra-broker moves). The volume's total and usable bytes are unknown for object storage:
//! -1, the protocol's value for "not available" (KIP-827), which Java's Admin turns into an
//! empty `OptionalLong`. The internal topics (`__consumer_offsets`) are controller state, not
//! logs, and are not listed.
//!
//! Like Kafka, partitions this broker does not hold, or that do not exist, are left out without
//! an error, and a topic with none of its partitions here is left out.

use std::collections::BTreeSet;

use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{DescribeLogDirsRequest, DescribeLogDirsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use skiff_controller::image::MetadataImage;

use super::errors;
use crate::broker::{Broker, internal_topics};

/// The one log directory every Skiff broker reports: its data is in object storage.
pub const LOG_DIR: &str = "object-storage";

pub fn handle(broker: &Broker, req: DescribeLogDirsRequest) -> DescribeLogDirsResponse {
    let local = broker.settings.node_id;
    broker.metadata.read(|m| describe(m, local, &req))
}

/// The answer from one metadata image (pure, so it is tested with plain values).
pub fn describe(m: &MetadataImage, local: i32, req: &DescribeLogDirsRequest) -> DescribeLogDirsResponse {
    // `None`: every partition (the request's null topic list).
    let wanted: Option<BTreeSet<(String, i32)>> = req.topics.as_ref().map(|topics| {
        topics.iter().flat_map(|t| t.partitions.iter().map(move |&p| (t.topic.0.to_string(), p))).collect()
    });
    let mut topics = Vec::new();
    for t in m.topics() {
        if internal_topics::is_internal(t.name()) {
            continue;
        }
        let partitions: Vec<DescribeLogDirsPartition> = t
            .partitions()
            .filter(|p| wanted.as_ref().is_none_or(|w| w.contains(&(t.name().to_string(), p.index()))))
            .filter(|p| m.reported_replicas(*p).0.contains(&local))
            .map(|p| {
                DescribeLogDirsPartition::default()
                    .with_partition_index(p.index())
                    .with_partition_size(i64::try_from(p.size_bytes()).unwrap_or(i64::MAX))
                    .with_offset_lag(0)
                    .with_is_future_key(false)
            })
            .collect();
        if !partitions.is_empty() {
            topics.push(
                DescribeLogDirsTopic::default()
                    .with_name(TopicName(StrBytes::from_string(t.name().to_string())))
                    .with_partitions(partitions),
            );
        }
    }
    let dir = DescribeLogDirsResult::default()
        .with_error_code(errors::NONE)
        .with_log_dir(StrBytes::from_static_str(LOG_DIR))
        .with_topics(topics)
        .with_total_bytes(-1)
        .with_usable_bytes(-1);
    DescribeLogDirsResponse::default().with_error_code(errors::NONE).with_results(vec![dir])
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::describe_log_dirs_request::DescribableLogDirTopic;
    use skiff_controller::image::ImageFixture;
    use skiff_controller::intent::CreateTopic;
    use uuid::Uuid;

    fn image() -> MetadataImage {
        ImageFixture::new("c")
            .register_test_broker(1)
            .register_test_broker(2)
            .create_topic(CreateTopic {
                name: "a".into(),
                topic_id: Uuid::from_u128(7),
                partitions: 2,
                configs: Default::default(),
                assignments: vec![vec![1], vec![2]],
            })
            .build()
    }

    fn partitions(r: &DescribeLogDirsResponse) -> Vec<(String, i32)> {
        r.results[0]
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| (t.name.0.to_string(), p.partition_index)))
            .collect()
    }

    #[test]
    fn one_object_storage_dir_with_the_local_replicas() {
        let r = describe(&image(), 1, &DescribeLogDirsRequest::default().with_topics(None));
        assert_eq!(r.results.len(), 1);
        assert_eq!(r.results[0].log_dir.as_str(), LOG_DIR);
        assert_eq!((r.results[0].total_bytes, r.results[0].usable_bytes), (-1, -1));
        assert_eq!(partitions(&r), vec![("a".to_string(), 0)]);
        let r = describe(&image(), 2, &DescribeLogDirsRequest::default().with_topics(None));
        assert_eq!(partitions(&r), vec![("a".to_string(), 1)]);
    }

    #[test]
    fn named_partitions_only_and_unknown_ones_left_out() {
        let t = |name: &str, ps: Vec<i32>| {
            DescribableLogDirTopic::default()
                .with_topic(TopicName(StrBytes::from_string(name.into())))
                .with_partitions(ps)
        };
        let req = DescribeLogDirsRequest::default().with_topics(Some(vec![t("a", vec![1, 7]), t("nope", vec![0])]));
        assert_eq!(partitions(&describe(&image(), 2, &req)), vec![("a".to_string(), 1)]);
        let none = DescribeLogDirsRequest::default().with_topics(Some(vec![]));
        assert!(describe(&image(), 1, &none).results[0].topics.is_empty());
    }
}
