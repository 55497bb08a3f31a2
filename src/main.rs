//! The `skiff` binary: CLI, config loading, tracing, signals → one shutdown token.

use std::io::{IsTerminal, Write};

use skiff::config::cli;
use tokio_util::sync::CancellationToken;
use tracing::info;

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SKIFF_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn"));
    let ansi = cli::log_colours(std::io::stderr().is_terminal(), std::env::var_os("NO_COLOR").as_deref());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).init();
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
    let matches = cli::command().get_matches();
    init_tracing();
    let (config, roles) = cli::resolve(&matches, &|name| std::env::var(name).ok())
        .map_err(|problems| anyhow::anyhow!("invalid configuration:\n  {}", problems.join("\n  ")))?;
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
        // The address clients should use: the advertised one, else the bound listener.
        let bootstrap = config.clone();
        match roles {
            None => {
                skiff::node::run_dev(config, shutdown, |bound| {
                    // The one line tools and tests wait for.
                    println!("Kafka bootstrap: {}", bootstrap.kafka_bootstrap(bound.kafka));
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
                        println!("Kafka bootstrap: {}", bootstrap.kafka_bootstrap(k));
                    }
                    println!("HTTP: http://{}/metrics", bound.http);
                    let _ = std::io::stdout().flush();
                })
                .await
            }
        }
    })
}
