//! Typed topic configs: the values Skiff acts on, parsed once when a config set is applied
//! (CreateTopic, SetTopicConfigs, a dynamic broker config change) or loaded from a snapshot,
//! so the produce path and retention never parse strings.
//!
//! The stored string map stays the source of truth (DescribeConfigs reports it verbatim and
//! snapshots store only it); a [`TopicConfig`] is derived from it and rebuilt on load. Which
//! names and values are valid is the broker's call (`src/broker/topic_config.rs`), made before
//! a set is stored; a value that does not parse anyway (an older broker's, a hand-edited
//! snapshot) reads as unset, so the next level of the broker's precedence chain applies.

use std::collections::BTreeMap;

/// `message.timestamp.type`: which timestamp a batch keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampType {
    /// The producer's timestamps (Kafka's default).
    CreateTime,
    /// The broker stamps each batch with its clock at append.
    LogAppendTime,
}

/// `cleanup.policy`: what happens to old data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CleanupPolicy {
    /// Retention deletes old data (Kafka's default; the only policy Skiff accepts today).
    Delete,
    /// Compaction keeps the last value of each key.
    Compact,
    /// Both: `compact,delete`.
    CompactDelete,
}

/// The typed values of one config level (a topic's own configs, or one broker resource's
/// dynamic defaults); `None`: not set at this level, the next level applies.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TopicConfig {
    pub retention_ms: Option<i64>,
    pub retention_bytes: Option<i64>,
    pub max_message_bytes: Option<i32>,
    pub message_timestamp_type: Option<TimestampType>,
    pub cleanup_policy: Option<CleanupPolicy>,
    // The log cleaner's (compacted topics, RFC 0003).
    pub min_cleanable_dirty_ratio: Option<f64>,
    pub min_compaction_lag_ms: Option<i64>,
    pub max_compaction_lag_ms: Option<i64>,
    pub delete_retention_ms: Option<i64>,
    pub segment_ms: Option<i64>,
    pub segment_bytes: Option<i64>,
}

impl CleanupPolicy {
    /// True if the log cleaner keeps the last value per key (`compact`, `compact,delete`).
    pub fn compacts(self) -> bool {
        matches!(self, CleanupPolicy::Compact | CleanupPolicy::CompactDelete)
    }

    /// True if retention deletes old data (`delete`, `compact,delete`).
    pub fn deletes(self) -> bool {
        matches!(self, CleanupPolicy::Delete | CleanupPolicy::CompactDelete)
    }
}

/// (topic config, its dynamic broker synonym) of each typed field: Kafka's
/// `ServerTopicConfigSynonyms` (the broker's full table is `src/broker/dynamic_config.rs`).
pub const RETENTION_MS: (&str, &str) = ("retention.ms", "log.retention.ms");
pub const RETENTION_BYTES: (&str, &str) = ("retention.bytes", "log.retention.bytes");
pub const MAX_MESSAGE_BYTES: (&str, &str) = ("max.message.bytes", "message.max.bytes");
pub const MESSAGE_TIMESTAMP_TYPE: (&str, &str) = ("message.timestamp.type", "log.message.timestamp.type");
pub const CLEANUP_POLICY: (&str, &str) = ("cleanup.policy", "log.cleanup.policy");
pub const MIN_CLEANABLE_DIRTY_RATIO: (&str, &str) = ("min.cleanable.dirty.ratio", "log.cleaner.min.cleanable.ratio");
pub const MIN_COMPACTION_LAG_MS: (&str, &str) = ("min.compaction.lag.ms", "log.cleaner.min.compaction.lag.ms");
pub const MAX_COMPACTION_LAG_MS: (&str, &str) = ("max.compaction.lag.ms", "log.cleaner.max.compaction.lag.ms");
pub const DELETE_RETENTION_MS: (&str, &str) = ("delete.retention.ms", "log.cleaner.delete.retention.ms");
pub const SEGMENT_MS: (&str, &str) = ("segment.ms", "log.roll.ms");
pub const SEGMENT_BYTES: (&str, &str) = ("segment.bytes", "log.segment.bytes");

impl TopicConfig {
    /// Nothing set.
    pub const EMPTY: TopicConfig = TopicConfig {
        retention_ms: None,
        retention_bytes: None,
        max_message_bytes: None,
        message_timestamp_type: None,
        cleanup_policy: None,
        min_cleanable_dirty_ratio: None,
        min_compaction_lag_ms: None,
        max_compaction_lag_ms: None,
        delete_retention_ms: None,
        segment_ms: None,
        segment_bytes: None,
    };

    /// The typed values of a topic's configs (topic config names).
    pub fn from_topic(configs: &BTreeMap<String, String>) -> Self {
        Self::parse(|(topic, _)| configs.get(topic))
    }

    /// The typed values of a broker resource's dynamic configs (broker synonym names).
    pub fn from_broker(configs: &BTreeMap<String, String>) -> Self {
        Self::parse(|(_, broker)| configs.get(broker))
    }

    fn parse<'a>(get: impl Fn((&str, &str)) -> Option<&'a String>) -> Self {
        // Values are trimmed as Kafka's `ConfigDef` does (and the broker's validation does).
        let value = |names| get(names).map(|v| v.trim());
        Self {
            retention_ms: value(RETENTION_MS).and_then(|v| v.parse().ok()),
            retention_bytes: value(RETENTION_BYTES).and_then(|v| v.parse().ok()),
            max_message_bytes: value(MAX_MESSAGE_BYTES).and_then(|v| v.parse().ok()),
            message_timestamp_type: value(MESSAGE_TIMESTAMP_TYPE).and_then(|v| match v {
                "CreateTime" => Some(TimestampType::CreateTime),
                "LogAppendTime" => Some(TimestampType::LogAppendTime),
                _ => None,
            }),
            cleanup_policy: value(CLEANUP_POLICY).and_then(parse_cleanup_policy),
            min_cleanable_dirty_ratio: value(MIN_CLEANABLE_DIRTY_RATIO)
                .and_then(|v| v.parse::<f64>().ok())
                .filter(|r| (0.0..=1.0).contains(r)),
            min_compaction_lag_ms: value(MIN_COMPACTION_LAG_MS).and_then(|v| v.parse().ok()),
            max_compaction_lag_ms: value(MAX_COMPACTION_LAG_MS).and_then(|v| v.parse().ok()),
            delete_retention_ms: value(DELETE_RETENTION_MS).and_then(|v| v.parse().ok()),
            segment_ms: value(SEGMENT_MS).and_then(|v| v.parse().ok()),
            segment_bytes: value(SEGMENT_BYTES).and_then(|v| v.parse().ok()),
        }
    }

    /// Each field set here, else `fallback`'s: this level over the next one.
    pub fn or(self, fallback: &TopicConfig) -> TopicConfig {
        TopicConfig {
            retention_ms: self.retention_ms.or(fallback.retention_ms),
            retention_bytes: self.retention_bytes.or(fallback.retention_bytes),
            max_message_bytes: self.max_message_bytes.or(fallback.max_message_bytes),
            message_timestamp_type: self.message_timestamp_type.or(fallback.message_timestamp_type),
            cleanup_policy: self.cleanup_policy.or(fallback.cleanup_policy),
            min_cleanable_dirty_ratio: self.min_cleanable_dirty_ratio.or(fallback.min_cleanable_dirty_ratio),
            min_compaction_lag_ms: self.min_compaction_lag_ms.or(fallback.min_compaction_lag_ms),
            max_compaction_lag_ms: self.max_compaction_lag_ms.or(fallback.max_compaction_lag_ms),
            delete_retention_ms: self.delete_retention_ms.or(fallback.delete_retention_ms),
            segment_ms: self.segment_ms.or(fallback.segment_ms),
            segment_bytes: self.segment_bytes.or(fallback.segment_bytes),
        }
    }
}

/// A comma-separated list of `delete` and `compact` (either order, repeats allowed).
fn parse_cleanup_policy(v: &str) -> Option<CleanupPolicy> {
    let (mut delete, mut compact) = (false, false);
    for item in v.split(',') {
        match item.trim() {
            "delete" => delete = true,
            "compact" => compact = true,
            _ => return None,
        }
    }
    match (delete, compact) {
        (true, false) => Some(CleanupPolicy::Delete),
        (false, true) => Some(CleanupPolicy::Compact),
        (true, true) => Some(CleanupPolicy::CompactDelete),
        (false, false) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn every_field_parses_from_topic_names() {
        let c = TopicConfig::from_topic(&map(&[
            ("retention.ms", "1000"),
            ("retention.bytes", " -1 "),
            ("max.message.bytes", "2048"),
            ("message.timestamp.type", "LogAppendTime"),
            ("cleanup.policy", "delete"),
            ("segment.ms", "5"),
            ("segment.bytes", "1048576"),
            ("min.cleanable.dirty.ratio", "0.25"),
            ("min.compaction.lag.ms", "10"),
            ("max.compaction.lag.ms", "20"),
            ("delete.retention.ms", "30"),
            ("flush.ms", "5"),
        ]));
        assert_eq!(
            c,
            TopicConfig {
                retention_ms: Some(1000),
                retention_bytes: Some(-1),
                max_message_bytes: Some(2048),
                message_timestamp_type: Some(TimestampType::LogAppendTime),
                cleanup_policy: Some(CleanupPolicy::Delete),
                min_cleanable_dirty_ratio: Some(0.25),
                min_compaction_lag_ms: Some(10),
                max_compaction_lag_ms: Some(20),
                delete_retention_ms: Some(30),
                segment_ms: Some(5),
                segment_bytes: Some(1_048_576),
            }
        );
        assert_eq!(TopicConfig::from_topic(&BTreeMap::new()), TopicConfig::EMPTY);
        let create = TopicConfig::from_topic(&map(&[("message.timestamp.type", "CreateTime")]));
        assert_eq!(create.message_timestamp_type, Some(TimestampType::CreateTime));
        // Broker names do not count at the topic level.
        assert_eq!(TopicConfig::from_topic(&map(&[("log.retention.ms", "5")])), TopicConfig::EMPTY);
    }

    #[test]
    fn every_field_parses_from_broker_synonyms() {
        let c = TopicConfig::from_broker(&map(&[
            ("log.retention.ms", "-1"),
            ("log.retention.bytes", "4096"),
            ("message.max.bytes", "300"),
            ("log.message.timestamp.type", "CreateTime"),
            ("log.cleanup.policy", "compact,delete"),
            ("log.cleaner.min.cleanable.ratio", "1"),
            ("log.cleaner.min.compaction.lag.ms", "1"),
            ("log.cleaner.max.compaction.lag.ms", "2"),
            ("log.cleaner.delete.retention.ms", "3"),
            ("log.roll.ms", "4"),
            ("log.segment.bytes", "5"),
        ]));
        assert_eq!(
            c,
            TopicConfig {
                retention_ms: Some(-1),
                retention_bytes: Some(4096),
                max_message_bytes: Some(300),
                message_timestamp_type: Some(TimestampType::CreateTime),
                cleanup_policy: Some(CleanupPolicy::CompactDelete),
                min_cleanable_dirty_ratio: Some(1.0),
                min_compaction_lag_ms: Some(1),
                max_compaction_lag_ms: Some(2),
                delete_retention_ms: Some(3),
                segment_ms: Some(4),
                segment_bytes: Some(5),
            }
        );
        assert_eq!(TopicConfig::from_broker(&map(&[("retention.ms", "5")])), TopicConfig::EMPTY);
    }

    #[test]
    fn cleanup_policies() {
        assert_eq!(parse_cleanup_policy("compact"), Some(CleanupPolicy::Compact));
        assert_eq!(parse_cleanup_policy("delete, compact"), Some(CleanupPolicy::CompactDelete));
        assert_eq!(parse_cleanup_policy(""), None);
        assert_eq!(parse_cleanup_policy("delete,shred"), None);
    }

    #[test]
    fn unparsable_values_read_as_unset_without_panicking() {
        let c = TopicConfig::from_topic(&map(&[
            ("retention.ms", "soon"),
            ("retention.bytes", "99999999999999999999"),
            ("max.message.bytes", "99999999999"),
            ("message.timestamp.type", "Other"),
            ("cleanup.policy", "shred"),
            ("min.cleanable.dirty.ratio", "1.5"),
            ("segment.bytes", "big"),
        ]));
        assert_eq!(c, TopicConfig::EMPTY);
    }

    /// Applied once at CreateTopic and SetTopicConfigs, for broker resources at SetConfigs,
    /// and rebuilt from the strings when a snapshot is loaded (which stores only the strings).
    #[test]
    fn parsed_when_applied_and_rebuilt_after_a_snapshot_round_trip() {
        use crate::configs::{ConfigChange, ConfigResource};
        use crate::image::MetadataImage;
        use crate::metadata::{Command, CreateTopic, MetadataState};

        let mut s = MetadataState::new("c".into());
        s.apply(&Command::RegisterBroker(crate::metadata::BrokerRegistration {
            broker_id: 1,
            incarnation: uuid::Uuid::nil(),
            host: "h".into(),
            port: 1,
            rack: None,
            fenced: false,
            listeners: Vec::new(),
        }));
        s.apply(&Command::CreateTopic(CreateTopic {
            name: "t".into(),
            topic_id: uuid::Uuid::from_u128(1),
            partitions: 1,
            configs: map(&[("retention.ms", "1000")]),
            assignments: Vec::new(),
        }));
        assert_eq!(s.topics["t"].config.retention_ms, Some(1000));
        s.apply(&Command::SetTopicConfigs {
            name: "t".into(),
            configs: map(&[("max.message.bytes", "500"), ("message.timestamp.type", "LogAppendTime")]),
        });
        let expected = TopicConfig {
            max_message_bytes: Some(500),
            message_timestamp_type: Some(TimestampType::LogAppendTime),
            ..TopicConfig::EMPTY
        };
        assert_eq!(s.topics["t"].config, expected);
        let broker = |name: &str, configs| {
            Command::SetConfigs(ConfigChange { resource: ConfigResource::Broker(name.into()), configs })
        };
        s.apply(&broker("", map(&[("log.retention.bytes", "10")])));
        s.apply(&broker("3", map(&[("log.cleanup.policy", "delete")])));
        assert_eq!(s.configs.cluster_topic_defaults().retention_bytes, Some(10));
        assert_eq!(s.configs.broker_topic_defaults(3).cleanup_policy, Some(CleanupPolicy::Delete));
        assert_eq!(*s.configs.broker_topic_defaults(4), TopicConfig::EMPTY);

        let json = serde_json::to_value(&s).expect("serialize");
        // The snapshot holds the strings only, as before typed configs existed.
        let topic = json["topics"]["t"].as_object().expect("topic");
        assert_eq!(topic.keys().collect::<Vec<_>>(), ["configs", "name", "partitions", "topic_id"]);
        assert_eq!(json["configs"].as_object().expect("configs").len(), 2);
        let back: MetadataState = serde_json::from_value(json).expect("deserialize");
        assert_eq!(back, s);
        let image = MetadataImage::from(back);
        let t = image.topic("t").expect("loaded");
        assert_eq!(*t.config(), expected);
        assert_eq!(t.configs(), &map(&[("max.message.bytes", "500"), ("message.timestamp.type", "LogAppendTime")]));
        assert_eq!(image.dynamic_configs().cluster_topic_defaults().retention_bytes, Some(10));
        assert_eq!(image.dynamic_configs().broker_topic_defaults(3).cleanup_policy, Some(CleanupPolicy::Delete));
        // Removing a broker resource drops its typed defaults.
        s.apply(&broker("3", BTreeMap::new()));
        assert_eq!(*s.configs.broker_topic_defaults(3), TopicConfig::EMPTY);
    }

    #[test]
    fn or_takes_each_field_from_the_first_level_that_sets_it() {
        let topic = TopicConfig { retention_ms: Some(1), ..TopicConfig::EMPTY };
        let broker = TopicConfig { retention_ms: Some(2), max_message_bytes: Some(3), ..TopicConfig::EMPTY };
        let c = topic.or(&broker);
        assert_eq!((c.retention_ms, c.max_message_bytes, c.retention_bytes), (Some(1), Some(3), None));
    }
}
