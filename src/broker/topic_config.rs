//! Topic configs: the known keys, their defaults, validation, and what Skiff does with them.
//!
//! DescribeConfigs returns every key here with its value and source. Keys Skiff enforces:
//! `max.message.bytes`, `message.timestamp.type`, `retention.ms`, `retention.bytes` (retention
//! runs with the storage engine). The rest are accepted and stored so Kafka tooling works, and
//! documented as having no effect on a broker without local segments.

/// What a config key accepts.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Long {
        min: i64,
    },
    Int {
        min: i64,
    },
    Bool,
    Double,
    Choice(&'static [&'static str]),
    /// Comma separated list of choices.
    List(&'static [&'static str]),
}

/// One known topic config.
pub struct ConfigKey {
    pub name: &'static str,
    /// Default as Kafka renders it; `None` renders as null.
    default: Option<&'static str>,
    kind: Kind,
    pub sensitive: bool,
}

const fn key(name: &'static str, default: &'static str, kind: Kind) -> ConfigKey {
    ConfigKey { name, default: Some(default), kind, sensitive: false }
}

/// Kafka 4.x topic configs (`kafka-configs --describe --all` for a topic).
pub const TOPIC_CONFIGS: &[ConfigKey] = &[
    key("cleanup.policy", "delete", Kind::List(&["delete"])),
    key("compression.gzip.level", "-1", Kind::Int { min: -1 }),
    key("compression.lz4.level", "9", Kind::Int { min: 1 }),
    key("compression.type", "producer", Kind::Choice(&["uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"])),
    key("compression.zstd.level", "3", Kind::Int { min: -131072 }),
    key("delete.retention.ms", "86400000", Kind::Long { min: 0 }),
    key("file.delete.delay.ms", "60000", Kind::Long { min: 0 }),
    key("flush.messages", "9223372036854775807", Kind::Long { min: 1 }),
    key("flush.ms", "9223372036854775807", Kind::Long { min: 0 }),
    key("follower.replication.throttled.replicas", "", Kind::List(&[])),
    key("index.interval.bytes", "4096", Kind::Int { min: 0 }),
    key("leader.replication.throttled.replicas", "", Kind::List(&[])),
    key("local.retention.bytes", "-2", Kind::Long { min: -2 }),
    key("local.retention.ms", "-2", Kind::Long { min: -2 }),
    key("max.compaction.lag.ms", "9223372036854775807", Kind::Long { min: 1 }),
    key("max.message.bytes", "1048588", Kind::Int { min: 0 }),
    key("message.timestamp.after.max.ms", "3600000", Kind::Long { min: 0 }),
    key("message.timestamp.before.max.ms", "9223372036854775807", Kind::Long { min: 0 }),
    key("message.timestamp.type", "CreateTime", Kind::Choice(&["CreateTime", "LogAppendTime"])),
    key("min.cleanable.dirty.ratio", "0.5", Kind::Double),
    key("min.compaction.lag.ms", "0", Kind::Long { min: 0 }),
    key("min.insync.replicas", "1", Kind::Int { min: 1 }),
    key("preallocate", "false", Kind::Bool),
    key("remote.storage.enable", "false", Kind::Bool),
    key("retention.bytes", "-1", Kind::Long { min: -1 }),
    key("retention.ms", "604800000", Kind::Long { min: -1 }),
    key("segment.bytes", "1073741824", Kind::Int { min: 1_048_576 }),
    key("segment.index.bytes", "10485760", Kind::Int { min: 4 }),
    key("segment.jitter.ms", "0", Kind::Long { min: 0 }),
    key("segment.ms", "604800000", Kind::Long { min: 1 }),
    key("unclean.leader.election.enable", "false", Kind::Bool),
];

pub fn lookup(name: &str) -> Option<&'static ConfigKey> {
    TOPIC_CONFIGS.iter().find(|k| k.name == name)
}

/// Checks one `name = value` pair; the error text goes back to the client.
pub fn validate(name: &str, value: &str) -> Result<(), String> {
    let Some(k) = lookup(name) else {
        return Err(format!("Unknown topic config name: {name}"));
    };
    validate_value(k, name, value)
}

/// Kafka's default of `k`, as DescribeConfigs renders it.
pub fn default_value(k: &ConfigKey) -> Option<&'static str> {
    k.default
}

/// Checks a value for `k` set under the name `name` (the topic config's, or its broker
/// synonym's, `src/broker/dynamic_config.rs`).
pub fn validate_value(k: &ConfigKey, name: &str, value: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("Invalid value {value} for configuration {name}: {why}"));
    match k.kind {
        Kind::Long { min } | Kind::Int { min } => match value.trim().parse::<i64>() {
            Ok(v) if v < min => bad(&format!("value must be at least {min}")),
            Ok(v) if matches!(k.kind, Kind::Int { .. }) && i32::try_from(v).is_err() => bad("not a 32-bit integer"),
            Ok(_) => Ok(()),
            Err(_) => bad("not a number"),
        },
        Kind::Bool => match value.trim().to_ascii_lowercase().as_str() {
            "true" | "false" => Ok(()),
            _ => bad("expected true or false"),
        },
        Kind::Double => value.trim().parse::<f64>().map(|_| ()).or_else(|_| bad("not a number")),
        Kind::Choice(choices) => {
            if choices.contains(&value.trim()) {
                Ok(())
            } else {
                bad(&format!("String must be one of: {}", choices.join(", ")))
            }
        }
        Kind::List(choices) => {
            if name == "cleanup.policy" && value.split(',').any(|v| v.trim() == "compact") {
                return bad("log compaction (cleanup.policy=compact) is not supported by Skiff yet");
            }
            if choices.is_empty() || value.split(',').all(|v| choices.contains(&v.trim())) {
                Ok(())
            } else {
                bad(&format!("values must be among: {}", choices.join(", ")))
            }
        }
    }
}

/// Kafka's ConfigType code for DescribeConfigs v3+: BOOLEAN 1, STRING 2, INT 3, LONG 5,
/// DOUBLE 6, LIST 7.
pub fn config_type(k: &ConfigKey) -> i8 {
    match k.kind {
        Kind::Bool => 1,
        Kind::Choice(_) => 2,
        Kind::Int { .. } => 3,
        Kind::Long { .. } => 5,
        Kind::Double => 6,
        Kind::List(_) => 7,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation() {
        assert!(validate("retention.ms", "1000").is_ok());
        assert!(validate("retention.ms", "-5").is_err());
        assert!(validate("retention.ms", "abc").is_err());
        assert!(validate("message.timestamp.type", "LogAppendTime").is_ok());
        assert!(validate("message.timestamp.type", "Other").is_err());
        assert!(validate("cleanup.policy", "compact").is_err());
        assert!(validate("no.such.key", "1").is_err());
        assert!(validate("max.message.bytes", "99999999999").is_err());
    }
}
