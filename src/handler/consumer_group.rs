//! KIP-848 consumer-group APIs: ConsumerGroupHeartbeat (v0-1) and ConsumerGroupDescribe
//! (v0-1). The protocol lives in `crate::group::consumer`; here requests are decoded into its
//! types and its answers encoded. Assignments travel as topic ids; ConsumerGroupDescribe adds
//! the names from the metadata.
//!
//! ConsumerGroupHeartbeat is [`Handled::Deferred`]: its answer waits until the group change it
//! reflects is stored through the controller.

use std::net::SocketAddr;
use std::sync::Arc;

use futures::FutureExt;
use kafka_protocol::messages::consumer_group_describe_response::{
    Assignment as DescribedAssignment, DescribedGroup, Member, TopicPartitions as DescribedTopicPartitions,
};
use kafka_protocol::messages::consumer_group_heartbeat_response::{Assignment, TopicPartitions};
use kafka_protocol::messages::{
    ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse, ConsumerGroupHeartbeatRequest,
    ConsumerGroupHeartbeatResponse, ResponseKind, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::Handled;
use super::errors;
use super::groups::{GROUP_OPERATIONS_ALL, is_coordinator};
use crate::broker::Broker;
use crate::group::GroupError;
use crate::group::assignor::Assignment as PartitionAssignment;
use crate::group::consumer::{self, HeartbeatRequest, HeartbeatResponse, TopicVisibility};

/// ConsumerGroupDescribe's member type of a member using the consumer protocol.
const MEMBER_TYPE_CONSUMER: i8 = 1;

fn s(v: impl Into<String>) -> StrBytes {
    StrBytes::from_string(v.into())
}

fn heartbeat_response(r: HeartbeatResponse) -> ConsumerGroupHeartbeatResponse {
    let (code, message) = match r.error {
        Some((e, m)) => (errors::group(e), Some(s(m))),
        None => (errors::NONE, None),
    };
    let assignment = r.assignment.map(|a| {
        Assignment::default().with_topic_partitions(
            a.into_iter()
                .map(|(t, ps)| TopicPartitions::default().with_topic_id(t).with_partitions(ps.into_iter().collect()))
                .collect(),
        )
    });
    ConsumerGroupHeartbeatResponse::default()
        .with_error_code(code)
        .with_error_message(message)
        .with_member_id(r.member_id.map(s))
        .with_member_epoch(r.member_epoch)
        .with_heartbeat_interval_ms(r.heartbeat_interval_ms)
        .with_assignment(assignment)
}

pub async fn heartbeat(
    broker: &Arc<Broker>,
    req: ConsumerGroupHeartbeatRequest,
    version: i16,
    peer: SocketAddr,
    client_id: String,
    visible: TopicVisibility,
) -> Handled {
    let group_id = req.group_id.0.to_string();
    let hb = HeartbeatRequest {
        member_id: req.member_id.to_string(),
        member_epoch: req.member_epoch,
        instance_id: req.instance_id.as_ref().map(|i| i.to_string()),
        rack_id: req.rack_id.as_ref().map(|r| r.to_string()),
        rebalance_timeout_ms: req.rebalance_timeout_ms,
        subscribed_topic_names: req.subscribed_topic_names.map(|ts| ts.into_iter().map(|t| t.0.to_string()).collect()),
        subscribed_topic_regex: req.subscribed_topic_regex.map(|r| r.to_string()),
        server_assignor: req.server_assignor.map(|a| a.to_string()),
        owned: req.topic_partitions.map(|tps| tps.into_iter().map(|tp| (tp.topic_id, tp.partitions)).collect()),
        client_id,
        client_host: format!("/{}", peer.ip()),
        visible,
    };
    let ready = |r: HeartbeatResponse| Handled::Ready(ResponseKind::ConsumerGroupHeartbeat(heartbeat_response(r)));
    if let Err((e, m)) = consumer::validate(&group_id, &hb, version) {
        return ready(HeartbeatResponse::error(e, m));
    }
    if !is_coordinator(broker, &group_id) {
        return ready(HeartbeatResponse::error(GroupError::NotCoordinator, "This broker is not the coordinator."));
    }
    let answer = broker.groups.consumer_heartbeat(group_id, hb).await;
    Handled::Deferred(
        async move {
            let r = answer.await.unwrap_or_else(|_| {
                HeartbeatResponse::error(GroupError::NotCoordinator, "The coordinator is shutting down.")
            });
            ResponseKind::ConsumerGroupHeartbeat(heartbeat_response(r))
        }
        .boxed(),
    )
}

pub async fn describe(
    broker: &Arc<Broker>,
    req: ConsumerGroupDescribeRequest,
    version: i16,
) -> ConsumerGroupDescribeResponse {
    let operations = if req.include_authorized_operations { GROUP_OPERATIONS_ALL } else { i32::MIN };
    let mut groups = Vec::with_capacity(req.group_ids.len());
    for g in req.group_ids {
        let group_id = g.0.to_string();
        let d = DescribedGroup::default().with_group_id(g).with_authorized_operations(operations);
        let result = if is_coordinator(broker, &group_id) {
            broker.groups.consumer_describe(group_id).await
        } else {
            Err((GroupError::NotCoordinator, "This broker is not the coordinator.".into()))
        };
        match result {
            Err((e, m)) => groups.push(d.with_error_code(errors::group(e)).with_error_message(Some(s(m)))),
            Ok(desc) => {
                let names = |a: &PartitionAssignment| -> DescribedAssignment {
                    let tps = broker.metadata.read(|m| {
                        a.iter()
                            .map(|(t, ps)| {
                                let name = m.topic_by_id(t).map(|t| t.name().to_string()).unwrap_or_default();
                                DescribedTopicPartitions::default()
                                    .with_topic_id(*t)
                                    .with_topic_name(TopicName(s(name)))
                                    .with_partitions(ps.iter().copied().collect())
                            })
                            .collect()
                    });
                    DescribedAssignment::default().with_topic_partitions(tps)
                };
                let members = desc
                    .members
                    .iter()
                    .map(|m| {
                        Member::default()
                            .with_member_id(s(m.member_id.clone()))
                            .with_instance_id(m.instance_id.clone().map(s))
                            .with_rack_id(m.rack_id.clone().map(s))
                            .with_member_epoch(m.member_epoch)
                            .with_client_id(s(m.client_id.clone()))
                            .with_client_host(s(m.client_host.clone()))
                            .with_subscribed_topic_names(
                                m.subscribed_topic_names.iter().map(|t| TopicName(s(t.clone()))).collect(),
                            )
                            .with_subscribed_topic_regex(m.subscribed_topic_regex.clone().map(s))
                            .with_assignment(names(&m.assignment))
                            .with_target_assignment(names(&m.target))
                            .with_member_type(if version >= 1 { MEMBER_TYPE_CONSUMER } else { -1 })
                    })
                    .collect();
                groups.push(
                    d.with_group_state(s(desc.state.name()))
                        .with_group_epoch(desc.group_epoch)
                        .with_assignment_epoch(desc.assignment_epoch)
                        .with_assignor_name(s(desc.assignor))
                        .with_members(members),
                );
            }
        }
    }
    ConsumerGroupDescribeResponse::default().with_groups(groups)
}
