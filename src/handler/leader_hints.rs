//! KIP-951 leader discovery: a NOT_LEADER_OR_FOLLOWER answer to Produce (v10+) names the
//! partition's current leader and epoch (`CurrentLeader`) and that leader's endpoint on the
//! listener the request came in on (`NodeEndpoints`), as Kafka's `KafkaApis.handleProduceRequest`
//! does; one to Fetch (v12+) names the leader and epoch (`CurrentLeader`; Fetch's `NodeEndpoints`
//! need v16, above the versions Skiff advertises), so a client that reads them (Java 3.7+, librdkafka 2.4+) moves the partition without
//! waiting for a Metadata refresh. Only a live leader is named: a partition without one gets the
//! defaults (-1), and the client refreshes metadata as before.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::BrokerId;
use kafka_protocol::messages::fetch_response::LeaderIdAndEpoch as FetchLeader;
use kafka_protocol::messages::produce_response::{LeaderIdAndEpoch, NodeEndpoint};
use kafka_protocol::messages::{FetchResponse, ProduceResponse};
use kafka_protocol::protocol::StrBytes;

use super::errors::code;
use super::metadata::{topic_name_by_id, topic_view};
use crate::broker::Broker;

/// The first Produce version whose responses carry `CurrentLeader` and `NodeEndpoints`
/// (ProduceResponse.json: tagged fields, versions 10+).
const PRODUCE_LEADER_HINTS_VERSION: i16 = 10;

/// Fills `CurrentLeader` for every NOT_LEADER_OR_FOLLOWER partition of `response` whose topic
/// has a live leader, and `NodeEndpoints` with those leaders.
pub fn produce(
    broker: &Broker,
    mut response: ProduceResponse,
    version: i16,
    listener: crate::security::listener::SecurityProtocol,
) -> ProduceResponse {
    if version < PRODUCE_LEADER_HINTS_VERSION {
        return response;
    }
    let not_leader = code(ResponseError::NotLeaderOrFollower);
    let me = broker.settings.node_id;
    let mut named = Vec::new();
    broker.metadata.read(|m| {
        for topic in response.responses.iter_mut() {
            let Some(view) = topic_view(m, topic.name.0.as_str(), me) else { continue };
            for p in topic.partition_responses.iter_mut().filter(|p| p.error_code == not_leader) {
                let Some(leader) = usize::try_from(p.index).ok().and_then(|i| view.partitions.get(i)) else {
                    continue;
                };
                // Never a fenced broker, and never this one (it just refused the write).
                if leader.leader < 0 || leader.leader == me || m.live_broker(leader.leader).is_none() {
                    continue;
                }
                p.current_leader = LeaderIdAndEpoch::default()
                    .with_leader_id(BrokerId(leader.leader))
                    .with_leader_epoch(leader.leader_epoch);
                named.push(leader.leader);
            }
        }
    });
    if named.is_empty() {
        return response;
    }
    named.sort_unstable();
    named.dedup();
    // Each leader at its listener of the request's name, as Metadata answers on this listener
    // (its first listener when it registered none by name).
    response.node_endpoints = broker.metadata.read(|m| {
        named
            .into_iter()
            .filter_map(|id| {
                let b = m.live_broker(id)?;
                let (host, port) = m.live_broker_listener(id, listener.name()).unwrap_or((b.host, b.port));
                Some(
                    NodeEndpoint::default()
                        .with_node_id(BrokerId(id))
                        .with_host(StrBytes::from_string(host))
                        .with_port(port)
                        .with_rack(b.rack.map(StrBytes::from_string)),
                )
            })
            .collect()
    });
    response
}

/// The first Fetch version whose partitions carry `CurrentLeader` (FetchResponse.json: tagged,
/// versions 12+).
const FETCH_LEADER_HINTS_VERSION: i16 = 12;

/// Fills `CurrentLeader` for every NOT_LEADER_OR_FOLLOWER partition of `response` with a live
/// leader other than this broker.
pub fn fetch(broker: &Broker, mut response: FetchResponse, version: i16) -> FetchResponse {
    if version < FETCH_LEADER_HINTS_VERSION {
        return response;
    }
    let not_leader = code(ResponseError::NotLeaderOrFollower);
    if !response.responses.iter().any(|t| t.partitions.iter().any(|p| p.error_code == not_leader)) {
        return response;
    }
    let me = broker.settings.node_id;
    broker.metadata.read(|m| {
        for topic in response.responses.iter_mut() {
            // By name up to v12, by id from v13.
            let name = if topic.topic.0.is_empty() {
                topic_name_by_id(m, &topic.topic_id)
            } else {
                Some(topic.topic.0.to_string())
            };
            let Some(view) = name.and_then(|n| topic_view(m, &n, me)) else { continue };
            for p in topic.partitions.iter_mut().filter(|p| p.error_code == not_leader) {
                let Some(leader) = usize::try_from(p.partition_index).ok().and_then(|i| view.partitions.get(i)) else {
                    continue;
                };
                if leader.leader < 0 || leader.leader == me || m.live_broker(leader.leader).is_none() {
                    continue;
                }
                p.current_leader = FetchLeader::default()
                    .with_leader_id(BrokerId(leader.leader))
                    .with_leader_epoch(leader.leader_epoch);
            }
        }
    });
    response
}
