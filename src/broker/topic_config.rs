//! Topic configs: the known keys, their defaults, validation, and what Skiff does with them.
//!
//! DescribeConfigs returns every key here with its value and source. Keys Skiff enforces:
//! `max.message.bytes`, `message.timestamp.type`, `retention.ms`, `retention.bytes` (retention
//! runs with the storage engine), and `cleanup.policy` with the log cleaner's keys
//! (`min.cleanable.dirty.ratio`, `{min,max}.compaction.lag.ms`, `delete.retention.ms`,
//! `segment.ms`, `segment.bytes`; RFC 0003). The rest are accepted and stored so Kafka tooling
//! works, and documented as having no effect on a broker without local segments.
//!
//! Validation is Kafka 4.x's `LogConfig` (its `ConfigDef` validators and messages, then
//! `LogConfig.validateValues` over the resulting config), checked against Kafka 4.4's own
//! `LogConfig.validate`. One deliberate difference: an empty `cleanup.policy` (Kafka 4.1+: no
//! cleanup at all) is refused, as Skiff has no such mode.

use std::collections::BTreeMap;
use std::fmt;

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
    /// A double in `[min, max]`.
    Double {
        min: f64,
        max: f64,
    },
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

/// Skiff's default `segment.bytes` (`log.segment.bytes`), 64 MiB where Kafka's is 1 GiB. On a
/// compacted topic the head is never cleaned until it rolls, and it rolls at this size (or
/// `segment.ms`): with Kafka's 1 GiB a topic written at 1 MiB/s would wait 17 minutes before
/// its first clean. Delete-policy topics do not use it (retention works on chunks).
pub const DEFAULT_SEGMENT_BYTES: i32 = 64 * 1024 * 1024;

/// Kafka 4.x topic configs (`kafka-configs --describe --all` for a topic).
pub const TOPIC_CONFIGS: &[ConfigKey] = &[
    key("cleanup.policy", "delete", Kind::List(&["compact", "delete"])),
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
    key("min.cleanable.dirty.ratio", "0.5", Kind::Double { min: 0.0, max: 1.0 }),
    key("min.compaction.lag.ms", "0", Kind::Long { min: 0 }),
    key("min.insync.replicas", "1", Kind::Int { min: 1 }),
    key("preallocate", "false", Kind::Bool),
    key("remote.storage.enable", "false", Kind::Bool),
    key("retention.bytes", "-1", Kind::Long { min: -1 }),
    key("retention.ms", "604800000", Kind::Long { min: -1 }),
    // DEFAULT_SEGMENT_BYTES; Kafka 4.x's minimum (1 MiB; it was 14 bytes before 4.0).
    key("segment.bytes", "67108864", Kind::Int { min: 1_048_576 }),
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
/// synonym's, `src/broker/dynamic_config.rs`). The messages are Kafka's `ConfigDef` ones.
pub fn validate_value(k: &ConfigKey, name: &str, value: &str) -> Result<(), String> {
    let bad = |value: &str, why: &str| Err(format!("Invalid value {value} for configuration {name}: {why}"));
    match k.kind {
        Kind::Long { min } | Kind::Int { min } => {
            let int = matches!(k.kind, Kind::Int { .. });
            match value.trim().parse::<i64>() {
                Ok(v) if int && i32::try_from(v).is_err() => bad(value, "Not a number of type INT"),
                Ok(v) if v < min => bad(value, &format!("Value must be at least {min}")),
                Ok(_) => Ok(()),
                Err(_) => bad(value, if int { "Not a number of type INT" } else { "Not a number of type LONG" }),
            }
        }
        Kind::Bool => match value.trim().to_ascii_lowercase().as_str() {
            "true" | "false" => Ok(()),
            _ => bad(value, "Expected value to be either true or false"),
        },
        Kind::Double { min, max } => match value.trim().parse::<f64>() {
            // Kafka's range check lets NaN through (every comparison with it is false); a ratio
            // nothing can reach is refused here instead.
            Ok(v) if v.is_nan() => bad(value, "Not a number of type DOUBLE"),
            Ok(v) if v < min => bad(value, &format!("Value must be at least {min}")),
            Ok(v) if v > max => bad(value, &format!("Value must be no more than {max}")),
            Ok(_) => Ok(()),
            Err(_) => bad(value, "Not a number of type DOUBLE"),
        },
        Kind::Choice(choices) => {
            if choices.contains(&value.trim()) {
                Ok(())
            } else {
                bad(value, &format!("String must be one of: {}", choices.join(", ")))
            }
        }
        // A list with no fixed choices (the throttled-replica lists) is stored as given.
        Kind::List([]) => Ok(()),
        // Kafka's `ValidList.in`: items trimmed, case-sensitive, repeats allowed, none empty.
        Kind::List(choices) => {
            if value.trim().is_empty() {
                return bad(
                    value,
                    "an empty list (no cleanup at all, Kafka 4.1+) is not supported by Skiff; \
                     use delete with retention.ms=-1 and retention.bytes=-1 to keep everything",
                );
            }
            for item in value.split(',').map(str::trim) {
                if item.is_empty() {
                    return Err(format!("Configuration '{name}' values must not be empty."));
                }
                if !choices.contains(&item) {
                    return bad(item, &format!("String must be one of: {}", choices.join(", ")));
                }
            }
            Ok(())
        }
    }
}

/// A config value a request may not set: the config, the value, and Kafka's message (which is
/// what the client is told).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidConfig {
    pub name: String,
    pub value: String,
    pub message: String,
}

impl fmt::Display for InvalidConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Checks a topic's complete resulting config set (a new topic's, or an existing one's after an
/// alter): every key and value, then Kafka's cross-key rule (`LogConfig.validateValues`)
/// over the values in effect, `inherited` giving the value a key falls back to when the topic
/// does not set it (the broker's defaults).
pub fn validate_topic(
    configs: &BTreeMap<String, String>,
    inherited: impl Fn(&ConfigKey) -> Option<String>,
) -> Result<(), InvalidConfig> {
    for (name, value) in configs {
        validate(name, value).map_err(|message| InvalidConfig { name: name.clone(), value: value.clone(), message })?;
    }
    let effective = |name: &str, fallback: i64| {
        let set = configs.get(name).cloned();
        let value = set.clone().or_else(|| lookup(name).and_then(&inherited));
        (set.is_some(), value.and_then(|v| v.trim().parse::<i64>().ok()).unwrap_or(fallback))
    };
    let (min_set, min_lag) = effective("min.compaction.lag.ms", 0);
    let (_, max_lag) = effective("max.compaction.lag.ms", i64::MAX);
    if min_lag > max_lag {
        // Blame the one the request set (min if both).
        let name = if min_set { "min.compaction.lag.ms" } else { "max.compaction.lag.ms" };
        return Err(InvalidConfig {
            name: name.to_string(),
            value: if min_set { min_lag } else { max_lag }.to_string(),
            message: format!(
                "conflict topic config setting min.compaction.lag.ms ({min_lag}) > max.compaction.lag.ms ({max_lag})"
            ),
        });
    }
    Ok(())
}

/// Kafka's ConfigType code for DescribeConfigs v3+: BOOLEAN 1, STRING 2, INT 3, LONG 5,
/// DOUBLE 6, LIST 7.
pub fn config_type(k: &ConfigKey) -> i8 {
    match k.kind {
        Kind::Bool => 1,
        Kind::Choice(_) => 2,
        Kind::Int { .. } => 3,
        Kind::Long { .. } => 5,
        Kind::Double { .. } => 6,
        Kind::List(_) => 7,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn no_defaults(_: &ConfigKey) -> Option<String> {
        None
    }

    #[test]
    fn validation() {
        assert!(validate("retention.ms", "1000").is_ok());
        assert!(validate("retention.ms", "-5").is_err());
        assert!(validate("retention.ms", "abc").is_err());
        assert!(validate("message.timestamp.type", "LogAppendTime").is_ok());
        assert!(validate("message.timestamp.type", "Other").is_err());
        assert!(validate("no.such.key", "1").is_err());
        assert!(validate("max.message.bytes", "99999999999").is_err());
    }

    /// Each expected message is what Kafka 4.4's `LogConfig.validate` says for the same input.
    #[test]
    fn messages_are_kafkas() {
        let cases = [
            (
                "cleanup.policy",
                "Compact",
                "Invalid value Compact for configuration cleanup.policy: String must be one of: compact, delete",
            ),
            (
                "cleanup.policy",
                "compact,foo",
                "Invalid value foo for configuration cleanup.policy: String must be one of: compact, delete",
            ),
            ("cleanup.policy", "compact,", "Configuration 'cleanup.policy' values must not be empty."),
            ("cleanup.policy", "compact,,delete", "Configuration 'cleanup.policy' values must not be empty."),
            (
                "min.cleanable.dirty.ratio",
                "1.5",
                "Invalid value 1.5 for configuration min.cleanable.dirty.ratio: Value must be no more than 1",
            ),
            (
                "min.cleanable.dirty.ratio",
                "-0.1",
                "Invalid value -0.1 for configuration min.cleanable.dirty.ratio: Value must be at least 0",
            ),
            (
                "min.cleanable.dirty.ratio",
                "abc",
                "Invalid value abc for configuration min.cleanable.dirty.ratio: Not a number of type DOUBLE",
            ),
            (
                "min.compaction.lag.ms",
                "-1",
                "Invalid value -1 for configuration min.compaction.lag.ms: Value must be at least 0",
            ),
            (
                "max.compaction.lag.ms",
                "0",
                "Invalid value 0 for configuration max.compaction.lag.ms: Value must be at least 1",
            ),
            (
                "delete.retention.ms",
                "-1",
                "Invalid value -1 for configuration delete.retention.ms: Value must be at least 0",
            ),
            ("segment.ms", "0", "Invalid value 0 for configuration segment.ms: Value must be at least 1"),
            ("segment.bytes", "14", "Invalid value 14 for configuration segment.bytes: Value must be at least 1048576"),
            (
                "segment.bytes",
                "1048575",
                "Invalid value 1048575 for configuration segment.bytes: Value must be at least 1048576",
            ),
            ("retention.ms", "abc", "Invalid value abc for configuration retention.ms: Not a number of type LONG"),
            (
                "max.message.bytes",
                "99999999999",
                "Invalid value 99999999999 for configuration max.message.bytes: Not a number of type INT",
            ),
            (
                "preallocate",
                "maybe",
                "Invalid value maybe for configuration preallocate: Expected value to be either true or false",
            ),
            (
                "message.timestamp.type",
                "Other",
                "Invalid value Other for configuration message.timestamp.type: String must be one of: CreateTime, LogAppendTime",
            ),
        ];
        for (name, value, message) in cases {
            assert_eq!(validate(name, value), Err(message.to_string()), "{name}={value}");
        }
    }

    #[test]
    fn cleanup_policy_accepts_kafkas_lists() {
        for ok in ["delete", "compact", "compact,delete", "delete,compact", " delete , compact ", "delete,delete"] {
            assert_eq!(validate("cleanup.policy", ok), Ok(()), "{ok:?}");
        }
        assert!(validate("cleanup.policy", "").is_err(), "no-cleanup mode is not built");
    }

    #[test]
    fn compaction_keys_bounds() {
        for ok in ["0", "1", "0.5", " 0.3 ", "1e-1"] {
            assert_eq!(validate("min.cleanable.dirty.ratio", ok), Ok(()), "{ok:?}");
        }
        assert!(validate("min.cleanable.dirty.ratio", "NaN").is_err());
        assert!(validate("min.cleanable.dirty.ratio", "inf").is_err());
        assert!(validate("min.compaction.lag.ms", "0").is_ok());
        assert!(validate("max.compaction.lag.ms", "1").is_ok());
        assert!(validate("delete.retention.ms", "0").is_ok());
        assert!(validate("segment.ms", "1").is_ok());
        assert!(validate("segment.bytes", "1048576").is_ok());
        assert!(validate("segment.bytes", "2147483648").is_err(), "an INT");
        let default = lookup("segment.bytes").and_then(default_value);
        assert_eq!(default, Some(DEFAULT_SEGMENT_BYTES.to_string().as_str()));
    }

    #[test]
    fn min_lag_above_max_lag_is_refused_on_the_resulting_config() {
        let e = validate_topic(&map(&[("min.compaction.lag.ms", "100"), ("max.compaction.lag.ms", "50")]), no_defaults)
            .expect_err("min > max");
        assert_eq!(e.message, "conflict topic config setting min.compaction.lag.ms (100) > max.compaction.lag.ms (50)");
        assert_eq!((e.name.as_str(), e.value.as_str()), ("min.compaction.lag.ms", "100"));
        let equal = map(&[("min.compaction.lag.ms", "100"), ("max.compaction.lag.ms", "100")]);
        assert_eq!(validate_topic(&equal, no_defaults), Ok(()));
        // Only the max set, below an inherited min: blamed on the max.
        let inherited = |k: &ConfigKey| (k.name == "min.compaction.lag.ms").then(|| "500".to_string());
        let e = validate_topic(&map(&[("max.compaction.lag.ms", "400")]), inherited).expect_err("min > max");
        assert_eq!((e.name.as_str(), e.value.as_str()), ("max.compaction.lag.ms", "400"));
        assert_eq!(validate_topic(&map(&[("min.compaction.lag.ms", "5")]), no_defaults), Ok(()));
    }

    #[test]
    fn each_key_checked_first_with_name_and_value() {
        let e = validate_topic(&map(&[("cleanup.policy", "compact"), ("min.cleanable.dirty.ratio", "2")]), no_defaults)
            .expect_err("bad ratio");
        assert_eq!((e.name.as_str(), e.value.as_str()), ("min.cleanable.dirty.ratio", "2"));
        assert_eq!(validate_topic(&map(&[("cleanup.policy", "compact,delete")]), no_defaults), Ok(()));
    }
}
