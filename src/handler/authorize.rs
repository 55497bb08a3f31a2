//! Which operation on which resource every served API needs (Kafka's "Operations and Resources
//! on Protocols" table, as `KafkaApis` applies it), checked in one place around the handlers.
//!
//! [`gate`] runs before a handler: it refuses a request outright (a cluster operation, a group
//! or transactional id the principal may not use) with the API's own error response, or passes
//! it on without the topics, partitions, groups or ids the principal may not touch, remembering
//! their error entries in a [`Merge`]. [`Merge::apply`] adds those entries to the handler's
//! response, leaves out of listings what the principal may not describe (Metadata of all
//! topics, ListGroups, ListTransactions, ...), and fills in `*_authorized_operations` fields the
//! client asked for. Handlers themselves never check access.
//!
//! Codes: TOPIC_AUTHORIZATION_FAILED (29), GROUP_AUTHORIZATION_FAILED (30),
//! CLUSTER_AUTHORIZATION_FAILED (31), TRANSACTIONAL_ID_AUTHORIZATION_FAILED (53), chosen in
//! `errors.rs`. The checks per API are the table in docs/security.md; `tests/authorization.rs`
//! fails when an advertised API has no entry there.

use std::net::SocketAddr;
use std::sync::Arc;

use futures::FutureExt;
use kafka_protocol::messages::{ApiKey, GroupId, RequestKind, ResponseKind, TopicName};
use kafka_protocol::protocol::StrBytes;
use skiff_controller::acls::{AclOperation, CLUSTER_NAME, ResourceType};

use super::Handled;
use super::errors;
use crate::broker::Broker;
use crate::security::Principal;
use crate::security::authorizer::{Resource, Session};

use AclOperation as Op;
use ResourceType as Rt;

/// The caller of one request, owned so a deferred response can still be completed.
pub struct Check {
    broker: Arc<Broker>,
    principal: Principal,
    peer: SocketAddr,
    api: ApiKey,
}

impl Check {
    pub fn new(broker: &Arc<Broker>, principal: &Principal, peer: SocketAddr, api: ApiKey) -> Self {
        Self { broker: broker.clone(), principal: principal.clone(), peer, api }
    }

    fn decide(&self, op: Op, resource_type: Rt, name: &str, audit: bool) -> bool {
        let session = Session { principal: &self.principal, peer: self.peer, api: self.api };
        let now = self.broker.clock.now_ms();
        let authorizer = &self.broker.security.authorizer;
        self.broker
            .metadata
            .read(|m| authorizer.authorize(m.acls(), &session, op, Resource { resource_type, name }, audit, now))
    }

    /// Whether everything is allowed without looking (a super user, or no ACL at all while
    /// everyone is allowed where none is found): the common dev setup pays nothing.
    fn open(&self) -> bool {
        let settings = self.broker.security.authorizer.settings();
        settings.super_users.contains(&self.principal.to_string())
            || (settings.allow_everyone_if_no_acl_found && self.broker.metadata.read(|m| m.acls().is_empty()))
    }

    /// An audited check: a denial is logged and counted.
    fn allows(&self, op: Op, resource_type: Rt, name: &str) -> bool {
        self.decide(op, resource_type, name, true)
    }

    /// An unaudited check, for listings that silently leave things out.
    fn sees(&self, op: Op, resource_type: Rt, name: &str) -> bool {
        self.decide(op, resource_type, name, false)
    }

    fn topic(&self, op: Op, name: &str) -> bool {
        self.allows(op, Rt::Topic, name)
    }

    fn group(&self, op: Op, name: &str) -> bool {
        self.allows(op, Rt::Group, name)
    }

    fn txn(&self, op: Op, name: &str) -> bool {
        self.allows(op, Rt::TransactionalId, name)
    }

    fn cluster(&self, op: Op) -> bool {
        self.allows(op, Rt::Cluster, CLUSTER_NAME)
    }

    /// Kafka's `authorizedOperations`: the bit `1 << code` of every operation of the resource
    /// type the principal may do (no audit).
    fn authorized_operations(&self, resource_type: Rt, name: &str) -> i32 {
        let ops: &[Op] = match resource_type {
            Rt::Topic => &[
                Op::Read,
                Op::Write,
                Op::Create,
                Op::Delete,
                Op::Alter,
                Op::Describe,
                Op::DescribeConfigs,
                Op::AlterConfigs,
            ],
            Rt::Group => &[Op::Read, Op::Describe, Op::Delete, Op::DescribeConfigs, Op::AlterConfigs],
            Rt::Cluster => &[
                Op::Create,
                Op::Alter,
                Op::Describe,
                Op::ClusterAction,
                Op::DescribeConfigs,
                Op::AlterConfigs,
                Op::IdempotentWrite,
            ],
            _ => &[],
        };
        ops.iter().filter(|op| self.sees(**op, resource_type, name)).fold(0, |bits, op| bits | (1 << op.code()))
    }

    /// The topics this principal may DESCRIBE, which alone a KIP-848 regex subscription may
    /// resolve to (Kafka's `filterTopicDescribeAuthorizedTopics`, unaudited). Worked out here,
    /// under one metadata read, because the group coordinator resolves while it holds one.
    pub fn topic_visibility(&self) -> crate::group::consumer::TopicVisibility {
        use crate::group::consumer::TopicVisibility;
        if self.open() {
            return TopicVisibility::All;
        }
        let session = Session { principal: &self.principal, peer: self.peer, api: self.api };
        let authorizer = &self.broker.security.authorizer;
        let now = self.broker.clock.now_ms();
        let visible: std::collections::HashSet<String> = self.broker.metadata.read(|m| {
            m.topics()
                .map(|t| t.name())
                .filter(|name| {
                    let resource = Resource { resource_type: Rt::Topic, name };
                    authorizer.authorize(m.acls(), &session, Op::Describe, resource, false, now)
                })
                .map(str::to_string)
                .collect()
        });
        TopicVisibility::Only(std::sync::Arc::new(move |t: &str| visible.contains(t)))
    }

    fn topic_exists(&self, name: &str) -> bool {
        self.broker.metadata.read(|m| m.topic(name).is_some())
    }

    fn topic_name_of(&self, id: uuid::Uuid) -> Option<String> {
        self.broker.metadata.read(|m| m.topic_by_id(&id).map(|t| t.name().to_string()))
    }
}

fn s(b: &StrBytes) -> &str {
    b.as_str()
}

fn sb(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_string())
}

/// What happens to a request before its handler runs.
pub enum Gate {
    /// Refused (or fully answered) here.
    Refuse(ResponseKind),
    /// Refused with no answer at all (produce with acks=0).
    NoResponse,
    /// Handled, then completed by the merge.
    Pass(RequestKind, Merge),
}

/// What the gate took out of a request, and what the response still needs.
#[derive(Default)]
pub enum Merge {
    #[default]
    Nothing,
    Produce(Vec<kafka_protocol::messages::produce_response::TopicProduceResponse>),
    Fetch(Vec<kafka_protocol::messages::fetch_response::FetchableTopicResponse>),
    /// An incremental fetch's refused topics; the answer's other topics (from its session) are
    /// checked when it is merged.
    FetchSession(Vec<kafka_protocol::messages::fetch_response::FetchableTopicResponse>),
    ListOffsets(Vec<kafka_protocol::messages::list_offsets_response::ListOffsetsTopicResponse>),
    OffsetForLeaderEpoch(Vec<kafka_protocol::messages::offset_for_leader_epoch_response::OffsetForLeaderTopicResult>),
    Metadata {
        denied: Vec<kafka_protocol::messages::metadata_response::MetadataResponseTopic>,
        all: bool,
    },
    CreateTopics(Vec<kafka_protocol::messages::create_topics_response::CreatableTopicResult>),
    DeleteTopics(Vec<kafka_protocol::messages::delete_topics_response::DeletableTopicResult>),
    CreatePartitions(Vec<kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult>),
    DeleteRecords(Vec<kafka_protocol::messages::delete_records_response::DeleteRecordsTopicResult>),
    DescribeCluster,
    DescribeTopicPartitions {
        denied: Vec<kafka_protocol::messages::describe_topic_partitions_response::DescribeTopicPartitionsResponseTopic>,
        all: bool,
    },
    DescribeConfigs(Vec<kafka_protocol::messages::describe_configs_response::DescribeConfigsResult>),
    AlterConfigs(Vec<kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse>),
    IncrementalAlterConfigs(
        Vec<kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse>,
    ),
    DescribeProducers(Vec<kafka_protocol::messages::describe_producers_response::TopicResponse>),
    FindCoordinator(Vec<kafka_protocol::messages::find_coordinator_response::Coordinator>),
    DescribeGroups(Vec<kafka_protocol::messages::describe_groups_response::DescribedGroup>),
    ListGroups,
    DeleteGroups(Vec<kafka_protocol::messages::delete_groups_response::DeletableGroupResult>),
    OffsetCommit(Vec<kafka_protocol::messages::offset_commit_response::OffsetCommitResponseTopic>),
    OffsetFetch {
        /// Per group (v8+; v0-7 use the one group): the denied topics' entries.
        denied_v0: Vec<kafka_protocol::messages::offset_fetch_response::OffsetFetchResponseTopic>,
        denied_groups: Vec<kafka_protocol::messages::offset_fetch_response::OffsetFetchResponseGroup>,
        denied_topics: Vec<(GroupId, Vec<kafka_protocol::messages::offset_fetch_response::OffsetFetchResponseTopics>)>,
    },
    OffsetDelete(Vec<kafka_protocol::messages::offset_delete_response::OffsetDeleteResponseTopic>),
    ConsumerGroupDescribe(Vec<kafka_protocol::messages::consumer_group_describe_response::DescribedGroup>),
    TxnOffsetCommit(Vec<kafka_protocol::messages::txn_offset_commit_response::TxnOffsetCommitResponseTopic>),
    DescribeTransactions(Vec<kafka_protocol::messages::describe_transactions_response::TransactionState>),
    ListTransactions,
}

/// The APIs with one check and nothing per entry: the request passes whole, or is answered with
/// only its top-level `error_code` set to `code`.
macro_rules! pass_or_refuse {
    ($allowed:expr, $r:expr, $api:ident, $response:ident, $code:expr) => {{
        if $allowed {
            Gate::Pass(RequestKind::$api($r), Merge::Nothing)
        } else {
            let mut resp = kafka_protocol::messages::$response::default();
            resp.error_code = $code;
            Gate::Refuse(ResponseKind::$api(resp))
        }
    }};
}

/// DescribeConfigs, AlterConfigs and IncrementalAlterConfigs: each resource checked with
/// [`config_denial`]; a refused one is answered by an `$entry` with its code.
macro_rules! config_gate {
    ($check:expr, $r:expr, $op:expr, $api:ident, $entry:ty) => {{
        let mut r = $r;
        let mut denied = Vec::new();
        for res in std::mem::take(&mut r.resources) {
            match config_denial($check, res.resource_type, s(&res.resource_name), $op) {
                Some(code) => {
                    let mut e = <$entry>::default();
                    e.error_code = code;
                    e.resource_type = res.resource_type;
                    e.resource_name = res.resource_name.clone();
                    denied.push(e);
                }
                None => r.resources.push(res),
            }
        }
        Gate::Pass(RequestKind::$api(r), Merge::$api(denied))
    }};
}

/// Checks `body` (an `api` request of `version`) for `check`'s principal.
pub fn gate(check: &Check, body: RequestKind, version: i16) -> Gate {
    if check.open() {
        return Gate::Pass(body, Merge::Nothing);
    }
    let topic_code = errors::denied(Rt::Topic);
    let group_code = errors::denied(Rt::Group);
    let cluster_code = errors::denied(Rt::Cluster);
    let txn_code = errors::denied(Rt::TransactionalId);
    match body {
        RequestKind::Produce(mut r) => {
            use kafka_protocol::messages::produce_response::*;
            let entry = |t: &kafka_protocol::messages::produce_request::TopicProduceData, code: i16| {
                let mut e = TopicProduceResponse::default();
                e.name = t.name.clone();
                e.topic_id = t.topic_id;
                e.partition_responses = t
                    .partition_data
                    .iter()
                    .map(|p| {
                        let mut pr = PartitionProduceResponse::default();
                        pr.index = p.index;
                        pr.error_code = code;
                        pr.base_offset = -1;
                        pr.log_append_time_ms = -1;
                        pr.log_start_offset = -1;
                        pr
                    })
                    .collect();
                e
            };
            if let Some(id) = &r.transactional_id
                && !check.txn(Op::Write, s(&id.0))
            {
                let denied: Vec<_> = r.topic_data.iter().map(|t| entry(t, txn_code)).collect();
                return refuse_produce(r.acks, denied);
            }
            let (allowed, denied): (Vec<_>, Vec<_>) =
                std::mem::take(&mut r.topic_data).into_iter().partition(|t| check.topic(Op::Write, s(&t.name.0)));
            let denied: Vec<_> = denied.iter().map(|t| entry(t, topic_code)).collect();
            if allowed.is_empty() && !denied.is_empty() {
                return refuse_produce(r.acks, denied);
            }
            r.topic_data = allowed;
            Gate::Pass(RequestKind::Produce(r), Merge::Produce(denied))
        }
        RequestKind::Fetch(mut r) => {
            use kafka_protocol::messages::fetch_response::*;
            let follower = r.replica_id.0 >= 0 || r.replica_state.replica_id.0 >= 0;
            let follower_allowed = follower && check.cluster(Op::ClusterAction);
            let (allowed, denied): (Vec<_>, Vec<_>) = std::mem::take(&mut r.topics).into_iter().partition(|t| {
                if follower {
                    follower_allowed
                } else {
                    let name = if t.topic.0.is_empty() { check.topic_name_of(t.topic_id) } else { None };
                    check.topic(Op::Read, name.as_deref().unwrap_or(s(&t.topic.0)))
                }
            });
            let denied: Vec<_> = denied
                .iter()
                .map(|t| {
                    let mut e = FetchableTopicResponse::default();
                    e.topic = t.topic.clone();
                    e.topic_id = t.topic_id;
                    e.partitions = t
                        .partitions
                        .iter()
                        .map(|p| {
                            let mut d = PartitionData::default();
                            d.partition_index = p.partition;
                            d.error_code = topic_code;
                            d.high_watermark = -1;
                            d.last_stable_offset = -1;
                            d.log_start_offset = -1;
                            d.records = Some(Default::default());
                            d
                        })
                        .collect();
                    e
                })
                .collect();
            // An incremental fetch (KIP-227) also reads its session's partitions the request does
            // not name: those are checked on the answer (`Merge::FetchSession`), and the fetch
            // goes on even when every partition it names is refused.
            let incremental = r.session_id != 0 && r.session_epoch > 0;
            // Nothing left to read: answer now rather than long-poll on nothing, as Kafka does.
            if !incremental && allowed.is_empty() && !denied.is_empty() && r.forgotten_topics_data.is_empty() {
                let mut resp = FetchResponse::default();
                resp.responses = denied;
                return Gate::Refuse(ResponseKind::Fetch(resp));
            }
            r.topics = allowed;
            Gate::Pass(
                RequestKind::Fetch(r),
                if incremental { Merge::FetchSession(denied) } else { Merge::Fetch(denied) },
            )
        }
        RequestKind::ListOffsets(mut r) => {
            use kafka_protocol::messages::list_offsets_response::*;
            let (allowed, denied): (Vec<_>, Vec<_>) =
                std::mem::take(&mut r.topics).into_iter().partition(|t| check.topic(Op::Describe, s(&t.name.0)));
            r.topics = allowed;
            let denied = denied
                .iter()
                .map(|t| {
                    let mut e = ListOffsetsTopicResponse::default();
                    e.name = t.name.clone();
                    e.partitions = t
                        .partitions
                        .iter()
                        .map(|p| {
                            let mut d = ListOffsetsPartitionResponse::default();
                            d.partition_index = p.partition_index;
                            d.error_code = topic_code;
                            d.timestamp = -1;
                            d.offset = -1;
                            d.leader_epoch = -1;
                            d
                        })
                        .collect();
                    e
                })
                .collect();
            Gate::Pass(RequestKind::ListOffsets(r), Merge::ListOffsets(denied))
        }
        RequestKind::OffsetForLeaderEpoch(mut r) => {
            use kafka_protocol::messages::offset_for_leader_epoch_response::*;
            // A replica's CLUSTER_ACTION covers every topic; a consumer needs DESCRIBE on each.
            if check.sees(Op::ClusterAction, Rt::Cluster, CLUSTER_NAME) {
                return Gate::Pass(RequestKind::OffsetForLeaderEpoch(r), Merge::Nothing);
            }
            let (allowed, denied): (Vec<_>, Vec<_>) =
                std::mem::take(&mut r.topics).into_iter().partition(|t| check.topic(Op::Describe, s(&t.topic.0)));
            r.topics = allowed;
            let denied = denied
                .iter()
                .map(|t| {
                    let mut e = OffsetForLeaderTopicResult::default();
                    e.topic = t.topic.clone();
                    e.partitions = t
                        .partitions
                        .iter()
                        .map(|p| {
                            let mut d = EpochEndOffset::default();
                            d.partition = p.partition;
                            d.error_code = topic_code;
                            d.leader_epoch = -1;
                            d.end_offset = -1;
                            d
                        })
                        .collect();
                    e
                })
                .collect();
            Gate::Pass(RequestKind::OffsetForLeaderEpoch(r), Merge::OffsetForLeaderEpoch(denied))
        }
        RequestKind::Metadata(mut r) => {
            use kafka_protocol::messages::metadata_response::*;
            let all = r.topics.is_none() || (version == 0 && r.topics.as_ref().is_some_and(Vec::is_empty));
            if all {
                return Gate::Pass(RequestKind::Metadata(r), Merge::Metadata { denied: Vec::new(), all: true });
            }
            // Auto-creation as the Metadata handler decides it (broker setting, v4+ request flag).
            let auto_create = check.broker.settings.auto_create_topics && (version < 4 || r.allow_auto_topic_creation);
            let may_create = auto_create && check.sees(Op::Create, Rt::Cluster, CLUSTER_NAME);
            let mut denied = Vec::new();
            let topics = r.topics.take().unwrap_or_default();
            let mut kept = Vec::with_capacity(topics.len());
            for t in topics {
                let resolved = match &t.name {
                    Some(n) => Some(n.0.to_string()),
                    None => check.topic_name_of(t.topic_id),
                };
                // An unknown id is the handler's UNKNOWN_TOPIC_ID.
                let Some(name) = resolved else {
                    kept.push(t);
                    continue;
                };
                let visible = check.topic(Op::Describe, &name);
                // Auto-creation needs CREATE on the cluster or the topic, as in Kafka.
                let creatable =
                    !auto_create || check.topic_exists(&name) || may_create || check.topic(Op::Create, &name);
                if visible && creatable {
                    kept.push(t);
                } else {
                    let mut e = MetadataResponseTopic::default();
                    e.error_code = topic_code;
                    // Without DESCRIBE a topic asked for by id is not named.
                    e.name = if t.name.is_some() || visible { Some(TopicName(sb(&name))) } else { None };
                    e.topic_id = if t.name.is_none() { t.topic_id } else { uuid::Uuid::nil() };
                    e.topic_authorized_operations = i32::MIN;
                    denied.push(e);
                }
            }
            r.topics = Some(kept);
            Gate::Pass(RequestKind::Metadata(r), Merge::Metadata { denied, all: false })
        }
        RequestKind::CreateTopics(mut r) => {
            use kafka_protocol::messages::create_topics_response::*;
            let cluster = check.sees(Op::Create, Rt::Cluster, CLUSTER_NAME);
            let (allowed, denied): (Vec<_>, Vec<_>) = std::mem::take(&mut r.topics)
                .into_iter()
                .partition(|t| cluster || check.topic(Op::Create, s(&t.name.0)));
            r.topics = allowed;
            let denied = denied
                .iter()
                .map(|t| {
                    let mut e = CreatableTopicResult::default();
                    e.name = t.name.clone();
                    e.error_code = topic_code;
                    e.num_partitions = -1;
                    e.replication_factor = -1;
                    e
                })
                .collect();
            Gate::Pass(RequestKind::CreateTopics(r), Merge::CreateTopics(denied))
        }
        RequestKind::DeleteTopics(mut r) => {
            use kafka_protocol::messages::delete_topics_response::*;
            let mut denied = Vec::new();
            let deny = |name: Option<TopicName>, id: uuid::Uuid| {
                let mut e = DeletableTopicResult::default();
                e.name = name;
                e.topic_id = id;
                e.error_code = topic_code;
                e
            };
            let names = std::mem::take(&mut r.topic_names);
            for n in names {
                if check.topic(Op::Delete, s(&n.0)) {
                    r.topic_names.push(n);
                } else {
                    denied.push(deny(Some(n), uuid::Uuid::nil()));
                }
            }
            let states = std::mem::take(&mut r.topics);
            for t in states {
                let name = t.name.as_ref().map(|n| n.0.to_string()).or_else(|| check.topic_name_of(t.topic_id));
                match name {
                    None => r.topics.push(t),
                    // By id without DESCRIBE: refused without saying the name (Kafka).
                    Some(n) if t.name.is_none() && !check.topic(Op::Describe, &n) => {
                        denied.push(deny(None, t.topic_id))
                    }
                    Some(n) if !check.topic(Op::Delete, &n) => denied.push(deny(Some(TopicName(sb(&n))), t.topic_id)),
                    Some(_) => r.topics.push(t),
                }
            }
            Gate::Pass(RequestKind::DeleteTopics(r), Merge::DeleteTopics(denied))
        }
        RequestKind::CreatePartitions(mut r) => {
            use kafka_protocol::messages::create_partitions_response::*;
            let (allowed, denied): (Vec<_>, Vec<_>) =
                std::mem::take(&mut r.topics).into_iter().partition(|t| check.topic(Op::Alter, s(&t.name.0)));
            r.topics = allowed;
            let denied = denied
                .iter()
                .map(|t| {
                    let mut e = CreatePartitionsTopicResult::default();
                    e.name = t.name.clone();
                    e.error_code = topic_code;
                    e
                })
                .collect();
            Gate::Pass(RequestKind::CreatePartitions(r), Merge::CreatePartitions(denied))
        }
        RequestKind::DeleteRecords(mut r) => {
            use kafka_protocol::messages::delete_records_response::*;
            let (allowed, denied): (Vec<_>, Vec<_>) =
                std::mem::take(&mut r.topics).into_iter().partition(|t| check.topic(Op::Delete, s(&t.name.0)));
            r.topics = allowed;
            let denied = denied
                .iter()
                .map(|t| {
                    let mut e = DeleteRecordsTopicResult::default();
                    e.name = t.name.clone();
                    e.partitions = t
                        .partitions
                        .iter()
                        .map(|p| {
                            let mut d = DeleteRecordsPartitionResult::default();
                            d.partition_index = p.partition_index;
                            d.low_watermark = -1;
                            d.error_code = topic_code;
                            d
                        })
                        .collect();
                    e
                })
                .collect();
            Gate::Pass(RequestKind::DeleteRecords(r), Merge::DeleteRecords(denied))
        }
        RequestKind::InitProducerId(r) => {
            let code = match &r.transactional_id {
                Some(id) if !id.0.is_empty() => (!check.txn(Op::Write, s(&id.0))).then_some(txn_code),
                // Idempotence: IDEMPOTENT_WRITE on the cluster, or WRITE on some topic (KIP-679).
                _ => {
                    let any_topic = {
                        let session = Session { principal: &check.principal, peer: check.peer, api: check.api };
                        let authorizer = &check.broker.security.authorizer;
                        check
                            .broker
                            .metadata
                            .read(|m| authorizer.authorize_any(m.acls(), &session, Op::Write, Rt::Topic))
                    };
                    (!any_topic && !check.cluster(Op::IdempotentWrite)).then_some(cluster_code)
                }
            };
            match code {
                Some(code) => {
                    let mut resp = kafka_protocol::messages::InitProducerIdResponse::default();
                    resp.error_code = code;
                    resp.producer_id = (-1).into();
                    resp.producer_epoch = -1;
                    Gate::Refuse(ResponseKind::InitProducerId(resp))
                }
                None => Gate::Pass(RequestKind::InitProducerId(r), Merge::Nothing),
            }
        }
        // Kafka answers DescribeCluster to everyone; only the authorized operations depend on
        // the principal (0 without DESCRIBE on the cluster).
        RequestKind::DescribeCluster(r) => Gate::Pass(RequestKind::DescribeCluster(r), Merge::DescribeCluster),
        RequestKind::DescribeTopicPartitions(mut r) => {
            use kafka_protocol::messages::describe_topic_partitions_response::*;
            if r.topics.is_empty() {
                return Gate::Pass(
                    RequestKind::DescribeTopicPartitions(r),
                    Merge::DescribeTopicPartitions { denied: Vec::new(), all: true },
                );
            }
            let (allowed, denied): (Vec<_>, Vec<_>) =
                std::mem::take(&mut r.topics).into_iter().partition(|t| check.topic(Op::Describe, s(&t.name.0)));
            let denied: Vec<_> = denied
                .iter()
                .map(|t| {
                    let mut e = DescribeTopicPartitionsResponseTopic::default();
                    e.name = Some(t.name.clone());
                    e.error_code = topic_code;
                    e.topic_authorized_operations = i32::MIN;
                    e
                })
                .collect();
            if allowed.is_empty() {
                let mut resp = DescribeTopicPartitionsResponse::default();
                resp.topics = denied;
                return Gate::Refuse(ResponseKind::DescribeTopicPartitions(resp));
            }
            r.topics = allowed;
            Gate::Pass(RequestKind::DescribeTopicPartitions(r), Merge::DescribeTopicPartitions { denied, all: false })
        }
        RequestKind::DescribeConfigs(r) => config_gate!(
            check,
            r,
            Op::DescribeConfigs,
            DescribeConfigs,
            kafka_protocol::messages::describe_configs_response::DescribeConfigsResult
        ),
        RequestKind::AlterConfigs(r) => config_gate!(
            check,
            r,
            Op::AlterConfigs,
            AlterConfigs,
            kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse
        ),
        RequestKind::IncrementalAlterConfigs(r) => config_gate!(
            check,
            r,
            Op::AlterConfigs,
            IncrementalAlterConfigs,
            kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse
        ),
        RequestKind::DescribeLogDirs(r) => {
            pass_or_refuse!(check.cluster(Op::Describe), r, DescribeLogDirs, DescribeLogDirsResponse, cluster_code)
        }
        RequestKind::DescribeQuorum(r) => {
            pass_or_refuse!(check.cluster(Op::Describe), r, DescribeQuorum, DescribeQuorumResponse, cluster_code)
        }
        RequestKind::ElectLeaders(r) => {
            use kafka_protocol::messages::elect_leaders_response::*;
            if check.cluster(Op::Alter) {
                return Gate::Pass(RequestKind::ElectLeaders(r), Merge::Nothing);
            }
            let mut resp = ElectLeadersResponse::default();
            resp.error_code = cluster_code;
            resp.replica_election_results = r
                .topic_partitions
                .iter()
                .flatten()
                .map(|t| {
                    let mut e = ReplicaElectionResult::default();
                    e.topic = t.topic.clone();
                    e.partition_result = t
                        .partitions
                        .iter()
                        .map(|p| {
                            let mut pr = PartitionResult::default();
                            pr.partition_id = *p;
                            pr.error_code = cluster_code;
                            pr
                        })
                        .collect();
                    e
                })
                .collect();
            Gate::Refuse(ResponseKind::ElectLeaders(resp))
        }
        RequestKind::DescribeProducers(mut r) => {
            use kafka_protocol::messages::describe_producers_response::*;
            let (allowed, denied): (Vec<_>, Vec<_>) =
                std::mem::take(&mut r.topics).into_iter().partition(|t| check.topic(Op::Read, s(&t.name.0)));
            r.topics = allowed;
            let denied = denied
                .iter()
                .map(|t| {
                    let mut e = TopicResponse::default();
                    e.name = t.name.clone();
                    e.partitions = t
                        .partition_indexes
                        .iter()
                        .map(|p| {
                            let mut d = PartitionResponse::default();
                            d.partition_index = *p;
                            d.error_code = topic_code;
                            d
                        })
                        .collect();
                    e
                })
                .collect();
            Gate::Pass(RequestKind::DescribeProducers(r), Merge::DescribeProducers(denied))
        }
        RequestKind::AlterPartitionReassignments(r) => pass_or_refuse!(
            check.cluster(Op::Alter),
            r,
            AlterPartitionReassignments,
            AlterPartitionReassignmentsResponse,
            cluster_code
        ),
        RequestKind::ListPartitionReassignments(r) => pass_or_refuse!(
            check.cluster(Op::Describe),
            r,
            ListPartitionReassignments,
            ListPartitionReassignmentsResponse,
            cluster_code
        ),
        RequestKind::UnregisterBroker(r) => {
            pass_or_refuse!(check.cluster(Op::Alter), r, UnregisterBroker, UnregisterBrokerResponse, cluster_code)
        }
        RequestKind::UpdateFeatures(r) => {
            pass_or_refuse!(check.cluster(Op::Alter), r, UpdateFeatures, UpdateFeaturesResponse, cluster_code)
        }
        RequestKind::FindCoordinator(mut r) => {
            use kafka_protocol::messages::find_coordinator_response::*;
            // key_type 0 is a group, 1 a transactional id.
            let (rt, code) = if r.key_type == 1 { (Rt::TransactionalId, txn_code) } else { (Rt::Group, group_code) };
            if version < 4 {
                if check.allows(Op::Describe, rt, s(&r.key)) {
                    return Gate::Pass(RequestKind::FindCoordinator(r), Merge::Nothing);
                }
                let mut resp = FindCoordinatorResponse::default();
                resp.error_code = code;
                resp.node_id = (-1).into();
                resp.port = -1;
                return Gate::Refuse(ResponseKind::FindCoordinator(resp));
            }
            let (allowed, denied): (Vec<_>, Vec<_>) =
                std::mem::take(&mut r.coordinator_keys).into_iter().partition(|k| check.allows(Op::Describe, rt, s(k)));
            let denied: Vec<_> = denied
                .into_iter()
                .map(|k| {
                    let mut c = Coordinator::default();
                    c.key = k;
                    c.node_id = (-1).into();
                    c.port = -1;
                    c.error_code = code;
                    c
                })
                .collect();
            if allowed.is_empty() {
                let mut resp = FindCoordinatorResponse::default();
                resp.coordinators = denied;
                return Gate::Refuse(ResponseKind::FindCoordinator(resp));
            }
            r.coordinator_keys = allowed;
            Gate::Pass(RequestKind::FindCoordinator(r), Merge::FindCoordinator(denied))
        }
        RequestKind::JoinGroup(r) => {
            if check.group(Op::Read, s(&r.group_id.0)) {
                return Gate::Pass(RequestKind::JoinGroup(r), Merge::Nothing);
            }
            let mut resp = kafka_protocol::messages::JoinGroupResponse::default();
            resp.error_code = group_code;
            resp.generation_id = -1;
            resp.member_id = r.member_id.clone();
            Gate::Refuse(ResponseKind::JoinGroup(resp))
        }
        RequestKind::SyncGroup(r) => {
            pass_or_refuse!(check.group(Op::Read, s(&r.group_id.0)), r, SyncGroup, SyncGroupResponse, group_code)
        }
        RequestKind::Heartbeat(r) => {
            pass_or_refuse!(check.group(Op::Read, s(&r.group_id.0)), r, Heartbeat, HeartbeatResponse, group_code)
        }
        RequestKind::LeaveGroup(r) => {
            pass_or_refuse!(check.group(Op::Read, s(&r.group_id.0)), r, LeaveGroup, LeaveGroupResponse, group_code)
        }
        RequestKind::DescribeGroups(mut r) => {
            use kafka_protocol::messages::describe_groups_response::*;
            let (allowed, denied): (Vec<_>, Vec<_>) =
                std::mem::take(&mut r.groups).into_iter().partition(|g| check.group(Op::Describe, s(&g.0)));
            let denied: Vec<_> = denied
                .into_iter()
                .map(|g| {
                    let mut d = DescribedGroup::default();
                    d.group_id = g;
                    d.error_code = group_code;
                    d.authorized_operations = i32::MIN;
                    d
                })
                .collect();
            r.groups = allowed;
            Gate::Pass(RequestKind::DescribeGroups(r), Merge::DescribeGroups(denied))
        }
        RequestKind::ListGroups(r) => Gate::Pass(RequestKind::ListGroups(r), Merge::ListGroups),
        RequestKind::DeleteGroups(mut r) => {
            use kafka_protocol::messages::delete_groups_response::*;
            let (allowed, denied): (Vec<_>, Vec<_>) =
                std::mem::take(&mut r.groups_names).into_iter().partition(|g| check.group(Op::Delete, s(&g.0)));
            r.groups_names = allowed;
            let denied = denied
                .into_iter()
                .map(|g| {
                    let mut d = DeletableGroupResult::default();
                    d.group_id = g;
                    d.error_code = group_code;
                    d
                })
                .collect();
            Gate::Pass(RequestKind::DeleteGroups(r), Merge::DeleteGroups(denied))
        }
        RequestKind::OffsetCommit(mut r) => {
            use kafka_protocol::messages::offset_commit_response::*;
            let entry = |t: &kafka_protocol::messages::offset_commit_request::OffsetCommitRequestTopic, code: i16| {
                let mut e = OffsetCommitResponseTopic::default();
                e.name = t.name.clone();
                e.topic_id = t.topic_id;
                e.partitions = t
                    .partitions
                    .iter()
                    .map(|p| {
                        let mut d = OffsetCommitResponsePartition::default();
                        d.partition_index = p.partition_index;
                        d.error_code = code;
                        d
                    })
                    .collect();
                e
            };
            if !check.group(Op::Read, s(&r.group_id.0)) {
                let mut resp = OffsetCommitResponse::default();
                resp.topics = r.topics.iter().map(|t| entry(t, group_code)).collect();
                return Gate::Refuse(ResponseKind::OffsetCommit(resp));
            }
            let (allowed, denied): (Vec<_>, Vec<_>) =
                std::mem::take(&mut r.topics).into_iter().partition(|t| check.topic(Op::Read, s(&t.name.0)));
            let denied: Vec<_> = denied.iter().map(|t| entry(t, topic_code)).collect();
            if allowed.is_empty() && !denied.is_empty() {
                let mut resp = OffsetCommitResponse::default();
                resp.topics = denied;
                return Gate::Refuse(ResponseKind::OffsetCommit(resp));
            }
            r.topics = allowed;
            Gate::Pass(RequestKind::OffsetCommit(r), Merge::OffsetCommit(denied))
        }
        RequestKind::OffsetFetch(r) => offset_fetch(check, r, version),
        RequestKind::OffsetDelete(mut r) => {
            use kafka_protocol::messages::offset_delete_response::*;
            if !check.group(Op::Delete, s(&r.group_id.0)) {
                let mut resp = OffsetDeleteResponse::default();
                resp.error_code = group_code;
                return Gate::Refuse(ResponseKind::OffsetDelete(resp));
            }
            let (allowed, denied): (Vec<_>, Vec<_>) =
                std::mem::take(&mut r.topics).into_iter().partition(|t| check.topic(Op::Read, s(&t.name.0)));
            r.topics = allowed;
            let denied = denied
                .iter()
                .map(|t| {
                    let mut e = OffsetDeleteResponseTopic::default();
                    e.name = t.name.clone();
                    e.partitions = t
                        .partitions
                        .iter()
                        .map(|p| {
                            let mut d = OffsetDeleteResponsePartition::default();
                            d.partition_index = p.partition_index;
                            d.error_code = topic_code;
                            d
                        })
                        .collect();
                    e
                })
                .collect();
            Gate::Pass(RequestKind::OffsetDelete(r), Merge::OffsetDelete(denied))
        }
        RequestKind::ConsumerGroupHeartbeat(r) => {
            // Kafka's `handleConsumerGroupHeartbeat`: READ on the group, then DESCRIBE on every
            // subscribed topic name (each checked and audited); one refused topic refuses the
            // whole heartbeat, so a member cannot learn of topics it may not see.
            let code = if !check.group(Op::Read, s(&r.group_id.0)) {
                Some(group_code)
            } else {
                let names = r.subscribed_topic_names.iter().flatten();
                let refused = names.filter(|t| !check.topic(Op::Describe, s(&t.0))).count();
                (refused > 0).then_some(topic_code)
            };
            let Some(code) = code else {
                return Gate::Pass(RequestKind::ConsumerGroupHeartbeat(r), Merge::Nothing);
            };
            let mut resp = kafka_protocol::messages::ConsumerGroupHeartbeatResponse::default();
            resp.error_code = code;
            Gate::Refuse(ResponseKind::ConsumerGroupHeartbeat(resp))
        }
        RequestKind::ConsumerGroupDescribe(mut r) => {
            use kafka_protocol::messages::consumer_group_describe_response::*;
            let (allowed, denied): (Vec<_>, Vec<_>) =
                std::mem::take(&mut r.group_ids).into_iter().partition(|g| check.group(Op::Describe, s(&g.0)));
            r.group_ids = allowed;
            let denied = denied
                .into_iter()
                .map(|g| {
                    let mut d = DescribedGroup::default();
                    d.group_id = g;
                    d.error_code = group_code;
                    d.authorized_operations = i32::MIN;
                    d
                })
                .collect();
            Gate::Pass(RequestKind::ConsumerGroupDescribe(r), Merge::ConsumerGroupDescribe(denied))
        }
        RequestKind::AddPartitionsToTxn(r) => add_partitions_to_txn(check, r, version),
        RequestKind::AddOffsetsToTxn(r) => {
            let code = if !check.txn(Op::Write, s(&r.transactional_id.0)) {
                Some(txn_code)
            } else if !check.group(Op::Read, s(&r.group_id.0)) {
                Some(group_code)
            } else {
                None
            };
            match code {
                None => Gate::Pass(RequestKind::AddOffsetsToTxn(r), Merge::Nothing),
                Some(code) => {
                    let mut resp = kafka_protocol::messages::AddOffsetsToTxnResponse::default();
                    resp.error_code = code;
                    Gate::Refuse(ResponseKind::AddOffsetsToTxn(resp))
                }
            }
        }
        RequestKind::EndTxn(r) => {
            if check.txn(Op::Write, s(&r.transactional_id.0)) {
                return Gate::Pass(RequestKind::EndTxn(r), Merge::Nothing);
            }
            let mut resp = kafka_protocol::messages::EndTxnResponse::default();
            resp.error_code = txn_code;
            resp.producer_id = (-1).into();
            resp.producer_epoch = -1;
            Gate::Refuse(ResponseKind::EndTxn(resp))
        }
        RequestKind::TxnOffsetCommit(mut r) => {
            use kafka_protocol::messages::txn_offset_commit_response::*;
            let entry = |t: &kafka_protocol::messages::txn_offset_commit_request::TxnOffsetCommitRequestTopic,
                         code: i16| {
                let mut e = TxnOffsetCommitResponseTopic::default();
                e.name = t.name.clone();
                e.partitions = t
                    .partitions
                    .iter()
                    .map(|p| {
                        let mut d = TxnOffsetCommitResponsePartition::default();
                        d.partition_index = p.partition_index;
                        d.error_code = code;
                        d
                    })
                    .collect();
                e
            };
            let whole = if !check.txn(Op::Write, s(&r.transactional_id.0)) {
                Some(txn_code)
            } else if !check.group(Op::Read, s(&r.group_id.0)) {
                Some(group_code)
            } else {
                None
            };
            if let Some(code) = whole {
                let mut resp = TxnOffsetCommitResponse::default();
                resp.topics = r.topics.iter().map(|t| entry(t, code)).collect();
                return Gate::Refuse(ResponseKind::TxnOffsetCommit(resp));
            }
            let (allowed, denied): (Vec<_>, Vec<_>) =
                std::mem::take(&mut r.topics).into_iter().partition(|t| check.topic(Op::Read, s(&t.name.0)));
            let denied: Vec<_> = denied.iter().map(|t| entry(t, topic_code)).collect();
            if allowed.is_empty() && !denied.is_empty() {
                let mut resp = TxnOffsetCommitResponse::default();
                resp.topics = denied;
                return Gate::Refuse(ResponseKind::TxnOffsetCommit(resp));
            }
            r.topics = allowed;
            Gate::Pass(RequestKind::TxnOffsetCommit(r), Merge::TxnOffsetCommit(denied))
        }
        RequestKind::DescribeTransactions(mut r) => {
            use kafka_protocol::messages::describe_transactions_response::*;
            let (allowed, denied): (Vec<_>, Vec<_>) =
                std::mem::take(&mut r.transactional_ids).into_iter().partition(|id| check.txn(Op::Describe, s(&id.0)));
            r.transactional_ids = allowed;
            let denied = denied
                .into_iter()
                .map(|id| {
                    let mut d = TransactionState::default();
                    d.transactional_id = id;
                    d.error_code = txn_code;
                    d.producer_id = (-1).into();
                    d.producer_epoch = -1;
                    d.transaction_timeout_ms = -1;
                    d.transaction_start_time_ms = -1;
                    d
                })
                .collect();
            Gate::Pass(RequestKind::DescribeTransactions(r), Merge::DescribeTransactions(denied))
        }
        RequestKind::ListTransactions(r) => Gate::Pass(RequestKind::ListTransactions(r), Merge::ListTransactions),
        RequestKind::DescribeUserScramCredentials(r) => pass_or_refuse!(
            check.cluster(Op::Describe),
            r,
            DescribeUserScramCredentials,
            DescribeUserScramCredentialsResponse,
            cluster_code
        ),
        RequestKind::AlterUserScramCredentials(r) => {
            use kafka_protocol::messages::alter_user_scram_credentials_response::*;
            if check.cluster(Op::Alter) {
                return Gate::Pass(RequestKind::AlterUserScramCredentials(r), Merge::Nothing);
            }
            let mut users: Vec<StrBytes> = r.deletions.iter().map(|d| d.name.clone()).collect();
            users.extend(r.upsertions.iter().map(|u| u.name.clone()));
            users.dedup();
            let mut resp = AlterUserScramCredentialsResponse::default();
            resp.results = users
                .into_iter()
                .map(|u| {
                    let mut e = AlterUserScramCredentialsResult::default();
                    e.user = u;
                    e.error_code = cluster_code;
                    e
                })
                .collect();
            Gate::Refuse(ResponseKind::AlterUserScramCredentials(resp))
        }
        RequestKind::CreateAcls(r) => {
            use kafka_protocol::messages::create_acls_response::*;
            if check.cluster(Op::Alter) {
                return Gate::Pass(RequestKind::CreateAcls(r), Merge::Nothing);
            }
            let mut resp = CreateAclsResponse::default();
            resp.results = r
                .creations
                .iter()
                .map(|_| {
                    let mut e = AclCreationResult::default();
                    e.error_code = cluster_code;
                    e
                })
                .collect();
            Gate::Refuse(ResponseKind::CreateAcls(resp))
        }
        RequestKind::DescribeAcls(r) => {
            pass_or_refuse!(check.cluster(Op::Describe), r, DescribeAcls, DescribeAclsResponse, cluster_code)
        }
        RequestKind::DeleteAcls(r) => {
            use kafka_protocol::messages::delete_acls_response::*;
            if check.cluster(Op::Alter) {
                return Gate::Pass(RequestKind::DeleteAcls(r), Merge::Nothing);
            }
            let mut resp = DeleteAclsResponse::default();
            resp.filter_results = r
                .filters
                .iter()
                .map(|_| {
                    let mut e = DeleteAclsFilterResult::default();
                    e.error_code = cluster_code;
                    e
                })
                .collect();
            Gate::Refuse(ResponseKind::DeleteAcls(resp))
        }
        // Client quotas (Kafka: DESCRIBE_CONFIGS / ALTER_CONFIGS on the cluster).
        RequestKind::DescribeClientQuotas(r) => pass_or_refuse!(
            check.cluster(Op::DescribeConfigs),
            r,
            DescribeClientQuotas,
            DescribeClientQuotasResponse,
            cluster_code
        ),
        RequestKind::AlterClientQuotas(r) => {
            use kafka_protocol::messages::alter_client_quotas_response::*;
            if check.cluster(Op::AlterConfigs) {
                return Gate::Pass(RequestKind::AlterClientQuotas(r), Merge::Nothing);
            }
            let mut resp = AlterClientQuotasResponse::default();
            resp.entries = r
                .entries
                .iter()
                .map(|e| {
                    let mut out = EntryData::default();
                    out.error_code = cluster_code;
                    out.entity = e
                        .entity
                        .iter()
                        .map(|c| {
                            let mut d = EntityData::default();
                            d.entity_type = c.entity_type.clone();
                            d.entity_name = c.entity_name.clone();
                            d
                        })
                        .collect();
                    out
                })
                .collect();
            Gate::Refuse(ResponseKind::AlterClientQuotas(resp))
        }
        // ApiVersions, SaslHandshake and SaslAuthenticate: part of connecting, never authorized
        // (Kafka); an API not listed here is not served (protocol.rs refuses it before).
        other => Gate::Pass(other, Merge::Nothing),
    }
}

fn refuse_produce(acks: i16, denied: Vec<kafka_protocol::messages::produce_response::TopicProduceResponse>) -> Gate {
    if acks == 0 {
        // acks=0 gets no answer, refused or not.
        return Gate::NoResponse;
    }
    let mut resp = kafka_protocol::messages::ProduceResponse::default();
    resp.responses = denied;
    Gate::Refuse(ResponseKind::Produce(resp))
}

/// DescribeConfigs / AlterConfigs: topics need the operation on the topic, groups on the group,
/// brokers and broker loggers on the cluster. `None`: allowed (or a type the handler refuses).
fn config_denial(check: &Check, resource_type: i8, name: &str, op: Op) -> Option<i16> {
    let rt = match resource_type {
        2 => Rt::Topic,
        4 | 8 => Rt::Cluster,
        32 => Rt::Group,
        _ => return None,
    };
    let name = if rt == Rt::Cluster { CLUSTER_NAME } else { name };
    (!check.allows(op, rt, name)).then(|| errors::denied(rt))
}

fn offset_fetch(check: &Check, mut r: kafka_protocol::messages::OffsetFetchRequest, version: i16) -> Gate {
    use kafka_protocol::messages::offset_fetch_response::*;
    let group_code = errors::denied(Rt::Group);
    let topic_code = errors::denied(Rt::Topic);
    if version < 8 {
        if !check.group(Op::Describe, s(&r.group_id.0)) {
            let mut resp = OffsetFetchResponse::default();
            resp.error_code = group_code;
            return Gate::Refuse(ResponseKind::OffsetFetch(resp));
        }
        let mut denied = Vec::new();
        if let Some(topics) = r.topics.as_mut() {
            let (allowed, refused): (Vec<_>, Vec<_>) =
                std::mem::take(topics).into_iter().partition(|t| check.topic(Op::Describe, s(&t.name.0)));
            *topics = allowed;
            denied = refused
                .iter()
                .map(|t| {
                    let mut e = OffsetFetchResponseTopic::default();
                    e.name = t.name.clone();
                    e.partitions = t
                        .partition_indexes
                        .iter()
                        .map(|p| {
                            let mut d = OffsetFetchResponsePartition::default();
                            d.partition_index = *p;
                            d.committed_offset = -1;
                            d.committed_leader_epoch = -1;
                            d.error_code = topic_code;
                            d
                        })
                        .collect();
                    e
                })
                .collect();
        }
        return Gate::Pass(
            RequestKind::OffsetFetch(r),
            Merge::OffsetFetch { denied_v0: denied, denied_groups: Vec::new(), denied_topics: Vec::new() },
        );
    }
    let mut denied_groups = Vec::new();
    let mut denied_topics = Vec::new();
    for mut g in std::mem::take(&mut r.groups) {
        if !check.group(Op::Describe, s(&g.group_id.0)) {
            let mut e = OffsetFetchResponseGroup::default();
            e.group_id = g.group_id.clone();
            e.error_code = group_code;
            denied_groups.push(e);
            continue;
        }
        if let Some(topics) = g.topics.as_mut() {
            let (allowed, refused): (Vec<_>, Vec<_>) =
                std::mem::take(topics).into_iter().partition(|t| check.topic(Op::Describe, s(&t.name.0)));
            *topics = allowed;
            if !refused.is_empty() {
                let entries = refused
                    .iter()
                    .map(|t| {
                        let mut e = OffsetFetchResponseTopics::default();
                        e.name = t.name.clone();
                        e.topic_id = t.topic_id;
                        e.partitions = t
                            .partition_indexes
                            .iter()
                            .map(|p| {
                                let mut d = OffsetFetchResponsePartitions::default();
                                d.partition_index = *p;
                                d.committed_offset = -1;
                                d.committed_leader_epoch = -1;
                                d.error_code = topic_code;
                                d
                            })
                            .collect();
                        e
                    })
                    .collect();
                denied_topics.push((g.group_id.clone(), entries));
            }
        }
        r.groups.push(g);
    }
    if r.groups.is_empty() {
        let mut resp = OffsetFetchResponse::default();
        resp.groups = denied_groups;
        return Gate::Refuse(ResponseKind::OffsetFetch(resp));
    }
    Gate::Pass(RequestKind::OffsetFetch(r), Merge::OffsetFetch { denied_v0: Vec::new(), denied_groups, denied_topics })
}

fn add_partitions_to_txn(check: &Check, r: kafka_protocol::messages::AddPartitionsToTxnRequest, version: i16) -> Gate {
    use kafka_protocol::messages::add_partitions_to_txn_response::*;
    let txn_code = errors::denied(Rt::TransactionalId);
    let topic_code = errors::denied(Rt::Topic);
    // v4+ is the brokers' batched verification: CLUSTER_ACTION (KIP-890).
    if version >= 4 {
        if check.cluster(Op::ClusterAction) {
            return Gate::Pass(RequestKind::AddPartitionsToTxn(r), Merge::Nothing);
        }
        let mut resp = AddPartitionsToTxnResponse::default();
        resp.error_code = errors::denied(Rt::Cluster);
        return Gate::Refuse(ResponseKind::AddPartitionsToTxn(resp));
    }
    // v0-3 carry one transaction (the `v3_and_below_*` fields).
    let id = r.v3_and_below_transactional_id.clone();
    let results = |code: &dyn Fn(&TopicName) -> i16| {
        r.v3_and_below_topics
            .iter()
            .map(|t| {
                let mut e = AddPartitionsToTxnTopicResult::default();
                e.name = t.name.clone();
                e.results_by_partition = t
                    .partitions
                    .iter()
                    .map(|p| {
                        let mut d = AddPartitionsToTxnPartitionResult::default();
                        d.partition_index = *p;
                        d.partition_error_code = code(&t.name);
                        d
                    })
                    .collect();
                e
            })
            .collect::<Vec<_>>()
    };
    let refuse = |topics: Vec<AddPartitionsToTxnTopicResult>| {
        let mut resp = AddPartitionsToTxnResponse::default();
        resp.results_by_topic_v3_and_below = topics;
        Gate::Refuse(ResponseKind::AddPartitionsToTxn(resp))
    };
    if !check.txn(Op::Write, s(&id.0)) {
        return refuse(results(&|_| txn_code));
    }
    let denied: Vec<String> = r
        .v3_and_below_topics
        .iter()
        .filter(|t| !check.topic(Op::Write, s(&t.name.0)))
        .map(|t| t.name.0.to_string())
        .collect();
    if denied.is_empty() {
        return Gate::Pass(RequestKind::AddPartitionsToTxn(r), Merge::Nothing);
    }
    // Kafka adds nothing when a topic is refused: the others are OPERATION_NOT_ATTEMPTED.
    let not_attempted = errors::code(kafka_protocol::ResponseError::OperationNotAttempted);
    let code = |n: &TopicName| if denied.iter().any(|d| d == s(&n.0)) { topic_code } else { not_attempted };
    refuse(results(&code))
}

impl Merge {
    /// Completes the handler's answer (see the module docs).
    pub fn apply(self, handled: Handled, check: Check) -> Handled {
        if matches!(self, Merge::Nothing) {
            return handled;
        }
        match handled {
            Handled::Ready(resp) => Handled::Ready(self.complete(resp, &check)),
            Handled::Deferred(fut) => Handled::Deferred(fut.map(move |resp| self.complete(resp, &check)).boxed()),
            Handled::NoResponse => Handled::NoResponse,
        }
    }

    fn complete(self, resp: ResponseKind, check: &Check) -> ResponseKind {
        match (self, resp) {
            (Merge::Produce(d), ResponseKind::Produce(mut r)) => {
                r.responses.extend(d);
                ResponseKind::Produce(r)
            }
            (Merge::Fetch(d), ResponseKind::Fetch(mut r)) => {
                r.responses.extend(d);
                ResponseKind::Fetch(r)
            }
            (Merge::FetchSession(d), ResponseKind::Fetch(mut r)) => {
                // A session error answers no partition (Kafka's SessionErrorContext).
                if r.error_code != errors::NONE {
                    return ResponseKind::Fetch(r);
                }
                // Kafka checks every partition of the session on every fetch: one whose topic is
                // no longer readable gets the error instead of its records.
                let topic_code = errors::denied(Rt::Topic);
                for t in &mut r.responses {
                    if check.topic(Op::Read, s(&t.topic.0)) {
                        continue;
                    }
                    for p in &mut t.partitions {
                        *p = kafka_protocol::messages::fetch_response::PartitionData::default()
                            .with_partition_index(p.partition_index)
                            .with_error_code(topic_code)
                            .with_high_watermark(-1)
                            .with_last_stable_offset(-1)
                            .with_log_start_offset(-1)
                            .with_records(Some(Default::default()));
                    }
                }
                for denied in d {
                    let answered: Vec<i32> = r
                        .responses
                        .iter()
                        .filter(|t| t.topic == denied.topic)
                        .flat_map(|t| t.partitions.iter().map(|p| p.partition_index))
                        .collect();
                    let mut denied = denied;
                    denied.partitions.retain(|p| !answered.contains(&p.partition_index));
                    if !denied.partitions.is_empty() {
                        r.responses.push(denied);
                    }
                }
                ResponseKind::Fetch(r)
            }
            (Merge::ListOffsets(d), ResponseKind::ListOffsets(mut r)) => {
                r.topics.extend(d);
                ResponseKind::ListOffsets(r)
            }
            (Merge::OffsetForLeaderEpoch(d), ResponseKind::OffsetForLeaderEpoch(mut r)) => {
                r.topics.extend(d);
                ResponseKind::OffsetForLeaderEpoch(r)
            }
            (Merge::Metadata { denied, all }, ResponseKind::Metadata(mut r)) => {
                if all {
                    r.topics.retain(|t| t.name.as_ref().is_some_and(|n| check.sees(Op::Describe, Rt::Topic, s(&n.0))));
                }
                for t in &mut r.topics {
                    if t.topic_authorized_operations != i32::MIN
                        && let Some(n) = &t.name
                    {
                        t.topic_authorized_operations = check.authorized_operations(Rt::Topic, s(&n.0));
                    }
                }
                r.topics.extend(denied);
                if r.cluster_authorized_operations != i32::MIN {
                    r.cluster_authorized_operations = check.authorized_operations(Rt::Cluster, CLUSTER_NAME);
                }
                ResponseKind::Metadata(r)
            }
            (Merge::CreateTopics(d), ResponseKind::CreateTopics(mut r)) => {
                // A created topic's configs and counts only for who may DESCRIBE_CONFIGS it;
                // otherwise Kafka's controller answers TOPIC_AUTHORIZATION_FAILED in the
                // (v5+ tagged) `topic_config_error_code` and leaves them at their defaults.
                for t in r.topics.iter_mut().filter(|t| t.error_code == errors::NONE) {
                    if !check.sees(Op::DescribeConfigs, Rt::Topic, s(&t.name.0)) {
                        t.topic_config_error_code = errors::denied(Rt::Topic);
                        t.num_partitions = -1;
                        t.replication_factor = -1;
                        t.configs = t.configs.take().map(|_| Vec::new());
                    }
                }
                r.topics.extend(d);
                ResponseKind::CreateTopics(r)
            }
            (Merge::DeleteTopics(d), ResponseKind::DeleteTopics(mut r)) => {
                r.responses.extend(d);
                ResponseKind::DeleteTopics(r)
            }
            (Merge::CreatePartitions(d), ResponseKind::CreatePartitions(mut r)) => {
                r.results.extend(d);
                ResponseKind::CreatePartitions(r)
            }
            (Merge::DeleteRecords(d), ResponseKind::DeleteRecords(mut r)) => {
                r.topics.extend(d);
                ResponseKind::DeleteRecords(r)
            }
            (Merge::DescribeCluster, ResponseKind::DescribeCluster(mut r)) => {
                if r.cluster_authorized_operations != i32::MIN {
                    r.cluster_authorized_operations = if check.sees(Op::Describe, Rt::Cluster, CLUSTER_NAME) {
                        check.authorized_operations(Rt::Cluster, CLUSTER_NAME)
                    } else {
                        0
                    };
                }
                ResponseKind::DescribeCluster(r)
            }
            (Merge::DescribeTopicPartitions { denied, all }, ResponseKind::DescribeTopicPartitions(mut r)) => {
                if all {
                    r.topics.retain(|t| t.name.as_ref().is_some_and(|n| check.sees(Op::Describe, Rt::Topic, s(&n.0))));
                }
                for t in &mut r.topics {
                    if t.topic_authorized_operations != i32::MIN
                        && let Some(n) = &t.name
                    {
                        t.topic_authorized_operations = check.authorized_operations(Rt::Topic, s(&n.0));
                    }
                }
                r.topics.extend(denied);
                ResponseKind::DescribeTopicPartitions(r)
            }
            (Merge::DescribeConfigs(d), ResponseKind::DescribeConfigs(mut r)) => {
                r.results.extend(d);
                ResponseKind::DescribeConfigs(r)
            }
            (Merge::AlterConfigs(d), ResponseKind::AlterConfigs(mut r)) => {
                r.responses.extend(d);
                ResponseKind::AlterConfigs(r)
            }
            (Merge::IncrementalAlterConfigs(d), ResponseKind::IncrementalAlterConfigs(mut r)) => {
                r.responses.extend(d);
                ResponseKind::IncrementalAlterConfigs(r)
            }
            (Merge::DescribeProducers(d), ResponseKind::DescribeProducers(mut r)) => {
                r.topics.extend(d);
                ResponseKind::DescribeProducers(r)
            }
            (Merge::FindCoordinator(d), ResponseKind::FindCoordinator(mut r)) => {
                r.coordinators.extend(d);
                ResponseKind::FindCoordinator(r)
            }
            (Merge::DescribeGroups(d), ResponseKind::DescribeGroups(mut r)) => {
                for g in &mut r.groups {
                    if g.authorized_operations != i32::MIN {
                        g.authorized_operations = check.authorized_operations(Rt::Group, s(&g.group_id.0));
                    }
                }
                r.groups.extend(d);
                ResponseKind::DescribeGroups(r)
            }
            (Merge::ListGroups, ResponseKind::ListGroups(mut r)) => {
                // DESCRIBE on the cluster lists every group; otherwise those one may describe.
                if !check.sees(Op::Describe, Rt::Cluster, CLUSTER_NAME) {
                    r.groups.retain(|g| check.sees(Op::Describe, Rt::Group, s(&g.group_id.0)));
                }
                ResponseKind::ListGroups(r)
            }
            (Merge::DeleteGroups(d), ResponseKind::DeleteGroups(mut r)) => {
                r.results.extend(d);
                ResponseKind::DeleteGroups(r)
            }
            (Merge::OffsetCommit(d), ResponseKind::OffsetCommit(mut r)) => {
                r.topics.extend(d);
                ResponseKind::OffsetCommit(r)
            }
            (Merge::OffsetFetch { denied_v0, denied_groups, denied_topics }, ResponseKind::OffsetFetch(mut r)) => {
                // Offsets of every topic: only those the principal may describe.
                r.topics.retain(|t| {
                    denied_v0.iter().any(|d| d.name == t.name) || check.sees(Op::Describe, Rt::Topic, s(&t.name.0))
                });
                r.topics.extend(denied_v0);
                for g in &mut r.groups {
                    g.topics.retain(|t| check.sees(Op::Describe, Rt::Topic, s(&t.name.0)));
                    if let Some((_, d)) = denied_topics.iter().find(|(id, _)| *id == g.group_id) {
                        g.topics.extend(d.iter().cloned());
                    }
                }
                r.groups.extend(denied_groups);
                ResponseKind::OffsetFetch(r)
            }
            (Merge::OffsetDelete(d), ResponseKind::OffsetDelete(mut r)) => {
                r.topics.extend(d);
                ResponseKind::OffsetDelete(r)
            }
            (Merge::ConsumerGroupDescribe(d), ResponseKind::ConsumerGroupDescribe(mut r)) => {
                for g in &mut r.groups {
                    if g.authorized_operations != i32::MIN {
                        g.authorized_operations = check.authorized_operations(Rt::Group, s(&g.group_id.0));
                    }
                }
                r.groups.extend(d);
                ResponseKind::ConsumerGroupDescribe(r)
            }
            (Merge::TxnOffsetCommit(d), ResponseKind::TxnOffsetCommit(mut r)) => {
                r.topics.extend(d);
                ResponseKind::TxnOffsetCommit(r)
            }
            (Merge::DescribeTransactions(d), ResponseKind::DescribeTransactions(mut r)) => {
                r.transaction_states.extend(d);
                ResponseKind::DescribeTransactions(r)
            }
            (Merge::ListTransactions, ResponseKind::ListTransactions(mut r)) => {
                r.transaction_states
                    .retain(|t| check.sees(Op::Describe, Rt::TransactionalId, s(&t.transactional_id.0)));
                ResponseKind::ListTransactions(r)
            }
            (merge, other) => {
                // A handler answered with another API's body: a bug, never the client's doing.
                tracing::error!(
                    merge = merge.name(),
                    response = ?std::mem::discriminant(&other),
                    "authorization merge does not match the response"
                );
                other
            }
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Merge::Nothing => "nothing",
            _ => "denied entries",
        }
    }
}
