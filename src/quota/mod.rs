//! Client quotas, enforced as Kafka enforces them (KIP-13, KIP-55, KIP-124, KIP-219, KIP-612;
//! docs/security.md "Quotas").
//!
//! The values live in controller state (AlterClientQuotas, `controller/src/quotas.rs`) and so
//! in every broker's image. Here: which entity applies to a request ([`resolve`], Kafka's
//! precedence from `/config/users/<user>/clients/<client-id>` down to
//! `/config/clients/<default>`), the sampled rate per (user, client-id) bucket ([`rate`]), and
//! what a connection does about a throttle ([`handle`]): the answer goes back at once carrying
//! `throttle_time_ms` and the connection is muted (its next request is not read) for that long;
//! versions older than KIP-219's (Produce < 6, Fetch < 8, and every other API, whose responses
//! Skiff does not stamp) get their answer delayed by the throttle instead, as Kafka does for
//! clients that do not throttle themselves. A throttled fetch returns no records (Kafka's
//! `getThrottledResponse`) and its bytes are not counted.
//!
//! Memory is bounded: a sensor exists only for a bucket that has a quota, an idle one (every
//! sample expired, so it would measure 0) is dropped, and at [`MAX_SENSORS`] new buckets are
//! not tracked (logged) until idle ones expire.

pub mod mutation;
pub mod rate;

use std::collections::HashMap;
use std::fmt::Write;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::AtomicI64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use kafka_protocol::messages::{ApiKey, RequestKind, ResponseKind};
use skiff_controller::intent::{EntityName, QuotaEntity, QuotasState};

use self::mutation::{MutationQuota, TokenBucket};
use self::rate::{Rate, Window};
use crate::broker::Broker;
use crate::handler::{self, Handled};
use crate::protocol::Request;
use crate::security::{ListenerContext, Principal};

pub const PRODUCER_BYTE_RATE: &str = "producer_byte_rate";
pub const CONSUMER_BYTE_RATE: &str = "consumer_byte_rate";
pub const REQUEST_PERCENTAGE: &str = "request_percentage";
pub const CONTROLLER_MUTATION_RATE: &str = "controller_mutation_rate";
pub const CONNECTION_CREATION_RATE: &str = "connection_creation_rate";

/// The quota keys of user and client-id entities and whether each is integral (Kafka's
/// `QuotaConfig`: the byte rates are LONG, the others DOUBLE).
pub const CLIENT_KEYS: [(&str, bool); 4] = [
    (PRODUCER_BYTE_RATE, true),
    (CONSUMER_BYTE_RATE, true),
    (REQUEST_PERCENTAGE, false),
    (CONTROLLER_MUTATION_RATE, false),
];
/// The quota keys of ip entities (INT).
pub const IP_KEYS: [(&str, bool); 1] = [(CONNECTION_CREATION_RATE, true)];

/// Buckets tracked at once (all kinds together); beyond, new ones are not throttled until idle
/// ones expire.
pub const MAX_SENSORS: usize = 100_000;
/// Buckets listed in `/metrics` per kind (the highest rates), bounding label cardinality.
pub const METRICS_TOP: usize = 20;

/// What a sensor measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Produce,
    Fetch,
    Request,
}

impl Kind {
    fn key(self) -> &'static str {
        match self {
            Kind::Produce => PRODUCER_BYTE_RATE,
            Kind::Fetch => CONSUMER_BYTE_RATE,
            Kind::Request => REQUEST_PERCENTAGE,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Kind::Produce => "produce",
            Kind::Fetch => "fetch",
            Kind::Request => "request",
        }
    }
}

/// The quota that applies to a client and the bucket it is counted in: Kafka's metric tags
/// (user, client-id), empty where the matched entity leaves a component out.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    pub bound: f64,
    pub user: String,
    pub client_id: String,
}

/// Kafka's `DefaultQuotaCallback`: the first entity in this order that sets `key` applies.
/// 1 `users/<user>/clients/<client-id>`, 2 `users/<user>/clients/<default>`, 3 `users/<user>`,
/// 4 `users/<default>/clients/<client-id>`, 5 `users/<default>/clients/<default>`,
/// 6 `users/<default>`, 7 `clients/<client-id>`, 8 `clients/<default>`.
pub fn resolve(state: &QuotasState, key: &str, user: &str, client_id: &str) -> Option<Resolved> {
    let name = |n: &str| Some(EntityName::Name(n.to_string()));
    let default = Some(EntityName::Default);
    let e = |user: Option<EntityName>, client_id: Option<EntityName>| QuotaEntity { user, client_id, ip: None };
    let (u, c) = (user.to_string(), client_id.to_string());
    let order = [
        (e(name(user), name(client_id)), (u.clone(), c.clone())),
        (e(name(user), default.clone()), (u.clone(), c.clone())),
        (e(name(user), None), (u.clone(), String::new())),
        (e(default.clone(), name(client_id)), (u.clone(), c.clone())),
        (e(default.clone(), default.clone()), (u.clone(), c.clone())),
        (e(default.clone(), None), (u, String::new())),
        (e(None, name(client_id)), (String::new(), c.clone())),
        (e(None, default), (String::new(), c)),
    ];
    order.into_iter().find_map(|(entity, (user, client_id))| {
        state.value(&entity, key).map(|bound| Resolved { bound, user, client_id })
    })
}

/// `connection_creation_rate` of `ip`: `ips/<ip>`, else `ips/<default>`.
pub fn resolve_ip(state: &QuotasState, ip: IpAddr) -> Option<f64> {
    let e = |ip| QuotaEntity { user: None, client_id: None, ip: Some(ip) };
    state
        .value(&e(EntityName::Name(ip.to_string())), CONNECTION_CREATION_RATE)
        .or_else(|| state.value(&e(EntityName::Default), CONNECTION_CREATION_RATE))
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum SensorKey {
    Client { kind: Kind, user: String, client_id: String },
    Ip(IpAddr),
}

struct Sensor {
    rate: Rate,
    bound: f64,
    throttle_ms_total: u64,
}

/// Broker-wide quota state: the sensors of every bucket with a quota.
pub struct Quotas {
    window: Window,
    /// `max_connection_creation_rate` (0: none), over all listeners.
    max_connection_creation_rate: f64,
    sensors: Mutex<HashMap<SensorKey, Sensor>>,
    /// `controller_mutation_rate` buckets by (user, client-id) tags; a full one is forgotten.
    buckets: Mutex<HashMap<(String, String), TokenBucket>>,
    connections: Mutex<Rate>,
    /// Connections refused by an ip's `connection_creation_rate`; accept delays by the
    /// broker-wide rate, in ms.
    pub connections_throttled_ip: std::sync::atomic::AtomicU64,
    pub accept_delay_ms: std::sync::atomic::AtomicU64,
    untracked: crate::security::RateLimitedLog,
}

impl Quotas {
    pub fn new(window: Window, max_connection_creation_rate: f64) -> Self {
        Self {
            window,
            max_connection_creation_rate,
            sensors: Mutex::new(HashMap::new()),
            buckets: Mutex::new(HashMap::new()),
            connections: Mutex::new(Rate::new(0)),
            connections_throttled_ip: Default::default(),
            accept_delay_ms: Default::default(),
            untracked: crate::security::RateLimitedLog::new(1),
        }
    }

    pub fn window(&self) -> Window {
        self.window
    }

    fn sensors(&self) -> std::sync::MutexGuard<'_, HashMap<SensorKey, Sensor>> {
        self.sensors.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records `value` in `key`'s sensor (created if absent) and returns the throttle in ms.
    fn record(&self, key: SensorKey, bound: f64, value: f64, now_ms: i64, check: bool) -> i64 {
        let w = self.window;
        let mut sensors = self.sensors();
        if !sensors.contains_key(&key) {
            if sensors.len() >= MAX_SENSORS {
                sensors.retain(|_, s| !s.rate.idle(w, now_ms));
            }
            if sensors.len() >= MAX_SENSORS {
                if self.untracked.admit(now_ms).is_some() {
                    tracing::warn!(limit = MAX_SENSORS, "quota sensors at their limit; a new client is not throttled");
                }
                return 0;
            }
            sensors.insert(key.clone(), Sensor { rate: Rate::new(now_ms), bound, throttle_ms_total: 0 });
        }
        let Some(s) = sensors.get_mut(&key) else { return 0 };
        s.bound = bound;
        if !check {
            s.rate.record(w, value, now_ms);
            return 0;
        }
        let t = rate::record_and_throttle(&mut s.rate, w, value, bound, now_ms);
        s.throttle_ms_total += t as u64;
        t
    }

    /// Records `value` for a client under `kind`'s quota, if one applies; the throttle in ms.
    pub fn record_client(
        &self,
        state: &QuotasState,
        kind: Kind,
        user: &str,
        client_id: &str,
        value: f64,
        now_ms: i64,
    ) -> i64 {
        match resolve(state, kind.key(), user, client_id) {
            Some(r) => self.record(
                SensorKey::Client { kind, user: r.user, client_id: r.client_id },
                r.bound,
                value,
                now_ms,
                true,
            ),
            None => 0,
        }
    }

    /// Kafka's `unrecordQuotaSensor`: takes back bytes of a fetch answered empty.
    fn unrecord_client(&self, state: &QuotasState, kind: Kind, user: &str, client_id: &str, value: f64, now_ms: i64) {
        if let Some(r) = resolve(state, kind.key(), user, client_id) {
            self.record(
                SensorKey::Client { kind, user: r.user, client_id: r.client_id },
                r.bound,
                -value,
                now_ms,
                false,
            );
        }
    }

    /// The controller mutation quota of one request from (`user`, `client_id`): strict or
    /// permissive by the request's version (see [`mutation`]).
    pub fn mutation_quota(&self, state: &QuotasState, user: &str, client_id: &str, strict: bool) -> MutationQuota {
        let bucket = resolve(state, CONTROLLER_MUTATION_RATE, user, client_id).map(|r| (r.user, r.client_id, r.bound));
        MutationQuota::new(bucket, strict)
    }

    /// Charges `permits` partitions to `quota`'s bucket at `now_ms`: `Err(throttle ms)` when a
    /// strict quota refuses them (Kafka's THROTTLING_QUOTA_EXCEEDED for that topic).
    pub fn charge_mutation(&self, quota: &mut MutationQuota, permits: f64, now_ms: i64) -> mutation::Charge {
        let Some((user, client_id, rate)) = quota.bucket.clone() else { return Ok(()) };
        let w = self.window;
        let result = {
            let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
            let key = (user, client_id);
            if !buckets.contains_key(&key) && buckets.len() >= MAX_SENSORS {
                buckets.retain(|_, b| !b.full(w, rate, now_ms));
                if buckets.len() >= MAX_SENSORS {
                    if self.untracked.admit(now_ms).is_some() {
                        tracing::warn!(
                            limit = MAX_SENSORS,
                            "mutation quota buckets at their limit; a new client is not throttled"
                        );
                    }
                    return Ok(());
                }
            }
            let bucket = buckets.entry(key).or_insert_with(|| TokenBucket::new(w, rate, now_ms));
            if quota.strict {
                mutation::charge_strict(bucket, w, rate, permits, now_ms)
            } else {
                let t = mutation::charge_permissive(bucket, w, rate, permits, now_ms);
                if t > 0 {
                    quota.throttled(t, now_ms);
                }
                Ok(())
            }
        };
        if let Err(t) = result {
            quota.throttled(t, now_ms);
        }
        result
    }

    /// Kafka's `getMaxValueInQuotaWindow`: the most a fetch may return under the consumer
    /// quota, so a single answer cannot exceed what the window allows.
    pub fn max_fetch_bytes(&self, state: &QuotasState, user: &str, client_id: &str) -> Option<i32> {
        let w = self.window;
        resolve(state, CONSUMER_BYTE_RATE, user, client_id).map(|r| {
            let bytes = r.bound * (w.samples.saturating_sub(1).max(1)) as f64 * (w.window_ms as f64 / 1000.0);
            bytes.clamp(1.0, f64::from(i32::MAX)) as i32
        })
    }

    /// A connection accepted from `ip` at `now_ms`: `(accept delay, close delay)` in ms.
    /// The broker-wide `max_connection_creation_rate` delays accepting further connections
    /// (Kafka throttles its acceptor); an ip over its `connection_creation_rate` quota has this
    /// connection closed after the throttle time (Kafka's delayed close).
    pub fn connection_created(&self, state: &QuotasState, ip: IpAddr, now_ms: i64) -> (i64, i64) {
        let w = self.window;
        let accept_delay = if self.max_connection_creation_rate > 0.0 {
            let mut r = self.connections.lock().unwrap_or_else(|e| e.into_inner());
            rate::record_and_throttle(&mut r, w, 1.0, self.max_connection_creation_rate, now_ms)
        } else {
            0
        };
        let close_delay = match resolve_ip(state, ip) {
            Some(bound) => {
                let t = self.record(SensorKey::Ip(ip), bound, 1.0, now_ms, true);
                if t > 0 {
                    // As Kafka: a throttled connection is not counted, so an address that keeps
                    // reconnecting is admitted again at the quota's rate.
                    self.record(SensorKey::Ip(ip), bound, -1.0, now_ms, false);
                }
                t
            }
            None => 0,
        };
        if accept_delay > 0 {
            self.accept_delay_ms.fetch_add(accept_delay as u64, Relaxed);
        }
        if close_delay > 0 {
            self.connections_throttled_ip.fetch_add(1, Relaxed);
        }
        (accept_delay, close_delay)
    }

    /// Per-bucket byte/request rates and throttle time for `/metrics`: only buckets with a
    /// quota exist, and at most [`METRICS_TOP`] per kind (highest rate first) are listed.
    pub fn render_metrics(&self, now_ms: i64) -> String {
        let w = self.window;
        let mut rows: Vec<Row> = Vec::new();
        {
            let mut sensors = self.sensors();
            sensors.retain(|_, s| !s.rate.idle(w, now_ms));
            for (k, s) in sensors.iter_mut() {
                if let SensorKey::Client { kind, user, client_id } = k {
                    rows.push(Row {
                        kind: *kind,
                        user: user.clone(),
                        client_id: client_id.clone(),
                        rate: s.rate.measure(w, now_ms),
                        bound: s.bound,
                        throttle_ms: s.throttle_ms_total,
                    });
                }
            }
        }
        rows.sort_by(|a, b| a.kind.cmp(&b.kind).then(b.rate.total_cmp(&a.rate)));
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP skiff_quota_rate Measured rate of a quota bucket (bytes/s, or request_percentage), top {METRICS_TOP} per kind.\n# TYPE skiff_quota_rate gauge"
        );
        let mut listed: Vec<&Row> = Vec::new();
        for kind in [Kind::Produce, Kind::Fetch, Kind::Request] {
            listed.extend(rows.iter().filter(|r| r.kind == kind).take(METRICS_TOP));
        }
        let label = |r: &Row| {
            format!("kind=\"{}\",user=\"{}\",client_id=\"{}\"", r.kind.label(), escape(&r.user), escape(&r.client_id))
        };
        for r in &listed {
            let _ = writeln!(out, "skiff_quota_rate{{{}}} {:.3}", label(r), r.rate);
        }
        let _ =
            writeln!(out, "# HELP skiff_quota_bound The quota a bucket is held to.\n# TYPE skiff_quota_bound gauge");
        for r in &listed {
            let _ = writeln!(out, "skiff_quota_bound{{{}}} {}", label(r), r.bound);
        }
        let _ = writeln!(
            out,
            "# HELP skiff_quota_throttle_time_ms_total Throttle time given to a bucket.\n# TYPE skiff_quota_throttle_time_ms_total counter"
        );
        for r in &listed {
            let _ = writeln!(out, "skiff_quota_throttle_time_ms_total{{{}}} {}", label(r), r.throttle_ms);
        }
        let _ = writeln!(
            out,
            "# HELP skiff_connections_throttled_total Connections closed by an ip's connection_creation_rate quota.\n# TYPE skiff_connections_throttled_total counter\nskiff_connections_throttled_total {}",
            self.connections_throttled_ip.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP skiff_accept_delay_ms_total Time accepting was delayed by max_connection_creation_rate.\n# TYPE skiff_accept_delay_ms_total counter\nskiff_accept_delay_ms_total {}",
            self.accept_delay_ms.load(Relaxed)
        );
        out
    }
}

/// One bucket's line in `/metrics`.
struct Row {
    kind: Kind,
    user: String,
    client_id: String,
    rate: f64,
    bound: f64,
    throttle_ms: u64,
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// A connection's mute: no request is read before this instant (clock ms).
#[derive(Debug, Default)]
pub struct Mute(AtomicI64);

impl Mute {
    fn until(&self, at_ms: i64) {
        self.0.fetch_max(at_ms, Relaxed);
    }

    /// Waits out the mute, if any (the connection's reader calls it before each frame).
    pub async fn wait(&self, broker: &Broker) {
        let until = self.0.load(Relaxed);
        let now = broker.clock.now_ms();
        if until > now {
            broker.clock.sleep(Duration::from_millis((until - now) as u64)).await;
        }
    }
}

/// Runs the request's handler under the client's quotas (see the module docs). Without any
/// quota in the image this is the handler alone.
pub async fn handle(
    broker: &Arc<Broker>,
    mut request: Request,
    frame_bytes: usize,
    peer: SocketAddr,
    listener: &ListenerContext,
    principal: &Principal,
    mute: &Arc<Mute>,
) -> Handled {
    // The image is read under its lock for each look-up rather than cloned per request.
    if broker.metadata.read(|m| m.quotas().is_empty()) {
        return handler::handle(broker, request, peer, listener, principal).await;
    }
    let record = |broker: &Broker, kind, user: &str, client_id: &str, value: f64, now| {
        broker.metadata.read(|m| broker.quotas.record_client(m.quotas(), kind, user, client_id, value, now))
    };
    let (api_key, version) = (request.api_key, request.version);
    let user = principal.name.clone();
    let client_id = request.header.client_id.as_ref().map(|c| c.to_string()).unwrap_or_default();
    let quotas = &broker.quotas;
    let mut acks0 = false;
    match &mut request.body {
        RequestKind::Fetch(f) => {
            if let Some(max) = broker.metadata.read(|m| quotas.max_fetch_bytes(m.quotas(), &user, &client_id)) {
                f.max_bytes = f.max_bytes.min(max);
                f.min_bytes = f.min_bytes.min(f.max_bytes);
            }
        }
        RequestKind::Produce(p) => acks0 = p.acks == 0,
        _ => {}
    }
    let started = broker.clock.now();
    let handled = handler::handle(broker, request, peer, listener, principal).await;
    // Skiff's request_percentage: the handler's time for this request (decoding is done; the
    // wait for durability or a long poll is not counted, it runs after `handle` returns) as a
    // percentage of one second of one core, as Kafka counts request-handler thread time.
    let spent = broker.clock.now().saturating_duration_since(started);
    let now = broker.clock.now_ms();
    let percent = spent.as_nanos() as f64 * 100.0 / 1e9;
    let request_throttle = if acks0 { 0 } else { record(broker, Kind::Request, &user, &client_id, percent, now) };
    match api_key {
        ApiKey::Produce => {
            let bytes = record(broker, Kind::Produce, &user, &client_id, frame_bytes as f64, now);
            let throttle = bytes.max(request_throttle);
            if throttle > 0 {
                mute.until(now + throttle);
            }
            stamp(broker, handled, throttle, version >= 6, |body, t| {
                if let ResponseKind::Produce(r) = body {
                    r.throttle_time_ms = t;
                }
            })
        }
        ApiKey::Fetch => match handled {
            Handled::Deferred(fut) => {
                let (broker, mute) = (broker.clone(), mute.clone());
                Handled::Deferred(
                    async move {
                        let mut body = fut.await;
                        let ResponseKind::Fetch(r) = &mut body else { return body };
                        let bytes: usize = r
                            .responses
                            .iter()
                            .flat_map(|t| &t.partitions)
                            .map(|p| p.records.as_ref().map_or(0, |b| b.len()))
                            .sum();
                        let now = broker.clock.now_ms();
                        let fetch = record(&broker, Kind::Fetch, &user, &client_id, bytes as f64, now);
                        let throttle = fetch.max(request_throttle);
                        if throttle > 0 {
                            // Kafka's throttled fetch: no data, and its bytes are not counted.
                            broker.metadata.read(|m| {
                                broker.quotas.unrecord_client(
                                    m.quotas(),
                                    Kind::Fetch,
                                    &user,
                                    &client_id,
                                    bytes as f64,
                                    now,
                                )
                            });
                            r.responses.clear();
                            // A throttled full fetch creates no session (Kafka's
                            // FetchContext.getThrottledResponse answers id 0).
                            if broker.fetch_sessions.with(|c| c.throttled(r.session_id)) {
                                r.session_id = 0;
                            }
                            r.throttle_time_ms = throttle as i32;
                            mute.until(now + throttle);
                            if version < 8 {
                                broker.clock.sleep(Duration::from_millis(throttle as u64)).await;
                            }
                        }
                        body
                    }
                    .boxed(),
                )
            }
            other => other,
        },
        // The handler answered with its controller mutation throttle (KIP-599); as Kafka's
        // `sendResponseMaybeThrottleWithControllerQuota`, the larger of it and the request
        // throttle is answered and waited out.
        ApiKey::CreateTopics | ApiKey::DeleteTopics | ApiKey::CreatePartitions => {
            let mutation = match &handled {
                Handled::Ready(ResponseKind::CreateTopics(r)) => r.throttle_time_ms,
                Handled::Ready(ResponseKind::DeleteTopics(r)) => r.throttle_time_ms,
                Handled::Ready(ResponseKind::CreatePartitions(r)) => r.throttle_time_ms,
                _ => 0,
            };
            let throttle = request_throttle.max(i64::from(mutation));
            if throttle > 0 {
                mute.until(now + throttle);
            }
            // Kafka's `shouldClientThrottle`: the versions whose clients wait out the throttle.
            let client_throttles = match api_key {
                ApiKey::CreateTopics => version >= 3,
                ApiKey::DeleteTopics => version >= 2,
                _ => version >= 1,
            };
            stamp(broker, handled, throttle, client_throttles, |body, t| match body {
                ResponseKind::CreateTopics(r) => r.throttle_time_ms = t,
                ResponseKind::DeleteTopics(r) => r.throttle_time_ms = t,
                ResponseKind::CreatePartitions(r) => r.throttle_time_ms = t,
                _ => {}
            })
        }
        _ => {
            if request_throttle > 0 {
                mute.until(now + request_throttle);
            }
            stamp(broker, handled, request_throttle, false, |_, _| {})
        }
    }
}

/// Sets the throttle on the response (`set`) and, for a client that does not throttle itself
/// (`client_throttles` false), delays the response by it.
fn stamp(
    broker: &Arc<Broker>,
    handled: Handled,
    throttle: i64,
    client_throttles: bool,
    set: fn(&mut ResponseKind, i32),
) -> Handled {
    if throttle <= 0 {
        return handled;
    }
    let t = i32::try_from(throttle).unwrap_or(i32::MAX);
    let delay = (!client_throttles).then(|| broker.clock.sleep(Duration::from_millis(throttle as u64)));
    match (handled, delay) {
        (Handled::Ready(mut body), None) => {
            set(&mut body, t);
            Handled::Ready(body)
        }
        (Handled::Ready(mut body), Some(sleep)) => {
            set(&mut body, t);
            Handled::Deferred(
                async move {
                    sleep.await;
                    body
                }
                .boxed(),
            )
        }
        (Handled::Deferred(fut), delay) => Handled::Deferred(
            async move {
                let mut body = fut.await;
                set(&mut body, t);
                if let Some(sleep) = delay {
                    sleep.await;
                }
                body
            }
            .boxed(),
        ),
        (Handled::NoResponse, _) => Handled::NoResponse,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_controller::intent::{QuotaAlteration, QuotaChange};

    fn set(state: &mut QuotasState, user: Option<EntityName>, client_id: Option<EntityName>, v: f64) {
        let change = QuotaChange {
            alterations: vec![QuotaAlteration {
                entity: QuotaEntity { user, client_id, ip: None },
                ops: vec![(PRODUCER_BYTE_RATE.into(), Some(v))],
            }],
        };
        state.apply_for_test(&change);
    }

    fn n(s: &str) -> Option<EntityName> {
        Some(EntityName::Name(s.into()))
    }

    /// Kafka's precedence: user+client beats user+default client beats user beats default
    /// user (+client) beats client beats client default; the bucket follows the match.
    #[test]
    fn precedence_follows_kafka() {
        let mut s = QuotasState::default();
        let r = |s: &QuotasState, u: &str, c: &str| {
            resolve(s, PRODUCER_BYTE_RATE, u, c).map(|r| (r.bound as i64, r.user, r.client_id))
        };
        assert_eq!(r(&s, "alice", "app"), None);
        set(&mut s, None, Some(EntityName::Default), 8.0);
        assert_eq!(r(&s, "alice", "app"), Some((8, String::new(), "app".into())));
        set(&mut s, None, n("app"), 7.0);
        assert_eq!(r(&s, "alice", "app"), Some((7, String::new(), "app".into())));
        set(&mut s, Some(EntityName::Default), None, 6.0);
        assert_eq!(r(&s, "alice", "app"), Some((6, "alice".into(), String::new())));
        set(&mut s, Some(EntityName::Default), Some(EntityName::Default), 5.0);
        set(&mut s, Some(EntityName::Default), n("app"), 4.0);
        assert_eq!(r(&s, "alice", "app").map(|x| x.0), Some(4));
        assert_eq!(r(&s, "alice", "other").map(|x| x.0), Some(5));
        set(&mut s, n("alice"), None, 3.0);
        assert_eq!(r(&s, "alice", "app"), Some((3, "alice".into(), String::new())));
        set(&mut s, n("alice"), Some(EntityName::Default), 2.0);
        assert_eq!(r(&s, "alice", "app").map(|x| x.0), Some(2));
        set(&mut s, n("alice"), n("app"), 1.0);
        assert_eq!(r(&s, "alice", "app"), Some((1, "alice".into(), "app".into())));
        assert_eq!(r(&s, "bob", "app").map(|x| x.0), Some(4), "another user falls to the default user");
    }

    #[test]
    fn idle_sensors_are_dropped() {
        let q = Quotas::new(Window::default(), 0.0);
        let mut s = QuotasState::default();
        set(&mut s, None, Some(EntityName::Default), 1000.0);
        for i in 0..100 {
            q.record_client(&s, Kind::Produce, "u", &format!("c{i}"), 10.0, 0);
        }
        assert_eq!(q.sensors().len(), 100);
        let text = q.render_metrics(1_000);
        assert_eq!(text.matches("skiff_quota_rate{").count(), METRICS_TOP, "metrics list the top buckets only");
        q.render_metrics(20_000);
        assert!(q.sensors().is_empty(), "every sample expired: the sensors are forgotten");
    }

    #[test]
    fn connection_creation_is_throttled_per_ip_and_broker_wide() {
        let q = Quotas::new(Window::default(), 5.0);
        let mut s = QuotasState::default();
        let ip: IpAddr = "127.0.0.1".parse().expect("ip");
        s.apply_for_test(&QuotaChange {
            alterations: vec![QuotaAlteration {
                entity: QuotaEntity { user: None, client_id: None, ip: Some(EntityName::Name(ip.to_string())) },
                ops: vec![(CONNECTION_CREATION_RATE.into(), Some(2.0))],
            }],
        });
        // 2/s over the first 10 s of windows: 20 connections pass, the 21st is throttled.
        let delays: Vec<(i64, i64)> = (0..21).map(|_| q.connection_created(&s, ip, 0)).collect();
        assert!(delays[..20].iter().all(|d| d.1 == 0), "{delays:?}");
        assert!(delays[20].1 > 0);
        // Broker-wide 5/s: 50 pass, then accepting is delayed.
        let other: IpAddr = "127.0.0.2".parse().expect("ip");
        let more: Vec<i64> = (0..30).map(|_| q.connection_created(&s, other, 0).0).collect();
        assert!(more[..29].iter().all(|d| *d == 0) && more[29] > 0, "{more:?}");
    }
}
