//! The `skiff` binary: CLI, config loading, tracing, signals → one shutdown token.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use skiff::config::Config;
use skiff::node::Roles;
use tokio_util::sync::CancellationToken;
use tracing::info;

#[derive(Parser)]
#[command(name = "skiff", version, about = "Kafka-compatible streaming on object storage with stateless brokers")]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// One process: a single-voter controller and one broker, objects in a local directory by
    /// default. Needs nothing else installed.
    Dev(DevArgs),
    /// A controller: one voter of the metadata quorum (Raft). Brokers connect to it.
    Controller(ClusterArgs),
    /// A broker: serves Kafka clients, keeps no durable state; needs --controllers and --storage.
    Broker(ClusterArgs),
    /// A cluster node with the roles given by --roles (e.g. controller,broker).
    Node(NodeArgs),
}

/// Flags of cluster roles: everything `skiff dev` takes, plus the cluster's own.
#[derive(Args, Debug)]
struct ClusterArgs {
    #[command(flatten)]
    common: DevArgs,
    /// Controller listener HOST:PORT for voters and brokers (controller role).
    #[arg(long, env = "SKIFF_CONTROLLER_LISTEN")]
    controller_listen: Option<String>,
    /// Every voter as ID=HOST:PORT, comma-separated, identical on every controller (controller role).
    #[arg(long, env = "SKIFF_VOTERS", value_delimiter = ',')]
    voters: Vec<String>,
    /// Controllers to reach, HOST:PORT comma-separated (broker role). [default: the voters]
    #[arg(long, env = "SKIFF_CONTROLLERS", value_delimiter = ',')]
    controllers: Vec<String>,
    /// Rack of this broker, used to spread partitions and reported in Metadata.
    #[arg(long, env = "SKIFF_RACK")]
    rack: Option<String>,
    /// Fence a broker after this long without a heartbeat (controller role). [default: 1000]
    #[arg(long, env = "SKIFF_SESSION_TIMEOUT_MS")]
    session_timeout_ms: Option<u64>,
    /// Heartbeat interval of a broker. [default: 200]
    #[arg(long, env = "SKIFF_HEARTBEAT_INTERVAL_MS")]
    heartbeat_interval_ms: Option<u64>,
    /// Snapshot the metadata after this many Raft entries (controller role). [default: 10000]
    #[arg(long, env = "SKIFF_SNAPSHOT_EVERY_ENTRIES")]
    snapshot_every_entries: Option<u64>,
    /// Raft log entries kept after a snapshot (controller role). [default: 10000]
    #[arg(long, env = "SKIFF_LOG_KEPT_AFTER_SNAPSHOT")]
    log_kept_after_snapshot: Option<u64>,
    /// On an empty data dir, start from the newest controller snapshot copied to --storage
    /// (rebuilding a lost quorum; see docs/cluster.md).
    #[arg(long, env = "SKIFF_RESTORE_FROM_STORAGE")]
    restore_from_storage: bool,
}

#[derive(Args, Debug)]
struct NodeArgs {
    /// Roles to run: controller, broker, or both (comma-separated).
    #[arg(long, env = "SKIFF_ROLES", value_delimiter = ',', required = true)]
    roles: Vec<String>,
    #[command(flatten)]
    cluster: ClusterArgs,
}

impl ClusterArgs {
    fn into_config(self) -> anyhow::Result<Config> {
        let node_id = self.common.node_id;
        let mut c = self.common.into_config()?;
        if let Some(id) = node_id {
            anyhow::ensure!(id >= 0, "--node-id must be >= 0");
            c.controller.node_id = id as u64;
        }
        if let Some(v) = self.controller_listen {
            c.controller.listen = Some(v);
        }
        if !self.voters.is_empty() {
            c.controller.voters = self.voters;
        }
        if !self.controllers.is_empty() {
            c.broker.controllers = self.controllers;
        }
        if let Some(v) = self.rack {
            c.broker.rack = Some(v);
        }
        if let Some(v) = self.session_timeout_ms {
            c.controller.session_timeout_ms = v;
        }
        if let Some(v) = self.heartbeat_interval_ms {
            c.broker.heartbeat_interval_ms = v;
        }
        if let Some(v) = self.snapshot_every_entries {
            c.controller.snapshot_every_entries = v;
        }
        if let Some(v) = self.log_kept_after_snapshot {
            c.controller.log_kept_after_snapshot = v;
        }
        if self.restore_from_storage {
            c.controller.restore_from_storage = true;
        }
        Ok(c)
    }
}

/// Flags override `SKIFF_*` environment variables, which override the config file.
#[derive(Args, Debug)]
struct DevArgs {
    /// TOML config file (keys as in docs/configuration.md).
    #[arg(long, env = "SKIFF_CONFIG")]
    config: Option<PathBuf>,
    /// Directory for the controller's Raft log and snapshots (and objects by default). [default: ./skiff-data]
    #[arg(long, env = "SKIFF_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Kafka listener HOST:PORT. [default: 127.0.0.1:9092]
    #[arg(long, env = "SKIFF_KAFKA_LISTEN")]
    kafka_listen: Option<String>,
    /// Address advertised to clients. [default: the bound listener address]
    #[arg(long, env = "SKIFF_KAFKA_ADVERTISE")]
    kafka_advertise: Option<String>,
    /// HTTP listener (/metrics, /health). [default: 127.0.0.1:9644]
    #[arg(long, env = "SKIFF_HTTP_LISTEN")]
    http_listen: Option<String>,
    /// Object storage URL: file:///abs/dir, memory://, s3://bucket/prefix. [default: file://<data-dir>/objects]
    #[arg(long, env = "SKIFF_STORAGE")]
    storage: Option<String>,
    /// S3 endpoint (e.g. MinIO http://127.0.0.1:9000). [default: AWS_ENDPOINT or AWS]
    #[arg(long, env = "SKIFF_S3_ENDPOINT")]
    s3_endpoint: Option<String>,
    /// S3 region. [default: AWS_REGION]
    #[arg(long, env = "SKIFF_S3_REGION")]
    s3_region: Option<String>,
    /// Path-style S3 URLs (endpoint/bucket/key), as MinIO needs. [default: true when an endpoint is set]
    #[arg(long, env = "SKIFF_S3_PATH_STYLE")]
    s3_path_style: Option<bool>,
    /// Allow a plain http:// S3 endpoint. [default: AWS_ALLOW_HTTP, else true for an http:// endpoint]
    #[arg(long, env = "SKIFF_S3_ALLOW_HTTP")]
    s3_allow_http: Option<bool>,
    /// Broker id. [default: 1]
    #[arg(long, env = "SKIFF_NODE_ID")]
    node_id: Option<i32>,
    /// Flush the write-ahead buffer at this many bytes. [default: 4194304]
    #[arg(long, env = "SKIFF_FLUSH_BYTES")]
    flush_bytes: Option<usize>,
    /// Flush at the latest after this many ms. [default: 5 (file, memory), 250 (s3)]
    #[arg(long, env = "SKIFF_FLUSH_INTERVAL_MS")]
    flush_interval_ms: Option<u64>,
    /// Partitions of auto-created topics. [default: 1]
    #[arg(long, env = "SKIFF_NUM_PARTITIONS")]
    num_partitions: Option<i32>,
    /// Create unknown topics on Metadata requests. [default: true]
    #[arg(long, env = "SKIFF_AUTO_CREATE_TOPICS")]
    auto_create_topics: Option<bool>,
}

impl DevArgs {
    fn into_config(self) -> anyhow::Result<Config> {
        let mut c = match &self.config {
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).with_context(|| format!("reading config file {}", path.display()))?;
                Config::from_toml(&text).map_err(|e| anyhow::anyhow!("config file {}: {e}", path.display()))?
            }
            None => Config::default(),
        };
        if let Some(v) = self.data_dir {
            c.data_dir = v;
        }
        if let Some(v) = self.kafka_listen {
            c.kafka_listen = v;
        }
        if let Some(v) = self.kafka_advertise {
            c.kafka_advertise = Some(v);
        }
        if let Some(v) = self.http_listen {
            c.http_listen = v;
        }
        if let Some(v) = self.storage {
            c.storage = Some(v);
        }
        if let Some(v) = self.s3_endpoint {
            c.s3_endpoint = Some(v);
        }
        if let Some(v) = self.s3_region {
            c.s3_region = Some(v);
        }
        if let Some(v) = self.s3_path_style {
            c.s3_path_style = Some(v);
        }
        if let Some(v) = self.s3_allow_http {
            c.s3_allow_http = Some(v);
        }
        if let Some(v) = self.node_id {
            c.broker.node_id = v;
        }
        if let Some(v) = self.flush_bytes {
            c.broker.flush_bytes = v;
        }
        if let Some(v) = self.flush_interval_ms {
            c.broker.flush_interval_ms = Some(v);
        }
        if let Some(v) = self.num_partitions {
            c.broker.num_partitions = v;
        }
        if let Some(v) = self.auto_create_topics {
            c.broker.auto_create_topics = v;
        }
        Ok(c)
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SKIFF_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

/// Resolves when SIGINT or SIGTERM arrives.
async fn signalled() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing();
    let (config, roles) = match cli.command {
        Commands::Dev(args) => (args.into_config()?, None),
        Commands::Controller(args) => (args.into_config()?, Some(Roles { controller: true, broker: false })),
        Commands::Broker(args) => (args.into_config()?, Some(Roles { controller: false, broker: true })),
        Commands::Node(args) => {
            let mut roles = Roles { controller: false, broker: false };
            for r in &args.roles {
                match r.trim() {
                    "controller" => roles.controller = true,
                    "broker" => roles.broker = true,
                    other => anyhow::bail!("unknown role `{other}` (expected controller, broker)"),
                }
            }
            (args.cluster.into_config()?, Some(roles))
        }
    };
    if let Err(problems) = config.validate() {
        anyhow::bail!("invalid configuration:\n  {}", problems.join("\n  "));
    }
    info!(config = %config.redacted(), "effective configuration");
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("skiff").build()?;
    runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        // Detached: it lives as long as the process; the runtime drops it on exit.
        tokio::spawn(async move {
            signalled().await;
            info!("signal received: shutting down (in-flight produces are answered first)");
            token.cancel();
        });
        match roles {
            None => {
                skiff::node::run_dev(config, shutdown, |bound| {
                    // The one line tools and tests wait for.
                    println!("Kafka bootstrap: {}", bound.kafka);
                    println!("HTTP: http://{}/metrics", bound.http);
                    let _ = std::io::stdout().flush();
                })
                .await
            }
            Some(roles) => {
                skiff::node::run_node(config, roles, shutdown, |bound| {
                    if let Some(c) = bound.controller {
                        println!("Controller: {c}");
                    }
                    if let Some(k) = bound.kafka {
                        println!("Kafka bootstrap: {k}");
                    }
                    println!("HTTP: http://{}/metrics", bound.http);
                    let _ = std::io::stdout().flush();
                })
                .await
            }
        }
    })
}
