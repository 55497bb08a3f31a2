//! Topic administration, DeleteRecords, InitProducerId and DescribeCluster.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::{CreatableTopicConfigs, CreatableTopicResult};
use kafka_protocol::messages::delete_records_response::{DeleteRecordsPartitionResult, DeleteRecordsTopicResult};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{
    BrokerId, CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse,
    DeleteRecordsRequest, DeleteRecordsResponse, DeleteTopicsRequest, DeleteTopicsResponse, DescribeClusterRequest,
    DescribeClusterResponse, InitProducerIdRequest, InitProducerIdResponse, ProducerId, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use skiff_controller::metadata::{Command, CommandResult};
use tracing::info;
use uuid::Uuid;

use super::configs::topic_config_entries;
use super::errors::{self, code};
use crate::broker::{Broker, internal_topics};

fn msg(s: impl Into<String>) -> Option<StrBytes> {
    Some(StrBytes::from_string(s.into()))
}

pub async fn create_topics(broker: &Arc<Broker>, req: CreateTopicsRequest, version: i16) -> CreateTopicsResponse {
    let mut results = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let name = t.name.0.to_string();
        let base = CreatableTopicResult::default()
            .with_name(t.name.clone())
            .with_num_partitions(-1)
            .with_replication_factor(-1);
        // Replication is object storage's job: any requested factor is accepted and reported as 1.
        if t.replication_factor == 0 || t.replication_factor < -1 {
            results.push(
                base.with_error_code(code(ResponseError::InvalidReplicationFactor)).with_error_message(msg(
                    "Replication factor must be larger than 0, or -1 to use the default value.",
                )),
            );
            continue;
        }
        if !t.assignments.is_empty() && t.num_partitions != -1 {
            results.push(
                base.with_error_code(code(ResponseError::InvalidRequest)).with_error_message(msg(
                    "Both numPartitions or replicationFactor and replicasAssignments were set.",
                )),
            );
            continue;
        }
        let partitions = if t.assignments.is_empty() { t.num_partitions } else { t.assignments.len() as i32 };
        let mut configs = BTreeMap::new();
        for c in &t.configs {
            if let Some(v) = &c.value {
                configs.insert(c.name.to_string(), v.to_string());
            }
        }
        match broker.create_topic(&name, partitions, configs.clone(), req.validate_only).await {
            Ok(topic_id) => {
                if !req.validate_only {
                    info!(topic = %name, partitions, "created topic");
                }
                let count = if partitions == -1 { broker.settings.num_partitions } else { partitions };
                let entries = if version >= 5 {
                    Some(
                        topic_config_entries(&configs, broker.settings.message_max_bytes, None)
                            .into_iter()
                            .map(|e| {
                                CreatableTopicConfigs::default()
                                    .with_name(StrBytes::from_string(e.name))
                                    .with_value(e.value.map(StrBytes::from_string))
                                    .with_read_only(false)
                                    .with_config_source(e.source)
                                    .with_is_sensitive(false)
                            })
                            .collect(),
                    )
                } else {
                    None
                };
                results.push(
                    base.with_error_code(errors::NONE)
                        .with_topic_id(if req.validate_only { Uuid::nil() } else { topic_id })
                        .with_num_partitions(count)
                        .with_replication_factor(1)
                        .with_configs(entries),
                );
            }
            Err(e) => {
                results.push(base.with_error_code(errors::create_topic(&e)).with_error_message(msg(e.to_string())))
            }
        }
    }
    CreateTopicsResponse::default().with_topics(results)
}

pub async fn delete_topics(broker: &Arc<Broker>, req: DeleteTopicsRequest, version: i16) -> DeleteTopicsResponse {
    // v6 names topics by name or id in `topics`; earlier versions use `topic_names`.
    let targets: Vec<(Option<String>, Uuid)> = if version >= 6 {
        req.topics.iter().map(|t| (t.name.as_ref().map(|n| n.0.to_string()), t.topic_id)).collect()
    } else {
        req.topic_names.iter().map(|n| (Some(n.0.to_string()), Uuid::nil())).collect()
    };
    let mut responses = Vec::with_capacity(targets.len());
    for (name, id) in targets {
        let internal = match &name {
            Some(n) => internal_topics::find(n),
            None => internal_topics::by_id(&id),
        };
        if let Some(t) = internal {
            // Its state is the controller's group metadata, which a deletion cannot drop (Kafka's
            // KRaft controller would delete it, losing every group's offsets). The words are
            // those Kafka's tools used to refuse it with; the code is what Kafka's brokers answer
            // to the operations on internal topics they do refuse (appends, record deletion).
            info!(topic = t.name, "delete refused: internal topic");
            let message =
                format!("Topic {} is a kafka internal topic and is not allowed to be marked for deletion.", t.name);
            responses.push(
                DeletableTopicResult::default()
                    .with_name(Some(TopicName(StrBytes::from_static_str(t.name))))
                    .with_topic_id(if version >= 6 { t.topic_id } else { Uuid::nil() })
                    .with_error_code(code(ResponseError::InvalidTopicException))
                    .with_error_message(if version >= 5 { msg(message) } else { None }),
            );
            continue;
        }
        let resolved = match &name {
            Some(n) => broker.metadata.read(|m| m.topics.get(n).map(|t| (t.name.clone(), t.topic_id))),
            None => broker.metadata.read(|m| m.topic_by_id(&id).map(|t| (t.name.clone(), t.topic_id))),
        };
        let base = DeletableTopicResult::default()
            .with_name(name.clone().map(|n| TopicName(StrBytes::from_string(n))))
            .with_topic_id(id);
        let Some((topic, topic_id)) = resolved else {
            let e = if name.is_some() { ResponseError::UnknownTopicOrPartition } else { ResponseError::UnknownTopicId };
            responses.push(base.with_error_code(code(e)));
            continue;
        };
        let r = match broker.controller.submit(Command::DeleteTopic { name: topic.clone() }).await {
            Ok(CommandResult::Rejected(r)) => {
                base.with_error_code(errors::rejection(&r)).with_error_message(msg(r.to_string()))
            }
            Ok(_) => {
                info!(topic = %topic, "deleted topic");
                base.with_error_code(errors::NONE)
            }
            Err(e) => base.with_error_code(errors::controller(&e)).with_error_message(msg(e.to_string())),
        };
        responses.push(r.with_name(Some(TopicName(StrBytes::from_string(topic)))).with_topic_id(topic_id));
    }
    DeleteTopicsResponse::default().with_responses(responses)
}

pub async fn create_partitions(broker: &Arc<Broker>, req: CreatePartitionsRequest) -> CreatePartitionsResponse {
    let mut results = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let name = t.name.0.to_string();
        let base = CreatePartitionsTopicResult::default().with_name(t.name.clone());
        if internal_topics::is_internal(&name) {
            // Its partitions are the coordinator shards: their count is fixed for the life of
            // the cluster (a group's partition is `hash(group) % count`).
            info!(topic = %name, "create partitions refused: internal topic");
            results.push(base.with_error_code(code(ResponseError::InvalidTopicException)).with_error_message(msg(
                format!("The number of partitions for the internal topic {name} cannot be changed."),
            )));
            continue;
        }
        let current = broker.metadata.read(|m| m.topics.get(&name).map(|t| t.partitions.len() as i32));
        let r = match current {
            None => base
                .with_error_code(code(ResponseError::UnknownTopicOrPartition))
                .with_error_message(msg(format!("The topic '{name}' does not exist."))),
            Some(c) if t.count <= c => base.with_error_code(code(ResponseError::InvalidPartitions)).with_error_message(
                msg(format!("Topic currently has {c} partitions, which is higher than the requested {}.", t.count)),
            ),
            Some(_) if t.assignments.as_ref().is_some_and(|a| !a.is_empty()) => base
                .with_error_code(code(ResponseError::InvalidReplicaAssignment))
                .with_error_message(msg("Skiff places partitions itself; manual assignments are not supported.")),
            Some(_) if req.validate_only => base.with_error_code(errors::NONE),
            Some(_) => match broker
                .controller
                .submit(Command::CreatePartitions { name: name.clone(), total_count: t.count })
                .await
            {
                Ok(CommandResult::Rejected(r)) => {
                    base.with_error_code(errors::rejection(&r)).with_error_message(msg(r.to_string()))
                }
                Ok(_) => {
                    info!(topic = %name, count = t.count, "added partitions");
                    base.with_error_code(errors::NONE)
                }
                Err(e) => base.with_error_code(errors::controller(&e)).with_error_message(msg(e.to_string())),
            },
        };
        results.push(r);
    }
    CreatePartitionsResponse::default().with_results(results)
}

pub async fn delete_records(broker: &Arc<Broker>, req: DeleteRecordsRequest) -> DeleteRecordsResponse {
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let name = t.name.0.to_string();
        let mut parts = Vec::with_capacity(t.partitions.len());
        if internal_topics::is_internal(&name) {
            // Kafka's ReplicaManager: "Cannot delete records of internal topic".
            info!(topic = %name, "delete records refused: internal topic");
            let refused = t.partitions.iter().map(|p| {
                DeleteRecordsPartitionResult::default()
                    .with_partition_index(p.partition_index)
                    .with_low_watermark(-1)
                    .with_error_code(code(ResponseError::InvalidTopicException))
            });
            parts.extend(refused);
            topics.push(DeleteRecordsTopicResult::default().with_name(t.name).with_partitions(parts));
            continue;
        }
        for p in t.partitions {
            let base =
                DeleteRecordsPartitionResult::default().with_partition_index(p.partition_index).with_low_watermark(-1);
            let state = broker.metadata.read(|m| {
                let t = m.topics.get(&name)?;
                let part = usize::try_from(p.partition_index).ok().and_then(|i| t.partitions.get(i))?;
                Some((t.topic_id, part.end_offset))
            });
            let Some((topic_id, end)) = state else {
                parts.push(base.with_error_code(code(ResponseError::UnknownTopicOrPartition)));
                continue;
            };
            // -1 means "up to the high watermark".
            let offset = if p.offset == -1 { end } else { p.offset };
            if offset < 0 || offset > end {
                parts.push(base.with_error_code(code(ResponseError::OffsetOutOfRange)));
                continue;
            }
            let cmd = Command::AdvanceLogStart { topic_id, partition: p.partition_index, offset };
            let r = match broker.controller.submit(cmd).await {
                Ok(CommandResult::Rejected(r)) => base.with_error_code(errors::rejection(&r)),
                Ok(_) => {
                    let low = broker
                        .metadata
                        .read(|m| m.partition(&topic_id, p.partition_index).map(|p| p.log_start_offset))
                        .unwrap_or(offset);
                    base.with_error_code(errors::NONE).with_low_watermark(low)
                }
                Err(e) => base.with_error_code(errors::controller(&e)),
            };
            parts.push(r);
        }
        topics.push(DeleteRecordsTopicResult::default().with_name(t.name).with_partitions(parts));
    }
    DeleteRecordsResponse::default().with_topics(topics)
}

pub async fn init_producer_id(broker: &Arc<Broker>, req: InitProducerIdRequest) -> InitProducerIdResponse {
    let base = InitProducerIdResponse::default().with_producer_id(ProducerId(-1)).with_producer_epoch(-1);
    match &req.transactional_id {
        None => {}
        // Kafka's TransactionCoordinator refuses an empty transactional id the same way.
        Some(id) if id.0.is_empty() => return base.with_error_code(code(ResponseError::InvalidRequest)),
        // Transactions are a later milestone; the client reports "not supported" clearly.
        Some(_) => return base.with_error_code(code(ResponseError::UnsupportedVersion)),
    }
    // A fresh id per idempotent producer (also on KIP-360 re-initialisation): its sequence
    // state starts empty everywhere.
    match broker.controller.submit(Command::AllocateProducerId).await {
        Ok(CommandResult::ProducerId(id)) => {
            base.with_error_code(errors::NONE).with_producer_id(ProducerId(id)).with_producer_epoch(0)
        }
        Ok(other) => {
            tracing::error!(?other, "unexpected producer id allocation result");
            base.with_error_code(code(ResponseError::UnknownServerError))
        }
        Err(e) => base.with_error_code(errors::controller(&e)),
    }
}

pub fn describe_cluster(broker: &Arc<Broker>, req: DescribeClusterRequest) -> DescribeClusterResponse {
    let s = &broker.settings;
    let cluster_id = broker.metadata.read(|m| m.cluster_id.clone());
    let brokers = super::metadata::live_brokers(broker)
        .into_iter()
        .map(|(id, host, port, rack)| {
            DescribeClusterBroker::default()
                .with_broker_id(BrokerId(id))
                .with_host(StrBytes::from_string(host))
                .with_port(port)
                .with_rack(rack.map(StrBytes::from_string))
        })
        .collect();
    DescribeClusterResponse::default()
        .with_error_code(errors::NONE)
        .with_endpoint_type(1)
        .with_cluster_id(StrBytes::from_string(cluster_id))
        .with_controller_id(BrokerId(s.node_id))
        .with_brokers(brokers)
        .with_cluster_authorized_operations(if req.include_cluster_authorized_operations {
            super::metadata::CLUSTER_OPERATIONS_ALL
        } else {
            i32::MIN
        })
}
