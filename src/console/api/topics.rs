//! Topics: list, create, describe, delete, configs, add partitions.
//!
//! Every change is the Kafka request a client would send (CreateTopics, DeleteTopics,
//! IncrementalAlterConfigs, AlterConfigs, CreatePartitions), answered by the handler's own
//! function; a topic's configs are DescribeConfigs' answer. The lists read the image, with the
//! effective configs resolved as DescribeConfigs resolves them.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::{
    AlterConfigsRequest, CreatePartitionsRequest, CreateTopicsRequest, DeleteTopicsRequest, DescribeConfigsRequest,
    IncrementalAlterConfigsRequest, TopicName, alter_configs_request, incremental_alter_configs_request,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use kafka_protocol::messages::ApiKey;
use skiff_controller::acls::{AclOperation as Op, ResourceType as Rt};

use super::access::{Access, Who};
use super::{Api, ApiError, ApiPath, ApiResult, MAX_LISTED, asker, body_json, check, json, ok, s};
use crate::broker::Broker;
use crate::handler::{admin, configs};
use crate::quota::mutation::MutationQuota;

/// Kafka's `ConfigResource.Type.TOPIC`.
const TOPIC_RESOURCE: i8 = 2;
/// IncrementalAlterConfigs operations.
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
/// The request versions the API speaks to the handlers (the newest each serves).
const CREATE_TOPICS_VERSION: i16 = 7;
const DELETE_TOPICS_VERSION: i16 = 6;
const DESCRIBE_CONFIGS_VERSION: i16 = 4;
/// How long an admin request may wait for the controller (as a client's default timeout).
const ADMIN_TIMEOUT_MS: i32 = 30_000;

#[derive(Serialize)]
struct TopicList {
    topics: Vec<TopicSummary>,
    truncated: bool,
}

#[derive(Serialize)]
struct TopicSummary {
    name: String,
    id: Uuid,
    internal: bool,
    partitions: usize,
    replication_factor: i16,
    size_bytes: u64,
    /// Records between the log starts and the high watermarks.
    messages: i64,
    /// Records appended per second (recent).
    message_rate: f64,
    retention_ms: Option<i64>,
    cleanup_policy: Option<String>,
}

/// A topic's summary from image `m` (rate filled in by the caller).
fn summary(
    broker: &Broker,
    m: &skiff_controller::image::MetadataImage,
    t: skiff_controller::image::TopicView<'_>,
) -> TopicSummary {
    let keys = ["retention.ms".to_string(), "cleanup.policy".to_string()];
    let entries = configs::topic_config_entries(t.configs(), &broker.defaults(m), Some(&keys));
    let value = |k: &str| entries.iter().find(|e| e.name == k).and_then(|e| e.value.clone());
    TopicSummary {
        name: t.name().to_string(),
        id: t.id(),
        internal: false,
        partitions: t.partition_count(),
        replication_factor: 1,
        size_bytes: t.partitions().map(|p| p.size_bytes()).sum(),
        messages: t.partitions().map(|p| p.high_watermark() - p.log_start_offset()).sum(),
        message_rate: 0.0,
        retention_ms: value("retention.ms").and_then(|v| v.parse().ok()),
        cleanup_policy: value("cleanup.policy"),
    }
}

pub(super) async fn list(State(api): State<Api>, who: Who) -> ApiResult<Response> {
    let broker = api.broker()?;
    let access = who.on(broker, ApiKey::Metadata);
    let rates = api.observe(broker);
    // As Metadata of all topics: what the caller may not describe is left out, silently.
    let names: Vec<String> = broker.metadata.read(|m| m.topics().map(|t| t.name().to_string()).collect());
    let visible: std::collections::HashSet<String> =
        names.into_iter().filter(|n| access.sees(Op::Describe, Rt::Topic, n)).collect();
    let mut topics: Vec<TopicSummary> = broker
        .metadata
        .read(|m| m.topics().filter(|t| visible.contains(t.name())).map(|t| summary(broker, m, t)).collect());
    topics.sort_by(|a, b| a.name.cmp(&b.name));
    let truncated = topics.len() > MAX_LISTED;
    topics.truncate(MAX_LISTED);
    for t in &mut topics {
        t.message_rate = rates.topics.get(&t.id).map_or(0.0, |r| r.records);
    }
    Ok(ok(&TopicList { topics, truncated }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    name: String,
    #[serde(default = "minus_one")]
    partitions: i32,
    #[serde(default = "minus_one_i16")]
    replication_factor: i16,
    #[serde(default)]
    configs: BTreeMap<String, String>,
    #[serde(default)]
    validate_only: bool,
}

fn minus_one() -> i32 {
    -1
}

fn minus_one_i16() -> i16 {
    -1
}

pub(super) async fn create(State(api): State<Api>, who: Who, body: Body) -> ApiResult<Response> {
    let broker = api.broker()?;
    let b: CreateBody = body_json(body).await?;
    // Kafka's CreateTopics: CREATE on the cluster (not audited when missing), else on the topic.
    let access = who.on(broker, ApiKey::CreateTopics);
    if !access.sees_cluster(Op::Create) {
        access.require(Op::Create, Rt::Topic, &b.name)?;
    }
    let topic = CreatableTopic::default()
        .with_name(TopicName(s(b.name.clone())))
        .with_num_partitions(b.partitions)
        .with_replication_factor(b.replication_factor)
        .with_configs(
            b.configs
                .iter()
                .map(|(k, v)| CreatableTopicConfig::default().with_name(s(k.clone())).with_value(Some(s(v.clone()))))
                .collect(),
        );
    let req = CreateTopicsRequest::default()
        .with_topics(vec![topic])
        .with_timeout_ms(ADMIN_TIMEOUT_MS)
        .with_validate_only(b.validate_only);
    let resp =
        admin::create_topics(broker, req, CREATE_TOPICS_VERSION, &asker(), &mut MutationQuota::unbounded()).await;
    let r = resp.topics.first().ok_or_else(|| ApiError::kafka(-1, "CreateTopics answered no topic."))?;
    check(r.error_code, r.error_message.as_ref())?;
    if b.validate_only {
        let body = serde_json::json!({ "name": b.name, "partitions": r.num_partitions, "validate_only": true });
        return Ok(ok(&body));
    }
    // CREATE does not imply DESCRIBE: without it the answer says no more than CreateTopics'.
    if !access.sees(Op::Describe, Rt::Topic, &b.name) {
        let body = serde_json::json!({ "name": b.name, "partitions": r.num_partitions });
        return Ok(json(StatusCode::CREATED, &body));
    }
    Ok(json(StatusCode::CREATED, &detail(broker, &api, &b.name, &access)?))
}

#[derive(Serialize)]
struct TopicDetail {
    name: String,
    id: Uuid,
    internal: bool,
    replication_factor: i16,
    size_bytes: u64,
    messages: i64,
    message_rate: f64,
    retention_ms: Option<i64>,
    cleanup_policy: Option<String>,
    partitions: Vec<PartitionRow>,
    configs: Vec<ConfigRow>,
}

#[derive(Serialize)]
struct PartitionRow {
    partition: i32,
    leader: i32,
    leader_epoch: i32,
    replicas: Vec<i32>,
    isr: Vec<i32>,
    log_start_offset: i64,
    high_watermark: i64,
    log_end_offset: i64,
    size_bytes: u64,
}

#[derive(Serialize)]
struct ConfigRow {
    name: String,
    value: Option<String>,
    source: &'static str,
    read_only: bool,
    sensitive: bool,
    #[serde(rename = "type")]
    config_type: &'static str,
}

/// Kafka's `ConfigSource` names (DescribeConfigs' `config_source`).
fn source_name(source: i8) -> &'static str {
    match source {
        1 => "DYNAMIC_TOPIC_CONFIG",
        2 => "DYNAMIC_BROKER_CONFIG",
        3 => "DYNAMIC_DEFAULT_BROKER_CONFIG",
        4 => "STATIC_BROKER_CONFIG",
        5 => "DEFAULT_CONFIG",
        6 => "DYNAMIC_BROKER_LOGGER_CONFIG",
        7 => "CLIENT_METRICS_CONFIG",
        8 => "GROUP_CONFIG",
        _ => "UNKNOWN",
    }
}

/// Kafka's `ConfigType` names (DescribeConfigs' `config_type`).
fn type_name(t: i8) -> &'static str {
    match t {
        1 => "BOOLEAN",
        2 => "STRING",
        3 => "INT",
        4 => "SHORT",
        5 => "LONG",
        6 => "DOUBLE",
        7 => "LIST",
        8 => "CLASS",
        9 => "PASSWORD",
        _ => "UNKNOWN",
    }
}

/// Topic `name` with its partitions and its configs (DescribeConfigs' answer).
/// Its configs only when `access` allows DESCRIBE_CONFIGS (else none, as DescribeConfigs
/// would refuse them).
fn detail(broker: &std::sync::Arc<Broker>, api: &Api, name: &str, access: &Access<'_>) -> ApiResult<TopicDetail> {
    let found = broker.metadata.read(|m| {
        let t = m.topic(name)?;
        let partitions = t
            .partitions()
            .map(|p| {
                let (replicas, isr) = m.reported_replicas(p);
                PartitionRow {
                    partition: p.index(),
                    leader: p.leader(),
                    leader_epoch: p.leader_epoch(),
                    replicas,
                    isr,
                    log_start_offset: p.log_start_offset(),
                    high_watermark: p.high_watermark(),
                    log_end_offset: p.high_watermark(),
                    size_bytes: p.size_bytes(),
                }
            })
            .collect::<Vec<_>>();
        Some((summary(broker, m, t), partitions))
    });
    let Some((t, partitions)) = found else {
        return Err(unknown_topic(name));
    };
    Ok(TopicDetail {
        message_rate: api.observe(broker).topics.get(&t.id).map_or(0.0, |r| r.records),
        configs: if access.sees(Op::DescribeConfigs, Rt::Topic, name) {
            describe_configs(broker, name)?
        } else {
            Vec::new()
        },
        name: t.name,
        id: t.id,
        internal: t.internal,
        replication_factor: t.replication_factor,
        size_bytes: t.size_bytes,
        messages: t.messages,
        retention_ms: t.retention_ms,
        cleanup_policy: t.cleanup_policy,
        partitions,
    })
}

fn unknown_topic(name: &str) -> ApiError {
    ApiError::of(kafka_protocol::ResponseError::UnknownTopicOrPartition, format!("Topic '{name}' does not exist."))
}

/// DescribeConfigs of topic `name`.
fn describe_configs(broker: &std::sync::Arc<Broker>, name: &str) -> ApiResult<Vec<ConfigRow>> {
    let req = DescribeConfigsRequest::default().with_resources(vec![
        // Null keys: every config (the default is an empty list, which asks for none).
        DescribeConfigsResource::default()
            .with_resource_type(TOPIC_RESOURCE)
            .with_resource_name(s(name))
            .with_configuration_keys(None),
    ]);
    let resp = configs::describe_configs(broker, req, DESCRIBE_CONFIGS_VERSION);
    let r = resp.results.first().ok_or_else(|| ApiError::kafka(-1, "DescribeConfigs answered no resource."))?;
    check(r.error_code, r.error_message.as_ref())?;
    Ok(r.configs
        .iter()
        .map(|c| ConfigRow {
            name: c.name.to_string(),
            value: c.value.as_ref().map(|v| v.to_string()),
            source: source_name(c.config_source),
            read_only: c.read_only,
            sensitive: c.is_sensitive,
            config_type: type_name(c.config_type),
        })
        .collect())
}

pub(super) async fn describe(State(api): State<Api>, who: Who, ApiPath(topic): ApiPath<String>) -> ApiResult<Response> {
    let broker = api.broker()?;
    let access = who.on(broker, ApiKey::Metadata);
    access.require(Op::Describe, Rt::Topic, &topic)?;
    Ok(ok(&detail(broker, &api, &topic, &access)?))
}

pub(super) async fn delete(State(api): State<Api>, who: Who, ApiPath(topic): ApiPath<String>) -> ApiResult<Response> {
    let broker = api.broker()?;
    who.on(broker, ApiKey::DeleteTopics).require(Op::Delete, Rt::Topic, &topic)?;
    let req = DeleteTopicsRequest::default()
        .with_topics(vec![DeleteTopicState::default().with_name(Some(TopicName(s(topic.clone()))))])
        .with_timeout_ms(ADMIN_TIMEOUT_MS);
    let resp = admin::delete_topics(broker, req, DELETE_TOPICS_VERSION, &mut MutationQuota::unbounded()).await;
    let r = resp.responses.first().ok_or_else(|| ApiError::kafka(-1, "DeleteTopics answered no topic."))?;
    check(r.error_code, r.error_message.as_ref())?;
    Ok(ok(&serde_json::json!({ "name": topic, "deleted": true })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IncrementalBody {
    #[serde(default)]
    set: BTreeMap<String, String>,
    #[serde(default)]
    delete: Vec<String>,
    #[serde(default)]
    validate_only: bool,
}

/// `PATCH /topics/{t}/configs`: IncrementalAlterConfigs (SET and DELETE).
pub(super) async fn alter_incremental(
    State(api): State<Api>,
    who: Who,
    ApiPath(topic): ApiPath<String>,
    body: Body,
) -> ApiResult<Response> {
    use incremental_alter_configs_request::{AlterConfigsResource, AlterableConfig};
    let broker = api.broker()?;
    who.on(broker, ApiKey::IncrementalAlterConfigs).require(Op::AlterConfigs, Rt::Topic, &topic)?;
    let b: IncrementalBody = body_json(body).await?;
    let mut ops: Vec<AlterableConfig> = b
        .set
        .iter()
        .map(|(k, v)| {
            AlterableConfig::default()
                .with_name(s(k.clone()))
                .with_config_operation(OP_SET)
                .with_value(Some(s(v.clone())))
        })
        .collect();
    ops.extend(
        b.delete.iter().map(|k| AlterableConfig::default().with_name(s(k.clone())).with_config_operation(OP_DELETE)),
    );
    let req = IncrementalAlterConfigsRequest::default()
        .with_resources(vec![
            AlterConfigsResource::default()
                .with_resource_type(TOPIC_RESOURCE)
                .with_resource_name(s(topic.clone()))
                .with_configs(ops),
        ])
        .with_validate_only(b.validate_only);
    let resp = configs::incremental_alter_configs(broker, req, &asker()).await;
    let r = resp.responses.first().ok_or_else(|| ApiError::kafka(-1, "IncrementalAlterConfigs answered nothing."))?;
    check(r.error_code, r.error_message.as_ref())?;
    Ok(ok(&serde_json::json!({ "configs": describe_configs(broker, &topic)? })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AlterBody {
    configs: BTreeMap<String, String>,
    #[serde(default)]
    validate_only: bool,
}

/// `PUT /topics/{t}/configs`: AlterConfigs (the whole set of topic overrides).
pub(super) async fn alter(
    State(api): State<Api>,
    who: Who,
    ApiPath(topic): ApiPath<String>,
    body: Body,
) -> ApiResult<Response> {
    use alter_configs_request::{AlterConfigsResource, AlterableConfig};
    let broker = api.broker()?;
    who.on(broker, ApiKey::AlterConfigs).require(Op::AlterConfigs, Rt::Topic, &topic)?;
    let b: AlterBody = body_json(body).await?;
    let req = AlterConfigsRequest::default()
        .with_resources(vec![
            AlterConfigsResource::default()
                .with_resource_type(TOPIC_RESOURCE)
                .with_resource_name(s(topic.clone()))
                .with_configs(
                    b.configs
                        .iter()
                        .map(|(k, v)| AlterableConfig::default().with_name(s(k.clone())).with_value(Some(s(v.clone()))))
                        .collect(),
                ),
        ])
        .with_validate_only(b.validate_only);
    let resp = configs::alter_configs(broker, req, &asker()).await;
    let r = resp.responses.first().ok_or_else(|| ApiError::kafka(-1, "AlterConfigs answered nothing."))?;
    check(r.error_code, r.error_message.as_ref())?;
    Ok(ok(&serde_json::json!({ "configs": describe_configs(broker, &topic)? })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PartitionsBody {
    count: i32,
    #[serde(default)]
    validate_only: bool,
}

/// `POST /topics/{t}/partitions`: CreatePartitions to `count` in all.
pub(super) async fn add_partitions(
    State(api): State<Api>,
    who: Who,
    ApiPath(topic): ApiPath<String>,
    body: Body,
) -> ApiResult<Response> {
    let broker = api.broker()?;
    let access = who.on(broker, ApiKey::CreatePartitions);
    access.require(Op::Alter, Rt::Topic, &topic)?;
    let b: PartitionsBody = body_json(body).await?;
    let req = CreatePartitionsRequest::default()
        .with_topics(vec![
            CreatePartitionsTopic::default()
                .with_name(TopicName(s(topic.clone())))
                .with_count(b.count)
                .with_assignments(None),
        ])
        .with_timeout_ms(ADMIN_TIMEOUT_MS)
        .with_validate_only(b.validate_only);
    let resp = admin::create_partitions(broker, req, &mut MutationQuota::unbounded()).await;
    let r = resp.results.first().ok_or_else(|| ApiError::kafka(-1, "CreatePartitions answered no topic."))?;
    check(r.error_code, r.error_message.as_ref())?;
    Ok(ok(&detail(broker, &api, &topic, &access)?))
}
