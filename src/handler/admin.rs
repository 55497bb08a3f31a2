//! Topic administration, DeleteRecords, InitProducerId and DescribeCluster.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
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
use tracing::info;
use uuid::Uuid;

use super::configs::topic_config_entries;
use super::errors::{self, code};
use super::not_served::Asker;
use crate::broker::{Broker, CreateTopicError, internal_topics};
use crate::quota::mutation::MutationQuota;

fn msg(s: impl Into<String>) -> Option<StrBytes> {
    Some(StrBytes::from_string(s.into()))
}

/// Charges `partitions` to the request's controller mutation quota (KIP-599), as Kafka's
/// controller does once a topic passed every other check: `Some((code, message))` when a strict
/// quota refuses the topic.
fn charge(broker: &Broker, quota: &mut MutationQuota, partitions: i32) -> Option<(i16, Option<StrBytes>)> {
    let now = broker.clock.now_ms();
    broker.quotas.charge_mutation(quota, f64::from(partitions.max(0)), now).err().map(|_| {
        let e = ResponseError::ThrottlingQuotaExceeded;
        (code(e), msg("The throttling quota has been exceeded."))
    })
}

pub async fn create_topics(
    broker: &Arc<Broker>,
    req: CreateTopicsRequest,
    version: i16,
    asker: &Asker,
    quota: &mut MutationQuota,
) -> CreateTopicsResponse {
    let mut results = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let name = t.name.0.to_string();
        let base = CreatableTopicResult::default()
            .with_name(t.name.clone())
            .with_num_partitions(-1)
            .with_replication_factor(-1);
        // An existing name answers TOPIC_ALREADY_EXISTS before anything else of the request is
        // looked at, as Kafka's controller does (see `Broker::create_topic_assigned`).
        if broker.topic_exists(&name) {
            let e = CreateTopicError::Exists(name);
            results.push(base.with_error_code(errors::create_topic(&e)).with_error_message(msg(e.to_string())));
            continue;
        }
        // Manual replica lists: Kafka's checks (ReplicationControlManager.createTopic) here, the
        // broker ids against the registered brokers where the controller applies the creation.
        let assignments = match manual_assignments(&t) {
            Ok(a) => a,
            Err((error, message)) => {
                results.push(base.with_error_code(code(error)).with_error_message(msg(message)));
                continue;
            }
        };
        // Replication is object storage's job: any requested factor is accepted and reported as 1
        // (a manual assignment's factor is its lists' length).
        if assignments.is_empty() && (t.replication_factor == 0 || t.replication_factor < -1) {
            results.push(
                base.with_error_code(code(ResponseError::InvalidReplicationFactor)).with_error_message(msg(
                    "Replication factor must be larger than 0, or -1 to use the default value.",
                )),
            );
            continue;
        }
        let partitions = if assignments.is_empty() { t.num_partitions } else { assignments.len() as i32 };
        let replication_factor = assignments.first().map_or(1, |a| a.len() as i16);
        let mut configs = BTreeMap::new();
        for c in &t.configs {
            if let Some(v) = &c.value {
                configs.insert(c.name.to_string(), v.to_string());
            }
        }
        // Under a mutation quota the topic is checked first and charged before it is created,
        // so a topic refused for another reason is not charged (Kafka's order).
        if quota.applies() {
            let checked =
                broker.create_topic_assigned(&name, partitions, configs.clone(), assignments.clone(), true).await;
            let count = if partitions == -1 { broker.settings.num_partitions } else { partitions };
            if checked.is_ok()
                && let Some((error, message)) = charge(broker, quota, count)
            {
                results.push(base.with_error_code(error).with_error_message(message));
                continue;
            }
        }
        match broker.create_topic_assigned(&name, partitions, configs.clone(), assignments, req.validate_only).await {
            Ok(topic_id) => {
                if !req.validate_only {
                    info!(topic = %name, partitions, "created topic");
                }
                let count = if partitions == -1 { broker.settings.num_partitions } else { partitions };
                let entries = if version >= 5 {
                    Some(
                        broker
                            .metadata
                            .read(|m| topic_config_entries(&configs, &broker.defaults(m), None))
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
                        .with_replication_factor(replication_factor)
                        .with_configs(entries),
                );
            }
            Err(e) => {
                if let CreateTopicError::InvalidConfig(config) = &e {
                    let resource = format!("topic {name}");
                    broker.rejected_configs.report(broker.clock.now_ms(), asker, "CreateTopics", &resource, config);
                }
                results.push(base.with_error_code(errors::create_topic(&e)).with_error_message(msg(e.to_string())))
            }
        }
    }
    CreateTopicsResponse::default()
        .with_topics(results)
        .with_throttle_time_ms(quota.throttle_time_ms(broker.clock.now_ms()))
}

pub async fn delete_topics(
    broker: &Arc<Broker>,
    req: DeleteTopicsRequest,
    version: i16,
    quota: &mut MutationQuota,
) -> DeleteTopicsResponse {
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
            Some(n) => {
                broker.metadata.read(|m| m.topic(n).map(|t| (t.name().to_string(), t.id(), t.partition_count() as i32)))
            }
            None => broker
                .metadata
                .read(|m| m.topic_by_id(&id).map(|t| (t.name().to_string(), t.id(), t.partition_count() as i32))),
        };
        let base = DeletableTopicResult::default()
            .with_name(name.clone().map(|n| TopicName(StrBytes::from_string(n))))
            .with_topic_id(id);
        let Some((topic, topic_id, partitions)) = resolved else {
            let e = if name.is_some() { ResponseError::UnknownTopicOrPartition } else { ResponseError::UnknownTopicId };
            responses.push(base.with_error_code(code(e)));
            continue;
        };
        if let Some((error, message)) = charge(broker, quota, partitions) {
            responses.push(
                base.with_error_code(error)
                    .with_error_message(if version >= 5 { message } else { None })
                    .with_name(Some(TopicName(StrBytes::from_string(topic))))
                    .with_topic_id(topic_id),
            );
            continue;
        }
        let r = match broker.controller.delete_topic(&topic).await {
            Ok(()) => {
                info!(topic = %topic, "deleted topic");
                base.with_error_code(errors::NONE)
            }
            Err(e) => base.with_error_code(errors::controller(&e)).with_error_message(msg(e.to_string())),
        };
        responses.push(r.with_name(Some(TopicName(StrBytes::from_string(topic)))).with_topic_id(topic_id));
    }
    DeleteTopicsResponse::default()
        .with_responses(responses)
        .with_throttle_time_ms(quota.throttle_time_ms(broker.clock.now_ms()))
}

pub async fn create_partitions(
    broker: &Arc<Broker>,
    req: CreatePartitionsRequest,
    quota: &mut MutationQuota,
) -> CreatePartitionsResponse {
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
        let current = broker.metadata.read(|m| m.topic(&name).map(|t| t.partition_count() as i32));
        let assignments: Option<Vec<Vec<i32>>> =
            t.assignments.as_ref().map(|a| a.iter().map(|a| a.broker_ids.iter().map(|b| b.0).collect()).collect());
        // Kafka's checks and messages (ReplicationControlManager.createPartitions).
        let refused = match current {
            None => Some((code(ResponseError::UnknownTopicOrPartition), format!("The topic '{name}' does not exist."))),
            Some(c) if t.count == c => {
                Some((code(ResponseError::InvalidPartitions), format!("Topic already has {c} partition(s).")))
            }
            Some(c) if t.count < c => Some((
                code(ResponseError::InvalidPartitions),
                format!("The topic {name} currently has {c} partition(s); {} would not be an increase.", t.count),
            )),
            Some(_) => match &assignments {
                // The controller checks the lists again when it applies the change.
                Some(a) => broker
                    .metadata
                    .read(|m| m.validate_new_partition_assignments(&name, t.count, a))
                    .err()
                    .map(|r| (errors::rejection(&r), r.to_string())),
                None => None,
            },
        };
        // Charged with the partitions added, once every other check passed (Kafka's order).
        let refused =
            refused.map(|(e, m)| (e, msg(m))).or_else(|| charge(broker, quota, t.count - current.unwrap_or(0)));
        let r = match refused {
            Some((error, message)) => base.with_error_code(error).with_error_message(message),
            None if req.validate_only => base.with_error_code(errors::NONE),
            None => match broker.controller.create_partitions(&name, t.count, assignments.unwrap_or_default()).await {
                Ok(()) => {
                    info!(topic = %name, count = t.count, "added partitions");
                    base.with_error_code(errors::NONE)
                }
                Err(e) => base.with_error_code(errors::controller(&e)).with_error_message(msg(e.to_string())),
            },
        };
        results.push(r);
    }
    CreatePartitionsResponse::default()
        .with_results(results)
        .with_throttle_time_ms(quota.throttle_time_ms(broker.clock.now_ms()))
}

/// The `assignments` of a CreateTopics topic as replica lists in partition order, or Kafka's
/// error for them: both a manual assignment and a partition count or replication factor,
/// a partition listed twice, or partitions that are not 0, 1, 2, ...
fn manual_assignments(t: &CreatableTopic) -> Result<Vec<Vec<i32>>, (ResponseError, String)> {
    if t.assignments.is_empty() {
        return Ok(Vec::new());
    }
    if t.replication_factor != -1 {
        return Err((
            ResponseError::InvalidRequest,
            "A manual partition assignment was specified, but replication factor was not set to -1.".into(),
        ));
    }
    if t.num_partitions != -1 {
        return Err((
            ResponseError::InvalidRequest,
            "A manual partition assignment was specified, but numPartitions was not set to -1.".into(),
        ));
    }
    let mut by_partition = BTreeMap::new();
    for a in t.assignments.iter() {
        let replicas: Vec<i32> = a.broker_ids.iter().map(|b| b.0).collect();
        if by_partition.insert(a.partition_index, replicas).is_some() {
            return Err((
                ResponseError::InvalidReplicaAssignment,
                format!("Found multiple manual partition assignments for partition {}", a.partition_index),
            ));
        }
    }
    if by_partition.keys().enumerate().any(|(i, p)| i64::from(*p) != i as i64) {
        return Err((
            ResponseError::InvalidReplicaAssignment,
            "partitions should be a consecutive 0-based integer sequence".into(),
        ));
    }
    Ok(by_partition.into_values().collect())
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
                let t = m.topic(&name)?;
                let part = t.partition(p.partition_index)?;
                let deletes = broker.defaults(m).effective(t.config()).cleanup_policy.deletes();
                Some((t.id(), part.high_watermark(), deletes))
            });
            let Some((topic_id, end, deletes)) = state else {
                parts.push(base.with_error_code(code(ResponseError::UnknownTopicOrPartition)));
                continue;
            };
            if !deletes {
                // Kafka's UnifiedLog.deleteRecords: a log whose cleanup.policy lacks `delete` keeps
                // every key's latest record; "Records of partition t-p can not be deleted due to
                // the configured policy" (POLICY_VIOLATION).
                info!(topic = %name, partition = p.partition_index, "delete records refused: cleanup.policy is compact");
                parts.push(base.with_error_code(code(ResponseError::PolicyViolation)));
                continue;
            }
            // -1 means "up to the high watermark".
            let offset = if p.offset == -1 { end } else { p.offset };
            if offset < 0 || offset > end {
                parts.push(base.with_error_code(code(ResponseError::OffsetOutOfRange)));
                continue;
            }
            let r = match broker.controller.advance_log_start(topic_id, p.partition_index, offset).await {
                Ok(()) => {
                    let low = broker
                        .metadata
                        .read(|m| m.partition(&topic_id, p.partition_index).map(|p| p.log_start_offset()))
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

pub async fn init_producer_id(
    broker: &Arc<Broker>,
    req: InitProducerIdRequest,
    version: i16,
) -> InitProducerIdResponse {
    let base = InitProducerIdResponse::default().with_producer_id(ProducerId(-1)).with_producer_epoch(-1);
    match &req.transactional_id {
        None => {}
        // Kafka's TransactionCoordinator refuses an empty transactional id the same way.
        Some(id) if id.0.is_empty() => {
            info!("refused InitProducerId with an empty transactional id (INVALID_REQUEST)");
            return base.with_error_code(code(ResponseError::InvalidRequest));
        }
        // The transaction coordinator (handler/txn.rs).
        Some(_) => return super::txn::init_producer_id(broker, &req, version).await,
    }
    // A fresh id per idempotent producer (also on KIP-360 re-initialisation): its sequence
    // state starts empty everywhere.
    match broker.controller.allocate_producer_id().await {
        Ok(id) => base.with_error_code(errors::NONE).with_producer_id(ProducerId(id)).with_producer_epoch(0),
        Err(e) => {
            if e.kind() == skiff_controller::ErrorKind::Internal {
                tracing::error!(error = %e, "producer id allocation failed");
            }
            base.with_error_code(errors::controller(&e))
        }
    }
}

pub fn describe_cluster(
    broker: &Arc<Broker>,
    req: DescribeClusterRequest,
    here: &crate::security::ListenerContext,
) -> DescribeClusterResponse {
    let s = &broker.settings;
    let cluster_id = broker.metadata.read(|m| m.cluster_id().to_string());
    let brokers = super::metadata::live_brokers_on(broker, here)
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
