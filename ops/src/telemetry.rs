//! Logs and traces: `tracing` events to standard error (text or JSON, filtered by
//! `telemetry.log_filter`), and, only when `telemetry.otlp_endpoint` is set, spans exported over
//! OTLP HTTP/protobuf with W3C trace context installed as the global propagator.
//!
//! ```text
//!  tracing spans/events ─▶ EnvFilter ─┬─▶ fmt layer (text | json) ─▶ stderr
//!                                     └─▶ OpenTelemetry layer ─▶ batch processor ─▶ OTLP/HTTP
//!                                          (only with otlp_endpoint)
//! ```
//!
//! Call [`init`] once, outside any tokio runtime (the OTLP HTTP client is a blocking one with its
//! own thread), and keep the returned [`Telemetry`] until the process ends: dropping it flushes and
//! shuts the exporter down.

use std::io::IsTerminal as _;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::Error;
use crate::config::{LogFormat, TelemetrySettings};

/// Added to the log filter unless it names cryptoki itself.
const QUIET_CRYPTOKI: &str = "cryptoki::mechanism=off";

/// The build version logged at start-up and exported as `service.version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The installed telemetry; flushes and stops the span exporter when dropped.
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

/// Installs the global `tracing` subscriber and, when configured, the OTLP span exporter.
///
/// # Errors
///
/// [`Error::Telemetry`] when the exporter cannot be built or a subscriber is already installed.
pub fn init(settings: &TelemetrySettings) -> Result<Telemetry, Error> {
    let mut filter =
        EnvFilter::try_new(&settings.log_filter).map_err(|e| Error::Telemetry(e.to_string()))?;
    if !settings.log_filter.contains("cryptoki") {
        // cryptoki logs every vendor-specific mechanism a token lists as an error, although such
        // mechanisms are normal; our own code reports what is really missing.
        filter = filter.add_directive(QUIET_CRYPTOKI.parse().map_err(
            |e: tracing_subscriber::filter::ParseError| Error::Telemetry(e.to_string()),
        )?);
    }
    let provider = settings
        .otlp_endpoint
        .as_deref()
        .map(|endpoint| tracer_provider(endpoint, settings))
        .transpose()?;
    let otel = provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer(env!("CARGO_PKG_NAME"))));
    let (text, json) = match settings.log_format {
        LogFormat::Text => {
            let ansi = std::io::stderr().is_terminal();
            (
                Some(
                    tracing_subscriber::fmt::layer()
                        .with_ansi(ansi)
                        .with_writer(std::io::stderr),
                ),
                None,
            )
        }
        LogFormat::Json => (
            None,
            Some(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(std::io::stderr),
            ),
        ),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(text)
        .with(json)
        .with(otel)
        .try_init()
        .map_err(|e| Error::Telemetry(format!("a log subscriber is already installed: {e}")))?;
    if provider.is_some() {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    }
    Ok(Telemetry { provider })
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            // Flushes the batch; a collector that is down costs one export timeout, not a hang.
            if let Err(e) = provider.shutdown() {
                eprintln!("warning: trace exporter did not shut down cleanly: {e}");
            }
        }
    }
}

fn tracer_provider(
    endpoint: &str,
    settings: &TelemetrySettings,
) -> Result<SdkTracerProvider, Error> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| {
            Error::Telemetry(format!(
                "cannot build the OTLP exporter for telemetry.otlp_endpoint: {e}"
            ))
        })?;
    let resource = Resource::builder()
        .with_service_name(settings.service_name.clone())
        .with_attribute(opentelemetry::KeyValue::new("service.version", VERSION))
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}
