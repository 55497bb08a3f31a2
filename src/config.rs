//! Configuration: file → `SKIFF_*` environment → flags, validated at start-up.
//!
//! Every field documents its default and its trade-off. [`settings::SETTINGS`] declares, once
//! per field, its file key, variable, flag and roles; the file parser here, the environment and
//! flag layers and `--help` ([`cli`]) and docs/configuration.md (a test compares) follow it.
//! `Config::validate` reports all problems at once; `Config::redacted` is what gets logged.

pub mod cli;
pub mod settings;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

/// The whole configuration of a Skiff process.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// Directory for the controller's Raft log and snapshots (and, by default, objects).
    /// Default `./skiff-data`.
    pub data_dir: PathBuf,
    /// Where Kafka clients connect. Default `127.0.0.1:9092`. Port 0 picks a free port.
    pub kafka_listen: String,
    /// Address advertised to clients in Metadata; default: the bound Kafka listener address.
    pub kafka_advertise: Option<String>,
    /// HTTP listener for `/metrics`, `/health` and the web console (`/`, `/api/v1/`). Default
    /// `127.0.0.1:9644`.
    pub http_listen: String,
    /// Object storage URL: `file:///abs/dir`, `memory://`, `s3://bucket/prefix`.
    /// Default `file://<data_dir>/objects`.
    pub storage: Option<String>,
    /// S3 endpoint override (MinIO etc.); otherwise `AWS_ENDPOINT` / AWS defaults.
    pub s3_endpoint: Option<String>,
    /// S3 region; otherwise `AWS_REGION` / `AWS_DEFAULT_REGION`.
    pub s3_region: Option<String>,
    /// Use path-style S3 URLs (MinIO needs this). Default: true when an endpoint is set.
    pub s3_path_style: Option<bool>,
    /// Allow a plain `http://` S3 endpoint. Default: `AWS_ALLOW_HTTP`, else true when
    /// `s3_endpoint` is an `http://` URL.
    pub s3_allow_http: Option<bool>,
    pub broker: BrokerConfig,
    /// The controller role (`skiff controller` / `skiff node --roles controller,...`).
    pub controller: ControllerSection,
    /// Compaction, retention and garbage collection of stored objects.
    pub lifecycle: LifecycleConfig,
    /// Consumer groups (both protocols).
    pub groups: GroupsConfig,
    /// The transaction coordinator (RFC 0004).
    pub transactions: TransactionsConfig,
    /// TLS and SASL of the Kafka listeners (docs/security.md).
    pub security: SecurityConfig,
}

/// The transaction coordinator (docs/configuration.md, `[transactions]`); Kafka's
/// `transaction.*` broker configs. `transaction.state.log.num.partitions` is fixed at 50.
#[derive(Debug, Clone, Serialize)]
pub struct TransactionsConfig {
    /// `transaction.max.timeout.ms`: the longest `transaction.timeout.ms` a producer may ask for
    /// (INVALID_TRANSACTION_TIMEOUT above). Default 15 min: longer lets an abandoned transaction
    /// hold back read_committed consumers (the LSO) for longer.
    pub max_timeout: Duration,
    /// `transactional.id.expiration.ms`: an id with no transaction open and no request for this
    /// long is forgotten. Default 7 days.
    pub id_expiration: Duration,
    /// `transaction.abort.timed.out.transaction.cleanup.interval.ms`: how often timed-out
    /// transactions are looked for (a transaction may outlive its timeout by up to this).
    /// Default 10 s.
    pub abort_check_interval: Duration,
    /// `transaction.remove.expired.transaction.cleanup.interval.ms`: how often idle ids are
    /// looked for. Default 1 h.
    pub expire_check_interval: Duration,
}

impl Default for TransactionsConfig {
    fn default() -> Self {
        let d = crate::txn::TxnSettings::default();
        Self {
            max_timeout: Duration::from_millis(u64::try_from(d.limits.max_timeout_ms).unwrap_or(0)),
            id_expiration: Duration::from_millis(u64::try_from(d.limits.id_expiration_ms).unwrap_or(0)),
            abort_check_interval: d.abort_check_interval,
            expire_check_interval: d.expire_check_interval,
        }
    }
}

/// A value that must never be logged or shown (`--help`, the effective configuration, `Debug`).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("***")
    }
}

/// TLS and SASL (docs/security.md, `[security]`).
#[derive(Debug, Clone, Serialize)]
pub struct SecurityConfig {
    /// PEM certificate chain of the SSL and SASL_SSL listeners. Reloaded when the file changes.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificates: an SSL listener then requires client certificates signed by them
    /// (mutual TLS). Default none.
    pub tls_client_ca: Option<PathBuf>,
    /// Kafka's `ssl.principal.mapping.rules`: certificate subject → principal name. Default
    /// `DEFAULT` (the subject as RFC 2253 prints it).
    pub ssl_principal_mapping_rules: String,
    /// `sasl.enabled.mechanisms` of the SASL listeners: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512.
    /// Default the two SCRAM mechanisms (PLAIN sends the password itself: use it over SASL_SSL).
    pub sasl_mechanisms: Vec<String>,
    /// `connections.max.reauth.ms` (KIP-368): a SASL session lasts this long, then the client
    /// must re-authenticate on the same connection. Default none (sessions do not expire).
    pub connections_max_reauth: Option<Duration>,
    /// `NAME=PASSWORD`: a SCRAM user (both mechanisms, 4096 iterations) created at start-up if
    /// it has no credential yet. Never logged. Default none.
    pub scram_bootstrap_user: Option<Secret>,
    /// Kafka's `connection.failed.authentication.delay.ms`: a failed authentication is answered
    /// (and its connection closed) this late, slowing password guessing. Default 100 ms (Kafka's).
    pub connection_failed_authentication_delay: Duration,
    /// Kafka's `super.users`: principals (`User:name`) that every ACL check allows. Default none.
    pub super_users: Vec<String>,
    /// Kafka's `allow.everyone.if.no.acl.found`: a resource with no ACL at all is open to every
    /// principal. Default false when a SASL listener or mutual TLS is configured (a network-facing
    /// cluster), true otherwise (a PLAINTEXT dev setup keeps working without ACLs).
    pub allow_everyone_if_no_acl_found: Option<bool>,
    /// Mutual TLS on the controller port (voter ↔ voter and broker → controller): this node's
    /// PEM certificate chain, presented both when accepting and when dialling, so it needs the
    /// `serverAuth` and `clientAuth` usages (or none) and must name the node's host as written
    /// in `controller.voters` (DNS or IP subjectAltName). Set all three or none. Default none:
    /// plaintext, and anyone who reaches the port can speak Raft. Reloaded when a file changes.
    pub controller_tls_cert: Option<PathBuf>,
    /// PEM private key of `controller_tls_cert`.
    pub controller_tls_key: Option<PathBuf>,
    /// PEM CA certificates every peer's certificate (controllers' and brokers') must chain to.
    pub controller_tls_ca: Option<PathBuf>,
    /// Kafka's `sasl.oauthbearer.jwks.endpoint.url` for OAUTHBEARER: the JSON Web Key Set the
    /// tokens' signatures are checked against: `https://...` (or `http://`) fetched at start
    /// and every `sasl_oauthbearer_jwks_refresh`, or a `file:///path` re-read when it changes.
    /// Default none (OAUTHBEARER needs it).
    pub sasl_oauthbearer_jwks_url: Option<String>,
    /// `sasl.oauthbearer.jwks.endpoint.refresh.ms`: how often the JWKS file is checked for
    /// changes (new keys are picked up then). Default 1 h (Kafka's); shorter costs a `stat`.
    pub sasl_oauthbearer_jwks_refresh: Duration,
    /// `sasl.oauthbearer.expected.issuer`: tokens' `iss` must equal it. Default none (not checked).
    pub sasl_oauthbearer_expected_issuer: Option<String>,
    /// `sasl.oauthbearer.expected.audience`: tokens' `aud` must name one of these. Default
    /// none (not checked).
    pub sasl_oauthbearer_expected_audience: Vec<String>,
    /// `sasl.oauthbearer.sub.claim.name`: the claim naming the principal. Default `sub`.
    pub sasl_oauthbearer_sub_claim_name: String,
    /// `sasl.oauthbearer.clock.skew.seconds`: tolerance on `exp`, `nbf` and `iat`. Default 30 s
    /// (Kafka's): larger accepts tokens that long after they expired.
    pub sasl_oauthbearer_clock_skew: Duration,
    /// Serve the HTTP listener (`/metrics`, `/health`, the console) over TLS with `tls_cert` /
    /// `tls_key` (reloaded like the Kafka listeners'). Default false: a probe or scraper that
    /// speaks plain HTTP keeps working; with authentication on, Basic credentials then cross
    /// the network in the clear, so turn this on when the listener is not on loopback.
    pub http_tls: bool,
    /// Require HTTP Basic (SCRAM users' passwords) or a Bearer JWT (OAUTHBEARER's validator) on
    /// the HTTP listener, and authorize the console as the authenticated `User:<name>`.
    /// Default: true when a SASL listener or mutual TLS is configured (as
    /// `allow_everyone_if_no_acl_found` turns false), else false (`User:ANONYMOUS`, ACLs still apply).
    pub http_auth: Option<bool>,
    /// Serve `/metrics` without authentication even when `http_auth` is on (a Prometheus that
    /// scrapes without credentials). Default false: the metrics name topics, users and client ids.
    /// `/health` is always open (liveness and readiness probes).
    pub http_metrics_open: bool,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        Self {
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            ssl_principal_mapping_rules: "DEFAULT".into(),
            sasl_mechanisms: vec!["SCRAM-SHA-256".into(), "SCRAM-SHA-512".into()],
            connections_max_reauth: None,
            scram_bootstrap_user: None,
            connection_failed_authentication_delay: Duration::from_millis(100),
            super_users: Vec::new(),
            allow_everyone_if_no_acl_found: None,
            controller_tls_cert: None,
            controller_tls_key: None,
            controller_tls_ca: None,
            sasl_oauthbearer_jwks_url: None,
            sasl_oauthbearer_jwks_refresh: Duration::from_secs(3600),
            sasl_oauthbearer_expected_issuer: None,
            sasl_oauthbearer_expected_audience: Vec::new(),
            sasl_oauthbearer_sub_claim_name: "sub".into(),
            sasl_oauthbearer_clock_skew: Duration::from_secs(30),
            http_tls: false,
            http_auth: None,
            http_metrics_open: false,
        }
    }
}

impl TransactionsConfig {
    /// The coordinator's settings (call after [`Config::validate`]).
    pub fn settings(&self) -> crate::txn::TxnSettings {
        let d = crate::txn::TxnSettings::default();
        crate::txn::TxnSettings {
            limits: skiff_controller::intent::TxnLimits {
                max_timeout_ms: kafka_ms(self.max_timeout),
                id_expiration_ms: i64::try_from(self.id_expiration.as_millis()).unwrap_or(i64::MAX),
                ..d.limits
            },
            abort_check_interval: self.abort_check_interval,
            expire_check_interval: self.expire_check_interval,
        }
    }
}

impl SecurityConfig {
    /// The bootstrap user's name and password.
    pub fn bootstrap_user(&self) -> Option<(&str, &str)> {
        self.scram_bootstrap_user.as_ref().and_then(|s| s.0.split_once('='))
    }

    /// The controller port's mutual TLS files, when configured (call after [`Config::validate`]).
    pub fn controller_tls_files(&self) -> Option<skiff_controller::PeerTlsFiles> {
        Some(skiff_controller::PeerTlsFiles {
            cert: self.controller_tls_cert.clone()?,
            key: self.controller_tls_key.clone()?,
            ca: self.controller_tls_ca.clone()?,
        })
    }

    /// Where `sasl_oauthbearer_jwks_url` points, if set.
    pub fn oauthbearer_jwks_source(&self) -> Option<Result<crate::security::sasl::oauthbearer::JwksSource, String>> {
        use crate::security::sasl::oauthbearer::JwksSource;
        let url = self.sasl_oauthbearer_jwks_url.as_deref()?;
        Some(match url.strip_prefix("file://") {
            Some(path) if path.starts_with('/') => Ok(JwksSource::File(PathBuf::from(path))),
            Some(_) => Err(format!("`{url}`: a file URL needs an absolute path (file:///...)")),
            None if url.starts_with("https://") || url.starts_with("http://") => Ok(JwksSource::Url(url.to_string())),
            None => Err(format!("`{url}`: expected a file:///, http:// or https:// URL")),
        })
    }

    /// The OAUTHBEARER validator's settings when OAUTHBEARER is enabled (call after
    /// [`Config::validate`]).
    pub fn oauthbearer(&self) -> Option<crate::security::sasl::oauthbearer::ValidatorSettings> {
        use crate::security::sasl::oauthbearer::{Expectations, ValidatorSettings};
        if !self.sasl_mechanisms.iter().any(|m| m == "OAUTHBEARER") {
            return None;
        }
        Some(ValidatorSettings {
            jwks: self.oauthbearer_jwks_source()?.ok()?,
            refresh: self.sasl_oauthbearer_jwks_refresh,
            expect: Expectations {
                issuer: self.sasl_oauthbearer_expected_issuer.clone(),
                audience: self.sasl_oauthbearer_expected_audience.clone(),
                sub_claim: self.sasl_oauthbearer_sub_claim_name.clone(),
                clock_skew: self.sasl_oauthbearer_clock_skew,
            },
        })
    }

    /// The enabled mechanisms (call after [`Config::validate`]).
    pub fn mechanisms(&self) -> Vec<crate::security::sasl::Mechanism> {
        self.sasl_mechanisms.iter().filter_map(|m| crate::security::sasl::Mechanism::from_name(m)).collect()
    }

    /// The authorizer's settings for `listeners` (call after [`Config::validate`]).
    pub fn authorizer_settings(
        &self,
        listeners: &[crate::security::listener::ListenerSpec],
    ) -> crate::security::authorizer::AuthorizerSettings {
        let authenticated = self.authenticates(listeners);
        crate::security::authorizer::AuthorizerSettings {
            super_users: self.super_users.iter().map(|u| u.trim().to_string()).collect(),
            allow_everyone_if_no_acl_found: self.allow_everyone_if_no_acl_found.unwrap_or(!authenticated),
        }
    }

    /// Whether clients of `listeners` authenticate (a SASL listener, or mutual TLS): the
    /// network-facing defaults of `allow_everyone_if_no_acl_found` and `http_auth` follow it.
    fn authenticates(&self, listeners: &[crate::security::listener::ListenerSpec]) -> bool {
        listeners.iter().any(|l| l.protocol.sasl())
            || (self.tls_client_ca.is_some() && listeners.iter().any(|l| l.protocol.tls()))
    }

    /// The HTTP listener's authentication rules for `listeners` (call after [`Config::validate`]).
    pub fn http_auth_settings(
        &self,
        listeners: &[crate::security::listener::ListenerSpec],
    ) -> crate::http::auth::HttpAuth {
        crate::http::auth::HttpAuth {
            required: self.http_auth.unwrap_or_else(|| self.authenticates(listeners)),
            metrics_open: self.http_metrics_open,
            failed_delay: self.connection_failed_authentication_delay,
        }
    }

    fn validate(&self, listeners: &[crate::security::listener::ListenerSpec], problems: &mut Vec<String>) {
        if self.http_tls && (self.tls_cert.is_none() || self.tls_key.is_none()) {
            problems.push("security.http_tls needs tls_cert and tls_key".into());
        }
        for u in &self.super_users {
            match u.trim().split_once(':') {
                Some(("User", name)) if !name.is_empty() => {}
                _ => problems.push(format!("security.super_users: `{u}` is not a principal of the form User:NAME")),
            }
        }
        let tls = listeners.iter().any(|l| l.protocol.tls());
        let sasl = listeners.iter().any(|l| l.protocol.sasl());
        if tls && (self.tls_cert.is_none() || self.tls_key.is_none()) {
            problems.push("security: an SSL or SASL_SSL listener needs tls_cert and tls_key".into());
        }
        if self.tls_client_ca.is_some() && self.tls_cert.is_none() {
            problems.push("security.tls_client_ca needs tls_cert and tls_key".into());
        }
        let controller_tls = [&self.controller_tls_cert, &self.controller_tls_key, &self.controller_tls_ca];
        if controller_tls.iter().any(|f| f.is_some()) && !controller_tls.iter().all(|f| f.is_some()) {
            problems.push(
                "security: controller_tls_cert, controller_tls_key and controller_tls_ca go together (all three or none)"
                    .into(),
            );
        }
        if let Err(e) = crate::security::principal::PrincipalMapper::parse(&self.ssl_principal_mapping_rules) {
            problems.push(format!("security.ssl_principal_mapping_rules: {e}"));
        }
        for m in &self.sasl_mechanisms {
            if crate::security::sasl::Mechanism::from_name(m).is_none() {
                problems.push(format!(
                    "security.sasl_mechanisms: `{m}` is not PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER (GSSAPI is not served)"
                ));
            }
        }
        if self.sasl_mechanisms.iter().any(|m| m == "OAUTHBEARER") {
            match self.oauthbearer_jwks_source() {
                Some(Ok(_)) => {}
                Some(Err(e)) => problems.push(format!("security.sasl_oauthbearer_jwks_url: {e}")),
                None => problems.push("security.sasl_mechanisms: OAUTHBEARER needs sasl_oauthbearer_jwks_url".into()),
            }
            if self.sasl_oauthbearer_sub_claim_name.is_empty() {
                problems.push("security.sasl_oauthbearer_sub_claim_name: empty".into());
            }
        }
        if sasl && self.sasl_mechanisms.is_empty() {
            problems.push("security.sasl_mechanisms: a SASL listener needs at least one mechanism".into());
        }
        if let Some(s) = &self.scram_bootstrap_user {
            // The value itself is never quoted: it holds a password.
            match s.0.split_once('=') {
                Some((name, password)) if !name.is_empty() && !password.is_empty() => {}
                _ => problems.push("security.scram_bootstrap_user: expected NAME=PASSWORD (value not shown)".into()),
            }
        }
    }
}

/// Consumer groups (docs/configuration.md, `[groups]`); Kafka's `group.*` broker configs.
#[derive(Debug, Clone, Serialize)]
pub struct GroupsConfig {
    /// `group.min.session.timeout.ms` (classic protocol). Default 6 s.
    pub min_session_timeout: Duration,
    /// `group.max.session.timeout.ms` (classic protocol). Default 30 min.
    pub max_session_timeout: Duration,
    /// `group.initial.rebalance.delay.ms` (classic protocol): the first rebalance of an empty
    /// group waits this long for more members. Default 3 s.
    pub initial_rebalance_delay: Duration,
    /// `group.consumer.session.timeout.ms` (KIP-848 consumer protocol): a member that does
    /// not heartbeat for this long is removed and its partitions reassigned. Default 45 s:
    /// shorter detects dead consumers sooner but fences slow ones.
    pub consumer_session_timeout: Duration,
    /// `group.consumer.heartbeat.interval.ms`: how often members heartbeat. Members learn of
    /// a rebalance at their next heartbeat, so a rebalance takes about one or two intervals;
    /// shorter is faster but costs a request (and on change a metadata-log write) more often.
    /// Default 5 s.
    pub consumer_heartbeat_interval: Duration,
    /// `group.consumer.min.session.timeout.ms` / `group.consumer.max.session.timeout.ms`: the
    /// range a group's own `consumer.session.timeout.ms` (a group config) must lie in. Default
    /// Kafka's 45 s / 60 s, widened to include `consumer_session_timeout`.
    pub consumer_min_session_timeout: Option<Duration>,
    pub consumer_max_session_timeout: Option<Duration>,
    /// `group.consumer.min.heartbeat.interval.ms` / `group.consumer.max.heartbeat.interval.ms`:
    /// the range of a group's `consumer.heartbeat.interval.ms`. Default Kafka's 5 s / 15 s,
    /// widened to include `consumer_heartbeat_interval`.
    pub consumer_min_heartbeat_interval: Option<Duration>,
    pub consumer_max_heartbeat_interval: Option<Duration>,
    /// The server-side assignor of groups whose members ask for none: `uniform` (default,
    /// sticky and balanced) or `range` (contiguous ranges per topic). Members choose with
    /// `group.remote.assignor`.
    pub consumer_default_assignor: String,
}

impl Default for GroupsConfig {
    fn default() -> Self {
        let classic = crate::group::GroupSettings::default();
        let consumer = crate::group::consumer::ConsumerSettings::default();
        let ms = |v: i32| Duration::from_millis(u64::try_from(v).unwrap_or(0));
        Self {
            min_session_timeout: ms(classic.min_session_timeout_ms),
            max_session_timeout: ms(classic.max_session_timeout_ms),
            initial_rebalance_delay: Duration::from_millis(classic.initial_rebalance_delay_ms),
            consumer_session_timeout: ms(consumer.session_timeout_ms),
            consumer_heartbeat_interval: ms(consumer.heartbeat_interval_ms),
            consumer_min_session_timeout: None,
            consumer_max_session_timeout: None,
            consumer_min_heartbeat_interval: None,
            consumer_max_heartbeat_interval: None,
            consumer_default_assignor: consumer.default_assignor.name().to_string(),
        }
    }
}

impl GroupsConfig {
    /// The `group.consumer.*` values group configs default to and must lie within.
    pub fn bounds(&self) -> crate::group::group_config::GroupBounds {
        let (session, heartbeat) =
            (kafka_ms(self.consumer_session_timeout), kafka_ms(self.consumer_heartbeat_interval));
        let or = |v: Option<Duration>, default: i32| v.map_or(default, kafka_ms);
        crate::group::group_config::GroupBounds {
            session_timeout_ms: session,
            heartbeat_interval_ms: heartbeat,
            min_session_timeout_ms: or(self.consumer_min_session_timeout, session.min(45_000)),
            max_session_timeout_ms: or(self.consumer_max_session_timeout, session.max(60_000)),
            min_heartbeat_interval_ms: or(self.consumer_min_heartbeat_interval, heartbeat.min(5_000)),
            max_heartbeat_interval_ms: or(self.consumer_max_heartbeat_interval, heartbeat.max(15_000)),
        }
    }

    /// The coordinator's settings (call after [`Config::validate`]).
    pub fn settings(&self) -> crate::group::GroupSettings {
        let defaults = crate::group::consumer::ConsumerSettings::default();
        crate::group::GroupSettings {
            min_session_timeout_ms: kafka_ms(self.min_session_timeout),
            max_session_timeout_ms: kafka_ms(self.max_session_timeout),
            initial_rebalance_delay_ms: u64::try_from(self.initial_rebalance_delay.as_millis()).unwrap_or(u64::MAX),
            consumer: crate::group::consumer::ConsumerSettings {
                session_timeout_ms: kafka_ms(self.consumer_session_timeout),
                heartbeat_interval_ms: kafka_ms(self.consumer_heartbeat_interval),
                default_assignor: crate::group::assignor::Assignor::from_name(&self.consumer_default_assignor)
                    .unwrap_or(defaults.default_assignor),
            },
        }
    }
}

/// The controller role (docs/configuration.md, `[controller]`).
#[derive(Debug, Clone, Serialize)]
pub struct ControllerSection {
    /// This controller's Raft id (`--node-id` sets it together with `broker.node_id`). Default 1.
    pub node_id: u64,
    /// Where voters and brokers reach this controller, HOST:PORT. Required for the role.
    pub listen: Option<String>,
    /// Every voter as `ID=HOST:PORT` (this one included); identical on every controller.
    pub voters: Vec<String>,
    /// Fence a broker that sent no heartbeat for this long. Default 1 s: five missed
    /// heartbeats at the default 200 ms interval, so one slow heartbeat never fences (no
    /// flapping), while a dead broker's partitions move within about a second and a half.
    pub session_timeout: Duration,
    /// Snapshot the metadata and purge the Raft log after this many entries. Default 10,000.
    pub snapshot_every_entries: u64,
    /// Raft log entries kept after a snapshot, so a voter that fell behind (or took seconds to
    /// install a large snapshot) catches up from the log. Default 10,000.
    pub log_kept_after_snapshot: u64,
    /// Copy every snapshot this controller builds to object storage (`storage`, under
    /// `controller/snapshots/`), keeping the newest few. Default true when `storage` is set.
    pub copy_snapshots: bool,
    /// On a pristine data dir, start from the newest snapshot copy in object storage
    /// (rebuilding a lost quorum, docs/cluster.md). Default false.
    pub restore_from_storage: bool,
}

impl Default for ControllerSection {
    fn default() -> Self {
        Self {
            node_id: 1,
            listen: None,
            voters: Vec::new(),
            session_timeout: Duration::from_secs(1),
            snapshot_every_entries: 10_000,
            log_kept_after_snapshot: 10_000,
            copy_snapshots: true,
            restore_from_storage: false,
        }
    }
}

impl ControllerSection {
    /// The voters as id → address; errors name the bad entry.
    pub fn voter_map(&self) -> Result<std::collections::BTreeMap<u64, String>, String> {
        let mut out = std::collections::BTreeMap::new();
        for v in &self.voters {
            let (id, addr) = v.split_once('=').ok_or_else(|| format!("voter `{v}` is not ID=HOST:PORT"))?;
            let id: u64 = id.trim().parse().map_err(|_| format!("voter `{v}`: id is not a number"))?;
            let addr = addr.trim();
            if addr.rsplit_once(':').is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err()) {
                return Err(format!("voter `{v}`: address is not HOST:PORT"));
            }
            if out.insert(id, addr.to_string()).is_some() {
                return Err(format!("voter id {id} appears twice"));
            }
        }
        Ok(out)
    }
}

/// Background work on stored objects (docs/configuration.md, `[lifecycle]`).
#[derive(Debug, Clone, Serialize)]
pub struct LifecycleConfig {
    /// Rewrite WAL chunks into per-partition segments. Default true.
    pub compaction_enabled: bool,
    /// How often the compactor looks for work. Default 30 s.
    pub compaction_interval: Duration,
    /// Compact a partition when it has this many eligible WAL chunks in a row. Default 64.
    pub compaction_min_chunks: usize,
    /// ... or this many bytes in them. Default 32 MiB.
    pub compaction_min_bytes: u64,
    /// ... or the oldest was first seen this long ago (frees WAL objects pinned by quiet
    /// partitions). Default 10 min.
    pub compaction_max_age: Duration,
    /// A WAL chunk is eligible once first seen this long ago (keeps the hot tail, served from
    /// the tail cache, out). Default 60 s.
    pub compaction_min_age: Duration,
    /// Largest segment (data bytes); also the memory one compaction holds. Default 64 MiB.
    pub compaction_max_segment_bytes: u64,
    /// Partitions compacted at once. Default 2.
    pub compaction_concurrency: usize,
    /// Un-compacted WAL chunks of the partitions a broker leads that it aims to hold: when
    /// its flush rate would exceed this over `compaction_min_age + compaction_interval`, the
    /// compactor's period and minimum age shrink (RFC 0002, "Adaptive pace"). 0 = fixed pace.
    /// Default 20,000 (~2 MB of index on the controller and on every broker).
    pub compaction_hot_chunks_budget: usize,
    /// The shortest period the adaptive pace may reach. Default 2 s.
    pub compaction_min_interval: Duration,
    /// How often retention.ms / retention.bytes are enforced. Default 60 s.
    pub retention_check_interval: Duration,
    /// How often garbage collection runs (one LIST of wal/ and seg/ per run). Default 60 s.
    pub gc_interval: Duration,
    /// Unreferenced and orphaned objects are deleted only after this long. Default 5 min.
    pub gc_grace: Duration,
    /// Run the log cleaner on compacted topics (`cleanup.policy=compact`). Default true.
    pub cleaner_enabled: bool,
    /// How often the cleaner rolls heads and looks for a partition to clean (Kafka's
    /// `log.cleaner.backoff.ms`). Default 15 s.
    pub cleaner_backoff: Duration,
    /// Partitions cleaned at once (Kafka's `log.cleaner.threads`). Default 1.
    pub cleaner_concurrency: usize,
    /// Memory of one pass's offset map, 24 bytes per key (Kafka's
    /// `log.cleaner.dedupe.buffer.size`). Default 128 MiB.
    pub cleaner_dedupe_buffer_bytes: u64,
    /// Dirty bytes one pass holds between its two phases. Default 128 MiB.
    pub cleaner_dirty_buffer_bytes: u64,
    /// Bytes read plus written per second by the cleaner, 0 = unlimited (Kafka's
    /// `log.cleaner.io.max.bytes.per.second`). Default 0.
    pub cleaner_max_bytes_per_second: u64,
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        Self {
            compaction_enabled: true,
            compaction_interval: Duration::from_secs(30),
            compaction_min_chunks: 64,
            compaction_min_bytes: 32 * 1024 * 1024,
            compaction_max_age: Duration::from_secs(600),
            compaction_min_age: Duration::from_secs(60),
            compaction_max_segment_bytes: 64 * 1024 * 1024,
            compaction_concurrency: 2,
            compaction_hot_chunks_budget: 200_000,
            compaction_min_interval: Duration::from_secs(2),
            retention_check_interval: Duration::from_secs(60),
            gc_interval: Duration::from_secs(60),
            gc_grace: Duration::from_secs(300),
            cleaner_enabled: true,
            cleaner_backoff: Duration::from_secs(15),
            cleaner_concurrency: 1,
            cleaner_dedupe_buffer_bytes: 128 * 1024 * 1024,
            cleaner_dirty_buffer_bytes: 128 * 1024 * 1024,
            cleaner_max_bytes_per_second: 0,
        }
    }
}

/// Broker behaviour.
#[derive(Debug, Clone, Serialize)]
pub struct BrokerConfig {
    /// This broker's id. Default 1.
    pub node_id: i32,
    /// Rack reported in Metadata. Default none.
    pub rack: Option<String>,
    /// Flush the write-ahead buffer when it holds this many bytes. Default 4 MiB: larger objects
    /// mean fewer PUTs (cost: S3 charges per request) but more memory per flush.
    pub flush_bytes: usize,
    /// Flush at the latest this long after the first byte arrived. Default 5 ms for `file://`
    /// and `memory://`, 250 ms for `s3://` (at ~4 PUTs/s per broker S3 request cost stays low;
    /// produce latency is bounded below by this).
    pub flush_interval: Option<Duration>,
    /// Flush as soon as no flush is in flight (group commit) rather than waiting for
    /// `flush_interval`. Default true for `file://` and `memory://` (latency), false for
    /// `s3://` (every flush is a billed PUT; the interval batches them).
    pub flush_when_idle: Option<bool>,
    /// Bytes of produce data accepted but not yet acknowledged; producers wait beyond it.
    /// Default 64 MiB.
    pub buffer_max_bytes: usize,
    /// Concurrent object uploads (their commits still apply in order). Default 4.
    pub max_inflight_flushes: usize,
    /// Tail cache: recently committed data served to tailing consumers. Default 256 MiB.
    pub tail_cache_bytes: u64,
    /// Block cache for reads from objects (catch-up consumers). Default 256 MiB.
    pub block_cache_bytes: u64,
    /// `socket.request.max.bytes`: larger frames close the connection. Default 100 MiB.
    pub socket_request_max_bytes: usize,
    /// Maximum concurrent client connections. Default 10,000.
    pub max_connections: usize,
    /// `max.connections.per.ip`: connections from one address beyond this are closed at once
    /// (counted in `/metrics`). Default 0: no per-address limit.
    pub max_connections_per_ip: usize,
    /// `max.connection.creation.rate`: new connections per second over all listeners; beyond
    /// it, accepting is delayed (Kafka throttles its acceptor). Default 0: no limit.
    pub max_connection_creation_rate: f64,
    /// `max.incremental.fetch.session.cache.slots`: fetch sessions (KIP-227) this broker keeps.
    /// Each lets a consumer send and receive only changed partitions; beyond it new clients
    /// fetch without one (full requests each time) unless Kafka's eviction rules free a slot.
    /// Costs about 200 bytes per partition in a session. Default 1,000 (Kafka's).
    pub max_incremental_fetch_session_cache_slots: usize,
    /// `quota.window.num`: samples in a client quota's rate window. Default 11 (Kafka's).
    pub quota_window_num: usize,
    /// `quota.window.size.seconds`: the length of one sample. Default 1 s (Kafka's).
    pub quota_window_size: Duration,
    /// `connections.max.idle.ms`: a connection with no request for this long, and no answer
    /// pending, is closed. Default 10 min (Kafka's).
    pub connections_max_idle: Duration,
    /// Once a frame's first byte arrived, the whole frame must arrive within this; a slow
    /// sender (slowloris) is disconnected. Also bounds the TLS handshake. Default 30 s (the
    /// clients' own `request.timeout.ms`).
    pub request_read_timeout: Duration,
    /// Requests read ahead per connection while earlier ones are still being answered. Default 32.
    pub max_inflight_requests_per_connection: usize,
    /// `auto.create.topics.enable`. Default true.
    pub auto_create_topics: bool,
    /// Zero cross-zone produce (RFC 0005): with a rack, bind the zone endpoint that takes
    /// produces forwarded from brokers of other racks, and point clients whose `client.id` names
    /// a rack at brokers of that rack. Default false: the zone endpoint carries references to
    /// staged records, so it is opened only when asked for (and speaks mutual TLS with the
    /// `controller_tls_*` certificates when they are set).
    pub zone_produce: bool,
    /// `num.partitions` for auto-created topics and CreateTopics with -1. Default 1.
    pub num_partitions: i32,
    /// `message.max.bytes`: the broker default of the topic config `max.message.bytes`.
    /// Default 1048588 (Kafka's).
    pub message_max_bytes: i32,
    /// Price of 1,000 PUT requests for the cost estimate in `/metrics`. Default 0.005 (AWS S3
    /// Standard, us-east-1).
    pub put_price_per_1000: f64,
    /// Price of 1,000 GET requests for the cost estimate. Default 0.0004 (S3 Standard).
    pub get_price_per_1000: f64,
    /// Price of one GB stored for a month, for the console's cost per day. Default 0.023 (S3
    /// Standard, us-east-1, first 50 TB).
    pub storage_price_per_gb_month: f64,
    /// Controllers to reach, HOST:PORT each (any of them; the leader is found by asking).
    /// Required for `skiff broker`; a node that is also a controller defaults to the voters.
    pub controllers: Vec<String>,
    /// How often the broker heartbeats to the controller leader. Default 200 ms (the session
    /// timeout is 5× that by default).
    pub heartbeat_interval: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./skiff-data"),
            kafka_listen: "127.0.0.1:9092".into(),
            kafka_advertise: None,
            http_listen: "127.0.0.1:9644".into(),
            storage: None,
            s3_endpoint: None,
            s3_region: None,
            s3_path_style: None,
            s3_allow_http: None,
            broker: BrokerConfig::default(),
            controller: ControllerSection::default(),
            lifecycle: LifecycleConfig::default(),
            groups: GroupsConfig::default(),
            transactions: TransactionsConfig::default(),
            security: SecurityConfig::default(),
        }
    }
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            node_id: 1,
            rack: None,
            flush_bytes: 4 * 1024 * 1024,
            flush_interval: None,
            flush_when_idle: None,
            buffer_max_bytes: 64 * 1024 * 1024,
            max_inflight_flushes: 4,
            tail_cache_bytes: 256 * 1024 * 1024,
            block_cache_bytes: 256 * 1024 * 1024,
            socket_request_max_bytes: 100 * 1024 * 1024,
            max_connections: 10_000,
            max_connections_per_ip: 0,
            max_connection_creation_rate: 0.0,
            max_incremental_fetch_session_cache_slots: crate::handler::fetch_session::DEFAULT_CACHE_SLOTS,
            quota_window_num: 11,
            quota_window_size: Duration::from_secs(1),
            connections_max_idle: Duration::from_secs(600),
            request_read_timeout: Duration::from_secs(30),
            max_inflight_requests_per_connection: 32,
            auto_create_topics: true,
            zone_produce: false,
            num_partitions: 1,
            message_max_bytes: 1_048_588,
            put_price_per_1000: 0.005,
            get_price_per_1000: 0.0004,
            storage_price_per_gb_month: 0.023,
            controllers: Vec::new(),
            heartbeat_interval: Duration::from_millis(200),
        }
    }
}

impl Config {
    /// Parses a TOML config file.
    /// Unknown keys and bad values are errors, all of them in one message.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        Self::from_toml_problems(text).map_err(|p| p.join("; "))
    }

    /// [`Config::from_toml`] with each problem separately.
    pub fn from_toml_problems(text: &str) -> Result<Self, Vec<String>> {
        let mut config = Self::default();
        settings::apply_toml(&mut config, text)?;
        Ok(config)
    }

    /// The address clients are told to use (and the `Kafka bootstrap:` line shows): the first
    /// listener's advertised one when set, else the address it bound (with its real port when
    /// `kafka_listen` asked for port 0).
    pub fn kafka_bootstrap(&self, bound: SocketAddr) -> String {
        self.advertised()
            .ok()
            .and_then(|a| a.into_iter().next().flatten())
            .map_or_else(|| bound.to_string(), |a| a.to_string())
    }

    /// The Kafka listeners (call after [`Config::validate`], which reports their problems).
    pub fn listeners(&self) -> Result<Vec<crate::security::listener::ListenerSpec>, String> {
        crate::security::listener::parse_listeners(&self.kafka_listen)
    }

    /// Each listener's advertised address, in [`Config::listeners`] order.
    pub fn advertised(&self) -> Result<Vec<Option<crate::security::listener::Advertised>>, String> {
        let listeners = self.listeners()?;
        match &self.kafka_advertise {
            Some(a) => crate::security::listener::parse_advertised(a, &listeners),
            None => Ok(vec![None; listeners.len()]),
        }
    }

    /// The object storage URL in effect.
    pub fn storage_url(&self) -> String {
        match &self.storage {
            Some(url) => url.clone(),
            None => {
                let dir = std::path::absolute(self.data_dir.join("objects"))
                    .unwrap_or_else(|_| self.data_dir.join("objects"));
                format!("file://{}", dir.display())
            }
        }
    }

    /// [`Config::storage_url`] as logs and errors show it: user info (`user:password@`) hidden.
    pub fn storage_url_redacted(&self) -> String {
        settings::redact(&self.storage_url())
    }

    /// The flush interval in effect (per-backend default).
    pub fn flush_interval(&self) -> Duration {
        let default = Duration::from_millis(if self.billed_per_request() { 250 } else { 5 });
        self.broker.flush_interval.unwrap_or(default)
    }

    /// Whether to flush whenever the pipeline is idle (per-backend default).
    pub fn flush_when_idle(&self) -> bool {
        self.broker.flush_when_idle.unwrap_or(!self.billed_per_request())
    }

    /// True for AWS S3 itself, where every PUT is billed: `s3://` without a custom endpoint
    /// (neither `s3_endpoint` nor `AWS_ENDPOINT` / `AWS_ENDPOINT_URL`). A custom endpoint is
    /// taken to be MinIO or another self-hosted store, tuned for latency like a local directory.
    pub fn billed_per_request(&self) -> bool {
        let custom_endpoint = self.s3_endpoint.is_some()
            || ["AWS_ENDPOINT", "AWS_ENDPOINT_URL"].iter().any(|k| std::env::var(k).is_ok_and(|v| !v.is_empty()));
        self.storage_url().starts_with("s3://") && !custom_endpoint
    }

    /// Checks every field; returns all problems at once.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        if self.http_listen.parse::<SocketAddr>().is_err() {
            problems.push(format!("http_listen: `{}` is not HOST:PORT with an IP address", self.http_listen));
        }
        match self.listeners() {
            Ok(listeners) => {
                if let Err(e) = self.advertised() {
                    problems.push(format!("kafka_advertise: {e}"));
                }
                self.security.validate(&listeners, &mut problems);
            }
            Err(e) => problems.push(format!("kafka_listen: {e}")),
        }
        let url = self.storage_url();
        if !(url.starts_with("file://") || url.starts_with("memory://") || url.starts_with("s3://")) {
            problems.push(format!("storage: `{url}` must start with file://, memory:// or s3://"));
        }
        let b = &self.broker;
        if b.node_id < 0 {
            problems.push(format!("broker.node_id: {} must be >= 0", b.node_id));
        }
        if b.flush_bytes == 0 {
            problems.push("broker.flush_bytes must be > 0".into());
        }
        if b.buffer_max_bytes < b.flush_bytes {
            problems.push(format!(
                "broker.buffer_max_bytes ({}) must be >= broker.flush_bytes ({})",
                b.buffer_max_bytes, b.flush_bytes
            ));
        }
        if b.max_inflight_flushes == 0 {
            problems.push("broker.max_inflight_flushes must be > 0".into());
        }
        if b.quota_window_num == 0 {
            problems.push("broker.quota_window_num must be >= 1 (Kafka's quota.window.num)".into());
        }
        if b.quota_window_size < Duration::from_millis(1) {
            problems.push("broker.quota_window_size must be > 0 (Kafka's quota.window.size.seconds)".into());
        }
        if b.max_connection_creation_rate.is_nan() || b.max_connection_creation_rate < 0.0 {
            problems.push("broker.max_connection_creation_rate must be >= 0 (0: no limit)".into());
        }
        if b.socket_request_max_bytes < 1024 {
            problems.push("broker.socket_request_max_bytes must be >= 1024".into());
        }
        if b.connections_max_idle.is_zero() || b.request_read_timeout.is_zero() {
            problems.push("broker.connections_max_idle and request_read_timeout must be > 0".into());
        }
        if b.max_connections == 0 || b.max_inflight_requests_per_connection == 0 {
            problems.push("broker.max_connections and max_inflight_requests_per_connection must be > 0".into());
        }
        if b.num_partitions <= 0 {
            problems.push(format!("broker.num_partitions: {} must be > 0", b.num_partitions));
        }
        if !(b.put_price_per_1000 >= 0.0 && b.get_price_per_1000 >= 0.0 && b.storage_price_per_gb_month >= 0.0) {
            problems.push(
                "broker.put_price_per_1000, get_price_per_1000 and storage_price_per_gb_month must be >= 0".into(),
            );
        }
        if b.message_max_bytes <= 0 {
            problems.push("broker.message_max_bytes must be > 0".into());
        }
        if b.heartbeat_interval.is_zero() {
            problems.push("broker.heartbeat_interval must be > 0".into());
        }
        let c = &self.controller;
        if let Err(e) = c.voter_map() {
            problems.push(format!("controller.voters: {e}"));
        }
        if c.session_timeout < 2 * b.heartbeat_interval {
            problems.push(format!(
                "controller.session_timeout ({}) must be at least twice broker.heartbeat_interval ({})",
                settings::format_duration(c.session_timeout),
                settings::format_duration(b.heartbeat_interval)
            ));
        }
        if c.snapshot_every_entries == 0 {
            problems.push("controller.snapshot_every_entries must be > 0".into());
        }
        let l = &self.lifecycle;
        if l.compaction_interval.is_zero() || l.retention_check_interval.is_zero() || l.gc_interval.is_zero() {
            problems
                .push("lifecycle: compaction_interval, retention_check_interval and gc_interval must be > 0".into());
        }
        if l.compaction_concurrency == 0 || l.compaction_min_chunks == 0 || l.compaction_max_segment_bytes == 0 {
            problems.push(
                "lifecycle: compaction_concurrency, compaction_min_chunks and compaction_max_segment_bytes must be > 0"
                    .into(),
            );
        }
        if l.compaction_min_interval.is_zero() {
            problems.push("lifecycle.compaction_min_interval must be > 0".into());
        }
        if l.cleaner_backoff.is_zero() || l.cleaner_concurrency == 0 {
            problems.push("lifecycle: cleaner_backoff and cleaner_concurrency must be > 0".into());
        }
        // At least one key in the map and one batch in the buffer.
        if l.cleaner_dedupe_buffer_bytes < 1024 || l.cleaner_dirty_buffer_bytes < 1024 {
            problems
                .push("lifecycle: cleaner_dedupe_buffer_bytes and cleaner_dirty_buffer_bytes must be >= 1024".into());
        }
        if l.gc_grace < Duration::from_secs(1) {
            problems.push(format!("lifecycle.gc_grace: {} must be >= 1s", settings::format_duration(l.gc_grace)));
        }
        let g = &self.groups;
        // Kafka's group configs are int32 milliseconds.
        for (name, d) in [
            ("min_session_timeout", Some(g.min_session_timeout)),
            ("max_session_timeout", Some(g.max_session_timeout)),
            ("consumer_session_timeout", Some(g.consumer_session_timeout)),
            ("consumer_heartbeat_interval", Some(g.consumer_heartbeat_interval)),
            ("consumer_min_session_timeout", g.consumer_min_session_timeout),
            ("consumer_max_session_timeout", g.consumer_max_session_timeout),
            ("consumer_min_heartbeat_interval", g.consumer_min_heartbeat_interval),
            ("consumer_max_heartbeat_interval", g.consumer_max_heartbeat_interval),
        ] {
            if d.is_some_and(|d| d.as_millis() > i32::MAX as u128) {
                problems.push(format!("groups.{name} must be at most {} ms", i32::MAX));
            }
        }
        if g.min_session_timeout.is_zero() || g.min_session_timeout > g.max_session_timeout {
            problems.push("groups: need 0 < min_session_timeout <= max_session_timeout".into());
        }
        if g.consumer_heartbeat_interval.is_zero() || g.consumer_heartbeat_interval >= g.consumer_session_timeout {
            problems.push("groups: need 0 < consumer_heartbeat_interval < consumer_session_timeout".into());
        }
        let bounds = g.bounds();
        let (session, heartbeat) = (kafka_ms(g.consumer_session_timeout), kafka_ms(g.consumer_heartbeat_interval));
        if !(bounds.min_session_timeout_ms <= session
            && session <= bounds.max_session_timeout_ms
            && bounds.min_heartbeat_interval_ms <= heartbeat
            && heartbeat <= bounds.max_heartbeat_interval_ms)
        {
            problems.push(format!(
                "groups: the consumer session timeout and heartbeat interval must lie within their min/max ({bounds:?})"
            ));
        }
        if crate::group::assignor::Assignor::from_name(&g.consumer_default_assignor).is_none() {
            problems.push(format!(
                "groups.consumer_default_assignor: `{}` is not `uniform` or `range`",
                g.consumer_default_assignor
            ));
        }
        let t = &self.transactions;
        if t.max_timeout.is_zero() || t.max_timeout.as_millis() > i32::MAX as u128 {
            problems.push(format!("transactions.max_timeout must be between 1 ms and {} ms", i32::MAX));
        }
        for (name, d) in [
            ("id_expiration", t.id_expiration),
            ("abort_check_interval", t.abort_check_interval),
            ("expire_check_interval", t.expire_check_interval),
        ] {
            if d.is_zero() {
                problems.push(format!("transactions.{name} must be positive"));
            }
        }
        if problems.is_empty() { Ok(()) } else { Err(problems) }
    }

    /// The config as logged, one `key=value` per setting (`(default)` where a value is unset
    /// and its default computed): credentials never appear in it (they come from the
    /// environment), but a URL could carry user info, so that is hidden.
    pub fn redacted(&self) -> String {
        settings::SETTINGS
            .iter()
            .map(|s| match s.show(self) {
                v if v.is_empty() => format!("{}=(default)", s.key),
                v => format!("{}={}", s.key, settings::redact(&v)),
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// A duration as Kafka's int32 milliseconds (saturating; `validate` rejects larger ones).
fn kafka_ms(d: Duration) -> i32 {
    i32::try_from(d.as_millis()).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert!(Config::default().validate().is_ok());
        assert_eq!(Config::default().flush_interval(), Duration::from_millis(5));
    }

    #[test]
    fn reports_all_problems() {
        let mut c = Config { kafka_listen: "nope".into(), storage: Some("ftp://x".into()), ..Default::default() };
        c.broker.num_partitions = 0;
        let problems = c.validate().expect_err("invalid");
        assert_eq!(problems.len(), 3, "{problems:?}");
    }

    #[test]
    fn toml_round_trip() {
        let c = Config::from_toml("data_dir = \"/tmp/x\"\n[broker]\nnum_partitions = 3\n").expect("parse");
        assert_eq!(c.broker.num_partitions, 3);
        assert!(Config::from_toml("bogus = 1").is_err());
        let c = Config::from_toml("[lifecycle]\ngc_grace_ms = 2000\ncompaction_enabled = false\n").expect("parse");
        assert_eq!(c.lifecycle.gc_grace, Duration::from_millis(2000));
        assert!(!c.lifecycle.compaction_enabled);
        assert_eq!(c.lifecycle.compaction_min_chunks, 64);
        assert!(c.validate().is_ok());
        assert!(Config::from_toml("[lifecycle]\ngc_grace_ms = 5\n").expect("parse").validate().is_err());
        let c = Config::from_toml(
            "[groups]\nconsumer_heartbeat_interval_ms = 500\nconsumer_default_assignor = \"range\"\n",
        )
        .expect("parse");
        assert!(c.validate().is_ok());
        let settings = c.groups.settings();
        assert_eq!(settings.consumer.heartbeat_interval_ms, 500);
        assert_eq!(settings.consumer.session_timeout_ms, 45_000);
        assert_eq!(settings.consumer.default_assignor, crate::group::assignor::Assignor::Range);
        assert!(
            Config::from_toml("[groups]\nconsumer_default_assignor = \"sticky\"\n").expect("parse").validate().is_err()
        );
    }

    #[test]
    fn s3_default_interval() {
        let c = Config { storage: Some("s3://b/p".into()), ..Config::default() };
        assert_eq!(c.flush_interval(), Duration::from_millis(250));
        assert!(!c.flush_when_idle());
        let minio = Config { s3_endpoint: Some("http://127.0.0.1:9000".into()), ..c };
        assert_eq!(minio.flush_interval(), Duration::from_millis(5));
        assert!(minio.flush_when_idle());
        let c = Config { storage: Some("s3://user:pw@b/p".into()), ..Config::default() };
        assert!(!c.redacted().contains("pw"));
        assert_eq!(c.storage_url_redacted(), "s3://***@b/p");
    }
}
