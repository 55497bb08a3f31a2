//! Dynamic broker configs (Kafka's `BROKER` config resource, `DynamicBrokerConfig`): which
//! broker configs change without a restart, how a change is validated, and the value a broker
//! sees.
//!
//! Dynamic are exactly the broker synonyms of the topic configs Skiff knows (Kafka's
//! `DynamicLogConfig`: `log.retention.ms` is the broker default of `retention.ms`, and so on),
//! settable per broker (resource name: its id) or cluster-wide (resource name `""`); Kafka
//! allows both levels for all of them. They live in the controller
//! (`skiff_controller::configs`), so every broker sees a change at its next metadata apply.
//! For a topic key the precedence is Kafka's:
//!
//! ```text
//! topic config ─▶ this broker's dynamic value ─▶ the cluster's dynamic default
//!              ─▶ the static config (`message.max.bytes` only) ─▶ Kafka's default
//! ```
//!
//! Skiff enforces `message.max.bytes`, `log.message.timestamp.type`, `log.retention.ms` and
//! `log.retention.bytes`; the others are stored and reported, as their topic configs are. The
//! enforced ones are read typed ([`BrokerDefaults::effective`] over
//! `skiff_controller::topic_config::TopicConfig`, parsed when applied); DescribeConfigs reads
//! the strings ([`BrokerDefaults::resolve`]), with the same precedence.
//! Every other broker config is static (config file, `SKIFF_*` environment, flags), as are the
//! ones Kafka marks static (`auto.create.topics.enable`, `num.partitions`, the
//! `group.consumer.*` defaults, ...): an alter naming one is refused as Kafka refuses it,
//! INVALID_REQUEST "Cannot update these configs dynamically: Set(...)". So are the
//! `log.cleaner.*` settings of the cleaner itself (threads, buffers: Skiff's `[lifecycle]`
//! `cleaner_*` settings); the four that are topic-config defaults are dynamic, as in Kafka.

use std::collections::BTreeMap;

use skiff_controller::image::{CleanupPolicy, ConfigsState, TimestampType, TopicConfig};

use super::topic_config::{self, ConfigKey};

/// DescribeConfigs `ConfigSource` values (DescribeConfigsResponse.json).
pub const SOURCE_TOPIC: i8 = 1;
pub const SOURCE_DYNAMIC_BROKER: i8 = 2;
pub const SOURCE_DYNAMIC_DEFAULT_BROKER: i8 = 3;
pub const SOURCE_STATIC_BROKER: i8 = 4;
pub const SOURCE_DEFAULT: i8 = 5;
pub const SOURCE_GROUP: i8 = 8;

/// Kafka's default of `message.max.bytes` (and so of the topic's `max.message.bytes`).
pub const KAFKA_MESSAGE_MAX_BYTES: i32 = 1_048_588;

/// (broker config, the topic config it is the default of): Kafka's
/// `ServerTopicConfigSynonyms.TOPIC_CONFIG_SYNONYMS` for the topic configs Skiff knows.
pub const SYNONYMS: &[(&str, &str)] = &[
    ("compression.gzip.level", "compression.gzip.level"),
    ("compression.lz4.level", "compression.lz4.level"),
    ("compression.type", "compression.type"),
    ("compression.zstd.level", "compression.zstd.level"),
    ("log.cleaner.delete.retention.ms", "delete.retention.ms"),
    ("log.cleaner.max.compaction.lag.ms", "max.compaction.lag.ms"),
    ("log.cleaner.min.cleanable.ratio", "min.cleanable.dirty.ratio"),
    ("log.cleaner.min.compaction.lag.ms", "min.compaction.lag.ms"),
    ("log.cleanup.policy", "cleanup.policy"),
    ("log.flush.interval.messages", "flush.messages"),
    ("log.flush.interval.ms", "flush.ms"),
    ("log.index.interval.bytes", "index.interval.bytes"),
    ("log.index.size.max.bytes", "segment.index.bytes"),
    ("log.local.retention.bytes", "local.retention.bytes"),
    ("log.local.retention.ms", "local.retention.ms"),
    ("log.message.timestamp.after.max.ms", "message.timestamp.after.max.ms"),
    ("log.message.timestamp.before.max.ms", "message.timestamp.before.max.ms"),
    ("log.message.timestamp.type", "message.timestamp.type"),
    ("log.preallocate", "preallocate"),
    ("log.retention.bytes", "retention.bytes"),
    ("log.retention.ms", "retention.ms"),
    ("log.roll.jitter.ms", "segment.jitter.ms"),
    ("log.roll.ms", "segment.ms"),
    ("log.segment.bytes", "segment.bytes"),
    ("log.segment.delete.delay.ms", "file.delete.delay.ms"),
    ("message.max.bytes", "max.message.bytes"),
    ("min.insync.replicas", "min.insync.replicas"),
    ("unclean.leader.election.enable", "unclean.leader.election.enable"),
];

/// The topic config a dynamic broker config is the default of.
pub fn topic_key(broker_key: &str) -> Option<&'static ConfigKey> {
    SYNONYMS.iter().find(|(b, _)| *b == broker_key).and_then(|(_, t)| topic_config::lookup(t))
}

/// The broker config that is the default of topic config `topic_key`.
pub fn broker_key(topic_key: &str) -> Option<&'static str> {
    SYNONYMS.iter().find(|(_, t)| *t == topic_key).map(|(b, _)| *b)
}

/// Kafka's default of `retention.ms` (7 days).
pub const KAFKA_RETENTION_MS: i64 = 604_800_000;
/// Kafka's default of `retention.bytes` (no limit).
pub const KAFKA_RETENTION_BYTES: i64 = -1;
/// Kafka's default of `min.cleanable.dirty.ratio`.
pub const KAFKA_MIN_CLEANABLE_DIRTY_RATIO: f64 = 0.5;
/// Kafka's default of `min.compaction.lag.ms`.
pub const KAFKA_MIN_COMPACTION_LAG_MS: i64 = 0;
/// Kafka's default of `max.compaction.lag.ms` (no limit).
pub const KAFKA_MAX_COMPACTION_LAG_MS: i64 = i64::MAX;
/// Kafka's default of `delete.retention.ms` (1 day).
pub const KAFKA_DELETE_RETENTION_MS: i64 = 86_400_000;
/// Kafka's default of `segment.ms` (7 days).
pub const KAFKA_SEGMENT_MS: i64 = 604_800_000;
/// Skiff's default of `segment.bytes`: 64 MiB, not Kafka's 1 GiB, so a compacted topic taking
/// 1 MiB/s rolls its head (and gets its first cleaner pass) within about a minute (RFC 0003).
pub const SKIFF_SEGMENT_BYTES: i64 = 64 * 1024 * 1024;

/// The typed topic configs Skiff acts on, as in effect for one topic on this broker
/// ([`BrokerDefaults::effective`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EffectiveTopicConfig {
    pub retention_ms: i64,
    pub retention_bytes: i64,
    pub max_message_bytes: usize,
    pub message_timestamp_type: TimestampType,
    pub cleanup_policy: CleanupPolicy,
    // The log cleaner's (compacted topics).
    pub min_cleanable_dirty_ratio: f64,
    pub min_compaction_lag_ms: i64,
    pub max_compaction_lag_ms: i64,
    pub delete_retention_ms: i64,
    pub segment_ms: i64,
    pub segment_bytes: i64,
}

impl EffectiveTopicConfig {
    /// True if batches are stamped with the broker's clock.
    pub fn log_append_time(&self) -> bool {
        self.message_timestamp_type == TimestampType::LogAppendTime
    }
}

/// One value in a precedence chain: (config name, value, source).
pub type Synonym = (String, Option<String>, i8);

/// The dynamic broker configs as one broker sees them, plus its static `message.max.bytes`.
pub struct BrokerDefaults<'a> {
    configs: &'a ConfigsState,
    broker_id: i32,
    static_message_max_bytes: i32,
}

impl<'a> BrokerDefaults<'a> {
    pub fn new(configs: &'a ConfigsState, broker_id: i32, static_message_max_bytes: i32) -> Self {
        Self { configs, broker_id, static_message_max_bytes }
    }

    /// The chain of values topic config `k` falls back to when a topic does not set it, most
    /// important first; never empty (it ends with Kafka's default, if there is one).
    pub fn chain(&self, k: &ConfigKey) -> Vec<Synonym> {
        let mut out = Vec::new();
        if let Some(b) = broker_key(k.name) {
            let per_broker = self.configs.broker(&self.broker_id.to_string()).and_then(|c| c.get(b));
            if let Some(v) = per_broker {
                out.push((b.to_string(), Some(v.clone()), SOURCE_DYNAMIC_BROKER));
            }
            if let Some(v) = self.configs.broker("").and_then(|c| c.get(b)) {
                out.push((b.to_string(), Some(v.clone()), SOURCE_DYNAMIC_DEFAULT_BROKER));
            }
            if b == "message.max.bytes" && self.static_message_max_bytes != KAFKA_MESSAGE_MAX_BYTES {
                out.push((b.to_string(), Some(self.static_message_max_bytes.to_string()), SOURCE_STATIC_BROKER));
            }
        }
        let default_name = broker_key(k.name).unwrap_or(k.name);
        out.push((default_name.to_string(), topic_config::default_value(k).map(str::to_string), SOURCE_DEFAULT));
        out
    }

    /// Value and source of topic config `k` for a topic with `configs`, and the synonyms in
    /// precedence order (the topic's own value first, if set).
    pub fn resolve(&self, configs: &BTreeMap<String, String>, k: &ConfigKey) -> (Option<String>, i8, Vec<Synonym>) {
        let mut chain = self.chain(k);
        if let Some(v) = configs.get(k.name) {
            chain.insert(0, (k.name.to_string(), Some(v.clone()), SOURCE_TOPIC));
        }
        let (_, value, source) = chain[0].clone();
        (value, source, chain)
    }

    /// The value of topic config `name` in effect for a topic with `configs`.
    pub fn value(&self, configs: &BTreeMap<String, String>, name: &str) -> Option<String> {
        match configs.get(name) {
            Some(v) => Some(v.clone()),
            None => topic_config::lookup(name).and_then(|k| self.chain(k).swap_remove(0).1),
        }
    }

    /// [`Self::value`] as a number; `default` if unset or unparsable.
    pub fn value_i64(&self, configs: &BTreeMap<String, String>, name: &str, default: i64) -> i64 {
        self.value(configs, name).and_then(|v| v.trim().parse().ok()).unwrap_or(default)
    }

    /// The values in effect for a topic whose typed configs are `topic` ([`TopicView::config`]):
    /// the same precedence as [`Self::chain`], over values parsed when they were applied, so
    /// the produce path and retention parse no strings. A level whose stored value did not
    /// parse counts as unset (values are validated before they are stored, so that only
    /// happens to a value no check of today's accepted).
    ///
    /// [`TopicView::config`]: skiff_controller::image::TopicView::config
    pub fn effective(&self, topic: &TopicConfig) -> EffectiveTopicConfig {
        let set =
            topic.or(self.configs.broker_topic_defaults(self.broker_id)).or(self.configs.cluster_topic_defaults());
        EffectiveTopicConfig {
            retention_ms: set.retention_ms.unwrap_or(KAFKA_RETENTION_MS),
            retention_bytes: set.retention_bytes.unwrap_or(KAFKA_RETENTION_BYTES),
            // The static `message.max.bytes` is the last level before Kafka's default (which is
            // what it is unless configured).
            max_message_bytes: set.max_message_bytes.unwrap_or(self.static_message_max_bytes).max(0) as usize,
            message_timestamp_type: set.message_timestamp_type.unwrap_or(TimestampType::CreateTime),
            cleanup_policy: set.cleanup_policy.unwrap_or(CleanupPolicy::Delete),
            min_cleanable_dirty_ratio: set.min_cleanable_dirty_ratio.unwrap_or(KAFKA_MIN_CLEANABLE_DIRTY_RATIO),
            min_compaction_lag_ms: set.min_compaction_lag_ms.unwrap_or(KAFKA_MIN_COMPACTION_LAG_MS),
            max_compaction_lag_ms: set.max_compaction_lag_ms.unwrap_or(KAFKA_MAX_COMPACTION_LAG_MS),
            delete_retention_ms: set.delete_retention_ms.unwrap_or(KAFKA_DELETE_RETENTION_MS),
            segment_ms: set.segment_ms.unwrap_or(KAFKA_SEGMENT_MS),
            segment_bytes: set.segment_bytes.unwrap_or(SKIFF_SEGMENT_BYTES),
        }
    }

    /// `max.message.bytes` in effect for a topic with `configs` (a raw map: parses it; the
    /// produce path uses [`Self::effective`]).
    pub fn max_message_bytes(&self, configs: &BTreeMap<String, String>) -> usize {
        self.effective(&TopicConfig::from_topic(configs)).max_message_bytes
    }

    /// True if a topic with `configs` stamps batches with the broker's clock (a raw map:
    /// parses it; the produce path uses [`Self::effective`]).
    pub fn log_append_time(&self, configs: &BTreeMap<String, String>) -> bool {
        self.effective(&TopicConfig::from_topic(configs)).log_append_time()
    }

    /// Value and source of dynamic broker config `broker_key` as this broker sees it.
    pub fn broker_value(&self, broker_key: &str) -> Option<(String, i8, Vec<Synonym>)> {
        let k = topic_key(broker_key)?;
        let chain = self.chain(k);
        let (_, value, source) = chain[0].clone();
        Some((value.unwrap_or_default(), source, chain))
    }
}

/// Checks a dynamic broker config change (the resource's complete new set) the way Kafka's
/// `DynamicBrokerConfig.validateConfigs` does; the error is Kafka's INVALID_REQUEST message.
pub fn validate(configs: &BTreeMap<String, String>) -> Result<(), String> {
    let not_dynamic: Vec<&str> = configs.keys().map(String::as_str).filter(|k| topic_key(k).is_none()).collect();
    if !not_dynamic.is_empty() {
        return Err(format!("Cannot update these configs dynamically: Set({})", not_dynamic.join(", ")));
    }
    for (name, value) in configs {
        if let Some(k) = topic_key(name) {
            topic_config::validate_value(k, name, value)?;
        }
    }
    Ok(())
}

/// Whether `name` is a broker resource name: `""` (the cluster default) or a broker id.
pub fn valid_resource_name(name: &str) -> bool {
    name.is_empty() || name.parse::<i32>().is_ok_and(|id| id >= 0)
}

#[cfg(test)]
mod tests {
    use skiff_controller::intent::{ConfigChange, ConfigResource};

    use super::*;

    fn map(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn every_synonym_names_a_known_topic_config() {
        for (b, t) in SYNONYMS {
            assert!(topic_config::lookup(t).is_some(), "{b} -> {t}");
        }
    }

    #[test]
    fn precedence_topic_then_broker_then_cluster_then_static_then_default() {
        let mut state = ConfigsState::default();
        let d = BrokerDefaults::new(&state, 1, 2000);
        assert_eq!(d.max_message_bytes(&BTreeMap::new()), 2000);
        assert_eq!(d.value(&BTreeMap::new(), "retention.ms").as_deref(), Some("604800000"));
        let set = |name: &str, configs| ConfigChange { resource: ConfigResource::Broker(name.into()), configs };
        state.apply(&set("", map(&[("log.retention.ms", "1000"), ("message.max.bytes", "300")]))).expect("set");
        state.apply(&set("1", map(&[("message.max.bytes", "100")]))).expect("set");
        let d = BrokerDefaults::new(&state, 1, 2000);
        assert_eq!(d.max_message_bytes(&BTreeMap::new()), 100);
        assert_eq!(BrokerDefaults::new(&state, 2, 2000).max_message_bytes(&BTreeMap::new()), 300);
        assert_eq!(d.max_message_bytes(&map(&[("max.message.bytes", "7")])), 7);
        let k = topic_config::lookup("retention.ms").expect("known");
        let (value, source, synonyms) = d.resolve(&BTreeMap::new(), k);
        assert_eq!((value.as_deref(), source), (Some("1000"), SOURCE_DYNAMIC_DEFAULT_BROKER));
        assert_eq!(
            synonyms.iter().map(|s| s.2).collect::<Vec<_>>(),
            vec![SOURCE_DYNAMIC_DEFAULT_BROKER, SOURCE_DEFAULT]
        );
        let (_, source, _) = d.resolve(&BTreeMap::new(), topic_config::lookup("max.message.bytes").expect("known"));
        assert_eq!(source, SOURCE_DYNAMIC_BROKER);
        assert_eq!(
            d.broker_value("log.retention.ms").map(|v| (v.0, v.1)),
            Some(("1000".into(), SOURCE_DYNAMIC_DEFAULT_BROKER))
        );
    }

    #[test]
    fn typed_names_and_defaults_match_the_string_tables() {
        use skiff_controller::topic_config as typed;
        for (topic, broker) in [
            typed::RETENTION_MS,
            typed::RETENTION_BYTES,
            typed::MAX_MESSAGE_BYTES,
            typed::MESSAGE_TIMESTAMP_TYPE,
            typed::CLEANUP_POLICY,
            typed::MIN_CLEANABLE_DIRTY_RATIO,
            typed::MIN_COMPACTION_LAG_MS,
            typed::MAX_COMPACTION_LAG_MS,
            typed::DELETE_RETENTION_MS,
            typed::SEGMENT_MS,
            typed::SEGMENT_BYTES,
        ] {
            assert_eq!(broker_key(topic), Some(broker), "{topic}");
        }
        // Kafka's defaults, typed, are what DescribeConfigs reports as the defaults.
        let kafka: BTreeMap<String, String> = topic_config::TOPIC_CONFIGS
            .iter()
            .filter_map(|k| Some((k.name.to_string(), topic_config::default_value(k)?.to_string())))
            .collect();
        let d = ConfigsState::default();
        let d = BrokerDefaults::new(&d, 1, KAFKA_MESSAGE_MAX_BYTES);
        assert_eq!(d.effective(&TopicConfig::from_topic(&kafka)), d.effective(&TopicConfig::EMPTY));
    }

    /// Every typed field follows the string chain's precedence: topic, this broker's dynamic
    /// value, the cluster's dynamic default, the static setting, Kafka's default.
    #[test]
    fn typed_precedence_matches_the_string_chain() {
        let set = |name: &str, configs| ConfigChange { resource: ConfigResource::Broker(name.into()), configs };
        let mut state = ConfigsState::default();
        let kafka = BrokerDefaults::new(&state, 1, KAFKA_MESSAGE_MAX_BYTES).effective(&TopicConfig::EMPTY);
        assert_eq!(
            kafka,
            EffectiveTopicConfig {
                retention_ms: 604_800_000,
                retention_bytes: -1,
                max_message_bytes: KAFKA_MESSAGE_MAX_BYTES as usize,
                message_timestamp_type: TimestampType::CreateTime,
                cleanup_policy: CleanupPolicy::Delete,
                min_cleanable_dirty_ratio: 0.5,
                min_compaction_lag_ms: 0,
                max_compaction_lag_ms: i64::MAX,
                delete_retention_ms: 86_400_000,
                segment_ms: 604_800_000,
                segment_bytes: 67_108_864,
            }
        );
        assert_eq!(BrokerDefaults::new(&state, 1, 2000).effective(&TopicConfig::EMPTY).max_message_bytes, 2000);
        state
            .apply(&set(
                "",
                map(&[
                    ("log.retention.ms", "1000"),
                    ("log.retention.bytes", "50"),
                    ("message.max.bytes", "300"),
                    ("log.message.timestamp.type", "LogAppendTime"),
                    ("log.cleanup.policy", "compact"),
                ]),
            ))
            .expect("set");
        state.apply(&set("1", map(&[("log.retention.ms", "10"), ("message.max.bytes", "100")]))).expect("set");
        // "01" is not how broker 1 names its resource (the string chain looks up "1" too).
        state.apply(&set("01", map(&[("log.retention.bytes", "1")]))).expect("set");
        let d = BrokerDefaults::new(&state, 1, 2000);
        let e = d.effective(&TopicConfig::EMPTY);
        assert_eq!((e.retention_ms, e.retention_bytes, e.max_message_bytes), (10, 50, 100));
        assert_eq!(e.message_timestamp_type, TimestampType::LogAppendTime);
        assert_eq!(e.cleanup_policy, CleanupPolicy::Compact);
        let e2 = BrokerDefaults::new(&state, 2, 2000).effective(&TopicConfig::EMPTY);
        assert_eq!((e2.retention_ms, e2.retention_bytes, e2.max_message_bytes), (1000, 50, 300));
        let topic = TopicConfig::from_topic(&map(&[
            ("retention.ms", "7"),
            ("retention.bytes", "8"),
            ("max.message.bytes", "9"),
            ("message.timestamp.type", "CreateTime"),
            ("cleanup.policy", "delete"),
        ]));
        let e = d.effective(&topic);
        assert_eq!((e.retention_ms, e.retention_bytes, e.max_message_bytes), (7, 8, 9));
        assert!(!e.log_append_time());
        assert_eq!(e.cleanup_policy, CleanupPolicy::Delete);
        // Each typed value is the one the string chain resolves.
        for (topic_configs, broker_id) in
            [(BTreeMap::new(), 1), (BTreeMap::new(), 2), (map(&[("retention.ms", "7")]), 1)]
        {
            let d = BrokerDefaults::new(&state, broker_id, 2000);
            let e = d.effective(&TopicConfig::from_topic(&topic_configs));
            assert_eq!(Some(e.retention_ms.to_string()), d.value(&topic_configs, "retention.ms"));
            assert_eq!(Some(e.retention_bytes.to_string()), d.value(&topic_configs, "retention.bytes"));
            assert_eq!(Some(e.max_message_bytes.to_string()), d.value(&topic_configs, "max.message.bytes"));
            let ts = d.value(&topic_configs, "message.timestamp.type");
            assert_eq!(ts.as_deref() == Some("LogAppendTime"), e.log_append_time());
        }
    }

    /// The cleaner's configs follow the same precedence: topic, broker, cluster, default.
    #[test]
    fn cleaner_configs_resolve_through_their_broker_synonyms() {
        let set = |name: &str, configs| ConfigChange { resource: ConfigResource::Broker(name.into()), configs };
        let mut state = ConfigsState::default();
        state
            .apply(&set(
                "",
                map(&[
                    ("log.cleaner.min.cleanable.ratio", "0.1"),
                    ("log.cleaner.delete.retention.ms", "100"),
                    ("log.segment.bytes", "2097152"),
                ]),
            ))
            .expect("set");
        state
            .apply(&set("1", map(&[("log.cleaner.min.compaction.lag.ms", "5"), ("log.roll.ms", "60000")])))
            .expect("set");
        let d = BrokerDefaults::new(&state, 1, KAFKA_MESSAGE_MAX_BYTES);
        let e = d.effective(&TopicConfig::from_topic(&map(&[("max.compaction.lag.ms", "9000")])));
        assert_eq!(e.min_cleanable_dirty_ratio, 0.1);
        assert_eq!((e.min_compaction_lag_ms, e.max_compaction_lag_ms, e.delete_retention_ms), (5, 9000, 100));
        assert_eq!((e.segment_ms, e.segment_bytes), (60_000, 2_097_152));
        let e2 = BrokerDefaults::new(&state, 2, KAFKA_MESSAGE_MAX_BYTES).effective(&TopicConfig::EMPTY);
        assert_eq!((e2.min_compaction_lag_ms, e2.segment_ms), (0, 604_800_000));
    }

    #[test]
    fn static_and_unknown_configs_are_refused_by_name() {
        assert!(validate(&map(&[("log.retention.ms", "5000"), ("message.max.bytes", "2000")])).is_ok());
        assert_eq!(
            validate(&map(&[("auto.create.topics.enable", "false"), ("log.retention.ms", "5")])),
            Err("Cannot update these configs dynamically: Set(auto.create.topics.enable)".into())
        );
        assert!(validate(&map(&[("log.cleaner.enable", "true")])).is_err());
        assert!(validate(&map(&[("log.cleaner.delete.retention.ms", "5")])).is_ok());
        assert!(validate(&map(&[("log.retention.ms", "soon")])).expect_err("bad").contains("log.retention.ms"));
        assert!(valid_resource_name("") && valid_resource_name("3") && !valid_resource_name("x"));
    }
}
