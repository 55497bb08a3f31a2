//! DescribeTopicPartitions (KIP-966): topics and their partitions, paginated, as Kafka's
//! `DescribeTopicPartitionsRequestHandler` and `KRaftMetadataCache.describeTopicResponse`
//! answer it. Java's Admin `describeTopics` uses it whenever a broker advertises it.
//!
//! Pagination: the topics (all of them when none are named, internal ones included) are
//! visited in name order from the cursor's topic on, starting at the cursor's partition for
//! that topic and at 0 for the others. At most `min(response_partition_limit, 2000)`
//! partitions are returned; when a topic is cut short, or the limit is reached before the next
//! topic, `next_cursor` names where to continue.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_topic_partitions_response::{
    Cursor, DescribeTopicPartitionsResponsePartition, DescribeTopicPartitionsResponseTopic,
};
use kafka_protocol::messages::{BrokerId, DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use skiff_controller::image::MetadataImage;
use uuid::Uuid;

use super::errors::{self, code};
use super::metadata::{TOPIC_OPERATIONS_ALL, TopicView, all_topic_names, topic_view};
use crate::broker::{Broker, validate_topic_name};

/// Kafka's `max.request.partition.size.limit` default: the most partitions one response holds.
pub const MAX_PARTITIONS_PER_RESPONSE: i32 = 2000;

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

pub fn handle(broker: &Broker, req: DescribeTopicPartitionsRequest) -> DescribeTopicPartitionsResponse {
    let local = broker.settings.node_id;
    broker.metadata.read(|m| describe(m, local, &req))
}

/// The answer from one metadata image (pure, so it is tested with plain values).
pub fn describe(
    m: &MetadataImage,
    local: i32,
    req: &DescribeTopicPartitionsRequest,
) -> DescribeTopicPartitionsResponse {
    let fetch_all = req.topics.is_empty();
    let cursor_topic = req.cursor.as_ref().map(|c| c.topic_name.0.to_string()).unwrap_or_default();
    let mut names: Vec<String> =
        if fetch_all { all_topic_names(m) } else { req.topics.iter().map(|t| t.name.0.to_string()).collect() };
    names.retain(|n| n.as_str() >= cursor_topic.as_str());
    names.sort();
    names.dedup();
    if let Some(c) = &req.cursor {
        // Kafka refuses the whole request (every named topic gets the error) when the cursor's
        // topic is not among the named ones or its partition is negative.
        let missing = !fetch_all && !names.contains(&cursor_topic);
        if missing || c.partition_index < 0 {
            return refuse_all(req, code(ResponseError::InvalidRequest));
        }
    }
    let first_partition = req.cursor.as_ref().map_or(0, |c| c.partition_index);
    let mut remaining = MAX_PARTITIONS_PER_RESPONSE.min(req.response_partition_limit);
    let mut response = DescribeTopicPartitionsResponse::default();
    for name in names {
        if remaining == 0 {
            // The next page starts at this topic (which may not exist: the page says so).
            response.next_cursor = Some(Cursor::default().with_topic_name(topic_name(&name)).with_partition_index(0));
            break;
        }
        if remaining < 0 {
            break;
        }
        let Some(view) = topic_view(m, &name, local) else {
            if !fetch_all {
                let error = match validate_topic_name(&name) {
                    Ok(()) => ResponseError::UnknownTopicOrPartition,
                    Err(_) => ResponseError::InvalidTopicException,
                };
                response.topics.push(
                    DescribeTopicPartitionsResponseTopic::default()
                        .with_error_code(code(error))
                        .with_name(Some(topic_name(&name)))
                        .with_topic_id(Uuid::nil())
                        .with_topic_authorized_operations(TOPIC_OPERATIONS_ALL),
                );
            }
            continue;
        };
        let start = if name == cursor_topic { first_partition } else { 0 };
        let (topic, next) = page(m, local, view, start, remaining);
        remaining -= topic.partitions.len() as i32;
        response.topics.push(topic);
        if let Some(next) = next {
            response.next_cursor =
                Some(Cursor::default().with_topic_name(topic_name(&name)).with_partition_index(next));
            break;
        }
    }
    response
}

/// One topic's partitions `start..start + max` and, if more remain, the index of the next.
fn page(
    m: &MetadataImage,
    local: i32,
    t: TopicView,
    start: i32,
    max: i32,
) -> (DescribeTopicPartitionsResponseTopic, Option<i32>) {
    let count = t.partitions.len() as i32;
    let upper = count.min(start.saturating_add(max));
    let partitions = (start..upper)
        .filter_map(|i| {
            let p = t.partitions.get(usize::try_from(i).ok()?)?;
            // Replicas are the assignment (the leader alone unless a manual assignment named
            // several; object storage holds the data); one is offline when fenced or gone. This
            // broker counts as live even before its image has applied its own registration.
            let offline: Vec<BrokerId> =
                p.replicas.iter().copied().filter(|&b| b >= 0 && b != local && !m.is_live(b)).map(BrokerId).collect();
            Some(
                DescribeTopicPartitionsResponsePartition::default()
                    .with_error_code(errors::NONE)
                    .with_partition_index(i)
                    .with_leader_id(BrokerId(p.leader))
                    .with_leader_epoch(p.leader_epoch)
                    .with_replica_nodes(p.replicas.iter().copied().map(BrokerId).collect())
                    .with_isr_nodes(p.isr.iter().copied().map(BrokerId).collect())
                    .with_eligible_leader_replicas(Some(vec![]))
                    .with_last_known_elr(Some(vec![]))
                    .with_offline_replicas(offline),
            )
        })
        .collect();
    let topic = DescribeTopicPartitionsResponseTopic::default()
        .with_error_code(errors::NONE)
        .with_name(Some(topic_name(&t.name)))
        .with_topic_id(t.topic_id)
        .with_is_internal(t.is_internal)
        .with_partitions(partitions)
        .with_topic_authorized_operations(TOPIC_OPERATIONS_ALL);
    (topic, (upper < count).then_some(upper))
}

/// Kafka's `DescribeTopicPartitionsRequest.getErrorResponse`: every named topic with `error`.
fn refuse_all(req: &DescribeTopicPartitionsRequest, error: i16) -> DescribeTopicPartitionsResponse {
    let topics = req
        .topics
        .iter()
        .map(|t| {
            DescribeTopicPartitionsResponseTopic::default()
                .with_error_code(error)
                .with_name(Some(t.name.clone()))
                .with_topic_id(Uuid::nil())
        })
        .collect();
    DescribeTopicPartitionsResponse::default().with_topics(topics)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use kafka_protocol::messages::describe_topic_partitions_request::{self as request, TopicRequest};
    use skiff_controller::image::ImageFixture;
    use skiff_controller::intent::{BrokerRegistration, CreateTopic};

    use super::*;

    fn image(topics: &[(&str, i32)]) -> MetadataImage {
        // Broker 1 registers, so the topics get a leader and the shards an owner.
        let mut m = ImageFixture::new("c").register_broker(BrokerRegistration {
            broker_id: 1,
            incarnation: Uuid::from_u128(1),
            host: "127.0.0.1".into(),
            port: 9092,
            rack: None,
            fenced: false,
            listeners: Vec::new(),
        });
        for (i, (name, partitions)) in topics.iter().enumerate() {
            m = m.create_topic(CreateTopic {
                name: name.to_string(),
                topic_id: Uuid::from_u128(i as u128 + 1),
                partitions: *partitions,
                configs: BTreeMap::new(),
                assignments: Vec::new(),
            });
        }
        m.build()
    }

    fn req(topics: &[&str], limit: i32, cursor: Option<(&str, i32)>) -> DescribeTopicPartitionsRequest {
        DescribeTopicPartitionsRequest::default()
            .with_topics(topics.iter().map(|t| TopicRequest::default().with_name(topic_name(t))).collect())
            .with_response_partition_limit(limit)
            .with_cursor(
                cursor.map(|(t, p)| request::Cursor::default().with_topic_name(topic_name(t)).with_partition_index(p)),
            )
    }

    /// (name, first partition, partition count) of one topic in a response.
    type TopicSummary = (String, i32, usize);

    /// Each topic's summary, and the next cursor.
    fn summary(r: &DescribeTopicPartitionsResponse) -> (Vec<TopicSummary>, Option<(String, i32)>) {
        let topics = r
            .topics
            .iter()
            .map(|t| {
                let name = t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default();
                (name, t.partitions.first().map_or(-1, |p| p.partition_index), t.partitions.len())
            })
            .collect();
        (topics, r.next_cursor.as_ref().map(|c| (c.topic_name.0.to_string(), c.partition_index)))
    }

    #[test]
    fn all_topics_include_internal_ones_in_name_order() {
        let m = image(&[("b", 2), ("a", 1)]);
        let r = describe(&m, 1, &req(&[], 2000, None));
        let (topics, next) = summary(&r);
        assert_eq!(topics, vec![("__consumer_offsets".into(), 0, 50), ("a".into(), 0, 1), ("b".into(), 0, 2)]);
        assert_eq!(next, None);
        assert!(r.topics[0].is_internal && !r.topics[1].is_internal);
    }

    #[test]
    fn pages_follow_the_cursor() {
        let m = image(&[("a", 3), ("b", 2), ("c", 1)]);
        // Cut inside a topic: the cursor names its next partition.
        let r = describe(&m, 1, &req(&["a", "b", "c"], 2, None));
        assert_eq!(summary(&r), (vec![("a".into(), 0, 2)], Some(("a".into(), 2))));
        // Resume there; the limit is used up exactly at the end of `b`: the cursor names `c`.
        let r = describe(&m, 1, &req(&["a", "b", "c"], 3, Some(("a", 2))));
        assert_eq!(summary(&r), (vec![("a".into(), 2, 1), ("b".into(), 0, 2)], Some(("c".into(), 0))));
        let r = describe(&m, 1, &req(&["a", "b", "c"], 3, Some(("c", 0))));
        assert_eq!(summary(&r), (vec![("c".into(), 0, 1)], None));
        // All topics, from a cursor in the middle.
        let r = describe(&m, 1, &req(&[], 2000, Some(("b", 1))));
        assert_eq!(summary(&r), (vec![("b".into(), 1, 1), ("c".into(), 0, 1)], None));
    }

    #[test]
    fn unknown_and_invalid_names_are_reported_only_when_named() {
        let m = image(&[("a", 1)]);
        let r = describe(&m, 1, &req(&["a", "nope", "bad name"], 2000, None));
        let codes: Vec<(String, i16)> = r
            .topics
            .iter()
            .map(|t| (t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default(), t.error_code))
            .collect();
        assert_eq!(
            codes,
            vec![
                ("a".into(), 0),
                ("bad name".into(), code(ResponseError::InvalidTopicException)),
                ("nope".into(), code(ResponseError::UnknownTopicOrPartition)),
            ]
        );
    }

    #[test]
    fn a_cursor_outside_the_named_topics_is_refused() {
        let m = image(&[("a", 1), ("b", 1)]);
        let r = describe(&m, 1, &req(&["b"], 10, Some(("a", 0))));
        assert_eq!(r.topics.len(), 1);
        assert_eq!(r.topics[0].error_code, code(ResponseError::InvalidRequest));
        let r = describe(&m, 1, &req(&["a"], 10, Some(("a", -1))));
        assert_eq!(r.topics[0].error_code, code(ResponseError::InvalidRequest));
    }

    #[test]
    fn internal_partitions_are_led_by_the_shard_owners() {
        let m = image(&[]);
        let r = describe(&m, 4, &req(&["__consumer_offsets"], 2000, None));
        let t = &r.topics[0];
        assert!(t.is_internal);
        assert_eq!(t.partitions.len(), 50);
        for p in &t.partitions {
            let shard = m.shard_coordinator(p.partition_index as u32).expect("assigned");
            assert_eq!((p.leader_id.0, p.leader_epoch), (shard.broker_id, shard.epoch));
        }
        // Shards unassigned: the asking broker coordinates them, as FindCoordinator says.
        let r = describe(&ImageFixture::new("c").build(), 4, &req(&["__consumer_offsets"], 2000, None));
        assert!(r.topics[0].partitions.iter().all(|p| p.leader_id.0 == 4 && p.leader_epoch == 0));
    }
}
