//! DescribeConfigs / AlterConfigs / IncrementalAlterConfigs for topics, brokers (the dynamic
//! broker configs of `broker/dynamic_config.rs`, per broker id or the cluster default `""`)
//! and consumer groups (`group/group_config.rs`).

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
use skiff_controller::intent::{ConfigChange, ConfigResource};
use tracing::info;

use super::errors::{self, code};
use super::not_served::Asker;
use crate::broker::dynamic_config::{
    self, BrokerDefaults, SOURCE_DEFAULT, SOURCE_DYNAMIC_DEFAULT_BROKER, SOURCE_GROUP, SOURCE_STATIC_BROKER, Synonym,
};
use crate::broker::topic_config::InvalidConfig;
use crate::broker::{Broker, internal_topics, topic_config};
use crate::group::group_config;

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
const RESOURCE_GROUP: i8 = 32;

/// Kafka's ConfigType codes (DescribeConfigs v3+).
const TYPE_BOOLEAN: i8 = 1;
const TYPE_INT: i8 = 3;
const TYPE_LONG: i8 = 5;
const TYPE_SHORT: i8 = 4;

/// One config as described.
pub struct ConfigEntry {
    pub name: String,
    pub value: Option<String>,
    pub source: i8,
    pub config_type: i8,
    pub read_only: bool,
    /// The values it falls back to, most important first (itself included).
    pub synonyms: Vec<Synonym>,
}

/// Every topic config with its effective value and source, optionally filtered by key.
pub fn topic_config_entries(
    configs: &BTreeMap<String, String>,
    defaults: &BrokerDefaults<'_>,
    keys: Option<&[String]>,
) -> Vec<ConfigEntry> {
    topic_config::TOPIC_CONFIGS
        .iter()
        .filter(|k| keys.is_none_or(|ks| ks.iter().any(|n| n == k.name)))
        .map(|k| {
            let (value, source, synonyms) = defaults.resolve(configs, k);
            ConfigEntry {
                name: k.name.to_string(),
                value,
                source,
                config_type: topic_config::config_type(k),
                read_only: false,
                synonyms,
            }
        })
        .collect()
}

/// A broker's configs: `per_broker` false is the cluster-default resource (`""`), which
/// describes only the dynamic defaults set, as Kafka does.
fn broker_entries(
    b: &Broker,
    defaults: &BrokerDefaults<'_>,
    cluster: Option<&BTreeMap<String, String>>,
    per_broker: bool,
) -> Vec<ConfigEntry> {
    if !per_broker {
        return cluster
            .into_iter()
            .flatten()
            .map(|(name, value)| ConfigEntry {
                name: name.clone(),
                value: Some(value.clone()),
                source: SOURCE_DYNAMIC_DEFAULT_BROKER,
                config_type: dynamic_config::topic_key(name).map_or(0, topic_config::config_type),
                read_only: false,
                synonyms: vec![(name.clone(), Some(value.clone()), SOURCE_DYNAMIC_DEFAULT_BROKER)],
            })
            .collect();
    }
    let s = &b.settings;
    let fixed = |name: &str, value: String, config_type: i8| ConfigEntry {
        name: name.into(),
        value: Some(value.clone()),
        source: SOURCE_STATIC_BROKER,
        config_type,
        read_only: true,
        synonyms: vec![(name.into(), Some(value), SOURCE_STATIC_BROKER)],
    };
    let g = &s.group_bounds;
    let mut out = vec![
        fixed("auto.create.topics.enable", s.auto_create_topics.to_string(), TYPE_BOOLEAN),
        fixed("broker.id", s.node_id.to_string(), TYPE_INT),
        fixed("default.replication.factor", "1".into(), TYPE_SHORT),
        fixed("group.consumer.heartbeat.interval.ms", g.heartbeat_interval_ms.to_string(), TYPE_INT),
        fixed("group.consumer.max.heartbeat.interval.ms", g.max_heartbeat_interval_ms.to_string(), TYPE_INT),
        fixed("group.consumer.max.session.timeout.ms", g.max_session_timeout_ms.to_string(), TYPE_INT),
        fixed("group.consumer.min.heartbeat.interval.ms", g.min_heartbeat_interval_ms.to_string(), TYPE_INT),
        fixed("group.consumer.min.session.timeout.ms", g.min_session_timeout_ms.to_string(), TYPE_INT),
        fixed("group.consumer.session.timeout.ms", g.session_timeout_ms.to_string(), TYPE_INT),
        fixed("num.partitions", s.num_partitions.to_string(), TYPE_INT),
        fixed("socket.request.max.bytes", s.socket_request_max_bytes.to_string(), TYPE_INT),
        fixed("skiff.flush.bytes", s.flush_bytes.to_string(), TYPE_INT),
        fixed("skiff.flush.interval.ms", s.flush_interval_ms.to_string(), TYPE_LONG),
    ];
    for (name, _) in dynamic_config::SYNONYMS {
        let Some((value, source, synonyms)) = defaults.broker_value(name) else { continue };
        out.push(ConfigEntry {
            name: name.to_string(),
            value: Some(value),
            source,
            config_type: dynamic_config::topic_key(name).map_or(0, topic_config::config_type),
            read_only: false,
            synonyms,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Every group config with its value: the group's own (GROUP_CONFIG) or the broker's default.
fn group_entries(b: &Broker, set: Option<&BTreeMap<String, String>>) -> Vec<ConfigEntry> {
    group_config::entries(&b.settings.group_bounds, set)
        .into_iter()
        .map(|(name, value, own)| {
            // Not set on the group: the broker's `group.consumer.*` static config.
            let (source, synonym) =
                if own { (SOURCE_GROUP, name.to_string()) } else { (SOURCE_DEFAULT, format!("group.{name}")) };
            ConfigEntry {
                name: name.to_string(),
                value: Some(value.clone()),
                source,
                config_type: TYPE_INT,
                read_only: false,
                synonyms: vec![(synonym, Some(value), source)],
            }
        })
        .collect()
}

fn failed(error: ResponseError, message: String) -> (i16, Option<String>) {
    (code(error), Some(message))
}

/// Who asked to alter configs, and through which API: what a rejected config is logged with.
struct Asked<'a> {
    asker: &'a Asker,
    api: &'static str,
}

/// Refuses `config` on `resource` with `error` (Kafka's code for the resource type), and logs
/// it (`rejected_configs.rs`).
fn reject(
    broker: &Broker,
    asked: &Asked<'_>,
    resource: &str,
    error: ResponseError,
    config: InvalidConfig,
) -> (i16, Option<String>) {
    broker.rejected_configs.report(broker.clock.now_ms(), asked.asker, asked.api, resource, &config);
    failed(error, config.message)
}

/// How a resource is named in the log of rejected configs.
fn resource_label(resource_type: i8, name: &str) -> String {
    match resource_type {
        RESOURCE_TOPIC => format!("topic {name}"),
        RESOURCE_BROKER if name.is_empty() => "broker cluster default".to_string(),
        RESOURCE_BROKER => format!("broker {name}"),
        RESOURCE_GROUP => format!("group {name}"),
        other => format!("resource type {other} {name}"),
    }
}

/// The config of `configs` a validation message is about (the one it names first), for the log;
/// broker and group validation report only a message.
fn blame(configs: &BTreeMap<String, String>, message: String) -> InvalidConfig {
    let named = configs.iter().filter_map(|(k, v)| message.find(k.as_str()).map(|at| (at, k, v))).min_by_key(|c| c.0);
    match named {
        Some((_, name, value)) => InvalidConfig { name: name.clone(), value: value.clone(), message },
        None => {
            InvalidConfig { name: configs.keys().cloned().collect::<Vec<_>>().join(","), value: String::new(), message }
        }
    }
}

pub fn describe_configs(broker: &Arc<Broker>, req: DescribeConfigsRequest, version: i16) -> DescribeConfigsResponse {
    let results = req
        .resources
        .iter()
        .map(|r| {
            if r.resource_type == super::broker_loggers::RESOURCE_BROKER_LOGGER {
                return super::broker_loggers::describe(broker, r);
            }
            let name = r.resource_name.to_string();
            let keys: Option<Vec<String>> =
                r.configuration_keys.as_ref().map(|ks| ks.iter().map(|k| k.to_string()).collect());
            let base = DescribeConfigsResult::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone());
            let entries = broker.metadata.read(|m| {
                let defaults = broker.defaults(m);
                match r.resource_type {
                    RESOURCE_TOPIC => {
                        // Internal topics are not in the controller's topic map; their configs are Kafka's.
                        let configs = match internal_topics::find(&name) {
                            Some(t) => Some(t.config_map()),
                            None => m.topic(&name).map(|t| t.configs().clone()),
                        };
                        match configs {
                            Some(c) => Ok(topic_config_entries(&c, &defaults, keys.as_deref())),
                            None => Err(failed(
                                ResponseError::UnknownTopicOrPartition,
                                format!("Topic {name} does not exist"),
                            )),
                        }
                    }
                    RESOURCE_BROKER if name.is_empty() || name == broker.settings.node_id.to_string() => {
                        Ok(broker_entries(broker, &defaults, m.dynamic_configs().broker(""), !name.is_empty()))
                    }
                    RESOURCE_BROKER => Err(failed(ResponseError::InvalidRequest, format!("Unknown broker {name}"))),
                    RESOURCE_GROUP => Ok(group_entries(broker, m.dynamic_configs().group(&name))),
                    other => Err(failed(ResponseError::InvalidRequest, format!("Unsupported resource type {other}"))),
                }
            });
            let entries = match entries {
                Ok(e) => e,
                Err((error, message)) => {
                    return base.with_error_code(error).with_error_message(message.map(StrBytes::from_string));
                }
            };
            let configs = entries
                .into_iter()
                .filter(|e| keys.as_ref().is_none_or(|ks| ks.contains(&e.name)))
                .map(|e| {
                    let synonyms = if req.include_synonyms {
                        e.synonyms
                            .into_iter()
                            .map(|(name, value, source)| {
                                DescribeConfigsSynonym::default()
                                    .with_name(StrBytes::from_string(name))
                                    .with_value(value.map(StrBytes::from_string))
                                    .with_source(source)
                            })
                            .collect()
                    } else {
                        Vec::new()
                    };
                    DescribeConfigsResourceResult::default()
                        .with_name(StrBytes::from_string(e.name))
                        .with_value(e.value.map(StrBytes::from_string))
                        .with_read_only(e.read_only)
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

/// Validates a topic's complete new config set and stores it (unless `validate_only`).
async fn store_topic_configs(
    broker: &Broker,
    asked: &Asked<'_>,
    topic: &str,
    configs: BTreeMap<String, String>,
    validate_only: bool,
) -> (i16, Option<String>) {
    if !broker.metadata.read(|m| m.topic_exists(topic)) {
        return failed(ResponseError::UnknownTopicOrPartition, format!("Topic {topic} does not exist"));
    }
    let checked = broker.metadata.read(|m| {
        let defaults = broker.defaults(m);
        topic_config::validate_topic(&configs, |k| defaults.chain(k).swap_remove(0).1)
    });
    if let Err(e) = checked {
        return reject(broker, asked, &resource_label(RESOURCE_TOPIC, topic), ResponseError::InvalidConfig, e);
    }
    if validate_only {
        return (errors::NONE, None);
    }
    match broker.controller.set_topic_configs(topic, configs.clone()).await {
        Ok(()) => {
            info!(topic, ?configs, "topic configs changed");
            (errors::NONE, None)
        }
        Err(e) => (errors::controller(&e), Some(e.to_string())),
    }
}

/// The broker or group resource a request names, or its error.
fn other_resource(resource_type: i8, name: &str) -> Result<ConfigResource, (i16, Option<String>)> {
    match resource_type {
        RESOURCE_BROKER if dynamic_config::valid_resource_name(name) => Ok(ConfigResource::Broker(name.to_string())),
        RESOURCE_BROKER => Err(failed(ResponseError::InvalidRequest, format!("Invalid broker id {name}"))),
        RESOURCE_GROUP if !name.is_empty() => Ok(ConfigResource::Group(name.to_string())),
        RESOURCE_GROUP => Err(failed(ResponseError::InvalidRequest, "Group id must not be empty".into())),
        other => Err(failed(ResponseError::InvalidRequest, format!("Unsupported resource type {other}"))),
    }
}

/// The stored configs of a broker or group resource.
fn current_configs(broker: &Broker, resource: &ConfigResource) -> BTreeMap<String, String> {
    broker.metadata.read(|m| {
        match resource {
            ConfigResource::Broker(name) => m.dynamic_configs().broker(name),
            ConfigResource::Group(id) => m.dynamic_configs().group(id),
        }
        .cloned()
        .unwrap_or_default()
    })
}

/// Validates a broker or group resource's complete new config set (Kafka: INVALID_REQUEST for
/// brokers, KAFKA-13609; INVALID_CONFIG for groups) and stores it (unless `validate_only`).
async fn store_configs(
    broker: &Broker,
    asked: &Asked<'_>,
    resource: ConfigResource,
    configs: BTreeMap<String, String>,
    validate_only: bool,
) -> (i16, Option<String>) {
    let (checked, error, label) = match &resource {
        ConfigResource::Broker(name) => {
            (dynamic_config::validate(&configs), ResponseError::InvalidRequest, resource_label(RESOURCE_BROKER, name))
        }
        ConfigResource::Group(id) => (
            group_config::validate(&broker.settings.group_bounds, &configs),
            ResponseError::InvalidConfig,
            resource_label(RESOURCE_GROUP, id),
        ),
    };
    if let Err(message) = checked {
        return reject(broker, asked, &label, error, blame(&configs, message));
    }
    if validate_only {
        return (errors::NONE, None);
    }
    let change = ConfigChange { resource: resource.clone(), configs: configs.clone() };
    match broker.controller.set_configs(change).await {
        Ok(()) => {
            info!(?resource, ?configs, "dynamic configs changed");
            (errors::NONE, None)
        }
        Err(e) => (errors::controller(&e), Some(e.to_string())),
    }
}

pub async fn alter_configs(broker: &Arc<Broker>, req: AlterConfigsRequest, asker: &Asker) -> AlterConfigsResponse {
    let asked = Asked { asker, api: "AlterConfigs" };
    let mut responses = Vec::with_capacity(req.resources.len());
    for r in req.resources {
        // AlterConfigs replaces the whole set.
        let configs: BTreeMap<String, String> =
            r.configs.iter().filter_map(|c| c.value.as_ref().map(|v| (c.name.to_string(), v.to_string()))).collect();
        let (error, message) = if r.resource_type == RESOURCE_TOPIC {
            store_topic_configs(broker, &asked, r.resource_name.as_str(), configs, req.validate_only).await
        } else {
            match other_resource(r.resource_type, r.resource_name.as_str()) {
                Ok(resource) => store_configs(broker, &asked, resource, configs, req.validate_only).await,
                Err(e) => e,
            }
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
    asker: &Asker,
) -> IncrementalAlterConfigsResponse {
    let asked = Asked { asker, api: "IncrementalAlterConfigs" };
    let mut responses = Vec::with_capacity(req.resources.len());
    for r in req.resources {
        if r.resource_type == super::broker_loggers::RESOURCE_BROKER_LOGGER {
            responses.push(super::broker_loggers::alter(broker, &r, req.validate_only));
            continue;
        }
        let name = r.resource_name.to_string();
        let label = resource_label(r.resource_type, &name);
        let (error, message) = if r.resource_type == RESOURCE_TOPIC {
            match broker.metadata.read(|m| m.topic(&name).map(|t| t.configs().clone())) {
                None => failed(ResponseError::UnknownTopicOrPartition, format!("Topic {name} does not exist")),
                Some(mut configs) => match apply_incremental(&mut configs, &r.configs, topic_list_default) {
                    Err(e) => reject(broker, &asked, &label, ResponseError::InvalidConfig, e),
                    Ok(()) => store_topic_configs(broker, &asked, &name, configs, req.validate_only).await,
                },
            }
        } else {
            match other_resource(r.resource_type, &name) {
                Err(e) => e,
                Ok(resource) => {
                    let mut configs = current_configs(broker, &resource);
                    let list_default = |n: &str| Ok(dynamic_config::topic_key(n).and_then(list_default));
                    match apply_incremental(&mut configs, &r.configs, list_default) {
                        Err(e) => reject(broker, &asked, &label, ResponseError::InvalidConfig, e),
                        Ok(()) => store_configs(broker, &asked, resource, configs, req.validate_only).await,
                    }
                }
            }
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

/// If topic config `name` is a list (APPEND / SUBTRACT apply to lists only), its default.
fn topic_list_default(name: &str) -> Result<Option<&'static str>, String> {
    let key = topic_config::lookup(name).ok_or_else(|| format!("Unknown topic config name: {name}"))?;
    Ok(list_default(key))
}

/// The default of `key` if it is a list: APPEND and SUBTRACT on an unset list start from it, as
/// Kafka's controller does (`ConfigurationControlManager`), so APPEND `compact` to a topic
/// without `cleanup.policy` gives `delete,compact`.
fn list_default(key: &topic_config::ConfigKey) -> Option<&'static str> {
    (topic_config::config_type(key) == 7).then(|| topic_config::default_value(key).unwrap_or_default())
}

/// SET = 0, DELETE = 1, APPEND = 2, SUBTRACT = 3 (list configs only).
fn apply_incremental(
    configs: &mut BTreeMap<String, String>,
    ops: &[kafka_protocol::messages::incremental_alter_configs_request::AlterableConfig],
    list_default: impl Fn(&str) -> Result<Option<&'static str>, String>,
) -> Result<(), InvalidConfig> {
    for op in ops {
        let name = op.name.to_string();
        let value = op.value.as_ref().map(|v| v.to_string());
        let invalid =
            |message: String| InvalidConfig { name: name.clone(), value: value.clone().unwrap_or_default(), message };
        match op.config_operation {
            0 => {
                let v = value.clone().ok_or_else(|| invalid(format!("SET of {name} needs a value")))?;
                configs.insert(name, v);
            }
            1 => {
                configs.remove(&name);
            }
            2 | 3 => {
                let Some(default) = list_default(&name).map_err(invalid)? else {
                    // Kafka's controller's words (ConfigurationControlManager).
                    let op = if op.config_operation == 2 { "APPEND" } else { "SUBTRACT" };
                    return Err(invalid(format!("Can't {op} to key {name} because its type is not LIST.")));
                };
                let current = configs.get(&name).map_or(default, String::as_str);
                let mut items: Vec<String> =
                    current.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect();
                for v in value.as_deref().unwrap_or_default().split(',').map(str::trim).filter(|s| !s.is_empty()) {
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
            other => return Err(invalid(format!("Unknown config operation {other}"))),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::incremental_alter_configs_request::AlterableConfig;

    use super::*;

    fn op(name: &str, operation: i8, value: &str) -> AlterableConfig {
        AlterableConfig::default()
            .with_name(StrBytes::from_string(name.into()))
            .with_config_operation(operation)
            .with_value(Some(StrBytes::from_string(value.into())))
    }

    #[test]
    fn append_and_subtract_start_from_the_default_of_an_unset_list() {
        let mut configs = BTreeMap::new();
        apply_incremental(&mut configs, &[op("cleanup.policy", 2, "compact")], topic_list_default).expect("append");
        assert_eq!(configs["cleanup.policy"], "delete,compact");
        apply_incremental(&mut configs, &[op("cleanup.policy", 3, "delete")], topic_list_default).expect("subtract");
        assert_eq!(configs["cleanup.policy"], "compact");
        let mut unset = BTreeMap::new();
        apply_incremental(&mut unset, &[op("cleanup.policy", 3, "delete")], topic_list_default).expect("subtract");
        assert_eq!(unset["cleanup.policy"], "", "the empty list is then refused by validation");
        let e =
            apply_incremental(&mut configs, &[op("retention.ms", 2, "5")], topic_list_default).expect_err("no list");
        assert_eq!((e.name.as_str(), e.value.as_str()), ("retention.ms", "5"));
        assert_eq!(e.message, "Can't APPEND to key retention.ms because its type is not LIST.");
    }

    #[test]
    fn blame_names_the_config_the_message_names_first() {
        let configs: BTreeMap<String, String> =
            [("a.b", "1"), ("c.d", "2")].iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let e = blame(&configs, "c.d must be less than a.b".into());
        assert_eq!((e.name.as_str(), e.value.as_str()), ("c.d", "2"));
        let e = blame(&configs, "something else".into());
        assert_eq!((e.name.as_str(), e.value.as_str()), ("a.b,c.d", ""));
    }
}
