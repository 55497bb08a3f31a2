//! Broker loggers (resource type BROKER_LOGGER) in DescribeConfigs and IncrementalAlterConfigs,
//! as Kafka's `ConfigHelper` and `ConfigAdminManager.validateLogLevelConfigs` handle them:
//! `kafka-configs --entity-type broker-loggers --entity-name <id> --describe / --alter`.
//! The levels themselves live in `src/log_levels.rs`.
//!
//! The resource name must be this broker's id. Describe lists every logger with its level
//! (config source DYNAMIC_BROKER_LOGGER_CONFIG, not read-only, no synonyms). Alter takes SET
//! (a level) and DELETE (back to root's), validates them all, then applies them at once;
//! APPEND and SUBTRACT are refused, as Kafka refuses them.

use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::describe_configs_response::{DescribeConfigsResourceResult, DescribeConfigsResult};
use kafka_protocol::messages::incremental_alter_configs_request::AlterConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::protocol::StrBytes;

use super::errors;
use crate::broker::Broker;
use crate::log_levels::{self, Change, LoggerError};

/// Kafka's `ConfigResource.Type.BROKER_LOGGER`.
pub const RESOURCE_BROKER_LOGGER: i8 = 8;
/// Kafka's `ConfigSource.DYNAMIC_BROKER_LOGGER_CONFIG`.
const SOURCE_DYNAMIC_BROKER_LOGGER: i8 = 6;

/// Why a broker-logger request was refused before reaching the loggers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerLoggerError {
    #[error("Broker id must not be empty")]
    EmptyBrokerId,
    #[error("Unexpected broker id, expected {expected}, but received {received}")]
    OtherBroker { expected: i32, received: String },
    #[error("run-time log levels are not available in this process")]
    Unavailable,
    #[error("{0}")]
    Logger(#[from] LoggerError),
}

fn check_name(broker: &Broker, name: &str) -> Result<&'static log_levels::LogLevels, BrokerLoggerError> {
    let expected = broker.settings.node_id;
    if name.is_empty() {
        return Err(BrokerLoggerError::EmptyBrokerId);
    }
    if name.parse::<i32>().ok() != Some(expected) {
        return Err(BrokerLoggerError::OtherBroker { expected, received: name.to_string() });
    }
    log_levels::global().ok_or(BrokerLoggerError::Unavailable)
}

pub fn describe(broker: &Broker, r: &DescribeConfigsResource) -> DescribeConfigsResult {
    let base = DescribeConfigsResult::default()
        .with_resource_type(r.resource_type)
        .with_resource_name(r.resource_name.clone());
    let levels = match check_name(broker, r.resource_name.as_str()) {
        Ok(l) => l,
        Err(e) => {
            return base
                .with_error_code(errors::broker_logger(&e))
                .with_error_message(Some(StrBytes::from_string(e.to_string())));
        }
    };
    let keys: Option<Vec<&str>> = r.configuration_keys.as_ref().map(|ks| ks.iter().map(|k| k.as_str()).collect());
    let configs = levels
        .loggers()
        .into_iter()
        .filter(|(name, _)| keys.as_ref().is_none_or(|ks| ks.contains(&name.as_str())))
        .map(|(name, level)| {
            DescribeConfigsResourceResult::default()
                .with_name(StrBytes::from_string(name))
                .with_value(Some(StrBytes::from_string(level)))
                .with_read_only(false)
                .with_config_source(SOURCE_DYNAMIC_BROKER_LOGGER)
                .with_is_sensitive(false)
        })
        .collect();
    base.with_error_code(errors::NONE).with_configs(configs)
}

pub fn alter(broker: &Broker, r: &AlterConfigsResource, validate_only: bool) -> AlterConfigsResourceResponse {
    let outcome = check_name(broker, r.resource_name.as_str()).and_then(|levels| {
        let mut changes: Vec<Change> = Vec::with_capacity(r.configs.len());
        for op in &r.configs {
            let name = op.name.to_string();
            match op.config_operation {
                0 => changes.push((name, Some(op.value.as_ref().map(|v| v.to_string()).unwrap_or_default()))),
                1 => changes.push((name, None)),
                2 => return Err(LoggerError::OperationNotAllowed("APPEND").into()),
                _ => return Err(LoggerError::OperationNotAllowed("SUBTRACT").into()),
            }
        }
        levels.apply(&changes, validate_only).map_err(BrokerLoggerError::from)
    });
    let response = AlterConfigsResourceResponse::default()
        .with_resource_type(r.resource_type)
        .with_resource_name(r.resource_name.clone());
    match outcome {
        Ok(()) => response.with_error_code(errors::NONE),
        Err(e) => response
            .with_error_code(errors::broker_logger(&e))
            .with_error_message(Some(StrBytes::from_string(e.to_string()))),
    }
}
