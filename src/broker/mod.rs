//! The broker: everything a Kafka handler needs besides protocol types and the partition log
//! (`crate::log`: write path, read path, background work).
//!
//! * [`batch`]: record-batch bytes (validation, in-place offset assignment).
//! * [`records`]: the records inside a batch (decoding any codec, re-encoding a subset: the
//!   log cleaner's rewrite and produce's key check on compacted topics).
//! * [`topic_config`]: known topic configs, defaults and validation.
//! * [`dynamic_config`]: dynamic broker configs (topic defaults changed without a restart).
//! * [`internal_topics`]: `__consumer_offsets` and its partition leaders (never a regular topic).
//!
//! The broker itself holds no durable state: topics, offsets, the object index and producer
//! state all live in the controller's metadata, read through [`MetadataHandle`] (its typed
//! image) and changed through the typed intents of [`ControllerHandle`].

pub mod batch;
pub mod client_rack;
pub mod dynamic_config;
pub mod internal_topics;
pub mod peer_watch;
pub mod records;
pub mod topic_config;

use std::collections::BTreeMap;
use std::sync::Arc;

use skiff_controller::image::MetadataImage;
use skiff_controller::intent::{CreateTopic, Rejection};
use skiff_controller::{ControllerError, ControllerHandle, MetadataHandle};
use uuid::Uuid;

use crate::log::read::Reader;
use crate::log::wal::Wal;
use crate::metrics::Metrics;

/// Settings handlers consult.
#[derive(Debug, Clone)]
pub struct BrokerSettings {
    pub node_id: i32,
    pub advertised_host: String,
    pub advertised_port: i32,
    pub rack: Option<String>,
    pub auto_create_topics: bool,
    pub num_partitions: i32,
    pub message_max_bytes: i32,
    pub socket_request_max_bytes: usize,
    pub flush_bytes: usize,
    pub flush_interval_ms: u64,
    pub prices: crate::metrics::Prices,
    /// The static `group.consumer.*` settings group configs default to and are bounded by.
    pub group_bounds: crate::group::group_config::GroupBounds,
}

/// Time and ids are injected (one definition for every crate: `skiff-time`).
pub use skiff_time::{Clock, Ids, SystemClock};

/// One broker's shared state.
pub struct Broker {
    pub settings: BrokerSettings,
    pub controller: ControllerHandle,
    pub metadata: MetadataHandle,
    pub wal: Arc<Wal>,
    pub reader: Reader,
    pub metrics: Arc<Metrics>,
    pub clock: Arc<dyn Clock>,
    /// Topic ids and other fresh ids.
    pub ids: Arc<dyn Ids>,
    /// The consumer-group coordinator (every group while there is one broker).
    pub groups: crate::group::GroupCoordinator,
    /// The transaction coordinator of the transaction shards placed on this broker.
    pub txns: crate::txn::TxnCoordinator,
    /// Refusals of what Skiff does not serve, logged once per client.
    pub not_served: crate::handler::not_served::NotServed,
    /// Configs refused to clients, logged once per client, resource and value.
    pub rejected_configs: crate::handler::rejected_configs::RejectedConfigs,
    /// Authentication: the failure log and the decoy-salt key (`security/`).
    pub security: crate::security::BrokerSecurity,
    /// Zero cross-zone produce's staging keys (RFC 0005, `handler::zone_produce`).
    pub zone: crate::handler::zone_produce::ZoneLink,
    /// Client quota sensors and connection-creation rates (`quota/`).
    pub quotas: crate::quota::Quotas,
    /// Incremental fetch sessions (KIP-227, `handler::fetch_session`).
    pub fetch_sessions: crate::handler::fetch_session::FetchSessions,
    /// Which peer brokers' processes this broker saw go, before their fence (`peer_watch.rs`).
    pub peers: peer_watch::PeerWatch,
}

/// Why a topic could not be created.
#[derive(Debug, thiserror::Error)]
pub enum CreateTopicError {
    #[error("{0}")]
    InvalidName(String),
    #[error("{0}")]
    InvalidPartitions(String),
    #[error("{0}")]
    InvalidConfig(topic_config::InvalidConfig),
    #[error("Topic '{0}' already exists.")]
    Exists(String),
    #[error("controller unavailable: {0}")]
    Controller(#[from] ControllerError),
    #[error("{0}")]
    Rejected(Rejection),
}

/// Kafka's topic name rule: 1-249 chars of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("Topic name is illegal, it can't be empty".into());
    }
    if name == "." || name == ".." {
        return Err("Topic name cannot be \".\" or \"..\"".into());
    }
    if name.len() > 249 {
        return Err(format!("Topic name is illegal, it can't be longer than 249 characters, topic name: {name}"));
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-') {
        return Err(format!(
            "Topic name \"{name}\" is illegal, it contains a character other than ASCII alphanumerics, '.', '_' and '-'"
        ));
    }
    Ok(())
}

impl Broker {
    /// The dynamic broker configs as this broker sees them in metadata `m`.
    pub fn defaults<'a>(&self, m: &'a MetadataImage) -> dynamic_config::BrokerDefaults<'a> {
        dynamic_config::BrokerDefaults::new(m.dynamic_configs(), self.settings.node_id, self.settings.message_max_bytes)
    }

    /// Whether topic `name` exists: a topic in the image or a synthesized internal topic.
    pub fn topic_exists(&self, name: &str) -> bool {
        internal_topics::is_internal(name) || self.metadata.read(|m| m.topic_exists(name))
    }

    /// Validates and (unless `validate_only`) creates a topic through the controller.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<Uuid, CreateTopicError> {
        self.create_topic_assigned(name, partitions, configs, Vec::new(), validate_only).await
    }

    /// [`Self::create_topic`] with manual replica lists, one per partition (`partitions` is
    /// then their count); empty: placed by the controller.
    pub async fn create_topic_assigned(
        &self,
        name: &str,
        partitions: i32,
        configs: BTreeMap<String, String>,
        assignments: Vec<Vec<i32>>,
        validate_only: bool,
    ) -> Result<Uuid, CreateTopicError> {
        validate_topic_name(name).map_err(CreateTopicError::InvalidName)?;
        // Existence first, as Kafka's controller (ReplicationControlManager.createTopics): an
        // existing name (an internal topic always exists) answers TOPIC_ALREADY_EXISTS whatever
        // the request's partitions and configs, with or without validate_only, so a client that
        // pre-creates its topics (Kafka Connect, Streams, schema registries) carries on.
        if self.topic_exists(name) {
            return Err(CreateTopicError::Exists(name.to_string()));
        }
        let partitions = if partitions == -1 { self.settings.num_partitions } else { partitions };
        if partitions <= 0 {
            return Err(CreateTopicError::InvalidPartitions(format!(
                "Number of partitions was set to an invalid non-positive value: {partitions}"
            )));
        }
        self.metadata
            .read(|m| {
                let defaults = self.defaults(m);
                topic_config::validate_topic(&configs, |k| defaults.chain(k).swap_remove(0).1)
            })
            .map_err(CreateTopicError::InvalidConfig)?;
        let topic_id = self.ids.uuid();
        if validate_only {
            // The controller checks the assignment again when it applies the creation.
            self.metadata.read(|m| m.validate_topic_assignments(&assignments)).map_err(CreateTopicError::Rejected)?;
            return Ok(topic_id);
        }
        let topic = CreateTopic { name: name.to_string(), topic_id, partitions, configs, assignments };
        match self.controller.create_topic(topic).await {
            Ok(topic_id) => Ok(topic_id),
            Err(ControllerError::Rejected(Rejection::TopicExists(n))) => Err(CreateTopicError::Exists(n)),
            Err(ControllerError::Rejected(r)) => Err(CreateTopicError::Rejected(r)),
            Err(e) => Err(CreateTopicError::Controller(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names() {
        assert!(validate_topic_name("orders.v1_x-y").is_ok());
        assert!(validate_topic_name("").is_err());
        assert!(validate_topic_name("..").is_err());
        assert!(validate_topic_name("a b").is_err());
        assert!(validate_topic_name(&"a".repeat(250)).is_err());
    }
}
