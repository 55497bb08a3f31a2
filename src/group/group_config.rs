//! Consumer-group configs (Kafka's `GROUP` config resource, `GroupConfig`, KIP-848): a group's
//! own `consumer.session.timeout.ms` and `consumer.heartbeat.interval.ms`, overriding the
//! broker's `group.consumer.session.timeout.ms` / `group.consumer.heartbeat.interval.ms`.
//!
//! Stored in the controller (read as `MetadataImage::dynamic_configs().group(..)`); the
//! coordinator reads them at every ConsumerGroupHeartbeat ([`effective`]), so a change applies
//! to the group's next heartbeat without a restart. Validation is Kafka's
//! `GroupConfig.validate`: a value must lie within the broker's `group.consumer.min/max.*`
//! bounds and the session timeout must exceed the heartbeat
//! interval (INVALID_CONFIG with Kafka's messages). The `share.*` and `streams.*` group configs
//! do not apply: Skiff has no share or streams groups.

use std::collections::BTreeMap;

use super::consumer::ConsumerSettings;

pub const SESSION_TIMEOUT_MS: &str = "consumer.session.timeout.ms";
pub const HEARTBEAT_INTERVAL_MS: &str = "consumer.heartbeat.interval.ms";

/// The broker's `group.consumer.*` settings that group configs default to and are bounded by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupBounds {
    pub session_timeout_ms: i32,
    pub heartbeat_interval_ms: i32,
    pub min_session_timeout_ms: i32,
    pub max_session_timeout_ms: i32,
    pub min_heartbeat_interval_ms: i32,
    pub max_heartbeat_interval_ms: i32,
}

/// Every group config with its value and whether the group sets it, in name order.
pub fn entries(bounds: &GroupBounds, set: Option<&BTreeMap<String, String>>) -> Vec<(&'static str, String, bool)> {
    let defaults =
        [(HEARTBEAT_INTERVAL_MS, bounds.heartbeat_interval_ms), (SESSION_TIMEOUT_MS, bounds.session_timeout_ms)];
    defaults
        .into_iter()
        .map(|(name, default)| match set.and_then(|s| s.get(name)) {
            Some(v) => (name, v.clone(), true),
            None => (name, default.to_string(), false),
        })
        .collect()
}

/// Checks a group's complete new config set; the error is Kafka's INVALID_CONFIG message.
pub fn validate(bounds: &GroupBounds, configs: &BTreeMap<String, String>) -> Result<(), String> {
    for name in configs.keys() {
        if name.starts_with("share.") || name.starts_with("streams.") {
            return Err(format!("Group config {name} does not apply: Skiff has no share or streams groups"));
        }
        if name != SESSION_TIMEOUT_MS && name != HEARTBEAT_INTERVAL_MS {
            return Err(format!("Unknown group config name: {name}"));
        }
    }
    let int = |name: &str, default: i32| -> Result<i32, String> {
        let Some(v) = configs.get(name) else { return Ok(default) };
        match v.trim().parse::<i32>() {
            Ok(n) if n >= 1 => Ok(n),
            Ok(_) => Err(format!("Invalid value {v} for configuration {name}: Value must be at least 1")),
            Err(_) => Err(format!("Invalid value {v} for configuration {name}: Not a number of type INT")),
        }
    };
    let heartbeat = int(HEARTBEAT_INTERVAL_MS, bounds.heartbeat_interval_ms)?;
    let session = int(SESSION_TIMEOUT_MS, bounds.session_timeout_ms)?;
    let checks = [
        (
            heartbeat < bounds.min_heartbeat_interval_ms,
            format!(
                "{HEARTBEAT_INTERVAL_MS} must be greater than or equal to group.consumer.min.heartbeat.interval.ms"
            ),
        ),
        (
            heartbeat > bounds.max_heartbeat_interval_ms,
            format!("{HEARTBEAT_INTERVAL_MS} must be less than or equal to group.consumer.max.heartbeat.interval.ms"),
        ),
        (
            session < bounds.min_session_timeout_ms,
            format!("{SESSION_TIMEOUT_MS} must be greater than or equal to group.consumer.min.session.timeout.ms"),
        ),
        (
            session > bounds.max_session_timeout_ms,
            format!("{SESSION_TIMEOUT_MS} must be less than or equal to group.consumer.max.session.timeout.ms"),
        ),
        (session <= heartbeat, format!("{SESSION_TIMEOUT_MS} must be greater than {HEARTBEAT_INTERVAL_MS}")),
    ];
    match checks.into_iter().find(|(failed, _)| *failed) {
        Some((_, message)) => Err(message),
        None => Ok(()),
    }
}

/// The consumer-protocol settings of a group: the broker's, overridden by the group's configs.
pub fn effective(base: ConsumerSettings, set: Option<&BTreeMap<String, String>>) -> ConsumerSettings {
    let Some(set) = set else { return base };
    let get = |name: &str| set.get(name).and_then(|v| v.trim().parse::<i32>().ok()).filter(|v| *v > 0);
    ConsumerSettings {
        session_timeout_ms: get(SESSION_TIMEOUT_MS).unwrap_or(base.session_timeout_ms),
        heartbeat_interval_ms: get(HEARTBEAT_INTERVAL_MS).unwrap_or(base.heartbeat_interval_ms),
        ..base
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KAFKA: GroupBounds = GroupBounds {
        session_timeout_ms: 45_000,
        heartbeat_interval_ms: 5_000,
        min_session_timeout_ms: 45_000,
        max_session_timeout_ms: 60_000,
        min_heartbeat_interval_ms: 5_000,
        max_heartbeat_interval_ms: 15_000,
    };

    fn map(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn validation_follows_kafka_group_config() {
        assert!(validate(&KAFKA, &map(&[(SESSION_TIMEOUT_MS, "50000"), (HEARTBEAT_INTERVAL_MS, "6000")])).is_ok());
        let refused = |kv: &[(&str, &str)]| validate(&KAFKA, &map(kv)).expect_err("refused");
        assert_eq!(
            refused(&[(SESSION_TIMEOUT_MS, "70000")]),
            "consumer.session.timeout.ms must be less than or equal to group.consumer.max.session.timeout.ms"
        );
        assert_eq!(
            refused(&[(HEARTBEAT_INTERVAL_MS, "1000")]),
            "consumer.heartbeat.interval.ms must be greater than or equal to group.consumer.min.heartbeat.interval.ms"
        );
        assert_eq!(refused(&[("consumer.nope", "1")]), "Unknown group config name: consumer.nope");
        assert!(refused(&[(SESSION_TIMEOUT_MS, "x")]).contains("Not a number of type INT"));
        assert!(refused(&[("share.session.timeout.ms", "50000")]).contains("does not apply"));
        let wide = GroupBounds { max_heartbeat_interval_ms: 60_000, ..KAFKA };
        assert_eq!(
            validate(&wide, &map(&[(SESSION_TIMEOUT_MS, "50000"), (HEARTBEAT_INTERVAL_MS, "50000")])),
            Err("consumer.session.timeout.ms must be greater than consumer.heartbeat.interval.ms".into())
        );
    }

    #[test]
    fn group_values_override_the_broker_defaults() {
        let base = ConsumerSettings::default();
        assert_eq!(effective(base, None).heartbeat_interval_ms, base.heartbeat_interval_ms);
        let set = map(&[(HEARTBEAT_INTERVAL_MS, "6000")]);
        let s = effective(base, Some(&set));
        assert_eq!((s.heartbeat_interval_ms, s.session_timeout_ms), (6000, base.session_timeout_ms));
        let e = entries(&KAFKA, Some(&set));
        assert_eq!(e, vec![(HEARTBEAT_INTERVAL_MS, "6000".into(), true), (SESSION_TIMEOUT_MS, "45000".into(), false)]);
    }
}
