//! OpenTelemetry traces over OTLP, off unless the standard `OTEL_*` variables turn them on
//! (docs/observability.md lists the variables and the spans).
//!
//! * On when `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT` is set, unless
//!   `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`.
//! * Protocol from `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL` / `OTEL_EXPORTER_OTLP_PROTOCOL`: `grpc`
//!   or `http/protobuf` (the default, as the specification says).
//! * Sampling from `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG` (default
//!   `parentbased_always_on`); the service name from `OTEL_SERVICE_NAME` (default `skiff`).
//! * Timeouts, headers and batching: `OTEL_EXPORTER_OTLP_TIMEOUT`, `OTEL_EXPORTER_OTLP_HEADERS`,
//!   `OTEL_BSP_*`, read by the SDK itself.
//!
//! What is exported: the `tracing` spans of Skiff's crates at DEBUG level and above, and the
//! INFO+ events inside them. The request-path spans are DEBUG so the log output (INFO by
//! default) neither prints nor even builds them: with tracing off no layer is interested and a
//! span costs one atomic load at its call site.
//!
//! Invalid values stop start-up with every problem listed, like the rest of the configuration.

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider, SpanData, SpanExporter};
use tracing::{Level, Metadata};

/// The transport to the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Grpc,
    HttpProtobuf,
}

/// The sampler `OTEL_TRACES_SAMPLER` names, with its argument.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SamplerChoice {
    AlwaysOn,
    AlwaysOff,
    TraceIdRatio(f64),
    ParentBasedAlwaysOn,
    ParentBasedAlwaysOff,
    ParentBasedTraceIdRatio(f64),
}

impl SamplerChoice {
    fn sampler(self) -> Sampler {
        match self {
            SamplerChoice::AlwaysOn => Sampler::AlwaysOn,
            SamplerChoice::AlwaysOff => Sampler::AlwaysOff,
            SamplerChoice::TraceIdRatio(r) => Sampler::TraceIdRatioBased(r),
            SamplerChoice::ParentBasedAlwaysOn => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
            SamplerChoice::ParentBasedAlwaysOff => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
            SamplerChoice::ParentBasedTraceIdRatio(r) => Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(r))),
        }
    }
}

/// What the `OTEL_*` variables ask for when tracing is on.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub transport: Transport,
    pub sampler: SamplerChoice,
    /// `None`: `service.name` comes from `OTEL_RESOURCE_ATTRIBUTES`.
    pub service_name: Option<String>,
}

impl Settings {
    /// Reads the variables through `env` (the process environment in `main.rs`). `Ok(None)`:
    /// tracing is off. `Err`: every invalid value.
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<Option<Settings>, Vec<String>> {
        let var = |name: &str| env(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let endpoint = var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| var("OTEL_EXPORTER_OTLP_ENDPOINT"));
        let disabled = var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let exporter = var("OTEL_TRACES_EXPORTER");
        if endpoint.is_none() || disabled || exporter.as_deref().is_some_and(|e| e.eq_ignore_ascii_case("none")) {
            return Ok(None);
        }
        let mut problems = Vec::new();
        if let Some(e) = exporter.filter(|e| e != "otlp") {
            problems.push(format!("OTEL_TRACES_EXPORTER={e}: only `otlp` (or `none`) is supported"));
        }
        let protocol = var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL").or_else(|| var("OTEL_EXPORTER_OTLP_PROTOCOL"));
        let transport = match protocol.as_deref() {
            None | Some("http/protobuf") => Transport::HttpProtobuf,
            Some("grpc") => Transport::Grpc,
            Some(other) => {
                problems.push(format!("OTEL_EXPORTER_OTLP_PROTOCOL={other}: use `grpc` or `http/protobuf`"));
                Transport::HttpProtobuf
            }
        };
        let arg = var("OTEL_TRACES_SAMPLER_ARG");
        let mut ratio = || match arg.as_deref() {
            None => 1.0,
            Some(a) => match a.parse::<f64>() {
                Ok(r) if (0.0..=1.0).contains(&r) => r,
                _ => {
                    problems.push(format!("OTEL_TRACES_SAMPLER_ARG={a}: a ratio between 0 and 1"));
                    1.0
                }
            },
        };
        let sampler = match var("OTEL_TRACES_SAMPLER").as_deref() {
            None | Some("parentbased_always_on") => SamplerChoice::ParentBasedAlwaysOn,
            Some("always_on") => SamplerChoice::AlwaysOn,
            Some("always_off") => SamplerChoice::AlwaysOff,
            Some("traceidratio") => SamplerChoice::TraceIdRatio(ratio()),
            Some("parentbased_always_off") => SamplerChoice::ParentBasedAlwaysOff,
            Some("parentbased_traceidratio") => SamplerChoice::ParentBasedTraceIdRatio(ratio()),
            Some(other) => {
                problems.push(format!(
                    "OTEL_TRACES_SAMPLER={other}: use always_on, always_off, traceidratio, parentbased_always_on, \
                     parentbased_always_off or parentbased_traceidratio"
                ));
                SamplerChoice::ParentBasedAlwaysOn
            }
        };
        let from_attributes = var("OTEL_RESOURCE_ATTRIBUTES")
            .is_some_and(|a| a.split(',').any(|kv| kv.trim_start().starts_with("service.name=")));
        let service_name = match var("OTEL_SERVICE_NAME") {
            Some(name) => Some(name),
            None if from_attributes => None,
            None => Some("skiff".to_string()),
        };
        if problems.is_empty() { Ok(Some(Settings { transport, sampler, service_name })) } else { Err(problems) }
    }
}

/// Which spans and events go to OpenTelemetry: Skiff's own (not its dependencies'), spans from
/// DEBUG up, events from INFO up (they become span events).
pub fn exported(metadata: &Metadata<'_>) -> bool {
    let ours = metadata.target().starts_with("skiff");
    let level = if metadata.is_span() { Level::DEBUG } else { Level::INFO };
    ours && *metadata.level() <= level
}

/// The running exporter; [`Telemetry::shutdown`] exports what is still buffered.
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Telemetry {
    /// Starts the OTLP exporter described by `settings`; `runtime` drives its network I/O.
    /// Returns the provider's guard and the tracer for `tracing_opentelemetry::layer`.
    pub fn start(
        settings: &Settings,
        runtime: tokio::runtime::Handle,
    ) -> Result<(Telemetry, opentelemetry_sdk::trace::Tracer), String> {
        // The tonic channel is created (lazily connected) in the runtime's context.
        let _entered = runtime.enter();
        let exporter = match settings.transport {
            Transport::Grpc => opentelemetry_otlp::SpanExporter::builder().with_tonic().build(),
            Transport::HttpProtobuf => {
                opentelemetry_otlp::SpanExporter::builder().with_http().with_protocol(Protocol::HttpBinary).build()
            }
        }
        .map_err(|e| format!("OpenTelemetry OTLP exporter: {e}"))?;
        let resource = match &settings.service_name {
            Some(name) => Resource::builder().with_service_name(name.clone()).build(),
            None => Resource::builder().build(),
        };
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(OnRuntime { inner: exporter, runtime })
            .with_sampler(settings.sampler.sampler())
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("skiff");
        Ok((Telemetry { provider }, tracer))
    }

    /// Exports the spans still buffered and stops the exporter (bounded by the exporter's
    /// timeout). Called after the node stopped, while the runtime still runs.
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT) {
            eprintln!("OpenTelemetry: flushing traces at shutdown failed: {e}");
        }
    }
}

/// How long shutdown waits for the last export.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs an exporter's futures on the process's Tokio runtime. The SDK's batch processor exports
/// from its own thread, which has no Tokio context, while the gRPC (tonic) and HTTP (reqwest)
/// clients need one; blocking that thread on the runtime handle gives them the runtime's I/O
/// driver without a second runtime.
#[derive(Debug)]
struct OnRuntime<E> {
    inner: E,
    runtime: tokio::runtime::Handle,
}

impl<E: SpanExporter> SpanExporter for OnRuntime<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        match tokio::runtime::Handle::try_current() {
            Ok(_) => self.inner.export(batch).await,
            Err(_) => self.runtime.block_on(self.inner.export(batch)),
        }
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(vars: &[(&str, &str)]) -> Result<Option<Settings>, Vec<String>> {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Settings::from_env(&|name| vars.get(name).cloned())
    }

    #[test]
    fn off_without_an_endpoint_or_when_disabled() {
        assert_eq!(settings(&[]), Ok(None));
        assert_eq!(settings(&[("OTEL_SERVICE_NAME", "x"), ("OTEL_TRACES_SAMPLER", "always_on")]), Ok(None));
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318");
        assert_eq!(settings(&[endpoint, ("OTEL_SDK_DISABLED", "true")]), Ok(None));
        assert_eq!(settings(&[endpoint, ("OTEL_TRACES_EXPORTER", "none")]), Ok(None));
        assert_eq!(settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")]), Ok(None));
    }

    #[test]
    fn defaults_follow_the_specification() {
        let s = settings(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://127.0.0.1:4318/v1/traces")])
            .expect("valid")
            .expect("on");
        assert_eq!(s.transport, Transport::HttpProtobuf);
        assert_eq!(s.sampler, SamplerChoice::ParentBasedAlwaysOn);
        assert_eq!(s.service_name.as_deref(), Some("skiff"));
    }

    #[test]
    fn reads_protocol_sampler_and_service_name() {
        let s = settings(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc"),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
            ("OTEL_SERVICE_NAME", "skiff-broker"),
        ])
        .expect("valid")
        .expect("on");
        assert_eq!(s.transport, Transport::Grpc, "the traces-specific variable wins");
        assert_eq!(s.sampler, SamplerChoice::ParentBasedTraceIdRatio(0.25));
        assert_eq!(s.service_name.as_deref(), Some("skiff-broker"));
        let s = settings(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
            ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=dev, service.name=from-attributes"),
        ])
        .expect("valid")
        .expect("on");
        assert_eq!(s.service_name, None, "service.name from OTEL_RESOURCE_ATTRIBUTES is kept");
    }

    #[test]
    fn reports_every_invalid_value() {
        let problems = settings(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ("OTEL_TRACES_SAMPLER", "traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "1.5"),
            ("OTEL_TRACES_EXPORTER", "zipkin"),
        ])
        .expect_err("invalid");
        assert_eq!(problems.len(), 3, "{problems:?}");
        let problems = settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "x"), ("OTEL_TRACES_SAMPLER", "sometimes")])
            .expect_err("invalid");
        assert_eq!(problems.len(), 1, "{problems:?}");
    }

    #[test]
    fn exports_our_spans_from_debug_and_events_from_info() {
        // A subscriber that enables everything, so the spans carry their call sites' metadata.
        tracing::subscriber::with_default(tracing_subscriber::registry(), || {
            let meta = |span: tracing::Span| span.metadata().expect("an enabled span has metadata");
            assert!(exported(meta(tracing::debug_span!("wal.flush"))));
            assert!(exported(meta(tracing::info_span!("wal.flush"))));
            assert!(!exported(meta(tracing::trace_span!("too.fine"))));
            assert!(!exported(meta(tracing::debug_span!(target: "h2::codec", "framed_read"))));
        });
    }

    /// What the request-path instrumentation costs with tracing off, per produce request: the
    /// spans of `handler::produce` and the span lookup of `log::wal`, under the log output's
    /// default filter as `main.rs` installs it.
    #[test]
    #[ignore = "a measurement: cargo test --lib telemetry::tests::disabled_spans_cost -- --ignored --nocapture"]
    fn disabled_spans_cost() {
        use tracing::Instrument;
        use tracing_subscriber::prelude::*;
        let filter = tracing_subscriber::EnvFilter::new(crate::log_levels::DEFAULT_FILTER);
        let log = tracing_subscriber::fmt::layer().with_writer(std::io::sink).with_filter(filter);
        tracing::subscriber::with_default(tracing_subscriber::registry().with(log), || {
            let n: u32 = 2_000_000;
            let clock = skiff_time::system_clock();
            let started = clock.now();
            for i in 0..n {
                let request = tracing::debug_span!(
                    "kafka.produce",
                    otel.kind = "server",
                    acks = 1i16,
                    topics = tracing::field::Empty
                );
                if !request.is_disabled() {
                    request.record("topics", "t");
                }
                let append = tracing::debug_span!("produce.append", topic = "t", partition = i, bytes = 100usize);
                let appended = futures::executor::block_on(
                    async {
                        tracing::level_enabled!(tracing::Level::DEBUG)
                            && std::hint::black_box(!tracing::Span::current().is_disabled())
                    }
                    .instrument(append)
                    .instrument(request),
                );
                std::hint::black_box(appended);
            }
            let traced = clock.now() - started;
            let started = clock.now();
            for _ in 0..n {
                let appended = futures::executor::block_on(async { std::hint::black_box(true) });
                std::hint::black_box(appended);
            }
            let bare = clock.now() - started;
            println!(
                "per produce request with tracing off: {:?} instrumented, {:?} without ({} iterations)",
                traced / n,
                bare / n,
                n
            );
        });
    }
}
