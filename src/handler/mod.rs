//! Kafka request handlers: one file per API. Each decodes nothing itself (the protocol module
//! did), calls the broker / controller, and builds the response. Error codes are chosen in
//! [`errors`], the one place that maps Skiff errors to Kafka's.
//!
//! Handlers run in request order on a connection up to their first await point that must wait
//! for durability or data ([`Handled::Deferred`]), so produce requests on one connection are
//! appended in the order they were sent (idempotent sequences depend on it) while acks and long
//! polls overlap.

pub mod acls;
pub mod admin;
pub mod api_versions;
pub mod authorize;
pub mod broker_loggers;
pub mod client_quotas;
pub mod configs;
pub mod consumer_group;
pub mod describe_producers;
pub mod describe_quorum;
pub mod describe_topic_partitions;
pub mod elect_leaders;
pub mod errors;
pub mod features;
pub mod fetch;
pub mod fetch_session;
pub mod groups;
pub mod leader_hints;
pub mod list_offsets;
pub mod log_dirs;
pub mod log_limit;
pub mod metadata;
pub mod not_served;
pub mod offsets;
pub mod produce;
pub mod reassignments;
pub mod rejected_configs;
pub mod scram_credentials;
pub mod txn;
pub mod unregister_broker;
pub mod zone_produce;

use std::net::SocketAddr;
use std::sync::Arc;

use futures::future::BoxFuture;
use kafka_protocol::messages::{RequestKind, ResponseKind};

use crate::broker::Broker;
use crate::protocol::Request;
use crate::security::{ListenerContext, Principal};

/// What a handler produced. Not boxed: each value is built once and moved once per request, and
/// `Ready` is the common case, so a box would add an allocation to most requests.
#[allow(clippy::large_enum_variant)]
pub enum Handled {
    /// The response, ready now.
    Ready(ResponseKind),
    /// The response, once this future completes (durability, long poll).
    Deferred(BoxFuture<'static, ResponseKind>),
    /// No response at all (produce with acks=0).
    NoResponse,
}

/// Runs the handler for one decoded request from `peer`, authenticated as `principal`,
/// received on `listener` (whose advertised address Metadata, FindCoordinator and
/// DescribeCluster answer with, as Kafka answers with the endpoints of the listener the client
/// connected to). Access is checked around the handler, in [`authorize`] only.
pub async fn handle(
    broker: &Arc<Broker>,
    request: Request,
    peer: SocketAddr,
    listener: &ListenerContext,
    principal: &Principal,
) -> Handled {
    let check = authorize::Check::new(broker, principal, peer, request.api_key);
    let (body, merge) = match authorize::gate(&check, request.body, request.version) {
        authorize::Gate::Refuse(response) => return Handled::Ready(response),
        authorize::Gate::NoResponse => return Handled::NoResponse,
        authorize::Gate::Pass(body, merge) => (body, merge),
    };
    let handled = dispatch(broker, Request { body, ..request }, peer, listener, principal).await;
    merge.apply(handled, check)
}

async fn dispatch(
    broker: &Arc<Broker>,
    request: Request,
    peer: SocketAddr,
    listener: &ListenerContext,
    principal: &Principal,
) -> Handled {
    let here = listener;
    let v = request.version;
    let client_id = request.header.client_id.as_ref().map(|c| c.to_string()).unwrap_or_default();
    let asker = not_served::Asker { client_id: client_id.clone(), ip: peer.ip() };
    // KIP-599: strict from CreateTopics v6, DeleteTopics v5, CreatePartitions v3 (Kafka's
    // `newQuotaFor(request, strictSinceVersion)`), permissive before.
    let mutation_quota = |strict_since: i16| {
        broker
            .metadata
            .read(|m| broker.quotas.mutation_quota(m.quotas(), &principal.name, &client_id, v >= strict_since))
    };
    match request.body {
        RequestKind::ApiVersions(r) => Handled::Ready(ResponseKind::ApiVersions(api_versions::handle(&r, v))),
        RequestKind::Metadata(r) => {
            let mut answer = metadata::handle(broker, r.clone(), v, here).await;
            metadata::probe_leaders(broker, &answer).await;
            let now = broker.clock.now();
            if metadata::hold_until(broker, &answer, now).is_some()
                || metadata::names_a_leader_not_live(broker, &answer)
            {
                // It names a leader whose process this broker saw go (or one fenced since the
                // answer was built): answered once the fence arrives (built again from the image
                // that has it), without blocking the connection meanwhile (`broker/peer_watch.rs`).
                let (broker, protocol, advertised) = (broker.clone(), here.protocol, here.advertised.clone());
                let client_id = client_id.clone();
                return Handled::Deferred(Box::pin(async move {
                    let mut answer = metadata::handle_held(&broker, r, v, protocol, advertised).await;
                    if let Some(rack) = crate::broker::client_rack::from_client_id(&client_id) {
                        zone_produce::route_metadata(&broker, rack, &mut answer);
                    }
                    ResponseKind::Metadata(answer)
                }));
            }
            metadata::mark_unavailable(broker, &mut answer, now);
            // A client that declared its rack is pointed at brokers of its rack (RFC 0005).
            if let Some(rack) = crate::broker::client_rack::from_client_id(&client_id) {
                zone_produce::route_metadata(broker, rack, &mut answer);
            }
            Handled::Ready(ResponseKind::Metadata(answer))
        }
        RequestKind::Produce(r) => produce::handle_on(broker, r, v, &client_id, Some(here.protocol)).await,
        RequestKind::Fetch(r) => fetch::handle(broker, r, v),
        RequestKind::ListOffsets(r) => {
            Handled::Ready(ResponseKind::ListOffsets(list_offsets::handle(broker, r, v).await))
        }
        RequestKind::OffsetForLeaderEpoch(r) => {
            Handled::Ready(ResponseKind::OffsetForLeaderEpoch(list_offsets::offset_for_leader_epoch(broker, r)))
        }
        RequestKind::CreateTopics(r) => {
            let mut quota = mutation_quota(6);
            Handled::Ready(ResponseKind::CreateTopics(admin::create_topics(broker, r, v, &asker, &mut quota).await))
        }
        RequestKind::DeleteTopics(r) => {
            let mut quota = mutation_quota(5);
            Handled::Ready(ResponseKind::DeleteTopics(admin::delete_topics(broker, r, v, &mut quota).await))
        }
        RequestKind::CreatePartitions(r) => {
            let mut quota = mutation_quota(3);
            Handled::Ready(ResponseKind::CreatePartitions(admin::create_partitions(broker, r, &mut quota).await))
        }
        RequestKind::DeleteRecords(r) => {
            Handled::Ready(ResponseKind::DeleteRecords(admin::delete_records(broker, r).await))
        }
        RequestKind::InitProducerId(r) => {
            Handled::Ready(ResponseKind::InitProducerId(admin::init_producer_id(broker, r, v).await))
        }
        RequestKind::DescribeCluster(r) => {
            Handled::Ready(ResponseKind::DescribeCluster(admin::describe_cluster(broker, r, here)))
        }
        RequestKind::DescribeTopicPartitions(r) => {
            Handled::Ready(ResponseKind::DescribeTopicPartitions(describe_topic_partitions::handle(broker, r)))
        }
        RequestKind::DescribeConfigs(r) => {
            Handled::Ready(ResponseKind::DescribeConfigs(configs::describe_configs(broker, r, v)))
        }
        RequestKind::AlterConfigs(r) => {
            Handled::Ready(ResponseKind::AlterConfigs(configs::alter_configs(broker, r, &asker).await))
        }
        RequestKind::IncrementalAlterConfigs(r) => Handled::Ready(ResponseKind::IncrementalAlterConfigs(
            configs::incremental_alter_configs(broker, r, &asker).await,
        )),
        // Operators' admin APIs (Kafka's CLI tools).
        RequestKind::DescribeLogDirs(r) => Handled::Ready(ResponseKind::DescribeLogDirs(log_dirs::handle(broker, r))),
        RequestKind::DescribeQuorum(r) => {
            Handled::Ready(ResponseKind::DescribeQuorum(describe_quorum::handle(broker, r).await))
        }
        RequestKind::ElectLeaders(r) => Handled::Ready(ResponseKind::ElectLeaders(elect_leaders::handle(broker, r, v))),
        RequestKind::DescribeProducers(r) => {
            Handled::Ready(ResponseKind::DescribeProducers(describe_producers::handle(broker, r)))
        }
        RequestKind::AlterPartitionReassignments(r) => {
            Handled::Ready(ResponseKind::AlterPartitionReassignments(reassignments::alter(broker, r, v).await))
        }
        RequestKind::ListPartitionReassignments(r) => {
            Handled::Ready(ResponseKind::ListPartitionReassignments(reassignments::list(&r)))
        }
        RequestKind::UnregisterBroker(r) => {
            Handled::Ready(ResponseKind::UnregisterBroker(unregister_broker::handle(broker, r).await))
        }
        RequestKind::UpdateFeatures(r) => {
            Handled::Ready(ResponseKind::UpdateFeatures(features::update_features(broker.settings.node_id, &r, v)))
        }
        // Consumer groups (handler/groups.rs, handler/offsets.rs).
        RequestKind::FindCoordinator(r) => {
            Handled::Ready(ResponseKind::FindCoordinator(groups::find_coordinator(broker, r, v, here)))
        }
        RequestKind::JoinGroup(r) => groups::join_group(broker, r, v, peer, client_id).await,
        RequestKind::SyncGroup(r) => groups::sync_group(broker, r, v).await,
        RequestKind::Heartbeat(r) => Handled::Ready(ResponseKind::Heartbeat(groups::heartbeat(broker, r, v).await)),
        RequestKind::LeaveGroup(r) => Handled::Ready(ResponseKind::LeaveGroup(groups::leave_group(broker, r, v).await)),
        RequestKind::DescribeGroups(r) => {
            Handled::Ready(ResponseKind::DescribeGroups(groups::describe_groups(broker, r, v).await))
        }
        RequestKind::ListGroups(r) => Handled::Ready(ResponseKind::ListGroups(groups::list_groups(broker, r, v).await)),
        RequestKind::DeleteGroups(r) => {
            Handled::Ready(ResponseKind::DeleteGroups(groups::delete_groups(broker, r).await))
        }
        RequestKind::OffsetCommit(r) => offsets::offset_commit(broker, r, v).await,
        RequestKind::OffsetFetch(r) => offsets::offset_fetch(broker, r, v),
        RequestKind::OffsetDelete(r) => {
            Handled::Ready(ResponseKind::OffsetDelete(offsets::offset_delete(broker, r).await))
        }
        // KIP-848 consumer groups (handler/consumer_group.rs).
        RequestKind::ConsumerGroupHeartbeat(r) => {
            // A regex subscription resolves only to topics the principal may DESCRIBE.
            let visible = authorize::Check::new(broker, principal, peer, request.api_key).topic_visibility();
            consumer_group::heartbeat(broker, r, v, peer, client_id, visible).await
        }
        RequestKind::ConsumerGroupDescribe(r) => {
            Handled::Ready(ResponseKind::ConsumerGroupDescribe(consumer_group::describe(broker, r, v).await))
        }
        // Transactions (handler/txn.rs, RFC 0004).
        RequestKind::AddPartitionsToTxn(r) => {
            Handled::Ready(ResponseKind::AddPartitionsToTxn(txn::add_partitions_to_txn(broker, r, v).await))
        }
        RequestKind::AddOffsetsToTxn(r) => {
            Handled::Ready(ResponseKind::AddOffsetsToTxn(txn::add_offsets_to_txn(broker, r, v).await))
        }
        RequestKind::EndTxn(r) => Handled::Ready(ResponseKind::EndTxn(txn::end_txn(broker, r, v).await)),
        RequestKind::TxnOffsetCommit(r) => txn::txn_offset_commit(broker, r, v).await,
        RequestKind::DescribeTransactions(r) => {
            Handled::Ready(ResponseKind::DescribeTransactions(txn::describe_transactions(broker, r)))
        }
        RequestKind::ListTransactions(r) => {
            Handled::Ready(ResponseKind::ListTransactions(txn::list_transactions(broker, r, v)))
        }
        // Credentials (handler/scram_credentials.rs). SaslHandshake and SaslAuthenticate are
        // answered by the connection's authenticator (security/sasl) and never get here.
        RequestKind::DescribeUserScramCredentials(r) => {
            Handled::Ready(ResponseKind::DescribeUserScramCredentials(scram_credentials::describe(broker, r)))
        }
        RequestKind::AlterUserScramCredentials(r) => {
            Handled::Ready(ResponseKind::AlterUserScramCredentials(scram_credentials::alter(broker, r).await))
        }
        // ACLs (handler/acls.rs).
        RequestKind::CreateAcls(r) => Handled::Ready(ResponseKind::CreateAcls(acls::create(broker, r).await)),
        RequestKind::DescribeAcls(r) => Handled::Ready(ResponseKind::DescribeAcls(acls::describe(broker, r))),
        RequestKind::DeleteAcls(r) => Handled::Ready(ResponseKind::DeleteAcls(acls::delete(broker, r).await)),
        // Client quotas (handler/client_quotas.rs, quota/).
        RequestKind::DescribeClientQuotas(r) => {
            Handled::Ready(ResponseKind::DescribeClientQuotas(client_quotas::describe(broker, r)))
        }
        RequestKind::AlterClientQuotas(r) => {
            Handled::Ready(ResponseKind::AlterClientQuotas(client_quotas::alter(broker, r).await))
        }
        // `protocol::decode_request` only lets advertised APIs through.
        other => {
            tracing::warn!(request = ?std::mem::discriminant(&other), "request for an API that is not advertised");
            Handled::NoResponse
        }
    }
}
