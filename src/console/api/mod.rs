//! The console's JSON API under `/api/v1/` (documented in docs/console-api.md).
//!
//! ```text
//!  GET  /cluster · /brokers                       cluster.rs  (image, quorum, object-store stats)
//!  GET  /topics · POST /topics · GET|DELETE /topics/{t} · PATCH|PUT /topics/{t}/configs
//!  POST /topics/{t}/partitions                    topics.rs   (CreateTopics, DescribeConfigs, ...)
//!  GET  /topics/{t}/partitions/{p}/messages · POST /topics/{t}/messages
//!                                                 messages.rs (the partition log, Produce)
//!  GET  /groups · /groups/{g} · POST /groups/{g}/reset-offsets
//!                                                 groups.rs   (the coordinator, OffsetCommit)
//! ```
//!
//! Every write and every rule goes through the code path a Kafka client's request takes: the
//! API builds the Kafka request, calls the handler's function and turns its answer into JSON
//! (a topic created here is validated exactly as CreateTopics validates it). Reads of state use
//! the same image and coordinator calls the handlers read. Errors: [`error`], the one mapping to
//! HTTP statuses and Kafka error names.
//!
//! Who may do what: the HTTP listener authenticates the caller (`http/auth.rs`) and every
//! endpoint asks the broker's authorizer first ([`access`], with the operation Kafka requires
//! for the equivalent API); listings leave out what the caller may not describe.
//!
//! Everything is bounded: request bodies ([`MAX_BODY_BYTES`]), records per page and their
//! bytes (`messages.rs`), listed topics and groups ([`MAX_LISTED`]).
//!
//! In a cluster every broker answers every read from its own image; what Kafka sends to one
//! broker (a produce to the partition's leader, group state and offset commits to the group's
//! coordinator) answers 503 `NOT_LEADER_OR_FOLLOWER` / `NOT_COORDINATOR` on another broker.

mod access;
mod cluster;
mod error;
mod groups;
mod messages;
mod payload;
mod rates;
mod topics;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use error::{ApiError, ApiResult};

use crate::broker::Broker;
use crate::http::Roles;

/// Largest request body accepted (a produced test message included).
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// Most topics or groups one list answer holds (`truncated: true` beyond).
pub const MAX_LISTED: usize = 10_000;

/// What every endpoint shares.
#[derive(Clone)]
pub struct Api {
    broker: Option<Arc<Broker>>,
    /// Samples of the counters, for per-second rates between calls.
    rates: Arc<Mutex<rates::Rates>>,
    /// The next partition for a produced message with neither key nor partition.
    next_partition: Arc<std::sync::atomic::AtomicU32>,
}

impl Api {
    fn new(roles: &Roles) -> Self {
        Api {
            broker: roles.broker.clone(),
            rates: Arc::new(Mutex::new(rates::Rates::default())),
            next_partition: Arc::default(),
        }
    }

    /// Records a sample of the counters and returns the rates since the window's start.
    fn observe(&self, broker: &Broker) -> rates::RateView {
        let requests = broker.metrics.topic_requests();
        let stats = broker.reader.storage.stats().snapshot();
        let records: Vec<(uuid::Uuid, i64)> = broker
            .metadata
            .read(|m| m.topics().map(|t| (t.id(), t.partitions().map(|p| p.high_watermark()).sum())).collect());
        let topics = records
            .into_iter()
            .map(|(id, records)| {
                let (puts, gets) = requests.get(&id).copied().unwrap_or_default();
                (id, rates::TopicCounters { records, puts, gets })
            })
            .collect();
        let sample = rates::Sample { at_ms: broker.clock.now_ms(), puts: stats.puts, gets: stats.gets, topics };
        self.rates.lock().unwrap_or_else(|p| p.into_inner()).observe(sample)
    }

    /// This node's broker (a controller-only node has none).
    fn broker(&self) -> ApiResult<&Arc<Broker>> {
        self.broker.as_ref().ok_or(ApiError::NoBroker)
    }
}

/// The API's routes, to nest under `/api/v1`.
pub fn router<S: Clone + Send + Sync + 'static>(roles: &Roles) -> Router<S> {
    Router::new()
        .route("/cluster", get(cluster::cluster))
        .route("/brokers", get(cluster::brokers))
        .route("/topics", get(topics::list).post(topics::create))
        .route("/topics/{topic}", get(topics::describe).delete(topics::delete))
        .route("/topics/{topic}/configs", patch(topics::alter_incremental).put(topics::alter))
        .route("/topics/{topic}/partitions", post(topics::add_partitions))
        .route("/topics/{topic}/partitions/{partition}/messages", get(messages::browse))
        .route("/topics/{topic}/messages", post(messages::produce))
        .route("/groups", get(groups::list))
        .route("/groups/{group}", get(groups::describe))
        .route("/groups/{group}/reset-offsets", post(groups::reset_offsets))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(same_origin_writes))
        .with_state(Api::new(roles))
}

/// Refuses cross-site writes (CSRF), for every mutating route in one place. Without
/// authentication (a PLAINTEXT dev broker), and with it too since a browser sends remembered
/// Basic credentials with any request, any page a user opens could otherwise write through the
/// user's browser to a listener it can reach (loopback included): a `<form enctype="text/plain">` or a
/// `no-cors` fetch sends a POST without asking. Every method but GET and HEAD must declare
/// `Content-Type: application/json`, which a browser sends cross-site only after a CORS
/// preflight that this server never grants; and a browser's `Sec-Fetch-Site` or `Origin`
/// naming another site is refused outright. Tools (curl, scripts) send neither header.
async fn same_origin_writes(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    use axum::http::Method;
    if matches!(*req.method(), Method::GET | Method::HEAD) {
        return next.run(req).await;
    }
    if let Err(e) = check_write(&req) {
        tracing::warn!(method = %req.method(), path = req.uri().path(), reason = %e, "console API: write refused");
        return e.into_response();
    }
    next.run(req).await
}

fn check_write(req: &axum::extract::Request) -> ApiResult<()> {
    let headers = req.headers();
    let text = |name: &str| headers.get(name).map(|v| v.to_str().unwrap_or("\u{fffd}"));
    let json = text("content-type")
        .and_then(|ct| ct.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return Err(ApiError::UnsupportedMediaType(
            "Writes need 'Content-Type: application/json' (a DELETE too, with or without a body).".into(),
        ));
    }
    if let Some(site) = text("sec-fetch-site")
        && !site.eq_ignore_ascii_case("same-origin")
        && !site.eq_ignore_ascii_case("none")
    {
        return Err(ApiError::Forbidden(format!("Cross-site write refused (Sec-Fetch-Site: {site}).")));
    }
    if let Some(origin) = text("origin") {
        let host = text("host").or_else(|| req.uri().authority().map(|a| a.as_str()));
        if !same_origin(origin, host) {
            return Err(ApiError::Forbidden(format!(
                "Cross-site write refused (Origin {origin} is not this listener's Host {}).",
                host.unwrap_or("(none)")
            )));
        }
    }
    Ok(())
}

/// Whether `origin` (`scheme://host[:port]`) names the same host and port as the request's
/// `host` header. A browser leaves a scheme's default port out of both, so `http://h` matches
/// `h` and `h:80`; the opaque origin `null` matches nothing.
fn same_origin(origin: &str, host: Option<&str>) -> bool {
    let Some(host) = host else { return false };
    let Some((scheme, authority)) = origin.split_once("://") else { return false };
    let default = match scheme.to_ascii_lowercase().as_str() {
        "http" => "80",
        "https" => "443",
        _ => return false,
    };
    let (o_host, o_port) = split_host_port(authority);
    let (h_host, h_port) = split_host_port(host);
    o_host.eq_ignore_ascii_case(h_host) && o_port.unwrap_or(default) == h_port.unwrap_or(default)
}

/// `host[:port]` or `[v6][:port]` → (host, port).
fn split_host_port(authority: &str) -> (&str, Option<&str>) {
    let (host, rest) = match authority.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((h, rest)) => (h, rest),
            None => (authority, ""),
        },
        None => match authority.rsplit_once(':') {
            Some((h, p)) => (h, if p.is_empty() { "" } else { &authority[h.len()..] }),
            None => (authority, ""),
        },
    };
    (host, rest.strip_prefix(':').filter(|p| !p.is_empty()))
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::NotFound(format!("No API at {}.", uri.path()))
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    let body = serde_json::json!({ "error": {
        "code": "METHOD_NOT_ALLOWED",
        "message": format!("{} is not allowed on {}.", method, uri.path()),
    }});
    json(StatusCode::METHOD_NOT_ALLOWED, &body)
}

/// A path parameter; a bad one (a partition that is not a number) is a JSON 400 like every
/// other error of the API.
pub(crate) struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> axum::extract::FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(t)| ApiPath(t))
            .map_err(|e| ApiError::BadRequest(e.body_text()))
    }
}

/// A JSON response.
pub(crate) fn json(status: StatusCode, value: &impl Serialize) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (status, [(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "encoding an API answer");
            (StatusCode::INTERNAL_SERVER_ERROR, "encoding the answer failed").into_response()
        }
    }
}

/// 200 with `value`.
fn ok(value: &impl Serialize) -> Response {
    json(StatusCode::OK, value)
}

/// The request body as `T`, at most [`MAX_BODY_BYTES`].
async fn body_json<T: DeserializeOwned>(body: Body) -> ApiResult<T> {
    let bytes =
        axum::body::to_bytes(body, MAX_BODY_BYTES).await.map_err(|_| ApiError::PayloadTooLarge(MAX_BODY_BYTES))?;
    serde_json::from_slice(&bytes).map_err(|e| ApiError::BadRequest(format!("The request body is not valid: {e}.")))
}

/// The query string's parameters (percent-decoded; the last value of a repeated name wins).
fn query(raw: Option<&str>) -> ApiResult<HashMap<String, String>> {
    let mut out = HashMap::new();
    for pair in raw.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.insert(percent_decode(k)?, percent_decode(v)?);
    }
    Ok(out)
}

fn percent_decode(s: &str) -> ApiResult<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
                let b = hex.and_then(|h| u8::from_str_radix(h, 16).ok());
                out.push(b.ok_or_else(|| ApiError::BadRequest(format!("Bad percent-encoding in '{s}'.")))?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| ApiError::BadRequest(format!("'{s}' is not UTF-8.")))
}

/// Query parameter `name` parsed as `T`, if present.
fn param<T: std::str::FromStr>(q: &HashMap<String, String>, name: &str) -> ApiResult<Option<T>> {
    match q.get(name) {
        None => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| ApiError::BadRequest(format!("Bad value '{v}' for '{name}'."))),
    }
}

/// Who asks, for the handlers' once-per-client logs.
fn asker() -> crate::handler::not_served::Asker {
    crate::handler::not_served::Asker {
        client_id: "skiff-console".into(),
        ip: std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
    }
}

/// A Kafka string for a request.
fn s(v: impl Into<String>) -> kafka_protocol::protocol::StrBytes {
    kafka_protocol::protocol::StrBytes::from_string(v.into())
}

/// A Kafka error code from a handler's answer: `Ok` for 0, else the error with its message.
fn check(code: i16, message: Option<&kafka_protocol::protocol::StrBytes>) -> ApiResult<()> {
    if code == 0 {
        return Ok(());
    }
    Err(ApiError::kafka(code, message.map(|m| m.to_string()).unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings() {
        let q = query(Some("offset=5&order=newest&x=a%20b+c&empty")).expect("valid");
        assert_eq!(q["offset"], "5");
        assert_eq!(q["x"], "a b c");
        assert_eq!(q["empty"], "");
        assert_eq!(param::<i64>(&q, "offset").expect("number"), Some(5));
        assert!(param::<i64>(&q, "order").is_err());
        assert!(query(Some("a=%zz")).is_err());
        assert!(query(Some("a=%e2%82")).is_err());
    }

    #[test]
    fn origins_match_the_host() {
        assert!(same_origin("http://127.0.0.1:9644", Some("127.0.0.1:9644")));
        assert!(same_origin("http://Console.example", Some("console.example:80")));
        assert!(same_origin("https://console.example", Some("console.example")));
        assert!(same_origin("http://[::1]:9644", Some("[::1]:9644")));
        assert!(!same_origin("http://127.0.0.1:9645", Some("127.0.0.1:9644")));
        assert!(!same_origin("http://evil.example", Some("127.0.0.1:9644")));
        assert!(!same_origin("https://console.example", Some("console.example:80")));
        assert!(!same_origin("null", Some("127.0.0.1:9644")));
        assert!(!same_origin("http://127.0.0.1:9644", None));
    }
}
