//! `GET /cluster` (controllers, brokers, object store and its cost, features) and
//! `GET /brokers`.
//!
//! The controllers' status is DescribeQuorum's (`controller/src/quorum.rs`, asked of the Raft
//! leader); brokers, topics and objects come from this broker's image; object-storage request
//! counts are this broker process's (as in `/metrics`).

use axum::extract::State;
use axum::response::Response;
use serde::Serialize;

use kafka_protocol::messages::ApiKey;
use skiff_controller::acls::AclOperation;

use super::access::Who;
use super::rates::RateView;
use super::{Api, ApiResult, ok};
use crate::broker::Broker;
use crate::broker::internal_topics;
use crate::handler::features::FEATURES;

/// Seconds in a day, for the cost per day.
const DAY_SECONDS: f64 = 86_400.0;
/// Days in a billed month (AWS bills GB-months of 730 hours).
const MONTH_DAYS: f64 = 730.0 / 24.0;
const GB: f64 = 1e9;

#[derive(Serialize)]
struct Cluster {
    cluster_id: String,
    node_id: i32,
    controller_id: i32,
    controllers: Controllers,
    brokers: BrokerCounts,
    topics: TopicCounts,
    object_store: ObjectStore,
    features: Vec<Feature>,
    security: Security,
}

#[derive(Serialize)]
struct Controllers {
    available: bool,
    error: Option<ErrorBody>,
    leader_id: i32,
    term: i32,
    commit_index: i64,
    applied_index: u64,
    voters: Vec<Voter>,
}

#[derive(Serialize)]
struct ErrorBody {
    code: String,
    message: String,
}

#[derive(Serialize)]
struct Voter {
    id: i32,
    address: String,
    leader: bool,
    log_end_index: i64,
    /// Entries behind the leader's log end; null when unknown.
    lag: Option<i64>,
    last_fetch_ms: Option<i64>,
    last_caught_up_ms: Option<i64>,
}

#[derive(Serialize)]
struct BrokerCounts {
    total: usize,
    live: usize,
    fenced: usize,
}

#[derive(Serialize)]
struct TopicCounts {
    count: usize,
    partitions: usize,
}

#[derive(Serialize)]
struct ObjectStore {
    objects: u64,
    bytes: u64,
    puts: u64,
    gets: u64,
    put_bytes: u64,
    get_bytes: u64,
    deletes: u64,
    lists: u64,
    failures: u64,
    puts_per_sec: f64,
    gets_per_sec: f64,
    rate_window_ms: i64,
    prices: Prices,
    cost_per_day: CostPerDay,
    per_topic: Vec<TopicCost>,
}

#[derive(Serialize)]
struct Prices {
    put_per_1000: f64,
    get_per_1000: f64,
    storage_per_gb_month: f64,
}

#[derive(Serialize)]
struct CostPerDay {
    puts: f64,
    gets: f64,
    storage: f64,
    total: f64,
}

#[derive(Serialize)]
struct TopicCost {
    topic: String,
    bytes: u64,
    puts: f64,
    gets: f64,
    /// Request cost so far (since this broker started).
    cost: f64,
    cost_per_day: f64,
}

#[derive(Serialize)]
struct Feature {
    name: &'static str,
    min_version: i16,
    max_version: i16,
    finalized_level: i16,
}

#[derive(Serialize)]
struct Security {
    enabled: bool,
}

pub(super) async fn cluster(State(api): State<Api>, who: Who) -> ApiResult<Response> {
    let broker = api.broker()?;
    // The quorum's state is DescribeQuorum's (DESCRIBE on the cluster); so are cluster-wide
    // counts and the object store's cost.
    who.on(broker, ApiKey::DescribeQuorum).require_cluster(AclOperation::Describe)?;
    let quorum = broker.controller.describe_quorum().await;
    let applied_index = broker.metadata.applied_index();
    let controllers = match quorum {
        Ok(q) => {
            let leader_end = q.voters.iter().find(|v| v.id == q.leader_id).map(|v| v.log_end_offset);
            let known = |v: i64| (v >= 0).then_some(v);
            Controllers {
                available: true,
                error: None,
                leader_id: q.leader_id,
                term: q.leader_epoch,
                commit_index: q.high_watermark,
                applied_index,
                voters: q
                    .voters
                    .iter()
                    .map(|v| Voter {
                        id: v.id,
                        address: v.addr.clone(),
                        leader: v.id == q.leader_id,
                        log_end_index: v.log_end_offset,
                        lag: leader_end.filter(|_| v.log_end_offset >= 0).map(|end| (end - v.log_end_offset).max(0)),
                        last_fetch_ms: known(v.last_fetch_timestamp_ms),
                        last_caught_up_ms: known(v.last_caught_up_timestamp_ms),
                    })
                    .collect(),
            }
        }
        Err(e) => {
            let e = super::ApiError::kafka(crate::handler::errors::describe_quorum(&e), e.to_string());
            Controllers {
                available: false,
                error: Some(ErrorBody { code: e.name(), message: e.message() }),
                leader_id: -1,
                term: -1,
                commit_index: -1,
                applied_index,
                voters: vec![],
            }
        }
    };
    let rates = api.observe(broker);
    let (cluster_id, brokers, topics) = broker.metadata.read(|m| {
        let registered = m.registered_brokers();
        let fenced = registered.iter().filter(|(_, f)| *f).count();
        let topics = m.topics().filter(|t| !internal_topics::is_internal(t.name())).collect::<Vec<_>>();
        (
            m.cluster_id().to_string(),
            BrokerCounts { total: registered.len(), live: registered.len() - fenced, fenced },
            TopicCounts { count: topics.len(), partitions: topics.iter().map(|t| t.partition_count()).sum() },
        )
    });
    let body = Cluster {
        cluster_id,
        node_id: broker.settings.node_id,
        controller_id: controllers.leader_id,
        controllers,
        brokers,
        topics,
        object_store: object_store(broker, &rates),
        features: FEATURES
            .iter()
            .map(|f| Feature { name: f.name, min_version: f.min, max_version: f.max, finalized_level: f.finalized })
            .collect(),
        security: Security { enabled: false },
    };
    Ok(ok(&body))
}

fn object_store(broker: &Broker, rates: &RateView) -> ObjectStore {
    let prices = broker.settings.prices;
    let stats = broker.reader.storage.stats().snapshot();
    let requests = broker.metrics.topic_requests();
    let (objects, bytes, topics) = broker.metadata.read(|m| {
        let (objects, bytes) =
            m.objects().filter(|o| o.live_chunks > 0).fold((0u64, 0u64), |(n, b), o| (n + 1, b + o.size_bytes));
        let topics: Vec<(uuid::Uuid, String, u64)> =
            m.topics().map(|t| (t.id(), t.name().to_string(), t.partitions().map(|p| p.size_bytes()).sum())).collect();
        (objects, bytes, topics)
    });
    let storage_per_day = |bytes: u64| bytes as f64 / GB * prices.storage_per_gb_month / MONTH_DAYS;
    let mut per_topic: Vec<TopicCost> = topics
        .into_iter()
        .map(|(id, name, bytes)| {
            let (puts, gets) = requests.get(&id).copied().unwrap_or_default();
            let r = rates.topics.get(&id).copied().unwrap_or_default();
            TopicCost {
                topic: name,
                bytes,
                puts,
                gets,
                cost: prices.requests(puts, gets),
                cost_per_day: prices.requests(r.puts * DAY_SECONDS, r.gets * DAY_SECONDS) + storage_per_day(bytes),
            }
        })
        .collect();
    per_topic.sort_by(|a, b| a.topic.cmp(&b.topic));
    let puts_per_day = prices.requests(rates.puts * DAY_SECONDS, 0.0);
    let gets_per_day = prices.requests(0.0, rates.gets * DAY_SECONDS);
    let storage = storage_per_day(bytes);
    ObjectStore {
        objects,
        bytes,
        puts: stats.puts,
        gets: stats.gets,
        put_bytes: stats.put_bytes,
        get_bytes: stats.get_bytes,
        deletes: stats.deletes,
        lists: stats.lists,
        failures: stats.failures,
        puts_per_sec: rates.puts,
        gets_per_sec: rates.gets,
        rate_window_ms: rates.window_ms,
        prices: Prices {
            put_per_1000: prices.put_per_1000,
            get_per_1000: prices.get_per_1000,
            storage_per_gb_month: prices.storage_per_gb_month,
        },
        cost_per_day: CostPerDay {
            puts: puts_per_day,
            gets: gets_per_day,
            storage,
            total: puts_per_day + gets_per_day + storage,
        },
        per_topic,
    }
}

#[derive(Serialize)]
struct Brokers {
    brokers: Vec<BrokerRow>,
}

#[derive(Serialize)]
struct BrokerRow {
    id: i32,
    host: String,
    port: i32,
    address: String,
    rack: Option<String>,
    live: bool,
    fenced: bool,
    partitions_led: usize,
    coordinator_shards: usize,
}

pub(super) async fn brokers(State(api): State<Api>, who: Who) -> ApiResult<Response> {
    let broker = api.broker()?;
    // Leadership and coordinator load per broker: DescribeCluster's details, which the
    // console keeps to principals that may describe the cluster.
    who.on(broker, ApiKey::DescribeCluster).require_cluster(AclOperation::Describe)?;
    let rows = broker.metadata.read(|m| {
        m.registered_brokers()
            .into_iter()
            .map(|(b, fenced)| {
                let led = m.topics().flat_map(|t| t.partitions()).filter(|p| p.leader() == b.broker_id).count();
                BrokerRow {
                    id: b.broker_id,
                    address: format!("{}:{}", b.host, b.port),
                    host: b.host,
                    port: b.port,
                    rack: b.rack,
                    live: !fenced,
                    fenced,
                    partitions_led: led,
                    coordinator_shards: m.shards_of(b.broker_id),
                }
            })
            .collect()
    });
    Ok(ok(&Brokers { brokers: rows }))
}
