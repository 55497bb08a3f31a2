//! Metadata: brokers, topics and partition leaders; auto-creates topics when allowed.
//!
//! Internal topics (`broker/internal_topics.rs`) are listed with `is_internal` among all topics
//! and when named; they are never auto-created.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use skiff_controller::image::MetadataImage;
use tracing::info;
use uuid::Uuid;

use super::errors::{self, code};
use crate::broker::internal_topics;
use crate::broker::peer_watch;
use crate::broker::{Broker, validate_topic_name};

/// Answers Metadata, holding the answer while a partition it names is led by a broker whose
/// process this broker saw go (`broker/peer_watch.rs`): until the controller's fence reaches the
/// image (the answer then names the new leader), at most until [`peer_watch::HOLD_MAX`] after the
/// loss; past that, a leader whose listener still refuses connections is reported as
/// LEADER_NOT_AVAILABLE. A client asking right after its connection to a dead leader broke so
/// gets the new leader in one round instead of the dead one and its own refresh backoff.
pub async fn handle_held(
    broker: &Arc<Broker>,
    req: MetadataRequest,
    version: i16,
    protocol: crate::security::listener::SecurityProtocol,
    advertised: crate::security::listener::Advertised,
) -> MetadataResponse {
    let here = crate::security::ListenerContext { protocol, advertised, tls: None, sasl: None };
    let started = broker.clock.now();
    let mut peers = broker.peers.subscribe();
    let mut applied = broker.metadata.subscribe();
    let mut rebuilt = 0;
    loop {
        peers.borrow_and_update();
        applied.borrow_and_update();
        let mut answer = handle(broker, req.clone(), version, &here).await;
        if names_a_leader_not_live(broker, &answer) && rebuilt < STALE_REBUILDS {
            // The image moved on (a fence) while the answer was built: build it again.
            rebuilt += 1;
            continue;
        }
        let now = broker.clock.now();
        match hold_until(broker, &answer, now) {
            Some(until) if now < until && now < started + peer_watch::HOLD_MAX => {
                tokio::select! {
                    _ = peers.changed() => {}
                    _ = applied.changed() => {}
                    () = broker.clock.sleep_until(until.min(started + peer_watch::HOLD_MAX)) => {}
                }
            }
            _ => {
                let held = now - started;
                if held >= std::time::Duration::from_millis(1) {
                    info!(
                        held_ms = held.as_millis() as u64,
                        unix_ms = broker.clock.now_ms(),
                        "Metadata answer held for a lost leader's fence"
                    );
                }
                mark_unavailable(broker, &mut answer, now);
                return answer;
            }
        }
    }
}

/// How often a held answer is built again because the image fenced a leader it names while it
/// was being built (each time the image moved on; a bound, not a retry policy).
const STALE_REBUILDS: u32 = 3;

/// Whether `answer` names as a leader a broker that is not live in the image as it is now:
/// the answer was built from an image that has since fenced that broker (and moved its
/// partitions). The peer watch has no verdict on a fenced broker (the image has the last word),
/// so without this check such an answer would go out naming the dead leader, which is what a
/// loaded broker did when a fence landed between building an answer and judging it (franz-go
/// then waited out its 5 s `MetadataMinAge`).
pub fn names_a_leader_not_live(broker: &Broker, answer: &MetadataResponse) -> bool {
    let me = broker.settings.node_id;
    let live: Vec<i32> = broker.metadata.read(|m| m.live_broker_processes().into_iter().map(|(id, ..)| id).collect());
    answer
        .topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| p.leader_id.0))
        .any(|l| l >= 0 && l != me && !live.contains(&l))
}

/// Whether an answer must wait: the latest instant any leader it names is held until.
pub fn hold_until(broker: &Broker, answer: &MetadataResponse, now: skiff_time::Instant) -> Option<skiff_time::Instant> {
    verdicts(broker, answer, now)
        .into_iter()
        .filter_map(|(_, v)| match v {
            peer_watch::Verdict::Hold(until) => Some(until),
            _ => None,
        })
        .max()
}

/// Reports the partitions of leaders judged unavailable as LEADER_NOT_AVAILABLE with no leader.
pub fn mark_unavailable(broker: &Broker, answer: &mut MetadataResponse, now: skiff_time::Instant) {
    let gone: Vec<i32> = verdicts(broker, answer, now)
        .into_iter()
        .filter(|(_, v)| *v == peer_watch::Verdict::Unavailable)
        .map(|(id, _)| id)
        .collect();
    if gone.is_empty() {
        return;
    }
    for p in answer.topics.iter_mut().flat_map(|t| t.partitions.iter_mut()) {
        if gone.contains(&p.leader_id.0) {
            p.error_code = code(ResponseError::LeaderNotAvailable);
            p.leader_id = BrokerId(-1);
        }
    }
}

/// Has every other broker `answer` names as a leader answer a ping sent now (see
/// [`peer_watch::PeerWatch::probe_leaders`]), so a leader whose process just died is caught even
/// before this broker's own connection to it closes: a dead process never answers.
pub async fn probe_leaders(broker: &Broker, answer: &MetadataResponse) {
    let leaders: Vec<(i32, Uuid)> = named_leaders(broker, answer).into_iter().map(|(id, inc, _)| (id, inc)).collect();
    if !leaders.is_empty() {
        broker.peers.probe_leaders(&leaders, broker.clock.as_ref()).await;
    }
}

/// Every live broker other than this one that `answer` names as a leader: (id, incarnation,
/// listener address).
fn named_leaders(broker: &Broker, answer: &MetadataResponse) -> Vec<(i32, Uuid, String)> {
    let me = broker.settings.node_id;
    let mut leaders: Vec<i32> = answer
        .topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| p.leader_id.0))
        .filter(|l| *l >= 0 && *l != me)
        .collect();
    leaders.sort_unstable();
    leaders.dedup();
    if leaders.is_empty() {
        return Vec::new();
    }
    let processes = broker.metadata.read(|m| m.live_broker_processes());
    leaders
        .into_iter()
        .filter_map(|id| {
            let (_, incarnation, addrs) = processes.iter().find(|(b, ..)| *b == id)?;
            Some((id, *incarnation, addrs.first()?.clone()))
        })
        .collect()
}

/// The peer watch's verdict on each broker (not this one) that `answer` names as a leader.
fn verdicts(broker: &Broker, answer: &MetadataResponse, now: skiff_time::Instant) -> Vec<(i32, peer_watch::Verdict)> {
    named_leaders(broker, answer)
        .into_iter()
        .map(|(id, incarnation, _)| (id, broker.peers.judge(id, incarnation, now)))
        .collect()
}

/// "Authorized operations" were not requested (Kafka's INT32_MIN).
const AUTHORIZED_OPERATIONS_OMITTED: i32 = i32::MIN;
/// Without an authorizer every operation is allowed: READ, WRITE, CREATE, DELETE, ALTER,
/// DESCRIBE, DESCRIBE_CONFIGS, ALTER_CONFIGS (AclOperation codes 3-8, 10, 11) as a bit field.
pub const TOPIC_OPERATIONS_ALL: i32 =
    (1 << 3) | (1 << 4) | (1 << 5) | (1 << 6) | (1 << 7) | (1 << 8) | (1 << 10) | (1 << 11);
/// CREATE, ALTER, DESCRIBE, CLUSTER_ACTION, DESCRIBE_CONFIGS, ALTER_CONFIGS, IDEMPOTENT_WRITE.
pub const CLUSTER_OPERATIONS_ALL: i32 = (1 << 5) | (1 << 7) | (1 << 8) | (1 << 9) | (1 << 10) | (1 << 11) | (1 << 12);

pub async fn handle(
    broker: &Arc<Broker>,
    req: MetadataRequest,
    version: i16,
    here: &crate::security::ListenerContext,
) -> MetadataResponse {
    // v12 may name topics by id: a KIP-848 consumer learns the topics a server-side regex
    // matched only as ids in its assignment. As in Kafka's KafkaApis, once any id is given the
    // names are ignored (the client sends "" for them), nothing is auto-created, and an unknown
    // id answers UNKNOWN_TOPIC_ID.
    let by_id: Vec<Uuid> = match &req.topics {
        Some(t) if version >= 12 => t.iter().map(|t| t.topic_id).filter(|id| !id.is_nil()).collect(),
        _ => Vec::new(),
    };
    // v0 uses an empty list for "all topics"; v1+ uses null.
    let requested: Option<Vec<String>> = match &req.topics {
        _ if !by_id.is_empty() => Some(Vec::new()),
        None => None,
        Some(t) if t.is_empty() && version == 0 => None,
        Some(t) => Some(t.iter().filter_map(|t| t.name.as_ref().map(|n| n.0.to_string())).collect()),
    };
    // Auto-create (v4+ asks explicitly; before that it is implied).
    let allow_create = broker.settings.auto_create_topics && (version < 4 || req.allow_auto_topic_creation);
    let mut create_errors: BTreeMap<String, i16> = BTreeMap::new();
    if let Some(names) = &requested {
        for name in names {
            if validate_topic_name(name).is_err() {
                create_errors.insert(name.clone(), code(ResponseError::InvalidTopicException));
                continue;
            }
            if allow_create && !internal_topics::is_internal(name) && !broker.metadata.read(|m| m.topic_exists(name)) {
                match broker.create_topic(name, -1, BTreeMap::new(), false).await {
                    Ok(_) => info!(topic = %name, "auto-created topic"),
                    Err(crate::broker::CreateTopicError::Exists(_)) => {}
                    Err(e) => {
                        create_errors.insert(name.clone(), errors::create_topic(&e));
                    }
                }
            }
        }
    }
    let s = &broker.settings;
    let mut listed = live_brokers_on(broker, here);
    listed.extend(recently_fenced(broker));
    listed.sort_by_key(|b| b.0);
    let brokers = listed
        .into_iter()
        .map(|(id, host, port, rack)| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(id))
                .with_host(StrBytes::from_string(host))
                .with_port(port)
                .with_rack(rack.map(StrBytes::from_string))
        })
        .collect();
    let topic_ops = if version >= 8 && req.include_topic_authorized_operations {
        TOPIC_OPERATIONS_ALL
    } else {
        AUTHORIZED_OPERATIONS_OMITTED
    };
    let cluster_ops = if (8..=10).contains(&version) && req.include_cluster_authorized_operations {
        CLUSTER_OPERATIONS_ALL
    } else {
        AUTHORIZED_OPERATIONS_OMITTED
    };
    let topics = broker.metadata.read(|m| {
        if !by_id.is_empty() {
            return by_id
                .iter()
                .map(|id| match topic_name_by_id(m, id).and_then(|name| topic_view(m, &name, s.node_id)) {
                    Some(t) => topic_entry(t, version, topic_ops),
                    None => MetadataResponseTopic::default()
                        .with_error_code(code(ResponseError::UnknownTopicId))
                        .with_name(None)
                        .with_topic_id(*id)
                        .with_topic_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED),
                })
                .collect();
        }
        let names: Vec<String> = match &requested {
            None => all_topic_names(m),
            Some(n) => n.clone(),
        };
        names
            .into_iter()
            .map(|name| {
                if let Some(err) = create_errors.get(&name) {
                    return MetadataResponseTopic::default()
                        .with_error_code(*err)
                        .with_name(Some(TopicName(StrBytes::from_string(name))))
                        .with_topic_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED);
                }
                match topic_view(m, &name, s.node_id) {
                    Some(t) => topic_entry(t, version, topic_ops),
                    None => MetadataResponseTopic::default()
                        .with_error_code(code(ResponseError::UnknownTopicOrPartition))
                        .with_name(Some(TopicName(StrBytes::from_string(name))))
                        .with_topic_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED),
                }
            })
            .collect::<Vec<_>>()
    });
    let cluster_id = broker.metadata.read(|m| m.cluster_id().to_string());
    MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id(Some(StrBytes::from_string(cluster_id)))
        .with_controller_id(BrokerId(s.node_id))
        .with_topics(topics)
        .with_cluster_authorized_operations(cluster_ops)
}

/// Every topic name, regular and internal, in name order. A regular topic stored under an
/// internal name (possible only in metadata written before internal topics existed) is hidden
/// behind the internal one.
pub fn all_topic_names(m: &MetadataImage) -> Vec<String> {
    let mut names: Vec<String> =
        m.topics().map(|t| t.name()).filter(|n| !internal_topics::is_internal(n)).map(str::to_string).collect();
    names.extend(internal_topics::ALL.iter().map(|t| t.name.to_string()));
    names.sort();
    names
}

/// (id, host, port, rack) of every live broker, this one always included (its own entry from
/// its settings, in case its image has not yet applied its registration).
pub fn live_brokers(broker: &Broker) -> Vec<(i32, String, i32, Option<String>)> {
    let s = &broker.settings;
    let mut out: Vec<_> = broker.metadata.read(|m| {
        m.live_broker_endpoints()
            .into_iter()
            .filter(|b| b.broker_id != s.node_id)
            .map(|b| (b.broker_id, b.host, b.port, b.rack))
            .collect()
    });
    out.push((s.node_id, s.advertised_host.clone(), s.advertised_port, s.rack.clone()));
    out.sort_by_key(|b| b.0);
    out
}

/// How long a broker keeps listing a broker it has seen fenced (leading nothing) among
/// Metadata's brokers. A client that learns a partition's new leader in the same answer that
/// drops the old leader's entry may lose the move: librdkafka 2.x then decommissions the old
/// broker's handle, which hands the partition back to no broker until its next 1 s topic scan
/// (`tests/failover_clients.rs` measured 2.0-2.7 s to the first acknowledgement after a
/// SIGKILL, ~1.1 s of it this). Listed a little longer, the first answer naming the new leader
/// moves the partition, and the old entry goes once nothing is delegated to it.
pub const FENCED_LISTING_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Brokers fenced less than [`FENCED_LISTING_GRACE`] ago (since this broker first saw them
/// fenced), as (id, host, port, rack). Metadata never names them as a partition's leader.
fn recently_fenced(broker: &Broker) -> Vec<(i32, String, i32, Option<String>)> {
    // (this broker, fenced broker) → when this broker first saw it fenced; keyed by this
    // broker too, as tests run several brokers in one process.
    static SEEN: std::sync::Mutex<BTreeMap<(i32, i32), skiff_time::Instant>> = std::sync::Mutex::new(BTreeMap::new());
    let me = broker.settings.node_id;
    let now = broker.clock.now();
    let registered = broker.metadata.read(|m| m.registered_brokers());
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    let mut out = Vec::new();
    for (b, fenced) in registered {
        if b.broker_id == me {
            continue;
        }
        if !fenced {
            seen.remove(&(me, b.broker_id));
            continue;
        }
        let since = *seen.entry((me, b.broker_id)).or_insert(now);
        if now.saturating_duration_since(since) < FENCED_LISTING_GRACE {
            out.push((b.broker_id, b.host, b.port, b.rack));
        }
    }
    out
}

/// [`live_brokers`] as seen from listener `here`: every broker at the address of its listener
/// of the same name, as Kafka answers (a broker registered without listeners, before they
/// existed, at its one address).
pub fn live_brokers_on(
    broker: &Broker,
    here: &crate::security::ListenerContext,
) -> Vec<(i32, String, i32, Option<String>)> {
    let mut out = live_brokers(broker);
    let name = here.protocol.name();
    broker.metadata.read(|m| {
        for b in out.iter_mut() {
            if b.0 == broker.settings.node_id {
                (b.1, b.2) = (here.advertised.host.clone(), here.advertised.port);
            } else if let Some((host, port)) = m.live_broker_listener(b.0, name) {
                (b.1, b.2) = (host, port);
            }
        }
    });
    out
}

/// One partition as Metadata and DescribeTopicPartitions describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionView {
    /// -1 when no broker leads it.
    pub leader: i32,
    pub leader_epoch: i32,
    /// The assigned replicas (the leader alone unless a manual assignment named several) and
    /// those of them that are live.
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
}

/// A topic, regular or internal, as described to clients.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicView {
    pub name: String,
    pub topic_id: Uuid,
    pub is_internal: bool,
    /// By partition index.
    pub partitions: Vec<PartitionView>,
}

/// The name of the topic (internal or regular) with id `id`.
pub fn topic_name_by_id(m: &MetadataImage, id: &Uuid) -> Option<String> {
    match internal_topics::by_id(id) {
        Some(t) => Some(t.name.to_string()),
        None => m.topic_by_id(id).map(|t| t.name()).filter(|n| !internal_topics::is_internal(n)).map(str::to_string),
    }
}

/// The topic called `name` as clients see it: an internal topic (its partitions led by the
/// coordinator shards' owners, `local` standing in while shards are unassigned) or a regular
/// one. `None` if there is no such topic.
pub fn topic_view(m: &MetadataImage, name: &str, local: i32) -> Option<TopicView> {
    if let Some(t) = internal_topics::find(name) {
        let partitions = t
            .partition_leaders(m, local)
            .into_iter()
            .map(|p| PartitionView {
                leader: p.leader,
                leader_epoch: p.leader_epoch,
                replicas: vec![p.leader],
                isr: vec![p.leader],
            })
            .collect();
        return Some(TopicView { name: t.name.to_string(), topic_id: t.topic_id, is_internal: true, partitions });
    }
    let t = m.topic(name)?;
    let partitions = t
        .partitions()
        .map(|p| {
            let (replicas, isr) = m.reported_replicas(p);
            PartitionView { leader: p.leader(), leader_epoch: p.leader_epoch(), replicas, isr }
        })
        .collect();
    Some(TopicView { name: t.name().to_string(), topic_id: t.id(), is_internal: false, partitions })
}

fn topic_entry(t: TopicView, version: i16, authorized_operations: i32) -> MetadataResponseTopic {
    let partitions = t
        .partitions
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let error = if p.leader < 0 { code(ResponseError::LeaderNotAvailable) } else { errors::NONE };
            MetadataResponsePartition::default()
                .with_error_code(error)
                .with_partition_index(i as i32)
                .with_leader_id(BrokerId(p.leader))
                .with_leader_epoch(p.leader_epoch)
                .with_replica_nodes(p.replicas.iter().copied().map(BrokerId).collect())
                .with_isr_nodes(p.isr.iter().copied().map(BrokerId).collect())
        })
        .collect();
    MetadataResponseTopic::default()
        .with_error_code(errors::NONE)
        .with_name(Some(TopicName(StrBytes::from_string(t.name))))
        .with_topic_id(t.topic_id)
        // v0 has no such field.
        .with_is_internal(t.is_internal && version >= 1)
        .with_partitions(partitions)
        .with_topic_authorized_operations(authorized_operations)
}
