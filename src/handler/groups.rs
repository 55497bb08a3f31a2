//! Consumer-group membership APIs: FindCoordinator, JoinGroup, SyncGroup, Heartbeat,
//! LeaveGroup, DescribeGroups, ListGroups, DeleteGroups. The protocol lives in `crate::group`;
//! here requests are decoded into its types and its answers encoded, leaving every field the
//! negotiated version lacks at its default (the codec refuses to encode it otherwise).
//!
//! JoinGroup and SyncGroup are [`Handled::Deferred`]: their answers wait for the rebalance.

use std::net::SocketAddr;
use std::sync::Arc;

use futures::FutureExt;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{
    BrokerId, DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest, DescribeGroupsResponse,
    FindCoordinatorRequest, FindCoordinatorResponse, GroupId, HeartbeatRequest, HeartbeatResponse, JoinGroupRequest,
    JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse, ListGroupsRequest, ListGroupsResponse, ResponseKind,
    SyncGroupRequest, SyncGroupResponse,
};
use kafka_protocol::protocol::StrBytes;
use skiff_controller::intent::GroupOp;
use tracing::info;

use super::Handled;
use super::errors::{self, code};
use crate::broker::Broker;
use crate::group::GroupCoordinator;
use crate::group::state::{GroupError, JoinRequest, JoinResponse, SyncRequest, SyncResponse};

/// FindCoordinator key types.
const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;

/// Group operations without an authorizer: READ, DELETE, DESCRIBE (AclOperation 3, 6, 8).
pub(super) const GROUP_OPERATIONS_ALL: i32 = (1 << 3) | (1 << 6) | (1 << 8);

fn s(v: impl Into<String>) -> StrBytes {
    StrBytes::from_string(v.into())
}

/// Whether this broker coordinates `group_id`: its shard is assigned here (by the controller,
/// like a partition leader), or shards are not assigned at all (no broker registered yet).
pub fn is_coordinator(broker: &Broker, group_id: &str) -> bool {
    broker.metadata.read(|m| m.coordinator(group_id).is_none_or(|a| a.broker_id == broker.settings.node_id))
}

/// The coordinator's (node id, host, port) for a group or a transactional id, or an error code
/// and message: the broker the controller placed the key's shard on (Kafka: the leader of the
/// key's `__consumer_offsets` / `__transaction_state` partition), COORDINATOR_NOT_AVAILABLE
/// while that broker is not live.
fn coordinator_for(broker: &Broker, key_type: i8, key: &str) -> Result<(i32, String, i32), (i16, String)> {
    let (assigned, what) = match key_type {
        KEY_TYPE_GROUP => (
            broker.metadata.read(|m| {
                m.coordinator(key).map(|a| m.live_broker(a.broker_id).map(|b| (b.broker_id, b.host, b.port)))
            }),
            "group",
        ),
        KEY_TYPE_TRANSACTION => (
            broker.metadata.read(|m| {
                m.txn_coordinator(key).map(|a| m.live_broker(a.broker_id).map(|b| (b.broker_id, b.host, b.port)))
            }),
            "transactional id",
        ),
        other => {
            info!(key_type = other, "refused FindCoordinator for an unknown key type (INVALID_REQUEST)");
            return Err((code(ResponseError::InvalidRequest), format!("unknown coordinator key type {other}")));
        }
    };
    let s = &broker.settings;
    match assigned {
        // Shards not placed yet (no broker registered): this broker serves every key.
        None => Ok((s.node_id, s.advertised_host.clone(), s.advertised_port)),
        Some(Some(b)) => Ok(b),
        Some(None) => {
            info!(
                key,
                key_type,
                "FindCoordinator: the {what}'s coordinator shard has no live broker right now (COORDINATOR_NOT_AVAILABLE)"
            );
            Err((
                code(ResponseError::CoordinatorNotAvailable),
                format!("no live broker coordinates this {what} right now"),
            ))
        }
    }
}

pub fn find_coordinator(
    broker: &Arc<Broker>,
    req: FindCoordinatorRequest,
    version: i16,
    here: &crate::security::ListenerContext,
) -> FindCoordinatorResponse {
    // The coordinator is named by its listener of the name the client came in on.
    let coordinator_for = |broker: &Broker, key_type: i8, key: &str| {
        coordinator_for(broker, key_type, key).map(|(node, host, port)| {
            if node == broker.settings.node_id {
                (node, here.advertised.host.clone(), here.advertised.port)
            } else {
                let other = broker.metadata.read(|m| m.live_broker_listener(node, here.protocol.name()));
                other.map_or((node, host, port), |(h, p)| (node, h, p))
            }
        })
    };
    let key_type = if version >= 1 { req.key_type } else { KEY_TYPE_GROUP };
    if version >= 4 {
        let coordinators = req
            .coordinator_keys
            .iter()
            .map(|key| {
                let c = Coordinator::default().with_key(key.clone());
                match coordinator_for(broker, key_type, key) {
                    Ok((node, host, port)) => c.with_node_id(BrokerId(node)).with_host(s(host)).with_port(port),
                    Err((e, msg)) => {
                        c.with_error_code(e).with_error_message(Some(s(msg))).with_node_id(BrokerId(-1)).with_port(-1)
                    }
                }
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let r = FindCoordinatorResponse::default();
    match coordinator_for(broker, key_type, &req.key) {
        Ok((node, host, port)) => r.with_node_id(BrokerId(node)).with_host(s(host)).with_port(port),
        Err((e, msg)) => {
            let r = r.with_error_code(e).with_node_id(BrokerId(-1)).with_port(-1);
            if version >= 1 { r.with_error_message(Some(s(msg))) } else { r }
        }
    }
}

fn join_response(r: JoinResponse, version: i16) -> JoinGroupResponse {
    let members = r
        .members
        .into_iter()
        .map(|m| {
            JoinGroupResponseMember::default()
                .with_member_id(s(m.member_id))
                .with_group_instance_id(if version >= 5 { m.group_instance_id.map(s) } else { None })
                .with_metadata(m.metadata)
        })
        .collect();
    // protocol_name is non-nullable before v7; protocol_type exists from v7.
    let protocol_name = match r.protocol_name {
        Some(n) => Some(s(n)),
        None if version < 7 => Some(StrBytes::default()),
        None => None,
    };
    JoinGroupResponse::default()
        .with_error_code(r.error.map_or(errors::NONE, errors::group))
        .with_generation_id(r.generation)
        .with_protocol_type(if version >= 7 { r.protocol_type.map(s) } else { None })
        .with_protocol_name(protocol_name)
        .with_leader(s(r.leader))
        .with_skip_assignment(version >= 9 && r.skip_assignment)
        .with_member_id(s(r.member_id))
        .with_members(members)
}

pub async fn join_group(
    broker: &Arc<Broker>,
    req: JoinGroupRequest,
    version: i16,
    peer: SocketAddr,
    client_id: String,
) -> Handled {
    let group_id = req.group_id.0.to_string();
    let error = |e: GroupError| {
        Handled::Ready(ResponseKind::JoinGroup(join_response(JoinResponse::error(e, &req.member_id), version)))
    };
    if group_id.is_empty() {
        return error(GroupError::InvalidGroupId);
    }
    if !is_coordinator(broker, &group_id) {
        return error(GroupError::NotCoordinator);
    }
    let join = JoinRequest {
        member_id: req.member_id.to_string(),
        group_instance_id: if version >= 5 { req.group_instance_id.as_ref().map(|i| i.to_string()) } else { None },
        client_id,
        client_host: format!("/{}", peer.ip()),
        session_timeout_ms: req.session_timeout_ms,
        // v0 has no rebalance timeout: the session timeout serves as both.
        rebalance_timeout_ms: if version >= 1 { req.rebalance_timeout_ms } else { req.session_timeout_ms },
        protocol_type: req.protocol_type.to_string(),
        protocols: req.protocols.iter().map(|p| (p.name.to_string(), p.metadata.clone())).collect(),
        require_known_member_id: version >= 4,
    };
    let member_id = join.member_id.clone();
    let answer = broker.groups.join(group_id, join).await;
    Handled::Deferred(
        async move {
            let r = answer.await.unwrap_or_else(|_| JoinResponse::error(GroupError::NotCoordinator, &member_id));
            ResponseKind::JoinGroup(join_response(r, version))
        }
        .boxed(),
    )
}

fn sync_response(r: SyncResponse, version: i16) -> SyncGroupResponse {
    let resp = SyncGroupResponse::default()
        .with_error_code(r.error.map_or(errors::NONE, errors::group))
        .with_assignment(r.assignment);
    if version >= 5 {
        resp.with_protocol_type(r.protocol_type.map(s)).with_protocol_name(r.protocol_name.map(s))
    } else {
        resp
    }
}

pub async fn sync_group(broker: &Arc<Broker>, req: SyncGroupRequest, version: i16) -> Handled {
    let group_id = req.group_id.0.to_string();
    let error = |e| Handled::Ready(ResponseKind::SyncGroup(sync_response(SyncResponse::error(e), version)));
    if group_id.is_empty() {
        return error(GroupError::InvalidGroupId);
    }
    if !is_coordinator(broker, &group_id) {
        return error(GroupError::NotCoordinator);
    }
    let sync = SyncRequest {
        member_id: req.member_id.to_string(),
        group_instance_id: if version >= 3 { req.group_instance_id.as_ref().map(|i| i.to_string()) } else { None },
        generation: req.generation_id,
        protocol_type: if version >= 5 { req.protocol_type.as_ref().map(|t| t.to_string()) } else { None },
        protocol_name: if version >= 5 { req.protocol_name.as_ref().map(|t| t.to_string()) } else { None },
        assignments: req.assignments.iter().map(|a| (a.member_id.to_string(), a.assignment.clone())).collect(),
    };
    let answer = broker.groups.sync(group_id, sync).await;
    Handled::Deferred(
        async move {
            let r = answer.await.unwrap_or_else(|_| SyncResponse::error(GroupError::NotCoordinator));
            ResponseKind::SyncGroup(sync_response(r, version))
        }
        .boxed(),
    )
}

pub async fn heartbeat(broker: &Arc<Broker>, req: HeartbeatRequest, version: i16) -> HeartbeatResponse {
    let group_id = req.group_id.0.to_string();
    let r = if group_id.is_empty() {
        Err(GroupError::InvalidGroupId)
    } else if !is_coordinator(broker, &group_id) {
        Err(GroupError::NotCoordinator)
    } else {
        let instance = if version >= 3 { req.group_instance_id.as_ref().map(|i| i.to_string()) } else { None };
        broker.groups.heartbeat(group_id, req.member_id.to_string(), instance, req.generation_id).await
    };
    HeartbeatResponse::default().with_error_code(r.err().map_or(errors::NONE, errors::group))
}

pub async fn leave_group(broker: &Arc<Broker>, req: LeaveGroupRequest, version: i16) -> LeaveGroupResponse {
    let group_id = req.group_id.0.to_string();
    let members: Vec<(String, Option<String>)> = if version >= 3 {
        req.members
            .iter()
            .map(|m| (m.member_id.to_string(), m.group_instance_id.as_ref().map(|i| i.to_string())))
            .collect()
    } else {
        vec![(req.member_id.to_string(), None)]
    };
    let result = if group_id.is_empty() {
        Err(GroupError::InvalidGroupId)
    } else if !is_coordinator(broker, &group_id) {
        Err(GroupError::NotCoordinator)
    } else {
        broker.groups.leave(group_id.clone(), members.clone()).await
    };
    match result {
        Err(e) => LeaveGroupResponse::default().with_error_code(errors::group(e)),
        Ok(results) => {
            for ((m, _), r) in members.iter().zip(&results) {
                if r.is_ok() {
                    info!(group = %group_id, member = %m, "member left");
                }
            }
            if version >= 3 {
                let members = members
                    .into_iter()
                    .zip(results)
                    .map(|((id, instance), r)| {
                        MemberResponse::default()
                            .with_member_id(s(id))
                            .with_group_instance_id(instance.map(s))
                            .with_error_code(r.err().map_or(errors::NONE, errors::group))
                    })
                    .collect();
                LeaveGroupResponse::default().with_members(members)
            } else {
                let e = results.first().and_then(|r| r.err());
                LeaveGroupResponse::default().with_error_code(e.map_or(errors::NONE, errors::group))
            }
        }
    }
}

pub async fn describe_groups(broker: &Arc<Broker>, req: DescribeGroupsRequest, version: i16) -> DescribeGroupsResponse {
    let mut groups = Vec::with_capacity(req.groups.len());
    for g in req.groups {
        let group_id = g.0.to_string();
        let mut d = DescribedGroup::default().with_group_id(g.clone());
        if version >= 3 {
            d = d.with_authorized_operations(if req.include_authorized_operations {
                GROUP_OPERATIONS_ALL
            } else {
                i32::MIN
            });
        }
        if !is_coordinator(broker, &group_id) {
            groups.push(d.with_error_code(errors::group(GroupError::NotCoordinator)));
            continue;
        }
        match broker.groups.describe(group_id).await {
            Err(e) => groups.push(d.with_error_code(errors::group(e))),
            Ok(summary) => {
                let members = summary
                    .members
                    .into_iter()
                    .map(|m| {
                        DescribedGroupMember::default()
                            .with_member_id(s(m.member_id))
                            .with_group_instance_id(if version >= 4 { m.group_instance_id.map(s) } else { None })
                            .with_client_id(s(m.client_id))
                            .with_client_host(s(m.client_host))
                            .with_member_metadata(m.metadata)
                            .with_member_assignment(m.assignment)
                    })
                    .collect();
                groups.push(
                    d.with_group_state(s(summary.state.name()))
                        .with_protocol_type(s(summary.protocol_type))
                        .with_protocol_data(s(summary.protocol))
                        .with_members(members),
                );
            }
        }
    }
    DescribeGroupsResponse::default().with_groups(groups)
}

pub async fn list_groups(broker: &Arc<Broker>, req: ListGroupsRequest, version: i16) -> ListGroupsResponse {
    let listed = match broker.groups.list().await {
        Ok(l) => l,
        Err(e) => return ListGroupsResponse::default().with_error_code(errors::group(e)),
    };
    let lower = |v: &[StrBytes]| -> Vec<String> { v.iter().map(|f| f.to_lowercase()).collect() };
    let states = if version >= 4 { lower(&req.states_filter) } else { vec![] };
    let types = if version >= 5 { lower(&req.types_filter) } else { vec![] };
    let groups = listed
        .into_iter()
        .filter(|g| is_coordinator(broker, &g.group_id))
        .filter(|g| states.is_empty() || states.contains(&g.state.to_lowercase()))
        .filter(|g| types.is_empty() || types.iter().any(|t| t == g.group_type))
        .map(|g| {
            let mut l =
                ListedGroup::default().with_group_id(GroupId(s(g.group_id))).with_protocol_type(s(g.protocol_type));
            if version >= 4 {
                l = l.with_group_state(s(g.state));
            }
            if version >= 5 {
                l = l.with_group_type(s(g.group_type));
            }
            l
        })
        .collect();
    ListGroupsResponse::default().with_groups(groups)
}

pub async fn delete_groups(broker: &Arc<Broker>, req: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let mut results = Vec::with_capacity(req.groups_names.len());
    for g in req.groups_names {
        let group_id = g.0.to_string();
        let r = DeletableGroupResult::default().with_group_id(g);
        let error = if group_id.is_empty() {
            Some(errors::group(GroupError::InvalidGroupId))
        } else if !is_coordinator(broker, &group_id) {
            Some(errors::group(GroupError::NotCoordinator))
        } else {
            delete_group(broker, group_id).await.err()
        };
        results.push(r.with_error_code(error.unwrap_or(errors::NONE)));
    }
    DeleteGroupsResponse::default().with_results(results)
}

async fn delete_group(broker: &Arc<Broker>, group_id: String) -> Result<(), i16> {
    broker.groups.begin_delete(group_id.clone()).await.map_err(errors::group)?;
    let epoch = GroupCoordinator::coordinator_epoch(&broker.metadata, &group_id);
    let result = broker
        .controller
        .store_group(group_id.clone(), epoch, GroupOp::DeleteGroup)
        .await
        .map_err(|e| errors::group_controller(&e));
    broker.groups.end_delete(group_id.clone(), result.is_ok()).await;
    if result.is_ok() {
        info!(group = %group_id, "deleted group");
    }
    result
}
