//! The `skiff` binary: CLI, config loading, tracing, signals → one shutdown token.

use std::io::{IsTerminal, Write};

use skiff::config::cli;
use tokio_util::sync::CancellationToken;
use tracing::info;

/// Logs to stderr through a filter that broker-logger configs can swap at run time
/// (`skiff::log_levels`): `SKIFF_LOG`, else `RUST_LOG`, else the default. With `otel`, spans
/// also go to OpenTelemetry (`skiff::telemetry`), filtered apart from the log output.
fn init_tracing(
    otel: Option<&skiff::telemetry::Settings>,
    runtime: &tokio::runtime::Runtime,
) -> Result<Option<skiff::telemetry::Telemetry>, String> {
    use tracing_subscriber::prelude::*;
    use tracing_subscriber::{EnvFilter, filter, fmt, reload};
    let spec = [std::env::var("SKIFF_LOG"), std::env::var("RUST_LOG")]
        .into_iter()
        .flatten()
        .find(|s| EnvFilter::try_new(s).is_ok())
        .unwrap_or_else(|| skiff::log_levels::DEFAULT_FILTER.to_string());
    let filter = EnvFilter::try_new(&spec).unwrap_or_else(|_| EnvFilter::new(skiff::log_levels::DEFAULT_FILTER));
    let (filter, handle) = reload::Layer::new(filter);
    let ansi = cli::log_colours(std::io::stderr().is_terminal(), std::env::var_os("NO_COLOR").as_deref());
    let (telemetry, otel_layer) = match otel {
        Some(settings) => {
            let (telemetry, tracer) = skiff::telemetry::Telemetry::start(settings, runtime.handle().clone())?;
            let layer = tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_filter(filter::filter_fn(skiff::telemetry::exported));
            (Some(telemetry), Some(layer))
        }
        None => (None, None),
    };
    // Per-layer filters: the log filter decides what is printed, `exported` what is traced.
    tracing_subscriber::registry()
        .with(fmt::layer().with_writer(std::io::stderr).with_ansi(ansi).with_filter(filter))
        .with(otel_layer)
        .init();
    let levels = skiff::log_levels::LogLevels::new(&spec, move |spec| {
        let filter = EnvFilter::try_new(spec).map_err(|e| e.to_string())?;
        handle.reload(filter).map_err(|e| e.to_string())
    });
    match levels {
        Some(levels) => skiff::log_levels::install(levels),
        None => info!(filter = %spec, "log filter has span or field directives: broker-logger configs are off"),
    }
    if let Some(settings) = otel {
        info!(?settings, "OpenTelemetry traces are exported over OTLP");
    }
    Ok(telemetry)
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
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("skiff").build()?;
    let otel = skiff::telemetry::Settings::from_env(&|name| std::env::var(name).ok());
    let telemetry = init_tracing(otel.as_ref().ok().and_then(Option::as_ref), &runtime).map_err(anyhow::Error::msg)?;
    let otel_problems = otel.err().unwrap_or_default();
    let (config, roles) = cli::resolve(&matches, &|name| std::env::var(name).ok()).map_err(|mut problems| {
        problems.extend(otel_problems.iter().cloned());
        anyhow::anyhow!("invalid configuration:\n  {}", problems.join("\n  "))
    })?;
    anyhow::ensure!(otel_problems.is_empty(), "invalid configuration:\n  {}", otel_problems.join("\n  "));
    info!(config = %config.redacted(), "effective configuration");
    let result = runtime.block_on(async move {
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
                    print_listeners(&bound.listeners);
                    let scheme = if bootstrap.security.http_tls { "https" } else { "http" };
                    println!("HTTP: {scheme}://{}/metrics", bound.http);
                    println!("Console: {scheme}://{}/", bound.http);
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
                    print_listeners(&bound.listeners);
                    // `http_tls` applies to a node with the broker role (whose TLS identity it is).
                    let scheme = if bootstrap.security.http_tls && bound.kafka.is_some() { "https" } else { "http" };
                    println!("HTTP: {scheme}://{}/metrics", bound.http);
                    if bound.kafka.is_some() {
                        // The console's API answers from a broker's metadata image.
                        println!("Console: {scheme}://{}/", bound.http);
                    }
                    let _ = std::io::stdout().flush();
                })
                .await
            }
        }
    });
    // The node has stopped: export the spans still buffered while the runtime (which drives the
    // exporter's connections) is still up.
    if let Some(t) = telemetry {
        t.shutdown();
    }
    result
}

/// One `Kafka listener PROTOCOL: HOST:PORT` line per listener (its advertised address) when
/// there are several, or the one is not PLAINTEXT: what tools and tests connect to.
fn print_listeners(
    listeners: &[(
        skiff::security::listener::SecurityProtocol,
        std::net::SocketAddr,
        skiff::security::listener::Advertised,
    )],
) {
    let plain_only = matches!(listeners, [(skiff::security::listener::SecurityProtocol::Plaintext, _, _)]);
    if !plain_only {
        for (protocol, _, advertised) in listeners {
            println!("Kafka listener {protocol}: {advertised}");
        }
    }
}
