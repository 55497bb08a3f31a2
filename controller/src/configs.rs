//! Dynamic configs kept in the metadata: broker configs (per broker id, and the cluster default
//! under the resource name `""`, as Kafka's `BROKER` config resource has them) and consumer-group
//! configs (Kafka's `GROUP` config resource, KIP-848).
//!
//! The controller only stores them: which names may be set and which values are valid is the
//! broker's call (`src/broker/dynamic_config.rs`, `src/group/group_config.rs`), made before the
//! command is submitted, exactly as for topic configs. A change replaces the resource's whole
//! set; an empty set removes the resource. The broker resources' topic defaults
//! (`log.retention.ms`, `message.max.bytes`, ...) are also kept typed (`topic_config.rs`),
//! parsed when a broker resource changes and rebuilt when a snapshot is loaded.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::metadata::{CommandResult, Rejection};
use crate::topic_config::TopicConfig;

/// A config resource other than a topic.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub enum ConfigResource {
    /// A broker by id (decimal), or the cluster-wide default (`""`).
    Broker(String),
    /// A consumer group by id.
    Group(String),
}

/// `SetConfigs`: the new complete set of a resource's dynamic configs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ConfigChange {
    pub resource: ConfigResource,
    pub configs: BTreeMap<String, String>,
}

/// The dynamic configs of brokers and groups.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(from = "StoredConfigsState")]
pub struct ConfigsState {
    /// By resource name: `""` is the cluster default, otherwise a broker id. The source of
    /// truth (snapshots store only this); `typed` is derived from it.
    pub(crate) brokers: BTreeMap<String, BTreeMap<String, String>>,
    /// By group id.
    pub(crate) groups: BTreeMap<String, BTreeMap<String, String>>,
    /// The broker resources' topic defaults parsed once, when `brokers` changes or a snapshot
    /// is loaded.
    #[serde(skip)]
    typed: TypedBrokerDefaults,
}

/// The dynamic topic defaults of the broker resources, typed.
#[derive(Debug, Clone, Default, PartialEq)]
struct TypedBrokerDefaults {
    /// Resource `""`.
    cluster: TopicConfig,
    /// Resources named by a broker id, in the form `broker_id.to_string()` renders (the name
    /// brokers look their own resource up by).
    per_broker: BTreeMap<i32, TopicConfig>,
}

impl TypedBrokerDefaults {
    fn build(brokers: &BTreeMap<String, BTreeMap<String, String>>) -> Self {
        let mut typed = Self::default();
        for (name, configs) in brokers {
            if name.is_empty() {
                typed.cluster = TopicConfig::from_broker(configs);
            } else if let Some(id) = name.parse::<i32>().ok().filter(|id| id.to_string() == *name) {
                typed.per_broker.insert(id, TopicConfig::from_broker(configs));
            }
            // Any other name is no broker's (the broker validates names before storing them).
        }
        typed
    }
}

/// [`ConfigsState`] as stored: the typed broker defaults are rebuilt from it on load.
#[derive(Deserialize)]
struct StoredConfigsState {
    #[serde(default)]
    brokers: BTreeMap<String, BTreeMap<String, String>>,
    #[serde(default)]
    groups: BTreeMap<String, BTreeMap<String, String>>,
}

impl From<StoredConfigsState> for ConfigsState {
    fn from(stored: StoredConfigsState) -> Self {
        let typed = TypedBrokerDefaults::build(&stored.brokers);
        Self { brokers: stored.brokers, groups: stored.groups, typed }
    }
}

impl ConfigsState {
    /// Applies one change (the controller does this in log order; tests build sets with it).
    pub fn apply(&mut self, change: &ConfigChange) -> Result<CommandResult, Rejection> {
        let (map, key) = match &change.resource {
            ConfigResource::Broker(name) => (&mut self.brokers, name),
            ConfigResource::Group(id) => (&mut self.groups, id),
        };
        if change.configs.is_empty() {
            map.remove(key);
        } else {
            map.insert(key.clone(), change.configs.clone());
        }
        if matches!(change.resource, ConfigResource::Broker(_)) {
            self.typed = TypedBrokerDefaults::build(&self.brokers);
        }
        Ok(CommandResult::Ok)
    }

    /// The dynamic topic defaults set on `broker_id`'s own resource, typed.
    pub fn broker_topic_defaults(&self, broker_id: i32) -> &TopicConfig {
        self.typed.per_broker.get(&broker_id).unwrap_or(&TopicConfig::EMPTY)
    }

    /// The cluster-wide dynamic topic defaults (resource `""`), typed.
    pub fn cluster_topic_defaults(&self) -> &TopicConfig {
        &self.typed.cluster
    }

    /// The dynamic value of broker config `name` for `broker_id`, and whether it is the
    /// per-broker one (`true`) or the cluster default (`false`).
    pub fn broker_value(&self, broker_id: i32, name: &str) -> Option<(&str, bool)> {
        if let Some(v) = self.brokers.get(&broker_id.to_string()).and_then(|c| c.get(name)) {
            return Some((v, true));
        }
        self.brokers.get("").and_then(|c| c.get(name)).map(|v| (v.as_str(), false))
    }

    /// The configs set on broker resource `name` (a broker id, or `""` for the cluster default).
    pub fn broker(&self, name: &str) -> Option<&BTreeMap<String, String>> {
        self.brokers.get(name)
    }

    /// The configs set on `group_id` (empty if none).
    pub fn group(&self, group_id: &str) -> Option<&BTreeMap<String, String>> {
        self.groups.get(group_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::{Command, MetadataState};

    fn set(resource: ConfigResource, kv: &[(&str, &str)]) -> Command {
        Command::SetConfigs(ConfigChange {
            resource,
            configs: kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        })
    }

    #[test]
    fn per_broker_overrides_the_cluster_default_and_empty_removes() {
        let mut s = MetadataState::new("c".into());
        s.apply(&set(ConfigResource::Broker(String::new()), &[("log.retention.ms", "1000")]));
        assert_eq!(s.configs.broker_value(1, "log.retention.ms"), Some(("1000", false)));
        s.apply(&set(ConfigResource::Broker("1".into()), &[("log.retention.ms", "5")]));
        assert_eq!(s.configs.broker_value(1, "log.retention.ms"), Some(("5", true)));
        assert_eq!(s.configs.broker_value(2, "log.retention.ms"), Some(("1000", false)));
        s.apply(&set(ConfigResource::Broker("1".into()), &[]));
        assert!(!s.configs.brokers.contains_key("1"));
        s.apply(&set(ConfigResource::Group("g".into()), &[("consumer.heartbeat.interval.ms", "6000")]));
        assert_eq!(
            s.configs.group("g").and_then(|c| c.get("consumer.heartbeat.interval.ms")).map(String::as_str),
            Some("6000")
        );
        // Survives a snapshot round trip, and a snapshot without the field still loads.
        let json = serde_json::to_string(&s).expect("serialize");
        let back: MetadataState = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, s);
        let mut old: serde_json::Value = serde_json::from_str(&json).expect("json");
        old.as_object_mut().expect("object").remove("configs");
        let back: MetadataState = serde_json::from_value(old).expect("old snapshot");
        assert_eq!(back.configs, ConfigsState::default());
    }
}
