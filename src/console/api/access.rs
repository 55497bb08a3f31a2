//! Authorization of the console API: the caller the HTTP listener authenticated
//! (`http/auth.rs`) is checked by the broker's own authorizer, with the operation Kafka
//! requires for the equivalent Kafka API, before anything is read or changed.
//!
//! | endpoint | Kafka API | operation |
//! |---|---|---|
//! | `GET /cluster`, `GET /brokers` | DescribeQuorum, DescribeCluster | DESCRIBE cluster |
//! | `GET /topics` | Metadata (all topics) | DESCRIBE topic; others left out |
//! | `POST /topics` | CreateTopics | CREATE cluster, else CREATE topic |
//! | `GET /topics/{t}` | Metadata, DescribeConfigs | DESCRIBE topic; configs only with DESCRIBE_CONFIGS |
//! | `DELETE /topics/{t}` | DeleteTopics | DELETE topic |
//! | `PATCH`/`PUT /topics/{t}/configs` | (Incremental)AlterConfigs | ALTER_CONFIGS topic |
//! | `POST /topics/{t}/partitions` | CreatePartitions | ALTER topic |
//! | `GET .../messages` | Fetch (and ListOffsets) | READ topic |
//! | `POST /topics/{t}/messages` | Produce | WRITE topic |
//! | `GET /groups` | ListGroups | DESCRIBE cluster, else DESCRIBE group; others left out |
//! | `GET /groups/{g}` | DescribeGroups, OffsetFetch | DESCRIBE group; offsets of topics without DESCRIBE left out |
//! | `POST /groups/{g}/reset-offsets` | OffsetCommit | READ group, READ topic |
//!
//! A refusal is 403 with the Kafka code (`TOPIC_AUTHORIZATION_FAILED`, ...) and a message
//! naming the operation; it is audited (log line, `skiff_authorization_denied_total{api=...}`)
//! as the Kafka API's would be. Listings leave out silently what the caller may not describe,
//! as Metadata and ListGroups do. Super users and `allow_everyone_if_no_acl_found` act exactly
//! as on a Kafka listener, since the decision is the same function.

use std::sync::Arc;

use kafka_protocol::messages::ApiKey;
use skiff_controller::acls::{AclOperation, CLUSTER_NAME, ResourceType};

use super::ApiError;
use crate::broker::Broker;
use crate::http::auth::Caller;
use crate::security::authorizer::{Resource, Session};

/// The request's caller, as the HTTP listener's authentication named it.
pub(crate) struct Who(pub Caller);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Who {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, ApiError> {
        // Every request passes the listener's middleware, which always sets one; without it
        // (a router used on its own) the caller is anonymous, never more.
        Ok(Who(parts.extensions.get::<Caller>().cloned().unwrap_or_else(Caller::anonymous)))
    }
}

impl Who {
    /// Checks for one request, audited under the Kafka API `api`.
    pub(crate) fn on<'a>(&'a self, broker: &'a Arc<Broker>, api: ApiKey) -> Access<'a> {
        Access { broker, caller: &self.0, api }
    }
}

/// The checks of one request.
pub(crate) struct Access<'a> {
    broker: &'a Arc<Broker>,
    caller: &'a Caller,
    api: ApiKey,
}

impl Access<'_> {
    fn decide(&self, op: AclOperation, resource_type: ResourceType, name: &str, audit: bool) -> bool {
        let session = Session { principal: &self.caller.principal, peer: self.caller.peer, api: self.api };
        let now = self.broker.clock.now_ms();
        let authorizer = &self.broker.security.authorizer;
        self.broker
            .metadata
            .read(|m| authorizer.authorize(m.acls(), &session, op, Resource { resource_type, name }, audit, now))
    }

    /// `op` on the resource, or a 403 naming it (audited).
    pub(crate) fn require(&self, op: AclOperation, resource_type: ResourceType, name: &str) -> Result<(), ApiError> {
        if self.decide(op, resource_type, name, true) {
            return Ok(());
        }
        Err(ApiError::Denied {
            principal: self.caller.principal.to_string(),
            operation: op,
            resource_type,
            name: name.to_string(),
        })
    }

    /// Whether `op` is allowed, not audited (what listings leave out silently).
    pub(crate) fn sees(&self, op: AclOperation, resource_type: ResourceType, name: &str) -> bool {
        self.decide(op, resource_type, name, false)
    }

    /// `op` on the cluster, or a 403.
    pub(crate) fn require_cluster(&self, op: AclOperation) -> Result<(), ApiError> {
        self.require(op, ResourceType::Cluster, CLUSTER_NAME)
    }

    /// Whether `op` on the cluster is allowed (not audited).
    pub(crate) fn sees_cluster(&self, op: AclOperation) -> bool {
        self.sees(op, ResourceType::Cluster, CLUSTER_NAME)
    }
}
