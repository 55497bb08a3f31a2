//! The one declaration of every setting: its file key, `SKIFF_*` variable, flag, the roles that
//! take it, its help text, and (for durations) the older millisecond spelling still accepted.
//!
//! The file parser ([`Config::from_toml`]), the environment and flag layers (`config::cli`),
//! `--help`, the logged effective configuration and docs/configuration.md (checked by a test)
//! all come from [`SETTINGS`], so they cannot drift apart. Defaults live in the `Default` impls
//! next to the structs; `--help` shows them from there.
//!
//! Values: numbers and booleans as usual; lists comma-separated in the environment and on the
//! command line, arrays in the file; durations as `250ms`, `5s`, `2m`, `1h` or `1m30s`, where a
//! bare number is milliseconds (so the older `*_ms` keys, variables and flags keep their meaning).

use std::path::PathBuf;
use std::time::Duration;

use super::Config;

/// `skiff dev`.
pub const DEV: u8 = 1;
/// `skiff controller` (and `skiff node --roles controller`).
pub const CONTROLLER: u8 = 2;
/// `skiff broker` (and `skiff node --roles broker`).
pub const BROKER: u8 = 4;
const ALL: u8 = DEV | CONTROLLER | BROKER;
const SERVING: u8 = DEV | BROKER;

/// How a value is given on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `--flag` alone means true; `--flag=false` is allowed.
    Bool,
    /// Comma-separated; the flag may be repeated.
    List,
    /// One value.
    Single,
}

/// The older spelling of a duration setting, in milliseconds (a bare number).
#[derive(Debug, Clone, Copy)]
pub struct Legacy {
    /// Full file key, e.g. `broker.flush_interval_ms`.
    pub key: &'static str,
    /// Variable and flag, for the settings that had them before durations were typed.
    pub env_flag: Option<(&'static str, &'static str)>,
}

impl Legacy {
    const fn file(key: &'static str) -> Self {
        Self { key, env_flag: None }
    }

    const fn cli(key: &'static str, env: &'static str, flag: &'static str) -> Self {
        Self { key, env_flag: Some((env, flag)) }
    }
}

/// One setting. See the module docs.
pub struct Setting {
    /// Full file key: `data_dir`, `broker.flush_bytes`, ...
    pub key: &'static str,
    pub env: &'static str,
    /// Long flag without the leading `--`. Shared only by `broker.node_id` and
    /// `controller.node_id` (`--node-id` sets both on a node with both roles).
    pub flag: &'static str,
    /// Which subcommands take the variable and the flag ([`DEV`], [`CONTROLLER`], [`BROKER`]).
    /// The file may hold every key whatever the role.
    pub roles: u8,
    pub help: &'static str,
    /// The default, when it is not simply `Config::default()`'s value (computed or absent).
    pub default_doc: Option<&'static str>,
    pub legacy: Option<Legacy>,
    /// The `--help` placeholder, when the type's (`TEXT`, `N`, ...) says too little.
    pub value: Option<&'static str>,
    get: fn(&Config) -> &dyn Slot,
    get_mut: fn(&mut Config) -> &mut dyn Slot,
}

impl Setting {
    /// Sets the value from text (a variable or a flag).
    pub fn parse_into(&self, config: &mut Config, text: &str) -> Result<(), String> {
        (self.get_mut)(config).parse_into(text)
    }

    /// Sets the value from the config file.
    pub fn toml_into(&self, config: &mut Config, value: &toml::Value) -> Result<(), String> {
        (self.get_mut)(config).toml_into(value)
    }

    /// The value as text ("" when unset), as logged and shown in `--help`.
    pub fn show(&self, config: &Config) -> String {
        (self.get)(config).show()
    }

    pub fn kind(&self) -> Kind {
        (self.get)(&Config::default()).kind()
    }

    /// The placeholder in `--help`: `<DURATION>`, `<N>`, ...
    pub fn value_name(&self) -> &'static str {
        self.value.unwrap_or_else(|| self.type_name())
    }

    /// The value's type: `BOOL`, `N`, `NUMBER`, `TEXT`, `PATH`, `LIST`, `DURATION` or `SECRET`.
    pub fn type_name(&self) -> &'static str {
        (self.get)(&Config::default()).value_name()
    }

    /// The default as shown in `--help`.
    pub fn default_text(&self) -> String {
        match self.default_doc {
            Some(d) => d.to_string(),
            None => self.show(&Config::default()),
        }
    }

    /// The TOML section the key lives in (`""` for top-level keys).
    pub fn section(&self) -> &'static str {
        self.key.rsplit_once('.').map_or("", |(s, _)| s)
    }
}

/// A config field that a setting can read and write.
trait Slot {
    fn parse_into(&mut self, text: &str) -> Result<(), String>;
    fn toml_into(&mut self, value: &toml::Value) -> Result<(), String>;
    fn show(&self) -> String;
    fn kind(&self) -> Kind;
    fn value_name(&self) -> &'static str;
}

/// A type a setting can have.
trait Value: Sized {
    const KIND: Kind = Kind::Single;
    const VALUE_NAME: &'static str;
    fn parse(text: &str) -> Result<Self, String>;
    fn from_toml(value: &toml::Value) -> Result<Self, String>;
    fn show(&self) -> String;
}

impl<T: Value> Slot for T {
    fn parse_into(&mut self, text: &str) -> Result<(), String> {
        *self = T::parse(text.trim())?;
        Ok(())
    }
    fn toml_into(&mut self, value: &toml::Value) -> Result<(), String> {
        *self = T::from_toml(value)?;
        Ok(())
    }
    fn show(&self) -> String {
        Value::show(self)
    }
    fn kind(&self) -> Kind {
        T::KIND
    }
    fn value_name(&self) -> &'static str {
        T::VALUE_NAME
    }
}

fn expected(what: &str, value: &toml::Value) -> String {
    format!("expected {what}, found {} `{value}`", value.type_str())
}

macro_rules! integer_value {
    ($($t:ty),*) => {$(
        impl Value for $t {
            const VALUE_NAME: &'static str = "N";
            fn parse(text: &str) -> Result<Self, String> {
                text.replace('_', "").parse().map_err(|e| format!("`{text}` is not a whole number ({e})"))
            }
            fn from_toml(value: &toml::Value) -> Result<Self, String> {
                let i = value.as_integer().ok_or_else(|| expected("a whole number", value))?;
                <$t>::try_from(i).map_err(|_| format!("{i} is out of range"))
            }
            fn show(&self) -> String {
                self.to_string()
            }
        }
    )*};
}
integer_value!(i32, u64, usize);

impl Value for f64 {
    const VALUE_NAME: &'static str = "NUMBER";
    fn parse(text: &str) -> Result<Self, String> {
        text.parse().map_err(|_| format!("`{text}` is not a number"))
    }
    fn from_toml(value: &toml::Value) -> Result<Self, String> {
        match value {
            toml::Value::Float(f) => Ok(*f),
            toml::Value::Integer(i) => Ok(*i as f64),
            other => Err(expected("a number", other)),
        }
    }
    fn show(&self) -> String {
        self.to_string()
    }
}

impl Value for bool {
    const KIND: Kind = Kind::Bool;
    const VALUE_NAME: &'static str = "BOOL";
    fn parse(text: &str) -> Result<Self, String> {
        match text.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" => Ok(false),
            _ => Err(format!("`{text}` is not true or false")),
        }
    }
    fn from_toml(value: &toml::Value) -> Result<Self, String> {
        value.as_bool().ok_or_else(|| expected("true or false", value))
    }
    fn show(&self) -> String {
        self.to_string()
    }
}

impl Value for String {
    const VALUE_NAME: &'static str = "TEXT";
    fn parse(text: &str) -> Result<Self, String> {
        Ok(text.to_string())
    }
    fn from_toml(value: &toml::Value) -> Result<Self, String> {
        value.as_str().map(str::to_string).ok_or_else(|| expected("a string", value))
    }
    fn show(&self) -> String {
        self.clone()
    }
}

impl Value for super::Secret {
    const VALUE_NAME: &'static str = "SECRET";
    fn parse(text: &str) -> Result<Self, String> {
        Ok(super::Secret(text.to_string()))
    }
    fn from_toml(value: &toml::Value) -> Result<Self, String> {
        // The value is never quoted in the error: it is a secret.
        value.as_str().map(|s| super::Secret(s.to_string())).ok_or_else(|| "expected a string".to_string())
    }
    fn show(&self) -> String {
        "***".into()
    }
}

impl Value for PathBuf {
    const VALUE_NAME: &'static str = "PATH";
    fn parse(text: &str) -> Result<Self, String> {
        Ok(PathBuf::from(text))
    }
    fn from_toml(value: &toml::Value) -> Result<Self, String> {
        value.as_str().map(PathBuf::from).ok_or_else(|| expected("a path string", value))
    }
    fn show(&self) -> String {
        self.display().to_string()
    }
}

impl Value for Vec<String> {
    const KIND: Kind = Kind::List;
    const VALUE_NAME: &'static str = "LIST";
    fn parse(text: &str) -> Result<Self, String> {
        Ok(text.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect())
    }
    fn from_toml(value: &toml::Value) -> Result<Self, String> {
        let items = value.as_array().ok_or_else(|| expected("an array of strings", value))?;
        items.iter().map(String::from_toml).collect()
    }
    fn show(&self) -> String {
        self.join(",")
    }
}

impl Value for Duration {
    const VALUE_NAME: &'static str = "DURATION";
    fn parse(text: &str) -> Result<Self, String> {
        parse_duration(text)
    }
    fn from_toml(value: &toml::Value) -> Result<Self, String> {
        match value {
            toml::Value::Integer(ms) => {
                u64::try_from(*ms).map(Duration::from_millis).map_err(|_| format!("{ms} ms is negative"))
            }
            toml::Value::String(s) => parse_duration(s),
            other => Err(expected("a duration such as \"250ms\" or \"5s\" (or a number of ms)", other)),
        }
    }
    fn show(&self) -> String {
        format_duration(*self)
    }
}

impl<T: Value> Value for Option<T> {
    const KIND: Kind = T::KIND;
    const VALUE_NAME: &'static str = T::VALUE_NAME;
    fn parse(text: &str) -> Result<Self, String> {
        T::parse(text).map(Some)
    }
    fn from_toml(value: &toml::Value) -> Result<Self, String> {
        T::from_toml(value).map(Some)
    }
    fn show(&self) -> String {
        self.as_ref().map(T::show).unwrap_or_default()
    }
}

/// `250ms`, `5s`, `2m`, `1h`, `1m30s`; a bare number is milliseconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("`{text}` is not a duration (e.g. 250ms, 5s, 2m, 1h; a bare number is ms)");
    let t = text.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return t.parse().map(Duration::from_millis).map_err(|_| bad());
    }
    let mut total = Duration::ZERO;
    let mut rest = t;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let unit_len = rest[digits..].bytes().take_while(u8::is_ascii_alphabetic).count();
        if digits == 0 || unit_len == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        let unit_ms = match &rest[digits..digits + unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            _ => return Err(bad()),
        };
        let part = n.checked_mul(unit_ms).ok_or_else(bad)?;
        total = total.checked_add(Duration::from_millis(part)).ok_or_else(bad)?;
        rest = &rest[digits + unit_len..];
    }
    Ok(total)
}

/// The shortest exact spelling in the largest unit: `250ms`, `5s`, `10m`, `1h`.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    for (unit, size) in [("h", 3_600_000), ("m", 60_000), ("s", 1_000)] {
        if ms != 0 && ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

/// Declares [`SETTINGS`]: `field.path { env, flag, roles, [default,] [legacy,] [value,] help }`.
/// The file key is the field path, so a setting cannot name a field it does not set.
macro_rules! settings {
    ($( $($field:ident).+ {
        env: $env:literal, flag: $flag:literal, roles: $roles:expr,
        $(default: $default:literal,)? $(legacy: $legacy:expr,)? $(value: $value:literal,)?
        help: $help:literal $(,)?
    } )*) => {
        /// Every setting, in `--help` and docs/configuration.md order.
        pub static SETTINGS: &[Setting] = &[$(
            Setting {
                key: stringify!($($field).+),
                env: $env,
                flag: $flag,
                roles: $roles,
                help: $help,
                default_doc: settings!(@opt $($default)?),
                legacy: settings!(@opt $($legacy)?),
                value: settings!(@opt $($value)?),
                get: |c| &c.$($field).+,
                get_mut: |c| &mut c.$($field).+,
            },
        )*];
    };
    (@opt $v:expr) => { Some($v) };
    (@opt) => { None };
}

settings! {
    // Process.
    data_dir {
        env: "SKIFF_DATA_DIR", flag: "data-dir", roles: ALL,
        help: "Directory for the controller's Raft log and snapshots (and objects by default)",
    }
    kafka_listen {
        env: "SKIFF_KAFKA_LISTEN", flag: "kafka-listen", roles: SERVING,
        value: "LISTENERS",
        help: "Kafka listeners, comma-separated PROTOCOL://HOST:PORT (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL; a bare HOST:PORT is PLAINTEXT); port 0 picks a free port",
    }
    kafka_advertise {
        env: "SKIFF_KAFKA_ADVERTISE", flag: "kafka-advertise", roles: SERVING,
        default: "the bound listener addresses",
        value: "LISTENERS",
        help: "Addresses clients are told to connect to (Metadata, and the `Kafka bootstrap:` line): HOST:PORT for one listener, else PROTOCOL://HOST:PORT per listener",
    }
    http_listen {
        env: "SKIFF_HTTP_LISTEN", flag: "http-listen", roles: ALL,
        value: "HOST:PORT",
        help: "HTTP listener for /metrics, /health and the web console (/, /api/v1/), HOST:PORT",
    }
    storage {
        env: "SKIFF_STORAGE", flag: "storage", roles: ALL,
        default: "file://<data-dir>/objects",
        value: "URL",
        help: "Object storage URL: file:///abs/dir, memory://, s3://bucket/prefix",
    }
    s3_endpoint {
        env: "SKIFF_S3_ENDPOINT", flag: "s3-endpoint", roles: ALL,
        default: "AWS_ENDPOINT or AWS",
        value: "URL",
        help: "S3 endpoint (e.g. MinIO http://127.0.0.1:9000)",
    }
    s3_region {
        env: "SKIFF_S3_REGION", flag: "s3-region", roles: ALL,
        default: "AWS_REGION",
        value: "REGION",
        help: "S3 region",
    }
    s3_path_style {
        env: "SKIFF_S3_PATH_STYLE", flag: "s3-path-style", roles: ALL,
        default: "true when an endpoint is set",
        help: "Path-style S3 URLs (endpoint/bucket/key), as MinIO needs",
    }
    s3_allow_http {
        env: "SKIFF_S3_ALLOW_HTTP", flag: "s3-allow-http", roles: ALL,
        default: "AWS_ALLOW_HTTP, else true for an http:// endpoint",
        help: "Allow a plain http:// S3 endpoint",
    }

    // Broker.
    broker.node_id {
        env: "SKIFF_NODE_ID", flag: "node-id", roles: SERVING,
        help: "Broker id (with the controller role also its Raft id)",
    }
    broker.rack {
        env: "SKIFF_RACK", flag: "rack", roles: SERVING,
        default: "none",
        value: "RACK",
        help: "Rack of this broker, used to spread partitions and reported in Metadata",
    }
    broker.controllers {
        env: "SKIFF_CONTROLLERS", flag: "controllers", roles: BROKER,
        default: "the voters",
        value: "HOST:PORT,...",
        help: "Controllers to reach, HOST:PORT comma-separated (any of them; the leader is found by asking)",
    }
    broker.heartbeat_interval {
        env: "SKIFF_HEARTBEAT_INTERVAL", flag: "heartbeat-interval", roles: BROKER,
        legacy: Legacy::cli("broker.heartbeat_interval_ms", "SKIFF_HEARTBEAT_INTERVAL_MS", "heartbeat-interval-ms"),
        help: "How often the broker heartbeats to the controller leader (at most half the session timeout)",
    }
    broker.flush_bytes {
        env: "SKIFF_FLUSH_BYTES", flag: "flush-bytes", roles: SERVING,
        value: "BYTES",
        help: "Flush the write-ahead buffer as one object at this many bytes (larger: fewer billed PUTs, more memory)",
    }
    broker.flush_interval {
        env: "SKIFF_FLUSH_INTERVAL", flag: "flush-interval", roles: SERVING,
        default: "5ms (file, memory, S3 with an endpoint), 250ms (AWS S3)",
        legacy: Legacy::cli("broker.flush_interval_ms", "SKIFF_FLUSH_INTERVAL_MS", "flush-interval-ms"),
        help: "Flush at the latest this long after the first byte arrived (produce latency is at least this)",
    }
    broker.flush_when_idle {
        env: "SKIFF_FLUSH_WHEN_IDLE", flag: "flush-when-idle", roles: SERVING,
        default: "true (file, memory, S3 with an endpoint), false (AWS S3)",
        help: "Flush as soon as no flush is in flight (group commit) instead of waiting for the interval",
    }
    broker.buffer_max_bytes {
        env: "SKIFF_BUFFER_MAX_BYTES", flag: "buffer-max-bytes", roles: SERVING,
        value: "BYTES",
        help: "Produce bytes accepted but not yet acknowledged; producers wait beyond it",
    }
    broker.max_inflight_flushes {
        env: "SKIFF_MAX_INFLIGHT_FLUSHES", flag: "max-inflight-flushes", roles: SERVING,
        help: "Concurrent object uploads (their commits still apply in order)",
    }
    broker.tail_cache_bytes {
        env: "SKIFF_TAIL_CACHE_BYTES", flag: "tail-cache-bytes", roles: SERVING,
        value: "BYTES",
        help: "Memory for recently flushed data served to tailing consumers",
    }
    broker.block_cache_bytes {
        env: "SKIFF_BLOCK_CACHE_BYTES", flag: "block-cache-bytes", roles: SERVING,
        value: "BYTES",
        help: "Memory for 1 MiB blocks of objects read by catch-up consumers",
    }
    broker.socket_request_max_bytes {
        env: "SKIFF_SOCKET_REQUEST_MAX_BYTES", flag: "socket-request-max-bytes", roles: SERVING,
        value: "BYTES",
        help: "socket.request.max.bytes: a larger frame closes the connection",
    }
    broker.max_connections {
        env: "SKIFF_MAX_CONNECTIONS", flag: "max-connections", roles: SERVING,
        help: "Concurrent client connections; more wait in the listen backlog",
    }
    broker.max_connections_per_ip {
        env: "SKIFF_MAX_CONNECTIONS_PER_IP", flag: "max-connections-per-ip", roles: SERVING,
        help: "max.connections.per.ip: more connections from one address are closed at once; 0 = no limit",
    }
    broker.max_connection_creation_rate {
        env: "SKIFF_MAX_CONNECTION_CREATION_RATE", flag: "max-connection-creation-rate", roles: SERVING,
        value: "PER_SECOND",
        help: "max.connection.creation.rate: new connections per second over all listeners, beyond which accepting is delayed; 0 = no limit",
    }
    broker.max_incremental_fetch_session_cache_slots {
        env: "SKIFF_MAX_INCREMENTAL_FETCH_SESSION_CACHE_SLOTS", flag: "max-incremental-fetch-session-cache-slots", roles: SERVING,
        help: "max.incremental.fetch.session.cache.slots: fetch sessions (KIP-227) kept; 0 = none, every fetch is full",
    }
    broker.quota_window_num {
        env: "SKIFF_QUOTA_WINDOW_NUM", flag: "quota-window-num", roles: SERVING,
        help: "quota.window.num: samples in a client quota's rate window",
    }
    broker.quota_window_size {
        env: "SKIFF_QUOTA_WINDOW_SIZE", flag: "quota-window-size", roles: SERVING,
        help: "quota.window.size.seconds: the length of one quota sample",
    }
    broker.connections_max_idle {
        env: "SKIFF_CONNECTIONS_MAX_IDLE", flag: "connections-max-idle", roles: SERVING,
        help: "connections.max.idle.ms: close a connection without requests or pending answers for this long",
    }
    broker.request_read_timeout {
        env: "SKIFF_REQUEST_READ_TIMEOUT", flag: "request-read-timeout", roles: SERVING,
        help: "A started frame (and a TLS handshake) must arrive whole within this, else the connection closes",
    }
    broker.max_inflight_requests_per_connection {
        env: "SKIFF_MAX_INFLIGHT_REQUESTS_PER_CONNECTION", flag: "max-inflight-requests-per-connection",
        roles: SERVING,
        help: "Requests read ahead on one connection while earlier answers are pending",
    }
    broker.auto_create_topics {
        env: "SKIFF_AUTO_CREATE_TOPICS", flag: "auto-create-topics", roles: SERVING,
        help: "auto.create.topics.enable: create unknown topics on Metadata requests",
    }
    broker.zone_produce {
        env: "SKIFF_ZONE_PRODUCE", flag: "zone-produce", roles: SERVING,
        help: "With a rack: take produces forwarded from other racks on a zone endpoint and route clients whose client.id has skiff_rack=R to brokers of rack R (RFC 0005)",
    }
    broker.num_partitions {
        env: "SKIFF_NUM_PARTITIONS", flag: "num-partitions", roles: SERVING,
        help: "num.partitions: partitions of auto-created topics and of CreateTopics with -1",
    }
    broker.message_max_bytes {
        env: "SKIFF_MESSAGE_MAX_BYTES", flag: "message-max-bytes", roles: SERVING,
        value: "BYTES",
        help: "message.max.bytes: the broker default of the topic config max.message.bytes",
    }
    broker.put_price_per_1000 {
        env: "SKIFF_PUT_PRICE_PER_1000", flag: "put-price-per-1000", roles: SERVING,
        value: "DOLLARS",
        help: "Dollars per 1,000 PUT requests, for the cost estimate in /metrics (AWS S3 Standard)",
    }
    broker.get_price_per_1000 {
        env: "SKIFF_GET_PRICE_PER_1000", flag: "get-price-per-1000", roles: SERVING,
        value: "DOLLARS",
        help: "Dollars per 1,000 GET requests, for the cost estimate in /metrics (AWS S3 Standard)",
    }
    broker.storage_price_per_gb_month {
        env: "SKIFF_STORAGE_PRICE_PER_GB_MONTH", flag: "storage-price-per-gb-month", roles: SERVING,
        value: "DOLLARS",
        help: "Dollars per GB-month stored, for the console's cost per day (AWS S3 Standard)",
    }

    // Security (docs/security.md).
    security.tls_cert {
        env: "SKIFF_TLS_CERT", flag: "tls-cert", roles: SERVING,
        default: "none",
        value: "FILE",
        help: "PEM certificate chain of the SSL and SASL_SSL listeners (reloaded when it changes)",
    }
    security.tls_key {
        env: "SKIFF_TLS_KEY", flag: "tls-key", roles: SERVING,
        default: "none",
        value: "FILE",
        help: "PEM private key of --tls-cert (reloaded when it changes)",
    }
    security.tls_client_ca {
        env: "SKIFF_TLS_CLIENT_CA", flag: "tls-client-ca", roles: SERVING,
        default: "none",
        value: "FILE",
        help: "PEM CA certificates: SSL listener clients must present a certificate signed by one (mutual TLS)",
    }
    security.ssl_principal_mapping_rules {
        env: "SKIFF_SSL_PRINCIPAL_MAPPING_RULES", flag: "ssl-principal-mapping-rules", roles: SERVING,
        value: "RULES",
        help: "ssl.principal.mapping.rules: RULE:pattern/replacement/[LU],...,DEFAULT applied to the client certificate subject",
    }
    security.sasl_mechanisms {
        env: "SKIFF_SASL_MECHANISMS", flag: "sasl-mechanisms", roles: SERVING,
        help: "sasl.enabled.mechanisms of SASL listeners: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER",
    }
    security.connections_max_reauth {
        env: "SKIFF_CONNECTIONS_MAX_REAUTH", flag: "connections-max-reauth", roles: SERVING,
        default: "none",
        help: "connections.max.reauth.ms (KIP-368): SASL sessions last this long, then clients re-authenticate",
    }
    security.connection_failed_authentication_delay {
        env: "SKIFF_CONNECTION_FAILED_AUTHENTICATION_DELAY", flag: "connection-failed-authentication-delay",
        roles: SERVING,
        help: "connection.failed.authentication.delay.ms: a failed authentication is answered this late",
    }
    security.controller_tls_cert {
        env: "SKIFF_CONTROLLER_TLS_CERT", flag: "controller-tls-cert", roles: CONTROLLER | BROKER,
        default: "none",
        value: "FILE",
        help: "PEM certificate of this node on the controller port (mutual TLS between voters and brokers; serverAuth+clientAuth, names the host in --voters)",
    }
    security.controller_tls_key {
        env: "SKIFF_CONTROLLER_TLS_KEY", flag: "controller-tls-key", roles: CONTROLLER | BROKER,
        default: "none",
        value: "FILE",
        help: "PEM private key of --controller-tls-cert",
    }
    security.controller_tls_ca {
        env: "SKIFF_CONTROLLER_TLS_CA", flag: "controller-tls-ca", roles: CONTROLLER | BROKER,
        default: "none",
        value: "FILE",
        help: "PEM CA certificates that every controller's and broker's certificate must chain to",
    }
    security.sasl_oauthbearer_jwks_url {
        env: "SKIFF_SASL_OAUTHBEARER_JWKS_URL", flag: "sasl-oauthbearer-jwks-url", roles: SERVING,
        default: "none",
        value: "URL",
        help: "sasl.oauthbearer.jwks.endpoint.url: the JWKS (RS256/ES256 keys) OAUTHBEARER tokens are verified with (https://, http:// or file:///)",
    }
    security.sasl_oauthbearer_jwks_refresh {
        env: "SKIFF_SASL_OAUTHBEARER_JWKS_REFRESH", flag: "sasl-oauthbearer-jwks-refresh", roles: SERVING,
        help: "sasl.oauthbearer.jwks.endpoint.refresh.ms: how often the JWKS is fetched again (or its file checked)",
    }
    security.sasl_oauthbearer_expected_issuer {
        env: "SKIFF_SASL_OAUTHBEARER_EXPECTED_ISSUER", flag: "sasl-oauthbearer-expected-issuer", roles: SERVING,
        default: "none (not checked)",
        help: "sasl.oauthbearer.expected.issuer: the iss claim tokens must carry",
    }
    security.sasl_oauthbearer_expected_audience {
        env: "SKIFF_SASL_OAUTHBEARER_EXPECTED_AUDIENCE", flag: "sasl-oauthbearer-expected-audience", roles: SERVING,
        default: "none (not checked)",
        help: "sasl.oauthbearer.expected.audience: tokens' aud claim must name one of these",
    }
    security.sasl_oauthbearer_sub_claim_name {
        env: "SKIFF_SASL_OAUTHBEARER_SUB_CLAIM_NAME", flag: "sasl-oauthbearer-sub-claim-name", roles: SERVING,
        help: "sasl.oauthbearer.sub.claim.name: the token claim naming the principal",
    }
    security.sasl_oauthbearer_clock_skew {
        env: "SKIFF_SASL_OAUTHBEARER_CLOCK_SKEW", flag: "sasl-oauthbearer-clock-skew", roles: SERVING,
        help: "sasl.oauthbearer.clock.skew.seconds: tolerance on the exp, nbf and iat claims",
    }
    security.scram_bootstrap_user {
        env: "SKIFF_SCRAM_BOOTSTRAP_USER", flag: "scram-bootstrap-user", roles: SERVING,
        default: "none",
        value: "NAME=PASSWORD",
        help: "A SCRAM user created at start-up if it has no credential (both SCRAM mechanisms); never logged",
    }
    security.super_users {
        env: "SKIFF_SUPER_USERS", flag: "super-users", roles: SERVING,
        default: "none",
        value: "User:NAME,...",
        help: "super.users: principals every ACL check allows",
    }
    security.allow_everyone_if_no_acl_found {
        env: "SKIFF_ALLOW_EVERYONE_IF_NO_ACL_FOUND", flag: "allow-everyone-if-no-acl-found", roles: SERVING,
        default: "false with a SASL listener or mutual TLS, else true",
        help: "allow.everyone.if.no.acl.found: a resource without any ACL is open to every principal",
    }
    security.http_tls {
        env: "SKIFF_HTTP_TLS", flag: "http-tls", roles: SERVING,
        help: "Serve the HTTP listener (/metrics, /health, the console) over TLS with --tls-cert/--tls-key",
    }
    security.http_auth {
        env: "SKIFF_HTTP_AUTH", flag: "http-auth", roles: SERVING,
        default: "true with a SASL listener or mutual TLS, else false",
        help: "Require HTTP Basic (SCRAM users) or Bearer JWT (OAUTHBEARER) on the HTTP listener; the console is then authorized as that user",
    }
    security.http_metrics_open {
        env: "SKIFF_HTTP_METRICS_OPEN", flag: "http-metrics-open", roles: SERVING,
        help: "Serve /metrics without authentication even with --http-auth (/health is always open)",
    }

    // Controller.
    controller.node_id {
        env: "SKIFF_NODE_ID", flag: "node-id", roles: CONTROLLER,
        help: "Raft id of this controller (with the broker role also the broker id); never reuse one with another data dir",
    }
    controller.listen {
        env: "SKIFF_CONTROLLER_LISTEN", flag: "controller-listen", roles: CONTROLLER,
        default: "none (required)",
        value: "HOST:PORT",
        help: "Controller listener HOST:PORT for voters and brokers",
    }
    controller.voters {
        env: "SKIFF_VOTERS", flag: "voters", roles: CONTROLLER,
        default: "none (required)",
        value: "ID=HOST:PORT,...",
        help: "Every voter as ID=HOST:PORT, comma-separated, identical on every controller",
    }
    controller.session_timeout {
        env: "SKIFF_SESSION_TIMEOUT", flag: "session-timeout", roles: CONTROLLER,
        legacy: Legacy::cli("controller.session_timeout_ms", "SKIFF_SESSION_TIMEOUT_MS", "session-timeout-ms"),
        help: "Fence a broker after this long without a heartbeat",
    }
    controller.snapshot_every_entries {
        env: "SKIFF_SNAPSHOT_EVERY_ENTRIES", flag: "snapshot-every-entries", roles: CONTROLLER,
        help: "Snapshot the metadata and purge the Raft log after this many entries",
    }
    controller.log_kept_after_snapshot {
        env: "SKIFF_LOG_KEPT_AFTER_SNAPSHOT", flag: "log-kept-after-snapshot", roles: CONTROLLER,
        help: "Raft log entries kept after a snapshot, so a lagging voter catches up from the log",
    }
    controller.copy_snapshots {
        env: "SKIFF_COPY_SNAPSHOTS", flag: "copy-snapshots", roles: CONTROLLER,
        help: "Copy every snapshot to --storage (under controller/snapshots/) when storage is given",
    }
    controller.restore_from_storage {
        env: "SKIFF_RESTORE_FROM_STORAGE", flag: "restore-from-storage", roles: CONTROLLER,
        help: "On an empty data dir, start from the newest snapshot copy in --storage (docs/cluster.md)",
    }

    // Compaction, retention and garbage collection.
    lifecycle.compaction_enabled {
        env: "SKIFF_COMPACTION_ENABLED", flag: "compaction-enabled", roles: SERVING,
        help: "Rewrite WAL chunks into per-partition segments",
    }
    lifecycle.compaction_interval {
        env: "SKIFF_COMPACTION_INTERVAL", flag: "compaction-interval", roles: SERVING,
        legacy: Legacy::file("lifecycle.compaction_interval_ms"),
        help: "How often the compactor looks for work",
    }
    lifecycle.compaction_min_chunks {
        env: "SKIFF_COMPACTION_MIN_CHUNKS", flag: "compaction-min-chunks", roles: SERVING,
        help: "Compact a partition's run of eligible WAL chunks once it has this many...",
    }
    lifecycle.compaction_min_bytes {
        env: "SKIFF_COMPACTION_MIN_BYTES", flag: "compaction-min-bytes", roles: SERVING,
        value: "BYTES",
        help: "...or this many bytes...",
    }
    lifecycle.compaction_max_age {
        env: "SKIFF_COMPACTION_MAX_AGE", flag: "compaction-max-age", roles: SERVING,
        legacy: Legacy::file("lifecycle.compaction_max_age_ms"),
        help: "...or its oldest chunk was first seen this long ago",
    }
    lifecycle.compaction_min_age {
        env: "SKIFF_COMPACTION_MIN_AGE", flag: "compaction-min-age", roles: SERVING,
        legacy: Legacy::file("lifecycle.compaction_min_age_ms"),
        help: "A WAL chunk is eligible this long after it was first seen (keeps the hot tail in place)",
    }
    lifecycle.compaction_max_segment_bytes {
        env: "SKIFF_COMPACTION_MAX_SEGMENT_BYTES", flag: "compaction-max-segment-bytes", roles: SERVING,
        value: "BYTES",
        help: "Largest segment; one compaction holds one segment in memory",
    }
    lifecycle.compaction_concurrency {
        env: "SKIFF_COMPACTION_CONCURRENCY", flag: "compaction-concurrency", roles: SERVING,
        help: "Runs compacted at once",
    }
    lifecycle.compaction_hot_chunks_budget {
        env: "SKIFF_COMPACTION_HOT_CHUNKS_BUDGET", flag: "compaction-hot-chunks-budget", roles: SERVING,
        help: "Un-compacted WAL chunks a broker aims to hold; compaction speeds up past it (0: fixed pace)",
    }
    lifecycle.compaction_min_interval {
        env: "SKIFF_COMPACTION_MIN_INTERVAL", flag: "compaction-min-interval", roles: SERVING,
        help: "Shortest compaction period the adaptive pace may reach",
    }
    lifecycle.retention_check_interval {
        env: "SKIFF_RETENTION_CHECK_INTERVAL", flag: "retention-check-interval", roles: SERVING,
        legacy: Legacy::file("lifecycle.retention_check_interval_ms"),
        help: "How often retention.ms and retention.bytes are enforced",
    }
    lifecycle.gc_interval {
        env: "SKIFF_GC_INTERVAL", flag: "gc-interval", roles: SERVING,
        legacy: Legacy::file("lifecycle.gc_interval_ms"),
        help: "How often garbage collection runs (one LIST of wal/ and seg/ per run)",
    }
    lifecycle.gc_grace {
        env: "SKIFF_GC_GRACE", flag: "gc-grace", roles: SERVING,
        legacy: Legacy::file("lifecycle.gc_grace_ms"),
        help: "Unreferenced and orphaned objects are deleted only after this long (at least 1s)",
    }
    lifecycle.cleaner_enabled {
        env: "SKIFF_CLEANER_ENABLED", flag: "cleaner-enabled", roles: SERVING,
        help: "Clean compacted topics (cleanup.policy=compact): keep the last record per key",
    }
    lifecycle.cleaner_backoff {
        env: "SKIFF_CLEANER_BACKOFF", flag: "cleaner-backoff", roles: SERVING,
        help: "How often the cleaner rolls heads and looks for work (log.cleaner.backoff.ms)",
    }
    lifecycle.cleaner_concurrency {
        env: "SKIFF_CLEANER_CONCURRENCY", flag: "cleaner-concurrency", roles: SERVING,
        help: "Partitions cleaned at once (log.cleaner.threads)",
    }
    lifecycle.cleaner_dedupe_buffer_bytes {
        env: "SKIFF_CLEANER_DEDUPE_BUFFER_BYTES", flag: "cleaner-dedupe-buffer-bytes", roles: SERVING,
        value: "BYTES",
        help: "Offset map memory of one pass, 24 bytes per key (log.cleaner.dedupe.buffer.size)",
    }
    lifecycle.cleaner_dirty_buffer_bytes {
        env: "SKIFF_CLEANER_DIRTY_BUFFER_BYTES", flag: "cleaner-dirty-buffer-bytes", roles: SERVING,
        value: "BYTES",
        help: "Dirty bytes one pass holds between mapping and filtering",
    }
    lifecycle.cleaner_max_bytes_per_second {
        env: "SKIFF_CLEANER_MAX_BYTES_PER_SECOND", flag: "cleaner-max-bytes-per-second", roles: SERVING,
        value: "BYTES",
        help: "Cleaner I/O limit, read plus written, 0 = unlimited (log.cleaner.io.max.bytes.per.second)",
    }

    // Consumer groups (Kafka's group.* broker configs).
    groups.min_session_timeout {
        env: "SKIFF_GROUP_MIN_SESSION_TIMEOUT", flag: "group-min-session-timeout", roles: SERVING,
        legacy: Legacy::file("groups.min_session_timeout_ms"),
        help: "group.min.session.timeout.ms (classic protocol)",
    }
    groups.max_session_timeout {
        env: "SKIFF_GROUP_MAX_SESSION_TIMEOUT", flag: "group-max-session-timeout", roles: SERVING,
        legacy: Legacy::file("groups.max_session_timeout_ms"),
        help: "group.max.session.timeout.ms (classic protocol)",
    }
    groups.initial_rebalance_delay {
        env: "SKIFF_GROUP_INITIAL_REBALANCE_DELAY", flag: "group-initial-rebalance-delay", roles: SERVING,
        legacy: Legacy::file("groups.initial_rebalance_delay_ms"),
        help: "group.initial.rebalance.delay.ms: the first rebalance of an empty group waits this long",
    }
    groups.consumer_session_timeout {
        env: "SKIFF_GROUP_CONSUMER_SESSION_TIMEOUT", flag: "group-consumer-session-timeout", roles: SERVING,
        legacy: Legacy::file("groups.consumer_session_timeout_ms"),
        help: "group.consumer.session.timeout.ms: a silent member is removed after this long",
    }
    groups.consumer_heartbeat_interval {
        env: "SKIFF_GROUP_CONSUMER_HEARTBEAT_INTERVAL", flag: "group-consumer-heartbeat-interval", roles: SERVING,
        legacy: Legacy::file("groups.consumer_heartbeat_interval_ms"),
        help: "group.consumer.heartbeat.interval.ms: how often members heartbeat (a rebalance takes one or two)",
    }
    groups.consumer_min_session_timeout {
        env: "SKIFF_GROUP_CONSUMER_MIN_SESSION_TIMEOUT", flag: "group-consumer-min-session-timeout",
        roles: SERVING,
        default: "45s, or less to include the session timeout",
        legacy: Legacy::file("groups.consumer_min_session_timeout_ms"),
        help: "group.consumer.min.session.timeout.ms: lowest group consumer.session.timeout.ms",
    }
    groups.consumer_max_session_timeout {
        env: "SKIFF_GROUP_CONSUMER_MAX_SESSION_TIMEOUT", flag: "group-consumer-max-session-timeout",
        roles: SERVING,
        default: "60s, or more to include the session timeout",
        legacy: Legacy::file("groups.consumer_max_session_timeout_ms"),
        help: "group.consumer.max.session.timeout.ms: highest group consumer.session.timeout.ms",
    }
    groups.consumer_min_heartbeat_interval {
        env: "SKIFF_GROUP_CONSUMER_MIN_HEARTBEAT_INTERVAL", flag: "group-consumer-min-heartbeat-interval",
        roles: SERVING,
        default: "5s, or less to include the heartbeat interval",
        legacy: Legacy::file("groups.consumer_min_heartbeat_interval_ms"),
        help: "group.consumer.min.heartbeat.interval.ms: lowest group consumer.heartbeat.interval.ms",
    }
    groups.consumer_max_heartbeat_interval {
        env: "SKIFF_GROUP_CONSUMER_MAX_HEARTBEAT_INTERVAL", flag: "group-consumer-max-heartbeat-interval",
        roles: SERVING,
        default: "15s, or more to include the heartbeat interval",
        legacy: Legacy::file("groups.consumer_max_heartbeat_interval_ms"),
        help: "group.consumer.max.heartbeat.interval.ms: highest group consumer.heartbeat.interval.ms",
    }
    groups.consumer_default_assignor {
        env: "SKIFF_GROUP_CONSUMER_DEFAULT_ASSIGNOR", flag: "group-consumer-default-assignor", roles: SERVING,
        value: "ASSIGNOR",
        help: "Server-side assignor of groups whose members name none: uniform or range",
    }

    // Transactions (Kafka's transaction.* broker configs).
    transactions.max_timeout {
        env: "SKIFF_TRANSACTION_MAX_TIMEOUT", flag: "transaction-max-timeout", roles: SERVING,
        help: "transaction.max.timeout.ms: the longest transaction.timeout.ms a producer may ask for",
    }
    transactions.id_expiration {
        env: "SKIFF_TRANSACTIONAL_ID_EXPIRATION", flag: "transactional-id-expiration", roles: SERVING,
        help: "transactional.id.expiration.ms: an idle transactional id is forgotten after this long",
    }
    transactions.abort_check_interval {
        env: "SKIFF_TRANSACTION_ABORT_CHECK_INTERVAL", flag: "transaction-abort-check-interval", roles: SERVING,
        help: "How often timed-out transactions are aborted (transaction.abort.timed.out.transaction.cleanup.interval.ms)",
    }
    transactions.expire_check_interval {
        env: "SKIFF_TRANSACTION_EXPIRE_CHECK_INTERVAL", flag: "transaction-expire-check-interval", roles: SERVING,
        help: "How often idle transactional ids are expired (transaction.remove.expired.transaction.cleanup.interval.ms)",
    }
}

/// The setting a file key names, and whether it is the older millisecond spelling.
pub fn by_key(key: &str) -> Option<(&'static Setting, bool)> {
    SETTINGS.iter().find_map(|s| {
        if s.key == key {
            Some((s, false))
        } else if s.legacy.is_some_and(|l| l.key == key) {
            Some((s, true))
        } else {
            None
        }
    })
}

/// Applies a config file: every key is looked up in [`SETTINGS`]; unknown keys and bad values
/// are all reported.
pub fn apply_toml(config: &mut Config, text: &str) -> Result<(), Vec<String>> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| vec![e.to_string()])?;
    let mut problems = Vec::new();
    let mut seen: Vec<(&'static str, String)> = Vec::new();
    walk(&table, "", &mut |key, value| match by_key(key) {
        None => problems.push(format!("unknown key `{key}` (docs/configuration.md lists them)")),
        Some((setting, _)) => {
            if let Some((_, first)) = seen.iter().find(|(k, _)| *k == setting.key) {
                problems.push(format!("`{key}` and `{first}` set the same thing; give one"));
                return;
            }
            seen.push((setting.key, key.to_string()));
            if let Err(e) = setting.toml_into(config, value) {
                problems.push(format!("`{key}`: {e}"));
            }
        }
    });
    if problems.is_empty() { Ok(()) } else { Err(problems) }
}

/// Calls `leaf` with the dotted key of every non-table value.
fn walk(table: &toml::Table, prefix: &str, leaf: &mut dyn FnMut(&str, &toml::Value)) {
    for (k, v) in table {
        let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
        match v {
            toml::Value::Table(t) if prefix.is_empty() => walk(t, &key, leaf),
            _ => leaf(&key, v),
        }
    }
}

/// Hides user info (`scheme://user:password@host`) in a value that is a URL.
pub fn redact(value: &str) -> String {
    if let Some((scheme, rest)) = value.split_once("://")
        && let Some((_, host)) = rest.split_once('@')
    {
        return format!("{scheme}://***@{host}");
    }
    value.to_string()
}
