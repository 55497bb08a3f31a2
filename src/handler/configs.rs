//! DescribeConfigs / AlterConfigs / IncrementalAlterConfigs for topics (and a read-only view of
//! the broker's own settings).

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, DescribeConfigsRequest, DescribeConfigsResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse, alter_configs_response,
    incremental_alter_configs_response,
};
use kafka_protocol::protocol::StrBytes;
use skiff_controller::metadata::{Command, CommandResult};
use tracing::info;

use super::errors::{self, code};
use crate::broker::{Broker, internal_topics, topic_config};

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;

/// Kafka's ConfigSource values.
const SOURCE_DYNAMIC_TOPIC: i8 = 1;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;

/// One config as described.
pub struct ConfigEntry {
    pub name: String,
    pub value: Option<String>,
    pub source: i8,
    pub config_type: i8,
}

/// Every topic config with its effective value and source, optionally filtered by key.
pub fn topic_config_entries(
    configs: &BTreeMap<String, String>,
    message_max_bytes: i32,
    keys: Option<&[String]>,
) -> Vec<ConfigEntry> {
    topic_config::TOPIC_CONFIGS
        .iter()
        .filter(|k| keys.is_none_or(|ks| ks.iter().any(|n| n == k.name)))
        .map(|k| {
            let (value, set) = topic_config::effective(configs, k, message_max_bytes);
            let source = if set {
                SOURCE_DYNAMIC_TOPIC
            } else if k.name == "max.message.bytes" && message_max_bytes != 1_048_588 {
                SOURCE_STATIC_BROKER
            } else {
                SOURCE_DEFAULT
            };
            ConfigEntry { name: k.name.to_string(), value, source, config_type: topic_config::config_type(k) }
        })
        .collect()
}

fn broker_entries(b: &Broker) -> Vec<ConfigEntry> {
    let s = &b.settings;
    let e = |name: &str, value: String, config_type: i8| ConfigEntry {
        name: name.into(),
        value: Some(value),
        source: SOURCE_STATIC_BROKER,
        config_type,
    };
    vec![
        e("auto.create.topics.enable", s.auto_create_topics.to_string(), 1),
        e("broker.id", s.node_id.to_string(), 3),
        e("message.max.bytes", s.message_max_bytes.to_string(), 3),
        e("num.partitions", s.num_partitions.to_string(), 3),
        e("socket.request.max.bytes", s.socket_request_max_bytes.to_string(), 3),
        e("default.replication.factor", "1".into(), 4),
        e("skiff.flush.bytes", s.flush_bytes.to_string(), 3),
        e("skiff.flush.interval.ms", s.flush_interval_ms.to_string(), 5),
    ]
}

pub fn describe_configs(broker: &Arc<Broker>, req: DescribeConfigsRequest, version: i16) -> DescribeConfigsResponse {
    let results = req
        .resources
        .iter()
        .map(|r| {
            let name = r.resource_name.to_string();
            let keys: Option<Vec<String>> =
                r.configuration_keys.as_ref().map(|ks| ks.iter().map(|k| k.to_string()).collect());
            let base = DescribeConfigsResult::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone());
            let entries = match r.resource_type {
                RESOURCE_TOPIC => {
                    let configs = match internal_topics::find(&name) {
                        Some(t) => Some(t.config_map()),
                        None => broker.metadata.read(|m| m.topics.get(&name).map(|t| t.configs.clone())),
                    };
                    let Some(configs) = configs else {
                        return base
                            .with_error_code(code(ResponseError::UnknownTopicOrPartition))
                            .with_error_message(Some(StrBytes::from_string(format!("Topic {name} does not exist"))));
                    };
                    topic_config_entries(&configs, broker.settings.message_max_bytes, keys.as_deref())
                }
                RESOURCE_BROKER if name.is_empty() || name == broker.settings.node_id.to_string() => {
                    broker_entries(broker)
                        .into_iter()
                        .filter(|e| keys.as_ref().is_none_or(|ks| ks.contains(&e.name)))
                        .collect()
                }
                RESOURCE_BROKER => {
                    return base
                        .with_error_code(code(ResponseError::InvalidRequest))
                        .with_error_message(Some(StrBytes::from_string(format!("Unknown broker {name}"))));
                }
                other => {
                    return base
                        .with_error_code(code(ResponseError::InvalidRequest))
                        .with_error_message(Some(StrBytes::from_string(format!("Unsupported resource type {other}"))));
                }
            };
            let configs = entries
                .into_iter()
                .map(|e| {
                    let synonyms = if req.include_synonyms {
                        vec![
                            DescribeConfigsSynonym::default()
                                .with_name(StrBytes::from_string(e.name.clone()))
                                .with_value(e.value.clone().map(StrBytes::from_string))
                                .with_source(e.source),
                        ]
                    } else {
                        Vec::new()
                    };
                    DescribeConfigsResourceResult::default()
                        .with_name(StrBytes::from_string(e.name))
                        .with_value(e.value.map(StrBytes::from_string))
                        .with_read_only(r.resource_type == RESOURCE_BROKER)
                        .with_config_source(e.source)
                        .with_is_sensitive(false)
                        .with_synonyms(synonyms)
                        .with_config_type(if version >= 3 { e.config_type } else { 0 })
                })
                .collect();
            base.with_error_code(errors::NONE).with_configs(configs)
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

/// Validates a complete new config set and stores it (unless `validate_only`).
async fn store_topic_configs(
    broker: &Broker,
    topic: &str,
    configs: BTreeMap<String, String>,
    validate_only: bool,
) -> (i16, Option<String>) {
    if !broker.metadata.read(|m| m.topics.contains_key(topic)) {
        return (code(ResponseError::UnknownTopicOrPartition), Some(format!("Topic {topic} does not exist")));
    }
    for (k, v) in &configs {
        if let Err(e) = topic_config::validate(k, v) {
            return (code(ResponseError::InvalidConfig), Some(e));
        }
    }
    if validate_only {
        return (errors::NONE, None);
    }
    match broker.controller.submit(Command::SetTopicConfigs { name: topic.to_string(), configs: configs.clone() }).await
    {
        Ok(CommandResult::Rejected(r)) => (errors::rejection(&r), Some(r.to_string())),
        Ok(_) => {
            info!(topic, ?configs, "topic configs changed");
            (errors::NONE, None)
        }
        Err(e) => (errors::controller(&e), Some(e.to_string())),
    }
}

fn unsupported_resource(resource_type: i8) -> (i16, Option<String>) {
    if resource_type == RESOURCE_BROKER {
        (
            code(ResponseError::InvalidRequest),
            Some("Broker configs are static in Skiff (config file, SKIFF_* environment, flags)".into()),
        )
    } else {
        (code(ResponseError::InvalidRequest), Some(format!("Unsupported resource type {resource_type}")))
    }
}

pub async fn alter_configs(broker: &Arc<Broker>, req: AlterConfigsRequest) -> AlterConfigsResponse {
    let mut responses = Vec::with_capacity(req.resources.len());
    for r in req.resources {
        let (error, message) = if r.resource_type == RESOURCE_TOPIC {
            // AlterConfigs replaces the whole set.
            let configs = r
                .configs
                .iter()
                .filter_map(|c| c.value.as_ref().map(|v| (c.name.to_string(), v.to_string())))
                .collect();
            store_topic_configs(broker, r.resource_name.as_str(), configs, req.validate_only).await
        } else {
            unsupported_resource(r.resource_type)
        };
        responses.push(
            alter_configs_response::AlterConfigsResourceResponse::default()
                .with_error_code(error)
                .with_error_message(message.map(StrBytes::from_string))
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name),
        );
    }
    AlterConfigsResponse::default().with_responses(responses)
}

pub async fn incremental_alter_configs(
    broker: &Arc<Broker>,
    req: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let mut responses = Vec::with_capacity(req.resources.len());
    for r in req.resources {
        let (error, message) = if r.resource_type == RESOURCE_TOPIC {
            let name = r.resource_name.to_string();
            match broker.metadata.read(|m| m.topics.get(&name).map(|t| t.configs.clone())) {
                None => (code(ResponseError::UnknownTopicOrPartition), Some(format!("Topic {name} does not exist"))),
                Some(mut configs) => match apply_incremental(&mut configs, &r.configs) {
                    Err(e) => (code(ResponseError::InvalidConfig), Some(e)),
                    Ok(()) => store_topic_configs(broker, &name, configs, req.validate_only).await,
                },
            }
        } else {
            unsupported_resource(r.resource_type)
        };
        responses.push(
            incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                .with_error_code(error)
                .with_error_message(message.map(StrBytes::from_string))
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name),
        );
    }
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}

/// SET = 0, DELETE = 1, APPEND = 2, SUBTRACT = 3 (list configs only).
fn apply_incremental(
    configs: &mut BTreeMap<String, String>,
    ops: &[kafka_protocol::messages::incremental_alter_configs_request::AlterableConfig],
) -> Result<(), String> {
    for op in ops {
        let name = op.name.to_string();
        let value = op.value.as_ref().map(|v| v.to_string());
        match op.config_operation {
            0 => {
                let v = value.ok_or_else(|| format!("SET of {name} needs a value"))?;
                configs.insert(name, v);
            }
            1 => {
                configs.remove(&name);
            }
            2 | 3 => {
                let key = topic_config::lookup(&name).ok_or_else(|| format!("Unknown topic config name: {name}"))?;
                if topic_config::config_type(key) != 7 {
                    return Err(format!("{name} is not a list config; APPEND/SUBTRACT need a list"));
                }
                let current = configs.get(&name).cloned().unwrap_or_default();
                let mut items: Vec<String> =
                    current.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect();
                for v in value.unwrap_or_default().split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    if op.config_operation == 2 {
                        if !items.iter().any(|i| i == v) {
                            items.push(v.to_string());
                        }
                    } else {
                        items.retain(|i| i != v);
                    }
                }
                configs.insert(name, items.join(","));
            }
            other => return Err(format!("Unknown config operation {other}")),
        }
    }
    Ok(())
}
